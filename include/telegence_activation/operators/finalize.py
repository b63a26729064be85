"""Finalize: complete the bulk change, write the summary report, notify the customer."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from telegence_activation import metrics
from telegence_activation import repository as repo
from telegence_activation.assets import BULK_CHANGE_FINISHED, event_extra
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID, data_dir
from telegence_activation.domain.http import is_configuration_failure
from telegence_activation.domain.report import (
    CSV_COLUMNS,
    build_report,
    final_status,
    omitted_reasons,
    outcome_key,
    unfinished,
)
from telegence_activation.domain.report_html import render_report_html
from telegence_activation.exceptions import BulkChangeUnfinished, ConfigurationFailure, OutcomeUnknown
from telegence_activation.notifiers.email import EMAIL_CONN_ID, email_skip_reason, send_bulk_change_email
from telegence_activation.notifiers.webhook import NOTIFY_CONN_ID, ActivationCompleteNotifier
from telegence_activation.operators.base import BulkChangeTaskMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

REPORTS_DIR_ENV = "TELEGENCE_REPORTS_DIR"
EMAIL_PREFIX = "email|"  # e-mail notifications' outcome keys: one per outcome, apart from the webhook's


def reports_dir() -> Path:
    configured = os.environ.get(REPORTS_DIR_ENV)
    path = Path(configured) if configured else data_dir() / "reports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def report_paths(bc_id: int) -> tuple[Path, Path]:
    """Where a bulk change's report is written (JSON summary, CSV of every device)."""
    folder = reports_dir()
    return folder / f"bulk_change_{bc_id}.json", folder / f"bulk_change_{bc_id}.csv"


class FinalizeBulkChangeOperator(BulkChangeTaskMixin, BaseOperator):
    """Complete the bulk change once every device is terminal; report and notify.

    Runs whatever happened upstream (``trigger_rule=all_done`` in the DAG). If any device is still
    not in a terminal state — a step failed and must be cleared — the bulk change stays PROCESSING
    and this task fails saying so: nothing is marked done while work is unfinished. When devices
    ended API_FAILED (carrier unavailable beyond retries), the bulk change is completed as ERROR,
    reported and notified, and then this task fails too, so the run shows red until those tasks
    are cleared and their devices sent again.

    :param bulk_change_id: the bulk change (templated).
    :param notify_conn_id: http connection of the customer webhook; when it is not configured the
        notification is recorded as SKIPPED.
    :param email_conn_id: smtp connection of the customer e-mail (HTML summary to ``notify_to``);
        when it is not configured, or ``notify_to`` is not an e-mail address, recorded as SKIPPED.
    """

    template_fields: Sequence[str] = (
        "bulk_change_id",
        "activation_db_conn_id",
        "notify_conn_id",
        "email_conn_id",
    )

    def __init__(
        self,
        *,
        bulk_change_id: Any,
        activation_db_conn_id: str = ACTIVATION_DB_CONN_ID,
        notify_conn_id: str = NOTIFY_CONN_ID,
        email_conn_id: str = EMAIL_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bulk_change_id = bulk_change_id
        self.activation_db_conn_id = activation_db_conn_id
        self.notify_conn_id = notify_conn_id
        self.email_conn_id = email_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        bc_id = self.bulk_change
        with self.transaction() as conn:
            bulk_change = self.owned_bulk_change(conn, context)
            counts = repo.status_counts(conn, bc_id)
            left = unfinished(counts)
            if left:
                raise BulkChangeUnfinished(
                    f"{left} device(s) of bulk change {bc_id} are not in a terminal state ({counts}); the bulk "
                    "change stays PROCESSING. Clear the failed task(s) of this run to resume (or run "
                    "'python -m telegence_activation retry-failed <bulk change id>')."
                )
            status = final_status(counts, cancelled=bulk_change.get("cancel_requested_at") is not None)
            if bulk_change["status"] == "ERROR" and status not in ("ERROR", "CANCELLED"):
                status = "ERROR"  # failed before any device work (e.g. credentials): keep that reason
            requested, assigned = repo.static_ip_counts(conn, bc_id)
            report = build_report(
                bulk_change={**bulk_change, "status": status},
                by_status_step=repo.status_step_counts(conn, bc_id),
                failures=repo.iter_failure_reasons(conn, bc_id),  # a stream: memory is a page of groups
                ips_assigned=assigned,
                static_ip_requested=requested,
                step_times=repo.step_times(conn, bc_id),
                generated_at=datetime.now(UTC),
                carrier_writes=repo.carrier_write_counts(conn, bc_id),
                reserved_unused=repo.reserved_not_used(conn, bc_id),
            )
            saved = repo.get_report(conn, bc_id)
            unchanged = (
                bulk_change["status"] == status
                and saved is not None
                and outcome_key(saved) == outcome_key(report)
            )
            if unchanged and saved is not None:  # a rerun of a finished bulk change: all of it stands
                self.log.info(
                    "Bulk change %s is already %s with this outcome: nothing changed", bc_id, status
                )
                report = saved
            else:
                if bulk_change["status"] != status:
                    repo.set_bulk_change_status(
                        conn,
                        bc_id,
                        status,
                        f"{counts.get('PROCESSED', 0)} of {sum(counts.values())} devices processed",
                    )
                repo.set_addition_bulk_change_status(conn, bulk_change, status)
                repo.save_report(conn, bc_id, report)
        if unchanged:
            json_path, csv_path = report_paths(bc_id)
        else:
            json_path, csv_path = self._write_files(bc_id, report)
        report_files = {
            "json": str(json_path),
            "csv": str(csv_path),
            "html": str(json_path.with_suffix(".html")),
        }
        # The Asset event (the DAG gives this task the outlet): downstream DAGs start on it.
        outlet_events = context.get("outlet_events")
        if outlet_events is not None:
            outlet_events[BULK_CHANGE_FINISHED].extra = event_extra(report)
        if not unchanged:  # counted once per outcome, never again by a rerun
            metrics.record_outcome(
                {**report["by_status"], "outcome_unknown": report["outcome_unknown"]}, status=report["status"]
            )
            metrics.record_step_durations(report["steps"])
        self._notify(context, bulk_change, report)
        api_failed = counts.get("API_FAILED", 0)
        self.log.info(
            "Bulk change %s %s: %d of %d devices processed; report %s",
            bc_id,
            status,
            report["succeeded"],
            report["devices"],
            json_path,
        )
        if api_failed:
            # Everything is recorded; fail so the run shows red and the failed tasks can be cleared.
            raise AirflowFailException(
                f"bulk change {bc_id} finished ERROR with {api_failed} device(s) API_FAILED (the carrier stayed "
                "unavailable); run 'python -m telegence_activation retry-failed <bulk change id>' (or clear "
                "the failed tasks) to send them again"
            )
        if report["outcome_unknown"]:
            raise OutcomeUnknown(
                f"bulk change {bc_id} finished with {report['outcome_unknown']} device(s) whose carrier outcome is "
                "unknown (answers lost until the deadline; the carrier may have taken them); run 'python -m "
                f"telegence_activation retry-failed {bc_id}' to reconcile them (never activated twice)"
            )
        listed = report.get("failures_by_reason") or []
        if (
            report["devices"]
            and not report["succeeded"]
            and listed
            and not omitted_reasons(report)
            and all(is_configuration_failure(f["reason"]) for f in listed)
        ):
            raise ConfigurationFailure(
                f"every device of bulk change {bc_id} failed for a configuration reason ({listed[0]['reason']}); "
                "fix the carrier connection or account, then run 'python -m telegence_activation retry-failed "
                f"{bc_id}'"
            )
        return {
            "status": status,
            "devices": report["devices"],
            "succeeded": report["succeeded"],
            "failed": report["failed"],
            "outcome_unknown": report["outcome_unknown"],
            "report": report_files,
        }

    def _write_files(self, bc_id: int, report: dict[str, Any]) -> tuple[Path, Path]:
        json_path, csv_path = report_paths(bc_id)
        tmp_json = json_path.with_suffix(".json.tmp")
        tmp_json.write_text(json.dumps(report, indent=2, default=str))
        tmp_json.replace(json_path)
        html_path = json_path.with_suffix(".html")
        tmp_html = html_path.with_suffix(".html.tmp")
        tmp_html.write_text(render_report_html(report))
        tmp_html.replace(html_path)
        tmp_csv = csv_path.with_suffix(".csv.tmp")
        with tmp_csv.open("w", newline="") as handle, self.transaction() as conn:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for row in repo.device_rows_for_export(conn, bc_id):
                writer.writerow(["" if v is None else v for v in row])
        tmp_csv.replace(csv_path)
        return json_path, csv_path

    def _notify(self, context: Context, bulk_change: dict[str, Any], report: dict[str, Any]) -> None:
        """Tell the customer the outcome once per channel (webhook, e-mail): a rerun with the same
        outcome sends nothing; a changed outcome (after ``retry-failed``) sends one update that says
        so. Each notification is recorded (SENDING) before it goes out, so a crash never leads to a
        second send of one outcome."""
        bc_id = int(bulk_change["id"])
        outcome = outcome_key(report)
        with self.transaction() as conn:
            earlier = repo.notified_outcomes(conn, bc_id)
        payload = {
            "bulk_change_id": bulk_change["id"],
            "customer_name": bulk_change.get("customer_name"),
            "notify_to": bulk_change.get("notify_to"),
            "status": report["status"],
            "devices": report["devices"],
            "total_devices_activated": report["succeeded"],
            "total_devices_failed": report["failed"],
            "total_devices_outcome_unknown": report["outcome_unknown"],
            "total_devices_cancelled": report.get("cancelled", 0),
            "static_ips_assigned": report["static_ip"]["assigned"],
            "completed_at": report["generated_at"],
            "service_type": "Telegence Cellular with Static IP",
        }
        # The webhook's outcome keys stay unqualified (as recorded before e-mail existed).
        webhook_update = any(st == "SENT" for key, st in earlier.items() if not key.startswith(EMAIL_PREFIX))
        try:
            BaseHook.get_connection(self.notify_conn_id)
            webhook_skip = None
        except AirflowNotFoundException:
            webhook_skip = f"no connection {self.notify_conn_id} configured"
        webhook_payload = {**payload, "update": webhook_update}
        self._notify_once(
            bc_id,
            "webhook",
            outcome,
            earlier,
            webhook_payload,
            webhook_update,
            webhook_skip,
            lambda: ActivationCompleteNotifier(
                payload=webhook_payload, http_conn_id=self.notify_conn_id
            ).notify(context),
        )
        email_update = any(st == "SENT" for key, st in earlier.items() if key.startswith(EMAIL_PREFIX))
        self._notify_once(
            bc_id,
            "email",
            EMAIL_PREFIX + outcome,
            earlier,
            {**payload, "update": email_update},
            email_update,
            email_skip_reason(bulk_change, smtp_conn_id=self.email_conn_id),
            lambda: send_bulk_change_email(
                report, bulk_change, smtp_conn_id=self.email_conn_id, is_update=email_update, context=context
            ),
        )

    def _notify_once(
        self,
        bc_id: int,
        channel: str,
        outcome: str,
        earlier: dict[str, str],
        payload: dict[str, Any],
        is_update: bool,
        skip_reason: str | None,
        send: Callable[[], object],
    ) -> None:
        if outcome in earlier:
            self.log.info(
                "Customer already told this outcome by %s (%s): nothing sent", channel, earlier[outcome]
            )
            return
        recipient = payload.get("notify_to")
        status = "SKIPPED" if skip_reason else "SENDING"
        with self.transaction() as conn:
            notification_id = repo.record_notification(
                conn,
                bc_id,
                channel,
                recipient,
                payload,
                status,
                skip_reason,
                outcome=outcome,
                is_update=is_update,
            )
        if skip_reason or notification_id is None:  # skipped, or another attempt recorded it meanwhile
            return
        try:
            send()
        except Exception as exc:  # the bulk change is complete either way; record and report the failure
            self.log.warning("Customer notification by %s failed: %s", channel, exc)
            with self.transaction() as conn:
                repo.finish_notification(conn, notification_id, "FAILED", str(exc)[:1000])
            return
        with self.transaction() as conn:
            repo.finish_notification(conn, notification_id, "SENT")
