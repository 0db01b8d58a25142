"""The argon2id hasher: one computation per check, bounded, off the event loop, honest about
mismatches, and rehashing what older parameters or salts made."""

from __future__ import annotations

import asyncio
import time

import argon2
import pytest

from service.config import Argon2Parameters
from service.domain import passwords
from service.domain.models import StoredPassword
from service.domain.passwords import PasswordHasher, TooLate, new_salt
from service.errors import AuthError, Reason

CHEAP = Argon2Parameters(1, 64, 1)
SLOW = Argon2Parameters(time_cost=2, memory_kib=32768, parallelism=1)


def _stored(*hashes: str) -> list[StoredPassword]:
    return [StoredPassword(id=i, hash=h) for i, h in enumerate(hashes, 1)]


@pytest.fixture
def computations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts argon2 computations made by the hasher module (either kind)."""
    made: list[int] = []
    for name in ("hash_secret",):
        real = getattr(passwords, name)
        monkeypatch.setattr(passwords, name, lambda *a, _r=real: (made.append(1), _r(*a))[1])
    real_raw = argon2.low_level.hash_secret_raw
    monkeypatch.setattr(
        argon2.low_level, "hash_secret_raw", lambda *a: (made.append(1), real_raw(*a))[1]
    )
    return made


async def test_match_finds_its_password_and_no_other() -> None:
    """A hash made with a salt matches its password and no other; it is argon2id with that salt."""
    hasher = PasswordHasher(CHEAP, workers=1, queue_limit=4)
    try:
        salt = new_salt()
        stored = _stored(await hasher.hash("pw", salt), await hasher.hash("other", salt))
        assert stored[0].hash.startswith("$argon2id$v=19$m=64,t=1,p=1$")
        assert (await hasher.match("pw", salt, stored)).found == stored[0]
        assert (await hasher.match("other", salt, stored)).found == stored[1]
        assert (await hasher.match("pW", salt, stored)).found is None
        assert (await hasher.match("pw", salt, _stored("not a hash"))).found is None
    finally:
        hasher.close()


@pytest.mark.parametrize("size", [0, 1, 20])
async def test_one_computation_checks_a_whole_list(computations: list[int], size: int) -> None:
    """Checking a candidate against 0, 1 or 20 passwords of one salt costs one computation."""
    hasher = PasswordHasher(CHEAP, workers=1, queue_limit=4)
    try:
        salt = new_salt()
        stored = _stored(*[await hasher.hash(f"pw{i}", salt) for i in range(size)])
        computations.clear()
        assert (await hasher.match("wrong", salt, stored)).found is None
        assert len(computations) == 1
        if size:
            computations.clear()
            assert (await hasher.match(f"pw{size - 1}", salt, stored)).found == stored[-1]
            assert len(computations) == 1
    finally:
        hasher.close()


async def test_older_parameters_and_salts_match_and_ask_for_a_rehash() -> None:
    """A hash with other parameters (argon2-cffi's own, random salt) still matches, flagged for
    rehashing; the candidate hash it offers has the current parameters and the user's salt."""
    hasher = PasswordHasher(CHEAP, workers=1, queue_limit=4)
    try:
        salt = new_salt()
        old = argon2.PasswordHasher(time_cost=2, memory_cost=128, parallelism=1).hash("pw")
        match = await hasher.match("pw", salt, _stored(old))
        assert match.found is not None and match.rehash
        assert (await hasher.match("pw", salt, _stored(match.candidate_hash))).found is not None
        current = await hasher.match("pw", salt, _stored(await hasher.hash("pw", salt)))
        assert current.found is not None and not current.rehash
    finally:
        hasher.close()


async def test_compare_needs_no_hash_for_the_same_salt() -> None:
    """`compare` finds a password by digest, and sets apart what only hashing can check."""
    hasher = PasswordHasher(CHEAP, workers=1, queue_limit=4)
    try:
        salt = new_salt()
        mine = await hasher.hash("pw", salt)
        other_salt = await hasher.hash("pw", new_salt())
        found, others = hasher.compare(mine, _stored(mine, other_salt))
        assert found is not None and found.id == 1
        assert [p.id for p in others] == [2]
    finally:
        hasher.close()


async def test_hashing_does_not_block_the_event_loop() -> None:
    """While slow hashes run, the event loop keeps ticking on time."""
    hasher = PasswordHasher(SLOW, workers=2, queue_limit=8)
    try:
        work = asyncio.gather(*(hasher.hash(f"pw{i}", new_salt()) for i in range(4)))
        worst = 0.0
        while not work.done():
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            worst = max(worst, time.perf_counter() - start)
        await work
        assert worst < 0.05
    finally:
        hasher.close()


async def test_excess_work_is_refused_as_unavailable() -> None:
    """Beyond workers + queue_limit jobs in flight, the next one is UNAVAILABLE at once."""
    hasher = PasswordHasher(SLOW, workers=1, queue_limit=1)
    salt = new_salt()
    try:
        running = [asyncio.ensure_future(hasher.hash(p, salt)) for p in ("a", "b")]
        await asyncio.sleep(0)
        with pytest.raises(AuthError) as caught:
            await hasher.hash("c", salt)
        assert caught.value.reason is Reason.UNAVAILABLE
        await asyncio.gather(*running)
        assert await hasher.hash("d", salt)  # the slots came back
    finally:
        hasher.close()


async def test_abandoned_queued_work_never_runs(computations: list[int]) -> None:
    """Checks cancelled while still queued are dropped unrun, and their slots come back; a
    started one runs to its end."""
    hasher = PasswordHasher(SLOW, workers=1, queue_limit=16)
    salt = new_salt()
    try:
        first = asyncio.ensure_future(hasher.hash("first", salt))
        await asyncio.sleep(0.01)  # "first" now occupies the only worker
        queued = [asyncio.ensure_future(hasher.hash(f"queued-{i}", salt)) for i in range(8)]
        await asyncio.sleep(0)
        for call in queued:
            call.cancel()
        assert await first
        assert await hasher.hash("next", salt)
        assert len(computations) == 2
        assert hasher.in_flight == 0
    finally:
        hasher.close()


async def test_a_job_that_cannot_end_before_its_deadline_never_starts(
    computations: list[int],
) -> None:
    """Once the hasher knows how long a job takes, a queued job whose deadline would pass before
    it could end is dropped unrun (TooLate, UNAVAILABLE); one with time enough runs."""
    hasher = PasswordHasher(SLOW, workers=1, queue_limit=8)
    salt = new_salt()
    try:
        started = time.monotonic()
        await hasher.hash("measure", salt)
        took = time.monotonic() - started
        computations.clear()
        first = asyncio.ensure_future(hasher.hash("first", salt))
        await asyncio.sleep(0)
        late = hasher.match("late", salt, (), deadline=time.monotonic() + took * 1.2)
        in_time = hasher.match("in time", salt, (), deadline=time.monotonic() + took * 20)
        with pytest.raises(TooLate) as caught:
            await late
        assert caught.value.reason is Reason.UNAVAILABLE
        assert (await in_time).candidate_hash
        await first
        assert len(computations) == 2
        assert hasher.in_flight == 0
    finally:
        hasher.close()
