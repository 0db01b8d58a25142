"""client_address(): who the REST client is, from the TCP peer and, behind trusted proxies only,
X-Forwarded-For or RFC 7239 Forwarded."""

from __future__ import annotations

import ipaddress

import pytest

from service.client_address import ClientAddress, client_address

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
PROXY = ("10.0.0.2", 4431)
CLIENT_PEER = ("203.0.113.5", 54321)


def resolve(
    peer: tuple[str, int], xff: list[str] | None = None, fwd: list[str] | None = None
) -> str:
    found = client_address(peer, xff or [], fwd or [], PROXIES)
    assert found is not None
    return found.grpc_peer()


def test_direct_peer_without_trusted_proxies() -> None:
    """With no trusted proxies the TCP peer is the client, headers or not."""
    found = client_address(CLIENT_PEER, ["198.51.100.7"], ["for=198.51.100.8"], ())
    assert found == ClientAddress(ipaddress.ip_address("203.0.113.5"), 54321)
    assert found.grpc_peer() == "ipv4:203.0.113.5:54321"


def test_spoofed_headers_from_an_untrusted_peer_are_ignored() -> None:
    """An untrusted peer's X-Forwarded-For and Forwarded name nobody: the peer is the client."""
    assert resolve(CLIENT_PEER, ["198.51.100.7"]) == "ipv4:203.0.113.5:54321"
    assert resolve(CLIENT_PEER, fwd=["for=198.51.100.7"]) == "ipv4:203.0.113.5:54321"


def test_trusted_proxy_without_headers_is_the_client() -> None:
    """A trusted proxy that names nobody is itself the client."""
    assert resolve(PROXY) == "ipv4:10.0.0.2:4431"


def test_x_forwarded_for_from_a_trusted_proxy() -> None:
    """Behind a trusted proxy, the X-Forwarded-For address is the client, with port 0."""
    assert resolve(PROXY, ["198.51.100.7"]) == "ipv4:198.51.100.7:0"


def test_x_forwarded_for_takes_the_right_most_untrusted_address() -> None:
    """Addresses the client wrote (left of the first untrusted one from the right) are not
    believed; trusted hops on the right are skipped, across several header lines."""
    assert resolve(PROXY, ["1.2.3.4, 198.51.100.7, 10.1.1.1", "10.2.2.2"]) == (
        "ipv4:198.51.100.7:0"
    )


def test_a_chain_of_trusted_proxies_only_is_its_left_most() -> None:
    """When every hop is a trusted proxy, the left-most is the client."""
    assert resolve(PROXY, ["10.9.9.9, 10.1.1.1"]) == "ipv4:10.9.9.9:0"


def test_x_forwarded_for_ipv6() -> None:
    """IPv6 in X-Forwarded-For, bare or bracketed with a port, from an IPv6 proxy."""
    assert resolve(("fd00::1", 443), ["2001:db8::1"]) == "ipv6:[2001:db8::1]:0"
    assert resolve(("fd00::1", 443), ["[2001:db8::2]:8080, fd00::9"]) == "ipv6:[2001:db8::2]:0"


def test_a_bracketed_ipv4_mapped_hop_is_its_ipv4_address() -> None:
    """`[::ffff:198.51.100.7]:80` names 198.51.100.7 (the proxy is not made the client);
    `[198.51.100.7]` is no IPv6 address: the direct peer."""
    assert resolve(PROXY, ["[::ffff:198.51.100.7]:80"]) == "ipv4:198.51.100.7:0"
    assert resolve(PROXY, ["[198.51.100.7]"]) == "ipv4:10.0.0.2:4431"


def test_x_forwarded_for_wins_over_forwarded() -> None:
    """With both headers, X-Forwarded-For is read."""
    assert resolve(PROXY, ["198.51.100.7"], ["for=198.51.100.8"]) == "ipv4:198.51.100.7:0"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("for=198.51.100.8", "ipv4:198.51.100.8:0"),
        ('for="198.51.100.8:4711"', "ipv4:198.51.100.8:0"),
        ('for="[2001:db8:cafe::17]:4711"', "ipv6:[2001:db8:cafe::17]:0"),
        ('for="[2001:db8:cafe::17]"', "ipv6:[2001:db8:cafe::17]:0"),
        ("For=198.51.100.8;proto=https;by=10.0.0.2", "ipv4:198.51.100.8:0"),
        ("for=192.0.2.1, for=198.51.100.8, for=10.7.7.7", "ipv4:198.51.100.8:0"),
        ('for=192.0.2.1;host="a,b", for=10.7.7.7', "ipv4:192.0.2.1:0"),
        ('for=192.0.2.1;host="a;b", for=10.7.7.7', "ipv4:192.0.2.1:0"),
    ],
    ids=["v4", "v4-port", "v6-port", "v6", "params", "chain", "quoted-comma", "quoted-semicolon"],
)
def test_forwarded_from_a_trusted_proxy(header: str, expected: str) -> None:
    """RFC 7239 for= (IPv4, IPv6 in brackets, ports, other parameters, chains) names the client."""
    assert resolve(PROXY, fwd=[header]) == expected


@pytest.mark.parametrize(
    ("xff", "fwd"),
    [
        (["198.51.100.7, not-an-ip"], None),
        (["198.51.100.7,,10.1.1.1"], None),
        ([""], None),
        (["unknown"], None),
        (["[2001:db8::1"], None),
        (["999.1.1.1"], None),
        (None, ["for=unknown"]),
        (None, ["for=_hidden"]),
        (None, ["proto=https"]),
        (None, ['for="198.51.100.8']),  # unterminated quote
        (None, ["for=198.51.100.8;for=198.51.100.9"]),
        (None, ["for=[2001:db8::1]:80:90"]),
        (None, ["for=198.51.100.8 junk"]),
    ],
    ids=[
        "xff-word",
        "xff-empty-hop",
        "xff-empty",
        "xff-unknown",
        "xff-bracket",
        "xff-octet",
        "fwd-unknown",
        "fwd-obfuscated",
        "fwd-no-for",
        "fwd-quote",
        "fwd-two-for",
        "fwd-v6-ports",
        "fwd-junk",
    ],
)
def test_malformed_headers_fall_back_to_the_peer(
    xff: list[str] | None, fwd: list[str] | None
) -> None:
    """A header that cannot be followed, even from a trusted proxy, means the direct peer."""
    assert resolve(PROXY, xff, fwd) == "ipv4:10.0.0.2:4431"


def test_a_malformed_hop_left_of_the_client_does_not_matter() -> None:
    """The walk stops at the first untrusted address: garbage the client wrote before it is
    never read."""
    assert resolve(PROXY, ["garbage, 198.51.100.7"]) == "ipv4:198.51.100.7:0"


def test_ipv6_peer_and_v4_mapped_peer() -> None:
    """An IPv6 peer is `ipv6:[...]:port`; an IPv4-mapped one is IPv4, as gRPC names it."""
    assert resolve(("2001:db8::5", 1234)) == "ipv6:[2001:db8::5]:1234"
    assert resolve(("::ffff:203.0.113.9", 1234)) == "ipv4:203.0.113.9:1234"
    assert resolve(("::ffff:10.0.0.2", 1), ["198.51.100.7"]) == "ipv4:198.51.100.7:0"


def test_a_peer_that_is_not_an_address_is_none() -> None:
    """No IP peer (a Unix socket): no address, no error."""
    assert client_address(None, [], [], PROXIES) is None
    assert client_address(("/run/sock", 0), [], [], PROXIES) is None
