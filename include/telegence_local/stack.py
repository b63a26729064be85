"""A live local stack: embedded Postgres, the Telegence simulator and a real Airflow.

Used by ``make demo``, the live end-to-end tests, the fault suite and the benchmark. Airflow runs
as separate processes (api-server, scheduler, dag-processor, triggerer) with the LocalExecutor,
its metadata in a database ``airflow`` on the same embedded PostgreSQL server as the activation
tables (a real server, so the scheduler and the executor's workers can work concurrently).
Settings and databases: :mod:`.config`; the supervisor: :mod:`.supervision`.

**Supervised**: a thread restarts a component that exits (backoff 1 s doubling to 30 s, reset once
it has stayed up a minute; a log line names it and why) and the embedded PostgreSQL server if it
dies, so after a database outage the stack and its runs carry on by themselves. Before a
component is started again, every process left from its previous life (executor workers, orphans
reparented to init) is ended: each process the stack starts carries the stack's id in its
environment, and ``stop()`` (or interpreter exit) ends every process that carries it, found in the
process table, not by name.

**Least privilege**: the stack's home is 0700 and its secret files 0600; no component serves logs
over the network (``--skip-serve-logs``: the api-server reads the task log files directly), so
every listener is on loopback; the carrier connections are only in the environment of the
scheduler, whose LocalExecutor workers run the tasks; the activation database connection is there
and in the api-server's (it serves the Bulk changes page), nowhere else.

**CeleryExecutor** (``StackConfig(executor="celery")``, ``make demo EXECUTOR=celery``): the stack
also runs a Redis broker (Debian's ``redis-server``, installed with apt when missing; on 127.0.0.1,
a free port, a password from a 0600 file, its append-only file in the stack's home) and
``config.workers`` Celery workers (``airflow celery worker``), each in a session and process group
of its own with its own Celery hostname, as separate hosts would be. Celery's results go to the
metadata database (``db+postgresql``). There the workers are the task runners: they alone get the
carrier connections; the scheduler keeps the activation database for its run-note listener. The
broker URL (with its password) is only given to the scheduler and the workers. Supervised like
the rest: a worker or the broker that exits is started again.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import requests

from telegence_activation.db.connection import (
    embedded_running,
    embedded_uri,
    project_root,
    stop_embedded,
    uri_to_connection_json,
)
from telegence_activation.db.migrate import migrate
from telegence_simulator.launcher import RunningSimulator, start_simulator

from .config import (
    ADMIN_USER,
    BROKER,
    CELERY_BROKER_ENV,
    COMPONENT_ENV,
    DAG_ID,
    POOL,
    REDIS_SERVER,
    STACK_ID_ENV,
    TASK_SECRETS_PREFIXES,
    StackConfig,
    ensure_database,
    free_port,
    sqlalchemy_url,
)
from .supervision import StackSupervision

__all__ = ["DAG_ID", "STACK_ID_ENV", "LiveStack", "StackConfig", "ensure_database", "free_port"]

# The connections a component that runs no task may have (TASK_RUNNERS have every one): the
# api-server serves the Bulk changes page (the package plugin's app) from the activation database;
# the triggerer runs the dispatcher's AssetWatcher, which LISTENs on that database for new bulk
# changes; the scheduler (when Celery workers run the tasks) calls the package's DAG-run listener,
# which writes the run's note from that database. No carrier connection outside the task runners,
# ever.
COMPONENT_CONNECTIONS: dict[str, frozenset[str]] = {
    "api-server": frozenset({"AIRFLOW_CONN_ACTIVATION_DB"}),
    "triggerer": frozenset({"AIRFLOW_CONN_ACTIVATION_DB"}),
    "scheduler": frozenset({"AIRFLOW_CONN_ACTIVATION_DB"}),
}
# Only the components that talk to the broker get its URL (it carries the broker's password).
BROKER_CLIENTS = frozenset({"scheduler"})


def debian_package(executable: str, package: str) -> str:
    """``executable``, installed from Debian's ``package`` with apt when it is missing (as root):
    the stack's redis-server, the browser tests' Chromium."""
    if not Path(executable).exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", package],
        ):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
            if done.returncode != 0:
                raise RuntimeError(
                    f"cannot install Debian's {package} ({' '.join(command)}): {done.stderr[-2000:]}"
                )
    return executable


def redis_server() -> str:
    """Debian's redis-server (installed when missing). Debian's package rather than a PyPI wheel
    carrying a binary: Debian keeps 7.0 patched (bookworm's security updates); the wheels found
    carry Redis 6.0/6.2, out of support."""
    return debian_package(REDIS_SERVER, "redis-server")


class LiveStack(StackSupervision):
    """Start and stop the whole local stack; talk to its REST API."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.simulator: RunningSimulator | None = None
        self.api_port = self.config.api_port or free_port()
        self.broker_port = free_port() if self.config.celery else 0
        self.password = ""
        self.env: dict[str, str] = {}
        self.activation_db_uri = ""
        self._started_embedded = False
        self.stack_id = secrets.token_hex(8)
        # Per component: "up", "restarting (...)" or "stopped"; what the demo's progress line shows.
        self.status: dict[str, str] = {}
        self.restarts: dict[str, int] = {}
        self._backoff: dict[str, float] = {}
        self._next_start: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self._db_hold_until = 0.0
        # Session id -> component: every component is started as a session leader, and what it forks
        # stays in its session (task processes only change their process group), orphans included.
        self._sessions: dict[int, str] = {}
        self._stop_supervisor = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._lock = threading.RLock()
        atexit.register(self.stop)

    # ----------------------------------------------------------------------------------- start

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def logs_dir(self) -> Path:
        return self.config.home / "component-logs"

    def start(self, timeout: float = 240.0) -> LiveStack:
        cfg = self.config
        cfg.home.mkdir(parents=True, exist_ok=True)
        cfg.home.chmod(0o700)  # secrets (password file, airflow.cfg, reports) live here
        self.logs_dir.mkdir(exist_ok=True)
        if cfg.db_server_uri is None:
            self._started_embedded = not embedded_running(cfg.pgdata)
        server_uri = cfg.db_server_uri or embedded_uri(cfg.pgdata)
        self.activation_db_uri = ensure_database(server_uri, cfg.activation_database)
        migrate(self.activation_db_uri)
        airflow_db = ensure_database(server_uri, cfg.airflow_database)
        self.simulator = start_simulator(cfg.scenario, port=cfg.simulator_port, time_scale=cfg.time_scale)
        self.password = self._password()
        self.env = self._environment(airflow_db)
        if cfg.celery:
            self._spawn(BROKER)
            self._wait_broker(60)
        self._airflow("db", "migrate")
        self._airflow("pools", "set", POOL, str(cfg.pool_slots), "Concurrent Telegence API calls")
        for component in cfg.components:
            if component != BROKER:
                self._spawn(component)
        self._wait_healthy(timeout)
        if cfg.supervise:
            self._supervisor = threading.Thread(target=self._supervise, name="stack-supervisor", daemon=True)
            self._supervisor.start()
        return self

    def _password(self) -> str:
        """A password for the admin user, kept in the stack's home (reused on the next start)."""
        path = self.config.home / "simple_auth_manager_passwords.json"
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get(ADMIN_USER):
                return str(stored[ADMIN_USER])
        password = secrets.token_urlsafe(12)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({ADMIN_USER: password}))
        path.chmod(0o600)
        return password

    @property
    def broker_dir(self) -> Path:
        return self.config.home / "redis"

    def _broker_password(self) -> str:
        """Redis's password, written into its config file (0600, in the stack's home), never on a
        command line. The config keeps Redis on 127.0.0.1 and its files in the stack's home."""
        self.broker_dir.mkdir(mode=0o700, exist_ok=True)
        password = secrets.token_hex(16)
        conf = "\n".join(
            [
                "bind 127.0.0.1",
                f"port {self.broker_port}",
                "protected-mode yes",
                "daemonize no",
                f'dir "{self.broker_dir}"',
                # Messages outlive a broker restart (the supervisor starts it again): append-only
                # file in the stack's home, no RDB snapshots.
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                'logfile ""',
                f"requirepass {password}",
                "",
            ]
        )
        path = self.broker_dir / "redis.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(conf)
        return password

    def _wait_broker(self, timeout: float) -> None:
        import redis

        client = redis.Redis.from_url(self.env[CELERY_BROKER_ENV], socket_timeout=3)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes.get(BROKER)
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}:\n{self.log_tail(BROKER)}")
            with suppress(redis.RedisError):
                if client.ping():
                    return
            time.sleep(0.5)
        raise RuntimeError(f"redis-server did not answer within {timeout:.0f} s:\n{self.log_tail(BROKER)}")

    def _environment(self, airflow_db_uri: str) -> dict[str, str]:
        cfg = self.config
        assert self.simulator is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
        telegence = {
            "conn_type": "http",
            "host": self.simulator.base_url,
            "login": cfg.app_id,
            "password": cfg.app_secret,
            "extra": {
                "write_enabled": True,
                "timeout": 30,
                "max_attempts": 5,
                "backoff_initial": 0.5,
                **cfg.carrier_extra,
            },
        }
        env.update(
            {
                "AIRFLOW_HOME": str(cfg.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(project_root() / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(project_root() / "plugins"),
                # Load plugins (plugins/telegence_preload.py) at start, so forked task processes
                # inherit the package instead of importing it per task.
                "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if cfg.celery else "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(cfg.parallelism),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__MAX_MAP_LENGTH": "4096",
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                    cfg.home / "simple_auth_manager_passwords.json"
                ),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url(airflow_db_uri),
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                # A short idle sleep lets the scheduler queue the next mapped batch soon after one ends.
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": str(cfg.scheduler_idle_sleep),
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "3600",
                # Tasks of a killed scheduler are reset by the orphan check; its default (300 s) left
                # a run idle for five minutes after a scheduler kill (bench/faults.md).
                "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                STACK_ID_ENV: self.stack_id,
                "AIRFLOW_CONN_ACTIVATION_DB": uri_to_connection_json(self.activation_db_uri),
                f"AIRFLOW_CONN_TELEGENCE_SP_{cfg.service_provider_id}": json.dumps(telegence),
                "TELEGENCE_REPORTS_DIR": str(cfg.home / "reports"),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        if cfg.celery:
            redis_server()
            env.update(
                {
                    CELERY_BROKER_ENV: f"redis://:{self._broker_password()}@127.0.0.1:{self.broker_port}/0",
                    # Celery's task results in the metadata database (as docker-compose.yaml does).
                    "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + sqlalchemy_url(airflow_db_uri),
                    # Worker processes are forked from a parent that loaded Airflow and the package.
                    "AIRFLOW__CELERY__POOL": "prefork",
                }
            )
        env.update(cfg.extra_env)
        return env

    def _airflow(self, *args: str) -> None:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )

    def component_env(self, component: str) -> dict[str, str]:
        """The environment of one component: connections (secrets) only where tasks run, and the
        few another component needs (``COMPONENT_CONNECTIONS``: the api-server's activation database)."""
        if component == BROKER:  # Redis: no Airflow setting, secret or connection at all
            env = {k: v for k, v in self.env.items() if k in ("PATH", "HOME", "LANG", "TZ", STACK_ID_ENV)}
            env[COMPONENT_ENV] = component
            return env
        runner = component in self.config.task_runners
        allowed = COMPONENT_CONNECTIONS.get(component, frozenset())
        env = {
            k: v
            for k, v in self.env.items()
            if runner or not k.startswith(TASK_SECRETS_PREFIXES) or k in allowed
        }
        if not (runner or component in BROKER_CLIENTS):
            env.pop(CELERY_BROKER_ENV, None)
        env[COMPONENT_ENV] = component
        return env

    def _command(self, component: str) -> list[str]:
        if component == BROKER:
            return [redis_server(), str(self.broker_dir / "redis.conf")]
        airflow = str(Path(sys.executable).parent / "airflow")
        if component in self.config.worker_names:
            # A host of its own: own session (start_new_session below), own Celery hostname; no
            # log server (the api-server reads the task log files), so nothing listens.
            return [
                airflow,
                "celery",
                "worker",
                "--celery-hostname",
                f"{component}@%h",
                "--concurrency",
                str(self.config.worker_concurrency),
                "--skip-serve-logs",
            ]
        args = [airflow, component]
        if component in ("scheduler", "triggerer"):
            args.append("--skip-serve-logs")  # no log server: nothing listens beyond loopback
        return args

    def _spawn(self, component: str) -> None:
        args = self._command(component)
        log = (self.logs_dir / f"{component}.log").open("ab")
        try:
            self.processes[component] = subprocess.Popen(
                args,
                env=self.component_env(component),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() ends the workers it forks too
            )
        finally:
            log.close()
        self._sessions[self.processes[component].pid] = component
        self._started_at[component] = time.monotonic()
        self.status[component] = "up"

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"airflow {name} exited with {process.returncode}:\n{self.log_tail(name)}"
                    )
            try:
                health = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=3).json()
                if health.get("scheduler", {}).get("status") == "healthy" and self.dag_parsed():
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(1)
        raise RuntimeError(
            f"Airflow did not become healthy within {timeout:.0f} s:\n{self.log_tail('api-server')}"
        )

    def log_tail(self, component: str, chars: int = 3000) -> str:
        path = self.logs_dir / f"{component}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # ------------------------------------------------------------------------------------ REST

    def client(self) -> Any:
        from telegence_activation.api_client import AirflowClient

        return AirflowClient(self.api_url, ADMIN_USER, self.password)

    def dag_parsed(self) -> bool:
        try:
            return bool(self.client().get_dag(DAG_ID))
        except Exception:
            return False

    # ------------------------------------------------------------------------------------ stop

    def stop(self) -> None:
        """End every process the stack started and every process those started (executor workers,
        orphans of a killed component), the simulator, and the embedded server it started."""
        self._stop_supervisor.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(30)
        self._supervisor = None
        with self._lock:
            for process in self.processes.values():
                if process.poll() is None:
                    with suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            for process in self.processes.values():
                with suppress(subprocess.TimeoutExpired):
                    process.wait(max(0.1, deadline - time.monotonic()))
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # leftovers of the group (executor workers)
            self.processes.clear()
            if self.env:
                self._end_processes()  # whatever carries the stack's id: orphans reparented to init
            for component in self.config.components:
                if component in self.status:
                    self.status[component] = "stopped"
            if self.simulator is not None:
                self.simulator.stop()
                self.simulator = None
            if self._started_embedded:  # leave a server that was already running as we found it
                stop_embedded(self.config.pgdata)
                self._started_embedded = False
