"""Settling the carrier's answers to an activation POST, one round at a time (pure functions).

An activation call carries up to 200 devices; its answer settles each of them:

- a 2xx accepts the whole array: every device PENDING under its request id (the shared one when the
  answer leaves a device out; the status checks settle it);
- a 409 names the SIMs the carrier already has (``existingRequestId``): such a device is adopted
  (PENDING under that request) only when the existing request carries its own billing account, is
  ERROR when the request belongs to another account, and UNKNOWN when the account could not be
  read; the rest of the batch is sent again (the carrier refused it only because of those);
- a 409 that names none of the devices, or any other 4xx/5xx answer, is the carrier refusing the
  whole call: ERROR with its message;
- no usable answer after every retry: UNKNOWN when the carrier may have taken the call (the answer
  was lost; reconciled through the 409 before any resend), API_FAILED when it cannot have.

The caller makes the calls (``hook.activate``, and reads the requests ``requests_to_verify`` names);
these functions decide. Every branch is unit-tested in tests/unit/test_domain_settling.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from telegence_activation.domain.activation import (
    MalformedResponse,
    ServiceState,
    carrier_message,
    duplicate_verdict,
    parse_activation_answer,
    parse_duplicates,
)
from telegence_activation.domain.report import OUTCOME_UNKNOWN

OUTCOME_UNKNOWN_ACTIVATION = (
    f"{OUTCOME_UNKNOWN}: activation (the carrier may have taken it; reconciled before any resend)"
)


class CarrierAnswer(Protocol):
    """What settling reads of a carrier answer (the hook's ``TelegenceResponse`` fits)."""

    @property
    def status(self) -> int: ...
    @property
    def body(self) -> Any: ...
    @property
    def text(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def exhausted(self) -> bool: ...
    @property
    def outcome_unknown(self) -> bool: ...
    def describe(self) -> str: ...


@dataclass(frozen=True)
class Settled:
    """One device's outcome of a round: its status, the reason, the answer to audit."""

    iccid: str
    status: str  # PENDING, ERROR, UNKNOWN or API_FAILED
    details: str
    response_text: str | None
    request_id: str | None = None


@dataclass(frozen=True)
class Round:
    """What one answer settled, which devices to send again, and anything worth a warning."""

    settled: list[Settled]
    resend: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def requests_to_verify(answer: CarrierAnswer, remaining: Sequence[str]) -> set[str]:
    """The existing request ids a 409 names for devices of this call (to read their billing account)."""
    if answer.exhausted or answer.status != 409:
        return set()
    try:
        duplicates = parse_duplicates(answer.body)
    except MalformedResponse:
        return set()
    return {duplicates[iccid] for iccid in remaining if iccid in duplicates}


def settle_answer(
    remaining: Sequence[str],
    answer: CarrierAnswer,
    accounts: Mapping[str, str | None],
    existing: Mapping[str, Mapping[str, ServiceState]],
) -> Round:
    """Settle the devices ``remaining`` of one activation call from the carrier's ``answer``.

    :param accounts: each device's own billing account (from its stored change request).
    :param existing: what the carrier said about the requests ``requests_to_verify`` named
        (``{request id: {iccid: state}}``; a request it would not tell about is left out).
    """
    if answer.exhausted:
        if answer.outcome_unknown:
            status, reason = "UNKNOWN", f"{OUTCOME_UNKNOWN_ACTIVATION}: {answer.describe()}"
        else:
            status, reason = "API_FAILED", f"carrier unavailable: {answer.describe()}"
        return Round([Settled(iccid, status, reason, answer.text) for iccid in remaining])
    if answer.status == 409:
        return _settle_duplicates(remaining, answer, accounts, existing)
    if answer.ok:
        return _settle_accepted(remaining, answer)
    message = carrier_message(answer.body, answer.text or f"HTTP {answer.status}")
    reason = f"carrier refused the activation: HTTP {answer.status}: {message}"
    return Round([Settled(iccid, "ERROR", reason, answer.text) for iccid in remaining])


def settle_unanswered(remaining: Sequence[str], rounds: int, last_text: str | None) -> list[Settled]:
    """Devices still unsettled after the last round (every answer a 409 that took nothing): never
    activated, so API_FAILED (retryable)."""
    reason = f"no usable carrier answer after {rounds} activation calls"
    return [Settled(iccid, "API_FAILED", reason, last_text) for iccid in remaining]


def _settle_accepted(remaining: Sequence[str], answer: CarrierAnswer) -> Round:
    try:
        states = parse_activation_answer(answer.body)
    except MalformedResponse as exc:
        # The hook validates 2xx bodies, so this is a defence: the carrier took the call, but what
        # it answered cannot be read; reconciled like a lost answer.
        reason = f"{OUTCOME_UNKNOWN_ACTIVATION}: malformed HTTP {answer.status} answer: {exc}"
        return Round([Settled(iccid, "UNKNOWN", reason, answer.text) for iccid in remaining])
    shared_id = next(iter(states.values())).request_id  # one request id for the whole call
    settled = []
    for iccid in remaining:
        state = states.get(iccid)
        if state is None:
            # A 2xx accepts the whole array: the status checks settle this device.
            details = f"activation requested (request id {shared_id}); missing from the carrier's answer"
            settled.append(Settled(iccid, "PENDING", details, answer.text, shared_id))
        else:
            details = f"activation requested (request id {state.request_id})"
            settled.append(Settled(iccid, "PENDING", details, json.dumps(state.__dict__), state.request_id))
    return Round(settled)


def _settle_duplicates(
    remaining: Sequence[str],
    answer: CarrierAnswer,
    accounts: Mapping[str, str | None],
    existing: Mapping[str, Mapping[str, ServiceState]],
) -> Round:
    warnings = []
    try:
        duplicates = parse_duplicates(answer.body)
    except MalformedResponse as exc:
        duplicates = {}
        warnings.append(f"Unreadable 409 answer: {exc}")
    known = [iccid for iccid in remaining if iccid in duplicates]
    if not known:
        reason = f"carrier refused the activation: HTTP 409: {carrier_message(answer.body, answer.text)}"
        return Round([Settled(iccid, "ERROR", reason, answer.text) for iccid in remaining], [], warnings)
    settled = []
    for iccid in known:
        request_id = duplicates[iccid]
        state = existing.get(request_id, {}).get(iccid)
        account = state.billing_account if state else None
        text = json.dumps({"sim": iccid, "existingRequestId": request_id, "billingAccount": account})
        verdict = duplicate_verdict(accounts.get(iccid), state)
        if verdict == "adopt":
            details = (
                f"activation already requested (request id {request_id}); recovered from the carrier's "
                "duplicate-activation answer"
            )
            settled.append(Settled(iccid, "PENDING", details, text, request_id))
        elif verdict == "foreign":
            details = (
                f"SIM {iccid} is already pending or active under another billing account "
                f"({account or '?'}, request {request_id}); not adopted"
            )
            settled.append(Settled(iccid, "ERROR", details, text))
        else:
            details = (
                f"{OUTCOME_UNKNOWN_ACTIVATION}: the carrier has SIM {iccid} under request {request_id}, "
                "whose billing account could not be read yet"
            )
            settled.append(Settled(iccid, "UNKNOWN", details, text))
    resend = [iccid for iccid in remaining if iccid not in duplicates]
    return Round(settled, resend, warnings)
