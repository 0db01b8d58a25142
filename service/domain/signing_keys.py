"""Signing keys: made here, kept in PostgreSQL, so every replica signs and verifies alike.

Life of a key: it is published (in the JWKS) from the moment it is created; it signs from
`activates_at`; once a newer key activates it stops signing, and it stays published until
`retires_at`, when every token it can have signed has expired. A scheduled rotation creates the
next key `publish_ahead` before it activates, so verifiers that cache the key set for that long
already hold it; a forced rotation (`authsvc keys rotate`, after a compromise) activates at once.

A key's `kid` is its RFC 7638 JWK thumbprint: derived from the public key itself, so two replicas
racing to create a key can never publish two keys under one id.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import Algorithm, OKPAlgorithm

from service.domain.audit import Auditor
from service.domain.models import AuditKind, SigningKey
from service.domain.ports import KeyStore
from service.domain.token_lifetime import TTL_MAX

SigningPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
VerifyingPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

# RFC 7638 section 3.2: the members that make up the thumbprint, per key type.
_THUMBPRINT_MEMBERS = {
    "OKP": ("crv", "kty", "x"),
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
}
# How often a replica re-reads the key table, so it signs with a key another replica made. This
# is the fallback: a change normally reaches every replica at once (`KeyRing.changed`).
REFRESH_SECONDS = 10.0
# A verification that names an unknown kid re-reads the table at most this often.
MISS_REFRESH_SECONDS = 5.0


# RFC 9864 deprecates the polymorphic "EdDSA" JWS identifier (its key decides the curve) in
# favour of fully specified ones: "Ed25519" names the same signature, with the curve fixed. PyJWT
# knows only "EdDSA", so its Ed25519 implementation is registered under the new name too (on
# PyJWT's global object: `jwt.encode`/`jwt.decode` accept a name only when it is registered there,
# and only where a caller lists it in `algorithms=`). Our keys under either name are Ed25519 keys.
ED25519 = "Ed25519"
# What tokens can be signed with (one at a time, chosen by the operator; never by a token).
JWT_ALGORITHMS = ("ES256", "RS256", ED25519, "EdDSA")
try:
    jwt.get_algorithm_by_name(ED25519)
except NotImplementedError:  # every PyJWT so far
    jwt.register_algorithm(ED25519, OKPAlgorithm())


def jws_algorithm(algorithm: str) -> Algorithm:
    """PyJWT's implementation of a JWS algorithm we sign with ("Ed25519" included)."""
    return jwt.get_algorithm_by_name(algorithm)


def _new_private_key(algorithm: str) -> SigningPrivateKey:
    if algorithm in ("EdDSA", ED25519):
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


def generate_signing_key(
    algorithm: str,
    now: datetime,
    activates_at: datetime | None = None,
    passphrase: str | None = None,
) -> SigningKey:
    private = _new_private_key(algorithm)
    jwk: dict[str, Any] = jws_algorithm(algorithm).to_jwk(private.public_key(), as_dict=True)
    kid = thumbprint(jwk)
    jwk.update(kid=kid, alg=algorithm, use="sig")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    return SigningKey(
        kid=kid,
        algorithm=algorithm,
        private_pem=pem,
        public_jwk=jwk,
        created_at=now,
        activates_at=activates_at or now,
        encrypted=passphrase is not None,
    )


class KeyUnreadableError(Exception):
    """A stored private key cannot be decrypted with the configured passphrase."""


def load_private_key(key: SigningKey, passphrase: str | None) -> SigningPrivateKey:
    if key.encrypted and passphrase is None:
        raise KeyUnreadableError(
            f"signing key {key.kid} is encrypted: set AUTHSVC_KEY_ENCRYPTION_KEY"
        )
    try:
        private = serialization.load_pem_private_key(
            key.private_pem, password=passphrase.encode() if key.encrypted and passphrase else None
        )
    except ValueError:
        raise KeyUnreadableError(
            f"signing key {key.kid} cannot be decrypted with AUTHSVC_KEY_ENCRYPTION_KEY"
        ) from None
    if not isinstance(private, SigningPrivateKey):
        raise KeyUnreadableError(f"signing key {key.kid} is not a JWT signing key")
    return private


@dataclass(frozen=True)
class KeyPolicy:
    """Sign with `algorithm`; a new key every `rotation`, published `publish_ahead` (the JWKS
    cache lifetime) before it signs; private keys encrypted with `passphrase` when given."""

    algorithm: str = "ES256"
    rotation: timedelta = timedelta(days=30)
    publish_ahead: timedelta = timedelta(hours=1)
    passphrase: str | None = None

    @property
    def verify_window(self) -> timedelta:
        """How long an old key must stay published after the next one activates: the longest
        token lifetime, plus a minute of clock skew."""
        return timedelta(seconds=TTL_MAX + 60)


@dataclass(frozen=True)
class ActiveKey:
    """A signing key with its private half parsed once, not on every token."""

    key: SigningKey
    private: SigningPrivateKey


@dataclass(frozen=True)
class PublicKey:
    key: SigningKey
    public: VerifyingPublicKey


@dataclass
class _Snapshot:
    signing: ActiveKey | None
    by_kid: dict[str, PublicKey]
    loaded_at: float
    generation: int  # KeyRing._generation when the read began


class KeyRing:
    """This replica's view of the key table: the key to sign with and the keys to verify with."""

    def __init__(
        self,
        store: KeyStore,
        policy: KeyPolicy,
        clock: Callable[[], datetime],
        audit: Auditor | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._policy = policy
        self._clock = clock
        self._snapshot: _Snapshot | None = None
        self._lock = asyncio.Lock()
        self._generation = 0

    def changed(self) -> None:
        """The key table has changed (another process says so): read it again before signing
        or verifying anything, so a retired key is refused from now on, not at the next
        periodic re-read. A read already under way when this is called does not count."""
        self._generation += 1

    @property
    def signing_created_at(self) -> datetime | None:
        """When the key this replica signs with was made (its last read), None before one."""
        snapshot = self._snapshot
        if snapshot is None or snapshot.signing is None:
            return None
        return snapshot.signing.key.created_at

    async def load(self) -> None:
        """Read the key table, first creating a key for the configured algorithm if it has none
        (replicas racing at first start agree on one)."""
        await self._bootstrap()
        await self._reload()

    async def rotate_if_due(self) -> SigningKey | None:
        """Schedule the next key when the newest is older than the rotation period. However many
        replicas try, one succeeds; returns the new key if this replica made it."""
        now = self._clock()
        due_after = now - self._policy.rotation
        # A cheap look first, so that an idle check does not generate a key for nothing; the
        # store repeats the check atomically. A key on its way out counts here, so replicas on
        # two algorithms during a rolling change do not take turns making keys every check.
        newest = next(
            (k for k in await self._store.published(now) if k.algorithm == self._policy.algorithm),
            None,
        )
        if newest is not None and newest.created_at > due_after:
            return None
        key = self._new_key(now, activates_at=now + self._policy.publish_ahead)
        retire_at = key.activates_at + self._policy.verify_window
        inserted = await self._store.add_scheduled_key(
            key, unless_newer_than=due_after, retire_others_at=retire_at
        )
        if inserted:
            await self._record_rotation(key, "scheduled", retire_at)
        await self._purge_retired(now)
        return key if inserted else None

    async def rotate_now(self, *, retire_others: bool = False) -> SigningKey:
        """Create a key that signs at once. With `retire_others` (a compromised key), every
        other key is retired now, so the tokens they signed stop verifying and their holders
        must authorize again. The store tells every replica listening for key changes."""
        now = self._clock()
        key = self._new_key(now, activates_at=now)
        retire_at = now if retire_others else now + self._policy.verify_window
        await self._store.add_forced_key(key, retire_others_at=retire_at)
        await self._record_rotation(key, "forced", retire_at)
        if retire_others and self._audit is not None:
            await self._audit.record(
                AuditKind.KEY_RETIRED, "", f"every key but {key.kid} retired now (compromise)"
            )
        await self._purge_retired(now)
        await self._reload()
        return key

    async def _record_rotation(self, key: SigningKey, how: str, retire_at: datetime) -> None:
        if self._audit is not None:
            await self._audit.record(
                AuditKind.KEY_ROTATED,
                "",
                f"{how}: {key.kid} ({key.algorithm}) signs from"
                f" {key.activates_at.isoformat(timespec='seconds')}; older keys retire by"
                f" {retire_at.isoformat(timespec='seconds')}",
            )

    async def _purge_retired(self, now: datetime) -> None:
        purged = await self._store.purge_retired(now)
        if purged and self._audit is not None:
            await self._audit.record(
                AuditKind.KEY_RETIRED, "", f"{purged} retired key(s) deleted (private halves too)"
            )

    async def signing_key(self) -> ActiveKey:
        snapshot = await self._current(REFRESH_SECONDS)
        if snapshot.signing is None:
            snapshot = await self._current(0)
        if snapshot.signing is None:  # every key of our algorithm was removed under us
            await self.load()
            snapshot = await self._current(0)
        assert snapshot.signing is not None
        return snapshot.signing

    async def verification_key(self, kid: str) -> PublicKey | None:
        """The published key named `kid`; an unknown kid re-reads the table (rate-limited), in
        case another replica has just made it."""
        snapshot = await self._current(REFRESH_SECONDS)
        if kid not in snapshot.by_kid:
            snapshot = await self._current(MISS_REFRESH_SECONDS)
        found = snapshot.by_kid.get(kid)
        if found is None or not _is_published(found.key, self._clock()):
            return None
        return found

    async def published(self) -> list[SigningKey]:
        """The public keys verifiers need now (the JWKS), newest first."""
        snapshot = await self._current(REFRESH_SECONDS)
        now = self._clock()
        return [p.key for p in snapshot.by_kid.values() if _is_published(p.key, now)]

    async def _current(self, max_age: float) -> _Snapshot:
        if self._fresh(max_age):
            assert self._snapshot is not None
            return self._snapshot
        async with self._lock:  # one reload at a time, however many callers find it stale
            if self._fresh(max_age):
                assert self._snapshot is not None
                return self._snapshot
            return await self._reload()

    def _fresh(self, max_age: float) -> bool:
        snapshot = self._snapshot
        return (
            snapshot is not None
            and snapshot.generation == self._generation
            and time.monotonic() - snapshot.loaded_at < max_age
        )

    async def _reload(self) -> _Snapshot:
        generation = self._generation
        now = self._clock()
        keys = await self._store.published(now)  # newest first
        # The signing key is the most recently created active key of our algorithm: a key made
        # by a forced rotation outranks one scheduled earlier to activate later.
        signer = next(
            (k for k in keys if k.algorithm == self._policy.algorithm and k.activates_at <= now),
            None,
        )
        self._snapshot = _Snapshot(
            signing=None
            if signer is None
            else ActiveKey(key=signer, private=load_private_key(signer, self._policy.passphrase)),
            by_kid={k.kid: PublicKey(key=k, public=_public_key(k)) for k in keys},
            loaded_at=time.monotonic(),
            generation=generation,
        )
        return self._snapshot

    async def _bootstrap(self) -> None:
        """Create a key that signs at once unless the algorithm has one not on its way out."""
        # A key on its way out does not count here, so a replica never goes on signing with
        # one (say, after switching the algorithm away and back).
        now = self._clock()
        if any(
            k.algorithm == self._policy.algorithm and k.retires_at is None
            for k in await self._store.published(now)
        ):
            return
        key = self._new_key(now, activates_at=now)
        retire_at = now + self._policy.verify_window
        if await self._store.add_first_key(key, retire_others_at=retire_at):
            await self._record_rotation(key, "first", retire_at)
        await self._purge_retired(now)

    def _new_key(self, now: datetime, *, activates_at: datetime) -> SigningKey:
        return generate_signing_key(
            self._policy.algorithm, now, activates_at, self._policy.passphrase
        )


def _is_published(key: SigningKey, now: datetime) -> bool:
    return key.retires_at is None or key.retires_at > now


def _public_key(key: SigningKey) -> VerifyingPublicKey:
    public = jws_algorithm(key.algorithm).from_jwk(key.public_jwk)
    assert isinstance(public, VerifyingPublicKey)
    return public
