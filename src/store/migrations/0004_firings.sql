-- Scheduled firings claimed (scheduler, app/scheduler.rs): a freeze window's entry and
-- exit, a digest, a lock reminder. The primary key decides which process fires: a claim
-- is an insert that does nothing when the key is there, in the transaction that writes
-- the firing's messages. `at` is the firing's time (Unix seconds): a window's start for
-- `enter`, its end for `exit`. Rows are small and few (a handful a day); never deleted.
CREATE TABLE firings (
    key        TEXT PRIMARY KEY,   -- digest:C1:0 9 * * MON-FRI@UTC:1749452400
    schedule   TEXT NOT NULL,      -- the key without its time: digest:C1:0 9 * * MON-FRI@UTC
    at         INTEGER NOT NULL,
    outcome    TEXT NOT NULL,      -- sent | late | skipped | enter | exit | reminded
    claimed_at INTEGER NOT NULL
);
CREATE INDEX firings_by_schedule ON firings (schedule, at);
