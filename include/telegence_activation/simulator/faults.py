"""Fault injection (seeded, per rule) and the per-account token bucket rate limiter."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

from .scenario import FaultRule, RateLimit


class TokenBucket:
    """A classic token bucket: ``rate`` tokens per second, at most ``capacity`` stored."""

    __slots__ = ("capacity", "fixed_retry_after", "last", "rate", "tokens")

    def __init__(self, limit: RateLimit) -> None:
        self.rate = limit.per_second
        self.capacity = limit.capacity
        self.tokens = self.capacity
        self.fixed_retry_after = limit.retry_after
        self.last = time.monotonic()

    def take(self) -> int | None:
        """Consume one token; return None if allowed, else the Retry-After in whole seconds."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        if self.fixed_retry_after is not None:
            return self.fixed_retry_after
        return max(1, math.ceil((1.0 - self.tokens) / self.rate))


@dataclass(slots=True)
class FaultPlan:
    """What to do with one call, decided before the handler runs."""

    latency: float = 0.0
    action: str | None = None  # "error" | "timeout" | "drop" (the handler does not run)
    status: int = 503
    hold: float = 0.0
    malformed: str | None = None  # variant name; the handler runs, then the 2xx body is mangled
    lost: str | None = None  # "drop" | "delay"; the handler runs, then the answer is lost
    lost_hold: float = 0.0
    fired: tuple[str, ...] = ()


class _Rule:
    __slots__ = ("calls", "iccids", "rng", "rule", "statuses")

    def __init__(self, rule: FaultRule, seed: int, index: int) -> None:
        self.rule = rule
        self.iccids = tuple(i.encode() for i in rule.iccids)
        self.rng = random.Random(f"{seed}:{index}:{rule.kind}")
        self.calls = 0
        self.statuses = rule.status if isinstance(rule.status, list) else [rule.status]


class FaultEngine:
    """Decides, deterministically under a seed, which faults hit each call of an endpoint.

    Every rule has its own random generator seeded from (seed, rule index), so the sequence
    of decisions for an endpoint depends only on the order of that endpoint's calls.
    """

    def __init__(self, rules: list[FaultRule], seed: int) -> None:
        self._by_endpoint: dict[str, list[_Rule]] = {}
        for index, rule in enumerate(rules):
            compiled = _Rule(rule, seed, index)
            for endpoint in rule.endpoints:
                self._by_endpoint.setdefault(endpoint, []).append(compiled)
        self._needs_body = {
            endpoint for endpoint, compiled in self._by_endpoint.items() if any(c.iccids for c in compiled)
        }

    def needs_body(self, endpoint: str) -> bool:
        """True when a rule of ``endpoint`` selects calls by the ICCIDs in their body."""
        return endpoint in self._needs_body

    def plan(self, endpoint: str, body: bytes | None = None) -> FaultPlan | None:
        """Roll the dice for one call; None when no fault fires (the fast path)."""
        rules = self._by_endpoint.get(endpoint)
        if not rules:
            return None
        plan: FaultPlan | None = None
        for compiled in rules:
            rule = compiled.rule
            if compiled.iccids and (body is None or not any(i in body for i in compiled.iccids)):
                continue
            compiled.calls += 1
            if rule.first_n is not None and compiled.calls > rule.first_n:
                continue
            if rule.probability < 1.0 and compiled.rng.random() >= rule.probability:
                continue
            if plan is None:
                plan = FaultPlan()
            kind = rule.kind
            if kind == "latency":
                seconds = rule.seconds
                if isinstance(seconds, tuple):
                    plan.latency += compiled.rng.uniform(seconds[0], seconds[1])
                else:
                    plan.latency += seconds or 0.0
            elif kind in ("error", "timeout", "drop"):
                if plan.action is not None:
                    continue
                plan.action = kind
                if kind == "error":
                    statuses = compiled.statuses
                    plan.status = statuses[0] if len(statuses) == 1 else compiled.rng.choice(statuses)
                elif kind == "timeout":
                    plan.hold = float(rule.seconds or 0.0)  # type: ignore[arg-type]
            elif kind == "malformed":
                if plan.malformed is not None:
                    continue
                plan.malformed = rule.variant
            elif kind == "answer_lost":
                if plan.lost is not None:
                    continue
                plan.lost = rule.mode
                plan.lost_hold = float(rule.seconds or 0.0)  # type: ignore[arg-type]
            plan.fired = (*plan.fired, kind)
        return plan


def malformed_body(variant: str, body: bytes) -> tuple[bytes, str]:
    """Mangle a 2xx body; returns (body, content type)."""
    if variant == "html":
        return b"<html><body><h1>Service Temporarily Unavailable</h1></body></html>", "text/html"
    if variant == "wrong_shape":
        return b'{"result":"ok","data":null}', "application/json"
    if variant == "empty":
        return b"", "application/json"
    cut = max(1, len(body) // 2)
    return (body[:cut] if len(body) > 1 else b'{"'), "application/json"
