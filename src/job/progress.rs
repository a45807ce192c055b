//! What a domain module says while a job runs.
//!
//! `rancher` and `deploy` know nothing about Slack: they send these plain events into a
//! [`ProgressTx`], and the reporter (`job::reporter`) turns them into one Slack thread —
//! a plan reply, the root message's counter, one reply per finished group, a summary.
//! Domain code never decides how often Slack is written to; the reporter does.

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// One line of a plan: a target and what will happen to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItem {
    /// The target's name as people know it (`web/api`, `host-3`).
    pub target: String,
    /// What will change, e.g. `1.2.0 → 1.3.0`; empty when skipped.
    pub change: String,
    /// Why the target is left alone (`already at 1.3.0`, `unparseable externalId`).
    pub skipped: Option<String>,
    /// What changes inside the target, line by line (a catalog upgrade's images and
    /// questions); empty for most kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<PlanDetail>,
    /// What else the plan is bound to and nobody needs to read (a digest of the compose
    /// files): a different value is a different plan.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub binds: String,
}

/// One line of what changes inside a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDetail {
    /// What kind of thing: `image`, `variable`.
    pub what: String,
    /// `added`, `removed`, `changed`, or `unknown` (it could not be compared).
    pub change: String,
    /// For people: `web: `a:1` → `a:2``.
    pub text: String,
}

/// The targets of one group (an environment, a host set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanGroup {
    pub name: String,
    pub items: Vec<PlanItem>,
}

impl PlanGroup {
    /// Targets that will really be changed (not skipped).
    pub(crate) fn active(&self) -> usize {
        self.items.iter().filter(|i| i.skipped.is_none()).count()
    }
}

/// A progress event from a running job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Progress {
    /// The plan, before anything changes. Sent once, first.
    Plan {
        title: String,
        groups: Vec<PlanGroup>,
    },
    /// A target's work began.
    TargetStarted { group: String, target: String },
    /// A target is done, well or not; `detail` carries the reason on failure
    /// (Rancher's `code: message`, a host's log tail).
    TargetFinished {
        group: String,
        target: String,
        ok: bool,
        detail: String,
    },
    /// No more targets will finish in this group.
    GroupFinished { group: String },
    /// Anything else worth one thread reply (a warning, a dry-run notice).
    Note { text: String },
}

/// The sending half given to domain code. Cheap to clone; sending never blocks and never
/// fails the job (if the reporter is gone, events are dropped: the store still has the
/// outcome).
#[derive(Debug, Clone)]
pub struct ProgressTx(mpsc::UnboundedSender<Progress>);

impl ProgressTx {
    /// A new progress channel.
    pub fn channel() -> (ProgressTx, mpsc::UnboundedReceiver<Progress>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ProgressTx(tx), rx)
    }

    /// A sink that discards everything (tests, dry computations).
    pub fn discard() -> ProgressTx {
        let (tx, _rx) = mpsc::unbounded_channel();
        ProgressTx(tx)
    }

    pub fn send(&self, event: Progress) {
        let _ = self.0.send(event);
    }

    pub(crate) fn note(&self, text: impl Into<String>) {
        self.send(Progress::Note { text: text.into() });
    }
}

/// One failed target in an outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub group: String,
    pub target: String,
    pub reason: String,
}

/// What a finished job did, as stored and as summarised in its thread.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Targets changed successfully.
    pub succeeded: usize,
    /// Targets that failed, with why.
    pub failed: Vec<Failure>,
    /// Targets left alone on purpose.
    pub skipped: usize,
    /// One line for people (`12 stacks upgraded to 2.0.0 in 3 environments`).
    pub summary: String,
    /// Domain-specific detail for the JSON API (per-target results, etc.).
    #[serde(default)]
    pub detail: serde_json::Value,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}
