//! releasestatus's endpoints, byte for byte (reference/releasestatus.md): `/start?name=`,
//! `/stop`, `/block`, `/unblock`, any method, exact paths, status `200` and a body of
//! exactly `1` (done) or `0` (refused), `text/plain; charset=utf-8`.
//!
//! One difference on purpose: corral requires the API token (SPEC §4), so a request
//! without it gets `401` and changes nothing. `/stop` keeps releasestatus's rule that
//! anyone (with the token) may stop; the chat rule "only the holder" does not apply.

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use crate::app::{App, Source};
use crate::lock::{Actor, LockAction};

/// The name releasestatus records when `?name=` is missing or empty.
pub(crate) const UNKNOWN_USER: &str = "an unknown user";

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/start", any(start))
        .route("/stop", any(stop))
        .route("/block", any(block))
        .route("/unblock", any(unblock))
}

/// `?name=`: percent-decoded, `+` as space, first value wins, case-sensitive key.
pub(crate) fn name_param(query: Option<&str>) -> String {
    query
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "name")
                .map(|(_, v)| v.into_owned())
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| UNKNOWN_USER.to_string())
}

async fn run(app: &App, headers: &HeaderMap, who: String, action: LockAction) -> Response {
    if let Err(e) = super::auth::check(headers, &app.config) {
        return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    }
    let actor = Actor {
        who: crate::app::identity(Source::ReleaseStatus, &who),
        may_force: true,
        holder_only_stop: false,
    };
    match app.change_lock(action, actor, Source::ReleaseStatus).await {
        Ok(Ok(_)) => "1".into_response(),
        Ok(Err(_)) => "0".into_response(),
        Err(e) => {
            tracing::error!(error = %e, "lock change failed");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
        }
    }
}

async fn start(State(app): State<Arc<App>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let who = name_param(q.as_deref());
    let reason = String::new();
    run(&app, &headers, who, LockAction::Start { reason }).await
}

async fn stop(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    run(
        &app,
        &headers,
        "releasestatus".into(),
        LockAction::Stop { force: false },
    )
    .await
}

async fn block(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    run(
        &app,
        &headers,
        "releasestatus".into(),
        LockAction::Block {
            reason: String::new(),
        },
    )
    .await
}

async fn unblock(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    run(&app, &headers, "releasestatus".into(), LockAction::Unblock).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_parameter_rules() {
        assert_eq!(name_param(Some("name=J%C3%B6rg+X")), "Jörg X");
        assert_eq!(name_param(Some("name=a&name=b")), "a");
        assert_eq!(name_param(Some("NAME=a")), UNKNOWN_USER);
        assert_eq!(name_param(Some("name=")), UNKNOWN_USER);
        assert_eq!(name_param(Some("name=%20")), " ");
        assert_eq!(name_param(None), UNKNOWN_USER);
        assert_eq!(name_param(Some("name=%ZZ")), "%ZZ");
    }
}
