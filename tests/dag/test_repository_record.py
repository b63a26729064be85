"""``repository.record``: device updates and their audit rows written together, on the real database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from conftest import BulkChange

from telegence_activation import repository as repo


def _device_ids(conn: psycopg.Connection, bulk_change_id: int) -> list[int]:
    rows = conn.execute(
        "SELECT id FROM activation.device_change WHERE bulk_change_id = %s ORDER BY line_number",
        (bulk_change_id,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def _state(conn: psycopg.Connection, device_id: int) -> tuple[Any, ...]:
    row = conn.execute(
        """SELECT status, step, status_details, activation_request_id, activated_at IS NOT NULL,
                  processed_at IS NOT NULL
             FROM activation.device_change WHERE id = %s""",
        (device_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def _audit(conn: psycopg.Connection, bulk_change_id: int) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in conn.execute(
            """SELECT device_change_id, step, description, request_text, response_text, response_status,
                      has_errors, error_text, processed_by
                 FROM activation.device_change_log WHERE bulk_change_id = %s ORDER BY id""",
            (bulk_change_id,),
        ).fetchall()
    ]


def test_record_writes_the_updates_and_their_audit_rows(
    db: psycopg.Connection, db_uri: str, make_bulk_change: Callable[..., BulkChange]
) -> None:
    bc = make_bulk_change(3, static_ip_every=0)
    first, second, untouched = _device_ids(db, bc.id)
    before = _state(db, untouched)
    updates = [
        repo.DeviceUpdate(
            first,
            "PENDING",
            repo.STEP_WAIT_ACTIVATION,
            "activation requested",
            activation_request_id="REQ-1",
            activated=True,
        ),
        repo.DeviceUpdate(second, "ERROR", repo.STEP_ACTIVATE, "carrier refused the SIM"),
    ]
    audit = [
        repo.audit_of(u, bc.id, description="test", request_text="{}", response_text="x" * 9000)
        for u in updates
    ]

    with psycopg.connect(db_uri) as conn:  # one transaction, committed on leaving the block
        repo.record(conn, updates, audit)

    assert _state(db, first) == ("PENDING", "WaitForActivation", "activation requested", "REQ-1", True, False)
    assert _state(db, second) == ("ERROR", "ActivateDevice", "carrier refused the SIM", None, False, True)
    assert _state(db, untouched) == before
    rows = _audit(db, bc.id)
    assert [r[:3] for r in rows] == [
        (first, "WaitForActivation", "test"),
        (second, "ActivateDevice", "test"),
    ]
    assert [r[5:] for r in rows] == [
        ("PENDING", False, None, repo.PROCESSED_BY),
        ("ERROR", True, "carrier refused the SIM", repo.PROCESSED_BY),
    ]
    assert rows[0][4].startswith("x" * 100) and rows[0][4].endswith("[1000 more characters]")


def test_record_is_part_of_the_callers_transaction(
    db: psycopg.Connection, db_uri: str, make_bulk_change: Callable[..., BulkChange]
) -> None:
    bc = make_bulk_change(2, static_ip_every=0)
    device, _ = _device_ids(db, bc.id)
    before = _state(db, device)
    update = repo.DeviceUpdate(device, "PROCESSED", repo.STEP_DONE, "done")
    # An audit row the schema refuses (unknown status): the device update goes with it.
    bad = repo.AuditRow(bc.id, device, repo.STEP_DONE, "test", None, None, "NOT_A_STATUS", False)

    with psycopg.connect(db_uri) as conn:
        with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
            repo.record(conn, [update], [bad])
        # Nothing of it was committed; a rollback by the caller undoes a successful record() too.
        with conn.transaction(force_rollback=True):
            repo.record(
                conn,
                [update],
                [repo.audit_of(update, bc.id, description="t", request_text=None, response_text=None)],
            )
            assert _state(conn, device)[0] == "PROCESSED"

    assert _state(db, device) == before
    assert _audit(db, bc.id) == []


def test_record_of_nothing_sends_nothing(db_uri: str) -> None:
    conn = psycopg.connect(db_uri)
    conn.close()  # any statement on a closed connection raises
    repo.record(conn, [], [])


def test_record_with_updates_only_or_audit_only(
    db: psycopg.Connection, db_uri: str, make_bulk_change: Callable[..., BulkChange]
) -> None:
    bc = make_bulk_change(1, static_ip_every=0)
    (device,) = _device_ids(db, bc.id)
    update = repo.DeviceUpdate(device, "PENDING", repo.STEP_WAIT_ACTIVATION, "requested")
    with psycopg.connect(db_uri) as conn:
        repo.record(conn, [update], [])
    assert _state(db, device)[:2] == ("PENDING", "WaitForActivation")
    assert _audit(db, bc.id) == []
    row = repo.audit_of(update, bc.id, description="note", request_text=None, response_text=None)
    with psycopg.connect(db_uri) as conn:
        repo.record(conn, [], [row])
    assert [r[:3] for r in _audit(db, bc.id)] == [(device, "WaitForActivation", "note")]
