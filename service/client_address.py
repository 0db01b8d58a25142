"""Who the client of a call is: its IP address, on either transport (the one proxy-chain walk).

The client is the TCP peer, unless that peer is a trusted proxy (`AUTHSVC_TRUSTED_PROXIES`): then it
is the right-most address of `X-Forwarded-For` (the REST header, or gRPC `x-forwarded-for` metadata;
else RFC 7239 `Forwarded: for=`) that is not itself a trusted proxy; entries left of it were written
by whoever the client says it is and are never believed; when every entry is trusted, the left-most
is the client. A header that cannot be read, or an entry that is no address (`unknown`, `_hidden`),
means the direct peer.

By hand, in small pure functions: aiohttp's `request.forwarded` skips a malformed part and
carries on, so it cannot tell "malformed" from "absent".
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# One RFC 7239 forwarded-pair and what follows it: token "=" (token / quoted-string), then ";"
# (same element), "," (next element) or the end. Tokens take "[", "]" and ":" too, so that an
# unquoted `for=[2001:db8::1]` (which some proxies write) is read.
_PAIR = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)=([!#$%&'*+.^_`|~0-9A-Za-z:\[\]-]+|"(?:[^"\\]|\\.)*")"""
    r"""\s*(;|,|\Z)"""
)
_V4_PORT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})")
_V6_BRACKETS = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?")


@dataclass(frozen=True, slots=True)
class ClientAddress:
    """The client's address, and its port when it is the direct peer (0 when a proxy named it)."""

    ip: IPAddress
    port: int

    def grpc_peer(self) -> str:
        """As grpc's `ServicerContext.peer()`: `ipv4:203.0.113.5:54321`, `ipv6:[2001:db8::1]:0`."""
        if self.ip.version == 4:
            return f"ipv4:{self.ip}:{self.port}"
        return f"ipv6:[{self.ip}]:{self.port}"


def parse_ip(text: str) -> IPAddress | None:
    """An address, IPv4-mapped IPv6 as IPv4 (as gRPC names such a peer); None if not one."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return ip.ipv4_mapped or ip if ip.version == 6 else ip


def _node_ip(node: str) -> IPAddress | None:
    """The address of one hop: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]:80`."""
    if node.startswith("["):  # IPv6 only, IPv4-mapped ones too: [::ffff:192.0.2.1]:80
        found = _V6_BRACKETS.fullmatch(node)
        return parse_ip(found[1]) if found and ":" in found[1] else None
    found = _V4_PORT.fullmatch(node)
    return parse_ip(found[1] if found else node)


def _forwarded_for(values: Iterable[str]) -> list[str] | None:
    """The `for=` of every element of the Forwarded header(s), left to right; None when a header
    cannot be read or an element has none or two (the walk cannot skip a hop)."""
    hops = []
    for value in values:
        pos, found, separator = 0, None, ";"
        while separator:
            pair = _PAIR.match(value, pos)
            if pair is None:
                return None
            name, raw, separator = pair.groups()
            if name.lower() == "for":
                if found is not None:
                    return None
                found = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
            if separator != ";":
                if found is None:
                    return None
                hops.append(found)
                found = None
            pos = pair.end()
    return hops


def client_address(
    peer: tuple[str, int] | None,
    x_forwarded_for: Sequence[str],
    forwarded: Sequence[str],
    trusted: Sequence[IPNetwork],
) -> ClientAddress | None:
    """The client of a request from TCP `peer` (host, port), given its X-Forwarded-For and
    Forwarded header lines and the trusted proxies; None only when the peer is no IP address
    (a Unix socket)."""
    peer_ip = parse_ip(peer[0]) if peer is not None else None
    if peer is None or peer_ip is None:
        return None
    direct = ClientAddress(peer_ip, peer[1])
    if not any(peer_ip in network for network in trusted):
        return direct
    if x_forwarded_for:
        hops: list[str] | None = [h.strip() for v in x_forwarded_for for h in v.split(",")]
    else:
        hops = _forwarded_for(forwarded)
    ip = None
    for hop in reversed(hops or []):
        if (ip := _node_ip(hop)) is None:
            return direct  # malformed, `unknown` or obfuscated: this hop cannot be followed
        if not any(ip in network for network in trusted):
            break
    return direct if ip is None else ClientAddress(ip, 0)
