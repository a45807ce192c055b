//! The Rancher settings, built from the environment by `crate::config`.

use std::time::Duration;

use regex::Regex;
use url::Url;

use crate::secret::Secret;

/// Rancher connection settings shared by the catalog and image upgrades.
#[derive(Debug, Clone)]
pub struct Config {
    pub url: Option<Url>,
    pub access_key: Option<Secret>,
    pub secret_key: Option<Secret>,
    /// Only environments whose name matches one of these are touched.
    pub environments: Vec<Regex>,
    /// The launch-config label that enables image auto-updates.
    pub autoupdate_label: String,
    /// Deadline for one HTTP call to Rancher.
    pub request_timeout: Duration,
    /// Requests per second sent to one Rancher.
    pub rate_limit: u32,
    /// Stacks or services upgraded at once.
    pub parallelism: usize,
    /// How long one stack or service may take to reach `upgraded`.
    pub upgrade_timeout: Duration,
    /// How often upgrade progress is polled.
    pub poll_interval: Duration,
    /// Containers of one service replaced at once in an in-service upgrade
    /// (`CORRAL_UPGRADE_BATCH_SIZE`, Rancher's `batchSize`).
    pub batch_size: u32,
    /// Pause between batches (`CORRAL_UPGRADE_INTERVAL`, Rancher's `intervalMillis`).
    pub batch_interval: Duration,
    /// Undo a failed stack or service upgrade (Rancher's error, deadline passed) by
    /// rollback (cancel when Rancher offers none); off: by cancelupgrade
    /// (`CORRAL_ROLLBACK_ON_TIMEOUT`).
    pub rollback_on_timeout: bool,
}
