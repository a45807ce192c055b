//! `/upgrade catalog:template:version` end to end: App::handle → job → catalog upgrade
//! against the fake Rancher, with a recording chat standing in for Slack.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use corral::app::{App, Outcome as ReplyOutcome, Request, Source};
use corral::chat::Message;
use corral::chat::{Chat, ChatError};
use corral::command::{Command, ReleaseCmd, parse_slash};
use corral::config::{Config, Env};
use corral::job::{JobStatus, Outcome};
use corral::rancher::catalog::Detail;
use serde_json::Value;

use crate::support::fake_rancher::{ACCESS_KEY, FakeRancher, Fault, SECRET_KEY};

/// Records what would be posted to Slack.
#[derive(Default)]
pub struct RecordingChat {
    pub posts: Mutex<Vec<(String, Option<String>, String)>>,
    pub edits: Mutex<Vec<String>>,
}

#[async_trait]
impl Chat for RecordingChat {
    async fn post(
        &self,
        channel: &str,
        thread: Option<&str>,
        msg: &Message,
    ) -> Result<String, ChatError> {
        let mut p = self.posts.lock().unwrap();
        p.push((channel.into(), thread.map(str::to_string), msg.text.clone()));
        Ok(format!("1.{:06}", p.len()))
    }
    async fn update(&self, _c: &str, _ts: &str, msg: &Message) -> Result<(), ChatError> {
        self.edits.lock().unwrap().push(msg.text.clone());
        Ok(())
    }
    async fn ephemeral(&self, _c: &str, _u: &str, _m: &Message) -> Result<(), ChatError> {
        Ok(())
    }
}

const DC: &str = "version: '2'\nservices:\n  web:\n    image: myorg/web:2.0.0\n";
const RC: &str = "version: '2'\ncatalog:\n  name: web\n  version: 2.0.0\n";

/// A fake with the template `library:my_web` at revisions 1, 2, 9, 10, 11.
async fn fake() -> FakeRancher {
    let f = FakeRancher::start().await;
    f.add_template(
        "library",
        "my_web",
        &[
            (
                "1",
                "1.0.0",
                &[
                    ("docker-compose.yml", "old"),
                    ("rancher-compose.yml", "old"),
                ],
            ),
            ("2", "1.1.0", &[("docker-compose.yml", "old")]),
            ("9", "1.9.0", &[("docker-compose.yml", "old")]),
            (
                "10",
                "2.0.0",
                &[
                    ("docker-compose.yml", DC),
                    ("rancher-compose.yml", RC),
                    ("README.md", "hi"),
                ],
            ),
            ("11", "2.1.0", &[("docker-compose.yml", "new")]),
        ],
    );
    f.set_action_time("upgrade", Duration::from_millis(40));
    f.set_default_action_time(Duration::from_millis(10));
    f
}

fn config(fake: &FakeRancher, extra: &[(&str, &str)]) -> Config {
    let mut pairs = vec![
        ("RANCHER_URL", format!("{}/v1", fake.url)),
        ("RANCHER_ACCESS_KEY", ACCESS_KEY.into()),
        ("RANCHER_SECRET_KEY", SECRET_KEY.into()),
        ("CORRAL_CHANNEL", "C0REL".into()),
        ("CORRAL_RANCHER_RATE", "2000".into()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let mut c = Config::from_env(&Env::from_pairs(pairs)).expect("config");
    c.rancher.poll_interval = Duration::from_millis(20);
    c.rancher.upgrade_timeout = Duration::from_secs(5);
    c
}

async fn app(config: Config, chat: Arc<RecordingChat>) -> Arc<App> {
    crate::support::corral::start_app(
        Arc::new(config),
        corral::store::open("sqlite::memory:").await.expect("store"),
        chat,
    )
}

fn upgrade(text: &str) -> Request {
    Request {
        command: parse_slash("/upgrade", text).expect("valid command"),
        user: "U0ALICE".into(),
        source: Source::Slack,
        channel: Some("C0REL".into()),
    }
}

/// Runs a command to its end; returns the job's status and outcome.
async fn run(app: &App, text: &str) -> (JobStatus, Outcome) {
    let reply = app.handle(upgrade(text)).await;
    let job = reply
        .job
        .unwrap_or_else(|| panic!("no job: {}", reply.text));
    tokio::time::timeout(Duration::from_secs(20), app.runner.wait(job.id))
        .await
        .expect("the job ends");
    crate::support::corral::delivered(app).await;
    let rec = app.store.job(job.id).await.unwrap().unwrap();
    (rec.status, rec.outcome.expect("outcome stored"))
}

fn detail(o: &Outcome) -> Detail {
    Detail::from_outcome(o).expect("catalog detail")
}

fn ext(f: &FakeRancher, id: &str) -> String {
    f.resource(id).unwrap()["externalId"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn upgrade_matrix() {
    let f = fake().await;
    let prod = f.add_project("prod");
    let staging = f.add_project("staging");
    let other = f.add_project("other");
    let a = f.add_stack(&prod, "a-lower", "catalog://library:my_web:1");
    let b = f.add_stack(&prod, "b-nine", "catalog://library:my_web:9");
    let c = f.add_stack(&prod, "c-equal", "catalog://library:my_web:10");
    let d = f.add_stack(&prod, "d-higher", "catalog://library:my_web:11");
    // The server's LIKE reads `_` as a wildcard: this one comes back and must be dropped.
    f.add_stack(&prod, "e-like", "catalog://library:myXweb:1");
    f.add_stack(&prod, "f-taco", "catalog://library:my_web:taco");
    f.add_stack(&prod, "g-extra", "catalog://library:my_web:1:2");
    f.add_stack(&prod, "handmade", "");
    let h = f.add_stack(&staging, "h", "catalog://library:my_web:2");
    let i = f.add_stack(&other, "i", "catalog://library:my_web:1");
    let chat = Arc::new(RecordingChat::default());
    let app = app(config(&f, &[]), chat.clone()).await;

    let (status, o) = run(&app, "library:my_web:2.0.0 --env ^(prod|staging)$").await;
    assert_eq!(status, JobStatus::Succeeded, "{o:?}");
    assert_eq!((o.succeeded, o.failed.len(), o.skipped), (3, 0, 5), "{o:?}");
    let d_ = detail(&o);
    assert_eq!(d_.template_version_id, "library:my_web:10");
    assert_eq!(d_.environments, vec!["prod", "staging"]);
    let by_name = |n: &str| d_.stacks.iter().find(|s| s.name == n).cloned().unwrap();
    assert_eq!(by_name("a-lower").status, "upgraded");
    assert_eq!(by_name("a-lower").upgraded_to, "2.0.0");
    assert_eq!(by_name("b-nine").status, "upgraded", "9 < 10 as numbers");
    assert_eq!(by_name("c-equal").error, "already at 2.0.0");
    assert_eq!(by_name("d-higher").error, "at a newer version (2.1.0)");
    assert!(by_name("f-taco").error.contains("cannot be compared"));
    assert!(
        by_name("g-extra")
            .error
            .starts_with("unparseable externalId")
    );
    // The server's LIKE returned it; it stays in the plan with the reason.
    assert_eq!(
        by_name("e-like").error,
        "from another template (`library:myXweb`)"
    );
    assert!(d_.stacks.iter().all(|s| s.name != "handmade"));

    for id in [&a, &b, &h] {
        assert_eq!(ext(&f, id), "catalog://library:my_web:10");
    }
    assert_eq!(ext(&f, &c), "catalog://library:my_web:10");
    assert_eq!(ext(&f, &d), "catalog://library:my_web:11");
    assert_eq!(
        ext(&f, &i),
        "catalog://library:my_web:1",
        "filtered environment untouched"
    );
    // The upgrade request: the version's files, the stack's own answers.
    let posts = f.posts();
    let up = posts
        .iter()
        .find(|p| p.action().as_deref() == Some("upgrade"))
        .unwrap();
    let body = up.json();
    assert_eq!(body["externalId"], "catalog://library:my_web:10");
    assert_eq!(body["dockerCompose"], DC);
    assert_eq!(body["rancherCompose"], RC);
    assert_eq!(body["environment"]["PORT"], "80");
    assert_eq!(
        posts
            .iter()
            .filter(|p| p.action().as_deref() == Some("upgrade"))
            .count(),
        3
    );
    assert_eq!(
        posts
            .iter()
            .filter(|p| p.action().as_deref() == Some("finishupgrade"))
            .count(),
        3
    );
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(f.state_of(&a), "active");
    assert_eq!(f.resource(&a).unwrap()["previousExternalId"], Value::Null);

    // Slack: root, plan first, one reply per environment with work, summary.
    let thread = chat.posts.lock().unwrap().clone();
    assert!(thread[0].1.is_none(), "root first");
    assert!(thread[1].2.starts_with("*Plan:*"), "{}", thread[1].2);
    assert!(
        thread[1].2.contains("3 to change, 5 skipped"),
        "{}",
        thread[1].2
    );
    assert!(thread[1].2.contains("already at 2.0.0"));
    assert_eq!(thread.len(), 5, "{thread:#?}");
    assert!(thread.iter().any(|t| t.2.contains("*prod*: 2 done")));
    assert!(
        thread
            .last()
            .unwrap()
            .2
            .contains("3 stacks upgraded to 2.0.0 in 2 environments")
    );
    // The root's newest state: its last edit, or the post itself when the outbox sent the
    // root only after the job had ended (edits of a waiting post fold into it).
    let root_now = chat
        .edits
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap_or_else(|| thread[0].2.clone());
    assert!(root_now.contains("succeeded"), "{root_now}");
}

#[tokio::test]
async fn version_by_folder_id_and_dry_run_sends_no_post() {
    let f = fake().await;
    let prod = f.add_project("prod");
    let a = f.add_stack(&prod, "a", "catalog://library:my_web:1");
    let chat = Arc::new(RecordingChat::default());
    let app = app(config(&f, &[]), chat.clone()).await;
    let (status, o) = run(&app, "library:my_web:10 --dry-run").await;
    assert_eq!(status, JobStatus::Succeeded);
    assert!(
        o.summary
            .starts_with("dry run: 1 stack in 1 environment would be upgraded to 2.0.0"),
        "{}",
        o.summary
    );
    assert_eq!(detail(&o).stacks[0].status, "planned");
    assert!(f.posts().is_empty(), "{:?}", f.posts());
    assert_eq!(ext(&f, &a), "catalog://library:my_web:1");
    let thread = chat.posts.lock().unwrap().clone();
    assert!(thread[1].2.contains("1.0.0 → 2.0.0"), "{}", thread[1].2);
    assert!(thread.iter().any(|t| t.2.contains("Dry run")));
}

#[tokio::test]
async fn stuck_stack_is_rolled_back_after_its_deadline_and_others_go_on() {
    let f = fake().await;
    let prod = f.add_project("prod");
    let ok = f.add_stack(&prod, "ok", "catalog://library:my_web:1");
    let stuck = f.add_stack(&prod, "stuck", "catalog://library:my_web:1");
    f.fail(
        &stuck,
        "upgrade",
        Fault::stuck("yaml: line 3: mapping values are not allowed"),
    );
    let mut cfg = config(&f, &[]);
    cfg.rancher.upgrade_timeout = Duration::from_millis(300);
    let app = app(cfg, Arc::new(RecordingChat::default())).await;
    let t = Instant::now();
    let (status, o) = run(&app, "library:my_web:2.0.0").await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(status, JobStatus::Failed);
    assert_eq!(o.succeeded, 1);
    assert_eq!(o.failed.len(), 1);
    let reason = &o.failed[0].reason;
    assert!(
        reason.contains("did not reach `upgraded` within"),
        "{reason}"
    );
    assert!(reason.contains("yaml: line 3"), "{reason}");
    assert!(reason.contains("rolled back"), "{reason}");
    assert_eq!(ext(&f, &ok), "catalog://library:my_web:10");
    assert!(
        f.posts()
            .iter()
            .any(|p| p.action().as_deref() == Some("rollback") && p.uri.contains(&stuck))
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(f.state_of(&stuck), "active");
    assert_eq!(ext(&f, &stuck), "catalog://library:my_web:1");
}

#[tokio::test]
async fn failing_stacks_are_reported_with_rancher_words_and_do_not_stop_the_others() {
    let f = fake().await;
    let prod = f.add_project("prod");
    let staging = f.add_project("staging");
    let mut good = Vec::new();
    for n in 0..4 {
        good.push(f.add_stack(&prod, &format!("p{n}"), "catalog://library:my_web:1"));
        good.push(f.add_stack(&staging, &format!("s{n}"), "catalog://library:my_web:2"));
    }
    f.add_stack(&prod, "refused", "catalog://library:my_web:1");
    f.fail(
        "refused",
        "upgrade",
        Fault::reject_422("InvalidState", "Stack is in use"),
    );
    f.add_stack(&prod, "crash", "catalog://library:my_web:1");
    f.fail("crash", "upgrade", Fault::server_error());
    f.add_stack(&staging, "broken", "catalog://library:my_web:1");
    f.fail(
        "broken",
        "upgrade",
        Fault::Error {
            message: "service web: image not found".into(),
        },
    );
    let busy = f.add_stack(&staging, "busy", "catalog://library:my_web:1");
    f.patch(&busy, serde_json::json!({"state": "upgraded"}));
    let app = app(config(&f, &[]), Arc::new(RecordingChat::default())).await;
    let (status, o) = run(&app, "library:my_web:2.0.0").await;
    assert_eq!(status, JobStatus::Failed);
    assert_eq!(o.succeeded, 8, "{o:?}");
    let reason = |t: &str| {
        o.failed
            .iter()
            .find(|x| x.target == t)
            .unwrap()
            .reason
            .clone()
    };
    assert_eq!(
        reason("refused"),
        "upgrade refused: Rancher 422 InvalidState: Stack is in use"
    );
    assert!(
        reason("crash").starts_with("upgrade refused: Rancher 500"),
        "{}",
        reason("crash")
    );
    assert!(
        reason("broken").contains("service web: image not found"),
        "{}",
        reason("broken")
    );
    assert!(
        reason("broken").contains("rolled back"),
        "{}",
        reason("broken")
    );
    assert!(reason("busy").contains("not in an upgradeable state (state `upgraded`)"));
    for id in &good {
        assert_eq!(ext(&f, id), "catalog://library:my_web:10");
    }
    assert!(
        o.summary.contains("8 of 12 stacks upgraded"),
        "{}",
        o.summary
    );
}

#[tokio::test]
async fn pages_past_100_stacks_and_few_requests_per_stack() {
    let f = fake().await;
    let prod = f.add_project("prod");
    for n in 0..150 {
        f.add_stack(&prod, &format!("s{n:03}"), "catalog://library:my_web:1");
    }
    let app = app(config(&f, &[]), Arc::new(RecordingChat::default())).await;
    let (status, o) = run(&app, "library:my_web:2.0.0").await;
    assert_eq!(status, JobStatus::Succeeded, "{o:?}");
    assert_eq!(o.succeeded, 150);
    assert!(f.requests().iter().any(|r| r.uri.contains("marker=m100")));
    let reqs = f.requests().len() as f64;
    assert!(reqs / 150.0 < 3.0, "{reqs} requests for 150 stacks");
}

#[tokio::test]
async fn refused_while_releases_are_blocked() {
    let f = fake().await;
    let prod = f.add_project("prod");
    f.add_stack(&prod, "a", "catalog://library:my_web:1");
    let app = app(config(&f, &[]), Arc::new(RecordingChat::default())).await;
    let block = Request {
        command: Command::Release(ReleaseCmd::Block {
            reason: "freeze".into(),
        }),
        user: "U0BOB".into(),
        source: Source::Slack,
        channel: Some("C0REL".into()),
    };
    assert_eq!(app.handle(block).await.outcome, ReplyOutcome::Ok);
    let reply = app.handle(upgrade("library:my_web:2.0.0")).await;
    assert_eq!(reply.outcome, ReplyOutcome::Refused);
    assert!(reply.job.is_none());
    assert!(
        reply.text.to_lowercase().contains("block"),
        "{}",
        reply.text
    );
    assert!(f.requests().is_empty());
}

#[tokio::test]
async fn plan_errors_name_the_problem() {
    let f = fake().await;
    let app_ = app(config(&f, &[]), Arc::new(RecordingChat::default())).await;
    // No environments.
    let (status, o) = run(&app_, "library:my_web:2.0.0").await;
    assert_eq!(status, JobStatus::Failed);
    let e = detail(&o).error.unwrap();
    assert_eq!(
        (e.status, e.msg.as_str()),
        (500, "No environments could be found")
    );
    f.add_project("prod");
    // Unknown version.
    let (_, o) = run(&app_, "library:my_web:7.7.7").await;
    let e = detail(&o).error.unwrap();
    assert_eq!(
        (e.status, e.msg.as_str()),
        (404, "url not found for template")
    );
    assert!(
        o.summary
            .contains("has no version `7.7.7`; it has: 1.0.0 (id 1)"),
        "{}",
        o.summary
    );
    // Unknown template: the catalog's own status and message.
    let (_, o) = run(&app_, "library:nope:1").await;
    let e = detail(&o).error.unwrap();
    assert_eq!((e.status, e.msg.as_str()), (404, "Template not found"));
    // Not configured at all.
    let bare = Config::from_env(&Env::from_pairs([("CORRAL_CHANNEL", "C0REL")])).unwrap();
    let app_ = app(bare, Arc::new(RecordingChat::default())).await;
    let (status, o) = run(&app_, "library:my_web:2.0.0").await;
    assert_eq!(status, JobStatus::Failed);
    assert!(o.summary.contains("RANCHER_URL"), "{}", o.summary);
}

#[tokio::test]
async fn stale_reads_removed_stacks_and_canceled_upgrades() {
    let f = fake().await;
    let prod = f.add_project("prod");
    // A stack left in canceled-upgrade may be upgraded again; an older read showing that
    // state must not be taken for the new upgrade's end.
    let again = f.add_stack(&prod, "again", "catalog://library:my_web:1");
    f.patch(&again, serde_json::json!({"state": "canceled-upgrade"}));
    let gone = f.add_stack(&prod, "gone", "catalog://library:my_web:1");
    f.fail(&gone, "upgrade", Fault::stuck("pulling images"));
    let f2 = f.clone();
    let gone2 = gone.clone();
    // Removed once its upgrade was asked for (not after a fixed delay: on a loaded machine
    // the plan may take longer than any delay, and a stack removed before it is planned
    // is simply not part of the job).
    tokio::spawn(async move {
        let upgrade_asked = |f: &FakeRancher| {
            f.posts()
                .iter()
                .any(|p| p.uri.contains(&gone2) && p.action().as_deref() == Some("upgrade"))
        };
        while !upgrade_asked(&f2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        f2.patch(&gone2, serde_json::json!({"state": "removed"}));
    });
    let app = app(config(&f, &[]), Arc::new(RecordingChat::default())).await;
    let t = Instant::now();
    let (status, o) = run(&app, "library:my_web:2.0.0").await;
    // The upgrade deadline is 5 s (`config`): ending well before it means the removal,
    // not the deadline, ended the wait.
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "a removed stack is not waited for until its deadline"
    );
    assert_eq!(status, JobStatus::Failed);
    assert_eq!(o.succeeded, 1, "{o:?}");
    assert_eq!(ext(&f, &again), "catalog://library:my_web:10");
    assert!(
        o.failed[0].reason.contains("no longer listed"),
        "{:?}",
        o.failed
    );
}

#[tokio::test]
async fn an_unreadable_environment_is_reported_and_the_others_go_on() {
    let f = fake().await;
    let good = f.add_project("good");
    let bad = f.add_project("bad");
    let a = f.add_stack(&good, "a", "catalog://library:my_web:1");
    f.add_stack(&bad, "b", "catalog://library:my_web:1");
    f.answer_requests(
        Some("GET"),
        &format!("/projects/{bad}/stacks"),
        200,
        "<html>login</html>",
        1,
    );
    let app = app(config(&f, &[]), Arc::new(RecordingChat::default())).await;
    let (status, o) = run(&app, "library:my_web:2.0.0").await;
    assert_eq!(status, JobStatus::Failed);
    assert_eq!(o.succeeded, 1);
    assert_eq!(ext(&f, &a), "catalog://library:my_web:10");
    assert_eq!(o.failed.len(), 1);
    assert_eq!(o.failed[0].group, "bad");
    assert!(
        o.failed[0].reason.contains("cannot be read"),
        "{:?}",
        o.failed
    );
    // go-cowpoke's endpoint would answer 500 for this run.
    let (code, reply) = corral::api::cowpoke::cowpoke_reply(&o, &detail(&o));
    assert_eq!(code.as_u16(), 500);
    assert_eq!(reply.results.len(), 1);
}

#[tokio::test]
async fn a_5xx_on_the_upgrade_post_is_settled_by_reading_the_stack() {
    let f = fake().await;
    let prod = f.add_project("prod");
    // Rancher starts this upgrade but answers 500 (a proxy timing out, a server failing
    // after its transaction).
    let started = f.add_stack(&prod, "flaky", "catalog://library:my_web:1");
    f.fail(&started, "upgrade", Fault::started_then_500());
    // Here the 500 means what it says: nothing started.
    let crashed = f.add_stack(&prod, "crashed", "catalog://library:my_web:1");
    f.fail(&crashed, "upgrade", Fault::server_error());
    let chat = Arc::new(RecordingChat::default());
    let app = app(config(&f, &[]), chat.clone()).await;
    let (status, o) = run(&app, "library:my_web:2.0.0").await;
    assert_eq!(status, JobStatus::Failed, "{o:?}");
    assert_eq!(o.succeeded, 1, "{o:?}");
    assert_eq!(o.failed.len(), 1, "{o:?}");
    // The started one: watched to its end, finished, reported once as upgraded.
    assert_eq!(ext(&f, &started), "catalog://library:my_web:10");
    let on = |id: &str, action: &str| {
        f.posts()
            .iter()
            .filter(|p| p.uri.contains(id) && p.action().as_deref() == Some(action))
            .count()
    };
    assert_eq!(on(&started, "upgrade"), 1, "an upgrade is never sent twice");
    assert_eq!(on(&started, "finishupgrade"), 1);
    let d = detail(&o);
    let lines: Vec<_> = d.stacks.iter().filter(|s| s.id == started).collect();
    assert_eq!(lines.len(), 1, "{:?}", d.stacks);
    assert_eq!(
        (lines[0].status.as_str(), lines[0].upgraded_to.as_str()),
        ("upgraded", "2.0.0")
    );
    // The crashed one: failed with Rancher's words, nothing to undo.
    assert_eq!(o.failed[0].target, "crashed");
    let reason = &o.failed[0].reason;
    assert!(
        reason.starts_with("upgrade refused: Rancher 500 Internal Server Error"),
        "{reason}"
    );
    assert!(reason.contains("unchanged"), "{reason}");
    assert_eq!(on(&crashed, "upgrade"), 1);
    assert_eq!(on(&crashed, "rollback") + on(&crashed, "cancelupgrade"), 0);
    assert_eq!(ext(&f, &crashed), "catalog://library:my_web:1");
    assert_eq!(f.state_of(&crashed), "active");
    // The thread counts each stack once: the flaky one done, the crashed one failed.
    let thread = chat.posts.lock().unwrap().clone();
    let group: Vec<_> = thread.iter().filter(|t| t.2.contains("*prod*:")).collect();
    assert_eq!(group.len(), 1, "{thread:#?}");
    assert!(group[0].2.contains("1 done, 1 failed"), "{}", group[0].2);
    assert!(group[0].2.contains("• crashed"), "{}", group[0].2);
    assert!(!group[0].2.contains("• flaky"), "{}", group[0].2);
}

#[tokio::test]
async fn a_catalog_added_to_one_environment_is_found_there_and_not_in_others() {
    let f = fake().await;
    let team = f.add_project("team");
    let other = f.add_project("other");
    f.add_template_in(
        &team,
        "teamcat",
        "api",
        &[
            ("1", "1.0.0", &[("docker-compose.yml", "old")]),
            ("2", "2.0.0", &[("docker-compose.yml", DC)]),
        ],
    );
    let mine = f.add_stack(&team, "api", "catalog://teamcat:api:1");
    // A stack claiming the same catalog where that catalog does not exist.
    let stray = f.add_stack(&other, "api", "catalog://teamcat:api:1");
    let app = app(config(&f, &[]), Arc::new(RecordingChat::default())).await;
    let (status, o) = run(&app, "teamcat:api:2.0.0").await;
    assert_eq!(status, JobStatus::Succeeded, "{o:?}");
    assert_eq!((o.succeeded, o.skipped), (1, 1), "{o:?}");
    assert_eq!(ext(&f, &mine), "catalog://teamcat:api:2");
    assert_eq!(ext(&f, &stray), "catalog://teamcat:api:1");
    let d = detail(&o);
    assert_eq!(d.template_version_id, "teamcat:api:2");
    let skipped = d.stacks.iter().find(|s| s.id == stray).unwrap();
    assert_eq!(skipped.status, "skipped");
    assert!(
        skipped
            .error
            .contains("`teamcat:api` is not in this environment's catalogs"),
        "{}",
        skipped.error
    );
    // The template was asked for globally, then in each environment with its header.
    let reads: Vec<_> = f
        .requests()
        .into_iter()
        .filter(|r| r.uri.starts_with("/v1-catalog/templates/teamcat:api"))
        .collect();
    assert_eq!(reads[0].project_header, None);
    assert_eq!(reads[0].status, 404);
    for pid in [&team, &other] {
        assert!(
            reads
                .iter()
                .any(|r| r.project_header.as_deref() == Some(pid.as_str())),
            "{reads:?}"
        );
    }
    assert!(
        reads
            .iter()
            .filter(|r| r.project_header.as_deref() == Some(other.as_str()))
            .all(|r| r.status == 404)
    );
    // Only in the other environment: the template is not found anywhere.
    let (status, o) = run(&app, "teamcat:api:2.0.0 --env ^other$").await;
    assert_eq!(status, JobStatus::Failed);
    let e = detail(&o).error.unwrap();
    assert_eq!((e.status, e.msg.as_str()), (404, "Template not found"));
    assert_eq!(ext(&f, &stray), "catalog://teamcat:api:1");
}

#[tokio::test]
async fn a_global_catalog_is_read_once_for_every_environment() {
    let f = fake().await;
    for e in ["a", "b", "c"] {
        let p = f.add_project(e);
        f.add_stack(&p, "web", "catalog://library:my_web:1");
    }
    let app = app(config(&f, &[]), Arc::new(RecordingChat::default())).await;
    let (status, o) = run(&app, "library:my_web:2.0.0").await;
    assert_eq!((status, o.succeeded), (JobStatus::Succeeded, 3), "{o:?}");
    let reads: Vec<_> = f
        .requests()
        .into_iter()
        .filter(|r| r.uri.starts_with("/v1-catalog/"))
        .collect();
    assert_eq!(
        reads.len(),
        3,
        "template, target version and the stacks' current version, once each: {reads:?}"
    );
    assert!(reads.iter().all(|r| r.project_header.is_none()));
}

#[tokio::test]
async fn rollback_off_cancels_a_failed_stack_upgrade_instead() {
    let f = fake().await;
    let prod = f.add_project("prod");
    let stuck = f.add_stack(&prod, "stuck", "catalog://library:my_web:1");
    f.fail(&stuck, "upgrade", Fault::stuck("compose: no such service"));
    let mut cfg = config(&f, &[("CORRAL_ROLLBACK_ON_TIMEOUT", "false")]);
    cfg.rancher.upgrade_timeout = Duration::from_millis(300);
    let app = app(cfg, Arc::new(RecordingChat::default())).await;
    let (status, o) = run(&app, "library:my_web:2.0.0").await;
    assert_eq!(status, JobStatus::Failed);
    let reason = &o.failed[0].reason;
    assert!(
        reason.contains("did not reach `upgraded` within"),
        "{reason}"
    );
    assert!(reason.contains("compose: no such service"), "{reason}");
    assert!(reason.contains("upgrade cancelled"), "{reason}");
    assert_eq!(f.count("POST", "action=rollback"), 0);
    assert_eq!(f.count("POST", "action=cancelupgrade"), 1);
    // Rancher 1.6: cancelupgrade ends in canceled-upgrade, from where the stack can be
    // upgraded again or rolled back by hand.
    assert_eq!(f.state_of(&stuck), "canceled-upgrade");
    assert_eq!(ext(&f, &stuck), "catalog://library:my_web:1");
}
