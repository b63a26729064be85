"""What both reschedule-mode checks share (activation status, static IP provisioning status).

Each poke asks the carrier about every device still waiting, stores what is final (with an audit
row), and returns False while anything is left; the worker slot is freed between pokes.

**The deadline lives in the database**, not in Airflow's counters: the first check of a step
sets ``step_timing.deadline_at`` = now + ``check_timeout_seconds``; task retries (the sensors
retry generously, since an open scheduler race, apache/airflow#71172, can fail a reschedule) and
clears keep it; only ``retry-failed`` (an explicit retry of the step) starts a new one. At the
deadline every device still waiting ends ERROR with the reason. Airflow's own ``timeout`` is
fixed at parse time, well beyond the longest deadline a run can ask for, as a safety net only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.hooks.telegence import TelegenceHook
from telegence_activation.operators.base import BulkChangeTaskMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

# The longest check timeout a run may ask for (the DAG's params cap it), and Airflow's own sensor
# timeout, set at parse time beyond it: our deadline always comes first.
MAX_CHECK_TIMEOUT_SECONDS = 48 * 3600
AIRFLOW_SENSOR_TIMEOUT = timedelta(seconds=MAX_CHECK_TIMEOUT_SECONDS) + timedelta(hours=24)


class BulkChangeSensor(BulkChangeTaskMixin, BaseSensorOperator):
    """Shared sensor glue: interval from a templated param, the deadline kept in the database."""

    template_fields: Sequence[str] = (
        "bulk_change_id",
        "check_interval_seconds",
        "check_timeout_seconds",
        "activation_db_conn_id",
        "telegence_conn_id",
    )
    step: str
    description: str
    unknown_step: str  # where a device whose write answer was lost waits (status UNKNOWN)
    deadline_reason: str  # "{deadline}" is filled in
    unknown_deadline_reason: str

    def __init__(
        self,
        *,
        bulk_change_id: Any,
        check_interval_seconds: Any = 60,
        check_timeout_seconds: Any = 3600,
        activation_db_conn_id: str = ACTIVATION_DB_CONN_ID,
        telegence_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("timeout", AIRFLOW_SENSOR_TIMEOUT)
        super().__init__(**kwargs)
        self.bulk_change_id = bulk_change_id
        self.check_interval_seconds = check_interval_seconds
        self.check_timeout_seconds = check_timeout_seconds
        self.activation_db_conn_id = activation_db_conn_id
        self.telegence_conn_id = telegence_conn_id

    def execute(self, context: Context) -> Any:
        # ``poke_interval`` is set at parse time (the DAG passes the param's default, so the
        # serialized DAG shows what a run without an override uses); a run's own
        # ``check_interval_seconds`` param, rendered like any template field, overrides it for that
        # run. The timeout is never touched here (fixed at parse time).
        self.poke_interval = float(self.check_interval_seconds)
        return super().execute(context)

    def poke(self, context: Context) -> bool:
        with self.one_connection():  # every transaction of this check on one connection
            return self._poke(context)

    def _poke(self, context: Context) -> bool:
        bc_id = self.bulk_change
        timeout = min(float(self.check_timeout_seconds), MAX_CHECK_TIMEOUT_SECONDS)
        with self.transaction() as conn:
            bulk_change = self.owned_bulk_change(conn, context)
            if not self.waiting(conn, bc_id):
                repo.finish_step(conn, bc_id, self.step)
                return True
            deadline, passed = repo.start_round(conn, bc_id, self.step, timeout)
        hook = self.carrier_hook(bulk_change, require_write=False)
        try:
            self.check(hook, bc_id, bulk_change, context)
        except Exception:
            if not passed:
                raise  # a retry checks again
            # At the deadline a failing last check must not keep devices waiting for ever.
            self.log.exception("Last check of bulk change %s before its %s deadline failed", bc_id, self.step)
        with self.transaction() as conn:
            if passed:
                failed = self.fail_at_deadline(conn, bc_id, deadline.isoformat(timespec="seconds"))
                self.log.warning(
                    "Bulk change %s: deadline %s of %s passed; %d device(s) still waiting ended ERROR",
                    bc_id,
                    deadline,
                    self.step,
                    failed,
                )
            if self.waiting(conn, bc_id):
                self.log.info(
                    "Bulk change %s: devices still waiting (deadline %s); checking again later",
                    bc_id,
                    deadline,
                )
                return False
            repo.finish_step(conn, bc_id, self.step)
        return True

    def waiting(self, conn: Any, bc_id: int) -> bool:
        """Devices waiting at this step, or whose write answer was lost at the step before."""
        return repo.any_at_step(conn, bc_id, self.step) or repo.any_at_step(
            conn, bc_id, self.unknown_step, "UNKNOWN"
        )

    def fail_at_deadline(self, conn: Any, bc_id: int, deadline: str) -> int:
        """End ERROR, with the reason, every device still waiting (or unknown) at the deadline."""
        return sum(
            repo.fail_unfinished(
                conn,
                bc_id,
                reason=reason.format(deadline=deadline),
                description=f"{self.description}: deadline",
                step_filter=step,
                status_filter=status,
            )
            for step, status, reason in (
                (self.step, None, self.deadline_reason),
                (self.unknown_step, "UNKNOWN", self.unknown_deadline_reason),
            )
        )

    def check(self, hook: TelegenceHook, bc_id: int, bulk_change: dict[str, Any], context: Context) -> None:
        raise NotImplementedError

    def record(self, bc_id: int, updates: list[repo.DeviceUpdate], audit: list[repo.AuditRow]) -> None:
        with self.transaction() as conn:
            repo.record(conn, updates, audit)
