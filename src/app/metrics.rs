//! `/metrics`: the counters and gauges corral exposes, in a registry the [`App`] owns
//! (prometheus-client), so two apps in one process (the tests) never share a count.
//!
//! [`App`]: super::App

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::lock::LockState;
use crate::store::OutboxStats;

/// The exposition format's content type (OpenMetrics text, which Prometheus scrapes).
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric corral keeps.
pub struct Metrics {
    registry: Registry,
    pub slack_commands: Counter,
    pub slack_events: Counter,
    pub slack_interactions: Counter,
    pub slack_rejected_signatures: Counter,
    pub slack_duplicate_events: Counter,
    /// Slack commands refused by the per-user rate limit.
    pub slack_rate_limited_commands: Counter,
    /// Calls made by the outbox's sender, by method and outcome.
    outbox_sends: Family<Vec<(String, String)>, Counter>,
    /// 429s received.
    pub outbox_rate_limited: Counter,
    /// Seconds of `Retry-After` windows honoured.
    pub outbox_retry_after_seconds: Counter<f64, AtomicU64>,
    /// Rows (and edits) given up after the give-up age.
    pub outbox_dead: Counter,
    outbox_depth: Gauge,
    outbox_oldest_seconds: Gauge,
    release_running: Gauge,
    release_blocked: Gauge,
    store_up: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Long by design: registers every family, each with its name and help text, in the
    /// order the exposition lists them.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::default();
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        Metrics {
            slack_commands: counter(
                &mut registry,
                "corral_slack_commands",
                "Slash-command requests received",
            ),
            slack_events: counter(
                &mut registry,
                "corral_slack_events",
                "Events API requests received",
            ),
            slack_interactions: counter(
                &mut registry,
                "corral_slack_interactions",
                "Interaction requests received",
            ),
            slack_rejected_signatures: counter(
                &mut registry,
                "corral_slack_rejected_signatures",
                "Slack requests refused for their signature",
            ),
            slack_duplicate_events: counter(
                &mut registry,
                "corral_slack_duplicate_events",
                "Events API retries ignored",
            ),
            slack_rate_limited_commands: counter(
                &mut registry,
                "corral_slack_rate_limited_commands",
                "Slack commands refused by the per-user rate limit",
            ),
            outbox_sends: {
                let f = Family::<Vec<(String, String)>, Counter>::default();
                registry.register(
                    "corral_outbox_sends",
                    "Calls the outbox made, by method and outcome",
                    f.clone(),
                );
                f
            },
            outbox_rate_limited: counter(
                &mut registry,
                "corral_outbox_rate_limited",
                "429 answers received",
            ),
            outbox_retry_after_seconds: {
                let c = Counter::<f64, AtomicU64>::default();
                registry.register(
                    "corral_outbox_retry_after_seconds",
                    "Seconds spent waiting on Retry-After",
                    c.clone(),
                );
                c
            },
            outbox_dead: counter(
                &mut registry,
                "corral_outbox_dead",
                "Messages given up after the give-up age",
            ),
            outbox_depth: gauge(
                &mut registry,
                "corral_outbox_depth",
                "Messages waiting to be delivered",
            ),
            outbox_oldest_seconds: gauge(
                &mut registry,
                "corral_outbox_oldest_seconds",
                "Age of the oldest message waiting",
            ),
            release_running: gauge(
                &mut registry,
                "corral_release_running",
                "1 while a release holds the lock",
            ),
            release_blocked: gauge(
                &mut registry,
                "corral_release_blocked",
                "1 while releases are blocked",
            ),
            store_up: gauge(&mut registry, "corral_store_up", "1 when the store answers"),
            registry,
        }
    }

    /// Counts one call of the outbox.
    pub(crate) fn outbox_send(&self, method: &str, outcome: &str) {
        self.outbox_sends
            .get_or_create(&vec![
                ("method".to_string(), method.to_string()),
                ("outcome".to_string(), outcome.to_string()),
            ])
            .inc();
    }

    /// Sets the outbox gauges from the store's numbers at `now_ms`.
    pub(crate) fn set_outbox(&self, stats: &OutboxStats, now_ms: i64) {
        self.outbox_depth.set(stats.depth as i64);
        let age = stats.oldest_ms.map_or(0, |t| ((now_ms - t) / 1000).max(0));
        self.outbox_oldest_seconds.set(age);
    }

    /// The exposition text, with the gauges read from the store's answers just now.
    pub(crate) fn render(&self, lock: Option<&LockState>, store_up: bool) -> String {
        if let Some(state) = lock {
            self.release_running.set(i64::from(state.running.is_some()));
            self.release_blocked.set(i64::from(state.blocked.is_some()));
        }
        self.store_up.set(i64::from(store_up));
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.push_str("# metrics could not be encoded\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_what_they_were() {
        let m = Metrics::new();
        m.slack_commands.inc();
        let text = m.render(Some(&LockState::default()), true);
        for line in [
            "corral_slack_commands_total 1",
            "corral_slack_events_total 0",
            "corral_slack_interactions_total 0",
            "corral_slack_rejected_signatures_total 0",
            "corral_slack_duplicate_events_total 0",
            "corral_release_running 0",
            "corral_release_blocked 0",
            "corral_store_up 1",
            "corral_outbox_depth 0",
            "corral_outbox_rate_limited_total 0",
            "corral_outbox_dead_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn two_registries_do_not_share_counts() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.slack_events.inc();
        assert_eq!(b.slack_events.get(), 0);
    }
}
