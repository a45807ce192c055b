//! go-cowpoke's endpoints (reference/cowpoke.md §2–§5), served by corral:
//!
//! * `GET /api/_status` → `200 text/plain; charset=utf-8` `service up` (no auth, SPEC §4);
//! * `PATCH /api/stack` `{"catalog","template","templateVersion"}` → the catalog upgrade
//!   job through the one pipeline ([`App::handle`]), answered when it ends with
//!   go-cowpoke's JSON: `{"msg":"results from upgrading stack(s)","results":[{"name",
//!   "environment","upgradedTo","error"}]}`, 200 when every listed stack was upgraded,
//!   500 when any failed; plan failures as `{"msg": …}` with Rancher's status
//!   (`404 url not found for template`, `500 No environments could be found`).
//!
//! Kept from go-cowpoke: the `bearer` header (plus `Authorization: Bearer`), the 401 body
//! `{"status":"unauthorized"}`, `400` with an empty body for a bad request, `404 page not
//! found` for another method, key order, `environment` as a name. Changed on purpose:
//! with no token configured the endpoint refuses (SPEC §4); a bad request is not sent on
//! to Rancher; a Rancher error keeps its real status (go-cowpoke answered 200 for those);
//! `error` holds the reason with Rancher's words instead of a fixed sentence; a refusal
//! by the release lock answers `409 {"msg": …}`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::any;
use serde::{Deserialize, Serialize};

use super::auth::{self, AuthError};
use crate::app::{App, Outcome as ReplyOutcome, Request, Source};
use crate::command::{CatalogUpgrade, Command, UpgradeCmd};
use crate::job::Outcome;
use crate::rancher::catalog::Detail;
use crate::text::plain;

/// The routes; the lead merges them into the main router.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/stack", any(stack))
        .route("/api/_status", any(status))
}

const JSON: &str = "application/json; charset=utf-8";

fn respond(status: StatusCode, content_type: Option<&str>, body: impl Into<Body>) -> Response {
    let mut b = Response::builder().status(status);
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b.body(body.into()).unwrap_or_else(|_| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// gin's answer to an unknown route or method: 18 bytes, no newline.
fn not_found() -> Response {
    respond(
        StatusCode::NOT_FOUND,
        Some("text/plain"),
        "404 page not found",
    )
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => respond(status, Some(JSON), bytes),
        Err(_) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(JSON),
            r#"{"msg":"an unexpected error occurred"}"#,
        ),
    }
}

#[derive(Serialize)]
struct Msg<'a> {
    msg: &'a str,
}

fn msg(status: StatusCode, text: &str) -> Response {
    json(status, &Msg { msg: text })
}

#[derive(Serialize)]
struct Unauthorized<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg: Option<String>,
}

/// One stack in go-cowpoke's reply; field order is the wire order.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CowpokeResult {
    pub name: String,
    pub environment: String,
    #[serde(rename = "upgradedTo")]
    pub upgraded_to: String,
    pub error: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CowpokeReply {
    pub msg: String,
    pub results: Vec<CowpokeResult>,
}

async fn status(method: Method) -> Response {
    if method != Method::GET {
        return not_found();
    }
    respond(
        StatusCode::OK,
        Some("text/plain; charset=utf-8"),
        "service up",
    )
}

/// The request body. Every field must be present and non-empty (gin's `required`).
#[derive(Deserialize)]
struct StackRequest {
    catalog: Option<String>,
    template: Option<String>,
    #[serde(rename = "templateVersion")]
    template_version: Option<String>,
}

fn bad_request() -> Response {
    respond(StatusCode::BAD_REQUEST, None, Body::empty())
}

/// The characters `/upgrade` accepts in each part (command/upgrade.rs).
fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
}

fn parse_request(headers: &HeaderMap, body: &Bytes) -> Option<CatalogUpgrade> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = ct.split(';').next()?.trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return None;
    }
    let req: StackRequest = serde_json::from_slice(body).ok()?;
    let (catalog, template, version) = (req.catalog?, req.template?, req.template_version?);
    if ![&catalog, &template, &version]
        .iter()
        .all(|p| valid_part(p))
    {
        return None;
    }
    Some(CatalogUpgrade {
        catalog,
        template,
        version,
        env: None,
        dry_run: false,
        force: false,
    })
}

async fn stack(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Authentication comes first, as in go-cowpoke's global middleware.
    if let Err(e) = auth::check(&headers, &app.config) {
        let msg = (e == AuthError::NotConfigured).then(|| e.to_string());
        return json(
            StatusCode::UNAUTHORIZED,
            &Unauthorized {
                status: "unauthorized",
                msg,
            },
        );
    }
    if method != Method::PATCH {
        return not_found();
    }
    let Some(cmd) = parse_request(&headers, &body) else {
        return bad_request();
    };
    let req = Request {
        command: Command::Upgrade(UpgradeCmd::Catalog(cmd)),
        user: "go-cowpoke".into(),
        source: Source::Api,
        channel: None,
    };
    let reply = app.handle(req).await;
    let job = match (reply.outcome, reply.job) {
        (ReplyOutcome::Ok, Some(job)) => job,
        (ReplyOutcome::Refused, _) => return msg(StatusCode::CONFLICT, &plain(&reply.text)),
        (ReplyOutcome::Invalid, _) => return msg(StatusCode::BAD_REQUEST, &plain(&reply.text)),
        _ => return msg(StatusCode::INTERNAL_SERVER_ERROR, &plain(&reply.text)),
    };
    // go-cowpoke answered when the upgrade was over; every stack has its own deadline,
    // and this bound only guards against a job that never reports back.
    let bound = (app.config.rancher.upgrade_timeout * 3).max(std::time::Duration::from_secs(3600));
    if tokio::time::timeout(bound, app.runner.wait(job.id))
        .await
        .is_err()
    {
        return msg(
            StatusCode::GATEWAY_TIMEOUT,
            &format!(
                "job {} is still running; see GET /api/v1/jobs/{}",
                job.id, job.id
            ),
        );
    }
    let outcome = match app.store.job(job.id).await {
        Ok(Some(rec)) => rec.outcome,
        _ => None,
    };
    match outcome {
        Some(o) => render(&o),
        None => msg(
            StatusCode::INTERNAL_SERVER_ERROR,
            "an unexpected error occurred",
        ),
    }
}

/// go-cowpoke's reply for a finished catalog upgrade.
pub(crate) fn render(o: &Outcome) -> Response {
    let Some(detail) = Detail::from_outcome(o) else {
        // The job could not run at all (Rancher not configured).
        return msg(StatusCode::INTERNAL_SERVER_ERROR, &o.summary);
    };
    if let Some(e) = &detail.error {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return msg(status, &e.msg);
    }
    let (status, reply) = cowpoke_reply(o, &detail);
    json(status, &reply)
}

/// The results and the status: 200 when every listed stack reached its version, 500
/// when any did not or an environment could not be read. Skipped stacks are not listed.
pub fn cowpoke_reply(o: &Outcome, detail: &Detail) -> (StatusCode, CowpokeReply) {
    let results: Vec<CowpokeResult> = detail
        .stacks
        .iter()
        .filter(|s| s.status == "upgraded" || s.status == "failed")
        .map(|s| CowpokeResult {
            name: s.name.clone(),
            environment: s.environment.clone(),
            upgraded_to: s.upgraded_to.clone(),
            error: s.error.clone(),
        })
        .collect();
    let listed_failures = detail
        .stacks
        .iter()
        .filter(|s| s.status == "failed")
        .count();
    let all_reached = results.iter().all(|r| !r.upgraded_to.is_empty());
    let other_failures = o.failed.len() > listed_failures;
    let status = if all_reached && !other_failures {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (
        status,
        CowpokeReply {
            msg: "results from upgrading stack(s)".into(),
            results,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        h
    }

    #[test]
    fn request_validation() {
        let ok = Bytes::from_static(
            br#"{"catalog":"library","template":"cowpoke","templateVersion":"2.0.0"}"#,
        );
        let c = parse_request(&headers("application/json; charset=utf-8"), &ok).unwrap();
        assert_eq!(
            (c.catalog.as_str(), c.template.as_str(), c.version.as_str()),
            ("library", "cowpoke", "2.0.0")
        );
        assert!(parse_request(&headers("application/x-www-form-urlencoded"), &ok).is_none());
        assert!(parse_request(&HeaderMap::new(), &ok).is_none());
        for bad in [
            r#"{"catalog":"library","template":"cowpoke"}"#,
            r#"{"catalog":"library","template":"cowpoke","templateVersion":""}"#,
            r#"{"catalog":"library","template":"cowpoke","templateVersion":"1 --dry-run"}"#,
            r#"{"catalog":"lib:x","template":"cowpoke","templateVersion":"1"}"#,
            r#"{"catalog":1,"template":"cowpoke","templateVersion":"1"}"#,
            "not json",
            "[]",
        ] {
            assert!(
                parse_request(&headers("application/json"), &Bytes::from(bad)).is_none(),
                "{bad}"
            );
        }
    }
}
