"""Admin API, scenario validation and the built-in scenario files."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from sim_testkit import Tg, iccid, item, scenario

from telegence_simulator.launcher import AdminClient, RunningSimulator
from telegence_simulator.scenario import ScenarioError, builtin_names, load_scenario


def test_health(sim: RunningSimulator, admin: AdminClient) -> None:
    health = admin.health()
    assert health["status"] == "ok"
    assert health["pid"] == sim.pid
    assert health["scenario"] == "test-base"


def test_counters_state_and_device_views(tg: Tg, admin: AdminClient) -> None:
    mdns = tg.active_lines(1, 3)
    tg.status("unknown")
    counters = admin.counters()
    assert counters["calls"]["activate"] == {"202": 1}
    assert counters["calls"]["activation_status"] == {"200": 2, "404": 1}
    assert counters["activationsTotal"] == 3
    assert counters["iccidsActivatedMoreThanOnce"] == []
    assert "activationsPerIccid" not in admin.counters(iccids=False)
    state = admin.state()
    assert state["devices"] == 3 and state["devicesByStatus"] == {"active": 3} and state["lines"] == 3
    by_iccid = admin.device(iccid(2))
    by_mdn = admin.line(mdns[1])
    assert by_iccid == by_mdn
    assert by_iccid["accountAppId"] == "demo-app-id"
    request = admin._call("GET", f"/_admin/requests/{by_iccid['requestId']}")
    assert request["polls"] == 2 and len(request["services"]) == 3


def _token(sim: RunningSimulator) -> dict[str, str]:
    assert sim.admin_token
    return {"X-Admin-Token": sim.admin_token}


def test_unknown_device_is_404(sim: RunningSimulator) -> None:
    headers = _token(sim)
    assert requests.get(sim.url(f"/_admin/devices/{iccid(5)}"), headers=headers, timeout=5).status_code == 404
    assert requests.get(sim.url("/_admin/lines/2145550001"), headers=headers, timeout=5).status_code == 404


def test_reset_forgets_everything(tg: Tg, admin: AdminClient) -> None:
    tg.active_lines(1, 2)
    tg.reserve("TEST.PDP", 2)
    admin.reset()
    assert admin.state()["devices"] == 0
    assert admin.counters()["calls"] == {}
    assert admin.ip_pools()["TEST.PDP"]["handedOut"] == 0
    assert tg.activate_ok(1, 2)  # no 409 after reset


def test_keep_state_keeps_devices_and_pools(tg: Tg, admin: AdminClient) -> None:
    tg.active_lines(1, 2)
    tg.reserve("TEST.PDP", 2)
    admin.load_scenario(scenario(description="changed"), keep_state=True)
    assert admin.state()["devices"] == 2
    assert admin.ip_pools()["TEST.PDP"]["handedOut"] == 2
    assert tg.activate([item(1)]).status_code == 409


def test_clock_endpoint(admin: AdminClient) -> None:
    before = admin._call("GET", "/_admin/clock")["now"]
    after = admin.advance(100)["now"]
    assert after >= before + 100
    assert admin.set_time_scale(3.0)["timeScale"] == 3.0


@pytest.mark.parametrize(
    "bad, expected",
    [
        ({"activation": {"unit": "hours"}}, "activation.unit"),
        ({"outcomes": [{"kind": "reject_activation"}]}, "at least one of"),
        ({"outcomes": [{"kind": "explode", "every": 2}]}, "outcomes.0.kind"),
        ({"faults": [{"kind": "latency"}]}, "needs 'seconds'"),
        ({"faults": [{"kind": "error", "status": 404}]}, "5xx"),
        ({"ip_pools": [{"pdp_name": "X", "cidr": "10.0.0.0/99"}]}, "invalid CIDR"),
        ({"accounts": [{"app_id": "a", "app_secret": "s"}, {"app_id": "a", "app_secret": "t"}]}, "unique"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_invalid_scenario_is_400_with_clear_errors(sim: RunningSimulator, bad: dict, expected: str) -> None:
    response = requests.post(
        sim.url("/_admin/scenario"), json=scenario(**bad), headers=_token(sim), timeout=5
    )
    assert response.status_code == 400
    payload = response.json()
    assert any(expected in line for line in payload["errors"]), payload
    # the previous scenario stays in force
    assert requests.get(sim.url("/_admin/health"), timeout=5).json()["scenario"] == "test-base"


def test_unknown_builtin_name_is_400(sim: RunningSimulator) -> None:
    response = requests.post(
        sim.url("/_admin/scenario"), params={"name": "nope"}, headers=_token(sim), timeout=5
    )
    assert response.status_code == 400
    assert "happy" in response.json()["message"]


@pytest.mark.parametrize("name", ["happy", "flaky", "slow-carrier", "nasty"])
def test_builtin_scenarios_load(admin: AdminClient, name: str) -> None:
    assert name in builtin_names()
    assert admin.load_scenario(name)["loaded"] == name
    assert load_scenario(name).name == name


def test_yaml_file_errors_are_clear(tmp_path: Path, admin: AdminClient) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("activation: [unclosed\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(broken)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("activation:\n  unit: polls\n  reserved_after: 5\n  done_after: 1\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="reserved_after must be <= done_after"):
        load_scenario(wrong)
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario(tmp_path / "missing.yaml")
    good = tmp_path / "mine.yaml"
    good.write_text("activation:\n  unit: polls\n  done_after: 1\n  reserved_after: 0\n", encoding="utf-8")
    assert load_scenario(good).name == "mine"
    assert admin.load_scenario(good)["loaded"] == "custom"
