//! `/deploy <manifest-url>`: a stretcher manifest run locally or fanned out to hosts.

use std::time::Duration;

use super::{Args, Family, ParseError, unwrap_link};
use crate::text::{format_duration, sanitize};

pub(crate) const USAGE: &str = "*Usage:* `/deploy &lt;manifest-url&gt; [--target local|serf|consul] [--dry-run] [--timeout DURATION] [--force]`\n\
• `/deploy https://artifacts.example.com/app/manifest.yml` — run the manifest on the bot's host\n\
• `/deploy s3://bucket/app/manifest.yml --target serf` — every Serf member runs it and reports back\n\
• `--dry-run` fetches and validates the manifest and shows the plan; nothing runs\n\
• `--timeout 10m` — how long to wait for hosts to report (default 10m)";

/// Where a deploy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployTarget {
    Local,
    Serf,
    Consul,
}

impl DeployTarget {
    pub(crate) fn name(self) -> &'static str {
        match self {
            DeployTarget::Local => "local",
            DeployTarget::Serf => "serf",
            DeployTarget::Consul => "consul",
        }
    }
}

/// A deploy command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployCmd {
    pub manifest_url: String,
    pub target: DeployTarget,
    pub dry_run: bool,
    pub timeout: Option<Duration>,
    pub force: bool,
}

impl DeployCmd {
    pub(crate) fn to_text(&self) -> String {
        let mut s = self.manifest_url.clone();
        if self.target != DeployTarget::Local {
            s.push_str(&format!(" --target {}", self.target.name()));
        }
        if self.dry_run {
            s.push_str(" --dry-run");
        }
        if let Some(t) = self.timeout {
            s.push_str(&format!(" --timeout {}", format_duration(t)));
        }
        if self.force {
            s.push_str(" --force");
        }
        s
    }
}

/// Schemes a manifest or an archive may be fetched from (stretcher's set): the grammar,
/// the manifest's `src`, `CORRAL_DEPLOY_ALLOW` and the agent's fetch all read this list.
pub const SOURCE_SCHEMES: [&str; 5] = ["http", "https", "file", "s3", "gs"];

/// [`SOURCE_SCHEMES`] as people read it, for refusals.
pub const SOURCE_SCHEMES_TEXT: &str = "http(s), file, s3 or gs";

pub(super) fn parse(words: &[String]) -> Result<DeployCmd, ParseError> {
    let mut args = Args::new(words, Family::Deploy);
    let mut url: Option<String> = None;
    let mut cmd = DeployCmd {
        manifest_url: String::new(),
        target: DeployTarget::Local,
        dry_run: false,
        timeout: None,
        force: false,
    };
    while let Some(w) = args.next() {
        match w {
            "--target" => {
                cmd.target = match args.value("--target")? {
                    "local" => DeployTarget::Local,
                    "serf" => DeployTarget::Serf,
                    "consul" => DeployTarget::Consul,
                    other => {
                        return Err(args.err(format!(
                            "`--target {}`: use local, serf or consul.",
                            sanitize(other)
                        )));
                    }
                }
            }
            "--dry-run" => cmd.dry_run = true,
            "--force" => cmd.force = true,
            "--timeout" => cmd.timeout = Some(args.timeout()?),
            w if w.starts_with("--") => return Err(args.unknown(w)),
            w if url.is_none() => url = Some(manifest_url(&args, w)?),
            w => return Err(args.unknown(w)),
        }
    }
    cmd.manifest_url = url.ok_or_else(|| args.err("`/deploy` needs a manifest URL."))?;
    Ok(cmd)
}

fn manifest_url(args: &Args, word: &str) -> Result<String, ParseError> {
    let raw = unwrap_link(word);
    let url = url::Url::parse(raw)
        .map_err(|e| args.err(format!("`{}` is not a URL: {e}.", sanitize(raw))))?;
    if !SOURCE_SCHEMES.contains(&url.scheme()) {
        return Err(args.err(format!(
            "`{}`: manifests are fetched over {SOURCE_SCHEMES_TEXT}, not {}.",
            sanitize(raw),
            sanitize(url.scheme())
        )));
    }
    if url.scheme() != "file" && url.host_str().is_none_or(str::is_empty) {
        return Err(args.err(format!("`{}` has no host.", sanitize(raw))));
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::{Command, parse_slash};
    use super::*;

    fn p(text: &str) -> Result<DeployCmd, ParseError> {
        match parse_slash("/deploy", text)? {
            Command::Deploy(d) => Ok(d),
            other => panic!("not a deploy: {other:?}"),
        }
    }

    #[test]
    fn good() {
        let d = p("<https://x.example/m.yml|m.yml> --target serf --dry-run --timeout 5m --force")
            .unwrap();
        assert_eq!(d.manifest_url, "https://x.example/m.yml");
        assert_eq!(d.target, DeployTarget::Serf);
        assert!(d.dry_run && d.force);
        assert_eq!(d.timeout, Some(Duration::from_secs(300)));
        assert_eq!(
            d.to_text(),
            "https://x.example/m.yml --target serf --dry-run --timeout 5m --force"
        );
        assert_eq!(
            p("s3://bucket/key.yml").unwrap().manifest_url,
            "s3://bucket/key.yml"
        );
        assert_eq!(p("file:///srv/m.yml").unwrap().target, DeployTarget::Local);
    }

    #[test]
    fn bad() {
        for (text, needle) in [
            ("", "needs a manifest URL"),
            ("--dry-run", "needs a manifest URL"),
            ("manifest.yml", "not a URL"),
            ("ftp://x/m.yml", "not ftp"),
            ("javascript:alert(1)", "not javascript"),
            ("https://x/m.yml --target mars", "use local, serf or consul"),
            ("https://x/m.yml --target", "needs a value"),
            ("https://x/m.yml --timeout 0", "more than zero"),
            ("https://x/m.yml --timeout soon", "not a duration"),
            ("https://x/m.yml https://y/m.yml", "Unexpected word"),
            ("https://x/m.yml --yes", "Unknown option"),
        ] {
            let e = p(text).unwrap_err();
            assert!(e.problem.contains(needle), "{text:?}: {}", e.problem);
        }
    }
}
