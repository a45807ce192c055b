//! `POST /api/v1/deploys/{job}/reports`: a host's result, posted by `corral agent
//! --report-url` (SPEC §4, §6). `CORRAL_REPORT_TOKEN` (valid on this endpoint only) or
//! the API token is required; the job must be a deploy that has not ended, and the host
//! must be one the job expects: one of `CORRAL_DEPLOY_HOSTS` when set, and one of the
//! hosts the job recorded in the store before firing its event (Serf's or Consul's too).
//! The fan-out job waiting on `{job}` picks reports up from the store.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use crate::app::App;
use crate::deploy::report::Report;
use crate::store::DeployReport;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new().route("/api/v1/deploys/{job}/reports", post(report))
}

fn error(status: StatusCode, text: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": text.to_string() }))).into_response()
}

/// Longest host name accepted.
const MAX_HOST: usize = 255;
/// Longest log tail kept (agents send 4 KiB).
const MAX_TAIL: usize = 16 * 1024;

async fn report(
    State(app): State<Arc<App>>,
    Path(job): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = crate::api::auth::check_report(&headers, &app.config) {
        return error(StatusCode::UNAUTHORIZED, e);
    }
    let Ok(job_id) = job.parse::<i64>() else {
        return error(StatusCode::BAD_REQUEST, format!("{job:?} is not a job id"));
    };
    let (r, ok) = match read_body(&body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let host = r.host.trim();
    if let Err(e) = check_expected(&app, host) {
        return e;
    }
    if let Err(e) = check_job(&app, job_id).await {
        return e;
    }
    if let Err(e) = check_job_expects(&app, job_id, host).await {
        return e;
    }
    let rec = record(&app, job_id, host, ok, &r);
    match app.store.add_deploy_report(&rec).await {
        Ok(true) => (
            StatusCode::CREATED,
            axum::Json(json!({ "job": job_id, "host": rec.host, "recorded": true })),
        )
            .into_response(),
        Ok(false) => error(
            StatusCode::CONFLICT,
            format!("{} already reported for job {job_id}", rec.host),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// The report's JSON, its host name checked, and whether it says the deploy succeeded.
fn read_body(body: &[u8]) -> Result<(Report, bool), Response> {
    let r: Report = serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!(
                "body must be JSON {{\"host\", \"status\": \"succeeded\"|\"failed\", \"duration_ms\", \"log_tail\"}}: {e}"
            ),
        )
    })?;
    let host = r.host.trim();
    if host.is_empty()
        || host.len() > MAX_HOST
        || host.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("host must be 1 to {MAX_HOST} printable characters without spaces"),
        ));
    }
    let ok = match r.status.as_str() {
        "succeeded" => true,
        "failed" => false,
        other => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("status must be succeeded or failed, not {other:?}"),
            ));
        }
    };
    Ok((r, ok))
}

/// With `CORRAL_DEPLOY_HOSTS` set, the host must be one of them.
fn check_expected(app: &App, host: &str) -> Result<(), Response> {
    let expected = &app.config.deploy.hosts;
    if !expected.is_empty() && !expected.iter().any(|h| h == host) {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "host {} is not one this deploy expects (CORRAL_DEPLOY_HOSTS)",
                crate::text::sanitize(host)
            ),
        ));
    }
    Ok(())
}

/// The host must be one of those the job recorded before it fired its event (Serf's
/// members, Consul's catalog or `CORRAL_DEPLOY_HOSTS`). A job with no recorded set has
/// not fired yet, or was started by a replica from before the set was kept: its host is
/// then judged by the running job, which notes unexpected hosts.
async fn check_job_expects(app: &App, job_id: i64, host: &str) -> Result<(), Response> {
    match app.store.deploy_host_expected(job_id, host).await {
        Ok(Some(false)) => Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "host {} is not one deploy job {job_id} expects",
                crate::text::sanitize(host)
            ),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

/// The job must be a deploy that has not ended.
async fn check_job(app: &App, job_id: i64) -> Result<(), Response> {
    match app.store.job(job_id).await {
        Ok(Some(j)) if j.kind == crate::job::JobKind::Deploy && j.status.is_final() => Err(error(
            StatusCode::CONFLICT,
            format!("job {job_id} has ended; reports are no longer taken"),
        )),
        Ok(Some(j)) if j.kind == crate::job::JobKind::Deploy => Ok(()),
        Ok(Some(j)) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("job {job_id} is a {} job, not a deploy", j.kind),
        )),
        Ok(None) => Err(error(StatusCode::NOT_FOUND, format!("no job {job_id}"))),
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

/// The row to store, every free-text field cut to its bound; the tail and the error pass
/// through the tail redaction (a host's output is outside input, whatever agent sent it).
fn record(app: &App, job_id: i64, host: &str, ok: bool, r: &Report) -> DeployReport {
    let cut = |s: &str, max: usize| crate::deploy::log::tail(s, usize::MAX, max);
    let scrubbed = |s: &str, max: usize| crate::deploy::scrub::report_tail(s, usize::MAX, max);
    DeployReport {
        job_id,
        host: host.to_string(),
        ok,
        duration_ms: r.duration_ms,
        log_tail: scrubbed(&r.log_tail, MAX_TAIL),
        error: r.error.as_deref().map(|e| scrubbed(e, 2048)),
        event_id: r.event_id.as_deref().map(|e| cut(e, 128)),
        at: app.clock.unix(),
    }
}
