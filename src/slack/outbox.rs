//! Egress: everything corral says goes through a [`Chat`].
//!
//! [`SlackChat`] delivers through slack-morphism's Web API client, paced at one
//! `chat.postMessage` per second per channel (Slack's limit) with a keyed governor
//! limiter, honouring `Retry-After` on 429, with a deadline on every call.
//! [`PrintChat`] prints what Slack would show (`corral exec`), [`LogChat`] only logs
//! (Slack not configured).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use super::blocks::Message;
use crate::secret::Secret;

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

/// slack-morphism's error as ours: Slack's error code when it gave one.
fn chat_error(e: SlackClientError) -> ChatError {
    match e {
        SlackClientError::ApiError(e) => ChatError::Api(e.code),
        SlackClientError::RateLimitError(_) => ChatError::Api("ratelimited".into()),
        e => ChatError::Transport(e.to_string()),
    }
}

/// How long one Web API call may take.
const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// How many times a rate-limited call is retried.
const MAX_RETRIES: u32 = 3;

/// The Slack Web API, through slack-morphism.
pub struct SlackChat {
    client: Arc<SlackHyperClient>,
    token: SlackApiToken,
    per_channel: DefaultKeyedRateLimiter<String>,
}

/// Builds slack-morphism's client for `api_url`. `http://` URLs (tests' fake Slack) need
/// a connector that allows plain HTTP: slack-morphism's default one is https-only.
pub fn slack_client(api_url: &url::Url) -> std::io::Result<Arc<SlackHyperClient>> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    let base = api_url.as_str().trim_end_matches('/').to_string();
    let connector = SlackClientHyperConnector::with_connector(https).with_slack_api_url(&base);
    Ok(Arc::new(SlackClient::new(connector)))
}

impl SlackChat {
    pub fn new(api_url: &url::Url, token: &Secret) -> std::io::Result<SlackChat> {
        let quota = Quota::per_second(NonZeroU32::MIN).allow_burst(NonZeroU32::MIN);
        Ok(SlackChat {
            client: slack_client(api_url)?,
            token: SlackApiToken::new(token.expose().to_string().into()),
            per_channel: RateLimiter::keyed(quota),
        })
    }

    /// Runs one Web API call with a deadline, retrying on 429 after `Retry-After`.
    async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, ChatError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SlackClientError>>,
    {
        let mut attempt = 0;
        loop {
            let result = tokio::time::timeout(CALL_DEADLINE, f())
                .await
                .map_err(|_| ChatError::Timeout(CALL_DEADLINE))?;
            match result {
                Ok(v) => return Ok(v),
                Err(SlackClientError::RateLimitError(e)) if attempt < MAX_RETRIES => {
                    attempt += 1;
                    let wait = e.retry_after.unwrap_or(Duration::from_secs(1));
                    tracing::warn!(?wait, attempt, "Slack rate limit; waiting");
                    tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
                }
                Err(e) => return Err(chat_error(e)),
            }
        }
    }

    fn content(msg: &Message) -> SlackMessageContent {
        SlackMessageContent::new()
            .with_text(msg.text.clone())
            .with_blocks(msg.blocks())
    }
}

#[async_trait]
impl Chat for SlackChat {
    async fn post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        msg: &Message,
    ) -> Result<String, ChatError> {
        self.per_channel.until_key_ready(&channel.to_string()).await;
        let mut req =
            SlackApiChatPostMessageRequest::new(channel.to_string().into(), Self::content(msg));
        if let Some(ts) = thread_ts {
            req = req.with_thread_ts(ts.to_string().into());
        }
        let session = self.client.open_session(&self.token);
        let resp = self.call(|| session.chat_post_message(&req)).await?;
        Ok(resp.ts.to_string())
    }

    async fn update(&self, channel: &str, ts: &str, msg: &Message) -> Result<(), ChatError> {
        let req = SlackApiChatUpdateRequest::new(
            channel.to_string().into(),
            Self::content(msg),
            ts.to_string().into(),
        );
        let session = self.client.open_session(&self.token);
        self.call(|| session.chat_update(&req)).await?;
        Ok(())
    }

    async fn ephemeral(&self, channel: &str, user: &str, msg: &Message) -> Result<(), ChatError> {
        let req = SlackApiChatPostEphemeralRequest::new(
            channel.to_string().into(),
            user.to_string().into(),
            Self::content(msg),
        );
        let session = self.client.open_session(&self.token);
        self.call(|| session.chat_post_ephemeral(&req)).await?;
        Ok(())
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
        for line in super::blocks::plain(&msg.text).lines() {
            println!("{indent}{line}");
        }
        Ok(format!(
            "0.{:06}",
            self.seq.fetch_add(1, Ordering::Relaxed) + 1
        ))
    }

    async fn update(&self, _channel: &str, _ts: &str, msg: &Message) -> Result<(), ChatError> {
        let text = super::blocks::plain(&msg.text);
        println!("(root edited) {}", text.lines().next().unwrap_or(""));
        Ok(())
    }

    async fn ephemeral(&self, _channel: &str, _user: &str, msg: &Message) -> Result<(), ChatError> {
        println!("{}", super::blocks::plain(&msg.text));
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

/// `auth.test`: who the bot token belongs to (for `corral check`).
pub async fn auth_test(api_url: &url::Url, token: &Secret) -> Result<String, ChatError> {
    let client = slack_client(api_url).map_err(|e| ChatError::Transport(e.to_string()))?;
    let token = SlackApiToken::new(token.expose().to_string().into());
    let session = client.open_session(&token);
    let resp = tokio::time::timeout(CALL_DEADLINE, session.auth_test())
        .await
        .map_err(|_| ChatError::Timeout(CALL_DEADLINE))?
        .map_err(chat_error)?;
    Ok(format!("bot {} in team {}", resp.user_id, resp.team_id))
}
