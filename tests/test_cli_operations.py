"""The CLI an operator expects: --version, --help that names the variables each command reads,
and `user set-password` (an administrator's reset)."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from authsvc.v1 import token_service_pb2, token_service_pb2_grpc

from service import app
from service.__main__ import build_parser
from tests.support import authorize
from tests.test_cli import cli, env_with


@pytest.fixture(scope="module")
def env(database_url: str) -> dict[str, str]:
    return env_with(AUTHSVC_DATABASE_URL=database_url)


def test_version() -> None:
    """`authsvc --version` prints the installed version and exits 0."""
    result = cli(env_with(), "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("authsvc ") and result.stdout.split()[1][0].isdigit()


def _commands() -> list[list[str]]:
    parser = build_parser()
    paths: list[list[str]] = []

    def walk(p, prefix: list[str]) -> None:
        for action in p._actions:
            if getattr(action, "choices", None) and hasattr(action, "_name_parser_map"):
                for name, sub in action._name_parser_map.items():
                    paths.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(parser, [])
    return paths


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_every_command_has_help_naming_its_variables(command: list[str]) -> None:
    """Each command's --help says what it does and names the AUTHSVC_ variables it reads."""
    result = cli(env_with(), *command, "--help")
    assert result.returncode == 0, result.stderr
    assert "AUTHSVC_" in result.stdout


async def test_set_password_replaces_the_list_and_revokes_tokens(
    env: dict[str, str], channel: grpc.aio.Channel, services: app.Services
) -> None:
    """After `user set-password`, only the new password logs in and a token issued before no
    longer verifies; the user keeps its id."""
    user = await services.users.create("resetme", "first password 1")
    await services.passwords.add(
        await services.authenticator.authenticate("resetme", "first password 1", "test"),
        "second password 2",
    )
    token = (await authorize(channel, "resetme", "first password 1")).access_token
    result = cli(env, "user", "set-password", "resetme", "--password-stdin", stdin="new one 3\n")
    assert result.returncode == 0, result.stderr
    for old in ("first password 1", "second password 2"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await authorize(channel, "resetme", old)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await authorize(channel, "resetme", "new one 3")).access_token
    verify = token_service_pb2_grpc.TokenServiceStub(channel).VerifyToken
    assert not (await verify(token_service_pb2.VerifyTokenRequest(token=token))).active
    assert (await services.users.get("resetme")).id == user.id


async def test_set_password_applies_the_rules(
    env: dict[str, str], channel: grpc.aio.Channel, services: app.Services
) -> None:
    """A password the rules refuse is one line, exit 1, and the old password still works."""
    await services.users.create("resetrules", "kept password 1")
    result = cli(env, "user", "set-password", "resetrules", "--password-stdin", stdin="short")
    assert result.returncode == 1
    assert result.stderr.startswith("authsvc: ") and len(result.stderr.splitlines()) == 1
    assert (await authorize(channel, "resetrules", "kept password 1")).access_token


def test_set_password_of_unknown_user_is_one_line(env: dict[str, str]) -> None:
    """An unknown name is one line naming it, exit 1."""
    result = cli(env, "user", "set-password", "nobody-here", "--password-stdin", stdin="pw long 1")
    assert result.returncode == 1
    assert result.stderr.strip() == "authsvc: no such user: nobody-here"


def test_set_password_never_echoes_the_password(env: dict[str, str]) -> None:
    """Neither output of a refused reset contains the password."""
    result = cli(env, "user", "set-password", "nobody-here", "--password-stdin", stdin="echo-me 1")
    assert "echo-me" not in result.stdout + result.stderr


def _set_password(
    env: dict[str, str], name: str, stdin: bytes, *flags: str
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "service", "user", "set-password", name, *flags],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=120,
        start_new_session=True,  # no controlling terminal, as under a script or a pipeline
    )


async def test_set_password_takes_one_line_from_stdin(
    env: dict[str, str], channel: grpc.aio.Channel, services: app.Services
) -> None:
    """A password piped with a CRLF line end is stored without it (it logs in as typed)."""
    await services.users.create("stdin-crlf", "Old-pw-for-crlf 1")
    result = _set_password(env, "stdin-crlf", b"Crlf-pw-5521\r\n", "--password-stdin")
    assert result.returncode == 0, result.stderr
    await authorize(channel, "stdin-crlf", "Crlf-pw-5521")


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        (b"ab\xff\xfecd-pw", b"authsvc: the password on stdin is not UTF-8"),
        (b"Line-one 1\nLine-two 2\n", b"authsvc: the password on stdin must be one line"),
    ],
    ids=["not-utf8", "two-lines"],
)
def test_set_password_refuses_what_no_client_could_send(
    env: dict[str, str], stdin: bytes, message: bytes
) -> None:
    """Bytes that are not UTF-8, or more than one line, are refused (exit 2, one line) rather
    than stored as a password nobody can type."""
    result = _set_password(env, "nobody-here", stdin, "--password-stdin")
    assert result.returncode == 2
    assert result.stderr.strip() == message


def test_set_password_without_a_terminal_says_how(env: dict[str, str]) -> None:
    """With no terminal to ask on and no --password-stdin: one line naming the option, exit 2."""
    result = _set_password(env, "nobody-here", b"")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        b"authsvc: no terminal to ask for the password on: use --password-stdin"
    )
