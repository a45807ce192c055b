//! Runs corral's real router in-process against a fake Slack, and signs requests the
//! way Slack does. The one place tests build an `App` and start its outbox sender
//! ([`start_app`]).

use std::sync::Arc;
use std::time::Duration;

use corral::app::App;
use corral::chat::Chat;
use corral::clock::SharedClock;
use corral::config::{Config, Env};

use super::fake_slack::FakeSlack;

/// Slack's documented example secret (reference/slack.md §a).
pub const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const TOKEN: &str = "test-api-token";
pub const CHANNEL: &str = "C0RELEASES";

pub struct Corral {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub app: Arc<App>,
    pub slack: FakeSlack,
    pub http: reqwest::Client,
    /// The outbox sender's task: aborted when this is dropped (a process that died).
    sender: Option<tokio::task::AbortHandle>,
}

impl Drop for Corral {
    fn drop(&mut self) {
        if let Some(s) = self.sender.take() {
            s.abort();
        }
    }
}

/// The default test environment plus `extra` (which wins).
pub fn env(slack: &FakeSlack, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = vec![
        ("CORRAL_DATABASE_URL".into(), "sqlite::memory:".into()),
        ("SLACK_SIGNING_SECRET".into(), SECRET.into()),
        ("SLACK_BOT_TOKEN".into(), "xoxb-test".into()),
        ("SLACK_API_URL".into(), slack.api_url.clone()),
        ("CORRAL_API_TOKEN".into(), TOKEN.into()),
        ("CORRAL_CHANNEL".into(), CHANNEL.into()),
        // Slack's pacing, scaled down so tests run fast (pacing tests set their own).
        ("CORRAL_SLACK_POST_INTERVAL".into(), "20ms".into()),
        ("CORRAL_SLACK_UPDATE_INTERVAL".into(), "20ms".into()),
        // `--target local` runs `<this> agent`; the test binary is not corral.
        (
            "CORRAL_DEPLOY_AGENT".into(),
            env!("CARGO_BIN_EXE_corral").into(),
        ),
    ];
    for (k, v) in extra {
        pairs.retain(|(pk, _)| pk != k);
        pairs.push((k.to_string(), v.to_string()));
    }
    pairs
}

impl Corral {
    pub async fn start() -> Corral {
        Corral::start_with(&[]).await
    }

    pub async fn start_with(extra: &[(&str, &str)]) -> Corral {
        Corral::start_on(extra, corral::clock::system()).await
    }

    /// corral and the fake Slack on one clock (a `ManualClock` drives pacing and ages).
    pub async fn start_on(extra: &[(&str, &str)], clock: SharedClock) -> Corral {
        let slack = FakeSlack::start_with_clock(clock.clone()).await;
        Corral::start_against(slack, extra, clock).await
    }

    /// corral against a given fake Slack.
    pub async fn start_against(
        slack: FakeSlack,
        extra: &[(&str, &str)],
        clock: SharedClock,
    ) -> Corral {
        let pairs: Vec<(String, String)> = env(&slack, extra)
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let config = Arc::new(Config::from_env(&Env::from_pairs(pairs)).expect("test config"));
        let store = corral::store::open_with(config.database_url.expose(), &config.database)
            .await
            .expect("store");
        let chat: Arc<dyn Chat> = corral::app::destination(&config)
            .expect("slack client")
            .unwrap_or_else(|| Arc::new(corral::chat::LogChat::default()));
        let app = App::with_clock(config, store, chat, clock);
        let sender = app.start_sender();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = corral::api::router(app.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Corral {
            url: format!("http://{addr}"),
            addr,
            app,
            slack,
            http: corral::http_client().unwrap(),
            sender,
        }
    }

    /// POSTs `body` to `path` signed with `secret` at `ts`.
    pub async fn post_signed(
        &self,
        path: &str,
        content_type: &str,
        body: &str,
        secret: &str,
        ts: i64,
    ) -> reqwest::Response {
        let ts = ts.to_string();
        let sig = corral::slack::verify::sign(secret, &ts, body.as_bytes());
        self.http
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .header("x-slack-request-timestamp", ts)
            .header("x-slack-signature", sig)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// A signed slash command, as Slack sends it (form-encoded, `command` escaped).
    pub async fn slash(&self, command: &str, text: &str, user: &str) -> reqwest::Response {
        let body = slash_body(command, text, user, "C0TEAM");
        self.post_signed(
            "/slack/commands",
            "application/x-www-form-urlencoded",
            &body,
            SECRET,
            crate::support::now(),
        )
        .await
    }

    /// The ack JSON of a signed slash command.
    pub async fn slash_json(&self, command: &str, text: &str, user: &str) -> serde_json::Value {
        let resp = self.slash(command, text, user).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    pub async fn lock(&self) -> corral::lock::LockState {
        self.app.store.lock_state().await.unwrap()
    }

    /// Waits (real time) until the outbox has delivered everything.
    pub async fn delivered(&self) {
        assert!(
            self.app
                .outbox
                .idle(self.app.store.as_ref(), Duration::from_secs(10))
                .await,
            "the outbox did not drain: {:?}",
            self.app.store.outbox_rows(None, 100).await
        );
    }
}

/// An app on the system clock with its sender running (how every test builds one).
pub fn start_app(
    config: Arc<Config>,
    store: Arc<dyn corral::store::Store>,
    chat: Arc<dyn Chat>,
) -> Arc<App> {
    start_app_on(config, store, chat, corral::clock::system())
}

/// An app on `clock` with its sender running.
pub fn start_app_on(
    config: Arc<Config>,
    store: Arc<dyn corral::store::Store>,
    chat: Arc<dyn Chat>,
    clock: SharedClock,
) -> Arc<App> {
    let app = App::with_clock(config, store, chat, clock);
    app.start_sender();
    app
}

/// Waits (real time) until `app`'s outbox has delivered everything.
pub async fn delivered(app: &App) {
    assert!(
        app.outbox
            .idle(app.store.as_ref(), Duration::from_secs(10))
            .await,
        "the outbox did not drain"
    );
}

pub fn slash_body(command: &str, text: &str, user: &str, channel: &str) -> String {
    serde_urlencoded::to_string([
        ("token", "xyzz0WbapA4vBCDEFasx0q6G"),
        ("team_id", "T1DC2JH3J"),
        ("team_domain", "testteamnow"),
        ("channel_id", channel),
        ("channel_name", "releases"),
        ("user_id", user),
        ("user_name", "someone"),
        ("command", command),
        ("text", text),
        (
            "response_url",
            "https://hooks.slack.com/commands/T1DC2JH3J/1/x",
        ),
        (
            "trigger_id",
            "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c",
        ),
    ])
    .unwrap()
}

/// Sends raw bytes and returns the raw response (for byte-exact checks).
pub async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

/// Drops the `date:` and `connection:` headers so responses compare byte for byte.
pub fn without_date(resp: &str) -> String {
    resp.split("\r\n")
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            // Go answers `Connection: close` too when the request asked for it.
            !l.starts_with("date:") && !l.starts_with("connection:")
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Stores a job row directly, without the lock gate (tests that need a job to exist).
pub async fn insert_job(
    store: &dyn corral::store::Store,
    kind: corral::job::JobKind,
    command: &str,
    user: &str,
    source: corral::door::Source,
    channel: Option<&str>,
) -> corral::store::JobRecord {
    let job = corral::store::NewJob {
        kind,
        command: command.into(),
        requested_by: user.into(),
        source,
        channel: channel.map(str::to_string),
        now: super::now(),
    };
    store
        .create_job(job, Box::new(|_| Ok(corral::store::Effects::default())))
        .await
        .expect("store")
        .expect("no gate")
}
