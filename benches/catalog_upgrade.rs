//! The catalog-upgrade figure (issue 3): 10 environments × 20 stacks, 50 ms of Rancher
//! latency per call, 2 s per upgrade, against the in-process fake Rancher, through the
//! whole pipeline (App::handle → job → reporter) with a counting chat.
//!
//! Run: `cargo bench --bench catalog_upgrade` (or `bench/catalog_upgrade.sh` for peak
//! RSS from /usr/bin/time -v). corral's settings come from the usual variables, so
//! `CORRAL_UPGRADE_PARALLELISM=200 cargo bench --bench catalog_upgrade` tries another
//! value; BENCH_ENVS, BENCH_STACKS, BENCH_LATENCY_MS, BENCH_UPGRADE_MS change the shape.

#[path = "../tests/it/support/fake_rancher.rs"]
#[allow(unused_imports)]
mod fake_rancher;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use corral::app::{App, Request, Source};
use corral::chat::Message;
use corral::chat::{Chat, ChatError};
use corral::config::{Config, Env};
use fake_rancher::{ACCESS_KEY, FakeRancher, SECRET_KEY};

#[derive(Default)]
struct CountingChat {
    posts: AtomicUsize,
    edits: AtomicUsize,
}

#[async_trait]
impl Chat for CountingChat {
    async fn post(&self, _c: &str, _t: Option<&str>, _m: &Message) -> Result<String, ChatError> {
        let n = self.posts.fetch_add(1, Ordering::SeqCst);
        Ok(format!("1.{n:06}"))
    }
    async fn update(&self, _c: &str, _ts: &str, _m: &Message) -> Result<(), ChatError> {
        self.edits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn ephemeral(&self, _c: &str, _u: &str, _m: &Message) -> Result<(), ChatError> {
        Ok(())
    }
}

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

async fn bench() {
    let envs = knob("BENCH_ENVS", 10) as usize;
    let per_env = knob("BENCH_STACKS", 20) as usize;
    let latency = Duration::from_millis(knob("BENCH_LATENCY_MS", 50));
    let upgrade = Duration::from_millis(knob("BENCH_UPGRADE_MS", 2000));

    let fake = FakeRancher::start().await;
    fake.add_template(
        "library",
        "web",
        &[
            (
                "1",
                "1.0.0",
                &[("docker-compose.yml", "web:\n  image: nginx:1\n")],
            ),
            (
                "2",
                "2.0.0",
                &[
                    ("docker-compose.yml", "web:\n  image: nginx:2\n"),
                    ("rancher-compose.yml", "version: 2.0.0\n"),
                ],
            ),
        ],
    );
    for e in 0..envs {
        let pid = fake.add_project(&format!("env{e:02}"));
        for s in 0..per_env {
            fake.add_stack(&pid, &format!("web{s:02}"), "catalog://library:web:1");
        }
    }
    fake.set_latency(latency);
    fake.set_action_time("upgrade", upgrade);
    fake.set_default_action_time(Duration::from_millis(100));

    // corral's own settings from the environment (defaults otherwise), Rancher = the fake.
    let mut pairs: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CORRAL_"))
        .collect();
    pairs.retain(|(k, _)| k != "CORRAL_DATABASE_URL" && k != "CORRAL_POLICY");
    pairs.push(("RANCHER_URL".into(), fake.url.clone()));
    pairs.push(("RANCHER_ACCESS_KEY".into(), ACCESS_KEY.into()));
    pairs.push(("RANCHER_SECRET_KEY".into(), SECRET_KEY.into()));
    pairs.push(("CORRAL_CHANNEL".into(), "C0BENCH".into()));
    let config = Config::from_env(&Env::from_pairs(pairs)).expect("config");
    let rate = config.rancher.rate_limit;
    let settings = format!(
        "rate limit {}/s, parallelism {}, poll {:?}, per-stack deadline {:?}",
        rate,
        config.rancher.parallelism,
        config.rancher.poll_interval,
        config.rancher.upgrade_timeout
    );
    let chat = Arc::new(CountingChat::default());
    let app = App::new(
        Arc::new(config),
        corral::store::open("sqlite::memory:").await.expect("store"),
        chat.clone(),
    );
    app.start_sender();

    let t = Instant::now();
    let reply = app
        .handle(Request {
            command: corral::command::parse_slash("/upgrade", "library:web:2.0.0")
                .expect("command"),
            user: "bench".into(),
            source: Source::Cli,
            channel: Some("C0BENCH".into()),
        })
        .await;
    let job = reply.job.expect("a job");
    app.runner.wait(job.id).await;
    app.outbox
        .idle(app.store.as_ref(), Duration::from_secs(60))
        .await;
    let wall = t.elapsed();
    let rec = app.store.job(job.id).await.expect("store").expect("job");
    let outcome = rec.outcome.expect("outcome");

    // go-cowpoke's serial time is the sum of each stack's own time: from its upgrade
    // request to its finishupgrade answer (taken from the fake's request log).
    let log = fake.requests();
    let mut started: HashMap<String, Instant> = HashMap::new();
    let mut serial = Duration::ZERO;
    let stack_of = |uri: &str| {
        uri.split("/stacks/")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .map(str::to_string)
    };
    for r in &log {
        let (Some(action), Some(id)) = (r.action(), stack_of(&r.uri)) else {
            continue;
        };
        match action.as_str() {
            "upgrade" => {
                started.insert(id, r.at - latency);
            }
            "finishupgrade" => {
                if let Some(s) = started.get(&id) {
                    serial += r.at - *s;
                }
            }
            _ => {}
        }
    }
    let stacks = envs * per_env;
    let requests = log.len();
    let floor = upgrade.max(Duration::from_secs_f64(requests as f64 / rate as f64));
    let posts = chat.posts.load(Ordering::SeqCst);
    let edits = chat.edits.load(Ordering::SeqCst);

    println!(
        "catalog upgrade: {envs} environments × {per_env} stacks, {latency:?} Rancher latency per call, {upgrade:?} per upgrade"
    );
    println!("settings: {settings}");
    println!(
        "result: {} upgraded, {} failed, {} skipped — {}",
        outcome.succeeded,
        outcome.failed.len(),
        outcome.skipped,
        outcome.summary
    );
    println!("wall time: {:.2} s", wall.as_secs_f64());
    println!(
        "serial baseline (go-cowpoke: the sum of per-stack times): {:.1} s → {:.1}× faster",
        serial.as_secs_f64(),
        serial.as_secs_f64() / wall.as_secs_f64()
    );
    println!(
        "floor: max(one upgrade {:.1} s, {requests} requests / {rate} per s = {:.2} s) = {:.2} s → wall / floor = {:.2} (target ≤ 1.5)",
        upgrade.as_secs_f64(),
        requests as f64 / rate as f64,
        floor.as_secs_f64(),
        wall.as_secs_f64() / floor.as_secs_f64()
    );
    // go-cowpoke's own loop, modelled with the same latency and upgrade time: per stack
    // an upgrade POST, then `GET self; sleep 500 ms` until it reads `upgraded`, then a
    // finishupgrade POST; one stack after the other.
    let poll = Duration::from_millis(500) + latency;
    let mut detect = latency;
    while detect < upgrade + latency {
        detect += poll;
    }
    let cowpoke_per_stack = latency + detect + Duration::from_millis(500) + latency;
    let cowpoke = cowpoke_per_stack * stacks as u32 + latency * (envs as u32 + 3);
    println!(
        "go-cowpoke model ({:.2} s per stack, one at a time): {:.1} s → {:.1}× faster",
        cowpoke_per_stack.as_secs_f64(),
        cowpoke.as_secs_f64(),
        cowpoke.as_secs_f64() / wall.as_secs_f64()
    );
    let gets = log.iter().filter(|r| r.method == "GET").count();
    println!(
        "Rancher requests: {requests} ({gets} GET, {} POST) = {:.2} per stack",
        requests - gets,
        requests as f64 / stacks as f64
    );
    println!(
        "Slack: {posts} messages posted (limit: environments + 3 = {}), {edits} root edits",
        envs + 3
    );
    if let Some(kib) = peak_rss_kib() {
        println!(
            "peak RSS (whole process, fake Rancher included): {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
    if outcome.succeeded != stacks {
        eprintln!("not every stack was upgraded: {:?}", outcome.failed.first());
        std::process::exit(1);
    }
}
