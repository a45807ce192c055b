//! The playground over HTTP, as the page and as an attacker would use it: who gets in
//! (loopback, `Host`, forwarding headers, the token and its cookie, `Origin`, `on`,
//! `off`), escaping through every field, the live feed (resume, cap, lifetime), history
//! from the store across a restart, and a click reaching `App::click`.

use std::time::Duration;

use serde_json::json;

use crate::support::TempDir;
use crate::support::playground::Playground;

async fn loopback() -> Playground {
    Playground::start(&[]).await.expect("on by default")
}

#[tokio::test]
async fn the_token_becomes_a_strict_cookie_and_nothing_gets_in_without_it() {
    let p = loopback().await;
    let page = |q: &str| format!("{}/playground{q}", p.url);
    // No token, a wrong one, a cookie with a wrong value.
    let r = p.http.get(page("")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("URL `corral serve` printed")
    );
    let r = p.http.get(page("?token=nope")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = p
        .http
        .get(page(""))
        .header("cookie", "corral_playground=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The token: a cookie (HttpOnly, SameSite=Strict) and a redirect without it.
    let r = p
        .http
        .get(page(&format!("?token={}", p.hub.token())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/playground");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with(&format!("corral_playground={};", p.hub.token())));
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    // With the cookie: the page, under a policy that runs only its own script.
    let r = p.get("/playground").await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let html = r.text().await.unwrap();
    assert!(html.contains("/playground/page.js") && html.contains("# playground"));
    // Every data route wants the session.
    for path in [
        "/playground/history?user=alice",
        "/playground/events?user=alice",
    ] {
        let r = p.http.get(format!("{}{path}", p.url)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = p
        .http
        .post(format!("{}/playground/command", p.url))
        .header("origin", &p.url)
        .json(&json!({"user": "alice", "text": "/release start"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(p.app.store.lock_state().await.unwrap().running.is_none());
}

#[tokio::test]
async fn only_loopback_names_and_no_proxies_in_loopback_mode() {
    let p = loopback().await;
    let with = |name: &'static str, value: &'static str| {
        p.http
            .get(format!("{}/playground/history?user=alice", p.url))
            .header("cookie", p.cookie())
            .header(name, value)
    };
    // DNS rebinding: the right peer, the wrong name.
    for host in ["evil.example", "evil.example:8080", "127.0.0.1.nip.io"] {
        let r = with("host", host).send().await.unwrap();
        assert_eq!(r.status(), 403, "{host}");
        assert!(r.text().await.unwrap().contains("loopback name"));
    }
    let r = with("host", "localhost").send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A proxy in front makes every client look local: refused.
    for (h, v) in [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
        ("x-forwarded-host", "corral.example"),
        ("x-real-ip", "203.0.113.9"),
    ] {
        let r = with(h, v).send().await.unwrap();
        assert_eq!(r.status(), 403, "{h}");
    }
    // Even the token login is refused through a proxy.
    let r = p
        .http
        .get(format!("{}/playground?token={}", p.url, p.hub.token()))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn state_changes_need_the_pages_own_origin() {
    let p = loopback().await;
    let body = json!({"user": "alice", "text": "/release start"});
    let send = |origin: Option<&'static str>, site: Option<&'static str>| {
        let mut r = p
            .http
            .post(format!("{}/playground/command", p.url))
            .header("cookie", p.cookie())
            .json(&body);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(s) = site {
            r = r.header("sec-fetch-site", s);
        }
        r.send()
    };
    for (origin, site) in [
        (None, None),
        (Some("http://evil.example"), None),
        (Some("null"), None),
        (Some("http://localhost"), None),
    ] {
        let r = send(origin, site).await.unwrap();
        assert_eq!(r.status(), 403, "{origin:?}");
    }
    let own: &'static str = Box::leak(p.url.clone().into_boxed_str());
    let r = send(Some(own), Some("cross-site")).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(p.app.store.lock_state().await.unwrap().running.is_none());
    let r = send(Some(own), Some("same-origin")).await.unwrap();
    assert_eq!(r.status(), 200);
    let lock = p.app.store.lock_state().await.unwrap();
    assert_eq!(lock.running.unwrap().who, "playground:alice");
    // Clicks too.
    let r = p
        .http
        .post(format!("{}/playground/click", p.url))
        .header("cookie", p.cookie())
        .json(&json!({"user": "alice", "action_id": "release.stop", "value": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn on_serves_other_names_and_asks_for_the_api_token() {
    let p = Playground::start(&[
        ("CORRAL_PLAYGROUND", "on"),
        ("CORRAL_API_TOKEN", "the-api-token"),
    ])
    .await
    .unwrap();
    // Any Host; no session: the login form.
    let r = p
        .http
        .get(format!("{}/playground", p.url))
        .header("host", "corral.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("API token"));
    // The printed token is not a login here.
    let r = p
        .http
        .get(format!("{}/playground?token={}", p.url, p.hub.token()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let login = |token: &'static str, origin: Option<String>| {
        let mut r = p
            .http
            .post(format!("{}/playground/login", p.url))
            .form(&[("token", token)]);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    assert_eq!(login("the-api-token", None).await.unwrap().status(), 403);
    assert_eq!(
        login("wrong", Some(p.url.clone())).await.unwrap().status(),
        401
    );
    let r = login("the-api-token", Some(p.url.clone())).await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    // Behind a proxy is fine in `on`.
    let r = p
        .http
        .get(format!("{}/playground/history?user=alice", p.url))
        .header("cookie", p.cookie())
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // `on` without an API token lets nobody in.
    let p = Playground::start(&[("CORRAL_PLAYGROUND", "on")])
        .await
        .unwrap();
    let r = p
        .http
        .get(format!("{}/playground", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("CORRAL_API_TOKEN"));
}

#[tokio::test]
async fn off_removes_the_routes() {
    assert!(
        Playground::start(&[("CORRAL_PLAYGROUND", "off")])
            .await
            .is_none()
    );
    // The router `corral serve` builds without it answers 404.
    let c = crate::support::corral::Corral::start_with(&[("CORRAL_PLAYGROUND", "off")]).await;
    for path in [
        "/playground",
        "/playground/page.js",
        "/playground/events?user=a",
    ] {
        let r = c.http.get(format!("{}{path}", c.url)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let bad = corral::config::Config::from_env(&corral::config::Env::from_pairs(vec![(
        "CORRAL_PLAYGROUND",
        "public",
    )]))
    .unwrap_err();
    assert!(bad.to_string().contains("CORRAL_PLAYGROUND"), "{bad}");
}

const HOSTILE: &str = "<script>alert(1)</script> <@U123> <!channel> <img src=x onerror=alert(1)>";

fn inert(html: &str) {
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<@U123>"), "{html}");
    assert!(!html.contains("<!channel>"), "{html}");
}

#[tokio::test]
async fn hostile_text_is_inert_in_every_field_it_reaches() {
    let p = loopback().await;
    let mut feed = p.feed("alice", None).await;
    // A reason (the announcement), an argument quoted back (ephemeral), a mention (the
    // person's own message), a job's command (its thread and card).
    let r = p
        .command("alice", &format!("/release start {HOSTILE}"))
        .await;
    inert(r["html"].as_str().unwrap());
    let r = p.command("alice", &format!("/release {HOSTILE}")).await;
    assert_eq!(r["visibility"], "ephemeral");
    inert(r["html"].as_str().unwrap());
    p.command("alice", &format!("@corral {HOSTILE}")).await;
    p.command(
        "alice",
        &format!("/deploy https://x.example/{HOSTILE} --target local"),
    )
    .await;
    crate::support::corral::delivered(&p.app).await;
    let (e, before) = feed.until("onerror").await;
    for ev in before.iter().chain([&e]) {
        inert(&ev.data);
    }
    let h = p.history("alice").await;
    let all = h["messages"].to_string();
    inert(&all);
    assert!(all.contains("&lt;script&gt;"), "{all}");
    // The person's message kept its author; it pings nobody.
    assert!(all.contains("playground:alice"), "{all}");
    // Names are checked, never echoed into markup.
    for bad in ["%3Cscript%3E", "Alice", "a%20b", ""] {
        let r = p.get(&format!("/playground/history?user={bad}")).await;
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = p
        .post(
            "/playground/command",
            json!({"user": "<script>", "text": "/release start"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    for body in [
        json!({"user": "a"}),
        json!("x"),
        json!({"user": "a", "text": ""}),
    ] {
        let r = p.post("/playground/command", body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
    }
    let r = p
        .post(
            "/playground/command",
            json!({"user": "a", "text": "x".repeat(5000)}),
        )
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn the_feed_is_live_private_resumable_and_bounded() {
    let p = Playground::start(&[
        ("CORRAL_PLAYGROUND_MAX_STREAMS", "2"),
        ("CORRAL_PLAYGROUND_STREAM_LIFETIME", "3s"),
    ])
    .await
    .unwrap();
    let mut alice = p.feed("alice", None).await;
    let mut bob = p.feed("bob", None).await;
    assert_eq!((alice.status, bob.status), (200, 200));
    // The cap: a third is refused, saying when to retry.
    let third = p.get("/playground/events?user=carol").await;
    assert_eq!(third.status(), 503);
    assert!(third.headers().contains_key("retry-after"));
    // The channel message reaches both; an ephemeral only its person.
    p.command("alice", "/release start 1.4").await;
    let (a, _) = alice.until("started a release").await;
    let (b, _) = bob.until("started a release").await;
    let ev: serde_json::Value = serde_json::from_str(&a.data).unwrap();
    assert_eq!(ev["kind"], "post");
    assert_eq!(ev["channel"], "playground");
    assert!(ev["ts"].as_str().unwrap().contains('.'));
    assert_eq!(a.id, b.id);
    p.command("alice", "@corral release bogus").await;
    let (mine, _) = alice.until("ephemeral").await;
    let mine: serde_json::Value = serde_json::from_str(&mine.data).unwrap();
    assert_eq!(mine["user"], "playground:alice");
    // Bob sees alice's mention (a channel message) and its thread, not her ephemeral.
    p.command("bob", "@corral release status").await;
    let (bobs, before) = bob.until("\"ephemeral\"").await;
    assert!(bobs.data.contains("playground:bob"), "{}", bobs.data);
    assert!(
        before
            .iter()
            .all(|e| !e.data.contains("\"user\":\"playground:alice\"")),
        "{before:?}"
    );
    // Resume: reconnecting after the first event replays what came after it.
    let first = a.id.clone().unwrap();
    drop(alice);
    drop(bob);
    // The slots are free again once those connections are gone.
    let mut again = None;
    for _ in 0..100 {
        let f = p.feed("alice", Some(&first)).await;
        if f.status == 200 {
            again = Some(f);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = again.expect("a slot frees when its feed closes");
    let replayed = again.next(Duration::from_secs(10)).await.unwrap();
    assert_ne!(replayed.id.as_deref(), Some(first.as_str()));
    assert!(replayed.data.contains("release bogus") || replayed.data.contains("ephemeral"));
    // An id from another process (or too old): reload.
    let mut stale = p.feed("bob", Some("1-1")).await;
    let e = stale.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(e.event.as_deref(), Some("reload"));
    drop(stale);
    // The lifetime ends a feed (the page reconnects): the stream closes by itself.
    let mut ended = false;
    for _ in 0..50 {
        if again.next(Duration::from_secs(10)).await.is_none() {
            ended = true;
            break;
        }
    }
    assert!(ended, "the feed outlived its lifetime");
}

#[tokio::test]
async fn history_comes_from_the_store_across_a_restart() {
    let dir = TempDir::new("playground-history");
    let db = format!("sqlite://{}/c.db", dir.0.display());
    let env = [("CORRAL_DATABASE_URL", db.as_str())];
    {
        let p = Playground::start(&env).await.unwrap();
        p.command("alice", "/release start first").await;
        p.command("alice", "@corral release status").await;
        crate::support::corral::delivered(&p.app).await;
        let h = p.history("alice").await;
        let msgs = h["messages"].as_array().unwrap();
        // The announcement, alice's message, its threaded answer? (status is ephemeral)
        assert!(msgs.len() >= 2, "{h}");
        assert!(h["last_event_id"].as_str().unwrap().contains('-'));
    }
    let p = Playground::start(&env).await.unwrap();
    let h = p.history("bob").await;
    let msgs = h["messages"].as_array().unwrap();
    let texts: Vec<String> = msgs.iter().map(|m| m["html"].to_string()).collect();
    assert!(texts[0].contains("started a release: first"), "{texts:?}");
    assert_eq!(msgs[1]["author"], "playground:alice");
    assert!(texts[1].contains("@corral release status"), "{texts:?}");
    assert_eq!(h["identity"], "playground:bob");
    // A reply knows its thread: stop from a mention answers under it.
    p.command("alice", "@corral release stop").await;
    crate::support::corral::delivered(&p.app).await;
    let h = p.history("bob").await;
    let msgs = h["messages"].as_array().unwrap();
    let reply = msgs
        .iter()
        .find(|m| {
            m["html"].to_string().contains("finished the release") && !m["thread_ts"].is_null()
        })
        .unwrap_or_else(|| panic!("no threaded reply: {h}"));
    let root = msgs
        .iter()
        .find(|m| m["ts"] == reply["thread_ts"])
        .expect("its root is in the history");
    assert_eq!(root["author"], "playground:alice");
}

#[tokio::test]
async fn a_click_goes_through_app_click_with_the_playground_identity() {
    let p = loopback().await;
    let mut feed = p.feed("alice", None).await;
    p.command("alice", "/release start").await;
    let since = p
        .app
        .store
        .lock_state()
        .await
        .unwrap()
        .running
        .unwrap()
        .since;
    // Alice's Stop release button, answered by the handler Slack's interactions use,
    // through the feed.
    let r = p
        .post(
            "/playground/click",
            json!({"user": "alice", "action_id": "release.stop", "value": since.to_string()}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let ack: serde_json::Value = r.json().await.unwrap();
    assert!(
        p.app.store.lock_state().await.unwrap().running.is_none(),
        "{ack}"
    );
    let (e, _) = feed.until("\"ephemeral\"").await;
    assert!(e.data.contains("playground:alice"), "{}", e.data);
    // A button this process does not know does nothing, and says so.
    let r = p
        .post(
            "/playground/click",
            json!({"user": "alice", "action_id": "nope.x", "value": "1"}),
        )
        .await;
    let ack: serde_json::Value = r.json().await.unwrap();
    assert!(
        ack["text"]
            .as_str()
            .unwrap()
            .contains("no longer does anything")
    );
    // Over Slack's limits: refused as unreadable, nothing runs.
    let r = p
        .post(
            "/playground/click",
            json!({"user": "alice", "action_id": "release.stop", "value": "9".repeat(3000)}),
        )
        .await;
    let ack: serde_json::Value = r.json().await.unwrap();
    assert!(
        ack["text"].as_str().unwrap().contains("could not be read"),
        "{ack}"
    );
    // The audit log names the playground.
    let audit = p.app.store.audit_log(20).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.actor == "playground:alice" && a.source.to_string() == "playground"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn with_slack_it_mirrors_read_only_unless_input_is_on() {
    let slack = crate::support::fake_slack::FakeSlack::start().await;
    let extra = [
        ("SLACK_BOT_TOKEN", "xoxb-test"),
        ("SLACK_API_URL", slack.api_url.as_str()),
        ("CORRAL_CHANNEL", "C0RELEASES"),
    ];
    let cfg = corral::config::Config::from_env(&corral::config::Env::from_pairs(
        crate::support::playground::env(&extra),
    ))
    .unwrap();
    let inner = corral::app::destination(&cfg).unwrap();
    let p = Playground::start_with(&extra, inner).await.unwrap();
    let r = p
        .post(
            "/playground/command",
            json!({"user": "alice", "text": "/release start"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("CORRAL_PLAYGROUND_INPUT"));
    // What corral says in the mirrored channel shows, with Slack's own ts.
    let mut feed = p.feed("alice", None).await;
    p.app
        .say(vec![corral::store::NewMessage::post(
            1,
            "C0RELEASES",
            corral::chat::Message::text("hello from Slack's side"),
        )])
        .await;
    let (e, _) = feed.until("hello from Slack").await;
    let ev: serde_json::Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(ev["channel"], "C0RELEASES");
    crate::support::corral::delivered(&p.app).await;
    let h = p.history("alice").await;
    assert_eq!(h["input"], false);
    assert_eq!(h["messages"][0]["ts"], ev["ts"]);
    assert_eq!(slack.posted().len(), 1, "Slack got it too");
}
