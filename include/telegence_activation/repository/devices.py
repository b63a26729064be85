"""SQL of the activation workflow: every query the tools, hooks and operators run, parametrized.

Functions take an open psycopg connection and leave transaction control to the caller, so an
operator can make "device updates + their audit rows" one transaction. Writes are batched:
``COPY`` for audit rows, ``executemany`` (pipelined by psycopg) for device updates.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from telegence_activation.domain.activation import Batch
from telegence_activation.domain.report import StepTime

# Steps, as stored in device_change.step and step_timing.step.
STEP_ACTIVATE = "ActivateDevice"
STEP_WAIT_ACTIVATION = "WaitForActivation"
STEP_REMOVE_CODES = "RemoveOfferingCodes"
STEP_REQUEST_IP = "RequestIPProvision"
STEP_CHECK_IP = "CheckIPProvisionStatus"
STEP_DONE = "Done"

PROCESSED_BY = "telegence_new_service_activation"
# The audit log's written columns, in the order of AuditRow's fields.
AUDIT_COLUMNS = (
    "bulk_change_id, device_change_id, step, description, request_text, response_text, "
    "response_status, has_errors, error_text, processed_by, carrier_write_id"
)
AUDIT_TEXT_LIMIT = 8000


def clip(text: str | None) -> str | None:
    """Audit texts are kept to ``AUDIT_TEXT_LIMIT`` characters (the rest is counted, not stored)."""
    if text is None or len(text) <= AUDIT_TEXT_LIMIT:
        return text
    return text[:AUDIT_TEXT_LIMIT] + f"... [{len(text) - AUDIT_TEXT_LIMIT} more characters]"


@dataclass(frozen=True)
class AuditRow:
    """One row of the per-device audit log (fields in the order of ``AUDIT_COLUMNS``)."""

    bulk_change_id: int
    device_change_id: int | None
    step: str
    description: str
    request_text: str | None
    response_text: str | None
    response_status: str
    has_errors: bool
    error_text: str | None = None
    processed_by: str = PROCESSED_BY
    carrier_write_id: int | None = None


def audit_of(
    update: DeviceUpdate,
    bulk_change_id: int,
    *,
    description: str,
    request_text: str | None,
    response_text: str | None,
    step: str | None = None,
    carrier_write_id: int | None = None,
) -> AuditRow:
    """The audit row recording one device update (an ERROR/API_FAILED update carries its reason)."""
    failed = update.status in ("ERROR", "API_FAILED")
    return AuditRow(
        bulk_change_id=bulk_change_id,
        device_change_id=update.device_change_id,
        step=step or update.step,
        description=description,
        request_text=clip(request_text),
        response_text=clip(response_text),
        response_status=update.status,
        has_errors=failed,
        error_text=update.status_details if failed else None,
        carrier_write_id=carrier_write_id,
    )


@dataclass(frozen=True)
class DeviceUpdate:
    """New state of one device; ``None`` fields keep their stored value."""

    device_change_id: int
    status: str
    step: str
    status_details: str
    activation_request_id: str | None = None
    subscriber_number: str | None = None
    reserved_ip: str | None = None
    assigned_ip: str | None = None
    ip_batch_id: str | None = None
    activated: bool = False
    offering_codes_removed: bool = False


# ---------------------------------------------------------------------------------------- bulk change


def get_bulk_change(conn: psycopg.Connection, bulk_change_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM activation.bulk_change WHERE id = %s", (bulk_change_id,)).fetchone()


def set_bulk_change_status(
    conn: psycopg.Connection, bulk_change_id: int, status: str, details: str | None = None
) -> None:
    """Move a bulk change to ``status``; PROCESSING stamps the start, PROCESSED/ERROR the end."""
    conn.execute(
        """UPDATE activation.bulk_change
              SET status = %(status)s,
                  status_details = COALESCE(%(details)s, status_details),
                  processing_started_at = CASE WHEN %(status)s = 'PROCESSING'
                                               THEN COALESCE(processing_started_at, now())
                                               ELSE processing_started_at END,
                  processed_at = CASE WHEN %(status)s IN ('PROCESSED', 'ERROR') THEN now() ELSE NULL END
            WHERE id = %(id)s""",
        {"status": status, "details": details, "id": bulk_change_id},
    )


def claim_bulk_change(conn: psycopg.Connection, bulk_change_id: int, run_id: str) -> dict[str, Any] | None:
    """Make ``run_id`` the owner of a NEW bulk change, or confirm it already is; the bulk change, else None.

    Atomic: concurrent claims queue on the row lock and only the first one finds it unowned. A bulk
    change owned by another run, or finished without an owner, is not claimed (None).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """UPDATE activation.bulk_change SET dag_run_id = %(run)s
                WHERE id = %(id)s AND (dag_run_id = %(run)s OR (dag_run_id IS NULL AND status = 'NEW'))
            RETURNING *""",
            {"run": run_id, "id": bulk_change_id},
        ).fetchone()


BULK_CHANGE_OVERRIDABLE = ("addition_bulk_change_id", "carrier_data_group", "carrier_rate_pool")


def set_bulk_change_field(conn: psycopg.Connection, bulk_change_id: int, column: str, value: Any) -> None:
    """Override one of the bulk change's run-time fields (``BULK_CHANGE_OVERRIDABLE``)."""
    if column not in BULK_CHANGE_OVERRIDABLE:
        raise ValueError(f"{column} cannot be overridden")
    conn.execute(
        f"UPDATE activation.bulk_change SET {column} = %s WHERE id = %s",  # column from a fixed list
        (value, bulk_change_id),
    )


def status_counts(conn: psycopg.Connection, bulk_change_id: int) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, count(*) FROM activation.device_change WHERE bulk_change_id = %s GROUP BY status",
        (bulk_change_id,),
    ).fetchall()
    return {status: int(n) for status, n in rows}


def status_step_counts(conn: psycopg.Connection, bulk_change_id: int) -> list[tuple[str, str, int]]:
    rows = conn.execute(
        """SELECT status, step, count(*) FROM activation.device_change WHERE bulk_change_id = %s
            GROUP BY status, step ORDER BY status, step""",
        (bulk_change_id,),
    ).fetchall()
    return [(s, st, int(n)) for s, st, n in rows]


def failure_reasons(conn: psycopg.Connection, bulk_change_id: int) -> list[tuple[str, str, int]]:
    rows = conn.execute(
        """SELECT status, status_details, count(*) FROM activation.device_change
            WHERE bulk_change_id = %s AND status IN ('ERROR', 'API_FAILED')
            GROUP BY status, status_details ORDER BY count(*) DESC, status_details""",
        (bulk_change_id,),
    ).fetchall()
    return [(s, r, int(n)) for s, r, n in rows]


def static_ip_counts(conn: psycopg.Connection, bulk_change_id: int) -> tuple[int, int]:
    """(devices that asked for a static IP, devices with an assigned IP)."""
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE needs_static_ip), count(*) FILTER (WHERE assigned_ip IS NOT NULL)
             FROM activation.device_change WHERE bulk_change_id = %s""",
        (bulk_change_id,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def reserved_not_used(conn: psycopg.Connection, bulk_change_id: int, limit: int = 1000) -> list[str]:
    """Addresses reserved for devices that ended without them (to release with the carrier)."""
    rows = conn.execute(
        """SELECT host(reserved_ip) FROM activation.device_change
            WHERE bulk_change_id = %s AND reserved_ip IS NOT NULL AND assigned_ip IS NULL
              AND status IN ('ERROR', 'API_FAILED')
            ORDER BY reserved_ip LIMIT %s""",
        (bulk_change_id, limit),
    ).fetchall()
    return [str(r[0]) for r in rows]


def start_round(
    conn: psycopg.Connection, bulk_change_id: int, step: str, timeout_seconds: float
) -> tuple[datetime, bool]:
    """The deadline of the step's current round; a new round (and deadline) starts only when none
    is open: the first check, or the first after the previous round finished or was reset by
    ``retry-failed``. Task retries and clears of a sensor keep the deadline. Returns the deadline
    and whether it has passed (by the database's clock)."""
    row = conn.execute(
        """INSERT INTO activation.step_timing (bulk_change_id, step, round_started_at, deadline_at)
           VALUES (%(bc)s, %(step)s, now(), now() + make_interval(secs => %(timeout)s))
           ON CONFLICT (bulk_change_id, step) DO UPDATE SET
               round_started_at = CASE WHEN step_timing.deadline_at IS NULL OR step_timing.finished_at IS NOT NULL
                                       THEN now() ELSE step_timing.round_started_at END,
               deadline_at = CASE WHEN step_timing.deadline_at IS NULL OR step_timing.finished_at IS NOT NULL
                                  THEN EXCLUDED.deadline_at ELSE step_timing.deadline_at END,
               finished_at = CASE WHEN step_timing.deadline_at IS NULL OR step_timing.finished_at IS NOT NULL
                                  THEN NULL ELSE step_timing.finished_at END
           RETURNING deadline_at, deadline_at <= now()""",
        {"bc": bulk_change_id, "step": step, "timeout": float(timeout_seconds)},
    ).fetchone()
    if row is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
        raise RuntimeError("step_timing upsert returned nothing")
    return row[0], bool(row[1])


def reopen_rounds(conn: psycopg.Connection, bulk_change_id: int, steps: Sequence[str]) -> None:
    """An explicit retry of these steps (``retry-failed``): their next check starts a new deadline."""
    conn.execute(
        """UPDATE activation.step_timing SET deadline_at = NULL, finished_at = NULL
            WHERE bulk_change_id = %s AND step = ANY(%s)""",
        (bulk_change_id, list(steps)),
    )


def start_step(conn: psycopg.Connection, bulk_change_id: int, step: str) -> None:
    """Record the first start of a step (a retry keeps the original start)."""
    conn.execute(
        """INSERT INTO activation.step_timing (bulk_change_id, step) VALUES (%s, %s)
           ON CONFLICT (bulk_change_id, step) DO NOTHING""",
        (bulk_change_id, step),
    )


def finish_step(conn: psycopg.Connection, bulk_change_id: int, step: str) -> None:
    conn.execute(
        """INSERT INTO activation.step_timing (bulk_change_id, step, finished_at) VALUES (%s, %s, now())
           ON CONFLICT (bulk_change_id, step) DO UPDATE SET finished_at = now()""",
        (bulk_change_id, step),
    )


def step_times(conn: psycopg.Connection, bulk_change_id: int) -> list[StepTime]:
    rows = conn.execute(
        """SELECT step, started_at, finished_at FROM activation.step_timing
            WHERE bulk_change_id = %s ORDER BY started_at""",
        (bulk_change_id,),
    ).fetchall()
    return [StepTime(s, a, b) for s, a, b in rows]


def save_report(conn: psycopg.Connection, bulk_change_id: int, report: dict[str, Any]) -> None:
    conn.execute(
        """INSERT INTO activation.bulk_change_report (bulk_change_id, report) VALUES (%s, %s)
           ON CONFLICT (bulk_change_id) DO UPDATE SET report = EXCLUDED.report, updated_at = now()""",
        (bulk_change_id, json.dumps(report)),
    )


def get_report(conn: psycopg.Connection, bulk_change_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT report FROM activation.bulk_change_report WHERE bulk_change_id = %s", (bulk_change_id,)
    ).fetchone()
    return row[0] if row else None


def record_notification(
    conn: psycopg.Connection,
    bulk_change_id: int,
    channel: str,
    recipient: str | None,
    payload: dict[str, Any],
    status: str,
    error_text: str | None = None,
    *,
    outcome: str | None = None,
    is_update: bool = False,
) -> int | None:
    """Record a notification; None when one for the same outcome is already sent, being sent or skipped."""
    row = conn.execute(
        """INSERT INTO activation.notification
               (bulk_change_id, channel, recipient, payload, status, error_text, outcome, is_update)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (bulk_change_id, outcome) WHERE status IN ('SENDING', 'SENT', 'SKIPPED') DO NOTHING
           RETURNING id""",
        (bulk_change_id, channel, recipient, json.dumps(payload), status, error_text, outcome, is_update),
    ).fetchone()
    return int(row[0]) if row else None


def finish_notification(
    conn: psycopg.Connection, notification_id: int, status: str, error_text: str | None = None
) -> None:
    conn.execute(
        "UPDATE activation.notification SET status = %s, error_text = %s, updated_at = now() WHERE id = %s",
        (status, error_text, notification_id),
    )


def notified_outcomes(conn: psycopg.Connection, bulk_change_id: int) -> dict[str, str]:
    """``{outcome: status}`` of the notifications sent, being sent or skipped for a bulk change."""
    rows = conn.execute(
        """SELECT outcome, status FROM activation.notification
            WHERE bulk_change_id = %s AND status IN ('SENDING', 'SENT', 'SKIPPED') AND outcome IS NOT NULL""",
        (bulk_change_id,),
    ).fetchall()
    return {str(o): str(s) for o, s in rows}


# ------------------------------------------------------------------------------------ carrier writes


def record_carrier_write(
    conn: psycopg.Connection,
    *,
    bulk_change_id: int,
    step: str,
    method: str,
    path: str,
    request_text: str | None,
    device_change_ids: Sequence[int],
    attempt: int,
    sent_by: str,
) -> int:
    """Record a carrier write before it is sent (the caller commits before sending); its id."""
    row = conn.execute(
        """INSERT INTO activation.carrier_write (bulk_change_id, step, method, path, request_text,
                      device_change_ids, attempt, sent_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (bulk_change_id, step, method, path, request_text, list(device_change_ids), attempt, sent_by),
    ).fetchone()
    if row is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
        raise RuntimeError("carrier_write insert returned nothing")
    return int(row[0])


def complete_carrier_write(
    conn: psycopg.Connection,
    write_id: int,
    *,
    http_status: int | None,
    response_text: str | None,
    error_text: str | None,
) -> None:
    """Complete a recorded write with its answer (an HTTP status) or the transport failure."""
    conn.execute(
        """UPDATE activation.carrier_write
              SET outcome = CASE WHEN %(status)s::int IS NULL THEN 'NO_ANSWER' ELSE 'ANSWERED' END,
                  http_status = %(status)s, response_text = %(text)s, error_text = %(error)s,
                  answered_at = now()
            WHERE id = %(id)s""",
        {"status": http_status, "text": clip(response_text), "error": error_text, "id": write_id},
    )


def carrier_write_counts(conn: psycopg.Connection, bulk_change_id: int) -> dict[str, int]:
    """Carrier writes of a bulk change by outcome (SENT = the answer was never recorded)."""
    rows = conn.execute(
        "SELECT outcome, count(*) FROM activation.carrier_write WHERE bulk_change_id = %s GROUP BY outcome",
        (bulk_change_id,),
    ).fetchall()
    return {str(o): int(n) for o, n in rows}


def device_rows_for_export(conn: psycopg.Connection, bulk_change_id: int) -> Iterable[tuple[Any, ...]]:
    """Every device of a bulk change, streamed in file order (for the CSV report)."""
    with conn.cursor(name=f"export_{bulk_change_id}") as cur:
        cur.itersize = 2000
        cur.execute(
            """SELECT line_number, iccid, imei, status, step, subscriber_number, host(assigned_ip),
                      activation_request_id, ip_batch_id, status_details
                 FROM activation.device_change WHERE bulk_change_id = %s ORDER BY line_number""",
            (bulk_change_id,),
        )
        yield from cur


# ------------------------------------------------------------------------------------------- devices


OPEN_STATUSES = ("NEW", "PENDING", "PROCESSING", "UNKNOWN", "API_FAILED")


def open_elsewhere(conn: psycopg.Connection, bulk_change_id: int, limit: int) -> list[tuple[int, str, int]]:
    """``(line, iccid, other bulk change)`` for ICCIDs of this bulk change open in another one."""
    rows = conn.execute(
        """SELECT d.line_number, d.iccid, min(o.bulk_change_id)
             FROM activation.device_change d
             JOIN activation.device_change o
               ON o.iccid = d.iccid AND o.bulk_change_id <> d.bulk_change_id AND o.status = ANY(%s)
            WHERE d.bulk_change_id = %s
            GROUP BY d.line_number, d.iccid ORDER BY d.line_number LIMIT %s""",
        (list(OPEN_STATUSES), bulk_change_id, limit),
    ).fetchall()
    return [(int(line), str(iccid), int(other)) for line, iccid, other in rows]


def unbatched_device_ids(conn: psycopg.Connection, bulk_change_id: int) -> list[int]:
    """Devices never sent to the carrier and not yet given a batch, in file order."""
    rows = conn.execute(
        """SELECT id FROM activation.device_change
            WHERE bulk_change_id = %s AND status = 'NEW' AND activation_request_id IS NULL AND batch_no IS NULL
            ORDER BY line_number""",
        (bulk_change_id,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def assign_batches(conn: psycopg.Connection, batches: Sequence[Batch], first_batch_no: int) -> None:
    """Store the planned batch of each device (numbers continue after ``first_batch_no``)."""
    ids: list[int] = []
    numbers: list[int] = []
    for batch in batches:
        ids.extend(batch.device_change_ids)
        numbers.extend([first_batch_no + batch.batch_no] * len(batch.device_change_ids))
    conn.execute(
        """UPDATE activation.device_change d SET batch_no = u.batch_no, updated_at = now()
             FROM unnest(%s::bigint[], %s::int[]) AS u(id, batch_no) WHERE d.id = u.id""",
        (ids, numbers),
    )


def next_batch_no(conn: psycopg.Connection, bulk_change_id: int) -> int:
    row = conn.execute(
        "SELECT COALESCE(max(batch_no) + 1, 0) FROM activation.device_change WHERE bulk_change_id = %s",
        (bulk_change_id,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def batches_to_send(conn: psycopg.Connection, bulk_change_id: int) -> list[int]:
    """Batch numbers that still hold devices to send (never sent, or failed on a transient fault)."""
    rows = conn.execute(
        """SELECT DISTINCT batch_no FROM activation.device_change
            WHERE bulk_change_id = %s AND status IN ('NEW', 'API_FAILED', 'UNKNOWN')
              AND activation_request_id IS NULL AND step = 'ActivateDevice' AND batch_no IS NOT NULL
            ORDER BY batch_no""",
        (bulk_change_id,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def lock_batch(
    conn: psycopg.Connection,
    bulk_change_id: int,
    batch_no: int,
    statuses: Sequence[str] = ("NEW", "API_FAILED", "UNKNOWN"),
) -> list[dict[str, Any]]:
    """Lock and return the devices of a batch that still need sending (UNKNOWN ones are sent again
    to learn their outcome: the carrier answers 409 with the existing request for a SIM it has).

    The row locks last until the caller's transaction ends, so a second attempt of the same batch
    (a retry racing a worker that was thought dead) waits, then finds the devices already sent.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, iccid, line_number, status, change_request FROM activation.device_change
                WHERE bulk_change_id = %s AND batch_no = %s AND status = ANY(%s)
                  AND activation_request_id IS NULL AND step = 'ActivateDevice'
                ORDER BY line_number FOR UPDATE""",
            (bulk_change_id, batch_no, list(statuses)),
        ).fetchall()


def batch_bounds(conn: psycopg.Connection, bulk_change_id: int, batch_no: int) -> tuple[str, str, int] | None:
    """(first ICCID, last ICCID, size) of a batch, for its label in the UI."""
    row = conn.execute(
        """SELECT min(iccid), max(iccid), count(*) FROM activation.device_change
            WHERE bulk_change_id = %s AND batch_no = %s""",
        (bulk_change_id, batch_no),
    ).fetchone()
    if row is None or not row[2]:
        return None
    return str(row[0]), str(row[1]), int(row[2])


def unknown_activation_batches(conn: psycopg.Connection, bulk_change_id: int) -> list[int]:
    """Batches holding devices whose activation outcome is unknown (an answer was lost)."""
    rows = conn.execute(
        """SELECT DISTINCT batch_no FROM activation.device_change
            WHERE bulk_change_id = %s AND status = 'UNKNOWN' AND step = 'ActivateDevice'
            ORDER BY batch_no""",
        (bulk_change_id,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def unfinished_devices(conn: psycopg.Connection, bulk_change_id: int) -> list[int]:
    rows = conn.execute(
        """SELECT id FROM activation.device_change
            WHERE bulk_change_id = %s AND status NOT IN ('PROCESSED', 'ERROR', 'API_FAILED')""",
        (bulk_change_id,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def retryable_devices(conn: psycopg.Connection, bulk_change_id: int) -> list[int]:
    """Devices that ended API_FAILED (carrier unavailable): any rerun of their step sends them again."""
    rows = conn.execute(
        "SELECT id FROM activation.device_change WHERE bulk_change_id = %s AND status = 'API_FAILED'",
        (bulk_change_id,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def fail_unfinished(
    conn: psycopg.Connection,
    bulk_change_id: int,
    *,
    reason: str,
    description: str,
    step_filter: str | None = None,
    status_filter: str | None = None,
) -> int:
    """Mark every non-terminal device (optionally only those at one step, or in one status) ERROR
    with ``reason``, with one audit row each. Returns how many devices were failed."""
    rows = conn.execute(
        """WITH failed AS (
               UPDATE activation.device_change
                  SET status = 'ERROR', status_details = %(reason)s, updated_at = now(), processed_at = now()
                WHERE bulk_change_id = %(bc)s AND status NOT IN ('PROCESSED', 'ERROR', 'API_FAILED')
                  AND (%(step)s::text IS NULL OR step = %(step)s::text)
                  AND (%(status)s::text IS NULL OR status = %(status)s::text)
            RETURNING id, step)
           INSERT INTO activation.device_change_log (bulk_change_id, device_change_id, step, description,
                      request_text, response_text, response_status, has_errors, error_text, processed_by)
           SELECT %(bc)s, id, step, %(description)s, NULL, NULL, 'ERROR', true, %(reason)s, %(by)s FROM failed
           RETURNING 1""",
        {
            "reason": reason,
            "bc": bulk_change_id,
            "step": step_filter,
            "status": status_filter,
            "description": description,
            "by": PROCESSED_BY,
        },
    ).fetchall()
    return len(rows)


def update_devices(conn: psycopg.Connection, updates: Sequence[DeviceUpdate]) -> None:
    """Apply device updates with one set-based statement (arrays unnested), whatever their number."""
    if not updates:
        return
    columns: dict[str, list[Any]] = {name: [] for name in DeviceUpdate.__dataclass_fields__}
    for update in updates:
        for name in columns:
            columns[name].append(getattr(update, name))
    conn.execute(
        """UPDATE activation.device_change d
              SET status = u.status, step = u.step, status_details = u.status_details,
                  activation_request_id = COALESCE(u.activation_request_id, d.activation_request_id),
                  subscriber_number = COALESCE(u.subscriber_number, d.subscriber_number),
                  reserved_ip = COALESCE(u.reserved_ip::inet, d.reserved_ip),
                  assigned_ip = COALESCE(u.assigned_ip::inet, d.assigned_ip),
                  ip_batch_id = COALESCE(u.ip_batch_id::uuid, d.ip_batch_id),
                  activated_at = CASE WHEN u.activated THEN now() ELSE d.activated_at END,
                  offering_codes_removed_at = CASE WHEN u.offering_codes_removed THEN now()
                                                   ELSE d.offering_codes_removed_at END,
                  updated_at = now(),
                  processed_at = CASE WHEN u.status IN ('PROCESSED', 'ERROR', 'API_FAILED') THEN now()
                                      ELSE d.processed_at END
             FROM unnest(%(device_change_id)s::bigint[], %(status)s::text[], %(step)s::text[],
                         %(status_details)s::text[], %(activation_request_id)s::text[],
                         %(subscriber_number)s::text[], %(reserved_ip)s::text[], %(assigned_ip)s::text[],
                         %(ip_batch_id)s::text[], %(activated)s::boolean[], %(offering_codes_removed)s::boolean[])
                  AS u(id, status, step, status_details, activation_request_id, subscriber_number, reserved_ip,
                       assigned_ip, ip_batch_id, activated, offering_codes_removed)
            WHERE d.id = u.id""",
        columns,
    )


def write_audit(conn: psycopg.Connection, rows: Sequence[AuditRow]) -> None:
    """Append audit rows with one COPY."""
    if not rows:
        return
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY activation.device_change_log ({AUDIT_COLUMNS}) FROM STDIN") as copy,
    ):
        for r in rows:
            copy.write_row(astuple(r))


def pending_activation_requests(conn: psycopg.Connection, bulk_change_id: int) -> dict[str, dict[str, int]]:
    """``{request id: {iccid: device_change_id}}`` of devices waiting for the carrier's activation."""
    rows = conn.execute(
        """SELECT activation_request_id, iccid, id FROM activation.device_change
            WHERE bulk_change_id = %s AND status = 'PENDING' AND step = 'WaitForActivation'""",
        (bulk_change_id,),
    ).fetchall()
    found: dict[str, dict[str, int]] = {}
    for request_id, iccid, device_id in rows:
        found.setdefault(str(request_id), {})[str(iccid)] = int(device_id)
    return found


def devices_at_step(
    conn: psycopg.Connection,
    bulk_change_id: int,
    step: str,
    status: str = "PENDING",
    *,
    only_with_removals: bool = False,
) -> list[dict[str, Any]]:
    """Devices at a step, in file order, with only the parts of the change request the steps use
    (static IP options, billing account, customer range; the whole request only for devices that
    carry a ``removeOfferingCode`` when ``only_with_removals``), so memory stays small per device."""
    removals = (
        """ AND change_request @? '$.TelegenceActivationRequest.service.serviceCharacteristic[*]
                                   ? (@.name == "removeOfferingCode")'"""
        if only_with_removals
        else ""
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT id, iccid, subscriber_number, needs_static_ip, host(reserved_ip) AS reserved_ip,
                       ip_batch_id::text AS ip_batch_id, offering_codes_removed_at, ip_submitted_at,
                       change_request -> 'StaticIPProvision' AS static_ip,
                       change_request #>> '{{TelegenceActivationRequest,billingAccount,id}}' AS billing_account,
                       change_request ->> 'CustomerIPRange' AS customer_ip_range,
                       CASE WHEN %s THEN change_request END AS change_request
                  FROM activation.device_change
                 WHERE bulk_change_id = %s AND step = %s AND status = %s{removals}
                 ORDER BY line_number""",
            (only_with_removals, bulk_change_id, step, status),
        ).fetchall()


def mark_ip_submitted(conn: psycopg.Connection, device_change_ids: Sequence[int], *, submitted: bool) -> None:
    """Mark devices as (maybe) submitted for static IP provisioning, or clear the mark once the carrier
    has shown nothing was taken."""
    if not device_change_ids:
        return
    conn.execute(
        """UPDATE activation.device_change
              SET ip_submitted_at = CASE WHEN %s THEN now() ELSE NULL END, updated_at = now()
            WHERE id = ANY(%s)""",
        (submitted, list(device_change_ids)),
    )


def any_at_step(conn: psycopg.Connection, bulk_change_id: int, step: str, status: str = "PENDING") -> bool:
    row = conn.execute(
        """SELECT EXISTS (SELECT 1 FROM activation.device_change
                           WHERE bulk_change_id = %s AND step = %s AND status = %s)""",
        (bulk_change_id, step, status),
    ).fetchone()
    return bool(row and row[0])


def activation_failures(conn: psycopg.Connection, bulk_change_id: int) -> int:
    """Devices that failed to activate (at the activate or wait step)."""
    row = conn.execute(
        """SELECT count(*) FROM activation.device_change
            WHERE bulk_change_id = %s AND status IN ('ERROR', 'API_FAILED')
              AND step IN ('ActivateDevice', 'WaitForActivation')""",
        (bulk_change_id,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def set_addition_bulk_change_status(
    conn: psycopg.Connection, bulk_change: dict[str, Any], status: str
) -> None:
    """Finish the related (addition) bulk change together with this one, if there is one."""
    if bulk_change.get("addition_bulk_change_id"):
        set_bulk_change_status(
            conn,
            int(bulk_change["addition_bulk_change_id"]),
            status,
            f"finished with new service activation bulk change {bulk_change['id']}",
        )


def reset_failed_devices(conn: psycopg.Connection, bulk_change_id: int, operator: str) -> dict[str, int]:
    """Put the ERROR devices of a bulk change back where a rerun picks them up; audit each.

    Devices that failed to activate go back to NEW (a new activation request, planned again by the
    prepare step; a SIM the carrier did take is found through its 409 answer, never activated
    twice). Devices that failed a static IP step go back to the request step keeping their reserved
    address and their earlier batch: the request step asks the carrier about the subscriber before
    it ever submits it again. Other active devices go back to their step. The deadlines of the
    waiting steps start again. API_FAILED devices need no reset: the steps that failed them send
    them again on any rerun. Returns ``{step: devices reset}``; the bulk change goes back to
    PROCESSING when anything is left to retry.
    """
    rows = conn.execute(
        """WITH failed AS (
               SELECT id, step FROM activation.device_change
                WHERE bulk_change_id = %(bc)s AND status = 'ERROR' FOR UPDATE),
           reset AS (
               UPDATE activation.device_change d
                  SET status = CASE WHEN f.step IN ('ActivateDevice', 'WaitForActivation') THEN 'NEW'
                                    ELSE 'PENDING' END,
                      step = CASE WHEN f.step IN ('ActivateDevice', 'WaitForActivation') THEN 'ActivateDevice'
                                  WHEN f.step = 'CheckIPProvisionStatus' THEN 'RequestIPProvision'
                                  ELSE f.step END,
                      batch_no = CASE WHEN f.step IN ('ActivateDevice', 'WaitForActivation') THEN NULL
                                      ELSE d.batch_no END,
                      activation_request_id = CASE WHEN f.step IN ('ActivateDevice', 'WaitForActivation')
                                                   THEN NULL ELSE d.activation_request_id END,
                      assigned_ip = NULL,
                      status_details = 'reset for retry (was: ' || COALESCE(d.status_details, d.status) || ')',
                      processed_at = NULL, updated_at = now()
                 FROM failed f WHERE d.id = f.id
             RETURNING d.id, d.step, d.status, d.status_details)
           INSERT INTO activation.device_change_log (bulk_change_id, device_change_id, step, description,
                      request_text, response_text, response_status, has_errors, error_text, processed_by)
           SELECT %(bc)s, id, step, 'Telegence New Service Activation: reset for retry', NULL, status_details,
                  status, false, NULL, %(by)s FROM reset
           RETURNING step""",
        {"bc": bulk_change_id, "by": operator},
    ).fetchall()
    counts: dict[str, int] = {}
    for (step,) in rows:
        counts[step] = counts.get(step, 0) + 1
    if counts:
        reopen_rounds(conn, bulk_change_id, (STEP_WAIT_ACTIVATION, STEP_CHECK_IP))
    if counts or status_counts(conn, bulk_change_id).get("API_FAILED"):
        set_bulk_change_status(
            conn, bulk_change_id, "PROCESSING", f"failed devices reset for retry by {operator}"
        )
    return counts
