//! releasestatus's four endpoints, byte for byte, over every cell of its state table.

use crate::support::corral::{CHANNEL, Corral, TOKEN, raw, without_date};

fn request(method: &str, path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
}

const ONE: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 1\r\n\r\n1";
const ZERO: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 1\r\n\r\n0";

async fn call(c: &Corral, method: &str, path: &str) -> String {
    without_date(&raw(c.addr, &request(method, path, Some(TOKEN))).await)
}

/// Drives a fresh corral into state (R, B) through the endpoints themselves.
async fn reach(running: bool, blocked: bool) -> Corral {
    let c = Corral::start().await;
    if running {
        assert_eq!(call(&c, "GET", "/start?name=setup").await, ONE);
    }
    if blocked {
        assert_eq!(call(&c, "GET", "/block").await, ONE);
    }
    c
}

#[tokio::test]
async fn every_cell_of_the_state_table() {
    // (R, B), request, expected body, (R, B) after.
    let table = [
        ((false, false), "/start?name=bob", ONE, (true, false)),
        ((false, false), "/stop", ZERO, (false, false)),
        ((false, false), "/block", ONE, (false, true)),
        ((false, false), "/unblock", ZERO, (false, false)),
        ((true, false), "/start?name=bob", ZERO, (true, false)),
        ((true, false), "/stop", ONE, (false, false)),
        ((true, false), "/block", ONE, (true, true)),
        ((true, false), "/unblock", ZERO, (true, false)),
        ((false, true), "/start?name=bob", ZERO, (false, true)),
        ((false, true), "/stop", ZERO, (false, true)),
        ((false, true), "/block", ZERO, (false, true)),
        ((false, true), "/unblock", ONE, (false, false)),
        ((true, true), "/start?name=bob", ZERO, (true, true)),
        ((true, true), "/stop", ONE, (false, true)),
        ((true, true), "/block", ZERO, (true, true)),
        ((true, true), "/unblock", ONE, (true, false)),
    ];
    for ((r, b), path, want, (r2, b2)) in table {
        let c = reach(r, b).await;
        assert_eq!(call(&c, "GET", path).await, want, "R={r} B={b} {path}");
        let s = c.lock().await;
        assert_eq!(
            (s.running.is_some(), s.blocked.is_some()),
            (r2, b2),
            "R={r} B={b} {path}"
        );
    }
}

#[tokio::test]
async fn any_method_exact_paths_and_the_name() {
    let c = Corral::start().await;
    assert_eq!(
        call(&c, "POST", "/start?name=J%C3%B6rg+X&name=other").await,
        ONE
    );
    assert_eq!(c.lock().await.running.unwrap().who, "releasestatus:Jörg X");
    let head = call(&c, "HEAD", "/stop").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        c.lock().await.running.is_none(),
        "HEAD changes state like GET"
    );
    assert_eq!(call(&c, "PUT", "/start").await, ONE);
    assert_eq!(
        c.lock().await.running.unwrap().who,
        "releasestatus:an unknown user"
    );
    for path in ["/start/", "/", "/start/x", "/STOP"] {
        let resp = call(&c, "GET", path).await;
        assert_eq!(
            resp,
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain; charset=utf-8\r\nx-content-type-options: nosniff\r\ncontent-length: 19\r\n\r\n404 page not found\n",
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_api_token_is_required() {
    let c = Corral::start().await;
    for token in [None, Some("wrong")] {
        let resp = raw(c.addr, &request("GET", "/start?name=mallory", token)).await;
        assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    }
    let go_cowpoke_style =
        format!("GET /block HTTP/1.1\r\nHost: x\r\nbearer: {TOKEN}\r\nConnection: close\r\n\r\n");
    assert_eq!(without_date(&raw(c.addr, &go_cowpoke_style).await), ONE);
    assert!(c.lock().await.running.is_none());
    assert!(c.lock().await.blocked.is_some());

    let off = Corral::start_with(&[("CORRAL_API_TOKEN", "")]).await;
    let resp = raw(off.addr, &request("GET", "/start", Some("anything"))).await;
    assert!(resp.starts_with("HTTP/1.1 401"));
    assert!(resp.contains("CORRAL_API_TOKEN"), "{resp}");
    assert!(off.lock().await.running.is_none());
}

#[tokio::test]
async fn lock_changes_over_http_are_announced_in_slack() {
    let c = Corral::start().await;
    assert_eq!(call(&c, "GET", "/start?name=deploybot").await, ONE);
    assert_eq!(call(&c, "GET", "/start?name=again").await, ZERO);
    let calls = c.slack.wait_for(5, |calls| !calls.is_empty()).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let posts = c.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1, "refusals are not announced: {calls:?}");
    assert_eq!(posts[0].channel(), CHANNEL);
    assert_eq!(
        posts[0].text(),
        "🚀 releasestatus:deploybot started a release (via releasestatus)"
    );
    let history = c.app.store.lock_history(10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].source, corral::door::Source::ReleaseStatus);
}
