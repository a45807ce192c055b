//! The real `corral serve` against slow and hostile clients: slowloris connections that
//! never finish their headers, idle keep-alive connections, bodies that trickle, and a
//! manifest bomb parsed while `/healthz` must keep answering in milliseconds.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::corral::{SECRET, TOKEN};

struct Server {
    child: Child,
    url: String,
    addr: std::net::SocketAddr,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn serve(name: &str, extra: &[(&str, String)]) -> Server {
    let dir = std::env::temp_dir().join(format!("corral-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("serve")
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CORRAL_LOG", "warn")
        .env("CORRAL_API_TOKEN", TOKEN)
        .env("SLACK_SIGNING_SECRET", SECRET)
        .env("CORRAL_DATABASE_URL", "sqlite://corral.db")
        .env("CORRAL_LISTEN", format!("127.0.0.1:{port}"))
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = Server {
        child,
        url: format!("http://{addr}"),
        addr,
        dir,
    };
    for _ in 0..400 {
        if healthz(&server).await.is_some() {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("corral serve did not start");
}

/// `/healthz` on a fresh connection: its latency, or `None` past 3 s.
async fn healthz(s: &Server) -> Option<Duration> {
    let started = Instant::now();
    let work = async {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.ok()?;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.ok()?;
        String::from_utf8_lossy(&out)
            .contains("200 OK")
            .then_some(())
    };
    tokio::time::timeout(Duration::from_secs(3), work)
        .await
        .ok()??;
    Some(started.elapsed())
}

/// Whether the server closed `c` (EOF or reset) within `within`.
async fn closed_within(c: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_connections_are_closed_while_healthz_stays_fast() {
    let s = serve(
        "slowloris",
        &[
            ("CORRAL_HTTP_HEADER_TIMEOUT", "1s".into()),
            ("CORRAL_HTTP_BODY_TIMEOUT", "1s".into()),
        ],
    )
    .await;
    // 500 connections: half never send a byte, half send part of their headers.
    let mut conns = Vec::new();
    for i in 0..500 {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        if i % 2 == 1 {
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
                .await
                .unwrap();
        }
        conns.push(c);
    }
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = healthz(&s)
            .await
            .expect("/healthz answers with 500 slow connections open");
        worst = worst.max(t);
    }
    assert!(
        worst < Duration::from_millis(500),
        "/healthz took {worst:?}"
    );
    // Each is closed once it overstays the header timeout (all watched at once).
    let waits = conns
        .iter_mut()
        .map(|c| closed_within(c, Duration::from_secs(4)));
    let closed = futures::future::join_all(waits).await;
    let still_open = closed.iter().filter(|c| !**c).count();
    assert_eq!(
        still_open, 0,
        "connections the server kept past its header timeout"
    );

    // An idle keep-alive connection after one answer is closed too.
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
    assert!(
        closed_within(&mut c, Duration::from_secs(4)).await,
        "idle keep-alive kept"
    );

    // A body that trickles is cut with 408 at the body timeout.
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"POST /api/v1/commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"te")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
    assert!(
        String::from_utf8_lossy(&out).contains("408"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    drop(conns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_manifest_bombs_are_parsed() {
    let dir = std::env::temp_dir().join(format!("corral-bombdir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bomb = dir.join("nested.yml");
    std::fs::write(&bomb, crate::deploy_hostile::nesting_bomb()).unwrap();
    let alias = dir.join("alias.yml");
    std::fs::write(&alias, crate::deploy_hostile::alias_bomb()).unwrap();
    let s = serve(
        "bombs",
        &[("CORRAL_DEPLOY_ALLOW", format!("file://{}/", dir.display()))],
    )
    .await;
    let http = corral::http_client().unwrap();
    for m in [&bomb, &bomb, &alias] {
        let r = http
            .post(format!("{}/api/v1/commands", s.url))
            .bearer_auth(TOKEN)
            .json(
                &serde_json::json!({ "text": format!("deploy file://{} --dry-run", m.display()) }),
            )
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("the command is acknowledged");
        assert!(r.status().is_success(), "{}", r.status());
    }
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = healthz(&s)
            .await
            .expect("/healthz answers while manifests are parsed");
        worst = worst.max(t);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        worst < Duration::from_millis(500),
        "/healthz took {worst:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
