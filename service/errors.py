"""The one error table: reason -> gRPC code -> HTTP status.

The domain and the store raise `AuthError(reason, message)`. `rpc/status.py` is the only place an
error becomes a gRPC status, and the gateway the only place a status becomes HTTP; both read the
tables here, so a reason's meaning is decided once. Kept free of grpc imports so the domain can
use it: codes are named by their `grpc.StatusCode` names.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a call failed; the REST `error_code` is this in lower case."""

    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    CREDENTIALS_REQUIRED = "CREDENTIALS_REQUIRED"
    PASSWORD_EXPIRED = "PASSWORD_EXPIRED"
    ACCOUNT_LOCKED = "ACCOUNT_LOCKED"
    ACCOUNT_EXPIRED = "ACCOUNT_EXPIRED"
    TOO_MANY_ATTEMPTS = "TOO_MANY_ATTEMPTS"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    PASSWORD_NOT_COMPLEX = "PASSWORD_NOT_COMPLEX"
    NEW_PASSWORD_SAME_AS_CURRENT = "NEW_PASSWORD_SAME_AS_CURRENT"
    PASSWORD_REUSED = "PASSWORD_REUSED"
    CANNOT_DELETE_LAST_PASSWORD = "CANNOT_DELETE_LAST_PASSWORD"
    PASSWORD_NOT_FOUND = "PASSWORD_NOT_FOUND"
    TOO_MANY_PASSWORDS = "TOO_MANY_PASSWORDS"
    USER_EXISTS = "USER_EXISTS"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"


# reason -> gRPC status code name (grpc.StatusCode[...]).
GRPC_CODE: dict[Reason, str] = {
    Reason.INVALID_CREDENTIALS: "UNAUTHENTICATED",
    Reason.CREDENTIALS_REQUIRED: "UNAUTHENTICATED",
    Reason.PASSWORD_EXPIRED: "UNAUTHENTICATED",
    Reason.ACCOUNT_LOCKED: "UNAUTHENTICATED",
    Reason.ACCOUNT_EXPIRED: "PERMISSION_DENIED",
    Reason.TOO_MANY_ATTEMPTS: "RESOURCE_EXHAUSTED",
    Reason.INVALID_ARGUMENT: "INVALID_ARGUMENT",
    Reason.PASSWORD_NOT_COMPLEX: "INVALID_ARGUMENT",
    Reason.NEW_PASSWORD_SAME_AS_CURRENT: "INVALID_ARGUMENT",
    Reason.PASSWORD_REUSED: "INVALID_ARGUMENT",
    Reason.CANNOT_DELETE_LAST_PASSWORD: "FAILED_PRECONDITION",
    Reason.PASSWORD_NOT_FOUND: "FAILED_PRECONDITION",
    Reason.TOO_MANY_PASSWORDS: "FAILED_PRECONDITION",
    Reason.USER_EXISTS: "ALREADY_EXISTS",
    Reason.USER_NOT_FOUND: "NOT_FOUND",
    Reason.UNAVAILABLE: "UNAVAILABLE",
    Reason.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
    Reason.INTERNAL: "INTERNAL",
}

# gRPC status code name -> HTTP status, as grpc-gateway's runtime.HTTPStatusFromCode.
HTTP_STATUS: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}

ERROR_DOMAIN = "authsvc"


class AuthError(Exception):
    """A failure with a reason from the table; `message` is safe to show to the caller."""

    def __init__(self, reason: Reason, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def grpc_code(self) -> str:
        return GRPC_CODE[self.reason]

    def __repr__(self) -> str:
        return f"AuthError({self.reason.value}, {self.message!r})"


def invalid_argument(message: str) -> AuthError:
    return AuthError(Reason.INVALID_ARGUMENT, message)


INVALID_CREDENTIALS_MESSAGE = "invalid username or password"
# A deadline that ran out, whoever noticed it (the store waiting on the database, the gateway's
# hop): one text, so that a client sees one 504.
DEADLINE_EXCEEDED_MESSAGE = "the service did not answer in time"


def invalid_credentials() -> AuthError:
    """Every failed login looks like this, whatever failed (unknown user, wrong password, ...)."""
    return AuthError(Reason.INVALID_CREDENTIALS, INVALID_CREDENTIALS_MESSAGE)
