-- Several replicas (issue 13): job leases, the replicas' heartbeats, and the per-user
-- command limit shared by every process. Additive only: a replica one version behind
-- ignores the new columns and tables. Times here are Unix milliseconds.

-- The replica running a job and until when its lease holds; renewed by that replica's
-- heartbeat. NULL for jobs written before leases (or by an older replica).
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until INTEGER;

-- One row per process that ever ran `corral serve` (or `corral exec`) on this store.
CREATE TABLE replicas (
    id         TEXT PRIMARY KEY,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    started    INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);

-- The per-user command limit (GCRA): the theoretical arrival time of the next command
-- (ms) and how many commands in a row were refused (1: the flood was just told).
CREATE TABLE rate_limits (
    key      TEXT PRIMARY KEY,
    tat      INTEGER NOT NULL,
    refused  INTEGER NOT NULL DEFAULT 0
);
