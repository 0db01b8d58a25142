"""Brute-force defence: a progressively longer delay after each failed login, and an optional
lockout, per normalised username (known or not, so neither reveals which names exist).

The store admits an attempt with one atomic statement *before* any hashing, and counts it as a
failure then, pessimistically; a success resets the count. So a burst of parallel guesses on one
name, on one replica or many, gets as many hash checks as the delay allows (one per delay), and a
call that is cancelled or runs out of deadline mid-hash is still counted. The database's clock
decides, so replicas agree.

The delay after the n-th consecutive failure is `min(base * 2^(n-1), max)` seconds. Every
`lockout_threshold`-th consecutive failure also locks the name for `lockout_duration` seconds:
attempts during a lock are still admitted once per delay (so the lock is no faster oracle than
the delay), they are not counted, and a right password is told ACCOUNT_LOCKED rather than given a
token; once the lock is over, counting goes on where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from service.domain.models import LoginAttempt
from service.domain.ports import LoginThrottleStore
from service.errors import AuthError, Reason

TOO_MANY_ATTEMPTS_MESSAGE = "too many failed login attempts, retry later"

# 2^62 * any base above zero is beyond every sensible maximum: the schedule stops there.
_MAX_DOUBLINGS = 62
# A name's failures are forgotten once its delay and lock have been over this long.
STALE_AFTER = timedelta(days=1)
# The purge deletes stale rows in statements of at most this many, so none holds locks for long.
PURGE_BATCH = 1000


@dataclass(frozen=True)
class ThrottlePolicy:
    """Seconds throughout; `delay_base` 0 turns the delay off, `lockout_threshold` 0 the lock."""

    delay_base: float = 1.0
    delay_max: float = 60.0
    lockout_threshold: int = 0
    lockout_duration: float = 1800.0

    @property
    def enabled(self) -> bool:
        return self.delay_base > 0 or self.lockout_threshold > 0

    def delay_after(self, failures: int) -> float:
        """Seconds before the next attempt is admitted after `failures` consecutive failures."""
        if failures <= 0 or self.delay_base <= 0:
            return 0.0
        return min(self.delay_base * 2.0 ** min(failures - 1, _MAX_DOUBLINGS), self.delay_max)

    def schedule(self) -> list[float]:
        """`delay_after(1), delay_after(2), ...` up to the first that reaches the maximum; more
        failures than the list is long wait as long as its last entry. The store indexes this
        list, so the formula lives here only."""
        delays = [self.delay_after(1)]
        while delays[-1] < self.delay_max and len(delays) <= _MAX_DOUBLINGS and delays[-1] > 0:
            delays.append(self.delay_after(len(delays) + 1))
        return delays


def too_many_attempts(retry_after: float) -> AuthError:
    return AuthError(Reason.TOO_MANY_ATTEMPTS, TOO_MANY_ATTEMPTS_MESSAGE, retry_after=retry_after)


class LoginThrottle:
    def __init__(self, store: LoginThrottleStore, policy: ThrottlePolicy) -> None:
        self._store = store
        self._policy = policy
        self._schedule = policy.schedule()

    async def admit(self, username_key: str) -> LoginAttempt:
        """Admit one attempt on `username_key`, already counted as a failure (unless the name is
        locked), or raise TOO_MANY_ATTEMPTS with the seconds left to wait. Call before hashing."""
        if not self._policy.enabled:
            return LoginAttempt(admitted=True, failures=0, retry_after=0.0)
        attempt = await self._store.reserve(
            username_key,
            self._schedule,
            self._policy.lockout_threshold,
            self._policy.lockout_duration,
        )
        if not attempt.admitted:
            raise too_many_attempts(attempt.retry_after)
        return attempt

    async def succeeded(self, username_key: str) -> None:
        """The attempt proved the password on a usable account: forget the name's failures."""
        await self.clear(username_key)

    async def clear(self, username_key: str) -> None:
        """Forget the name's failures and lift its lock (a success, or an administrator)."""
        if self._policy.enabled:
            await self._store.reset(username_key)

    async def purge_stale(self) -> int:
        """Delete the rows of names whose delay and lock ended over STALE_AFTER ago (usernames
        from a password spray would otherwise pile up), a bounded batch at a time."""
        total = 0
        while True:
            purged = await self._store.purge(STALE_AFTER.total_seconds(), PURGE_BATCH)
            total += purged
            if purged < PURGE_BATCH:
                return total
