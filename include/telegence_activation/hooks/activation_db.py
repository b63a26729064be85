"""ActivationDbHook: the activation database through the postgres provider's PostgresHook."""

from __future__ import annotations

import os
from typing import Any

from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowNotFoundException

from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID, embedded_uri

# Set (to "true") only by the local stack and the tests: a missing ``activation_db`` connection
# then means the embedded server of this checkout. Anywhere else a missing connection is an error.
EMBEDDED_FALLBACK_ENV = "TELEGENCE_ACTIVATION_DB_EMBEDDED"


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
    """The activation database.

    :param activation_db_conn_id: a :ref:`postgres connection <howto/connection:postgres>`
        (default ``activation_db``). When it does not exist the hook fails with Airflow's "not
        found" error, except where the local stack or the tests set ``TELEGENCE_ACTIVATION_DB_EMBEDDED``
        (then a missing ``activation_db`` means this checkout's embedded server).
    """

    conn_name_attr = "activation_db_conn_id"
    default_conn_name = ACTIVATION_DB_CONN_ID
    hook_name = "Telegence activation database"

    def __init__(self, *args: Any, activation_db_conn_id: str = ACTIVATION_DB_CONN_ID, **kwargs: Any) -> None:
        kwargs.pop("postgres_conn_id", None)
        super().__init__(*args, activation_db_conn_id=activation_db_conn_id, **kwargs)

    @classmethod
    def get_connection(cls, conn_id: str) -> Connection:
        try:
            return super().get_connection(conn_id)
        except AirflowNotFoundException:
            embedded = os.environ.get(EMBEDDED_FALLBACK_ENV, "").strip().lower() in ("1", "true", "yes")
            if conn_id != ACTIVATION_DB_CONN_ID or not embedded:
                raise
            return _embedded_connection(conn_id)
