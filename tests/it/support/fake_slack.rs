//! An in-process fake of Slack's Web API (reference/slack.md §e), answering from the
//! fixtures in tests/fixtures/slack/web_api: `chat.postMessage` returns a fresh `ts`,
//! `chat.update` and `chat.postEphemeral` succeed, `auth.test` names a bot. Every call is
//! recorded with its method, `Authorization` header and JSON body. Failures can be
//! queued: an `{"ok": false, "error": …}` answer (HTTP 200, as Slack does) or a 429
//! with `Retry-After`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

/// One recorded Web API call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub auth: Option<String>,
    pub body: Value,
}

impl Call {
    pub fn text(&self) -> &str {
        self.body["text"].as_str().unwrap_or("")
    }
    pub fn channel(&self) -> &str {
        self.body["channel"].as_str().unwrap_or("")
    }
    pub fn thread_ts(&self) -> Option<&str> {
        self.body["thread_ts"].as_str()
    }
}

/// A failure to inject into the next call of a method.
#[derive(Debug, Clone)]
pub enum Failure {
    Error(&'static str),
    RateLimited { retry_after: u64 },
}

#[derive(Default)]
struct Inner {
    calls: Mutex<Vec<Call>>,
    failures: Mutex<VecDeque<(String, Failure)>>,
    /// What `apps.connections.open` hands out (Socket Mode tests).
    socket_url: Mutex<Option<String>>,
    seq: AtomicU64,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeSlack {
    /// The Web API base to give corral as `SLACK_API_URL`.
    pub api_url: String,
    inner: Arc<Inner>,
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/slack/web_api/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn api(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        // Form-encoded calls: record fields as a JSON object.
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    });
    inner.calls.lock().unwrap().push(Call {
        method: method.clone(),
        auth: auth.clone(),
        body: body.clone(),
    });
    let wanted = if method == "apps.connections.open" {
        "Bearer xapp-"
    } else {
        "Bearer xox"
    };
    if auth.as_deref().is_none_or(|a| !a.starts_with(wanted)) {
        return axum::Json(json!({"ok": false, "error": "not_authed"})).into_response();
    }
    let failure = {
        let mut f = inner.failures.lock().unwrap();
        let pos = f.iter().position(|(m, _)| *m == method);
        pos.and_then(|p| f.remove(p)).map(|(_, f)| f)
    };
    match failure {
        Some(Failure::Error(code)) => {
            return axum::Json(json!({"ok": false, "error": code})).into_response();
        }
        Some(Failure::RateLimited { retry_after }) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after.to_string())],
                axum::Json(json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response();
        }
        None => {}
    }
    let channel = body["channel"].clone();
    match method.as_str() {
        "chat.postMessage" => {
            let n = inner.seq.fetch_add(1, Ordering::SeqCst) + 1;
            let ts = format!("1700000000.{n:06}");
            let mut v = fixture("chat.postMessage.ok.json");
            v["channel"] = channel;
            v["ts"] = json!(ts);
            v["message"]["ts"] = json!(ts);
            v["message"]["text"] = body["text"].clone();
            axum::Json(v).into_response()
        }
        "chat.update" => {
            let mut v = fixture("chat.update.ok.json");
            v["channel"] = channel;
            v["ts"] = body["ts"].clone();
            v["text"] = body["text"].clone();
            axum::Json(v).into_response()
        }
        "apps.connections.open" => {
            let url = inner.socket_url.lock().unwrap().clone();
            match url {
                Some(url) => {
                    let mut v = fixture("apps.connections.open.ok.json");
                    v["url"] = json!(url);
                    axum::Json(v).into_response()
                }
                None => axum::Json(json!({"ok": false, "error": "socket_mode_disabled"}))
                    .into_response(),
            }
        }
        "chat.postEphemeral" => axum::Json(fixture("chat.postEphemeral.ok.json")).into_response(),
        "auth.test" => axum::Json(json!({
            "ok": true, "url": "https://fake.slack.com/", "team": "Fake", "user": "corral",
            "team_id": "T0FAKE", "user_id": "U0BOT", "bot_id": "B0BOT"
        }))
        .into_response(),
        _ => axum::Json(json!({"ok": false, "error": "unknown_method"})).into_response(),
    }
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/api/{method}", any(api))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeSlack {
            api_url: format!("http://{addr}/api"),
            inner,
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Makes `apps.connections.open` answer with this WebSocket URL.
    pub fn set_socket_url(&self, url: &str) {
        *self.inner.socket_url.lock().unwrap() = Some(url.to_string());
    }

    pub fn fail_next(&self, method: &str, failure: Failure) {
        self.inner
            .failures
            .lock()
            .unwrap()
            .push_back((method.to_string(), failure));
    }

    /// Waits until `pred` holds over the calls so far (at most `secs` seconds).
    pub async fn wait_for(&self, secs: u64, pred: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let calls = self.calls();
            if pred(&calls) || tokio::time::Instant::now() > deadline {
                return calls;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
