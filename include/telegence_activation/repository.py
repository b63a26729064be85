"""SQL of the activation workflow: every query the tools, hooks and operators run, parametrized.

Functions take an open psycopg connection and leave transaction control to the caller, so an
operator can make "device updates + their audit rows" one transaction. Writes are batched:
``COPY`` for audit rows, ``executemany`` (pipelined by psycopg) for device updates.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass
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
    "response_status, has_errors, error_text, processed_by"
)


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


def audit_of(
    update: DeviceUpdate,
    bulk_change_id: int,
    *,
    description: str,
    request_text: str | None,
    response_text: str | None,
    step: str | None = None,
) -> AuditRow:
    """The audit row recording one device update (an ERROR/API_FAILED update carries its reason)."""
    failed = update.status in ("ERROR", "API_FAILED")
    return AuditRow(
        bulk_change_id=bulk_change_id,
        device_change_id=update.device_change_id,
        step=step or update.step,
        description=description,
        request_text=request_text,
        response_text=response_text,
        response_status=update.status,
        has_errors=failed,
        error_text=update.status_details if failed else None,
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


def record_dag_run(conn: psycopg.Connection, bulk_change_id: int, run_id: str) -> None:
    conn.execute("UPDATE activation.bulk_change SET dag_run_id = %s WHERE id = %s", (run_id, bulk_change_id))


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
) -> None:
    conn.execute(
        """INSERT INTO activation.notification (bulk_change_id, channel, recipient, payload, status, error_text)
           VALUES (%s, %s, %s, %s, %s, %s)""",
        (bulk_change_id, channel, recipient, json.dumps(payload), status, error_text),
    )


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
            WHERE bulk_change_id = %s AND status IN ('NEW', 'API_FAILED') AND activation_request_id IS NULL
              AND step = 'ActivateDevice' AND batch_no IS NOT NULL
            ORDER BY batch_no""",
        (bulk_change_id,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def lock_batch(conn: psycopg.Connection, bulk_change_id: int, batch_no: int) -> list[dict[str, Any]]:
    """Lock and return the devices of a batch that still need sending.

    The row locks last until the caller's transaction ends, so a second attempt of the same batch
    (a retry racing a worker that was thought dead) waits, then finds the devices already sent.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, iccid, line_number, change_request FROM activation.device_change
                WHERE bulk_change_id = %s AND batch_no = %s AND status IN ('NEW', 'API_FAILED')
                  AND activation_request_id IS NULL AND step = 'ActivateDevice'
                ORDER BY line_number FOR UPDATE""",
            (bulk_change_id, batch_no),
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
) -> int:
    """Mark every non-terminal device (optionally only those at one step) ERROR with ``reason``,
    with one audit row each. Returns how many devices were failed."""
    rows = conn.execute(
        """WITH failed AS (
               UPDATE activation.device_change
                  SET status = 'ERROR', status_details = %(reason)s, updated_at = now(), processed_at = now()
                WHERE bulk_change_id = %(bc)s AND status NOT IN ('PROCESSED', 'ERROR', 'API_FAILED')
                  AND (%(step)s::text IS NULL OR step = %(step)s::text)
            RETURNING id, step)
           INSERT INTO activation.device_change_log (bulk_change_id, device_change_id, step, description,
                      request_text, response_text, response_status, has_errors, error_text, processed_by)
           SELECT %(bc)s, id, step, %(description)s, NULL, NULL, 'ERROR', true, %(reason)s, %(by)s FROM failed
           RETURNING 1""",
        {
            "reason": reason,
            "bc": bulk_change_id,
            "step": step_filter,
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
                       ip_batch_id::text AS ip_batch_id, offering_codes_removed_at,
                       change_request -> 'StaticIPProvision' AS static_ip,
                       change_request #>> '{{TelegenceActivationRequest,billingAccount,id}}' AS billing_account,
                       change_request ->> 'CustomerIPRange' AS customer_ip_range,
                       CASE WHEN %s THEN change_request END AS change_request
                  FROM activation.device_change
                 WHERE bulk_change_id = %s AND step = %s AND status = %s{removals}
                 ORDER BY line_number""",
            (only_with_removals, bulk_change_id, step, status),
        ).fetchall()


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
    prepare step); devices that are active but failed a later step go back to that step.
    API_FAILED devices need no reset: the steps that failed them send them again on any rerun.
    Returns ``{step: devices reset}``; the bulk change goes back to PROCESSING when anything is
    left to retry.
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
                      reserved_ip = CASE WHEN f.step IN ('RequestIPProvision', 'CheckIPProvisionStatus')
                                         THEN NULL ELSE d.reserved_ip END,
                      ip_batch_id = CASE WHEN f.step IN ('RequestIPProvision', 'CheckIPProvisionStatus')
                                         THEN NULL ELSE d.ip_batch_id END,
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
    if counts or status_counts(conn, bulk_change_id).get("API_FAILED"):
        set_bulk_change_status(
            conn, bulk_change_id, "PROCESSING", f"failed devices reset for retry by {operator}"
        )
    return counts
