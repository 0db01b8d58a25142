"""The Redis Enterprise routes over HTTP, with the seeds' example bodies, through the real shim."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import aiohttp
import jwt
import pytest

from service import app
from tests.gateway.helpers import basic_auth, json_of
from tests.support import new_user

AUTHORIZE = "/v1/users/authorize"
PASSWORD = "/v1/users/password"


def claims(token: str) -> dict[str, object]:
    """The token's claims (the signature is checked by the rpc tests)."""
    return jwt.decode(token, options={"verify_signature": False})


async def logs_in(http: aiohttp.ClientSession, username: str, password: str) -> bool:
    async with http.post(AUTHORIZE, headers=basic_auth(username, password)) as response:
        assert response.status in (200, 401), await response.text()
        return response.status == 200


async def test_old_contract_body_credentials(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """The older seed: username and password in the JSON body give {"access_token": JWT}."""
    user = await new_user(services, "my_password")
    body = {"username": user.username, "password": "my_password"}
    async with http.post(AUTHORIZE, json=body) as response:
        assert response.status == 200
        reply = await json_of(response)
    assert list(reply) == ["access_token"]
    assert claims(reply["access_token"])["username"] == user.username


async def test_new_contract_basic_and_no_body(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """The newer seed: Basic credentials and no body at all give a token valid for 300 s."""
    user = await new_user(services, "pw")
    async with http.post(AUTHORIZE, headers=basic_auth(user.username, "pw")) as response:
        assert response.status == 200
        token = (await json_of(response))["access_token"]
    found = claims(token)
    assert found["exp"] - found["iat"] == 300


async def test_new_contract_basic_and_ttl(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """Basic credentials with {"ttl": N} give a token valid for N seconds."""
    user = await new_user(services, "pw")
    async with http.post(
        AUTHORIZE, headers=basic_auth(user.username, "pw"), json={"ttl": 60}
    ) as response:
        assert response.status == 200
        found = claims((await json_of(response))["access_token"])
    assert found["exp"] - found["iat"] == 60


async def test_token_response_is_not_cacheable(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """A token answer says Cache-Control: no-store (RFC 6749 section 5.1)."""
    user = await new_user(services, "pw")
    async with http.post(AUTHORIZE, headers=basic_auth(user.username, "pw")) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"


async def test_wrong_password_is_401_invalid_credentials(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """A wrong password is 401 {"error_code": "invalid_credentials"} with a Basic challenge."""
    user = await new_user(services, "right-pw")
    async with http.post(AUTHORIZE, json={"username": user.username, "password": "no"}) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="authsvc", charset="UTF-8"'
        body = await json_of(response)
    assert body == {"error_code": "invalid_credentials", "message": "invalid username or password"}


async def test_unknown_user_answers_like_a_wrong_password(http: aiohttp.ClientSession) -> None:
    """An unknown user gets the very answer a wrong password gets."""
    async with http.post(AUTHORIZE, headers=basic_auth("nobody-at-all", "x")) as response:
        assert response.status == 401
        body = await json_of(response)
    assert body == {"error_code": "invalid_credentials", "message": "invalid username or password"}


async def test_no_credentials_is_401_with_challenge(http: aiohttp.ClientSession) -> None:
    """No header and no body fields: 401 credentials_required, with WWW-Authenticate."""
    async with http.post(AUTHORIZE) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
        assert (await json_of(response))["error_code"] == "credentials_required"


async def test_credentials_in_header_and_body_is_400(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """Credentials in both places are refused as ambiguous (400 invalid_argument)."""
    user = await new_user(services, "pw")
    async with http.post(
        AUTHORIZE,
        headers=basic_auth(user.username, "pw"),
        json={"username": user.username, "password": "pw"},
    ) as response:
        assert response.status == 400
        assert (await json_of(response))["error_code"] == "invalid_argument"


@pytest.mark.parametrize("ttl", [0, 86401])
async def test_ttl_out_of_range_is_400(
    http: aiohttp.ClientSession, services: app.Services, ttl: int
) -> None:
    """A ttl outside 1..86400 is 400 invalid_argument (the servicer's rule, reached via HTTP)."""
    user = await new_user(services, "pw")
    async with http.post(
        AUTHORIZE, headers=basic_auth(user.username, "pw"), json={"ttl": ttl}
    ) as response:
        assert response.status == 400
        assert (await json_of(response))["error_code"] == "invalid_argument"


async def test_locked_account_is_401_account_locked(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """A locked user with the right password gets 401 account_locked."""
    user = await new_user(services, "pw")
    await services.users.set_locked(user.username, True)
    async with http.post(AUTHORIZE, headers=basic_auth(user.username, "pw")) as response:
        assert response.status == 401
        assert (await json_of(response))["error_code"] == "account_locked"


async def test_expired_account_is_403_account_expired(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """An expired account with the right password gets 403 account_expired."""
    user = await new_user(services, "pw")
    await services.users.set_expiry(user.username, datetime.now(UTC) - timedelta(seconds=1))
    async with http.post(AUTHORIZE, headers=basic_auth(user.username, "pw")) as response:
        assert response.status == 403
        assert (await json_of(response))["error_code"] == "account_expired"


# --- /v1/users/password -----------------------------------------------------------------------


async def test_put_replaces_the_list(http: aiohttp.ClientSession, services: app.Services) -> None:
    """PUT {"new_password"} leaves only the new password; the answer is 200 {}."""
    user = await new_user(services, "old one")
    async with http.put(
        PASSWORD,
        headers=basic_auth(user.username, "old one"),
        json={"new_password": "the new (single) password"},
    ) as response:
        assert response.status == 200
        assert await json_of(response) == {}
    assert not await logs_in(http, user.username, "old one")
    assert await logs_in(http, user.username, "the new (single) password")


async def test_post_adds_a_password(http: aiohttp.ClientSession, services: app.Services) -> None:
    """POST {"new_password"} adds one: the old and the new both log in."""
    user = await new_user(services, "first-pw")
    async with http.post(
        PASSWORD,
        headers=basic_auth(user.username, "first-pw"),
        json={"new_password": "a password to add"},
    ) as response:
        assert response.status == 200
        assert await json_of(response) == {}
    assert await logs_in(http, user.username, "first-pw")
    assert await logs_in(http, user.username, "a password to add")


async def test_delete_with_a_json_body_removes_one(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """DELETE carries {"old_password"} in its body (the seeds fix it) and removes that one."""
    user = await new_user(services, "keep-pw")
    async with http.post(
        PASSWORD, headers=basic_auth(user.username, "keep-pw"), json={"new_password": "drop-pw"}
    ) as response:
        assert response.status == 200
    async with http.delete(
        PASSWORD, headers=basic_auth(user.username, "keep-pw"), json={"old_password": "drop-pw"}
    ) as response:
        assert response.status == 200
        assert await json_of(response) == {}
    assert await logs_in(http, user.username, "keep-pw")
    assert not await logs_in(http, user.username, "drop-pw")


async def test_delete_last_password_is_400(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """Deleting the only password is 400 cannot_delete_last_password."""
    user = await new_user(services, "only-pw")
    async with http.delete(
        PASSWORD, headers=basic_auth(user.username, "only-pw"), json={"old_password": "only-pw"}
    ) as response:
        assert response.status == 400
        assert (await json_of(response))["error_code"] == "cannot_delete_last_password"
    assert await logs_in(http, user.username, "only-pw")


async def test_delete_unknown_password_is_400(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """Deleting a password that is not on the list is 400 password_not_found."""
    user = await new_user(services, "mine-pw")
    async with http.delete(
        PASSWORD, headers=basic_auth(user.username, "mine-pw"), json={"old_password": "not mine"}
    ) as response:
        assert response.status == 400
        assert (await json_of(response))["error_code"] == "password_not_found"


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_new_password_same_as_current_is_400(
    http: aiohttp.ClientSession, services: app.Services, method: str
) -> None:
    """PUT or POST of a password already on the list is 400 new_password_same_as_current."""
    user = await new_user(services, "same-pw")
    async with http.request(
        method,
        PASSWORD,
        headers=basic_auth(user.username, "same-pw"),
        json={"new_password": "same-pw"},
    ) as response:
        assert response.status == 400
        body = await json_of(response)
    assert body["error_code"] == "new_password_same_as_current"
    assert body["message"]


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE"])
async def test_password_routes_require_basic(http: aiohttp.ClientSession, method: str) -> None:
    """Every password route without Basic credentials is 401 with a challenge."""
    async with http.request(method, PASSWORD, json={"new_password": "x"}) as response:
        assert response.status in (400, 401)
        if response.status == 401:
            assert "WWW-Authenticate" in response.headers
        assert (await json_of(response))["error_code"] in (
            "credentials_required",
            "invalid_argument",
        )


async def test_password_route_with_wrong_password_is_401(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """A password route with a wrong Basic password is 401 invalid_credentials."""
    user = await new_user(services, "pw")
    async with http.post(
        PASSWORD, headers=basic_auth(user.username, "wrong"), json={"new_password": "new"}
    ) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
        assert (await json_of(response))["error_code"] == "invalid_credentials"


# --- Basic credentials over HTTP --------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    ],
    ids=["bad-base64", "no-colon", "not-utf8"],
)
async def test_malformed_basic_is_400(http: aiohttp.ClientSession, header: str) -> None:
    """A Basic header that cannot be decoded is 400 invalid_argument, never a 5xx."""
    async with http.post(AUTHORIZE, headers={"Authorization": header}) as response:
        assert response.status == 400
        assert (await json_of(response))["error_code"] == "invalid_argument"


async def test_other_scheme_is_401(http: aiohttp.ClientSession) -> None:
    """A Bearer header is not a password: 401 credentials_required with a Basic challenge."""
    async with http.post(AUTHORIZE, headers={"Authorization": "Bearer abc.def.ghi"}) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
        assert (await json_of(response))["error_code"] == "credentials_required"


async def test_colon_and_utf8_in_password(
    http: aiohttp.ClientSession, services: app.Services
) -> None:
    """Everything after the first ':' is the password, in any UTF-8, through HTTP too."""
    password = "pä:ss:wörd 🔑"
    user = await new_user(services, password, prefix="ünïcode")
    async with http.post(AUTHORIZE, headers=basic_auth(user.username, password)) as response:
        assert response.status == 200
        assert claims((await json_of(response))["access_token"])["username"] == user.username


async def test_non_ascii_authorization_header_is_400(http: aiohttp.ClientSession) -> None:
    """A raw (unencoded) non-ASCII Authorization value cannot be metadata: 400, not 500."""
    raw = "Basic üser:pässword".encode().decode("latin-1")
    async with http.post(AUTHORIZE, headers={"Authorization": raw}) as response:
        assert response.status == 400
        body = await json_of(response)
    assert body == {
        "error_code": "invalid_argument",
        "message": "the Authorization header must be printable ASCII",
    }
