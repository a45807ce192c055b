//! `corral agent`'s flags and environment (reference/stretcher.md §1, §8): one or two
//! dashes, `--x=v` or `--x v`, stretcher's spellings and exit codes for bad values.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::deploy::hooks::{HookOpts, Output};
use crate::deploy::steps::DeployOpts;
use crate::text::parse_duration;

pub(super) const USAGE: &str = "Usage: corral agent [flags] < event

Reads a manifest URL, a Consul watch event array or a Serf user-event payload on stdin
and deploys it (stretcher-compatible). Flags take one or two dashes, `--x=v` or `--x v`.

  --max-bandwidth SIZE   limit the download (10M = 10,000,000 B/s, 10MiB, 1.0kB); alias --max-band-width
  --timeout DUR          deadline for fetching src (seconds, or 30s / 2m); 0 = none
  --random-delay DUR     sleep a random time below DUR first (seconds or 30s)
  --retry N              retries when opening src fails (default 0)
  --retry-wait DUR       wait between retries (default 3s)
  --rsync-verbose FLAG   \"\", -v, -vv or -vvv (default -v)
  --command-timeout DUR  deadline of each manifest command (default 30m; 0 = none)
  --report-url URL       post the result to the bot (or CORRAL_REPORT_URL); a base URL gets
                         /api/v1/deploys/<job>/reports appended, `{job}` is replaced
  --report-token TOKEN   API token for the report (or CORRAL_REPORT_TOKEN / CORRAL_API_TOKEN)
  --host NAME            name reported (default SERF_SELF_NAME, CORRAL_HOST, the hostname)
  --state-file PATH      where applied Consul event ids are kept (or CORRAL_AGENT_STATE)

CORRAL_DEPLOY_ALLOW (comma-separated URL prefixes), when set, limits the manifest, its
src and every redirect hop of either to those prefixes.
  -v, --version          print the version
  -h, --help             this text

Exit status: 0 on success, 1 on failure (0 under consul watch, when CONSUL_INDEX is set),
2 for a bad flag.";

/// The agent's settings, from flags and environment.
#[derive(Debug, Clone)]
pub struct AgentOpts {
    pub deploy: DeployOpts,
    pub random_delay: Duration,
    pub report_url: Option<String>,
    pub report_token: Option<String>,
    pub host: String,
    pub state_file: PathBuf,
}

pub(super) enum Parsed {
    Run(Box<AgentOpts>),
    Help,
    Version,
}

/// A flag error and its exit code.
pub(super) struct FlagError(pub(super) String, pub(super) i32);

fn bad(s: String) -> FlagError {
    FlagError(s, 2)
}

pub(super) fn parse_args(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, FlagError> {
    let mut o = from_env(env)?;
    let mut explicit_host = None;
    let mut it = args.into_iter();
    while let Some(raw) = it.next() {
        let (name, inline) = split_flag(raw)?;
        match name.as_str() {
            "h" | "help" => return Ok(Parsed::Help),
            "v" | "version" => return Ok(Parsed::Version),
            _ => {}
        }
        let mut value = || -> Result<String, FlagError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| bad(format!("flag -{name} needs a value"))),
            }
        };
        apply_flag(&mut o, &mut explicit_host, &name, &mut value)?;
    }
    if let Some(h) = explicit_host {
        o.host = h;
    }
    if let Some(u) = &o.report_url
        && url::Url::parse(&u.replace("{job}", "0")).is_err()
    {
        return Err(bad(format!("--report-url {u} is not a URL")));
    }
    Ok(Parsed::Run(Box::new(o)))
}

/// The settings before any flag: defaults and the environment.
fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<AgentOpts, FlagError> {
    let allow = match env("CORRAL_DEPLOY_ALLOW") {
        None => None,
        Some(raw) => Some(
            crate::deploy::allow::parse_list(&raw)
                .map_err(|why| bad(format!("CORRAL_DEPLOY_ALLOW: {why}")))?,
        ),
    };
    Ok(AgentOpts {
        deploy: DeployOpts {
            allow,
            hooks: HookOpts {
                timeout: Some(Duration::from_secs(30 * 60)),
                output: Output::Inherit,
            },
            ..DeployOpts::default()
        },
        random_delay: Duration::ZERO,
        report_url: env("CORRAL_REPORT_URL"),
        report_token: env("CORRAL_REPORT_TOKEN").or_else(|| env("CORRAL_API_TOKEN")),
        host: env("CORRAL_HOST")
            .or_else(|| env("SERF_SELF_NAME"))
            .or_else(hostname)
            .unwrap_or_else(|| "unknown-host".into()),
        state_file: env("CORRAL_AGENT_STATE")
            .map(PathBuf::from)
            .unwrap_or_else(default_state_file),
    })
}

/// One argument as a flag name (without its one or two dashes) and its `=value`, if any.
fn split_flag(raw: OsString) -> Result<(String, Option<String>), FlagError> {
    let raw = raw
        .into_string()
        .map_err(|a| bad(format!("argument {a:?} is not UTF-8")))?;
    let Some(stripped) = raw.strip_prefix("--").or_else(|| raw.strip_prefix('-')) else {
        return Err(bad(format!(
            "unexpected argument {raw:?} (the manifest URL comes on stdin)"
        )));
    };
    Ok(match stripped.split_once('=') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (stripped.to_string(), None),
    })
}

/// Applies one flag; `value` is asked for only by flags that take one, so an unknown
/// flag is refused before it could swallow the next argument.
fn apply_flag(
    o: &mut AgentOpts,
    explicit_host: &mut Option<String>,
    name: &str,
    value: &mut dyn FnMut() -> Result<String, FlagError>,
) -> Result<(), FlagError> {
    match name {
        "max-bandwidth" | "max-band-width" => {
            let v = value()?;
            o.deploy.max_bandwidth = if v.is_empty() {
                None
            } else {
                Some(
                    parse_size(&v)
                        .map_err(|e| FlagError(format!("Cannot parse -max-bandwidth {e}"), 1))?,
                )
            };
        }
        "timeout" => {
            let d = parse_duration(&value()?).map_err(|e| bad(format!("-timeout: {e}")))?;
            o.deploy.fetch_timeout = (!d.is_zero()).then_some(d);
        }
        "random-delay" => {
            o.random_delay =
                parse_duration(&value()?).map_err(|e| bad(format!("-random-delay: {e}")))?;
        }
        "retry" => {
            o.deploy.retry = value()?
                .parse()
                .map_err(|_| bad("-retry needs a whole number".into()))?;
        }
        "retry-wait" => {
            o.deploy.retry_wait =
                parse_duration(&value()?).map_err(|e| bad(format!("-retry-wait: {e}")))?;
        }
        "rsync-verbose" => {
            let v = value()?;
            if !["", "-v", "-vv", "-vvv"].contains(&v.as_str()) {
                return Err(FlagError(
                    format!("Cannot set -rsync-verbose invalid rsync verbose option: {v}"),
                    1,
                ));
            }
            o.deploy.rsync_verbose = v;
        }
        "command-timeout" => {
            let d = parse_duration(&value()?).map_err(|e| bad(format!("-command-timeout: {e}")))?;
            o.deploy.hooks.timeout = (!d.is_zero()).then_some(d);
        }
        "report-url" => o.report_url = Some(value()?).filter(|v| !v.is_empty()),
        "report-token" => o.report_token = Some(value()?).filter(|v| !v.is_empty()),
        "host" => *explicit_host = Some(value()?),
        "state-file" => o.state_file = PathBuf::from(value()?),
        other => return Err(bad(format!("flag provided but not defined: -{other}"))),
    }
    Ok(())
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn default_state_file() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    base.join("corral").join("agent-applied-events")
}

/// A size as go-humanize reads it: `10M` / `10MB` = 10,000,000, `10MiB` = 10,485,760,
/// `1.0 kB` = 1000, a bare number = bytes; case does not matter.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let mult: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        other => return Err(format!("unhandled size name: {other}")),
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<AgentOpts, String> {
        let env = |_: &str| None;
        match parse_args(args.iter().map(OsString::from).collect(), &env) {
            Ok(Parsed::Run(o)) => Ok(*o),
            Ok(_) => Err("help/version".into()),
            Err(FlagError(e, _)) => Err(e),
        }
    }

    #[test]
    fn both_flag_spellings() {
        let a = parse(&[
            "-max-bandwidth",
            "10M",
            "-timeout",
            "30",
            "-random-delay",
            "1.5",
            "-retry",
            "2",
            "-retry-wait",
            "5",
            "-rsync-verbose",
            "-vv",
        ])
        .unwrap();
        let b = parse(&[
            "--max-band-width=10M",
            "--timeout=30s",
            "--random-delay=1500ms",
            "--retry=2",
            "--retry-wait=5s",
            "--rsync-verbose=-vv",
        ])
        .unwrap();
        for o in [&a, &b] {
            assert_eq!(o.deploy.max_bandwidth, Some(10_000_000));
            assert_eq!(o.deploy.fetch_timeout, Some(Duration::from_secs(30)));
            assert_eq!(o.random_delay, Duration::from_millis(1500));
            assert_eq!(
                (o.deploy.retry, o.deploy.retry_wait),
                (2, Duration::from_secs(5))
            );
            assert_eq!(o.deploy.rsync_verbose, "-vv");
        }
        assert_eq!(
            parse(&[]).unwrap().deploy.retry_wait,
            Duration::from_secs(3)
        );
        assert_eq!(
            parse(&["-timeout", "0"]).unwrap().deploy.fetch_timeout,
            None
        );
        assert_eq!(
            parse(&["-rsync-verbose="]).unwrap().deploy.rsync_verbose,
            ""
        );
        assert!(
            parse(&["-rsync-verbose", "-x"])
                .unwrap_err()
                .contains("invalid rsync verbose option")
        );
        assert!(
            parse(&["-max-bandwidth", "lots"])
                .unwrap_err()
                .contains("Cannot parse -max-bandwidth")
        );
        assert!(parse(&["-nope"]).unwrap_err().contains("not defined"));
        assert!(parse(&["-retry"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["s3://x/y"]).unwrap_err().contains("stdin"));
        assert!(
            parse(&["--report-url", "not a url"])
                .unwrap_err()
                .contains("not a URL")
        );
        assert!(matches!(
            parse_args(vec!["-version".into()], &|_| None),
            Ok(Parsed::Version)
        ));
        assert!(matches!(
            parse_args(vec!["-h".into()], &|_| None),
            Ok(Parsed::Help)
        ));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10MiB"), Ok(10_485_760));
        assert_eq!(parse_size("1.0 kB"), Ok(1000));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("-1").is_err() && parse_size("3 parsecs").is_err());
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert!(
            parse_duration("soon").is_err()
                && parse_duration("5").is_ok()
                && parse_duration("-3").is_err()
        );
    }
}
