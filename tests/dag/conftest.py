"""Fixtures for running the real DAG with ``dag.test()`` against the simulator and Postgres.

Airflow's metadata lives in the session's throw-away ``AIRFLOW_HOME`` (SQLite, migrated once);
the activation database is the session's test database; the Telegence simulator runs as a child
process on a free loopback port. Each test loads its own scenario and creates its own bulk change.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from smtp_server import mailbox  # noqa: F401  (the real SMTP server fixture)

from telegence_activation.domain.intake import IntakeOptions, sample_rows
from telegence_activation.intake import BulkChangeSpec, ingest_csv, write_sample_csv
from telegence_simulator.launcher import RunningSimulator, start_simulator

DAG_ID = "telegence_new_service_activation"
APP_ID = "test-app-id"
# Distinctive so that a leak into logs, audit rows or XCom is unmistakable.
APP_SECRET = "S3CRET-app-secret-7f3a9c"
FAST_CHECKS = {"activation_check_interval_seconds": 1, "ip_check_interval_seconds": 1}
# dag.test() keeps a run's conf in the DAG object's params, so every run states every knob.
DEFAULT_CONF = {
    "dry_run": False,
    "approval_required_over": 0,
    "activation_db_conn_id": "activation_db",
    "telegence_conn_id": None,
    "batch_size": 200,
    "batches_per_task": 1,
    "on_activation_failure": "stop",
    "activation_check_timeout_seconds": 3600,
    "ip_check_timeout_seconds": 3600,
    "deferrable_checks": False,
    "addition_bulk_change_id": None,
    "carrier_data_group": None,
    "carrier_rate_pool": None,
}


def scenario(**overrides: Any) -> dict[str, Any]:
    """A quick carrier: activations done in ~1 s, IPs in ~1.5 s; our account plus a read-only one."""
    base: dict[str, Any] = {
        "name": "dag-test",
        "seed": 7,
        "accounts": [
            {"app_id": APP_ID, "app_secret": APP_SECRET, "write_enabled": True},
            {"app_id": "ro-app-id", "app_secret": "ro-app-secret", "write_enabled": False},
        ],
        "activation": {"unit": "seconds", "reserved_after": 0.2, "done_after": 0.6},
        "ip_provisioning": {"unit": "seconds", "check_after": 0.2, "reserve_after": 0.4, "done_after": 0.8},
        "ip_pools": [{"pdp_name": "DEMO.PDP", "cidr": "10.20.0.0/16"}],
    }
    base.update(overrides)
    return base


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the session's Airflow metadata database and create the carrier pool."""
    env = os.environ.copy()
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    subprocess.run(
        [airflow, "pools", "set", "telegence_api", "8", "Telegence API calls"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="session")
def sim() -> Iterator[RunningSimulator]:
    with start_simulator(scenario(), seed=7) as running:
        yield running


@pytest.fixture(scope="session")
def dag(airflow_db: None, db_uri: str) -> Any:
    os.environ.setdefault("TELEGENCE_TASK_RETRY_DELAY_SECONDS", "1")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors, bag.import_errors
    found = bag.get_dag(DAG_ID)
    _PARAM_DEFAULTS.update({key: _copied(found.params.get_param(key).value) for key in found.params})
    return found


# The values of the DAG's params as the DAG file defines them (filled by the ``dag`` fixture).
_PARAM_DEFAULTS: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _dag_params_as_defined(request: pytest.FixtureRequest) -> None:
    """Give every test that uses the session's DAG its params as the DAG file defines them.

    ``dag.test()`` runs the tasks in this process and leaves the run's conf in the DAG object's
    params, so a test would otherwise see the conf of whichever test ran before it in the same
    process (e.g. a run without ``bulk_change_id`` would not be refused) - and that test differs
    between a serial run and each xdist worker. The values are put back in place (same Param
    objects), and keys that a conf added are dropped.
    """
    if "dag" not in request.fixturenames:
        return
    dag = request.getfixturevalue("dag")
    for key in [k for k in dag.params if k not in _PARAM_DEFAULTS]:
        del dag.params[key]
    for key, value in _PARAM_DEFAULTS.items():
        dag.params.get_param(key).value = _copied(value)


def _copied(value: Any) -> Any:
    """A copy of a mutable param value; anything else as it is (NOTSET must stay the sentinel)."""
    return copy.deepcopy(value) if isinstance(value, dict | list | set) else value


def telegence_conn(sim: RunningSimulator, **extra: Any) -> str:
    """The JSON form of a Telegence connection to the simulator, with fast retries for tests."""
    body = {
        "conn_type": "http",
        "host": sim.base_url,
        "login": extra.pop("login", APP_ID),
        "password": extra.pop("password", APP_SECRET),
        "extra": {"max_attempts": 3, "backoff_initial": 0.01, "backoff_max": 0.05, "timeout": 5, **extra},
    }
    return json.dumps(body)


@pytest.fixture
def carrier(sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch) -> RunningSimulator:
    """The simulator reset to the quick scenario, and service provider 1's connection pointing at it."""
    sim.admin.load_scenario(scenario())
    monkeypatch.setenv("AIRFLOW_CONN_TELEGENCE_SP_1", telegence_conn(sim))
    monkeypatch.delenv("AIRFLOW_CONN_TELEGENCE_DEFAULT", raising=False)
    return sim


@dataclass
class BulkChange:
    id: int
    iccids: list[str]
    static_ip_iccids: list[str]


@pytest.fixture
def make_bulk_change(db_uri: str, tmp_path: Path) -> Callable[..., BulkChange]:
    """Create a bulk change of ``n`` fresh sample devices; every ``static_ip_every``-th asks a static IP."""

    def make(n: int, *, static_ip_every: int = 3, service_provider_id: int = 1, **spec: Any) -> BulkChange:
        path = tmp_path / f"devices-{n}-{os.urandom(3).hex()}.csv"
        write_sample_csv(path, n, static_ip_every=static_ip_every)
        result = ingest_csv(db_uri, path, BulkChangeSpec(service_provider_id, IntakeOptions("BAN-1"), **spec))
        with psycopg.connect(db_uri) as conn:
            rows = conn.execute(
                "SELECT iccid, needs_static_ip FROM activation.device_change WHERE bulk_change_id = %s "
                "ORDER BY line_number",
                (result.bulk_change_id,),
            ).fetchall()
        return BulkChange(result.bulk_change_id, [r[0] for r in rows], [r[0] for r in rows if r[1]])

    return make


@pytest.fixture
def run_dag(dag: Any) -> Callable[..., Any]:
    """Run the DAG for a bulk change with ``dag.test()``; returns the DagRun.

    Every call is a new DAG run (its own run id), except with ``as_run=<datetime>``: calls with the
    same ``as_run`` replace one run of that id, which is what clearing a whole run does.
    """

    def run(bulk_change_id: int, *, as_run: Any = None, **conf: Any) -> Any:
        run_conf = {"bulk_change_id": bulk_change_id, **DEFAULT_CONF, **FAST_CHECKS, **conf}
        if as_run is None:
            return dag.test(run_conf=run_conf)
        return dag.test(run_conf=run_conf, run_after=as_run, logical_date=as_run)

    return run


@pytest.fixture
def db(db_uri: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_uri, autocommit=True) as conn:
        yield conn


def devices(conn: psycopg.Connection, bulk_change_id: int) -> dict[str, dict[str, Any]]:
    """Every device of a bulk change by ICCID."""
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT iccid, status, step, status_details, subscriber_number, host(assigned_ip) AS assigned_ip,
                      activation_request_id, ip_batch_id, needs_static_ip, batch_no
                 FROM activation.device_change WHERE bulk_change_id = %s""",
            (bulk_change_id,),
        ).fetchall()
    return {r["iccid"]: r for r in rows}


def statuses(conn: psycopg.Connection, bulk_change_id: int) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, count(*) FROM activation.device_change WHERE bulk_change_id = %s GROUP BY 1",
        (bulk_change_id,),
    ).fetchall()
    return {s: int(n) for s, n in rows}


def bulk_status(conn: psycopg.Connection, bulk_change_id: int) -> str:
    row = conn.execute(
        "SELECT status FROM activation.bulk_change WHERE id = %s", (bulk_change_id,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def audit_count(conn: psycopg.Connection, bulk_change_id: int, step: str | None = None) -> int:
    row = conn.execute(
        "SELECT count(*) FROM activation.device_change_log WHERE bulk_change_id = %s AND (%s::text IS NULL OR step = %s)",
        (bulk_change_id, step, step),
    ).fetchone()
    assert row is not None
    return int(row[0])


def task_states(run: Any) -> dict[str, list[str]]:
    """State of every task instance of a DagRun (mapped tasks give one state per instance)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(
            TaskInstance.run_id == run.run_id, TaskInstance.dag_id == DAG_ID
        )
        found: dict[str, list[str]] = {}
        for ti in tis:
            found.setdefault(ti.task_id, []).append(str(ti.state))
    return found


def sample_csv_rows(n: int, **kw: Any) -> list[dict[str, str]]:
    return list(sample_rows(n, **kw))


@dataclass
class Webhook:
    """A customer webhook on loopback: what it received, in order."""

    received: list[dict[str, Any]]


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    """A real HTTP server on loopback as the customer's webhook (connection ``telegence_notify``)."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_TELEGENCE_NOTIFY",
        json.dumps(
            {
                "conn_type": "http",
                "host": f"http://127.0.0.1:{server.server_port}",
                "extra": {"endpoint": "/hooks/bc"},
            }
        ),
    )
    try:
        yield Webhook(received)
    finally:
        server.shutdown()
        server.server_close()


def claim(conn: psycopg.Connection, bulk_change_id: int, run_id: str) -> None:
    """Make ``run_id`` the owner of a bulk change (what the prepare step of that run does first)."""
    conn.execute("UPDATE activation.bulk_change SET dag_run_id = %s WHERE id = %s", (run_id, bulk_change_id))


def as_run(run_id: str, **extra: Any) -> Any:
    """The task context of a task of DAG run ``run_id`` (for running one step by hand)."""
    from airflow.sdk import Context

    return Context(run_id=run_id, **extra)  # type: ignore[typeddict-item]
