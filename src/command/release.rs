//! `/release …`: the release lock (reference/releasestatus.md, plus owner and reason).

use super::{Args, Family, ParseError};

pub(crate) const USAGE: &str = "*Usage:* `/release <start|stop|status|block|unblock|history>`\n\
• `/release start [--force] [reason…]` — take the release lock (e.g. `/release start 1.4.0 hotfix`); `--force` lets an admin start through a freeze window\n\
• `/release stop [--force]` — give it back; `--force` lets an admin stop someone else's\n\
• `/release status` — who holds it, since when, why; blocked or not\n\
• `/release block [reason…]` — no new release may start (e.g. `/release block incident`)\n\
• `/release unblock` — allow releases again\n\
• `/release history [N]` — the last N lock changes (default 10, at most 100)";

/// Longest reason kept, in characters.
pub(crate) const MAX_REASON: usize = 300;

/// A release-lock command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseCmd {
    /// `force`: an admin starts through an open freeze window.
    Start {
        reason: String,
        force: bool,
    },
    Stop {
        force: bool,
    },
    Status,
    Block {
        reason: String,
    },
    Unblock,
    History {
        n: usize,
    },
}

impl ReleaseCmd {
    pub(crate) fn to_text(&self) -> String {
        match self {
            ReleaseCmd::Start { reason, force } => {
                let mut t = String::from("start");
                if *force {
                    t.push_str(" --force");
                }
                if !reason.is_empty() {
                    t.push(' ');
                    t.push_str(reason);
                }
                t
            }
            ReleaseCmd::Stop { force: true } => "stop --force".into(),
            ReleaseCmd::Stop { force: false } => "stop".into(),
            ReleaseCmd::Status => "status".into(),
            ReleaseCmd::Block { reason } if reason.is_empty() => "block".into(),
            ReleaseCmd::Block { reason } => format!("block {reason}"),
            ReleaseCmd::Unblock => "unblock".into(),
            ReleaseCmd::History { n } => format!("history {n}"),
        }
    }
}

pub(super) fn parse(words: &[String]) -> Result<ReleaseCmd, ParseError> {
    let mut args = Args::new(words, Family::Release);
    let Some(verb) = args.next() else {
        return Err(args.err("`/release` needs a subcommand."));
    };
    let rest: Vec<&str> = std::iter::from_fn(|| args.next()).collect();
    let args = Args::new(words, Family::Release);
    match verb.to_ascii_lowercase().as_str() {
        "start" => {
            // SPEC §2: `/release start [--force] [reason…]`.
            let (force, rest) = match rest.split_first() {
                Some((first, tail)) if first.eq_ignore_ascii_case("--force") => (true, tail),
                _ => (false, rest.as_slice()),
            };
            Ok(ReleaseCmd::Start {
                reason: reason(&args, rest)?,
                force,
            })
        }
        "block" => Ok(ReleaseCmd::Block {
            reason: reason(&args, &rest)?,
        }),
        "stop" => match rest.as_slice() {
            [] => Ok(ReleaseCmd::Stop { force: false }),
            ["--force"] => Ok(ReleaseCmd::Stop { force: true }),
            [w, ..] => Err(args.unknown(w)),
        },
        "status" => no_more(&args, &rest, ReleaseCmd::Status),
        "unblock" => no_more(&args, &rest, ReleaseCmd::Unblock),
        "history" => match rest.as_slice() {
            [] => Ok(ReleaseCmd::History { n: 10 }),
            [n] => match n.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => Ok(ReleaseCmd::History { n }),
                _ => Err(args.err(format!(
                    "`{}` is not a count from 1 to 100.",
                    super::sanitize(n)
                ))),
            },
            [_, w, ..] => Err(args.unknown(w)),
        },
        other => Err(args.err(format!(
            "`{}` is not a /release subcommand.",
            super::sanitize(other)
        ))),
    }
}

fn no_more(args: &Args, rest: &[&str], cmd: ReleaseCmd) -> Result<ReleaseCmd, ParseError> {
    match rest.first() {
        None => Ok(cmd),
        Some(w) => Err(args.unknown(w)),
    }
}

fn reason(args: &Args, rest: &[&str]) -> Result<String, ParseError> {
    if let Some(flag) = rest.iter().find(|w| w.starts_with("--")) {
        return Err(args.unknown(flag));
    }
    let reason = rest.join(" ");
    if reason.chars().count() > MAX_REASON {
        return Err(args.err(format!(
            "The reason is too long ({} characters, at most {MAX_REASON}).",
            reason.chars().count()
        )));
    }
    Ok(reason)
}

#[cfg(test)]
mod tests {
    use super::super::{Command, parse_slash};
    use super::*;

    fn p(text: &str) -> Result<ReleaseCmd, ParseError> {
        match parse_slash("/release", text)? {
            Command::Release(r) => Ok(r),
            other => panic!("not a release command: {other:?}"),
        }
    }

    #[test]
    fn every_subcommand() {
        assert_eq!(
            p("start").unwrap(),
            ReleaseCmd::Start {
                reason: "".into(),
                force: false
            }
        );
        assert_eq!(
            p("start 1.4.0  hotfix").unwrap(),
            ReleaseCmd::Start {
                reason: "1.4.0 hotfix".into(),
                force: false
            }
        );
        assert_eq!(
            p("start --force 1.4.0 hotfix").unwrap(),
            ReleaseCmd::Start {
                reason: "1.4.0 hotfix".into(),
                force: true
            }
        );
        assert_eq!(
            p("start --force").unwrap(),
            ReleaseCmd::Start {
                reason: "".into(),
                force: true
            }
        );
        assert_eq!(p("start --force x").unwrap().to_text(), "start --force x");
        assert_eq!(p("STOP").unwrap(), ReleaseCmd::Stop { force: false });
        assert_eq!(p("stop --force").unwrap(), ReleaseCmd::Stop { force: true });
        assert_eq!(p("status").unwrap(), ReleaseCmd::Status);
        assert_eq!(
            p("block incident 42").unwrap(),
            ReleaseCmd::Block {
                reason: "incident 42".into()
            }
        );
        assert_eq!(p("unblock").unwrap(), ReleaseCmd::Unblock);
        assert_eq!(p("history").unwrap(), ReleaseCmd::History { n: 10 });
        assert_eq!(p("history 100").unwrap(), ReleaseCmd::History { n: 100 });
    }

    #[test]
    fn malformed() {
        for (text, needle) in [
            ("", "needs a subcommand"),
            ("launch", "not a /release subcommand"),
            ("stop now", "Unexpected word `now`"),
            ("stop --forse", "Unknown option `--forse`"),
            ("status please", "Unexpected word"),
            ("history 0", "from 1 to 100"),
            ("history 101", "from 1 to 100"),
            ("history -1", "from 1 to 100"),
            ("history ten", "from 1 to 100"),
            ("history 5 6", "Unexpected word"),
            ("start --forse", "Unknown option"),
            ("start --force --force", "Unknown option"),
            ("start hotfix --force", "Unknown option"),
        ] {
            let e = p(text).unwrap_err();
            assert!(e.problem.contains(needle), "{text:?}: {}", e.problem);
            assert!(
                e.to_string().contains("*Usage:* `/release"),
                "usage shown for {text:?}"
            );
        }
        let long = format!("start {}", "x".repeat(MAX_REASON + 1));
        assert!(p(&long).unwrap_err().problem.contains("too long"));
    }
}
