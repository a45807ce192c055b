//! The PostgreSQL side of [`super::replicas`], the same statements as
//! [`super::sqlite_replicas`]: a lease is renewed and claimed by single-row updates (the
//! row lock decides between replicas), and the command limit is one upsert. Expiring a
//! job writes its thread's note, so that part lives with the job's other writes in
//! `postgres.rs`.

use deadpool_postgres::Object;

use super::pg_error::{PgResult, cached};
use super::replicas::{Admission, Pruned, Replica, rate_upsert};

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

/// Four statements, each committed on its own: pruning need not be atomic.
pub(super) async fn prune(c: &Object, before_ms: i64, seen_before: i64) -> PgResult<Pruned> {
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
    Ok(Pruned {
        messages,
        seen,
        other: limits + gone,
    })
}
