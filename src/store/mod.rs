//! The store: everything corral must not forget (SPEC §7) — the lock and its history,
//! jobs and their Slack message ids, the audit log, the Events API dedupe set.
//!
//! One small trait, [`Store`], so the embedded SQLite store and a shared database for
//! several replicas are two implementations of the same thing. Calls are short and
//! synchronous: each is one SQLite statement or transaction of a few microseconds, so
//! handlers call them directly rather than paying for a thread hop.

mod sqlite;

use serde::{Deserialize, Serialize};

pub use sqlite::SqliteStore;

use crate::job::{JobStatus, Outcome};
use crate::lock::{LockAction, LockState, Refusal};

/// A store failure. Carries the driver's message; never a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("cannot open the database {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Checks a `CORRAL_DATABASE_URL` without opening it.
pub fn validate_url(url: &str) -> std::result::Result<(), String> {
    sqlite::path_of(url).map(|_| ())
}

/// Opens the store named by a database URL.
pub fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    Ok(std::sync::Arc::new(SqliteStore::open(url)?))
}

/// One lock change, as kept in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHistoryEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub reason: String,
    /// `slack`, `api`, `cli`, `releasestatus`.
    pub source: String,
    pub forced: bool,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: i64,
    /// `upgrade-catalog`, `upgrade-image`, `deploy`.
    pub kind: String,
    /// The command as it would be typed again (reparsed after a restart).
    pub command: String,
    pub requested_by: String,
    pub source: String,
    /// The channel its thread lives in, if any.
    pub channel: Option<String>,
    pub status: JobStatus,
    pub done: u32,
    pub failed: u32,
    pub total: u32,
    pub created_at: i64,
    pub updated_at: i64,
    pub outcome: Option<Outcome>,
}

/// What is needed to create a job.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub command: String,
    pub requested_by: String,
    pub source: String,
    pub channel: Option<String>,
}

/// One audit-log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
    pub source: String,
}

/// One host's result for a deploy job, as posted by `corral agent --report-url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployReport {
    pub job_id: i64,
    pub host: String,
    pub ok: bool,
    pub duration_ms: u64,
    /// The end of the host's deploy log.
    pub log_tail: String,
    pub error: Option<String>,
    /// The Consul event id the host applied, if any.
    pub event_id: Option<String>,
    pub at: i64,
}

/// The result of a lock change: the state before and after, or why it was refused.
pub type LockChange = std::result::Result<(LockState, LockState), Refusal>;

/// Everything corral keeps.
pub trait Store: Send + Sync {
    /// Whether the database answers (readiness).
    fn ping(&self) -> Result<()>;

    /// The lock as it is now.
    fn lock_state(&self) -> Result<LockState>;
    /// Applies a lock change atomically: reads the state, calls `decide`, writes the new
    /// state and a history row (and an audit row when forced) in one transaction.
    fn change_lock(
        &self,
        action: &LockAction,
        source: &str,
        actor: &str,
        decide: &mut dyn FnMut(&LockState) -> std::result::Result<LockState, Refusal>,
    ) -> Result<LockChange>;
    /// The newest `n` lock changes, newest first.
    fn lock_history(&self, n: usize) -> Result<Vec<LockHistoryEntry>>;

    /// Creates a job whatever the lock says (recovery tools, tests).
    fn create_job(&self, job: &NewJob, now: i64) -> Result<JobRecord> {
        self.create_job_gated(job, now, &mut |_| Ok(Vec::new()))?
            .map_err(StoreError::Corrupt)
    }
    /// Creates a job only if `gate` allows it given the lock, in one transaction, so a
    /// `block` cannot slip between the check and the job. `gate` returns the refusal
    /// text, or the audit lines to write with the job (e.g. a forced pass).
    fn create_job_gated(
        &self,
        job: &NewJob,
        now: i64,
        gate: &mut dyn FnMut(&LockState) -> std::result::Result<Vec<AuditEntry>, String>,
    ) -> Result<std::result::Result<JobRecord, String>>;
    fn job(&self, id: i64) -> Result<Option<JobRecord>>;
    /// The newest `limit` jobs, newest first.
    fn jobs(&self, limit: usize) -> Result<Vec<JobRecord>>;
    /// Jobs that were queued or running (after a crash: interrupted).
    fn unfinished_jobs(&self) -> Result<Vec<JobRecord>>;
    fn set_job_status(&self, id: i64, status: JobStatus, now: i64) -> Result<()>;
    fn set_job_progress(&self, id: i64, done: u32, failed: u32, total: u32, now: i64)
    -> Result<()>;
    fn finish_job(&self, id: i64, status: JobStatus, outcome: &Outcome, now: i64) -> Result<()>;

    /// Remembers the root message of a job's thread in a channel.
    fn set_message(&self, job: i64, channel: &str, ts: &str) -> Result<()>;
    /// The root messages of a job's thread: `(channel, ts)`.
    fn messages(&self, job: i64) -> Result<Vec<(String, String)>>;

    fn audit(&self, entry: &AuditEntry) -> Result<()>;
    /// The newest `limit` audit lines, newest first.
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>>;

    /// Records an Events API `event_id`; false if it was seen before (a retry).
    /// Ids older than a day are forgotten.
    fn first_delivery(&self, event_id: &str, now: i64) -> Result<bool>;

    /// Stores a host's deploy report; false if that host already reported for the job
    /// (the first report wins).
    fn add_deploy_report(&self, report: &DeployReport) -> Result<bool>;
    /// A deploy job's host reports, oldest first.
    fn deploy_reports(&self, job: i64) -> Result<Vec<DeployReport>>;
}
