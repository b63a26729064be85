"""Operations around the flow (issue 11): cancel, error classes, retry by class. Real DAG runs
(``dag.test()``) on the real Postgres against the simulator over HTTP."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from conftest import APP_SECRET, bulk_status, devices, scenario, statuses
from test_activation_dag import calls

from telegence_activation import actions
from telegence_activation import repository as repo

pytestmark = pytest.mark.timeout(300)


def activation_writes(db: psycopg.Connection, bc_id: int) -> list[tuple[object, object]]:
    return db.execute(
        """SELECT sent_at, answered_at FROM activation.carrier_write
            WHERE bulk_change_id = %s AND step = 'ActivateDevice' ORDER BY id""",
        (bc_id,),
    ).fetchall()


def cancel_when_first_batch_is_in_flight(db_uri: str, bc_id: int, outcome: list[actions.Outcome]) -> None:
    """Wait (on the database, not a clock) until the first activation POST is recorded, then cancel."""
    with psycopg.connect(db_uri, autocommit=True) as watch:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            row = watch.execute(
                "SELECT count(*) FROM activation.carrier_write WHERE bulk_change_id = %s", (bc_id,)
            ).fetchone()
            if row and row[0]:
                break
            time.sleep(0.05)
    with psycopg.connect(db_uri) as conn:
        outcome.append(actions.cancel(conn, bc_id, by="alice", reason="wrong rate plan"))


def test_cancel_while_batches_are_sent_sends_nothing_after_it_and_finishes_what_was_accepted(
    carrier, make_bulk_change, run_dag, db, db_uri, webhook
) -> None:
    # Each activation POST is held 1.5 s by the carrier, so the cancel lands while batch 1 is in flight.
    carrier.admin.load_scenario(
        scenario(faults=[{"endpoint": "activate", "kind": "latency", "seconds": 1.5}])
    )
    bc = make_bulk_change(600, static_ip_every=3)
    outcome: list[actions.Outcome] = []
    canceller = threading.Thread(target=cancel_when_first_batch_is_in_flight, args=(db_uri, bc.id, outcome))
    canceller.start()
    run = run_dag(bc.id)
    canceller.join(timeout=120)
    assert outcome, "the cancel did not run"
    assert "400 device(s) never sent ended CANCELLED" in outcome[0].message

    # The batch in flight finished and was recorded; nothing was sent after the cancel.
    assert sum(calls(carrier, "activate").values()) == 1
    writes = activation_writes(db, bc.id)
    cancelled_at = db.execute(
        "SELECT cancel_requested_at FROM activation.bulk_change WHERE id = %s", (bc.id,)
    ).fetchone()[0]
    assert len(writes) == 1 and writes[0][0] < cancelled_at and writes[0][1] is not None

    # Lines the carrier accepted went on to a terminal status; the rest never left.
    assert statuses(db, bc.id) == {"PROCESSED": 200, "CANCELLED": 400}
    cancelled = [d for d in devices(db, bc.id).values() if d["status"] == "CANCELLED"]
    assert {d["status_details"] for d in cancelled} == {
        "cancelled by alice (wrong rate plan); never sent to the carrier"
    }
    audit = db.execute(
        """SELECT count(*), min(error_class), min(processed_by) FROM activation.device_change_log
            WHERE bulk_change_id = %s AND response_status = 'CANCELLED'""",
        (bc.id,),
    ).fetchone()
    assert audit == (400, "permanent", "cancel by alice")

    assert bulk_status(db, bc.id) == "CANCELLED"
    assert run.state == "success"
    report = repo.get_report(db, bc.id)
    assert report is not None
    assert (report["succeeded"], report["cancelled"], report["failed"]) == (200, 400, 0)
    assert report["cancellation"]["by"] == "alice" and report["cancellation"]["reason"] == "wrong rate plan"
    assert [m["body"]["status"] for m in webhook.received] == ["CANCELLED"]
    assert webhook.received[0]["body"]["total_devices_cancelled"] == 400


def test_cancel_before_any_run_ends_the_bulk_change_and_a_later_run_sends_nothing(
    carrier, make_bulk_change, run_dag, db, db_uri
) -> None:
    bc = make_bulk_change(30, static_ip_every=0)
    with psycopg.connect(db_uri) as conn:
        done = actions.cancel(conn, bc.id, by="bob", reason="customer withdrew the order")
    assert "no run had started" in done.message
    assert bulk_status(db, bc.id) == "CANCELLED"
    assert statuses(db, bc.id) == {"CANCELLED": 30}
    with psycopg.connect(db_uri) as conn:
        again = actions.cancel(conn, bc.id, by="carol", reason="again")
    assert "already cancelled by bob" in again.message

    run = run_dag(bc.id)
    assert run.state == "failed"  # the run does not own a cancelled bulk change: it changes nothing
    assert calls(carrier, "activate") == {}
    assert statuses(db, bc.id) == {"CANCELLED": 30}
    # The ICCIDs are free again for a new order.
    assert repo.open_elsewhere(db, bc.id, 10) == []


def test_a_finished_bulk_change_cannot_be_cancelled(carrier, make_bulk_change, run_dag, db, db_uri) -> None:
    bc = make_bulk_change(5, static_ip_every=0)
    assert run_dag(bc.id).state == "success"
    with psycopg.connect(db_uri) as conn, pytest.raises(actions.ActionRefused, match="already PROCESSED"):
        actions.cancel(conn, bc.id, by="dave", reason="too late")
    row = db.execute(
        "SELECT cancel_requested_at FROM activation.bulk_change WHERE id = %s", (bc.id,)
    ).fetchone()
    assert row == (None,)


def test_failed_audit_rows_and_the_report_carry_the_error_class(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(6, static_ip_every=0)
    rejected = bc.iccids[1]
    carrier.admin.load_scenario(
        scenario(outcomes=[{"kind": "reject_activation", "iccids": [rejected], "error": "SIM not eligible"}])
    )
    assert run_dag(bc.id, on_activation_failure="continue").state == "success"
    row = db.execute(
        """SELECT l.error_class FROM activation.device_change_log l
             JOIN activation.device_change d ON d.id = l.device_change_id
            WHERE d.iccid = %s AND l.has_errors""",
        (rejected,),
    ).fetchall()
    assert row == [("permanent",)]
    assert db.execute(
        "SELECT count(*) FROM activation.device_change_log WHERE bulk_change_id = %s AND NOT has_errors "
        "AND error_class IS NOT NULL",
        (bc.id,),
    ).fetchone() == (0,)
    report = repo.get_report(db, bc.id)
    assert report is not None
    assert report["failures_by_class"] == {"permanent": 1}
    assert report["failures_by_reason"][0]["key"] == "sim_not_eligible"
    assert APP_SECRET not in str(report)


class RecordingClient:
    """The two REST calls retry_failed makes, answered as the api-server would after a run."""

    def __init__(self) -> None:
        self.cleared: list[str] = []

    def get_run(self, run_id: str) -> dict[str, str]:
        return {"state": "success", "dag_run_id": run_id}

    def clear(self, run_id: str, *, only_failed: bool) -> list[dict[str, str]]:
        self.cleared.append(run_id)
        return [{"task_id": "prepare"}]


def test_retry_failed_resets_the_retryable_class_by_default_and_everything_with_all(
    carrier, make_bulk_change, run_dag, db, db_uri
) -> None:
    bc = make_bulk_change(6, static_ip_every=0)
    carrier.admin.load_scenario(
        scenario(outcomes=[{"kind": "reject_activation", "iccids": [bc.iccids[0]], "error": "not eligible"}])
    )
    assert run_dag(bc.id, on_activation_failure="continue").state == "success"
    # A second device failed for a retryable reason (a deadline), as the sensor would write it.
    db.execute(
        """UPDATE activation.device_change SET status = 'ERROR', step = 'WaitForActivation', status_details =
               'activation not confirmed by the carrier before the deadline (2026-11-30T01:00:00)'
            WHERE iccid = %s""",
        (bc.iccids[1],),
    )
    client = RecordingClient()
    with psycopg.connect(db_uri) as conn:
        first = actions.retry_failed(conn, client, bc.id, by="erin")  # type: ignore[arg-type]
    assert first.details["reset"] == {"ActivateDevice": 1}
    assert first.details["left_out"] == 1 and "--all retries them" in first.message
    found = devices(db, bc.id)
    assert found[bc.iccids[0]]["status"] == "ERROR"  # permanent: left as it is
    assert found[bc.iccids[1]]["status"] != "ERROR"
    with psycopg.connect(db_uri) as conn:
        second = actions.retry_failed(conn, client, bc.id, by="erin", classes=actions.ERROR_CLASSES)  # type: ignore[arg-type]
    assert sum(second.details["reset"].values()) == 1 and second.details["left_out"] == 0
    assert devices(db, bc.id)[bc.iccids[0]]["status"] == "NEW"
    assert len(client.cleared) == 2
