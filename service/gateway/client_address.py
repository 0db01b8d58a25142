"""Who the REST client is: its address, as gRPC would name it, and its TLS certificate.

The client is the TCP peer of the HTTP request, unless that peer is a trusted proxy
(`AUTHSVC_TRUSTED_PROXIES`): then it is the right-most address of `X-Forwarded-For` that is not
itself a trusted proxy (walking from the right, each hop added by a proxy we believe), or, when
there is no X-Forwarded-For, of RFC 7239 `Forwarded: for=`. Entries left of the first untrusted
one were written by whoever the client says it is, and are never believed. When every entry is a
trusted proxy, the left-most one is the client (a proxy of ours calling for itself). A header that
cannot be read, an entry that is not an address (`unknown`, an obfuscated `_name`), or a
`Forwarded` element with no `for=` on the way, means the direct peer: never an error.

The parsing is by hand, in one small pure function: aiohttp's `request.forwarded` skips a
malformed part and carries on, which cannot tell "malformed" from "absent", and the
X-Forwarded-For walk is a few lines.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 7239 forwarded-pair: token "=" ( token / quoted-string ). Token characters are RFC 9110's
# tchar, plus "[", "]" and ":" so that an unquoted `for=[2001:db8::1]` (which some proxies
# write) is read rather than refused.
_PAIR = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)=([!#$%&'*+.^_`|~0-9A-Za-z:\[\]-]+|"(?:[^"\\]|\\.)*")\s*"""
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
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _node_ip(node: str) -> IPAddress | None:
    """The address of one hop: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]:80`."""
    if node.startswith("["):
        found = _V6_BRACKETS.fullmatch(node)
        ip = parse_ip(found.group(1)) if found else None
        return ip if ip is not None and ip.version == 6 else None
    found = _V4_PORT.fullmatch(node)
    return parse_ip(found.group(1) if found else node)


def _trusted(ip: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(ip in network for network in trusted)


def _forwarded_for(values: Iterable[str]) -> list[str] | None:
    """The `for=` value of every element of the Forwarded header(s), left to right; None when a
    header cannot be read or an element has no `for=` (the walk cannot skip a hop)."""
    hops = []
    for value in values:
        for element in _split_elements(value):
            found = None
            for pair in element.split(";") if element else [""]:
                match = _PAIR.fullmatch(pair)
                if match is None:
                    return None
                name, raw = match.groups()
                if name.lower() == "for":
                    if found is not None:
                        return None  # two for= in one element
                    found = _unquote(raw) if raw.startswith('"') else raw
            if found is None:
                return None
            hops.append(found)
    return hops


def _split_elements(value: str) -> list[str]:
    """The comma-separated elements of a Forwarded value; commas inside quotes do not split."""
    elements, start, quoted, escaped = [], 0, False, False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            elements.append(value[start:i].strip())
            start = i + 1
    elements.append(value[start:].strip())
    return elements


def _unquote(raw: str) -> str:
    return re.sub(r"\\(.)", r"\1", raw[1:-1])


def client_address(
    peer: tuple[str, int] | None,
    x_forwarded_for: Sequence[str],
    forwarded: Sequence[str],
    trusted: Sequence[IPNetwork],
) -> ClientAddress | None:
    """The client of a request whose TCP peer is `peer` (host, port), given the values of its
    X-Forwarded-For and Forwarded headers (each header line one item) and the trusted proxies.
    None only when the peer itself is not an IP address (a Unix socket)."""
    if peer is None:
        return None
    peer_ip = parse_ip(peer[0])
    if peer_ip is None:
        return None
    direct = ClientAddress(peer_ip, peer[1])
    if not trusted or not _trusted(peer_ip, trusted):
        return direct
    if x_forwarded_for:
        hops: list[str] | None = [h.strip() for v in x_forwarded_for for h in v.split(",")]
    elif forwarded:
        hops = _forwarded_for(forwarded)
    else:
        return direct
    if not hops:
        return direct
    ip: IPAddress | None = None
    for hop in reversed(hops):
        ip = _node_ip(hop)
        if ip is None:
            return direct  # malformed, `unknown` or obfuscated: this hop cannot be followed
        if not _trusted(ip, trusted):
            break
    assert ip is not None
    return ClientAddress(ip, 0)


def auth_context(peercert: Any) -> dict[str, list[bytes]]:
    """What grpc's `ServicerContext.auth_context()` gives for a TLS client certificate, from
    `ssl.SSLSocket.getpeercert()` (verified; empty or None when the client sent none): {} when
    there is none."""
    if not peercert:
        return {}
    names = [
        value.encode()
        for rdn in peercert.get("subject", ())
        for key, value in rdn
        if key == "commonName"
    ]
    sans = [value.encode() for _, value in peercert.get("subjectAltName", ())]
    context = {"transport_security_type": [b"ssl"]}
    if names:
        context["x509_common_name"] = names
    if sans:
        context["x509_subject_alternative_name"] = sans
    return context
