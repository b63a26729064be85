"""The carrier rate limit shared by every task of every run (connection extra ``max_calls_per_second``).

The token bucket in the real activation database (cost of a take, the wait it computes, concurrent
takers against the rate), the hook taking a token before every attempt, and whole runs of the DAG
(``dag.test()``) against the simulator limiting the account: at the limit the carrier answers no
429; the same run without the extra is throttled.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from conftest import APP_ID, APP_SECRET, scenario, statuses, telegence_conn
from test_metrics import PREFIX, StatsdListener, statsd  # noqa: F401  (the real StatsD listener fixture)

from telegence_activation import repository as repo
from telegence_activation.domain.rate_limit import (
    RateLimit,
    RateLimitSettingError,
    bucket_key,
    most_calls,
    wait_seconds,
)
from telegence_activation.hooks.activation_db import ActivationDbHook
from telegence_activation.hooks.telegence import (
    CarrierRateLimiter,
    CarrierRateLimitUnavailable,
    TelegenceHook,
)
from telegence_simulator.launcher import RunningSimulator

pytestmark = pytest.mark.timeout(120)

# The simulated carrier's limit for our account in the whole-run tests: 10 calls/s, 4 at once.
CARRIER_RATE, CARRIER_BURST = 10, 4


def _key() -> str:
    return f"http://bucket-{uuid.uuid4().hex[:8]}.test app-id test"


# ------------------------------------------------------------------------------------- the bucket


def test_a_take_is_one_statement_of_about_a_millisecond(db_uri: str) -> None:
    key = _key()
    limit = RateLimit(rate=1e6, burst=1e6)  # never waits: the take alone is timed
    with psycopg.connect(db_uri, autocommit=True) as conn:
        repo.take_rate_token(conn, key, limit)
        times = []
        for _ in range(300):
            started = time.perf_counter()
            tokens, _since = repo.take_rate_token(conn, key, limit)
            times.append(time.perf_counter() - started)
        assert tokens > 0
        bucket = repo.get_rate_bucket(conn, key)
    assert bucket is not None and bucket["takes"] == 301 and bucket["waits"] == 0
    median, p95 = statistics.median(times) * 1000, sorted(times)[284] * 1000
    print(
        f"\ncost of a take: median {median:.2f} ms, p95 {p95:.2f} ms, mean {statistics.mean(times) * 1000:.2f} ms"
    )
    assert median < 10  # ~0.3-1 ms measured here; generous for a loaded CI machine


def test_an_empty_bucket_makes_the_next_taker_wait_for_its_refill(db_uri: str) -> None:
    key = _key()
    limit = RateLimit(rate=2, burst=2)
    with psycopg.connect(db_uri, autocommit=True) as conn:
        began = time.monotonic()
        taken = [repo.take_rate_token(conn, key, limit) for _ in range(4)]
        took = time.monotonic() - began
        # Created full (2 tokens): two takes go at once, the next two are a debt of 1 and 2 tokens
        # (less what refilled meanwhile: 2 tokens a second).
        for (tokens, _since), expected in zip(taken, (1, 0, -1, -2), strict=True):
            assert expected <= tokens <= expected + limit.rate * took + 1e-6
        bucket = repo.get_rate_bucket(conn, key)
        assert bucket is not None and (bucket["takes"], bucket["waits"]) == (4, 2)
        time.sleep(1.0)  # refills 2 tokens: the debt of 2 is paid, the next take is a debt of 1
        tokens, since = repo.take_rate_token(conn, key, limit)
        elapsed = time.monotonic() - began
    # 2 tokens, 5 takes, refilled at 2 a second: at most 1 token of debt after that second, never
    # more than the whole time refilled.
    assert -1 - 1e-6 <= tokens <= 2 - 5 + limit.rate * elapsed + 1e-6
    # Its wait: one token's refill (0.5 s) for a debt of 1, less the answer's age.
    assert wait_seconds(tokens, limit, since) == pytest.approx(max(0.0, -tokens / limit.rate - since))
    assert wait_seconds(tokens, limit, since) <= 0.5


def test_concurrent_takers_never_get_more_than_rate_times_t_plus_burst(db_uri: str) -> None:
    """8 takers at once, each with its own connection, like 8 task processes."""
    key, limit, seconds, takers = _key(), RateLimit(rate=20, burst=5), 3.0, 8
    taken: list[list[float]] = [[] for _ in range(takers)]
    waited: list[float] = []
    errors: list[BaseException] = []
    start = threading.Barrier(takers + 1)
    began = 0.0

    def taker(mine: list[float]) -> None:
        limiter = CarrierRateLimiter(ActivationDbHook(), key, limit)
        try:
            limiter.acquire("activation_status")  # connects first, so all start together
            start.wait()
            while time.monotonic() - began < seconds:
                waited.append(limiter.acquire("activation_status"))
                mine.append(time.monotonic() - began)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            limiter.close()

    with psycopg.connect(db_uri, autocommit=True) as conn:
        repo.delete_rate_bucket(conn, key)
    threads = [threading.Thread(target=taker, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # their first takes (8 of the 5-token burst) made; refill to full again
    with psycopg.connect(db_uri, autocommit=True) as conn:
        repo.delete_rate_bucket(conn, key)
    began = time.monotonic()
    start.wait()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    times = sorted(t for mine in taken for t in mine if t <= seconds)
    bound = most_calls(limit, seconds)  # 5 + 20 * 3 = 65
    busiest = max(sum(1 for t in times if s <= t <= s + 1.0) for s in times)
    print(
        f"\n{takers} takers, {limit.rate:g}/s, burst {limit.burst:g}: {len(times)} tokens in {seconds:g} s "
        f"(bound {bound:g}); busiest 1 s window {busiest} (bound {most_calls(limit, 1.0):g}); "
        f"{sum(1 for w in waited if w > 0)} waits, longest {max(waited):.3f} s; per taker {[len(m) for m in taken]}"
    )
    assert len(times) <= bound
    assert busiest <= most_calls(limit, 1.0) + 2  # +2: sleeps that overran can bunch sends
    assert len(times) >= 0.85 * limit.rate * seconds  # the limit is used, not starved
    assert all(mine for mine in taken)  # every taker was served


# --------------------------------------------------------------------------------------- the hook


def _hook_conn(sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch, conn_id: str, **extra: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", telegence_conn(sim, **extra))


def test_two_connection_ids_to_one_account_share_one_bucket(
    sim: RunningSimulator, db_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.admin.load_scenario(scenario())
    _hook_conn(sim, monkeypatch, "tg_rate_a", max_calls_per_second=2, burst=1)
    _hook_conn(sim, monkeypatch, "tg_rate_b", max_calls_per_second=2, burst=1)
    _hook_conn(
        sim,
        monkeypatch,
        "tg_rate_ro",
        max_calls_per_second=2,
        burst=1,
        login="ro-app-id",
        password="ro-app-secret",
    )
    sleeps: list[float] = []
    first, second = (TelegenceHook(c, sleep=sleeps.append) for c in ("tg_rate_a", "tg_rate_b"))
    other = TelegenceHook("tg_rate_ro", sleep=sleeps.append)
    assert isinstance(first.rate_limiter, CarrierRateLimiter) and isinstance(
        second.rate_limiter, CarrierRateLimiter
    )
    assert first.rate_limiter.key == second.rate_limiter.key == bucket_key(sim.base_url, APP_ID)
    assert APP_SECRET not in first.rate_limiter.key
    with psycopg.connect(db_uri, autocommit=True) as conn:
        repo.delete_rate_bucket(conn, first.rate_limiter.key)
        repo.delete_rate_bucket(conn, bucket_key(sim.base_url, "ro-app-id"))
    assert first.activation_status("no-such-request").status == 404
    assert sleeps == []  # the bucket's one token
    assert second.activation_status("no-such-request").status == 404
    # The other connection waits for the refill: 0.5 s after the first take (less the time since).
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 0.5
    assert other.activation_status("no-such-request").status == 404  # another account: its own bucket
    assert len(sleeps) == 1
    with psycopg.connect(db_uri, autocommit=True) as conn:
        bucket = repo.get_rate_bucket(conn, first.rate_limiter.key)
    assert bucket is not None and (bucket["takes"], bucket["waits"], bucket["rate"], bucket["burst"]) == (
        2,
        1,
        2,
        1,
    )


def test_every_attempt_takes_a_token_retries_included(
    sim: RunningSimulator, db_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.admin.load_scenario(
        scenario(faults=[{"endpoint": "service_details", "kind": "error", "status": 503}])
    )
    _hook_conn(sim, monkeypatch, "tg_rate_retry", max_calls_per_second=1000, max_attempts=3)
    hook = TelegenceHook("tg_rate_retry", sleep=lambda s: None)
    assert isinstance(hook.rate_limiter, CarrierRateLimiter)
    with psycopg.connect(db_uri, autocommit=True) as conn:
        repo.delete_rate_bucket(conn, hook.rate_limiter.key)
        assert hook.service_details("5550000000").exhausted
        bucket = repo.get_rate_bucket(conn, hook.rate_limiter.key)
    assert (
        bucket is not None
        and bucket["takes"] == 3 == sim.admin.counters(iccids=False)["calls"]["service_details"]["503"]
    )
    hook.rate_limiter.close()
    sim.admin.load_scenario(scenario())


def test_a_limit_that_cannot_be_kept_sends_nothing(
    sim: RunningSimulator, db_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.admin.load_scenario(scenario())
    _hook_conn(sim, monkeypatch, "tg_rate_nodb", max_calls_per_second=5)
    with pytest.raises(CarrierRateLimitUnavailable, match="'no_such_db' does not exist"):
        TelegenceHook("tg_rate_nodb", rate_limit_db_conn_id="no_such_db").activation_status("x")
    _hook_conn(sim, monkeypatch, "tg_rate_bad", max_calls_per_second="fast")
    with pytest.raises(RateLimitSettingError, match="max_calls_per_second must be a number"):
        TelegenceHook("tg_rate_bad").activation_status("x")
    assert sim.admin.counters(iccids=False)["calls"] == {}  # nothing reached the carrier
    _hook_conn(sim, monkeypatch, "tg_rate_none", max_calls_per_second=0)
    assert TelegenceHook("tg_rate_none").rate_limiter is None  # 0: no limit, no bucket


# The child (Airflow configures Stats once per process, from the environment): three status reads
# through a limit of 2 calls/s with a burst of 1.
CHILD = r"""
from telegence_activation.hooks.telegence import TelegenceHook

hook = TelegenceHook("tg_rate_metrics")
for _ in range(3):
    assert hook.activation_status("no-such-request").status == 404
print("done")
"""


def test_waits_are_counted_and_timed_in_the_metrics(
    sim: RunningSimulator,
    db_uri: str,
    statsd: StatsdListener,  # noqa: F811  (test_metrics' fixture)
) -> None:
    sim.admin.load_scenario(scenario())
    env = {
        **os.environ,
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        "AIRFLOW__METRICS__STATSD_PREFIX": PREFIX,
        "AIRFLOW_CONN_TG_RATE_METRICS": telegence_conn(sim, max_calls_per_second=2, burst=1),
    }
    with psycopg.connect(db_uri, autocommit=True) as conn:
        repo.delete_rate_bucket(conn, bucket_key(sim.base_url, APP_ID))
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "done" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    statsd.wait_for("telegence.carrier.rate_limited.activation_status")
    time.sleep(0.3)
    assert statsd.counts()["telegence.carrier.rate_limited.activation_status"] == 2  # the 2nd and 3rd
    waited = statsd.timers()["telegence.carrier.rate_limit_wait.activation_status"]
    assert len(waited) == 2 and all(400 <= ms <= 600 for ms in waited), waited


# A task process: waits for the go, then reads statuses as fast as its hook lets it.
TASK_PROCESS = r"""
import pathlib, sys, time
from telegence_activation.hooks.telegence import TelegenceHook

folder, me, calls = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
hook = TelegenceHook("telegence_sp_1")
assert hook.activation_status("no-such-request").status == 404  # warm: connections made
(folder / f"ready-{me}").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
for _ in range(calls):
    assert hook.activation_status("no-such-request").status == 404
print("done")
"""


def test_task_processes_at_once_keep_the_carriers_limit(
    sim: RunningSimulator, db_uri: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 processes (as 3 task instances of any runs) share one account's limit: 0 answers 429."""
    processes, calls = 3, 15
    sim.admin.load_scenario(
        scenario(
            accounts=[
                {
                    "app_id": APP_ID,
                    "app_secret": APP_SECRET,
                    "rate_limit": {"per_second": CARRIER_RATE, "burst": CARRIER_BURST},
                }
            ]
        )
    )
    env = {
        **os.environ,
        "AIRFLOW_CONN_TELEGENCE_SP_1": telegence_conn(
            sim, max_calls_per_second=CARRIER_RATE, burst=CARRIER_BURST - 2, max_attempts=1
        ),
    }
    with psycopg.connect(db_uri, autocommit=True) as conn:
        repo.delete_rate_bucket(conn, bucket_key(sim.base_url, APP_ID))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", TASK_PROCESS, str(tmp_path), str(n), str(calls)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    try:
        deadline = time.monotonic() + 90
        while len(list(tmp_path.glob("ready-*"))) < processes and time.monotonic() < deadline:
            time.sleep(0.05)
        (tmp_path / "go").touch()
        began = time.monotonic()
        outputs = [child.communicate(timeout=90) for child in children]
        took = time.monotonic() - began
    finally:
        for child in children:
            child.kill()
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0 and "done" in out, err[-3000:]
    counters = sim.admin.counters(iccids=False)
    total = processes * (calls + 1)
    print(
        f"\n{processes} processes, {total} calls at {CARRIER_RATE}/s: {counters['throttled']} answers 429, {took:.1f} s"
    )
    assert counters["throttled"] == 0
    assert counters["calls"]["activation_status"] == {"404": total}
    # Paced by the limit, not by luck: after the go, the calls took at least what the rate allows.
    assert took >= (processes * calls - (CARRIER_BURST - 2)) / CARRIER_RATE - 0.1


# ---------------------------------------------------------------------------------- a whole run


def _throttled_run(
    carrier: RunningSimulator,
    make_bulk_change: Any,
    run_dag: Any,
    db: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    **limit: Any,
) -> tuple[Any, int, dict[str, Any], float]:
    """60 devices in 20 activation calls of 3 (5 per task) and their status checks, against a
    carrier that allows our account 10 calls/s (burst 4); returns the run, the 429s the carrier
    answered, its calls, and the run's wall time."""
    bc = make_bulk_change(60, static_ip_every=0)
    carrier.admin.load_scenario(
        scenario(
            accounts=[
                {
                    "app_id": APP_ID,
                    "app_secret": APP_SECRET,
                    "rate_limit": {"per_second": CARRIER_RATE, "burst": CARRIER_BURST},
                }
            ]
        )
    )
    monkeypatch.setenv("AIRFLOW_CONN_TELEGENCE_SP_1", telegence_conn(carrier, max_attempts=8, **limit))
    repo.delete_rate_bucket(db, bucket_key(carrier.base_url, APP_ID))
    started = time.monotonic()
    run = run_dag(bc.id, batch_size=3, batches_per_task=5)
    wall = time.monotonic() - started
    counters = carrier.admin.counters(iccids=False)
    assert run.state == "success"
    assert statuses(db, bc.id) == {"PROCESSED": 60}
    return run, int(counters["throttled"]), counters["calls"], wall


def test_at_the_carriers_limit_a_run_gets_no_429(carrier, make_bulk_change, run_dag, db, monkeypatch) -> None:
    # The carrier's rate, and a burst under its 4: the difference absorbs the jitter between a
    # token and the call's arrival (a call that arrives late while the carrier's bucket is full
    # loses the refill meanwhile: 2 tokens are 200 ms at 10/s).
    _run, throttled, calls, wall = _throttled_run(
        carrier,
        make_bulk_change,
        run_dag,
        db,
        monkeypatch,
        max_calls_per_second=CARRIER_RATE,
        burst=CARRIER_BURST - 2,
    )
    bucket = repo.get_rate_bucket(db, bucket_key(carrier.base_url, APP_ID))
    sent = sum(n for by_status in calls.values() for n in by_status.values())
    print(
        f"\nwith max_calls_per_second={CARRIER_RATE}: {sent} calls, {throttled} answers 429, {bucket and bucket['waits']} waits, run {wall:.1f} s"
    )
    assert throttled == 0
    assert bucket is not None and bucket["takes"] == sent  # every call took a token
    assert bucket["waits"] > 0  # and the limit was reached: it is what kept the carrier's 429s away


def test_the_same_run_without_the_limit_is_throttled(
    carrier, make_bulk_change, run_dag, db, monkeypatch
) -> None:
    _run, throttled, calls, wall = _throttled_run(carrier, make_bulk_change, run_dag, db, monkeypatch)
    sent = sum(n for by_status in calls.values() for n in by_status.values())
    print(f"\nwithout max_calls_per_second: {sent} calls, {throttled} answers 429, run {wall:.1f} s")
    assert throttled > 0
    # No extra, no bucket: nothing but the carrier's own limit paced these calls.
    assert repo.get_rate_bucket(db, bucket_key(carrier.base_url, APP_ID)) is None


def test_a_task_keeps_its_rate_limit_bucket_in_the_runs_own_activation_database(
    sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose params name another activation database keeps the bucket there, not in
    ``activation_db`` (which that run may not even have)."""
    from telegence_activation.operators.activate import ActivateBatchOperator

    sim.admin.load_scenario(scenario())  # fresh counters
    _hook_conn(sim, monkeypatch, "telegence_sp_1", max_calls_per_second=5)
    task = ActivateBatchOperator(
        task_id="activate_rate_db", bulk_change_id=1, batch_no=0, activation_db_conn_id="other_activation_db"
    )
    hook = task.carrier_hook({"service_provider_id": 1})
    assert hook.rate_limit_db_conn_id == "other_activation_db"
    with pytest.raises(CarrierRateLimitUnavailable, match="'other_activation_db' does not exist"):
        hook.activation_status("x")  # the bucket is looked for there, and nothing is sent without it
    assert sim.admin.counters(iccids=False)["calls"] == {}
