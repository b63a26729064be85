"""Devices of a bulk change: activation batches, what each step picks up, failing the unfinished
ones, the static IP submission mark and the CSV export (``activation.device_change``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from telegence_activation.domain.activation import MAX_SERVICES_PER_REQUEST, Batch
from telegence_activation.domain.steps import ACTIVATION_STEPS, STEP_ACTIVATE, STEP_WAIT_ACTIVATION
from telegence_activation.repository.records import PROCESSED_BY, error_class_of

OPEN_STATUSES = ("NEW", "PENDING", "PROCESSING", "UNKNOWN", "API_FAILED")


def open_elsewhere(conn: psycopg.Connection, bulk_change_id: int, limit: int) -> list[tuple[int, str, int]]:
    """``(line, iccid, other bulk change)`` for ICCIDs of this bulk change open in another one.

    Each device is looked up through the ICCID index. The intake runs this in the transaction that
    has just copied the devices in, before any statistics know them: the planner then expects one
    device and may scan the whole table once per device (a 100,000-device intake stuck for more
    than 8 minutes, quadratic). Sequential scans are switched off for this statement only (the
    setting is put back), so the plan stays index lookups, linear in the devices."""
    previous = conn.execute("SELECT current_setting('enable_seqscan')").fetchone()
    conn.execute("SELECT set_config('enable_seqscan', 'off', true)")
    try:
        rows = conn.execute(
            """SELECT d.line_number, d.iccid, o.other
                 FROM activation.device_change d
                 CROSS JOIN LATERAL (
                       SELECT min(o.bulk_change_id) AS other FROM activation.device_change o
                        WHERE o.iccid = d.iccid AND o.bulk_change_id <> d.bulk_change_id AND o.status = ANY(%s)
                      ) o
                WHERE d.bulk_change_id = %s AND o.other IS NOT NULL
                ORDER BY d.line_number LIMIT %s""",
            (list(OPEN_STATUSES), bulk_change_id, limit),
        ).fetchall()
    finally:
        if not conn.broken and conn.info.transaction_status != TransactionStatus.INERROR:
            conn.execute(
                "SELECT set_config('enable_seqscan', %s, true)", (previous[0] if previous else "on",)
            )
    return [(int(line), str(iccid), int(other)) for line, iccid, other in rows]


# ------------------------------------------------------------------------------------ batches


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


def assign_batches_in_order(
    conn: psycopg.Connection, bulk_change_id: int, batch_size: int, first_batch_no: int
) -> int:
    """Give every device never sent and not yet batched a batch of ``batch_size``, in file order,
    numbered from ``first_batch_no``: one set-based statement (no id list in Python, whatever the
    size of the bulk change). Returns how many devices were batched."""
    if not 1 <= batch_size <= MAX_SERVICES_PER_REQUEST:
        raise ValueError(f"batch_size must be between 1 and {MAX_SERVICES_PER_REQUEST}, got {batch_size}")
    cur = conn.execute(
        """UPDATE activation.device_change d
              SET batch_no = %(first)s::bigint + (o.n - 1) / %(size)s::bigint, updated_at = now()
             FROM (SELECT id, row_number() OVER (ORDER BY line_number, id) AS n
                     FROM activation.device_change
                    WHERE bulk_change_id = %(bc)s AND status = 'NEW' AND activation_request_id IS NULL
                      AND batch_no IS NULL) AS o
            WHERE d.id = o.id""",
        {"first": first_batch_no, "size": batch_size, "bc": bulk_change_id},
    )
    return cur.rowcount


def count_to_run(conn: psycopg.Connection, bulk_change_id: int) -> int:
    """Devices a run still has work for: not terminal, or API_FAILED (terminal but retryable)."""
    row = conn.execute(
        """SELECT count(*) FROM activation.device_change
            WHERE bulk_change_id = %s AND status NOT IN ('PROCESSED', 'ERROR', 'CANCELLED')""",
        (bulk_change_id,),
    ).fetchone()
    assert row is not None
    return int(row[0])


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
              AND activation_request_id IS NULL AND step = %s AND batch_no IS NOT NULL
            ORDER BY batch_no""",
        (bulk_change_id, STEP_ACTIVATE),
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
                  AND activation_request_id IS NULL AND step = %s
                ORDER BY line_number FOR UPDATE""",
            (bulk_change_id, batch_no, list(statuses), STEP_ACTIVATE),
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
            WHERE bulk_change_id = %s AND status = 'UNKNOWN' AND step = %s
            ORDER BY batch_no""",
        (bulk_change_id, STEP_ACTIVATE),
    ).fetchall()
    return [int(r[0]) for r in rows]


# ------------------------------------------------------------------------------- device states


def count_unfinished(conn: psycopg.Connection, bulk_change_id: int) -> int:
    """Devices still in progress (not PROCESSED, ERROR, API_FAILED or CANCELLED)."""
    row = conn.execute(
        """SELECT count(*) FROM activation.device_change
            WHERE bulk_change_id = %s AND status NOT IN ('PROCESSED', 'ERROR', 'API_FAILED', 'CANCELLED')""",
        (bulk_change_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def count_retryable(conn: psycopg.Connection, bulk_change_id: int) -> int:
    """Devices that ended API_FAILED (carrier unavailable): any rerun of their step sends them again."""
    row = conn.execute(
        "SELECT count(*) FROM activation.device_change WHERE bulk_change_id = %s AND status = 'API_FAILED'",
        (bulk_change_id,),
    ).fetchone()
    return int(row[0]) if row else 0


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
                WHERE bulk_change_id = %(bc)s AND status NOT IN ('PROCESSED', 'ERROR', 'API_FAILED', 'CANCELLED')
                  AND (%(step)s::text IS NULL OR step = %(step)s::text)
                  AND (%(status)s::text IS NULL OR status = %(status)s::text)
            RETURNING id, step)
           INSERT INTO activation.device_change_log (bulk_change_id, device_change_id, step, description,
                      request_text, response_text, response_status, has_errors, error_text, processed_by,
                      error_class)
           SELECT %(bc)s, id, step, %(description)s, NULL, NULL, 'ERROR', true, %(reason)s, %(by)s, %(class)s
             FROM failed
           RETURNING 1""",
        {
            "reason": reason,
            "bc": bulk_change_id,
            "step": step_filter,
            "status": status_filter,
            "description": description,
            "by": PROCESSED_BY,
            "class": error_class_of(reason),
        },
    ).fetchall()
    return len(rows)


def pending_activation_requests(conn: psycopg.Connection, bulk_change_id: int) -> dict[str, dict[str, int]]:
    """``{request id: {iccid: device_change_id}}`` of devices waiting for the carrier's activation."""
    rows = conn.execute(
        """SELECT activation_request_id, iccid, id FROM activation.device_change
            WHERE bulk_change_id = %s AND status = 'PENDING' AND step = %s""",
        (bulk_change_id, STEP_WAIT_ACTIVATION),
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


PAGE_SIZE = 1000
_REMOVALS = """ AND change_request @? '$.TelegenceActivationRequest.service.serviceCharacteristic[*]
                                   ? (@.name == "removeOfferingCode")'"""


def devices_at_step_page(
    conn: psycopg.Connection,
    bulk_change_id: int,
    step: str,
    statuses: Sequence[str] = ("PENDING",),
    *,
    after_line: int = -1,
    span: int = PAGE_SIZE,
    only_with_removals: bool = False,
    reserved: bool | None = None,
    submitted: bool | None = None,
) -> list[dict[str, Any]]:
    """One page of ``devices_at_step`` (the same columns, plus ``line_number`` and ``status``): the
    devices at a step in one of ``statuses`` among file lines ``after_line + 1 .. after_line + span``,
    in file order; ``reserved`` / ``submitted`` (when not None) keep only devices with (or without)
    a reserved address / a static IP submission mark. A page is a range of lines, read through the
    (bulk change, line) index whatever the filters select, so every page costs at most ``span``
    rows (a LIMIT page with a selective filter can make the planner sort the whole step for each
    page: 88 s instead of 24 s for 10,000 PATCHes at 100,000 devices). The line range is read in a
    subquery the planner may not flatten (``OFFSET 0``): with the step's statistics stale (a step
    just filled), it otherwise read the step's index and filtered lines, 0.5 s a page at
    1,000,000 devices. ``step_pages`` walks them."""
    removals = _REMOVALS if only_with_removals else ""
    if reserved is not None:
        removals += " AND reserved_ip IS NOT NULL" if reserved else " AND reserved_ip IS NULL"
    if submitted is not None:
        removals += " AND ip_submitted_at IS NOT NULL" if submitted else " AND ip_submitted_at IS NULL"
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT id, line_number, iccid, subscriber_number, needs_static_ip,
                       host(reserved_ip) AS reserved_ip, ip_batch_id::text AS ip_batch_id,
                       offering_codes_removed_at, ip_submitted_at, status,
                       change_request -> 'StaticIPProvision' AS static_ip,
                       change_request #>> '{{TelegenceActivationRequest,billingAccount,id}}' AS billing_account,
                       change_request ->> 'CustomerIPRange' AS customer_ip_range,
                       CASE WHEN %(removals)s THEN change_request END AS change_request
                  FROM (SELECT * FROM activation.device_change
                         WHERE bulk_change_id = %(bc)s AND line_number > %(after)s::bigint
                           AND line_number <= %(after)s::bigint + %(span)s::bigint
                        OFFSET 0) AS d
                 WHERE step = %(step)s AND status = ANY(%(statuses)s){removals}
                 ORDER BY line_number""",
            {
                "removals": only_with_removals,
                "bc": bulk_change_id,
                "after": after_line,
                "span": span,
                "step": step,
                "statuses": list(statuses),
            },
        ).fetchall()


def line_bounds(conn: psycopg.Connection, bulk_change_id: int) -> tuple[int, int] | None:
    """(first, last) file line of a bulk change, None when it has no device."""
    row = conn.execute(
        "SELECT min(line_number), max(line_number) FROM activation.device_change WHERE bulk_change_id = %s",
        (bulk_change_id,),
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


def step_pages(
    transaction: Callable[[], AbstractContextManager[psycopg.Connection]],
    bulk_change_id: int,
    step: str,
    statuses: Sequence[str] = ("PENDING",),
    *,
    span: int = PAGE_SIZE,
    **filters: Any,
) -> Iterator[list[dict[str, Any]]]:
    """The non-empty pages of ``devices_at_step_page`` over the whole bulk change, each read in its
    own ``transaction()``: a step holds one page of devices at a time, whatever the size."""
    with transaction() as conn:
        bounds = line_bounds(conn, bulk_change_id)
    if bounds is None:
        return
    after = bounds[0] - 1
    while after < bounds[1]:
        with transaction() as conn:
            page = devices_at_step_page(
                conn, bulk_change_id, step, statuses, after_line=after, span=span, **filters
            )
        after += span
        if page:
            yield page


def count_at_step(
    conn: psycopg.Connection,
    bulk_change_id: int,
    step: str,
    statuses: Sequence[str] = ("PENDING",),
    *,
    only_with_removals: bool = False,
) -> int:
    removals = _REMOVALS if only_with_removals else ""
    row = conn.execute(
        f"""SELECT count(*) FROM activation.device_change
             WHERE bulk_change_id = %s AND step = %s AND status = ANY(%s){removals}""",
        (bulk_change_id, step, list(statuses)),
    ).fetchone()
    assert row is not None
    return int(row[0])


def pending_activation_request_ids(conn: psycopg.Connection, bulk_change_id: int) -> list[str]:
    """The distinct activation request ids devices wait on (one per batch: 5,000 at 1,000,000)."""
    rows = conn.execute(
        """SELECT DISTINCT activation_request_id FROM activation.device_change
            WHERE bulk_change_id = %s AND status = 'PENDING' AND step = %s ORDER BY 1""",
        (bulk_change_id, STEP_WAIT_ACTIVATION),
    ).fetchall()
    return [str(r[0]) for r in rows]


def devices_of_activation_requests(
    conn: psycopg.Connection, bulk_change_id: int, request_ids: Sequence[str]
) -> dict[str, dict[str, int]]:
    """``{request id: {iccid: device_change_id}}`` of the devices waiting on these activation requests."""
    rows = conn.execute(
        """SELECT activation_request_id, iccid, id FROM activation.device_change
            WHERE activation_request_id = ANY(%s) AND bulk_change_id = %s AND status = 'PENDING' AND step = %s""",
        (list(request_ids), bulk_change_id, STEP_WAIT_ACTIVATION),
    ).fetchall()
    found: dict[str, dict[str, int]] = {}
    for request_id, iccid, device_id in rows:
        found.setdefault(str(request_id), {})[str(iccid)] = int(device_id)
    return found


def ip_batch_ids_at_step(conn: psycopg.Connection, bulk_change_id: int, step: str) -> list[str]:
    """The distinct static IP batch ids of devices waiting at ``step`` (one per 200 devices)."""
    rows = conn.execute(
        """SELECT DISTINCT ip_batch_id::text FROM activation.device_change
            WHERE bulk_change_id = %s AND step = %s AND status = 'PENDING' AND ip_batch_id IS NOT NULL
            ORDER BY 1""",
        (bulk_change_id, step),
    ).fetchall()
    return [str(r[0]) for r in rows]


def devices_of_ip_batch(
    conn: psycopg.Connection, bulk_change_id: int, step: str, ip_batch_id: str
) -> list[dict[str, Any]]:
    """The devices of one static IP batch waiting at ``step`` (the columns of ``devices_at_step``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, line_number, iccid, subscriber_number, needs_static_ip,
                      host(reserved_ip) AS reserved_ip, ip_batch_id::text AS ip_batch_id,
                      change_request ->> 'CustomerIPRange' AS customer_ip_range
                 FROM activation.device_change
                WHERE ip_batch_id = %s::uuid AND bulk_change_id = %s AND step = %s AND status = 'PENDING'
                ORDER BY line_number""",
            (ip_batch_id, bulk_change_id, step),
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
              AND step = ANY(%s)""",
        (bulk_change_id, list(ACTIVATION_STEPS)),
    ).fetchone()
    assert row is not None
    return int(row[0])


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
