"""Static IP provisioning: request bodies, batch ids, status classification, address checks."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

IPProgress = Literal["done", "failed", "in_progress"]


def parse_batch_id(message: Any) -> str:
    """The provisioning batch id: the last word of the answer's ``message``, which must be a UUID."""
    if not isinstance(message, str) or not message.strip():
        raise ValueError("provisioning answer has no message")
    last = message.strip().split()[-1].strip(".,;")
    try:
        return str(uuid.UUID(last))
    except ValueError as exc:
        raise ValueError(f"provisioning answer does not end with a batch id UUID: {message!r}") from exc


def classify_ip_status(entry: Mapping[str, Any]) -> IPProgress:
    """Done when profileCheck has Success, ipReservation Reserved and profileUpdate Complete;
    failed when any of the three has Fail or Error; otherwise still in progress."""
    fields = [str(entry.get(k) or "") for k in ("profileCheck", "ipReservation", "profileUpdate")]
    if any("fail" in f.lower() or "error" in f.lower() for f in fields):
        return "failed"
    check, reservation, update = fields
    if "Success" in check and "Reserved" in reservation and "Complete" in update:
        return "done"
    return "in_progress"


def assigned_address(entry: Mapping[str, Any]) -> str | None:
    record = entry.get("ipAddressRecord")
    if isinstance(record, Mapping):
        value = record.get("ipAddress")
        return str(value) if value else None
    return None


def ip_problem(address: str | None, customer_range: str | None) -> str | None:
    """Why an assigned address is not acceptable, or None: it must be IPv4 and inside the range."""
    if not address:
        return "IP provisioning complete but no IP address assigned"
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return f"assigned IP address '{address}' is not a valid IPv4 address"
    if customer_range and ip not in ipaddress.IPv4Network(customer_range, strict=False):
        return f"assigned IP address {ip} is outside the customer range {customer_range}"
    return None


def failure_text(entry: Mapping[str, Any]) -> str:
    """A readable reason for a failed provisioning entry."""
    parts = [
        f"{k}={entry.get(k)}" for k in ("profileCheck", "ipReservation", "profileUpdate") if entry.get(k)
    ]
    message = str(entry.get("message") or "").strip()
    return "IP provisioning failed: " + (f"{message} ({', '.join(parts)})" if message else ", ".join(parts))


@dataclass(frozen=True)
class Subscriber:
    """One line to provision: its MDN, reserved address and static IP options."""

    subscriber_number: str
    ip_address: str
    access_point_name: str
    lte_indicator: str
    default_apn: str


def provisioning_request(
    pdp_name: str, billing_account: str, subscribers: list[Subscriber], effective_date: str
) -> dict[str, Any]:
    """The body of a static IP provisioning batch."""
    return {
        "pdpName": pdp_name,
        "billingAccountNumber": billing_account,
        "subscriber": [
            {
                "subscriberNumber": s.subscriber_number,
                "ipAddressRecord": {"ipAddress": s.ip_address},
                "lteIndicator": s.lte_indicator,
                "defaultAPNIndicator": s.default_apn,
                "accessPointName": s.access_point_name,
                "effectiveDate": effective_date,
            }
            for s in subscribers
        ],
    }


def reserved_addresses(body: Any) -> list[str]:
    """Addresses of a reservation answer (fewer than asked, or none, means the pool is short)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("ipAddressRecords"), list):
        raise ValueError("reservation answer without 'ipAddressRecords'")
    return [
        str(r["ipAddress"]) for r in body["ipAddressRecords"] if isinstance(r, Mapping) and r.get("ipAddress")
    ]


PriorSubmission = Literal["taken", "failed", "not_submitted", "unknown"]


def prior_submission(status: int, body: Any, subscriber_number: str) -> tuple[PriorSubmission, str | None]:
    """Read a provisioning status answer asked by ``subscriber-number`` before submitting again.

    ``taken`` (with its batch id): a provisioning of the subscriber is done or still running, never
    submit it again; ``failed``: the carrier finished it as failed, a new submission is safe;
    ``not_submitted`` (404, or no entry for the subscriber): nothing was taken; ``unknown``: no
    usable answer, ask again later.
    """
    if status == 404:
        return "not_submitted", None
    if not 200 <= status < 300 or not isinstance(body, list):
        return "unknown", None
    entries = [
        e for e in body if isinstance(e, Mapping) and str(e.get("subscriberNumber")) == subscriber_number
    ]
    if not entries:
        return "not_submitted", None
    entry = entries[-1]
    batch_id = entry.get("batchId")
    if classify_ip_status(entry) == "failed":
        return "failed", str(batch_id) if batch_id else None
    if not batch_id:
        return "unknown", None
    return "taken", str(batch_id)
