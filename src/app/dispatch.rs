//! The one dispatch from a job to the domain module that does it. Exhaustive over
//! [`JobCmd`]: a command that is not a job cannot get here.

use crate::command::JobCmd;
use crate::config::Config;
use crate::job::{JobError, Outcome, ProgressTx};
use crate::store::{JobRecord, Store};

/// What the domain modules get, built once from [`Config`]: Rancher with its rate
/// limits (owned here, so two apps in one process never share them), deploy's config.
#[derive(Debug, Clone)]
pub(crate) struct Domains {
    pub rancher: crate::rancher::Rancher,
    pub deploy: crate::deploy::Config,
}

impl Domains {
    pub(crate) fn new(config: &Config) -> Domains {
        Domains {
            rancher: crate::rancher::Rancher::new(&config.rancher),
            deploy: config.deploy.clone(),
        }
    }
}

/// Runs `cmd` (stored as `job`) in its domain; domain code reports through `progress`.
pub(crate) async fn run(
    domains: &Domains,
    store: &dyn Store,
    job: &JobRecord,
    cmd: &JobCmd,
    progress: ProgressTx,
) -> Result<Outcome, JobError> {
    match cmd {
        JobCmd::Catalog(c) => crate::rancher::run_catalog(&domains.rancher, c, progress).await,
        JobCmd::Image(i) => crate::rancher::run_image(&domains.rancher, i, progress).await,
        JobCmd::Deploy(d) => crate::deploy::run(&domains.deploy, store, job.id, d, progress).await,
    }
}
