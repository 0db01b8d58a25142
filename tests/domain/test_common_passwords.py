"""The list of common and breached passwords, called directly: its size and form, the matching,
the setting that turns it off, and an operator's own list."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from service.domain.common_passwords import SHIPPED_LIST, password_key, shipped_passwords
from service.domain.password_policy import PasswordPolicy, complexity_problems
from service.errors import AuthError, Reason

UNCOMMON = "violet-quarry-41-tandem"
TOO_COMMON = "new_password is too common: it appears in a list of common or breached passwords"


def full_width(text: str) -> str:
    """The full-width compatibility form of printable ASCII (NFKC maps it back)."""
    return "".join(chr(ord(ch) + 0xFEE0) for ch in text)


def refusal(policy: PasswordPolicy, password: str) -> AuthError:
    with pytest.raises(AuthError) as caught:
        policy.check_new(password, "alice", "new_password")
    return caught.value


def test_the_shipped_list_is_at_least_as_long_as_djangos() -> None:
    """The shipped list holds at least Django's 20,000 entries."""
    assert len(shipped_passwords()) >= 20_000


def test_the_shipped_file_is_normalised_sorted_and_unique() -> None:
    """Every line of the shipped file is already in compared form, once, in order: that is what
    lets the loader skip normalising 56k entries."""
    text = resources.files("service.domain").joinpath(SHIPPED_LIST).read_text(encoding="utf-8")
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    assert all(line and password_key(line) == line for line in lines)
    assert lines == sorted(set(lines))
    assert len(lines) == len(shipped_passwords())


def test_the_shipped_list_is_read_once() -> None:
    """Every policy shares the one frozenset read from the package."""
    assert shipped_passwords() is shipped_passwords()


@pytest.mark.parametrize(
    "password",
    [
        "password1",
        "Password1",
        "  qwerty123 ",
        "PASSWORD1",
        full_width("password1"),
        "\u3000iloveyou\t",
    ],
    ids=["lower", "capitalised", "surrounding-spaces", "upper", "full-width", "unicode-spaces"],
)
def test_a_common_password_is_refused_by_default(password: str) -> None:
    """A listed password, whatever its case, compatibility form or surrounding whitespace, is
    PASSWORD_NOT_COMPLEX with a message that names the reason and not the password."""
    error = refusal(PasswordPolicy(), password)
    assert error.reason is Reason.PASSWORD_NOT_COMPLEX
    assert error.message == f"{TOO_COMMON}; choose another"
    assert password.strip().lower() not in error.message.lower()


@pytest.mark.parametrize(
    "password", [UNCOMMON, "password1 is long enough", "qwerty123x!", "correct horse"]
)
def test_an_uncommon_password_is_accepted(password: str) -> None:
    """A password not in the list passes, even one that contains a listed one."""
    PasswordPolicy().check_new(password, "alice", "new_password")


def test_the_setting_turns_the_list_off() -> None:
    """With the blocklist off, a listed password is accepted (complexity off)."""
    PasswordPolicy(blocklist=False).check_new("password1", "alice", "new_password")
    assert not PasswordPolicy(blocklist=False).is_common("password1")


def test_the_list_applies_when_complexity_is_on() -> None:
    """A listed password that meets every complexity rule is still refused for being common."""
    assert complexity_problems("P@ssw0rd", "alice", 8) == []
    error = refusal(PasswordPolicy(complexity=True), "P@ssw0rd")
    assert error.message == f"{TOO_COMMON}; choose another"
    PasswordPolicy(complexity=True).check_new("P@ssw0rd-Violet", "alice", "new_password")


def test_a_refusal_names_complexity_and_the_list_together() -> None:
    """A password that is both simple and common is told both reasons at once."""
    error = refusal(PasswordPolicy(complexity=True), "password1")
    assert error.message.startswith("new_password is not complex enough: it must contain")
    assert error.message.endswith(
        "; it is also too common: it appears in a list of common or breached passwords"
    )


def test_an_operators_list_is_refused_too(tmp_path: Path) -> None:
    """Lines of the operator's file are refused (matched like the shipped list), blank lines
    ignored, alongside the shipped list."""
    extra = tmp_path / "ours.txt"
    extra.write_text(
        "Acme-Winter-2024\n\n  #hashtag  \r\n" + full_width("FULL") + "\n", encoding="utf-8"
    )
    policy = PasswordPolicy(blocklist_file=extra)
    for password in ("acme-winter-2024", "ACME-WINTER-2024 ", "#hashtag", "full"):
        assert refusal(policy, password).reason is Reason.PASSWORD_NOT_COMPLEX
    assert policy.is_common("password1")
    assert not policy.is_common("")
    policy.check_new(UNCOMMON, "alice")


def test_an_operators_list_works_without_the_shipped_one(tmp_path: Path) -> None:
    """With the shipped list off, the operator's file alone is checked."""
    extra = tmp_path / "ours.txt"
    extra.write_text("acme-winter-2024\n", encoding="utf-8")
    policy = PasswordPolicy(blocklist=False, blocklist_file=extra)
    assert policy.is_common("Acme-Winter-2024")
    policy.check_new("password1", "alice")
