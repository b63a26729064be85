"""End to end: the real DAG under ``dag.test()``, the real Postgres, the simulator over HTTP.

Each test creates a bulk change of fresh devices, scripts the carrier, runs the DAG, and checks
the database (devices, audit rows, bulk change) and the simulator's counters.
"""

from __future__ import annotations

import ipaddress
import json

import pytest
from conftest import (
    APP_SECRET,
    as_run,
    audit_count,
    bulk_status,
    devices,
    scenario,
    statuses,
    task_states,
    telegence_conn,
)

from telegence_simulator.launcher import RunningSimulator

pytestmark = pytest.mark.timeout(300)


def activations(carrier: RunningSimulator, iccids: list[str]) -> dict[str, int]:
    counted = carrier.admin.counters().get("activationsPerIccid", {})
    return {iccid: int(counted.get(iccid, 0)) for iccid in iccids}


def calls(carrier: RunningSimulator, endpoint: str) -> dict[str, int]:
    return dict(carrier.admin.counters(iccids=False)["calls"].get(endpoint, {}))


WRITE_ENDPOINTS = ("activate", "service_update", "ip_reserve", "ip_provision")


def carrier_writes_received(carrier: RunningSimulator) -> int:
    """Write requests the carrier received (answered, refused or dropped), all endpoints."""
    return sum(sum(calls(carrier, endpoint).values()) for endpoint in WRITE_ENDPOINTS)


def test_happy_path_450_devices_in_batches_of_200_200_50(carrier, make_bulk_change, run_dag, db) -> None:
    bc = make_bulk_change(450, static_ip_every=3)
    run = run_dag(bc.id)
    assert run.state == "success"
    found = devices(db, bc.id)
    assert statuses(db, bc.id) == {"PROCESSED": 450}
    assert bulk_status(db, bc.id) == "PROCESSED"
    # Batches: 200/200/50, one activation call each, in file order.
    sizes = {}
    for d in found.values():
        sizes[d["batch_no"]] = sizes.get(d["batch_no"], 0) + 1
    assert sizes == {0: 200, 1: 200, 2: 50}
    assert sum(calls(carrier, "activate").values()) == 3
    assert set(activations(carrier, bc.iccids).values()) == {1}
    # Static IP devices got an address inside the customer range; the others none.
    for iccid, d in found.items():
        assert d["subscriber_number"] and d["activation_request_id"]
        if iccid in bc.static_ip_iccids:
            assert ipaddress.ip_address(d["assigned_ip"]) in ipaddress.ip_network("10.20.0.0/16")
            assert d["status_details"].startswith("Service activation complete. Assigned IP:")
        else:
            assert d["assigned_ip"] is None
    assert len(bc.static_ip_iccids) == 150
    # One activation audit row per device; the IP devices have reserve, submit and check rows.
    assert audit_count(db, bc.id, "ActivateDevice") == 450
    assert audit_count(db, bc.id, "CheckIPProvisionStatus") == 150
    report = db.execute(
        "SELECT report FROM activation.bulk_change_report WHERE bulk_change_id = %s", (bc.id,)
    ).fetchone()[0]
    assert report["succeeded"] == 450 and report["failed"] == 0
    assert report["static_ip"] == {"requested": 150, "assigned": 150, "reserved_not_used": []}
    # Every carrier write was recorded before it was sent and completed with its answer.
    assert report["outcome_unknown"] == 0
    assert report["carrier_writes"] == {"ANSWERED": carrier_writes_received(carrier)}
    assert {s["step"] for s in report["steps"]} >= {
        "ActivateDevice",
        "WaitForActivation",
        "CheckIPProvisionStatus",
    }
    # removeOfferingCode was stripped from the POST and applied by PATCH afterwards.
    assert sum(calls(carrier, "service_update").values()) == 45


def test_several_batches_per_task_instance(carrier, make_bulk_change, run_dag, db) -> None:
    bc = make_bulk_change(23, static_ip_every=0)
    run = run_dag(bc.id, batch_size=5, batches_per_task=2)
    assert run.state == "success"
    assert statuses(db, bc.id) == {"PROCESSED": 23}
    assert sorted(task_states(run)["activate"]) == ["success"] * 3  # batches 1-2, 3-4, 5
    assert sum(calls(carrier, "activate").values()) == 5
    assert set(activations(carrier, bc.iccids).values()) == {1}


def test_no_device_needs_a_static_ip_skips_the_ip_steps(carrier, make_bulk_change, run_dag, db) -> None:
    bc = make_bulk_change(30, static_ip_every=0)
    run = run_dag(bc.id)
    assert run.state == "success"
    assert statuses(db, bc.id) == {"PROCESSED": 30}
    assert task_states(run)["request_static_ips"] == ["skipped"]
    assert calls(carrier, "ip_reserve") == {} and calls(carrier, "ip_provision") == {}


def test_rejected_device_ends_error_and_stop_policy_withholds_static_ips(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(9, static_ip_every=3)
    rejected = bc.iccids[1]  # no static IP
    carrier.admin.load_scenario(
        scenario(outcomes=[{"kind": "reject_activation", "iccids": [rejected], "error": "SIM is stolen"}])
    )
    run = run_dag(bc.id)
    assert run.state == "success"
    found = devices(db, bc.id)
    assert found[rejected]["status"] == "ERROR"
    assert "SIM is stolen" in found[rejected]["status_details"]
    for iccid in bc.static_ip_iccids:
        assert found[iccid]["status"] == "ERROR"
        assert "on_activation_failure=stop" in found[iccid]["status_details"]
    others = set(bc.iccids) - {rejected} - set(bc.static_ip_iccids)
    assert {found[i]["status"] for i in others} == {"PROCESSED"}
    assert bulk_status(db, bc.id) == "ERROR"
    assert calls(carrier, "ip_provision") == {}


def test_continue_policy_gives_active_devices_their_static_ips(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(9, static_ip_every=3)
    rejected = bc.iccids[1]
    carrier.admin.load_scenario(scenario(outcomes=[{"kind": "reject_activation", "iccids": [rejected]}]))
    run_dag(bc.id, on_activation_failure="continue")
    found = devices(db, bc.id)
    assert found[rejected]["status"] == "ERROR"
    assert {found[i]["status"] for i in bc.static_ip_iccids} == {"PROCESSED"}
    assert all(found[i]["assigned_ip"] for i in bc.static_ip_iccids)


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_batch_failing_with_5xx_beyond_retries(carrier, make_bulk_change, run_dag, db, policy: str) -> None:
    bc = make_bulk_change(6, static_ip_every=2)
    # Batches of 3: the second batch's calls always get 503; the first batch goes through.
    failing = bc.iccids[3:]
    carrier.admin.load_scenario(
        scenario(faults=[{"endpoint": "activate", "kind": "error", "status": 503, "iccids": failing}])
    )
    run = run_dag(bc.id, batch_size=3, on_activation_failure=policy, activation_check_timeout_seconds=3)
    assert run.state == "failed", str(task_states(run))  # the failed batch is visible in the UI
    states = task_states(run)
    assert sorted(states["activate"]) == ["failed", "success"]
    found = devices(db, bc.id)
    # A 503 may come after the carrier took the request: the outcome is unknown, never "failed".
    # The activate task's tries and then the activation check resent the batch (the carrier's 409
    # would have named what it took) until the deadline, which ends them ERROR as outcome unknown.
    for iccid in failing:
        assert found[iccid]["status"] == "ERROR"
        assert found[iccid]["status_details"].startswith("outcome unknown: activation")
    assert calls(carrier, "activate").get("503", 0) >= 9  # 3 attempts per try (hook) x 3 tries, then checks
    first_ip = [i for i in bc.iccids[:3] if i in bc.static_ip_iccids]
    first_plain = [i for i in bc.iccids[:3] if i not in bc.static_ip_iccids]
    assert {found[i]["status"] for i in first_plain} == {"PROCESSED"}
    expected_ip_status = "ERROR" if policy == "stop" else "PROCESSED"
    assert {found[i]["status"] for i in first_ip} == {expected_ip_status}
    assert bulk_status(db, bc.id) == "ERROR"
    report = db.execute(
        "SELECT report FROM activation.bulk_change_report WHERE bulk_change_id = %s", (bc.id,)
    ).fetchone()[0]
    assert report["outcome_unknown"] == 3
    assert set(activations(carrier, bc.iccids[:3]).values()) == {1}
    assert set(activations(carrier, failing).values()) == {0}


def test_a_carrier_that_cannot_be_reached_fails_devices_api_failed(
    carrier, make_bulk_change, run_dag, db, monkeypatch
) -> None:
    bc = make_bulk_change(4, static_ip_every=0)
    unreachable = json.loads(telegence_conn(carrier))
    unreachable["host"] = "http://127.0.0.1:9"  # nothing listens: the request is never sent
    monkeypatch.setenv("AIRFLOW_CONN_TELEGENCE_SP_1", json.dumps(unreachable))
    run = run_dag(bc.id)
    assert run.state == "failed"
    found = devices(db, bc.id)
    assert {d["status"] for d in found.values()} == {"API_FAILED"}
    assert all(d["status_details"].startswith("carrier unavailable") for d in found.values())
    assert bulk_status(db, bc.id) == "ERROR"


def test_429_retry_after_is_honoured(carrier, make_bulk_change, run_dag, db, monkeypatch) -> None:
    bc = make_bulk_change(8, static_ip_every=0)
    carrier.admin.load_scenario(
        scenario(
            accounts=[
                {
                    "app_id": "test-app-id",
                    "app_secret": APP_SECRET,
                    "rate_limit": {"per_second": 1, "burst": 1, "retry_after": 1},
                }
            ]
        )
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_TELEGENCE_SP_1", telegence_conn(carrier, max_attempts=6, backoff_max=0.01)
    )
    run = run_dag(bc.id, batch_size=2)
    assert run.state == "success"
    assert statuses(db, bc.id) == {"PROCESSED": 8}
    counters = carrier.admin.counters(iccids=False)
    # 429s were answered (on whichever calls came within a second of the one before: on a loaded
    # machine the activation POSTs may come further apart than that), every call throttled was
    # retried to success, and no line was activated twice.
    assert counters["throttled"] > 0
    answered_429 = sum(by_status.get("429", 0) for by_status in counters["calls"].values())
    assert answered_429 == counters["throttled"]
    assert set(activations(carrier, bc.iccids).values()) == {1}


def test_ip_outside_the_customer_range_is_an_error(carrier, make_bulk_change, run_dag, db) -> None:
    bc = make_bulk_change(6, static_ip_every=1)
    outside = bc.iccids[2]
    carrier.admin.load_scenario(scenario(outcomes=[{"kind": "ip_outside_range", "iccids": [outside]}]))
    run_dag(bc.id)
    found = devices(db, bc.id)
    assert found[outside]["status"] == "ERROR"
    assert "outside the customer range 10.20.0.0/16" in found[outside]["status_details"]
    assert {found[i]["status"] for i in bc.iccids if i != outside} == {"PROCESSED"}


def test_ip_provisioning_failure_is_an_error_with_the_carrier_text(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(4, static_ip_every=1)
    failing = bc.iccids[0]
    carrier.admin.load_scenario(
        scenario(
            outcomes=[{"kind": "ip_provision_fail", "iccids": [failing], "error": "APN not provisioned"}]
        )
    )
    run_dag(bc.id)
    found = devices(db, bc.id)
    assert found[failing]["status"] == "ERROR"
    assert found[failing]["status_details"].startswith("IP provisioning failed")
    assert "APN not provisioned" in found[failing]["status_details"]
    assert {found[i]["status"] for i in bc.iccids[1:]} == {"PROCESSED"}


def test_subscriber_missing_from_the_status_reply_fails_only_that_device(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(5, static_ip_every=1)
    missing = bc.iccids[1]
    carrier.admin.load_scenario(scenario(outcomes=[{"kind": "missing_from_ip_status", "iccids": [missing]}]))
    run_dag(bc.id)
    found = devices(db, bc.id)
    assert found[missing]["status"] == "ERROR"
    assert "missing from the IP provisioning status reply" in found[missing]["status_details"]
    assert {found[i]["status"] for i in bc.iccids if i != missing} == {"PROCESSED"}
    # All five were in one provisioning batch.
    assert len({found[i]["ip_batch_id"] for i in bc.iccids}) == 1


def test_writes_disabled_fails_every_device_without_calling_the_carrier(
    carrier, make_bulk_change, run_dag, db, monkeypatch
) -> None:
    bc = make_bulk_change(7)
    monkeypatch.setenv("AIRFLOW_CONN_TELEGENCE_SP_1", telegence_conn(carrier, write_enabled=False))
    run = run_dag(bc.id)
    assert run.state == "failed"  # a configuration failure shows red
    assert task_states(run)["finalize"] == ["failed"]
    found = devices(db, bc.id)
    assert {d["status"] for d in found.values()} == {"ERROR"}
    assert {d["status_details"] for d in found.values()} == {"Write is disabled for service provider 1"}
    assert audit_count(db, bc.id) == 7
    assert bulk_status(db, bc.id) == "ERROR"
    assert carrier.admin.counters(iccids=False)["calls"] == {}


def test_missing_credentials_fail_every_device(carrier, make_bulk_change, run_dag, db) -> None:
    bc = make_bulk_change(3, service_provider_id=77)
    assert run_dag(bc.id).state == "failed"
    found = devices(db, bc.id)
    assert {d["status"] for d in found.values()} == {"ERROR"}
    assert all(
        "Unable to get Telegence API credentials for service provider 77" in d["status_details"]
        for d in found.values()
    )
    assert bulk_status(db, bc.id) == "ERROR"
    assert carrier.admin.counters(iccids=False)["calls"] == {}


def test_addition_bulk_change_is_finished_too(carrier, make_bulk_change, run_dag, db) -> None:
    related = db.execute(
        "INSERT INTO activation.bulk_change (service_provider_id) VALUES (1) RETURNING id"
    ).fetchone()[0]
    bc = make_bulk_change(3, static_ip_every=0, addition_bulk_change_id=related)
    run_dag(bc.id)
    assert bulk_status(db, bc.id) == "PROCESSED"
    assert bulk_status(db, related) == "PROCESSED"


def test_empty_bulk_change_completes_with_nothing_done(carrier, run_dag, db) -> None:
    bc_id = db.execute(
        "INSERT INTO activation.bulk_change (service_provider_id) VALUES (1) RETURNING id"
    ).fetchone()[0]
    run = run_dag(bc_id)
    assert run.state == "success"
    assert bulk_status(db, bc_id) == "PROCESSED"
    assert carrier.admin.counters(iccids=False)["calls"] == {}


def test_bad_conf_fails_at_once_and_touches_nothing(carrier, make_bulk_change, dag, db) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    bc = make_bulk_change(2)
    for conf in (
        {"bulk_change_id": "two"},
        {},
        {"bulk_change_id": bc.id, "batch_size": 500},
        {"bulk_change_id": bc.id, "on_activation_failure": "maybe"},
    ):
        with pytest.raises(ParamValidationError):
            dag.test(run_conf=conf)
    assert bulk_status(db, bc.id) == "NEW"
    assert statuses(db, bc.id) == {"NEW": 2}
    assert carrier.admin.counters(iccids=False)["calls"] == {}


def test_rerunning_activation_never_activates_twice(carrier, make_bulk_change, run_dag, dag, db) -> None:
    from datetime import UTC, datetime

    from telegence_activation.operators.activate import ActivateBatchOperator

    bc = make_bulk_change(12, static_ip_every=4)
    when = datetime.now(UTC)
    run = run_dag(bc.id, as_run=when, batch_size=5)
    before = audit_count(db, bc.id, "ActivateDevice")
    # What a cleared activate task of the owning run does: execute each batch again.
    for batch_no in range(3):
        result = ActivateBatchOperator(
            task_id=f"again_{batch_no}", bulk_change_id=bc.id, batch_no=batch_no
        ).execute(as_run(run.run_id))
        assert result["sent"] == 0
    # And a clear of the whole run (the same run id).
    again = run_dag(bc.id, as_run=when, batch_size=5)
    assert again.state == "success" and again.run_id == run.run_id
    assert set(activations(carrier, bc.iccids).values()) == {1}
    assert audit_count(db, bc.id, "ActivateDevice") == before
    assert statuses(db, bc.id) == {"PROCESSED": 12}


def test_activation_whose_answer_was_lost_is_recovered_not_repeated(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(4, static_ip_every=0)
    carrier.admin.load_scenario(
        scenario(faults=[{"endpoint": "activate", "kind": "answer_lost", "mode": "drop", "first_n": 1}])
    )
    run = run_dag(bc.id)
    assert run.state == "success"
    assert set(activations(carrier, bc.iccids).values()) == {1}
    assert calls(carrier, "activate").get("409") == 1
    found = devices(db, bc.id)
    assert {d["status"] for d in found.values()} == {"PROCESSED"}
    recovered = db.execute(
        "SELECT count(*) FROM activation.device_change_log WHERE bulk_change_id = %s AND step = 'ActivateDevice' "
        "AND response_text LIKE '%%existingRequestId%%'",
        (bc.id,),
    ).fetchone()
    assert recovered == (4,)


def test_the_app_secret_never_reaches_audit_rows_xcom_or_the_report(
    carrier, make_bulk_change, run_dag, db
) -> None:
    """Task logs are checked by the live-stack tests, where they are real log files."""
    bc = make_bulk_change(6, static_ip_every=2)
    # A transient failure first, so the retry path is exercised too.
    carrier.admin.load_scenario(
        scenario(faults=[{"endpoint": "activate", "kind": "error", "status": 503, "first_n": 1}])
    )
    run = run_dag(bc.id)
    assert run.state == "success"
    rows = db.execute(
        "SELECT concat_ws('|', description, request_text, response_text, error_text) "
        "FROM activation.device_change_log WHERE bulk_change_id = %s",
        (bc.id,),
    ).fetchall()
    assert len(rows) >= 6 and not any(APP_SECRET in r[0] for r in rows)
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        values = [
            json.dumps(x.value) for x in session.query(XComModel).filter(XComModel.run_id == run.run_id)
        ]
    assert values and not any(APP_SECRET in v for v in values)
    assert all(len(v) < 2048 for v in values)
    report = db.execute(
        "SELECT report::text FROM activation.bulk_change_report WHERE bulk_change_id = %s", (bc.id,)
    ).fetchone()
    assert APP_SECRET not in report[0]


def test_customer_is_notified_through_the_webhook_connection(
    carrier, make_bulk_change, run_dag, db, webhook
) -> None:
    bc = make_bulk_change(4, static_ip_every=0, customer_name="ACME IoT", notify_to="ops@acme.example")
    run_dag(bc.id)
    received = webhook.received
    assert len(received) == 1
    assert received[0]["path"] == "/hooks/bc"
    body = received[0]["body"]
    assert body["bulk_change_id"] == bc.id and body["customer_name"] == "ACME IoT"
    assert body["total_devices_activated"] == 4 and body["total_devices_failed"] == 0
    assert body["status"] == "PROCESSED" and body["notify_to"] == "ops@acme.example"
    row = db.execute(
        "SELECT channel, status, recipient FROM activation.notification WHERE bulk_change_id = %s AND channel = 'webhook'",
        (bc.id,),
    ).fetchone()
    assert row == ("webhook", "SENT", "ops@acme.example")


def test_without_a_webhook_connection_the_notification_is_recorded_skipped(
    carrier, make_bulk_change, run_dag, db
) -> None:
    bc = make_bulk_change(2, static_ip_every=0)
    run_dag(bc.id)
    row = db.execute(
        "SELECT status, error_text FROM activation.notification WHERE bulk_change_id = %s AND channel = 'webhook'",
        (bc.id,),
    ).fetchone()
    assert row == ("SKIPPED", "no connection telegence_notify configured")
