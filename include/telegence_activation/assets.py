"""The package's Airflow Assets.

``BULK_CHANGE_FINISHED``: a finished bulk change emits it; downstream DAGs (billing, CRM,
reporting) are scheduled on it instead of polling. Its event's ``extra`` carries the bulk change
id, its final status and counts (small; the database holds the rest).
``BULK_CHANGE_CREATED``: the database announces each new bulk change; the dispatcher starts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset, AssetWatcher

from telegence_activation.triggers.bulk_change_created import BulkChangeCreatedTrigger

BULK_CHANGE_FINISHED = Asset(name="telegence_bulk_change_finished", uri="telegence://bulk-change")

# A bulk change was created: announced by the database (LISTEN/NOTIFY), watched by the triggerer;
# the dispatcher DAG is scheduled on it (and on its minute timetable).
BULK_CHANGE_CREATED = Asset(
    name="telegence_bulk_change_created",
    uri="telegence://bulk-change-created",
    watchers=[AssetWatcher(name="telegence_bulk_change_created", trigger=BulkChangeCreatedTrigger())],
)


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
