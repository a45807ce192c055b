//! The deploy path as an attacker tries it (issue 9): redirects leaving the allow-list,
//! encoded separators, a manifest asking for the bot's secrets, system roots as `dest`,
//! report tokens and hosts, credentials in logs, Serf and Consul auth. Each test was
//! written first and failed on the code before its fix.

use crate::deploy::{Sandbox, agent};
use crate::deploy_fanout::run_job;
use crate::support::corral::Corral;
use crate::support::files::Files;

const TEST_TAR_SHA1: &str = "7b57db167410e46720b1d636ee6cb6c147efac3a";

fn touch_manifest(marker: &std::path::Path) -> String {
    format!("commands:\n  pre:\n    - touch {}\n", marker.display())
}

/// Hole 1: an allowed URL answering `302` to another origin made the bot run that
/// origin's manifest. Every hop is now checked like the first URL.
#[tokio::test]
async fn bot_checks_every_redirect_hop_against_the_allow_list() {
    let sb = Sandbox::new("redirect-bot");
    let allowed = Files::start().await;
    let evil = Files::start().await;
    let marker = sb.dir.join("evil-ran");
    evil.add("evil.yml", touch_manifest(&marker));
    let cross = allowed.redirect("releases/m.yml", &format!("{}/evil.yml", evil.url));
    // Same host, but out of the prefix.
    allowed.add("other/evil.yml", touch_manifest(&marker));
    let sideways = allowed.redirect("releases/side.yml", "/other/evil.yml");
    // A hop that stays under the prefix is followed.
    let good_marker = sb.dir.join("good-ran");
    allowed.add("releases/new.yml", touch_manifest(&good_marker));
    let inside = allowed.redirect("releases/old.yml", "/releases/new.yml");
    let c =
        Corral::start_with(&[("CORRAL_DEPLOY_ALLOW", &format!("{}/releases/", allowed.url))]).await;
    for url in [&cross, &sideways] {
        for flags in ["", " --dry-run"] {
            let job = run_job(&c, &format!("deploy {url}{flags}")).await;
            let summary = job.outcome.clone().unwrap().summary;
            assert_eq!(job.status.to_string(), "failed", "{url}{flags}: {summary}");
            assert!(
                summary.contains("redirect") && summary.contains("not allowed"),
                "{url}{flags}: {summary}"
            );
        }
    }
    assert!(!marker.exists(), "the redirected manifest ran");
    assert!(evil.gets().is_empty(), "the other origin was fetched");
    assert!(
        !allowed.gets().iter().any(|(p, _)| p == "other/evil.yml"),
        "a path outside the prefix was fetched"
    );
    let job = run_job(&c, &format!("deploy {inside}")).await;
    assert_eq!(
        job.status.to_string(),
        "succeeded",
        "{:?}",
        job.outcome.map(|o| o.summary)
    );
    assert!(good_marker.exists());
}

/// Hole 1, the agent: with `CORRAL_DEPLOY_ALLOW` set on a host, a forged event's
/// manifest and every hop of its manifest and its source stay under the prefixes;
/// without it, the agent follows redirects like stretcher.
#[tokio::test]
async fn agent_honours_the_allow_list_on_every_hop() {
    let sb = Sandbox::new("redirect-agent");
    let allowed = Files::start().await;
    let evil = Files::start().await;
    let marker = sb.dir.join("evil-ran");
    evil.add("evil.yml", touch_manifest(&marker));
    let manifest_hop = allowed.redirect("releases/m.yml", &format!("{}/evil.yml", evil.url));
    let prefix = format!("{}/releases/", allowed.url);
    let allow = [("CORRAL_DEPLOY_ALLOW", prefix.as_str())];

    let r = agent(&sb.dir, &manifest_hop, &[], &allow).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not allowed"), "{}", r.stderr);
    assert!(!marker.exists());
    assert!(evil.gets().is_empty());
    // The first URL itself.
    let r = agent(&sb.dir, &format!("{}/evil.yml", evil.url), &[], &allow).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not allowed"), "{}", r.stderr);
    assert!(evil.gets().is_empty());

    // A source whose hop leaves the prefix: nothing reaches dest.
    let tar = std::fs::read(sb.dir.join("testdata/test.tar")).unwrap();
    evil.add("test.tar", tar);
    let src = allowed.redirect("releases/test.tar", &format!("{}/test.tar", evil.url));
    allowed.add(
        "releases/app.yml",
        format!(
            "src: {src}\nchecksum: {TEST_TAR_SHA1}\ndest: {}\n",
            sb.dest.display()
        ),
    );
    let app = format!("{}/releases/app.yml", allowed.url);
    let r = agent(&sb.dir, &app, &[], &allow).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not allowed"), "{}", r.stderr);
    assert!(evil.gets().is_empty());
    assert_eq!(std::fs::read_dir(&sb.dest).unwrap().count(), 0);

    // Without the setting: stretcher's behaviour, the checksum pins the content.
    let r = agent(&sb.dir, &app, &[], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.read("dest/foo/baz").as_deref(), Some("baz\n"));
    let r = agent(&sb.dir, &manifest_hop, &[], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(marker.exists());
}

/// Hole 1: credentials never follow a redirect to another origin.
#[tokio::test]
async fn credentials_stay_with_their_origin() {
    let sb = Sandbox::new("redirect-creds");
    let first = Files::start().await;
    let other = Files::start().await;
    let marker = sb.dir.join("ran");
    other.add("m.yml", touch_manifest(&marker));
    first.redirect("m.yml", &format!("{}/m.yml", other.url));
    let with_creds = first.url.replace("http://", "http://deployer:hunter2@") + "/m.yml";
    let r = agent(&sb.dir, &with_creds, &[], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(marker.exists());
    let sent = first.gets();
    assert!(
        sent[0]
            .1
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic ")),
        "{sent:?}"
    );
    assert_eq!(other.gets(), vec![("m.yml".to_string(), None)]);
}

/// Hole 2: `allowed()` compared the still-encoded path and `to_file_path()` decoded `%2F`
/// afterwards, so `file:///…/allowed/..%2F..%2Fother%2Fevil.yml` ran a manifest from
/// outside the prefix. Paths are compared decoded, segment by segment, and encoded
/// separators, NULs and dot segments are refused in every encoding.
#[tokio::test]
async fn encoded_separators_do_not_escape_a_prefix() {
    let sb = Sandbox::new("encoded");
    std::fs::create_dir_all(sb.dir.join("allowed")).unwrap();
    std::fs::create_dir_all(sb.dir.join("other")).unwrap();
    let marker = sb.dir.join("evil-ran");
    std::fs::write(sb.dir.join("other/evil.yml"), touch_manifest(&marker)).unwrap();
    let prefix = format!("file://{}/allowed/", sb.dir.display());
    let c = Corral::start_with(&[("CORRAL_DEPLOY_ALLOW", &prefix)]).await;
    let tails = [
        "..%2Fother%2Fevil.yml",
        "..%2fother%2fevil.yml",
        "%2E%2E/other/evil.yml",
        "%2e%2E%2Fother%2Fevil.yml",
        "x%2F..%2F..%2Fother%2Fevil.yml",
        "..%5Cother%5Cevil.yml",
        "..%252Fother%252Fevil.yml",
    ];
    for tail in tails {
        let url = format!("{prefix}{tail}");
        let (s, v) = crate::deploy_fanout::command(&c, &format!("deploy {url}")).await;
        assert_eq!(s, 409, "{url}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("CORRAL_DEPLOY_ALLOW"),
            "{v}"
        );
        let r = agent(&sb.dir, &url, &[], &[("CORRAL_DEPLOY_ALLOW", &prefix)]).await;
        assert_eq!(r.code, 1, "{url}: {}", r.stderr);
        assert!(r.stderr.contains("not allowed"), "{url}: {}", r.stderr);
    }
    // A src escaping the same way, in an allowed manifest.
    let src = format!("{prefix}..%2F..%2Ftestdata%2Ftest.tar");
    std::fs::write(
        sb.dir.join("allowed/m.yml"),
        format!(
            "src: {src}\nchecksum: {TEST_TAR_SHA1}\ndest: {}\n",
            sb.dest.display()
        ),
    )
    .unwrap();
    let job = run_job(&c, &format!("deploy {prefix}m.yml")).await;
    let summary = job.outcome.unwrap().summary;
    assert!(summary.contains("is not allowed"), "{summary}");
    // An http prefix: the server never sees the request.
    let files = Files::start().await;
    files.add("other/evil.yml", touch_manifest(&marker));
    let http_prefix = format!("{}/releases/", files.url);
    for tail in tails {
        let url = format!("{http_prefix}{tail}");
        let r = agent(&sb.dir, &url, &[], &[("CORRAL_DEPLOY_ALLOW", &http_prefix)]).await;
        assert_eq!(r.code, 1, "{url}: {}", r.stderr);
    }
    assert!(files.gets().is_empty(), "{:?}", files.gets());
    assert!(!marker.exists());
    assert_eq!(std::fs::read_dir(&sb.dest).unwrap().count(), 0);
}
