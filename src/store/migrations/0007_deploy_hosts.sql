-- The hosts a fan-out deploy job expects reports from (CORRAL_DEPLOY_HOSTS, Serf's alive
-- members or Consul's catalog, as the job read them before it fired its event). Written
-- once per job, before the event; the report endpoint refuses any other host.
CREATE TABLE deploy_hosts (
    job_id  INTEGER NOT NULL REFERENCES jobs (id),
    host    TEXT NOT NULL,
    PRIMARY KEY (job_id, host)
);
