//! Slack's HTTP doors: `/slack/commands`, `/slack/events`, `/slack/interactions`.
//!
//! Each handler reads the raw body (size-limited by the router), verifies the v0
//! signature over exactly those bytes, and only then parses. A bad, stale or missing
//! signature gets `401` and nothing else happens. Handlers answer well inside Slack's
//! 3 s: lock commands are answered in the acknowledgement; jobs are stored and spawned;
//! mentions are handled in a spawned task after the `200`.
//!
//! We use our own axum routes rather than slack-morphism's listeners because its hyper
//! listener drops bad signatures without any response, and we need the raw form fields
//! and retry headers (reference/slack-morphism.md). slack-morphism's models parse the
//! event and interaction payloads.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use slack_morphism::prelude::*;

use super::verify::{self, VerifyError};
use crate::app::deny::{REASON_ACTION, REASON_BLOCK, Refused, Submission};
use crate::app::interact::Click;
use crate::app::limit::{Admission, TOO_FAST};
use crate::app::{App, Reply, ReplyTo, Request, Visibility};
use crate::chat::Message;
use crate::command::{self, Command};
use crate::door::Source;
use crate::store::NewMessage;

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Verifies a request; on failure the `401` to send.
fn check_signature(app: &App, headers: &HeaderMap, body: &[u8]) -> Result<(), Response> {
    let secret = app
        .config
        .slack
        .signing_secret
        .as_ref()
        .map(|s| s.expose())
        .unwrap_or("");
    let result = verify::verify(
        secret,
        header_str(headers, "x-slack-signature"),
        header_str(headers, "x-slack-request-timestamp"),
        body,
        app.clock.unix(),
    );
    result.map_err(|e| {
        app.metrics.slack_rejected_signatures.inc();
        tracing::warn!(reason = %e, "Slack request rejected");
        let text = match e {
            VerifyError::NoSecret => e.to_string(),
            _ => format!("invalid Slack signature: {e}"),
        };
        (StatusCode::UNAUTHORIZED, text).into_response()
    })
}

/// The acknowledgement of a slash command: Slack's message JSON.
fn ack(reply: &Reply) -> Response {
    let response_type = match reply.visibility {
        Visibility::Ephemeral => "ephemeral",
        Visibility::InChannel => "in_channel",
    };
    axum::Json(json!({ "response_type": response_type, "text": reply.text })).into_response()
}

fn ephemeral(text: String) -> Response {
    axum::Json(json!({ "response_type": "ephemeral", "text": text })).into_response()
}

/// Whether a body is Slack's SSL check: `ssl_check=1` and no `command` field.
fn is_ssl_check(body: &[u8]) -> bool {
    body.len() < 512
        && body.split(|b| *b == b'&').any(|kv| kv == b"ssl_check=1")
        && !body
            .split(|b| *b == b'&')
            .any(|kv| kv.starts_with(b"command="))
}

/// `POST /slack/commands`.
pub(crate) async fn commands(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.metrics.slack_commands.inc();
    if let Err(resp) = check_signature(&app, &headers, &body) {
        // Slack's SSL check may come unsigned and carries no command: answer 200 and do
        // nothing (bolt does the same). Recognised by its bytes, without parsing.
        if is_ssl_check(&body) {
            return StatusCode::OK.into_response();
        }
        return resp;
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("ssl_check") == Some("1") && field("command").is_none() {
        return StatusCode::OK.into_response();
    }
    let (Some(cmd_name), Some(user), Some(channel)) =
        (field("command"), field("user_id"), field("channel_id"))
    else {
        return (
            StatusCode::BAD_REQUEST,
            "not a slash command: command, user_id and channel_id are required",
        )
            .into_response();
    };
    match app.admit(user).await {
        Admission::Allowed => {}
        Admission::Refused => return ephemeral(TOO_FAST.to_string()),
        // Already told: an empty 200 shows nothing.
        Admission::Silent => return StatusCode::OK.into_response(),
    }
    let text = field("text").unwrap_or("");
    let command = match command::parse_slash(cmd_name, text) {
        Ok(c) => c,
        Err(e) => return ephemeral(e.to_string()),
    };
    let reply = app
        .handle(Request {
            command,
            user: user.to_string(),
            source: Source::Slack,
            channel: Some(channel.to_string()),
        })
        .await;
    ack(&reply)
}

/// `POST /slack/events`.
pub(crate) async fn events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.metrics.slack_events.inc();
    if let Err(resp) = check_signature(&app, &headers, &body) {
        return resp;
    }
    let event: SlackPushEvent = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an Events API payload: {e}"),
            )
                .into_response();
        }
    };
    match event {
        SlackPushEvent::UrlVerification(v) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            v.challenge,
        )
            .into_response(),
        SlackPushEvent::EventCallback(cb) => {
            // Record the id before the slow work, so a retry of a slow ack is not run
            // twice (reference/slack.md §c).
            match app
                .store
                .first_delivery(cb.event_id.as_ref(), app.clock.unix())
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    app.metrics.slack_duplicate_events.inc();
                    tracing::info!(event_id = %cb.event_id, retry = ?header_str(&headers, "x-slack-retry-num"), "duplicate event ignored");
                    return StatusCode::OK.into_response();
                }
                Err(e) => {
                    // Without the dedupe record we cannot promise once-only; ask for a retry.
                    tracing::error!(error = %e, "cannot record event id");
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
            }
            if let SlackEventCallbackBody::AppMention(m) = cb.event {
                tokio::spawn(handle_mention(app.clone(), m));
            }
            StatusCode::OK.into_response()
        }
        _ => StatusCode::OK.into_response(),
    }
}

/// A mention: the same grammar, answered in the mention's thread (changes) or to the
/// person (refusals, errors, status, help), through the outbox.
pub(crate) async fn handle_mention(app: Arc<App>, m: SlackAppMentionEvent) {
    let channel = m.channel.to_string();
    let thread = m
        .origin
        .thread_ts
        .as_ref()
        .unwrap_or(&m.origin.ts)
        .to_string();
    let text = m.content.text.clone().unwrap_or_default();
    let user = m.user.to_string();
    match app.admit(&user).await {
        Admission::Allowed => {}
        Admission::Refused => {
            let now = app.clock.unix_ms();
            app.say(vec![NewMessage::ephemeral(
                now,
                channel,
                user,
                Message::text(TOO_FAST),
            )])
            .await;
            return;
        }
        Admission::Silent => return,
    }
    let to = ReplyTo {
        channel: channel.clone(),
        thread: crate::store::Thread::Ts(thread),
        user: user.clone(),
    };
    match command::parse_text(&text) {
        Err(e) => {
            let reply = Reply::invalid(e.to_string());
            let now = app.clock.unix_ms();
            app.say(vec![NewMessage::ephemeral(
                now,
                to.channel,
                to.user,
                Message::text(reply.text),
            )])
            .await;
        }
        Ok(command) => {
            app.handle_replying(
                Request {
                    command,
                    user,
                    source: Source::Slack,
                    channel: Some(channel),
                },
                to,
            )
            .await;
        }
    }
}

/// `POST /slack/interactions`: routed by `action_id`. No buttons exist yet, so every
/// action is acknowledged and logged; the approval flow will hang here.
pub(crate) async fn interactions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.metrics.slack_interactions.inc();
    if let Err(resp) = check_signature(&app, &headers, &body) {
        return resp;
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let Some((_, payload)) = form.iter().find(|(k, _)| k == "payload") else {
        return (
            StatusCode::BAD_REQUEST,
            "interaction without a payload field",
        )
            .into_response();
    };
    let event: SlackInteractionEvent = match serde_json::from_str(payload) {
        Ok(e) => e,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an interaction payload: {e}"),
            )
                .into_response();
        }
    };
    match route_interaction(&app, &event).await {
        None => StatusCode::OK.into_response(),
        // The modal stays open and shows why on its input (Slack's `response_action`).
        Some(r) => axum::Json(serde_json::json!({
            "response_action": "errors",
            "errors": { r.block_id: r.text },
        }))
        .into_response(),
    }
}

/// The clicks in an interaction payload, as the app's [`Click`]s (shared with Socket
/// Mode). Interactions that are not button clicks are logged and ignored.
pub(crate) fn clicks(event: &SlackInteractionEvent) -> Vec<Click> {
    let SlackInteractionEvent::BlockActions(b) = event else {
        tracing::info!(kind = ?std::mem::discriminant(event), "interaction ignored");
        return Vec::new();
    };
    let Some(user) = b.user.as_ref().map(|u| u.id.to_string()) else {
        tracing::warn!("block_actions without a user ignored");
        return Vec::new();
    };
    let (container_channel, message_ts) = match &b.container {
        SlackInteractionActionContainer::Message(m) => (
            m.channel_id.as_ref().map(|c| c.to_string()),
            Some(m.message_ts.to_string()),
        ),
        _ => (None, None),
    };
    let channel = container_channel.or_else(|| b.channel.as_ref().map(|c| c.id.to_string()));
    b.actions
        .iter()
        .flatten()
        .map(|a| Click {
            action_id: a.action_id.to_string(),
            block_id: a
                .block_id
                .as_ref()
                .map(|x| x.to_string())
                .unwrap_or_default(),
            value: a.value.clone().unwrap_or_default(),
            user: user.clone(),
            source: Source::Slack,
            channel: channel.clone(),
            message_ts: message_ts.clone(),
            response_url: b.response_url.as_ref().map(|u| u.0.to_string()),
            trigger_id: Some(b.trigger_id.to_string()),
        })
        .collect()
}

/// A modal's `view_submission` as the app's [`Submission`]; `None` for anything else.
pub(crate) fn submission(event: &SlackInteractionEvent) -> Option<Submission> {
    let SlackInteractionEvent::ViewSubmission(v) = event else {
        return None;
    };
    let SlackView::Modal(modal) = &v.view.view else {
        return None;
    };
    let reason = v
        .view
        .state_params
        .state
        .as_ref()
        .and_then(|s| s.values.get(&REASON_BLOCK.to_string().into()))
        .and_then(|b| b.get(&REASON_ACTION.to_string().into()))
        .and_then(|x| x.value.clone())
        .unwrap_or_default();
    Some(Submission {
        callback_id: modal
            .callback_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        user: v.user.id.to_string(),
        private_metadata: modal.private_metadata.clone().unwrap_or_default(),
        reason,
        source: Source::Slack,
    })
}

/// Hands every click of an interaction to the app, or a modal's submission: `Some` when
/// the submission was refused (the modal shows why).
pub(crate) async fn route_interaction(app: &App, event: &SlackInteractionEvent) -> Option<Refused> {
    if let Some(s) = submission(event) {
        return app.submit(s).await.err();
    }
    for click in clicks(event) {
        app.click(click).await;
    }
    None
}

/// Turns a parsed command text into a [`Command`] (used by Socket Mode).
pub(crate) fn parse_command(name: &str, text: &str) -> Result<Command, String> {
    command::parse_slash(name, text).map_err(|e| e.to_string())
}
