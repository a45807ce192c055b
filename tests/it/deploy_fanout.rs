//! `/deploy` through the pipeline: a real fan-out to three Serf agents on 127.0.0.x
//! whose event handler is `corral agent --report-url …`, a Consul fan-out with a host
//! that never answers, the local target, `--dry-run` and the allow-list.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::deploy::{Sandbox, agent, consul_events};
use crate::support::corral::{Corral, TOKEN};
use crate::support::files::Files;

const TEST_TAR_SHA1: &str = "7b57db167410e46720b1d636ee6cb6c147efac3a";

pub fn free_port(ip: &str) -> u16 {
    // TCP and UDP both: Serf's gossip uses the same port for each.
    loop {
        let t = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

/// A Serf agent, killed when dropped.
struct SerfAgent {
    child: tokio::process::Child,
    rpc: String,
}

impl Drop for SerfAgent {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn start_serf(n: u8, rpc: String, handler: &str, env: &[(String, String)]) -> (SerfAgent, String) {
    let ip = format!("127.0.0.{n}");
    let bind = format!("{ip}:{}", free_port(&ip));
    let mut cmd = tokio::process::Command::new("serf");
    cmd.arg("agent")
        .arg(format!("-node=host-{n}"))
        .arg(format!("-bind={bind}"))
        .arg(format!("-rpc-addr={rpc}"))
        .arg(format!("-event-handler=user:deploy={handler}"))
        .arg("-log-level=warn")
        .env_remove("CONSUL_INDEX")
        .env_remove("CORRAL_HOST")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .expect("serf is installed (apt-get install serf)");
    (SerfAgent { child, rpc }, bind)
}

async fn serf(args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new("serf")
        .args(args)
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub async fn command(c: &Corral, text: &str) -> (u16, Value) {
    let resp = c
        .http
        .post(format!("{}/api/v1/commands", c.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "text": text, "user": "U0DEPLOYER" }))
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or_default())
}

/// Runs a job command to its end; returns the stored job.
pub async fn run_job(c: &Corral, text: &str) -> corral::store::JobRecord {
    let (s, v) = command(c, text).await;
    assert_eq!(s, 202, "{v}");
    let id = v["job"]["id"].as_i64().expect("job id");
    tokio::time::timeout(Duration::from_secs(60), c.app.runner.wait(id))
        .await
        .expect("job ended");
    c.app.store.job(id).await.unwrap().unwrap()
}

/// A manifest each host runs with its own `CORRAL_TEST_DEST` (the bot never expands a
/// template, and `dest` must be literal, so the per-host part is in the commands).
fn manifest_for_hosts(sb: &Sandbox) -> String {
    let dest = "{{ env \"CORRAL_TEST_DEST\" \"/nonexistent/dest\" }}";
    sb.write_manifest(&format!(
        "commands:\n  pre:\n    - 'mkdir -p {dest}/foo && echo baz > {dest}/foo/baz'\n"
    ))
}

/// A manifest deploying the test archive to `dest`.
fn manifest_with_archive(sb: &Sandbox, dest: &Path) -> String {
    sb.write_manifest(&format!(
        "src: file://{d}/testdata/test.tar\nchecksum: {TEST_TAR_SHA1}\ndest: {}\nsync_strategy: rsync\n",
        dest.display(),
        d = sb.dir.display()
    ))
}

pub fn texts(c: &Corral) -> Vec<String> {
    c.slack
        .calls()
        .iter()
        .map(|c| c.text().to_string())
        .collect()
}

#[tokio::test]
async fn serf_fan_out_to_three_agents_reports_3_of_3() {
    let sb = Sandbox::new("serf");
    // The bot talks to the first agent's RPC.
    let rpcs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port("127.0.0.1")))
        .collect();
    let c = Corral::start_with(&[
        ("CORRAL_DEPLOY_ALLOW", "file://"),
        ("CORRAL_SERF_RPC", &rpcs[0]),
    ])
    .await;
    let handler = format!(
        "{} agent --report-url {}",
        env!("CARGO_BIN_EXE_corral"),
        c.url
    );
    let mut agents = Vec::new();
    let mut binds = Vec::new();
    for n in 1..=3u8 {
        let env = vec![
            (
                "CORRAL_TEST_DEST".to_string(),
                sb.dir
                    .join(format!("dest-{n}"))
                    .to_string_lossy()
                    .into_owned(),
            ),
            ("CORRAL_REPORT_TOKEN".to_string(), TOKEN.to_string()),
            (
                "CORRAL_AGENT_STATE".to_string(),
                sb.dir
                    .join(format!("state-{n}"))
                    .to_string_lossy()
                    .into_owned(),
            ),
        ];
        let (a, bind) = start_serf(n, rpcs[n as usize - 1].clone(), &handler, &env);
        agents.push(a);
        binds.push(bind);
    }
    let rpc1 = format!("-rpc-addr={}", agents[0].rpc);
    // Wait for the first agent's RPC, then join the others to it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if serf(&["join", &rpc1, &binds[1], &binds[2]]).await.is_some() {
            let members = serf(&["members", &rpc1, "-status=alive"])
                .await
                .unwrap_or_default();
            if members.lines().count() == 3 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "serf cluster did not form"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let url = manifest_for_hosts(&sb);
    let job = run_job(&c, &format!("deploy {url} --target serf --timeout 30s")).await;
    let outcome = job.outcome.clone().unwrap();
    assert_eq!(
        job.status.to_string(),
        "succeeded",
        "{outcome:?} {:?}",
        texts(&c)
    );
    assert_eq!(outcome.succeeded, 3);
    assert_eq!(outcome.summary, "3/3 hosts done, 0 failed");
    for n in 1..=3 {
        assert_eq!(
            sb.read(&format!("dest-{n}/foo/baz")).as_deref(),
            Some("baz\n"),
            "host-{n}"
        );
    }
    let reports = c.app.store.deploy_reports(job.id).await.unwrap();
    let mut hosts: Vec<_> = reports.iter().map(|r| r.host.as_str()).collect();
    hosts.sort();
    assert_eq!(hosts, ["host-1", "host-2", "host-3"]);
    // The thread: a plan naming the hosts, the group reply, the summary, the root edited.
    let calls = c
        .slack
        .wait_for(5, |calls| {
            calls.iter().any(|c| c.text().contains("✅ *Done*"))
        })
        .await;
    let all: Vec<&str> = calls.iter().map(|c| c.text()).collect();
    assert!(
        all.iter()
            .any(|t| t.contains("*Plan:*") && t.contains("host-2")),
        "{all:?}"
    );
    assert!(
        all.iter().any(|t| t.contains("✅ *serf*: 3 done")),
        "{all:?}"
    );
    assert!(all.iter().any(|t| t.contains("3/3 hosts done")), "{all:?}");
    c.delivered().await;
    let updates = c.slack.calls_to("chat.update");
    assert!(
        updates.last().unwrap().text().contains("✅ succeeded"),
        "{updates:?}"
    );
    drop(agents);
}

#[tokio::test]
async fn consul_fan_out_names_hosts_that_never_answer() {
    let sb = Sandbox::new("consulfan");
    let consul = Files::start().await;
    let c = Corral::start_with(&[
        ("CORRAL_DEPLOY_ALLOW", "file://"),
        ("CORRAL_CONSUL_URL", &consul.url),
        ("CORRAL_DEPLOY_HOSTS", "node-a,ghost"),
    ])
    .await;
    let dest = sb.dir.join("dest-a");
    let url = manifest_with_archive(&sb, &dest);
    let (s, v) = command(&c, &format!("deploy {url} --target consul --timeout 3s")).await;
    assert_eq!(s, 202, "{v}");
    let id = v["job"]["id"].as_i64().unwrap();
    // The fired event reaches "node-a" the way consul watch would hand it over.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let payload = loop {
        if let Some((path, body)) = consul.puts().first().cloned() {
            assert_eq!(path, "v1/event/fire/deploy");
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Consul event fired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(payload, format!("{url}#corral-job={id}"));
    let r = agent(
        &sb.dir,
        &consul_events(&[("ev-1", 7, &payload)]),
        &["--report-url", &c.url, "--host", "node-a"],
        &[
            ("CONSUL_INDEX", "7"),
            ("CORRAL_REPORT_TOKEN", TOKEN),
            ("CORRAL_TEST_DEST", &dest.to_string_lossy()),
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    c.app.runner.wait(id).await;
    let job = c.app.store.job(id).await.unwrap().unwrap();
    let o = job.outcome.unwrap();
    assert_eq!(o.succeeded, 1);
    assert_eq!(o.failed.len(), 1);
    assert_eq!(o.failed[0].target, "ghost");
    assert_eq!(o.summary, "1/2 hosts done, 0 failed, 1 never answered");
    let calls = c
        .slack
        .wait_for(5, |calls| {
            calls.iter().any(|c| c.text().contains("*Failed*"))
        })
        .await;
    let all: Vec<&str> = calls.iter().map(|c| c.text()).collect();
    assert!(
        all.iter()
            .any(|t| t.contains("No report from 1 host within 3s: ghost")),
        "{all:?}"
    );
    assert!(Path::new(&dest).join("foo/baz").exists());
}

#[tokio::test]
async fn local_target_dry_run_and_allow_list() {
    let sb = Sandbox::new("local");
    let c = Corral::start_with(&[(
        "CORRAL_DEPLOY_ALLOW",
        &format!("file://{}/", sb.dir.display()),
    )])
    .await;
    let url = sb.manifest("test-deploy.yml");

    let job = run_job(&c, &format!("deploy {url} --dry-run")).await;
    assert_eq!(job.status.to_string(), "succeeded");
    let o = job.outcome.unwrap();
    assert_eq!(o.skipped, 1, "{o:?}");
    assert!(sb.read("dest/bar").is_none(), "dry run changes nothing");

    let job = run_job(&c, &format!("deploy {url}")).await;
    let o = job.outcome.unwrap();
    assert_eq!(
        (job.status.to_string().as_str(), o.succeeded),
        ("succeeded", 1),
        "{o:?}"
    );
    assert_eq!(sb.read("dest/foo/baz").as_deref(), Some("baz\n"));
}

#[tokio::test]
async fn local_failure_carries_the_log_tail() {
    let sb = Sandbox::new("localfail");
    let c = Corral::start_with(&[(
        "CORRAL_DEPLOY_ALLOW",
        &format!("file://{}/", sb.dir.display()),
    )])
    .await;
    // A failing local deploy names the host and carries the log tail.
    let bad = sb.write_manifest(&format!(
        "src: file://{}/testdata/test.tar\nchecksum: {}\ndest: {}\n",
        sb.dir.display(),
        "1".repeat(40),
        sb.dest.display()
    ));
    let job = run_job(&c, &format!("deploy {bad}")).await;
    let o = job.outcome.unwrap();
    assert_eq!(o.failed.len(), 1, "{o:?}");
    assert!(o.failed[0].reason.contains("checksum mismatch"), "{o:?}");
    assert!(
        o.failed[0].reason.contains("Loading URL"),
        "log tail: {o:?}"
    );
}

#[tokio::test]
async fn allow_list_and_bad_manifests_are_refused() {
    let sb = Sandbox::new("allow");
    let c = Corral::start_with(&[(
        "CORRAL_DEPLOY_ALLOW",
        &format!("file://{}/", sb.dir.display()),
    )])
    .await;
    // Not on the allow-list: refused before any job exists, naming the setting.
    for url in [
        "https://elsewhere.example/m.yml",
        &format!("file://{}-evil/m.yml", sb.dir.display()),
    ] {
        let (s, v) = command(&c, &format!("deploy {url}")).await;
        assert_eq!(s, 409, "{v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("CORRAL_DEPLOY_ALLOW"), "{e}");
        assert!(e.contains(&sb.dir.to_string_lossy().into_owned()), "{e}");
    }
    assert!(c.app.store.jobs(10).await.unwrap().is_empty());
    assert!(c.slack.calls().is_empty(), "no thread for a refused deploy");
    // A src outside the allow-list is refused too.
    let outside = sb.write_manifest(&format!(
        "src: file:///etc/hostname\nchecksum: {}\ndest: {}\n",
        "1".repeat(40),
        sb.dest.display()
    ));
    let job = run_job(&c, &format!("deploy {outside}")).await;
    let summary = job.outcome.unwrap().summary;
    assert!(
        summary.contains("src file:///etc/hostname is not allowed"),
        "{summary}"
    );
    // A bad manifest names the field.
    let bad = sb.write_manifest("src: file:///x.tar\ndest: /x\n");
    let job = run_job(&c, &format!("deploy {bad}")).await;
    assert!(
        job.outcome
            .unwrap()
            .summary
            .contains("checksum: is required")
    );
}

#[tokio::test]
async fn fan_out_needs_the_api_token_and_plans_first() {
    use corral::command::{DeployCmd, DeployTarget};
    use corral::config::{Config, Env};
    use corral::job::{Progress, ProgressTx};
    let sb = Sandbox::new("notoken");
    let url = manifest_for_hosts(&sb);
    let cfg = |token: Option<&str>| {
        let mut pairs = vec![
            ("CORRAL_DATABASE_URL", "sqlite::memory:"),
            ("CORRAL_DEPLOY_ALLOW", "file://"),
            ("CORRAL_DEPLOY_HOSTS", "web-1,web-2"),
        ];
        if let Some(t) = token {
            pairs.push(("CORRAL_API_TOKEN", t));
        }
        Config::from_env(&Env::from_pairs(pairs)).unwrap().deploy
    };
    let store = corral::store::open("sqlite::memory:").await.unwrap();
    let job = crate::support::corral::insert_job(
        store.as_ref(),
        corral::job::JobKind::Deploy,
        "/deploy",
        "U0",
        corral::door::Source::Cli,
        None,
    )
    .await;
    let cmd = DeployCmd {
        manifest_url: url.clone(),
        target: DeployTarget::Consul,
        dry_run: true,
        timeout: None,
        force: false,
    };
    let e = corral::deploy::run(
        &cfg(None),
        store.as_ref(),
        job.id,
        &cmd,
        ProgressTx::discard(),
    )
    .await
    .unwrap_err();
    assert!(e.0.contains("CORRAL_API_TOKEN"), "{e}");
    let (tx, mut rx) = ProgressTx::channel();
    let o = corral::deploy::run(&cfg(Some("t")), store.as_ref(), job.id, &cmd, tx)
        .await
        .unwrap();
    assert_eq!(o.skipped, 2);
    let Some(Progress::Plan { groups, .. }) = rx.recv().await else {
        panic!("the plan comes first");
    };
    let hosts: Vec<_> = groups[0].items.iter().map(|i| i.target.as_str()).collect();
    assert_eq!(hosts, ["web-1", "web-2"]);
    assert!(matches!(rx.recv().await, Some(Progress::Note { text }) if text.contains("Dry run")));
}
