"""HTTP outcome rules: which statuses are retried, Retry-After, redaction."""

from __future__ import annotations

import pytest

from telegence_activation.domain.http import is_retryable_status, redact, retry_after_seconds

# Wed, 21 Oct 2015 07:28:00 GMT as a POSIX timestamp.
DATE_TS = 1445412480.0


@pytest.mark.parametrize("status", [429, 500, 501, 502, 503, 504, 507, 599])
def test_5xx_and_429_are_retryable(status: int) -> None:
    assert is_retryable_status(status) is True


@pytest.mark.parametrize("status", [200, 201, 204, 301, 400, 401, 403, 404, 408, 409, 422, 428, 499])
def test_other_statuses_are_final(status: int) -> None:
    assert is_retryable_status(status) is False


@pytest.mark.parametrize(("value", "seconds"), [("7", 7.0), ("0", 0.0), (" 120 ", 120.0), ("3600", 3600.0)])
def test_retry_after_as_delta_seconds(value: str, seconds: float) -> None:
    assert retry_after_seconds(value) == seconds


def test_retry_after_as_http_date_is_seconds_from_now() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=DATE_TS - 30) == 30.0


def test_retry_after_as_http_date_with_an_offset_is_the_same_instant() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 09:28:00 +0200", now=DATE_TS - 12.5) == 12.5


def test_retry_after_date_in_the_past_means_no_wait() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=DATE_TS + 600) == 0.0
    # Without an explicit ``now`` the wall clock is used (2015 is long past).
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "7s", "2015-10-21T07:28:00Z"])
def test_retry_after_that_is_neither_seconds_nor_a_date_is_ignored(value: str | None) -> None:
    assert retry_after_seconds(value, now=DATE_TS) is None


def test_redact_replaces_every_occurrence_of_every_secret() -> None:
    text = '{"app-secret": "s3cr3t", "echo": "s3cr3t", "token": "tok-123"}'
    assert redact(text, ["s3cr3t", "tok-123"]) == '{"app-secret": "***", "echo": "***", "token": "***"}'


def test_redact_ignores_empty_secrets() -> None:
    # An empty secret must not insert *** between every character.
    assert redact("abc", ["", "zzz"]) == "abc"


def test_redact_without_secrets_keeps_the_text() -> None:
    assert redact("HTTP 503 from carrier", []) == "HTTP 503 from carrier"


def test_configuration_failures_are_told_apart_from_others() -> None:
    from telegence_activation.domain.http import is_configuration_failure

    assert is_configuration_failure("carrier refused the activation: HTTP 403: Forbidden")
    assert is_configuration_failure("Write is disabled for service provider 3")
    assert is_configuration_failure("Unable to get Telegence API credentials for service provider 1: ...")
    assert not is_configuration_failure("carrier refused the activation: HTTP 400: bad item")
    assert not is_configuration_failure(None)
