//! Fakes and helpers shared by the integration tests.
#![allow(dead_code)]

pub mod corral;
pub mod fake_rancher;
pub mod fake_services;
pub mod fake_slack;
pub mod files;
