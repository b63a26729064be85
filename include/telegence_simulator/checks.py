"""Hot-path validation of activation items: precompiled patterns and a table-driven Luhn check.

Deliberately plain Python (no pydantic) so a 200-item activation POST costs well under a
millisecond to validate.
"""

from __future__ import annotations

import re
from typing import Any

MAX_ITEMS = 200

_IMEI = re.compile(r"[0-9]{15}").fullmatch
_ICCID = re.compile(r"[0-9]{19,20}").fullmatch
_ZIP = re.compile(r"[0-9]{5}(?:-[0-9]{4})?").fullmatch
_MDN = re.compile(r"[0-9]{10}").fullmatch
# maps an ASCII digit to the ASCII digit of its Luhn double (2*d, minus 9 when above 9)
_DOUBLE = bytes.maketrans(b"0123456789", bytes(48 + v for v in (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))

REQUIRED = ("singleUserCode", "serviceZipCode", "IMEI", "sim")
_REQUIRED_SET = frozenset(REQUIRED)

# (iccid, imei, billing account id, the other characteristics as (name, value) pairs)
ParsedItem = tuple[str, str, str, tuple[tuple[str, str], ...]]

# Devices of one order mostly share their characteristics (plan, ZIP, offering codes): store
# one tuple per distinct set instead of one per device (bounded, cleared when full).
_CHARS_CACHE: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
_CHARS_CACHE_MAX = 50_000
_LAST: list[tuple[tuple[str, str], ...]] = [()]


def luhn_ok(digits: str) -> bool:
    """True when an all-digit string passes the Luhn (mod 10) check."""
    rev = digits.encode("ascii")[::-1]
    odd = rev[0::2]
    even = rev[1::2].translate(_DOUBLE)
    return (sum(odd) + sum(even) - 48 * len(rev)) % 10 == 0


def is_mdn(value: Any) -> bool:
    """True for a 10-digit subscriber number string."""
    return isinstance(value, str) and _MDN(value) is not None


def _shared(pairs: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """One shared tuple per distinct characteristics set (see _CHARS_CACHE)."""
    key = tuple(pairs)
    shared = _LAST[0]
    if key != shared:  # consecutive items usually match: a compare is cheaper than hashing
        found = _CHARS_CACHE.get(key)
        if found is None:
            if len(_CHARS_CACHE) >= _CHARS_CACHE_MAX:
                _CHARS_CACHE.clear()
            found = _CHARS_CACHE[key] = key
        shared = _LAST[0] = found
    return shared


# slots of the characteristics the fast path looks at
_SPECIAL = {"sim": 0, "IMEI": 1, "singleUserCode": 2, "serviceZipCode": 3, "removeOfferingCode": 4}


def _fast_item(item: Any) -> ParsedItem | None:
    """Parse a well-formed item quickly; None means "not obviously valid" (use _item_error)."""
    try:
        ban = item["billingAccount"]["id"]
        sim = imei = code = zip_code = None
        pairs = []
        for ch in item["service"]["serviceCharacteristic"]:
            name = ch["name"]
            value = ch["value"]
            if type(value) is not str or type(name) is not str:
                return None
            slot = _SPECIAL.get(name)
            if slot is None:
                pairs.append((name, value))
            elif slot == 0 and sim is None:
                sim = value
            elif slot == 1 and imei is None:
                imei = value
            elif slot == 2 and code is None:
                code = value
                pairs.append((name, value))
            elif slot == 3 and zip_code is None:
                zip_code = value
                pairs.append((name, value))
            else:  # a duplicate or removeOfferingCode
                return None
    except (KeyError, TypeError, AttributeError):
        return None
    if type(ban) is not str or not ban or not code or sim is None or imei is None or zip_code is None:
        return None
    party = item.get("relatedParty")
    if party is not None and type(party) is not list:
        return None
    if _IMEI(imei) is None or not luhn_ok(imei) or _ICCID(sim) is None or not luhn_ok(sim):
        return None
    if _ZIP(zip_code) is None:
        return None
    return (sim, imei, ban, _shared(pairs))


def _item_error(item: Any) -> tuple[ParsedItem | None, str | None]:
    """The slow, descriptive validation of one item."""
    if type(item) is not dict:
        return None, "must be a JSON object"
    ban_obj = item.get("billingAccount")
    ban = ban_obj.get("id") if type(ban_obj) is dict else None
    if type(ban) is not str or not ban:
        return None, "billingAccount.id is required (non-empty string)"
    party = item.get("relatedParty")
    if party is not None and type(party) is not list:
        return None, "relatedParty must be an array"
    service = item.get("service")
    chars = service.get("serviceCharacteristic") if type(service) is dict else None
    if type(chars) is not list or not chars:
        return None, "service.serviceCharacteristic is required (non-empty array)"
    required: dict[str, str] = {}
    pairs = []
    for ch in chars:
        if type(ch) is not dict:
            return None, "every serviceCharacteristic must be an object"
        name = ch.get("name")
        value = ch.get("value")
        if type(name) is not str or type(value) is not str:
            return None, "every serviceCharacteristic needs a string 'name' and a string 'value'"
        if name in _REQUIRED_SET:
            if name in required:
                return None, f"characteristic {name!r} given more than once"
            required[name] = value
            if name == "sim" or name == "IMEI":
                continue
        elif name == "removeOfferingCode":
            return None, (
                "removeOfferingCode is not accepted on activation; strip it and send it later "
                "with PATCH lineconfig/api/v1/service/{subscriberNumber}"
            )
        pairs.append((name, value))
    if len(required) != 4 or not all(required.values()):
        missing = [n for n in REQUIRED if not required.get(n)]
        return None, f"required characteristic {missing[0]!r} is missing or empty"
    imei = required["IMEI"]
    if _IMEI(imei) is None or not luhn_ok(imei):
        return None, f"IMEI {imei!r} must be 15 digits with a valid Luhn check digit"
    sim = required["sim"]
    if _ICCID(sim) is None or not luhn_ok(sim):
        return None, f"sim {sim!r} must be 19-20 digits with a valid Luhn check digit"
    zip_code = required["serviceZipCode"]
    if _ZIP(zip_code) is None:
        return None, f"serviceZipCode {zip_code!r} must be a 5-digit ZIP code"
    return (sim, imei, ban, _shared(pairs)), None


def parse_activation(body: Any, max_items: int = MAX_ITEMS) -> tuple[list[ParsedItem], list[str]]:
    """Validate an activation POST body; return the parsed items and the list of errors."""
    if not isinstance(body, list):
        return [], ["the request body must be a JSON array of service items"]
    if not body:
        return [], ["the request body must contain at least one service item"]
    if len(body) > max_items:
        return [], [f"at most {max_items} service items per request, got {len(body)}"]
    parsed: list[ParsedItem] = []
    errors: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(body):
        result = _fast_item(item)
        if result is None:
            result, error = _item_error(item)
            if result is None:
                errors.append(f"item {index}: {error}")
                continue
        if result[0] in seen:
            errors.append(f"item {index}: sim {result[0]} appears more than once in this request")
            continue
        seen.add(result[0])
        parsed.append(result)
    return parsed, errors
