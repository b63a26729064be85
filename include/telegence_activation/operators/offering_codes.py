"""Step 1d: remove the ``removeOfferingCode`` characteristics from lines once they are active."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.activation import remove_offering_code_patch, remove_offering_codes
from telegence_activation.domain.sizing import AUTO, patch_concurrency
from telegence_activation.exceptions import CarrierUnavailable
from telegence_activation.hooks.telegence import TelegenceHook
from telegence_activation.operators.base import BulkChangeTaskMixin, CarrierWriteLog
from telegence_activation.repository import devices as device_rows

if TYPE_CHECKING:
    from airflow.sdk import Context

# Lines waiting for their codes to be removed (API_FAILED: the carrier was unavailable last time).
WAITING = ("PENDING", "API_FAILED")


class RemoveOfferingCodesOperator(BulkChangeTaskMixin, BaseOperator):
    """PATCH the stored ``removeOfferingCode`` characteristics onto lines that are now active.

    Lines are read in keyset pages (never all at once) and patched ``max_parallel_calls`` at a time
    (``"auto"``: the carrier slots, fewer for few lines; see ``domain.sizing``); results are committed
    every ``commit_every`` devices, on one connection per task instance, so a crash loses at most
    that many records (their PATCHes are sent
    again by the retry, which only removes a code that is already gone; every PATCH is recorded
    before it is sent). A line the carrier stayed unavailable for ends API_FAILED and the task
    fails, so its retry patches exactly those again.

    :param bulk_change_id: the bulk change (templated).
    :param max_parallel_calls: concurrent PATCH calls of this task: ``"auto"`` or an integer (templated).
    :param carrier_slots: the carrier slots ``"auto"`` sizes from.
    :param commit_every: devices per database transaction.
    :param activation_db_conn_id: the activation database connection (templated).
    :param telegence_conn_id: the carrier connection override (templated).
    """

    template_fields: Sequence[str] = (
        "bulk_change_id",
        "max_parallel_calls",
        "activation_db_conn_id",
        "telegence_conn_id",
    )

    def __init__(
        self,
        *,
        bulk_change_id: Any,
        activation_db_conn_id: str = ACTIVATION_DB_CONN_ID,
        telegence_conn_id: str | None = None,
        max_parallel_calls: Any = AUTO,
        carrier_slots: int = 8,
        commit_every: int = 200,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bulk_change_id = bulk_change_id
        self.activation_db_conn_id = activation_db_conn_id
        self.telegence_conn_id = telegence_conn_id
        self.max_parallel_calls = max_parallel_calls
        self.carrier_slots = carrier_slots
        self.commit_every = commit_every

    def execute(self, context: Context) -> dict[str, int]:
        with self.one_connection():
            return self._execute(context)

    def _execute(self, context: Context) -> dict[str, int]:
        bc_id = self.bulk_change
        with self.transaction() as conn:
            bulk_change = self.owned_bulk_change(conn, context)
            to_patch = device_rows.count_at_step(
                conn, bc_id, repo.STEP_REMOVE_CODES, WAITING, only_with_removals=True
            )
            repo.start_step(conn, bc_id, repo.STEP_REMOVE_CODES)
        counts = {"patched": 0, "failed": 0, "api_failed": 0}
        if to_patch:
            hook = self.carrier_hook(bulk_change)
            writes = self.write_log(context)
            callers = patch_concurrency(to_patch, int(self.carrier_slots), self.max_parallel_calls)
            self.log.info(
                "Bulk change %s: %d line(s) to patch, %d call(s) at a time", bc_id, to_patch, callers
            )
            try:
                with ThreadPoolExecutor(max_workers=callers) as pool:
                    # Pages of the lines with codes to remove: memory is one page, whatever the size.
                    for page in device_rows.step_pages(
                        self.transaction,
                        bc_id,
                        repo.STEP_REMOVE_CODES,
                        WAITING,
                        span=5 * device_rows.PAGE_SIZE,  # about one line in ten has codes to remove
                        only_with_removals=True,
                    ):
                        devices = [
                            d
                            for d in page
                            if d["offering_codes_removed_at"] is None
                            and remove_offering_codes(d["change_request"])
                        ]
                        for start in range(0, len(devices), int(self.commit_every)):
                            chunk = devices[start : start + int(self.commit_every)]
                            results = list(pool.map(lambda d: self._patch(hook, writes, bc_id, d), chunk))
                            with self.transaction() as conn:
                                repo.record(
                                    conn,
                                    [update for update, _ in results],
                                    [row for _, rows in results for row in rows],
                                )
                            for update, _ in results:
                                key = {"ERROR": "failed", "API_FAILED": "api_failed"}.get(
                                    update.status, "patched"
                                )
                                counts[key] += 1
            finally:
                writes.close()
        with self.transaction() as conn:
            repo.finish_step(conn, bc_id, repo.STEP_REMOVE_CODES)
        if counts["api_failed"]:
            raise CarrierUnavailable(
                f"{counts['api_failed']} line(s) of bulk change {bc_id} kept their offering codes: the carrier "
                "stayed unavailable; a retry or a clear patches exactly these again"
            )
        return {"patched": counts["patched"], "failed": counts["failed"]}

    @staticmethod
    def _patch(
        hook: TelegenceHook, writes: CarrierWriteLog, bc_id: int, device: dict[str, Any]
    ) -> tuple[repo.DeviceUpdate, list[repo.AuditRow]]:
        """PATCH every code of one line (stops at the first failure); the device's update and audit rows."""
        audit: list[repo.AuditRow] = []
        problem = None
        status = "PENDING"
        for code in remove_offering_codes(device["change_request"]):
            body = remove_offering_code_patch(code)
            recorder = writes.for_devices(repo.STEP_REMOVE_CODES, [int(device["id"])])
            response = hook.update_service(device["subscriber_number"], body, recorder=recorder)
            if response.exhausted:
                # Removing a code twice removes nothing: retried later, not failed.
                status = "API_FAILED"
                problem = f"offering code {code} not removed yet: carrier unavailable: {response.describe()}"
            elif not response.ok:
                status = "ERROR"
                problem = f"offering code {code} not removed: {response.describe()}: {response.text[:300]}"
            audit.append(
                repo.AuditRow(
                    bulk_change_id=bc_id,
                    device_change_id=int(device["id"]),
                    step=repo.STEP_REMOVE_CODES,
                    description="Telegence New Service Activation: Remove Offering Code",
                    request_text=f"PATCH {hook.path('service', subscriber_number=device['subscriber_number'])}\n"
                    + json.dumps(body),
                    response_text=repo.clip(response.text),
                    response_status=status,
                    has_errors=problem is not None,
                    error_text=problem,
                    carrier_write_id=recorder.last_id,
                )
            )
            if problem:
                break
        if problem:
            return repo.DeviceUpdate(int(device["id"]), status, repo.STEP_REMOVE_CODES, problem), audit
        update = repo.DeviceUpdate(
            int(device["id"]),
            "PENDING",
            repo.STEP_REMOVE_CODES,
            "active; offering codes removed",
            offering_codes_removed=True,
        )
        return update, audit
