//! Slack's doors: signatures, slash commands, mentions, interactions, and the thread a
//! job gets.

use serde_json::json;

use crate::support::corral::{CHANNEL, Corral, SECRET, slash_body};
use crate::support::fake_slack::Failure;

const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test]
async fn slacks_published_vector_is_refused_only_for_its_age() {
    let c = Corral::start().await;
    let body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/slack/signing/slack_docs_example.body.form"
    ))
    .unwrap();
    // The documented signature over the documented body, sent as Slack sent it in 2018.
    let resp = c
        .http
        .post(format!("{}/slack/commands", c.url))
        .header("x-slack-request-timestamp", "1531420618")
        .header(
            "x-slack-signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("300 s"));
    assert_eq!(
        corral::slack::verify::verify(
            SECRET,
            Some("v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
            Some("1531420618"),
            body.as_bytes(),
            1531420618
        ),
        Ok(())
    );
}

#[tokio::test]
async fn bad_signatures_get_401_and_change_nothing() {
    let c = Corral::start().await;
    let body = slash_body("/release", "start 1.4.0", "U0ALICE", "C0TEAM");
    let now = crate::support::now();
    // Stale, from the future, wrong secret.
    for (secret, ts) in [
        (SECRET, now - 301),
        (SECRET, now + 301),
        ("not-the-secret", now),
    ] {
        let r = c
            .post_signed("/slack/commands", FORM, &body, secret, ts)
            .await;
        assert_eq!(r.status(), 401, "secret {secret} ts {ts}");
    }
    // 299 s old is still fine — but use status so nothing changes.
    let status = slash_body("/release", "status", "U0ALICE", "C0TEAM");
    let r = c
        .post_signed("/slack/commands", FORM, &status, SECRET, now - 299)
        .await;
    assert_eq!(r.status(), 200);
    // Altered after signing.
    let sig = corral::slack::verify::sign(SECRET, &now.to_string(), body.as_bytes());
    let altered = body.replace("1.4.0", "1.4.1");
    for (path, headers) in [
        (
            "/slack/commands",
            vec![
                ("x-slack-request-timestamp", now.to_string()),
                ("x-slack-signature", sig.clone()),
            ],
        ),
        ("/slack/commands", vec![]),
        (
            "/slack/commands",
            vec![("x-slack-request-timestamp", now.to_string())],
        ),
        (
            "/slack/commands",
            vec![
                ("x-slack-request-timestamp", now.to_string()),
                ("x-slack-signature", sig[3..].to_string()),
            ],
        ),
        ("/slack/events", vec![]),
        ("/slack/interactions", vec![]),
    ] {
        let mut req = c
            .http
            .post(format!("{}{path}", c.url))
            .body(altered.clone());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    assert_eq!(c.lock().await, corral::lock::LockState::default());
    assert!(c.app.store.lock_history(10).await.unwrap().is_empty());
    assert!(c.slack.calls().is_empty(), "nothing was posted to Slack");
}

#[tokio::test]
async fn no_signing_secret_means_slack_is_refused() {
    let c = Corral::start_with(&[("SLACK_SIGNING_SECRET", "")]).await;
    let r = c.slash("/release", "start", "U0ALICE").await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("SLACK_SIGNING_SECRET"));
    assert!(c.lock().await.running.is_none());
}

#[tokio::test]
async fn release_commands_answer_in_the_ack() {
    let c = Corral::start().await;
    let v = c.slash_json("/release", "status", "U0ALICE").await;
    assert_eq!(v["response_type"], "ephemeral");
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("No release is running")
    );

    let v = c
        .slash_json("/release", "start 1.4.0 hotfix", "U0ALICE")
        .await;
    assert_eq!(v["response_type"], "in_channel");
    assert_eq!(v["text"], "🚀 <@U0ALICE> started a release: 1.4.0 hotfix");
    let held = c.lock().await.running.unwrap();
    assert_eq!(
        (held.who.as_str(), held.reason.as_str()),
        ("U0ALICE", "1.4.0 hotfix")
    );

    // Someone else cannot start or stop it.
    let v = c.slash_json("/release", "start", "U0BOB").await;
    assert_eq!(v["response_type"], "ephemeral");
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("already running, started by <@U0ALICE>")
    );
    let v = c.slash_json("/release", "stop", "U0BOB").await;
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("only they can stop it")
    );
    assert!(c.lock().await.running.is_some());

    // With no policy file there are no admins, so --force is open (and audited).
    let v = c.slash_json("/release", "stop --force", "U0BOB").await;
    assert_eq!(v["response_type"], "in_channel");
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("force-stopped the release started by <@U0ALICE>")
    );
    assert!(c.lock().await.running.is_none());
    let audit = c.app.store.audit_log(10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "release.stop --force" && a.actor == "U0BOB")
    );

    let v = c
        .slash_json("/release", "block incident-42", "U0ALICE")
        .await;
    assert_eq!(v["text"], "⛔ <@U0ALICE> blocked releases: incident-42");
    let v = c.slash_json("/release", "history 5", "U0ALICE").await;
    let text = v["text"].as_str().unwrap();
    assert!(
        text.contains("block by <@U0ALICE> — incident-42 via slack"),
        "{text}"
    );
    assert!(text.contains("stop (forced) by <@U0BOB>"), "{text}");
    // Slack shows chat changes itself: nothing is announced for them.
    assert!(c.slack.calls_to("chat.postMessage").is_empty());
}

#[tokio::test]
async fn malformed_commands_get_usage_and_change_nothing() {
    let c = Corral::start().await;
    for (cmd, text, needle) in [
        ("/release", "launch", "is not a /release subcommand"),
        ("/release", "", "needs a subcommand"),
        ("/release", "history 9999", "from 1 to 100"),
        (
            "/upgrade",
            "library:web",
            "is not `&lt;catalog&gt;:&lt;template&gt;:&lt;version&gt;`",
        ),
        ("/upgrade", "image", "needs an image reference"),
        ("/deploy", "ftp://x/m.yml", "not ftp"),
        ("/launch", "rockets", "is not a corral command"),
        ("/release", "start \"open quote", "quote is left open"),
    ] {
        let v = c.slash_json(cmd, text, "U0ALICE").await;
        assert_eq!(v["response_type"], "ephemeral", "{cmd} {text}");
        let t = v["text"].as_str().unwrap();
        assert!(t.contains(needle), "{cmd} {text}: {t}");
        assert!(
            t.contains("Usage") || t.contains("corral understands"),
            "{t}"
        );
    }
    let v = c.slash_json("/upgrade", "help", "U0ALICE").await;
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("/upgrade image &lt;image-ref&gt;")
    );
    assert_eq!(c.lock().await, corral::lock::LockState::default());
    assert!(c.app.store.jobs(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn ssl_check_and_incomplete_forms() {
    let c = Corral::start().await;
    let r = c
        .http
        .post(format!("{}/slack/commands", c.url))
        .body("token=random&ssl_check=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "");
    let r = c
        .post_signed(
            "/slack/commands",
            FORM,
            "token=x&text=start",
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = c
        .post_signed(
            "/slack/commands",
            FORM,
            "%%%&&&===",
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 400);
    // Bodies over the limit are refused before anything is parsed.
    let big = "x".repeat(corral::api::BODY_LIMIT + 1);
    let r = c
        .post_signed("/slack/commands", FORM, &big, SECRET, crate::support::now())
        .await;
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn url_verification_and_mentions() {
    let c = Corral::start().await;
    let challenge = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/slack/events/url_verification.json"
    ))
    .unwrap();
    let r = c
        .post_signed(
            "/slack/events",
            "application/json",
            &challenge,
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let want: serde_json::Value = serde_json::from_str(&challenge).unwrap();
    assert_eq!(r.text().await.unwrap(), want["challenge"].as_str().unwrap());

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
    for _ in 0..2 {
        // The second delivery is Slack's retry of the same event_id: ignored.
        let r = c
            .post_signed(
                "/slack/events",
                "application/json",
                &body,
                SECRET,
                crate::support::now(),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let calls = c.slack.wait_for(5, |calls| !calls.is_empty()).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let posts = c.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1, "one reply despite the retry: {calls:?}");
    assert_eq!(posts[0].channel(), "C123ABC456");
    assert_eq!(posts[0].thread_ts(), Some("1515449522.000016"));
    assert!(
        posts[0]
            .text()
            .contains("started a release: from a mention")
    );
    assert_eq!(posts[0].auth.as_deref(), Some("Bearer xoxb-test"));
    assert_eq!(c.lock().await.running.unwrap().who, "U061F7AUR");

    // A mention with nonsense gets the usage in the thread; nothing changes.
    event["event_id"] = json!("Ev0000002");
    event["event"]["text"] = json!("<@U0LAN0Z89> release explode");
    let r = c
        .post_signed(
            "/slack/events",
            "application/json",
            &event.to_string(),
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let calls = c.slack.wait_for(5, |calls| calls.len() >= 2).await;
    // A refusal goes to the person who asked, not the whole thread.
    assert_eq!(calls[1].method, "chat.postEphemeral");
    assert_eq!(calls[1].body["user"], "U061F7AUR");
    assert!(calls[1].text().contains("is not a /release subcommand"));

    let r = c
        .post_signed(
            "/slack/events",
            "application/json",
            "{not json",
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn interactions_are_verified_and_routed() {
    let c = Corral::start().await;
    let form = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/slack/interactivity/block_actions.bolt_python_message.form"
    ))
    .unwrap();
    let r = c
        .post_signed(
            "/slack/interactions",
            FORM,
            form.trim_end(),
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = c
        .post_signed(
            "/slack/interactions",
            FORM,
            "nopayload=1",
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = c
        .post_signed(
            "/slack/interactions",
            FORM,
            "payload=%7Bbroken",
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_click_on_a_button_nobody_handles_tells_the_clicker_through_its_response_url() {
    let c = Corral::start().await;
    let mut payload: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/slack/interactivity/block_actions.bolt_python_message.json"
        ))
        .unwrap(),
    )
    .unwrap();
    payload["response_url"] = c.slack.webhook_url.clone().into();
    let form = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    let r = c
        .post_signed(
            "/slack/interactions",
            FORM,
            &form,
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "", "the ack says nothing itself");
    c.delivered().await;
    let answers = c.slack.calls_to("webhook");
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(
        answers[0].text().contains("no longer does anything"),
        "{answers:?}"
    );
    // Slack's limits hold: a value longer than a button can carry is not acted on.
    payload["actions"][0]["value"] = "x".repeat(2001).into();
    let form = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    let r = c
        .post_signed(
            "/slack/interactions",
            FORM,
            &form,
            SECRET,
            crate::support::now(),
        )
        .await;
    assert_eq!(r.status(), 200);
    c.delivered().await;
    assert_eq!(
        c.slack.calls_to("webhook").len(),
        1,
        "nothing more was said"
    );
}

#[tokio::test]
async fn a_job_gets_one_thread_and_its_root_is_edited() {
    let c = Corral::start().await;
    // The first post is rate-limited: corral waits Retry-After and posts once.
    c.slack
        .fail_next("chat.postMessage", Failure::RateLimited { retry_after: 1 });
    let v = c
        .slash_json("/upgrade", "library:web:12 --dry-run", "U0ALICE")
        .await;
    assert_eq!(v["response_type"], "ephemeral");
    assert!(v["text"].as_str().unwrap().starts_with("Job #1 queued"));
    let job = c
        .app
        .store
        .job(1)
        .await
        .unwrap()
        .expect("job stored before the ack");
    assert_eq!(job.channel.as_deref(), Some("C0TEAM"));
    c.app.runner.wait(1).await;
    c.delivered().await;
    let calls = c.slack.calls();
    let posts: Vec<_> = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage")
        .collect();
    // The 429, then the root once, then the failure summary in its thread.
    let roots: Vec<_> = posts.iter().filter(|p| p.thread_ts().is_none()).collect();
    assert_eq!(roots.len(), 2, "{posts:?}");
    assert!(
        roots[1].at_ms - roots[0].at_ms >= 1000,
        "no post inside the Retry-After window"
    );
    assert!(
        roots[1]
            .text()
            .contains("*Job #1* `/upgrade library:web:12 --dry-run` — "),
        "{}",
        roots[1].text()
    );
    let root_ts = c.app.store.messages(1).await.unwrap()[0].1.clone();
    let replies: Vec<_> = posts
        .iter()
        .filter(|p| p.thread_ts() == Some(&root_ts))
        .collect();
    assert_eq!(replies.len(), 1);
    assert!(replies[0].text().contains("Rancher is not configured"));
    let updates: Vec<_> = calls.iter().filter(|c| c.method == "chat.update").collect();
    assert!(updates.iter().all(|u| u.body["ts"] == root_ts.as_str()));
    // The root shows the end, whether it was posted late enough to carry it or edited.
    let shown = c
        .slack
        .posted()
        .into_iter()
        .find(|p| p.ts == root_ts)
        .unwrap();
    assert!(shown.text.contains("❌ failed"), "{}", shown.text);
    let job = c.app.store.job(1).await.unwrap().unwrap();
    assert_eq!(job.status, corral::job::JobStatus::Failed);
}

#[tokio::test]
async fn the_lock_gates_jobs() {
    let c = Corral::start_with(&[("CORRAL_DEPLOY_ALLOW", "https://artifacts.example.com/")]).await;
    c.slash_json("/release", "block freeze", "U0ALICE").await;
    let v = c
        .slash_json("/deploy", "https://artifacts.example.com/m.yml", "U0BOB")
        .await;
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("Releases are blocked by <@U0ALICE>")
    );
    assert!(c.app.store.jobs(10).await.unwrap().is_empty());
    c.slash_json("/release", "unblock", "U0ALICE").await;
    c.slash_json("/release", "start", "U0ALICE").await;
    let v = c
        .slash_json("/upgrade", "image myorg/api:2.4.1", "U0BOB")
        .await;
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("must be stopped first")
    );
    assert!(c.app.store.jobs(10).await.unwrap().is_empty());
    // The holder may run jobs during their release.
    let v = c
        .slash_json("/upgrade", "image myorg/api:2.4.1", "U0ALICE")
        .await;
    assert!(v["text"].as_str().unwrap().contains("Job #1 queued"));
    // --force passes the gate and is audited.
    let v = c
        .slash_json("/upgrade", "image myorg/api:2.4.1 --force", "U0BOB")
        .await;
    assert!(v["text"].as_str().unwrap().contains("Job #2 queued"));
    let audit = c.app.store.audit_log(20).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "lock-gate --force" && a.actor == "U0BOB")
    );
    let _ = CHANNEL;
}

#[tokio::test]
async fn policy_restricts_commands_and_force() {
    let dir = std::env::temp_dir().join(format!("corral-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.toml");
    std::fs::write(
        &path,
        "[roles]\nadmins = [\"U0ADMIN\"]\ndeployers = [\"U0ALICE\"]\n[permissions]\nupgrade = [\"deployers\"]\n",
    )
    .unwrap();
    let c = Corral::start_with(&[("CORRAL_POLICY", path.to_str().unwrap())]).await;
    let v = c.slash_json("/upgrade", "image a/b:1", "U0BOB").await;
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("not allowed to run `/upgrade`")
    );
    c.slash_json("/release", "start", "U0ALICE").await;
    let v = c.slash_json("/release", "stop --force", "U0BOB").await;
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("Only admins may use `--force`")
    );
    let v = c.slash_json("/release", "stop --force", "U0ADMIN").await;
    assert_eq!(v["response_type"], "in_channel");
    assert!(c.lock().await.running.is_none());
    // With a policy, only admins unblock.
    c.slash_json("/release", "block incident", "U0ALICE").await;
    let v = c.slash_json("/release", "unblock", "U0ALICE").await;
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("Only admins may unblock")
    );
    assert!(c.lock().await.blocked.is_some());
    let v = c.slash_json("/release", "unblock", "U0ADMIN").await;
    assert_eq!(v["response_type"], "in_channel");
    assert!(c.lock().await.blocked.is_none());
    std::fs::remove_dir_all(dir).ok();
}
