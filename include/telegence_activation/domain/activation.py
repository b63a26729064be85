"""Activation: batches, the POST body, and reading the carrier's answers (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from telegence_activation.domain.models import ChangeRequest

MAX_SERVICES_PER_REQUEST = 200

ServiceOutcome = Literal["active", "rejected", "pending"]


class MalformedResponse(ValueError):
    """A 2xx answer whose body is not what the contract promises (counts as a failed call)."""


@dataclass(frozen=True)
class Batch:
    """One planned activation batch: its number and the device change ids in it, in file order."""

    batch_no: int
    device_change_ids: tuple[int, ...]


def plan_batches(device_change_ids: Sequence[int], batch_size: int) -> list[Batch]:
    """Split ordered device change ids into batches of at most ``batch_size`` (<= 200)."""
    if not 1 <= batch_size <= MAX_SERVICES_PER_REQUEST:
        raise ValueError(f"batch_size must be between 1 and {MAX_SERVICES_PER_REQUEST}, got {batch_size}")
    return [
        Batch(n, tuple(device_change_ids[start : start + batch_size]))
        for n, start in enumerate(range(0, len(device_change_ids), batch_size))
    ]


def group_leaders(batch_numbers: Sequence[int], per_group: int) -> list[int]:
    """First batch of each group of ``per_group`` consecutive batch numbers that hold work.

    A group led by ``n`` covers ``n .. n + per_group - 1``; leaders are at least ``per_group`` apart,
    so groups never overlap, whatever gaps a rerun leaves between the batches still to send.
    """
    if per_group < 1:
        raise ValueError(f"per_group must be at least 1, got {per_group}")
    leaders: list[int] = []
    for number in sorted(batch_numbers):
        if not leaders or number >= leaders[-1] + per_group:
            leaders.append(number)
    return leaders


def activation_item(change_request: Mapping[str, Any]) -> dict[str, Any]:
    """The activation POST item for one stored change request, ``removeOfferingCode`` stripped.

    Raises ``ValueError`` naming the problem when the stored request is unusable.
    """
    try:
        parsed = ChangeRequest.model_validate(change_request)
    except ValidationError as exc:
        raise ValueError(f"stored change request is invalid: {exc.errors()[0]['msg']}") from exc
    return parsed.TelegenceActivationRequest.for_activation()


def remove_offering_codes(change_request: Mapping[str, Any]) -> list[str]:
    """Offering codes the stored request asks to remove once the line is active."""
    return ChangeRequest.model_validate(change_request).TelegenceActivationRequest.remove_offering_codes


def remove_offering_code_patch(code: str) -> dict[str, Any]:
    """The PATCH body that removes one offering code from an active line."""
    return {"serviceCharacteristic": [{"name": "removeOfferingCode", "value": code}], "effectiveDate": ""}


@dataclass(frozen=True)
class ServiceState:
    """What the carrier says about one service of an activation request."""

    iccid: str
    request_id: str
    status: str
    subscriber_number: str | None
    error: str | None
    billing_account: str | None = None

    @property
    def outcome(self) -> ServiceOutcome:
        """``active`` only with a subscriber number: an active line without its MDN is still pending."""
        outcome = classify_service_status(self.status)
        if outcome == "active" and not self.subscriber_number:
            return "pending"
        return outcome


def classify_service_status(status: str | None) -> ServiceOutcome:
    """``active`` and ``rejected`` are final; anything else (pending, reserved, ...) is still pending."""
    normalised = (status or "").strip().lower()
    if normalised == "active":
        return "active"
    if normalised == "rejected":
        return "rejected"
    return "pending"


def parse_activation_answer(body: Any) -> dict[str, ServiceState]:
    """Read an activation POST or status answer: a JSON array, one element per service, keyed by ICCID."""
    if not isinstance(body, list) or not body:
        raise MalformedResponse(f"expected a non-empty JSON array, got {type(body).__name__}")
    states: dict[str, ServiceState] = {}
    for position, element in enumerate(body):
        try:
            service = element["service"]
            request_id = element["id"]
            iccid = next(c["value"] for c in service["serviceCharacteristic"] if c["name"] == "sim")
        except (KeyError, TypeError, StopIteration) as exc:
            raise MalformedResponse(
                f"element {position} lacks id, service or its sim characteristic"
            ) from exc
        if not isinstance(request_id, str) or not request_id:
            raise MalformedResponse(f"element {position} has no request id")
        if not iccid:
            raise MalformedResponse(f"element {position} has an empty sim characteristic")
        states[str(iccid)] = ServiceState(
            iccid=str(iccid),
            request_id=request_id,
            status=str(service.get("status") or element.get("interactionStatus") or "pending"),
            subscriber_number=service.get("subscriberNumber"),
            error=service.get("error"),
            billing_account=_billing_account(element),
        )
    return states


def _billing_account(element: Mapping[str, Any]) -> str | None:
    account = element.get("billingAccount")
    if isinstance(account, Mapping) and account.get("id") not in (None, ""):
        return str(account["id"])
    return None


DuplicateVerdict = Literal["adopt", "foreign", "unverified"]


def duplicate_verdict(device_billing_account: str | None, existing: ServiceState | None) -> DuplicateVerdict:
    """May a 409's ``existingRequestId`` be adopted for a device?

    Only when the existing request's service carries the device's own billing account: ``adopt``.
    Another account's line is ``foreign`` (never adopted); no readable answer is ``unverified``.
    """
    if existing is None or existing.billing_account is None:
        return "unverified"
    if device_billing_account is not None and existing.billing_account == str(device_billing_account):
        return "adopt"
    return "foreign"


def billing_account_of(change_request: Mapping[str, Any]) -> str | None:
    """The billing account of a stored change request (``TelegenceActivationRequest.billingAccount.id``)."""
    request = change_request.get("TelegenceActivationRequest")
    account = request.get("billingAccount") if isinstance(request, Mapping) else None
    if isinstance(account, Mapping) and account.get("id") not in (None, ""):
        return str(account["id"])
    return None


def parse_duplicates(body: Any) -> dict[str, str]:
    """Read a 409 duplicate-activation answer: ``{iccid: existing request id}``."""
    if not isinstance(body, dict) or not isinstance(body.get("duplicates"), list):
        raise MalformedResponse("409 answer without a 'duplicates' list")
    found: dict[str, str] = {}
    for entry in body["duplicates"]:
        if isinstance(entry, dict) and entry.get("sim") and entry.get("existingRequestId"):
            found[str(entry["sim"])] = str(entry["existingRequestId"])
    return found


def carrier_message(body: Any, fallback: str) -> str:
    """The human message of a carrier error answer (``message`` and ``errorDescription``)."""
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("message", "errorDescription") if body.get(k)]
        if parts:
            return ": ".join(parts)
    return fallback


def unanswered(sent: Iterable[str], answered: Mapping[str, object]) -> list[str]:
    """ICCIDs that were sent but are missing from the carrier's answer."""
    return [iccid for iccid in sent if iccid not in answered]
