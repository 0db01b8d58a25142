"""Authentication: a username, a password and the caller's source in, a Principal out, or one of
a few reasons.

The order is the security property:
1. One read (`find_login`) brings the user, its passwords and every failure count that applies,
   for unknown names too: no second round trip on the usual login.
2. The throttle (`throttle.py`) refuses the attempt, uncounted, while a count that applies is
   delayed, or makes it wait for its turn; a right password is never refused for others'
   parallel attempts.
3. One argon2id computation checks the candidate against the whole list (`passwords.py`), for an
   unknown user against a dummy salt: the time taken tells neither whether the name exists nor
   how many passwords it holds. From the moment the hash starts, the check runs to its end and
   its outcome is recorded even if the caller goes away (deadline, client gone): a right
   password is never a failure, a wrong one is always counted. Queued but not started when the
   caller goes, it never runs and counts for nothing.
4. Account states (locked, expired) are told only to a caller who has just proven the password;
   to anyone else every failure is the same INVALID_CREDENTIALS. A right password on a locked
   or expired account resets nothing, so it buys an attacker no faster guesses.
5. A success writes only what changed: counts that had failures, a source not yet known (or
   known for long), a password not used lately or needing a rehash. The usual login writes
   nothing.

Every refused login is audited (`audit.py`): a wrong password by the very statement that counts
it, other refusals in the background; the login path never waits for, nor fails on, the trail.

A password older than the maximum age still authenticates: `Principal.password_expired` lets
the caller decide; Authorize refuses it, the password RPCs accept it so the user can replace it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from service import request_context
from service.domain.audit import Auditor
from service.domain.models import (
    FailureCount,
    FailureRecord,
    LoginView,
    Principal,
    SuccessRecord,
)
from service.domain.passwords import HashJob, Match, PasswordHasher, check_password
from service.domain.ports import CredentialStore
from service.domain.throttle import KNOWN_SOURCE_SECONDS, LoginThrottle, Turn
from service.domain.usernames import check_username, username_key
from service.errors import AuthError, Reason, invalid_credentials

# Last-used times and known sources are refreshed at most this often: a login that changes
# nothing else writes nothing.
LAST_USED_GRANULARITY = timedelta(hours=1)
KNOWN_SOURCE_REFRESH = timedelta(days=1)
# A source that has not logged in to a user for this long is a stranger to it again.
KNOWN_SOURCE_LIFETIME = timedelta(seconds=KNOWN_SOURCE_SECONDS)


class Authenticator:
    def __init__(
        self,
        store: CredentialStore,
        hasher: PasswordHasher,
        throttle: LoginThrottle,
        clock: Callable[[], datetime],
        *,
        password_max_age: timedelta | None = None,
        audit: Auditor | None = None,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._throttle = throttle
        self._clock = clock
        self._password_max_age = password_max_age
        self._audit = audit
        # Checks that outlive their callers, kept referenced until they end.
        self._checks: set[asyncio.Task[Principal | None]] = set()

    async def authenticate(self, username: str, password: str, source: str) -> Principal:
        """`source` names where the call comes from (a client address, an mTLS identity)."""
        check_username(username)
        check_password(password)
        key = username_key(username)
        view = await self._store.find_login(key, source)
        known = self._source_known(view)
        try:
            turn = await self._throttle.turn(
                key,
                source,
                source_known=known,
                name_count=view.this_source if known else view.strangers,
                source_count=view.source,
            )
        except AuthError as refused:  # TOO_MANY_ATTEMPTS
            if self._audit is not None:
                self._audit.login_refused(username, source, refused)
            raise
        try:
            salt = view.password_salt or self._hasher.dummy_salt
            job = self._hasher.start(password, salt, view.passwords, request_context.deadline.get())
        except BaseException:
            self._throttle.done(turn)
            raise
        check = asyncio.create_task(self._conclude(job, turn, key, username, source, view))
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)
        try:
            principal = await asyncio.shield(check)
        except asyncio.CancelledError:
            job.cancel_if_queued()  # started: it runs on and is recorded; queued: never runs
            raise
        if principal is None:
            raise invalid_credentials()
        return principal

    def _source_known(self, view: LoginView) -> bool:
        seen = view.source_last_login
        return seen is not None and view.now is not None and view.now - seen < KNOWN_SOURCE_LIFETIME

    async def _conclude(
        self, job: HashJob, turn: Turn, key: str, username: str, source: str, view: LoginView
    ) -> Principal | None:
        """Await the check and record its outcome, whatever the caller does meanwhile."""
        # The caller's deadline no longer bounds the record: the truth is written regardless.
        request_context.deadline.set(None)
        try:
            match = await job.result()
            if match.found is None or view.user is None:
                record = await self._record_failure(turn, key, username, source, view)
                self._throttle.recorded(turn, record.name, record.source)
                return None
            try:
                return await self._succeeded(match, turn, key, source, view)
            except AuthError as refused:  # ACCOUNT_LOCKED, ACCOUNT_EXPIRED: told after the hash
                if self._audit is not None:
                    self._audit.login_refused(username, source, refused)
                raise
        finally:
            self._throttle.done(turn)

    async def _record_failure(
        self, turn: Turn, key: str, username: str, source: str, view: LoginView
    ) -> FailureRecord:
        """Count the failure, and audit it in the same statement. Should the audit row be what
        fails it (a constraint or a permission on the audit table), count again without it:
        the count is the defence, the trail only tells of it."""
        count = (
            key,
            turn.counter,
            self._throttle.name_schedule,
            self._throttle.policy.lockout_threshold,
            self._throttle.policy.lockout_duration,
            source,
            self._throttle.source_schedule,
        )
        if self._audit is None:
            return await self._store.record_failure(*count)
        event = self._audit.failed_login(username, source, view.user is not None)
        try:
            record = await self._store.record_failure(*count, event)
        except AuthError:
            raise  # the database is unavailable: the count is too
        except Exception as exc:
            self._audit.lost(event, exc)
            record = await self._store.record_failure(*count)
        before = view.this_source if turn.counter else view.strangers
        if record.name.locked_for > 0 and before.locked_for == 0:  # this failure locked it
            self._audit.lockout_started(username, source, record.name, strangers=not turn.counter)
        return record

    async def _succeeded(
        self, match: Match, turn: Turn, key: str, source: str, view: LoginView
    ) -> Principal:
        user, found = view.user, match.found
        assert user is not None and found is not None and view.password_salt is not None
        count = view.this_source if turn.counter else view.strangers
        if user.locked:
            raise AuthError(Reason.ACCOUNT_LOCKED, "the account is locked")
        if count.locked_for > 0:
            raise AuthError(
                Reason.ACCOUNT_LOCKED,
                "the account is locked after repeated failed logins, retry later",
                retry_after=count.locked_for,
            )
        now = self._clock()
        if user.expires_at is not None and user.expires_at <= now:
            raise AuthError(Reason.ACCOUNT_EXPIRED, "the account has expired")
        db_now = view.now or now
        seen = view.source_last_login
        record = SuccessRecord(
            user_id=user.id,
            source=source,
            reset_counter=turn.counter if count.failures else None,
            # Only a login that counted on the source's spray count resets it: a login to an
            # account the source already knows (its own, say) does not wipe a sprayer's count.
            reset_source=view.source.failures > 0 and turn.source_key is not None,
            remember_source=seen is None or db_now - seen >= KNOWN_SOURCE_REFRESH,
            touch_password=(
                found.id
                if match.rehash
                or found.last_used_at is None
                or db_now - found.last_used_at >= LAST_USED_GRANULARITY
                else None
            ),
            rehashed=match.candidate_hash if match.rehash else None,
        )
        if record.changes_anything:
            await self._store.record_success(key, record)
        self._throttle.recorded(turn, FailureCount(), FailureCount())
        password_expired = (
            self._password_max_age is not None
            and found.created_at is not None
            and now - found.created_at > self._password_max_age
        )
        return Principal(
            user=user,
            password_id=found.id,
            password_salt=view.password_salt,
            password_expired=password_expired,
            source=source,
        )
