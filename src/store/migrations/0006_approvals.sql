-- Approvals: one row per job that waits (or waited) for people, and their votes, one
-- per person per round (a round starts again when the plan changed before the job ran).
CREATE TABLE approvals (
    job_id       INTEGER PRIMARY KEY REFERENCES jobs (id),
    round        INTEGER NOT NULL DEFAULT 1,
    rule         TEXT NOT NULL,
    required     INTEGER NOT NULL,
    approvers    TEXT NOT NULL,
    plan_digest  TEXT NOT NULL,
    plan         TEXT NOT NULL,
    state        TEXT NOT NULL,
    revision     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    reminded     INTEGER NOT NULL DEFAULT 0,
    decided_at   INTEGER,
    reason       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX approvals_state ON approvals (state);

CREATE TABLE votes (
    job_id   INTEGER NOT NULL REFERENCES approvals (job_id),
    round    INTEGER NOT NULL,
    voter    TEXT NOT NULL,
    vote     TEXT NOT NULL,
    note     TEXT NOT NULL DEFAULT '',
    source   TEXT NOT NULL,
    at       INTEGER NOT NULL,
    counted  INTEGER NOT NULL,
    PRIMARY KEY (job_id, round, voter)
);
