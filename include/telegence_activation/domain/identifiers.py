"""SIM and handset identifiers: ICCID and IMEI format and Luhn check digits."""

from __future__ import annotations

import re

_ICCID = re.compile(r"^[0-9]{19,20}$")
_IMEI = re.compile(r"^[0-9]{15}$")


def luhn_check_digit(body: str) -> str:
    """Return the Luhn check digit that completes the digit string ``body``."""
    total = 0
    # Double every second digit starting from the rightmost digit of the body.
    for position, char in enumerate(reversed(body)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    """True when the last digit of ``number`` is its Luhn check digit."""
    return len(number) > 1 and number.isdigit() and luhn_check_digit(number[:-1]) == number[-1]


def iccid_problem(value: str) -> str | None:
    """Why ``value`` is not a valid ICCID (19-20 digits, Luhn check digit), or None."""
    if not _ICCID.match(value):
        return "must be 19 or 20 digits"
    if not luhn_valid(value):
        return "check digit (Luhn) is wrong"
    return None


def imei_problem(value: str) -> str | None:
    """Why ``value`` is not a valid IMEI (15 digits, Luhn check digit), or None."""
    if not _IMEI.match(value):
        return "must be 15 digits"
    if not luhn_valid(value):
        return "check digit (Luhn) is wrong"
    return None


def make_iccid(serial: int, issuer: str = "8901410") -> str:
    """Build a valid 19-digit ICCID from an issuer prefix and a serial number (for samples and tests)."""
    body = f"{issuer}{serial:0{18 - len(issuer)}d}"
    if len(body) != 18:
        raise ValueError(f"serial {serial} does not fit a 19-digit ICCID with issuer {issuer}")
    return body + luhn_check_digit(body)


def make_imei(serial: int, tac: str = "35921108") -> str:
    """Build a valid IMEI from an 8-digit type allocation code and a 6-digit serial."""
    body = f"{tac}{serial % 1_000_000:06d}"
    return body + luhn_check_digit(body)
