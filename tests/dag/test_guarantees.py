"""The guarantees under faults (issue 9), each against the real DAG or its real steps, the real
Postgres and the simulator over HTTP. Every test here failed before the guarantee existed.

Steps run "by hand" (``operator.execute`` / ``sensor.poke`` with the context of one DAG run) where a
fault has to land between two steps, which ``dag.test()`` cannot arrange.
"""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from conftest import (
    APP_SECRET,
    as_run,
    audit_count,
    bulk_status,
    claim,
    devices,
    scenario,
    statuses,
    task_states,
    telegence_conn,
)
from test_activation_dag import activations, calls, carrier_writes_received

from telegence_activation import repository as repo
from telegence_activation.domain.intake import IntakeOptions
from telegence_activation.intake import BulkChangeSpec, IntakeRejected, ingest_csv, write_sample_csv
from telegence_activation.operators.activate import ActivateBatchOperator
from telegence_activation.operators.prepare import PrepareBulkChangeOperator
from telegence_activation.sensors.activation_status import ActivationStatusSensor

pytestmark = pytest.mark.timeout(300)


def prepare_and_activate(bc_id: int, run_id: str) -> None:
    """What the prepare and activate tasks of run ``run_id`` do."""
    batches = PrepareBulkChangeOperator(task_id="prepare", bulk_change_id=bc_id).execute(as_run(run_id))
    for batch_no in batches:
        ActivateBatchOperator(task_id="activate", bulk_change_id=bc_id, batch_no=batch_no).execute(
            as_run(run_id)
        )


def activation_sensor(bc_id: int, timeout: int = 3600) -> ActivationStatusSensor:
    return ActivationStatusSensor(
        task_id="wait_for_activation",
        bulk_change_id=bc_id,
        check_interval_seconds=1,
        check_timeout_seconds=timeout,
    )


def notifications(db: psycopg.Connection, bc_id: int) -> list[tuple[str, bool]]:
    rows = db.execute(
        "SELECT status, is_update FROM activation.notification WHERE bulk_change_id = %s AND channel = 'webhook' ORDER BY id",
        (bc_id,),
    ).fetchall()
    return [(str(s), bool(u)) for s, u in rows]


def carrier_write_rows(db: psycopg.Connection, bc_id: int) -> int:
    row = db.execute(
        "SELECT count(*) FROM activation.carrier_write WHERE bulk_change_id = %s", (bc_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def owner(db: psycopg.Connection, bc_id: int) -> str | None:
    row = db.execute("SELECT dag_run_id FROM activation.bulk_change WHERE id = %s", (bc_id,)).fetchone()
    assert row is not None
    return row[0]


# ------------------------------------------------------------------------------ one run owns a bulk change


def test_a_second_run_of_a_bulk_change_in_progress_fails_and_changes_nothing(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(6, static_ip_every=0)
    carrier.admin.load_scenario(scenario(outcomes=[{"kind": "stay_pending", "iccids": bc.iccids}]))
    prepare_and_activate(bc.id, "owner-run")
    before = (devices(db, bc.id), audit_count(db, bc.id), carrier_write_rows(db, bc.id))

    run = run_dag(bc.id, activation_check_timeout_seconds=1)  # another run id, a short deadline

    assert run.state == "failed"
    states = task_states(run)
    assert states["plan"] == ["failed"]  # the first task refuses; nothing after it runs
    assert set(states["wait_for_activation"]) == {"failed"} and states["finalize"] == ["failed"]
    # Nothing changed: the owner's devices are still waiting, no audit row, no write, no report.
    assert (devices(db, bc.id), audit_count(db, bc.id), carrier_write_rows(db, bc.id)) == before
    assert owner(db, bc.id) == "owner-run" and bulk_status(db, bc.id) == "PROCESSING"
    assert notifications(db, bc.id) == []
    assert repo.get_report(db, bc.id) is None


def test_concurrent_claims_of_one_bulk_change_give_exactly_one_owner(make_bulk_change, db_uri) -> None:
    bc = make_bulk_change(2, static_ip_every=0)
    results: dict[str, bool] = {}
    barrier = threading.Barrier(5)

    def claim_as(run_id: str) -> None:
        with psycopg.connect(db_uri) as conn:
            barrier.wait()
            results[run_id] = repo.claim_bulk_change(conn, bc.id, run_id) is not None

    threads = [threading.Thread(target=claim_as, args=(f"run-{n}",)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [run_id for run_id, won in results.items() if won]
    assert len(results) == 5 and len(winners) == 1


def test_a_finished_bulk_change_is_not_run_again(carrier, make_bulk_change, run_dag, db, webhook) -> None:
    bc = make_bulk_change(4, static_ip_every=2)
    assert run_dag(bc.id).state == "success"
    report_row = db.execute(
        "SELECT updated_at FROM activation.bulk_change_report WHERE bulk_change_id = %s", (bc.id,)
    ).fetchone()
    before = (audit_count(db, bc.id), carrier_writes_received(carrier))

    again = run_dag(bc.id)

    assert again.state == "failed" and task_states(again)["plan"] == ["failed"]
    assert (audit_count(db, bc.id), carrier_writes_received(carrier)) == before
    assert (
        db.execute(
            "SELECT updated_at FROM activation.bulk_change_report WHERE bulk_change_id = %s", (bc.id,)
        ).fetchone()
        == report_row
    )
    assert len(webhook.received) == 1 and notifications(db, bc.id) == [("SENT", False)]


def test_rerunning_the_owning_run_after_success_notifies_nobody_again(
    carrier, make_bulk_change, run_dag, db, webhook
) -> None:
    bc = make_bulk_change(5, static_ip_every=2)
    when = datetime.now(UTC)
    assert run_dag(bc.id, as_run=when).state == "success"
    before = (audit_count(db, bc.id), carrier_writes_received(carrier))

    assert run_dag(bc.id, as_run=when).state == "success"  # the same run id: a clear of the whole run

    assert (audit_count(db, bc.id), carrier_writes_received(carrier)) == before
    assert set(activations(carrier, bc.iccids).values()) == {1}
    assert len(webhook.received) == 1 and notifications(db, bc.id) == [("SENT", False)]


def test_retry_failed_that_changes_the_outcome_sends_one_update(
    carrier, make_bulk_change, run_dag, db, webhook
) -> None:
    bc = make_bulk_change(4, static_ip_every=0)
    rejected = bc.iccids[1]
    carrier.admin.load_scenario(scenario(outcomes=[{"kind": "reject_activation", "iccids": [rejected]}]))
    when = datetime.now(UTC)
    run_dag(bc.id, as_run=when)
    assert statuses(db, bc.id) == {"PROCESSED": 3, "ERROR": 1}
    carrier.admin.load_scenario(scenario(), keep_state=True)  # the carrier now takes it
    assert repo.reset_failed_devices(db, bc.id, "test") == {"ActivateDevice": 1}

    assert run_dag(bc.id, as_run=when).state == "success"

    assert statuses(db, bc.id) == {"PROCESSED": 4}
    assert [r["body"]["status"] for r in webhook.received] == ["ERROR", "PROCESSED"]
    assert [r["body"]["update"] for r in webhook.received] == [False, True]
    assert notifications(db, bc.id) == [("SENT", False), ("SENT", True)]


# ------------------------------------------------------------------------------------ deadlines


def test_the_deadline_is_kept_in_the_database_whatever_the_sensor_tries(
    carrier, make_bulk_change, db
) -> None:
    bc = make_bulk_change(3, static_ip_every=0)
    carrier.admin.load_scenario(scenario(outcomes=[{"kind": "stay_pending", "iccids": bc.iccids}]))
    prepare_and_activate(bc.id, "owner-run")
    sensor = activation_sensor(bc.id)
    assert sensor.poke(as_run("owner-run", task_reschedule_count=0)) is False
    deadline = db.execute(
        "SELECT deadline_at FROM activation.step_timing WHERE bulk_change_id = %s AND step = 'WaitForActivation'",
        (bc.id,),
    ).fetchone()
    # A new try (the scheduler race fails the sensor; Airflow's reschedule count starts over) keeps it.
    assert sensor.poke(as_run("owner-run", task_reschedule_count=0)) is False
    assert (
        db.execute(
            "SELECT deadline_at FROM activation.step_timing WHERE bulk_change_id = %s AND step = 'WaitForActivation'",
            (bc.id,),
        ).fetchone()
        == deadline
    )
    # The deadline passes (moved back rather than waited for): the next poke, of whatever try, ends it.
    db.execute(
        "UPDATE activation.step_timing SET deadline_at = now() - interval '1 second' "
        "WHERE bulk_change_id = %s AND step = 'WaitForActivation'",
        (bc.id,),
    )
    assert sensor.poke(as_run("owner-run", task_reschedule_count=0)) is True
    found = devices(db, bc.id)
    assert {d["status"] for d in found.values()} == {"ERROR"}
    assert all("before the deadline" in d["status_details"] for d in found.values())


def test_a_request_id_the_carrier_forgot_ends_error_and_retry_failed_brings_it_home(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(5, static_ip_every=0)
    carrier.admin.load_scenario(scenario(outcomes=[{"kind": "stay_pending", "iccids": bc.iccids}]))
    when = datetime.now(UTC)
    claim(db, bc.id, f"manual__{when.isoformat()}")
    prepare_and_activate(bc.id, f"manual__{when.isoformat()}")
    carrier.admin.load_scenario(scenario())  # restarted without its state: the request ids are gone
    sensor = activation_sensor(bc.id)
    assert sensor.poke(as_run(f"manual__{when.isoformat()}")) is True
    found = devices(db, bc.id)
    assert {d["status"] for d in found.values()} == {"ERROR"}
    assert all("does not know activation request" in d["status_details"] for d in found.values())

    assert repo.reset_failed_devices(db, bc.id, "test") == {"ActivateDevice": 5}
    assert run_dag(bc.id, as_run=when).state == "success"
    assert statuses(db, bc.id) == {"PROCESSED": 5}
    assert set(activations(carrier, bc.iccids).values()) == {1}


# --------------------------------------------------------------------------- unknown is not failed


def test_activation_answers_that_time_out_are_unknown_then_reconciled_not_failed(
    carrier, make_bulk_change, run_dag, db, webhook, monkeypatch
) -> None:
    bc = make_bulk_change(6, static_ip_every=0)
    # The carrier takes the first POST but every answer of the first three calls is lost (held past
    # the client's 1 s timeout): the activate task's three attempts all time out.
    carrier.admin.load_scenario(
        scenario(
            faults=[
                {"endpoint": "activate", "kind": "answer_lost", "mode": "delay", "seconds": 2, "first_n": 3}
            ]
        )
    )
    monkeypatch.setenv("AIRFLOW_CONN_TELEGENCE_SP_1", telegence_conn(carrier, timeout=1))

    run = run_dag(bc.id)

    assert run.state == "success"
    assert statuses(db, bc.id) == {"PROCESSED": 6}
    assert set(activations(carrier, bc.iccids).values()) == {1}
    trail = db.execute(
        "SELECT DISTINCT response_status FROM activation.device_change_log "
        "WHERE bulk_change_id = %s AND step = 'ActivateDevice'",
        (bc.id,),
    ).fetchall()
    assert {r[0] for r in trail} == {"UNKNOWN", "PENDING"}  # never ERROR or API_FAILED
    assert [r["body"]["status"] for r in webhook.received] == ["PROCESSED"]
    assert webhook.received[0]["body"]["total_devices_failed"] == 0
    # Every POST the carrier received is in the write-ahead record, the lost ones as NO_ANSWER (the
    # simulator does not count a held answer whose client went away, so it may count fewer).
    assert carrier_write_rows(db, bc.id) >= sum(calls(carrier, "activate").values())
    lost = db.execute(
        "SELECT count(*) FROM activation.carrier_write WHERE bulk_change_id = %s AND outcome = 'NO_ANSWER'",
        (bc.id,),
    ).fetchone()
    assert lost == (3,)


def test_a_bulk_change_that_failed_for_a_configuration_reason_ends_its_run_red(
    carrier, make_bulk_change, run_dag, db, monkeypatch
) -> None:
    bc = make_bulk_change(3, static_ip_every=0)
    # The account's credentials are read-only at the carrier (the connection does not say so): 403.
    monkeypatch.setenv(
        "AIRFLOW_CONN_TELEGENCE_SP_1", telegence_conn(carrier, login="ro-app-id", password="ro-app-secret")
    )
    run = run_dag(bc.id)
    assert run.state == "failed" and task_states(run)["finalize"] == ["failed"]
    assert statuses(db, bc.id) == {"ERROR": 3} and bulk_status(db, bc.id) == "ERROR"
    assert all("HTTP 403" in d["status_details"] for d in devices(db, bc.id).values())


# ---------------------------------------------------------------------------------- static IP writes


def test_a_lost_provisioning_answer_is_reconciled_by_subscriber_never_submitted_twice(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(4, static_ip_every=1)
    carrier.admin.load_scenario(
        scenario(faults=[{"endpoint": "ip_provision", "kind": "answer_lost", "mode": "drop", "first_n": 1}])
    )
    run = run_dag(bc.id)
    assert run.state == "success"
    assert statuses(db, bc.id) == {"PROCESSED": 4}
    assert sum(calls(carrier, "ip_provision").values()) == 1  # taken once, found by subscriber number
    assert sum(calls(carrier, "ip_status").values()) >= 4
    adopted = db.execute(
        "SELECT count(*) FROM activation.device_change_log WHERE bulk_change_id = %s "
        "AND description LIKE '%%Check Earlier Submission' AND error_text IS NULL",
        (bc.id,),
    ).fetchone()
    assert adopted == (4,)


def test_a_lost_reservation_answer_is_not_resent_and_is_reported(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(3, static_ip_every=1)
    carrier.admin.load_scenario(
        scenario(faults=[{"endpoint": "ip_reserve", "kind": "answer_lost", "mode": "drop", "first_n": 1}])
    )
    run = run_dag(bc.id)
    assert run.state == "success"
    assert statuses(db, bc.id) == {"PROCESSED": 3}
    # The hook did not resend the lost reservation; the task's retry reserved again, on the record.
    lost = db.execute(
        "SELECT count(*) FROM activation.device_change_log WHERE bulk_change_id = %s AND step = 'RequestIPProvision' "
        "AND error_text LIKE 'IP reservation answer lost%%'",
        (bc.id,),
    ).fetchone()
    assert lost == (3,)
    assert sum(calls(carrier, "ip_reserve").values()) == 2
    report = repo.get_report(db, bc.id)
    assert report is not None and report["carrier_writes"].get("NO_ANSWER") == 1


def test_retry_failed_after_an_ip_check_deadline_does_not_submit_a_running_provisioning_again(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(3, static_ip_every=1)
    carrier.admin.load_scenario(
        scenario(
            ip_provisioning={"unit": "seconds", "check_after": 0.2, "reserve_after": 0.4, "done_after": 600}
        )
    )
    when = datetime.now(UTC)
    run_dag(bc.id, as_run=when, ip_check_timeout_seconds=2)
    assert statuses(db, bc.id) == {"ERROR": 3}
    reserved = {i: d["ip_batch_id"] for i, d in devices(db, bc.id).items()}
    assert repo.reset_failed_devices(db, bc.id, "test") == {"RequestIPProvision": 3}
    carrier.admin.complete()  # the first provisioning finishes meanwhile

    assert run_dag(bc.id, as_run=when).state == "success"

    assert statuses(db, bc.id) == {"PROCESSED": 3}
    assert (
        sum(calls(carrier, "ip_provision").values()) == 1 and sum(calls(carrier, "ip_reserve").values()) == 1
    )
    assert {i: d["ip_batch_id"] for i, d in devices(db, bc.id).items()} == reserved


# ------------------------------------------------------------------------------------------ guards


def _csv_with(tmp_path: Path, seed: int, n: int) -> Path:
    return write_sample_csv(
        tmp_path / f"devices-{seed}-{random.random()}.csv", n, seed=seed, static_ip_every=0
    )


def test_an_iccid_open_in_one_bulk_change_is_refused_by_another(db_uri, db, tmp_path) -> None:
    seed = random.randrange(1 << 30)
    first = ingest_csv(db_uri, _csv_with(tmp_path, seed, 3), BulkChangeSpec(1, IntakeOptions("BAN-1")))
    with pytest.raises(IntakeRejected) as refused:
        ingest_csv(db_uri, _csv_with(tmp_path, seed, 3), BulkChangeSpec(1, IntakeOptions("BAN-1")))
    assert refused.value.total == 3
    assert all(f"is open in bulk change {first.bulk_change_id}" in p for p in refused.value.problems)
    # The database refuses it too, whatever writes it (checked at the commit).
    other = db.execute(
        "INSERT INTO activation.bulk_change (service_provider_id) VALUES (1) RETURNING id"
    ).fetchone()
    assert other is not None
    with pytest.raises(psycopg.errors.ExclusionViolation):
        db.execute(
            """INSERT INTO activation.device_change (bulk_change_id, line_number, iccid, imei, change_request)
               SELECT %s, line_number, iccid, imei, change_request
                 FROM activation.device_change WHERE bulk_change_id = %s""",
            (other[0], first.bulk_change_id),
        )


def test_a_409_is_adopted_only_under_the_devices_own_billing_account(
    carrier, run_dag, db, db_uri, tmp_path
) -> None:
    seed = random.randrange(1 << 30)
    mine = ingest_csv(db_uri, _csv_with(tmp_path, seed, 2), BulkChangeSpec(1, IntakeOptions("BAN-1")))
    assert run_dag(mine.bulk_change_id).state == "success"
    # Another customer's bulk change names the same SIMs (now PROCESSED, so the intake takes them).
    theirs = ingest_csv(db_uri, _csv_with(tmp_path, seed, 2), BulkChangeSpec(1, IntakeOptions("BAN-2")))
    run_dag(theirs.bulk_change_id)
    found = devices(db, theirs.bulk_change_id)
    assert {d["status"] for d in found.values()} == {"ERROR"}
    assert all("under another billing account (BAN-1" in d["status_details"] for d in found.values())
    assert all(d["subscriber_number"] is None for d in found.values())


def test_an_offering_code_patch_outage_is_api_failed_and_retried(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(8, static_ip_every=0)
    with_removals = db.execute(
        """SELECT count(*) FROM activation.device_change WHERE bulk_change_id = %s
             AND change_request::text LIKE '%%removeOfferingCode%%'""",
        (bc.id,),
    ).fetchone()
    assert with_removals is not None and with_removals[0] > 0
    carrier.admin.load_scenario(
        scenario(faults=[{"endpoint": "service_update", "kind": "error", "status": 503}])
    )
    when = datetime.now(UTC)
    run = run_dag(bc.id, as_run=when)
    assert run.state == "failed"
    assert statuses(db, bc.id).get("API_FAILED") == with_removals[0]
    assert "ERROR" not in statuses(db, bc.id)
    carrier.admin.load_scenario(scenario(), keep_state=True)  # the outage ends
    assert run_dag(bc.id, as_run=when).state == "success"
    assert statuses(db, bc.id) == {"PROCESSED": 8}


def test_the_activation_db_and_carrier_connections_can_be_named_per_run(
    carrier, make_bulk_change, run_dag, db, monkeypatch
) -> None:
    import os

    bc = make_bulk_change(2, static_ip_every=1)
    monkeypatch.setenv("AIRFLOW_CONN_OTHER_ACTIVATION_DB", os.environ["AIRFLOW_CONN_ACTIVATION_DB"])
    monkeypatch.setenv("AIRFLOW_CONN_MY_CARRIER", telegence_conn(carrier))
    monkeypatch.delenv("AIRFLOW_CONN_TELEGENCE_SP_1")
    run = run_dag(bc.id, activation_db_conn_id="other_activation_db", telegence_conn_id="my_carrier")
    assert run.state == "success" and statuses(db, bc.id) == {"PROCESSED": 2}

    other = make_bulk_change(1, static_ip_every=0)
    failed = run_dag(other.id, activation_db_conn_id="no_such_db", telegence_conn_id="my_carrier")
    assert failed.state == "failed" and statuses(db, other.id) == {"NEW": 1}


def test_a_write_is_not_sent_when_it_cannot_be_recorded_first(
    carrier, make_bulk_change, db, monkeypatch
) -> None:
    from telegence_activation.hooks.activation_db import ActivationDbHook
    from telegence_activation.hooks.telegence import TelegenceHook
    from telegence_activation.operators.base import CarrierWriteLog

    monkeypatch.setenv(
        "AIRFLOW_CONN_DEAD_DB",
        json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "login": "x", "schema": "x"}),
    )
    bc = make_bulk_change(1, static_ip_every=0)
    writes = CarrierWriteLog(ActivationDbHook(activation_db_conn_id="dead_db"), bc.id, "test")
    with pytest.raises(psycopg.OperationalError):
        TelegenceHook("telegence_sp_1").activate(
            [{"any": "item"}], recorder=writes.for_devices(repo.STEP_ACTIVATE, [1])
        )
    assert calls(carrier, "activate") == {}


def test_echoed_secrets_never_reach_audit_rows_writes_or_the_report(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(4, static_ip_every=2)
    carrier.admin.load_scenario(
        scenario(
            faults=[
                {"endpoint": "activate", "kind": "error", "status": 503, "first_n": 1},
                {"endpoint": "*", "kind": "echo_secret"},
            ]
        )
    )
    run_dag(bc.id)
    assert statuses(db, bc.id) == {"PROCESSED": 4}
    assert carrier.admin.counters(iccids=False)["faults"]["activate"]["echo_secret"] >= 2
    for table in ("device_change_log", "carrier_write", "bulk_change_report", "device_change"):
        hits = db.execute(
            f"SELECT count(*) FROM activation.{table} t WHERE bulk_change_id = %s AND t::text LIKE %s",
            (bc.id, f"%{APP_SECRET}%"),
        ).fetchone()
        assert hits == (0,), table
    echoed = db.execute(
        "SELECT count(*) FROM activation.carrier_write WHERE bulk_change_id = %s AND response_text LIKE '%%***%%'",
        (bc.id,),
    ).fetchone()
    assert echoed is not None and echoed[0] >= 1  # the echo arrived and was redacted
