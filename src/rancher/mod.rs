//! Rancher 1.6: catalog stack upgrades (`/upgrade catalog:template:version`, go-cowpoke's
//! job) and labelled service image upgrades (`/upgrade image`, rancher-service-updater's
//! job). Knows nothing about Slack: it reports through [`crate::job::ProgressTx`].

pub mod catalog;
pub mod client;
mod config;
pub mod image;
pub mod model;
pub mod service;
pub mod version;

pub use client::{Client, ClientOptions, Filter, RancherError};
pub use config::Config;

use crate::command::{CatalogUpgrade, ImageUpgrade};
use crate::job::{JobError, Outcome, ProgressTx};

fn require_rancher(r: &Config) -> Result<(), JobError> {
    if r.url.is_none() || r.access_key.is_none() || r.secret_key.is_none() {
        return Err(JobError::new(
            "Rancher is not configured: set RANCHER_URL, RANCHER_ACCESS_KEY and RANCHER_SECRET_KEY",
        ));
    }
    Ok(())
}

/// Runs `/upgrade catalog:template:version` (see [`catalog`]). Failures of single
/// stacks, and of the plan itself (no such template, no environments), are in the
/// returned [`Outcome`], with per-stack results as [`catalog::Detail`] in
/// `Outcome.detail`; `Err` only when Rancher is not configured at all.
pub async fn run_catalog(
    cfg: &Config,
    cmd: &CatalogUpgrade,
    progress: ProgressTx,
) -> Result<Outcome, JobError> {
    require_rancher(cfg)?;
    let client = Client::from_config(cfg).map_err(|e| JobError::new(e.to_string()))?;
    let settings = catalog::Settings {
        environments: cfg.environments.clone(),
        parallelism: cfg.parallelism,
        upgrade_timeout: cfg.upgrade_timeout,
        poll_interval: cfg.poll_interval,
    };
    Ok(catalog::run(&client, &settings, cmd, &progress).await)
}

/// Runs `/upgrade image <ref>` (see [`service`]).
pub async fn run_image(
    cfg: &Config,
    cmd: &ImageUpgrade,
    progress: ProgressTx,
) -> Result<Outcome, JobError> {
    require_rancher(cfg)?;
    let settings = service::Settings::new(cfg, cmd)?;
    let client = client::Client::from_config(cfg).map_err(|e| JobError::new(e.to_string()))?;
    service::run(&client, cmd, &settings, progress).await
}
