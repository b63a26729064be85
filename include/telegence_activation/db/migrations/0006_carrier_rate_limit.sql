-- 0006: the carrier rate limit shared by every task of every run (repository/rate_limit.py).
-- One row per carrier account (bucket_key: the connection's base URL and app-id, so two connection
-- ids to one account share one limit, as they share the carrier's). A call takes a token with one
-- UPDATE: tokens refill at `rate` per second up to `burst`; a take may leave the bucket in debt
-- (tokens < 0), and the taker then waits -tokens / rate seconds before sending: its place in the
-- queue is already reserved, so no row lock is held while anyone sleeps.
--
-- UNLOGGED: the bucket is throw-away state (after a crash it starts full again, which is what a
-- new bucket does); no WAL means a take commits without waiting for a disk flush.

CREATE UNLOGGED TABLE activation.carrier_rate_bucket (
    bucket_key  text             PRIMARY KEY,
    tokens      double precision NOT NULL,
    rate        double precision NOT NULL CHECK (rate > 0),
    burst       double precision NOT NULL CHECK (burst >= 1),
    updated_at  timestamptz      NOT NULL,
    takes       bigint           NOT NULL DEFAULT 0,
    waits       bigint           NOT NULL DEFAULT 0
) WITH (fillfactor = 50);

COMMENT ON TABLE activation.carrier_rate_bucket IS
    'Token bucket per carrier account (max_calls_per_second of the Telegence connection); see repository/rate_limit.py';
