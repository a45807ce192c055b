//! A Python server the tests drive (moto for S3, gcp-storage-emulator for Google Cloud
//! Storage), on a free loopback port, killed when dropped.

use std::time::{Duration, Instant};

pub struct PyServer {
    child: std::process::Child,
    pub url: String,
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `python3 -m <args>`, with `{port}` in `args` replaced by a free port, and waits
/// until `GET /` answers. `python3 -m` rather than the package's script: it works whether
/// or not pip's script directory is on PATH. `./test` installs both packages.
pub async fn start(args: &[&str]) -> PyServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let args: Vec<String> = args.iter().map(|a| a.replace("{port}", &port)).collect();
    let child = std::process::Command::new("python3")
        .arg("-m")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 -m {args:?} runs: {e}"));
    let server = PyServer {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = corral::http_client().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(&server.url).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "python3 -m {args:?} did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
}
