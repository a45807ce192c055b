//! An incoming webhook as a destination ([`WebhookChat`]), for those coming from
//! rancher-service-updater (`AUTOUPDATE_SLACK_WEBHOOK_URL`, `AUTOUPDATE_SLACK_BOT_NAME`).
//!
//! A webhook posts into the one channel it was made for and returns no `ts`: it can
//! neither thread nor edit nor be searched. The sender adapts (see `chat::Capabilities`):
//! each job posts its plan once and its outcome once, edits are skipped, and a post whose
//! outcome is unknown is not repeated (at most once).
//!
//! Answers (Slack's incoming-webhook docs): `200 ok`; `400 invalid_payload` / `no_text` /
//! `too_many_attachments`, `403 action_prohibited` / `invalid_token`, `404
//! channel_not_found` / `no_service`, `410 channel_is_archived` are refusals; 429 is rate
//! limiting with `Retry-After`; 5xx are Slack's trouble.

use std::time::Duration;

use async_trait::async_trait;

use crate::chat::{Capabilities, Chat, ChatError, Limits, Message};
use crate::secret::Secret;

pub(crate) struct WebhookChat {
    url: Secret,
    username: Option<String>,
    http: reqwest::Client,
    deadline: Duration,
}

impl WebhookChat {
    pub(crate) fn new(
        url: Secret,
        username: Option<String>,
        deadline: Duration,
    ) -> std::io::Result<Self> {
        Ok(WebhookChat {
            url,
            username,
            http: crate::http_client().map_err(std::io::Error::other)?,
            deadline,
        })
    }
}

#[async_trait]
impl Chat for WebhookChat {
    async fn post(
        &self,
        _channel: &str,
        _thread_ts: Option<&str>,
        msg: &Message,
    ) -> Result<String, ChatError> {
        let mut body = serde_json::json!({
            "text": super::blocks::fallback(msg),
            "blocks": super::blocks::blocks(msg),
        });
        if let Some(name) = &self.username {
            body["username"] = serde_json::json!(name);
        }
        let sent = tokio::time::timeout(
            self.deadline,
            self.http.post(self.url.expose()).json(&body).send(),
        )
        .await;
        // Errors never carry the URL: it is a credential.
        let r = match sent {
            Err(_) => {
                return Err(ChatError::Unknown(format!(
                    "the webhook did not answer within {:?}",
                    self.deadline
                )));
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(ChatError::Transient("cannot reach the webhook".into()));
            }
            Ok(Err(_)) => {
                return Err(ChatError::Unknown(
                    "the connection to the webhook was lost".into(),
                ));
            }
            Ok(Ok(r)) => r,
        };
        let status = r.status();
        if status.as_u16() == 429 {
            return Err(ChatError::RateLimited {
                retry_after: super::web::retry_after(r.headers()),
            });
        }
        let text = crate::text::truncate(r.text().await.unwrap_or_default().trim(), 100);
        if status.is_server_error() {
            return Err(ChatError::Unknown(format!("HTTP {status} {text}")));
        }
        if !status.is_success() {
            return Err(ChatError::Permanent(format!("HTTP {status} {text}")));
        }
        // No ts comes back; the row is done.
        Ok(String::new())
    }

    async fn update(&self, _c: &str, _ts: &str, _m: &Message) -> Result<(), ChatError> {
        Err(ChatError::Permanent("a webhook cannot edit".into()))
    }

    async fn ephemeral(&self, _c: &str, _u: &str, _m: &Message) -> Result<(), ChatError> {
        Err(ChatError::Permanent(
            "a webhook cannot show ephemeral messages".into(),
        ))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: false,
            edits: false,
            ephemeral: false,
            lookup: false,
        }
    }

    fn limits(&self) -> Limits {
        // Incoming webhooks: one message a second.
        Limits {
            post_per_channel: Duration::from_secs(1),
            post: Duration::from_secs(1),
            ..Limits::default()
        }
    }
}
