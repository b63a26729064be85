"""What every bulk-change task shares: the bulk change id, the database, carrier credentials."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from telegence_activation.hooks.activation_db import ActivationDbHook
from telegence_activation.hooks.telegence import TelegenceHook

DEFAULT_TELEGENCE_CONN_ID = "telegence_default"


class CredentialsProblem(Exception):
    """The service provider has no usable Telegence credentials (missing, or writes disabled)."""


def telegence_conn_id_for(service_provider_id: int) -> str:
    """``telegence_sp_<id>`` when it exists, else ``telegence_default``; raise CredentialsProblem if neither."""
    candidates = (TelegenceHook.conn_id_for(service_provider_id), DEFAULT_TELEGENCE_CONN_ID)
    for conn_id in candidates:
        try:
            BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            continue
        return conn_id
    raise CredentialsProblem(
        f"Unable to get Telegence API credentials for service provider {service_provider_id}: "
        f"no connection {candidates[0]} or {candidates[1]}"
    )


def telegence_hook_for(service_provider_id: int, *, require_write: bool = True) -> TelegenceHook:
    """The Telegence hook of a service provider, checked for credentials and write permission."""
    hook = TelegenceHook(telegence_conn_id_for(service_provider_id))
    conn = hook.get_connection(hook.telegence_conn_id)
    if not conn.login or not conn.password:
        raise CredentialsProblem(
            f"Unable to get Telegence API credentials for service provider {service_provider_id}: "
            f"connection {hook.telegence_conn_id} has no app-id (login) or app-secret (password)"
        )
    if require_write and not hook.write_enabled:
        raise CredentialsProblem(f"Write is disabled for service provider {service_provider_id}")
    return hook


class BulkChangeTaskMixin:
    """Shared glue: ``bulk_change_id`` is templated (``{{ params.bulk_change_id }}``)."""

    bulk_change_id: Any
    activation_db_conn_id: str

    @property
    def bulk_change(self) -> int:
        return int(self.bulk_change_id)

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """One database transaction: committed when the block ends, rolled back on an exception."""
        hook = ActivationDbHook(activation_db_conn_id=self.activation_db_conn_id)
        conn: psycopg.Connection = hook.get_conn()  # type: ignore[assignment]
        with conn:
            yield conn
