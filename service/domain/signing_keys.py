"""Signing keys: made here, kept in PostgreSQL, so every replica signs and verifies alike.

A key's `kid` is its RFC 7638 JWK thumbprint: derived from the public key itself, so two replicas
that race to create the first key can never publish two keys under one id.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from service.domain.models import SigningKey
from service.domain.ports import KeyStore

SigningPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

# RFC 7638 section 3.2: the members that make up the thumbprint, per key type.
_THUMBPRINT_MEMBERS = {
    "OKP": ("crv", "kty", "x"),
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
}


def _new_private_key(algorithm: str) -> SigningPrivateKey:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unsupported signing algorithm {algorithm!r}")


def thumbprint(jwk: dict[str, Any]) -> str:
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def generate_signing_key(algorithm: str, now: datetime) -> SigningKey:
    private = _new_private_key(algorithm)
    jwk: dict[str, Any] = get_default_algorithms()[algorithm].to_jwk(
        private.public_key(), as_dict=True
    )
    kid = thumbprint(jwk)
    jwk.update(kid=kid, alg=algorithm, use="sig")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningKey(kid=kid, algorithm=algorithm, private_pem=pem, public_jwk=jwk, created_at=now)


@dataclass(frozen=True)
class ActiveKey:
    """A signing key with its private half parsed once, not on every token."""

    key: SigningKey
    private: SigningPrivateKey


class KeyRing:
    def __init__(self, store: KeyStore, algorithm: str, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._algorithm = algorithm
        self._clock = clock
        self._active: ActiveKey | None = None

    async def load(self) -> None:
        """Load the newest key for the configured algorithm, creating the first one if needed."""
        key = await self._store.newest(self._algorithm)
        if key is None:
            key = await self._store.add_if_none(
                generate_signing_key(self._algorithm, self._clock())
            )
        private = serialization.load_pem_private_key(key.private_pem, password=None)
        if not isinstance(
            private, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)
        ):
            raise TypeError(f"signing key {key.kid} is not a JWT signing key")
        self._active = ActiveKey(key=key, private=private)

    async def signing_key(self) -> ActiveKey:
        if self._active is None:
            await self.load()
        assert self._active is not None
        return self._active
