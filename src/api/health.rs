//! `/healthz` (the process answers), `/readyz` (the store answers), `/metrics`
//! (Prometheus text format).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::App;
use crate::slack::http::METRICS;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.store.ping() {
        Ok(()) => "ready".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}"),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut out = String::new();
    let counters = [
        (
            "corral_slack_commands_total",
            "Slash-command requests received",
            &METRICS.commands,
        ),
        (
            "corral_slack_events_total",
            "Events API requests received",
            &METRICS.events,
        ),
        (
            "corral_slack_interactions_total",
            "Interaction requests received",
            &METRICS.interactions,
        ),
        (
            "corral_slack_rejected_signatures_total",
            "Slack requests refused for their signature",
            &METRICS.rejected_signatures,
        ),
        (
            "corral_slack_duplicate_events_total",
            "Events API retries ignored",
            &METRICS.duplicate_events,
        ),
    ];
    for (name, help, c) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            c.load(Ordering::Relaxed)
        );
    }
    if let Ok(state) = app.store.lock_state() {
        let _ = writeln!(
            out,
            "# HELP corral_release_running 1 while a release holds the lock\n# TYPE corral_release_running gauge\ncorral_release_running {}",
            u8::from(state.running.is_some())
        );
        let _ = writeln!(
            out,
            "# HELP corral_release_blocked 1 while releases are blocked\n# TYPE corral_release_blocked gauge\ncorral_release_blocked {}",
            u8::from(state.blocked.is_some())
        );
    }
    let ready = u8::from(app.store.ping().is_ok());
    let _ = writeln!(
        out,
        "# HELP corral_store_up 1 when the store answers\n# TYPE corral_store_up gauge\ncorral_store_up {ready}"
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
