//! The one clock. Everything that compares times or waits for one (lock age, expiry,
//! schedules, signature windows, pacing timers) asks a [`Clock`] handed to it, never the
//! system directly, so tests run hours of schedules in milliseconds with a
//! [`ManualClock`].
//!
//! Deadlines on network I/O (a Rancher call that must answer within 30 s) are not "times"
//! in this sense: they bound real work and stay on tokio's timers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

/// A future that completes at a point in time.
pub(crate) type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Tells the time and waits for it.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
    /// Completes once `now() >= at`.
    fn sleep_until(&self, at: Timestamp) -> Sleep;
}

/// The clock every part of corral shares.
pub type SharedClock = Arc<dyn Clock>;

impl dyn Clock {
    /// Unix seconds now.
    pub fn unix(&self) -> i64 {
        self.now().as_second()
    }

    /// Unix milliseconds now.
    pub fn unix_ms(&self) -> i64 {
        self.now().as_millisecond()
    }

    /// Completes after `d` of this clock's time.
    pub(crate) fn sleep(&self, d: Duration) -> Sleep {
        self.sleep_until(add(self.now(), d))
    }
}

/// `t + d`, saturating at the largest timestamp.
pub(crate) fn add(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// The system's clock (production).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        Box::pin(async move {
            // Re-check after waking: the wall clock may have been stepped meanwhile.
            loop {
                let left = at.duration_since(Timestamp::now());
                if left <= jiff::SignedDuration::ZERO {
                    return;
                }
                let left = Duration::try_from(left).unwrap_or(Duration::from_secs(1));
                tokio::time::sleep(left.min(Duration::from_secs(3600))).await;
            }
        })
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that only moves when told to (tests). Sleepers wake as soon as the time they
/// wait for is reached by [`ManualClock::set`] or [`ManualClock::advance`].
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<Timestamp>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        let (tx, _) = watch::channel(start);
        ManualClock { now: Arc::new(tx) }
    }

    /// A clock standing at this many Unix seconds.
    pub fn at_unix(secs: i64) -> ManualClock {
        ManualClock::new(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    /// Moves the clock to `t` (never backwards) and wakes who waited for it.
    pub fn set(&self, t: Timestamp) {
        self.now.send_if_modified(|now| {
            let moved = t > *now;
            if moved {
                *now = t;
            }
            moved
        });
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let t = add(*self.now.borrow(), d);
        self.set(t);
    }

    /// This clock as the shared kind.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            while *rx.borrow_and_update() < at {
                if rx.changed().await.is_err() {
                    // The clock is gone: nothing will ever move it again.
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_moved() {
        let clock = ManualClock::at_unix(1_000);
        let shared = clock.shared();
        assert_eq!(shared.unix(), 1_000);
        let sleeper = tokio::spawn(shared.sleep(Duration::from_secs(60)));
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(59));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken")
            .expect("no panic");
        assert_eq!(shared.unix(), 1_060);
        // Never backwards.
        clock.set(Timestamp::from_second(5).unwrap());
        assert_eq!(shared.unix(), 1_060);
        // A time already passed completes at once.
        tokio::time::timeout(Duration::from_secs(1), shared.sleep(Duration::ZERO))
            .await
            .expect("immediate");
    }

    #[tokio::test]
    async fn system_clock_sleeps_briefly() {
        let c = system();
        let before = c.unix_ms();
        c.sleep(Duration::from_millis(20)).await;
        assert!(c.unix_ms() - before >= 20);
        assert_eq!(add(Timestamp::MAX, Duration::from_secs(1)), Timestamp::MAX);
    }
}
