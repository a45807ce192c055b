//! The playground's door: `/playground` (one embedded page), its history, its live feed
//! (Server-Sent Events) and its commands and clicks.
//!
//! **Who gets in.** `CORRAL_PLAYGROUND=loopback` (the default) answers only a loopback
//! peer whose `Host` is a loopback name and whose request carries no forwarding header
//! (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`: a proxy in front would make every client
//! look local), and only with the random token `corral serve` printed
//! (`/playground?token=…`), which the first visit swaps for an `HttpOnly`
//! `SameSite=Strict` cookie before redirecting to a URL without it. `on` answers any
//! client and asks for the API token to log in. `off` mounts nothing. Every
//! state-changing request must carry an `Origin` equal to the page's own; tokens are
//! compared in constant time.
//!
//! **Same pipeline.** A slash command goes to `App::handle` with `Source::Playground` (the
//! identity `playground:NAME`), a mention is posted as the person's message and answered
//! in its thread through `App::handle_replying`, a button click goes to `App::click`, the
//! handler Slack's interactions use. What corral says comes back through the outbox and
//! [`PlaygroundChat`] to the feed. With Slack configured the page mirrors its channel and
//! takes no input unless `CORRAL_PLAYGROUND_INPUT` allows it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Event, EventKind, Hub, Mode, PlaygroundChat, Resume, render};
use crate::app::interact::Click;
use crate::app::{App, ReplyTo, Request, Visibility};
use crate::chat::{Chat, LogChat, Message, Metadata};
use crate::command;
use crate::config::Config;
use crate::door::{Source, identity};
use crate::store::{NewMessage, Thread};

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");
/// The session cookie's name.
const COOKIE: &str = "corral_playground";
/// Longest command or message typed in the page (Slack's message limit).
const TEXT_MAX: usize = 4000;
/// Messages of the channel a (re)loaded page shows.
const HISTORY: usize = 300;

/// The app's destination and, unless `off`, the playground's hub.
pub type Prepared = (Arc<dyn Chat>, Option<Arc<Hub>>);

/// Turns the configuration into the app's chat destination and the playground's hub:
/// with the playground on, the destination is a [`PlaygroundChat`] (in front of Slack's
/// transport when there is one); with Slack off its channel becomes the announcement
/// channel, so changes and jobs from every door show in the page. `None` hub: `off`.
pub fn prepare(
    config: &mut Config,
    slack: Option<Arc<dyn Chat>>,
    clock: crate::clock::SharedClock,
) -> std::io::Result<Prepared> {
    if config.playground.mode == Mode::Off {
        let chat = slack.unwrap_or_else(|| Arc::new(LogChat::default()));
        return Ok((chat, None));
    }
    let channel = config.playground_channel();
    let slack_on = config.slack_configured();
    if config.channels.is_empty() && !slack_on {
        config.channels = channel.iter().cloned().collect();
    }
    let input = !slack_on || config.playground.input;
    let hub = Hub::new(config.playground.clone(), channel, input, clock)?;
    let chat = Arc::new(PlaygroundChat {
        hub: hub.clone(),
        inner: slack,
    });
    Ok((chat, Some(hub)))
}

/// The URL `corral serve` prints for the page bound at `addr` (loopback mode: with the
/// token).
pub fn url(hub: &Hub, addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() || addr.ip().is_loopback() {
        match addr {
            SocketAddr::V4(_) => format!("127.0.0.1:{}", addr.port()),
            SocketAddr::V6(_) => format!("[::1]:{}", addr.port()),
        }
    } else {
        addr.to_string()
    };
    match hub.config.mode {
        Mode::Loopback => format!("http://{host}/playground?token={}", hub.token()),
        _ => format!("http://{host}/playground"),
    }
}

#[derive(Clone)]
struct St {
    app: Arc<App>,
    hub: Arc<Hub>,
}

/// The playground's routes (mount them only when the hub exists: `off` has none).
pub fn router(app: Arc<App>, hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/playground", get(page))
        .route("/playground/page.js", get(script))
        .route("/playground/page.css", get(style))
        .route("/playground/login", post(login))
        .route("/playground/history", get(history))
        .route("/playground/events", get(events))
        .route("/playground/command", post(command_route))
        .route("/playground/click", post(click_route))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .with_state(St { app, hub })
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.into(),
    )
        .into_response()
}

fn header_str(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether `host` (a `Host` header) names this machine's loopback: `localhost`,
/// `*.localhost`, `127.x.x.x` or `[::1]`, with an optional port.
pub fn loopback_host(host: &str) -> bool {
    let name = if let Some(v6) = host.strip_prefix('[') {
        match v6.split_once(']') {
            Some((ip, rest)) if rest.is_empty() || rest.starts_with(':') => {
                return ip
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|a| a.is_loopback());
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// The forwarding headers a proxy adds.
fn forwarded(headers: &HeaderMap) -> bool {
    headers.keys().any(|k| {
        let k = k.as_str();
        k == "forwarded" || k.starts_with("x-forwarded-") || k == "x-real-ip"
    })
}

/// The network part of the gate (loopback mode): peer, `Host`, no proxy.
fn network(hub: &Hub, headers: &HeaderMap, peer: Option<SocketAddr>) -> Result<(), Response> {
    if hub.config.mode != Mode::Loopback {
        return Ok(());
    }
    let refuse = |why: &str| {
        tracing::warn!(peer = ?peer, why, "playground request refused");
        Err(text(
            StatusCode::FORBIDDEN,
            format!(
                "The playground answers this machine only ({why}). Set CORRAL_PLAYGROUND=on to serve other clients (they log in with the API token).\n"
            ),
        ))
    };
    if !peer.is_some_and(|p| p.ip().is_loopback() || p.ip().to_canonical().is_loopback()) {
        return refuse("not a loopback client");
    }
    if !header_str(headers, header::HOST).is_some_and(loopback_host) {
        return refuse("Host is not a loopback name");
    }
    if forwarded(headers) {
        return refuse("the request came through a proxy");
    }
    Ok(())
}

/// Equal strings, compared in constant time (digests first: lengths do not show).
fn same_secret(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// The session cookie's value, if the request has one.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn has_session(hub: &Hub, headers: &HeaderMap) -> bool {
    cookie(headers).is_some_and(|c| same_secret(c, hub.token()))
}

/// Whether a state-changing request comes from the page itself: its `Origin` is this
/// `Host`'s, and a browser's `Sec-Fetch-Site` (when sent) says same-origin.
fn same_origin(headers: &HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (
        header_str(headers, header::ORIGIN),
        header_str(headers, header::HOST),
    ) else {
        return false;
    };
    let ok = origin == format!("http://{host}") || origin == format!("https://{host}");
    let site = header_str(headers, "sec-fetch-site");
    ok && site.is_none_or(|s| s == "same-origin")
}

/// The whole gate for a route: network, then the session, then (state-changing) the
/// origin.
fn gate(
    hub: &Hub,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    changes: bool,
) -> Result<(), Response> {
    network(hub, headers, peer)?;
    if !has_session(hub, headers) {
        return Err(text(
            StatusCode::UNAUTHORIZED,
            "not logged in to the playground: open the URL `corral serve` printed\n",
        ));
    }
    if changes && !same_origin(headers) {
        tracing::warn!(peer = ?peer, "playground request without its own Origin refused");
        return Err(text(
            StatusCode::FORBIDDEN,
            "refused: this request did not come from the playground page (Origin)\n",
        ));
    }
    Ok(())
}

/// The peer's address, as `api::serve` records it (`None` when served otherwise).
struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Peer, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| *a),
        ))
    }
}

/// Headers every page of the playground carries: nothing from elsewhere runs, nothing
/// frames it, the token never leaks in a `Referer`.
fn page_headers(content_type: &'static str) -> [(header::HeaderName, &'static str); 6] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ]
}

#[derive(Deserialize)]
struct PageQuery {
    token: Option<String>,
}

/// `GET /playground`: the page; `?token=` logs in and redirects to a URL without it.
async fn page(
    State(st): State<St>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let hub = &st.hub;
    if let Err(r) = network(hub, &headers, peer) {
        return r;
    }
    if let Some(t) = &q.token {
        if hub.config.mode == Mode::Loopback && same_secret(t, hub.token()) {
            return with_cookie(logged_in(), hub.token());
        }
        return text(
            StatusCode::UNAUTHORIZED,
            "wrong playground token: open the URL `corral serve` printed\n",
        );
    }
    if !has_session(hub, &headers) {
        return match hub.config.mode {
            Mode::On => login_form(st.app.config.api_token.is_some()),
            _ => text(
                StatusCode::UNAUTHORIZED,
                "Open the playground with the URL `corral serve` printed (it carries a token).\n",
            ),
        };
    }
    let html = PAGE
        .replace(
            "{{channel}}",
            &render::escape(hub.channel.as_deref().unwrap_or("")),
        )
        .replace("{{input}}", if hub.input { "on" } else { "off" });
    (page_headers("text/html; charset=utf-8"), html).into_response()
}

/// A redirect to the page without the token in its URL.
fn logged_in() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/playground")]).into_response()
}

/// `resp` setting the session cookie.
fn with_cookie(mut resp: Response, token: &str) -> Response {
    match HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/playground; HttpOnly; SameSite=Strict"
    )) {
        Ok(v) => {
            resp.headers_mut().insert(header::SET_COOKIE, v);
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp.headers_mut().insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            resp
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot set the session\n",
        ),
    }
}

fn login_form(api_token: bool) -> Response {
    if !api_token {
        return text(
            StatusCode::FORBIDDEN,
            "The playground is on for every client and asks for the API token to log in: set CORRAL_API_TOKEN.\n",
        );
    }
    let html = "<!doctype html><meta charset=utf-8><title>corral playground</title>\
        <form method=post action=/playground/login><p>API token: <input name=token type=password autofocus> \
        <button>Log in</button></form>";
    (
        StatusCode::UNAUTHORIZED,
        page_headers("text/html; charset=utf-8"),
        html,
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /playground/login` (`on`): the API token, from the page's own origin.
async fn login(
    State(st): State<St>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let hub = &st.hub;
    if let Err(r) = network(hub, &headers, peer) {
        return r;
    }
    if !same_origin(&headers) {
        return text(
            StatusCode::FORBIDDEN,
            "refused: not from the playground page (Origin)\n",
        );
    }
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return text(StatusCode::BAD_REQUEST, "a login needs a token field\n");
    };
    let ok = match (hub.config.mode, &st.app.config.api_token) {
        (Mode::On, Some(t)) => same_secret(&form.token, t.expose()),
        (Mode::Loopback, _) => same_secret(&form.token, hub.token()),
        _ => false,
    };
    if !ok {
        tracing::warn!("playground login refused");
        return text(StatusCode::UNAUTHORIZED, "wrong token\n");
    }
    with_cookie(logged_in(), hub.token())
}

async fn script(State(st): State<St>, Peer(peer): Peer, headers: HeaderMap) -> Response {
    if let Err(r) = network(&st.hub, &headers, peer) {
        return r;
    }
    (page_headers("text/javascript; charset=utf-8"), SCRIPT).into_response()
}

async fn style(State(st): State<St>, Peer(peer): Peer, headers: HeaderMap) -> Response {
    if let Err(r) = network(&st.hub, &headers, peer) {
        return r;
    }
    (page_headers("text/css; charset=utf-8"), STYLE).into_response()
}

/// A name picked in the page: 1–32 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=32).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

fn bad_name() -> Response {
    text(
        StatusCode::BAD_REQUEST,
        "a name is 1 to 32 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit\n",
    )
}

#[derive(Deserialize)]
struct UserQuery {
    user: String,
    last: Option<String>,
}

/// `GET /playground/history?user=NAME`: the channel's messages from the store, rendered,
/// and the feed position they are current to.
async fn history(
    State(st): State<St>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Query(q): Query<UserQuery>,
) -> Response {
    let hub = &st.hub;
    if let Err(r) = gate(hub, &headers, peer, false) {
        return r;
    }
    if !valid_name(&q.user) {
        return bad_name();
    }
    // Read the position first: anything published after it is replayed by the feed.
    let last = hub.event_id(hub.last_event());
    let rows = match &hub.channel {
        Some(ch) => match st.app.store.outbox_channel(ch, HISTORY).await {
            Ok(rows) => rows,
            Err(e) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the store could not be read: {e}\n"),
                );
            }
        },
        None => Vec::new(),
    };
    let messages: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let thread_ts = match &r.thread {
                Some(Thread::Ts(t)) => Some(t.clone()),
                Some(Thread::Key(_)) => r.root_ts.clone(),
                None => None,
            };
            json!({
                "kind": EventKind::Post,
                "channel": r.channel,
                "ts": r.ts,
                "thread_ts": thread_ts,
                "author": super::author(&r.message),
                "html": render::message(&r.message),
            })
        })
        .collect();
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({
            "channel": hub.channel,
            "input": hub.input,
            "identity": identity(Source::Playground, &q.user),
            "last_event_id": last,
            "messages": messages,
        })),
    )
        .into_response()
}

/// `GET /playground/events?user=NAME[&last=ID]`: the live feed. Resumes after
/// `Last-Event-ID` (or `last`), or tells the page to reload; heartbeat comments; ends
/// after the stream lifetime (the page reconnects) or at shutdown; capped in number.
async fn events(
    State(st): State<St>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Query(q): Query<UserQuery>,
) -> Response {
    let hub = st.hub.clone();
    if let Err(r) = gate(&hub, &headers, peer, false) {
        return r;
    }
    if !valid_name(&q.user) {
        return bad_name();
    }
    let Some(slot) = hub.open_stream() else {
        let mut r = text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many playground pages are open; close one\n",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    };
    let last = header_str(&headers, "last-event-id")
        .map(str::to_string)
        .or(q.last);
    let (rx, resume) = hub.subscribe(last.as_deref());
    let feed = Feed {
        hub: hub.clone(),
        user: identity(Source::Playground, &q.user),
        rx,
        backlog: match resume {
            Resume::Replay(v) => v.into_iter().map(Some).collect(),
            Resume::Reload => std::iter::once(None).collect(),
        },
        deadline: tokio::time::Instant::now() + hub.config.stream_lifetime,
        _slot: slot,
    };
    let stream = futures::stream::unfold(feed, |mut f| async move {
        let e = f.next().await?;
        Some((Ok::<_, std::convert::Infallible>(e), f))
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(hub.config.heartbeat).text("hb"))
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// One open feed's state.
struct Feed {
    hub: Arc<Hub>,
    user: String,
    rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
    /// Events to send first; `None`: a reload.
    backlog: std::collections::VecDeque<Option<Arc<Event>>>,
    deadline: tokio::time::Instant,
    _slot: super::StreamSlot,
}

impl Feed {
    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            let item = match self.backlog.pop_front() {
                Some(i) => i,
                None => {
                    let hub = self.hub.clone();
                    tokio::select! {
                        r = self.rx.recv() => match r {
                            Ok(e) => Some(e),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                        },
                        _ = tokio::time::sleep_until(self.deadline) => return None,
                        _ = hub.closed() => return None,
                    }
                }
            };
            let Some(e) = item else {
                return Some(SseEvent::default().event("reload").data("{}"));
            };
            if e.kind == EventKind::Ephemeral && e.user.as_deref() != Some(self.user.as_str()) {
                continue;
            }
            let data = serde_json::to_string(&*e).unwrap_or_else(|_| "{}".into());
            return Some(SseEvent::default().id(self.hub.event_id(e.id)).data(data));
        }
    }
}

#[derive(Deserialize)]
struct CommandIn {
    user: String,
    text: String,
}

fn read_only() -> Response {
    text(
        StatusCode::FORBIDDEN,
        "the playground mirrors Slack read-only: set CORRAL_PLAYGROUND_INPUT=on to act from it\n",
    )
}

/// Checks shared by commands and clicks: the gate, input allowed, a channel, a name.
fn acting(
    st: &St,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    user: &str,
) -> Result<String, Response> {
    gate(&st.hub, headers, peer, true)?;
    if !st.hub.input {
        return Err(read_only());
    }
    let Some(channel) = st.hub.channel.clone() else {
        return Err(text(
            StatusCode::CONFLICT,
            "no channel to act in: set CORRAL_CHANNEL\n",
        ));
    };
    if !valid_name(user) {
        return Err(bad_name());
    }
    Ok(channel)
}

/// `POST /playground/command` `{user, text}`: a slash command (`/release start`) is
/// answered here (ephemeral replies in the response, what the channel sees through the
/// feed); anything else is a mention, posted as the person's message and answered in
/// its thread.
async fn command_route(
    State(st): State<St>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(input) = serde_json::from_slice::<CommandIn>(&body) else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected {\"user\": …, \"text\": …}\n",
        );
    };
    let channel = match acting(&st, &headers, peer, &input.user) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let typed = input.text.trim();
    if typed.is_empty() || typed.len() > TEXT_MAX {
        return text(
            StatusCode::BAD_REQUEST,
            format!("a command is 1 to {TEXT_MAX} bytes\n"),
        );
    }
    let user = identity(Source::Playground, &input.user);
    if let Some(slash) = typed.strip_prefix('/') {
        let (name, args) = slash.split_once(char::is_whitespace).unwrap_or((slash, ""));
        let reply = match command::parse_slash(&format!("/{name}"), args.trim()) {
            Ok(command) => {
                st.app
                    .handle(Request {
                        command,
                        user,
                        source: Source::Playground,
                        channel: Some(channel),
                    })
                    .await
            }
            Err(e) => crate::app::Reply::invalid(e.to_string()),
        };
        let visibility = match reply.visibility {
            Visibility::Ephemeral => "ephemeral",
            Visibility::InChannel => "in_channel",
        };
        return axum::Json(json!({
            "visibility": visibility,
            "html": render::mrkdwn(&reply.text),
        }))
        .into_response();
    }
    mention(&st, channel, user, typed).await;
    axum::Json(json!({ "visibility": "feed" })).into_response()
}

/// A mention: the person's message (escaped: nobody is pinged, nothing is linked), then
/// the pipeline answering in its thread.
async fn mention(st: &St, channel: String, user: String, typed: &str) {
    static N: AtomicU64 = AtomicU64::new(0);
    let app = &st.app;
    let now = app.clock.unix_ms();
    let key = format!(
        "playground:msg:{now}:{}:{}",
        st.hub.event_id(0),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut msg = Message::text(crate::text::sanitize_block(typed));
    msg.metadata = Some(Metadata {
        event_type: "corral_playground_message".into(),
        payload: [(super::AUTHOR_KEY.to_string(), user.clone())].into(),
    });
    app.say(vec![
        NewMessage::post(now, channel.clone(), msg).keyed(key.clone()),
    ])
    .await;
    let to = ReplyTo {
        channel: channel.clone(),
        thread: Thread::Key(key),
        user: user.clone(),
    };
    // `@corral release start`: the page's way of writing Slack's `<@UBOT>`.
    let addressed = match typed.strip_prefix('@') {
        Some(rest) => rest.split_once(char::is_whitespace).map_or("", |(_, r)| r),
        None => typed,
    };
    match command::parse_text(addressed) {
        Ok(command) => {
            app.handle_replying(
                Request {
                    command,
                    user,
                    source: Source::Playground,
                    channel: Some(channel),
                },
                to,
            )
            .await;
        }
        Err(e) => {
            app.say(vec![NewMessage::ephemeral(
                app.clock.unix_ms(),
                to.channel,
                to.user,
                Message::text(e.to_string()),
            )])
            .await;
        }
    }
}

#[derive(Deserialize)]
struct ClickIn {
    user: String,
    action_id: String,
    #[serde(default)]
    block_id: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    ts: Option<String>,
}

/// `POST /playground/click`: a button, through the same handler as Slack's
/// interactions; the answer reaches the clicker through the feed (ephemeral).
async fn click_route(
    State(st): State<St>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(input) = serde_json::from_slice::<ClickIn>(&body) else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected {\"user\": …, \"action_id\": …, \"value\": …}\n",
        );
    };
    let channel = match acting(&st, &headers, peer, &input.user) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let ack = st
        .app
        .click(Click {
            action_id: input.action_id,
            block_id: input.block_id,
            value: input.value,
            user: identity(Source::Playground, &input.user),
            source: Source::Playground,
            channel: Some(channel),
            message_ts: input.ts,
            response_url: None,
            trigger_id: None,
        })
        .await;
    axum::Json(json!({ "text": crate::text::plain(&ack.text) })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8080",
            "LOCALHOST:1",
            "app.localhost:3",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:9",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "example.com",
            "localhost.example.com",
            "10.0.0.1:80",
            "127.0.0.1.nip.io",
            "[::2]:80",
            "[::1]x",
            "localhost:80x",
            "",
            "0.0.0.0:8080",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }

    #[test]
    fn names() {
        assert!(valid_name("alice"));
        assert!(valid_name("a.b-c_9"));
        assert!(!valid_name(""));
        assert!(!valid_name("Alice"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("<script>"));
        assert!(!valid_name(&"a".repeat(33)));
    }

    #[test]
    fn cookies_and_origins() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; corral_playground=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h), Some("abc"));
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(!same_origin(&h), "no Origin: refused");
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h));
        h.remove("sec-fetch-site");
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        assert!(same_secret("x", "x"));
        assert!(!same_secret("x", "xx"));
    }
}
