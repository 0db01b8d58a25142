"""The argon2id hasher: bounded, off the event loop, and honest about mismatches."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.config import Argon2Parameters
from service.domain.passwords import PasswordHasher
from service.errors import AuthError, Reason

SLOW = Argon2Parameters(time_cost=2, memory_kib=32768, parallelism=1)


async def test_hash_and_verify() -> None:
    """A hash verifies its password and no other, and is argon2id."""
    hasher = PasswordHasher(Argon2Parameters(1, 64, 1), workers=1, queue_limit=4)
    try:
        hashed = await hasher.hash("pw")
        assert hashed.startswith("$argon2id$")
        assert await hasher.verify(hashed, "pw")
        assert not await hasher.verify(hashed, "pW")
        assert not await hasher.verify("not a hash", "pw")
    finally:
        hasher.close()


async def test_hashing_does_not_block_the_event_loop() -> None:
    """While slow hashes run, the event loop keeps ticking on time."""
    hasher = PasswordHasher(SLOW, workers=2, queue_limit=8)
    try:
        work = asyncio.gather(*(hasher.hash(f"pw{i}") for i in range(4)))
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
    """Beyond workers + queue_limit calls in flight, the next one is UNAVAILABLE at once."""
    hasher = PasswordHasher(SLOW, workers=1, queue_limit=1)
    try:
        running = [asyncio.ensure_future(hasher.hash("a")), asyncio.ensure_future(hasher.hash("b"))]
        await asyncio.sleep(0)
        with pytest.raises(AuthError) as caught:
            await hasher.hash("c")
        assert caught.value.reason is Reason.UNAVAILABLE
        await asyncio.gather(*running)
        assert await hasher.hash("d")  # the slots came back
    finally:
        hasher.close()


async def test_needs_rehash_when_parameters_change() -> None:
    """A hash made with other parameters needs rehashing; one made with ours does not."""
    ours = PasswordHasher(Argon2Parameters(1, 64, 1), workers=1, queue_limit=1)
    theirs = PasswordHasher(Argon2Parameters(2, 64, 1), workers=1, queue_limit=1)
    try:
        assert not ours.needs_rehash(await ours.hash("x"))
        assert ours.needs_rehash(await theirs.hash("x"))
    finally:
        ours.close()
        theirs.close()


async def test_abandoned_queued_work_never_runs() -> None:
    """Calls cancelled while still queued are dropped unrun, and their slots come back."""
    hasher = PasswordHasher(SLOW, workers=1, queue_limit=16)
    ran: list[str] = []

    def work(name: str) -> str:
        time.sleep(0.05)
        ran.append(name)
        return name

    try:
        first = asyncio.ensure_future(hasher._run(work, "first"))
        await asyncio.sleep(0.01)  # "first" now occupies the only worker
        queued = [asyncio.ensure_future(hasher._run(work, f"queued-{i}")) for i in range(8)]
        await asyncio.sleep(0)
        for call in queued:
            call.cancel()
        assert await first == "first"
        assert await hasher._run(work, "next") == "next"
        assert ran == ["first", "next"]
        assert hasher._in_flight == 0
    finally:
        hasher.close()
