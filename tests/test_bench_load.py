"""The benchmark's compiled load generator (bench/loadgen, driven by bench/goload.py) labels
calls as the Python one does, and its CPU is counted as the client's."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bench.goload import GoCall, GoLoad, add_client_cpu
from bench.load import CpuMeter

needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="Go is not installed")


@pytest.fixture
async def http_server() -> AsyncIterator[str]:
    """`POST /login` answers 200 with a token to `Authorization: right`, 401 otherwise;
    `POST /echo` answers the JSON body it was sent."""

    async def login(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "right":
            return web.json_response({"error_code": "invalid_credentials"}, status=401)
        return web.json_response({"access_token": "a token"})

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await request.json())

    app = web.Application()
    app.router.add_post("/login", login)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def generator(tmp_path_factory: pytest.TempPathFactory) -> GoLoad:
    go, note = await GoLoad.build(tmp_path_factory.mktemp("loadgen"))
    assert go is not None, note
    return go


def meter() -> CpuMeter:
    return CpuMeter(os.getpid(), os.getpid())


@needs_go
async def test_closed_loop_labels_each_reply_by_its_status(
    generator: GoLoad, http_server: str
) -> None:
    """Headers are used in turn: the right one's calls are OK, the wrong one's 'HTTP 401'."""
    call = GoCall(
        "http", http_server, "POST", path="/login", expect="access_token",
        authorization=("right", "wrong"),
    )  # fmt: skip
    result = await generator.closed_loop(call, 2, 0.5, meter())
    assert set(result["errors"]) == {"HTTP 401"}
    assert result["ok"] > 0 and abs(result["ok"] - result["errors"]["HTTP 401"]) <= 2
    assert result["load"] == "go" and result["generator_cpu_s"] > 0


@needs_go
async def test_a_reply_without_the_expected_member_is_not_ok(
    generator: GoLoad, http_server: str
) -> None:
    """A 200 whose JSON lacks the expected truthy member is 'HTTP 200 unexpected body'."""
    call = GoCall(
        "http", http_server, "POST", path="/echo", expect="active",
        bodies=(json.dumps({"active": False}),),
    )  # fmt: skip
    result = await generator.closed_loop(call, 1, 0.3, meter())
    assert result["ok"] == 0 and set(result["errors"]) == {"HTTP 200 unexpected body"}


@needs_go
async def test_open_loop_with_a_deadline_labels_a_refused_connection(
    generator: GoLoad, tmp_path: Path
) -> None:
    """Nothing listening: every call of the open loop is a connection error, none is lost."""
    call = GoCall("http", "http://127.0.0.1:9", "POST", path="/login", expect="access_token")
    result = await generator.open_loop(call, 20, 0.5, 1.0, meter())
    assert result["requests"] == 10 and result["ok"] == 0
    assert all(label.startswith("connection error") for label in result["errors"])


def test_generator_cpu_counts_as_the_clients_not_as_others() -> None:
    """The generator's CPU moves from 'others' (a process the meter does not watch) to the
    client, and the shares follow."""
    cpu = {
        "elapsed_s": 1.0, "server_cpu_s": 1.0, "client_cpu_s": 0.1, "postgres_cpu_s": 0.1,
        "machine_cpu_s": 1.6, "others_cpu_s": 0.4, "client_share": 0.05, "others_share": 0.2,
    }  # fmt: skip
    out = add_client_cpu(cpu, 0.3)
    assert out["client_cpu_s"] == pytest.approx(0.4)
    assert out["others_cpu_s"] == pytest.approx(0.1)
    cores = os.cpu_count() or 1
    assert out["client_share"] == pytest.approx(0.4 / cores)
