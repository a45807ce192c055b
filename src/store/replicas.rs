//! What several replicas share beyond the lock and the outbox: who is alive (the
//! `replicas` table, written by each process's heartbeat), which replica runs which job
//! and until when (job leases), the per-user command limit, and pruning old rows.
//!
//! **Leases.** A job is claimed by the replica that runs it ([`super::Store::claim_job`])
//! with a lease; that replica's heartbeat renews the leases of every job it runs. A job
//! whose lease ran out (queued or running; a job without a lease, written before leases
//! or by an older replica, counts from its last change) belongs to a replica that died or
//! lost the database: another replica ends it as interrupted and says so in its thread
//! ([`super::Store::interrupt_job`], decided in the store, so once). Jobs are reported,
//! never taken over: a Rancher upgrade or a deploy cut off half-way cannot be resumed
//! safely from the outside.

use serde::{Deserialize, Serialize};

/// One process on the store, as its heartbeat last wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// Unique per process start: `host:pid:started`.
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// Unix ms.
    pub started_ms: i64,
    /// Unix ms of the newest heartbeat.
    pub last_seen_ms: i64,
}

impl Replica {
    /// This process, started at `now_ms`.
    pub fn this_process(now_ms: i64) -> Replica {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".into());
        let pid = i64::from(std::process::id());
        Replica {
            id: format!("{host}:{pid}:{now_ms}"),
            host,
            pid,
            started_ms: now_ms,
            last_seen_ms: now_ms,
        }
    }
}

/// What the per-user command limit says about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Over the limit: the first refusal of a flood (answer it).
    Refused,
    /// Over the limit and already told: acknowledge and say nothing.
    Silent,
}

impl Admission {
    /// From the stored count of refusals in a row after this command (0: allowed).
    pub(super) fn from_refused(refused: i64) -> Admission {
        match refused {
            i64::MIN..=0 => Admission::Allowed,
            1 => Admission::Refused,
            _ => Admission::Silent,
        }
    }
}

/// What [`super::Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Outbox rows (delivered, failed, dead or dropped; never keyed rows such as roots).
    pub messages: u64,
    /// Remembered delivery keys (Events API ids, signed hooks).
    pub seen: u64,
    /// Rate-limit rows of users idle since, and replicas not seen since.
    pub other: u64,
}

/// The SQL condition (on `jobs`) of a job whose lease ran out at `now` (`?now`, Unix ms):
/// queued or running, and its lease over, or without a lease and unchanged for
/// `lease_ms`. `now` is the placeholder of the backend (`?1`, `$1`).
pub(super) fn expired_condition(now: &str, lease_ms: i64) -> String {
    format!(
        "status IN ('queued', 'running') AND (lease_until < {now} \
         OR (lease_until IS NULL AND updated_at * 1000 + {lease_ms} < {now}))"
    )
}

/// The SQL condition (on `jobs`) of a job that replica `owner` (the backend's
/// placeholder) still runs: queued or running, and leased to it. A job another replica has
/// ended (it found the lease over and reported the job interrupted) no longer matches, so
/// the late writes of the replica that was cut off are refused
/// ([`super::Store::change_leased_job`]).
pub(super) fn held_condition(owner: &str) -> String {
    format!("status IN ('queued', 'running') AND lease_owner = {owner}")
}

/// The GCRA update of the limit's row, as one upsert (`max` is the backend's
/// two-argument maximum): one command per `interval` ms, bursts of `burst`. `arg(n)` is
/// the backend's n-th placeholder (typed where the backend needs it): 1 key, 2 now, 3
/// interval, 4 burst. Returns `refused`.
pub(super) fn rate_upsert(arg: impl Fn(u8) -> String, max: &str) -> String {
    let (key, now, interval, burst) = (arg(1), arg(2), arg(3), arg(4));
    let next = format!("{max}(r.tat, {now}) + {interval}");
    let fits = format!("{next} - {now} <= {interval} * {burst}");
    format!(
        "INSERT INTO rate_limits AS r (key, tat, refused) VALUES ({key}, {now} + {interval}, 0) \
         ON CONFLICT (key) DO UPDATE SET \
           tat = CASE WHEN {fits} THEN {next} ELSE r.tat END, \
           refused = CASE WHEN {fits} THEN 0 ELSE r.refused + 1 END \
         RETURNING refused"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_in_a_row_are_told_once() {
        assert_eq!(Admission::from_refused(0), Admission::Allowed);
        assert_eq!(Admission::from_refused(1), Admission::Refused);
        assert_eq!(Admission::from_refused(7), Admission::Silent);
    }

    #[test]
    fn this_process_has_an_id_per_start() {
        let a = Replica::this_process(1);
        let b = Replica::this_process(2);
        assert_ne!(a.id, b.id);
        assert_eq!(a.pid, i64::from(std::process::id()));
        assert!(!a.host.is_empty());
    }
}
