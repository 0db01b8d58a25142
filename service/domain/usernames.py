"""Username rules: what a name may be, and the key that makes two spellings the same account."""

from __future__ import annotations

import unicodedata

from service.errors import invalid_argument

USERNAME_MAX_CHARS = 256


def username_key(username: str) -> str:
    """NFKC + case folding, so `Alice`, `ALICE` and its full-width form are one account (and one
    failed-login counter): lookups, uniqueness and rate limits all use this key."""
    return unicodedata.normalize("NFKC", username).casefold()


def check_username(username: str) -> None:
    """A name must be 1..256 characters, without control characters or ':' (which Basic
    authentication uses as its separator)."""
    if not username:
        raise invalid_argument("username is required")
    if len(username) > USERNAME_MAX_CHARS:
        raise invalid_argument(f"username is longer than {USERNAME_MAX_CHARS} characters")
    if ":" in username:
        raise invalid_argument("username must not contain ':'")
    if any(unicodedata.category(ch) == "Cc" for ch in username):
        raise invalid_argument("username must not contain control characters")


# Unicode categories a new name may not hold: format characters (zero-width spaces and joiners,
# bidirectional overrides that make a name read as another), line and paragraph separators.
_INVISIBLE = frozenset({"Cf", "Zl", "Zp"})
# Characters that draw nothing although Unicode calls them letters, marks or symbols: the Hangul
# fillers, the braille blank, the combining grapheme joiner.
_BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f")


def check_new_username(username: str) -> None:
    """A new account's name: the rules every name follows, and nothing that makes it look like
    another in a list or a log: no space at either end, no invisible or direction-changing
    character. (Login keeps the lighter rule, so that an account made before still logs in.)"""
    check_username(username)
    if username != username.strip():
        raise invalid_argument("username must not begin or end with a space")
    if any(unicodedata.category(ch) in _INVISIBLE or ch in _BLANKS for ch in username):
        raise invalid_argument("username must not contain invisible or direction characters")
