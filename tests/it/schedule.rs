//! `corral schedule`: the real binary prints the next firings of a policy file's
//! schedules, and refuses a bad policy with exit code 2, naming the key.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// A temporary directory of its own for each test, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("corral-schedule-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `corral schedule` with a clean environment and, if given, this policy text.
fn schedule(dir: &Dir, policy: Option<&str>) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("schedule")
        .current_dir(&dir.0)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CORRAL_LOG", "warn");
    if let Some(text) = policy {
        let path = dir.0.join("policy.toml");
        std::fs::write(&path, text).unwrap();
        cmd.env("CORRAL_POLICY", &path);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

const POLICY: &str = r#"
[lock]
remind_after = "2h"
remind_every = "30m"

[[freeze]]
name     = "weekend"
cron     = "0 16 * * FRI"
duration = "64h"
timezone = "Europe/Berlin"

[[digest]]
cron    = "0 9 * * MON-FRI"
channel = "C0RELEASES"

[[digest]]
cron     = "30 8 * * 1-5"
channel  = "C0NYC"
timezone = "America/New_York"
"#;

fn section<'a>(out: &'a str, header: &str) -> Vec<&'a str> {
    out.lines()
        .skip_while(|l| !l.starts_with(header))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect()
}

#[test]
fn prints_the_next_firings_of_every_schedule() {
    let dir = Dir::new("ok");
    let (code, out, err) = schedule(&dir, Some(POLICY));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("policy.toml"), "{out}");

    let freeze = regex::Regex::new(
        r"^  Fri \d{4}-\d\d-\d\d 16:00 (CET \(15:00 UTC\)|CEST \(14:00 UTC\))  until  Mon \d{4}-\d\d-\d\d (0[789]):00 CES?T \(0[567]:00 UTC\)$",
    )
    .unwrap();
    let windows: Vec<&str> = section(
        &out,
        "freeze[0] \"weekend\": `0 16 * * FRI` in Europe/Berlin, windows of 2d16h",
    )
    .into_iter()
    .filter(|l| !l.starts_with("  active now"))
    .collect();
    assert_eq!(windows.len(), 5, "{out}");
    for w in &windows {
        assert!(freeze.is_match(w), "{w:?}");
    }

    let utc = section(&out, "digest[0] to C0RELEASES: `0 9 * * MON-FRI` in UTC");
    assert_eq!(utc.len(), 5, "{out}");
    let weekday =
        regex::Regex::new(r"^  (Mon|Tue|Wed|Thu|Fri) \d{4}-\d\d-\d\d 09:00 UTC$").unwrap();
    for l in &utc {
        assert!(weekday.is_match(l), "{l:?}");
    }

    let nyc = section(
        &out,
        "digest[1] to C0NYC: `30 8 * * 1-5` in America/New_York",
    );
    assert_eq!(nyc.len(), 5, "{out}");
    let local = regex::Regex::new(
        r"^  (Mon|Tue|Wed|Thu|Fri) \d{4}-\d\d-\d\d 08:30 (EDT \(12:30 UTC\)|EST \(13:30 UTC\))$",
    )
    .unwrap();
    for l in &nyc {
        assert!(local.is_match(l), "{l:?}");
    }

    let reminders = section(
        &out,
        "lock reminders: after 2h, then every 30m; for a release started now:",
    );
    assert_eq!(reminders.len(), 5, "{out}");
}

#[test]
fn without_a_policy_there_are_no_schedules() {
    let dir = Dir::new("none");
    let (code, out, err) = schedule(&dir, None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("there are no schedules"), "{out}");
}

#[test]
fn a_bad_policy_exits_2_naming_the_key() {
    let dir = Dir::new("bad");
    for (policy, needle) in [
        (
            "[[freeze]]\nname=\"w\"\ncron=\"0 16 * * FRI\"\nduration=\"0\"",
            "freeze[0].duration: must be longer than 0",
        ),
        (
            "[[freeze]]\nname=\"w\"\ncron=\"0 16 * * FRI\"\nduration=\"200h\"",
            "freeze[0].duration: 8d8h is longer than the shortest time between two starts",
        ),
        (
            "[[freeze]]\nname=\"w\"\ncron=\"0 16 * *\"\nduration=\"1h\"",
            "freeze[0].cron: `0 16 * *` has 4 fields",
        ),
        (
            "[[digest]]\ncron=\"0 9 * * MON-FRI\"\nchannel=\"C1\"\ntimezone=\"Mars/Base\"",
            "digest[0].timezone: unknown time zone `Mars/Base`",
        ),
        (
            "[lock]\nremind_every=\"0s\"",
            "lock.remind_every: must be longer than 0",
        ),
    ] {
        let (code, out, err) = schedule(&dir, Some(policy));
        assert_eq!(code, Some(2), "{policy}: {out}{err}");
        assert!(err.contains(needle), "{policy}: {err}");
        assert!(err.contains("CORRAL_POLICY"), "{err}");
        assert!(!out.contains("Next firings"), "{out}");
    }
}
