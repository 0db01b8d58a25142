"""Rules for new passwords: always the 4 KiB maximum; by default, not in the list of common and
breached passwords (`common_passwords`, NIST SP 800-63B 5.1.1.2); with complexity on, Redis
Enterprise's published rules (off by default, as there).

The list, when on, is loaded when the policy is built, which the composition root does once at
start-up: a missing or unreadable list stops start-up instead of failing the first password
change, and no request pays the load (about 20 ms, README). The shipped list is read once per
process however many policies are built.

Complexity, when on: at least `min_length` characters (default 8), an upper-case letter, a
lower-case letter, a digit and a special character (anything that is neither a letter nor a digit:
punctuation, symbols, spaces); not containing the username or the reversed username (ignoring
case and compatibility forms); no character repeated more than three times in a row. A refusal
names every rule the password breaks, so the caller can fix it in one go.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from service.domain.common_passwords import password_key, read_password_file, shipped_passwords
from service.domain.passwords import check_password
from service.domain.usernames import username_key
from service.errors import AuthError, Reason

MIN_LENGTH_DEFAULT = 8
# The blocklist is on unless the operator turns it off (AUTHSVC_PASSWORD_BLOCKLIST=false): NIST's
# "SHALL".
BLOCKLIST_DEFAULT = True
MAX_REPEATS = 3
TOO_COMMON = "too common: it appears in a list of common or breached passwords"


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
    """`blocklist`: refuse passwords in the shipped list of common and breached passwords.
    `blocklist_file`: an operator's own list (UTF-8, one password per line), refused as well,
    whether or not the shipped list is on."""

    complexity: bool = False
    min_length: int = MIN_LENGTH_DEFAULT
    blocklist: bool = BLOCKLIST_DEFAULT
    blocklist_file: Path | None = None
    _blocked: frozenset[str] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        blocked = shipped_passwords() if self.blocklist else frozenset()
        if self.blocklist_file is not None:
            blocked = blocked | read_password_file(self.blocklist_file)
        object.__setattr__(self, "_blocked", blocked)

    def is_common(self, password: str) -> bool:
        """True when `password`, ignoring case, compatibility forms and surrounding whitespace,
        is in the blocklist (always False with no list on)."""
        return password_key(password) in self._blocked

    def check_new(self, password: str, username: str, field: str = "password") -> None:
        """Refuse a new password for `username`: INVALID_ARGUMENT when empty or over 4 KiB,
        PASSWORD_NOT_COMPLEX when it is in the blocklist or complexity is on and a rule is
        broken; the message names every reason, never the password."""
        check_password(password, field)
        common = self.is_common(password)
        problems = (
            complexity_problems(password, username, self.min_length) if self.complexity else []
        )
        if problems:
            also = f"; it is also {TOO_COMMON}" if common else ""
            raise AuthError(
                Reason.PASSWORD_NOT_COMPLEX,
                f"{field} is not complex enough: it {'; it '.join(problems)}{also}",
            )
        if common:
            raise AuthError(Reason.PASSWORD_NOT_COMPLEX, f"{field} is {TOO_COMMON}; choose another")
