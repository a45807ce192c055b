//! The outbox's figures (issue 10), in release mode, against the in-process fake Slack
//! (which enforces Slack's 1 post/s per channel with 429 + Retry-After):
//!
//! 1. `updates`: one job, a plan of 200 targets and 200 progress updates (one every
//!    10 ms) while Slack allows 1 message/s: Web API calls made, 429s received, time
//!    until the thread is complete.
//! 2. `outage`: 100 lock changes made during a 60 s outage (every call answers 503):
//!    time from recovery until the last one is delivered, against what Slack's limit
//!    allows (99 s for 100 posts at 1/s), and duplicates.
//! 3. `hotpath`: the cost of writing outbox rows on the request path: signed Slack
//!    `/release start` + `/release stop` pairs, and releasestatus `/start` + `/stop`
//!    pairs (each of those writes a lock change and its announcement row), one request
//!    at a time on one connection, against the binary from before the outbox
//!    (`BASELINE_BIN`, built by `bench/outbox.sh`), in the same run, alternating.
//!
//! Run: `bench/outbox.sh` (builds the baseline, then `cargo bench --bench outbox`).
//! Knobs: BENCH_ONLY=updates|outage|hotpath, BENCH_OUTAGE_S (60), BENCH_CHANGES (100),
//! BENCH_SECONDS (5, per hot-path run).

#[path = "../tests/it/support/fake_slack.rs"]
#[allow(dead_code, unused_imports)]
mod fake_slack;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::app::App;
use corral::config::{Config, Env};
use corral::door::Source;
use corral::job::{JobKind, JobStatus, Outcome, PlanGroup, PlanItem, Progress, ProgressTx};
use corral::lock::{Actor, LockAction};
use corral::store::{Effects, NewJob};
use fake_slack::{Failure, FakeSlack};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const TOKEN: &str = "bench-token";
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

async fn app_against(slack: &FakeSlack, db: &str) -> Arc<App> {
    let config = Config::from_env(&Env::from_pairs([
        ("CORRAL_DATABASE_URL", db),
        ("SLACK_BOT_TOKEN", "xoxb-bench"),
        ("SLACK_API_URL", slack.api_url.as_str()),
        ("CORRAL_CHANNEL", CHANNEL),
        ("CORRAL_LOG", "error"),
    ]))
    .expect("config");
    let store = corral::store::open(config.database_url.expose())
        .await
        .expect("store");
    let chat = corral::app::destination(&config)
        .expect("client")
        .expect("slack");
    let app = App::new(Arc::new(config), store, chat);
    app.start_sender();
    app
}

async fn wait_drained(app: &App, max: Duration) -> bool {
    app.outbox.idle(app.store.as_ref(), max).await
}

async fn updates(dir: &std::path::Path) {
    let slack = FakeSlack::start().await;
    slack.enforce_post_rate(Duration::from_secs(1));
    let app = app_against(&slack, &format!("sqlite://{}/updates.db", dir.display())).await;
    let started = Instant::now();
    let job = app
        .store
        .create_job(
            NewJob {
                kind: JobKind::UpgradeImage,
                command: "/upgrade image myorg/app:2.0".into(),
                requested_by: "U0BENCH".into(),
                source: Source::Slack,
                channel: Some(CHANNEL.into()),
                now: app.clock.unix(),
            },
            Box::new(|_| Ok(Effects::default())),
        )
        .await
        .expect("store")
        .expect("gate");
    let mut reporter = corral::app::reporter::Reporter::open(
        app.store.clone(),
        app.clock.clone(),
        app.outbox.clone(),
        None,
        job.clone(),
    )
    .await;
    reporter.running().await;
    let (tx, rx) = ProgressTx::channel();
    let feed = tokio::spawn(async move {
        tx.send(Progress::Plan {
            title: "myorg/app:2.0".into(),
            groups: vec![PlanGroup {
                name: "prod".into(),
                items: (0..200)
                    .map(|i| PlanItem {
                        target: format!("svc{i}"),
                        change: "1.0 → 2.0".into(),
                        skipped: None,
                        details: Vec::new(),
                        binds: String::new(),
                    })
                    .collect(),
            }],
        });
        for i in 0..200 {
            tx.send(Progress::TargetFinished {
                group: "prod".into(),
                target: format!("svc{i}"),
                ok: true,
                detail: String::new(),
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tx.send(Progress::GroupFinished {
            group: "prod".into(),
        });
    });
    reporter.run(rx).await;
    feed.await.expect("feed");
    let outcome = Outcome {
        succeeded: 200,
        summary: "200 services upgraded to 2.0".into(),
        ..Outcome::default()
    };
    reporter.finish(JobStatus::Succeeded, &outcome).await;
    let written = started.elapsed();
    let drained = wait_drained(&app, Duration::from_secs(120)).await;
    let complete = started.elapsed();
    let calls = slack.calls();
    let posts = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage")
        .count();
    let updates = calls.iter().filter(|c| c.method == "chat.update").count();
    let posted = slack.posted();
    let rate_limited = posts - posted.len();
    let root_final = posted
        .first()
        .is_some_and(|r| r.text.contains("✅ succeeded"));
    println!("## 200 progress updates for one job, Slack allowing 1 message/s per channel");
    println!(
        "Web API calls: {} ({posts} chat.postMessage, {updates} chat.update) for {} thread messages and 201 root states",
        posts + updates,
        posted.len()
    );
    println!("429s received: {rate_limited} (target 0)");
    println!(
        "time until the thread is complete: {:.2} s from the first event ({:.2} s after the last was stored); root final: {root_final}; drained: {drained}",
        complete.as_secs_f64(),
        (complete - written).as_secs_f64()
    );
}

async fn outage(dir: &std::path::Path) {
    let outage_s = knob("BENCH_OUTAGE_S", 60) as i64;
    let n = knob("BENCH_CHANGES", 100) as usize;
    let slack = FakeSlack::start().await;
    slack.enforce_post_rate(Duration::from_secs(1));
    let app = app_against(&slack, &format!("sqlite://{}/outage.db", dir.display())).await;
    let t0 = app.clock.unix_ms();
    let recovery = t0 + outage_s * 1000;
    slack.fail_during(None, t0, recovery, Failure::Status(503));
    let actor = Actor {
        who: "api:bench".into(),
        may_force: true,
        holder_only_stop: false,
    };
    for i in 0..n {
        let action = if i % 2 == 0 {
            LockAction::Start {
                reason: format!("r{i}"),
            }
        } else {
            LockAction::Stop { force: true }
        };
        app.change_lock(action, actor.clone(), Source::Api)
            .await
            .expect("store")
            .expect("allowed");
    }
    let deadline = Instant::now() + Duration::from_secs(outage_s as u64 + 4 * n as u64 + 60);
    while slack.posted().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posted = slack.posted();
    let calls = slack.calls_to("chat.postMessage");
    let last = calls.last().map_or(0, |c| c.at_ms);
    let after = (last - recovery) as f64 / 1000.0;
    let allowed = (n - 1) as f64;
    let ids: HashSet<String> = posted
        .iter()
        .map(|p| p.metadata["event_payload"]["corral_outbox_id"].to_string())
        .collect();
    let during = calls.iter().filter(|c| c.at_ms < recovery).count();
    let after_calls = calls.len() - during;
    println!("## {n} lock changes queued during a {outage_s} s outage");
    println!(
        "delivered: {} of {n}; duplicates: {} (target 0); in order: {}",
        posted.len(),
        posted.len() - ids.len(),
        posted
            .iter()
            .enumerate()
            .all(|(i, p)| p
                .text
                .contains(if i % 2 == 0 { "started" } else { "finished" }))
    );
    println!(
        "from recovery to the last delivered: {after:.1} s; Slack's limit allows {allowed:.0} s → {:.3}× (target within 1.10×)",
        after / allowed
    );
    println!(
        "calls during the outage: {during} (one lane head retried with capped backoff); after: {after_calls} for {n} posts (429s: {})",
        after_calls.saturating_sub(posted.len())
    );
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(bin: &str, dir: &std::path::Path, slack_api: Option<&str>) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new(bin);
    if let Some(api) = slack_api {
        cmd.env("SLACK_BOT_TOKEN", "xoxb-bench")
            .env("SLACK_API_URL", api);
    }
    let child = cmd
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CORRAL_LISTEN", format!("127.0.0.1:{port}"))
        .env("CORRAL_DATABASE_URL", "sqlite://c.db")
        .env("SLACK_SIGNING_SECRET", SECRET)
        .env("CORRAL_API_TOKEN", TOKEN)
        .env("CORRAL_CHANNEL", CHANNEL)
        .env("CORRAL_SLACK_USER_RATE", "0")
        .env("CORRAL_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary");
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = corral::http_client().unwrap();
    for _ in 0..400 {
        if http
            .get(format!("{}/readyz", server.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{bin} did not become ready");
}

fn slash(text: &str) -> String {
    serde_urlencoded::to_string([
        ("team_id", "T1"),
        ("channel_id", "C0TEAM"),
        ("user_id", "U0BENCH"),
        ("command", "/release"),
        ("text", text),
        ("response_url", "https://hooks.slack.com/commands/T1/1/x"),
    ])
    .unwrap()
}

/// Pairs per second for `secs`, one request at a time.
async fn pairs(url: &str, slack_signed: bool, secs: u64) -> f64 {
    let http = corral::http_client().unwrap();
    let (start, stop) = (slash("start bench"), slash("stop"));
    let until = Instant::now() + Duration::from_secs(secs);
    let begun = Instant::now();
    let mut n = 0u64;
    while Instant::now() < until {
        for body in [&start, &stop] {
            let ok = if slack_signed {
                let ts = jiff::Timestamp::now().as_second().to_string();
                let sig = corral::slack::verify::sign(SECRET, &ts, body.as_bytes());
                let r = http
                    .post(format!("{url}/slack/commands"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-slack-request-timestamp", ts)
                    .header("x-slack-signature", sig)
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("request");
                r.text().await.unwrap_or_default().contains("in_channel")
            } else {
                let path = if body == &start {
                    "/start?name=bench"
                } else {
                    "/stop"
                };
                let r = http
                    .get(format!("{url}{path}"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .expect("request");
                r.text().await.unwrap_or_default() == "1"
            };
            assert!(ok, "every request of a pair changes the lock");
        }
        n += 1;
    }
    n as f64 / begun.elapsed().as_secs_f64()
}

async fn hotpath(dir: &std::path::Path) {
    let Ok(base) = std::env::var("BASELINE_BIN") else {
        println!(
            "## hot path: skipped (set BASELINE_BIN to the corral binary from before the outbox; bench/outbox.sh does)"
        );
        return;
    };
    let new = env!("CARGO_BIN_EXE_corral");
    let secs = knob("BENCH_SECONDS", 5);
    // Both binaries post to the same fake Slack (Slack's 1/s per channel enforced).
    let slack = FakeSlack::start().await;
    slack.enforce_post_rate(Duration::from_secs(1));
    let api = slack.api_url.clone();
    println!(
        "## the cost of outbox rows on the request path ({secs} s per run, one connection, file-backed SQLite)"
    );
    for (label, signed, dest) in [
        (
            "signed Slack /release start + stop, Slack configured (Slack shows these: no row)",
            true,
            Some(api.as_str()),
        ),
        (
            "releasestatus /start + /stop, Slack configured (each change writes its announcement row)",
            false,
            Some(api.as_str()),
        ),
        (
            "releasestatus /start + /stop, no Slack (rows go to the log at once: the sender competes for the store)",
            false,
            None,
        ),
    ] {
        let mut runs = [Vec::new(), Vec::new()];
        for round in 0..2 {
            for (i, bin) in [base.as_str(), new].iter().enumerate() {
                let s = serve(bin, &dir.join(format!("hot-{i}-{round}")), dest).await;
                runs[i].push(pairs(&s.url, signed, secs).await);
            }
        }
        let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
        let (b, n) = (mean(&runs[0]), mean(&runs[1]));
        println!(
            "{label}: before {b:.0} pairs/s, with the outbox {n:.0} pairs/s → {:+.1} % (runs {:?} vs {:?})",
            (n / b - 1.0) * 100.0,
            runs[0].iter().map(|v| v.round()).collect::<Vec<_>>(),
            runs[1].iter().map(|v| v.round()).collect::<Vec<_>>()
        );
    }
}

/// The store alone: lock changes with and without their announcement row, on a file.
async fn store_cost(dir: &std::path::Path) {
    use corral::chat::Message;
    use corral::store::{LockDecision, LockHistoryEntry, NewMessage};
    let n = knob("BENCH_STORE_CHANGES", 4000) as usize;
    let mut rates = Vec::new();
    for with_row in [false, true, false, true] {
        let url = format!(
            "sqlite://{}/store-{with_row}-{}.db",
            dir.display(),
            rates.len()
        );
        let store = corral::store::open(&url).await.expect("store");
        let t = Instant::now();
        for i in 0..n {
            let action = if i % 2 == 0 {
                LockAction::Start {
                    reason: String::new(),
                }
            } else {
                LockAction::Stop { force: true }
            };
            let actor = Actor {
                who: "api:bench".into(),
                may_force: true,
                holder_only_stop: false,
            };
            store
                .change_lock(Box::new(move |st| {
                    let state = corral::lock::apply(st, &action, &actor, 1)?;
                    let mut effects = Effects::default();
                    if with_row {
                        effects.messages.push(NewMessage::post(
                            1,
                            CHANNEL,
                            Message::text("🚀 api:bench started a release (via api)"),
                        ));
                    }
                    Ok(LockDecision {
                        state,
                        history: LockHistoryEntry {
                            at: 1,
                            actor: actor.who.clone(),
                            action: action.name().into(),
                            reason: String::new(),
                            source: Source::Api,
                            forced: false,
                        },
                        effects,
                    })
                }))
                .await
                .expect("store")
                .expect("allowed");
        }
        rates.push((with_row, n as f64 / t.elapsed().as_secs_f64()));
    }
    let mean = |w: bool| {
        let v: Vec<f64> = rates.iter().filter(|r| r.0 == w).map(|r| r.1).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    println!(
        "store alone: {:.0} lock changes/s without a row, {:.0} with its announcement row → {:+.1} %",
        mean(false),
        mean(true),
        (mean(true) / mean(false) - 1.0) * 100.0
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("corral-bench-outbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    if wants("updates") {
        updates(&dir).await;
    }
    if wants("outage") {
        outage(&dir).await;
    }
    if wants("hotpath") {
        store_cost(&dir).await;
        hotpath(&dir).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
