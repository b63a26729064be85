"""The write-ahead record of every write sent to the carrier (``activation.carrier_write``)."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from telegence_activation.repository.records import clip


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
