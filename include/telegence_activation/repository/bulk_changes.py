"""Bulk changes: ownership, status, run-time fields, counts for the report, the stored report, and
the reset of failed devices for ``retry-failed`` (``activation.bulk_change`` and its devices)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row

from telegence_activation.domain.steps import (
    ACTIVATION_STEPS,
    STEP_ACTIVATE,
    STEP_CHECK_IP,
    STEP_REQUEST_IP,
    STEP_WAIT_ACTIVATION,
)
from telegence_activation.repository.step_timing import reopen_rounds


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
                  processed_at = CASE WHEN %(status)s IN ('PROCESSED', 'ERROR', 'CANCELLED') THEN now() ELSE NULL END
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


_FAILURE_REASONS = """SELECT status, status_details, count(*) FROM activation.device_change
    WHERE bulk_change_id = %s AND status IN ('ERROR', 'API_FAILED')
    GROUP BY status, status_details ORDER BY count(*) DESC, status_details"""


def failure_reasons(
    conn: psycopg.Connection, bulk_change_id: int, limit: int | None = None
) -> list[tuple[str, str, int]]:
    """Failed devices grouped by (status, reason), largest groups first; ``limit`` groups at most."""
    rows = conn.execute(
        _FAILURE_REASONS + (" LIMIT %s" if limit is not None else ""),
        (bulk_change_id, limit) if limit is not None else (bulk_change_id,),
    ).fetchall()
    return [(s, r, int(n)) for s, r, n in rows]


def iter_failure_reasons(
    conn: psycopg.Connection, bulk_change_id: int, page: int = 1000
) -> Iterator[tuple[str, str, int]]:
    """``failure_reasons`` as a stream read through a server-side cursor, ``page`` groups at a time:
    reasons can name devices, so a bulk change can have as many groups as failed devices."""
    with conn.transaction(), conn.cursor(name=f"failure_reasons_{bulk_change_id}") as cur:
        cur.itersize = page
        cur.execute(_FAILURE_REASONS, (bulk_change_id,))
        for status, reason, devices in cur:
            yield status, reason, int(devices)


def stage_retry_reasons(
    conn: psycopg.Connection, bulk_change_id: int, keep: Callable[[str], bool], page: int = 1000
) -> tuple[int, int]:
    """Choose which ERROR reasons a retry resets, without holding them all in memory.

    Reasons can name devices, so a bulk change can have as many distinct reasons as failed
    devices. They are read as ``iter_failure_reasons`` streams them, ``page`` at a time; those ``keep`` accepts
    are written (COPY, a page at a time) to the temporary table ``retry_reason`` of the caller's
    transaction (dropped at its end), which ``reset_failed_devices(only_staged=True)`` reads.
    Returns ``(reasons staged, ERROR devices whose reason was not kept)``.
    """
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS retry_reason (reason text PRIMARY KEY) ON COMMIT DROP")
    conn.execute("TRUNCATE retry_reason")
    staged = left_out = 0
    chosen: list[str] = []

    def flush() -> None:
        with conn.cursor().copy("COPY retry_reason (reason) FROM STDIN") as copy:
            for reason in chosen:
                copy.write_row((reason,))
        chosen.clear()

    for status, reason, devices in iter_failure_reasons(conn, bulk_change_id, page):
        if status != "ERROR" or reason is None:  # API_FAILED is sent again anyway; ERROR has a reason
            continue
        if keep(reason):
            chosen.append(reason)
            staged += 1
        else:
            left_out += devices
        if len(chosen) >= page:
            flush()
    flush()
    return staged, left_out


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


def reset_failed_devices(
    conn: psycopg.Connection,
    bulk_change_id: int,
    operator: str,
    *,
    only_staged: bool = False,
) -> dict[str, int]:
    """Put the ERROR devices of a bulk change (with ``only_staged``, only those whose reason
    ``stage_retry_reasons`` staged in this transaction) back where a rerun picks them up; audit each.

    Devices that failed to activate go back to NEW (a new activation request, planned again by the
    prepare step; a SIM the carrier did take is found through its 409 answer, never activated
    twice). Devices that failed a static IP step go back to the request step keeping their reserved
    address and their earlier batch: the request step asks the carrier about the subscriber before
    it ever submits it again. Other active devices go back to their step. The deadlines of the
    waiting steps start again. API_FAILED devices need no reset: the steps that failed them send
    them again on any rerun. Returns ``{step: devices reset}``; the bulk change goes back to
    PROCESSING when anything is left to retry.
    """
    staged = " AND status_details IN (SELECT reason FROM retry_reason)" if only_staged else ""
    rows = conn.execute(
        f"""WITH failed AS (
               SELECT id, step FROM activation.device_change
                WHERE bulk_change_id = %(bc)s AND status = 'ERROR'{staged}
                FOR UPDATE),
           reset AS (
               UPDATE activation.device_change d
                  SET status = CASE WHEN f.step = ANY(%(activation_steps)s) THEN 'NEW'
                                    ELSE 'PENDING' END,
                      step = CASE WHEN f.step = ANY(%(activation_steps)s) THEN %(activate)s
                                  WHEN f.step = %(check_ip)s THEN %(request_ip)s
                                  ELSE f.step END,
                      batch_no = CASE WHEN f.step = ANY(%(activation_steps)s) THEN NULL
                                      ELSE d.batch_no END,
                      activation_request_id = CASE WHEN f.step = ANY(%(activation_steps)s)
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
        {
            "bc": bulk_change_id,
            "by": operator,
            "activation_steps": list(ACTIVATION_STEPS),
            "activate": STEP_ACTIVATE,
            "check_ip": STEP_CHECK_IP,
            "request_ip": STEP_REQUEST_IP,
        },
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
