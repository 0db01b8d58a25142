"""The users store contract, against PostgreSQL."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from service.store.db import Database
from service.store.users import PgUserStore


def name() -> str:
    return f"store-{secrets.token_hex(4)}"


async def test_create_and_get(db: Database) -> None:
    """A created user is found by its key with the documented defaults."""
    store = PgUserStore(db)
    username = name()
    user = await store.create(username, username.casefold(), b"salt", "hash")
    found = await store.get(username.casefold())
    assert found == user
    assert (found.locked, found.expires_at, found.credential_version) == (False, None, 1)


async def test_duplicate_key_is_reported_as_none(db: Database) -> None:
    """Two users cannot share a username key: the second create reports None, changing nothing."""
    store = PgUserStore(db)
    username = name()
    first = await store.create(username, username, b"salt", "hash")
    assert await store.create(username.upper(), username, b"salt", "hash") is None
    assert [u.id for u in await store.list() if u.username.casefold() == username] == [first.id]


async def test_updates_report_whether_a_user_matched(db: Database) -> None:
    """lock, expiry and delete return False for an unknown key and True for a known one."""
    store = PgUserStore(db)
    username = name()
    await store.create(username, username, b"salt", "hash")
    assert not await store.set_locked("nobody", True)
    assert await store.set_locked(username, True)
    moment = datetime(2031, 5, 6, tzinfo=UTC)
    assert await store.set_expiry(username, moment)
    found = await store.get(username)
    assert found is not None and found.locked and found.expires_at == moment
    assert await store.delete(username)
    assert not await store.delete(username)
    assert await store.get(username) is None


async def test_delete_cascades_to_passwords(db: Database) -> None:
    """Deleting a user deletes their passwords."""
    store = PgUserStore(db)
    username = name()
    user = await store.create(username, username, b"salt", "hash")
    await store.delete(username)
    assert await db.fetch("SELECT 1 FROM passwords WHERE user_id = $1", user.id) == []
