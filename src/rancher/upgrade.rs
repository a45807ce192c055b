//! One Cattle upgrade lifecycle (reference/rancher-api.md §3, §9, §11–§13), shared by
//! catalog stack upgrades ([`super::catalog`]) and labelled service upgrades
//! ([`super::service`]). Stacks and services run the same state machine in Rancher 1.6:
//!
//! ```text
//! active ──upgrade──▶ upgrading ──▶ upgraded ──finishupgrade──▶ finishing-upgrade ──▶ active
//!                        │              │
//!                        └──rollback────┴──▶ rolling-back ──▶ active   (previous version back)
//!                        └──cancelupgrade──▶ canceling-upgrade ──▶ canceled-upgrade
//! ```
//!
//! * **State, parsed once.** Every read of a target becomes a [`Status`]: settled,
//!   transitioning or error (from `state`, `transitioning`, `transitioningMessage`),
//!   with the state names the lifecycle acts on as a [`Named`] enum.
//! * **One way of watching.** A [`Watchers`] set reads each environment's collection once
//!   per poll interval while any target there waits, whatever the number of targets
//!   waiting, and every waiting target decides from the same read. A target trusts only
//!   reads sent after its own request was answered (an action's reply, and earlier reads,
//!   may still show the old state, §13).
//! * **One undo policy.** An upgrade that fails (Rancher's `transitioning: error`, a
//!   deadline passed, cancelled in Rancher) is rolled back when
//!   `CORRAL_ROLLBACK_ON_TIMEOUT` is on (cancelled when Rancher offers no rollback), and
//!   cancelled when it is off; then corral waits for that to settle too.
//! * **Ambiguous answers are settled by reading.** A 5xx, a timeout or a broken
//!   connection on an action POST does not say whether Rancher started it: the next read
//!   of the target decides (started → go on watching; unchanged → the failure is
//!   reported with Rancher's words). Actions are never re-sent.
//! * **One timeout text**: ``did not reach `upgraded` within 10m (state `upgrading`,
//!   Rancher says: …)``, durations as [`crate::text::format_duration`] writes them.
//! * **Done is finishupgrade accepted**, for stacks and services: Rancher then removes
//!   the old containers and no rollback is possible any more (go-cowpoke and
//!   rancher-service-updater ended there too).
//!
//! Each wait has its own deadline of [`Policy::timeout`]: for `upgraded` (counted from
//! the upgrade request) and for the undo to settle. A target holds one of
//! [`Policy::parallelism`] slots for its whole lifecycle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::client::{Client, Filter, RancherError};
use crate::job::{Progress, ProgressTx};
use crate::text::format_duration;

/// A Cattle state name the lifecycle acts on (§9, §11); any other is [`Named::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Named {
    Active,
    Inactive,
    Upgrading,
    Upgraded,
    FinishingUpgrade,
    RollingBack,
    CancelingUpgrade,
    CanceledUpgrade,
    Removing,
    Removed,
    Other(String),
}

impl Named {
    pub(crate) fn parse(state: &str) -> Named {
        match state.trim() {
            "active" => Named::Active,
            "inactive" => Named::Inactive,
            "upgrading" => Named::Upgrading,
            "upgraded" => Named::Upgraded,
            "finishing-upgrade" => Named::FinishingUpgrade,
            "rolling-back" => Named::RollingBack,
            "canceling-upgrade" => Named::CancelingUpgrade,
            "canceled-upgrade" => Named::CanceledUpgrade,
            "removing" => Named::Removing,
            "removed" => Named::Removed,
            other => Named::Other(other.to_string()),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            Named::Active => "active",
            Named::Inactive => "inactive",
            Named::Upgrading => "upgrading",
            Named::Upgraded => "upgraded",
            Named::FinishingUpgrade => "finishing-upgrade",
            Named::RollingBack => "rolling-back",
            Named::CancelingUpgrade => "canceling-upgrade",
            Named::CanceledUpgrade => "canceled-upgrade",
            Named::Removing => "removing",
            Named::Removed => "removed",
            Named::Other(s) => s,
        }
    }

    /// The states of a running transition: a target in one is never at rest, whatever
    /// its `transitioning` field says.
    fn is_transient(&self) -> bool {
        matches!(
            self,
            Named::Upgrading
                | Named::FinishingUpgrade
                | Named::RollingBack
                | Named::CancelingUpgrade
                | Named::Removing
        )
    }
}

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A target's state, parsed once from `state`, `transitioning` and
/// `transitioningMessage` (§3: `yes` while a transition runs, `no` at rest, `error` when
/// it failed, the text in the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// At rest: Rancher waits for the next action.
    Settled(Named),
    /// A transition runs; Rancher's progress text (often `In Progress`).
    Transitioning { state: Named, message: String },
    /// The transition failed; Rancher's error text.
    Error { state: Named, message: String },
}

impl Status {
    pub(crate) fn parse(state: &str, transitioning: &str, message: &str) -> Status {
        let state = Named::parse(state);
        let message = message.trim().to_string();
        match transitioning.trim() {
            "error" => Status::Error { state, message },
            "yes" => Status::Transitioning { state, message },
            _ if state.is_transient() => Status::Transitioning { state, message },
            _ => Status::Settled(state),
        }
    }

    /// The status of a resource as Rancher sent it (missing fields read as empty).
    pub(crate) fn of(resource: &Value) -> Status {
        Status::parse(
            text(resource, "state"),
            text(resource, "transitioning"),
            text(resource, "transitioningMessage"),
        )
    }

    pub(crate) fn state(&self) -> &Named {
        match self {
            Status::Settled(s) => s,
            Status::Transitioning { state, .. } | Status::Error { state, .. } => state,
        }
    }

    /// Rancher's text, if it says something beyond `In Progress`.
    fn message(&self) -> Option<&str> {
        match self {
            Status::Settled(_) => None,
            Status::Transitioning { message, .. } | Status::Error { message, .. } => {
                Some(message.as_str()).filter(|m| !m.is_empty() && *m != "In Progress")
            }
        }
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// One read of a target: its parsed status and the JSON it came from.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub status: Status,
    pub raw: Arc<Value>,
}

impl Observed {
    pub(crate) fn new(raw: Arc<Value>) -> Observed {
        Observed {
            status: Status::of(&raw),
            raw,
        }
    }

    /// The URL of an action Rancher offers in this state (§12).
    pub(crate) fn action(&self, name: &str) -> Option<&str> {
        self.raw
            .get("actions")
            .and_then(|a| a.get(name))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    fn state(&self) -> &Named {
        self.status.state()
    }
}

/// How an upgraded target looks: tells a target found `active` at the new version
/// (someone finished it already) from one not upgraded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// A stack: its new `externalId`.
    ExternalId(String),
    /// A service: its new `launchConfig.imageUuid`.
    Image(String),
}

impl Wanted {
    fn reached(&self, raw: &Value) -> bool {
        match self {
            Wanted::ExternalId(x) => text(raw, "externalId") == x,
            Wanted::Image(i) => raw
                .get("launchConfig")
                .map(|lc| text(lc, "imageUuid"))
                .is_some_and(|u| u == i),
        }
    }
}

/// One target, ready to be upgraded.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `stack` or `service`, for messages.
    pub noun: &'static str,
    pub id: String,
    /// The target as planned: its `actions` say whether it can be upgraded.
    pub listed: Observed,
    /// The body of the upgrade POST.
    pub body: Value,
    pub wanted: Wanted,
}

/// How every target of one job goes through the lifecycle.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// Deadline of each wait: for `upgraded`, for the undo to settle.
    pub timeout: Duration,
    /// `CORRAL_ROLLBACK_ON_TIMEOUT`: a failed upgrade is rolled back (cancelled when
    /// Rancher offers no rollback); off: cancelled.
    pub rollback: bool,
    /// Wait for `upgraded` and finish; off (`--no-confirm`): the upgrade is only started.
    pub confirm: bool,
    /// Targets in their upgrade at once, over all environments.
    pub parallelism: usize,
}

/// How a target's lifecycle ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Done {
    /// Upgraded and finished.
    Finished,
    /// Found `active` at the new version: someone finished it already.
    FinishedElsewhere,
    /// Upgrade accepted, not confirmed (`--no-confirm`).
    Started,
}

/// What happened to one target.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// Rancher showed the target `upgraded` (set even when finishing it then failed).
    pub reached: bool,
    /// How it ended, or why it failed (with Rancher's words and what the undo did).
    pub result: Result<Done, String>,
    /// From the start of its upgrade to its report.
    pub elapsed: Duration,
}

impl Report {
    pub(crate) fn ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// One item of work for [`execute`].
pub(crate) struct Item<T> {
    /// The progress group (the environment's name).
    pub group: String,
    /// How the target is named in progress events.
    pub label: String,
    /// The target and the watcher of its collection in its environment, or why it
    /// cannot be upgraded (reported as its failure).
    pub plan: Result<(Target, Arc<Watcher>), String>,
    /// The caller's own data, handed back with the report.
    pub tag: T,
}

/// Runs every item through the lifecycle, at most [`Policy::parallelism`] at once, and
/// reports `TargetStarted`/`TargetFinished` for each and `GroupFinished` when a group's
/// last item ends. Returns the reports in the items' order.
pub(crate) async fn execute<T: Send>(
    client: &Client,
    policy: &Policy,
    items: Vec<Item<T>>,
    progress: &ProgressTx,
) -> Vec<(T, Report)> {
    let mut remaining: HashMap<String, usize> = HashMap::new();
    for i in &items {
        *remaining.entry(i.group.clone()).or_default() += 1;
    }
    let remaining = Mutex::new(remaining);
    let slots = Semaphore::new(policy.parallelism.max(1));
    let tasks = items.into_iter().map(|item| {
        let (slots, remaining) = (&slots, &remaining);
        async move {
            let _slot = slots.acquire().await.ok();
            progress.send(Progress::TargetStarted {
                group: item.group.clone(),
                target: item.label.clone(),
            });
            let started = Instant::now();
            let report = match &item.plan {
                Ok((target, watcher)) => run_one(client, policy, target, watcher).await,
                Err(why) => Report {
                    reached: false,
                    result: Err(why.clone()),
                    elapsed: Duration::ZERO,
                },
            };
            let report = Report {
                elapsed: started.elapsed(),
                ..report
            };
            progress.send(Progress::TargetFinished {
                group: item.group.clone(),
                target: item.label.clone(),
                ok: report.ok(),
                detail: report.result.clone().err().unwrap_or_default(),
            });
            let left = {
                let mut m = remaining.lock().unwrap_or_else(|p| p.into_inner());
                let n = m.entry(item.group.clone()).or_insert(1);
                *n = n.saturating_sub(1);
                *n
            };
            if left == 0 {
                progress.send(Progress::GroupFinished { group: item.group });
            }
            (item.tag, report)
        }
    });
    futures::future::join_all(tasks).await
}

/// The steps of the lifecycle: each an action POST and the state it ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Upgrade,
    Finish,
    Rollback,
    Cancel,
}

impl Step {
    fn action(self) -> &'static str {
        match self {
            Step::Upgrade => "upgrade",
            Step::Finish => "finishupgrade",
            Step::Rollback => "rollback",
            Step::Cancel => "cancelupgrade",
        }
    }

    fn end(self) -> Named {
        match self {
            Step::Upgrade => Named::Upgraded,
            Step::Finish | Step::Rollback => Named::Active,
            Step::Cancel => Named::CanceledUpgrade,
        }
    }

    /// Whether a read after an ambiguous answer shows this step under way or done.
    fn started(self, s: &Status) -> bool {
        match self {
            Step::Upgrade => matches!(
                s.state(),
                Named::Upgrading | Named::Upgraded | Named::FinishingUpgrade
            ),
            Step::Finish => matches!(s.state(), Named::FinishingUpgrade | Named::Active),
            Step::Rollback => matches!(s.state(), Named::RollingBack | Named::Active),
            Step::Cancel => matches!(s.state(), Named::CancelingUpgrade | Named::CanceledUpgrade),
        }
    }
}

/// Upgrade → `upgraded` → finishupgrade (→ `active`) for one target, undoing a failed
/// upgrade by the policy.
async fn run_one(client: &Client, policy: &Policy, target: &Target, watcher: &Watcher) -> Report {
    let fail = |reached, why: String| Report {
        reached,
        result: Err(why),
        elapsed: Duration::ZERO,
    };
    let Some(link) = target.listed.action("upgrade") else {
        let state = target.listed.state();
        let hint = if matches!(state, Named::Upgraded | Named::CanceledUpgrade) {
            "; finish or roll back the previous upgrade first"
        } else {
            ""
        };
        return fail(
            false,
            format!(
                "the {} is not in an upgradeable state (state `{state}`){hint}",
                target.noun
            ),
        );
    };
    // Watching starts before the request, so no read sent after its answer is missed.
    let mut watch = Watch::new(watcher, &target.id);
    let deadline = Instant::now() + policy.timeout;
    let mut latest = target.listed.clone();
    let (accepted, fresh) = match ask(
        client,
        &mut watch,
        target,
        Step::Upgrade,
        link,
        policy.timeout,
    )
    .await
    {
        Asked::Accepted { at, fresh, reply } => {
            if let Some(r) = reply {
                latest = r;
            }
            (at, fresh)
        }
        Asked::Refused(why) => return fail(false, format!("upgrade refused: {why}")),
    };
    if !policy.confirm {
        return Report {
            reached: false,
            result: Ok(Done::Started),
            elapsed: Duration::ZERO,
        };
    }
    let w = Wait {
        step: Step::Upgrade,
        since: accepted,
        deadline,
        timeout: policy.timeout,
    };
    match wait_for(&mut watch, target, &w, &mut latest, fresh).await {
        Ok(Reached::Elsewhere) => Report {
            reached: true,
            result: Ok(Done::FinishedElsewhere),
            elapsed: Duration::ZERO,
        },
        Ok(Reached::End) => {
            let result = finish(client, policy, &mut watch, target, &latest).await;
            Report {
                reached: true,
                result,
                elapsed: Duration::ZERO,
            }
        }
        Err(f) if f.undo => {
            let undone = undo(client, policy, &mut watch, target, &latest).await;
            fail(false, format!("{}; {undone}", f.reason))
        }
        Err(f) => fail(false, f.reason),
    }
}

/// finishupgrade: the upgrade is done once Rancher accepted it (it then removes the old
/// containers; no rollback is possible any more), as go-cowpoke and
/// rancher-service-updater had it.
async fn finish(
    client: &Client,
    policy: &Policy,
    watch: &mut Watch<'_>,
    target: &Target,
    latest: &Observed,
) -> Result<Done, String> {
    let unfinished =
        |why: String| format!("the upgrade succeeded but could not be finished: {why}");
    let Some(link) = latest.action("finishupgrade").map(str::to_string) else {
        return Err(unfinished(format!(
            "Rancher offers no finishupgrade in state `{}`",
            latest.state()
        )));
    };
    match ask(client, watch, target, Step::Finish, &link, policy.timeout).await {
        Asked::Accepted { .. } => Ok(Done::Finished),
        Asked::Refused(why) => Err(unfinished(why)),
    }
}

/// Undoes a failed upgrade by the policy: rollback (else cancel), or cancel when
/// rollback is off. Says what it did.
async fn undo(
    client: &Client,
    policy: &Policy,
    watch: &mut Watch<'_>,
    target: &Target,
    latest: &Observed,
) -> String {
    let steps: &[Step] = if policy.rollback {
        &[Step::Rollback, Step::Cancel]
    } else {
        &[Step::Cancel]
    };
    let Some((step, link)) = steps
        .iter()
        .find_map(|s| latest.action(s.action()).map(|l| (*s, l.to_string())))
    else {
        let wanted = if policy.rollback {
            "no rollback or cancelupgrade"
        } else {
            "no cancelupgrade"
        };
        return format!(
            "Rancher offers {wanted} in state `{}`; left as it is",
            latest.state()
        );
    };
    let deadline = Instant::now() + policy.timeout;
    let (at, fresh) = match ask(client, watch, target, step, &link, policy.timeout).await {
        Asked::Accepted { at, fresh, .. } => (at, fresh),
        Asked::Refused(why) => return format!("{} failed too: {why}", step.action()),
    };
    let w = Wait {
        step,
        since: at,
        deadline,
        timeout: policy.timeout,
    };
    let mut after = latest.clone();
    let done = match (step, policy.rollback) {
        (Step::Rollback, _) => "rolled back".to_string(),
        (_, true) => "Rancher offers no rollback; upgrade cancelled".to_string(),
        (_, false) => "upgrade cancelled (CORRAL_ROLLBACK_ON_TIMEOUT=false: roll it back or continue it in Rancher)".to_string(),
    };
    match wait_for(watch, target, &w, &mut after, fresh).await {
        Ok(_) => done,
        Err(f) => format!("{} started but {}", step.action(), f.reason),
    }
}

/// How an action request ended.
enum Asked {
    /// Rancher accepted it (answered 2xx, or a read after an ambiguous answer shows it
    /// under way). `fresh` is that read, if one was made; `reply` the resource Rancher
    /// answered with (its actions are current, its state may not be, §13).
    Accepted {
        at: Instant,
        fresh: Option<Observed>,
        reply: Option<Observed>,
    },
    /// Refused, with Rancher's words.
    Refused(String),
}

/// Whether an error leaves open if Rancher acted on the request: a 5xx (Rancher, or a
/// proxy before it, failed after the request arrived), a timeout, a broken connection.
fn ambiguous(e: &RancherError) -> bool {
    match e {
        RancherError::Api { status, .. } => *status >= 500,
        RancherError::Timeout { .. } | RancherError::Transport { .. } => true,
        _ => false,
    }
}

/// POSTs one action (never re-sent: actions are not idempotent) and settles an
/// ambiguous answer by the next read of the target.
async fn ask(
    client: &Client,
    watch: &mut Watch<'_>,
    target: &Target,
    step: Step,
    link: &str,
    within: Duration,
) -> Asked {
    let deadline = Instant::now() + within;
    let body = match step {
        Step::Upgrade => target.body.clone(),
        _ => json!({}),
    };
    let e = match tokio::time::timeout_at(deadline, client.post::<Value>(link, &body)).await {
        Err(_) => {
            return Asked::Refused(format!(
                "the {} request got no answer within {}",
                step.action(),
                format_duration(within)
            ));
        }
        Ok(Ok(v)) => {
            let reply = (text(&v, "id") == target.id).then(|| Observed::new(Arc::new(v)));
            return Asked::Accepted {
                at: Instant::now(),
                fresh: None,
                reply,
            };
        }
        // A 2xx whose body is not JSON: accepted all the same.
        Ok(Err(RancherError::Decode { .. })) => {
            return Asked::Accepted {
                at: Instant::now(),
                fresh: None,
                reply: None,
            };
        }
        Ok(Err(e)) => e,
    };
    let words = rancher_text(&e);
    if !ambiguous(&e) {
        return Asked::Refused(words);
    }
    let answered = Instant::now();
    match watch.next(answered, deadline).await {
        Seen::Listed(o) if step.started(&o.status) => {
            tracing::info!(target_id = %target.id, action = step.action(), error = %words,
                "Rancher answered an error but the action is under way");
            Asked::Accepted {
                at: answered,
                fresh: Some(o),
                reply: None,
            }
        }
        Seen::Listed(o) => Asked::Refused(format!(
            "{words}; Rancher shows the {} unchanged afterwards (state `{}`)",
            target.noun,
            o.state()
        )),
        Seen::Missing => Asked::Refused(format!(
            "{words}; the {} is no longer listed afterwards",
            target.noun
        )),
        Seen::Unreadable(r) => Asked::Refused(format!(
            "{words}; its state could not be read afterwards: {r}"
        )),
        Seen::TimedOut | Seen::Stopped => {
            Asked::Refused(format!("{words}; its state could not be read afterwards"))
        }
    }
}

/// What a wait is for.
struct Wait {
    step: Step,
    /// Only reads sent after this count.
    since: Instant,
    deadline: Instant,
    /// The whole wait, for the message.
    timeout: Duration,
}

/// How a wait ended well.
enum Reached {
    /// The step's end state.
    End,
    /// `active` at the new version while waiting for `upgraded`.
    Elsewhere,
}

/// Why a wait ended without its state; `undo` when the upgrade should be undone.
struct WaitFailure {
    reason: String,
    undo: bool,
}

/// Waits until the target settles in the step's end state, fails, disappears or the
/// deadline passes. `latest` follows every read; `fresh` is a read to decide on first.
async fn wait_for(
    watch: &mut Watch<'_>,
    target: &Target,
    w: &Wait,
    latest: &mut Observed,
    mut fresh: Option<Observed>,
) -> Result<Reached, WaitFailure> {
    let mut missing = 0u32;
    let mut unreadable = String::new();
    loop {
        let seen = match fresh.take() {
            Some(o) => Seen::Listed(o),
            None => watch.next(w.since, w.deadline).await,
        };
        match seen {
            Seen::Listed(o) => {
                missing = 0;
                *latest = o;
                if let Some(end) = decide(w, target, latest) {
                    return end;
                }
            }
            Seen::Missing => {
                missing += 1;
                if missing >= 3 {
                    return Err(WaitFailure {
                        reason: format!(
                            "the {} is no longer listed in its environment (removed, or its externalId changed)",
                            target.noun
                        ),
                        undo: false,
                    });
                }
            }
            Seen::Unreadable(r) => unreadable = r,
            Seen::Stopped => {
                return Err(WaitFailure {
                    reason: "internal: the environment watcher stopped".into(),
                    undo: false,
                });
            }
            Seen::TimedOut => return Err(timed_out(w, latest, &unreadable)),
        }
    }
}

/// What one read of the target decides for a wait, if anything.
fn decide(w: &Wait, target: &Target, latest: &Observed) -> Option<Result<Reached, WaitFailure>> {
    let fail = |reason: String, undo: bool| Some(Err(WaitFailure { reason, undo }));
    match &latest.status {
        Status::Error { state, message } => {
            let message = if message.is_empty() {
                "no message"
            } else {
                message.as_str()
            };
            fail(
                format!(
                    "the {} failed in Rancher (state `{state}`): {message}",
                    w.step.action()
                ),
                true,
            )
        }
        Status::Settled(s) if *s == w.step.end() => Some(Ok(Reached::End)),
        Status::Settled(Named::Active)
            if w.step == Step::Upgrade && target.wanted.reached(&latest.raw) =>
        {
            Some(Ok(Reached::Elsewhere))
        }
        Status::Settled(Named::CanceledUpgrade) if w.step != Step::Cancel => {
            fail("the upgrade was cancelled in Rancher".into(), true)
        }
        Status::Settled(Named::Removed) => fail(format!("the {} was removed", target.noun), false),
        _ => None,
    }
}

/// The one timeout text: ``did not reach `upgraded` within 10m (state `upgrading`,
/// Rancher says: …)``.
fn timed_out(w: &Wait, latest: &Observed, unreadable: &str) -> WaitFailure {
    let says = match latest.status.message() {
        Some(m) => format!(", Rancher says: {m}"),
        None if !unreadable.is_empty() => format!(", last read failed: {unreadable}"),
        None => String::new(),
    };
    WaitFailure {
        reason: format!(
            "did not reach `{}` within {} (state `{}`{says})",
            w.step.end(),
            format_duration(w.timeout),
            latest.state()
        ),
        undo: true,
    }
}

/// Rancher's words for an error: `Rancher 422 ActionNotAvailable: action`.
pub(crate) fn rancher_text(e: &RancherError) -> String {
    match e {
        RancherError::Api {
            status,
            code,
            message,
            ..
        } if message != code => format!("Rancher {status} {code}: {message}"),
        RancherError::Api { status, code, .. } => format!("Rancher {status} {code}"),
        other => other.to_string(),
    }
}

// ---- watching ----

/// One read of a collection.
struct Snapshot {
    /// When the read was sent: a target trusts only reads sent after its request was
    /// answered.
    sent: Instant,
    /// The items by id, or why the read failed.
    items: Result<HashMap<String, Arc<Value>>, String>,
}

/// The shared view of one collection (an environment's stacks or services) while
/// targets there wait.
pub(crate) struct Watcher {
    snapshot: watch::Sender<Arc<Snapshot>>,
    waiting: AtomicUsize,
    wake: Notify,
}

/// The watchers of one job: one per collection, each read by its own task every poll
/// interval while any target waits on it. Dropping the set stops the tasks.
pub(crate) struct Watchers {
    client: Client,
    interval: Duration,
    started: Mutex<Started>,
}

/// The watchers started so far (by collection and filters) and their polling tasks.
type Started = (HashMap<String, Arc<Watcher>>, JoinSet<()>);

impl Watchers {
    /// `interval` is `CORRAL_RANCHER_POLL`; zero is read as 10 ms, never a busy loop.
    pub(crate) fn new(client: &Client, interval: Duration) -> Watchers {
        Watchers {
            client: client.clone(),
            interval: interval.max(Duration::from_millis(10)),
            started: Mutex::new((HashMap::new(), JoinSet::new())),
        }
    }

    /// The watcher of the collection at `url` read with `filters` (re-checked on every
    /// item, [`Client::list`]); started on first use.
    pub(crate) fn collection(&self, url: &str, filters: &[Filter]) -> Arc<Watcher> {
        let key = format!("{url} {filters:?}");
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        let (map, tasks) = &mut *started;
        if let Some(w) = map.get(&key) {
            return w.clone();
        }
        let (tx, _rx) = watch::channel(Arc::new(Snapshot {
            sent: Instant::now(),
            items: Ok(HashMap::new()),
        }));
        let w = Arc::new(Watcher {
            snapshot: tx,
            waiting: AtomicUsize::new(0),
            wake: Notify::new(),
        });
        tasks.spawn(poll(
            self.client.clone(),
            url.to_string(),
            filters.to_vec(),
            w.clone(),
            self.interval,
        ));
        map.insert(key, w.clone());
        w
    }
}

/// Reads one collection every `interval` while any target waits on it.
async fn poll(
    client: Client,
    url: String,
    filters: Vec<Filter>,
    w: Arc<Watcher>,
    interval: Duration,
) {
    loop {
        while w.waiting.load(Ordering::SeqCst) == 0 {
            w.wake.notified().await;
        }
        tokio::time::sleep(interval).await;
        if w.waiting.load(Ordering::SeqCst) == 0 {
            continue;
        }
        let sent = Instant::now();
        let snapshot = read(&client, &url, &filters, sent).await;
        w.snapshot.send_replace(Arc::new(snapshot));
    }
}

/// One read of a watched collection.
async fn read(client: &Client, url: &str, filters: &[Filter], sent: Instant) -> Snapshot {
    let items = match client.list::<Value>(url, filters).await {
        Ok(list) => Ok(list
            .into_iter()
            .filter_map(|v| {
                let id = v.get("id").and_then(Value::as_str)?.to_string();
                Some((id, Arc::new(v)))
            })
            .collect()),
        // The GET was already retried; the next interval tries again, and each target's
        // deadline bounds its wait.
        Err(e) => {
            tracing::warn!(error = %e, "reading a collection to watch upgrades failed");
            Err(e.to_string())
        }
    };
    Snapshot { sent, items }
}

/// What a read showed of one target.
enum Seen {
    Listed(Observed),
    /// The read does not list it.
    Missing,
    /// The read failed.
    Unreadable(String),
    TimedOut,
    Stopped,
}

/// One target's subscription to its watcher; counts as waiting until dropped.
struct Watch<'a> {
    watcher: &'a Watcher,
    rx: watch::Receiver<Arc<Snapshot>>,
    id: &'a str,
}

impl<'a> Watch<'a> {
    fn new(watcher: &'a Watcher, id: &'a str) -> Watch<'a> {
        let rx = watcher.snapshot.subscribe();
        watcher.waiting.fetch_add(1, Ordering::SeqCst);
        watcher.wake.notify_one();
        Watch { watcher, rx, id }
    }

    /// The next read sent after `since`, as far as this target goes.
    async fn next(&mut self, since: Instant, deadline: Instant) -> Seen {
        loop {
            match tokio::time::timeout_at(deadline, self.rx.changed()).await {
                Err(_) => return Seen::TimedOut,
                Ok(Err(_)) => return Seen::Stopped,
                Ok(Ok(())) => {}
            }
            let snap = self.rx.borrow_and_update().clone();
            if snap.sent < since {
                continue;
            }
            return match &snap.items {
                Err(e) => Seen::Unreadable(e.clone()),
                Ok(items) => match items.get(self.id) {
                    Some(v) => Seen::Listed(Observed::new(v.clone())),
                    None => Seen::Missing,
                },
            };
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.watcher.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_once() {
        use Named::*;
        for (state, tr, want) in [
            ("active", "no", Status::Settled(Active)),
            ("upgraded", "", Status::Settled(Upgraded)),
            ("canceled-upgrade", "no", Status::Settled(CanceledUpgrade)),
            (
                "upgrading",
                "yes",
                Status::Transitioning {
                    state: Upgrading,
                    message: "x".into(),
                },
            ),
            // A transient name is never at rest, whatever `transitioning` says.
            (
                "rolling-back",
                "no",
                Status::Transitioning {
                    state: RollingBack,
                    message: "x".into(),
                },
            ),
            (
                "upgraded",
                "yes",
                Status::Transitioning {
                    state: Upgraded,
                    message: "x".into(),
                },
            ),
            (
                "upgrading",
                "error",
                Status::Error {
                    state: Upgrading,
                    message: "x".into(),
                },
            ),
            (
                "updating-active",
                "no",
                Status::Settled(Other("updating-active".into())),
            ),
            ("", "", Status::Settled(Other(String::new()))),
        ] {
            assert_eq!(Status::parse(state, tr, " x "), want, "{state}/{tr}");
        }
        for n in [
            "active",
            "inactive",
            "upgrading",
            "upgraded",
            "finishing-upgrade",
            "rolling-back",
            "canceling-upgrade",
            "canceled-upgrade",
            "removing",
            "removed",
            "restarting",
        ] {
            assert_eq!(Named::parse(n).as_str(), n);
        }
    }

    #[test]
    fn hostile_resources_parse() {
        for v in [
            json!(null),
            json!("x"),
            json!({"state": 5, "transitioning": ["yes"]}),
            json!({"actions": {"upgrade": 7}}),
        ] {
            let o = Observed::new(Arc::new(v));
            assert_eq!(o.status, Status::Settled(Named::Other(String::new())));
            assert!(o.action("upgrade").is_none());
        }
        assert_eq!(
            Status::of(&json!({"state": "upgrading", "transitioning": "yes", "transitioningMessage": "In Progress"}))
                .message(),
            None
        );
    }

    #[test]
    fn steps_know_their_states() {
        let s = |state: &str| Status::parse(state, "yes", "");
        assert!(Step::Upgrade.started(&s("upgrading")));
        assert!(Step::Upgrade.started(&Status::parse("upgraded", "no", "")));
        assert!(!Step::Upgrade.started(&Status::parse("active", "no", "")));
        assert!(Step::Finish.started(&s("finishing-upgrade")));
        assert!(Step::Rollback.started(&s("rolling-back")));
        assert!(Step::Cancel.started(&Status::parse("canceled-upgrade", "no", "")));
        assert!(!Step::Cancel.started(&s("upgrading")));
        assert_eq!(Step::Cancel.end(), Named::CanceledUpgrade);
    }

    #[test]
    fn wanted_versions() {
        let stack = json!({"externalId": "catalog://l:w:2"});
        assert!(Wanted::ExternalId("catalog://l:w:2".into()).reached(&stack));
        assert!(!Wanted::ExternalId("catalog://l:w:3".into()).reached(&stack));
        let svc = json!({"launchConfig": {"imageUuid": "docker:a:2"}});
        assert!(Wanted::Image("docker:a:2".into()).reached(&svc));
        assert!(!Wanted::Image("docker:a:2".into()).reached(&json!({"launchConfig": null})));
    }

    #[test]
    fn rancher_words() {
        let e = RancherError::Api {
            status: 422,
            code: "ActionNotAvailable".into(),
            message: "action".into(),
            method: "POST",
            path: "/x".into(),
        };
        assert_eq!(rancher_text(&e), "Rancher 422 ActionNotAvailable: action");
        assert!(!ambiguous(&e));
        let e = RancherError::Api {
            status: 503,
            code: "Service Unavailable".into(),
            message: "Service Unavailable".into(),
            method: "POST",
            path: "/x".into(),
        };
        assert_eq!(rancher_text(&e), "Rancher 503 Service Unavailable");
        assert!(ambiguous(&e));
    }
}
