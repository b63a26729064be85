"""The ``echo_secret`` fault: the caller's app-secret repeated in 2xx bodies and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from sim_testkit import APP_ID, APP_SECRET, RO_APP_ID, RO_APP_SECRET, Tg, iccid, items, scenario

from telegence_simulator.faults import ECHO_NOTE, echo_secret_body
from telegence_simulator.launcher import AdminClient, RunningSimulator
from telegence_simulator.scenario import load_scenario

SECRET = "echo-S3cret_+/=.~!"  # distinctive, sent verbatim in the app-secret header
ECHO_ID = "echo-app-id"
TEXT = f"request credentials app-secret={SECRET}"


def _echo(*rules: dict, **extra: object) -> dict:
    accounts = [
        {"app_id": APP_ID, "app_secret": APP_SECRET},
        {"app_id": RO_APP_ID, "app_secret": RO_APP_SECRET, "write_enabled": False},
        {"app_id": ECHO_ID, "app_secret": SECRET},
    ]
    return scenario(accounts=accounts, faults=list(rules), **extra)


ALL = {"endpoint": "*", "kind": "echo_secret"}


@pytest.fixture
def etg(sim: RunningSimulator) -> Tg:
    """A client of the account whose secret is echoed."""
    return Tg(sim.base_url, ECHO_ID, SECRET)


def _debug(element: dict) -> None:
    assert element["debug"] == {"appSecret": SECRET, "note": ECHO_NOTE}


def test_2xx_object_gets_a_debug_field(etg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(_echo(ALL))
    response = etg.reserve("TEST.PDP", 2)
    assert response.status_code == 200
    body = response.json()
    _debug(body)
    assert len(body["ipAddressRecords"]) == 2  # the answer itself is intact
    assert SECRET in response.text
    assert admin.counters()["faults"]["ip_reserve"] == {"echo_secret": 1}


def test_2xx_arrays_carry_it_in_every_element(etg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(_echo(ALL))
    response = etg.activate(items(1, 3))
    assert response.status_code == 202
    body = response.json()
    assert len(body) == 3
    for n, element in zip((1, 2, 3), body, strict=True):
        assert {"name": "sim", "value": iccid(n)} in element["service"]["serviceCharacteristic"]
        _debug(element)
    status = etg.status(body[0]["id"])
    assert status.status_code == 200
    for element in status.json():
        _debug(element)
    mdn = etg.poll_until_done(body[0]["id"])[0]["service"]["subscriberNumber"]
    _debug(etg.details(mdn).json())
    assert admin.counters()["faults"]["activate"] == {"echo_secret": 1}


def test_503_from_an_error_rule_holds_the_secret(etg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(_echo({"endpoint": "activate", "kind": "error", "status": 503, "first_n": 1}, ALL))
    response = etg.activate(items(1, 2))
    assert response.status_code == 503
    body = response.json()
    assert body["message"] == f"Simulated upstream error 503 ({TEXT})"
    assert body["errorDescription"] == TEXT
    assert admin.counters()["iccidsActivated"] == 0  # the error rule still wins: not processed
    assert admin.counters()["faults"]["activate"] == {"error": 1, "echo_secret": 1}
    retry = etg.activate(items(1, 2))
    assert retry.status_code == 202
    _debug(retry.json()[0])


def test_409_duplicate_answer_holds_the_secret(etg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(_echo())
    request_id = etg.activate_ok(1, 2)
    admin.load_scenario(_echo(ALL), keep_state=True)
    response = etg.activate(items(1, 2))
    assert response.status_code == 409
    body = response.json()
    assert body["message"].endswith(f"nothing was activated ({TEXT})")
    assert body["errorDescription"] == TEXT
    assert {d["existingRequestId"] for d in body["duplicates"]} == {request_id}


def test_400_keeps_its_error_description(etg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(_echo(ALL))
    response = etg.reserve("NO.SUCH.PDP", 1)
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == f"Unknown PDP name ({TEXT})"
    assert "no static IP pool" in body["errorDescription"] and SECRET not in body["errorDescription"]


def test_refused_calls_echo_what_was_sent(sim: RunningSimulator, etg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(_echo(ALL, rate_limit={"per_second": 1, "burst": 1, "retry_after": 3}))
    wrong = Tg(sim.base_url, ECHO_ID, "wrong-secret-sent").status("x")
    assert wrong.status_code == 401
    assert wrong.json()["message"] == (
        "Unauthorized: invalid app-id or app-secret (request credentials app-secret=wrong-secret-sent)"
    )
    ro = Tg(sim.base_url, RO_APP_ID, RO_APP_SECRET)
    forbidden = ro.activate(items(1, 1))
    assert forbidden.status_code == 403
    assert RO_APP_SECRET in forbidden.json()["message"]
    assert etg.status("x").status_code == 404
    throttled = etg.status("x")
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "3"
    assert throttled.json()["errorDescription"] == TEXT
    faults = admin.counters()["faults"]
    assert faults["activation_status"] == {"echo_secret": 3}
    assert faults["activate"] == {"echo_secret": 1}


def test_first_n_and_no_rule_mean_no_echo(etg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(_echo({"endpoint": ["ip_reserve"], "kind": "echo_secret", "first_n": 1}))
    assert SECRET in etg.reserve("TEST.PDP", 1).text
    assert SECRET not in etg.reserve("TEST.PDP", 1).text
    assert SECRET not in etg.activate(items(1, 1)).text
    admin.load_scenario(_echo())
    assert SECRET not in etg.status("x").text
    assert admin.counters()["faults"] == {}


def test_echo_composes_with_malformed(etg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(
        _echo(
            {"endpoint": "ip_reserve", "kind": "malformed", "variant": "wrong_shape"},
            {"endpoint": "activate", "kind": "malformed", "variant": "html"},
            ALL,
        )
    )
    body = etg.reserve("TEST.PDP", 1).json()
    assert body["result"] == "ok"
    _debug(body)
    assert etg.activate(items(1, 1)).text.startswith("<html>")  # not JSON: left as is


def test_echo_secret_body_unit() -> None:
    assert echo_secret_body(200, b"<html></html>", "s") is None
    assert echo_secret_body(200, b"[1,2]", "s") is None
    assert echo_secret_body(500, b"[]", "s") is None
    assert echo_secret_body(502, b"{}", "s") == (
        b'{"message":"request credentials app-secret=s","errorDescription":"request credentials app-secret=s"}'
    )


def test_yaml_rule_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "echo.yaml"
    path.write_text(
        "faults:\n  - endpoint: '*'\n    kind: echo_secret\n  - {endpoint: activate, kind: echo_secret, first_n: 2}\n",
        encoding="utf-8",
    )
    rules = load_scenario(path).faults
    assert [r.kind for r in rules] == ["echo_secret", "echo_secret"]
    assert rules[1].endpoints == ("activate",)
