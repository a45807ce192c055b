//! The HTTP API: corral's native routes and the older tools' endpoints, one file each.
//!
//! Handlers are thin: extract, call [`crate::app::App`], map the answer. State is
//! `Arc<App>`; each route family checks the API token itself (via [`auth::check`]) so a
//! refusal keeps the format of the tool it imitates.

pub mod auth;
pub mod hooks;
pub mod updater;
