//! The outbox's SQL for the SQLite store. Every function runs on the store's connection
//! inside the caller's transaction (or as one statement). The SQL avoids SQLite-only
//! syntax where it can: `INSERT … ON CONFLICT … RETURNING`, `CASE`, `COALESCE` and `MAX`
//! of two values written as `CASE` read the same on PostgreSQL.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::dump::OutboxCopy;
use super::outbox::{
    Delivery, Enqueued, NewMessage, OutboxRow, OutboxStats, RowKind, RowState, Settle, Thread,
    root_key,
};
use super::{Result, StoreError};
use crate::chat::Message;

/// How long an ephemeral message stays worth showing, and a response_url valid.
pub(crate) const REPLY_TTL_MS: i64 = 30 * 60 * 1000;
/// Slack's limit on uses of one response_url.
pub(crate) const RESPONSE_URL_USES: i64 = 5;

pub(super) const COLUMNS: &str = "o.id, o.key, o.kind, o.lane, o.seq, o.channel, o.thread_key, o.thread_ts, o.user_id, o.url,
    o.in_channel, o.role, o.job_id, o.body, o.version, o.sent_version, o.state, o.ts, o.attempts, o.unknown,
    o.not_before, o.created_at, o.updated_at, o.expires_at, o.last_error, r.ts, r.state";

pub(super) const FROM: &str = "FROM outbox o LEFT JOIN outbox r ON r.key = o.thread_key";

/// A row as read, its persisted enums still text (the PostgreSQL store reads the same).
pub(super) struct Raw {
    pub(super) id: i64,
    pub(super) key: Option<String>,
    pub(super) kind: String,
    pub(super) lane: String,
    pub(super) seq: i64,
    pub(super) channel: String,
    pub(super) thread_key: Option<String>,
    pub(super) thread_ts: Option<String>,
    pub(super) user: Option<String>,
    pub(super) url: Option<String>,
    pub(super) in_channel: bool,
    pub(super) role: String,
    pub(super) job: Option<i64>,
    pub(super) body: String,
    pub(super) version: i64,
    pub(super) sent_version: i64,
    pub(super) state: String,
    pub(super) ts: Option<String>,
    pub(super) attempts: i64,
    pub(super) unknown: bool,
    pub(super) not_before: i64,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) expires_at: Option<i64>,
    pub(super) last_error: Option<String>,
    pub(super) root_ts: Option<String>,
    pub(super) root_state: Option<String>,
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
    pub(super) fn typed(self) -> Result<OutboxRow> {
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

/// Every row in id order with the lease a sender holds on it (`corral migrate`).
pub(super) fn all_for_copy(conn: &Connection) -> Result<Vec<OutboxCopy>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS}, o.lease_owner, o.lease_until {FROM} ORDER BY o.id"
    ))?;
    let rows = stmt.query_map([], |r| Ok((raw(r)?, r.get(27)?, r.get(28)?)))?;
    rows.map(|r| {
        let (raw, lease_owner, lease_until) = r?;
        Ok(OutboxCopy {
            row: raw.typed()?,
            lease_owner,
            lease_until,
        })
    })
    .collect()
}

/// One statement, prepared once per connection.
fn exec(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(p)
}

pub(super) fn encode(m: &Message) -> Result<String> {
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
pub(crate) fn insert(conn: &Connection, messages: &[NewMessage]) -> Result<Vec<Enqueued>> {
    messages.iter().map(|m| insert_one(conn, m)).collect()
}

/// A new row's columns, from a message (the PostgreSQL store writes the same).
pub(super) struct NewRow {
    pub(super) key: Option<String>,
    pub(super) kind: RowKind,
    pub(super) lane: String,
    pub(super) channel: String,
    pub(super) thread_key: Option<String>,
    pub(super) thread_ts: Option<String>,
    pub(super) user: Option<String>,
    pub(super) url: Option<String>,
    pub(super) in_channel: bool,
    pub(super) expires_at: Option<i64>,
}

/// What writing a message means: new content for the row of a key, or a new row.
pub(super) enum Planned<'a> {
    Edit(&'a str),
    Row(NewRow),
}

/// The row a message makes; its lane is its channel (a post), its user in its channel
/// (ephemeral) or its response_url.
pub(super) fn plan(m: &NewMessage) -> Planned<'_> {
    Planned::Row(match &m.delivery {
        Delivery::Edit { key } => return Planned::Edit(key),
        Delivery::Post {
            key,
            channel,
            thread,
        } => {
            let (thread_key, thread_ts) = match thread {
                Some(Thread::Key(k)) => (Some(k.clone()), None),
                Some(Thread::Ts(ts)) => (None, Some(ts.clone())),
                None => (None, None),
            };
            NewRow {
                key: key.clone(),
                kind: RowKind::Post,
                lane: channel.clone(),
                channel: channel.clone(),
                thread_key,
                thread_ts,
                user: None,
                url: None,
                in_channel: false,
                expires_at: None,
            }
        }
        Delivery::Ephemeral {
            channel,
            user,
            thread_ts,
        } => NewRow {
            key: None,
            kind: RowKind::Ephemeral,
            lane: format!("ephemeral:{channel}:{user}"),
            channel: channel.clone(),
            thread_key: None,
            thread_ts: thread_ts.clone(),
            user: Some(user.clone()),
            url: None,
            in_channel: false,
            expires_at: Some(m.at_ms + REPLY_TTL_MS),
        },
        Delivery::Respond {
            url,
            in_channel,
            issued_at_ms,
        } => NewRow {
            key: None,
            kind: RowKind::Respond,
            lane: format!("respond:{url}"),
            channel: String::new(),
            thread_key: None,
            thread_ts: None,
            user: None,
            url: Some(url.clone()),
            in_channel: *in_channel,
            expires_at: Some(issued_at_ms + REPLY_TTL_MS),
        },
    })
}

fn insert_one(conn: &Connection, m: &NewMessage) -> Result<Enqueued> {
    let body = encode(&m.message)?;
    let row = match plan(m) {
        Planned::Edit(key) => return edit(conn, key, &body, m.at_ms),
        Planned::Row(row) => row,
    };
    if let Some(k) = &row.key
        && let Some(id) = conn
            .query_row("SELECT id FROM outbox WHERE key = ?1", [k], |r| r.get(0))
            .optional()?
    {
        return Ok(Enqueued::Duplicate(id));
    }
    let seq = next_seq(conn, &row.lane)?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO outbox (key, kind, lane, seq, channel, thread_key, thread_ts, user_id, url,
             in_channel, role, job_id, body, created_at, updated_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15)
         RETURNING id",
    )?;
    let id: i64 = stmt.query_row(
        params![
            row.key,
            row.kind.as_str(),
            row.lane,
            seq,
            row.channel,
            row.thread_key,
            row.thread_ts,
            row.user,
            row.url,
            row.in_channel,
            m.role.as_str(),
            m.job,
            body,
            m.at_ms,
            row.expires_at
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
pub(crate) fn work(conn: &Connection, now_ms: i64, limit: usize) -> Result<Vec<OutboxRow>> {
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

pub(crate) fn claim(
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

pub(crate) fn settle(conn: &Connection, id: i64, owner: &str, s: &Settle) -> Result<()> {
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
pub(crate) fn response_url_uses(conn: &Connection, url: &str) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM outbox WHERE url = ?1 AND kind = 'respond' AND state = 'done'",
        [url],
        |r| r.get(0),
    )?)
}

pub(crate) fn get(conn: &Connection, key: &str) -> Result<Option<OutboxRow>> {
    Ok(rows_where(conn, "WHERE o.key = ?1", &[&key])?.pop())
}

pub(crate) fn rows(conn: &Connection, job: Option<i64>, limit: usize) -> Result<Vec<OutboxRow>> {
    match job {
        Some(j) => rows_where(
            conn,
            "WHERE o.job_id = ?1 ORDER BY o.id LIMIT ?2",
            &[&j, &(limit as i64)],
        ),
        None => rows_where(conn, "ORDER BY o.id LIMIT ?1", &[&(limit as i64)]),
    }
}

/// The newest `limit` delivered posts of a channel, oldest first.
pub(crate) fn channel(conn: &Connection, channel: &str, limit: usize) -> Result<Vec<OutboxRow>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = rows_where(
        conn,
        "WHERE o.kind = 'post' AND o.channel = ?1 AND o.ts IS NOT NULL ORDER BY o.id DESC LIMIT ?2",
        &[&channel, &limit],
    )?;
    rows.reverse();
    Ok(rows)
}

pub(crate) fn stats(conn: &Connection) -> Result<OutboxStats> {
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

pub(crate) fn pacing(conn: &Connection) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached("SELECT scope, not_before FROM outbox_pacing")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn push_pacing(conn: &Connection, scope: &str, not_before: i64) -> Result<()> {
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

/// Grants a call slot in every scope at once (inside the caller's IMMEDIATE transaction,
/// which holds the write lock): see `Store::take_pacing`.
pub(crate) fn take_pacing(
    conn: &Connection,
    scopes: &[(String, i64)],
    now_ms: i64,
) -> Result<std::result::Result<(), i64>> {
    let mut blocked = i64::MIN;
    for (scope, _) in scopes {
        let nb: Option<i64> = conn
            .prepare_cached("SELECT not_before FROM outbox_pacing WHERE scope = ?1")?
            .query_row([scope], |r| r.get(0))
            .optional()?;
        blocked = blocked.max(nb.unwrap_or(0));
    }
    if blocked > now_ms {
        return Ok(Err(blocked));
    }
    for (scope, every) in scopes {
        push_pacing(conn, scope, now_ms.saturating_add(*every))?;
    }
    Ok(Ok(()))
}

/// A root posted outside the outbox (or before it existed): a delivered row.
pub(crate) fn set_root(conn: &Connection, job: i64, channel: &str, ts: &str) -> Result<()> {
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

pub(crate) fn roots(conn: &Connection, job: i64) -> Result<Vec<(String, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT channel, ts FROM outbox WHERE key = ?1 AND ts IS NOT NULL")?;
    let rows = stmt.query_map([root_key(job)], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
