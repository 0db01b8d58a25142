"""A private PostgreSQL server for authsvc, used when no database URL is configured: a process
supervisor, kept apart from the table modules in `service/store/`.

The public surface is what `app.py`, the CLI, the tests and the bench use: `EmbeddedPostgres`
(start, stop, and where its cluster and log are), `EmbeddedPostgresError`, and the binary
look-ups `find_bin_dirs` and `server_major_version`. Inside: `binaries` (finding them),
`launch` (running them, also as root), `processes` (a running server seen from outside),
`locks` (who may start and stop a shared cluster) and `server` (the cluster's life).
"""

from service.embedded_postgres.binaries import find_bin_dirs, server_major_version
from service.embedded_postgres.errors import EmbeddedPostgresError
from service.embedded_postgres.server import EmbeddedPostgres

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "find_bin_dirs",
    "server_major_version",
]
