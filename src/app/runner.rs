//! Runs jobs: marks them running, hands the command to its domain module with a
//! progress channel, lets the reporter tell the story, and stores the outcome.
//!
//! On start-up, [`Runner::recover`] marks jobs that were running when the bot died as
//! interrupted and says so in their threads (SPEC §3).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tracing::Instrument;

use super::dispatch::{self, Domains};
use super::outbox::Outbox;
use super::reporter::Reporter;
use crate::chat::{Chat, Message};
use crate::clock::SharedClock;
use crate::command::JobCmd;
use crate::job::{JobError, JobStatus, Outcome, ProgressTx};
use crate::store::outbox::root_key;
use crate::store::{Effects, JobChange, JobRecord, NewMessage, Role, Store, Thread};

/// What the runner needs from the app.
#[derive(Clone)]
pub struct Deps {
    pub domains: Domains,
    pub store: Arc<dyn Store>,
    pub clock: SharedClock,
    pub outbox: Outbox,
    /// Prints threads as they are written (`corral exec`).
    pub printer: Option<Arc<dyn Chat>>,
    /// The approval rules a job is checked against before its work.
    pub policy: Arc<crate::policy::Policy>,
}

/// Spawns and tracks job tasks.
#[derive(Clone)]
pub struct Runner {
    deps: Deps,
    /// Handles of the jobs this process runs, so `corral exec` and tests can wait for
    /// one. Bookkeeping only: what runs and what happened is in the store.
    tasks: Arc<Mutex<HashMap<i64, JoinHandle<()>>>>,
}

impl Runner {
    pub fn new(deps: Deps) -> Runner {
        Runner {
            deps,
            tasks: Arc::default(),
        }
    }

    /// Starts a stored job in the background.
    pub fn spawn(&self, job: JobRecord, cmd: JobCmd) {
        let this = self.clone();
        let id = job.id;
        let handle = tokio::spawn(
            async move { this.run(job, cmd).await }
                .instrument(tracing::info_span!("job", job = id)),
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

    async fn run(&self, job: JobRecord, cmd: JobCmd) {
        let id = job.id;
        let d = &self.deps;
        let before = super::approval::Before {
            policy: &d.policy,
            domains: &d.domains,
            store: d.store.as_ref(),
            now: d.clock.unix(),
            now_ms: d.clock.unix_ms(),
        };
        if super::approval::before_run(before, &job, &cmd).await == super::approval::Gate::Wait {
            d.outbox.wake();
            return;
        }
        let mut reporter = Reporter::open(
            d.store.clone(),
            d.clock.clone(),
            d.outbox.clone(),
            d.printer.clone(),
            job.clone(),
        )
        .await;
        reporter.running().await;
        let (tx, rx) = ProgressTx::channel();
        let (domains, store) = (d.domains.clone(), d.store.clone());
        // The work runs in its own task so a panic in domain code ends as a failed job,
        // reported and stored, instead of a job left `running` until the next restart.
        let work = async move {
            let task = async move { dispatch::run(&domains, store.as_ref(), &job, &cmd, tx).await };
            match tokio::spawn(task).await {
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
        // The outcome, the summary and the final root: one transaction.
        reporter.finish(status, &outcome).await;
        tracing::info!(job = id, status = %status, "job finished");
    }

    /// Marks jobs left unfinished by a previous process as interrupted, and says so in
    /// their threads. Returns how many there were.
    pub async fn recover(&self) -> usize {
        let d = &self.deps;
        let jobs = match d.store.unfinished_jobs().await {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "cannot list unfinished jobs");
                return 0;
            }
        };
        // Jobs awaiting approval survive a restart: the approval sweeper keeps them.
        let jobs: Vec<JobRecord> = jobs
            .into_iter()
            .filter(|j| j.status != JobStatus::AwaitingApproval)
            .collect();
        for job in &jobs {
            let outcome = Outcome {
                summary:
                    "corral stopped while this job ran; check the targets before running it again"
                        .into(),
                ..Outcome::default()
            };
            let now_ms = d.clock.unix_ms();
            let root = super::reporter::root_message(
                job,
                JobStatus::Interrupted,
                job.done as usize,
                job.failed as usize,
                job.total as usize,
            );
            let note = Message::text(format!(
                "⚠ *Interrupted*: corral restarted while this job ran ({} of {} targets had finished). Check the targets before running it again.",
                job.done, job.total
            ));
            let key = root_key(job.id);
            let has_root = matches!(d.store.outbox_get(&key).await, Ok(Some(_)));
            let mut messages = Vec::new();
            match (&job.channel, has_root) {
                (_, true) => messages.push(NewMessage::edit(now_ms, key.clone(), root).job(job.id)),
                (Some(ch), false) => messages.push(
                    NewMessage::post(now_ms, ch.clone(), root)
                        .keyed(key.clone())
                        .role(Role::Root)
                        .job(job.id),
                ),
                (None, false) => {}
            }
            let channel = match (&job.channel, has_root) {
                (Some(ch), _) => Some(ch.clone()),
                (None, true) => d
                    .store
                    .outbox_get(&key)
                    .await
                    .ok()
                    .flatten()
                    .map(|r| r.channel),
                (None, false) => None,
            };
            if let Some(ch) = channel
                && !messages.is_empty()
            {
                messages.push(
                    NewMessage::reply(now_ms, ch, Thread::Key(key), note)
                        .role(Role::Note)
                        .job(job.id),
                );
            }
            if let Err(e) = d
                .store
                .change_job(
                    job.id,
                    JobChange::Finish {
                        status: JobStatus::Interrupted,
                        outcome,
                    },
                    d.clock.unix(),
                    Effects::messages(messages),
                )
                .await
            {
                tracing::error!(job = job.id, error = %e, "cannot mark job interrupted");
                continue;
            }
        }
        d.outbox.wake();
        jobs.len()
    }
}
