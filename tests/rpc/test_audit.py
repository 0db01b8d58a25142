"""The audit trail through real gRPC calls on PostgreSQL: each kind of event, with the call's
source and request id; what a login costs with and without successful logins recorded; and a
trail that cannot be written never fails a call.

The servers trust 127.0.0.1 as a proxy, so each call names its client in `x-forwarded-for`
(as tests/rpc/test_brute_force.py does) and its request id in `x-request-id`."""

from __future__ import annotations

import ipaddress
import itertools
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest
from authsvc.v1 import auth_service_pb2, auth_service_pb2_grpc
from authsvc.v1 import password_service_pb2 as pw_pb
from authsvc.v1 import password_service_pb2_grpc as pw_grpc

from service import app
from service.config import Settings
from service.domain.models import AuditEvent
from service.domain.usernames import username_key
from service.http_server import serving_gateway
from service.store.db import Database
from tests.gateway.helpers import basic_auth
from tests.support import basic, error_info, new_user, serving

LOOPBACK_PROXY = (ipaddress.ip_network("127.0.0.1/32"),)
PASSWORD = "correct horse battery"
WRONG = "Wr0ng-guess-7f3a"
SECOND, THIRD, ANOTHER, ADMINS = (
    "second password here",
    "third password here",
    "another good one",
    "an administrator's choice",
)
_addresses = itertools.count(1)
# Every password and token this module's calls carry: none may reach an audit row.
SECRETS: set[str] = {PASSWORD, WRONG, SECOND, THIRD, ANOTHER, ADMINS}


def new_address() -> str:
    """A client address no other test of the module uses (TEST-NET-3)."""
    return str(ipaddress.ip_address("203.0.113.0") + next(_addresses))


@dataclass
class Call:
    """Where a call comes from and the request id it carries."""

    address: str
    request_id: str

    @property
    def source(self) -> str:
        return f"ip:{self.address}"

    def metadata(self, username: str, password: str) -> tuple[tuple[str, str], ...]:
        return (
            *basic(username, password),
            ("x-forwarded-for", self.address),
            ("x-request-id", self.request_id),
        )


def new_call() -> Call:
    return Call(new_address(), f"req-{secrets.token_hex(6)}")


@dataclass
class Server:
    channel: grpc.aio.Channel
    services: app.Services

    async def authorize(self, username: str, password: str, call: Call) -> str:
        """The reason the call failed for, or "OK"."""
        stub = auth_service_pb2_grpc.AuthServiceStub(self.channel)
        SECRETS.add(password)
        try:
            reply = await stub.Authorize(
                auth_service_pb2.AuthorizeRequest(), metadata=call.metadata(username, password)
            )
        except grpc.aio.AioRpcError as error:
            return error_info(error).reason
        SECRETS.add(reply.access_token)
        return "OK"

    async def events(self, username: str) -> list[AuditEvent]:
        """The user's events, newest first, once every background write has landed."""
        await self.services.audit.drain()
        return await self.services.audit.newest(username, None, 100)


@asynccontextmanager
async def audited_server(
    db: Database, settings: Settings, **overrides: Any
) -> AsyncIterator[Server]:
    """A server on the module's database trusting 127.0.0.1 to name clients, with `overrides`."""
    async with serving(db, settings, trusted_proxies=LOOPBACK_PROXY, **overrides) as (
        channel,
        services,
    ):
        yield Server(channel, services)


@pytest.fixture(scope="module")
async def server(db: Database, settings: Settings) -> AsyncIterator[Server]:
    async with audited_server(db, settings) as served:
        yield served


@pytest.fixture(scope="module")
async def logins_audited(db: Database, settings: Settings) -> AsyncIterator[Server]:
    """A server with AUTHSVC_AUDIT_LOGINS=true."""
    async with audited_server(db, settings, audit_logins=True) as served:
        yield served


def only(events: list[AuditEvent], kind: str) -> AuditEvent:
    [found] = [e for e in events if e.kind == kind]
    return found


def from_call(event: AuditEvent, call: Call) -> bool:
    return (event.source, event.request_id) == (call.source, call.request_id)


async def test_a_wrong_password_is_recorded_with_source_and_request_id(server: Server) -> None:
    """A wrong password is a login_failed event naming invalid_credentials, the source and the
    request id of the call."""
    user, call = await new_user(server.services, PASSWORD), new_call()
    assert await server.authorize(user.username, "not the password", call) == "INVALID_CREDENTIALS"
    failed = only(await server.events(user.username), "login_failed")
    assert failed.detail == "invalid_credentials: wrong password" and from_call(failed, call)


async def test_an_unknown_name_is_recorded_as_spelt(server: Server) -> None:
    """A login to a name nobody holds is recorded under the name as the caller spelt it."""
    name, call = f"Nobody-{secrets.token_hex(4)}", new_call()
    assert await server.authorize(name, "whatever it is", call) == "INVALID_CREDENTIALS"
    failed = only(await server.events(name), "login_failed")
    assert failed.username == name and failed.username_key == username_key(name)
    assert failed.detail == "invalid_credentials: no such user" and from_call(failed, call)


async def test_a_locked_account_is_recorded(server: Server) -> None:
    """A right password on an account an administrator locked is recorded as account_locked."""
    user, call = await new_user(server.services, PASSWORD), new_call()
    await server.services.users.set_locked(user.username, True)
    assert await server.authorize(user.username, PASSWORD, call) == "ACCOUNT_LOCKED"
    failed = only(await server.events(user.username), "login_failed")
    assert failed.detail == "account_locked: locked by an administrator" and from_call(failed, call)


async def test_an_expired_account_is_recorded(server: Server, db: Database) -> None:
    """A right password on an expired account is recorded as account_expired."""
    user, call = await new_user(server.services, PASSWORD), new_call()
    await db.execute(
        "UPDATE users SET expires_at = now() - interval '1 day' WHERE id = $1", user.id
    )
    assert await server.authorize(user.username, PASSWORD, call) == "ACCOUNT_EXPIRED"
    failed = only(await server.events(user.username), "login_failed")
    assert failed.detail == "account_expired" and from_call(failed, call)


async def test_an_expired_password_is_recorded(db: Database, settings: Settings) -> None:
    """Authorize with a password past its maximum age is recorded as password_expired."""
    async with audited_server(db, settings, password_max_age=3600) as aged:
        user, call = await new_user(aged.services, PASSWORD), new_call()
        await db.execute(
            "UPDATE passwords SET created_at = now() - interval '2 hours' WHERE user_id = $1",
            user.id,
        )
        assert await aged.authorize(user.username, PASSWORD, call) == "PASSWORD_EXPIRED"
        failed = only(await aged.events(user.username), "login_failed")
        assert failed.detail == "password_expired" and from_call(failed, call)


async def test_too_many_attempts_is_recorded_once_per_delay(
    db: Database, settings: Settings
) -> None:
    """Refusals while a name is delayed are recorded once per delay, not once per attempt."""
    async with audited_server(
        db,
        settings,
        failed_login_allowance=0,
        failed_login_delay_base=30.0,
        failed_login_delay_max=30.0,
    ) as delayed:
        user, call = await new_user(delayed.services, PASSWORD), new_call()
        assert await delayed.authorize(user.username, WRONG, call) == "INVALID_CREDENTIALS"
        refused = new_call()
        for _ in range(3):
            assert await delayed.authorize(user.username, PASSWORD, refused) == "TOO_MANY_ATTEMPTS"
        events = await delayed.events(user.username)
        too_many = [e for e in events if e.detail.startswith("too_many_attempts")]
        assert len(too_many) == 1 and too_many[0].source == refused.source
        assert [e.kind for e in events].count("login_failed") == 2  # and the counted failure


async def test_a_lockout_is_recorded_when_it_starts(db: Database, settings: Settings) -> None:
    """The failure that locks a name (AUTHSVC_LOCKOUT_THRESHOLD) records account_locked, once;
    the right password during the lock is a login_failed account_locked with the time left."""
    async with audited_server(
        db, settings, failed_login_allowance=10, lockout_threshold=2, lockout_duration=600.0
    ) as locking:
        user, call = await new_user(locking.services, PASSWORD), new_call()
        for _ in range(3):
            assert await locking.authorize(user.username, WRONG, call) == "INVALID_CREDENTIALS"
        assert await locking.authorize(user.username, PASSWORD, call) == "ACCOUNT_LOCKED"
        events = await locking.events(user.username)
        locked = only(events, "account_locked")
        assert locked.detail == "after 2 failed logins from unknown sources, for 600 s"
        assert from_call(locked, call)
        assert events[0].kind == "login_failed"
        assert events[0].detail.startswith("account_locked: after failed logins, ")


async def test_password_changes_are_recorded_with_the_call(server: Server) -> None:
    """Adding, deleting and replacing a password are each recorded with the call's source and
    request id."""
    user = await new_user(server.services, PASSWORD)
    stub = pw_grpc.PasswordServiceStub(server.channel)
    add, delete, replace = new_call(), new_call(), new_call()
    second, third = SECOND, THIRD
    await stub.AddPassword(
        pw_pb.AddPasswordRequest(new_password=second),
        metadata=add.metadata(user.username, PASSWORD),
    )
    await stub.DeletePassword(
        pw_pb.DeletePasswordRequest(old_password=PASSWORD),
        metadata=delete.metadata(user.username, second),
    )
    await stub.ReplacePasswords(
        pw_pb.ReplacePasswordsRequest(new_password=third),
        metadata=replace.metadata(user.username, second),
    )
    events = await server.events(user.username)
    assert [e.kind for e in events] == [
        "password_replaced",
        "password_deleted",
        "password_added",
        "account_created",
    ]
    for event, call in zip(events, (replace, delete, add), strict=False):
        assert from_call(event, call)
    assert [e.detail for e in events[:3]] == ["1 replaced by 1", "1 held", "2 held"]


async def test_account_administration_is_recorded(server: Server) -> None:
    """Create, lock, unlock, expire, groups, admin password and delete are each recorded, with
    the administrator's source."""
    services = server.services
    user = await new_user(services, PASSWORD)
    await services.users.set_locked(user.username, True)
    await services.users.set_locked(user.username, False)
    await services.users.set_expiry(user.username, None)
    await services.users.change_groups(user.username, ["ops"])
    await services.passwords.set_by_admin(user, ADMINS)
    await services.users.delete(user.username)
    events = await server.events(user.username)
    assert [e.kind for e in reversed(events)] == [
        "account_created",
        "account_locked",
        "account_unlocked",
        "account_expiry_set",
        "groups_changed",
        "password_set_by_admin",
        "account_deleted",
    ]
    assert {e.source for e in events} == {"server"}  # the actor of these services


async def test_key_rotation_and_retirement_are_recorded(server: Server) -> None:
    """A forced rotation that retires the other keys records key_rotated and key_retired."""
    key = await server.services.keys.rotate_now(retire_others=True)
    events = [e for e in await server.events("") if key.kid in e.detail]
    rotated, retired = only(events, "key_rotated"), only(events, "key_retired")
    assert rotated.detail.startswith(f"forced: {key.kid} (ES256) signs from ")
    assert retired.detail == f"every key but {key.kid} retired now (compromise)"
    assert rotated.username == "" and rotated.source == "server"


async def test_successful_logins_are_not_recorded_by_default(server: Server) -> None:
    """With the default settings a successful login leaves no event."""
    user = await new_user(server.services, PASSWORD)
    assert await server.authorize(user.username, PASSWORD, new_call()) == "OK"
    assert [e.kind for e in await server.events(user.username)] == ["account_created"]


async def test_successful_logins_are_recorded_when_asked(logins_audited: Server) -> None:
    """With AUTHSVC_AUDIT_LOGINS=true a successful login is a `login` event of the call."""
    user, call = await new_user(logins_audited.services, PASSWORD), new_call()
    assert await logins_audited.authorize(user.username, PASSWORD, call) == "OK"
    login = only(await logins_audited.events(user.username), "login")
    assert login.username == user.username and from_call(login, call)


WRITES = ("INSERT", "UPDATE", "DELETE")


async def login_statements(
    server: Server,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    password: str,
    expected: str,
    *,
    warm: bool,
) -> tuple[list[str], list[str]]:
    """The statements (all, and those that write) one Authorize of a new user sends, the
    background ones included. `warm`: after a first login, which remembers the source and
    marks the password used, so this one is the usual login."""
    user, call = await new_user(server.services, PASSWORD), new_call()
    if warm:
        assert await server.authorize(user.username, PASSWORD, call) == "OK"
        await server.services.audit.drain()
    sent: list[str] = []
    for method in ("fetch", "fetchrow", "execute"):
        real = getattr(db, method)

        async def counting(sql: str, *args: Any, real: Any = real) -> Any:
            sent.append(sql)
            return await real(sql, *args)

        monkeypatch.setattr(db, method, counting)
    assert await server.authorize(user.username, password, call) == expected
    await server.services.audit.drain()
    monkeypatch.undo()
    return sent, [sql for sql in sent if any(word in sql for word in WRITES)]


async def test_a_successful_login_costs_one_read_and_no_write_by_default(
    server: Server, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default the usual successful login is one statement, a read: the trail adds none."""
    sent, writes = await login_statements(server, db, monkeypatch, PASSWORD, "OK", warm=True)
    assert len(sent) == 1 and writes == []


async def test_a_failed_login_costs_one_write_with_its_event(
    server: Server, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong password is one read and one write, the write counting it and recording it."""
    sent, writes = await login_statements(
        server, db, monkeypatch, WRONG, "INVALID_CREDENTIALS", warm=False
    )
    assert len(sent) == 2 and len(writes) == 1
    assert "audit_events" in writes[0] and "login_throttle" in writes[0]


async def test_a_recorded_login_costs_one_more_write(
    logins_audited: Server, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With AUTHSVC_AUDIT_LOGINS=true the usual login is its read and the event's insert."""
    sent, writes = await login_statements(
        logins_audited, db, monkeypatch, PASSWORD, "OK", warm=True
    )
    assert len(sent) == 2 and len(writes) == 1 and "audit_events" in writes[0]


async def test_a_trail_that_cannot_be_written_fails_no_call(
    logins_audited: Server, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """With every audit insert refused, logins (right and wrong) and password changes answer
    as before, the failure is still counted, and the log says what was lost."""
    user, call = await new_user(logins_audited.services, PASSWORD), new_call()
    await db.execute("ALTER TABLE audit_events ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
    try:
        assert await logins_audited.authorize(user.username, WRONG, call) == "INVALID_CREDENTIALS"
        counted = await db.fetchrow(
            "SELECT failures FROM login_throttle WHERE username_key = $1",
            username_key(user.username),
        )
        assert counted is not None and counted["failures"] == 1
        assert await logins_audited.authorize(user.username, PASSWORD, call) == "OK"
        await pw_grpc.PasswordServiceStub(logins_audited.channel).AddPassword(
            pw_pb.AddPasswordRequest(new_password=ANOTHER),
            metadata=call.metadata(user.username, PASSWORD),
        )
        await logins_audited.services.audit.drain()
    finally:
        await db.execute("ALTER TABLE audit_events DROP CONSTRAINT refuse_all")
    lost = [r.getMessage() for r in caplog.records if "not recorded" in r.getMessage()]
    assert len(lost) == 3 and all(call.request_id in line for line in lost)


async def test_a_rest_call_is_recorded_with_its_peer_and_request_id(
    server: Server, settings: Settings
) -> None:
    """A wrong password over REST is recorded with the HTTP client's address and the
    X-Request-Id it sent."""
    user, request_id = await new_user(server.services, PASSWORD), f"rest-{secrets.token_hex(6)}"
    dispatcher = app.in_process_gateway(app.build_servicers(server.services, settings))
    async with (
        serving_gateway(dispatcher, "127.0.0.1:0", shutdown_timeout=1) as port,
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http,
        http.post(
            "/v1/users/authorize",
            headers={**basic_auth(user.username, "wrong over rest"), "X-Request-Id": request_id},
        ) as reply,
    ):
        assert reply.status == 401
    SECRETS.add("wrong over rest")
    failed = only(await server.events(user.username), "login_failed")
    assert (failed.source, failed.request_id) == ("ip:127.0.0.1", request_id)


async def test_the_periodic_purge_deletes_events_past_retention(
    db: Database, settings: Settings
) -> None:
    """The periodic purge (the failed-login one) deletes events older than
    AUTHSVC_AUDIT_RETENTION_DAYS, in batches, and keeps younger ones."""
    async with serving(db, settings, audit_retention_days=30) as (_, services):
        old, young = f"old-{secrets.token_hex(4)}", f"young-{secrets.token_hex(4)}"
        await db.execute(
            "INSERT INTO audit_events (at, kind, username, username_key, source, request_id)"
            " SELECT now() - make_interval(days => $2), 'login_failed', $1, $1, 'ip:192.0.2.1', '-'"
            " FROM generate_series(1, $3)",
            old,
            31,
            2500,  # more than one batch
        )
        await db.execute(
            "INSERT INTO audit_events (at, kind, username, username_key, source, request_id)"
            " VALUES (now() - interval '29 days', 'login_failed', $1, $1, 'ip:192.0.2.1', '-')",
            young,
        )
        await app.purge_stale_records(services)
        assert await services.audit.newest(old, None, 10) == []
        assert len(await services.audit.newest(young, None, 10)) == 1


async def test_a_scheduled_rotation_is_recorded_as_the_server(server: Server, db: Database) -> None:
    """A rotation the server schedules itself is key_rotated from `server`."""
    await db.execute("UPDATE signing_keys SET created_at = created_at - interval '40 days'")
    key = await server.services.keys.rotate_if_due()
    assert key is not None
    rotated = only([e for e in await server.events("") if key.kid in e.detail], "key_rotated")
    assert rotated.detail.startswith(f"scheduled: {key.kid} ") and rotated.source == "server"


async def test_no_audit_row_holds_a_secret(server: Server, db: Database) -> None:
    """No password, token, hash or Authorization value used by this module's calls appears in
    any audit row (run last: it reads the whole table)."""
    await server.services.audit.drain()
    rows = [r["line"] for r in await db.fetch("SELECT t::text AS line FROM audit_events t")]
    assert len(rows) > 20
    forbidden = {*SECRETS, "$argon2", "Basic ", "eyJ"}
    leaks = [(secret, row) for row in rows for secret in forbidden if secret in row]
    assert leaks == []
