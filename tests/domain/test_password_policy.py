"""The password policy called directly: each complexity rule, named in the refusal."""

from __future__ import annotations

import pytest

from service.domain.password_policy import PasswordPolicy
from service.errors import AuthError, Reason

NAME = "Complexuser"


@pytest.mark.parametrize(
    ("template", "rule"),
    [
        ("Ab1!xyzuv", "must be at least 10 characters"),
        ("ab1!xyzuvw", "must contain an upper-case letter"),
        ("AB1!XYZUVW", "must contain a lower-case letter"),
        ("Abc!xyzuvw", "must contain a digit"),
        ("Abc1xyzuvw", "must contain a special character"),
        ("Xy1!{name}", "must not contain the username"),
        ("Xy1!{reversed}", "must not contain the reversed username"),
        ("Xy1!aaaabcd", "must not repeat a character more than 3 times in a row"),
    ],
    ids=["length", "upper", "lower", "digit", "special", "username", "reversed", "repeats"],
)
def test_a_password_breaking_a_rule_is_not_complex(template: str, rule: str) -> None:
    """With complexity on (minimum 10), a new password breaking one rule is refused
    PASSWORD_NOT_COMPLEX, and the message names that rule."""
    policy = PasswordPolicy(complexity=True, min_length=10)
    new = template.format(name=NAME.upper(), reversed=NAME[::-1])
    with pytest.raises(AuthError) as caught:
        policy.check_new(new, NAME)
    assert caught.value.reason is Reason.PASSWORD_NOT_COMPLEX
    assert rule in caught.value.message


def test_a_password_meeting_every_rule_passes() -> None:
    """A long, mixed, uncommon password passes every rule."""
    PasswordPolicy(complexity=True, min_length=10).check_new("Fresh&Strong42", NAME)
