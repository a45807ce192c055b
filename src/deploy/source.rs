//! Fetching manifests and archives: `http(s)://`, `file://`, `s3://` and `gs://` (see
//! [`open`]). Unlike stretcher, an HTTP error status is a fetch error.
//!
//! Redirects are followed here, not by reqwest, so each hop can be judged: with an
//! allow-list ([`Allow`]) every hop must be under it, as the first URL is; at most
//! [`MAX_REDIRECTS`] hops; credentials of the first URL (`user:pass@`) are sent to its
//! origin only, never to another scheme, host or port.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::log::DeployLog;

/// Where a fetch may go: `None` anywhere (stretcher's agent), `Some(prefixes)` only under
/// `CORRAL_DEPLOY_ALLOW`'s prefixes, the first URL and every redirect hop alike.
pub(crate) type Allow<'a> = Option<&'a [String]>;

/// Redirect hops followed at most (Go's and reqwest's default).
pub(crate) const MAX_REDIRECTS: usize = 10;

/// Largest manifest accepted.
pub(crate) const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// An open source, read chunk by chunk.
pub(crate) enum Body {
    File(tokio::fs::File),
    Http(reqwest::Response),
    /// An `s3://` or `gs://` object.
    Object(futures::stream::BoxStream<'static, object_store::Result<Bytes>>),
}

impl Body {
    /// The next chunk; `None` at the end.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
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
            Body::Object(s) => {
                use futures::StreamExt;
                s.next()
                    .await
                    .transpose()
                    .map_err(|e| format!("read error: {e}"))
            }
        }
    }
}

/// Removes a `#fragment` (corral's job marker travels there; it is never fetched).
pub(crate) fn without_fragment(url: &str) -> &str {
    url.split_once('#').map_or(url, |(u, _)| u)
}

/// Opens a URL once; with `allow`, only a URL under it.
pub(crate) async fn open(url: &str, allow: Allow<'_>, log: &DeployLog) -> Result<Body, String> {
    log.line(format!("Loading URL {url}"));
    if let Some(prefixes) = allow
        && !super::allowed(prefixes, url)
    {
        return Err(super::not_allowed_text("URL", url, prefixes));
    }
    let parsed =
        url::Url::parse(without_fragment(url)).map_err(|e| format!("{url} is not a URL: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => get_following(url, parsed, allow, log).await.map(Body::Http),
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
        "s3" => open_s3(url, &parsed).await,
        "gs" => open_gs(url, &parsed).await,
        _ => Err(format!(
            "URL scheme must be {}: {url}",
            crate::command::SOURCE_SCHEMES_TEXT
        )),
    }
}

/// GET, following redirects hop by hop (see the module's notes).
async fn get_following(
    shown: &str,
    first: url::Url,
    allow: Allow<'_>,
    log: &DeployLog,
) -> Result<reqwest::Response, String> {
    let client = crate::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let origin = first.origin();
    let user = first.username().to_string();
    let password = first.password().map(str::to_string);
    let mut current = first;
    let _ = current.set_username("");
    let _ = current.set_password(None);
    let mut hops = 0;
    loop {
        let mut req = client.get(current.clone());
        if !user.is_empty() && current.origin() == origin {
            req = req.basic_auth(&user, password.as_deref());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("GET {shown}: {}", e.without_url()))?;
        let status = resp.status();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok());
        let follows = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
        let Some(location) = location.filter(|_| follows) else {
            if !status.is_success() {
                return Err(format!("GET {shown}: HTTP {status}"));
            }
            return Ok(resp);
        };
        hops += 1;
        if hops > MAX_REDIRECTS {
            return Err(format!("GET {shown}: more than {MAX_REDIRECTS} redirects"));
        }
        let next = current
            .join(location)
            .map_err(|e| format!("GET {shown}: redirect to a bad URL: {e}"))?;
        if !matches!(next.scheme(), "http" | "https") {
            return Err(format!(
                "GET {shown}: redirect to {next} refused: only http(s) redirects are followed"
            ));
        }
        if let Some(prefixes) = allow
            && !super::allowed(prefixes, next.as_str())
        {
            return Err(format!(
                "GET {shown}: redirect refused: {}",
                super::not_allowed_text("redirect to", next.as_str(), prefixes)
            ));
        }
        log.line(format!("Redirected ({status}) to {next}"));
        current = next;
    }
}

/// An object URL's bucket (its host) and key (its path without the leading `/`).
fn bucket_and_key<'a>(
    url: &str,
    parsed: &'a url::Url,
) -> Result<(&'a str, object_store::path::Path), String> {
    let bucket = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{url}: no bucket"))?;
    let key = parsed.path().trim_start_matches('/');
    if key.is_empty() {
        return Err(format!("{url}: no object key"));
    }
    let path =
        object_store::path::Path::from_url_path(key).map_err(|e| format!("{url}: bad key: {e}"))?;
    // Same provider as every other client of corral (reqwest is built without one); it
    // must be in place before the caller builds the store's HTTP client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok((bucket, path))
}

/// Reads a whole object from a configured store, as a stream.
async fn get_object(
    url: &str,
    store: Result<impl object_store::ObjectStore, object_store::Error>,
    what: &str,
    key: &object_store::path::Path,
) -> Result<Body, String> {
    use object_store::ObjectStoreExt;
    let store = store.map_err(|e| format!("{url}: {what} configuration: {e}"))?;
    let got = store
        .get(key)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    Ok(Body::Object(got.into_stream()))
}

/// S3 GetObject: bucket = host, key = path without its leading `/`. Region, credentials
/// and endpoint come from the usual `AWS_*` variables (`AWS_REGION` or
/// `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_ENDPOINT_URL` for an S3-compatible server, `AWS_ALLOW_HTTP=true` for plain http).
async fn open_s3(url: &str, parsed: &url::Url) -> Result<Body, String> {
    let (bucket, key) = bucket_and_key(url, parsed)?;
    let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    if std::env::var_os("AWS_REGION").is_none()
        && let Ok(r) = std::env::var("AWS_DEFAULT_REGION")
    {
        builder = builder.with_region(r);
    }
    if let Ok(e) = std::env::var("AWS_ENDPOINT_URL") {
        builder = builder.with_endpoint(e);
    }
    get_object(url, builder.build(), "S3", &key).await
}

/// Google Cloud Storage download, as stretcher's: bucket = host, key = path. Credentials
/// as Google's libraries find them: the key file `GOOGLE_APPLICATION_CREDENTIALS` names (a
/// service account's or `gcloud auth application-default login`'s), else gcloud's
/// well-known file, else the instance's default service account from the metadata
/// server. `GOOGLE_SERVICE_ACCOUNT` (a key file) and `GOOGLE_BASE_URL` (another endpoint,
/// such as an emulator) are object_store's own names, read too.
async fn open_gs(url: &str, parsed: &url::Url) -> Result<Body, String> {
    let (bucket, key) = bucket_and_key(url, parsed)?;
    let builder = object_store::gcp::GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
    get_object(url, builder.build(), "Google Cloud Storage", &key).await
}

/// Opens a URL, retrying the opening only (stretcher §7): `1 + retry` attempts,
/// `retry_wait` apart.
pub(crate) async fn open_with_retry(
    url: &str,
    allow: Allow<'_>,
    retry: u32,
    retry_wait: Duration,
    log: &DeployLog,
) -> Result<Body, String> {
    let mut attempt = 0;
    loop {
        match open(url, allow, log).await {
            Ok(b) => return Ok(b),
            Err(e) if attempt < retry => {
                attempt += 1;
                log.line(format!("Get src failed: {e}"));
                log.line(format!(
                    "Try again. Waiting: {}",
                    crate::text::format_duration(retry_wait)
                ));
                tokio::time::sleep(retry_wait).await;
            }
            Err(e) => return Err(format!("get src failed: {e}")),
        }
    }
}

/// Fetches a small text (a manifest) with a deadline.
pub(crate) async fn fetch_text(
    url: &str,
    allow: Allow<'_>,
    deadline: Duration,
    log: &DeployLog,
) -> Result<String, String> {
    let work = async {
        let mut body = open(url, allow, log).await?;
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
            crate::text::format_duration(deadline)
        )
    })?
}
