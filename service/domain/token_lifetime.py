"""How long an access token may live: the Redis Enterprise rules (1..86400 seconds, 300 when not
given). A leaf, so that tokens and signing keys (whose verify window is the longest lifetime) can
both read it."""

from __future__ import annotations

from service.errors import invalid_argument

TTL_MIN, TTL_MAX, TTL_DEFAULT = 1, 86400, 300


def check_ttl(ttl: int | None) -> int:
    """The token lifetime in seconds: 1..86400, 300 when not given (the Redis Enterprise rules)."""
    if ttl is None:
        return TTL_DEFAULT
    if not TTL_MIN <= ttl <= TTL_MAX:
        raise invalid_argument(f"ttl must be between {TTL_MIN} and {TTL_MAX} seconds, got {ttl}")
    return ttl
