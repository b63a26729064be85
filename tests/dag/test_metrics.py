"""Metrics through Airflow's Stats to a real StatsD listener (UDP on loopback).

Airflow configures Stats once per process from ``[metrics]``, so the emitting code runs in a child
process configured by environment variables (``AIRFLOW__METRICS__STATSD_*``): it calls the
simulator through ``TelegenceHook`` (with a 429, 503s and a refused connection among the answers)
and calls the finalize helpers; the test reads the datagrams that arrived.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import scenario, telegence_conn

from telegence_activation.domain.identifiers import luhn_check_digit
from telegence_simulator.launcher import RunningSimulator

PREFIX = "tgtest"
# statsd's wire format: <name>:<value>|<type>
_DATAGRAM = re.compile(r"^(?P<name>[^:]+):(?P<value>[-0-9.]+)\|(?P<type>c|ms|g)$")

# The child: calls of every kind against the simulator, then the finalize helpers.
CHILD = r"""
import json, sys
from telegence_activation import metrics
from telegence_activation.hooks.telegence import TelegenceHook

items = json.loads(sys.argv[1])
# Our account: its bucket of 4 calls emptied by 4 lookups, so the activation is throttled (429,
# Retry-After 2 s, really waited), then accepted.
ours = TelegenceHook("telegence_sp_1")
for _ in range(4):
    assert ours.activation_status("no-such-request").status == 404
accepted = ours.activate(items)
assert accepted.ok and accepted.attempts == 2 and accepted.retry_after_honoured == 2, accepted.describe()
# Another account (its own bucket): a final 404, and line lookups answered 503 every time.
other = TelegenceHook("telegence_other", sleep=lambda s: None)
assert other.activation_status("no-such-request").status == 404
unavailable = other.service_details("5550000000")
assert unavailable.exhausted and unavailable.attempts == 3, unavailable.describe()
# A carrier that cannot be reached at all.
down = TelegenceHook("telegence_down", sleep=lambda s: None).activation_status("x")
assert down.exhausted and down.status == 0, down.describe()
metrics.record_outcome({"PROCESSED": 448, "ERROR": 2, "API_FAILED": 0, "outcome_unknown": 1}, status="ERROR")
metrics.record_step_durations([
    {"step": "ActivateDevice", "seconds": 1.5},
    {"step": "RequestIPProvision", "seconds": None},
])
print("done")
"""


@dataclass
class StatsdListener:
    """A UDP socket on 127.0.0.1 that keeps every StatsD line it receives."""

    port: int
    lines: list[str] = field(default_factory=list)

    def metrics(self) -> list[tuple[str, float, str]]:
        found = []
        for line in list(self.lines):
            match = _DATAGRAM.match(line)
            assert match, f"not a StatsD line: {line!r}"
            found.append((match["name"], float(match["value"]), match["type"]))
        return found

    def counts(self) -> dict[str, float]:
        """Counter totals by name (without the prefix)."""
        totals: dict[str, float] = {}
        for name, value, kind in self.metrics():
            if kind == "c":
                key = name.removeprefix(f"{PREFIX}.")
                totals[key] = totals.get(key, 0) + value
        return totals

    def timers(self) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        for name, value, kind in self.metrics():
            if kind == "ms":
                found.setdefault(name.removeprefix(f"{PREFIX}."), []).append(value)
        return found

    def wait_for(self, name: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line.startswith(f"{PREFIX}.{name}:") for line in list(self.lines)):
                return
            time.sleep(0.05)
        raise AssertionError(f"{name} never arrived; got {self.lines}")


@pytest.fixture
def statsd() -> Iterator[StatsdListener]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    listener = StatsdListener(int(sock.getsockname()[1]))
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                data = sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            listener.lines.extend(line for line in data.decode().split("\n") if line)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


def _item(n: int) -> dict[str, Any]:
    iccid_body = f"8901410{n:012d}"
    imei_body = f"35{n:012d}"
    chars = {
        "singleUserCode": "IOTPLAN1",
        "serviceZipCode": "75201",
        "equipmentType": "G",
        "deviceTechnologyType": "UMTS",
        "IMEI": imei_body + luhn_check_digit(imei_body),
        "sim": iccid_body + luhn_check_digit(iccid_body),
    }
    return {
        "billingAccount": {"id": "287301234567"},
        "relatedParty": [
            {
                "role": "subscriber",
                "firstName": "Ada",
                "lastName": "Lovelace",
                "address": {
                    "streetNumber": "1",
                    "streetName": "Main",
                    "city": "Dallas",
                    "state": "TX",
                    "zipCode": "75201",
                },
            }
        ],
        "service": {
            "serviceSpecification": {"id": "12", "href": "Mobility Services"},
            "serviceQualification": {"id": ""},
            "serviceCharacteristic": [{"name": k, "value": v} for k, v in chars.items()],
        },
    }


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_child(sim: RunningSimulator, statsd_port: int, *, statsd_on: bool) -> None:
    env = {
        **os.environ,
        "AIRFLOW__METRICS__STATSD_ON": str(statsd_on),
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd_port),
        "AIRFLOW__METRICS__STATSD_PREFIX": PREFIX,
        "AIRFLOW_CONN_TELEGENCE_SP_1": telegence_conn(sim),
        "AIRFLOW_CONN_TELEGENCE_OTHER": telegence_conn(sim, login="ro-app-id", password="ro-app-secret"),
        "AIRFLOW_CONN_TELEGENCE_DOWN": json.dumps(
            {
                "conn_type": "http",
                "host": f"http://127.0.0.1:{_closed_port()}",
                "login": "x",
                "password": "y",
                "extra": {"max_attempts": 2, "backoff_initial": 0.01, "backoff_max": 0.02, "timeout": 2},
            }
        ),
    }
    # n unique per run: the simulator remembers activated SIMs until the scenario is reloaded.
    base = int(time.time() * 1000) % 10**9
    items = [_item(base + i) for i in range(3)]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(items)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0 and "done" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture
def faulty_carrier(sim: RunningSimulator) -> Iterator[RunningSimulator]:
    """The session's simulator limiting each account to 4 calls at once (then one per 2 s, 429 with
    Retry-After 2) and answering every line lookup 503."""
    sim.admin.load_scenario(
        scenario(
            rate_limit={"per_second": 0.5, "burst": 4, "retry_after": 2},
            faults=[{"endpoint": "service_details", "kind": "error", "status": 503}],
        )
    )
    try:
        yield sim
    finally:
        sim.admin.load_scenario(scenario())


def test_carrier_calls_throttling_retries_and_outcomes_reach_statsd(
    faulty_carrier: RunningSimulator, statsd: StatsdListener
) -> None:
    _run_child(faulty_carrier, statsd.port, statsd_on=True)
    statsd.wait_for("telegence.step.duration.activate_device")
    counts = statsd.counts()

    # Every attempt by endpoint and answer: the 429, then the accepted POST.
    assert counts["telegence.carrier.calls.activate.429"] == 1
    assert counts["telegence.carrier.calls.activate.202"] == 1
    assert counts["telegence.carrier.throttled.activate"] == 1
    assert counts["telegence.carrier.retries.activate"] == 1
    assert "telegence.carrier.exhausted.activate" not in counts
    assert counts["telegence.carrier.calls.activation_status.404"] == 5  # final answers: not retried
    assert "telegence.carrier.throttled.activation_status" not in counts
    # A carrier answering 503 every time: 3 attempts, 2 retries, then the call is exhausted.
    assert counts["telegence.carrier.calls.service_details.503"] == 3
    assert counts["telegence.carrier.retries.service_details"] == 2
    assert counts["telegence.carrier.exhausted.service_details"] == 1
    # No connection at all (the other hook's connection points at a closed port): 2 attempts.
    assert counts["telegence.carrier.calls.activation_status.connection_error"] == 2
    assert counts["telegence.carrier.retries.activation_status"] == 1
    assert counts["telegence.carrier.exhausted.activation_status"] == 1
    # Every attempt's time to its answer.
    assert len(statsd.timers()["telegence.carrier.latency.activate"]) == 2

    # The finalize helpers: devices by outcome (zeros not sent), the bulk change, the steps.
    assert counts["telegence.devices.processed"] == 448
    assert counts["telegence.devices.error"] == 2
    assert counts["telegence.devices.outcome_unknown"] == 1
    assert "telegence.devices.api_failed" not in counts
    assert counts["telegence.bulk_changes.error"] == 1
    timers = statsd.timers()
    assert timers["telegence.step.duration.activate_device"] == [1500.0]
    assert "telegence.step.duration.request_ip_provision" not in timers

    # Under Airflow's configured prefix, next to Airflow's own metrics.
    names = {name for name, _v, _t in statsd.metrics()}
    assert all(name.startswith(f"{PREFIX}.") for name in names), names
    assert f"{PREFIX}.telegence.carrier.calls.activate.202" in names


def test_with_statsd_off_nothing_is_sent(faulty_carrier: RunningSimulator, statsd: StatsdListener) -> None:
    _run_child(faulty_carrier, statsd.port, statsd_on=False)
    time.sleep(0.5)
    assert statsd.lines == []


def test_every_metric_family_is_documented() -> None:
    from pathlib import Path

    from telegence_activation import metrics

    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    # Every metric family the module names (its upper-case telegence.* constants), so a new one
    # cannot be added without its row.
    families = [
        value
        for key, value in vars(metrics).items()
        if key.isupper() and isinstance(value, str) and value.startswith(f"{metrics.PREFIX}.")
    ]
    assert len(families) >= 11, families
    for name in families:
        assert f"`{name}." in doc, name
    for endpoint in metrics.ENDPOINTS:
        assert f"`{endpoint}`" in doc, endpoint
