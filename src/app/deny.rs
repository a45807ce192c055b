//! Deny with a reason: the card's Deny button opens a modal (Slack's `views.open` with the
//! click's `trigger_id`) with one optional reason; its `view_submission` records the deny
//! with that reason through [`App::vote`], like every other door.
//!
//! * Only someone whose deny would be recorded gets the dialog: the same rule as the vote
//!   ([`judge`]) is asked first, so an outsider, a repeat or a stale card is answered at
//!   once, as before.
//! * The modal's `private_metadata` is `job:round:mac`, the MAC an HMAC-SHA256 (keyed with
//!   the bot token, shared by every replica) over the job, the round and the person it
//!   was opened for. A submission whose metadata names another job or round, or comes
//!   from someone else, fails the MAC and changes nothing; a round that is no longer the
//!   approval's current one (the plan changed) is refused too. Every refusal is shown on
//!   the modal's reason input (`response_action: errors`) and audited.
//! * Without a `trigger_id` (a door with no dialogs), without a bot token, or when
//!   `views.open` fails (an expired trigger, Slack down), the click still denies, without
//!   a reason, and the clicker is told why there was no dialog.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::App;
use super::interact::Click;
use crate::chat::Modal;
use crate::door::Source;
use crate::job::approval::{VoteKind, judge};
use crate::store::AuditEntry;
use crate::text::sanitize;

/// The modal's `callback_id`, and its reason input's block and action ids.
pub(crate) const CALLBACK: &str = "approval.deny";
pub const REASON_BLOCK: &str = "reason";
pub const REASON_ACTION: &str = "reason";
/// Longest reason (the same bound as a vote's note).
const REASON_MAX: usize = 500;

/// A modal's submission, from whichever door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub callback_id: String,
    /// Who submitted: a Slack-verified user id.
    pub user: String,
    pub private_metadata: String,
    /// The reason input's value (empty when left empty).
    pub reason: String,
    pub source: Source,
}

/// Why a submission changed nothing: shown on the input `block_id` of the modal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub block_id: String,
    pub text: String,
}

fn mac(key: &str, job: i64, round: u32, user: &str) -> String {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes())
        .expect("HMAC accepts keys of any length");
    m.update(format!("corral approval.deny v1\n{job}:{round}:{user}").as_bytes());
    hex::encode(m.finalize().into_bytes())[..32].to_string()
}

/// `job:round:mac` for a modal opened for `user`.
pub fn metadata(key: &str, job: i64, round: u32, user: &str) -> String {
    format!("{job}:{round}:{}", mac(key, job, round, user))
}

/// The job and round of a modal's metadata, when its MAC holds for `user`.
pub(crate) fn read_metadata(key: &str, text: &str, user: &str) -> Option<(i64, u32)> {
    let mut parts = text.split(':');
    let (Some(j), Some(r), Some(m), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let (job, round) = (j.parse::<i64>().ok()?, r.parse::<u32>().ok()?);
    let want = mac(key, job, round, user);
    // Compared in constant time: the MAC is the only thing keeping the metadata honest.
    use subtle::ConstantTimeEq;
    bool::from(want.as_bytes().ct_eq(m.as_bytes())).then_some((job, round))
}

impl App {
    fn modal_key(&self) -> Option<&str> {
        self.config.slack.bot_token.as_ref().map(|t| t.expose())
    }

    /// A Deny click: opens the reason dialog when it can (the answer is the dialog:
    /// `None`), else denies at once without a reason and says why.
    pub(crate) async fn deny_click(&self, click: &Click, job: i64) -> String {
        let no_dialog = match (&click.trigger_id, &self.modals, self.modal_key()) {
            (Some(trigger), Some(modals), Some(key)) if !trigger.is_empty() => {
                if let Err(why) = self.would_deny(job, &click.user).await {
                    return why;
                }
                let round = match self.store.approval(job).await {
                    Ok(Some((a, _))) => a.round,
                    _ => return format!("Job #{job} is not waiting for approval."),
                };
                let modal = deny_modal(job, metadata(key, job, round, &click.user));
                match modals.open_modal(trigger, &modal).await {
                    Ok(()) => return String::new(),
                    Err(e) => {
                        tracing::warn!(job, error = %e, "the deny dialog did not open");
                        format!("the dialog for a reason could not be opened ({e})")
                    }
                }
            }
            (None, _, _) => "this door has no dialogs".to_string(),
            (Some(_), _, _) => "corral cannot open dialogs without a bot token".to_string(),
        };
        let r = self
            .vote(job, &click.user, click.source, VoteKind::Deny, "")
            .await;
        if r.ok {
            format!(
                "{} It was recorded without a reason: {}.",
                r.text,
                sanitize(&no_dialog)
            )
        } else {
            r.text
        }
    }

    /// Whether a deny by `user` would be recorded now: the vote's own rule, asked before
    /// the dialog opens.
    async fn would_deny(&self, job: i64, user: &str) -> Result<(), String> {
        let voter = crate::door::identity(Source::Slack, user);
        let not_waiting = || format!("Job #{job} is not waiting for approval.");
        let (a, votes) = match self.store.approval(job).await {
            Ok(Some(x)) => x,
            Ok(None) => return Err(not_waiting()),
            Err(e) => return Err(format!("Sorry, corral could not read job #{job}: {e}")),
        };
        let requester = match self.store.job(job).await {
            Ok(Some(j)) => j.requested_by,
            Ok(None) => return Err(not_waiting()),
            Err(e) => return Err(format!("Sorry, corral could not read job #{job}: {e}")),
        };
        let eligible = self.may_approve(&a.approvers, &a.rule, &voter).await;
        judge(
            &a,
            &votes,
            &requester,
            &voter,
            &eligible,
            VoteKind::Deny,
            self.clock.unix(),
        )
        .map(|_| ())
    }

    /// A modal submitted: the deny with its reason, or why nothing changed.
    pub async fn submit(&self, s: Submission) -> Result<String, Refused> {
        let refuse = |text: String| Refused {
            block_id: REASON_BLOCK.into(),
            text,
        };
        if s.callback_id != CALLBACK {
            return Err(refuse("This dialog no longer does anything.".into()));
        }
        let Some(key) = self.modal_key() else {
            return Err(refuse(
                "corral has no bot token, so it cannot check this dialog; nothing was recorded."
                    .into(),
            ));
        };
        let Some((job, round)) = read_metadata(key, &s.private_metadata, &s.user) else {
            self.audit_refused_submission(&s, "the dialog's metadata does not check out")
                .await;
            return Err(refuse(
                "This dialog was not opened by corral for you and this job; nothing was recorded."
                    .into(),
            ));
        };
        let reason = s.reason.trim();
        if reason.chars().count() > REASON_MAX
            || reason.chars().any(|c| c.is_control() && c != '\n')
        {
            return Err(refuse(format!(
                "A reason is at most {REASON_MAX} characters of text; nothing was recorded."
            )));
        }
        match self.store.approval(job).await {
            Ok(Some((a, _))) if a.round == round => {}
            Ok(Some(_)) => {
                return Err(refuse(format!(
                    "The plan of job #{job} changed since this dialog opened, and it asks again in its thread; nothing was recorded."
                )));
            }
            Ok(None) => return Err(refuse(format!("Job #{job} is not waiting for approval."))),
            Err(e) => {
                return Err(refuse(format!(
                    "Sorry, corral could not read job #{job}: {e}"
                )));
            }
        }
        // Judged again inside the vote's transaction (see `vote_in_round`).
        let r = self
            .vote_in_round(job, &s.user, s.source, VoteKind::Deny, reason, Some(round))
            .await;
        if r.ok {
            Ok(r.text)
        } else {
            Err(refuse(r.text))
        }
    }

    async fn audit_refused_submission(&self, s: &Submission, why: &str) {
        let _ = self
            .store
            .audit(&AuditEntry {
                at: self.clock.unix(),
                actor: crate::door::identity(s.source, &s.user),
                action: "approval.deny dialog refused".into(),
                detail: why.into(),
                source: s.source,
            })
            .await;
    }
}

/// The Deny dialog of one job.
fn deny_modal(job: i64, private_metadata: String) -> Modal {
    Modal {
        callback_id: CALLBACK.into(),
        title: format!("Deny job #{job}"),
        text: format!(
            "Deny *job #{job}*? It is cancelled and nothing is changed. The reason, if you give one, is shown in its thread."
        ),
        private_metadata,
        input_block: REASON_BLOCK.into(),
        input_action: REASON_ACTION.into(),
        input_label: "Reason (optional)".into(),
        input_max: REASON_MAX as u64,
        submit: "Deny".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_holds_only_for_its_job_round_and_person() {
        let m = metadata("xoxb-1", 12, 2, "U0BOB");
        assert_eq!(read_metadata("xoxb-1", &m, "U0BOB"), Some((12, 2)));
        assert_eq!(read_metadata("xoxb-1", &m, "U0EVE"), None, "someone else");
        assert_eq!(read_metadata("xoxb-2", &m, "U0BOB"), None, "another key");
        let other_job = m.replacen("12:", "13:", 1);
        assert_eq!(read_metadata("xoxb-1", &other_job, "U0BOB"), None);
        let other_round = m.replacen(":2:", ":1:", 1);
        assert_eq!(read_metadata("xoxb-1", &other_round, "U0BOB"), None);
        for bad in [
            "",
            "12",
            "12:2",
            "12:2:",
            "x:2:abc",
            "12:2:abc:d",
            "-1:2:00",
        ] {
            assert_eq!(read_metadata("xoxb-1", bad, "U0BOB"), None, "{bad:?}");
        }
        assert!(m.len() < 3000, "Slack's private_metadata limit");
    }
}
