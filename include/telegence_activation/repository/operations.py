"""What people do to a bulk change around the flow: cancel it, and keep a dry run's plan.

Cancel and the carrier writes of activation are serialized on the bulk change's row: a sender
holds ``FOR KEY SHARE`` on it for the whole transaction of a batch (the POST included), and a
cancel takes ``FOR UPDATE``, which waits for the batches in flight to commit. Once the cancel is
committed, every later batch sees it and sends nothing: no activation POST after a recorded cancel.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.rows import dict_row

from telegence_activation.domain.report import OUTCOME_UNKNOWN
from telegence_activation.domain.steps import STEP_ACTIVATE
from telegence_activation.repository.bulk_changes import set_bulk_change_status
from telegence_activation.repository.records import error_class_of

FINISHED_STATUSES = ("PROCESSED", "ERROR", "CANCELLED")
CANCEL_DESCRIPTION = "Telegence New Service Activation: cancelled"


def lock_for_sending(conn: psycopg.Connection, bulk_change_id: int) -> dict[str, Any] | None:
    """Hold the bulk change against a cancel until this transaction ends; its cancel fields."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, status, cancel_requested_at, cancelled_by, cancel_reason
                 FROM activation.bulk_change WHERE id = %s FOR KEY SHARE""",
            (bulk_change_id,),
        ).fetchone()


def request_cancel(conn: psycopg.Connection, bulk_change_id: int, by: str, reason: str) -> dict[str, Any]:
    """Record a cancel and end every device never sent CANCELLED (one audit row each).

    Waits for activation batches in flight (their row lock). Devices whose activation answer was
    lost end ERROR as "outcome unknown" (reconciling them would mean sending them again). A bulk
    change no run has started ends CANCELLED at once; a running one is finished by its run, whose
    checks carry the lines the carrier accepted to a terminal status. Returns ``{"outcome": ...}``:
    ``cancelled`` (with device counts), ``already`` (cancelled before), ``finished`` (too late:
    PROCESSED or ERROR) or ``missing``.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM activation.bulk_change WHERE id = %s FOR UPDATE", (bulk_change_id,)
        ).fetchone()
    if row is None:
        return {"outcome": "missing"}
    if row["cancel_requested_at"] is not None:
        return {"outcome": "already", "bulk_change": row}
    if row["status"] in FINISHED_STATUSES:
        return {"outcome": "finished", "bulk_change": row}
    # clock_timestamp(), not now() (the transaction's start): the cancel takes effect once the
    # batches in flight have committed, and no carrier write is recorded after this moment.
    conn.execute(
        """UPDATE activation.bulk_change
              SET cancel_requested_at = clock_timestamp(), cancelled_by = %s, cancel_reason = %s
            WHERE id = %s""",
        (by, reason, bulk_change_id),
    )
    never_sent = _end_devices(
        conn,
        bulk_change_id,
        status="CANCELLED",
        details=f"cancelled by {by} ({reason}); never sent to the carrier",
        statuses=("NEW", "API_FAILED"),
        by=by,
    )
    unknown = _end_devices(
        conn,
        bulk_change_id,
        status="ERROR",
        details=(
            f"{OUTCOME_UNKNOWN}: activation answer lost, and the bulk change was cancelled by {by} before it "
            "was reconciled; the carrier may have the SIM: check it before ordering it again"
        ),
        statuses=("UNKNOWN",),
        by=by,
    )
    started = row["dag_run_id"] is not None
    if not started:
        set_bulk_change_status(conn, bulk_change_id, "CANCELLED", f"cancelled by {by}: {reason}")
    return {
        "outcome": "cancelled",
        "never_sent": never_sent,
        "outcome_unknown": unknown,
        "run": row["dag_run_id"],
    }


def _end_devices(
    conn: psycopg.Connection,
    bulk_change_id: int,
    *,
    status: str,
    details: str,
    statuses: tuple[str, ...],
    by: str,
) -> int:
    """End the devices at the activation step that no request id covers, in ``statuses``; audited."""
    rows = conn.execute(
        """WITH ended AS (
               UPDATE activation.device_change
                  SET status = %(status)s, status_details = %(details)s, updated_at = now(), processed_at = now()
                WHERE bulk_change_id = %(bc)s AND step = %(step)s AND activation_request_id IS NULL
                  AND status = ANY(%(statuses)s)
            RETURNING id, step)
           INSERT INTO activation.device_change_log (bulk_change_id, device_change_id, step, description,
                      request_text, response_text, response_status, has_errors, error_text, processed_by,
                      error_class)
           SELECT %(bc)s, id, step, %(description)s, NULL, NULL, %(status)s, true, %(details)s, %(by)s, %(class)s
             FROM ended
           RETURNING 1""",
        {
            "status": status,
            "details": details,
            "bc": bulk_change_id,
            "step": STEP_ACTIVATE,
            "statuses": list(statuses),
            "description": CANCEL_DESCRIPTION,
            "class": error_class_of(details),
            "by": f"cancel by {by}",
        },
    ).fetchall()
    return len(rows)


def save_plan(
    conn: psycopg.Connection, bulk_change_id: int, plan: dict[str, Any], run_id: str | None
) -> None:
    conn.execute(
        """INSERT INTO activation.bulk_change_plan (bulk_change_id, plan, dag_run_id) VALUES (%s, %s, %s)
           ON CONFLICT (bulk_change_id) DO UPDATE
              SET plan = EXCLUDED.plan, dag_run_id = EXCLUDED.dag_run_id, created_at = now()""",
        (bulk_change_id, json.dumps(plan, default=str), run_id),
    )


def get_plan(conn: psycopg.Connection, bulk_change_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT plan FROM activation.bulk_change_plan WHERE bulk_change_id = %s", (bulk_change_id,)
    ).fetchone()
    return row[0] if row else None


def static_ip_by_pdp(conn: psycopg.Connection, bulk_change_id: int) -> dict[str, int]:
    """Devices still to send that ask for a static IP, by PDP (addresses each pool must give)."""
    rows = conn.execute(
        """SELECT COALESCE(change_request -> 'StaticIPProvision' ->> 'PDPName', '?'), count(*)
             FROM activation.device_change
            WHERE bulk_change_id = %s AND needs_static_ip AND status IN ('NEW', 'API_FAILED')
            GROUP BY 1 ORDER BY 1""",
        (bulk_change_id,),
    ).fetchall()
    return {str(pdp): int(n) for pdp, n in rows}


def requests_page(
    conn: psycopg.Connection, bulk_change_id: int, after_id: int, limit: int
) -> list[tuple[int, int, str, dict[str, Any]]]:
    """``(id, line, iccid, change_request)`` of devices still to send, after ``after_id`` (keyset paging)."""
    rows = conn.execute(
        """SELECT id, line_number, iccid, change_request FROM activation.device_change
            WHERE bulk_change_id = %s AND id > %s AND status IN ('NEW', 'API_FAILED')
            ORDER BY id LIMIT %s""",
        (bulk_change_id, after_id, limit),
    ).fetchall()
    return [(int(i), int(line), str(iccid), request) for i, line, iccid, request in rows]
