//! The scheduler `corral serve` runs: freeze windows opening and closing, digests, lock
//! reminders ([`super::remind`]), each firing claimed in the store so that it happens
//! once however many processes share the store.
//!
//! One loop: fire whatever is due now, then wait on the [`Clock`](crate::clock::Clock)
//! until the next firing of anything (at most [`RECHECK`], so a change made by another
//! replica is noticed), or until a lock change here wakes it ([`Wake`]).
//!
//! Missed firings (corral was down) are decided by [`crate::schedule`]: a freeze window
//! that should be open is open (the freeze is computed from the policy and the time, not
//! stored; only its announcements are claimed), a digest missed by less than its period
//! is sent once, late, saying so, and older misses are skipped with a log line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::Notify;

use super::App;
use crate::chat::Message;
use crate::lock::LockState;
use crate::schedule::{CatchUp, Digest, Freeze, Transition, Window, show_time};
use crate::store::{Claimed, Effects, FiringClaim, NewMessage, Role, StoreError};
use crate::text::{format_duration, person, sanitize};

/// The longest the loop sleeps without looking again (another replica may have started
/// a release whose reminders this one should also be ready to send).
pub(crate) const RECHECK: Duration = Duration::from_secs(60);

/// After a store failure, the loop tries again this much later.
const RETRY: Duration = Duration::from_secs(5);

/// Wakes the scheduler loop; remembers that it was started.
#[derive(Debug, Default, Clone)]
pub struct Wake {
    notify: Arc<Notify>,
    started: Arc<AtomicBool>,
}

impl Wake {
    /// Makes the loop look again now (a wake while it is busy is kept for its next wait).
    pub(crate) fn wake(&self) {
        self.notify.notify_one();
    }
}

/// The key of the post announcing a release started by `who` at `since` (Unix seconds)
/// outside Slack, in the first notification channel: lock reminders thread under it.
pub(crate) fn announce_key(since: i64, who: &str) -> String {
    format!("release:{since}:{who}:announce")
}

/// The earlier of two optional times.
pub(super) fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

pub(super) fn at_second(s: i64) -> Option<Timestamp> {
    Timestamp::from_second(s).ok()
}

impl App {
    /// Starts the scheduler loop on the current runtime (once; later calls return `None`).
    /// Abort the handle to stop it.
    pub fn start_scheduler(self: &Arc<Self>) -> Option<tokio::task::AbortHandle> {
        if self.scheduler.started.swap(true, Ordering::SeqCst) {
            return None;
        }
        let app = self.clone();
        Some(tokio::spawn(async move { app.schedule_loop().await }).abort_handle())
    }

    async fn schedule_loop(self: Arc<Self>) {
        let p = &self.config.policy;
        tracing::info!(
            freezes = p.freezes.len(),
            digests = p.digests.len(),
            reminders = p.reminders().is_some(),
            "scheduler started"
        );
        loop {
            let now = self.clock.now();
            let wait = match self.fire_due().await {
                Ok(next) => earliest(next, Some(crate::clock::add(now, RECHECK))),
                Err(e) => {
                    tracing::error!(error = %e, "scheduler: the store failed; trying again");
                    Some(crate::clock::add(now, RETRY))
                }
            };
            let until = wait.unwrap_or(Timestamp::MAX);
            tokio::select! {
                _ = self.clock.sleep_until(until) => {}
                _ = self.scheduler.notify.notified() => {}
            }
        }
    }

    /// Fires everything due now (freeze announcements, digests, a lock reminder) and
    /// answers when the next firing of anything is. Safe to call from several processes
    /// at once: each firing is claimed in the store.
    pub async fn fire_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let now = self.clock.now();
        let mut next = None;
        for f in &self.config.policy.freezes {
            next = earliest(next, self.fire_freeze(f, now).await?);
        }
        for d in &self.config.policy.digests {
            next = earliest(next, self.fire_digest(d, now).await?);
        }
        next = earliest(next, self.fire_reminder(now).await?);
        Ok(next)
    }

    /// Announces a freeze window's entry and exit once; returns when this freeze next
    /// changes.
    async fn fire_freeze(
        &self,
        f: &Freeze,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let latest = self.store.latest_firing(&f.id()).await?;
        let known = latest
            .filter(|c| c.outcome == "enter")
            .and_then(|c| at_second(c.at))
            .map(|start| f.window_from(start));
        for t in f.transitions(known, now) {
            let (at, outcome) = match &t {
                Transition::Entered(w) => (w.start, "enter"),
                Transition::Exited(w) => (w.end, "exit"),
            };
            let claim = FiringClaim {
                key: f.transition_key(&t),
                schedule: f.id(),
                at: at.as_second(),
                outcome: outcome.into(),
                claimed_at: now.as_second(),
            };
            let channels = self.announce_channels();
            let freeze = f.clone();
            let now_ms = now.as_millisecond();
            let decide = Box::new(move |lock: &LockState| {
                let text = transition_text(&freeze, &t, lock, now);
                Ok(Effects::messages(
                    channels
                        .iter()
                        .map(|ch| {
                            NewMessage::post(now_ms, ch.clone(), Message::text(text.clone()))
                                .role(Role::Announcement)
                        })
                        .collect(),
                ))
            });
            if self.store.claim_firing(claim, decide).await? == Claimed::Now {
                tracing::info!(freeze = %f.name, outcome, at = %at, "freeze window announced");
                self.outbox.wake();
            }
        }
        let end = f.window_at(now).map(|w| w.end);
        Ok(earliest(end, f.next_window_after(now).map(|w| w.start)))
    }

    /// Sends a digest that is due (on time, or late within its period), or records a
    /// firing missed for longer as skipped; returns the digest's next firing.
    async fn fire_digest(
        &self,
        d: &Digest,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let last = self
            .store
            .latest_firing(&d.id())
            .await?
            .and_then(|c| at_second(c.at));
        let next = d.schedule.next_after(now);
        let decision = d.catch_up(last, now);
        let (firing, late, skipped) = match decision {
            CatchUp::Nothing => return Ok(next),
            CatchUp::Skip {
                latest,
                late_by,
                missed,
            } => {
                tracing::warn!(
                    digest = %d.id(),
                    missed,
                    latest = %latest,
                    late_by = %format_duration(late_by),
                    "digest firings missed by a period or more (corral was not running); skipped"
                );
                let claim = self.digest_claim(d, latest, "skipped", now);
                self.store
                    .claim_firing(claim, Box::new(|_: &LockState| Ok(Effects::default())))
                    .await?;
                return Ok(next);
            }
            CatchUp::OnTime { firing, skipped } => (firing, None, skipped),
            CatchUp::Late {
                firing,
                late_by,
                skipped,
            } => (firing, Some(late_by), skipped),
        };
        if skipped > 0 {
            tracing::warn!(digest = %d.id(), skipped, "older digest firings were missed; only the latest is sent");
        }
        let parts = self.digest_parts(now).await?;
        let outcome = if late.is_some() { "late" } else { "sent" };
        let claim = self.digest_claim(d, firing, outcome, now);
        let channel = d.channel.clone();
        let tz = d.schedule.time_zone().clone();
        let now_ms = now.as_millisecond();
        let decide = Box::new(move |lock: &LockState| {
            let msg = super::digest::render(lock, &parts, firing, late, now, &tz);
            Ok(Effects::messages(vec![
                NewMessage::post(now_ms, channel.clone(), msg).role(Role::Announcement),
            ]))
        });
        if self.store.claim_firing(claim, decide).await? == Claimed::Now {
            tracing::info!(digest = %d.id(), firing = %firing, outcome, "digest sent");
            self.outbox.wake();
        }
        Ok(next)
    }

    fn digest_claim(
        &self,
        d: &Digest,
        firing: Timestamp,
        outcome: &str,
        now: Timestamp,
    ) -> FiringClaim {
        FiringClaim {
            key: d.firing_key(firing),
            schedule: d.id(),
            at: firing.as_second(),
            outcome: outcome.into(),
            claimed_at: now.as_second(),
        }
    }
}

/// What the notification channels are told when a window opens or closes.
fn transition_text(f: &Freeze, t: &Transition, lock: &LockState, now: Timestamp) -> String {
    let tz = f.schedule.time_zone();
    let name = sanitize(&f.name);
    match t {
        Transition::Entered(w) => {
            let mut text = format!(
                "🧊 Freeze window `{name}` is open until {}: `/release start` and jobs are \
                 refused until then (an admin can add `--force`).",
                show_time(w.end, tz)
            );
            if began_earlier(w, now) {
                text.push_str(&format!(
                    " It began at {}, while corral was not running.",
                    show_time(w.start, tz)
                ));
            }
            text
        }
        Transition::Exited(_) => {
            let mut text = format!("🟢 Freeze window `{name}` has closed.");
            match &lock.blocked {
                Some(b) => text.push_str(&format!(
                    " Releases are still blocked by {} (a manual block; `/release unblock` lifts it).",
                    person(&b.who)
                )),
                None => text.push_str(" Releases may start again."),
            }
            text
        }
    }
}

/// Whether a window's entry is announced more than a minute after it began.
fn began_earlier(w: &Window, now: Timestamp) -> bool {
    now.duration_since(w.start) > jiff::SignedDuration::from_secs(60)
}
