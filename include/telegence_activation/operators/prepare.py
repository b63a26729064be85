"""Step 1a: prepare a bulk change: claim it for this run, check credentials, plan activation batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.activation import group_leaders
from telegence_activation.domain.sizing import AUTO, activation_sizing
from telegence_activation.exceptions import BulkChangeNotFound, BulkChangeNotOwned, CredentialsProblem
from telegence_activation.operators.base import DESC_ACTIVATE, BulkChangeTaskMixin, not_owned_message
from telegence_activation.repository import devices as device_rows

# Slots of the carrier pool an activation run may use when the DAG does not say (its
# max_active_tis_per_dagrun, TELEGENCE_MAX_ACTIVE_BATCHES_PER_RUN).
DEFAULT_CARRIER_SLOTS = 8


def max_map_length() -> int:
    """Airflow's ``[core] max_map_length`` as this process reads it (the api-server enforces its own:
    the two must agree, as they do when every component reads the same settings)."""
    from airflow.configuration import conf

    return conf.getint("core", "max_map_length", fallback=1024)


if TYPE_CHECKING:
    from airflow.sdk import Context


class PrepareBulkChangeOperator(BulkChangeTaskMixin, BaseOperator):
    """Load a bulk change, check its carrier credentials, plan activation batches.

    Returns the groups of batches to send, ``[first batch, how many]`` per ``activate`` instance
    (a few bytes per group; the devices themselves stay in the database). How many batches a group
    holds is chosen from the batches and the carrier slots (``domain.sizing``) unless
    ``batches_per_task`` is an integer, and never so few that the groups exceed Airflow's
    ``[core] max_map_length``. An empty bulk change, or one whose credentials are missing or
    read-only, returns ``[]`` (the latter after failing every device with the reason). Nothing here
    holds the devices in memory: batches are assigned by one set-based statement.

    :param bulk_change_id: the bulk change to run (templated).
    :param batch_size: devices per activation call, at most 200 (templated).
    :param batches_per_task: batches per activate task instance (templated): ``"auto"`` (or 0) to
        choose from the size and ``carrier_slots``, else an integer override.
    :param carrier_slots: how many activate instances may call the carrier at once (the DAG's
        ``max_active_tis_per_dagrun`` for ``activate``, bounded by the carrier pool).
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
        batches_per_task: Any = AUTO,
        carrier_slots: int = DEFAULT_CARRIER_SLOTS,
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
        self.carrier_slots = carrier_slots
        self.addition_bulk_change_id = addition_bulk_change_id
        self.carrier_data_group = carrier_data_group
        self.carrier_rate_pool = carrier_rate_pool
        self.activation_db_conn_id = activation_db_conn_id
        self.telegence_conn_id = telegence_conn_id

    def execute(self, context: Context) -> list[list[int]]:
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
            unfinished = device_rows.count_to_run(conn, bc_id)
        if not unfinished:
            self.log.warning("No unprocessed device changes found for bulk change %s", bc_id)
            return []

        try:
            self.carrier_hook(bulk_change)
        except CredentialsProblem as problem:
            reason = str(problem)
            self.log.error("%s: failing %d device(s) of bulk change %s", reason, unfinished, bc_id)
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
            device_rows.assign_batches_in_order(
                conn, bc_id, int(self.batch_size), repo.next_batch_no(conn, bc_id)
            )
            batches = repo.batches_to_send(conn, bc_id)  # one int per batch: 5,000 at 1,000,000 devices
        span = batches[-1] - batches[0] + 1 if batches else 0
        sizing = activation_sizing(span, int(self.carrier_slots), max_map_length(), self.batches_per_task)
        groups = [
            [first, sizing.batches_per_task] for first in group_leaders(batches, sizing.batches_per_task)
        ]
        self.log.info(
            "Bulk change %s: %d unfinished device(s), %d batch(es) to send in %d activate instance(s) of %d "
            "batch(es) (%s)",
            bc_id,
            unfinished,
            len(batches),
            len(groups),
            sizing.batches_per_task,
            sizing.reason,
        )
        return groups
