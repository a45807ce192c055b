//! Approvals: when a job must wait for people, their votes from every door, expiry.
//!
//! * **When to ask** ([`before_run`], called by the runner before a job's work): a job
//!   whose command family an `[[approval]]` rule names is planned first (the same
//!   command as a dry run: Rancher and hosts are only read), and the rule's
//!   `environments` regex is matched against what the plan touches (group names:
//!   environments, host sets; and the targets that change). A match stores the approval
//!   (`awaiting_approval`) with the card as the job's root and the full plan as a thread
//!   reply; nothing is sent to Rancher or any host.
//! * **Bound to the plan**: the approval keeps the plan's digest. When the approved job
//!   starts it is planned again; a different plan does not run: the approval opens again
//!   (a new round, earlier votes no longer count) and the thread says why.
//! * **Votes** ([`App::vote`]): one store decision keyed by the job ([`decide_vote`]):
//!   the rules of [`crate::job::approval::judge`]; the vote that completes it re-applies
//!   the lock gate in the same transaction. Only the caller whose transaction completed
//!   the approval starts the job, so it runs once however many clicks arrive at once.
//! * **Expiry** ([`App::sweep_approvals`]): an approval past `expires` is cancelled and
//!   the thread says so; one reminder at 80 % of the time. Driven by the app's clock;
//!   `corral serve` sweeps on start (pending approvals survive a restart) and then
//!   whenever the next one falls due.

use std::time::Duration;

use super::card::{self, Plan};
use super::dispatch::{self, Domains};
use super::{App, GateRequest, gate};
use crate::chat::Message;
use crate::command::{self, JobCmd};
use crate::door::Source;
use crate::job::approval::{
    ApprovalRecord, ApprovalState, Judgement, Vote, VoteKind, is_self_named, judge,
};
use crate::job::{JobStatus, Outcome, Progress, ProgressTx};
use crate::policy::{ApprovalRule, Policy};
use crate::store::outbox::root_key;
use crate::store::{
    ApprovalDecision, AuditEntry, Ballot, Effects, JobChange, JobRecord, NewMessage, Role, Store,
    Thread,
};
use crate::text::{format_duration, person, sanitize, when};

/// What the runner does with a job after [`before_run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Gate {
    /// No rule applies, or this exact plan was approved: run it.
    Run,
    /// It waits for approval (or was ended): the runner stops here.
    Wait,
}

/// The same command as a dry run: planned, nothing changed.
pub(crate) fn dry(cmd: &JobCmd) -> JobCmd {
    let mut cmd = cmd.clone();
    match &mut cmd {
        JobCmd::Catalog(c) => c.dry_run = true,
        JobCmd::Image(i) => i.dry_run = true,
        JobCmd::Deploy(d) => d.dry_run = true,
    }
    cmd
}

fn is_dry(cmd: &JobCmd) -> bool {
    match cmd {
        JobCmd::Catalog(c) => c.dry_run,
        JobCmd::Image(i) => i.dry_run,
        JobCmd::Deploy(d) => d.dry_run,
    }
}

/// Plans `cmd` without changing anything: its dry run's plan event.
pub(crate) async fn plan(
    domains: &Domains,
    store: &dyn Store,
    job: &JobRecord,
    cmd: &JobCmd,
) -> Result<Plan, String> {
    let (tx, mut rx) = ProgressTx::channel();
    let result = dispatch::run(domains, store, job, &dry(cmd), tx).await;
    let mut plan = None;
    while let Ok(ev) = rx.try_recv() {
        if let Progress::Plan { title, groups } = ev {
            plan.get_or_insert(Plan { title, groups });
        }
    }
    match (plan, result) {
        (Some(p), _) => Ok(p),
        (None, Err(e)) => Err(e.0),
        (None, Ok(o)) => Err(if o.summary.is_empty() {
            "it produced no plan".into()
        } else {
            o.summary
        }),
    }
}

/// Whether a rule applies to a plan: its command family, and its `environments` regex
/// against the groups and the targets that change.
fn applies(rule: &ApprovalRule, cmd: &JobCmd, plan: &Plan) -> bool {
    let family = cmd.command().family();
    if !family.is_some_and(|f| rule.commands.contains(&f)) {
        return false;
    }
    match &rule.environments {
        None => plan.active() > 0,
        Some(_) => !card::production_targets(plan, rule.environments.as_ref()).is_empty(),
    }
}

/// The first rule that applies, with its index (`approval[i]`). Several matching: the one
/// needing the most approvals wins (the strictest).
pub(crate) fn matching_rule<'p>(
    policy: &'p Policy,
    cmd: &JobCmd,
    plan: &Plan,
) -> Option<(usize, &'p ApprovalRule)> {
    policy
        .approvals
        .iter()
        .enumerate()
        .filter(|(_, r)| applies(r, cmd, plan))
        .max_by_key(|(i, r)| (r.required, std::cmp::Reverse(*i)))
}

fn names_family(policy: &Policy, cmd: &JobCmd) -> bool {
    let family = cmd.command().family();
    policy
        .approvals
        .iter()
        .any(|r| family.is_some_and(|f| r.commands.contains(&f)))
}

/// What the runner needs to decide about approval before a job's work.
pub(crate) struct Before<'a> {
    pub policy: &'a Policy,
    pub domains: &'a Domains,
    pub store: &'a dyn Store,
    pub now: i64,
    pub now_ms: i64,
}

/// Decides whether a job may run now, opening (or re-opening) its approval when needed.
/// Dry runs never wait: they change nothing.
pub(crate) async fn before_run(b: Before<'_>, job: &JobRecord, cmd: &JobCmd) -> Gate {
    if is_dry(cmd) || !names_family(b.policy, cmd) {
        return Gate::Run;
    }
    let plan = match plan(b.domains, b.store, job, cmd).await {
        Ok(p) => p,
        Err(why) => {
            // Without a plan nothing can say whether a rule applies: the job does not run.
            end(b.store, job, b.now, b.now_ms, format!(
                "corral could not plan this job, so it cannot tell whether it needs approval: {why}"
            ))
            .await;
            return Gate::Wait;
        }
    };
    let existing = match b.store.approval(job.id).await {
        Ok(a) => a.map(|(a, _)| a),
        Err(e) => {
            tracing::error!(job = job.id, error = %e, "cannot read the job's approval");
            return Gate::Wait;
        }
    };
    let digest = plan.digest();
    if let Some(a) = &existing
        && a.state == ApprovalState::Approved
        && a.plan_digest == digest
    {
        return Gate::Run;
    }
    let Some((index, rule)) = matching_rule(b.policy, cmd, &plan) else {
        return Gate::Run;
    };
    let open = Open {
        rule: format!("approval[{index}]"),
        required: rule.required,
        approvers: rule.approvers.clone(),
        expires: rule.expires,
        targets: card::production_targets(&plan, rule.environments.as_ref()),
        plan,
        now: b.now,
        now_ms: b.now_ms,
    };
    match b
        .store
        .decide_approval(job.id, Box::new(move |ballot| decide_open(ballot, &open)))
        .await
    {
        Ok(Ok(_)) => tracing::info!(job = job.id, "job awaits approval"),
        Ok(Err(why)) => tracing::warn!(job = job.id, why, "approval not opened"),
        Err(e) => tracing::error!(job = job.id, error = %e, "approval not stored"),
    }
    Gate::Wait
}

/// Ends a job that cannot run, saying why in its thread.
async fn end(store: &dyn Store, job: &JobRecord, now: i64, now_ms: i64, why: String) {
    let mut messages = Vec::new();
    if let Some(ch) = &job.channel {
        messages.push(
            NewMessage::post(now_ms, ch.clone(), root_text(job, "❌ not run"))
                .keyed(root_key(job.id))
                .role(Role::Root)
                .job(job.id),
        );
        messages.push(
            NewMessage::reply(
                now_ms,
                ch.clone(),
                Thread::Key(root_key(job.id)),
                Message::text(sanitize(&why)),
            )
            .role(Role::Note)
            .job(job.id),
        );
    }
    let change = JobChange::Finish {
        status: JobStatus::Failed,
        outcome: Outcome {
            summary: why,
            ..Outcome::default()
        },
    };
    if let Err(e) = store
        .change_job(job.id, change, now, Effects::messages(messages))
        .await
    {
        tracing::error!(job = job.id, error = %e, "cannot end the job");
    }
}

fn root_text(job: &JobRecord, state: &str) -> Message {
    Message::text(format!(
        "*Job #{}* `{}` — {state}",
        job.id,
        sanitize(&job.command)
    ))
}

/// What opening an approval needs (owned: the decision may run again).
pub struct Open {
    pub rule: String,
    pub required: u32,
    pub approvers: Vec<String>,
    pub expires: Option<Duration>,
    pub targets: Vec<String>,
    pub plan: Plan,
    pub now: i64,
    pub now_ms: i64,
}

fn thread_reply(job: &JobRecord, now_ms: i64, role: Role, text: String) -> Option<NewMessage> {
    job.channel.as_ref().map(|ch| {
        NewMessage::reply(
            now_ms,
            ch.clone(),
            Thread::Key(root_key(job.id)),
            Message::text(text),
        )
        .role(role)
        .job(job.id)
    })
}

/// The approval record of job `job_id`'s next round (1 when it has none), pending, for
/// the plan in `o`.
fn new_round(job_id: i64, previous: Option<&ApprovalRecord>, o: &Open) -> ApprovalRecord {
    ApprovalRecord {
        job_id,
        round: previous.map_or(1, |a| a.round + 1),
        rule: o.rule.clone(),
        required: o.required,
        approvers: o.approvers.clone(),
        plan_digest: o.plan.digest(),
        plan: o.plan.to_json(),
        state: ApprovalState::Pending,
        revision: previous.map_or(0, |a| a.revision + 1),
        created_at: o.now,
        expires_at: o
            .expires
            .map(|d| o.now + i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)),
        reminded: false,
        decided_at: None,
        reason: String::new(),
    }
}

/// Opens a job's approval (round 1), or opens it again (a new round) because the plan it
/// was approved for changed. The card is the job's root; the full plan a thread reply.
pub fn decide_open(ballot: &Ballot, o: &Open) -> Result<ApprovalDecision, String> {
    let job = &ballot.job;
    if job.status.is_final() {
        return Err(format!("job #{} already ended", job.id));
    }
    let previous = ballot.approval.as_ref();
    if previous.is_some_and(|a| a.state == ApprovalState::Pending) {
        return Err(format!("job #{} already awaits approval", job.id));
    }
    let approval = new_round(job.id, previous, o);
    let mut shown = job.clone();
    shown.status = JobStatus::AwaitingApproval;
    let card = card::card(&shown, &approval, &[], &o.targets);
    let mut messages = Vec::new();
    if let Some(ch) = &job.channel {
        messages.push(match previous {
            None => NewMessage::post(o.now_ms, ch.clone(), card)
                .keyed(root_key(job.id))
                .role(Role::Root)
                .job(job.id),
            Some(_) => NewMessage::edit(o.now_ms, root_key(job.id), card).job(job.id),
        });
    }
    if previous.is_some() {
        messages.extend(thread_reply(
            job,
            o.now_ms,
            Role::Note,
            "🔁 *The plan changed since it was approved*, so it did not run. Here is the new plan; it needs approval again (earlier votes were for the old plan).".into(),
        ));
    }
    messages.extend(thread_reply(job, o.now_ms, Role::Plan, o.plan.full_text()));
    let needed = format!(
        "{} approval{} from {} ({})",
        o.required,
        if o.required == 1 { "" } else { "s" },
        o.approvers.join(", "),
        o.rule,
    );
    let by = approval
        .expires_at
        .map(|t| format!(", by {}", when(t)))
        .unwrap_or_default();
    messages.extend(thread_reply(
        job,
        o.now_ms,
        Role::Note,
        format!("✋ This job waits for {}{by}.", sanitize(&needed)),
    ));
    Ok(ApprovalDecision {
        at: o.now,
        approval,
        vote: None,
        job: Some(JobChange::Status(JobStatus::AwaitingApproval)),
        effects: Effects {
            audit: vec![AuditEntry {
                at: o.now,
                actor: job.requested_by.clone(),
                action: format!("job {} awaits approval", job.id),
                detail: needed,
                source: job.source,
            }],
            messages,
        },
    })
}

/// One vote, as a door hands it in (owned: the decision may run again).
#[derive(Debug, Clone)]
pub struct Cast {
    pub voter: String,
    pub kind: VoteKind,
    pub note: String,
    pub source: Source,
    /// Whether the voter may approve this job (the policy's answer, with why not).
    pub eligible: Result<(), String>,
    /// The production targets the card's confirm dialog names.
    pub targets: Vec<String>,
    /// The freeze window open now, if any (the lock gate the completing vote applies).
    pub frozen: Option<crate::lock::Frozen>,
    pub now: i64,
    pub now_ms: i64,
}

/// The vote decision: [`judge`], then the approval's new state, the job's change (queued
/// when complete and the lock still allows it; cancelled on a deny or a lock refusal),
/// the card's edit, a thread reply naming the voter, and the audit row.
pub fn decide_vote(ballot: &Ballot, c: &Cast) -> Result<ApprovalDecision, String> {
    let job = &ballot.job;
    let Some(a) = &ballot.approval else {
        return Err(format!("Job #{} is not waiting for approval.", job.id));
    };
    let j = judge(
        a,
        &ballot.votes,
        &job.requested_by,
        &c.voter,
        &c.eligible,
        c.kind,
        c.now,
    )?;
    let vote = Vote {
        job_id: job.id,
        round: a.round,
        voter: c.voter.clone(),
        kind: c.kind,
        note: c.note.clone(),
        source: c.source,
        at: c.now,
        counted: j.counted,
    };
    let mut next = a.clone();
    next.revision += 1;
    let mut votes = ballot.votes.clone();
    votes.push(vote.clone());
    let note = note_suffix(&c.note);
    let mut lines = vec![vote_line(c, &j, a.required, &note)];
    let settled = if j.denies {
        Some(denied(&mut next, c, &note))
    } else if j.completes {
        Some(completed(&mut next, ballot, c, &votes))
    } else {
        None
    };
    let mut effects = Effects::default();
    let (status, change) = match settled {
        Some(s) => {
            lines.push(s.line);
            effects.audit.extend(s.audit);
            (s.status, Some(s.change))
        }
        None => (job.status, None),
    };
    effects
        .audit
        .push(vote_audit(c, a, &next, j.counted, job.id));
    let mut shown = job.clone();
    shown.status = status;
    effects.messages.push(
        NewMessage::edit(
            c.now_ms,
            root_key(job.id),
            card::card(&shown, &next, &votes, &c.targets),
        )
        .job(job.id),
    );
    effects
        .messages
        .extend(thread_reply(job, c.now_ms, Role::Note, lines.join("\n")));
    Ok(ApprovalDecision {
        at: c.now,
        approval: next,
        vote: Some(vote),
        job: change,
        effects,
    })
}

/// Refuses a vote cast for `round` when the approval has moved on to another.
fn stale_round(ballot: &Ballot, round: Option<u32>) -> Result<(), String> {
    match (round, &ballot.approval) {
        (Some(r), Some(a)) if a.round != r => Err(stale_card_text(ballot.job.id)),
        _ => Ok(()),
    }
}

/// What the clicker of an out-of-date card is told.
pub(crate) fn stale_card_text(job_id: i64) -> String {
    format!(
        "That card is out of date: the plan of job #{job_id} changed and it asks again in its thread. Nothing was recorded."
    )
}

/// `": note"` (sanitised) for the thread, or nothing.
fn note_suffix(note: &str) -> String {
    if note.is_empty() {
        String::new()
    } else {
        format!(": {}", sanitize(note))
    }
}

/// The thread's line for one vote.
fn vote_line(c: &Cast, j: &Judgement, required: u32, note: &str) -> String {
    let who = person(&c.voter);
    match (c.kind, j.counted) {
        (VoteKind::Approve, true) => {
            format!("✅ {who} approved ({} of {required}){note}", j.approvals)
        }
        (VoteKind::Approve, false) => format!(
            "☑️ {who} approved, but only one self-named identity counts toward the {required} needed{note}"
        ),
        (VoteKind::Deny, _) => format!("🚫 {who} denied the job{note}"),
    }
}

/// What a deciding vote (a deny, or the approval that completes it) does to the job.
struct Settled {
    status: JobStatus,
    change: JobChange,
    /// The thread's second line.
    line: String,
    audit: Vec<AuditEntry>,
}

fn finish(status: JobStatus, summary: String) -> JobChange {
    JobChange::Finish {
        status,
        outcome: Outcome {
            summary,
            ..Outcome::default()
        },
    }
}

/// A deny: the approval is denied and the job cancelled.
fn denied(next: &mut ApprovalRecord, c: &Cast, note: &str) -> Settled {
    next.state = ApprovalState::Denied;
    next.decided_at = Some(c.now);
    next.reason = format!("denied by {}{}", c.voter, note);
    Settled {
        status: JobStatus::Cancelled,
        change: finish(JobStatus::Cancelled, next.reason.clone()),
        line: "The job is cancelled; nothing was changed.".into(),
        audit: Vec::new(),
    }
}

/// The completing approval: the lock gate again, in this same transaction; the job is
/// queued when it still passes, else it ends refused.
fn completed(next: &mut ApprovalRecord, ballot: &Ballot, c: &Cast, votes: &[Vote]) -> Settled {
    let job = &ballot.job;
    next.decided_at = Some(c.now);
    let forced = command::parse_text(&job.command).is_ok_and(|cmd| cmd.forced());
    let gate_req = GateRequest {
        user: job.requested_by.clone(),
        source: job.source,
        forced,
        command: job.command.clone(),
        now: c.now,
        frozen: c.frozen.clone(),
    };
    match gate(&gate_req, &ballot.lock) {
        Ok(e) => {
            next.state = ApprovalState::Approved;
            Settled {
                status: JobStatus::Queued,
                change: JobChange::Status(JobStatus::Queued),
                line: format!("👍 Approved by {}. The job starts now.", voters(votes)),
                audit: e.audit,
            }
        }
        Err(refusal) => {
            next.state = ApprovalState::Refused;
            next.reason = refusal.clone();
            Settled {
                status: JobStatus::Cancelled,
                change: finish(
                    JobStatus::Cancelled,
                    format!("approved, but refused by the lock: {refusal}"),
                ),
                line: format!(
                    "⛔ Approved, but the lock no longer allows this job, so it does not run: {refusal}"
                ),
                audit: Vec::new(),
            }
        }
    }
}

/// The audit row of a recorded vote.
fn vote_audit(
    c: &Cast,
    a: &ApprovalRecord,
    next: &ApprovalRecord,
    counted: bool,
    job: i64,
) -> AuditEntry {
    AuditEntry {
        at: c.now,
        actor: c.voter.clone(),
        action: format!("vote {} job {job}", c.kind),
        detail: format!(
            "round {}, {}{}",
            a.round,
            if counted { "counted" } else { "not counted" },
            if next.state == ApprovalState::Pending {
                String::new()
            } else {
                format!(", approval {}", next.state)
            }
        ),
        source: c.source,
    }
}

fn voters(votes: &[Vote]) -> String {
    votes
        .iter()
        .filter(|v| v.counted && v.kind == VoteKind::Approve)
        .map(|v| person(&v.voter))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Expiry and the reminder: what a sweep decides about one pending approval at `now`.
pub fn decide_sweep(ballot: &Ballot, now: i64, now_ms: i64) -> Result<ApprovalDecision, String> {
    let Some(a) = &ballot.approval else {
        return Err("no approval".into());
    };
    let Some(expires) = a.expires_at else {
        return Err("never expires".into());
    };
    if a.state != ApprovalState::Pending {
        return Err("decided".into());
    }
    if now >= expires {
        return Ok(expire(ballot, a, expires, now, now_ms));
    }
    if !a.reminded && now >= remind_at(a).unwrap_or(i64::MAX) {
        return Ok(remind(ballot, a, expires, now, now_ms));
    }
    Err("nothing due".into())
}

/// An approval past `expires`: cancelled, the card edited, the thread told.
fn expire(
    ballot: &Ballot,
    a: &ApprovalRecord,
    expires: i64,
    now: i64,
    now_ms: i64,
) -> ApprovalDecision {
    let job = &ballot.job;
    let mut next = a.clone();
    next.revision += 1;
    let targets = card::production_targets(&Plan::from_json(&a.plan), None);
    next.state = ApprovalState::Expired;
    next.decided_at = Some(now);
    let after = format_duration(Duration::from_secs((expires - a.created_at).max(0) as u64));
    next.reason = format!("nobody approved it within {after}");
    let mut shown = job.clone();
    shown.status = JobStatus::Cancelled;
    let mut messages = vec![
        NewMessage::edit(
            now_ms,
            root_key(job.id),
            card::card(&shown, &next, &ballot.votes, &targets),
        )
        .job(job.id),
    ];
    messages.extend(thread_reply(
        job,
        now_ms,
        Role::Note,
        format!(
            "⌛ *Expired*: the approval was not given within {after} ({} of {} approvals). The job is cancelled; nothing was changed.",
            ballot.votes.iter().filter(|v| v.counted && v.kind == VoteKind::Approve).count(),
            a.required
        ),
    ));
    ApprovalDecision {
        at: now,
        approval: next,
        vote: None,
        job: Some(finish(
            JobStatus::Cancelled,
            format!("approval expired after {after}"),
        )),
        effects: Effects {
            audit: vec![AuditEntry {
                at: now,
                actor: "corral".into(),
                action: format!("approval of job {} expired", job.id),
                detail: after,
                source: job.source,
            }],
            messages,
        },
    }
}

/// The one reminder, at 80 % of the time to expiry.
fn remind(
    ballot: &Ballot,
    a: &ApprovalRecord,
    expires: i64,
    now: i64,
    now_ms: i64,
) -> ApprovalDecision {
    let mut next = a.clone();
    next.revision += 1;
    next.reminded = true;
    let messages = thread_reply(
        &ballot.job,
        now_ms,
        Role::Note,
        format!(
            "⏰ Reminder for {}: this job still needs {} approval{} and expires {}.",
            sanitize(&a.approvers.join(", ")),
            a.required,
            if a.required == 1 { "" } else { "s" },
            when(expires)
        ),
    )
    .into_iter()
    .collect();
    ApprovalDecision {
        at: now,
        approval: next,
        vote: None,
        job: None,
        effects: Effects::messages(messages),
    }
}

/// When the reminder falls due: at 80 % of the time to expiry.
pub(crate) fn remind_at(a: &ApprovalRecord) -> Option<i64> {
    a.expires_at
        .map(|e| a.created_at + (e - a.created_at).max(0) * 4 / 5)
}

/// What a vote from any door got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteReply {
    /// It was recorded.
    pub ok: bool,
    /// This vote completed the approval (its caller started the job).
    pub completed: bool,
    pub text: String,
    /// Store transaction attempts (more than 1: a conflict was decided again).
    pub attempts: u32,
}

fn refused(text: String) -> VoteReply {
    VoteReply {
        ok: false,
        completed: false,
        text,
        attempts: 0,
    }
}

/// What the voter is told about a recorded vote.
fn vote_text(job_id: i64, d: &ApprovalDecision) -> String {
    match d.approval.state {
        ApprovalState::Denied => format!("You denied job #{job_id}; it is cancelled."),
        ApprovalState::Approved => {
            format!("Your approval completed job #{job_id}; it starts now.")
        }
        ApprovalState::Refused => format!(
            "Job #{job_id} is approved, but the lock refused it: {}",
            d.approval.reason
        ),
        _ if d.vote.as_ref().is_some_and(|v| !v.counted) => format!(
            "Your approval of job #{job_id} is recorded, but does not count: only one self-named identity counts."
        ),
        _ => format!("Your vote on job #{job_id} is recorded."),
    }
}

impl App {
    /// Whether `voter` may approve under a rule's approver list. Self-named identities
    /// (`api:`, `cli:`, `playground:`) only when listed by that exact id.
    pub(crate) async fn may_approve(
        &self,
        approvers: &[String],
        rule: &str,
        voter: &str,
    ) -> Result<(), String> {
        let policy = &self.config.policy;
        if is_self_named(voter) {
            let listed = approvers
                .iter()
                .any(|r| r == voter || policy.lists(r, voter));
            return if listed {
                Ok(())
            } else {
                Err(format!(
                    "`{}` names itself; it may approve only when {rule}.approvers lists that exact id.",
                    sanitize(voter)
                ))
            };
        }
        if approvers.iter().any(|r| policy.in_role(voter, r)) {
            return Ok(());
        }
        let groups: Vec<String> = approvers.iter().flat_map(|r| policy.groups_of(r)).collect();
        let (member, failed) = self.groups.any_has(&groups, voter).await;
        if member {
            return Ok(());
        }
        let mut why = format!(
            "You may not approve this job: {rule} needs a member of {} ({rule}.approvers).",
            sanitize(&approvers.join(", "))
        );
        for f in failed {
            why.push_str(&format!(" Note: {}.", sanitize(&f)));
        }
        Err(why)
    }

    /// A vote from any door, decided in one store transaction. Starts the job when this
    /// vote completed the approval.
    pub async fn vote(
        &self,
        job_id: i64,
        voter: &str,
        source: Source,
        kind: VoteKind,
        note: &str,
    ) -> VoteReply {
        self.vote_in_round(job_id, voter, source, kind, note, None)
            .await
    }

    /// [`App::vote`] for a card's button: with `round`, the vote counts only while the
    /// approval is still in that round, judged inside the transaction (a plan that
    /// changed a moment before is never approved by a click on the old card).
    pub(crate) async fn vote_in_round(
        &self,
        job_id: i64,
        voter: &str,
        source: Source,
        kind: VoteKind,
        note: &str,
        round: Option<u32>,
    ) -> VoteReply {
        let voter = crate::door::identity(source, voter);
        let (a, _) = match self.store.approval(job_id).await {
            Ok(Some(a)) => a,
            Ok(None) => return refused(format!("Job #{job_id} is not waiting for approval.")),
            Err(e) => return refused(format!("Sorry, corral could not record that vote: {e}")),
        };
        let cast = self.cast(&a, &voter, source, kind, note).await;
        let now = cast.now;
        let result = self
            .store
            .decide_approval(
                job_id,
                Box::new(move |b| {
                    stale_round(b, round)?;
                    decide_vote(b, &cast)
                }),
            )
            .await;
        self.outbox.wake();
        match result {
            Err(e) => refused(format!("Sorry, corral could not record that vote: {e}")),
            Ok(Err(why)) => {
                let _ = self
                    .store
                    .audit(&AuditEntry {
                        at: now,
                        actor: voter.clone(),
                        action: format!("vote {} job {job_id} refused", kind),
                        detail: why.clone(),
                        source,
                    })
                    .await;
                refused(why)
            }
            Ok(Ok(d)) => {
                let before = d.before.approval.as_ref().map(|a| a.state);
                let after = d.decision.approval.state;
                let completed =
                    before == Some(ApprovalState::Pending) && after == ApprovalState::Approved;
                if completed {
                    self.start_approved(d.before.job.clone()).await;
                }
                VoteReply {
                    ok: true,
                    completed,
                    text: vote_text(job_id, &d.decision),
                    attempts: d.attempts,
                }
            }
        }
    }

    /// A vote as the decision needs it: the voter's eligibility, the confirm dialog's
    /// targets, the freeze open now, the time.
    async fn cast(
        &self,
        a: &ApprovalRecord,
        voter: &str,
        source: Source,
        kind: VoteKind,
        note: &str,
    ) -> Cast {
        let eligible = self.may_approve(&a.approvers, &a.rule, voter).await;
        let targets = card::production_targets(&Plan::from_json(&a.plan), self.rule_regex(&a.rule));
        Cast {
            voter: voter.to_string(),
            kind,
            note: note.chars().take(500).collect(),
            source,
            eligible,
            targets,
            frozen: super::freeze::frozen_at(&self.config.policy.freezes, self.clock.now()),
            now: self.clock.unix(),
            now_ms: self.clock.unix_ms(),
        }
    }

    fn rule_regex(&self, rule: &str) -> Option<&regex::Regex> {
        let i: usize = rule
            .strip_prefix("approval[")?
            .strip_suffix(']')?
            .parse()
            .ok()?;
        self.config.policy.approvals.get(i)?.environments.as_ref()
    }

    /// Starts a job whose approval was just completed (by this caller's transaction).
    async fn start_approved(&self, mut job: JobRecord) {
        let cmd = command::parse_text(&job.command).ok().and_then(|c| c.job());
        match cmd {
            Some(cmd) => {
                job.status = JobStatus::Queued;
                self.runner.spawn(job, cmd);
            }
            None => tracing::error!(job = job.id, "an approved job's command no longer parses"),
        }
    }

    /// Expires and reminds pending approvals that are due; returns when the next one falls
    /// due (Unix seconds), if any.
    pub async fn sweep_approvals(&self) -> Option<i64> {
        let pending = match self.store.pending_approvals().await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot list pending approvals");
                return None;
            }
        };
        let now = self.clock.unix();
        let mut next: Option<i64> = None;
        for a in pending {
            let due = if a.reminded {
                a.expires_at
            } else {
                remind_at(&a)
            };
            let Some(due) = due else { continue };
            if due > now {
                next = Some(next.map_or(due, |n| n.min(due)));
                continue;
            }
            let now_ms = self.clock.unix_ms();
            let r = self
                .store
                .decide_approval(a.job_id, Box::new(move |b| decide_sweep(b, now, now_ms)))
                .await;
            if let Err(e) = r {
                tracing::error!(job = a.job_id, error = %e, "approval sweep failed");
            }
            // What is due after this one (the expiry after a reminder).
            if let Some(e) = a.expires_at
                && e > now
            {
                next = Some(next.map_or(e, |n| n.min(e)));
            }
        }
        self.outbox.wake();
        next
    }

    /// The sweeper: sweeps now (approvals pending across a restart), then whenever the
    /// next one falls due, at least every minute (new approvals), on the app's clock.
    pub async fn run_approval_sweeper(self: std::sync::Arc<Self>) {
        loop {
            let next = self.sweep_approvals().await;
            let now = self.clock.unix();
            let wait = next.map_or(60, |n| (n - now).clamp(1, 60));
            self.clock.sleep(Duration::from_secs(wait as u64)).await;
        }
    }
}
