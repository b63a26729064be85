-- 0003: operations.
--  * CANCELLED: a bulk change stopped by a person (cancel, or an approval rejected / not given in
--    time). Its devices never sent end CANCELLED with the reason; lines the carrier accepted go on
--    to a terminal status. Who cancelled, when and why are kept on the bulk change.
--  * error classes: every failed audit row says which class of the error catalogue its reason is in
--    (retryable, permanent, needs_person, unknown; see domain/errors.py).
--  * plans: a dry run's plan report (what would be sent), kept per bulk change.

ALTER TABLE activation.bulk_change DROP CONSTRAINT bulk_change_status_check;
ALTER TABLE activation.bulk_change ADD CONSTRAINT bulk_change_status_check
    CHECK (status IN ('NEW', 'PROCESSING', 'PROCESSED', 'ERROR', 'CANCELLED'));
ALTER TABLE activation.bulk_change ADD COLUMN cancel_requested_at timestamptz;
ALTER TABLE activation.bulk_change ADD COLUMN cancelled_by text;
ALTER TABLE activation.bulk_change ADD COLUMN cancel_reason text;
ALTER TABLE activation.bulk_change ADD CONSTRAINT bulk_change_cancel_says_who
    CHECK (cancel_requested_at IS NULL OR (cancelled_by IS NOT NULL AND cancel_reason IS NOT NULL));

ALTER TABLE activation.device_change DROP CONSTRAINT device_change_status_check;
ALTER TABLE activation.device_change ADD CONSTRAINT device_change_status_check
    CHECK (status IN ('NEW', 'PENDING', 'PROCESSING', 'UNKNOWN', 'PROCESSED', 'ERROR', 'API_FAILED',
                      'CANCELLED'));
ALTER TABLE activation.device_change DROP CONSTRAINT device_change_terminal_has_reason;
ALTER TABLE activation.device_change ADD CONSTRAINT device_change_terminal_has_reason
    CHECK (status NOT IN ('ERROR', 'API_FAILED', 'CANCELLED') OR status_details IS NOT NULL);

ALTER TABLE activation.device_change_log DROP CONSTRAINT device_change_log_response_status_check;
ALTER TABLE activation.device_change_log ADD CONSTRAINT device_change_log_response_status_check
    CHECK (response_status IN ('NEW', 'PENDING', 'PROCESSING', 'UNKNOWN', 'PROCESSED', 'ERROR', 'API_FAILED',
                               'CANCELLED'));
ALTER TABLE activation.device_change_log ADD COLUMN error_class text
    CHECK (error_class IN ('retryable', 'permanent', 'needs_person', 'unknown'));

CREATE TABLE activation.bulk_change_plan (
    bulk_change_id  bigint      PRIMARY KEY REFERENCES activation.bulk_change (id) ON DELETE CASCADE,
    plan            jsonb       NOT NULL,
    dag_run_id      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
