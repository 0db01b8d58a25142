"""TLS on both sides of the gateway: HTTPS for clients, TLS on its channel to the server."""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2_grpc

from service import app
from service.config import Settings, TlsFiles
from service.gateway.dispatch import ChannelDispatcher
from service.http_server import serving_gateway
from service.rpc.health import HealthServicer
from service.tls import grpc_server_credentials, https_context
from tests.gateway.helpers import json_of


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authsvc test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_gateway_serves_https(
    services: app.Services, settings: Settings, tmp_path: Path
) -> None:
    """With a TLS context the gateway answers over HTTPS, and a client trusting the certificate
    reaches the RPCs through it."""
    cert_file, key_file = self_signed(tmp_path)
    client_context = ssl.create_default_context(cafile=str(cert_file))
    async with (
        serving_gateway(
            app.in_process_gateway(app.build_servicers(services, settings)),
            "127.0.0.1:0",
            ssl_context=https_context(cert_file, key_file),
            shutdown_timeout=1.0,
        ) as port,
        aiohttp.ClientSession(base_url=f"https://127.0.0.1:{port}") as session,
    ):
        async with session.get("/readyz", ssl=client_context) as response:
            assert response.status == 200
        async with session.post("/v1/users/authorize", ssl=client_context) as response:
            assert response.status == 401
            assert (await json_of(response))["error_code"] == "credentials_required"


async def test_gateway_dials_a_tls_grpc_server(services: app.Services, tmp_path: Path) -> None:
    """With channel credentials the gateway reaches a gRPC server that only speaks TLS."""
    cert_file, key_file = self_signed(tmp_path)
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(services.db.ping), server)
    port = server.add_secure_port(
        "127.0.0.1:0", grpc_server_credentials(TlsFiles(cert_file=cert_file, key_file=key_file))
    )
    await server.start()
    try:
        plaintext = serving_gateway(
            ChannelDispatcher(f"127.0.0.1:{port}"), "127.0.0.1:0", shutdown_timeout=1.0
        )
        credentials = grpc.ssl_channel_credentials(root_certificates=cert_file.read_bytes())
        tls = serving_gateway(
            ChannelDispatcher(f"127.0.0.1:{port}", credentials),
            "127.0.0.1:0",
            shutdown_timeout=1.0,
        )
        async with plaintext as plain_port, tls as tls_port, aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{tls_port}/readyz") as response:
                assert response.status == 200
            async with session.get(f"http://127.0.0.1:{plain_port}/readyz") as response:
                assert response.status == 503
    finally:
        await server.stop(None)
