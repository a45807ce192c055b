//! The sender: the one task that delivers outbox rows through the app's [`Chat`].
//!
//! It works only from the store, so a restarted process (or `corral exec` beside `corral
//! serve`) picks up where the last one stopped:
//!
//! * **Order.** It takes only the head of each lane (per channel: posts in commit order;
//!   a reply is committed after its root in the same lane, so it waits for the root's
//!   `ts`) and every message with a newer version to edit in (an edit waits only for its
//!   post).
//! * **Leases.** Before a call it takes a lease on the row in the store (longer than the
//!   call's deadline); a lease never settled means the process died mid-call, and the
//!   next sender treats that attempt's outcome as unknown.
//! * **Once.** A post whose outcome is unknown carries its outbox id in its metadata and
//!   is looked for in the channel's or thread's recent history before it is sent again.
//!   Ephemeral messages, response_url answers and webhook posts cannot be looked for:
//!   after an unknown outcome they are not resent (at most once), and the log says so.
//! * **Pacing.** "Not before" times per method and per method+channel live in the store
//!   (the app's budget, not the process's, and a `Retry-After` survives a restart); a 429
//!   blocks that method until its `Retry-After` has passed. Transient failures back off
//!   exponentially with jitter, capped.
//! * **Never lost.** A row is retried until delivered or older than the give-up age, then
//!   marked dead (metric, log, the job's `delivery`). Refusals that can never succeed are
//!   marked failed at once; a message Slack finds too long is sent again shortened.
//!
//! Times come from the app's clock, so tests drive pacing and give-up ages with a
//! `ManualClock`; only call deadlines and the idle poll are real time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::metrics::Metrics;
use crate::chat::{Capabilities, Chat, ChatError, Limits};
use crate::clock::SharedClock;
use crate::store::{OutboxRow, RowKind, RowState, Settle, Store, Thread};

/// How often the store is read for rows written by another process.
const POLL: Duration = Duration::from_millis(500);
/// Woken by new rows, the sender waits this long before it looks: a burst of wake-ups
/// (one per request under load) costs one look at the store, not one each.
const SETTLE: Duration = Duration::from_millis(100);
/// First backoff after a transient failure.
const BACKOFF_BASE_MS: i64 = 1000;
/// Slack's messages are shortened to this on `msg_too_long`.
const SHORTENED: usize = 3000;
/// History is searched from this long before the row was written (clock skew).
const LOOKUP_SLACK_S: i64 = 120;

/// The sender's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Rows older than this that still fail are marked dead.
    pub give_up: Duration,
    /// The longest wait between two attempts of a row (before jitter).
    pub backoff_max: Duration,
    /// How long a claim holds a row: longer than one call's deadline.
    pub lease: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            give_up: Duration::from_secs(24 * 3600),
            backoff_max: Duration::from_secs(8),
            lease: Duration::from_secs(15),
        }
    }
}

/// The app's handle on its outbox: wakes the sender, and waits for it to drain.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    notify: Notify,
    owner: String,
    started: AtomicBool,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new()
    }
}

impl Outbox {
    pub(crate) fn new() -> Outbox {
        // Unique per process and app: a lease held by an older process is not ours.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Outbox {
            inner: Arc::new(Inner {
                notify: Notify::new(),
                owner: format!("{}-{nanos}-{n}", std::process::id()),
                started: AtomicBool::new(false),
            }),
        }
    }

    /// Tells the sender there may be new rows (call after writing some).
    pub(crate) fn wake(&self) {
        self.inner.notify.notify_one();
    }

    /// This sender's lease owner name.
    pub(crate) fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Marks the sender started; false if it already was.
    pub(super) fn mark_started(&self) -> bool {
        !self.inner.started.swap(true, Ordering::SeqCst)
    }

    /// Waits until nothing is left to deliver, at most `timeout` (real time). True if
    /// the outbox drained.
    pub async fn idle(&self, store: &dyn Store, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if store.outbox_stats().await.is_ok_and(|s| s.depth == 0) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            self.wake();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What a step found.
enum Next {
    /// Something was attempted: look again at once.
    Again,
    /// Nothing ready before this time (Unix ms).
    Until(i64),
    /// Nothing to do.
    Idle,
}

/// The delivering task.
pub(crate) struct Sender {
    pub store: Arc<dyn Store>,
    pub chat: Arc<dyn Chat>,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub outbox: Outbox,
    pub settings: Settings,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A number in [0.5, 1.0) from the row and attempt: jitter without a random source, so
/// two rows failing together spread out and a test sees the same schedule every run.
fn jitter(id: i64, attempt: i64) -> f64 {
    let mut x = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (attempt as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    0.5 + (x % 1000) as f64 / 2000.0
}

/// Pacing scopes.
fn method_scope(method: &str) -> String {
    method.to_string()
}
fn channel_scope(method: &str, channel: &str) -> String {
    format!("{method}:{channel}")
}

/// A post's slots: Slack's workspace-wide pace and the channel's.
fn post_slots(channel: &str, limits: &Limits) -> Vec<(String, i64)> {
    vec![
        (method_scope(POST), ms(limits.post)),
        (channel_scope(POST, channel), ms(limits.post_per_channel)),
    ]
}

const POST: &str = "chat.postMessage";
const UPDATE: &str = "chat.update";
const EPHEMERAL: &str = "chat.postEphemeral";
const RESPOND: &str = "response_url";
const LOOKUP: &str = "conversations.history";

impl Sender {
    /// Runs until the task is dropped or aborted.
    pub(crate) async fn run(self) {
        loop {
            let next = match self.step().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "outbox: the store failed; trying again shortly");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let until = match next {
                Next::Again => continue,
                Next::Until(t) => Some(t),
                Next::Idle => None,
            };
            let clock_wait = async {
                match until {
                    Some(t) => {
                        let at =
                            jiff::Timestamp::from_millisecond(t).unwrap_or(jiff::Timestamp::MAX);
                        self.clock.sleep_until(at).await
                    }
                    None => std::future::pending().await,
                }
            };
            let woken = tokio::select! {
                _ = self.outbox.inner.notify.notified() => true,
                _ = clock_wait => false,
                _ = tokio::time::sleep(POLL) => false,
            };
            if woken {
                tokio::time::sleep(SETTLE).await;
            }
        }
    }

    /// The pacing scopes a row's next call takes a slot in, each with its interval (ms).
    fn slots(&self, row: &OutboxRow, caps: Capabilities, limits: &Limits) -> Vec<(String, i64)> {
        match (row.state, row.kind) {
            (RowState::Edit, _) if caps.edits => vec![(method_scope(UPDATE), ms(limits.update))],
            (RowState::Edit, _) => vec![],
            (_, RowKind::Post) if row.unknown && caps.lookup => {
                vec![(method_scope(LOOKUP), ms(limits.lookup))]
            }
            (_, RowKind::Post) => post_slots(&row.channel, limits),
            (_, RowKind::Ephemeral) => vec![(method_scope(EPHEMERAL), ms(limits.ephemeral))],
            (_, RowKind::Respond) => vec![(method_scope(RESPOND), ms(limits.post))],
        }
    }

    async fn step(&self) -> crate::store::Result<Next> {
        let now = self.clock.unix_ms();
        let work = self.store.outbox_work(now, 200).await?;
        if work.is_empty() {
            return Ok(Next::Idle);
        }
        // An unpaced destination (the log, a printer) has no windows to read.
        let pacing: HashMap<String, i64> = if self.chat.limits() == Limits::default() {
            HashMap::new()
        } else {
            self.store.pacing().await?.into_iter().collect()
        };
        let caps = self.chat.capabilities();
        let limits = self.chat.limits();
        let unpaced = limits == Limits::default();
        let mut wake: Option<i64> = None;
        let mut attempted = false;
        for row in work {
            let slots = self.slots(&row, caps, &limits);
            let paced = slots
                .iter()
                .filter_map(|(s, _)| pacing.get(s).copied())
                .max()
                .unwrap_or(0);
            let mut ready = row.not_before.max(paced);
            // The slot is taken in the store, atomically: another replica's sender may
            // have taken it since the pacing was read.
            if ready <= now
                && !unpaced
                && !slots.is_empty()
                && let Err(taken_until) = self.store.take_pacing(slots, now).await?
            {
                ready = taken_until;
            }
            if ready <= now {
                self.attempt(row.id, now).await?;
                attempted = true;
                // A paced destination's windows just moved: look again. An unpaced one
                // takes every ready row of this look (each is its lane's head).
                if !unpaced {
                    return Ok(Next::Again);
                }
                continue;
            }
            wake = Some(wake.map_or(ready, |w| w.min(ready)));
        }
        if attempted {
            return Ok(Next::Again);
        }
        Ok(wake.map_or(Next::Idle, Next::Until))
    }

    async fn attempt(&self, id: i64, now: i64) -> crate::store::Result<()> {
        let owner = self.outbox.owner().to_string();
        let Some(row) = self
            .store
            .outbox_claim(id, &owner, now, ms(self.settings.lease))
            .await?
        else {
            return Ok(());
        };
        let settle = self.deliver(&row, now).await?;
        if let Settle::Dead { error } = &settle {
            self.metrics.outbox_dead.inc();
            tracing::error!(job = row.job, outbox = row.id, key = %row.name(), error = %error, "outbox: gave up on a message");
        }
        self.store
            .outbox_settle(row.id, &owner, settle, self.clock.unix_ms())
            .await
    }

    fn count(&self, method: &str, outcome: &str) {
        self.metrics.outbox_send(method, outcome);
    }

    /// Records a call of `method` (to `channel`) made or answered now, for pacing.
    async fn paced(
        &self,
        method: &str,
        channel: Option<&str>,
        limits: &Limits,
    ) -> crate::store::Result<()> {
        let now = self.clock.unix_ms();
        let (every, per_channel) = match method {
            POST => (limits.post, limits.post_per_channel),
            UPDATE => (limits.update, Duration::ZERO),
            EPHEMERAL => (limits.ephemeral, Duration::ZERO),
            LOOKUP => (limits.lookup, Duration::ZERO),
            _ => (limits.post, Duration::ZERO),
        };
        if !every.is_zero() {
            self.store
                .push_pacing(&method_scope(method), now + ms(every))
                .await?;
        }
        if let Some(ch) = channel
            && !per_channel.is_zero()
        {
            self.store
                .push_pacing(&channel_scope(method, ch), now + ms(per_channel))
                .await?;
        }
        Ok(())
    }

    fn too_old(&self, row: &OutboxRow, now: i64) -> bool {
        let since = if row.state == RowState::Edit {
            row.updated_at
        } else {
            row.created_at
        };
        now - since > ms(self.settings.give_up)
    }

    fn backoff(&self, row: &OutboxRow, now: i64) -> i64 {
        let exp = (row.attempts - 1).clamp(0, 20) as u32;
        let raw = BACKOFF_BASE_MS
            .saturating_mul(1i64 << exp)
            .min(ms(self.settings.backoff_max));
        now + (raw as f64 * jitter(row.id, row.attempts)) as i64
    }

    /// What to record after `e` from `method`.
    async fn failed(
        &self,
        row: &OutboxRow,
        method: &str,
        e: ChatError,
        now: i64,
    ) -> crate::store::Result<Settle> {
        self.count(method, e.outcome());
        // Windows count from the answer, not from when the call started.
        let now = now.max(self.clock.unix_ms());
        Ok(match e {
            ChatError::RateLimited { retry_after } => {
                // Slack: wait Retry-After before calling that method again, anywhere.
                let until = now + ms(retry_after);
                self.store.push_pacing(&method_scope(method), until).await?;
                self.metrics.outbox_rate_limited.inc();
                self.metrics
                    .outbox_retry_after_seconds
                    .inc_by(retry_after.as_secs_f64());
                tracing::warn!(
                    job = row.job,
                    outbox = row.id,
                    method,
                    ?retry_after,
                    "outbox: Slack rate limit; that method waits"
                );
                Settle::Retry {
                    not_before_ms: until,
                    error: format!("rate limited ({retry_after:?})"),
                    unknown: false,
                }
            }
            ChatError::Permanent(code) => {
                tracing::error!(job = row.job, outbox = row.id, key = %row.name(), method, error = %code, "outbox: Slack refused a message; it will not be retried");
                if row.state == RowState::Edit {
                    Settle::EditRefused {
                        version: row.version,
                        error: code,
                    }
                } else {
                    Settle::Failed { error: code }
                }
            }
            ChatError::Transient(reason) | ChatError::Unknown(reason) if self.too_old(row, now) => {
                let error = format!(
                    "gave up after {} attempts over {:?}: {reason}",
                    row.attempts, self.settings.give_up
                );
                if row.state == RowState::Edit {
                    self.metrics.outbox_dead.inc();
                    tracing::error!(job = row.job, outbox = row.id, key = %row.name(), error = %error, "outbox: gave up on an edit");
                    Settle::EditRefused {
                        version: row.version,
                        error,
                    }
                } else {
                    Settle::Dead { error }
                }
            }
            e @ (ChatError::Transient(_) | ChatError::Unknown(_)) => {
                let unknown = matches!(e, ChatError::Unknown(_)) && row.state == RowState::Pending;
                let not_before_ms = self.backoff(row, now);
                tracing::warn!(job = row.job, outbox = row.id, method, attempt = row.attempts, error = %e, retry_in_ms = not_before_ms - now, "outbox: not delivered yet");
                Settle::Retry {
                    not_before_ms,
                    error: e.to_string(),
                    unknown,
                }
            }
        })
    }

    async fn deliver(&self, row: &OutboxRow, now: i64) -> crate::store::Result<Settle> {
        let caps = self.chat.capabilities();
        let limits = self.chat.limits();
        if row.state == RowState::Edit {
            return self.edit(row, now, caps, &limits).await;
        }
        if row.state != RowState::Pending {
            return Ok(Settle::NotFound);
        }
        if let Some(exp) = row.expires_at
            && now > exp
        {
            tracing::warn!(
                job = row.job,
                outbox = row.id,
                kind = row.kind.as_str(),
                "outbox: dropped a reply that is past Slack's validity (30 min; response_url: 5 uses)"
            );
            return Ok(Settle::Dropped {
                reason: "expired before it could be delivered".into(),
            });
        }
        match row.kind {
            RowKind::Post => self.post(row, now, caps, &limits).await,
            RowKind::Ephemeral | RowKind::Respond => {
                if row.kind == RowKind::Ephemeral && !caps.ephemeral {
                    return Ok(Settle::Dropped {
                        reason: "this destination cannot show ephemeral messages".into(),
                    });
                }
                if row.unknown {
                    tracing::warn!(
                        job = row.job,
                        outbox = row.id,
                        kind = row.kind.as_str(),
                        "outbox: the last attempt's outcome is unknown and this kind cannot be looked up: not resent (at most once)"
                    );
                    return Ok(Settle::Dropped {
                        reason: "outcome unknown; not resent (at most once)".into(),
                    });
                }
                // The call's slot was taken before the row was claimed (`step`).
                let (method, sent) = if row.kind == RowKind::Ephemeral {
                    let user = row.user.as_deref().unwrap_or("");
                    (
                        EPHEMERAL,
                        self.chat.ephemeral(&row.channel, user, &row.message).await,
                    )
                } else {
                    let url = row.url.as_deref().unwrap_or("");
                    (
                        RESPOND,
                        self.chat.respond(url, row.in_channel, &row.message).await,
                    )
                };
                self.paced(method, None, &limits).await?;
                match sent {
                    Ok(()) => {
                        self.count(method, "ok");
                        Ok(Settle::Delivered {
                            version: row.version,
                            ts: None,
                        })
                    }
                    Err(e) => self.failed(row, method, e, now).await,
                }
            }
        }
    }

    async fn edit(
        &self,
        row: &OutboxRow,
        now: i64,
        caps: Capabilities,
        limits: &Limits,
    ) -> crate::store::Result<Settle> {
        let done = Settle::Delivered {
            version: row.version,
            ts: None,
        };
        if !caps.edits {
            return Ok(done);
        }
        let Some(ts) = row.ts.as_deref().filter(|t| !t.is_empty()) else {
            return Ok(done);
        };
        let mut sent = self.chat.update(&row.channel, ts, &row.message).await;
        if matches!(&sent, Err(ChatError::Permanent(c)) if c == "msg_too_long" || c == "msg_blocks_too_long")
        {
            sent = self
                .chat
                .update(&row.channel, ts, &row.message.shortened(SHORTENED))
                .await;
        }
        self.paced(UPDATE, None, limits).await?;
        match sent {
            Ok(()) => {
                self.count(UPDATE, "ok");
                Ok(done)
            }
            Err(e) => self.failed(row, UPDATE, e, now).await,
        }
    }

    async fn post(
        &self,
        row: &OutboxRow,
        now: i64,
        caps: Capabilities,
        limits: &Limits,
    ) -> crate::store::Result<Settle> {
        if !caps.threads && !row.role.standalone() {
            return Ok(Settle::Dropped {
                reason: "this destination cannot thread: only plans, outcomes, announcements and replies are posted".into(),
            });
        }
        let thread_ts = match self.thread_of(row, caps, now) {
            Ok(ts) => ts,
            Err(settle) => return Ok(settle),
        };
        if row.unknown
            && let Some(settle) = self
                .look_for_earlier(row, thread_ts.as_deref(), caps, limits, now)
                .await?
        {
            return Ok(settle);
        }
        let msg = if caps.lookup {
            row.message.stamped(row.id)
        } else {
            row.message.clone()
        };
        let mut sent = self
            .chat
            .post(&row.channel, thread_ts.as_deref(), &msg)
            .await;
        if matches!(&sent, Err(ChatError::Permanent(c)) if c == "msg_too_long" || c == "msg_blocks_too_long")
        {
            tracing::warn!(
                job = row.job,
                outbox = row.id,
                "outbox: Slack found the message too long; sending it shortened"
            );
            sent = self
                .chat
                .post(
                    &row.channel,
                    thread_ts.as_deref(),
                    &msg.shortened(SHORTENED),
                )
                .await;
        }
        // Paced from the answer too: Slack counts arrivals, and a call can take a while.
        self.paced(POST, Some(&row.channel), limits).await?;
        match sent {
            Ok(ts) => {
                self.count(POST, "ok");
                Ok(Settle::Delivered {
                    version: row.version,
                    ts: Some(ts).filter(|t| !t.is_empty()),
                })
            }
            Err(e) => self.failed(row, POST, e, now).await,
        }
    }

    /// The `ts` a post threads under; `Err` settles the row when its root cannot be had
    /// (yet, or ever).
    fn thread_of(
        &self,
        row: &OutboxRow,
        caps: Capabilities,
        now: i64,
    ) -> std::result::Result<Option<String>, Settle> {
        Ok(match &row.thread {
            None => None,
            Some(_) if !caps.threads => None,
            Some(Thread::Ts(ts)) => Some(ts.clone()),
            Some(Thread::Key(k)) => match (&row.root_ts, row.root_state) {
                (Some(ts), _) if !ts.is_empty() => Some(ts.clone()),
                (_, None) => {
                    return Err(Settle::Failed {
                        error: format!("its thread root {k} does not exist"),
                    });
                }
                (_, Some(RowState::Pending)) => {
                    // Its root is in another lane and not posted yet: wait for it.
                    return Err(Settle::Retry {
                        not_before_ms: now + BACKOFF_BASE_MS,
                        error: "waiting for its thread root".into(),
                        unknown: row.unknown,
                    });
                }
                (_, Some(state)) => {
                    return Err(Settle::Failed {
                        error: format!("its thread root was not delivered ({})", state.as_str()),
                    });
                }
            },
        })
    }

    /// A post whose last attempt's outcome is unknown: searched for in the channel before
    /// it is sent again. `Some` settles the row (found, not found, or not searchable);
    /// `None` posts it.
    async fn look_for_earlier(
        &self,
        row: &OutboxRow,
        thread_ts: Option<&str>,
        caps: Capabilities,
        limits: &Limits,
        now: i64,
    ) -> crate::store::Result<Option<Settle>> {
        if !caps.lookup {
            tracing::warn!(
                job = row.job,
                outbox = row.id,
                "outbox: the last post's outcome is unknown and this destination cannot be searched: not resent (at most once)"
            );
            return Ok(Some(Settle::Dropped {
                reason: "outcome unknown; not resent (at most once)".into(),
            }));
        }
        let oldest = row.created_at / 1000 - LOOKUP_SLACK_S;
        let found = self
            .chat
            .find_post(&row.channel, thread_ts, row.id, oldest)
            .await;
        self.paced(LOOKUP, None, limits).await?;
        match found {
            Ok(Some(ts)) => {
                self.count(LOOKUP, "found");
                tracing::info!(job = row.job, outbox = row.id, ts = %ts, "outbox: the earlier attempt did arrive; not posting again");
                // The content of that attempt is not known; a newer version is edited in.
                return Ok(Some(Settle::Delivered {
                    version: 1,
                    ts: Some(ts),
                }));
            }
            Ok(None) => {
                self.count(LOOKUP, "not_found");
                return Ok(Some(Settle::NotFound));
            }
            Err(ChatError::Permanent(code)) => {
                self.count(LOOKUP, "refused");
                tracing::warn!(job = row.job, outbox = row.id, error = %code, "outbox: cannot search the channel's history (add the history scopes); posting again may duplicate it");
                // The slot taken was the lookup's; the post needs one of its own.
                if *limits != Limits::default()
                    && let Err(until) = self
                        .store
                        .take_pacing(post_slots(&row.channel, limits), self.clock.unix_ms())
                        .await?
                {
                    return Ok(Some(Settle::Retry {
                        not_before_ms: until,
                        error: format!("history lookup refused ({code}); waiting to post"),
                        unknown: false,
                    }));
                }
            }
            Err(e) => return self.failed(row, LOOKUP, e, now).await.map(Some),
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range_and_differs_between_rows() {
        let values: Vec<f64> = (1..50).map(|i| jitter(i, 1)).collect();
        assert!(values.iter().all(|v| (0.5..1.0).contains(v)));
        assert!(values.windows(2).any(|w| w[0] != w[1]));
    }
}
