"""Brute-force defence over real gRPC on PostgreSQL: the delay gate, its RetryInfo, the bound on
parallel guesses (one server, and two server processes on one database), lockout, and answers
(and timings) that do not tell which usernames exist. Short durations throughout, set through
Settings."""

from __future__ import annotations

import asyncio
import secrets
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import grpc
import pytest
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc, password_service_pb2_grpc
from authsvc.v1 import password_service_pb2 as password_pb
from google.rpc import error_details_pb2, status_pb2

from service import app
from service.config import Argon2Parameters
from service.domain.authenticator import Authenticator
from service.domain.passwords import PasswordHasher
from service.domain.usernames import username_key
from service.store.passwords import PgCredentialStore
from tests.conftest import CHEAP_ARGON2
from tests.support import authorize, basic, error_info, new_user, serving
from tests.test_cli import env_with, free_port, wait_for_port

THROTTLE_ROW = """
SELECT failures, locked_until,
       greatest(extract(epoch FROM next_attempt_at - now()), 0)::float8 AS wait,
       greatest(extract(epoch FROM locked_until - now()), 0)::float8 AS lock_left,
       extract(epoch FROM next_attempt_at - updated_at)::float8 AS delay
FROM login_throttle WHERE username_key = $1
"""


@pytest.fixture(scope="module")
async def gated(db, settings):
    """A delay that outlasts every test: one admitted attempt per name, then TOO_MANY_ATTEMPTS."""
    async with serving(
        db, settings, failed_login_delay_base=30.0, failed_login_delay_max=60.0
    ) as s:
        yield s


@pytest.fixture(scope="module")
async def doubling(db, settings):
    """A short doubling delay: 0.05, 0.1, 0.2, 0.2, ... seconds."""
    async with serving(db, settings, failed_login_delay_base=0.05, failed_login_delay_max=0.2) as s:
        yield s


@pytest.fixture(scope="module")
async def locking(db, settings):
    """Lockout after 3 failures for 2 s, with short delays (0.1, 0.2, then 0.4 s during the
    lock), and a 60 s maximum password age."""
    async with serving(
        db,
        settings,
        failed_login_delay_base=0.1,
        failed_login_delay_max=1.0,
        lockout_threshold=3,
        lockout_duration=2.0,
        password_max_age=60,
    ) as s:
        yield s


async def throttle_row(db, username: str):
    return await db.fetchrow(THROTTLE_ROW, username_key(username))


async def wait_for_gate(db, username: str) -> None:
    """Sleep until the name's next attempt is due (by the database's clock)."""
    row = await throttle_row(db, username)
    if row is not None:
        await asyncio.sleep(row["wait"] + 0.01)


async def failure(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay a failed call carries, in seconds, or None."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def reasons(results: list[object]) -> list[str]:
    out = []
    for result in results:
        assert isinstance(result, grpc.aio.AioRpcError), result
        out.append(error_info(result).reason)
    return out


# -- the delay gate ---------------------------------------------------------------------------


async def test_attempt_within_the_delay_is_too_many_attempts(gated) -> None:
    """After a failure, the next attempt is RESOURCE_EXHAUSTED with TOO_MANY_ATTEMPTS."""
    channel, services = gated
    user = await new_user(services)
    await failure(authorize(channel, user.username, "wrong"))
    error = await failure(authorize(channel, user.username, "wrong"))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(error).reason == "TOO_MANY_ATTEMPTS"


async def test_retry_info_carries_the_remaining_delay(gated) -> None:
    """The refusal's RetryInfo is the time left before the next attempt is admitted."""
    channel, services = gated
    user = await new_user(services)
    await failure(authorize(channel, user.username, "wrong"))
    delay = retry_delay(await failure(authorize(channel, user.username, "wrong")))
    assert delay is not None and 25 < delay <= 30


async def test_right_password_within_the_delay_is_refused_unverified(gated, db) -> None:
    """Within the delay even the right password is refused, before any verification."""
    channel, services = gated
    user = await new_user(services, "right-pw")
    await failure(authorize(channel, user.username, "wrong"))
    error = await failure(authorize(channel, user.username, "right-pw"))
    assert error_info(error).reason == "TOO_MANY_ATTEMPTS"
    used = await db.fetchrow("SELECT last_used_at FROM passwords WHERE user_id = $1", user.id)
    assert used["last_used_at"] is None


async def test_delay_doubles_per_failure_up_to_the_max(doubling, db) -> None:
    """Consecutive failures wait 0.05, 0.1, 0.2, then stay at the 0.2 s maximum."""
    channel, services = doubling
    user = await new_user(services)
    delays = []
    for _ in range(4):
        await wait_for_gate(db, user.username)
        error = await failure(authorize(channel, user.username, "wrong"))
        assert error_info(error).reason == "INVALID_CREDENTIALS"
        delays.append(round((await throttle_row(db, user.username))["delay"], 3))
    assert delays == [0.05, 0.1, 0.2, 0.2]


async def test_success_resets_the_count(doubling, db) -> None:
    """A right password after failures clears them: the next wrong one is the first again."""
    channel, services = doubling
    user = await new_user(services, "right-pw")
    for _ in range(2):
        await wait_for_gate(db, user.username)
        await failure(authorize(channel, user.username, "wrong"))
    await wait_for_gate(db, user.username)
    assert (await authorize(channel, user.username, "right-pw")).access_token
    assert await throttle_row(db, user.username) is None
    await failure(authorize(channel, user.username, "wrong"))
    assert (await throttle_row(db, user.username))["failures"] == 1


async def test_password_rpcs_are_gated_too(gated) -> None:
    """The Basic authentication of the password RPCs passes the same gate as Authorize."""
    channel, services = gated
    user = await new_user(services, "right-pw")
    await failure(authorize(channel, user.username, "wrong"))
    stub = password_service_pb2_grpc.PasswordServiceStub(channel)
    error = await failure(
        stub.AddPassword(
            password_pb.AddPasswordRequest(new_password="another-pw"),
            metadata=basic(user.username, "right-pw"),
        )
    )
    assert error_info(error).reason == "TOO_MANY_ATTEMPTS"


async def test_densify_dialect_is_gated_too(gated) -> None:
    """IssueApiToken shares the gate with Authorize: one name, one count."""
    channel, services = gated
    user = await new_user(services, "right-pw")
    await failure(authorize(channel, user.username, "wrong"))
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    error = await failure(
        stub.IssueApiToken(pb.IssueApiTokenRequest(user_name=user.username.upper(), pwd="right-pw"))
    )
    assert error_info(error).reason == "TOO_MANY_ATTEMPTS"


# -- parallel guesses -------------------------------------------------------------------------


async def test_parallel_burst_on_one_server_verifies_once(gated, db, settings, monkeypatch) -> None:
    """Twenty parallel wrong guesses on one name: one verified (at the fixed cost of a failure,
    max_passwords verifications), nineteen refused unverified, one failure counted."""
    channel, services = gated
    user = await new_user(services)
    verifications = 0
    verify = services.hasher.verify

    async def counting_verify(password_hash: str, password: str) -> bool:
        nonlocal verifications
        verifications += 1
        return await verify(password_hash, password)

    monkeypatch.setattr(services.hasher, "verify", counting_verify)
    results = await asyncio.gather(
        *(authorize(channel, user.username, f"guess-{i}") for i in range(20)),
        return_exceptions=True,
    )
    seen = reasons(results)
    assert seen.count("INVALID_CREDENTIALS") == 1
    assert seen.count("TOO_MANY_ATTEMPTS") == 19
    assert verifications == settings.max_passwords
    assert (await throttle_row(db, user.username))["failures"] == 1


@pytest.fixture(scope="module")
def two_servers(database_url: str, db) -> list[str]:
    """Two `authsvc serve` processes on the module's database, with a 30 s delay."""
    env = env_with(
        AUTHSVC_DATABASE_URL=database_url,
        AUTHSVC_FAILED_LOGIN_DELAY_BASE="30",
        AUTHSVC_FAILED_LOGIN_DELAY_MAX="60",
        AUTHSVC_HTTP_ADDR="127.0.0.1:0",
        AUTHSVC_HASH_WORKERS="2",
    )
    ports = [free_port(), free_port()]
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            env={**env, "AUTHSVC_GRPC_ADDR": f"127.0.0.1:{port}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for port in ports
    ]
    try:
        for port, server in zip(ports, servers, strict=True):
            wait_for_port(port, server)
        yield [f"127.0.0.1:{port}" for port in ports]
    finally:
        for server in servers:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
        for server in servers:
            try:
                server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()


async def test_parallel_burst_across_two_processes_verifies_once(two_servers, gated, db) -> None:
    """Twenty parallel wrong guesses split over two server processes sharing one database: one
    verified, nineteen refused, and exactly one failure counted."""
    _, services = gated
    user = await new_user(services)
    async with (
        grpc.aio.insecure_channel(two_servers[0]) as first,
        grpc.aio.insecure_channel(two_servers[1]) as second,
    ):
        # Both channels connected before the burst, so neither server starts late.
        await asyncio.gather(first.channel_ready(), second.channel_ready())
        results = await asyncio.gather(
            *(
                authorize(first if i % 2 else second, user.username, f"guess-{i}")
                for i in range(20)
            ),
            return_exceptions=True,
        )
    seen = reasons(results)
    assert seen.count("INVALID_CREDENTIALS") == 1
    assert seen.count("TOO_MANY_ATTEMPTS") == 19
    assert (await throttle_row(db, user.username))["failures"] == 1


class StalledHasher(PasswordHasher):
    """A hasher whose verifications never finish: the call is cut off mid-hash."""

    def __init__(self) -> None:
        super().__init__(CHEAP_ARGON2, 1, 1)
        self.entered = asyncio.Event()

    async def verify(self, password_hash: str, password: str) -> bool:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.parametrize("cut", ["cancelled", "deadline"])
async def test_call_cut_off_mid_hash_is_still_counted(gated, db, settings, cut: str) -> None:
    """A call cancelled, or out of deadline, while its password is being verified still counts
    as a failure, so the next attempt waits."""
    channel, services = gated
    user = await new_user(services, "right-pw")
    hasher = StalledHasher()
    stalled = Authenticator(
        PgCredentialStore(db),
        hasher,
        app.utc_now,
        throttle=services.throttle,
    )
    server, port = app.grpc_server(
        replace(services, authenticator=stalled), replace(settings, grpc_addr="127.0.0.1:0")
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as stalled_channel:
            call = password_service_pb2_grpc.PasswordServiceStub(stalled_channel).AddPassword(
                password_pb.AddPasswordRequest(new_password="another-pw"),
                metadata=basic(user.username, "right-pw"),
                timeout=None if cut == "cancelled" else 0.5,
            )
            await asyncio.wait_for(hasher.entered.wait(), 10)
            if cut == "cancelled":
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
            else:
                assert (await failure(call)).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await server.stop(None)
        hasher.close()
    assert (await throttle_row(db, user.username))["failures"] == 1
    error = await failure(authorize(channel, user.username, "right-pw"))
    assert error_info(error).reason == "TOO_MANY_ATTEMPTS"


# -- lockout ----------------------------------------------------------------------------------


async def lock_out(channel: grpc.aio.Channel, db, username: str) -> None:
    """Three wrong passwords, each once the delay allows: the third locks the name."""
    for _ in range(3):
        await wait_for_gate(db, username)
        error = await failure(authorize(channel, username, "wrong"))
        assert error_info(error).reason == "INVALID_CREDENTIALS"
    assert (await throttle_row(db, username))["locked_until"] is not None


async def test_locked_name_tells_only_a_right_password(locking, db) -> None:
    """During a lock a right password is ACCOUNT_LOCKED (with the lock's time left); a wrong
    one is INVALID_CREDENTIALS, as ever."""
    channel, services = locking
    user = await new_user(services, "right-pw")
    await lock_out(channel, db, user.username)
    await wait_for_gate(db, user.username)
    right = await failure(authorize(channel, user.username, "right-pw"))
    assert right.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(right).reason == "ACCOUNT_LOCKED"
    assert 0 < (retry_delay(right) or 0) <= 2.0
    await wait_for_gate(db, user.username)
    wrong = await failure(authorize(channel, user.username, "wrong"))
    assert error_info(wrong).reason == "INVALID_CREDENTIALS"
    assert wrong.details() == "invalid username or password"


async def test_failures_during_a_lock_are_not_counted(locking, db) -> None:
    """Wrong passwords during a lock leave the count (and so the lock) as it was."""
    channel, services = locking
    user = await new_user(services)
    await lock_out(channel, db, user.username)
    before = await throttle_row(db, user.username)
    await wait_for_gate(db, user.username)
    await failure(authorize(channel, user.username, "wrong"))
    after = await throttle_row(db, user.username)
    assert after["failures"] == before["failures"] == 3
    assert after["locked_until"] == before["locked_until"]


async def test_attempts_during_a_lock_are_still_delayed(locking, db) -> None:
    """A lock is no fast oracle: attempts during it still wait out the delay."""
    channel, services = locking
    user = await new_user(services, "right-pw")
    await lock_out(channel, db, user.username)
    error = await failure(authorize(channel, user.username, "right-pw"))
    assert error_info(error).reason == "TOO_MANY_ATTEMPTS"


async def test_lock_ends_by_time(locking, db) -> None:
    """Once the lock duration has passed the right password gets a token and clears the count."""
    channel, services = locking
    user = await new_user(services, "right-pw")
    await lock_out(channel, db, user.username)
    row = await throttle_row(db, user.username)
    await asyncio.sleep(max(row["lock_left"], row["wait"]) + 0.02)
    assert (await authorize(channel, user.username, "right-pw")).access_token
    assert await throttle_row(db, user.username) is None


async def test_administrator_unlock_lifts_a_lockout(locking, db) -> None:
    """`user unlock` also lifts a lockout after failed logins and forgets the failures."""
    channel, services = locking
    user = await new_user(services, "right-pw")
    await lock_out(channel, db, user.username)
    await services.users.set_locked(user.username, False)
    assert await throttle_row(db, user.username) is None
    assert (await authorize(channel, user.username, "right-pw")).access_token


async def test_right_password_on_the_locking_attempt_is_a_success(locking, db) -> None:
    """The attempt that would be the locking failure, if right, succeeds and clears the lock."""
    channel, services = locking
    user = await new_user(services, "right-pw")
    for _ in range(2):
        await wait_for_gate(db, user.username)
        await failure(authorize(channel, user.username, "wrong"))
    await wait_for_gate(db, user.username)
    assert (await authorize(channel, user.username, "right-pw")).access_token
    assert await throttle_row(db, user.username) is None


@pytest.mark.parametrize("state", ["locked", "expired"])
async def test_right_password_on_an_unusable_account_resets_nothing(
    locking, db, state: str
) -> None:
    """A right password on an administratively locked or expired account keeps the count and
    the delay, so it gives an attacker no faster guesses."""
    channel, services = locking
    user = await new_user(services, "right-pw")
    await wait_for_gate(db, user.username)
    await failure(authorize(channel, user.username, "wrong"))
    if state == "locked":
        await services.users.set_locked(user.username, True)
    else:
        await services.users.set_expiry(user.username, app.utc_now())
    await wait_for_gate(db, user.username)
    error = await failure(authorize(channel, user.username, "right-pw"))
    assert error_info(error).reason == (
        "ACCOUNT_LOCKED" if state == "locked" else "ACCOUNT_EXPIRED"
    )
    assert (await throttle_row(db, user.username))["failures"] == 2
    again = await failure(authorize(channel, user.username, "right-pw"))
    assert error_info(again).reason == "TOO_MANY_ATTEMPTS"


async def test_expired_password_resets_the_count(locking, db) -> None:
    """A right but expired password is proven: the count clears, so the owner can change it at
    once."""
    channel, services = locking
    user = await new_user(services, "right-pw")
    await db.execute(
        "UPDATE passwords SET created_at = now() - interval '1 hour' WHERE user_id = $1", user.id
    )
    await wait_for_gate(db, user.username)
    await failure(authorize(channel, user.username, "wrong"))
    await wait_for_gate(db, user.username)
    error = await failure(authorize(channel, user.username, "right-pw"))
    assert error_info(error).reason == "PASSWORD_EXPIRED"
    assert await throttle_row(db, user.username) is None
    await password_service_pb2_grpc.PasswordServiceStub(channel).AddPassword(
        password_pb.AddPasswordRequest(new_password="fresh-pw"),
        metadata=basic(user.username, "right-pw"),
    )


# -- no user enumeration ----------------------------------------------------------------------


async def test_unknown_name_gets_the_same_answers_and_delay(gated, db) -> None:
    """An unknown name is counted and delayed like a known one, with the same reasons, messages
    and RetryInfo."""
    channel, services = gated
    known = (await new_user(services)).username
    unknown = f"nobody-{secrets.token_hex(4)}"
    answers = {}
    for name in (known, unknown):
        first = await failure(authorize(channel, name, "wrong"))
        second = await failure(authorize(channel, name, "wrong"))
        answers[name] = [
            (e.code(), error_info(e).reason, e.details(), round(retry_delay(e) or 0))
            for e in (first, second)
        ]
        assert (await throttle_row(db, name))["failures"] == 1
    assert answers[known] == answers[unknown]


@pytest.fixture(scope="module")
async def costly(db, settings):
    """A server whose argon2 costs tens of milliseconds, so a skipped hash would show."""
    async with serving(
        db,
        settings,
        argon2=Argon2Parameters(time_cost=2, memory_kib=16384, parallelism=1),
        failed_login_delay_base=30.0,
        failed_login_delay_max=60.0,
    ) as s:
        yield s


async def test_unknown_name_costs_the_same_time(costly) -> None:
    """Interleaved pairs (a known user with one password and a wrong password, an unknown name)
    take the same median time, within a generous fraction of one argon2 verification."""
    channel, services = costly
    pairs = 21
    users = [(await new_user(services, "right-pw")).username for _ in range(pairs)]
    unknown = [f"nobody-{secrets.token_hex(6)}" for _ in range(pairs)]

    async def timed(name: str) -> float:
        start = time.perf_counter()
        error = await failure(authorize(channel, name, "wrong password"))
        elapsed = time.perf_counter() - start
        assert error_info(error).reason == "INVALID_CREDENTIALS"
        return elapsed

    # One verification alone, as the yardstick, measured the same way (through the pool).
    stored = await services.hasher.hash("right-pw")
    verify = []
    for _ in range(pairs):
        start = time.perf_counter()
        await services.hasher.verify(stored, "wrong password")
        verify.append(time.perf_counter() - start)
    await timed(f"warm-{secrets.token_hex(4)}")
    known_times, unknown_times = [], []
    for i in range(pairs):
        # Alternate which goes first, so neither side always gets the warmer caches.
        if i % 2:
            known_times.append(await timed(users[i]))
            unknown_times.append(await timed(unknown[i]))
        else:
            unknown_times.append(await timed(unknown[i]))
            known_times.append(await timed(users[i]))
    one_hash = statistics.median(verify)
    gap = abs(statistics.median(known_times) - statistics.median(unknown_times))
    assert one_hash > 0.005, "argon2 too cheap for the comparison to mean anything"
    assert min(statistics.median(known_times), statistics.median(unknown_times)) > one_hash / 2
    assert gap < 0.5 * one_hash, (gap, one_hash)
