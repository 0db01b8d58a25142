"""Brute-force and password rules called directly: the delay formula, complexity, their settings."""

from __future__ import annotations

import pytest

from service.config import ConfigError, load_settings
from service.domain.password_policy import PasswordPolicy, complexity_problems
from service.domain.throttle import ThrottlePolicy
from service.errors import AuthError, Reason

GOOD = "Tr0ub4dor&3x"


def test_delay_doubles_from_base_up_to_max() -> None:
    """After the n-th failure the wait is min(base * 2^(n-1), max); none before any failure."""
    policy = ThrottlePolicy(delay_base=1.0, delay_max=60.0)
    assert [policy.delay_after(n) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.delay_after(10_000) == 60.0


def test_zero_base_turns_the_delay_off() -> None:
    """Base 0 means no wait after any number of failures; with lockout off the throttle is off."""
    policy = ThrottlePolicy(delay_base=0.0, delay_max=60.0)
    assert policy.delay_after(50) == 0.0 and policy.schedule() == [0.0]
    assert not policy.enabled
    assert ThrottlePolicy(delay_base=0.0, lockout_threshold=5).enabled


def test_schedule_lists_delays_until_the_max() -> None:
    """The schedule the store indexes ends at the first delay that reaches the maximum."""
    assert ThrottlePolicy(delay_base=1.0, delay_max=60.0).schedule() == [1, 2, 4, 8, 16, 32, 60]
    assert ThrottlePolicy(delay_base=0.5, delay_max=0.5).schedule() == [0.5]
    assert len(ThrottlePolicy(delay_base=1e-12, delay_max=3600.0).schedule()) <= 64


def test_complex_password_breaks_no_rule() -> None:
    """Upper, lower, digit, special, long enough, no username, no long run: accepted."""
    assert complexity_problems(GOOD, "alice", 8) == []
    PasswordPolicy(complexity=True).check_new(GOOD, "alice")


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("Ab1!xyz", "at least 8 characters"),
        ("ab1!xyzw", "upper-case letter"),
        ("AB1!XYZW", "lower-case letter"),
        ("Abc!xyzw", "a digit"),
        ("Abc1xyzw", "special character"),
        ("Xy1!ALICE", "must not contain the username"),
        ("Xy1!ecila", "must not contain the reversed username"),
        ("Xy1!aaaab", "more than 3 times in a row"),
    ],
)
def test_each_complexity_rule_is_named(password: str, rule: str) -> None:
    """A password breaking one rule is PASSWORD_NOT_COMPLEX with a message naming that rule."""
    with pytest.raises(AuthError) as caught:
        PasswordPolicy(complexity=True).check_new(password, "alice", "new_password")
    assert caught.value.reason is Reason.PASSWORD_NOT_COMPLEX
    assert rule in caught.value.message and caught.value.message.startswith("new_password")
    assert len(complexity_problems(password, "alice", 8)) == 1


def test_three_repeats_are_allowed() -> None:
    """Three identical characters in a row are fine; the fourth is not."""
    assert complexity_problems("Xy1!aaab", "bob", 8) == []


def test_every_broken_rule_is_named() -> None:
    """A password breaking several rules is told all of them at once."""
    problems = complexity_problems("abc", "bob", 8)
    assert len(problems) == 4


def test_special_characters_include_non_ascii_symbols_and_spaces() -> None:
    """Anything that is neither a letter nor a digit counts as special."""
    assert complexity_problems("Abcdefg1 ", "bob", 8) == []
    assert complexity_problems("Abcdefg1€", "bob", 8) == []


def test_complexity_off_only_bounds_the_length() -> None:
    """With complexity off any 1..4096-byte password passes, and longer ones still fail."""
    PasswordPolicy().check_new("~", "a")
    with pytest.raises(AuthError) as caught:
        PasswordPolicy().check_new("a" * 4097, "bob")
    assert caught.value.reason is Reason.INVALID_ARGUMENT


def test_min_length_is_configurable() -> None:
    """The minimum length follows the policy's setting."""
    assert complexity_problems(GOOD, "alice", 13) == ["must be at least 13 characters"]


def test_brute_force_defaults() -> None:
    """Defaults: 1 s doubling to 60 s, lockout off (30 min when on), complexity off, no max age."""
    settings = load_settings({})
    assert (settings.failed_login_delay_base, settings.failed_login_delay_max) == (1.0, 60.0)
    assert (settings.lockout_threshold, settings.lockout_duration) == (0, 1800.0)
    assert (settings.password_complexity, settings.password_min_length) == (False, 8)
    assert settings.password_max_age == 0


@pytest.mark.parametrize(
    ("raw", "value"), [("true", True), ("1", True), ("on", True), ("off", False)]
)
def test_complexity_switch_spellings(raw: str, value: bool) -> None:
    """AUTHSVC_PASSWORD_COMPLEXITY accepts true/false, 1/0, on/off."""
    assert load_settings({"AUTHSVC_PASSWORD_COMPLEXITY": raw}).password_complexity is value


def test_new_variables_are_read() -> None:
    """Each brute-force and password variable reaches the settings."""
    settings = load_settings(
        {
            "AUTHSVC_FAILED_LOGIN_DELAY_BASE": "0.5",
            "AUTHSVC_FAILED_LOGIN_DELAY_MAX": "30",
            "AUTHSVC_LOCKOUT_THRESHOLD": "10",
            "AUTHSVC_LOCKOUT_DURATION": "900",
            "AUTHSVC_PASSWORD_MIN_LENGTH": "12",
            "AUTHSVC_PASSWORD_MAX_AGE": "7776000",
        }
    )
    assert (settings.failed_login_delay_base, settings.failed_login_delay_max) == (0.5, 30.0)
    assert (settings.lockout_threshold, settings.lockout_duration) == (10, 900.0)
    assert (settings.password_min_length, settings.password_max_age) == (12, 7776000)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTHSVC_FAILED_LOGIN_DELAY_BASE", "-1"),
        ("AUTHSVC_FAILED_LOGIN_DELAY_MAX", "soon"),
        ("AUTHSVC_LOCKOUT_THRESHOLD", "1.5"),
        ("AUTHSVC_LOCKOUT_DURATION", "0"),
        ("AUTHSVC_PASSWORD_COMPLEXITY", "maybe"),
        ("AUTHSVC_PASSWORD_MIN_LENGTH", "4"),
        ("AUTHSVC_PASSWORD_MAX_AGE", "-5"),
    ],
)
def test_bad_brute_force_values_name_their_variable(name: str, value: str) -> None:
    """A bad value raises ConfigError whose one-line message starts with the variable's name."""
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    assert str(caught.value).startswith(f"{name}:") and "\n" not in str(caught.value)


def test_delay_max_below_base_is_refused() -> None:
    """A maximum delay below the base one is a configuration error naming the maximum."""
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {"AUTHSVC_FAILED_LOGIN_DELAY_BASE": "10", "AUTHSVC_FAILED_LOGIN_DELAY_MAX": "5"}
        )
    assert str(caught.value).startswith("AUTHSVC_FAILED_LOGIN_DELAY_MAX:")
