//! Button clicks, from any door, as one request: [`Click`] → [`App::click`].
//!
//! Slack's `block_actions` (over HTTP or Socket Mode) and any other door that shows
//! corral's buttons turn a click into a [`Click`]. The door acknowledges at once; what
//! the clicker is told afterwards goes through the outbox (the click's `response_url`
//! when Slack gave one, else an ephemeral message), like everything corral says later.
//!
//! Clicks are routed by the first part of their `action_id` (`approval.approve` →
//! `approval`). A family this process does not know answers the clicker that the button
//! no longer does anything: a stale card never acts.

use super::App;
use crate::chat::Message;
use crate::door::Source;
use crate::store::NewMessage;

/// Slack's limits on the fields a click carries (reference: Block Kit button limits).
const ACTION_ID_MAX: usize = 255;
const BLOCK_ID_MAX: usize = 255;
const VALUE_MAX: usize = 2000;

/// One button click, whichever door it came through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub action_id: String,
    pub block_id: String,
    pub value: String,
    /// Who clicked: a Slack-verified user id, or a door-namespaced name.
    pub user: String,
    pub source: Source,
    /// Where the clicked message is.
    pub channel: Option<String>,
    pub message_ts: Option<String>,
    /// Slack's `response_url` for answering the clicker (valid 30 minutes, 5 uses).
    pub response_url: Option<String>,
    /// Slack's `trigger_id` (opens a modal; valid a few seconds).
    pub trigger_id: Option<String>,
}

/// Why a click could not even be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClickError {
    #[error("a click without {0}")]
    Missing(&'static str),
    #[error("{field} is {len} bytes long; Slack's limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

impl Click {
    /// Checks the fields a door filled in against Slack's own limits, so nothing longer
    /// than Slack would ever send reaches a handler.
    pub(crate) fn checked(self) -> Result<Click, ClickError> {
        if self.user.trim().is_empty() {
            return Err(ClickError::Missing("a user"));
        }
        if self.action_id.is_empty() {
            return Err(ClickError::Missing("an action_id"));
        }
        for (field, len, max) in [
            ("action_id", self.action_id.len(), ACTION_ID_MAX),
            ("block_id", self.block_id.len(), BLOCK_ID_MAX),
            ("value", self.value.len(), VALUE_MAX),
        ] {
            if len > max {
                return Err(ClickError::TooLong { field, len, max });
            }
        }
        Ok(self)
    }

    /// The routing family: `approval` for `approval.approve`.
    pub(crate) fn family(&self) -> &str {
        self.action_id
            .split_once('.')
            .map_or(self.action_id.as_str(), |(f, _)| f)
    }

    /// A message for the clicker alone: through the click's `response_url` when there is
    /// one, else ephemeral in the clicked message's channel. `None` when the door gave
    /// neither (the door's own reply is all the clicker gets).
    pub(crate) fn answer(&self, now_ms: i64, text: impl Into<String>) -> Option<NewMessage> {
        let msg = Message::text(text);
        if let Some(url) = &self.response_url {
            return Some(NewMessage::respond(now_ms, url.clone(), false, now_ms, msg));
        }
        self.channel
            .as_ref()
            .map(|ch| NewMessage::ephemeral(now_ms, ch.clone(), self.user.clone(), msg))
    }
}

/// What the door should say at once (its acknowledgement); everything later goes
/// through the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickAck {
    /// A short text the door may show in its own reply (HTTP API, CLI); Slack ignores it.
    pub text: String,
}

impl App {
    /// Handles a click: routes it to the family it belongs to. Never panics on input.
    pub async fn click(&self, click: Click) -> ClickAck {
        let click = match click.checked() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "click refused");
                return ClickAck {
                    text: format!("That click could not be read: {e}."),
                };
            }
        };
        tracing::info!(action_id = %click.action_id, user = %click.user, source = click.source.as_str(), "click");
        // Each family of buttons is routed here by `click.family()`; a family this
        // process does not know is a button that no longer does anything.
        let text = match click.family() {
            "release" => self.click_release(&click).await,
            "approval" => self.approval_click(&click).await,
            _ => "This button no longer does anything.".to_string(),
        };
        // An empty answer: the click opened a dialog, which is its answer.
        let now = self.clock.unix_ms();
        if !text.is_empty()
            && let Some(row) = click.answer(now, text.clone())
        {
            self.say(vec![row]).await;
        }
        ClickAck { text }
    }
}

impl App {
    /// An Approve or Deny click on an approval card: the value names the job and round.
    async fn approval_click(&self, click: &Click) -> String {
        let kind = match click.action_id.as_str() {
            super::card::APPROVE => crate::job::approval::VoteKind::Approve,
            super::card::DENY => crate::job::approval::VoteKind::Deny,
            _ => return "This button no longer does anything.".to_string(),
        };
        let Some((job, round)) = click
            .value
            .split_once(':')
            .and_then(|(j, r)| Some((j.parse::<i64>().ok()?, r.parse::<u32>().ok()?)))
        else {
            return "That button's value could not be read; nothing was recorded.".to_string();
        };
        match self.store.approval(job).await {
            Ok(Some((a, _))) if a.round != round => {
                return super::approval::stale_card_text(job);
            }
            _ => {}
        }
        match kind {
            crate::job::approval::VoteKind::Deny => self.deny_click(click, job).await,
            // The round is judged again inside the vote's transaction: the check above
            // leaves a moment in which the plan changes and the old card's click would
            // count for the new one.
            crate::job::approval::VoteKind::Approve => {
                self.vote_in_round(job, &click.user, click.source, kind, "", Some(round))
                    .await
                    .text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click(action_id: &str) -> Click {
        Click {
            action_id: action_id.into(),
            block_id: "b".into(),
            value: "v".into(),
            user: "U1".into(),
            source: Source::Slack,
            channel: Some("C1".into()),
            message_ts: Some("1.2".into()),
            response_url: None,
            trigger_id: None,
        }
    }

    #[test]
    fn families_and_limits() {
        assert_eq!(click("approval.approve").family(), "approval");
        assert_eq!(click("release.stop").family(), "release");
        assert_eq!(click("plain").family(), "plain");
        assert!(click("a").checked().is_ok());
        let mut long = click("a");
        long.value = "x".repeat(VALUE_MAX + 1);
        assert!(matches!(
            long.checked(),
            Err(ClickError::TooLong { field: "value", .. })
        ));
        let mut nobody = click("a");
        nobody.user = " ".into();
        assert_eq!(nobody.checked(), Err(ClickError::Missing("a user")));
        assert_eq!(
            click("").checked(),
            Err(ClickError::Missing("an action_id"))
        );
    }

    #[test]
    fn answers_prefer_the_response_url() {
        let mut c = click("a");
        let row = c.answer(5, "hi").unwrap();
        assert!(matches!(
            row.delivery,
            crate::store::Delivery::Ephemeral { .. }
        ));
        c.response_url = Some("https://hooks.slack.com/actions/T1/1/x".into());
        assert!(matches!(
            c.answer(5, "hi").unwrap().delivery,
            crate::store::Delivery::Respond { .. }
        ));
        c.response_url = None;
        c.channel = None;
        assert!(c.answer(5, "hi").is_none());
    }
}
