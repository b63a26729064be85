"""Scripted per-device outcomes: selectors, every outcome kind, lifting and forced completion."""

from __future__ import annotations

import ipaddress

from sim_testkit import Tg, iccid, scenario

from telegence_simulator.launcher import AdminClient


def _statuses(body: list[dict]) -> list[str]:
    return [s["service"]["status"] for s in body]


def test_reject_by_list_every_suffix_and_regex(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(
        scenario(
            outcomes=[
                {"kind": "reject_activation", "iccids": [iccid(2)], "error": "SIM blacklisted"},
                {"kind": "reject_activation", "every": 5},
                {"kind": "reject_activation", "iccid_suffix": [iccid(8)[-4:]]},
                {"kind": "reject_activation", "iccid_regex": iccid(10)[-5:] + "$"},
            ]
        )
    )
    body = tg.poll_until_done(tg.activate_ok(1, 12))
    rejected = {i + 1 for i, s in enumerate(_statuses(body)) if s == "rejected"}
    assert rejected == {2, 5, 8, 10}
    assert body[1]["service"]["error"] == "SIM blacklisted"
    assert body[4]["service"]["error"]  # default error text
    assert body[4]["service"]["subscriberNumber"] is None
    assert all(body[i - 1]["service"]["subscriberNumber"] for i in range(1, 13) if i not in rejected)


def test_every_counts_activation_order_across_requests(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(scenario(outcomes=[{"kind": "reject_activation", "every": 4, "offset": 1}]))
    first = _statuses(tg.poll_until_done(tg.activate_ok(1, 3)))
    second = _statuses(tg.poll_until_done(tg.activate_ok(50, 3)))
    # activation order 1..6; index % 4 == 1 -> 1 and 5
    assert first == ["rejected", "active", "active"]
    assert second == ["active", "rejected", "active"]


def test_stay_pending_then_lifted_with_keep_state(tg: Tg, admin: AdminClient) -> None:
    stuck = scenario(outcomes=[{"kind": "stay_pending", "iccids": [iccid(1)]}])
    admin.load_scenario(stuck)
    request_id = tg.activate_ok(1, 2)
    for _ in range(5):
        body = tg.status(request_id).json()
    assert _statuses(body) == ["pending", "active"]
    assert {s["interactionStatus"] for s in body} == {"pending"}
    admin.load_scenario(scenario(), keep_state=True)
    body = tg.status(request_id).json()
    assert _statuses(body) == ["active", "active"]
    assert admin.counters()["iccidsActivated"] == 2


def test_admin_complete_forces_stuck_devices(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(scenario(outcomes=[{"kind": "stay_pending", "every": 1}]))
    request_id = tg.activate_ok(1, 3)
    assert admin.complete()["activations_completed"] == 3
    assert _statuses(tg.status(request_id).json()) == ["active"] * 3


def test_reject_then_lift_lets_a_retry_succeed(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(scenario(outcomes=[{"kind": "reject_activation", "iccids": [iccid(1)]}]))
    assert _statuses(tg.poll_until_done(tg.activate_ok(1, 1))) == ["rejected"]
    assert _statuses(tg.poll_until_done(tg.activate_ok(1, 1))) == ["rejected"]
    admin.load_scenario(scenario(), keep_state=True)
    assert _statuses(tg.poll_until_done(tg.activate_ok(1, 1))) == ["active"]
    assert admin.counters()["activationsPerIccid"][iccid(1)] == 3


def test_service_details_404_outcome(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(scenario(outcomes=[{"kind": "service_details_404", "iccids": [iccid(2)]}]))
    mdns = tg.active_lines(1, 2)
    assert tg.details(mdns[0]).status_code == 200
    assert tg.details(mdns[1]).status_code == 404
    assert admin.line(mdns[1])["status"] == "active"


def _provision_all(tg: Tg, mdns: list[str], pdp: str = "BIG.PDP") -> tuple[str, list[str]]:
    ips = [r["ipAddress"] for r in tg.reserve(pdp, len(mdns)).json()["ipAddressRecords"]]
    batch_id = tg.batch_id(tg.provision(pdp, list(zip(mdns, ips, strict=True))))
    return batch_id, ips


def _final_status(tg: Tg, batch_id: str, polls: int = 3) -> list[dict]:
    body: list[dict] = []
    for _ in range(polls):
        body = tg.ip_status(batch_id).json()
    return body


def test_ip_provision_fail_outcome(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(
        scenario(
            outcomes=[
                {"kind": "ip_provision_fail", "iccids": [iccid(1)], "error": "APN missing"},
                {"kind": "ip_provision_fail", "iccids": [iccid(2)], "stage": "profileCheck"},
            ]
        )
    )
    mdns = tg.active_lines(1, 3)
    batch_id, ips = _provision_all(tg, mdns)
    body = {e["subscriberNumber"]: e for e in _final_status(tg, batch_id)}
    first, second, third = (body[m] for m in mdns)
    assert (first["profileCheck"], first["ipReservation"], first["profileUpdate"]) == (
        "Success",
        "Reserved",
        "Failed",
    )
    assert first["message"] == "APN missing"
    assert second["profileCheck"] == "Failed" and second["message"]
    assert third["profileUpdate"] == "Complete" and third["message"] == ""
    # the failed address went back to "reserved", so the client can retry with it
    pool = admin.ip_pools()["BIG.PDP"]["addresses"]
    assert pool[ips[0]] == {"state": "reserved", "subscriber": None}
    assert pool[ips[2]] == {"state": "assigned", "subscriber": mdns[2]}
    admin.load_scenario(scenario(), keep_state=True)
    retry = tg.batch_id(tg.provision("BIG.PDP", [(mdns[0], ips[0])]))
    assert _final_status(tg, retry)[0]["profileUpdate"] == "Complete"


def test_ip_outside_range_outcome(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(scenario(outcomes=[{"kind": "ip_outside_range", "iccids": [iccid(2)]}]))
    mdns = tg.active_lines(1, 2)
    batch_id, ips = _provision_all(tg, mdns)
    body = {e["subscriberNumber"]: e for e in _final_status(tg, batch_id)}
    assert body[mdns[0]]["ipAddressRecord"]["ipAddress"] == ips[0]
    outside = body[mdns[1]]["ipAddressRecord"]["ipAddress"]
    assert body[mdns[1]]["profileUpdate"] == "Complete"
    assert ipaddress.ip_address(outside) in ipaddress.ip_network("192.0.2.0/24")
    assert ipaddress.ip_address(outside) not in ipaddress.ip_network("10.60.0.0/16")
    assert tg.details(mdns[1]).json()["staticIpAddress"] == outside


def test_missing_from_ip_status_outcome(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(scenario(outcomes=[{"kind": "missing_from_ip_status", "iccids": [iccid(2)]}]))
    mdns = tg.active_lines(1, 3)
    batch_id, _ = _provision_all(tg, mdns)
    body = _final_status(tg, batch_id)
    assert sorted(e["subscriberNumber"] for e in body) == sorted([mdns[0], mdns[2]])
    assert tg.ip_status(mdn=mdns[1]).json() == []
    # the admin API still sees it
    hidden = admin._call("GET", f"/_admin/ip-batches/{batch_id}")
    assert len(hidden["entries"]) == 3


def test_nasty_scenario_hits_every_outcome(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario("nasty")
    admin.load_scenario(
        {**admin.scenario()["scenario"], "faults": [], "rate_limit": None, "accounts": []}, seed=13
    )
    kinds = {o["kind"] for o in admin.scenario()["scenario"]["outcomes"]}
    assert kinds == {
        "reject_activation",
        "stay_pending",
        "ip_provision_fail",
        "ip_outside_range",
        "missing_from_ip_status",
        "service_details_404",
    }
