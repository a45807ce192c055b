//! The HTTP API: corral's native routes and the older tools' endpoints, one file each.
//!
//! Handlers are thin: extract, call [`crate::app::App`], map the answer. State is
//! `Arc<App>`; each route family checks the API token itself (via [`auth::check`]) so a
//! refusal keeps the format of the tool it imitates.

pub mod auth;
pub mod cowpoke;
pub mod deploys;
pub mod health;
pub mod hooks;
pub mod native;
pub mod releasestatus;
pub mod serve;
pub mod updater;
pub mod votes;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;

use crate::app::App;
use crate::slack;

/// Largest request body accepted (Slack's payloads are a few KiB; registry webhooks and
/// agent reports are small).
pub const BODY_LIMIT: usize = 256 * 1024;

/// Every route corral serves.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/slack/commands", post(slack::http::commands))
        .route("/slack/events", post(slack::http::events))
        .route("/slack/interactions", post(slack::http::interactions))
        .merge(releasestatus::routes())
        .merge(cowpoke::routes())
        .merge(updater::routes())
        .merge(hooks::routes())
        .merge(native::routes())
        .merge(votes::routes())
        .merge(deploys::routes())
        .merge(health::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// Go's default 404 (releasestatus's and the other Go tools' unknown-path answer).
async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        "404 page not found\n",
    )
}
