"""The list of common and breached passwords over REST: 400 password_not_complex with a message
naming the reason, never an echo of the password; an uncommon password goes through."""

from __future__ import annotations

import aiohttp
import pytest

from service import app
from tests.gateway.helpers import basic_auth, json_of
from tests.support import new_user

PASSWORD = "/v1/users/password"
CURRENT = "lantern-orbit-current-7"
MESSAGE = (
    "new_password is too common: it appears in a list of common or breached passwords;"
    " choose another"
)


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize(
    "password", ["password1", "Password1", "  qwerty123 "], ids=["lower", "capitalised", "spaces"]
)
async def test_a_common_password_is_400_password_not_complex(
    http: aiohttp.ClientSession, services: app.Services, method: str, password: str
) -> None:
    """PUT or POST of a listed password is 400 {"error_code": "password_not_complex"} with the
    reason in the message and the password nowhere in the answer."""
    user = await new_user(services, CURRENT)
    async with http.request(
        method,
        PASSWORD,
        headers=basic_auth(user.username, CURRENT),
        json={"new_password": password},
    ) as response:
        assert response.status == 400
        raw = await response.text()
        body = await json_of(response)
    assert body == {"error_code": "password_not_complex", "message": MESSAGE}
    assert password.strip().lower() not in raw.lower()


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_an_uncommon_password_is_200(
    http: aiohttp.ClientSession, services: app.Services, method: str
) -> None:
    """PUT or POST of a password not in the list is 200 {}."""
    user = await new_user(services, CURRENT)
    async with http.request(
        method,
        PASSWORD,
        headers=basic_auth(user.username, CURRENT),
        json={"new_password": "violet-quarry-41-tandem"},
    ) as response:
        assert response.status == 200
        assert await json_of(response) == {}
