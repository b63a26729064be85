"""``make chaos``: faults injected into the live stack, and what each one leaves behind.

    .venv/bin/python bench/chaos.py [--quick] [--faults NAME,...] [--devices N] [--out bench]

Runs the live stack (embedded PostgreSQL of its own, the Telegence simulator, Airflow api-server,
scheduler, dag-processor and triggerer with the LocalExecutor) and, per fault: loads a clean
simulator scenario, creates a bulk change through the CSV intake, triggers it through the REST
API (run id ``bulk_change__<id>``), injects the fault, waits on states (database and REST API,
generous deadlines), applies at most one documented recovery command if the bulk change does not
end by itself, then measures one row:

* ``lost``: devices not terminal (PROCESSED, ERROR, API_FAILED) at the end;
* ``double_activations``: ICCIDs of the bulk change one carrier (simulator process) accepted into
  an activation request more than once (``activationsPerIccid`` > 1), not counting attempts the
  carrier rejected (a rejected SIM sent again by ``retry-failed`` is activated once);
* ``duplicate_audit_rows``: ``device_change_log`` rows identical in every column but ``id`` and
  ``processed_at``;
* ``missing_attempts``: write requests the simulator received (activate, service_update,
  ip_reserve, ip_provision, every status) minus the ``carrier_write`` rows, floored at 0;
* ``recovery``, ``outcome`` (bulk change status and device counts), ``seconds``, ``notes`` and
  ``checks`` (the fault's own expectations, e.g. "the CLI refused").

The stack is supervised (it restarts components and its PostgreSQL by itself): what it restarted
during a fault is listed in ``recovery`` as automatic. The PostgreSQL server is the runner's own
(``<data dir>/chaos/pgdata``), since one fault kills it. Writes
``<out>/faults.json`` (the rows) and ``<out>/faults.md`` (a table and a paragraph per fault) and
prints each row as it completes. Exits 1 if any row shows a loss, a duplicate, a missing attempt,
an unfinished bulk change or a failed check.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
import requests

from telegence_activation.api_client import AirflowApiError, run_id_for
from telegence_activation.db.connection import (
    data_dir,
    embedded_running,
    embedded_uri,
    restart_embedded,
    stop_embedded,
)
from telegence_local.stack import DAG_ID, LiveStack, StackConfig
from telegence_simulator.launcher import start_simulator

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the live tests' helpers: one way to create bulk changes and run the CLI
    sys.path.insert(0, str(REPO))
from tests.live.test_live_stack import APP_SECRET, SCENARIO, cli, new_bulk_change, statuses  # noqa: E402

APP_ID = "live-app-id"
FAST = {"activation_check_interval_seconds": 2, "ip_check_interval_seconds": 2}
WRITE_ENDPOINTS = ("activate", "service_update", "ip_reserve", "ip_provision")
TERMINAL = ("PROCESSED", "ERROR", "API_FAILED")
SENSORS = ("wait_for_activation", "check_ip_provisioning")
RUN_TIMEOUT = 900.0  # seconds a run may take under a fault before the row says so
CARRIER_DOWN_S = 60
DATABASE_DOWN_S = 15
QUICK = (
    "answers_lost_static_ip",
    "concurrent_triggers",
    "second_run",
    "kill_activate_task",
    "retry_while_waiting",
)
FULL = (
    "answers_lost_static_ip",
    "concurrent_triggers",
    "second_run",
    "kill_activate_task",
    "retry_while_waiting",
    "reschedule_race",
    "carrier_down",
    "kill_scheduler",
    "kill_database",
)


def scenario(
    *,
    activation_done: float = 1.0,
    faults: Sequence[dict[str, Any]] = (),
    outcomes: Sequence[dict[str, Any]] = (),
    ip_done: float = 1.2,
) -> dict[str, Any]:
    """The live tests' scenario with the carrier's pace, faults and scripted outcomes of a fault."""
    return {
        **SCENARIO,
        "name": "chaos",
        "activation": {
            "unit": "seconds",
            "reserved_after": min(0.3, activation_done),
            "done_after": activation_done,
        },
        "ip_provisioning": {
            "unit": "seconds",
            "check_after": ip_done / 4,
            "reserve_after": ip_done / 2,
            "done_after": ip_done,
        },
        "faults": list(faults),
        "outcomes": list(outcomes),
    }


# ------------------------------------------------------------------------------------ one fault


@dataclass
class Row:
    """What one fault left behind (one line of faults.json)."""

    fault: str
    devices: int
    lost: int
    double_activations: int
    duplicate_audit_rows: int
    missing_attempts: int
    recovery: str
    outcome: dict[str, Any]
    seconds: float
    notes: str
    checks: dict[str, bool]

    @property
    def clean(self) -> bool:
        """No loss, no duplicate, no missing attempt, every bulk change finished, every check held."""
        statuses_ok = set(str(self.outcome.get("status", "")).split("/")) <= {"PROCESSED", "ERROR"}
        counts = (self.lost, self.double_activations, self.duplicate_audit_rows, self.missing_attempts)
        return not any(counts) and statuses_ok and all(self.checks.values())


@dataclass
class Chaos:
    """The running stack and where the runner keeps its files."""

    stack: LiveStack
    workdir: Path
    devices: int
    pgdata: Path  # the embedded server's data directory (the database fault kills that server)

    @property
    def uri(self) -> str:
        return self.stack.activation_db_uri

    @property
    def simulator(self) -> Any:
        assert self.stack.simulator is not None, "the stack has no simulator"
        return self.stack.simulator


@dataclass
class Trial:
    """One fault's bookkeeping: its bulk changes, runs, recovery and what was seen."""

    name: str
    started: float = field(default_factory=time.monotonic)
    bulk_changes: list[int] = field(default_factory=list)
    iccids: list[str] = field(default_factory=list)
    runs: dict[int, str] = field(default_factory=dict)  # bulk change -> its owning run
    started_runs: list[str] = field(default_factory=list)  # every run the fault created
    retired: list[dict[str, Any]] = field(default_factory=list)  # carrier records of replaced simulators
    recovery: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    commands: int = 0  # documented recovery commands applied (at most one)
    restarts_before: dict[str, int] = field(default_factory=dict)  # the stack supervisor's, at the start

    def note(self, text: str) -> None:
        self.notes.append(text)

    def check(self, name: str, held: bool, seen: str = "") -> None:
        self.checks[name] = held
        if not held:
            self.note(f"CHECK FAILED {name}" + (f": {seen}" if seen else ""))


def begin(ctx: Chaos, trial: Trial, carrier: dict[str, Any], devices: int, static_ip_every: int = 3) -> int:
    """A clean carrier (scenario loaded, state and counters reset) and a new bulk change."""
    ctx.simulator.admin.load_scenario(carrier)
    bc, iccids = new_bulk_change(ctx.stack, ctx.workdir, devices, static_ip_every=static_ip_every)
    trial.bulk_changes.append(bc)
    trial.iccids += iccids
    return bc


def trigger(ctx: Chaos, trial: Trial, bc: int, run_id: str | None = None, **conf: Any) -> str:
    run_id = run_id or run_id_for(bc)
    trial.started_runs.append(run_id)
    ctx.stack.client().trigger({"bulk_change_id": bc, **FAST, **conf}, run_id)
    trial.runs.setdefault(bc, run_id)
    return run_id


def poll(what: str, probe: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """Call ``probe`` until it returns something truthy (errors count as not yet); raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            found = probe()
        except (psycopg.Error, AirflowApiError, requests.RequestException, psutil.Error) as exc:
            last_error, found = exc, None
        if found:
            return found
        time.sleep(every)
    raise TimeoutError(
        f"{what}: not seen within {timeout:.0f} s" + (f" (last error: {last_error})" if last_error else "")
    )


def get_run(ctx: Chaos, run_id: str) -> dict[str, Any] | None:
    try:
        return ctx.stack.client().get_run(run_id)
    except (AirflowApiError, requests.RequestException):
        return None


def wait_run(
    ctx: Chaos, trial: Trial, run_id: str, *, timeout: float = RUN_TIMEOUT, after: str | None = None
) -> str:
    """Wait until the run ends (a state newer than end date ``after``, if given); its state, or "timeout"
    (then the row lists the database sessions stuck in a transaction, the usual cause)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = get_run(ctx, run_id)
        if run and run["state"] in ("success", "failed") and (after is None or run.get("end_date") != after):
            return str(run["state"])
        time.sleep(2)
    trial.note(f"run {run_id} did not end within {timeout:.0f} s")
    with suppress(psycopg.Error):
        trial.note(
            f"database sessions idle in a transaction for over 30 s: {stale_transactions(ctx) or 'none'}"
        )
    return "timeout"


def end_date(ctx: Chaos, run_id: str) -> str | None:
    run = get_run(ctx, run_id)
    return run.get("end_date") if run else None


def retry_failed(ctx: Chaos, trial: Trial, bc: int, *extra: str) -> subprocess.CompletedProcess[str]:
    """The documented way back in, run as a user would; recorded as the row's recovery."""
    done = cli(ctx.stack, "retry-failed", str(bc), *extra)
    trial.commands += 1
    trial.recovery.append(" ".join(["python -m telegence_activation retry-failed", str(bc), *extra]))
    said = (done.stdout.strip() or done.stderr.strip()).splitlines()
    trial.note(f"retry-failed {bc}: exit {done.returncode}: {said[-1] if said else ''}")
    return done


def retry_and_wait(ctx: Chaos, trial: Trial, bc: int, *extra: str) -> str:
    run_id = trial.runs[bc]
    before = end_date(ctx, run_id)
    done = retry_failed(ctx, trial, bc, *extra)
    if done.returncode != 0:
        return "refused"
    return wait_run(ctx, trial, run_id, after=before)


# ------------------------------------------------------------------------------- the processes


def supervisor_restarts(ctx: Chaos, trial: Trial) -> dict[str, int]:
    """Components the stack's supervisor restarted during the fault (by itself: no command)."""
    now = dict(ctx.stack.restarts)
    return {
        c: n - trial.restarts_before.get(c, 0) for c, n in now.items() if n > trial.restarts_before.get(c, 0)
    }


def lingering(ctx: Chaos, component: str) -> list[int]:
    """Processes of a component that do not descend from its current process (orphans of a killed one)."""
    current = ctx.stack.processes.get(component)
    if current is None:
        return [p.pid for p in ctx.stack.stack_processes(component)]
    family = {current.pid} | {p.pid for p in psutil.Process(current.pid).children(recursive=True)}
    return [
        p.pid
        for p in ctx.stack.stack_processes(component)
        if p.pid not in family and p.status() != psutil.STATUS_ZOMBIE
    ]


def task_process(ctx: Chaos, ti: dict[str, Any]) -> psutil.Process | None:
    """The task process of a running task instance: a scheduler descendant titled ``airflow worker -- <ti id>``."""
    title = f"airflow worker -- {ti['id']}"
    scheduler = ctx.stack.processes.get("scheduler")
    if scheduler is None:
        return None
    for child in psutil.Process(scheduler.pid).children(recursive=True):
        with suppress(psutil.Error):
            if title in " ".join(child.cmdline()):
                return child
    return None


def running_task(ctx: Chaos, run_id: str, task_id: str) -> dict[str, Any] | None:
    for ti in ctx.stack.client().task_instances(run_id):
        if ti["task_id"] == task_id and ti["state"] == "running":
            return dict(ti)
    return None


def task_state(ctx: Chaos, run_id: str, task_id: str) -> str | None:
    states = [ti["state"] for ti in ctx.stack.client().task_instances(run_id) if ti["task_id"] == task_id]
    return str(states[0]) if states else None


# ------------------------------------------------------------------------------- the database


def query(ctx: Chaos, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(ctx.uri, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def writes_in_flight(ctx: Chaos, bc: int, step: str = "ActivateDevice") -> int:
    """Carrier writes of the bulk change recorded and not answered yet (the request is out)."""
    rows = query(
        ctx,
        "SELECT count(*) FROM activation.carrier_write WHERE bulk_change_id = %s AND step = %s AND outcome = 'SENT'",
        (bc, step),
    )
    return int(rows[0][0])


def all_waiting_for_activation(ctx: Chaos, bc: int) -> bool:
    rows = query(
        ctx,
        """SELECT count(*) FILTER (WHERE status = 'PENDING' AND step = 'WaitForActivation'), count(*)
             FROM activation.device_change WHERE bulk_change_id = %s""",
        (bc,),
    )
    waiting, total = rows[0]
    return bool(total) and waiting == total


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split()[0])


# ------------------------------------------------------------------------------------ measuring


def bulk_change_outcome(ctx: Chaos, bc: int) -> tuple[str, dict[str, int]]:
    rows = query(ctx, "SELECT status FROM activation.bulk_change WHERE id = %s", (bc,))
    return (str(rows[0][0]) if rows else "MISSING"), statuses(ctx.stack, bc)


def duplicate_audit_rows(ctx: Chaos, bcs: list[int]) -> int:
    """Audit rows identical to another in every column but ``id`` and ``processed_at``."""
    columns = [
        r[0]
        for r in query(
            ctx,
            """SELECT column_name FROM information_schema.columns
                WHERE table_schema = 'activation' AND table_name = 'device_change_log'
                  AND column_name NOT IN ('id', 'processed_at') ORDER BY ordinal_position""",
        )
    ]
    grouped = ", ".join(f'"{c}"' for c in columns)
    rows = query(
        ctx,
        f"""SELECT coalesce(sum(n - 1), 0) FROM (
              SELECT count(*) AS n FROM activation.device_change_log
               WHERE bulk_change_id = ANY(%s) GROUP BY {grouped}) g""",
        (bcs,),
    )
    return int(rows[0][0])


def recorded_writes(ctx: Chaos, bcs: list[int]) -> int:
    """The ``carrier_write`` rows of these bulk changes (one per HTTP attempt, recorded before it is sent)."""
    rows = query(ctx, "SELECT count(*) FROM activation.carrier_write WHERE bulk_change_id = ANY(%s)", (bcs,))
    return int(rows[0][0])


def write_calls(counters: dict[str, Any]) -> int:
    calls = counters.get("calls", {})
    return sum(sum(calls.get(endpoint, {}).values()) for endpoint in WRITE_ENDPOINTS)


def carrier_record(ctx: Chaos, iccids: list[str]) -> dict[str, Any]:
    """What the carrier (this simulator process) saw: its counters, and the ICCIDs it took more than once.

    ``activationsPerIccid`` counts every attempt accepted into a request, a rejected one too; an ICCID
    whose earlier attempts were all rejected (then sent again by ``retry-failed``) was activated once,
    so the attempts are looked at (admin device view) before one is called a double activation."""
    counters = ctx.simulator.admin.counters()
    per_iccid = counters.get("activationsPerIccid", {})
    doubles: list[str] = []
    after_rejection: list[str] = []
    for iccid in iccids:
        if int(per_iccid.get(iccid, 0)) <= 1:
            continue
        latest = ctx.simulator.admin.device(iccid)
        taken = [a for a in (latest, *latest.get("previousAttempts", [])) if a.get("status") != "rejected"]
        (doubles if len(taken) > 1 else after_rejection).append(iccid)
    return {"counters": counters, "doubles": doubles, "after_rejection": after_rejection}


def carrier_caught_up(ctx: Chaos, trial: Trial, timeout: float = 90.0) -> None:
    """Wait until every recorded write reached the carrier (a held request is counted when it ends)."""
    bcs = trial.bulk_changes

    def caught_up() -> bool:
        received = write_calls(ctx.simulator.admin.counters(iccids=False))
        return received + sum(write_calls(r["counters"]) for r in trial.retired) >= recorded_writes(ctx, bcs)

    try:
        poll("the carrier's counters to catch up with the recorded writes", caught_up, timeout, every=1.0)
    except TimeoutError as exc:
        trial.note(str(exc))


def retried_tasks(ctx: Chaos, run_id: str) -> dict[str, int]:
    """Task instances of a run beyond their first try: ``{task[map index]: try_number}``."""
    tis = ctx.stack.client().task_instances(run_id)
    return {
        t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else ""): int(t["try_number"])
        for t in tis
        if int(t["try_number"] or 0) > 1
    }


def note_repeated_activations(trial: Trial, records: list[dict[str, Any]]) -> None:
    """Say which repeated activations are not double ones (after a rejection; by a restarted carrier)."""
    after_rejection = {i for r in records for i in r["after_rejection"]}
    if after_rejection:
        trial.note(
            f"{len(after_rejection)} ICCID(s) accepted twice, the first attempt rejected by the carrier "
            "(not a double activation)"
        )
    if len(records) > 1:
        totals: dict[str, int] = {}
        for r in records:
            for iccid, times in r["counters"].get("activationsPerIccid", {}).items():
                totals[iccid] = totals.get(iccid, 0) + int(times)
        again = sum(1 for i in trial.iccids if totals.get(i, 0) > 1)
        trial.note(
            f"{again} ICCID(s) accepted by both carrier processes (the restarted one had forgotten them)"
        )


def measure(ctx: Chaos, trial: Trial, seconds: float) -> Row:
    for run_id in trial.runs.values():
        with suppress(AirflowApiError, requests.RequestException):
            trial.note(f"tries beyond the first in {run_id}: {retried_tasks(ctx, run_id) or 'none'}")
    records = [*trial.retired, carrier_record(ctx, trial.iccids)]
    bcs = trial.bulk_changes
    outcomes = [bulk_change_outcome(ctx, bc) for bc in bcs]
    devices: dict[str, int] = {}
    for _, counts in outcomes:
        for status, n in counts.items():
            devices[status] = devices.get(status, 0) + n
    recorded = recorded_writes(ctx, bcs)
    received = sum(write_calls(r["counters"]) for r in records)
    note_repeated_activations(trial, records)
    trial.note(f"carrier writes: {received} received by the carrier, {recorded} recorded")
    return Row(
        fault=trial.name,
        devices=sum(devices.values()),
        lost=sum(n for status, n in devices.items() if status not in TERMINAL),
        double_activations=len({i for r in records for i in r["doubles"]}),
        duplicate_audit_rows=duplicate_audit_rows(ctx, bcs) if bcs else 0,
        missing_attempts=max(0, received - recorded),
        recovery="; ".join(trial.recovery) or "none",
        outcome={
            "status": "/".join(sorted({status for status, _ in outcomes})) or "NONE",
            "devices": dict(sorted(devices.items())),
            "bulk_changes": {str(bc): status for bc, (status, _) in zip(bcs, outcomes, strict=True)},
        },
        seconds=round(seconds, 1),
        notes="; ".join(trial.notes),
        checks=trial.checks,
    )


def settle(ctx: Chaos, trial: Trial) -> None:
    """If a bulk change did not end by itself, apply the one documented command (if none was yet)."""
    for bc, run_id in trial.runs.items():
        status, counts = bulk_change_outcome(ctx, bc)
        unfinished = sum(n for s, n in counts.items() if s not in TERMINAL)
        if status in ("PROCESSED", "ERROR") and not unfinished and not counts.get("API_FAILED"):
            continue
        run = get_run(ctx, run_id)
        trial.note(f"bulk change {bc} {status} {counts} after run {run_id} {run['state'] if run else '?'}")
        if trial.commands == 0 and run and run["state"] in ("success", "failed"):
            trial.note(f"run {run_id} after retry-failed: {retry_and_wait(ctx, trial, bc)}")


def stop_leftover_runs(ctx: Chaos, trial: Trial) -> None:
    """Mark failed (REST API) any run of the fault still queued or running, so the next fault starts clean."""
    for run_id in trial.started_runs:
        run = get_run(ctx, run_id)
        if run and run["state"] in ("queued", "running"):
            with suppress(AirflowApiError, requests.RequestException):
                ctx.stack.client().request(
                    "PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", json={"state": "failed"}
                )
            trial.note(f"run {run_id} still {run['state']} at the end: marked failed by the runner")


def run_fault(ctx: Chaos, name: str) -> Row:
    """Run one fault end to end and measure it; a runner error is a finding too, written in the row."""
    trial = Trial(name, restarts_before=dict(ctx.stack.restarts))
    try:
        FAULTS[name].run(ctx, trial)
        settle(ctx, trial)
    except Exception as exc:  # the row still says what was left behind
        trial.check("runner", False, f"{type(exc).__name__}: {exc}")
    seconds = time.monotonic() - trial.started
    stop_leftover_runs(ctx, trial)
    restarted = supervisor_restarts(ctx, trial)
    if restarted:
        trial.recovery.append(f"automatic: the stack's supervisor restarted {restarted}")
    return measure(ctx, trial, seconds)


# ---------------------------------------------------------------------------------- the faults


def answers_lost_static_ip(ctx: Chaos, trial: Trial) -> None:
    lost = {"kind": "answer_lost", "mode": "drop", "first_n": 1}
    bc = begin(
        ctx,
        trial,
        scenario(faults=[{"endpoint": "ip_reserve", **lost}, {"endpoint": "ip_provision", **lost}]),
        ctx.devices,
        static_ip_every=2,
    )
    state = wait_run(ctx, trial, trigger(ctx, trial, bc))
    faults = ctx.simulator.admin.counters(iccids=False).get("faults", {})
    fired = {e: faults.get(e, {}).get("answer_lost", 0) for e in ("ip_reserve", "ip_provision")}
    trial.check("answers_were_lost", all(fired.values()), str(fired))
    trial.note(f"answers dropped after processing: {fired}; run {state}")


def concurrent_triggers(ctx: Chaos, trial: Trial) -> None:
    bc = begin(ctx, trial, scenario(), ctx.devices)
    run_ids = [run_id_for(bc), f"{run_id_for(bc)}__twin_b", f"{run_id_for(bc)}__twin_c"]
    barrier = threading.Barrier(len(run_ids))

    def fire(run_id: str) -> str:
        client = ctx.stack.client()
        client.request("GET", f"/api/v2/dags/{DAG_ID}")  # log in before the barrier
        barrier.wait(timeout=60)
        try:
            client.trigger({"bulk_change_id": bc, **FAST}, run_id)
        except AirflowApiError as exc:
            return f"refused {exc.status}"
        return "created"

    trial.started_runs += run_ids
    with ThreadPoolExecutor(len(run_ids)) as pool:
        created = dict(zip(run_ids, pool.map(fire, run_ids), strict=True))
    ended = {run_id: wait_run(ctx, trial, run_id) for run_id in run_ids if created[run_id] == "created"}
    owner = query(ctx, "SELECT dag_run_id FROM activation.bulk_change WHERE id = %s", (bc,))[0][0]
    trial.runs[bc] = str(owner)
    winners = [r for r, s in ended.items() if s == "success"]
    losers = [r for r in ended if r != owner]
    trial.check("one_run_succeeded", winners == [owner], f"runs {ended}, owner {owner}")
    trial.check("others_failed", all(ended[r] == "failed" for r in losers), str(ended))
    foreign = query(
        ctx,
        "SELECT count(*) FROM activation.carrier_write WHERE bulk_change_id = %s AND split_part(sent_by, '/', 1) <> %s",
        (bc, owner),
    )[0][0]
    trial.check("losers_wrote_nothing", foreign == 0, f"{foreign} carrier write(s) by other runs")
    notices = int(
        query(
            ctx,
            "SELECT count(*) FROM activation.notification WHERE bulk_change_id = %s AND channel = 'webhook'",
            (bc,),
        )[0][0]
    )
    trial.check("one_notification", notices == 1, f"{notices} webhook notification rows")
    trial.note(f"triggers {created}; runs {ended}; owner {owner}; {notices} notification row(s)")


def snapshot(ctx: Chaos, bc: int) -> dict[str, Any]:
    """Everything a run could change about a bulk change: rows as text, counts, carrier writes, report files."""
    tables = {
        "bulk_change": "SELECT to_jsonb(b)::text FROM activation.bulk_change b WHERE id = %s",
        "devices": "SELECT to_jsonb(d)::text FROM activation.device_change d WHERE bulk_change_id = %s ORDER BY id",
        "audit": "SELECT count(*)::text FROM activation.device_change_log WHERE bulk_change_id = %s",
        "carrier_writes": "SELECT count(*)::text FROM activation.carrier_write WHERE bulk_change_id = %s",
        "notifications": "SELECT to_jsonb(n)::text FROM activation.notification n WHERE bulk_change_id = %s ORDER BY id",
        "report": "SELECT to_jsonb(r)::text FROM activation.bulk_change_report r WHERE bulk_change_id = %s",
        "steps": "SELECT to_jsonb(s)::text FROM activation.step_timing s WHERE bulk_change_id = %s ORDER BY step",
    }
    found: dict[str, Any] = {name: [r[0] for r in query(ctx, sql, (bc,))] for name, sql in tables.items()}
    found["carrier_calls"] = write_calls(ctx.simulator.admin.counters(iccids=False))
    reports = ctx.stack.config.home / "reports"
    found["report_files"] = sorted(
        (p.name, p.stat().st_mtime_ns) for p in reports.glob(f"bulk_change_{bc}.*") if p.is_file()
    )
    return found


def second_run(ctx: Chaos, trial: Trial) -> None:
    bc = begin(ctx, trial, scenario(), ctx.devices)
    first = wait_run(ctx, trial, trigger(ctx, trial, bc))
    before = snapshot(ctx, bc)
    again = f"{run_id_for(bc)}__again"
    trial.started_runs.append(again)
    ctx.stack.client().trigger({"bulk_change_id": bc, **FAST}, again)
    second = wait_run(ctx, trial, again)
    after = snapshot(ctx, bc)
    changed = [name for name in before if before[name] != after[name]]
    trial.check("second_run_failed", second == "failed", second)
    trial.check("nothing_changed", not changed, f"changed: {changed}")
    trial.note(f"first run {first}; second run {again} {second}; changed: {changed or 'nothing'}")


def kill_activate_task(ctx: Chaos, trial: Trial) -> None:
    hold = 20.0
    bc = begin(
        ctx,
        trial,
        # Taken by the carrier first, then the answer held: a latency hold would not do, since the
        # simulator drops a call still in its latency hold when the client goes away.
        scenario(
            faults=[
                {
                    "endpoint": "activate",
                    "kind": "answer_lost",
                    "mode": "delay",
                    "seconds": hold,
                    "first_n": 1,
                }
            ]
        ),
        ctx.devices,
    )
    run_id = trigger(ctx, trial, bc)
    poll("an activation POST in flight", lambda: writes_in_flight(ctx, bc), 180)
    ti = poll("the running activate task", lambda: running_task(ctx, run_id, "activate"), 30)
    process = poll("its task process", lambda: task_process(ctx, ti), 30)
    title = " ".join(process.cmdline())
    process.send_signal(signal.SIGKILL)
    trial.note(
        f"SIGKILL to pid {process.pid} ({title.strip()!r}, try {ti['try_number']}) after the carrier took its "
        f"POST, while the answer was held {hold:.0f} s"
    )
    state = wait_run(ctx, trial, run_id)
    tries = [t["try_number"] for t in ctx.stack.client().task_instances(run_id) if t["task_id"] == "activate"]
    trial.check("activate_was_retried", max(tries, default=0) >= 2, f"tries {tries}")
    trial.note(f"activate tries {tries}; run {state}")
    carrier_caught_up(ctx, trial)


def retry_resets(ctx: Chaos, bc: int) -> int:
    """Devices of the bulk change a ``retry-failed`` reset (its audit rows)."""
    with psycopg.connect(ctx.stack.activation_db_uri) as conn:
        row = conn.execute(
            "SELECT count(*) FROM activation.device_change_log WHERE bulk_change_id = %s "
            "AND processed_by LIKE 'retry-failed by %%'",
            (bc,),
        ).fetchone()
    return int(row[0]) if row else 0


def retry_while_waiting(ctx: Chaos, trial: Trial) -> None:
    bc = begin(ctx, trial, scenario(activation_done=10.0), ctx.devices)
    rejected = trial.iccids[1]
    ctx.simulator.admin.load_scenario(
        scenario(activation_done=10.0, outcomes=[{"kind": "reject_activation", "iccids": [rejected]}]),
        keep_state=True,
    )
    run_id = trigger(ctx, trial, bc)
    poll(
        "the activation check waiting (up_for_reschedule)",
        lambda: task_state(ctx, run_id, "wait_for_activation") == "up_for_reschedule",
        240,
    )
    early = cli(ctx.stack, "retry-failed", str(bc))
    trial.check(
        "cli_refused_while_running",
        early.returncode == 1 and "still" in early.stderr and run_id in early.stderr,
        f"exit {early.returncode}: {early.stderr.strip()}",
    )
    # The run goes on meanwhile (its checks move devices along), so the refusal is judged by what
    # it would have written: a reset of a device is audited as "retry-failed by <user>".
    resets = retry_resets(ctx, bc)
    trial.check("refusal_changed_nothing", resets == 0, f"{resets} device(s) reset by the refused retry")
    trial.note(f"while the sensor waited: exit {early.returncode}, {early.stderr.strip()!r}")
    first = wait_run(ctx, trial, run_id)
    trial.note(f"run {first} with {statuses(ctx.stack, bc)}")
    ctx.simulator.admin.load_scenario(scenario(activation_done=1.0), keep_state=True)  # the carrier is fixed
    # A rejection is "permanent" in the error catalogue: once the cause is fixed, a person retries it.
    second = retry_and_wait(ctx, trial, bc, "--all")
    trial.check("retry_worked_after_the_end", second == "success", second)


def reschedule_race(ctx: Chaos, trial: Trial) -> None:
    ctx.simulator.admin.load_scenario(scenario(activation_done=12.0, ip_done=12.0))
    per_run = max(2, ctx.devices // 5)
    runs: dict[int, str] = {}
    for i, interval in enumerate((2, 3, 4, 5, 2)):
        bc, iccids = new_bulk_change(ctx.stack, ctx.workdir, per_run, static_ip_every=2)
        trial.bulk_changes.append(bc)
        trial.iccids += iccids
        runs[bc] = trigger(
            ctx,
            trial,
            bc,
            activation_check_interval_seconds=interval,
            ip_check_interval_seconds=7 - interval + i % 2,
        )
    ended = {run_id: wait_run(ctx, trial, run_id) for run_id in runs.values()}
    tries = {
        run_id: {
            t["task_id"]: t["try_number"]
            for t in ctx.stack.client().task_instances(run_id)
            if t["task_id"] in SENSORS
        }
        for run_id in runs.values()
    }
    retried = sum(n - 1 for by_task in tries.values() for n in by_task.values())
    reschedules = count_reschedules(ctx, list(runs.values()))
    trial.check("every_run_succeeded", all(s == "success" for s in ended.values()), str(ended))
    trial.note(
        f"{len(runs)} runs at 2-5 s check intervals: {reschedules} sensor reschedules, {retried} sensor "
        f"retries (try_number - 1; each a failed try absorbed: the race{' happened' if retried else ' not seen this time'}); "
        f"tries per run {tries}"
    )


def count_reschedules(ctx: Chaos, run_ids: list[str]) -> int | str:
    """Reschedules of the runs' sensors, from Airflow's metadata database."""
    airflow_db = ctx.stack.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace(
        "postgresql+psycopg", "postgresql"
    )
    try:
        with psycopg.connect(airflow_db) as conn:
            row = conn.execute(
                """SELECT count(*) FROM task_reschedule r JOIN task_instance t ON t.id = r.ti_id
                    WHERE t.dag_id = %s AND t.run_id = ANY(%s)""",
                (DAG_ID, run_ids),
            ).fetchone()
    except psycopg.Error as exc:
        return f"? ({type(exc).__name__})"
    return int(row[0]) if row else 0


def carrier_down(ctx: Chaos, trial: Trial) -> None:
    bc = begin(ctx, trial, scenario(activation_done=300.0), ctx.devices)
    run_id = trigger(ctx, trial, bc)
    poll("every device waiting for activation", lambda: all_waiting_for_activation(ctx, bc), 240)
    old = ctx.simulator
    trial.retired.append(carrier_record(ctx, trial.iccids))
    port = old.port
    old.stop()
    trial.note(f"carrier stopped with every device pending; down {CARRIER_DOWN_S} s")
    time.sleep(CARRIER_DOWN_S)  # the fault itself: the carrier is down this long
    ctx.stack.simulator = start_simulator(scenario(), port=port, time_scale=ctx.stack.config.time_scale)
    trial.note(f"a fresh carrier (no state) on port {port}")
    state = wait_run(ctx, trial, run_id)
    status, counts = bulk_change_outcome(ctx, bc)
    forgotten = query(
        ctx,
        """SELECT count(*) FROM activation.device_change WHERE bulk_change_id = %s AND status = 'ERROR'
              AND status_details LIKE 'the carrier does not know activation request%%'""",
        (bc,),
    )[0][0]
    trial.check(
        "devices_ended_error_404", forgotten == len(trial.iccids), f"{forgotten} of {len(trial.iccids)}"
    )
    trial.note(f"run {state}; bulk change {status} {counts}")
    trial.note(f"run after retry-failed: {retry_and_wait(ctx, trial, bc)}")


def kill_scheduler(ctx: Chaos, trial: Trial) -> None:
    bc = begin(
        ctx,
        trial,
        # Taken by the carrier, answers held 8 s: the killed scheduler's tasks die after the carrier took them.
        scenario(faults=[{"endpoint": "activate", "kind": "answer_lost", "mode": "delay", "seconds": 8.0}]),
        ctx.devices,
    )
    run_id = trigger(ctx, trial, bc, batch_size=max(1, ctx.devices // 4))
    poll("an activation POST in flight", lambda: writes_in_flight(ctx, bc), 180)
    old = ctx.stack.processes["scheduler"]
    os.kill(old.pid, signal.SIGKILL)  # the main process alone: its executor workers become orphans
    trial.note(f"SIGKILL to the scheduler (pid {old.pid}) with activation POSTs in flight")
    try:
        poll("a new scheduler", lambda: ctx.stack.processes.get("scheduler") not in (None, old), 120)
    except TimeoutError:
        ctx.stack.restart("scheduler")
        trial.recovery.append("LiveStack.restart('scheduler')")
    new = ctx.stack.processes["scheduler"]
    trial.note(f"new scheduler pid {new.pid}")
    try:
        poll("the old scheduler's workers gone", lambda: not lingering(ctx, "scheduler"), 60)
        trial.check("orphans_ended", True)
    except TimeoutError:
        trial.check("orphans_ended", False, f"still alive: {lingering(ctx, 'scheduler')}")
    trial.note(f"run {wait_run(ctx, trial, run_id)}")
    carrier_caught_up(ctx, trial)


def stale_transactions(ctx: Chaos) -> list[str]:
    """Sessions of the server idle inside a transaction for over 30 s (they hold their locks)."""
    rows = query(
        ctx,
        """SELECT pid, datname, state, round(extract(epoch FROM now() - xact_start)), left(query, 160)
             FROM pg_stat_activity
            WHERE starts_with(state, 'idle in transaction') AND xact_start < now() - interval '30 seconds'""",
    )
    return [f"pid {pid} on {db} {state} for {age} s after {sql!r}" for pid, db, state, age, sql in rows]


def kill_database(ctx: Chaos, trial: Trial) -> None:
    bc = begin(
        ctx,
        trial,
        scenario(faults=[{"endpoint": "activate", "kind": "latency", "seconds": 6.0, "first_n": 1}]),
        ctx.devices,
    )
    run_id = trigger(ctx, trial, bc)
    poll("an activation POST in flight", lambda: writes_in_flight(ctx, bc), 180)
    ctx.stack.hold_database(DATABASE_DOWN_S)  # the stack's supervisor leaves it down this long
    pid = postmaster_pid(ctx.pgdata)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    trial.note(f"SIGKILL to PostgreSQL (postmaster pid {pid}) with an activation POST in flight")

    def postgres() -> str:
        return ctx.stack.status.get("postgres", "up")

    try:
        poll("the outage seen by the stack", lambda: postgres() != "up", 60)
        poll("PostgreSQL up again", lambda: postgres() == "up", 180)
        trial.note(
            f"the stack's supervisor restarted PostgreSQL {time.monotonic() - killed:.0f} s after the kill "
            f"(held {DATABASE_DOWN_S} s; pid {postmaster_pid(ctx.pgdata)})"
        )
    except TimeoutError as exc:
        restart_embedded(ctx.pgdata)
        trial.recovery.append("restart_embedded(pgdata)")
        trial.note(f"{exc}; restarted by the runner")
    alive = {name: p.poll() is None for name, p in ctx.stack.processes.items()}
    trial.note(f"Airflow components alive once it was back: {alive}")
    trial.note(f"run {wait_run(ctx, trial, run_id)}")
    carrier_caught_up(ctx, trial)


@dataclass(frozen=True)
class Fault:
    run: Callable[[Chaos, Trial], None]
    title: str
    done: str  # what the runner does (the first half of the fault's paragraph)


FAULTS: dict[str, Fault] = {
    "kill_activate_task": Fault(
        kill_activate_task,
        "kill -9 an activate task mid-call",
        "The carrier takes the first activation POST and holds its answer 20 s (answer_lost, mode delay: a "
        "latency fault would not do, the simulator drops a call still in its latency hold when the client "
        "dies). Once the POST is recorded in carrier_write and in flight, the runner finds the activate "
        "task's process (a scheduler descendant titled `airflow worker -- <task instance id>`) and sends it "
        "SIGKILL.",
    ),
    "kill_scheduler": Fault(
        kill_scheduler,
        "kill -9 the scheduler",
        "The carrier takes every activation POST and holds its answer 8 s (answer_lost, mode delay; four "
        "batches). With the first one in flight the runner sends the scheduler's main process (alone) SIGKILL, "
        "as a crash would: its executor workers become orphans. The stack's supervisor is expected to end "
        "them and start a new scheduler (the runner would call `LiveStack.restart('scheduler')` if it did not, "
        "and say so).",
    ),
    "kill_database": Fault(
        kill_database,
        "kill -9 PostgreSQL, restart 15 s later",
        "The first activation POST is held 6 s; while it is in flight the runner tells the stack to leave the "
        "database down 15 s (`LiveStack.hold_database`) and sends the embedded PostgreSQL's postmaster SIGKILL "
        "(the activation and Airflow databases both live on it). The stack's supervisor is expected to start "
        "it again once the 15 s are over (the runner would, with `restart_embedded`, if it did not, and say "
        "so); Airflow components that exit meanwhile are restarted by the supervisor and listed in `recovery`.",
    ),
    "carrier_down": Fault(
        carrier_down,
        "carrier down 60 s, back without its state",
        "Activation takes the carrier 300 s, so every device is waiting on its request id when the runner stops "
        "the simulator process; 60 s later a fresh simulator (no devices, no requests) starts on the same port. "
        "Then `retry-failed` once.",
    ),
    "answers_lost_static_ip": Fault(
        answers_lost_static_ip,
        "answers lost on static IP calls",
        "The carrier processes the first IP reservation and the first provisioning submission, then drops the "
        "connection without answering (answer_lost, mode drop, first_n 1 on ip_reserve and ip_provision). Half "
        "of the devices ask a static IP.",
    ),
    "reschedule_race": Fault(
        reschedule_race,
        "the reschedule race at 2-5 s check intervals",
        "Five bulk changes run at once with activation and IP checks every 2-5 s while the carrier takes 12 s "
        "for each; the runner counts the sensors' tries (REST task instances, try_number) and reschedules "
        "(Airflow's task_reschedule).",
    ),
    "concurrent_triggers": Fault(
        concurrent_triggers,
        "three REST triggers of one bulk change at once",
        "Three threads trigger the same bulk change through the REST API at the same instant (a barrier), "
        "each with its own run id.",
    ),
    "second_run": Fault(
        second_run,
        "a second run of a finished bulk change",
        "A bulk change runs to the end; then a new run of it (another run id) is triggered through the REST "
        "API. The runner compares the bulk change, its devices, audit rows, carrier writes, notifications, "
        "report, step timings and the carrier's write counters before and after.",
    ),
    "retry_while_waiting": Fault(
        retry_while_waiting,
        "retry-failed while the sensors wait",
        "The carrier takes 10 s per activation and rejects one SIM. While the activation check waits "
        "(up_for_reschedule) the runner runs `retry-failed`; after the run ends, the rejection is lifted and "
        "`retry-failed` runs again.",
    ),
}


# -------------------------------------------------------------------------------------- the stack


def chaos_pgdata() -> Path:
    path = data_dir() / "chaos"
    path.mkdir(parents=True, exist_ok=True)
    return path / "pgdata"


@contextmanager
def chaos_stack(
    workdir: Path, devices: int, *, pgdata: Path | None = None, api_port: int | None = None
) -> Iterator[Chaos]:
    """The supervised live stack on an embedded server of its own (``pgdata``, default
    ``<data dir>/chaos/pgdata``), unpaused; everything ended, its databases dropped, after."""
    pgdata = pgdata or chaos_pgdata()
    started_server = not embedded_running(pgdata)
    server_uri = embedded_uri(pgdata)
    suffix = secrets.token_hex(3)
    stack = LiveStack(
        StackConfig(
            home=workdir / "airflow",
            api_port=api_port,
            scenario=scenario(),
            pgdata=pgdata,  # the stack's supervisor restarts this server if it dies
            activation_database=f"activation_chaos_{suffix}",
            airflow_database=f"airflow_chaos_{suffix}",
            app_id=APP_ID,
            app_secret=APP_SECRET,
            extra_env={"TELEGENCE_TASK_RETRY_DELAY_SECONDS": "2"},
        )
    )
    ctx = Chaos(stack, workdir, devices, pgdata)
    try:
        stack.start()
        stack.client().unpause()
        yield ctx
    finally:
        stack.stop()
        with suppress(psycopg.Error), psycopg.connect(server_uri, autocommit=True) as conn:
            for db in (stack.config.airflow_database, stack.config.activation_database):
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        if started_server:
            stop_embedded(pgdata)


# ------------------------------------------------------------------------------------- reporting


def render(rows: list[Row]) -> str:
    lines = [
        "| fault | devices | lost | double activations | duplicate audit rows | missing attempts | recovery | outcome | s | checks |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        failed = [name for name, held in r.checks.items() if not held]
        devices = ", ".join(f"{s} {n}" for s, n in r.outcome["devices"].items())
        lines.append(
            f"| {r.fault} | {r.devices} | {r.lost} | {r.double_activations} | {r.duplicate_audit_rows} | "
            f"{r.missing_attempts} | {r.recovery.replace('|', '/')} | {r.outcome['status']} ({devices}) | "
            f"{r.seconds} | {'FAILED: ' + ', '.join(failed) if failed else f'{len(r.checks)} held'} |"
        )
    return "\n".join(lines)


def paragraphs(rows: list[Row]) -> str:
    parts = []
    for r in rows:
        fault = FAULTS[r.fault]
        verdict = "Clean." if r.clean else "**Finding: this row is not clean.**"
        parts.append(f"### {r.fault}: {fault.title}\n\n{fault.done} Seen: {r.notes}. {verdict}")
    return "\n\n".join(parts)


def write_results(out: Path, rows: list[Row], settings: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    md = out / "faults.md"
    previous = md.read_text() if md.exists() else ""
    analysis = previous.split("<!-- analysis -->", 1)[1] if "<!-- analysis -->" in previous else "\n"
    md.write_text(
        f"# Fault suite results\n\nGenerated {datetime.now(UTC).isoformat()} by `make chaos` "
        f"({os.cpu_count()} CPUs; {json.dumps(settings)}).\n\n{render(rows)}\n\n{paragraphs(rows)}\n\n"
        f"<!-- analysis -->{analysis}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"small bulk changes, faults {', '.join(QUICK)}")
    parser.add_argument("--faults", help=f"comma-separated, of: {', '.join(FULL)}")
    parser.add_argument(
        "--devices", type=int, help="devices per bulk change (default 6 with --quick, else 40)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--api-port", type=int, default=None)
    args = parser.parse_args(argv)
    names = args.faults.split(",") if args.faults else list(QUICK if args.quick else FULL)
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        parser.error(f"unknown fault(s) {unknown}; known: {', '.join(FULL)}")
    devices = args.devices or (6 if args.quick else 40)
    workdir = args.out / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows: list[Row] = []
    with chaos_stack(workdir, devices, api_port=args.api_port) as ctx:
        print(f"stack up in {time.monotonic() - started:.0f} s", flush=True)
        for name in names:
            print(f"{name} ...", flush=True)
            rows.append(run_fault(ctx, name))
            print(json.dumps(asdict(rows[-1])), flush=True)
    write_results(
        args.out, rows, {"devices": devices, "faults": names, "total_s": round(time.monotonic() - started)}
    )
    print(render(rows))
    print(f"total {time.monotonic() - started:.0f} s")
    return 0 if all(r.clean for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
