//! Socket Mode: the same payloads over a WebSocket corral opens, for workspaces that
//! cannot expose a public Request URL (reference/slack.md §f).
//!
//! slack-morphism's listener acks an envelope only after our callback returns, so
//! callbacks do what HTTP handlers do: answer lock commands at once, store and spawn
//! jobs, spawn mention handling. Its callbacks are plain function pointers, so the
//! [`App`] travels in the listener's user state.

use std::sync::Arc;

use slack_morphism::prelude::*;

use super::http::{handle_mention, parse_command, route_interaction};
use crate::app::limit::{Admission, TOO_FAST};
use crate::app::{App, Request, Visibility};
use crate::door::Source;
use crate::secret::Secret;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn app_of(states: &SlackClientEventsUserState) -> Result<Arc<App>, BoxError> {
    let guard = states.read().await;
    guard
        .get_user_state::<Arc<App>>()
        .cloned()
        .ok_or_else(|| "corral state missing from the Socket Mode listener".into())
}

async fn on_command(
    event: SlackCommandEvent,
    _client: Arc<SlackHyperClient>,
    states: SlackClientEventsUserState,
) -> Result<SlackCommandEventResponse, BoxError> {
    let app = app_of(&states).await?;
    let text = event.text.clone().unwrap_or_default();
    match app.admit(event.user_id.as_ref()).await {
        Admission::Allowed => {}
        Admission::Refused => {
            return Ok(SlackCommandEventResponse::new(
                SlackMessageContent::new().with_text(TOO_FAST.to_string()),
            )
            .with_response_type(SlackMessageResponseType::Ephemeral));
        }
        Admission::Silent => {
            return Ok(SlackCommandEventResponse::new(SlackMessageContent::new()));
        }
    }
    let (text, visibility) = match parse_command(&event.command.0, &text) {
        Err(problem) => (problem, Visibility::Ephemeral),
        Ok(command) => {
            let reply = app
                .handle(Request {
                    command,
                    user: event.user_id.to_string(),
                    source: Source::Slack,
                    channel: Some(event.channel_id.to_string()),
                })
                .await;
            (reply.text, reply.visibility)
        }
    };
    let response_type = match visibility {
        Visibility::Ephemeral => SlackMessageResponseType::Ephemeral,
        Visibility::InChannel => SlackMessageResponseType::InChannel,
    };
    Ok(
        SlackCommandEventResponse::new(SlackMessageContent::new().with_text(text))
            .with_response_type(response_type),
    )
}

async fn on_push(
    event: SlackPushEventCallback,
    _client: Arc<SlackHyperClient>,
    states: SlackClientEventsUserState,
) -> Result<(), BoxError> {
    let app = app_of(&states).await?;
    // Socket Mode redelivers too (retry_attempt); dedupe on the same store set as HTTP.
    // If the store cannot say, handle the event anyway: the envelope is acked either way
    // (see `on_error`), and a possible duplicate beats a lost command.
    match app
        .store
        .first_delivery(event.event_id.as_ref(), app.clock.unix())
        .await
    {
        Ok(true) => {}
        Ok(false) => return Ok(()),
        Err(e) => tracing::warn!(error = %e, "cannot record event id; handling it anyway"),
    }
    if let SlackEventCallbackBody::AppMention(m) = event.event {
        tokio::spawn(handle_mention(app, m));
    }
    Ok(())
}

async fn on_interaction(
    event: SlackInteractionEvent,
    _client: Arc<SlackHyperClient>,
    states: SlackClientEventsUserState,
) -> Result<SlackInteractionResponse, BoxError> {
    let app = app_of(&states).await?;
    Ok(match route_interaction(&app, &event).await {
        None => SlackInteractionResponse::Empty,
        // The ack's payload: the modal stays open and shows why on its input.
        Some(r) => SlackInteractionResponse::ViewSubmission(SlackViewSubmissionResponse::Errors(
            SlackViewSubmissionErrorsResponse::new([(r.block_id, r.text)].into_iter().collect()),
        )),
    })
}

fn on_error(
    err: BoxError,
    _client: Arc<SlackHyperClient>,
    _states: SlackClientEventsUserState,
) -> axum::http::StatusCode {
    // Returning 200 still acks the envelope: a failed callback must not make Slack
    // redeliver a command that may have done its work.
    tracing::warn!(error = %err, "Socket Mode callback failed");
    axum::http::StatusCode::OK
}

/// A running Socket Mode connection; drop or [`SocketMode::shutdown`] to close.
pub struct SocketMode {
    listener: SlackClientSocketModeListener<SlackClientHyperHttpsConnector>,
}

impl SocketMode {
    /// Opens the connection (`apps.connections.open` with the `xapp-` token) and starts
    /// serving envelopes in the background.
    pub async fn start(app: Arc<App>, app_token: &Secret) -> Result<SocketMode, BoxError> {
        let client = super::web::slack_client(&app.config.slack.api_url)?;
        let callbacks = SlackSocketModeListenerCallbacks::new()
            .with_command_events(on_command)
            .with_push_events(on_push)
            .with_interaction_events(on_interaction);
        let env = Arc::new(
            SlackClientEventsListenerEnvironment::new(client)
                .with_error_handler(on_error)
                .with_user_state(app),
        );
        let listener =
            SlackClientSocketModeListener::new(&SlackClientSocketModeConfig::new(), env, callbacks);
        let token = SlackApiToken::new(app_token.expose().to_string().into());
        listener.listen_for(&token).await?;
        listener.start().await;
        Ok(SocketMode { listener })
    }

    pub async fn shutdown(self) {
        self.listener.shutdown().await;
    }
}
