"""Brute-force defence: bound what guessers get checked, never refuse a right password.

What is counted: a failure is an attempt whose hash proved it wrong, nothing else. Nothing is
counted before the hash, so a right password is never a failure, and an attempt dropped before
its hash started (deadline, client gone, queue full) counts for nothing.

Who is counted: a name's failures are counted per *source* (client address, or mTLS identity).
A source that has logged in to the name before keeps its own count; every other source shares
the name's "strangers" count. So an attacker hammering `alice` delays strangers, never the
sources `alice` already logs in from (OWASP's device cookies, keyed by source: Keycloak#46164).
Each source also has a count across every name, so one source spraying a password over many
names is delayed too (not for names it has logged in to before).

How it bounds: the first `allowance` consecutive failures of a count cost nothing (a typo, then
the right password, gets in at once); after the n-th (n > allowance) the next attempt waits
`min(base * 2^(n - allowance - 1), max)` seconds, refused TOO_MANY_ATTEMPTS until then. Every
`lockout_threshold`-th consecutive failure (0: never) also locks the count for
`lockout_duration`: attempts during a lock are admitted once per delay, not counted, and a right
password is told ACCOUNT_LOCKED. The database's clock decides, so replicas agree.

Attempts in parallel: within one replica, a count lets only as many attempts be checked at once
as it has failures left before a delay (at least one); the others *wait* for their turn (within
their deadline), they are not refused (Keycloak#48272). Fifty parallel guesses at one name thus
reach the hash about `allowance + 1` times, and a few more across replicas; thirty-two right
passwords all get in.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from service.domain.models import FailureCount
from service.domain.ports import LoginThrottleStore
from service.errors import AuthError, Reason

TOO_MANY_ATTEMPTS_MESSAGE = "too many failed login attempts, retry later"

# 2^62 * any base above zero is beyond every sensible maximum: the schedule stops there.
_MAX_DOUBLINGS = 62
# Counts are forgotten once their delay and lock have been over this long.
STALE_AFTER_SECONDS = 86400.0
# A source that has not logged in to a name for this long is a stranger to it again.
KNOWN_SOURCE_SECONDS = 90 * 86400.0
# Lanes whose delays ended are swept when this many exist.
SWEEP_AT = 10_000
# The purge deletes stale rows in statements of at most this many, so none holds locks for long.
PURGE_BATCH = 1000


@dataclass(frozen=True)
class ThrottlePolicy:
    """Seconds throughout; `delay_base` 0 turns the delays off, `lockout_threshold` 0 the lock.
    `allowance`: failures of a name from a source before the first delay;
    `source_allowance`: failures of a source across names before its first delay."""

    allowance: int = 3
    source_allowance: int = 10
    delay_base: float = 1.0
    delay_max: float = 60.0
    lockout_threshold: int = 0
    lockout_duration: float = 1800.0

    def delay_after(self, failures: int, allowance: int) -> float:
        """Seconds before the next attempt after `failures` consecutive failures."""
        over = failures - allowance
        if over <= 0 or self.delay_base <= 0:
            return 0.0
        return min(self.delay_base * 2.0 ** min(over - 1, _MAX_DOUBLINGS), self.delay_max)

    def schedule(self, allowance: int) -> list[float]:
        """`delay_after(1), delay_after(2), ...` up to the first that reaches the maximum (or the
        first after the allowance when delays are off); more failures than the list is long
        wait as long as its last entry. The store indexes this list, so the delay formula lives
        here only. (The lock's cadence, every `lockout_threshold`-th counted failure, is applied
        by the store's upsert with the threshold given here: deciding it in the same statement
        as its record keeps replicas from racing past it.)"""
        delays = [self.delay_after(n, allowance) for n in range(1, allowance + 2)]
        while 0 < delays[-1] < self.delay_max and len(delays) <= allowance + _MAX_DOUBLINGS:
            delays.append(self.delay_after(len(delays) + 1, allowance))
        return delays


def too_many_attempts(retry_after: float) -> AuthError:
    return AuthError(Reason.TOO_MANY_ATTEMPTS, TOO_MANY_ATTEMPTS_MESSAGE, retry_after=retry_after)


class _Lane:
    """One count's turn-taking on this replica: how many of its attempts are being checked, and
    what the latest read or record said of its failures."""

    def __init__(self, allowance: int) -> None:
        self.allowance = allowance
        self.in_flight = 0
        self.failures = 0
        self.not_before = 0.0  # time.monotonic()
        self.waiters: list[asyncio.Future[None]] = []

    def observe(self, count: FailureCount, *, recorded: bool) -> None:
        """Take a count from the database. A read may be older than what this replica recorded
        since (reads and records of a burst interleave), so a read can only add; a record is
        the latest word."""
        not_before = time.monotonic() + count.wait
        if recorded:
            self.failures, self.not_before = count.failures, not_before
        else:
            self.failures = max(self.failures, count.failures)
            self.not_before = max(self.not_before, not_before)

    @property
    def capacity(self) -> int:
        return max(1, self.allowance - self.failures)

    async def enter(self) -> None:
        """Wait for a turn; TOO_MANY_ATTEMPTS once the count is delayed."""
        while True:
            wait = self.not_before - time.monotonic()
            if wait > 0:
                raise too_many_attempts(wait)
            if self.in_flight < self.capacity:
                self.in_flight += 1
                return
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)

    def leave(self) -> None:
        self.in_flight -= 1
        # Every waiter looks again: the count may now be delayed (all refused) or have room.
        # They stay listed until they have looked (`enter` removes them), so the lane is not
        # idle, and not dropped, while they are on their way.
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def idle(self) -> bool:
        """Nothing in flight, nobody waiting, and no delay running: nothing a read could not
        rebuild."""
        return self.in_flight == 0 and not self.waiters and self.not_before <= time.monotonic()


class Lanes:
    """The lanes of one kind of count, created on demand and dropped when idle (the database
    keeps the counts; a lane only orders the attempts in flight)."""

    def __init__(self, allowance: int) -> None:
        self._allowance = allowance
        self._lanes: dict[tuple[str, str], _Lane] = {}

    def get(self, key: tuple[str, str]) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None or lane.idle:
            if len(self._lanes) >= SWEEP_AT:
                self._sweep()
            lane = self._lanes[key] = _Lane(self._allowance)
        return lane

    def _sweep(self) -> None:
        """Drop lanes whose delays ended (kept that long so that reads older than their last
        failure cannot reopen them)."""
        for key in [key for key, lane in self._lanes.items() if lane.idle]:
            del self._lanes[key]

    def release(self, key: tuple[str, str], lane: _Lane) -> None:
        lane.leave()
        self.discard_if_idle(key, lane)

    def discard_if_idle(self, key: tuple[str, str], lane: _Lane) -> None:
        if lane.idle and self._lanes.get(key) is lane:
            del self._lanes[key]

    def __len__(self) -> int:
        return len(self._lanes)


@dataclass
class Turn:
    """An attempt's place in its lanes, from `LoginThrottle.turn` until `LoginThrottle.done`."""

    name_key: tuple[str, str]
    # The source's lane across names, or None when the source is known to the name (exempt).
    source_key: tuple[str, str] | None
    # The name's counter this attempt counts on: "" (strangers) or the source.
    counter: str
    entered: list[tuple[Lanes, tuple[str, str], _Lane]]


class LoginThrottle:
    def __init__(self, policy: ThrottlePolicy, store: LoginThrottleStore) -> None:
        self.policy = policy
        self._store = store
        self.name_schedule = policy.schedule(policy.allowance)
        self.source_schedule = policy.schedule(policy.source_allowance)
        self._names = Lanes(policy.allowance)
        self._sources = Lanes(policy.source_allowance)

    async def turn(
        self,
        username_key: str,
        source: str,
        *,
        source_known: bool,
        name_count: FailureCount,
        source_count: FailureCount,
    ) -> Turn:
        """Wait for this attempt's turn to be checked, or raise TOO_MANY_ATTEMPTS (nothing
        counted) while its counts are delayed. Pair with `done` once the check has ended."""
        counter = source if source_known else ""
        turn = Turn((username_key, counter), None if source_known else ("", source), counter, [])
        try:
            # Source before name, always: no two attempts can wait on each other in a cycle.
            if turn.source_key is not None:
                await self._enter(self._sources, turn, turn.source_key, source_count)
            await self._enter(self._names, turn, turn.name_key, name_count)
        except BaseException:
            self.done(turn)
            raise
        return turn

    async def _enter(
        self, lanes: Lanes, turn: Turn, key: tuple[str, str], count: FailureCount
    ) -> None:
        lane = lanes.get(key)
        lane.observe(count, recorded=False)
        try:
            await lane.enter()
        except BaseException:
            lanes.discard_if_idle(key, lane)
            raise
        turn.entered.append((lanes, key, lane))

    def recorded(self, turn: Turn, name: FailureCount, source: FailureCount | None) -> None:
        """The check ended and its outcome is recorded: the lanes learn the new counts."""
        for _, key, lane in turn.entered:
            count = name if key == turn.name_key else source
            if count is not None:
                lane.observe(count, recorded=True)

    def done(self, turn: Turn) -> None:
        """Leave the lanes (wakes the attempts waiting behind this one)."""
        for lanes, key, lane in turn.entered:
            lanes.release(key, lane)
        turn.entered.clear()

    async def clear(self, username_key: str) -> None:
        """Forget every count of the name and lift its locks (an administrator vouches)."""
        await self._store.reset(username_key)

    async def purge_stale(self) -> int:
        """Delete counts whose delay and lock ended over a day ago (the names and sources of a
        spray would otherwise pile up) and sources unseen for 90 days, a batch at a time."""
        total = 0
        for purge, seconds in (
            (self._store.purge_name_counts, STALE_AFTER_SECONDS),
            (self._store.purge_source_counts, STALE_AFTER_SECONDS),
            (self._store.purge_known_sources, KNOWN_SOURCE_SECONDS),
        ):
            while True:
                purged = await purge(seconds, PURGE_BATCH)
                total += purged
                if purged < PURGE_BATCH:
                    break
        return total
