"""Groups on users, carried in tokens (RFC 9068 `groups`, `scope`), over real gRPC and REST on
PostgreSQL: claims, introspection, revocation on change, the `api` scope of AUTHSVC_API_GROUPS,
the limits, and the CLI."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
import grpc
import jwt
import pytest
from authsvc.v1 import auth_service_pb2, auth_service_pb2_grpc, token_service_pb2_grpc
from authsvc.v1 import token_service_pb2 as pb

from service import app
from service.config import ConfigError, Settings, load_settings
from service.errors import AuthError, Reason
from service.http_server import serving_gateway
from service.store.db import Database
from tests.support import authorize, serving
from tests.test_cli import cli, env_with


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


async def verify(channel, token: str, required_scope: str = "") -> pb.VerifyTokenResponse:
    stub = token_service_pb2_grpc.TokenServiceStub(channel)
    return await stub.VerifyToken(pb.VerifyTokenRequest(token=token, required_scope=required_scope))


def name() -> str:
    return f"grouped-{secrets.token_hex(4)}"


async def test_tokens_carry_sorted_groups_and_the_api_scope(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """A user's groups travel sorted in `groups`; with AUTHSVC_API_GROUPS unset every token has
    scope `api`; VerifyToken and IssueApiToken say the same."""
    user = await services.users.create(name(), "grp-pw-1", ["ops", "Billing", "team:a", "ops"])
    assert user.groups == ("Billing", "ops", "team:a")
    token = (await authorize(channel, user.username, "grp-pw-1")).access_token
    assert claims_of(token)["groups"] == ["Billing", "ops", "team:a"]
    assert claims_of(token)["scope"] == "api"
    verified = await verify(channel, token)
    assert verified.active and list(verified.groups) == ["Billing", "ops", "team:a"]
    assert verified.scope == "api"
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    api = await stub.IssueApiToken(
        auth_service_pb2.IssueApiTokenRequest(user_name=user.username, pwd="grp-pw-1")
    )
    assert claims_of(api.api_token)["groups"] == ["Billing", "ops", "team:a"]


async def test_no_groups_no_claim(channel: grpc.aio.Channel, services: app.Services) -> None:
    """A user without groups gets no `groups` claim (not an empty one), and VerifyToken none."""
    user = await services.users.create(name(), "grp-pw-2")
    token = (await authorize(channel, user.username, "grp-pw-2")).access_token
    assert "groups" not in claims_of(token)
    assert list((await verify(channel, token)).groups) == []


async def test_changing_groups_revokes_older_tokens(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Adding or removing a group makes the user's older tokens inactive (they carry the old
    groups); a change that changes nothing revokes nothing."""
    user = await services.users.create(name(), "grp-pw-3", ["a"])
    old = (await authorize(channel, user.username, "grp-pw-3")).access_token
    assert await services.users.change_groups(user.username, add=["a"]) == ("a",)
    assert (await verify(channel, old)).active
    assert await services.users.change_groups(user.username, add=["b"], remove=["a"]) == ("b",)
    assert not (await verify(channel, old)).active
    new = (await authorize(channel, user.username, "grp-pw-3")).access_token
    assert claims_of(new)["groups"] == ["b"] and (await verify(channel, new)).active


async def test_concurrent_changes_compose(services: app.Services) -> None:
    """Groups added at once by many administrators all end up on the user."""
    user = await services.users.create(name(), "grp-pw-4")
    await asyncio.gather(
        *(services.users.change_groups(user.username, add=[f"g{i:02}"]) for i in range(20))
    )
    assert (await services.users.get(user.username)).groups == tuple(f"g{i:02}" for i in range(20))


async def test_group_limits(services: app.Services) -> None:
    """At most 64 groups of 1..256 characters without control characters; a refused change
    writes nothing; an unknown user is USER_NOT_FOUND."""
    user = await services.users.create(name(), "grp-pw-5", [f"g{i}" for i in range(64)])
    with pytest.raises(AuthError) as caught:
        await services.users.change_groups(user.username, add=["one-too-many"])
    assert caught.value.reason is Reason.INVALID_ARGUMENT and "64" in caught.value.message
    assert len((await services.users.get(user.username)).groups) == 64
    for bad in ("", "x" * 257, "tab\there"):
        with pytest.raises(AuthError) as caught:
            await services.users.create(name(), "grp-pw-6", [bad])
        assert caught.value.reason is Reason.INVALID_ARGUMENT
    with pytest.raises(AuthError) as caught:
        await services.users.change_groups("nobody-" + secrets.token_hex(4), add=["a"])
    assert caught.value.reason is Reason.USER_NOT_FOUND


async def test_api_groups_decide_the_api_scope(db: Database, settings: Settings) -> None:
    """With AUTHSVC_API_GROUPS, every active user still gets a token, but only members of those
    groups get scope `api`; VerifyToken with required_scope "api" is inactive for the others."""
    async with serving(db, settings, api_groups=("Administrator", "SaaS_User")) as (ch, svc):
        member = await svc.users.create(name(), "grp-pw-7", ["SaaS_User"])
        other = await svc.users.create(name(), "grp-pw-8", ["Viewer"])
        member_token = (await authorize(ch, member.username, "grp-pw-7")).access_token
        other_token = (await authorize(ch, other.username, "grp-pw-8")).access_token
        assert claims_of(member_token)["scope"] == "api"
        assert "scope" not in claims_of(other_token)
        assert (await verify(ch, member_token, "api")).active
        assert (await verify(ch, other_token)).active
        assert not (await verify(ch, other_token, "api")).active


async def test_required_scope_over_rest(services: app.Services, settings: Settings) -> None:
    """POST /v1/tokens:verify takes `required_scope` through the annotations, no gateway change."""
    user = await services.users.create(name(), "grp-pw-9", ["x"])
    dispatcher = app.in_process_gateway(app.build_servicers(services, settings))
    async with (
        serving_gateway(dispatcher, "127.0.0.1:0", shutdown_timeout=1.0) as port,
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        body = {"username": user.username, "password": "grp-pw-9"}
        async with http.post("/v1/users/authorize", json=body) as r:
            token = (await r.json())["access_token"]
        async with http.post(
            "/v1/tokens:verify", json={"token": token, "required_scope": "api"}
        ) as r:
            reply = await r.json()
        assert reply["active"] and reply["groups"] == ["x"] and reply["scope"] == "api"
        async with http.post(
            "/v1/tokens:verify", json={"token": token, "required_scope": "admin"}
        ) as r:
            inactive = await r.json()
        # Nothing of the token is told; the gateway prints an empty repeated field as [], as
        # grpc-gateway's default marshaler (EmitUnpopulated) does.
        assert inactive["active"] is False and not inactive.get("groups")
        assert not {"sub", "username", "scope", "exp"} & set(inactive)


def test_api_groups_setting() -> None:
    """AUTHSVC_API_GROUPS: comma-separated names, empty by default (everyone); a name with a
    control character is a one-line configuration error."""
    assert load_settings({}).api_groups == ()
    parsed = load_settings({"AUTHSVC_API_GROUPS": "SaaS_User, Administrator,,"}).api_groups
    assert parsed == ("Administrator", "SaaS_User")
    with pytest.raises(ConfigError) as caught:
        load_settings({"AUTHSVC_API_GROUPS": "ok,bad\x07"})
    assert str(caught.value).startswith("AUTHSVC_API_GROUPS:")


def test_cli_manages_groups(database_url: str) -> None:
    """`user create --group`, `user groups NAME [--add G] [--remove G]` and `user list`."""
    env = env_with(AUTHSVC_DATABASE_URL=database_url)
    username = name()
    made = cli(
        env,
        "user",
        "create",
        username,
        "--password-stdin",
        "--group",
        "ops",
        "--group",
        "dev",
        stdin="grp-cli-pw",
    )
    assert made.returncode == 0, made.stderr
    assert cli(env, "user", "groups", username).stdout.split() == ["dev", "ops"]
    changed = cli(env, "user", "groups", username, "--add", "sre", "--remove", "dev")
    assert changed.returncode == 0 and changed.stdout.split() == ["ops", "sre"]
    listed = [line for line in cli(env, "user", "list").stdout.splitlines() if username in line]
    assert listed and listed[0].endswith("ops,sre")
    unknown = cli(env, "user", "groups", "nobody-" + secrets.token_hex(3), "--add", "x")
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1
