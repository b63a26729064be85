"""The plan of a bulk change: what a run would send, and the problems found before sending anything.

Built by the ``plan`` step of every run (the approval gate shows it) and, with ``dry_run``, the
only thing a run does: no carrier write, the bulk change stays NEW. Pure: counts in, a dict out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from telegence_activation.domain.activation import MAX_SERVICES_PER_REQUEST

# Reserving addresses is a write (it takes them from the pool); the contract has no read of a
# pool's free addresses, so the plan says how many each PDP must give instead.
POOL_CAPACITY_NOTE = (
    "not readable from the carrier (the contract has no read of a PDP pool; reserving is a write): "
    "the addresses each PDP must have free are listed"
)
MAX_LISTED = 100


def batches_for(devices: int, batch_size: int) -> int:
    """Activation calls for ``devices`` at ``batch_size`` per call (at most 200)."""
    if not 1 <= batch_size <= MAX_SERVICES_PER_REQUEST:
        raise ValueError(f"batch_size must be between 1 and {MAX_SERVICES_PER_REQUEST}, got {batch_size}")
    return -(-devices // batch_size)


def build_plan(
    *,
    bulk_change: Mapping[str, Any],
    by_status: Mapping[str, int],
    batch_size: int,
    static_ip_by_pdp: Mapping[str, int],
    open_elsewhere: Sequence[tuple[int, str, int]],
    credentials_problem: str | None,
    invalid_requests: Sequence[tuple[int, str, str]] | None,
    invalid_count: int,
    dry_run: bool,
    generated_at: datetime,
) -> dict[str, Any]:
    """The plan report. ``invalid_requests`` is None when the stored requests were not checked one
    by one (only a dry run does that); ``open_elsewhere`` and ``invalid_requests`` are
    ``(line, iccid, ...)`` samples of at most ``MAX_LISTED``."""
    to_send = int(by_status.get("NEW", 0)) + int(by_status.get("API_FAILED", 0))
    problems: list[str] = []
    if credentials_problem:
        problems.append(f"credentials: {credentials_problem}")
    if open_elsewhere:
        problems.append(
            f"{len(open_elsewhere)}{'+' if len(open_elsewhere) >= MAX_LISTED else ''} ICCID(s) are open in another "
            "bulk change"
        )
    if invalid_count:
        problems.append(f"{invalid_count} device(s) have a stored request the carrier would refuse")
    if to_send == 0:
        problems.append("no device to send (nothing NEW or API_FAILED)")
    status = str(bulk_change.get("status"))
    if status != "NEW" and not bulk_change.get("dag_run_id"):
        problems.append(f"the bulk change is {status}: only a NEW bulk change can be run")
    return {
        "bulk_change_id": bulk_change["id"],
        "customer_name": bulk_change.get("customer_name"),
        "service_provider_id": bulk_change.get("service_provider_id"),
        "bulk_change_status": status,
        "dry_run": dry_run,
        "generated_at": generated_at.isoformat(),
        "devices": sum(int(n) for n in by_status.values()),
        "by_status": dict(sorted((str(k), int(v)) for k, v in by_status.items())),
        "to_send": to_send,
        "batch_size": batch_size,
        "batches": batches_for(to_send, batch_size),
        "static_ip": {
            "devices": sum(static_ip_by_pdp.values()),
            "by_pdp": dict(sorted(static_ip_by_pdp.items())),
            "pool_capacity": POOL_CAPACITY_NOTE,
        },
        "credentials": credentials_problem or "accepted by the carrier (read-only call)",
        "open_elsewhere": [
            {"line": line, "iccid": iccid, "bulk_change_id": other} for line, iccid, other in open_elsewhere
        ],
        "invalid_requests": None
        if invalid_requests is None
        else [
            {"line": line, "iccid": iccid, "problem": problem} for line, iccid, problem in invalid_requests
        ],
        "invalid_count": invalid_count,
        "problems": problems,
        "ok": not problems,
        "carrier_writes": 0,
    }


def plan_summary_markdown(plan: Mapping[str, Any]) -> str:
    """The plan as a short Markdown text (the approval's body in the Airflow UI)."""
    pdp = plan["static_ip"]["by_pdp"]
    lines = [
        f"**Bulk change {plan['bulk_change_id']}** for {plan.get('customer_name') or 'an unnamed customer'} "
        f"(service provider {plan.get('service_provider_id')})",
        "",
        f"- lines to activate: **{plan['to_send']}** of {plan['devices']}, in {plan['batches']} call(s) of "
        f"up to {plan['batch_size']}",
        f"- static IPs: {plan['static_ip']['devices']}"
        + (" (" + ", ".join(f"{name}: {n}" for name, n in pdp.items()) + ")" if pdp else ""),
        f"- credentials: {plan['credentials']}",
    ]
    if plan["problems"]:
        lines += ["", "**Problems found:**", *(f"- {p}" for p in plan["problems"])]
    else:
        lines += ["", "No problem found."]
    lines += ["", "Approve to send the activations (billed lines); reject to cancel the bulk change."]
    return "\n".join(lines)
