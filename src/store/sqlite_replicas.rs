//! The SQLite side of [`super::replicas`]: heartbeats, job leases, the command limit and
//! pruning (expiring a job writes its thread's note, so that part lives with the job's
//! other writes in `sqlite.rs`). Several processes on one file (`corral exec` beside `corral serve`) share
//! them like replicas do; each call is one transaction on the store's thread.

use rusqlite::{Connection, params};

use super::Result;
use super::replicas::{Admission, Pruned, Replica, rate_upsert};

pub(super) fn heartbeat(
    conn: &mut Connection,
    r: &Replica,
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO replicas (id, host, pid, started, last_seen) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
        params![r.id, r.host, r.pid, r.started_ms, now_ms],
    )?;
    let renewed = tx.execute(
        "UPDATE jobs SET lease_until = max(coalesce(lease_until, 0), ?2)
         WHERE lease_owner = ?1 AND status IN ('queued', 'running')",
        params![r.id, lease_until_ms],
    )?;
    tx.commit()?;
    Ok(renewed as u64)
}

pub(super) fn replicas(conn: &Connection, since_ms: i64) -> Result<Vec<Replica>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, host, pid, started, last_seen FROM replicas WHERE last_seen >= ?1
         ORDER BY last_seen DESC, id",
    )?;
    let rows = stmt.query_map([since_ms], |r| {
        Ok(Replica {
            id: r.get(0)?,
            host: r.get(1)?,
            pid: r.get(2)?,
            started_ms: r.get(3)?,
            last_seen_ms: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn claim_job(conn: &Connection, id: i64, owner: &str, until_ms: i64) -> Result<bool> {
    let n = conn.execute(
        "UPDATE jobs SET lease_owner = ?2, lease_until = ?3
         WHERE id = ?1 AND status IN ('queued', 'running')
           AND (lease_owner IS NULL OR lease_owner = ?2)",
        params![id, owner, until_ms],
    )?;
    Ok(n == 1)
}

pub(super) fn take_rate(
    conn: &Connection,
    key: &str,
    now_ms: i64,
    interval_ms: i64,
    burst: u32,
) -> Result<Admission> {
    let mut stmt = conn.prepare_cached(&rate_upsert(|n| format!("?{n}"), "max"))?;
    let refused: i64 = stmt.query_row(
        params![key, now_ms, interval_ms.max(1), i64::from(burst.max(1))],
        |r| r.get(0),
    )?;
    Ok(Admission::from_refused(refused))
}

pub(super) fn prune(conn: &mut Connection, before_ms: i64, seen_before: i64) -> Result<Pruned> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let messages = tx.execute(
        "DELETE FROM outbox WHERE key IS NULL
           AND state IN ('done', 'failed', 'dead', 'dropped') AND updated_at < ?1",
        [before_ms],
    )?;
    let seen = tx.execute("DELETE FROM seen_events WHERE at < ?1", [seen_before])?;
    let limits = tx.execute("DELETE FROM rate_limits WHERE tat < ?1", [before_ms])?;
    let gone = tx.execute("DELETE FROM replicas WHERE last_seen < ?1", [before_ms])?;
    tx.commit()?;
    Ok(Pruned {
        messages: messages as u64,
        seen: seen as u64,
        other: (limits + gone) as u64,
    })
}
