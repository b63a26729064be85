"""The deferrable option of the two checks (the ``deferrable_checks`` run param), end to end under
``dag.test()`` with the real Postgres and the simulator.

With the option the sensors check on the worker and, while devices are still waiting, defer to
Airflow's time-only ``DateTimeTrigger`` (``dag.test()`` runs it inline): trigger rows, no
reschedules, and the triggers carry a moment only (the triggerer has no carrier connection).
Without it (the default) they reschedule: reschedule rows, no trigger. The carrier is slowed down
so that both checks need several checks. The deadline kept in the database ends a wait the same
way in both modes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from conftest import _PARAM_DEFAULTS, DAG_ID, bulk_status, devices, scenario, statuses, task_states

from telegence_simulator.launcher import RunningSimulator

pytestmark = pytest.mark.timeout(300)

SENSORS = ("wait_for_activation", "check_ip_provisioning")
TIME_TRIGGER = "airflow.providers.standard.triggers.temporal.DateTimeTrigger"


def slow_carrier(carrier: RunningSimulator, **overrides: Any) -> None:
    """Activations and static IPs done 3 s after the request: several 1 s checks for each sensor."""
    carrier.admin.load_scenario(
        scenario(
            activation={"unit": "seconds", "reserved_after": 0.5, "done_after": 3.0},
            ip_provisioning={"unit": "seconds", "check_after": 0.5, "reserve_after": 1.0, "done_after": 3.0},
            **overrides,
        )
    )


def waits(run: Any, since: datetime) -> dict[str, Any]:
    """How the run's sensors waited, from the metadata database: reschedule rows of their task
    instances, and the time triggers created while each of them ran (the two sensors run one
    after the other, and no other task of the DAG defers)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        sensor_tis = {
            ti.task_id: ti
            for ti in session.scalars(
                select(TaskInstance).where(
                    TaskInstance.dag_id == DAG_ID,
                    TaskInstance.run_id == run.run_id,
                    TaskInstance.task_id.in_(SENSORS),
                )
            )
        }
        reschedules = session.scalar(
            select(func.count())
            .select_from(TaskReschedule)
            .where(TaskReschedule.ti_id.in_([ti.id for ti in sensor_tis.values()]))
        )
        triggers = session.scalars(
            select(Trigger).where(Trigger.created_date >= since, Trigger.classpath == TIME_TRIGGER)
        ).all()
        activation_done = sensor_tis["wait_for_activation"].end_date
        return {
            "reschedules": int(reschedules or 0),
            "triggers": {
                "wait_for_activation": sum(1 for t in triggers if t.created_date <= activation_done),
                "check_ip_provisioning": sum(1 for t in triggers if t.created_date > activation_done),
            },
            "trigger_kwargs": [set(t.kwargs) for t in triggers],
            "tries": {task_id: ti.try_number for task_id, ti in sensor_tis.items()},
        }


def test_deferrable_checks_defer_to_a_time_only_trigger_and_finish(
    carrier, make_bulk_change, run_dag, db
) -> None:
    from airflow.sdk import timezone

    bc = make_bulk_change(30, static_ip_every=3)
    slow_carrier(carrier)
    since = timezone.utcnow()
    run = run_dag(bc.id, deferrable_checks=True)
    assert run.state == "success"
    assert statuses(db, bc.id) == {"PROCESSED": 30}
    assert bulk_status(db, bc.id) == "PROCESSED"
    assert set(task_states(run)["check_ip_provisioning"]) == {"success"}
    found = waits(run, since)
    # Each check deferred at least once while the carrier was busy, and never rescheduled.
    assert found["triggers"]["wait_for_activation"] >= 1, found
    assert found["triggers"]["check_ip_provisioning"] >= 1, found
    assert found["reschedules"] == 0, found
    # A deferral is not a new try (as a reschedule is not).
    assert found["tries"] == {"wait_for_activation": 1, "check_ip_provisioning": 1}
    # The triggerer is given a moment and nothing else: no connection, no bulk change.
    assert found["trigger_kwargs"] and all(
        k <= {"moment", "end_from_trigger"} for k in found["trigger_kwargs"]
    )


def test_by_default_the_checks_reschedule_and_nothing_defers(
    carrier, make_bulk_change, run_dag, dag, db
) -> None:
    from airflow.sdk import timezone

    # The DAG as defined: reschedule unless a run asks (or the deployment's default_deferrable).
    assert _PARAM_DEFAULTS["deferrable_checks"] is False
    assert {dag.task_dict[s].deferrable for s in SENSORS} == {"{{ params.deferrable_checks }}"}
    bc = make_bulk_change(30, static_ip_every=3)
    slow_carrier(carrier)
    since = timezone.utcnow()
    # dag.test() keeps a run's conf in the in-memory DAG, so every run of the suite states
    # deferrable_checks (DEFAULT_CONF: False, the DAG's default).
    run = run_dag(bc.id)
    assert run.state == "success"
    assert statuses(db, bc.id) == {"PROCESSED": 30}
    found = waits(run, since)
    assert found["reschedules"] >= 2, found
    assert found["triggers"] == {"wait_for_activation": 0, "check_ip_provisioning": 0}, found


@pytest.mark.parametrize("deferrable", [False, True], ids=["rescheduled", "deferred"])
def test_a_device_that_never_activates_ends_error_at_the_database_deadline(
    carrier, make_bulk_change, run_dag, db, deferrable: bool
) -> None:
    from airflow.sdk import timezone

    bc = make_bulk_change(5, static_ip_every=0)
    stuck = bc.iccids[3]
    carrier.admin.load_scenario(scenario(outcomes=[{"kind": "stay_pending", "iccids": [stuck]}]))
    since = timezone.utcnow()
    run = run_dag(bc.id, deferrable_checks=deferrable, activation_check_timeout_seconds=3)
    assert run.state == "success"
    found = devices(db, bc.id)
    assert found[stuck]["status"] == "ERROR"
    assert found[stuck]["status_details"].startswith(
        "activation not confirmed by the carrier before the deadline ("
    )
    assert {found[i]["status"] for i in bc.iccids if i != stuck} == {"PROCESSED"}
    assert bulk_status(db, bc.id) == "ERROR"
    if deferrable:
        assert waits(run, since)["triggers"]["wait_for_activation"] >= 2
