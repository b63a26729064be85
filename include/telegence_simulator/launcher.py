"""Start the simulator in a separate process for tests, benchmarks and local tools.

    with start_simulator(scenario="flaky", seed=7) as sim:
        requests.post(sim.base_url + "/sp/mobility/...", ...)
        sim.admin.counters()

Each simulator gets a fresh random admin token, handed to the child in its environment (never on
its command line, which ``ps`` shows to everyone); ``sim.admin`` sends it on every call and
``sim.admin_token`` exposes it for callers that talk to ``/_admin/`` themselves.

The child process exits on :meth:`RunningSimulator.stop`, at interpreter exit, and on its own
when the launching process dies (it polls its parent pid), so no server is ever leaked.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
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

# keep in step with server.py (not imported from there: that would pull aiohttp into every client)
ADMIN_TOKEN_HEADER = "X-Admin-Token"
ADMIN_TOKEN_ENV = "TELEGENCE_SIMULATOR_ADMIN_TOKEN"

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the directory holding telegence_simulator/
_LIVE: weakref.WeakSet[RunningSimulator] = weakref.WeakSet()


class AdminClient:
    """A small client of the simulator's ``/_admin/`` API.

    ``admin_token`` is sent as ``X-Admin-Token`` on every call; None falls back to the
    ``TELEGENCE_SIMULATOR_ADMIN_TOKEN`` environment variable (for a simulator started elsewhere
    with that variable set). Without a token only ``health()`` works.
    """

    def __init__(self, base_url: str, timeout: float = 30.0, *, admin_token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        token = admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV)
        if token:
            self.session.headers[ADMIN_TOKEN_HEADER] = token

    def __repr__(self) -> str:
        return f"AdminClient(base_url={self.base_url!r})"  # never the token

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

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        host: str,
        port: int,
        workdir: Path,
        *,
        admin_token: str | None = None,
    ) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self.admin_token = admin_token
        """The token the child's admin API expects in ``X-Admin-Token`` (``.admin`` sends it)."""
        self.admin = AdminClient(self.base_url, admin_token=admin_token)
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
    admin_token: str | None = None,
) -> RunningSimulator:
    """Start ``python -m telegence_simulator`` in a child process and wait until healthy.

    ``scenario`` is a built-in name, a YAML/JSON file, a mapping (same schema) or None (``happy``).
    ``port`` None or 0 picks a free port. ``admin_token`` None generates a random one; either way it
    reaches the child through its environment, not its command line, and ``.admin`` sends it.
    Raises RuntimeError if the child does not come up.
    """
    if admin_token is not None and not admin_token:
        raise ValueError("admin_token must not be empty")
    token = admin_token if admin_token is not None else secrets.token_urlsafe(32)
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
        "telegence_simulator",
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
    env[ADMIN_TOKEN_ENV] = token  # not on the command line: /proc/<pid>/cmdline is world-readable
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
                    # /_admin/state needs the token: a 200 proves this is our child, not a stranger
                    # that happens to hold the port
                    reply = requests.get(
                        f"http://{host}:{bound_port}/_admin/state",
                        headers={ADMIN_TOKEN_HEADER: token},
                        timeout=2,
                    )
                    if reply.status_code == 200:
                        return RunningSimulator(process, host, bound_port, workdir, admin_token=token)
                    if reply.status_code in (401, 403):
                        raise RuntimeError(
                            f"the server on port {bound_port} refused the launcher's admin token "
                            f"({reply.status_code}); was {ADMIN_TOKEN_ENV} passed to the child?"
                        )
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
