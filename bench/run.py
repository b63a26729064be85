"""``make bench``: what the orchestration costs on top of the carrier, with figures.

    .venv/bin/python bench/run.py [--sizes 1000 10000] [--with-100k] [--out bench] [--db-rows 20000]

1. End to end on the live stack (LocalExecutor, real scheduler) against the simulator with fixed
   carrier costs: 0.5 s per activation call, activation done 5 s after the POST, static IP done
   10 s after submission. Wall time per step (from the database's step timings) and in total,
   beside the ideal: the critical path the carrier alone imposes given the concurrent calls
   allowed, plus half a poll interval per polling step (the expected rounding).
2. Database writes: audit + status rows written the way the DAG writes them (COPY + pipelined
   executemany, one transaction per 200-device batch) beside a raw COPY of the same rows and
   beside one INSERT per row with a commit each (the old system's way).
3. Resources: peak RSS of the scheduler, the api-server and the largest task worker process;
   the largest XCom value pushed; carrier calls made beside the minimum the work needs.
4. How the two checks wait (``--deferrable-checks``: reschedule, the default; deferrable, the
   run's ``deferrable_checks`` param; or both, alternating, for each size): sensor tries,
   reschedules and deferrals, worker slot-seconds the sensors held (sampled), and the database
   load of the run (``pg_stat_database`` commits and rows written, metadata and activation).

Writes ``<out>/results.json`` (raw figures) and ``<out>/results.md`` (the table) and prints the table.
Loopback only; every load loop is bounded.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import secrets
import sys
import threading
import time
from dataclasses import astuple
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

from telegence_activation import repository as repo
from telegence_activation.api_client import run_id_for
from telegence_activation.db.connection import activation_db_uri
from telegence_activation.domain.intake import IntakeOptions
from telegence_activation.intake import BulkChangeSpec, ingest_csv, write_sample_csv
from telegence_activation.repository.records import error_class_of
from telegence_local.stack import LiveStack, StackConfig, ensure_database

ACTIVATION_CALL_S = 0.5
ACTIVATION_ASYNC_S = 5.0
IP_ASYNC_S = 10.0
POLL_S = 5
BATCH = 200
REPEATS = 3  # database write figures: the best of three
# The carrier's static IP pool and the customer range of the bench's CSV: a /12 (1,048,574
# addresses) holds the 333,334 static-IP devices of the 1,000,000-device run (a /16 ran out at
# 65,534 and ended the rest ERROR, correctly, "PDP pool short of addresses").
BENCH_IP_RANGE = "10.16.0.0/12"
SCENARIO: dict[str, Any] = {
    "name": "bench",
    "seed": 3,
    "accounts": [{"app_id": "bench-app-id", "app_secret": "bench-app-secret", "write_enabled": True}],
    "activation": {"unit": "seconds", "reserved_after": 1.0, "done_after": ACTIVATION_ASYNC_S},
    "ip_provisioning": {
        "unit": "seconds",
        "check_after": 2.0,
        "reserve_after": 5.0,
        "done_after": IP_ASYNC_S,
    },
    "ip_pools": [{"pdp_name": "DEMO.PDP", "cidr": BENCH_IP_RANGE}],  # the bench CSV's customer range
    "faults": [{"endpoint": "activate", "kind": "latency", "seconds": ACTIVATION_CALL_S}],
}
STEPS = (
    "ActivateDevice",
    "WaitForActivation",
    "RemoveOfferingCodes",
    "RequestIPProvision",
    "CheckIPProvisionStatus",
)


class RssSampler(threading.Thread):
    """Peak RSS of the scheduler, the api-server and the largest single task process, sampled."""

    def __init__(self, stack: LiveStack, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.interval = interval
        self.peak: dict[str, float] = {"scheduler": 0.0, "api-server": 0.0, "worker": 0.0}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            # The task processes are the scheduler's children (LocalExecutor) or the Celery
            # workers' (CeleryExecutor).
            workers = list(self.stack.config.worker_names) if self.stack.config.celery else []
            for name in ("scheduler", "api-server", *workers):
                process = self.stack.processes.get(name)
                if process is None:
                    continue
                try:
                    main = psutil.Process(process.pid)
                    if name in self.peak:
                        self.peak[name] = max(self.peak[name], main.memory_info().rss / 2**20)
                    if name == "scheduler" or name in workers:
                        for child in main.children(recursive=True):
                            rss = child.memory_info().rss / 2**20
                            if "airflow" in " ".join(child.cmdline()) or child.name().startswith("python"):
                                self.peak["worker"] = max(self.peak["worker"], rss)
                except psutil.Error:
                    pass
            self.stopped.wait(self.interval)


SENSORS = ("wait_for_activation", "check_ip_provisioning")
SAMPLE_S = 0.25
STATS_SETTLE_S = 11.0  # PostgreSQL flushes an idle backend's statistics within 10 s


class SlotSampler(threading.Thread):
    """Task-instance states of one run, sampled from the metadata database every ``SAMPLE_S``:
    seconds the sensors spent running (worker slot-seconds), queued, deferred or up for
    reschedule, and the most task instances running at once (the executor's slots in use).
    Every sample is one autocommit transaction, counted so that it can be taken off the run's
    database figures."""

    def __init__(self, airflow_db: str, run_id: str) -> None:
        super().__init__(daemon=True)
        self.airflow_db = airflow_db
        self.run_id = run_id
        self.sensor_s: dict[str, dict[str, float]] = {t: {} for t in SENSORS}
        self.peak_running = 0
        self.running_slot_s = 0.0
        self.samples = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.airflow_db, autocommit=True) as conn:
            last = time.monotonic()
            while not self.stopped.is_set():
                rows = conn.execute(
                    "SELECT task_id, state, count(*) FILTER (WHERE run_id = %s), count(*) FROM task_instance "
                    "WHERE state IN ('running', 'queued', 'deferred', 'up_for_reschedule', 'scheduled') "
                    "GROUP BY 1, 2",
                    (self.run_id,),
                ).fetchall()
                self.samples += 1
                now = time.monotonic()
                step, last = now - last, now
                running = sum(int(every) for _, state, _, every in rows if state == "running")
                self.peak_running = max(self.peak_running, running)
                self.running_slot_s += running * step
                for task_id, state, n, _ in rows:
                    if task_id in self.sensor_s and n:
                        by_state = self.sensor_s[task_id]
                        by_state[state] = by_state.get(state, 0.0) + int(n) * step
                self.stopped.wait(SAMPLE_S)


DB_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted", "tup_fetched")


def db_counters(uri: str) -> dict[str, int]:
    """This database's cumulative ``pg_stat_database`` counters (one transaction of its own)."""
    with psycopg.connect(uri, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT {', '.join(DB_COUNTERS)} FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    if row is None:
        raise LookupError(f"pg_stat_database has no row for the database of {uri.rsplit('/', 1)[-1]}")
    return dict(zip(DB_COUNTERS, (int(v) for v in row), strict=True))


# The metadata tables the two ways of checking write to (per-table rows written, far less noisy
# than the database-wide figures, which the stack's idle heartbeats dominate).
WAIT_TABLES = ("task_instance", "task_reschedule", "trigger", "task_instance_history", "job")


def table_writes(uri: str) -> dict[str, int]:
    """Rows inserted + updated + deleted so far per table of ``WAIT_TABLES`` (``pg_stat_user_tables``)."""
    with psycopg.connect(uri, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relname = ANY(%s)",
            (list(WAIT_TABLES),),
        ).fetchall()
    return {name: int(n) for name, n in rows}


def db_load(
    before: dict[str, int],
    after: dict[str, int],
    idle_per_s: dict[str, float],
    seconds: float,
    own_commits: int = 0,
) -> dict[str, Any]:
    """What the run cost one database: deltas of its counters, with and without the idle rate
    (the stack's own heartbeat traffic) over the same window; ``own_commits`` (the benchmark's
    own probes) are taken off the commits."""
    delta = {k: after[k] - before[k] for k in DB_COUNTERS}
    delta["xact_commit"] -= own_commits + 1  # + the reading of ``before`` itself
    written = delta["tup_inserted"] + delta["tup_updated"] + delta["tup_deleted"]
    idle_written = (
        idle_per_s["tup_inserted"] + idle_per_s["tup_updated"] + idle_per_s["tup_deleted"]
    ) * seconds
    return {
        **delta,
        "rows_written": written,
        "window_s": round(seconds, 1),
        "commits_above_idle": round(delta["xact_commit"] - idle_per_s["xact_commit"] * seconds),
        "rows_written_above_idle": round(written - idle_written),
    }


def idle_rates(
    uris: dict[str, str], seconds: float = 10.0
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    """Counters per second of each database while nothing runs, and the counters at the end."""
    first = {name: db_counters(uri) for name, uri in uris.items()}
    time.sleep(seconds)
    last = {name: db_counters(uri) for name, uri in uris.items()}
    rates = {
        name: {
            k: (last[name][k] - first[name][k] - (1 if k == "xact_commit" else 0)) / seconds
            for k in DB_COUNTERS
        }
        for name in uris
    }
    return rates, last


def ideal_seconds(devices: int, static_ip: int, concurrency: int, with_removals: int) -> float:
    """The carrier's own critical path for one bulk change (see module docstring)."""
    batches = math.ceil(devices / BATCH)
    activation_calls = math.ceil(batches / concurrency) * ACTIVATION_CALL_S
    path = activation_calls + ACTIVATION_ASYNC_S + POLL_S / 2
    if static_ip:
        path += IP_ASYNC_S + POLL_S / 2
    return round(path, 2)


def minimum_calls(devices: int, static_ip: int, removals: int) -> int:
    """Calls the work needs at least: one POST and one status read per activation batch, one PATCH per
    removal, one reservation, one submission and one status read per 200 IP devices. Status reads
    beyond the first (polls while the carrier is still busy) are reported separately."""
    batches = math.ceil(devices / BATCH)
    ip_batches = math.ceil(static_ip / BATCH)
    return 2 * batches + removals + 3 * ip_batches


def run_end_to_end(
    stack: LiveStack,
    devices: int,
    workdir: Path,
    batches_per_task: int | str,
    scenario: dict[str, Any] = SCENARIO,
    deferrable_checks: bool = False,
    check_interval: int = POLL_S,
    measure_db_load: bool = False,
) -> dict[str, Any]:
    assert stack.simulator is not None
    stack.simulator.admin.load_scenario(scenario)  # fresh counters for this size
    csv_path = write_sample_csv(
        workdir / f"bench-{devices}.csv", devices, static_ip_every=3, customer_ip_range=BENCH_IP_RANGE
    )
    result = ingest_csv(stack.activation_db_uri, csv_path, BulkChangeSpec(1, IntakeOptions("287301234567")))
    client = stack.client()
    run_id = run_id_for(result.bulk_change_id)
    airflow_db = stack.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg", "postgresql")
    databases = {"metadata": airflow_db, "activation": stack.activation_db_uri}
    with psycopg.connect(airflow_db) as conn:
        waits_before = waits_so_far(conn)
    if measure_db_load:  # 10 s before and 11 s after the run: only when comparing the ways of checking
        idle_per_s, counters_before = idle_rates(databases)
        tables_before = table_writes(airflow_db)
    slots = SlotSampler(airflow_db, run_id)
    slots.start()
    sampler = RssSampler(stack)
    sampler.start()
    load_before = os.getloadavg()
    started = time.monotonic()
    client.trigger(
        {
            "bulk_change_id": result.bulk_change_id,
            "batches_per_task": batches_per_task,
            "activation_check_interval_seconds": check_interval,
            "ip_check_interval_seconds": check_interval,
            "deferrable_checks": deferrable_checks,
        },
        run_id,
    )
    state = "queued"
    while state not in ("success", "failed"):
        time.sleep(1)
        state = client.get_run(run_id)["state"]
        if time.monotonic() - started > 4 * 3600:
            raise TimeoutError(f"run {run_id} not finished after four hours")
    wall = time.monotonic() - started
    sampler.stopped.set()
    sampler.join()
    slots.stopped.set()
    slots.join()
    db_figures: dict[str, Any] = {}
    if measure_db_load:
        time.sleep(STATS_SETTLE_S)  # let every backend flush its statistics
        counters_after = {name: db_counters(uri) for name, uri in databases.items()}
        tables_after = table_writes(airflow_db)
        window = time.monotonic() - started
        db_figures = {
            "db_load": {
                name: db_load(
                    counters_before[name],
                    counters_after[name],
                    idle_per_s[name],
                    window,
                    own_commits=slots.samples + 1 if name == "metadata" else 0,  # + table_writes before
                )
                for name in databases
            },
            "metadata_rows_written_by_table": {
                t: tables_after.get(t, 0) - tables_before.get(t, 0) for t in WAIT_TABLES
            },
            "db_idle_per_s": {
                name: {k: round(v, 1) for k, v in rates.items()} for name, rates in idle_per_s.items()
            },
        }
    with psycopg.connect(stack.activation_db_uri) as conn:
        counts = repo.status_counts(conn, result.bulk_change_id)
        steps = {
            t.step: (t.finished_at - t.started_at).total_seconds()
            for t in repo.step_times(conn, result.bulk_change_id)
            if t.finished_at
        }
        removals = conn.execute(
            "SELECT count(*) FROM activation.device_change WHERE bulk_change_id = %s AND offering_codes_removed_at IS NOT NULL",
            (result.bulk_change_id,),
        ).fetchone()[0]
    with psycopg.connect(airflow_db) as conn:
        waits_after = waits_so_far(conn)
        checks = sensor_figures(conn, run_id, {k: waits_after[k] - waits_before[k] for k in waits_before})
        row = conn.execute(
            "SELECT max(octet_length(value::text)), count(*) FROM xcom WHERE run_id = %s", (run_id,)
        ).fetchone()
        # Where the orchestration time goes, per task: instances, mean wait in the queue, mean run time.
        tasks = {
            task_id: {
                "instances": int(n),
                "mean_queue_s": round(float(q or 0), 2),
                "mean_run_s": round(float(r or 0), 2),
            }
            for task_id, n, q, r in conn.execute(
                """SELECT task_id, count(*),
                          avg(extract(epoch FROM start_date - queued_dttm)),
                          avg(extract(epoch FROM end_date - start_date))
                     FROM task_instance WHERE run_id = %s GROUP BY task_id""",
                (run_id,),
            ).fetchall()
        }
    counters = stack.simulator.admin.counters(iccids=False)
    made = sum(sum(by_status.values()) for by_status in counters["calls"].values())
    too_many = sum(by_status.get("429", 0) for by_status in counters["calls"].values())
    transient = sum(
        n
        for by_status in counters["calls"].values()
        for status, n in by_status.items()
        if status in ("429", "500", "502", "503", "504", "dropped")
    )
    concurrency = min(stack.config.pool_slots, stack.config.parallelism, 8)
    ideal = ideal_seconds(devices, result.static_ip_count, concurrency, int(removals))
    return {
        "devices": devices,
        "state": state,
        "statuses": counts,
        "wall_s": round(wall, 1),
        "ideal_s": ideal,
        "ratio": round(wall / ideal, 2),
        "steps": {step: round(steps.get(step, 0.0), 1) for step in STEPS},
        "max_xcom_bytes": int(row[0] or 0),
        "tasks": tasks,
        "xcom_values": int(row[1]),
        "peak_rss_mb": {k: round(v) for k, v in sampler.peak.items()},
        "carrier_calls": {
            "made": made,
            "minimum": minimum_calls(devices, result.static_ip_count, int(removals)),
            "extra_status_polls": made
            - transient
            - minimum_calls(devices, result.static_ip_count, int(removals)),
            "transient_retries_asked": transient,
            "by_endpoint": {k: sum(v.values()) for k, v in counters["calls"].items()},
        },
        "concurrent_calls": concurrency,
        "answers_429": too_many,
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "activate_instances": tasks.get("activate", {}).get("instances", 0),
        "deferrable_checks": deferrable_checks,
        "check_interval_s": check_interval,
        "checks": {
            **checks,
            "check_steps_s": round(
                steps.get("WaitForActivation", 0.0) + steps.get("CheckIPProvisionStatus", 0.0), 1
            ),
            "sensor_state_s": {
                t: {k: round(v, 1) for k, v in by.items()} for t, by in slots.sensor_s.items()
            },
            "sensor_running_slot_s": round(sum(by.get("running", 0.0) for by in slots.sensor_s.values()), 1),
            "all_running_slot_s": round(slots.running_slot_s, 1),
            "peak_running_tis": slots.peak_running,
            "samples": slots.samples,
        },
        **db_figures,
    }


def created_so_far(conn: psycopg.Connection, table: str) -> int:
    """How many rows ``table`` has ever had (its id sequence): the metadata database deletes
    triggers once their task resumed, and a sensor's reschedule rows when it is retried."""
    row = conn.execute(
        "SELECT coalesce(last_value, 0) FROM pg_sequences "
        "WHERE schemaname || '.' || sequencename = pg_get_serial_sequence(%s, 'id')",
        (table,),
    ).fetchone()
    return int(row[0] or 0) if row else 0


def waits_so_far(conn: psycopg.Connection) -> dict[str, int]:
    """Triggers and reschedules the metadata database has ever created."""
    return {
        "deferrals": created_so_far(conn, "trigger"),
        "reschedules": created_so_far(conn, "task_reschedule"),
    }


def sensor_figures(conn: psycopg.Connection, run_id: str, waits: dict[str, int]) -> dict[str, Any]:
    """Tries of the run's two sensors, and the reschedules and triggers created during the run
    (one a wait: no other task of the stack reschedules or defers, and one run goes at a time)."""
    tries: dict[str, int] = dict(
        conn.execute(
            "SELECT task_id, max(try_number) FROM task_instance WHERE run_id = %s AND task_id = ANY(%s) GROUP BY 1",
            (run_id, list(SENSORS)),
        ).fetchall()
    )
    return {"tries": {t: int(tries.get(t, 0)) for t in SENSORS}, **waits}


def audit_rows(bulk_change_id: int, device_ids: list[int]) -> list[repo.AuditRow]:
    request = json.dumps(
        {
            "billingAccount": {"id": "287301234567"},
            "service": {"serviceCharacteristic": [{"name": "sim", "value": "8901410" + "0" * 12}] * 6},
        }
    )
    response = json.dumps(
        {"iccid": "8901410000000000000", "request_id": "REQ-" + "x" * 20, "status": "pending"}
    )
    return [
        repo.AuditRow(
            bulk_change_id,
            d,
            "ActivateDevice",
            "Telegence New Service Activation: Telegence API",
            "POST /sp/mobility/serviceactivation/api/v1/service (batch 1/1)\n" + request,
            response,
            "PENDING",
            False,
        )
        for d in device_ids
    ]


def bench_db_writes(server_uri: str, rows: int, workdir: Path) -> dict[str, Any]:
    uri = ensure_database(server_uri, f"bench_writes_{secrets.token_hex(3)}")
    from telegence_activation.db.migrate import migrate

    migrate(uri)
    path = write_sample_csv(workdir / "bench-writes.csv", rows, static_ip_every=0)
    bc = ingest_csv(uri, path, BulkChangeSpec(1, IntakeOptions("B"))).bulk_change_id
    with psycopg.connect(uri) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM activation.device_change WHERE bulk_change_id = %s ORDER BY id", (bc,)
            )
        ]
    rows_audit = audit_rows(bc, ids)

    # As the DAG does it: one connection per task instance (here: one for all the rows, as one
    # activate instance sends many batches), one transaction per ``per_transaction`` rows with the
    # audit rows (COPY) and, in the full variant, their status updates (one UPDATE ... unnest).
    def dag_way(with_status: bool, offset: int, per_transaction: int) -> float:
        t = time.perf_counter()
        with psycopg.connect(uri) as conn:
            for start in range(0, len(ids), per_transaction):
                with conn.transaction():
                    chunk = ids[start : start + per_transaction]
                    if with_status:
                        repo.update_devices(
                            conn,
                            [
                                repo.DeviceUpdate(
                                    i,
                                    "PENDING",
                                    "WaitForActivation",
                                    f"requested {offset}",
                                    activation_request_id="REQ",
                                )
                                for i in chunk
                            ],
                        )
                    repo.write_audit(conn, rows_audit[start : start + per_transaction])
        return time.perf_counter() - t

    # The machine is shared: each figure is the best of ``REPEATS`` (the others lost time to other load).
    audit_rate = max(len(ids) / dag_way(False, 0, BATCH) for _ in range(REPEATS))
    # an audit row and a status row per device
    full_rate = max(2 * len(ids) / dag_way(True, n, BATCH) for n in range(1, REPEATS + 1))
    # the paged steps: 1,000 devices a page
    full_rate_1000 = max(2 * len(ids) / dag_way(True, n, 1000) for n in range(REPEATS + 1, 2 * REPEATS + 1))

    def audit_values(r: repo.AuditRow) -> tuple[Any, ...]:
        # the columns repo.AUDIT_COLUMNS names: the row's fields, then its error class (as write_audit)
        return (*astuple(r), error_class_of(r.error_text) if r.has_errors else None)

    # Raw COPY of the same audit rows, one statement, from a pre-rendered buffer.
    buffer = io.StringIO()
    for r in rows_audit:
        fields = ["t" if f is True else "f" if f is False else f for f in audit_values(r)]
        buffer.write(
            "\t".join(
                "\\N" if f is None else str(f).replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
                for f in fields
            )
            + "\n"
        )
    data = buffer.getvalue()

    def raw_copy() -> float:
        t = time.perf_counter()
        with (
            psycopg.connect(uri) as conn,
            conn.cursor() as cur,
            cur.copy(f"COPY activation.device_change_log ({repo.AUDIT_COLUMNS}) FROM STDIN") as copy,
        ):
            copy.write(data)
        return len(rows_audit) / (time.perf_counter() - t)

    copy_rate = max(raw_copy() for _ in range(REPEATS))

    # The old way: one INSERT and one commit per row (bounded to keep the run short).
    sample = rows_audit[: min(len(rows_audit), 3000)]
    t = time.perf_counter()
    with psycopg.connect(uri, autocommit=True) as conn:
        for r in sample:
            conn.execute(
                f"INSERT INTO activation.device_change_log ({repo.AUDIT_COLUMNS}) "
                f"VALUES ({', '.join(['%s'] * len(audit_values(r)))})",
                audit_values(r),
            )
    insert_rate = len(sample) / (time.perf_counter() - t)
    with psycopg.connect(server_uri, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{uri.rsplit("/", 1)[1].split("?")[0]}" WITH (FORCE)')
    return {
        "rows": len(ids),
        "dag_rows_per_s": round(audit_rate),
        "dag_audit_and_status_rows_per_s": round(full_rate),
        "dag_audit_and_status_1000_rows_per_s": round(full_rate_1000),
        "dag_audit_and_status_vs_copy": round(full_rate / copy_rate, 2),
        "dag_audit_and_status_1000_vs_copy": round(full_rate_1000 / copy_rate, 2),
        "copy_rows_per_s": round(copy_rate),
        "insert_per_row_rows_per_s": round(insert_rate),
        "dag_vs_copy": round(audit_rate / copy_rate, 2),
        "dag_vs_insert_per_row": round(audit_rate / insert_rate, 1),
    }


def render(results: dict[str, Any]) -> str:
    lines = [
        "| devices | state | wall s | ideal s | ratio | "
        + " | ".join(STEPS)
        + " | activate instances | max XCom B | calls made / min | extra polls | retries asked | 429s "
        "| peak RSS MB (sched / api / largest task) | load avg (1 min) before / after |",
        "|" + "---|" * (13 + len(STEPS) - 1),
    ]
    for e in results["end_to_end"]:
        rss = e["peak_rss_mb"]
        lines.append(
            f"| {e['devices']:,} | {e['state']} | {e['wall_s']} | {e['ideal_s']} | {e['ratio']} | "
            + " | ".join(str(e["steps"][s]) for s in STEPS)
            + f" | {e.get('activate_instances', '')} | {e['max_xcom_bytes']} | "
            f"{e['carrier_calls']['made']} / {e['carrier_calls']['minimum']} | "
            f"{e['carrier_calls']['extra_status_polls']} | "
            f"{e['carrier_calls']['transient_retries_asked']} | {e.get('answers_429', '')} | "
            f"{rss['scheduler']} / {rss['api-server']} / {rss['worker']} | "
            f"{e.get('load_average', {}).get('before', [''])[0]} / {e.get('load_average', {}).get('after', [''])[0]} |"
        )
    lines += [
        "",
        "| devices | checks | wall s | check steps s | sensor tries | reschedules | deferrals "
        "| sensor slot-s (running) | sensor s deferred / up for reschedule / queued | all running slot-s | "
        "metadata DB commits / rows written (above idle) | activation DB commits / rows written (above idle) | "
        "metadata rows written: task_instance / task_reschedule / trigger / task_instance_history / job |",
        "|" + "---|" * 13,
    ]
    for e in results["end_to_end"]:
        if "checks" not in e:
            continue
        c, load = e["checks"], e.get("db_load")
        waiting = {
            state: round(sum(by.get(state, 0.0) for by in c["sensor_state_s"].values()), 1)
            for state in ("deferred", "up_for_reschedule", "queued")
        }
        lines.append(
            f"| {e['devices']:,} | {'deferrable' if e['deferrable_checks'] else 'reschedule'} | {e['wall_s']} | "
            f"{c['check_steps_s']} | {sum(c['tries'].values())} | {c['reschedules']} | "
            f"{c['deferrals']} | {c['sensor_running_slot_s']} | "
            f"{waiting['deferred']} / {waiting['up_for_reschedule']} / {waiting['queued']} | "
            f"{c['all_running_slot_s']} | "
            + (
                " | ".join(
                    f"{load[db]['xact_commit']:,} / {load[db]['rows_written']:,} "
                    f"({load[db]['commits_above_idle']:,} / {load[db]['rows_written_above_idle']:,})"
                    for db in ("metadata", "activation")
                )
                + " | "
                + " / ".join(str(e["metadata_rows_written_by_table"].get(t, "")) for t in WAIT_TABLES)
                if load
                else "not measured | not measured | not measured"
            )
            + " |"
        )
    w = results["db_writes"]
    lines += [
        "",
        "| database writes | rows/s |",
        "|---|---|",
        f"| audit rows as the DAG writes them (COPY, one connection per task instance, a transaction per 200-device batch) | {w['dag_rows_per_s']:,} |",
        f"| audit + status rows as activate writes them (plus one UPDATE ... unnest per 200-device batch) | {w['dag_audit_and_status_rows_per_s']:,} |",
        f"| audit + status rows as the paged steps write them (a transaction per 1,000 devices) | {w.get('dag_audit_and_status_1000_rows_per_s', 0):,} |",
        f"| raw COPY of the same audit rows | {w['copy_rows_per_s']:,} |",
        f"| one INSERT + commit per row (old system) | {w['insert_per_row_rows_per_s']:,} |",
        f"| DAG audit / raw COPY | {w['dag_vs_copy']} |",
        f"| DAG audit + status (200 / 1,000 a transaction) / raw COPY | {w.get('dag_audit_and_status_vs_copy')} / {w.get('dag_audit_and_status_1000_vs_copy')} |",
        f"| DAG audit / INSERT per row | {w['dag_vs_insert_per_row']}x |",
    ]
    return "\n".join(lines)


def with_read_latency(scenario: dict[str, Any], seconds: float | None) -> dict[str, Any]:
    """The scenario with every status read (activation and static IP) answered after ``seconds``:
    the simulator answers reads at once, a real carrier does not."""
    if not seconds:
        return scenario
    reads = [
        {"endpoint": e, "kind": "latency", "seconds": seconds} for e in ("activation_status", "ip_status")
    ]
    return {**scenario, "faults": [*scenario.get("faults", []), *reads]}


def at_rate(rate: float | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The scenario with the carrier's rate limit, and the connection extra that keeps to it."""
    if not rate:
        return SCENARIO, {}
    burst = max(3, round(rate))
    account = {**SCENARIO["accounts"][0], "rate_limit": {"per_second": rate, "burst": burst}}
    return {**SCENARIO, "accounts": [account]}, {"max_calls_per_second": rate, "burst": burst - 2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--with-100k", action="store_true", help="add a 100,000-device run")
    parser.add_argument("--with-1m", action="store_true", help="add a 1,000,000-device run (long)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--db-rows", type=int, default=20000)
    parser.add_argument("--api-port", type=int, default=None)
    parser.add_argument("--parallelism", type=int, default=8, help="[core] parallelism of the LocalExecutor")
    parser.add_argument("--pool-slots", type=int, default=8, help="slots of the telegence_api pool")
    parser.add_argument("--idle-sleep", type=float, default=0.2, help="[scheduler] scheduler_idle_sleep_time")
    parser.add_argument(
        "--batches-per-task", default="auto", help="the DAG param of the same name ('auto' or an integer)"
    )
    parser.add_argument(
        "--executor", choices=("local", "celery"), default="local", help="the stack's executor"
    )
    parser.add_argument(
        "--carrier-rate",
        type=float,
        default=None,
        help="the carrier's rate limit in calls/s (burst: one second's worth), and the connection's "
        "max_calls_per_second set to it (burst 2 under the carrier's): the shared rate limit at work",
    )
    parser.add_argument(
        "--deferrable-checks",
        nargs="?",
        const="on",
        default="off",
        choices=("off", "on", "both"),
        help="the run param deferrable_checks: off (reschedule, the default), on (deferrable), or both "
        "(each size run both ways, reschedule first then deferrable, repeated --repeat times)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each size (and of each way of checking)"
    )
    parser.add_argument(
        "--check-interval",
        type=int,
        default=POLL_S,
        help="the runs' activation and static IP check intervals in seconds",
    )
    parser.add_argument(
        "--read-latency",
        type=float,
        default=None,
        help="seconds the carrier takes to answer each status read (activation and static IP); the "
        "simulator otherwise answers reads at once",
    )
    parser.add_argument(
        "--no-client-limit",
        action="store_true",
        help="with --carrier-rate: leave the connection without max_calls_per_second (what the carrier does then)",
    )
    args = parser.parse_args(argv)
    sizes = args.sizes + ([100_000] if args.with_100k else []) + ([1_000_000] if args.with_1m else [])
    if args.batches_per_task != "auto":
        args.batches_per_task = int(args.batches_per_task)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = args.out / "work"
    workdir.mkdir(exist_ok=True)
    server_uri = activation_db_uri()
    results: dict[str, Any] = {
        "settings": {
            "parallelism": args.parallelism,
            "pool_slots": args.pool_slots,
            "max_active_tis_per_dagrun": 8,
            "scheduler_idle_sleep_time": args.idle_sleep,
            "batches_per_task": args.batches_per_task,
            "poll_interval_s": POLL_S,
            "executor": args.executor,
            "carrier_rate_per_s": args.carrier_rate,
            "client_rate_limit": bool(args.carrier_rate) and not args.no_client_limit,
            "deferrable_checks": args.deferrable_checks,
            "check_interval_s": args.check_interval,
            "read_latency_s": args.read_latency,
        },
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
    print(f"database writes ({args.db_rows:,} rows) ...", flush=True)
    results["db_writes"] = bench_db_writes(server_uri, args.db_rows, workdir)
    scenario, carrier_extra = at_rate(args.carrier_rate)
    if args.no_client_limit:
        carrier_extra = {}
    scenario = with_read_latency(scenario, args.read_latency)
    stack = LiveStack(
        StackConfig(
            home=workdir / "airflow",
            api_port=args.api_port,
            scenario=scenario,
            carrier_extra=carrier_extra,
            executor=args.executor,
            db_server_uri=server_uri,
            parallelism=args.parallelism,
            pool_slots=args.pool_slots,
            scheduler_idle_sleep=args.idle_sleep,
            app_id="bench-app-id",
            app_secret="bench-app-secret",
            airflow_database=f"airflow_bench_{secrets.token_hex(3)}",
            activation_database=f"activation_bench_{secrets.token_hex(3)}",
            # [core] max_map_length at Airflow's default (1024): 1,000,000 devices are 5,000 batches
        )
    )
    try:
        stack.start()
        stack.client().unpause()
        results["end_to_end"] = []
        ways = {"off": (False,), "on": (True,), "both": (False, True)}[args.deferrable_checks]
        for devices in sizes:
            for _ in range(args.repeat):
                for deferrable in ways:
                    print(f"end to end, {devices:,} devices, deferrable checks {deferrable} ...", flush=True)
                    results["end_to_end"].append(
                        run_end_to_end(
                            stack,
                            devices,
                            workdir,
                            args.batches_per_task,
                            scenario,
                            deferrable_checks=deferrable,
                            check_interval=args.check_interval,
                            measure_db_load=args.deferrable_checks != "off",
                        )
                    )
                    print(json.dumps(results["end_to_end"][-1]), flush=True)
    finally:
        stack.stop()
        with psycopg.connect(server_uri, autocommit=True) as conn:
            for db in (stack.config.airflow_database, stack.config.activation_database):
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    e2e = results["end_to_end"]
    results["max_xcom_bytes"] = max(e["max_xcom_bytes"] for e in e2e)
    results["peak_rss_mb"] = {k: max(e["peak_rss_mb"][k] for e in e2e) for k in e2e[0]["peak_rss_mb"]}
    results["carrier_calls"] = {
        "made": sum(e["carrier_calls"]["made"] for e in e2e),
        "minimum": sum(e["carrier_calls"]["minimum"] for e in e2e),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = render(results)
    md = args.out / "results.md"
    previous = md.read_text() if md.exists() else ""
    analysis = previous.split("<!-- analysis -->", 1)[1] if "<!-- analysis -->" in previous else "\n"
    md.write_text(
        f"# Benchmark results\n\nGenerated {results['generated_at']} by `make bench` "
        f"({results['machine']['cpus']} CPUs).\n\n{table}\n\n<!-- analysis -->{analysis}"
    )
    print(table)
    return 0 if all(e["state"] == "success" for e in e2e) else 1


if __name__ == "__main__":
    sys.exit(main())
