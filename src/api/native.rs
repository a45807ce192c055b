//! corral's own API (SPEC §4): `POST /api/v1/commands`, `GET /api/v1/jobs[/{id}]`,
//! `/api/v1/lock`, `/api/v1/audit`. JSON in and out; every error is a 4xx/5xx with
//! `{"error": "…"}`; the API token is required.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::app::{App, Outcome, Request, Source};
use crate::command;
use crate::text::plain;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/commands", post(commands))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/jobs/{id}", get(job))
        .route("/api/v1/lock", get(lock))
        .route("/api/v1/audit", get(audit))
}

/// A JSON error response.
pub(crate) fn error(status: StatusCode, text: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": text.to_string() }))).into_response()
}

fn authorize(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    super::auth::check(headers, &app.config).map_err(|e| error(StatusCode::UNAUTHORIZED, e))
}

/// Longest accepted caller name.
const MAX_USER: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    text: String,
    user: Option<String>,
}

async fn commands(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let body: CommandBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be JSON {{\"text\": \"…\", \"user\": \"…\"}}: {e}"),
            );
        }
    };
    let user = body.user.unwrap_or_else(|| "api".to_string());
    let user = user.trim();
    if user.is_empty() || user.len() > MAX_USER || user.chars().any(char::is_control) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("user must be 1 to {MAX_USER} printable characters"),
        );
    }
    let command = match command::parse_text(&body.text) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, plain(&e.to_string())),
    };
    let reply = app
        .handle(Request {
            command,
            user: user.to_string(),
            source: Source::Api,
            channel: None,
        })
        .await;
    let status = match reply.outcome {
        Outcome::Ok if reply.job.is_some() => StatusCode::ACCEPTED,
        Outcome::Ok => StatusCode::OK,
        Outcome::Invalid => return error(StatusCode::BAD_REQUEST, plain(&reply.text)),
        Outcome::Refused => return error(StatusCode::CONFLICT, plain(&reply.text)),
        Outcome::Error => return error(StatusCode::INTERNAL_SERVER_ERROR, plain(&reply.text)),
    };
    let text = plain(&reply.text);
    (
        status,
        axum::Json(json!({ "text": text, "job": reply.job })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

type LimitQuery = Result<Query<Limit>, axum::extract::rejection::QueryRejection>;

/// The token check and `?limit=` (1–1000, default 50) shared by the listing endpoints.
fn listing(app: &App, headers: &HeaderMap, q: LimitQuery) -> Result<usize, Response> {
    authorize(app, headers)?;
    let Ok(Query(q)) = q else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "limit must be a whole number",
        ));
    };
    match q.limit {
        None => Ok(50),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "limit must be from 1 to 1000",
        )),
    }
}

/// A store answer as JSON under `key`, or 503.
fn stored<T: serde::Serialize>(key: &str, r: Result<T, crate::store::StoreError>) -> Response {
    match r {
        Ok(v) => axum::Json(json!({ key: v })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn jobs(State(app): State<Arc<App>>, headers: HeaderMap, q: LimitQuery) -> Response {
    match listing(&app, &headers, q) {
        Ok(n) => stored("jobs", app.store.jobs(n).await),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct AuditFilter {
    since: Option<String>,
    user: Option<String>,
}

/// `GET /api/v1/audit?since=&user=&limit=`: `since` is Unix seconds, an RFC 3339 time or
/// a duration ago (`2h`); `user` an identity as stored (`U0ALICE`, `api:ci`).
async fn audit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: LimitQuery,
    f: Result<Query<AuditFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let n = match listing(&app, &headers, q) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let Ok(Query(f)) = f else {
        return error(StatusCode::BAD_REQUEST, "since and user must be text");
    };
    if f.since.is_none() && f.user.is_none() {
        return stored("audit", app.store.audit_log(n).await);
    }
    let since = match f
        .since
        .as_deref()
        .map(|s| crate::text::parse_since(s, app.clock.unix()))
    {
        None => 0,
        Some(Ok(t)) => t,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    let user = f
        .user
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty());
    if user.as_ref().is_some_and(|u| u.len() > MAX_USER) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("user is longer than {MAX_USER}"),
        );
    }
    // No identity holds a control character (the doors refuse them), and PostgreSQL
    // refuses a NUL in text: the store would answer 503 for the caller's mistake.
    if user
        .as_ref()
        .is_some_and(|u| u.chars().any(char::is_control))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "user must be printable characters (no control characters)",
        );
    }
    stored("audit", app.store.audit_query(since, user, n).await)
}

async fn job(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("job id {id:?} is not a number"),
        );
    };
    match app.store.job(id).await {
        Ok(Some(job)) => axum::Json(job).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn lock(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    match app.store.lock_state().await {
        Ok(state) => axum::Json(state).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}
