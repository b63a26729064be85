"""Scale: the activate map is sized from the batches, the carrier slots and Airflow's max_map_length.

A bulk change with more batches than ``[core] max_map_length`` (set small here through Airflow's
own environment variable) still completes: ``prepare`` groups the batches so the map fits, whether
``batches_per_task`` is ``auto`` or an override too small for it. Real DAG (``dag.test()``), real
PostgreSQL, the simulator over HTTP.
"""

from __future__ import annotations

import pytest
from conftest import statuses, task_states
from test_activation_dag import activations, calls

pytestmark = pytest.mark.timeout(300)


def audit_rows_per_device(db, bc_id: int, step: str) -> set[int]:
    rows = db.execute(
        """SELECT count(l.id) FROM activation.device_change d
             LEFT JOIN activation.device_change_log l ON l.device_change_id = d.id AND l.step = %s
            WHERE d.bulk_change_id = %s GROUP BY d.id""",
        (step, bc_id),
    ).fetchall()
    return {int(r[0]) for r in rows}


@pytest.mark.parametrize("batches_per_task", ["auto", 1])
def test_more_batches_than_max_map_length_still_completes(
    carrier, make_bulk_change, run_dag, db, monkeypatch, batches_per_task
) -> None:
    # 25 devices in batches of 2: 13 batches, with a map of at most 4 instances.
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "4")
    bc = make_bulk_change(25, static_ip_every=0)
    run = run_dag(bc.id, batch_size=2, batches_per_task=batches_per_task)
    assert run.state == "success"
    assert statuses(db, bc.id) == {"PROCESSED": 25}
    instances = task_states(run)["activate"]
    assert instances == ["success"] * len(instances) and 1 <= len(instances) <= 4
    assert sum(calls(carrier, "activate").values()) == 13  # every batch once, none twice
    assert set(activations(carrier, bc.iccids).values()) == {1}
    assert audit_rows_per_device(db, bc.id, "ActivateDevice") == {1}  # audit rows exactly once


def test_auto_gives_each_carrier_slot_work(carrier, make_bulk_change, run_dag, db) -> None:
    # 30 devices in batches of 3: 10 batches; 8 slots allow them one instance each.
    bc = make_bulk_change(30, static_ip_every=0)
    run = run_dag(bc.id, batch_size=3, batches_per_task="auto")
    assert run.state == "success"
    assert statuses(db, bc.id) == {"PROCESSED": 30}
    assert len(task_states(run)["activate"]) == 10
    assert sum(calls(carrier, "activate").values()) == 10


def test_a_page_beyond_line_32767_is_read(db) -> None:
    # psycopg sends small ints as smallint: the page bounds must not overflow it (a 100,000-device
    # bulk change failed at line 32,768 before they were cast): 30,000 + 5,000 overflowed.
    from telegence_activation.repository import devices as device_rows

    page = device_rows.devices_at_step_page(
        db, 2**31 - 1, "RemoveOfferingCodes", after_line=30_000, span=5_000, only_with_removals=True
    )
    assert page == []
