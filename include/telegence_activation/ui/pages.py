"""What each page of the Bulk changes UI shows, read from the activation database.

Every figure comes from the repository functions the CLI and the finalize step use
(``repo.status_counts``, ``repo.failure_reasons``, ``repo.step_times``, the stored report,
``repo.device_rows_for_export``...) or from ``repository.browse`` for what only the page needs (the
list, a keyset page of devices, a device's audit trail). No SQL here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from telegence_activation import repository as repo
from telegence_activation.domain.errors import ERROR_CLASSES
from telegence_activation.domain.report import TERMINAL_STATUSES, build_report, summarize_failures

BULK_CHANGE_STATUSES = ("NEW", "PROCESSING", "PROCESSED", "ERROR", "CANCELLED")
FINISHED = ("PROCESSED", "ERROR", "CANCELLED")
# Devices by status, in the order the progress bar shows them, with their colour class.
SEGMENTS = (
    ("PROCESSED", "ok"),
    ("ERROR", "bad"),
    ("API_FAILED", "bad"),
    ("CANCELLED", "off"),
    ("UNKNOWN", "warn"),
    ("PROCESSING", "run"),
    ("PENDING", "run"),
    ("NEW", "new"),
)
LIST_PAGE = 25
DEVICE_PAGE = 50
POLL_RUNNING_MS = 3000
POLL_NEW_MS = 10000
# The run ids of api_client.run_id_for and dry_run_id_for (checked against them by the tests).
RUN_ID_PATTERN = re.compile(r"^bulk_change__(\d+)(?:__dry_run__.+)?$")


@dataclass(frozen=True)
class Progress:
    """Devices by status, as the progress bar and its label show them."""

    counts: dict[str, int]
    total: int
    done: int
    processed: int
    failed: int
    cancelled: int
    segments: list[tuple[str, str, int, float]] = field(default_factory=list)

    @property
    def percent_done(self) -> float:
        return 100.0 * self.done / self.total if self.total else 0.0


def progress(counts: dict[str, int]) -> Progress:
    total = sum(counts.values())
    known = {status for status, _ in SEGMENTS}
    segments = [
        (status, css, counts[status], 100.0 * counts[status] / total)
        for status, css in SEGMENTS
        if counts.get(status)
    ]
    segments += [(s, "new", n, 100.0 * n / total) for s, n in sorted(counts.items()) if s not in known and n]
    return Progress(
        counts=dict(counts),
        total=total,
        done=sum(n for s, n in counts.items() if s in TERMINAL_STATUSES),
        processed=counts.get("PROCESSED", 0),
        failed=counts.get("ERROR", 0) + counts.get("API_FAILED", 0),
        cancelled=counts.get("CANCELLED", 0),
        segments=segments,
    )


def poll_ms(statuses: list[str]) -> int:
    """How often a page showing bulk changes of these statuses refreshes itself (0: never)."""
    if "PROCESSING" in statuses:
        return POLL_RUNNING_MS
    if "NEW" in statuses:  # it may be triggered (from here, the CLI or the REST API) at any time
        return POLL_NEW_MS
    return 0


def counts_of(conn: psycopg.Connection, bulk_change: dict[str, Any]) -> dict[str, int]:
    """Devices by status: a finished bulk change's stored report (written when it finished), else
    counted now (``repo.status_counts``)."""
    if bulk_change["status"] in FINISHED:
        report = repo.get_report(conn, bulk_change["id"])
        if report is not None and isinstance(report.get("by_status"), dict):
            return {str(s): int(n) for s, n in report["by_status"].items()}
    return repo.status_counts(conn, bulk_change["id"])


def bulk_change_list(
    conn: psycopg.Connection, status: str | None, before_id: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the list (each row with its ``progress``) and the id the next page starts below."""
    rows = repo.list_bulk_changes(conn, status=status, before_id=before_id, limit=LIST_PAGE + 1)
    more = len(rows) > LIST_PAGE
    rows = rows[:LIST_PAGE]
    for row in rows:
        row["progress"] = progress(counts_of(conn, row))
    return rows, (rows[-1]["id"] if more and rows else None)


def bulk_change_of_run(conn: psycopg.Connection, run_id: str) -> dict[str, Any] | None:
    """The bulk change a run owns, or the one its run id names (``bulk_change__<id>``, a dry run's too)."""
    owned = repo.bulk_change_of_run(conn, run_id)
    if owned is not None:
        return owned
    match = RUN_ID_PATTERN.match(run_id)
    return repo.get_bulk_change(conn, int(match.group(1))) if match else None


def failures(
    conn: psycopg.Connection, bulk_change_id: int
) -> tuple[list[tuple[str, int]], list[dict[str, Any]], dict[str, int]]:
    """Failed devices by error class (every device), the reasons with the most devices (with class,
    catalogue key and hint; ``MAX_LISTED_REASONS`` at most) and what was left out of that list."""
    found = summarize_failures(repo.iter_failure_reasons(conn, bulk_change_id))
    by_class = found.every_class
    order: dict[str, int] = {c: i for i, c in enumerate(ERROR_CLASSES)}
    listed = sorted(found.listed, key=lambda f: (order.get(f[3].error_class, 99), -f[2], f[1] or ""))
    by_reason: list[dict[str, Any]] = [
        {"status": s, "reason": r, "devices": n, "class": c.error_class, "key": c.key, "hint": c.hint}
        for s, r, n, c in listed
    ]
    omitted = {"reasons": found.omitted_reasons, "devices": found.omitted_devices}
    return sorted(by_class.items(), key=lambda kv: order.get(kv[0], 99)), by_reason, omitted


def steps(conn: psycopg.Connection, bulk_change_id: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "step": t.step,
            "started_at": t.started_at,
            "finished_at": t.finished_at,
            "seconds": ((t.finished_at or now) - t.started_at).total_seconds(),
            "running": t.finished_at is None,
        }
        for t in repo.step_times(conn, bulk_change_id)
    ]


def summary(conn: psycopg.Connection, bulk_change: dict[str, Any]) -> dict[str, Any]:
    """The part of the detail page that refreshes while the bulk change runs."""
    bc_id = bulk_change["id"]
    by_class, by_reason, omitted = failures(conn, bc_id)
    return {
        "bc": bulk_change,
        "progress": progress(repo.status_counts(conn, bc_id)),
        "steps": steps(conn, bc_id),
        "failures_by_class": by_class,
        "failures_by_reason": by_reason,
        "failures_by_reason_omitted": omitted,
        "poll_ms": poll_ms([bulk_change["status"]]),
    }


def devices(
    conn: psycopg.Connection, bulk_change_id: int, after_id: int, search: str | None
) -> tuple[list[dict[str, Any]], int | None]:
    """A keyset page of devices and the id the next page starts after (None on the last page)."""
    rows = repo.devices_page(conn, bulk_change_id, after_id=after_id, limit=DEVICE_PAGE + 1, search=search)
    more = len(rows) > DEVICE_PAGE
    rows = rows[:DEVICE_PAGE]
    return rows, (rows[-1]["id"] if more and rows else None)


def report(conn: psycopg.Connection, bulk_change: dict[str, Any]) -> dict[str, Any]:
    """The summary report: the one the run stored when the bulk change finished, else one built now
    from the same figures (marked ``interim``: the bulk change is not finished)."""
    bc_id = bulk_change["id"]
    if bulk_change["status"] in FINISHED:
        stored = repo.get_report(conn, bc_id)
        if stored is not None:
            return stored
    requested, assigned = repo.static_ip_counts(conn, bc_id)
    built = build_report(
        bulk_change=bulk_change,
        by_status_step=repo.status_step_counts(conn, bc_id),
        failures=repo.iter_failure_reasons(conn, bc_id),  # streamed: reasons can name devices
        ips_assigned=assigned,
        static_ip_requested=requested,
        step_times=repo.step_times(conn, bc_id),
        generated_at=datetime.now(UTC),
        carrier_writes=repo.carrier_write_counts(conn, bc_id),
        reserved_unused=repo.reserved_not_used(conn, bc_id),
    )
    built["interim"] = True
    return built
