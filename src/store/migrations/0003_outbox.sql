-- The outbox: one row per message corral says, written in the transaction of the change
-- that caused it, delivered by the sender (app/outbox.rs). Times are Unix milliseconds.
--
-- Portable SQL on purpose (a PostgreSQL store follows): the only SQLite-specific bits are
-- INTEGER PRIMARY KEY (PostgreSQL: BIGINT GENERATED ALWAYS AS IDENTITY; rows are never
-- deleted, so ids are not reused), INTEGER for booleans, and `||` with an integer operand
-- below (PostgreSQL: job_id::text). Indexes are few on purpose: every page a row touches
-- is written on the request path.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY,
    key           TEXT,                        -- job:12:root; NULL for unnamed rows
    kind          TEXT NOT NULL,               -- post | ephemeral | respond
    lane          TEXT NOT NULL,               -- rows of a lane go out in seq order
    seq           INTEGER NOT NULL,
    channel       TEXT NOT NULL DEFAULT '',
    thread_key    TEXT,                        -- reply under the row with this key
    thread_ts     TEXT,                        -- reply under this Slack ts
    user_id       TEXT,                        -- ephemeral: who sees it
    url           TEXT,                        -- respond: the response_url
    in_channel    INTEGER NOT NULL DEFAULT 0,
    role          TEXT NOT NULL,
    job_id        INTEGER,
    body          TEXT NOT NULL,               -- chat::Message as JSON, the newest version
    version       INTEGER NOT NULL DEFAULT 1,
    sent_version  INTEGER NOT NULL DEFAULT 0,
    state         TEXT NOT NULL DEFAULT 'pending', -- pending | edit | done | failed | dead | dropped
    ts            TEXT,                        -- Slack's ts once posted
    attempts      INTEGER NOT NULL DEFAULT 0,
    unknown       INTEGER NOT NULL DEFAULT 0,  -- last attempt's outcome unknown: look first
    not_before    INTEGER NOT NULL DEFAULT 0,  -- backoff
    lease_owner   TEXT,                        -- the sender holding the row during a call
    lease_until   INTEGER,
    last_error    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    expires_at    INTEGER
);
-- The sender's index: pending rows by lane and sequence (lane heads are found with a
-- loose index scan over it, one seek per lane with work), and edits waiting.
CREATE INDEX outbox_open ON outbox (state, lane, seq);
-- Only named rows are indexed by name (most rows have none).
CREATE UNIQUE INDEX outbox_key ON outbox (key) WHERE key IS NOT NULL;

-- The sender's pacing: per method and per method+channel, the earliest next call
-- (Retry-After windows included), so a restart keeps honouring them.
CREATE TABLE outbox_pacing (
    scope       TEXT PRIMARY KEY,
    not_before  INTEGER NOT NULL
);

-- Why a message of a job's thread was not delivered.
ALTER TABLE jobs ADD COLUMN delivery TEXT;

-- Roots posted before the outbox existed become delivered rows, so a restarted corral
-- keeps editing those threads.
INSERT INTO outbox (key, kind, lane, seq, channel, role, job_id, body, version, sent_version,
                    state, ts, created_at, updated_at)
SELECT 'job:' || job_id || ':root', 'post', channel, 0, channel, 'root', job_id, '{"text":""}',
       0, 0, 'done', ts, 0, 0
FROM messages WHERE true
ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING;
