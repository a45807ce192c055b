//! The vocabulary of jobs: what a job is ([`JobKind`]), where it is in its life
//! ([`JobStatus`]), what domain code says while it runs ([`Progress`]) and what it did
//! ([`Outcome`]). Every mutating command becomes a job, stored before Slack is
//! acknowledged (SPEC §3); `app::runner` runs it and `app::reporter` tells its story.

pub mod approval;
pub mod progress;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use progress::{Failure, Outcome, PlanDetail, PlanGroup, PlanItem, Progress, ProgressTx};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    AwaitingApproval,
    Running,
    Succeeded,
    Failed,
    /// The bot stopped (crash, restart) while the job ran.
    Interrupted,
    Cancelled,
}

impl JobStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::AwaitingApproval => "awaiting_approval",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Interrupted => "interrupted",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded
                | JobStatus::Failed
                | JobStatus::Interrupted
                | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "queued" => JobStatus::Queued,
            "awaiting_approval" => JobStatus::AwaitingApproval,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "interrupted" => JobStatus::Interrupted,
            "cancelled" => JobStatus::Cancelled,
            _ => return Err(()),
        })
    }
}

/// What a job does. Persisted by [`JobKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobKind {
    #[serde(rename = "upgrade-catalog")]
    UpgradeCatalog,
    #[serde(rename = "upgrade-image")]
    UpgradeImage,
    #[serde(rename = "deploy")]
    Deploy,
}

impl JobKind {
    pub(crate) const ALL: [JobKind; 3] = [
        JobKind::UpgradeCatalog,
        JobKind::UpgradeImage,
        JobKind::Deploy,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobKind::UpgradeCatalog => "upgrade-catalog",
            JobKind::UpgradeImage => "upgrade-image",
            JobKind::Deploy => "deploy",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or(())
    }
}

/// Why a job could not run at all (as opposed to some targets failing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JobError(pub String);

impl JobError {
    pub(crate) fn new(text: impl Into<String>) -> Self {
        JobError(text.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisted_names_round_trip() {
        for k in JobKind::ALL {
            assert_eq!(k.as_str().parse::<JobKind>(), Ok(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        for s in [
            JobStatus::Queued,
            JobStatus::AwaitingApproval,
            JobStatus::Running,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Interrupted,
            JobStatus::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<JobStatus>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("Deploy".parse::<JobKind>().is_err());
    }
}
