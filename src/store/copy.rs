//! `corral migrate`: everything a SQLite store holds, copied into an empty PostgreSQL
//! one, so a team moving to several replicas keeps its lock, history, audit log and jobs
//! (with their Slack message ids: the bot goes on editing the same threads).
//!
//! The source is read in one read transaction without being changed (it is not even
//! migrated); every row is parsed as the store would read it, so a corrupt row stops the
//! copy before anything is written. The target is written in one transaction and must be
//! empty; ids are kept, and new rows continue after them.

use super::{AuditEntry, Backend, DeployReport, JobRecord, LockHistoryEntry, Settings};
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

/// Copies the SQLite store at `from` into the empty PostgreSQL store at `to` (migrating
/// the target's schema first). Errors name the side at fault and never a password.
pub async fn copy(
    from: &str,
    to: &str,
    settings: &Settings,
) -> std::result::Result<CopyReport, String> {
    let shown_to = crate::text::redact_url(to);
    match (Backend::of(from)?, Backend::of(to)?) {
        (Backend::Sqlite, Backend::Postgres) => {}
        (a, b) => {
            return Err(format!(
                "copies from SQLite to PostgreSQL only (--from sqlite://PATH --to postgres://…), not from {} to {}",
                a.name(),
                b.name()
            ));
        }
    }
    let owned = from.to_string();
    let dump = tokio::task::spawn_blocking(move || super::sqlite::dump(&owned))
        .await
        .map_err(|e| format!("reading {from}: {e}"))?
        .map_err(|e| format!("reading {from}: {e}"))?;
    let target = super::PostgresStore::open(to, settings)
        .await
        .map_err(|e| format!("{shown_to}: {e}"))?;
    target
        .load(&dump)
        .await
        .map_err(|e| format!("writing {shown_to}: {e}"))
}
