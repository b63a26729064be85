"""The database helper: an Airflow connection when one is configured, else an embedded server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from telegence_activation.db.connection import connection_to_uri, uri_to_connection_json

REPO = Path(__file__).resolve().parent.parent


def _resolve_in_child(env: dict[str, str]) -> str:
    """Run the helper in a fresh process (Airflow caches connections per process)."""
    code = "from telegence_activation.db.connection import activation_db_uri; print(activation_db_uri())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    return out.stdout.strip().splitlines()[-1]


def _base_env(tmp_path: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW_CONN_ACTIVATION_DB"}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow")
    return env


def test_given_connection_is_used(tmp_path: Path, db_uri: str) -> None:
    env = _base_env(tmp_path)
    env["AIRFLOW_CONN_ACTIVATION_DB"] = uri_to_connection_json(db_uri)
    env["TELEGENCE_ACTIVATION_DATA_DIR"] = str(tmp_path / "must-not-be-used")
    resolved = _resolve_in_child(env)
    given = psycopg.conninfo.conninfo_to_dict(db_uri)
    assert psycopg.conninfo.conninfo_to_dict(resolved) == {k: v for k, v in given.items() if v}
    with psycopg.connect(resolved) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (given["dbname"],)
    assert not (tmp_path / "must-not-be-used" / "pgdata").exists()


def test_embedded_server_is_started_on_demand(tmp_path: Path) -> None:
    from telegence_activation.db.connection import stop_embedded

    env = _base_env(tmp_path)
    data = tmp_path / "data"
    env["TELEGENCE_ACTIVATION_DATA_DIR"] = str(data)
    uri = _resolve_in_child(env)
    try:
        assert (data / "pgdata" / "PG_VERSION").exists()
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # A second process finds the running server instead of starting another.
        assert _resolve_in_child(env) == uri
    finally:
        stop_embedded(data / "pgdata")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(uri, connect_timeout=3)


def test_connection_to_uri_handles_tcp_socket_and_secrets() -> None:
    from airflow.sdk import Connection

    tcp = Connection(
        conn_id="x",
        conn_type="postgres",
        host="db.example",
        port=5433,
        login="ops",
        password="p@ss:/word",
        schema="activation",
        extra=json.dumps({"sslmode": "require", "cursor": "dictcursor"}),
    )
    assert (
        connection_to_uri(tcp)
        == "postgresql://ops:p%40ss%3A%2Fword@db.example:5433/activation?sslmode=require"
    )
    socket = Connection(conn_id="y", conn_type="postgres", host="/tmp/pg", login="postgres")
    assert connection_to_uri(socket) == "postgresql://postgres@/postgres?host=%2Ftmp%2Fpg"


def test_uri_round_trips_through_connection_json() -> None:
    from airflow.sdk import Connection

    for uri in (
        "postgresql://ops:secret@db.example:5433/activation?sslmode=require",
        "postgresql://postgres@/postgres?host=%2Ftmp%2Fpg",
    ):
        body = json.loads(uri_to_connection_json(uri))
        conn = Connection(
            conn_id="z",
            conn_type=body["conn_type"],
            host=body["host"],
            port=body.get("port"),
            login=body["login"],
            password=body["password"] or None,
            schema=body["schema"],
            extra=json.dumps(body.get("extra", {})),
        )
        assert psycopg.conninfo.conninfo_to_dict(
            connection_to_uri(conn)
        ) == psycopg.conninfo.conninfo_to_dict(uri)


def test_the_hook_uses_the_connection_it_is_given(db_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from telegence_activation.hooks.activation_db import ActivationDbHook

    monkeypatch.setenv("AIRFLOW_CONN_REPORTING_DB", uri_to_connection_json(db_uri))
    hook = ActivationDbHook(activation_db_conn_id="reporting_db")
    assert hook.get_conn_id() == "reporting_db"
    with hook.get_conn() as conn:  # type: ignore[attr-defined]
        database = conn.execute("SELECT current_database()").fetchone()[0]
    assert f"/{database}?" in db_uri


def test_a_worker_without_the_connection_fails_instead_of_starting_a_private_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.sdk.exceptions import AirflowNotFoundException

    from telegence_activation.hooks.activation_db import EMBEDDED_FALLBACK_ENV, ActivationDbHook

    monkeypatch.delenv("AIRFLOW_CONN_ACTIVATION_DB", raising=False)
    monkeypatch.delenv(EMBEDDED_FALLBACK_ENV, raising=False)
    with pytest.raises(AirflowNotFoundException):
        ActivationDbHook().get_connection("activation_db")
    with pytest.raises(AirflowNotFoundException):
        ActivationDbHook(activation_db_conn_id="no_such_db").get_connection("no_such_db")
    # Only the local stack and the tests opt in to the checkout's embedded server.
    monkeypatch.setenv(EMBEDDED_FALLBACK_ENV, "true")
    assert ActivationDbHook().get_connection("activation_db").conn_type == "postgres"
