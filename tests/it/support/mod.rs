//! Fakes and helpers shared by the integration tests.
#![allow(dead_code)]

pub mod corral;
pub mod fake_rancher;
pub mod fake_services;
pub mod fake_slack;
pub mod files;
pub mod playground;
pub mod postgres;
pub mod pyserver;
pub mod tcp_proxy;
pub mod tls;
pub mod webdriver;

/// Unix seconds now, for signing requests the way Slack does at the moment it sends them.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A fresh directory under the system's temp dir, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("corral-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
