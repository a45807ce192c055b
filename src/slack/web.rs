//! Slack's Web API through slack-morphism: [`SlackChat`] is the transport the outbox's
//! sender delivers through. It makes exactly one call per method call (no retries, no
//! waiting: pacing and retries are the sender's, from the store), with a deadline, and
//! classifies every failure ([`ChatError`]): 429 with its `Retry-After`, Slack's permanent
//! refusals, transient errors, and outcomes it cannot know (a timeout or a connection
//! lost after the request went out).
//!
//! Traps in slack-morphism 2.31.1 worked around here: `conversations.replies` has no
//! `include_all_metadata`, and its message model reads metadata payloads as string maps
//! (one message from another app with a number in its payload would fail the whole page),
//! so history lookups use the generic `http_get` with our own tolerant model. Its
//! `SlackApiPostWebhookMessageRequest` has no `response_type`, so response_url answers are
//! plain JSON posts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use crate::chat::{Capabilities, Chat, ChatError, Limits, Message, Modal, OUTBOX_ID_KEY};
use crate::secret::Secret;

/// Slack's error codes that no retry can fix for this message.
const PERMANENT: &[&str] = &[
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "channel_is_archived",
    "msg_too_long",
    "msg_blocks_too_long",
    "no_text",
    "invalid_blocks",
    "invalid_blocks_format",
    "invalid_metadata_format",
    "invalid_metadata_schema",
    "metadata_too_large",
    "too_many_attachments",
    "cant_update_message",
    "message_not_found",
    "edit_window_closed",
    "user_not_in_channel",
    "user_not_found",
    "cannot_reply_to_message",
    "restricted_action",
    "restricted_action_read_only_channel",
    "restricted_action_thread_only_channel",
    "restricted_action_non_threadable_channel",
    "restricted_action_thread_locked",
    "thread_not_found",
    "invalid_arguments",
    "invalid_arg_name",
    "invalid_charset",
    "invalid_form_data",
    "invalid_post_type",
    "duplicate_channel_not_found",
    "duplicate_message_not_found",
    "posting_to_general_channel_denied",
    "not_allowed_token_type",
    "method_deprecated",
];

/// Codes after which a post may have happened anyway (Slack: "some aspect may have
/// succeeded"); everything else that is not permanent is transient.
const MAYBE_DONE: &[&str] = &["internal_error", "fatal_error", "request_timeout"];

/// What kind of call failed (a post's lost answer is unknown; an edit's is just retried).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Post,
    Idempotent,
}

fn is_connect_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper_util::client::legacy::Error>()
            && h.is_connect()
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// slack-morphism's error, classified.
fn classify(e: SlackClientError, call: Call) -> ChatError {
    let lost = |reason: String| match call {
        Call::Post => ChatError::Unknown(reason),
        Call::Idempotent => ChatError::Transient(reason),
    };
    match e {
        SlackClientError::RateLimitError(r) => ChatError::RateLimited {
            retry_after: r.retry_after.unwrap_or(Duration::from_secs(3)),
        },
        SlackClientError::ApiError(e) => {
            let code = e.code;
            if code == "rate_limited" || code == "ratelimited" {
                // 200 with ok:false "rate_limited": too many messages; wait a while.
                ChatError::RateLimited {
                    retry_after: Duration::from_secs(30),
                }
            } else if PERMANENT.contains(&code.as_str()) {
                ChatError::Permanent(code)
            } else if MAYBE_DONE.contains(&code.as_str()) {
                lost(code)
            } else {
                // Unknown codes and auth problems (invalid_auth, token_revoked,
                // missing_scope…): not this message's fault; keep it until the give-up age.
                ChatError::Transient(code)
            }
        }
        SlackClientError::HttpError(e) if e.status_code.is_server_error() => {
            ChatError::Transient(format!("HTTP {}", e.status_code))
        }
        SlackClientError::HttpError(e) => ChatError::Transient(format!("HTTP {}", e.status_code)),
        SlackClientError::HttpProtocolError(p) => {
            let never_sent = p
                .cause
                .as_deref()
                .is_some_and(|c| is_connect_error(c as &(dyn std::error::Error + 'static)));
            let reason = format!(
                "connection: {}",
                p.cause.map(|c| c.to_string()).unwrap_or_default()
            );
            if never_sent {
                ChatError::Transient(reason)
            } else {
                lost(reason)
            }
        }
        other => lost(other.to_string()),
    }
}

/// Slack's limits (reference/slack.md §e, approvals-schedules-replicas.md §d).
pub(crate) fn slack_limits(post_per_channel: Duration, update: Duration) -> Limits {
    Limits {
        post_per_channel,
        // "several hundred per minute" per workspace.
        post: Duration::from_millis(200),
        update,
        // Tier 4: 100+ a minute.
        ephemeral: Duration::from_millis(600),
        // Tier 3: 50+ a minute.
        lookup: Duration::from_millis(1200),
    }
}

/// The Slack Web API, through slack-morphism.
pub(crate) struct SlackChat {
    client: Arc<SlackHyperClient>,
    token: SlackApiToken,
    deadline: Duration,
    limits: Limits,
    http: reqwest::Client,
}

/// Builds slack-morphism's client for `api_url`. `http://` URLs (tests' fake Slack) need
/// a connector that allows plain HTTP: slack-morphism's default one is https-only.
pub(crate) fn slack_client(api_url: &url::Url) -> std::io::Result<Arc<SlackHyperClient>> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    let base = api_url.as_str().trim_end_matches('/').to_string();
    let connector = SlackClientHyperConnector::with_connector(https).with_slack_api_url(&base);
    Ok(Arc::new(SlackClient::new(connector)))
}

/// How many pages of history a lookup reads, and how many messages per page.
const LOOKUP_PAGES: usize = 3;
const LOOKUP_PAGE: u16 = 200;

#[derive(Deserialize)]
struct HistoryPage {
    #[serde(default)]
    messages: Vec<serde_json::Value>,
    #[serde(default)]
    response_metadata: Option<Cursor>,
}

#[derive(Deserialize)]
struct Cursor {
    #[serde(default)]
    next_cursor: Option<String>,
}

/// The `ts` of the message in `messages` stamped with `outbox_id`.
fn stamped_ts(messages: &[serde_json::Value], outbox_id: i64) -> Option<String> {
    let want = outbox_id.to_string();
    messages.iter().find_map(|m| {
        let v = &m["metadata"]["event_payload"][OUTBOX_ID_KEY];
        let hit = v.as_str() == Some(want.as_str()) || v.as_i64() == Some(outbox_id);
        hit.then(|| m["ts"].as_str().map(str::to_string)).flatten()
    })
}

impl SlackChat {
    pub(crate) fn new(api_url: &url::Url, token: &Secret) -> std::io::Result<SlackChat> {
        Ok(SlackChat {
            client: slack_client(api_url)?,
            token: SlackApiToken::new(token.expose().to_string().into()),
            deadline: Duration::from_secs(10),
            limits: slack_limits(Duration::from_secs(1), Duration::from_millis(1200)),
            http: crate::http_client().map_err(std::io::Error::other)?,
        })
    }

    /// The deadline of one call.
    pub(crate) fn with_deadline(mut self, deadline: Duration) -> SlackChat {
        self.deadline = deadline;
        self
    }

    pub(crate) fn with_limits(mut self, limits: Limits) -> SlackChat {
        self.limits = limits;
        self
    }

    /// One Web API call with a deadline; a deadline passed is an unknown outcome for a post.
    async fn call<T, Fut>(&self, call: Call, f: Fut) -> Result<T, ChatError>
    where
        Fut: std::future::Future<Output = Result<T, SlackClientError>>,
    {
        match tokio::time::timeout(self.deadline, f).await {
            Err(_) => Err(match call {
                Call::Post => ChatError::Unknown(format!("no answer within {:?}", self.deadline)),
                Call::Idempotent => {
                    ChatError::Transient(format!("no answer within {:?}", self.deadline))
                }
            }),
            Ok(r) => r.map_err(|e| classify(e, call)),
        }
    }

    fn content(msg: &Message) -> SlackMessageContent {
        let mut c = SlackMessageContent::new()
            .with_text(super::blocks::fallback(msg))
            .with_blocks(super::blocks::blocks(msg));
        if let Some(m) = &msg.metadata {
            c = c.with_metadata(SlackMessageMetadata {
                event_type: m.event_type.clone(),
                event_payload: Some(
                    m.payload
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<HashMap<_, _>>(),
                ),
            });
        }
        c
    }

    async fn history_page(
        &self,
        method: &str,
        params: Vec<(&str, Option<String>)>,
    ) -> Result<HistoryPage, ChatError> {
        let session = self.client.open_session(&self.token);
        self.call(
            Call::Idempotent,
            session
                .http_session_api
                .http_get::<HistoryPage, _, String>(method, &params, None),
        )
        .await
    }
}

#[async_trait]
impl crate::chat::Directory for SlackChat {
    async fn group_members(&self, group: &str) -> Result<Vec<String>, ChatError> {
        let req = SlackApiUserGroupsUsersListRequest {
            usergroup: group.to_string().into(),
            include_disabled: None,
            team_id: None,
        };
        let session = self.client.open_session(&self.token);
        let resp = self
            .call(Call::Idempotent, session.usergroups_users_list(&req))
            .await?;
        Ok(resp.users.into_iter().map(|u| u.to_string()).collect())
    }
}

#[async_trait]
impl crate::chat::Modals for SlackChat {
    async fn open_modal(&self, trigger_id: &str, m: &Modal) -> Result<(), ChatError> {
        let input = SlackInputBlock::new(
            pt!("{}", cut(&m.input_label, 2000)),
            SlackInputBlockElement::PlainTextInput(
                SlackBlockPlainTextInputElement::new()
                    .with_action_id(m.input_action.clone().into())
                    .with_multiline(true)
                    .with_max_length(m.input_max),
            ),
        )
        .with_block_id(m.input_block.clone().into())
        .with_optional(true);
        let view = SlackModalView::new(
            pt!("{}", cut(&m.title, 24)),
            vec![
                SlackSectionBlock::new()
                    .with_text(md!("{}", cut(&m.text, 3000)))
                    .into(),
                input.into(),
            ],
        )
        .with_callback_id(m.callback_id.clone().into())
        .with_private_metadata(m.private_metadata.clone())
        .with_submit(pt!("{}", cut(&m.submit, 24)))
        .with_close(pt!("Cancel"));
        let req =
            SlackApiViewsOpenRequest::new(trigger_id.to_string().into(), SlackView::Modal(view));
        let session = self.client.open_session(&self.token);
        self.call(Call::Idempotent, session.views_open(&req))
            .await
            .map(|_| ())
    }
}

/// At most `max` characters (Slack's limits on modal texts).
fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[async_trait]
impl Chat for SlackChat {
    async fn post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        msg: &Message,
    ) -> Result<String, ChatError> {
        let mut req =
            SlackApiChatPostMessageRequest::new(channel.to_string().into(), Self::content(msg));
        if let Some(ts) = thread_ts {
            req = req.with_thread_ts(ts.to_string().into());
        }
        let session = self.client.open_session(&self.token);
        let resp = self
            .call(Call::Post, session.chat_post_message(&req))
            .await?;
        Ok(resp.ts.to_string())
    }

    async fn update(&self, channel: &str, ts: &str, msg: &Message) -> Result<(), ChatError> {
        let req = SlackApiChatUpdateRequest::new(
            channel.to_string().into(),
            Self::content(msg),
            ts.to_string().into(),
        );
        let session = self.client.open_session(&self.token);
        self.call(Call::Idempotent, session.chat_update(&req))
            .await?;
        Ok(())
    }

    async fn ephemeral(&self, channel: &str, user: &str, msg: &Message) -> Result<(), ChatError> {
        let req = SlackApiChatPostEphemeralRequest::new(
            channel.to_string().into(),
            user.to_string().into(),
            Self::content(msg),
        );
        let session = self.client.open_session(&self.token);
        self.call(Call::Post, session.chat_post_ephemeral(&req))
            .await?;
        Ok(())
    }

    async fn respond(&self, url: &str, in_channel: bool, msg: &Message) -> Result<(), ChatError> {
        let body = serde_json::json!({
            "response_type": if in_channel { "in_channel" } else { "ephemeral" },
            "replace_original": false,
            "text": super::blocks::fallback(msg),
            "blocks": super::blocks::blocks(msg),
        });
        let sent =
            tokio::time::timeout(self.deadline, self.http.post(url).json(&body).send()).await;
        match sent {
            Err(_) => Err(ChatError::Unknown(format!(
                "no answer within {:?}",
                self.deadline
            ))),
            Ok(Err(e)) if e.is_connect() => Err(ChatError::Transient(e.to_string())),
            Ok(Err(e)) => Err(ChatError::Unknown(e.to_string())),
            Ok(Ok(r)) if r.status().as_u16() == 429 => Err(ChatError::RateLimited {
                retry_after: retry_after(r.headers()),
            }),
            Ok(Ok(r)) if r.status().is_server_error() => {
                Err(ChatError::Unknown(format!("HTTP {}", r.status())))
            }
            Ok(Ok(r)) if !r.status().is_success() => Err(ChatError::Permanent(format!(
                "HTTP {}: {}",
                r.status(),
                crate::text::truncate(&r.text().await.unwrap_or_default(), 200)
            ))),
            Ok(Ok(_)) => Ok(()),
        }
    }

    async fn find_post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        outbox_id: i64,
        oldest: i64,
    ) -> Result<Option<String>, ChatError> {
        let mut cursor: Option<String> = None;
        for _ in 0..LOOKUP_PAGES {
            let mut params: Vec<(&str, Option<String>)> = vec![
                ("channel", Some(channel.to_string())),
                ("oldest", Some(format!("{}.000000", oldest.max(0)))),
                ("limit", Some(LOOKUP_PAGE.to_string())),
                ("include_all_metadata", Some("true".into())),
                ("cursor", cursor.clone()),
            ];
            let method = match thread_ts {
                Some(ts) => {
                    params.push(("ts", Some(ts.to_string())));
                    "conversations.replies"
                }
                None => "conversations.history",
            };
            let page = self.history_page(method, params).await?;
            if let Some(ts) = stamped_ts(&page.messages, outbox_id) {
                return Ok(Some(ts));
            }
            cursor = page
                .response_metadata
                .and_then(|m| m.next_cursor)
                .filter(|c| !c.is_empty());
            if cursor.is_none() {
                return Ok(None);
            }
        }
        // More recent history than a lookup reads: say "cannot tell", not "not there".
        Err(ChatError::Transient(format!(
            "more than {} messages since the post; cannot tell whether it arrived",
            LOOKUP_PAGES * LOOKUP_PAGE as usize
        )))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: true,
            edits: true,
            ephemeral: true,
            lookup: true,
        }
    }

    fn limits(&self) -> Limits {
        self.limits
    }
}

/// A `Retry-After` header in seconds (3 s when absent or unreadable).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)))
        .unwrap_or(Duration::from_secs(3))
}

/// `auth.test`: who the bot token belongs to (for `corral check`).
pub async fn auth_test(api_url: &url::Url, token: &Secret) -> Result<String, ChatError> {
    let client = slack_client(api_url).map_err(|e| ChatError::Transient(e.to_string()))?;
    let token = SlackApiToken::new(token.expose().to_string().into());
    let session = client.open_session(&token);
    let resp = tokio::time::timeout(Duration::from_secs(10), session.auth_test())
        .await
        .map_err(|_| ChatError::Transient("no answer within 10 s".into()))?
        .map_err(|e| classify(e, Call::Idempotent))?;
    Ok(format!("bot {} in team {}", resp.user_id, resp.team_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_posts_are_found_by_string_or_number_and_others_ignored() {
        let msgs: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"ts":"1.1","text":"no metadata"},
                {"ts":"1.2","metadata":{"event_type":"other_app","event_payload":{"n":5}}},
                {"ts":"1.3","metadata":{"event_type":"corral_outbox","event_payload":{"corral_outbox_id":"7"}}},
                {"ts":"1.4","metadata":{"event_type":"x","event_payload":{"corral_outbox_id":8}}}]"#,
        )
        .unwrap();
        assert_eq!(stamped_ts(&msgs, 7).as_deref(), Some("1.3"));
        assert_eq!(stamped_ts(&msgs, 8).as_deref(), Some("1.4"));
        assert_eq!(stamped_ts(&msgs, 9), None);
    }

    #[test]
    fn slack_codes_are_classified() {
        let api = |code: &str| {
            SlackClientError::ApiError(slack_morphism::errors::SlackClientApiError::new(
                code.to_string(),
            ))
        };
        assert_eq!(
            classify(api("channel_not_found"), Call::Post),
            ChatError::Permanent("channel_not_found".into())
        );
        assert!(matches!(
            classify(api("internal_error"), Call::Post),
            ChatError::Unknown(_)
        ));
        assert!(matches!(
            classify(api("internal_error"), Call::Idempotent),
            ChatError::Transient(_)
        ));
        assert!(matches!(
            classify(api("invalid_auth"), Call::Post),
            ChatError::Transient(_)
        ));
        assert!(matches!(
            classify(api("rate_limited"), Call::Post),
            ChatError::RateLimited { .. }
        ));
    }
}
