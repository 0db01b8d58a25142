"""What the servicer learns about the REST client, in both dispatch modes: in process, the
context's `peer()` and `auth_context()`; over a channel (standalone gateway), the resolved address
in `x-forwarded-for` metadata. Real HTTP requests come from different loopback source addresses.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from authsvc.v1 import auth_service_pb2, auth_service_pb2_grpc

from service.client_address import IPNetwork
from service.config import TlsFiles
from service.gateway.dispatch import ChannelDispatcher, Dispatcher, InProcessDispatcher
from service.http_server import serving_gateway
from service.tls import grpc_server_credentials, https_context
from tests.pki import make_pki

AUTH_SERVICE = auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
AUTHORIZE = "/v1/users/authorize"
TRUST_127_0_0_2 = (ipaddress.ip_network("127.0.0.2/32"),)


class RecordingAuth(auth_service_pb2_grpc.AuthServiceServicer):
    """Remembers what each Authorize call saw of its caller."""

    def __init__(self) -> None:
        self.peers: list[str] = []
        self.auth_contexts: list[dict[str, list[bytes]]] = []
        self.forwarded_for: list[list[str | bytes]] = []

    async def Authorize(
        self, request: auth_service_pb2.AuthorizeRequest, context: Any
    ) -> auth_service_pb2.AuthorizeResponse:
        self.peers.append(context.peer())
        self.auth_contexts.append(dict(context.auth_context()))
        metadata = context.invocation_metadata() or ()
        self.forwarded_for.append([v for k, v in metadata if k == "x-forwarded-for"])
        return auth_service_pb2.AuthorizeResponse(access_token="t")


@asynccontextmanager
async def grpc_server(servicer: RecordingAuth, tls: TlsFiles | None = None) -> AsyncIterator[str]:
    server = grpc.aio.server()
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", grpc_server_credentials(tls))
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@asynccontextmanager
async def gateway(
    mode: str, servicer: RecordingAuth, trusted: Sequence[IPNetwork] = (), **options: Any
) -> AsyncIterator[int]:
    """A gateway in front of `servicer`, in process or over a channel; yields its HTTP port."""
    async with grpc_server(servicer) as target:
        dispatcher: Dispatcher
        if mode == "in-process":
            dispatcher = InProcessDispatcher({AUTH_SERVICE: servicer})
        else:
            dispatcher = ChannelDispatcher(target)
        async with serving_gateway(
            dispatcher, "127.0.0.1:0", shutdown_timeout=1.0, trusted_proxies=trusted, **options
        ) as port:
            yield port


async def post_from(source: str, port: int, headers: dict[str, str] | None = None) -> None:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.post(f"http://127.0.0.1:{port}{AUTHORIZE}", headers=headers) as reply,
    ):
        assert reply.status == 200, await reply.text()


def seen(mode: str, servicer: RecordingAuth) -> str:
    """The client address the servicer saw last: peer() in process, metadata over a channel."""
    if mode == "in-process":
        return servicer.peers[-1]
    (value,) = servicer.forwarded_for[-1]  # exactly one, the gateway's own
    assert isinstance(value, str)
    return value


MODES = ["in-process", "standalone"]


@pytest.mark.parametrize("mode", MODES)
async def test_each_client_address_reaches_the_servicer(mode: str) -> None:
    """Without trusted proxies the servicer sees the TCP peer of each request, and a client's
    own X-Forwarded-For changes nothing."""
    servicer = RecordingAuth()
    async with gateway(mode, servicer) as port:
        await post_from("127.0.0.2", port)
        first = seen(mode, servicer)
        await post_from("127.0.0.3", port, {"X-Forwarded-For": "198.51.100.7"})
        second = seen(mode, servicer)
    if mode == "in-process":
        assert re.fullmatch(r"ipv4:127\.0\.0\.2:[1-9]\d*", first)
        assert re.fullmatch(r"ipv4:127\.0\.0\.3:[1-9]\d*", second)
    else:
        assert (first, second) == ("127.0.0.2", "127.0.0.3")
        assert servicer.peers[-1].startswith("ipv4:127.0.0.1:")  # the gateway is the peer


@pytest.mark.parametrize("mode", MODES)
async def test_a_trusted_proxy_names_the_client(mode: str) -> None:
    """From a trusted proxy (127.0.0.2) the X-Forwarded-For (or Forwarded) client is believed,
    with port 0; the same headers from an untrusted peer (127.0.0.3) are ignored."""
    servicer = RecordingAuth()
    async with gateway(mode, servicer, TRUST_127_0_0_2) as port:
        await post_from("127.0.0.2", port, {"X-Forwarded-For": "1.2.3.4, 198.51.100.7"})
        via_xff = seen(mode, servicer)
        await post_from("127.0.0.2", port, {"Forwarded": 'for="[2001:db8::1]:4711"'})
        via_forwarded = seen(mode, servicer)
        await post_from("127.0.0.3", port, {"X-Forwarded-For": "198.51.100.7"})
        spoofed = seen(mode, servicer)
        await post_from("127.0.0.2", port, {"X-Forwarded-For": "not an address"})
        malformed = seen(mode, servicer)
    if mode == "in-process":
        assert via_xff == "ipv4:198.51.100.7:0"
        assert via_forwarded == "ipv6:[2001:db8::1]:0"
        assert re.fullmatch(r"ipv4:127\.0\.0\.3:[1-9]\d*", spoofed)
        assert re.fullmatch(r"ipv4:127\.0\.0\.2:[1-9]\d*", malformed)
    else:
        assert (via_xff, via_forwarded) == ("198.51.100.7", "2001:db8::1")
        assert (spoofed, malformed) == ("127.0.0.3", "127.0.0.2")


async def test_auth_context_matches_grpc_for_a_client_certificate(tmp_path: Path) -> None:
    """Over mTLS REST, the in-process auth_context() carries the keys gRPC gives for the same
    client certificate (security type, common name), with the same values."""
    pki = make_pki(tmp_path)
    client_tls = ssl.create_default_context(cafile=pki.ca_cert)
    client_tls.load_cert_chain(pki.client_cert, pki.client_key)
    servicer = RecordingAuth()
    server_tls = https_context(pki.server_cert, pki.server_key, pki.ca_cert)
    async with (
        gateway("in-process", servicer, ssl_context=server_tls) as port,
        aiohttp.ClientSession() as http,
        http.post(f"https://127.0.0.1:{port}{AUTHORIZE}", ssl=client_tls) as reply,
    ):
        assert reply.status == 200
    ours = servicer.auth_contexts[-1]
    assert ours["x509_common_name"] == [b"a-service"]

    grpc_side = RecordingAuth()
    tls = TlsFiles(pki.server_cert, pki.server_key, client_ca_file=pki.ca_cert)
    async with grpc_server(grpc_side, tls) as target:
        credentials = grpc.ssl_channel_credentials(
            pki.ca_cert.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
        )
        async with grpc.aio.secure_channel(
            target.replace("127.0.0.1", "localhost"), credentials
        ) as channel:
            await auth_service_pb2_grpc.AuthServiceStub(channel).Authorize(
                auth_service_pb2.AuthorizeRequest()
            )
    theirs = grpc_side.auth_contexts[-1]
    for key, value in ours.items():
        assert theirs.get(key) == value, key
    assert set(ours) >= {"transport_security_type", "x509_common_name"}


async def test_no_certificate_no_auth_context(tmp_path: Path) -> None:
    """Over plain HTTP, or HTTPS without a client certificate, auth_context() is {}."""
    pki = make_pki(tmp_path)
    servicer = RecordingAuth()
    async with gateway("in-process", servicer) as port:
        await post_from("127.0.0.1", port)
    server_tls = https_context(pki.server_cert, pki.server_key)
    async with (
        gateway("in-process", servicer, ssl_context=server_tls) as port,
        aiohttp.ClientSession() as http,
        http.post(
            f"https://127.0.0.1:{port}{AUTHORIZE}",
            ssl=ssl.create_default_context(cafile=pki.ca_cert),
        ) as reply,
    ):
        assert reply.status == 200
    assert servicer.auth_contexts == [{}, {}]
