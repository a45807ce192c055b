//! `/upgrade image <ref>` against the fake Rancher: selection by label, environment and
//! tag; the exact upgrade bodies; confirm, finish, timeout and rollback; and
//! rancher-service-updater's HTTP endpoint and the registry webhook.

use std::sync::Arc;
use std::time::Duration;

use corral::app::{App, Request, Source};
use corral::chat::Message;
use corral::chat::{Chat, ChatError};
use corral::command::{Command, parse_slash};
use corral::config::{Config, Env};
use corral::store::JobRecord;
use serde_json::{Value, json};

use crate::support::fake_rancher::{ACCESS_KEY, FakeRancher, Fault, SECRET_KEY};
use crate::support::fake_services::{self, add_service, launch_config};

const TOKEN: &str = "test-token";
const LABEL: &str = "autoupdate.enable";

struct World {
    fake: FakeRancher,
    app: Arc<App>,
}

async fn world(extra: &[(&str, &str)], tweak: impl FnOnce(&mut Config)) -> World {
    world_with(extra, tweak, Arc::new(corral::chat::LogChat::default())).await
}

async fn world_with(
    extra: &[(&str, &str)],
    tweak: impl FnOnce(&mut Config),
    chat: Arc<dyn Chat>,
) -> World {
    let fake = FakeRancher::start().await;
    fake_services::install(&fake);
    fake.set_default_action_time(Duration::from_millis(40));
    let mut pairs = vec![
        ("RANCHER_URL", fake.url.as_str()),
        ("RANCHER_ACCESS_KEY", ACCESS_KEY),
        ("RANCHER_SECRET_KEY", SECRET_KEY),
        ("CORRAL_API_TOKEN", TOKEN),
        ("CORRAL_DATABASE_URL", "sqlite::memory:"),
    ];
    pairs.extend_from_slice(extra);
    let mut config = Config::from_env(&Env::from_pairs(pairs)).expect("config");
    config.rancher.poll_interval = Duration::from_millis(15);
    config.rancher.upgrade_timeout = Duration::from_secs(5);
    tweak(&mut config);
    let store = corral::store::open("sqlite::memory:").await.expect("store");
    let app = crate::support::corral::start_app(Arc::new(config), store, chat);
    World { fake, app }
}

impl World {
    async fn run(&self, text: &str) -> JobRecord {
        let command: Command = parse_slash("/upgrade", text).expect("parses");
        let reply = self
            .app
            .handle(Request {
                command,
                user: "U0TEST".into(),
                source: Source::Cli,
                channel: None,
            })
            .await;
        let job = reply
            .job
            .unwrap_or_else(|| panic!("no job: {}", reply.text));
        self.finish(job.id).await
    }

    async fn finish(&self, id: i64) -> JobRecord {
        tokio::time::timeout(Duration::from_secs(20), self.app.runner.wait(id))
            .await
            .expect("job ends in time");
        crate::support::corral::delivered(&self.app).await;
        self.app
            .store
            .job(id)
            .await
            .expect("store")
            .expect("job stored")
    }
}

fn services(job: &JobRecord) -> Vec<Value> {
    job.outcome
        .as_ref()
        .and_then(|o| o.detail.get("services"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A service labelled for auto-update running `myorg/app:1.0`, no sidekicks.
fn labelled_app(fake: &FakeRancher, project: &str, stack: &str, name: &str) -> String {
    add_service(
        fake,
        project,
        stack,
        name,
        launch_config("docker:myorg/app:1.0", &[(LABEL, "true")]),
        json!([]),
    )
}

/// Waits (up to 2 s) for Rancher to bring a resource to `state`, and asserts it did.
async fn settles(fake: &FakeRancher, id: &str, state: &str) {
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while fake.state_of(id) != state && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.state_of(id), state, "{id}");
}

fn result_of<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|s| s["service"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list:?}"))
}

fn upgrade_posts(fake: &FakeRancher) -> Vec<crate::support::fake_rancher::Logged> {
    fake.posts()
        .into_iter()
        .filter(|p| p.action().as_deref() == Some("upgrade"))
        .collect()
}

#[tokio::test]
async fn upgrades_labelled_services_keeping_every_field() {
    let w = world(&[], |_| {}).await;
    let dev = w.fake.add_project("dev");
    let stack = w.fake.add_stack(&dev, "web", "");
    let lc = launch_config(
        "docker:nexus.example.com/frontend:v1.2.3_1",
        &[(LABEL, "true")],
    );
    let sidekicks = json!([{"name": "logger", "imageUuid": "docker:nexus.example.com/frontend:v1.2.3_1", "labels": {}}]);
    let id = add_service(
        &w.fake,
        &dev,
        &stack,
        "frontend",
        lc.clone(),
        sidekicks.clone(),
    );

    let job = w.run("image nexus.example.com/frontend:v1.2.4").await;
    let outcome = job.outcome.clone().expect("outcome");
    assert!(outcome.ok(), "{outcome:?}");
    assert_eq!(outcome.succeeded, 1);

    // Exactly one upgrade, and its launch config is what Rancher sent, byte for byte in
    // every field and value but imageUuid, sidekicks not sent.
    let posts = upgrade_posts(&w.fake);
    assert_eq!(posts.len(), 1);
    let body = posts[0].json();
    let strategy = &body["inServiceStrategy"];
    let mut expected = lc.clone();
    expected["imageUuid"] = json!("docker:nexus.example.com/frontend:v1.2.4");
    assert_eq!(strategy["launchConfig"], expected);
    assert_eq!(
        strategy["launchConfig"].as_object().map(|m| m.len()),
        lc.as_object().map(|m| m.len())
    );
    // Byte for byte: Rancher's key order (not sorted) and values, as text, with only
    // imageUuid's value replaced in place.
    let keys: Vec<&String> = lc.as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_ne!(
        keys, sorted,
        "the fixture's key order is Rancher's, not alphabetical"
    );
    let sent_text = serde_json::to_string(&lc).unwrap();
    let expected_text = sent_text.replace(
        "\"imageUuid\":\"docker:nexus.example.com/frontend:v1.2.3_1\"",
        "\"imageUuid\":\"docker:nexus.example.com/frontend:v1.2.4\"",
    );
    assert_ne!(sent_text, expected_text);
    assert!(
        posts[0]
            .body
            .contains(&format!("\"launchConfig\":{expected_text}")),
        "launch config not byte for byte:\n{}\nwanted:\n{expected_text}",
        posts[0].body
    );
    for field in [
        "secrets",
        "drainTimeoutMs",
        "runInit",
        "instanceTriggeredStop",
        "healthCheck",
        "dataVolumes",
    ] {
        assert_eq!(strategy["launchConfig"][field], lc[field], "{field}");
    }
    assert_eq!(strategy["startFirst"], json!(false));
    assert_eq!(strategy["batchSize"], json!(1));
    assert_eq!(strategy["intervalMillis"], json!(2000));
    assert!(strategy.get("secondaryLaunchConfigs").is_none());
    // Confirmed: finishupgrade sent (the job is done once Rancher accepted it, as for
    // stacks), then Rancher makes the service active on the new image, sidekick untouched.
    assert_eq!(w.fake.count("POST", "action=finishupgrade"), 1);
    settles(&w.fake, &id, "active").await;
    let svc = w.fake.resource(&id).expect("service");
    assert_eq!(svc["state"], "active");
    assert_eq!(
        svc["launchConfig"]["imageUuid"],
        "docker:nexus.example.com/frontend:v1.2.4"
    );
    assert_eq!(svc["secondaryLaunchConfigs"], sidekicks);
    let list = services(&job);
    assert_eq!(result_of(&list, "frontend")["result"], "upgraded");
    assert_eq!(result_of(&list, "frontend")["stack"], "web");
    assert_eq!(result_of(&list, "frontend")["from"], "v1.2.3_1");
}

#[tokio::test]
async fn readme_table_and_version_rules() {
    let w = world(&[], |_| {}).await;
    let dev = w.fake.add_project("dev");
    let stack = w.fake.add_stack(&dev, "s", "");
    // (service, deployed image) → requested myorg/app:<tag> in separate runs below.
    let add = |name: &str, image: &str| {
        add_service(
            &w.fake,
            &dev,
            &stack,
            name,
            launch_config(image, &[(LABEL, "true")]),
            json!([]),
        )
    };
    add("one", "docker:myorg/app:1.0");
    add("two", "docker:myorg/app:2.0");
    add("latest", "docker:myorg/app:latest");
    add("ten", "docker:myorg/app:10.0");
    add("nine", "docker:myorg/app:1.9");
    add("vee", "docker:myorg/app:v1.2");
    add("apx", "docker:myorg/apx:1.0");
    add("sha", "docker:myorg/app:abc123f");

    let job = w.run("image myorg/app:1.3 --dry-run").await;
    let list = services(&job);
    let r = |n: &str| {
        result_of(&list, n)["result"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(r("one"), "would-upgrade"); // 1.0 → 1.3
    assert_eq!(r("two"), "skipped"); // 2.0 → 1.3 no
    assert_eq!(r("latest"), "skipped"); // latest → 1.3 no
    assert_eq!(r("ten"), "skipped"); // 10.0 → 1.3 no (the updater said yes)
    assert_eq!(r("nine"), "skipped"); // 1.9 → 1.3 no
    assert_eq!(r("vee"), "would-upgrade"); // v1.2 → 1.3 yes
    assert_eq!(r("sha"), "skipped");
    assert!(
        result_of(&list, "sha")["reason"]
            .as_str()
            .unwrap_or("")
            .contains("cannot compare")
    );
    assert!(
        list.iter().all(|s| s["service"] != "apx"),
        "another repository is never a target"
    );
    assert!(
        upgrade_posts(&w.fake).is_empty(),
        "a dry run changes nothing"
    );
    assert!(w.fake.posts().is_empty());

    let job = w.run("image myorg/app:latest --dry-run").await;
    let list = services(&job);
    for n in ["one", "two", "latest", "ten", "nine", "vee", "sha"] {
        assert_eq!(
            result_of(&list, n)["result"],
            "would-upgrade",
            "{n} → latest"
        );
    }

    let job = w.run("image myorg/app:1.10 --dry-run").await;
    let list = services(&job);
    assert_eq!(result_of(&list, "nine")["result"], "would-upgrade"); // 1.9 → 1.10
    assert_eq!(result_of(&list, "ten")["result"], "skipped");
}

#[tokio::test]
async fn labels_and_environments_filter() {
    let w = world(&[("CORRAL_ENVIRONMENTS", "dev,^stage$")], |_| {}).await;
    let mut ids = Vec::new();
    for env in ["dev", "mydevbox", "stage", "staged", "prod"] {
        let p = w.fake.add_project(env);
        let st = w.fake.add_stack(&p, "app", "");
        for (name, label) in [
            ("on", Some("true")),
            ("empty", Some("")),
            ("off", Some("false")),
            ("none", None),
        ] {
            let labels: Vec<(&str, &str)> = label.map(|v| (LABEL, v)).into_iter().collect();
            ids.push(add_service(
                &w.fake,
                &p,
                &st,
                name,
                launch_config("docker:myorg/app:1.0", &labels),
                json!([]),
            ));
        }
    }
    let job = w.run("image myorg/app:2.0 --no-confirm").await;
    let list = services(&job);
    let mut got: Vec<(String, String)> = list
        .iter()
        .map(|s| {
            (
                s["environment"].as_str().unwrap_or("").into(),
                s["service"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, String)> = ["dev", "mydevbox", "stage"]
        .iter()
        .flat_map(|e| {
            [
                (e.to_string(), "empty".to_string()),
                (e.to_string(), "on".to_string()),
            ]
        })
        .collect();
    assert_eq!(got, want);
    assert!(list.iter().all(|s| s["result"] == "upgrading"));
    assert_eq!(upgrade_posts(&w.fake).len(), 6);
    assert_eq!(
        w.fake.count("POST", "action=finishupgrade"),
        0,
        "--no-confirm never finishes"
    );

    // --env narrows further.
    let w2 = world(&[], |_| {}).await;
    for env in ["dev", "prod"] {
        let p = w2.fake.add_project(env);
        let st = w2.fake.add_stack(&p, "app", "");
        add_service(
            &w2.fake,
            &p,
            &st,
            "svc",
            launch_config("docker:myorg/app:1.0", &[(LABEL, "yes")]),
            json!([]),
        );
    }
    let job = w2.run("image myorg/app:2.0 --env ^prod$ --dry-run").await;
    let list = services(&job);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["environment"], "prod");
}

#[tokio::test]
async fn invalid_environment_regex_stops_start_up() {
    let e = Config::from_env(&Env::from_pairs([("CORRAL_ENVIRONMENTS", "dev,(")]))
        .expect_err("invalid");
    assert!(e.to_string().contains("CORRAL_ENVIRONMENTS"), "{e}");
}

#[tokio::test]
async fn never_upgraded_is_rolled_back_and_others_go_on() {
    let w = world(&[], |c| c.rancher.parallelism = 4).await;
    let dev = w.fake.add_project("dev");
    let st = w.fake.add_stack(&dev, "app", "");
    let stuck = labelled_app(&w.fake, &dev, &st, "stuck");
    let fine = labelled_app(&w.fake, &dev, &st, "fine");
    w.fake
        .fail(&stuck, "upgrade", Fault::stuck("pulling image"));

    let started = std::time::Instant::now();
    let job = w.run("image myorg/app:2.0 --timeout 1").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the timeout"
    );
    let outcome = job.outcome.clone().expect("outcome");
    assert_eq!(outcome.succeeded, 1);
    assert_eq!(outcome.failed.len(), 1);
    let reason = &outcome.failed[0].reason;
    assert!(
        reason.contains("did not reach `upgraded`") && reason.contains("pulling image"),
        "{reason}"
    );
    assert!(reason.contains("rolled back"), "{reason}");
    assert_eq!(w.fake.count("POST", "action=rollback"), 1);
    let s = w.fake.resource(&stuck).expect("stuck");
    assert_eq!(
        s["launchConfig"]["imageUuid"], "docker:myorg/app:1.0",
        "rollback restored the old image"
    );
    assert_eq!(w.fake.state_of(&fine), "active");
    assert_eq!(
        w.fake.resource(&fine).expect("fine")["launchConfig"]["imageUuid"],
        "docker:myorg/app:2.0"
    );
}

#[tokio::test]
async fn no_rollback_when_configured_off_and_refusals_are_per_service() {
    let w = world(&[("CORRAL_ROLLBACK_ON_TIMEOUT", "false")], |_| {}).await;
    let dev = w.fake.add_project("dev");
    let st = w.fake.add_stack(&dev, "app", "");
    let stuck = labelled_app(&w.fake, &dev, &st, "stuck");
    let retain = labelled_app(&w.fake, &dev, &st, "retain");
    w.fake.patch(&retain, json!({"retainIp": true}));
    let busy = labelled_app(&w.fake, &dev, &st, "busy");
    w.fake.patch(&busy, json!({"state": "upgraded"}));
    w.fake.fail(&stuck, "upgrade", Fault::stuck("waiting"));

    let job = w.run("image myorg/app:2.0 --timeout 1 --start-first").await;
    let list = services(&job);
    let reason = |n: &str| {
        result_of(&list, n)["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(result_of(&list, "stuck")["result"], "failed");
    // The one undo policy: with rollback off, the upgrade is cancelled (Rancher 1.6:
    // `cancelupgrade` from `upgrading`), for services as for stacks.
    assert!(
        reason("stuck").contains("upgrade cancelled (CORRAL_ROLLBACK_ON_TIMEOUT=false"),
        "{}",
        reason("stuck")
    );
    assert!(
        reason("stuck").contains("did not reach `upgraded` within 1s"),
        "{}",
        reason("stuck")
    );
    assert_eq!(w.fake.count("POST", "action=rollback"), 0);
    assert_eq!(w.fake.count("POST", "action=cancelupgrade"), 1);
    assert_eq!(w.fake.state_of(&stuck), "canceled-upgrade");
    assert!(
        reason("retain").contains("StartFirst option can't be used"),
        "{}",
        reason("retain")
    );
    assert!(
        reason("busy").contains("not in an upgradeable state (state `upgraded`)"),
        "{}",
        reason("busy")
    );
    // start_first was sent for the one that was accepted.
    let posts = upgrade_posts(&w.fake);
    assert!(
        posts
            .iter()
            .all(|p| p.json()["inServiceStrategy"]["startFirst"] == json!(true))
    );
}

#[tokio::test]
async fn updater_endpoint_contract() {
    let w = world(&[], |_| {}).await;
    let dev = w.fake.add_project("dev");
    let st = w.fake.add_stack(&dev, "app", "");
    let id = labelled_app(&w.fake, &dev, &st, "svc");
    let router = axum::Router::new()
        .merge(corral::api::updater::routes())
        .merge(corral::api::hooks::routes())
        .with_state(w.app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let http = corral::http_client().expect("client");

    let r = http.get(format!("{base}/ping")).send().await.expect("ping");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "Pong!");

    // No token, wrong token: 401, nothing starts.
    let r = http
        .post(format!("{base}/upgrade"))
        .body(r#"{"docker_image":"myorg/app:2.0"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/upgrade"))
        .bearer_auth("nope")
        .body(r#"{"docker_image":"myorg/app:2.0"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);

    // Bad JSON: 400 with the reason.
    for (body, needle) in [
        ("{", "not valid JSON"),
        ("", "empty"),
        (r#"{"docker_image":"Bad Ref"}"#, "docker_image"),
    ] {
        let r = http
            .post(format!("{base}/upgrade"))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 400, "{body}");
        let text = r.text().await.expect("text");
        assert!(text.contains(needle), "{body}: {text}");
    }
    assert!(w.fake.posts().is_empty());

    // A good request: 202 {"job": id} at once; defaults confirm=false → started, not finished.
    let started = std::time::Instant::now();
    let r = http
        .post(format!("{base}/upgrade"))
        .bearer_auth(TOKEN)
        .body(r#"{"docker_image":"docker:myorg/app:2.0","unknown":1}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    assert!(started.elapsed() < Duration::from_secs(2));
    let v: Value = r.json().await.expect("json");
    let job_id = v["job"].as_i64().expect("job id");
    let job = w.finish(job_id).await;
    let list = services(&job);
    assert_eq!(result_of(&list, "svc")["result"], "upgrading");
    assert_eq!(w.fake.count("POST", "action=finishupgrade"), 0);
    // Rancher goes on to `upgraded` by itself; nobody finishes it.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while w.fake.state_of(&id) != "upgraded" && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(w.fake.state_of(&id), "upgraded");
    let body = upgrade_posts(&w.fake)[0].json();
    assert_eq!(body["inServiceStrategy"]["startFirst"], json!(false));

    // The webhook: Docker Hub payload signed with the token; the service is `upgraded`
    // (not finished) so Rancher refuses and the job says why for that service.
    w.fake.patch(&id, json!({"state": "active"}));
    let hub = r#"{"push_data":{"tag":"3.0","pusher":"ci"},"repository":{"repo_name":"myorg/app","name":"app"}}"#;
    // A signature over a stale timestamp (a replay) is refused and starts nothing.
    let old = (crate::support::now() - 301).to_string();
    let r = http
        .post(format!("{base}/hooks/registry"))
        .header("X-Corral-Timestamp", &old)
        .header(
            "X-Corral-Signature",
            corral::api::hooks::sign(TOKEN, &old, hub.as_bytes()),
        )
        .body(hub)
        .send()
        .await
        .expect("hook");
    assert_eq!(r.status(), 401);
    let now = crate::support::now().to_string();
    let r = http
        .post(format!("{base}/hooks/registry"))
        .header(
            "X-Corral-Signature",
            corral::api::hooks::sign(TOKEN, &now, hub.as_bytes()),
        )
        .body(hub)
        .send()
        .await
        .expect("hook");
    assert_eq!(r.status(), 401, "the timestamp header is required");
    let sig = corral::api::hooks::sign(TOKEN, &now, hub.as_bytes());
    let r = http
        .post(format!("{base}/hooks/registry"))
        .header("X-Corral-Timestamp", &now)
        .header("X-Corral-Signature", sig)
        .body(hub)
        .send()
        .await
        .expect("hook");
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.expect("json");
    let job = w.finish(v["job"].as_i64().expect("id")).await;
    let list = services(&job);
    assert_eq!(result_of(&list, "svc")["result"], "upgraded", "{list:?}");
    assert_eq!(result_of(&list, "svc")["to"], "3.0");
    assert_eq!(
        w.fake.resource(&id).expect("svc")["launchConfig"]["imageUuid"],
        "docker:myorg/app:3.0"
    );

    // Generic payload with a bad signature: 401; with the bearer token: 202.
    let r = http
        .post(format!("{base}/hooks/registry"))
        .header("X-Corral-Timestamp", crate::support::now().to_string())
        .header("X-Corral-Signature", "sha256=00")
        .body(r#"{"image":"myorg/app:4.0"}"#)
        .send()
        .await
        .expect("hook");
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/hooks/registry"))
        .bearer_auth(TOKEN)
        .body(r#"{"nothing":"here"}"#)
        .send()
        .await
        .expect("hook");
    assert_eq!(r.status(), 400);
}

/// A Slack that records (thread, text) of every post and counts edits.
#[derive(Default)]
struct Recorder {
    posts: std::sync::Mutex<Vec<(Option<String>, String)>>,
    edits: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Chat for Recorder {
    async fn post(&self, _c: &str, thread: Option<&str>, m: &Message) -> Result<String, ChatError> {
        let mut p = self.posts.lock().unwrap_or_else(|e| e.into_inner());
        p.push((thread.map(str::to_string), m.text.clone()));
        Ok(format!("1.{:06}", p.len()))
    }
    async fn update(&self, _c: &str, _ts: &str, _m: &Message) -> Result<(), ChatError> {
        self.edits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    async fn ephemeral(&self, _c: &str, _u: &str, _m: &Message) -> Result<(), ChatError> {
        Ok(())
    }
}

#[tokio::test]
async fn one_thread_per_job_and_a_failing_environment_does_not_stop_the_others() {
    let chat = Arc::new(Recorder::default());
    let w = world_with(&[("CORRAL_CHANNEL", "C0REL")], |_| {}, chat.clone()).await;
    let mut broken = String::new();
    for e in 0..4 {
        let p = w.fake.add_project(&format!("env{e}"));
        let st = w.fake.add_stack(&p, "app", "");
        for s in 0..5 {
            add_service(
                &w.fake,
                &p,
                &st,
                &format!("s{s}"),
                launch_config("docker:myorg/app:1.0", &[(LABEL, "true")]),
                json!([]),
            );
        }
        if e == 3 {
            broken = p;
        }
    }
    // Every GET of env3's services fails (retries included).
    w.fake.fail_requests(
        Some("GET"),
        &format!("/projects/{broken}/services"),
        500,
        100,
    );
    let reply = w
        .app
        .handle(Request {
            command: parse_slash("/upgrade", "image myorg/app:2.0").expect("parses"),
            user: "api".into(),
            source: Source::Api,
            channel: None,
        })
        .await;
    let job = w.finish(reply.job.expect("job").id).await;
    let outcome = job.outcome.clone().expect("outcome");
    assert_eq!(outcome.succeeded, 15);
    assert_eq!(outcome.failed.len(), 1);
    assert_eq!(outcome.failed[0].group, "env3");
    assert!(
        outcome.failed[0].reason.contains("cannot list services"),
        "{:?}",
        outcome.failed
    );

    // One root message, everything else in its thread; far fewer posts than services.
    let posts = chat.posts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let roots: Vec<_> = posts.iter().filter(|(t, _)| t.is_none()).collect();
    assert_eq!(roots.len(), 1, "{posts:?}");
    assert!(
        posts.len() <= 3 + 4 + 1,
        "{} posts for 15 services: {posts:?}",
        posts.len()
    );
    assert!(
        posts
            .iter()
            .any(|(_, t)| t.contains("env3") && t.contains("cannot list services"))
    );
}

#[tokio::test]
async fn the_lock_gate_refuses_before_anything_changes() {
    let w = world(&[], |_| {}).await;
    let dev = w.fake.add_project("dev");
    let st = w.fake.add_stack(&dev, "app", "");
    labelled_app(&w.fake, &dev, &st, "svc");
    let block = w
        .app
        .handle(Request {
            command: parse_slash("/release", "block freeze").expect("parses"),
            user: "U0ADMIN".into(),
            source: Source::Cli,
            channel: None,
        })
        .await;
    assert!(block.job.is_none());
    let router = axum::Router::new()
        .merge(corral::api::updater::routes())
        .with_state(w.app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let r = corral::http_client()
        .expect("client")
        .post(format!("{base}/upgrade"))
        .bearer_auth(TOKEN)
        .body(r#"{"docker_image":"myorg/app:2.0"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("block"),
        "{v}"
    );
    assert!(w.fake.posts().is_empty(), "nothing reached Rancher");
}

#[tokio::test]
async fn a_5xx_on_the_upgrade_post_is_settled_by_reading_the_service() {
    let w = world(&[], |_| {}).await;
    let dev = w.fake.add_project("dev");
    let st = w.fake.add_stack(&dev, "app", "");
    let flaky = labelled_app(&w.fake, &dev, &st, "flaky");
    w.fake.fail(&flaky, "upgrade", Fault::started_then_500());
    let crashed = labelled_app(&w.fake, &dev, &st, "crashed");
    w.fake.fail(&crashed, "upgrade", Fault::server_error());

    let job = w.run("image myorg/app:2.0").await;
    let outcome = job.outcome.clone().expect("outcome");
    assert_eq!(
        (outcome.succeeded, outcome.failed.len()),
        (1, 1),
        "{outcome:?}"
    );
    let list = services(&job);
    assert_eq!(list.len(), 2, "each service reported once: {list:?}");
    assert_eq!(result_of(&list, "flaky")["result"], "upgraded");
    let posts_to = |id: &str, action: &str| {
        w.fake
            .posts()
            .iter()
            .filter(|p| p.uri.contains(id) && p.action().as_deref() == Some(action))
            .count()
    };
    assert_eq!(posts_to(&flaky, "upgrade"), 1, "never sent twice");
    assert_eq!(posts_to(&flaky, "finishupgrade"), 1);
    settles(&w.fake, &flaky, "active").await;
    assert_eq!(
        w.fake.resource(&flaky).expect("flaky")["launchConfig"]["imageUuid"],
        "docker:myorg/app:2.0"
    );
    let c = result_of(&list, "crashed");
    assert_eq!(c["result"], "failed");
    let reason = c["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("upgrade refused: Rancher 500 Internal Server Error"),
        "{reason}"
    );
    assert!(reason.contains("unchanged"), "{reason}");
    assert_eq!(outcome.failed[0].target, "app/crashed");
    assert_eq!(
        posts_to(&crashed, "rollback") + posts_to(&crashed, "cancelupgrade"),
        0
    );
    assert_eq!(w.fake.state_of(&crashed), "active");
}

#[tokio::test]
async fn waiting_services_share_one_read_per_environment() {
    let w = world(&[("CORRAL_RANCHER_RATE", "2000")], |c| {
        c.rancher.poll_interval = Duration::from_millis(50)
    })
    .await;
    w.fake
        .set_action_time("upgrade", Duration::from_millis(100));
    for e in 0..2 {
        let p = w.fake.add_project(&format!("env{e}"));
        let st = w.fake.add_stack(&p, "app", "");
        for n in 0..15 {
            labelled_app(&w.fake, &p, &st, &format!("s{n:02}"));
        }
    }
    let job = w.run("image myorg/app:2.0").await;
    let outcome = job.outcome.clone().expect("outcome");
    assert_eq!(outcome.succeeded, 30, "{outcome:?}");
    let reqs = w.fake.requests();
    // No service is read on its own: waiting reads each environment's list.
    assert!(
        !reqs
            .iter()
            .any(|r| r.method == "GET" && r.uri.contains("/services/1s")),
        "{:?}",
        reqs.iter().map(|r| &r.uri).collect::<Vec<_>>()
    );
    let per_service = reqs.len() as f64 / 30.0;
    assert!(per_service < 3.0, "{} requests for 30 services", reqs.len());
}

/// Issue 9, hole 9: a signed registry hook captured and sent again inside its 300 s
/// window must not upgrade twice. The (timestamp, signature) pair is remembered in the
/// store (shared by replicas), so the copy is refused and starts nothing.
#[tokio::test]
async fn a_signed_hook_replayed_inside_its_window_runs_once() {
    let w = world(&[], |_| {}).await;
    let dev = w.fake.add_project("dev");
    let st = w.fake.add_stack(&dev, "app", "");
    labelled_app(&w.fake, &dev, &st, "svc");
    let router = corral::api::hooks::routes().with_state(w.app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let http = corral::http_client().expect("client");
    let body = r#"{"image":"myorg/app:3.1"}"#;
    let ts = crate::support::now().to_string();
    let sig = corral::api::hooks::sign(TOKEN, &ts, body.as_bytes());
    let send = || {
        http.post(format!("{base}/hooks/registry"))
            .header("X-Corral-Timestamp", &ts)
            .header("X-Corral-Signature", &sig)
            .body(body)
            .send()
    };
    let first = send().await.expect("hook");
    assert_eq!(first.status(), 202);
    let v: Value = first.json().await.expect("json");
    w.finish(v["job"].as_i64().expect("id")).await;
    // The same bytes again, 1 s later: inside the window, so only memory can refuse it.
    let replay = send().await.expect("hook");
    assert_eq!(replay.status(), 409, "a replay is refused");
    let text = replay.text().await.expect("text");
    assert!(text.contains("already"), "{text}");
    assert_eq!(
        w.app.store.jobs(10).await.expect("jobs").len(),
        1,
        "one job"
    );
    // Another push, signed anew, is a new request.
    let ts2 = (crate::support::now() + 1).to_string();
    let r = http
        .post(format!("{base}/hooks/registry"))
        .header("X-Corral-Timestamp", &ts2)
        .header(
            "X-Corral-Signature",
            corral::api::hooks::sign(TOKEN, &ts2, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .expect("hook");
    assert_eq!(r.status(), 202);
}
