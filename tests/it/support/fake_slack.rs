//! An in-process fake of Slack's Web API (reference/slack.md §e), answering from the
//! fixtures in tests/fixtures/slack/web_api: `chat.postMessage` returns a fresh `ts` and
//! keeps the message (with its metadata), `chat.update` edits a kept message,
//! `chat.postEphemeral` succeeds, `conversations.history` / `conversations.replies` return
//! kept messages (newest first, `oldest` and `limit` honoured, metadata only with
//! `include_all_metadata`), `auth.test` names a bot. Also an incoming webhook at
//! `/webhook` (answers `ok`, as Slack does).
//!
//! Every call is recorded with its method, `Authorization` header, JSON body and the time
//! it arrived on the fake's clock (the test's `ManualClock`, when given one), so a test can
//! assert that no call landed inside a `Retry-After` window.
//!
//! Scripted faults, as Slack shows them: one-shot ([`FakeSlack::fail_next`]), for a period
//! of the fake's clock ([`FakeSlack::fail_during`]), per channel ([`FakeSlack::refuse_channel`]),
//! and Slack's own per-channel posting limit ([`FakeSlack::enforce_post_rate`], 429 with
//! `Retry-After` when posts to a channel come too fast).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use corral::clock::SharedClock;
use serde_json::{Value, json};

/// One recorded Web API call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub auth: Option<String>,
    pub body: Value,
    /// When it arrived (Unix ms on the fake's clock).
    pub at_ms: i64,
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

/// How a call fails.
#[derive(Debug, Clone)]
pub enum Failure {
    /// HTTP 200 `{"ok": false, "error": code}`.
    Error(&'static str),
    /// 429 with `Retry-After`.
    RateLimited { retry_after: u64 },
    /// That HTTP status, no JSON.
    Status(u16),
    /// The call is carried out (a post is kept) and the connection then breaks before
    /// the answer is complete: the caller cannot know it worked.
    AcceptThenDrop,
}

/// A message the fake keeps.
#[derive(Debug, Clone)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub text: String,
    pub metadata: Value,
}

struct Window {
    method: Option<String>,
    from_ms: i64,
    until_ms: i64,
    failure: Failure,
}

struct Inner {
    calls: Mutex<Vec<Call>>,
    failures: Mutex<VecDeque<(String, Failure)>>,
    windows: Mutex<Vec<Window>>,
    refused: Mutex<Vec<(String, &'static str)>>,
    posted: Mutex<Vec<Posted>>,
    /// Slack's per-channel posting limit: minimum ms between posts, and the last post.
    post_rate: Mutex<Option<(i64, std::collections::HashMap<String, i64>)>>,
    /// What `apps.connections.open` hands out (Socket Mode tests).
    socket_url: Mutex<Option<String>>,
    /// User groups' members (`usergroups.users.list`).
    groups: Mutex<std::collections::HashMap<String, Vec<String>>>,
    /// `trigger_id`s already exchanged for a view, and those a test made expire.
    triggers_used: Mutex<std::collections::HashSet<String>>,
    triggers_expired: Mutex<std::collections::HashSet<String>>,
    seq: AtomicU64,
    clock: SharedClock,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeSlack {
    /// The Web API base to give corral as `SLACK_API_URL`.
    pub api_url: String,
    /// An incoming webhook URL on the fake.
    pub webhook_url: String,
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

/// A response whose headers say 200 and whose body then breaks off.
fn dropped() -> Response {
    let stream = futures::stream::iter(vec![
        Ok::<Bytes, std::io::Error>(Bytes::from_static(b"{\"ok\": tr")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fake Slack dropped the connection",
        )),
    ]);
    Response::builder()
        .status(200)
        .header("content-type", "application/json; charset=utf-8")
        .header("content-length", "64")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn fail(failure: &Failure) -> Option<Response> {
    Some(match failure {
        Failure::Error(code) => axum::Json(json!({"ok": false, "error": code})).into_response(),
        Failure::RateLimited { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after.to_string())],
            axum::Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response(),
        Failure::Status(code) => (
            StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "upstream trouble",
        )
            .into_response(),
        Failure::AcceptThenDrop => return None,
    })
}

fn decode(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| {
        // Form-encoded calls: record fields as a JSON object.
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
        Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    })
}

async fn api(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = decode(&body);
    // GET methods (conversations.*) carry their arguments in the query.
    if let Value::Object(map) = &mut body {
        for (k, v) in query {
            map.entry(k).or_insert(Value::String(v));
        }
    }
    let now = inner.clock.unix_ms();
    inner.calls.lock().unwrap().push(Call {
        method: method.clone(),
        auth: auth.clone(),
        body: body.clone(),
        at_ms: now,
    });
    let wanted = if method == "apps.connections.open" {
        "Bearer xapp-"
    } else {
        "Bearer xox"
    };
    if auth.as_deref().is_none_or(|a| !a.starts_with(wanted)) {
        return axum::Json(json!({"ok": false, "error": "not_authed"})).into_response();
    }
    let mut failure = {
        let mut f = inner.failures.lock().unwrap();
        let pos = f.iter().position(|(m, _)| *m == method);
        pos.and_then(|p| f.remove(p)).map(|(_, f)| f)
    };
    if failure.is_none() {
        failure = inner
            .windows
            .lock()
            .unwrap()
            .iter()
            .find(|w| {
                w.method.as_deref().is_none_or(|m| m == method)
                    && w.from_ms <= now
                    && now < w.until_ms
            })
            .map(|w| w.failure.clone());
    }
    let channel = body["channel"].as_str().unwrap_or("").to_string();
    if failure.is_none()
        && let Some((_, code)) = inner
            .refused
            .lock()
            .unwrap()
            .iter()
            .find(|(c, _)| *c == channel)
    {
        failure = Some(Failure::Error(code));
    }
    if failure.is_none() && method == "chat.postMessage" {
        let mut rate = inner.post_rate.lock().unwrap();
        if let Some((every, last)) = rate.as_mut() {
            if let Some(t) = last.get(&channel)
                && now - t < *every
            {
                failure = Some(Failure::RateLimited {
                    retry_after: ((*every - (now - t)) as u64).div_ceil(1000),
                });
            } else {
                last.insert(channel.clone(), now);
            }
        }
    }
    let drop_after = match &failure {
        Some(f) => match fail(f) {
            Some(resp) => return resp,
            None => true,
        },
        None => false,
    };
    let resp = match method.as_str() {
        "chat.postMessage" => {
            let n = inner.seq.fetch_add(1, Ordering::SeqCst) + 1;
            let ts = format!("{}.{n:06}", inner.clock.unix());
            inner.posted.lock().unwrap().push(Posted {
                channel: channel.clone(),
                ts: ts.clone(),
                thread_ts: body["thread_ts"].as_str().map(str::to_string),
                text: body["text"].as_str().unwrap_or("").to_string(),
                metadata: body["metadata"].clone(),
            });
            let mut v = fixture("chat.postMessage.ok.json");
            v["channel"] = json!(channel);
            v["ts"] = json!(ts);
            v["message"]["ts"] = json!(ts);
            v["message"]["text"] = body["text"].clone();
            axum::Json(v).into_response()
        }
        "chat.update" => {
            let ts = body["ts"].as_str().unwrap_or("").to_string();
            let mut posted = inner.posted.lock().unwrap();
            if let Some(p) = posted
                .iter_mut()
                .find(|p| p.ts == ts && p.channel == channel)
            {
                p.text = body["text"].as_str().unwrap_or("").to_string();
            }
            let mut v = fixture("chat.update.ok.json");
            v["channel"] = json!(channel);
            v["ts"] = json!(ts);
            v["text"] = body["text"].clone();
            axum::Json(v).into_response()
        }
        "conversations.history" | "conversations.replies" => {
            history(&inner, &method, &body).into_response()
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
        // Slack's answer: `{"ok": true, "users": [ids]}`; an unknown group is `no_such_subteam`.
        "usergroups.users.list" => {
            let group = body["usergroup"].as_str().unwrap_or("").to_string();
            match inner.groups.lock().unwrap().get(&group) {
                Some(users) => axum::Json(json!({"ok": true, "users": users})).into_response(),
                None => {
                    axum::Json(json!({"ok": false, "error": "no_such_subteam"})).into_response()
                }
            }
        }
        "views.open" => views_open(&inner, &body).into_response(),
        "auth.test" => axum::Json(json!({
            "ok": true, "url": "https://fake.slack.com/", "team": "Fake", "user": "corral",
            "team_id": "T0FAKE", "user_id": "U0BOT", "bot_id": "B0BOT"
        }))
        .into_response(),
        _ => axum::Json(json!({"ok": false, "error": "unknown_method"})).into_response(),
    };
    if drop_after { dropped() } else { resp }
}

/// `views.open` as Slack documents it (reference/slack.md §d, the Web API spec's
/// example): a `trigger_id` opens one view, once, within 3 s: a second use is
/// `exchanged_trigger_id`, a late one `expired_trigger_id`, none `invalid_arguments`. The
/// `view` (JSON, or a JSON string in a form) must be a modal within Slack's limits (title
/// ≤ 24 characters, at most 100 blocks, `private_metadata` ≤ 3000, `callback_id` ≤ 255);
/// the answer is the opened view with its id, hash and empty state.
fn views_open(inner: &Inner, body: &Value) -> axum::Json<Value> {
    let err = |code: &str| axum::Json(json!({"ok": false, "error": code}));
    let Some(trigger) = body["trigger_id"].as_str().filter(|t| !t.is_empty()) else {
        return axum::Json(json!({"ok": false, "error": "invalid_arguments",
            "response_metadata": {"messages": ["invalid `trigger_id`"]}}));
    };
    let view = match &body["view"] {
        Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        v => v.clone(),
    };
    let title = view["title"]["text"].as_str().unwrap_or("");
    let ok_view = view["type"] == "modal"
        && !title.is_empty()
        && title.chars().count() <= 24
        && view["blocks"].as_array().is_some_and(|b| b.len() <= 100)
        && view["private_metadata"].as_str().unwrap_or("").len() <= 3000
        && view["callback_id"].as_str().unwrap_or("").len() <= 255;
    if !ok_view {
        return err("invalid_arguments");
    }
    if inner.triggers_expired.lock().unwrap().contains(trigger) {
        return err("expired_trigger_id");
    }
    if !inner
        .triggers_used
        .lock()
        .unwrap()
        .insert(trigger.to_string())
    {
        return err("exchanged_trigger_id");
    }
    let n = inner.calls.lock().unwrap().len();
    let mut opened = view;
    let id = format!("V0FAKE{n:05}");
    for (k, v) in [
        ("id", json!(id)),
        ("team_id", json!("T0FAKE")),
        ("state", json!({"values": {}})),
        ("hash", json!(format!("{n}.fakehash"))),
        ("root_view_id", json!(id)),
        ("previous_view_id", Value::Null),
        ("app_id", json!("A0FAKE")),
        ("bot_id", json!("B0BOT")),
        ("clear_on_close", json!(false)),
        ("notify_on_close", json!(false)),
        ("external_id", json!("")),
    ] {
        opened[k] = v;
    }
    axum::Json(json!({"ok": true, "view": opened}))
}

fn ts_value(ts: &str) -> f64 {
    ts.parse().unwrap_or(0.0)
}

/// `conversations.history` (top-level messages) and `conversations.replies` (a thread:
/// its root first, then replies), newest first for history, `oldest`/`limit` honoured,
/// a numeric `cursor` for the next page.
fn history(inner: &Inner, method: &str, args: &Value) -> axum::Json<Value> {
    let arg = |k: &str| args[k].as_str().map(str::to_string);
    let channel = arg("channel").unwrap_or_default();
    let oldest = arg("oldest").map(|t| ts_value(&t)).unwrap_or(0.0);
    let limit: usize = arg("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
    let skip: usize = arg("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let metadata = arg("include_all_metadata").as_deref() == Some("true");
    let posted = inner.posted.lock().unwrap();
    let mut msgs: Vec<&Posted> = posted
        .iter()
        .filter(|p| p.channel == channel && ts_value(&p.ts) >= oldest)
        .filter(|p| match method {
            "conversations.replies" => {
                let root = arg("ts").unwrap_or_default();
                p.ts == root || p.thread_ts.as_deref() == Some(root.as_str())
            }
            _ => p.thread_ts.is_none(),
        })
        .collect();
    if method == "conversations.history" {
        msgs.reverse();
    }
    let page: Vec<Value> = msgs
        .iter()
        .skip(skip)
        .take(limit)
        .map(|p| {
            let mut m = json!({"type": "message", "ts": p.ts, "text": p.text, "bot_id": "B0BOT"});
            if let Some(t) = &p.thread_ts {
                m["thread_ts"] = json!(t);
            }
            if metadata && !p.metadata.is_null() {
                m["metadata"] = p.metadata.clone();
            }
            m
        })
        .collect();
    let more = msgs.len() > skip + limit;
    axum::Json(json!({
        "ok": true,
        "messages": page,
        "has_more": more,
        "response_metadata": {"next_cursor": if more { (skip + limit).to_string() } else { String::new() }},
    }))
}

async fn webhook(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let now = inner.clock.unix_ms();
    let body = decode(&body);
    inner.calls.lock().unwrap().push(Call {
        method: "webhook".into(),
        auth: None,
        body: body.clone(),
        at_ms: now,
    });
    let failure = inner
        .windows
        .lock()
        .unwrap()
        .iter()
        .find(|w| {
            w.method.as_deref().is_none_or(|m| m == "webhook")
                && w.from_ms <= now
                && now < w.until_ms
        })
        .map(|w| w.failure.clone());
    if let Some(Failure::Error(code)) = &failure {
        return (StatusCode::NOT_FOUND, code.to_string()).into_response();
    }
    if let Some(f) = &failure
        && let Some(resp) = fail(f)
    {
        return resp;
    }
    if body["text"].as_str().is_none_or(str::is_empty) {
        return (StatusCode::BAD_REQUEST, "no_text").into_response();
    }
    (StatusCode::OK, "ok").into_response()
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        FakeSlack::start_with_clock(corral::clock::system()).await
    }

    /// A fake whose call times and fault windows follow `clock`.
    pub async fn start_with_clock(clock: SharedClock) -> FakeSlack {
        let inner = Arc::new(Inner {
            calls: Mutex::default(),
            failures: Mutex::default(),
            windows: Mutex::default(),
            refused: Mutex::default(),
            posted: Mutex::default(),
            post_rate: Mutex::default(),
            socket_url: Mutex::default(),
            groups: Mutex::default(),
            triggers_used: Mutex::default(),
            triggers_expired: Mutex::default(),
            seq: AtomicU64::new(0),
            clock,
        });
        let app = Router::new()
            .route("/api/{method}", any(api))
            .route("/webhook", post(webhook))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeSlack {
            api_url: format!("http://{addr}/api"),
            webhook_url: format!("http://{addr}/webhook"),
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

    /// Messages the fake keeps, in the order they were posted.
    pub fn posted(&self) -> Vec<Posted> {
        self.inner.posted.lock().unwrap().clone()
    }

    /// Makes `apps.connections.open` answer with this WebSocket URL.
    /// A user group and its members, as `usergroups.users.list` answers.
    pub fn set_group(&self, group: &str, members: &[&str]) {
        self.inner.groups.lock().unwrap().insert(
            group.to_string(),
            members.iter().map(|m| m.to_string()).collect(),
        );
    }

    pub fn set_socket_url(&self, url: &str) {
        *self.inner.socket_url.lock().unwrap() = Some(url.to_string());
    }

    /// From now on `views.open` answers `expired_trigger_id` for this trigger.
    pub fn expire_trigger(&self, trigger: &str) {
        self.inner
            .triggers_expired
            .lock()
            .unwrap()
            .insert(trigger.to_string());
    }

    /// The next call of `method` fails so.
    pub fn fail_next(&self, method: &str, failure: Failure) {
        self.inner
            .failures
            .lock()
            .unwrap()
            .push_back((method.to_string(), failure));
    }

    /// Calls of `method` (every method: `None`) arriving in `[from_ms, until_ms)` of the
    /// fake's clock fail so.
    pub fn fail_during(&self, method: Option<&str>, from_ms: i64, until_ms: i64, failure: Failure) {
        self.inner.windows.lock().unwrap().push(Window {
            method: method.map(str::to_string),
            from_ms,
            until_ms,
            failure,
        });
    }

    /// Ends every scripted fault (Slack recovers).
    pub fn clear_faults(&self) {
        self.inner.failures.lock().unwrap().clear();
        self.inner.windows.lock().unwrap().clear();
        self.inner.refused.lock().unwrap().clear();
    }

    /// Every call about `channel` is refused with `code` (`channel_not_found`, …).
    pub fn refuse_channel(&self, channel: &str, code: &'static str) {
        self.inner
            .refused
            .lock()
            .unwrap()
            .push((channel.to_string(), code));
    }

    /// Slack's posting limit: a post to a channel less than `every` after the last one
    /// gets 429 with `Retry-After`.
    pub fn enforce_post_rate(&self, every: Duration) {
        *self.inner.post_rate.lock().unwrap() =
            Some((every.as_millis() as i64, Default::default()));
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
