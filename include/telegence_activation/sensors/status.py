"""Reschedule-mode sensors: activation status and static IP provisioning status.

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

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.activation import MalformedResponse, parse_activation_answer
from telegence_activation.domain.ip import assigned_address, classify_ip_status, failure_text, ip_problem
from telegence_activation.domain.report import OUTCOME_UNKNOWN
from telegence_activation.exceptions import CredentialsProblem
from telegence_activation.hooks.telegence import TelegenceHook
from telegence_activation.operators.activation import ActivationSender
from telegence_activation.operators.base import BulkChangeTaskMixin
from telegence_activation.operators.static_ip import reconcile_ip_submissions

if TYPE_CHECKING:
    from airflow.sdk import Context

# The longest check timeout a run may ask for (the DAG's params cap it), and Airflow's own sensor
# timeout, set at parse time beyond it: our deadline always comes first.
MAX_CHECK_TIMEOUT_SECONDS = 48 * 3600
AIRFLOW_SENSOR_TIMEOUT = timedelta(seconds=MAX_CHECK_TIMEOUT_SECONDS) + timedelta(hours=24)


class _BulkChangeSensor(BulkChangeTaskMixin, BaseSensorOperator):
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
        # The interval is a per-run param; the timeout is not touched here (set at parse time).
        self.poke_interval = float(self.check_interval_seconds)
        return super().execute(context)

    def poke(self, context: Context) -> bool:
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
            repo.update_devices(conn, updates)
            repo.write_audit(conn, audit)


class ActivationStatusSensor(_BulkChangeSensor):
    """Wait until every sent device is ``active`` with its MDN (PENDING at the next step) or
    ``rejected`` (ERROR with the carrier's error).

    Devices whose activation answer was lost (UNKNOWN) are reconciled here too: their items are
    sent again, which the carrier answers with a 409 naming the request it already has (adopted
    under the device's own billing account) or accepts as new; never activated twice. A request id
    the carrier does not know (404) ends its devices ERROR, which ``retry-failed`` sends again.
    """

    step = repo.STEP_WAIT_ACTIVATION
    description = "Telegence New Service Activation: Activation Status"
    unknown_step = repo.STEP_ACTIVATE
    deadline_reason = "activation not confirmed by the carrier before the deadline ({deadline})"
    unknown_deadline_reason = (
        f"{OUTCOME_UNKNOWN}: activation answer lost and not reconciled before the deadline ({{deadline}}); "
        "the carrier may have taken the SIM: retry-failed reconciles it, never twice"
    )

    def check(self, hook: TelegenceHook, bc_id: int, bulk_change: dict[str, Any], context: Context) -> None:
        self._reconcile_unknown(bc_id, bulk_change, context)
        with self.transaction() as conn:
            pending = repo.pending_activation_requests(conn, bc_id)
        for request_id, devices in pending.items():
            response = hook.activation_status(request_id)
            updates: list[repo.DeviceUpdate] = []
            request_text = f"GET {hook.path('activation_status', request_id=request_id)}"
            if response.status == 404:
                updates = [
                    repo.DeviceUpdate(
                        device_id,
                        "ERROR",
                        self.step,
                        f"the carrier does not know activation request {request_id} (HTTP 404); "
                        "retry-failed sends the SIM again (a SIM the carrier has is found through its 409 answer)",
                    )
                    for device_id in devices.values()
                ]
                self.record(
                    bc_id,
                    updates,
                    [
                        repo.audit_of(
                            u,
                            bc_id,
                            description=self.description,
                            request_text=request_text,
                            response_text=response.text,
                        )
                        for u in updates
                    ],
                )
                continue
            if not response.ok:
                self.log.warning(
                    "Activation status of request %s: %s; next check", request_id, response.describe()
                )
                continue
            try:
                states = parse_activation_answer(response.body)
            except MalformedResponse as exc:
                self.log.warning(
                    "Activation status of request %s unreadable (%s); next check", request_id, exc
                )
                continue
            audit: list[repo.AuditRow] = []
            for iccid, device_id in devices.items():
                state = states.get(iccid)
                if state is None or state.outcome == "pending":
                    continue
                if state.outcome == "active":
                    update = repo.DeviceUpdate(
                        device_id,
                        "PENDING",
                        repo.STEP_REMOVE_CODES,
                        f"active, MDN {state.subscriber_number}",
                        subscriber_number=state.subscriber_number,
                        activated=True,
                    )
                else:
                    update = repo.DeviceUpdate(
                        device_id,
                        "ERROR",
                        self.step,
                        f"activation rejected by the carrier: {state.error or 'no reason given'}",
                    )
                updates.append(update)
                audit.append(
                    repo.audit_of(
                        update,
                        bc_id,
                        step=self.step,
                        description=self.description,
                        request_text=request_text,
                        response_text=json.dumps(state.__dict__),
                    )
                )
            self.record(bc_id, updates, audit)

    def _reconcile_unknown(self, bc_id: int, bulk_change: dict[str, Any], context: Context) -> None:
        """Send again the devices whose activation answer was lost: the carrier's 409 settles them."""
        with self.transaction() as conn:
            batches = repo.unknown_activation_batches(conn, bc_id)
            total = repo.next_batch_no(conn, bc_id)
        if not batches:
            return
        try:
            hook = self.carrier_hook(bulk_change)
        except CredentialsProblem as problem:
            self.log.warning("Cannot reconcile unknown activations of bulk change %s: %s", bc_id, problem)
            return
        sender = ActivationSender(self, hook, self.write_log(context))
        try:
            for batch_no in batches:
                counts = sender.send_batch(bc_id, batch_no, total, context["run_id"])
                self.log.info("Reconciled batch %d of bulk change %s: %s", batch_no + 1, bc_id, counts)
        finally:
            sender.close()


class IPProvisioningStatusSensor(_BulkChangeSensor):
    """Wait until every submitted device's static IP is done (valid address, PROCESSED) or failed (ERROR).

    Devices whose submission answer was lost (UNKNOWN at the request step) are looked up by
    subscriber number: a provisioning found is checked like any other; none found ends ERROR,
    which ``retry-failed`` submits again. This sensor never writes to the carrier.
    """

    step = repo.STEP_CHECK_IP
    description = "Telegence Static IP Provisioning: Check Status"
    unknown_step = repo.STEP_REQUEST_IP
    deadline_reason = "IP provisioning not confirmed by the carrier before the deadline ({deadline})"
    unknown_deadline_reason = (
        f"{OUTCOME_UNKNOWN}: static IP provisioning answer lost and not reconciled before the deadline "
        "({deadline}); retry-failed asks the carrier before submitting again"
    )

    def check(self, hook: TelegenceHook, bc_id: int, bulk_change: dict[str, Any], context: Context) -> None:
        with self.transaction() as conn:
            unknown = repo.devices_at_step(conn, bc_id, repo.STEP_REQUEST_IP, "UNKNOWN")
        if unknown:
            reconcile_ip_submissions(self, hook, bc_id, unknown, resubmit=False)
        with self.transaction() as conn:
            devices = repo.devices_at_step(conn, bc_id, self.step)
        by_batch: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for d in devices:
            by_batch[d["ip_batch_id"]].append(d)
        for batch_id, batch_devices in by_batch.items():
            response = hook.provisioning_status(batch_id)
            if not response.ok or not isinstance(response.body, list):
                self.log.warning("IP status of batch %s: %s; next check", batch_id, response.describe())
                continue
            entries = {str(e.get("subscriberNumber")): e for e in response.body if isinstance(e, dict)}
            updates: list[repo.DeviceUpdate] = []
            audit: list[repo.AuditRow] = []
            for d in batch_devices:
                entry = entries.get(str(d["subscriber_number"]))
                if entry is None:
                    update = repo.DeviceUpdate(
                        int(d["id"]),
                        "ERROR",
                        self.step,
                        f"API error: subscriber {d['subscriber_number']} missing from the IP provisioning status "
                        f"reply of batch {batch_id}",
                    )
                else:
                    progress = classify_ip_status(entry)
                    if progress == "in_progress":
                        continue
                    address = assigned_address(entry)
                    if progress == "failed":
                        update = repo.DeviceUpdate(int(d["id"]), "ERROR", self.step, failure_text(entry))
                    elif problem := ip_problem(address, d["customer_ip_range"]):
                        update = repo.DeviceUpdate(
                            int(d["id"]), "ERROR", self.step, problem, assigned_ip=None
                        )
                    else:
                        update = repo.DeviceUpdate(
                            int(d["id"]),
                            "PROCESSED",
                            repo.STEP_DONE,
                            f"Service activation complete. Assigned IP: {address}",
                            assigned_ip=address,
                        )
                updates.append(update)
                audit.append(
                    repo.audit_of(
                        update,
                        bc_id,
                        step=self.step,
                        description=self.description,
                        request_text=f"GET {hook.path('provisioning_status')} batch-id: {batch_id}",
                        response_text=json.dumps(entry) if entry else response.text,
                    )
                )
            self.record(bc_id, updates, audit)
