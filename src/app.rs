//! The pipeline: every door (Slack HTTP, Socket Mode, the HTTP API, `corral exec`)
//! turns its input into a [`Request`] and calls [`App::handle`].
//!
//! `handle` is the one place where policy decides: may this user run the command, does
//! the lock allow it. Lock commands are answered at once; upgrades and deploys become
//! jobs, stored before the caller gets its answer, and run by the job runner afterwards.

use std::sync::Arc;

use crate::command::{Command, Family, OVERVIEW, ReleaseCmd, sanitize};
use crate::config::Config;
use crate::job::JobStatus;
use crate::job::runner::Runner;
use crate::lock::{self, Actor, LockAction, LockState, Refusal};
use crate::slack::blocks::Message;
use crate::slack::outbox::Chat;
use crate::store::{AuditEntry, JobRecord, NewJob, Store};

/// Which door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Slack,
    Api,
    Cli,
    /// releasestatus's `/start /stop /block /unblock`.
    ReleaseStatus,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Slack => "slack",
            Source::Api => "api",
            Source::Cli => "cli",
            Source::ReleaseStatus => "releasestatus",
        }
    }
}

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

/// The identity a request acts as. Only Slack vouches for Slack user ids; a name given
/// through any other door is namespaced by that door (`api:ci-bot`, `cli:alice`,
/// `releasestatus:bob`), so it can never pass for a Slack user, an admin or the holder of
/// a release someone started in Slack.
pub fn identity(source: Source, user: &str) -> String {
    match source {
        Source::Slack => user.to_string(),
        other => {
            let prefix = other.as_str();
            if user == prefix {
                return user.to_string();
            }
            match user.strip_prefix(prefix).and_then(|r| r.strip_prefix(':')) {
                Some(_) => user.to_string(),
                None => format!("{prefix}:{user}"),
            }
        }
    }
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
    pub runner: Runner,
    /// Background deliveries (announcements), so `corral exec` can wait for them.
    pub background: tokio_util::task::TaskTracker,
}

impl App {
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, chat: Arc<dyn Chat>) -> Arc<App> {
        let runner = Runner::new(config.clone(), store.clone(), chat.clone());
        Arc::new(App {
            config,
            store,
            chat,
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
        match &req.command {
            Command::Release(r) => self.release(&req, r).await,
            Command::Upgrade(_) | Command::Deploy(_) => self.start_job(&req, family).await,
            Command::Help(_) => Reply::new(Outcome::Ok, Visibility::Ephemeral, family.usage()),
        }
    }

    async fn release(&self, req: &Request, cmd: &ReleaseCmd) -> Reply {
        let action = match cmd {
            ReleaseCmd::Status => {
                return match self.store.lock_state() {
                    Ok(s) => Reply::new(Outcome::Ok, Visibility::Ephemeral, s.describe()),
                    Err(e) => Reply::error(e),
                };
            }
            ReleaseCmd::History { n } => return self.history(*n),
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
        match self.change_lock(&action, &actor, req.source).await {
            Ok(Ok(text)) => Reply::new(Outcome::Ok, Visibility::InChannel, text),
            Ok(Err(refusal)) => Reply::refused(refusal.explain()),
            Err(e) => Reply::error(e),
        }
    }

    /// Applies a lock change and, when it came from outside Slack, announces it in the
    /// notification channels. Returns the in-channel text, or the refusal.
    pub async fn change_lock(
        &self,
        action: &LockAction,
        actor: &Actor,
        source: Source,
    ) -> Result<Result<String, Refusal>, crate::store::StoreError> {
        let now = crate::now();
        let change = self
            .store
            .change_lock(action, source.as_str(), &actor.who, &mut |s| {
                lock::apply(s, action, actor, now)
            })?;
        let (before, _after) = match change {
            Ok(c) => c,
            Err(r) => {
                tracing::info!(action = action.name(), who = %actor.who, refusal = ?r, "lock change refused");
                return Ok(Err(r));
            }
        };
        let who = lock::person(&actor.who);
        let reason = match action.reason() {
            "" => String::new(),
            r => format!(": {}", sanitize(r)),
        };
        let text = match action {
            LockAction::Start { .. } => format!("🚀 {who} started a release{reason}"),
            LockAction::Stop { force } => match before.running.as_ref() {
                Some(h) if *force && h.who != actor.who => format!(
                    "🛑 {who} force-stopped the release started by {}",
                    lock::person(&h.who)
                ),
                _ => format!("✅ {who} finished the release"),
            },
            LockAction::Block { .. } => format!("⛔ {who} blocked releases{reason}"),
            LockAction::Unblock => format!("🟢 {who} unblocked releases"),
        };
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

    fn history(&self, n: usize) -> Reply {
        match self.store.lock_history(n) {
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
                        lock::when(r.at),
                        r.action,
                        forced,
                        lock::person(&r.actor),
                        reason,
                        r.source
                    ));
                }
                Reply::new(Outcome::Ok, Visibility::Ephemeral, text)
            }
        }
    }

    /// The lock gate: refuses a job while releases are blocked or someone else holds the
    /// release, unless forced (which is audited). Runs inside the job's transaction.
    fn gate(req: &Request, state: &LockState) -> Result<Vec<AuditEntry>, String> {
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
            None => Ok(Vec::new()),
            Some(text) if req.command.forced() => Ok(vec![AuditEntry {
                at: crate::now(),
                actor: req.user.clone(),
                action: "lock-gate --force".into(),
                detail: format!("{} despite: {text}", req.command.to_text()),
                source: req.source.as_str().into(),
            }]),
            Some(text) => Err(text),
        }
    }

    async fn start_job(&self, req: &Request, family: Family) -> Reply {
        // A manifest URL outside the allow-list is bad input: refused before any job,
        // thread or audit line exists.
        if let Command::Deploy(d) = &req.command {
            let allow = &self.config.deploy.allow;
            if !crate::deploy::allowed(allow, &d.manifest_url) {
                return Reply::refused(sanitize(&crate::deploy::not_allowed_text(
                    "The manifest",
                    &d.manifest_url,
                    allow,
                )));
            }
        }
        let kind = match &req.command {
            Command::Upgrade(crate::command::UpgradeCmd::Catalog(_)) => "upgrade-catalog",
            Command::Upgrade(crate::command::UpgradeCmd::Image(_)) => "upgrade-image",
            _ => family.name(),
        };
        // Threads live where the command was typed; jobs from outside Slack go to the
        // notification channel (the first one; the others get the announcement).
        let channel = req
            .channel
            .clone()
            .or_else(|| self.config.channels.first().cloned());
        let new = NewJob {
            kind: kind.to_string(),
            command: req.command.to_text(),
            requested_by: req.user.clone(),
            source: req.source.as_str().to_string(),
            channel,
        };
        let job = match self
            .store
            .create_job_gated(&new, crate::now(), &mut |state| Self::gate(req, state))
        {
            Ok(Ok(j)) => j,
            Ok(Err(refusal)) => return Reply::refused(refusal),
            Err(e) => return Reply::error(e),
        };
        self.runner.spawn(job.clone(), req.command.clone());
        let mut reply = Reply::new(
            Outcome::Ok,
            Visibility::Ephemeral,
            format!(
                "Job #{} {}: `{}` — follow it in the thread.",
                job.id,
                JobStatus::Queued,
                sanitize(&job.command)
            ),
        );
        reply.job = Some(job);
        reply
    }
}
