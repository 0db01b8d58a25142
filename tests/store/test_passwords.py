"""The password-list store contract, against PostgreSQL: the one store module that reads hashes
for changes; it reports facts (the rows, no such user) and decides nothing."""

from __future__ import annotations

import secrets
import uuid

import pytest

from service.domain.models import User
from service.store.db import Database
from service.store.passwords import PgPasswordListStore
from service.store.users import PgUserStore


async def new_user(db: Database, password_hash: str = "hash-0") -> User:
    name = f"pw-store-{secrets.token_hex(4)}"
    user = await PgUserStore(db).create(name, name, b"salt", password_hash)
    assert user is not None
    return user


async def test_a_users_passwords_come_oldest_first(db: Database) -> None:
    """passwords() lists the user's hashes in the order they were added, and no one else's."""
    store = PgPasswordListStore(db)
    user, other = await new_user(db), await new_user(db, "other")
    async with store.locked(user.id) as locked:
        assert locked is not None
        await locked.add("hash-1")
        await locked.add("hash-2")
    assert [p.hash for p in await store.passwords(user.id)] == ["hash-0", "hash-1", "hash-2"]
    assert [p.hash for p in await store.passwords(other.id)] == ["other"]


async def test_locking_an_unknown_user_reports_none(db: Database) -> None:
    """locked() yields None for a user that does not exist (or no longer does): the store
    reports the fact, the domain decides what it means."""
    store = PgPasswordListStore(db)
    async with store.locked(uuid.uuid4()) as locked:
        assert locked is None
    user = await new_user(db)
    await PgUserStore(db).delete(user.username)
    async with store.locked(user.id) as locked:
        assert locked is None


async def test_the_lock_sees_what_it_wrote(db: Database) -> None:
    """Inside the lock, passwords() reads the transaction's own changes."""
    store = PgPasswordListStore(db)
    user = await new_user(db)
    async with store.locked(user.id) as locked:
        assert locked is not None
        await locked.add("hash-1")
        assert [p.hash for p in await locked.passwords()] == ["hash-0", "hash-1"]


async def test_remove_bumps_the_credential_version(db: Database) -> None:
    """Removing passwords revokes older tokens: the user's credential version goes up by one."""
    store, users = PgPasswordListStore(db), PgUserStore(db)
    user = await new_user(db)
    async with store.locked(user.id) as locked:
        assert locked is not None
        await locked.add("hash-1")
        first = (await locked.passwords())[0]
        await locked.remove([first.id], 0)
    after = await users.get_by_id(user.id)
    assert after is not None and after.credential_version == user.credential_version + 1
    assert [p.hash for p in await store.passwords(user.id)] == ["hash-1"]


async def test_history_keeps_the_newest_retired_passwords(db: Database) -> None:
    """Removed passwords go to the history, which keeps only the newest `keep_history`, newest
    first; with 0 nothing is kept."""
    store = PgPasswordListStore(db)
    user = await new_user(db)
    for n in range(1, 4):
        async with store.locked(user.id) as locked:
            assert locked is not None
            current = await locked.passwords()
            await locked.remove([p.id for p in current], 2)
            await locked.add(f"hash-{n}")
    assert [p.hash for p in await store.history(user.id, 10)] == ["hash-2", "hash-1"]
    assert [p.hash for p in await store.history(user.id, 1)] == ["hash-2"]
    async with store.locked(user.id) as locked:
        assert locked is not None
        await locked.remove([p.id for p in await locked.passwords()], 0)
    assert await store.history(user.id, 10) == []


async def test_a_failed_block_changes_nothing(db: Database) -> None:
    """An error inside the lock rolls the whole change back."""
    store = PgPasswordListStore(db)
    user = await new_user(db)
    with pytest.raises(RuntimeError):
        async with store.locked(user.id) as locked:
            assert locked is not None
            await locked.add("hash-1")
            raise RuntimeError("the domain refused")
    assert [p.hash for p in await store.passwords(user.id)] == ["hash-0"]
