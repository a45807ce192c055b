//! The PostgreSQL side of [`super::replicas`], the same statements as
//! [`super::sqlite_replicas`]: a lease is renewed, claimed and expired by single-row
//! updates (the row lock decides between replicas), and the command limit is one upsert.

use deadpool_postgres::Object;

use super::pg_error::{PgResult, cached};
use super::postgres::{Tx, in_tx, jobs_where, write_effects};
use super::replicas::{Admission, Pruned, Replica, expired_condition, rate_upsert};
use super::{Effects, JobRecord, StoreError};
use crate::job::Outcome;

pub(super) async fn heartbeat(
    c: &Object,
    r: &Replica,
    now_ms: i64,
    lease_until_ms: i64,
) -> PgResult<u64> {
    let seen = cached(
        c,
        "INSERT INTO replicas (id, host, pid, started, last_seen) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET last_seen = GREATEST(replicas.last_seen, EXCLUDED.last_seen)",
    )
    .await?;
    c.execute(&seen, &[&r.id, &r.host, &r.pid, &r.started_ms, &now_ms])
        .await?;
    let renew = cached(
        c,
        "UPDATE jobs SET lease_until = GREATEST(COALESCE(lease_until, 0), $2)
         WHERE lease_owner = $1 AND status IN ('queued', 'running')",
    )
    .await?;
    Ok(c.execute(&renew, &[&r.id, &lease_until_ms]).await?)
}

pub(super) async fn replicas(c: &Object, since_ms: i64) -> PgResult<Vec<Replica>> {
    let stmt = cached(
        c,
        "SELECT id, host, pid, started, last_seen FROM replicas WHERE last_seen >= $1
         ORDER BY last_seen DESC, id",
    )
    .await?;
    let mut out = Vec::new();
    for r in c.query(&stmt, &[&since_ms]).await? {
        out.push(Replica {
            id: r.try_get(0)?,
            host: r.try_get(1)?,
            pid: r.try_get(2)?,
            started_ms: r.try_get(3)?,
            last_seen_ms: r.try_get(4)?,
        });
    }
    Ok(out)
}

pub(super) async fn claim_job(c: &Object, id: i64, owner: &str, until_ms: i64) -> PgResult<bool> {
    let stmt = cached(
        c,
        "UPDATE jobs SET lease_owner = $2, lease_until = $3
         WHERE id = $1 AND status IN ('queued', 'running')
           AND (lease_owner IS NULL OR lease_owner = $2)",
    )
    .await?;
    Ok(c.execute(&stmt, &[&id, &owner, &until_ms]).await? == 1)
}

pub(super) async fn expired_jobs(
    c: &Object,
    now_ms: i64,
    lease_ms: i64,
) -> PgResult<Vec<JobRecord>> {
    let tail = format!(
        "WHERE {} ORDER BY id LIMIT 100",
        expired_condition("$1", lease_ms.max(0))
    );
    jobs_where(c, &tail, &[&now_ms]).await
}

pub(super) async fn interrupt_job(
    c: &Object,
    id: i64,
    now_ms: i64,
    lease_ms: i64,
    outcome: &Outcome,
    effects: &Effects,
) -> PgResult<bool> {
    let text = serde_json::to_string(outcome)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode outcome: {e}")))?;
    let sql = format!(
        "UPDATE jobs SET status = 'interrupted', outcome = $2, updated_at = $3
         WHERE id = $4 AND {}",
        expired_condition("$1", lease_ms.max(0))
    );
    let now_s = now_ms.div_euclid(1000);
    in_tx(c, || async {
        // Messages first, the job's row second, as everywhere (a settle locks an outbox
        // row, then notes a failure on its job); rolled back if another replica was first.
        write_effects(c, effects).await?;
        let stmt = cached(c, &sql).await?;
        let n = c.execute(&stmt, &[&now_ms, &text, &now_s, &id]).await?;
        Ok(if n == 1 {
            Tx::Commit(true)
        } else {
            Tx::Rollback(false)
        })
    })
    .await
}

pub(super) async fn take_rate(
    c: &Object,
    key: &str,
    now_ms: i64,
    interval_ms: i64,
    burst: u32,
) -> PgResult<Admission> {
    let stmt = cached(
        c,
        &rate_upsert(
            |n| {
                if n == 1 {
                    "$1".into()
                } else {
                    format!("${n}::BIGINT")
                }
            },
            "GREATEST",
        ),
    )
    .await?;
    let row = c
        .query_one(
            &stmt,
            &[&key, &now_ms, &interval_ms.max(1), &i64::from(burst.max(1))],
        )
        .await?;
    Ok(Admission::from_refused(row.try_get(0)?))
}

pub(super) async fn prune(c: &Object, before_ms: i64, seen_before: i64) -> PgResult<Pruned> {
    in_tx(c, || async {
        let messages = c
            .execute(
                "DELETE FROM outbox WHERE key IS NULL
                   AND state IN ('done', 'failed', 'dead', 'dropped') AND updated_at < $1",
                &[&before_ms],
            )
            .await?;
        let seen = c
            .execute("DELETE FROM seen_events WHERE at < $1", &[&seen_before])
            .await?;
        let limits = c
            .execute("DELETE FROM rate_limits WHERE tat < $1", &[&before_ms])
            .await?;
        let gone = c
            .execute("DELETE FROM replicas WHERE last_seen < $1", &[&before_ms])
            .await?;
        Ok(Tx::Commit(Pruned {
            messages,
            seen,
            other: limits + gone,
        }))
    })
    .await
}
