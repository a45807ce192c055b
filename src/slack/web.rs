//! Slack's Web API through slack-morphism: [`SlackChat`] delivers messages, paced at one
//! `chat.postMessage` per second per channel (Slack's limit) with a keyed governor
//! limiter, honouring `Retry-After` on 429, with a deadline on every call.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use crate::chat::{Chat, ChatError, Message};
use crate::secret::Secret;

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
            .with_blocks(super::blocks::blocks(msg))
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
