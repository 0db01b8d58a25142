"""Where a call comes from: the source the brute-force defence counts failures by.

- With mTLS, the client certificate's identity (its subject alternative names, else its common
  name): stable across the addresses of one service's replicas.
- Otherwise the client's IP address (IPv6 by its /64, which one host can hold whole): the peer's,
  or, from a peer in `trusted_proxies` (a load balancer, the standalone REST gateway), the one its
  `x-forwarded-for` metadata names, walked as the REST gateway walks its headers
  (service/client_address.py). Any other caller's `x-forwarded-for` is ignored, so nobody chooses
  their own source.
- A Unix-socket peer is "local".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import unquote

import grpc

from service.addresses import split_address
from service.client_address import IPAddress, IPNetwork, client_address

FORWARDED_FOR_KEY = "x-forwarded-for"
IPV6_PREFIX = 64


def _peer(peer: str) -> tuple[str, int] | None:
    """(host, port) of a gRPC peer string: `ipv4:1.2.3.4:5`, `ipv6:[::1]:5` (or `%5B::1%5D:5`)."""
    kind, _, address = unquote(peer).partition(":")
    try:
        return split_address(address) if kind in ("ipv4", "ipv6") else None
    except ValueError:
        return None


def source_key(address: IPAddress | None) -> str:
    if address is None:
        return "local"
    if isinstance(address, ipaddress.IPv6Address):
        network = ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False)
        return f"ip:{network}"
    return f"ip:{address}"


def call_source(context: grpc.aio.ServicerContext, trusted_proxies: Sequence[IPNetwork]) -> str:
    auth = context.auth_context() or {}
    names = auth.get("x509_subject_alternative_name") or auth.get("x509_common_name")
    if names:
        return "mtls:" + ",".join(sorted(n.decode("utf-8", "replace") for n in names))
    forwarded = [
        value
        for key, value in context.invocation_metadata() or ()
        if key == FORWARDED_FOR_KEY and isinstance(value, str)
    ]
    client = client_address(_peer(context.peer() or ""), forwarded, (), trusted_proxies)
    return source_key(client.ip if client is not None else None)
