//! Runs jobs: marks them running, hands the command to its domain module with a
//! progress channel, lets the reporter tell the story, and stores the outcome.
//!
//! On start-up, [`Runner::recover`] marks jobs that were running when the bot died as
//! interrupted and says so in their threads (SPEC §3).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tracing::Instrument;

use super::reporter::Reporter;
use super::{JobStatus, Outcome, ProgressTx};
use crate::command::{Command, UpgradeCmd};
use crate::config::Config;
use crate::rancher::Rancher;
use crate::slack::blocks::Message;
use crate::slack::outbox::Chat;
use crate::store::{JobRecord, Store};

/// Why a job could not run at all (as opposed to some targets failing).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct JobError(pub String);

impl JobError {
    pub fn new(text: impl Into<String>) -> Self {
        JobError(text.into())
    }
}

/// What a domain module gets to run a job.
#[derive(Clone)]
pub struct JobContext {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub job: JobRecord,
}

/// The one dispatch from a command to the module that does it.
async fn execute(
    ctx: &JobContext,
    rancher: &Rancher,
    cmd: &Command,
    progress: ProgressTx,
) -> Result<Outcome, JobError> {
    match cmd {
        Command::Upgrade(UpgradeCmd::Catalog(c)) => {
            crate::rancher::run_catalog(rancher, c, progress).await
        }
        Command::Upgrade(UpgradeCmd::Image(i)) => {
            crate::rancher::run_image(rancher, i, progress).await
        }
        Command::Deploy(d) => crate::deploy::run(ctx, d, progress).await,
        other => Err(JobError::new(format!("`{}` is not a job", other.to_text()))),
    }
}

/// Spawns and tracks job tasks.
#[derive(Clone)]
pub struct Runner {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    chat: Arc<dyn Chat>,
    /// The Rancher every job of this runner talks to (one rate limit per server).
    rancher: Rancher,
    tasks: Arc<Mutex<HashMap<i64, JoinHandle<()>>>>,
}

impl Runner {
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, chat: Arc<dyn Chat>) -> Runner {
        Runner {
            rancher: Rancher::new(&config.rancher),
            config,
            store,
            chat,
            tasks: Arc::default(),
        }
    }

    /// Starts a stored job in the background.
    pub fn spawn(&self, job: JobRecord, cmd: Command) {
        let this = self.clone();
        let id = job.id;
        let handle = tokio::spawn(
            async move { this.run(job, cmd).await }.instrument(tracing::info_span!("job", id)),
        );
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|_, h| !h.is_finished());
        tasks.insert(id, handle);
    }

    /// Waits for a job started by this process to end (CLI, tests).
    pub async fn wait(&self, id: i64) {
        let handle = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(h) = handle {
            let _ = h.await;
        }
    }

    async fn run(&self, job: JobRecord, cmd: Command) {
        let id = job.id;
        let mut reporter = Reporter::open(self.chat.clone(), self.store.clone(), job.clone()).await;
        if let Err(e) = self
            .store
            .set_job_status(id, JobStatus::Running, crate::now())
        {
            tracing::error!(job = id, error = %e, "cannot mark job running");
        }
        reporter.running().await;
        let (tx, rx) = ProgressTx::channel();
        let ctx = JobContext {
            config: self.config.clone(),
            store: self.store.clone(),
            job,
        };
        let rancher = self.rancher.clone();
        // The work runs in its own task so a panic in domain code ends as a failed job,
        // reported and stored, instead of a job left `running` until the next restart.
        let work = async move {
            match tokio::spawn(async move { execute(&ctx, &rancher, &cmd, tx).await }).await {
                Ok(result) => result,
                Err(e) => {
                    tracing::error!(job = id, error = %e, "job task panicked");
                    Err(JobError::new(
                        "corral hit an internal error while running this job; check the targets before running it again",
                    ))
                }
            }
        };
        // The reporter drains events while the work runs; it stops when the work drops
        // its sender.
        let (result, ()) = tokio::join!(work, reporter.run(rx));
        let (status, outcome) = match result {
            Ok(o) if o.ok() => (JobStatus::Succeeded, o),
            Ok(o) => (JobStatus::Failed, o),
            Err(e) => (
                JobStatus::Failed,
                Outcome {
                    summary: e.0,
                    ..Outcome::default()
                },
            ),
        };
        if let Err(e) = self.store.finish_job(id, status, &outcome, crate::now()) {
            tracing::error!(job = id, error = %e, "cannot store job outcome");
        }
        reporter.finish(status, &outcome).await;
        tracing::info!(job = id, status = %status, "job finished");
    }

    /// Marks jobs left unfinished by a previous process as interrupted, and says so in
    /// their threads. Returns how many there were.
    pub async fn recover(&self) -> usize {
        let jobs = match self.store.unfinished_jobs() {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "cannot list unfinished jobs");
                return 0;
            }
        };
        for job in &jobs {
            let outcome = Outcome {
                summary:
                    "corral stopped while this job ran; check the targets before running it again"
                        .into(),
                ..Outcome::default()
            };
            if let Err(e) =
                self.store
                    .finish_job(job.id, JobStatus::Interrupted, &outcome, crate::now())
            {
                tracing::error!(job = job.id, error = %e, "cannot mark job interrupted");
                continue;
            }
            let root = super::reporter::root_message(
                job,
                JobStatus::Interrupted,
                job.done as usize,
                job.failed as usize,
                job.total as usize,
            );
            for (channel, ts) in self.store.messages(job.id).unwrap_or_default() {
                if let Err(e) = self.chat.update(&channel, &ts, &root).await {
                    tracing::warn!(job = job.id, error = %e, "interrupted root not edited");
                }
                let note = Message::text(format!(
                    "⚠ *Interrupted*: corral restarted while this job ran ({} of {} targets had finished). Check the targets before running it again.",
                    job.done, job.total
                ));
                if let Err(e) = self.chat.post(&channel, Some(&ts), &note).await {
                    tracing::warn!(job = job.id, error = %e, "interrupted note not posted");
                }
            }
        }
        jobs.len()
    }
}
