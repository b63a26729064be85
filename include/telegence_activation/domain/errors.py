"""The error catalogue: every reason a device can fail, mapped to a class and an operator hint.

A device's reason (``device_change.status_details``) names the carrier's answer (status, message)
or our own verdict. The catalogue reads it, in order, first match wins:

- ``retryable``: nothing is wrong with the request; sending it again later can succeed
  (the carrier was unavailable, a deadline passed, an answer was lost). ``retry-failed`` retries
  these by default.
- ``permanent``: the carrier refused this request for a reason a resend cannot change (invalid
  request, SIM not eligible). Fix the data, then ``retry-failed --all``.
- ``needs_person``: someone must act outside the flow first (credentials, another customer's SIM,
  an address outside the customer's range, a PDP pool short of addresses).
- ``unknown``: no entry matches; listed apart in the report so the catalogue can grow.

Pure: no Airflow, no database. The table is documented in the README ("Error catalogue").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ErrorClass = Literal["retryable", "permanent", "needs_person", "unknown"]
ERROR_CLASSES: tuple[ErrorClass, ...] = ("retryable", "permanent", "needs_person", "unknown")


@dataclass(frozen=True)
class CatalogueEntry:
    """One kind of failure: a stable key, the pattern of its reason, its class and a hint."""

    key: str
    pattern: re.Pattern[str]
    error_class: ErrorClass
    hint: str


def _entry(key: str, pattern: str, error_class: ErrorClass, hint: str) -> CatalogueEntry:
    return CatalogueEntry(key, re.compile(pattern, re.IGNORECASE), error_class, hint)


CATALOGUE: tuple[CatalogueEntry, ...] = (
    # Our own verdicts first: they are precise.
    _entry(
        "cancelled",
        r"^cancelled",
        "permanent",
        "The bulk change was cancelled before this device was sent; order it again to activate it.",
    ),
    _entry(
        "credentials",
        r"Unable to get Telegence API credentials|Write is disabled for service provider|HTTP 40[13]\b",
        "needs_person",
        "Fix the carrier connection (app-id / app-secret, write permission), then retry-failed --all.",
    ),
    _entry(
        "outcome_unknown",
        r"^outcome unknown",
        "retryable",
        "The carrier may have taken this write; retry-failed reconciles it first and never sends it twice.",
    ),
    _entry(
        "foreign_sim",
        r"under another billing account",
        "needs_person",
        "The SIM belongs to another customer's line: check the order's ICCID with the customer.",
    ),
    _entry(
        "invalid_request",
        r"stored change request is invalid|HTTP 400\b|HTTP 422\b",
        "permanent",
        "The request is invalid for the carrier: correct the device's data, then retry-failed --all.",
    ),
    _entry(
        "sim_not_eligible",
        r"activation rejected by the carrier",
        "permanent",
        "The carrier rejected the line (see its message): replace the SIM or fix the plan, then retry.",
    ),
    _entry(
        "stopped_by_policy",
        r"static IP not requested: .* failed activation",
        "retryable",
        "Withheld because other devices failed activation (on_activation_failure=stop): retry after those.",
    ),
    _entry(
        "ip_out_of_range",
        r"outside the customer range|is not a valid IPv4 address",
        "needs_person",
        "The carrier assigned an address the customer cannot use: check the PDP pool and the customer range.",
    ),
    _entry(
        "ip_pool_short",
        r"PDP pool .* is short of addresses",
        "needs_person",
        "The PDP pool has too few free addresses: extend it with the carrier, then retry-failed.",
    ),
    _entry(
        "ip_provisioning_failed",
        r"IP provisioning failed",
        "permanent",
        "The carrier could not provision the static IP (see its stage): check the line's profile.",
    ),
    _entry(
        "deadline",
        r"not confirmed by the carrier before the deadline",
        "retryable",
        "The carrier did not finish in time: retry-failed checks again with a new deadline.",
    ),
    _entry(
        "unknown_request",
        r"does not know activation request|missing from the IP provisioning status",
        "retryable",
        "The carrier lost track of the request: retry-failed sends it again (duplicates are caught).",
    ),
    _entry(
        "carrier_unavailable",
        r"carrier unavailable|no usable carrier answer|failed: .*after \d+ attempt|not removed yet",
        "retryable",
        "The carrier stayed unavailable (timeouts, 5xx, 429): retry-failed once it answers again.",
    ),
    _entry(
        "carrier_refused",
        r"refused: HTTP \d+|refused the activation: HTTP \d+|not removed: ",
        "permanent",
        "The carrier refused the call (see its message): resolve the cause, then retry-failed --all.",
    ),
)


@dataclass(frozen=True)
class Classification:
    """What the catalogue says about one reason."""

    key: str
    error_class: ErrorClass
    hint: str


UNKNOWN = Classification(
    "unknown", "unknown", "Not in the error catalogue: read the reason and the audit trail."
)


def classify(reason: str | None) -> Classification:
    """The catalogue entry of a failure reason (first match wins), or ``unknown``."""
    text = reason or ""
    for entry in CATALOGUE:
        if entry.pattern.search(text):
            return Classification(entry.key, entry.error_class, entry.hint)
    return UNKNOWN
