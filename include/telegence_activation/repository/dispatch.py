"""Bulk changes a dispatcher starts, and the ones in progress it checks on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row


def dispatchable(
    conn: psycopg.Connection, *, created_from: datetime | None, created_to: datetime, limit: int
) -> list[dict[str, Any]]:
    """NEW bulk changes no run owns (nor a cancel stopped), created in ``[created_from, created_to)``."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, created_at FROM activation.bulk_change
                WHERE status = 'NEW' AND dag_run_id IS NULL AND cancel_requested_at IS NULL
                  AND created_at < %(to)s AND (%(from)s::timestamptz IS NULL OR created_at >= %(from)s)
                ORDER BY id LIMIT %(limit)s""",
            {"from": created_from, "to": created_to, "limit": limit},
        ).fetchall()


def in_progress(conn: psycopg.Connection, limit: int) -> list[dict[str, Any]]:
    """PROCESSING bulk changes and their owning runs."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, dag_run_id, status, processing_started_at FROM activation.bulk_change
                WHERE status = 'PROCESSING' ORDER BY id LIMIT %s""",
            (limit,),
        ).fetchall()


def dispatchable_by_id(conn: psycopg.Connection, ids: list[int]) -> list[dict[str, Any]]:
    """Of these bulk changes, the NEW ones no run owns (nor a cancel stopped)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, created_at FROM activation.bulk_change
                WHERE id = ANY(%s) AND status = 'NEW' AND dag_run_id IS NULL AND cancel_requested_at IS NULL
                ORDER BY id""",
            (ids,),
        ).fetchall()
