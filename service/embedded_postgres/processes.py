"""The cluster's running server as seen from outside: its pid file, whether its postmaster is
alive, its socket, and small file helpers."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PidFile:
    pid: int
    port: int | None
    socket_dir: Path | None
    status: str


def read_pid_file(cluster: Path) -> PidFile | None:
    try:
        lines = (cluster / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return None

    def line(n: int) -> str:
        return lines[n - 1].strip() if len(lines) >= n else ""

    port = line(4)
    sock = line(5)
    return PidFile(
        pid=pid,
        port=int(port) if port.isdigit() else None,
        socket_dir=Path(sock) if sock else None,
        status=line(8),
    )


def pid_alive(pid: int) -> bool:
    """Whether pid is a live process; a zombie counts as dead, though kill() still finds it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return proc_stat.rsplit(")", 1)[-1].split()[:1] not in (["Z"], ["X"])


def is_postmaster_of(pid: int, cluster: Path) -> bool:
    """A postmaster chdirs into its data directory; a recycled pid will not be there."""
    try:
        cwd = os.stat(f"/proc/{pid}/cwd")
    except FileNotFoundError:
        return not Path("/proc/self").exists() and pid_alive(pid)
    except OSError:
        return pid_alive(pid)  # cannot tell: assume it is
    try:
        return os.path.samestat(cwd, os.stat(cluster))
    except OSError:
        return False


def socket_accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def socket_file(socket_dir: Path, port: int) -> Path:
    return socket_dir / f".s.PGSQL.{port}"


def guc_list_item(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def one_line(text: str, limit: int = 5) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " / ".join(lines[-limit:]) or "no output"


def reap(pid: int, timeout: float = 10) -> None:
    """Reap the postmaster if it was reparented to us (we are PID 1 or a subreaper)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.05)
