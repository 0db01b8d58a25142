"""The in-process call's context: what it reports as grpc.aio's ServicerContext would."""

from __future__ import annotations

from service.rpc.in_process import auth_context


def test_auth_context_of_a_certificate() -> None:
    """A verified client certificate gives gRPC's auth context keys; none gives {}."""
    cert = {
        "subject": ((("countryName", "XX"),), (("commonName", "client-a"),)),
        "subjectAltName": (("DNS", "client-a.internal"), ("IP Address", "127.0.0.1")),
    }
    assert auth_context(cert) == {
        "transport_security_type": [b"ssl"],
        "x509_common_name": [b"client-a"],
        "x509_subject_alternative_name": [b"client-a.internal", b"127.0.0.1"],
    }
    assert auth_context(None) == {}
    assert auth_context({}) == {}
