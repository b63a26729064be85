"""Session fixtures shared by the whole suite.

The suite runs against a real PostgreSQL server found the same way the tools find it
(``telegence_activation.db.connection.activation_db_uri``): the Airflow connection
``activation_db`` when ``AIRFLOW_CONN_ACTIVATION_DB`` is set before pytest starts, otherwise an
embedded server in ``.data/test/pgdata``. On that server the session creates a fresh database, migrates
it, points ``AIRFLOW_CONN_ACTIVATION_DB`` at it for every component under test, and drops it at
the end. Airflow itself gets a throw-away ``AIRFLOW_HOME`` with this repo's ``dags/`` folder, and
report files go to that home (``TELEGENCE_REPORTS_DIR``).

Parallel runs (``pytest -n 2``, what ``make test`` does) and several pytest runs at once are
safe: every xdist worker is a session of its own (own ``AIRFLOW_HOME`` with its SQLite metadata
database, own report folder, own databases with random names, free ports only), and the one
embedded server is shared through a cross-process lock and a list of its users: the first user
starts it, the last one stops it (only if a test session started it). See ``pg_server_uri``.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

# Airflow reads its configuration at import time: set it before anything imports airflow.
# mkdtemp: one home per process, so every xdist worker has its own (and its own metadata DB).
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="telegence-test-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
os.environ.setdefault("TELEGENCE_ACTIVATION_DATA_DIR", str(REPO / ".data" / "test"))
# Report files are named by bulk change id, and every session's database counts ids from 1: a
# shared folder would let one session read another's report. One folder per session.
os.environ["TELEGENCE_REPORTS_DIR"] = str(_AIRFLOW_HOME / "reports")
# Remember a server the user gave us before we overwrite the variable with the test database.
_GIVEN_CONN = os.environ.get("AIRFLOW_CONN_ACTIVATION_DB")
# Readable names of what a session creates on the server (gw0, gw1 under xdist).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


def _server_uri() -> str:
    from telegence_activation.db.connection import activation_db_uri

    return activation_db_uri()


def _with_database(uri: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(uri)._replace(path=f"/{database}"))


# ------------------------------------------------------------------ the shared embedded server


@contextmanager
def _embedded_server_lock() -> Iterator[Path]:
    """Hold the cross-process lock of the embedded test server; the path of its users file.

    ``flock`` on a file that is never deleted: the kernel releases it when the holder exits, even
    when killed, so a crashed session never leaves the lock taken.
    """
    from telegence_activation.db.connection import data_dir

    folder = data_dir()
    with (folder / "pgdata.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield folder / "pgdata.users.json"
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _process_key(pid: int) -> list[Any] | None:
    """A process as [pid, start time] (a reused pid is another process); None if it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return [pid, round(proc.create_time(), 2)]
    except psutil.Error:
        return None


def _read_users(path: Path) -> dict[str, Any]:
    """The users file, with the users that are no longer alive (a killed session) left out."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = {}
    users = [u for u in state.get("users", []) if isinstance(u, list) and _process_key(u[0]) == u]
    return {"server_pid": state.get("server_pid"), "users": users}


def _write_users(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def _postmaster_pid() -> int | None:
    """The pid of the running embedded test server, else None."""
    from telegence_activation.db.connection import data_dir, embedded_running

    if not embedded_running():
        return None
    return int((data_dir() / "pgdata" / "postmaster.pid").read_text().split()[0])


@pytest.fixture(scope="session")
def pg_server_uri() -> Iterator[str]:
    """URI of the server under test (any database on it).

    A server given with ``AIRFLOW_CONN_ACTIVATION_DB`` is used as it is. The embedded one is shared
    by every session that runs at the same time (the xdist workers of a run, other pytest runs in
    this checkout) under a cross-process lock: each session adds itself to the server's users
    when it starts (starting the server if it is not running, and noting its postmaster pid) and
    removes itself at the end; the last user stops the server, and only the server a test session
    started (a server found running with no test session on it, e.g. started by hand, is left
    alone). So a session that ends never stops the server under another one still running.
    """
    if _GIVEN_CONN is not None:
        yield _server_uri()
        return

    from telegence_activation.db.connection import embedded_uri, stop_embedded

    me = _process_key(os.getpid())
    with _embedded_server_lock() as users_file:
        state = _read_users(users_file)
        if _postmaster_pid() is None:
            uri = embedded_uri()  # starts it
            state["server_pid"] = _postmaster_pid()
        else:
            uri = embedded_uri()
        state["users"].append(me)
        _write_users(users_file, state)
    try:
        yield uri
    finally:
        with _embedded_server_lock() as users_file:
            state = _read_users(users_file)
            state["users"] = [u for u in state["users"] if u != me]
            running = _postmaster_pid()
            if not state["users"] and running is not None and running == state["server_pid"]:
                stop_embedded()
                state["server_pid"] = None
            _write_users(users_file, state)


@pytest.fixture(scope="session")
def db_uri(pg_server_uri: str) -> Iterator[str]:
    """A fresh, migrated database for this session; ``AIRFLOW_CONN_ACTIVATION_DB`` points at it."""
    import psycopg

    from telegence_activation.db.connection import uri_to_connection_json
    from telegence_activation.db.migrate import migrate

    name = f"telegence_test_{_WORKER}_{secrets.token_hex(4)}"
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

    name = f"telegence_scratch_{_WORKER}_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server_uri, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(pg_server_uri, name)
    finally:
        with psycopg.connect(pg_server_uri, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------------------- xdist: scheduling

# The modules that each start a whole live Airflow stack (api-server, scheduler, dag-processor,
# triggerer, executor workers, simulator, some an embedded server of their own), in two groups of
# about the same length: each group runs on one worker, module after module, so at most two stacks
# run at once; a live module not listed here is a group of its own.
LIVE_TESTS = "tests/live/"
LIVE_GROUPS = {
    "test_live_stack.py": "live-a",
    "test_chaos.py": "live-a",
    "test_celery.py": "live-a",
    "test_stack_heals.py": "live-b",
    "test_ui_browser.py": "live-b",
    "test_dispatcher_live.py": "live-b",
}


def live_group(nodeid: str) -> str | None:
    """The xdist group of a test under ``tests/live/`` (None for any other test)."""
    if not nodeid.startswith(LIVE_TESTS):
        return None
    module = nodeid.split("::", 1)[0]
    return LIVE_GROUPS.get(module[len(LIVE_TESTS) :], module)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` (what ``make test`` runs) with the live modules in their groups
    (``LIVE_GROUPS``) and every other test a unit of its own. xdist hands out the units with the
    most tests first, so the two live groups start at once on two workers while a third (``make
    test`` runs three: the stacks mostly wait on the carrier and the scheduler's loop) runs the
    other tests, and every worker takes the short tests left when its group is done.

    The groups are chosen here from the test's path, on the controller, and not with
    ``@pytest.mark.xdist_group``: with pytest 9.2, pytest-xdist 3.8's loadgroup no longer sees
    that mark (it renames the worker's node ids, which pytest 9.2 ignores; pytest-xdist issue
    1386) and would silently spread the live tests over the workers, each starting the stack.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class LiveGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return live_group(nodeid) or str(super()._split_scope(nodeid))

    return LiveGroupScheduling(config, log)
