//! Which door a request came through, and who it acts as.
//!
//! Only Slack vouches for Slack user ids. A name given through any other door is
//! namespaced by that door (`api:ci-bot`, `cli:alice`, `releasestatus:bob`), so it can
//! never pass for a Slack user, an admin or the holder of a release someone started in
//! Slack. [`Source`] is persisted (jobs, lock history, audit) by its [`Source::as_str`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Slack,
    Api,
    Cli,
    /// releasestatus's `/start /stop /block /unblock`.
    ReleaseStatus,
    /// The local playground page (`/playground`), names chosen there.
    Playground,
}

impl Source {
    pub(crate) const ALL: [Source; 5] = [
        Source::Slack,
        Source::Api,
        Source::Cli,
        Source::ReleaseStatus,
        Source::Playground,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Slack => "slack",
            Source::Api => "api",
            Source::Cli => "cli",
            Source::ReleaseStatus => "releasestatus",
            Source::Playground => "playground",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Source::ALL.into_iter().find(|x| x.as_str() == s).ok_or(())
    }
}

/// The identity a request from `source` acts as (see the module docs).
pub fn identity(source: Source, user: &str) -> String {
    match source {
        Source::Slack => user.to_string(),
        other => {
            let prefix = other.as_str();
            if user == prefix {
                return user.to_string();
            }
            match user.strip_prefix(prefix).and_then(|r| r.strip_prefix(':')) {
                Some(_) => user.to_string(),
                None => format!("{prefix}:{user}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in Source::ALL {
            assert_eq!(s.as_str().parse::<Source>(), Ok(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("SLACK".parse::<Source>().is_err());
    }

    #[test]
    fn identities_are_namespaced() {
        assert_eq!(identity(Source::Slack, "U0ALICE"), "U0ALICE");
        assert_eq!(identity(Source::Api, "U0ALICE"), "api:U0ALICE");
        assert_eq!(identity(Source::Api, "api:ci"), "api:ci");
        assert_eq!(identity(Source::Cli, "api:ci"), "cli:api:ci");
        assert_eq!(identity(Source::ReleaseStatus, "bob"), "releasestatus:bob");
        assert_eq!(identity(Source::Playground, "alice"), "playground:alice");
        assert_eq!(
            identity(Source::Playground, "playground:alice"),
            "playground:alice"
        );
    }
}
