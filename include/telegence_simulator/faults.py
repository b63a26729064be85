"""Fault injection (seeded, per rule) and the per-account token bucket rate limiter."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass

from .scenario import FaultRule, RateLimit

ECHO_NOTE = "echo_secret fault: the simulator repeats the app-secret it received (for redaction tests)"


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
    echo_secret: bool = False  # the handler runs, then the caller's app-secret is added to the answer
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
        self._echo_by_endpoint: dict[str, list[_Rule]] = {}
        for index, rule in enumerate(rules):
            compiled = _Rule(rule, seed, index)
            for endpoint in rule.endpoints:
                self._by_endpoint.setdefault(endpoint, []).append(compiled)
                if rule.kind == "echo_secret":
                    self._echo_by_endpoint.setdefault(endpoint, []).append(compiled)
        self._needs_body = {
            endpoint for endpoint, compiled in self._by_endpoint.items() if any(c.iccids for c in compiled)
        }

    def needs_body(self, endpoint: str) -> bool:
        """True when a rule of ``endpoint`` selects calls by the ICCIDs in their body."""
        return endpoint in self._needs_body

    def echoes(self, endpoint: str) -> bool:
        """True when an ``echo_secret`` rule applies to ``endpoint``."""
        return endpoint in self._echo_by_endpoint

    def echo(self, endpoint: str, body: bytes | None = None) -> bool:
        """Roll only the ``echo_secret`` rules, for a call refused before the fault rules (401/429/403)."""
        fired = False
        for compiled in self._echo_by_endpoint.get(endpoint, ()):
            if _fires(compiled, body):
                fired = True
        return fired

    def plan(self, endpoint: str, body: bytes | None = None) -> FaultPlan | None:
        """Roll the dice for one call; None when no fault fires (the fast path)."""
        rules = self._by_endpoint.get(endpoint)
        if not rules:
            return None
        plan: FaultPlan | None = None
        for compiled in rules:
            if not _fires(compiled, body):
                continue
            rule = compiled.rule
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
            elif kind == "echo_secret":
                if plan.echo_secret:
                    continue
                plan.echo_secret = True
            plan.fired = (*plan.fired, kind)
        return plan


def _fires(compiled: _Rule, body: bytes | None) -> bool:
    """Count one call towards a rule's ``first_n`` (if it selects the call) and roll its dice."""
    rule = compiled.rule
    if compiled.iccids and (body is None or not any(i in body for i in compiled.iccids)):
        return False
    compiled.calls += 1
    if rule.first_n is not None and compiled.calls > rule.first_n:
        return False
    return rule.probability >= 1.0 or compiled.rng.random() < rule.probability


def echo_secret_body(status: int, body: bytes, secret: str) -> bytes | None:
    """Add the caller's app-secret to a JSON answer; None when there is nothing to add it to.

    A 2xx object gets ``"debug": {"appSecret", "note"}`` (an array: each object element); a
    non-2xx object gets the secret appended to ``message`` and, if it has none, as
    ``errorDescription``.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if 200 <= status < 300:
        if isinstance(data, dict):
            data["debug"] = {"appSecret": secret, "note": ECHO_NOTE}
        elif isinstance(data, list) and any(isinstance(element, dict) for element in data):
            for element in data:
                if isinstance(element, dict):
                    element["debug"] = {"appSecret": secret, "note": ECHO_NOTE}
        else:
            return None
    else:
        if not isinstance(data, dict):
            return None
        text = f"request credentials app-secret={secret}"
        message = data.get("message")
        data["message"] = f"{message} ({text})" if isinstance(message, str) and message else text
        if not data.get("errorDescription"):
            data["errorDescription"] = text
    return json.dumps(data, separators=(",", ":")).encode()


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
