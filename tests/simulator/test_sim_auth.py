"""Authentication (401), read-only accounts (403) and the default demo account."""

from __future__ import annotations

import pytest
from sim_testkit import ACTIVATE, APP_SECRET, IP_PROVISION, IP_RESERVE, LINECONFIG, Tg, items, scenario

from telegence_simulator.launcher import AdminClient, RunningSimulator


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"app-id": "demo-app-id"},
        {"app-secret": APP_SECRET},
        {"app-id": "demo-app-id", "app-secret": "wrong"},
        {"app-id": "nobody", "app-secret": APP_SECRET},
    ],
)
def test_missing_or_bad_credentials_get_401(sim: RunningSimulator, admin: AdminClient, headers: dict) -> None:
    for method, path in [("POST", ACTIVATE), ("GET", f"{ACTIVATE}/x"), ("GET", f"{LINECONFIG}/2145550001")]:
        response = Tg(sim.base_url).session.request(method, sim.base_url + path, headers=headers, json=[])
        assert response.status_code == 401
        assert set(response.json()) == {"message"}
        assert APP_SECRET not in response.text
    assert admin.counters()["calls"]["activate"] == {"401": 1}


def test_read_only_account_gets_403_on_every_write(tg: Tg, tg_ro: Tg, admin: AdminClient) -> None:
    mdn = tg.active_lines(1, 1)[0]
    assert tg_ro.activate(items(10, 1)).status_code == 403
    assert tg_ro.remove_code(mdn, "SOC1").status_code == 403
    assert tg_ro.reserve("TEST.PDP", 1).status_code == 403
    assert tg_ro.call("POST", IP_PROVISION, json={}).status_code == 403
    assert "message" in tg_ro.reserve("TEST.PDP", 1).json()
    # reads are allowed
    assert tg_ro.details(mdn).status_code == 200
    assert tg_ro.status(admin.line(mdn)["requestId"]).status_code == 200
    # nothing was written
    assert admin.counters()["iccidsActivated"] == 1
    assert admin.ip_pools()["TEST.PDP"]["handedOut"] == 0
    assert admin.line(mdn)["removedOfferingCodes"] == []


def test_default_demo_account_when_scenario_names_none(sim: RunningSimulator, admin: AdminClient) -> None:
    data = scenario()
    del data["accounts"]
    admin.load_scenario(data)
    demo = Tg(sim.base_url, "demo-app-id", "demo-app-secret")
    assert demo.activate(items(1, 1)).status_code == 202
    assert Tg(sim.base_url, "ro-app-id", "ro-app-secret").activate(items(2, 1)).status_code == 401


def test_secret_is_never_echoed(sim: RunningSimulator, admin: AdminClient) -> None:
    dump = admin.scenario()
    assert APP_SECRET not in str(dump)
    Tg(sim.base_url, "demo-app-id", "bad-secret-xyz").call("GET", IP_RESERVE)
    assert "bad-secret-xyz" not in sim.log_text()
    assert APP_SECRET not in sim.log_text()
