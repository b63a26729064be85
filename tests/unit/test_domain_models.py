"""The stored change request model and the activation item it carries."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from telegence_activation.domain.models import ActivationItem, ChangeRequest

ICCID = "89014100000000000017"
IMEI = "359211080000017"


def _item(*extra_characteristics: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "billingAccount": {"id": "BAN-1"},
        "service": {
            "serviceCharacteristic": [
                {"name": "singleUserCode", "value": "PLAN5"},
                {"name": "IMEI", "value": IMEI},
                {"name": "sim", "value": ICCID},
                *extra_characteristics,
            ]
        },
        **fields,
    }


# ---------------------------------------------------------------------------------- ActivationItem


def test_activation_item_exposes_iccid_and_imei_from_characteristics() -> None:
    item = ActivationItem.model_validate(_item())
    assert (item.iccid, item.imei) == (ICCID, IMEI)


def test_characteristic_names_are_case_sensitive() -> None:
    item = ActivationItem.model_validate(
        {
            "billingAccount": {"id": "B"},
            "service": {"serviceCharacteristic": [{"name": "SIM", "value": ICCID}]},
        }
    )
    assert item.iccid is None
    assert item.imei is None


def test_first_characteristic_of_a_name_wins() -> None:
    item = ActivationItem.model_validate(_item({"name": "sim", "value": "89014100000000000025"}))
    assert item.iccid == ICCID


def test_for_activation_strips_every_remove_offering_code() -> None:
    item = ActivationItem.model_validate(
        _item(
            {"name": "removeOfferingCode", "value": "OLD1"},
            {"name": "offeringCode1", "value": "NEW1"},
            {"name": "removeOfferingCode", "value": "OLD2"},
        )
    )
    body = item.for_activation()
    names = [c["name"] for c in body["service"]["serviceCharacteristic"]]  # type: ignore[index]
    assert names == ["singleUserCode", "IMEI", "sim", "offeringCode1"]
    # The model itself keeps them for the PATCH after activation, and a second call gives the same body.
    assert item.remove_offering_codes == ["OLD1", "OLD2"]
    assert item.for_activation() == body


def test_for_activation_fills_contract_defaults_and_drops_nulls() -> None:
    body = ActivationItem.model_validate(_item()).for_activation()
    assert body["service"]["serviceSpecification"] == {"id": "12", "href": "Mobility Services"}  # type: ignore[index]
    assert body["service"]["serviceQualification"] == {"id": ""}  # type: ignore[index]
    assert body["relatedParty"] == []
    assert body["billingAccount"] == {"id": "BAN-1"}


def test_for_activation_keeps_unknown_fields_of_the_stored_item() -> None:
    body = ActivationItem.model_validate(
        _item(
            {"name": "offeringCode1", "value": "SOC", "action": "add"},
            productOffering={"id": "PO-1"},
            relatedParty=[{"role": "subscriber", "firstName": "Ada", "nickname": "A"}],
        )
    ).for_activation()
    assert body["productOffering"] == {"id": "PO-1"}
    assert body["relatedParty"][0]["nickname"] == "A"  # type: ignore[index]
    assert body["relatedParty"][0]["address"] == {  # type: ignore[index]
        "streetNumber": "",
        "streetName": "",
        "city": "",
        "state": "",
        "zipCode": "",
    }
    assert {"name": "offeringCode1", "value": "SOC", "action": "add"} in body["service"][
        "serviceCharacteristic"
    ]  # type: ignore[index]


def test_for_activation_of_an_item_with_only_remove_codes_keeps_the_others_empty() -> None:
    item = ActivationItem.model_validate(
        {
            "billingAccount": {"id": "B"},
            "service": {"serviceCharacteristic": [{"name": "removeOfferingCode", "value": "X"}]},
        }
    )
    assert item.for_activation()["service"]["serviceCharacteristic"] == []  # type: ignore[index]


@pytest.mark.parametrize(
    "item",
    [
        pytest.param({"service": {"serviceCharacteristic": []}}, id="no-billing-account"),
        pytest.param({"billingAccount": {"id": "B"}}, id="no-service"),
        pytest.param({"billingAccount": {"id": "B"}, "service": {}}, id="no-characteristics"),
        pytest.param(
            {
                "billingAccount": {"id": "B"},
                "service": {"serviceCharacteristic": [{"name": "sim", "value": 123}]},
            },
            id="numeric-value",
        ),
    ],
)
def test_activation_item_rejects_an_incomplete_item(item: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ActivationItem.model_validate(item)


# ----------------------------------------------------------------------------------- ChangeRequest


def test_change_request_with_static_ip_defaults_lte_y_and_default_apn_n() -> None:
    request = ChangeRequest.model_validate(
        {
            "TelegenceActivationRequest": _item(),
            "StaticIPProvision": {"PDPName": "DEMO.PDP", "StaticIPAPN": "iot.static.apn"},
            "CustomerIPRange": "10.20.0.0/24",
        }
    )
    assert request.StaticIPProvision is not None
    assert request.StaticIPProvision.LteIndicator == "Y"
    assert request.StaticIPProvision.DefaultAPN == "N"
    assert request.CustomerIPRange == "10.20.0.0/24"
    assert request.CarrierDataGroup is None


@pytest.mark.parametrize("value", [None, ""])
def test_change_request_empty_customer_range_is_none(value: str | None) -> None:
    request = ChangeRequest.model_validate({"TelegenceActivationRequest": _item(), "CustomerIPRange": value})
    assert request.CustomerIPRange is None


@pytest.mark.parametrize("value", ["10.20.0.1/24", "10.20.0.0/33", "not-a-cidr"])
def test_change_request_rejects_a_customer_range_that_is_not_a_network(value: str) -> None:
    with pytest.raises(ValidationError, match="CustomerIPRange"):
        ChangeRequest.model_validate({"TelegenceActivationRequest": _item(), "CustomerIPRange": value})


@pytest.mark.parametrize(
    "options",
    [
        {"PDPName": "", "StaticIPAPN": "apn"},
        {"PDPName": "PDP", "StaticIPAPN": ""},
        {"StaticIPAPN": "apn"},
        {"PDPName": "PDP", "StaticIPAPN": "apn", "LteIndicator": "X"},
        {"PDPName": "PDP", "StaticIPAPN": "apn", "DefaultAPN": "yes"},
    ],
    ids=["empty-pdp", "empty-apn", "no-pdp", "bad-lte", "bad-default-apn"],
)
def test_change_request_rejects_bad_static_ip_options(options: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="StaticIPProvision"):
        ChangeRequest.model_validate({"TelegenceActivationRequest": _item(), "StaticIPProvision": options})


def test_change_request_requires_the_activation_request() -> None:
    with pytest.raises(ValidationError, match="TelegenceActivationRequest"):
        ChangeRequest.model_validate({"CarrierDataGroup": "DG1"})
