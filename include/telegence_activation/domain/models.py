"""The stored change request of a device and the Telegence activation item, in their real shapes.

A device change stores its request as JSON exactly as the platform does::

    {"TelegenceActivationRequest": {<activation item as POSTed to Telegence>},
     "CarrierDataGroup": "...", "CarrierRatePool": "...",
     "StaticIPProvision": {"PDPName": ..., "StaticIPAPN": ..., "LteIndicator": "Y", "DefaultAPN": "N"},
     "CustomerIPRange": "10.20.0.0/24"}

``StaticIPProvision`` and ``CustomerIPRange`` are null for devices that need no static IP.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

REMOVE_OFFERING_CODE = "removeOfferingCode"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Characteristic(_Wire):
    name: str
    value: str


class Address(_Wire):
    streetNumber: str = ""
    streetName: str = ""
    city: str = ""
    state: str = ""
    zipCode: str = ""


class RelatedParty(_Wire):
    role: str = "subscriber"
    firstName: str = ""
    lastName: str = ""
    address: Address = Field(default_factory=Address)


class Reference(_Wire):
    id: str = ""
    href: str | None = None


class Service(_Wire):
    serviceSpecification: Reference = Field(
        default_factory=lambda: Reference(id="12", href="Mobility Services")
    )
    serviceQualification: Reference = Field(default_factory=Reference)
    serviceCharacteristic: list[Characteristic]

    def characteristic(self, name: str) -> str | None:
        """The value of the first characteristic called ``name`` (names are case-sensitive)."""
        return next((c.value for c in self.serviceCharacteristic if c.name == name), None)


class ActivationItem(_Wire):
    """One service of the activation POST body."""

    billingAccount: Reference
    relatedParty: list[RelatedParty] = Field(default_factory=list)
    service: Service

    @property
    def iccid(self) -> str | None:
        return self.service.characteristic("sim")

    @property
    def imei(self) -> str | None:
        return self.service.characteristic("IMEI")

    @property
    def remove_offering_codes(self) -> list[str]:
        """Offering codes to remove once the line is active (never sent in the activation POST)."""
        return [c.value for c in self.service.serviceCharacteristic if c.name == REMOVE_OFFERING_CODE]

    def for_activation(self) -> dict[str, object]:
        """The item as the activation POST must carry it: ``removeOfferingCode`` stripped."""
        body = self.model_dump(mode="json", exclude_none=True)
        body["service"]["serviceCharacteristic"] = [
            c for c in body["service"]["serviceCharacteristic"] if c["name"] != REMOVE_OFFERING_CODE
        ]
        return body


class StaticIPOptions(_Wire):
    PDPName: str = Field(min_length=1)
    StaticIPAPN: str = Field(min_length=1)
    LteIndicator: Literal["Y", "N"] = "Y"
    DefaultAPN: Literal["Y", "N"] = "N"


class ChangeRequest(_Wire):
    """What the platform stored for one device of a new-service-activation bulk change."""

    TelegenceActivationRequest: ActivationItem
    CarrierDataGroup: str | None = None
    CarrierRatePool: str | None = None
    StaticIPProvision: StaticIPOptions | None = None
    CustomerIPRange: str | None = None

    @field_validator("CustomerIPRange")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        return str(ipaddress.ip_network(value, strict=True))
