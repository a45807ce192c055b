//! A small W3C WebDriver client for driving headless Chromium from the tests: Debian's
//! `chromium` and `chromium-driver` packages, spoken to over reqwest (the HTTP client the
//! tests already use; fantoccini would bring a second HTTP stack for the dozen endpoints
//! used here).
//!
//! [`Browser::start`] runs `/usr/bin/chromedriver` on a free loopback port in a process
//! group of its own and opens a session with a fresh profile directory. Dropping the
//! [`Browser`] ends the session, kills chromedriver's process group and then, by pid,
//! every process still naming the profile directory on its command line, so no Chromium
//! outlives a test (even a panicking one).
//!
//! There is no skip: when Chromium is missing, [`Browser::start`] fails naming the command
//! that installs it.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// What installs the browser (also done by `./test`).
pub const INSTALL: &str = "apt-get install -y chromium chromium-driver";

/// The key WebDriver sends as Enter (W3C "Keyboard actions" table).
pub const ENTER: &str = "\u{E007}";

/// The key under which W3C WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How often `wait_*` look again.
const POLL: Duration = Duration::from_millis(50);

/// Bound of one WebDriver call. Generous: six builders share two cores.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound of chromedriver becoming ready and a session opening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Chromium's flags: headless, no sandbox (the tests run as root), nothing that reaches
/// the network on its own, a fixed window.
const ARGS: [&str; 11] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // A container's /dev/shm may be small; Chromium then crashes tabs without it.
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--hide-scrollbars",
];

/// The session's address and the client: shared by the browser and its elements.
struct Wire {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
}

impl Wire {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.session);
        call(&self.http, method, &url, body).await
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// One WebDriver call; the `value` of the answer, or the driver's error and message.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut req = http.request(method.clone(), url).timeout(CALL_TIMEOUT);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("WebDriver {method} {url}"))?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .with_context(|| format!("WebDriver {method} {url}: answer is not JSON"))?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if !status.is_success() {
        let error = value["error"].as_str().unwrap_or("unknown error");
        let message = value["message"].as_str().unwrap_or("");
        let first = message.lines().next().unwrap_or("");
        bail!("WebDriver {method} {url}: {status} {error}: {first}");
    }
    Ok(value)
}

/// Headless Chromium under chromedriver, one session. See the module.
pub struct Browser {
    wire: Arc<Wire>,
    driver: Child,
    port: u16,
    profile: PathBuf,
}

/// An element of the page (a W3C element reference).
pub struct Element {
    wire: Arc<Wire>,
    id: String,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A new, empty directory for one browser's profile and logs.
fn fresh_dir() -> Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "corral-browser-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("profile"))
        .with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Browser {
    /// Starts chromedriver and opens a session (see the module). Fails, naming
    /// [`INSTALL`], when Chromium or chromedriver is not installed.
    pub async fn start() -> Result<Browser> {
        for program in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(program).exists() {
                bail!(
                    "{program} is missing: the browser tests need it. Install it with: {INSTALL} (./test does this when run as root)"
                );
            }
        }
        let dir = fresh_dir()?;
        let port = free_port()?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: Drop kills chromedriver and its Chromium together.
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {CHROMEDRIVER}"))?;
        let http = corral::http_client_builder()
            .build()
            .context("HTTP client")?;
        // Owned at once, so Drop cleans up on every path below.
        let mut browser = Browser {
            wire: Arc::new(Wire {
                http: http.clone(),
                session: String::new(),
            }),
            driver,
            port,
            profile: dir,
        };
        let base = format!("http://127.0.0.1:{port}");
        browser.wait_ready(&http, &base).await?;
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": ARGS
                            .iter()
                            .map(|a| a.to_string())
                            .chain([format!("--user-data-dir={}", browser.profile.join("profile").display())])
                            .collect::<Vec<_>>(),
                    }
                }
            }
        });
        let v = call(
            &http,
            reqwest::Method::POST,
            &format!("{base}/session"),
            Some(caps),
        )
        .await
        .map_err(|e| anyhow!("{e}\nchromedriver log:\n{}", log_tail(&browser.profile)))?;
        let id = v["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("new session answer has no sessionId: {v}"))?;
        browser.wire = Arc::new(Wire {
            http,
            session: format!("{base}/session/{id}"),
        });
        browser.size_viewport(1280, 900).await?;
        Ok(browser)
    }

    /// Makes the viewport (what screenshots show) `width`×`height`: the window flag sizes
    /// the outer window, which headless Chromium draws with a toolbar's height.
    async fn size_viewport(&self, width: i64, height: i64) -> Result<()> {
        let frame = self
            .execute(
                "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];",
                vec![],
            )
            .await?;
        let (dw, dh) = (
            frame[0].as_i64().unwrap_or(0),
            frame[1].as_i64().unwrap_or(0),
        );
        self.wire
            .post(
                "/window/rect",
                json!({"width": width + dw, "height": height + dh}),
            )
            .await?;
        Ok(())
    }

    async fn wait_ready(&mut self, http: &reqwest::Client, base: &str) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.driver.try_wait()? {
                bail!(
                    "chromedriver exited at start ({status}); log:\n{}",
                    log_tail(&self.profile)
                );
            }
            if let Ok(v) = call(http, reqwest::Method::GET, &format!("{base}/status"), None).await
                && v["ready"] == json!(true)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "chromedriver not ready after {START_TIMEOUT:?}; log:\n{}",
                    log_tail(&self.profile)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.wire.post("/url", json!({ "url": url })).await?;
        Ok(())
    }

    /// The address of the page shown now.
    pub async fn current_url(&self) -> Result<String> {
        let v = self.wire.get("/url").await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// The first element matching the CSS selector; an error when there is none.
    pub async fn find(&self, css: &str) -> Result<Element> {
        let v = self
            .wire
            .post("/element", json!({"using": "css selector", "value": css}))
            .await?;
        self.element(&v)
    }

    /// Every element matching the CSS selector (maybe none).
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let v = self
            .wire
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await?;
        v.as_array()
            .ok_or_else(|| anyhow!("find_all({css}): not a list: {v}"))?
            .iter()
            .map(|e| self.element(e))
            .collect()
    }

    fn element(&self, v: &Value) -> Result<Element> {
        let id = v[ELEMENT_KEY]
            .as_str()
            .ok_or_else(|| anyhow!("not an element reference: {v}"))?;
        Ok(Element {
            wire: self.wire.clone(),
            id: id.to_string(),
        })
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page and returns
    /// what it returns, as JSON.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.wire
            .post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// Polls until an element matches `css`, for at most `timeout`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.find(css).await {
                Ok(e) => return Ok(e),
                Err(e) if Instant::now() > deadline => {
                    bail!("no element {css:?} appeared within {timeout:?}: {e}")
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Polls `predicate` until it answers true, for at most `timeout`; an error it
    /// returns counts as "not yet" (the page may be changing) and is named on timeout.
    pub async fn wait_until<F>(&self, what: &str, timeout: Duration, mut predicate: F) -> Result<()>
    where
        F: AsyncFnMut(&Browser) -> Result<bool>,
    {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            match predicate(self).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = Some(e),
            }
            if Instant::now() > deadline {
                let why = last
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                bail!("{what}: not true within {timeout:?}{why}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The viewport as PNG bytes.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        let v = self.wire.get("/screenshot").await?;
        let b64 = v
            .as_str()
            .ok_or_else(|| anyhow!("screenshot is not a string"))?;
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .context("screenshot is not base64")
    }

    /// chromedriver's pid (for tests of the kit itself).
    pub fn driver_pid(&self) -> u32 {
        self.driver.id()
    }

    /// The profile directory every process of this browser names on its command line.
    pub fn profile_dir(&self) -> PathBuf {
        self.profile.join("profile")
    }

    /// Ends the session politely (chromedriver closes Chromium), then cleans up as Drop
    /// does.
    pub async fn quit(self) {
        let _ = self.wire.call(reqwest::Method::DELETE, "", None).await;
        drop(self);
    }

    /// `DELETE /session/ID` without a runtime (Drop may run anywhere): one HTTP/1.1
    /// request on a plain socket, bounded.
    fn delete_session_blocking(&self) {
        let Some(path) = self
            .wire
            .session
            .strip_prefix(&format!("http://127.0.0.1:{}", self.port))
        else {
            return;
        };
        if path.is_empty() {
            return;
        }
        let Ok(mut s) = std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_secs(2),
        ) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "DELETE {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        if s.write_all(req.as_bytes()).is_ok() {
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    }
}

/// Pids of the processes whose command line names `needle` (read from /proc).
pub fn pids_naming(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.delete_session_blocking();
        let pgid = self.driver.id() as i32;
        // SAFETY: kill(2) on our own child's process group; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Anything that left the group (a zygote, a crashpad handler) still names the
        // profile directory: end those by pid.
        let needle = self.profile_dir().display().to_string();
        for pid in pids_naming(&needle) {
            if pid as u32 != std::process::id() {
                // SAFETY: as above, a pid just read from /proc.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Element {
    /// Types `text` into the element (`ENTER` presses Enter).
    pub async fn send_keys(&self, text: &str) -> Result<()> {
        self.wire
            .post(
                &format!("/element/{}/value", self.id),
                json!({ "text": text }),
            )
            .await?;
        Ok(())
    }

    pub async fn click(&self) -> Result<()> {
        self.wire
            .post(&format!("/element/{}/click", self.id), json!({}))
            .await?;
        Ok(())
    }

    pub async fn clear(&self) -> Result<()> {
        self.wire
            .post(&format!("/element/{}/clear", self.id), json!({}))
            .await?;
        Ok(())
    }

    /// The rendered text (as the user sees it).
    pub async fn text(&self) -> Result<String> {
        let v = self.wire.get(&format!("/element/{}/text", self.id)).await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// An attribute's value, `None` when the element has no such attribute.
    pub async fn attribute(&self, name: &str) -> Result<Option<String>> {
        let v = self
            .wire
            .get(&format!("/element/{}/attribute/{name}", self.id))
            .await?;
        Ok(v.as_str().map(str::to_string))
    }

    /// The element as a script argument (`arguments[i]` in [`Browser::execute`]).
    pub fn as_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }
}

/// Pixels of the dominant colour aside, how many must differ for a screenshot to count
/// as showing something: a short line of text has a few hundred.
const INK_PIXELS: usize = 64;

/// How far (in any channel, 0–255) a pixel must be from the dominant colour to count.
const INK_DELTA: u8 = 24;

/// Whether a PNG shows something: more than [`INK_PIXELS`] pixels differ clearly from its
/// most common colour. A white (or any single-colour) page is blank.
pub fn not_blank(png_bytes: &[u8]) -> Result<bool> {
    Ok(ink_pixels(png_bytes)? > INK_PIXELS)
}

/// The number of pixels that differ clearly from the PNG's most common colour.
pub fn ink_pixels(png_bytes: &[u8]) -> Result<usize> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    // Palette and 16-bit images become 8-bit RGB(A).
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().context("not a PNG")?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| anyhow!("PNG too large"))?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).context("PNG frame")?;
    let channels = info.color_type.samples();
    let pixels: Vec<[u8; 3]> = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| match channels {
            1 | 2 => [p[0], p[0], p[0]],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    let mut counts = std::collections::HashMap::new();
    for p in &pixels {
        *counts.entry(*p).or_insert(0usize) += 1;
    }
    let Some((dominant, _)) = counts.into_iter().max_by_key(|(_, n)| *n) else {
        return Ok(0);
    };
    Ok(pixels
        .iter()
        .filter(|p| {
            p.iter()
                .zip(dominant.iter())
                .any(|(a, b)| a.abs_diff(*b) > INK_DELTA)
        })
        .count())
}
