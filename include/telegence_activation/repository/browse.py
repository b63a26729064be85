"""Browsing bulk changes (the Airflow UI's Bulk changes page): the list, the bulk change a run owns,
a page of devices and one device's audit trail.

Only what no other module of the package already queries: counts, failures, step times, the report
and the CSV export come from ``bulk_changes``, ``step_timing`` and ``devices`` like the CLI's.
Every list is bounded and paged by key (``id``), never by ``OFFSET``: the index of migration 0004
(``device_change (bulk_change_id, id)``) makes page 2,000 of a 100,000-device bulk change as cheap
as page 1.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

_BULK_CHANGE_LIST_COLUMNS = """id, status, status_details, customer_name, service_provider_id, device_count,
       created_at, processing_started_at, processed_at, dag_run_id, cancel_requested_at, cancelled_by"""


def list_bulk_changes(
    conn: psycopg.Connection,
    *,
    status: str | None = None,
    before_id: int | None = None,
    limit: int = 25,
) -> list[dict[str, Any]]:
    """Bulk changes newest first (``id`` descending), optionally of one status; the next page
    starts below the last id shown (``before_id``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT {_BULK_CHANGE_LIST_COLUMNS}
                  FROM activation.bulk_change
                 WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
                   AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
                 ORDER BY id DESC
                 LIMIT %(limit)s""",
            {"status": status, "before": before_id, "limit": limit},
        ).fetchall()


def bulk_change_of_run(conn: psycopg.Connection, dag_run_id: str) -> dict[str, Any] | None:
    """The bulk change a DAG run owns (claimed by its ``prepare`` step), else None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM activation.bulk_change WHERE dag_run_id = %s ORDER BY id DESC LIMIT 1",
            (dag_run_id,),
        ).fetchone()


def devices_page(
    conn: psycopg.Connection,
    bulk_change_id: int,
    *,
    after_id: int = 0,
    limit: int = 50,
    search: str | None = None,
) -> list[dict[str, Any]]:
    """Up to ``limit`` devices of a bulk change with an id above ``after_id``, in id order (the next
    page starts after the last id shown). ``search`` (digits) keeps the devices whose ICCID, IMEI or
    MDN starts with it."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, line_number, iccid, imei, subscriber_number, status, step, batch_no,
                      host(assigned_ip) AS assigned_ip, status_details, updated_at
                 FROM activation.device_change
                WHERE bulk_change_id = %(bc)s AND id > %(after)s
                  AND (%(q)s::text IS NULL
                       OR iccid LIKE %(q)s::text || '%%'
                       OR imei LIKE %(q)s::text || '%%'
                       OR subscriber_number LIKE %(q)s::text || '%%')
                ORDER BY id
                LIMIT %(limit)s""",
            {"bc": bulk_change_id, "after": after_id, "q": search, "limit": limit},
        ).fetchall()


def get_device(conn: psycopg.Connection, bulk_change_id: int, device_id: int) -> dict[str, Any] | None:
    """One device of a bulk change, every column but the stored change request's body."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, bulk_change_id, line_number, iccid, imei, subscriber_number, status, step, batch_no,
                      activation_request_id, activated_at, offering_codes_removed_at,
                      ip_batch_id::text AS ip_batch_id, host(reserved_ip) AS reserved_ip,
                      host(assigned_ip) AS assigned_ip, needs_static_ip, ip_submitted_at, status_details,
                      created_at, updated_at, processed_at
                 FROM activation.device_change
                WHERE bulk_change_id = %s AND id = %s""",
            (bulk_change_id, device_id),
        ).fetchone()


def device_trail(conn: psycopg.Connection, device_id: int, limit: int = 500) -> list[dict[str, Any]]:
    """A device's audit rows (``device_change_log``), oldest first, at most ``limit``."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, step, description, response_status, has_errors, error_text, error_class,
                      processed_by, processed_at, carrier_write_id, request_text, response_text
                 FROM activation.device_change_log
                WHERE device_change_id = %s
                ORDER BY processed_at, id
                LIMIT %s""",
            (device_id, limit),
        ).fetchall()
