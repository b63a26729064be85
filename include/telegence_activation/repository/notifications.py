"""Customer notifications of a bulk change: at most one per outcome (``activation.notification``)."""

from __future__ import annotations

import json
from typing import Any

import psycopg


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
    # The ON CONFLICT predicate stays literal: it must match the partial unique index's own.
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
