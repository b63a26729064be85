"""End to end with the real scheduler: the live stack as ``make demo`` runs it, driven over REST.

One stack per module (api-server, scheduler, dag-processor, triggerer, LocalExecutor; metadata in
a fresh database of the test server; the simulator). Bulk changes are triggered through the REST
API v2 or the CLI, exactly as operators do, and the database and simulator counters are checked.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from helpers import activations, finished, statuses, wait_until

from telegence_activation.api_client import AirflowApiError, run_id_for
from telegence_activation.domain.intake import IntakeOptions
from telegence_activation.intake import BulkChangeSpec, ingest_csv, write_sample_csv
from telegence_local.stack import LiveStack, StackConfig

pytestmark = pytest.mark.timeout(900)

APP_SECRET = "LIVE-s3cret-d41d8cd9"
SCENARIO: dict[str, Any] = {
    "name": "live-test",
    "seed": 11,
    "accounts": [{"app_id": "live-app-id", "app_secret": APP_SECRET, "write_enabled": True}],
    "activation": {"unit": "seconds", "reserved_after": 0.3, "done_after": 1.0},
    "ip_provisioning": {"unit": "seconds", "check_after": 0.3, "reserve_after": 0.6, "done_after": 1.2},
    "ip_pools": [{"pdp_name": "DEMO.PDP", "cidr": "10.20.0.0/16"}],
}
FAST = {"activation_check_interval_seconds": 2, "ip_check_interval_seconds": 2}


@pytest.fixture(scope="module")
def stack(pg_server_uri: str, db_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    home = tmp_path_factory.mktemp("live-airflow")
    live = LiveStack(
        StackConfig(
            home=home,
            scenario=SCENARIO,
            db_server_uri=pg_server_uri,
            activation_database=urlsplit(db_uri).path.lstrip("/"),
            airflow_database=f"airflow_live_{secrets.token_hex(3)}",
            app_id="live-app-id",
            app_secret=APP_SECRET,
            extra_env={"TELEGENCE_TASK_RETRY_DELAY_SECONDS": "2"},
        )
    )
    try:
        live.start()
        live.client().unpause()
        yield live
    except BaseException:
        for component in ("api-server", "scheduler", "dag-processor"):
            print(f"--- {component} ---\n{live.log_tail(component)}")
        raise
    finally:
        live.stop()
        with psycopg.connect(pg_server_uri, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{live.config.airflow_database}" WITH (FORCE)')


def new_bulk_change(
    stack: LiveStack, tmp_path: Path, n: int, static_ip_every: int = 3
) -> tuple[int, list[str]]:
    path = write_sample_csv(tmp_path / f"live-{secrets.token_hex(3)}.csv", n, static_ip_every=static_ip_every)
    result = ingest_csv(stack.activation_db_uri, path, BulkChangeSpec(1, IntakeOptions("BAN-LIVE")))
    with psycopg.connect(stack.activation_db_uri) as conn:
        iccids = [
            r[0]
            for r in conn.execute(
                "SELECT iccid FROM activation.device_change WHERE bulk_change_id = %s ORDER BY line_number",
                (result.bulk_change_id,),
            ).fetchall()
        ]
    return result.bulk_change_id, iccids


def cli(stack: LiveStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **{k: v for k, v in stack.env.items() if k.startswith("AIRFLOW_CONN_ACTIVATION_DB")}}
    env.update(
        TELEGENCE_AIRFLOW_API_URL=stack.api_url,
        TELEGENCE_AIRFLOW_USERNAME="admin",
        TELEGENCE_AIRFLOW_PASSWORD=stack.password,
    )
    return subprocess.run(
        [sys.executable, "-m", "telegence_activation", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for_run(stack: LiveStack, run_id: str, timeout: float = 400) -> str:
    return str(wait_until(lambda: finished(stack, run_id), timeout, f"run {run_id} finished", every=2))


def test_happy_bulk_change_through_the_cli_and_the_real_scheduler(stack: LiveStack, tmp_path: Path) -> None:
    bc, iccids = new_bulk_change(stack, tmp_path, 30)
    done = cli(stack, "trigger", str(bc), "--activation-check-interval", "2", "--ip-check-interval", "2")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    assert run_id == run_id_for(bc)
    assert wait_for_run(stack, run_id) == "success"
    assert statuses(stack, bc) == {"PROCESSED": 30}
    counted = activations(stack)
    assert all(counted[i] == 1 for i in iccids)
    # Mapped instances carry their readable label.
    labels = [
        t["rendered_map_index"] for t in stack.client().task_instances(run_id) if t["task_id"] == "activate"
    ]
    assert labels and labels[0].startswith("batch 1/1 (ICCID ")
    # A second trigger of the same bulk change is refused, clearly.
    again = cli(stack, "trigger", str(bc))
    assert again.returncode == 1 and "already triggered" in again.stderr
    # The CLI reads status and report from the database.
    status = cli(stack, "status", str(bc))
    assert status.returncode == 0 and "PROCESSED" in status.stdout and "30" in status.stdout
    report = cli(stack, "report", str(bc), "--format", "csv")
    assert report.returncode == 0 and len(report.stdout.strip().splitlines()) == 31
    # Real task log files: the app-secret never appears, the work does.
    logs = "".join(p.read_text(errors="replace") for p in (stack.config.home / "logs").rglob("*.log"))
    assert f"Batch 1/1 of bulk change {bc}" in logs
    assert APP_SECRET not in logs
    component_logs = "".join(p.read_text(errors="replace") for p in stack.logs_dir.glob("*.log"))
    assert APP_SECRET not in component_logs


def test_bad_conf_is_refused_with_400_and_nothing_is_written(stack: LiveStack, tmp_path: Path) -> None:
    bc, _ = new_bulk_change(stack, tmp_path, 3)
    client = stack.client()
    with pytest.raises(AirflowApiError) as refused:
        client.trigger({"bulk_change_id": bc, "batch_size": 999}, run_id_for(bc))
    assert refused.value.status == 400
    assert "batch_size" in refused.value.message
    with pytest.raises(AirflowApiError) as missing:
        client.get_run(run_id_for(bc))
    assert missing.value.status == 404
    assert statuses(stack, bc) == {"NEW": 3}


def test_retry_failed_after_the_carrier_failure_is_lifted(stack: LiveStack, tmp_path: Path) -> None:
    assert stack.simulator is not None
    bc, iccids = new_bulk_change(stack, tmp_path, 6, static_ip_every=0)
    rejected = iccids[2]
    stack.simulator.admin.load_scenario(
        {**SCENARIO, "outcomes": [{"kind": "reject_activation", "iccids": [rejected], "error": "try later"}]},
        keep_state=True,
    )
    run_id = run_id_for(bc)
    stack.client().trigger({"bulk_change_id": bc, **FAST}, run_id)
    assert wait_for_run(stack, run_id) == "success"
    assert statuses(stack, bc) == {"PROCESSED": 5, "ERROR": 1}
    # The green run's note says what it hides (set by the package's DAG-run listener).
    note = stack.client().get_run(run_id)["note"]
    assert note.startswith(f"**Bulk change {bc}: ERROR**: 5 of 6 line(s) activated, 1 failed"), note
    assert "permanent: activation rejected by the carrier: try later" in note
    stack.simulator.admin.load_scenario(SCENARIO, keep_state=True)  # the carrier is fixed
    # A carrier rejection is "permanent" in the error catalogue: the default retry leaves it alone.
    default = cli(stack, "retry-failed", str(bc))
    assert default.returncode == 0, default.stderr
    assert "no failed device to retry" in default.stdout and "--all" in default.stdout
    done = cli(stack, "retry-failed", str(bc), "--all")
    assert done.returncode == 0, done.stderr
    assert "reset 1 failed device(s)" in done.stdout
    # The clear put the run back to queued; wait on the devices, not on a clock.
    deadline = time.monotonic() + 400
    while statuses(stack, bc) != {"PROCESSED": 6} and time.monotonic() < deadline:
        time.sleep(1)
    assert wait_for_run(stack, run_id) == "success"
    assert statuses(stack, bc) == {"PROCESSED": 6}
    counted = activations(stack)
    assert counted[rejected] == 2  # the rejected attempt, then the retry
    assert all(counted[i] == 1 for i in iccids if i != rejected)
    assert stack.simulator.admin.device(rejected)["status"] == "active"


def test_two_bulk_changes_run_at_the_same_time(stack: LiveStack, tmp_path: Path) -> None:
    first, first_iccids = new_bulk_change(stack, tmp_path, 250)
    second, second_iccids = new_bulk_change(stack, tmp_path, 40)
    client = stack.client()
    for bc in (first, second):
        client.trigger({"bulk_change_id": bc, **FAST}, run_id_for(bc))
    assert wait_for_run(stack, run_id_for(first)) == "success"
    assert wait_for_run(stack, run_id_for(second)) == "success"
    assert statuses(stack, first) == {"PROCESSED": 250}
    assert statuses(stack, second) == {"PROCESSED": 40}
    counted = activations(stack)
    assert all(counted[i] == 1 for i in first_iccids + second_iccids)


# ----------------------------------------------------------------------------- operations (issue 11)


def task_state(stack: LiveStack, run_id: str, task_id: str) -> str | None:
    for ti in stack.client().task_instances(run_id):
        if ti["task_id"] == task_id:
            return ti["state"]
    return None


def wait_for_task(stack: LiveStack, run_id: str, task_id: str, state: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if task_state(stack, run_id, task_id) == state:
            return
        time.sleep(1)
    raise AssertionError(
        f"{task_id} of {run_id} not {state} after {timeout} s: {task_state(stack, run_id, task_id)}"
    )


def wait_for_parked(stack: LiveStack, run_id: str, task_id: str, timeout: float = 120) -> None:
    """Until the scheduler has logged the exit of the task's parked (awaiting input) process."""
    wanted = (f"task_id={task_id}, run_id={run_id},", "state=awaiting_input", "executor_state=success")

    def parked() -> bool:
        log = (stack.logs_dir / "scheduler.log").read_text(errors="replace")
        return any(
            "TaskInstance Finished:" in line and all(w in line for w in wanted) for line in log.splitlines()
        )

    deadline = time.monotonic() + timeout
    while not parked():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the scheduler never took the exit of {task_id}'s parked process of {run_id}"
            )
        time.sleep(0.5)


def writes_for(stack: LiveStack, iccids: list[str]) -> int:
    counted = activations(stack)
    return sum(int(counted.get(i, 0)) for i in iccids)


def bulk_change_row(stack: LiveStack, bc: int) -> tuple[Any, ...]:
    with psycopg.connect(stack.activation_db_uri) as conn:
        row = conn.execute(
            "SELECT status, dag_run_id, cancelled_by, cancel_reason FROM activation.bulk_change WHERE id = %s",
            (bc,),
        ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize("answer", ["Approve", "Reject"])
def test_a_big_bulk_change_waits_for_approval_in_the_ui(
    stack: LiveStack, tmp_path: Path, answer: str
) -> None:
    bc, iccids = new_bulk_change(stack, tmp_path, 8, static_ip_every=0)
    done = cli(stack, "trigger", str(bc), "--approval-over", "5", "--activation-check-interval", "2")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    wait_for_task(stack, run_id, "approve", "awaiting_input")
    # Answer as a person would, once the parked try's process has ended and the scheduler has
    # taken its exit: an answer within that window (a second or two, more on a loaded machine)
    # meets an Airflow 3.3 race (the resumed try shares the parked try's executor key, the late
    # "success" of the parked process makes the scheduler fail the resumed one, and the retry asks
    # again; README "Approval").
    wait_for_parked(stack, run_id, "approve")
    assert writes_for(stack, iccids) == 0  # nothing sent while the approval waits
    detail = stack.client().request(
        "GET",
        f"/api/v2/dags/telegence_new_service_activation/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails",
    )
    assert f"Approve bulk change {bc}: 8 line(s)" in detail["subject"]
    assert "lines to activate: **8**" in detail["body"]
    stack.client().respond(run_id, "approve", answer)
    assert wait_for_run(stack, run_id) == "success"
    if answer == "Approve":
        assert statuses(stack, bc) == {"PROCESSED": 8}
        assert all(activations(stack)[i] == 1 for i in iccids)
    else:
        assert statuses(stack, bc) == {"CANCELLED": 8}
        assert writes_for(stack, iccids) == 0
        status, _owner, by, reason = bulk_change_row(stack, bc)
        assert (status, by) == ("CANCELLED", "admin")
        assert reason == "approval rejected by admin in the Airflow UI"
        assert task_state(stack, run_id, "activate") == "skipped"
        note = stack.client().get_run(run_id)["note"]
        assert (
            note
            == f"**Bulk change {bc}: CANCELLED**: cancelled by admin: approval rejected by admin in the Airflow UI"
        )


def test_a_dry_run_over_rest_writes_nothing_to_the_carrier(stack: LiveStack, tmp_path: Path) -> None:
    assert stack.simulator is not None
    bc, iccids = new_bulk_change(stack, tmp_path, 40)
    before = stack.simulator.admin.counters(iccids=False)["calls"]
    done = cli(stack, "trigger", str(bc), "--dry-run")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    assert "__dry_run__" in run_id
    assert wait_for_run(stack, run_id) == "success"
    after = stack.simulator.admin.counters(iccids=False)["calls"]
    for endpoint in ("activate", "service_update", "ip_reserve", "ip_provision"):
        assert after.get(endpoint, {}) == before.get(endpoint, {}), endpoint
    assert writes_for(stack, iccids) == 0
    assert bulk_change_row(stack, bc)[:2] == ("NEW", None)
    with psycopg.connect(stack.activation_db_uri) as conn:
        plan = conn.execute(
            "SELECT plan FROM activation.bulk_change_plan WHERE bulk_change_id = %s", (bc,)
        ).fetchone()
    assert plan is not None and plan[0]["to_send"] == 40 and plan[0]["ok"] is True
    # The real run is still possible after the dry run.
    real = cli(stack, "trigger", str(bc), "--activation-check-interval", "2", "--ip-check-interval", "2")
    assert real.returncode == 0, real.stderr
    assert wait_for_run(stack, real.stdout.strip()) == "success"
    assert statuses(stack, bc) == {"PROCESSED": 40}


def test_cancel_while_batches_are_sent_stops_every_later_activation(stack: LiveStack, tmp_path: Path) -> None:
    assert stack.simulator is not None
    # Each activation POST takes 1 s at the carrier: batches are in flight when the cancel comes.
    stack.simulator.admin.load_scenario(
        {**SCENARIO, "faults": [{"endpoint": "activate", "kind": "latency", "seconds": 1.0}]}, keep_state=True
    )
    try:
        bc, iccids = new_bulk_change(stack, tmp_path, 400, static_ip_every=4)
        run_id = run_id_for(bc)
        stack.client().trigger({"bulk_change_id": bc, "batch_size": 10, **FAST}, run_id)
        with psycopg.connect(stack.activation_db_uri, autocommit=True) as conn:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM activation.carrier_write WHERE bulk_change_id = %s", (bc,)
                ).fetchone()
                if row and row[0] >= 3:
                    break
                time.sleep(0.2)
        done = cli(stack, "cancel", str(bc), "--reason", "customer changed the order")
        assert done.returncode == 0, done.stderr
        assert "never sent ended CANCELLED" in done.stdout
        assert wait_for_run(stack, run_id) == "success"
    finally:
        stack.simulator.admin.load_scenario(SCENARIO, keep_state=True)
    with psycopg.connect(stack.activation_db_uri) as conn:
        cancelled_at = conn.execute(
            "SELECT cancel_requested_at FROM activation.bulk_change WHERE id = %s", (bc,)
        ).fetchone()[0]
        sent = conn.execute(
            """SELECT count(*), count(*) FILTER (WHERE sent_at > %s) FROM activation.carrier_write
                WHERE bulk_change_id = %s AND step = 'ActivateDevice'""",
            (cancelled_at, bc),
        ).fetchone()
    # The carrier's own count: every activation it received was recorded before the cancel.
    assert sent is not None and sent[1] == 0
    taken = writes_for(stack, iccids)
    assert taken == 10 * sent[0]
    found = statuses(stack, bc)
    assert found.get("CANCELLED", 0) == 400 - taken > 0
    assert found.get("PROCESSED", 0) == taken  # accepted lines were carried to the end
    assert bulk_change_row(stack, bc)[0] == "CANCELLED"
