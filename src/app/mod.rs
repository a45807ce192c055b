//! Orchestration: the pipeline every door calls, and what runs jobs.
//!
//! Every door (Slack HTTP, Socket Mode, the HTTP API, `corral exec`) turns its input into
//! a [`Request`] and calls [`App::handle`], the one place where policy decides: may this
//! user run the command, does the lock allow it. Lock commands are answered at once;
//! upgrades and deploys become jobs, stored before the caller gets its answer, and run by
//! the [`runner`] afterwards ([`dispatch`] maps a job to its domain call; the
//! [`reporter`] tells its story as one thread).
//!
//! `App` is the composition of the layers below: the store, the chat, the clock, the
//! metrics registry and the domain handles, built once by the binary (or a test).

pub mod dispatch;
pub mod metrics;
pub mod reporter;
pub mod runner;

use std::sync::Arc;

use crate::chat::{Chat, Message};
use crate::clock::{self, SharedClock};
use crate::command::{Command, JobCmd, OVERVIEW, ReleaseCmd};
use crate::config::Config;
pub use crate::door::{Source, identity};
use crate::job::JobStatus;
use crate::lock::{self, Actor, LockAction, LockState, Refusal};
use crate::store::{
    AuditEntry, Effects, JobRecord, LockDecision, LockHistoryEntry, NewJob, Store, StoreError,
};
use crate::text::{self, sanitize};
use metrics::Metrics;
use runner::Runner;

/// One command from one person through one door.
#[derive(Debug, Clone)]
pub struct Request {
    pub command: Command,
    /// Slack user id, API caller name, `$USER`.
    pub user: String,
    pub source: Source,
    /// The Slack channel it was typed in (Slack only).
    pub channel: Option<String>,
}

/// Who sees a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Only the requester (refusals, status, help, errors).
    Ephemeral,
    /// The whole channel (lock changes).
    InChannel,
}

/// What kind of answer a request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done, or information given.
    Ok,
    /// Refused by the lock or the policy; nothing changed.
    Refused,
    /// The request itself was bad; nothing changed.
    Invalid,
    /// corral failed (store unreachable); nothing changed.
    Error,
}

/// The answer to a request, for any door to render.
#[derive(Debug, Clone)]
pub struct Reply {
    pub outcome: Outcome,
    pub visibility: Visibility,
    pub text: String,
    /// The job created, for job commands.
    pub job: Option<JobRecord>,
}

impl Reply {
    fn new(outcome: Outcome, visibility: Visibility, text: impl Into<String>) -> Reply {
        Reply {
            outcome,
            visibility,
            text: text.into(),
            job: None,
        }
    }

    pub fn invalid(text: impl Into<String>) -> Reply {
        Reply::new(Outcome::Invalid, Visibility::Ephemeral, text)
    }

    fn refused(text: impl Into<String>) -> Reply {
        Reply::new(Outcome::Refused, Visibility::Ephemeral, text)
    }

    fn error(e: impl std::fmt::Display) -> Reply {
        tracing::error!(error = %e, "request failed");
        Reply::new(
            Outcome::Error,
            Visibility::Ephemeral,
            format!("Sorry, corral could not do that: {e}"),
        )
    }
}

/// Everything the pipeline needs, shared by all doors.
pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub chat: Arc<dyn Chat>,
    pub clock: SharedClock,
    pub metrics: Metrics,
    pub runner: Runner,
    /// Background deliveries (announcements), so `corral exec` can wait for them.
    pub background: tokio_util::task::TaskTracker,
}

impl App {
    /// The app on the system clock.
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, chat: Arc<dyn Chat>) -> Arc<App> {
        App::with_clock(config, store, chat, clock::system())
    }

    /// The app on a given clock (tests drive time with [`clock::ManualClock`]).
    pub fn with_clock(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        chat: Arc<dyn Chat>,
        clock: SharedClock,
    ) -> Arc<App> {
        let runner = Runner::new(runner::Deps {
            domains: dispatch::Domains::new(&config),
            store: store.clone(),
            chat: chat.clone(),
            clock: clock.clone(),
        });
        Arc::new(App {
            config,
            store,
            chat,
            clock,
            metrics: Metrics::new(),
            runner,
            background: tokio_util::task::TaskTracker::new(),
        })
    }

    /// The pipeline. Never panics on input; every answer says what happened.
    pub async fn handle(&self, mut req: Request) -> Reply {
        req.user = identity(req.source, &req.user);
        let Some(family) = req.command.family() else {
            return Reply::new(Outcome::Ok, Visibility::Ephemeral, OVERVIEW);
        };
        if let Command::Help(_) = req.command {
            return Reply::new(Outcome::Ok, Visibility::Ephemeral, family.usage());
        }
        let policy = &self.config.policy;
        if !policy.may_run(&req.user, family) {
            return Reply::refused(format!(
                "You are not allowed to run `/{}` (policy file: permissions.{}).",
                family.name(),
                family.name()
            ));
        }
        if req.command.forced() && !policy.may_force(&req.user) {
            return Reply::refused("Only admins may use `--force`.");
        }
        if let Some(job) = req.command.job() {
            return self.start_job(&req, job).await;
        }
        match &req.command {
            Command::Release(r) => self.release(&req, r).await,
            _ => Reply::new(Outcome::Ok, Visibility::Ephemeral, family.usage()),
        }
    }

    async fn release(&self, req: &Request, cmd: &ReleaseCmd) -> Reply {
        let action = match cmd {
            ReleaseCmd::Status => {
                return match self.store.lock_state().await {
                    Ok(s) => Reply::new(Outcome::Ok, Visibility::Ephemeral, s.describe()),
                    Err(e) => Reply::error(e),
                };
            }
            ReleaseCmd::History { n } => return self.history(*n).await,
            ReleaseCmd::Start { reason } => LockAction::Start {
                reason: reason.clone(),
            },
            ReleaseCmd::Stop { force } => LockAction::Stop { force: *force },
            ReleaseCmd::Block { reason } => LockAction::Block {
                reason: reason.clone(),
            },
            ReleaseCmd::Unblock => {
                // SPEC §8: unblocking is an admin's call once a policy names admins.
                let policy = &self.config.policy;
                if policy.configured && !policy.is_admin(&req.user) {
                    return Reply::refused(
                        "Only admins may unblock releases (policy file: roles.admins).",
                    );
                }
                LockAction::Unblock
            }
        };
        let actor = Actor {
            who: req.user.clone(),
            may_force: self.config.policy.may_force(&req.user),
            holder_only_stop: req.source != Source::ReleaseStatus,
        };
        match self.change_lock(action, actor, req.source).await {
            Ok(Ok(text)) => Reply::new(Outcome::Ok, Visibility::InChannel, text),
            Ok(Err(refusal)) => Reply::refused(refusal.explain()),
            Err(e) => Reply::error(e),
        }
    }

    /// Applies a lock change and, when it came from outside Slack, announces it in the
    /// notification channels. Returns the in-channel text, or the refusal.
    pub async fn change_lock(
        &self,
        action: LockAction,
        actor: Actor,
        source: Source,
    ) -> Result<Result<String, Refusal>, StoreError> {
        let now = self.clock.unix();
        let decide_action = action.clone();
        let decide_actor = actor.clone();
        let change = self
            .store
            .change_lock(Box::new(move |state| {
                lock_decision(state, &decide_action, &decide_actor, source, now)
            }))
            .await?;
        let (before, _written) = match change {
            Ok(c) => c,
            Err(r) => {
                tracing::info!(action = action.name(), who = %actor.who, refusal = ?r, "lock change refused");
                return Ok(Err(r));
            }
        };
        let text = lock_change_text(&action, &actor.who, &before);
        tracing::info!(action = action.name(), who = %actor.who, source = source.as_str(), "lock changed");
        if source != Source::Slack {
            self.announce(format!("{text} (via {})", source.as_str()));
        }
        Ok(Ok(text))
    }

    /// Posts `text` to every notification channel, in the background.
    pub fn announce(&self, text: String) {
        let chat = self.chat.clone();
        let channels = self.config.channels.clone();
        self.background.spawn(async move {
            for ch in channels {
                if let Err(e) = chat.post(&ch, None, &Message::text(text.clone())).await {
                    tracing::warn!(channel = %ch, error = %e, "announcement not delivered");
                }
            }
        });
    }

    async fn history(&self, n: usize) -> Reply {
        match self.store.lock_history(n).await {
            Err(e) => Reply::error(e),
            Ok(rows) if rows.is_empty() => {
                Reply::new(Outcome::Ok, Visibility::Ephemeral, "No lock changes yet.")
            }
            Ok(rows) => {
                let mut text = format!("*Last {} lock changes*\n", rows.len());
                for r in rows {
                    let reason = if r.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" — {}", sanitize(&r.reason))
                    };
                    let forced = if r.forced { " (forced)" } else { "" };
                    text.push_str(&format!(
                        "• {} {}{} by {}{} via {}\n",
                        text::when(r.at),
                        r.action,
                        forced,
                        text::person(&r.actor),
                        reason,
                        r.source
                    ));
                }
                Reply::new(Outcome::Ok, Visibility::Ephemeral, text)
            }
        }
    }

    async fn start_job(&self, req: &Request, job: JobCmd) -> Reply {
        // A manifest URL outside the allow-list is bad input: refused before any job,
        // thread or audit line exists.
        if let JobCmd::Deploy(d) = &job {
            let allow = &self.config.deploy.allow;
            if !crate::deploy::allowed(allow, &d.manifest_url) {
                return Reply::refused(sanitize(&crate::deploy::not_allowed_text(
                    "The manifest",
                    &d.manifest_url,
                    allow,
                )));
            }
        }
        // Threads live where the command was typed; jobs from outside Slack go to the
        // notification channel (the first one; the others get the announcement).
        let channel = req
            .channel
            .clone()
            .or_else(|| self.config.channels.first().cloned());
        let now = self.clock.unix();
        let new = NewJob {
            kind: job.kind(),
            command: req.command.to_text(),
            requested_by: req.user.clone(),
            source: req.source,
            channel,
            now,
        };
        let gate_req = GateRequest {
            user: req.user.clone(),
            source: req.source,
            forced: req.command.forced(),
            command: req.command.to_text(),
            now,
        };
        let record = match self
            .store
            .create_job(new, Box::new(move |state| gate(&gate_req, state)))
            .await
        {
            Ok(Ok(j)) => j,
            Ok(Err(refusal)) => return Reply::refused(refusal),
            Err(e) => return Reply::error(e),
        };
        self.runner.spawn(record.clone(), job);
        let mut reply = Reply::new(
            Outcome::Ok,
            Visibility::Ephemeral,
            format!(
                "Job #{} {}: `{}` — follow it in the thread.",
                record.id,
                JobStatus::Queued,
                sanitize(&record.command)
            ),
        );
        reply.job = Some(record);
        reply
    }
}

/// The pure lock decision run inside the store's transaction: the state table, plus the
/// history row and (for a forced stop of someone else's release) the audit line.
fn lock_decision(
    state: &LockState,
    action: &LockAction,
    actor: &Actor,
    source: Source,
    now: i64,
) -> Result<LockDecision, Refusal> {
    let next = lock::apply(state, action, actor, now)?;
    let forced_over = match (action, &state.running) {
        (LockAction::Stop { force: true }, Some(h)) if h.who != actor.who => Some(h.who.clone()),
        _ => None,
    };
    let mut effects = Effects::default();
    if let Some(holder) = &forced_over {
        effects.audit.push(AuditEntry {
            at: now,
            actor: actor.who.clone(),
            action: "release.stop --force".into(),
            detail: format!("stopped the release held by {holder}"),
            source,
        });
    }
    Ok(LockDecision {
        state: next,
        history: LockHistoryEntry {
            at: now,
            actor: actor.who.clone(),
            action: action.name().into(),
            reason: action.reason().into(),
            source,
            forced: forced_over.is_some(),
        },
        effects,
    })
}

/// The in-channel sentence for a lock change that was made.
fn lock_change_text(action: &LockAction, who: &str, before: &LockState) -> String {
    let person = text::person(who);
    let reason = match action.reason() {
        "" => String::new(),
        r => format!(": {}", sanitize(r)),
    };
    match action {
        LockAction::Start { .. } => format!("🚀 {person} started a release{reason}"),
        LockAction::Stop { force } => match before.running.as_ref() {
            Some(h) if *force && h.who != who => format!(
                "🛑 {person} force-stopped the release started by {}",
                text::person(&h.who)
            ),
            _ => format!("✅ {person} finished the release"),
        },
        LockAction::Block { .. } => format!("⛔ {person} blocked releases{reason}"),
        LockAction::Unblock => format!("🟢 {person} unblocked releases"),
    }
}

/// What the lock gate needs to know about a job request (owned, for the store).
struct GateRequest {
    user: String,
    source: Source,
    forced: bool,
    command: String,
    now: i64,
}

/// The lock gate: refuses a job while releases are blocked or someone else holds the
/// release, unless forced (which is audited). Runs inside the job's transaction.
fn gate(req: &GateRequest, state: &LockState) -> Result<Effects, String> {
    let refusal = if let Some(b) = &state.blocked {
        Some(Refusal::Blocked(b.clone()).explain())
    } else {
        state
            .running
            .as_ref()
            .filter(|h| h.who != req.user)
            .map(|h| {
                format!(
                    "{} It must be stopped first, or an admin can add `--force`.",
                    Refusal::AlreadyRunning(h.clone()).explain()
                )
            })
    };
    match refusal {
        None => Ok(Effects::default()),
        Some(text) if req.forced => Ok(Effects {
            audit: vec![AuditEntry {
                at: req.now,
                actor: req.user.clone(),
                action: "lock-gate --force".into(),
                detail: format!("{} despite: {text}", req.command),
                source: req.source,
            }],
        }),
        Some(text) => Err(text),
    }
}
