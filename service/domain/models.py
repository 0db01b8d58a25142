"""The domain's values: plain frozen dataclasses, free of any transport or storage type."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class User:
    id: UUID
    username: str
    created_at: datetime
    locked: bool = False
    expires_at: datetime | None = None
    # Bumped whenever the password list shrinks or is replaced; tokens carry it (revocation).
    credential_version: int = 1


@dataclass(frozen=True)
class StoredPassword:
    id: int
    hash: str = field(repr=False)
    # When the password was set (its age decides whether it has expired); None when unknown.
    created_at: datetime | None = None


@dataclass(frozen=True)
class Principal:
    """A user who has just proven knowledge of one of their passwords (`password_id`)."""

    user: User
    password_id: int
    # The password is older than the configured maximum age: good for changing the password
    # list, not for a token.
    password_expired: bool = False


@dataclass(frozen=True)
class LoginAttempt:
    """The brute-force throttle's answer to one login attempt on a username."""

    admitted: bool
    # Consecutive failures on the name, this attempt included when it was counted.
    failures: int
    # Seconds before the name's next attempt is admitted.
    retry_after: float
    # Seconds the name's lock has left, when the attempt came during a lock (and so was not
    # counted); None when the name was not locked.
    locked_for: float | None = None


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    # PKCS#8 PEM; passphrase-encrypted when `encrypted`.
    private_pem: bytes = field(repr=False)
    public_jwk: dict[str, Any]
    created_at: datetime
    # Signs from `activates_at`; published (for verification) until `retires_at`, if set.
    activates_at: datetime
    retires_at: datetime | None = None
    encrypted: bool = False


@dataclass(frozen=True)
class VerifiedToken:
    """The claims of a token that is valid now and not revoked."""

    subject: str
    username: str
    issuer: str
    issued_at: int
    expires_at: int
    jti: str


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    issued_at: datetime
    expires_at: datetime
