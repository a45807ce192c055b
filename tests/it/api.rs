//! corral's native HTTP API and the health endpoints.

use serde_json::{Value, json};

use crate::support::corral::{CHANNEL, Corral, TOKEN};

async fn post(c: &Corral, body: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = c
        .http
        .post(format!("{}/api/v1/commands", c.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(c: &Corral, path: &str) -> (u16, Value) {
    let resp = c
        .http
        .get(format!("{}{path}", c.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn commands_run_through_the_pipeline() {
    let c = Corral::start().await;
    let (s, v) = post(
        &c,
        r#"{"text": "release start 2.0", "user": "ci-bot"}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["text"], "🚀 api:ci-bot started a release: 2.0");
    let (s, v) = get(&c, "/api/v1/lock").await;
    assert_eq!(s, 200);
    assert_eq!(v["running"]["who"], "api:ci-bot");
    assert_eq!(v["running"]["reason"], "2.0");
    assert_eq!(v["blocked"], Value::Null);
    // Announced in the channel, since it did not come from Slack.
    let calls = c.slack.wait_for(5, |calls| !calls.is_empty()).await;
    assert_eq!(calls[0].channel(), CHANNEL);
    assert!(calls[0].text().contains("(via api)"));

    // A refusal is a 409 with the reason, in plain text (no Slack tokens).
    let (s, v) = post(
        &c,
        r#"{"text": "release start", "user": "other"}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 409);
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("already running, started by api:ci-bot at 20"),
        "{e}"
    );
    assert!(!e.contains("<!date"), "{e}");

    // A job: 202 with the stored job; its thread goes to CORRAL_CHANNEL.
    let (s, v) = post(
        &c,
        r#"{"text": "/upgrade library:web:3", "user": "ci-bot"}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["job"]["id"], 1);
    assert_eq!(v["job"]["status"], "queued");
    assert_eq!(v["job"]["channel"], CHANNEL);
    c.app.runner.wait(1).await;
    let (s, v) = get(&c, "/api/v1/jobs/1").await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "failed");
    assert!(
        v["outcome"]["summary"]
            .as_str()
            .unwrap()
            .contains("Rancher is not configured")
    );
    let (s, v) = get(&c, "/api/v1/jobs?limit=5").await;
    assert_eq!(s, 200);
    assert_eq!(v["jobs"].as_array().unwrap().len(), 1);
    let (s, v) = get(&c, "/api/v1/audit").await;
    assert_eq!(s, 200);
    // Newest first: the job's outcome, then its creation.
    assert_eq!(v["audit"][0]["action"], "job 1 failed", "{v}");
    assert!(
        v["audit"][1]["action"]
            .as_str()
            .unwrap()
            .contains("job 1 created")
    );
}

#[tokio::test]
async fn bad_input_is_a_4xx_with_an_error_and_changes_nothing() {
    let c = Corral::start().await;
    for (body, needle) in [
        ("not json", "body must be JSON"),
        ("{}", "missing field `text`"),
        (r#"{"text": 5}"#, "invalid type"),
        (r#"{"text": "release start", "extra": 1}"#, "unknown field"),
        (r#"{"text": "release start", "user": ""}"#, "user must be"),
        (
            r#"{"text": "release start", "user": "a\u0007b"}"#,
            "user must be",
        ),
        (
            r#"{"text": "release frobnicate"}"#,
            "not a /release subcommand",
        ),
        (r#"{"text": "unknown thing"}"#, "not a corral command"),
    ] {
        let (s, v) = post(&c, body, Some(TOKEN)).await;
        assert_eq!(s, 400, "{body}: {v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.contains(needle), "{body}: {e}");
    }
    let long = json!({"text": format!("release start {}", "x".repeat(5000))}).to_string();
    let (s, _) = post(&c, &long, Some(TOKEN)).await;
    assert_eq!(s, 400);
    assert!(c.lock().await.running.is_none());

    for (path, status) in [
        ("/api/v1/jobs/abc", 400),
        ("/api/v1/jobs/999", 404),
        ("/api/v1/jobs?limit=0", 400),
        ("/api/v1/jobs?limit=x", 400),
        ("/api/v1/audit?limit=100000", 400),
    ] {
        let (s, v) = get(&c, path).await;
        assert_eq!(s, status, "{path}");
        assert!(v["error"].is_string(), "{path}: {v}");
    }
}

#[tokio::test]
async fn tokens_are_checked() {
    let c = Corral::start().await;
    let (s, v) = post(&c, r#"{"text": "release start"}"#, None).await;
    assert_eq!(s, 401);
    assert!(v["error"].as_str().unwrap().contains("missing API token"));
    let (s, _) = post(&c, r#"{"text": "release start"}"#, Some("wrong")).await;
    assert_eq!(s, 401);
    let resp = c
        .http
        .get(format!("{}/api/v1/lock", c.url))
        .header("bearer", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "go-cowpoke's bearer header works");
    assert!(c.lock().await.running.is_none());

    let off = Corral::start_with(&[("CORRAL_API_TOKEN", "")]).await;
    let (s, v) = post(&off, r#"{"text": "release start"}"#, Some("anything")).await;
    assert_eq!(s, 401);
    assert!(v["error"].as_str().unwrap().contains("CORRAL_API_TOKEN"));
}

#[tokio::test]
async fn health_readiness_and_metrics_need_no_token() {
    let c = Corral::start().await;
    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let resp = c.http.get(format!("{}{path}", c.url)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), body);
    }
    c.slash("/release", "start", "U0ALICE").await;
    let resp = c
        .http
        .get(format!("{}/metrics", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("corral_release_running 1"), "{text}");
    assert!(text.contains("corral_store_up 1"));
    assert!(
        text.contains("# TYPE corral_slack_commands counter"),
        "{text}"
    );
    assert!(text.contains("corral_slack_commands_total 1"), "{text}");
}

#[tokio::test]
async fn api_callers_cannot_pass_for_slack_users_or_roles() {
    let dir = std::env::temp_dir().join(format!("corral-api-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.toml");
    std::fs::write(&path, "[roles]\nadmins = [\"U0ADMIN\"]\n").unwrap();
    let c = Corral::start_with(&[("CORRAL_POLICY", path.to_str().unwrap())]).await;
    c.slash_json("/release", "start", "U0ALICE").await;
    // Naming yourself after the holder, an admin or the role does not make you one.
    for user in ["U0ALICE", "U0ADMIN", "admins"] {
        let body = json!({"text": "release stop --force", "user": user}).to_string();
        let (s, v) = post(&c, &body, Some(TOKEN)).await;
        assert_eq!(s, 409, "{user}: {v}");
        let body = json!({"text": "upgrade image a/b:1", "user": user}).to_string();
        let (s, _) = post(&c, &body, Some(TOKEN)).await;
        assert_eq!(s, 409, "{user} passes the lock gate only with --force");
    }
    assert_eq!(c.lock().await.running.unwrap().who, "U0ALICE");
    assert!(c.app.store.jobs(10).await.unwrap().is_empty());
    std::fs::remove_dir_all(dir).ok();
}
