//! Figures for `/upgrade image` (issue 4): 200 labelled services across 10 environments,
//! 50 ms Rancher latency per request, 3 s from `upgrade` to `upgraded`.
//!
//! Reports corral's wall time with its default settings (printed with the figures)
//! against rancher-service-updater's serial N × wait and against its own floor (the
//! larger of one upgrade and requests ÷ rate limit), the Rancher requests per service,
//! the Slack calls the
//! job made (posts and edits, counted by a `Chat` that counts), the Rancher requests, and
//! the process's peak RSS (VmHWM; the fake Rancher runs in the same process, so this is
//! an upper bound for corral alone). A serial corral run (parallelism 1) on a sample of
//! 10 services measures the per-service serial time in the same run.
//!
//! Run: `bench/image_upgrade.sh` (release mode). corral's settings come from the usual
//! variables (defaults otherwise), so `CORRAL_UPGRADE_PARALLELISM=200
//! bench/image_upgrade.sh` tries another value.

#[path = "../tests/it/support"]
#[allow(unused_imports, dead_code)]
mod support {
    pub mod fake_rancher;
    pub mod fake_services;
}

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use corral::app::{App, Request, Source};
use corral::chat::Message;
use corral::chat::{Chat, ChatError};
use corral::command::parse_slash;
use corral::config::{Config, Env};
use serde_json::json;
use support::fake_rancher::{ACCESS_KEY, FakeRancher, SECRET_KEY};
use support::fake_services::{add_service, install, launch_config};

/// A Slack that counts what it is asked to do.
#[derive(Default)]
struct CountingChat {
    posts: AtomicU64,
    updates: AtomicU64,
    seq: AtomicU64,
}

#[async_trait]
impl Chat for CountingChat {
    async fn post(&self, _c: &str, _t: Option<&str>, _m: &Message) -> Result<String, ChatError> {
        self.posts.fetch_add(1, Ordering::Relaxed);
        Ok(format!("1.{:06}", self.seq.fetch_add(1, Ordering::Relaxed)))
    }
    async fn update(&self, _c: &str, _ts: &str, _m: &Message) -> Result<(), ChatError> {
        self.updates.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn ephemeral(&self, _c: &str, _u: &str, _m: &Message) -> Result<(), ChatError> {
        Ok(())
    }
}

struct Run {
    wall: Duration,
    succeeded: usize,
    failed: usize,
    posts: u64,
    updates: u64,
    requests: usize,
    gets: usize,
}

async fn run(envs: usize, per_env: usize, parallelism: Option<usize>) -> Run {
    let fake = FakeRancher::start().await;
    install(&fake);
    fake.set_latency(Duration::from_millis(50));
    fake.set_action_time("upgrade", Duration::from_secs(3));
    fake.set_default_action_time(Duration::from_millis(100));
    for e in 0..envs {
        let p = fake.add_project(&format!("env-{e:02}"));
        let st = fake.add_stack(&p, "app", "");
        for s in 0..per_env {
            add_service(
                &fake,
                &p,
                &st,
                &format!("svc-{s:02}"),
                launch_config("docker:myorg/app:1.0", &[("autoupdate.enable", "true")]),
                json!([]),
            );
        }
    }
    let mut config = settings(&fake.url);
    if let Some(p) = parallelism {
        config.rancher.parallelism = p;
    }
    let chat = Arc::new(CountingChat::default());
    let store = corral::store::open("sqlite::memory:").await.expect("store");
    let app = App::new(Arc::new(config), store, chat.clone());
    app.start_sender();
    let command = parse_slash("/upgrade", "image myorg/app:2.0").expect("command");
    let started = Instant::now();
    let reply = app
        .handle(Request {
            command,
            user: "api".into(),
            source: Source::Api,
            channel: None,
        })
        .await;
    let job = reply.job.expect("job");
    app.runner.wait(job.id).await;
    app.outbox
        .idle(app.store.as_ref(), Duration::from_secs(60))
        .await;
    let wall = started.elapsed();
    let rec = app.store.job(job.id).await.expect("store").expect("job");
    let outcome = rec.outcome.expect("outcome");
    Run {
        wall,
        succeeded: outcome.succeeded,
        failed: outcome.failed.len(),
        posts: chat.posts.load(Ordering::Relaxed),
        updates: chat.updates.load(Ordering::Relaxed),
        requests: fake.requests().len(),
        gets: fake.requests().iter().filter(|r| r.method == "GET").count(),
    }
}

/// corral's settings from the environment (defaults otherwise), Rancher = the fake.
fn settings(rancher: &str) -> Config {
    let mut pairs: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CORRAL_"))
        .filter(|(k, _)| k != "CORRAL_DATABASE_URL" && k != "CORRAL_POLICY")
        .collect();
    for (k, v) in [
        ("RANCHER_URL", rancher),
        ("RANCHER_ACCESS_KEY", ACCESS_KEY),
        ("RANCHER_SECRET_KEY", SECRET_KEY),
        ("CORRAL_API_TOKEN", "bench"),
        ("CORRAL_CHANNEL", "C0BENCH"),
        ("CORRAL_DATABASE_URL", "sqlite::memory:"),
    ] {
        pairs.push((k.into(), v.into()));
    }
    Config::from_env(&Env::from_pairs(pairs)).expect("config")
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let (envs, per_env) = (10, 20);
    let n = envs * per_env;
    let wait = 3.0;

    let sample = run(1, 10, Some(1)).await;
    let per_service = sample.wall.as_secs_f64() / 10.0;

    let full = run(envs, per_env, None).await;
    let updater = n as f64 * wait;
    println!(
        "image upgrade: {n} labelled services, {envs} environments, 50 ms latency, 3 s to upgraded"
    );
    let d = settings("http://127.0.0.1:1");
    println!(
        "corral (parallelism {}, poll {:?}, {} req/s to Rancher): wall {:.1} s, {} upgraded, {} failed, {} Rancher requests",
        d.rancher.parallelism,
        d.rancher.poll_interval,
        d.rancher.rate_limit,
        full.wall.as_secs_f64(),
        full.succeeded,
        full.failed,
        full.requests
    );
    let rate = d.rancher.rate_limit as f64;
    let by_rate = full.requests as f64 / rate;
    let floor = wait.max(by_rate);
    println!(
        "Rancher requests: {} ({} GET, {} POST) = {:.2} per service (target < 3)",
        full.requests,
        full.gets,
        full.requests - full.gets,
        full.requests as f64 / n as f64
    );
    println!(
        "floor: max(one upgrade {wait:.1} s, {} requests / {rate} per s = {by_rate:.2} s) = {floor:.2} s -> wall / floor = {:.2} (target <= 1.5)",
        full.requests,
        full.wall.as_secs_f64() / floor
    );
    // Services in their upgrade at once are capped: ceil(n / parallelism) rounds of one
    // upgrade each cannot be beaten, whatever the requests.
    let rounds = n.div_ceil(d.rancher.parallelism.max(1));
    let bound = rounds as f64 * wait;
    println!(
        "parallelism bound: {rounds} rounds of {parallelism} x {wait:.1} s = {bound:.1} s ({:.2} x the floor) -> wall / bound = {:.2}",
        bound / floor,
        full.wall.as_secs_f64() / bound,
        parallelism = d.rancher.parallelism
    );
    println!(
        "updater serial N x wait (lower bound): {updater:.0} s  -> corral is {:.1}x faster",
        updater / full.wall.as_secs_f64()
    );
    println!(
        "corral serial sample (parallelism 1, 10 services): {:.2} s/service -> {:.0} s for {n} ({:.1}x the parallel run)",
        per_service,
        per_service * n as f64,
        per_service * n as f64 / full.wall.as_secs_f64()
    );
    println!(
        "Slack: {} messages posted (root + plan + one per environment + summary), {} root edits; {} services",
        full.posts, full.updates, n
    );
    println!(
        "peak RSS (whole bench process incl. fake Rancher): {} KiB",
        peak_rss_kib()
    );
}
