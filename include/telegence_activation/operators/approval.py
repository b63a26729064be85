"""Step 0b: the approval gate: a person approves a big bulk change before anything is sent.

An Airflow human-in-the-loop task (``ApprovalOperator`` of the standard provider): when the plan
holds more lines than ``approval_required_over`` (0: never asked), the task waits in the UI's
"Required actions" with the plan as its text. Approve: the run goes on. Reject, or no answer within
``response_timeout`` (the default answer is Reject): the bulk change is cancelled, with who and
why, before any carrier write, and every later task is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.timezone import utcnow

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.plan import plan_summary_markdown
from telegence_activation.exceptions import BulkChangeNotFound
from telegence_activation.operators.base import BulkChangeTaskMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_APPROVAL_TIMEOUT = timedelta(hours=24)


class BulkChangeApprovalOperator(BulkChangeTaskMixin, ApprovalOperator):
    """Ask a person to approve the plan when it holds more than ``approval_required_over`` lines.

    :param bulk_change_id: the bulk change (templated).
    :param approval_required_over: lines above which approval is asked; 0 or less: never (templated).
    :param activation_db_conn_id: the activation database connection (templated).
    """

    template_fields: Sequence[str] = (
        *ApprovalOperator.template_fields,
        "bulk_change_id",
        "approval_required_over",
        "activation_db_conn_id",
    )

    def __init__(
        self,
        *,
        bulk_change_id: Any,
        approval_required_over: Any = 0,
        activation_db_conn_id: str = ACTIVATION_DB_CONN_ID,
        response_timeout: timedelta = DEFAULT_APPROVAL_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("subject", "Approve bulk change {{ params.bulk_change_id }}")
        super().__init__(
            defaults=[ApprovalOperator.REJECT],  # no answer in time: rejected
            ignore_downstream_trigger_rules=True,
            response_timeout=response_timeout,
            **kwargs,
        )
        self.bulk_change_id = bulk_change_id
        self.approval_required_over = approval_required_over
        self.activation_db_conn_id = activation_db_conn_id

    def execute(self, context: Context) -> Any:
        bc_id = self.bulk_change
        threshold = int(self.approval_required_over or 0)
        with self.transaction() as conn:
            plan = repo.get_plan(conn, bc_id)
        if plan is None:
            raise BulkChangeNotFound(f"bulk change {bc_id} has no plan: the plan step must run first")
        if threshold <= 0 or int(plan["to_send"]) <= threshold:
            self.log.info(
                "Approval not required: %s line(s) to send, approval_required_over=%s",
                plan["to_send"],
                threshold,
            )
            return {"approval": "not required"}
        self.subject = (
            f"Approve bulk change {bc_id}: {plan['to_send']} line(s) for "
            f"{plan.get('customer_name') or 'an unnamed customer'}"
        )
        self.body = plan_summary_markdown(plan)
        earlier = self._answer_already_given(context)
        if earlier is not None:
            # An answer given to an earlier try of this task (the executor's late "success" for the
            # parked try can fail it for a retry just after the answer arrived): use it, never ask twice.
            self.log.info("Answer already given to an earlier try: %s", earlier["chosen_options"])
            return self.execute_complete(context, earlier)
        return super().execute(context)

    def _answer_already_given(self, context: Context) -> dict[str, Any] | None:
        try:
            from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail

            found = get_hitl_detail_content_detail(context["task_instance"].id)
        except Exception:  # no request recorded yet (a first try), or no execution API (tests)
            return None
        if not found.response_received or not found.chosen_options:
            return None
        user = found.responded_by_user
        return {
            "chosen_options": list(found.chosen_options),
            "params_input": found.params_input or {},
            "responded_at": found.responded_at or utcnow(),
            "responded_by_user": user.model_dump() if user is not None else None,
        }

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if event.get("error_type") == "timeout":  # no defaults recorded (should not happen): rejected
            event = {
                "chosen_options": [self.REJECT],
                "params_input": {},
                "responded_at": utcnow(),
                "responded_by_user": None,
            }
        chosen = (event.get("chosen_options") or [None])[0]
        if chosen == self.REJECT:
            user = event.get("responded_by_user")
            if user:
                by = str(user.get("name") or user.get("id")) if isinstance(user, dict) else str(user)
                reason = f"approval rejected by {by} in the Airflow UI"
            else:
                by = "approval timeout"
                reason = f"no approval within {self.response_timeout}"
            with self.transaction() as conn:
                result = repo.request_cancel(conn, self.bulk_change, by, reason)
            self.log.warning(
                "Bulk change %s not approved (%s): %s", self.bulk_change, reason, result["outcome"]
            )
        elif chosen == self.APPROVE:
            user = event.get("responded_by_user")
            self.log.info("Bulk change %s approved by %s", self.bulk_change, user)
        return super().execute_complete(context, event)
