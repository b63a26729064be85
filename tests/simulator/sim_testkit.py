"""Helpers for the simulator tests: Luhn-valid test devices and a tiny Telegence client.

Luhn comes from the product (tests may import it; the simulator keeps its own in checks.py).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import requests

from telegence_activation.domain.identifiers import luhn_check_digit

ACTIVATE = "/sp/mobility/serviceactivation/api/v1/service"
LINECONFIG = "/sp/mobility/lineconfig/api/v1/service"
IP_RESERVE = "/sp/mobility/staticip/api/v1/ipaddresses"
IP_PROVISION = "/sp/mobility/staticip/api/v1/provisioning"
IP_STATUS = "/sp/mobility/staticip/api/v1/provisioning/status"

APP_ID = "demo-app-id"
APP_SECRET = "demo-app-secret"
RO_APP_ID = "ro-app-id"
RO_APP_SECRET = "ro-app-secret"
BAN = "287301234567"

BASE_SCENARIO: dict[str, Any] = {
    "name": "test-base",
    "seed": 1234,
    "accounts": [
        {"app_id": APP_ID, "app_secret": APP_SECRET, "write_enabled": True},
        {"app_id": RO_APP_ID, "app_secret": RO_APP_SECRET, "write_enabled": False},
    ],
    "activation": {"unit": "polls", "reserved_after": 1, "done_after": 2},
    "ip_provisioning": {"unit": "polls", "check_after": 1, "reserve_after": 2, "done_after": 3},
    "ip_pools": [
        {"pdp_name": "TEST.PDP", "cidr": "10.50.0.0/24", "size": 5},
        {"pdp_name": "BIG.PDP", "cidr": "10.60.0.0/16"},
    ],
}


def scenario(**overrides: Any) -> dict[str, Any]:
    """The base test scenario with top-level keys replaced."""
    data = copy.deepcopy(BASE_SCENARIO)
    data.update(copy.deepcopy(overrides))
    return data


def iccid(n: int) -> str:
    """A valid 20-digit ICCID numbered ``n``."""
    body = f"8901410{n:012d}"
    return body + luhn_check_digit(body)


def imei(n: int) -> str:
    """A valid 15-digit IMEI numbered ``n``."""
    body = f"35{n:012d}"
    return body + luhn_check_digit(body)


def item(n: int, *, ban: str = BAN, extra: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """One valid activation service item for device ``n``."""
    chars = [
        {"name": "singleUserCode", "value": "IOTPLAN1"},
        {"name": "serviceZipCode", "value": "75201"},
        {"name": "equipmentType", "value": "G"},
        {"name": "deviceTechnologyType", "value": "UMTS"},
        {"name": "IMEI", "value": imei(n)},
        {"name": "sim", "value": iccid(n)},
        {"name": "offeringCode1", "value": "SOC1"},
        {"name": "offeringCode2", "value": "SOC2"},
    ]
    chars += extra or []
    return {
        "billingAccount": {"id": ban},
        "relatedParty": [
            {
                "role": "subscriber",
                "firstName": "Ada",
                "lastName": "Lovelace",
                "address": {
                    "streetNumber": "1",
                    "streetName": "Main",
                    "city": "Dallas",
                    "state": "TX",
                    "zipCode": "75201",
                },
            }
        ],
        "service": {
            "serviceSpecification": {"id": "12", "href": "Mobility Services"},
            "serviceQualification": {"id": ""},
            "serviceCharacteristic": chars,
        },
    }


def items(start: int, count: int) -> list[dict[str, Any]]:
    """``count`` valid items numbered from ``start``."""
    return [item(n) for n in range(start, start + count)]


class Tg:
    """A minimal Telegence client for tests (real HTTP via requests)."""

    def __init__(self, base_url: str, app_id: str = APP_ID, app_secret: str = APP_SECRET) -> None:
        self.base_url = base_url
        self.headers = {"app-id": app_id, "app-secret": app_secret, "Accept": "application/json"}
        self.session = requests.Session()

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Any call with the account headers (merged with ``headers=``)."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.base_url + path, headers=headers, **kwargs)

    def activate(self, body: Any, **kwargs: Any) -> requests.Response:
        """POST activation."""
        return self.call("POST", ACTIVATE, json=body, **kwargs)

    def status(self, request_id: str, **kwargs: Any) -> requests.Response:
        """GET activation status (one poll)."""
        return self.call("GET", f"{ACTIVATE}/{request_id}", **kwargs)

    def details(self, mdn: str, **kwargs: Any) -> requests.Response:
        """GET line details."""
        return self.call("GET", f"{LINECONFIG}/{mdn}", **kwargs)

    def remove_code(self, mdn: str, code: str, **kwargs: Any) -> requests.Response:
        """PATCH a line to remove an offering code."""
        body = {"serviceCharacteristic": [{"name": "removeOfferingCode", "value": code}], "effectiveDate": ""}
        return self.call("PATCH", f"{LINECONFIG}/{mdn}", json=body, **kwargs)

    def reserve(self, pdp: str, quantity: int, **kwargs: Any) -> requests.Response:
        """POST reserve static IP addresses."""
        return self.call("POST", IP_RESERVE, json={"pdpName": pdp, "ipQuantity": quantity}, **kwargs)

    def provision(
        self, pdp: str, pairs: list[tuple[str, str]], ban: str = BAN, **kwargs: Any
    ) -> requests.Response:
        """POST a provisioning batch for (mdn, ip) pairs."""
        body = {
            "pdpName": pdp,
            "billingAccountNumber": ban,
            "subscriber": [
                {
                    "subscriberNumber": mdn,
                    "ipAddressRecord": {"ipAddress": ip},
                    "lteIndicator": "Y",
                    "defaultAPNIndicator": "N",
                    "accessPointName": "iot.example.apn",
                    "effectiveDate": "2026-11-29Z",
                }
                for mdn, ip in pairs
            ],
        }
        return self.call("POST", IP_PROVISION, json=body, **kwargs)

    def ip_status(self, batch_id: str | None = None, mdn: str | None = None) -> requests.Response:
        """GET provisioning status by batch-id or subscriber-number."""
        headers = {}
        if batch_id is not None:
            headers["batch-id"] = batch_id
        if mdn is not None:
            headers["subscriber-number"] = mdn
        return self.call("GET", IP_STATUS, headers=headers)

    def activate_ok(self, start: int, count: int) -> str:
        """POST ``count`` devices and return the request id (asserts 202)."""
        response = self.activate(items(start, count))
        assert response.status_code == 202, response.text
        return str(response.json()[0]["id"])

    def poll_until_done(
        self, request_id: str, max_polls: int = 20, pause: float = 0.0
    ) -> list[dict[str, Any]]:
        """Poll a request until no service is pending/reserved; returns the last array."""
        body: list[dict[str, Any]] = []
        for _ in range(max_polls):
            response = self.status(request_id)
            assert response.status_code == 200, response.text
            body = response.json()
            if all(s["service"]["status"] not in ("pending", "reserved") for s in body):
                return body
            time.sleep(pause)
        return body

    def active_lines(self, start: int, count: int) -> list[str]:
        """Activate devices and return their MDNs (base scenario: done after 2 polls)."""
        body = self.poll_until_done(self.activate_ok(start, count))
        mdns = [s["service"]["subscriberNumber"] for s in body]
        assert all(mdns), body
        return mdns

    def batch_id(self, response: requests.Response) -> str:
        """The batch id (last word of the message) of a provisioning answer."""
        assert response.status_code == 202, response.text
        return str(response.json()["message"].split()[-1])
