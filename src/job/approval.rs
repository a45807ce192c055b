//! Approvals' nouns and the pure rule that judges one vote (SPEC §8 `[[approval]]`).
//!
//! A job matching an approval rule waits in `awaiting_approval` with an
//! [`ApprovalRecord`] beside it (one per job; `round` grows when the plan changed and
//! approval is asked for again). People vote ([`Vote`], one per person per round); the
//! store runs [`judge`] inside the vote's transaction, so "exactly once" is decided
//! there and nowhere else.
//!
//! Who counts: Slack-verified user ids (no `:`) count once each. An identity a caller
//! names itself (`api:NAME`, `cli:NAME`, `playground:NAME`: anything with a door prefix)
//! is eligible only when the rule lists that exact id, and at most one such vote counts
//! toward `required`. The requester never counts; the requester may deny (withdraw)
//! their own job.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::door::Source;

/// Where an approval is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
    Expired,
    /// Approved, but the lock no longer allowed the job when the last vote came in.
    Refused,
}

impl ApprovalState {
    pub const ALL: [ApprovalState; 5] = [
        ApprovalState::Pending,
        ApprovalState::Approved,
        ApprovalState::Denied,
        ApprovalState::Expired,
        ApprovalState::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Expired => "expired",
            ApprovalState::Refused => "refused",
        }
    }
}

impl fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApprovalState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ApprovalState::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or(())
    }
}

/// A vote's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteKind {
    Approve,
    Deny,
}

impl VoteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VoteKind::Approve => "approve",
            VoteKind::Deny => "deny",
        }
    }
}

impl FromStr for VoteKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "approve" => Ok(VoteKind::Approve),
            "deny" => Ok(VoteKind::Deny),
            _ => Err(()),
        }
    }
}

impl fmt::Display for VoteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's approval, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub job_id: i64,
    /// 1, then one more each time the plan changed and approval was asked again.
    pub round: u32,
    /// The rule that asked (`approval[0]`).
    pub rule: String,
    /// Distinct approvals needed.
    pub required: u32,
    /// The rule's approvers: roles, ids, `everyone`.
    pub approvers: Vec<String>,
    /// SHA-256 (hex) of the plan shown on the card.
    pub plan_digest: String,
    /// The plan shown, as JSON (`{"title", "groups"}`).
    pub plan: String,
    pub state: ApprovalState,
    /// One more on every change of the card (votes, reminder): block ids carry it.
    pub revision: u32,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// The reminder before expiry was written.
    pub reminded: bool,
    pub decided_at: Option<i64>,
    /// Why it was decided the way it was (a deny reason, the lock's refusal).
    pub reason: String,
}

/// One person's vote in one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub job_id: i64,
    pub round: u32,
    pub voter: String,
    pub kind: VoteKind,
    pub note: String,
    pub source: Source,
    pub at: i64,
    /// Whether it counts toward `required` (a second self-named approval does not).
    pub counted: bool,
}

/// Whether an identity was named by its caller (any door but Slack's verified ids).
pub fn is_self_named(id: &str) -> bool {
    id.contains(':')
}

/// What a vote that may be cast does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// It counts toward `required`.
    pub counted: bool,
    /// Approvals counted after it.
    pub approvals: u32,
    /// It completes the approval (the job may run).
    pub completes: bool,
    /// It denies the job.
    pub denies: bool,
}

/// Judges one vote on `approval` given the round's `votes` so far. `eligible` is whether
/// the voter may approve this job at all (the policy's answer, with the reason when not).
/// `Err` is the refusal to show the voter; nothing is written then.
#[allow(clippy::too_many_arguments)]
pub fn judge(
    approval: &ApprovalRecord,
    votes: &[Vote],
    requester: &str,
    voter: &str,
    eligible: &Result<(), String>,
    kind: VoteKind,
    now: i64,
) -> Result<Judgement, String> {
    let job = approval.job_id;
    if approval.state != ApprovalState::Pending {
        return Err(format!(
            "Job #{job} is already {}; your vote changed nothing.",
            approval.state
        ));
    }
    if approval.expires_at.is_some_and(|t| now >= t) {
        return Err(format!(
            "The approval of job #{job} has expired; your vote changed nothing."
        ));
    }
    if let Some(v) = votes.iter().find(|v| v.voter == voter) {
        return Err(format!(
            "You already voted ({}) on job #{job}; a vote counts once.",
            v.kind
        ));
    }
    let counted_approvals = |vs: &[Vote]| {
        vs.iter()
            .filter(|v| v.counted && v.kind == VoteKind::Approve)
            .count() as u32
    };
    if voter == requester {
        return match kind {
            VoteKind::Deny => Ok(Judgement {
                counted: false,
                approvals: counted_approvals(votes),
                completes: false,
                denies: true,
            }),
            VoteKind::Approve => Err(format!(
                "You requested job #{job}; the requester's approval never counts."
            )),
        };
    }
    if let Err(why) = eligible {
        return Err(why.clone());
    }
    let before = counted_approvals(votes);
    match kind {
        VoteKind::Deny => Ok(Judgement {
            counted: true,
            approvals: before,
            completes: false,
            denies: true,
        }),
        VoteKind::Approve => {
            let self_named_counted = votes
                .iter()
                .any(|v| v.counted && v.kind == VoteKind::Approve && is_self_named(&v.voter));
            let counted = !(is_self_named(voter) && self_named_counted);
            let approvals = before + u32::from(counted);
            Ok(Judgement {
                counted,
                approvals,
                completes: approvals >= approval.required,
                denies: false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(required: u32) -> ApprovalRecord {
        ApprovalRecord {
            job_id: 7,
            round: 1,
            rule: "approval[0]".into(),
            required,
            approvers: vec!["approvers".into()],
            plan_digest: "d".into(),
            plan: "{}".into(),
            state: ApprovalState::Pending,
            revision: 0,
            created_at: 0,
            expires_at: Some(100),
            reminded: false,
            decided_at: None,
            reason: String::new(),
        }
    }

    fn vote(voter: &str, kind: VoteKind, counted: bool) -> Vote {
        Vote {
            job_id: 7,
            round: 1,
            voter: voter.into(),
            kind,
            note: String::new(),
            source: Source::Slack,
            at: 1,
            counted,
        }
    }

    const OK: Result<(), String> = Ok(());

    #[test]
    fn requester_outsider_repeat_and_late_votes_are_refused() {
        let a = approval(2);
        let e = judge(&a, &[], "U1", "U1", &OK, VoteKind::Approve, 1).unwrap_err();
        assert!(e.contains("requester"), "{e}");
        let no = Err("not an approver".to_string());
        assert_eq!(
            judge(&a, &[], "U1", "U9", &no, VoteKind::Approve, 1).unwrap_err(),
            "not an approver"
        );
        let votes = [vote("U2", VoteKind::Approve, true)];
        let e = judge(&a, &votes, "U1", "U2", &OK, VoteKind::Approve, 1).unwrap_err();
        assert!(e.contains("already voted (approve)"), "{e}");
        let e = judge(&a, &[], "U1", "U2", &OK, VoteKind::Approve, 100).unwrap_err();
        assert!(e.contains("expired"), "{e}");
        let mut done = approval(1);
        done.state = ApprovalState::Approved;
        let e = judge(&done, &[], "U1", "U2", &OK, VoteKind::Approve, 1).unwrap_err();
        assert!(e.contains("already approved"), "{e}");
    }

    #[test]
    fn required_counts_distinct_people_and_one_self_named_identity() {
        let a = approval(2);
        let j = judge(&a, &[], "U1", "U2", &OK, VoteKind::Approve, 1).unwrap();
        assert_eq!((j.counted, j.approvals, j.completes), (true, 1, false));
        let votes = [vote("api:ci", VoteKind::Approve, true)];
        let j = judge(&a, &votes, "U1", "api:deploybot", &OK, VoteKind::Approve, 1).unwrap();
        assert_eq!((j.counted, j.approvals, j.completes), (false, 1, false));
        let j = judge(&a, &votes, "U1", "U3", &OK, VoteKind::Approve, 1).unwrap();
        assert_eq!((j.counted, j.approvals, j.completes), (true, 2, true));
        // The requester may withdraw; it does not count.
        let j = judge(&a, &[], "U1", "U1", &OK, VoteKind::Deny, 1).unwrap();
        assert!(j.denies && !j.counted);
        assert!(is_self_named("cli:bob") && !is_self_named("U0BOB"));
        for s in ApprovalState::ALL {
            assert_eq!(s.as_str().parse::<ApprovalState>(), Ok(s));
        }
    }
}
