"""Step 1c: wait until every sent device is active (with its MDN) or rejected; reconcile lost answers."""

from __future__ import annotations

import json
from contextlib import closing
from itertools import islice
from typing import TYPE_CHECKING, Any

from telegence_activation import repository as repo
from telegence_activation.domain.activation import MalformedResponse, parse_activation_answer
from telegence_activation.domain.report import OUTCOME_UNKNOWN
from telegence_activation.exceptions import CredentialsProblem
from telegence_activation.hooks.telegence import TelegenceHook, TelegenceResponse
from telegence_activation.operators.activate import ActivationSender
from telegence_activation.repository import devices as device_rows
from telegence_activation.sensors.base import BulkChangeSensor, read_ahead

if TYPE_CHECKING:
    from airflow.sdk import Context

# Activation requests read and recorded per transaction (5 x 200 devices).
REQUESTS_PER_TRANSACTION = 5


class ActivationStatusSensor(BulkChangeSensor):
    """Wait until every sent device is ``active`` with its MDN (PENDING at the next step) or
    ``rejected`` (ERROR with the carrier's error).

    Devices whose activation answer was lost (UNKNOWN) are reconciled here too: their items are
    sent again, which the carrier answers with a 409 naming the request it already has (adopted
    under the device's own billing account) or accepts as new; never activated twice. A request id
    the carrier does not know (404) ends its devices ERROR, which ``retry-failed`` sends again.
    """

    step = repo.STEP_WAIT_ACTIVATION
    description = "Telegence New Service Activation: Activation Status"
    unknown_step = repo.STEP_ACTIVATE
    deadline_reason = "activation not confirmed by the carrier before the deadline ({deadline})"
    unknown_deadline_reason = (
        f"{OUTCOME_UNKNOWN}: activation answer lost and not reconciled before the deadline ({{deadline}}); "
        "the carrier may have taken the SIM: retry-failed reconciles it, never twice"
    )

    def check(self, hook: TelegenceHook, bc_id: int, bulk_change: dict[str, Any], context: Context) -> None:
        self._reconcile_unknown(bc_id, bulk_change, context)
        with self.transaction() as conn:
            request_ids = device_rows.pending_activation_request_ids(conn, bc_id)
        # REQUESTS_PER_TRANSACTION requests at a time (about 1,000 devices): one read, their status
        # calls, one transaction with their updates and audit rows. Memory is one chunk, whatever the
        # size. The status calls of the next requests are in flight while a chunk is recorded.
        with closing(read_ahead(request_ids, hook.activation_status)) as answers:
            for start in range(0, len(request_ids), REQUESTS_PER_TRANSACTION):
                chunk = request_ids[start : start + REQUESTS_PER_TRANSACTION]
                with self.transaction() as conn:
                    by_request = device_rows.devices_of_activation_requests(conn, bc_id, chunk)
                pending_updates: list[repo.DeviceUpdate] = []
                pending_audit: list[repo.AuditRow] = []
                try:
                    for request_id, response in islice(answers, len(chunk)):
                        devices = by_request.get(request_id)
                        if devices:
                            self._check_request(
                                hook, bc_id, request_id, devices, response, pending_updates, pending_audit
                            )
                finally:  # what was learnt before a failure is kept
                    self.record(bc_id, pending_updates, pending_audit)

    def _check_request(
        self,
        hook: TelegenceHook,
        bc_id: int,
        request_id: str,
        devices: dict[str, int],
        response: TelegenceResponse,
        pending_updates: list[repo.DeviceUpdate],
        pending_audit: list[repo.AuditRow],
    ) -> None:
        """Settle one activation request from its status answer; its devices' updates and audit rows
        are appended."""
        updates: list[repo.DeviceUpdate] = []
        request_text = f"GET {hook.path('activation_status', request_id=request_id)}"
        if response.status == 404:
            updates = [
                repo.DeviceUpdate(
                    device_id,
                    "ERROR",
                    self.step,
                    f"the carrier does not know activation request {request_id} (HTTP 404); "
                    "retry-failed sends the SIM again (a SIM the carrier has is found through its 409 answer)",
                )
                for device_id in devices.values()
            ]
            pending_updates.extend(updates)
            pending_audit.extend(
                self.audit_of(u, bc_id, request_text=request_text, response_text=response.text)
                for u in updates
            )
            return
        if not response.ok:
            self.log.warning(
                "Activation status of request %s: %s; next check", request_id, response.describe()
            )
            return
        try:
            states = parse_activation_answer(response.body)
        except MalformedResponse as exc:
            self.log.warning("Activation status of request %s unreadable (%s); next check", request_id, exc)
            return
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
                    self.step,
                    f"activation rejected by the carrier: {state.error or 'no reason given'}",
                )
            updates.append(update)
            audit.append(
                self.audit_of(
                    update, bc_id, request_text=request_text, response_text=json.dumps(state.__dict__)
                )
            )
        pending_updates.extend(updates)
        pending_audit.extend(audit)

    def _reconcile_unknown(self, bc_id: int, bulk_change: dict[str, Any], context: Context) -> None:
        """Send again the devices whose activation answer was lost: the carrier's 409 settles them."""
        with self.transaction() as conn:
            batches = repo.unknown_activation_batches(conn, bc_id)
            total = repo.next_batch_no(conn, bc_id)
        if not batches:
            return
        try:
            hook = self.carrier_hook(bulk_change)
        except CredentialsProblem as problem:
            self.log.warning("Cannot reconcile unknown activations of bulk change %s: %s", bc_id, problem)
            return
        sender = ActivationSender(self, hook, self.write_log(context))
        try:
            for batch_no in batches:
                counts = sender.send_batch(bc_id, batch_no, total, context["run_id"])
                self.log.info("Reconciled batch %d of bulk change %s: %s", batch_no + 1, bc_id, counts)
        finally:
            sender.close()
