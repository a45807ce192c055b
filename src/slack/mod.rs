//! Slack: the doors in (signed HTTP requests, Socket Mode) and the way out (the outbox).
//!
//! Nothing outside this module and the reporter knows Slack's wire formats.

pub mod blocks;
pub mod http;
pub mod socket;
pub mod verify;
pub mod web;
pub mod webhook;
