"""Validation of a bulk-change CSV, row by row, and the sample CSV generator.

The CSV has one device per line. Columns (header names are case-insensitive):

==========================  ========  ====================================================
column                      required  meaning
==========================  ========  ====================================================
iccid                       yes       SIM ICCID, 19-20 digits, valid Luhn check digit
imei                        yes       handset IMEI, 15 digits, valid Luhn check digit
rate_plan_code              yes       carrier rate plan (``singleUserCode``)
zip_code                    yes       service ZIP code (5 digits, or ZIP+4)
offering_codes              no        offering codes (SOCs) to add, separated by ``;``
remove_offering_codes       no        SOCs to remove once the line is active, ``;``-separated
billing_account             no        BAN; defaults to the ``--billing-account`` option
first_name, last_name       no        subscriber name
street_number, street_name  no        subscriber address
city, state                 no        subscriber address
equipment_type              no        default ``G``
device_technology_type      no        default ``UMTS``
pdp_name                    no        PDP pool for a static IP (asks for a static IP)
static_ip_apn               with pdp  APN of the static IP
lte_indicator               no        ``Y``/``N``, default ``Y``
default_apn                 no        ``Y``/``N``, default ``N``
customer_ip_range           no        customer's CIDR; the assigned IP must fall inside it
==========================  ========  ====================================================
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from telegence_activation.domain.identifiers import iccid_problem, imei_problem, make_iccid, make_imei
from telegence_activation.domain.models import REMOVE_OFFERING_CODE

REQUIRED_COLUMNS = ("iccid", "imei", "rate_plan_code", "zip_code")
OPTIONAL_COLUMNS = (
    "offering_codes",
    "remove_offering_codes",
    "billing_account",
    "first_name",
    "last_name",
    "street_number",
    "street_name",
    "city",
    "state",
    "equipment_type",
    "device_technology_type",
    "pdp_name",
    "static_ip_apn",
    "lte_indicator",
    "default_apn",
    "customer_ip_range",
)
ALL_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

_ZIP = re.compile(r"^[0-9]{5}(-[0-9]{4})?$")
_CODE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_YN = ("Y", "N")


@dataclass(frozen=True)
class RowError:
    """One problem of one CSV line."""

    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.column}: {self.message}"


@dataclass(frozen=True)
class IntakeOptions:
    """Bulk-change-wide values that every device's change request carries."""

    billing_account: str
    carrier_data_group: str | None = None
    carrier_rate_pool: str | None = None


@dataclass(frozen=True)
class ValidRow:
    """A validated device: what the device_change row stores."""

    line: int
    iccid: str
    imei: str
    change_request: dict[str, Any]


def header_problems(fieldnames: Iterable[str] | None) -> list[str]:
    """Problems of the CSV header: missing required columns, unknown or repeated columns."""
    if not fieldnames:
        return ["the file is empty (no header line)"]
    names = [name.strip().lower() for name in fieldnames]
    problems = [f"missing required column '{c}'" for c in REQUIRED_COLUMNS if c not in names]
    problems += [f"unknown column '{n}'" for n in names if n not in ALL_COLUMNS]
    problems += [f"column '{n}' appears twice" for n in sorted({n for n in names if names.count(n) > 1})]
    return problems


def _codes(raw: str) -> list[str]:
    return [code.strip() for code in raw.split(";") if code.strip()]


@dataclass
class RowValidator:
    """Validates rows one at a time and remembers ICCIDs/IMEIs to catch duplicates within the file.

    Identifiers are remembered as integers (about 60 bytes each), so a million rows cost ~120 MB.
    """

    options: IntakeOptions
    _iccids: dict[int, int] = field(default_factory=dict)
    _imeis: dict[int, int] = field(default_factory=dict)

    def validate(self, line: int, raw: Mapping[str, str | None]) -> tuple[ValidRow | None, list[RowError]]:
        """Validate one CSV line (``raw`` keyed by lower-case column name)."""
        row = {k: (v or "").strip() for k, v in raw.items() if k is not None}
        errors: list[RowError] = []

        def bad(column: str, message: str) -> None:
            errors.append(RowError(line, column, message))

        if None in raw:
            bad("(line)", "has more fields than the header")
        for column in REQUIRED_COLUMNS:
            if not row.get(column):
                bad(column, "is required")

        iccid, imei = row.get("iccid", ""), row.get("imei", "")
        if iccid and (problem := iccid_problem(iccid)):
            bad("iccid", f"'{iccid}' {problem}")
        elif iccid:
            first = self._iccids.setdefault(int(iccid), line)
            if first != line:
                bad("iccid", f"'{iccid}' already appears on line {first}")
        if imei and (problem := imei_problem(imei)):
            bad("imei", f"'{imei}' {problem}")
        elif imei:
            first = self._imeis.setdefault(int(imei), line)
            if first != line:
                bad("imei", f"'{imei}' already appears on line {first}")

        rate_plan = row.get("rate_plan_code", "")
        if rate_plan and not _CODE.match(rate_plan):
            bad("rate_plan_code", f"'{rate_plan}' is not a plan code (letters, digits, '-', '_')")
        zip_code = row.get("zip_code", "")
        if zip_code and not _ZIP.match(zip_code):
            bad("zip_code", f"'{zip_code}' is not a ZIP code (12345 or 12345-6789)")
        offering = _codes(row.get("offering_codes", ""))
        removing = _codes(row.get("remove_offering_codes", ""))
        for column, codes in (("offering_codes", offering), ("remove_offering_codes", removing)):
            for code in codes:
                if not _CODE.match(code):
                    bad(column, f"'{code}' is not an offering code")

        billing_account = row.get("billing_account") or self.options.billing_account
        if not billing_account:
            bad("billing_account", "is required (column or --billing-account)")

        static_ip = self._static_ip(row, bad)
        ip_range = row.get("customer_ip_range", "")
        if ip_range:
            try:
                ip_range = str(ipaddress.IPv4Network(ip_range, strict=True))
            except ValueError as exc:
                bad("customer_ip_range", f"'{ip_range}' is not a well-formed IPv4 CIDR ({exc})")
            if static_ip is None and not row.get("pdp_name"):
                bad("customer_ip_range", "is given but the device asks for no static IP (pdp_name empty)")

        if errors:
            return None, errors
        characteristics = [
            {"name": "singleUserCode", "value": rate_plan},
            {"name": "serviceZipCode", "value": zip_code},
            {"name": "equipmentType", "value": row.get("equipment_type") or "G"},
            {"name": "deviceTechnologyType", "value": row.get("device_technology_type") or "UMTS"},
            {"name": "IMEI", "value": imei},
            {"name": "sim", "value": iccid},
        ]
        characteristics += [{"name": f"offeringCode{i}", "value": c} for i, c in enumerate(offering, 1)]
        characteristics += [{"name": REMOVE_OFFERING_CODE, "value": c} for c in removing]
        change_request = {
            "TelegenceActivationRequest": {
                "billingAccount": {"id": billing_account},
                "relatedParty": [
                    {
                        "role": "subscriber",
                        "firstName": row.get("first_name", ""),
                        "lastName": row.get("last_name", ""),
                        "address": {
                            "streetNumber": row.get("street_number", ""),
                            "streetName": row.get("street_name", ""),
                            "city": row.get("city", ""),
                            "state": row.get("state", ""),
                            "zipCode": zip_code,
                        },
                    }
                ],
                "service": {
                    "serviceSpecification": {"id": "12", "href": "Mobility Services"},
                    "serviceQualification": {"id": ""},
                    "serviceCharacteristic": characteristics,
                },
            },
            "CarrierDataGroup": self.options.carrier_data_group,
            "CarrierRatePool": self.options.carrier_rate_pool,
            "StaticIPProvision": static_ip,
            "CustomerIPRange": ip_range or None,
        }
        return ValidRow(line, iccid, imei, change_request), []

    @staticmethod
    def _static_ip(row: Mapping[str, str], bad: Any) -> dict[str, str] | None:
        pdp, apn = row.get("pdp_name", ""), row.get("static_ip_apn", "")
        lte, default_apn = row.get("lte_indicator", "").upper(), row.get("default_apn", "").upper()
        if not pdp:
            for column in ("static_ip_apn", "lte_indicator", "default_apn"):
                if row.get(column):
                    bad(column, "is given but pdp_name is empty (no static IP asked)")
            return None
        ok = True
        if not apn:
            bad("static_ip_apn", "is required when pdp_name is given")
            ok = False
        for column, value in (("lte_indicator", lte), ("default_apn", default_apn)):
            if value and value not in _YN:
                bad(column, f"'{value}' must be Y or N")
                ok = False
        if not ok:
            return None
        return {
            "PDPName": pdp,
            "StaticIPAPN": apn,
            "LteIndicator": lte or "Y",
            "DefaultAPN": default_apn or "N",
        }


# The sample CSV's customer range (the demo's and the tests' carrier pool).
SAMPLE_CUSTOMER_IP_RANGE = "10.20.0.0/16"


def sample_rows(
    count: int,
    *,
    seed: int | None = None,
    static_ip_every: int = 3,
    pdp_name: str = "DEMO.PDP",
    customer_ip_range: str | None = SAMPLE_CUSTOMER_IP_RANGE,
    remove_offering_code_every: int = 10,
) -> Iterator[dict[str, str]]:
    """Yield ``count`` valid CSV rows with fresh ICCIDs/IMEIs (random base unless ``seed`` is given).

    Every ``static_ip_every``-th device asks for a static IP from ``pdp_name`` (0: none does); every
    ``remove_offering_code_every``-th carries a ``removeOfferingCode`` (0: none does).
    """
    rng = random.Random(seed)
    base = rng.randrange(10**9, 10**11 - count - 1)
    tac_base = rng.randrange(0, 10**6)
    cities = [("Dallas", "TX", "75201"), ("Austin", "TX", "78701"), ("Denver", "CO", "80202")]
    for i in range(count):
        city, state, zip_code = cities[i % len(cities)]
        wants_ip = static_ip_every > 0 and i % static_ip_every == 0
        row = {
            "iccid": make_iccid(base + i),
            "imei": make_imei(tac_base + i),
            "rate_plan_code": "IOTPLAN5GB",
            "zip_code": zip_code,
            "offering_codes": "NABPSOC;IOTDATA",
            "remove_offering_codes": (
                "OLDSOC" if remove_offering_code_every > 0 and i % remove_offering_code_every == 1 else ""
            ),
            "first_name": "Device",
            "last_name": f"{i + 1:06d}",
            "street_number": str(100 + i % 900),
            "street_name": "Main St",
            "city": city,
            "state": state,
            "pdp_name": pdp_name if wants_ip else "",
            "static_ip_apn": "iot.static.apn" if wants_ip else "",
            "lte_indicator": "Y" if wants_ip else "",
            "default_apn": "N" if wants_ip else "",
            "customer_ip_range": (customer_ip_range or "") if wants_ip else "",
        }
        yield row
