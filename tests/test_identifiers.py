"""ICCID/IMEI validation and Luhn check digits."""

from __future__ import annotations

import pytest

from telegence_activation.domain.identifiers import (
    iccid_problem,
    imei_problem,
    luhn_check_digit,
    luhn_valid,
    make_iccid,
    make_imei,
)


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("79927398713", True),  # the textbook example
        ("79927398710", False),
        ("490154203237518", True),  # a published IMEI example
        ("490154203237517", False),
        ("89014103211118510720", True),  # a published AT&T ICCID example
        ("89014103211118510721", False),
    ],
)
def test_luhn(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


def test_check_digit_completes_the_body() -> None:
    assert luhn_check_digit("7992739871") == "3"


def test_iccid_rules() -> None:
    assert iccid_problem("89014103211118510720") is None
    good19 = make_iccid(123)
    bad19 = good19[:-1] + str((int(good19[-1]) + 1) % 10)
    assert iccid_problem(good19) is None
    assert iccid_problem(bad19) == "check digit (Luhn) is wrong"
    assert iccid_problem("890141032111185107") == "must be 19 or 20 digits"
    assert iccid_problem("8901410321111851072X") == "must be 19 or 20 digits"
    assert iccid_problem("89014103211118510721") == "check digit (Luhn) is wrong"


def test_imei_rules() -> None:
    assert imei_problem("490154203237518") is None
    assert imei_problem("49015420323751") == "must be 15 digits"
    assert imei_problem("490154203237519") == "check digit (Luhn) is wrong"


def test_generated_identifiers_are_valid_and_distinct() -> None:
    iccids = {make_iccid(n) for n in range(1000)}
    imeis = {make_imei(n) for n in range(1000)}
    assert len(iccids) == len(imeis) == 1000
    assert all(iccid_problem(i) is None and len(i) == 19 for i in iccids)
    assert all(imei_problem(i) is None for i in imeis)
