//! The scheduler's figures (issue 12), in release mode, against the in-process fakes:
//!
//! 1. `accuracy`: 100 driven digest firings (`* * * * *`): the clock is moved to each
//!    scheduled minute and the real time until the digest reaches the fake Slack is
//!    measured — corral's own delay (wake, claim, outbox, HTTP). Baseline in the same
//!    run, interleaved: a message written straight to the outbox (`App::say`) until it
//!    reaches the fake Slack. Target: under 1 s.
//! 2. `digest`: reading the stacks behind their catalog (`rancher::outdated`) with 50
//!    environments × 200 stacks, every Rancher call answered after 50 ms, at corral's
//!    default rate limit (50 requests/s). Baseline in the same run: 50 environments × 20
//!    stacks (a tenth of the stacks). Target: bounded by the rate limit (calls / rate),
//!    not by stacks (a ratio near 1 to the baseline).
//!
//! Run: `cargo bench --bench scheduler`. Knobs: BENCH_ONLY=accuracy|digest,
//! BENCH_FIRINGS (100), BENCH_ENVS (50), BENCH_STACKS (200), BENCH_LATENCY_MS (50).

#[path = "../tests/it/support/fake_slack.rs"]
#[allow(dead_code, unused_imports)]
mod fake_slack;

#[path = "../tests/it/support/fake_rancher.rs"]
#[allow(unused_imports)]
mod fake_rancher;

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::app::App;
use corral::chat::Message;
use corral::clock::ManualClock;
use corral::config::{Config, Env};
use corral::store::NewMessage;
use fake_rancher::{ACCESS_KEY, FakeRancher, SECRET_KEY};
use fake_slack::FakeSlack;

const CHANNEL: &str = "C0BENCH";

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wants(which: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |v| v.split(',').any(|w| w == which))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Waits (real time, 0.2 ms polls) until the fake Slack keeps `n` posts.
/// The clock is nudged 1 ms per poll, as the tests drive it (the sender's pacing runs on
/// the clock); the delay measured is real time.
async fn posted(app: &App, clock: &ManualClock, slack: &FakeSlack, n: usize) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(60);
    while slack.posted().len() < n {
        if Instant::now() > deadline {
            panic!(
                "post {n} never arrived; clock {}; posted {:#?}; outbox {:#?}",
                app.clock.now(),
                slack.posted(),
                app.store.outbox_rows(None, 20).await
            );
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
        clock.advance(Duration::from_millis(1));
    }
    Instant::now()
}

async fn accuracy() {
    let firings = knob("BENCH_FIRINGS", 100) as usize;
    let dir = std::env::temp_dir().join(format!("corral-bench-sched-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!("[[digest]]\ncron = \"* * * * *\"\nchannel = \"{CHANNEL}\"\n"),
    )
    .unwrap();
    let start: jiff::Timestamp = "2025-06-02T09:00:30Z".parse().unwrap();
    let clock = ManualClock::new(start);
    let slack = FakeSlack::start_with_clock(clock.shared()).await;
    let db = format!("sqlite://{}/c.db", dir.display());
    let config = Config::from_env(&Env::from_pairs([
        ("CORRAL_DATABASE_URL", db.as_str()),
        ("SLACK_BOT_TOKEN", "xoxb-bench"),
        ("SLACK_API_URL", slack.api_url.as_str()),
        ("CORRAL_CHANNEL", CHANNEL),
        ("CORRAL_POLICY", policy.to_str().unwrap()),
        // Slack's 1 s pacing runs on the (driven) clock; scaled down as in the tests so
        // the figure is corral's own delay, not the pacing's.
        ("CORRAL_SLACK_POST_INTERVAL", "1ms"),
        ("CORRAL_SLACK_UPDATE_INTERVAL", "1ms"),
    ]))
    .expect("config");
    let store = corral::store::open_with(config.database_url.expose(), &config.database)
        .await
        .unwrap();
    let chat = corral::app::destination(&config).unwrap().unwrap();
    let app = App::with_clock(Arc::new(config), store, chat, clock.shared());
    app.start_sender();
    app.start_scheduler();
    // `* * * * *` is always within a minute of a firing: the one at start is on time.
    let mut n = 1;
    posted(&app, &clock, &slack, n).await;

    let mut fired = Vec::with_capacity(firings);
    let mut direct = Vec::with_capacity(firings);
    for i in 0..firings {
        // The scheduled minute: i + 1 minutes after 09:00.
        let minute = start
            .checked_add(jiff::SignedDuration::from_secs(30 + 60 * i as i64))
            .unwrap();
        let t0 = Instant::now();
        clock.set(minute);
        n += 1;
        fired.push(posted(&app, &clock, &slack, n).await - t0);
        // Baseline, half a minute later: one message straight into the outbox.
        clock.set(
            minute
                .checked_add(jiff::SignedDuration::from_secs(30))
                .unwrap(),
        );
        let t0 = Instant::now();
        app.say(vec![NewMessage::post(
            clock.shared().unix_ms(),
            CHANNEL,
            Message::text(format!("baseline {i}")),
        )])
        .await;
        n += 1;
        direct.push(posted(&app, &clock, &slack, n).await - t0);
    }
    let digests = slack
        .posted()
        .iter()
        .filter(|p| p.text.contains("Release digest"))
        .count();
    assert_eq!(digests, firings + 1, "every firing sent once");
    fired.sort();
    direct.sort();
    let (f50, f95, fmax) = (
        percentile(&fired, 0.5),
        percentile(&fired, 0.95),
        *fired.last().unwrap(),
    );
    let (d50, d95, dmax) = (
        percentile(&direct, 0.5),
        percentile(&direct, 0.95),
        *direct.last().unwrap(),
    );
    println!(
        "accuracy: {firings} driven firings of `* * * * *`, scheduled minute → post at the fake Slack"
    );
    println!(
        "  scheduler: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms (target < 1000 ms)",
        ms(f50),
        ms(f95),
        ms(fmax)
    );
    println!(
        "  baseline (App::say → fake Slack): p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
        ms(d50),
        ms(d95),
        ms(dmax)
    );
    println!(
        "  ratio scheduler / baseline: p50 {:.2}, p95 {:.2}",
        ms(f50) / ms(d50),
        ms(f95) / ms(d95)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn outdated_run(envs: usize, stacks: usize, latency: Duration) -> (Duration, u64, usize) {
    let f = FakeRancher::start().await;
    let files: &[(&str, &str)] = &[("docker-compose.yml", "x")];
    f.add_template(
        "library",
        "web",
        &[
            ("1", "1.0.0", files),
            ("2", "1.1.0", files),
            ("3", "2.0.0", files),
        ],
    );
    f.add_template("library", "db", &[("1", "1.0", files), ("2", "2.0", files)]);
    for e in 0..envs {
        let p = f.add_project(&format!("env{e:02}"));
        for s in 0..stacks {
            let ext = match s % 4 {
                0 => "catalog://library:web:1",
                1 => "catalog://library:web:3",
                2 => "catalog://library:db:1",
                _ => "catalog://library:db:2",
            };
            f.add_stack(&p, &format!("s{s:03}"), ext);
        }
    }
    f.set_latency(latency);
    let url = format!("{}/v1", f.url);
    let config = Config::from_env(&Env::from_pairs([
        ("RANCHER_URL", url.as_str()),
        ("RANCHER_ACCESS_KEY", ACCESS_KEY),
        ("RANCHER_SECRET_KEY", SECRET_KEY),
    ]))
    .expect("config");
    let rancher = corral::rancher::Rancher::new(&config.rancher);
    let client = rancher.client().unwrap();
    let t0 = Instant::now();
    let out = corral::rancher::outdated::outdated_stacks(&client, &config.rancher.environments)
        .await
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(out.len(), envs * stacks / 2, "half the stacks are behind");
    (took, client.requests_sent(), out.len())
}

async fn digest() {
    let envs = knob("BENCH_ENVS", 50) as usize;
    let stacks = knob("BENCH_STACKS", 200) as usize;
    let latency = Duration::from_millis(knob("BENCH_LATENCY_MS", 50));
    let rate = 50.0; // CORRAL_RANCHER_RATE's default, requests per second
    let (big, big_calls, big_n) = outdated_run(envs, stacks, latency).await;
    let (small, small_calls, _) = outdated_run(envs, stacks / 10, latency).await;
    println!(
        "digest: stacks behind their catalog, {envs} environments, {} ms per Rancher call, rate limit {rate}/s",
        latency.as_millis()
    );
    println!(
        "  {envs}×{stacks} stacks: {:.0} ms, {big_calls} calls, {big_n} stacks behind; rate-limit bound {:.0} ms",
        ms(big),
        big_calls as f64 / rate * 1000.0
    );
    println!(
        "  baseline {envs}×{} stacks: {:.0} ms, {small_calls} calls; rate-limit bound {:.0} ms",
        stacks / 10,
        ms(small),
        small_calls as f64 / rate * 1000.0
    );
    println!(
        "  ratio 10× the stacks / baseline: {:.2} (calls {:.2})",
        ms(big) / ms(small),
        big_calls as f64 / small_calls as f64
    );
}

fn main() {
    if let Ok(f) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if wants("accuracy") {
            accuracy().await;
        }
        if wants("digest") {
            digest().await;
        }
    });
}
