"""A live local stack: embedded Postgres, the Telegence simulator and a real Airflow.

Used by ``make demo`` and by the live end-to-end tests. Airflow runs as separate processes
(api-server, scheduler, dag-processor, triggerer) with the LocalExecutor, its metadata in a
database ``airflow`` on the same embedded PostgreSQL server as the activation tables (a real
server, so the scheduler and the executor's workers can work concurrently, which SQLite cannot).
Every process is started in its own session and ended by ``stop()`` (or at interpreter exit).
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests

from telegence_activation.db.connection import (
    data_dir,
    embedded_running,
    embedded_uri,
    project_root,
    stop_embedded,
    uri_to_connection_json,
)
from telegence_activation.db.migrate import migrate
from telegence_activation.simulator.launcher import RunningSimulator, start_simulator

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
DAG_ID = "telegence_new_service_activation"
POOL = "telegence_api"
ADMIN_USER = "admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_database(uri: str, database: str) -> str:
    return urlunsplit(urlsplit(uri)._replace(path=f"/{database}"))


def _sqlalchemy_url(uri: str) -> str:
    return "postgresql+psycopg" + uri[len("postgresql") :]


def ensure_database(server_uri: str, name: str) -> str:
    """Create database ``name`` on the server if missing; return its URI."""
    with psycopg.connect(server_uri, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    return _with_database(server_uri, name)


@dataclass
class StackConfig:
    """Where and how the stack runs."""

    home: Path = field(default_factory=lambda: data_dir() / "airflow")
    api_port: int | None = None
    simulator_port: int | None = None
    scenario: Mapping[str, Any] | str | None = "happy"
    time_scale: float = 1.0
    parallelism: int = 4
    pool_slots: int = 4
    scheduler_idle_sleep: float = 1.0
    db_server_uri: str | None = None  # default: the embedded server
    activation_database: str = "postgres"
    airflow_database: str = "airflow"
    app_id: str = "demo-app-id"
    app_secret: str = "demo-app-secret"
    service_provider_id: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)


class LiveStack:
    """Start and stop the whole local stack; talk to its REST API."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.simulator: RunningSimulator | None = None
        self.api_port = self.config.api_port or free_port()
        self.password = ""
        self.env: dict[str, str] = {}
        self.activation_db_uri = ""
        self._started_embedded = False
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
        self.logs_dir.mkdir(exist_ok=True)
        if cfg.db_server_uri is None:
            self._started_embedded = not embedded_running()
        server_uri = cfg.db_server_uri or embedded_uri()
        self.activation_db_uri = ensure_database(server_uri, cfg.activation_database)
        migrate(self.activation_db_uri)
        airflow_db = ensure_database(server_uri, cfg.airflow_database)
        self.simulator = start_simulator(cfg.scenario, port=cfg.simulator_port, time_scale=cfg.time_scale)
        self.password = self._password()
        self.env = self._environment(airflow_db)
        self._airflow("db", "migrate")
        self._airflow("pools", "set", POOL, str(cfg.pool_slots), "Concurrent Telegence API calls")
        for component in AIRFLOW_COMPONENTS:
            self._spawn(component)
        self._wait_healthy(timeout)
        return self

    def _password(self) -> str:
        """A password for the admin user, kept in the stack's home (reused on the next start)."""
        path = self.config.home / "simple_auth_manager_passwords.json"
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get(ADMIN_USER):
                return str(stored[ADMIN_USER])
        password = secrets.token_urlsafe(12)
        path.write_text(json.dumps({ADMIN_USER: password}))
        return password

    def _environment(self, airflow_db_uri: str) -> dict[str, str]:
        cfg = self.config
        assert self.simulator is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
        telegence = {
            "conn_type": "http",
            "host": self.simulator.base_url,
            "login": cfg.app_id,
            "password": cfg.app_secret,
            "extra": {"write_enabled": True, "timeout": 30, "max_attempts": 5, "backoff_initial": 0.5},
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
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
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
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _sqlalchemy_url(airflow_db_uri),
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                # A short idle sleep lets the scheduler queue the next mapped batch soon after one ends.
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": str(cfg.scheduler_idle_sleep),
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "3600",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW_CONN_ACTIVATION_DB": uri_to_connection_json(self.activation_db_uri),
                f"AIRFLOW_CONN_TELEGENCE_SP_{cfg.service_provider_id}": json.dumps(telegence),
                "TELEGENCE_REPORTS_DIR": str(cfg.home / "reports"),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
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

    def _spawn(self, component: str) -> None:
        log = (self.logs_dir / f"{component}.log").open("ab")
        try:
            self.processes[component] = subprocess.Popen(
                [str(Path(sys.executable).parent / "airflow"), component],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() ends the workers it forks too
            )
        finally:
            log.close()

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
        """End every process the stack started (Airflow components, their workers, the simulator)."""
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
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None
        if self._started_embedded:  # leave a server that was already running as we found it
            stop_embedded()
            self._started_embedded = False
