"""Step 1a: prepare a bulk change: claim it for this run, check credentials, plan activation batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.activation import group_leaders, plan_batches
from telegence_activation.exceptions import BulkChangeNotFound, BulkChangeNotOwned, CredentialsProblem
from telegence_activation.operators.base import DESC_ACTIVATE, BulkChangeTaskMixin, not_owned_message

if TYPE_CHECKING:
    from airflow.sdk import Context


class PrepareBulkChangeOperator(BulkChangeTaskMixin, BaseOperator):
    """Load a bulk change, check its carrier credentials, plan activation batches.

    Returns the batch numbers that still hold devices to send (small: one int per batch); the
    devices themselves stay in the database. An empty bulk change, or one whose credentials are
    missing or read-only, returns ``[]`` (the latter after failing every device with the reason).

    :param bulk_change_id: the bulk change to run (templated).
    :param batch_size: devices per activation call, at most 200 (templated).
    :param batches_per_task: batches per activate task instance (templated); the output then holds
        the first batch of each group.
    :param addition_bulk_change_id: overrides the stored related bulk change (templated).
    :param carrier_data_group: overrides the stored carrier data group (templated).
    :param carrier_rate_pool: overrides the stored carrier rate pool (templated).
    :param activation_db_conn_id: the activation database connection (templated).
    :param telegence_conn_id: the carrier connection override (templated); by default
        ``telegence_sp_<service provider>``, else ``telegence_default``.
    """

    template_fields: Sequence[str] = (
        "bulk_change_id",
        "batch_size",
        "batches_per_task",
        "addition_bulk_change_id",
        "carrier_data_group",
        "carrier_rate_pool",
        "activation_db_conn_id",
        "telegence_conn_id",
    )

    def __init__(
        self,
        *,
        bulk_change_id: Any,
        batch_size: Any = 200,
        batches_per_task: Any = 1,
        addition_bulk_change_id: Any = None,
        carrier_data_group: Any = None,
        carrier_rate_pool: Any = None,
        activation_db_conn_id: str = ACTIVATION_DB_CONN_ID,
        telegence_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bulk_change_id = bulk_change_id
        self.batch_size = batch_size
        self.batches_per_task = batches_per_task
        self.addition_bulk_change_id = addition_bulk_change_id
        self.carrier_data_group = carrier_data_group
        self.carrier_rate_pool = carrier_rate_pool
        self.activation_db_conn_id = activation_db_conn_id
        self.telegence_conn_id = telegence_conn_id

    def execute(self, context: Context) -> list[int]:
        bc_id, run_id = self.bulk_change, context["run_id"]
        with self.transaction() as conn:
            # One run owns a bulk change: claimed atomically, or this run fails changing nothing.
            bulk_change = repo.claim_bulk_change(conn, bc_id, run_id)
            if bulk_change is None:
                existing = repo.get_bulk_change(conn, bc_id)
                if existing is None:
                    raise BulkChangeNotFound(f"bulk change {bc_id} does not exist")
                raise BulkChangeNotOwned(not_owned_message(existing, run_id))
            overrides = {
                "addition_bulk_change_id": self.addition_bulk_change_id,
                "carrier_data_group": self.carrier_data_group,
                "carrier_rate_pool": self.carrier_rate_pool,
            }
            for column, value in overrides.items():
                if value not in (None, ""):
                    repo.set_bulk_change_field(conn, bc_id, column, value)
            # API_FAILED devices are terminal but retryable: a rerun sends them again.
            unfinished = repo.unfinished_devices(conn, bc_id) + repo.retryable_devices(conn, bc_id)
        if not unfinished:
            self.log.warning("No unprocessed device changes found for bulk change %s", bc_id)
            return []

        try:
            self.carrier_hook(bulk_change)
        except CredentialsProblem as problem:
            reason = str(problem)
            self.log.error("%s: failing %d device(s) of bulk change %s", reason, len(unfinished), bc_id)
            with self.transaction() as conn:
                # Only devices never sent: lines the carrier already works on, or may have taken
                # (UNKNOWN), are left to the sensors.
                repo.fail_unfinished(
                    conn,
                    bc_id,
                    reason=reason,
                    description=f"{DESC_ACTIVATE}: credentials",
                    step_filter=repo.STEP_ACTIVATE,
                    status_filter="NEW",
                )
                repo.set_bulk_change_status(conn, bc_id, "ERROR", reason)
            return []

        with self.transaction() as conn:
            repo.set_bulk_change_status(conn, bc_id, "PROCESSING")
            repo.start_step(conn, bc_id, repo.STEP_ACTIVATE)
            new_ids = repo.unbatched_device_ids(conn, bc_id)
            if new_ids:
                batches = plan_batches(new_ids, int(self.batch_size))
                repo.assign_batches(conn, batches, repo.next_batch_no(conn, bc_id))
            to_send = group_leaders(repo.batches_to_send(conn, bc_id), int(self.batches_per_task))
        self.log.info(
            "Bulk change %s: %d unfinished device(s), %d batch(es) to send",
            bc_id,
            len(unfinished),
            len(to_send),
        )
        return to_send
