//! The real `corral` binary: serve, kill -9, serve again; exec; check; bad config.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use corral::store::{SqliteStore, Store};

use crate::support::TempDir;
use crate::support::corral::{SECRET, TOKEN};
use crate::support::fake_slack::FakeSlack;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A command for the binary with a clean environment (no developer settings leak in).
fn corral(dir: &TempDir, slack: Option<&FakeSlack>, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(&dir.0)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("USER", "tester")
        .env("CORRAL_LOG", "warn")
        .env("CORRAL_API_TOKEN", TOKEN)
        .env("SLACK_SIGNING_SECRET", SECRET)
        .env("CORRAL_DATABASE_URL", "sqlite://state/corral.db");
    if let Some(s) = slack {
        cmd.env("SLACK_BOT_TOKEN", "xoxb-bin")
            .env("SLACK_API_URL", &s.api_url)
            .env("CORRAL_CHANNEL", "C0RELEASES");
    }
    cmd
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    async fn start(dir: &TempDir, slack: Option<&FakeSlack>) -> Server {
        Server::start_with(dir, slack, &[]).await
    }

    async fn start_with(
        dir: &TempDir,
        slack: Option<&FakeSlack>,
        extra: &[(&str, &str)],
    ) -> Server {
        let port = free_port();
        let child = corral(dir, slack, &["serve"])
            .envs(extra.iter().copied())
            .env("CORRAL_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Owned by `Server` at once, so its Drop reaps the process on every path.
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = corral::http_client().unwrap();
        // Up to 20 s: a loaded machine (six builders on two cores) can take that long.
        for _ in 0..800 {
            if let Ok(r) = client.get(format!("{}/readyz", server.url)).send().await
                && r.status() == 200
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("corral serve did not become ready");
    }

    fn kill9(mut self) {
        // SIGKILL: no shutdown code runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(url: &str) -> (u16, String) {
    let r = corral::http_client()
        .unwrap()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_survives_kill_9() {
    let dir = TempDir::new("kill9");
    let s = Server::start(&dir, None).await;
    assert_eq!(
        get(&format!("{}/start?name=alice", s.url)).await,
        (200, "1".into())
    );
    assert_eq!(get(&format!("{}/block", s.url)).await, (200, "1".into()));
    s.kill9();
    let s = Server::start(&dir, None).await;
    let (status, body) = get(&format!("{}/api/v1/lock", s.url)).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["running"]["who"], "releasestatus:alice");
    assert!(v["blocked"].is_object());
    // And the state table continues from there.
    assert_eq!(
        get(&format!("{}/start?name=bob", s.url)).await,
        (200, "0".into())
    );
    assert_eq!(get(&format!("{}/stop", s.url)).await, (200, "1".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cut_off_by_a_crash_is_reported_interrupted_in_its_thread() {
    let dir = TempDir::new("interrupted");
    let slack = FakeSlack::start().await;
    {
        // What a killed bot leaves behind: a running job with its thread root stored,
        // last changed a minute ago (no lease: so it is over 30 s after that change).
        std::fs::create_dir_all(dir.0.join("state")).unwrap();
        let url = format!("sqlite://{}/state/corral.db", dir.0.display());
        let store = SqliteStore::open(&url).await.unwrap();
        let job = crate::support::corral::insert_job(
            &store,
            corral::job::JobKind::UpgradeCatalog,
            "/upgrade library:web:12",
            "U0ALICE",
            corral::door::Source::Slack,
            Some("C0TEAM"),
        )
        .await;
        store
            .set_job_status(
                job.id,
                corral::job::JobStatus::Running,
                crate::support::now() - 60,
            )
            .await
            .unwrap();
        store
            .set_job_progress(job.id, 3, 0, 10, crate::support::now() - 60)
            .await
            .unwrap();
        store
            .set_message(job.id, "C0TEAM", "1699999999.000001")
            .await
            .unwrap();
    }
    let s = Server::start(&dir, Some(&slack)).await;
    let calls = slack
        .wait_for(5, |c| c.iter().any(|c| c.method == "chat.postMessage"))
        .await;
    let update = calls
        .iter()
        .find(|c| c.method == "chat.update")
        .expect("root edited");
    assert_eq!(update.body["ts"], "1699999999.000001");
    assert!(update.text().contains("⚠ interrupted"), "{}", update.text());
    let note = calls
        .iter()
        .find(|c| c.method == "chat.postMessage")
        .unwrap();
    assert_eq!(note.thread_ts(), Some("1699999999.000001"));
    assert!(note.text().contains("3 of 10 targets had finished"));
    let (_, body) = get(&format!("{}/api/v1/jobs/1", s.url)).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_the_same_pipeline_and_prints() {
    let dir = TempDir::new("exec");
    let out = corral(&dir, None, &["exec", "release", "start", "1.2.3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), "🚀 cli:tester started a release: 1.2.3");
    let out = corral(&dir, None, &["exec", "release status"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("started by cli:tester at 20"), "{stdout}");
    assert!(
        !stdout.contains("<!date"),
        "plain text in the terminal: {stdout}"
    );
    let out = corral(&dir, None, &["exec", "release", "start"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "refused");
    let out = corral(&dir, None, &["exec", "release", "explode"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "invalid");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a /release subcommand") && stderr.contains("/release start"));
    assert!(stderr.contains("<catalog>") || stderr.contains("Usage"));
    // A job prints its thread and fails (Rancher is not configured here).
    let out = corral(&dir, None, &["exec", "upgrade", "library:web:12"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("Job #1"), "{stdout}");
    assert!(stdout.contains("Rancher is not configured"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_announces_lock_changes_in_the_channel() {
    let dir = TempDir::new("exec-announce");
    let slack = FakeSlack::start().await;
    let out = corral(&dir, Some(&slack), &["exec", "release block maintenance"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let posts = slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].channel(), "C0RELEASES");
    assert_eq!(
        posts[0].text(),
        "⛔ cli:tester blocked releases: maintenance (via cli)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_stops_start_up_naming_the_variable() {
    let dir = TempDir::new("badcfg");
    for (var, value) in [
        ("RS_PORT", "abc"),
        ("CORRAL_ENVIRONMENTS", "prod,("),
        ("RANCHER_URL", "rancher:8080"),
        ("CORRAL_POLICY", "/nonexistent/policy.toml"),
    ] {
        let out = corral(&dir, None, &["serve"])
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
    // .env in the working directory is read too, and the environment wins over it.
    std::fs::write(
        dir.0.join(".env"),
        "HOST_PORT=not-a-port\nCORRAL_CHANNEL=C0FROMDOTENV\n",
    )
    .unwrap();
    let out = corral(&dir, None, &["serve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST_PORT"));
    let out = corral(&dir, None, &["check"])
        .env("HOST_PORT", "9999")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("listen 0.0.0.0:9999"), "{stdout}");
    assert!(
        !stdout.contains("no announcement channel"),
        ".env set CORRAL_CHANNEL: {stdout}"
    );
    std::fs::remove_file(dir.0.join(".env")).unwrap();

    let out = corral(&dir, None, &["check"])
        .env("SLACK_BOT_TOKEN", "xoxb-super-secret-value")
        .env("SLACK_API_URL", "http://127.0.0.1:9/api")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "Slack unreachable fails the check: {stdout}"
    );
    assert!(stdout.contains("ok   configuration"), "{stdout}");
    assert!(stdout.contains("ok   store"), "{stdout}");
    assert!(stdout.contains("FAIL Slack"), "{stdout}");
    assert!(!stdout.contains("super-secret"), "secrets never printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reaches_slack() {
    let dir = TempDir::new("check");
    let slack = FakeSlack::start().await;
    let out = corral(&dir, Some(&slack), &["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok   Slack: bot U0BOT in team T0FAKE"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok   outbox: 0 messages waiting; 0 dead, 0 refused by Slack"),
        "{stdout}"
    );
    assert_eq!(slack.calls_to("auth.test").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_messages_survive_kill_9_and_go_out_once_in_order() {
    let dir = TempDir::new("outbox-kill9");
    let slack = FakeSlack::start().await;
    // Slack is down while the changes are made.
    slack.fail_during(
        None,
        0,
        i64::MAX,
        crate::support::fake_slack::Failure::Status(503),
    );
    let fast = [
        ("CORRAL_SLACK_POST_INTERVAL", "50ms"),
        ("CORRAL_OUTBOX_BACKOFF_MAX", "1s"),
    ];
    let s = Server::start_with(&dir, Some(&slack), &fast).await;
    let mut want = Vec::new();
    for name in ["a", "b", "c"] {
        assert_eq!(
            get(&format!("{}/start?name={name}", s.url)).await,
            (200, "1".into())
        );
        want.push(format!(
            "🚀 releasestatus:{name} started a release (via releasestatus)"
        ));
        assert_eq!(get(&format!("{}/stop", s.url)).await, (200, "1".into()));
        want.push("✅ releasestatus finished the release (via releasestatus)".to_string());
    }
    let _ = slack.wait_for(5, |c| !c.is_empty()).await;
    let (_, metrics) = get(&format!("{}/metrics", s.url)).await;
    assert!(metrics.contains("corral_outbox_depth 6"), "{metrics}");
    s.kill9();
    let out = corral(&dir, Some(&slack), &["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok   outbox: 6 messages waiting"),
        "{stdout}"
    );
    slack.clear_faults();
    let _s = Server::start_with(&dir, Some(&slack), &fast).await;
    let _ = slack.wait_for(10, |_| slack.posted().len() >= 6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: Vec<String> = slack.posted().into_iter().map(|p| p.text).collect();
    assert_eq!(got, want, "once each, in commit order, by the next process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_the_job() {
    let dir = TempDir::new("jsonlog");
    let out = corral(&dir, None, &["exec", "upgrade", "library:web:12"])
        .env("CORRAL_LOG_FORMAT", "json")
        .env("CORRAL_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "{stderr}");
    assert!(
        lines.iter().any(|v| v["job"] == 1 || v["span"]["job"] == 1),
        "a line names the job: {stderr}"
    );
    let bad = corral(&dir, None, &["check"])
        .env("CORRAL_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("CORRAL_LOG_FORMAT"));
}

#[tokio::test]
async fn corral_audit_prints_the_log_filtered_by_user_and_time() {
    let dir = TempDir::new("audit-cli");
    let out = corral(&dir, None, &["exec", "release", "start", "1.2.3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = corral(&dir, None, &["exec", "release", "stop"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = corral(&dir, None, &["audit", "--user", "cli:tester"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("release.start") && stdout.contains("release.stop"),
        "{stdout}"
    );
    let out = corral(&dir, None, &["audit", "--user", "U0NOBODY"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("No audit lines."));
    let out = corral(&dir, None, &["audit", "--since", "2h"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("release.start"));
    let out = corral(&dir, None, &["audit", "--since", "2099-01-01T00:00:00Z"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("No audit lines."));
    let out = corral(&dir, None, &["audit", "--since", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither Unix seconds"));
}
