//! The playground's chat: a local channel page (`/playground`, the door in [`http`]) that
//! shows what corral says exactly as Slack would, so corral can be tried without a
//! workspace.
//!
//! [`PlaygroundChat`] is one more [`Chat`] destination: the outbox's sender delivers to it
//! like to Slack. It gives posts a Slack-like `ts` (or keeps the `ts` Slack gave, when it
//! wraps Slack's transport and mirrors one channel), renders each message's Block Kit to
//! HTML ([`render`]) and publishes it to the page's open feeds through the [`Hub`]. What
//! it showed is what the sender stored (the outbox row's newest version and its `ts`), so
//! a reloaded page reads its history from the store, not from this process.
//!
//! The hub keeps the last [`RING`] events so a feed that reconnects with `Last-Event-ID`
//! misses nothing; one that is too old (or from another process) is told to reload.

pub mod http;
pub mod render;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::chat::{Capabilities, Chat, ChatError, Limits, Message};
use crate::clock::SharedClock;

/// Events kept for feeds that reconnect.
pub const RING: usize = 512;

/// The metadata key a user's own message (a mention typed in the page) names its author
/// under; corral's own messages have none.
pub const AUTHOR_KEY: &str = "corral_playground_author";

/// Who may use the playground (`CORRAL_PLAYGROUND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Loopback clients, a loopback `Host`, no forwarding headers, the printed token.
    Loopback,
    /// Any client that logs in with the API token.
    On,
    /// No routes at all.
    Off,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "loopback" | "local" => Ok(Mode::Loopback),
            "on" | "true" | "1" => Ok(Mode::On),
            "off" | "false" | "0" => Ok(Mode::Off),
            other => Err(format!(
                "{other:?} is not a playground mode (loopback, on or off)"
            )),
        }
    }
}

/// The playground's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    /// Commands and clicks from the page while Slack is configured too (else the page
    /// mirrors the channel read-only). Without Slack the page always takes input.
    pub input: bool,
    /// Feeds (Server-Sent Event streams) open at once.
    pub max_streams: usize,
    /// How long one feed stays open before the page reconnects (a bound on every
    /// long response).
    pub stream_lifetime: Duration,
    /// Between two heartbeat comments on a feed.
    pub heartbeat: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Loopback,
            input: false,
            max_streams: 16,
            stream_lifetime: Duration::from_secs(600),
            heartbeat: Duration::from_secs(15),
        }
    }
}

/// The channel the page shows when no channel is configured and Slack is off.
pub const CHANNEL: &str = "playground";

/// What the page is told, one Server-Sent Event each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// `<epoch>-<n>`: the feed's `id:` (what `Last-Event-ID` names).
    #[serde(skip)]
    pub id: u64,
    pub kind: EventKind,
    pub channel: String,
    /// The message's `ts` (posts and edits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
    /// The thread it is in, if a reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
    /// `corral`, or the identity that typed it.
    pub author: String,
    /// Who alone sees it (ephemeral).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The message rendered ([`render::message`]): escaped, safe to place as HTML.
    pub html: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Post,
    Update,
    Ephemeral,
}

/// What a feed that (re)connects gets first.
#[derive(Debug)]
pub enum Resume {
    /// The events it missed, in order.
    Replay(Vec<Arc<Event>>),
    /// Too much was missed (or the id is another process's): read the history again.
    Reload,
}

/// The playground's live side: the channel it shows, the events it published, the
/// feeds listening, the login token.
pub struct Hub {
    pub config: Config,
    /// The channel shown (`None`: Slack is configured and no channel is, so nothing is
    /// mirrored).
    pub channel: Option<String>,
    /// Whether the page may send commands and clicks.
    pub input: bool,
    /// The random login token `corral serve` prints (never logged).
    token: String,
    /// Identifies this process's event ids.
    epoch: u64,
    next: Mutex<(u64, VecDeque<Arc<Event>>)>,
    tx: broadcast::Sender<Arc<Event>>,
    last_us: AtomicI64,
    streams: AtomicUsize,
    closed: AtomicBool,
    closing: tokio::sync::Notify,
    clock: SharedClock,
}

impl Hub {
    /// A hub showing `channel`; `input`: the page may act. The token comes from the
    /// operating system's random source.
    pub fn new(
        config: Config,
        channel: Option<String>,
        input: bool,
        clock: SharedClock,
    ) -> std::io::Result<Arc<Hub>> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
        let mut epoch = [0u8; 8];
        getrandom::fill(&mut epoch).map_err(std::io::Error::other)?;
        let (tx, _) = broadcast::channel(RING);
        Ok(Arc::new(Hub {
            config,
            channel,
            input,
            token: hex::encode(bytes),
            // Small enough to stay exact in JavaScript's numbers.
            epoch: u64::from_le_bytes(epoch) >> 12,
            next: Mutex::new((0, VecDeque::with_capacity(RING))),
            tx,
            last_us: AtomicI64::new(0),
            streams: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            closing: tokio::sync::Notify::new(),
            clock,
        }))
    }

    /// The login token (`?token=` in the printed URL; the cookie's value).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The `id:` a feed sends for event `n`.
    pub fn event_id(&self, n: u64) -> String {
        format!("{}-{n}", self.epoch)
    }

    /// A new `ts`: Slack's form (seconds.microseconds), unique and increasing here.
    fn new_ts(&self) -> String {
        let now = self.clock.unix_ms().saturating_mul(1000);
        let mut last = self.last_us.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .last_us
                .compare_exchange(last, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return format!("{}.{:06}", next / 1_000_000, next % 1_000_000),
                Err(seen) => last = seen,
            }
        }
    }

    /// Publishes an event to every open feed (and keeps it for reconnects).
    fn publish(&self, mut event: Event) {
        let event = {
            let mut g = self.next.lock().unwrap_or_else(|p| p.into_inner());
            g.0 += 1;
            event.id = g.0;
            let e = Arc::new(event);
            if g.1.len() == RING {
                g.1.pop_front();
            }
            g.1.push_back(e.clone());
            // Sent under the lock, so feeds see events in id order.
            let _ = self.tx.send(e.clone());
            e
        };
        tracing::debug!(id = event.id, kind = ?event.kind, "playground event");
    }

    /// Subscribes a feed; `last`: the `Last-Event-ID` it reconnects with.
    pub fn subscribe(&self, last: Option<&str>) -> (broadcast::Receiver<Arc<Event>>, Resume) {
        let g = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let resume = match last {
            None => Resume::Replay(Vec::new()),
            Some(id) => match self.parse_id(id) {
                Some(n) if n == g.0 => Resume::Replay(Vec::new()),
                Some(n) if n < g.0 && g.1.front().is_some_and(|e| e.id <= n + 1) => {
                    Resume::Replay(g.1.iter().filter(|e| e.id > n).cloned().collect())
                }
                _ => Resume::Reload,
            },
        };
        (rx, resume)
    }

    fn parse_id(&self, id: &str) -> Option<u64> {
        let (epoch, n) = id.trim().split_once('-')?;
        (epoch.parse::<u64>().ok()? == self.epoch)
            .then(|| n.parse::<u64>().ok())
            .flatten()
    }

    /// The newest event's number (the history's `last_event_id`).
    pub fn last_event(&self) -> u64 {
        self.next.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Takes a feed slot; `None` when [`Config::max_streams`] are open.
    pub fn open_stream(self: &Arc<Self>) -> Option<StreamSlot> {
        let max = self.config.max_streams;
        self.streams
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot { hub: self.clone() })
    }

    /// Feeds open now.
    pub fn open_streams(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }

    /// Ends every feed (the server is shutting down: open responses must finish).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.closing.notify_waiters();
    }

    /// Resolves once [`Hub::close`] was called.
    pub async fn closed(&self) {
        let wait = self.closing.notified();
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        wait.await;
    }

    /// Whether a message in `channel` is shown.
    fn shows(&self, channel: &str) -> bool {
        self.channel.as_deref() == Some(channel)
    }
}

/// One open feed; dropping it frees the slot.
pub struct StreamSlot {
    hub: Arc<Hub>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.hub.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Who wrote a message: its author metadata, else corral.
pub fn author(msg: &Message) -> String {
    msg.metadata
        .as_ref()
        .and_then(|m| m.payload.get(AUTHOR_KEY))
        .cloned()
        .unwrap_or_else(|| "corral".to_string())
}

/// Whether a user id is one of the playground's names (ephemeral messages for them stay
/// in the page; Slack has no such user).
pub fn is_playground_user(user: &str) -> bool {
    user.starts_with("playground:")
}

/// The playground as a [`Chat`]: alone (Slack off: it assigns the `ts`), or in front of
/// Slack's transport (`inner`), mirroring one channel.
pub struct PlaygroundChat {
    pub hub: Arc<Hub>,
    pub inner: Option<Arc<dyn Chat>>,
}

impl PlaygroundChat {
    fn event(&self, kind: EventKind, channel: &str, msg: &Message) -> Event {
        Event {
            id: 0,
            kind,
            channel: channel.to_string(),
            ts: None,
            thread_ts: None,
            author: author(msg),
            user: None,
            html: render::message(msg),
        }
    }
}

#[async_trait]
impl Chat for PlaygroundChat {
    async fn post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        msg: &Message,
    ) -> Result<String, ChatError> {
        let ts = match &self.inner {
            Some(inner) => inner.post(channel, thread_ts, msg).await?,
            None => self.hub.new_ts(),
        };
        if self.inner.is_none() || self.hub.shows(channel) {
            let mut e = self.event(EventKind::Post, channel, msg);
            e.ts = Some(ts.clone());
            e.thread_ts = thread_ts.map(str::to_string);
            self.hub.publish(e);
        }
        Ok(ts)
    }

    async fn update(&self, channel: &str, ts: &str, msg: &Message) -> Result<(), ChatError> {
        if let Some(inner) = &self.inner {
            inner.update(channel, ts, msg).await?;
        }
        if self.inner.is_none() || self.hub.shows(channel) {
            let mut e = self.event(EventKind::Update, channel, msg);
            e.ts = Some(ts.to_string());
            self.hub.publish(e);
        }
        Ok(())
    }

    async fn ephemeral(&self, channel: &str, user: &str, msg: &Message) -> Result<(), ChatError> {
        match &self.inner {
            Some(inner) if !is_playground_user(user) => inner.ephemeral(channel, user, msg).await,
            _ => {
                let mut e = self.event(EventKind::Ephemeral, channel, msg);
                e.user = Some(user.to_string());
                self.hub.publish(e);
                Ok(())
            }
        }
    }

    async fn respond(&self, url: &str, in_channel: bool, msg: &Message) -> Result<(), ChatError> {
        match &self.inner {
            Some(inner) => inner.respond(url, in_channel, msg).await,
            None => Err(ChatError::Permanent(
                "the playground cannot answer a response_url".into(),
            )),
        }
    }

    async fn find_post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        outbox_id: i64,
        oldest: i64,
    ) -> Result<Option<String>, ChatError> {
        match &self.inner {
            Some(inner) => inner.find_post(channel, thread_ts, outbox_id, oldest).await,
            // Posting here cannot fail halfway: a post whose outcome is unknown was never
            // shown.
            None => Ok(None),
        }
    }

    fn capabilities(&self) -> Capabilities {
        match &self.inner {
            Some(inner) => inner.capabilities(),
            None => Capabilities {
                lookup: true,
                ..Capabilities::FULL
            },
        }
    }

    fn limits(&self) -> Limits {
        self.inner.as_ref().map(|i| i.limits()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Arc<Hub> {
        Hub::new(
            Config::default(),
            Some(CHANNEL.into()),
            true,
            crate::clock::system(),
        )
        .unwrap()
    }

    #[test]
    fn modes_parse_and_refuse_others() {
        assert_eq!("loopback".parse::<Mode>(), Ok(Mode::Loopback));
        assert_eq!(" ON ".parse::<Mode>(), Ok(Mode::On));
        assert_eq!("off".parse::<Mode>(), Ok(Mode::Off));
        assert!("public".parse::<Mode>().unwrap_err().contains("loopback"));
    }

    #[test]
    fn timestamps_look_like_slacks_and_only_grow() {
        let h = hub();
        let a = h.new_ts();
        let b = h.new_ts();
        let (s, us) = a.split_once('.').unwrap();
        assert!(s.parse::<i64>().unwrap() > 1_600_000_000);
        assert_eq!(us.len(), 6);
        assert!(b.parse::<f64>().unwrap() > a.parse::<f64>().unwrap());
        assert_eq!(h.token().len(), 48);
    }

    #[tokio::test]
    async fn feeds_replay_what_they_missed_or_reload() {
        let h = hub();
        let chat = PlaygroundChat {
            hub: h.clone(),
            inner: None,
        };
        let ts = chat
            .post(CHANNEL, None, &Message::text("one"))
            .await
            .unwrap();
        chat.update(CHANNEL, &ts, &Message::text("one, edited"))
            .await
            .unwrap();
        chat.ephemeral(CHANNEL, "playground:bob", &Message::text("psst"))
            .await
            .unwrap();
        let first = h.event_id(1);
        let (_, r) = h.subscribe(Some(&first));
        let Resume::Replay(missed) = r else {
            panic!("replay expected")
        };
        assert_eq!(missed.len(), 2);
        assert_eq!(missed[0].kind, EventKind::Update);
        assert_eq!(missed[1].user.as_deref(), Some("playground:bob"));
        assert!(matches!(h.subscribe(Some("1-1")).1, Resume::Reload));
        assert!(matches!(h.subscribe(Some("garbage")).1, Resume::Reload));
        let (_, r) = h.subscribe(Some(&h.event_id(3)));
        assert!(matches!(r, Resume::Replay(v) if v.is_empty()));
    }

    #[test]
    fn stream_slots_are_capped_and_freed() {
        let h = Hub::new(
            Config {
                max_streams: 2,
                ..Config::default()
            },
            None,
            false,
            crate::clock::system(),
        )
        .unwrap();
        let a = h.open_stream().unwrap();
        let _b = h.open_stream().unwrap();
        assert!(h.open_stream().is_none());
        drop(a);
        assert!(h.open_stream().is_some());
    }
}
