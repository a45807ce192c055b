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
//!
//! Nothing here calls the chat: what corral says later is written to the store's outbox
//! in the transaction of the change that causes it, and the [`outbox`] sender (started
//! with [`App::start_sender`]) delivers it.

pub mod approval;
pub mod card;
pub mod deny;
pub mod digest;
pub mod dispatch;
pub mod freeze;
pub mod groups;
pub mod interact;
pub mod limit;
pub mod metrics;
pub mod outbox;
pub mod remind;
pub mod replica;
pub mod reporter;
pub mod runner;
pub mod scheduler;

use std::sync::Arc;

use crate::chat::{Chat, Message};
use crate::clock::{self, SharedClock};
use crate::command::{Command, JobCmd, OVERVIEW, ReleaseCmd};
use crate::config::Config;
pub use crate::door::{Source, identity};
use crate::job::JobStatus;
use crate::lock::{self, Actor, Frozen, LockAction, LockState, Refusal};
use crate::store::{
    AuditEntry, Effects, JobRecord, LockDecision, LockHistoryEntry, NewJob, NewMessage, Store,
    StoreError, Thread,
};
use crate::text::{self, sanitize};
use limit::{Admission, UserLimiter};
use metrics::Metrics;
use outbox::Outbox;
use runner::Runner;

/// Where the answer to a mention (or a click) goes: its thread, or the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    pub channel: String,
    /// The thread to answer in-channel replies in: a Slack `ts`, or the key of a post
    /// still on its way (the playground's mentions).
    pub thread: Thread,
    /// Who sees ephemeral answers.
    pub user: String,
}

/// Where messages go, from the configuration: Slack's Web API with a bot token, else the
/// incoming webhook, else nowhere (`None`: the caller picks a log or a printer).
pub fn destination(config: &Config) -> std::io::Result<Option<Arc<dyn Chat>>> {
    let s = &config.slack;
    Ok(match (&s.bot_token, &s.webhook_url) {
        (Some(token), _) => Some(Arc::new(
            crate::slack::web::SlackChat::new(&s.api_url, token)?
                .with_deadline(s.timeout)
                .with_limits(crate::slack::web::slack_limits(
                    s.post_interval,
                    s.update_interval,
                )),
        )),
        (None, Some(url)) => Some(Arc::new(crate::slack::webhook::WebhookChat::new(
            url.clone(),
            s.webhook_username.clone(),
            s.timeout,
        )?)),
        (None, None) => None,
    })
}

/// The channel name jobs and announcements use when only an incoming webhook is
/// configured (the webhook decides the real channel).
pub const WEBHOOK_CHANNEL: &str = "webhook";

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
    /// Already written to the outbox (with the change it reports).
    written: bool,
}

impl Reply {
    fn new(outcome: Outcome, visibility: Visibility, text: impl Into<String>) -> Reply {
        Reply {
            outcome,
            visibility,
            text: text.into(),
            job: None,
            written: false,
        }
    }

    pub(crate) fn invalid(text: impl Into<String>) -> Reply {
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
    /// The destination the outbox's sender delivers to (Slack, a webhook, the log).
    pub chat: Arc<dyn Chat>,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub runner: Runner,
    /// Wakes the sender; waits for the outbox to drain.
    pub outbox: Outbox,
    /// Background work `corral serve` waits for at shutdown.
    pub background: tokio_util::task::TaskTracker,
    /// Wakes the scheduler (a lock change moves the next reminder).
    pub scheduler: scheduler::Wake,
    /// This process as a replica on the store (heartbeats, job leases).
    pub replica: crate::store::Replica,
    limiter: UserLimiter,
    /// Slack user groups' members (roles naming `S…`).
    pub groups: groups::Groups,
    /// Opens modals (the Deny reason), with the bot token; none without one.
    modals: Option<Arc<dyn crate::chat::Modals>>,
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
        App::with_parts(config, store, chat, clock, None)
    }

    /// Everything given: `printer` also sees every job thread as it is written
    /// (`corral exec` prints it).
    pub fn with_parts(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        chat: Arc<dyn Chat>,
        clock: SharedClock,
        printer: Option<Arc<dyn Chat>>,
    ) -> Arc<App> {
        let outbox = Outbox::new();
        let replica = crate::store::Replica::this_process(clock.unix_ms());
        let runner = Runner::new(runner::Deps {
            domains: dispatch::Domains::new(&config),
            store: store.clone(),
            clock: clock.clone(),
            outbox: outbox.clone(),
            printer,
            policy: Arc::new(config.policy.clone()),
            replica: replica.id.clone(),
            lease: config.replicas.job_lease,
        });
        let limiter = UserLimiter::new(config.slack.user_rate, store.clone(), clock.clone());
        let web = config.slack.bot_token.as_ref().and_then(|token| {
            crate::slack::web::SlackChat::new(&config.slack.api_url, token)
                .map(|c| Arc::new(c.with_deadline(config.slack.timeout)))
                .ok()
        });
        let directory = web.clone().map(|c| c as Arc<dyn crate::chat::Directory>);
        let modals = web.map(|c| c as Arc<dyn crate::chat::Modals>);
        let groups = groups::Groups::new(directory, clock.clone());
        Arc::new(App {
            config,
            store,
            chat,
            clock,
            metrics: Arc::new(Metrics::new()),
            runner,
            outbox,
            background: tokio_util::task::TaskTracker::new(),
            scheduler: scheduler::Wake::default(),
            replica,
            limiter,
            groups,
            modals,
        })
    }

    /// Starts the outbox's sender on the current runtime (once; later calls return
    /// `None`). Abort the handle to stop it (tests do, to play a dead process).
    pub fn start_sender(&self) -> Option<tokio::task::AbortHandle> {
        if !self.outbox.mark_started() {
            return None;
        }
        let slack = &self.config.slack;
        let sender = outbox::Sender {
            store: self.store.clone(),
            chat: self.chat.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            outbox: self.outbox.clone(),
            settings: outbox::Settings {
                give_up: self.config.outbox.give_up,
                backoff_max: self.config.outbox.backoff_max,
                lease: slack.timeout + std::time::Duration::from_secs(5),
            },
        };
        Some(tokio::spawn(sender.run()).abort_handle())
    }

    /// Starts this replica's loop (heartbeat and job leases, the sweep that reports jobs
    /// whose replica died, pruning; [`replica`]) on the current runtime. Its first tick
    /// runs at once. Abort the handle to stop it (tests do, to play a dead process).
    pub fn start_replica(self: &Arc<Self>) -> tokio::task::AbortHandle {
        tokio::spawn(replica::run(self.clone())).abort_handle()
    }

    /// Whether a Slack user may run a command now (the per-user rate limit, shared by
    /// every replica through the store).
    pub(crate) async fn admit(&self, user: &str) -> Admission {
        let a = self.limiter.admit(user).await;
        if a != Admission::Allowed {
            self.metrics.slack_rate_limited_commands.inc();
            tracing::warn!(user, "command refused by the per-user rate limit");
        }
        a
    }

    /// Writes messages to the outbox on their own and wakes the sender.
    pub async fn say(&self, messages: Vec<NewMessage>) {
        if messages.is_empty() {
            return;
        }
        if let Err(e) = self.store.enqueue(messages).await {
            tracing::error!(error = %e, "messages not stored; they will not be sent");
        }
        self.outbox.wake();
    }

    /// The pipeline, answering in Slack too: the reply goes to `to` (in its thread for
    /// changes, to the person otherwise) through the outbox — in the same transaction as
    /// a lock change it reports.
    pub async fn handle_replying(&self, req: Request, to: ReplyTo) -> Reply {
        let reply = self.handle_inner(req, Some(&to)).await;
        if !reply.written {
            let now = self.clock.unix_ms();
            let msg = Message::text(reply.text.clone());
            let row = match reply.visibility {
                Visibility::InChannel => {
                    NewMessage::reply(now, to.channel.clone(), to.thread.clone(), msg)
                }
                Visibility::Ephemeral => {
                    NewMessage::ephemeral(now, to.channel.clone(), to.user.clone(), msg)
                }
            };
            self.say(vec![row]).await;
        }
        reply
    }

    /// The pipeline. Never panics on input; every answer says what happened.
    pub async fn handle(&self, req: Request) -> Reply {
        self.handle_inner(req, None).await
    }

    async fn handle_inner(&self, mut req: Request, to: Option<&ReplyTo>) -> Reply {
        req.user = identity(req.source, &req.user);
        if let Command::Vote(v) = &req.command {
            let r = self
                .vote(v.job, &req.user, req.source, v.kind, &v.note)
                .await;
            let outcome = if r.ok { Outcome::Ok } else { Outcome::Refused };
            return Reply::new(outcome, Visibility::Ephemeral, r.text);
        }
        let Some(family) = req.command.family() else {
            return Reply::new(Outcome::Ok, Visibility::Ephemeral, OVERVIEW);
        };
        if let Command::Help(_) = req.command {
            return Reply::new(Outcome::Ok, Visibility::Ephemeral, family.usage());
        }
        let policy = &self.config.policy;
        if let Err(why) = self.may_run(&req.user, family).await {
            let _ = self
                .store
                .audit(&AuditEntry {
                    at: self.clock.unix(),
                    actor: req.user.clone(),
                    action: format!("/{} refused", family.name()),
                    detail: format!("{}: {why}", req.command.to_text()),
                    source: req.source,
                })
                .await;
            return Reply::refused(why);
        }
        if req.command.forced() && !policy.may_force(&req.user) {
            return Reply::refused("Only admins may use `--force`.");
        }
        if let Some(job) = req.command.job() {
            return self.start_job(&req, job).await;
        }
        match &req.command {
            Command::Release(r) => self.release(&req, r, to).await,
            _ => Reply::new(Outcome::Ok, Visibility::Ephemeral, family.usage()),
        }
    }

    /// Whether `user` may run a family's commands: `[permissions]`, with the members of
    /// Slack user groups the allowed roles name. The refusal names the roles needed.
    pub(crate) async fn may_run(
        &self,
        user: &str,
        family: crate::command::Family,
    ) -> Result<(), String> {
        let policy = &self.config.policy;
        if policy.may_run(user, family) {
            return Ok(());
        }
        let roles = policy.permitted(family).unwrap_or_default();
        let groups: Vec<String> = if crate::job::approval::is_self_named(user) {
            Vec::new()
        } else {
            roles.iter().flat_map(|r| policy.groups_of(r)).collect()
        };
        let (member, failed) = self.groups.any_has(&groups, user).await;
        if member {
            return Ok(());
        }
        let mut why = format!(
            "You are not allowed to run `/{}`: it needs the role {} (policy file: permissions.{}).",
            family.name(),
            roles.join(" or "),
            family.name()
        );
        for f in failed {
            why.push_str(&format!(" Note: {f}."));
        }
        Err(why)
    }

    async fn release(&self, req: &Request, cmd: &ReleaseCmd, to: Option<&ReplyTo>) -> Reply {
        let action = match cmd {
            ReleaseCmd::Status => {
                return match self.store.lock_state().await {
                    Ok(s) => {
                        let mut text = s.describe();
                        if let Some(line) =
                            freeze::freeze_status(&self.config.policy.freezes, self.clock.now())
                        {
                            text.push('\n');
                            text.push_str(&line);
                        }
                        Reply::new(Outcome::Ok, Visibility::Ephemeral, text)
                    }
                    Err(e) => Reply::error(e),
                };
            }
            ReleaseCmd::History { n } => return self.history(*n).await,
            ReleaseCmd::Start { reason, .. } => LockAction::Start {
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
        let through_freeze = matches!(cmd, ReleaseCmd::Start { force: true, .. });
        match self
            .change_lock_replying(action, actor, req.source, to, through_freeze)
            .await
        {
            Ok(Ok(text)) => {
                let mut r = Reply::new(Outcome::Ok, Visibility::InChannel, text);
                r.written = to.is_some();
                r
            }
            Ok(Err(refusal)) => Reply::refused(refusal.explain()),
            Err(e) => Reply::error(e),
        }
    }

    /// Applies a lock change and, when it came from outside Slack, announces it in the
    /// notification channels (in the same transaction). Returns the in-channel text, or
    /// the refusal.
    pub async fn change_lock(
        &self,
        action: LockAction,
        actor: Actor,
        source: Source,
    ) -> Result<Result<String, Refusal>, StoreError> {
        self.change_lock_replying(action, actor, source, None, false)
            .await
    }

    /// [`App::change_lock`], also answering in a Slack thread (a mention) in the same
    /// transaction; `through_freeze`: an admin's `/release start --force`. A start from
    /// outside Slack is announced under the key [`scheduler::announce_key`] in the first
    /// channel, so lock reminders thread under it.
    async fn change_lock_replying(
        &self,
        action: LockAction,
        actor: Actor,
        source: Source,
        to: Option<&ReplyTo>,
        through_freeze: bool,
    ) -> Result<Result<String, Refusal>, StoreError> {
        let now = self.clock.unix();
        let frozen = match action {
            LockAction::Start { .. } => {
                freeze::frozen_at(&self.config.policy.freezes, self.clock.now())
            }
            _ => None,
        };
        let said = Said {
            now_ms: self.clock.unix_ms(),
            source,
            // Slack shows changes typed in Slack itself; the others are announced.
            channels: if source == Source::Slack {
                Vec::new()
            } else {
                self.announce_channels()
            },
            announce_key: self.announce_key(&action, &actor, source, now).await,
            to: to.cloned(),
        };
        let (decide_action, decide_actor) = (action.clone(), actor.clone());
        let change = self
            .store
            .change_lock(Box::new(move |state| {
                let gate = Gate {
                    frozen: frozen.as_ref(),
                    through_freeze,
                };
                let mut d = lock_decision(state, &decide_action, &decide_actor, source, now, gate)?;
                let text = lock_change_text(&decide_action, &decide_actor.who, state);
                d.effects.messages.extend(said.messages(&text));
                Ok(d)
            }))
            .await?;
        self.outbox.wake();
        self.scheduler.wake();
        let (before, _written) = match change {
            Ok(c) => c,
            Err(r) => {
                self.lock_refused(&action, &actor, source, now, &r).await;
                return Ok(Err(r));
            }
        };
        let text = lock_change_text(&action, &actor.who, &before);
        tracing::info!(action = action.name(), who = %actor.who, source = source.as_str(), "lock changed");
        Ok(Ok(text))
    }

    /// The key of a start's announcement (its reminders thread under it), unless the same
    /// person started a release in this same second already (a key names one post).
    async fn announce_key(
        &self,
        action: &LockAction,
        actor: &Actor,
        source: Source,
        now: i64,
    ) -> Option<String> {
        match action {
            LockAction::Start { .. } if source != Source::Slack => {
                let key = scheduler::announce_key(now, &actor.who);
                match self.store.outbox_get(&key).await {
                    Ok(None) => Some(key),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// A refused lock change: its audit row and a log line.
    async fn lock_refused(
        &self,
        action: &LockAction,
        actor: &Actor,
        source: Source,
        now: i64,
        r: &Refusal,
    ) {
        let _ = self
            .store
            .audit(&AuditEntry {
                at: now,
                actor: actor.who.clone(),
                action: format!("release.{} refused", action.name()),
                detail: crate::text::plain(&r.explain()),
                source,
            })
            .await;
        tracing::info!(action = action.name(), who = %actor.who, refusal = ?r, "lock change refused");
    }

    /// Where announcements and jobs from outside Slack go: `CORRAL_CHANNEL`, or the
    /// incoming webhook's one channel.
    pub(crate) fn announce_channels(&self) -> Vec<String> {
        if self.config.channels.is_empty() && self.config.slack.webhook_url.is_some() {
            return vec![WEBHOOK_CHANNEL.to_string()];
        }
        self.config.channels.clone()
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
            .or_else(|| self.announce_channels().into_iter().next());
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
            frozen: freeze::frozen_at(&self.config.policy.freezes, self.clock.now()),
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

/// Where a lock change is told, written with it in its transaction: an announcement
/// in each channel (the first one keyed), and the answer in the mention's thread.
struct Said {
    now_ms: i64,
    source: Source,
    channels: Vec<String>,
    announce_key: Option<String>,
    to: Option<ReplyTo>,
}

impl Said {
    fn messages(&self, text: &str) -> Vec<NewMessage> {
        let mut out = Vec::new();
        for (i, ch) in self.channels.iter().enumerate() {
            let mut post = NewMessage::post(
                self.now_ms,
                ch.clone(),
                Message::text(format!("{text} (via {})", self.source.as_str())),
            );
            if let (0, Some(key)) = (i, &self.announce_key) {
                post = post.keyed(key.clone());
            }
            out.push(post);
        }
        if let Some(to) = &self.to {
            out.push(NewMessage::reply(
                self.now_ms,
                to.channel.clone(),
                to.thread.clone(),
                Message::text(text),
            ));
        }
        out
    }
}

/// The freeze window a lock change meets, and whether an admin forces through it.
#[derive(Clone, Copy, Default)]
struct Gate<'a> {
    frozen: Option<&'a Frozen>,
    through_freeze: bool,
}

/// The pure lock decision run inside the store's transaction: the state table (with the
/// freeze window open now), plus the history row and the audit line of a forced stop of
/// someone else's release or a forced start through a freeze window.
fn lock_decision(
    state: &LockState,
    action: &LockAction,
    actor: &Actor,
    source: Source,
    now: i64,
    gate: Gate<'_>,
) -> Result<LockDecision, Refusal> {
    let next = lock::apply_frozen(state, action, actor, now, gate.frozen, gate.through_freeze)?;
    let forced_over = match (action, &state.running) {
        (LockAction::Stop { force: true }, Some(h)) if h.who != actor.who => Some(h.who.clone()),
        _ => None,
    };
    let through = match action {
        LockAction::Start { .. } => gate.frozen,
        _ => None,
    };
    let mut effects = Effects::default();
    // Every lock change is in the audit log too (the history keeps the lock's own view).
    effects.audit.push(AuditEntry {
        at: now,
        actor: actor.who.clone(),
        action: format!("release.{}", action.name()),
        detail: action.reason().to_string(),
        source,
    });
    if let Some(holder) = &forced_over {
        effects.audit.push(AuditEntry {
            at: now,
            actor: actor.who.clone(),
            action: "release.stop --force".into(),
            detail: format!("stopped the release held by {holder}"),
            source,
        });
    }
    if let Some(f) = through {
        effects.audit.push(AuditEntry {
            at: now,
            actor: actor.who.clone(),
            action: "release.start --force".into(),
            detail: format!(
                "started a release through the freeze window {} (open until {})",
                f.name, f.until_shown
            ),
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
            forced: forced_over.is_some() || through.is_some(),
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
    /// The freeze window open when the request came, if any.
    frozen: Option<Frozen>,
}

/// The lock gate: refuses a job while releases are blocked, a freeze window is open or
/// someone else holds the release, unless forced (which is audited). Runs inside the
/// job's transaction.
fn gate(req: &GateRequest, state: &LockState) -> Result<Effects, String> {
    let refusal = if let Some(b) = &state.blocked {
        Some(Refusal::Blocked(b.clone()).explain())
    } else if let Some(f) = &req.frozen {
        Some(Refusal::Frozen(f.clone()).explain())
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
            messages: Vec::new(),
        }),
        Some(text) => Err(text),
    }
}
