//! Fanning a deploy out to hosts and collecting what they report.
//!
//! The bot fires one event carrying the manifest URL with the job id in its fragment
//! (`…/manifest.yml#corral-job=42`): through the Serf agent it talks to (`serf event`,
//! the real program) or Consul (`PUT /v1/event/fire/deploy`). Each host's `corral agent
//! --report-url …` posts its result to `POST /api/v1/deploys/42/reports`; this module
//! polls the store for those reports until every expected host answered or the deadline
//! passed, and reports through [`ProgressTx`] only.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use super::Config as DeployConfig;
use crate::command::DeployTarget;
use crate::job::{Failure, Outcome, Progress, ProgressTx};
use crate::store::{DeployReport, Store};

/// The user-event / Consul event name (stretcher's convention).
pub(crate) const EVENT_NAME: &str = "deploy";

/// Deadline of one call to Serf or Consul.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// How often the store is checked for new reports.
const POLL: Duration = Duration::from_millis(200);

/// The event payload: the manifest URL with the job marker as its fragment.
pub(crate) fn payload(manifest_url: &str, job: i64) -> String {
    format!(
        "{}#corral-job={job}",
        super::source::without_fragment(manifest_url)
    )
}

#[derive(Deserialize)]
struct SerfMembers {
    #[serde(default)]
    members: Vec<SerfMember>,
}

#[derive(Deserialize)]
struct SerfMember {
    name: String,
    #[serde(default)]
    status: String,
}

/// Runs the `serf` CLI; the RPC auth key goes in its environment (`SERF_RPC_AUTH`, which
/// serf reads), never on its command line.
async fn run_serf(cfg: &DeployConfig, args: &[String]) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("serf");
    cmd.env_remove("SERF_RPC_AUTH");
    if let Some(key) = &cfg.serf_rpc_auth {
        cmd.env("SERF_RPC_AUTH", key.expose());
    }
    let out = tokio::time::timeout(
        CALL_TIMEOUT,
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("serf {} did not answer within 15s", args.join(" ")))?
    .map_err(|e| format!("cannot run serf: {e} (is serf installed?)"))?;
    if !out.status.success() {
        return Err(format!(
            "serf {} failed: {}{}",
            args.first().map(String::as_str).unwrap_or(""),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A client for Consul: its CA trusted when one is set, its ACL token on every request.
fn consul_client(cfg: &DeployConfig) -> Result<reqwest::Client, String> {
    let mut b = crate::http_client_builder();
    if let Some(pem) = &cfg.consul_ca {
        let cert = reqwest::Certificate::from_pem(pem).map_err(|e| format!("Consul CA: {e}"))?;
        b = b.add_root_certificate(cert);
    }
    if let Some(token) = &cfg.consul_token {
        let mut h = reqwest::header::HeaderMap::new();
        let mut v = reqwest::header::HeaderValue::from_str(token.expose())
            .map_err(|_| "the Consul token is not a valid header value".to_string())?;
        v.set_sensitive(true);
        h.insert("x-consul-token", v);
        b = b.default_headers(h);
    }
    b.build().map_err(|e| format!("HTTP client: {e}"))
}

/// The hosts that must answer: the configured list, else Serf's alive members or
/// Consul's catalog nodes.
pub(crate) async fn expected_hosts(
    target: DeployTarget,
    cfg: &DeployConfig,
) -> Result<Vec<String>, String> {
    if !cfg.hosts.is_empty() {
        return Ok(cfg.hosts.clone());
    }
    let mut hosts = match target {
        DeployTarget::Serf => {
            let out = run_serf(
                cfg,
                &[
                    "members".into(),
                    format!("-rpc-addr={}", cfg.serf_rpc),
                    "-format=json".into(),
                ],
            )
            .await?;
            let m: SerfMembers = serde_json::from_str(&out)
                .map_err(|e| format!("serf members answered something unexpected: {e}"))?;
            m.members
                .into_iter()
                .filter(|m| m.status == "alive")
                .map(|m| m.name)
                .collect()
        }
        DeployTarget::Consul => {
            #[derive(Deserialize)]
            struct Node {
                #[serde(rename = "Node")]
                node: String,
            }
            let url = cfg
                .consul_url
                .join("v1/catalog/nodes")
                .map_err(|e| format!("Consul URL: {e}"))?;
            let resp = consul_client(cfg)?
                .get(url.clone())
                .timeout(CALL_TIMEOUT)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {}", crate::text::error_chain(&e)))?;
            if !resp.status().is_success() {
                return Err(format!("GET {url}: HTTP {}", resp.status()));
            }
            let nodes: Vec<Node> = resp
                .json()
                .await
                .map_err(|e| format!("GET {url}: unexpected answer: {e}"))?;
            nodes.into_iter().map(|n| n.node).collect()
        }
        DeployTarget::Local => Vec::new(),
    };
    hosts.sort();
    hosts.dedup();
    if hosts.is_empty() {
        return Err(format!(
            "no {} hosts to deploy to (no alive members; set CORRAL_DEPLOY_HOSTS to name them)",
            target.name()
        ));
    }
    Ok(hosts)
}

/// Fires the deploy event.
pub(crate) async fn fire(
    target: DeployTarget,
    cfg: &DeployConfig,
    payload: &str,
) -> Result<(), String> {
    match target {
        DeployTarget::Serf => {
            run_serf(
                cfg,
                &[
                    "event".into(),
                    format!("-rpc-addr={}", cfg.serf_rpc),
                    "-coalesce=false".into(),
                    EVENT_NAME.into(),
                    payload.into(),
                ],
            )
            .await?;
            Ok(())
        }
        DeployTarget::Consul => {
            let url = cfg
                .consul_url
                .join(&format!("v1/event/fire/{EVENT_NAME}"))
                .map_err(|e| format!("Consul URL: {e}"))?;
            let resp = consul_client(cfg)?
                .put(url.clone())
                .body(payload.to_string())
                .timeout(CALL_TIMEOUT)
                .send()
                .await
                .map_err(|e| format!("PUT {url}: {}", crate::text::error_chain(&e)))?;
            if !resp.status().is_success() {
                return Err(format!("PUT {url}: HTTP {}", resp.status()));
            }
            Ok(())
        }
        DeployTarget::Local => Ok(()),
    }
}

/// Waits for the hosts' reports until all `expected` answered or `deadline` passed.
pub(crate) async fn collect(
    store: &dyn Store,
    job: i64,
    group: &str,
    expected: &[String],
    deadline: Duration,
    progress: &ProgressTx,
) -> Outcome {
    let until = tokio::time::Instant::now() + deadline;
    let mut c = Collector {
        group,
        progress,
        want: expected.iter().map(String::as_str).collect(),
        seen: BTreeSet::new(),
        outcome: Outcome::default(),
        unexpected: Vec::new(),
        details: Vec::new(),
    };
    loop {
        match store.deploy_reports(job).await {
            Ok(reports) => reports.into_iter().for_each(|r| c.take(r)),
            Err(e) => tracing::warn!(job, error = %e, "cannot read deploy reports"),
        }
        if c.all_answered() || tokio::time::Instant::now() >= until {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    progress.send(Progress::GroupFinished {
        group: group.to_string(),
    });
    c.finish(deadline)
}

/// What [`collect`] has gathered so far.
struct Collector<'a> {
    group: &'a str,
    progress: &'a ProgressTx,
    want: BTreeSet<&'a str>,
    seen: BTreeSet<String>,
    outcome: Outcome,
    unexpected: Vec<String>,
    details: Vec<serde_json::Value>,
}

impl Collector<'_> {
    fn all_answered(&self) -> bool {
        self.want.iter().all(|h| self.seen.contains(*h))
    }

    /// Counts one report, the first from its host only.
    fn take(&mut self, r: DeployReport) {
        if !self.seen.insert(r.host.clone()) {
            return;
        }
        self.details.push(serde_json::json!({
            "host": r.host, "ok": r.ok, "duration_ms": r.duration_ms,
            "error": r.error,
        }));
        if !self.want.contains(r.host.as_str()) {
            self.progress.note(format!(
                "Report from {} which was not expected to answer: {}",
                r.host,
                if r.ok { "succeeded" } else { "failed" }
            ));
            self.unexpected.push(r.host.clone());
            return;
        }
        let detail = if r.ok {
            String::new()
        } else {
            failure_detail(&r)
        };
        if r.ok {
            self.outcome.succeeded += 1;
        } else {
            self.outcome.failed.push(Failure {
                group: self.group.to_string(),
                target: r.host.clone(),
                reason: detail.clone(),
            });
        }
        self.progress.send(Progress::TargetFinished {
            group: self.group.to_string(),
            target: r.host,
            ok: r.ok,
            detail,
        });
    }

    /// Names the hosts that never answered and writes the summary.
    fn finish(self, deadline: Duration) -> Outcome {
        let Collector {
            group,
            progress,
            want,
            seen,
            mut outcome,
            unexpected,
            details,
        } = self;
        let missing: Vec<&str> = want
            .iter()
            .copied()
            .filter(|h| !seen.contains(*h))
            .collect();
        if !missing.is_empty() {
            progress.note(format!(
                "⌛ No report from {} host{} within {}: {}",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                crate::text::format_duration(deadline),
                missing.join(", ")
            ));
            for h in &missing {
                outcome.failed.push(Failure {
                    group: group.to_string(),
                    target: h.to_string(),
                    reason: "never answered (no report before the deadline)".into(),
                });
            }
        }
        outcome.summary = format!(
            "{}/{} hosts done, {} failed{}",
            outcome.succeeded + outcome.failed.len() - missing.len(),
            want.len(),
            outcome.failed.len() - missing.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!(", {} never answered", missing.len())
            }
        );
        outcome.detail = serde_json::json!({
            "hosts": details,
            "missing": missing,
            "unexpected": unexpected,
        });
        outcome
    }
}

/// A failed host's error and the end of its log, as the thread shows it: the tail
/// scrubbed, and any triple backtick in it broken so it cannot close its block early.
fn failure_detail(r: &DeployReport) -> String {
    let mut d = r.error.clone().unwrap_or_else(|| "failed".into());
    if !r.log_tail.is_empty() {
        d.push_str("\n```\n");
        d.push_str(&fenced(&super::scrub::report_tail(&r.log_tail, 15, 1500)));
        d.push_str("\n```");
    }
    d
}

/// `text` made safe inside a ``` block.
pub(crate) fn fenced(text: &str) -> String {
    text.replace("```", "`\u{200B}``")
}
