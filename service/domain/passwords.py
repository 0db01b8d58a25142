"""Password hashing with argon2id, off the event loop and bounded: one computation per check.

Every hash of one user's passwords is made with that user's own salt (`new_salt`, kept on the
user). So checking a candidate against the whole list costs one argon2id computation: the
candidate is hashed once with the salt and its digest compared, in constant time, with each
stored digest (argon2-cffi's `verify` would hash once per stored password, since it cannot know
the salts are shared). A failed login therefore costs the same however many passwords the user
holds, and an unknown user costs the same one computation against a dummy salt. The price: one
who steals the database can test a guess against all of one user's passwords at once, as if
the list were one password; the list is bounded (`max_passwords`) and each user's salt is its own.

A hash made with other parameters or another salt (before a change of parameters, or before
salts were shared) is checked the old way, one computation for each such group, and rehashed
with the user's salt when it matches.

argon2-cffi releases the GIL while it hashes, so a thread pool of one worker per core gives real
parallelism without blocking the loop. Jobs past `queue_limit` waiting are refused UNAVAILABLE
rather than queued without end, and a job whose caller gave up before it started never runs. Nor
does a job whose caller's deadline would pass before it could end (by the recent run time of a
job): under overload the workers spend themselves on callers who can still be answered, instead
of finishing, first in first out, checks nobody waits for any more.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import argon2
from argon2.exceptions import VerificationError, VerifyMismatchError
from argon2.low_level import Type, hash_secret

from service.domain.models import StoredPassword
from service.errors import AuthError, Reason, invalid_argument

log = logging.getLogger(__name__)

# argon2's cost grows with its input: longer passwords are refused before any hashing.
PASSWORD_MAX_BYTES = 4096
SALT_BYTES = 16
HASH_BYTES = 32
# Weight of the latest job in the running estimate of a job's duration.
_DURATION_WEIGHT = 0.2


@dataclass(frozen=True)
class Argon2Parameters:
    """argon2id cost: `time_cost` passes over `memory_kib` KiB with `parallelism` lanes."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4


class TooLate(AuthError):
    """The job did not start: its caller's deadline would pass before it could end."""

    def __init__(self) -> None:
        super().__init__(Reason.UNAVAILABLE, "server overloaded, retry later")


def new_salt() -> bytes:
    """A fresh random salt for a new user."""
    return secrets.token_bytes(SALT_BYTES)


def check_password(password: str, field: str = "password") -> None:
    """Reject an empty or overlong password before any hashing: argon2's cost grows with input,
    so a 1 MB password would be a cheap denial of service."""
    if not password:
        raise invalid_argument(f"{field} is required")
    if len(password.encode("utf-8", "surrogatepass")) > PASSWORD_MAX_BYTES:
        raise invalid_argument(f"{field} is longer than {PASSWORD_MAX_BYTES} bytes")


@dataclass(frozen=True)
class _Encoded:
    """The parts of a PHC-encoded argon2id hash (`$argon2id$v=19$m=..,t=..,p=..$salt$digest`)."""

    params: tuple[int, int, int]  # (memory_kib, time_cost, parallelism)
    salt: bytes
    digest: bytes


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _parse(encoded: str) -> _Encoded | None:
    """Split an argon2id v1.3 hash; None for anything else (argon2-cffi's `verify` reads it)."""
    # argon2-cffi parses the parameters (`extract_parameters`) but not the salt or the digest,
    # and comparing digests is the point here: so the PHC string is split by hand.
    parts = encoded.split("$")
    if len(parts) != 6 or parts[1] != "argon2id" or parts[2] != "v=19":
        return None
    try:
        values = dict(item.split("=", 1) for item in parts[3].split(","))
        params = (int(values["m"]), int(values["t"]), int(values["p"]))
        return _Encoded(params, _b64(parts[4]), _b64(parts[5]))
    except (ValueError, KeyError, binascii.Error):
        return None


@dataclass(frozen=True)
class Match:
    """The outcome of checking a candidate against a list."""

    # The stored password the candidate is, or None.
    found: StoredPassword | None
    # The candidate hashed with the list's salt at the current parameters: what to store for it
    # (as a new password, or in place of `found`'s hash when `rehash`).
    candidate_hash: str = field(repr=False)
    # `found` was hashed with other parameters or another salt.
    rehash: bool = False


class HashJob:
    """A check queued on the pool. `cancel_if_queued` takes it back if no worker has started it
    (then awaiting it raises CancelledError); once started, it runs to the end."""

    def __init__(self, work: Future[Match]) -> None:
        self._work = work

    def cancel_if_queued(self) -> bool:
        return self._work.cancel()

    async def result(self) -> Match:
        return await asyncio.wrap_future(self._work)


class PasswordHasher:
    def __init__(
        self,
        params: Argon2Parameters,
        workers: int,
        queue_limit: int,
        on_job_seconds: Callable[[float], None] | None = None,
        on_job: Callable[[Future[Match], Argon2Parameters, int], None] | None = None,
    ) -> None:
        """`on_job_seconds` (a metric's `observe`) is told each job's run time, in a worker.
        `on_job` (tracing's span, when on) is given each job as it is queued, with the
        parameters and how many stored passwords it checks: never the password."""
        self._params = params
        self._on_job_seconds = on_job_seconds
        self._on_job = on_job
        self._running = 0
        self.workers = workers
        self._key = (params.memory_kib, params.time_cost, params.parallelism)
        # For hashes that are not argon2id v1.3 with a readable salt (none that authsvc made).
        self._argon2 = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            type=argon2.Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._limit = workers + queue_limit
        self._in_flight = 0
        self._count_lock = threading.Lock()
        # Seconds a job takes in a worker, recently (None until one has run).
        self._job_seconds: float | None = None
        # Unknown users are checked against this salt: the same one computation as anyone.
        self.dummy_salt = new_salt()

    def start(
        self,
        password: str,
        salt: bytes,
        stored: Sequence[StoredPassword],
        deadline: float | None = None,
    ) -> HashJob:
        """Queue the check of `password` against `stored` (made with `salt`), or refuse it
        UNAVAILABLE when the queue is full, before anything was checked. With a `deadline`
        (`time.monotonic()`), the job fails TooLate, unchecked, if it cannot end before it."""
        with self._count_lock:
            if self._in_flight >= self._limit:
                raise AuthError(Reason.UNAVAILABLE, "server overloaded, retry later")
            self._in_flight += 1
        work = self._pool.submit(self._timed, password, salt, tuple(stored), deadline)
        # The slot is freed when the job ends, or is taken back unstarted.
        work.add_done_callback(self._release)
        if self._on_job is not None:
            self._on_job(work, self._params, len(stored))
        return HashJob(work)

    async def match(
        self,
        password: str,
        salt: bytes,
        stored: Sequence[StoredPassword],
        deadline: float | None = None,
    ) -> Match:
        """Check `password` against `stored`; if the caller is cancelled (deadline, client gone)
        while the job is still queued, the job never runs."""
        job = self.start(password, salt, stored, deadline)
        try:
            return await job.result()
        except asyncio.CancelledError:
            job.cancel_if_queued()
            raise

    async def hash(self, password: str, salt: bytes) -> str:
        """`password` hashed with `salt` at the current parameters."""
        return (await self.match(password, salt, ())).candidate_hash

    def compare(
        self, candidate_hash: str, stored: Sequence[StoredPassword]
    ) -> tuple[StoredPassword | None, list[StoredPassword]]:
        """Without hashing: the stored password whose digest equals `candidate_hash`'s (same
        parameters and salt), and the stored passwords that only hashing can check."""
        candidate = _parse(candidate_hash)
        assert candidate is not None
        found, others = None, []
        for entry in stored:
            parsed = _parse(entry.hash)
            if parsed is None or (parsed.params, parsed.salt) != (candidate.params, candidate.salt):
                others.append(entry)
            elif hmac.compare_digest(parsed.digest, candidate.digest) and found is None:
                found = entry
        return found, others

    def _release(self, _: object) -> None:
        with self._count_lock:  # runs in a worker thread, or wherever the job was cancelled
            self._in_flight -= 1

    def _timed(
        self,
        password: str,
        salt: bytes,
        stored: tuple[StoredPassword, ...],
        deadline: float | None,
    ) -> Match:
        """In a worker: the job, unless it would end after the deadline; its duration noted."""
        started = time.monotonic()
        expected = self._job_seconds
        if deadline is not None and expected is not None and started + expected > deadline:
            raise TooLate()
        with self._count_lock:
            self._running += 1
        try:
            match = self._match(password, salt, stored)
        finally:
            took = time.monotonic() - started
            with self._count_lock:
                self._running -= 1
        if self._on_job_seconds is not None:
            self._on_job_seconds(took)
        with self._count_lock:
            previous = self._job_seconds
            self._job_seconds = (
                took if previous is None else previous + _DURATION_WEIGHT * (took - previous)
            )
        return match

    def _match(self, password: str, salt: bytes, stored: tuple[StoredPassword, ...]) -> Match:
        """In a worker: one computation for the current group, one per older group."""
        secret = password.encode("utf-8", "surrogatepass")
        candidate = hash_secret(
            secret,
            salt,
            self._params.time_cost,
            self._params.memory_kib,
            self._params.parallelism,
            HASH_BYTES,
            Type.ID,
        ).decode("ascii")
        current = _parse(candidate)
        assert current is not None
        older: dict[tuple[tuple[int, int, int], bytes], bytes] = {}
        found: StoredPassword | None = None
        rehash = False
        # Every stored digest is compared (no early exit): the time taken does not depend on
        # which password matched.
        for entry in stored:
            parsed = _parse(entry.hash)
            if parsed is None:
                same = self._verify_other(entry.hash, password)
                group_is_current = False
            elif (parsed.params, parsed.salt) == (self._key, salt):
                same = hmac.compare_digest(current.digest, parsed.digest)
                group_is_current = True
            else:
                group = (parsed.params, parsed.salt)
                if group not in older:
                    older[group] = self._digest(secret, parsed)
                same = hmac.compare_digest(older[group], parsed.digest)
                group_is_current = False
            if same and found is None:
                found, rehash = entry, not group_is_current
        return Match(found=found, candidate_hash=candidate, rehash=rehash)

    @staticmethod
    def _digest(secret: bytes, parsed: _Encoded) -> bytes:
        memory_kib, time_cost, parallelism = parsed.params
        return argon2.low_level.hash_secret_raw(
            secret, parsed.salt, time_cost, memory_kib, parallelism, len(parsed.digest), Type.ID
        )

    def _verify_other(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except VerifyMismatchError:
            return False
        except (VerificationError, argon2.exceptions.InvalidHashError):
            log.error("stored password hash is unreadable; treating it as a mismatch")
            return False

    @property
    def in_flight(self) -> int:
        """Jobs queued or running."""
        return self._in_flight

    @property
    def running(self) -> int:
        """Jobs a worker is computing now."""
        return self._running

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
