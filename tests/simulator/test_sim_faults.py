"""Faults: 5xx, latency, timeouts, malformed bodies, dropped connections, lost answers, 429s."""

from __future__ import annotations

import time

import pytest
import requests
from sim_testkit import Tg, iccid, item, items, scenario

from telegence_simulator.launcher import AdminClient


def _faults(*rules: dict, **extra: object) -> dict:
    return scenario(faults=list(rules), **extra)


def test_first_n_activation_posts_fail_then_retry_recovers(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(_faults({"endpoint": "activate", "kind": "error", "status": 503, "first_n": 3}))
    codes = [tg.activate(items(1, 2)).status_code for _ in range(4)]
    assert codes == [503, 503, 503, 202]
    counters = admin.counters()
    assert counters["calls"]["activate"] == {"503": 3, "202": 1}
    assert counters["faults"]["activate"] == {"error": 3}
    assert counters["activationsPerIccid"] == {iccid(1): 1, iccid(2): 1}


def test_error_status_list_and_body(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(
        _faults({"endpoint": "activation_status", "kind": "error", "status": [500, 502, 503]})
    )
    codes = {tg.status("x").status_code for _ in range(30)}
    assert codes == {500, 502, 503}
    assert "message" in tg.status("x").json()


def _pattern(tg: Tg, admin: AdminClient, seed: int) -> list[int]:
    admin.load_scenario(
        _faults({"endpoint": "service_details", "kind": "error", "status": [500, 503], "probability": 0.4}),
        seed=seed,
    )
    return [tg.details("2145550001").status_code for _ in range(40)]


def test_faults_are_deterministic_under_a_seed(tg: Tg, admin: AdminClient) -> None:
    first = _pattern(tg, admin, seed=99)
    again = _pattern(tg, admin, seed=99)
    other = _pattern(tg, admin, seed=100)
    assert first == again
    assert first != other
    assert {500, 503, 404} <= set(first)


def test_ids_are_deterministic_under_a_seed(tg: Tg, admin: AdminClient) -> None:
    def run() -> tuple[str, list[str], str]:
        request_id = tg.activate_ok(1, 2)
        mdns = [s["service"]["subscriberNumber"] for s in tg.poll_until_done(request_id)]
        ip = tg.reserve("TEST.PDP", 1).json()["ipAddressRecords"][0]["ipAddress"]
        return request_id, mdns, tg.batch_id(tg.provision("TEST.PDP", [(mdns[0], ip)]))

    first = run()
    admin.reset()
    assert run() == first
    admin.load_scenario(scenario(), seed=5)
    assert run()[0] != first[0]


def test_fixed_and_ranged_latency(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(
        _faults(
            {"endpoint": "activation_status", "kind": "latency", "seconds": 0.3},
            {"endpoint": "service_details", "kind": "latency", "seconds": [0.05, 0.15]},
        )
    )
    started = time.perf_counter()
    assert tg.status("x").status_code == 404
    assert time.perf_counter() - started >= 0.3
    for _ in range(3):
        started = time.perf_counter()
        tg.details("2145550001")
        assert 0.05 <= time.perf_counter() - started < 0.5
    assert admin.counters()["faults"]["service_details"] == {"latency": 3}


def test_timeout_holds_then_504(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(_faults({"endpoint": "activate", "kind": "timeout", "seconds": 0.6, "first_n": 2}))
    with pytest.raises(requests.exceptions.ReadTimeout):
        tg.activate(items(1, 1), timeout=0.2)
    started = time.perf_counter()
    assert tg.activate(items(1, 1)).status_code == 504
    assert time.perf_counter() - started >= 0.6
    # a timed-out call was not processed
    assert admin.counters()["iccidsActivated"] == 0
    assert tg.activate(items(1, 1)).status_code == 202


@pytest.mark.parametrize("variant", ["truncated", "html", "wrong_shape", "empty"])
def test_malformed_2xx_bodies(tg: Tg, admin: AdminClient, variant: str) -> None:
    admin.load_scenario(_faults({"endpoint": "activate", "kind": "malformed", "variant": variant}))
    response = tg.activate(items(1, 3))
    assert response.status_code == 202
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    assert not (isinstance(parsed, list) and len(parsed) == 3)
    # the activation itself happened: a retry finds it through the 409
    assert admin.counters()["iccidsActivated"] == 3
    assert tg.activate(items(1, 3)).status_code == 409
    assert admin.counters()["faults"]["activate"]["malformed"] == 2


def test_malformed_never_touches_errors(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(_faults({"endpoint": "activation_status", "kind": "malformed"}))
    response = tg.status("missing")
    assert response.status_code == 404 and "message" in response.json()


def test_dropped_connection(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(_faults({"endpoint": "activate", "kind": "drop", "first_n": 1}))
    with pytest.raises(requests.exceptions.ConnectionError):
        tg.activate(items(1, 2))
    assert admin.counters()["iccidsActivated"] == 0  # dropped before processing
    assert tg.activate(items(1, 2)).status_code == 202
    assert admin.counters()["calls"]["activate"] == {"dropped": 1, "202": 1}


def test_answer_lost_by_drop_is_recorded(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(
        _faults({"endpoint": "activate", "kind": "answer_lost", "mode": "drop", "first_n": 1})
    )
    with pytest.raises(requests.exceptions.ConnectionError):
        tg.activate(items(1, 2))
    device = admin.device(iccid(1))
    assert device["status"] == "pending"
    retry = tg.activate(items(1, 2))
    assert retry.status_code == 409
    assert {d["existingRequestId"] for d in retry.json()["duplicates"]} == {device["requestId"]}
    assert admin.counters()["activationsPerIccid"] == {iccid(1): 1, iccid(2): 1}


def test_answer_lost_by_delay(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(
        _faults(
            {"endpoint": "activate", "kind": "answer_lost", "mode": "delay", "seconds": 0.8, "first_n": 1}
        )
    )
    with pytest.raises(requests.exceptions.ReadTimeout):
        tg.activate(items(1, 1), timeout=0.2)
    assert admin.device(iccid(1))["status"] == "pending"
    assert tg.activate([item(1)]).status_code == 409


def test_rate_limit_429_with_retry_after(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(scenario(rate_limit={"per_second": 5, "burst": 5}))
    responses = [tg.status("x") for _ in range(12)]
    codes = [r.status_code for r in responses]
    assert codes[:5] == [404] * 5
    throttled = [r for r in responses if r.status_code == 429]
    assert len(throttled) >= 5
    for response in throttled:
        assert int(response.headers["Retry-After"]) >= 1
        assert "message" in response.json()
    counters = admin.counters()
    assert counters["throttled"] == len(throttled)
    assert counters["throttledByAccount"] == {"demo-app-id": len(throttled)}
    assert counters["calls"]["activation_status"]["429"] == len(throttled)
    time.sleep(1.0)
    assert tg.status("x").status_code == 404


def test_rate_limit_is_per_account(sim, tg: Tg, tg_ro: Tg, admin: AdminClient) -> None:
    limited = scenario(rate_limit={"per_second": 2, "burst": 2, "retry_after": 7})
    admin.load_scenario(limited)
    assert [tg.status("x").status_code for _ in range(3)] == [404, 404, 429]
    assert tg.status("x").headers["Retry-After"] == "7"
    assert tg_ro.status("x").status_code == 404  # its own bucket


def test_fault_on_all_endpoints_and_probability_zero(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(
        _faults(
            {"endpoint": "*", "kind": "error", "status": 502, "first_n": 1},
            {"endpoint": "activate", "kind": "error", "probability": 0.0},
        )
    )
    assert tg.status("x").status_code == 502
    assert tg.activate(items(1, 1)).status_code == 202


def test_fault_selected_by_iccid_hits_only_calls_naming_it(sim, admin, tg) -> None:  # type: ignore[no-untyped-def]
    """A rule with ``iccids`` fails only the batches that carry one of them."""
    from sim_testkit import iccid, items, scenario

    first, second = items(9100, 2), items(9200, 2)
    admin.load_scenario(
        scenario(faults=[{"endpoint": "activate", "kind": "error", "status": 502, "iccids": [iccid(9201)]}])
    )
    assert tg.activate(first).status_code == 202
    assert tg.activate(second).status_code == 502
    assert tg.activate(second).status_code == 502
    calls = admin.counters(iccids=False)["calls"]["activate"]
    assert calls == {"202": 1, "502": 2}
