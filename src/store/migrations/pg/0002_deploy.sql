-- Deploy host reports, as src/store/migrations/0002_deploy.sql: one row per host and
-- deploy job; the first report of a host wins.
CREATE TABLE deploy_reports (
    job_id       BIGINT NOT NULL REFERENCES jobs (id),
    host         TEXT NOT NULL,
    ok           BOOLEAN NOT NULL,
    duration_ms  BIGINT NOT NULL,
    log_tail     TEXT NOT NULL DEFAULT '',
    error        TEXT,
    event_id     TEXT,
    at           BIGINT NOT NULL,
    PRIMARY KEY (job_id, host)
);
