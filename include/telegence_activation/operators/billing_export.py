"""An example consumer of the bulk-change Asset: export the lines a bulk change activated for billing.

Scheduled on ``telegence://bulk-change`` (see ``dags/telegence_billing_export.py``): each Asset event
names a finished bulk change; this task writes ``billing/bulk_change_<id>.csv`` (ICCID, IMEI, MDN,
static IP of every PROCESSED line) next to the reports. Idempotent: a rerun rewrites the same file.
A manual run can name one bulk change in its conf (``bulk_change_id``).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.report import CSV_COLUMNS
from telegence_activation.operators.base import BulkChangeTaskMixin
from telegence_activation.operators.finalize import reports_dir

if TYPE_CHECKING:
    from airflow.sdk import Context

BILLING_COLUMNS = ("bulk_change_id", "iccid", "imei", "subscriber_number", "static_ip")


def bulk_changes_of(context: Context) -> list[int]:
    """The bulk changes this run is about: from the triggering Asset events, else the run's conf."""
    found: list[int] = []
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            bc_id = (event.extra or {}).get("bulk_change_id")
            if bc_id is not None and int(bc_id) not in found:
                found.append(int(bc_id))
    conf = (context.get("dag_run").conf if context.get("dag_run") else None) or {}  # type: ignore[union-attr]
    if not found and conf.get("bulk_change_id") is not None:
        found.append(int(conf["bulk_change_id"]))
    return found


class BillingExportOperator(BulkChangeTaskMixin, BaseOperator):
    """Write the activated lines of each bulk change this run is about to a billing CSV.

    :param activation_db_conn_id: the activation database connection (templated).
    """

    template_fields: Sequence[str] = ("activation_db_conn_id",)
    bulk_change_id = None

    def __init__(self, *, activation_db_conn_id: str = ACTIVATION_DB_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.activation_db_conn_id = activation_db_conn_id

    def execute(self, context: Context) -> dict[str, int]:
        exported: dict[str, int] = {}
        folder = reports_dir() / "billing"
        folder.mkdir(parents=True, exist_ok=True)
        for bc_id in bulk_changes_of(context):
            exported[str(bc_id)] = self._export(bc_id, folder / f"bulk_change_{bc_id}.csv")
            self.log.info(
                "Bulk change %s: %d activated line(s) exported for billing", bc_id, exported[str(bc_id)]
            )
        return exported

    def _export(self, bc_id: int, path: Path) -> int:
        at = {name: i for i, name in enumerate(CSV_COLUMNS)}
        lines = 0
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as handle, self.transaction() as conn:
            writer = csv.writer(handle)
            writer.writerow(BILLING_COLUMNS)
            for row in repo.device_rows_for_export(conn, bc_id):
                if row[at["status"]] != "PROCESSED":
                    continue
                writer.writerow(
                    [
                        bc_id,
                        row[at["iccid"]],
                        row[at["imei"]],
                        row[at["subscriber_number"]],
                        row[at["assigned_ip"]] or "",
                    ]
                )
                lines += 1
        tmp.replace(path)
        return lines
