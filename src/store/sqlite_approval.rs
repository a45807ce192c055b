//! Approvals and votes on SQLite: their statements, run inside the decision's
//! transaction that `sqlite.rs` opens (IMMEDIATE, so another process cannot interleave).

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Result, StoreError};
use crate::door::Source;
use crate::job::approval::{ApprovalRecord, ApprovalState, Vote, VoteKind};

/// A persisted enum's text back as the enum, or a `Corrupt` error naming the row.
pub(super) fn typed<T: std::str::FromStr>(what: &str, row: &str, text: &str) -> Result<T> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} of {row} is {text:?}")))
}

const APPROVAL_COLUMNS: &str = "job_id, round, rule, required, approvers, plan_digest, plan, state, revision, created_at, expires_at, reminded, decided_at, reason";

struct RawApproval {
    job_id: i64,
    round: i64,
    rule: String,
    required: i64,
    approvers: String,
    plan_digest: String,
    plan: String,
    state: String,
    revision: i64,
    created_at: i64,
    expires_at: Option<i64>,
    reminded: bool,
    decided_at: Option<i64>,
    reason: String,
}

fn approval_row(r: &Row) -> rusqlite::Result<RawApproval> {
    Ok(RawApproval {
        job_id: r.get(0)?,
        round: r.get(1)?,
        rule: r.get(2)?,
        required: r.get(3)?,
        approvers: r.get(4)?,
        plan_digest: r.get(5)?,
        plan: r.get(6)?,
        state: r.get(7)?,
        revision: r.get(8)?,
        created_at: r.get(9)?,
        expires_at: r.get(10)?,
        reminded: r.get(11)?,
        decided_at: r.get(12)?,
        reason: r.get(13)?,
    })
}

fn small(what: &str, row: &str, n: i64) -> Result<u32> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} of {row} is {n}")))
}

impl RawApproval {
    fn typed(self) -> Result<ApprovalRecord> {
        let row = format!("the approval of job {}", self.job_id);
        Ok(ApprovalRecord {
            job_id: self.job_id,
            round: small("round", &row, self.round)?,
            rule: self.rule,
            required: small("required", &row, self.required)?,
            approvers: serde_json::from_str(&self.approvers)
                .map_err(|e| StoreError::Corrupt(format!("approvers of {row}: {e}")))?,
            plan_digest: self.plan_digest,
            plan: self.plan,
            state: typed::<ApprovalState>("state", &row, &self.state)?,
            revision: small("revision", &row, self.revision)?,
            created_at: self.created_at,
            expires_at: self.expires_at,
            reminded: self.reminded,
            decided_at: self.decided_at,
            reason: self.reason,
        })
    }
}

pub(super) fn read_approval(conn: &Connection, job: i64) -> Result<Option<ApprovalRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE job_id = ?1"
    ))?;
    stmt.query_row([job], approval_row)
        .optional()?
        .map(RawApproval::typed)
        .transpose()
}

pub(super) fn read_votes(conn: &Connection, job: i64, round: u32) -> Result<Vec<Vote>> {
    votes_where(
        conn,
        "WHERE job_id = ?1 AND round = ?2 ORDER BY at, rowid",
        params![job, round],
    )
}

/// Every approval and every round's votes, in job order (`corral migrate`).
pub(super) fn all(conn: &Connection) -> Result<(Vec<ApprovalRecord>, Vec<Vote>)> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals ORDER BY job_id"
    ))?;
    let approvals = stmt
        .query_map([], approval_row)?
        .map(|r| r?.typed())
        .collect::<Result<Vec<_>>>()?;
    let votes = votes_where(conn, "ORDER BY job_id, round, at, rowid", [])?;
    Ok((approvals, votes))
}

fn votes_where(conn: &Connection, tail: &str, p: impl rusqlite::Params) -> Result<Vec<Vote>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT job_id, round, voter, vote, note, source, at, counted FROM votes {tail}"
    ))?;
    let rows = stmt.query_map(p, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, bool>(7)?,
        ))
    })?;
    rows.map(|r| {
        let (job_id, round, voter, kind, note, source, at, counted) = r?;
        let row = format!("the vote of {voter} on job {job_id}");
        Ok(Vote {
            job_id,
            round: small("round", &row, round)?,
            kind: typed::<VoteKind>("vote", &row, &kind)?,
            source: typed::<Source>("source", &row, &source)?,
            voter,
            note,
            at,
            counted,
        })
    })
    .collect()
}

pub(super) fn write_approval(conn: &Connection, a: &ApprovalRecord) -> Result<()> {
    let approvers = serde_json::to_string(&a.approvers)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode approvers: {e}")))?;
    conn.execute(
        "INSERT INTO approvals (job_id, round, rule, required, approvers, plan_digest, plan, state,
             revision, created_at, expires_at, reminded, decided_at, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (job_id) DO UPDATE SET round = excluded.round, rule = excluded.rule,
             required = excluded.required, approvers = excluded.approvers,
             plan_digest = excluded.plan_digest, plan = excluded.plan, state = excluded.state,
             revision = excluded.revision, expires_at = excluded.expires_at,
             reminded = excluded.reminded, decided_at = excluded.decided_at,
             reason = excluded.reason",
        params![
            a.job_id,
            a.round,
            a.rule,
            a.required,
            approvers,
            a.plan_digest,
            a.plan,
            a.state.as_str(),
            a.revision,
            a.created_at,
            a.expires_at,
            a.reminded,
            a.decided_at,
            a.reason
        ],
    )?;
    Ok(())
}

pub(super) fn insert_vote(conn: &Connection, v: &Vote) -> Result<()> {
    conn.execute(
        "INSERT INTO votes (job_id, round, voter, vote, note, source, at, counted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            v.job_id,
            v.round,
            v.voter,
            v.kind.as_str(),
            v.note,
            v.source.as_str(),
            v.at,
            v.counted
        ],
    )?;
    Ok(())
}

pub(super) fn approval(conn: &Connection, job: i64) -> Result<Option<(ApprovalRecord, Vec<Vote>)>> {
    let Some(a) = read_approval(conn, job)? else {
        return Ok(None);
    };
    let votes = read_votes(conn, job, a.round)?;
    Ok(Some((a, votes)))
}

pub(super) fn pending(conn: &Connection) -> Result<Vec<ApprovalRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE state = 'pending' ORDER BY job_id"
    ))?;
    let rows = stmt.query_map([], approval_row)?;
    rows.map(|r| r?.typed()).collect()
}
