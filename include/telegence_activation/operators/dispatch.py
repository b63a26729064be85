"""The dispatcher's step: find the bulk changes nobody started, and the ones stuck without a live run.

Returns one ``{"trigger_run_id", "conf"}`` per bulk change to start (the DAG maps a
``TriggerDagRunOperator`` over them, with the CLI's run id rule, so a bulk change triggered
meanwhile by REST is not started twice: its run id exists and the trigger is skipped; and the run
that starts claims it atomically). Logs, and returns as XCom ``summary``, what it dispatched and
skipped, and the bulk changes PROCESSING with no live run, with what to do about each.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from telegence_activation.api_client import run_id_for
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.dispatch import dispatch_window, stuck_advice
from telegence_activation.operators.base import BulkChangeTaskMixin
from telegence_activation.operators.plan import truthy
from telegence_activation.repository import dispatch as dispatch_repo

if TYPE_CHECKING:
    from airflow.sdk import Context

ACTIVATION_DAG_ID = "telegence_new_service_activation"


def run_state(context: Context, run_id: str) -> str | None:
    """The state of an activation run, or None when no run has that id."""
    try:
        return str(context["ti"].get_dagrun_state(ACTIVATION_DAG_ID, run_id))
    except Exception:  # the execution API answers "not found" as an error
        return None


def announced_bulk_changes(context: Context) -> list[int]:
    """Bulk change ids of the Asset events that started this run (the database's announcements)."""
    found: list[int] = []
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            payload = (event.extra or {}).get("payload") or event.extra or {}
            bc_id = payload.get("bulk_change_id") if isinstance(payload, dict) else None
            if bc_id is not None and int(bc_id) not in found:
                found.append(int(bc_id))
    return found


def is_backfill(dag_run: Any) -> bool:
    """Whether the run is a backfill's (the Task SDK's and the scheduler's run type enums differ in
    ``str()``; both have the value ``"backfill"``)."""
    run_type = getattr(dag_run, "run_type", None)
    return str(getattr(run_type, "value", run_type)) == "backfill"


class FindBulkChangesToDispatchOperator(BulkChangeTaskMixin, BaseOperator):
    """Which NEW bulk changes to start now (created in this run's window, older than the grace period).

    :param grace_seconds: how long a new bulk change is left to its REST trigger (templated).
    :param sweep_older: also start older ones a missed interval left behind (templated; never in a
        backfill, which looks at its own windows only).
    :param limit: at most this many per run (templated).
    :param activation_db_conn_id: the activation database connection (templated).
    """

    template_fields: Sequence[str] = ("grace_seconds", "sweep_older", "limit", "activation_db_conn_id")
    bulk_change_id = None

    def __init__(
        self,
        *,
        grace_seconds: Any = 60,
        sweep_older: Any = True,
        limit: Any = 500,
        activation_db_conn_id: str = ACTIVATION_DB_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.grace_seconds = grace_seconds
        self.sweep_older = sweep_older
        self.limit = limit
        self.activation_db_conn_id = activation_db_conn_id

    def execute(self, context: Context) -> list[dict[str, Any]]:
        backfill = is_backfill(context.get("dag_run"))
        start = context.get("data_interval_start")
        end = context.get("data_interval_end") or datetime.now(UTC)
        created_from, created_to = dispatch_window(
            start,
            min(end, datetime.now(UTC)),
            timedelta(seconds=float(self.grace_seconds)),
            sweep_older=truthy(self.sweep_older) and not backfill,
        )
        announced = announced_bulk_changes(context)
        with self.transaction() as conn:
            # Announced by the database (event-driven run): no grace, they are started now.
            found = dispatch_repo.dispatchable_by_id(conn, announced) if announced else []
            seen = {int(b["id"]) for b in found}
            found += [
                b
                for b in dispatch_repo.dispatchable(
                    conn, created_from=created_from, created_to=created_to, limit=int(self.limit)
                )
                if int(b["id"]) not in seen
            ]
            processing = dispatch_repo.in_progress(conn, int(self.limit))
        to_start: list[dict[str, Any]] = []
        skipped: list[str] = []
        for bulk_change in found:
            run_id = run_id_for(int(bulk_change["id"]))
            state = run_state(context, run_id)
            if state is not None:  # triggered meanwhile (REST, or an earlier dispatch) and not yet claimed
                skipped.append(f"{bulk_change['id']}: run {run_id} exists ({state})")
                continue
            to_start.append({"trigger_run_id": run_id, "conf": {"bulk_change_id": int(bulk_change["id"])}})
        stuck = []
        for bulk_change in processing:
            advice = stuck_advice(bulk_change, run_state(context, str(bulk_change["dag_run_id"])))
            if advice:
                stuck.append(advice)
                self.log.warning("Stuck: %s", advice)
        window = f"created {created_from or 'any time'} .. {created_to}" + (
            f"; announced {announced}" if announced else ""
        )
        self.log.info(
            "Dispatch (%s): starting %d bulk change(s) %s; skipped %d %s; %d stuck",
            window,
            len(to_start),
            [s["conf"]["bulk_change_id"] for s in to_start],
            len(skipped),
            skipped,
            len(stuck),
        )
        context["ti"].xcom_push(
            key="summary",
            value={
                "window": window,
                "dispatched": [s["conf"]["bulk_change_id"] for s in to_start],
                "skipped": skipped,
                "stuck": stuck,
            },
        )
        return to_start
