//! The outbox: every message delivered once, in order, through 429s, 5xx, lost answers,
//! restarts and refusals — against the fake Slack with scripted faults, on a `ManualClock`
//! shared by corral and the fake, so pacing and `Retry-After` windows are asserted on
//! call times without real waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::chat::Message;
use corral::clock::ManualClock;
use corral::job::{JobKind, JobStatus, Outcome, PlanGroup, PlanItem, Progress, ProgressTx};
use corral::store::{NewMessage, RowState};

use crate::support::TempDir;
use crate::support::corral::{CHANNEL, Corral, SECRET, TOKEN, insert_job, slash_body};
use crate::support::fake_slack::{Call, Failure, FakeSlack};

/// Slack's real pacing (the harness scales it down for other tests).
const REAL_PACING: &[(&str, &str)] = &[
    ("CORRAL_SLACK_POST_INTERVAL", "1s"),
    ("CORRAL_SLACK_UPDATE_INTERVAL", "1200ms"),
];

fn manual() -> ManualClock {
    ManualClock::at_unix(crate::support::now())
}

/// Moves `clock` in `step`s (yielding real time between them) until `done` or `max`.
async fn drive(clock: &ManualClock, step: Duration, max: Duration, done: impl Fn() -> bool) {
    let mut spent = Duration::ZERO;
    while !done() && spent < max {
        clock.advance(step);
        spent += step;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// Drives `clock` until the app's outbox is empty.
async fn drain(c: &Corral, clock: &ManualClock, max: Duration) {
    let mut spent = Duration::ZERO;
    while spent < max {
        if c.app.store.outbox_stats().await.is_ok_and(|s| s.depth == 0) {
            return;
        }
        clock.advance(Duration::from_millis(100));
        spent += Duration::from_millis(100);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    panic!(
        "outbox not drained after {max:?}: {:?}",
        c.app.store.outbox_rows(None, 200).await
    );
}

async fn api_get(c: &Corral, path: &str) -> String {
    c.http
        .get(format!("{}{path}", c.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn posts(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| c.method == "chat.postMessage")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_lock_changes_through_429s_and_500s_arrives_once_in_order() {
    let clock = manual();
    let c = Corral::start_on(REAL_PACING, clock.shared()).await;
    let t0 = clock.shared().unix_ms();
    // Slack answers 429 (Retry-After: 2) for 6 s, then 500 for 4 s, then recovers.
    c.slack.fail_during(
        Some("chat.postMessage"),
        t0,
        t0 + 6000,
        Failure::RateLimited { retry_after: 2 },
    );
    c.slack
        .fail_during(None, t0 + 6000, t0 + 10_000, Failure::Status(500));
    let mut want = Vec::new();
    for i in 0..15 {
        let r = api_get(&c, &format!("/start?name=u{i}")).await;
        assert_eq!(r, "1");
        want.push(format!(
            "🚀 releasestatus:u{i} started a release (via releasestatus)"
        ));
        assert_eq!(api_get(&c, "/stop").await, "1");
        want.push("✅ releasestatus finished the release (via releasestatus)".to_string());
        clock.advance(Duration::from_millis(150));
    }
    let slack = c.slack.clone();
    drive(
        &clock,
        Duration::from_millis(100),
        Duration::from_secs(120),
        || slack.posted().len() >= 30,
    )
    .await;
    c.delivered().await;

    let got: Vec<String> = c
        .slack
        .posted()
        .into_iter()
        .filter(|p| p.channel == CHANNEL)
        .map(|p| p.text)
        .collect();
    assert_eq!(
        got, want,
        "every announcement exactly once, in commit order"
    );

    let calls = c.slack.calls();
    let posts = posts(&calls);
    for w in posts.windows(2) {
        let (a, b) = (w[0].at_ms, w[1].at_ms);
        if a < t0 + 6000 {
            assert!(
                b - a >= 2000,
                "a post at +{} ms, inside the Retry-After window of the 429 at +{} ms",
                b - t0,
                a - t0
            );
        } else {
            assert!(
                b - a >= 1000,
                "posts to one channel at most 1/s: +{} then +{}",
                a - t0,
                b - t0
            );
        }
    }
    assert!(posts.iter().any(|p| p.at_ms < t0 + 6000), "429s were met");
    assert!(
        posts
            .iter()
            .any(|p| (t0 + 6000..t0 + 10_000).contains(&p.at_ms)),
        "500s were met"
    );
    let metrics = api_get(&c, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("corral_outbox_rate_limited_total ")
                && l != "corral_outbox_rate_limited_total 0"),
        "{metrics}"
    );
    assert!(metrics.contains("corral_outbox_depth 0"), "{metrics}");
    assert!(
        metrics
            .contains("corral_outbox_sends_total{method=\"chat.postMessage\",outcome=\"ok\"} 30"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_post_whose_answer_is_lost_is_looked_up_not_sent_twice() {
    let c = Corral::start().await;
    c.slack
        .fail_next("chat.postMessage", Failure::AcceptThenDrop);
    assert_eq!(api_get(&c, "/block?name=ops").await, "1");
    c.delivered().await;
    let posted = c.slack.posted();
    assert_eq!(posted.len(), 1, "delivered once: {posted:?}");
    assert!(posted[0].text.contains("blocked releases"));
    // It was looked for by its stamp before any second post.
    let lookups = c.slack.calls_to("conversations.history");
    assert_eq!(lookups.len(), 1);
    assert_eq!(lookups[0].body["include_all_metadata"], "true");
    assert_eq!(lookups[0].channel(), CHANNEL);
    assert_eq!(c.slack.calls_to("chat.postMessage").len(), 1);
    let rows = c.app.store.outbox_rows(None, 10).await.unwrap();
    assert_eq!(rows[0].state, RowState::Done);
    assert_eq!(rows[0].ts.as_deref(), Some(posted[0].ts.as_str()));
    // Metadata carried the row's id.
    assert_eq!(
        posted[0].metadata["event_payload"]["corral_outbox_id"],
        rows[0].id.to_string()
    );
}

#[tokio::test]
async fn a_process_that_died_mid_call_is_followed_by_one_that_looks_first() {
    let dir = TempDir::new("outbox-restart");
    let db = format!("sqlite://{}/c.db", dir.0.display());
    let clock = manual();
    let slack = FakeSlack::start_with_clock(clock.shared()).await;
    let extra = [("CORRAL_DATABASE_URL", db.as_str())];
    let first = Corral::start_against(slack.clone(), &extra, clock.shared()).await;
    slack.fail_next("chat.postMessage", Failure::AcceptThenDrop);
    assert_eq!(api_get(&first, "/start?name=a").await, "1");
    assert_eq!(api_get(&first, "/stop").await, "1");
    let s = slack.clone();
    drive(
        &clock,
        Duration::from_millis(50),
        Duration::from_secs(5),
        || !s.posted().is_empty(),
    )
    .await;
    // The first process "dies": its sender stops, a lease may be left behind.
    let stuck = first.app.store.outbox_rows(None, 10).await.unwrap();
    assert!(stuck[0].unknown || stuck[0].attempts >= 1, "{stuck:?}");
    drop(first);
    let second = Corral::start_against(slack.clone(), &extra, clock.shared()).await;
    drain(&second, &clock, Duration::from_secs(120)).await;
    let texts: Vec<String> = slack.posted().into_iter().map(|p| p.text).collect();
    assert_eq!(
        texts,
        vec![
            "🚀 releasestatus:a started a release (via releasestatus)".to_string(),
            "✅ releasestatus finished the release (via releasestatus)".to_string(),
        ],
        "once each, in order, across the restart"
    );
}

/// A fan of progress events for one job, the way a domain module sends them.
async fn five_hundred_targets(tx: ProgressTx) {
    let groups: Vec<PlanGroup> = (0..10)
        .map(|g| PlanGroup {
            name: format!("env{g}"),
            items: (0..50)
                .map(|i| PlanItem {
                    target: format!("svc{i}"),
                    change: "1.0 → 2.0".into(),
                    skipped: None,
                    details: Vec::new(),
                    binds: String::new(),
                })
                .collect(),
        })
        .collect();
    tx.send(Progress::Plan {
        title: "myorg/app:2.0".into(),
        groups,
    });
    for g in 0..10 {
        for i in 0..50 {
            tx.send(Progress::TargetFinished {
                group: format!("env{g}"),
                target: format!("svc{i}"),
                ok: !(g == 3 && i < 5),
                detail: if g == 3 && i < 5 {
                    "422 from Rancher".into()
                } else {
                    String::new()
                },
            });
        }
        tx.send(Progress::GroupFinished {
            group: format!("env{g}"),
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_500_targets_at_slacks_pace_ends_complete_with_a_final_root() {
    let clock = manual();
    let c = Corral::start_on(REAL_PACING, clock.shared()).await;
    // Slack's own limit: a second post to a channel within 1 s is a 429.
    c.slack.enforce_post_rate(Duration::from_secs(1));
    let job = insert_job(
        c.app.store.as_ref(),
        JobKind::UpgradeImage,
        "/upgrade image myorg/app:2.0",
        "U0ALICE",
        corral::door::Source::Slack,
        Some(CHANNEL),
    )
    .await;
    let mut reporter = corral::app::reporter::Reporter::open(
        c.app.store.clone(),
        c.app.clock.clone(),
        c.app.outbox.clone(),
        None,
        job.clone(),
    )
    .await;
    reporter.running().await;
    let (tx, rx) = ProgressTx::channel();
    let feed = tokio::spawn(five_hundred_targets(tx));
    reporter.run(rx).await;
    feed.await.unwrap();
    let outcome = Outcome {
        succeeded: 495,
        failed: (0..5)
            .map(|i| corral::job::Failure {
                group: "env3".into(),
                target: format!("svc{i}"),
                reason: "422 from Rancher".into(),
            })
            .collect(),
        summary: "495 services upgraded".into(),
        ..Outcome::default()
    };
    reporter.finish(JobStatus::Failed, &outcome).await;
    drain(&c, &clock, Duration::from_secs(300)).await;

    let posted = c.slack.posted();
    assert_eq!(
        posted.len(),
        1 + 1 + 10 + 1,
        "root, plan, 10 groups, summary"
    );
    let root = &posted[0];
    assert!(root.thread_ts.is_none());
    assert!(
        posted[1..]
            .iter()
            .all(|p| p.thread_ts.as_deref() == Some(root.ts.as_str()))
    );
    assert!(posted[1].text.starts_with("*Plan:*"));
    for g in 0..10 {
        assert!(
            posted[2 + g].text.contains(&format!("*env{g}*")),
            "{}",
            posted[2 + g].text
        );
    }
    assert!(posted[12].text.contains("495 succeeded, 5 failed"));
    assert!(
        root.text.contains("❌ 5 of 500 failed"),
        "the root is final: {}",
        root.text
    );
    let calls = c.slack.calls();
    assert_eq!(
        posts(&calls).len(),
        13,
        "no 429 from Slack's own limit: corral paced itself"
    );
    let updates = calls.iter().filter(|c| c.method == "chat.update").count();
    assert!(
        updates <= 20,
        "500 progress updates coalesced into a handful of edits, got {updates}"
    );
    let rec = c.app.store.job(job.id).await.unwrap().unwrap();
    assert_eq!(rec.status, JobStatus::Failed);
}

/// Collects log lines written while a test runs (JSON, as CORRAL_LOG_FORMAT=json).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn an_unrecoverable_slack_error_is_on_the_job_and_in_the_log_and_the_rest_goes_on() {
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(move || sink.clone())
        .finish();
    // A current-thread test: the sender's task runs on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let c = Corral::start().await;
    c.slack.refuse_channel("C0GONE", "channel_not_found");
    let body = slash_body("/upgrade", "library:web:12 --dry-run", "U0ALICE", "C0GONE");
    let r = c
        .post_signed(
            "/slack/commands",
            "application/x-www-form-urlencoded",
            &body,
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 200);
    c.app.runner.wait(1).await;
    // Meanwhile other messages go on.
    assert_eq!(api_get(&c, "/start?name=ops").await, "1");
    c.delivered().await;
    let job: serde_json::Value =
        serde_json::from_str(&api_get(&c, "/api/v1/jobs/1").await).unwrap();
    let why = job["delivery"].as_str().unwrap_or_default();
    assert!(why.contains("channel_not_found"), "{job}");
    let posted = c.slack.posted();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0].channel, CHANNEL);
    // The root was tried once; its replies were not sent to a thread that does not exist.
    let to_gone = c
        .slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c.channel() == "C0GONE")
        .count();
    assert_eq!(to_gone, 1);
    let stats = c.app.store.outbox_stats().await.unwrap();
    assert!(stats.failed >= 2, "{stats:?}");
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("channel_not_found"))
        .unwrap_or_else(|| panic!("no log line names the error: {text}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
    assert_eq!(v["job"], 1, "{line}");
    assert_eq!(v["level"], "ERROR");
}

#[tokio::test]
async fn messages_past_the_give_up_age_are_dead_counted_and_on_the_job() {
    let clock = manual();
    let c = Corral::start_on(&[("CORRAL_OUTBOX_GIVE_UP", "1m")], clock.shared()).await;
    c.slack.fail_during(None, 0, i64::MAX, Failure::Status(503));
    let job = insert_job(
        c.app.store.as_ref(),
        JobKind::Deploy,
        "/deploy https://x/m.yml",
        "U0ALICE",
        corral::door::Source::Slack,
        Some(CHANNEL),
    )
    .await;
    c.app
        .say(vec![
            NewMessage::post(clock.shared().unix_ms(), CHANNEL, Message::text("hello")).job(job.id),
        ])
        .await;
    let store = c.app.store.clone();
    let mut spent = Duration::ZERO;
    while spent < Duration::from_secs(400) {
        if store.outbox_stats().await.unwrap().dead == 1 {
            break;
        }
        clock.advance(Duration::from_millis(100));
        spent += Duration::from_millis(100);
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    assert_eq!(store.outbox_stats().await.unwrap().dead, 1);
    let attempts = c.slack.calls_to("chat.postMessage").len();
    assert!(
        attempts >= 5,
        "retried with backoff until the age: {attempts}"
    );
    // Backoff is capped: never much more than 8 s between attempts (the test's clock
    // runs ahead of the sender by a step or two).
    let calls = c.slack.calls_to("chat.postMessage");
    let gaps: Vec<i64> = calls.windows(2).map(|w| w[1].at_ms - w[0].at_ms).collect();
    assert!(gaps.iter().all(|g| *g <= 9_000), "{gaps:?}");
    let rec = store.job(job.id).await.unwrap().unwrap();
    assert!(rec.delivery.unwrap_or_default().contains("gave up"));
    assert!(
        api_get(&c, "/metrics")
            .await
            .contains("corral_outbox_dead_total 1")
    );
}

#[tokio::test]
async fn readiness_stays_true_while_slack_is_down_and_the_depth_shows() {
    let c = Corral::start().await;
    c.slack.fail_during(None, 0, i64::MAX, Failure::Status(500));
    assert_eq!(api_get(&c, "/start?name=x").await, "1");
    let r = c
        .http
        .get(format!("{}/readyz", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = api_get(&c, "/metrics").await;
    assert!(m.contains("corral_outbox_depth 1"), "{m}");
    c.slack.clear_faults();
    c.delivered().await;
    assert_eq!(c.slack.posted().len(), 1);
}

#[tokio::test]
async fn ephemeral_replies_are_at_most_once_after_an_unknown_outcome() {
    let c = Corral::start().await;
    c.slack
        .fail_next("chat.postEphemeral", Failure::AcceptThenDrop);
    let mut event: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/slack/events/app_mention.event_callback.docs.json"
        ))
        .unwrap(),
    )
    .unwrap();
    event["event"]["text"] = serde_json::json!("<@U0LAN0Z89> release status");
    let r = c
        .post_signed(
            "/slack/events",
            "application/json",
            &event.to_string(),
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let _ = c
        .slack
        .wait_for(5, |calls| {
            calls.iter().any(|c| c.method == "chat.postEphemeral")
        })
        .await;
    c.delivered().await;
    assert_eq!(
        c.slack.calls_to("chat.postEphemeral").len(),
        1,
        "not resent"
    );
    let rows = c.app.store.outbox_rows(None, 10).await.unwrap();
    assert_eq!(rows[0].state, RowState::Dropped, "{rows:?}");
}

#[tokio::test]
async fn replies_past_slacks_validity_are_dropped_not_retried() {
    let c = Corral::start().await;
    let now = c.app.clock.unix_ms();
    c.app
        .say(vec![
            NewMessage::respond(
                now,
                format!("{}/respond", c.slack.api_url),
                true,
                now - 31 * 60 * 1000,
                Message::text("too late"),
            ),
            NewMessage::ephemeral(now - 31 * 60 * 1000, CHANNEL, "U1", Message::text("stale")),
        ])
        .await;
    c.delivered().await;
    let rows = c.app.store.outbox_rows(None, 10).await.unwrap();
    assert!(
        rows.iter().all(|r| r.state == RowState::Dropped),
        "{rows:?}"
    );
    assert!(c.slack.calls().is_empty());
}

#[tokio::test]
async fn a_flood_from_one_user_gets_one_friendly_reply() {
    let c = Corral::start_with(&[("CORRAL_SLACK_USER_RATE", "5")]).await;
    let mut texts = Vec::new();
    for _ in 0..8 {
        let r = c.slash("/release", "status", "U0FLOOD").await;
        assert_eq!(r.status(), 200);
        texts.push(r.text().await.unwrap());
    }
    assert!(
        texts[..5]
            .iter()
            .all(|t| t.contains("No release is running"))
    );
    assert!(
        texts[5].contains("faster than corral takes them"),
        "{}",
        texts[5]
    );
    assert!(
        texts[6..].iter().all(String::is_empty),
        "told once: {texts:?}"
    );
    // Someone else is not held back.
    let v = c.slash_json("/release", "status", "U0OTHER").await;
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("No release is running")
    );
    assert!(
        api_get(&c, "/metrics")
            .await
            .contains("corral_slack_rate_limited_commands_total 3")
    );
}

#[tokio::test]
async fn a_webhook_posts_each_jobs_plan_and_outcome_once_and_never_edits() {
    let slack = FakeSlack::start().await;
    let c = Corral::start_against(
        slack.clone(),
        &[
            ("SLACK_BOT_TOKEN", ""),
            ("CORRAL_CHANNEL", ""),
            ("AUTOUPDATE_SLACK_WEBHOOK_URL", slack.webhook_url.as_str()),
            ("AUTOUPDATE_SLACK_BOT_NAME", "rancher-service-updater"),
        ],
        corral::clock::system(),
    )
    .await;
    let job = insert_job(
        c.app.store.as_ref(),
        JobKind::UpgradeImage,
        "/upgrade image myorg/app:2.0",
        "api:ci",
        corral::door::Source::Api,
        Some(corral::app::WEBHOOK_CHANNEL),
    )
    .await;
    let mut reporter = corral::app::reporter::Reporter::open(
        c.app.store.clone(),
        c.app.clock.clone(),
        c.app.outbox.clone(),
        None,
        job.clone(),
    )
    .await;
    reporter.running().await;
    let (tx, rx) = ProgressTx::channel();
    tx.send(Progress::Plan {
        title: "myorg/app:2.0".into(),
        groups: vec![PlanGroup {
            name: "prod".into(),
            items: vec![PlanItem {
                target: "web".into(),
                change: "1.0 → 2.0".into(),
                skipped: None,
                details: Vec::new(),
                binds: String::new(),
            }],
        }],
    });
    tx.send(Progress::TargetFinished {
        group: "prod".into(),
        target: "web".into(),
        ok: true,
        detail: String::new(),
    });
    tx.send(Progress::GroupFinished {
        group: "prod".into(),
    });
    drop(tx);
    reporter.run(rx).await;
    let outcome = Outcome {
        succeeded: 1,
        summary: "1 service upgraded to 2.0".into(),
        ..Outcome::default()
    };
    reporter.finish(JobStatus::Succeeded, &outcome).await;
    // A lock change from outside Slack is announced there too.
    assert_eq!(api_get(&c, "/start?name=ci").await, "1");
    c.delivered().await;
    let hooks = slack.calls_to("webhook");
    let texts: Vec<&str> = hooks.iter().map(|h| h.text()).collect();
    assert_eq!(hooks.len(), 3, "plan, outcome, announcement: {texts:?}");
    assert!(texts[0].starts_with("*Plan:*"));
    assert!(texts[1].contains("*Done*: 1 service upgraded to 2.0"));
    assert!(texts[2].contains("started a release"));
    assert!(
        hooks
            .iter()
            .all(|h| h.body["username"] == "rancher-service-updater")
    );
    // Each says which job it is about (there is no thread to say it).
    assert!(hooks[0].body.to_string().contains("Job #1"));
    assert!(
        slack.calls().iter().all(|c| c.method == "webhook"),
        "no Web API calls"
    );
}
