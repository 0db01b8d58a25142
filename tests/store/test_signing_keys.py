"""The signing key store and the key ring over it: one key per race, rotation, retirement."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from service.domain.signing_keys import KeyPolicy, KeyRing, KeyUnreadableError, generate_signing_key
from service.store.db import Database
from service.store.signing_keys import PgKeyStore

DAY = timedelta(days=1)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def empty_keys(db):
    await db.execute("DELETE FROM signing_keys")
    yield
    await db.execute("DELETE FROM signing_keys")


def ring(db, clock, algorithm: str = "ES256", passphrase: str | None = None) -> KeyRing:
    policy = KeyPolicy(
        algorithm, rotation=30 * DAY, publish_ahead=timedelta(hours=1), passphrase=passphrase
    )
    return KeyRing(PgKeyStore(db), policy, clock)


async def test_racing_replicas_agree_on_one_first_key(db: Database, empty_keys) -> None:
    """Eight key rings loading at once on an empty table end up signing with one single key."""
    clock = Clock()
    rings = [ring(db, clock) for _ in range(8)]
    await asyncio.gather(*(r.load() for r in rings))
    kids = {(await r.signing_key()).key.kid for r in rings}
    assert len(kids) == 1
    assert [k.kid for k in await PgKeyStore(db).published(clock.now)] == list(kids)


async def test_rotation_is_due_only_after_the_period(db: Database, empty_keys) -> None:
    """Before 30 days nothing rotates; after, exactly one of eight racing replicas rotates."""
    clock = Clock()
    rings = [ring(db, clock) for _ in range(8)]
    await rings[0].load()
    assert await rings[0].rotate_if_due() is None
    clock.now += 31 * DAY
    made = [k for k in await asyncio.gather(*(r.rotate_if_due() for r in rings)) if k]
    assert len(made) == 1
    assert made[0].activates_at == clock.now + timedelta(hours=1)


async def test_scheduled_key_is_published_before_it_signs(db: Database, empty_keys) -> None:
    """A rotated-in key appears in the JWKS at once but signs only after publish_ahead; the old
    key keeps verifying until every token it signed has expired, then is purged."""
    clock = Clock()
    r = ring(db, clock)
    await r.load()
    old = (await r.signing_key()).key
    clock.now += 31 * DAY
    new = await r.rotate_if_due()
    assert new is not None
    r2 = ring(db, clock)  # a replica that reads the table fresh
    assert {k.kid for k in await r2.published()} == {old.kid, new.kid}
    assert (await r2.signing_key()).key.kid == old.kid
    clock.now += timedelta(hours=1)
    r3 = ring(db, clock)
    assert (await r3.signing_key()).key.kid == new.kid
    assert await r3.verification_key(old.kid) is not None
    clock.now += timedelta(days=1, minutes=2)
    r4 = ring(db, clock)
    assert await r4.verification_key(old.kid) is None
    await r4.rotate_if_due()  # any key creation attempt purges what has retired
    await r4.rotate_now()
    kids = {row["kid"] for row in await db.fetch("SELECT kid FROM signing_keys")}
    assert old.kid not in kids


async def test_forced_rotation_signs_at_once(db: Database, empty_keys) -> None:
    """rotate_now makes a key that signs immediately, even over a scheduled one."""
    clock = Clock()
    r = ring(db, clock)
    await r.load()
    clock.now += 31 * DAY
    scheduled = await r.rotate_if_due()
    clock.now += timedelta(seconds=1)
    forced = await r.rotate_now()
    assert scheduled is not None and (await r.signing_key()).key.kid == forced.kid
    clock.now += timedelta(hours=2)
    assert (await ring(db, clock).signing_key()).key.kid == forced.kid


async def test_encrypted_keys_need_the_passphrase(db: Database, empty_keys) -> None:
    """With a key-encryption key the private key is stored encrypted and unreadable without it."""
    clock = Clock()
    r = ring(db, clock, "EdDSA", passphrase="a long enough passphrase")
    await r.load()
    stored = (await PgKeyStore(db).published(clock.now))[0]
    assert stored.encrypted and b"ENCRYPTED PRIVATE KEY" in stored.private_pem
    with pytest.raises(KeyUnreadableError):
        await ring(db, clock, "EdDSA").signing_key()
    with pytest.raises(KeyUnreadableError):
        await ring(db, clock, "EdDSA", passphrase="the wrong passphrase!").signing_key()


async def test_key_round_trips(db: Database, empty_keys) -> None:
    """A stored key reads back equal, private PEM and public JWK included."""
    now = datetime.now(UTC).replace(microsecond=0)
    key = generate_signing_key("RS256", now)
    store = PgKeyStore(db)
    assert await store.add_first_key(key, retire_others_at=now + DAY)
    assert await store.published(now) == [key]


async def test_switching_algorithm_back_makes_a_fresh_key(db: Database, empty_keys) -> None:
    """EdDSA -> RS256 -> EdDSA: the second EdDSA ring signs with a new key that is not retiring,
    not with the first one, which the switch to RS256 put on its way out."""
    clock = Clock()
    first = ring(db, clock, "EdDSA")
    await first.load()
    old = (await first.signing_key()).key
    await ring(db, clock, "RS256").load()
    clock.now += timedelta(seconds=1)
    back = ring(db, clock, "EdDSA")
    await back.load()
    signing = (await back.signing_key()).key
    assert signing.kid != old.kid and signing.retires_at is None


async def test_rotation_after_a_compromise_retires_old_keys_at_once(
    db: Database, empty_keys
) -> None:
    """rotate_now(retire_others=True): old keys stop verifying and leave the JWKS immediately."""
    clock = Clock()
    r = ring(db, clock)
    await r.load()
    old = (await r.signing_key()).key
    clock.now += timedelta(seconds=1)
    new = await r.rotate_now(retire_others=True)
    assert await r.verification_key(old.kid) is None
    assert [k.kid for k in await r.published()] == [new.kid]
    assert old.kid not in {row["kid"] for row in await db.fetch("SELECT kid FROM signing_keys")}


async def test_replicas_on_two_algorithms_do_not_take_turns_making_keys(
    db: Database, empty_keys
) -> None:
    """During a rolling algorithm change, periodic checks on either algorithm make no new key."""
    clock = Clock()
    eddsa, es256 = ring(db, clock, "EdDSA"), ring(db, clock, "ES256")
    await eddsa.load()
    await es256.load()
    before = len(await PgKeyStore(db).published(clock.now))
    for _ in range(6):
        clock.now += timedelta(minutes=10)
        assert await eddsa.rotate_if_due() is None
        assert await es256.rotate_if_due() is None
    assert len(await PgKeyStore(db).published(clock.now)) == before == 2
