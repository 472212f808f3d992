-- smsc-ingest schema, as the migrations (workers/migrations/) leave it: `smsc-ingest migrate` applies
-- those, never this file, and a test checks that the two agree. Users query these tables: names and
-- columns are a public interface.
--
-- The event tables are range-partitioned by the month, in UTC, of the event's own time. Copies of one
-- event carry the same time, so they meet in one partition, where its unique key holds. A row without
-- that time goes to the default partition, where the key (NULLS NOT DISTINCT) holds as well.
-- `smsc-ingest prune` drops whole months past the retention.

-- Makes the partition of `parent` for the month holding `month` (UTC): <parent>_pYYYYMM, unless it
-- exists. Rows of that month that had gone to the default partition move into it; then it is
-- attached. True if it was made. Called by migrate and by the workers, ahead of need.
CREATE OR REPLACE FUNCTION smsc_ensure_partition(parent text, month timestamptz) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    first timestamp := date_trunc('month', month AT TIME ZONE 'UTC');
    lo timestamptz := first AT TIME ZONE 'UTC';
    hi timestamptz := (first + interval '1 month') AT TIME ZONE 'UTC';
    name text := format('%s_p%s', parent, to_char(first, 'YYYYMM'));
    key text;
BEGIN
    -- Two workers starting together would both find it missing.
    PERFORM pg_advisory_xact_lock(7362002);
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    SELECT a.attname INTO STRICT key
    FROM pg_partitioned_table p
    JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
    WHERE p.partrelid = parent::regclass;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', name, parent);
    EXECUTE format(
        'WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING *) INSERT INTO %I SELECT * FROM moved',
        parent || '_default', key, key, name
    ) USING lo, hi;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, name, lo, hi);
    RETURN true;
END
$$;

-- One row per distinct delivery status event, however many copies the gateway sent.
CREATE TABLE status_events (
    event_id            bigint      GENERATED ALWAYS AS IDENTITY,   -- unique, though not a key: a partitioned table's keys hold status_at
    account             text        NOT NULL DEFAULT 'default',     -- the {account} of the handler URL
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
    CONSTRAINT status_events_event_key UNIQUE NULLS NOT DISTINCT (account, message_id, phone, status, status_at)
) PARTITION BY RANGE (status_at);
-- Months are made ahead as status_events_pYYYYMM (smsc_ensure_partition, below); a status without any
-- time is kept here.
CREATE TABLE status_events_default PARTITION OF status_events DEFAULT;
CREATE INDEX status_events_received_at_idx ON status_events (received_at);
-- `stats` counts rows by stored_at, the commit time. Rows are appended in about that order, so a
-- BRIN index (a few pages, next to nothing per insert) leads it to the newest pages only; ranges
-- are summarized by autovacuum as they fill.
CREATE INDEX status_events_stored_at_idx ON status_events
    USING brin (stored_at) WITH (autosummarize = on);
CREATE INDEX status_events_request_id_idx ON status_events (request_id);
-- What users ask (README, "Querying the data"): one phone's events in a time range; failed
-- deliveries per day.
-- The history of one message is read through status_events_event_key.
CREATE INDEX status_events_phone_idx ON status_events (account, phone, status_at);
CREATE INDEX status_events_failed_idx ON status_events (account, status_at)
    WHERE status IN (3, 20, 22, 23, 24, 25);

-- One row per sent message and phone: the newest status (greatest status_at, then higher status).
-- Not partitioned: it is the current state, kept when old months of status_events are pruned.
CREATE TABLE messages (
    message_id  bigint      NOT NULL,
    phone       text        NOT NULL,
    status      integer     NOT NULL,
    status_at   timestamptz,
    err         integer,
    cost        numeric,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    account     text        NOT NULL DEFAULT 'default',
    PRIMARY KEY (account, message_id, phone)
);

-- One row per incoming SMS (the gateway's `id`).
CREATE TABLE incoming_messages (
    account             text        NOT NULL DEFAULT 'default',
    id                  bigint      NOT NULL,
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
    stored_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT incoming_messages_event_key UNIQUE NULLS NOT DISTINCT (account, id, server_received_at)
) PARTITION BY RANGE (server_received_at);
CREATE TABLE incoming_messages_default PARTITION OF incoming_messages DEFAULT;
CREATE INDEX incoming_messages_received_at_idx ON incoming_messages (received_at);
CREATE INDEX incoming_messages_stored_at_idx ON incoming_messages
    USING brin (stored_at) WITH (autosummarize = on);
CREATE INDEX incoming_messages_request_id_idx ON incoming_messages (request_id);
CREATE INDEX incoming_messages_phone_idx ON incoming_messages (account, phone, received_at);
-- What users ask (README, "Querying the data"): incoming SMS to one of our numbers in a time range.
CREATE INDEX incoming_messages_to_idx ON incoming_messages (account, to_phone, server_received_at);

-- One row per call to the "confirm the number by a call" service.
CREATE TABLE call_confirmations (
    account     text        NOT NULL DEFAULT 'default',
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
    PRIMARY KEY (account, phone, called_at)
) PARTITION BY RANGE (called_at);
CREATE TABLE call_confirmations_default PARTITION OF call_confirmations DEFAULT;
CREATE INDEX call_confirmations_stored_at_idx ON call_confirmations
    USING brin (stored_at) WITH (autosummarize = on);
CREATE INDEX call_confirmations_request_id_idx ON call_confirmations (request_id);

-- Requests a worker could not store: the raw request (body base64, query string with the hash
-- redacted, Content-Type), why, and how often. One row per request id; a replay that fails again
-- re-arms the same row. Rows older than SMSC_DEAD_LETTER_DAYS are purged by the workers.
CREATE TABLE dead_letters (
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
    replay_job_id   text,
    account         text        NOT NULL DEFAULT 'default'
);
CREATE INDEX dead_letters_failed_at_idx ON dead_letters (failed_at);
-- The exporter counts the waiting ones by class at every scrape, however many were replayed.
CREATE INDEX dead_letters_waiting_idx ON dead_letters (error_class) WHERE replayed_at IS NULL;

-- One row per request that carried a copy of an event already stored: the gateway's repeats, the
-- same event through another ingress instance, a replay. The row it duplicates is the one of table
-- `kind` whose request_id is first_request_id. A request retried or replayed keeps its one row.
-- Rows older than SMSC_DEAD_LETTER_DAYS are purged by the workers with the dead letters.
CREATE TABLE duplicate_requests (
    request_id          text        PRIMARY KEY,        -- the `rid` of the copy
    first_request_id    text        NOT NULL,           -- the request that stored the event first
    kind                text        NOT NULL,           -- status, incoming or call
    job_id              text        NOT NULL,           -- the RQ job that carried the copy
    received_at         timestamptz NOT NULL,           -- when the ingress received the copy
    stored_at           timestamptz NOT NULL DEFAULT now(),
    account             text        NOT NULL DEFAULT 'default'
);
CREATE INDEX duplicate_requests_first_request_id_idx ON duplicate_requests (first_request_id);
CREATE INDEX duplicate_requests_stored_at_idx ON duplicate_requests (stored_at);
