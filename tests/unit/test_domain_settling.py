"""Every branch of settling an activation answer (domain/settling.py), without HTTP or a database."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from telegence_activation.domain.activation import ServiceState
from telegence_activation.domain.report import is_outcome_unknown
from telegence_activation.domain.settling import (
    Round,
    Settled,
    requests_to_verify,
    settle_answer,
    settle_unanswered,
)

A, B, C, D = "89014100000000000011", "89014100000000000029", "89014100000000000037", "89014100000000000045"
ACCOUNTS = {A: "BAN-1", B: "BAN-1", C: "BAN-1", D: "BAN-1"}


@dataclass
class Answer:
    """The parts of the hook's TelegenceResponse that settling reads."""

    status: int
    body: Any = None
    text: str = ""
    error: str | None = None
    ambiguous: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and self.error is None

    @property
    def exhausted(self) -> bool:
        return self.error is not None

    @property
    def outcome_unknown(self) -> bool:
        return self.exhausted and self.ambiguous

    def describe(self) -> str:
        return f"POST /activate: {self.error or f'HTTP {self.status}'} after 3 attempt(s)"


def element(iccid: str, request_id: str = "REQ-1", account: str = "BAN-1") -> dict[str, Any]:
    return {
        "id": request_id,
        "billingAccount": {"id": account},
        "service": {"status": "pending", "serviceCharacteristic": [{"name": "sim", "value": iccid}]},
    }


def accepted(*iccids: str) -> Answer:
    body = [element(i) for i in iccids]
    return Answer(201, body, json.dumps(body))


def duplicates(**existing: str) -> Answer:
    body = {
        "message": "Duplicate activation",
        "duplicates": [{"sim": sim, "existingRequestId": req} for sim, req in existing.items()],
    }
    return Answer(409, body, json.dumps(body))


def state(iccid: str, request_id: str, account: str | None) -> ServiceState:
    return ServiceState(iccid, request_id, "pending", None, None, account)


def by_iccid(result: Round) -> dict[str, Settled]:
    return {s.iccid: s for s in result.settled}


def test_an_accepted_call_makes_every_device_pending_under_its_own_request_id() -> None:
    result = settle_answer([A, B], accepted(A, B), ACCOUNTS, {})
    assert [(s.iccid, s.status, s.request_id) for s in result.settled] == [
        (A, "PENDING", "REQ-1"),
        (B, "PENDING", "REQ-1"),
    ]
    assert result.resend == [] and result.warnings == []
    assert json.loads(by_iccid(result)[A].response_text or "")["iccid"] == A  # the device's own part


def test_a_2xx_that_leaves_a_device_out_still_accepted_it_under_the_shared_request_id() -> None:
    answer = accepted(A)
    result = by_iccid(settle_answer([A, B], answer, ACCOUNTS, {}))
    assert result[B].status == "PENDING" and result[B].request_id == "REQ-1"
    assert "missing from the carrier's answer" in result[B].details
    assert result[B].response_text == answer.text  # the whole answer, to show what was missing
    assert "missing" not in result[A].details


def test_an_unreadable_2xx_leaves_every_device_unknown_never_error() -> None:
    result = settle_answer([A, B], Answer(200, {"not": "a list"}, '{"not": "a list"}'), ACCOUNTS, {})
    assert {s.status for s in result.settled} == {"UNKNOWN"}
    assert all(is_outcome_unknown(s.details) for s in result.settled)
    assert "malformed HTTP 200" in result.settled[0].details


def test_a_lost_answer_is_unknown_and_an_unreachable_carrier_is_api_failed() -> None:
    lost = settle_answer([A], Answer(0, error="read timeout", ambiguous=True), ACCOUNTS, {})
    assert lost.settled[0].status == "UNKNOWN" and is_outcome_unknown(lost.settled[0].details)
    assert "read timeout" in lost.settled[0].details
    down = settle_answer([A, B], Answer(503, error="HTTP 503", ambiguous=False), ACCOUNTS, {})
    assert [s.status for s in down.settled] == ["API_FAILED", "API_FAILED"]
    assert down.settled[0].details.startswith("carrier unavailable: ")
    assert not is_outcome_unknown(down.settled[0].details)


def test_a_partial_409_adopts_only_the_device_s_own_account_and_resends_the_rest() -> None:
    answer = duplicates(**{A: "OLD-A", B: "OLD-B", C: "OLD-C"})
    assert requests_to_verify(answer, [A, B, C, D]) == {"OLD-A", "OLD-B", "OLD-C"}
    existing = {
        "OLD-A": {A: state(A, "OLD-A", "BAN-1")},  # the device's own account: adopt
        "OLD-B": {B: state(B, "OLD-B", "BAN-9")},  # another customer's line: never adopted
        # OLD-C: the carrier would not tell: unverified
    }
    result = settle_answer([A, B, C, D], answer, ACCOUNTS, existing)
    settled = by_iccid(result)
    assert (settled[A].status, settled[A].request_id) == ("PENDING", "OLD-A")
    assert "recovered from the carrier's duplicate-activation answer" in settled[A].details
    assert (settled[B].status, settled[B].request_id) == ("ERROR", None)
    assert "another billing account (BAN-9" in settled[B].details
    assert settled[C].status == "UNKNOWN" and is_outcome_unknown(settled[C].details)
    assert D not in settled and result.resend == [D]
    assert json.loads(settled[B].response_text or "") == {
        "sim": B,
        "existingRequestId": "OLD-B",
        "billingAccount": "BAN-9",
    }


def test_a_409_is_verified_only_for_devices_of_this_call() -> None:
    answer = duplicates(**{A: "OLD-A", D: "OLD-D"})
    assert requests_to_verify(answer, [A, B]) == {"OLD-A"}
    assert requests_to_verify(accepted(A), [A]) == set()
    assert requests_to_verify(Answer(409, {"message": "no list"}), [A]) == set()


def test_a_409_naming_none_of_the_devices_is_a_refusal_of_the_whole_call() -> None:
    result = settle_answer([A, B], duplicates(**{D: "OLD-D"}), ACCOUNTS, {})
    assert [s.status for s in result.settled] == ["ERROR", "ERROR"]
    assert result.settled[0].details == "carrier refused the activation: HTTP 409: Duplicate activation"
    assert result.resend == []


def test_an_unreadable_409_refuses_the_call_and_says_why() -> None:
    result = settle_answer([A], Answer(409, {"message": "Conflict"}, '{"message": "Conflict"}'), ACCOUNTS, {})
    assert result.settled[0].status == "ERROR" and "HTTP 409: Conflict" in result.settled[0].details
    assert result.warnings == ["Unreadable 409 answer: 409 answer without a 'duplicates' list"]


def test_another_4xx_refuses_every_device_with_the_carrier_s_message() -> None:
    body = {"message": "Bad request", "errorDescription": "ratePlan unknown"}
    result = settle_answer([A, B], Answer(400, body, json.dumps(body)), ACCOUNTS, {})
    assert {s.details for s in result.settled} == {
        "carrier refused the activation: HTTP 400: Bad request: ratePlan unknown"
    }
    bare = settle_answer([A], Answer(404, None, ""), ACCOUNTS, {})
    assert bare.settled[0].details == "carrier refused the activation: HTTP 404: HTTP 404"


def test_devices_still_unsettled_after_the_last_round_are_retryable() -> None:
    settled = settle_unanswered([A, B], 5, "last answer")
    assert [(s.status, s.response_text) for s in settled] == [("API_FAILED", "last answer")] * 2
    assert settled[0].details == "no usable carrier answer after 5 activation calls"
    assert settle_unanswered([], 5, None) == []


def test_mixed_rounds_settle_each_device_exactly_once() -> None:
    """409 for two devices, then the resend accepted: every device settled once, nothing twice."""
    remaining = [A, B, C]
    answers = [duplicates(**{A: "OLD-A", B: "OLD-B"}), accepted(C)]
    existing = {"OLD-A": {A: state(A, "OLD-A", "BAN-1")}, "OLD-B": {B: state(B, "OLD-B", None)}}
    outcomes: list[Settled] = []
    for answer in answers:
        result = settle_answer(remaining, answer, ACCOUNTS, existing)
        outcomes += result.settled
        remaining = result.resend
    assert remaining == []
    assert [(s.iccid, s.status) for s in outcomes] == [(A, "PENDING"), (B, "UNKNOWN"), (C, "PENDING")]
