"""The gateway's HTTP edges: HEAD, oversized bodies, clients that go away."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from service import app
from service.config import Settings
from service.http_server import serving_gateway
from service.store.db import Database
from tests.support import new_user


@pytest.mark.parametrize("path", ["/.well-known/jwks.json", "/healthz", "/readyz"])
async def test_head_works_where_get_does(http: aiohttp.ClientSession, path: str) -> None:
    """HEAD on a GET route answers as GET does (RFC 9110 9.3.2), with no body."""
    async with http.get(path) as get:
        assert get.status == 200
        cache_control = get.headers["Cache-Control"]
    async with http.head(path) as head:
        assert head.status == 200
        assert head.headers["Content-Type"].startswith("application/json")
        assert head.headers["Cache-Control"] == cache_control
        assert head.headers["X-Request-Id"]
        assert await head.read() == b""


async def test_head_is_not_allowed_where_get_is_not(http: aiohttp.ClientSession) -> None:
    """HEAD on a POST-only route is 405, and GET routes list HEAD in Allow."""
    async with http.head("/v1/users/authorize") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
    async with http.post("/.well-known/jwks.json") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"


async def raw_request(url: str, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the gateway at `url` that has sent `head` (request line and headers)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(head)
    await writer.drain()
    return reader, writer


async def test_413_closes_the_connection_instead_of_reading_on(gateway_url: str) -> None:
    """A chunked body that never ends gets 413 (Connection: close) and the connection closed
    within a second or two: the server does not go on reading what it refused."""
    reader, writer = await raw_request(
        gateway_url,
        b"POST /v1/users/authorize HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    chunk = b"4000\r\n" + b"u" * 0x4000 + b"\r\n"

    async def send_for_ever() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(chunk)
                await writer.drain()

    async def read_until_closed() -> bytes:
        answer = b""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                answer += data
        return answer

    sender = asyncio.create_task(send_for_ever())
    started = time.monotonic()
    try:
        answer = await asyncio.wait_for(read_until_closed(), 30)
    finally:
        sender.cancel()
        writer.close()
    assert time.monotonic() - started < 3
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in answer


async def test_a_body_that_stalls_is_408_within_the_calls_deadline(gateway_url: str) -> None:
    """A body announced as 100 bytes of which 7 come is answered 408 (JSON, Connection: close)
    once the call's deadline (here a 1 s Grpc-Timeout) has passed: it does not hold the
    connection until the client gives up."""
    reader, writer = await raw_request(
        gateway_url,
        b"POST /v1/users/authorize HTTP/1.1\r\nHost: x\r\nGrpc-Timeout: 1S\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        b'{"user',
    )
    started = time.monotonic()
    try:
        answer = await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
    assert 0.9 < time.monotonic() - started < 5
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close" in answer and b'"error_code": "request_timeout"' in answer


async def test_a_body_sent_slowly_within_the_deadline_is_served(gateway_url: str) -> None:
    """The other side of the 408: a body that arrives in parts, all within the call's deadline,
    is read and answered (here 401: no such user), not cut off."""
    body = b'{"username": "nobody-slow", "password": "not it 1"}'
    reader, writer = await raw_request(
        gateway_url,
        b"POST /v1/users/authorize HTTP/1.1\r\nHost: x\r\nGrpc-Timeout: 5S\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:10],
    )
    try:
        await asyncio.sleep(0.5)
        writer.write(body[10:])
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401 ")


async def test_client_gone_mid_body_is_not_an_unexpected_error(
    gateway_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that disconnects in the middle of its body is one info line, not an error with a
    traceback; its call is cancelled (as gRPC cancels one), so no access-log line says 500."""
    caplog.set_level(logging.INFO)
    _, writer = await raw_request(
        gateway_url,
        b"POST /v1/users/authorize HTTP/1.1\r\nHost: x\r\nX-Request-Id: gone-1\r\n"
        b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"ttl": ',
    )
    await asyncio.sleep(0.2)
    writer.close()
    for _ in range(50):
        if any(r.name.startswith("service.") for r in caplog.records):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    gone = [r for r in caplog.records if r.name.startswith("service.")]
    assert len(gone) == 1 and gone[0].levelno == logging.INFO
    assert "gone-1" in gone[0].getMessage()
    access = [r for r in caplog.records if r.name == "authsvc.access"]
    assert not [r for r in access if getattr(r, "status", None) == "500"]


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"Authorization: Basic " + b"QUxBRERJTjpPUEVOU0VTQU1F" * 500 + b"\r\n", 431),
        (b"X-Filler: " + b"f" * 20000 + b"\r\n", 431),
        (b"Bad Header Name: x\r\n", 400),
    ],
    ids=["long-authorization", "long-header", "malformed-header"],
)
async def test_header_errors_are_one_json_4xx_with_no_echo(
    gateway_url: str, caplog: pytest.LogCaptureFixture, head: bytes, status: int
) -> None:
    """An oversized or malformed header is one JSON 4xx (431 when too large) that echoes
    nothing of the request, logged as one access line with a request id and no traceback."""
    caplog.set_level(logging.INFO)
    reader, writer = await raw_request(
        gateway_url,
        b"POST /v1/users/authorize HTTP/1.1\r\nHost: x\r\n" + head + b"Content-Length: 0\r\n\r\n",
    )
    try:
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == str(status).encode()
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"application/json" in headers.lower()
    assert json.loads(body)["error_code"]
    assert b"QUxBRERJTjpPUEVOU0VTQU1F" not in answer and b"f" * 40 not in answer
    assert b"Bad Header" not in body
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    for _ in range(50):  # the access line is written once the answer has gone
        if [r for r in caplog.records if r.name == "authsvc.access"]:
            break
        await asyncio.sleep(0.02)
    ours = ("authsvc.access", "service.http_server", "service.gateway.mux")
    (line,) = [r for r in caplog.records if r.name in ours]
    assert line.name == "authsvc.access" and line.exc_info is None
    assert getattr(line, "status", None) == str(status) and getattr(line, "request_id", "")
    assert "QUxBRERJTjpPUEVOU0VTQU1F" not in line.getMessage()


@pytest.fixture
async def quick_header_gateway(services: app.Services, settings: Settings) -> AsyncIterator[str]:
    """A gateway that waits 0.5 s for a request's headers."""
    dispatcher = app.in_process_gateway(app.build_servicers(services, settings))
    async with serving_gateway(
        dispatcher, "127.0.0.1:0", shutdown_timeout=1.0, header_timeout=0.5
    ) as port:
        yield f"http://127.0.0.1:{port}"


async def test_slow_headers_are_cut_off(quick_header_gateway: str) -> None:
    """Headers trickled in for longer than the header timeout (slowloris): the connection is
    closed without an answer."""
    reader, writer = await raw_request(quick_header_gateway, b"GET /healthz HTTP/1.1\r\n")
    started = time.monotonic()

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for i in range(100):
                writer.write(f"X-Slow-{i}: x\r\n".encode())
                await writer.drain()
                await asyncio.sleep(0.1)

    sender = asyncio.create_task(trickle())
    try:
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        sender.cancel()
        writer.close()
    assert time.monotonic() - started < 3


async def test_headers_in_time_and_idle_keep_alive_are_served(quick_header_gateway: str) -> None:
    """Headers sent in two parts within the timeout are served; a kept-alive connection idle
    longer than the header timeout still serves its next request."""
    reader, writer = await raw_request(quick_header_gateway, b"GET /healthz HTTP/1.1\r\n")
    try:
        await asyncio.sleep(0.2)
        for _ in range(2):
            writer.write(b"Host: x\r\n\r\n")
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 5)
            assert status.startswith(b"HTTP/1.1 200 ")
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            await asyncio.wait_for(reader.readuntil(b"}"), 5)
            await asyncio.sleep(1.0)  # idle, longer than the header timeout
            writer.write(b"GET /healthz HTTP/1.1\r\n")
    finally:
        writer.close()


def login_request(payload: bytes) -> bytes:
    return (
        b"POST /v1/users/authorize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
    )


async def test_a_client_that_hangs_up_takes_its_queued_login_with_it(
    gateway_url: str, services: app.Services, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A REST login whose client hangs up while its check waits for a hashing worker is dropped
    unchecked and uncounted; the logins that were hashing finish and are recorded."""
    from service.domain import passwords

    release = threading.Event()
    real = passwords.hash_secret
    started: list[bytes] = []

    def held(secret: bytes, *args: object) -> bytes:
        started.append(secret)
        release.wait(10)
        return real(secret, *args)

    user = await new_user(services, "hang-up-pw")
    name = user.username.encode()
    monkeypatch.setattr(passwords, "hash_secret", held)
    body = b'{"username": "%s", "password": "wrong-%d"}'
    busy = []
    for i in range(2):  # hold both workers
        busy.append(await raw_request(gateway_url, login_request(body % (name, i))))
    for _ in range(100):
        if len(started) == 2:
            break
        await asyncio.sleep(0.02)
    _, quitter = await raw_request(gateway_url, login_request(body % (name, 9)))
    await asyncio.sleep(0.3)  # queued behind the two
    quitter.close()
    await asyncio.sleep(0.3)
    release.set()
    for reader, writer in busy:
        assert b" 401 " in await asyncio.wait_for(reader.readline(), 10)
        writer.close()
    await asyncio.sleep(0.3)
    assert len(started) == 2 and not [s for s in started if s.endswith(b"wrong-9")]
    row = await db.fetchrow(
        "SELECT failures FROM login_throttle WHERE username_key = $1", user.username.casefold()
    )
    assert row is not None and row["failures"] == 2


async def test_grpc_timeout_header_sets_the_calls_deadline(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """A REST client may shorten its call's deadline with grpc-gateway's `Grpc-Timeout` header:
    ample time logs in, a nanosecond runs out (504 or 503, never a token), and a malformed value
    is a JSON 400."""
    user = await new_user(services, "deadline-pw")
    body = {"username": user.username, "password": "deadline-pw"}
    async with http.post("/v1/users/authorize", json=body, headers={"Grpc-Timeout": "5S"}) as r:
        assert r.status == 200 and "access_token" in await r.json()
    async with http.post("/v1/users/authorize", json=body, headers={"Grpc-Timeout": "1n"}) as r:
        assert r.status in (503, 504), await r.text()
        assert "access_token" not in await r.json()
    for bad in ("soon", "5", "123456789S", "-1S"):
        async with http.post("/v1/users/authorize", json=body, headers={"Grpc-Timeout": bad}) as r:
            assert r.status == 400
            assert (await r.json())["error_code"] == "invalid_argument"


async def test_a_deadline_that_runs_out_reads_the_same_whoever_notices(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """A deadline met in the gateway's hop and one met by the store waiting on the database are
    one 504 to the client, with one message."""
    user = await new_user(services, "deadline-pw")
    body = {"username": user.username, "password": "deadline-pw"}
    messages = set()
    for timeout in ("1n", "1u", "100u", "1m", "2m", "5m") * 3:
        headers = {"Grpc-Timeout": timeout}
        async with http.post("/v1/users/authorize", json=body, headers=headers) as r:
            if r.status == 504:
                messages.add((await r.json())["message"])
    assert messages == {"the service did not answer in time"}


@pytest.mark.parametrize(
    ("encoding", "body"),
    [("gzip", b"abcd"), ("deflate", b"abcd"), ("br", b"abcd"), ("gzip", gzip.compress(b"{}"))],
    ids=["bad-gzip", "bad-deflate", "br", "gzip"],
)
async def test_a_compressed_body_is_415_unread(
    gateway_url: str, caplog: pytest.LogCaptureFixture, encoding: str, body: bytes
) -> None:
    """A body under any Content-Encoding, decodable or not, sent after the head, is a JSON 415
    at once: not a 500 (bad gzip), not a wait for the deadline (bad deflate), and no error in
    the log when aiohttp drains the unread rest."""
    caplog.set_level(logging.WARNING)
    reader, writer = await raw_request(
        gateway_url,
        b"POST /v1/users/authorize HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Encoding: "
        + encoding.encode()
        + b"\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode(),
    )
    started = time.monotonic()
    try:
        await asyncio.sleep(0.2)
        writer.write(body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 415 "), answer[:80]
    assert b'"error_code": "unsupported_media_type"' in answer and b"Connection: close" in answer
    assert time.monotonic() - started < 3
    await asyncio.sleep(0.1)  # the drain of the rest
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_compressed_body_on_a_bodiless_route_is_ignored(
    gateway_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A route that takes no body ignores one, compressed or not, undecodable too: the JWKS
    is served and nothing is logged as an error."""
    caplog.set_level(logging.WARNING)
    reader, writer = await raw_request(
        gateway_url,
        b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: 7\r\n\r\ngarbage",
    )
    try:
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_identity_content_encoding_is_read(http: aiohttp.ClientSession) -> None:
    """The other side: `Content-Encoding: identity` is no encoding; the body is read (401)."""
    body = json.dumps({"username": "nobody-identity", "password": "not it 1"})
    headers = {"Content-Type": "application/json", "Content-Encoding": "identity"}
    async with http.post("/v1/users/authorize", data=body, headers=headers) as response:
        assert response.status == 401


async def test_a_connection_that_sends_nothing_is_closed(quick_header_gateway: str) -> None:
    """A connection opened and left silent is closed after the header timeout, as one that
    trickles its head is: idle sockets cannot pile up."""
    reader, writer = await raw_request(quick_header_gateway, b"")
    started = time.monotonic()
    try:
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (
            b"POST /v1/users/authorize HTTP/1.1\r\nHost: x\r\nExpect: banana\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            417,
        ),
    ],
    ids=["connect", "options-star", "expect"],
)
async def test_what_aiohttp_refuses_is_answered_in_json(
    gateway_url: str, head: bytes, status: int
) -> None:
    """Requests refused before the gateway's handler (no route can match them, an expectation
    nobody meets) still get a JSON error body with a request id."""
    reader, writer = await raw_request(gateway_url, head)
    try:
        status_line = await asyncio.wait_for(reader.readline(), 5)
        headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        body = await asyncio.wait_for(reader.readuntil(b"}"), 5)
    finally:
        writer.close()
    assert status_line.startswith(f"HTTP/1.1 {status} ".encode()), status_line
    assert b"application/json" in headers and b"X-Request-Id" in headers
    assert json.loads(body)["error_code"]


async def test_expect_100_continue_is_still_met(gateway_url: str) -> None:
    """The other side: `Expect: 100-continue` gets its interim 100, then the answer (401)."""
    body = b'{"username": "nobody-expect", "password": "not it 1"}'
    reader, writer = await raw_request(
        gateway_url,
        b"POST /v1/users/authorize HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Connection: close\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode(),
    )
    try:
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert answer.startswith(b"HTTP/1.1 401 ")
