"""Step 2a: decide which active devices go on to the static IP step (``on_activation_failure``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.operators.base import BulkChangeTaskMixin

if TYPE_CHECKING:
    from airflow.sdk import Context


class PlanStaticIPOperator(BulkChangeTaskMixin, BaseOperator):
    """Decide, per ``on_activation_failure``, which active devices go on to the static IP step.

    Devices that need no static IP are PROCESSED now. Under ``stop`` (the default), if any device
    of the bulk change failed activation, devices that need a static IP end ERROR with that reason;
    under ``continue`` they go on. Returns how many devices go on to the IP step.
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
        with self.transaction() as conn:
            self.owned_bulk_change(conn, context)
            failures = repo.activation_failures(conn, bc_id)
            devices = repo.devices_at_step(conn, bc_id, repo.STEP_REMOVE_CODES)
            updates: list[repo.DeviceUpdate] = []
            audit: list[repo.AuditRow] = []
            for d in devices:
                if not d["needs_static_ip"]:
                    update = repo.DeviceUpdate(
                        int(d["id"]), "PROCESSED", repo.STEP_DONE, f"activated, MDN {d['subscriber_number']}"
                    )
                elif policy == "stop" and failures:
                    update = repo.DeviceUpdate(
                        int(d["id"]),
                        "ERROR",
                        repo.STEP_REQUEST_IP,
                        f"static IP not requested: {failures} device(s) of this bulk change failed activation "
                        "and on_activation_failure=stop",
                    )
                else:
                    update = repo.DeviceUpdate(
                        int(d["id"]), "PENDING", repo.STEP_REQUEST_IP, "active; static IP to be requested"
                    )
                updates.append(update)
                audit.append(
                    repo.audit_of(
                        update,
                        bc_id,
                        description="Telegence New Service Activation: next step",
                        request_text=None,
                        response_text=None,
                    )
                )
            repo.record(conn, updates, audit)
        onward = sum(1 for u in updates if u.step == repo.STEP_REQUEST_IP and u.status == "PENDING")
        self.log.info(
            "Bulk change %s: %d activation failure(s), policy %s, %d device(s) go on to static IP",
            bc_id,
            failures,
            policy,
            onward,
        )
        return {"static_ip_devices": onward, "processed": sum(1 for u in updates if u.status == "PROCESSED")}
