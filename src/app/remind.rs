//! Lock reminders: a release held longer than the policy's `remind_after` mentions its
//! holder, then again every `remind_every`, all in one thread per release — under the
//! lock's announcement when corral posted one ([`super::scheduler::announce_key`]), else
//! under the first reminder — with how long it has been held, the reason and a **Stop
//! release** button (action family `release`) that only the holder or an admin may use.
//!
//! Each reminder is claimed (`remind:<start>:<n>`) in a transaction that also checks the
//! release is still the one it reminds of, so none is sent once the release stopped,
//! through whichever door.

use jiff::Timestamp;

use super::interact::Click;
use super::scheduler::{announce_key, at_second};
use super::{App, lock_decision};
use crate::chat::{Block, Button, Message};
use crate::lock::{Actor, Holder, LockAction, LockState, Refusal};
use crate::schedule::Reminders;
use crate::store::{Claimed, Effects, FiringClaim, NewMessage, Role, StoreError, Thread};
use crate::text::{format_duration, person, sanitize};

/// The Stop release button's `action_id`; its value is the release's start (Unix seconds),
/// so a button left on an old reminder never stops a newer release.
pub const STOP_ACTION: &str = "release.stop";

/// The key of the first reminder when no announcement exists to thread under.
pub fn reminder_key(since: i64, who: &str) -> String {
    format!("release:{since}:{who}:reminder")
}

/// The schedule id of a release's reminders (claims `remind:<start>:<n>`).
fn schedule_id(since: i64) -> String {
    format!("remind:{since}")
}

/// Whether `lock` still holds the release `h` started.
fn same_release(lock: &LockState, h: &Holder) -> bool {
    lock.running
        .as_ref()
        .is_some_and(|r| r.since == h.since && r.who == h.who)
}

impl App {
    /// Sends the reminder due now for the running release, if any; returns when the next
    /// one is due.
    pub(super) async fn fire_reminder(
        &self,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let Some(rem) = self.config.policy.reminders() else {
            return Ok(None);
        };
        let lock = self.store.lock_state().await?;
        let Some(h) = lock.running else {
            return Ok(None);
        };
        let Some(started) = at_second(h.since) else {
            return Ok(None);
        };
        let next = rem.next_after(started, now).map(|(_, t)| t);
        let id = schedule_id(h.since);
        let last = self
            .store
            .latest_firing(&id)
            .await?
            .and_then(|c| at_second(c.at))
            .and_then(|t| rem.latest_at_or_before(started, t));
        let Some(n) = rem.due(started, last, now) else {
            return Ok(next);
        };
        let Some(channel) = self.announce_channels().into_iter().next() else {
            tracing::warn!(
                "a lock reminder is due but no notification channel is set (CORRAL_CHANNEL)"
            );
            return Ok(next);
        };
        let thread = self.reminder_thread(h.since, &h.who).await?;
        let at = rem.at(started, n).unwrap_or(now);
        let claim = FiringClaim {
            key: Reminders::key(started, n),
            schedule: id,
            at: at.as_second(),
            outcome: "reminded".into(),
            claimed_at: now.as_second(),
        };
        let now_ms = now.as_millisecond();
        let held = h.clone();
        let decide = Box::new(move |lock: &LockState| {
            if !same_release(lock, &held) {
                return Err("the release stopped".to_string());
            }
            let msg = reminder_message(&held, now);
            let row = match &thread {
                Some(key) => {
                    NewMessage::reply(now_ms, channel.clone(), Thread::Key(key.clone()), msg)
                }
                None => NewMessage::post(now_ms, channel.clone(), msg)
                    .keyed(reminder_key(held.since, &held.who))
                    .role(Role::Announcement),
            };
            Ok(Effects::messages(vec![row]))
        });
        match self.store.claim_firing(claim, decide).await? {
            Claimed::Now => {
                tracing::info!(holder = %h.who, n, "lock reminder sent");
                self.outbox.wake();
            }
            Claimed::Before => {}
            Claimed::Declined(why) => tracing::debug!(why, "lock reminder not sent"),
        }
        Ok(next)
    }

    /// The thread a release's reminders go in: its announcement, else its first reminder
    /// (`None`: this reminder is the first, and posts).
    async fn reminder_thread(&self, since: i64, who: &str) -> Result<Option<String>, StoreError> {
        for key in [announce_key(since, who), reminder_key(since, who)] {
            if self.store.outbox_get(&key).await?.is_some() {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// The Stop release button: the holder, or an admin, stops the release the reminder
    /// was about (and only that one). Everyone else is refused, ephemerally.
    pub(super) async fn click_release(&self, click: &Click) -> String {
        if click.action_id != STOP_ACTION {
            return "This button no longer does anything.".into();
        }
        let Ok(since) = click.value.trim().parse::<i64>() else {
            return "That button could not be read; use `/release stop`.".into();
        };
        let user = crate::door::identity(click.source, &click.user);
        let policy = &self.config.policy;
        let admin = policy.may_force(&user);
        let now = self.clock.unix();
        let now_ms = self.clock.unix_ms();
        let holder = match self.store.lock_state().await {
            Ok(s) => s.running.filter(|h| h.since == since),
            Err(e) => return format!("Sorry, corral could not do that: {e}"),
        };
        let thread = match &holder {
            Some(h) => match self.reminder_thread(since, &h.who).await {
                Ok(t) => t,
                Err(e) => return format!("Sorry, corral could not do that: {e}"),
            },
            None => None,
        };
        let channel = self.announce_channels().into_iter().next();
        let actor = Actor {
            who: user.clone(),
            may_force: admin,
            holder_only_stop: true,
        };
        let source = click.source;
        let decide = Box::new(move |state: &LockState| {
            let Some(h) = state.running.as_ref().filter(|h| h.since == since) else {
                return Err(Refusal::NotRunning);
            };
            let force = h.who != actor.who;
            let action = LockAction::Stop { force };
            let mut d = lock_decision(state, &action, &actor, source, now, Default::default())?;
            let text = super::lock_change_text(&action, &actor.who, state);
            if let (Some(key), Some(ch)) = (&thread, &channel) {
                d.effects.messages.push(NewMessage::reply(
                    now_ms,
                    ch.clone(),
                    Thread::Key(key.clone()),
                    Message::text(format!("{text} (with the Stop release button)")),
                ));
            }
            Ok(d)
        });
        let result = self.store.change_lock(decide).await;
        self.outbox.wake();
        self.scheduler.wake();
        match result {
            Ok(Ok(_)) => {
                tracing::info!(who = %user, since, "release stopped with the button");
                "The release is stopped.".into()
            }
            Ok(Err(Refusal::NotRunning)) => "That release has already stopped.".into(),
            Ok(Err(Refusal::ForceNotAllowed)) => {
                let holder = self.store.lock_state().await.ok().and_then(|s| s.running);
                format!(
                    "Only {} or an admin can stop this release.",
                    holder.map_or_else(|| "its holder".to_string(), |h| person(&h.who))
                )
            }
            Ok(Err(r)) => r.explain(),
            Err(e) => format!("Sorry, corral could not do that: {e}"),
        }
    }
}

/// One reminder: the holder mentioned, how long the release has been held, its reason,
/// and the Stop release button.
pub fn reminder_message(h: &Holder, now: Timestamp) -> Message {
    let held = now.as_second().saturating_sub(h.since).max(0);
    let held = format_duration(std::time::Duration::from_secs(held as u64));
    let reason = if h.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", sanitize(&h.reason))
    };
    Message::text(format!(
        "⏰ {}, your release{reason} has been running for {held}. Stop it when you are done \
         (`/release stop`, or the button).",
        person(&h.who)
    ))
    .with_block(Block::Buttons {
        block_id: None,
        buttons: vec![Button {
            action_id: STOP_ACTION.into(),
            text: "Stop release".into(),
            value: h.since.to_string(),
            danger: true,
            ..Button::default()
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reminder_names_holder_reason_and_time_held() {
        let h = Holder {
            who: "U0ALICE".into(),
            reason: "1.4 <!channel>".into(),
            since: 1_000,
        };
        let m = reminder_message(&h, Timestamp::from_second(1_000 + 2 * 3600 + 60).unwrap());
        assert!(m.text.contains("<@U0ALICE>"), "{}", m.text);
        assert!(m.text.contains("2h1m"), "{}", m.text);
        assert!(!m.text.contains("<!channel>"), "{}", m.text);
        assert_eq!(
            m.blocks,
            vec![Block::Buttons {
                block_id: None,
                buttons: vec![Button {
                    action_id: "release.stop".into(),
                    text: "Stop release".into(),
                    value: "1000".into(),
                    danger: true,
                    ..Button::default()
                }]
            }]
        );
    }
}
