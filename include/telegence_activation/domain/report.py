"""The summary report of a bulk change, built from counts the database gives."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from telegence_activation.domain.errors import Classification, classify

TERMINAL_STATUSES = frozenset({"PROCESSED", "ERROR", "API_FAILED", "CANCELLED"})
# Every reason for a device the carrier may have taken (an answer lost, never reconciled) starts so;
# such a device is reported as "outcome unknown", never as failed.
OUTCOME_UNKNOWN = "outcome unknown"
# The columns of the per-device CSV report, in the order of ``repository.device_rows_for_export``'s rows.
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


# The report, the e-mail and the page list the reasons with the most devices, this many at most;
# class totals and counts always cover every failed device. Reasons can name a device (a subscriber
# missing from a reply, an address out of range), so a bulk change of 1,000,000 failures could
# otherwise carry 1,000,000 reasons into the report, its e-mail and a task's memory.
MAX_LISTED_REASONS = 100


def is_outcome_unknown(reason: str | None) -> bool:
    return bool(reason) and str(reason).startswith(OUTCOME_UNKNOWN)


@dataclass
class FailureSummary:
    """Failures grouped by reason, read once as a stream (largest groups first): every device is
    counted by class, only the first ``limit`` reasons are kept."""

    limit: int = MAX_LISTED_REASONS
    listed: list[tuple[str, str, int, Classification]] = field(default_factory=list)
    by_class: dict[str, int] = field(default_factory=dict)  # outcome unknown apart
    every_class: dict[str, int] = field(default_factory=dict)  # outcome unknown included
    outcome_unknown: int = 0
    omitted_reasons: int = 0
    omitted_devices: int = 0
    unknown_answers: list[str] = field(default_factory=list)

    def add(self, status: str, reason: str, devices: int) -> None:
        found = classify(reason)
        self.every_class[found.error_class] = self.every_class.get(found.error_class, 0) + devices
        if is_outcome_unknown(reason):
            self.outcome_unknown += devices
        else:
            self.by_class[found.error_class] = self.by_class.get(found.error_class, 0) + devices
        if len(self.listed) < self.limit:
            self.listed.append((status, reason, devices, found))
        else:
            self.omitted_reasons += 1
            self.omitted_devices += devices
        if found.error_class == "unknown" and len(self.unknown_answers) < self.limit:
            self.unknown_answers.append(reason)


def omitted_reasons(report: Mapping[str, Any]) -> int:
    """How many failure reasons a report counted without listing them (0 in reports from before the cap)."""
    return int((report.get("failures_by_reason_omitted") or {}).get("reasons") or 0)


def summarize_failures(
    failures: Iterable[tuple[str, str, int]], limit: int = MAX_LISTED_REASONS
) -> FailureSummary:
    """Fold ``(status, reason, devices)`` rows (largest groups first) into a ``FailureSummary``."""
    summary = FailureSummary(limit=limit)
    for status, reason, devices in failures:
        summary.add(status, reason, devices)
    return summary


@dataclass(frozen=True)
class StepTime:
    step: str
    started_at: datetime
    finished_at: datetime | None


def final_status(status_counts: dict[str, int], *, cancelled: bool = False) -> str:
    """CANCELLED for a cancelled bulk change; else PROCESSED when every device is PROCESSED (or
    there are none), else ERROR."""
    if cancelled:
        return "CANCELLED"
    failed = sum(n for s, n in status_counts.items() if s != "PROCESSED")
    return "ERROR" if failed else "PROCESSED"


def unfinished(status_counts: dict[str, int]) -> int:
    """How many devices are not yet in a terminal state."""
    return sum(n for s, n in status_counts.items() if s not in TERMINAL_STATUSES)


def build_report(
    *,
    bulk_change: dict[str, Any],
    by_status_step: Iterable[tuple[str, str, int]],
    failures: Iterable[tuple[str, str, int]],
    ips_assigned: int,
    static_ip_requested: int,
    step_times: Iterable[StepTime],
    generated_at: datetime,
    carrier_writes: dict[str, int] | None = None,
    reserved_unused: list[str] | None = None,
) -> dict[str, Any]:
    """Assemble the report: counts by status and step, failures grouped by reason (an unknown
    outcome apart from failures), IPs, carrier writes by outcome, step times."""
    rows = list(by_status_step)
    failed = summarize_failures(failures)
    unknown = failed.outcome_unknown
    status_step = [{"status": s, "step": st, "devices": n} for s, st, n in rows]
    by_status: dict[str, int] = {}
    for status, _step, count in rows:
        by_status[status] = by_status.get(status, 0) + count
    total = sum(by_status.values())
    steps = []
    for t in step_times:
        seconds = (t.finished_at - t.started_at).total_seconds() if t.finished_at else None
        steps.append(
            {
                "step": t.step,
                "started_at": t.started_at.isoformat(),
                "finished_at": t.finished_at.isoformat() if t.finished_at else None,
                "seconds": round(seconds, 3) if seconds is not None else None,
            }
        )
    return {
        "bulk_change_id": bulk_change["id"],
        "service_provider_id": bulk_change["service_provider_id"],
        "customer_name": bulk_change.get("customer_name"),
        "status": bulk_change["status"],
        "generated_at": generated_at.isoformat(),
        "devices": total,
        "succeeded": by_status.get("PROCESSED", 0),
        "failed": total - by_status.get("PROCESSED", 0) - unknown - by_status.get("CANCELLED", 0),
        "outcome_unknown": unknown,
        "by_status": dict(sorted(by_status.items())),
        "by_status_and_step": status_step,
        "cancelled": by_status.get("CANCELLED", 0),
        "cancellation": _cancellation(bulk_change),
        # The reasons with the most devices (MAX_LISTED_REASONS at most; the rest counted below).
        "failures_by_reason": [
            {"status": s, "reason": r, "devices": n, "class": c.error_class, "key": c.key, "hint": c.hint}
            for s, r, n, c in failed.listed
        ],
        "failures_by_reason_omitted": {"reasons": failed.omitted_reasons, "devices": failed.omitted_devices},
        # Failures by class of the error catalogue (outcome unknown apart), every failed device:
        # retry-failed retries the retryable ones by default.
        "failures_by_class": dict(sorted(failed.by_class.items())),
        # Answers the catalogue does not know yet: worth a look, and an entry.
        "unknown_answers": failed.unknown_answers,
        "static_ip": {
            "requested": static_ip_requested,
            "assigned": ips_assigned,
            "reserved_not_used": reserved_unused or [],
        },
        # SENT: the answer was never recorded; NO_ANSWER: timeout or dropped connection.
        "carrier_writes": dict(sorted((carrier_writes or {}).items())),
        "steps": steps,
    }


def _cancellation(bulk_change: dict[str, Any]) -> dict[str, Any] | None:
    requested = bulk_change.get("cancel_requested_at")
    if requested is None:
        return None
    return {
        "requested_at": requested.isoformat() if isinstance(requested, datetime) else str(requested),
        "by": bulk_change.get("cancelled_by"),
        "reason": bulk_change.get("cancel_reason"),
    }


def outcome_key(report: dict[str, Any]) -> str:
    """What the customer is told, as a key: one notification per distinct key."""
    return (
        f"{report['status']}:devices={report['devices']}:succeeded={report['succeeded']}"
        f":failed={report['failed']}:unknown={report.get('outcome_unknown', 0)}"
        f":ips={report['static_ip']['assigned']}"
        + (f":cancelled={report['cancelled']}" if report.get("cancelled") else "")
    )


def run_note(
    bulk_change: Mapping[str, Any], report: Mapping[str, Any] | None, plan: Mapping[str, Any] | None
) -> str:
    """The bulk change's outcome in a few Markdown lines, for its DAG run's note in the Airflow UI.

    A green run can hold failed devices: the note says so where the user looks."""
    bc_id = bulk_change["id"]
    if report is None:
        if plan is not None and plan.get("dry_run") and bulk_change.get("status") == "NEW":
            problems = plan.get("problems") or []
            head = (
                f"**Dry run of bulk change {bc_id}**: {plan['to_send']:,} line(s) in {plan['batches']:,} "
                f"call(s), {plan['static_ip']['devices']:,} static IP(s); nothing sent"
            )
            return "\n".join([head, *(f"- problem: {p}" for p in problems)])
        status = bulk_change.get("status")
        if status in ("PROCESSED", "ERROR", "CANCELLED"):  # ended before any device work (no report)
            return f"**Bulk change {bc_id}: {status}**: {bulk_change.get('status_details') or ''}".rstrip(
                ": "
            )
        return (
            f"**Bulk change {bc_id}: {status}** (not finished: "
            f"{bulk_change.get('status_details') or 'see the failed task'})"
        )
    lines = [
        f"**Bulk change {bc_id}: {report['status']}**: {report['succeeded']:,} of {report['devices']:,} "
        "line(s) activated"
        + (f", {report['failed']:,} failed" if report.get("failed") else "")
        + (f", {report['outcome_unknown']:,} outcome unknown" if report.get("outcome_unknown") else "")
        + (f", {report['cancelled']:,} cancelled" if report.get("cancelled") else "")
    ]
    cancellation = report.get("cancellation")
    if cancellation:
        lines.append(f"- cancelled by {cancellation.get('by')}: {cancellation.get('reason')}")
    for entry in list(report.get("failures_by_reason") or [])[:5]:
        lines.append(f"- {entry['devices']:,} device(s), {entry.get('class', '?')}: {entry['reason'][:200]}")
    more = len(report.get("failures_by_reason") or []) - 5 + omitted_reasons(report)
    if more > 0:
        lines.append(f"- … {more} more reason(s): see the report")
    return "\n".join(lines)
