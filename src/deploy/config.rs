//! The deploy settings of the bot (`/deploy`), built from the environment by
//! `crate::config`. `corral agent` reads its own flags and environment (`agent`).

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::secret::Secret;

/// Deploy (`/deploy`, `corral agent`) settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Manifest URLs must start with one of these prefixes. Empty: `/deploy` is off.
    pub allow: Vec<String>,
    /// Hosts that must report for a fan-out (when Serf membership is not used).
    pub hosts: Vec<String>,
    /// Serf agent RPC address used by `--target serf`.
    pub serf_rpc: String,
    /// The Serf agent's RPC auth key, handed to `serf` through its environment only
    /// (`SERF_RPC_AUTH`), never as an argument the process list would show.
    pub serf_rpc_auth: Option<Secret>,
    /// Consul agent HTTP base used by `--target consul`.
    pub consul_url: Url,
    /// Consul ACL token, sent as `X-Consul-Token`.
    pub consul_token: Option<Secret>,
    /// A PEM CA certificate to trust for Consul (besides the system's roots).
    pub consul_ca: Option<Vec<u8>>,
    /// How long a fan-out waits for host reports.
    pub report_timeout: Duration,
    /// Whether hosts have a token to report with (`CORRAL_API_TOKEN`); a fan-out needs it.
    pub reports_authenticated: bool,
    /// Bounds on extracting an archive here (`--target local`; agents read their own
    /// `CORRAL_DEPLOY_MAX_*`).
    pub limits: super::extract::Limits,
    /// The program `--target local` runs as `<program> agent` (`CORRAL_DEPLOY_AGENT`;
    /// `None`: this very binary).
    pub agent: Option<PathBuf>,
    /// What a deploy on the bot's host gets of the bot's environment: the variables
    /// `CORRAL_DEPLOY_ENV` names, never one of the bot's secrets (see [`own_secret`]).
    pub env: Vec<(String, Secret)>,
}

/// Whether `name` is (or may be) one of corral's own settings or secrets, which a deploy
/// never gets: `SLACK_*`, `RANCHER_*`, `CATTLE_*`, `CORRAL_*` and the older tools' names.
pub fn own_secret(name: &str) -> bool {
    const PREFIXES: [&str; 4] = ["SLACK_", "RANCHER_", "CATTLE_", "CORRAL_"];
    const NAMES: [&str; 6] = [
        "API_KEY",
        "DATABASE_URL",
        "CONSUL_HTTP_TOKEN",
        "SERF_RPC_AUTH",
        "AUTOUPDATE_SLACK_WEBHOOK_URL",
        "AUTOUPDATE_SLACK_TOKEN",
    ];
    let upper = name.to_ascii_uppercase();
    PREFIXES.iter().any(|p| upper.starts_with(p)) || NAMES.contains(&upper.as_str())
}
