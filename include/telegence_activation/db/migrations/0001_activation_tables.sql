-- 0001: bulk changes, their device changes, the per-device audit log.
-- Everything lives in the "activation" schema so it can share a database with other schemas
-- (for example Airflow's own metadata) without name clashes.

CREATE SCHEMA IF NOT EXISTS activation;

CREATE TABLE activation.bulk_change (
    id                       bigserial PRIMARY KEY,
    service_provider_id      integer     NOT NULL CHECK (service_provider_id > 0),
    change_type              text        NOT NULL DEFAULT 'TelegenceNewServiceActivation',
    status                   text        NOT NULL DEFAULT 'NEW'
        CHECK (status IN ('NEW', 'PROCESSING', 'PROCESSED', 'ERROR')),
    -- A related bulk change (e.g. customer assignment) finished together with this one.
    addition_bulk_change_id  bigint      REFERENCES activation.bulk_change (id),
    carrier_data_group       text,
    carrier_rate_pool        text,
    device_count             integer     NOT NULL DEFAULT 0 CHECK (device_count >= 0),
    customer_name            text,
    notify_to                text,
    source_file              text,
    created_by               text        NOT NULL DEFAULT current_user,
    status_details           text,
    dag_run_id               text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    processing_started_at    timestamptz,
    processed_at             timestamptz,
    CHECK (addition_bulk_change_id IS NULL OR addition_bulk_change_id <> id)
);

CREATE INDEX bulk_change_status_idx ON activation.bulk_change (status);

CREATE TABLE activation.device_change (
    id                     bigserial PRIMARY KEY,
    bulk_change_id         bigint      NOT NULL REFERENCES activation.bulk_change (id) ON DELETE CASCADE,
    -- Position in the bulk change (the CSV line number): gives batches a stable order.
    line_number            integer     NOT NULL CHECK (line_number > 0),
    iccid                  text        NOT NULL CHECK (iccid ~ '^[0-9]{19,20}$'),
    imei                   text        NOT NULL CHECK (imei ~ '^[0-9]{15}$'),
    -- The MDN, known once the carrier has activated the line.
    subscriber_number      text,
    -- The platform's stored request: TelegenceActivationRequest, CarrierDataGroup,
    -- CarrierRatePool, StaticIPProvision, CustomerIPRange (see docs and domain/models.py).
    change_request         jsonb       NOT NULL,
    needs_static_ip        boolean     GENERATED ALWAYS AS
        (jsonb_typeof(change_request -> 'StaticIPProvision') = 'object') STORED,
    status                 text        NOT NULL DEFAULT 'NEW'
        CHECK (status IN ('NEW', 'PENDING', 'PROCESSING', 'PROCESSED', 'ERROR', 'API_FAILED')),
    step                   text        NOT NULL DEFAULT 'ActivateDevice'
        CHECK (step IN ('ActivateDevice', 'WaitForActivation', 'RemoveOfferingCodes',
                        'RequestIPProvision', 'CheckIPProvisionStatus', 'Done')),
    -- Activation batch (0-based) planned by the prepare step; batches hold <= batch_size devices.
    batch_no               integer     CHECK (batch_no >= 0),
    activation_request_id  text,
    activated_at           timestamptz,
    -- removeOfferingCode characteristics applied by PATCH once the line was active.
    offering_codes_removed_at timestamptz,
    ip_batch_id            uuid,
    reserved_ip            inet,
    assigned_ip            inet,
    status_details         text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    processed_at           timestamptz,
    CONSTRAINT device_change_iccid_once_per_bulk_change UNIQUE (bulk_change_id, iccid),
    CONSTRAINT device_change_line_once_per_bulk_change UNIQUE (bulk_change_id, line_number),
    -- A terminal device always says why.
    CONSTRAINT device_change_terminal_has_reason
        CHECK (status NOT IN ('ERROR', 'API_FAILED') OR status_details IS NOT NULL)
);

CREATE INDEX device_change_bulk_status_idx ON activation.device_change (bulk_change_id, status);
CREATE INDEX device_change_bulk_step_status_idx ON activation.device_change (bulk_change_id, step, status);
CREATE INDEX device_change_bulk_batch_idx ON activation.device_change (bulk_change_id, batch_no);
CREATE INDEX device_change_activation_request_idx ON activation.device_change (activation_request_id)
    WHERE activation_request_id IS NOT NULL;
CREATE INDEX device_change_ip_batch_idx ON activation.device_change (ip_batch_id)
    WHERE ip_batch_id IS NOT NULL;
CREATE INDEX device_change_iccid_idx ON activation.device_change (iccid);

-- One row per device per attempt at each step; never updated, never deleted by the workflow.
CREATE TABLE activation.device_change_log (
    id                 bigserial PRIMARY KEY,
    bulk_change_id     bigint      NOT NULL REFERENCES activation.bulk_change (id) ON DELETE CASCADE,
    device_change_id   bigint      REFERENCES activation.device_change (id) ON DELETE CASCADE,
    step               text        NOT NULL,
    description        text        NOT NULL,
    request_text       text,
    response_text      text,
    response_status    text        NOT NULL
        CHECK (response_status IN ('NEW', 'PENDING', 'PROCESSING', 'PROCESSED', 'ERROR', 'API_FAILED')),
    has_errors         boolean     NOT NULL,
    error_text         text,
    processed_by       text        NOT NULL,
    processed_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX device_change_log_bulk_idx ON activation.device_change_log (bulk_change_id, processed_at);
CREATE INDEX device_change_log_device_idx ON activation.device_change_log (device_change_id);

-- Wall time of each workflow step per bulk change (for the summary report).
CREATE TABLE activation.step_timing (
    bulk_change_id  bigint      NOT NULL REFERENCES activation.bulk_change (id) ON DELETE CASCADE,
    step            text        NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    PRIMARY KEY (bulk_change_id, step)
);

-- The summary report of a finished bulk change (latest version kept; history in audit log).
CREATE TABLE activation.bulk_change_report (
    bulk_change_id  bigint      PRIMARY KEY REFERENCES activation.bulk_change (id) ON DELETE CASCADE,
    report          jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Customer notifications sent (or attempted) for a bulk change.
CREATE TABLE activation.notification (
    id              bigserial   PRIMARY KEY,
    bulk_change_id  bigint      NOT NULL REFERENCES activation.bulk_change (id) ON DELETE CASCADE,
    channel         text        NOT NULL,
    recipient       text,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL CHECK (status IN ('SENT', 'FAILED', 'SKIPPED')),
    error_text      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX notification_bulk_idx ON activation.notification (bulk_change_id);
