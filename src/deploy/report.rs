//! The report protocol between `corral agent` and the bot: what a host posts to
//! `POST /api/v1/deploys/<job>/reports` when its deploy ended, where it posts it, and how
//! the job id travels in the fanned-out event (the URL fragment `#corral-job=<id>`).
//!
//! Both sides use this module: the agent builds and sends a [`Report`], the API door
//! parses one. Neither imports the other.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::log::DeployLog;

/// What an agent posts to the bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Report {
    pub host: String,
    /// `succeeded` or `failed`.
    pub status: String,
    pub duration_ms: u64,
    #[serde(default)]
    pub log_tail: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub event_id: Option<String>,
}

/// Lines and bytes of log sent with a report.
pub(crate) const TAIL_LINES: usize = 40;
pub(crate) const TAIL_BYTES: usize = 4096;

/// The job id corral puts in the URL fragment of a fanned-out manifest URL
/// (`…/manifest.yml#corral-job=42`). HTTP clients never send the fragment, so stretcher
/// agents fetch the same manifest.
pub(crate) fn job_of(url: &str) -> Option<i64> {
    url.split_once('#')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix("corral-job="))?
        .parse()
        .ok()
}

/// Where to post a report for `job`: a base URL gets `/api/v1/deploys/<job>/reports`
/// appended, `{job}` is replaced, a URL already ending in `/reports` is used as is.
pub(crate) fn endpoint(base: &str, job: Option<i64>) -> Option<String> {
    if base.contains("{job}") {
        return job.map(|j| base.replace("{job}", &j.to_string()));
    }
    if base.trim_end_matches('/').ends_with("/reports") {
        return Some(base.to_string());
    }
    job.map(|j| format!("{}/api/v1/deploys/{j}/reports", base.trim_end_matches('/')))
}

/// Posts `report` to `url` with `token`, three attempts on a 5xx or a transport error;
/// a 4xx is final. Every outcome is a log line; nothing fails the deploy.
pub(crate) async fn post(url: &str, token: Option<&str>, report: &Report, log: &DeployLog) {
    let client = match crate::http_client() {
        Ok(c) => c,
        Err(e) => {
            log.line(format!("report not sent: {e}"));
            return;
        }
    };
    for attempt in 1..=3 {
        let mut req = client
            .post(url)
            .json(report)
            .timeout(Duration::from_secs(10));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                log.line(format!("Reported {} to {url}", report.status));
                return;
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                log.line(format!(
                    "report refused by {url}: HTTP {status} {}",
                    super::log::tail(&body, 3, 300)
                ));
                return;
            }
            Ok(r) => log.line(format!(
                "report to {url} failed (attempt {attempt}): HTTP {}",
                r.status()
            )),
            Err(e) => log.line(format!("report to {url} failed (attempt {attempt}): {e}")),
        }
        tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_marker_and_endpoint() {
        assert_eq!(job_of("http://x/m.yml#corral-job=42"), Some(42));
        assert_eq!(job_of("http://x/m.yml"), None);
        assert_eq!(job_of("http://x/m.yml#corral-job=x"), None);
        assert_eq!(
            endpoint("http://bot:8080/", Some(7)).as_deref(),
            Some("http://bot:8080/api/v1/deploys/7/reports")
        );
        assert_eq!(
            endpoint("http://bot/r/{job}", Some(7)).as_deref(),
            Some("http://bot/r/7")
        );
        assert_eq!(
            endpoint("http://bot/api/v1/deploys/3/reports", None).as_deref(),
            Some("http://bot/api/v1/deploys/3/reports")
        );
        assert_eq!(endpoint("http://bot:8080", None), None);
    }
}
