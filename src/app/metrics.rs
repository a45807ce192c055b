//! `/metrics`: the counters and gauges corral exposes, in a registry the [`App`] owns
//! (prometheus-client), so two apps in one process (the tests) never share a count.
//!
//! [`App`]: super::App

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::lock::LockState;

/// The exposition format's content type (OpenMetrics text, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric corral keeps.
pub struct Metrics {
    registry: Registry,
    pub slack_commands: Counter,
    pub slack_events: Counter,
    pub slack_interactions: Counter,
    pub slack_rejected_signatures: Counter,
    pub slack_duplicate_events: Counter,
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
    pub fn new() -> Metrics {
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

    /// The exposition text, with the gauges read from the store's answers just now.
    pub fn render(&self, lock: Option<&LockState>, store_up: bool) -> String {
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
