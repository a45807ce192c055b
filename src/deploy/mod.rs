//! Deploys: stretcher's manifest format and steps (`/deploy`, `corral agent`).
//! Knows nothing about Slack: it reports through [`crate::job::ProgressTx`].

pub mod extract;
pub mod hooks;
pub mod log;
pub mod manifest;
pub mod source;
pub mod steps;
pub mod sync;

use crate::command::DeployCmd;
use crate::job::runner::{JobContext, JobError};
use crate::job::{Outcome, ProgressTx};

/// Runs `/deploy <manifest-url>`.
pub async fn run(
    ctx: &JobContext,
    cmd: &DeployCmd,
    _progress: ProgressTx,
) -> Result<Outcome, JobError> {
    if !ctx
        .config
        .deploy
        .allow
        .iter()
        .any(|prefix| cmd.manifest_url.starts_with(prefix.as_str()))
    {
        return Err(JobError::new(format!(
            "{} is not allowed: manifest URLs must start with one of CORRAL_DEPLOY_ALLOW ({})",
            cmd.manifest_url,
            if ctx.config.deploy.allow.is_empty() {
                "empty".to_string()
            } else {
                ctx.config.deploy.allow.join(", ")
            }
        )));
    }
    Err(JobError::new("deploys are not built yet"))
}
