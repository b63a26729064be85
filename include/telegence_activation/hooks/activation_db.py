"""ActivationDbHook: the activation database through the postgres provider's PostgresHook."""

from __future__ import annotations

from typing import Any

from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowNotFoundException

from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID, embedded_uri


def _embedded_connection(conn_id: str) -> Connection:
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(embedded_uri())
    query = dict(parse_qsl(parts.query))
    return Connection(
        conn_id=conn_id,
        conn_type="postgres",
        host=query.get("host") or parts.hostname,
        port=parts.port,
        login=parts.username,
        schema=parts.path.lstrip("/") or "postgres",
    )


class ActivationDbHook(PostgresHook):
    """The activation database: connection ``activation_db``, or the embedded server when it is not set.

    :param activation_db_conn_id: a :ref:`postgres connection <howto/connection:postgres>`.
    """

    conn_name_attr = "activation_db_conn_id"
    default_conn_name = ACTIVATION_DB_CONN_ID
    hook_name = "Telegence activation database"

    def __init__(self, *args: Any, activation_db_conn_id: str = ACTIVATION_DB_CONN_ID, **kwargs: Any) -> None:
        kwargs.setdefault("postgres_conn_id", activation_db_conn_id)
        super().__init__(*args, **kwargs)

    @classmethod
    def get_connection(cls, conn_id: str) -> Connection:
        try:
            return super().get_connection(conn_id)
        except AirflowNotFoundException:
            if conn_id != ACTIVATION_DB_CONN_ID:
                raise
            return _embedded_connection(conn_id)
