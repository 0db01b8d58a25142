"""TLS and mTLS on the gRPC listener, and the plaintext-only-on-loopback rule."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest

from service import app
from service.config import TlsFiles
from tests.pki import Pki, make_pki
from tests.support import authorize, new_user


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def serving(services, settings, tls: TlsFiles) -> tuple[grpc.aio.Server, int]:
    server, port = app.grpc_server(services, replace(settings, grpc_addr="127.0.0.1:0", tls=tls))
    await server.start()
    return server, port


@pytest.fixture
async def tls_target(services, settings, pki: Pki) -> AsyncIterator[str]:
    server, port = await serving(services, settings, TlsFiles(pki.server_cert, pki.server_key))
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture
async def mtls_target(services, settings, pki: Pki) -> AsyncIterator[str]:
    tls = TlsFiles(pki.server_cert, pki.server_key, client_ca_file=pki.ca_cert)
    server, port = await serving(services, settings, tls)
    yield f"127.0.0.1:{port}"
    await server.stop(None)


def client_credentials(pki: Pki, with_client_cert: bool) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(),
        private_key=pki.client_key.read_bytes() if with_client_cert else None,
        certificate_chain=pki.client_cert.read_bytes() if with_client_cert else None,
    )


async def test_tls_client_gets_a_token(tls_target, services: app.Services, pki) -> None:
    """Over TLS, a client that trusts the CA authorizes as usual."""
    user = await new_user(services, "pw")
    async with grpc.aio.secure_channel(tls_target, client_credentials(pki, False)) as channel:
        assert (await authorize(channel, user.username, "pw")).access_token


async def test_plaintext_client_cannot_talk_to_tls(tls_target, services: app.Services) -> None:
    """A plaintext client gets UNAVAILABLE from a TLS listener, never a token."""
    user = await new_user(services, "pw")
    async with grpc.aio.insecure_channel(tls_target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await authorize(channel, user.username, "pw")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_requires_a_client_certificate(mtls_target, services: app.Services, pki) -> None:
    """With a client CA configured, a client without a certificate is refused; with one, served."""
    user = await new_user(services, "pw")
    async with grpc.aio.secure_channel(mtls_target, client_credentials(pki, False)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await authorize(channel, user.username, "pw")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.secure_channel(mtls_target, client_credentials(pki, True)) as channel:
        assert (await authorize(channel, user.username, "pw")).access_token
