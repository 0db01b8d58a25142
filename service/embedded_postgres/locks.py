"""The shared-use locks: an exclusive flock held for a `with` block (who starts and stops the
server); the shared one each user holds is kept by `server.EmbeddedPostgres`."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from service.embedded_postgres.errors import EmbeddedPostgresError


class FileLock:
    """An exclusive flock held for the duration of a ``with`` block."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def __enter__(self) -> None:
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise EmbeddedPostgresError(f"cannot open lock file {self._path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
