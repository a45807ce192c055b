//! `--target local`: the manifest runs on the bot's host in a child `corral agent`, never
//! inside the bot. The child's environment is built from nothing: what a shell and rsync
//! need ([`BASE_ENV`]), the variables `CORRAL_DEPLOY_ENV` names, and the bot's
//! `CORRAL_DEPLOY_ALLOW` (so the child checks the manifest, its `src` and every redirect
//! hop again). None of the bot's secrets (`SLACK_*`, `RANCHER_*`, `CORRAL_API_TOKEN`, the
//! signing secret, the database URL) is in it, so no template and no command can read
//! them.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::Config;

/// Variables of the bot's environment every child gets: none of them is a secret.
pub const BASE_ENV: [&str; 8] = [
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR",
];

/// Output kept from the child (the end of it).
const MAX_OUTPUT: usize = 1 << 20;

/// Deadline of one manifest command in the child.
const COMMAND_TIMEOUT: &str = "30m";

/// How a child agent ended.
#[derive(Debug, Clone)]
pub struct Ran {
    pub ok: bool,
    /// The child's last line (its error, when it failed), without the timestamp.
    pub last_line: String,
    /// stdout and stderr together, the last [`MAX_OUTPUT`] bytes.
    pub output: String,
    pub duration: Duration,
}

/// Runs `<agent> agent --timeout <fetch_timeout>` with `url` on stdin.
pub async fn run_agent(cfg: &Config, url: &str, fetch_timeout: Duration) -> Result<Ran, String> {
    let program = match &cfg.agent {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| format!("cannot find corral itself: {e}"))?,
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg("agent")
        .arg("--timeout")
        .arg(crate::text::format_duration(fetch_timeout))
        .arg("--command-timeout")
        .arg(COMMAND_TIMEOUT)
        .env_clear()
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    for name in BASE_ENV {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    for (name, value) in &cfg.env {
        cmd.env(name, value.expose());
    }
    cmd.env("CORRAL_DEPLOY_ALLOW", cfg.allow.join(","));
    // The bot's extraction bounds (its environment or .env) apply to the child too.
    let l = cfg.limits;
    for (name, v) in super::extract::LIMIT_VARS.iter().zip([
        l.max_bytes,
        l.max_entries,
        l.max_header_bytes,
        l.max_ratio,
    ]) {
        cmd.env(name, v.to_string());
    }
    let (reader, writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let writer2 = writer.try_clone().map_err(|e| format!("pipe: {e}"))?;
    cmd.stdout(Stdio::from(writer)).stderr(Stdio::from(writer2));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {} agent: {e}", program.display()))?;
    // The Command holds the pipe's write ends; drop it so EOF can arrive.
    drop(cmd);
    let read = tokio::task::spawn_blocking(move || read_bounded(reader));
    if let Some(mut stdin) = child.stdin.take() {
        let line = format!("{}\n", super::source::without_fragment(url));
        // A child that died at once closes stdin; its exit status says why.
        let _ = stdin.write_all(line.as_bytes()).await;
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("corral agent: {e}"))?;
    // Something a command left behind may hold the pipe; do not wait on it forever.
    let output = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()
        .and_then(Result::ok)
        .map(|o| crate::text::redact_credentials_in(&o))
        .unwrap_or_default();
    let last_line = output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(strip_timestamp)
        .unwrap_or_default();
    Ok(Ran {
        ok: status.success(),
        last_line: if status.success() || !last_line.is_empty() {
            last_line
        } else {
            format!("corral agent ended: {status}")
        },
        output,
        duration: started.elapsed(),
    })
}

fn read_bounded(mut reader: std::io::PipeReader) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > MAX_OUTPUT {
                    kept.drain(..kept.len() - MAX_OUTPUT);
                }
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// `2026/01/02 03:04:05 text` → `text`.
fn strip_timestamp(line: &str) -> String {
    let b = line.as_bytes();
    let stamped = b.len() > 20
        && b[4] == b'/'
        && b[7] == b'/'
        && b[10] == b' '
        && b[13] == b':'
        && b[19] == b' ';
    if stamped { &line[20..] } else { line }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_stripped() {
        assert_eq!(
            strip_timestamp("2026/12/02 05:04:25 Deploy manifest failed: x"),
            "Deploy manifest failed: x"
        );
        assert_eq!(strip_timestamp("plain"), "plain");
    }
}
