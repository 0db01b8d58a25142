"""The audit rules, called directly over an in-memory trail (tests/rpc/test_audit.py runs them
on PostgreSQL): which refusals are recorded, once per delay for too-many-attempts, and a trail
that fails is logged, never raised."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from service import request_context
from service.domain.audit import MAX_PENDING, REFUSALS_PER_SECOND, Auditor, AuditPolicy
from service.domain.models import AuditEvent, AuditKind
from service.domain.throttle import too_many_attempts
from service.errors import AuthError, Reason, invalid_credentials


class MemoryTrail:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[AuditEvent] = []
        self.fail = fail

    async def append(self, event: AuditEvent) -> None:
        if self.fail:
            raise AuthError(Reason.UNAVAILABLE, "database unavailable, retry later")
        self.events.append(event)

    async def newest(
        self, username_key: str | None, since: datetime | None, limit: int
    ) -> list[AuditEvent]:
        return self.events[::-1][:limit]

    async def purge(self, older_than_days: int, limit: int) -> int:
        return 0


async def test_only_login_refusals_are_recorded_outside_the_count() -> None:
    """Locked, expired and too-many refusals are recorded; a wrong password (recorded with its
    count) and other errors are not."""
    trail = MemoryTrail()
    audit = Auditor(trail)
    for error in (
        AuthError(Reason.ACCOUNT_LOCKED, "locked"),
        AuthError(Reason.ACCOUNT_EXPIRED, "expired"),
        AuthError(Reason.PASSWORD_EXPIRED, "expired"),
        too_many_attempts(2.0),
        invalid_credentials(),
        AuthError(Reason.UNAVAILABLE, "down"),
    ):
        audit.login_refused("Alice", "ip:192.0.2.1", error)
    await audit.drain()
    assert [e.detail.split(":")[0] for e in trail.events] == [
        "account_locked",
        "account_expired",
        "password_expired",
        "too_many_attempts",
    ]
    assert {e.username_key for e in trail.events} == {"alice"}


async def test_too_many_attempts_is_recorded_again_after_its_delay() -> None:
    """Refusals from one source are one event per delay, whatever names it tries (a sprayer
    adds no write per name); another source is its own."""
    trail = MemoryTrail()
    audit = Auditor(trail)
    for name in ("bob", "bob", "carol", "dave"):
        audit.login_refused(name, "ip:192.0.2.1", too_many_attempts(0.05))
    audit.login_refused("bob", "ip:192.0.2.2", too_many_attempts(0.05))
    await asyncio.sleep(0.06)
    audit.login_refused("bob", "ip:192.0.2.1", too_many_attempts(0.05))
    await audit.drain()
    assert [e.source for e in trail.events] == ["ip:192.0.2.1", "ip:192.0.2.2", "ip:192.0.2.1"]


async def test_events_carry_the_request_id_of_the_call() -> None:
    """An event names the request id the transport set for the call."""
    trail = MemoryTrail()
    request_context.request_id.set("req-42")
    await Auditor(trail, actor="cli:ops").record(AuditKind.ACCOUNT_LOCKED, "carol")
    [event] = trail.events
    assert (event.request_id, event.source) == ("req-42", "cli:ops")


async def test_a_trail_that_fails_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A failed write, awaited or in the background, is a warning, not an exception."""
    audit = Auditor(MemoryTrail(fail=True), AuditPolicy(logins=True))
    await audit.record(AuditKind.PASSWORD_ADDED, "dave", "2 held", "ip:192.0.2.3")
    audit.login_succeeded("dave", "ip:192.0.2.3")
    await audit.drain()
    lost = [r for r in caplog.records if "not recorded" in r.getMessage()]
    assert len(lost) == 2 and all(r.levelname == "WARNING" for r in lost)


async def test_successful_logins_are_recorded_only_when_asked() -> None:
    """login_succeeded writes nothing unless the policy records logins."""
    quiet, loud = MemoryTrail(), MemoryTrail()
    for audit in (Auditor(quiet), Auditor(loud, AuditPolicy(logins=True))):
        audit.login_succeeded("erin", "ip:192.0.2.4")
        await audit.drain()
    assert (len(quiet.events), [e.kind for e in loud.events]) == (0, ["login"])


async def test_refusal_events_have_a_budget_per_second() -> None:
    """Refusals from many sources at once are recorded up to the per-second budget only."""
    trail = MemoryTrail()
    audit = Auditor(trail)
    for i in range(REFUSALS_PER_SECOND * 3):
        audit.login_refused("bob", f"ip:198.51.100.{i}", too_many_attempts(5.0))
    await audit.drain()
    assert 0 < len(trail.events) <= 2 * REFUSALS_PER_SECOND  # the run may cross one second


async def test_changes_are_recorded_however_many_background_writes_wait() -> None:
    """A change's event is written even when the background writes are at their limit."""

    class Slow(MemoryTrail):
        async def append(self, event: AuditEvent) -> None:
            if event.kind is AuditKind.LOGIN_FAILED:
                await asyncio.sleep(0.2)
            await super().append(event)

    trail = Slow()
    audit = Auditor(trail)
    for i in range(MAX_PENDING):
        audit.record_later(AuditKind.LOGIN_FAILED, f"user{i}", "account_expired")
    await audit.record(AuditKind.PASSWORD_REPLACED, "alice")
    assert AuditKind.PASSWORD_REPLACED in {e.kind for e in trail.events}
    await audit.drain()
