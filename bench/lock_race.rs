//! The lock race over three replicas (issue 13): three `corral serve` processes (release
//! build) on one database; each round sends releasestatus `/start` to all three at once
//! and counts the `1`s (exactly one is right), then `/stop` on one of them. Prints rounds,
//! double and missing winners, and p50/p99 of `/start`, for PostgreSQL and, as the
//! baseline in the same run, for three processes on one SQLite file.
//!
//! Run: `bench/replicas.sh` (starts a throwaway PostgreSQL and sets
//! `CORRAL_BENCH_POSTGRES_URL`). BENCH_ROUNDS (default 1000) changes the count.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const TOKEN: &str = "bench-token";

struct Replica {
    child: Child,
    url: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

async fn start(dir: &std::path::Path, db: &str) -> Replica {
    let port = free_port();
    let child = Command::new(BIN)
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CORRAL_LOG", "error")
        .env("CORRAL_API_TOKEN", TOKEN)
        .env("CORRAL_DATABASE_URL", db)
        .env("CORRAL_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let replica = Replica {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = corral::http_client().unwrap_or_else(|e| panic!("no HTTP client: {e}"));
    for _ in 0..400 {
        if let Ok(r) = http.get(format!("{}/readyz", replica.url)).send().await
            && r.status() == 200
        {
            return replica;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("corral serve on {db} did not become ready");
}

async fn get(http: &reqwest::Client, url: &str) -> (String, Duration) {
    let t = Instant::now();
    let body = match http.get(url).bearer_auth(TOKEN).send().await {
        Ok(r) if r.status() == 200 => r.text().await.unwrap_or_default(),
        Ok(r) => format!("HTTP {}", r.status()),
        Err(e) => format!("error {e}"),
    };
    (body, t.elapsed())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

struct Figures {
    rounds: usize,
    doubles: usize,
    none: usize,
    errors: usize,
    p50: f64,
    p99: f64,
    wall: Duration,
}

async fn race(name: &str, db: &str, rounds: usize) -> Figures {
    let dir = std::env::temp_dir().join(format!("corral-bench-race-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(start(&dir, db).await);
    }
    let http = corral::http_client().unwrap_or_else(|e| panic!("no HTTP client: {e}"));
    let mut latencies = Vec::with_capacity(rounds * 3);
    let (mut doubles, mut none, mut errors) = (0, 0, 0);
    let t = Instant::now();
    for round in 0..rounds {
        let starts = replicas.iter().enumerate().map(|(i, r)| {
            let (http, url) = (http.clone(), format!("{}/start?name=r{round}-{i}", r.url));
            async move { get(&http, &url).await }
        });
        let answers = futures::future::join_all(starts).await;
        let winners = answers.iter().filter(|(b, _)| b == "1").count();
        errors += answers.iter().filter(|(b, _)| b != "1" && b != "0").count();
        latencies.extend(answers.iter().map(|(_, d)| *d));
        match winners {
            0 => none += 1,
            1 => {}
            _ => doubles += 1,
        }
        let (stopped, _) = get(&http, &format!("{}/stop", replicas[round % 3].url)).await;
        if winners > 0 && stopped != "1" {
            errors += 1;
        }
    }
    let wall = t.elapsed();
    drop(replicas);
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort();
    Figures {
        rounds,
        doubles,
        none,
        errors,
        p50: pct(&latencies, 0.50),
        p99: pct(&latencies, 0.99),
        wall,
    }
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<11} {} rounds in {:.1} s ({:.0} rounds/s): double winners {}, rounds without a winner {}, errors {}; /start p50 {:.2} ms, p99 {:.2} ms",
        f.rounds,
        f.wall.as_secs_f64(),
        f.rounds as f64 / f.wall.as_secs_f64(),
        f.doubles,
        f.none,
        f.errors,
        f.p50,
        f.p99
    );
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let Ok(pg) = std::env::var("CORRAL_BENCH_POSTGRES_URL") else {
        eprintln!(
            "CORRAL_BENCH_POSTGRES_URL is not set: run bench/replicas.sh (it starts a throwaway PostgreSQL)"
        );
        std::process::exit(2);
    };
    println!("lock race: 3 corral serve processes, simultaneous /start each round, /stop between");
    let dir = std::env::temp_dir().join(format!("corral-bench-race-db-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let sqlite = format!("sqlite://{}/race.db", dir.display());
    let base = race("sqlite", &sqlite, rounds).await;
    print("SQLite:", &base);
    let p = race("postgres", &pg, rounds).await;
    print("PostgreSQL:", &p);
    println!(
        "  PostgreSQL vs SQLite (3 processes, one file): /start p99 {:.2}x, rounds/s {:.2}x",
        p.p99 / base.p99.max(1e-9),
        (p.rounds as f64 / p.wall.as_secs_f64()) / (base.rounds as f64 / base.wall.as_secs_f64())
    );
    let _ = std::fs::remove_dir_all(&dir);
    if p.doubles + base.doubles > 0 {
        std::process::exit(1);
    }
}
