//! The outbox's SQL for the PostgreSQL store: `sqlite_outbox.rs` statement for statement,
//! on a pooled connection inside the caller's transaction, with what several replicas
//! writing and sending at once need:
//!
//! * **A lane's order is commit order.** A lane's next sequence number is one more than
//!   its last pending row's, read under `pg_advisory_xact_lock(LANES, hashtext(lane))`
//!   taken in the inserting transaction and held to its commit: a second writer of the
//!   lane waits, then reads the first one's row. (A PostgreSQL sequence, or the id, is
//!   handed out at insert time, not at commit, so it does not order a lane.) The lanes of
//!   one transaction are locked in sorted order, before any row, so two writers never
//!   wait on each other in a circle.
//! * **One sender per row at a time.** A claim is one conditional `UPDATE` of the row's
//!   lease; of two replicas claiming at once, the second re-reads the row after the first
//!   commits and finds it leased.
//! * **Pacing is the app's.** "Not before" times only move forward (`GREATEST` in an
//!   upsert), and [`take_pacing`] grants a call slot atomically under the scope rows'
//!   locks, so two replicas never both take the same second of Slack's budget.
//!
//! Row locks are taken outbox first, jobs second, everywhere (a settle that notes a
//! failure on its job; a job change writes its messages before its own row).

use deadpool_postgres::Object;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::dump::OutboxCopy;
use super::outbox::{
    Enqueued, NewMessage, OutboxRow, OutboxStats, RowKind, RowState, Settle, Thread, root_key,
};
use super::pg_error::{PgResult, cached};
use super::sqlite_outbox::{COLUMNS, FROM, Planned, RESPONSE_URL_USES, Raw, encode, plan};

/// The first key of the lanes' advisory locks (the two-key space; the store's other
/// advisory locks use the one-key space, which does not overlap).
const LANES: i32 = 0x636f_7201;

fn raw(r: &Row) -> PgResult<Raw> {
    Ok(Raw {
        id: r.try_get(0)?,
        key: r.try_get(1)?,
        kind: r.try_get(2)?,
        lane: r.try_get(3)?,
        seq: r.try_get(4)?,
        channel: r.try_get(5)?,
        thread_key: r.try_get(6)?,
        thread_ts: r.try_get(7)?,
        user: r.try_get(8)?,
        url: r.try_get(9)?,
        in_channel: r.try_get(10)?,
        role: r.try_get(11)?,
        job: r.try_get(12)?,
        body: r.try_get(13)?,
        version: r.try_get(14)?,
        sent_version: r.try_get(15)?,
        state: r.try_get(16)?,
        ts: r.try_get(17)?,
        attempts: r.try_get(18)?,
        unknown: r.try_get(19)?,
        not_before: r.try_get(20)?,
        created_at: r.try_get(21)?,
        updated_at: r.try_get(22)?,
        expires_at: r.try_get(23)?,
        last_error: r.try_get(24)?,
        root_ts: r.try_get(25)?,
        root_state: r.try_get(26)?,
    })
}

async fn exec(c: &Object, sql: &str, p: &[&(dyn ToSql + Sync)]) -> PgResult<u64> {
    let stmt = cached(c, sql).await?;
    Ok(c.execute(&stmt, p).await?)
}

async fn rows_where(c: &Object, tail: &str, p: &[&(dyn ToSql + Sync)]) -> PgResult<Vec<OutboxRow>> {
    let stmt = cached(c, &format!("SELECT {COLUMNS} {FROM} {tail}")).await?;
    let mut out = Vec::new();
    for r in c.query(&stmt, p).await? {
        out.push(raw(&r)?.typed()?);
    }
    Ok(out)
}

/// Locks the lanes `messages` post into, in sorted order, for the rest of the transaction.
async fn lock_lanes(c: &Object, messages: &[NewMessage]) -> PgResult<()> {
    let mut lanes: Vec<String> = messages
        .iter()
        .filter_map(|m| match plan(m) {
            Planned::Row(r) => Some(r.lane),
            Planned::Edit(_) => None,
        })
        .collect();
    lanes.sort();
    lanes.dedup();
    let stmt = cached(c, "SELECT pg_advisory_xact_lock($1, hashtext($2))").await?;
    for lane in &lanes {
        c.execute(&stmt, &[&LANES, lane]).await?;
    }
    Ok(())
}

/// The next sequence number of a lane whose lock this transaction holds: one more than
/// its last pending row's (a lane with nothing pending starts again).
async fn next_seq(c: &Object, lane: &str) -> PgResult<i64> {
    let stmt = cached(
        c,
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox WHERE state = 'pending' AND lane = $1",
    )
    .await?;
    Ok(c.query_one(&stmt, &[&lane]).await?.try_get(0)?)
}

/// Writes messages (inside the caller's transaction).
pub(super) async fn insert(c: &Object, messages: &[NewMessage]) -> PgResult<Vec<Enqueued>> {
    lock_lanes(c, messages).await?;
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        out.push(insert_one(c, m).await?);
    }
    Ok(out)
}

async fn insert_one(c: &Object, m: &NewMessage) -> PgResult<Enqueued> {
    let body = encode(&m.message)?;
    let row = match plan(m) {
        Planned::Edit(key) => return edit(c, key, &body, m.at_ms).await,
        Planned::Row(row) => row,
    };
    let seq = next_seq(c, &row.lane).await?;
    // A keyed post is written once: of two replicas writing the same key at once, the
    // second waits for the first's commit and writes nothing.
    let stmt = cached(
        c,
        "INSERT INTO outbox (key, kind, lane, seq, channel, thread_key, thread_ts, user_id, url,
             in_channel, role, job_id, body, created_at, updated_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15)
         ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING
         RETURNING id",
    )
    .await?;
    let inserted = c
        .query_opt(
            &stmt,
            &[
                &row.key,
                &row.kind.as_str(),
                &row.lane,
                &seq,
                &row.channel,
                &row.thread_key,
                &row.thread_ts,
                &row.user,
                &row.url,
                &row.in_channel,
                &m.role.as_str(),
                &m.job,
                &body,
                &m.at_ms,
                &row.expires_at,
            ],
        )
        .await?;
    if let Some(r) = inserted {
        return Ok(Enqueued::New(r.try_get(0)?));
    }
    let stmt = cached(c, "SELECT id FROM outbox WHERE key = $1").await?;
    let id: i64 = c.query_one(&stmt, &[&row.key]).await?.try_get(0)?;
    Ok(Enqueued::Duplicate(id))
}

/// An edit: new content for the row of `key`, coalesced into whatever is still to send.
async fn edit(c: &Object, key: &str, body: &str, at_ms: i64) -> PgResult<Enqueued> {
    let stmt = cached(
        c,
        "SELECT id, body, state FROM outbox WHERE key = $1 FOR UPDATE",
    )
    .await?;
    let Some(row) = c.query_opt(&stmt, &[&key]).await? else {
        return Ok(Enqueued::Missing);
    };
    let (id, old, state): (i64, String, String) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    if !matches!(state.as_str(), "pending" | "edit" | "done") {
        return Ok(Enqueued::Missing);
    }
    if old == body {
        return Ok(Enqueued::Coalesced(id));
    }
    exec(
        c,
        "UPDATE outbox SET body = $2, version = version + 1, updated_at = $3,
             state = CASE WHEN state = 'done' THEN 'edit' ELSE state END,
             not_before = CASE WHEN state = 'done' THEN 0 ELSE not_before END
         WHERE id = $1",
        &[&id, &body, &at_ms],
    )
    .await?;
    Ok(Enqueued::Coalesced(id))
}

/// Lane heads and edits, oldest wish first (the loose index scan of the SQLite store).
pub(super) async fn work(c: &Object, now_ms: i64, limit: usize) -> PgResult<Vec<OutboxRow>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    rows_where(
        c,
        "WHERE o.id IN (
                 WITH RECURSIVE lanes (lane) AS (
                     SELECT MIN(lane) FROM outbox WHERE state = 'pending'
                     UNION ALL
                     SELECT (SELECT MIN(q.lane) FROM outbox q
                             WHERE q.state = 'pending' AND q.lane > lanes.lane)
                     FROM lanes WHERE lanes.lane IS NOT NULL
                 )
                 SELECT (SELECT p.id FROM outbox p
                         WHERE p.state = 'pending' AND p.lane = lanes.lane
                         ORDER BY p.seq LIMIT 1)
                 FROM lanes WHERE lanes.lane IS NOT NULL
                 UNION ALL
                 SELECT id FROM outbox WHERE state = 'edit')
           AND (o.lease_until IS NULL OR o.lease_until < $1)
         ORDER BY CASE WHEN o.state = 'edit' THEN o.updated_at ELSE o.created_at END, o.id
         LIMIT $2",
        &[&now_ms, &limit],
    )
    .await
}

pub(super) async fn claim(
    c: &Object,
    id: i64,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
) -> PgResult<Option<OutboxRow>> {
    let n = exec(
        c,
        "UPDATE outbox SET lease_owner = $2, lease_until = $3::BIGINT + $4::BIGINT, attempts = attempts + 1,
             unknown = CASE WHEN lease_until IS NOT NULL THEN TRUE ELSE unknown END
         WHERE id = $1 AND state IN ('pending', 'edit')
           AND (lease_until IS NULL OR lease_until < $3)",
        &[&id, &owner, &now_ms, &lease_ms],
    )
    .await?;
    if n == 0 {
        return Ok(None);
    }
    let mut row = rows_where(c, "WHERE o.id = $1", &[&id]).await?.pop();
    if let Some(r) = row.as_mut()
        && r.kind == RowKind::Respond
        && let Some(url) = &r.url
        && response_url_uses(c, url).await? >= RESPONSE_URL_USES
    {
        r.expires_at = Some(0);
    }
    Ok(row)
}

const RELEASE: &str = "lease_owner = NULL, lease_until = NULL";

async fn note_on_job(c: &Object, id: i64, error: &str) -> PgResult<()> {
    let stmt = cached(c, "SELECT job_id, role FROM outbox WHERE id = $1").await?;
    let Some(row) = c.query_opt(&stmt, &[&id]).await? else {
        return Ok(());
    };
    let (job, role): (Option<i64>, String) = (row.try_get(0)?, row.try_get(1)?);
    if let Some(job) = job {
        exec(
            c,
            "UPDATE jobs SET delivery = COALESCE(delivery, $2) WHERE id = $1",
            &[
                &job,
                &format!("the {role} message was not delivered: {error}"),
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn settle(c: &Object, id: i64, owner: &str, s: &Settle) -> PgResult<()> {
    let held = "WHERE id = $1 AND lease_owner = $2";
    match s {
        Settle::Delivered { version, ts } => {
            exec(
                c,
                &format!(
                    "UPDATE outbox SET ts = COALESCE($3, ts), sent_version = $4,
                         state = CASE WHEN version > $4 THEN 'edit' ELSE 'done' END,
                         unknown = FALSE, not_before = 0, last_error = NULL, {RELEASE} {held}"
                ),
                &[&id, &owner, ts, version],
            )
            .await?;
        }
        Settle::NotFound => {
            exec(
                c,
                &format!("UPDATE outbox SET unknown = FALSE, {RELEASE} {held}"),
                &[&id, &owner],
            )
            .await?;
        }
        Settle::Retry {
            not_before_ms,
            error,
            unknown,
        } => {
            exec(
                c,
                &format!(
                    "UPDATE outbox SET not_before = $3, last_error = $4,
                         unknown = (unknown OR $5), {RELEASE} {held}"
                ),
                &[&id, &owner, not_before_ms, error, unknown],
            )
            .await?;
        }
        Settle::EditRefused { version, error } => {
            let n = exec(
                c,
                &format!(
                    "UPDATE outbox SET sent_version = $3, last_error = $4,
                         state = CASE WHEN version > $3 THEN 'edit' ELSE 'done' END, {RELEASE} {held}"
                ),
                &[&id, &owner, version, error],
            )
            .await?;
            if n > 0 {
                note_on_job(c, id, error).await?;
            }
        }
        Settle::Failed { error } | Settle::Dead { error } => {
            let state = if matches!(s, Settle::Failed { .. }) {
                RowState::Failed
            } else {
                RowState::Dead
            };
            let n = exec(
                c,
                &format!("UPDATE outbox SET state = $3, last_error = $4, {RELEASE} {held}"),
                &[&id, &owner, &state.as_str(), error],
            )
            .await?;
            if n > 0 {
                note_on_job(c, id, error).await?;
            }
        }
        Settle::Dropped { reason } => {
            exec(
                c,
                &format!("UPDATE outbox SET state = 'dropped', last_error = $3, {RELEASE} {held}"),
                &[&id, &owner, reason],
            )
            .await?;
        }
    }
    Ok(())
}

async fn response_url_uses(c: &Object, url: &str) -> PgResult<i64> {
    let stmt = cached(
        c,
        "SELECT COUNT(*) FROM outbox WHERE url = $1 AND kind = 'respond' AND state = 'done'",
    )
    .await?;
    Ok(c.query_one(&stmt, &[&url]).await?.try_get(0)?)
}

pub(super) async fn get(c: &Object, key: &str) -> PgResult<Option<OutboxRow>> {
    Ok(rows_where(c, "WHERE o.key = $1", &[&key]).await?.pop())
}

pub(super) async fn rows(c: &Object, job: Option<i64>, limit: usize) -> PgResult<Vec<OutboxRow>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    match job {
        Some(j) => {
            rows_where(
                c,
                "WHERE o.job_id = $1 ORDER BY o.id LIMIT $2",
                &[&j, &limit],
            )
            .await
        }
        None => rows_where(c, "ORDER BY o.id LIMIT $1", &[&limit]).await,
    }
}

/// The newest `limit` delivered posts of a channel, oldest first.
pub(super) async fn channel(c: &Object, channel: &str, limit: usize) -> PgResult<Vec<OutboxRow>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = rows_where(
        c,
        "WHERE o.kind = 'post' AND o.channel = $1 AND o.ts IS NOT NULL ORDER BY o.id DESC LIMIT $2",
        &[&channel, &limit],
    )
    .await?;
    rows.reverse();
    Ok(rows)
}

pub(super) async fn stats(c: &Object) -> PgResult<OutboxStats> {
    let stmt = cached(
        c,
        "SELECT COUNT(*) FILTER (WHERE state IN ('pending', 'edit')),
                MIN(CASE WHEN state = 'edit' THEN updated_at ELSE created_at END)
                    FILTER (WHERE state IN ('pending', 'edit')),
                COUNT(*) FILTER (WHERE state = 'dead'),
                COUNT(*) FILTER (WHERE state = 'failed')
         FROM outbox",
    )
    .await?;
    let r = c.query_one(&stmt, &[]).await?;
    let n = |i: usize| -> PgResult<u64> { Ok(r.try_get::<_, i64>(i)?.max(0) as u64) };
    Ok(OutboxStats {
        depth: n(0)?,
        oldest_ms: r.try_get(1)?,
        dead: n(2)?,
        failed: n(3)?,
    })
}

pub(super) async fn pacing(c: &Object) -> PgResult<Vec<(String, i64)>> {
    let stmt = cached(
        c,
        "SELECT scope, not_before FROM outbox_pacing ORDER BY scope",
    )
    .await?;
    c.query(&stmt, &[])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

pub(super) async fn push_pacing(c: &Object, scope: &str, not_before: i64) -> PgResult<()> {
    exec(
        c,
        "INSERT INTO outbox_pacing (scope, not_before) VALUES ($1, $2)
         ON CONFLICT (scope) DO UPDATE SET not_before =
             GREATEST(excluded.not_before, outbox_pacing.not_before)",
        &[&scope, &not_before],
    )
    .await?;
    Ok(())
}

/// Grants a call slot in every scope at once (inside the caller's transaction): if none
/// of them is blocked past `now_ms`, pushes each to `now_ms + its interval` and answers
/// `Ok`; else changes nothing and answers when the last of them frees up.
pub(super) async fn take_pacing(
    c: &Object,
    scopes: &[(String, i64)],
    now_ms: i64,
) -> PgResult<std::result::Result<(), i64>> {
    let mut sorted: Vec<&(String, i64)> = scopes.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    // Every scope row exists and is locked (sorted: no two takers wait in a circle).
    let ensure = cached(
        c,
        "INSERT INTO outbox_pacing (scope, not_before) VALUES ($1, 0) ON CONFLICT (scope) DO NOTHING",
    )
    .await?;
    let read = cached(
        c,
        "SELECT not_before FROM outbox_pacing WHERE scope = $1 FOR UPDATE",
    )
    .await?;
    let mut blocked = i64::MIN;
    for (scope, _) in &sorted {
        c.execute(&ensure, &[scope]).await?;
        let nb: i64 = c.query_one(&read, &[scope]).await?.try_get(0)?;
        blocked = blocked.max(nb);
    }
    if blocked > now_ms {
        return Ok(Err(blocked));
    }
    for (scope, every) in &sorted {
        push_pacing(c, scope, now_ms.saturating_add(*every)).await?;
    }
    Ok(Ok(()))
}

/// A root posted outside the outbox (or before it existed): a delivered row.
pub(super) async fn set_root(c: &Object, job: i64, channel: &str, ts: &str) -> PgResult<()> {
    exec(
        c,
        "INSERT INTO outbox (key, kind, lane, seq, channel, role, job_id, body, version,
             sent_version, state, ts, created_at, updated_at)
         VALUES ($1, 'post', $2, 0, $2, 'root', $3, '{\"text\":\"\"}', 0, 0, 'done', $4, 0, 0)
         ON CONFLICT (key) WHERE key IS NOT NULL
         DO UPDATE SET channel = excluded.channel, ts = excluded.ts",
        &[&root_key(job), &channel, &job, &ts],
    )
    .await?;
    Ok(())
}

pub(super) async fn roots(c: &Object, job: i64) -> PgResult<Vec<(String, String)>> {
    let stmt = cached(
        c,
        "SELECT channel, ts FROM outbox WHERE key = $1 AND ts IS NOT NULL",
    )
    .await?;
    c.query(&stmt, &[&root_key(job)])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Writes copied outbox rows, ids, sequences, states and leases as they were, and the
/// sender's pacing, into an empty database (`corral migrate`), inside the copy's
/// transaction.
pub(super) async fn copy_in(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[OutboxCopy],
    pacing: &[(String, i64)],
) -> PgResult<()> {
    let insert = tx
        .prepare(
            "INSERT INTO outbox (id, key, kind, lane, seq, channel, thread_key, thread_ts,
                 user_id, url, in_channel, role, job_id, body, version, sent_version, state, ts,
                 attempts, unknown, not_before, lease_owner, lease_until, last_error,
                 created_at, updated_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27)",
        )
        .await?;
    for OutboxCopy {
        row: r,
        lease_owner,
        lease_until,
    } in rows
    {
        let (thread_key, thread_ts) = match &r.thread {
            Some(Thread::Key(k)) => (Some(k), None),
            Some(Thread::Ts(ts)) => (None, Some(ts)),
            None => (None, None),
        };
        let body = encode(&r.message)?;
        let values: [&(dyn ToSql + Sync); 27] = [
            &r.id,
            &r.key,
            &r.kind.as_str(),
            &r.lane,
            &r.seq,
            &r.channel,
            &thread_key,
            &thread_ts,
            &r.user,
            &r.url,
            &r.in_channel,
            &r.role.as_str(),
            &r.job,
            &body,
            &r.version,
            &r.sent_version,
            &r.state.as_str(),
            &r.ts,
            &r.attempts,
            &r.unknown,
            &r.not_before,
            lease_owner,
            lease_until,
            &r.last_error,
            &r.created_at,
            &r.updated_at,
            &r.expires_at,
        ];
        tx.execute(&insert, &values).await?;
    }
    for (scope, not_before) in pacing {
        tx.execute(
            "INSERT INTO outbox_pacing (scope, not_before) VALUES ($1, $2)",
            &[scope, not_before],
        )
        .await?;
    }
    tx.execute(
        "SELECT setval(pg_get_serial_sequence('outbox', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM outbox",
        &[],
    )
    .await?;
    Ok(())
}
