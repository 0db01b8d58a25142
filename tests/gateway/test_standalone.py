"""`authsvc gateway --grpc-target`: the shim alone, in front of a server that requires mTLS."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import replace

import aiohttp
import pytest

from service import app
from service.config import Settings, TlsFiles
from tests.gateway.helpers import basic_auth
from tests.pki import make_pki
from tests.support import new_user
from tests.test_cli import env_with, free_port


async def wait_http(port: int, process: subprocess.Popen[str]) -> None:
    for _ in range(300):
        assert process.poll() is None, process.communicate()[1]
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("gateway did not start")


async def test_standalone_gateway_over_mtls(
    services: app.Services, settings: Settings, tmp_path
) -> None:
    """A standalone gateway with the CA and a client certificate serves REST calls to an mTLS
    gRPC server, and exits 0 on SIGTERM."""
    pki = make_pki(tmp_path)
    tls = TlsFiles(pki.server_cert, pki.server_key, client_ca_file=pki.ca_cert)
    server, port = app.grpc_server(services, replace(settings, grpc_addr="127.0.0.1:0", tls=tls))
    await server.start()
    user = await new_user(services, "pw")
    http_port = free_port()
    env = env_with(
        AUTHSVC_HTTP_ADDR=f"127.0.0.1:{http_port}",
        AUTHSVC_GATEWAY_CA_FILE=str(pki.ca_cert),
        AUTHSVC_GATEWAY_CLIENT_CERT_FILE=str(pki.client_cert),
        AUTHSVC_GATEWAY_CLIENT_KEY_FILE=str(pki.client_key),
    )
    gateway = subprocess.Popen(
        [sys.executable, "-m", "service", "gateway", "--grpc-target", f"localhost:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await wait_http(http_port, gateway)
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{http_port}/v1/users/authorize",
                headers=basic_auth(user.username, "pw"),
                json={"ttl": 60},
            ) as reply:
                assert reply.status == 200, await reply.text()
                assert (await reply.json())["access_token"]
            async with http.get(f"http://127.0.0.1:{http_port}/readyz") as ready:
                assert ready.status == 200
        gateway.terminate()
        _, stderr = await asyncio.to_thread(gateway.communicate, timeout=30)
        assert gateway.returncode == 0, stderr
    finally:
        if gateway.poll() is None:
            gateway.kill()
        await server.stop(None)


def test_gateway_needs_a_target() -> None:
    """`authsvc gateway` without --grpc-target is a usage error (exit 2)."""
    result = subprocess.run(
        [sys.executable, "-m", "service", "gateway"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        (
            "AUTHSVC_GATEWAY_CLIENT_CERT_FILE",
            "AUTHSVC_GATEWAY_CLIENT_KEY_FILE: mTLS needs both files",
        )
    ],
)
def test_half_a_client_certificate_is_refused(tmp_path, variable: str, expected: str) -> None:
    """A client certificate without its key stops the gateway with one line naming the variable."""
    pki = make_pki(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "service", "gateway", "--grpc-target", "localhost:1"],
        env=env_with(AUTHSVC_GATEWAY_CA_FILE=str(pki.ca_cert), **{variable: str(pki.client_cert)}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"authsvc: {expected}"


async def test_mtls_applies_to_rest_too(grpc_target: str, services: app.Services, tmp_path) -> None:
    """With a client CA, HTTPS refuses a client without a certificate and serves one with it."""
    import ssl

    from service.gateway.dispatch import ChannelDispatcher
    from service.http_server import serving_gateway
    from service.tls import https_context

    pki = make_pki(tmp_path)
    user = await new_user(services, "pw")
    server_tls = https_context(pki.server_cert, pki.server_key, pki.ca_cert)
    async with serving_gateway(
        ChannelDispatcher(grpc_target), "127.0.0.1:0", ssl_context=server_tls
    ) as port:
        url = f"https://127.0.0.1:{port}/v1/users/authorize"
        anonymous = ssl.create_default_context(cafile=pki.ca_cert)
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):
                async with http.post(url, headers=basic_auth(user.username, "pw"), ssl=anonymous):
                    pass
            holder = ssl.create_default_context(cafile=pki.ca_cert)
            holder.load_cert_chain(pki.client_cert, pki.client_key)
            async with http.post(url, headers=basic_auth(user.username, "pw"), ssl=holder) as r:
                assert r.status == 200


def test_plaintext_to_a_remote_target_is_refused() -> None:
    """Without AUTHSVC_GATEWAY_CA_FILE, a non-loopback --grpc-target is a usage error (exit 2)."""
    result = subprocess.run(
        [sys.executable, "-m", "service", "gateway", "--grpc-target", "10.1.2.3:50051"],
        env=env_with(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("authsvc: --grpc-target: plaintext")
