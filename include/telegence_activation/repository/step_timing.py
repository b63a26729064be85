"""Step timing: when each step of a bulk change started and finished, and the deadline of a waiting
step's current round (``activation.step_timing``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import psycopg

from telegence_activation.domain.report import StepTime


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
