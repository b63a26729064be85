"""Request static IPs for active devices: reserve addresses per PDP pool, submit provisioning batches."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.ip import (
    Subscriber,
    parse_batch_id,
    prior_submission,
    provisioning_request,
    reserved_addresses,
)
from telegence_activation.domain.models import StaticIPOptions
from telegence_activation.domain.report import OUTCOME_UNKNOWN
from telegence_activation.exceptions import CarrierUnavailable
from telegence_activation.hooks.telegence import TelegenceHook
from telegence_activation.operators.base import BulkChangeTaskMixin, CarrierWriteLog
from telegence_activation.repository import devices as device_rows

if TYPE_CHECKING:
    from airflow.sdk import Context

DESC_RESERVE = "Telegence Static IP Provisioning: Reserve IP Address"
DESC_SUBMIT = "Telegence Static IP Provisioning: Request IP Assignment"
DESC_RECONCILE = "Telegence Static IP Provisioning: Check Earlier Submission"
MAX_SUBSCRIBERS_PER_REQUEST = 200
GROUP = 5 * MAX_SUBSCRIBERS_PER_REQUEST  # devices handled together (calls of 200 each)
WAITING_STATUSES = ("PENDING", "API_FAILED", "UNKNOWN")


class RequestStaticIPsOperator(BulkChangeTaskMixin, BaseOperator):
    """Reserve addresses and submit provisioning batches for devices waiting at the IP request step.

    No carrier write is resent blindly: neither POST is retried after an answer the carrier may have
    applied (timeout, dropped connection, 5xx), since the contract gives them no duplicate answer.
    A device keeps its reserved address once stored. Before a device is submitted again (its
    earlier submission's answer was lost, or ``retry-failed`` reset it), the carrier is asked for
    its provisioning by subscriber number: one that is done or still running is adopted, never
    submitted twice. A reservation whose answer was lost is recorded (``carrier_write``) and listed
    in the report as addresses the carrier may hold. Skipped when no device needs a static IP.

    :param bulk_change_id: the bulk change (templated).
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bulk_change_id = bulk_change_id
        self.activation_db_conn_id = activation_db_conn_id
        self.telegence_conn_id = telegence_conn_id

    def _pages(self, bc_id: int, **filters: Any) -> Iterator[list[dict[str, Any]]]:
        """Groups of ``GROUP`` devices waiting at the request step (``filters``: reserved /
        submitted), read in pages of 1,000 lines, each in its own short transaction: memory is about
        two groups, whatever the size. Groups are whole multiples of 200 devices (the last one
        excepted), so a pool's reservations and submissions stay full calls (pages of lines alone
        made 200 calls of each where 167 do at 100,000 devices)."""
        held: list[dict[str, Any]] = []
        for page in device_rows.step_pages(
            self.transaction, bc_id, repo.STEP_REQUEST_IP, WAITING_STATUSES, **filters
        ):
            held.extend(page)
            while len(held) >= GROUP:
                yield held[:GROUP]
                held = held[GROUP:]
        if held:
            yield held

    def execute(self, context: Context) -> dict[str, int]:
        with self.one_connection():
            return self._execute(context)

    def _execute(self, context: Context) -> dict[str, int]:
        bc_id = self.bulk_change
        with self.transaction() as conn:
            bulk_change = self.owned_bulk_change(conn, context)
            waiting = device_rows.count_at_step(conn, bc_id, repo.STEP_REQUEST_IP, WAITING_STATUSES)
        if not waiting:
            raise AirflowSkipException(f"no device of bulk change {bc_id} needs a static IP")
        with self.transaction() as conn:
            repo.start_step(conn, bc_id, repo.STEP_REQUEST_IP)
            if bulk_change["status"] != "PROCESSING":  # a retry after the run had finished
                repo.set_bulk_change_status(conn, bc_id, "PROCESSING", f"resumed by {context['run_id']}")
        hook = self.carrier_hook(bulk_change)
        writes = self.write_log(context)
        unsettled = submitted = 0
        try:
            # 1. Devices maybe submitted before: asked about by subscriber number, never resubmitted blindly.
            for page in self._pages(bc_id, submitted=True):
                unsettled += reconcile_ip_submissions(self, hook, bc_id, page, resubmit=True)
            # 2. Addresses for devices without one.
            for page in self._pages(bc_id, reserved=False):
                unsettled += self._reserve(hook, writes, bc_id, page, requests_of(page))
            # 3. Provisioning for devices with an address, not submitted yet.
            for page in self._pages(bc_id, reserved=True, submitted=False):
                done, failed_submit = self._submit(hook, writes, bc_id, page, requests_of(page))
                submitted += done
                unsettled += failed_submit
        finally:
            writes.close()
        with self.transaction() as conn:
            repo.finish_step(conn, bc_id, repo.STEP_REQUEST_IP)
        if unsettled:
            raise CarrierUnavailable(
                f"{unsettled} device(s) could not get a static IP request through (the carrier stayed "
                "unavailable or its answer was lost); a retry or a clear does exactly these again, asking "
                "the carrier first about any earlier submission"
            )
        return {"submitted": submitted}

    def _reserve(
        self,
        hook: TelegenceHook,
        writes: CarrierWriteLog,
        bc_id: int,
        devices: list[dict[str, Any]],
        requests_by_id: dict[int, tuple[StaticIPOptions, str]],
    ) -> int:
        """Reserve one address per device, per PDP pool; return how many hit an unavailable carrier."""
        by_pool: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for d in devices:
            options, _ = requests_by_id[int(d["id"])]
            by_pool[options.PDPName].append(d)
        unavailable = 0
        for pdp, pool_devices in by_pool.items():
            for start in range(0, len(pool_devices), MAX_SUBSCRIBERS_PER_REQUEST):
                chunk = pool_devices[start : start + MAX_SUBSCRIBERS_PER_REQUEST]
                recorder = writes.for_devices(repo.STEP_REQUEST_IP, [int(d["id"]) for d in chunk])
                response = hook.reserve_ips(pdp, len(chunk), recorder=recorder)
                request_text = f"POST {hook.path('reserve_ips')}\n" + json.dumps(
                    {"pdpName": pdp, "ipQuantity": len(chunk)}
                )
                addresses: list[str] = []
                problem = None
                status = "ERROR"
                if response.outcome_unknown:
                    problem, status = (
                        f"IP reservation answer lost ({response.describe()}): the carrier may hold up to "
                        f"{len(chunk)} address(es) of {pdp} for it (write {recorder.last_id}, listed in the "
                        "report); reserved again on retry",
                        "API_FAILED",
                    )
                elif response.exhausted:
                    problem, status = f"IP reservation failed: {response.describe()}", "API_FAILED"
                elif not response.ok:
                    problem = f"IP reservation refused: HTTP {response.status}: {response.text[:300]}"
                else:
                    try:
                        addresses = reserved_addresses(response.body)
                    except ValueError as exc:
                        problem = f"IP reservation answer unreadable: {exc}"
                updates: list[repo.DeviceUpdate] = []
                audit: list[repo.AuditRow] = []
                for i, d in enumerate(chunk):
                    if problem is None and i < len(addresses):
                        update = repo.DeviceUpdate(
                            int(d["id"]),
                            "PENDING",
                            repo.STEP_REQUEST_IP,
                            f"reserved {addresses[i]} from {pdp}",
                            reserved_ip=addresses[i],
                        )
                    else:
                        reason = problem or (
                            f"PDP pool {pdp} is short of addresses: asked {len(chunk)}, got {len(addresses)}"
                        )
                        update = repo.DeviceUpdate(int(d["id"]), status, repo.STEP_REQUEST_IP, reason)
                    updates.append(update)
                    audit.append(
                        repo.audit_of(
                            update,
                            bc_id,
                            description=DESC_RESERVE,
                            request_text=request_text,
                            response_text=response.text,
                            carrier_write_id=recorder.last_id,
                        )
                    )
                unavailable += sum(1 for u in updates if u.status == "API_FAILED")
                with self.transaction() as conn:
                    repo.record(conn, updates, audit)
        return unavailable

    def _submit(
        self,
        hook: TelegenceHook,
        writes: CarrierWriteLog,
        bc_id: int,
        devices: list[dict[str, Any]],
        requests_by_id: dict[int, tuple[StaticIPOptions, str]],
    ) -> tuple[int, int]:
        """Submit provisioning batches per (PDP pool, billing account); return (submitted, unsettled)."""
        groups: dict[tuple[str, str], list[tuple[dict[str, Any], Subscriber]]] = defaultdict(list)
        for d in devices:
            options, billing_account = requests_by_id[int(d["id"])]
            subscriber = Subscriber(
                subscriber_number=d["subscriber_number"],
                ip_address=d["reserved_ip"],
                access_point_name=options.StaticIPAPN,
                lte_indicator=options.LteIndicator,
                default_apn=options.DefaultAPN,
            )
            groups[(options.PDPName, billing_account)].append((d, subscriber))
        effective_date = datetime.now(UTC).strftime("%Y-%m-%dZ")
        submitted = unsettled = 0
        for (pdp, ban), members in groups.items():
            for start in range(0, len(members), MAX_SUBSCRIBERS_PER_REQUEST):
                chunk = members[start : start + MAX_SUBSCRIBERS_PER_REQUEST]
                chunk_ids = [int(d["id"]) for d, _ in chunk]
                body = provisioning_request(pdp, ban, [s for _, s in chunk], effective_date)
                # Committed before the POST: whatever happens next, these devices are asked about
                # (by subscriber number) before they are ever submitted again.
                with self.transaction() as conn:
                    repo.mark_ip_submitted(conn, chunk_ids, submitted=True)
                recorder = writes.for_devices(repo.STEP_REQUEST_IP, chunk_ids)
                response = hook.submit_provisioning(body, recorder=recorder)
                batch_id = None
                status, problem = "ERROR", ""
                if response.outcome_unknown:
                    status = "UNKNOWN"
                    problem = (
                        f"{OUTCOME_UNKNOWN}: static IP provisioning ({response.describe()}); the carrier is "
                        "asked by subscriber number before any new submission"
                    )
                elif response.exhausted:
                    status, problem = "API_FAILED", f"IP provisioning request failed: {response.describe()}"
                elif not response.ok:
                    problem = f"IP provisioning refused: HTTP {response.status}: {response.text[:300]}"
                else:
                    try:
                        batch_id = parse_batch_id((response.body or {}).get("message"))
                        status = "PENDING"
                    except (ValueError, AttributeError) as exc:
                        status = "UNKNOWN"
                        problem = f"{OUTCOME_UNKNOWN}: static IP provisioning answer unreadable ({exc})"
                updates: list[repo.DeviceUpdate] = []
                audit: list[repo.AuditRow] = []
                for d, subscriber in chunk:
                    if batch_id:
                        update = repo.DeviceUpdate(
                            int(d["id"]),
                            "PENDING",
                            repo.STEP_CHECK_IP,
                            f"static IP provisioning requested (batch {batch_id})",
                            ip_batch_id=batch_id,
                        )
                    else:
                        update = repo.DeviceUpdate(int(d["id"]), status, repo.STEP_REQUEST_IP, problem)
                    updates.append(update)
                    own_entry = [
                        s for s in body["subscriber"] if s["subscriberNumber"] == subscriber.subscriber_number
                    ]
                    audit.append(
                        repo.audit_of(
                            update,
                            bc_id,
                            step=repo.STEP_REQUEST_IP,
                            description=DESC_SUBMIT,
                            request_text=f"POST {hook.path('provisioning')} ({len(chunk)} subscribers)\n"
                            + json.dumps({**body, "subscriber": own_entry}),
                            response_text=response.text,
                            carrier_write_id=recorder.last_id,
                        )
                    )
                submitted += len(chunk) if batch_id else 0
                unsettled += sum(1 for u in updates if u.status in ("API_FAILED", "UNKNOWN"))
                with self.transaction() as conn:
                    repo.record(conn, updates, audit)
                    if status in ("ERROR", "API_FAILED"):  # a definite refusal or never sent: nothing taken
                        repo.mark_ip_submitted(conn, chunk_ids, submitted=False)
        return submitted, unsettled


def requests_of(devices: list[dict[str, Any]]) -> dict[int, tuple[StaticIPOptions, str]]:
    """The static IP options and billing account of each device, by device change id."""
    return {
        int(d["id"]): (StaticIPOptions.model_validate(d["static_ip"]), str(d["billing_account"]))
        for d in devices
    }


def reconcile_ip_submissions(
    task: BulkChangeTaskMixin,
    hook: TelegenceHook,
    bc_id: int,
    devices: list[dict[str, Any]],
    *,
    resubmit: bool,
) -> int:
    """Ask the carrier, by subscriber number, about devices that may have been submitted before.

    A provisioning done or still running is adopted (the device goes on to the status check with
    that batch); one the carrier failed, or none, frees the device: back to the request step when
    ``resubmit`` (the request task), else ERROR saying ``retry-failed`` submits it (the status
    check, which never writes). Returns how many stay unknown (no usable answer)."""
    updates: list[repo.DeviceUpdate] = []
    audit: list[repo.AuditRow] = []
    freed: list[int] = []
    unknown = 0
    for d in devices:
        mdn = str(d["subscriber_number"])
        response = hook.provisioning_status_of(mdn)
        verdict, batch_id = prior_submission(response.status, response.body, mdn)
        if verdict == "taken":
            update = repo.DeviceUpdate(
                int(d["id"]),
                "PENDING",
                repo.STEP_CHECK_IP,
                f"static IP provisioning found at the carrier (batch {batch_id}); not submitted again",
                ip_batch_id=batch_id,
            )
        elif verdict in ("failed", "not_submitted"):
            freed.append(int(d["id"]))
            found = "no static IP provisioning running at the carrier" + (
                f" (batch {batch_id} failed)" if batch_id else ""
            )
            update = repo.DeviceUpdate(
                int(d["id"]),
                "PENDING" if resubmit else "ERROR",
                repo.STEP_REQUEST_IP,
                f"{found}; to be submitted"
                if resubmit
                else f"{found} after an earlier answer was lost; retry-failed submits it",
            )
        else:
            unknown += 1
            update = repo.DeviceUpdate(
                int(d["id"]),
                "UNKNOWN",
                repo.STEP_REQUEST_IP,
                f"{OUTCOME_UNKNOWN}: static IP provisioning: {response.describe()}",
            )
        updates.append(update)
        audit.append(
            repo.audit_of(
                update,
                bc_id,
                description=DESC_RECONCILE,
                request_text=f"GET {hook.path('provisioning_status')} subscriber-number: {mdn}",
                response_text=response.text,
                step=repo.STEP_REQUEST_IP,
            )
        )
    with task.transaction() as conn:
        repo.record(conn, updates, audit)
        repo.mark_ip_submitted(conn, freed, submitted=False)
    return unknown
