//! A tiny HTTP file server for deploy tests: fixed bytes at fixed paths, redirects
//! (`302` with a `Location`) at others, 404 elsewhere, a record of the GETs (path and
//! `Authorization` header) and of the PUTs it received (a stand-in for Consul's event
//! endpoint).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;

/// One GET received: its path and its `Authorization` header.
pub type Get = (String, Option<String>);

#[derive(Clone, Default)]
pub struct Files {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    puts: Arc<Mutex<Vec<(String, String)>>>,
    redirects: Arc<Mutex<HashMap<String, String>>>,
    gets: Arc<Mutex<Vec<Get>>>,
    /// When set, every request must carry it as `X-Consul-Token` (Consul with ACLs).
    token: Arc<Mutex<Option<String>>>,
    pub url: String,
}

impl Files {
    pub async fn start() -> Files {
        let mut files = Files::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        files.url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/{*path}", get(serve).put(put))
            .with_state(files.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        files
    }

    /// Serves `bytes` at `/path`; returns the full URL.
    pub fn add(&self, path: &str, bytes: impl Into<Vec<u8>>) -> String {
        self.files
            .lock()
            .unwrap()
            .insert(path.trim_start_matches('/').to_string(), bytes.into());
        format!("{}/{}", self.url, path.trim_start_matches('/'))
    }

    /// Answers `/path` with `302 Found` to `location`; returns the full URL of `/path`.
    pub fn redirect(&self, path: &str, location: &str) -> String {
        self.redirects.lock().unwrap().insert(
            path.trim_start_matches('/').to_string(),
            location.to_string(),
        );
        format!("{}/{}", self.url, path.trim_start_matches('/'))
    }

    /// Requires `X-Consul-Token: <token>` on every request from now on; without it Consul
    /// answers `403 Permission denied` (its ACL refusal).
    pub fn require_token(&self, token: &str) {
        *self.token.lock().unwrap() = Some(token.to_string());
    }

    fn authorized(&self, headers: &axum::http::HeaderMap) -> bool {
        match &*self.token.lock().unwrap() {
            None => true,
            Some(t) => headers
                .get("x-consul-token")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == t),
        }
    }

    /// The GET requests received: (path, `Authorization` header).
    pub fn gets(&self) -> Vec<Get> {
        self.gets.lock().unwrap().clone()
    }

    /// The PUT requests received: (path, body).
    pub fn puts(&self) -> Vec<(String, String)> {
        self.puts.lock().unwrap().clone()
    }
}

async fn serve(
    State(f): State<Files>,
    Path(path): Path<String>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    f.gets.lock().unwrap().push((path.clone(), auth));
    if !f.authorized(&headers) {
        return (StatusCode::FORBIDDEN, "Permission denied").into_response();
    }
    if let Some(to) = f.redirects.lock().unwrap().get(&path) {
        return (StatusCode::FOUND, [("location", to.clone())], "").into_response();
    }
    match f.files.lock().unwrap().get(&path) {
        Some(b) => (StatusCode::OK, b.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, b"404 page not found\n".to_vec()).into_response(),
    }
}

async fn put(
    State(f): State<Files>,
    Path(path): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    if !f.authorized(&headers) {
        return (StatusCode::FORBIDDEN, "Permission denied");
    }
    f.puts
        .lock()
        .unwrap()
        .push((path, String::from_utf8_lossy(&body).into_owned()));
    (StatusCode::OK, "true")
}
