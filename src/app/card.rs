//! The approval card: a job's root message while (and after) it waits for people, as a
//! chat-level [`Message`] (sections, fields, context, buttons); `slack::blocks` renders it
//! in Block Kit within Slack's limits.
//!
//! It shows who asked, what will change (per target, as the plan says: `old → new`
//! versions for catalog upgrades, `old → new` images per service for image upgrades, the
//! manifest's checksum, strategy and hosts for deploys), the rule, how many approvals are
//! needed from whom, the expiry as a Slack date token, the votes so far and, while
//! pending, Approve (primary, with a confirm dialog naming the production targets) and
//! Deny (danger). Long plans are summarised with counts; the full plan is a thread reply.

use serde::{Deserialize, Serialize};

use crate::chat::{Block, Button, Confirm, Message};
use crate::job::approval::{ApprovalRecord, ApprovalState, Vote, VoteKind};
use crate::job::{PlanDetail, PlanGroup, PlanItem};
use crate::store::JobRecord;
use crate::text::{person, sanitize, when};

/// Targets listed on the card; the rest are counted (the thread has them all).
const CARD_LINES: usize = 12;
/// Lines of what changes inside targets listed on the card, in all and per target; past
/// them a target's changes are counted.
const CARD_DETAILS: usize = 12;
const ITEM_DETAILS: usize = 4;

/// The `action_id`s of the card's buttons (family `approval`, see `interact.rs`).
pub(crate) const APPROVE: &str = "approval.approve";
pub(crate) const DENY: &str = "approval.deny";

/// The plan an approval shows, and is bound to (its digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub title: String,
    pub groups: Vec<PlanGroup>,
}

impl Plan {
    /// SHA-256 (hex) of the plan's canonical JSON.
    pub(crate) fn digest(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_string(self).unwrap_or_default();
        hex::encode(sha2::Sha256::digest(json.as_bytes()))
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub(crate) fn from_json(text: &str) -> Plan {
        serde_json::from_str(text).unwrap_or(Plan {
            title: String::new(),
            groups: Vec::new(),
        })
    }

    /// Targets that will change.
    pub(crate) fn active(&self) -> usize {
        self.groups.iter().map(PlanGroup::active).sum()
    }

    /// The lines of what will change, every one of them: one per target, then each
    /// thing that changes inside it (a catalog upgrade's images and questions).
    pub(crate) fn lines(&self) -> Vec<String> {
        self.targets()
            .map(|(g, i)| {
                let mut line = target_line(g, i);
                for d in &i.details {
                    line.push_str(&format!("\n    ◦ {}", detail_line(d)));
                }
                line
            })
            .collect()
    }

    /// The card's lines: one per target; what changes inside a target is listed while
    /// the card has room (at most [`CARD_DETAILS`] in all, [`ITEM_DETAILS`] per target),
    /// else summarised with counts. The thread has every line ([`Plan::full_text`]).
    pub(crate) fn card_lines(&self) -> Vec<String> {
        let mut room = CARD_DETAILS;
        self.targets()
            .take(CARD_LINES)
            .map(|(g, i)| {
                let mut line = target_line(g, i);
                if i.details.is_empty() {
                } else if i.details.len() <= ITEM_DETAILS && i.details.len() <= room {
                    room -= i.details.len();
                    for d in &i.details {
                        line.push_str(&format!("\n    ◦ {}", detail_line(d)));
                    }
                } else {
                    line.push_str(&format!(" — {}", counts(&i.details)));
                }
                line
            })
            .collect()
    }

    fn targets(&self) -> impl Iterator<Item = (&PlanGroup, &PlanItem)> {
        self.groups.iter().flat_map(|g| {
            g.items
                .iter()
                .filter(|i| i.skipped.is_none())
                .map(move |i| (g, i))
        })
    }

    /// The full plan, for the thread.
    pub(crate) fn full_text(&self) -> String {
        let skipped: usize = self.groups.iter().map(|g| g.items.len() - g.active()).sum();
        let mut text = format!(
            "*Plan to approve:* {} — {} to change, {skipped} left alone\n",
            sanitize(&self.title),
            self.active()
        );
        for line in self.lines() {
            text.push_str(&line);
            text.push('\n');
        }
        text
    }
}

fn target_line(g: &PlanGroup, i: &PlanItem) -> String {
    format!(
        "• *{}* {}: {}",
        sanitize(&g.name),
        sanitize(&i.target),
        sanitize(&i.change)
    )
}

fn detail_line(d: &PlanDetail) -> String {
    format!("{} {}", sanitize(&d.what), sanitize(&d.text))
}

/// `images: 1 changed, 1 added · variables: 2 added` for a target's details.
fn counts(details: &[PlanDetail]) -> String {
    let mut by: Vec<(&str, Vec<(&str, usize)>)> = Vec::new();
    for d in details {
        let i = match by.iter().position(|(w, _)| *w == d.what) {
            Some(i) => i,
            None => {
                by.push((d.what.as_str(), Vec::new()));
                by.len() - 1
            }
        };
        let changes = &mut by[i].1;
        match changes.iter_mut().find(|(c, _)| *c == d.change) {
            Some((_, n)) => *n += 1,
            None => changes.push((d.change.as_str(), 1)),
        }
    }
    by.iter()
        .map(|(what, changes)| {
            let parts: Vec<String> = changes.iter().map(|(c, n)| format!("{n} {c}")).collect();
            format!("{}s: {}", sanitize(what), sanitize(&parts.join(", ")))
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// What the decision's state says on the card.
fn state_line(a: &ApprovalRecord) -> String {
    match a.state {
        ApprovalState::Pending => "✋ awaiting approval".into(),
        ApprovalState::Approved => "👍 approved".into(),
        ApprovalState::Denied => "🚫 denied".into(),
        ApprovalState::Expired => "⌛ approval expired".into(),
        ApprovalState::Refused => "⛔ approved, refused by the lock".into(),
    }
}

/// The card for a job's approval as it is now.
pub(crate) fn card(
    job: &JobRecord,
    a: &ApprovalRecord,
    votes: &[Vote],
    targets: &[String],
) -> Message {
    let plan = Plan::from_json(&a.plan);
    let mut msg = Message::text(format!(
        "*Job #{}* `{}` — {}",
        job.id,
        sanitize(&job.command),
        state_line(a)
    ))
    .with_context(format!(
        "requested by {} via {}",
        person(&job.requested_by),
        job.source
    ));
    let total = plan.active();
    let mut change = format!("*What will change* ({total} targets)\n");
    for l in plan.card_lines() {
        change.push_str(&l);
        change.push('\n');
    }
    if total > CARD_LINES {
        change.push_str(&format!(
            "… and {} more: the full plan is in the thread\n",
            total - CARD_LINES
        ));
    }
    if total == 0 {
        change.push_str("nothing (every target is left alone)\n");
    }
    msg = msg.with_block(Block::Section { text: change });
    let approvals = votes
        .iter()
        .filter(|v| v.counted && v.kind == VoteKind::Approve)
        .count();
    let expires = a.expires_at.map_or_else(|| "never".to_string(), when);
    msg = msg.with_block(Block::Fields {
        fields: vec![
            format!("*Rule*\n{}", sanitize(&a.rule)),
            format!("*Approvals*\n{approvals} of {} needed", a.required),
            format!("*Who may approve*\n{}", who_may(&a.approvers)),
            format!("*Expires*\n{expires}"),
        ],
    });
    msg = msg.with_block(Block::Context {
        text: votes_line(votes),
    });
    match a.state {
        ApprovalState::Pending => msg.with_block(buttons(job, a, targets)),
        _ if !a.reason.is_empty() => msg.with_block(Block::Section {
            text: format!("{}: {}", state_line(a), sanitize(&a.reason)),
        }),
        _ => msg,
    }
}

fn who_may(approvers: &[String]) -> String {
    approvers
        .iter()
        .map(|r| match r.as_str() {
            "everyone" => "everyone".to_string(),
            r if r.starts_with('S') && !r.contains(':') && r.len() > 1 => {
                format!("<!subteam^{}>", sanitize(r))
            }
            r if r.starts_with(['U', 'W']) && !r.contains(':') => person(r),
            r => format!("`{}`", sanitize(r)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Who voted how, for the card and the thread.
pub(crate) fn votes_line(votes: &[Vote]) -> String {
    if votes.is_empty() {
        return "No votes yet.".into();
    }
    let parts: Vec<String> = votes
        .iter()
        .map(|v| {
            let mark = match v.kind {
                VoteKind::Approve if v.counted => "✅",
                VoteKind::Approve => "☑️ (not counted)",
                VoteKind::Deny => "🚫",
            };
            format!("{mark} {}", person(&v.voter))
        })
        .collect();
    format!("Votes: {}", parts.join(" · "))
}

fn buttons(job: &JobRecord, a: &ApprovalRecord, targets: &[String]) -> Block {
    let value = format!("{}:{}", job.id, a.round);
    let named = if targets.is_empty() {
        "its targets".to_string()
    } else {
        targets.join(", ")
    };
    Block::Buttons {
        block_id: Some(format!("appr:{}:r{}", job.id, a.revision)),
        buttons: vec![
            Button {
                action_id: APPROVE.into(),
                text: "Approve".into(),
                value: value.clone(),
                primary: true,
                confirm: Some(Confirm {
                    title: format!("Approve job #{}?", job.id),
                    text: format!("This changes {named}. It runs once enough people approve."),
                    confirm: "Approve".into(),
                    deny: "Cancel".into(),
                }),
                ..Button::default()
            },
            Button {
                action_id: DENY.into(),
                text: "Deny".into(),
                value,
                danger: true,
                ..Button::default()
            },
        ],
    }
}

/// The targets the confirm dialog names: the groups (environments, host sets) the rule
/// matched, else every group that changes.
pub(crate) fn production_targets(plan: &Plan, rule: Option<&regex::Regex>) -> Vec<String> {
    plan.groups
        .iter()
        .filter(|g| g.active() > 0)
        .filter(|g| {
            rule.is_none_or(|re| {
                re.is_match(&g.name)
                    || g.items
                        .iter()
                        .any(|i| i.skipped.is_none() && re.is_match(&i.target))
            })
        })
        .map(|g| g.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::door::Source;
    use crate::job::{JobKind, JobStatus, PlanItem};

    fn job() -> JobRecord {
        JobRecord {
            id: 12,
            kind: JobKind::UpgradeCatalog,
            command: "/upgrade library:web:2.0.0".into(),
            requested_by: "U0ALICE".into(),
            source: Source::Slack,
            channel: Some("C1".into()),
            status: JobStatus::AwaitingApproval,
            done: 0,
            failed: 0,
            total: 0,
            created_at: 0,
            updated_at: 0,
            outcome: None,
            delivery: None,
        }
    }

    fn plan(n: usize) -> Plan {
        Plan {
            title: "library:web:2.0.0".into(),
            groups: vec![PlanGroup {
                name: "prod".into(),
                items: (0..n)
                    .map(|i| PlanItem {
                        target: format!("web{i}"),
                        change: "1.0.0 → 2.0.0".into(),
                        skipped: None,
                        details: Vec::new(),
                        binds: String::new(),
                    })
                    .collect(),
            }],
        }
    }

    fn approval(p: &Plan) -> ApprovalRecord {
        ApprovalRecord {
            job_id: 12,
            round: 1,
            rule: "approval[0]".into(),
            required: 2,
            approvers: vec!["approvers".into(), "S0DEVS".into()],
            plan_digest: p.digest(),
            plan: p.to_json(),
            state: ApprovalState::Pending,
            revision: 3,
            created_at: 0,
            expires_at: Some(3600),
            reminded: false,
            decided_at: None,
            reason: String::new(),
        }
    }

    #[test]
    fn a_pending_card_has_the_diff_the_rule_the_expiry_and_two_buttons() {
        let p = plan(30);
        let m = card(&job(), &approval(&p), &[], &["prod".into()]);
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("web0: 1.0.0 → 2.0.0"), "{json}");
        assert!(json.contains("and 18 more"), "{json}");
        assert!(json.contains("<!date^3600^"), "{json}");
        assert!(json.contains("0 of 2 needed"), "{json}");
        assert!(json.contains("<!subteam^S0DEVS>"), "{json}");
        let Some(Block::Buttons {
            block_id: Some(block_id),
            buttons,
        }) = m.blocks.last()
        else {
            panic!("no buttons: {json}");
        };
        assert_eq!(block_id, "appr:12:r3");
        assert_eq!(buttons[0].value, "12:1");
        assert!(buttons[0].primary && !buttons[0].danger);
        assert!(buttons[0].confirm.as_ref().unwrap().text.contains("prod"));
        assert!(buttons[1].danger);
        assert_ne!(p.digest(), plan(29).digest());
    }

    #[test]
    fn a_decided_card_has_no_buttons() {
        let p = plan(1);
        let mut a = approval(&p);
        a.state = ApprovalState::Denied;
        a.reason = "not <!here> today".into();
        let m = card(&job(), &a, &[], &[]);
        assert!(
            !m.blocks.iter().any(|b| matches!(b, Block::Buttons { .. })),
            "{m:?}"
        );
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("not &lt;!here&gt; today"), "{json}");
    }

    #[test]
    fn what_changes_inside_a_target_is_listed_while_there_is_room_then_counted() {
        let d = |what: &str, change: &str, text: &str| PlanDetail {
            what: what.into(),
            change: change.into(),
            text: text.into(),
        };
        let mut p = plan(3);
        p.groups[0].items[0].details = vec![
            d("image", "changed", "web: 'a:1' → 'a:2'"),
            d("variable", "added", "PORT: new question, default `80`"),
        ];
        p.groups[0].items[1].details = (0..6)
            .map(|n| d("variable", if n < 4 { "added" } else { "removed" }, "V"))
            .chain([d("image", "added", "<!here> x")])
            .collect();
        let card_text = p.card_lines().join("\n");
        assert!(
            card_text.contains("web0: 1.0.0 → 2.0.0\n    ◦ image web: 'a:1' → 'a:2'"),
            "{card_text}"
        );
        assert!(
            card_text
                .contains("web1: 1.0.0 → 2.0.0 — variables: 4 added, 2 removed · images: 1 added"),
            "{card_text}"
        );
        assert!(!card_text.contains("<!here>"), "{card_text}");
        let full = p.full_text();
        assert_eq!(full.matches("◦ variable V").count(), 6, "{full}");
        assert!(full.contains("&lt;!here&gt; x"), "{full}");
        // The details are part of what is approved.
        let mut q = p.clone();
        q.groups[0].items[0].details.pop();
        assert_ne!(p.digest(), q.digest());
        let mut r = p.clone();
        r.groups[0].items[2].binds = "abc".into();
        assert_ne!(p.digest(), r.digest());
        // A plan without details hashes as before they existed.
        assert!(!plan(1).to_json().contains("details"));
    }
}
