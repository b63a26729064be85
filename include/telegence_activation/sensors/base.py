"""What both reschedule-mode checks share (activation status, static IP provisioning status).

Each poke asks the carrier about every device still waiting, stores what is final (with an audit
row), and returns False while anything is left; the worker slot is freed between pokes.

**Two ways to wait between pokes**, chosen per run (``deferrable``, templated; the DAG's
``deferrable_checks`` param): *reschedule* (the default) ends the try with
``AirflowRescheduleException`` and the scheduler starts the next poke after the interval;
*deferrable* defers to Airflow's time-only ``DateTimeTrigger`` (``TimeDeltaTrigger``) and the
triggerer hands the task back to a worker after the interval, where ``execute_complete`` pokes
again. The poke itself, which needs the carrier's credentials, always runs on the worker: the
triggerer gets nothing but a moment in time (it has no carrier connection). The deadline, the
retries and every database write are the same in both ways.

**The deadline lives in the database**, not in Airflow's counters: the first check of a step
sets ``step_timing.deadline_at`` = now + ``check_timeout_seconds``; task retries (the sensors
retry generously, since an open scheduler race, apache/airflow#71172, can fail a reschedule) and
clears keep it; only ``retry-failed`` (an explicit retry of the step) starts a new one. At the
deadline every device still waiting ends ERROR with the reason. Airflow's own ``timeout`` is
fixed at parse time, well beyond the longest deadline a run can ask for, as a safety net only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseSensorOperator, timezone
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowSkipException

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

# Carrier status reads a check keeps in flight while it records the answers before them.
READ_AHEAD = 4

K = TypeVar("K")
R = TypeVar("R")


def read_ahead(
    keys: Iterable[K], read: Callable[[K], R], *, readers: int = READ_AHEAD
) -> Generator[tuple[K, R], None, None]:
    """``(key, read(key))`` for every key, in order, with up to ``readers`` reads in flight on threads.

    A check reads one status per request or batch from the carrier and records the answers in the
    database; reading the next few while the caller records the one before overlaps the two (at
    1,000,000 devices, 5,000 reads). Only reads go through here, never a write; the hook's rate
    limit still paces each of them. At most ``readers`` answers are held at once. A read that raises
    raises here, at its turn; when the caller stops early the reads in flight finish first.
    """
    if readers <= 1:
        for key in keys:
            yield key, read(key)
        return
    remaining = iter(keys)
    with ThreadPoolExecutor(max_workers=readers, thread_name_prefix="check-read") as pool:
        pending: deque[tuple[K, Future[R]]] = deque(
            (key, pool.submit(read, key)) for key in islice(remaining, readers)
        )
        while pending:
            key, future = pending.popleft()
            for following in islice(remaining, 1):  # the next key, if any, takes the freed place
                pending.append((following, pool.submit(read, following)))
            yield key, future.result()


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", "", "none", "null"})


def as_bool(value: Any) -> bool:
    """A rendered boolean (``True``, ``"False"``, ``"true"``, ``0``, ``None``...) as a bool.

    Unlike ``bool(value)``, the string ``"False"`` is False; anything that is not recognisably a
    boolean raises ValueError rather than being guessed.
    """
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"not a boolean: {value!r}")


class BulkChangeSensor(BulkChangeTaskMixin, BaseSensorOperator):
    """Shared sensor glue: interval from a templated param, the deadline kept in the database.

    :param bulk_change_id: the bulk change (templated).
    :param check_interval_seconds: seconds between checks for this run (templated).
    :param check_timeout_seconds: the step's deadline from its first check, kept in the database
        (templated).
    :param activation_db_conn_id: the activation database connection (templated).
    :param telegence_conn_id: the carrier connection override (templated).
    :param deferrable: wait between checks deferred to the triggerer (a time-only trigger) instead
        of rescheduled by the scheduler; the checks run on the worker either way (templated, so a
        run can choose; ``"False"`` is false). Default: ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = (
        "bulk_change_id",
        "check_interval_seconds",
        "check_timeout_seconds",
        "activation_db_conn_id",
        "telegence_conn_id",
        "deferrable",
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
        deferrable: bool | str = conf.getboolean("operators", "default_deferrable", fallback=False),
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
        self.deferrable = deferrable

    @property
    def defers(self) -> bool:
        """Whether this run waits between checks deferred (the rendered ``deferrable``)."""
        try:
            return as_bool(self.deferrable)
        except ValueError as exc:  # an authoring mistake: no retry would fix it
            raise AirflowFailException(f"deferrable: {exc}") from exc

    def execute(self, context: Context) -> Any:
        # ``poke_interval`` is set at parse time (the DAG passes the param's default, so the
        # serialized DAG shows what a run without an override uses); a run's own
        # ``check_interval_seconds`` param, rendered like any template field, overrides it for that
        # run. The timeout is never touched here (fixed at parse time).
        self.poke_interval = float(self.check_interval_seconds)
        if not self.defers:
            return super().execute(context)
        return self._check_or_defer(context, timezone.utcnow(), deferrals=0)

    def execute_complete(
        self,
        context: Context,
        event: Any = None,
        started_at: str | None = None,
        deferrals: int = 0,
    ) -> Any:
        """Back from the time-only trigger: check again (on the worker), then done or defer again.

        ``started_at`` (the first check of this try) bounds the wait by Airflow's sensor
        ``timeout`` as reschedule mode does; ``dag.test()`` resumes without the deferral's kwargs,
        and then the bound counts from now (the deadline in the database is what ends a wait).
        """
        self.poke_interval = float(self.check_interval_seconds)
        start = datetime.fromisoformat(started_at) if started_at else timezone.utcnow()
        return self._check_or_defer(context, start, deferrals=deferrals)

    def _check_or_defer(self, context: Context, started_at: datetime, *, deferrals: int) -> None:
        """One check; if devices are still waiting, defer to a time-only trigger for one interval."""
        if self.poke(context):
            self.log.info("Success criteria met after %d deferral(s). Exiting.", deferrals)
            return None
        elapsed = (timezone.utcnow() - started_at).total_seconds()
        if elapsed > self.timeout:  # Airflow's safety net, as in reschedule mode (after a check)
            message = (
                f"Sensor has timed out; run duration of {elapsed} seconds exceeds "
                f"the specified timeout of {self.timeout}."
            )
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowSensorTimeout(message)
        self.log.info(
            "Devices still waiting: deferring for %s s (deferral %d)", self.poke_interval, deferrals + 1
        )
        self.defer(
            # Time only: the triggerer learns a moment, never a connection or a bulk change.
            trigger=TimeDeltaTrigger(timedelta(seconds=self.poke_interval)),
            method_name="execute_complete",
            kwargs={"started_at": started_at.isoformat(), "deferrals": deferrals + 1},
            # Only if the event never comes (a triggerer down): the scheduler fails the wait at
            # Airflow's sensor timeout, as it would end a rescheduled one.
            timeout=timedelta(seconds=max(self.timeout - elapsed, 0.0) + self.poke_interval),
        )

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

    def audit_of(
        self, update: repo.DeviceUpdate, bc_id: int, *, request_text: str | None, response_text: str | None
    ) -> repo.AuditRow:
        """The audit row of a device this check settled (this step, this check's description)."""
        return repo.audit_of(
            update,
            bc_id,
            step=self.step,
            description=self.description,
            request_text=request_text,
            response_text=response_text,
        )

    def record(self, bc_id: int, updates: list[repo.DeviceUpdate], audit: list[repo.AuditRow]) -> None:
        with self.transaction() as conn:
            repo.record(conn, updates, audit)
