//! go-cowpoke's `PATCH /api/stack` and `GET /api/_status`, byte for byte
//! (reference/cowpoke.md §2–§5), served by corral's router against the fake Rancher.

use std::sync::Arc;
use std::time::Duration;

use corral::app::App;
use corral::chat::LogChat;
use corral::config::{Config, Env};

use crate::support::fake_rancher::{ACCESS_KEY, FakeRancher, Fault, SECRET_KEY};

const TOKEN: &str = "muh-key";

struct Server {
    url: String,
    http: reqwest::Client,
    app: Arc<App>,
}

async fn serve(fake: &FakeRancher, token: Option<&str>) -> Server {
    let mut pairs = vec![
        ("RANCHER_URL", fake.url.clone()),
        ("RANCHER_USER_KEY", ACCESS_KEY.to_string()),
        ("RANCHER_USER_SECRET", SECRET_KEY.to_string()),
        ("SLACK_CHANNELS", "C0REL".to_string()),
    ];
    if let Some(t) = token {
        pairs.push(("API_KEY", t.to_string()));
    }
    let mut config = Config::from_env(&Env::from_pairs(pairs)).unwrap();
    config.rancher.poll_interval = Duration::from_millis(20);
    config.rancher.upgrade_timeout = Duration::from_millis(400);
    let app = crate::support::corral::start_app(
        Arc::new(config),
        corral::store::open("sqlite::memory:").await.unwrap(),
        Arc::new(LogChat::default()),
    );
    let router = axum::Router::new()
        .merge(corral::api::cowpoke::routes())
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Server {
        url,
        http: corral::http_client().unwrap(),
        app,
    }
}

async fn fake() -> FakeRancher {
    let f = FakeRancher::start().await;
    f.add_template(
        "library",
        "cowpoke",
        &[
            (
                "1",
                "1.0.0",
                &[("docker-compose.yml", "web:\n  image: nginx:1\n")],
            ),
            (
                "2",
                "2.0.0",
                &[
                    ("docker-compose.yml", "web:\n  image: nginx\n"),
                    ("rancher-compose.yml", "version: 2.0.0\n"),
                ],
            ),
        ],
    );
    f.set_default_action_time(Duration::from_millis(10));
    f
}

const BODY: &str = r#"{"catalog": "library", "template": "cowpoke", "templateVersion": "2.0.0"}"#;

/// PATCHes /api/stack; returns status, content type and body.
async fn patch(s: &Server, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut req = s
        .http
        .patch(format!("{}/api/stack", s.url))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, resp.text().await.unwrap())
}

const JSON_CT: (&str, &str) = ("content-type", "application/json");
const AUTH: (&str, &str) = ("bearer", TOKEN);
const JSON_UTF8: &str = "application/json; charset=utf-8";

#[tokio::test]
async fn upgrades_and_answers_like_go_cowpoke() {
    let f = fake().await;
    let d = f.add_project("Default");
    let s1 = f.add_stack(&d, "stack1e1", "catalog://library:cowpoke:1");
    f.add_stack(&d, "current", "catalog://library:cowpoke:2");
    let s = serve(&f, Some(TOKEN)).await;
    let (status, ct, body) = patch(&s, &[JSON_CT, AUTH], BODY).await;
    assert_eq!(
        (status, ct.as_str(), body.as_str()),
        (
            200,
            JSON_UTF8,
            r#"{"msg":"results from upgrading stack(s)","results":[{"name":"stack1e1","environment":"Default","upgradedTo":"2.0.0","error":""}]}"#
        )
    );
    // The upgrade request go-cowpoke sent, plus the compose files.
    let up = f
        .posts()
        .into_iter()
        .find(|p| p.action().as_deref() == Some("upgrade"))
        .unwrap();
    assert!(up.uri.contains(&s1));
    assert_eq!(
        up.body,
        r#"{"externalId":"catalog://library:cowpoke:2","dockerCompose":"web:\n  image: nginx\n","rancherCompose":"version: 2.0.0\n","environment":{"PORT":"80"}}"#
    );
    // The job is recorded like any other, with the API as its source.
    let jobs = s.app.store.jobs(10).await.unwrap();
    assert_eq!(jobs[0].source, corral::door::Source::Api);
    assert_eq!(jobs[0].channel.as_deref(), Some("C0REL"));

    // Nothing left to upgrade: 200 with no results.
    let (status, _, body) = patch(&s, &[JSON_CT, AUTH], BODY).await;
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            r#"{"msg":"results from upgrading stack(s)","results":[]}"#
        )
    );
}

#[tokio::test]
async fn any_failed_stack_makes_it_a_500_with_the_reason() {
    let f = fake().await;
    let d = f.add_project("Default");
    f.add_stack(&d, "good", "catalog://library:cowpoke:1");
    f.add_stack(&d, "bad", "catalog://library:cowpoke:1");
    f.fail(
        "bad",
        "upgrade",
        Fault::reject_422("InvalidState", "Stack is busy"),
    );
    let s = serve(&f, Some(TOKEN)).await;
    let (status, ct, body) = patch(
        &s,
        &[
            ("content-type", "application/json; charset=utf-8"),
            ("Bearer", TOKEN),
        ],
        BODY,
    )
    .await;
    assert_eq!((status, ct.as_str()), (500, JSON_UTF8));
    assert_eq!(
        body,
        r#"{"msg":"results from upgrading stack(s)","results":[{"name":"bad","environment":"Default","upgradedTo":"","error":"upgrade refused: Rancher 422 InvalidState: Stack is busy"},{"name":"good","environment":"Default","upgradedTo":"2.0.0","error":""}]}"#
    );
}

#[tokio::test]
async fn plan_errors_use_go_cowpokes_messages_and_rancher_status() {
    let f = fake().await;
    let s = serve(&f, Some(TOKEN)).await;
    let (status, ct, body) = patch(&s, &[JSON_CT, AUTH], BODY).await;
    assert_eq!(
        (status, ct.as_str(), body.as_str()),
        (
            500,
            JSON_UTF8,
            r#"{"msg":"No environments could be found"}"#
        )
    );
    f.add_project("Default");
    let v = r#"{"catalog":"library","template":"cowpoke","templateVersion":"9.9.9"}"#;
    let (status, _, body) = patch(&s, &[JSON_CT, AUTH], v).await;
    assert_eq!(
        (status, body.as_str()),
        (404, r#"{"msg":"url not found for template"}"#)
    );
    let t = r#"{"catalog":"library","template":"nope","templateVersion":"1"}"#;
    let (status, _, body) = patch(&s, &[JSON_CT, AUTH], t).await;
    assert_eq!(
        (status, body.as_str()),
        (404, r#"{"msg":"Template not found"}"#)
    );
}

#[tokio::test]
async fn bad_requests_get_an_empty_400_and_reach_no_rancher() {
    let f = fake().await;
    f.add_project("Default");
    let s = serve(&f, Some(TOKEN)).await;
    for (ct, body) in [
        (
            "application/json",
            r#"{"catalog":"library","template":"cowpoke"}"#,
        ),
        (
            "application/json",
            r#"{"catalog":"library","template":"cowpoke","templateVersion":""}"#,
        ),
        ("application/json", "{not json"),
        (
            "application/x-www-form-urlencoded",
            "catalog=library&template=cowpoke&templateVersion=2.0.0",
        ),
    ] {
        let (status, _, text) = patch(&s, &[("content-type", ct), AUTH], body).await;
        assert_eq!((status, text.as_str()), (400, ""), "{body}");
    }
    assert!(
        f.requests().is_empty(),
        "go-cowpoke called Rancher after a 400; corral does not"
    );
}

#[tokio::test]
async fn authentication() {
    let f = fake().await;
    f.add_project("Default");
    let s = serve(&f, Some(TOKEN)).await;
    for headers in [vec![JSON_CT], vec![JSON_CT, ("bearer", "a bad key")]] {
        let (status, ct, body) = patch(&s, &headers, BODY).await;
        assert_eq!(
            (status, ct.as_str(), body.as_str()),
            (401, JSON_UTF8, r#"{"status":"unauthorized"}"#)
        );
    }
    // corral also takes the standard header.
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, _) = patch(&s, &[JSON_CT, ("authorization", &bearer)], BODY).await;
    assert_eq!(status, 200);
    // Another method on the path: auth first, then gin's 404.
    let r = s
        .http
        .get(format!("{}/api/stack", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = s
        .http
        .get(format!("{}/api/stack", s.url))
        .header("bearer", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().await.unwrap(), "404 page not found");

    // With no token configured corral refuses, and says how to set one.
    let f2 = fake().await;
    let open = serve(&f2, None).await;
    let (status, _, body) = patch(&open, &[JSON_CT], BODY).await;
    assert_eq!(status, 401);
    assert!(
        body.starts_with(r#"{"status":"unauthorized","msg":"#),
        "{body}"
    );
    assert!(body.contains("CORRAL_API_TOKEN"));
    assert!(f2.requests().is_empty());
}

#[tokio::test]
async fn status_endpoint() {
    let f = fake().await;
    let s = serve(&f, Some(TOKEN)).await;
    let r = s
        .http
        .get(format!("{}/api/_status", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.text().await.unwrap(), "service up");
    let r = s
        .http
        .post(format!("{}/api/_status", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.text().await.unwrap(), "404 page not found");
}

#[tokio::test]
async fn refused_while_releases_are_blocked() {
    let f = fake().await;
    let d = f.add_project("Default");
    f.add_stack(&d, "a", "catalog://library:cowpoke:1");
    let s = serve(&f, Some(TOKEN)).await;
    let block = corral::app::Request {
        command: corral::command::Command::Release(corral::command::ReleaseCmd::Block {
            reason: "freeze".into(),
        }),
        user: "U0BOB".into(),
        source: corral::app::Source::Slack,
        channel: None,
    };
    assert_eq!(s.app.handle(block).await.outcome, corral::app::Outcome::Ok);
    let (status, ct, body) = patch(&s, &[JSON_CT, AUTH], BODY).await;
    assert_eq!((status, ct.as_str()), (409, JSON_UTF8));
    assert!(
        body.starts_with(r#"{"msg":""#) && body.to_lowercase().contains("block"),
        "{body}"
    );
    assert!(f.requests().is_empty());
}
