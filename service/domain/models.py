"""The domain's values: plain frozen dataclasses, free of any transport or storage type."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class User:
    id: UUID
    username: str
    created_at: datetime
    locked: bool = False
    expires_at: datetime | None = None
    # Bumped whenever the password list shrinks or is replaced, or the groups change; tokens
    # carry it (revocation).
    credential_version: int = 1
    # Sorted and distinct.
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoredPassword:
    id: int
    hash: str = field(repr=False)
    # When the password was set (its age decides whether it has expired); None when unknown.
    created_at: datetime | None = None
    # When it last logged in, kept coarsely (see `Authenticator`); None when never.
    last_used_at: datetime | None = None


@dataclass(frozen=True)
class Principal:
    """A user who has just proven knowledge of one of their passwords (`password_id`)."""

    user: User
    password_id: int
    # The salt every hash of the user's passwords is made with.
    password_salt: bytes = field(repr=False)
    # The password is older than the configured maximum age: good for changing the password
    # list, not for a token.
    password_expired: bool = False
    # Where the call that proved it came from (rpc/sources.py), for the audit trail.
    source: str = ""


@dataclass(frozen=True)
class FailureCount:
    """Consecutive failed logins on one counter (a name from a source, or a source), as the
    database saw it: `wait` seconds before its next attempt is admitted, `locked_for` seconds of
    lock left (0: none)."""

    failures: int = 0
    wait: float = 0.0
    locked_for: float = 0.0


@dataclass(frozen=True)
class LoginView:
    """Everything a login needs, read in one statement: the user (None if there is no such
    name), its salt and passwords, whether the caller's source has logged in to it before, and
    the failure counters that could apply."""

    user: User | None
    password_salt: bytes | None = field(default=None, repr=False)
    passwords: tuple[StoredPassword, ...] = ()
    # The source's last login to this user (coarse), or None when it never logged in to it.
    source_last_login: datetime | None = None
    # The name's counter for sources that have not logged in to it.
    strangers: FailureCount = FailureCount()
    # The name's counter for this source (meaningful when it is known).
    this_source: FailureCount = FailureCount()
    # The source's counter across every name (password spraying).
    source: FailureCount = FailureCount()
    # The database's clock when it answered.
    now: datetime | None = None

    @property
    def source_known(self) -> bool:
        return self.source_last_login is not None


@dataclass(frozen=True)
class FailureRecord:
    """The counters after a failed login was recorded."""

    name: FailureCount
    source: FailureCount


@dataclass(frozen=True)
class SuccessRecord:
    """What a successful login changes; each field None or False when it changes nothing, and
    nothing is written at all when every field is (the usual login)."""

    user_id: UUID
    source: str
    # The name's counter to reset ("" for strangers, or the source), when it had failures.
    reset_counter: str | None = None
    # Reset the source's own counter (it had failures).
    reset_source: bool = False
    # Remember (or refresh) the source as one that has logged in to the user.
    remember_source: bool = False
    # Mark this password used (coarse), replacing its hash when `rehashed` is set.
    touch_password: int | None = None
    rehashed: str | None = field(default=None, repr=False)

    @property
    def changes_anything(self) -> bool:
        return (
            self.reset_counter is not None
            or self.reset_source
            or self.remember_source
            or self.touch_password is not None
        )


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    # PKCS#8 PEM; passphrase-encrypted when `encrypted`.
    private_pem: bytes = field(repr=False)
    public_jwk: dict[str, Any]
    created_at: datetime
    # Signs from `activates_at`; published (for verification) until `retires_at`, if set.
    activates_at: datetime
    retires_at: datetime | None = None
    encrypted: bool = False


@dataclass(frozen=True)
class VerifiedToken:
    """The claims of a token that is valid now and not revoked."""

    subject: str
    username: str
    issuer: str
    issued_at: int
    expires_at: int
    jti: str
    groups: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    issued_at: datetime
    expires_at: datetime


class AuditKind(StrEnum):
    """What an audit event records (service/domain/audit.py decides when)."""

    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    PASSWORD_ADDED = "password_added"
    PASSWORD_REPLACED = "password_replaced"
    PASSWORD_DELETED = "password_deleted"
    PASSWORD_SET_BY_ADMIN = "password_set_by_admin"
    ACCOUNT_CREATED = "account_created"
    ACCOUNT_DELETED = "account_deleted"
    ACCOUNT_LOCKED = "account_locked"
    ACCOUNT_UNLOCKED = "account_unlocked"
    ACCOUNT_EXPIRY_SET = "account_expiry_set"
    GROUPS_CHANGED = "groups_changed"
    KEY_ROTATED = "key_rotated"
    KEY_RETIRED = "key_retired"


@dataclass(frozen=True)
class AuditEvent:
    """One line of the audit trail; `detail` is written by the domain from facts, never from a
    password, token or hash."""

    # An AuditKind's value (a str, so a kind written by a newer version still reads).
    kind: str
    # As the caller or administrator spelt it, and its key (NFKC + casefold) for lookups.
    username: str
    username_key: str
    # Where the call came from (rpc/sources.py), or who acted when no call did (`cli:NAME`).
    source: str
    request_id: str
    detail: str = ""
    # Set by the database when the event is written.
    at: datetime | None = field(default=None, compare=False)
