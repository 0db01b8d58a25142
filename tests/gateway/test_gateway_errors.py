"""Gateway-level answers: 404, 405, 400, 413, 415, 503, 504, 500, request ids, metadata."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import grpc
import pytest
from authsvc.v1 import auth_service_pb2
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from service import app
from service.config import Settings
from service.errors import AuthError, Reason
from service.gateway.dispatch import ChannelDispatcher, rpc_failure
from service.gateway.errors import GatewayError, rpc_error_response
from service.gateway.mux import call_metadata
from service.gateway.routes import ErrorStyle, build_routes, service_files
from service.http_server import serving_gateway
from service.rpc.status import error_status
from tests.gateway.helpers import basic_auth, json_of
from tests.support import new_user

AUTHORIZE = "/v1/users/authorize"
PASSWORD = "/v1/users/password"
LIMIT = 64 * 1024


async def test_unknown_path_is_404(http: aiohttp.ClientSession) -> None:
    """A path no route matches is 404 not_found, JSON, with a request id."""
    async with http.get("/v1/nothing/here") as response:
        assert response.status == 404
        assert response.headers["X-Request-Id"]
        assert (await json_of(response))["error_code"] == "not_found"


async def test_trailing_slash_is_another_path(http: aiohttp.ClientSession) -> None:
    """/v1/users/authorize/ is not /v1/users/authorize: 404."""
    async with http.post(AUTHORIZE + "/") as response:
        assert response.status == 404


async def test_wrong_method_is_405_with_allow(http: aiohttp.ClientSession) -> None:
    """GET on the password path is 405 method_not_allowed with Allow listing its methods."""
    async with http.get(PASSWORD) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "DELETE, POST, PUT"
        assert (await json_of(response))["error_code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "malformed JSON"),
        (b'{"ttl": 1,}', "malformed JSON"),
        (b"[]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"42", "JSON object"),
        (b"null", "JSON object"),
        (b'{"usern": "x"}', "unknown field 'usern'"),
        (b'{"ttl": "60"}', "'ttl' must be an integer"),
        (b'{"ttl": 1.5}', "'ttl' must be an integer"),
        (b'{"ttl": true}', "'ttl' must be an integer"),
        (b'{"ttl": 4294967296}', "'ttl' must be between"),
        (b'{"ttl": null}', "must not be null"),
        (b'{"username": 7}', "'username' must be a string"),
        (b'{"username": "a", "username": "b"}', "appears twice"),
        (b'{"ttl": NaN}', "malformed JSON"),
        (b'{"username": "\\ud800"}', "not valid UTF-8"),
        (b'{"username": "\xff"}', "not UTF-8"),
        (b"[" * 20000, "malformed JSON"),
    ],
    ids=[
        "truncated",
        "trailing-comma",
        "array",
        "string",
        "number",
        "null",
        "unknown-field",
        "string-for-int",
        "fraction",
        "bool-for-int",
        "int32-overflow",
        "null-field",
        "number-for-string",
        "duplicate-key",
        "nan",
        "lone-surrogate",
        "invalid-utf8",
        "deep-nesting",
    ],
)
async def test_bad_json_is_400(http: aiohttp.ClientSession, body: bytes, fragment: str) -> None:
    """Each malformed, non-object, unknown-field or wrong-type body is 400 invalid_argument."""
    async with http.post(
        AUTHORIZE, data=body, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 400
        reply = await json_of(response)
    assert reply["error_code"] == "invalid_argument"
    assert fragment in reply["message"]
    assert "Traceback" not in reply["message"]


async def test_body_over_limit_by_content_length_is_413(http: aiohttp.ClientSession) -> None:
    """A declared Content-Length over 64 KiB is 413 payload_too_large."""
    body = b'{"username": "' + b"u" * LIMIT + b'"}'
    async with http.post(
        AUTHORIZE, data=body, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 413
        assert (await json_of(response))["error_code"] == "payload_too_large"


async def test_chunked_body_over_limit_is_413(http: aiohttp.ClientSession) -> None:
    """A chunked body with no Content-Length is cut off at 64 KiB: 413."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"username": "'
        for _ in range(20):
            yield b"u" * 4096
        yield b'"}'

    async with http.post(
        AUTHORIZE, data=chunks(), headers={"Content-Type": "application/json"}
    ) as response:
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert response.status == 413
        assert (await json_of(response))["error_code"] == "payload_too_large"


async def test_body_at_the_limit_is_read(http: aiohttp.ClientSession) -> None:
    """A body of exactly 64 KiB is read and handed on (the servicer then refuses the password)."""
    prefix, suffix = b'{"username": "u", "password": "', b'"}'
    body = prefix + b"p" * (LIMIT - len(prefix) - len(suffix)) + suffix
    assert len(body) == LIMIT
    async with http.post(
        AUTHORIZE, data=body, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 400
        assert "4096" in (await json_of(response))["message"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
    ],
)
async def test_non_json_body_is_415(http: aiohttp.ClientSession, content_type: str) -> None:
    """A non-empty body that is not declared JSON (UTF-8) is 415 unsupported_media_type."""
    async with http.post(
        AUTHORIZE, data=b'{"ttl": 60}', headers={"Content-Type": content_type}
    ) as response:
        assert response.status == 415
        assert (await json_of(response))["error_code"] == "unsupported_media_type"


async def test_curl_style_form_body_is_415(http: aiohttp.ClientSession) -> None:
    """curl -d's default (form-urlencoded) is refused, not guessed at."""
    async with http.post(AUTHORIZE, data={"username": "u", "password": "p"}) as response:
        assert response.status == 415


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=UTF-8", "application/merge-patch+json", None],
)
async def test_json_content_types_are_accepted(
    http: aiohttp.ClientSession, services: app.Services, content_type: str | None
) -> None:
    """application/json (with or without UTF-8 charset), +json types, or none at all are JSON."""
    user = await new_user(services, "pw")
    headers = basic_auth(user.username, "pw")
    skip: list[str] = []
    if content_type is None:
        skip = ["Content-Type"]
    else:
        headers["Content-Type"] = content_type
    async with http.post(
        AUTHORIZE, data=b'{"ttl": 60}', headers=headers, skip_auto_headers=skip
    ) as response:
        assert response.request_info.headers.get("Content-Type") == content_type
        assert response.status == 200


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain"])
async def test_empty_body_with_any_content_type_is_fine(
    http: aiohttp.ClientSession, services: app.Services, content_type: str
) -> None:
    """An empty body is {} whatever its Content-Type (curl -X POST -u user:pw sends one)."""
    user = await new_user(services, "pw")
    headers = {**basic_auth(user.username, "pw"), "Content-Type": content_type}
    async with http.post(AUTHORIZE, data=b"", headers=headers) as response:
        assert response.status == 200


async def test_unreachable_grpc_server_is_503(dead_target: str) -> None:
    """With the gRPC server's port closed, a call is 503 unavailable, saying nothing internal."""
    async with (
        serving_gateway(
            ChannelDispatcher(dead_target), "127.0.0.1:0", shutdown_timeout=1.0
        ) as port,
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}{AUTHORIZE}", json={}) as response,
    ):
        assert response.status == 503
        assert response.headers["X-Request-Id"]
        body = await json_of(response)
    assert body["error_code"] == "unavailable"
    assert "127.0.0.1" not in body["message"] and dead_target not in body["message"]


async def test_unreachable_grpc_server_on_densify_is_status_503(dead_target: str) -> None:
    """The Densify route reports the same outage as {"status": 503, ...}."""
    async with (
        serving_gateway(
            ChannelDispatcher(dead_target), "127.0.0.1:0", shutdown_timeout=1.0
        ) as port,
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/authorize", json={"userName": "u", "pwd": "p"}
        ) as response,
    ):
        assert response.status == 503
        assert (await json_of(response))["status"] == 503


@pytest.fixture
async def hung_target() -> AsyncIterator[str]:
    """A loopback port that accepts connections and never answers (a hung server)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_deadline_is_504(hung_target: str) -> None:
    """A call that outlives the gateway's deadline is 504 deadline_exceeded."""
    async with (
        serving_gateway(
            ChannelDispatcher(hung_target), "127.0.0.1:0", timeout=0.3, shutdown_timeout=1.0
        ) as port,
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}{AUTHORIZE}", json={}) as response,
    ):
        assert response.status == 504
        assert (await json_of(response))["error_code"] == "deadline_exceeded"


class _Exploding:
    """A request class whose construction fails: an unexpected error inside the gateway."""

    DESCRIPTOR = auth_service_pb2.AuthorizeRequest.DESCRIPTOR
    SerializeToString = auth_service_pb2.AuthorizeRequest.SerializeToString

    def __init__(self) -> None:
        raise RuntimeError("boom: secret internals")


async def test_unexpected_error_is_500_and_logged(
    services: app.Services, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception inside the gateway is 500 internal with no detail, logged with the request
    id."""
    routes = [
        replace(r, request_class=_Exploding) if r.path == AUTHORIZE else r  # type: ignore[arg-type]
        for r in build_routes(service_files())
    ]
    caplog.set_level(logging.ERROR, logger="service.gateway.mux")
    async with (
        serving_gateway(
            app.in_process_gateway(app.build_servicers(services, settings)),
            "127.0.0.1:0",
            routes=routes,
            shutdown_timeout=1.0,
        ) as port,
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}{AUTHORIZE}", headers={"X-Request-Id": "rid-500"}
        ) as response,
    ):
        assert response.status == 500
        assert response.headers["X-Request-Id"] == "rid-500"
        assert await json_of(response) == {"error_code": "internal", "message": "internal error"}
    assert any("rid-500" in r.getMessage() and r.exc_info for r in caplog.records)


# --- request ids ------------------------------------------------------------------------------


async def test_request_id_is_echoed(http: aiohttp.ClientSession, services: app.Services) -> None:
    """A valid X-Request-Id comes back unchanged on a success."""
    user = await new_user(services, "pw")
    headers = {**basic_auth(user.username, "pw"), "X-Request-Id": "req-42.abc"}
    async with http.post(AUTHORIZE, headers=headers) as response:
        assert response.status == 200
        assert response.headers["X-Request-Id"] == "req-42.abc"


@pytest.mark.parametrize(
    ("path", "method"),
    [("/nowhere", "GET"), (PASSWORD, "GET"), (AUTHORIZE, "POST"), ("/healthz", "GET")],
)
async def test_request_id_is_echoed_on_every_answer(
    http: aiohttp.ClientSession, path: str, method: str
) -> None:
    """404, 405, 401 and health answers echo X-Request-Id too."""
    async with http.request(method, path, headers={"X-Request-Id": "every-1"}) as response:
        assert response.headers["X-Request-Id"] == "every-1"
        assert response.content_type == "application/json"


async def test_request_id_is_generated_when_absent(http: aiohttp.ClientSession) -> None:
    """Without X-Request-Id the gateway makes one (32 hex digits), new for each request."""
    ids = []
    for _ in range(2):
        async with http.post(AUTHORIZE) as response:
            ids.append(response.headers["X-Request-Id"])
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert ids[0] != ids[1]


@pytest.mark.parametrize(
    "given",
    ["x" * 129, "tab\there", "ünïcode", "abc status=200 peer=10.9.9.9"],
    ids=["long", "ctl", "utf8", "space"],
)
async def test_invalid_request_id_is_replaced(http: aiohttp.ClientSession, given: str) -> None:
    """An X-Request-Id over 128 characters, not printable ASCII or holding a space (which could
    pass for other fields of a log line) is replaced by a new one."""
    raw = given.encode().decode("latin-1")
    async with http.post(AUTHORIZE, headers={"X-Request-Id": raw}) as response:
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])


def test_only_authorization_and_request_id_become_metadata() -> None:
    """No client header but Authorization reaches the server; grpc-* and others are dropped."""
    headers = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Authorization", "Basic dTpw"),
                ("grpc-timeout", "1n"),
                ("Grpc-Status", "0"),
                ("Cookie", "a=b"),
                ("X-Forwarded-For", "10.0.0.1"),
                ("X-Request-Id", "client-chosen"),
                ("Te", "trailers"),
            ]
        )
    )
    assert call_metadata(headers, "rid") == (
        ("x-request-id", "rid"),
        ("authorization", "Basic dTpw"),
    )


def test_non_ascii_authorization_is_refused_before_the_call() -> None:
    """An Authorization value with a control or non-ASCII character is a 400 GatewayError."""
    for value in ("Basic \x01", "Basic é"):
        headers = CIMultiDictProxy(CIMultiDict([("Authorization", value)]))
        with pytest.raises(GatewayError) as caught:
            call_metadata(headers, "rid")
        assert caught.value.status == 400


async def test_two_authorization_headers_reach_the_servicer(http: aiohttp.ClientSession) -> None:
    """Both Authorization headers are forwarded, so the servicer refuses the ambiguity (400)."""
    headers = CIMultiDict([("Authorization", "Basic dTpw"), ("Authorization", "Basic dTpx")])
    async with http.post(AUTHORIZE, headers=headers) as response:
        assert response.status == 400
        assert "more than one" in (await json_of(response))["message"]


async def test_404_quotes_the_path_as_sent_and_bounded(http: aiohttp.ClientSession) -> None:
    """A 404 names the path as it was sent (not decoded), whole when short, cut at 100
    characters when long (a client's path is not echoed unbounded)."""
    async with http.post(URL("/v1/users/%61uthorize", encoded=True)) as response:
        assert response.status == 404
        assert (await json_of(response))["message"] == "no such path: /v1/users/%61uthorize"
    long_path = "/v1/" + "x" * 2000
    async with http.get(long_path) as response:
        assert response.status == 404
        message = (await json_of(response))["message"]
    assert message == "no such path: " + long_path[:100] + "..."


async def test_encoded_path_does_not_match_a_literal(http: aiohttp.ClientSession) -> None:
    """A percent-encoded literal segment is another path (404), never a 5xx."""
    async with http.post(URL("/v1/users/authoriz%65", encoded=True)) as response:
        assert response.status == 404


# --- status -> HTTP, with the server's own status builder ------------------------------------


def _failure(error: AuthError) -> grpc.aio.AioRpcError:
    status = error_status(error, "rid")
    return rpc_failure(status.code, status.details, status.trailing_metadata)


def test_retry_info_becomes_retry_after_rounded_up() -> None:
    """A RetryInfo of 1.2 s becomes 429 with Retry-After: 2 and error_code too_many_attempts."""
    error = AuthError(Reason.TOO_MANY_ATTEMPTS, "slow down", retry_after=1.2)
    response = rpc_error_response(_failure(error), ErrorStyle.ERROR_CODE, "rid")
    assert response.status == 429
    assert response.headers["Retry-After"] == "2"
    assert response.text == '{"error_code": "too_many_attempts", "message": "slow down"}'


def test_status_style_body_carries_the_http_status() -> None:
    """In the status style a 403 is {"status": 403, "message": ...}."""
    error = AuthError(Reason.ACCOUNT_EXPIRED, "subscription expired")
    response = rpc_error_response(_failure(error), ErrorStyle.STATUS, "rid")
    assert response.status == 403
    assert response.text == '{"status": 403, "message": "subscription expired"}'
    assert "WWW-Authenticate" not in response.headers


def test_status_without_error_info_gets_a_fixed_message() -> None:
    """A status made by the gRPC library keeps its code but not its text."""
    failure = rpc_failure(
        grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; 10.1.2.3:50051"
    )
    response = rpc_error_response(failure, ErrorStyle.ERROR_CODE, "rid")
    assert response.status == 503
    assert response.text is not None and "10.1.2.3" not in response.text
    assert '"error_code": "unavailable"' in response.text
