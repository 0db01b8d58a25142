"""The seeds' account-state answers over REST: password_expired, account expiry, 429."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from service import app
from service.config import Settings
from service.http_server import serving_gateway
from service.store.db import Database
from tests.gateway.helpers import basic_auth
from tests.support import new_user, serving_services

BACKDATE = "UPDATE passwords SET created_at = now() - interval '2 minutes' WHERE user_id = $1"


@pytest.fixture(scope="module")
async def rest(db, settings) -> AsyncIterator[tuple[aiohttp.ClientSession, app.Services]]:
    """Gateway + server with a 60 s password age and a 30 s failed-login delay."""
    async with (
        serving_services(db, settings, password_max_age=60, failed_login_delay_base=30.0) as (
            configured,
            services,
        ),
        serving_gateway(
            app.in_process_gateway(app.build_servicers(services, configured)),
            "127.0.0.1:0",
            shutdown_timeout=1,
        ) as http,
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{http}") as session,
    ):
        yield session, services


async def test_expired_password_is_password_expired(rest, db: Database) -> None:
    """An old password on POST /v1/users/authorize: 401 with error_code password_expired."""
    session, services = rest
    user = await new_user(services, "old pw")
    await db.execute(BACKDATE, user.id)
    async with session.post(
        "/v1/users/authorize", headers=basic_auth(user.username, "old pw")
    ) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Basic ")
        assert (await r.json())["error_code"] == "password_expired"


async def test_expired_password_can_still_change_itself(rest, db: Database) -> None:
    """The expired password authenticates PUT /v1/users/password; the new one then authorizes."""
    session, services = rest
    user = await new_user(services, "stale pw")
    await db.execute(BACKDATE, user.id)
    headers = basic_auth(user.username, "stale pw")
    async with session.put(
        "/v1/users/password", headers=headers, json={"new_password": "new pw"}
    ) as r:
        assert r.status == 200, await r.text()
    async with session.post(
        "/v1/users/authorize", headers=basic_auth(user.username, "new pw")
    ) as r:
        assert r.status == 200 and "access_token" in await r.json()


async def test_expired_account_on_densify_is_403_status_body(rest) -> None:
    """Densify's 403 'subscription expired': {"status": 403, "message": ...}."""
    session, services = rest
    user = await new_user(services, "pw")
    await services.users.set_expiry(user.username, datetime.now(UTC) - timedelta(seconds=1))
    async with session.post("/authorize", json={"userName": user.username, "pwd": "pw"}) as r:
        assert r.status == 403
        body = await r.json()
        assert body["status"] == 403 and body["message"]


async def test_too_many_attempts_is_429_with_retry_after(rest) -> None:
    """A guess inside the delay that follows the allowance of failures: 429, Retry-After in
    seconds, Densify status body; the same for the Redis route, even with the right password."""
    session, services = rest
    user = await new_user(services, "pw")
    wrong = {"userName": user.username, "pwd": "wrong"}
    for _ in range(Settings().failed_login_allowance + 1):
        async with session.post("/authorize", json=wrong) as r:
            assert r.status == 401 and (await r.json())["status"] == 401
    async with session.post("/authorize", json=wrong) as r:
        assert r.status == 429
        assert 1 <= int(r.headers["Retry-After"]) <= 30
        assert (await r.json())["status"] == 429
    headers = basic_auth(user.username, "pw")
    async with session.post("/v1/users/authorize", headers=headers) as r:
        assert r.status == 429
        assert (await r.json())["error_code"] == "too_many_attempts"
