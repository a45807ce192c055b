//! `/healthz` (the process answers), `/readyz` (the store answers — not Slack: while
//! Slack is down corral still takes commands and its outbox keeps what it will say),
//! `/metrics` (OpenMetrics text, from the app's own registry).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::App;
use crate::app::metrics::CONTENT_TYPE;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.store.ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}"),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let lock = app.store.lock_state().await.ok();
    if let Ok(stats) = app.store.outbox_stats().await {
        app.metrics.set_outbox(&stats, app.clock.unix_ms());
    }
    let body = app.metrics.render(lock.as_ref(), lock.is_some());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}
