"""Start the simulator in a separate process for tests, benchmarks and local tools.

    with start_simulator(scenario="flaky", seed=7) as sim:
        requests.post(sim.base_url + "/sp/mobility/...", ...)
        sim.admin.counters()

The child process exits on :meth:`RunningSimulator.stop`, at interpreter exit, and on its own
when the launching process dies (it polls its parent pid), so no server is ever leaked.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from .scenario import SCENARIO_DIR

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding telegence_activation/
_LIVE: weakref.WeakSet[RunningSimulator] = weakref.WeakSet()


class AdminClient:
    """A small client of the simulator's ``/_admin/`` API."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"admin {method} {path} -> {response.status_code}: {response.text}")
        return response.json()

    def health(self) -> dict[str, Any]:
        """Liveness and a short summary."""
        return dict(self._call("GET", "/_admin/health"))

    def load_scenario(
        self, scenario: Mapping[str, Any] | str | Path, keep_state: bool = False, seed: int | None = None
    ) -> dict[str, Any]:
        """Load a scenario (mapping, built-in name or YAML file); resets state unless ``keep_state``."""
        params: dict[str, str] = {"keep_state": "1" if keep_state else "0"}
        if seed is not None:
            params["seed"] = str(seed)
        if isinstance(scenario, Mapping):
            return dict(self._call("POST", "/_admin/scenario", params=params, json=dict(scenario)))
        text = str(scenario)
        if "/" not in text and (SCENARIO_DIR / f"{text}.yaml").is_file():
            params["name"] = text
            return dict(self._call("POST", "/_admin/scenario", params=params))
        import yaml

        data = yaml.safe_load(Path(text).read_text(encoding="utf-8"))
        return dict(self._call("POST", "/_admin/scenario", params=params, json=data))

    def scenario(self) -> dict[str, Any]:
        """The current scenario (secrets masked) and seed."""
        return dict(self._call("GET", "/_admin/scenario"))

    def reset(self) -> dict[str, Any]:
        """Forget all devices, pools and counters (keeps the scenario)."""
        return dict(self._call("POST", "/_admin/reset"))

    def counters(self, iccids: bool = True) -> dict[str, Any]:
        """Calls per endpoint and status, activations per ICCID, 429s and faults."""
        return dict(self._call("GET", "/_admin/counters", params={"iccids": "1" if iccids else "0"}))

    def device(self, iccid: str) -> dict[str, Any]:
        """Current state of one device by ICCID."""
        return dict(self._call("GET", f"/_admin/devices/{iccid}"))

    def line(self, mdn: str) -> dict[str, Any]:
        """Current state of one device by subscriber number."""
        return dict(self._call("GET", f"/_admin/lines/{mdn}"))

    def state(self) -> dict[str, Any]:
        """Summary of the whole carrier state."""
        return dict(self._call("GET", "/_admin/state"))

    def ip_pools(self) -> dict[str, Any]:
        """Static IP pools and their addresses."""
        return dict(self._call("GET", "/_admin/ip-pools"))

    def advance(self, seconds: float) -> dict[str, Any]:
        """Move the simulated clock forward."""
        return dict(self._call("POST", "/_admin/clock", json={"advance": seconds}))

    def set_time_scale(self, time_scale: float) -> dict[str, Any]:
        """Change the simulated clock speed."""
        return dict(self._call("POST", "/_admin/clock", json={"time_scale": time_scale}))

    def complete(self) -> dict[str, Any]:
        """Decide every open activation and provisioning entry now."""
        return dict(self._call("POST", "/_admin/complete"))

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()


class RunningSimulator:
    """Handle on a simulator child process."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int, workdir: Path) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self.admin = AdminClient(self.base_url)
        self.log_path = workdir / "simulator.log"
        self._workdir = workdir
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        """Process id of the simulator."""
        return self.process.pid

    def is_running(self) -> bool:
        """True while the child process is alive."""
        return self.process.poll() is None

    def url(self, path: str) -> str:
        """Absolute URL for a path on the simulator."""
        return self.base_url + path

    def log_text(self) -> str:
        """The child's stdout/stderr so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the child (SIGTERM, then SIGKILL) and clean up; idempotent."""
        self.admin.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        shutil.rmtree(self._workdir, ignore_errors=True)
        _LIVE.discard(self)

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningSimulator(pid={self.pid}, base_url={self.base_url!r})"


def _stop_all() -> None:
    for simulator in list(_LIVE):
        simulator.stop()


atexit.register(_stop_all)


def start_simulator(
    scenario: Mapping[str, Any] | str | Path | None = None,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    seed: int | None = None,
    time_scale: float = 1.0,
    startup_timeout: float = 20.0,
    log_level: str = "WARNING",
    python: str | None = None,
) -> RunningSimulator:
    """Start ``python -m telegence_activation.simulator`` in a child process and wait until healthy.

    ``scenario`` is a built-in name, a YAML/JSON file, a mapping (same schema) or None (``happy``).
    ``port`` None or 0 picks a free port. Raises RuntimeError if the child does not come up.
    """
    workdir = Path(tempfile.mkdtemp(prefix="telegence-sim-"))
    port_file = workdir / "port"
    if scenario is None:
        scenario_arg = "happy"
    elif isinstance(scenario, Mapping):
        scenario_path = workdir / "scenario.json"
        scenario_path.write_text(json.dumps(dict(scenario)), encoding="utf-8")
        scenario_arg = str(scenario_path)
    else:
        scenario_arg = str(scenario)
    cmd = [
        python or sys.executable,
        "-m",
        "telegence_activation.simulator",
        "--host",
        host,
        "--port",
        str(port or 0),
        "--scenario",
        scenario_arg,
        "--time-scale",
        repr(float(time_scale)),
        "--port-file",
        str(port_file),
        "--parent-pid",
        str(os.getpid()),
        "--log-level",
        log_level,
    ]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_file = (workdir / "simulator.log").open("wb")
    try:
        process = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    finally:
        log_file.close()
    deadline = time.monotonic() + startup_timeout
    bound_port: int | None = None
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = (workdir / "simulator.log").read_text(encoding="utf-8", errors="replace")
                raise RuntimeError(f"simulator exited with code {process.returncode}:\n{log[-4000:]}")
            if bound_port is None and port_file.is_file():
                bound_port = int(port_file.read_text(encoding="utf-8"))
            if bound_port is not None:
                try:
                    reply = requests.get(f"http://{host}:{bound_port}/_admin/health", timeout=2)
                    if reply.status_code == 200:
                        return RunningSimulator(process, host, bound_port, workdir)
                except requests.RequestException:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"simulator did not become healthy within {startup_timeout} s")
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
