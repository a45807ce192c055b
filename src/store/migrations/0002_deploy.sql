-- Deploy host reports: one row per host and deploy job, posted by `corral agent
-- --report-url` to POST /api/v1/deploys/{job}/reports. The first report of a host wins.
CREATE TABLE deploy_reports (
    job_id       INTEGER NOT NULL REFERENCES jobs (id),
    host         TEXT NOT NULL,
    ok           INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    log_tail     TEXT NOT NULL DEFAULT '',
    error        TEXT,
    event_id     TEXT,
    at           INTEGER NOT NULL,
    PRIMARY KEY (job_id, host)
);
