"""TokenService over HTTP: served from its annotations alone, with no gateway change."""

from __future__ import annotations

import aiohttp
import jwt

from service import app
from tests.gateway.helpers import basic_auth, json_of
from tests.support import new_user


async def issue(http, services: app.Services) -> str:
    user = await new_user(services, "pw")
    async with http.post("/v1/users/authorize", headers=basic_auth(user.username, "pw")) as reply:
        assert reply.status == 200
        return str((await json_of(reply))["access_token"])


async def test_verify_fresh_token(http: aiohttp.ClientSession, services: app.Services) -> None:
    """POST /v1/tokens:verify answers active true and the claims; exp and iat are numbers."""
    token = await issue(http, services)
    async with http.post("/v1/tokens:verify", json={"token": token}) as response:
        assert response.status == 200
        body = await json_of(response)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert body["active"] is True
    assert body["exp"] == claims["exp"] and isinstance(body["exp"], int)
    assert body["iat"] == claims["iat"] and body["username"] == claims["username"]


async def test_verify_garbage_is_inactive_not_an_error(http: aiohttp.ClientSession) -> None:
    """An unusable token is 200 {"active": false}: the default values are printed (an empty
    `groups` list, as grpc-gateway's marshaler prints an unpopulated repeated field), and
    nothing of the token is told."""
    async with http.post("/v1/tokens:verify", json={"token": "not.a.jwt"}) as response:
        assert response.status == 200
        assert await json_of(response) == {"active": False, "groups": []}


async def test_jwks_is_served_with_its_cache_control(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """GET /.well-known/jwks.json lists the signing key (kid of issued tokens) and keeps the
    servicer's Cache-Control instead of no-store."""
    token = await issue(http, services)
    async with http.get("/.well-known/jwks.json") as response:
        assert response.status == 200
        assert response.headers["Cache-Control"].startswith("public, max-age=")
        body = await json_of(response)
    kids = [key["kid"] for key in body["keys"]]
    assert jwt.get_unverified_header(token)["kid"] in kids
    assert all("n" not in key for key in body["keys"] if key["kty"] == "OKP")
