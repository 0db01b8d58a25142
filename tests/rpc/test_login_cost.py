"""What a login costs: exactly one argon2id computation per attempt, for an unknown name as for a
user with one or twenty passwords, right or wrong, so neither its time nor its cost tells whether
the name exists or how many passwords it holds; and the cap on a user's passwords (a bound for
storage, not for the cost of a login)."""

from __future__ import annotations

import secrets
import statistics
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import argon2
import argon2._password_hasher
import grpc
import pytest
from authsvc.v1 import password_service_pb2 as pb
from authsvc.v1 import password_service_pb2_grpc

from service.config import Argon2Parameters, Settings
from service.domain import passwords as passwords_module
from service.domain.models import User
from service.domain.passwords import new_salt
from service.store.db import Database
from tests.rpc.test_brute_force import (
    DEFAULT_POLICY,
    HashCounter,
    Server,
    login,
    new_address,
    reason,
)
from tests.support import basic, error_info, new_user, serving


class Argon2Counter:
    """Counts argon2 computations, wherever the password module makes them: the list's own salt
    (`hash_secret`), another group's (`hash_secret_raw`), or a foreign hash (`verify_secret`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.computations = 0
        self._lock = threading.Lock()
        for module, name in (
            (passwords_module, "hash_secret"),
            (argon2.low_level, "hash_secret_raw"),
            (argon2._password_hasher, "verify_secret"),
        ):
            monkeypatch.setattr(module, name, self._counting(getattr(module, name)))

    def _counting(self, real: Any) -> Any:
        def counting(*args: Any, **kwargs: Any) -> Any:
            with self._lock:  # the hasher's worker threads
                self.computations += 1
            return real(*args, **kwargs)

        return counting


@pytest.fixture(scope="module")
async def server(db: Database, settings: Settings) -> AsyncIterator[Server]:
    async with serving(db, settings, **DEFAULT_POLICY) as (channel, services):
        yield Server(channel, services)


async def user_with_passwords(server: Server, count: int) -> tuple[User, list[str]]:
    """A user holding `count` passwords, each added the ordinary way (hashed with its salt)."""
    passwords = [f"password {i:02} {secrets.token_hex(3)}" for i in range(count)]
    user = await new_user(server.services, passwords[0])
    principal = await server.services.authenticator.authenticate(
        user.username, passwords[0], "setup"
    )
    for password in passwords[1:]:
        await server.services.passwords.add(principal, password)
    return user, passwords


@pytest.mark.parametrize(
    ("held", "right"),
    [(0, False), (1, False), (1, True), (20, False), (20, True)],
    ids=["unknown", "one-wrong", "one-right", "twenty-wrong", "twenty-right"],
)
async def test_a_login_costs_one_argon2_computation(
    server: Server, db: Database, monkeypatch: pytest.MonkeyPatch, held: int, right: bool
) -> None:
    """One attempt is one hash job and one argon2id computation: unknown name, one password or
    twenty, wrong or right."""
    if held:
        user, passwords = await user_with_passwords(server, held)
        count = await db.fetchrow("SELECT count(*) AS n FROM passwords WHERE user_id = $1", user.id)
        assert count is not None and count["n"] == held
        name, password = user.username, passwords[held // 2] if right else "not one of them"
    else:
        name, password = f"nobody-{secrets.token_hex(4)}", "not one of them"
    jobs = HashCounter(server.services, monkeypatch)
    computations = Argon2Counter(monkeypatch)
    result = await login(server.channel, name, password, new_address())
    assert reason(result) == ("OK" if right else "INVALID_CREDENTIALS")
    assert (jobs.started, computations.computations) == (1, 1)


@pytest.fixture(scope="module")
async def costly(db: Database, settings: Settings) -> AsyncIterator[Server]:
    """argon2id at tens of milliseconds, so a skipped (or an extra) hash would show."""
    async with serving(
        db,
        settings,
        **DEFAULT_POLICY,
        argon2=Argon2Parameters(time_cost=2, memory_kib=16384, parallelism=1),
    ) as (channel, services):
        yield Server(channel, services)


COPY_PASSWORD = """
INSERT INTO passwords (user_id, hash)
SELECT p.user_id, p.hash FROM passwords p CROSS JOIN generate_series(2, $2) WHERE p.user_id = $1
"""


async def test_unknown_name_costs_the_time_of_a_known_one(costly: Server, db: Database) -> None:
    """Interleaved wrong-password logins on unknown names, users with one password and users
    with twenty take the same median time, within half of one measured argon2id computation,
    and at least half of one (the hash is never skipped)."""
    rounds = 15
    kinds = ("unknown", "one", "twenty")
    samples: dict[str, list[float]] = {kind: [] for kind in (*kinds, "hash")}

    async def timed_failure(name: str) -> float:
        start = time.perf_counter()
        result = await login(costly.channel, name, "wrong password", new_address())
        elapsed = time.perf_counter() - start
        assert reason(result) == "INVALID_CREDENTIALS"
        return elapsed

    names: dict[str, list[str]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        names["unknown"].append(f"nobody-{secrets.token_hex(6)}")
        names["one"].append((await new_user(costly.services, "right password")).username)
        twenty = await new_user(costly.services, "right password")
        # Twenty stored digests to compare (their values do not change the cost of comparing).
        await db.execute(COPY_PASSWORD, twenty.id, 20)
        names["twenty"].append(twenty.username)
    await timed_failure(f"warm-up-{secrets.token_hex(4)}")
    for i in range(rounds):
        start = time.perf_counter()
        await costly.services.hasher.hash("yardstick", new_salt())
        samples["hash"].append(time.perf_counter() - start)
        # Rotate the order, so that no kind always runs first (or right after the yardstick).
        for kind in kinds[i % 3 :] + kinds[: i % 3]:
            samples[kind].append(await timed_failure(names[kind][i]))
    medians = {kind: statistics.median(values) for kind, values in samples.items()}
    one_hash = medians["hash"]
    assert one_hash > 0.005, f"argon2 too cheap for the comparison to mean anything: {medians}"
    for kind in kinds:
        assert medians[kind] > one_hash / 2, medians
    for kind in ("one", "twenty"):
        assert abs(medians[kind] - medians["unknown"]) < one_hash / 2, medians


async def test_a_user_holds_at_most_max_passwords(server: Server) -> None:
    """At the default limit (32) a user can hold 32 passwords; a 33rd is TOO_MANY_PASSWORDS, and
    each of the 32 still logs in."""
    limit = Settings().max_passwords
    user, passwords = await user_with_passwords(server, limit)
    stub = password_service_pb2_grpc.PasswordServiceStub(server.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddPassword(
            pb.AddPasswordRequest(new_password="one too many"),
            metadata=basic(user.username, passwords[0]),
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(caught.value).reason == "TOO_MANY_PASSWORDS"
    address = new_address()
    for password in (passwords[0], passwords[-1]):
        assert reason(await login(server.channel, user.username, password, address)) == "OK"
