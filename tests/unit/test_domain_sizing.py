"""Sizing of the activate map and of the PATCH concurrency (pure)."""

from __future__ import annotations

import math

import pytest

from telegence_activation.domain.sizing import (
    MAX_INSTANCES,
    activation_sizing,
    is_auto,
    patch_concurrency,
)


@pytest.mark.parametrize("value", ["auto", "AUTO", "", "0", 0, None])
def test_auto_values(value: object) -> None:
    assert is_auto(value)


@pytest.mark.parametrize("value", [1, 5, "3"])
def test_explicit_values(value: object) -> None:
    assert not is_auto(value)


def test_nothing_to_send() -> None:
    sizing = activation_sizing(0, 8, 1024)
    assert sizing.instances == 0 and sizing.batches_per_task == 1


@pytest.mark.parametrize(
    ("batches", "slots"),
    [(1, 8), (5, 8), (50, 8), (500, 8), (5000, 8), (5000, 1), (5000, 64), (100_000, 200), (3, 1)],
)
def test_auto_keeps_every_slot_busy_and_the_map_bounded(batches: int, slots: int) -> None:
    sizing = activation_sizing(batches, slots, 1024)
    groups = math.ceil(batches / sizing.batches_per_task)
    assert sizing.instances == groups
    # every slot gets an instance when there are batches enough
    assert groups >= min(batches, slots)
    # bounded: never more than MAX_INSTANCES nor about two per slot (nor more than the batches)
    assert groups <= min(MAX_INSTANCES, 2 * slots, batches)
    assert groups * sizing.batches_per_task >= batches


def test_one_million_devices_is_a_few_dozen_instances() -> None:
    sizing = activation_sizing(5000, 8, 1024)
    assert sizing.instances == 16 and sizing.batches_per_task == 313


@pytest.mark.parametrize("map_length", [1, 2, 7, 10, 100, 1024])
def test_the_map_never_exceeds_max_map_length(map_length: int) -> None:
    for batches in (1, 9, 10, 11, 5000):
        for override in ("auto", 1, 3):
            sizing = activation_sizing(batches, 300, map_length, override)
            assert math.ceil(batches / sizing.batches_per_task) <= map_length


def test_an_override_is_honoured_when_it_fits() -> None:
    sizing = activation_sizing(500, 8, 1024, 5)
    assert (sizing.batches_per_task, sizing.instances) == (5, 100)
    assert sizing.reason == "override 5"


def test_an_override_that_would_exceed_max_map_length_is_raised() -> None:
    sizing = activation_sizing(5000, 8, 1024, 1)
    assert sizing.batches_per_task == 5 and sizing.instances == 1000
    assert "raised to 5" in sizing.reason


def test_a_bad_override_is_refused() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        activation_sizing(10, 8, 1024, -2)


@pytest.mark.parametrize(
    ("lines", "slots", "override", "expected"),
    [
        (0, 8, "auto", 1),
        (10, 8, "auto", 1),
        (100, 8, "auto", 4),
        (10_000, 8, "auto", 8),
        (10_000, 64, "auto", 16),
        (10_000, 8, 3, 3),
        (10_000, 8, "12", 12),
    ],
)
def test_patch_concurrency(lines: int, slots: int, override: object, expected: int) -> None:
    assert patch_concurrency(lines, slots, override) == expected
