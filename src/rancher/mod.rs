//! Rancher 1.6: catalog stack upgrades (`/upgrade catalog:template:version`, go-cowpoke's
//! job) and labelled service image upgrades (`/upgrade image`, rancher-service-updater's
//! job). Knows nothing about Slack: it reports through [`crate::job::ProgressTx`].

pub mod client;
pub mod image;
pub mod model;
pub mod service;

pub use client::{Client, ClientOptions, Filter, RancherError};

use crate::command::{CatalogUpgrade, ImageUpgrade};
use crate::job::runner::{JobContext, JobError};
use crate::job::{Outcome, ProgressTx};

fn require_rancher(ctx: &JobContext) -> Result<(), JobError> {
    let r = &ctx.config.rancher;
    if r.url.is_none() || r.access_key.is_none() || r.secret_key.is_none() {
        return Err(JobError::new(
            "Rancher is not configured: set RANCHER_URL, RANCHER_ACCESS_KEY and RANCHER_SECRET_KEY",
        ));
    }
    Ok(())
}

/// Runs `/upgrade catalog:template:version`.
pub async fn run_catalog(
    ctx: &JobContext,
    _cmd: &CatalogUpgrade,
    _progress: ProgressTx,
) -> Result<Outcome, JobError> {
    require_rancher(ctx)?;
    Err(JobError::new("catalog upgrades are not built yet"))
}

/// Runs `/upgrade image <ref>` (see [`service`]).
pub async fn run_image(
    ctx: &JobContext,
    cmd: &ImageUpgrade,
    progress: ProgressTx,
) -> Result<Outcome, JobError> {
    require_rancher(ctx)?;
    let settings = service::Settings::new(&ctx.config.rancher, cmd)?;
    let client = client::Client::from_config(&ctx.config.rancher)
        .map_err(|e| JobError::new(e.to_string()))?;
    service::run(&client, cmd, &settings, progress).await
}
