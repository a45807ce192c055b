//! What corral says, and the transports that carry it: the [`Message`] (a small, serialisable
//! Block Kit-like structure that outbox rows store as JSON), the [`Chat`] trait the outbox's
//! sender delivers through, and the destinations that are not Slack ([`LogChat`] when Slack
//! is off, [`PrintChat`] and [`TeeChat`] for `corral exec`). Slack's transports and the
//! Block Kit rendering live in `slack/`.
//!
//! Nothing but the sender (`app/outbox.rs`) calls a [`Chat`] to deliver: everything corral
//! says later is a row in the store first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::text::plain;

/// One message: mrkdwn text (also the notification fallback), optional blocks shown under
/// it, an optional small context line, and optional Slack message metadata.
///
/// Serialised into outbox rows, so fields are only ever added, with defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Message {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Blocks after the text's sections (approval cards add buttons here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Block>,
    /// Slack message metadata. The sender adds `corral_outbox_id` to posts' payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// A Block Kit-like block. Rendered by `slack::blocks`; the playground renders the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// A section of mrkdwn text (at most 3000 characters are shown).
    Section {
        text: String,
    },
    /// Two-column fields (at most 10 are shown).
    Fields {
        fields: Vec<String>,
    },
    /// Small grey mrkdwn text.
    Context {
        text: String,
    },
    Divider,
    /// A row of buttons (Slack's `actions` block; at most 25 are shown). A click comes
    /// back to [`crate::app::App::click`] with the button's `action_id` and `value`.
    Buttons {
        /// Names this rendering of the message (an approval card: `appr:<job>:r<rev>`), so
        /// a click on a stale one can be told apart. Slack's limit: 255.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        block_id: Option<String>,
        buttons: Vec<Button>,
    },
}

/// One button.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Button {
    /// `<family>.<action>`, e.g. `release.stop`: how a click is routed.
    pub action_id: String,
    pub text: String,
    #[serde(default)]
    pub value: String,
    /// Shown as a dangerous action (red).
    #[serde(default)]
    pub danger: bool,
    /// Shown as the primary action (green; one per row).
    #[serde(default)]
    pub primary: bool,
    /// A dialog Slack shows before the click is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<Confirm>,
}

/// A confirm dialog shown before a button's click is sent (plain text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirm {
    pub title: String,
    pub text: String,
    pub confirm: String,
    pub deny: String,
}

/// Slack message metadata: an event type and a flat string payload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Metadata {
    pub event_type: String,
    #[serde(default)]
    pub payload: BTreeMap<String, String>,
}

/// The metadata key a post carries its outbox id under (the lookup before a resend).
pub(crate) const OUTBOX_ID_KEY: &str = "corral_outbox_id";

impl Message {
    pub fn text(text: impl Into<String>) -> Self {
        Message {
            text: text.into(),
            ..Message::default()
        }
    }

    pub(crate) fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    pub(crate) fn with_block(mut self, block: Block) -> Self {
        self.blocks.push(block);
        self
    }

    /// This message stamped with an outbox id in its metadata (kept beside any metadata
    /// it already has).
    pub(crate) fn stamped(&self, outbox_id: i64) -> Message {
        let mut m = self.clone();
        let meta = m.metadata.get_or_insert_with(|| Metadata {
            event_type: "corral_outbox".into(),
            payload: BTreeMap::new(),
        });
        meta.payload
            .insert(OUTBOX_ID_KEY.into(), outbox_id.to_string());
        m
    }

    /// The same message cut to `max` bytes of text, saying so (Slack refused it as too long).
    pub(crate) fn shortened(&self, max: usize) -> Message {
        let mut m = self.clone();
        if m.text.len() > max {
            let mut cut = max;
            while !m.text.is_char_boundary(cut) {
                cut -= 1;
            }
            let rest = m.text.len() - cut;
            m.text.truncate(cut);
            m.text.push_str(&format!(
                "\n… _(cut: {rest} more characters did not fit in one Slack message)_"
            ));
        }
        m.blocks.truncate(5);
        m
    }
}

/// Who is in a Slack user group (`usergroups.users.list`): what roles naming a group
/// (`S…`) grant. A read, never a delivery (those go through the outbox).
#[async_trait]
pub(crate) trait Directory: Send + Sync + 'static {
    /// The user ids of a group's members.
    async fn group_members(&self, group: &str) -> Result<Vec<String>, ChatError>;
}

/// A dialog with one optional text input, opened for the person who clicked (Slack's
/// `views.open` with the click's `trigger_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modal {
    /// Routes the submission (`approval.deny`).
    pub callback_id: String,
    pub title: String,
    /// The text above the input.
    pub text: String,
    /// Given back with the submission, untouched by the person (never trust it alone).
    pub private_metadata: String,
    /// The input's block id and action id (the submission's `state.values` keys).
    pub input_block: String,
    pub input_action: String,
    pub input_label: String,
    pub input_max: u64,
    pub submit: String,
}

/// Opens modals. Not through the outbox: a `trigger_id` is good for 3 seconds and once,
/// so the call is made at once by the click's handler or not at all (its failure is the
/// click's to handle), and nothing is left to retry.
#[async_trait]
pub(crate) trait Modals: Send + Sync + 'static {
    async fn open_modal(&self, trigger_id: &str, modal: &Modal) -> Result<(), ChatError>;
}

/// What went wrong delivering a message, classified for the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// 429: nothing of this method before `retry_after` has passed.
    #[error("rate limited (Retry-After {retry_after:?})")]
    RateLimited { retry_after: Duration },
    /// The destination refused it and always will (Slack's code: `channel_not_found`, …).
    #[error("refused: {0}")]
    Permanent(String),
    /// Not delivered, worth trying again (5xx, a connection that never opened, an
    /// internal error, a token that does not work yet).
    #[error("not delivered: {0}")]
    Transient(String),
    /// The request may have arrived: a timeout or a connection lost after sending.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

impl ChatError {
    /// The short name used in metrics and logs.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            ChatError::RateLimited { .. } => "rate_limited",
            ChatError::Permanent(_) => "refused",
            ChatError::Transient(_) => "transient",
            ChatError::Unknown(_) => "unknown",
        }
    }
}

/// What a destination can do. The sender adapts: no threads → replies post at the top
/// level and only a job's plan and outcome are sent; no edits → edits are skipped; no
/// lookup → a post with an unknown outcome is not resent (at most once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub threads: bool,
    pub edits: bool,
    pub ephemeral: bool,
    pub lookup: bool,
}

impl Capabilities {
    pub(crate) const FULL: Capabilities = Capabilities {
        threads: true,
        edits: true,
        ephemeral: true,
        lookup: false,
    };
}

/// How often a destination may be called; the sender paces to these (zero: unpaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Between two posts in one channel (Slack: about 1 s).
    pub post_per_channel: Duration,
    /// Between two posts anywhere (Slack's workspace-wide limit).
    pub post: Duration,
    /// Between two edits (Tier 3).
    pub update: Duration,
    /// Between two ephemeral messages (Tier 4).
    pub ephemeral: Duration,
    /// Between two history lookups (Tier 3).
    pub lookup: Duration,
}

/// A destination for messages: the transport the outbox's sender delivers through.
#[async_trait]
pub trait Chat: Send + Sync {
    /// Posts a message (a thread reply when `thread_ts` is given); returns its `ts`.
    async fn post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        msg: &Message,
    ) -> Result<String, ChatError>;
    /// Edits a message the bot posted.
    async fn update(&self, channel: &str, ts: &str, msg: &Message) -> Result<(), ChatError>;
    /// Shows a message to one user only (best effort).
    async fn ephemeral(&self, channel: &str, user: &str, msg: &Message) -> Result<(), ChatError>;
    /// Answers through a `response_url` (Slack only).
    async fn respond(
        &self,
        _url: &str,
        _in_channel: bool,
        _msg: &Message,
    ) -> Result<(), ChatError> {
        Err(ChatError::Permanent(
            "this destination cannot answer a response_url".into(),
        ))
    }
    /// Looks for a post stamped with `outbox_id` among the channel's (or thread's) messages
    /// since `oldest` (Unix seconds). `Ok(None)`: surely not there.
    async fn find_post(
        &self,
        _channel: &str,
        _thread_ts: Option<&str>,
        _outbox_id: i64,
        _oldest: i64,
    ) -> Result<Option<String>, ChatError> {
        Err(ChatError::Permanent(
            "this destination cannot be searched".into(),
        ))
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::FULL
    }
    fn limits(&self) -> Limits {
        Limits::default()
    }
}

/// Slack is not configured: messages are logged, and get made-up timestamps so threads
/// still hang together in the store.
#[derive(Default)]
pub struct LogChat {
    seq: AtomicU64,
}

#[async_trait]
impl Chat for LogChat {
    async fn post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        msg: &Message,
    ) -> Result<String, ChatError> {
        tracing::info!(channel, thread_ts, text = %msg.text, "would post to Slack (SLACK_BOT_TOKEN is not set)");
        Ok(format!(
            "0.{:06}",
            self.seq.fetch_add(1, Ordering::Relaxed) + 1
        ))
    }

    async fn update(&self, channel: &str, ts: &str, msg: &Message) -> Result<(), ChatError> {
        tracing::info!(channel, ts, text = %msg.text, "would edit a Slack message (SLACK_BOT_TOKEN is not set)");
        Ok(())
    }

    async fn ephemeral(&self, channel: &str, user: &str, msg: &Message) -> Result<(), ChatError> {
        tracing::info!(channel, user, text = %msg.text, "would show an ephemeral message");
        Ok(())
    }

    async fn respond(&self, _url: &str, _in_channel: bool, msg: &Message) -> Result<(), ChatError> {
        tracing::info!(text = %msg.text, "would answer a response_url");
        Ok(())
    }
}

/// `corral exec`: prints the thread as it would appear, edits as `(root edited)` lines.
#[derive(Default)]
pub struct PrintChat {
    seq: AtomicU64,
}

#[async_trait]
impl Chat for PrintChat {
    async fn post(
        &self,
        _channel: &str,
        thread_ts: Option<&str>,
        msg: &Message,
    ) -> Result<String, ChatError> {
        let indent = if thread_ts.is_some() { "  │ " } else { "" };
        for line in plain(&msg.text).lines() {
            println!("{indent}{line}");
        }
        Ok(format!(
            "0.{:06}",
            self.seq.fetch_add(1, Ordering::Relaxed) + 1
        ))
    }

    async fn update(&self, _channel: &str, _ts: &str, msg: &Message) -> Result<(), ChatError> {
        let text = plain(&msg.text);
        println!("(root edited) {}", text.lines().next().unwrap_or(""));
        Ok(())
    }

    async fn ephemeral(&self, _channel: &str, _user: &str, msg: &Message) -> Result<(), ChatError> {
        println!("{}", plain(&msg.text));
        Ok(())
    }
}

/// Prints and also delivers: `printer` sees everything, `inner` is the real destination
/// whose capabilities and limits the sender follows.
pub struct TeeChat {
    pub printer: PrintChat,
    pub inner: Arc<dyn Chat>,
}

#[async_trait]
impl Chat for TeeChat {
    async fn post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        msg: &Message,
    ) -> Result<String, ChatError> {
        self.printer.post(channel, thread_ts, msg).await?;
        self.inner.post(channel, thread_ts, msg).await
    }

    async fn update(&self, channel: &str, ts: &str, msg: &Message) -> Result<(), ChatError> {
        self.printer.update(channel, ts, msg).await?;
        self.inner.update(channel, ts, msg).await
    }

    async fn ephemeral(&self, channel: &str, user: &str, msg: &Message) -> Result<(), ChatError> {
        self.printer.ephemeral(channel, user, msg).await
    }

    async fn respond(&self, url: &str, in_channel: bool, msg: &Message) -> Result<(), ChatError> {
        self.inner.respond(url, in_channel, msg).await
    }

    async fn find_post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        outbox_id: i64,
        oldest: i64,
    ) -> Result<Option<String>, ChatError> {
        self.inner
            .find_post(channel, thread_ts, outbox_id, oldest)
            .await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn limits(&self) -> Limits {
        self.inner.limits()
    }
}

/// Slack's Block Kit limits (Block Kit reference), shared by the two renderers of a
/// [`Message`]: Slack's (`slack::blocks`) and the playground's HTML.
pub(crate) mod limits {
    /// One section's text (and a field's, a context element's: 2000).
    pub(crate) const SECTION_MAX: usize = 3000;
    pub(crate) const FIELD_MAX: usize = 2000;
    pub(crate) const FIELDS_MAX: usize = 10;
    pub(crate) const BUTTONS_MAX: usize = 25;
    /// Blocks in one message.
    pub(crate) const BLOCKS_MAX: usize = 50;
    pub(crate) const ID_MAX: usize = 255;
    pub(crate) const BUTTON_TEXT_MAX: usize = 75;
    pub(crate) const VALUE_MAX: usize = 2000;
    pub(crate) const CONFIRM_TITLE_MAX: usize = 100;
    pub(crate) const CONFIRM_TEXT_MAX: usize = 300;
    pub(crate) const CONFIRM_BUTTON_MAX: usize = 30;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json_and_old_rows_still_read() {
        let m = Message::text("hi")
            .with_context("ctx")
            .with_block(Block::Divider)
            .stamped(42);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Message>(&json).unwrap(), m);
        assert_eq!(
            m.metadata.as_ref().unwrap().payload[OUTBOX_ID_KEY],
            "42".to_string()
        );
        // A row written with only text still reads.
        let old: Message = serde_json::from_str(r#"{"text":"x"}"#).unwrap();
        assert_eq!(old, Message::text("x"));
    }

    #[test]
    fn shortening_keeps_characters_whole_and_says_so() {
        let m = Message::text("é".repeat(100));
        let s = m.shortened(11);
        assert!(s.text.starts_with("ééééé…") || s.text.starts_with("ééééé\n"));
        assert!(s.text.contains("more characters did not fit"));
    }
}
