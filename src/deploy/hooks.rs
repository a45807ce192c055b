//! Manifest commands (reference/stretcher.md §5), each through `sh -c` with a deadline.
//!
//! * pre / post: stdout and stderr captured together into the log; the first failure
//!   stops the list with `failed: <line> exit status N`.
//! * success / failure: the log as it stands goes to each command's stdin (a closed pipe
//!   is fine); their output goes to ours, not into the log.
//!
//! Commands run in `dest` when it exists (never in a temp dir that may be gone), else in
//! the working directory corral was started in. Each command gets its own process group
//! so a timeout kills what it started too.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::log::DeployLog;

/// Where command output of success/failure commands goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Our own stdout/stderr (the agent, as stretcher).
    Inherit,
    /// Discarded (inside the bot).
    Null,
}

/// How commands run.
#[derive(Debug, Clone)]
pub struct HookOpts {
    /// The deadline of one command; `None` = none.
    pub timeout: Option<Duration>,
    pub output: Output,
}

/// Captured output kept per command (more is cut).
const MAX_CAPTURE: usize = 1 << 20;

fn command(line: &str, dest: Option<&Path>) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(line).kill_on_drop(true).process_group(0);
    if let Some(d) = dest.filter(|d| d.is_dir()) {
        c.current_dir(d);
    }
    c
}

fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a negative pid signals the process group we created for
        // this child (process_group(0)); it touches no memory.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(9)) => "signal: killed".to_string(),
        (None, Some(s)) => format!("signal: {s}"),
        _ => "unknown exit".to_string(),
    }
}

async fn wait_with_deadline(
    child: &mut tokio::process::Child,
    timeout: Option<Duration>,
) -> Result<std::process::ExitStatus, String> {
    let waited = match timeout {
        Some(t) => tokio::time::timeout(t, child.wait()).await,
        None => Ok(child.wait().await),
    };
    match waited {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("wait failed: {e}")),
        Err(_) => {
            kill_group(child);
            let _ = child.wait().await;
            Err(format!(
                "timed out after {}",
                crate::text::format_duration(timeout.unwrap_or_default())
            ))
        }
    }
}

/// Runs pre or post commands, stopping at the first failure.
pub(crate) async fn run_captured(
    lines: &[String],
    dest: Option<&Path>,
    opts: &HookOpts,
    log: &DeployLog,
) -> Result<(), String> {
    for line in lines {
        log.line(format!("invoking command: {line}"));
        let (reader, writer) = std::io::pipe().map_err(|e| format!("failed: {line} {e}"))?;
        let writer2 = writer
            .try_clone()
            .map_err(|e| format!("failed: {line} {e}"))?;
        let mut cmd = command(line, dest);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer2));
        let mut child = cmd.spawn().map_err(|e| format!("failed: {line} {e}"))?;
        // The Command still holds the pipe's write ends; drop it so EOF can arrive.
        drop(cmd);
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = Vec::new();
            let _ = reader.take(MAX_CAPTURE as u64).read_to_end(&mut buf);
            buf
        });
        let status = wait_with_deadline(&mut child, opts.timeout).await;
        // Something the command left behind (outside its group) may hold the pipe; do
        // not wait on it forever.
        let out = tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        if !out.is_empty() {
            log.line(String::from_utf8_lossy(&out));
        }
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => return Err(format!("failed: {line} {}", describe(s))),
            Err(e) => return Err(format!("failed: {line} {e}")),
        }
    }
    Ok(())
}

/// Runs success or failure commands, each with the log on stdin. Stops at the first
/// failure and returns its error (the caller only logs it).
pub(crate) async fn run_piped(
    lines: &[String],
    dest: Option<&Path>,
    opts: &HookOpts,
    log: &DeployLog,
) -> Result<(), String> {
    for line in lines {
        let input = log.snapshot();
        log.line(format!("invoking command: {line}"));
        let mut cmd = command(line, dest);
        cmd.stdin(Stdio::piped());
        match opts.output {
            Output::Inherit => cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit()),
            Output::Null => cmd.stdout(Stdio::null()).stderr(Stdio::null()),
        };
        let mut child = cmd.spawn().map_err(|e| format!("{line}: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            let l = line.clone();
            let log2 = log.clone();
            tokio::spawn(async move {
                if let Err(e) = stdin.write_all(input.as_bytes()).await
                    && e.kind() != std::io::ErrorKind::BrokenPipe
                {
                    log2.line(format!("failed to write to STDIN of {l} : {e}"));
                }
            });
        }
        match wait_with_deadline(&mut child, opts.timeout).await {
            Ok(s) if s.success() => {}
            Ok(s) => return Err(describe(s)),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> HookOpts {
        HookOpts {
            timeout: Some(Duration::from_secs(5)),
            output: Output::Null,
        }
    }

    #[tokio::test]
    async fn captured_output_and_failure_text() {
        let log = DeployLog::new(false);
        let lines = vec![
            "echo 'FOO'; echo 'BAR' 1>&2; false".to_string(),
            "echo never".to_string(),
        ];
        let e = run_captured(&lines, None, &opts(), &log).await.unwrap_err();
        assert_eq!(
            e,
            "failed: echo 'FOO'; echo 'BAR' 1>&2; false exit status 1"
        );
        let s = log.snapshot();
        assert!(s.contains("FOO\nBAR"), "{s}");
        assert!(!s.contains("never"));
    }

    #[tokio::test]
    async fn timeout_kills_the_group() {
        let log = DeployLog::new(false);
        let o = HookOpts {
            timeout: Some(Duration::from_millis(300)),
            output: Output::Null,
        };
        let t = std::time::Instant::now();
        let e = run_captured(&["sleep 30 & sleep 30".to_string()], None, &o, &log)
            .await
            .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn piped_gets_log_and_ignores_epipe() {
        let dir = std::env::temp_dir().join(format!("corral-hooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = DeployLog::new(false);
        log.line("0123456789abcdef".repeat(4100));
        let lines = vec!["echo ok".to_string(), "cat > piped.txt".to_string()];
        run_piped(&lines, Some(&dir), &opts(), &log).await.unwrap();
        let got = std::fs::read_to_string(dir.join("piped.txt")).unwrap();
        assert!(got.contains("invoking command: echo ok"));
        assert!(!got.contains("cat > piped.txt"));
        assert!(!log.snapshot().contains("broken pipe"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
