//! `corral agent` from outside: stretcher's own cases (its manifests and tarballs in
//! tests/fixtures/stretcher), hostile tarballs, a 404 source, a wrong checksum, the
//! strategies, Consul input with replay after restart, and reports to the bot.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::support::corral::{Corral, TOKEN};
use crate::support::files::Files;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stretcher");
pub const TEST_TAR_SHA1: &str = "7b57db167410e46720b1d636ee6cb6c147efac3a";

/// A scratch directory laid out like stretcher's test tree: `testdata/` with the two
/// tarballs and `testdata/tmp/`, plus `dest/`.
pub struct Sandbox {
    pub dir: PathBuf,
    pub dest: PathBuf,
}

impl Sandbox {
    pub fn new(name: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("corral-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("testdata/tmp")).unwrap();
        for f in ["test.tar", "test_no_top_dir.tar"] {
            std::fs::copy(
                format!("{FIXTURES}/testdata/{f}"),
                dir.join("testdata").join(f),
            )
            .unwrap();
        }
        let dest = dir.join("dest");
        std::fs::create_dir(&dest).unwrap();
        Sandbox { dir, dest }
    }

    /// A stretcher fixture manifest with its placeholders filled, written to disk;
    /// returns its file:// URL. Relative `testdata/tmp` paths become absolute, since
    /// corral runs commands in `dest`.
    pub fn manifest(&self, fixture: &str) -> String {
        let text = std::fs::read_to_string(format!("{FIXTURES}/manifests/{fixture}")).unwrap();
        self.write_manifest(&text)
    }

    pub fn write_manifest(&self, text: &str) -> String {
        let cwd = self.dir.to_string_lossy();
        let text = text
            .replace("__CWD__", &cwd)
            .replace("__DEST__", &self.dest.to_string_lossy())
            .replace("> testdata/tmp", &format!("> {cwd}/testdata/tmp"));
        let path = self.dir.join("manifest.yml");
        std::fs::write(&path, text).unwrap();
        format!("file://{}", path.display())
    }

    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(rel)).ok()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Run {
    pub code: i32,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `corral agent args…` with `stdin`, in `cwd`, with a clean deploy environment.
pub async fn agent(cwd: &Path, stdin: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.arg("agent")
        .args(args)
        .current_dir(cwd)
        .env_remove("CONSUL_INDEX")
        .env_remove("SERF_USER_EVENT")
        .env_remove("CORRAL_REPORT_URL")
        .env("CORRAL_AGENT_STATE", cwd.join("agent-state"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("corral binary");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("agent finished within 30s")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn stretcher_deploy_with_pre_and_post() {
    let sb = Sandbox::new("deploy");
    let url = sb.manifest("test-deploy.yml");
    let r = agent(&sb.dir, &format!("{url}\n"), &[], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.read("dest/foo/baz").as_deref(), Some("baz\n"));
    assert_eq!(sb.read("dest/bar").as_deref(), Some("bar\n"));
    assert_eq!(sb.read("testdata/tmp/pre.touch").as_deref(), Some("pre\n"));
    assert_eq!(
        sb.read("testdata/tmp/post.touch").as_deref(),
        Some("post\n")
    );
    assert_eq!(mode(&sb.dest), 0o755);
    // pre and post ran in dest, and their output is in the log.
    assert!(
        r.stderr.contains(&format!("{}\n", sb.dest.display())),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("Checksum ok: 7b57db16"), "{}", r.stderr);
    assert!(r.stderr.contains("Deploy manifest succeeded."));
}

#[tokio::test]
async fn rsync_excludes_keep_and_skip() {
    for (fixture, keeps_exclude_txt) in [
        ("test-deploy-exclude.yml", true),
        ("test-deploy-exclude-from.yml", true),
    ] {
        let sb = Sandbox::new("exclude");
        std::fs::write(sb.dest.join("test.pid"), "1").unwrap();
        std::fs::write(sb.dest.join("stale.txt"), "old").unwrap();
        let url = sb.manifest(fixture);
        let r = agent(&sb.dir, &url, &[], &[]).await;
        assert_eq!(r.code, 0, "{fixture}: {}", r.stderr);
        assert_eq!(
            sb.read("dest/test.pid").as_deref(),
            Some("1"),
            "{fixture}: *.pid survives"
        );
        assert_eq!(sb.read("dest/stale.txt"), None, "{fixture}: --delete");
        assert_eq!(sb.read("dest/foo/baz"), None, "{fixture}: baz excluded");
        assert_eq!(sb.read("dest/bar").as_deref(), Some("bar\n"));
        assert_eq!(sb.read("dest/exclude.txt").is_some(), keeps_exclude_txt);
    }
}

#[tokio::test]
async fn dest_mode_and_mv_strategy() {
    let sb = Sandbox::new("destmode");
    let r = agent(&sb.dir, &sb.manifest("test-deploy-dest-mode.yml"), &[], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(mode(&sb.dest), 0o711);

    let sb = Sandbox::new("mv");
    let r = agent(
        &sb.dir,
        &sb.manifest("test-deploy-sync-strategy-mv.yml"),
        &[],
        &[],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(mode(&sb.dest), 0o751);
    assert_eq!(sb.read("dest/foo/baz").as_deref(), Some("baz\n"));
    assert_eq!(sb.read("testdata/tmp/pre.touch").as_deref(), Some("pre\n"));
    assert_eq!(
        sb.read("testdata/tmp/post.touch").as_deref(),
        Some("post\n")
    );
    // No staging directory is left beside dest.
    let leftovers: Vec<_> = std::fs::read_dir(&sb.dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("corral-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // mv refuses an existing dest, and failure commands say so.
    let text = format!(
        "src: file://{}/testdata/test.tar\nchecksum: {TEST_TAR_SHA1}\ndest: {}\nsync_strategy: mv\ncommands:\n  failure:\n    - cat > {}/failure.log\n",
        sb.dir.display(),
        sb.dest.display(),
        sb.dir.display()
    );
    let r = agent(&sb.dir, &sb.write_manifest(&text), &[], &[]).await;
    assert_eq!(r.code, 1);
    assert!(sb.read("failure.log").unwrap().contains("file exists"));
}

#[tokio::test]
async fn release_strategy_switches_and_prunes() {
    let sb = Sandbox::new("release");
    let text = format!(
        "src: file://{}/testdata/test.tar\nchecksum: {TEST_TAR_SHA1}\ndest: {}\nsync_strategy: release\nkeep_releases: 2\n",
        sb.dir.display(),
        sb.dest.display()
    );
    let url = sb.write_manifest(&text);
    let mut currents = Vec::new();
    for _ in 0..3 {
        let r = agent(&sb.dir, &url, &[], &[]).await;
        assert_eq!(r.code, 0, "{}", r.stderr);
        currents.push(std::fs::read_link(sb.dest.join("current")).unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_ne!(currents[1], currents[2], "each deploy is a new release");
    assert_eq!(sb.read("dest/current/foo/baz").as_deref(), Some("baz\n"));
    let releases: Vec<String> = std::fs::read_dir(sb.dest.join("releases"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(releases.len(), 2, "{releases:?}");
    assert!(currents[2].starts_with("releases"));
    // A rollback is one switch.
    let older = currents[1]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    corral::deploy::sync::switch_current(&sb.dest, &older).unwrap();
    assert_eq!(
        std::fs::read_link(sb.dest.join("current")).unwrap(),
        currents[1]
    );
}

#[tokio::test]
async fn bad_manifest_is_refused_with_the_field() {
    let sb = Sandbox::new("badmanifest");
    let r = agent(
        &sb.dir,
        &sb.manifest("test-deploy-invalid-sync-strategy.yml"),
        &[],
        &[],
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("load manifest failed: sync_strategy: invalid strategy name: dummy"),
        "{}",
        r.stderr
    );
    let r = agent(
        &sb.dir,
        &sb.manifest("test-parse-colon-invalid.yml"),
        &[],
        &[],
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("commands.success[0]"), "{}", r.stderr);
    // Nothing reached dest.
    assert_eq!(std::fs::read_dir(&sb.dest).unwrap().count(), 0);
    // An empty stdin and an unknown scheme.
    let r = agent(&sb.dir, "", &[], &[]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("could not parse event: EOF"));
    let r = agent(&sb.dir, "gopher://x/m.yml\n", &[], &[]).await;
    assert!(r.stderr.contains("URL scheme must be"), "{}", r.stderr);
}

#[tokio::test]
async fn retries_then_gives_up() {
    let sb = Sandbox::new("retry");
    let url = sb.manifest("test-deploy-retry.yml");
    let r = agent(&sb.dir, &url, &["-retry", "2", "-retry-wait", "0.2"], &[]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("get src failed: open "), "{}", r.stderr);
    assert_eq!(r.stderr.matches("Try again. Waiting: ").count(), 2);
    assert!(r.elapsed >= Duration::from_millis(400));
    assert!(!sb.dir.join("testdata/dest").exists());
}

#[tokio::test]
async fn timeout_and_bandwidth() {
    let sb = Sandbox::new("timeout");
    let url = sb.manifest("test-deploy-timeout-and-bandwidth.yml");
    let r = agent(
        &sb.dir,
        &url,
        &["--max-band-width=1kB", "--timeout=1s"],
        &[],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("timeout 1s reached while fetching src"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_dir(&sb.dest).unwrap().count(), 0);
    // 5120 bytes at 4 kB/s: the first 4000 pass at once, the rest take ~0.3 s.
    let r = agent(&sb.dir, &url, &["-max-bandwidth", "4kB"], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.elapsed >= Duration::from_millis(250), "{:?}", r.elapsed);
    assert!(r.stderr.contains("Set max bandwidth 4000/sec"));
}

#[tokio::test]
async fn commands_only_mode() {
    let sb = Sandbox::new("cmdonly");
    let r = agent(
        &sb.dir,
        &sb.manifest("test-deploy-commands-success.yml"),
        &[],
        &[],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    for line in ["pre 1", "pre 2", "post 1", "post 2"] {
        assert!(r.stderr.contains(line), "{line}: {}", r.stderr);
    }
    let r = agent(
        &sb.dir,
        &sb.manifest("test-deploy-commands-fail.yml"),
        &[],
        &[],
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("failed: exit 1 exit status 1"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("invoking command: exit 1"));
    assert!(
        !r.stderr.contains("invoking command: echo \"post 1\""),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn wrong_checksum_runs_failure_commands_and_leaves_dest() {
    let sb = Sandbox::new("checksum");
    std::fs::write(sb.dest.join("live.txt"), "v1").unwrap();
    let text = format!(
        "src: file://{d}/testdata/test.tar\nchecksum: {}\ndest: {}\ncommands:\n  pre:\n    - touch {d}/pre-ran\n  success:\n    - touch {d}/success-ran\n  failure:\n    - echo failing\n    - cat > {d}/failure.log\n",
        "0".repeat(64),
        sb.dest.display(),
        d = sb.dir.display()
    );
    let r = agent(&sb.dir, &sb.write_manifest(&text), &[], &[]).await;
    assert_eq!(r.code, 1);
    let log = sb.read("failure.log").expect("failure commands ran");
    assert!(
        log.contains(&format!(
            "checksum mismatch. expected:{} got:b0da0891",
            "0".repeat(64)
        )),
        "{log}"
    );
    assert!(log.contains("invoking command: echo failing"), "{log}");
    assert!(
        r.stderr.contains("failing\n"),
        "failure command output goes to stdout/stderr"
    );
    assert_eq!(sb.read("dest/live.txt").as_deref(), Some("v1"));
    assert_eq!(std::fs::read_dir(&sb.dest).unwrap().count(), 1);
    assert!(!sb.dir.join("pre-ran").exists() && !sb.dir.join("success-ran").exists());
}

fn tar_entry(name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    {
        let b = h.as_old_mut();
        b.name[..name.len()].copy_from_slice(name.as_bytes());
        b.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test]
async fn http_404_and_hostile_tarballs_change_nothing() {
    let files = Files::start().await;
    let sb = Sandbox::new("hostile");
    std::fs::write(sb.dest.join("live.txt"), "v1").unwrap();
    let deploy = |src: String, sum: String| {
        format!(
            "src: {src}\nchecksum: {sum}\ndest: {}\ncommands:\n  failure:\n    - cat > {}/failure.log\n",
            sb.dest.display(),
            sb.dir.display()
        )
    };
    // A 404 is a fetch error (stretcher would have hashed the error page).
    let r = agent(
        &sb.dir,
        &sb.write_manifest(&deploy(
            format!("{}/missing.tar", files.url),
            "0".repeat(40),
        )),
        &[],
        &[],
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("HTTP 404"), "{}", r.stderr);
    assert!(sb.read("failure.log").unwrap().contains("404"));

    use tar::EntryType as T;
    let outside = sb.dir.join("escaped");
    for (i, (name, kind, link, needle)) in [
        ("../escaped", T::Regular, "", "`..`"),
        (&*outside.to_string_lossy(), T::Regular, "", "absolute"),
        ("ln", T::Symlink, &*sb.dir.to_string_lossy(), "outside"),
        ("up/ln", T::Symlink, "../../..", "outside"),
        ("hard", T::Link, "../escaped", "outside"),
        ("null", T::Char, "", "device"),
    ]
    .into_iter()
    .enumerate()
    {
        // A good file first: it must not reach dest either.
        let mut tar = tar_entry("good.txt", T::Regular, "", b"good");
        tar.extend(tar_entry(name, kind, link, b"evil"));
        tar.extend([0u8; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let tgz = gz.finish().unwrap();
        let url = files.add(&format!("hostile{i}.tar.gz"), tgz.clone());
        let r = agent(
            &sb.dir,
            &sb.write_manifest(&deploy(url, sha256_hex(&tgz))),
            &[],
            &[],
        )
        .await;
        assert_eq!(r.code, 1, "{name}");
        assert!(r.stderr.contains("archive refused"), "{name}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{name}: {}", r.stderr);
        assert!(!outside.exists(), "{name}");
        let entries: Vec<_> = std::fs::read_dir(&sb.dest)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            entries,
            vec![std::ffi::OsString::from("live.txt")],
            "{name}"
        );
    }
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn consul_events(events: &[(&str, u64, &str)]) -> String {
    let list: Vec<serde_json::Value> = events
        .iter()
        .map(|(id, ltime, payload)| {
            serde_json::json!({"ID": id, "Name": "deploy", "LTime": ltime, "Version": 1,
                "TagFilter": "", "ServiceFilter": "", "NodeFilter": "", "Payload": b64(payload.as_bytes())})
        })
        .collect();
    serde_json::to_string(&list).unwrap() + "\n"
}

#[tokio::test]
async fn consul_events_are_applied_once_even_after_restart() {
    let sb = Sandbox::new("consul");
    let text = format!(
        "src: file://{d}/testdata/test.tar\nchecksum: {TEST_TAR_SHA1}\ndest: {}\ncommands:\n  post:\n    - echo applied >> {d}/count\n",
        sb.dest.display(),
        d = sb.dir.display()
    );
    let url = sb.write_manifest(&text);
    let stdin = consul_events(&[("old", 1, "file:///nonexistent.yml"), ("ev-2", 2, &url)]);
    let env = [("CONSUL_INDEX", "42")];
    let r = agent(&sb.dir, &stdin, &[], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("Consul event ID: ev-2"));
    // A new process with the same state file: the same event is not applied again.
    let r = agent(&sb.dir, &stdin, &[], &env).await;
    assert_eq!(r.code, 0);
    assert!(
        r.stderr.contains("ev-2 was already applied"),
        "{}",
        r.stderr
    );
    assert_eq!(sb.read("count").as_deref(), Some("applied\n"));
    // An empty watch fire and a failing deploy exit 0 under consul watch, 1 without.
    let r = agent(&sb.dir, "[]", &[], &env).await;
    assert_eq!(r.code, 0);
    assert!(r.stderr.contains("No Consul events found"));
    let r = agent(&sb.dir, "[]", &[], &[]).await;
    assert_eq!(r.code, 1);
    let bad = consul_events(&[("ev-3", 3, "file:///nonexistent.yml")]);
    assert_eq!(agent(&sb.dir, &bad, &[], &env).await.code, 0);
}

pub async fn deploy_job(c: &Corral) -> i64 {
    crate::support::corral::insert_job(
        c.app.store.as_ref(),
        corral::job::JobKind::Deploy,
        "/deploy file:///m.yml --target serf",
        "U0TEST",
        corral::door::Source::Api,
        None,
    )
    .await
    .id
}

#[tokio::test]
async fn agent_reports_to_the_bot() {
    let c = Corral::start().await;
    let job = deploy_job(&c).await;
    let sb = Sandbox::new("report");
    let ok = sb.manifest("test-deploy-commands-success.yml");
    let r = agent(
        &sb.dir,
        &format!("{ok}#corral-job={job}\n"),
        &["--report-url", &c.url, "--host", "web-1"],
        &[("CORRAL_REPORT_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("Reported succeeded"), "{}", r.stderr);
    let fail = sb.manifest("test-deploy-commands-fail.yml");
    let r = agent(
        &sb.dir,
        &format!("{fail}#corral-job={job}"),
        &[
            "-report-url",
            &format!("{}/api/v1/deploys/{{job}}/reports", c.url),
        ],
        &[("CORRAL_API_TOKEN", TOKEN), ("SERF_SELF_NAME", "web-2")],
    )
    .await;
    assert_eq!(r.code, 1);
    let reports = c.app.store.deploy_reports(job).await.unwrap();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!((reports[0].host.as_str(), reports[0].ok), ("web-1", true));
    let web2 = reports.iter().find(|r| r.host == "web-2").unwrap();
    assert!(!web2.ok);
    assert!(web2.error.as_deref().unwrap().contains("exit status 1"));
    assert!(web2.log_tail.contains("pre 1"), "{}", web2.log_tail);

    // The endpoint's refusals.
    let post = |path: String, body: &'static str, token: Option<&'static str>| {
        let mut req = c.http.post(format!("{}{path}", c.url)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await.unwrap();
            let s = resp.status().as_u16();
            (
                s,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let good = r#"{"host":"web-3","status":"succeeded","duration_ms":5,"log_tail":"x"}"#;
    let p = format!("/api/v1/deploys/{job}/reports");
    assert_eq!(post(p.clone(), good, None).await.0, 401);
    assert_eq!(post(p.clone(), good, Some("wrong")).await.0, 401);
    assert_eq!(post(p.clone(), good, Some(TOKEN)).await.0, 201);
    let (s, v) = post(p.clone(), good, Some(TOKEN)).await;
    assert_eq!(s, 409);
    assert!(v["error"].as_str().unwrap().contains("already reported"));
    for (body, needle) in [
        ("not json", "body must be JSON"),
        (
            r#"{"host":"","status":"succeeded","duration_ms":1}"#,
            "host must be",
        ),
        (
            r#"{"host":"a b","status":"succeeded","duration_ms":1}"#,
            "host must be",
        ),
        (
            r#"{"host":"x","status":"maybe","duration_ms":1}"#,
            "status must be",
        ),
        (
            r#"{"host":"x","status":"failed","duration_ms":-1}"#,
            "body must be JSON",
        ),
    ] {
        let (s, v) = post(p.clone(), body, Some(TOKEN)).await;
        assert_eq!(s, 400, "{body}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
    assert_eq!(
        post("/api/v1/deploys/999/reports".into(), good, Some(TOKEN))
            .await
            .0,
        404
    );
    assert_eq!(
        post("/api/v1/deploys/x/reports".into(), good, Some(TOKEN))
            .await
            .0,
        400
    );
}

/// A local S3-compatible server (moto).
async fn start_moto() -> crate::support::pyserver::PyServer {
    crate::support::pyserver::start(&["moto.server", "-H", "127.0.0.1", "-p", "{port}"]).await
}

const S3_ENV: [(&str, &str); 4] = [
    ("AWS_ALLOW_HTTP", "true"),
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
];

#[tokio::test]
async fn s3_manifest_and_src() {
    let moto = start_moto().await;
    let http = corral::http_client().unwrap();
    assert!(
        http.put(format!("{}/releases", moto.url))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&moto.url)
        .with_allow_http(true)
        .with_bucket_name("releases")
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();
    use object_store::ObjectStoreExt;
    let sb = Sandbox::new("s3");
    let tar = std::fs::read(sb.dir.join("testdata/test.tar")).unwrap();
    store
        .put(&"app/v1/test.tar".into(), tar.into())
        .await
        .unwrap();
    let manifest = format!(
        "src: s3://releases/app/v1/test.tar\nchecksum: {TEST_TAR_SHA1}\ndest: {}\n",
        sb.dest.display()
    );
    store
        .put(&"app/v1/deploy.yml".into(), manifest.into_bytes().into())
        .await
        .unwrap();
    let mut env = S3_ENV.to_vec();
    env.push(("AWS_ENDPOINT_URL", &moto.url));
    let r = agent(&sb.dir, "s3://releases/app/v1/deploy.yml\n", &[], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.read("dest/foo/baz").as_deref(), Some("baz\n"));
    // A missing key is a clear fetch error, retried like any other.
    let r = agent(&sb.dir, "s3://releases/app/v2/deploy.yml\n", &[], &env).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("load manifest failed: GET s3://releases/app/v2/deploy.yml"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
}

#[tokio::test]
async fn sigterm_while_waiting_for_stdin_ends_the_run() {
    let sb = Sandbox::new("sigterm");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("agent")
        .env_remove("CONSUL_INDEX")
        .env("CORRAL_AGENT_STATE", sb.dir.join("state"))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Keep stdin open: the agent waits for its event.
    let _stdin = child.stdin.take();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap() as i32;
    // SAFETY: signals our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let out = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
        .await
        .expect("the agent stopped")
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("context canceled"));
}
