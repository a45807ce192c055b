//! This process as one replica among several on one store: its heartbeat, the lease
//! sweep and pruning, one background loop ([`App::start_replica`]).
//!
//! Every tick (a sixth of `CORRAL_JOB_LEASE`, at most 5 s) the loop
//! 1. writes this replica's heartbeat (its row in `replicas`, which `corral check`
//!    lists) and, in the same call, renews the lease of every job this replica runs to
//!    now + the lease;
//! 2. ends the jobs whose lease ran out as interrupted, saying so in their threads
//!    ([`super::runner::Runner::interrupt_expired`]);
//! 3. once an hour, prunes what the retention (`CORRAL_STORE_RETENTION`) lets go.
//!
//! So a replica killed right after a heartbeat has its jobs reported at most the lease
//! plus one tick later. The first tick runs at once: a replica starting after a crash
//! reports what the crash cut off as soon as those leases are over. All times are the
//! app's [`crate::clock::Clock`]; the replicas' clocks should agree (NTP): skew between
//! hosts adds to, or takes from, the lease.

use std::sync::Arc;
use std::time::Duration;

use super::App;
use super::runner::millis;

/// How often pruning runs.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The loop's period for a lease: a sixth of it, between 50 ms and 5 s.
pub(crate) fn tick(lease: Duration) -> Duration {
    (lease / 6).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

/// One tick: heartbeat and lease renewal, then the sweep. Returns how many jobs this
/// replica ended as interrupted.
pub(crate) async fn beat(app: &App) -> usize {
    let now_ms = app.clock.unix_ms();
    let until = now_ms.saturating_add(millis(app.config.replicas.job_lease));
    if let Err(e) = app.store.heartbeat(&app.replica, now_ms, until).await {
        tracing::warn!(error = %e, "heartbeat failed; the leases of this replica's jobs are not renewed");
    }
    app.runner.interrupt_expired().await
}

/// Deletes what the retention lets go: delivered messages and other finished outbox rows
/// older than the retention, remembered delivery keys older than the retention but never
/// inside the dedupe window ([`crate::store::DEDUPE_WINDOW`]).
pub(crate) async fn prune(app: &App) {
    let now = app.clock.now();
    let retention = app.config.replicas.retention;
    let before_ms = now.as_millisecond().saturating_sub(millis(retention));
    let keep_seen = retention.max(crate::store::DEDUPE_WINDOW);
    let seen_before = now
        .as_second()
        .saturating_sub(i64::try_from(keep_seen.as_secs()).unwrap_or(i64::MAX));
    match app.store.prune(before_ms, seen_before).await {
        Ok(p) => tracing::info!(
            messages = p.messages,
            seen = p.seen,
            other = p.other,
            "pruned rows older than the retention"
        ),
        Err(e) => tracing::warn!(error = %e, "pruning failed; it is tried again in an hour"),
    }
}

/// The loop (see the module's doc); runs until the app's background work is closed.
pub(super) async fn run(app: Arc<App>) {
    let tick = tick(app.config.replicas.job_lease);
    let mut next_prune = app.clock.now();
    loop {
        beat(&app).await;
        if app.clock.now() >= next_prune {
            prune(&app).await;
            next_prune = crate::clock::add(app.clock.now(), PRUNE_EVERY);
        }
        app.clock.sleep(tick).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_a_sixth_of_the_lease_within_bounds() {
        assert_eq!(tick(Duration::from_secs(30)), Duration::from_secs(5));
        assert_eq!(tick(Duration::from_secs(600)), Duration::from_secs(5));
        assert_eq!(tick(Duration::from_secs(3)), Duration::from_millis(500));
        assert_eq!(tick(Duration::from_millis(60)), Duration::from_millis(50));
    }
}
