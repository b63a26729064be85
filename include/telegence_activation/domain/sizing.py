"""How a bulk change is cut into task instances, chosen from its size and the carrier's slots (pure).

``activate`` is mapped over groups of consecutive batches; every mapped instance is a task instance
the scheduler schedules, a process the executor starts (about 0.7 s each on 2 cores, see
bench/results.md) and a row Airflow caps with ``[core] max_map_length``. The fewer instances the
less overhead, but every carrier slot should get work, and a slot freed early (a short batch, a
slot shared with another run) should find more. So: about ``WAVES_PER_SLOT`` instances per slot,
never more than ``MAX_INSTANCES`` and never more than ``max_map_length`` (a bulk change of
1,000,000 devices is 5,000 batches: it becomes a few dozen instances, not 5,000).

The PATCH concurrency of ``remove_offering_codes`` (one task holding one pool slot, the only step
running at that point of the run) is the carrier slots, fewer when there is little to patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

AUTO = "auto"
WAVES_PER_SLOT = 2
MAX_INSTANCES = 256
MAX_PATCH_CALLS = 16
PATCHES_PER_CALLER = 25


@dataclass(frozen=True)
class ActivationSizing:
    """``batches_per_task`` and the resulting number of mapped ``activate`` instances (at most)."""

    batches_per_task: int
    instances: int
    reason: str


def is_auto(value: object) -> bool:
    """``"auto"``, ``0``, ``None`` or an empty string: choose automatically."""
    if value is None:
        return True
    if isinstance(value, str):
        text = value.strip().lower()
        return text in ("", AUTO, "0")
    return value == 0


def activation_sizing(
    batch_span: int,
    carrier_slots: int,
    max_map_length: int,
    override: object = AUTO,
    *,
    waves_per_slot: int = WAVES_PER_SLOT,
    max_instances: int = MAX_INSTANCES,
) -> ActivationSizing:
    """Batches per ``activate`` instance for ``batch_span`` consecutive batch numbers.

    ``batch_span`` is highest - lowest + 1 of the batches still to send (a rerun can leave gaps; a
    group covers consecutive numbers, so the span, not the count, bounds the groups).
    ``carrier_slots``: how many instances may call the carrier at once (the pool's slots, or the
    DAG's ``max_active_tis_per_dagrun`` when smaller). An explicit ``override`` (a positive
    integer) is honoured unless it would make more instances than ``max_map_length``: then the
    smallest value that fits is used (the run would otherwise fail when ``prepare`` pushes its list).
    """
    if batch_span <= 0:
        return ActivationSizing(1, 0, "nothing to send")
    slots = max(1, int(carrier_slots))
    map_limit = max(1, int(max_map_length))
    floor = math.ceil(batch_span / map_limit)  # fewer per instance would exceed max_map_length
    if not is_auto(override):
        wanted = int(str(override))
        if wanted < 1:
            raise ValueError(f"batches_per_task must be 'auto' or a positive integer, got {override!r}")
        per_task = max(wanted, floor)
        reason = (
            f"override {wanted}"
            if per_task == wanted
            else f"override {wanted} raised to {per_task}: {batch_span} batches within max_map_length {map_limit}"
        )
        return ActivationSizing(per_task, math.ceil(batch_span / per_task), reason)
    target = max(1, min(slots * max(1, waves_per_slot), max_instances, map_limit))
    per_task = max(1, math.ceil(batch_span / target), floor)
    instances = math.ceil(batch_span / per_task)
    return ActivationSizing(
        per_task,
        instances,
        f"auto: {batch_span} batches over {slots} carrier slot(s), about {waves_per_slot} instance(s) per slot, "
        f"at most {min(max_instances, map_limit)} instances (max_map_length {map_limit})",
    )


def patch_concurrency(lines_to_patch: int, carrier_slots: int, override: object = AUTO) -> int:
    """Concurrent PATCH calls of ``remove_offering_codes``: the override, else the carrier slots
    (at most ``MAX_PATCH_CALLS``), fewer when there is little to patch (one caller per
    ``PATCHES_PER_CALLER`` lines); at least 1."""
    if not is_auto(override):
        wanted = int(str(override))
        if wanted < 1:
            raise ValueError(f"max_parallel_calls must be 'auto' or a positive integer, got {override!r}")
        return wanted
    slots = max(1, min(int(carrier_slots), MAX_PATCH_CALLS))
    return max(1, min(slots, math.ceil(max(0, lines_to_patch) / PATCHES_PER_CALLER)))
