//! rancher-service-updater's endpoint (reference/rancher-tools.md §3), kept compatible:
//!
//! * `POST /upgrade` with `{"docker_image": "...", "confirm": bool, "start_first": bool,
//!   "timeout": seconds}` (defaults `false`, `false`, `30`; unknown fields ignored).
//!   Departures, on purpose: the API token is required (SPEC §4; the updater had no
//!   auth), and the answer is `202 {"job": id}` once the job is stored instead of an
//!   empty `200` — the job's per-service results are at `GET /api/v1/jobs/{id}`.
//! * Bad JSON → `400`, `text/plain` body naming the problem (the updater sent Go's decode
//!   error the same way). A reference that is not an image → `400` as well.
//! * `GET /ping` → `Pong!`, no auth.
//!
//! The request becomes the same typed command as `/upgrade image <ref>` and goes through
//! [`crate::app::App::handle`]: same policy, same lock gate, same job and Slack thread.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::app::{App, Outcome, Request, Source};
use crate::command::{Command, ImageUpgrade, UpgradeCmd};
use crate::rancher::image::ImageRef;

/// The longest timeout accepted over HTTP (a day); the updater took any int.
const MAX_TIMEOUT_SECS: u64 = 86_400;

/// The routes of this endpoint family.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/upgrade", post(upgrade))
        .route("/ping", get(ping))
}

async fn ping() -> &'static str {
    "Pong!"
}

/// rancher-service-updater's request body.
#[derive(Debug, Deserialize)]
struct UpgradeBody {
    docker_image: Option<String>,
    #[serde(default)]
    confirm: bool,
    #[serde(default)]
    start_first: bool,
    #[serde(default = "default_timeout")]
    timeout: u64,
}

fn default_timeout() -> u64 {
    30
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.into(),
    )
        .into_response()
}

/// Reads and checks the body; the error is the text of the 400.
fn parse_body(body: &[u8]) -> Result<ImageUpgrade, String> {
    let b: UpgradeBody = serde_json::from_slice(body).map_err(|e| {
        if body.iter().all(u8::is_ascii_whitespace) {
            "the body is empty: send JSON {\"docker_image\": \"myorg/app:1.2\"}".to_string()
        } else {
            format!("the body is not valid JSON for /upgrade: {e}")
        }
    })?;
    let Some(image) = b
        .docker_image
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    else {
        return Err("`docker_image` is missing or empty".into());
    };
    let image = image.strip_prefix("docker:").unwrap_or(&image).to_string();
    ImageRef::parse(&image).map_err(|e| format!("`docker_image`: {e}"))?;
    if b.timeout == 0 {
        // With confirm, zero would roll back every service right after upgrading it.
        return Err("`timeout` must be more than 0 seconds".into());
    }
    if b.timeout > MAX_TIMEOUT_SECS {
        return Err(format!(
            "`timeout` is {} seconds; at most {MAX_TIMEOUT_SECS}",
            b.timeout
        ));
    }
    Ok(ImageUpgrade {
        image,
        env: None,
        confirm: b.confirm,
        start_first: b.start_first,
        timeout: Some(Duration::from_secs(b.timeout)),
        dry_run: false,
        force: false,
    })
}

async fn upgrade(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = crate::api::auth::check(&headers, &app.config) {
        return plain(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let cmd = match parse_body(&body) {
        Ok(c) => c,
        Err(reason) => return plain(StatusCode::BAD_REQUEST, reason),
    };
    start(&app, cmd).await
}

/// Hands an image upgrade to the pipeline and answers `202 {"job": id}`, or the refusal.
/// Shared with the registry webhooks.
pub(crate) async fn start(app: &App, cmd: ImageUpgrade) -> Response {
    let reply = app
        .handle(Request {
            command: Command::Upgrade(UpgradeCmd::Image(cmd)),
            user: "rancher-service-updater".into(),
            source: Source::Api,
            channel: None,
        })
        .await;
    let status = match reply.outcome {
        Outcome::Ok => match &reply.job {
            Some(job) => {
                return (
                    StatusCode::ACCEPTED,
                    axum::Json(serde_json::json!({ "job": job.id })),
                )
                    .into_response();
            }
            None => StatusCode::INTERNAL_SERVER_ERROR,
        },
        Outcome::Refused => StatusCode::CONFLICT,
        Outcome::Invalid => StatusCode::BAD_REQUEST,
        Outcome::Error => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (
        status,
        axum::Json(serde_json::json!({ "error": crate::text::plain(&reply.text) })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_updaters() {
        let c = parse_body(br#"{"docker_image":"myorg/app:2.0"}"#).expect("valid");
        assert_eq!(c.image, "myorg/app:2.0");
        assert!(!c.confirm && !c.start_first && !c.dry_run && !c.force);
        assert_eq!(c.timeout, Some(Duration::from_secs(30)));
        let c = parse_body(
            br#"{"docker_image":"docker:reg.io:5000/app:2","confirm":true,"start_first":true,"timeout":5,"extra":[1]}"#,
        )
        .expect("valid");
        assert_eq!(c.image, "reg.io:5000/app:2");
        assert!(c.confirm && c.start_first);
        assert_eq!(c.timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        for (body, needle) in [
            (&b""[..], "empty"),
            (b"{", "not valid JSON"),
            (b"[]", "not valid JSON"),
            (b"{\"docker_image\": 3}", "not valid JSON"),
            (
                b"{\"docker_image\": \"a\", \"confirm\": \"yes\"}",
                "not valid JSON",
            ),
            (
                b"{\"docker_image\": \"a\", \"timeout\": -1}",
                "not valid JSON",
            ),
            (b"{\"docker_image\": \"a\", \"timeout\": 999999}", "at most"),
            (b"{\"docker_image\": \"a\", \"timeout\": 0}", "more than 0"),
            (b"{}", "missing"),
            (b"{\"docker_image\": \"  \"}", "missing"),
            (b"{\"docker_image\": \"My Org/app\"}", "docker_image"),
            (b"{\"docker_image\": \"app:\"}", "invalid tag"),
        ] {
            let e = parse_body(body).expect_err(&String::from_utf8_lossy(body));
            assert!(
                e.contains(needle),
                "{:?}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
