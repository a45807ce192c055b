//! Approval figures (issue 11), in release mode, on loopback, against the in-process fake
//! Rancher (one `prod` stack of `library:my_web` at 1.0.0, upgraded to 2.0.0 and put back
//! after every job) with Slack off (messages go to the log):
//!
//! 1. `latency`: 200 approvals, one after another. Each: `/upgrade library:my_web:2.0.0`
//!    through `App::handle`, waited for until it awaits approval; then a signed
//!    `block_actions` click on `/slack/interactions` by an approver; the time from sending
//!    the click until the job is `running` in the store (the completing vote's
//!    transaction, the re-plan against Rancher, the plan's digest compared, the job
//!    marked running). Baseline in the same run, alternating: the same command with no
//!    approval rule matching (`--env ^staging$` on a staging stack), from `App::handle`
//!    until `running` (planning and starting without people). p50/p99 of both and their
//!    ratio.
//! 2. `race`: 100 signed clicks by 100 different approvers on one card at the same
//!    moment (`required = 1`): how many runs (upgrade requests Rancher received for the
//!    stack, and completions recorded), and 100 `App::vote`s at once on a second card:
//!    store transaction attempts (retries = attempts − recorded votes).
//!
//! Run: `cargo bench --bench approvals`. Knobs: BENCH_APPROVALS (200),
//! BENCH_DATABASE_URL (default a SQLite file; a `postgres://` URL of an empty database
//! measures PostgreSQL's retries).

#[path = "../tests/it/support/fake_rancher.rs"]
#[allow(unused_imports)]
mod fake_rancher;

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::app::{App, Request, Source};
use corral::config::{Config, Env};
use corral::job::JobStatus;
use corral::job::approval::VoteKind;
use fake_rancher::{ACCESS_KEY, FakeRancher, SECRET_KEY};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const DC: &str = "version: '2'\nservices:\n  web:\n    image: myorg/web:2.0.0\n";

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const POLICY: &str = r#"
[roles]
approvers = ["U0BOB"]

[[approval]]
commands     = ["upgrade"]
environments = "^prod"
approvers    = ["approvers", "everyone"]
required     = 1
expires      = "1h"
"#;

async fn app(rancher: &FakeRancher, db: &str, policy: &std::path::Path) -> Arc<App> {
    let url = format!("{}/v1", rancher.url);
    let config = Config::from_env(&Env::from_pairs([
        ("CORRAL_DATABASE_URL", db),
        ("SLACK_SIGNING_SECRET", SECRET),
        ("RANCHER_URL", url.as_str()),
        ("RANCHER_ACCESS_KEY", ACCESS_KEY),
        ("RANCHER_SECRET_KEY", SECRET_KEY),
        ("CORRAL_RANCHER_RATE", "10000"),
        ("CORRAL_CHANNEL", "C0BENCH"),
        ("CORRAL_POLICY", &policy.display().to_string()),
        ("CORRAL_LOG", "error"),
    ]))
    .expect("config");
    let mut config = config;
    config.rancher.poll_interval = Duration::from_millis(5);
    let store = corral::store::open(config.database_url.expose())
        .await
        .expect("store");
    let app = App::new(
        Arc::new(config),
        store,
        Arc::new(corral::chat::LogChat::default()),
    );
    app.start_sender();
    app
}

async fn status_is(app: &App, job: i64, want: JobStatus) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = app
            .store
            .job(job)
            .await
            .expect("store")
            .expect("job")
            .status;
        if s == want || (want != JobStatus::Running && s.is_final()) {
            return;
        }
        if s.is_final() && want == JobStatus::Running {
            panic!("job {job} ended {s} before running");
        }
        assert!(Instant::now() < deadline, "job {job} stuck at {s}");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn command(app: &App, text: &str) -> i64 {
    let reply = app
        .handle(Request {
            command: corral::command::parse_slash("/upgrade", text).expect("command"),
            user: "U0ALICE".into(),
            source: Source::Slack,
            channel: Some("C0BENCH".into()),
        })
        .await;
    reply.job.expect("a job").id
}

fn click_body(user: &str, job: i64) -> String {
    let payload = serde_json::json!({
        "type": "block_actions",
        "user": {"id": user, "username": "u", "name": "u", "team_id": "T111"},
        "api_app_id": "A111",
        "token": "verification_token",
        "container": {"type": "message", "message_ts": "111.222", "channel_id": "C0BENCH", "is_ephemeral": false},
        "trigger_id": "111.222.valid",
        "team": {"id": "T111", "domain": "workspace-domain"},
        "channel": {"id": "C0BENCH", "name": "bench"},
        "actions": [{
            "action_id": "approval.approve", "block_id": format!("appr:{job}:r0"),
            "text": {"type": "plain_text", "text": "Approve", "emoji": true},
            "value": format!("{job}:1"), "type": "button", "action_ts": "1596530385.194939"
        }]
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).expect("form")
}

async fn click(http: &reqwest::Client, base: &str, user: &str, job: i64) -> u16 {
    let body = click_body(user, job);
    let ts = jiff::Timestamp::now().as_second().to_string();
    let sig = corral::slack::verify::sign(SECRET, &ts, body.as_bytes());
    http.post(format!("{base}/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body)
        .send()
        .await
        .expect("click")
        .status()
        .as_u16()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

async fn serve(app: Arc<App>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = corral::api::router(app);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("corral-bench-approvals-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).expect("policy");
    let db = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}/bench.db", dir.display()));
    let rancher = FakeRancher::start().await;
    rancher.add_template(
        "library",
        "my_web",
        &[
            ("1", "1.0.0", &[("docker-compose.yml", "old")]),
            ("10", "2.0.0", &[("docker-compose.yml", DC)]),
        ],
    );
    rancher.set_default_action_time(Duration::from_millis(1));
    let prod = rancher.add_project("prod");
    let staging = rancher.add_project("staging");
    let p = rancher.add_stack(&prod, "web-prod", "catalog://library:my_web:1");
    let s = rancher.add_stack(&staging, "web-staging", "catalog://library:my_web:1");
    let reset = |id: &str| {
        rancher.patch(
            id,
            serde_json::json!({"externalId": "catalog://library:my_web:1", "state": "active"}),
        )
    };
    let app = app(&rancher, &db, &policy).await;
    let base = serve(app.clone()).await;
    let http = corral::http_client().expect("client");

    let n = knob("BENCH_APPROVALS", 200);
    let (mut approved, mut plain) = (Vec::new(), Vec::new());
    for i in 0..n {
        // Approval: request, wait for the card, click, time until running.
        let job = command(&app, "library:my_web:2.0.0 --env ^prod$").await;
        status_is(&app, job, JobStatus::AwaitingApproval).await;
        let t = Instant::now();
        assert_eq!(click(&http, &base, "U0BOB", job).await, 200);
        status_is(&app, job, JobStatus::Running).await;
        approved.push(t.elapsed().as_secs_f64() * 1000.0);
        status_is(&app, job, JobStatus::Succeeded).await;
        reset(&p);
        // Baseline: a job no rule matches, from the command until running.
        let t = Instant::now();
        let job = command(&app, "library:my_web:2.0.0 --env ^staging$").await;
        status_is(&app, job, JobStatus::Running).await;
        plain.push(t.elapsed().as_secs_f64() * 1000.0);
        status_is(&app, job, JobStatus::Succeeded).await;
        reset(&s);
        if i == 0 {
            // The first pair warms caches and connections; it is measured like the others.
        }
    }
    let (a50, a99) = (pct(&mut approved, 0.5), pct(&mut approved, 0.99));
    let (b50, b99) = (pct(&mut plain, 0.5), pct(&mut plain, 0.99));
    println!("latency ({n} approvals, {db}):");
    println!("  click → running:             p50 {a50:.2} ms, p99 {a99:.2} ms");
    println!("  baseline command → running:  p50 {b50:.2} ms, p99 {b99:.2} ms");
    println!(
        "  ratio (approval / baseline): p50 {:.2}×, p99 {:.2}×",
        a50 / b50,
        a99 / b99
    );

    // Race 1: 100 signed clicks on one card at once.
    rancher.clear_log();
    let job = command(&app, "library:my_web:2.0.0 --env ^prod$").await;
    status_is(&app, job, JobStatus::AwaitingApproval).await;
    let clicks: Vec<_> = (0..100)
        .map(|i| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move { click(&http, &base, &format!("U0R{i:03}"), job).await })
        })
        .collect();
    for c in clicks {
        assert_eq!(c.await.expect("task"), 200);
    }
    status_is(&app, job, JobStatus::Succeeded).await;
    let upgrades = rancher
        .posts()
        .iter()
        .filter(|p| p.action().as_deref() == Some("upgrade"))
        .count();
    let (_, votes) = app
        .store
        .approval(job)
        .await
        .expect("store")
        .expect("approval");
    println!(
        "race: 100 simultaneous clicks on one card: runs = {upgrades} (upgrade requests to Rancher), votes recorded = {}",
        votes.len()
    );
    reset(&p);

    // Race 2: 100 votes at once through App::vote, to count store attempts.
    let job = command(&app, "library:my_web:2.0.0 --env ^prod$").await;
    status_is(&app, job, JobStatus::AwaitingApproval).await;
    let votes: Vec<_> = (0..100)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                app.vote(
                    job,
                    &format!("U0V{i:03}"),
                    Source::Slack,
                    VoteKind::Approve,
                    "",
                )
                .await
            })
        })
        .collect();
    let (mut completed, mut recorded, mut attempts) = (0, 0, 0);
    for v in votes {
        let r = v.await.expect("task");
        completed += usize::from(r.completed);
        recorded += usize::from(r.ok);
        attempts += r.attempts as usize;
    }
    status_is(&app, job, JobStatus::Succeeded).await;
    println!(
        "race: 100 simultaneous votes: completions = {completed}, recorded = {recorded}, store transaction attempts of recorded votes = {attempts} (retries = {})",
        attempts - recorded
    );
    let _ = std::fs::remove_dir_all(&dir);
}
