"""Step 0: plan a bulk change (every run), and stop there in a dry run.

The plan is read-only: it loads the bulk change, checks the carrier credentials with a read-only
call, looks for ICCIDs open in another bulk change, counts the batches and the static IPs per PDP,
and (dry run only) checks every stored request as the activation step would build it. It is
stored (``activation.bulk_change_plan``), logged, and shown by the approval gate. It never claims
the bulk change and never writes to the carrier.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.activation import activation_item
from telegence_activation.domain.plan import MAX_LISTED, build_plan
from telegence_activation.exceptions import BulkChangeNotFound, BulkChangeNotOwned, CredentialsProblem
from telegence_activation.operators.base import BulkChangeTaskMixin, not_owned_message

if TYPE_CHECKING:
    from airflow.sdk import Context

# A request id no carrier has: the status read answers 404 to good credentials, 401/403 to bad ones.
CREDENTIALS_PROBE_REQUEST_ID = "telegence-activation-credentials-check"
PAGE = 2000


def truthy(value: Any) -> bool:
    """A templated boolean param ("True", "false", True, 0...) as a bool."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def go_on_unless_dry_run(params: dict[str, Any]) -> bool:
    """The short-circuit after the plan: a dry run stops there (every later task skipped)."""
    return not truthy(params.get("dry_run"))


class PlanBulkChangeOperator(BulkChangeTaskMixin, BaseOperator):
    """Plan a bulk change without sending anything; returns a small summary (counts).

    :param bulk_change_id: the bulk change (templated).
    :param batch_size: devices per activation call (templated).
    :param plan_only: a dry run (the ``dry_run`` param): also check every stored request one by
        one; the run stops after this step (templated).
    :param activation_db_conn_id: the activation database connection (templated).
    :param telegence_conn_id: the carrier connection override (templated).
    """

    template_fields: Sequence[str] = (
        "bulk_change_id",
        "batch_size",
        "plan_only",
        "activation_db_conn_id",
        "telegence_conn_id",
    )

    def __init__(
        self,
        *,
        bulk_change_id: Any,
        batch_size: Any = 200,
        plan_only: Any = False,
        activation_db_conn_id: str = ACTIVATION_DB_CONN_ID,
        telegence_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bulk_change_id = bulk_change_id
        self.batch_size = batch_size
        self.plan_only = plan_only
        self.activation_db_conn_id = activation_db_conn_id
        self.telegence_conn_id = telegence_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        bc_id, run_id, dry_run = self.bulk_change, context["run_id"], truthy(self.plan_only)
        with self.transaction() as conn:
            bulk_change = repo.get_bulk_change(conn, bc_id)
            if bulk_change is None:
                raise BulkChangeNotFound(f"bulk change {bc_id} does not exist")
            owner = bulk_change["dag_run_id"]
            if owner not in (None, run_id) or (owner is None and bulk_change["status"] != "NEW"):
                raise BulkChangeNotOwned(not_owned_message(bulk_change, run_id))
            by_status = repo.status_counts(conn, bc_id)
            by_pdp = repo.static_ip_by_pdp(conn, bc_id)
            clashes = repo.open_elsewhere(conn, bc_id, MAX_LISTED)
        invalid: list[tuple[int, str, str]] | None = None
        invalid_count = 0
        if dry_run:
            invalid, invalid_count = self._check_requests(bc_id)
        plan = build_plan(
            bulk_change=bulk_change,
            by_status=by_status,
            batch_size=int(self.batch_size),
            static_ip_by_pdp=by_pdp,
            open_elsewhere=clashes,
            # A read-only call, made only when the run would send something (or a person asked).
            credentials_problem=self._credentials_problem(bulk_change)
            if dry_run or by_status.get("NEW", 0) + by_status.get("API_FAILED", 0)
            else None,
            invalid_requests=invalid,
            invalid_count=invalid_count,
            dry_run=dry_run,
            generated_at=datetime.now(UTC),
        )
        with self.transaction() as conn:
            repo.save_plan(conn, bc_id, plan, run_id)
        self.log.info(
            "Plan of bulk change %s%s: %d device(s) to send in %d batch(es), %d static IP(s) %s; %s",
            bc_id,
            " (dry run: nothing is sent)" if dry_run else "",
            plan["to_send"],
            plan["batches"],
            plan["static_ip"]["devices"],
            plan["static_ip"]["by_pdp"],
            "; ".join(plan["problems"]) or "no problem found",
        )
        return {
            "dry_run": dry_run,
            "to_send": plan["to_send"],
            "batches": plan["batches"],
            "problems": len(plan["problems"]),
        }

    def _credentials_problem(self, bulk_change: dict[str, Any]) -> str | None:
        """Why the carrier would refuse this run's writes, from a read-only call; None when fine."""
        try:
            hook = self.carrier_hook(bulk_change)
        except CredentialsProblem as problem:
            return str(problem)
        answer = hook.activation_status(CREDENTIALS_PROBE_REQUEST_ID)
        if answer.status in (401, 403):
            return f"the carrier refused the credentials of {hook.telegence_conn_id}: HTTP {answer.status}"
        if answer.exhausted:
            return f"the carrier could not be reached to check the credentials: {answer.describe()}"
        return None

    def _check_requests(self, bc_id: int) -> tuple[list[tuple[int, str, str]], int]:
        """Build every stored request as the activation step would (keyset pages, bounded memory)."""
        found: list[tuple[int, str, str]] = []
        count, after = 0, 0
        while True:
            with self.transaction() as conn:
                page = repo.requests_page(conn, bc_id, after, PAGE)
            if not page:
                return found, count
            for device_id, line, iccid, change_request in page:
                try:
                    activation_item(change_request)
                except ValueError as exc:
                    count += 1
                    if len(found) < MAX_LISTED:
                        found.append((line, iccid, str(exc)))
                after = device_id
