"""What every bulk-change task shares: the bulk change it owns, the database, carrier credentials."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from psycopg.pq import TransactionStatus

from telegence_activation import repository as repo
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.exceptions import (
    BulkChangeNotFound,
    BulkChangeNotOwned,
    ConnectionMissing,
    CredentialsProblem,
)
from telegence_activation.hooks.activation_db import ActivationDbHook
from telegence_activation.hooks.telegence import TelegenceHook

if TYPE_CHECKING:
    from airflow.sdk import Context

IDLE = TransactionStatus.IDLE
DEFAULT_TELEGENCE_CONN_ID = "telegence_default"
DESC_ACTIVATE = "Telegence New Service Activation: Telegence API"


def telegence_conn_id_for(service_provider_id: int, override: str | None = None) -> str:
    """``override`` if given; else ``telegence_sp_<id>`` when it exists, else ``telegence_default``;
    raise CredentialsProblem if none exists."""
    candidates = (
        (override,)
        if override
        else (TelegenceHook.conn_id_for(service_provider_id), DEFAULT_TELEGENCE_CONN_ID)
    )
    for conn_id in candidates:
        try:
            BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            continue
        return conn_id
    raise CredentialsProblem(
        f"Unable to get Telegence API credentials for service provider {service_provider_id}: "
        f"no connection {' or '.join(candidates)}"
    )


def telegence_hook_for(
    service_provider_id: int,
    *,
    require_write: bool = True,
    conn_id: str | None = None,
    rate_limit_db_conn_id: str = ACTIVATION_DB_CONN_ID,
) -> TelegenceHook:
    """The Telegence hook of a service provider (or of ``conn_id``), checked for credentials and
    write permission; its rate limit's bucket lives in ``rate_limit_db_conn_id``."""
    hook = TelegenceHook(
        telegence_conn_id_for(service_provider_id, conn_id), rate_limit_db_conn_id=rate_limit_db_conn_id
    )
    conn = hook.get_connection(hook.telegence_conn_id)
    if not conn.login or not conn.password:
        raise CredentialsProblem(
            f"Unable to get Telegence API credentials for service provider {service_provider_id}: "
            f"connection {hook.telegence_conn_id} has no app-id (login) or app-secret (password)"
        )
    if require_write and not hook.write_enabled:
        raise CredentialsProblem(f"Write is disabled for service provider {service_provider_id}")
    return hook


class CarrierWriteLog:
    """Write-ahead record of one task's carrier writes (``WriteRecorder`` of the Telegence hook).

    Each attempt is inserted and committed on the task's own autocommit connection before the
    request goes out, then completed with its answer; if the database cannot take the record, the
    request is not sent. A row never completed is an attempt whose answer was lost.
    """

    def __init__(self, hook: ActivationDbHook, bulk_change_id: int, sent_by: str) -> None:
        self._hook = hook
        self._bulk_change_id = bulk_change_id
        self._sent_by = sent_by
        # One autocommit connection per sending thread (remove_offering_codes PATCHes from several):
        # threads sharing one would queue on it, two commits per write each.
        self._local = threading.local()
        self._all: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection:
        conn: psycopg.Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._hook.get_conn()  # type: ignore[assignment]
            assert conn is not None
            conn.autocommit = True
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop(self) -> None:
        """Close this thread's connection (broken): its next write opens a fresh one."""
        conn: psycopg.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def for_devices(self, step: str, device_change_ids: Sequence[int]) -> _DeviceWrites:
        """A recorder for writes about these devices at this step."""
        return _DeviceWrites(self, step, list(device_change_ids))

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, []
        for conn in connections:
            conn.close()
        self._local = threading.local()


class _DeviceWrites:
    """The ``WriteRecorder`` for one group of devices; ``last_id`` is its latest recorded write."""

    def __init__(self, log: CarrierWriteLog, step: str, device_change_ids: list[int]) -> None:
        self._log = log
        self._step = step
        self._ids = device_change_ids
        self.last_id: int | None = None

    def sent(self, method: str, path: str, body: Any, attempt: int) -> int:
        try:
            write_id = repo.record_carrier_write(
                self._log._connection(),
                bulk_change_id=self._log._bulk_change_id,
                step=self._step,
                method=method,
                path=path,
                request_text=repo.clip(json.dumps(body)) if body is not None else None,
                device_change_ids=self._ids,
                attempt=attempt,
                sent_by=self._log._sent_by,
            )
        except psycopg.OperationalError:
            self._log._drop()  # a fresh connection next time; this request is not sent
            raise
        self.last_id = write_id
        return write_id

    def answered(self, token: Any, status: int | None, text: str, error: str | None) -> None:
        try:
            repo.complete_carrier_write(
                self._log._connection(), int(token), http_status=status, response_text=text, error_text=error
            )
        except psycopg.OperationalError:
            self._log._drop()
            raise


def sent_by(context: Context) -> str:
    """Who sends: the run, the task, its map index and try (for the write-ahead record)."""
    ti = context.get("ti") or context.get("task_instance")
    task_id = getattr(ti, "task_id", "?")
    map_index = getattr(ti, "map_index", -1)
    try_number = getattr(ti, "try_number", "?")
    where = f"{task_id}[{map_index}]" if isinstance(map_index, int) and map_index >= 0 else str(task_id)
    return f"{context.get('run_id', '?')}/{where}/try {try_number}"


class BulkChangeTaskMixin:
    """Shared glue: ``bulk_change_id`` is templated (``{{ params.bulk_change_id }}``); every task
    works only for the run that owns its bulk change; one database hook per task instance."""

    bulk_change_id: Any
    activation_db_conn_id: str
    telegence_conn_id: str | None = None
    _db_hook: ActivationDbHook | None = None
    _carrier_hooks: dict[tuple[int, bool, str | None], TelegenceHook] | None = None
    _shared_conn: psycopg.Connection | None = None

    @property
    def bulk_change(self) -> int:
        return int(self.bulk_change_id)

    @property
    def db_hook(self) -> ActivationDbHook:
        if self._db_hook is None or self._db_hook.activation_db_conn_id != self.activation_db_conn_id:
            self._db_hook = ActivationDbHook(activation_db_conn_id=self.activation_db_conn_id)
        return self._db_hook

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """One database transaction: committed when the block ends, rolled back on an exception.

        Inside ``one_connection()`` the transactions share that block's connection (one connection
        per task instance instead of one per transaction); a transaction opened while another is
        in progress on it gets a connection of its own, as it does outside the block.
        A connection id that does not exist fails the task at once (no retry can create it); a
        database that does not answer raises ``OperationalError``, which Airflow retries.
        """
        shared = self._shared_conn
        if shared is not None and not shared.closed and shared.info.transaction_status == IDLE:
            try:
                with shared.transaction():
                    yield shared
            except psycopg.OperationalError:
                shared.close()  # broken: the next transaction opens a fresh one
                raise
            return
        conn = self._connect()
        if shared is not None and (shared.closed or shared.broken):
            self._shared_conn = conn  # replaces the broken one; closed by one_connection()
            with conn.transaction():
                yield conn
            return
        with conn:
            yield conn

    @contextmanager
    def one_connection(self) -> Iterator[None]:
        """Every ``transaction()`` of this block on one connection, closed when the block ends."""
        if self._shared_conn is not None:  # nested: the outer block owns it
            yield
            return
        self._shared_conn = self._connect()
        try:
            yield
        finally:
            conn, self._shared_conn = self._shared_conn, None
            if conn is not None:
                conn.close()

    def _connect(self) -> psycopg.Connection:
        try:
            conn: psycopg.Connection = self.db_hook.get_conn()  # type: ignore[assignment]
        except AirflowNotFoundException as exc:
            raise ConnectionMissing(
                f"the activation database connection {self.activation_db_conn_id!r} does not exist: {exc}"
            ) from exc
        return conn

    def owned_bulk_change(self, conn: psycopg.Connection, context: Context) -> dict[str, Any]:
        """The bulk change, if this task's run owns it; otherwise fail at once, changing nothing."""
        bc_id = self.bulk_change
        bulk_change = repo.get_bulk_change(conn, bc_id)
        if bulk_change is None:
            raise BulkChangeNotFound(f"bulk change {bc_id} does not exist")
        owner = bulk_change["dag_run_id"]
        if owner != context["run_id"]:
            raise BulkChangeNotOwned(not_owned_message(bulk_change, context["run_id"]))
        return bulk_change

    def carrier_hook(self, bulk_change: dict[str, Any], *, require_write: bool = True) -> TelegenceHook:
        """The carrier hook of the bulk change's service provider, built once per task instance."""
        key = (int(bulk_change["service_provider_id"]), require_write, self.telegence_conn_id)
        if self._carrier_hooks is None:
            self._carrier_hooks = {}
        if key not in self._carrier_hooks:
            # The rate limit's bucket in the run's own activation database (a param may name another).
            self._carrier_hooks[key] = telegence_hook_for(
                key[0],
                require_write=require_write,
                conn_id=self.telegence_conn_id,
                rate_limit_db_conn_id=self.activation_db_conn_id,
            )
        return self._carrier_hooks[key]

    def write_log(self, context: Context) -> CarrierWriteLog:
        return CarrierWriteLog(self.db_hook, self.bulk_change, sent_by(context))


def not_owned_message(bulk_change: dict[str, Any], run_id: str) -> str:
    owner = bulk_change["dag_run_id"]
    bc_id = bulk_change["id"]
    if owner:
        return (
            f"bulk change {bc_id} belongs to DAG run {owner} (status {bulk_change['status']}); run {run_id} "
            "changes nothing. One run owns a bulk change: to retry it use "
            f"'python -m telegence_activation retry-failed {bc_id}' (or clear tasks of run {owner})."
        )
    return (
        f"bulk change {bc_id} is {bulk_change['status']} and has no owning run; run {run_id} changes nothing "
        "(only a NEW bulk change can be started)"
    )
