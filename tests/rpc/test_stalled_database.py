"""A stalled database (PostgreSQL frozen with SIGSTOP, as a hung host or a network partition
looks) costs a caller at most the database timeout, or its deadline if shorter: the answer is
UNAVAILABLE (503 over REST), or DEADLINE_EXCEEDED when the caller's deadline comes first;
nothing is logged as an unhandled task, and once the database resumes the service works again.
The server here is a dedicated embedded PostgreSQL, so that freezing it stops no other test."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import grpc
import pytest
from authsvc.v1 import token_service_pb2, token_service_pb2_grpc

from service import app, request_context
from service.config import Settings
from service.embedded_postgres import EmbeddedPostgres
from service.errors import AuthError, Reason
from service.http_server import serving_gateway
from service.store.db import Database, create_pool
from tests.support import authorize, error_info, new_user

DB_TIMEOUT = 2.0
# What a call may take beyond the database timeout: the answer's own way back, on a loaded
# machine. The fault made it a whole second timeout (4 s here).
SLACK = 0.6


@dataclass
class Stack:
    pg: EmbeddedPostgres
    channel: grpc.aio.Channel
    services: app.Services
    target: str
    settings: Settings


@pytest.fixture(scope="module")
async def stack(tmp_path_factory, settings) -> AsyncIterator[Stack]:
    """A server on its own embedded PostgreSQL with a 2 s database timeout."""
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("stalled") / "data")
    dsn = await asyncio.to_thread(pg.start)
    configured = replace(settings, database_url=dsn, db_timeout=DB_TIMEOUT, grpc_addr="127.0.0.1:0")
    try:
        async with app.open_database(configured) as db, app.open_services(db, configured) as svc:
            await svc.keys.load()
            server, port = app.grpc_server(svc, configured)
            await server.start()
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    yield Stack(pg, channel, svc, f"127.0.0.1:{port}", configured)
            finally:
                await server.stop(None)
    finally:
        await asyncio.to_thread(pg.stop)


def postgres_processes(cluster: Path) -> list[int]:
    """The postmaster and its children (the backends and background workers)."""
    postmaster = int((cluster / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


@contextmanager
def frozen(pg: EmbeddedPostgres) -> Iterator[None]:
    """PostgreSQL stopped in its tracks (SIGSTOP) until the block ends. A process that ends
    meanwhile (a backend whose client was killed) is no longer there to stop or resume."""
    pids = postgres_processes(pg.cluster_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def timed(call) -> tuple[float, grpc.aio.AioRpcError | None]:
    started = time.monotonic()
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return time.monotonic() - started, error
    return time.monotonic() - started, None


def verify(channel, token: str, **kwargs):
    stub = token_service_pb2_grpc.TokenServiceStub(channel)
    return stub.VerifyToken(token_service_pb2.VerifyTokenRequest(token=token), **kwargs)


async def test_calls_answer_unavailable_within_the_database_timeout(stack: Stack) -> None:
    """With the database frozen, a login and a token check each answer UNAVAILABLE (reason
    UNAVAILABLE) within the 2 s database timeout, not twice that."""
    user = await new_user(stack.services, "pw")
    token = (await authorize(stack.channel, user.username, "pw")).access_token
    with frozen(stack.pg):
        results = await asyncio.gather(
            timed(authorize(stack.channel, user.username, "pw")),
            timed(verify(stack.channel, token)),
        )
    for elapsed, error in results:
        assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE, error
        assert error_info(error).reason == "UNAVAILABLE"
        assert elapsed < DB_TIMEOUT + SLACK, elapsed


async def test_a_shorter_deadline_gets_deadline_exceeded_before_it_passes(stack: Stack) -> None:
    """A caller whose deadline (1 s) is shorter than the database timeout hears, before it
    passes, that its deadline ran out (DEADLINE_EXCEEDED, reason DEADLINE_EXCEEDED): not
    UNAVAILABLE, since a database that has not answered within a caller's deadline is not known
    to be down (with a 1 ms deadline any healthy one would be called down)."""
    user = await new_user(stack.services, "pw")
    token = (await authorize(stack.channel, user.username, "pw")).access_token
    with frozen(stack.pg):
        elapsed, error = await timed(verify(stack.channel, token, timeout=1.0))
    assert error is not None and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
    assert error_info(error).reason == "DEADLINE_EXCEEDED"
    assert elapsed < 1.0


@contextlib.asynccontextmanager
async def one_connection(stack: Stack) -> AsyncIterator[Database]:
    """A Database of one connection on the stalled server: the one every statement uses."""
    pool = await create_pool(stack.settings.database_url, 1, 1, DB_TIMEOUT)
    try:
        yield Database(pool, DB_TIMEOUT)
    finally:
        await pool.close()


async def backend_pid(db) -> int:
    row = await db.fetchrow("SELECT pg_backend_pid()")
    return row[0]


async def backend_alive(db, pid: int) -> bool:
    return await db.fetchrow("SELECT 1 FROM pg_stat_activity WHERE pid = $1", pid) is not None


async def test_a_stalled_statement_is_closed_on_the_database_timeout(stack: Stack) -> None:
    """With no shorter deadline, a statement the stalled database does not answer is UNAVAILABLE
    within the database timeout, and its connection is closed (its backend ends once resumed)."""
    async with one_connection(stack) as db:
        pid = await backend_pid(db)
        with frozen(stack.pg):
            started = time.monotonic()
            with pytest.raises(AuthError) as caught:
                await db.fetchrow("SELECT pg_backend_pid()")
            assert time.monotonic() - started < DB_TIMEOUT + SLACK
        assert caught.value.reason == Reason.UNAVAILABLE
        for _ in range(50):
            if not await backend_alive(db, pid):
                break
            await asyncio.sleep(0.1)
        assert not await backend_alive(db, pid)


async def test_a_stalled_statement_outlives_a_shorter_caller_deadline(stack: Stack) -> None:
    """A caller whose deadline passes while the stalled database has its statement is answered
    DEADLINE_EXCEEDED at that deadline; the connection is not closed: once the database resumes
    the statement ends and the same connection serves the next one."""
    async with one_connection(stack) as db:
        pid = await backend_pid(db)
        with frozen(stack.pg):
            token = request_context.deadline.set(time.monotonic() + 0.5)
            try:
                started = time.monotonic()
                with pytest.raises(AuthError) as caught:
                    await db.fetchrow("SELECT pg_backend_pid()")
            finally:
                request_context.deadline.reset(token)
            assert time.monotonic() - started < 0.5 + SLACK
        assert caught.value.reason == Reason.DEADLINE_EXCEEDED
        # The one connection: this waits for the abandoned statement to give it back.
        assert await backend_pid(db) == pid


async def test_service_works_again_after_the_database_resumes(stack: Stack) -> None:
    """Calls that failed while the database was frozen succeed again once it resumes."""
    user = await new_user(stack.services, "pw")
    with frozen(stack.pg):
        _, error = await timed(authorize(stack.channel, user.username, "pw"))
        assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    token = (await authorize(stack.channel, user.username, "pw")).access_token
    assert (await verify(stack.channel, token)).active


async def test_no_task_exception_is_left_unretrieved(stack: Stack, caplog) -> None:
    """A stall, with calls that wait it out and calls whose deadline cancels them, leaves
    nothing for asyncio to report ("Task exception was never retrieved") and no traceback."""
    caplog.set_level(logging.INFO)
    user = await new_user(stack.services, "pw")
    token = (await authorize(stack.channel, user.username, "pw")).access_token
    with frozen(stack.pg):
        await asyncio.gather(
            *(timed(verify(stack.channel, token)) for _ in range(4)),
            *(timed(verify(stack.channel, token, timeout=0.5 + i / 4)) for i in range(4)),
            timed(authorize(stack.channel, user.username, "pw")),
        )
    assert (await verify(stack.channel, token)).active
    await asyncio.sleep(0.5)  # let any background clean-up finish, then collect it
    gc.collect()
    await asyncio.sleep(0)
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not noisy, [r.getMessage() for r in noisy]


async def test_rest_answers_503_not_504(stack: Stack) -> None:
    """Over REST (a gateway whose deadline, 3 s, exceeds the database timeout), a frozen
    database answers 503 with the service's JSON error, within the database timeout."""
    user = await new_user(stack.services, "pw")
    token = (await authorize(stack.channel, user.username, "pw")).access_token
    async with (
        serving_gateway(
            app.in_process_gateway(app.build_servicers(stack.services, stack.settings)),
            "127.0.0.1:0",
            shutdown_timeout=1.0,
            timeout=3.0,
        ) as port,
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        async with http.post("/v1/tokens:verify", json={"token": token}) as response:
            assert response.status == 200 and (await response.json())["active"]
        with frozen(stack.pg):
            started = time.monotonic()
            async with http.post("/v1/tokens:verify", json={"token": token}) as response:
                elapsed = time.monotonic() - started
                status, body = response.status, await response.json()
    assert status == 503, body
    assert body["error_code"] == "unavailable"
    assert elapsed < DB_TIMEOUT + SLACK


async def test_a_transaction_stalled_midway_is_unavailable(stack: Stack) -> None:
    """A transaction whose database stalls after its first statement ends in UNAVAILABLE within
    the database timeout (not INTERNAL), and the next transaction commits once it resumes."""
    db = stack.services.db
    started = time.monotonic()
    with pytest.raises(AuthError) as caught:
        async with db.transaction() as conn:
            await conn.execute("SELECT 1")
            with frozen(stack.pg):
                started = time.monotonic()
                await conn.execute("SELECT 2")
    assert caught.value.reason == Reason.UNAVAILABLE
    assert time.monotonic() - started < DB_TIMEOUT + SLACK
    async with db.transaction() as conn:
        assert await conn.fetchrow("SELECT 3") is not None
