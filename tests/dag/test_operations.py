"""Operations around the flow (issue 11): cancel, error classes, retry by class. Real DAG runs
(``dag.test()``) on the real Postgres against the simulator over HTTP."""

from __future__ import annotations

import json
import os
import threading
import time

import psycopg
import pytest
from conftest import APP_SECRET, bulk_status, devices, scenario, statuses, task_states, telegence_conn
from test_activation_dag import activations, calls, carrier_writes_received

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


def test_a_dry_run_plans_without_a_carrier_write_and_leaves_the_bulk_change_new(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(450, static_ip_every=3)
    # One stored request the carrier would refuse: the dry run finds it.
    db.execute(
        """UPDATE activation.device_change
              SET change_request = change_request #- '{TelegenceActivationRequest,service}'
            WHERE iccid = %s""",
        (bc.iccids[7],),
    )
    run = run_dag(bc.id, dry_run=True)
    assert run.state == "success"
    states = task_states(run)
    assert states["plan"] == ["success"] and states["unless_dry_run"] == ["success"]
    assert {s for task, ss in states.items() if task not in ("plan", "unless_dry_run") for s in ss} == {
        "skipped"
    }
    # Nothing written to the carrier, nothing claimed, nothing changed.
    assert carrier_writes_received(carrier) == 0
    assert db.execute(
        "SELECT count(*) FROM activation.carrier_write WHERE bulk_change_id = %s", (bc.id,)
    ).fetchone() == (0,)
    assert db.execute(
        "SELECT status, dag_run_id FROM activation.bulk_change WHERE id = %s", (bc.id,)
    ).fetchone() == ("NEW", None)
    assert statuses(db, bc.id) == {"NEW": 450}
    plan = repo.get_plan(db, bc.id)
    assert plan is not None
    assert (plan["to_send"], plan["batches"], plan["dry_run"]) == (450, 3, True)
    assert plan["static_ip"]["devices"] == len(bc.static_ip_iccids)
    assert sum(plan["static_ip"]["by_pdp"].values()) == len(bc.static_ip_iccids)
    assert plan["credentials"].startswith("accepted")
    assert plan["invalid_count"] == 1 and plan["invalid_requests"][0]["iccid"] == bc.iccids[7]
    assert plan["problems"] == ["1 device(s) have a stored request the carrier would refuse"]


def test_a_dry_run_reports_bad_credentials_from_a_read_only_call(
    carrier, make_bulk_change, run_dag, db, monkeypatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TELEGENCE_SP_1", telegence_conn(carrier, password="wrong-secret"))
    bc = make_bulk_change(3, static_ip_every=0)
    assert run_dag(bc.id, dry_run=True).state == "success"
    plan = repo.get_plan(db, bc.id)
    assert plan is not None
    assert plan["credentials"].endswith("HTTP 401") and not plan["ok"]
    assert "wrong-secret" not in json.dumps(plan)
    assert carrier_writes_received(carrier) == 0


def test_the_customer_gets_one_html_e_mail_per_outcome_and_the_report_is_written_as_html(
    carrier, make_bulk_change, run_dag, db, mailbox
) -> None:
    from datetime import UTC, datetime

    from telegence_activation.operators.finalize import report_paths

    bc = make_bulk_change(5, static_ip_every=0, customer_name="ACME <IoT>", notify_to="ops@acme.example")
    when = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    assert run_dag(bc.id, as_run=when).state == "success"
    assert run_dag(bc.id, as_run=when).state == "success"  # a clear of the whole run: same outcome
    assert len(mailbox.messages) == 1
    _sender, to, message = mailbox.messages[0]
    assert to == ["ops@acme.example"]
    assert message["Subject"] == f"Bulk change {bc.id}: PROCESSED — 5 of 5 lines activated"
    rows = db.execute(
        "SELECT channel, status FROM activation.notification WHERE bulk_change_id = %s ORDER BY channel",
        (bc.id,),
    ).fetchall()
    assert rows == [("email", "SENT"), ("webhook", "SKIPPED")]
    html = report_paths(bc.id)[0].with_suffix(".html").read_text()
    assert "ACME &lt;IoT&gt;" in html and "<IoT>" not in html


def test_a_finished_bulk_change_emits_its_asset_event_and_the_billing_export_runs_on_it(
    carrier, make_bulk_change, run_dag, db
) -> None:
    import csv

    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from telegence_activation.assets import BULK_CHANGE_FINISHED
    from telegence_activation.operators.finalize import reports_dir

    bc = make_bulk_change(6, static_ip_every=2)
    carrier.admin.load_scenario(
        scenario(outcomes=[{"kind": "reject_activation", "iccids": [bc.iccids[0]], "error": "no"}])
    )
    run = run_dag(bc.id, on_activation_failure="continue")
    assert run.state == "success"
    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == BULK_CHANGE_FINISHED.name, AssetEvent.source_run_id == run.run_id)
            .all()
        )
        extras = [e.extra for e in events]
    assert extras == [
        {
            "bulk_change_id": bc.id,
            "service_provider_id": 1,
            "status": "ERROR",
            "devices": 6,
            "succeeded": 5,
            "failed": 1,
            "outcome_unknown": 0,
            "cancelled": 0,
        }
    ]
    # The example consumer, run for that bulk change: the activated lines only, with MDN and IP.
    billing = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).get_dag("telegence_billing_export")
    assert billing is not None
    assert BULK_CHANGE_FINISHED.name in repr(billing.timetable.asset_condition)  # scheduled on the asset
    assert billing.test(run_conf={"bulk_change_id": bc.id}).state == "success"
    with (reports_dir() / "billing" / f"bulk_change_{bc.id}.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    found = devices(db, bc.id)
    assert sorted(r["iccid"] for r in rows) == sorted(
        i for i in bc.iccids if found[i]["status"] == "PROCESSED"
    )
    assert all(r["subscriber_number"] for r in rows)
    assert {r["static_ip"] for r in rows if r["iccid"] in bc.static_ip_iccids} != {""}


def test_the_approval_gate_passes_small_bulk_changes_and_a_rejection_or_timeout_cancels(
    carrier, make_bulk_change, run_dag, db
) -> None:
    """The gate's decisions; the human wait itself is exercised on the live stack (REST answers)."""
    from datetime import UTC, datetime

    from telegence_activation.operators.approval import BulkChangeApprovalOperator

    small = make_bulk_change(3, static_ip_every=0)
    run = run_dag(small.id, approval_required_over=3)  # 3 lines: not over 3, nobody is asked
    assert run.state == "success" and task_states(run)["approve"] == ["success"]
    assert statuses(db, small.id) == {"PROCESSED": 3}

    cancelled: list[str] = []
    for answer, by, reason in (
        (
            {"chosen_options": ["Reject"], "responded_by_user": {"id": "7", "name": "zoe"}},
            "zoe",
            "approval rejected by zoe in the Airflow UI",
        ),
        (
            {"error": "timeout", "error_type": "timeout"},
            "approval timeout",
            "no approval within 1 day, 0:00:00",
        ),
    ):
        bc = make_bulk_change(4, static_ip_every=0)
        gate = BulkChangeApprovalOperator(task_id="approve", bulk_change_id=bc.id, approval_required_over=2)
        event = {"params_input": {}, "responded_at": datetime.now(UTC), **answer}
        gate.execute_complete({}, event)  # type: ignore[arg-type]
        row = db.execute(
            "SELECT status, cancelled_by, cancel_reason FROM activation.bulk_change WHERE id = %s", (bc.id,)
        ).fetchone()
        assert row == ("CANCELLED", by, reason)
        assert statuses(db, bc.id) == {"CANCELLED": 4}
        cancelled += bc.iccids
    assert set(activations(carrier, cancelled).values()) == {0}  # nothing sent for them
