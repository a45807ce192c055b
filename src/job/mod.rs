//! Jobs: every mutating command becomes one, stored before Slack is acknowledged
//! (SPEC §3), run by the [`runner`], and told as one Slack thread by the [`reporter`].

pub mod progress;
pub mod reporter;
pub mod runner;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use progress::{Failure, Outcome, PlanGroup, PlanItem, Progress, ProgressTx};

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
    pub fn as_str(self) -> &'static str {
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
