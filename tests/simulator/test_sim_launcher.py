"""The launcher: separate process, free port, stop, CLI errors and no leaked servers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
from sim_testkit import Tg, items

from telegence_simulator.launcher import start_simulator

INCLUDE = Path(__file__).resolve().parents[2] / "include"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(INCLUDE), env.get("PYTHONPATH", "")) if p)
    return env


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def test_context_manager_free_port_and_stop() -> None:
    with start_simulator("slow-carrier", port=None, seed=3, time_scale=600) as sim:
        assert sim.port > 0 and sim.base_url == f"http://127.0.0.1:{sim.port}"
        assert sim.admin.health()["scenario"] == "slow-carrier"
        assert sim.admin.health()["timeScale"] == 600
        tg = Tg(sim.base_url)
        request_id = tg.activate_ok(1, 2)
        body = tg.poll_until_done(request_id, max_polls=100, pause=0.02)  # ~9 simulated minutes
        assert {s["service"]["status"] for s in body} == {"active"}
        pid = sim.pid
    assert not sim.is_running()
    assert _wait_gone(pid, 5)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{sim.port}/_admin/health", timeout=1)


def test_dict_scenario_and_stop_is_idempotent() -> None:
    sim = start_simulator(
        {"name": "inline", "activation": {"unit": "polls", "done_after": 1, "reserved_after": 0}}
    )
    try:
        assert sim.admin.health()["scenario"] == "inline"
        tg = Tg(sim.base_url)
        assert tg.activate(items(1, 1)).status_code == 202
    finally:
        sim.stop()
        sim.stop()
    assert not sim.is_running()


def test_bad_scenario_fails_fast() -> None:
    with pytest.raises(RuntimeError, match="not found"):
        start_simulator("no-such-scenario", startup_timeout=10)


def test_cli_rejects_invalid_scenario_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("faults:\n  - kind: latency\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "telegence_simulator", "--port", "0", "--scenario", str(bad)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
    )
    assert result.returncode == 2
    assert "needs 'seconds'" in result.stderr


def test_child_dies_when_parent_is_killed() -> None:
    code = (
        "from telegence_simulator.launcher import start_simulator\n"
        "import time\n"
        "sim = start_simulator()\n"
        "print(sim.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(child_pid)
        parent.kill()  # SIGKILL: no atexit, no cleanup in the parent
        parent.wait(10)
        assert _wait_gone(child_pid, 5), "simulator outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
