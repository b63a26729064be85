"""Metrics of the activation, sent through Airflow's own ``Stats`` (StatsD or OpenTelemetry).

Where they go is Airflow's ``[metrics]`` configuration (``statsd_on`` / ``otel_on`` and their host,
port and prefix); with neither on, every call here does nothing. Names are under ``telegence.``;
Airflow puts its prefix in front (``airflow.telegence.carrier.calls.activate.201`` with the
default ``statsd_prefix``).

Plain StatsD has no tags, so the endpoint, the HTTP status, the outcome and the step are part of
the **name**: one set of names works on every backend. The same values are passed as tags too, so
backends that keep tags (OpenTelemetry attributes, Datadog, StatsD with
``statsd_influxdb_enabled``) can also aggregate across names.

========================================================  =========  ==================================
name                                                      type       what it counts
========================================================  =========  ==================================
``telegence.carrier.calls.<endpoint>.<status>``           counter    every attempt of a carrier call,
                                                                     by its answer: the HTTP status
                                                                     (``201``, ``429``, ``503``...) or
                                                                     ``timeout`` / ``connection_error``
``telegence.carrier.latency.<endpoint>``                  timer      each attempt's time to its answer
``telegence.carrier.throttled.<endpoint>``                counter    429 answers (throttled)
``telegence.carrier.retries.<endpoint>``                  counter    attempts sent again after a
                                                                     transient failure
``telegence.carrier.malformed.<endpoint>``                counter    2xx answers not in the contract
``telegence.carrier.exhausted.<endpoint>``                counter    calls that still failed after
                                                                     the last attempt (or stopped at
                                                                     an ambiguous answer)
``telegence.carrier.rate_limited.<endpoint>``             counter    attempts that waited for their
                                                                     turn under the connection's
                                                                     ``max_calls_per_second``
``telegence.carrier.rate_limit_wait.<endpoint>``          timer      how long each of them waited
``telegence.devices.<outcome>``                           counter    devices of finished bulk changes
                                                                     by outcome (``processed``,
                                                                     ``error``, ``api_failed``,
                                                                     ``cancelled``, ``outcome_unknown``)
``telegence.bulk_changes.<status>``                       counter    finished bulk changes by status
``telegence.step.duration.<step>``                        timer      time of each step of a bulk change
========================================================  =========  ==================================

``<endpoint>`` is one of ``ENDPOINTS`` (the simulator's fault rules use the same names). Every
function here swallows its own failures: a metric never fails a task or a carrier call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "telegence"
# The carrier endpoints, by the hook's contract methods (the names of the simulator's fault rules).
ENDPOINTS = (
    "activate",
    "activation_status",
    "service_details",
    "service_update",
    "ip_reserve",
    "ip_provision",
    "ip_status",
)
# What a call that is not one of the contract's endpoints is counted as.
OTHER_ENDPOINT = "other"
# Answers that are not an HTTP status.
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"

CARRIER_CALLS = f"{PREFIX}.carrier.calls"
CARRIER_LATENCY = f"{PREFIX}.carrier.latency"
CARRIER_THROTTLED = f"{PREFIX}.carrier.throttled"
CARRIER_RETRIES = f"{PREFIX}.carrier.retries"
CARRIER_MALFORMED = f"{PREFIX}.carrier.malformed"
CARRIER_EXHAUSTED = f"{PREFIX}.carrier.exhausted"
CARRIER_RATE_LIMITED = f"{PREFIX}.carrier.rate_limited"
CARRIER_RATE_LIMIT_WAIT = f"{PREFIX}.carrier.rate_limit_wait"
DEVICES = f"{PREFIX}.devices"
BULK_CHANGES = f"{PREFIX}.bulk_changes"
STEP_DURATION = f"{PREFIX}.step.duration"

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_UNSAFE = re.compile(r"[^a-z0-9_]+")
_configured = False


def name_part(value: Any) -> str:
    """A value as one segment of a metric name: snake case, ``[a-z0-9_]`` only (``API_FAILED`` →
    ``api_failed``, ``RequestIPProvision`` → ``request_ip_provision``, ``a.b`` → ``a_b``)."""
    words = _WORD_BOUNDARY.sub("_", str(value).strip())
    return _UNSAFE.sub("_", words.lower()).strip("_") or "none"


def _stats() -> Any:
    """Airflow's Stats, configured from ``[metrics]`` once in this process if nothing did it yet.

    A task process run by a worker is configured by the task runner; other processes (``dag.test()``,
    the command line, a plain script using the hook) may not be, and would drop every metric.
    """
    global _configured
    from airflow.sdk.observability import stats

    if not _configured:
        _configured = True
        try:
            from airflow.sdk._shared.observability.metrics import stats as backend

            if getattr(backend, "_factory", "unknown") is None:  # nobody configured Stats here
                from airflow.sdk.configuration import conf
                from airflow.sdk.observability.metrics import stats_utils

                stats.initialize(
                    factory=stats_utils.get_stats_factory(),
                    export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True),
                )
        except Exception:  # an Airflow without these internals: keep what Airflow set up
            log.debug("Could not configure Airflow's Stats for telegence metrics", exc_info=True)
    return stats.Stats


def _incr(name: str, count: int = 1, tags: dict[str, Any] | None = None) -> None:
    try:
        _stats().incr(name, count, tags=tags)
    except Exception:  # a metric never fails the work it measures
        log.debug("metric %s not sent", name, exc_info=True)


def _timing(name: str, delta: timedelta, tags: dict[str, Any] | None = None) -> None:
    try:
        _stats().timing(name, delta, tags=tags)
    except Exception:
        log.debug("metric %s not sent", name, exc_info=True)


def _endpoint(endpoint: str | None) -> str:
    return name_part(endpoint) if endpoint else OTHER_ENDPOINT


# ------------------------------------------------------------------------------- carrier (the hook)


def carrier_answer(endpoint: str | None, status: int | str, seconds: float | None = None) -> None:
    """One attempt's answer: an HTTP status, or ``TIMEOUT`` / ``CONNECTION_ERROR``; 429 also counts
    as throttled. ``seconds``: the attempt's time to its answer."""
    name = _endpoint(endpoint)
    answer = name_part(status)
    tags = {"endpoint": name, "status": answer}
    _incr(f"{CARRIER_CALLS}.{name}.{answer}", tags=tags)
    if seconds is not None:
        _timing(f"{CARRIER_LATENCY}.{name}", timedelta(seconds=seconds), tags={"endpoint": name})
    if str(status) == "429":
        _incr(f"{CARRIER_THROTTLED}.{name}", tags={"endpoint": name})


def carrier_retry(endpoint: str | None) -> None:
    """An attempt is about to be sent again after a transient failure."""
    name = _endpoint(endpoint)
    _incr(f"{CARRIER_RETRIES}.{name}", tags={"endpoint": name})


def carrier_malformed(endpoint: str | None) -> None:
    """A 2xx answer that is not what the contract promises."""
    name = _endpoint(endpoint)
    _incr(f"{CARRIER_MALFORMED}.{name}", tags={"endpoint": name})


def carrier_exhausted(endpoint: str | None) -> None:
    """A call that still failed transiently when the retry policy stopped."""
    name = _endpoint(endpoint)
    _incr(f"{CARRIER_EXHAUSTED}.{name}", tags={"endpoint": name})


def carrier_rate_limited(endpoint: str | None, seconds: float) -> None:
    """An attempt waits ``seconds`` for its turn under the carrier rate limit before it is sent."""
    name = _endpoint(endpoint)
    _incr(f"{CARRIER_RATE_LIMITED}.{name}", tags={"endpoint": name})
    _timing(f"{CARRIER_RATE_LIMIT_WAIT}.{name}", timedelta(seconds=seconds), tags={"endpoint": name})


# ---------------------------------------------------------------------------- outcomes (finalize)


def record_outcome(counts: Mapping[str, int], *, status: str | None = None) -> None:
    """Count the devices of a finished bulk change by outcome: ``telegence.devices.<outcome>``.

    ``counts`` maps a device status (or any outcome name) to a number of devices, e.g. the
    report's ``by_status`` plus ``{"outcome_unknown": report["outcome_unknown"]}``; zero counts
    are not sent. ``status`` (the bulk change's final status) also counts one
    ``telegence.bulk_changes.<status>``. Call it once per finished outcome (not on a rerun that
    changed nothing), or the devices are counted twice.
    """
    for outcome, count in counts.items():
        if count:
            part = name_part(outcome)
            _incr(f"{DEVICES}.{part}", int(count), tags={"outcome": part})
    if status:
        part = name_part(status)
        _incr(f"{BULK_CHANGES}.{part}", tags={"status": part})


def record_step_durations(steps: Iterable[Mapping[str, Any]]) -> None:
    """Time of each step (the report's ``steps``: ``step`` and ``seconds``) as
    ``telegence.step.duration.<step>``; a step still running (``seconds`` None) is skipped."""
    for step in steps:
        seconds = step.get("seconds")
        if seconds is None or not step.get("step"):
            continue
        part = name_part(step["step"])
        _timing(f"{STEP_DURATION}.{part}", timedelta(seconds=float(seconds)), tags={"step": part})
