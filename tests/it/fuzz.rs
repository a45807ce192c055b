//! Property-based fuzzing on the stable toolchain (proptest): the chat grammar, the Slack
//! form and JSON payload doors, the manifest parser with template expansion and its
//! pre-scan, and the archive extractor, which must never write outside its staging root
//! whatever the bytes.
//!
//! In `./test` each target runs a few hundred cases (seconds). For a long run set
//! `CORRAL_FUZZ_SECS` (seconds per target), e.g.
//! `CORRAL_FUZZ_SECS=600 nice cargo test --release --test it fuzz:: -- --test-threads 1`.
//! A failure prints proptest's minimal failing input.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Runs `test` on inputs from `strategy`: 256 cases, or batches until `CORRAL_FUZZ_SECS`.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let secs: u64 = std::env::var("CORRAL_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut cases = 0u64;
    loop {
        let mut runner = TestRunner::new(Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("fuzz target {name} failed after {cases} cases: {e}");
        }
        cases += 256;
        if Instant::now() >= deadline {
            break;
        }
    }
    eprintln!("fuzz {name}: {cases} cases, 0 failures");
}

/// Text made of the grammar's own pieces and arbitrary characters.
fn chat_text() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("lock".to_string()),
        Just("unlock".to_string()),
        Just("deploy".to_string()),
        Just("upgrade".to_string()),
        Just("--force".to_string()),
        Just("--dry-run".to_string()),
        Just("--target".to_string()),
        Just("--timeout".to_string()),
        Just("<https://x.example/m.yml|m>".to_string()),
        Just("\"quoted words\"".to_string()),
        Just("5m".to_string()),
        "\\PC{0,12}",
        any::<String>(),
    ];
    prop::collection::vec(word, 0..8).prop_map(|w| w.join(" "))
}

#[test]
fn fuzz_chat_grammar() {
    fuzz(
        "chat grammar",
        (chat_text(), "[a-z/]{0,12}"),
        |(text, family)| {
            for parsed in [
                corral::command::parse_text(&text),
                corral::command::parse_slash(&format!("/{family}"), &text),
            ] {
                // A refusal always says why.
                if let Err(e) = parsed {
                    prop_assert!(!e.to_string().trim().is_empty(), "empty error for {text:?}");
                }
            }
            Ok(())
        },
    );
}

/// A form body as Slack might send it, fields fuzzed.
fn form_body() -> impl Strategy<Value = String> {
    let pair = (
        prop_oneof![
            Just("command"),
            Just("text"),
            Just("user_id"),
            Just("user_name"),
            Just("channel_id"),
            Just("response_url"),
            Just("payload"),
            Just("team_id"),
            Just("trigger_id"),
        ],
        prop_oneof![any::<String>(), "\\PC{0,40}", Just("/lock".to_string())],
    );
    prop::collection::vec(pair, 0..8)
        .prop_map(|pairs| serde_urlencoded::to_string(pairs).unwrap_or_default())
}

/// JSON payloads: fixture shapes with fields replaced, or any JSON.
fn json_payload() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "\\PC{0,20}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("block_actions")),
        Just(serde_json::Value::from("event_callback")),
        Just(serde_json::Value::from("app_mention")),
        Just(serde_json::Value::from("url_verification")),
    ];
    let keys = prop_oneof![
        Just("type"),
        Just("event"),
        Just("actions"),
        Just("user"),
        Just("id"),
        Just("text"),
        Just("channel"),
        Just("action_id"),
        Just("value"),
        Just("challenge"),
        Just("token"),
        Just("team_id"),
        Just("response_url"),
        Just("message"),
        Just("ts"),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| {
                serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
    .prop_map(|v| v.to_string())
}

#[test]
fn fuzz_slack_forms_and_payloads() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c = rt.block_on(crate::support::corral::Corral::start());
    let secret = crate::support::corral::SECRET;
    fuzz(
        "slack doors",
        (form_body(), json_payload(), 0..3usize),
        |(form, json, which)| {
            let (path, ct, body) = match which {
                0 => ("/slack/commands", "application/x-www-form-urlencoded", form),
                1 => (
                    "/slack/interactions",
                    "application/x-www-form-urlencoded",
                    serde_urlencoded::to_string([("payload", json)]).unwrap_or_default(),
                ),
                _ => ("/slack/events", "application/json", json),
            };
            let status = rt.block_on(async {
                c.post_signed(path, ct, &body, secret, crate::support::now())
                    .await
                    .status()
            });
            prop_assert!(
                !status.is_server_error(),
                "{path} answered {status} to {body:?}"
            );
            Ok(())
        },
    );
    rt.block_on(async move { drop(c) });
}

/// YAML-ish text from manifest pieces, templates, anchors and aliases.
fn manifest_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("src: file:///tmp/a.tar\n".to_string()),
        Just("checksum: 7b57db167410e46720b1d636ee6cb6c147efac3a\n".to_string()),
        Just("dest: /tmp/corral-fuzz-dest\n".to_string()),
        Just("dest_mode: 0755\n".to_string()),
        Just("sync_strategy: release\n".to_string()),
        Just("commands:\n  pre:\n    - echo hi\n".to_string()),
        Just("  post: &p\n    - |\n      echo *x &y [\n".to_string()),
        Just("  success: *p\n".to_string()),
        Just("excludes: [\"*.pid\", {a: [1, *p]}]\n".to_string()),
        Just("x: {{ env \"HOME\" \"d\" }}\n".to_string()),
        Just("y: {{ must_env \"NOPE\" }}\n".to_string()),
        Just("z: '{{ json_escape \"q\\\"\" }}'\n".to_string()),
        Just("{{".to_string()),
        Just("[[[[".to_string()),
        Just("]]}}".to_string()),
        Just("&a ".to_string()),
        Just("*a, ".to_string()),
        Just("- ".to_string()),
        Just("  ".to_string()),
        Just("\n".to_string()),
        Just("# c\n".to_string()),
        "\\PC{0,16}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

#[test]
fn fuzz_manifest_parser_and_templates() {
    let env = |n: &str| (n == "HOME").then(|| "/root".to_string());
    fuzz("manifest", manifest_text(), |text| {
        let started = Instant::now();
        let _ = corral::deploy::manifest::expand_template(&text, &env);
        let checked = corral::deploy::manifest_limits::check(&text);
        let parsed = corral::deploy::manifest::parse(&text, &env);
        prop_assert!(
            started.elapsed() < Duration::from_secs(2),
            "slow on {text:?}"
        );
        if let Err(e) = parsed {
            prop_assert!(!e.to_string().is_empty());
        }
        let _ = checked;
        Ok(())
    });
}

/// One tar entry from fuzzed parts: a name with `..`, `/`, links, odd types.
fn tar_entry() -> impl Strategy<Value = Vec<u8>> {
    let name = prop::collection::vec(
        prop_oneof![
            Just(".."),
            Just("."),
            Just("a"),
            Just("b"),
            Just("up"),
            Just("esc"),
            Just(""),
            Just("/")
        ],
        1..5,
    )
    .prop_map(|p| p.join("/"));
    let kind = prop_oneof![
        Just(b'0'),
        Just(b'1'),
        Just(b'2'),
        Just(b'5'),
        Just(b'3'),
        Just(b'6'),
        Just(b'x'),
        Just(b'L'),
        Just(b'K'),
        Just(b'S'),
        Just(b'g'),
        any::<u8>(),
    ];
    (
        name.clone(),
        kind,
        name,
        prop::collection::vec(any::<u8>(), 0..700),
        any::<u16>(),
    )
        .prop_map(|(name, kind, link, data, flip)| {
            let mut h = tar::Header::new_gnu();
            {
                let b = h.as_old_mut();
                let n = name.len().min(99);
                b.name[..n].copy_from_slice(&name.as_bytes()[..n]);
                let l = link.len().min(99);
                b.linkname[..l].copy_from_slice(&link.as_bytes()[..l]);
            }
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.as_old_mut().linkflag = [kind];
            h.set_cksum();
            let mut out = h.as_bytes().to_vec();
            // Sometimes one byte of the header is flipped after the checksum.
            if flip % 7 == 0 {
                let at = (flip as usize / 7) % 512;
                out[at] ^= (flip >> 8) as u8 | 1;
            }
            out.extend_from_slice(&data);
            out.resize(out.len().div_ceil(512) * 512, 0);
            out
        })
}

/// Every path under `dir`, not following links.
fn all_paths(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.path().symlink_metadata().is_ok_and(|m| m.is_dir()) {
            all_paths(&e.path(), out);
        }
    }
}

#[test]
fn fuzz_archive_extractor_never_escapes() {
    let base = std::env::temp_dir().join(format!("corral-fuzz-extract-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let sentinel = base.join("secret");
    std::fs::write(&sentinel, "outside").unwrap();
    let limits = corral::deploy::extract::Limits {
        max_bytes: 1 << 20,
        max_entries: 64,
        max_header_bytes: 4096,
        max_ratio: 200,
    };
    let gz = |b: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, b).unwrap();
        e.finish().unwrap()
    };
    fuzz(
        "archive extractor",
        (
            prop::collection::vec(tar_entry(), 0..10),
            any::<bool>(),
            any::<bool>(),
        ),
        |(entries, compress, end)| {
            let mut tar: Vec<u8> = entries.concat();
            if end {
                tar.extend([0u8; 1024]);
            }
            let bytes = if compress { gz(&tar) } else { tar };
            let root = base.join("stage");
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir(&root).unwrap();
            let _ = corral::deploy::extract::unpack_with(&bytes[..], &root, &limits);
            // Nothing beside the staging root changed.
            let mut beside: Vec<_> = std::fs::read_dir(&base)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            beside.sort();
            prop_assert_eq!(beside, vec!["secret".to_string(), "stage".to_string()]);
            let m = std::fs::metadata(&sentinel).unwrap();
            prop_assert_eq!(m.nlink(), 1, "a hard link to the outside file");
            prop_assert_eq!(std::fs::read(&sentinel).unwrap(), b"outside".to_vec());
            // Every link inside leads inside (or nowhere).
            let real_root = std::fs::canonicalize(&root).unwrap();
            let mut paths = Vec::new();
            all_paths(&root, &mut paths);
            for p in paths {
                if let Ok(real) = std::fs::canonicalize(&p) {
                    prop_assert!(
                        real.starts_with(&real_root),
                        "{} leads to {}",
                        p.display(),
                        real.display()
                    );
                }
            }
            Ok(())
        },
    );
    let _ = std::fs::remove_dir_all(&base);
}
