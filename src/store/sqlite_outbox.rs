//! The outbox's SQL for the SQLite store. Every function runs on the store's connection
//! inside the caller's transaction (or as one statement). The SQL avoids SQLite-only
//! syntax where it can: `INSERT … ON CONFLICT … RETURNING`, `CASE`, `COALESCE` and `MAX`
//! of two values written as `CASE` read the same on PostgreSQL.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::outbox::{
    Delivery, Enqueued, NewMessage, OutboxRow, OutboxStats, RowKind, RowState, Settle, Thread,
    root_key,
};
use super::{Result, StoreError};
use crate::chat::Message;

/// How long an ephemeral message stays worth showing, and a response_url valid.
pub const REPLY_TTL_MS: i64 = 30 * 60 * 1000;
/// Slack's limit on uses of one response_url.
pub const RESPONSE_URL_USES: i64 = 5;

const COLUMNS: &str = "o.id, o.key, o.kind, o.lane, o.seq, o.channel, o.thread_key, o.thread_ts, o.user_id, o.url,
    o.in_channel, o.role, o.job_id, o.body, o.version, o.sent_version, o.state, o.ts, o.attempts, o.unknown,
    o.not_before, o.created_at, o.updated_at, o.expires_at, o.last_error, r.ts, r.state";

const FROM: &str = "FROM outbox o LEFT JOIN outbox r ON r.key = o.thread_key";

struct Raw {
    id: i64,
    key: Option<String>,
    kind: String,
    lane: String,
    seq: i64,
    channel: String,
    thread_key: Option<String>,
    thread_ts: Option<String>,
    user: Option<String>,
    url: Option<String>,
    in_channel: bool,
    role: String,
    job: Option<i64>,
    body: String,
    version: i64,
    sent_version: i64,
    state: String,
    ts: Option<String>,
    attempts: i64,
    unknown: bool,
    not_before: i64,
    created_at: i64,
    updated_at: i64,
    expires_at: Option<i64>,
    last_error: Option<String>,
    root_ts: Option<String>,
    root_state: Option<String>,
}

fn raw(r: &Row) -> rusqlite::Result<Raw> {
    Ok(Raw {
        id: r.get(0)?,
        key: r.get(1)?,
        kind: r.get(2)?,
        lane: r.get(3)?,
        seq: r.get(4)?,
        channel: r.get(5)?,
        thread_key: r.get(6)?,
        thread_ts: r.get(7)?,
        user: r.get(8)?,
        url: r.get(9)?,
        in_channel: r.get(10)?,
        role: r.get(11)?,
        job: r.get(12)?,
        body: r.get(13)?,
        version: r.get(14)?,
        sent_version: r.get(15)?,
        state: r.get(16)?,
        ts: r.get(17)?,
        attempts: r.get(18)?,
        unknown: r.get(19)?,
        not_before: r.get(20)?,
        created_at: r.get(21)?,
        updated_at: r.get(22)?,
        expires_at: r.get(23)?,
        last_error: r.get(24)?,
        root_ts: r.get(25)?,
        root_state: r.get(26)?,
    })
}

fn corrupt(id: i64, what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} of outbox row {id} is {value:?}"))
}

impl Raw {
    fn typed(self) -> Result<OutboxRow> {
        let id = self.id;
        let message: Message = serde_json::from_str(&self.body)
            .map_err(|e| StoreError::Corrupt(format!("body of outbox row {id}: {e}")))?;
        let thread = match (self.thread_key, self.thread_ts) {
            (Some(k), _) => Some(Thread::Key(k)),
            (None, Some(ts)) => Some(Thread::Ts(ts)),
            (None, None) => None,
        };
        let root_state = match self.root_state {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| corrupt(id, "root state", &s))?),
        };
        Ok(OutboxRow {
            id,
            key: self.key,
            kind: self
                .kind
                .parse()
                .map_err(|_| corrupt(id, "kind", &self.kind))?,
            lane: self.lane,
            seq: self.seq,
            channel: self.channel,
            thread,
            root_ts: self.root_ts,
            root_state,
            user: self.user,
            url: self.url,
            in_channel: self.in_channel,
            role: self
                .role
                .parse()
                .map_err(|_| corrupt(id, "role", &self.role))?,
            job: self.job,
            message,
            version: self.version,
            sent_version: self.sent_version,
            state: self
                .state
                .parse()
                .map_err(|_| corrupt(id, "state", &self.state))?,
            ts: self.ts,
            attempts: self.attempts,
            unknown: self.unknown,
            not_before: self.not_before,
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
            last_error: self.last_error,
        })
    }
}

/// One statement, prepared once per connection.
fn exec(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(p)
}

fn encode(m: &Message) -> Result<String> {
    serde_json::to_string(m).map_err(|e| StoreError::Db(format!("cannot encode a message: {e}")))
}

/// The next sequence number of a lane: one more than its last pending row's (a lane with
/// nothing pending starts again; only pending rows are ever compared). Read through the
/// sender's index, inside the inserting transaction, which SQLite serialises; a
/// PostgreSQL store takes `pg_advisory_xact_lock(hashtext(lane))` first.
fn next_seq(conn: &Connection, lane: &str) -> Result<i64> {
    let mut stmt = conn.prepare_cached(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox WHERE state = 'pending' AND lane = ?1",
    )?;
    Ok(stmt.query_row([lane], |r| r.get(0))?)
}

/// Writes messages (inside the caller's transaction).
pub fn insert(conn: &Connection, messages: &[NewMessage]) -> Result<Vec<Enqueued>> {
    messages.iter().map(|m| insert_one(conn, m)).collect()
}

fn insert_one(conn: &Connection, m: &NewMessage) -> Result<Enqueued> {
    let body = encode(&m.message)?;
    let (kind, lane, channel, thread_key, thread_ts, user, url, in_channel, expires, key) =
        match &m.delivery {
            Delivery::Edit { key } => return edit(conn, key, &body, m.at_ms),
            Delivery::Post {
                key,
                channel,
                thread,
            } => {
                if let Some(k) = key
                    && let Some(id) = conn
                        .query_row("SELECT id FROM outbox WHERE key = ?1", [k], |r| r.get(0))
                        .optional()?
                {
                    return Ok(Enqueued::Duplicate(id));
                }
                let (tk, tt) = match thread {
                    Some(Thread::Key(k)) => (Some(k.clone()), None),
                    Some(Thread::Ts(ts)) => (None, Some(ts.clone())),
                    None => (None, None),
                };
                (
                    RowKind::Post,
                    channel.clone(),
                    channel.clone(),
                    tk,
                    tt,
                    None,
                    None,
                    false,
                    None,
                    key.clone(),
                )
            }
            Delivery::Ephemeral {
                channel,
                user,
                thread_ts,
            } => (
                RowKind::Ephemeral,
                format!("ephemeral:{channel}:{user}"),
                channel.clone(),
                None,
                thread_ts.clone(),
                Some(user.clone()),
                None,
                false,
                Some(m.at_ms + REPLY_TTL_MS),
                None,
            ),
            Delivery::Respond {
                url,
                in_channel,
                issued_at_ms,
            } => (
                RowKind::Respond,
                format!("respond:{url}"),
                String::new(),
                None,
                None,
                None,
                Some(url.clone()),
                *in_channel,
                Some(issued_at_ms + REPLY_TTL_MS),
                None,
            ),
        };
    let seq = next_seq(conn, &lane)?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO outbox (key, kind, lane, seq, channel, thread_key, thread_ts, user_id, url,
             in_channel, role, job_id, body, created_at, updated_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15)
         RETURNING id",
    )?;
    let id: i64 = stmt.query_row(
        params![
            key,
            kind.as_str(),
            lane,
            seq,
            channel,
            thread_key,
            thread_ts,
            user,
            url,
            in_channel,
            m.role.as_str(),
            m.job,
            body,
            m.at_ms,
            expires
        ],
        |r| r.get(0),
    )?;
    Ok(Enqueued::New(id))
}

/// An edit: new content for the row of `key`, coalesced into whatever is still to send.
fn edit(conn: &Connection, key: &str, body: &str, at_ms: i64) -> Result<Enqueued> {
    let row: Option<(i64, String, String)> = conn
        .query_row(
            "SELECT id, body, state FROM outbox WHERE key = ?1",
            [key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((id, old, state)) = row else {
        return Ok(Enqueued::Missing);
    };
    if !matches!(state.as_str(), "pending" | "edit" | "done") {
        return Ok(Enqueued::Missing);
    }
    if old == body {
        // Already what is (or will be) shown: nothing to send.
        return Ok(Enqueued::Coalesced(id));
    }
    exec(
        conn,
        "UPDATE outbox SET body = ?2, version = version + 1, updated_at = ?3,
             state = CASE WHEN state = 'done' THEN 'edit' ELSE state END,
             not_before = CASE WHEN state = 'done' THEN 0 ELSE not_before END
         WHERE id = ?1",
        params![id, body, at_ms],
    )?;
    Ok(Enqueued::Coalesced(id))
}

fn rows_where(conn: &Connection, tail: &str, p: &[&dyn rusqlite::ToSql]) -> Result<Vec<OutboxRow>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} {FROM} {tail}"))?;
    let rows = stmt.query_map(p, raw)?;
    rows.map(|r| r?.typed()).collect()
}

/// Lane heads and edits, oldest wish first. The heads come from a loose index scan
/// (a recursive walk from one pending lane to the next, then the lowest `seq` of each):
/// one index seek per lane with work, however many rows wait behind the heads.
pub fn work(conn: &Connection, now_ms: i64, limit: usize) -> Result<Vec<OutboxRow>> {
    rows_where(
        conn,
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
           AND (o.lease_until IS NULL OR o.lease_until < ?1)
         ORDER BY CASE WHEN o.state = 'edit' THEN o.updated_at ELSE o.created_at END, o.id
         LIMIT ?2",
        &[&now_ms, &(limit as i64)],
    )
}

pub fn claim(
    conn: &Connection,
    id: i64,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Option<OutboxRow>> {
    let n = exec(
        conn,
        "UPDATE outbox SET lease_owner = ?2, lease_until = ?3 + ?4, attempts = attempts + 1,
             unknown = CASE WHEN lease_until IS NOT NULL THEN 1 ELSE unknown END
         WHERE id = ?1 AND state IN ('pending', 'edit')
           AND (lease_until IS NULL OR lease_until < ?3)",
        params![id, owner, now_ms, lease_ms],
    )?;
    if n == 0 {
        return Ok(None);
    }
    let mut row = rows_where(conn, "WHERE o.id = ?1", &[&id])?.pop();
    if let Some(r) = row.as_mut()
        && r.kind == RowKind::Respond
        && let Some(url) = &r.url
        && response_url_uses(conn, url)? >= RESPONSE_URL_USES
    {
        // Its five uses are spent: as good as expired.
        r.expires_at = Some(0);
    }
    Ok(row)
}

const RELEASE: &str = "lease_owner = NULL, lease_until = NULL";

fn note_on_job(conn: &Connection, id: i64, error: &str) -> Result<()> {
    let row: Option<(Option<i64>, String)> = conn
        .query_row("SELECT job_id, role FROM outbox WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    if let Some((Some(job), role)) = row {
        exec(
            conn,
            // The first reason is the cause; later ones (replies of a root that failed) follow from it.
            "UPDATE jobs SET delivery = COALESCE(delivery, ?2) WHERE id = ?1",
            params![
                job,
                format!("the {role} message was not delivered: {error}")
            ],
        )?;
    }
    Ok(())
}

pub fn settle(conn: &Connection, id: i64, owner: &str, s: &Settle) -> Result<()> {
    let held = "WHERE id = ?1 AND lease_owner = ?2";
    match s {
        Settle::Delivered { version, ts } => {
            exec(
                conn,
                &format!(
                    "UPDATE outbox SET ts = COALESCE(?3, ts), sent_version = ?4,
                         state = CASE WHEN version > ?4 THEN 'edit' ELSE 'done' END,
                         unknown = 0, not_before = 0, last_error = NULL, {RELEASE} {held}"
                ),
                params![id, owner, ts, version],
            )?;
        }
        Settle::NotFound => {
            exec(
                conn,
                &format!("UPDATE outbox SET unknown = 0, {RELEASE} {held}"),
                params![id, owner],
            )?;
        }
        Settle::Retry {
            not_before_ms,
            error,
            unknown,
        } => {
            exec(
                conn,
                &format!(
                    "UPDATE outbox SET not_before = ?3, last_error = ?4,
                         unknown = CASE WHEN ?5 THEN 1 ELSE unknown END, {RELEASE} {held}"
                ),
                params![id, owner, not_before_ms, error, unknown],
            )?;
        }
        Settle::EditRefused { version, error } => {
            let n = exec(
        conn,
                &format!(
                    "UPDATE outbox SET sent_version = ?3, last_error = ?4,
                         state = CASE WHEN version > ?3 THEN 'edit' ELSE 'done' END, {RELEASE} {held}"
                ),
                params![id, owner, version, error],
            )?;
            if n > 0 {
                note_on_job(conn, id, error)?;
            }
        }
        Settle::Failed { error } | Settle::Dead { error } => {
            let state = if matches!(s, Settle::Failed { .. }) {
                RowState::Failed
            } else {
                RowState::Dead
            };
            let n = exec(
                conn,
                &format!("UPDATE outbox SET state = ?3, last_error = ?4, {RELEASE} {held}"),
                params![id, owner, state.as_str(), error],
            )?;
            if n > 0 {
                note_on_job(conn, id, error)?;
            }
        }
        Settle::Dropped { reason } => {
            exec(
                conn,
                &format!("UPDATE outbox SET state = 'dropped', last_error = ?3, {RELEASE} {held}"),
                params![id, owner, reason],
            )?;
        }
    }
    Ok(())
}

/// How many answers were already delivered through a response_url.
pub fn response_url_uses(conn: &Connection, url: &str) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM outbox WHERE url = ?1 AND kind = 'respond' AND state = 'done'",
        [url],
        |r| r.get(0),
    )?)
}

pub fn get(conn: &Connection, key: &str) -> Result<Option<OutboxRow>> {
    Ok(rows_where(conn, "WHERE o.key = ?1", &[&key])?.pop())
}

pub fn rows(conn: &Connection, job: Option<i64>, limit: usize) -> Result<Vec<OutboxRow>> {
    match job {
        Some(j) => rows_where(
            conn,
            "WHERE o.job_id = ?1 ORDER BY o.id LIMIT ?2",
            &[&j, &(limit as i64)],
        ),
        None => rows_where(conn, "ORDER BY o.id LIMIT ?1", &[&(limit as i64)]),
    }
}

pub fn stats(conn: &Connection) -> Result<OutboxStats> {
    let (depth, oldest): (i64, Option<i64>) = conn.query_row(
        "SELECT COUNT(*), MIN(CASE WHEN state = 'edit' THEN updated_at ELSE created_at END)
         FROM outbox WHERE state IN ('pending', 'edit')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let count = |state: &str| -> Result<i64> {
        Ok(conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE state = ?1",
            [state],
            |r| r.get(0),
        )?)
    };
    Ok(OutboxStats {
        depth: depth.max(0) as u64,
        oldest_ms: oldest,
        dead: count("dead")?.max(0) as u64,
        failed: count("failed")?.max(0) as u64,
    })
}

pub fn pacing(conn: &Connection) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached("SELECT scope, not_before FROM outbox_pacing")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn push_pacing(conn: &Connection, scope: &str, not_before: i64) -> Result<()> {
    exec(
        conn,
        "INSERT INTO outbox_pacing (scope, not_before) VALUES (?1, ?2)
         ON CONFLICT (scope) DO UPDATE SET not_before =
             CASE WHEN excluded.not_before > outbox_pacing.not_before
                  THEN excluded.not_before ELSE outbox_pacing.not_before END",
        params![scope, not_before],
    )?;
    Ok(())
}

/// A root posted outside the outbox (or before it existed): a delivered row.
pub fn set_root(conn: &Connection, job: i64, channel: &str, ts: &str) -> Result<()> {
    exec(
        conn,
        "INSERT INTO outbox (key, kind, lane, seq, channel, role, job_id, body, version,
             sent_version, state, ts, created_at, updated_at)
         VALUES (?1, 'post', ?2, 0, ?2, 'root', ?3, '{\"text\":\"\"}', 0, 0, 'done', ?4, 0, 0)
         ON CONFLICT (key) WHERE key IS NOT NULL
         DO UPDATE SET channel = excluded.channel, ts = excluded.ts",
        params![root_key(job), channel, job, ts],
    )?;
    Ok(())
}

pub fn roots(conn: &Connection, job: i64) -> Result<Vec<(String, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT channel, ts FROM outbox WHERE key = ?1 AND ts IS NOT NULL")?;
    let rows = stmt.query_map([root_key(job)], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
