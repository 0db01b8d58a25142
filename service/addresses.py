"""HOST:PORT addresses: the one place they are taken apart (settings, listeners, targets)."""

from __future__ import annotations

import errno
import ipaddress
import socket
from urllib.parse import parse_qs, urlsplit


def split_address(address: str) -> tuple[str, int]:
    """("host", port) from "HOST:PORT" or "[v6]:PORT" (the host without brackets); ValueError
    when there is no port or it is not 0..65535. The host may be empty (":8080", any address)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def with_port(address: str, port: int) -> str:
    """`address` ("HOST:PORT", maybe port 0) with the port it was bound to."""
    return f"{address.rpartition(':')[0]}:{port}"


def is_loopback(address: str) -> bool:
    """True for HOST:PORT on a loopback address (127.0.0.0/8, ::1, localhost)."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_dsn(dsn: str) -> str:
    """`host:port/database` of a PostgreSQL URL (the socket folder for a Unix socket): no
    user, no password, no other query parameter."""
    try:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        host = parts.hostname or query.get("host", ["localhost"])[0]
        number = parts.port or query.get("port", [None])[0]
        port = f":{number}" if number else ""
    except ValueError:
        return "(unparsable URL)"
    return f"{host}{port}{parts.path or ''}"


def cannot_listen(address: str, what: str, cause: OSError) -> OSError:
    """The one error of a listener that cannot bind: "cannot listen on ADDRESS (WHAT): REASON"."""
    reason = cause.strerror or str(cause)
    return OSError(cause.errno, f"cannot listen on {address} ({what}): {reason}")


def check_listenable(address: str, what: str) -> None:
    """Raise OSError("cannot listen on ADDRESS (WHAT): REASON") when HOST:PORT cannot be bound,
    e.g. a port already in use, before a server library tries and logs its own lines about it
    (grpcio writes a C-core error to stderr). Port 0 always can. Bound as the servers bind
    (SO_REUSEADDR), then closed at once: a port taken in between still fails in the server.
    A name with several addresses (localhost: ::1 and 127.0.0.1) passes when one can be bound
    and none is in use, as the servers do (a machine without IPv6 cannot bind ::1)."""
    host, port = split_address(address)
    if port == 0:
        return
    failures: list[OSError] = []
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        failures.append(exc)
        infos = []
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        except OSError as exc:
            failures.append(exc)
    in_use = [f for f in failures if f.errno == errno.EADDRINUSE]
    if in_use or (failures and len(failures) >= len(infos)):
        raise cannot_listen(address, what, (in_use or failures)[0])
