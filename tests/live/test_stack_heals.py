"""The local stack as a service people leave running: it heals itself, leaves nothing behind and
exposes nothing it does not need to (issue 10). One supervised stack on its own embedded
PostgreSQL server (so killing that server touches nothing else of the test session).

Everything waits on states with generous deadlines, never on fixed sleeps: a busy 2-core machine
must pass.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from helpers import duplicate_audit_rows, finished, statuses, wait_until

from telegence_activation.api_client import run_id_for
from telegence_activation.domain.intake import IntakeOptions
from telegence_activation.intake import BulkChangeSpec, ingest_csv, write_sample_csv
from telegence_local.stack import STACK_ID_ENV, LiveStack, StackConfig

pytestmark = pytest.mark.timeout(1200)

APP_SECRET = "HEAL-s3cret-77c1e0aa"
SCENARIO: dict[str, Any] = {
    "name": "heal-test",
    "seed": 5,
    "accounts": [{"app_id": "heal-app-id", "app_secret": APP_SECRET, "write_enabled": True}],
    # Slow enough that a run is still going when a fault hits.
    "activation": {"unit": "seconds", "reserved_after": 2, "done_after": 12},
    "ip_provisioning": {"unit": "seconds", "check_after": 0.5, "reserve_after": 1, "done_after": 2},
    "ip_pools": [{"pdp_name": "DEMO.PDP", "cidr": "10.20.0.0/16"}],
}
CONF = {"activation_check_interval_seconds": 2, "ip_check_interval_seconds": 2, "batch_size": 50}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    home = tmp_path_factory.mktemp("heal-airflow")
    live = LiveStack(
        StackConfig(
            home=home,
            scenario=SCENARIO,
            pgdata=tmp_path_factory.mktemp("heal-pg") / "pgdata",
            app_id="heal-app-id",
            app_secret=APP_SECRET,
            extra_env={"TELEGENCE_TASK_RETRY_DELAY_SECONDS": "2"},
        )
    )
    try:
        live.start()
        live.client().unpause()
        yield live
    except BaseException:
        for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
            print(f"--- {component} ---\n{live.log_tail(component)}")
        raise
    finally:
        live.stop()


def new_bulk_change(stack: LiveStack, tmp_path: Path, n: int) -> int:
    path = write_sample_csv(tmp_path / f"heal-{os.urandom(3).hex()}.csv", n, static_ip_every=4)
    return ingest_csv(
        stack.activation_db_uri, path, BulkChangeSpec(1, IntakeOptions("BAN-HEAL"))
    ).bulk_change_id


def double_activations(stack: LiveStack, bulk_change_id: int) -> int:
    assert stack.simulator is not None
    counted = stack.simulator.admin.counters().get("activationsPerIccid", {})
    with psycopg.connect(stack.activation_db_uri) as conn:
        iccids = [
            r[0]
            for r in conn.execute(
                "SELECT iccid FROM activation.device_change WHERE bulk_change_id = %s", (bulk_change_id,)
            ).fetchall()
        ]
    return sum(1 for i in iccids if int(counted.get(i, 0)) > 1)


def listening(proc: psutil.Process) -> list[str]:
    try:
        return [
            f"{c.laddr.ip}:{c.laddr.port}"
            for c in proc.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
    except psutil.Error:
        return []


def environ(component: str, stack: LiveStack) -> dict[str, str]:
    return dict(psutil.Process(stack.processes[component].pid).environ())


# --------------------------------------------------------------------------------------- exposure


def test_every_listener_is_on_loopback_and_secrets_stay_where_tasks_run(stack: LiveStack) -> None:
    assert stack.simulator is not None
    procs = [*stack.stack_processes(), psutil.Process(stack.simulator.process.pid)]
    sockets = {addr for proc in procs for addr in listening(proc)}
    assert sockets, "the stack listens somewhere (api-server, simulator)"
    assert all(addr.rsplit(":", 1)[0] in ("127.0.0.1", "::1") for addr in sockets), sockets
    # No log server at all (it would listen on every interface).
    assert not [p for p in procs if " ".join(p.cmdline()).startswith("airflow serve-logs")]

    # Connections only where tasks run, and the activation database for the api-server (it serves
    # the Bulk changes page) and the triggerer (the dispatcher's LISTEN for new bulk changes); no
    # carrier connection anywhere else. Checked in what the stack gives each component: the
    # api-server's process title overwrites its environment in the process table (psutil reads it
    # empty), so only the others are also read back from their processes.
    database_only = ["AIRFLOW_CONN_ACTIVATION_DB"]
    expected = {"api-server": database_only, "dag-processor": [], "triggerer": database_only}
    for component, connections in expected.items():
        given = stack.component_env(component)
        assert [k for k in given if k.startswith("AIRFLOW_CONN_")] == connections, component
        assert APP_SECRET not in "\n".join(given.values()), component
    for component in ("dag-processor", "triggerer"):
        env = environ(component, stack)
        assert env.get(STACK_ID_ENV) == stack.stack_id, component  # really read from the process
        assert [k for k in env if k.startswith("AIRFLOW_CONN_")] == expected[component], component
        assert APP_SECRET not in "\n".join(env.values()), component
    scheduler = environ("scheduler", stack)
    assert "AIRFLOW_CONN_TELEGENCE_SP_1" in scheduler and "AIRFLOW_CONN_ACTIVATION_DB" in scheduler

    home = stack.config.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "simple_auth_manager_passwords.json").stat().st_mode) == 0o600


# ------------------------------------------------------------------------------------------ healing


def test_a_database_outage_mid_run_heals_by_itself_with_nothing_lost(
    stack: LiveStack, tmp_path: Path
) -> None:
    pgdata = stack.config.pgdata
    assert pgdata is not None
    bc = new_bulk_change(stack, tmp_path, 120)
    run_id = run_id_for(bc)
    stack.client().trigger({"bulk_change_id": bc, **CONF}, run_id)
    wait_until(lambda: statuses(stack, bc).get("PENDING"), 300, "activation under way")

    stack.hold_database(15)
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: stack.status.get("postgres", "").startswith(("down", "restarting")), 60, "outage seen")
    wait_until(lambda: stack.status.get("postgres") == "up", 180, "the database restarted by the stack")
    back_at = time.monotonic()
    before = statuses(stack, bc)
    wait_until(
        lambda: statuses(stack, bc) != before or finished(stack, run_id),
        600,
        "the run moving again",
        every=0.5,
    )
    moving_at = time.monotonic()
    print(
        f"\n[heal] database down {back_at - killed_at:.1f} s (held 15 s); run moving again "
        f"{moving_at - back_at:.1f} s after it was back; restarts: {stack.restarts}"
    )
    assert wait_until(lambda: finished(stack, run_id), 900, "the run finished") == "success"
    assert statuses(stack, bc) == {"PROCESSED": 120}
    assert double_activations(stack, bc) == 0 and duplicate_audit_rows(stack, bc) == 0


def test_a_killed_scheduler_is_restarted_and_its_orphans_are_ended(stack: LiveStack, tmp_path: Path) -> None:
    bc = new_bulk_change(stack, tmp_path, 100)
    run_id = run_id_for(bc)
    stack.client().trigger({"bulk_change_id": bc, **CONF}, run_id)
    wait_until(lambda: statuses(stack, bc).get("PENDING"), 300, "activation under way")
    old = stack.processes["scheduler"]
    children = {p.pid for p in psutil.Process(old.pid).children(recursive=True)}
    restarts = stack.restarts.get("scheduler", 0)

    os.kill(old.pid, signal.SIGKILL)  # the scheduler alone: its executor workers become orphans

    wait_until(lambda: stack.restarts.get("scheduler", 0) > restarts, 180, "the scheduler restarted")
    new = stack.processes["scheduler"]
    assert new.pid != old.pid
    # Every scheduler process alive now descends from the new scheduler (checked in the process
    # table by the stack's id, not by name): the old one's workers are gone.
    family = {new.pid} | {p.pid for p in psutil.Process(new.pid).children(recursive=True)}
    lingering = [p.pid for p in stack.stack_processes("scheduler") if p.pid not in family]
    assert lingering == []
    assert not [
        pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    ]
    assert wait_until(lambda: finished(stack, run_id), 900, "the run finished") == "success"
    assert statuses(stack, bc) == {"PROCESSED": 100}
    assert double_activations(stack, bc) == 0 and duplicate_audit_rows(stack, bc) == 0


def test_stop_leaves_no_process_of_the_stack(stack: LiveStack) -> None:
    home, pgdata = str(stack.config.home), str(stack.config.pgdata)
    started = [psutil.Process(p.pid) for p in stack.processes.values()]
    family = {p.pid for leader in started for p in [leader, *leader.children(recursive=True)]}
    stack.stop()

    def ours(proc: psutil.Process) -> bool:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            env = proc.environ()
            command = " ".join(proc.cmdline())
        except psutil.Error:
            return False
        return env.get(STACK_ID_ENV) == stack.stack_id or home in command or pgdata in command

    left = [
        (p.pid, p.info["name"]) for p in psutil.process_iter(["name"]) if p.pid != os.getpid() and ours(p)
    ]
    assert left == []
    alive = [
        pid
        for pid in family
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []
    assert all(state == "stopped" for name, state in stack.status.items() if name != "postgres")
