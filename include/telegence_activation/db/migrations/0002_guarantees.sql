-- 0002: guarantees under faults.
--  * UNKNOWN: a carrier write whose answer was lost (timeout, dropped connection, 5xx, malformed
--    2xx): not failed, not done; reconciled with the carrier before anything is sent again.
--  * carrier_write: every HTTP write to the carrier, recorded (and committed) before it is sent
--    and completed with its answer; a row left SENT is an attempt whose answer was lost.
--  * step deadlines kept in the database, whatever Airflow does with task tries.
--  * one ICCID open in one bulk change at a time.
--  * one customer notification per outcome.

ALTER TABLE activation.device_change DROP CONSTRAINT device_change_status_check;
ALTER TABLE activation.device_change ADD CONSTRAINT device_change_status_check
    CHECK (status IN ('NEW', 'PENDING', 'PROCESSING', 'UNKNOWN', 'PROCESSED', 'ERROR', 'API_FAILED'));

ALTER TABLE activation.device_change_log DROP CONSTRAINT device_change_log_response_status_check;
ALTER TABLE activation.device_change_log ADD CONSTRAINT device_change_log_response_status_check
    CHECK (response_status IN ('NEW', 'PENDING', 'PROCESSING', 'UNKNOWN', 'PROCESSED', 'ERROR', 'API_FAILED'));

-- An ICCID is open (not PROCESSED/ERROR) in at most one bulk change. Deferred to the commit, so
-- the intake can COPY a whole file and then list every clash with a clear message.
ALTER TABLE activation.device_change ADD CONSTRAINT device_change_iccid_open_once
    EXCLUDE USING btree (iccid WITH =)
    WHERE (status IN ('NEW', 'PENDING', 'PROCESSING', 'UNKNOWN', 'API_FAILED'))
    DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE activation.carrier_write (
    id                 bigserial   PRIMARY KEY,
    bulk_change_id     bigint      NOT NULL REFERENCES activation.bulk_change (id) ON DELETE CASCADE,
    step               text        NOT NULL,
    method             text        NOT NULL,
    path               text        NOT NULL,
    -- The body as sent (secrets are headers and never stored).
    request_text       text,
    device_change_ids  bigint[]    NOT NULL DEFAULT '{}',
    attempt            integer     NOT NULL CHECK (attempt > 0),
    -- Who sent it: DAG run, task, map index and try.
    sent_by            text        NOT NULL,
    sent_at            timestamptz NOT NULL DEFAULT now(),
    -- SENT: recorded, no answer recorded (a crash, or the database was down when it came);
    -- ANSWERED: an HTTP answer (any status); NO_ANSWER: timeout or dropped/refused connection.
    outcome            text        NOT NULL DEFAULT 'SENT' CHECK (outcome IN ('SENT', 'ANSWERED', 'NO_ANSWER')),
    http_status        integer,
    response_text      text,
    error_text         text,
    answered_at        timestamptz
);

CREATE INDEX carrier_write_bulk_idx ON activation.carrier_write (bulk_change_id, sent_at);

ALTER TABLE activation.device_change_log ADD COLUMN carrier_write_id bigint
    REFERENCES activation.carrier_write (id) ON DELETE SET NULL;

-- A step's deadline: set when a round of the step starts (its first check), kept across task tries
-- and clears; a new round starts only after the previous one finished.
ALTER TABLE activation.step_timing ADD COLUMN round_started_at timestamptz;
ALTER TABLE activation.step_timing ADD COLUMN deadline_at timestamptz;

-- A device whose static IP provisioning was (maybe) submitted before: reconciled by subscriber
-- number before it is ever submitted again.
ALTER TABLE activation.device_change ADD COLUMN ip_submitted_at timestamptz;
UPDATE activation.device_change SET ip_submitted_at = updated_at WHERE ip_batch_id IS NOT NULL;

ALTER TABLE activation.notification DROP CONSTRAINT notification_status_check;
ALTER TABLE activation.notification ADD CONSTRAINT notification_status_check
    CHECK (status IN ('SENDING', 'SENT', 'FAILED', 'SKIPPED'));
ALTER TABLE activation.notification ADD COLUMN outcome text;
ALTER TABLE activation.notification ADD COLUMN is_update boolean NOT NULL DEFAULT false;
ALTER TABLE activation.notification ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
-- The customer hears once per outcome: at most one notification sent (or being sent) per outcome.
CREATE UNIQUE INDEX notification_once_per_outcome ON activation.notification (bulk_change_id, outcome)
    WHERE status IN ('SENDING', 'SENT', 'SKIPPED');
