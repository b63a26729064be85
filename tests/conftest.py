"""Session fixtures shared by the whole suite.

The suite runs against a real PostgreSQL server found the same way the tools find it
(``telegence_activation.db.connection.activation_db_uri``): the Airflow connection
``activation_db`` when ``AIRFLOW_CONN_ACTIVATION_DB`` is set before pytest starts, otherwise an
embedded server in ``.data/test-pg``. On that server the session creates a fresh database, migrates
it, points ``AIRFLOW_CONN_ACTIVATION_DB`` at it for every component under test, and drops it at
the end. Airflow itself gets a throw-away ``AIRFLOW_HOME`` with this repo's ``dags/`` folder.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Airflow reads its configuration at import time: set it before anything imports airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="telegence-test-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
os.environ.setdefault("TELEGENCE_ACTIVATION_DATA_DIR", str(REPO / ".data" / "test"))
# Remember a server the user gave us before we overwrite the variable with the test database.
_GIVEN_CONN = os.environ.get("AIRFLOW_CONN_ACTIVATION_DB")


def _server_uri() -> str:
    from telegence_activation.db.connection import activation_db_uri

    return activation_db_uri()


def _with_database(uri: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(uri)._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def pg_server_uri() -> Iterator[str]:
    """URI of the server under test (any database on it); an embedded one started here is stopped after."""
    from telegence_activation.db.connection import embedded_running, stop_embedded

    started_here = _GIVEN_CONN is None and not embedded_running()
    yield _server_uri()
    if started_here:
        stop_embedded()


@pytest.fixture(scope="session")
def db_uri(pg_server_uri: str) -> Iterator[str]:
    """A fresh, migrated database for this session; ``AIRFLOW_CONN_ACTIVATION_DB`` points at it."""
    import psycopg

    from telegence_activation.db.connection import uri_to_connection_json
    from telegence_activation.db.migrate import migrate

    name = f"telegence_test_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server_uri, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    uri = _with_database(pg_server_uri, name)
    migrate(uri)
    os.environ["AIRFLOW_CONN_ACTIVATION_DB"] = uri_to_connection_json(uri)
    try:
        yield uri
    finally:
        if _GIVEN_CONN is None:
            os.environ.pop("AIRFLOW_CONN_ACTIVATION_DB", None)
        else:
            os.environ["AIRFLOW_CONN_ACTIVATION_DB"] = _GIVEN_CONN
        with psycopg.connect(pg_server_uri, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def scratch_db(pg_server_uri: str) -> Iterator[str]:
    """An empty database (no migrations applied), dropped after the test."""
    import psycopg

    name = f"telegence_scratch_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server_uri, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(pg_server_uri, name)
    finally:
        with psycopg.connect(pg_server_uri, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
