//! The deploy settings of the bot (`/deploy`), built from the environment by
//! `crate::config`. `corral agent` reads its own flags and environment (`agent`).

use std::time::Duration;

use url::Url;

/// Deploy (`/deploy`, `corral agent`) settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Manifest URLs must start with one of these prefixes. Empty: `/deploy` is off.
    pub allow: Vec<String>,
    /// Hosts that must report for a fan-out (when Serf membership is not used).
    pub hosts: Vec<String>,
    /// Serf agent RPC address used by `--target serf`.
    pub serf_rpc: String,
    /// Consul agent HTTP base used by `--target consul`.
    pub consul_url: Url,
    /// How long a fan-out waits for host reports.
    pub report_timeout: Duration,
    /// Whether hosts have a token to report with (`CORRAL_API_TOKEN`); a fan-out needs it.
    pub reports_authenticated: bool,
    /// Bounds on extracting an archive here (`--target local`; agents read their own
    /// `CORRAL_DEPLOY_MAX_*`).
    pub limits: super::extract::Limits,
}
