"""The error catalogue (domain/errors.py): real reasons of the flow, each to its class."""

from __future__ import annotations

import pytest

from telegence_activation.domain.errors import CATALOGUE, ERROR_CLASSES, classify
from telegence_activation.domain.ip import failure_text, ip_problem
from telegence_activation.domain.settling import settle_answer, settle_unanswered
from tests.unit.test_domain_settling import ACCOUNTS, A, Answer, duplicates

# (reason as the flow writes it, catalogue key, class)
EXAMPLES = [
    ("cancelled: bulk change 7 cancelled by alice (wrong plan); never sent", "cancelled", "permanent"),
    (
        "Unable to get Telegence API credentials for service provider 3: no connection telegence_sp_3",
        "credentials",
        "needs_person",
    ),
    ("Write is disabled for service provider 3", "credentials", "needs_person"),
    ("carrier refused the activation: HTTP 401: Invalid app-id", "credentials", "needs_person"),
    (
        "outcome unknown: activation (the carrier may have taken it; reconciled before any resend): "
        "POST /x: read timeout after 3 attempt(s)",
        "outcome_unknown",
        "retryable",
    ),
    (
        "SIM 8901 is already pending or active under another billing account (BAN-9, request R); not adopted",
        "foreign_sim",
        "needs_person",
    ),
    ("stored change request is invalid: Field required", "invalid_request", "permanent"),
    (
        "carrier refused the activation: HTTP 400: Bad request: ratePlan unknown",
        "invalid_request",
        "permanent",
    ),
    (
        "activation rejected by the carrier: Activation rejected by carrier: SIM is not eligible",
        "sim_not_eligible",
        "permanent",
    ),
    (
        "static IP not requested: 2 device(s) of this bulk change failed activation and on_activation_failure=stop",
        "stopped_by_policy",
        "retryable",
    ),
    (
        "assigned IP address 10.9.0.1 is outside the customer range 10.0.0.0/24",
        "ip_out_of_range",
        "needs_person",
    ),
    ("PDP pool apn-1 is short of addresses: asked 50, got 10", "ip_pool_short", "needs_person"),
    ("IP provisioning failed: rejected (profileUpdate=Failed)", "ip_provisioning_failed", "permanent"),
    (
        "activation not confirmed by the carrier before the deadline (2026-11-30T01:00:00)",
        "deadline",
        "retryable",
    ),
    (
        "the carrier does not know activation request R-1 (HTTP 404); retry-failed sends the SIM again",
        "unknown_request",
        "retryable",
    ),
    (
        "API error: subscriber 5550001 missing from the IP provisioning status reply of batch B",
        "unknown_request",
        "retryable",
    ),
    ("carrier unavailable: POST /activate: HTTP 503 after 5 attempt(s)", "carrier_unavailable", "retryable"),
    ("no usable carrier answer after 5 activation calls", "carrier_unavailable", "retryable"),
    ("IP reservation failed: POST /reserve: HTTP 503 after 5 attempt(s)", "carrier_unavailable", "retryable"),
    (
        "offering code SOC1 not removed yet: carrier unavailable: PATCH /s: timeout after 5 attempt(s)",
        "carrier_unavailable",
        "retryable",
    ),
    ("IP reservation refused: HTTP 409: pool locked", "carrier_refused", "permanent"),
    (
        "offering code SOC1 not removed: PATCH /s: HTTP 404 after 1 attempt(s): no such code",
        "carrier_refused",
        "permanent",
    ),
    ("carrier refused the activation: HTTP 409: Duplicate activation", "carrier_refused", "permanent"),
]


@pytest.mark.parametrize(
    ("reason", "key", "error_class"), EXAMPLES, ids=[e[1] + "-" + e[0][:30] for e in EXAMPLES]
)
def test_each_reason_of_the_flow_has_its_class(reason: str, key: str, error_class: str) -> None:
    found = classify(reason)
    assert (found.key, found.error_class) == (key, error_class)
    assert found.hint


def test_every_catalogue_entry_is_exercised_and_every_class_used() -> None:
    assert {key for _r, key, _c in EXAMPLES} == {entry.key for entry in CATALOGUE}
    assert {entry.error_class for entry in CATALOGUE} | {"unknown"} == set(ERROR_CLASSES)


def test_an_answer_nobody_catalogued_is_unknown_not_guessed() -> None:
    assert classify("the carrier sent a haiku").error_class == "unknown"
    assert classify(None).key == "unknown"


def test_reasons_the_domain_writes_are_all_catalogued() -> None:
    """The settling and IP functions' own texts: none may fall through to 'unknown'."""
    reasons = [
        *(
            s.details
            for s in settle_answer([A], Answer(0, error="timeout", ambiguous=True), ACCOUNTS, {}).settled
        ),
        *(s.details for s in settle_answer([A], Answer(503, error="HTTP 503"), ACCOUNTS, {}).settled),
        *(s.details for s in settle_answer([A], Answer(400, {"message": "bad"}), ACCOUNTS, {}).settled),
        *(s.details for s in settle_answer([A], duplicates(**{"X": "R"}), ACCOUNTS, {}).settled),
        *(s.details for s in settle_unanswered([A], 5, None)),
        failure_text({"message": "rejected", "profileUpdate": "Failed"}),
        ip_problem("10.9.0.1", "10.0.0.0/24") or "",
        ip_problem("not-an-ip", "10.0.0.0/24") or "",
    ]
    assert [r for r in reasons if classify(r).error_class == "unknown"] == []


def test_retry_chooses_reasons_by_their_class() -> None:
    # What retry-failed keeps (repository.stage_retry_reasons with this predicate).
    reasons = [
        "carrier unavailable: x after 3 attempt(s)",
        "activation rejected by the carrier: no",
        "carrier unavailable: x after 3 attempt(s)",
        "something new",
        "activation not confirmed by the carrier before the deadline (t)",
    ]

    def of(classes: set[str]) -> list[str]:
        return [r for r in dict.fromkeys(reasons) if classify(r).error_class in classes]

    assert of({"retryable"}) == [reasons[0], reasons[4]]
    assert of({"permanent", "unknown"}) == [reasons[1], reasons[3]]
