//! Progress events → one Slack thread per job (SPEC §3).
//!
//! * a **root message** in the channel, edited in place: `queued → running 3/10 →
//!   ✅ succeeded / ❌ 2 of 10 failed / ⚠ interrupted`; edits are coalesced to at most
//!   one a second, the final state always written;
//! * thread replies for the plan, for each group (environment, host set) as it finishes,
//!   for notes, and a final summary with the failures and their reasons.
//!
//! Many targets are summarised, never one message per target. The root's `ts` is stored,
//! so a restarted bot edits the same thread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

use crate::chat::{Chat, Message};
use crate::clock::SharedClock;
use crate::job::{Failure, JobStatus, Outcome, PlanGroup, Progress};
use crate::store::{JobRecord, Store};
use crate::text::{person, sanitize, sanitize_block};

/// Minimum time between two edits of the root message.
const EDIT_EVERY: Duration = Duration::from_secs(1);
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
    chat: Arc<dyn Chat>,
    store: Arc<dyn Store>,
    clock: SharedClock,
    job: JobRecord,
    /// `(channel, root ts)` of the thread(s).
    threads: Vec<(String, String)>,
    total: usize,
    done: usize,
    failed: usize,
    groups: BTreeMap<String, GroupTally>,
    dirty: bool,
    last_edit: Option<Instant>,
}

impl Reporter {
    /// Opens the job's thread: reuses stored root messages, or posts a new root.
    pub async fn open(
        chat: Arc<dyn Chat>,
        store: Arc<dyn Store>,
        clock: SharedClock,
        job: JobRecord,
    ) -> Reporter {
        let threads = store.messages(job.id).await.unwrap_or_default();
        let mut r = Reporter {
            chat,
            store,
            clock,
            total: job.total as usize,
            done: job.done as usize,
            failed: job.failed as usize,
            job,
            threads,
            groups: BTreeMap::new(),
            dirty: false,
            last_edit: None,
        };
        if r.threads.is_empty()
            && let Some(channel) = r.job.channel.clone()
        {
            let root = r.root_message(r.job.status);
            match r.chat.post(&channel, None, &root).await {
                Ok(ts) => {
                    if let Err(e) = r.store.set_message(r.job.id, &channel, &ts).await {
                        tracing::warn!(job = r.job.id, error = %e, "root message id not stored");
                    }
                    r.threads.push((channel, ts));
                }
                Err(e) => tracing::warn!(job = r.job.id, error = %e, "root message not posted"),
            }
        }
        r
    }

    /// Consumes progress events until the sender is dropped.
    pub async fn run(&mut self, mut rx: UnboundedReceiver<Progress>) {
        let mut tick = tokio::time::interval(EDIT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.on(ev).await,
                    None => break,
                },
                _ = tick.tick() => self.flush(false).await,
            }
        }
    }

    /// Marks the job running.
    pub async fn running(&mut self) {
        self.job.status = JobStatus::Running;
        self.flush(true).await;
    }

    async fn on(&mut self, ev: Progress) {
        match ev {
            Progress::Plan { title, groups } => {
                self.total = groups.iter().map(PlanGroup::active).sum();
                for g in &groups {
                    self.groups.entry(g.name.clone()).or_default();
                }
                self.reply(&plan_text(&title, &groups)).await;
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
                let g = self.groups.entry(group.clone()).or_default();
                if g.finished {
                    return;
                }
                g.finished = true;
                let text = group_text(&group, g);
                self.reply(&text).await;
            }
            // Notes carry text from outside (environment names, Rancher errors, log
            // tails): escaped so none of it can become a mention or a link.
            Progress::Note { text } => self.reply(&sanitize_block(&text)).await,
        }
    }

    async fn progress_changed(&mut self) {
        self.dirty = true;
        if let Err(e) = self
            .store
            .set_job_progress(
                self.job.id,
                self.done as u32,
                self.failed as u32,
                self.total as u32,
                self.clock.unix(),
            )
            .await
        {
            tracing::warn!(job = self.job.id, error = %e, "progress not stored");
        }
    }

    /// Writes the root message if it changed (and a second has passed, unless `force`).
    async fn flush(&mut self, force: bool) {
        let due = self.last_edit.is_none_or(|t| t.elapsed() >= EDIT_EVERY);
        if !(force || (self.dirty && due)) {
            return;
        }
        self.dirty = false;
        self.last_edit = Some(Instant::now());
        let msg = self.root_message(self.job.status);
        for (channel, ts) in &self.threads {
            if let Err(e) = self.chat.update(channel, ts, &msg).await {
                tracing::warn!(job = self.job.id, error = %e, "root message not edited");
            }
        }
    }

    async fn reply(&self, text: &str) {
        for (channel, ts) in &self.threads {
            if let Err(e) = self
                .chat
                .post(channel, Some(ts), &Message::text(text))
                .await
            {
                tracing::warn!(job = self.job.id, error = %e, "thread reply not posted");
            }
        }
    }

    /// Posts the groups that never said they finished, the summary, and the final root.
    pub async fn finish(&mut self, status: JobStatus, outcome: &Outcome) {
        let unfinished: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| !g.finished && (g.ok > 0 || !g.failed.is_empty()))
            .map(|(n, _)| n.clone())
            .collect();
        for g in unfinished {
            self.on(Progress::GroupFinished { group: g }).await;
        }
        self.job.status = status;
        self.done = self.done.max(outcome.succeeded + outcome.failed.len());
        self.failed = self.failed.max(outcome.failed.len());
        self.total = self.total.max(self.done);
        self.reply(&summary_text(status, outcome)).await;
        self.flush(true).await;
    }

    /// The root message for a state.
    pub fn root_message(&self, status: JobStatus) -> Message {
        root_message(&self.job, status, self.done, self.failed, self.total)
    }
}

/// The root message of a job's thread.
pub fn root_message(
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
