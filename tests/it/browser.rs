//! The browser kit itself (support/webdriver.rs) against a tiny page served here: type,
//! press Enter, click, read text and attributes, run a script, wait, take screenshots
//! (one that shows something, one of a white page that is blank), and leave no process
//! behind.

use std::time::Duration;

use axum::response::Html;
use axum::routing::get;

use crate::support::webdriver::{self, Browser, ENTER};

/// Generous: Chromium on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>kit</title>
<style>body { font: 24px sans-serif; background: #fff; color: #111; margin: 40px; }
#result { padding: 20px; background: #2b6; color: #fff; }</style></head>
<body>
<h1>Browser kit</h1>
<form id="f"><input id="name" name="name" autocomplete="off"></form>
<button id="greet" data-kind="primary">Greet</button>
<div id="result"></div>
<ul id="list"><li>one</li><li>two</li><li>three</li></ul>
<script>
  const show = (how) => {
    const r = document.getElementById('result');
    r.textContent = 'Hello, ' + document.getElementById('name').value + ' (' + how + ')';
    r.className = 'done';
  };
  document.getElementById('greet').addEventListener('click', () => show('click'));
  document.getElementById('f').addEventListener('submit', (e) => {
    e.preventDefault();
    // Late on purpose: wait_for must poll.
    setTimeout(() => show('enter'), 300);
  });
</script>
</body></html>"#;

const BLANK: &str = r#"<!doctype html><html><body style="background:#fff"></body></html>"#;

/// Serves the test page on a free loopback port; returns its base URL.
async fn serve_page() -> String {
    let app = axum::Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/blank", get(|| async { Html(BLANK) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn browser() -> Browser {
    match Browser::start().await {
        Ok(b) => b,
        Err(e) => panic!("cannot start the browser: {e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_clicks_reads_and_waits() {
    let base = serve_page().await;
    let b = browser().await;
    b.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(b.current_url().await.unwrap(), format!("{base}/"));

    let name = b.find("#name").await.unwrap();
    name.send_keys("corral").await.unwrap();
    b.find("#greet").await.unwrap().click().await.unwrap();
    let result = b.wait_for("#result.done", WAIT).await.unwrap();
    assert_eq!(result.text().await.unwrap(), "Hello, corral (click)");
    assert_eq!(
        b.find("#greet")
            .await
            .unwrap()
            .attribute("data-kind")
            .await
            .unwrap()
            .as_deref(),
        Some("primary")
    );
    assert_eq!(
        b.find("#greet")
            .await
            .unwrap()
            .attribute("nope")
            .await
            .unwrap(),
        None
    );

    // Enter submits the form; the page answers late, so only polling sees it.
    name.clear().await.unwrap();
    name.send_keys(&format!("enter{ENTER}")).await.unwrap();
    b.wait_until("the form answers Enter", WAIT, async |b: &Browser| {
        Ok(b.find("#result").await?.text().await? == "Hello, enter (enter)")
    })
    .await
    .unwrap();

    let items = b.find_all("#list li").await.unwrap();
    let mut texts = Vec::new();
    for i in &items {
        texts.push(i.text().await.unwrap());
    }
    assert_eq!(texts, ["one", "two", "three"]);
    assert!(b.find_all(".absent").await.unwrap().is_empty());

    // A script's result comes back as JSON, elements can be passed in.
    let v = b
        .execute(
            "return {title: document.title, n: arguments[0] + 1, tag: arguments[1].tagName};",
            vec![serde_json::json!(41), items[0].as_arg()],
        )
        .await
        .unwrap();
    assert_eq!(v, serde_json::json!({"title": "kit", "n": 42, "tag": "LI"}));

    // Missing things fail clearly, and waiting gives up at its bound.
    let e = b.find("#absent").await.err().expect("no such element");
    assert!(format!("{e}").contains("no such element"), "{e}");
    let e = b
        .wait_for("#absent", Duration::from_millis(300))
        .await
        .err()
        .expect("times out");
    assert!(format!("{e}").contains("#absent"), "{e}");
    let e = b
        .wait_until("never", Duration::from_millis(300), async |_: &Browser| {
            Ok(false)
        })
        .await
        .expect_err("times out");
    assert!(format!("{e}").starts_with("never: not true"), "{e}");
    let e = b
        .execute("throw new Error('boom')", vec![])
        .await
        .err()
        .unwrap();
    assert!(format!("{e}").contains("boom"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_tell_a_page_from_a_blank_one() {
    let base = serve_page().await;
    let b = browser().await;
    b.goto(&format!("{base}/")).await.unwrap();
    let shot = b.screenshot().await.unwrap();
    assert_eq!(&shot[..8], b"\x89PNG\r\n\x1a\n");
    assert!(webdriver::not_blank(&shot).unwrap(), "the page shows text");
    let size = b
        .execute("return [window.innerWidth, window.innerHeight]", vec![])
        .await
        .unwrap();
    assert_eq!(size, serde_json::json!([1280, 900]), "window size");

    b.goto(&format!("{base}/blank")).await.unwrap();
    let shot = b.screenshot().await.unwrap();
    assert!(
        !webdriver::not_blank(&shot).unwrap(),
        "a white page is blank"
    );
    assert_eq!(webdriver::ink_pixels(&shot).unwrap(), 0);

    assert!(webdriver::not_blank(b"not a png").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_browser_leaves_no_process() {
    let base = serve_page().await;
    let b = browser().await;
    b.goto(&format!("{base}/")).await.unwrap();
    let driver = b.driver_pid() as i32;
    let needle = b.profile_dir().display().to_string();
    let before = webdriver::pids_naming(&needle);
    assert!(!before.is_empty(), "chromium runs with its profile dir");
    drop(b);
    // Killed processes vanish from /proc once reaped (by us, or by init for orphans).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = webdriver::pids_naming(&needle);
        // SAFETY: signal 0 only asks whether the pid exists.
        let driver_alive = unsafe { libc::kill(driver, 0) } == 0;
        if left.is_empty() && !driver_alive {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left running: chromium {left:?}, chromedriver {driver_alive}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // quit() is the polite way and leaves nothing either.
    let b = browser().await;
    let needle = b.profile_dir().display().to_string();
    b.quit().await;
    let deadline = std::time::Instant::now() + WAIT;
    while !webdriver::pids_naming(&needle).is_empty() {
        assert!(std::time::Instant::now() < deadline, "quit left chromium");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
