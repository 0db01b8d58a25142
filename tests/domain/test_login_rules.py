"""Brute-force and password rules called directly: the delay formula, complexity, their settings."""

from __future__ import annotations

import asyncio

import pytest

from service.domain.models import FailureCount
from service.domain.password_policy import PasswordPolicy, complexity_problems
from service.domain.throttle import LoginThrottle, ThrottlePolicy
from service.errors import AuthError, Reason

GOOD = "Tr0ub4dor&3x"


def test_delay_doubles_after_the_allowance_up_to_max() -> None:
    """The first `allowance` failures cost nothing; after the n-th the wait is
    min(base * 2^(n-allowance-1), max)."""
    policy = ThrottlePolicy(allowance=3, delay_base=1.0, delay_max=60.0)
    delays = [policy.delay_after(n, 3) for n in range(12)]
    assert delays == [0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.delay_after(10_000, 3) == 60.0
    assert [policy.delay_after(n, 0) for n in range(3)] == [0, 1, 2]


def test_zero_base_turns_the_delay_off() -> None:
    """Base 0 means no wait after any number of failures."""
    policy = ThrottlePolicy(delay_base=0.0, delay_max=60.0)
    assert policy.delay_after(50, 3) == 0.0
    assert policy.schedule(3) == [0.0, 0.0, 0.0, 0.0]


def test_schedule_lists_delays_until_the_max() -> None:
    """The schedule the store indexes holds the allowance's zeros, then ends at the first delay
    that reaches the maximum."""
    policy = ThrottlePolicy(delay_base=1.0, delay_max=60.0)
    assert policy.schedule(3) == [0, 0, 0, 1, 2, 4, 8, 16, 32, 60]
    assert policy.schedule(0) == [1, 2, 4, 8, 16, 32, 60]
    assert ThrottlePolicy(delay_base=0.5, delay_max=0.5).schedule(1) == [0, 0.5]
    assert len(ThrottlePolicy(delay_base=1e-12, delay_max=3600.0).schedule(10)) <= 64 + 10


def _throttle(**policy: float) -> LoginThrottle:
    return LoginThrottle(ThrottlePolicy(**policy), store=None)  # type: ignore[arg-type]


async def _turn(throttle: LoginThrottle, count: FailureCount | None = None, **kw: object):
    return await throttle.turn(
        "alice",
        "ip:192.0.2.1",
        source_known=False,
        name_count=count or FailureCount(),
        source_count=FailureCount(),
        **kw,
    )


async def test_a_name_checks_allowance_attempts_at_once_and_queues_the_rest() -> None:
    """With no failures, `allowance` attempts of one name are checked at once; the next waits
    for a turn instead of being refused, and gets it when one ends."""
    throttle = _throttle(allowance=3)
    turns = [await _turn(throttle) for _ in range(3)]
    waiting = asyncio.ensure_future(_turn(throttle))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    throttle.recorded(turns[0], FailureCount(), FailureCount())  # a success
    throttle.done(turns[0])
    fourth = await asyncio.wait_for(waiting, 1)
    for turn in (*turns[1:], fourth):
        throttle.done(turn)


async def test_waiters_are_refused_once_the_name_is_delayed() -> None:
    """When the attempts in flight fail past the allowance, those waiting get TOO_MANY_ATTEMPTS
    with the wait, uncounted; after the allowance only one attempt is checked at a time."""
    throttle = _throttle(allowance=1)
    first = await _turn(throttle)
    waiting = asyncio.ensure_future(_turn(throttle))
    await asyncio.sleep(0.01)
    throttle.recorded(first, FailureCount(failures=2, wait=5.0), FailureCount(failures=2))
    throttle.done(first)
    with pytest.raises(AuthError) as caught:
        await asyncio.wait_for(waiting, 1)
    assert caught.value.reason is Reason.TOO_MANY_ATTEMPTS
    assert 4.0 < (caught.value.retry_after or 0) <= 5.0


async def test_a_delayed_count_is_refused_before_any_turn() -> None:
    """An attempt whose count the database says is delayed is refused at once."""
    with pytest.raises(AuthError) as caught:
        await _turn(_throttle(), FailureCount(failures=4, wait=1.5))
    assert caught.value.reason is Reason.TOO_MANY_ATTEMPTS


async def test_a_cancelled_waiter_leaves_no_lane_behind() -> None:
    """A caller that gives up while waiting takes nothing with it: the lanes empty out."""
    throttle = _throttle(allowance=1)
    first = await _turn(throttle)
    waiting = asyncio.ensure_future(_turn(throttle))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    throttle.done(first)
    assert len(throttle._names) == 0 and len(throttle._sources) == 0


async def test_a_known_source_skips_the_source_count() -> None:
    """A source known to the name counts on the name's count for that source, exempt from the
    source's own (spray) delay; a stranger is refused by it."""
    throttle = _throttle()
    delayed_source = FailureCount(failures=11, wait=3.0)
    turn = await throttle.turn(
        "alice",
        "ip:192.0.2.1",
        source_known=True,
        name_count=FailureCount(),
        source_count=delayed_source,
    )
    assert turn.counter == "ip:192.0.2.1"
    throttle.done(turn)
    with pytest.raises(AuthError):
        await throttle.turn(
            "alice",
            "ip:192.0.2.1",
            source_known=False,
            name_count=FailureCount(),
            source_count=delayed_source,
        )


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


async def test_waiters_woken_together_each_get_their_turn() -> None:
    """With room for one, three attempts take turns: none is lost when the first leaves (the
    lane stays while the woken ones look again)."""
    throttle = _throttle(allowance=3)
    count = FailureCount(failures=2)  # room for one at a time
    first = await _turn(throttle, count)
    second = asyncio.ensure_future(_turn(throttle, count))
    third = asyncio.ensure_future(_turn(throttle, count))
    await asyncio.sleep(0.01)
    throttle.done(first)
    turn = await asyncio.wait_for(second, 1)
    assert not third.done()
    throttle.done(turn)
    throttle.done(await asyncio.wait_for(third, 1))
    assert len(throttle._names) == 0


async def test_a_read_older_than_a_recorded_failure_cannot_reopen_the_count() -> None:
    """A count delayed by a recorded failure stays delayed for an attempt whose read predates
    that failure (reads and records of a burst interleave)."""
    throttle = _throttle(allowance=1)
    first = await _turn(throttle)
    throttle.recorded(first, FailureCount(failures=2, wait=5.0), FailureCount(failures=2))
    throttle.done(first)
    with pytest.raises(AuthError) as caught:
        await _turn(throttle, FailureCount(failures=0, wait=0.0))  # read before the failure
    assert caught.value.reason is Reason.TOO_MANY_ATTEMPTS
