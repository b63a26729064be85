"""Static IP domain rules: batch ids, status classification, address checks, request bodies."""

from __future__ import annotations

from typing import Any

import pytest

from telegence_activation.domain.ip import (
    Subscriber,
    assigned_address,
    classify_ip_status,
    failure_text,
    ip_problem,
    parse_batch_id,
    provisioning_request,
    reserved_addresses,
)

BATCH = "8081b1f0-d070-11eb-a2ea-a0cec8c59839"


# ------------------------------------------------------------------------------------ parse_batch_id


@pytest.mark.parametrize(
    "message",
    [
        f"Your request has been received and is being processed. batch-id: {BATCH}",
        f"batch-id: {BATCH}.",
        f"  received {BATCH};  ",
        f"received {BATCH.upper()}",
        BATCH,
    ],
)
def test_parse_batch_id_takes_the_uuid_in_the_last_word(message: str) -> None:
    assert parse_batch_id(message) == BATCH


@pytest.mark.parametrize(
    "message",
    [
        "Your request has been received",
        f"batch-id: {BATCH} received",
        "batch-id: 8081b1f0-d070-11eb-a2ea",
        f"batch-id:{BATCH}",
    ],
)
def test_parse_batch_id_refuses_a_message_whose_last_word_is_not_a_uuid(message: str) -> None:
    with pytest.raises(ValueError, match="does not end with a batch id UUID"):
        parse_batch_id(message)


@pytest.mark.parametrize("message", [None, "", "   ", 42, ["batch"]])
def test_parse_batch_id_refuses_a_missing_message(message: Any) -> None:
    with pytest.raises(ValueError, match="provisioning answer has no message"):
        parse_batch_id(message)


# -------------------------------------------------------------------------------- classify_ip_status


def _entry(check: Any = "Success", reservation: Any = "Reserved", update: Any = "Complete") -> dict[str, Any]:
    return {"profileCheck": check, "ipReservation": reservation, "profileUpdate": update}


def test_classify_ip_status_done_when_success_reserved_and_complete() -> None:
    assert classify_ip_status(_entry()) == "done"


def test_classify_ip_status_done_when_fields_only_contain_the_words() -> None:
    assert classify_ip_status(_entry("Profile Check Success", "IP Reserved", "Update Complete")) == "done"


@pytest.mark.parametrize(
    "entry",
    [
        _entry(update="In Progress"),
        _entry(update="Pending"),
        _entry(reservation="Reserving"),
        _entry(check="In Progress", reservation="", update=""),
        _entry(check=None, reservation=None, update=None),
        {},
        {"profileCheck": "Success", "ipReservation": "Reserved"},
    ],
    ids=["update-in-progress", "update-pending", "reserving", "check-only", "nulls", "empty", "no-update"],
)
def test_classify_ip_status_in_progress_until_all_three_are_done(entry: dict[str, Any]) -> None:
    assert classify_ip_status(entry) == "in_progress"


@pytest.mark.parametrize(
    "entry",
    [
        _entry(check="Failed"),
        _entry(reservation="Failure"),
        _entry(update="Error"),
        _entry(update="Internal error"),
        _entry(check="FAIL"),
        _entry(check="In Progress", reservation="", update="Error"),
    ],
    ids=["check-failed", "reservation-failure", "update-error", "lower-error", "upper-fail", "error-early"],
)
def test_classify_ip_status_failed_when_any_field_has_fail_or_error(entry: dict[str, Any]) -> None:
    assert classify_ip_status(entry) == "failed"


def test_classify_ip_status_failure_wins_over_done_words() -> None:
    assert classify_ip_status(
        _entry(check="Success", reservation="Reserved", update="Complete with error")
    ) == ("failed")


def test_classify_ip_status_ignores_the_message_field() -> None:
    entry = {**_entry(), "message": "previous attempt failed with error"}
    assert classify_ip_status(entry) == "done"


# ---------------------------------------------------------------------------------- assigned_address


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"ipAddressRecord": {"ipAddress": "10.20.0.7"}}, "10.20.0.7"),
        ({"ipAddressRecord": {"ipAddress": ""}}, None),
        ({"ipAddressRecord": {"ipAddress": None}}, None),
        ({"ipAddressRecord": {}}, None),
        ({"ipAddressRecord": None}, None),
        ({"ipAddressRecord": ["10.20.0.7"]}, None),
        ({}, None),
    ],
)
def test_assigned_address(entry: dict[str, Any], expected: str | None) -> None:
    assert assigned_address(entry) == expected


# ---------------------------------------------------------------------------------------- ip_problem


def test_ip_problem_accepts_an_address_inside_the_range() -> None:
    assert ip_problem("10.20.0.7", "10.20.0.0/24") is None
    assert ip_problem("10.20.0.255", "10.20.0.0/24") is None


def test_ip_problem_accepts_any_ipv4_when_there_is_no_range() -> None:
    assert ip_problem("192.0.2.1", None) is None
    assert ip_problem("192.0.2.1", "") is None


def test_ip_problem_rejects_an_address_outside_the_range() -> None:
    assert ip_problem("10.20.1.0", "10.20.0.0/24") == (
        "assigned IP address 10.20.1.0 is outside the customer range 10.20.0.0/24"
    )


def test_ip_problem_tolerates_a_range_with_host_bits_set() -> None:
    # 10.20.0.9/24 is read as the network 10.20.0.0/24.
    assert ip_problem("10.20.0.200", "10.20.0.9/24") is None
    assert ip_problem("10.21.0.1", "10.20.0.9/24") is not None


@pytest.mark.parametrize("address", ["2001:db8::1", "10.20.0.256", "not-an-ip", "10.20.0"])
def test_ip_problem_rejects_a_non_ipv4_address(address: str) -> None:
    assert ip_problem(address, "10.20.0.0/24") == (
        f"assigned IP address '{address}' is not a valid IPv4 address"
    )


@pytest.mark.parametrize("address", [None, ""])
def test_ip_problem_reports_a_missing_address(address: str | None) -> None:
    assert ip_problem(address, "10.20.0.0/24") == "IP provisioning complete but no IP address assigned"


# -------------------------------------------------------------------------------------- failure_text


def test_failure_text_with_message_lists_the_fields_in_brackets() -> None:
    entry = {
        "profileCheck": "Success",
        "ipReservation": "Failed",
        "profileUpdate": None,
        "message": " Pool exhausted ",
    }
    assert failure_text(entry) == (
        "IP provisioning failed: Pool exhausted (profileCheck=Success, ipReservation=Failed)"
    )


def test_failure_text_without_message_lists_the_fields() -> None:
    entry = {"profileCheck": "Success", "ipReservation": "Reserved", "profileUpdate": "Error", "message": ""}
    assert failure_text(entry) == (
        "IP provisioning failed: profileCheck=Success, ipReservation=Reserved, profileUpdate=Error"
    )


# ------------------------------------------------------------------------------ provisioning_request


def test_provisioning_request_has_the_contract_shape() -> None:
    subscribers = [
        Subscriber("2145550100", "10.20.0.7", "iot.static.apn", "Y", "N"),
        Subscriber("2145550101", "10.20.0.8", "other.apn", "N", "Y"),
    ]
    assert provisioning_request("DEMO.PDP", "BAN-1", subscribers, "2026-11-29Z") == {
        "pdpName": "DEMO.PDP",
        "billingAccountNumber": "BAN-1",
        "subscriber": [
            {
                "subscriberNumber": "2145550100",
                "ipAddressRecord": {"ipAddress": "10.20.0.7"},
                "lteIndicator": "Y",
                "defaultAPNIndicator": "N",
                "accessPointName": "iot.static.apn",
                "effectiveDate": "2026-11-29Z",
            },
            {
                "subscriberNumber": "2145550101",
                "ipAddressRecord": {"ipAddress": "10.20.0.8"},
                "lteIndicator": "N",
                "defaultAPNIndicator": "Y",
                "accessPointName": "other.apn",
                "effectiveDate": "2026-11-29Z",
            },
        ],
    }


# -------------------------------------------------------------------------------- reserved_addresses


def test_reserved_addresses_reads_the_records_in_order() -> None:
    body = {"ipAddressRecords": [{"ipAddress": "10.20.0.7"}, {"ipAddress": "10.20.0.3"}], "message": "ok"}
    assert reserved_addresses(body) == ["10.20.0.7", "10.20.0.3"]


def test_reserved_addresses_skips_records_without_an_address() -> None:
    body = {"ipAddressRecords": [{"ipAddress": ""}, {}, "10.0.0.1", None, {"ipAddress": "10.20.0.9"}]}
    assert reserved_addresses(body) == ["10.20.0.9"]


def test_reserved_addresses_of_an_empty_pool_is_empty() -> None:
    assert reserved_addresses({"ipAddressRecords": [], "message": "no addresses left"}) == []


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"message": "ok"},
        {"ipAddressRecords": None},
        {"ipAddressRecords": {"ipAddress": "10.0.0.1"}},
    ],
)
def test_reserved_addresses_refuses_an_answer_without_records_list(body: Any) -> None:
    with pytest.raises(ValueError, match="reservation answer without 'ipAddressRecords'"):
        reserved_addresses(body)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, {"message": "none"}, ("not_submitted", None)),
        (200, [], ("not_submitted", None)),
        (200, [{"subscriberNumber": "2145550199", "batchId": "b"}], ("not_submitted", None)),
        (
            200,
            [
                {
                    "subscriberNumber": "2145550100",
                    "batchId": "b-1",
                    "profileCheck": "Success",
                    "ipReservation": "Pending",
                }
            ],
            ("taken", "b-1"),
        ),
        (
            200,
            [
                {
                    "subscriberNumber": "2145550100",
                    "batchId": "b-2",
                    "profileCheck": "Success",
                    "ipReservation": "Reserved",
                    "profileUpdate": "Complete",
                }
            ],
            ("taken", "b-2"),
        ),
        (
            200,
            [{"subscriberNumber": "2145550100", "batchId": "b-3", "profileCheck": "Failed"}],
            ("failed", "b-3"),
        ),
        (503, None, ("unknown", None)),
        (200, [{"subscriberNumber": "2145550100"}], ("unknown", None)),
    ],
)
def test_an_earlier_submission_is_read_from_the_status_by_subscriber(status, body, expected) -> None:
    from telegence_activation.domain.ip import prior_submission

    assert prior_submission(status, body, "2145550100") == expected
