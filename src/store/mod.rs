//! The store: everything corral must not forget (SPEC §7) — the lock and its history,
//! jobs, the outbox of messages (and the Slack ids of those delivered), the audit log, the
//! Events API dedupe set, deploy reports.
//!
//! One async, object-safe trait, [`Store`], with two implementations picked by the
//! database URL's scheme: the embedded SQLite store (`sqlite://`, one process) and
//! PostgreSQL (`postgres://`, any number of replicas sharing one database). No call
//! blocks an async worker: SQLite runs on a thread of its own ([`sqlite`]), PostgreSQL
//! is reached through an async connection pool ([`postgres`]).
//!
//! A decision that must be atomic (a lock change, a job passing the lock gate) is handed
//! to the store as a pure, owned [`Decide`] function plus the rows to write with it. The
//! store reads the current state, calls the function, and writes its result in the same
//! transaction; a backend that can fail a transaction on a serialisation conflict simply
//! reads and decides again. Deciders never do I/O and never read a clock: the time is
//! captured when they are made.
//!
//! **The outbox** ([`outbox`]) is part of the same transactions: a decision's
//! [`Effects::messages`] are written with it, so a change and what corral says about it
//! are committed together or not at all.

mod copy;
mod dump;
pub mod outbox;
mod pg_approval;
mod pg_error;
mod pg_outbox;
mod pg_replicas;
mod pg_shared;
mod postgres;
pub mod replicas;
mod sqlite;
mod sqlite_approval;
mod sqlite_outbox;
mod sqlite_replicas;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use copy::copy;
pub use dump::CopyReport;
pub use outbox::{
    Delivery, Enqueued, NewMessage, OutboxRow, OutboxStats, Role, RowKind, RowState, Settle, Thread,
};
pub use postgres::PostgresStore;
pub use replicas::{Admission, Pruned, Replica};
pub use sqlite::SqliteStore;

use crate::door::Source;
use crate::job::approval::{ApprovalRecord, Vote};
use crate::job::{JobKind, JobStatus, Outcome};
use crate::lock::{LockState, Refusal};

/// How long delivery keys (Events API ids, signed hooks) are remembered at least, whatever
/// the retention: Slack retries an event for about five minutes, and Delayed Events for up
/// to 24 hours.
pub(crate) const DEDUPE_WINDOW: Duration = Duration::from_secs(25 * 3600);

/// A store failure. Carries the driver's message; never a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(String),
    #[error("cannot open the database {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database cannot be reached or did not answer in time; worth retrying later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("the store has shut down")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

pub(crate) type Result<T> = std::result::Result<T, StoreError>;

/// A pure decision over the current state `S`: what to write (`T`), or why not (`R`).
/// Called again when a transaction is retried, so it must not have side effects.
pub(crate) type Decide<S, T, R> = Box<dyn Fn(&S) -> std::result::Result<T, R> + Send + Sync>;

/// Rows a decision writes beside its own, in the same transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub audit: Vec<AuditEntry>,
    /// Messages to deliver (outbox rows): posts, edits (coalesced into a pending row of the
    /// same key), ephemeral replies, response_url answers.
    pub messages: Vec<NewMessage>,
}

impl Effects {
    /// Effects that only send these messages.
    pub fn messages(messages: Vec<NewMessage>) -> Effects {
        Effects {
            audit: Vec::new(),
            messages,
        }
    }
}

/// A change to a job, written with its [`Effects`] (e.g. the root edit that shows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobChange {
    Status(JobStatus),
    Progress {
        done: u32,
        failed: u32,
        total: u32,
    },
    Finish {
        status: JobStatus,
        outcome: Outcome,
    },
    /// Only the effects (a thread reply).
    Nothing,
}

/// What a lock change writes: the new state, its history row and its effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockDecision {
    pub state: LockState,
    pub history: LockHistoryEntry,
    pub effects: Effects,
}

/// The result of a lock change: the state before and what was written, or the refusal.
pub(crate) type LockChange = std::result::Result<(LockState, LockDecision), Refusal>;

/// What an approval decision sees, read in its transaction: the job, its approval (if
/// one was opened), the current round's votes, and the lock (for the gate the completing
/// vote re-applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ballot {
    pub job: JobRecord,
    pub approval: Option<ApprovalRecord>,
    pub votes: Vec<Vote>,
    pub lock: LockState,
}

/// What an approval decision writes: the approval's new row (inserted or replaced), the
/// vote (keyed by job, round and voter), a change to the job, and the effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalDecision {
    /// When it was made (Unix seconds): the job's `updated_at` if it changes the job.
    pub at: i64,
    pub approval: ApprovalRecord,
    pub vote: Option<Vote>,
    pub job: Option<JobChange>,
    pub effects: Effects,
}

/// A decision that was written: what it saw, what it wrote, and how many times the
/// transaction ran (more than 1: it met a conflict and was decided again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub before: Ballot,
    pub decision: ApprovalDecision,
    pub attempts: u32,
}

/// One scheduled firing, claimed once for every process sharing the store (a freeze
/// window's entry or exit, a digest, a lock reminder; keys from [`crate::schedule`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiringClaim {
    /// `digest:<channel>:<expr>@<zone>:<unix>`, `freeze:<name>:<start>:enter`, …
    pub key: String,
    /// What fired: the key without its time (`digest:…@<zone>`, `freeze:<name>`,
    /// `remind:<start>`), so the latest firing of one schedule can be found.
    pub schedule: String,
    /// The firing's time, Unix seconds.
    pub at: i64,
    /// `sent`, `late`, `skipped`, `enter`, `exit`, `reminded`.
    pub outcome: String,
    /// When it was claimed, Unix seconds.
    pub claimed_at: i64,
}

/// What [`Store::claim_firing`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Claimed now, with its effects.
    Now,
    /// Claimed before, by this or another process: nothing written.
    Before,
    /// The decider declined (why): nothing written.
    Declined(String),
}

/// Which implementation a database URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a URL's scheme names: `sqlite:`, or `postgres://` / `postgresql://`.
    pub(crate) fn of(url: &str) -> std::result::Result<Backend, String> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("sqlite") => Ok(Backend::Sqlite),
            Some("postgres" | "postgresql") => Ok(Backend::Postgres),
            _ => Err(format!(
                "{:?}: use sqlite://PATH, sqlite::memory: or postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                crate::text::redact_url(url)
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// How a networked database is reached (`CORRAL_DATABASE_*`). SQLite ignores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Connections per process.
    pub pool_size: usize,
    /// Opening one connection: TCP, TLS and authentication.
    pub connect_timeout: Duration,
    /// Waiting for a free connection when all are busy.
    pub pool_timeout: Duration,
    /// One store call (a statement or a whole decision); also the server's
    /// `statement_timeout`, `lock_timeout` and `idle_in_transaction_session_timeout`.
    pub statement_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            pool_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// Checks a `CORRAL_DATABASE_URL` without opening it.
pub(crate) fn validate_url(url: &str) -> std::result::Result<(), String> {
    match Backend::of(url)? {
        Backend::Sqlite => sqlite::path_of(url).map(|_| ()),
        Backend::Postgres => postgres::Target::parse(url).map(|_| ()),
    }
}

/// Opens (creating and migrating if needed) the store named by a database URL, with the
/// default [`Settings`].
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    open_with(url, &Settings::default()).await
}

/// Opens (creating and migrating if needed) the store named by a database URL.
pub async fn open_with(url: &str, settings: &Settings) -> Result<std::sync::Arc<dyn Store>> {
    let backend = Backend::of(url).map_err(|reason| StoreError::Open {
        url: crate::text::redact_url(url),
        reason,
    })?;
    Ok(match backend {
        Backend::Sqlite => std::sync::Arc::new(SqliteStore::open(url).await?),
        Backend::Postgres => std::sync::Arc::new(PostgresStore::open(url, settings).await?),
    })
}

/// What `corral check` says about a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    pub backend: Backend,
    /// The schema version the database is at.
    pub schema_version: u32,
    /// The newest schema version this build knows. A database ahead of it was migrated by
    /// a newer replica (a rolling upgrade); additive migrations keep this one working.
    pub known_version: u32,
}

/// One lock change, as kept in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHistoryEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub reason: String,
    pub source: Source,
    pub forced: bool,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: i64,
    pub kind: JobKind,
    /// The command as it would be typed again (reparsed after a restart).
    pub command: String,
    pub requested_by: String,
    pub source: Source,
    /// The channel its thread lives in, if any.
    pub channel: Option<String>,
    pub status: JobStatus,
    pub done: u32,
    pub failed: u32,
    pub total: u32,
    pub created_at: i64,
    pub updated_at: i64,
    pub outcome: Option<Outcome>,
    /// Why a message of the job's thread could not be delivered (the newest reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
}

/// What is needed to create a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub kind: JobKind,
    pub command: String,
    pub requested_by: String,
    pub source: Source,
    pub channel: Option<String>,
    pub now: i64,
}

/// One audit-log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
    pub source: Source,
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

/// Everything corral keeps.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether the database answers (readiness).
    async fn ping(&self) -> Result<()>;
    /// The backend and the schema version the database is at.
    async fn info(&self) -> Result<StoreInfo>;

    /// The lock as it is now.
    async fn lock_state(&self) -> Result<LockState>;
    /// Applies a lock change atomically: reads the state, calls `decide`, writes the new
    /// state, its history row and its effects in one transaction.
    async fn change_lock(
        &self,
        decide: Decide<LockState, LockDecision, Refusal>,
    ) -> Result<LockChange>;
    /// The newest `n` lock changes, newest first.
    async fn lock_history(&self, n: usize) -> Result<Vec<LockHistoryEntry>>;

    /// Creates a job if `gate` allows it given the lock, in one transaction, so a `block`
    /// cannot slip between the check and the job. `gate` returns the refusal text, or the
    /// effects to write with the job (e.g. the audit line of a forced pass). A `job N
    /// created` audit line is always written with it.
    async fn create_job(
        &self,
        job: NewJob,
        gate: Decide<LockState, Effects, String>,
    ) -> Result<std::result::Result<JobRecord, String>>;
    async fn job(&self, id: i64) -> Result<Option<JobRecord>>;
    /// The newest `limit` jobs, newest first.
    async fn jobs(&self, limit: usize) -> Result<Vec<JobRecord>>;
    /// Jobs that were queued, awaiting approval or running (after a crash: interrupted).
    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>>;
    async fn set_job_status(&self, id: i64, status: JobStatus, now: i64) -> Result<()>;
    async fn set_job_progress(
        &self,
        id: i64,
        done: u32,
        failed: u32,
        total: u32,
        now: i64,
    ) -> Result<()>;
    async fn finish_job(
        &self,
        id: i64,
        status: JobStatus,
        outcome: &Outcome,
        now: i64,
    ) -> Result<()>;
    /// Changes a job and writes `effects` (its root edit, a reply) in one transaction.
    async fn change_job(
        &self,
        id: i64,
        change: JobChange,
        now: i64,
        effects: Effects,
    ) -> Result<()>;

    /// [`Store::change_job`] for the replica running the job: written (the change and its
    /// effects, in one transaction) only while `owner` holds the job's lease and the job
    /// is queued or running. False, writing nothing, once the job is no longer this
    /// replica's: another replica found its lease over (this one was cut off from the
    /// database for longer than the lease) and reported it interrupted, so a late final
    /// write or root edit cannot overwrite what that replica told the thread.
    async fn change_leased_job(
        &self,
        id: i64,
        owner: &str,
        change: JobChange,
        now: i64,
        effects: Effects,
    ) -> Result<bool>;

    /// Remembers the root message of a job's thread (as a delivered outbox row keyed
    /// `job:<id>:root`; a database from before the outbox has its roots moved there).
    async fn set_message(&self, job: i64, channel: &str, ts: &str) -> Result<()>;
    /// The delivered root of a job's thread: `(channel, ts)`.
    async fn messages(&self, job: i64) -> Result<Vec<(String, String)>>;

    /// Writes messages on their own, in one transaction (see [`Effects::messages`]).
    async fn enqueue(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>>;
    /// What the sender may do next: the head (lowest `seq`) of every lane's pending rows,
    /// and every delivered row with a newer version to edit in; rows another sender holds
    /// a live lease on are left out. Oldest wish first; at most `limit`.
    async fn outbox_work(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxRow>>;
    /// Takes a lease on row `id` for `owner` until `now_ms + lease_ms`, and returns it as it
    /// is now, or `None` if there is nothing to do or another sender holds it. A row whose
    /// previous lease was never settled (a crash mid-call) comes back with `unknown` set.
    async fn outbox_claim(
        &self,
        id: i64,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<OutboxRow>>;
    /// Records the result of an attempt and ends the lease (and, for a failure of a job's
    /// message, notes the reason on the job).
    async fn outbox_settle(&self, id: i64, owner: &str, settle: Settle, now_ms: i64) -> Result<()>;
    /// One row by key.
    async fn outbox_get(&self, key: &str) -> Result<Option<OutboxRow>>;
    /// Rows in id order: all, or a job's; at most `limit`.
    async fn outbox_rows(&self, job: Option<i64>, limit: usize) -> Result<Vec<OutboxRow>>;
    /// The newest `limit` posts delivered in `channel` (a `ts` stored), in id order: what
    /// the channel shows (the playground's history).
    async fn outbox_channel(&self, channel: &str, limit: usize) -> Result<Vec<OutboxRow>>;
    /// Depth, oldest wish, dead and failed rows.
    async fn outbox_stats(&self) -> Result<OutboxStats>;
    /// The sender's pacing: `(scope, not before, Unix ms)` for every scope.
    async fn pacing(&self) -> Result<Vec<(String, i64)>>;
    /// Pushes a scope's "not before" to `not_before_ms` (never earlier than it was).
    async fn push_pacing(&self, scope: &str, not_before_ms: i64) -> Result<()>;
    /// Takes one call slot in every scope at once: if none of them is blocked past
    /// `now_ms`, pushes each scope's "not before" to `now_ms` plus its interval (ms) and
    /// answers `Ok(())`; else changes nothing and answers when the last of them frees up
    /// (Unix ms). Atomic across processes, so senders on several replicas share Slack's
    /// per-app budget instead of each spending it.
    async fn take_pacing(
        &self,
        scopes: Vec<(String, i64)>,
        now_ms: i64,
    ) -> Result<std::result::Result<(), i64>>;

    /// Decides about a job's approval in one transaction keyed by the job (opening it,
    /// a vote, expiry, a reminder, asking again): reads the [`Ballot`], calls `decide`,
    /// writes its [`ApprovalDecision`]. `Ok(Err(_))`: refused (or no such job), nothing
    /// written.
    async fn decide_approval(
        &self,
        job: i64,
        decide: Decide<Ballot, ApprovalDecision, String>,
    ) -> Result<std::result::Result<Decided, String>>;
    /// A job's approval and its current round's votes (oldest first).
    async fn approval(&self, job: i64) -> Result<Option<(ApprovalRecord, Vec<Vote>)>>;
    /// Approvals still pending, oldest first.
    async fn pending_approvals(&self) -> Result<Vec<ApprovalRecord>>;

    async fn audit(&self, entry: &AuditEntry) -> Result<()>;
    /// The newest `limit` audit lines, newest first.
    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>>;
    /// Audit lines at or after `since` (Unix seconds) and, if given, of one actor; newest
    /// first, at most `limit`.
    async fn audit_query(
        &self,
        since: i64,
        actor: Option<String>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>>;

    /// Records a delivery key (an Events API `event_id`, a signed hook); false if it was
    /// seen before (a retry or a replay). Keys are forgotten by [`Store::prune`].
    async fn first_delivery(&self, key: &str, now: i64) -> Result<bool>;

    /// Claims a scheduled firing: unless the key was claimed before (by this or another
    /// process), calls `decide` with the lock as it is in the same transaction and writes
    /// the claim with the effects it returns (the firing's messages). A decider that
    /// declines (a reminder for a release stopped meanwhile) writes nothing.
    async fn claim_firing(
        &self,
        claim: FiringClaim,
        decide: Decide<LockState, Effects, String>,
    ) -> Result<Claimed>;
    /// The latest claimed firing of a schedule (greatest `at`; of two at the same time,
    /// `enter` before `exit`, then by key), if any.
    async fn latest_firing(&self, schedule: &str) -> Result<Option<FiringClaim>>;

    /// Stores a host's deploy report; false if that host already reported for the job
    /// (the first report wins).
    async fn add_deploy_report(&self, report: &DeployReport) -> Result<bool>;
    /// A deploy job's host reports, oldest first.
    async fn deploy_reports(&self, job: i64) -> Result<Vec<DeployReport>>;
    /// Records the hosts a fan-out deploy job expects reports from (before it fires its
    /// event). Idempotent; hosts are only ever added.
    async fn expect_deploy_hosts(&self, job: i64, hosts: &[String]) -> Result<()>;
    /// Whether `host` is one the job expects: `None` when no set was recorded for the
    /// job (its event has not been fired, or it is not a fan-out).
    async fn deploy_host_expected(&self, job: i64, host: &str) -> Result<Option<bool>>;

    /// Says that `replica` is alive at `now_ms` (its row in `replicas`) and renews the
    /// lease of every queued or running job it holds to `lease_until_ms`. Answers how
    /// many leases it renewed.
    async fn heartbeat(&self, replica: &Replica, now_ms: i64, lease_until_ms: i64) -> Result<u64>;
    /// Replicas whose newest heartbeat is at or after `since_ms`, most recent first.
    async fn replicas(&self, since_ms: i64) -> Result<Vec<Replica>>;
    /// Claims job `id` for replica `owner`, with a lease until `lease_until_ms`: only a
    /// queued or running job that no other replica holds. False if it cannot be claimed.
    async fn claim_job(&self, id: i64, owner: &str, lease_until_ms: i64) -> Result<bool>;
    /// Queued or running jobs whose lease ran out before `now_ms` (a job without a lease
    /// counts as expired once `lease_ms` passed since its last change), oldest first, at
    /// most 100.
    async fn expired_jobs(&self, now_ms: i64, lease_ms: i64) -> Result<Vec<JobRecord>>;
    /// Ends job `id` as interrupted with `outcome` and writes `effects` (its thread's
    /// note), in one transaction, only if its lease is still expired (as
    /// [`Store::expired_jobs`] has it). False, writing nothing, when another replica was
    /// first or the job's replica renewed its lease.
    async fn interrupt_job(
        &self,
        id: i64,
        now_ms: i64,
        lease_ms: i64,
        outcome: Outcome,
        effects: Effects,
    ) -> Result<bool>;
    /// Takes one command from `key`'s budget, shared by every replica (GCRA: one command
    /// per `interval_ms` on average, bursts of `burst`), in one statement.
    async fn take_rate(
        &self,
        key: &str,
        now_ms: i64,
        interval_ms: i64,
        burst: u32,
    ) -> Result<Admission>;
    /// Deletes what is no longer needed: outbox rows without a key that are delivered,
    /// failed, dead or dropped and unchanged since `before_ms` (keyed rows — job roots —
    /// are kept, so old threads can still be edited and a key is never posted twice),
    /// rate-limit rows idle since `before_ms`, replicas not seen since `before_ms`, and
    /// delivery keys seen before `seen_before` (Unix seconds).
    async fn prune(&self, before_ms: i64, seen_before: i64) -> Result<Pruned>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_picks_the_backend() {
        for (url, want) in [
            ("sqlite://corral.db", Backend::Sqlite),
            ("sqlite::memory:", Backend::Sqlite),
            ("postgres://u@h/d", Backend::Postgres),
            ("postgresql://u@h/d", Backend::Postgres),
            ("PostgreSQL://u@h/d", Backend::Postgres),
        ] {
            assert_eq!(Backend::of(url), Ok(want), "{url}");
        }
        for url in ["mysql://u:p@h/d", "corral.db", "", "postgres"] {
            assert!(Backend::of(url).is_err(), "{url}");
        }
        assert!(validate_url("postgres://u:p@h/d?sslmode=verify-full").is_ok());
        let e = validate_url("postgres://u:hunter2@h/d?sslmode=nope").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[tokio::test]
    async fn a_bad_url_is_an_open_error_without_the_password() {
        let e = open("postgres://u:hunter2@h/d?sslmode=nope")
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslmode") && !e.contains("hunter2"), "{e}");
        let e = open("mysql://u:hunter2@h/d")
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
