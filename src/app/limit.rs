//! The per-user command rate limit for Slack (`CORRAL_SLACK_USER_RATE` commands a
//! minute, bursts of as many), kept in the store so every replica spends one budget: a
//! user whose flood is spread over three replicas by a load balancer (or by Socket Mode)
//! is let through at the configured rate, not three times it. A flood gets one friendly
//! ephemeral answer; the rest of it is acknowledged silently until the user is let
//! through again. The budget is a GCRA row per user, updated in one statement
//! ([`crate::store::Store::take_rate`]), on the app's clock.

use std::sync::Arc;

use crate::clock::SharedClock;
pub use crate::store::Admission;
use crate::store::Store;

/// The friendly answer to a flood.
pub(crate) const TOO_FAST: &str = "You are sending commands faster than corral takes them. Wait a few seconds and try again; the ones you just sent were not run.";

pub(crate) struct UserLimiter {
    per_minute: u32,
    store: Arc<dyn Store>,
    clock: SharedClock,
}

impl UserLimiter {
    /// `per_minute` commands a minute per user; 0 turns the limit off.
    pub(crate) fn new(per_minute: u32, store: Arc<dyn Store>, clock: SharedClock) -> UserLimiter {
        UserLimiter {
            per_minute,
            store,
            clock,
        }
    }

    /// Whether `user` may run a command now. A store that cannot answer lets the command
    /// through (it will meet the same store and fail with a clear answer if it is away).
    pub(crate) async fn admit(&self, user: &str) -> Admission {
        if self.per_minute == 0 {
            return Admission::Allowed;
        }
        let interval_ms = 60_000 / i64::from(self.per_minute);
        let key = format!("user:{user}");
        match self
            .store
            .take_rate(&key, self.clock.unix_ms(), interval_ms, self.per_minute)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "the command limit could not be read; letting the command through");
                Admission::Allowed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn a_flood_is_told_once_and_time_lets_the_user_back() {
        let clock = ManualClock::at_unix(1_000);
        let store = crate::store::open("sqlite::memory:").await.expect("store");
        let l = UserLimiter::new(3, store.clone(), clock.shared());
        for _ in 0..3 {
            assert_eq!(l.admit("U1").await, Admission::Allowed);
        }
        assert_eq!(l.admit("U1").await, Admission::Refused);
        assert_eq!(l.admit("U1").await, Admission::Silent);
        assert_eq!(l.admit("U1").await, Admission::Silent);
        // Someone else is not affected.
        assert_eq!(l.admit("U2").await, Admission::Allowed);
        clock.advance(Duration::from_secs(20));
        assert_eq!(l.admit("U1").await, Admission::Allowed);
        assert_eq!(
            l.admit("U1").await,
            Admission::Refused,
            "a new flood is told again"
        );
        // A second process on the same store spends the same budget.
        let other = UserLimiter::new(3, store.clone(), clock.shared());
        assert_eq!(other.admit("U1").await, Admission::Silent);
        let off = UserLimiter::new(0, store, clock.shared());
        for _ in 0..100 {
            assert_eq!(off.admit("U1").await, Admission::Allowed);
        }
    }
}
