//! The playground in a real browser (headless Chromium over WebDriver): open the printed
//! URL, pick a name, `/release start`, deploy a manifest `--target local` that an
//! `[[approval]]` rule holds, click Approve as the requester (refused) and as an approver,
//! watch the job's root reach ✅, and check a screenshot is not blank.
//!
//! `CORRAL_UPDATE_SCREENSHOT=1` also writes the screenshot to `docs/playground.png`
//! (README's picture).

use std::time::Duration;

use crate::support::TempDir;
use crate::support::playground::Playground;
use crate::support::webdriver::{Browser, not_blank};

const WAIT: Duration = Duration::from_secs(60);

/// Waits until some element matching `css` has text containing `needle`.
async fn wait_text(b: &Browser, css: &str, needle: &str) {
    let script = "const [css, needle] = arguments; return [...document.querySelectorAll(css)].some(e => e.textContent.includes(needle));";
    b.wait_until(
        &format!("{css} containing {needle:?}"),
        WAIT,
        async |b: &Browser| {
            let v = b.execute(script, vec![css.into(), needle.into()]).await?;
            Ok(v.as_bool().unwrap_or(false))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

async fn pick_name(b: &Browser, name: &str) {
    let field = b.find("#name").await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(name).await.unwrap();
    b.find("#who button").await.unwrap().click().await.unwrap();
    wait_text(b, "#identity", &format!("playground:{name}")).await;
    wait_text(b, "#status", "live").await;
}

async fn type_command(b: &Browser, text: &str) {
    let field = b.wait_for("#text:not([disabled])", WAIT).await.unwrap();
    field.send_keys(text).await.unwrap();
    b.find("#composer button")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Clicks the newest Approve button and confirms the dialog.
async fn approve(b: &Browser) {
    let buttons = b
        .find_all("#messages .b-button.primary[data-action-id='approval.approve']")
        .await
        .unwrap();
    let button = buttons.last().expect("an Approve button");
    button.click().await.unwrap();
    b.wait_for("dialog#confirm[open]", WAIT).await.unwrap();
    b.find("#c-yes").await.unwrap().click().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_in_a_real_browser() {
    let dir = TempDir::new("playground-browser");
    std::fs::write(
        dir.0.join("hello.yml"),
        "commands:\n  pre:\n    - echo hello from the playground\n",
    )
    .unwrap();
    std::fs::write(
        dir.0.join("policy.toml"),
        r#"
[roles]
deployers = ["playground:alice"]
approvers = ["playground:bob"]

[permissions]
deploy = ["deployers"]

[[approval]]
commands  = ["deploy"]
approvers = ["approvers"]
required  = 1
expires   = "1h"
"#,
    )
    .unwrap();
    let allow = format!("file://{}/", dir.0.display());
    let policy = dir.0.join("policy.toml").display().to_string();
    let db = format!("sqlite://{}/c.db", dir.0.display());
    let p = Playground::start(&[
        ("CORRAL_DATABASE_URL", db.as_str()),
        ("CORRAL_DEPLOY_ALLOW", allow.as_str()),
        ("CORRAL_POLICY", policy.as_str()),
    ])
    .await
    .unwrap();
    let b = Browser::start().await.unwrap_or_else(|e| panic!("{e:#}"));
    // The printed URL logs in and leaves the token out of the address bar.
    b.goto(&corral::playground::http::url(&p.hub, p.addr))
        .await
        .unwrap();
    let here = b.current_url().await.unwrap();
    assert!(here.ends_with("/playground"), "{here}");
    pick_name(&b, "alice").await;

    type_command(&b, "/release start 1.4 <script>window.pwned=1</script>").await;
    wait_text(&b, "#messages .msg", "started a release").await;
    // The reason is shown as typed and ran nothing.
    wait_text(&b, "#messages .msg", "<script>window.pwned=1</script>").await;
    let pwned = b
        .execute("return window.pwned === 1;", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, serde_json::Value::Bool(false));

    type_command(&b, &format!("/deploy {allow}hello.yml --target local")).await;
    wait_text(&b, "#messages .msg", "Approve").await;
    // The requester's Approve is refused, to her alone.
    approve(&b).await;
    wait_text(&b, "#messages .msg.ephemeral", "never counts").await;

    // Bob, an approver, in the same page.
    pick_name(&b, "bob").await;
    approve(&b).await;
    wait_text(&b, "#messages .msg", "✅").await;

    // The thread opens beside the channel, root and replies.
    let link = b.wait_for("#messages .replies", WAIT).await.unwrap();
    link.click().await.unwrap();
    b.wait_for("#thread:not([hidden]) #replies .msg", WAIT)
        .await
        .unwrap();
    let png = b.screenshot().await.unwrap();
    assert!(not_blank(&png).unwrap(), "the screenshot is blank");
    if std::env::var("CORRAL_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        let out = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/playground.png");
        std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/docs")).unwrap();
        std::fs::write(out, &png).unwrap();
    }
    b.quit().await;
}
