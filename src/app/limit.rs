//! The per-user command rate limit for Slack (`CORRAL_SLACK_USER_RATE` commands a
//! minute, bursts of as many): a keyed governor limiter on the app's clock. A flood gets
//! one friendly ephemeral answer; the rest of it is acknowledged silently until the user
//! is let through again.
//!
//! In memory on purpose: it protects this process from a flood, it is not a decision
//! (several replicas each let a user through at the same rate).

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock as GovernorClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::clock::SharedClock;

/// The app's clock as governor's: time since the epoch.
#[derive(Clone)]
struct AppClock(SharedClock);

impl GovernorClock for AppClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.unix_ms().max(0) as u64)
    }
}

// `Duration` is governor's own `Reference`; make sure of it at compile time.
const _: fn() = || {
    fn is_reference<T: Reference>() {}
    is_reference::<Duration>();
};

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, AppClock, NoOpMiddleware<Duration>>;

/// What to do with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Over the limit: answer with [`TOO_FAST`] (the first refusal of a flood).
    Refused,
    /// Over the limit and already told: acknowledge and say nothing.
    Silent,
}

/// The friendly answer to a flood.
pub const TOO_FAST: &str = "You are sending commands faster than corral takes them. Wait a few seconds and try again; the ones you just sent were not run.";

pub struct UserLimiter {
    limiter: Option<Limiter>,
    told: Mutex<HashSet<String>>,
}

impl UserLimiter {
    /// `per_minute` commands a minute per user; 0 turns the limit off.
    pub fn new(per_minute: u32, clock: SharedClock) -> UserLimiter {
        let limiter = NonZeroU32::new(per_minute).map(|n| {
            RateLimiter::new(
                Quota::per_minute(n),
                DefaultKeyedStateStore::default(),
                AppClock(clock),
            )
        });
        UserLimiter {
            limiter,
            told: Mutex::new(HashSet::new()),
        }
    }

    pub fn admit(&self, user: &str) -> Admission {
        let Some(l) = &self.limiter else {
            return Admission::Allowed;
        };
        let mut told = self.told.lock().unwrap_or_else(|p| p.into_inner());
        if l.check_key(&user.to_string()).is_ok() {
            told.remove(user);
            // Keep the key set from growing without bound.
            if l.len() > 10_000 {
                l.retain_recent();
            }
            return Admission::Allowed;
        }
        if told.insert(user.to_string()) {
            Admission::Refused
        } else {
            Admission::Silent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn a_flood_is_told_once_and_time_lets_the_user_back() {
        let clock = ManualClock::at_unix(1_000);
        let l = UserLimiter::new(3, clock.shared());
        for _ in 0..3 {
            assert_eq!(l.admit("U1"), Admission::Allowed);
        }
        assert_eq!(l.admit("U1"), Admission::Refused);
        assert_eq!(l.admit("U1"), Admission::Silent);
        assert_eq!(l.admit("U1"), Admission::Silent);
        // Someone else is not affected.
        assert_eq!(l.admit("U2"), Admission::Allowed);
        clock.advance(Duration::from_secs(20));
        assert_eq!(l.admit("U1"), Admission::Allowed);
        assert_eq!(
            l.admit("U1"),
            Admission::Refused,
            "a new flood is told again"
        );
        let off = UserLimiter::new(0, clock.shared());
        for _ in 0..100 {
            assert_eq!(off.admit("U1"), Admission::Allowed);
        }
    }
}
