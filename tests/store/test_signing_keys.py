"""The signing key store: one first key, however many replicas race to make it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from service.domain.signing_keys import KeyRing, generate_signing_key
from service.store.signing_keys import PgKeyStore


async def test_racing_replicas_agree_on_one_key(db) -> None:
    """Eight key rings loading at once on an empty table end up with the same single key."""
    await db.execute("DELETE FROM signing_keys WHERE algorithm = 'ES256'")
    rings = [KeyRing(PgKeyStore(db), "ES256", lambda: datetime.now(UTC)) for _ in range(8)]
    await asyncio.gather(*(ring.load() for ring in rings))
    kids = {(await ring.signing_key()).key.kid for ring in rings}
    assert len(kids) == 1
    rows = await db.fetch("SELECT kid FROM signing_keys WHERE algorithm = 'ES256'")
    assert [row["kid"] for row in rows] == list(kids)


async def test_key_round_trips(db) -> None:
    """A stored key reads back equal, private PEM and public JWK included."""
    key = generate_signing_key("RS256", datetime.now(UTC).replace(microsecond=0))
    await db.execute("DELETE FROM signing_keys WHERE algorithm = 'RS256'")
    stored = await PgKeyStore(db).add_if_none(key)
    assert stored == key
    assert await PgKeyStore(db).newest("RS256") == key
