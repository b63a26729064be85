"""Request static IPs for active devices: reserve addresses per PDP pool, submit provisioning batches."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.ip import (
    Subscriber,
    parse_batch_id,
    provisioning_request,
    reserved_addresses,
)
from telegence_activation.domain.models import StaticIPOptions
from telegence_activation.hooks.telegence import TelegenceHook
from telegence_activation.operators.activation import _clip
from telegence_activation.operators.base import BulkChangeTaskMixin, telegence_hook_for

if TYPE_CHECKING:
    from airflow.sdk import Context

DESC_RESERVE = "Telegence Static IP Provisioning: Reserve IP Address"
DESC_SUBMIT = "Telegence Static IP Provisioning: Request IP Assignment"
MAX_SUBSCRIBERS_PER_REQUEST = 200


class RequestStaticIPsOperator(BulkChangeTaskMixin, BaseOperator):
    """Reserve addresses and submit provisioning batches for devices waiting at the IP request step.

    Idempotent: a device keeps its reserved address and batch id once stored, so a retry only does
    what is left. A pool that is short of addresses fails only the devices it could not serve.
    Skipped when no device needs a static IP.
    """

    template_fields: Sequence[str] = ("bulk_change_id",)

    def __init__(
        self, *, bulk_change_id: Any, activation_db_conn_id: str = ACTIVATION_DB_CONN_ID, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.bulk_change_id = bulk_change_id
        self.activation_db_conn_id = activation_db_conn_id

    def execute(self, context: Context) -> dict[str, int]:
        bc_id = self.bulk_change
        with self.transaction() as conn:
            bulk_change = repo.get_bulk_change(conn, bc_id)
            assert bulk_change is not None
            devices = repo.devices_at_step(conn, bc_id, repo.STEP_REQUEST_IP) + repo.devices_at_step(
                conn, bc_id, repo.STEP_REQUEST_IP, status="API_FAILED"
            )
            if not devices:
                raise AirflowSkipException(f"no device of bulk change {bc_id} needs a static IP")
            repo.start_step(conn, bc_id, repo.STEP_REQUEST_IP)
            if bulk_change["status"] != "PROCESSING":  # a retry after the run had finished
                repo.set_bulk_change_status(conn, bc_id, "PROCESSING", f"resumed by {context['run_id']}")
        hook = telegence_hook_for(int(bulk_change["service_provider_id"]))
        requests_by_id = {
            int(d["id"]): (StaticIPOptions.model_validate(d["static_ip"]), str(d["billing_account"]))
            for d in devices
        }

        unavailable = self._reserve(hook, bc_id, [d for d in devices if not d["reserved_ip"]], requests_by_id)
        with self.transaction() as conn:
            ready = [
                d
                for d in repo.devices_at_step(conn, bc_id, repo.STEP_REQUEST_IP)
                + repo.devices_at_step(conn, bc_id, repo.STEP_REQUEST_IP, status="API_FAILED")
                if d["reserved_ip"] and not d["ip_batch_id"]
            ]
        submitted, failed_submit = self._submit(hook, bc_id, ready, requests_by_id)
        unavailable += failed_submit
        with self.transaction() as conn:
            repo.finish_step(conn, bc_id, repo.STEP_REQUEST_IP)
        if unavailable:
            raise AirflowException(
                f"{unavailable} device(s) could not get a static IP request through: the carrier stayed "
                "unavailable; a retry or a clear does exactly these again"
            )
        return {"submitted": submitted}

    def _reserve(
        self,
        hook: TelegenceHook,
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
                response = hook.reserve_ips(pdp, len(chunk))
                request_text = f"POST {hook.path('reserve_ips')}\n" + json.dumps(
                    {"pdpName": pdp, "ipQuantity": len(chunk)}
                )
                addresses: list[str] = []
                problem = None
                status = "ERROR"
                if response.exhausted:
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
                            response_text=_clip(response.text),
                        )
                    )
                unavailable += sum(1 for u in updates if u.status == "API_FAILED")
                with self.transaction() as conn:
                    repo.update_devices(conn, updates)
                    repo.write_audit(conn, audit)
        return unavailable

    def _submit(
        self,
        hook: TelegenceHook,
        bc_id: int,
        devices: list[dict[str, Any]],
        requests_by_id: dict[int, tuple[StaticIPOptions, str]],
    ) -> tuple[int, int]:
        """Submit provisioning batches per (PDP pool, billing account); return (submitted, unavailable)."""
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
        submitted = unavailable = 0
        for (pdp, ban), members in groups.items():
            for start in range(0, len(members), MAX_SUBSCRIBERS_PER_REQUEST):
                chunk = members[start : start + MAX_SUBSCRIBERS_PER_REQUEST]
                body = provisioning_request(pdp, ban, [s for _, s in chunk], effective_date)
                response = hook.submit_provisioning(body)
                batch_id = None
                status, problem = "ERROR", None
                if response.exhausted:
                    status, problem = "API_FAILED", f"IP provisioning request failed: {response.describe()}"
                elif not response.ok:
                    problem = f"IP provisioning refused: HTTP {response.status}: {response.text[:300]}"
                else:
                    try:
                        batch_id = parse_batch_id((response.body or {}).get("message"))
                        status = "PENDING"
                    except (ValueError, AttributeError) as exc:
                        problem = f"IP provisioning API error: {exc}"
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
                        assert problem is not None
                        update = repo.DeviceUpdate(int(d["id"]), status, repo.STEP_REQUEST_IP, problem)
                    updates.append(update)
                    audit.append(
                        repo.audit_of(
                            update,
                            bc_id,
                            step=repo.STEP_REQUEST_IP,
                            description=DESC_SUBMIT,
                            request_text=f"POST {hook.path('provisioning')} ({len(chunk)} subscribers)\n"
                            + json.dumps(
                                {
                                    **body,
                                    "subscriber": [
                                        s
                                        for s in body["subscriber"]
                                        if s["subscriberNumber"] == subscriber.subscriber_number
                                    ],
                                }
                            ),
                            response_text=_clip(response.text),
                        )
                    )
                submitted += len(chunk) if batch_id else 0
                unavailable += sum(1 for u in updates if u.status == "API_FAILED")
                with self.transaction() as conn:
                    repo.update_devices(conn, updates)
                    repo.write_audit(conn, audit)
        return submitted, unavailable
