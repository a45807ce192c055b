//! corral with its playground, wired as `corral serve` wires it (`playground::http::prepare`,
//! the router merged, served by the real accept loop so handlers see the peer address),
//! and an HTTP client that speaks to it as the page does.

use std::sync::Arc;
use std::time::Duration;

use corral::app::App;
use corral::config::{Config, Env};
use corral::playground::Hub;

pub struct Playground {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub app: Arc<App>,
    pub hub: Arc<Hub>,
    /// No redirects followed, no cookie jar: tests set headers themselves.
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    sender: Option<tokio::task::AbortHandle>,
}

impl Drop for Playground {
    fn drop(&mut self) {
        self.hub.close();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(s) = self.sender.take() {
            s.abort();
        }
    }
}

/// The environment: nothing of Slack, an in-memory store, plus `extra` (which wins; an
/// empty value removes a setting).
pub fn env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = vec![
        ("CORRAL_DATABASE_URL".into(), "sqlite::memory:".into()),
        (
            "CORRAL_DEPLOY_AGENT".into(),
            env!("CARGO_BIN_EXE_corral").into(),
        ),
    ];
    for (k, v) in extra {
        pairs.retain(|(pk, _)| pk != k);
        pairs.push((k.to_string(), v.to_string()));
    }
    pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect()
}

impl Playground {
    /// corral serving its playground; `None` when `CORRAL_PLAYGROUND=off` (no routes).
    pub async fn start(extra: &[(&str, &str)]) -> Option<Playground> {
        Playground::start_with(extra, None).await
    }

    /// The same, with Slack's transport behind the playground.
    pub async fn start_with(
        extra: &[(&str, &str)],
        slack: Option<Arc<dyn corral::chat::Chat>>,
    ) -> Option<Playground> {
        let mut config = Config::from_env(&Env::from_pairs(env(extra))).expect("test config");
        let (chat, hub) =
            corral::playground::http::prepare(&mut config, slack, corral::clock::system())
                .expect("playground");
        let config = Arc::new(config);
        let store = corral::store::open_with(config.database_url.expose(), &config.database)
            .await
            .expect("store");
        let app = App::new(config.clone(), store, chat);
        let sender = app.start_sender();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut router = corral::api::router(app.clone());
        if let Some(h) = &hub {
            router = router.merge(corral::playground::http::router(app.clone(), h.clone()));
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(corral::api::serve::serve(
            listener,
            router,
            config.http,
            async move {
                let _ = stopped.await;
            },
        ));
        let hub = hub?;
        Some(Playground {
            url: format!("http://{addr}"),
            addr,
            app,
            hub,
            http: corral::http_client_builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            stop: Some(stop),
            sender,
        })
    }

    /// The session cookie header.
    pub fn cookie(&self) -> String {
        format!("corral_playground={}", self.hub.token())
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .header("cookie", self.cookie())
            .send()
            .await
            .unwrap()
    }

    /// A POST as the page makes it: cookie, its own Origin, JSON.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header("cookie", self.cookie())
            .header("origin", &self.url)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Types a command as `user`; the response's JSON.
    pub async fn command(&self, user: &str, text: &str) -> serde_json::Value {
        let r = self
            .post(
                "/playground/command",
                serde_json::json!({"user": user, "text": text}),
            )
            .await;
        assert_eq!(r.status(), 200, "{text}");
        r.json().await.unwrap()
    }

    /// The history a (re)loaded page reads.
    pub async fn history(&self, user: &str) -> serde_json::Value {
        let r = self.get(&format!("/playground/history?user={user}")).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Opens the feed as `user`.
    pub async fn feed(&self, user: &str, last: Option<&str>) -> Feed {
        let mut req = self
            .http
            .get(format!("{}/playground/events?user={user}", self.url))
            .header("cookie", self.cookie());
        if let Some(l) = last {
            req = req.header("last-event-id", l);
        }
        let resp = req.send().await.unwrap();
        Feed {
            status: resp.status().as_u16(),
            resp: Some(resp),
            buf: String::new(),
        }
    }
}

/// One feed, read as Server-Sent Events.
pub struct Feed {
    pub status: u16,
    resp: Option<reqwest::Response>,
    buf: String,
}

/// One event read off a feed.
#[derive(Debug, Clone, Default)]
pub struct Sse {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    /// Comment lines before it (heartbeats).
    pub comments: usize,
}

impl Feed {
    /// The next event (comments counted), or `None` when the stream ended; waits at most
    /// `wait` (real time, generous).
    pub async fn next(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut ev = Sse::default();
        loop {
            while let Some(end) = self.buf.find('\n') {
                let line: String = self.buf.drain(..=end).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if ev.id.is_some() || ev.event.is_some() || !ev.data.is_empty() {
                        return Some(ev);
                    }
                    continue;
                }
                if line.starts_with(':') {
                    ev.comments += 1;
                } else if let Some(v) = line.strip_prefix("id:") {
                    ev.id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("event:") {
                    ev.event = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    ev.data.push_str(v.trim_start());
                }
            }
            let resp = self.resp.as_mut()?;
            match tokio::time::timeout_at(deadline, resp.chunk()).await {
                Err(_) => panic!("no event within {wait:?} (so far: {ev:?})"),
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(_) => {
                    self.resp = None;
                    return None;
                }
            }
        }
    }

    /// Reads events until one's data contains `needle`; returns it and the events before.
    pub async fn until(&mut self, needle: &str) -> (Sse, Vec<Sse>) {
        let mut before = Vec::new();
        loop {
            match self.next(Duration::from_secs(20)).await {
                Some(e) if e.data.contains(needle) => return (e, before),
                Some(e) => before.push(e),
                None => panic!("the feed ended before {needle:?}: {before:?}"),
            }
        }
    }
}
