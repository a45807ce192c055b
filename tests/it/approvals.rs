//! Approval buttons end to end: a policy with an `[[approval]]` rule, corral's real
//! router, the fake Slack and the fake Rancher. Clicks are signed `block_actions`
//! payloads built from the interactivity fixture.

use std::time::Duration;

use corral::job::JobStatus;
use corral::job::approval::ApprovalState;
use serde_json::Value;

use crate::support::TempDir;
use crate::support::corral::{Corral, SECRET, TOKEN};
use crate::support::fake_rancher::{ACCESS_KEY, FakeRancher, SECRET_KEY};

const FORM: &str = "application/x-www-form-urlencoded";
const DC: &str = "version: '2'\nservices:\n  web:\n    image: myorg/web:2.0.0\n  worker:\n    image: myorg/worker:${WORKER_TAG}\n";
const RC: &str = "version: '2'\n.catalog:\n  name: my_web\n  version: 2.0.0\n  questions:\n  - variable: PORT\n    type: int\n    default: 8080\n  - variable: WORKER_TAG\n    default: '2.1'\n";
const DC_OLD: &str = "version: '2'\nservices:\n  web:\n    image: myorg/web:1.0.0\n";
const RC_OLD: &str = "version: '2'\n.catalog:\n  name: my_web\n  version: 1.0.0\n  questions:\n  - variable: PORT\n    type: int\n    default: 80\n";

pub(crate) fn policy(required: u32, expires: &str) -> String {
    format!(
        r#"
[roles]
deployers = ["U0ALICE"]
approvers = ["U0BOB", "U0CAROL", "U0DAVE", "api:ci"]

[permissions]
upgrade = ["deployers"]

[[approval]]
commands     = ["upgrade"]
environments = "^prod"
approvers    = ["approvers"]
required     = {required}
expires      = "{expires}"
"#
    )
}

/// The fake Rancher: `library:my_web` at 1.0.0 and 2.0.0; two stacks in `prod`, one in
/// `staging`, all at 1.0.0.
pub(crate) async fn rancher() -> FakeRancher {
    let f = FakeRancher::start().await;
    f.add_template(
        "library",
        "my_web",
        &[
            (
                "1",
                "1.0.0",
                &[
                    ("docker-compose.yml", DC_OLD),
                    ("rancher-compose.yml", RC_OLD),
                ],
            ),
            (
                "10",
                "2.0.0",
                &[("docker-compose.yml", DC), ("rancher-compose.yml", RC)],
            ),
        ],
    );
    f.set_default_action_time(Duration::from_millis(5));
    let prod = f.add_project("prod");
    let staging = f.add_project("staging");
    f.add_stack(&prod, "web-a", "catalog://library:my_web:1");
    f.add_stack(&prod, "web-b", "catalog://library:my_web:1");
    f.add_stack(&staging, "web-c", "catalog://library:my_web:1");
    f
}

pub(crate) struct Setup {
    pub(crate) c: Corral,
    rancher: FakeRancher,
    _dir: TempDir,
}

pub(crate) async fn setup(name: &str, policy_text: &str, extra: &[(&str, &str)]) -> Setup {
    setup_on(name, policy_text, extra, corral::clock::system()).await
}

async fn setup_on(
    name: &str,
    policy_text: &str,
    extra: &[(&str, &str)],
    clock: corral::clock::SharedClock,
) -> Setup {
    let dir = TempDir::new(name);
    let path = dir.0.join("policy.toml");
    std::fs::write(&path, policy_text).unwrap();
    let rancher = rancher().await;
    let url = format!("{}/v1", rancher.url);
    let policy_path = path.display().to_string();
    let mut env = vec![
        ("RANCHER_URL", url.as_str()),
        ("RANCHER_ACCESS_KEY", ACCESS_KEY),
        ("RANCHER_SECRET_KEY", SECRET_KEY),
        ("CORRAL_RANCHER_RATE", "2000"),
        ("CORRAL_POLICY", policy_path.as_str()),
    ];
    env.extend_from_slice(extra);
    let c = Corral::start_on(&env, clock).await;
    Setup {
        c,
        rancher,
        _dir: dir,
    }
}

/// Polls the store (real time, short steps) until the job is in `status`.
pub(crate) async fn wait_status(c: &Corral, job: i64, status: JobStatus) {
    for _ in 0..400 {
        let j = c.app.store.job(job).await.unwrap().unwrap();
        if j.status == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let j = c.app.store.job(job).await.unwrap().unwrap();
    panic!(
        "job {job} is {} (wanted {status}): {:?}",
        j.status, j.outcome
    );
}

/// Requests the upgrade as Alice in Slack and waits for it to await approval.
pub(crate) async fn request(s: &Setup) -> i64 {
    let ack =
        s.c.slash_json("/upgrade", "library:my_web:2.0.0", "U0ALICE")
            .await;
    let job = s.c.app.store.jobs(1).await.unwrap()[0].id;
    assert!(ack.to_string().contains(&format!("#{job}")), "{ack}");
    wait_status(&s.c, job, JobStatus::AwaitingApproval).await;
    job
}

fn upgrades(r: &FakeRancher) -> usize {
    r.posts()
        .iter()
        .filter(|p| p.action().as_deref() == Some("upgrade"))
        .count()
}

/// A signed `block_actions` click built from the fixture.
fn click_body(c: &Corral, user: &str, action: &str, value: &str, block: &str) -> String {
    block_actions(&c.slack.webhook_url, user, action, value, block)
}

/// A `block_actions` payload (form-encoded) built from the fixture, answering through a
/// response_url of its own under `webhook_url`.
pub(crate) fn block_actions(
    webhook_url: &str,
    user: &str,
    action: &str,
    value: &str,
    block: &str,
) -> String {
    let mut p: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/slack/interactivity/block_actions.bolt_python_message.json"
        ))
        .unwrap(),
    )
    .unwrap();
    p["user"]["id"] = user.into();
    p["container"]["channel_id"] = "C0TEAM".into();
    p["container"]["is_ephemeral"] = false.into();
    p["channel"]["id"] = "C0TEAM".into();
    // Every click has a response_url of its own (each is good for 5 answers).
    static CLICKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CLICKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    p["response_url"] = format!("{webhook_url}?click={n}").into();
    // Every click has a trigger of its own (each opens one modal, once).
    p["trigger_id"] = format!("{n}.222.valid").into();
    p["actions"][0]["action_id"] = action.into();
    p["actions"][0]["value"] = value.into();
    p["actions"][0]["block_id"] = block.into();
    serde_urlencoded::to_string([("payload", p.to_string())]).unwrap()
}

async fn click_as(c: &Corral, user: &str, action: &str, job: i64) -> reqwest::Response {
    let body = click_body(
        c,
        user,
        action,
        &format!("{job}:1"),
        &format!("appr:{job}:r0"),
    );
    c.post_signed(
        "/slack/interactions",
        FORM,
        &body,
        SECRET,
        crate::support::now(),
    )
    .await
}

/// Clicks and returns what corral told the clicker (through the click's response_url).
async fn click(c: &Corral, user: &str, action: &str, job: i64) -> String {
    let before = c.slack.calls_to("webhook").len();
    let started = std::time::Instant::now();
    let r = click_as(c, user, action, job).await;
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "acked within 3 s"
    );
    c.delivered().await;
    let answers = c.slack.calls_to("webhook");
    assert_eq!(answers.len(), before + 1, "{answers:?}");
    answers[before].text().to_string()
}

fn thread_text(c: &Corral) -> String {
    c.slack
        .calls_to("chat.postMessage")
        .iter()
        .map(|m| m.text().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn last_card(c: &Corral) -> Value {
    let updates = c.slack.calls_to("chat.update");
    updates.last().map(|u| u.body.clone()).unwrap_or_default()
}

fn has_buttons(msg: &Value) -> bool {
    msg["blocks"]
        .as_array()
        .is_some_and(|b| b.iter().any(|b| b["type"] == "actions"))
}

#[tokio::test]
async fn a_production_upgrade_waits_and_only_approvers_other_than_the_requester_count() {
    let s = setup("approvals-basic", &policy(2, "1h"), &[]).await;
    let c = &s.c;
    let job = request(&s).await;
    c.delivered().await;
    assert_eq!(upgrades(&s.rancher), 0, "nothing was sent to Rancher");
    assert!(s.rancher.posts().is_empty(), "{:?}", s.rancher.posts());
    // The card: a root post with both buttons, the diff, the expiry token.
    let root = c
        .slack
        .calls_to("chat.postMessage")
        .into_iter()
        .find(|m| m.text().contains(&format!("Job #{job}")))
        .expect("the card");
    let card = root.body.to_string();
    assert!(has_buttons(&root.body), "{card}");
    assert!(
        card.contains("approval.approve") && card.contains("approval.deny"),
        "{card}"
    );
    assert!(card.contains("web-a: 1.0.0"), "{card}");
    assert!(card.contains("<!date^"), "{card}");
    assert!(card.contains(r#""style":"primary""#) && card.contains(r#""style":"danger""#));
    assert!(
        thread_text(c).contains("Plan to approve"),
        "{}",
        thread_text(c)
    );

    let t = click(c, "U0ALICE", "approval.approve", job).await;
    assert!(t.contains("requester"), "{t}");
    let t = click(c, "U0EVE", "approval.approve", job).await;
    assert!(t.contains("may not approve"), "{t}");
    let t = click(c, "U0BOB", "approval.approve", job).await;
    assert!(t.contains("recorded"), "{t}");
    let t = click(c, "U0BOB", "approval.approve", job).await;
    assert!(t.contains("already voted"), "{t}");
    assert!(has_buttons(&last_card(c)), "still pending: buttons stay");
    assert_eq!(upgrades(&s.rancher), 0);
    let t = click(c, "U0CAROL", "approval.approve", job).await;
    assert!(t.contains("completed"), "{t}");
    wait_status(c, job, JobStatus::Succeeded).await;
    c.delivered().await;
    assert_eq!(upgrades(&s.rancher), 3, "one upgrade per stack, once");
    assert!(!has_buttons(&last_card(c)), "decided: buttons gone");
    let thread = thread_text(c);
    assert!(thread.contains("<@U0BOB> approved (1 of 2)"), "{thread}");
    assert!(thread.contains("<@U0CAROL> approved (2 of 2)"), "{thread}");
    // A late click changes nothing and says so.
    let t = click(c, "U0DAVE", "approval.approve", job).await;
    assert!(t.contains("already approved"), "{t}");
    let audit: Vec<String> = c
        .app
        .store
        .audit_log(50)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert!(
        audit.contains(&format!("vote approve job {job} refused")),
        "{audit:?}"
    );
    assert!(
        audit.contains(&format!("job {job} awaits approval")),
        "{audit:?}"
    );
}

#[tokio::test]
async fn three_approvers_clicking_at_once_run_the_job_once() {
    let s = setup("approvals-race", &policy(3, "1h"), &[]).await;
    let c = &s.c;
    let job = request(&s).await;
    let clicks = ["U0BOB", "U0CAROL", "U0DAVE"]
        .into_iter()
        .map(|u| click_as(c, u, "approval.approve", job));
    for r in futures::future::join_all(clicks).await {
        assert_eq!(r.status(), 200);
    }
    wait_status(c, job, JobStatus::Succeeded).await;
    c.delivered().await;
    assert_eq!(
        upgrades(&s.rancher),
        3,
        "one run: one upgrade request per stack"
    );
    let (a, votes) = c.app.store.approval(job).await.unwrap().unwrap();
    assert_eq!((a.state, votes.len()), (ApprovalState::Approved, 3));
}

#[tokio::test]
async fn deny_cancels_and_a_staging_only_upgrade_needs_no_approval() {
    let s = setup("approvals-deny", &policy(1, "1h"), &[]).await;
    let c = &s.c;
    let job = request(&s).await;
    // Through the dialog with no reason given (the dialog's own test covers the rest).
    click_as(c, "U0BOB", "approval.deny", job).await;
    let view = c.slack.calls_to("views.open")[0].body["view"].clone();
    let metadata = view["private_metadata"].as_str().unwrap().to_string();
    let (status, _) = submit(c, &submission_body("U0BOB", &view, &metadata, None)).await;
    assert_eq!(status, 200);
    wait_status(c, job, JobStatus::Cancelled).await;
    c.delivered().await;
    assert_eq!(upgrades(&s.rancher), 0);
    assert!(!has_buttons(&last_card(c)));
    assert!(thread_text(c).contains("<@U0BOB> denied the job"));
    // What the rule's regex does not touch runs at once.
    c.slash_json(
        "/upgrade",
        "library:my_web:2.0.0 --env ^staging$",
        "U0ALICE",
    )
    .await;
    let staging = c.app.store.jobs(1).await.unwrap()[0].id;
    wait_status(c, staging, JobStatus::Succeeded).await;
    assert_eq!(upgrades(&s.rancher), 1);
}

/// A signed `view_submission` of the deny modal as `user` submits it: the fixture's
/// user and team, the view as `views.open` sent it (with `private_metadata`), and the
/// reason in `state.values` (Slack's view payload: reference/slack.md §d).
fn submission_body(user: &str, view: &Value, metadata: &str, reason: Option<&str>) -> String {
    let p: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/slack/interactivity/block_actions.bolt_python_message.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut view = view.clone();
    view["id"] = "V0FAKE00001".into();
    view["team_id"] = "T111".into();
    view["hash"] = "1.fakehash".into();
    view["private_metadata"] = metadata.into();
    let value = reason.map_or(Value::Null, Value::from);
    view["state"] = serde_json::json!({"values": {"reason": {"reason":
        {"type": "plain_text_input", "value": value}}}});
    let mut user_info = p["user"].clone();
    user_info["id"] = user.into();
    let payload = serde_json::json!({
        "type": "view_submission",
        "team": p["team"],
        "user": user_info,
        "api_app_id": p["api_app_id"],
        "token": p["token"],
        "trigger_id": "999.222.valid",
        "view": view,
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

async fn submit(c: &Corral, body: &str) -> (u16, String) {
    let r = c
        .post_signed(
            "/slack/interactions",
            FORM,
            body,
            SECRET,
            crate::support::now(),
        )
        .await;
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn deny_opens_a_modal_whose_submission_records_the_reason_and_forgeries_change_nothing() {
    let s = setup("approvals-deny-modal", &policy(1, "1h"), &[]).await;
    let c = &s.c;
    let job = request(&s).await;
    // An outsider's Deny is refused at once: no dialog.
    let t = click(c, "U0EVE", "approval.deny", job).await;
    assert!(t.contains("may not approve"), "{t}");
    assert!(c.slack.calls_to("views.open").is_empty());
    // An approver's Deny opens the dialog, and nothing is recorded yet.
    let before = c.slack.calls_to("webhook").len();
    let r = click_as(c, "U0BOB", "approval.deny", job).await;
    assert_eq!(r.status(), 200);
    c.delivered().await;
    assert_eq!(
        c.slack.calls_to("webhook").len(),
        before,
        "the dialog is the answer"
    );
    let opened = c.slack.calls_to("views.open");
    assert_eq!(opened.len(), 1, "{opened:?}");
    let call = &opened[0].body;
    assert!(
        call["trigger_id"].as_str().unwrap().ends_with(".222.valid"),
        "{call}"
    );
    let view = call["view"].clone();
    assert_eq!(view["type"], "modal", "{view}");
    assert_eq!(view["callback_id"], "approval.deny", "{view}");
    let metadata = view["private_metadata"].as_str().unwrap().to_string();
    assert!(metadata.starts_with(&format!("{job}:1:")), "{metadata}");
    assert!(view.to_string().contains("plain_text_input"), "{view}");
    assert_eq!(
        c.app.store.job(job).await.unwrap().unwrap().status,
        JobStatus::AwaitingApproval
    );
    // Forgeries: the metadata names another job, another round (a MAC made with the
    // real key for round 2 while the approval is in round 1), or another person submits.
    let other_job = metadata.replacen(&format!("{job}:"), &format!("{}:", job + 1), 1);
    let stale = corral::app::deny::metadata("xoxb-test", job, 2, "U0BOB");
    for (user, m, why) in [
        ("U0BOB", other_job.as_str(), "not opened by corral for you"),
        ("U0CAROL", metadata.as_str(), "not opened by corral for you"),
        ("U0BOB", "garbage", "not opened by corral for you"),
        ("U0BOB", stale.as_str(), "changed since this dialog opened"),
    ] {
        let (status, body) = submit(c, &submission_body(user, &view, m, Some("x"))).await;
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["response_action"], "errors", "{answer}");
        assert!(
            answer["errors"]["reason"].as_str().unwrap().contains(why),
            "{m}: {answer}"
        );
    }
    let (a, votes) = c.app.store.approval(job).await.unwrap().unwrap();
    assert_eq!(
        (a.state, votes.len()),
        (ApprovalState::Pending, 0),
        "nothing changed"
    );
    // A reason past the bound is refused on the input, and nothing changes.
    let long = "x".repeat(501);
    let (_, body) = submit(c, &submission_body("U0BOB", &view, &metadata, Some(&long))).await;
    assert!(body.contains("at most 500"), "{body}");
    // The real submission denies, with the reason in the thread and on the card.
    let (status, body) = submit(
        c,
        &submission_body(
            "U0BOB",
            &view,
            &metadata,
            Some("not during the <!here> sale"),
        ),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, ""),
        "an empty 200 closes the modal"
    );
    wait_status(c, job, JobStatus::Cancelled).await;
    c.delivered().await;
    let thread = thread_text(c);
    assert!(
        thread.contains("<@U0BOB> denied the job: not during the &lt;!here&gt; sale"),
        "{thread}"
    );
    assert!(!has_buttons(&last_card(c)));
    assert_eq!(upgrades(&s.rancher), 0);
    // Submitting again changes nothing and says so.
    let (_, body) = submit(c, &submission_body("U0BOB", &view, &metadata, None)).await;
    assert!(body.contains("already denied"), "{body}");
    let audit: Vec<String> = c
        .app
        .store
        .audit_log(50)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert!(
        audit.contains(&"approval.deny dialog refused".to_string()),
        "{audit:?}"
    );
}

#[tokio::test]
async fn deny_without_a_dialog_still_denies_without_a_reason() {
    let s = setup("approvals-deny-nodialog", &policy(1, "1h"), &[]).await;
    let c = &s.c;
    // Slack says the trigger expired (the click took too long to reach corral).
    let job = request(&s).await;
    let body = click_body(
        c,
        "U0BOB",
        "approval.deny",
        &format!("{job}:1"),
        "appr:x:r0",
    );
    let mut form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap();
    let mut p: Value = serde_json::from_str(&form[0].1).unwrap();
    p["trigger_id"] = "expired.1".into();
    c.slack.expire_trigger("expired.1");
    form[0].1 = p.to_string();
    let before = c.slack.calls_to("webhook").len();
    let r = c
        .post_signed(
            "/slack/interactions",
            FORM,
            &serde_urlencoded::to_string(&form).unwrap(),
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 200);
    wait_status(c, job, JobStatus::Cancelled).await;
    c.delivered().await;
    let answers = c.slack.calls_to("webhook");
    let t = answers[before].text();
    assert!(t.contains("You denied job"), "{t}");
    assert!(
        t.contains("without a reason") && t.contains("expired_trigger_id"),
        "{t}"
    );
    // A door without dialogs (no trigger_id) denies at once too.
    c.slash_json("/upgrade", "library:my_web:2.0.0", "U0ALICE")
        .await;
    let second = c.app.store.jobs(1).await.unwrap()[0].id;
    wait_status(c, second, JobStatus::AwaitingApproval).await;
    let ack = c
        .app
        .click(corral::app::interact::Click {
            action_id: "approval.deny".into(),
            block_id: "appr:x:r0".into(),
            value: format!("{second}:1"),
            user: "U0BOB".into(),
            source: corral::app::Source::Slack,
            channel: Some("C0TEAM".into()),
            message_ts: None,
            response_url: None,
            trigger_id: None,
        })
        .await;
    assert!(ack.text.contains("no dialogs"), "{}", ack.text);
    wait_status(c, second, JobStatus::Cancelled).await;
}

#[tokio::test]
async fn mention_exec_and_api_votes_follow_the_same_rules() {
    let s = setup("approvals-doors", &policy(2, "1h"), &[]).await;
    let c = &s.c;
    let job = request(&s).await;
    // The API: an unlisted name is refused; `api:ci` is listed and counts.
    let vote = |user: &str, vote: &str| {
        c.http
            .post(format!("{}/api/v1/jobs/{job}/votes", c.url))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"vote": vote, "user": user, "note": "via CI"}))
            .send()
    };
    let r = vote("robot", "approve").await.unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("exact id"),
        "{body}"
    );
    let r = vote("ci", "approve").await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["completed"], false, "{body}");
    let r = vote("ci", "maybe").await.unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .http
        .post(format!("{}/api/v1/jobs/99999/votes", c.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"vote": "approve", "user": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .http
        .post(format!("{}/api/v1/jobs/{job}/votes", c.url))
        .json(&serde_json::json!({"vote": "approve", "user": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Pending approvals are listed with their votes.
    let list: Value = c
        .http
        .get(format!("{}/api/v1/approvals", c.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["approvals"][0]["job"], job, "{list}");
    assert_eq!(
        list["approvals"][0]["votes"][0]["voter"], "api:ci",
        "{list}"
    );
    // The command grammar: `approve N note` through the commands endpoint as Bob would
    // type it is an API identity (`api:U0BOB`), which no rule lists.
    let r = c
        .http
        .post(format!("{}/api/v1/commands", c.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"text": format!("approve {job} lgtm"), "user": "U0BOB"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // A mention from Slack is Bob himself: it completes the approval.
    let reply = c
        .app
        .handle(corral::app::Request {
            command: corral::command::parse_text(&format!("<@UBOT> approve {job} lgtm")).unwrap(),
            user: "U0BOB".into(),
            source: corral::app::Source::Slack,
            channel: Some("C0TEAM".into()),
        })
        .await;
    assert!(reply.text.contains("completed"), "{}", reply.text);
    wait_status(c, job, JobStatus::Succeeded).await;
    assert_eq!(upgrades(&s.rancher), 3);
    for bad in ["approve", "approve twelve", "deny -3", "approve #"] {
        let e = corral::command::parse_text(bad).unwrap_err().to_string();
        assert!(e.contains("job"), "{bad}: {e}");
    }
}

#[tokio::test]
async fn a_plan_that_changed_before_the_start_is_shown_and_asked_again() {
    let s = setup("approvals-replan", &policy(1, "1h"), &[]).await;
    let c = &s.c;
    let job = request(&s).await;
    // A stack appears in prod after the card was shown.
    let project = s.rancher.add_project("prod-eu");
    s.rancher
        .add_stack(&project, "web-d", "catalog://library:my_web:1");
    let t = click(c, "U0BOB", "approval.approve", job).await;
    assert!(t.contains("completed"), "{t}");
    // It is planned again at its start, differs, and waits again (round 2).
    for _ in 0..400 {
        if let Ok(Some((a, _))) = c.app.store.approval(job).await
            && a.round == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (a, votes) = c.app.store.approval(job).await.unwrap().unwrap();
    assert_eq!(
        (a.round, a.state, votes.len()),
        (2, ApprovalState::Pending, 0)
    );
    assert_eq!(
        c.app.store.job(job).await.unwrap().unwrap().status,
        JobStatus::AwaitingApproval
    );
    c.delivered().await;
    assert_eq!(upgrades(&s.rancher), 0, "the changed plan did not run");
    let thread = thread_text(c);
    assert!(
        thread.contains("The plan changed since it was approved"),
        "{thread}"
    );
    assert!(thread.contains("web-d"), "{thread}");
    // A click on the old card (round 1) is recognised as stale.
    let t = click(c, "U0CAROL", "approval.approve", job).await;
    assert!(t.contains("out of date"), "{t}");
    // The new round's button works.
    let body = click_body(
        c,
        "U0CAROL",
        "approval.approve",
        &format!("{job}:2"),
        "appr:x:r2",
    );
    let r = c
        .post_signed(
            "/slack/interactions",
            FORM,
            &body,
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 200);
    wait_status(c, job, JobStatus::Succeeded).await;
    assert_eq!(upgrades(&s.rancher), 4);
}

#[tokio::test]
async fn a_catalog_upgrade_card_shows_the_images_and_variables_that_differ_and_binds_the_compose() {
    let s = setup("approvals-diff", &policy(1, "1h"), &[]).await;
    let c = &s.c;
    let job = request(&s).await;
    c.delivered().await;
    let card = c
        .slack
        .calls_to("chat.postMessage")
        .into_iter()
        .find(|m| m.text().contains(&format!("Job #{job}")))
        .expect("the card")
        .body
        .to_string();
    // The stacks answer PORT=80 (the fake's stacks), and WORKER_TAG not at all.
    for line in [
        "image web: 'myorg/web:1.0.0' → 'myorg/web:2.0.0'",
        "image worker: new service, 'myorg/worker:2.1'",
        "variable PORT: default '80' → '8080' (this stack keeps its answer '80')",
        "variable WORKER_TAG: new question, default '2.1'",
    ] {
        assert!(card.contains(line), "{line} not in {card}");
    }
    let thread = thread_text(c);
    assert!(
        thread.contains(
            "web-b: 1.0.0 → 2.0.0\n    ◦ image web: 'myorg/web:1.0.0' → 'myorg/web:2.0.0'"
        ),
        "{thread}"
    );
    // The catalog read each version once: the template, the target, the stacks' current.
    let reads = s
        .rancher
        .requests()
        .into_iter()
        .filter(|r| r.uri == "/v1-catalog/templates/library:my_web:1")
        .count();
    assert_eq!(reads, 1, "the current version is read once for all stacks");
    // A compose change that moves no image and no question is still a different plan.
    s.rancher.set_template_file(
        "library",
        "my_web",
        "10",
        "docker-compose.yml",
        &format!("{DC}    environment:\n      X: '1'\n"),
    );
    let t = click(c, "U0BOB", "approval.approve", job).await;
    assert!(t.contains("completed"), "{t}");
    for _ in 0..400 {
        if let Ok(Some((a, _))) = c.app.store.approval(job).await
            && a.round == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (a, _) = c.app.store.approval(job).await.unwrap().unwrap();
    assert_eq!((a.round, a.state), (2, ApprovalState::Pending));
    c.delivered().await;
    assert_eq!(upgrades(&s.rancher), 0, "the changed compose did not run");
    assert!(thread_text(c).contains("The plan changed since it was approved"));
}

#[tokio::test]
async fn the_completing_vote_re_applies_the_lock_gate() {
    let s = setup("approvals-lock", &policy(1, "1h"), &[]).await;
    let c = &s.c;
    let job = request(&s).await;
    c.slash_json("/release", "block change freeze", "U0DAVE")
        .await;
    let t = click(c, "U0BOB", "approval.approve", job).await;
    assert!(t.contains("lock refused"), "{t}");
    wait_status(c, job, JobStatus::Cancelled).await;
    c.delivered().await;
    assert_eq!(upgrades(&s.rancher), 0);
    let (a, _) = c.app.store.approval(job).await.unwrap().unwrap();
    assert_eq!(a.state, ApprovalState::Refused);
    assert!(thread_text(c).contains("the lock no longer allows this job"));
}

#[tokio::test]
async fn a_user_group_is_asked_of_slack_and_grants_nothing_when_slack_cannot_say() {
    let text = policy(1, "1h").replace(
        r#"approvers = ["U0BOB", "U0CAROL", "U0DAVE", "api:ci"]"#,
        r#"approvers = ["S0OPS"]"#,
    );
    let s = setup("approvals-groups", &text, &[]).await;
    let c = &s.c;
    let job = request(&s).await;
    // Slack cannot say (a missing scope): the group grants nothing, and the refusal says why.
    c.slack.fail_next(
        "usergroups.users.list",
        crate::support::fake_slack::Failure::Error("missing_scope"),
    );
    let t = click(c, "U0GRACE", "approval.approve", job).await;
    assert!(t.contains("S0OPS could not be read from Slack"), "{t}");
    assert!(t.contains("missing_scope"), "{t}");
    // A member of the group approves.
    c.slack.set_group("S0OPS", &["U0GRACE", "U0HEIDI"]);
    let t = click(c, "U0EVE", "approval.approve", job).await;
    assert!(t.contains("may not approve"), "{t}");
    let t = click(c, "U0GRACE", "approval.approve", job).await;
    assert!(t.contains("completed"), "{t}");
    wait_status(c, job, JobStatus::Succeeded).await;
    let asked = c.slack.calls_to("usergroups.users.list");
    assert_eq!(asked.len(), 2, "the answer is cached: {asked:?}");
    assert_eq!(asked[1].body["usergroup"], "S0OPS");
}

#[tokio::test]
async fn a_permission_refusal_names_the_role_and_only_writes_an_audit_row() {
    let text = policy(1, "1h").replace(r#"deployers = ["U0ALICE"]"#, r#"deployers = ["S0DEVS"]"#);
    let s = setup("approvals-perm", &text, &[]).await;
    let c = &s.c;
    let ack = c
        .slash_json("/upgrade", "library:my_web:2.0.0", "U0MALLORY")
        .await;
    let t = ack.to_string();
    assert!(t.contains("needs the role deployers"), "{t}");
    assert!(t.contains("S0DEVS could not be read"), "{t}");
    assert!(c.app.store.jobs(5).await.unwrap().is_empty(), "no job");
    let audit = c.app.store.audit_log(5).await.unwrap();
    assert_eq!(audit[0].action, "/upgrade refused", "{audit:?}");
    c.slack.set_group("S0DEVS", &["U0ALICE"]);
    let job = request(&s).await;
    assert!(job > 0);
}

#[tokio::test]
async fn bad_approval_rules_are_refused_at_start_naming_the_key() {
    for (text, key) in [
        (
            "[[approval]]\ncommands = [\"upgrade\"]\napprovers = [\"nobody\"]\n",
            "approval[0].approvers",
        ),
        (
            "[[approval]]\ncommands = [\"upgrade\"]\napprovers = [\"everyone\"]\nrequired = 0\n",
            "approval[0].required",
        ),
        (
            "[[approval]]\ncommands = [\"launch\"]\napprovers = [\"everyone\"]\n",
            "approval[0].commands",
        ),
        (
            "[[approval]]\ncommands = [\"upgrade\"]\nenvironments = \"(prod\"\napprovers = [\"everyone\"]\n",
            "approval[0].environments",
        ),
        (
            "[[approval]]\ncommands = [\"upgrade\"]\napprovers = [\"everyone\"]\nexpires = \"soon\"\n",
            "approval[0].expires",
        ),
        (
            "[[approval]]\ncommands = [\"upgrade\"]\napprovers = [\"everyone\"]\nquorum = 2\n",
            "quorum",
        ),
    ] {
        let e = corral::policy::Policy::parse(text).unwrap_err();
        assert!(e.contains(key), "{text}: {e}");
    }
}

/// Drives a manual clock by the outbox's pacing until everything written is delivered.
async fn drained(c: &Corral, clock: &corral::clock::ManualClock) {
    for _ in 0..1000 {
        let rows = c.app.store.outbox_rows(None, 1000).await.unwrap();
        if rows.iter().all(|r| {
            !matches!(
                r.state,
                corral::store::RowState::Pending | corral::store::RowState::Edit
            )
        }) {
            return;
        }
        clock.advance(Duration::from_millis(25));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("outbox not drained");
}

/// A click signed at the manual clock's time (corral checks signatures against it).
async fn click_at(
    c: &Corral,
    clock: &corral::clock::ManualClock,
    user: &str,
    action: &str,
    value: &str,
) -> String {
    let ts = clock.shared().unix();
    let before = c.slack.calls_to("webhook").len();
    let body = click_body(c, user, action, value, "appr:x:r0");
    let r = c
        .post_signed("/slack/interactions", FORM, &body, SECRET, ts)
        .await;
    assert_eq!(r.status(), 200);
    drained(c, clock).await;
    let answers = c.slack.calls_to("webhook");
    assert_eq!(answers.len(), before + 1, "{answers:?}");
    answers[before].text().to_string()
}

#[tokio::test]
async fn expiry_on_a_driven_clock_reminds_once_then_cancels_and_a_late_click_only_tells_the_clicker()
 {
    let clock = corral::clock::ManualClock::new(jiff::Timestamp::now());
    let s = setup_on("approvals-expiry", &policy(1, "10m"), &[], clock.shared()).await;
    let c = &s.c;
    let job = request(&s).await;
    drained(c, &clock).await;
    // Nothing is due yet; the next thing due is the reminder at 80 % (8 minutes).
    let created = c
        .app
        .store
        .approval(job)
        .await
        .unwrap()
        .unwrap()
        .0
        .created_at;
    assert_eq!(c.app.sweep_approvals().await, Some(created + 480));
    clock.advance(Duration::from_secs(481));
    c.app.sweep_approvals().await;
    c.app.sweep_approvals().await;
    drained(c, &clock).await;
    let thread = thread_text(c);
    assert_eq!(thread.matches("Reminder for").count(), 1, "{thread}");
    clock.advance(Duration::from_secs(120));
    c.app.sweep_approvals().await;
    drained(c, &clock).await;
    let j = c.app.store.job(job).await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Cancelled);
    let (a, _) = c.app.store.approval(job).await.unwrap().unwrap();
    assert_eq!(a.state, ApprovalState::Expired);
    let thread = thread_text(c);
    assert!(thread.contains("Expired"), "{thread}");
    assert!(
        !has_buttons(&last_card(c)),
        "an expired card has no buttons"
    );
    let updates = c.slack.calls_to("chat.update").len();
    let posts = c.slack.calls_to("chat.postMessage").len();
    let t = click_at(c, &clock, "U0BOB", "approval.approve", &format!("{job}:1")).await;
    assert!(t.contains("already expired"), "{t}");
    assert_eq!(
        c.slack.calls_to("chat.update").len(),
        updates,
        "the card is not touched"
    );
    assert_eq!(
        c.slack.calls_to("chat.postMessage").len(),
        posts,
        "nor the thread"
    );
    assert_eq!(upgrades(&s.rancher), 0);
}

#[tokio::test]
async fn a_pending_approval_survives_a_restart() {
    let dir = TempDir::new("approvals-restart-db");
    let url = format!("sqlite://{}/c.db", dir.0.display());
    let first = setup(
        "approvals-restart",
        &policy(1, "1h"),
        &[("CORRAL_DATABASE_URL", &url)],
    )
    .await;
    let job = request(&first).await;
    first.c.delivered().await;
    let rancher = first.rancher.clone();
    drop(first.c);
    // A new process on the same database, as `corral serve` starts: jobs whose lease ran
    // out are reported, then the approvals are swept.
    let path = first._dir.0.join("policy.toml").display().to_string();
    let rancher_url = format!("{}/v1", rancher.url);
    let c = Corral::start_with(&[
        ("CORRAL_DATABASE_URL", url.as_str()),
        ("RANCHER_URL", rancher_url.as_str()),
        ("RANCHER_ACCESS_KEY", ACCESS_KEY),
        ("RANCHER_SECRET_KEY", SECRET_KEY),
        ("CORRAL_RANCHER_RATE", "2000"),
        ("CORRAL_POLICY", path.as_str()),
    ])
    .await;
    assert_eq!(
        c.app.runner.interrupt_expired().await,
        0,
        "an approval is not an interrupted job"
    );
    c.app.sweep_approvals().await;
    assert_eq!(
        c.app.store.job(job).await.unwrap().unwrap().status,
        JobStatus::AwaitingApproval
    );
    let t = click(&c, "U0BOB", "approval.approve", job).await;
    assert!(t.contains("completed"), "{t}");
    wait_status(&c, job, JobStatus::Succeeded).await;
    assert_eq!(upgrades(&rancher), 3);
}
