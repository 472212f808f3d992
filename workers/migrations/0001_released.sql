-- Migration 1: the schema as released before versioned migrations (schema.sql of release 0.1.0).
-- Every statement is idempotent: on a database made by that release, it changes nothing.

-- One row per distinct delivery status event, however many copies the gateway sent.
CREATE TABLE IF NOT EXISTS status_events (
    event_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id          bigint      NOT NULL,           -- `id`
    phone               text        NOT NULL,
    status              integer     NOT NULL,
    status_at           timestamptz,                    -- `ts`, else `time`
    ts                  timestamptz,                    -- `ts` (unix seconds)
    status_time         timestamptz,                    -- `time` (DD.MM.YY hh:mm:ss, account time zone)
    err                 integer,
    syserr              text,
    cnt                 integer,
    type                integer,
    cost                numeric,
    flag                integer,
    flag_message_type   smallint,                       -- flag bits 0-3
    flag_second_balance boolean,                        -- flag bit 5
    flag_template       boolean,                        -- flag bit 8
    flag_template_kind  smallint,                       -- flag bits 9-10
    sender              text,
    dtmf                text,
    cmt                 text,                           -- without the `overtime: mm:ss` line
    overtime            interval,
    imsi                text,                           -- HLR extras: kept as text (mnc has leading zeros)
    msc                 text,
    mcc                 text,
    mnc                 text,
    cn                  text,
    net                 text,
    rcn                 text,
    rnet                text,
    calltime            integer,                        -- voice-menu extras, seconds
    callmenu            text,
    ringtime            integer,
    params              jsonb       NOT NULL,           -- every parameter received, known or not
    request_id          text        NOT NULL,           -- the ingress request that first stored it
    received_at         timestamptz NOT NULL,           -- when the ingress received that request
    stored_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT status_events_event_key UNIQUE NULLS NOT DISTINCT (message_id, phone, status, status_at)
);
CREATE INDEX IF NOT EXISTS status_events_received_at_idx ON status_events (received_at);
-- `stats` counts rows by stored_at, the commit time. Rows are appended in about that order, so a
-- BRIN index (a few pages, next to nothing per insert) leads it to the newest pages only; ranges
-- are summarized by autovacuum as they fill.
CREATE INDEX IF NOT EXISTS status_events_stored_at_idx ON status_events
    USING brin (stored_at) WITH (autosummarize = on);
CREATE INDEX IF NOT EXISTS status_events_request_id_idx ON status_events (request_id);

-- One row per sent message and phone: the newest status (greatest status_at, then higher status).
CREATE TABLE IF NOT EXISTS messages (
    message_id  bigint      NOT NULL,
    phone       text        NOT NULL,
    status      integer     NOT NULL,
    status_at   timestamptz,
    err         integer,
    cost        numeric,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, phone)
);

-- One row per incoming SMS (the gateway's `id`).
CREATE TABLE IF NOT EXISTS incoming_messages (
    id                  bigint      PRIMARY KEY,
    sms_id              bigint,                         -- our message this answers, if any
    phone               text        NOT NULL,
    to_phone            text        NOT NULL,           -- `to`
    text                text        NOT NULL,           -- `mes`, decoded
    smsc                text,
    sent_at             timestamptz,                    -- `sent`
    server_received_at  timestamptz,                    -- `time`: when the gateway received it
    params              jsonb       NOT NULL,
    request_id          text        NOT NULL,
    received_at         timestamptz NOT NULL,
    stored_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS incoming_messages_received_at_idx ON incoming_messages (received_at);
CREATE INDEX IF NOT EXISTS incoming_messages_stored_at_idx ON incoming_messages
    USING brin (stored_at) WITH (autosummarize = on);
CREATE INDEX IF NOT EXISTS incoming_messages_request_id_idx ON incoming_messages (request_id);
CREATE INDEX IF NOT EXISTS incoming_messages_phone_idx ON incoming_messages (phone, received_at);

-- One row per call to the "confirm the number by a call" service.
CREATE TABLE IF NOT EXISTS call_confirmations (
    phone       text        NOT NULL,
    called_at   timestamptz NOT NULL,                   -- `ts`
    waitcall    integer,
    calltime    integer,
    callmenu    text,
    ringtime    integer,
    params      jsonb       NOT NULL,
    request_id  text        NOT NULL,
    received_at timestamptz NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (phone, called_at)
);
CREATE INDEX IF NOT EXISTS call_confirmations_stored_at_idx ON call_confirmations
    USING brin (stored_at) WITH (autosummarize = on);
CREATE INDEX IF NOT EXISTS call_confirmations_request_id_idx ON call_confirmations (request_id);

-- Requests a worker could not store: the raw request (body base64, query string with the hash
-- redacted, Content-Type), why, and how often. One row per request id; a replay that fails again
-- re-arms the same row. Rows older than SMSC_DEAD_LETTER_DAYS are purged by the workers.
CREATE TABLE IF NOT EXISTS dead_letters (
    dead_letter_id  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id      text        NOT NULL UNIQUE,
    job_id          text        NOT NULL,               -- the RQ job that carried it last
    kind            text,                               -- what could be read, for people
    event_ref       text,                               -- the event's `id`, if readable
    phone           text,
    error_class     text        NOT NULL,
    reason          text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 1,
    raw             jsonb       NOT NULL,
    received_at     timestamptz NOT NULL,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    failed_at       timestamptz NOT NULL DEFAULT now(),
    replayed_at     timestamptz,                        -- set when requeued; NULL while waiting
    replay_job_id   text
);
CREATE INDEX IF NOT EXISTS dead_letters_failed_at_idx ON dead_letters (failed_at);
-- The exporter counts the waiting ones by class at every scrape, however many were replayed.
CREATE INDEX IF NOT EXISTS dead_letters_waiting_idx ON dead_letters (error_class) WHERE replayed_at IS NULL;

-- One row per request that carried a copy of an event already stored: the gateway's repeats, the
-- same event through another ingress instance, a replay. The row it duplicates is the one of table
-- `kind` whose request_id is first_request_id. A request retried or replayed keeps its one row.
-- Rows older than SMSC_DEAD_LETTER_DAYS are purged by the workers with the dead letters.
CREATE TABLE IF NOT EXISTS duplicate_requests (
    request_id          text        PRIMARY KEY,        -- the `rid` of the copy
    first_request_id    text        NOT NULL,           -- the request that stored the event first
    kind                text        NOT NULL,           -- status, incoming or call
    job_id              text        NOT NULL,           -- the RQ job that carried the copy
    received_at         timestamptz NOT NULL,           -- when the ingress received the copy
    stored_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS duplicate_requests_first_request_id_idx ON duplicate_requests (first_request_id);
CREATE INDEX IF NOT EXISTS duplicate_requests_stored_at_idx ON duplicate_requests (stored_at);
