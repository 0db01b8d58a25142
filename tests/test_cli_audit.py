"""`authsvc audit`: the administration commands' events as an operator reads them, newest
first, as text or JSON lines, filtered by user, time and count; bad input is one line, exit 2."""

from __future__ import annotations

import json
import os
import pwd
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from service.__main__ import event_line
from service.domain.models import AuditEvent, AuditKind
from tests.test_cli import cli, env_with

FIRST, SECOND = "first Secret pw 1", "second Secret pw 2"
ME = f"cli:{pwd.getpwuid(os.getuid()).pw_name}"


@pytest.fixture(scope="module")
def env(database_url: str) -> dict[str, str]:
    return env_with(AUTHSVC_DATABASE_URL=database_url)


@pytest.fixture(scope="module")
def administered(env: dict[str, str]) -> str:
    """A user taken through every administration command; its name."""
    name = f"Audited-{secrets.token_hex(3)}"
    for args, stdin in (
        (("user", "create", name, "--password-stdin"), FIRST),
        (("user", "set-password", name, "--password-stdin"), SECOND),
        (("user", "lock", name), None),
        (("user", "unlock", name), None),
        (("user", "expire", name, "--at", "2030-01-01T00:00:00Z"), None),
        (("user", "groups", name, "--add", "ops"), None),
        (("user", "delete", name), None),
    ):
        done = cli(env, *args, stdin=stdin)
        assert done.returncode == 0, done.stderr
    return name


def events(env: dict[str, str], *args: str) -> list[dict[str, str]]:
    shown = cli(env, "audit", "--json", *args)
    assert shown.returncode == 0, shown.stderr
    return [json.loads(line) for line in shown.stdout.splitlines()]


def test_every_administration_command_is_recorded_newest_first(
    env: dict[str, str], administered: str
) -> None:
    """Each command is one event, newest first, from the OS user, one request id per command."""
    found = events(env, "--user", administered.upper())  # any spelling of the name
    assert [e["kind"] for e in found] == [
        "account_deleted",
        "groups_changed",
        "account_expiry_set",
        "account_unlocked",
        "account_locked",
        "password_set_by_admin",
        "account_created",
    ]
    assert {e["source"] for e in found} == {ME}
    ids = [e["request_id"] for e in found]
    assert len(set(ids)) == len(ids) and all(i.startswith("cli-") for i in ids)
    assert found[2]["detail"] == "expires: 2030-01-01T00:00:00+00:00"


def test_text_is_one_line_per_event(env: dict[str, str], administered: str) -> None:
    """Without --json each event is one line: time, kind, user, source, request id, detail."""
    shown = cli(env, "audit", "--user", administered)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 7
    at, kind, user, source, request_id, *_ = lines[-1].split()
    assert datetime.fromisoformat(at).tzinfo is not None
    assert (kind, user, source) == ("account_created", administered, f"source={ME}")
    assert request_id.startswith("request_id=cli-")


def test_since_and_limit_filter(env: dict[str, str], administered: str) -> None:
    """--since keeps events from that instant on; --limit keeps the newest N."""
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert events(env, "--user", administered, "--since", ahead) == []
    assert len(events(env, "--user", administered, "--since", "2000-01-01")) == 7
    [newest] = events(env, "--user", administered, "--limit", "1")
    assert newest["kind"] == "account_deleted"


def test_key_rotation_is_recorded(env: dict[str, str]) -> None:
    """`keys rotate --retire-old` records the rotation and the retirement, without a user."""
    assert cli(env, "keys", "rotate", "--retire-old").returncode == 0
    kinds = [e["kind"] for e in events(env, "--limit", "5") if e["source"] == ME]
    assert "key_rotated" in kinds and "key_retired" in kinds


def test_no_event_holds_a_password(env: dict[str, str], administered: str) -> None:
    """The passwords the commands were given appear nowhere in the trail."""
    everything = cli(env, "audit", "--json", "--limit", "100000").stdout
    assert administered in everything
    assert FIRST not in everything and SECOND not in everything and "$argon2" not in everything


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday"), "authsvc: --since: not an ISO-8601 date: 'yesterday'"),
        (("--since", "2026-13-01"), "authsvc: --since: not an ISO-8601 date: '2026-13-01'"),
        (
            ("--since", "0001-01-01T00:00:00+14:00"),
            "authsvc: --since: out of range: '0001-01-01T00:00:00+14:00'",
        ),
    ],
)
def test_a_bad_since_is_one_line_exit_2(
    env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    """A --since that is not ISO-8601 is one line on stderr and exit status 2."""
    result = cli(env, "audit", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == message


@pytest.mark.parametrize("limit", ["0", "99999999999999999999"])
def test_a_bad_limit_is_a_usage_error(env: dict[str, str], limit: str) -> None:
    """--limit must be an integer from 1 to a million: exit status 2, naming it, no trace."""
    result = cli(env, "audit", "--limit", limit)
    assert result.returncode == 2 and "--limit" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_says_what_it_does_and_what_it_reads() -> None:
    """`authsvc audit --help` names the trail and the variables it reads."""
    shown = cli(env_with(), "audit", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    for needle in (
        "audit trail",
        "AUTHSVC_DATABASE_URL",
        "AUTHSVC_AUDIT_RETENTION_DAYS",
        "AUTHSVC_AUDIT_LOGINS",
        "--json",
        "--since",
        "--user",
        "--limit",
    ):
        assert needle in text


def test_a_typed_name_cannot_pass_for_other_fields() -> None:
    """A name with spaces, '=', a line break or a direction override is printed quoted and
    escaped, so one event stays one line whose fields are the server's."""
    event = AuditEvent(
        kind=AuditKind.LOGIN_FAILED,
        username="alice source=ip:10.0.0.1\n\u202eevil",
        username_key="x",
        source="ip:192.0.2.7",
        request_id="cli-1 forged",
        detail="invalid_credentials: no such user",
    )
    line = event_line(event)
    assert "\n" not in line and "\u202e" not in line
    assert ' "alice source=ip:10.0.0.1\\n\\u202eevil" source=ip:192.0.2.7 ' in line
    assert 'request_id="cli-1 forged"' in line
