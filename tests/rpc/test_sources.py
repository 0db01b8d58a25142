"""Where a gRPC call comes from (`call_source`): the peer's address, its mTLS identity, and
`x-forwarded-for` only from a trusted proxy, so no caller chooses its own source."""

from __future__ import annotations

import ipaddress

import pytest

from service.rpc.sources import call_source

PROXY = (ipaddress.ip_network("10.0.0.0/8"),)


class Context:
    """The three things `call_source` reads of a grpc.aio.ServicerContext."""

    def __init__(self, peer: str, metadata=(), auth=None) -> None:
        self._peer, self._metadata, self._auth = peer, tuple(metadata), auth or {}

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self):
        return self._metadata

    def auth_context(self):
        return self._auth


@pytest.mark.parametrize(
    ("peer", "source"),
    [
        ("ipv4:192.0.2.7:51234", "ip:192.0.2.7"),
        ("ipv6:[2001:db8:1:2:3:4:5:6]:443", "ip:2001:db8:1:2::/64"),
        ("ipv6:%5B2001:db8:1:2::9%5D:443", "ip:2001:db8:1:2::/64"),
        ("ipv6:[::ffff:192.0.2.8]:1", "ip:192.0.2.8"),
        ("unix:/tmp/grpc.sock", "local"),
        ("", "local"),
    ],
)
def test_peer_address_is_the_source(peer: str, source: str) -> None:
    """IPv4 as is, IPv6 by its /64 (one host can hold a whole /64), Unix sockets as local."""
    assert call_source(Context(peer), ()) == source


def test_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    """A caller that is not a trusted proxy cannot choose its source with metadata."""
    context = Context("ipv4:192.0.2.7:1", [("x-forwarded-for", "203.0.113.9")])
    assert call_source(context, PROXY) == "ip:192.0.2.7"
    assert call_source(context, ()) == "ip:192.0.2.7"


def test_a_trusted_proxy_names_the_client() -> None:
    """From a trusted proxy, the right-most address of the chain that is not a proxy."""
    context = Context(
        "ipv4:10.1.2.3:1", [("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.9.9.9")]
    )
    assert call_source(context, PROXY) == "ip:203.0.113.9"


def test_a_malformed_chain_falls_back_to_the_peer() -> None:
    """Walking from the right, the first address that is not a proxy counts (what lies beyond it
    is never read); a garbled entry reached first names nobody, and the proxy's address counts."""
    context = Context("ipv4:10.1.2.3:1", [("x-forwarded-for", "not-an-ip, 203.0.113.9")])
    assert call_source(context, PROXY) == "ip:203.0.113.9"
    broken = Context("ipv4:10.1.2.3:1", [("x-forwarded-for", "203.0.113.9, garbage")])
    assert call_source(broken, PROXY) == "ip:10.1.2.3"


def test_mtls_identity_wins_over_the_address() -> None:
    """With a client certificate, its names are the source, whatever address it calls from."""
    auth = {
        "transport_security_type": [b"ssl"],
        "x509_common_name": [b"billing"],
        "x509_subject_alternative_name": [b"billing.internal", b"billing"],
    }
    assert (
        call_source(Context("ipv4:192.0.2.7:1", auth=auth), ()) == "mtls:billing,billing.internal"
    )
    cn_only = {"x509_common_name": [b"billing"]}
    assert call_source(Context("ipv4:192.0.2.8:1", auth=cn_only), ()) == "mtls:billing"


def test_the_chain_is_walked_as_the_rest_gateway_walks_it() -> None:
    """The one walk of service/client_address.py: a bracketed IPv6 hop with a port is read, and
    a chain of trusted proxies only names its left-most hop."""
    bracketed = Context("ipv4:10.1.2.3:1", [("x-forwarded-for", "[2001:db8::7]:8080")])
    assert call_source(bracketed, PROXY) == "ip:2001:db8::/64"
    proxies_only = Context("ipv4:10.1.2.3:1", [("x-forwarded-for", "10.9.9.9, 10.1.1.1")])
    assert call_source(proxies_only, PROXY) == "ip:10.9.9.9"
