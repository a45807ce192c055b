//! Fetching manifests and archives: `http(s)://`, `file://` (and `s3://`, see
//! [`open`]). Unlike stretcher, an HTTP error status is a fetch error.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::log::DeployLog;

/// Largest manifest accepted.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// An open source, read chunk by chunk.
pub enum Body {
    File(tokio::fs::File),
    Http(reqwest::Response),
}

impl Body {
    /// The next chunk; `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            Body::File(f) => {
                let mut buf = BytesMut::with_capacity(256 << 10);
                let n = f
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| format!("read error: {e}"))?;
                Ok((n > 0).then(|| buf.freeze()))
            }
            Body::Http(r) => r.chunk().await.map_err(|e| format!("read error: {e}")),
        }
    }
}

/// Removes a `#fragment` (corral's job marker travels there; it is never fetched).
pub fn without_fragment(url: &str) -> &str {
    url.split_once('#').map_or(url, |(u, _)| u)
}

/// Opens a URL once.
pub async fn open(url: &str, log: &DeployLog) -> Result<Body, String> {
    log.line(format!("Loading URL {url}"));
    let parsed =
        url::Url::parse(without_fragment(url)).map_err(|e| format!("{url} is not a URL: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => {
            let client = crate::http_client().map_err(|e| format!("HTTP client: {e}"))?;
            let resp = client
                .get(parsed)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(format!("GET {url}: HTTP {status}"));
            }
            Ok(Body::Http(resp))
        }
        "file" => {
            // stretcher opens the URL's path and ignores its host.
            let path = url::Url::parse(&format!("file://{}", parsed.path()))
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or_else(|| format!("{url}: not a file path"))?;
            let f = tokio::fs::File::open(&path)
                .await
                .map_err(|e| format!("open {}: {e}", path.display()))?;
            Ok(Body::File(f))
        }
        "s3" => Err(format!(
            "{url}: s3:// sources are not supported by this build of corral yet (use http(s):// or file://)"
        )),
        _ => Err(format!("URL scheme must be s3, http(s) or file: {url}")),
    }
}

/// Opens a URL, retrying the opening only (stretcher §7): `1 + retry` attempts,
/// `retry_wait` apart.
pub async fn open_with_retry(
    url: &str,
    retry: u32,
    retry_wait: Duration,
    log: &DeployLog,
) -> Result<Body, String> {
    let mut attempt = 0;
    loop {
        match open(url, log).await {
            Ok(b) => return Ok(b),
            Err(e) if attempt < retry => {
                attempt += 1;
                log.line(format!("Get src failed: {e}"));
                log.line(format!(
                    "Try again. Waiting: {}",
                    crate::command::format_duration(retry_wait)
                ));
                tokio::time::sleep(retry_wait).await;
            }
            Err(e) => return Err(format!("get src failed: {e}")),
        }
    }
}

/// Fetches a small text (a manifest) with a deadline.
pub async fn fetch_text(url: &str, deadline: Duration, log: &DeployLog) -> Result<String, String> {
    let work = async {
        let mut body = open(url, log).await?;
        let mut out = Vec::new();
        while let Some(chunk) = body.chunk().await? {
            out.extend_from_slice(&chunk);
            if out.len() > MAX_MANIFEST_BYTES {
                return Err(format!(
                    "{url}: larger than {MAX_MANIFEST_BYTES} bytes, not a manifest"
                ));
            }
        }
        String::from_utf8(out).map_err(|_| format!("{url}: not UTF-8 text"))
    };
    tokio::time::timeout(deadline, work).await.map_err(|_| {
        format!(
            "{url}: no answer within {}",
            crate::command::format_duration(deadline)
        )
    })?
}
