//! The embedded store: one SQLite file in WAL mode, migrated at open.
//!
//! WAL with `synchronous=NORMAL` keeps every committed transaction across a `kill -9` of
//! corral (only an OS crash or power loss can lose the last commits), and lets readers
//! run beside the writer. One connection behind a mutex is enough: each call is a
//! statement or a short transaction.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, Row, params};

use super::{
    AuditEntry, DeployReport, JobRecord, LockChange, LockHistoryEntry, NewJob, Result, Store,
    StoreError,
};
use crate::job::{JobStatus, Outcome};
use crate::lock::{Holder, LockAction, LockState, Refusal};

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_deploy.sql"),
];

/// How long Events API ids are remembered (Slack retries for up to ~5 minutes, or 24 h
/// with Delayed Events).
const DEDUPE_SECONDS: i64 = 25 * 3600;

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

/// The SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `url`.
    pub fn open(url: &str) -> Result<SqliteStore> {
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
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions
        // roll back on drop), so a poisoned mutex is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
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

fn read_lock(conn: &Connection) -> Result<LockState> {
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

const JOB_COLUMNS: &str = "id, kind, command, requested_by, source, channel, status, done, failed, total, created_at, updated_at, outcome";

fn job_row(r: &Row) -> rusqlite::Result<(JobRecord, String, Option<String>)> {
    Ok((
        JobRecord {
            id: r.get(0)?,
            kind: r.get(1)?,
            command: r.get(2)?,
            requested_by: r.get(3)?,
            source: r.get(4)?,
            channel: r.get(5)?,
            status: JobStatus::Queued,
            done: r.get(7)?,
            failed: r.get(8)?,
            total: r.get(9)?,
            created_at: r.get(10)?,
            updated_at: r.get(11)?,
            outcome: None,
        },
        r.get(6)?,
        r.get(12)?,
    ))
}

fn finish_row(row: (JobRecord, String, Option<String>)) -> Result<JobRecord> {
    let (mut job, status, outcome) = row;
    job.status = status
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("job {} has status {status:?}", job.id)))?;
    job.outcome = match outcome {
        None => None,
        Some(text) => Some(
            serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("job {} outcome: {e}", job.id)))?,
        ),
    };
    Ok(job)
}

fn jobs_where(conn: &Connection, tail: &str, param: i64) -> Result<Vec<JobRecord>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs {tail}"))?;
    let rows = stmt.query_map([param], job_row)?;
    rows.map(|r| finish_row(r?)).collect()
}

impl Store for SqliteStore {
    fn ping(&self) -> Result<()> {
        self.conn().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn lock_state(&self) -> Result<LockState> {
        read_lock(&self.conn())
    }

    fn change_lock(
        &self,
        action: &LockAction,
        source: &str,
        actor: &str,
        decide: &mut dyn FnMut(&LockState) -> std::result::Result<LockState, Refusal>,
    ) -> Result<LockChange> {
        let mut conn = self.conn();
        // IMMEDIATE: take the write lock before reading, so another process (corral
        // exec beside corral serve) cannot interleave a change.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let before = read_lock(&tx)?;
        let after = match decide(&before) {
            Ok(s) => s,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let forced = matches!(action, LockAction::Stop { force: true })
            && before.running.as_ref().is_some_and(|h| h.who != actor);
        let (r, b) = (after.running.as_ref(), after.blocked.as_ref());
        tx.execute(
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
        let now = r
            .map(|h| h.since)
            .into_iter()
            .chain(b.map(|h| h.since))
            .max()
            .unwrap_or(0)
            .max(crate::now());
        tx.execute(
            "INSERT INTO lock_history (at, actor, action, reason, source, forced) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![now, actor, action.name(), action.reason(), source, forced],
        )?;
        if forced {
            let holder = before
                .running
                .as_ref()
                .map(|h| h.who.as_str())
                .unwrap_or("");
            tx.execute(
                "INSERT INTO audit (at, actor, action, detail, source) VALUES (?1, ?2, 'release.stop --force', ?3, ?4)",
                params![now, actor, format!("stopped the release held by {holder}"), source],
            )?;
        }
        tx.commit()?;
        Ok(Ok((before, after)))
    }

    fn lock_history(&self, n: usize) -> Result<Vec<LockHistoryEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT at, actor, action, reason, source, forced FROM lock_history ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([n as i64], |r| {
            Ok(LockHistoryEntry {
                at: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
                reason: r.get(3)?,
                source: r.get(4)?,
                forced: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn create_job_gated(
        &self,
        job: &NewJob,
        now: i64,
        gate: &mut dyn FnMut(&LockState) -> std::result::Result<Vec<AuditEntry>, String>,
    ) -> Result<std::result::Result<JobRecord, String>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let lock = read_lock(&tx)?;
        let audit = match gate(&lock) {
            Ok(a) => a,
            Err(refusal) => return Ok(Err(refusal)),
        };
        tx.execute(
            "INSERT INTO jobs (kind, command, requested_by, source, channel, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![
                job.kind,
                job.command,
                job.requested_by,
                job.source,
                job.channel,
                JobStatus::Queued.as_str(),
                now
            ],
        )?;
        let id = tx.last_insert_rowid();
        let created = AuditEntry {
            at: now,
            actor: job.requested_by.clone(),
            action: format!("job {id} created"),
            detail: job.command.clone(),
            source: job.source.clone(),
        };
        for e in audit.iter().chain(std::iter::once(&created)) {
            tx.execute(
                "INSERT INTO audit (at, actor, action, detail, source) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e.at, e.actor, e.action, e.detail, e.source],
            )?;
        }
        let record = jobs_where(&tx, "WHERE id = ?1", id)?
            .pop()
            .ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished after insert")))?;
        tx.commit()?;
        Ok(Ok(record))
    }

    fn job(&self, id: i64) -> Result<Option<JobRecord>> {
        Ok(jobs_where(&self.conn(), "WHERE id = ?1", id)?.pop())
    }

    fn jobs(&self, limit: usize) -> Result<Vec<JobRecord>> {
        jobs_where(&self.conn(), "ORDER BY id DESC LIMIT ?1", limit as i64)
    }

    fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        jobs_where(
            &self.conn(),
            "WHERE status IN ('queued', 'running', 'awaiting_approval') AND ?1 = ?1 ORDER BY id",
            0,
        )
    }

    fn set_job_status(&self, id: i64, status: JobStatus, now: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE jobs SET status = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, status.as_str(), now],
        )?;
        Ok(())
    }

    fn set_job_progress(
        &self,
        id: i64,
        done: u32,
        failed: u32,
        total: u32,
        now: i64,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE jobs SET done = ?2, failed = ?3, total = ?4, updated_at = ?5 WHERE id = ?1",
            params![id, done, failed, total, now],
        )?;
        Ok(())
    }

    fn finish_job(&self, id: i64, status: JobStatus, outcome: &Outcome, now: i64) -> Result<()> {
        let text = serde_json::to_string(outcome)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode outcome: {e}")))?;
        self.conn().execute(
            "UPDATE jobs SET status = ?2, outcome = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, status.as_str(), text, now],
        )?;
        Ok(())
    }

    fn set_message(&self, job: i64, channel: &str, ts: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO messages (job_id, channel, ts) VALUES (?1, ?2, ?3)
             ON CONFLICT (job_id, channel) DO UPDATE SET ts = excluded.ts",
            params![job, channel, ts],
        )?;
        Ok(())
    }

    fn messages(&self, job: i64) -> Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT channel, ts FROM messages WHERE job_id = ?1 ORDER BY channel",
        )?;
        let rows = stmt.query_map([job], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn audit(&self, e: &AuditEntry) -> Result<()> {
        self.conn().execute(
            "INSERT INTO audit (at, actor, action, detail, source) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![e.at, e.actor, e.action, e.detail, e.source],
        )?;
        Ok(())
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT at, actor, action, detail, source FROM audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(AuditEntry {
                at: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
                detail: r.get(3)?,
                source: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn first_delivery(&self, event_id: &str, now: i64) -> Result<bool> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM seen_events WHERE at < ?1",
            [now - DEDUPE_SECONDS],
        )?;
        let inserted = conn.execute(
            "INSERT INTO seen_events (event_id, at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![event_id, now],
        )?;
        Ok(inserted == 1)
    }

    fn add_deploy_report(&self, r: &DeployReport) -> Result<bool> {
        let inserted = self.conn().execute(
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
    }

    fn deploy_reports(&self, job: i64) -> Result<Vec<DeployReport>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT job_id, host, ok, duration_ms, log_tail, error, event_id, at
             FROM deploy_reports WHERE job_id = ?1 ORDER BY at, host",
        )?;
        let rows = stmt.query_map([job], |row| {
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
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::{Actor, apply};

    fn actor(who: &str) -> Actor {
        Actor {
            who: who.into(),
            may_force: false,
            holder_only_stop: true,
        }
    }

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

    #[test]
    fn lock_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("corral-store-{}", std::process::id()));
        let url = format!("sqlite://{}/c.db", dir.display());
        {
            let s = SqliteStore::open(&url).unwrap();
            let a = LockAction::Start {
                reason: "1.4.0".into(),
            };
            let r = s
                .change_lock(&a, "slack", "U1", &mut |st| {
                    apply(st, &a, &actor("U1"), 100)
                })
                .unwrap();
            assert!(r.is_ok());
        }
        let s = SqliteStore::open(&url).unwrap();
        let st = s.lock_state().unwrap();
        assert_eq!(st.running.unwrap().reason, "1.4.0");
        assert_eq!(s.lock_history(10).unwrap()[0].action, "start");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn refused_change_writes_nothing() {
        let s = SqliteStore::open("sqlite::memory:").unwrap();
        let a = LockAction::Stop { force: false };
        let r = s
            .change_lock(&a, "slack", "U1", &mut |st| apply(st, &a, &actor("U1"), 1))
            .unwrap();
        assert_eq!(r, Err(Refusal::NotRunning));
        assert!(s.lock_history(10).unwrap().is_empty());
    }

    #[test]
    fn jobs_and_dedupe() {
        let s = SqliteStore::open("sqlite::memory:").unwrap();
        let j = s
            .create_job(
                &NewJob {
                    kind: "deploy".into(),
                    command: "/deploy https://x/m.yml".into(),
                    requested_by: "U1".into(),
                    source: "slack".into(),
                    channel: Some("C1".into()),
                },
                10,
            )
            .unwrap();
        assert_eq!(j.status, JobStatus::Queued);
        assert_eq!(s.unfinished_jobs().unwrap().len(), 1);
        s.set_message(j.id, "C1", "1.1").unwrap();
        s.set_message(j.id, "C1", "1.2").unwrap();
        assert_eq!(s.messages(j.id).unwrap(), vec![("C1".into(), "1.2".into())]);
        let out = Outcome {
            succeeded: 2,
            ..Outcome::default()
        };
        s.finish_job(j.id, JobStatus::Succeeded, &out, 11).unwrap();
        let j = s.job(j.id).unwrap().unwrap();
        assert_eq!(j.outcome.unwrap().succeeded, 2);
        assert!(s.unfinished_jobs().unwrap().is_empty());
        assert!(s.first_delivery("Ev1", 100).unwrap());
        assert!(!s.first_delivery("Ev1", 101).unwrap());
        assert!(s.first_delivery("Ev1", 100 + DEDUPE_SECONDS + 1).unwrap());
    }

    #[test]
    fn deploy_reports_first_wins() {
        let s = SqliteStore::open("sqlite::memory:").unwrap();
        let job = s
            .create_job(
                &NewJob {
                    kind: "deploy".into(),
                    command: "/deploy https://x/m.yml --target serf".into(),
                    requested_by: "U1".into(),
                    source: "slack".into(),
                    channel: None,
                },
                10,
            )
            .unwrap();
        let r = |host: &str, ok: bool, at: i64| DeployReport {
            job_id: job.id,
            host: host.into(),
            ok,
            duration_ms: 1200,
            log_tail: "tail".into(),
            error: (!ok).then(|| "exit status 1".into()),
            event_id: None,
            at,
        };
        assert!(s.add_deploy_report(&r("web-2", false, 20)).unwrap());
        assert!(s.add_deploy_report(&r("web-1", true, 21)).unwrap());
        assert!(!s.add_deploy_report(&r("web-2", true, 22)).unwrap());
        let got = s.deploy_reports(job.id).unwrap();
        assert_eq!(got, vec![r("web-2", false, 20), r("web-1", true, 21)]);
        assert!(s.deploy_reports(job.id + 1).unwrap().is_empty());
    }
}
