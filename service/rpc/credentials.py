"""Credentials from gRPC metadata: `authorization: Basic base64(username:password)` (RFC 7617).

The password is everything after the first ':' (so it may contain ':'); both halves are UTF-8.
A malformed header is INVALID_ARGUMENT (the request cannot be understood); a missing one, or
another scheme, is CREDENTIALS_REQUIRED (401, with a challenge on REST).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from service.errors import AuthError, Reason, invalid_argument

Metadata = Iterable[tuple[str, str | bytes]]


def credentials_required() -> AuthError:
    return AuthError(Reason.CREDENTIALS_REQUIRED, "Basic credentials are required")


def basic_credentials(metadata: Metadata) -> tuple[str, str] | None:
    """(username, password) from the metadata, or None when there are no Basic credentials
    (no authorization entry, or another scheme, which Authorize then ignores for body fields)."""
    values = [value for key, value in metadata if key.lower() == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise invalid_argument("more than one authorization header")
    value = values[0]
    if isinstance(value, bytes):
        raise invalid_argument("malformed authorization header")
    scheme, _, param = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None  # another scheme (a Bearer token, say) carries no password
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise invalid_argument("malformed Basic credentials: not base64 of UTF-8 text") from None
    username, colon, password = decoded.partition(":")
    if not colon:
        raise invalid_argument("malformed Basic credentials: no ':' after the username")
    return username, password


def require_basic_credentials(metadata: Metadata) -> tuple[str, str]:
    credentials = basic_credentials(metadata)
    if credentials is None:
        raise credentials_required()
    return credentials
