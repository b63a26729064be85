"""Scripted per-device outcomes, compiled for fast matching, and the deterministic per-attempt jitter."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .scenario import Outcome

if TYPE_CHECKING:
    from .activation_state import Device


def attempt_fraction(seed: int, iccid: str, attempt: int, salt: str) -> float:
    """A deterministic number in [0, 1) for one device attempt."""
    return zlib.crc32(f"{seed}:{salt}:{iccid}:{attempt}".encode()) / 4294967296.0


class CompiledOutcome:
    """An :class:`Outcome` with its selectors prepared for fast matching."""

    __slots__ = ("error", "every", "iccids", "kind", "max_attempt", "offset", "regex", "stage", "suffixes")

    def __init__(self, outcome: Outcome) -> None:
        self.kind = outcome.kind
        self.error = outcome.error
        self.stage = outcome.stage
        self.iccids = frozenset(outcome.iccids)
        self.every = outcome.every
        self.offset = outcome.offset
        self.suffixes = tuple(outcome.iccid_suffix)
        self.regex = re.compile(outcome.iccid_regex) if outcome.iccid_regex else None
        self.max_attempt = outcome.max_attempt

    def matches(self, device: Device) -> bool:
        """True when the device attempt is selected by this outcome."""
        if self.max_attempt is not None and device.attempt > self.max_attempt:
            return False
        iccid = device.iccid
        if iccid in self.iccids:
            return True
        if self.every is not None and device.index % self.every == self.offset:
            return True
        if self.suffixes and iccid.endswith(self.suffixes):
            return True
        return self.regex is not None and self.regex.search(iccid) is not None


class Outcomes:
    """Scripted outcomes grouped by kind."""

    def __init__(self, outcomes: Iterable[Outcome]) -> None:
        self.by_kind: dict[str, list[CompiledOutcome]] = {}
        for outcome in outcomes:
            self.by_kind.setdefault(outcome.kind, []).append(CompiledOutcome(outcome))

    def first(self, kind: str, device: Device) -> CompiledOutcome | None:
        """The first outcome of ``kind`` that selects ``device``, if any."""
        rules = self.by_kind.get(kind)
        if not rules:
            return None
        for rule in rules:
            if rule.matches(device):
                return rule
        return None
