"""Dispatching: which bulk changes a dispatcher run starts, and what to say about stuck ones (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

FINISHED_RUN_STATES = ("success", "failed")


def dispatch_window(
    interval_start: datetime | None, interval_end: datetime, grace: timedelta, *, sweep_older: bool
) -> tuple[datetime | None, datetime]:
    """``[from, to)`` of ``created_at`` a dispatcher run looks at.

    The data interval shifted back by the grace period, so each bulk change falls in exactly one
    window, and that window's run comes at least ``grace`` after the bulk change was created (a
    REST trigger has had its chance). ``sweep_older`` (scheduled runs): no lower bound, so a bulk
    change a missed or paused interval left behind is started by the next run. A backfill looks at
    its windows only.
    """
    end = interval_end - grace
    if sweep_older or interval_start is None:
        return None, end
    return interval_start - grace, end


def stuck_advice(bulk_change: Mapping[str, Any], run_state: str | None) -> str | None:
    """What to do about a PROCESSING bulk change whose owning run is not live (None when it is)."""
    bc_id, run_id = bulk_change["id"], bulk_change.get("dag_run_id")
    if run_state is None:
        return (
            f"bulk change {bc_id} is PROCESSING but its run {run_id} does not exist (deleted?): create the run "
            f"again under the same run id (POST /api/v2/dags/telegence_new_service_activation/dagRuns with "
            f'dag_run_id "{run_id}" and conf {{"bulk_change_id": {bc_id}}}); it owns the bulk change and '
            "does only what is left"
        )
    if run_state in FINISHED_RUN_STATES:
        return (
            f"bulk change {bc_id} is PROCESSING but its run {run_id} ended {run_state}: "
            f"'python -m telegence_activation retry-failed {bc_id}' (clears the run; it does what is left)"
        )
    return None
