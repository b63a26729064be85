"""Step 3: wait until every submitted device's static IP is provisioned and valid, or failed."""

from __future__ import annotations

import json
from contextlib import closing
from typing import TYPE_CHECKING, Any

from telegence_activation import repository as repo
from telegence_activation.domain.ip import assigned_address, classify_ip_status, failure_text, ip_problem
from telegence_activation.domain.report import OUTCOME_UNKNOWN
from telegence_activation.hooks.telegence import TelegenceHook, TelegenceResponse
from telegence_activation.operators.request_static_ips import reconcile_ip_submissions
from telegence_activation.repository import devices as device_rows
from telegence_activation.sensors.base import BulkChangeSensor, read_ahead

if TYPE_CHECKING:
    from airflow.sdk import Context


class IPProvisioningStatusSensor(BulkChangeSensor):
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
        # Pages of the devices whose submission answer was lost (normally none).
        for unknown in device_rows.step_pages(self.transaction, bc_id, repo.STEP_REQUEST_IP, ("UNKNOWN",)):
            reconcile_ip_submissions(self, hook, bc_id, unknown, resubmit=False)
        with self.transaction() as conn:
            batch_ids = device_rows.ip_batch_ids_at_step(conn, bc_id, self.step)
        # One provisioning batch at a time (at most 200 devices): memory is a few batches, whatever the
        # size; the status calls of the next batches are in flight while one is recorded.
        with closing(read_ahead(batch_ids, hook.provisioning_status)) as answers:
            for batch_id, response in answers:
                self._settle_batch(hook, bc_id, batch_id, response)

    def _settle_batch(
        self, hook: TelegenceHook, bc_id: int, batch_id: str, response: TelegenceResponse
    ) -> None:
        """Record what one provisioning batch's status answer settles (nothing while it is in progress)."""
        with self.transaction() as conn:
            batch_devices = device_rows.devices_of_ip_batch(conn, bc_id, self.step, batch_id)
        if not batch_devices:
            return
        if not response.ok or not isinstance(response.body, list):
            self.log.warning("IP status of batch %s: %s; next check", batch_id, response.describe())
            return
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
                    update = repo.DeviceUpdate(int(d["id"]), "ERROR", self.step, problem, assigned_ip=None)
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
                self.audit_of(
                    update,
                    bc_id,
                    request_text=f"GET {hook.path('provisioning_status')} batch-id: {batch_id}",
                    response_text=json.dumps(entry) if entry else response.text,
                )
            )
        self.record(bc_id, updates, audit)
