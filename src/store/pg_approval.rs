//! Approvals and votes on PostgreSQL: `sqlite_approval.rs` statement for statement.
//!
//! A decision about one job's approval takes `pg_advisory_xact_lock(APPROVALS, job)`
//! first and holds it to its commit, so decisions about one approval (votes from several
//! replicas at the same moment, the expiry sweeper) run one after another and each reads
//! what the previous one wrote; decisions about different jobs run side by side. The
//! lock row is read `FOR SHARE` (the lock gate the completing vote re-applies); messages
//! are written before the job's row (outbox first, jobs second, as everywhere).

use std::sync::atomic::{AtomicU32, Ordering};

use deadpool_postgres::Object;
use tokio_postgres::Row;

use super::postgres::{
    PgResult, Tx, apply_job_change, cached, in_tx, jobs_where, read_lock, write_effects,
};
use super::sqlite::typed;
use super::{ApprovalDecision, Ballot, Decide, Decided, StoreError};
use crate::door::Source;
use crate::job::approval::{ApprovalRecord, ApprovalState, Vote, VoteKind};

/// The advisory lock namespace of approval decisions (the key is the job id).
const APPROVALS: i32 = 0x6170_7072;

const APPROVAL_COLUMNS: &str = "job_id, round, rule, required, approvers, plan_digest, plan, state, revision, created_at, expires_at, reminded, decided_at, reason";

fn small(r: &Row, i: usize, what: &str) -> PgResult<u32> {
    let n: i64 = r.try_get(i)?;
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("an approval's {what} is {n}")).into())
}

fn approval_row(r: &Row) -> PgResult<ApprovalRecord> {
    let job_id: i64 = r.try_get(0)?;
    let row = format!("the approval of job {job_id}");
    let approvers: String = r.try_get(4)?;
    let state: String = r.try_get(7)?;
    Ok(ApprovalRecord {
        job_id,
        round: small(r, 1, "round")?,
        rule: r.try_get(2)?,
        required: small(r, 3, "required")?,
        approvers: serde_json::from_str(&approvers)
            .map_err(|e| StoreError::Corrupt(format!("approvers of {row}: {e}")))?,
        plan_digest: r.try_get(5)?,
        plan: r.try_get(6)?,
        state: typed::<ApprovalState>("state", &row, &state)?,
        revision: small(r, 8, "revision")?,
        created_at: r.try_get(9)?,
        expires_at: r.try_get(10)?,
        reminded: r.try_get(11)?,
        decided_at: r.try_get(12)?,
        reason: r.try_get(13)?,
    })
}

async fn read_approval(c: &Object, job: i64) -> PgResult<Option<ApprovalRecord>> {
    let stmt = cached(
        c,
        &format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE job_id = $1"),
    )
    .await?;
    c.query_opt(&stmt, &[&job])
        .await?
        .as_ref()
        .map(approval_row)
        .transpose()
}

async fn read_votes(c: &Object, job: i64, round: u32) -> PgResult<Vec<Vote>> {
    let stmt = cached(
        c,
        "SELECT job_id, round, voter, vote, note, source, at, counted FROM votes
         WHERE job_id = $1 AND round = $2 ORDER BY at, voter",
    )
    .await?;
    let rows = c.query(&stmt, &[&job, &i64::from(round)]).await?;
    rows.iter()
        .map(|r| {
            let voter: String = r.try_get(2)?;
            let row = format!("the vote of {voter} on job {job}");
            let kind: String = r.try_get(3)?;
            let source: String = r.try_get(5)?;
            Ok(Vote {
                job_id: r.try_get(0)?,
                round: small(r, 1, "vote round")?,
                kind: typed::<VoteKind>("vote", &row, &kind)?,
                source: typed::<Source>("source", &row, &source)?,
                note: r.try_get(4)?,
                at: r.try_get(6)?,
                counted: r.try_get(7)?,
                voter,
            })
        })
        .collect()
}

async fn write_approval(c: &Object, a: &ApprovalRecord) -> PgResult<()> {
    let approvers = serde_json::to_string(&a.approvers)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode approvers: {e}")))?;
    let stmt = cached(
        c,
        "INSERT INTO approvals (job_id, round, rule, required, approvers, plan_digest, plan, state,
             revision, created_at, expires_at, reminded, decided_at, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (job_id) DO UPDATE SET round = excluded.round, rule = excluded.rule,
             required = excluded.required, approvers = excluded.approvers,
             plan_digest = excluded.plan_digest, plan = excluded.plan, state = excluded.state,
             revision = excluded.revision, expires_at = excluded.expires_at,
             reminded = excluded.reminded, decided_at = excluded.decided_at,
             reason = excluded.reason",
    )
    .await?;
    c.execute(
        &stmt,
        &[
            &a.job_id,
            &i64::from(a.round),
            &a.rule,
            &i64::from(a.required),
            &approvers,
            &a.plan_digest,
            &a.plan,
            &a.state.as_str(),
            &i64::from(a.revision),
            &a.created_at,
            &a.expires_at,
            &a.reminded,
            &a.decided_at,
            &a.reason,
        ],
    )
    .await?;
    Ok(())
}

async fn insert_vote(c: &Object, v: &Vote) -> PgResult<()> {
    let stmt = cached(
        c,
        "INSERT INTO votes (job_id, round, voter, vote, note, source, at, counted)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .await?;
    c.execute(
        &stmt,
        &[
            &v.job_id,
            &i64::from(v.round),
            &v.voter,
            &v.kind.as_str(),
            &v.note,
            &v.source.as_str(),
            &v.at,
            &v.counted,
        ],
    )
    .await?;
    Ok(())
}

async fn decide_body(
    c: &Object,
    job: i64,
    decide: &Decide<Ballot, ApprovalDecision, String>,
) -> PgResult<Tx<std::result::Result<(Ballot, ApprovalDecision), String>>> {
    let lock = cached(c, "SELECT pg_advisory_xact_lock($1, $2::int4)").await?;
    let key = i32::try_from(job).unwrap_or(i32::MAX) ^ ((job >> 31) as i32);
    c.execute(&lock, &[&APPROVALS, &key]).await?;
    let Some(record) = jobs_where(c, "WHERE id = $1", &[&job]).await?.pop() else {
        return Ok(Tx::Rollback(Err(format!("There is no job #{job}."))));
    };
    let approval = read_approval(c, job).await?;
    let votes = match &approval {
        Some(a) => read_votes(c, job, a.round).await?,
        None => Vec::new(),
    };
    let before = Ballot {
        job: record,
        approval,
        votes,
        lock: read_lock(c, "FOR SHARE").await?,
    };
    let decision = match decide(&before) {
        Ok(d) => d,
        Err(refusal) => return Ok(Tx::Rollback(Err(refusal))),
    };
    if decision.approval.job_id != job {
        return Err(StoreError::Db(format!(
            "an approval decision for job {job} wrote job {}",
            decision.approval.job_id
        ))
        .into());
    }
    write_approval(c, &decision.approval).await?;
    if let Some(v) = &decision.vote {
        insert_vote(c, v).await?;
    }
    write_effects(c, &decision.effects).await?;
    if let Some(change) = &decision.job {
        apply_job_change(c, job, change, decision.at).await?;
    }
    Ok(Tx::Commit(Ok((before, decision))))
}

/// The decision's transaction, run again on a conflict; counts the attempts.
pub(super) async fn decide(
    c: &Object,
    job: i64,
    decide: &Decide<Ballot, ApprovalDecision, String>,
) -> PgResult<std::result::Result<Decided, String>> {
    let attempts = AtomicU32::new(0);
    let out = in_tx(c, || {
        attempts.fetch_add(1, Ordering::Relaxed);
        decide_body(c, job, decide)
    })
    .await?;
    Ok(out.map(|(before, decision)| Decided {
        before,
        decision,
        attempts: attempts.load(Ordering::Relaxed),
    }))
}

pub(super) async fn approval(
    c: &Object,
    job: i64,
) -> PgResult<Option<(ApprovalRecord, Vec<Vote>)>> {
    let Some(a) = read_approval(c, job).await? else {
        return Ok(None);
    };
    let votes = read_votes(c, job, a.round).await?;
    Ok(Some((a, votes)))
}

pub(super) async fn pending(c: &Object) -> PgResult<Vec<ApprovalRecord>> {
    let stmt = cached(
        c,
        &format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE state = 'pending' ORDER BY job_id"
        ),
    )
    .await?;
    c.query(&stmt, &[])
        .await?
        .iter()
        .map(approval_row)
        .collect()
}
