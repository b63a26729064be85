"""An event trigger: a bulk change was created (PostgreSQL ``LISTEN telegence_bulk_change_created``).

Used by an ``AssetWatcher`` (``telegence_activation.assets.BULK_CHANGE_CREATED``): the triggerer
runs it, each notification (sent by the database itself on every insert, migration 0005) becomes
an Asset event carrying the bulk change id, and the dispatcher DAG, scheduled on that Asset, starts
the bulk change within seconds, without any REST call. A notification sent while nobody listens
(triggerer restarting) is not lost work: the dispatcher's every-minute sweep starts that bulk
change too. Why LISTEN/NOTIFY rather than a queue: the bulk changes are rows of our own database,
so the database that holds them announces them, in the inserting transaction, with no broker to
run, secure and keep in step (see README).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

CHANNEL = "telegence_bulk_change_created"


class BulkChangeCreatedTrigger(BaseEventTrigger):
    """Yield ``{"bulk_change_id": n}`` for each bulk change inserted into the activation database.

    :param activation_db_conn_id: the activation database connection (postgres).
    """

    def __init__(self, activation_db_conn_id: str = "activation_db") -> None:
        super().__init__()
        self.activation_db_conn_id = activation_db_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "telegence_activation.triggers.bulk_change_created.BulkChangeCreatedTrigger",
            {"activation_db_conn_id": self.activation_db_conn_id},
        )

    async def _conninfo(self) -> str:
        from airflow.sdk import BaseHook
        from psycopg.conninfo import make_conninfo

        conn = await BaseHook.aget_connection(self.activation_db_conn_id)
        extra = {
            k: str(v)
            for k, v in conn.extra_dejson.items()
            if k in ("sslmode", "sslrootcert", "connect_timeout")
        }
        return make_conninfo(
            host=conn.host or None,
            port=conn.port or None,
            user=conn.login or None,
            password=conn.password or None,
            dbname=conn.schema or None,
            **extra,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import psycopg

        conninfo = await self._conninfo()
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.log.info("Listening for new bulk changes on %s", CHANNEL)
                    async for notify in conn.notifies():
                        if notify.payload.isdigit():
                            yield TriggerEvent({"bulk_change_id": int(notify.payload)})
            except psycopg.OperationalError as exc:  # the database restarted: listen again
                self.log.warning("Lost the activation database (%s); listening again in 5 s", exc)
                await asyncio.sleep(5)
