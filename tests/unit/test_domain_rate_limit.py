"""The carrier rate limit's pure parts: settings from the connection's extras, the bucket's key,
and the arithmetic of a take (the same formula the database runs)."""

from __future__ import annotations

import pytest

from telegence_activation.domain.rate_limit import (
    RateLimit,
    RateLimitSettingError,
    bucket_key,
    most_calls,
    rate_limit_from_extras,
    refill,
    take,
    wait_seconds,
)


@pytest.mark.parametrize(
    "extras", [{}, {"max_calls_per_second": None}, {"max_calls_per_second": 0}, {"max_calls_per_second": ""}]
)
def test_no_rate_or_zero_means_no_limit(extras: dict[str, object]) -> None:
    assert rate_limit_from_extras(extras) is None


def test_burst_defaults_to_one_second_of_calls_and_at_least_one() -> None:
    assert rate_limit_from_extras({"max_calls_per_second": 20}) == RateLimit(rate=20.0, burst=20.0)
    assert rate_limit_from_extras({"max_calls_per_second": "0.5"}) == RateLimit(rate=0.5, burst=1.0)
    assert rate_limit_from_extras({"max_calls_per_second": 20, "burst": 5}) == RateLimit(rate=20.0, burst=5.0)


@pytest.mark.parametrize(
    ("extras", "message"),
    [
        ({"max_calls_per_second": -1}, "max_calls_per_second must be a positive number"),
        ({"max_calls_per_second": "fast"}, "max_calls_per_second must be a number"),
        ({"max_calls_per_second": True}, "max_calls_per_second must be a number"),
        ({"max_calls_per_second": "inf"}, "finite"),
        ({"max_calls_per_second": 10, "burst": 0.5}, "burst must be a number of at least 1"),
        ({"max_calls_per_second": 10, "burst": "x"}, "burst must be a number"),
    ],
)
def test_a_bad_setting_is_refused_not_ignored(extras: dict[str, object], message: str) -> None:
    with pytest.raises(RateLimitSettingError, match=message):
        rate_limit_from_extras(extras)


def test_two_connections_to_one_account_share_a_bucket() -> None:
    key = bucket_key("https://Telegence.Example.com/", "app-1")
    assert key == "https://telegence.example.com app-id app-1"
    assert bucket_key("https://telegence.example.com", "app-1") == key
    assert bucket_key("https://user:pw@telegence.example.com/sp", "app-1") == key  # no user info, no path
    assert bucket_key("https://telegence.example.com", "app-2") != key
    assert bucket_key("http://127.0.0.1:8089", "a") == "http://127.0.0.1:8089 app-id a"
    assert bucket_key("127.0.0.1:8089", "a") == "http://127.0.0.1:8089 app-id a"


def test_refill_is_capped_at_the_burst_and_a_clock_going_back_refills_nothing() -> None:
    limit = RateLimit(rate=10, burst=5)
    assert refill(0, 0.2, limit) == pytest.approx(2.0)
    assert refill(0, 10, limit) == 5
    assert refill(1, -3, limit) == 1
    assert refill(-4, 0.3, limit) == pytest.approx(-1.0)


def test_a_take_may_leave_a_debt_that_the_taker_waits_off() -> None:
    limit = RateLimit(rate=10, burst=2)
    tokens = take(2, 0, limit)  # full bucket
    assert tokens == 1 and wait_seconds(tokens, limit) == 0
    tokens = take(tokens, 0, limit)
    assert tokens == 0 and wait_seconds(tokens, limit) == 0
    tokens = take(tokens, 0, limit)  # empty: the third caller waits for one token's refill
    assert tokens == -1 and wait_seconds(tokens, limit) == pytest.approx(0.1)
    tokens = take(tokens, 0, limit)  # and the fourth for two
    assert wait_seconds(tokens, limit) == pytest.approx(0.2)
    # Counted from the bucket's time: an answer that arrived 0.05 s after it waits that much less.
    assert wait_seconds(tokens, limit, since=0.05) == pytest.approx(0.15)
    assert wait_seconds(tokens, limit, since=1.0) == 0


def test_takers_served_by_the_arithmetic_never_exceed_burst_plus_rate_times_t() -> None:
    """Simulate many takers arriving at once: the send times the waits give keep the limit."""
    limit = RateLimit(rate=20, burst=5)
    tokens, last, sends = limit.burst, 0.0, []
    for n in range(200):
        now = n * 0.001  # 200 takes within 0.2 s
        tokens = take(tokens, now - last, limit)
        last = now
        sends.append(now + wait_seconds(tokens, limit))
    for start in sends:
        for window in (0.0, 0.5, 1.0, 3.0):
            inside = sum(1 for s in sends if start <= s <= start + window + 1e-9)
            assert inside <= most_calls(limit, window) + 1e-9
    assert sends[-1] == pytest.approx((200 - 5) / 20, abs=0.01)  # and no slower than the limit


def test_a_limit_must_be_positive() -> None:
    with pytest.raises(RateLimitSettingError):
        RateLimit(rate=0, burst=1)
    with pytest.raises(RateLimitSettingError):
        RateLimit(rate=1, burst=0)
