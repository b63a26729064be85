"""Activation POST, status, line details, PATCH, validation and the duplicate rule."""

from __future__ import annotations

import uuid

import pytest
from sim_testkit import BAN, Tg, iccid, imei, item, items, scenario

from telegence_activation.domain.identifiers import luhn_valid
from telegence_simulator.launcher import AdminClient


def test_activation_answer_shape(tg: Tg) -> None:
    response = tg.activate(items(1, 3))
    assert response.status_code == 202
    body = response.json()
    assert isinstance(body, list) and len(body) == 3
    ids = {element["id"] for element in body}
    assert len(ids) == 1
    uuid.UUID(ids.pop())
    for n, element in enumerate(body, start=1):
        assert element["interactionStatus"] == "pending"
        assert element["billingAccount"] == {"id": BAN}
        service = element["service"]
        assert service["status"] == "pending"
        assert service["subscriberNumber"] is None
        assert service["error"] is None
        assert {"name": "sim", "value": iccid(n)} in service["serviceCharacteristic"]


def test_progress_by_polls_to_active_with_unique_mdns(tg: Tg, admin: AdminClient) -> None:
    request_id = tg.activate_ok(1, 5)
    first = tg.status(request_id).json()
    assert {s["service"]["status"] for s in first} == {"reserved"}
    second = tg.status(request_id).json()
    assert {s["service"]["status"] for s in second} == {"active"}
    assert {s["interactionStatus"] for s in second} == {"completed"}
    mdns = [s["service"]["subscriberNumber"] for s in second]
    assert len(set(mdns)) == 5
    assert all(len(m) == 10 and m.isdigit() for m in mdns)
    device = admin.device(iccid(1))
    assert device["status"] == "active" and device["subscriberNumber"] == mdns[0]
    assert admin.line(mdns[0])["iccid"] == iccid(1)


def test_progress_by_simulated_seconds_and_clock(sim, tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(scenario(activation={"unit": "seconds", "reserved_after": 60, "done_after": 120}))
    request_id = tg.activate_ok(1, 2)
    assert {s["service"]["status"] for s in tg.status(request_id).json()} == {"pending"}
    admin.advance(61)
    assert {s["service"]["status"] for s in tg.status(request_id).json()} == {"reserved"}
    admin.advance(60)
    assert {s["service"]["status"] for s in tg.status(request_id).json()} == {"active"}


def test_time_scale_compresses_progress(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(scenario(activation={"unit": "seconds", "reserved_after": 10, "done_after": 20}))
    admin.set_time_scale(200.0)  # 20 simulated seconds = 0.1 real seconds
    request_id = tg.activate_ok(1, 2)
    body = tg.poll_until_done(request_id, max_polls=50, pause=0.02)
    assert {s["service"]["status"] for s in body} == {"active"}


def test_unknown_request_and_line_are_404(tg: Tg) -> None:
    assert tg.status("no-such-request").status_code == 404
    assert tg.details("2145559999").status_code == 404
    assert tg.remove_code("2145559999", "SOC1").status_code == 404
    assert "message" in tg.status("no-such-request").json()


def test_pending_line_has_no_details(tg: Tg, admin: AdminClient) -> None:
    tg.activate_ok(1, 1)
    mdn = str(admin.scenario()["scenario"]["mdn_start"] + 1)
    assert tg.details(mdn).status_code == 404


def test_service_details_and_remove_offering_code(tg: Tg, admin: AdminClient) -> None:
    mdn = tg.active_lines(1, 1)[0]
    details = tg.details(mdn).json()
    assert details["subscriberNumber"] == mdn
    assert details["status"] == "active"
    assert details["billingAccount"] == {"id": BAN}
    codes = {c["value"] for c in details["serviceCharacteristic"] if c["name"].startswith("offeringCode")}
    assert codes == {"SOC1", "SOC2"}
    response = tg.remove_code(mdn, "SOC1")
    assert response.status_code == 200
    assert response.json()["removedOfferingCodes"] == ["SOC1"]
    tg.remove_code(mdn, "SOC1")  # idempotent
    assert admin.device(iccid(1))["removedOfferingCodes"] == ["SOC1"]
    after = tg.details(mdn).json()
    assert {c["value"] for c in after["serviceCharacteristic"] if c["name"].startswith("offeringCode")} == {
        "SOC2"
    }
    assert after["removedOfferingCodes"] == ["SOC1"]


@pytest.mark.parametrize(
    "body",
    [
        {"serviceCharacteristic": [{"name": "offeringCode1", "value": "X"}], "effectiveDate": ""},
        {"serviceCharacteristic": [{"name": "removeOfferingCode", "value": ""}], "effectiveDate": ""},
        {"serviceCharacteristic": [], "effectiveDate": ""},
        {"serviceCharacteristic": [{"name": "removeOfferingCode", "value": "X"}]},
        [],
    ],
)
def test_bad_patch_is_400(tg: Tg, body: object) -> None:
    mdn = tg.active_lines(1, 1)[0]
    response = tg.call("PATCH", f"/sp/mobility/lineconfig/api/v1/service/{mdn}", json=body)
    assert response.status_code == 400
    assert set(response.json()) == {"message", "errorDescription"}


def test_200_items_accepted_201_refused(tg: Tg, admin: AdminClient) -> None:
    assert tg.activate(items(1, 200)).status_code == 202
    response = tg.activate(items(1000, 201))
    assert response.status_code == 400
    assert set(response.json()) == {"message", "errorDescription"}
    assert "200" in response.json()["errorDescription"]
    assert admin.counters()["iccidsActivated"] == 200


def _with_char(n: int, name: str, value: str | None) -> dict:
    body = item(n)
    chars = body["service"]["serviceCharacteristic"]
    chars[:] = [c for c in chars if c["name"] != name]
    if value is not None:
        chars.append({"name": name, "value": value})
    return body


def _bad_luhn(value: str) -> str:
    return value[:-1] + str((int(value[-1]) + 1) % 10)


BAD_ITEMS = {
    "removeOfferingCode": lambda: item(1, extra=[{"name": "removeOfferingCode", "value": "SOC9"}]),
    "no sim": lambda: _with_char(1, "sim", None),
    "no IMEI": lambda: _with_char(1, "IMEI", None),
    "no singleUserCode": lambda: _with_char(1, "singleUserCode", None),
    "no serviceZipCode": lambda: _with_char(1, "serviceZipCode", None),
    "bad zip": lambda: _with_char(1, "serviceZipCode", "7520"),
    "sim luhn": lambda: _with_char(1, "sim", _bad_luhn(iccid(1))),
    "sim short": lambda: _with_char(1, "sim", "890141032111185107"),
    "sim letters": lambda: _with_char(1, "sim", "8901410321111851072X"),
    "imei luhn": lambda: _with_char(1, "IMEI", _bad_luhn(imei(1))),
    "imei 14 digits": lambda: _with_char(1, "IMEI", imei(1)[:-1]),
    "no billing account": lambda: {k: v for k, v in item(1).items() if k != "billingAccount"},
    "empty billing account": lambda: {**item(1), "billingAccount": {"id": ""}},
    "no service": lambda: {"billingAccount": {"id": BAN}},
    "char not object": lambda: {**item(1), "service": {"serviceCharacteristic": ["sim"]}},
    "item not object": lambda: "hello",
}


@pytest.mark.parametrize("case", sorted(BAD_ITEMS))
def test_malformed_item_refuses_whole_request(tg: Tg, admin: AdminClient, case: str) -> None:
    body = [*items(10, 3), BAD_ITEMS[case]()]
    response = tg.activate(body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert set(payload) == {"message", "errorDescription"}
    assert "item 3" in payload["errorDescription"]
    assert admin.counters()["iccidsActivated"] == 0


@pytest.mark.parametrize("body", [{}, [], "x", None])
def test_body_must_be_a_non_empty_array(tg: Tg, admin: AdminClient, body: object) -> None:
    assert tg.activate(body).status_code == 400
    assert (
        tg.call("POST", "/sp/mobility/serviceactivation/api/v1/service", data=b"{not json").status_code == 400
    )
    assert admin.counters()["iccidsActivated"] == 0


def test_same_sim_twice_in_one_request_is_400(tg: Tg) -> None:
    response = tg.activate([item(1), item(2), item(1)])
    assert response.status_code == 400
    assert "more than once" in response.json()["errorDescription"]


def test_duplicate_iccid_refused_whole_with_409(tg: Tg, admin: AdminClient) -> None:
    first = tg.activate_ok(1, 2)
    response = tg.activate([item(5), item(2)])
    assert response.status_code == 409
    payload = response.json()
    assert "message" in payload
    assert payload["duplicates"] == [{"sim": iccid(2), "existingRequestId": first}]
    assert admin.counters()["activationsPerIccid"] == {iccid(1): 1, iccid(2): 1}
    # still refused once active
    tg.poll_until_done(first)
    assert tg.activate([item(1)]).status_code == 409


def test_rejected_iccid_may_be_activated_again(tg: Tg, admin: AdminClient) -> None:
    admin.load_scenario(
        scenario(outcomes=[{"kind": "reject_activation", "iccids": [iccid(2)], "max_attempt": 1}])
    )
    body = tg.poll_until_done(tg.activate_ok(1, 2))
    assert body[1]["service"]["status"] == "rejected"
    second = tg.activate_ok(2, 1)
    final = tg.poll_until_done(second)
    assert final[0]["service"]["status"] == "active"
    counters = admin.counters()
    assert counters["activationsPerIccid"][iccid(2)] == 2
    assert counters["iccidsActivatedMoreThanOnce"] == [iccid(2)]
    device = admin.device(iccid(2))
    assert device["attempt"] == 2 and device["previousAttempts"][0]["status"] == "rejected"


def test_mdns_never_reused_and_test_data_is_luhn_valid(tg: Tg) -> None:
    assert luhn_valid(iccid(7)) and luhn_valid(imei(7))
    mdns = tg.active_lines(1, 50) + tg.active_lines(100, 50)
    assert len(set(mdns)) == 100
