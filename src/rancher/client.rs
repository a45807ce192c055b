//! The HTTP client for one Rancher 1.6 server (reference/rancher-api.md §1–§5, §12).
//!
//! * The base URL is taken as users give it — `http://rancher:8080`, `…/v1`, `…/v2-beta`,
//!   `…/v2-beta/projects/1a5`, `…/v1-catalog` — and reduced to the server root; the API
//!   lives under `<root>/v2-beta/`, the catalog under `<root>/v1-catalog/`.
//! * HTTP Basic auth (access key : secret key) on every request.
//! * Links and action URLs in answers are followed as given, except that their scheme,
//!   host and port are always the configured ones: credentials never go to another
//!   host, and a Rancher behind a proxy that writes its internal address into links
//!   still works.
//! * Every request has a deadline; idempotent reads (GET) are retried with exponential
//!   backoff on transport errors, timeouts, 429 and 5xx; POSTs never are.
//! * A governor limiter caps requests per second to the server. Clients made from one
//!   [`RateLimits`] registry (the one [`super::Rancher`] holds) share it per server, so
//!   two jobs at once share one budget; there is no process-wide state.
//! * Catalog reads can be scoped to one environment with `X-API-Project-Id` (§1, §8):
//!   the catalog service then answers the global catalogs plus that environment's own.
//! * Collections are followed through `pagination.next`; server-side filters are LIKE
//!   patterns or silently ignored when unknown (§4), so every filter is re-checked here.
//! * Errors keep Rancher's `status`, `code` and message.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use super::Config as RancherConfig;
use super::model::{Collection, ErrorBody, Project, Resource, Stack, Template, TemplateVersion};
use crate::secret::Secret;

/// The biggest answer corral reads from Rancher (a collection of 3000 stacks with their
/// compose files fits well inside).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Pages followed in one collection before corral gives up (a server whose `next` never
/// ends).
const MAX_PAGES: usize = 10_000;

/// What went wrong talking to Rancher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RancherError {
    /// Rancher answered with an error body (or at least an error status).
    #[error("Rancher answered {status} {code}: {message} ({method} {path})")]
    Api {
        status: u16,
        /// Cattle's `code` (`ActionNotAvailable`, `Not Found`); the HTTP reason phrase
        /// when the body had none (the catalog service sends no code).
        code: String,
        /// Rancher's `message`, else `fieldName`, else `detail`, else the code.
        message: String,
        method: &'static str,
        /// Path and query of the request (never credentials).
        path: String,
    },
    #[error("Rancher did not answer {method} {path} within {after:?}")]
    Timeout {
        method: &'static str,
        path: String,
        after: Duration,
    },
    #[error("Rancher could not be reached ({method} {path}): {reason}")]
    Transport {
        method: &'static str,
        path: String,
        reason: String,
    },
    #[error("Rancher's answer to {method} {path} is not what corral expected: {reason}")]
    Decode {
        method: &'static str,
        path: String,
        reason: String,
    },
    /// A resource does not offer an action in its current state (checked before sending).
    #[error("{what} offers no `{action}` action in state `{state}`")]
    ActionNotOffered {
        what: String,
        action: String,
        state: String,
    },
    /// Bad configuration or a link that is not a URL.
    #[error("{0}")]
    Invalid(String),
}

impl RancherError {
    /// Rancher's HTTP status, for an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            RancherError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Rancher's `code`, for an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            RancherError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The human part of an API error (Rancher's message), else the whole error.
    pub fn message(&self) -> String {
        match self {
            RancherError::Api { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// Whether a read may be tried again.
    fn retryable(&self) -> bool {
        match self {
            RancherError::Api { status, .. } => *status == 429 || *status >= 500,
            RancherError::Timeout { .. } | RancherError::Transport { .. } => true,
            _ => false,
        }
    }
}

/// A field filter for a collection (§4). Sent to the server as a query parameter and
/// re-checked on every item that comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `field=value`; compared exactly (case-sensitive) on the client.
    Eq(String, String),
    /// `field_ne=value`.
    Ne(String, String),
    /// `field_prefix=value`; the server reads `_` and `%` as wildcards, the client does not.
    Prefix(String, String),
}

impl Filter {
    pub fn eq(field: &str, value: &str) -> Filter {
        Filter::Eq(field.into(), value.into())
    }
    pub fn ne(field: &str, value: &str) -> Filter {
        Filter::Ne(field.into(), value.into())
    }
    pub fn prefix(field: &str, value: &str) -> Filter {
        Filter::Prefix(field.into(), value.into())
    }

    fn query(&self) -> (String, String) {
        match self {
            Filter::Eq(f, v) => (f.clone(), v.clone()),
            Filter::Ne(f, v) => (format!("{f}_ne"), v.clone()),
            Filter::Prefix(f, v) => (format!("{f}_prefix"), v.clone()),
        }
    }

    /// Whether an item (as JSON) passes. A missing or `null` field is the empty string;
    /// numbers and booleans compare by their JSON text.
    pub(crate) fn matches(&self, item: &Value) -> bool {
        let (field, want) = match self {
            Filter::Eq(f, v) | Filter::Ne(f, v) | Filter::Prefix(f, v) => (f, v),
        };
        let have = match item.get(field) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        match self {
            Filter::Eq(..) => have == *want,
            Filter::Ne(..) => have != *want,
            Filter::Prefix(..) => have.starts_with(want.as_str()),
        }
    }
}

/// Tuning of a client; [`ClientOptions::from_config`] reads corral's settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline of one HTTP exchange.
    pub request_timeout: Duration,
    /// Requests per second to this Rancher (also the burst).
    pub rate_limit: u32,
    /// Extra attempts for a failed GET.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Page size asked for on collections (`limit`); `None` leaves Rancher's default (100).
    pub page_size: Option<u32>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(30),
            rate_limit: 50,
            retries: 3,
            backoff: Duration::from_millis(250),
            page_size: None,
        }
    }
}

impl ClientOptions {
    pub(crate) fn from_config(cfg: &RancherConfig) -> ClientOptions {
        ClientOptions {
            request_timeout: cfg.request_timeout,
            rate_limit: cfg.rate_limit,
            ..ClientOptions::default()
        }
    }
}

/// A client for one Rancher server. Cheap to clone; clones share the rate limit and the
/// request counter.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The server root, ending in `/` (`http://rancher:8080/` or `https://h/rancher/`).
    root: Url,
    access_key: Secret,
    secret_key: Secret,
    limiter: Arc<DefaultDirectRateLimiter>,
    opts: ClientOptions,
    sent: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("root", &self.inner.root.as_str())
            .field("access_key", &"***")
            .finish()
    }
}

/// Reduces a Rancher URL as users give it to the server root: drops credentials, query,
/// fragment and everything from the first `/v1`, `/v2-beta`, `/v2`, `/v3` or
/// `/v1-catalog` path segment on; keeps a proxy path prefix before it.
pub(crate) fn normalize_base(url: &Url) -> Result<Url, RancherError> {
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(RancherError::Invalid(format!(
            "the Rancher URL must be http(s)://host[:port][/path], not {}",
            redact(url)
        )));
    }
    let mut root = url.clone();
    let _ = root.set_username("");
    let _ = root.set_password(None);
    root.set_query(None);
    root.set_fragment(None);
    let mut kept: Vec<&str> = Vec::new();
    for seg in url.path().split('/').filter(|s| !s.is_empty()) {
        let lower = seg.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "v1" | "v2-beta" | "v2" | "v3" | "v1-catalog"
        ) {
            break;
        }
        kept.push(seg);
    }
    let path = if kept.is_empty() {
        "/".to_string()
    } else {
        format!("/{}/", kept.join("/"))
    };
    root.set_path(&path);
    Ok(root)
}

/// A URL for messages: no credentials, no query.
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}

fn path_of(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// A registry of rate limiters, one per server root and rate: clients built from the
/// same registry for the same server draw from one budget. Owned by whoever builds the
/// clients ([`super::Rancher`]); cheap to share behind an `Arc`.
#[derive(Default)]
pub struct RateLimits {
    limiters:
        std::sync::Mutex<std::collections::HashMap<(String, u32), Arc<DefaultDirectRateLimiter>>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

impl RateLimits {
    /// The limiter for one server root at one rate.
    fn get(&self, root: &Url, rate: NonZeroU32) -> Arc<DefaultDirectRateLimiter> {
        let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((root.to_string(), rate.get()))
            .or_insert_with(|| limiter(rate))
            .clone()
    }
}

fn limiter(rate: NonZeroU32) -> Arc<DefaultDirectRateLimiter> {
    Arc::new(RateLimiter::direct(
        Quota::per_second(rate).allow_burst(rate),
    ))
}

impl Client {
    /// A client for the server at `base` (any of the forms users give), with a rate limit
    /// of its own (shared by its clones only).
    pub fn new(
        base: &Url,
        access_key: Secret,
        secret_key: Secret,
        opts: ClientOptions,
    ) -> Result<Client, RancherError> {
        Client::build(base, access_key, secret_key, opts, None)
    }

    /// A client whose rate limit is the one `limits` holds for this server: every client
    /// built from the same registry for the same server shares it.
    pub(crate) fn with_limits(
        base: &Url,
        access_key: Secret,
        secret_key: Secret,
        opts: ClientOptions,
        limits: &RateLimits,
    ) -> Result<Client, RancherError> {
        Client::build(base, access_key, secret_key, opts, Some(limits))
    }

    fn build(
        base: &Url,
        access_key: Secret,
        secret_key: Secret,
        opts: ClientOptions,
        limits: Option<&RateLimits>,
    ) -> Result<Client, RancherError> {
        let root = normalize_base(base)?;
        let http = crate::http_client()
            .map_err(|e| RancherError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        let rate = NonZeroU32::new(opts.rate_limit.max(1)).unwrap_or(NonZeroU32::MIN);
        let limiter = match limits {
            Some(l) => l.get(&root, rate),
            None => limiter(rate),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                root,
                access_key,
                secret_key,
                limiter,
                opts,
                sent: AtomicU64::new(0),
            }),
        })
    }

    /// The client for corral's configured Rancher, or why there is none.
    pub(crate) fn from_config(
        cfg: &RancherConfig,
        limits: &RateLimits,
    ) -> Result<Client, RancherError> {
        let (Some(url), Some(ak), Some(sk)) = (&cfg.url, &cfg.access_key, &cfg.secret_key) else {
            return Err(RancherError::Invalid(
                "Rancher is not configured: set RANCHER_URL, RANCHER_ACCESS_KEY and RANCHER_SECRET_KEY".into(),
            ));
        };
        Client::with_limits(
            url,
            ak.clone(),
            sk.clone(),
            ClientOptions::from_config(cfg),
            limits,
        )
    }

    /// The server root (`http://rancher:8080/`).
    pub fn root(&self) -> &Url {
        &self.inner.root
    }

    /// Requests sent so far by this client and its clones (retries included).
    pub fn requests_sent(&self) -> u64 {
        self.inner.sent.load(Ordering::Relaxed)
    }

    /// `<root>/v2-beta/<path>`.
    pub(crate) fn api_url(&self, path: &str) -> Result<Url, RancherError> {
        self.join(&format!("v2-beta/{}", path.trim_start_matches('/')))
    }

    /// `<root>/v1-catalog/<path>`.
    pub(crate) fn catalog_url(&self, path: &str) -> Result<Url, RancherError> {
        self.join(&format!("v1-catalog/{}", path.trim_start_matches('/')))
    }

    fn join(&self, rel: &str) -> Result<Url, RancherError> {
        self.inner.root.join(rel).map_err(|e| {
            RancherError::Invalid(format!("cannot build a Rancher URL from {rel:?}: {e}"))
        })
    }

    /// Turns a link from an answer into the URL to call: relative links are joined to the
    /// root, absolute ones keep their path and query but get the configured scheme, host
    /// and port.
    pub(crate) fn resolve(&self, link: &str) -> Result<Url, RancherError> {
        let root = &self.inner.root;
        let mut url = match Url::parse(link) {
            Ok(u) => u,
            Err(url::ParseError::RelativeUrlWithoutBase) => root
                .join(link)
                .map_err(|e| RancherError::Invalid(format!("bad link {link:?}: {e}")))?,
            Err(e) => return Err(RancherError::Invalid(format!("bad link {link:?}: {e}"))),
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RancherError::Invalid(format!(
                "bad link {link:?}: not http(s)"
            )));
        }
        if url.origin() != root.origin() {
            let ok = url.set_scheme(root.scheme()).is_ok()
                && url.set_host(root.host_str()).is_ok()
                && url.set_port(root.port()).is_ok();
            if !ok {
                return Err(RancherError::Invalid(format!("bad link {link:?}")));
            }
        }
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(url)
    }

    /// One exchange: rate limit, auth, deadline, status check, bounded body.
    async fn send_once(
        &self,
        method: reqwest::Method,
        url: &Url,
        body: Option<&Value>,
        project: Option<&str>,
    ) -> Result<Vec<u8>, RancherError> {
        let inner = &self.inner;
        let m: &'static str = if method == reqwest::Method::GET {
            "GET"
        } else {
            "POST"
        };
        let path = path_of(url);
        inner.limiter.until_ready().await;
        inner.sent.fetch_add(1, Ordering::Relaxed);
        let mut req = inner
            .http
            .request(method, url.clone())
            .basic_auth(inner.access_key.expose(), Some(inner.secret_key.expose()))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(p) = project {
            req = req.header("X-API-Project-Id", p);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let deadline = inner.opts.request_timeout;
        let exchange = async {
            let resp = req.send().await?;
            let status = resp.status();
            let mut resp = resp;
            let mut buf: Vec<u8> = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                if buf.len() + chunk.len() > MAX_BODY {
                    return Ok((status, None));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>((status, Some(buf)))
        };
        let (status, buf) = match tokio::time::timeout(deadline, exchange).await {
            Err(_) => {
                return Err(RancherError::Timeout {
                    method: m,
                    path,
                    after: deadline,
                });
            }
            Ok(Err(e)) => {
                return Err(RancherError::Transport {
                    method: m,
                    path,
                    reason: e.without_url().to_string(),
                });
            }
            Ok(Ok(x)) => x,
        };
        let Some(buf) = buf else {
            return Err(RancherError::Decode {
                method: m,
                path,
                reason: format!("the answer is larger than {MAX_BODY} bytes"),
            });
        };
        if status.is_success() {
            return Ok(buf);
        }
        Err(api_error(status, &buf, m, path))
    }

    /// A GET with retries on transient failures, scoped to `project` when given.
    async fn get_bytes(&self, url: &Url, project: Option<&str>) -> Result<Vec<u8>, RancherError> {
        let opts = &self.inner.opts;
        let mut attempt = 0u32;
        loop {
            match self
                .send_once(reqwest::Method::GET, url, None, project)
                .await
            {
                Err(e) if e.retryable() && attempt < opts.retries => {
                    let wait = opts.backoff.saturating_mul(1u32 << attempt.min(10));
                    tracing::debug!(error = %e, attempt, ?wait, "Rancher read failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    fn decode<T: DeserializeOwned>(
        method: &'static str,
        url: &Url,
        bytes: &[u8],
    ) -> Result<T, RancherError> {
        serde_json::from_slice(bytes).map_err(|e| RancherError::Decode {
            method,
            path: path_of(url),
            reason: e.to_string(),
        })
    }

    /// GETs one resource at a link or URL.
    pub async fn get<T: DeserializeOwned>(&self, link: &str) -> Result<T, RancherError> {
        self.get_in(link, None).await
    }

    /// GETs one resource with the header `X-API-Project-Id: <project>` when given (the
    /// catalog service's view of that environment, §8).
    pub(crate) async fn get_in<T: DeserializeOwned>(
        &self,
        link: &str,
        project: Option<&str>,
    ) -> Result<T, RancherError> {
        let url = self.resolve(link)?;
        let bytes = self.get_bytes(&url, project).await?;
        Self::decode("GET", &url, &bytes)
    }

    /// GETs a whole collection: every page through `pagination.next`, keeping only the
    /// items that pass every filter (re-checked here whatever the server did).
    pub async fn list<T: DeserializeOwned>(
        &self,
        link: &str,
        filters: &[Filter],
    ) -> Result<Vec<T>, RancherError> {
        self.list_checked(link, filters, true).await
    }

    /// Like [`Client::list`], but returns everything the server answered: the filters
    /// only narrow the server's side, and the caller must look at each item itself (to
    /// report near misses of a LIKE pattern instead of dropping them).
    pub(crate) async fn list_unchecked<T: DeserializeOwned>(
        &self,
        link: &str,
        filters: &[Filter],
    ) -> Result<Vec<T>, RancherError> {
        self.list_checked(link, filters, false).await
    }

    async fn list_checked<T: DeserializeOwned>(
        &self,
        link: &str,
        filters: &[Filter],
        recheck: bool,
    ) -> Result<Vec<T>, RancherError> {
        let mut url = self.resolve(link)?;
        {
            let mut q = url.query_pairs_mut();
            for f in filters {
                let (k, v) = f.query();
                q.append_pair(&k, &v);
            }
            if let Some(limit) = self.inner.opts.page_size {
                q.append_pair("limit", &limit.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            let bytes = self.get_bytes(&url, None).await?;
            let page: Collection<Value> = Self::decode("GET", &url, &bytes)?;
            for item in page.data {
                if !recheck || filters.iter().all(|f| f.matches(&item)) {
                    out.push(
                        serde_json::from_value(item).map_err(|e| RancherError::Decode {
                            method: "GET",
                            path: path_of(&url),
                            reason: e.to_string(),
                        })?,
                    );
                }
            }
            let next = page
                .pagination
                .and_then(|p| p.next)
                .filter(|n| !n.trim().is_empty());
            let Some(next) = next else { return Ok(out) };
            let next = self.resolve(&next)?;
            if !seen.insert(next.to_string()) || next == url {
                return Err(RancherError::Decode {
                    method: "GET",
                    path: path_of(&url),
                    reason: "pagination.next points back to a page already read".into(),
                });
            }
            url = next;
        }
        Err(RancherError::Decode {
            method: "GET",
            path: path_of(&url),
            reason: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// POSTs to an action URL (never retried: actions are not idempotent) and decodes the
    /// answer (202 with the resource, usually). An empty answer decodes as `null`.
    pub async fn post<T: DeserializeOwned>(
        &self,
        link: &str,
        body: &Value,
    ) -> Result<T, RancherError> {
        let url = self.resolve(link)?;
        let bytes = self
            .send_once(reqwest::Method::POST, &url, Some(body), None)
            .await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Self::decode("POST", &url, b"null");
        }
        Self::decode("POST", &url, &bytes)
    }

    /// Runs an action the resource offers in its current state; refuses locally (without
    /// a request) when it does not offer it.
    pub async fn action<R, T>(
        &self,
        resource: &R,
        what: &str,
        state: &str,
        name: &str,
        body: &Value,
    ) -> Result<T, RancherError>
    where
        R: Resource,
        T: DeserializeOwned,
    {
        let Some(link) = resource.action(name) else {
            return Err(RancherError::ActionNotOffered {
                what: what.to_string(),
                action: name.to_string(),
                state: state.to_string(),
            });
        };
        self.post(link, body).await
    }

    /// The environments (projects) the key can see, sorted by name.
    pub async fn projects(&self) -> Result<Vec<Project>, RancherError> {
        let url = self.api_url("projects")?;
        let mut projects: Vec<Project> = self.list(url.as_str(), &[]).await?;
        projects.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(projects)
    }

    /// One environment by id.
    pub async fn project(&self, id: &str) -> Result<Project, RancherError> {
        let url = self.api_url(&format!("projects/{}", escape(id)))?;
        self.get(url.as_str()).await
    }

    /// The collection URL of a kind (`stacks`, `services`) in an environment: the
    /// project's own link when it has one, else `/v2-beta/projects/<id>/<kind>`.
    pub(crate) fn collection_url(
        &self,
        project: &Project,
        kind: &str,
    ) -> Result<String, RancherError> {
        match project.link(kind) {
            Some(l) => Ok(l.to_string()),
            None => Ok(self
                .api_url(&format!("projects/{}/{kind}", escape(&project.id)))?
                .to_string()),
        }
    }

    /// The stacks of an environment that pass `filters`.
    pub async fn stacks(
        &self,
        project: &Project,
        filters: &[Filter],
    ) -> Result<Vec<Stack>, RancherError> {
        let url = self.collection_url(project, "stacks")?;
        self.list(&url, filters).await
    }

    /// One stack by id.
    pub async fn stack(&self, project_id: &str, id: &str) -> Result<Stack, RancherError> {
        let url = self.api_url(&format!(
            "projects/{}/stacks/{}",
            escape(project_id),
            escape(id)
        ))?;
        self.get(url.as_str()).await
    }

    /// A catalog template (`/v1-catalog/templates/<catalog>:<template>`): as the global
    /// catalogs have it (`project` None: no environment selected), or as one
    /// environment sees it (the global catalogs plus its own, `X-API-Project-Id`).
    pub async fn template(
        &self,
        catalog: &str,
        template: &str,
        project: Option<&str>,
    ) -> Result<Template, RancherError> {
        let url = self.catalog_url(&format!(
            "templates/{}:{}",
            escape(catalog),
            escape(template)
        ))?;
        self.get_in(url.as_str(), project).await
    }

    /// A catalog template version at a `versionLinks` URL, in the same scope as the
    /// template it came from.
    pub async fn template_version(
        &self,
        link: &str,
        project: Option<&str>,
    ) -> Result<TemplateVersion, RancherError> {
        self.get_in(link, project).await
    }
}

/// An error answer as a [`RancherError::Api`]: Cattle's or the catalog's body when it
/// has one (§5), else the status line.
fn api_error(
    status: reqwest::StatusCode,
    body: &[u8],
    method: &'static str,
    path: String,
) -> RancherError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("error").to_string();
    let code = parsed
        .code
        .clone()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or(reason);
    let message = parsed.text().unwrap_or_else(|| code.clone());
    RancherError::Api {
        status: status.as_u16(),
        code,
        message: crate::text::truncate(&message, 1000),
        method,
        path,
    }
}

/// Percent-escapes one path segment (ids and names come from users and from Rancher).
/// `*` stays as is: catalog template ids use it (`infra*ipsec`).
pub(crate) fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'*' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn base_url_forms() {
        for (given, root) in [
            ("http://rancher:8080", "http://rancher:8080/"),
            ("http://rancher:8080/", "http://rancher:8080/"),
            ("http://rancher:8080/v1", "http://rancher:8080/"),
            ("http://rancher:8080/v1/", "http://rancher:8080/"),
            ("http://rancher:8080/v2-beta", "http://rancher:8080/"),
            (
                "https://r.example/v2-beta/projects/1a5?x=1",
                "https://r.example/",
            ),
            (
                "https://r.example/V2-BETA/projects/1a5/schemas",
                "https://r.example/",
            ),
            (
                "http://user:pw@rancher:8080/v1-catalog/templates",
                "http://rancher:8080/",
            ),
            ("https://h/rancher/v1", "https://h/rancher/"),
            ("https://h/rancher", "https://h/rancher/"),
        ] {
            assert_eq!(normalize_base(&u(given)).unwrap().as_str(), root, "{given}");
        }
        assert!(normalize_base(&u("ftp://rancher/")).is_err());
    }

    fn client(base: &str) -> Client {
        Client::new(
            &u(base),
            Secret::new("ak"),
            Secret::new("sk"),
            ClientOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn urls_and_links() {
        let c = client("http://rancher:8080/v1");
        assert_eq!(
            c.api_url("projects").unwrap().as_str(),
            "http://rancher:8080/v2-beta/projects"
        );
        assert_eq!(
            c.catalog_url("templates/library:web").unwrap().as_str(),
            "http://rancher:8080/v1-catalog/templates/library:web"
        );
        // Another host in a link is rewritten to the configured one.
        assert_eq!(
            c.resolve("http://10.0.0.9:8080/v2-beta/projects/1a5/stacks/1st2/?action=upgrade")
                .unwrap()
                .as_str(),
            "http://rancher:8080/v2-beta/projects/1a5/stacks/1st2/?action=upgrade"
        );
        assert_eq!(
            c.resolve("https://evil:9/x?y").unwrap().as_str(),
            "http://rancher:8080/x?y"
        );
        assert_eq!(
            c.resolve("/v2-beta/projects").unwrap().as_str(),
            "http://rancher:8080/v2-beta/projects"
        );
        assert!(c.resolve("javascript:alert(1)").is_err());
        assert!(c.resolve("http://[::1").is_err());
        assert!(!format!("{c:?}").contains("sk"));
    }

    #[test]
    fn filters_recheck() {
        let item = serde_json::json!({"name": "web", "externalId": "catalog://library:my_app:3", "system": false, "x": null});
        assert!(Filter::prefix("externalId", "catalog://library:my_app:").matches(&item));
        // The server would match `myXapp` through its `_` wildcard; the client does not.
        let other = serde_json::json!({"externalId": "catalog://library:myXapp:3"});
        assert!(!Filter::prefix("externalId", "catalog://library:my_app:").matches(&other));
        assert!(Filter::eq("name", "web").matches(&item));
        assert!(!Filter::eq("name", "Web").matches(&item));
        assert!(Filter::eq("system", "false").matches(&item));
        assert!(Filter::eq("x", "").matches(&item));
        assert!(Filter::ne("name", "api").matches(&item));
        assert_eq!(
            Filter::prefix("a", "b").query(),
            ("a_prefix".into(), "b".into())
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("infra*ipsec"), "infra*ipsec");
        assert_eq!(escape("a/b c"), "a%2Fb%20c");
        assert_eq!(escape("../x"), "..%2Fx");
    }
}
