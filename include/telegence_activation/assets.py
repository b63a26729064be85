"""The Airflow Asset a finished bulk change emits: downstream DAGs (billing, CRM, reporting) are
scheduled on it instead of polling. Its event's ``extra`` carries the bulk change id, its final
status and counts (small; the database holds the rest)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset

BULK_CHANGE_FINISHED = Asset(name="telegence_bulk_change_finished", uri="telegence://bulk-change")


def event_extra(report: Mapping[str, Any]) -> dict[str, Any]:
    """What a downstream DAG needs to pick up a finished bulk change."""
    return {
        "bulk_change_id": report["bulk_change_id"],
        "service_provider_id": report.get("service_provider_id"),
        "status": report["status"],
        "devices": report["devices"],
        "succeeded": report["succeeded"],
        "failed": report["failed"],
        "outcome_unknown": report.get("outcome_unknown", 0),
        "cancelled": report.get("cancelled", 0),
    }
