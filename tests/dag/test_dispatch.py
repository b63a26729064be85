"""The dispatcher DAG (issue 15) with ``dag.test()`` on the real Postgres: what it starts, what it
leaves alone, backfill windows, stuck bulk changes. The runs it triggers are created in Airflow's
metadata (``dag.test()`` does not execute them: the live stack does)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from telegence_activation.api_client import run_id_for
from telegence_activation.domain.dispatch import dispatch_window, stuck_advice

pytestmark = pytest.mark.timeout(300)

ACTIVATION = "telegence_new_service_activation"


@pytest.fixture(scope="module")
def dispatcher(dag: Any) -> Any:  # the activation DAG fixture migrates Airflow's database first
    from airflow.dag_processing.dagbag import DagBag

    found = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).get_dag("telegence_dispatcher")
    assert found is not None
    return found


def activation_runs(bc_ids: list[int]) -> dict[str, Any]:
    """The activation runs of these bulk changes in Airflow's metadata: run id -> conf."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(
            DagRun.dag_id == ACTIVATION, DagRun.run_id.in_([run_id_for(i) for i in bc_ids])
        )
        return {r.run_id: dict(r.conf or {}) for r in runs}


def created_at(db: psycopg.Connection, bc_id: int, when: datetime) -> None:
    db.execute("UPDATE activation.bulk_change SET created_at = %s WHERE id = %s", (when, bc_id))


def summary(run: Any) -> dict[str, Any]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter(TaskInstance.run_id == run.run_id, TaskInstance.task_id == "find_bulk_changes")
            .one()
        )
        row = (
            session.query(XComModel)
            .filter(
                XComModel.run_id == ti.run_id, XComModel.task_id == ti.task_id, XComModel.key == "summary"
            )
            .one()
        )
        return dict(row.value) if isinstance(row.value, dict) else json.loads(row.value)


def test_a_new_bulk_change_nobody_triggered_is_started_once_and_never_twice(
    dispatcher, make_bulk_change, db
) -> None:
    old = make_bulk_change(3, static_ip_every=0)
    fresh = make_bulk_change(2, static_ip_every=0)  # inside the grace period: its REST call may come
    owned = make_bulk_change(2, static_ip_every=0)
    created_at(db, old.id, datetime.now(UTC) - timedelta(minutes=10))
    created_at(db, owned.id, datetime.now(UTC) - timedelta(minutes=10))
    db.execute("UPDATE activation.bulk_change SET dag_run_id = 'rest-run' WHERE id = %s", (owned.id,))

    first = dispatcher.test(run_conf={"grace_seconds": 60, "sweep_older": True})
    assert first.state == "success"
    runs = activation_runs([old.id, fresh.id, owned.id])
    assert runs == {run_id_for(old.id): {"bulk_change_id": old.id}}
    assert old.id in summary(first)["dispatched"]

    # The triggered run has not claimed it yet (dag.test does not run it): the next dispatch sees
    # its run id and leaves it, as it would a REST trigger of the same minute.
    second = dispatcher.test(run_conf={"grace_seconds": 60, "sweep_older": True})
    assert second.state == "success"
    said = summary(second)
    assert old.id not in said["dispatched"]
    assert any(s.startswith(f"{old.id}: run {run_id_for(old.id)} exists") for s in said["skipped"])
    assert list(activation_runs([old.id])) == [run_id_for(old.id)]


def test_a_backfill_window_dispatches_exactly_the_missed_ones_of_that_window(
    dispatcher, make_bulk_change, db
) -> None:
    start = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    inside = make_bulk_change(2, static_ip_every=0)
    before = make_bulk_change(2, static_ip_every=0)
    ran = make_bulk_change(2, static_ip_every=0)
    # The window of the run for [10:05, 10:06) with a 60 s grace: created in [10:04, 10:05).
    created_at(db, inside.id, start + timedelta(minutes=4, seconds=30))
    created_at(db, before.id, start + timedelta(minutes=2))
    created_at(db, ran.id, start + timedelta(minutes=4, seconds=10))
    db.execute("UPDATE activation.bulk_change SET status = 'PROCESSED' WHERE id = %s", (ran.id,))
    # A manual run at 10:06 covers the interval that ends then, [10:05, 10:06), as a backfill's would.
    run = dispatcher.test(
        logical_date=start + timedelta(minutes=6), run_conf={"grace_seconds": 60, "sweep_older": False}
    )
    assert run.state == "success"
    said = summary(run)
    assert said["window"] == "created 2026-11-29 10:04:00+00:00 .. 2026-11-29 10:05:00+00:00"
    assert inside.id in said["dispatched"], said
    assert before.id not in said["dispatched"] and ran.id not in said["dispatched"]
    assert set(activation_runs([inside.id, before.id, ran.id])) == {run_id_for(inside.id)}


def test_a_bulk_change_processing_without_a_live_run_is_listed_with_what_to_do(
    dispatcher, make_bulk_change, db
) -> None:
    bc = make_bulk_change(2, static_ip_every=0)
    db.execute(
        "UPDATE activation.bulk_change SET status = 'PROCESSING', dag_run_id = 'deleted-run' WHERE id = %s",
        (bc.id,),
    )
    run = dispatcher.test(run_conf={"grace_seconds": 60, "sweep_older": True})
    stuck = [s for s in summary(run)["stuck"] if f"bulk change {bc.id} " in s]
    assert len(stuck) == 1 and "run deleted-run does not exist" in stuck[0]
    assert bc.id not in summary(run)["dispatched"]


def test_the_window_and_the_advice_rules() -> None:
    t = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    grace = timedelta(seconds=60)
    assert dispatch_window(t, t + timedelta(minutes=1), grace, sweep_older=False) == (
        t - grace,
        t + timedelta(minutes=1) - grace,
    )
    assert dispatch_window(t, t + timedelta(minutes=1), grace, sweep_older=True) == (None, t)
    assert stuck_advice({"id": 1, "dag_run_id": "r"}, "running") is None
    assert "retry-failed 1" in (stuck_advice({"id": 1, "dag_run_id": "r"}, "failed") or "")


def test_the_database_announces_a_new_bulk_change_to_the_event_trigger_within_seconds(
    make_bulk_change,
) -> None:
    """The AssetWatcher's trigger (what the triggerer runs) against the real database: the intake's
    insert is announced at commit, and the trigger yields its id."""
    import asyncio
    import time

    from telegence_activation.triggers.bulk_change_created import BulkChangeCreatedTrigger

    async def first_event(created: list[int]) -> tuple[int, float]:
        trigger = BulkChangeCreatedTrigger()
        events = trigger.run()
        waiting = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(1.0)  # let it LISTEN before the insert
        started = time.monotonic()
        created.append((await asyncio.to_thread(make_bulk_change, 2, static_ip_every=0)).id)
        event = await asyncio.wait_for(waiting, timeout=60)
        await events.aclose()
        return int(event.payload["bulk_change_id"]), time.monotonic() - started

    created: list[int] = []
    announced, seconds = asyncio.run(first_event(created))
    assert announced == created[0]
    print(f"bulk change {announced} announced to the trigger {seconds:.2f} s after the intake began")
    assert BulkChangeCreatedTrigger().serialize() == (
        "telegence_activation.triggers.bulk_change_created.BulkChangeCreatedTrigger",
        {"activation_db_conn_id": "activation_db"},
    )


def test_a_backfill_run_is_told_from_the_others_whichever_run_type_enum_it_carries() -> None:
    from types import SimpleNamespace

    from airflow.sdk.api.datamodels._generated import DagRunType as SdkRunType
    from airflow.utils.types import DagRunType

    from telegence_activation.operators.dispatch import is_backfill

    assert is_backfill(SimpleNamespace(run_type=SdkRunType.BACKFILL))  # what a task sees
    assert is_backfill(SimpleNamespace(run_type=DagRunType.BACKFILL_JOB))
    assert is_backfill(SimpleNamespace(run_type="backfill"))
    for other in (SdkRunType.SCHEDULED, SdkRunType.ASSET_TRIGGERED, SdkRunType.MANUAL, None):
        assert not is_backfill(SimpleNamespace(run_type=other))
    assert not is_backfill(None)
