//! Rancher 1.6: catalog stack upgrades (`/upgrade catalog:template:version`, go-cowpoke's
//! job) and labelled service image upgrades (`/upgrade image`, rancher-service-updater's
//! job), both through one Cattle upgrade lifecycle ([`upgrade`]). Knows nothing about
//! Slack: it reports through [`crate::job::ProgressTx`].
//!
//! Entry points: [`Rancher`] (built once from the configuration by its owner, the app),
//! [`run_catalog`], [`run_image`], and [`Rancher::client`] for anything else that talks
//! to the configured server (`corral check`).

pub mod catalog;
pub mod client;
mod config;
pub mod image;
pub mod model;
pub mod outdated;
pub mod service;
pub mod upgrade;
pub mod version;

use std::sync::Arc;

pub use client::{Client, ClientOptions, Filter, RancherError, RateLimits};
pub use config::Config;

use crate::command::{CatalogUpgrade, ImageUpgrade};
use crate::job::{JobError, Outcome, ProgressTx};

/// corral's Rancher: the configuration and the per-server rate limits every job and
/// check shares. Built once by its owner; cheap to clone (clones share the limits).
/// Two `Rancher`s never share a budget: there is no process-wide state.
#[derive(Debug, Clone)]
pub struct Rancher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    limits: RateLimits,
}

impl Rancher {
    pub fn new(config: &Config) -> Rancher {
        Rancher {
            inner: Arc::new(Inner {
                config: config.clone(),
                limits: RateLimits::default(),
            }),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A client for the configured server, drawing from this `Rancher`'s rate limit for
    /// it; an error when Rancher is not configured.
    pub fn client(&self) -> Result<Client, RancherError> {
        Client::from_config(&self.inner.config, &self.inner.limits)
    }

    fn job_client(&self) -> Result<Client, JobError> {
        let r = self.config();
        if r.url.is_none() || r.access_key.is_none() || r.secret_key.is_none() {
            return Err(JobError::new(
                "Rancher is not configured: set RANCHER_URL, RANCHER_ACCESS_KEY and RANCHER_SECRET_KEY",
            ));
        }
        self.client().map_err(|e| JobError::new(e.to_string()))
    }
}

/// Runs `/upgrade catalog:template:version` (see [`catalog`]). Failures of single
/// stacks, and of the plan itself (no such template, no environments), are in the
/// returned [`Outcome`], with per-stack results as [`catalog::Detail`] in
/// `Outcome.detail`; `Err` only when Rancher is not configured at all.
pub(crate) async fn run_catalog(
    rancher: &Rancher,
    cmd: &CatalogUpgrade,
    progress: ProgressTx,
) -> Result<Outcome, JobError> {
    let client = rancher.job_client()?;
    let settings = catalog::Settings::new(rancher.config());
    Ok(catalog::run(&client, &settings, cmd, &progress).await)
}

/// Runs `/upgrade image <ref>` (see [`service`]).
pub(crate) async fn run_image(
    rancher: &Rancher,
    cmd: &ImageUpgrade,
    progress: ProgressTx,
) -> Result<Outcome, JobError> {
    let client = rancher.job_client()?;
    let settings = service::Settings::new(rancher.config(), cmd)?;
    service::run(&client, cmd, &settings, progress).await
}
