"""The admin API's token: 401 without it, 403 when wrong, the launcher's client sends it, and it
never shows on a command line or in the logs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import requests
from sim_testkit import APP_ID, APP_SECRET, Tg, iccid, scenario

from telegence_simulator.launcher import (
    ADMIN_TOKEN_ENV,
    ADMIN_TOKEN_HEADER,
    AdminClient,
    RunningSimulator,
    start_simulator,
)

INCLUDE = Path(__file__).resolve().parents[2] / "include"

# every guarded route, with a request that succeeds when the token is right
GUARDED = [
    ("GET", "/_admin/scenario", None),
    ("POST", "/_admin/scenario", {"name": "happy"}),
    ("POST", "/_admin/reset", None),
    ("GET", "/_admin/counters", None),
    ("GET", f"/_admin/devices/{iccid(1)}", None),
    ("GET", "/_admin/lines/2145550001", None),
    ("GET", "/_admin/requests/00000000-0000-4000-8000-000000000000", None),
    ("GET", "/_admin/state", None),
    ("GET", "/_admin/ip-pools", None),
    ("GET", "/_admin/ip-batches/00000000-0000-4000-8000-000000000000", None),
    ("GET", "/_admin/clock", None),
    ("POST", "/_admin/clock", None),
    ("POST", "/_admin/complete", None),
]
NOT_FOUND_WITH_TOKEN = ("/_admin/devices/", "/_admin/lines/", "/_admin/requests/", "/_admin/ip-batches/")


def _call(
    sim: RunningSimulator, method: str, path: str, params: dict[str, str] | None, token: str | None
) -> requests.Response:
    headers = {ADMIN_TOKEN_HEADER: token} if token is not None else {}
    return requests.request(method, sim.url(path), params=params, headers=headers, timeout=5)


@pytest.mark.parametrize("method, path, params", GUARDED)
def test_every_admin_route_needs_the_token(
    sim: RunningSimulator, method: str, path: str, params: dict[str, str] | None
) -> None:
    missing = _call(sim, method, path, params, None)
    assert missing.status_code == 401
    assert missing.json() == {"message": "admin token required"}
    empty = _call(sim, method, path, params, "")
    assert empty.status_code == 401
    wrong = _call(sim, method, path, params, "not-the-token")
    assert wrong.status_code == 403
    assert "message" in wrong.json() and "not-the-token" not in wrong.text
    assert sim.admin_token is not None
    assert _call(sim, method, path, params, sim.admin_token + "x").status_code == 403
    right = _call(sim, method, path, params, sim.admin_token)
    expected = 404 if path.startswith(NOT_FOUND_WITH_TOKEN) else 200
    assert right.status_code == expected, right.text


def test_health_stays_open(sim: RunningSimulator) -> None:
    response = requests.get(sim.url("/_admin/health"), timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert sim.admin_token is not None and sim.admin_token not in response.text


def test_refused_admin_calls_change_nothing(sim: RunningSimulator, tg: Tg, admin: AdminClient) -> None:
    tg.active_lines(1, 2)
    assert requests.post(sim.url("/_admin/reset"), timeout=5).status_code == 401
    takeover = scenario(accounts=[{"app_id": "intruder", "app_secret": "intruder-secret"}])
    response = requests.post(
        sim.url("/_admin/scenario"), json=takeover, headers={ADMIN_TOKEN_HEADER: "guess"}, timeout=5
    )
    assert response.status_code == 403
    assert admin.state()["devices"] == 2
    assert admin.scenario()["scenario"]["name"] == "test-base"
    assert (
        tg.details(admin.device(iccid(1))["subscriberNumber"]).status_code == 200
    )  # the accounts are unchanged


def test_contract_routes_need_no_admin_token(sim: RunningSimulator) -> None:
    tg = Tg(sim.base_url, APP_ID, APP_SECRET)
    assert tg.activate_ok(1, 1)  # Tg sends no X-Admin-Token


def test_launcher_admin_client_sends_the_token(sim: RunningSimulator, admin: AdminClient) -> None:
    assert sim.admin_token and len(sim.admin_token) >= 32
    assert admin.state()["devices"] == 0
    assert admin.session.headers[ADMIN_TOKEN_HEADER] == sim.admin_token
    assert sim.admin_token not in repr(sim) and sim.admin_token not in repr(admin)


def test_admin_client_token_keyword_and_environment(
    sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sim.admin_token is not None
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    anonymous = AdminClient(sim.base_url)  # the old constructor still works
    try:
        assert anonymous.health()["status"] == "ok"
        with pytest.raises(RuntimeError, match="401"):
            anonymous.state()
    finally:
        anonymous.close()
    wrong = AdminClient(sim.base_url, admin_token="wrong")
    try:
        with pytest.raises(RuntimeError, match="403"):
            wrong.reset()
    finally:
        wrong.close()
    explicit = AdminClient(sim.base_url, 5.0, admin_token=sim.admin_token)
    try:
        assert explicit.state()["devices"] == 0
    finally:
        explicit.close()
    monkeypatch.setenv(ADMIN_TOKEN_ENV, sim.admin_token)
    from_env = AdminClient(sim.base_url)
    try:
        assert from_env.counters()["calls"] == {}
    finally:
        from_env.close()


def test_launcher_token_is_in_the_environment_not_on_the_command_line() -> None:
    with start_simulator("happy", admin_token="chosen-token-for-this-test") as chosen:
        assert chosen.admin_token == "chosen-token-for-this-test"
        assert chosen.admin.state()["devices"] == 0
    with start_simulator("happy") as sim:
        token = sim.admin_token
        assert token and token != "chosen-token-for-this-test"
        cmdline = Path(f"/proc/{sim.pid}/cmdline").read_bytes()
        assert b"telegence_simulator" in cmdline
        assert token.encode() not in cmdline
        process = psutil.Process(sim.pid)
        assert not any(token in arg for arg in process.cmdline())
        assert process.environ().get(ADMIN_TOKEN_ENV) == token  # readable by the same user only
        assert ADMIN_TOKEN_ENV not in os.environ or os.environ[ADMIN_TOKEN_ENV] != token
        assert sim.admin.counters()["calls"] == {}
        requests.get(sim.url("/_admin/state"), timeout=5)  # a refused call
        assert token not in sim.log_text()


def test_launcher_rejects_an_empty_token() -> None:
    with pytest.raises(ValueError, match="empty"):
        start_simulator("happy", admin_token="")


# ---------------------------------------------------------------------- the command line
def _env(token: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(INCLUDE), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop(ADMIN_TOKEN_ENV, None)
    if token is not None:
        env[ADMIN_TOKEN_ENV] = token
    return env


@contextmanager
def _cli(tmp_path: Path, *extra: str, env_token: str | None = None) -> Iterator[tuple[str, Path]]:
    """Run the CLI with the access log at DEBUG; yields (base url, combined output file)."""
    port_file = tmp_path / "port"
    output = tmp_path / "output.log"
    cmd = [
        sys.executable,
        "-m",
        "telegence_simulator",
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--parent-pid",
        str(os.getpid()),
        "--log-level",
        "DEBUG",
        "--access-log",
        *extra,
    ]
    with output.open("wb") as sink:
        process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=_env(env_token))
    try:
        deadline = time.monotonic() + 20
        while not port_file.is_file():
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "simulator did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{int(port_file.read_text())}", output
    finally:
        process.terminate()
        process.wait(10)


def _exercise(base_url: str, token: str) -> None:
    """Refused and accepted admin calls, so that any per-request logging would show the token."""
    assert requests.get(base_url + "/_admin/state", timeout=5).status_code == 401
    assert (
        requests.get(base_url + "/_admin/state", headers={ADMIN_TOKEN_HEADER: "x"}, timeout=5).status_code
        == 403
    )
    assert requests.post(base_url + "/_admin/reset", headers={ADMIN_TOKEN_HEADER: token}, timeout=5).ok
    assert requests.get(base_url + "/_admin/counters", headers={ADMIN_TOKEN_HEADER: token}, timeout=5).ok


def test_cli_generates_and_prints_a_token_once(tmp_path: Path) -> None:
    with _cli(tmp_path) as (base_url, output):
        found = re.findall(r"admin token: (\S+)", output.read_text())
        assert len(found) == 1, output.read_text()
        token = found[0]
        assert len(token) >= 32
        _exercise(base_url, token)
    assert output.read_text().count(token) == 1  # announced once, never logged per request


def test_cli_takes_the_token_from_the_environment(tmp_path: Path) -> None:
    token = "environment-token-0123456789"
    with _cli(tmp_path, env_token=token) as (base_url, output):
        _exercise(base_url, token)
    text = output.read_text()
    assert token not in text and "admin token:" not in text


def test_cli_flag_wins_over_the_environment(tmp_path: Path) -> None:
    with _cli(tmp_path, "--admin-token", "flag-token-0123456789", env_token="env-token-0123456789") as (
        base_url,
        output,
    ):
        _exercise(base_url, "flag-token-0123456789")
        assert (
            requests.get(
                base_url + "/_admin/state", headers={ADMIN_TOKEN_HEADER: "env-token-0123456789"}, timeout=5
            ).status_code
            == 403
        )
    assert "admin token:" not in output.read_text()


@pytest.mark.parametrize("bad", ["", "has space", "caf\u00e9"])
def test_cli_rejects_unusable_tokens(bad: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "telegence_simulator", "--port", "0", "--admin-token", bad],
        capture_output=True,
        text=True,
        env=_env(None),
        timeout=30,
    )
    assert result.returncode == 2
    assert "invalid admin token" in result.stderr


def test_unknown_admin_paths_and_methods_reveal_nothing(sim: RunningSimulator) -> None:
    assert requests.get(sim.url("/_admin/nope"), timeout=5).status_code == 404
    assert requests.get(sim.url("/_admin/reset"), timeout=5).status_code == 405
    assert requests.delete(sim.url("/_admin/state"), timeout=5).status_code == 405
