//! The digest (`[[digest]]`): one message in its channel at each firing — the lock (who
//! holds it, for how long; blocked or not; a freeze window), the jobs awaiting approval
//! with a link to their cards, the running jobs and, when Rancher is configured, the
//! stacks behind their catalog's newest version. A digest that cannot reach Rancher says
//! so and still reports the rest.
//!
//! What needs I/O (jobs, Rancher) is gathered before the firing is claimed
//! ([`App::digest_parts`]); the lock is read in the claim's transaction and the message
//! rendered there by the pure [`render`].

use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::App;
use crate::chat::Message;
use crate::job::JobStatus;
use crate::lock::LockState;
use crate::schedule::show_time;
use crate::store::{JobRecord, StoreError};
use crate::text::{format_duration, person, sanitize};

/// At most this many jobs of each kind are listed (the rest are counted).
const MAX_LISTED: usize = 20;

/// A stack behind its catalog's newest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutdatedStack {
    /// `catalog:template`.
    pub template: String,
    pub environment: String,
    pub stack: String,
    pub version: String,
    pub newest: String,
}

/// What the digest says about Rancher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RancherPart {
    /// No Rancher is configured: the digest says nothing about stacks.
    NotConfigured,
    /// Rancher could not be asked (why).
    Unreachable(String),
    Outdated(Vec<OutdatedStack>),
}

/// Everything but the lock, gathered before the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DigestParts {
    /// Jobs awaiting approval, with their card (`channel`, `ts`) when it was posted.
    pub pending: Vec<(JobRecord, Option<(String, String)>)>,
    pub running: Vec<JobRecord>,
    pub rancher: RancherPart,
    /// The freeze line of `/release status`, if the policy has freezes.
    pub freeze: Option<String>,
}

impl App {
    /// Gathers a digest's parts: jobs from the store, outdated stacks from Rancher.
    pub(super) async fn digest_parts(&self, now: Timestamp) -> Result<DigestParts, StoreError> {
        let jobs = self.store.unfinished_jobs().await?;
        let mut pending = Vec::new();
        let mut running = Vec::new();
        for j in jobs {
            match j.status {
                JobStatus::AwaitingApproval => {
                    let card = self.store.messages(j.id).await?.into_iter().next();
                    pending.push((j, card));
                }
                JobStatus::Running => running.push(j),
                _ => {}
            }
        }
        Ok(DigestParts {
            pending,
            running,
            rancher: self.outdated_stacks().await,
            freeze: super::freeze::freeze_status(&self.config.policy.freezes, now),
        })
    }

    /// The stacks behind their catalog's newest version, or why they are unknown.
    async fn outdated_stacks(&self) -> RancherPart {
        let rancher = &self.runner.domains().rancher;
        let cfg = rancher.config();
        if cfg.url.is_none() || cfg.access_key.is_none() || cfg.secret_key.is_none() {
            return RancherPart::NotConfigured;
        }
        let client = match rancher.client() {
            Ok(c) => c,
            Err(e) => return RancherPart::Unreachable(e.to_string()),
        };
        match crate::rancher::outdated::outdated_stacks(&client, &cfg.environments).await {
            Ok(list) => RancherPart::Outdated(
                list.into_iter()
                    .map(|o| OutdatedStack {
                        template: o.template,
                        environment: o.environment,
                        stack: o.stack,
                        version: o.version,
                        newest: o.newest,
                    })
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "digest: Rancher could not be read");
                RancherPart::Unreachable(e.to_string())
            }
        }
    }
}

/// A link to a message Slack posted (its archive permalink form).
fn card_link(channel: &str, ts: &str) -> String {
    let digits: String = ts.chars().filter(char::is_ascii_digit).collect();
    format!("<https://slack.com/archives/{channel}/p{digits}|card>")
}

fn held_for(since: i64, now: Timestamp) -> String {
    let s = now.as_second().saturating_sub(since).max(0);
    format_duration(Duration::from_secs(s as u64))
}

/// The digest message. `firing` is the time it was scheduled for; `late`, how late it is
/// sent (corral was down at the time).
pub(crate) fn render(
    lock: &LockState,
    parts: &DigestParts,
    firing: Timestamp,
    late: Option<Duration>,
    now: Timestamp,
    tz: &TimeZone,
) -> Message {
    let mut out = format!("*Release digest* — {}", show_time(firing, tz));
    if let Some(late) = late {
        out.push_str(&format!(
            "\n_Sent {} late: corral was not running at the scheduled time._",
            format_duration(late)
        ));
    }
    out.push_str("\n\n*Lock*\n");
    match &lock.running {
        Some(h) => out.push_str(&format!(
            "• 🚀 Release held by {} for {}{}\n",
            person(&h.who),
            held_for(h.since, now),
            if h.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", sanitize(&h.reason))
            }
        )),
        None => out.push_str("• No release is running.\n"),
    }
    if let Some(b) = &lock.blocked {
        out.push_str(&format!(
            "• ⛔ Releases blocked by {} for {}\n",
            person(&b.who),
            held_for(b.since, now)
        ));
    }
    if let Some(f) = &parts.freeze {
        out.push_str(&format!("• {f}\n"));
    }
    out.push_str(&format!(
        "\n*Awaiting approval* ({})\n",
        parts.pending.len()
    ));
    if parts.pending.is_empty() {
        out.push_str("• none\n");
    }
    for (j, card) in parts.pending.iter().take(MAX_LISTED) {
        let link = card
            .as_ref()
            .map(|(c, ts)| format!(" — {}", card_link(c, ts)))
            .unwrap_or_default();
        out.push_str(&format!(
            "• #{} `{}` by {}, waiting {}{link}\n",
            j.id,
            sanitize(&j.command),
            person(&j.requested_by),
            held_for(j.created_at, now)
        ));
    }
    more(&mut out, parts.pending.len());
    out.push_str(&format!("\n*Running jobs* ({})\n", parts.running.len()));
    if parts.running.is_empty() {
        out.push_str("• none\n");
    }
    for j in parts.running.iter().take(MAX_LISTED) {
        out.push_str(&format!(
            "• #{} `{}` by {}, {}/{} done\n",
            j.id,
            sanitize(&j.command),
            person(&j.requested_by),
            j.done,
            j.total
        ));
    }
    more(&mut out, parts.running.len());
    rancher_section(&mut out, &parts.rancher);
    Message::text(out.trim_end().to_string())
}

fn more(out: &mut String, n: usize) {
    if n > MAX_LISTED {
        out.push_str(&format!("• … and {} more\n", n - MAX_LISTED));
    }
}

fn rancher_section(out: &mut String, part: &RancherPart) {
    match part {
        RancherPart::NotConfigured => {}
        RancherPart::Unreachable(why) => out.push_str(&format!(
            "\n*Stacks behind their catalog*\n• ⚠️ Rancher could not be reached: {}\n",
            sanitize(why)
        )),
        RancherPart::Outdated(stacks) if stacks.is_empty() => out.push_str(
            "\n*Stacks behind their catalog*\n• none: every stack runs its template's newest version\n",
        ),
        RancherPart::Outdated(stacks) => {
            out.push_str(&format!(
                "\n*Stacks behind their catalog* ({})\n",
                stacks.len()
            ));
            let mut sorted = stacks.clone();
            sorted.sort_by(|a, b| {
                (&a.template, &a.environment, &a.stack).cmp(&(&b.template, &b.environment, &b.stack))
            });
            let mut current: Option<&str> = None;
            for (shown, s) in sorted.iter().enumerate() {
                if shown == 4 * MAX_LISTED {
                    out.push_str(&format!("• … and {} more\n", sorted.len() - shown));
                    break;
                }
                if current != Some(s.template.as_str()) {
                    out.push_str(&format!(
                        "`{}` (newest {}):\n",
                        sanitize(&s.template),
                        sanitize(&s.newest)
                    ));
                    current = Some(&s.template);
                }
                out.push_str(&format!(
                    "• {} / {} at {}\n",
                    sanitize(&s.environment),
                    sanitize(&s.stack),
                    sanitize(&s.version)
                ));
            }
        }
    }
}
