"""Finalize: complete the bulk change, write the summary report, notify the customer."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID, data_dir
from telegence_activation.domain.report import build_report, final_status, unfinished
from telegence_activation.notifiers.webhook import NOTIFY_CONN_ID, ActivationCompleteNotifier
from telegence_activation.operators.base import BulkChangeTaskMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

REPORTS_DIR_ENV = "TELEGENCE_REPORTS_DIR"
CSV_COLUMNS = (
    "line_number",
    "iccid",
    "imei",
    "status",
    "step",
    "subscriber_number",
    "assigned_ip",
    "activation_request_id",
    "ip_batch_id",
    "status_details",
)


def reports_dir() -> Path:
    configured = os.environ.get(REPORTS_DIR_ENV)
    path = Path(configured) if configured else data_dir() / "reports"
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    """

    template_fields: Sequence[str] = ("bulk_change_id",)

    def __init__(
        self,
        *,
        bulk_change_id: Any,
        activation_db_conn_id: str = ACTIVATION_DB_CONN_ID,
        notify_conn_id: str = NOTIFY_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bulk_change_id = bulk_change_id
        self.activation_db_conn_id = activation_db_conn_id
        self.notify_conn_id = notify_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        bc_id = self.bulk_change
        with self.transaction() as conn:
            bulk_change = repo.get_bulk_change(conn, bc_id)
            if bulk_change is None:
                raise AirflowFailException(f"bulk change {bc_id} does not exist")
            counts = repo.status_counts(conn, bc_id)
            left = unfinished(counts)
            if left:
                raise AirflowFailException(
                    f"{left} device(s) of bulk change {bc_id} are not in a terminal state ({counts}); the bulk "
                    "change stays PROCESSING. Clear the failed task(s) of this run to resume (or run "
                    "'python -m telegence_activation retry-failed <bulk change id>')."
                )
            status = final_status(counts)
            if bulk_change["status"] != "ERROR" or status == "ERROR":
                repo.set_bulk_change_status(
                    conn,
                    bc_id,
                    status,
                    f"{counts.get('PROCESSED', 0)} of {sum(counts.values())} devices processed",
                )
            else:  # failed before any device work (e.g. credentials): keep that reason
                status = "ERROR"
            repo.set_addition_bulk_change_status(conn, bulk_change, status)
            bulk_change = repo.get_bulk_change(conn, bc_id)
            assert bulk_change is not None
            requested, assigned = repo.static_ip_counts(conn, bc_id)
            report = build_report(
                bulk_change=bulk_change,
                by_status_step=repo.status_step_counts(conn, bc_id),
                failures=repo.failure_reasons(conn, bc_id),
                ips_assigned=assigned,
                static_ip_requested=requested,
                step_times=repo.step_times(conn, bc_id),
                generated_at=datetime.now(UTC),
            )
            repo.save_report(conn, bc_id, report)
        json_path, csv_path = self._write_files(bc_id, report)
        report_files = {"json": str(json_path), "csv": str(csv_path)}
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
        return {
            "status": status,
            "devices": report["devices"],
            "succeeded": report["succeeded"],
            "failed": report["failed"],
            "report": report_files,
        }

    def _write_files(self, bc_id: int, report: dict[str, Any]) -> tuple[Path, Path]:
        folder = reports_dir()
        json_path = folder / f"bulk_change_{bc_id}.json"
        csv_path = folder / f"bulk_change_{bc_id}.csv"
        tmp_json = json_path.with_suffix(".json.tmp")
        tmp_json.write_text(json.dumps(report, indent=2, default=str))
        tmp_json.replace(json_path)
        tmp_csv = csv_path.with_suffix(".csv.tmp")
        with tmp_csv.open("w", newline="") as handle, self.transaction() as conn:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for row in repo.device_rows_for_export(conn, bc_id):
                writer.writerow(["" if v is None else v for v in row])
        tmp_csv.replace(csv_path)
        return json_path, csv_path

    def _notify(self, context: Context, bulk_change: dict[str, Any], report: dict[str, Any]) -> None:
        payload = {
            "bulk_change_id": bulk_change["id"],
            "customer_name": bulk_change.get("customer_name"),
            "notify_to": bulk_change.get("notify_to"),
            "status": report["status"],
            "devices": report["devices"],
            "total_devices_activated": report["succeeded"],
            "total_devices_failed": report["failed"],
            "static_ips_assigned": report["static_ip"]["assigned"],
            "completed_at": report["generated_at"],
            "service_type": "Telegence Cellular with Static IP",
        }
        try:
            BaseHook.get_connection(self.notify_conn_id)
        except AirflowNotFoundException:
            with self.transaction() as conn:
                repo.record_notification(
                    conn,
                    bulk_change["id"],
                    "webhook",
                    bulk_change.get("notify_to"),
                    payload,
                    "SKIPPED",
                    f"no connection {self.notify_conn_id} configured",
                )
            return
        try:
            ActivationCompleteNotifier(payload=payload, http_conn_id=self.notify_conn_id).notify(context)
        except Exception as exc:  # the bulk change is complete either way; record and report the failure
            self.log.warning("Customer notification failed: %s", exc)
            with self.transaction() as conn:
                repo.record_notification(
                    conn,
                    bulk_change["id"],
                    "webhook",
                    bulk_change.get("notify_to"),
                    payload,
                    "FAILED",
                    str(exc)[:1000],
                )
            return
        with self.transaction() as conn:
            repo.record_notification(
                conn, bulk_change["id"], "webhook", bulk_change.get("notify_to"), payload, "SENT"
            )
