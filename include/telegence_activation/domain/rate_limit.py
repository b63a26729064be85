"""The carrier rate limit's pure parts: its settings, the bucket's key, the arithmetic of a take.

The bucket itself lives in the activation database (``repository.rate_limit``) so that every task
of every run shares it. A take always consumes a token and may leave the bucket in debt: the taker
then waits until the bucket would have refilled to zero, i.e. ``-tokens / rate`` seconds. Its turn
is reserved by the take itself, so waiting needs no lock and no second statement, and takers are
served in the order they took.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

RATE_EXTRA = "max_calls_per_second"
BURST_EXTRA = "burst"


class RateLimitSettingError(ValueError):
    """The connection's ``max_calls_per_second`` or ``burst`` extra is not a usable number."""


@dataclass(frozen=True)
class RateLimit:
    """At most ``rate`` calls per second on average, ``burst`` of them at once after a quiet time."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise RateLimitSettingError(f"{RATE_EXTRA} must be a positive number, not {self.rate!r}")
        if not (math.isfinite(self.burst) and self.burst >= 1):
            raise RateLimitSettingError(f"{BURST_EXTRA} must be a number of at least 1, not {self.burst!r}")


def _number(extras: Mapping[str, Any], name: str) -> float | None:
    value = extras.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise RateLimitSettingError(f"{name} must be a number, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RateLimitSettingError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise RateLimitSettingError(f"{name} must be a finite number, not {value!r}")
    return number


def rate_limit_from_extras(extras: Mapping[str, Any]) -> RateLimit | None:
    """The connection's limit: ``max_calls_per_second`` (absent, empty or 0: no limit) and
    ``burst`` (default ``max(1, max_calls_per_second)``, the carrier simulator's default too)."""
    rate = _number(extras, RATE_EXTRA)
    if rate is None or rate == 0:
        return None
    if rate < 0:
        raise RateLimitSettingError(f"{RATE_EXTRA} must be a positive number (0 for no limit), not {rate:g}")
    burst = _number(extras, BURST_EXTRA)
    return RateLimit(rate=rate, burst=burst if burst is not None else max(1.0, rate))


def bucket_key(base_url: str, app_id: str | None) -> str:
    """The bucket of a carrier account: its base URL (scheme, host and port, lower case; no path,
    no user info) and its app-id. Two connection ids to one account share a bucket, as they share
    the carrier's limit; the app-secret is never part of it."""
    parts = urlsplit(base_url.strip() if "://" in base_url else f"http://{base_url.strip()}")
    host = (parts.hostname or "").lower()
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme.lower()}://{netloc} app-id {app_id or ''}"


def refill(tokens: float, elapsed: float, limit: RateLimit) -> float:
    """Tokens after ``elapsed`` seconds (a clock that went back refills nothing), at most ``burst``."""
    return min(limit.burst, tokens + limit.rate * max(0.0, elapsed))


def take(tokens: float, elapsed: float, limit: RateLimit) -> float:
    """Tokens left after taking one, ``elapsed`` seconds after the bucket was last updated (may be
    negative: a debt the taker waits off). The database runs the same formula in one UPDATE."""
    return refill(tokens, elapsed, limit) - 1.0


def wait_seconds(tokens_left: float, limit: RateLimit, since: float = 0.0) -> float:
    """How long a taker waits before sending: nothing if the bucket had a token, else until the
    bucket would have refilled its debt, counted from the bucket's time, ``since`` seconds ago."""
    return 0.0 if tokens_left >= 0 else max(0.0, -tokens_left / limit.rate - max(0.0, since))


def most_calls(limit: RateLimit, seconds: float) -> float:
    """The most calls the limit lets through in any window of ``seconds``: ``burst + rate * seconds``."""
    return limit.burst + limit.rate * max(0.0, seconds)
