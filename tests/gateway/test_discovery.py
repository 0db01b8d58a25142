"""Discovery (OpenID Connect Discovery 1.0, RFC 8414): only what is true of authsvc, enough for
a verifier that starts from the issuer URL alone."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest

from service import app
from service.apidocs.discovery import DISCOVERY_PATHS
from service.config import ConfigError, Settings, load_settings
from service.http_server import serving_gateway
from tests.gateway.helpers import basic_auth, json_of
from tests.support import new_user

PUBLIC_URL = "https://auth.example.test:8443"


@pytest.fixture(scope="module")
async def base_url(services: app.Services, settings: Settings) -> AsyncIterator[str]:
    """A gateway as `serve` runs it, with no AUTHSVC_PUBLIC_URL."""
    dispatcher = app.in_process_gateway(app.build_servicers(services, settings))
    options: dict[str, Any] = {"discovery": app.discovery(settings), "shutdown_timeout": 1.0}
    async with serving_gateway(dispatcher, "127.0.0.1:0", **options) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
async def public_base_url(services: app.Services, settings: Settings) -> AsyncIterator[str]:
    """A gateway with AUTHSVC_PUBLIC_URL set."""
    configured = dataclasses.replace(settings, public_url=PUBLIC_URL)
    dispatcher = app.in_process_gateway(app.build_servicers(services, configured))
    options: dict[str, Any] = {"discovery": app.discovery(configured), "shutdown_timeout": 1.0}
    async with serving_gateway(dispatcher, "127.0.0.1:0", **options) as port:
        yield f"http://127.0.0.1:{port}"


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as reply:
        return reply.status, reply.headers.copy(), await json_of(reply)


async def new_token(base_url: str, services: app.Services) -> str:
    user = await new_user(services, "pw")
    async with aiohttp.ClientSession() as session:
        url = base_url + "/v1/users/authorize"
        async with session.post(url, headers=basic_auth(user.username, "pw")) as reply:
            assert reply.status == 200
            return str((await reply.json())["access_token"])


@pytest.mark.parametrize("path", DISCOVERY_PATHS)
async def test_document_says_what_is_true(base_url: str, settings: Settings, path: str) -> None:
    """Both documents name the tokens' issuer, the JWKS and introspection URLs on the host asked,
    the signing algorithm in use, and nothing authsvc does not do; they are cacheable."""
    status, headers, document = await fetch(base_url + path)
    assert status == 200
    assert document == {
        "issuer": settings.token_issuer,
        "jwks_uri": f"{base_url}/.well-known/jwks.json",
        "introspection_endpoint": f"{base_url}/v1/tokens:verify",
        "introspection_endpoint_auth_methods_supported": ["none"],
        "id_token_signing_alg_values_supported": [settings.jwt_algorithm],
    }
    assert settings.jwt_algorithm == "ES256"
    assert headers["Cache-Control"] == "public, max-age=3600"


async def test_urls_follow_the_host_header(base_url: str) -> None:
    """Without AUTHSVC_PUBLIC_URL the absolute URLs use the request's Host (behind a proxy that
    keeps it, the public name)."""
    host = {"Host": "auth.internal.test:9000"}
    status, _, document = await fetch(base_url + DISCOVERY_PATHS[0], host)
    assert status == 200
    assert document["jwks_uri"] == "http://auth.internal.test:9000/.well-known/jwks.json"


@pytest.mark.parametrize(
    "host", ["a b@evil", "a.com:99999", "..", "-", "a..b", "x" * 64 + ".test", "1.2.3.4:0"]
)
async def test_a_bad_host_header_is_refused(base_url: str, host: str) -> None:
    """A Host that is no host name (empty labels, a label over 63 characters, a port that is
    none) cannot make a URL: a JSON 400, not a document with it."""
    status, _, body = await fetch(base_url + DISCOVERY_PATHS[1], {"Host": host})
    assert status == 400
    assert body["error_code"] == "invalid_argument"


async def test_public_url_wins_over_host(public_base_url: str) -> None:
    """With AUTHSVC_PUBLIC_URL the URLs are the configured ones whatever Host the client sent."""
    status, _, document = await fetch(public_base_url + DISCOVERY_PATHS[1], {"Host": "other.test"})
    assert status == 200
    assert document["jwks_uri"] == f"{PUBLIC_URL}/.well-known/jwks.json"
    assert document["introspection_endpoint"] == f"{PUBLIC_URL}/v1/tokens:verify"


@pytest.mark.parametrize("path", DISCOVERY_PATHS)
async def test_head_works_and_post_does_not(base_url: str, path: str) -> None:
    """HEAD answers as GET without a body; POST is 405 naming GET and HEAD."""
    async with aiohttp.ClientSession() as session:
        async with session.head(base_url + path) as reply:
            assert reply.status == 200
            assert reply.headers["Cache-Control"] == "public, max-age=3600"
            assert await reply.read() == b""
        async with session.post(base_url + path, json={}) as reply:
            assert reply.status == 405
            assert reply.headers["Allow"] == "GET, HEAD"


async def test_verifier_from_the_issuer_url_alone(
    base_url: str, services: app.Services, settings: Settings
) -> None:
    """PyJWT's PyJWKClient, fed the document's jwks_uri, verifies a fresh token with the
    document's algorithm and issuer; the document's introspection endpoint says it is active."""
    token = await new_token(base_url, services)
    _, _, document = await fetch(base_url + "/.well-known/openid-configuration")

    def verify(token: str) -> dict[str, Any]:
        # PyJWKClient fetches with urllib, blocking: off the loop that serves the gateway.
        key = jwt.PyJWKClient(document["jwks_uri"]).get_signing_key_from_jwt(token)
        return jwt.decode(
            token,
            key,
            algorithms=document["id_token_signing_alg_values_supported"],
            issuer=document["issuer"],
            audience=settings.token_audience,
        )

    claims = await asyncio.to_thread(verify, token)
    assert claims["iss"] == document["issuer"]
    introspect = document["introspection_endpoint"]
    async with (
        aiohttp.ClientSession() as session,
        session.post(introspect, json={"token": token}) as r,
    ):
        assert (await r.json())["active"] is True
    head, _, signature = token.split(".")
    raised = json.dumps({**claims, "username": "admin"}).encode()
    forged = f"{head}.{base64.urlsafe_b64encode(raised).decode().rstrip('=')}.{signature}"
    with pytest.raises(jwt.InvalidSignatureError):
        await asyncio.to_thread(verify, forged)


def test_public_url_setting() -> None:
    """AUTHSVC_PUBLIC_URL takes an http(s) base URL (a trailing slash dropped) and leaves the
    issuer alone; anything else stops start-up naming the variable."""
    settings = load_settings({"AUTHSVC_PUBLIC_URL": "https://auth.example.test/"})
    assert settings.public_url == "https://auth.example.test"
    assert settings.token_issuer == "authsvc"
    assert load_settings({}).public_url is None
    for bad in ("auth.example.test", "ftp://x.test", "https://x.test/?a=1", "https://"):
        with pytest.raises(ConfigError, match="AUTHSVC_PUBLIC_URL"):
            load_settings({"AUTHSVC_PUBLIC_URL": bad})
