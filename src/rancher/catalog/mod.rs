//! `/upgrade <catalog>:<template>:<version>`: go-cowpoke's job, done properly
//! (reference/cowpoke.md §5, reference/rancher-api.md §7–§9, §13).
//!
//! 1. **Plan** ([`plan`]). Resolve the template and the wanted version (by its version
//!    string, as go-cowpoke's `templateVersion`, or by catalog folder id) and fetch its
//!    compose files: once from the global catalogs when they have the template, else in
//!    each environment with that environment's `X-API-Project-Id`, so a catalog added to
//!    one environment only is found there (and only there). In every environment the
//!    key can see that matches `CORRAL_ENVIRONMENTS` and `--env`, list the stacks of that
//!    template (every page) and classify each ([`super::version::classify`]). The plan
//!    is the first thing reported.
//! 2. **Execute** ([`execute`]). Every stack to upgrade goes through the one Cattle
//!    upgrade lifecycle ([`super::upgrade`]): upgrade → `upgraded` → finishupgrade, with
//!    bounded parallelism, each under its own deadline, waiting on one stack-list read
//!    per environment per poll interval. A stack that fails is undone by
//!    `CORRAL_ROLLBACK_ON_TIMEOUT` (rollback, else cancel) and reported with Rancher's
//!    message; the others go on.
//!
//! `--dry-run` stops after the plan: nothing that changes Rancher is sent.

mod diff;
mod execute;
mod plan;

pub(crate) use plan::revision_of_link;

use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::Config as RancherConfig;
use super::client::Client;
use crate::command::CatalogUpgrade;
use crate::job::{Outcome, ProgressTx};

/// Settings of one run (from [`super::Config`]).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Environments whose name matches one of these (CORRAL_ENVIRONMENTS).
    pub environments: Vec<Regex>,
    /// Stacks upgraded at once, over all environments.
    pub parallelism: usize,
    /// How long one stack may take from its upgrade request to `upgraded`.
    pub upgrade_timeout: Duration,
    /// How often a waiting environment is read.
    pub poll_interval: Duration,
    /// CORRAL_ROLLBACK_ON_TIMEOUT: undo a failed upgrade by rollback (else cancel).
    pub rollback_on_timeout: bool,
}

impl Settings {
    pub(crate) fn new(cfg: &RancherConfig) -> Settings {
        Settings {
            environments: cfg.environments.clone(),
            parallelism: cfg.parallelism,
            upgrade_timeout: cfg.upgrade_timeout,
            poll_interval: cfg.poll_interval,
            rollback_on_timeout: cfg.rollback_on_timeout,
        }
    }
}

/// One stack's line in the result (`Outcome.detail.stacks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackResult {
    pub environment: String,
    pub environment_id: String,
    pub name: String,
    pub id: String,
    /// The stack's externalId before the run.
    pub external_id: String,
    /// `planned` (dry run), `skipped`, `upgraded`, `failed`.
    pub status: String,
    /// The version string reached (go-cowpoke's `upgradedTo`): set once the stack is
    /// `upgraded`, even if finishing it then failed.
    pub upgraded_to: String,
    /// Why it failed or was skipped; empty when upgraded.
    pub error: String,
}

/// A failure before any stack was touched, with the HTTP status the go-cowpoke endpoint
/// answers for it (`Outcome.detail.error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanError {
    pub status: u16,
    pub msg: String,
}

/// `Outcome.detail` of a catalog upgrade.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    pub catalog: String,
    pub template: String,
    /// The version asked for.
    pub version: String,
    /// The template-version id resolved (`library:web:12`).
    pub template_version_id: String,
    pub dry_run: bool,
    pub error: Option<PlanError>,
    /// Environments that matched the filters.
    pub environments: Vec<String>,
    pub stacks: Vec<StackResult>,
}

impl Detail {
    pub fn from_outcome(o: &Outcome) -> Option<Detail> {
        serde_json::from_value(o.detail.clone()).ok()
    }
}

/// Runs one catalog upgrade: plans, reports the plan, and (unless dry run) executes it.
pub(crate) async fn run(
    client: &Client,
    settings: &Settings,
    cmd: &CatalogUpgrade,
    progress: &ProgressTx,
) -> Outcome {
    let plan = match plan::make(client, settings, cmd).await {
        Ok(p) => p,
        Err(failure) => return failure,
    };
    plan.report(cmd, progress);
    let start = plan.start(cmd);
    if cmd.dry_run {
        return plan.dry_run(start, progress);
    }
    execute::run(client, settings, cmd, &plan, start, progress).await
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
