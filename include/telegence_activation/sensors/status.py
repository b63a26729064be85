"""Reschedule-mode sensors: activation status and static IP provisioning status.

Each poke asks the carrier about every device still waiting, stores what is final (with an audit
row), and returns False while anything is left; the worker slot is freed between pokes. Interval
and timeout come from the DAG params: after ``timeout / interval + 1`` checks every device still
waiting ends ERROR with "... not confirmed after N checks" — nothing is left pending forever. Airflow's own sensor
``timeout`` is set beyond ours as a safety net.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.activation import MalformedResponse, parse_activation_answer
from telegence_activation.domain.ip import assigned_address, classify_ip_status, failure_text, ip_problem
from telegence_activation.hooks.telegence import TelegenceHook
from telegence_activation.operators.activation import _clip
from telegence_activation.operators.base import BulkChangeTaskMixin, telegence_hook_for

if TYPE_CHECKING:
    from airflow.sdk import Context


class _BulkChangeSensor(BulkChangeTaskMixin, BaseSensorOperator):
    """Shared sensor glue: interval/timeout from templated params, our own deadline per step."""

    template_fields: Sequence[str] = ("bulk_change_id", "check_interval_seconds", "check_timeout_seconds")
    step: str
    timeout_reason: str

    def __init__(
        self,
        *,
        bulk_change_id: Any,
        check_interval_seconds: Any = 60,
        check_timeout_seconds: Any = 3600,
        activation_db_conn_id: str = ACTIVATION_DB_CONN_ID,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.bulk_change_id = bulk_change_id
        self.check_interval_seconds = check_interval_seconds
        self.check_timeout_seconds = check_timeout_seconds
        self.activation_db_conn_id = activation_db_conn_id

    def execute(self, context: Context) -> Any:
        self.poke_interval = float(self.check_interval_seconds)
        # Safety net only: our poke fails what is left at check_timeout_seconds, well before this.
        self.timeout = float(self.check_timeout_seconds) + 10 * self.poke_interval + 600
        return super().execute(context)

    def poke(self, context: Context) -> bool:
        bc_id = self.bulk_change
        with self.transaction() as conn:
            bulk_change = repo.get_bulk_change(conn, bc_id)
            if bulk_change is None:
                raise AirflowFailException(f"bulk change {bc_id} does not exist")
            repo.start_step(conn, bc_id, self.step)
        if not self.waiting(bc_id):
            with self.transaction() as conn:
                repo.finish_step(conn, bc_id, self.step)
            return True
        hook = telegence_hook_for(int(bulk_change["service_provider_id"]), require_write=False)
        self.check(hook, bc_id)
        # Reschedules are counted by Airflow and reset when the task is cleared, so a cleared
        # sensor gets its whole time budget again.
        checks = int(context.get("task_reschedule_count", 0) or 0) + 1
        max_checks = max(
            1, math.ceil(float(self.check_timeout_seconds) / float(self.check_interval_seconds)) + 1
        )
        with self.transaction() as conn:
            if checks >= max_checks and self.waiting(bc_id):
                failed = repo.fail_unfinished(
                    conn,
                    bc_id,
                    reason=f"{self.timeout_reason} after {checks} checks",
                    description=f"Telegence New Service Activation: {self.step} timeout",
                    step_filter=self.step,
                )
                self.log.warning(
                    "Bulk change %s: %d device(s) failed at the %s timeout", bc_id, failed, self.step
                )
        if self.waiting(bc_id):
            self.log.info(
                "Bulk change %s: devices still waiting after check %d; checking again later", bc_id, checks
            )
            return False
        with self.transaction() as conn:
            repo.finish_step(conn, bc_id, self.step)
        return True

    def waiting(self, bc_id: int) -> bool:
        with self.transaction() as conn:
            return repo.any_at_step(conn, bc_id, self.step)

    def check(self, hook: TelegenceHook, bc_id: int) -> None:
        raise NotImplementedError


class ActivationStatusSensor(_BulkChangeSensor):
    """Wait until every sent device is ``active`` (MDN stored) or ``rejected`` (ERROR with the carrier's error)."""

    step = repo.STEP_WAIT_ACTIVATION
    timeout_reason = "activation not confirmed"

    def check(self, hook: TelegenceHook, bc_id: int) -> None:
        with self.transaction() as conn:
            pending = repo.pending_activation_requests(conn, bc_id)
        for request_id, devices in pending.items():
            response = hook.activation_status(request_id)
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
            updates: list[repo.DeviceUpdate] = []
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
                        repo.STEP_WAIT_ACTIVATION,
                        f"activation rejected by the carrier: {state.error or 'no reason given'}",
                    )
                updates.append(update)
                audit.append(
                    repo.audit_of(
                        update,
                        bc_id,
                        step=repo.STEP_WAIT_ACTIVATION,
                        description="Telegence New Service Activation: Activation Status",
                        request_text=f"GET {hook.path('activation_status', request_id=request_id)}",
                        response_text=json.dumps(state.__dict__),
                    )
                )
            with self.transaction() as conn:
                repo.update_devices(conn, updates)
                repo.write_audit(conn, audit)


class IPProvisioningStatusSensor(_BulkChangeSensor):
    """Wait until every submitted device's static IP is done (valid address, PROCESSED) or failed (ERROR)."""

    step = repo.STEP_CHECK_IP
    timeout_reason = "IP provisioning not confirmed"

    def check(self, hook: TelegenceHook, bc_id: int) -> None:
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
                customer_range = d["customer_ip_range"]
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
                    elif problem := ip_problem(address, customer_range):
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
                        description="Telegence Static IP Provisioning: Check Status",
                        request_text=f"GET {hook.path('provisioning_status')} batch-id: {batch_id}",
                        response_text=_clip(json.dumps(entry) if entry else response.text),
                    )
                )
            with self.transaction() as conn:
                repo.update_devices(conn, updates)
                repo.write_audit(conn, audit)
