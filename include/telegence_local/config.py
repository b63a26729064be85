"""The local stack's settings: what runs where, and the databases it needs."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from telegence_activation.db.connection import data_dir

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# The components that run tasks (LocalExecutor workers are forked by the scheduler): only they get
# the carrier and activation database connections.
TASK_RUNNERS = frozenset({"scheduler"})
# Every process the stack starts carries these in its environment (inherited by what it forks).
STACK_ID_ENV = "TELEGENCE_STACK_ID"
COMPONENT_ENV = "TELEGENCE_STACK_COMPONENT"
TASK_SECRETS_PREFIXES = ("AIRFLOW_CONN_",)
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 1.0, 30.0, 60.0
DAG_ID = "telegence_new_service_activation"
POOL = "telegence_api"
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
    parallelism: int = 4
    pool_slots: int = 4
    scheduler_idle_sleep: float = 1.0
    db_server_uri: str | None = None  # default: the embedded server
    pgdata: Path | None = None  # the embedded server's folder (default: the project's .data/pgdata)
    activation_database: str = "postgres"
    airflow_database: str = "airflow"
    app_id: str = "demo-app-id"
    app_secret: str = "demo-app-secret"
    service_provider_id: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    supervise: bool = True
