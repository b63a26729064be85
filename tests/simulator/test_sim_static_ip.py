"""Static IP: reservation from finite pools, provisioning batches and status progression."""

from __future__ import annotations

import ipaddress
import uuid

import pytest
from sim_testkit import IP_PROVISION, IP_STATUS, Tg, scenario

from telegence_simulator.launcher import AdminClient


def _ips(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["ipAddress"] for r in response.json()["ipAddressRecords"]]


def test_reserve_from_pool_until_exhausted(tg: Tg, admin: AdminClient) -> None:
    first = _ips(tg.reserve("TEST.PDP", 3))
    assert len(first) == 3
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.50.0.0/24") for ip in first)
    short = tg.reserve("TEST.PDP", 5)
    second = _ips(short)
    assert len(second) == 2  # pool size is 5
    assert "short" in short.json()["message"]
    empty = tg.reserve("TEST.PDP", 1)
    assert _ips(empty) == [] and empty.json()["message"]
    assert len(set(first + second)) == 5  # never handed out twice
    pool = admin.ip_pools()["TEST.PDP"]
    assert pool["remaining"] == 0 and pool["handedOut"] == 5


@pytest.mark.parametrize(
    "body", [{"pdpName": "NOPE.PDP", "ipQuantity": 1}, {"pdpName": "TEST.PDP"}, {"ipQuantity": 2}, []]
)
def test_bad_reservation_is_400(tg: Tg, body: object) -> None:
    response = tg.call("POST", "/sp/mobility/staticip/api/v1/ipaddresses", json=body)
    assert response.status_code == 400
    assert set(response.json()) == {"message", "errorDescription"}


def test_provisioning_batch_progresses_to_complete(tg: Tg, admin: AdminClient) -> None:
    mdns = tg.active_lines(1, 2)
    ips = _ips(tg.reserve("TEST.PDP", 2))
    response = tg.provision("TEST.PDP", list(zip(mdns, ips, strict=True)))
    assert response.status_code == 202
    message = response.json()["message"]
    assert message.startswith("Your request has been received")
    batch_id = message.split()[-1]
    assert uuid.UUID(batch_id).version == 4
    seen = []
    for _ in range(3):
        body = tg.ip_status(batch_id).json()
        assert [e["subscriberNumber"] for e in body] == mdns
        assert {e["batchId"] for e in body} == {batch_id}
        seen.append((body[0]["profileCheck"], body[0]["ipReservation"], body[0]["profileUpdate"]))
    assert seen == [
        ("Success", "In Progress", "Pending"),
        ("Success", "Reserved", "In Progress"),
        ("Success", "Reserved", "Complete"),
    ]
    assert [e["ipAddressRecord"]["ipAddress"] for e in body] == ips
    assert tg.details(mdns[0]).json()["staticIpAddress"] == ips[0]
    by_mdn = tg.ip_status(mdn=mdns[1]).json()
    assert len(by_mdn) == 1 and by_mdn[0]["profileUpdate"] == "Complete"
    assert admin.line(mdns[0])["staticIp"] == ips[0]


def test_progress_in_seconds(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(
        scenario(
            ip_provisioning={"unit": "seconds", "check_after": 10, "reserve_after": 20, "done_after": 30}
        )
    )
    mdn = tg.active_lines(1, 1)[0]
    ip = _ips(tg.reserve("TEST.PDP", 1))[0]
    batch_id = tg.batch_id(tg.provision("TEST.PDP", [(mdn, ip)]))
    assert tg.ip_status(batch_id).json()[0]["profileCheck"] == "In Progress"
    admin.advance(25)
    assert tg.ip_status(batch_id).json()[0]["ipReservation"] == "Reserved"
    admin.advance(10)
    assert tg.ip_status(batch_id).json()[0]["profileUpdate"] == "Complete"


def test_provisioning_validation(tg: Tg, admin: AdminClient) -> None:
    mdns = tg.active_lines(1, 2)
    ips = _ips(tg.reserve("TEST.PDP", 2))
    cases = [
        tg.provision("TEST.PDP", [("2145559999", ips[0])]),  # not a line
        tg.provision("TEST.PDP", [(mdns[0], "10.50.0.200")]),  # not reserved
        tg.provision("BIG.PDP", [(mdns[0], ips[0])]),  # reserved from another pool
        tg.provision("NOPE.PDP", [(mdns[0], ips[0])]),  # unknown PDP
        tg.provision("TEST.PDP", [(mdns[0], ips[0])], ban="999"),  # wrong billing account
        tg.provision("TEST.PDP", [(mdns[0], ips[0]), (mdns[0], ips[1])]),  # same subscriber twice
        tg.provision("TEST.PDP", []),
        tg.call("POST", IP_PROVISION, json=[]),
    ]
    for response in cases:
        assert response.status_code == 400, response.text
        assert set(response.json()) == {"message", "errorDescription"}
    # an address provisioned for one subscriber cannot go to another
    tg.batch_id(tg.provision("TEST.PDP", [(mdns[0], ips[0])]))
    assert tg.provision("TEST.PDP", [(mdns[1], ips[0])]).status_code == 400
    assert admin.state()["ipBatches"] == 1


def test_status_lookup_errors(tg: Tg) -> None:
    assert tg.call("GET", IP_STATUS).status_code == 400
    assert tg.ip_status("not-a-uuid").status_code == 400
    assert tg.ip_status(str(uuid.uuid4())).status_code == 404
    assert tg.ip_status(mdn="2145559999").status_code == 404
    assert tg.ip_status(mdn="12").status_code == 400
