//! Several `corral serve` processes (the real binary) on one PostgreSQL database: the
//! lock decided once across processes, Slack retries handled once whichever replica
//! they land on, readiness that follows the database, errors instead of hangs, and
//! moving a first-release SQLite store over with `corral migrate`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::TempDir;
use crate::support::corral::{SECRET, TOKEN, slash_body};
use crate::support::fake_rancher::{ACCESS_KEY, FakeRancher, SECRET_KEY};
use crate::support::fake_services::{self, add_service, launch_config};
use crate::support::fake_slack::FakeSlack;
use crate::support::postgres::TestDb;
use crate::support::tcp_proxy::{Mode, TcpProxy, upstream_of};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// Rounds of the three-replica lock race. The suite runs 300 (about 5 s in a debug build:
/// the race keeps both cores busy, and timing-sensitive tests run beside it); the figure
/// run is `CORRAL_TEST_LOCK_ROUNDS=1000` (about 15 s). Removing the row lock from
/// `change_lock` makes this fail in the first rounds. Release-build figures:
/// `bench/replicas.sh`.
fn lock_rounds() -> usize {
    std::env::var("CORRAL_TEST_LOCK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary with a clean environment on database `url`.
fn corral(dir: &TempDir, url: &str, slack: Option<&FakeSlack>, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(&dir.0)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("USER", "tester")
        .env("CORRAL_LOG", "warn")
        .env("CORRAL_API_TOKEN", TOKEN)
        .env("SLACK_SIGNING_SECRET", SECRET)
        .env("CORRAL_DATABASE_URL", url);
    if let Some(s) = slack {
        cmd.env("SLACK_BOT_TOKEN", "xoxb-replica")
            .env("SLACK_API_URL", &s.api_url)
            .env("CORRAL_CHANNEL", "C0RELEASES");
    }
    cmd
}

struct Replica {
    child: Child,
    url: String,
    /// Its stderr (the log).
    log: std::path::PathBuf,
}

impl Replica {
    /// Starts `corral serve` and waits (up to 30 s) until it is ready. A process that
    /// exits first because the database did not answer its start-up in time (the tests
    /// with 1 s timeouts, on a loaded machine) is started again, twice at most; any other
    /// exit fails the test with the process's log.
    async fn start(
        dir: &TempDir,
        db: &str,
        slack: Option<&FakeSlack>,
        extra: &[(&str, &str)],
    ) -> Replica {
        for _attempt in 0..3 {
            let port = free_port();
            let log_path = dir.0.join(format!("serve-{port}.log"));
            let log = std::fs::File::create(&log_path).unwrap();
            let mut cmd = corral(dir, db, slack, &["serve"]);
            cmd.env("CORRAL_LISTEN", format!("127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(log);
            for (k, v) in extra {
                cmd.env(k, v);
            }
            let mut replica = Replica {
                child: cmd.spawn().unwrap(),
                url: format!("http://127.0.0.1:{port}"),
                log: log_path.clone(),
            };
            let client = corral::http_client().unwrap();
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until {
                if let Ok(r) = client.get(format!("{}/readyz", replica.url)).send().await
                    && r.status() == 200
                {
                    return replica;
                }
                if let Ok(Some(status)) = replica.child.try_wait() {
                    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                    if text.contains("within") || text.contains("cannot connect") {
                        break;
                    }
                    panic!("corral serve exited ({status}) before it was ready:\n{text}");
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        panic!("corral serve did not become ready");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let r = http
        .get(url)
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn slash(http: &reqwest::Client, base: &str, text: &str) -> (u16, String, Duration) {
    let body = slash_body("/release", text, "U0ALICE", "C0TEAM");
    signed_post(http, base, "/slack/commands", body).await
}

/// A form POST signed as Slack signs it, to `path` on the replica at `base`: status, body
/// and how long it took.
async fn signed_post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: String,
) -> (u16, String, Duration) {
    let ts = crate::support::now().to_string();
    let sig = corral::slack::verify::sign(SECRET, &ts, body.as_bytes());
    let t = Instant::now();
    let r = http
        .post(format!("{base}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .timeout(Duration::from_secs(20))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap(), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_race_for_the_lock_and_exactly_one_wins_each_round() {
    let dir = TempDir::new("replicas-race");
    let db = TestDb::new("race").await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&dir, &db.url, None, &[]).await);
    }
    let http = corral::http_client().unwrap();
    let rounds = lock_rounds();
    for round in 0..rounds {
        let starts = replicas.iter().enumerate().map(|(i, r)| {
            let (http, url) = (http.clone(), format!("{}/start?name=r{round}-{i}", r.url));
            async move { get(&http, &url).await }
        });
        let answers = futures::future::join_all(starts).await;
        let winners = answers.iter().filter(|a| *a == &(200, "1".into())).count();
        assert!(
            answers
                .iter()
                .all(|(s, b)| *s == 200 && (b == "1" || b == "0")),
            "round {round}: {answers:?}"
        );
        assert_eq!(winners, 1, "round {round}: {answers:?}");
        let stopper = &replicas[round % 3];
        assert_eq!(
            get(&http, &format!("{}/stop", stopper.url)).await,
            (200, "1".into()),
            "round {round}"
        );
    }
    // Every winning start and every stop is in the shared history, nothing more.
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE action = 'start'), count(*) FILTER (WHERE action = 'stop') FROM lock_history",
            &[],
        )
        .await
        .unwrap();
    let (starts, stops): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((starts, stops), (rounds as i64, rounds as i64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_retry_landing_on_another_replica_is_handled_once() {
    let dir = TempDir::new("replicas-dedupe");
    let db = TestDb::new("dedupe").await;
    let slack = FakeSlack::start().await;
    let a = Replica::start(&dir, &db.url, Some(&slack), &[]).await;
    let b = Replica::start(&dir, &db.url, Some(&slack), &[]).await;
    let mut event: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/slack/events/app_mention.event_callback.docs.json"
        ))
        .unwrap(),
    )
    .unwrap();
    event["event"]["text"] = json!("<@U0LAN0Z89> release start from a mention");
    let body = event.to_string();
    let http = corral::http_client().unwrap();
    // The first delivery and Slack's retry, at once, one on each replica.
    let deliveries = [&a, &b].map(|r| {
        let (http, url, body) = (
            http.clone(),
            format!("{}/slack/events", r.url),
            body.clone(),
        );
        async move {
            let ts = crate::support::now().to_string();
            let sig = corral::slack::verify::sign(SECRET, &ts, body.as_bytes());
            http.post(url)
                .header("content-type", "application/json")
                .header("x-slack-request-timestamp", ts)
                .header("x-slack-signature", sig)
                .header("x-slack-retry-num", "1")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    assert_eq!(futures::future::join_all(deliveries).await, vec![200, 200]);
    slack
        .wait_for(10, |calls| {
            calls.iter().any(|c| c.method == "chat.postMessage")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posts = slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1, "one reply for one event: {posts:?}");
    let history: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM lock_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(history, 1, "the mention ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_and_requests_fail_fast_while_it_is_gone() {
    let dir = TempDir::new("replicas-away");
    let db = TestDb::new("readyz").await;
    let proxy = TcpProxy::start(upstream_of(&db.url)).await;
    let limits = [
        ("CORRAL_DATABASE_STATEMENT_TIMEOUT", "1s"),
        ("CORRAL_DATABASE_CONNECT_TIMEOUT", "1s"),
        ("CORRAL_DATABASE_POOL_TIMEOUT", "1s"),
    ];
    let r = Replica::start(&dir, &proxy.url_through(&db.url), None, &limits).await;
    let http = corral::http_client().unwrap();
    let readyz = |http: reqwest::Client, url: String| async move {
        let resp = http
            .get(format!("{url}/readyz"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    let until = |want: u16| {
        let (http, url) = (http.clone(), r.url.clone());
        async move {
            for _ in 0..100 {
                let (status, body) = readyz(http.clone(), url.clone()).await;
                if status == want {
                    return body;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("/readyz never answered {want}");
        }
    };
    assert_eq!(readyz(http.clone(), r.url.clone()).await.0, 200);

    // The database goes down.
    proxy.set(Mode::Closed);
    let body = until(503).await;
    assert!(body.contains("store unavailable"), "{body}");
    let t = Instant::now();
    assert_eq!(
        get(&http, &format!("{}/start?name=alice", r.url)).await,
        (503, "store unavailable".into())
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let (status, text, took) = slash(&http, &r.url, "status").await;
    assert_eq!(status, 200);
    assert!(
        text.contains("could not do that") && text.contains("database"),
        "{text}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");

    // It comes back: ready again, without a restart.
    proxy.set(Mode::Open);
    until(200).await;
    assert_eq!(
        get(&http, &format!("{}/start?name=alice", r.url)).await,
        (200, "1".into())
    );

    // The network stops passing bytes in the middle of things: each request still ends,
    // within the statement timeout, with words that say why.
    proxy.set(Mode::Stalled);
    // (The command limit reads the store first; its statement stalls and is cut, so the
    // command itself may meet a new connection that cannot be opened: either way a bound.)
    let (status, text, took) = slash(&http, &r.url, "status").await;
    assert_eq!(status, 200);
    assert!(
        text.contains("did not answer within 1s") || text.contains("no connection within 1s"),
        "{text}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    let t = Instant::now();
    assert_eq!(get(&http, &format!("{}/stop", r.url)).await.0, 503);
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    until(503).await;
    proxy.set(Mode::Open);
    until(200).await;
    // The lock is as the last committed change left it.
    assert_eq!(
        get(&http, &format!("{}/start?name=bob", r.url)).await,
        (200, "0".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corral_migrate_moves_a_first_release_store_and_the_bot_keeps_its_threads() {
    let dir = TempDir::new("replicas-migrate");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/store/corral-v0.1.db"
        ),
        dir.0.join("corral.db"),
    )
    .unwrap();
    let db = TestDb::new("migratecli").await;
    // The test server trusts loopback, so any password is accepted: it must not show.
    let mut with_password = url::Url::parse(&db.url).unwrap();
    with_password.set_password(Some("pg-sekrit")).unwrap();
    let target = with_password.to_string();
    let run = |args: &[&str]| {
        let out = corral(&dir, &target, None, args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["migrate", "--from", "sqlite://corral.db", "--to", &target]);
    assert_eq!(code, Some(0), "{out}{err}");
    for line in [
        "lock: running by cli:alice, blocked no",
        "lock changes: 5",
        "jobs: 2",
        "message ids: 2",
        "audit lines: 2",
        // A first-release store has none of the later tables; the lines are still there.
        "outbox rows: 0 (0 not delivered yet)",
        "scheduled firings: 0",
        "expected deploy hosts: 0",
        "approvals: 0",
        "votes: 0",
        "not copied (per process): replica heartbeats, job leases, command budgets",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    assert!(!format!("{out}{err}").contains("pg-sekrit"), "{out}{err}");

    // A second run finds the target in use and changes nothing.
    let (code, out, err) = run(&["migrate", "--from", "sqlite://corral.db", "--to", &target]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("not empty"), "{err}");
    assert!(!err.contains("pg-sekrit"), "{err}");
    // Bad arguments are refused before anything is opened.
    let (code, _, err) = run(&["migrate", "--from", "mysql://x", "--to", &target]);
    assert_eq!(code, Some(1));
    assert!(err.contains("sqlite://"), "{err}");

    // `corral check` names the backend and the schema version.
    let (code, out, err) = run(&["check"]);
    assert!(
        out.contains("ok   store: PostgreSQL postgres://postgres:***@"),
        "{out}{err}"
    );
    // The version this build migrates to (the numbers move as migrations land).
    assert!(
        out.contains("schema version ") && !out.contains("newer than this corral"),
        "{out}"
    );
    assert!(!format!("{out}{err}").contains("pg-sekrit"));
    let _ = code;

    // A replica on the new database reports the job the crash cut off in its old thread.
    let slack = FakeSlack::start().await;
    let _r = Replica::start(&dir, &target, Some(&slack), &[]).await;
    let calls = slack
        .wait_for(10, |calls| calls.iter().any(|c| c.method == "chat.update"))
        .await;
    let update = calls
        .iter()
        .find(|c| c.method == "chat.update")
        .expect("the interrupted job's root is edited");
    assert_eq!(
        (update.channel(), update.body["ts"].as_str()),
        ("cli", Some("0.000001")),
        "{calls:?}"
    );
}

/// A fake Rancher with one labelled service (`myorg/app:1.0` in `prod`) whose upgrade
/// takes `upgrade` to reach `upgraded`.
async fn rancher_with_one_service(upgrade: Duration) -> FakeRancher {
    let rancher = FakeRancher::start().await;
    fake_services::install(&rancher);
    rancher.set_default_action_time(upgrade);
    let env = rancher.add_project("prod");
    let stack = rancher.add_stack(&env, "app", "");
    add_service(
        &rancher,
        &env,
        &stack,
        "web",
        launch_config("docker:myorg/app:1.0", &[("autoupdate.enable", "true")]),
        json!([]),
    );
    rancher
}

/// Asks the replica at `base` to upgrade `myorg/app` to 2.0 (the updater's endpoint) and
/// waits until the upgrade reached Rancher; returns the job.
async fn upgrade_started(http: &reqwest::Client, base: &str, rancher: &FakeRancher) -> i64 {
    let r = http
        .post(format!("{base}/upgrade"))
        .bearer_auth(TOKEN)
        .body(r#"{"docker_image":"myorg/app:2.0","confirm":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job = r.json::<serde_json::Value>().await.unwrap()["job"]
        .as_i64()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while rancher.count("POST", "action=upgrade") == 0 {
        assert!(Instant::now() < until, "the upgrade never reached Rancher");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    job
}

/// The lease of the kill -9 test: short in the suite (`2s`), the default for the figure
/// (`CORRAL_TEST_JOB_LEASE=30s`).
fn test_lease() -> String {
    std::env::var("CORRAL_TEST_JOB_LEASE").unwrap_or_else(|_| "2s".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_job_has_its_job_reported_by_another_within_the_lease() {
    let dir = TempDir::new("replicas-kill");
    let db = TestDb::new("kill").await;
    let slack = FakeSlack::start().await;
    // A Rancher that takes ten minutes to upgrade: the job is held running.
    let rancher = rancher_with_one_service(Duration::from_secs(600)).await;
    let lease = test_lease();
    let lease_d = corral::text::parse_duration(&lease).unwrap();
    let extra = [
        ("RANCHER_URL", rancher.url.as_str()),
        ("RANCHER_ACCESS_KEY", ACCESS_KEY),
        ("RANCHER_SECRET_KEY", SECRET_KEY),
        ("CORRAL_JOB_LEASE", lease.as_str()),
        ("CORRAL_UPGRADE_TIMEOUT", "1h"),
        // A row the dead replica was sending when killed holds its channel's lane until
        // the row's lease (Slack timeout + 5 s) is over; kept short here.
        ("CORRAL_SLACK_TIMEOUT", "2s"),
    ];
    let mut a = Replica::start(&dir, &db.url, Some(&slack), &extra).await;
    let b = Replica::start(&dir, &db.url, Some(&slack), &extra).await;
    let http = corral::http_client().unwrap();
    // Running on A: Rancher got the upgrade, Slack the thread's root.
    let job = upgrade_started(&http, &a.url, &rancher).await;
    let calls = slack
        .wait_for(10, |c| c.iter().any(|c| c.method == "chat.postMessage"))
        .await;
    let root_ts = calls
        .iter()
        .find(|c| c.method == "chat.postMessage")
        .map(|c| c.channel().to_string());
    assert_eq!(root_ts.as_deref(), Some("C0RELEASES"));
    let (_, body) = get(&http, &format!("{}/api/v1/jobs/{job}", b.url)).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "running", "{v}");

    // Until A's sender is idle (its thread's first messages are out), so the kill does
    // not also leave a Slack call half-made: that row would wait for its own lease
    // (CORRAL_SLACK_TIMEOUT + 5 s) before another sender retries it, and the note queues
    // behind it in the channel.
    let mut seen = slack.calls().len();
    let quiet = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = slack.calls().len();
        if now == seen || Instant::now() > quiet {
            break;
        }
        seen = now;
    }
    // kill -9 (std's kill is SIGKILL on Unix): no goodbye, the lease just stops.
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let killed = Instant::now();
    let bound = lease_d + Duration::from_secs(5);
    // The decision: B's API says interrupted within the lease + 5 s.
    let marked = loop {
        let (_, body) = get(&http, &format!("{}/api/v1/jobs/{job}", b.url)).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["status"] == "interrupted" {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < bound,
            "not interrupted within {bound:?}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The thread: the note reaches Slack through B's sender.
    let calls = slack
        .wait_for(bound.as_secs() + 25, |c| {
            c.iter()
                .any(|c| c.method == "chat.postMessage" && c.text().contains("Interrupted"))
        })
        .await;
    let told = killed.elapsed();
    eprintln!(
        "kill -9 -> job interrupted (API) {marked:?}, note in its thread {told:?} (lease {lease})"
    );
    assert!(
        marked < bound,
        "interrupted after {marked:?}, lease {lease}"
    );
    let note = calls
        .iter()
        .find(|c| c.method == "chat.postMessage" && c.text().contains("Interrupted"))
        .unwrap();
    assert!(note.thread_ts().is_some(), "in the job's thread: {note:?}");
    slack
        .wait_for(10, |c| {
            c.iter()
                .any(|c| c.method == "chat.update" && c.text().contains("interrupted"))
        })
        .await;
    // Reported by B's API too, and once.
    let (_, body) = get(&http, &format!("{}/api/v1/jobs/{job}", b.url)).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "interrupted", "{v}");
    tokio::time::sleep(lease_d).await;
    let notes = slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c.text().contains("Interrupted"))
        .count();
    assert_eq!(notes, 1, "one note");
    // The survivor is still seen as alive; `corral check` lists it.
    let out = corral(&dir, &db.url, None, &["check"])
        .env("CORRAL_JOB_LEASE", &lease)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("replicas: 1 seen"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_lock_changes_spread_over_three_replicas_are_announced_once_each_in_order() {
    let dir = TempDir::new("replicas-announce");
    let db = TestDb::new("announce").await;
    let slack = FakeSlack::start().await;
    let fast = [("CORRAL_SLACK_POST_INTERVAL", "50ms")];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&dir, &db.url, Some(&slack), &fast).await);
    }
    let http = corral::http_client().unwrap();
    // 15 starts and 15 stops, each on the next replica, one after the other.
    for i in 0..15 {
        let start = &replicas[(2 * i) % 3];
        let stop = &replicas[(2 * i + 1) % 3];
        assert_eq!(
            get(&http, &format!("{}/start?name=u{i:02}", start.url)).await,
            (200, "1".into())
        );
        assert_eq!(
            get(&http, &format!("{}/stop", stop.url)).await,
            (200, "1".into())
        );
    }
    let posts = |calls: &[crate::support::fake_slack::Call]| {
        calls
            .iter()
            .filter(|c| c.method == "chat.postMessage" && c.channel() == "C0RELEASES")
            .map(|c| c.text().to_string())
            .collect::<Vec<_>>()
    };
    slack.wait_for(30, |c| posts(c).len() >= 30).await;
    // Let any duplicate that was coming arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = posts(&slack.calls());
    assert_eq!(got.len(), 30, "{got:#?}");
    for (i, pair) in got.chunks(2).enumerate() {
        assert!(
            pair[0].contains(&format!("releasestatus:u{i:02}")) && pair[0].contains("started"),
            "change {}: {pair:?}",
            2 * i
        );
        assert!(pair[1].contains("finished the release"), "{pair:?}");
    }
}

/// The lease sweep on the app's clock (a `ManualClock`): a job whose replica stopped
/// heartbeating is ended once its lease is over, not before; a job this replica runs is
/// renewed by its own heartbeat and never ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_sweep_follows_the_apps_clock() {
    use corral::clock::ManualClock;
    use corral::job::JobStatus;
    let clock = ManualClock::at_unix(1_700_000_000);
    let store = corral::store::open("sqlite::memory:").await.unwrap();
    let config = corral::config::Config::from_env(&corral::config::Env::from_pairs([
        ("CORRAL_DATABASE_URL", "sqlite::memory:"),
        ("CORRAL_JOB_LEASE", "30s"),
    ]))
    .unwrap();
    let new = || corral::store::NewJob {
        kind: corral::job::JobKind::Deploy,
        command: "/deploy https://x/m.yml".into(),
        requested_by: "U1".into(),
        source: corral::door::Source::Slack,
        channel: Some("C1".into()),
        now: 1_700_000_000,
    };
    let mut ids = Vec::new();
    for _ in 0..2 {
        let j = store
            .create_job(new(), Box::new(|_| Ok(corral::store::Effects::default())))
            .await
            .unwrap()
            .unwrap();
        store
            .set_job_status(j.id, JobStatus::Running, 1_700_000_000)
            .await
            .unwrap();
        ids.push(j.id);
    }
    let (dead, own) = (ids[0], ids[1]);
    let t0 = clock.shared().unix_ms();
    assert!(
        store
            .claim_job(dead, "gone:1:1", t0 + 30_000)
            .await
            .unwrap()
    );
    let app = crate::support::corral::start_app_on(
        std::sync::Arc::new(config),
        store.clone(),
        std::sync::Arc::new(corral::chat::LogChat::default()),
        clock.shared(),
    );
    assert!(
        store
            .claim_job(own, &app.replica.id, t0 + 30_000)
            .await
            .unwrap()
    );
    app.start_replica();
    let status = |id: i64| {
        let store = store.clone();
        async move { store.job(id).await.unwrap().unwrap().status }
    };
    // Waits (real time) until the loop ran its tick at the clock's time: its heartbeat is
    // in, then a moment for the sweep that follows it.
    let settle = || {
        let (store, now_ms) = (store.clone(), clock.shared().unix_ms());
        async move {
            for _ in 0..200 {
                if !store.replicas(now_ms).await.unwrap().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    settle().await;
    for _ in 0..5 {
        clock.advance(Duration::from_secs(5));
        settle().await;
    }
    // 25 s: both leases hold.
    assert_eq!(status(dead).await, JobStatus::Running);
    assert_eq!(status(own).await, JobStatus::Running);
    let mut ended = false;
    for _ in 0..3 {
        clock.advance(Duration::from_secs(5));
        settle().await;
        for _ in 0..20 {
            if status(dead).await == JobStatus::Interrupted {
                ended = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if ended {
            break;
        }
    }
    assert!(
        ended,
        "the dead replica's job is ended within the lease + one tick"
    );
    // Its thread says so (rows written with the change); this replica's job goes on.
    let rows = store.outbox_rows(Some(dead), 10).await.unwrap();
    assert!(
        rows.iter().any(|r| r.message.text.contains("Interrupted")),
        "{rows:?}"
    );
    for _ in 0..12 {
        clock.advance(Duration::from_secs(5));
        settle().await;
    }
    assert_eq!(
        status(own).await,
        JobStatus::Running,
        "renewed by its own heartbeat"
    );
    let seen = store
        .replicas(clock.shared().unix_ms() - 10_000)
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].id, app.replica.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_typed_on_one_replica_runs_once_per_service_and_another_reports_it() {
    let dir = TempDir::new("replicas-upgrade");
    let db = TestDb::new("upgrade").await;
    let slack = FakeSlack::start().await;
    let rancher = FakeRancher::start().await;
    fake_services::install(&rancher);
    rancher.set_default_action_time(Duration::from_millis(100));
    let mut services = Vec::new();
    for e in ["dev", "staging", "prod"] {
        let env = rancher.add_project(e);
        let stack = rancher.add_stack(&env, "app", "");
        services.push(add_service(
            &rancher,
            &env,
            &stack,
            "web",
            launch_config("docker:myorg/app:1.0", &[("autoupdate.enable", "true")]),
            json!([]),
        ));
    }
    let extra = [
        ("RANCHER_URL", rancher.url.as_str()),
        ("RANCHER_ACCESS_KEY", ACCESS_KEY),
        ("RANCHER_SECRET_KEY", SECRET_KEY),
        ("CORRAL_RANCHER_POLL", "50ms"),
    ];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&dir, &db.url, Some(&slack), &extra).await);
    }
    let http = corral::http_client().unwrap();
    // Typed in Slack, landing on the first replica.
    let body = slash_body("/upgrade", "image myorg/app:2.0", "U0ALICE", "C0TEAM");
    let ts = crate::support::now().to_string();
    let sig = corral::slack::verify::sign(SECRET, &ts, body.as_bytes());
    let r = http
        .post(format!("{}/slack/commands", replicas[0].url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ack = r.text().await.unwrap();
    let job: i64 = ack
        .split("Job #")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no job in {ack}"));
    // Followed on the other replicas' API until it ends.
    let until = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let (_, body) = get(&http, &format!("{}/api/v1/jobs/{job}", replicas[2].url)).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["status"] != "queued" && v["status"] != "running" {
            break v;
        }
        assert!(Instant::now() < until, "the job did not end: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v["status"], "succeeded", "{v}");
    let (_, body) = get(&http, &format!("{}/api/v1/jobs/{job}", replicas[1].url)).await;
    assert!(body.contains("succeeded"), "{body}");
    // Each service upgraded (and finished) exactly once.
    for id in &services {
        assert_eq!(
            rancher.count("POST", &format!("/{id}/?action=upgrade")),
            1,
            "{id}: {:?}",
            rancher.posts()
        );
        assert_eq!(
            rancher.count("POST", &format!("/{id}/?action=finishupgrade")),
            1
        );
    }
    // One thread: one root in the channel, the rest in its thread.
    let calls = slack
        .wait_for(10, |c| {
            c.iter()
                .any(|c| c.method == "chat.update" && c.text().contains("succeeded"))
        })
        .await;
    let roots: Vec<_> = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage" && c.thread_ts().is_none())
        .collect();
    assert_eq!(roots.len(), 1, "{roots:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_stopped_and_started_under_load_loses_no_decision() {
    let dir = TempDir::new("replicas-outage");
    let db = TestDb::new("outage").await;
    let proxy = TcpProxy::start(upstream_of(&db.url)).await;
    let limits = [
        ("CORRAL_DATABASE_STATEMENT_TIMEOUT", "1s"),
        // 3 s to connect: three replicas starting on a loaded machine need it; while the
        // database is down a connection is refused at once anyway.
        ("CORRAL_DATABASE_CONNECT_TIMEOUT", "3s"),
        ("CORRAL_DATABASE_POOL_TIMEOUT", "1s"),
    ];
    let through = proxy.url_through(&db.url);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&dir, &through, None, &limits).await);
    }
    let http = corral::http_client().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Each replica gets a client that starts and stops the release as fast as it can.
    let load = replicas.iter().enumerate().map(|(i, r)| {
        let (http, url, stop) = (http.clone(), r.url.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut answers, mut slowest) = (Vec::new(), Duration::ZERO);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let path = if n % 2 == 0 {
                    format!("start?name=c{i}")
                } else {
                    "stop".into()
                };
                n += 1;
                let t = Instant::now();
                let answer = get(&http, &format!("{url}/{path}")).await;
                slowest = slowest.max(t.elapsed());
                answers.push((path.starts_with("start"), answer));
            }
            (answers, slowest)
        })
    });
    let load: Vec<_> = load.collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.set(Mode::Closed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set(Mode::Open);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ones, mut unavailable, mut slowest) = ((0, 0), 0, Duration::ZERO);
    for task in load {
        let (answers, slow) = task.await.unwrap();
        slowest = slowest.max(slow);
        for (is_start, (status, body)) in answers {
            match (status, body.as_str()) {
                (200, "1") if is_start => ones.0 += 1,
                (200, "1") => ones.1 += 1,
                (200, "0") => {}
                (503, "store unavailable") => unavailable += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
    }
    assert!(unavailable > 0, "the outage was seen");
    assert!(ones.0 > 0, "work went on around it");
    assert!(
        slowest < Duration::from_secs(4),
        "a request took {slowest:?}"
    );
    // Every replica is ready again without a restart.
    for r in &replicas {
        let (status, _) = get(&http, &format!("{}/readyz", r.url)).await;
        assert_eq!(status, 200);
    }
    // The history is the state table's: starts and stops alternate, and every `1` a
    // client saw is in it (a change whose answer was lost to the cut may be there too).
    let rows = db
        .client()
        .await
        .query("SELECT action FROM lock_history ORDER BY id", &[])
        .await
        .unwrap();
    let actions: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for pair in actions.windows(2) {
        assert_ne!(pair[0], pair[1], "{actions:?}");
    }
    let starts = actions.iter().filter(|a| *a == "start").count();
    let stops = actions.len() - starts;
    assert!(
        starts >= ones.0 && stops >= ones.1,
        "{actions:?} vs {ones:?}"
    );
    assert!(starts <= ones.0 + unavailable && stops <= ones.1 + unavailable);
}

/// Polls a replica's API (real time, short steps) until job `job` is in one of `want`;
/// returns the job's JSON.
async fn wait_job(
    http: &reqwest::Client,
    base: &str,
    job: i64,
    want: &[&str],
) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = get(http, &format!("{base}/api/v1/jobs/{job}")).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if want.iter().any(|w| v["status"] == *w) {
            return v;
        }
        assert!(
            Instant::now() < until,
            "job {job} never became {want:?}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_asked_on_one_replica_and_clicked_on_two_others_at_once_runs_once() {
    let dir = TempDir::new("replicas-approval");
    let db = TestDb::new("approval").await;
    let slack = FakeSlack::start().await;
    let rancher = crate::approvals::rancher().await;
    let policy = dir.0.join("policy.toml");
    std::fs::write(
        &policy,
        r#"
[roles]
deployers = ["U0ALICE"]
approvers = ["U0BOB", "U0CAROL", "U0DAVE"]

[permissions]
upgrade = ["deployers"]

[[approval]]
commands     = ["upgrade"]
environments = "^prod"
approvers    = ["approvers"]
required     = 2
expires      = "1h"
"#,
    )
    .unwrap();
    let rancher_url = format!("{}/v1", rancher.url);
    let policy = policy.display().to_string();
    let extra = [
        ("RANCHER_URL", rancher_url.as_str()),
        ("RANCHER_ACCESS_KEY", ACCESS_KEY),
        ("RANCHER_SECRET_KEY", SECRET_KEY),
        ("CORRAL_RANCHER_POLL", "50ms"),
        ("CORRAL_POLICY", policy.as_str()),
    ];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&dir, &db.url, Some(&slack), &extra).await);
    }
    let http = corral::http_client().unwrap();
    // Asked on the first replica.
    let body = slash_body("/upgrade", "library:my_web:2.0.0", "U0ALICE", "C0TEAM");
    let (status, ack, _) = signed_post(&http, &replicas[0].url, "/slack/commands", body).await;
    assert_eq!(status, 200, "{ack}");
    let job: i64 = ack
        .split('#')
        .nth(1)
        .map(|t| {
            t.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no job in {ack}"));
    wait_job(&http, &replicas[1].url, job, &["awaiting_approval"]).await;
    // The card is out before anyone clicks it.
    slack
        .wait_for(20, |c| {
            c.iter().any(|c| {
                c.method == "chat.postMessage" && c.text().contains(&format!("Job #{job}"))
            })
        })
        .await;
    assert_eq!(
        rancher.count("POST", "action=upgrade"),
        0,
        "nothing runs before the votes"
    );

    // Two approvers click at the same moment, each on another replica.
    let clicks = [("U0BOB", &replicas[1]), ("U0CAROL", &replicas[2])].map(|(user, r)| {
        let body = crate::approvals::block_actions(
            &slack.webhook_url,
            user,
            "approval.approve",
            &format!("{job}:1"),
            &format!("appr:{job}:r0"),
        );
        let (http, base) = (http.clone(), r.url.clone());
        async move { signed_post(&http, &base, "/slack/interactions", body).await }
    });
    for (status, body, took) in futures::future::join_all(clicks).await {
        assert_eq!(status, 200, "{body}");
        assert!(took < Duration::from_secs(3), "acked within 3 s: {took:?}");
    }
    let v = wait_job(
        &http,
        &replicas[0].url,
        job,
        &["succeeded", "failed", "refused"],
    )
    .await;
    assert_eq!(v["status"], "succeeded", "{v}");
    // Let a second run, if one was coming, reach Rancher.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // One upgrade request per stack (three stacks: the plan touches prod, so the whole
    // job waited), and so one run.
    let mut upgraded: Vec<String> = rancher
        .posts()
        .into_iter()
        .filter(|p| p.action().as_deref() == Some("upgrade"))
        .map(|p| p.uri.split('?').next().unwrap_or_default().to_string())
        .collect();
    upgraded.sort();
    let n = upgraded.len();
    upgraded.dedup();
    assert_eq!((n, upgraded.len()), (3, 3), "{upgraded:?}");
    // Both votes recorded; the approval decided once.
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM votes WHERE job_id = $1 AND counted),
                    (SELECT state FROM approvals WHERE job_id = $1),
                    (SELECT count(*) FROM audit WHERE action = 'job ' || $1::BIGINT::TEXT || ' succeeded')",
            &[&job],
        )
        .await
        .unwrap();
    let (votes, state, outcomes): (i64, String, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((votes, state.as_str(), outcomes), (2, "approved", 1));
    // One thread: one root for the job, everything else in its thread, one summary.
    slack
        .wait_for(20, |c| {
            c.iter()
                .any(|c| c.method == "chat.update" && c.text().contains("succeeded"))
                && c.iter()
                    .any(|c| c.method == "chat.postMessage" && c.text().contains("*Done*"))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = slack.calls();
    let roots: Vec<_> = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage" && c.thread_ts().is_none())
        .filter(|c| c.text().contains(&format!("#{job}")))
        .collect();
    assert_eq!(roots.len(), 1, "{roots:?}");
    let summaries = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage" && c.thread_ts().is_some())
        .filter(|c| c.text().contains("*Done*"))
        .count();
    assert_eq!(summaries, 1, "one summary in the thread: {calls:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_and_lock_reminders_fire_once_across_three_replicas() {
    let dir = TempDir::new("replicas-schedules");
    let db = TestDb::new("schedules").await;
    let slack = FakeSlack::start().await;
    // A digest every minute (so one is due, on time, whenever the replicas start) and
    // reminders two seconds into a release and every two seconds after.
    let policy = dir.0.join("policy.toml");
    std::fs::write(
        &policy,
        r#"
[lock]
remind_after = "2s"
remind_every = "2s"

[[digest]]
cron    = "* * * * *"
channel = "C0DIGEST"
"#,
    )
    .unwrap();
    let policy = policy.display().to_string();
    let extra = [
        ("CORRAL_POLICY", policy.as_str()),
        ("CORRAL_SLACK_POST_INTERVAL", "50ms"),
    ];
    let first = Replica::start(&dir, &db.url, Some(&slack), &extra).await;
    let http = corral::http_client().unwrap();
    assert_eq!(
        get(&http, &format!("{}/start?name=alice", first.url)).await,
        (200, "1".into())
    );
    // The other two start with the release running: all three race for each reminder.
    let mut replicas = vec![first];
    for _ in 0..2 {
        replicas.push(Replica::start(&dir, &db.url, Some(&slack), &extra).await);
    }
    let client = db.client().await;
    let claimed = |like: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM firings WHERE key LIKE $1 AND outcome IN ('sent', 'late', 'reminded')",
                    &[&like],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let until = Instant::now() + Duration::from_secs(60);
    while claimed("remind:%").await < 3 || claimed("digest:%").await < 1 {
        assert!(
            Instant::now() < until,
            "reminders or the digest never fired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stop the release (no reminder after that), then let every message, and any
    // duplicate that was coming, arrive.
    assert_eq!(
        get(&http, &format!("{}/stop", replicas[2].url)).await,
        (200, "1".into())
    );
    let (reminders, digests) = (claimed("remind:%").await, claimed("digest:%").await);
    let is_reminder = |c: &crate::support::fake_slack::Call| {
        c.method == "chat.postMessage" && c.body.to_string().contains("release.stop")
    };
    let is_digest = |c: &crate::support::fake_slack::Call| {
        c.method == "chat.postMessage" && c.channel() == "C0DIGEST"
    };
    slack
        .wait_for(30, |c| {
            c.iter().filter(|c| is_reminder(c)).count() as i64 >= reminders
                && c.iter().filter(|c| is_digest(c)).count() as i64 >= digests
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = slack.calls();
    let texts = |f: &dyn Fn(&crate::support::fake_slack::Call) -> bool| {
        calls
            .iter()
            .filter(|c| f(c))
            .map(|c| c.text().to_string())
            .collect::<Vec<_>>()
    };
    let sent_reminders = texts(&is_reminder);
    let sent_digests = texts(&is_digest);
    // Each claimed firing said once: as many messages as claims, however many replicas.
    assert_eq!(
        sent_reminders.len() as i64,
        claimed("remind:%").await,
        "{sent_reminders:#?}"
    );
    assert_eq!(
        sent_digests.len() as i64,
        claimed("digest:%").await,
        "{sent_digests:#?}"
    );
    // Reminders n = 0, 1, 2…: each "running for" once (2 s, 4 s, …), in one thread.
    let mut held: Vec<&str> = sent_reminders
        .iter()
        .filter_map(|t| t.split("running for ").nth(1))
        .collect();
    let n = held.len();
    held.dedup();
    assert_eq!(held.len(), n, "no reminder twice: {sent_reminders:#?}");
    let threads: std::collections::BTreeSet<_> = calls
        .iter()
        .filter(|c| is_reminder(c))
        .map(|c| c.thread_ts().unwrap_or("(root)").to_string())
        .collect();
    assert_eq!(threads.len(), 1, "one thread: {threads:?}");
    // Every replica was up and firing: each wrote its heartbeat.
    let seen: i64 = client
        .query_one("SELECT count(*) FROM replicas", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 3);
}

/// A replica cut off from the database for longer than its job's lease: another replica
/// reports the job interrupted; when the first comes back, its late writes are refused in
/// the store, so the thread keeps saying "interrupted" (no "succeeded" edit), and it logs
/// that and stops the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_back_after_its_lease_does_not_overwrite_interrupted() {
    let dir = TempDir::new("replicas-cutoff");
    let db = TestDb::new("cutoff").await;
    let slack = FakeSlack::start().await;
    // Long enough that the upgrade is still under way when A comes back.
    let rancher = rancher_with_one_service(Duration::from_secs(8)).await;
    let extra = [
        ("RANCHER_URL", rancher.url.as_str()),
        ("RANCHER_ACCESS_KEY", ACCESS_KEY),
        ("RANCHER_SECRET_KEY", SECRET_KEY),
        ("CORRAL_RANCHER_POLL", "100ms"),
        ("CORRAL_JOB_LEASE", "2s"),
        ("CORRAL_UPGRADE_TIMEOUT", "1h"),
        ("CORRAL_SLACK_TIMEOUT", "2s"),
        ("CORRAL_DATABASE_STATEMENT_TIMEOUT", "1s"),
        ("CORRAL_DATABASE_CONNECT_TIMEOUT", "1s"),
        ("CORRAL_DATABASE_POOL_TIMEOUT", "1s"),
    ];
    let proxy = TcpProxy::start(upstream_of(&db.url)).await;
    let a = Replica::start(&dir, &proxy.url_through(&db.url), Some(&slack), &extra).await;
    let b = Replica::start(&dir, &db.url, Some(&slack), &extra).await;
    let http = corral::http_client().unwrap();
    let job = upgrade_started(&http, &a.url, &rancher).await;
    wait_job(&http, &b.url, job, &["running"]).await;
    // A loses the database; B reports the job interrupted once A's lease is over.
    proxy.set(Mode::Closed);
    wait_job(&http, &b.url, job, &["interrupted"]).await;
    slack
        .wait_for(30, |c| {
            c.iter()
                .any(|c| c.method == "chat.update" && c.text().contains("interrupted"))
        })
        .await;
    // A comes back while its upgrade is still running, and finishes it.
    proxy.set(Mode::Open);
    let until = Instant::now() + Duration::from_secs(40);
    loop {
        let log = std::fs::read_to_string(&a.log).unwrap_or_default();
        if log.contains("another replica ended this job") {
            break;
        }
        assert!(Instant::now() < until, "A never noticed; its log:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v = wait_job(&http, &a.url, job, &["interrupted", "succeeded", "failed"]).await;
    assert_eq!(
        v["status"], "interrupted",
        "A's late outcome did not land: {v}"
    );
    let updates: Vec<String> = slack
        .calls_to("chat.update")
        .iter()
        .map(|c| c.text().to_string())
        .collect();
    assert!(
        updates.last().is_some_and(|t| t.contains("interrupted")),
        "{updates:#?}"
    );
    assert!(
        !updates
            .iter()
            .any(|t| t.contains("succeeded") || t.contains("failed")),
        "{updates:#?}"
    );
    let summaries = slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c.text().contains("*Done*") || c.text().contains("*Failed*"))
        .count();
    assert_eq!(summaries, 0, "no summary from A");
}
