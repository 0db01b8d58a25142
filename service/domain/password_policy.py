"""Rules for new passwords: always the 4 KiB maximum; with complexity on, Redis Enterprise's
published rules (off by default, as there).

Complexity, when on: at least `min_length` characters (default 8), an upper-case letter, a
lower-case letter, a digit and a special character (anything that is neither a letter nor a digit:
punctuation, symbols, spaces); not containing the username or the reversed username (ignoring
case and compatibility forms); no character repeated more than three times in a row. A refusal
names every rule the password breaks, so the caller can fix it in one go.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from service.domain.passwords import check_password
from service.domain.usernames import username_key
from service.errors import AuthError, Reason

MIN_LENGTH_DEFAULT = 8
MAX_REPEATS = 3


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch).startswith("L")


def _is_digit(ch: str) -> bool:
    return unicodedata.category(ch) == "Nd"


def _longest_run(text: str) -> int:
    longest = run = 0
    previous = None
    for ch in text:
        run = run + 1 if ch == previous else 1
        previous = ch
        longest = max(longest, run)
    return longest


def complexity_problems(password: str, username: str, min_length: int) -> list[str]:
    """Every complexity rule `password` breaks, as phrases completing "the password ..."."""
    problems = []
    if len(password) < min_length:
        problems.append(f"must be at least {min_length} characters")
    if not any(unicodedata.category(ch) == "Lu" for ch in password):
        problems.append("must contain an upper-case letter")
    if not any(unicodedata.category(ch) == "Ll" for ch in password):
        problems.append("must contain a lower-case letter")
    if not any(_is_digit(ch) for ch in password):
        problems.append("must contain a digit")
    if all(_is_letter(ch) or _is_digit(ch) for ch in password):
        problems.append("must contain a special character")
    folded, name = username_key(password), username_key(username)
    if name and name in folded:
        problems.append("must not contain the username")
    elif name and name[::-1] in folded:
        problems.append("must not contain the reversed username")
    if _longest_run(password) > MAX_REPEATS:
        problems.append(f"must not repeat a character more than {MAX_REPEATS} times in a row")
    return problems


@dataclass(frozen=True)
class PasswordPolicy:
    complexity: bool = False
    min_length: int = MIN_LENGTH_DEFAULT

    def check_new(self, password: str, username: str, field: str = "password") -> None:
        """Refuse a new password for `username`: INVALID_ARGUMENT when empty or over 4 KiB,
        PASSWORD_NOT_COMPLEX when complexity is on and a rule is broken."""
        check_password(password, field)
        if not self.complexity:
            return
        problems = complexity_problems(password, username, self.min_length)
        if problems:
            raise AuthError(
                Reason.PASSWORD_NOT_COMPLEX,
                f"{field} is not complex enough: it {'; it '.join(problems)}",
            )
