"""HTTP outcome rules shared by every carrier call: what is retried, how long to wait, redaction."""

from __future__ import annotations

import email.utils
import time

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def is_retryable_status(status: int) -> bool:
    """5xx and 429 are transient; every other 4xx is final (retrying cannot fix the request)."""
    return status in RETRYABLE_STATUSES or status >= 500


def is_ambiguous_status(status: int) -> bool:
    """A 5xx may come after the carrier applied the write: its outcome is unknown until reconciled.

    429 is refused before any work (throttled); other 4xx answers are final refusals.
    """
    return status >= 500


CONFIGURATION_FAILURE_MARKERS = (
    "HTTP 401",
    "HTTP 403",
    "Unable to get Telegence API credentials",
    "Write is disabled",
)


def is_configuration_failure(reason: str | None) -> bool:
    """A failure that no retry fixes without a person: credentials, a read-only account, 401/403."""
    return bool(reason) and any(marker in str(reason) for marker in CONFIGURATION_FAILURE_MARKERS)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def redact(text: str, secrets: list[str]) -> str:
    """Replace every secret in ``text`` by ``***`` (for audit rows and logs)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
