//! Fakes and helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fake_rancher;
pub mod fake_services;
