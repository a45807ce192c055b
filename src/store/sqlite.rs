//! The embedded store: one SQLite file in WAL mode, migrated at open.
//!
//! WAL with `synchronous=NORMAL` keeps every committed transaction across a `kill -9` of
//! corral (only an OS crash or power loss can lose the last commits), and lets readers
//! run beside the writer.
//!
//! **Off the async workers.** The connection lives on one dedicated thread; every call
//! is a closure sent to it, and the caller awaits the answer. SQLite calls are short
//! (microseconds), but a database busy with another process (`corral exec` beside
//! `corral serve`) may wait up to the busy timeout: that wait happens on the store's
//! thread, never on a tokio worker answering Slack. One thread also means one writer, so
//! transactions never contend inside the process.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::mpsc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::oneshot;

use super::dump::Dump;
use super::replicas::{expired_condition, held_condition};
use super::sqlite_approval as approval;
use super::sqlite_outbox as outbox;
use super::sqlite_replicas as replicas;
use super::{Admission, Pruned, Replica};
use super::{
    ApprovalDecision, AuditEntry, Backend, Ballot, Claimed, Decide, Decided, DeployReport, Effects,
    Enqueued, FiringClaim, JobChange, JobRecord, LockChange, LockDecision, LockHistoryEntry,
    NewJob, NewMessage, OutboxRow, OutboxStats, Result, Settle, Store, StoreError, StoreInfo,
};
use crate::door::Source;
use crate::job::approval::{ApprovalRecord, Vote};
use crate::job::{JobKind, JobStatus, Outcome};
use crate::lock::{Holder, LockState, Refusal};

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
/// Additive only: a database written by any earlier release upgrades in place.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_deploy.sql"),
    include_str!("migrations/0003_outbox.sql"),
    include_str!("migrations/0004_firings.sql"),
    include_str!("migrations/0005_replicas.sql"),
    include_str!("migrations/0006_approvals.sql"),
    include_str!("migrations/0007_deploy_hosts.sql"),
];

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a database URL points: a file, or memory.
pub(super) fn path_of(url: &str) -> std::result::Result<Option<PathBuf>, String> {
    if url == "sqlite::memory:" || url == "sqlite://:memory:" {
        return Ok(None);
    }
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            format!("{url:?}: only sqlite://PATH (or sqlite::memory:) is supported by this build")
        })?;
    if rest.is_empty() {
        return Err(format!("{url:?} names no file"));
    }
    Ok(Some(PathBuf::from(rest)))
}

type Task = Box<dyn FnOnce(&mut Connection) + Send>;

/// The SQLite store: a handle to the thread that owns the connection.
pub struct SqliteStore {
    tasks: mpsc::Sender<Task>,
}

fn connect(url: &str) -> Result<Connection> {
    let open_err = |reason: String| StoreError::Open {
        url: url.to_string(),
        reason,
    };
    let conn = match path_of(url).map_err(open_err)? {
        None => Connection::open_in_memory()?,
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| open_err(format!("cannot create {}: {e}", dir.display())))?;
            }
            Connection::open(&path).map_err(|e| open_err(e.to_string()))?
        }
    };
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&conn)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `url`, on the store's own
    /// thread.
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let (tasks, inbox) = mpsc::channel::<Task>();
        let (ready, opened) = oneshot::channel();
        let owned = url.to_string();
        std::thread::Builder::new()
            .name("corral-sqlite".into())
            .spawn(move || {
                let mut conn = match connect(&owned) {
                    Ok(c) => {
                        let _ = ready.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                // Ends when every handle is dropped; the connection closes with it.
                while let Ok(task) = inbox.recv() {
                    task(&mut conn);
                }
            })
            .map_err(|e| StoreError::Open {
                url: url.to_string(),
                reason: format!("cannot start the store thread: {e}"),
            })?;
        opened.await.map_err(|_| StoreError::Closed)??;
        Ok(SqliteStore { tasks })
    }

    /// Runs `f` on the store's thread and waits for its answer without blocking the
    /// caller's thread. A panic inside `f` is an error for this call only.
    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let task: Task = Box::new(move |conn| {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(conn)))
                .unwrap_or_else(|_| Err(StoreError::Db("internal error in a store call".into())));
            let _ = tx.send(result);
        });
        self.tasks.send(task).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn migrate(conn: &Connection) -> Result<()> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(0);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database is at schema version {applied}, newer than this corral ({}); upgrade corral",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        conn.execute_batch(&format!(
            "BEGIN;\n{sql}\nPRAGMA user_version = {};\nCOMMIT;",
            i + 1
        ))?;
    }
    Ok(())
}

fn holder(by: Option<String>, reason: Option<String>, since: Option<i64>) -> Option<Holder> {
    by.map(|who| Holder {
        who,
        reason: reason.unwrap_or_default(),
        since: since.unwrap_or(0),
    })
}

pub(super) fn read_lock(conn: &Connection) -> Result<LockState> {
    Ok(conn.query_row(
        "SELECT running_by, running_reason, running_since, blocked_by, blocked_reason, blocked_since
         FROM lock_state WHERE id = 1",
        [],
        |r| {
            Ok(LockState {
                running: holder(r.get(0)?, r.get(1)?, r.get(2)?),
                blocked: holder(r.get(3)?, r.get(4)?, r.get(5)?),
            })
        },
    )?)
}

fn write_lock(conn: &Connection, s: &LockState) -> Result<()> {
    let (r, b) = (s.running.as_ref(), s.blocked.as_ref());
    conn.execute(
        "UPDATE lock_state SET running_by = ?1, running_reason = ?2, running_since = ?3,
             blocked_by = ?4, blocked_reason = ?5, blocked_since = ?6 WHERE id = 1",
        params![
            r.map(|h| &h.who),
            r.map(|h| &h.reason),
            r.map(|h| h.since),
            b.map(|h| &h.who),
            b.map(|h| &h.reason),
            b.map(|h| h.since),
        ],
    )?;
    Ok(())
}

fn insert_audit(conn: &Connection, e: &AuditEntry) -> Result<()> {
    conn.execute(
        "INSERT INTO audit (at, actor, action, detail, source) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![e.at, e.actor, e.action, e.detail, e.source.as_str()],
    )?;
    Ok(())
}

pub(super) fn write_effects(conn: &Connection, effects: &Effects) -> Result<Vec<Enqueued>> {
    for e in &effects.audit {
        insert_audit(conn, e)?;
    }
    outbox::insert(conn, &effects.messages)
}

pub(super) fn apply_job_change(
    conn: &Connection,
    id: i64,
    change: &JobChange,
    now: i64,
) -> Result<()> {
    match change {
        JobChange::Status(status) => {
            conn.execute(
                "UPDATE jobs SET status = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, status.as_str(), now],
            )?;
        }
        JobChange::Progress {
            done,
            failed,
            total,
        } => {
            conn.execute(
                "UPDATE jobs SET done = ?2, failed = ?3, total = ?4, updated_at = ?5 WHERE id = ?1",
                params![id, done, failed, total, now],
            )?;
        }
        JobChange::Finish { status, outcome } => {
            let text = serde_json::to_string(outcome)
                .map_err(|e| StoreError::Corrupt(format!("cannot encode outcome: {e}")))?;
            conn.execute(
                "UPDATE jobs SET status = ?2, outcome = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, status.as_str(), text, now],
            )?;
        }
        JobChange::Nothing => {}
    }
    Ok(())
}

/// A persisted enum's text back as the enum, or a `Corrupt` error naming the row.
pub(super) fn typed<T: std::str::FromStr>(
    what: &str,
    row: impl std::fmt::Display,
    text: &str,
) -> Result<T> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} of {row} is {text:?}")))
}

const JOB_COLUMNS: &str = "id, kind, command, requested_by, source, channel, status, done, failed, total, created_at, updated_at, outcome, delivery";

/// A job row as read, its persisted enums still text.
pub(super) struct RawJob {
    pub(super) id: i64,
    pub(super) kind: String,
    pub(super) command: String,
    pub(super) requested_by: String,
    pub(super) source: String,
    pub(super) channel: Option<String>,
    pub(super) status: String,
    pub(super) done: u32,
    pub(super) failed: u32,
    pub(super) total: u32,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) outcome: Option<String>,
    pub(super) delivery: Option<String>,
}

fn job_row(r: &Row) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        id: r.get(0)?,
        kind: r.get(1)?,
        command: r.get(2)?,
        requested_by: r.get(3)?,
        source: r.get(4)?,
        channel: r.get(5)?,
        status: r.get(6)?,
        done: r.get(7)?,
        failed: r.get(8)?,
        total: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        outcome: r.get(12)?,
        delivery: r.get(13)?,
    })
}

impl RawJob {
    pub(super) fn typed(self) -> Result<JobRecord> {
        let row = format!("job {}", self.id);
        let outcome = match self.outcome {
            None => None,
            Some(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("{row} outcome: {e}")))?,
            ),
        };
        Ok(JobRecord {
            id: self.id,
            kind: typed::<JobKind>("kind", &row, &self.kind)?,
            command: self.command,
            requested_by: self.requested_by,
            source: typed::<Source>("source", &row, &self.source)?,
            channel: self.channel,
            status: typed::<JobStatus>("status", &row, &self.status)?,
            done: self.done,
            failed: self.failed,
            total: self.total,
            created_at: self.created_at,
            updated_at: self.updated_at,
            outcome,
            delivery: self.delivery,
        })
    }
}

pub(super) fn jobs_where(conn: &Connection, tail: &str, param: i64) -> Result<Vec<JobRecord>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs {tail}"))?;
    let rows = stmt.query_map([param], job_row)?;
    rows.map(|r| r?.typed()).collect()
}

fn change_lock(
    conn: &mut Connection,
    decide: &Decide<LockState, LockDecision, Refusal>,
) -> Result<LockChange> {
    // IMMEDIATE: take the write lock before reading, so another process (corral exec
    // beside corral serve) cannot interleave a change.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let before = read_lock(&tx)?;
    let decision = match decide(&before) {
        Ok(d) => d,
        Err(refusal) => return Ok(Err(refusal)),
    };
    write_lock(&tx, &decision.state)?;
    let h = &decision.history;
    tx.execute(
        "INSERT INTO lock_history (at, actor, action, reason, source, forced) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![h.at, h.actor, h.action, h.reason, h.source.as_str(), h.forced],
    )?;
    write_effects(&tx, &decision.effects)?;
    tx.commit()?;
    Ok(Ok((before, decision)))
}

fn create_job(
    conn: &mut Connection,
    job: &NewJob,
    gate: &Decide<LockState, Effects, String>,
) -> Result<std::result::Result<JobRecord, String>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let lock = read_lock(&tx)?;
    let effects = match gate(&lock) {
        Ok(e) => e,
        Err(refusal) => return Ok(Err(refusal)),
    };
    tx.execute(
        "INSERT INTO jobs (kind, command, requested_by, source, channel, status, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        params![
            job.kind.as_str(),
            job.command,
            job.requested_by,
            job.source.as_str(),
            job.channel,
            JobStatus::Queued.as_str(),
            job.now
        ],
    )?;
    let id = tx.last_insert_rowid();
    write_effects(&tx, &effects)?;
    insert_audit(
        &tx,
        &AuditEntry {
            at: job.now,
            actor: job.requested_by.clone(),
            action: format!("job {id} created"),
            detail: job.command.clone(),
            source: job.source,
        },
    )?;
    let record = jobs_where(&tx, "WHERE id = ?1", id)?
        .pop()
        .ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished after insert")))?;
    tx.commit()?;
    Ok(Ok(record))
}

/// An approval decision's transaction: read the ballot, decide, write.
fn decide_approval(
    conn: &mut Connection,
    job: i64,
    decide: &Decide<Ballot, ApprovalDecision, String>,
) -> Result<std::result::Result<Decided, String>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let Some(record) = jobs_where(&tx, "WHERE id = ?1", job)?.pop() else {
        return Ok(Err(format!("There is no job #{job}.")));
    };
    let current = approval::read_approval(&tx, job)?;
    let votes = match &current {
        Some(a) => approval::read_votes(&tx, job, a.round)?,
        None => Vec::new(),
    };
    let before = Ballot {
        job: record,
        approval: current,
        votes,
        lock: read_lock(&tx)?,
    };
    let decision = match decide(&before) {
        Ok(d) => d,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if decision.approval.job_id != job {
        return Err(StoreError::Db(format!(
            "an approval decision for job {job} wrote job {}",
            decision.approval.job_id
        )));
    }
    approval::write_approval(&tx, &decision.approval)?;
    if let Some(v) = &decision.vote {
        approval::insert_vote(&tx, v)?;
    }
    write_effects(&tx, &decision.effects)?;
    if let Some(change) = &decision.job {
        apply_job_change(&tx, job, change, decision.at)?;
        // A job that waits for people (or was just approved) is nobody's: whichever
        // replica starts it next claims it.
        if matches!(
            change,
            JobChange::Status(JobStatus::AwaitingApproval | JobStatus::Queued)
        ) {
            tx.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE id = ?1",
                [job],
            )?;
        }
    }
    tx.commit()?;
    Ok(Ok(Decided {
        before,
        decision,
        attempts: 1,
    }))
}

/// Jobs whose lease ran out (see [`super::replicas`]).
fn expired_jobs(conn: &Connection, now_ms: i64, lease_ms: i64) -> Result<Vec<JobRecord>> {
    let tail = format!(
        "WHERE {} ORDER BY id LIMIT 100",
        expired_condition("?1", lease_ms.max(0))
    );
    jobs_where(conn, &tail, now_ms)
}

/// Ends an expired job as interrupted with its effects, if it is still expired.
fn interrupt_job(
    conn: &mut Connection,
    id: i64,
    now_ms: i64,
    lease_ms: i64,
    outcome: &Outcome,
    effects: &Effects,
) -> Result<bool> {
    let text = serde_json::to_string(outcome)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode outcome: {e}")))?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let sql = format!(
        "UPDATE jobs SET status = 'interrupted', outcome = ?2, updated_at = ?3
         WHERE id = ?4 AND {}",
        expired_condition("?1", lease_ms.max(0))
    );
    let n = tx.execute(&sql, params![now_ms, text, now_ms.div_euclid(1000), id])?;
    if n != 1 {
        return Ok(false);
    }
    write_effects(&tx, effects)?;
    tx.commit()?;
    Ok(true)
}

fn audit_row(r: &Row) -> rusqlite::Result<(AuditEntry, String)> {
    Ok((
        AuditEntry {
            at: r.get(0)?,
            actor: r.get(1)?,
            action: r.get(2)?,
            detail: r.get(3)?,
            source: Source::Api,
        },
        r.get(4)?,
    ))
}

fn deploy_report_row(row: &Row) -> rusqlite::Result<DeployReport> {
    Ok(DeployReport {
        job_id: row.get(0)?,
        host: row.get(1)?,
        ok: row.get(2)?,
        duration_ms: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
        log_tail: row.get(4)?,
        error: row.get(5)?,
        event_id: row.get(6)?,
        at: row.get(7)?,
    })
}

/// Everything in the SQLite database at `url`, read in one read transaction without
/// changing it (`corral migrate`). Every row is parsed as the store reads it. Long by
/// design: one `SELECT` per table, the mirror of the PostgreSQL side's `load`.
pub(super) fn dump(url: &str) -> Result<Dump> {
    let not_there = |reason: String| StoreError::Open {
        url: url.to_string(),
        reason,
    };
    let path = path_of(url)
        .map_err(not_there)?
        .ok_or_else(|| not_there("an in-memory database holds nothing to copy".into()))?;
    if !path.is_file() {
        return Err(not_there(format!("{} is not a file", path.display())));
    }
    let conn = Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| not_there(e.to_string()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < 1 {
        return Err(not_there("not a corral database (schema version 0)".into()));
    }
    if version as usize > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database is at schema version {version}, newer than this corral ({}); upgrade corral",
            MIGRATIONS.len()
        )));
    }
    let tx = conn.unchecked_transaction()?;
    let lock = read_lock(&tx)?;
    let mut stmt = tx.prepare(
        "SELECT id, at, actor, action, reason, source, forced FROM lock_history ORDER BY id",
    )?;
    let history = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, bool>(6)?,
            ))
        })?
        .map(|row| {
            let (id, at, actor, action, reason, source, forced) = row?;
            let source = typed("source", format!("lock change {id}"), &source)?;
            Ok((
                id,
                LockHistoryEntry {
                    at,
                    actor,
                    action,
                    reason,
                    source,
                    forced,
                },
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let jobs = if version >= 3 {
        jobs_where(&tx, "WHERE ?1 = ?1 ORDER BY id", 0)?
    } else {
        // `delivery` came with the outbox (version 3).
        let columns = JOB_COLUMNS.replace(", delivery", ", NULL");
        let mut stmt = tx.prepare(&format!(
            "SELECT {columns} FROM jobs WHERE ?1 = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([0], job_row)?;
        rows.map(|r| r?.typed()).collect::<Result<Vec<_>>>()?
    };
    // Since the outbox (version 3) a job's root is its delivered `job:<id>:root` row
    // (the old table's rows were moved there).
    let roots = if version >= 3 {
        "SELECT job_id, channel, ts FROM outbox
         WHERE key = 'job:' || job_id || ':root' AND ts IS NOT NULL AND job_id IS NOT NULL
         ORDER BY job_id, channel"
    } else {
        "SELECT job_id, channel, ts FROM messages ORDER BY job_id, channel"
    };
    let mut stmt = tx.prepare(roots)?;
    let messages = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt =
        tx.prepare("SELECT at, actor, action, detail, source, id FROM audit ORDER BY id")?;
    let audit = stmt
        .query_map([], |r| Ok((audit_row(r)?, r.get::<_, i64>(5)?)))?
        .map(|row| {
            let ((mut e, source), id) = row?;
            e.source = typed("source", format!("audit line {id}"), &source)?;
            Ok((id, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let reports = if version >= 2 {
        let mut stmt = tx.prepare(
            "SELECT job_id, host, ok, duration_ms, log_tail, error, event_id, at
             FROM deploy_reports ORDER BY job_id, at, host",
        )?;
        stmt.query_map([], deploy_report_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let mut stmt = tx.prepare("SELECT event_id, at FROM seen_events ORDER BY at, event_id")?;
    let seen = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut dump = Dump {
        lock,
        history,
        jobs,
        messages,
        audit,
        reports,
        seen,
        outbox: Vec::new(),
        pacing: Vec::new(),
        firings: Vec::new(),
        approvals: Vec::new(),
        votes: Vec::new(),
        deploy_hosts: Vec::new(),
    };
    dump_later_tables(&tx, version, &mut dump)?;
    Ok(dump)
}

/// The tables later schema versions added: the outbox and its pacing (3), firings (4),
/// approvals and votes (6), expected deploy hosts (7). Replicas, leases and command budgets (5) are per process and
/// stay behind (see [`Dump`]).
fn dump_later_tables(conn: &Connection, version: i64, dump: &mut Dump) -> Result<()> {
    if version >= 3 {
        dump.outbox = outbox::all_for_copy(conn)?;
        dump.pacing = outbox::pacing(conn)?;
    }
    if version >= 4 {
        let mut stmt = conn.prepare(
            "SELECT key, schedule, at, outcome, claimed_at FROM firings ORDER BY at, key",
        )?;
        dump.firings = stmt
            .query_map([], firing_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
    }
    if version >= 6 {
        (dump.approvals, dump.votes) = approval::all(conn)?;
    }
    if version >= 7 {
        let mut stmt =
            conn.prepare("SELECT job_id, host FROM deploy_hosts ORDER BY job_id, host")?;
        dump.deploy_hosts = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
    }
    Ok(())
}

fn firing_row(r: &Row) -> rusqlite::Result<FiringClaim> {
    Ok(FiringClaim {
        key: r.get(0)?,
        schedule: r.get(1)?,
        at: r.get(2)?,
        outcome: r.get(3)?,
        claimed_at: r.get(4)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.call(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn info(&self) -> Result<StoreInfo> {
        self.call(|c| {
            let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
            Ok(StoreInfo {
                backend: Backend::Sqlite,
                schema_version: u32::try_from(v).unwrap_or(0),
                known_version: MIGRATIONS.len() as u32,
            })
        })
        .await
    }

    async fn lock_state(&self) -> Result<LockState> {
        self.call(|c| read_lock(c)).await
    }

    async fn change_lock(
        &self,
        decide: Decide<LockState, LockDecision, Refusal>,
    ) -> Result<LockChange> {
        self.call(move |c| change_lock(c, &decide)).await
    }

    async fn lock_history(&self, n: usize) -> Result<Vec<LockHistoryEntry>> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, at, actor, action, reason, source, forced FROM lock_history ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([n as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    LockHistoryEntry {
                        at: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        reason: r.get(4)?,
                        source: Source::Api,
                        forced: r.get(6)?,
                    },
                    r.get::<_, String>(5)?,
                ))
            })?;
            rows.map(|r| {
                let (id, mut e, source) = r?;
                e.source = typed("source", format!("lock change {id}"), &source)?;
                Ok(e)
            })
            .collect()
        })
        .await
    }

    async fn create_job(
        &self,
        job: NewJob,
        gate: Decide<LockState, Effects, String>,
    ) -> Result<std::result::Result<JobRecord, String>> {
        self.call(move |c| create_job(c, &job, &gate)).await
    }

    async fn job(&self, id: i64) -> Result<Option<JobRecord>> {
        self.call(move |c| Ok(jobs_where(c, "WHERE id = ?1", id)?.pop()))
            .await
    }

    async fn jobs(&self, limit: usize) -> Result<Vec<JobRecord>> {
        self.call(move |c| jobs_where(c, "ORDER BY id DESC LIMIT ?1", limit as i64))
            .await
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        self.call(|c| {
            jobs_where(
                c,
                "WHERE status IN ('queued', 'running', 'awaiting_approval') AND ?1 = ?1 ORDER BY id",
                0,
            )
        })
        .await
    }

    async fn set_job_status(&self, id: i64, status: JobStatus, now: i64) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE jobs SET status = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, status.as_str(), now],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_job_progress(
        &self,
        id: i64,
        done: u32,
        failed: u32,
        total: u32,
        now: i64,
    ) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE jobs SET done = ?2, failed = ?3, total = ?4, updated_at = ?5 WHERE id = ?1",
                params![id, done, failed, total, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn finish_job(
        &self,
        id: i64,
        status: JobStatus,
        outcome: &Outcome,
        now: i64,
    ) -> Result<()> {
        let text = serde_json::to_string(outcome)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode outcome: {e}")))?;
        self.call(move |c| {
            c.execute(
                "UPDATE jobs SET status = ?2, outcome = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, status.as_str(), text, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn change_job(
        &self,
        id: i64,
        change: JobChange,
        now: i64,
        effects: Effects,
    ) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            apply_job_change(&tx, id, &change, now)?;
            write_effects(&tx, &effects)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn change_leased_job(
        &self,
        id: i64,
        owner: &str,
        change: JobChange,
        now: i64,
        effects: Effects,
    ) -> Result<bool> {
        let owner = owner.to_string();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let held: bool = tx.query_row(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?1 AND {})",
                    held_condition("?2")
                ),
                params![id, owner],
                |r| r.get(0),
            )?;
            if !held {
                return Ok(false);
            }
            apply_job_change(&tx, id, &change, now)?;
            write_effects(&tx, &effects)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn set_message(&self, job: i64, channel: &str, ts: &str) -> Result<()> {
        let (channel, ts) = (channel.to_string(), ts.to_string());
        self.call(move |c| outbox::set_root(c, job, &channel, &ts))
            .await
    }

    async fn messages(&self, job: i64) -> Result<Vec<(String, String)>> {
        self.call(move |c| outbox::roots(c, job)).await
    }

    async fn enqueue(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = outbox::insert(&tx, &messages)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn outbox_work(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxRow>> {
        self.call(move |c| outbox::work(c, now_ms, limit)).await
    }

    async fn outbox_claim(
        &self,
        id: i64,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<OutboxRow>> {
        let owner = owner.to_string();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let row = outbox::claim(&tx, id, &owner, now_ms, lease_ms)?;
            tx.commit()?;
            Ok(row)
        })
        .await
    }

    async fn outbox_settle(
        &self,
        id: i64,
        owner: &str,
        settle: Settle,
        _now_ms: i64,
    ) -> Result<()> {
        let owner = owner.to_string();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            outbox::settle(&tx, id, &owner, &settle)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn outbox_get(&self, key: &str) -> Result<Option<OutboxRow>> {
        let key = key.to_string();
        self.call(move |c| outbox::get(c, &key)).await
    }

    async fn outbox_rows(&self, job: Option<i64>, limit: usize) -> Result<Vec<OutboxRow>> {
        self.call(move |c| outbox::rows(c, job, limit)).await
    }

    async fn outbox_channel(&self, channel: &str, limit: usize) -> Result<Vec<OutboxRow>> {
        let channel = channel.to_string();
        self.call(move |c| outbox::channel(c, &channel, limit))
            .await
    }

    async fn outbox_stats(&self) -> Result<OutboxStats> {
        self.call(|c| outbox::stats(c)).await
    }

    async fn pacing(&self) -> Result<Vec<(String, i64)>> {
        self.call(|c| outbox::pacing(c)).await
    }

    async fn push_pacing(&self, scope: &str, not_before_ms: i64) -> Result<()> {
        let scope = scope.to_string();
        self.call(move |c| outbox::push_pacing(c, &scope, not_before_ms))
            .await
    }

    async fn take_pacing(
        &self,
        scopes: Vec<(String, i64)>,
        now_ms: i64,
    ) -> Result<std::result::Result<(), i64>> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let taken = outbox::take_pacing(&tx, &scopes, now_ms)?;
            tx.commit()?;
            Ok(taken)
        })
        .await
    }

    async fn decide_approval(
        &self,
        job: i64,
        decide: Decide<Ballot, ApprovalDecision, String>,
    ) -> Result<std::result::Result<Decided, String>> {
        self.call(move |c| decide_approval(c, job, &decide)).await
    }

    async fn approval(&self, job: i64) -> Result<Option<(ApprovalRecord, Vec<Vote>)>> {
        self.call(move |c| approval::approval(c, job)).await
    }

    async fn pending_approvals(&self) -> Result<Vec<ApprovalRecord>> {
        self.call(|c| approval::pending(c)).await
    }

    async fn audit(&self, e: &AuditEntry) -> Result<()> {
        let e = e.clone();
        self.call(move |c| insert_audit(c, &e)).await
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT at, actor, action, detail, source FROM audit ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], audit_row)?;
            rows.map(|r| {
                let (mut e, source) = r?;
                e.source = typed("source", format!("audit line at {}", e.at), &source)?;
                Ok(e)
            })
            .collect()
        })
        .await
    }

    async fn audit_query(
        &self,
        since: i64,
        actor: Option<String>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT at, actor, action, detail, source FROM audit
                 WHERE at >= ?1 AND (?2 IS NULL OR actor = ?2) ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![since, actor, limit as i64], audit_row)?;
            rows.map(|r| {
                let (mut e, source) = r?;
                e.source = typed("source", format!("audit line at {}", e.at), &source)?;
                Ok(e)
            })
            .collect()
        })
        .await
    }

    async fn first_delivery(&self, key: &str, now: i64) -> Result<bool> {
        let key = key.to_string();
        self.call(move |c| {
            let inserted = c.execute(
                "INSERT INTO seen_events (event_id, at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![key, now],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn claim_firing(
        &self,
        claim: FiringClaim,
        decide: Decide<LockState, Effects, String>,
    ) -> Result<Claimed> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let taken: Option<i64> = tx
                .query_row("SELECT 1 FROM firings WHERE key = ?1", [&claim.key], |r| {
                    r.get(0)
                })
                .optional()?;
            if taken.is_some() {
                return Ok(Claimed::Before);
            }
            let lock = read_lock(&tx)?;
            let effects = match decide(&lock) {
                Ok(e) => e,
                Err(why) => return Ok(Claimed::Declined(why)),
            };
            tx.execute(
                "INSERT INTO firings (key, schedule, at, outcome, claimed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    claim.key,
                    claim.schedule,
                    claim.at,
                    claim.outcome,
                    claim.claimed_at
                ],
            )?;
            write_effects(&tx, &effects)?;
            tx.commit()?;
            Ok(Claimed::Now)
        })
        .await
    }

    async fn latest_firing(&self, schedule: &str) -> Result<Option<FiringClaim>> {
        let schedule = schedule.to_string();
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT key, schedule, at, outcome, claimed_at FROM firings WHERE schedule = ?1
                 ORDER BY at DESC, outcome ASC, key DESC LIMIT 1",
            )?;
            let mut rows = stmt.query_map([schedule], firing_row)?;
            Ok(rows.next().transpose()?)
        })
        .await
    }

    async fn add_deploy_report(&self, r: &DeployReport) -> Result<bool> {
        let r = r.clone();
        self.call(move |c| {
            let inserted = c.execute(
                "INSERT INTO deploy_reports (job_id, host, ok, duration_ms, log_tail, error, event_id, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                params![
                    r.job_id,
                    r.host,
                    r.ok,
                    i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
                    r.log_tail,
                    r.error,
                    r.event_id,
                    r.at
                ],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn deploy_reports(&self, job: i64) -> Result<Vec<DeployReport>> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT job_id, host, ok, duration_ms, log_tail, error, event_id, at
                 FROM deploy_reports WHERE job_id = ?1 ORDER BY at, host",
            )?;
            let rows = stmt.query_map([job], deploy_report_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn expect_deploy_hosts(&self, job: i64, hosts: &[String]) -> Result<()> {
        let hosts = hosts.to_vec();
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO deploy_hosts (job_id, host) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                )?;
                for h in &hosts {
                    stmt.execute(params![job, h])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn deploy_host_expected(&self, job: i64, host: &str) -> Result<Option<bool>> {
        let host = host.to_string();
        self.call(move |c| {
            let (n, member): (i64, i64) = c.query_row(
                "SELECT count(*), coalesce(max(host = ?2), 0) FROM deploy_hosts WHERE job_id = ?1",
                params![job, host],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok((n > 0).then_some(member == 1))
        })
        .await
    }

    async fn heartbeat(&self, r: &Replica, now_ms: i64, lease_until_ms: i64) -> Result<u64> {
        let r = r.clone();
        self.call(move |c| replicas::heartbeat(c, &r, now_ms, lease_until_ms))
            .await
    }

    async fn replicas(&self, since_ms: i64) -> Result<Vec<Replica>> {
        self.call(move |c| replicas::replicas(c, since_ms)).await
    }

    async fn claim_job(&self, id: i64, owner: &str, lease_until_ms: i64) -> Result<bool> {
        let owner = owner.to_string();
        self.call(move |c| replicas::claim_job(c, id, &owner, lease_until_ms))
            .await
    }

    async fn expired_jobs(&self, now_ms: i64, lease_ms: i64) -> Result<Vec<JobRecord>> {
        self.call(move |c| expired_jobs(c, now_ms, lease_ms)).await
    }

    async fn interrupt_job(
        &self,
        id: i64,
        now_ms: i64,
        lease_ms: i64,
        outcome: Outcome,
        effects: Effects,
    ) -> Result<bool> {
        self.call(move |c| interrupt_job(c, id, now_ms, lease_ms, &outcome, &effects))
            .await
    }

    async fn take_rate(
        &self,
        key: &str,
        now_ms: i64,
        interval_ms: i64,
        burst: u32,
    ) -> Result<Admission> {
        let key = key.to_string();
        self.call(move |c| replicas::take_rate(c, &key, now_ms, interval_ms, burst))
            .await
    }

    async fn prune(&self, before_ms: i64, seen_before: i64) -> Result<Pruned> {
        self.call(move |c| replicas::prune(c, before_ms, seen_before))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            path_of("sqlite://corral.db").unwrap(),
            Some(PathBuf::from("corral.db"))
        );
        assert_eq!(
            path_of("sqlite:///var/lib/c.db").unwrap(),
            Some(PathBuf::from("/var/lib/c.db"))
        );
        assert_eq!(path_of("sqlite::memory:").unwrap(), None);
        assert!(path_of("postgres://x").is_err());
        assert!(path_of("sqlite://").is_err());
    }

    #[tokio::test]
    async fn a_panicking_call_fails_alone() {
        let s = SqliteStore::open("sqlite::memory:").await.unwrap();
        let r: Result<()> = s.call(|_| panic!("boom")).await;
        assert!(matches!(r, Err(StoreError::Db(_))));
        assert!(s.ping().await.is_ok());
    }

    #[tokio::test]
    async fn unreadable_enums_are_named() {
        let s = SqliteStore::open("sqlite::memory:").await.unwrap();
        s.call(|c| {
            c.execute_batch(
                "INSERT INTO jobs (kind, command, requested_by, source, status, created_at, updated_at)
                 VALUES ('launch', '/x', 'U1', 'slack', 'queued', 1, 1)",
            )?;
            Ok(())
        })
        .await
        .unwrap();
        let e = s.jobs(10).await.unwrap_err().to_string();
        assert!(e.contains("kind of job 1 is \"launch\""), "{e}");
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let dir = std::env::temp_dir().join(format!("corral-newer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 999).unwrap();
        }
        let url = format!("sqlite://{}", path.display());
        let e = SqliteStore::open(&url).await.err().unwrap().to_string();
        assert!(e.contains("schema version 999"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }
}
