//! A hostile review of the approval doors (issues 11/12): `POST /api/v1/jobs/{id}/votes`,
//! `GET /api/v1/approvals`, `GET /api/v1/audit`, `/slack/interactions` clicks on approval
//! and release buttons, and `approve N` / `deny N` mentions. Each test is one attack;
//! the ones that found a hole were written failing first, then the hole was fixed.

use serde_json::{Value, json};

use crate::approvals::{block_actions, policy, request, setup, wait_status};
use crate::support::corral::{Corral, SECRET, TOKEN};
use crate::support::postgres::TestDb;
use corral::job::JobStatus;

const FORM: &str = "application/x-www-form-urlencoded";

async fn get(c: &Corral, path_and_query: &str) -> (u16, Value) {
    let r = c
        .http
        .get(format!("{}{path_and_query}", c.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn audit_rows(c: &Corral) -> usize {
    c.app.store.audit_log(1000).await.unwrap().len()
}

/// `?since=&user=&limit=` with every kind of bad value: a 400 naming the parameter, or
/// an empty answer, never a 5xx; nothing is written.
async fn audit_params_hold(c: &Corral) {
    c.slash_json("/release", "start audit-probe", "U0ALICE")
        .await;
    let rows = audit_rows(c).await;
    for (query, want) in [
        ("limit=0", 400),
        ("limit=-1", 400),
        ("limit=1001", 400),
        ("limit=99999999999999999999999", 400),
        ("limit=1e3", 400),
        ("limit=", 400),
        ("since=-9223372036854775808", 200),
        ("since=9223372036854775807", 200),
        ("since=99999999999999999999", 400),
        ("since=9999999h", 400),
        ("since=yesterday", 400),
        ("since=2026-13-45T99:00:00Z", 400),
        ("since=%00", 400),
        ("user=' OR '1'='1", 200),
        ("user=%25", 200),
        ("user=U0ALICE'--", 200),
        (&format!("user={}", "x".repeat(65)), 400),
        ("user=U0%00ALICE", 400),
        ("user=U0ALICE%0Aforged", 400),
        ("since=1&since=2", 400),
    ] {
        let (status, body) = get(c, &format!("/api/v1/audit?{query}")).await;
        assert_eq!(status, want, "{query}: {body}");
        if want == 400 {
            assert!(body["error"].is_string(), "{query}: {body}");
        }
        if query.starts_with("user=") && want == 200 {
            assert_eq!(body["audit"], json!([]), "{query}: matched nothing: {body}");
        }
    }
    assert_eq!(audit_rows(c).await, rows, "reading wrote nothing");
    // The injection-looking user matched nothing, the real one matches.
    let (status, body) = get(c, "/api/v1/audit?user=U0ALICE&since=0").await;
    assert_eq!(status, 200);
    assert!(!body["audit"].as_array().unwrap().is_empty(), "{body}");
}

#[tokio::test]
async fn audit_query_params_are_refused_or_harmless_on_sqlite() {
    let c = Corral::start().await;
    audit_params_hold(&c).await;
}

#[tokio::test]
async fn audit_query_params_are_refused_or_harmless_on_postgres() {
    let db = TestDb::new("hostileaudit").await;
    let c = Corral::start_with(&[("CORRAL_DATABASE_URL", db.url.as_str())]).await;
    audit_params_hold(&c).await;
}

/// The votes endpoint with malformed bodies and ids: 4xx, no vote, no audit row.
#[tokio::test]
async fn malformed_votes_change_nothing() {
    let s = setup("hostile-votes", &policy(2, "1h"), &[]).await;
    let c = &s.c;
    let job = request(&s).await;
    let rows = audit_rows(c).await;
    let post = |path: String, body: String| {
        c.http
            .post(format!("{}{path}", c.url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let votes = format!("/api/v1/jobs/{job}/votes");
    for (path, body, want) in [
        (votes.clone(), r#"{"vote":1,"user":"ci"}"#.to_string(), 400),
        (votes.clone(), r#"{"vote":"approve"}"#.to_string(), 400),
        (
            votes.clone(),
            r#"{"vote":"approve","user":["ci"]}"#.to_string(),
            400,
        ),
        (
            votes.clone(),
            r#"{"vote":"approve","user":"ci","round":7}"#.to_string(),
            400,
        ),
        (
            votes.clone(),
            r#"{"vote":"APPROVE!","user":"ci"}"#.to_string(),
            400,
        ),
        (
            votes.clone(),
            r#"{"vote":"approve","user":"ci\u0000"}"#.to_string(),
            400,
        ),
        (
            votes.clone(),
            r#"{"vote":"approve","user":"   "}"#.to_string(),
            400,
        ),
        (
            votes.clone(),
            format!(r#"{{"vote":"approve","user":"{}"}}"#, "c".repeat(65)),
            400,
        ),
        (
            votes.clone(),
            format!(
                r#"{{"vote":"approve","user":"ci","note":"{}"}}"#,
                "n".repeat(501)
            ),
            400,
        ),
        (votes.clone(), "not json".to_string(), 400),
        (
            votes.clone(),
            format!(
                r#"{{"vote":"approve","user":"ci","note":"{}"}}"#,
                "n".repeat(300_000)
            ),
            413,
        ),
        (
            "/api/v1/jobs/99999999999999999999/votes".into(),
            r#"{"vote":"approve","user":"ci"}"#.into(),
            400,
        ),
        (
            "/api/v1/jobs/-1/votes".into(),
            r#"{"vote":"approve","user":"ci"}"#.into(),
            404,
        ),
        (
            "/api/v1/jobs/1%20OR%201=1/votes".into(),
            r#"{"vote":"approve","user":"ci"}"#.into(),
            400,
        ),
    ] {
        let r = post(path.clone(), body.clone()).await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            want,
            "{path} {}",
            &body[..body.len().min(80)]
        );
    }
    let (_, votes) = c.app.store.approval(job).await.unwrap().unwrap();
    assert!(votes.is_empty(), "{votes:?}");
    assert_eq!(
        audit_rows(c).await,
        rows,
        "nothing audited for unreadable requests"
    );
    assert_eq!(
        c.app.store.job(job).await.unwrap().unwrap().status,
        JobStatus::AwaitingApproval
    );
}

/// A name or note given to the API is shown escaped in Slack: it cannot mention the
/// channel or forge a link in the thread. (The HTTP answer echoes the caller's own text
/// as plain JSON, which no one renders as mrkdwn.)
#[tokio::test]
async fn an_api_voter_name_or_note_cannot_mention_or_link() {
    let s = setup("hostile-names", &policy(2, "1h"), &[]).await;
    let c = &s.c;
    let job = request(&s).await;
    let vote = |user: &str| {
        c.http
            .post(format!("{}/api/v1/jobs/{job}/votes", c.url))
            .bearer_auth(TOKEN)
            .json(&json!({"vote": "approve", "user": user, "note": "<!channel> <https://evil.example|click> <@U0BOB>"}))
            .send()
    };
    assert_eq!(vote("<!channel>").await.unwrap().status(), 409, "unlisted");
    assert_eq!(
        vote("ci").await.unwrap().status(),
        200,
        "listed: shown in the thread"
    );
    c.delivered().await;
    let shown: Vec<String> = c
        .slack
        .calls_to("chat.postMessage")
        .iter()
        .chain(c.slack.calls_to("chat.update").iter())
        .map(|m| m.body.to_string())
        .collect();
    assert!(shown.iter().any(|t| t.contains("api:ci")), "{shown:?}");
    for text in &shown {
        assert!(!text.contains("<!channel>"), "{text}");
        assert!(!text.contains("<https://evil"), "{text}");
        assert!(!text.contains("<@U0BOB>"), "{text}");
    }
}

async fn signed_click(c: &Corral, user: &str, action: &str, value: &str) -> (u16, String) {
    let body = block_actions(&c.slack.webhook_url, user, action, value, "b");
    let r = c
        .post_signed(
            "/slack/interactions",
            FORM,
            &body,
            SECRET,
            crate::support::now(),
        )
        .await;
    (r.status().as_u16(), body)
}

/// Clicks with forged values, other jobs, stale rounds and replays count once or not at
/// all.
#[tokio::test]
async fn forged_stale_and_replayed_clicks_count_once_or_not_at_all() {
    let s = setup("hostile-clicks", &policy(2, "1h"), &[]).await;
    let c = &s.c;
    let job = request(&s).await;
    for value in [
        "".to_string(),
        ":".to_string(),
        format!("{job}"),
        format!("{job}:"),
        format!("{job}:0"),
        format!("{job}:2"),
        format!("{job}:-1"),
        format!("{job}:1:extra"),
        format!("{job}:4294967296"),
        "99999:1".to_string(),
        "-1:1".to_string(),
        "9223372036854775808:1".to_string(),
        format!(" {job}:1"),
        format!("{job}:1 OR 1=1"),
    ] {
        let (status, _) = signed_click(c, "U0BOB", "approval.approve", &value).await;
        assert_eq!(status, 200, "{value}");
    }
    // Unknown actions of the family, and a value of Slack's limit plus one.
    let (status, _) = signed_click(c, "U0BOB", "approval.approve_all", &format!("{job}:1")).await;
    assert_eq!(status, 200);
    let (status, _) = signed_click(c, "U0BOB", "approval.approve", &"9".repeat(2001)).await;
    assert_eq!(status, 200);
    c.delivered().await;
    let (_, votes) = c.app.store.approval(job).await.unwrap().unwrap();
    assert!(votes.is_empty(), "no forged value counted: {votes:?}");

    // The requester's own click never counts; a replay of a real click counts once.
    let (status, _) = signed_click(c, "U0ALICE", "approval.approve", &format!("{job}:1")).await;
    assert_eq!(status, 200);
    let (status, body) = signed_click(c, "U0BOB", "approval.approve", &format!("{job}:1")).await;
    assert_eq!(status, 200);
    let ts = crate::support::now();
    for _ in 0..3 {
        let r = c
            .post_signed("/slack/interactions", FORM, &body, SECRET, ts)
            .await;
        assert_eq!(r.status(), 200);
    }
    c.delivered().await;
    let (_, votes) = c.app.store.approval(job).await.unwrap().unwrap();
    let counted: Vec<_> = votes.iter().filter(|v| v.counted).collect();
    assert_eq!(counted.len(), 1, "{votes:?}");
    assert_eq!(counted[0].voter, "U0BOB");
    assert_eq!(
        c.app.store.job(job).await.unwrap().unwrap().status,
        JobStatus::AwaitingApproval,
        "one approver of two: still waiting"
    );
    // Wrong types and missing fields in the payload: 400 or ignored, nothing counted.
    for payload in [
        json!({"type": "block_actions"}),
        json!({"type": "block_actions", "user": {"id": "U0CAROL"}, "actions": "approve"}),
        json!({"type": "block_actions", "user": {"id": 5}, "actions": []}),
        json!({"type": "block_actions", "user": {"id": "U0CAROL"}, "actions": [{"action_id": "approval.approve", "value": 5, "type": "button", "block_id": "b", "action_ts": "1"}]}),
        json!([1, 2, 3]),
    ] {
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        let r = c
            .post_signed(
                "/slack/interactions",
                FORM,
                &body,
                SECRET,
                crate::support::now(),
            )
            .await;
        assert!(r.status().as_u16() < 500, "{payload}: {}", r.status());
    }
    // A huge payload is refused before it is read.
    let huge = serde_urlencoded::to_string([("payload", "x".repeat(300_000))]).unwrap();
    let r = c
        .post_signed(
            "/slack/interactions",
            FORM,
            &huge,
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 413);
    let (_, votes) = c.app.store.approval(job).await.unwrap().unwrap();
    assert_eq!(votes.iter().filter(|v| v.counted).count(), 1);

    // A deny from someone who may not approve changes nothing either.
    let (status, _) = signed_click(c, "U0MALLORY", "approval.deny", &format!("{job}:1")).await;
    assert_eq!(status, 200);
    c.delivered().await;
    assert_eq!(
        c.app.store.job(job).await.unwrap().unwrap().status,
        JobStatus::AwaitingApproval
    );
    // A second approver completes it; a late replay of a deny after that changes nothing.
    let (_, _) = signed_click(c, "U0CAROL", "approval.approve", &format!("{job}:1")).await;
    wait_status(c, job, JobStatus::Succeeded).await;
    let (_, _) = signed_click(c, "U0DAVE", "approval.deny", &format!("{job}:1")).await;
    c.delivered().await;
    assert_eq!(
        c.app.store.job(job).await.unwrap().unwrap().status,
        JobStatus::Succeeded
    );
}

/// `release.stop` with a forged or stale `since`, or from someone who does not hold the
/// release, stops nothing.
#[tokio::test]
async fn stop_release_clicks_with_forged_values_stop_nothing() {
    let dir = crate::support::TempDir::new("hostile-stop");
    let path = dir.0.join("policy.toml");
    std::fs::write(&path, "[roles]\nadmins = [\"U0ADMIN\"]\n").unwrap();
    let path = path.display().to_string();
    let c = Corral::start_with(&[("CORRAL_POLICY", path.as_str())]).await;
    c.slash_json("/release", "start r1", "U0ALICE").await;
    let since = c.lock().await.running.unwrap().since;
    for value in [
        "".to_string(),
        "abc".to_string(),
        (since - 1).to_string(),
        (since + 1).to_string(),
        format!("{since}:1"),
        "9223372036854775808".to_string(),
    ] {
        let (status, _) = signed_click(&c, "U0ALICE", "release.stop", &value).await;
        assert_eq!(status, 200, "{value}");
    }
    assert!(c.lock().await.running.is_some(), "nothing stopped");
    // Not the holder and no admin: the button refuses. (Without a policy file `--force`
    // is open to everyone, and so is this button: that is the policy's rule, not a hole.)
    let (status, _) = signed_click(&c, "U0MALLORY", "release.stop", &since.to_string()).await;
    assert_eq!(status, 200);
    c.delivered().await;
    let running = c.lock().await.running;
    assert!(
        running.is_some_and(|h| h.who == "U0ALICE"),
        "only the holder"
    );
    // An admin may.
    let (status, _) = signed_click(&c, "U0ADMIN", "release.stop", &since.to_string()).await;
    assert_eq!(status, 200);
    assert!(c.lock().await.running.is_none(), "the admin stopped it");
}

/// `approve N` / `deny N` mentions with hostile numbers are refused by the grammar.
#[tokio::test]
async fn vote_mentions_with_hostile_numbers_are_refused() {
    for bad in [
        "<@UBOT> approve 99999999999999999999",
        "<@UBOT> approve 0x10",
        "<@UBOT> deny 1e3",
        "<@UBOT> approve 1;2",
        "<@UBOT> approve ١٢",
        "<@UBOT> approve 12abc",
    ] {
        let e = corral::command::parse_text(bad);
        assert!(e.is_err(), "{bad}: {e:?}");
    }
}
