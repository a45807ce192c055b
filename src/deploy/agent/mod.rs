//! `corral agent`: stretcher's command line (SPEC §6, reference/stretcher.md §1, §8,
//! §10). It reads one event from stdin (a bare manifest URL, a Consul watch event array
//! or a Serf user-event payload), runs the manifest, and with `--report-url` tells the
//! bot how it went.
//!
//! Departures from stretcher, on purpose: the Consul event with the highest `LTime` is
//! chosen (not merely the last element), an event id already applied on this host is
//! skipped, also after a restart (a small state file), and the result is posted back.

//!
//! The parts: [`flags`] (flags and environment), [`event`] (what stdin says),
//! [`applied`] (the state file of applied Consul events); the report sent back is
//! [`crate::deploy::report`].

mod applied;
mod event;
mod flags;

use std::ffi::OsString;
use std::io::BufRead;
use std::time::Duration;

pub use applied::AppliedEvents;
pub use event::{Event, read_event};
pub use flags::{AgentOpts, parse_size};
use flags::{FlagError, Parsed, USAGE, parse_args};

use super::log::DeployLog;
use super::manifest;
use super::report::{self, Report, TAIL_BYTES, TAIL_LINES};
use super::source;
use super::steps;

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

/// The whole agent run after flags: delay, event, replay check, manifest, deploy, report.
pub(crate) async fn run<R: BufRead + Send + 'static>(
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
            error: result
                .as_ref()
                .err()
                .map(|e| super::scrub::scrub(&log.redacted(e))),
            event_id: event.consul_id.clone(),
        };
        match report::endpoint(base, report::job_of(&event.url)) {
            Some(url) => report::post(&url, opts.report_token.as_deref(), &report, log).await,
            None => log.line("no corral job id in the event URL (#corral-job=N); report not sent"),
        }
    }
    result
}

async fn deploy_url(url: &str, opts: &AgentOpts, log: &DeployLog) -> Result<(), String> {
    log.line(format!("Loading manifest: {url}"));
    let text = source::fetch_text(
        url,
        opts.deploy.allow.as_deref(),
        Duration::from_secs(60),
        log,
    )
    .await
    .map_err(|e| format!("load manifest failed: {e}"))?;
    for name in super::template::must_env_names(&text) {
        if let Some(v) = manifest::process_env(&name) {
            log.redact(&v);
        }
    }
    let m = manifest::parse_at(&text, &manifest::process_env, url)
        .map_err(|e| format!("load manifest failed: {e}"))?;
    if let Some(d) = &m.dest {
        super::dest::check(d, &super::dest::protected(&opts.state_file))
            .map_err(|e| format!("load manifest failed: {e}"))?;
    }
    // Never the whole manifest: its commands hold expanded values.
    log.line(format!(
        "Executing manifest: {}, {} commands",
        match (&m.src, &m.dest) {
            (Some(s), Some(d)) => format!("{s} → {} ({})", d.display(), m.sync_strategy.name()),
            _ => "commands only".to_string(),
        },
        m.commands.pre.len()
            + m.commands.post.len()
            + m.commands.success.len()
            + m.commands.failure.len()
    ));
    let r = steps::run(&m, &opts.deploy, log).await;
    match r.error {
        None => Ok(()),
        Some(e) => Err(e),
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
