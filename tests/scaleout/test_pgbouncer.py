"""authsvc through PgBouncer in transaction mode (each transaction may run on another server
session): with `AUTHSVC_DB_STATEMENT_CACHE=0` nothing depends on session state. The password-list
races and key rotation run here through PgBouncer, as they run directly elsewhere; the LISTEN for
key changes takes the direct URL (`AUTHSVC_DB_LISTEN_URL`), which PgBouncer cannot carry."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from service.config import Settings
from service.store.db import Database
from tests.conftest import fresh_database
from tests.rpc.test_concurrency import (  # the same races, through PgBouncer
    test_concurrent_adds_lose_nothing,
    test_concurrent_deletes_never_remove_the_last_password,
    test_two_deletes_of_a_pair_leave_one,
)
from tests.rpc.test_key_changes import PROMPTLY, active, kid, login, replicas, until
from tests.scaleout.pgbouncer import PGBOUNCER, running_pgbouncer, via
from tests.store.test_signing_keys import (  # key rings racing, through PgBouncer
    empty_keys,
    test_forced_rotation_signs_at_once,
    test_racing_replicas_agree_on_one_first_key,
    test_rotation_after_a_compromise_retires_old_keys_at_once,
)
from tests.support import new_user
from tests.test_cli import env_with

pytestmark = pytest.mark.skipif(
    PGBOUNCER is None,
    reason="pgbouncer is not installed (apt-get install pgbouncer; .ci/run installs it)",
)

__all__ = [
    "empty_keys",
    "replicas",
    "test_concurrent_adds_lose_nothing",
    "test_concurrent_deletes_never_remove_the_last_password",
    "test_forced_rotation_signs_at_once",
    "test_racing_replicas_agree_on_one_first_key",
    "test_rotation_after_a_compromise_retires_old_keys_at_once",
    "test_two_deletes_of_a_pair_leave_one",
]


@pytest.fixture(scope="module")
def bouncer_port(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """PgBouncer (transaction mode) in front of the session's PostgreSQL, with fewer server
    sessions per database than the clients' pools hold (2), so clients' transactions do move
    between server sessions."""
    with running_pgbouncer(pg_dsn, tmp_path_factory.mktemp("pgbouncer"), pool_size=2) as port:
        yield port


@pytest.fixture(scope="module")
async def direct_url(pg_dsn: str) -> AsyncIterator[str]:
    """A fresh database for this module, by its direct URL."""
    async with fresh_database(pg_dsn) as url:
        yield url


@pytest.fixture(scope="module")
def database_url(direct_url: str, bouncer_port: int) -> str:
    """The module's database through PgBouncer: every fixture built on it goes through it."""
    return via(direct_url, bouncer_port)


@pytest.fixture(scope="module")
def settings(settings: Settings, database_url: str, direct_url: str) -> Settings:
    return replace(
        settings, database_url=database_url, db_statement_cache=0, db_listen_url=direct_url
    )


async def test_statements_really_go_through_pgbouncer(db: Database) -> None:
    """The pool's sessions are PgBouncer's: the backend pid PgBouncer announced differs from
    the server backend that runs the statement, so this module does exercise PgBouncer."""
    async with db.connection() as conn:
        backend = await conn.fetchrow("SELECT pg_backend_pid() AS pid")
        assert backend is not None
        assert conn.raw.get_server_pid() != backend["pid"]


def cli_rotate(database_url: str, *flags: str) -> None:
    """`authsvc keys rotate` through PgBouncer, as an operator runs it there."""
    done = subprocess.run(
        [sys.executable, "-m", "service", "keys", "rotate", *flags],
        env=env_with(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_DB_STATEMENT_CACHE="0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


async def test_rotation_reaches_every_replica_through_pgbouncer(
    replicas, database_url: str
) -> None:
    """Two replicas on PgBouncer, listening on the direct URL: after `keys rotate
    --retire-old` (through PgBouncer) returns, within 1 s both sign with the new key and
    refuse the old key's tokens."""
    user = await new_user(replicas[0].services, "pw")
    old = [await login(r, user.username) for r in replicas]
    await asyncio.to_thread(cli_rotate, database_url, "--retire-old")

    async def switched() -> bool:
        fresh = [await login(r, user.username) for r in replicas]
        refused = not any([await active(r, t) for r in replicas for t in old])
        return refused and all(kid(t) != kid(old[0]) for t in fresh)

    await until(switched, PROMPTLY)


def test_serve_starts_through_pgbouncer(database_url: str, direct_url: str, tmp_path: Path) -> None:
    """`authsvc serve` with AUTHSVC_DB_STATEMENT_CACHE=0 starts through PgBouncer, reports
    SERVING on grpc.health.v1, and stops cleanly on SIGTERM."""
    from tests.scaleout.serve import serving_process

    env = env_with(
        AUTHSVC_DATABASE_URL=database_url,
        AUTHSVC_DB_STATEMENT_CACHE="0",
        AUTHSVC_DB_LISTEN_URL=direct_url,
        AUTHSVC_DATA_DIR=str(tmp_path),
    )
    with serving_process(env) as (grpc_port, http_port):
        assert grpc_port > 0 and http_port > 0
