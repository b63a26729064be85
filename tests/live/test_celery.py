"""The CeleryExecutor, live: a bulk change of 2,000 devices on two Celery workers, one of them killed
with SIGKILL (its whole process tree, as a host that is lost) while activate instances run on it.

The stack is the one ``make demo EXECUTOR=celery`` runs: a Redis broker (Debian's redis-server,
installed with apt when missing), Celery results in the metadata database, two workers in
sessions of their own with their own Celery hostnames, the same DAG unchanged, and the settings of
deploy/airflow.env that docker-compose.yaml uses too (acks late, prefetch 1, visibility timeout).
Only the task heartbeat and queued timeouts are shortened here (30 s and 60 s instead of 120 s and
300 s): the scheduler fails the dead worker's running task instances (the DAG's retries run them
again on a live worker) and queues again the ones whose message the dead worker had taken but not
started. The run must end ``success`` with nothing lost, no ICCID activated twice by the carrier and
no audit row written twice.

Everything waits on states with generous deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from helpers import (
    activations,
    duplicate_audit_rows,
    finished,
    iccids,
    lost_devices,
    statuses,
    wait_until,
)

from telegence_activation.api_client import DAG_ID, run_id_for
from telegence_activation.domain.intake import IntakeOptions
from telegence_activation.intake import BulkChangeSpec, ingest_csv, write_sample_csv
from telegence_local.config import BROKER, CELERY_BROKER_ENV
from telegence_local.stack import LiveStack, StackConfig

pytestmark = pytest.mark.timeout(900)

APP_SECRET = "CELERY-s3cret-5a0c93e1"
SCENARIO: dict[str, Any] = {
    "name": "celery-test",
    "seed": 13,
    "accounts": [{"app_id": "celery-app-id", "app_secret": APP_SECRET, "write_enabled": True}],
    "activation": {"unit": "seconds", "reserved_after": 1, "done_after": 3},
    "ip_provisioning": {"unit": "seconds", "check_after": 0.3, "reserve_after": 0.6, "done_after": 1.2},
    "ip_pools": [{"pdp_name": "DEMO.PDP", "cidr": "10.20.0.0/16"}],
    # Each activation call takes 1.5 s: an activate instance (a few batches of 100) is midway, with
    # a write sent and devices left to send, for seconds rather than milliseconds.
    "faults": [{"endpoint": "activate", "kind": "latency", "seconds": 1.5}],
}
DEVICES = 2000
# 20 batches of 100 devices, grouped a few per activate instance by the automatic sizing: some
# are running on each worker when one dies.
CONF = {"activation_check_interval_seconds": 2, "ip_check_interval_seconds": 2, "batch_size": 100}
HEARTBEAT_TIMEOUT = 30
# A message the killed worker had received but not started stays unacknowledged in Redis: its task
# instance waits queued this long, then the scheduler takes it back and queues it again.
QUEUED_TIMEOUT = 60


@pytest.fixture(scope="module")
def stack(pg_server_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    suffix = secrets.token_hex(3)
    live = LiveStack(
        StackConfig(
            home=tmp_path_factory.mktemp("celery-airflow"),
            scenario=SCENARIO,
            db_server_uri=pg_server_uri,
            activation_database=f"telegence_celery_{suffix}",
            airflow_database=f"airflow_celery_{suffix}",
            app_id="celery-app-id",
            app_secret=APP_SECRET,
            executor="celery",
            extra_env={
                "TELEGENCE_TASK_RETRY_DELAY_SECONDS": "2",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": str(QUEUED_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "5",
            },
        )
    )
    try:
        live.start()
        live.client().unpause()
        yield live
    except BaseException:
        for component in ("scheduler", "celery-worker-1", "celery-worker-2", "redis"):
            print(f"--- {component} ---\n{live.log_tail(component)}")
        raise
    finally:
        live.stop()
        with psycopg.connect(pg_server_uri, autocommit=True) as conn:
            for database in (live.config.airflow_database, live.config.activation_database):
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def worker_of(stack: LiveStack, pid: int | None) -> str | None:
    """The Celery worker whose process tree (session) holds ``pid``."""
    if not pid:
        return None
    try:
        sid = os.getsid(pid)
    except OSError:
        return None
    name = stack._sessions.get(sid)
    return name if name in stack.config.worker_names else None


def running_activations(stack: LiveStack, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Running activate instances per worker."""
    found: dict[str, list[dict[str, Any]]] = {}
    for ti in stack.client().task_instances(run_id):
        if ti["task_id"] == "activate" and ti["state"] == "running":
            worker = worker_of(stack, ti.get("pid"))
            if worker:
                found.setdefault(worker, []).append(ti)
    return found


def devices_written(stack: LiveStack, bc: int, run_id: str, map_index: int, try_number: int) -> int:
    """Devices in the carrier writes one try of one activate instance recorded (write-ahead: recorded
    before sent)."""
    with psycopg.connect(stack.activation_db_uri, connect_timeout=5) as conn:
        row = conn.execute(
            """SELECT coalesce(sum(cardinality(device_change_ids)), 0) FROM activation.carrier_write
                WHERE bulk_change_id = %s AND sent_by = %s""",
            (bc, f"{run_id}/activate[{map_index}]/try {try_number}"),
        ).fetchone()
    return int(row[0]) if row else 0


def worker_up(stack: LiveStack, name: str) -> bool:
    return stack.status.get(name) == "up" and name in stack.processes


def batch_groups(stack: LiveStack, run_id: str) -> list[list[int]] | None:
    """``prepare``'s return value once it succeeded: ``[first batch, how many]`` per activate
    instance (map index = position)."""
    prepare = [t for t in stack.client().task_instances(run_id) if t["task_id"] == "prepare"]
    if not prepare or prepare[0]["state"] != "success":
        return None
    entry = stack.client().request(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/prepare/xcomEntries/return_value"
    )
    value = json.loads(entry["value"]) if isinstance(entry["value"], str) else entry["value"]
    return [list(group) for group in value]


def group_size(stack: LiveStack, bc: int, first: int, count: int) -> int:
    """Devices in the batches ``first`` .. ``first + count - 1``."""
    with psycopg.connect(stack.activation_db_uri, connect_timeout=5) as conn:
        row = conn.execute(
            """SELECT count(*) FROM activation.device_change
                WHERE bulk_change_id = %s AND batch_no >= %s AND batch_no < %s""",
            (bc, first, first + count),
        ).fetchone()
    return int(row[0]) if row else 0


def test_the_stack_runs_celery_workers_apart_on_loopback_with_secrets_where_tasks_run(
    stack: LiveStack,
) -> None:
    workers = stack.config.worker_names
    assert workers == ("celery-worker-1", "celery-worker-2")
    # Separate process trees: a session (and process group) each, apart from the scheduler's.
    leaders = {name: stack.processes[name].pid for name in (*workers, "scheduler")}
    assert len({os.getsid(pid) for pid in leaders.values()}) == 3
    assert len({os.getpgid(pid) for pid in leaders.values()}) == 3
    for name in workers:
        cmdline = " ".join(psutil.Process(leaders[name]).cmdline())
        assert f"--celery-hostname {name}@" in cmdline and "--skip-serve-logs" in cmdline, cmdline
    # Every listener (Redis included) on loopback; no log server anywhere.
    assert stack.simulator is not None
    procs = [*stack.stack_processes(), psutil.Process(stack.simulator.process.pid)]
    sockets = set()
    for proc in procs:
        try:
            sockets |= {
                f"{c.laddr.ip}:{c.laddr.port}" for c in proc.net_connections("inet") if c.status == "LISTEN"
            }
        except psutil.Error:
            continue
    assert f"127.0.0.1:{stack.broker_port}" in sockets
    assert all(addr.rsplit(":", 1)[0] in ("127.0.0.1", "::1") for addr in sockets), sockets
    # Redis's files stay in the stack's home, its password out of its command line.
    redis = psutil.Process(stack.processes[BROKER].pid)
    assert Path(redis.cwd()) == stack.broker_dir or str(stack.broker_dir) in " ".join(redis.cmdline())
    broker_url = stack.env[CELERY_BROKER_ENV]
    assert broker_url.split("@")[0].split(":")[-1] not in " ".join(redis.cmdline())
    assert (stack.broker_dir / "redis.conf").stat().st_mode & 0o077 == 0
    # The carrier connection only where tasks run: the workers, not the scheduler any more.
    for name in workers:
        env = stack.component_env(name)
        assert "AIRFLOW_CONN_TELEGENCE_SP_1" in env and env[CELERY_BROKER_ENV] == broker_url
    for name in ("scheduler", "api-server", "dag-processor", "triggerer", BROKER):
        env = stack.component_env(name)
        assert "AIRFLOW_CONN_TELEGENCE_SP_1" not in env, name
        assert APP_SECRET not in "\n".join(env.values()), name
        assert (CELERY_BROKER_ENV in env) == (name == "scheduler"), name
    assert not [k for k in stack.component_env(BROKER) if k.startswith("AIRFLOW")]
    assert stack.env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql")


def test_a_worker_killed_mid_run_loses_nothing_and_activates_nothing_twice(
    stack: LiveStack, tmp_path: Path
) -> None:
    path = write_sample_csv(tmp_path / "celery.csv", DEVICES, static_ip_every=10)
    bc = ingest_csv(
        stack.activation_db_uri, path, BulkChangeSpec(1, IntakeOptions("BAN-CELERY"))
    ).bulk_change_id
    run_id = run_id_for(bc)
    started = time.monotonic()
    stack.client().trigger({"bulk_change_id": bc, **CONF}, run_id)

    groups = wait_until(lambda: batch_groups(stack, run_id), 400, "prepare's batch groups")
    sizes = {index: group_size(stack, bc, *group) for index, group in enumerate(groups)}

    def mid_run() -> tuple[str, list[dict[str, Any]]] | None:
        # A worker running an activate instance that has recorded (and so sent) carrier writes but
        # still has devices of its own to send: killing it interrupts a try for certain, whereas an
        # instance that has written all its devices may finish in the instant before the kill.
        if sum(activations(stack).values()) >= DEVICES:
            return None
        best = None
        for worker, tis in running_activations(stack, run_id).items():
            written = {
                t["map_index"]: devices_written(stack, bc, run_id, t["map_index"], t["try_number"])
                for t in tis
            }
            midway = sum(n for index, n in written.items() if 0 < n < sizes[index])
            if midway and (best is None or midway > best[0]):
                best = (midway, worker, tis)
        return (best[1], best[2]) if best else None

    interrupted: set[tuple[int, int]] = set()
    for _attempt in range(3):
        victim, killed_tis = wait_until(
            mid_run, 400, "an activate instance running midway with writes sent", every=0.3
        )
        family = stack.stack_processes(victim)
        for proc in family:  # the whole tree at once, as a lost host: no warm shutdown, no cleanup
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        sent_at_kill = sum(activations(stack).values())
        keys = {(t["map_index"], t["try_number"]) for t in killed_tis}
        # What each killed try had written when its processes died (they write no more now): a try
        # short of its instance's devices was interrupted, and must run again.
        after = {key: devices_written(stack, bc, run_id, *key) for key in keys}
        interrupted = {key for key, n in after.items() if n < sizes[key[0]]}
        print(
            f"killed {victim} ({len(family)} processes) {killed_at - started:.1f} s into the run, "
            f"{sent_at_kill}/{DEVICES} activations sent; activate instances running there (map index: "
            f"devices written by that try / the instance's devices): "
            f"{ {i: f'{after[(i, t)]}/{sizes[i]}' for i, t in keys} }"
        )
        if interrupted:
            break
        # Every try there had written all its devices and may have ended before the kill: kill again.
        wait_until(partial(worker_up, stack, victim), 120, f"{victim} back before another kill")
    assert interrupted, "three kills each landed after the killed tries had written everything"

    def rerun() -> bool:
        tis = {t["map_index"]: t for t in stack.client().task_instances(run_id) if t["task_id"] == "activate"}
        return all(
            tis[index]["try_number"] > tried and tis[index]["state"] in ("running", "success")
            for index, tried in interrupted
        )

    wait_until(rerun, 400, "the killed worker's interrupted activate instances running again", every=1)
    rerun_after = time.monotonic() - killed_at
    state = wait_until(lambda: finished(stack, run_id), 600, "the run finished", every=2)
    total = time.monotonic() - started
    counted = activations(stack)
    ours = iccids(stack, bc)
    per_iccid = [counted.get(i, 0) for i in ours]
    figures: dict[str, Any] = {
        "run_seconds": round(total, 1),
        "rerun_after_kill_seconds": round(rerun_after, 1),
        "statuses": statuses(stack, bc),
        "max_activations_per_iccid": max(per_iccid),
        "killed_tis": len(keys),
        "interrupted_tis": len(interrupted),
        "devices_written_by_killed_tries": sum(after.values()),
        "worker_restarts": stack.restarts.get(victim, 0),
        "queued_again": stack.log_tail("scheduler", 10**8).count("Task stuck in queued; will try to requeue"),
    }
    print(f"celery kill figures: {figures}")
    assert state == "success", figures
    assert lost_devices(stack, bc) == 0, figures
    assert sum(figures["statuses"].values()) == DEVICES, figures
    assert max(per_iccid) == 1, figures  # 0 double activations
    assert per_iccid.count(1) >= figures["statuses"].get("PROCESSED", 0), figures
    assert duplicate_audit_rows(stack, bc) == 0, figures
    # The supervisor brought the killed worker back (a lost host replaced).
    wait_until(partial(worker_up, stack, victim), 120, "worker back")
