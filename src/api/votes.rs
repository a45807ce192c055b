//! Approvals over HTTP (SPEC §4): `POST /api/v1/jobs/{id}/votes`
//! `{"vote": "approve"|"deny", "user", "note"}` (a vote as `api:USER`, the same rules as a
//! click: it counts only when an approval rule lists that exact id) and
//! `GET /api/v1/approvals` (pending approvals with their votes). API token required.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::native::error;
use crate::app::{App, Source};
use crate::job::approval::VoteKind;
use crate::text::plain;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/jobs/{id}/votes", post(vote))
        .route("/api/v1/approvals", get(approvals))
}

/// Longest accepted caller name and note.
const MAX_USER: usize = 64;
const MAX_NOTE: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VoteBody {
    vote: String,
    user: String,
    #[serde(default)]
    note: String,
}

async fn vote(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(e) = super::auth::check(&headers, &app.config) {
        return error(StatusCode::UNAUTHORIZED, e);
    }
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("job id {id:?} is not a number"),
        );
    };
    let body: VoteBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body must be JSON {{\"vote\": \"approve\"|\"deny\", \"user\": \"…\", \"note\": \"…\"}}: {e}"
                ),
            );
        }
    };
    let Ok(kind) = body.vote.parse::<VoteKind>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "vote must be \"approve\" or \"deny\"",
        );
    };
    let user = body.user.trim();
    if user.is_empty() || user.len() > MAX_USER || user.chars().any(char::is_control) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("user must be 1 to {MAX_USER} printable characters"),
        );
    }
    if body.note.len() > MAX_NOTE || body.note.chars().any(|c| c.is_control() && c != '\n') {
        return error(
            StatusCode::BAD_REQUEST,
            format!("note must be at most {MAX_NOTE} bytes of text"),
        );
    }
    match app.store.job(id).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
    let r = app.vote(id, user, Source::Api, kind, &body.note).await;
    if !r.ok {
        return error(StatusCode::CONFLICT, plain(&r.text));
    }
    let job = app.store.job(id).await.ok().flatten();
    axum::Json(json!({ "text": plain(&r.text), "completed": r.completed, "job": job }))
        .into_response()
}

async fn approvals(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = super::auth::check(&headers, &app.config) {
        return error(StatusCode::UNAUTHORIZED, e);
    }
    let pending = match app.store.pending_approvals().await {
        Ok(p) => p,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let mut out = Vec::new();
    for a in pending {
        let votes = match app.store.approval(a.job_id).await {
            Ok(Some((_, v))) => v,
            Ok(None) => Vec::new(),
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
        };
        let plan: serde_json::Value = serde_json::from_str(&a.plan).unwrap_or_default();
        out.push(json!({
            "job": a.job_id,
            "round": a.round,
            "rule": a.rule,
            "required": a.required,
            "approvers": a.approvers,
            "plan": plan,
            "plan_digest": a.plan_digest,
            "created_at": a.created_at,
            "expires_at": a.expires_at,
            "votes": votes,
        }));
    }
    axum::Json(json!({ "approvals": out })).into_response()
}
