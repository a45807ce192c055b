-- The hosts a fan-out deploy job expects reports from, as
-- src/store/migrations/0007_deploy_hosts.sql: written once per job, before its event.
CREATE TABLE deploy_hosts (
    job_id  BIGINT NOT NULL REFERENCES jobs (id),
    host    TEXT NOT NULL,
    PRIMARY KEY (job_id, host)
);
