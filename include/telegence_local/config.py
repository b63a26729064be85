"""The local stack's settings: what runs where, and the databases it needs."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from telegence_activation.db.connection import data_dir, project_root

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# The components that run tasks (LocalExecutor workers are forked by the scheduler): only they get
# the carrier and activation database connections.
TASK_RUNNERS = frozenset({"scheduler"})
# The CeleryExecutor option (StackConfig(executor="celery")): the broker (Debian's redis-server,
# on loopback, its files in the stack's home) and Celery workers, each a process tree of its own as
# a separate host would be. There the workers run the tasks and the scheduler runs none.
EXECUTORS = ("local", "celery")
BROKER = "redis"
CELERY_WORKER_PREFIX = "celery-worker-"
CELERY_BROKER_ENV = "AIRFLOW__CELERY__BROKER_URL"
REDIS_SERVER = "/usr/bin/redis-server"


def celery_workers(count: int) -> tuple[str, ...]:
    return tuple(f"{CELERY_WORKER_PREFIX}{n}" for n in range(1, count + 1))


# Every process the stack starts carries these in its environment (inherited by what it forks).
STACK_ID_ENV = "TELEGENCE_STACK_ID"
COMPONENT_ENV = "TELEGENCE_STACK_COMPONENT"
TASK_SECRETS_PREFIXES = ("AIRFLOW_CONN_",)
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 1.0, 30.0, 60.0
DAG_ID = "telegence_new_service_activation"
ADMIN_USER = "admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_database(uri: str, database: str) -> str:
    return urlunsplit(urlsplit(uri)._replace(path=f"/{database}"))


def sqlalchemy_url(uri: str) -> str:
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
    parallelism: int = field(default_factory=lambda: shared_int("AIRFLOW__CORE__PARALLELISM"))
    pool_slots: int = field(default_factory=lambda: shared_int("TELEGENCE_POOL_SLOTS"))
    scheduler_idle_sleep: float = 1.0
    db_server_uri: str | None = None  # default: the embedded server
    pgdata: Path | None = None  # the embedded server's folder (default: the project's .data/pgdata)
    activation_database: str = "postgres"
    airflow_database: str = "airflow"
    app_id: str = "demo-app-id"
    app_secret: str = "demo-app-secret"
    service_provider_id: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    # Added to the carrier connection's extra, e.g. {"max_calls_per_second": 10, "burst": 2} for the
    # shared carrier rate limit (README "Carrier rate limit").
    carrier_extra: dict[str, Any] = field(default_factory=dict)
    supervise: bool = True
    # "local": the scheduler's LocalExecutor runs the tasks; "celery": the CeleryExecutor, a Redis
    # broker and `workers` Celery workers (each `worker_concurrency` task slots) run them.
    executor: str = "local"
    workers: int = 2
    worker_concurrency: int = field(default_factory=lambda: shared_int("AIRFLOW__CELERY__WORKER_CONCURRENCY"))

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, not {self.executor!r}")
        # The settings shared with docker-compose.yaml under the caller's own (a test's short retry
        # delay wins over the shared one).
        celery = {key: shared_settings()[key] for key in SHARED_CELERY_ENV_KEYS} if self.celery else {}
        self.extra_env = {**shared_env(), **celery, **self.extra_env}

    @property
    def celery(self) -> bool:
        return self.executor == "celery"

    @property
    def worker_names(self) -> tuple[str, ...]:
        return celery_workers(self.workers) if self.celery else ()

    @property
    def components(self) -> tuple[str, ...]:
        """Every process the stack supervises, in start order (the broker first)."""
        return (BROKER, *AIRFLOW_COMPONENTS, *self.worker_names) if self.celery else AIRFLOW_COMPONENTS

    @property
    def task_runners(self) -> frozenset[str]:
        return frozenset(self.worker_names) if self.celery else TASK_RUNNERS


# ------------------------------------------------------------ settings shared with docker-compose
# deploy/airflow.env is the one source of what the live stack and docker-compose.yaml share (compose
# gives the file to every Airflow component): the carrier pool, parallelism and the DAG's knobs.
# Only those keys are read here: the file's secrets are placeholders for compose, and the stack makes
# its own per start. Format: KEY=VALUE lines, "#" comments (no quotes, nothing to expand).
SHARED_ENV_FILE = Path("deploy") / "airflow.env"
# Put into every component's environment (StackConfig.extra_env; what a caller passes wins).
SHARED_ENV_KEYS = (
    "AIRFLOW__CORE__LAZY_LOAD_PLUGINS",
    "TELEGENCE_MAX_ACTIVE_BATCHES_PER_RUN",
    "TELEGENCE_TASK_RETRY_DELAY_SECONDS",
    # The CeleryExecutor's (harmless under the LocalExecutor): what makes a killed worker's tasks
    # run again rather than vanish (see deploy/airflow.env).
    "AIRFLOW__CELERY__WORKER_CONCURRENCY",
    "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER",
    "AIRFLOW__CELERY__TASK_ACKS_LATE",
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
)
# Shared settings given only with the CeleryExecutor (the LocalExecutor stack keeps its own).
SHARED_CELERY_ENV_KEYS = ("AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT",)


def shared_settings(path: Path | None = None) -> dict[str, str]:
    """The KEY=VALUE lines of deploy/airflow.env (of the checkout the stack runs from)."""
    path = path or project_root() / SHARED_ENV_FILE
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise RuntimeError(f"{path} not found: the live stack runs from a checkout, which has it") from exc
    settings: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"{path}:{number}: not a KEY=VALUE line: {raw!r}")
        settings[key] = value
    return settings


def shared_env() -> dict[str, str]:
    """The shared settings every component of the stack gets in its environment."""
    settings = shared_settings()
    return {key: settings[key] for key in SHARED_ENV_KEYS}


def shared_int(key: str) -> int:
    return int(shared_settings()[key])


# The DAG's pool (dags/telegence_new_service_activation.py: CARRIER_POOL), created by the stack.
POOL = shared_settings()["TELEGENCE_POOL"]
