"""Groups on users: what the services that receive a token need to authorize the caller.

Names follow the username rules (1..256 characters, no control characters) except that ':' is
allowed ("team:billing"); they are kept as given (case-sensitive, like Keycloak's), sorted and
distinct. A user holds at most MAX_GROUPS. Tokens carry them as `groups` (RFC 9068 section
2.2.3.1), and the `api` scope goes to every user, or, with `api_groups` set (Densify's
"API-enabled" users), only to members of one of those groups.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Iterable

from service.errors import AuthError, invalid_argument

MAX_GROUPS = 64
GROUP_MAX_CHARS = 256
API_SCOPE = "api"


def check_group(name: str) -> None:
    if not name:
        raise invalid_argument("a group name must not be empty")
    if len(name) > GROUP_MAX_CHARS:
        raise invalid_argument(f"a group name is longer than {GROUP_MAX_CHARS} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise invalid_argument("a group name must not contain control characters")


def group_set(names: Iterable[str]) -> tuple[str, ...]:
    """`names` checked, sorted and distinct; at most MAX_GROUPS of them."""
    groups = tuple(sorted(set(names)))
    for name in groups:
        check_group(name)
    if len(groups) > MAX_GROUPS:
        raise too_many_groups()
    return groups


def too_many_groups() -> AuthError:
    return invalid_argument(f"a user holds at most {MAX_GROUPS} groups")


def scopes(groups: Collection[str], api_groups: frozenset[str] | None) -> tuple[str, ...]:
    """The scopes a user's token carries: `api` for everyone when `api_groups` is None, else
    only for members of one of them."""
    if api_groups is None or not api_groups.isdisjoint(groups):
        return (API_SCOPE,)
    return ()
