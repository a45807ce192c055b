//! Deploys: stretcher's manifest format and steps (`/deploy`, `corral agent`).
//! Knows nothing about Slack: it reports through [`crate::job::ProgressTx`].
//!
//! * [`manifest`] parses and validates a manifest; [`source`] fetches URLs;
//!   [`extract`] unpacks archives safely; [`sync`] puts the tree in place;
//!   [`hooks`] runs the manifest's commands; [`steps`] is one deploy on one host.
//! * [`agent`] is `corral agent` (stdin events, replay protection); [`report`] is what
//!   it posts back to the bot and how.
//! * [`fanout`] fires a deploy to Serf or Consul hosts and collects their reports;
//!   [`run`] is the `/deploy` job.
//!
//! Decisions where stretcher or the spec were silent:
//!
//! * The archive is streamed once: downloaded, hashed (on the download task) and
//!   extracted (on a blocking thread) into a private staging directory; `dest` is only
//!   touched after the checksum matched and every entry passed the safety checks. So pre
//!   commands run after the download and extraction, before the sync, as in stretcher.
//! * Every manifest rule is checked at load time (a bad `sync_strategy` is refused
//!   before any command runs, without failure commands); `dest` must be absolute.
//! * Commands run in `dest` when it exists as a directory, else in the agent's working
//!   directory (stretcher's `rm -fr dest` pre-command pattern keeps working).
//! * `release`: `dest/releases/<UTC time>-<checksum prefix>`, `dest/current` a relative
//!   symlink switched by rename, `keep_releases` (default 5) newest kept.
//! * Fan-out: the event payload is the manifest URL with `#corral-job=<id>` appended.
//!   HTTP clients never send a fragment and stretcher reads only the path for s3/file, so
//!   plain stretcher agents deploy the same manifest; `corral agent` reads the job id from
//!   it and posts to its own configured `--report-url` (never to a URL taken from the
//!   event, so the token cannot be lured elsewhere).
//! * Hosts expected to answer: `CORRAL_DEPLOY_HOSTS` if set, else Serf's alive members
//!   or Consul's catalog nodes. A host that never reports is a failure named in a note.

pub mod agent;
pub mod allow;
mod config;
pub mod dest;
pub mod extract;
pub mod fanout;
pub mod hooks;
pub mod local;
pub mod log;
pub mod manifest;
pub mod manifest_limits;
pub mod report;
pub mod scrub;
pub mod source;
pub mod steps;
pub mod sync;
pub mod template;

use std::time::Duration;

use crate::command::{DeployCmd, DeployTarget};
pub use config::{Config, own_secret};

use crate::job::{Failure, JobError, Outcome, PlanGroup, PlanItem, Progress, ProgressTx};
use crate::store::Store;
pub(crate) use allow::check_prefixes as check_allow_prefixes;
pub use allow::{allowed, not_allowed_text};

/// Deadline for fetching a manifest in the bot.
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(30);

fn not_allowed(what: &str, url: &str, allow: &[String]) -> JobError {
    JobError::new(not_allowed_text(what, url, allow))
}

/// Runs `/deploy <manifest-url>`: fetches and validates the manifest first, then runs
/// it here (`--target local`) or fans it out to Serf / Consul hosts and collects their
/// reports. `--dry-run` stops after the plan.
pub async fn run(
    cfg: &Config,
    reports: &dyn Store,
    job_id: i64,
    cmd: &DeployCmd,
    progress: ProgressTx,
) -> Result<Outcome, JobError> {
    let allow = &cfg.allow;
    if !allowed(allow, &cmd.manifest_url) {
        return Err(not_allowed("manifest", &cmd.manifest_url, allow));
    }
    let log = log::DeployLog::new(false);
    let text = source::fetch_text(&cmd.manifest_url, Some(allow), MANIFEST_TIMEOUT, &log)
        .await
        .map_err(|e| JobError::new(format!("cannot fetch the manifest: {e}")))?;
    // Templates are expanded where the manifest runs, never with the bot's environment.
    // Parsed on a blocking thread: never on the async workers that answer `/healthz` and
    // Slack.
    let url = cmd.manifest_url.clone();
    let m = tokio::task::spawn_blocking(move || template::parse_opaque(&text, Some(&url)))
        .await
        .map_err(|e| JobError::new(format!("the manifest parser crashed: {e}")))?
        .map_err(|e| JobError::new(format!("manifest {} refused: {e}", cmd.manifest_url)))?;
    if let Some(src) = &m.src
        && !allowed(allow, src)
    {
        return Err(not_allowed("src", src, allow));
    }
    if let Some(d) = &m.dest {
        // Here, the bot's own directory is protected too: a local deploy's child agent
        // works in it.
        let protected = match cmd.target {
            DeployTarget::Local => std::env::current_dir().into_iter().collect(),
            _ => Vec::new(),
        };
        dest::check(d, &protected)
            .map_err(|e| JobError::new(format!("manifest {} refused: {e}", cmd.manifest_url)))?;
    }
    let change = match (&m.src, &m.dest) {
        (Some(src), Some(dest)) => {
            format!("{src} → {} ({})", dest.display(), m.sync_strategy.name())
        }
        _ => "commands only".to_string(),
    };
    match cmd.target {
        DeployTarget::Local => local(cfg, cmd, change, progress).await,
        target => fan_out(cfg, reports, job_id, cmd, target, change, progress).await,
    }
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

async fn local(
    cfg: &Config,
    cmd: &DeployCmd,
    change: String,
    progress: ProgressTx,
) -> Result<Outcome, JobError> {
    let group = "local".to_string();
    let host = this_host();
    progress.send(Progress::Plan {
        title: format!("deploy {} on the bot's host", cmd.manifest_url),
        groups: vec![PlanGroup {
            name: group.clone(),
            items: vec![PlanItem {
                target: host.clone(),
                change,
                skipped: None,
                details: Vec::new(),
                binds: String::new(),
            }],
        }],
    });
    if cmd.dry_run {
        progress.note("Dry run: the manifest is valid; nothing ran.");
        return Ok(Outcome {
            skipped: 1,
            summary: "dry run: manifest valid, nothing ran".into(),
            ..Outcome::default()
        });
    }
    let fetch_timeout = cmd.timeout.unwrap_or(cfg.report_timeout);
    let ran = local::run_agent(cfg, &cmd.manifest_url, fetch_timeout)
        .await
        .map_err(JobError::new)?;
    let ok = ran.ok;
    let detail = if ok {
        String::new()
    } else {
        format!(
            "{}\n```\n{}\n```",
            scrub::scrub(&ran.last_line),
            fanout::fenced(&scrub::report_tail(&ran.output, 15, 1500))
        )
    };
    progress.send(Progress::TargetFinished {
        group: group.clone(),
        target: host.clone(),
        ok,
        detail: detail.clone(),
    });
    progress.send(Progress::GroupFinished {
        group: group.clone(),
    });
    Ok(Outcome {
        succeeded: usize::from(ok),
        failed: if ok {
            Vec::new()
        } else {
            vec![Failure {
                group,
                target: host.clone(),
                reason: detail,
            }]
        },
        skipped: 0,
        summary: format!(
            "deploy on {host} {} in {}",
            if ok { "succeeded" } else { "failed" },
            crate::text::format_duration(Duration::from_secs(ran.duration.as_secs().max(1)))
        ),
        detail: serde_json::json!({
            "host": host,
            "ok": ok,
            "duration_ms": ran.duration.as_millis() as u64,
            "log_tail": scrub::report_tail(&ran.output, report::TAIL_LINES, report::TAIL_BYTES),
        }),
    })
}

async fn fan_out(
    cfg: &Config,
    reports: &dyn Store,
    job_id: i64,
    cmd: &DeployCmd,
    target: DeployTarget,
    change: String,
    progress: ProgressTx,
) -> Result<Outcome, JobError> {
    if !cfg.reports_authenticated {
        return Err(JobError::new(
            "a fan-out needs CORRAL_API_TOKEN: hosts report back with it (corral agent --report-url URL, CORRAL_REPORT_TOKEN)",
        ));
    }
    let group = target.name().to_string();
    let hosts = fanout::expected_hosts(target, cfg)
        .await
        .map_err(JobError::new)?;
    progress.send(Progress::Plan {
        title: format!("deploy {} via {}", cmd.manifest_url, target.name()),
        groups: vec![PlanGroup {
            name: group.clone(),
            items: hosts
                .iter()
                .map(|h| PlanItem {
                    target: h.clone(),
                    change: change.clone(),
                    skipped: None,
                    details: Vec::new(),
                    binds: String::new(),
                })
                .collect(),
        }],
    });
    if cmd.dry_run {
        progress.note(format!(
            "Dry run: the manifest is valid; no {} event was fired.",
            target.name()
        ));
        return Ok(Outcome {
            skipped: hosts.len(),
            summary: "dry run: manifest valid, nothing fired".into(),
            ..Outcome::default()
        });
    }
    // Before the event: from now on the report endpoint takes these hosts only.
    reports
        .expect_deploy_hosts(job_id, &hosts)
        .await
        .map_err(|e| JobError::new(format!("cannot record the expected hosts: {e}")))?;
    let payload = fanout::payload(&cmd.manifest_url, job_id);
    fanout::fire(target, cfg, &payload)
        .await
        .map_err(|e| JobError::new(format!("cannot fire the deploy event: {e}")))?;
    let deadline = cmd.timeout.unwrap_or(cfg.report_timeout);
    let outcome = fanout::collect(reports, job_id, &group, &hosts, deadline, &progress).await;
    Ok(outcome)
}
