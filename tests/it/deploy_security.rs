//! The deploy path as an attacker tries it (issue 9): redirects leaving the allow-list,
//! encoded separators, a manifest asking for the bot's secrets, system roots as `dest`,
//! report tokens and hosts, credentials in logs, Serf and Consul auth. Each test was
//! written first and failed on the code before its fix.

use crate::deploy::{Sandbox, agent};
use crate::deploy_fanout::run_job;
use crate::support::corral::Corral;
use crate::support::files::Files;

const TEST_TAR_SHA1: &str = "7b57db167410e46720b1d636ee6cb6c147efac3a";

fn touch_manifest(marker: &std::path::Path) -> String {
    format!("commands:\n  pre:\n    - touch {}\n", marker.display())
}

/// Hole 1: an allowed URL answering `302` to another origin made the bot run that
/// origin's manifest. Every hop is now checked like the first URL.
#[tokio::test]
async fn bot_checks_every_redirect_hop_against_the_allow_list() {
    let sb = Sandbox::new("redirect-bot");
    let allowed = Files::start().await;
    let evil = Files::start().await;
    let marker = sb.dir.join("evil-ran");
    evil.add("evil.yml", touch_manifest(&marker));
    let cross = allowed.redirect("releases/m.yml", &format!("{}/evil.yml", evil.url));
    // Same host, but out of the prefix.
    allowed.add("other/evil.yml", touch_manifest(&marker));
    let sideways = allowed.redirect("releases/side.yml", "/other/evil.yml");
    // A hop that stays under the prefix is followed.
    let good_marker = sb.dir.join("good-ran");
    allowed.add("releases/new.yml", touch_manifest(&good_marker));
    let inside = allowed.redirect("releases/old.yml", "/releases/new.yml");
    let c =
        Corral::start_with(&[("CORRAL_DEPLOY_ALLOW", &format!("{}/releases/", allowed.url))]).await;
    for url in [&cross, &sideways] {
        for flags in ["", " --dry-run"] {
            let job = run_job(&c, &format!("deploy {url}{flags}")).await;
            let summary = job.outcome.clone().unwrap().summary;
            assert_eq!(job.status.to_string(), "failed", "{url}{flags}: {summary}");
            assert!(
                summary.contains("redirect") && summary.contains("not allowed"),
                "{url}{flags}: {summary}"
            );
        }
    }
    assert!(!marker.exists(), "the redirected manifest ran");
    assert!(evil.gets().is_empty(), "the other origin was fetched");
    assert!(
        !allowed.gets().iter().any(|(p, _)| p == "other/evil.yml"),
        "a path outside the prefix was fetched"
    );
    let job = run_job(&c, &format!("deploy {inside}")).await;
    assert_eq!(
        job.status.to_string(),
        "succeeded",
        "{:?}",
        job.outcome.map(|o| o.summary)
    );
    assert!(good_marker.exists());
}

/// Hole 1, the agent: with `CORRAL_DEPLOY_ALLOW` set on a host, a forged event's
/// manifest and every hop of its manifest and its source stay under the prefixes;
/// without it, the agent follows redirects like stretcher.
#[tokio::test]
async fn agent_honours_the_allow_list_on_every_hop() {
    let sb = Sandbox::new("redirect-agent");
    let allowed = Files::start().await;
    let evil = Files::start().await;
    let marker = sb.dir.join("evil-ran");
    evil.add("evil.yml", touch_manifest(&marker));
    let manifest_hop = allowed.redirect("releases/m.yml", &format!("{}/evil.yml", evil.url));
    let prefix = format!("{}/releases/", allowed.url);
    let allow = [("CORRAL_DEPLOY_ALLOW", prefix.as_str())];

    let r = agent(&sb.dir, &manifest_hop, &[], &allow).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not allowed"), "{}", r.stderr);
    assert!(!marker.exists());
    assert!(evil.gets().is_empty());
    // The first URL itself.
    let r = agent(&sb.dir, &format!("{}/evil.yml", evil.url), &[], &allow).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not allowed"), "{}", r.stderr);
    assert!(evil.gets().is_empty());

    // A source whose hop leaves the prefix: nothing reaches dest.
    let tar = std::fs::read(sb.dir.join("testdata/test.tar")).unwrap();
    evil.add("test.tar", tar);
    let src = allowed.redirect("releases/test.tar", &format!("{}/test.tar", evil.url));
    allowed.add(
        "releases/app.yml",
        format!(
            "src: {src}\nchecksum: {TEST_TAR_SHA1}\ndest: {}\n",
            sb.dest.display()
        ),
    );
    let app = format!("{}/releases/app.yml", allowed.url);
    let r = agent(&sb.dir, &app, &[], &allow).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not allowed"), "{}", r.stderr);
    assert!(evil.gets().is_empty());
    assert_eq!(std::fs::read_dir(&sb.dest).unwrap().count(), 0);

    // Without the setting: stretcher's behaviour, the checksum pins the content.
    let r = agent(&sb.dir, &app, &[], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.read("dest/foo/baz").as_deref(), Some("baz\n"));
    let r = agent(&sb.dir, &manifest_hop, &[], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(marker.exists());
}

/// Hole 1: credentials never follow a redirect to another origin.
#[tokio::test]
async fn credentials_stay_with_their_origin() {
    let sb = Sandbox::new("redirect-creds");
    let first = Files::start().await;
    let other = Files::start().await;
    let marker = sb.dir.join("ran");
    other.add("m.yml", touch_manifest(&marker));
    first.redirect("m.yml", &format!("{}/m.yml", other.url));
    let with_creds = first.url.replace("http://", "http://deployer:hunter2@") + "/m.yml";
    let r = agent(&sb.dir, &with_creds, &[], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(marker.exists());
    let sent = first.gets();
    assert!(
        sent[0]
            .1
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic ")),
        "{sent:?}"
    );
    assert_eq!(other.gets(), vec![("m.yml".to_string(), None)]);
}

/// Hole 2: `allowed()` compared the still-encoded path and `to_file_path()` decoded `%2F`
/// afterwards, so `file:///…/allowed/..%2F..%2Fother%2Fevil.yml` ran a manifest from
/// outside the prefix. Paths are compared decoded, segment by segment, and encoded
/// separators, NULs and dot segments are refused in every encoding.
#[tokio::test]
async fn encoded_separators_do_not_escape_a_prefix() {
    let sb = Sandbox::new("encoded");
    std::fs::create_dir_all(sb.dir.join("allowed")).unwrap();
    std::fs::create_dir_all(sb.dir.join("other")).unwrap();
    let marker = sb.dir.join("evil-ran");
    std::fs::write(sb.dir.join("other/evil.yml"), touch_manifest(&marker)).unwrap();
    let prefix = format!("file://{}/allowed/", sb.dir.display());
    let c = Corral::start_with(&[("CORRAL_DEPLOY_ALLOW", &prefix)]).await;
    let tails = [
        "..%2Fother%2Fevil.yml",
        "..%2fother%2fevil.yml",
        "%2E%2E/other/evil.yml",
        "%2e%2E%2Fother%2Fevil.yml",
        "x%2F..%2F..%2Fother%2Fevil.yml",
        "..%5Cother%5Cevil.yml",
        "..%252Fother%252Fevil.yml",
    ];
    for tail in tails {
        let url = format!("{prefix}{tail}");
        let (s, v) = crate::deploy_fanout::command(&c, &format!("deploy {url}")).await;
        assert_eq!(s, 409, "{url}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("CORRAL_DEPLOY_ALLOW"),
            "{v}"
        );
        let r = agent(&sb.dir, &url, &[], &[("CORRAL_DEPLOY_ALLOW", &prefix)]).await;
        assert_eq!(r.code, 1, "{url}: {}", r.stderr);
        assert!(r.stderr.contains("not allowed"), "{url}: {}", r.stderr);
    }
    // A src escaping the same way, in an allowed manifest.
    let src = format!("{prefix}..%2F..%2Ftestdata%2Ftest.tar");
    std::fs::write(
        sb.dir.join("allowed/m.yml"),
        format!(
            "src: {src}\nchecksum: {TEST_TAR_SHA1}\ndest: {}\n",
            sb.dest.display()
        ),
    )
    .unwrap();
    let job = run_job(&c, &format!("deploy {prefix}m.yml")).await;
    let summary = job.outcome.unwrap().summary;
    assert!(summary.contains("is not allowed"), "{summary}");
    // An http prefix: the server never sees the request.
    let files = Files::start().await;
    files.add("other/evil.yml", touch_manifest(&marker));
    let http_prefix = format!("{}/releases/", files.url);
    for tail in tails {
        let url = format!("{http_prefix}{tail}");
        let r = agent(&sb.dir, &url, &[], &[("CORRAL_DEPLOY_ALLOW", &http_prefix)]).await;
        assert_eq!(r.code, 1, "{url}: {}", r.stderr);
    }
    assert!(files.gets().is_empty(), "{:?}", files.gets());
    assert!(!marker.exists());
    assert_eq!(std::fs::read_dir(&sb.dest).unwrap().count(), 0);
}

/// The bot's own secrets, set in the real binary's environment.
const BOT_SECRETS: [(&str, &str); 5] = [
    ("SLACK_BOT_TOKEN", "xoxb-SECRET-bot-token-4711"),
    ("SLACK_SIGNING_SECRET", "SECRET-signing-0815"),
    ("RANCHER_ACCESS_KEY", "SECRET-access-key-1234"),
    ("RANCHER_SECRET_KEY", "SECRET-rancher-key-9999"),
    ("CORRAL_API_TOKEN", "SECRET-api-token-4242"),
];

/// `corral serve` as a child process with [`BOT_SECRETS`] in its environment, its log
/// (debug level) in a file.
struct Bot {
    child: std::process::Child,
    url: String,
    log: std::path::PathBuf,
    db: std::path::PathBuf,
}

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bot {
    async fn start(
        dir: &std::path::Path,
        slack: &crate::support::fake_slack::FakeSlack,
        extra: &[(&str, &str)],
    ) -> Bot {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("bot.log");
        let db = dir.join("bot.db");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
            .arg("serve")
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("CORRAL_LOG", "debug")
            .env("CORRAL_DATABASE_URL", format!("sqlite://{}", db.display()))
            .env("SLACK_API_URL", &slack.api_url)
            .env("CORRAL_CHANNEL", "C0RELEASES")
            .env("CORRAL_LISTEN", format!("127.0.0.1:{port}"))
            .envs(BOT_SECRETS)
            .envs(extra.iter().copied())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("bot.err")).unwrap())
            .spawn()
            .unwrap();
        let bot = Bot {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            db,
        };
        let http = corral::http_client().unwrap();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{}/readyz", bot.url)).send().await
                && r.status() == 200
            {
                return bot;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("corral serve did not become ready");
    }

    /// Runs a command to its end; returns the job record as the API shows it.
    async fn job(&self, text: &str) -> serde_json::Value {
        let http = corral::http_client().unwrap();
        let v: serde_json::Value = http
            .post(format!("{}/api/v1/commands", self.url))
            .bearer_auth(BOT_SECRETS[4].1)
            .json(&serde_json::json!({ "text": text, "user": "U0DEPLOYER" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let Some(id) = v["job"]["id"].as_i64() else {
            return v;
        };
        for _ in 0..600 {
            let job: serde_json::Value = http
                .get(format!("{}/api/v1/jobs/{id}", self.url))
                .bearer_auth(BOT_SECRETS[4].1)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if !matches!(job["status"].as_str(), Some("queued" | "running")) {
                return job;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("job {id} did not end");
    }

    /// Everything the bot wrote: its log, its database, and stderr.
    fn written(&self) -> String {
        let mut all = std::fs::read_to_string(&self.log).unwrap_or_default();
        all.push_str(
            &std::fs::read_to_string(self.log.with_file_name("bot.err")).unwrap_or_default(),
        );
        for f in [self.db.clone(), self.db.with_extension("db-wal")] {
            all.push_str(&String::from_utf8_lossy(
                &std::fs::read(f).unwrap_or_default(),
            ));
        }
        all
    }
}

/// Hole 4: templates were expanded with the bot's environment when it checked, planned or
/// ran a manifest, so its tokens reached the channel and the job. The bot now keeps every
/// template action opaque, refuses a templated `src`/`checksum`/`dest`, and runs
/// `--target local` in a child `corral agent` whose environment holds none of its
/// secrets, only what `CORRAL_DEPLOY_ENV` names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_never_gets_the_bots_secrets() {
    let sb = Sandbox::new("secrets");
    let slack = crate::support::fake_slack::FakeSlack::start().await;
    let prefix = format!("file://{}/", sb.dir.display());
    let bot = Bot::start(
        &sb.dir,
        &slack,
        &[
            ("CORRAL_DEPLOY_ALLOW", &prefix),
            ("CORRAL_DEPLOY_HOSTS", "web-1,web-2"),
            ("CORRAL_DEPLOY_ENV", "APP_COLOR"),
            ("APP_COLOR", "blue"),
        ],
    )
    .await;
    let mut asks = String::new();
    for (name, _) in BOT_SECRETS {
        asks.push_str(&format!(" {name}={{{{ env \"{name}\" \"unset\" }}}}"));
    }
    let write = |name: &str, text: String| {
        std::fs::write(sb.dir.join(name), text).unwrap();
        format!("{prefix}{name}")
    };
    let run_here = write(
        "local.yml",
        format!(
            "commands:\n  pre:\n    - 'echo asks{asks}'\n    - 'echo color={{{{ env \"APP_COLOR\" \"none\" }}}}'\n    - env\n    - exit 3\n"
        ),
    );
    let must = write(
        "must.yml",
        "commands:\n  pre:\n    - echo '{{ must_env \"SLACK_BOT_TOKEN\" }}'\n".to_string(),
    );
    let templated_dest = write(
        "dest.yml",
        format!(
            "src: {prefix}testdata/test.tar\nchecksum: {TEST_TAR_SHA1}\ndest: '/srv/{{{{ must_env \"SLACK_BOT_TOKEN\" }}}}'\n"
        ),
    );
    let templated_src = write(
        "src.yml",
        format!(
            "src: 'https://x.example/{{{{ env \"RANCHER_SECRET_KEY\" }}}}.tar'\nchecksum: {TEST_TAR_SHA1}\ndest: /srv/app\n"
        ),
    );
    let templated_sum = write(
        "sum.yml",
        format!(
            "src: {prefix}testdata/test.tar\nchecksum: '{{{{ env \"SLACK_SIGNING_SECRET\" }}}}'\ndest: /srv/app\n"
        ),
    );

    let job = bot.job(&format!("deploy {run_here}")).await;
    assert_eq!(job["status"], "failed", "{job}");
    let reason = job["outcome"]["detail"]["log_tail"].as_str().unwrap_or("");
    assert!(
        reason.contains("color=blue"),
        "CORRAL_DEPLOY_ENV passes: {job}"
    );
    assert!(reason.contains("SLACK_BOT_TOKEN=unset"), "{job}");
    let job = bot.job(&format!("deploy {must}")).await;
    assert_eq!(job["status"], "failed", "{job}");
    for (url, field) in [
        (&templated_dest, "dest"),
        (&templated_src, "src"),
        (&templated_sum, "checksum"),
    ] {
        for flags in [
            "",
            " --dry-run",
            " --target serf --dry-run",
            " --target consul --dry-run",
        ] {
            let job = bot.job(&format!("deploy {url}{flags}")).await;
            let summary = job["outcome"]["summary"].as_str().unwrap_or("");
            assert_eq!(job["status"], "failed", "{url}{flags}: {job}");
            assert!(
                summary.contains(&format!("{field}: is templated")),
                "{url}{flags}: {summary}"
            );
        }
    }
    // A plan of a fanned-out manifest keeps its templates to the hosts.
    let fan = write(
        "fan.yml",
        "commands:\n  pre:\n    - echo '{{ must_env \"CORRAL_API_TOKEN\" }} {{ env \"SLACK_BOT_TOKEN\" }}'\n".to_string(),
    );
    let job = bot
        .job(&format!("deploy {fan} --target consul --dry-run"))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");

    slack
        .wait_for(10, |calls| {
            calls
                .iter()
                .filter(|c| c.text().contains("Dry run"))
                .count()
                >= 1
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let jobs: String = corral::http_client()
        .unwrap()
        .get(format!("{}/api/v1/jobs", bot.url))
        .bearer_auth(BOT_SECRETS[4].1)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let said: Vec<String> = slack.calls().iter().map(|c| c.body.to_string()).collect();
    let written = bot.written();
    assert!(jobs.contains("color=blue"), "{jobs}");
    for (name, secret) in BOT_SECRETS {
        assert!(!jobs.contains(secret), "{name} in a job record: {jobs}");
        assert!(
            !said.iter().any(|m| m.contains(secret)),
            "{name} in a Slack message: {said:?}"
        );
        assert!(
            !written.contains(secret),
            "{name} in the bot's log or database"
        );
    }
}

/// Hole 4: `CORRAL_DEPLOY_ENV` names what a local deploy gets; corral's own settings and
/// secrets cannot be named.
#[test]
fn deploy_env_refuses_the_bots_own_names() {
    use corral::config::{Config, Env};
    for name in [
        "SLACK_BOT_TOKEN",
        "slack_signing_secret",
        "RANCHER_SECRET_KEY",
        "CATTLE_ACCESS_KEY",
        "CORRAL_API_TOKEN",
        "CORRAL_DATABASE_URL",
        "API_KEY",
        "CONSUL_HTTP_TOKEN",
        "SERF_RPC_AUTH",
        "1BAD",
        "A-B",
    ] {
        let e = Config::from_env(&Env::from_pairs([("CORRAL_DEPLOY_ENV", name)]))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("CORRAL_DEPLOY_ENV: "), "{name}: {e}");
    }
    let c = Config::from_env(&Env::from_pairs([
        ("CORRAL_DEPLOY_ENV", "APP_COLOR, AWS_REGION,UNSET_ONE"),
        ("APP_COLOR", "blue"),
        ("AWS_REGION", "eu-west-1"),
    ]))
    .unwrap();
    let names: Vec<&str> = c.deploy.env.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["APP_COLOR", "AWS_REGION"]);
    assert!(!format!("{:?}", c.deploy).contains("eu-west-1"));
}

/// Hole 9: `dest: /` and other system roots passed validation, and so did a `dest`
/// containing the agent's own working directory. The source here does not exist, so the
/// code before the fix failed later, at the fetch, without touching anything.
#[tokio::test]
async fn system_roots_and_the_agents_own_directories_are_no_dest() {
    let sb = Sandbox::new("dest-roots");
    let state_dir = sb.dir.join("state");
    let state = state_dir.join("applied");
    let state_s = state.to_string_lossy().into_owned();
    std::os::unix::fs::symlink("/", sb.dir.join("to-root")).unwrap();
    let cases = [
        ("/".to_string(), "system directory"),
        ("/usr".to_string(), "system directory"),
        ("/etc/".to_string(), "system directory"),
        (format!("{}/to-root", sb.dir.display()), "system directory"),
        (sb.dir.display().to_string(), "agent's own directory"),
        (state_dir.display().to_string(), "agent's own directory"),
        (format!("{}/x/..", sb.dir.display()), "`..`"),
    ];
    for (dest, needle) in &cases {
        let url = sb.write_manifest(&format!(
            "src: file:///nonexistent/app.tar\nchecksum: {TEST_TAR_SHA1}\ndest: '{dest}'\n"
        ));
        let r = agent(&sb.dir, &url, &[], &[("CORRAL_AGENT_STATE", &state_s)]).await;
        assert_eq!(r.code, 1, "{dest}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{dest}: {}", r.stderr);
        assert!(
            !r.stderr.contains("Loading URL file:///nonexistent"),
            "{dest}: checked before any fetch"
        );
    }
    // The bot refuses the system roots when it plans, whatever the target.
    let c = Corral::start_with(&[
        (
            "CORRAL_DEPLOY_ALLOW",
            &format!("file://{}/", sb.dir.display()),
        ),
        ("CORRAL_DEPLOY_HOSTS", "web-1"),
    ])
    .await;
    for dest in ["/", "/var/lib"] {
        let url = sb.write_manifest(&format!(
            "src: file://{}/nonexistent.tar\nchecksum: {TEST_TAR_SHA1}\ndest: {dest}\n",
            sb.dir.display()
        ));
        for flags in [" --dry-run", " --target serf --dry-run"] {
            let job = run_job(&c, &format!("deploy {url}{flags}")).await;
            let summary = job.outcome.unwrap().summary;
            assert!(
                summary.contains("system directory"),
                "{dest}{flags}: {summary}"
            );
        }
    }
}

/// Hole 9: hosts reported with the full API token. `CORRAL_REPORT_TOKEN` is accepted on
/// the report endpoint and nowhere else, and a host the job does not expect is refused.
#[tokio::test]
async fn reports_have_their_own_token_and_expected_hosts() {
    let c = Corral::start_with(&[
        ("CORRAL_REPORT_TOKEN", "report-only-token"),
        ("CORRAL_DEPLOY_HOSTS", "web-1,web-2"),
    ])
    .await;
    let job = crate::deploy::deploy_job(&c).await;
    let post = |token: &'static str, host: &'static str| {
        let req = c
            .http
            .post(format!("{}/api/v1/deploys/{job}/reports", c.url))
            .bearer_auth(token)
            .body(format!(
                r#"{{"host":"{host}","status":"succeeded","duration_ms":5,"log_tail":"x"}}"#
            ));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post("report-only-token", "web-1").await, 201);
    assert_eq!(post("report-only-token", "intruder").await, 403);
    assert_eq!(post("wrong", "web-2").await, 401);
    // The API token still works there (agents not yet moved to the report token).
    assert_eq!(post(crate::support::corral::TOKEN, "web-2").await, 201);
    // Nowhere else.
    for (method, path) in [("POST", "/api/v1/commands"), ("GET", "/api/v1/jobs")] {
        let resp = c
            .http
            .request(method.parse().unwrap(), format!("{}{path}", c.url))
            .bearer_auth("report-only-token")
            .json(&serde_json::json!({"text": "release status", "user": "U0"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path}");
    }
}

/// Hole 9: URLs with credentials and expanded `must_env` values appeared in the agent's
/// log and in the tail it reports.
#[tokio::test]
async fn agent_logs_and_reports_redact_credentials_and_must_env_values() {
    let c = Corral::start().await;
    let job = crate::deploy::deploy_job(&c).await;
    let sb = Sandbox::new("redact");
    let files = Files::start().await;
    files.add(
        "m.yml",
        "commands:\n  pre:\n    - echo using {{ must_env \"DEPLOY_PASSWORD\" }}\n    - exit 1\n",
    );
    let url = files
        .url
        .replace("http://", "http://deployer:hunter2-url-pw@")
        + "/m.yml";
    let r = agent(
        &sb.dir,
        &format!("{url}#corral-job={job}"),
        &["--report-url", &c.url, "--host", "web-1"],
        &[
            ("CORRAL_REPORT_TOKEN", crate::support::corral::TOKEN),
            ("DEPLOY_PASSWORD", "pw-from-must-env-77"),
        ],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("Reported failed"), "{}", r.stderr);
    let reports = c.app.store.deploy_reports(job).await.unwrap();
    let report = format!("{:?}", reports);
    for secret in ["hunter2-url-pw", "pw-from-must-env-77"] {
        assert!(
            !r.stderr.contains(secret),
            "{secret} in the log: {}",
            r.stderr
        );
        assert!(!report.contains(secret), "{secret} in the report: {report}");
    }
    assert!(r.stderr.contains("deployer:***@"), "{}", r.stderr);
    assert!(report.contains("using ***"), "{report}");
}

/// Real clusters have auth: a Serf agent with an RPC auth key refuses the bot without
/// the key (`CORRAL_SERF_RPC_AUTH`, alias `SERF_RPC_AUTH`, handed to `serf` through its
/// environment only) and answers with it; `SERF_RPC_ADDR` is `CORRAL_SERF_RPC`'s alias.
#[tokio::test]
async fn serf_with_an_rpc_auth_key() {
    use crate::deploy_fanout::free_port;
    let rpc = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let bind = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let sb = Sandbox::new("serf-auth");
    // The agent's key comes from its configuration file (`rpc_auth`).
    let conf = sb.dir.join("serf.json");
    std::fs::write(&conf, r#"{"rpc_auth": "rpc-key-5150"}"#).unwrap();
    let mut serf = tokio::process::Command::new("serf")
        .args([
            "agent",
            "-node=authed-1",
            &format!("-bind={bind}"),
            &format!("-rpc-addr={rpc}"),
            &format!("-config-file={}", conf.display()),
            "-log-level=warn",
        ])
        .env_remove("SERF_RPC_AUTH")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("serf is installed");
    // Wait for its RPC.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::net::TcpStream::connect(&rpc).is_err() {
        assert!(std::time::Instant::now() < deadline, "serf did not start");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let url = sb.write_manifest("commands:\n  pre:\n    - 'true'\n");
    let allow = format!("file://{}/", sb.dir.display());
    for (settings, ok) in [
        (vec![("CORRAL_SERF_RPC", rpc.as_str())], false),
        (
            vec![
                ("SERF_RPC_ADDR", rpc.as_str()),
                ("SERF_RPC_AUTH", "rpc-key-5150"),
            ],
            true,
        ),
        (
            vec![
                ("CORRAL_SERF_RPC", rpc.as_str()),
                ("CORRAL_SERF_RPC_AUTH", "rpc-key-5150"),
            ],
            true,
        ),
        (
            vec![
                ("CORRAL_SERF_RPC", rpc.as_str()),
                ("CORRAL_SERF_RPC_AUTH", "wrong-key"),
            ],
            false,
        ),
    ] {
        let mut env = settings.clone();
        env.push(("CORRAL_DEPLOY_ALLOW", &allow));
        let c = Corral::start_with(&env).await;
        let job = run_job(&c, &format!("deploy {url} --target serf --dry-run")).await;
        let o = job.outcome.unwrap();
        assert_eq!(
            job.status.to_string() == "succeeded",
            ok,
            "{settings:?}: {}",
            o.summary
        );
        if ok {
            assert_eq!(o.skipped, 1, "the one member is planned: {o:?}");
        } else {
            assert!(o.summary.contains("serf members failed"), "{}", o.summary);
            assert!(!o.summary.contains("rpc-key-5150"), "{}", o.summary);
        }
    }
    let _ = serf.start_kill();
}

/// Consul with ACLs: `CONSUL_HTTP_ADDR` (a bare `host:port` is `http://`) and
/// `CONSUL_HTTP_TOKEN`, sent as `X-Consul-Token` on the catalog read and the event fire.
#[tokio::test]
async fn consul_with_an_acl_token() {
    let consul = Files::start().await;
    consul.add(
        "v1/catalog/nodes",
        r#"[{"Node":"node-a","Address":"10.0.0.1"}]"#,
    );
    consul.require_token("acl-token-8080");
    let sb = Sandbox::new("consul-acl");
    let url = sb.write_manifest("commands:\n  pre:\n    - 'true'\n");
    let allow = format!("file://{}/", sb.dir.display());
    let bare = consul.url.trim_start_matches("http://").to_string();
    // Without the token: Consul's refusal, named.
    let c =
        Corral::start_with(&[("CORRAL_DEPLOY_ALLOW", &allow), ("CONSUL_HTTP_ADDR", &bare)]).await;
    let job = run_job(&c, &format!("deploy {url} --target consul --dry-run")).await;
    let summary = job.outcome.unwrap().summary;
    assert!(summary.contains("HTTP 403"), "{summary}");
    // With it: the catalog is read and the event fired, each with the header.
    let c = Corral::start_with(&[
        ("CORRAL_DEPLOY_ALLOW", &allow),
        ("CONSUL_HTTP_ADDR", &bare),
        ("CONSUL_HTTP_TOKEN", "acl-token-8080"),
    ])
    .await;
    let job = run_job(&c, &format!("deploy {url} --target consul --timeout 1s")).await;
    let o = job.outcome.unwrap();
    assert_eq!(o.failed.len(), 1, "node-a never reports here: {o:?}");
    assert_eq!(o.failed[0].target, "node-a");
    let puts = consul.puts();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(puts[0].0, "v1/event/fire/deploy");
    // Bad values are refused at start-up, naming the variable.
    use corral::config::{Config, Env};
    let e = Config::from_env(&Env::from_pairs([("CONSUL_CACERT", "/nonexistent/ca.pem")]))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("CONSUL_CACERT"), "{e}");
    let e = Config::from_env(&Env::from_pairs([("CONSUL_HTTP_SSL", "maybe")]))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("CONSUL_HTTP_SSL"), "{e}");
    let c = Config::from_env(&Env::from_pairs([
        ("CONSUL_HTTP_ADDR", "consul.internal:8501"),
        ("CONSUL_HTTP_SSL", "true"),
    ]))
    .unwrap();
    assert_eq!(
        c.deploy.consul_url.as_str(),
        "https://consul.internal:8501/"
    );
}

/// Consul over HTTPS: `CONSUL_HTTP_SSL=true` with a bare `CONSUL_HTTP_ADDR`, the server's
/// certificate signed by a private CA that `CONSUL_CACERT` names. Without the CA, or with
/// another one, the TLS handshake fails: the job says so and Consul never sees a request.
#[tokio::test]
async fn consul_over_tls_trusts_the_ca_consul_cacert_names() {
    let consul = Files::start().await;
    consul.add(
        "v1/catalog/nodes",
        r#"[{"Node":"node-a","Address":"10.0.0.1"}]"#,
    );
    let sb = Sandbox::new("consul-tls");
    let pki = crate::support::tls::Pki::new(&sb.dir, "consul");
    let stranger = crate::support::tls::Pki::new(&sb.dir, "stranger");
    let upstream: std::net::SocketAddr = consul.url.trim_start_matches("http://").parse().unwrap();
    let port = crate::support::tls::front(upstream, &pki).await;
    let addr = format!("127.0.0.1:{port}");
    let url = sb.write_manifest("commands:\n  pre:\n    - 'true'\n");
    let allow = format!("file://{}/", sb.dir.display());
    let base = [
        ("CORRAL_DEPLOY_ALLOW", allow.as_str()),
        ("CONSUL_HTTP_ADDR", addr.as_str()),
        ("CONSUL_HTTP_SSL", "true"),
    ];
    let stranger_ca = stranger.ca.to_string_lossy().into_owned();
    for ca in [None, Some(stranger_ca.as_str())] {
        let mut env = base.to_vec();
        env.extend(ca.map(|ca| ("CONSUL_CACERT", ca)));
        let c = Corral::start_with(&env).await;
        let job = run_job(&c, &format!("deploy {url} --target consul --dry-run")).await;
        let summary = job.outcome.unwrap().summary;
        assert!(
            summary.contains("invalid peer certificate: UnknownIssuer"),
            "{ca:?}: {summary}"
        );
        assert!(consul.gets().is_empty(), "{ca:?}: {:?}", consul.gets());
    }
    let ca = pki.ca.to_string_lossy().into_owned();
    let mut env = base.to_vec();
    env.push(("CONSUL_CACERT", &ca));
    let c = Corral::start_with(&env).await;
    let job = run_job(&c, &format!("deploy {url} --target consul --timeout 1s")).await;
    let o = job.outcome.unwrap();
    assert_eq!(o.failed.len(), 1, "node-a never reports here: {o:?}");
    assert_eq!(o.failed[0].target, "node-a");
    assert_eq!(consul.gets().len(), 1, "{:?}", consul.gets());
    let puts = consul.puts();
    assert_eq!(puts.len(), 1, "the event fired over TLS: {puts:?}");
    assert_eq!(puts[0].0, "v1/event/fire/deploy");
}

/// Hole 9, hosts from Consul's catalog (no `CORRAL_DEPLOY_HOSTS`): the job records the
/// hosts it fans out to before firing, and the report endpoint refuses any other host;
/// the forged report changes nothing, and the real hosts' reports still end the job.
#[tokio::test]
async fn a_report_from_a_host_the_catalog_did_not_name_is_refused() {
    let sb = Sandbox::new("consul-hosts");
    let consul = Files::start().await;
    consul.add(
        "v1/catalog/nodes",
        r#"[{"Node":"node-a","Address":"10.0.0.1"},{"Node":"node-b","Address":"10.0.0.2"}]"#,
    );
    let c = Corral::start_with(&[
        ("CORRAL_DEPLOY_ALLOW", "file://"),
        ("CORRAL_CONSUL_URL", &consul.url),
    ])
    .await;
    let url = sb.write_manifest("commands:\n  pre:\n    - 'true'\n");
    let (s, v) =
        crate::deploy_fanout::command(&c, &format!("deploy {url} --target consul --timeout 60s"))
            .await;
    assert_eq!(s, 202, "{v}");
    let id = v["job"]["id"].as_i64().unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while consul.puts().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Consul event fired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let post = |host: &str| {
        let req = c
            .http
            .post(format!("{}/api/v1/deploys/{id}/reports", c.url))
            .bearer_auth(crate::support::corral::TOKEN)
            .body(format!(
                r#"{{"host":"{host}","status":"succeeded","duration_ms":5,"log_tail":"x"}}"#
            ));
        async move {
            let resp = req.send().await.unwrap();
            let s = resp.status().as_u16();
            (
                s,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let before = c.app.store.job(id).await.unwrap().unwrap();
    assert!(!before.status.is_final(), "{before:?}");
    for host in ["intruder", "node-a.evil", "NODE-A", "node-"] {
        let (s, v) = post(host).await;
        assert_eq!(s, 403, "{host}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains(&format!("is not one deploy job {id} expects")),
            "{host}: {v}"
        );
    }
    assert!(c.app.store.deploy_reports(id).await.unwrap().is_empty());
    // Give a wrong implementation's collector a few polls to show the forged report.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(c.app.store.job(id).await.unwrap().unwrap(), before);
    // The hosts Consul named are taken, and end the job.
    assert_eq!(post("node-a").await.0, 201);
    assert_eq!(post("node-b").await.0, 201);
    tokio::time::timeout(std::time::Duration::from_secs(30), c.app.runner.wait(id))
        .await
        .expect("job ended");
    let job = c.app.store.job(id).await.unwrap().unwrap();
    let o = job.outcome.unwrap();
    assert_eq!(o.summary, "2/2 hosts done, 0 failed", "{o:?}");
    assert_eq!(o.detail["unexpected"], serde_json::json!([]));
}

/// Hole 9 / log tails: what a host's commands print is outside input. Hostile output —
/// escape sequences, bidi controls, Slack mentions, secrets, a 100 KB line, a fence —
/// reaches neither the stored report nor the thread as printed, whether it comes from a
/// real agent or from a report posted by hand.
#[tokio::test]
async fn hostile_command_output_is_scrubbed_before_any_tail() {
    let sb = Sandbox::new("hostile-tail");
    let consul = Files::start().await;
    consul.add(
        "v1/catalog/nodes",
        r#"[{"Node":"node-a"},{"Node":"node-b"}]"#,
    );
    let c = Corral::start_with(&[
        ("CORRAL_DEPLOY_ALLOW", "file://"),
        ("CORRAL_CONSUL_URL", &consul.url),
    ])
    .await;
    let script = sb.dir.join("hostile.sh");
    std::fs::write(
        &script,
        concat!(
            "printf '\\033[31mRED\\033[0m \\033]0;pwned-title\\007after-osc\\n'\n",
            "printf 'bidi \\342\\200\\256gnp.exe\\n'\n",
            "printf '<!channel> <!here> <@U0ADMIN> ping\\n'\n",
            "printf 'token xoxb-1234567890-abcdefABCDEF\\n'\n",
            "printf 'AKIAIOSFODNN7EXAMPLE\\n'\n",
            "printf 'DB_PASSWORD=hunter2hunter2\\n'\n",
            "printf 'progress 10%%\\rprogress 100%%\\n'\n",
            "head -c 100000 /dev/zero | tr '\\000' 'L'; echo\n",
            "echo '```'; echo 'escaped the fence *bold*'\n",
            "exit 1\n",
        ),
    )
    .unwrap();
    let url = sb.write_manifest(&format!(
        "commands:\n  pre:\n    - sh {}\n",
        script.display()
    ));
    let (s, v) =
        crate::deploy_fanout::command(&c, &format!("deploy {url} --target consul --timeout 60s"))
            .await;
    assert_eq!(s, 202, "{v}");
    let id = v["job"]["id"].as_i64().unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let payload = loop {
        if let Some((_, body)) = consul.puts().first().cloned() {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "no event fired");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // node-a: a real agent runs the hostile commands and reports.
    let r = agent(
        &sb.dir,
        &format!("{payload}\n"),
        &["--report-url", &c.url, "--host", "node-a"],
        &[("CORRAL_REPORT_TOKEN", crate::support::corral::TOKEN)],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    // node-b: the same bytes posted by hand, as a tampered agent would.
    let hostile = "\u{1b}[31mRED\u{1b}[0m \u{1b}]0;pwned-title\u{7}after-osc\nbidi \u{202E}gnp.exe\n<!channel> <!here> <@U0ADMIN> ping\ntoken xoxb-1234567890-abcdefABCDEF\nAKIAIOSFODNN7EXAMPLE\nDB_PASSWORD=hunter2hunter2\n```\nescaped the fence *bold*";
    let long = "L".repeat(100_000);
    let resp = c
        .http
        .post(format!("{}/api/v1/deploys/{id}/reports", c.url))
        .bearer_auth(crate::support::corral::TOKEN)
        .json(&serde_json::json!({
            "host": "node-b", "status": "failed", "duration_ms": 5,
            "log_tail": format!("{hostile}\n{long}\n{hostile}"),
            "error": "\u{1b}[2Jfailed with xoxb-1234567890-abcdefABCDEF",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    tokio::time::timeout(std::time::Duration::from_secs(30), c.app.runner.wait(id))
        .await
        .expect("job ended");
    let never = [
        "\u{1b}",
        "\u{202E}",
        "pwned-title",
        "xoxb-1234567890",
        "AKIAIOSFODNN7EXAMPLE",
        "hunter2hunter2",
        &"L".repeat(600),
    ];
    let reports = c.app.store.deploy_reports(id).await.unwrap();
    assert_eq!(reports.len(), 2, "{reports:?}");
    for rep in &reports {
        let stored = format!(
            "{}\n{}",
            rep.log_tail,
            rep.error.clone().unwrap_or_default()
        );
        for bad in never {
            assert!(!stored.contains(bad), "{}: {bad:?} in {stored:?}", rep.host);
        }
        assert!(rep.log_tail.contains("RED after-osc"), "{:?}", rep.log_tail);
        assert!(rep.log_tail.contains("bytes cut]"), "{:?}", rep.log_tail);
        assert!(
            rep.log_tail.lines().all(|l| l.len() < 600),
            "{:?}",
            rep.log_tail
        );
    }
    let a = reports.iter().find(|r| r.host == "node-a").unwrap();
    assert!(
        a.log_tail.contains("progress 10%\nprogress 100%"),
        "{:?}",
        a.log_tail
    );
    // The thread: nothing above, no live mention, no fence closed early.
    c.delivered().await;
    let calls = c
        .slack
        .wait_for(10, |calls| {
            calls.iter().any(|c| c.body.to_string().contains("node-b"))
        })
        .await;
    for call in &calls {
        let body = call.body.to_string();
        for bad in never.iter().copied().chain([
            "\\u001b",
            "<!channel>",
            "<!here>",
            "<@U0ADMIN>",
            "```\\nescaped the fence",
        ]) {
            assert!(!body.contains(bad), "{bad:?} in {body}");
        }
    }
    assert!(
        calls
            .iter()
            .any(|c| c.body.to_string().contains("&lt;!channel&gt;")),
        "{calls:?}"
    );
}
