//! # corral — release chat-ops for Slack and Rancher
//!
//! One pipeline, three doors (ARCHITECTURE.md):
//!
//! ```text
//!  Slack HTTP ─┐
//!  Socket Mode ┼─▶ verify ─▶ parse ─▶ policy ─▶ job ─▶ executor ─┬─ lock
//!  HTTP API  ──┤  (signature/  (text →  (who may,  (stored        ├─ rancher
//!  corral exec ┘   token)      Command)  lock gate) before ack)   └─ deploy
//!                                                     │
//!                                        reporter ──▶ outbox ──▶ Slack Web API
//! ```
//!
//! * [`config`] turns the environment, `.env` and the policy file into one [`config::Config`].
//! * [`command`] turns chat text into a typed [`command::Command`]; every door uses it.
//! * [`app`] is the pipeline: [`app::App::handle`] takes a request from any door, checks
//!   the policy and the lock, answers lock commands at once and turns the rest into jobs.
//! * [`lock`] is releasestatus's state table, pure; [`store`] keeps it (and jobs, message
//!   ids, the audit log) in SQLite.
//! * [`job`] runs jobs and reports them as one Slack thread; domain modules ([`rancher`],
//!   [`deploy`]) only emit plain [`job::Progress`] events and never import `slack`.
//! * [`slack`] verifies and parses what Slack sends and delivers what corral says;
//!   [`api`] serves the native HTTP API and the older tools' endpoints.

// Handlers return `Result<_, Response>` so a refusal is built where it is decided; an
// axum `Response` is large, and that is fine on these paths.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod app;
pub mod command;
pub mod config;
pub mod deploy;
pub mod job;
pub mod lock;
pub mod policy;
pub mod rancher;
pub mod schedule;
pub mod secret;
pub mod slack;
pub mod store;

/// Unix seconds now. The one clock read of the crate, so tests can reason about it.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The HTTP client for outbound calls (Rancher, manifests, Consul). rustls with the
/// `ring` provider, the same one slack-morphism uses; no default timeout, so every caller
/// sets a deadline per request.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    // Installing twice is harmless (the second call reports the first provider).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .user_agent(concat!("corral/", env!("CARGO_PKG_VERSION")))
        .build()
}
