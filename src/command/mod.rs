//! Chat text → [`Command`].
//!
//! The same grammar serves slash commands (`/release start`), mentions
//! (`@corral release start`), `corral exec` and `POST /api/v1/commands` (SPEC §2). Each
//! command family is one file holding its parser and its usage text side by side.
//! Parsing is pure: a [`ParseError`] names the problem and carries the usage to show;
//! nothing runs on a parse error.

mod deploy;
mod release;
mod upgrade;

use std::fmt;
use std::time::Duration;

use crate::job::JobKind;
use crate::text::{parse_duration, sanitize};

pub use deploy::{DeployCmd, DeployTarget, SOURCE_SCHEMES, SOURCE_SCHEMES_TEXT};
pub use release::ReleaseCmd;
pub use upgrade::{CatalogUpgrade, ImageUpgrade, UpgradeCmd};

/// Longest command text accepted (Slack's own limit on a message is 40k; no sane
/// command comes near this).
pub(crate) const MAX_TEXT: usize = 4000;

/// A parsed chat command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Release(ReleaseCmd),
    Upgrade(UpgradeCmd),
    Deploy(DeployCmd),
    /// `/<command> help`, or `help` alone (`None`: the overview).
    Help(Option<Family>),
    /// `approve <job> [note…]` / `deny <job> [reason…]`: a vote on a job awaiting approval
    /// (mentions, `corral exec`, `POST /api/v1/commands`).
    Vote(VoteCmd),
}

/// A vote typed as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteCmd {
    pub job: i64,
    pub kind: crate::job::approval::VoteKind,
    pub note: String,
}

/// The usage of the vote commands.
pub(crate) const VOTE_USAGE: &str = "*Votes on a job awaiting approval*\n\
• `approve <job> [note…]` — approve it (also the Approve button on its card)\n\
• `deny <job> [reason…]` — deny it; it is cancelled\n\
Examples: `@corral approve 12 looks good`, `@corral deny 12 not during the sale`";

fn parse_vote(kind: crate::job::approval::VoteKind, rest: &str) -> Result<Command, ParseError> {
    let err = |problem: String| ParseError {
        problem: format!("{problem}\n\n{VOTE_USAGE}"),
        family: None,
    };
    let (id, note) = split_first_word(rest);
    let id = id.trim_start_matches('#');
    if id.is_empty() {
        return Err(err(format!("`{kind}` needs the job's number.")));
    }
    let job = match id.parse::<i64>() {
        Ok(n) if n > 0 => n,
        _ => {
            return Err(err(format!("`{}` is not a job number.", sanitize(id))));
        }
    };
    Ok(Command::Vote(VoteCmd {
        job,
        kind,
        note: note.trim().to_string(),
    }))
}

/// The three command families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Release,
    Upgrade,
    Deploy,
}

impl Family {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::Release => "release",
            Family::Upgrade => "upgrade",
            Family::Deploy => "deploy",
        }
    }

    pub(crate) fn usage(self) -> &'static str {
        match self {
            Family::Release => release::USAGE,
            Family::Upgrade => upgrade::USAGE,
            Family::Deploy => deploy::USAGE,
        }
    }

    fn from_name(name: &str) -> Option<Family> {
        match name.trim_start_matches('/').to_ascii_lowercase().as_str() {
            "release" => Some(Family::Release),
            "upgrade" => Some(Family::Upgrade),
            "deploy" => Some(Family::Deploy),
            _ => None,
        }
    }
}

impl Command {
    /// The family this command belongs to (for permissions and usage).
    pub(crate) fn family(&self) -> Option<Family> {
        match self {
            Command::Release(_) => Some(Family::Release),
            Command::Upgrade(_) => Some(Family::Upgrade),
            Command::Deploy(_) => Some(Family::Deploy),
            Command::Help(f) => *f,
            Command::Vote(_) => None,
        }
    }

    /// The job this command becomes, if it changes something outside corral (and so
    /// passes the lock gate).
    pub(crate) fn job(&self) -> Option<JobCmd> {
        match self {
            Command::Upgrade(UpgradeCmd::Catalog(c)) => Some(JobCmd::Catalog(c.clone())),
            Command::Upgrade(UpgradeCmd::Image(i)) => Some(JobCmd::Image(i.clone())),
            Command::Deploy(d) => Some(JobCmd::Deploy(d.clone())),
            Command::Release(_) | Command::Help(_) | Command::Vote(_) => None,
        }
    }

    /// `--force` was given.
    pub(crate) fn forced(&self) -> bool {
        match self {
            Command::Release(ReleaseCmd::Stop { force })
            | Command::Release(ReleaseCmd::Start { force, .. }) => *force,
            Command::Upgrade(UpgradeCmd::Catalog(c)) => c.force,
            Command::Upgrade(UpgradeCmd::Image(i)) => i.force,
            Command::Deploy(d) => d.force,
            _ => false,
        }
    }

    /// The command as a user would type it again (stored with jobs, shown in threads).
    pub(crate) fn to_text(&self) -> String {
        match self {
            Command::Release(r) => format!("/release {}", r.to_text()),
            Command::Upgrade(u) => format!("/upgrade {}", u.to_text()),
            Command::Deploy(d) => format!("/deploy {}", d.to_text()),
            Command::Help(Some(f)) => format!("/{} help", f.name()),
            Command::Help(None) => "help".to_string(),
            Command::Vote(v) if v.note.is_empty() => format!("{} {}", v.kind, v.job),
            Command::Vote(v) => format!("{} {} {}", v.kind, v.job, v.note),
        }
    }
}

/// A command that becomes a job: the one type the runner dispatches on, so a command
/// that is not a job cannot reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobCmd {
    Catalog(CatalogUpgrade),
    Image(ImageUpgrade),
    Deploy(DeployCmd),
}

impl JobCmd {
    pub(crate) fn kind(&self) -> JobKind {
        match self {
            JobCmd::Catalog(_) => JobKind::UpgradeCatalog,
            JobCmd::Image(_) => JobKind::UpgradeImage,
            JobCmd::Deploy(_) => JobKind::Deploy,
        }
    }

    /// The command it came from (for its text and flags).
    pub(crate) fn command(&self) -> Command {
        match self {
            JobCmd::Catalog(c) => Command::Upgrade(UpgradeCmd::Catalog(c.clone())),
            JobCmd::Image(i) => Command::Upgrade(UpgradeCmd::Image(i.clone())),
            JobCmd::Deploy(d) => Command::Deploy(d.clone()),
        }
    }
}

/// Why a text is not a command. `Display` is the whole reply: the problem, then usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub problem: String,
    pub family: Option<Family>,
}

impl ParseError {
    fn new(family: Family, problem: impl Into<String>) -> Self {
        ParseError {
            problem: problem.into(),
            family: Some(family),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n\n", self.problem)?;
        match self.family {
            Some(fam) => f.write_str(fam.usage()),
            None => f.write_str(OVERVIEW),
        }
    }
}

impl std::error::Error for ParseError {}

/// The overview shown for `help` and for unknown commands.
pub(crate) const OVERVIEW: &str = "corral understands three commands:\n\
• `/release start|stop|status|block|unblock|history` — the release lock\n\
• `/upgrade &lt;catalog&gt;:&lt;template&gt;:&lt;version&gt;` or `/upgrade image &lt;image-ref&gt;` — Rancher upgrades\n\
• `/deploy &lt;manifest-url&gt;` — deploy an artifact to hosts\n\
Add `help` to any of them for usage and examples.";

/// Parses a slash command: `command` is the slash command's name (`/release`) and
/// `text` everything after it.
pub fn parse_slash(command: &str, text: &str) -> Result<Command, ParseError> {
    let family = Family::from_name(command).ok_or_else(|| ParseError {
        problem: format!("`{}` is not a corral command.", sanitize(command)),
        family: None,
    })?;
    parse_family(family, text)
}

/// Parses free text as typed in a mention or `corral exec`: the first word is the
/// command (`release start`, `/upgrade image x:1`). A leading bot mention (`<@U…>`) is
/// skipped.
pub fn parse_text(text: &str) -> Result<Command, ParseError> {
    check_length(text, None)?;
    let mut rest = text.trim();
    // A mention arrives as `<@UBOT> release start`; drop any leading mentions.
    while let Some(after) = rest.strip_prefix("<@") {
        match after.find('>') {
            Some(end) => rest = after[end + 1..].trim_start(),
            None => break,
        }
    }
    let (first, tail) = split_first_word(rest);
    if first.is_empty() || first.eq_ignore_ascii_case("help") {
        return Ok(Command::Help(None));
    }
    use crate::job::approval::VoteKind;
    if first.eq_ignore_ascii_case("approve") {
        return parse_vote(VoteKind::Approve, tail);
    }
    if first.eq_ignore_ascii_case("deny") {
        return parse_vote(VoteKind::Deny, tail);
    }
    parse_slash(first, tail)
}

fn parse_family(family: Family, text: &str) -> Result<Command, ParseError> {
    check_length(text, Some(family))?;
    let words = tokenize(text).map_err(|p| ParseError::new(family, p))?;
    if words
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("help"))
    {
        return Ok(Command::Help(Some(family)));
    }
    match family {
        Family::Release => release::parse(&words).map(Command::Release),
        Family::Upgrade => upgrade::parse(&words).map(Command::Upgrade),
        Family::Deploy => deploy::parse(&words).map(Command::Deploy),
    }
}

fn check_length(text: &str, family: Option<Family>) -> Result<(), ParseError> {
    if text.len() > MAX_TEXT {
        return Err(ParseError {
            problem: format!(
                "That command is {} bytes long; the limit is {MAX_TEXT}.",
                text.len()
            ),
            family,
        });
    }
    if text.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(ParseError {
            problem: "That command contains control characters.".to_string(),
            family,
        });
    }
    Ok(())
}

fn split_first_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Splits command text into words. Slack's "smart quotes" and plain double quotes
/// group words (`--env "prod|staging"`); a quote left open is an error.
fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut has_word = false;
    for c in text.chars() {
        match c {
            '"' | '“' | '”' => {
                in_quote = !in_quote;
                has_word = true;
            }
            c if c.is_whitespace() && !in_quote => {
                if has_word {
                    words.push(std::mem::take(&mut cur));
                    has_word = false;
                }
            }
            c => {
                cur.push(c);
                has_word = true;
            }
        }
    }
    if in_quote {
        return Err("A quote is left open.".to_string());
    }
    if has_word {
        words.push(cur);
    }
    Ok(words)
}

/// Splits `--flag value` style arguments. Shared by the three parsers.
pub(crate) struct Args<'a> {
    words: &'a [String],
    pos: usize,
    family: Family,
}

impl<'a> Args<'a> {
    pub(crate) fn new(words: &'a [String], family: Family) -> Self {
        Args {
            words,
            pos: 0,
            family,
        }
    }

    pub(crate) fn next(&mut self) -> Option<&'a str> {
        let w = self.words.get(self.pos)?;
        self.pos += 1;
        Some(w.as_str())
    }

    /// The value after a flag, or an error naming the flag.
    pub(crate) fn value(&mut self, flag: &str) -> Result<&'a str, ParseError> {
        match self.next() {
            Some(v) if !v.starts_with("--") => Ok(v),
            _ => Err(self.err(format!("`{flag}` needs a value."))),
        }
    }

    pub(crate) fn err(&self, problem: impl Into<String>) -> ParseError {
        ParseError::new(self.family, problem)
    }

    pub(crate) fn unknown(&self, word: &str) -> ParseError {
        if word.starts_with("--") {
            self.err(format!("Unknown option `{}`.", sanitize(word)))
        } else {
            self.err(format!("Unexpected word `{}`.", sanitize(word)))
        }
    }

    /// `--env REGEX`, validated.
    pub(crate) fn env_regex(&mut self) -> Result<String, ParseError> {
        let v = self.value("--env")?;
        regex::Regex::new(v).map_err(|e| {
            self.err(format!(
                "`--env {}` is not a valid regex: {}",
                sanitize(v),
                sanitize(&e.to_string())
            ))
        })?;
        Ok(v.to_string())
    }

    /// `--timeout DURATION`, validated.
    pub(crate) fn timeout(&mut self) -> Result<Duration, ParseError> {
        let v = self.value("--timeout")?;
        let d = parse_duration(v).map_err(|e| self.err(format!("`--timeout`: {e}")))?;
        if d.is_zero() {
            return Err(self.err("`--timeout` must be more than zero."));
        }
        Ok(d)
    }
}

/// A word as it must be typed to parse back whole: quoted when empty or holding spaces.
pub(crate) fn quote(word: &str) -> String {
    if word.is_empty() || word.chars().any(char::is_whitespace) {
        format!("\"{word}\"")
    } else {
        word.to_string()
    }
}

/// Strips Slack's link wrapper from a word: `<https://x|label>` → `https://x`.
pub(crate) fn unwrap_link(word: &str) -> &str {
    match word.strip_prefix('<').and_then(|w| w.strip_suffix('>')) {
        Some(inner) => inner.split('|').next().unwrap_or(inner),
        None => word,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_mentions() {
        assert_eq!(
            parse_text("<@U0BOT> release status").unwrap(),
            Command::Release(ReleaseCmd::Status)
        );
        assert_eq!(
            parse_text("/release status").unwrap(),
            Command::Release(ReleaseCmd::Status)
        );
        assert_eq!(parse_text("<@U0BOT>").unwrap(), Command::Help(None));
        assert_eq!(parse_text("help").unwrap(), Command::Help(None));
        assert_eq!(
            parse_text("upgrade help").unwrap(),
            Command::Help(Some(Family::Upgrade))
        );
        let e = parse_text("launch rockets").unwrap_err();
        assert!(e.to_string().contains("`launch` is not a corral command"));
        assert!(e.to_string().contains("/release start"));
    }

    #[test]
    fn hostile_text() {
        let long = "release start ".to_string() + &"x".repeat(MAX_TEXT);
        assert!(parse_text(&long).unwrap_err().problem.contains("limit"));
        assert!(parse_text("release start \u{0}").is_err());
        assert!(parse_slash("/release", "start \"unterminated").is_err());
        let e = parse_text("<!channel> hi").unwrap_err();
        assert!(e.problem.contains("&lt;!channel&gt;"), "{}", e.problem);
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(
            tokenize(r#"a "b c" “d e”"#).unwrap(),
            vec!["a", "b c", "d e"]
        );
        assert_eq!(tokenize(r#""""#).unwrap(), vec![""]);
    }

    #[test]
    fn links_unwrap() {
        assert_eq!(unwrap_link("<https://x/m.yml|m.yml>"), "https://x/m.yml");
        assert_eq!(unwrap_link("<https://x/m.yml>"), "https://x/m.yml");
        assert_eq!(unwrap_link("https://x"), "https://x");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn reason() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-zA-Z0-9][a-zA-Z0-9.:_-]{0,11}", 0..4)
            .prop_map(|w| w.join(" "))
    }

    fn command() -> impl Strategy<Value = Command> {
        let name = "[a-z][a-z0-9-]{0,10}";
        prop_oneof![
            (reason(), any::<bool>())
                .prop_map(|(reason, force)| Command::Release(ReleaseCmd::Start { reason, force })),
            any::<bool>().prop_map(|force| Command::Release(ReleaseCmd::Stop { force })),
            Just(Command::Release(ReleaseCmd::Status)),
            reason().prop_map(|reason| Command::Release(ReleaseCmd::Block { reason })),
            Just(Command::Release(ReleaseCmd::Unblock)),
            (1usize..=100).prop_map(|n| Command::Release(ReleaseCmd::History { n })),
            (
                name,
                name,
                "[0-9][0-9a-z.+-]{0,8}",
                proptest::option::of("\\^[a-z]{1,6}( [a-z]{1,3})?"),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(catalog, template, version, env, dry_run, force)| {
                    Command::Upgrade(UpgradeCmd::Catalog(CatalogUpgrade {
                        catalog,
                        template,
                        version,
                        env,
                        dry_run,
                        force,
                    }))
                }),
            (
                "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}:[0-9][0-9.]{0,6}",
                any::<bool>(),
                any::<bool>(),
                proptest::option::of(1u64..100_000),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(image, confirm, start_first, t, dry_run, force)| {
                    Command::Upgrade(UpgradeCmd::Image(ImageUpgrade {
                        image,
                        env: None,
                        confirm,
                        start_first,
                        timeout: t.map(Duration::from_secs),
                        dry_run,
                        force,
                    }))
                }),
            (
                "https://[a-z]{1,8}\\.example\\.com/[a-z]{1,8}\\.yml",
                prop_oneof![
                    Just(DeployTarget::Local),
                    Just(DeployTarget::Serf),
                    Just(DeployTarget::Consul)
                ],
                any::<bool>(),
                proptest::option::of(1u64..100_000),
                any::<bool>()
            )
                .prop_map(|(manifest_url, target, dry_run, t, force)| {
                    Command::Deploy(DeployCmd {
                        manifest_url,
                        target,
                        dry_run,
                        timeout: t.map(Duration::from_secs),
                        force,
                    })
                }),
        ]
    }

    proptest! {
        /// What corral stores for a job (`to_text`) parses back to the same command, so
        /// a restarted corral knows exactly what was asked.
        #[test]
        fn text_round_trips(cmd in command()) {
            prop_assert_eq!(parse_text(&cmd.to_text()), Ok(cmd));
        }

        /// No input makes the parser panic, and every refusal carries usage text.
        #[test]
        fn any_text_parses_or_explains(text in "\\PC{0,200}") {
            if let Err(e) = parse_text(&text) {
                prop_assert!(!e.problem.is_empty());
                prop_assert!(e.to_string().contains('/'));
            }
        }

    }
}
