"""`authsvc serve` end to end as an operator runs it: TLS and mTLS from AUTHSVC_TLS_* on both
listeners, the plaintext-only-on-loopback rule for the REST address, and private keys encrypted
at rest with AUTHSVC_KEY_ENCRYPTION_KEY."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import asyncpg
import grpc
import pytest

from tests.gateway.helpers import basic_auth
from tests.pki import Pki, make_pki
from tests.support import authorize
from tests.test_cli import cli, env_with, serve


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_ssl(pki: Pki, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.check_hostname = False  # the test certificate names no loopback host
    if with_certificate:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


async def test_serve_with_mtls_on_both_listeners(database_url: str, pki: Pki) -> None:
    """With AUTHSVC_TLS_CERT_FILE, _KEY_FILE and _CLIENT_CA_FILE, gRPC and REST both speak TLS
    and both refuse a client without a certificate; with one, both give tokens."""
    env = env_with(
        AUTHSVC_DATABASE_URL=database_url,
        AUTHSVC_TLS_CERT_FILE=str(pki.server_cert),
        AUTHSVC_TLS_KEY_FILE=str(pki.server_key),
        AUTHSVC_TLS_CLIENT_CA_FILE=str(pki.ca_cert),
    )
    assert (
        cli(env, "user", "create", "tls-user", "--password-stdin", stdin="tls-pw-1").returncode == 0
    )
    with serve(env) as (grpc_port, http_port):
        url = f"https://127.0.0.1:{http_port}/v1/users/authorize"
        headers = basic_auth("tls-user", "tls-pw-1")
        async with aiohttp.ClientSession() as http:
            async with http.post(url, headers=headers, ssl=client_ssl(pki, True)) as r:
                assert r.status == 200 and (await r.json())["access_token"]
            with pytest.raises(aiohttp.ClientError):
                async with http.post(url, headers=headers, ssl=client_ssl(pki, False)) as r:
                    await r.read()
            with pytest.raises(aiohttp.ClientError):
                async with http.post(url.replace("https", "http"), headers=headers) as r:
                    await r.read()
        options = (("grpc.ssl_target_name_override", "localhost"),)
        with_cert = grpc.ssl_channel_credentials(
            pki.ca_cert.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
        )
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{grpc_port}", with_cert, options=options
        ) as channel:
            assert (await authorize(channel, "tls-user", "tls-pw-1")).access_token
        without = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes())
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{grpc_port}", without, options=options
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asyncio.wait_for(authorize(channel, "tls-user", "tls-pw-1"), 10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_rest_off_loopback_is_refused(database_url: str) -> None:
    """Without TLS, a non-loopback REST address stops `serve` with one line naming the variable
    (exit 2); AUTHSVC_ALLOW_PLAINTEXT is the explicit way round it."""
    env = env_with(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_HTTP_ADDR="0.0.0.0:0")
    refused = cli(env, "serve")
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0
    assert "AUTHSVC_HTTP_ADDR" in refused.stderr


async def test_keys_are_encrypted_at_rest_with_the_key_encryption_key(
    database_url: str, pki: Pki
) -> None:
    """With AUTHSVC_KEY_ENCRYPTION_KEY, new private keys are stored encrypted and still sign;
    a passphrase under 16 characters stops start-up naming the variable."""
    short = cli(
        env_with(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_KEY_ENCRYPTION_KEY="short"),
        "keys",
        "list",
    )
    assert short.returncode == 2 and short.stderr.startswith("authsvc: AUTHSVC_KEY_ENCRYPTION_KEY:")
    env = env_with(
        AUTHSVC_DATABASE_URL=database_url,
        AUTHSVC_KEY_ENCRYPTION_KEY="correct horse battery staple",
    )
    rotated = cli(env, "keys", "rotate", "--retire-old")
    assert rotated.returncode == 0, rotated.stderr
    kid = rotated.stdout.split()[3]
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT encrypted, private_pem FROM signing_keys WHERE kid = $1", kid
        )
    finally:
        await conn.close()
    assert row["encrypted"] and b"ENCRYPTED PRIVATE KEY" in bytes(row["private_pem"])
    assert (
        cli(env, "user", "create", "kek-user", "--password-stdin", stdin="kek-pw-1").returncode == 0
    )
    with serve(env) as (grpc_port, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            token = (await authorize(channel, "kek-user", "kek-pw-1")).access_token
    assert token.count(".") == 2
