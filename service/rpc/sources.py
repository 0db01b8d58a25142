"""Where a call comes from: the source the brute-force defence counts failures by.

- With mTLS, the client certificate's identity (its subject alternative names, else its common
  name): stable across the addresses of one service's replicas.
- Otherwise the peer's IP address (IPv6 by its /64, which one host can hold whole).
- A peer in `trusted_proxies` (a load balancer, the standalone REST gateway) may name the client
  in `x-forwarded-for` metadata: the right-most address that is not itself a trusted proxy. Any
  other caller's `x-forwarded-for` is ignored, so nobody chooses their own source.
- A Unix-socket peer is "local".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from urllib.parse import unquote

import grpc

from service.config import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
FORWARDED_FOR_KEY = "x-forwarded-for"
IPV6_PREFIX = 64


def _peer_address(peer: str) -> IPAddress | None:
    """The IP of a gRPC peer string: `ipv4:1.2.3.4:5`, `ipv6:[::1]:5` (or `%5B::1%5D:5`)."""
    kind, _, rest = unquote(peer).partition(":")
    if kind == "ipv4":
        host = rest.rpartition(":")[0]
    elif kind == "ipv6":
        host = rest.rpartition(":")[0].strip("[]")
    else:
        return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _trusted(address: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in proxies)


def _forwarded_client(values: Iterable[str], proxies: Sequence[IPNetwork]) -> IPAddress | None:
    """The right-most address of the X-Forwarded-For chain that is not a trusted proxy."""
    chain = [item.strip() for value in values for item in value.split(",")]
    for item in reversed(chain):
        try:
            address = ipaddress.ip_address(item.strip("[]"))
        except ValueError:
            return None  # a malformed chain names nobody: fall back to the peer
        if not _trusted(address, proxies):
            return address
    return None


def source_key(address: IPAddress | None) -> str:
    if address is None:
        return "local"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        network = ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False)
        return f"ip:{network}"
    return f"ip:{address}"


def call_source(context: grpc.aio.ServicerContext, trusted_proxies: Sequence[IPNetwork]) -> str:
    auth = context.auth_context() or {}
    names = auth.get("x509_subject_alternative_name") or auth.get("x509_common_name")
    if names:
        return "mtls:" + ",".join(sorted(n.decode("utf-8", "replace") for n in names))
    address = _peer_address(context.peer() or "")
    if address is not None and _trusted(address, trusted_proxies):
        forwarded = [
            value
            for key, value in context.invocation_metadata() or ()
            if key == FORWARDED_FOR_KEY and isinstance(value, str)
        ]
        address = _forwarded_client(forwarded, trusted_proxies) or address
    return source_key(address)
