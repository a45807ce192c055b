//! What corral says, and where it goes: the [`Chat`] trait, the [`Message`] it carries,
//! and the destinations that are not Slack ([`LogChat`] when Slack is off, [`PrintChat`]
//! and [`TeeChat`] for `corral exec`). Slack's implementation and the Block Kit rendering
//! live in `slack/`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::text::plain;

/// One message: mrkdwn text, optionally with a small context line under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub text: String,
    pub context: Option<String>,
}

impl Message {
    pub fn text(text: impl Into<String>) -> Self {
        Message {
            text: text.into(),
            context: None,
        }
    }

    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }
}

/// A delivery failure, with Slack's error code when it gave one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChatError {
    #[error("Slack said {0}")]
    Api(String),
    #[error("Slack could not be reached: {0}")]
    Transport(String),
    #[error("Slack did not answer within {0:?}")]
    Timeout(Duration),
}

/// Where messages go.
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
}

/// `corral exec`: prints the thread as it would appear, edits as `(edited)` lines.
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

/// `corral exec` with Slack configured: prints the thread and also delivers it, so the
/// team sees CLI work in `CORRAL_CHANNEL` as it sees Slack work.
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
}
