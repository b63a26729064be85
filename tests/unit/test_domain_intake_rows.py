"""RowValidator and header checks without a database (the DB path is in tests/test_intake.py)."""

from __future__ import annotations

from typing import Any

import pytest

from telegence_activation.domain.identifiers import make_iccid, make_imei
from telegence_activation.domain.intake import IntakeOptions, RowError, RowValidator, header_problems

ICCID_1, ICCID_2 = make_iccid(1), make_iccid(2)
IMEI_1, IMEI_2 = make_imei(1), make_imei(2)


def _row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "iccid": ICCID_1,
        "imei": IMEI_1,
        "rate_plan_code": "IOTPLAN5GB",
        "zip_code": "75201",
    }
    row.update(values)
    return row


def _validator(billing_account: str = "BAN-100") -> RowValidator:
    return RowValidator(IntakeOptions(billing_account, carrier_data_group="DG1", carrier_rate_pool="RP1"))


def _problems(errors: list[RowError]) -> list[str]:
    return [str(e) for e in errors]


def _characteristics(change_request: dict[str, Any]) -> list[dict[str, str]]:
    return change_request["TelegenceActivationRequest"]["service"]["serviceCharacteristic"]


def test_a_minimal_row_gets_defaults_and_no_static_ip() -> None:
    valid, errors = _validator().validate(2, _row())
    assert errors == []
    assert valid is not None
    assert (valid.line, valid.iccid, valid.imei) == (2, ICCID_1, IMEI_1)
    request = valid.change_request
    assert _characteristics(request) == [
        {"name": "singleUserCode", "value": "IOTPLAN5GB"},
        {"name": "serviceZipCode", "value": "75201"},
        {"name": "equipmentType", "value": "G"},
        {"name": "deviceTechnologyType", "value": "UMTS"},
        {"name": "IMEI", "value": IMEI_1},
        {"name": "sim", "value": ICCID_1},
    ]
    assert request["StaticIPProvision"] is None
    assert request["CustomerIPRange"] is None
    assert request["TelegenceActivationRequest"]["billingAccount"] == {"id": "BAN-100"}
    assert request["TelegenceActivationRequest"]["relatedParty"][0]["address"]["zipCode"] == "75201"


def test_values_are_trimmed_and_missing_values_read_as_empty() -> None:
    valid, errors = _validator().validate(
        2, _row(iccid=f"  {ICCID_1} ", zip_code="75201-1234 ", first_name=None, city=" Dallas ")
    )
    assert errors == []
    assert valid is not None
    assert valid.iccid == ICCID_1
    party = valid.change_request["TelegenceActivationRequest"]["relatedParty"][0]
    assert party["firstName"] == ""
    assert party["address"]["city"] == "Dallas"
    assert party["address"]["zipCode"] == "75201-1234"


def test_a_line_with_more_fields_than_the_header_is_rejected() -> None:
    # csv.DictReader puts surplus fields under the key None.
    valid, errors = _validator().validate(7, {**_row(), None: ["surplus"]})
    assert valid is None
    assert _problems(errors) == ["line 7: (line): has more fields than the header"]


def test_static_ip_defaults_lte_y_and_default_apn_n() -> None:
    valid, errors = _validator().validate(2, _row(pdp_name="DEMO.PDP", static_ip_apn="iot.static.apn"))
    assert errors == []
    assert valid is not None
    assert valid.change_request["StaticIPProvision"] == {
        "PDPName": "DEMO.PDP",
        "StaticIPAPN": "iot.static.apn",
        "LteIndicator": "Y",
        "DefaultAPN": "N",
    }


def test_static_ip_indicators_are_case_insensitive() -> None:
    valid, errors = _validator().validate(
        2, _row(pdp_name="P", static_ip_apn="apn", lte_indicator="n", default_apn="y")
    )
    assert errors == []
    assert valid is not None
    assert valid.change_request["StaticIPProvision"]["LteIndicator"] == "N"
    assert valid.change_request["StaticIPProvision"]["DefaultAPN"] == "Y"


def test_customer_range_without_pdp_name_is_rejected() -> None:
    valid, errors = _validator().validate(4, _row(customer_ip_range="10.20.0.0/24"))
    assert valid is None
    assert _problems(errors) == [
        "line 4: customer_ip_range: is given but the device asks for no static IP (pdp_name empty)"
    ]


def test_static_ip_options_without_pdp_name_are_each_rejected() -> None:
    valid, errors = _validator().validate(4, _row(static_ip_apn="apn", lte_indicator="Y", default_apn="N"))
    assert valid is None
    assert [e.column for e in errors] == ["static_ip_apn", "lte_indicator", "default_apn"]
    assert {e.message for e in errors} == {"is given but pdp_name is empty (no static IP asked)"}


def test_customer_range_is_normalised_and_kept_with_a_static_ip() -> None:
    valid, errors = _validator().validate(
        2, _row(pdp_name="P", static_ip_apn="apn", customer_ip_range=" 10.20.0.0/16 ")
    )
    assert errors == []
    assert valid is not None
    assert valid.change_request["CustomerIPRange"] == "10.20.0.0/16"


def test_ipv6_customer_range_is_rejected() -> None:
    valid, errors = _validator().validate(
        2, _row(pdp_name="P", static_ip_apn="apn", customer_ip_range="2001:db8::/32")
    )
    assert valid is None
    assert [e.column for e in errors] == ["customer_ip_range"]
    assert "is not a well-formed IPv4 CIDR" in errors[0].message


def test_offering_codes_are_numbered_and_remove_codes_kept_for_later() -> None:
    valid, errors = _validator().validate(
        2, _row(offering_codes=" NABPSOC ; IOTDATA;;", remove_offering_codes="OLDSOC;OLD2")
    )
    assert errors == []
    assert valid is not None
    assert _characteristics(valid.change_request)[6:] == [
        {"name": "offeringCode1", "value": "NABPSOC"},
        {"name": "offeringCode2", "value": "IOTDATA"},
        {"name": "removeOfferingCode", "value": "OLDSOC"},
        {"name": "removeOfferingCode", "value": "OLD2"},
    ]


def test_a_bad_offering_code_is_named() -> None:
    valid, errors = _validator().validate(3, _row(offering_codes="GOOD;bad code!"))
    assert valid is None
    assert _problems(errors) == ["line 3: offering_codes: 'bad code!' is not an offering code"]


def test_billing_account_column_overrides_the_option() -> None:
    valid, _ = _validator().validate(2, _row(billing_account="BAN-ROW"))
    assert valid is not None
    assert valid.change_request["TelegenceActivationRequest"]["billingAccount"] == {"id": "BAN-ROW"}


def test_billing_account_is_required_from_column_or_option() -> None:
    valid, errors = _validator(billing_account="").validate(2, _row())
    assert valid is None
    assert _problems(errors) == ["line 2: billing_account: is required (column or --billing-account)"]


def test_bulk_change_options_are_carried_by_every_row() -> None:
    valid, _ = _validator().validate(2, _row())
    assert valid is not None
    assert valid.change_request["CarrierDataGroup"] == "DG1"
    assert valid.change_request["CarrierRatePool"] == "RP1"


def test_duplicates_name_the_first_line_and_revalidating_a_line_is_not_a_duplicate() -> None:
    validator = _validator()
    assert validator.validate(2, _row())[1] == []
    assert validator.validate(2, _row())[1] == []  # the same line again (e.g. a retry) is fine
    _, errors = validator.validate(9, _row(imei=IMEI_2))
    assert _problems(errors) == [f"line 9: iccid: '{ICCID_1}' already appears on line 2"]
    _, errors = validator.validate(10, _row(iccid=ICCID_2))
    assert _problems(errors) == [f"line 10: imei: '{IMEI_1}' already appears on line 2"]


def test_every_problem_of_a_line_is_reported() -> None:
    valid, errors = _validator().validate(
        5, {"iccid": "", "imei": "123", "rate_plan_code": "bad plan", "zip_code": "7520"}
    )
    assert valid is None
    assert [e.column for e in errors] == ["iccid", "imei", "rate_plan_code", "zip_code"]


@pytest.mark.parametrize(
    ("fieldnames", "problems"),
    [
        (None, ["the file is empty (no header line)"]),
        ([], ["the file is empty (no header line)"]),
        ([" ICCID ", "IMEI", "Rate_Plan_Code", "zip_code"], []),
        (
            ["iccid", "imei", "zip_code", "imei", "colour"],
            [
                "missing required column 'rate_plan_code'",
                "unknown column 'colour'",
                "column 'imei' appears twice",
            ],
        ),
    ],
)
def test_header_problems(fieldnames: list[str] | None, problems: list[str]) -> None:
    assert header_problems(fieldnames) == problems
