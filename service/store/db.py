"""The pool, and the one place asyncpg's failures become the service's errors.

Every acquire and every query gets a timeout derived from the caller's deadline (see
`request_context`), because asyncpg's `acquire()` and queries otherwise wait forever when the
database stalls. Connection-level failures become UNAVAILABLE (retryable); anything else is a bug
and propagates as such.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg

from service import request_context
from service.errors import AuthError, Reason

log = logging.getLogger(__name__)

_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.QueryCanceledError,
    # The configured database is missing or refuses us: an operator's problem, not a bug.
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
)


class _WithoutTraceback(logging.Filter):
    """asyncpg's pool logs a traceback each time it fails to restore its minimum of connections
    (every 1 to 60 s while the database is away): keep its line, naming the error, not the
    traceback, so an outage does not bury the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()} ({record.exc_info[1].__class__.__name__})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


logging.getLogger("asyncpg.pool").addFilter(_WithoutTraceback())


class UniqueViolation(Exception):
    """A row would duplicate a unique key; `constraint` names it. Stores map it to a reason."""

    def __init__(self, constraint: str | None) -> None:
        super().__init__(constraint)
        self.constraint = constraint


@contextmanager
def database_errors() -> Iterator[None]:
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise UniqueViolation(exc.constraint_name) from exc
    except _UNAVAILABLE as exc:
        log.warning("database unavailable: %s", exc.__class__.__name__)
        raise AuthError(Reason.UNAVAILABLE, "database unavailable, retry later") from exc


async def create_pool(
    dsn: str, min_size: int, max_size: int, connect_timeout: float
) -> asyncpg.Pool:
    with database_errors():
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            server_settings={"application_name": "authsvc"},
        )


class Database:
    """Runs statements on the pool with deadline-bounded timeouts."""

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self.pool = pool
        self._timeout = timeout

    def timeout(self) -> float:
        left = request_context.remaining(self._timeout)
        if left <= 0:
            raise AuthError(Reason.UNAVAILABLE, "deadline exceeded before the database answered")
        return left

    async def ping(self) -> None:
        """Raise AuthError(UNAVAILABLE) unless the database answers a trivial query."""
        await self.fetch("SELECT 1")

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        with database_errors():
            async with self.pool.acquire(timeout=self.timeout()) as conn:
                yield Connection(conn, self)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connection() as conn:
            with database_errors():
                async with conn.raw.transaction():
                    yield conn

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            return await conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            return await conn.fetchrow(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        async with self.connection() as conn:
            return await conn.execute(sql, *args)


class Connection:
    """One acquired connection; every statement gets the deadline-bounded timeout."""

    def __init__(self, raw: asyncpg.Connection, db: Database) -> None:
        self.raw = raw
        self._db = db

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        with database_errors():
            return await self.raw.fetch(sql, *args, timeout=self._db.timeout())  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        with database_errors():
            return await self.raw.fetchrow(sql, *args, timeout=self._db.timeout())

    async def execute(self, sql: str, *args: Any) -> str:
        with database_errors():
            return await self.raw.execute(sql, *args, timeout=self._db.timeout())  # type: ignore[no-any-return]
