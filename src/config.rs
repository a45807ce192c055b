//! Configuration: the environment, a `.env` file and the policy file, turned into one
//! validated [`Config`] at start-up.
//!
//! Every setting has a native name and, where an older tool had one, its aliases
//! (SPEC §5). A native name wins over an alias. An invalid value stops start-up with
//! an error naming the variable it came from; nothing is skipped silently.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use url::Url;

use crate::policy::Policy;
use crate::secret::Secret;

/// A configuration error, always naming the variable (or file and key) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {reason}")]
    Invalid { var: String, reason: String },
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
}

impl ConfigError {
    pub(crate) fn invalid(var: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            var: var.to_string(),
            reason: reason.into(),
        }
    }
}

/// The variables corral reads, as one map. Built from the process environment plus
/// `.env` (the environment wins), or from a literal list in tests.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The process environment, with `.env` from the working directory filling gaps.
    pub fn from_process() -> Result<Self, ConfigError> {
        Env::from_process_and_file(std::path::Path::new(".env"))
    }

    /// The process environment, with the dotenv file at `path` filling gaps.
    pub(crate) fn from_process_and_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let mut vars: HashMap<String, String> = HashMap::new();
        match dotenvy::from_path_iter(path) {
            Ok(iter) => {
                for item in iter {
                    let (k, v) =
                        item.map_err(|e| ConfigError::invalid(".env", dotenv_error(&e)))?;
                    vars.insert(k, v);
                }
            }
            Err(e) if e.not_found() => {}
            Err(e) => return Err(ConfigError::invalid(".env", format!("cannot read: {e}"))),
        }
        for (k, v) in std::env::vars_os() {
            if let (Ok(k), Ok(v)) = (k.into_string(), v.into_string()) {
                vars.insert(k, v);
            }
        }
        Ok(Env { vars })
    }

    /// An environment made of exactly these pairs (tests, `corral check --env-file`).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The first non-empty value among `names` (native name first, then aliases),
    /// with the name it was found under, so errors can name the right variable.
    pub(crate) fn lookup<'a>(&self, names: &[&'a str]) -> Option<(&'a str, &str)> {
        names.iter().find_map(|n| {
            self.vars
                .get(*n)
                .map(|v| v.as_str())
                .filter(|v| !v.trim().is_empty())
                .map(|v| (*n, v))
        })
    }

    /// A plain string setting.
    pub(crate) fn string(&self, names: &[&str]) -> Option<String> {
        self.lookup(names).map(|(_, v)| v.trim().to_string())
    }

    /// A secret setting: kept whole (no trimming of inner characters), never printed.
    pub(crate) fn secret(&self, names: &[&str]) -> Option<Secret> {
        self.lookup(names).map(|(_, v)| Secret::new(v.trim()))
    }

    /// A duration setting (`30s`, `10m`, `1h`, or bare seconds).
    pub(crate) fn duration(
        &self,
        names: &[&str],
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match self.lookup(names) {
            None => Ok(default),
            Some((var, v)) => crate::text::parse_duration(v.trim())
                .map_err(|e| ConfigError::invalid(var, e.to_string())),
        }
    }

    /// A whole number within `range`.
    pub(crate) fn number(
        &self,
        names: &[&str],
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        match self.lookup(names) {
            None => Ok(default),
            Some((var, v)) => {
                let n: u64 = v.trim().parse().map_err(|_| {
                    ConfigError::invalid(var, format!("{v:?} is not a whole number"))
                })?;
                if !range.contains(&n) {
                    return Err(ConfigError::invalid(
                        var,
                        format!("{n} is out of range ({}..={})", range.start(), range.end()),
                    ));
                }
                Ok(n)
            }
        }
    }

    /// A boolean (`true/false/1/0/yes/no/on/off`).
    pub(crate) fn boolean(&self, names: &[&str], default: bool) -> Result<bool, ConfigError> {
        match self.lookup(names) {
            None => Ok(default),
            Some((var, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::invalid(
                    var,
                    format!("{v:?} is not a boolean (true/false)"),
                )),
            },
        }
    }

    /// An absolute `http(s)` URL.
    pub(crate) fn url(&self, names: &[&str]) -> Result<Option<Url>, ConfigError> {
        match self.lookup(names) {
            None => Ok(None),
            Some((var, v)) => parse_http_url(v.trim())
                .map(Some)
                .map_err(|reason| ConfigError::invalid(var, reason)),
        }
    }

    /// A comma-separated list: parts trimmed, empty parts dropped (go-cowpoke's rule
    /// for `SLACK_CHANNELS`).
    pub(crate) fn list(&self, names: &[&str]) -> Vec<String> {
        self.lookup(names)
            .map(|(_, v)| split_list(v))
            .unwrap_or_default()
    }

    /// A comma-separated list of regular expressions; one that does not compile is an
    /// error naming the variable and the pattern.
    pub(crate) fn regex_list(
        &self,
        names: &[&str],
        default: &str,
    ) -> Result<Vec<Regex>, ConfigError> {
        let (var, raw) = self.lookup(names).unwrap_or((names[0], default));
        split_list(raw)
            .iter()
            .map(|p| {
                Regex::new(p)
                    .map_err(|e| ConfigError::invalid(var, format!("bad regex {p:?}: {e}")))
            })
            .collect()
    }
}

/// A `.env` parse error without the line's value (it may be a secret): the variable name
/// when the line has one, and where the parser stopped.
fn dotenv_error(e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::LineParse(line, at) => {
            let name = line
                .trim_start()
                .trim_start_matches("export ")
                .split('=')
                .next()
                .map(str::trim)
                .filter(|n| {
                    !n.is_empty()
                        && n.len() <= 64
                        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            match name {
                Some(n) if line.contains('=') => format!(
                    "cannot parse the line setting {n} (at character {at}; the value is not shown)"
                ),
                _ => format!("cannot parse a line (at character {at}; its text is not shown)"),
            }
        }
        other => format!("cannot parse: {other}"),
    }
}

/// Splits a comma list, trimming parts and dropping empty ones.
pub(crate) fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses an absolute URL and insists on an `http` or `https` scheme and a host.
pub(crate) fn parse_http_url(raw: &str) -> Result<Url, String> {
    // A value with `@` may hold credentials: errors then do not quote it.
    let shown = if raw.contains('@') {
        "the value".to_string()
    } else {
        format!("{raw:?}")
    };
    let raw_shown = &shown;
    let url =
        Url::parse(raw).map_err(|e| format!("{raw_shown} is not a URL with a scheme: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{raw_shown} must start with http:// or https://, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{raw_shown} has no host"));
    }
    Ok(url)
}

/// `CORRAL_DATABASE_URL`, which may carry a password: `Debug` and `Display` show it
/// with the password as `***`; [`DatabaseUrl::expose`] gives the text to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The URL as given, password included: only for opening the store.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::text::redact_url(&self.0))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", crate::text::redact_url(&self.0))
    }
}

/// The pool size and timeouts of a networked database (`CORRAL_DATABASE_POOL_SIZE`,
/// `…_CONNECT_TIMEOUT`, `…_POOL_TIMEOUT`, `…_STATEMENT_TIMEOUT`); also read on their own
/// by `corral migrate`.
pub fn database_settings(env: &Env) -> Result<crate::store::Settings, ConfigError> {
    let d = crate::store::Settings::default();
    let positive = |var: &str, v: Duration| {
        if v.is_zero() {
            Err(ConfigError::invalid(var, "must be longer than zero"))
        } else {
            Ok(v)
        }
    };
    Ok(crate::store::Settings {
        pool_size: env.number(
            &["CORRAL_DATABASE_POOL_SIZE"],
            d.pool_size as u64,
            1..=1_000,
        )? as usize,
        connect_timeout: positive(
            "CORRAL_DATABASE_CONNECT_TIMEOUT",
            env.duration(&["CORRAL_DATABASE_CONNECT_TIMEOUT"], d.connect_timeout)?,
        )?,
        pool_timeout: positive(
            "CORRAL_DATABASE_POOL_TIMEOUT",
            env.duration(&["CORRAL_DATABASE_POOL_TIMEOUT"], d.pool_timeout)?,
        )?,
        statement_timeout: positive(
            "CORRAL_DATABASE_STATEMENT_TIMEOUT",
            env.duration(&["CORRAL_DATABASE_STATEMENT_TIMEOUT"], d.statement_timeout)?,
        )?,
    })
}

/// Slack settings. Each is optional: without them the matching door is off.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub bot_token: Option<Secret>,
    pub signing_secret: Option<Secret>,
    pub app_token: Option<Secret>,
    /// Web API base, e.g. `https://slack.com/api` (tests point it at a fake).
    pub api_url: Url,
    /// An incoming webhook (post-only: no threads, no edits), used when there is no bot
    /// token. A secret: the URL is the credential.
    pub webhook_url: Option<Secret>,
    /// The username webhook posts show.
    pub webhook_username: Option<String>,
    /// The deadline of one call to Slack.
    pub timeout: Duration,
    /// Between two posts in one channel.
    pub post_interval: Duration,
    /// Between two message edits.
    pub update_interval: Duration,
    /// Commands a minute one user may send (0: no limit).
    pub user_rate: u32,
}

/// The HTTP server's bounds on slow clients (`CORRAL_HTTP_*`, see `api::serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// Time to deliver a request's headers once the connection is ready for one (also
    /// how long an idle keep-alive connection is kept).
    pub header_timeout: Duration,
    /// Time to deliver a whole request body.
    pub body_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl HttpConfig {
    fn from_env(env: &Env) -> Result<HttpConfig, ConfigError> {
        let http = HttpConfig {
            header_timeout: env
                .duration(&["CORRAL_HTTP_HEADER_TIMEOUT"], Duration::from_secs(10))?,
            body_timeout: env.duration(&["CORRAL_HTTP_BODY_TIMEOUT"], Duration::from_secs(30))?,
            max_connections: env.number(&["CORRAL_HTTP_MAX_CONNECTIONS"], 1024, 1..=1_000_000)?
                as usize,
        };
        for (var, d) in [
            ("CORRAL_HTTP_HEADER_TIMEOUT", http.header_timeout),
            ("CORRAL_HTTP_BODY_TIMEOUT", http.body_timeout),
        ] {
            if d < Duration::from_millis(100) {
                return Err(ConfigError::invalid(var, "must be at least 100ms"));
            }
        }
        Ok(http)
    }
}

/// `CORRAL_PLAYGROUND` (loopback | on | off), `CORRAL_PLAYGROUND_INPUT`,
/// `CORRAL_PLAYGROUND_MAX_STREAMS`, `CORRAL_PLAYGROUND_STREAM_LIFETIME`.
fn playground_settings(env: &Env) -> Result<crate::playground::Config, ConfigError> {
    let d = crate::playground::Config::default();
    let mode = match env.lookup(&["CORRAL_PLAYGROUND"]) {
        None => d.mode,
        Some((var, v)) => v
            .parse()
            .map_err(|e: String| ConfigError::invalid(var, e))?,
    };
    let c = crate::playground::Config {
        mode,
        input: env.boolean(&["CORRAL_PLAYGROUND_INPUT"], d.input)?,
        max_streams: env.number(
            &["CORRAL_PLAYGROUND_MAX_STREAMS"],
            d.max_streams as u64,
            1..=1024,
        )? as usize,
        stream_lifetime: env.duration(&["CORRAL_PLAYGROUND_STREAM_LIFETIME"], d.stream_lifetime)?,
        heartbeat: d.heartbeat,
    };
    if c.stream_lifetime < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "CORRAL_PLAYGROUND_STREAM_LIFETIME",
            "must be at least 1s",
        ));
    }
    Ok(c)
}

/// The outbox's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// A message still failing this long after it was written is given up (dead).
    pub give_up: Duration,
    /// The longest wait between two attempts of a message.
    pub backoff_max: Duration,
}

/// Several replicas on one store (`CORRAL_JOB_LEASE`, `CORRAL_STORE_RETENTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// How long a job's lease holds without its replica's heartbeat: a job whose replica
    /// died is reported interrupted after at most this plus a sixth of it (≤ 5 s).
    pub job_lease: Duration,
    /// Delivered messages (and other finished outbox rows without a key) and remembered
    /// delivery keys older than this are deleted (keys: never inside the dedupe window).
    pub retention: Duration,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `CORRAL_LOG_FORMAT` from `env`.
    pub fn from_env(env: &Env) -> Result<LogFormat, ConfigError> {
        match env.lookup(&["CORRAL_LOG_FORMAT"]) {
            None => Ok(LogFormat::Text),
            Some((var, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err(ConfigError::invalid(
                    var,
                    format!("{v:?} is not a log format (text or json)"),
                )),
            },
        }
    }
}

/// Everything corral needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `sqlite://path`, `sqlite::memory:`, `postgres://user:password@host:port/db`.
    pub database_url: DatabaseUrl,
    /// Pool size and timeouts of a networked database (`CORRAL_DATABASE_*`).
    pub database: crate::store::Settings,
    pub api_token: Option<Secret>,
    /// The token hosts report deploys with (`CORRAL_REPORT_TOKEN`): accepted on the report
    /// endpoint only, so an agent's host never holds the full API token.
    pub report_token: Option<Secret>,
    pub slack: SlackConfig,
    /// Channels where jobs started outside Slack are announced.
    pub channels: Vec<String>,
    pub rancher: crate::rancher::Config,
    pub deploy: crate::deploy::Config,
    pub policy_path: Option<PathBuf>,
    pub policy: Policy,
    pub outbox: OutboxConfig,
    pub log_format: LogFormat,
    pub replicas: ReplicaConfig,
    pub http: HttpConfig,
    /// The playground page (`CORRAL_PLAYGROUND*`).
    pub playground: crate::playground::Config,
}

impl Config {
    /// Reads and validates every setting from `env`, one area at a time.
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        // In this order, so the first bad setting reported is the same as before the split.
        let listen = listen_address(env)?;
        let database_url = database_url(env)?;
        let database = database_settings(env)?;
        let slack = slack_settings(env)?;
        let rancher = rancher_settings(env)?;
        let deploy = deploy_settings(env)?;
        let policy_path = env.string(&["CORRAL_POLICY"]).map(PathBuf::from);
        let policy = match &policy_path {
            Some(p) => Policy::load(p)?,
            None => Policy::default(),
        };
        Ok(Config {
            listen,
            database_url,
            database,
            api_token: env.secret(&["CORRAL_API_TOKEN", "API_KEY"]),
            report_token: env.secret(&["CORRAL_REPORT_TOKEN"]),
            slack,
            channels: env.list(&["CORRAL_CHANNEL", "SLACK_CHANNELS"]),
            rancher,
            deploy,
            policy_path,
            policy,
            outbox: outbox_settings(env)?,
            replicas: replica_settings(env)?,
            log_format: LogFormat::from_env(env)?,
            http: HttpConfig::from_env(env)?,
            playground: playground_settings(env)?,
        })
    }

    /// Whether any Slack destination (bot token or incoming webhook) is configured.
    pub fn slack_configured(&self) -> bool {
        self.slack.bot_token.is_some() || self.slack.webhook_url.is_some()
    }

    /// The channel the playground shows: the first announcement channel, else (Slack
    /// off) its own `playground` channel; `None` when Slack is on and no channel is set.
    pub fn playground_channel(&self) -> Option<String> {
        match self.channels.first() {
            Some(c) => Some(c.clone()),
            None if !self.slack_configured() => Some(crate::playground::CHANNEL.to_string()),
            None => None,
        }
    }

    /// Lines saying which integrations are off and why, for start-up and `corral check`.
    pub fn disabled_integrations(&self) -> Vec<String> {
        let mut off = Vec::new();
        if self.slack.signing_secret.is_none() {
            off.push(
                "Slack HTTP ingress is off: set SLACK_SIGNING_SECRET (/slack/* answer 401)".into(),
            );
        }
        match (&self.slack.bot_token, &self.slack.webhook_url) {
            (None, None) => off.push(
                "Slack messages are off: set SLACK_BOT_TOKEN (threads are only logged)".into(),
            ),
            (None, Some(_)) => off.push(
                "Slack threads are off: messages go to the incoming webhook (each job's plan and outcome, no edits); set SLACK_BOT_TOKEN for threads".into(),
            ),
            (Some(_), Some(_)) => off.push(
                "the incoming webhook is not used: SLACK_BOT_TOKEN is set".into(),
            ),
            (Some(_), None) => {}
        }
        if self.slack.app_token.is_none() {
            off.push("Socket Mode is off: set SLACK_APP_TOKEN (xapp-…) to use it".into());
        }
        if self.api_token.is_none() {
            off.push(
                "the HTTP API is off: set CORRAL_API_TOKEN (protected endpoints answer 401)".into(),
            );
        }
        if self.channels.is_empty() {
            off.push(
                "no announcement channel: set CORRAL_CHANNEL to announce HTTP/CLI changes".into(),
            );
        }
        if self.rancher.url.is_none() {
            off.push(
                "Rancher is off: set RANCHER_URL, RANCHER_ACCESS_KEY and RANCHER_SECRET_KEY".into(),
            );
        }
        if self.deploy.allow.is_empty() {
            off.push(
                "/deploy is off: set CORRAL_DEPLOY_ALLOW to the manifest URL prefixes allowed"
                    .into(),
            );
        }
        off
    }
}

/// The incoming webhook URL: an http(s) URL, never quoted in errors (it is a credential).
fn webhook_url(env: &Env) -> Result<Option<Secret>, ConfigError> {
    let Some((var, v)) = env.lookup(&["CORRAL_SLACK_WEBHOOK_URL", "AUTOUPDATE_SLACK_WEBHOOK_URL"])
    else {
        return Ok(None);
    };
    let ok = Url::parse(v.trim())
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if !ok {
        return Err(ConfigError::invalid(
            var,
            "is not an http(s) URL (the value is not shown: it is a credential)",
        ));
    }
    Ok(Some(Secret::new(v.trim())))
}

/// `CORRAL_DATABASE_URL`: which store, checked before anything opens it (the error never
/// shows the password).
fn database_url(env: &Env) -> Result<DatabaseUrl, ConfigError> {
    let database_url = env
        .string(&["CORRAL_DATABASE_URL"])
        .unwrap_or_else(|| "sqlite://corral.db".to_string());
    crate::store::validate_url(&database_url).map_err(|e| {
        ConfigError::invalid(
            "CORRAL_DATABASE_URL",
            crate::text::redact_secrets_in(&e, &database_url),
        )
    })?;

    Ok(DatabaseUrl::new(database_url))
}

/// Slack's tokens, where its API is, and how fast corral may talk to it.
fn slack_settings(env: &Env) -> Result<SlackConfig, ConfigError> {
    let slack = SlackConfig {
        bot_token: env.secret(&["SLACK_BOT_TOKEN", "SLACK_TOKEN"]),
        signing_secret: env.secret(&["SLACK_SIGNING_SECRET"]),
        app_token: env.secret(&["SLACK_APP_TOKEN"]),
        api_url: env
            .url(&["SLACK_API_URL"])?
            .unwrap_or_else(|| Url::parse("https://slack.com/api").expect("static URL")),
        webhook_url: webhook_url(env)?,
        webhook_username: env
            .string(&["CORRAL_SLACK_WEBHOOK_USERNAME", "AUTOUPDATE_SLACK_BOT_NAME"]),
        timeout: env.duration(&["CORRAL_SLACK_TIMEOUT"], Duration::from_secs(10))?,
        post_interval: env.duration(&["CORRAL_SLACK_POST_INTERVAL"], Duration::from_secs(1))?,
        update_interval: env.duration(
            &["CORRAL_SLACK_UPDATE_INTERVAL"],
            Duration::from_millis(1200),
        )?,
        user_rate: env.number(&["CORRAL_SLACK_USER_RATE"], 20, 0..=10_000)? as u32,
    };
    if slack.timeout.is_zero() || slack.timeout > Duration::from_secs(300) {
        return Err(ConfigError::invalid(
            "CORRAL_SLACK_TIMEOUT",
            "must be more than 0 and at most 5m",
        ));
    }
    if let Some(t) = &slack.app_token
        && !t.expose().starts_with("xapp-")
    {
        return Err(ConfigError::invalid(
            "SLACK_APP_TOKEN",
            "an app-level token starts with xapp- (Basic Information > App-Level Tokens)",
        ));
    }

    Ok(slack)
}

/// Where Rancher is, the keys, and how upgrades are paced and undone.
fn rancher_settings(env: &Env) -> Result<crate::rancher::Config, ConfigError> {
    let rancher = crate::rancher::Config {
        // Rancher is reached with the access keys; credentials written into the URL
        // are dropped here so no Debug print or message can show them.
        url: env.url(&["RANCHER_URL", "CATTLE_URL"])?.map(|mut u| {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u
        }),
        access_key: env.secret(&[
            "RANCHER_ACCESS_KEY",
            "RANCHER_USER_KEY",
            "CATTLE_ACCESS_KEY",
        ]),
        secret_key: env.secret(&[
            "RANCHER_SECRET_KEY",
            "RANCHER_USER_SECRET",
            "CATTLE_SECRET_KEY",
        ]),
        environments: env.regex_list(
            &["CORRAL_ENVIRONMENTS", "AUTOUPDATE_ENVIRONMENT_NAMES"],
            ".*",
        )?,
        autoupdate_label: env
            .string(&["CORRAL_AUTOUPDATE_LABEL", "AUTOUPDATE_ENABLE_LABEL"])
            .unwrap_or_else(|| "autoupdate.enable".to_string()),
        request_timeout: env.duration(&["CORRAL_RANCHER_TIMEOUT"], Duration::from_secs(30))?,
        rate_limit: env.number(&["CORRAL_RANCHER_RATE"], 50, 1..=10_000)? as u32,
        parallelism: env.number(&["CORRAL_UPGRADE_PARALLELISM"], 50, 1..=1_000)? as usize,
        upgrade_timeout: env.duration(&["CORRAL_UPGRADE_TIMEOUT"], Duration::from_secs(600))?,
        poll_interval: env.duration(&["CORRAL_RANCHER_POLL"], Duration::from_secs(1))?,
        batch_size: env.number(&["CORRAL_UPGRADE_BATCH_SIZE"], 1, 1..=1_000)? as u32,
        batch_interval: env.duration(&["CORRAL_UPGRADE_INTERVAL"], Duration::from_secs(2))?,
        rollback_on_timeout: env.boolean(&["CORRAL_ROLLBACK_ON_TIMEOUT"], true)?,
    };

    Ok(rancher)
}

/// What `/deploy` may fetch and how it reaches the hosts.
fn deploy_settings(env: &Env) -> Result<crate::deploy::Config, ConfigError> {
    let deploy = crate::deploy::Config {
        allow: env.list(&["CORRAL_DEPLOY_ALLOW"]),
        hosts: env.list(&["CORRAL_DEPLOY_HOSTS"]),
        serf_rpc: env
            .string(&["CORRAL_SERF_RPC", "SERF_RPC_ADDR"])
            .unwrap_or_else(|| "127.0.0.1:7373".to_string()),
        serf_rpc_auth: env.secret(&["CORRAL_SERF_RPC_AUTH", "SERF_RPC_AUTH"]),
        consul_url: consul_url(env)?,
        consul_token: env.secret(&["CORRAL_CONSUL_TOKEN", "CONSUL_HTTP_TOKEN"]),
        consul_ca: consul_ca(env)?,
        report_timeout: env.duration(&["CORRAL_DEPLOY_TIMEOUT"], Duration::from_secs(600))?,
        reports_authenticated: env
            .lookup(&["CORRAL_REPORT_TOKEN", "CORRAL_API_TOKEN", "API_KEY"])
            .is_some(),
        agent: env.string(&["CORRAL_DEPLOY_AGENT"]).map(PathBuf::from),
        env: deploy_env(env)?,
        limits: crate::deploy::extract::Limits::from_lookup(&|n| env.string(&[n])).map_err(
            |e| match e.split_once(": ") {
                Some((var, why)) => ConfigError::invalid(var, why),
                None => ConfigError::invalid("CORRAL_DEPLOY_MAX_BYTES", e.clone()),
            },
        )?,
    };

    crate::deploy::check_allow_prefixes(&deploy.allow)
        .map_err(|why| ConfigError::invalid("CORRAL_DEPLOY_ALLOW", why))?;

    Ok(deploy)
}

/// `CORRAL_CONSUL_URL` (alias `CONSUL_HTTP_ADDR`): a URL, or a bare `host:port` as the
/// Consul CLI takes it (`http://`); `CORRAL_CONSUL_SSL` (alias `CONSUL_HTTP_SSL`) `true`
/// makes it `https://`.
fn consul_url(env: &Env) -> Result<Url, ConfigError> {
    let ssl = env.boolean(&["CORRAL_CONSUL_SSL", "CONSUL_HTTP_SSL"], false)?;
    let (var, raw) = env
        .lookup(&["CORRAL_CONSUL_URL", "CONSUL_HTTP_ADDR"])
        .unwrap_or(("CORRAL_CONSUL_URL", "http://127.0.0.1:8500"));
    let raw = raw.trim();
    let full = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let mut url = parse_http_url(&full).map_err(|e| ConfigError::invalid(var, e))?;
    if ssl && url.scheme() == "http" {
        let _ = url.set_scheme("https");
    }
    Ok(url)
}

/// `CORRAL_CONSUL_CACERT` (alias `CONSUL_CACERT`): a PEM file, read and checked at start.
fn consul_ca(env: &Env) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some((var, path)) = env.lookup(&["CORRAL_CONSUL_CACERT", "CONSUL_CACERT"]) else {
        return Ok(None);
    };
    let pem = std::fs::read(path.trim())
        .map_err(|e| ConfigError::invalid(var, format!("cannot read {}: {e}", path.trim())))?;
    reqwest::Certificate::from_pem(&pem)
        .map_err(|e| ConfigError::invalid(var, format!("not a PEM certificate: {e}")))?;
    Ok(Some(pem))
}

/// `CORRAL_DEPLOY_ENV`: the names of the variables a deploy on the bot's host gets (their
/// values from the environment or `.env`; an unset one is simply not passed). corral's own
/// settings and secrets are refused by name.
fn deploy_env(env: &Env) -> Result<Vec<(String, Secret)>, ConfigError> {
    let var = "CORRAL_DEPLOY_ENV";
    let mut out = Vec::new();
    for name in env.list(&[var]) {
        let shape = name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if !shape {
            return Err(ConfigError::invalid(
                var,
                format!("{:?} is not a variable name", crate::text::sanitize(&name)),
            ));
        }
        if crate::deploy::own_secret(&name) {
            return Err(ConfigError::invalid(
                var,
                format!(
                    "{name} is one of corral's own settings or secrets (SLACK_*, RANCHER_*, CATTLE_*, CORRAL_*, API_KEY, DATABASE_URL, CONSUL_HTTP_TOKEN, SERF_RPC_AUTH); deploys never get it"
                ),
            ));
        }
        if let Some(v) = env.secret(&[name.as_str()]) {
            out.push((name, v));
        }
    }
    Ok(out)
}

/// How long the outbox keeps trying and how far it backs off.
fn outbox_settings(env: &Env) -> Result<OutboxConfig, ConfigError> {
    let outbox = OutboxConfig {
        give_up: env.duration(&["CORRAL_OUTBOX_GIVE_UP"], Duration::from_secs(24 * 3600))?,
        backoff_max: env.duration(&["CORRAL_OUTBOX_BACKOFF_MAX"], Duration::from_secs(8))?,
    };
    if outbox.give_up < Duration::from_secs(60) {
        return Err(ConfigError::invalid(
            "CORRAL_OUTBOX_GIVE_UP",
            "must be at least 1m (messages would be given up while Slack blinks)",
        ));
    }
    if outbox.backoff_max < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "CORRAL_OUTBOX_BACKOFF_MAX",
            "must be at least 1s",
        ));
    }

    Ok(outbox)
}

/// Job leases and the store's retention (several replicas on one store).
fn replica_settings(env: &Env) -> Result<ReplicaConfig, ConfigError> {
    let replicas = ReplicaConfig {
        job_lease: env.duration(&["CORRAL_JOB_LEASE"], Duration::from_secs(30))?,
        retention: env.duration(&["CORRAL_STORE_RETENTION"], Duration::from_secs(7 * 86_400))?,
    };
    if replicas.job_lease < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "CORRAL_JOB_LEASE",
            "must be at least 1s (a busy database would cost live jobs their lease)",
        ));
    }
    if replicas.retention < Duration::from_secs(3600) {
        return Err(ConfigError::invalid(
            "CORRAL_STORE_RETENTION",
            "must be at least 1h",
        ));
    }
    Ok(replicas)
}

fn listen_address(env: &Env) -> Result<SocketAddr, ConfigError> {
    if let Some((var, v)) = env.lookup(&["CORRAL_LISTEN"]) {
        return v.trim().parse().map_err(|_| {
            ConfigError::invalid(var, format!("{v:?} is not an address like 0.0.0.0:8080"))
        });
    }
    match env.lookup(&[
        "CORRAL_PORT",
        "HOST_PORT",
        "RS_PORT",
        "AUTOUPDATE_HTTP_PORT",
    ]) {
        None => Ok(SocketAddr::from(([0, 0, 0, 0], 8080))),
        Some((var, v)) => {
            // Strict like releasestatus: " 8080" is not a port.
            let port: u16 = v.parse().map_err(|_| {
                ConfigError::invalid(var, format!("port {v:?} is not a number from 0 to 65535"))
            })?;
            Ok(SocketAddr::from(([0, 0, 0, 0], port)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn embedded_defaults() {
        let c = cfg(&[]).expect("defaults are valid");
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.database_url.expose(), "sqlite://corral.db");
        assert_eq!(c.slack.api_url.as_str(), "https://slack.com/api");
        assert_eq!(c.rancher.autoupdate_label, "autoupdate.enable");
        assert_eq!(c.rancher.environments.len(), 1);
        assert!(c.api_token.is_none());
        assert!(c.disabled_integrations().len() >= 5);
    }

    #[test]
    fn native_wins_over_alias() {
        let c = cfg(&[("CORRAL_API_TOKEN", "native"), ("API_KEY", "alias")]).unwrap();
        assert_eq!(c.api_token.unwrap().expose(), "native");
        let c = cfg(&[("API_KEY", "alias")]).unwrap();
        assert_eq!(c.api_token.unwrap().expose(), "alias");
        let c = cfg(&[("CORRAL_PORT", "9000"), ("RS_PORT", "9001")]).unwrap();
        assert_eq!(c.listen.port(), 9000);
        let c = cfg(&[("HOST_PORT", "9002")]).unwrap();
        assert_eq!(c.listen.port(), 9002);
        let c = cfg(&[("SLACK_CHANNELS", " a, ,b ,")]).unwrap();
        assert_eq!(c.channels, vec!["a", "b"]);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let err = |pairs: &[(&str, &str)]| cfg(pairs).unwrap_err().to_string();
        assert!(err(&[("RS_PORT", "abc")]).starts_with("RS_PORT:"));
        assert!(err(&[("RS_PORT", " 8080")]).starts_with("RS_PORT:"));
        assert!(err(&[("CORRAL_PORT", "70000")]).starts_with("CORRAL_PORT:"));
        assert!(err(&[("CORRAL_LISTEN", "nowhere")]).starts_with("CORRAL_LISTEN:"));
        assert!(err(&[("RANCHER_URL", "rancher:8080")]).starts_with("RANCHER_URL:"));
        assert!(err(&[("CATTLE_URL", "ftp://x")]).starts_with("CATTLE_URL:"));
        assert!(
            err(&[("AUTOUPDATE_ENVIRONMENT_NAMES", "prod,(")])
                .starts_with("AUTOUPDATE_ENVIRONMENT_NAMES:")
        );
        assert!(err(&[("SLACK_API_URL", "slack.com/api")]).starts_with("SLACK_API_URL:"));
        assert!(err(&[("CORRAL_UPGRADE_TIMEOUT", "ten")]).starts_with("CORRAL_UPGRADE_TIMEOUT:"));
        assert!(err(&[("CORRAL_DATABASE_URL", "mysql://x")]).starts_with("CORRAL_DATABASE_URL:"));
        assert!(
            err(&[("CORRAL_DATABASE_URL", "postgres://h/d?sslmode=maybe")])
                .starts_with("CORRAL_DATABASE_URL:")
        );
        for (var, bad) in [
            ("CORRAL_DATABASE_POOL_SIZE", "0"),
            ("CORRAL_DATABASE_POOL_SIZE", "many"),
            ("CORRAL_DATABASE_CONNECT_TIMEOUT", "0s"),
            ("CORRAL_DATABASE_STATEMENT_TIMEOUT", "soon"),
            ("CORRAL_DATABASE_POOL_TIMEOUT", "-1"),
        ] {
            assert!(err(&[(var, bad)]).starts_with(var), "{var}={bad}");
        }
        assert!(err(&[("SLACK_APP_TOKEN", "xoxb-1")]).starts_with("SLACK_APP_TOKEN:"));
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let c = cfg(&[
            ("SLACK_BOT_TOKEN", "xoxb-secret-value"),
            ("CORRAL_API_TOKEN", "tok-123"),
            ("RANCHER_URL", "http://admin:hunter2@rancher:8080/v2-beta"),
            ("RANCHER_SECRET_KEY", "sk-456"),
            (
                "CORRAL_DATABASE_URL",
                "postgres://corral:pg-pass@db:5432/corral",
            ),
        ])
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("sk-456"));
        assert!(!dbg.contains("pg-pass") && !c.database_url.to_string().contains("pg-pass"));
        assert_eq!(
            c.database_url.expose(),
            "postgres://corral:pg-pass@db:5432/corral"
        );
        let e = cfg(&[("RANCHER_URL", "ftp://admin:hunter2@rancher")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("RANCHER_URL") && !e.contains("hunter2"), "{e}");
        assert!(!dbg.contains("xoxb-secret-value"));
        assert!(!dbg.contains("tok-123"));
    }

    #[test]
    fn image_upgrade_settings_come_from_the_rancher_settings() {
        use crate::command::ImageUpgrade;
        use crate::rancher::service::Settings;
        use std::time::Duration;
        let cfg = Config::from_env(&Env::from_pairs([
            ("CORRAL_UPGRADE_BATCH_SIZE", "3"),
            ("CORRAL_UPGRADE_INTERVAL", "5s"),
            ("CORRAL_ROLLBACK_ON_TIMEOUT", "no"),
            ("AUTOUPDATE_ENABLE_LABEL", "my.label"),
        ]))
        .expect("valid");
        let cmd = ImageUpgrade {
            image: "a:1".into(),
            env: Some("^prod".into()),
            confirm: true,
            start_first: false,
            timeout: None,
            dry_run: false,
            force: false,
        };
        let s = Settings::new(&cfg.rancher, &cmd).expect("settings");
        assert_eq!(
            (s.batch_size, s.interval, s.rollback_on_timeout),
            (3, Duration::from_secs(5), false)
        );
        assert_eq!(s.label, "my.label");
        assert_eq!(s.timeout, cfg.rancher.upgrade_timeout);
        assert!(s.environment_matches("prod-eu") && !s.environment_matches("dev"));
        let d = Config::from_env(&Env::from_pairs([(
            "CORRAL_DATABASE_URL",
            "sqlite::memory:",
        )]))
        .expect("valid");
        assert_eq!(
            (
                d.rancher.batch_size,
                d.rancher.batch_interval,
                d.rancher.rollback_on_timeout
            ),
            (1, Duration::from_secs(2), true)
        );
        for (var, bad) in [
            ("CORRAL_UPGRADE_BATCH_SIZE", "0"),
            ("CORRAL_UPGRADE_INTERVAL", "soon"),
            ("CORRAL_ROLLBACK_ON_TIMEOUT", "maybe"),
        ] {
            let e = Config::from_env(&Env::from_pairs([(var, bad)])).expect_err(var);
            assert!(e.to_string().contains(var), "{e}");
        }
    }

    #[test]
    fn outbox_and_webhook_settings() {
        let c = cfg(&[
            (
                "AUTOUPDATE_SLACK_WEBHOOK_URL",
                "https://hooks.slack.com/services/T/B/secret",
            ),
            ("AUTOUPDATE_SLACK_BOT_NAME", "updater"),
            ("CORRAL_LOG_FORMAT", "JSON"),
        ])
        .unwrap();
        assert!(c.slack.webhook_url.is_some());
        assert_eq!(c.slack.webhook_username.as_deref(), Some("updater"));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.outbox.give_up, Duration::from_secs(24 * 3600));
        assert_eq!(c.slack.user_rate, 20);
        assert!(
            c.disabled_integrations()
                .iter()
                .any(|l| l.contains("incoming webhook"))
        );
        let err = |pairs: &[(&str, &str)]| cfg(pairs).unwrap_err().to_string();
        let e = err(&[(
            "CORRAL_SLACK_WEBHOOK_URL",
            "hooks.slack.com/services/T/B/secret",
        )]);
        assert!(
            e.starts_with("CORRAL_SLACK_WEBHOOK_URL:") && !e.contains("secret"),
            "{e}"
        );
        assert!(err(&[("CORRAL_LOG_FORMAT", "xml")]).starts_with("CORRAL_LOG_FORMAT:"));
        assert!(err(&[("CORRAL_OUTBOX_GIVE_UP", "10s")]).starts_with("CORRAL_OUTBOX_GIVE_UP:"));
        assert!(err(&[("CORRAL_SLACK_TIMEOUT", "0")]).starts_with("CORRAL_SLACK_TIMEOUT:"));
        assert!(err(&[("CORRAL_SLACK_USER_RATE", "-1")]).starts_with("CORRAL_SLACK_USER_RATE:"));
        assert!(
            !format!("{c:?}").contains("hooktoken42"),
            "the webhook URL is a secret"
        );
    }

    #[test]
    fn job_lease_and_retention() {
        let cfg = |pairs: &[(&str, &str)]| Config::from_env(&Env::from_pairs(pairs.to_vec()));
        let c = cfg(&[]).unwrap();
        assert_eq!(c.replicas.job_lease, Duration::from_secs(30));
        assert_eq!(c.replicas.retention, Duration::from_secs(7 * 86_400));
        let c = cfg(&[("CORRAL_JOB_LEASE", "2s"), ("CORRAL_STORE_RETENTION", "2d")]).unwrap();
        assert_eq!(
            (c.replicas.job_lease, c.replicas.retention),
            (Duration::from_secs(2), Duration::from_secs(2 * 86_400))
        );
        for (var, value) in [
            ("CORRAL_JOB_LEASE", "0"),
            ("CORRAL_JOB_LEASE", "soon"),
            ("CORRAL_STORE_RETENTION", "10m"),
            ("CORRAL_STORE_RETENTION", "-1d"),
        ] {
            let e = cfg(&[(var, value)]).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{var}:")), "{var}={value}: {e}");
        }
    }

    #[test]
    fn errors_never_echo_secrets() {
        let e = cfg(&[(
            "CORRAL_DATABASE_URL",
            "postgres://corral:hunter2@db/corral?sslmode=bogus",
        )])
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("CORRAL_DATABASE_URL:") && !e.contains("hunter2"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("corral-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env");
        std::fs::write(
            &path,
            "CORRAL_CHANNEL=C1\nSLACK_BOT_TOKEN=\"xoxb-very-secret\n",
        )
        .unwrap();
        let e = Env::from_process_and_file(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(".env:") && e.contains("SLACK_BOT_TOKEN"),
            "{e}"
        );
        assert!(!e.contains("xoxb-very-secret"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }
}
