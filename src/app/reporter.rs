//! Progress events → one Slack thread per job (SPEC §3), written as outbox rows.
//!
//! * a **root message** in the channel (key `job:<id>:root`), edited as the job moves:
//!   `queued → running 3/10 → ✅ succeeded / ❌ 2 of 10 failed / ⚠ interrupted`. Every
//!   progress change writes the root's newest content in the same transaction as the job's
//!   counts; the outbox keeps only the newest and its sender paces the edits, so a burst of
//!   updates becomes a handful of `chat.update`s;
//! * thread replies for the plan, for each group (environment, host set) as it finishes,
//!   for notes, and a final summary with the failures and their reasons; the summary and
//!   the final root are written with the job's outcome.
//!
//! Many targets are summarised, never one message per target. The root is a keyed row, so
//! a restarted bot edits the same thread. With a `printer` (`corral exec`) the thread is
//! also printed as it is written.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::AbortHandle;

use super::outbox::Outbox;
use crate::chat::{Chat, Message};
use crate::clock::SharedClock;
use crate::job::{Failure, JobStatus, Outcome, PlanGroup, Progress};
use crate::store::outbox::root_key;
use crate::store::{Effects, JobChange, JobRecord, NewMessage, Role, Store, Thread};
use crate::text::{person, sanitize, sanitize_block};

/// Items listed per group in the plan, and failures listed in a summary.
const LIST_MAX: usize = 25;

#[derive(Default)]
struct GroupTally {
    ok: usize,
    failed: Vec<Failure>,
    finished: bool,
}

/// Reports one job.
pub struct Reporter {
    store: Arc<dyn Store>,
    clock: SharedClock,
    outbox: Outbox,
    printer: Option<Arc<dyn Chat>>,
    job: JobRecord,
    /// The channel of the job's thread, if it has one.
    channel: Option<String>,
    total: usize,
    done: usize,
    failed: usize,
    groups: BTreeMap<String, GroupTally>,
    printed_status: Option<JobStatus>,
    /// The replica whose lease the job's writes need (the runner's); `None`: unguarded.
    lease: Option<String>,
    /// Set once a guarded write was refused: another replica ended the job.
    lost: AtomicBool,
    /// The job's work, stopped when the job is lost.
    work: OnceLock<AbortHandle>,
}

impl Reporter {
    /// Opens the job's thread: writes its root (a keyed post: written once, whoever asks
    /// again).
    pub async fn open(
        store: Arc<dyn Store>,
        clock: SharedClock,
        outbox: Outbox,
        printer: Option<Arc<dyn Chat>>,
        job: JobRecord,
    ) -> Reporter {
        let mut r = Reporter::new(store, clock, outbox, printer, job);
        r.open_thread().await;
        r
    }

    /// [`Reporter::open`] for the replica that holds the job's lease (`owner`): every write
    /// is made only while it still does ([`Store::change_leased_job`]). Once another
    /// replica has ended the job (this one was cut off from the database for longer than
    /// the lease, and the job was reported interrupted), the writes are refused: the
    /// reporter logs it, writes nothing more and stops the work
    /// ([`Reporter::stop_work_when_lost`]).
    pub(crate) async fn open_leased(
        store: Arc<dyn Store>,
        clock: SharedClock,
        outbox: Outbox,
        printer: Option<Arc<dyn Chat>>,
        job: JobRecord,
        owner: &str,
    ) -> Reporter {
        let mut r = Reporter::new(store, clock, outbox, printer, job);
        r.lease = Some(owner.to_string());
        r.open_thread().await;
        r
    }

    fn new(
        store: Arc<dyn Store>,
        clock: SharedClock,
        outbox: Outbox,
        printer: Option<Arc<dyn Chat>>,
        job: JobRecord,
    ) -> Reporter {
        Reporter {
            store,
            clock,
            outbox,
            printer,
            total: job.total as usize,
            done: job.done as usize,
            failed: job.failed as usize,
            channel: job.channel.clone(),
            job,
            groups: BTreeMap::new(),
            printed_status: None,
            lease: None,
            lost: AtomicBool::new(false),
            work: OnceLock::new(),
        }
    }

    /// Writes the thread's root (a keyed post: written once, whoever asks again).
    async fn open_thread(&mut self) {
        if let Some(channel) = self.channel.clone() {
            let root = NewMessage::post(
                self.clock.unix_ms(),
                channel,
                self.root_message(self.job.status),
            )
            .keyed(root_key(self.job.id))
            .role(Role::Root)
            .job(self.job.id);
            self.write(JobChange::Nothing, vec![root]).await;
        }
        self.print_root(self.job.status).await;
    }

    /// Stops `work` (the job's task) if the job is lost to another replica, now or later.
    pub(crate) fn stop_work_when_lost(&self, work: AbortHandle) {
        if self.is_lost() {
            work.abort();
        }
        let _ = self.work.set(work);
    }

    /// Whether another replica has ended this job (a guarded write was refused).
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stores a change of the job with its effects: guarded by the lease when the reporter
    /// has one. A refused write marks the job lost: logged once, the work stopped.
    async fn save(&self, change: JobChange, effects: Effects) {
        if self.is_lost() {
            return;
        }
        let (id, now) = (self.job.id, self.clock.unix());
        let written = match &self.lease {
            Some(owner) => {
                self.store
                    .change_leased_job(id, owner, change, now, effects)
                    .await
            }
            None => self
                .store
                .change_job(id, change, now, effects)
                .await
                .map(|()| true),
        };
        match written {
            Ok(true) => {}
            Ok(false) => {
                if !self.lost.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        job = id,
                        "another replica ended this job while this one could not reach the database for longer than its lease (it was reported interrupted); nothing more is written for it and its work is stopped"
                    );
                }
                if let Some(work) = self.work.get() {
                    work.abort();
                }
            }
            Err(e) => {
                tracing::error!(job = id, error = %e, "job change and its messages not stored");
            }
        }
        self.outbox.wake();
    }

    /// Consumes progress events until the sender is dropped.
    pub async fn run(&mut self, mut rx: UnboundedReceiver<Progress>) {
        while let Some(ev) = rx.recv().await {
            self.on(ev).await;
        }
    }

    /// Marks the job running (status and root edit in one transaction).
    pub async fn running(&mut self) {
        self.job.status = JobStatus::Running;
        let edit = self.root_edit();
        self.write(JobChange::Status(JobStatus::Running), edit)
            .await;
        self.print_root(JobStatus::Running).await;
    }

    /// Writes a job change with messages, and wakes the sender.
    async fn write(&self, change: JobChange, messages: Vec<NewMessage>) {
        self.save(change, Effects::messages(messages)).await;
    }

    fn root_edit(&self) -> Vec<NewMessage> {
        match &self.channel {
            Some(_) => vec![
                NewMessage::edit(
                    self.clock.unix_ms(),
                    root_key(self.job.id),
                    self.root_message(self.job.status),
                )
                .job(self.job.id),
            ],
            None => Vec::new(),
        }
    }

    fn reply_message(&self, role: Role, msg: Message) -> Vec<NewMessage> {
        match &self.channel {
            Some(channel) => vec![
                NewMessage::reply(
                    self.clock.unix_ms(),
                    channel.clone(),
                    Thread::Key(root_key(self.job.id)),
                    msg,
                )
                .role(role)
                .job(self.job.id),
            ],
            None => Vec::new(),
        }
    }

    async fn on(&mut self, ev: Progress) {
        match ev {
            Progress::Plan { title, groups } => {
                self.total = groups.iter().map(PlanGroup::active).sum();
                for g in &groups {
                    self.groups.entry(g.name.clone()).or_default();
                }
                let plan = Message::text(plan_text(&title, &groups)).with_context(self.about());
                self.reply(Role::Plan, plan).await;
                self.progress_changed().await;
            }
            Progress::TargetStarted { .. } => {}
            Progress::TargetFinished {
                group,
                target,
                ok,
                detail,
            } => {
                let g = self.groups.entry(group.clone()).or_default();
                if ok {
                    g.ok += 1;
                } else {
                    self.failed += 1;
                    g.failed.push(Failure {
                        group,
                        target,
                        reason: detail,
                    });
                }
                self.done += 1;
                self.total = self.total.max(self.done);
                self.progress_changed().await;
            }
            Progress::GroupFinished { group } => {
                if let Some(msg) = self.group_finished(&group) {
                    self.reply(Role::Group, msg).await;
                }
            }
            // Notes carry text from outside (environment names, Rancher errors, log
            // tails): escaped so none of it can become a mention or a link.
            Progress::Note { text } => {
                self.reply(Role::Note, Message::text(sanitize_block(&text)))
                    .await
            }
        }
    }

    /// Marks a group finished; its reply, the first time.
    fn group_finished(&mut self, group: &str) -> Option<Message> {
        let g = self.groups.entry(group.to_string()).or_default();
        if g.finished {
            return None;
        }
        g.finished = true;
        Some(Message::text(group_text(group, g)))
    }

    /// Who and what the job is, for messages that may be read outside the thread
    /// (an incoming webhook has no threads).
    fn about(&self) -> String {
        format!(
            "Job #{} `{}` · requested by {} via {}",
            self.job.id,
            sanitize(&self.job.command),
            person(&self.job.requested_by),
            self.job.source
        )
    }

    /// Progress counts and the root's newest content, in one transaction.
    async fn progress_changed(&mut self) {
        let change = JobChange::Progress {
            done: self.done as u32,
            failed: self.failed as u32,
            total: self.total as u32,
        };
        let edit = self.root_edit();
        self.write(change, edit).await;
    }

    async fn reply(&self, role: Role, msg: Message) {
        if let Some(p) = &self.printer {
            let _ = p.post("", Some("thread"), &msg).await;
        }
        let rows = self.reply_message(role, msg);
        if !rows.is_empty() {
            self.write(JobChange::Nothing, rows).await;
        }
    }

    async fn print_root(&mut self, status: JobStatus) {
        let Some(p) = &self.printer else { return };
        let msg = self.root_message(status);
        let _ = match self.printed_status {
            None => p.post("", None, &msg).await.map(|_| ()),
            Some(s) if s != status => p.update("", "", &msg).await,
            Some(_) => Ok(()),
        };
        self.printed_status = Some(status);
    }

    /// The job's end: the groups that never said they finished, the summary and the final
    /// root, written with its status and outcome in one transaction.
    pub async fn finish(&mut self, status: JobStatus, outcome: &Outcome) {
        let unfinished: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| !g.finished && (g.ok > 0 || !g.failed.is_empty()))
            .map(|(n, _)| n.clone())
            .collect();
        let mut rows = Vec::new();
        let mut printed = Vec::new();
        for g in unfinished {
            if let Some(msg) = self.group_finished(&g) {
                printed.push(msg.clone());
                rows.extend(self.reply_message(Role::Group, msg));
            }
        }
        self.job.status = status;
        self.done = self.done.max(outcome.succeeded + outcome.failed.len());
        self.failed = self.failed.max(outcome.failed.len());
        self.total = self.total.max(self.done);
        let summary = Message::text(summary_text(status, outcome)).with_context(self.about());
        printed.push(summary.clone());
        rows.extend(self.reply_message(Role::Summary, summary));
        rows.extend(self.root_edit());
        if let Some(p) = &self.printer {
            for m in &printed {
                let _ = p.post("", Some("thread"), m).await;
            }
        }
        let effects = Effects {
            audit: vec![crate::store::AuditEntry {
                at: self.clock.unix(),
                actor: "corral".into(),
                action: format!("job {} {status}", self.job.id),
                detail: outcome.summary.clone(),
                source: self.job.source,
            }],
            messages: rows,
        };
        self.save(
            JobChange::Finish {
                status,
                outcome: outcome.clone(),
            },
            effects,
        )
        .await;
        self.print_root(status).await;
    }

    /// The root message for a state.
    pub(crate) fn root_message(&self, status: JobStatus) -> Message {
        root_message(&self.job, status, self.done, self.failed, self.total)
    }
}

/// The root message of a job's thread.
pub(crate) fn root_message(
    job: &JobRecord,
    status: JobStatus,
    done: usize,
    failed: usize,
    total: usize,
) -> Message {
    let state = match status {
        JobStatus::Queued => "⏳ queued".to_string(),
        JobStatus::AwaitingApproval => "✋ awaiting approval".to_string(),
        JobStatus::Running if total > 0 => format!("🔄 running {done}/{total}"),
        JobStatus::Running => "🔄 running".to_string(),
        JobStatus::Succeeded => "✅ succeeded".to_string(),
        JobStatus::Failed if total > 0 && failed > 0 => format!("❌ {failed} of {total} failed"),
        JobStatus::Failed => "❌ failed".to_string(),
        JobStatus::Interrupted => "⚠ interrupted".to_string(),
        JobStatus::Cancelled => "🚫 cancelled".to_string(),
    };
    Message::text(format!(
        "*Job #{}* `{}` — {state}",
        job.id,
        sanitize(&job.command)
    ))
    .with_context(format!(
        "requested by {} via {}",
        person(&job.requested_by),
        job.source
    ))
}

fn plan_text(title: &str, groups: &[PlanGroup]) -> String {
    let active: usize = groups.iter().map(PlanGroup::active).sum();
    let skipped: usize = groups.iter().map(|g| g.items.len() - g.active()).sum();
    let mut text = format!(
        "*Plan:* {} — {active} to change, {skipped} skipped, in {} group{}\n",
        sanitize(title),
        groups.len(),
        if groups.len() == 1 { "" } else { "s" }
    );
    for g in groups {
        text.push_str(&format!(
            "*{}* ({} to change)\n",
            sanitize(&g.name),
            g.active()
        ));
        for item in g.items.iter().take(LIST_MAX) {
            match &item.skipped {
                None => text.push_str(&format!(
                    "• {}: {}\n",
                    sanitize(&item.target),
                    sanitize(&item.change)
                )),
                Some(why) => text.push_str(&format!(
                    "• ~{}~ skipped: {}\n",
                    sanitize(&item.target),
                    sanitize(why)
                )),
            }
        }
        if g.items.len() > LIST_MAX {
            text.push_str(&format!("• … and {} more\n", g.items.len() - LIST_MAX));
        }
    }
    text
}

fn group_text(name: &str, g: &GroupTally) -> String {
    let name = sanitize(name);
    if g.failed.is_empty() {
        return format!("✅ *{name}*: {} done", g.ok);
    }
    let mut text = format!("❌ *{name}*: {} done, {} failed\n", g.ok, g.failed.len());
    text.push_str(&failure_lines(&g.failed, false));
    text
}

fn failure_lines(failed: &[Failure], with_group: bool) -> String {
    let mut text = String::new();
    for f in failed.iter().take(LIST_MAX) {
        let target = if with_group && !f.group.is_empty() {
            format!("{}/{}", sanitize(&f.group), sanitize(&f.target))
        } else {
            sanitize(&f.target)
        };
        text.push_str(&format!(
            "• {target} — {}\n",
            crate::text::truncate(&sanitize_block(&f.reason), 500)
        ));
    }
    if failed.len() > LIST_MAX {
        text.push_str(&format!("• … and {} more\n", failed.len() - LIST_MAX));
    }
    text
}

fn summary_text(status: JobStatus, o: &Outcome) -> String {
    let head = match status {
        JobStatus::Succeeded => "✅ *Done*".to_string(),
        JobStatus::Interrupted => "⚠ *Interrupted*".to_string(),
        JobStatus::Cancelled => "🚫 *Cancelled*".to_string(),
        _ => "❌ *Failed*".to_string(),
    };
    let mut text = format!(
        "{head}: {} — {} succeeded, {} failed, {} skipped\n",
        sanitize(&o.summary),
        o.succeeded,
        o.failed.len(),
        o.skipped
    );
    text.push_str(&failure_lines(&o.failed, true));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::PlanItem;

    #[test]
    fn plan_lists_and_caps() {
        let items: Vec<PlanItem> = (0..30)
            .map(|i| PlanItem {
                target: format!("s{i}"),
                change: "1 → 2".into(),
                skipped: (i == 0).then(|| "already at 2".into()),
                details: Vec::new(),
                binds: String::new(),
            })
            .collect();
        let t = plan_text(
            "library:web:2",
            &[PlanGroup {
                name: "prod".into(),
                items,
            }],
        );
        assert!(t.contains("29 to change, 1 skipped, in 1 group"));
        assert!(t.contains("~s0~ skipped: already at 2"));
        assert!(t.contains("… and 5 more"));
    }

    #[test]
    fn summaries_escape_user_text() {
        let o = Outcome {
            succeeded: 1,
            failed: vec![Failure {
                group: "prod".into(),
                target: "<!channel>".into(),
                reason: "422 <b>".into(),
            }],
            skipped: 0,
            summary: "x".into(),
            detail: serde_json::Value::Null,
        };
        let t = summary_text(JobStatus::Failed, &o);
        assert!(t.contains("prod/&lt;!channel&gt; — 422 &lt;b&gt;"), "{t}");
    }
}
