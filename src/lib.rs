//! # corral — release chat-ops for Slack and Rancher
//!
//! The map of the crate — layers, modules, invariants, entry points, and what is
//! deliberately absent — is `ARCHITECTURE.md` at the root of the repository. This file
//! only lists the modules, by layer; `tests/it/layers.rs` enforces the layer rules.

// Handlers return `Result<_, Response>` so a refusal is built where it is decided; an
// axum `Response` is large, and that is fine on these paths.
#![allow(clippy::result_large_err)]

// Doors: what the outside world calls.
pub mod api;
pub mod playground;
pub mod slack;

// Orchestration and its configuration.
pub mod app;
pub mod config;

// Domain: the work.
pub mod deploy;
pub mod rancher;

// Vocabulary: shared nouns, no I/O above the store.
pub mod chat;
pub mod clock;
pub mod command;
pub mod door;
pub mod job;
pub mod lock;
pub mod policy;
pub mod schedule;
pub mod secret;
pub mod store;
pub mod text;

/// The HTTP client for outbound calls (Rancher, manifests, Consul). rustls with the
/// `ring` provider, the same one slack-morphism uses; no default timeout, so every caller
/// sets a deadline per request.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    http_client_builder().build()
}

/// [`http_client`]'s settings, for a caller that needs one more (a root certificate, no
/// redirects).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    // Installing twice is harmless (the second call reports the first provider).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .user_agent(concat!("corral/", env!("CARGO_PKG_VERSION")))
}
