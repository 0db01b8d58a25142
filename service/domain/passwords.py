"""Password hashing with argon2id, off the event loop and bounded.

argon2-cffi releases the GIL while it hashes, so a thread pool of one worker per core gives real
parallelism without blocking the loop; more workers would only queue inside the kernel while each
holds its `memory_kib` of RAM. Calls past `queue_limit` waiting are refused as UNAVAILABLE rather
than queued without end: under overload a fast "retry later" beats a deadline that expires in line.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from service.config import PASSWORD_MAX_BYTES, Argon2Parameters
from service.domain.models import StoredPassword
from service.errors import AuthError, Reason, invalid_argument

log = logging.getLogger(__name__)
T = TypeVar("T")
# Set while a login admitted by `PasswordHasher.admission` runs (per task, so per call).
_admitted: ContextVar[bool] = ContextVar("hash_admitted", default=False)


def check_password(password: str, field: str = "password") -> None:
    """Reject an empty or overlong password before any hashing: argon2's cost grows with input,
    so a 1 MB password would be a cheap denial of service."""
    if not password:
        raise invalid_argument(f"{field} is required")
    if len(password.encode("utf-8", "surrogatepass")) > PASSWORD_MAX_BYTES:
        raise invalid_argument(f"{field} is longer than {PASSWORD_MAX_BYTES} bytes")


class PasswordHasher:
    def __init__(self, params: Argon2Parameters, workers: int, queue_limit: int) -> None:
        self._argon2 = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            type=argon2.Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._limit = workers + queue_limit
        self._in_flight = 0
        self._reserved = 0
        self._count_lock = threading.Lock()
        self._dummy_hash: str | None = None

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        with self._count_lock:
            # Work of an admitted login has its room reserved: it is never refused.
            if not _admitted.get() and self._in_flight + self._reserved >= self._limit:
                raise AuthError(Reason.UNAVAILABLE, "server overloaded, retry later")
            self._in_flight += 1
        work = self._pool.submit(fn, *args)
        # The slot is freed when the work is done, or dropped unstarted; a hash that has started
        # keeps its slot until it ends, even if its caller walked away.
        work.add_done_callback(self._release)
        # Awaiting the wrapped future (no shield): if the caller is cancelled (deadline, client
        # gone) while its work is still queued, the work is cancelled and never runs, so a burst
        # of abandoned calls does not burn the cores that waiting callers need.
        return await asyncio.wrap_future(work)

    def _release(self, _: object) -> None:
        with self._count_lock:  # runs in a worker thread, or wherever the work was cancelled
            self._in_flight -= 1

    async def hash(self, password: str) -> str:
        return await self._run(self._argon2.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await self._run(self._verify, password_hash, password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except VerifyMismatchError:
            return False
        except (InvalidHashError, VerificationError):
            log.error("stored password hash is unreadable; treating it as a mismatch")
            return False

    async def first_match(
        self, passwords: Sequence[StoredPassword], password: str
    ) -> StoredPassword | None:
        """The first stored password that `password` matches, trying them in the order given."""
        for stored in passwords:
            if await self.verify(stored.hash, password):
                return stored
        return None

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except InvalidHashError:
            return False

    async def prepare(self) -> None:
        """Make the dummy hash now, so that the first unknown user costs no more than later ones."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))

    async def verify_dummy(self, password: str, times: int = 1) -> None:
        """Spend what `times` real verifications cost, with nothing to match, so that a failed
        login costs the same whether the user exists and however many passwords it holds."""
        await self.prepare()
        assert self._dummy_hash is not None
        for _ in range(times):
            await self.verify(self._dummy_hash, password)

    @contextmanager
    def admission(self, verifications: int) -> Iterator[None]:
        """Reserve queue room for one login's `verifications` before the attempt is counted
        against the user, or refuse it (UNAVAILABLE) uncounted: a flood that fills the queue
        can neither get attempts counted without paying for their hashes nor make a right
        password be counted as a failure and then refused."""
        with self._count_lock:
            if self._in_flight + self._reserved + verifications > self._limit:
                raise AuthError(Reason.UNAVAILABLE, "server overloaded, retry later")
            self._reserved += verifications
        token = _admitted.set(True)
        try:
            yield
        finally:
            _admitted.reset(token)
            with self._count_lock:
                self._reserved -= verifications

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
