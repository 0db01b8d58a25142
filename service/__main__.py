"""The `authsvc` command: the server and the administration commands.

Exit status: 0 success, 1 the operation failed (unknown user, database down, ...), 2 bad usage or
configuration. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib.metadata
import json
import os
import pwd
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

# The servers run on uvloop's event loop (libuv under the same asyncio API): measured with the
# bench's A/B runs, about 5% less event-loop CPU per login over gRPC and REST alike than
# asyncio's own loop. The short CLI commands keep asyncio's.
import uvloop

from service import app, request_context
from service.addresses import is_loopback
from service.config import ConfigError, Settings, load_settings
from service.domain.audit import LIST_LIMIT_DEFAULT
from service.domain.models import AuditEvent
from service.domain.signing_keys import KeyUnreadableError
from service.embedded_postgres import EmbeddedPostgresError
from service.errors import AuthError
from service.observability.logs import configure_logging, text_field

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: exit status 2."""


def check_upstream(settings: Settings, grpc_target: str) -> None:
    """Credentials must not cross the network in plaintext: a non-loopback --grpc-target needs
    AUTHSVC_GATEWAY_CA_FILE (TLS), unless AUTHSVC_ALLOW_PLAINTEXT says otherwise."""
    plaintext = settings.gateway_upstream is None and not settings.allow_plaintext
    if plaintext and not is_loopback(grpc_target):
        raise UsageError(
            "--grpc-target: plaintext to a non-loopback server; set AUTHSVC_GATEWAY_CA_FILE"
            " (or AUTHSVC_ALLOW_PLAINTEXT=true)"
        )


def parse_instant(raw: str, option: str, also: str = "") -> datetime:
    """An ISO-8601 instant (a date alone is its midnight); one without a zone is taken as UTC."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"{option}: not an ISO-8601 date{also}: {raw!r}") from None
    try:  # in UTC, as stored: 0001-01-01T00:00+14:00 is before the first representable instant
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:
        raise UsageError(f"{option}: out of range: {raw!r}") from None


def parse_expiry(raw: str) -> datetime | None:
    """`never`, or an ISO-8601 instant; one without a zone is taken as UTC."""
    if raw.lower() == "never":
        return None
    return parse_instant(raw, "--at", " or 'never'")


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        try:
            password = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("the password on stdin is not UTF-8") from None
        # One trailing line end is the shell's or the file's (LF or CRLF), not the password's.
        password = password.removesuffix("\n").removesuffix("\r")
        if "\n" in password or "\r" in password:
            raise UsageError("the password on stdin must be one line")
        return password
    try:  # where getpass asks; without it, it would read stdin with a warning that it echoes
        open("/dev/tty").close()
    except OSError:
        raise UsageError("no terminal to ask for the password on: use --password-stdin") from None
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise UsageError("the passwords do not match")
    return first


def package_version() -> str:
    try:
        return importlib.metadata.version("authsvc")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


Action = Callable[[app.Services], Awaitable[None]]


def command_actor() -> str:
    """Who runs a command, for the audit trail: `cli:` and the operating-system user (by uid,
    not by $USER, which anyone can set)."""
    try:
        return f"cli:{pwd.getpwuid(os.getuid()).pw_name}"
    except KeyError:  # a uid without a passwd entry (a container's)
        return f"cli:uid {os.getuid()}"


async def with_services(settings: Settings, action: Action) -> None:
    # One request id for everything a command records, so its events read as one.
    request_context.request_id.set(f"cli-{uuid.uuid4().hex}")
    async with (
        app.open_database(settings) as db,
        app.open_services(db, settings, watch_keys=False, actor=command_actor()) as services,
    ):
        await action(services)


# What each command reads from the environment, for its --help.
DATABASE_VARS = (
    "Reads AUTHSVC_DATABASE_URL (unset: the embedded PostgreSQL under AUTHSVC_DATA_DIR, default"
    " .data/, binaries from AUTHSVC_PG_BIN_DIR or the embedded-postgres package),"
    " AUTHSVC_DB_TIMEOUT, AUTHSVC_LOG_LEVEL, AUTHSVC_LOG_FORMAT."
)
PASSWORD_VARS = (
    " The password rules: AUTHSVC_PASSWORD_MIN_LENGTH, AUTHSVC_PASSWORD_COMPLEXITY,"
    " AUTHSVC_PASSWORD_BLOCKLIST, AUTHSVC_PASSWORD_BLOCKLIST_FILE, AUTHSVC_PASSWORD_HISTORY;"
    " hashing: AUTHSVC_ARGON2_TIME_COST, _MEMORY_KIB, _PARALLELISM."
)
KEY_VARS = " Keys: AUTHSVC_JWT_ALGORITHM, AUTHSVC_KEY_ENCRYPTION_KEY, AUTHSVC_KEY_ROTATION_DAYS."
AUDIT_VARS = (
    " Events are kept AUTHSVC_AUDIT_RETENTION_DAYS (default 90); successful logins are recorded"
    " only when the server runs with AUTHSVC_AUDIT_LOGINS=true."
)


def _command(parent: Any, name: str, text: str, variables: str) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does and which variables it reads."""
    parser: argparse.ArgumentParser = parent.add_parser(
        name, help=text, description=f"{text[0].upper()}{text[1:]}. {variables}"
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authsvc",
        description=f"{__doc__.splitlines()[0]} Configuration comes from AUTHSVC_* variables.",
    )
    parser.add_argument("--version", action="version", version=f"authsvc {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    _command(
        commands,
        "serve",
        "run the gRPC server, the REST gateway and the metrics listener",
        "Reads every AUTHSVC_* variable (README: Configuration), notably AUTHSVC_GRPC_ADDR,"
        " AUTHSVC_HTTP_ADDR, AUTHSVC_METRICS_ADDR, AUTHSVC_TLS_CERT_FILE/_KEY_FILE, "
        + DATABASE_VARS,
    )
    _command(commands, "migrate", "apply pending database migrations and exit", DATABASE_VARS)
    gateway = _command(
        commands,
        "gateway",
        "run only the REST gateway, in front of a gRPC server elsewhere",
        "Reads AUTHSVC_HTTP_ADDR, AUTHSVC_TLS_*, AUTHSVC_GATEWAY_CA_FILE,"
        " AUTHSVC_GATEWAY_CLIENT_CERT_FILE/_KEY_FILE, AUTHSVC_ALLOW_PLAINTEXT,"
        " AUTHSVC_TRUSTED_PROXIES, AUTHSVC_LOG_LEVEL, AUTHSVC_LOG_FORMAT.",
    )
    gateway.add_argument(
        "--grpc-target", required=True, metavar="HOST:PORT", help="the gRPC server to call"
    )

    user = _command(commands, "user", "manage users", DATABASE_VARS).add_subparsers(
        dest="action", required=True
    )
    create = _command(
        user, "create", "create a user with one password", DATABASE_VARS + PASSWORD_VARS
    )
    create.add_argument("name")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    create.add_argument(
        "--group", action="append", default=[], metavar="G", help="a group (repeatable)"
    )
    set_password = _command(
        user,
        "set-password",
        "replace a user's passwords with one (tokens issued before stop verifying)",
        DATABASE_VARS + PASSWORD_VARS,
    )
    set_password.add_argument("name")
    set_password.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    _command(user, "list", "list users", DATABASE_VARS)
    groups = _command(
        user,
        "groups",
        "show a user's groups, or change them (tokens issued before stop verifying)",
        DATABASE_VARS,
    )
    groups.add_argument("name")
    groups.add_argument("--add", action="append", default=[], metavar="G", help="add a group")
    groups.add_argument("--remove", action="append", default=[], metavar="G", help="remove a group")
    for action, text in (
        ("delete", "delete a user"),
        ("lock", "lock a user out"),
        ("unlock", "let a locked user in again (and forget its failed logins)"),
    ):
        _command(user, action, text, DATABASE_VARS).add_argument("name")
    expire = _command(user, "expire", "set when a user's account expires", DATABASE_VARS)
    expire.add_argument("name")
    expire.add_argument(
        "--at", required=True, help="an ISO-8601 instant (UTC if no zone) or 'never'"
    )
    keys = _command(commands, "keys", "manage token signing keys", DATABASE_VARS + KEY_VARS)
    key_actions = keys.add_subparsers(dest="action", required=True)
    _command(key_actions, "list", "list the published signing keys", DATABASE_VARS + KEY_VARS)
    rotate = _command(
        key_actions, "rotate", "make a new key that signs at once", DATABASE_VARS + KEY_VARS
    )
    rotate.add_argument(
        "--retire-old",
        action="store_true",
        help="after a compromise: retire every other key now, invalidating the tokens it signed",
    )
    audit = _command(
        commands,
        "audit",
        "print the audit trail, newest first: failed logins, password, account and key changes",
        DATABASE_VARS + AUDIT_VARS,
    )
    audit.add_argument("--user", metavar="NAME", help="only this user's events")
    audit.add_argument(
        "--since", metavar="ISO-8601", help="only events from this instant on (UTC if no zone)"
    )
    audit.add_argument(
        "--limit",
        type=_event_limit,
        default=LIST_LIMIT_DEFAULT,
        metavar="N",
        help=f"at most N events (default {LIST_LIMIT_DEFAULT})",
    )
    audit.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


# The most events one `authsvc audit` prints (a bound, so that a typo cannot ask PostgreSQL for
# more than int64 holds).
LIMIT_MAX = 1_000_000


def _event_limit(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"not an integer from 1 to {LIMIT_MAX}: {raw!r}")
    return value


def event_line(event: AuditEvent) -> str:
    """One event as one line of text: time, kind, user, source, request id, detail."""
    at = event.at.astimezone(UTC).isoformat(timespec="seconds") if event.at else "-"
    line = (
        f"{at} {event.kind:<22} {text_field(event.username) if event.username else '-'}"
        f" source={text_field(event.source)} request_id={text_field(event.request_id)}"
    )
    return f"{line} {json.dumps(event.detail)[1:-1]}" if event.detail else line


def event_json(event: AuditEvent) -> str:
    return json.dumps(
        {
            "at": event.at.astimezone(UTC).isoformat() if event.at else None,
            "kind": event.kind,
            "username": event.username,
            "source": event.source,
            "request_id": event.request_id,
            "detail": event.detail,
        },
        ensure_ascii=False,
    )


def audit_command(args: argparse.Namespace) -> Action:
    """Validated before the database starts: a bad --since costs nothing."""
    since = parse_instant(args.since, "--since") if args.since is not None else None
    show = event_json if args.json else event_line

    async def audit(services: app.Services) -> None:
        for event in await services.audit.newest(args.user, since, args.limit):
            print(show(event))

    return audit


def keys_command(args: argparse.Namespace) -> Action:
    async def rotate(services: app.Services) -> None:
        key = await services.keys.rotate_now(retire_others=args.retire_old)
        older = (
            "older keys are retired: the tokens they signed no longer verify"
            if args.retire_old
            else "older keys stay published until their tokens expire"
        )
        print(f"new signing key {key.kid} ({key.algorithm}) signs from now on; {older}")

    async def list_keys(services: app.Services) -> None:
        signing = (await services.keys.signing_key()).key.kid
        print(f"{'KID':<44} {'ALG':<6} {'CREATED':<20} {'SIGNS FROM':<20} {'RETIRES':<20} STATE")
        for key in await services.keys.published():
            state = "signing" if key.kid == signing else "verify-only"
            retires = key.retires_at.isoformat(timespec="seconds")[:19] if key.retires_at else "-"
            print(
                f"{key.kid:<44} {key.algorithm:<6} {key.created_at.isoformat()[:19]:<20} "
                f"{key.activates_at.isoformat()[:19]:<20} {retires:<20} {state}"
            )

    return rotate if args.action == "rotate" else list_keys


def user_command(args: argparse.Namespace) -> Action:
    """The administration action for `args`, reading any password before the database starts."""
    if args.action == "create":
        password = read_password(args.password_stdin)

        async def create(services: app.Services) -> None:
            user = await services.users.create(args.name, password, args.group)
            print(f"created user {user.username} ({user.id})")

        return create
    if args.action == "set-password":
        new_password = read_password(args.password_stdin)

        async def set_password(services: app.Services) -> None:
            user = await services.users.get(args.name)
            await services.passwords.set_by_admin(user, new_password)
            print(f"{user.username}: password set; tokens issued before no longer verify")

        return set_password
    if args.action == "list":

        async def list_users(services: app.Services) -> None:
            print(
                f"{'USERNAME':<32} {'ID':<36} {'CREATED':<20} {'LOCKED':<6} {'EXPIRES':<25} GROUPS"
            )
            for u in await services.users.list():
                expires = u.expires_at.isoformat(timespec="seconds") if u.expires_at else "never"
                created = u.created_at.isoformat(timespec="seconds")[:19]
                print(
                    f"{u.username:<32} {u.id!s:<36} {created:<20} {u.locked!s:<6} {expires:<25} "
                    f"{','.join(u.groups) or '-'}"
                )

        return list_users
    if args.action == "groups":

        async def groups(services: app.Services) -> None:
            if args.add or args.remove:
                names = await services.users.change_groups(args.name, args.add, args.remove)
            else:
                names = (await services.users.get(args.name)).groups
            print("\n".join(names) if names else f"{args.name}: no groups")

        return groups
    if args.action == "expire":
        expires_at = parse_expiry(args.at)

        async def expire(services: app.Services) -> None:
            await services.users.set_expiry(args.name, expires_at)
            print(f"{args.name}: expires {expires_at.isoformat() if expires_at else 'never'}")

        return expire

    async def simple(services: app.Services) -> None:
        if args.action == "delete":
            await services.users.delete(args.name)
        else:
            await services.users.set_locked(args.name, args.action == "lock")
        print(f"{args.name}: {args.action}{'d' if args.action == 'delete' else 'ed'}")

    return simple


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        if args.command == "serve":
            uvloop.run(app.serve(settings))
        elif args.command == "gateway":
            check_upstream(settings, args.grpc_target)
            uvloop.run(app.run_standalone_gateway(settings, args.grpc_target))
        elif args.command == "migrate":
            asyncio.run(with_services(settings, lambda _: asyncio.sleep(0)))
        elif args.command == "keys":
            asyncio.run(with_services(settings, keys_command(args)))
        elif args.command == "audit":
            asyncio.run(with_services(settings, audit_command(args)))
        else:
            asyncio.run(with_services(settings, user_command(args)))
    except (ConfigError, UsageError) as exc:
        print(f"authsvc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (AuthError, EmbeddedPostgresError, KeyUnreadableError) as exc:
        print(f"authsvc: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # e.g. a listen address already in use
        print(f"authsvc: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
