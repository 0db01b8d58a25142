"""The audit trail: what is recorded, and the promise that recording never fails a call.

What: every failed login with its reason, every change of a password list, of an account or
of the signing keys; successful logins only when asked (`AuditPolicy.logins`: a write per login
costs scale, which is why Keycloak's login events are off by default too). Each event names the
username, the source of the call (`rpc/sources.py`), the request id and a detail written here
from facts, never from a password, a token or a hash.

How, by cost:
- a failed login that a hash proved wrong is recorded by the same statement that counts it
  (`CredentialStore.record_failure` takes the event): still one write per failure;
- other refused logins (locked, expired, too many attempts) and successful ones are written in
  the background, so the answer does not wait for them; a flood of TOO_MANY_ATTEMPTS refusals
  (which cost an attacker nothing: no hash, one read) is recorded once per source and delay,
  whatever names it tries, and at most `REFUSALS_PER_SECOND` such events a second in all (a
  guesser with many addresses); the rest are counted in the log;
- changes made by a call or a command are written once the change is made, and awaited (the
  write finishes even if the caller goes away meanwhile); they are never dropped for the
  background's sake.
A write that fails is logged and dropped: the call it describes has happened, and its caller is
not told otherwise. Background writes beyond `MAX_PENDING` are dropped the same way (the
database is then too slow for them anyway).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from service import request_context
from service.domain.models import AuditEvent, AuditKind, FailureCount
from service.domain.ports import AuditLog
from service.domain.usernames import username_key
from service.errors import AuthError, Reason

log = logging.getLogger(__name__)

RETENTION_DAYS_DEFAULT = 90
# Background writes in flight at once; more are dropped (and logged).
MAX_PENDING = 1000
# Sources whose TOO_MANY_ATTEMPTS refusals are remembered (to record one per delay); beyond it
# the oldest go.
MAX_QUIET = 10_000
# TOO_MANY_ATTEMPTS events written per second at most, across all sources.
REFUSALS_PER_SECOND = 20
# The purge deletes old events in statements of at most this many rows.
PURGE_BATCH = 1000
# How `authsvc audit` events are capped when no --limit is given.
LIST_LIMIT_DEFAULT = 100
# The source of the server's own actions (scheduled key rotation).
SERVER_SOURCE = "server"


# The refusals of a login that are recorded as `login_failed` outside the failure's own record
# (INVALID_CREDENTIALS is recorded with its count; a bad argument is no login).
REFUSALS = frozenset(
    {
        Reason.ACCOUNT_LOCKED,
        Reason.ACCOUNT_EXPIRED,
        Reason.PASSWORD_EXPIRED,
        Reason.TOO_MANY_ATTEMPTS,
    }
)


@dataclass(frozen=True)
class AuditPolicy:
    """`logins`: record successful logins too; events are kept `retention_days`."""

    logins: bool = False
    retention_days: int = RETENTION_DAYS_DEFAULT


class Auditor:
    """Records events for the domain services; `actor` is the source of events that have no
    call behind them (`cli:NAME` for a command, `server` for the server's own chores)."""

    def __init__(
        self, store: AuditLog, policy: AuditPolicy | None = None, actor: str = SERVER_SOURCE
    ) -> None:
        self._store = store
        self.policy = policy or AuditPolicy()
        self._actor = actor
        self._pending: set[asyncio.Task[None]] = set()
        # (username key, source) -> time.monotonic() until which its refusals go unrecorded.
        self._quiet: dict[str, float] = {}  # source -> until when its refusals are quiet
        self._second, self._refusals_this_second, self._unrecorded = 0, 0, 0

    def event(
        self, kind: AuditKind, username: str, detail: str = "", source: str | None = None
    ) -> AuditEvent:
        """An event of the current call (its request id), from `source` or else the actor."""
        return AuditEvent(
            kind=kind,
            username=username,
            username_key=username_key(username),
            source=self._actor if source is None else source,
            request_id=request_context.request_id.get(),
            detail=detail,
        )

    async def record(
        self, kind: AuditKind, username: str, detail: str = "", source: str | None = None
    ) -> None:
        """Write an event now; a failure is logged, never raised. The write goes on if the
        caller goes away meanwhile: the change it tells of is made."""
        await asyncio.shield(self._start(self.event(kind, username, detail, source)))

    def record_later(
        self, kind: AuditKind, username: str, detail: str = "", source: str | None = None
    ) -> None:
        """Write an event in the background (the login path does not wait for it)."""
        self._spawn(self.event(kind, username, detail, source))

    def _spawn(self, event: AuditEvent) -> None:
        if len(self._pending) >= MAX_PENDING:
            log.warning("audit event dropped (%d writes pending): %s", MAX_PENDING, event.kind)
            return
        self._start(event)

    def _start(self, event: AuditEvent) -> asyncio.Task[None]:
        task = asyncio.create_task(self._write(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _write(self, event: AuditEvent) -> None:
        # The event outlives the caller's deadline: the store's own timeout bounds it.
        token = request_context.deadline.set(None)
        try:
            await self._store.append(event)
        except Exception as exc:
            self.lost(event, exc)
        finally:
            request_context.deadline.reset(token)

    def lost(self, event: AuditEvent, exc: Exception) -> None:
        """An event could not be written: say so in the log (the call goes on)."""
        message = exc.message if isinstance(exc, AuthError) else exc.__class__.__name__
        log.warning(
            "audit event %s not recorded (request id %s): %s", event.kind, event.request_id, message
        )

    async def drain(self) -> None:
        """Wait for the background writes (before the pool closes)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def failed_login(self, username: str, source: str, known: bool) -> AuditEvent:
        """The event a wrong password (or an unknown name) is recorded with, by the statement
        that counts it."""
        detail = "wrong password" if known else "no such user"
        return self.event(
            AuditKind.LOGIN_FAILED,
            username,
            f"{Reason.INVALID_CREDENTIALS.value.lower()}: {detail}",
            source,
        )

    def login_refused(self, username: str, source: str, error: AuthError) -> None:
        """A login refused for a reason other than its password: recorded in the background;
        TOO_MANY_ATTEMPTS once per name, source and delay."""
        if error.reason not in REFUSALS:
            return
        detail = error.reason.value.lower()
        if error.reason is Reason.TOO_MANY_ATTEMPTS:
            if not self._first_refusal(source, error.retry_after or 0.0):
                return
            detail += (
                f": retry after {error.retry_after or 0:.1f} s (this source's refusals until"
                " then not recorded)"
            )
        elif error.reason is Reason.ACCOUNT_LOCKED:
            detail += (
                f": after failed logins, {error.retry_after:.0f} s left"
                if error.retry_after
                else ": locked by an administrator"
            )
        self.record_later(AuditKind.LOGIN_FAILED, username, detail, source)

    def _first_refusal(self, source: str, retry_after: float) -> bool:
        """True for the refusal to record: the first of `source` in its delay, within the
        per-second budget."""
        now = time.monotonic()
        if self._quiet.get(source, 0.0) > now:
            return False
        if int(now) != self._second:
            if self._unrecorded:
                log.warning("%d too-many-attempts refusals not recorded", self._unrecorded)
            self._second, self._refusals_this_second, self._unrecorded = int(now), 0, 0
        if self._refusals_this_second >= REFUSALS_PER_SECOND:
            self._unrecorded += 1
            return False
        self._refusals_this_second += 1
        self._quiet.pop(source, None)  # re-inserted last: the dict stays in order of time
        while len(self._quiet) >= MAX_QUIET:
            del self._quiet[next(iter(self._quiet))]
        self._quiet[source] = now + retry_after
        return True

    def lockout_started(
        self, username: str, source: str, count: FailureCount, *, strangers: bool
    ) -> None:
        """A failure that locked the name's count (AUTHSVC_LOCKOUT_THRESHOLD): recorded in the
        background. `strangers`: the count of the sources the name does not know (else this
        source's own)."""
        whose = "from unknown sources" if strangers else "from this source"
        self.record_later(
            AuditKind.ACCOUNT_LOCKED,
            username,
            f"after {count.failures} failed logins {whose}, for {count.locked_for:.0f} s",
            source,
        )

    def login_succeeded(self, username: str, source: str) -> None:
        """Recorded only when the policy asks: otherwise no write, no statement."""
        if self.policy.logins:
            self.record_later(AuditKind.LOGIN, username, "", source)

    async def newest(
        self, username: str | None, since: datetime | None, limit: int
    ) -> list[AuditEvent]:
        key = None if username is None else username_key(username)
        return await self._store.newest(key, since, limit)

    async def purge_expired(self) -> int:
        """Delete events past the retention, a batch at a time."""
        total = 0
        while True:
            purged = await self._store.purge(self.policy.retention_days, PURGE_BATCH)
            total += purged
            if purged < PURGE_BATCH:
                return total
