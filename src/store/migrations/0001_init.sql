-- corral's first schema: the lock, its history, jobs, Slack message ids, the audit log
-- and the Events API dedupe set.
CREATE TABLE lock_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    running_by      TEXT,
    running_reason  TEXT,
    running_since   INTEGER,
    blocked_by      TEXT,
    blocked_reason  TEXT,
    blocked_since   INTEGER
);
INSERT INTO lock_state (id) VALUES (1);

CREATE TABLE lock_history (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    reason  TEXT NOT NULL DEFAULT '',
    source  TEXT NOT NULL,
    forced  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL,
    command       TEXT NOT NULL,
    requested_by  TEXT NOT NULL,
    source        TEXT NOT NULL,
    channel       TEXT,
    status        TEXT NOT NULL,
    done          INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    total         INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    outcome       TEXT
);
CREATE INDEX jobs_status ON jobs (status);

CREATE TABLE messages (
    job_id   INTEGER NOT NULL REFERENCES jobs (id),
    channel  TEXT NOT NULL,
    ts       TEXT NOT NULL,
    PRIMARY KEY (job_id, channel)
);

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    detail  TEXT NOT NULL,
    source  TEXT NOT NULL
);

CREATE TABLE seen_events (
    event_id  TEXT PRIMARY KEY,
    at        INTEGER NOT NULL
);
