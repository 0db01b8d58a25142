"""A PgBouncer in transaction mode in front of the test PostgreSQL, on a free loopback port.

PgBouncer refuses to run as root: as root it runs the way the embedded PostgreSQL does (inside
a user namespace, or as the `postgres`/`nobody` user), so it can reach that server's socket.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from service.embedded_postgres.launch import runner as _runner  # how its own binaries run

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
)
START_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server(dsn: str) -> tuple[str, int, str]:
    """(host or socket directory, port, user) of the PostgreSQL a DSN names."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    return host, port, parts.username or "postgres"


def via(dsn: str, port: int) -> str:
    """The DSN of the same database through PgBouncer on `port` (no password: auth_type any)."""
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    return urlunsplit(("postgresql", f"{user}@127.0.0.1:{port}", parts.path, "", ""))


@contextmanager
def running_pgbouncer(dsn: str, workdir: Path, *, pool_size: int = 20) -> Iterator[int]:
    """PgBouncer (pool_mode transaction) in front of the server `dsn` names; yields its port."""
    assert PGBOUNCER is not None
    host, port, user = _server(dsn)
    listen = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={host} port={port} user={user}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {listen}\n"
        "unix_socket_dir =\n"
        "auth_type = any\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\n"
        "max_client_conn = 1000\n"
        # asyncpg sets these at start-up; PgBouncer must let them through.
        "ignore_startup_parameters = extra_float_digits\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
    )
    runner = _runner()
    if runner.user is not None:
        os.chown(workdir, runner.uid, runner.gid)
        for path in (config,):
            os.chown(path, runner.uid, runner.gid)
        argv = [PGBOUNCER, "-u", runner.user, str(config)]
    else:
        argv = [*runner.prefix, PGBOUNCER, str(config)]
    stderr = workdir / "pgbouncer.stderr"
    with open(stderr, "wb") as err:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=workdir)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = workdir / "pgbouncer.log"
                    raise RuntimeError(
                        f"pgbouncer did not start: {stderr.read_text()}"
                        f" {log.read_text() if log.exists() else ''}"
                    ) from None
                time.sleep(0.05)
        yield listen
    finally:
        process.send_signal(signal.SIGTERM)  # immediate shutdown
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
