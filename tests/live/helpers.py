"""Helpers shared by the live-stack modules: waiting on states, and the checks every fault ends with
(nothing lost, nothing activated twice, no audit row written twice)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

from telegence_local.stack import LiveStack

TERMINAL = ("PROCESSED", "ERROR", "API_FAILED")


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll ``condition`` (exceptions count as "not yet") until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the database or the api-server may be restarting
            last = exc
        time.sleep(every)
    raise AssertionError(f"not {what} within {timeout:.0f} s (last error: {last!r})")


def statuses(stack: LiveStack, bulk_change_id: int) -> dict[str, int]:
    with psycopg.connect(stack.activation_db_uri, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM activation.device_change WHERE bulk_change_id = %s GROUP BY 1",
            (bulk_change_id,),
        ).fetchall()
    return {s: int(n) for s, n in rows}


def lost_devices(stack: LiveStack, bulk_change_id: int) -> int:
    """Devices not terminal, or failed without a reason."""
    with psycopg.connect(stack.activation_db_uri, connect_timeout=5) as conn:
        row = conn.execute(
            """SELECT count(*) FROM activation.device_change
                WHERE bulk_change_id = %s
                  AND (status <> ALL(%s) OR (status <> 'PROCESSED' AND coalesce(status_details, '') = ''))""",
            (bulk_change_id, list(TERMINAL)),
        ).fetchone()
    return int(row[0]) if row else 0


def iccids(stack: LiveStack, bulk_change_id: int) -> list[str]:
    with psycopg.connect(stack.activation_db_uri, connect_timeout=5) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT iccid FROM activation.device_change WHERE bulk_change_id = %s ORDER BY line_number",
                (bulk_change_id,),
            ).fetchall()
        ]


def activations(stack: LiveStack) -> dict[str, int]:
    """Activation requests the simulator accepted, per ICCID (its admin API)."""
    assert stack.simulator is not None
    return {k: int(v) for k, v in stack.simulator.admin.counters()["activationsPerIccid"].items()}


def duplicate_audit_rows(stack: LiveStack, bulk_change_id: int) -> int:
    """``device_change_log`` rows identical in every column but ``id`` and ``processed_at``."""
    with psycopg.connect(stack.activation_db_uri, connect_timeout=5) as conn:
        row = conn.execute(
            """SELECT coalesce(sum(n - 1), 0) FROM (
                   SELECT count(*) AS n FROM activation.device_change_log WHERE bulk_change_id = %s
                    GROUP BY device_change_id, step, description, request_text, response_text, response_status,
                             error_text, carrier_write_id
                   HAVING count(*) > 1) d""",
            (bulk_change_id,),
        ).fetchone()
    return int(row[0]) if row else 0


def finished(stack: LiveStack, run_id: str) -> str | None:
    state = str(stack.client().get_run(run_id)["state"])
    return state if state in ("success", "failed") else None
