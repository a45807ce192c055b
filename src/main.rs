//! The `corral` binary: thin. Parses the command line, builds an [`App`] and calls it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use corral::app::{App, Outcome, Request};
use corral::chat::{Chat, LogChat, PrintChat};
use corral::config::{Config, Env, LogFormat};
use corral::door::Source;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "Release chat-ops for Slack and Rancher"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the bot: HTTP (Slack + API), Socket Mode if SLACK_APP_TOKEN is set, job runner.
    Serve,
    /// Run one chat command locally, as $USER, through the same pipeline; prints the thread.
    Exec {
        /// The command as typed in Slack, e.g. "release status" or "/upgrade library:web:12 --dry-run".
        text: Vec<String>,
    },
    /// Validate the configuration and reach Slack, Rancher and the store; print a report.
    Check,
    /// Print the next firings of every schedule in the policy file (CORRAL_POLICY).
    Schedule,
    /// Print the audit log, newest first: commands, refusals, votes, forces, lock changes,
    /// job outcomes.
    Audit {
        /// Only lines at or after this: Unix seconds, an RFC 3339 time, or a duration ago (2h).
        #[arg(long)]
        since: Option<String>,
        /// Only lines of this identity (U0ALICE, api:ci, cli:bob).
        #[arg(long)]
        user: Option<String>,
        /// At most this many lines.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Copy a SQLite store into an empty PostgreSQL one: the lock, its history, the audit
    /// log, jobs and their Slack message ids, deploy reports, delivery keys.
    Migrate {
        /// The store to copy, e.g. sqlite://corral.db (read, never changed).
        #[arg(long)]
        from: String,
        /// The empty PostgreSQL database, e.g. postgres://corral:PASSWORD@db:5432/corral.
        #[arg(long)]
        to: String,
    },
    /// stretcher-compatible deploy agent (manifest URL, Consul or Serf event on stdin).
    #[command(disable_help_flag = true)]
    Agent {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let command = cli.command.unwrap_or(Cmd::Serve);
    if let Cmd::Agent { args } = command {
        return agent(args);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("corral: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match command {
            Cmd::Serve => serve().await,
            Cmd::Exec { text } => exec(text.join(" ")).await,
            Cmd::Check => check().await,
            Cmd::Schedule => schedule(),
            Cmd::Audit { since, user, limit } => audit(since, user, limit).await,
            Cmd::Migrate { from, to } => migrate(&from, &to).await,
            Cmd::Agent { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("corral: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs to stderr, filtered by `CORRAL_LOG`, else `RUST_LOG`, else `info`; one JSON
/// object per line with `CORRAL_LOG_FORMAT=json` (a job's lines carry `"job"`, as a
/// field or in `"span"`). A bad format is reported by the configuration check.
fn init_tracing() {
    let format = Env::from_process()
        .ok()
        .and_then(|e| LogFormat::from_env(&e).ok())
        .unwrap_or(LogFormat::Text);
    let filter = ["CORRAL_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        })
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

fn agent(args: Vec<std::ffi::OsString>) -> ExitCode {
    std::process::exit(corral::deploy::agent::main(args))
}

fn load_config() -> anyhow::Result<Config> {
    let env = Env::from_process().context("configuration")?;
    Config::from_env(&env).context("configuration")
}

fn slack_chat(config: &Config) -> anyhow::Result<Option<Arc<dyn Chat>>> {
    corral::app::destination(config).context("cannot build the Slack client")
}

async fn serve() -> anyhow::Result<ExitCode> {
    let mut config = load_config()?;
    let store = corral::store::open_with(config.database_url.expose(), &config.database)
        .await
        .context("store")?;
    let slack = slack_chat(&config)?;
    let nothing_configured = slack.is_none();
    // The playground is one more destination (in front of Slack's, or alone).
    let (chat, playground) =
        corral::playground::http::prepare(&mut config, slack, corral::clock::system())
            .context("playground")?;
    let config = Arc::new(config);
    let off = config.disabled_integrations();
    if nothing_configured && playground.is_some() {
        // A first run: one line about what is off, so the playground's URL is what one sees.
        tracing::info!(
            "{} integrations are off (Slack, Rancher, the API…); `corral check` says how to set each",
            off.len()
        );
    } else {
        for line in off {
            tracing::warn!("{line}");
        }
    }
    let app = App::new(config.clone(), store, chat);
    app.start_sender();
    app.start_scheduler();
    // Heartbeat, job leases, and reporting the jobs of replicas that died (a crash of
    // this one included, once its leases are over); the first tick runs now.
    app.start_replica();
    // Pending approvals survive a restart: the sweeper expires and reminds them.
    tokio::spawn(app.clone().run_approval_sweeper());
    let socket = match &config.slack.app_token {
        None => None,
        Some(token) => match corral::slack::socket::SocketMode::start(app.clone(), token).await {
            Ok(s) => {
                tracing::info!("Socket Mode connected");
                Some(s)
            }
            Err(e) => anyhow::bail!("SLACK_APP_TOKEN: Socket Mode could not connect: {e}"),
        },
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(address = %addr, store = %config.database_url, "corral is serving");
    let mut router = corral::api::router(app.clone());
    if let Some(hub) = &playground {
        router = router.merge(corral::playground::http::router(app.clone(), hub.clone()));
        // The URL carries the login token: printed for the person at the terminal, never
        // logged.
        println!(
            "corral playground: {}",
            corral::playground::http::url(hub, addr)
        );
    }
    let closing = playground.clone();
    corral::api::serve::serve(listener, router, config.http, async move {
        shutdown_signal().await;
        // Open event feeds end, so the graceful shutdown does not wait on them.
        if let Some(hub) = closing {
            hub.close();
        }
    })
    .await;
    if let Some(s) = socket {
        s.shutdown().await;
    }
    app.background.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), app.background.wait()).await;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

async fn exec(text: String) -> anyhow::Result<ExitCode> {
    let config = Arc::new(load_config()?);
    let store = corral::store::open_with(config.database_url.expose(), &config.database)
        .await
        .context("store")?;
    let user = std::env::var("USER").unwrap_or_else(|_| "cli".to_string());
    // With Slack (or a webhook) and a channel the thread goes there too; it is always
    // printed as it is written.
    let (chat, channel): (Arc<dyn Chat>, Option<String>) = match slack_chat(&config)? {
        Some(inner) => {
            let ch = config.channels.first().cloned().or_else(|| {
                config
                    .slack
                    .webhook_url
                    .as_ref()
                    .map(|_| corral::app::WEBHOOK_CHANNEL.to_string())
            });
            (inner, ch)
        }
        None => (Arc::new(LogChat::default()), None),
    };
    let printer: Arc<dyn Chat> = Arc::new(PrintChat::default());
    let app = App::with_parts(config, store, chat, corral::clock::system(), Some(printer));
    app.start_sender();
    // The job this runs holds a lease that its heartbeat renews, like a replica's.
    app.start_replica();
    let command = match corral::command::parse_text(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", corral::text::plain(&e.to_string()));
            return Ok(ExitCode::from(2));
        }
    };
    let reply = app
        .handle(Request {
            command,
            user,
            source: Source::Cli,
            channel,
        })
        .await;
    println!("{}", corral::text::plain(&reply.text));
    let mut code = match reply.outcome {
        Outcome::Ok => ExitCode::SUCCESS,
        Outcome::Refused | Outcome::Error => ExitCode::from(1),
        Outcome::Invalid => ExitCode::from(2),
    };
    if let Some(job) = reply.job {
        app.runner.wait(job.id).await;
        let done = app.store.job(job.id).await.context("store")?;
        if done.is_none_or(|j| j.status != corral::job::JobStatus::Succeeded) {
            code = ExitCode::from(1);
        }
    }
    // What this run said is in the outbox; deliver it before leaving (a `corral serve`
    // on the same store delivers whatever is left).
    if !app
        .outbox
        .idle(app.store.as_ref(), Duration::from_secs(30))
        .await
    {
        eprintln!("corral: some messages are not delivered yet; `corral serve` will deliver them");
    }
    Ok(code)
}

/// `corral schedule`: loads the configuration (a bad policy stops here, exit 2, naming
/// the key) and prints the next firings of its freezes, digests and lock reminders.
fn schedule() -> anyhow::Result<ExitCode> {
    let config = load_config()?;
    if let Some(path) = &config.policy_path {
        println!("Policy file: {}", path.display());
    }
    print!(
        "{}",
        config.policy.schedule_report(jiff::Timestamp::now(), 5)
    );
    Ok(ExitCode::SUCCESS)
}

/// `corral audit [--since T] [--user U] [--limit N]`: the audit log from the store.
async fn audit(
    since: Option<String>,
    user: Option<String>,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let config = load_config()?;
    let now = jiff::Timestamp::now().as_second();
    let since = match since.as_deref().map(|s| corral::text::parse_since(s, now)) {
        None => 0,
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            eprintln!("corral audit: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let store = corral::store::open_with(config.database_url.expose(), &config.database)
        .await
        .context("store")?;
    let rows = store
        .audit_query(since, user, limit.clamp(1, 100_000))
        .await
        .context("audit log")?;
    if rows.is_empty() {
        println!("No audit lines.");
    }
    for r in rows {
        println!(
            "{}  {:<14} {:<8} {}  {}",
            corral::text::when_plain(r.at),
            r.actor,
            r.source,
            r.action,
            r.detail
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `corral migrate --from sqlite://… --to postgres://…`: copies everything into an
/// empty PostgreSQL database and prints what it copied. Reads only the
/// `CORRAL_DATABASE_*` pool settings from the environment, not the whole configuration.
async fn migrate(from: &str, to: &str) -> anyhow::Result<ExitCode> {
    let env = Env::from_process().context("configuration")?;
    let settings = corral::config::database_settings(&env).context("configuration")?;
    match corral::store::copy(from, to, &settings).await {
        Ok(report) => {
            println!(
                "Copied {} to {}:\n{report}",
                corral::text::redact_url(from),
                corral::text::redact_url(to)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("corral migrate: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `corral check`: one line per thing checked (configuration, store, Slack, Rancher,
/// deploy prefixes), in the order an operator would fix them. Long by design: a flat list
/// of independent checks reads better than a checker per line.
async fn check() -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut report = |ok: bool, what: &str, detail: String| {
        println!("{} {what}: {detail}", if ok { "ok  " } else { "FAIL" });
        failed |= !ok;
    };
    let config = match load_config() {
        Ok(c) => {
            report(
                true,
                "configuration",
                format!("valid (listen {}, store {})", c.listen, c.database_url),
            );
            c
        }
        Err(e) => {
            report(false, "configuration", format!("{e:#}"));
            return Ok(ExitCode::from(1));
        }
    };
    for line in config.disabled_integrations() {
        println!("off  {line}");
    }
    let shown = config.database_url.to_string();
    let now_ms = jiff::Timestamp::now().as_millisecond();
    match corral::store::open_with(config.database_url.expose(), &config.database).await {
        Err(e) => report(false, "store", format!("{shown}: {e}")),
        Ok(store) => {
            match store.info().await {
                Ok(info) => {
                    let ahead = if info.schema_version > info.known_version {
                        format!(
                            "; newer than this corral ({}), fine during a rolling upgrade",
                            info.known_version
                        )
                    } else {
                        String::new()
                    };
                    report(
                        true,
                        "store",
                        format!(
                            "{} {shown}, schema version {}{ahead}",
                            info.backend.name(),
                            info.schema_version
                        ),
                    )
                }
                Err(e) => report(false, "store", format!("{shown}: {e}")),
            }
            match store.replicas(now_ms - lease_ms(&config)).await {
                Ok(seen) => report(true, "replicas", replicas_line(&seen, &config, now_ms)),
                Err(e) => report(false, "replicas", e.to_string()),
            }
            match store.outbox_stats().await {
                Ok(o) => {
                    let oldest = o.oldest_ms.map_or(String::new(), |t| {
                        let age = (jiff::Timestamp::now().as_millisecond() - t).max(0) / 1000;
                        format!(
                            ", the oldest for {}",
                            corral::text::format_duration(Duration::from_secs(age as u64))
                        )
                    });
                    report(
                        true,
                        "outbox",
                        format!(
                            "{} message{} waiting{oldest}; {} dead, {} refused by Slack",
                            o.depth,
                            if o.depth == 1 { "" } else { "s" },
                            o.dead,
                            o.failed
                        ),
                    );
                }
                Err(e) => report(false, "outbox", e.to_string()),
            }
        }
    }
    if let Some(token) = &config.slack.bot_token {
        let r = corral::slack::web::auth_test(&config.slack.api_url, token).await;
        match r {
            Ok(who) => report(true, "Slack", who),
            Err(e) => report(false, "Slack", e.to_string()),
        }
    } else if config.slack.webhook_url.is_some() {
        report(
            true,
            "Slack",
            "incoming webhook set (not called: a check would post to the channel)".into(),
        );
    }
    if config.rancher.url.is_some() {
        match rancher_reachable(&config).await {
            Ok(text) => report(true, "Rancher", text),
            Err(e) => report(false, "Rancher", e),
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn lease_ms(config: &Config) -> i64 {
    i64::try_from(config.replicas.job_lease.as_millis()).unwrap_or(i64::MAX)
}

/// `corral check`'s line about the replicas whose heartbeat is younger than the job
/// lease (older ones have lost their jobs' leases: they are stopped or cut off).
fn replicas_line(seen: &[corral::store::Replica], config: &Config, now_ms: i64) -> String {
    let ago =
        |ms: i64| corral::text::format_duration(Duration::from_secs((ms.max(0) / 1000) as u64));
    let window = corral::text::format_duration(config.replicas.job_lease);
    if seen.is_empty() {
        return format!(
            "none seen in the last {window} (no corral serve is running on this store)"
        );
    }
    let list: Vec<String> = seen
        .iter()
        .map(|r| {
            format!(
                "{} pid {} (up {}, heartbeat {} ago)",
                r.host,
                r.pid,
                ago(now_ms - r.started_ms),
                ago(now_ms - r.last_seen_ms)
            )
        })
        .collect();
    format!(
        "{} seen in the last {window}: {}",
        seen.len(),
        list.join("; ")
    )
}

/// Reaches Rancher the way jobs do (normalised URL, basic auth, deadline) and lists the
/// environments the key can see. Errors never carry credentials.
async fn rancher_reachable(config: &Config) -> Result<String, String> {
    let client = corral::rancher::Rancher::new(&config.rancher)
        .client()
        .map_err(|e| e.to_string())?;
    let projects = client.projects().await.map_err(|e| e.to_string())?;
    let names: Vec<&str> = projects.iter().map(|p| p.name.as_str()).collect();
    Ok(format!(
        "{} answered; the key sees {} environment{}: {}",
        client.root(),
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    ))
}
