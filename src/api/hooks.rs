//! Registry webhooks: `POST /hooks/registry` starts `/upgrade image <ref>` when an image
//! is pushed — what Keel users point their registry at.
//!
//! Two payloads are understood:
//!
//! * Docker Hub's push notification:
//!   `{"push_data": {"tag": "1.2"}, "repository": {"repo_name": "myorg/app"}, …}` →
//!   `myorg/app:1.2`;
//! * a generic `{"image": "registry.io:5000/team/app:1.2"}` (for CI scripts and other
//!   registries).
//!
//! **Authentication** — either of:
//!
//! * the API token, as everywhere (`Authorization: Bearer <token>`);
//! * a signature for senders that cannot set a bearer token but can sign:
//!   `X-Corral-Timestamp: <unix seconds>` and `X-Corral-Signature: sha256=<hex>`, where
//!   `<hex>` is the lowercase hex HMAC-SHA256 of `<timestamp>.<raw body>` keyed by the API
//!   token (`CORRAL_API_TOKEN`). The timestamp must be within 300 s of corral's clock, so a
//!   captured request cannot be replayed later. Compared in constant time. Example:
//!   `TS=$(date +%s); printf '%s.%s' "$TS" "$BODY" | openssl dgst -sha256 -hmac "$CORRAL_API_TOKEN"`.
//!
//! **Replays.** A signed request is accepted once: its (timestamp, signature) pair is
//! remembered in the store, which every replica shares, so a copy sent again inside the
//! window gets `409 {"error": …}` and starts nothing.
//!
//! With no API token configured the hook refuses everything (401), like every upgrade
//! endpoint. The job confirms the upgrade (waits for `upgraded`, then finishes it), so a
//! push never leaves services half-upgraded; it runs through [`crate::app::App::handle`]
//! with the same lock gate as chat. Answers `202 {"job": id}`; bad payloads `400
//! {"error": …}`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::command::ImageUpgrade;
use crate::config::Config;
use crate::rancher::image::ImageRef;

/// The signature header.
pub(crate) const SIGNATURE_HEADER: &str = "x-corral-signature";
/// The header holding the signed Unix timestamp.
pub(crate) const TIMESTAMP_HEADER: &str = "x-corral-timestamp";
/// How far a signed timestamp may be from now.
pub(crate) const MAX_AGE_SECONDS: i64 = 300;

/// The routes of the webhook family.
pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/hooks/registry", post(registry))
}

/// `sha256=<hex>` of `<timestamp>.<body>` keyed by `key`: what a sender puts in
/// [`SIGNATURE_HEADER`], with `timestamp` in [`TIMESTAMP_HEADER`].
pub fn sign(key: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a hook request was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HookAuthError {
    #[error(transparent)]
    Token(#[from] crate::api::auth::AuthError),
    #[error(
        "wrong {SIGNATURE_HEADER}: expected sha256=<hex HMAC-SHA256 of `<{TIMESTAMP_HEADER}>.<body>` keyed by the API token>"
    )]
    BadSignature,
    #[error(
        "{TIMESTAMP_HEADER} is missing, not a number, or more than {MAX_AGE_SECONDS} s from now"
    )]
    Stale,
}

/// Lets a request in by its API token or by its body signature.
pub(crate) fn authenticate(
    headers: &HeaderMap,
    body: &[u8],
    config: &Config,
    now: i64,
) -> Result<(), HookAuthError> {
    let Some(sig) = headers.get(SIGNATURE_HEADER) else {
        return crate::api::auth::check(headers, config).map_err(HookAuthError::from);
    };
    let Some(token) = &config.api_token else {
        return Err(crate::api::auth::AuthError::NotConfigured.into());
    };
    let ts = headers
        .get(TIMESTAMP_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(HookAuthError::Stale)?;
    let fresh = ts
        .parse::<i64>()
        .is_ok_and(|t| (now - t).abs() <= MAX_AGE_SECONDS);
    if !fresh {
        return Err(HookAuthError::Stale);
    }
    let given = sig.to_str().unwrap_or("").trim().to_ascii_lowercase();
    let expected = sign(token.expose(), ts, body);
    if !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(HookAuthError::BadSignature)
    }
}

/// The image a payload names, or why it names none.
pub(crate) fn image_of(body: &[u8]) -> Result<String, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let text = |v: &Value, what: &str| -> Result<String, String> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            _ => Err(format!("`{what}` must be a non-empty string")),
        }
    };
    let image = if let Some(i) = v.get("image") {
        text(i, "image")?
    } else if let (Some(repo), Some(push)) = (v.get("repository"), v.get("push_data")) {
        let name = text(
            repo.get("repo_name").unwrap_or(&Value::Null),
            "repository.repo_name",
        )?;
        let tag = match push.get("tag") {
            None | Some(Value::Null) => "latest".to_string(),
            Some(t) => text(t, "push_data.tag")?,
        };
        format!("{name}:{tag}")
    } else {
        return Err(
            "expected Docker Hub's push payload (repository.repo_name, push_data.tag) or {\"image\": \"<ref>\"}"
                .into(),
        );
    };
    let image = image.strip_prefix("docker:").unwrap_or(&image).to_string();
    ImageRef::parse(&image).map_err(|e| format!("image: {e}"))?;
    Ok(image)
}

/// The key a signed request is remembered by, so a copy sent again inside the window
/// is refused (by any replica: the set is the store's delivery keys, kept 25 h, well past
/// the window). `None` for requests let in by the bearer token. Called after
/// [`authenticate`] accepted the signature, so the header values are well-formed.
fn replay_key(headers: &HeaderMap) -> Option<String> {
    let sig = headers.get(SIGNATURE_HEADER)?.to_str().ok()?.trim();
    let ts = headers.get(TIMESTAMP_HEADER)?.to_str().ok()?.trim();
    Some(format!("hook:{ts}:{}", sig.to_ascii_lowercase()))
}

fn error(status: StatusCode, text: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": text.into() })),
    )
        .into_response()
}

async fn registry(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = app.clock.unix();
    if let Err(e) = authenticate(&headers, &body, &app.config, now) {
        return error(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let image = match image_of(&body) {
        Ok(i) => i,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let Some(key) = replay_key(&headers) {
        match app.store.first_delivery(&key, now).await {
            Ok(true) => {}
            Ok(false) => {
                return error(
                    StatusCode::CONFLICT,
                    "this signed request was already received (same timestamp and signature): a replay, or a retry of a push that already started its upgrade; sign a new request to run it again",
                );
            }
            Err(e) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("corral cannot check for replays: {e}"),
                );
            }
        }
    }
    let cmd = ImageUpgrade::new(image);
    crate::api::updater::start(&app, cmd).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_now() -> i64 {
        jiff::Timestamp::now().as_second()
    }
    use crate::config::Env;

    fn config(token: Option<&str>) -> Config {
        let pairs: Vec<(&str, &str)> = token.map(|t| ("CORRAL_API_TOKEN", t)).into_iter().collect();
        Config::from_env(&Env::from_pairs(pairs)).expect("valid")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn docker_hub_payload() {
        // The example payload of Docker Hub's webhook documentation, trimmed.
        let body = br#"{"callback_url":"https://registry.hub.docker.com/u/svendowideit/testhook/hook/2141b5bi5i5b02bec211i4eeih0242eg11000a/","push_data":{"pushed_at":1417566161,"pusher":"trustedbuilder","tag":"latest"},"repository":{"name":"testhook","namespace":"svendowideit","repo_name":"svendowideit/testhook","status":"Active"}}"#;
        assert_eq!(image_of(body), Ok("svendowideit/testhook:latest".into()));
        let body = br#"{"push_data":{"tag":"1.2"},"repository":{"repo_name":"myorg/app"}}"#;
        assert_eq!(image_of(body), Ok("myorg/app:1.2".into()));
    }

    #[test]
    fn generic_payload() {
        assert_eq!(
            image_of(br#"{"image":"docker:reg.io:5000/a/b:3"}"#),
            Ok("reg.io:5000/a/b:3".into())
        );
    }

    #[test]
    fn bad_payloads() {
        for (body, needle) in [
            (&b""[..], "not JSON"),
            (b"nope", "not JSON"),
            (b"{}", "expected Docker Hub"),
            (b"[1]", "expected Docker Hub"),
            (b"{\"image\": 5}", "`image` must be"),
            (b"{\"image\": \"\"}", "`image` must be"),
            (b"{\"image\": \"UPPER/case\"}", "image:"),
            (
                b"{\"push_data\":{\"tag\":\"1\"},\"repository\":{}}",
                "repo_name",
            ),
            (
                b"{\"push_data\":{\"tag\":7},\"repository\":{\"repo_name\":\"a/b\"}}",
                "push_data.tag",
            ),
            (
                b"{\"push_data\":{\"tag\":\"x y\"},\"repository\":{\"repo_name\":\"a/b\"}}",
                "invalid tag",
            ),
        ] {
            let e = image_of(body).expect_err(&String::from_utf8_lossy(body));
            assert!(
                e.contains(needle),
                "{:?}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn token_or_signature() {
        let c = config(Some("s3cret"));
        let body = br#"{"image":"a:1"}"#;
        assert_eq!(
            authenticate(
                &headers(&[("authorization", "Bearer s3cret")]),
                body,
                &c,
                unix_now()
            ),
            Ok(())
        );
        let now = unix_now().to_string();
        let sig = sign("s3cret", &now, body);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        let signed = |sig: &str, ts: &str| {
            headers(&[("x-corral-signature", sig), ("x-corral-timestamp", ts)])
        };
        assert_eq!(
            authenticate(&signed(&sig, &now), body, &c, unix_now()),
            Ok(())
        );
        let upper = sig.to_uppercase().replace("SHA256", "sha256");
        assert_eq!(
            authenticate(&signed(&upper, &now), body, &c, unix_now()),
            Ok(())
        );
        // Signed for another body, another key, or another time.
        assert_eq!(
            authenticate(&signed(&sig, &now), br#"{"image":"a:2"}"#, &c, unix_now()),
            Err(HookAuthError::BadSignature)
        );
        let other = sign("other", &now, body);
        assert_eq!(
            authenticate(&signed(&other, &now), body, &c, unix_now()),
            Err(HookAuthError::BadSignature)
        );
        let later = (unix_now() + 1).to_string();
        assert_eq!(
            authenticate(&signed(&sig, &later), body, &c, unix_now()),
            Err(HookAuthError::BadSignature)
        );
        // A replay after the window, a missing or malformed timestamp.
        let old = (unix_now() - MAX_AGE_SECONDS - 1).to_string();
        let old_sig = sign("s3cret", &old, body);
        assert_eq!(
            authenticate(&signed(&old_sig, &old), body, &c, unix_now()),
            Err(HookAuthError::Stale)
        );
        for ts in ["", "-5", "1e9", "99999999999999999999"] {
            assert_eq!(
                authenticate(&signed(&sig, ts), body, &c, unix_now()),
                Err(HookAuthError::Stale),
                "{ts:?}"
            );
        }
        assert_eq!(
            authenticate(
                &headers(&[("x-corral-signature", &sig)]),
                body,
                &c,
                unix_now()
            ),
            Err(HookAuthError::Stale)
        );
        // A wrong signature is not rescued by a right token: the sender chose to sign.
        assert_eq!(
            authenticate(
                &headers(&[
                    ("x-corral-signature", "sha256=00"),
                    ("x-corral-timestamp", &now),
                    ("authorization", "Bearer s3cret")
                ]),
                body,
                &c,
                unix_now()
            ),
            Err(HookAuthError::BadSignature)
        );
        assert!(authenticate(&headers(&[]), body, &c, unix_now()).is_err());
        // No token configured: nothing gets in, signed or not.
        let off = config(None);
        assert!(
            authenticate(
                &headers(&[("x-corral-signature", &sig)]),
                body,
                &off,
                unix_now()
            )
            .is_err()
        );
        assert!(
            authenticate(
                &headers(&[("authorization", "Bearer s3cret")]),
                body,
                &off,
                unix_now()
            )
            .is_err()
        );
    }
}
