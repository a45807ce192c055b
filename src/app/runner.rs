//! Runs jobs: claims each with a lease for this replica, marks it running, hands the
//! command to its domain module with a progress channel, lets the reporter tell the
//! story, and stores the outcome.
//!
//! A job whose replica died (its lease ran out, see [`super::replica`]) is ended as
//! interrupted by whichever replica notices first, and said so in its thread (SPEC §3):
//! [`Runner::interrupt_expired`].

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
use crate::store::{Effects, JobRecord, NewMessage, Role, Store, Thread};

/// What the runner needs from the app.
#[derive(Clone)]
pub(crate) struct Deps {
    pub domains: Domains,
    pub store: Arc<dyn Store>,
    pub clock: SharedClock,
    pub outbox: Outbox,
    /// Prints threads as they are written (`corral exec`).
    pub printer: Option<Arc<dyn Chat>>,
    /// The approval rules a job is checked against before its work.
    pub policy: Arc<crate::policy::Policy>,
    /// This process's replica id: the owner of the leases of the jobs it runs.
    pub replica: String,
    /// How long a job's lease holds without a heartbeat (`CORRAL_JOB_LEASE`).
    pub lease: std::time::Duration,
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
    pub(crate) fn new(deps: Deps) -> Runner {
        Runner {
            deps,
            tasks: Arc::default(),
        }
    }

    /// Starts a stored job in the background.
    /// The domain handles jobs run with (the digest reads Rancher through the same rate
    /// limits).
    pub(crate) fn domains(&self) -> &dispatch::Domains {
        &self.deps.domains
    }

    pub(crate) fn spawn(&self, job: JobRecord, cmd: JobCmd) {
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
        // The lease first: a job this replica cannot claim is another's (or over).
        if !self.claim(id).await {
            return;
        }
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
        // Every write of the job from here on needs this replica's lease: once another
        // replica has reported the job interrupted, they are refused and the work stops.
        let mut reporter = Reporter::open_leased(
            d.store.clone(),
            d.clock.clone(),
            d.outbox.clone(),
            d.printer.clone(),
            job.clone(),
            &d.replica,
        )
        .await;
        reporter.running().await;
        let (tx, rx) = ProgressTx::channel();
        // The work runs in its own task so a panic in domain code ends as a failed job,
        // reported and stored, instead of a job left `running` until the next restart.
        let (domains, store) = (d.domains.clone(), d.store.clone());
        let task =
            tokio::spawn(
                async move { dispatch::run(&domains, store.as_ref(), &job, &cmd, tx).await },
            );
        reporter.stop_work_when_lost(task.abort_handle());
        let work = async move { task_result(id, task.await) };
        // The reporter drains events while the work runs; it stops when the work drops
        // its sender.
        let (result, ()) = tokio::join!(work, reporter.run(rx));
        if reporter.is_lost() {
            tracing::warn!(job = id, "job stopped: another replica ended it");
            return;
        }
        let (status, outcome) = status_of(result);
        // The outcome, the summary and the final root: one transaction.
        reporter.finish(status, &outcome).await;
        tracing::info!(job = id, status = %status, "job finished");
    }

    /// Claims job `id` with a lease for this replica; false (logged) when another replica
    /// holds it, it ended, or the database cannot be asked.
    async fn claim(&self, id: i64) -> bool {
        let d = &self.deps;
        let until = d.clock.unix_ms().saturating_add(millis(d.lease));
        match d.store.claim_job(id, &d.replica, until).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(
                    job = id,
                    "job not run: another replica holds it or it ended"
                );
                false
            }
            Err(e) => {
                // The database is away: running without a lease would let another
                // replica report the job while it runs. Say so in its thread later, once
                // the lease-less job is found expired.
                tracing::error!(job = id, error = %e, "cannot claim the job; not run");
                false
            }
        }
    }

    /// Ends every job whose lease ran out (its replica died, or lost the database for
    /// longer than the lease) as interrupted, and says so in its thread: the root edited
    /// to `⚠ interrupted` and a note, written in the transaction that ends the job. Of
    /// several replicas doing this at once, the store lets one end each job. Jobs are
    /// reported, not taken over (README: "When a replica dies"). Returns how many this
    /// replica ended.
    pub async fn interrupt_expired(&self) -> usize {
        let d = &self.deps;
        let now_ms = d.clock.unix_ms();
        let lease_ms = millis(d.lease);
        let jobs = match d.store.expired_jobs(now_ms, lease_ms).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for jobs whose lease ran out");
                return 0;
            }
        };
        let mut ended = 0;
        for job in &jobs {
            let outcome = Outcome {
                summary:
                    "corral stopped while this job ran; check the targets before running it again"
                        .into(),
                ..Outcome::default()
            };
            let messages = self.interrupted_messages(job, now_ms).await;
            match d
                .store
                .interrupt_job(
                    job.id,
                    now_ms,
                    lease_ms,
                    outcome,
                    Effects::messages(messages),
                )
                .await
            {
                Ok(true) => {
                    tracing::warn!(
                        job = job.id,
                        "job interrupted: its replica stopped renewing its lease"
                    );
                    ended += 1;
                }
                Ok(false) => {}
                Err(e) => tracing::error!(job = job.id, error = %e, "cannot mark job interrupted"),
            }
        }
        if ended > 0 {
            d.outbox.wake();
        }
        ended
    }

    /// The root edit (or post, for a job whose root was never written) and the note that
    /// tell a job's thread it was interrupted.
    async fn interrupted_messages(&self, job: &JobRecord, now_ms: i64) -> Vec<NewMessage> {
        let d = &self.deps;
        let root = super::reporter::root_message(
            job,
            JobStatus::Interrupted,
            job.done as usize,
            job.failed as usize,
            job.total as usize,
        );
        let note = Message::text(format!(
            "⚠ *Interrupted*: the corral process running this job stopped ({} of {} targets had finished). Check the targets before running it again.",
            job.done, job.total
        ));
        let key = root_key(job.id);
        let stored_root = d.store.outbox_get(&key).await.ok().flatten();
        let mut messages = Vec::new();
        let channel = match (&job.channel, &stored_root) {
            (_, Some(row)) => {
                messages.push(NewMessage::edit(now_ms, key.clone(), root).job(job.id));
                Some(job.channel.clone().unwrap_or_else(|| row.channel.clone()))
            }
            (Some(ch), None) => {
                messages.push(
                    NewMessage::post(now_ms, ch.clone(), root)
                        .keyed(key.clone())
                        .role(Role::Root)
                        .job(job.id),
                );
                Some(ch.clone())
            }
            (None, None) => None,
        };
        if let Some(ch) = channel {
            messages.push(
                NewMessage::reply(now_ms, ch, Thread::Key(key), note)
                    .role(Role::Note)
                    .job(job.id),
            );
        }
        messages
    }
}

/// Milliseconds of a duration, saturating.
pub(crate) fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The work task's end as the job's result: aborted (another replica ended the job) and
/// panicked become failures that say so.
fn task_result(
    id: i64,
    joined: Result<Result<Outcome, JobError>, tokio::task::JoinError>,
) -> Result<Outcome, JobError> {
    match joined {
        Ok(result) => result,
        Err(e) if e.is_cancelled() => Err(JobError::new(
            "stopped: another corral replica ended this job",
        )),
        Err(e) => {
            tracing::error!(job = id, error = %e, "job task panicked");
            Err(JobError::new(
                "corral hit an internal error while running this job; check the targets before running it again",
            ))
        }
    }
}

/// The stored status and outcome of a finished job's result.
fn status_of(result: Result<Outcome, JobError>) -> (JobStatus, Outcome) {
    match result {
        Ok(o) if o.ok() => (JobStatus::Succeeded, o),
        Ok(o) => (JobStatus::Failed, o),
        Err(e) => (
            JobStatus::Failed,
            Outcome {
                summary: e.0,
                ..Outcome::default()
            },
        ),
    }
}
