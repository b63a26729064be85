"""The three ways a bulk change starts, on the live stack (issue 15): the event (the database
announces the intake, the triggerer's AssetWatcher starts the dispatcher), REST in the same minute
(runs once), and the every-minute dispatcher for one whose announcement was missed.

The stack has its own activation database (the dispatcher would otherwise start what other live
modules left NEW). Its dispatcher DAG is unpaused; every wait is on a state, with generous
deadlines (a busy 2-core machine must pass).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from helpers import activations, finished, iccids, wait_until

from telegence_activation.api_client import AirflowApiError, run_id_for
from telegence_activation.domain.intake import IntakeOptions
from telegence_activation.intake import BulkChangeSpec, ingest_csv, write_sample_csv
from telegence_activation.triggers.bulk_change_created import CHANNEL
from telegence_local.stack import DAG_ID, LiveStack, StackConfig

pytestmark = pytest.mark.timeout(900)

DISPATCHER = "telegence_dispatcher"
APP_SECRET = "DISPATCH-s3cret-5e1f"
SCENARIO: dict[str, Any] = {
    "name": "dispatch-test",
    "seed": 3,
    "accounts": [{"app_id": "dispatch-app-id", "app_secret": APP_SECRET, "write_enabled": True}],
    "activation": {"unit": "seconds", "reserved_after": 0.3, "done_after": 1.0},
    "ip_provisioning": {"unit": "seconds", "check_after": 0.3, "reserve_after": 0.6, "done_after": 1.2},
    "ip_pools": [{"pdp_name": "DEMO.PDP", "cidr": "10.20.0.0/16"}],
}


def intake(stack: LiveStack, tmp_path: Path, devices: int, *, announce: bool = True) -> int:
    """A bulk change as the portal's intake creates it (no REST call). ``announce=False`` inserts it
    the way a lost notification leaves it: the database's trigger does not fire (replica session)."""
    uri = stack.activation_db_uri
    if not announce:
        uri += ("&" if "?" in uri else "?") + "options=" + quote("-c session_replication_role=replica")
    path = write_sample_csv(tmp_path / f"dispatch-{secrets.token_hex(3)}.csv", devices, static_ip_every=4)
    return ingest_csv(uri, path, BulkChangeSpec(1, IntakeOptions("BAN-DISPATCH"))).bulk_change_id


def runs_of(stack: LiveStack, dag_id: str) -> list[dict[str, Any]]:
    reply = stack.client().request("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})
    return list(reply["dag_runs"])


def activation_runs_for(stack: LiveStack, bulk_change_id: int) -> list[dict[str, Any]]:
    return [
        r for r in runs_of(stack, DAG_ID) if (r.get("conf") or {}).get("bulk_change_id") == bulk_change_id
    ]


def dispatcher_summary_naming(stack: LiveStack, bulk_change_id: int) -> dict[str, Any] | None:
    """The summary of a finished dispatcher run that dispatched or skipped the bulk change."""
    client = stack.client()
    for run in runs_of(stack, DISPATCHER):
        if run["state"] != "success":
            continue
        entry = client.request(
            "GET",
            f"/api/v2/dags/{DISPATCHER}/dagRuns/{run['dag_run_id']}/taskInstances/find_bulk_changes"
            "/xcomEntries/summary",
        )
        said = json.loads(entry["value"]) if isinstance(entry["value"], str) else entry["value"]
        named = bulk_change_id in said["dispatched"] or any(
            s.startswith(f"{bulk_change_id}: ") for s in said["skipped"]
        )
        if named:
            return dict(said)
    return None


def bulk_change(stack: LiveStack, bulk_change_id: int) -> tuple[str, str | None, dict[str, int]]:
    with psycopg.connect(stack.activation_db_uri) as conn:
        row = conn.execute(
            "SELECT status, dag_run_id FROM activation.bulk_change WHERE id = %s", (bulk_change_id,)
        ).fetchone()
        devices = conn.execute(
            "SELECT status, count(*) FROM activation.device_change WHERE bulk_change_id = %s GROUP BY 1",
            (bulk_change_id,),
        ).fetchall()
    assert row is not None
    return str(row[0]), row[1], {s: int(n) for s, n in devices}


@pytest.fixture(scope="module")
def missed(stack_and_missed: tuple[LiveStack, int]) -> int:
    return stack_and_missed[1]


@pytest.fixture(scope="module")
def stack(stack_and_missed: tuple[LiveStack, int]) -> LiveStack:
    return stack_and_missed[0]


@pytest.fixture(scope="module")
def stack_and_missed(
    pg_server_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveStack, int]]:
    """The stack with both DAGs unpaused and the watcher listening, plus a bulk change whose
    announcement was missed, created two minutes ago (out of the grace period), before anything
    was announced: only the dispatcher's minute schedule can start it."""
    home = tmp_path_factory.mktemp("dispatch-airflow")
    token = secrets.token_hex(3)
    live = LiveStack(
        StackConfig(
            home=home,
            scenario=SCENARIO,
            db_server_uri=pg_server_uri,
            activation_database=f"activation_dispatch_{token}",
            airflow_database=f"airflow_dispatch_{token}",
            app_id="dispatch-app-id",
            app_secret=APP_SECRET,
            extra_env={"TELEGENCE_TASK_RETRY_DELAY_SECONDS": "2"},
        )
    )
    try:
        live.start()
        client = live.client()
        client.unpause()
        missed_id = intake(live, home, 6, announce=False)
        with psycopg.connect(live.activation_db_uri) as conn:
            conn.execute(
                "UPDATE activation.bulk_change SET created_at = now() - interval '2 minutes' WHERE id = %s",
                (missed_id,),
            )
        client.unpause(DISPATCHER)

        def listening() -> bool:
            with psycopg.connect(live.activation_db_uri) as conn:
                return bool(
                    conn.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
                        (f"LISTEN {CHANNEL}",),
                    ).fetchone()
                )

        wait_until(listening, 240, "the triggerer listening for new bulk changes")
        yield live, missed_id
    except BaseException:
        for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
            print(f"--- {component} ---\n{live.log_tail(component)}")
        raise
    finally:
        live.stop()
        with psycopg.connect(pg_server_uri, autocommit=True) as conn:
            for name in (live.config.airflow_database, live.config.activation_database):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_missed_announcement_is_started_by_the_minute_schedule(stack: LiveStack, missed: int) -> None:
    run_id = run_id_for(missed)
    runs = wait_until(lambda: activation_runs_for(stack, missed), 240, f"the dispatcher starting {missed}")
    assert [r["dag_run_id"] for r in runs] == [run_id]
    # Nothing was announced yet in this stack: only the minute schedule can have started it.
    assert {r["run_type"] for r in runs_of(stack, DISPATCHER)} == {"scheduled"}
    assert wait_until(lambda: finished(stack, run_id), 400, f"run {run_id} finished") == "success"
    status, owner, devices = bulk_change(stack, missed)
    assert (status, owner, devices) == ("PROCESSED", run_id, {"PROCESSED": 6})


def test_the_intake_alone_starts_a_run_within_seconds(stack: LiveStack, tmp_path: Path) -> None:
    started = time.monotonic()
    bc = intake(stack, tmp_path, 12)
    run_id = run_id_for(bc)
    runs = wait_until(lambda: activation_runs_for(stack, bc), 120, f"an activation run for bulk change {bc}")
    latency = time.monotonic() - started
    print(f"\nevent-driven start: activation run {run_id} existed {latency:.1f} s after the intake began")
    assert [r["dag_run_id"] for r in runs] == [run_id]
    # Started by the announcement (an asset-triggered dispatcher run), not by the minute schedule.
    by_event = [r for r in runs_of(stack, DISPATCHER) if r["run_type"] == "asset_triggered"]
    assert by_event, runs_of(stack, DISPATCHER)

    assert wait_until(lambda: finished(stack, run_id), 400, f"run {run_id} finished") == "success"
    status, owner, devices = bulk_change(stack, bc)
    assert (status, owner, devices) == ("PROCESSED", run_id, {"PROCESSED": 12})


def test_a_rest_trigger_in_the_same_minute_runs_once(stack: LiveStack, tmp_path: Path) -> None:
    bc = intake(stack, tmp_path, 10)
    run_id = run_id_for(bc)
    # The portal's REST call races the announcement: whichever comes second finds the run id taken.
    try:
        stack.client().trigger({"bulk_change_id": bc}, run_id)
        rest = "created the run"
    except AirflowApiError as exc:
        assert exc.status == 409, exc
        rest = "refused (409: the dispatcher was first)"
    print(f"\nREST trigger for bulk change {bc}: {rest}")
    assert wait_until(lambda: finished(stack, run_id), 400, f"run {run_id} finished") == "success"
    # The dispatcher run of the announcement saw it too: it started it (REST refused) or skipped
    # it (REST first), and nothing has started it twice.
    said = wait_until(
        lambda: dispatcher_summary_naming(stack, bc), 180, f"a dispatcher run naming {bc}", every=2
    )
    if rest == "created the run":
        assert bc not in said["dispatched"] and f"{bc}: run {run_id} exists" in " ".join(said["skipped"]), (
            said
        )
    else:
        assert bc in said["dispatched"], said
    assert [r["dag_run_id"] for r in activation_runs_for(stack, bc)] == [run_id]
    status, owner, devices = bulk_change(stack, bc)
    assert (status, owner, devices) == ("PROCESSED", run_id, {"PROCESSED": 10})
    per_iccid = activations(stack)
    lines = iccids(stack, bc)
    assert [per_iccid.get(i) for i in lines] == [1] * len(lines)
