"""Activation domain rules: batching, the POST item, and reading the carrier's answers."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from telegence_activation.domain.activation import (
    MAX_SERVICES_PER_REQUEST,
    Batch,
    MalformedResponse,
    ServiceState,
    activation_item,
    carrier_message,
    classify_service_status,
    parse_activation_answer,
    parse_duplicates,
    plan_batches,
    remove_offering_code_patch,
    remove_offering_codes,
    unanswered,
)

ICCID_A = "89014100000000000017"
ICCID_B = "89014100000000000025"


def _change_request(*characteristics: dict[str, str]) -> dict[str, Any]:
    return {
        "TelegenceActivationRequest": {
            "billingAccount": {"id": "BAN-1"},
            "relatedParty": [{"role": "subscriber", "firstName": "Ada", "lastName": "Lovelace"}],
            "service": {
                "serviceSpecification": {"id": "12", "href": "Mobility Services"},
                "serviceQualification": {"id": ""},
                "serviceCharacteristic": [
                    {"name": "singleUserCode", "value": "PLAN5"},
                    {"name": "IMEI", "value": "359211080000017"},
                    {"name": "sim", "value": ICCID_A},
                    *characteristics,
                ],
            },
        },
        "CarrierDataGroup": "DG1",
        "CarrierRatePool": None,
        "StaticIPProvision": None,
        "CustomerIPRange": None,
    }


def _answer_element(iccid: str, request_id: str = "REQ-1", **service: Any) -> dict[str, Any]:
    return {
        "id": request_id,
        "interactionStatus": "pending",
        "billingAccount": {"id": "BAN-1"},
        "service": {"serviceCharacteristic": [{"name": "sim", "value": iccid}], **service},
    }


# ---------------------------------------------------------------------------------------- plan_batches


def test_plan_batches_splits_450_by_200_into_200_200_50_in_order() -> None:
    ids = list(range(1000, 1450))
    batches = plan_batches(ids, 200)
    assert [len(b.device_change_ids) for b in batches] == [200, 200, 50]
    assert [b.batch_no for b in batches] == [0, 1, 2]
    assert batches[0].device_change_ids[0] == 1000
    assert batches[1].device_change_ids[0] == 1200
    assert batches[2].device_change_ids == tuple(range(1400, 1450))


def test_plan_batches_keeps_every_id_exactly_once() -> None:
    ids = [7, 3, 9, 1, 5]
    batches = plan_batches(ids, 2)
    assert batches == [Batch(0, (7, 3)), Batch(1, (9, 1)), Batch(2, (5,))]


def test_plan_batches_exact_multiple_has_no_empty_tail() -> None:
    assert [len(b.device_change_ids) for b in plan_batches(list(range(400)), 200)] == [200, 200]


def test_plan_batches_of_nothing_is_no_batch() -> None:
    assert plan_batches([], 50) == []


def test_plan_batches_accepts_the_bounds_1_and_200() -> None:
    assert len(plan_batches([1, 2, 3], 1)) == 3
    assert len(plan_batches(list(range(201)), MAX_SERVICES_PER_REQUEST)) == 2


@pytest.mark.parametrize("size", [0, -1, 201])
def test_plan_batches_rejects_sizes_outside_1_to_200(size: int) -> None:
    with pytest.raises(ValueError, match=f"between 1 and 200, got {size}"):
        plan_batches([1, 2, 3], size)


# ------------------------------------------------------------------------------------ activation_item


def test_activation_item_strips_remove_offering_codes_and_keeps_the_rest() -> None:
    request = _change_request(
        {"name": "offeringCode1", "value": "NABPSOC"},
        {"name": "removeOfferingCode", "value": "OLDSOC"},
        {"name": "removeOfferingCode", "value": "OLDSOC2"},
    )
    item = activation_item(request)
    assert item["service"]["serviceCharacteristic"] == [
        {"name": "singleUserCode", "value": "PLAN5"},
        {"name": "IMEI", "value": "359211080000017"},
        {"name": "sim", "value": ICCID_A},
        {"name": "offeringCode1", "value": "NABPSOC"},
    ]
    assert item["billingAccount"] == {"id": "BAN-1"}
    assert item["service"]["serviceQualification"] == {"id": ""}  # href None is left out
    assert item["relatedParty"][0]["firstName"] == "Ada"
    # The platform-only fields of the stored request never reach the POST item.
    assert "CarrierDataGroup" not in item and "TelegenceActivationRequest" not in item


def test_activation_item_does_not_modify_the_stored_request() -> None:
    request = _change_request({"name": "removeOfferingCode", "value": "OLDSOC"})
    before = copy.deepcopy(request)
    activation_item(request)
    assert request == before


def test_activation_item_names_the_problem_of_an_unusable_request() -> None:
    with pytest.raises(ValueError, match="stored change request is invalid: Field required"):
        activation_item({"CarrierDataGroup": "DG1"})


def test_activation_item_rejects_a_characteristic_without_value() -> None:
    request = _change_request({"name": "offeringCode1"})
    with pytest.raises(ValueError, match="stored change request is invalid"):
        activation_item(request)


def test_remove_offering_codes_lists_them_in_stored_order() -> None:
    request = _change_request(
        {"name": "removeOfferingCode", "value": "B"},
        {"name": "offeringCode1", "value": "X"},
        {"name": "removeOfferingCode", "value": "A"},
    )
    assert remove_offering_codes(request) == ["B", "A"]


def test_remove_offering_codes_is_case_sensitive_on_the_name() -> None:
    assert remove_offering_codes(_change_request({"name": "removeofferingcode", "value": "A"})) == []


def test_remove_offering_code_patch_has_the_contract_shape() -> None:
    assert remove_offering_code_patch("OLDSOC") == {
        "serviceCharacteristic": [{"name": "removeOfferingCode", "value": "OLDSOC"}],
        "effectiveDate": "",
    }


# --------------------------------------------------------------------------- classify_service_status


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("active", "active"),
        ("Active", "active"),
        ("  ACTIVE \n", "active"),
        ("rejected", "rejected"),
        ("Rejected", "rejected"),
        ("pending", "pending"),
        ("reserved", "pending"),
        ("", "pending"),
        (None, "pending"),
        ("inactive", "pending"),
    ],
)
def test_classify_service_status(status: str | None, outcome: str) -> None:
    assert classify_service_status(status) == outcome


# --------------------------------------------------------------------------- parse_activation_answer


def test_parse_activation_answer_keys_services_by_iccid() -> None:
    body = [
        _answer_element(ICCID_A, status="active", subscriberNumber="2145550100", error=None),
        _answer_element(ICCID_B, status="rejected", subscriberNumber=None, error="bad IMEI"),
    ]
    states = parse_activation_answer(body)
    assert states == {
        ICCID_A: ServiceState(ICCID_A, "REQ-1", "active", "2145550100", None, "BAN-1"),
        ICCID_B: ServiceState(ICCID_B, "REQ-1", "rejected", None, "bad IMEI", "BAN-1"),
    }
    assert states[ICCID_A].outcome == "active"
    assert states[ICCID_B].outcome == "rejected"


def test_parse_activation_answer_falls_back_to_interaction_status_then_pending() -> None:
    with_interaction = _answer_element(ICCID_A)  # no service.status, interactionStatus "pending"
    with_interaction["interactionStatus"] = "reserved"
    bare = _answer_element(ICCID_B)
    del bare["interactionStatus"]
    states = parse_activation_answer([with_interaction, bare])
    assert states[ICCID_A].status == "reserved"
    assert states[ICCID_B].status == "pending"
    assert states[ICCID_B].outcome == "pending"


def test_parse_activation_answer_finds_sim_among_other_characteristics() -> None:
    element = _answer_element(ICCID_A, status="pending")
    element["service"]["serviceCharacteristic"] = [
        {"name": "IMEI", "value": "359211080000017"},
        {"name": "sim", "value": ICCID_A},
    ]
    assert list(parse_activation_answer([element])) == [ICCID_A]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(None, id="null"),
        pytest.param([], id="empty-array"),
        pytest.param({"id": "REQ-1"}, id="object-not-array"),
        pytest.param("pending", id="string"),
    ],
)
def test_parse_activation_answer_rejects_a_body_that_is_not_a_non_empty_array(body: Any) -> None:
    with pytest.raises(MalformedResponse, match="expected a non-empty JSON array"):
        parse_activation_answer(body)


@pytest.mark.parametrize(
    "element",
    [
        pytest.param("REQ-1", id="element-not-object"),
        pytest.param({"service": {"serviceCharacteristic": [{"name": "sim", "value": ICCID_A}]}}, id="no-id"),
        pytest.param({"id": "REQ-1"}, id="no-service"),
        pytest.param({"id": "REQ-1", "service": {}}, id="no-characteristics"),
        pytest.param(
            {"id": "REQ-1", "service": {"serviceCharacteristic": [{"name": "IMEI", "value": "1"}]}},
            id="no-sim",
        ),
        pytest.param({"id": "REQ-1", "service": {"serviceCharacteristic": ["sim"]}}, id="char-not-object"),
    ],
)
def test_parse_activation_answer_rejects_an_element_without_id_service_or_sim(element: Any) -> None:
    good = _answer_element(ICCID_B)
    with pytest.raises(MalformedResponse, match="element 1 lacks id, service or its sim characteristic"):
        parse_activation_answer([good, element])


@pytest.mark.parametrize("request_id", ["", None, 42])
def test_parse_activation_answer_requires_a_non_empty_string_request_id(request_id: Any) -> None:
    with pytest.raises(MalformedResponse, match="element 0 has no request id"):
        parse_activation_answer([_answer_element(ICCID_A, request_id=request_id)])


def test_malformed_response_is_a_value_error() -> None:
    # Callers that catch ValueError around parsing must also catch a malformed answer.
    assert issubclass(MalformedResponse, ValueError)


# ---------------------------------------------------------------------------------- parse_duplicates


def test_parse_duplicates_reads_the_409_body() -> None:
    body = {
        "message": "duplicate activation",
        "duplicates": [
            {"sim": ICCID_A, "existingRequestId": "REQ-9"},
            {"sim": ICCID_B, "existingRequestId": "REQ-8"},
        ],
    }
    assert parse_duplicates(body) == {ICCID_A: "REQ-9", ICCID_B: "REQ-8"}


def test_parse_duplicates_skips_incomplete_entries() -> None:
    body = {
        "duplicates": [
            {"sim": ICCID_A},
            {"existingRequestId": "REQ-7"},
            {"sim": "", "existingRequestId": "REQ-6"},
            "garbage",
            {"sim": ICCID_B, "existingRequestId": "REQ-5"},
        ]
    }
    assert parse_duplicates(body) == {ICCID_B: "REQ-5"}


def test_parse_duplicates_of_an_empty_list_is_empty() -> None:
    assert parse_duplicates({"duplicates": []}) == {}


@pytest.mark.parametrize(
    "body",
    [None, [], {"message": "conflict"}, {"duplicates": {"sim": ICCID_A}}, "409"],
    ids=["null", "array", "no-duplicates", "duplicates-not-list", "string"],
)
def test_parse_duplicates_rejects_a_409_without_duplicates_list(body: Any) -> None:
    with pytest.raises(MalformedResponse, match="without a 'duplicates' list"):
        parse_duplicates(body)


# ----------------------------------------------------------------------------------- carrier_message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"message": "Bad request", "errorDescription": "item 3: zip"}, "Bad request: item 3: zip"),
        ({"message": "Bad request"}, "Bad request"),
        ({"errorDescription": "item 3: zip"}, "item 3: zip"),
        ({"message": "", "errorDescription": None}, "fallback"),
        ({"code": 400}, "fallback"),
        (["Bad request"], "fallback"),
        (None, "fallback"),
    ],
)
def test_carrier_message(body: Any, expected: str) -> None:
    assert carrier_message(body, "fallback") == expected


# ---------------------------------------------------------------------------------------- unanswered


def test_unanswered_lists_sent_iccids_missing_from_the_answer_in_sent_order() -> None:
    sent = ["C", "A", "B", "D"]
    assert unanswered(sent, {"A": object(), "D": object(), "Z": object()}) == ["C", "B"]


def test_unanswered_is_empty_when_all_answered() -> None:
    assert unanswered(["A"], {"A": 1}) == []


def test_group_leaders_cover_every_batch_once() -> None:
    from telegence_activation.domain.activation import group_leaders

    assert group_leaders(list(range(10)), 1) == list(range(10))
    assert group_leaders(list(range(10)), 4) == [0, 4, 8]
    # A rerun leaves gaps: groups start at the next batch with work and never overlap.
    assert group_leaders([1, 2, 7, 8, 9, 15], 3) == [1, 7, 15]
    assert group_leaders([], 5) == []
    with pytest.raises(ValueError):
        group_leaders([1], 0)


def test_an_active_service_without_its_subscriber_number_is_still_pending() -> None:
    from telegence_activation.domain.activation import ServiceState

    assert ServiceState("8901", "R", "active", None, None).outcome == "pending"
    assert ServiceState("8901", "R", "active", "2145550100", None).outcome == "active"
    assert ServiceState("8901", "R", "rejected", None, "bad").outcome == "rejected"


def test_a_duplicate_is_adopted_only_under_the_same_billing_account() -> None:
    from telegence_activation.domain.activation import ServiceState, duplicate_verdict

    def existing(account: str | None) -> ServiceState:
        return ServiceState("8901", "R", "pending", None, None, billing_account=account)

    assert duplicate_verdict("BAN-1", existing("BAN-1")) == "adopt"
    assert duplicate_verdict("BAN-1", existing("BAN-2")) == "foreign"
    assert duplicate_verdict(None, existing("BAN-2")) == "foreign"
    assert duplicate_verdict("BAN-1", existing(None)) == "unverified"
    assert duplicate_verdict("BAN-1", None) == "unverified"


def test_the_billing_account_is_read_from_answers_and_stored_requests() -> None:
    from telegence_activation.domain.activation import billing_account_of, parse_activation_answer

    answer = [
        {
            "id": "R",
            "billingAccount": {"id": 287301234567},
            "service": {"status": "pending", "serviceCharacteristic": [{"name": "sim", "value": "8901"}]},
        }
    ]
    assert parse_activation_answer(answer)["8901"].billing_account == "287301234567"
    assert billing_account_of({"TelegenceActivationRequest": {"billingAccount": {"id": "B-9"}}}) == "B-9"
    assert billing_account_of({"TelegenceActivationRequest": {}}) is None
