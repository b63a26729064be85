"""TelegenceHook against HTTP mocked with requests-mock: headers, retry policy, redaction, paths."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
from requests_mock import Mocker

from telegence_activation.hooks.telegence import DEFAULT_PATHS, TelegenceAppAuth, TelegenceHook

BASE = "http://carrier.test"
SECRET = "very-secret-xyz"
STATUS_URL = BASE + DEFAULT_PATHS["activation_status"].format(request_id="REQ-1")
ACTIVATE_URL = BASE + DEFAULT_PATHS["activate"]

HookFactory = Callable[..., tuple[TelegenceHook, list[float]]]
ACCEPTED = [
    {
        "id": "REQ-1",
        "billingAccount": {"id": "B"},
        "service": {"status": "pending", "serviceCharacteristic": [{"name": "sim", "value": "8901"}]},
    }
]


@pytest.fixture
def make_hook(monkeypatch: pytest.MonkeyPatch) -> HookFactory:
    """Build a hook on connection ``telegence_test``; extras default to 3 fast attempts."""

    def make(**extra: Any) -> tuple[TelegenceHook, list[float]]:
        extras = {"max_attempts": 3, "backoff_initial": 0.001, "backoff_max": 0.002, **extra}
        extras = {k: v for k, v in extras.items() if v is not None}
        monkeypatch.setenv(
            "AIRFLOW_CONN_TELEGENCE_TEST",
            json.dumps(
                {
                    "conn_type": "http",
                    "host": BASE,
                    "login": "app-1",
                    "password": SECRET,
                    "extra": extras,
                }
            ),
        )
        sleeps: list[float] = []
        return TelegenceHook("telegence_test", sleep=sleeps.append), sleeps

    return make


# -------------------------------------------------------------------------------------------- headers


def test_get_sends_app_id_app_secret_and_accept_but_no_basic_auth(
    make_hook: HookFactory, requests_mock: Mocker
) -> None:
    hook, _ = make_hook()
    requests_mock.get(STATUS_URL, json=[])
    hook.activation_status("REQ-1")
    headers = requests_mock.request_history[0].headers
    assert headers["app-id"] == "app-1"
    assert headers["app-secret"] == SECRET
    assert headers["Accept"] == "application/json"
    assert "Authorization" not in headers


def test_post_carries_the_credentials_and_the_json_body(
    make_hook: HookFactory, requests_mock: Mocker
) -> None:
    hook, _ = make_hook()
    requests_mock.post(ACTIVATE_URL, status_code=201, json=ACCEPTED)
    response = hook.activate([{"billingAccount": {"id": "B"}}])
    sent = requests_mock.request_history[0]
    assert sent.method == "POST"
    assert sent.json() == [{"billingAccount": {"id": "B"}}]
    assert sent.headers["app-id"] == "app-1" and sent.headers["app-secret"] == SECRET
    assert "Authorization" not in sent.headers
    assert (response.ok, response.status, response.body) == (True, 201, ACCEPTED)


def test_own_extras_are_not_sent_as_headers_but_unknown_extras_are(
    make_hook: HookFactory, requests_mock: Mocker
) -> None:
    hook, _ = make_hook(
        write_enabled="false",
        retry_after_max=5,
        sandbox=True,
        timeout=10,
        paths={"service": DEFAULT_PATHS["service"]},
        **{"X-Trace-Source": "airflow"},
    )
    requests_mock.get(STATUS_URL, json=[])
    hook.activation_status("REQ-1")
    headers = {k.lower(): v for k, v in requests_mock.request_history[0].headers.items()}
    for own in (
        "write_enabled",
        "max_attempts",
        "backoff_initial",
        "backoff_max",
        "retry_after_max",
        "sandbox",
        "paths",
        "timeout",
    ):
        assert own not in headers
    assert headers["x-trace-source"] == "airflow"


def test_provisioning_status_sends_the_batch_id_header(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, _ = make_hook()
    requests_mock.get(BASE + DEFAULT_PATHS["provisioning_status"], json=[])
    hook.provisioning_status("8081b1f0-d070-11eb-a2ea-a0cec8c59839")
    sent = requests_mock.request_history[0]
    assert sent.method == "GET"
    assert sent.headers["batch-id"] == "8081b1f0-d070-11eb-a2ea-a0cec8c59839"
    assert sent.headers["app-secret"] == SECRET


def test_the_batch_id_header_is_only_on_that_request(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, _ = make_hook()
    requests_mock.get(BASE + DEFAULT_PATHS["provisioning_status"], json=[])
    requests_mock.get(STATUS_URL, json=[])
    hook.provisioning_status("8081b1f0-d070-11eb-a2ea-a0cec8c59839")
    hook.activation_status("REQ-1")
    assert "batch-id" not in requests_mock.request_history[1].headers


def test_reserve_ips_and_update_service_bodies(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, _ = make_hook()
    requests_mock.post(BASE + DEFAULT_PATHS["reserve_ips"], json={"ipAddressRecords": []})
    requests_mock.patch(BASE + DEFAULT_PATHS["service"].format(subscriber_number="2145550100"), json={})
    hook.reserve_ips("DEMO.PDP", 10)
    hook.update_service("2145550100", {"effectiveDate": ""})
    reserve, patch = requests_mock.request_history
    assert reserve.json() == {"pdpName": "DEMO.PDP", "ipQuantity": 10}
    assert (patch.method, patch.json()) == ("PATCH", {"effectiveDate": ""})


def test_app_auth_sends_an_empty_secret_when_none() -> None:
    prepared = requests.Request("GET", BASE).prepare()
    TelegenceAppAuth("app-9", None)(prepared)
    assert prepared.headers["app-id"] == "app-9"
    assert prepared.headers["app-secret"] == ""


def test_conn_id_for_a_service_provider() -> None:
    assert TelegenceHook.conn_id_for(7) == "telegence_sp_7"


# --------------------------------------------------------------------------------------- retry policy


def test_503_then_200_succeeds_on_the_second_attempt(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, sleeps = make_hook()
    requests_mock.get(
        STATUS_URL, [{"status_code": 503, "text": "busy"}, {"status_code": 200, "json": [{"id": "R"}]}]
    )
    response = hook.activation_status("REQ-1")
    assert response.ok
    assert response.body == [{"id": "R"}]
    assert response.attempts == 2
    assert response.transient_failures == ["HTTP 503"]
    assert response.exhausted is False
    assert requests_mock.call_count == 2
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.001  # first backoff: at most backoff_initial


@pytest.mark.parametrize("status", [500, 502, 504])
def test_other_5xx_are_retried(make_hook: HookFactory, requests_mock: Mocker, status: int) -> None:
    hook, _ = make_hook()
    requests_mock.get(STATUS_URL, [{"status_code": status}, {"status_code": 200, "json": []}])
    response = hook.activation_status("REQ-1")
    assert response.ok and response.attempts == 2
    assert response.transient_failures == [f"HTTP {status}"]


def test_429_honours_retry_after_seconds(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, sleeps = make_hook()
    requests_mock.get(
        STATUS_URL, [{"status_code": 429, "headers": {"Retry-After": "7"}}, {"status_code": 200, "json": []}]
    )
    response = hook.activation_status("REQ-1")
    assert sleeps == [7.0]
    assert response.ok and response.attempts == 2
    assert response.transient_failures == ["HTTP 429"]
    assert response.retry_after_honoured == 7.0


def test_retry_after_is_capped_by_retry_after_max(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, sleeps = make_hook(retry_after_max=3)
    requests_mock.get(
        STATUS_URL, [{"status_code": 429, "headers": {"Retry-After": "7"}}, {"status_code": 200, "json": []}]
    )
    response = hook.activation_status("REQ-1")
    assert sleeps == [3.0]
    assert response.retry_after_honoured == 3.0


def test_429_without_retry_after_uses_the_backoff(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, sleeps = make_hook()
    requests_mock.get(STATUS_URL, [{"status_code": 429}, {"status_code": 200, "json": []}])
    response = hook.activation_status("REQ-1")
    assert response.ok
    assert len(sleeps) == 1 and sleeps[0] <= 0.001
    assert response.retry_after_honoured == 0.0


def test_backoff_never_exceeds_backoff_max(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, sleeps = make_hook(max_attempts=5, backoff_initial=100, backoff_max=0.002)
    requests_mock.get(STATUS_URL, status_code=503)
    hook.activation_status("REQ-1")
    assert len(sleeps) == 4
    assert all(0 <= s <= 0.002 for s in sleeps)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_4xx_are_returned_at_once(make_hook: HookFactory, requests_mock: Mocker, status: int) -> None:
    hook, sleeps = make_hook()
    requests_mock.post(ACTIVATE_URL, status_code=status, json={"message": "no", "errorDescription": "why"})
    response = hook.activate([])
    assert requests_mock.call_count == 1
    assert sleeps == []
    assert response.status == status
    assert response.body == {"message": "no", "errorDescription": "why"}
    assert (response.ok, response.exhausted, response.attempts) == (False, False, 1)
    assert response.transient_failures == []
    assert response.describe() == f"POST {DEFAULT_PATHS['activate']}: HTTP {status} after 1 attempt(s)"


def test_503_every_time_is_exhausted_with_the_last_answer(
    make_hook: HookFactory, requests_mock: Mocker
) -> None:
    hook, sleeps = make_hook()
    requests_mock.get(STATUS_URL, status_code=503, json={"message": "maintenance"})
    response = hook.activation_status("REQ-1")
    assert requests_mock.call_count == 3
    assert len(sleeps) == 2
    assert response.status == 503
    assert response.body == {"message": "maintenance"}
    assert (response.ok, response.exhausted, response.error) == (False, True, "HTTP 503")
    assert response.attempts == 3
    assert response.transient_failures == ["HTTP 503"] * 3
    path = DEFAULT_PATHS["activation_status"].format(request_id="REQ-1")
    assert response.describe() == f"GET {path}: HTTP 503 after 3 attempt(s)"


def test_connection_errors_are_retried_then_exhausted(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, sleeps = make_hook(max_attempts=4)
    requests_mock.get(STATUS_URL, exc=requests.exceptions.ConnectionError)
    response = hook.activation_status("REQ-1")
    assert requests_mock.call_count == 4
    assert len(sleeps) == 3
    assert response.exhausted is True
    assert response.ok is False
    assert response.status == 0
    assert response.attempts == 4
    assert len(response.transient_failures) == 4
    assert all(f.startswith("ConnectionError") for f in response.transient_failures)
    assert response.error is not None and response.error.startswith("ConnectionError")


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectTimeout,
        requests.exceptions.ReadTimeout,
        requests.exceptions.ConnectionError,
    ],
)
def test_a_transport_error_then_success_is_ok(
    make_hook: HookFactory, requests_mock: Mocker, exc: type[Exception]
) -> None:
    hook, sleeps = make_hook()
    requests_mock.get(STATUS_URL, [{"exc": exc}, {"status_code": 200, "json": []}])
    response = hook.activation_status("REQ-1")
    assert response.ok and response.status == 200
    assert response.attempts == 2
    assert len(response.transient_failures) == 1
    assert response.transient_failures[0].startswith(exc.__name__)
    assert len(sleeps) == 1


def test_a_final_4xx_after_a_transient_failure_counts_both_attempts(
    make_hook: HookFactory, requests_mock: Mocker
) -> None:
    hook, _ = make_hook()
    requests_mock.post(ACTIVATE_URL, [{"status_code": 502}, {"status_code": 409, "json": {"duplicates": []}}])
    response = hook.activate([])
    assert response.status == 409
    assert (response.attempts, response.exhausted, response.transient_failures) == (2, False, ["HTTP 502"])


def test_a_non_json_answer_keeps_its_text(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, _ = make_hook()
    requests_mock.get(STATUS_URL, status_code=200, text="<html>ok</html>")
    response = hook.activation_status("REQ-1")
    assert response.ok
    assert response.body is None
    assert response.text == "<html>ok</html>"


# ------------------------------------------------------------------------------------------ redaction


def test_the_secret_is_redacted_from_returned_text(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, _ = make_hook()
    requests_mock.get(STATUS_URL, status_code=401, text=f'{{"message": "bad app-secret {SECRET}"}}')
    response = hook.activation_status("REQ-1")
    assert SECRET not in response.text
    assert response.text == '{"message": "bad app-secret ***"}'


def test_the_secret_is_redacted_from_transport_errors(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, _ = make_hook(max_attempts=1)
    requests_mock.get(
        STATUS_URL, exc=requests.exceptions.ConnectionError(f"proxy refused app-secret={SECRET}")
    )
    response = hook.activation_status("REQ-1")
    assert response.error == "ConnectionError: proxy refused app-secret=***"
    assert SECRET not in "".join(response.transient_failures)


def test_the_secret_is_redacted_from_the_parsed_body(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, _ = make_hook()
    requests_mock.get(STATUS_URL, status_code=401, json={"message": f"bad app-secret {SECRET}"})
    response = hook.activation_status("REQ-1")
    assert SECRET not in json.dumps(response.body)


def test_the_connection_is_read_once_per_hook_and_every_answer_is_still_redacted(
    make_hook: HookFactory, requests_mock: Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task makes thousands of calls on one hook: the connection is not looked up for each answer."""
    hook, _ = make_hook()
    lookups: list[str] = []
    real = TelegenceHook.get_connection

    def counted(conn_id: str) -> Any:
        lookups.append(conn_id)
        return real(conn_id)

    monkeypatch.setattr(TelegenceHook, "get_connection", staticmethod(counted))
    requests_mock.get(STATUS_URL, status_code=401, text=f"bad app-secret {SECRET}")
    texts = [hook.activation_status("REQ-1").text for _ in range(50)]
    assert texts == ["bad app-secret ***"] * 50
    assert len(lookups) <= 3  # extras, session, secrets: once each, not once per call


def test_retry_after_honoured_counts_only_waits_really_slept(
    make_hook: HookFactory, requests_mock: Mocker
) -> None:
    hook, sleeps = make_hook(max_attempts=2)
    requests_mock.get(STATUS_URL, status_code=429, headers={"Retry-After": "7"})
    response = hook.activation_status("REQ-1")
    assert sleeps == [7.0]
    assert response.retry_after_honoured == sum(sleeps)


# -------------------------------------------------------------------------------------- paths, flags


def test_path_arguments_are_quoted(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, _ = make_hook()
    assert hook.path("activation_status", request_id="a/b") == (
        "/sp/mobility/serviceactivation/api/v1/service/a%2Fb"
    )
    assert (
        hook.path("service", subscriber_number="1 2?x=y")
        == "/sp/mobility/lineconfig/api/v1/service/1%202%3Fx%3Dy"
    )
    requests_mock.get(BASE + "/sp/mobility/serviceactivation/api/v1/service/a%2Fb", json=[])
    hook.activation_status("a/b")
    assert (
        requests_mock.request_history[0].url == BASE + "/sp/mobility/serviceactivation/api/v1/service/a%2Fb"
    )


def test_paths_extra_overrides_only_the_named_paths(make_hook: HookFactory, requests_mock: Mocker) -> None:
    hook, _ = make_hook(paths={"activate": "/v2/activate", "activation_status": "/v2/status/{request_id}"})
    assert hook.path("activate") == "/v2/activate"
    assert hook.path("activation_status", request_id="R 1") == "/v2/status/R%201"
    assert hook.path("reserve_ips") == DEFAULT_PATHS["reserve_ips"]
    requests_mock.post(BASE + "/v2/activate", json=ACCEPTED)
    assert hook.activate([]).ok
    assert requests_mock.request_history[0].url == BASE + "/v2/activate"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, True),  # missing
        (True, True),
        (False, False),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("true", True),
        (" Yes ", True),
        ("1", True),
        ("y", True),
    ],
)
def test_write_enabled(make_hook: HookFactory, value: Any, expected: bool) -> None:
    hook, _ = make_hook(write_enabled=value)
    assert hook.write_enabled is expected


# ----------------------------------------------------------------------- ambiguous answers, redirects


def test_a_malformed_2xx_activation_answer_is_retried_with_backoff_and_ends_outcome_unknown(
    make_hook: HookFactory, requests_mock: Mocker
) -> None:
    hook, sleeps = make_hook(backoff_initial=1, backoff_max=8)
    requests_mock.post(ACTIVATE_URL, status_code=202, text="<html>oops</html>")
    response = hook.activate([{"x": 1}])
    assert requests_mock.call_count == 3
    assert len(sleeps) == 2 and all(s >= 0 for s in sleeps) and sum(sleeps) > 0
    assert response.exhausted and response.outcome_unknown
    assert response.error is not None and response.error.startswith("malformed HTTP 202 answer")


def test_a_5xx_makes_the_outcome_unknown_but_a_429_or_a_refused_connection_does_not(
    make_hook: HookFactory, requests_mock: Mocker
) -> None:
    hook, _ = make_hook()
    requests_mock.post(ACTIVATE_URL, status_code=503, json={"message": "down"})
    assert hook.activate([{"x": 1}]).outcome_unknown
    requests_mock.post(ACTIVATE_URL, status_code=429, json={"message": "slow down"})
    throttled = hook.activate([{"x": 1}])
    assert throttled.exhausted and not throttled.outcome_unknown
    requests_mock.post(ACTIVATE_URL, exc=requests.exceptions.ConnectTimeout("no route"))
    refused = hook.activate([{"x": 1}])
    assert refused.exhausted and not refused.outcome_unknown
    requests_mock.post(ACTIVATE_URL, exc=requests.exceptions.ReadTimeout("read timed out"))
    assert hook.activate([{"x": 1}]).outcome_unknown


def test_static_ip_writes_are_never_resent_after_an_ambiguous_answer(
    make_hook: HookFactory, requests_mock: Mocker
) -> None:
    hook, _ = make_hook()
    reserve = requests_mock.post(
        BASE + DEFAULT_PATHS["reserve_ips"], exc=requests.exceptions.ReadTimeout("lost")
    )
    submit = requests_mock.post(
        BASE + DEFAULT_PATHS["provisioning"], status_code=502, json={"message": "bad gw"}
    )
    assert hook.reserve_ips("PDP", 3).outcome_unknown and reserve.call_count == 1
    assert hook.submit_provisioning({"subscriber": []}).outcome_unknown and submit.call_count == 1
    # Never sent (throttled): retried as usual.
    requests_mock.post(BASE + DEFAULT_PATHS["reserve_ips"], status_code=429, headers={"Retry-After": "0"})
    assert hook.reserve_ips("PDP", 3).attempts == 3


def test_a_redirect_is_never_followed_so_the_secret_stays_with_the_carrier(
    make_hook: HookFactory, requests_mock: Mocker
) -> None:
    hook, _ = make_hook()
    elsewhere = requests_mock.get("http://elsewhere.test/grab", json=[])
    requests_mock.get(STATUS_URL, status_code=302, headers={"Location": "http://elsewhere.test/grab"})
    response = hook.activation_status("REQ-1")
    assert response.status == 302 and not response.ok
    assert elsewhere.call_count == 0 and requests_mock.call_count == 1


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def sent(self, method: str, path: str, body: Any, attempt: int) -> int:
        self.events.append(("sent", attempt))
        return attempt

    def answered(self, token: Any, status: int | None, text: str, error: str | None) -> None:
        self.events.append(("answered", (token, status, error is not None)))


def test_every_attempt_of_a_write_is_recorded_before_it_is_sent_and_completed_after(
    make_hook: HookFactory, requests_mock: Mocker
) -> None:
    hook, _ = make_hook()
    requests_mock.post(
        ACTIVATE_URL,
        [
            {"exc": requests.exceptions.ReadTimeout("lost")},
            {"status_code": 503},
            {"status_code": 202, "json": ACCEPTED},
        ],
    )
    recorder = _Recorder()
    assert hook.activate([{"x": 1}], recorder=recorder).ok
    assert recorder.events == [
        ("sent", 1),
        ("answered", (1, None, True)),
        ("sent", 2),
        ("answered", (2, 503, False)),
        ("sent", 3),
        ("answered", (3, 202, False)),
    ]
