"""Shutdown: in-flight REST calls get their answer within the grace, and a 503 after it, never a
connection closed with no answer."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import pytest
from authsvc.v1 import token_service_pb2

from service.gateway.dispatch import ChannelDispatcher, InProcessDispatcher
from service.http_server import serving_gateway


class SlowTokens:
    """A TokenService whose VerifyToken takes `seconds`, noting when it starts and whether it
    was cancelled."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = asyncio.Event()
        self.cancelled = False

    async def VerifyToken(
        self, request: token_service_pb2.VerifyTokenRequest, context: Any
    ) -> token_service_pb2.VerifyTokenResponse:
        self.started.set()
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return token_service_pb2.VerifyTokenResponse(active=True)


async def shut_down_during_call(tokens: SlowTokens, grace: float) -> tuple[int, Any, float]:
    """POST /v1/tokens:verify, stop the gateway once the call has started; the answer, its body
    and the seconds from the stop to the answer."""
    dispatcher = InProcessDispatcher({"authsvc.v1.TokenService": tokens})
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def serve() -> None:
        async with serving_gateway(dispatcher, "127.0.0.1:0", shutdown_timeout=grace) as bound:
            port.set_result(bound)
            await stop.wait()

    server = asyncio.create_task(serve())
    url = f"http://127.0.0.1:{await port}/v1/tokens:verify"
    async with aiohttp.ClientSession() as session:
        call = asyncio.create_task(session.post(url, json={"token": "t"}))
        await tokens.started.wait()
        stopped = time.monotonic()
        stop.set()
        async with await call as reply:
            answered = time.monotonic() - stopped
            body = await reply.json()
            status = reply.status
    await server
    return status, body, answered


async def test_call_outliving_the_grace_is_answered_503() -> None:
    """A call still running when the grace ends is cancelled and answered a JSON 503 at the
    grace, not a closed connection after twice the grace (aiohttp waits for the handler twice)."""
    tokens = SlowTokens(30.0)
    status, body, answered = await shut_down_during_call(tokens, grace=1.0)
    assert status == 503
    assert body == {
        "error_code": "unavailable",
        "message": "the service is shutting down; try again",
    }
    assert tokens.cancelled
    assert 0.9 <= answered < 2.0  # aiohttp alone closes the connection at twice the grace


async def test_call_within_the_grace_gets_its_answer() -> None:
    """A call that ends within the grace is answered as usual while the gateway drains."""
    tokens = SlowTokens(0.3)
    status, body, _ = await shut_down_during_call(tokens, grace=2.0)
    assert status == 200
    assert body["active"] is True
    assert not tokens.cancelled


@pytest.mark.parametrize("grace", [0.01, 1.0])
async def test_a_body_still_arriving_at_the_grace_is_answered_503_cleanly(
    dead_target: str, caplog: pytest.LogCaptureFixture, grace: float
) -> None:
    """A request whose body is still on its way when the grace ends is answered the JSON 503
    at the grace, and aiohttp logs no error (it did when the answer came in the very turn its
    own wait ended)."""
    caplog.set_level(logging.WARNING)
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def serve() -> None:
        dispatcher = ChannelDispatcher(dead_target)
        async with serving_gateway(dispatcher, "127.0.0.1:0", shutdown_timeout=grace) as bound:
            port.set_result(bound)
            await stop.wait()

    server = asyncio.create_task(serve())
    reader, writer = await asyncio.open_connection("127.0.0.1", await port)
    writer.write(
        b"POST /v1/users/authorize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 20\r\n\r\n{"ttl":'
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    stop.set()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await server
    assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]
    assert b"shutting down" in answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
