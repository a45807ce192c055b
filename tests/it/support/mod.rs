//! Fakes and helpers shared by the integration tests.
#![allow(dead_code)]

pub mod corral;
pub mod fake_rancher;
pub mod fake_services;
pub mod fake_slack;
pub mod files;

/// Unix seconds now, for signing requests the way Slack does at the moment it sends them.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}
