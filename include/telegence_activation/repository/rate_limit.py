"""The carrier rate limit's token buckets (``activation.carrier_rate_bucket``, migration 0006).

One row per carrier account. ``take_rate_token`` takes one token in **one statement** (an upsert:
the first take creates the bucket full), atomic under any number of concurrent takers: the row
lock is held for that statement only (autocommit), never across a wait. The statement's time is
read once (``clock_timestamp()``, the database's clock, the same for every worker host) before the
row lock; a taker that queued on the lock sees a bucket updated after its own time and accounts its
take at that later time (``greatest``), so concurrent takes are neither lost nor double-counted.
The arithmetic is ``domain.rate_limit.take``'s.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from telegence_activation.domain.rate_limit import RateLimit

_REFILLED = """least(EXCLUDED.burst,
                      b.tokens + EXCLUDED.rate
                                 * greatest(0, extract(epoch FROM EXCLUDED.updated_at - b.updated_at))::float8)"""

_TAKE = f"""
INSERT INTO activation.carrier_rate_bucket AS b (bucket_key, tokens, rate, burst, updated_at, takes, waits)
VALUES (%(key)s, %(burst)s::float8 - 1, %(rate)s::float8, %(burst)s::float8, clock_timestamp(), 1, 0)
ON CONFLICT (bucket_key) DO UPDATE
   SET tokens = {_REFILLED} - 1,
       rate = EXCLUDED.rate,
       burst = EXCLUDED.burst,
       updated_at = greatest(b.updated_at, EXCLUDED.updated_at),
       takes = b.takes + 1,
       waits = b.waits + ({_REFILLED} < 1)::int
RETURNING tokens, extract(epoch FROM clock_timestamp() - updated_at)::float8
"""


def take_rate_token(conn: psycopg.Connection, key: str, limit: RateLimit) -> tuple[float, float]:
    """Take one token from the bucket ``key`` (created full at its first take).

    Returns the tokens left (negative: a debt, the caller waits ``-tokens / rate`` seconds from
    the bucket's time) and how many seconds ago that time was (``domain.rate_limit.wait_seconds``
    takes both). ``conn`` should be in autocommit, so the row lock ends with the statement.
    """
    row = conn.execute(_TAKE, {"key": key, "rate": limit.rate, "burst": limit.burst}).fetchone()
    if row is None:  # pragma: no cover - an upsert ... RETURNING always returns the row
        raise RuntimeError("carrier_rate_bucket upsert returned nothing")
    return float(row[0]), max(0.0, float(row[1]))


def get_rate_bucket(conn: psycopg.Connection, key: str) -> dict[str, Any] | None:
    """A bucket as stored (tokens as of ``updated_at``, rate, burst, takes, waits), or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT bucket_key, tokens, rate, burst, updated_at, takes, waits
                 FROM activation.carrier_rate_bucket WHERE bucket_key = %s""",
            (key,),
        ).fetchone()


def delete_rate_bucket(conn: psycopg.Connection, key: str) -> None:
    """Forget a bucket (its next take starts it full)."""
    conn.execute("DELETE FROM activation.carrier_rate_bucket WHERE bucket_key = %s", (key,))
