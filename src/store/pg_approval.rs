//! Approvals and votes on PostgreSQL: `sqlite_approval.rs` statement for statement, run
//! inside the decision's transaction that `postgres.rs` opens.
//!
//! A decision about one job's approval takes [`lock`] first and holds it to its commit,
//! so decisions about one approval (votes from several replicas at the same moment, the
//! expiry sweeper) run one after another and each reads what the previous one wrote;
//! decisions about different jobs run side by side.

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;

use super::StoreError;
use super::pg_error::{PgResult, cached};
use super::sqlite_approval::typed;
use crate::door::Source;
use crate::job::approval::{ApprovalRecord, ApprovalState, Vote, VoteKind};

/// The advisory lock namespace of approval decisions (the key is the job id).
const APPROVALS: i32 = 0x6170_7072;

/// `pg_advisory_xact_lock(APPROVALS, job)`: held to the end of the transaction.
pub(super) async fn lock(c: &Object, job: i64) -> PgResult<()> {
    let stmt = cached(c, "SELECT pg_advisory_xact_lock($1, $2::int4)").await?;
    let key = i32::try_from(job).unwrap_or(i32::MAX) ^ ((job >> 31) as i32);
    c.execute(&stmt, &[&APPROVALS, &key]).await?;
    Ok(())
}

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

pub(super) async fn read_approval(c: &Object, job: i64) -> PgResult<Option<ApprovalRecord>> {
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

pub(super) async fn read_votes(c: &Object, job: i64, round: u32) -> PgResult<Vec<Vote>> {
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

pub(super) async fn write_approval(c: &impl GenericClient, a: &ApprovalRecord) -> PgResult<()> {
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

pub(super) async fn insert_vote(c: &impl GenericClient, v: &Vote) -> PgResult<()> {
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

/// Writes copied approvals and votes into an empty database (`corral migrate`), inside
/// the copy's transaction.
pub(super) async fn copy_in(
    tx: &deadpool_postgres::Transaction<'_>,
    approvals: &[ApprovalRecord],
    votes: &[Vote],
) -> PgResult<()> {
    for a in approvals {
        write_approval(tx, a).await?;
    }
    for v in votes {
        insert_vote(tx, v).await?;
    }
    Ok(())
}
