-- Approvals, as src/store/migrations/0004_approvals.sql has them for SQLite.
CREATE TABLE approvals (
    job_id       BIGINT PRIMARY KEY REFERENCES jobs (id),
    round        BIGINT NOT NULL DEFAULT 1,
    rule         TEXT NOT NULL,
    required     BIGINT NOT NULL,
    approvers    TEXT NOT NULL,
    plan_digest  TEXT NOT NULL,
    plan         TEXT NOT NULL,
    state        TEXT NOT NULL,
    revision     BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    reminded     BOOLEAN NOT NULL DEFAULT FALSE,
    decided_at   BIGINT,
    reason       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX approvals_state ON approvals (state);

CREATE TABLE votes (
    job_id   BIGINT NOT NULL REFERENCES approvals (job_id),
    round    BIGINT NOT NULL,
    voter    TEXT NOT NULL,
    vote     TEXT NOT NULL,
    note     TEXT NOT NULL DEFAULT '',
    source   TEXT NOT NULL,
    at       BIGINT NOT NULL,
    counted  BOOLEAN NOT NULL,
    PRIMARY KEY (job_id, round, voter)
);
