"""Running initdb, pg_ctl and postgres, which refuse to run as root: as ourselves, in a user
namespace (`unshare`) when we are root, else as a system user."""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.embedded_postgres.errors import EmbeddedPostgresError

# Uid that initdb/postgres see inside the user namespace (any non-root uid works).
_NS_UID = 1000


@dataclass(frozen=True)
class Runner:
    """How to run initdb/pg_ctl/postgres, which refuse to run as root."""

    prefix: tuple[str, ...] = ()
    user: str | None = None  # run as this system user (root fallback)
    uid: int = -1
    gid: int = -1

    @property
    def owner(self) -> tuple[int, int]:
        """Who must own the cluster on disk (as seen from this process)."""
        if self.user is not None:
            return self.uid, self.gid
        return os.geteuid(), os.getegid()

    def run(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        # As an unprivileged system user, or behind the user-namespace prefix (maybe empty).
        as_user: dict[str, Any] = (
            {"user": self.uid, "group": self.gid, "extra_groups": []}
            if self.user is not None
            else {}
        )
        command = list(argv) if self.user is not None else [*self.prefix, *argv]
        try:
            return subprocess.run(
                command,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd="/",
                env=env,
                **as_user,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise EmbeddedPostgresError(f"cannot run {Path(argv[0]).name}: {exc}") from exc


def _userns_prefix() -> tuple[str, ...] | None:
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    prefix = (unshare, "--user", f"--map-user={_NS_UID}", f"--map-group={_NS_UID}")
    try:
        probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return prefix if probe.returncode == 0 else None


def fallback_runner() -> Runner:
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return Runner(user=name, uid=entry.pw_uid, gid=entry.pw_gid)
    raise EmbeddedPostgresError(
        "running as root without user namespaces and no 'postgres' or 'nobody' user exists;"
        " run as a normal user or set AUTHSVC_DATABASE_URL"
    )


@functools.cache
def _detect_runner() -> Runner:
    if os.geteuid() != 0:
        return Runner()
    # In a user namespace postgres sees itself as a normal user owning the
    # root-owned files, so nothing needs chown-ing and root can still connect.
    prefix = _userns_prefix()
    if prefix is not None:
        return Runner(prefix=prefix)
    return fallback_runner()


def runner() -> Runner:
    return _detect_runner()


def chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
