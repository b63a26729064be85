"""Step 1b: activate, mapped over batches of at most 200 devices; the sender is shared with the
activation check, which reconciles devices whose outcome is unknown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.activation import (
    MalformedResponse,
    ServiceState,
    activation_item,
    billing_account_of,
    parse_activation_answer,
)
from telegence_activation.domain.settling import (
    Settled,
    requests_to_verify,
    settle_answer,
    settle_unanswered,
)
from telegence_activation.exceptions import CarrierUnavailable
from telegence_activation.hooks.telegence import TelegenceHook, TelegenceResponse
from telegence_activation.operators.base import DESC_ACTIVATE, BulkChangeTaskMixin, CarrierWriteLog

if TYPE_CHECKING:
    from airflow.sdk import Context


class ActivateBatchOperator(BulkChangeTaskMixin, BaseOperator):
    """Send batches of devices to Telegence for activation (map over the prepare step's output).

    Each mapped instance sends the batch ``batch_no`` — or, with ``batches_per_task`` k > 1, the
    batches ``batch_no`` .. ``batch_no + k - 1``, one after the other, each in its own transaction
    (fewer task instances for big bulk changes; see bench/results.md). Idempotent: only devices without
    an activation request id are sent, under row locks held until their results are committed. Every
    POST is recorded before it is sent (``carrier_write``). A POST whose answer was lost leaves its
    devices UNKNOWN; resending them is the reconciliation the contract gives (a SIM the carrier has
    is refused with 409 naming the existing request, adopted only under the device's own billing
    account), so nothing is activated twice. Devices the carrier could not take (unavailable) end
    API_FAILED; with UNKNOWN ones the task fails, so its retry (or a clear) sends exactly those again.

    :param bulk_change_id: the bulk change (templated).
    :param batch_no: the group to send, ``[first batch, how many]`` as ``prepare`` returns it
        (mapped); a plain batch number sends ``batches_per_task`` batches from it.
    :param batches_per_task: how many consecutive batches from a plain ``batch_no`` (templated).
    :param activation_db_conn_id: the activation database connection (templated).
    :param telegence_conn_id: the carrier connection; default ``telegence_sp_<service provider>``,
        else ``telegence_default`` (templated).
    """

    template_fields: Sequence[str] = (
        "bulk_change_id",
        "batches_per_task",
        "activation_db_conn_id",
        "telegence_conn_id",
    )

    def __init__(
        self,
        *,
        bulk_change_id: Any,
        batch_no: int | Sequence[int],
        batches_per_task: Any = 1,
        activation_db_conn_id: str = ACTIVATION_DB_CONN_ID,
        telegence_conn_id: str | None = None,
        max_rounds: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bulk_change_id = bulk_change_id
        self.batch_no = batch_no
        self.batches_per_task = batches_per_task
        self.activation_db_conn_id = activation_db_conn_id
        self.telegence_conn_id = telegence_conn_id
        self.max_rounds = max_rounds

    def execute(self, context: Context) -> dict[str, int]:
        with self.one_connection():  # every batch's transaction on one connection
            return self._execute(context)

    def _execute(self, context: Context) -> dict[str, int]:
        bc_id, (first, count) = self.bulk_change, batch_group(self.batch_no, self.batches_per_task)
        with self.transaction() as conn:
            # Batch numbers only grow (a rerun plans new ones after the highest), so the highest + 1 is
            # the total for the label; the group covers first .. first + count - 1 whatever the gaps.
            total = repo.next_batch_no(conn, bc_id)
            last = first + count - 1
            shown = min(last, max(total - 1, first))
            which = f"batch {first + 1}" if shown == first else f"batches {first + 1}-{shown + 1}"
            low, high = repo.batch_bounds(conn, bc_id, first), repo.batch_bounds(conn, bc_id, shown)
            iccids = f" (ICCID {low[0]}-{high[1]})" if low and high else ""
            # Always set: the map_index_template renders it, and an undefined name fails the task.
            context["batch_label"] = f"{which}/{total}{iccids}"  # type: ignore[typeddict-unknown-key]
            bulk_change = self.owned_bulk_change(conn, context)
        hook = self.carrier_hook(bulk_change)
        sender = ActivationSender(self, hook, self.write_log(context), max_rounds=self.max_rounds)
        summary = {"batch": first, "batches": last - first + 1, "sent": 0, "pending": 0, "error": 0}
        # One batch after the other: an instance holds one slot of the carrier pool, so it makes one
        # carrier call at a time and the pool keeps bounding the calls in flight.
        try:
            for batch_no in range(first, last + 1):
                for key, value in sender.send_batch(bc_id, batch_no, total, context["run_id"]).items():
                    summary[key] = summary.get(key, 0) + value
        finally:
            sender.close()
        self.log.info("%s of bulk change %s: %s", context["batch_label"], bc_id, summary)  # type: ignore[typeddict-item]
        unsent = summary.get("api_failed", 0) + summary.get("unknown", 0)
        if unsent:
            raise CarrierUnavailable(
                f"{unsent} device(s) of batches {first + 1}-{last + 1} are not settled: the carrier stayed "
                f"unavailable ({summary.get('api_failed', 0)} not taken, {summary.get('unknown', 0)} with the "
                "answer lost); a retry or a clear sends exactly these again, reconciled through the carrier's "
                "409 answer, and the activation check reconciles any left"
            )
        return summary


def batch_group(batch_no: Any, batches_per_task: Any = 1) -> tuple[int, int]:
    """``(first batch, how many)`` of a mapped ``batch_no``: ``[first, count]`` or a plain number."""
    if isinstance(batch_no, (list, tuple)):
        first, count = batch_no
        return int(first), max(1, int(count))
    per_task = 1 if batches_per_task in (None, "", "auto") else int(batches_per_task)
    return int(batch_no), max(1, per_task)


class ActivationSender:
    """Sends activation batches and settles the carrier's answers; shared by the activate task and
    the activation check (which reconciles devices whose outcome is unknown)."""

    def __init__(
        self, task: BulkChangeTaskMixin, hook: TelegenceHook, writes: CarrierWriteLog, *, max_rounds: int = 5
    ) -> None:
        self.task = task
        self.hook = hook
        self.writes = writes
        self.max_rounds = max_rounds

    def close(self) -> None:
        self.writes.close()

    def send_batch(self, bc_id: int, batch_no: int, total: int, run_id: str) -> dict[str, int]:
        """Send one batch in one transaction (its devices locked); the counts of its outcomes."""
        log = self.task.log  # type: ignore[attr-defined]
        with self.task.transaction() as conn:
            # Held until this batch is committed: a cancel waits for it, and a batch that starts
            # after a cancel sees it and sends nothing.
            state = repo.lock_for_sending(conn, bc_id)
            if state is not None and state["cancel_requested_at"] is not None:
                log.info(
                    "Bulk change %s was cancelled by %s: batch %d not sent",
                    bc_id,
                    state["cancelled_by"],
                    batch_no + 1,
                )
                return {}
            devices = repo.lock_batch(conn, bc_id, batch_no)
            if not devices:
                log.info("Batch %d of bulk change %s has nothing (left) to send", batch_no + 1, bc_id)
                return {}
            bulk_change = repo.get_bulk_change(conn, bc_id)
            if bulk_change is not None and bulk_change["status"] != "PROCESSING":  # a retry after the end
                repo.set_bulk_change_status(conn, bc_id, "PROCESSING", f"resumed by {run_id}")
            updates, audit = self._activate(bc_id, f"batch {batch_no + 1}/{total}", devices)
            repo.record(conn, updates, audit)
            repo.finish_step(conn, bc_id, repo.STEP_ACTIVATE)  # the last batch to finish sets the end
        counts = {"sent": len(devices)}
        for update in updates:
            counts[update.status.lower()] = counts.get(update.status.lower(), 0) + 1
        log.info("Batch %d/%d of bulk change %s: %s", batch_no + 1, total, bc_id, counts)
        return counts

    def _activate(
        self, bc_id: int, label: str, devices: list[dict[str, Any]]
    ) -> tuple[list[repo.DeviceUpdate], list[repo.AuditRow]]:
        """Send one batch (again for the devices a 409 did not name) until every device is settled."""
        ids = {d["iccid"]: int(d["id"]) for d in devices}
        accounts = {d["iccid"]: billing_account_of(d["change_request"]) for d in devices}
        items: dict[str, dict[str, Any]] = {}
        updates: list[repo.DeviceUpdate] = []
        audit: list[repo.AuditRow] = []
        path = self.hook.path("activate")
        write_id: int | None = None

        def done(outcome: Settled) -> None:
            step = repo.STEP_WAIT_ACTIVATION if outcome.status == "PENDING" else repo.STEP_ACTIVATE
            update = repo.DeviceUpdate(
                ids[outcome.iccid],
                outcome.status,
                step,
                outcome.details,
                activation_request_id=outcome.request_id,
            )
            updates.append(update)
            item = items.get(outcome.iccid)
            audit.append(
                repo.audit_of(
                    update,
                    bc_id,
                    step=repo.STEP_ACTIVATE,
                    description=DESC_ACTIVATE,
                    request_text=f"POST {path} ({label})\n{json.dumps(item) if item else ''}",
                    response_text=outcome.response_text,
                    carrier_write_id=write_id,
                )
            )

        for device in devices:
            try:
                items[device["iccid"]] = activation_item(device["change_request"])
            except ValueError as exc:
                done(Settled(device["iccid"], "ERROR", str(exc), None))

        remaining = list(items)
        rounds = 0
        last: TelegenceResponse | None = None
        while remaining and rounds < self.max_rounds:
            rounds += 1
            recorder = self.writes.for_devices(repo.STEP_ACTIVATE, [ids[i] for i in remaining])
            last = self.hook.activate([items[i] for i in remaining], recorder=recorder)
            write_id = recorder.last_id
            existing = self._existing_requests(requests_to_verify(last, remaining))
            settled = settle_answer(remaining, last, accounts, existing)
            for warning in settled.warnings:
                self.task.log.warning(warning)  # type: ignore[attr-defined]
            for outcome in settled.settled:
                done(outcome)
            remaining = settled.resend
        for outcome in settle_unanswered(remaining, rounds, last.text if last else None):
            done(outcome)
        return updates, audit

    def _existing_requests(self, request_ids: set[str]) -> dict[str, dict[str, ServiceState]]:
        """What the carrier says about the requests a 409 names (``{}`` for one it would not tell)."""
        found: dict[str, dict[str, ServiceState]] = {}
        for request_id in sorted(request_ids):
            response = self.hook.activation_status(request_id)
            if not response.ok:
                continue
            try:
                found[request_id] = parse_activation_answer(response.body)
            except MalformedResponse:
                continue
        return found
