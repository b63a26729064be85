"""Prepare, activate (mapped per batch), remove offering codes, and plan the static IP step."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.activation import (
    MalformedResponse,
    ServiceState,
    activation_item,
    billing_account_of,
    carrier_message,
    duplicate_verdict,
    group_leaders,
    parse_activation_answer,
    parse_duplicates,
    plan_batches,
    remove_offering_code_patch,
    remove_offering_codes,
)
from telegence_activation.domain.report import OUTCOME_UNKNOWN
from telegence_activation.exceptions import BulkChangeNotFound, BulkChangeNotOwned, CarrierUnavailable
from telegence_activation.hooks.telegence import TelegenceHook, TelegenceResponse
from telegence_activation.operators.base import (
    BulkChangeTaskMixin,
    CarrierWriteLog,
    CredentialsProblem,
    not_owned_message,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

DESC_ACTIVATE = "Telegence New Service Activation: Telegence API"
OUTCOME_UNKNOWN_ACTIVATION = (
    f"{OUTCOME_UNKNOWN}: activation (the carrier may have taken it; reconciled before any resend)"
)


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
    :param batch_no: the (first) batch to send (mapped).
    :param batches_per_task: how many consecutive batches this instance sends (templated).
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
        batch_no: int,
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
        bc_id, first, count = self.bulk_change, int(self.batch_no), max(1, int(self.batches_per_task))
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
            devices = repo.lock_batch(conn, bc_id, batch_no)
            if not devices:
                log.info("Batch %d of bulk change %s has nothing (left) to send", batch_no + 1, bc_id)
                return {}
            bulk_change = repo.get_bulk_change(conn, bc_id)
            if bulk_change is not None and bulk_change["status"] != "PROCESSING":  # a retry after the end
                repo.set_bulk_change_status(conn, bc_id, "PROCESSING", f"resumed by {run_id}")
            updates, audit = self._activate(bc_id, f"batch {batch_no + 1}/{total}", devices)
            repo.update_devices(conn, updates)
            repo.write_audit(conn, audit)
            repo.finish_step(conn, bc_id, repo.STEP_ACTIVATE)  # the last batch to finish sets the end
        counts = {"sent": len(devices)}
        for update in updates:
            counts[update.status.lower()] = counts.get(update.status.lower(), 0) + 1
        log.info("Batch %d/%d of bulk change %s: %s", batch_no + 1, total, bc_id, counts)
        return counts

    def _activate(
        self, bc_id: int, label: str, devices: list[dict[str, Any]]
    ) -> tuple[list[repo.DeviceUpdate], list[repo.AuditRow]]:
        hook = self.hook
        ids = {d["iccid"]: int(d["id"]) for d in devices}
        accounts = {d["iccid"]: billing_account_of(d["change_request"]) for d in devices}
        items: dict[str, dict[str, Any]] = {}
        updates: list[repo.DeviceUpdate] = []
        audit: list[repo.AuditRow] = []
        path = hook.path("activate")
        write_id: int | None = None

        def done(
            iccid: str, status: str, details: str, response_text: str | None, request_id: str | None = None
        ) -> None:
            step = repo.STEP_WAIT_ACTIVATION if status == "PENDING" else repo.STEP_ACTIVATE
            update = repo.DeviceUpdate(ids[iccid], status, step, details, activation_request_id=request_id)
            updates.append(update)
            item = items.get(iccid)
            audit.append(
                repo.audit_of(
                    update,
                    bc_id,
                    step=repo.STEP_ACTIVATE,
                    description=DESC_ACTIVATE,
                    request_text=f"POST {path} ({label})\n{json.dumps(item) if item else ''}",
                    response_text=response_text,
                    carrier_write_id=write_id,
                )
            )

        for device in devices:
            try:
                items[device["iccid"]] = activation_item(device["change_request"])
            except ValueError as exc:
                done(device["iccid"], "ERROR", str(exc), None)

        remaining = dict(items)
        rounds = 0
        last: TelegenceResponse | None = None
        while remaining and rounds < self.max_rounds:
            rounds += 1
            recorder = self.writes.for_devices(repo.STEP_ACTIVATE, [ids[i] for i in remaining])
            last = hook.activate(list(remaining.values()), recorder=recorder)
            write_id = recorder.last_id
            if last.exhausted:
                if last.outcome_unknown:
                    status, reason = "UNKNOWN", f"{OUTCOME_UNKNOWN_ACTIVATION}: {last.describe()}"
                else:
                    status, reason = "API_FAILED", f"carrier unavailable: {last.describe()}"
                for iccid in list(remaining):
                    done(iccid, status, reason, last.text)
                    del remaining[iccid]
                break
            if last.status == 409:
                try:
                    duplicates = parse_duplicates(last.body)
                except MalformedResponse as exc:
                    duplicates = {}
                    self.task.log.warning("Unreadable 409 answer: %s", exc)  # type: ignore[attr-defined]
                known = [iccid for iccid in remaining if iccid in duplicates]
                if not known:
                    message = carrier_message(last.body, last.text)
                    for iccid in list(remaining):
                        done(
                            iccid, "ERROR", f"carrier refused the activation: HTTP 409: {message}", last.text
                        )
                        del remaining[iccid]
                    break
                existing = self._existing_requests({duplicates[i] for i in known})
                for iccid in known:
                    request_id = duplicates[iccid]
                    state = existing.get(request_id, {}).get(iccid)
                    verdict = duplicate_verdict(accounts[iccid], state)
                    answer = json.dumps(
                        {
                            "sim": iccid,
                            "existingRequestId": request_id,
                            "billingAccount": state.billing_account if state else None,
                        }
                    )
                    if verdict == "adopt":
                        done(
                            iccid,
                            "PENDING",
                            f"activation already requested (request id {request_id}); recovered from the "
                            "carrier's duplicate-activation answer",
                            answer,
                            request_id,
                        )
                    elif verdict == "foreign":
                        done(
                            iccid,
                            "ERROR",
                            f"SIM {iccid} is already pending or active under another billing account "
                            f"({state.billing_account if state else '?'}, request {request_id}); not adopted",
                            answer,
                        )
                    else:
                        done(
                            iccid,
                            "UNKNOWN",
                            f"{OUTCOME_UNKNOWN_ACTIVATION}: the carrier has SIM {iccid} under request {request_id}, whose "
                            "billing account could not be read yet",
                            answer,
                        )
                    del remaining[iccid]
                continue  # send the rest of the batch, which the carrier refused only because of these
            if last.ok:
                states = parse_activation_answer(last.body)  # validated by the hook
                shared_id = next(iter(states.values())).request_id  # one request id for the whole call
                for iccid in list(remaining):
                    state = states.get(iccid)
                    if state is None:
                        # A 2xx accepts the whole array: the status checks settle this device.
                        done(
                            iccid,
                            "PENDING",
                            f"activation requested (request id {shared_id}); missing from the carrier's answer",
                            last.text,
                            shared_id,
                        )
                    else:
                        done(
                            iccid,
                            "PENDING",
                            f"activation requested (request id {state.request_id})",
                            json.dumps(state.__dict__),
                            state.request_id,
                        )
                    del remaining[iccid]
                break
            message = carrier_message(last.body, last.text or f"HTTP {last.status}")
            for iccid in list(remaining):
                done(
                    iccid,
                    "ERROR",
                    f"carrier refused the activation: HTTP {last.status}: {message}",
                    last.text,
                )
                del remaining[iccid]
            break
        for iccid in remaining:
            # Every round was answered with a 409 that took nothing: these were never activated.
            done(
                iccid,
                "API_FAILED",
                f"no usable carrier answer after {rounds} activation calls",
                last.text if last else None,
            )
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


class RemoveOfferingCodesOperator(BulkChangeTaskMixin, BaseOperator):
    """PATCH the stored ``removeOfferingCode`` characteristics onto lines that are now active.

    Lines are patched ``max_parallel_calls`` at a time; results are committed every
    ``commit_every`` devices, so a crash loses at most that many records (their PATCHes are sent
    again by the retry, which only removes a code that is already gone; every PATCH is recorded
    before it is sent). A line the carrier stayed unavailable for ends API_FAILED and the task
    fails, so its retry patches exactly those again.

    :param bulk_change_id: the bulk change (templated).
    :param max_parallel_calls: concurrent PATCH calls of this task.
    :param commit_every: devices per database transaction.
    :param activation_db_conn_id: the activation database connection (templated).
    :param telegence_conn_id: the carrier connection override (templated).
    """

    template_fields: Sequence[str] = ("bulk_change_id", "activation_db_conn_id", "telegence_conn_id")

    def __init__(
        self,
        *,
        bulk_change_id: Any,
        activation_db_conn_id: str = ACTIVATION_DB_CONN_ID,
        telegence_conn_id: str | None = None,
        max_parallel_calls: int = 4,
        commit_every: int = 50,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bulk_change_id = bulk_change_id
        self.activation_db_conn_id = activation_db_conn_id
        self.telegence_conn_id = telegence_conn_id
        self.max_parallel_calls = max_parallel_calls
        self.commit_every = commit_every

    def execute(self, context: Context) -> dict[str, int]:
        bc_id = self.bulk_change
        with self.transaction() as conn:
            bulk_change = self.owned_bulk_change(conn, context)
            devices = [
                d
                for status in ("PENDING", "API_FAILED")
                for d in repo.devices_at_step(
                    conn, bc_id, repo.STEP_REMOVE_CODES, status, only_with_removals=True
                )
                if d["offering_codes_removed_at"] is None and remove_offering_codes(d["change_request"])
            ]
            repo.start_step(conn, bc_id, repo.STEP_REMOVE_CODES)
        counts = {"patched": 0, "failed": 0, "api_failed": 0}
        if devices:
            hook = self.carrier_hook(bulk_change)
            writes = self.write_log(context)
            try:
                with ThreadPoolExecutor(max_workers=self.max_parallel_calls) as pool:
                    for start in range(0, len(devices), self.commit_every):
                        chunk = devices[start : start + self.commit_every]
                        results = list(pool.map(lambda d: self._patch(hook, writes, bc_id, d), chunk))
                        with self.transaction() as conn:
                            repo.update_devices(conn, [update for update, _ in results])
                            repo.write_audit(conn, [row for _, rows in results for row in rows])
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
            repo.update_devices(conn, updates)
            repo.write_audit(conn, audit)
        onward = sum(1 for u in updates if u.step == repo.STEP_REQUEST_IP and u.status == "PENDING")
        self.log.info(
            "Bulk change %s: %d activation failure(s), policy %s, %d device(s) go on to static IP",
            bc_id,
            failures,
            policy,
            onward,
        )
        return {"static_ip_devices": onward, "processed": sum(1 for u in updates if u.status == "PROCESSED")}
