//! examples/: the sample manifest pins its tarball, and the README's "try a deploy"
//! command applies it through the real binary.

use std::process::Command;

use sha2::Digest;

use crate::support::TempDir;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
/// Where examples/hello.yml deploys to (no root needed).
const DEST: &str = "/tmp/corral-example/hello";

#[test]
fn the_manifest_pins_the_committed_tarball() {
    let tarball = std::fs::read(format!("{EXAMPLES}/hello.tar.gz")).unwrap();
    let sum = hex::encode(sha2::Sha256::digest(&tarball));
    let manifest = std::fs::read_to_string(format!("{EXAMPLES}/hello.yml")).unwrap();
    let m = corral::deploy::manifest::parse_at(
        &manifest,
        &|_| None,
        &format!("file://{EXAMPLES}/hello.yml"),
    )
    .unwrap();
    assert_eq!(
        m.checksum.unwrap().hex,
        sum,
        "update the checksum in hello.yml"
    );
    assert_eq!(
        m.src.as_deref(),
        Some(format!("file://{EXAMPLES}/hello.tar.gz").as_str())
    );
    assert_eq!(m.dest.as_deref(), Some(std::path::Path::new(DEST)));
}

#[test]
fn the_readme_deploy_applies_the_example_through_corral_exec() {
    let dir = TempDir::new("example-deploy");
    // The README's command, with $PWD the repository.
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "exec",
            &format!("/deploy file://{EXAMPLES}/hello.yml --target local"),
        ])
        .current_dir(&dir.0)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("USER", "tester")
        .env("CORRAL_LOG", "warn")
        .env("CORRAL_DATABASE_URL", "sqlite://corral.db")
        .env("CORRAL_DEPLOY_ALLOW", format!("file://{EXAMPLES}/"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("✅ succeeded"), "{stdout}");
    assert!(
        stdout.contains(&format!("hello.tar.gz → {DEST} (release)")),
        "{stdout}"
    );
    // The release is in place and `current` points at it; the post command ran in dest.
    let version = std::fs::read_to_string(format!("{DEST}/current/VERSION")).unwrap();
    assert_eq!(version, "1.0.0\n");
    let index = std::fs::read_to_string(format!("{DEST}/current/index.html")).unwrap();
    assert!(index.contains("Hello from corral"), "{index}");
    assert_eq!(
        std::fs::read_to_string(format!("{DEST}/deployed-version")).unwrap(),
        "1.0.0\n"
    );
    let link = std::fs::read_link(format!("{DEST}/current")).unwrap();
    assert!(link.starts_with("releases"), "{}", link.display());

    // Without the setting, /deploy is off and says which setting turns it on.
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "exec",
            &format!("/deploy file://{EXAMPLES}/hello.yml --target local"),
        ])
        .current_dir(&dir.0)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("USER", "tester")
        .env("CORRAL_LOG", "warn")
        .env("CORRAL_DATABASE_URL", "sqlite://corral.db")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("CORRAL_DEPLOY_ALLOW"), "{all}");
}
