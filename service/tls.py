"""TLS from the configured PEM files: the one place certificates become credentials, for the gRPC
listener, the HTTPS listener and a standalone gateway's calls to the server."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from service.config import TlsFiles, UpstreamTls


def grpc_server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """TLS with the configured certificate; with a client CA, mTLS: every client must present a
    certificate that CA signed (service-to-service calls)."""
    client_ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def https_context(
    cert_file: Path, key_file: Path, client_ca_file: Path | None = None
) -> ssl.SSLContext:
    """A server-side TLS context for HTTPS from PEM files (the same ones as the gRPC listener).
    With `client_ca_file`, mTLS: a client without a certificate that CA signed is refused in the
    handshake, as on the gRPC listener, so REST is no way around it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca_file)
    return context


def settings_https_context(tls: TlsFiles | None) -> ssl.SSLContext | None:
    """The HTTPS context for the configured files; None for plaintext."""
    if tls is None:
        return None
    return https_context(tls.cert_file, tls.key_file, tls.client_ca_file)


def grpc_channel_credentials(upstream: UpstreamTls) -> grpc.ChannelCredentials:
    """TLS (and an mTLS client certificate) for a standalone gateway's calls to the server."""
    return grpc.ssl_channel_credentials(
        root_certificates=upstream.ca_file.read_bytes(),
        private_key=upstream.client_key_file.read_bytes() if upstream.client_key_file else None,
        certificate_chain=(
            upstream.client_cert_file.read_bytes() if upstream.client_cert_file else None
        ),
    )
