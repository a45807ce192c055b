//! A TCP proxy on loopback that a test can close, reopen and stall, to show what corral
//! does when its database goes away: `Closed` is a server that is down (connections cut,
//! new ones refused), `Stalled` a network that stops passing bytes (connections stay
//! open, nothing arrives: the case only timeouts end).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Open,
    Closed,
    Stalled,
}

pub struct TcpProxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mode, rx) = watch::channel(Mode::Open);
        let task = tokio::spawn(run(Some(listener), port, upstream, rx));
        TcpProxy { port, mode, task }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_through(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).unwrap();
        u.set_host(Some("127.0.0.1")).unwrap();
        u.set_port(Some(self.port)).unwrap();
        u.to_string()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Closed);
        self.task.abort();
    }
}

/// The host and port a database URL names.
pub fn upstream_of(url: &str) -> SocketAddr {
    let u = url::Url::parse(url).unwrap();
    let host = u.host_str().unwrap();
    let port = u.port().unwrap_or(5432);
    format!("{host}:{port}").parse().unwrap()
}

async fn run(
    mut listener: Option<TcpListener>,
    port: u16,
    upstream: SocketAddr,
    mut rx: watch::Receiver<Mode>,
) {
    loop {
        let mode = *rx.borrow_and_update();
        match (mode, listener.is_some()) {
            (Mode::Closed, true) => listener = None,
            (Mode::Open | Mode::Stalled, false) => {
                for _ in 0..100 {
                    if let Ok(l) = TcpListener::bind(("127.0.0.1", port)).await {
                        listener = Some(l);
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
            _ => {}
        }
        match &listener {
            None => {
                if rx.changed().await.is_err() {
                    return;
                }
            }
            Some(l) => {
                tokio::select! {
                    r = l.accept() => {
                        if let Ok((sock, _)) = r {
                            tokio::spawn(pipe(sock, upstream, rx.clone()));
                        }
                    }
                    c = rx.changed() => if c.is_err() { return },
                }
            }
        }
    }
}

async fn pipe(client: TcpStream, upstream: SocketAddr, mut rx: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let (mut a, mut b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        let mode = *rx.borrow_and_update();
        match mode {
            // Dropping both halves cuts the connection, as a server that went down.
            Mode::Closed => return,
            Mode::Stalled => {
                if rx.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Mode::Open => {}
        }
        tokio::select! {
            n = cr.read(&mut a) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if sw.write_all(&a[..n]).await.is_err() { return },
            },
            n = sr.read(&mut b) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if cw.write_all(&b[..n]).await.is_err() { return },
            },
            c = rx.changed() => if c.is_err() { return },
        }
    }
}
