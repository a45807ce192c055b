//! What `corral migrate` carries from one store to another: every row a store holds, ids
//! included, and the counts of what a copy wrote. Plain data, read by the SQLite side and
//! written by the PostgreSQL side (`copy.rs` joins them).

use super::{AuditEntry, DeployReport, JobRecord, LockHistoryEntry};
use crate::lock::LockState;

/// Everything a store holds, ids included.
pub(super) struct Dump {
    pub(super) lock: LockState,
    pub(super) history: Vec<(i64, LockHistoryEntry)>,
    pub(super) jobs: Vec<JobRecord>,
    /// `(job, channel, ts)`
    pub(super) messages: Vec<(i64, String, String)>,
    pub(super) audit: Vec<(i64, AuditEntry)>,
    pub(super) reports: Vec<DeployReport>,
    /// Delivery keys still remembered: `(key, at)`.
    pub(super) seen: Vec<(String, i64)>,
}

/// What a copy wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub lock: LockState,
    pub lock_history: usize,
    pub jobs: usize,
    pub messages: usize,
    pub audit: usize,
    pub deploy_reports: usize,
    pub delivery_keys: usize,
}

impl std::fmt::Display for CopyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = |h: &Option<crate::lock::Holder>| match h {
            Some(h) => format!("by {}", h.who),
            None => "no".to_string(),
        };
        writeln!(
            f,
            "lock: running {}, blocked {}",
            held(&self.lock.running),
            held(&self.lock.blocked)
        )?;
        writeln!(f, "lock changes: {}", self.lock_history)?;
        writeln!(f, "jobs: {}", self.jobs)?;
        writeln!(f, "message ids: {}", self.messages)?;
        writeln!(f, "audit lines: {}", self.audit)?;
        writeln!(f, "deploy reports: {}", self.deploy_reports)?;
        write!(f, "delivery keys: {}", self.delivery_keys)
    }
}
