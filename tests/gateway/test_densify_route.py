"""The Densify route `POST /authorize` over HTTP: its names, its numbers, its error bodies."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import jwt
import pytest

from service import app
from tests.gateway.helpers import basic_auth, json_of
from tests.support import new_user

DENSIFY = "/authorize"


async def test_success_gives_token_expiry_and_status(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """{"userName","pwd"} gives {"apiToken","expires","status":200}; expires is a number of ms."""
    user = await new_user(services, "pw")
    before = time.time()
    async with http.post(DENSIFY, json={"userName": user.username, "pwd": "pw"}) as response:
        assert response.status == 200
        body = await json_of(response)
    assert set(body) == {"apiToken", "expires", "status"}
    assert body["status"] == 200
    assert isinstance(body["expires"], int)
    assert before + 299 <= body["expires"] / 1000 <= time.time() + 301
    claims = jwt.decode(body["apiToken"], options={"verify_signature": False})
    assert claims["exp"] * 1000 == body["expires"]


async def test_wrong_password_is_status_401(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """A wrong pwd is 401 {"status": 401, "message": ...} with a Basic challenge."""
    user = await new_user(services, "pw")
    async with http.post(DENSIFY, json={"userName": user.username, "pwd": "nope"}) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
        body = await json_of(response)
    assert body == {"status": 401, "message": "invalid username or password"}


async def test_access_line_names_the_reason_in_either_style(
    http: aiohttp.ClientSession, services: app.Services, caplog: pytest.LogCaptureFixture
) -> None:
    """The access line of a failed call carries its reason whatever the body's style: the
    Densify route's (no error_code in the body) as the Redis route's."""
    user = await new_user(services, "pw")
    caplog.set_level(logging.INFO, logger="authsvc.access")
    async with http.post(DENSIFY, json={"userName": user.username, "pwd": "nope"}) as response:
        assert response.status == 401
    headers = basic_auth(user.username, "nope")
    async with http.post("/v1/users/authorize", headers=headers) as response:
        assert response.status == 401
    for _ in range(50):  # the access line is written after the answer
        lines = [r for r in caplog.records if r.name == "authsvc.access"]
        if len(lines) >= 2:
            break
        await asyncio.sleep(0.01)
    assert [(r.method, r.reason) for r in lines[-2:]] == [
        ("POST /authorize", "INVALID_CREDENTIALS"),
        ("POST /v1/users/authorize", "INVALID_CREDENTIALS"),
    ]


async def test_missing_pwd_is_status_400(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """A body without pwd is 400 {"status": 400, "message": ...}."""
    user = await new_user(services, "pw")
    async with http.post(DENSIFY, json={"userName": user.username}) as response:
        assert response.status == 400
        body = await json_of(response)
    assert set(body) == {"status", "message"} and body["status"] == 400


async def test_proto_field_name_is_unknown(http: aiohttp.ClientSession) -> None:
    """Only the JSON name counts: `user_name` is an unknown field, 400 in the status style."""
    async with http.post(DENSIFY, json={"user_name": "x", "pwd": "y"}) as response:
        assert response.status == 400
        body = await json_of(response)
    assert body["status"] == 400 and "user_name" in body["message"]


async def test_gateway_errors_use_the_status_style(http: aiohttp.ClientSession) -> None:
    """Malformed JSON, a form body and a wrong method on /authorize answer {"status", ...}."""
    async with http.post(
        DENSIFY, data=b"{not json", headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 400
        assert (await json_of(response))["status"] == 400
    async with http.post(DENSIFY, data={"userName": "x", "pwd": "y"}) as response:
        assert response.status == 415
        assert (await json_of(response))["status"] == 415
    async with http.get(DENSIFY) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        assert (await json_of(response))["status"] == 405


async def test_oversized_body_uses_the_status_style(http: aiohttp.ClientSession) -> None:
    """A body over 64 KiB on /authorize is 413 {"status": 413, ...}."""
    big = {"userName": "x", "pwd": "p" * (64 * 1024)}
    async with http.post(DENSIFY, json=big) as response:
        assert response.status == 413
        assert (await json_of(response))["status"] == 413
