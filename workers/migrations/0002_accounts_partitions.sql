-- Migration 2: accounts, and the event tables partitioned by month.
--
-- Every table gets `account` ('default' for the rows already stored) and every unique key of an
-- event includes it: the same message id in two accounts is two messages.
--
-- status_events, incoming_messages and call_confirmations become range-partitioned by the month, in
-- UTC, of the event's own time: status_at, server_received_at (`time`), called_at. Copies of one event
-- carry the same time, so they meet in one partition, where its unique key holds. A row without that
-- time goes to the table's default partition, where the key (NULLS NOT DISTINCT) holds as well.
--
-- The three tables are rebuilt: each is renamed, its rows copied into the partitioned table and the
-- old one dropped, in this migration's one transaction. That holds an ACCESS EXCLUSIVE lock on them
-- while the rows are copied (README, "Upgrading": how long, and how to run it). Workers wait for it
-- and go on; the ingress never touches PostgreSQL and keeps answering.

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

-- The rebuilt tables' names, sequence included, are taken by the new ones.
ALTER TABLE status_events RENAME TO status_events_released;
ALTER SEQUENCE status_events_event_id_seq RENAME TO status_events_released_event_id_seq;
ALTER TABLE incoming_messages RENAME TO incoming_messages_released;
ALTER TABLE call_confirmations RENAME TO call_confirmations_released;
-- PostgreSQL 18 names NOT NULL constraints (status_events_phone_not_null), and a new constraint never
-- takes a name the schema holds: the released tables' ones move aside, or the new tables' would get
-- other names than schema.sql gives them. Earlier versions have no such rows.
DO $$
DECLARE
    constraint_row record;
BEGIN
    FOR constraint_row IN
        SELECT conrelid::regclass AS rel, conname FROM pg_constraint
        WHERE contype = 'n' AND conrelid IN (
            'status_events_released'::regclass,
            'incoming_messages_released'::regclass,
            'call_confirmations_released'::regclass
        )
    LOOP
        EXECUTE format(
            'ALTER TABLE %s RENAME CONSTRAINT %I TO %I',
            constraint_row.rel, constraint_row.conname, left('released_' || constraint_row.conname, 63)
        );
    END LOOP;
END
$$;

CREATE TABLE status_events (
    event_id            bigint      GENERATED ALWAYS AS IDENTITY,
    account             text        NOT NULL DEFAULT 'default',
    message_id          bigint      NOT NULL,
    phone               text        NOT NULL,
    status              integer     NOT NULL,
    status_at           timestamptz,
    ts                  timestamptz,
    status_time         timestamptz,
    err                 integer,
    syserr              text,
    cnt                 integer,
    type                integer,
    cost                numeric,
    flag                integer,
    flag_message_type   smallint,
    flag_second_balance boolean,
    flag_template       boolean,
    flag_template_kind  smallint,
    sender              text,
    dtmf                text,
    cmt                 text,
    overtime            interval,
    imsi                text,
    msc                 text,
    mcc                 text,
    mnc                 text,
    cn                  text,
    net                 text,
    rcn                 text,
    rnet                text,
    calltime            integer,
    callmenu            text,
    ringtime            integer,
    params              jsonb       NOT NULL,
    request_id          text        NOT NULL,
    received_at         timestamptz NOT NULL,
    stored_at           timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (status_at);
CREATE TABLE status_events_default PARTITION OF status_events DEFAULT;

CREATE TABLE incoming_messages (
    account             text        NOT NULL DEFAULT 'default',
    id                  bigint      NOT NULL,
    sms_id              bigint,
    phone               text        NOT NULL,
    to_phone            text        NOT NULL,
    text                text        NOT NULL,
    smsc                text,
    sent_at             timestamptz,
    server_received_at  timestamptz,
    params              jsonb       NOT NULL,
    request_id          text        NOT NULL,
    received_at         timestamptz NOT NULL,
    stored_at           timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (server_received_at);
CREATE TABLE incoming_messages_default PARTITION OF incoming_messages DEFAULT;

CREATE TABLE call_confirmations (
    account     text        NOT NULL DEFAULT 'default',
    phone       text        NOT NULL,
    called_at   timestamptz NOT NULL,
    waitcall    integer,
    calltime    integer,
    callmenu    text,
    ringtime    integer,
    params      jsonb       NOT NULL,
    request_id  text        NOT NULL,
    received_at timestamptz NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (called_at);
CREATE TABLE call_confirmations_default PARTITION OF call_confirmations DEFAULT;

-- A partition for every month the stored rows fall in (from 2000 to a year ahead; the rest stays in
-- the default partition), then the rows, keeping their event ids.
DO $$
DECLARE
    parent text;
    key text;
    columns text;
BEGIN
    FOR parent, key IN VALUES
        ('status_events', 'status_at'),
        ('incoming_messages', 'server_received_at'),
        ('call_confirmations', 'called_at')
    LOOP
        EXECUTE format(
            'SELECT smsc_ensure_partition(%L, m) FROM (SELECT DISTINCT date_trunc(''month'', %I, ''UTC'') AS m '
            'FROM %I WHERE %I >= ''2000-01-01 00:00+00'' AND %I < now() + interval ''1 year'') AS months',
            parent, key, parent || '_released', key, key
        );
        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO columns
        FROM pg_attribute
        WHERE attrelid = (parent || '_released')::regclass AND attnum > 0 AND NOT attisdropped;
        EXECUTE format(
            'INSERT INTO %I (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %I',
            parent, columns, columns, parent || '_released'
        );
        EXECUTE format('DROP TABLE %I', parent || '_released');
    END LOOP;
END
$$;
SELECT setval(pg_get_serial_sequence('status_events', 'event_id'), coalesce(max(event_id), 0) + 1, false)
FROM status_events;

-- Keys and indexes, built once on the copied rows (and made on every partition made later).
ALTER TABLE status_events ADD CONSTRAINT status_events_event_key
    UNIQUE NULLS NOT DISTINCT (account, message_id, phone, status, status_at);
CREATE INDEX status_events_received_at_idx ON status_events (received_at);
CREATE INDEX status_events_stored_at_idx ON status_events USING brin (stored_at) WITH (autosummarize = on);
CREATE INDEX status_events_request_id_idx ON status_events (request_id);
CREATE INDEX status_events_phone_idx ON status_events (account, phone, status_at);
CREATE INDEX status_events_failed_idx ON status_events (account, status_at)
    WHERE status IN (3, 20, 22, 23, 24, 25);

ALTER TABLE incoming_messages ADD CONSTRAINT incoming_messages_event_key
    UNIQUE NULLS NOT DISTINCT (account, id, server_received_at);
CREATE INDEX incoming_messages_received_at_idx ON incoming_messages (received_at);
CREATE INDEX incoming_messages_stored_at_idx ON incoming_messages
    USING brin (stored_at) WITH (autosummarize = on);
CREATE INDEX incoming_messages_request_id_idx ON incoming_messages (request_id);
CREATE INDEX incoming_messages_phone_idx ON incoming_messages (account, phone, received_at);
CREATE INDEX incoming_messages_to_idx ON incoming_messages (account, to_phone, server_received_at);

ALTER TABLE call_confirmations ADD CONSTRAINT call_confirmations_pkey PRIMARY KEY (account, phone, called_at);
CREATE INDEX call_confirmations_stored_at_idx ON call_confirmations
    USING brin (stored_at) WITH (autosummarize = on);
CREATE INDEX call_confirmations_request_id_idx ON call_confirmations (request_id);

-- Not partitioned: a constant default is a catalog change, with no rewrite. messages' key is rebuilt.
ALTER TABLE messages ADD COLUMN account text NOT NULL DEFAULT 'default';
ALTER TABLE messages DROP CONSTRAINT messages_pkey, ADD CONSTRAINT messages_pkey PRIMARY KEY (account, message_id, phone);
ALTER TABLE dead_letters ADD COLUMN account text NOT NULL DEFAULT 'default';
ALTER TABLE duplicate_requests ADD COLUMN account text NOT NULL DEFAULT 'default';
