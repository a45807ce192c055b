//! What `corral migrate` carries from one store to another: every row a store holds, ids
//! included, and the counts of what a copy wrote. Plain data, read by the SQLite side and
//! written by the PostgreSQL side (`copy.rs` joins them).
//!
//! Carried: the lock and its history, jobs, their threads' roots, the audit log, deploy
//! reports and the hosts fan-out deploys expect, remembered delivery keys (Slack event ids, signed hooks), the whole outbox
//! (delivered rows keep their `ts`, so threads and cards go on being edited; pending
//! rows are still sent, once) with its pacing, scheduled firings (a digest or a reminder
//! already sent is not sent again after the move) and approvals with their votes.
//! Not carried, because they belong to the processes of the old store: the replicas'
//! heartbeats, job leases (a job the old process was running is reported interrupted by
//! the new replicas, as after any crash) and the per-user command budgets (a minute's
//! worth of state).

use super::outbox::OutboxRow;
use super::{AuditEntry, DeployReport, FiringClaim, JobRecord, LockHistoryEntry};
use crate::job::approval::{ApprovalRecord, Vote};
use crate::lock::LockState;

/// An outbox row with the lease a sender held on it (a row leased when the old process
/// stopped comes back "unknown" to the next sender, which looks before posting again).
pub(super) struct OutboxCopy {
    pub(super) row: OutboxRow,
    pub(super) lease_owner: Option<String>,
    pub(super) lease_until: Option<i64>,
}

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
    /// Every outbox row, in id order (empty before schema version 3).
    pub(super) outbox: Vec<OutboxCopy>,
    /// The sender's pacing: `(scope, not before)`.
    pub(super) pacing: Vec<(String, i64)>,
    /// Claimed firings (empty before schema version 4).
    pub(super) firings: Vec<FiringClaim>,
    /// Approvals and every round's votes (empty before schema version 6).
    pub(super) approvals: Vec<ApprovalRecord>,
    pub(super) votes: Vec<Vote>,
    /// The hosts fan-out deploys expect reports from: `(job, host)` (empty before
    /// schema version 7).
    pub(super) deploy_hosts: Vec<(i64, String)>,
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
    /// Outbox rows, and of them how many were not delivered yet.
    pub outbox: usize,
    pub outbox_pending: usize,
    pub firings: usize,
    pub approvals: usize,
    pub votes: usize,
    pub deploy_hosts: usize,
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
        writeln!(f, "expected deploy hosts: {}", self.deploy_hosts)?;
        writeln!(f, "delivery keys: {}", self.delivery_keys)?;
        writeln!(
            f,
            "outbox rows: {} ({} not delivered yet)",
            self.outbox, self.outbox_pending
        )?;
        writeln!(f, "scheduled firings: {}", self.firings)?;
        writeln!(f, "approvals: {}", self.approvals)?;
        writeln!(f, "votes: {}", self.votes)?;
        write!(
            f,
            "not copied (per process): replica heartbeats, job leases, command budgets"
        )
    }
}
