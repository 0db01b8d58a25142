"""The pool, and the one place asyncpg's failures become the service's errors.

Every acquire and every query gets a timeout, the database timeout or the caller's deadline if
shorter (see `request_context`), because asyncpg's `acquire()` and queries otherwise wait forever
when the database stalls; a single statement whose caller stops waiting runs on within the
database timeout alone (`_one`). Connection-level failures become UNAVAILABLE (retryable);
anything else is a bug and propagates as such.

A server that is read-only (a primary demoted, or a standby, during a failover: SQLSTATE
25006), shutting down or gone (class 57P, class 08) is a fault of the moment too: UNAVAILABLE
with a retry hint, and the connection that met it is closed, so the pool opens a new one
(through the balancer, to the new primary) instead of handing the stale one out again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import asyncpg

from service import request_context
from service.addresses import safe_dsn
from service.errors import DEADLINE_EXCEEDED_MESSAGE, AuthError, Reason

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
    # A failover under way: the node is read-only or going away (57P01-57P05 are subclasses).
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.OperatorInterventionError,
    # The connection's protocol is stuck mid-operation: a pooled connection whose backend was
    # ended while it sat idle (asyncpg: "cannot switch to state ...; another operation is in
    # progress"). Closed below like a stale one.
    asyncpg.InternalClientError,
    # The configured database is missing or refuses us: an operator's problem, not a bug.
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
)


# Faults of the server behind a connection, not of the statement: that connection is not reused.
# (A statement_timeout, 57014, leaves a healthy connection: kept.)
_STALE_CONNECTION = (
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InternalClientError,
)

# How long a caller is told to wait before retrying when the database is unavailable.
RETRY_AFTER_SECONDS = 1.0

# With less of the caller's time left than this, no database work starts (not even a pool
# acquisition): no statement could come back in time.
MIN_WORK_SECONDS = 0.001
# Statements whose caller has gone that may run on or wait for a connection; beyond it, one still
# waiting stops (a flood of short deadlines cannot queue work without bound).
MAX_ORPHANS = 100


def is_stale_connection(exc: BaseException) -> bool:
    """True when `exc` says the connection's server is read-only, shutting down or gone."""
    return isinstance(exc, _STALE_CONNECTION) and not isinstance(exc, asyncpg.QueryCanceledError)


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
        raise AuthError(
            Reason.UNAVAILABLE, "database unavailable, retry later", retry_after=RETRY_AFTER_SECONDS
        ) from exc


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """Nothing to reset on release: no statement leaves session state behind (no session
    advisory locks, LISTEN, SET or cursors on pooled connections), and asyncpg still rolls back
    an open transaction first. asyncpg's default reset would cost a round trip per acquisition."""


async def create_pool(
    dsn: str, min_size: int, max_size: int, connect_timeout: float, statement_cache: int = 100
) -> asyncpg.Pool:
    """`statement_cache`: asyncpg's prepared statements kept per connection; 0 makes it use
    unnamed statements only, as PgBouncer in transaction mode needs. A database that cannot be
    reached is UNAVAILABLE naming where it was looked for and why (no credentials): at start-up
    that one line is all an operator sees."""
    try:
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            server_settings={"application_name": "authsvc"},
            reset=_no_session_state,
            statement_cache_size=statement_cache,
        )
    except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
        raise AuthError(
            Reason.UNAVAILABLE, f"cannot use the database at {safe_dsn(dsn)}: {_cause(exc)}"
        ) from exc


def deadline_exceeded() -> AuthError:
    """The caller's deadline ran out: its own doing, not the database's, so DEADLINE_EXCEEDED
    without a retry hint, and no warning (a tiny deadline is not a database alarm)."""
    return AuthError(Reason.DEADLINE_EXCEEDED, DEADLINE_EXCEEDED_MESSAGE)


def _cause(exc: BaseException) -> str:
    """Why a connection failed, in words: the server's own message, or the socket error's."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc)
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return exc.__class__.__name__


# The reset of a returned connection gets at least this long, even past the caller's deadline.
MIN_RELEASE_SECONDS = 0.05


T = TypeVar("T")


class Database:
    """Runs statements on the pool, each wait bounded by the caller's deadline and the timeout.

    The bounds are asyncio timeouts of our own, not asyncpg's `timeout=` arguments: on its own
    timeout asyncpg sends PostgreSQL a cancel request over a new connection and, when the pool
    takes the connection back, waits up to the acquire's timeout again for that cancel and for
    the reset query. With the database stalled both hang, so a call took twice the timeout (the
    gateway's deadline passed first: 504 instead of 503). Here a wait that runs out closes the
    connection at once instead (PostgreSQL ends the backend when it notices), and the caller
    gets UNAVAILABLE within the timeout.

    Closing is for the database's timeout only. A caller's deadline shorter than it does not
    close anything: a single statement (`_one`) runs in a task of its own, bounded by the
    database timeout alone, which gives the connection back when the statement ends; the caller
    is answered DEADLINE_EXCEEDED at its deadline. Otherwise any caller, with a 1 ms deadline,
    would make us close a connection per call (and PostgreSQL fork a backend for the next one).
    """

    def __init__(self, pool: asyncpg.Pool, timeout: float, *, dsn: str | None = None) -> None:
        self.pool = pool
        self.dsn = dsn  # for a connection of its own outside the pool (LISTEN)
        self._timeout = timeout
        # Statements under way, kept referenced until they end; those whose caller has gone.
        self._running: set[asyncio.Task[Any]] = set()
        self._orphans: set[asyncio.Task[Any]] = set()

    def timeout(self) -> float:
        """The next wait's bound: the database timeout, or the caller's time left if shorter.
        DEADLINE_EXCEEDED if that time is (nearly) spent: then nothing is started."""
        left = request_context.remaining(self._timeout)
        if left < MIN_WORK_SECONDS:
            raise deadline_exceeded()
        return left

    def _bound_by_caller(self, budget: float) -> bool:
        """True when the wait given `budget` ran out on the caller's deadline, not the timeout."""
        return budget < self._timeout

    async def ping(self) -> None:
        """Raise AuthError(UNAVAILABLE) unless the database answers a trivial query."""
        await self.fetch("SELECT 1")

    async def _acquire(self) -> asyncpg.Connection:
        # Our own timeout, not asyncpg's `timeout=`, which wraps the wait in a task of its own.
        budget = self.timeout()
        with database_errors():
            try:
                async with asyncio.timeout(budget):
                    return await self.pool.acquire()
            except TimeoutError:
                if self._bound_by_caller(budget):
                    raise deadline_exceeded() from None
                raise

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        raw = await self._acquire()
        try:
            yield Connection(raw, self)
        finally:
            await self._release(raw)

    async def _release(self, raw: asyncpg.Connection) -> None:
        """Give the connection back; the pool resets it first (one round trip), within what is
        left of the caller's time (of the database timeout, for a statement run on its own). If
        that fails, asyncpg closes the connection and the pool opens another when needed; the
        caller, whose statements all succeeded, is not told. (A connection closed after a
        timeout has gone back to the pool already: a no-op.)"""
        left = max(request_context.remaining(self._timeout), MIN_RELEASE_SECONDS)
        try:
            await self.pool.release(raw, timeout=left)
        except Exception as exc:
            log.warning("connection closed instead of reused: %s", exc.__class__.__name__)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connection() as conn:
            transaction = conn.raw.transaction()
            await conn.bounded(transaction.start)
            try:
                yield conn
            except BaseException:
                await conn.roll_back(transaction)
                raise
            await conn.bounded(transaction.commit)

    async def _one(self, run: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """One statement on a connection of its own: the login path's shape, kept lean (one
        task, one acquisition, one timer for the statement, one for the caller's deadline).

        The caller only waits for a task that acquires, runs the statement and gives the
        connection back, bounded by the database timeout alone. When the caller's deadline
        passes or the call is cancelled, that task runs on and the connection goes back to the
        pool: neither a connection being opened by the pool nor one mid-statement is closed
        (asyncpg's own cancel would even open one more, to send PostgreSQL a cancel request),
        within the MAX_ORPHANS bound of `_abandon`."""
        self.timeout()  # a (nearly) spent deadline: DEADLINE_EXCEEDED, the pool untouched
        end = request_context.deadline.get()
        acquired = asyncio.Event()
        work = asyncio.create_task(self._on_own_time(run, end, acquired))
        self._running.add(work)
        work.add_done_callback(self._ended)
        try:
            if end is None:
                return await asyncio.shield(work)
            async with asyncio.timeout(end - time.monotonic()):
                return await asyncio.shield(work)
        except TimeoutError:
            self._abandon(work, acquired)
            raise deadline_exceeded() from None
        except asyncio.CancelledError:
            self._abandon(work, acquired)
            raise

    def _abandon(self, work: asyncio.Task[Any], acquired: asyncio.Event) -> None:
        """Its caller stops waiting for `work`, which runs on (its end reported by `_abandoned`),
        unless MAX_ORPHANS others do already and it is still waiting for a connection: then it
        stops waiting (a connection the pool was opening for it is closed: under a flood of
        short deadlines only, and at most the pool's size of them)."""
        if len(self._orphans) >= MAX_ORPHANS and not acquired.is_set():
            work.cancel()
        self._orphans.add(work)
        work.add_done_callback(self._orphans.discard)
        work.add_done_callback(_abandoned)

    async def _on_own_time(
        self,
        run: Callable[[asyncpg.Connection], Awaitable[T]],
        end: float | None,
        acquired: asyncio.Event,
    ) -> T:
        # The task's own copy of the context: the database timeout alone bounds what follows.
        request_context.deadline.set(None)
        raw = await self._acquire()
        acquired.set()
        try:
            if end is not None and time.monotonic() >= end:
                raise deadline_exceeded()  # its caller has gone: not worth a statement
            return await Connection(raw, self).bounded(lambda: run(raw))
        finally:
            await self._release(raw)

    def _ended(self, statement: asyncio.Task[Any]) -> None:
        self._running.discard(statement)
        if not statement.cancelled():
            statement.exception()  # retrieved, so asyncio does not report it if no one waits

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._one(lambda raw: raw.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self._one(lambda raw: raw.fetchrow(sql, *args))

    async def execute(self, sql: str, *args: Any) -> str:
        return await self._one(lambda raw: raw.execute(sql, *args))


def _abandoned(statement: asyncio.Task[Any]) -> None:
    """The end of a statement whose caller stopped waiting: a database failure was logged by
    `database_errors`; a bug, which would otherwise reach no one, is logged here."""
    if statement.cancelled():
        return
    exc = statement.exception()
    if exc is not None and not isinstance(exc, (AuthError, UniqueViolation)):
        log.error("statement failed after its caller had gone", exc_info=exc)


class Connection:
    """One acquired connection; every statement gets the deadline-bounded timeout."""

    def __init__(self, raw: asyncpg.Connection, db: Database) -> None:
        self.raw = raw
        self._db = db
        # Set when we close it: asyncpg hands a closed connection back to the pool at once,
        # and its proxy then refuses every call, is_closed() included.
        self._terminated = False

    async def bounded(self, statement: Callable[[], Awaitable[T]]) -> T:
        """Run `statement()` within the caller's time; when that runs out (or the call is
        cancelled), close the connection rather than wait for PostgreSQL to acknowledge a
        cancel it may never read. (A transaction's connection is closed on the caller's
        deadline too: its rollback and release would have to wait for the statement. Only
        `_one`, the anonymous callers' path, keeps its connection.)"""
        budget = self._db.timeout()
        with database_errors():
            try:
                async with asyncio.timeout(budget):
                    return await statement()
            except (TimeoutError, asyncio.CancelledError) as exc:
                self._terminated = True
                self.raw.terminate()
                if isinstance(exc, TimeoutError) and self._db._bound_by_caller(budget):
                    raise deadline_exceeded() from None
                raise
            except Exception as exc:
                if is_stale_connection(exc):
                    self._terminated = True
                    self.raw.terminate()
                raise

    async def roll_back(self, transaction: Any) -> None:
        """End a failed transaction: roll back if the connection is still usable, else it is
        closed already and PostgreSQL rolls back on its own. The original error is what the
        caller needs, so a failure here is only logged."""
        if self._terminated:
            return
        try:
            await self.bounded(transaction.rollback)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("rollback failed: %s", exc.__class__.__name__)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.bounded(lambda: self.raw.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.bounded(lambda: self.raw.fetchrow(sql, *args))

    async def execute(self, sql: str, *args: Any) -> str:
        return await self.bounded(lambda: self.raw.execute(sql, *args))
