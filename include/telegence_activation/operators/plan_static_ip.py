"""Step 2a: decide which active devices go on to the static IP step (``on_activation_failure``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.operators.base import BulkChangeTaskMixin
from telegence_activation.repository import devices as device_rows

if TYPE_CHECKING:
    from airflow.sdk import Context


class PlanStaticIPOperator(BulkChangeTaskMixin, BaseOperator):
    """Decide, per ``on_activation_failure``, which active devices go on to the static IP step.

    Devices that need no static IP are PROCESSED now. Under ``stop`` (the default), if any device
    of the bulk change failed activation, devices that need a static IP end ERROR with that reason;
    under ``continue`` they go on. Returns how many devices go on to the IP step. Devices are read
    in keyset pages of 1,000, each page written in one transaction on the task's one connection.
    """

    template_fields: Sequence[str] = ("bulk_change_id", "on_activation_failure", "activation_db_conn_id")

    def __init__(
        self,
        *,
        bulk_change_id: Any,
        on_activation_failure: Any = "stop",
        activation_db_conn_id: str = ACTIVATION_DB_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bulk_change_id = bulk_change_id
        self.on_activation_failure = on_activation_failure
        self.activation_db_conn_id = activation_db_conn_id

    def execute(self, context: Context) -> dict[str, int]:
        bc_id = self.bulk_change
        policy = str(self.on_activation_failure)
        if policy not in ("stop", "continue"):
            raise ValueError(f"on_activation_failure must be 'stop' or 'continue', got {policy!r}")
        onward = processed = 0
        with self.one_connection():
            with self.transaction() as conn:
                self.owned_bulk_change(conn, context)
                failures = repo.activation_failures(conn, bc_id)
            # Pages of 1,000 lines, each page's statuses and audit rows in one transaction: a rerun
            # after a crash picks up the devices still at the step; memory is one page.
            for devices in device_rows.step_pages(self.transaction, bc_id, repo.STEP_REMOVE_CODES):
                updates = [self._decide(d, policy, failures) for d in devices]
                audit = [
                    repo.audit_of(
                        update,
                        bc_id,
                        description="Telegence New Service Activation: next step",
                        request_text=None,
                        response_text=None,
                    )
                    for update in updates
                ]
                with self.transaction() as conn:
                    repo.record(conn, updates, audit)
                onward += sum(1 for u in updates if u.step == repo.STEP_REQUEST_IP and u.status == "PENDING")
                processed += sum(1 for u in updates if u.status == "PROCESSED")
        self.log.info(
            "Bulk change %s: %d activation failure(s), policy %s, %d device(s) go on to static IP",
            bc_id,
            failures,
            policy,
            onward,
        )
        return {"static_ip_devices": onward, "processed": processed}

    @staticmethod
    def _decide(device: dict[str, Any], policy: str, failures: int) -> repo.DeviceUpdate:
        if not device["needs_static_ip"]:
            return repo.DeviceUpdate(
                int(device["id"]),
                "PROCESSED",
                repo.STEP_DONE,
                f"activated, MDN {device['subscriber_number']}",
            )
        if policy == "stop" and failures:
            return repo.DeviceUpdate(
                int(device["id"]),
                "ERROR",
                repo.STEP_REQUEST_IP,
                f"static IP not requested: {failures} device(s) of this bulk change failed activation "
                "and on_activation_failure=stop",
            )
        return repo.DeviceUpdate(
            int(device["id"]), "PENDING", repo.STEP_REQUEST_IP, "active; static IP to be requested"
        )
