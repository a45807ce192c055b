//! The playground's figures (issue 14), against the real `corral serve` (release build):
//!
//! * page weight: bytes of the page, its script and its stylesheet (uncompressed);
//! * command → reply visible: over `BENCH_COMMANDS` (default 100) commands, the time from
//!   sending a command to its reply being in the page — a slash command's ephemeral reply
//!   (in the POST's answer) and a mention's reply (through the outbox, the sender and the
//!   live feed, read by an SSE client here) — p50/p99, with `GET /healthz` on the same
//!   server as the baseline;
//! * memory: resident set of an idle `corral serve` with `CORRAL_PLAYGROUND=off` (the
//!   baseline) and with `loopback` and one page open (history read, feed connected).
//!
//! Run: `cargo bench --bench playground`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

struct Server {
    child: Child,
    url: String,
    token: Option<String>,
    _dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn start(mode: &str) -> Server {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("corral-bench-pg-{mode}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CORRAL_LOG", "warn")
        .env("CORRAL_LISTEN", format!("127.0.0.1:{port}"))
        .env("CORRAL_PLAYGROUND", mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let token = if mode == "off" {
        None
    } else {
        let out = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).unwrap();
        Some(
            line.trim()
                .rsplit_once("token=")
                .map(|(_, t)| t.to_string())
                .unwrap_or_else(|| panic!("no URL printed: {line:?}")),
        )
    };
    Server {
        child,
        url,
        token,
        _dir: dir,
    }
}

async fn wait_up(http: &reqwest::Client, url: &str) {
    for _ in 0..500 {
        if http.get(format!("{url}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("corral did not start");
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// An SSE reader: the next `data:` line containing `needle`.
async fn until(resp: &mut reqwest::Response, buf: &mut String, needle: &str) {
    loop {
        while let Some(end) = buf.find('\n') {
            let line: String = buf.drain(..=end).collect();
            if line.starts_with("data:") && line.contains(needle) {
                return;
            }
        }
        match tokio::time::timeout(Duration::from_secs(30), resp.chunk()).await {
            Ok(Ok(Some(b))) => buf.push_str(&String::from_utf8_lossy(&b)),
            other => panic!("feed ended or stalled waiting for {needle:?}: {other:?}"),
        }
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Memory baseline: off, idle.
    let off = start("off");
    wait_up(&http, &off.url).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_off = rss_kib(off.child.id());
    drop(off);

    let s = start("loopback");
    wait_up(&http, &s.url).await;
    let token = s.token.clone().unwrap();
    let cookie = format!("corral_playground={token}");
    let get = |path: &str| {
        http.get(format!("{}{path}", s.url))
            .header("cookie", &cookie)
            .send()
    };
    let mut weight = 0;
    for path in ["/playground", "/playground/page.js", "/playground/page.css"] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let n = r.bytes().await.unwrap().len();
        println!("page weight {path}: {n} bytes");
        weight += n;
    }
    println!("page weight total: {weight} bytes (target < 100 KB)");
    let _ = get("/playground/history?user=alice")
        .await
        .unwrap()
        .bytes()
        .await;
    let mut feed = get("/playground/events?user=alice").await.unwrap();
    let mut buf = String::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_on = rss_kib(s.child.id());

    let post = |text: String| {
        http.post(format!("{}/playground/command", s.url))
            .header("cookie", &cookie)
            .header("origin", &s.url)
            .json(&serde_json::json!({"user": "alice", "text": text}))
            .send()
    };
    let mut health = Vec::new();
    let mut slash = Vec::new();
    let mut mention = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        http.get(format!("{}/healthz", s.url)).send().await.unwrap();
        health.push(t.elapsed());
        let t = Instant::now();
        let r = post("/release status".into()).await.unwrap();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["visibility"], "ephemeral");
        slash.push(t.elapsed());
        // A mention's reply comes back through the outbox and the feed.
        let t = Instant::now();
        post(format!("@corral release frob{i}")).await.unwrap();
        until(&mut feed, &mut buf, &format!("frob{i}")).await; // the message itself
        until(&mut feed, &mut buf, "\"kind\":\"ephemeral\"").await; // the reply
        mention.push(t.elapsed());
    }
    let (h50, h99) = (pct(&mut health, 0.5), pct(&mut health, 0.99));
    let (s50, s99) = (pct(&mut slash, 0.5), pct(&mut slash, 0.99));
    let (m50, m99) = (pct(&mut mention, 0.5), pct(&mut mention, 0.99));
    println!(
        "baseline GET /healthz: p50 {:.2} ms, p99 {:.2} ms ({n} requests)",
        ms(h50),
        ms(h99)
    );
    println!(
        "slash command → ephemeral reply: p50 {:.2} ms, p99 {:.2} ms ({:.1}x / {:.1}x baseline)",
        ms(s50),
        ms(s99),
        ms(s50) / ms(h50),
        ms(s99) / ms(h99)
    );
    println!(
        "mention → reply in the page (outbox + feed): p50 {:.2} ms, p99 {:.2} ms ({:.1}x / {:.1}x baseline)",
        ms(m50),
        ms(m99),
        ms(m50) / ms(h50),
        ms(m99) / ms(h99)
    );
    println!(
        "memory (RSS): off {rss_off} KiB (baseline), loopback with a page open {rss_on} KiB: +{} KiB ({:.2}x)",
        rss_on as i64 - rss_off as i64,
        rss_on as f64 / rss_off as f64
    );
}
