//! `corral agent`: stretcher's command line (SPEC §6, reference/stretcher.md §1, §8,
//! §10). It reads one event from stdin (a bare manifest URL, a Consul watch event array
//! or a Serf user-event payload), runs the manifest, and with `--report-url` tells the
//! bot how it went.
//!
//! Departures from stretcher, on purpose: the Consul event with the highest `LTime` is
//! chosen (not merely the last element), an event id already applied on this host is
//! skipped, also after a restart (a small state file), and the result is posted back.

use std::ffi::OsString;
use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::hooks::{HookOpts, Output};
use super::log::DeployLog;
use super::manifest;
use super::source;
use super::steps::{self, DeployOpts};

const USAGE: &str = "Usage: corral agent [flags] < event

Reads a manifest URL, a Consul watch event array or a Serf user-event payload on stdin
and deploys it (stretcher-compatible). Flags take one or two dashes, `--x=v` or `--x v`.

  --max-bandwidth SIZE   limit the download (10M = 10,000,000 B/s, 10MiB, 1.0kB); alias --max-band-width
  --timeout DUR          deadline for fetching src (seconds, or 30s / 2m); 0 = none
  --random-delay DUR     sleep a random time below DUR first (seconds or 30s)
  --retry N              retries when opening src fails (default 0)
  --retry-wait DUR       wait between retries (default 3s)
  --rsync-verbose FLAG   \"\", -v, -vv or -vvv (default -v)
  --command-timeout DUR  deadline of each manifest command (default 30m; 0 = none)
  --report-url URL       post the result to the bot (or CORRAL_REPORT_URL); a base URL gets
                         /api/v1/deploys/<job>/reports appended, `{job}` is replaced
  --report-token TOKEN   API token for the report (or CORRAL_REPORT_TOKEN / CORRAL_API_TOKEN)
  --host NAME            name reported (default SERF_SELF_NAME, CORRAL_HOST, the hostname)
  --state-file PATH      where applied Consul event ids are kept (or CORRAL_AGENT_STATE)
  -v, --version          print the version
  -h, --help             this text

Exit status: 0 on success, 1 on failure (0 under consul watch, when CONSUL_INDEX is set),
2 for a bad flag.";

/// The agent's settings, from flags and environment.
#[derive(Debug, Clone)]
pub struct AgentOpts {
    pub deploy: DeployOpts,
    pub random_delay: Duration,
    pub report_url: Option<String>,
    pub report_token: Option<String>,
    pub host: String,
    pub state_file: PathBuf,
}

enum Parsed {
    Run(Box<AgentOpts>),
    Help,
    Version,
}

/// A flag error and its exit code.
struct FlagError(String, i32);

/// `corral agent` — returns the process exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let opts = match parse_args(args, &env) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return 0;
        }
        Ok(Parsed::Version) => {
            println!("corral agent {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Err(FlagError(e, code)) => {
            eprintln!("corral agent: {e}\n\n{USAGE}");
            return code;
        }
    };
    let under_consul = env("CONSUL_INDEX").is_some();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corral agent: cannot start: {e}");
            return 1;
        }
    };
    let log = DeployLog::new(true);
    // SIGINT / SIGTERM end the run like stretcher's cancelled context: the work is
    // dropped (its staging directory removed, its commands killed) and the exit status
    // says it failed.
    let result = rt.block_on(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => return Err(format!("cannot watch SIGTERM: {e}")),
            };
        tokio::select! {
            r = run(&opts, &log, std::io::BufReader::new(std::io::stdin())) => r,
            _ = tokio::signal::ctrl_c() => Err("context canceled".to_string()),
            _ = term.recv() => Err("context canceled".to_string()),
        }
    });
    // A stdin read may still be blocked; do not wait for it.
    rt.shutdown_background();
    match result {
        Ok(()) => 0,
        Err(e) => {
            log.line(e);
            if under_consul { 0 } else { 1 }
        }
    }
}

fn parse_args(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, FlagError> {
    let bad = |s: String| FlagError(s, 2);
    let mut o = AgentOpts {
        deploy: DeployOpts {
            hooks: HookOpts {
                timeout: Some(Duration::from_secs(30 * 60)),
                output: Output::Inherit,
            },
            ..DeployOpts::default()
        },
        random_delay: Duration::ZERO,
        report_url: env("CORRAL_REPORT_URL"),
        report_token: env("CORRAL_REPORT_TOKEN").or_else(|| env("CORRAL_API_TOKEN")),
        host: env("CORRAL_HOST")
            .or_else(|| env("SERF_SELF_NAME"))
            .or_else(hostname)
            .unwrap_or_else(|| "unknown-host".into()),
        state_file: env("CORRAL_AGENT_STATE")
            .map(PathBuf::from)
            .unwrap_or_else(default_state_file),
    };
    let mut explicit_host = None;
    let mut it = args.into_iter();
    while let Some(raw) = it.next() {
        let raw = raw
            .into_string()
            .map_err(|a| bad(format!("argument {a:?} is not UTF-8")))?;
        let Some(stripped) = raw.strip_prefix("--").or_else(|| raw.strip_prefix('-')) else {
            return Err(bad(format!(
                "unexpected argument {raw:?} (the manifest URL comes on stdin)"
            )));
        };
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (stripped, None),
        };
        match name {
            "h" | "help" => return Ok(Parsed::Help),
            "v" | "version" => return Ok(Parsed::Version),
            _ => {}
        }
        let mut value = || -> Result<String, FlagError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| bad(format!("flag -{name} needs a value"))),
            }
        };
        match name {
            "max-bandwidth" | "max-band-width" => {
                let v = value()?;
                o.deploy.max_bandwidth =
                    if v.is_empty() {
                        None
                    } else {
                        Some(parse_size(&v).map_err(|e| {
                            FlagError(format!("Cannot parse -max-bandwidth {e}"), 1)
                        })?)
                    };
            }
            "timeout" => {
                let d = parse_duration(&value()?).map_err(|e| bad(format!("-timeout: {e}")))?;
                o.deploy.fetch_timeout = (!d.is_zero()).then_some(d);
            }
            "random-delay" => {
                o.random_delay =
                    parse_duration(&value()?).map_err(|e| bad(format!("-random-delay: {e}")))?;
            }
            "retry" => {
                o.deploy.retry = value()?
                    .parse()
                    .map_err(|_| bad("-retry needs a whole number".into()))?;
            }
            "retry-wait" => {
                o.deploy.retry_wait =
                    parse_duration(&value()?).map_err(|e| bad(format!("-retry-wait: {e}")))?;
            }
            "rsync-verbose" => {
                let v = value()?;
                if !["", "-v", "-vv", "-vvv"].contains(&v.as_str()) {
                    return Err(FlagError(
                        format!("Cannot set -rsync-verbose invalid rsync verbose option: {v}"),
                        1,
                    ));
                }
                o.deploy.rsync_verbose = v;
            }
            "command-timeout" => {
                let d =
                    parse_duration(&value()?).map_err(|e| bad(format!("-command-timeout: {e}")))?;
                o.deploy.hooks.timeout = (!d.is_zero()).then_some(d);
            }
            "report-url" => o.report_url = Some(value()?).filter(|v| !v.is_empty()),
            "report-token" => o.report_token = Some(value()?).filter(|v| !v.is_empty()),
            "host" => explicit_host = Some(value()?),
            "state-file" => o.state_file = PathBuf::from(value()?),
            other => return Err(bad(format!("flag provided but not defined: -{other}"))),
        }
    }
    if let Some(h) = explicit_host {
        o.host = h;
    }
    if let Some(u) = &o.report_url
        && url::Url::parse(&u.replace("{job}", "0")).is_err()
    {
        return Err(bad(format!("--report-url {u} is not a URL")));
    }
    Ok(Parsed::Run(Box::new(o)))
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn default_state_file() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    base.join("corral").join("agent-applied-events")
}

/// A size as go-humanize reads it: `10M` / `10MB` = 10,000,000, `10MiB` = 10,485,760,
/// `1.0 kB` = 1000, a bare number = bytes; case does not matter.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let mult: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        other => return Err(format!("unhandled size name: {other}")),
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(v as u64)
}

/// A duration: a bare number of seconds (v1.1.0, fractions allowed) or a Go duration
/// (`1h30m`, `500ms`, `2m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a duration"));
    }
    let mut total = 0f64;
    let mut rest = t;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?}: missing unit"))?;
        let n: f64 = rest[..n_end]
            .parse()
            .map_err(|_| format!("{s:?} is not a duration"))?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("{s:?}: unknown unit {u:?}")),
        };
        total += n * mult;
        rest = &rest[u_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("{s:?} is out of range"))
}

/// One event of a Consul watch (the fields read).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConsulEvent {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    payload: Option<String>,
    #[serde(rename = "LTime", default)]
    ltime: u64,
}

/// What stdin said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub url: String,
    /// The Consul event id, when the event came from Consul.
    pub consul_id: Option<String>,
}

/// Largest stdin read (a Consul watch holds at most a few hundred small events).
const MAX_STDIN: u64 = 16 << 20;

/// Reads the event from stdin (reference/stretcher.md §1–2).
pub fn read_event<R: BufRead>(
    mut input: R,
    consul_index: bool,
    log: &DeployLog,
) -> Result<Event, String> {
    let first = input
        .fill_buf()
        .map_err(|e| format!("could not parse event: {e}"))?
        .first()
        .copied();
    let Some(first) = first else {
        return Err("could not parse event: EOF".into());
    };
    if consul_index || first == b'[' {
        log.line("Reading Consul event");
        let mut buf = Vec::new();
        input
            .take(MAX_STDIN)
            .read_to_end(&mut buf)
            .map_err(|e| format!("could not parse event: {e}"))?;
        let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<Vec<ConsulEvent>>();
        let events = match stream.next() {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => return Err(format!("could not parse event: {e}")),
            None => return Err("could not parse event: EOF".into()),
        };
        // The newest by LTime; on a tie, the later element (stretcher's choice).
        let ev = events
            .iter()
            .enumerate()
            .max_by_key(|(i, e)| (e.ltime, *i))
            .map(|(_, e)| e)
            .ok_or("could not parse event: No Consul events found")?;
        log.line(format!(
            "Consul event ID: {} (name {}, LTime {})",
            ev.id, ev.name, ev.ltime
        ));
        let url = match &ev.payload {
            None => String::new(),
            Some(p) => {
                use base64_engine::decode;
                let bytes =
                    decode(p).map_err(|e| format!("could not parse event: Payload: {e}"))?;
                String::from_utf8(bytes)
                    .map_err(|_| "could not parse event: Payload is not UTF-8".to_string())?
            }
        };
        Ok(Event {
            url,
            consul_id: Some(ev.id.clone()).filter(|i| !i.is_empty()),
        })
    } else {
        if let Ok(name) = std::env::var("SERF_USER_EVENT") {
            log.line(format!("Reading Serf user event: {name}"));
        }
        let mut line = Vec::new();
        input
            .take(MAX_STDIN)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("could not parse event: {e}"))?;
        let line =
            String::from_utf8(line).map_err(|_| "could not parse event: not UTF-8".to_string())?;
        Ok(Event {
            url: line.trim_matches('\n').to_string(),
            consul_id: None,
        })
    }
}

/// Standard base64, written out here rather than adding a crate for one decode.
mod base64_engine {
    pub fn decode(s: &str) -> Result<Vec<u8>, String> {
        let val = |c: u8| -> Option<u32> {
            Some(match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            } as u32)
        };
        let bytes = s.trim_end_matches('=').as_bytes();
        if !s.len().is_multiple_of(4) || s.len() - bytes.len() > 2 {
            return Err("illegal base64 data (length)".into());
        }
        let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
        for chunk in bytes.chunks(4) {
            let mut acc = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                let v = val(c).ok_or_else(|| format!("illegal base64 data at input byte {i}"))?;
                acc |= v << (18 - 6 * i);
            }
            let n = chunk.len();
            if n == 1 {
                return Err("illegal base64 data (length)".into());
            }
            out.push((acc >> 16) as u8);
            if n > 2 {
                out.push((acc >> 8) as u8);
            }
            if n > 3 {
                out.push(acc as u8);
            }
        }
        Ok(out)
    }
}

/// Consul event ids applied on this host, kept across restarts.
pub struct AppliedEvents {
    path: PathBuf,
}

/// How many ids are remembered.
const KEEP_IDS: usize = 1000;

impl AppliedEvents {
    pub fn new(path: PathBuf) -> AppliedEvents {
        AppliedEvents { path }
    }

    fn ids(&self) -> Vec<String> {
        std::fs::read_to_string(&self.path)
            .map(|s| {
                s.lines()
                    .map(str::to_string)
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids().iter().any(|i| i == id)
    }

    /// Records an id (written to a temp file and renamed, so a crash never leaves half a
    /// file).
    pub fn record(&self, id: &str) -> Result<(), String> {
        let mut ids = self.ids();
        ids.retain(|i| i != id);
        ids.push(id.to_string());
        let start = ids.len().saturating_sub(KEEP_IDS);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, ids[start..].join("\n") + "\n")
            .map_err(|e| format!("write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| format!("rename {}: {e}", self.path.display()))
    }
}

/// The job id corral puts in the URL fragment of a fanned-out manifest URL
/// (`…/manifest.yml#corral-job=42`). HTTP clients never send the fragment, so stretcher
/// agents fetch the same manifest.
pub fn job_of(url: &str) -> Option<i64> {
    url.split_once('#')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix("corral-job="))?
        .parse()
        .ok()
}

/// Where to post a report for `job`.
pub fn report_endpoint(base: &str, job: Option<i64>) -> Option<String> {
    if base.contains("{job}") {
        return job.map(|j| base.replace("{job}", &j.to_string()));
    }
    if base.trim_end_matches('/').ends_with("/reports") {
        return Some(base.to_string());
    }
    job.map(|j| format!("{}/api/v1/deploys/{j}/reports", base.trim_end_matches('/')))
}

/// What an agent posts to the bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub host: String,
    /// `succeeded` or `failed`.
    pub status: String,
    pub duration_ms: u64,
    #[serde(default)]
    pub log_tail: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub event_id: Option<String>,
}

/// Lines and bytes of log sent with a report.
pub const TAIL_LINES: usize = 40;
pub const TAIL_BYTES: usize = 4096;

/// The whole agent run after flags: delay, event, replay check, manifest, deploy, report.
pub async fn run<R: BufRead + Send + 'static>(
    opts: &AgentOpts,
    log: &DeployLog,
    stdin: R,
) -> Result<(), String> {
    log.line(format!(
        "Starting up corral agent {}",
        env!("CARGO_PKG_VERSION")
    ));
    if !opts.random_delay.is_zero() {
        let d = random_below(opts.random_delay);
        log.line(format!("Sleeping {}ms", d.as_millis()));
        tokio::time::sleep(d).await;
    }
    log.line("Waiting for events from STDIN...");
    let consul_index = std::env::var("CONSUL_INDEX").is_ok_and(|v| !v.is_empty());
    // Reading stdin blocks; keep it off the runtime so a signal can still end the run.
    let log2 = log.clone();
    let event = tokio::task::spawn_blocking(move || read_event(stdin, consul_index, &log2))
        .await
        .map_err(|e| format!("could not parse event: {e}"))??;
    let applied = AppliedEvents::new(opts.state_file.clone());
    if let Some(id) = &event.consul_id
        && applied.contains(id)
    {
        log.line(format!(
            "Consul event {id} was already applied on this host; skipping (state file {})",
            opts.state_file.display()
        ));
        return Ok(());
    }
    let started = std::time::Instant::now();
    let result = deploy_url(&event.url, opts, log).await;
    if let Some(id) = &event.consul_id
        && let Err(e) = applied.record(id)
    {
        log.line(format!("cannot remember Consul event {id}: {e}"));
    }
    if let Some(base) = &opts.report_url {
        let report = Report {
            host: opts.host.clone(),
            status: if result.is_ok() {
                "succeeded"
            } else {
                "failed"
            }
            .into(),
            duration_ms: started.elapsed().as_millis() as u64,
            log_tail: log.tail(TAIL_LINES, TAIL_BYTES),
            error: result.as_ref().err().cloned(),
            event_id: event.consul_id.clone(),
        };
        match report_endpoint(base, job_of(&event.url)) {
            Some(url) => post_report(&url, opts.report_token.as_deref(), &report, log).await,
            None => log.line("no corral job id in the event URL (#corral-job=N); report not sent"),
        }
    }
    result
}

async fn deploy_url(url: &str, opts: &AgentOpts, log: &DeployLog) -> Result<(), String> {
    log.line(format!("Loading manifest: {url}"));
    let text = source::fetch_text(url, Duration::from_secs(60), log)
        .await
        .map_err(|e| format!("load manifest failed: {e}"))?;
    let m = manifest::parse(&text, &manifest::process_env)
        .map_err(|e| format!("load manifest failed: {e}"))?;
    log.line(format!(
        "Executing manifest {}",
        super::manifest_limits::summary(&m)
    ));
    let r = steps::run(&m, &opts.deploy, log).await;
    match r.error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

async fn post_report(url: &str, token: Option<&str>, report: &Report, log: &DeployLog) {
    let client = match crate::http_client() {
        Ok(c) => c,
        Err(e) => {
            log.line(format!("report not sent: {e}"));
            return;
        }
    };
    for attempt in 1..=3 {
        let mut req = client
            .post(url)
            .json(report)
            .timeout(Duration::from_secs(10));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                log.line(format!("Reported {} to {url}", report.status));
                return;
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                log.line(format!(
                    "report refused by {url}: HTTP {status} {}",
                    super::log::tail(&body, 3, 300)
                ));
                return;
            }
            Ok(r) => log.line(format!(
                "report to {url} failed (attempt {attempt}): HTTP {}",
                r.status()
            )),
            Err(e) => log.line(format!("report to {url} failed (attempt {attempt}): {e}")),
        }
        tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
    }
}

fn random_below(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let frac = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(p: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/stretcher/{p}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn parse(args: &[&str]) -> Result<AgentOpts, String> {
        let env = |_: &str| None;
        match parse_args(args.iter().map(OsString::from).collect(), &env) {
            Ok(Parsed::Run(o)) => Ok(*o),
            Ok(_) => Err("help/version".into()),
            Err(FlagError(e, _)) => Err(e),
        }
    }

    #[test]
    fn both_flag_spellings() {
        let a = parse(&[
            "-max-bandwidth",
            "10M",
            "-timeout",
            "30",
            "-random-delay",
            "1.5",
            "-retry",
            "2",
            "-retry-wait",
            "5",
            "-rsync-verbose",
            "-vv",
        ])
        .unwrap();
        let b = parse(&[
            "--max-band-width=10M",
            "--timeout=30s",
            "--random-delay=1500ms",
            "--retry=2",
            "--retry-wait=5s",
            "--rsync-verbose=-vv",
        ])
        .unwrap();
        for o in [&a, &b] {
            assert_eq!(o.deploy.max_bandwidth, Some(10_000_000));
            assert_eq!(o.deploy.fetch_timeout, Some(Duration::from_secs(30)));
            assert_eq!(o.random_delay, Duration::from_millis(1500));
            assert_eq!(
                (o.deploy.retry, o.deploy.retry_wait),
                (2, Duration::from_secs(5))
            );
            assert_eq!(o.deploy.rsync_verbose, "-vv");
        }
        assert_eq!(
            parse(&[]).unwrap().deploy.retry_wait,
            Duration::from_secs(3)
        );
        assert_eq!(
            parse(&["-timeout", "0"]).unwrap().deploy.fetch_timeout,
            None
        );
        assert_eq!(
            parse(&["-rsync-verbose="]).unwrap().deploy.rsync_verbose,
            ""
        );
        assert!(
            parse(&["-rsync-verbose", "-x"])
                .unwrap_err()
                .contains("invalid rsync verbose option")
        );
        assert!(
            parse(&["-max-bandwidth", "lots"])
                .unwrap_err()
                .contains("Cannot parse -max-bandwidth")
        );
        assert!(parse(&["-nope"]).unwrap_err().contains("not defined"));
        assert!(parse(&["-retry"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["s3://x/y"]).unwrap_err().contains("stdin"));
        assert!(
            parse(&["--report-url", "not a url"])
                .unwrap_err()
                .contains("not a URL")
        );
        assert!(matches!(
            parse_args(vec!["-version".into()], &|_| None),
            Ok(Parsed::Version)
        ));
        assert!(matches!(
            parse_args(vec!["-h".into()], &|_| None),
            Ok(Parsed::Help)
        ));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10MiB"), Ok(10_485_760));
        assert_eq!(parse_size("1.0 kB"), Ok(1000));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("-1").is_err() && parse_size("3 parsecs").is_err());
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert!(
            parse_duration("soon").is_err()
                && parse_duration("5").is_ok()
                && parse_duration("-3").is_err()
        );
    }

    #[test]
    fn stdin_forms() {
        let log = DeployLog::new(false);
        let ev = read_event(&fixture("stdin/raw-url.txt")[..], false, &log).unwrap();
        assert_eq!(
            ev,
            Event {
                url: "s3://example.com/deploy-20141117-112233.yml".into(),
                consul_id: None
            }
        );
        let ev = read_event(&fixture("stdin/raw-url-no-lf.txt")[..], false, &log).unwrap();
        assert_eq!(ev.url, "s3://example.com/deploy-20141117-112233.yml");
        assert_eq!(
            read_event(&b"\nhttp://x/y\n"[..], false, &log).unwrap().url,
            ""
        );
        assert_eq!(read_event(&b"a\r\nb"[..], false, &log).unwrap().url, "a\r");
        assert_eq!(
            read_event(&b""[..], false, &log).unwrap_err(),
            "could not parse event: EOF"
        );
        let ev = read_event(&fixture("consul/ConsulInput2.json")[..], false, &log).unwrap();
        assert_eq!(ev.url, "s3://example.com/path/to/app.tar.gz");
        assert_eq!(
            ev.consul_id.as_deref(),
            Some("b5ef1588-1bcd-d93f-5d9c-67cb6e8c4587")
        );
        let e = read_event(&fixture("consul/ConsulInput1.json")[..], false, &log).unwrap_err();
        assert_eq!(e, "could not parse event: No Consul events found");
        let ev = read_event(
            &fixture("consul/constructed-readme-deploy-event.json")[..],
            true,
            &log,
        )
        .unwrap();
        assert_eq!(ev.url, "s3://example.com/deploy-20141117-112233.yml");
        // Newest LTime wins even when it is not last.
        let reordered =
            r#"[{"ID":"b","LTime":3,"Payload":"YQ=="},{"ID":"a","LTime":2,"Payload":"Yg=="}]"#;
        let ev = read_event(reordered.as_bytes(), false, &log).unwrap();
        assert_eq!((ev.url.as_str(), ev.consul_id.as_deref()), ("a", Some("b")));
        assert!(
            read_event(&br#"[{"ID":"x","Payload":"!!"}]"#[..], false, &log)
                .unwrap_err()
                .contains("Payload")
        );
        assert!(read_event(&b"[{"[..], false, &log).is_err());
        assert_eq!(
            read_event(&br#"[{"ID":"x","Payload":null}]"#[..], false, &log)
                .unwrap()
                .url,
            ""
        );
    }

    #[test]
    fn base64_and_job_marker() {
        assert_eq!(
            base64_engine::decode("czM6Ly9leGFtcGxlLmNvbS9wYXRoL3RvL3Rhci5neg==").unwrap(),
            b"s3://example.com/path/to/tar.gz"
        );
        assert!(base64_engine::decode("abc").is_err());
        assert_eq!(job_of("http://x/m.yml#corral-job=42"), Some(42));
        assert_eq!(job_of("http://x/m.yml"), None);
        assert_eq!(job_of("http://x/m.yml#corral-job=x"), None);
        assert_eq!(
            report_endpoint("http://bot:8080/", Some(7)).as_deref(),
            Some("http://bot:8080/api/v1/deploys/7/reports")
        );
        assert_eq!(
            report_endpoint("http://bot/r/{job}", Some(7)).as_deref(),
            Some("http://bot/r/7")
        );
        assert_eq!(report_endpoint("http://bot:8080", None), None);
    }

    #[test]
    fn applied_events_survive_a_new_instance() {
        let p = std::env::temp_dir().join(format!("corral-applied-{}/state", std::process::id()));
        let a = AppliedEvents::new(p.clone());
        assert!(!a.contains("e1"));
        a.record("e1").unwrap();
        a.record("e2").unwrap();
        let b = AppliedEvents::new(p.clone());
        assert!(b.contains("e1") && b.contains("e2") && !b.contains("e3"));
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }
}
