//! A fresh PostgreSQL database for each test, on the server `./test` starts (its URL in
//! `CORRAL_TEST_POSTGRES_URL`). Tests stay independent and run in parallel; a database
//! is dropped when its `TestDb` is. Never a silent skip: without the variable every
//! PostgreSQL test fails, saying how to run it.

use std::sync::atomic::{AtomicUsize, Ordering};

pub const VAR: &str = "CORRAL_TEST_POSTGRES_URL";

/// The server's URL (a user that may CREATE DATABASE).
pub fn server_url() -> String {
    match std::env::var(VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{VAR} is not set, so the PostgreSQL store cannot be tested. Run the suite with \
             ./test (it starts a throwaway PostgreSQL 15 and sets it), or set {VAR} to \
             postgres://USER@HOST:PORT/postgres?sslmode=disable of a server where USER may \
             create databases."
        ),
    }
}

async fn admin(server: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(server, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {VAR}: {e}"));
    tokio::spawn(conn);
    client
}

/// One empty database of its own.
pub struct TestDb {
    /// `postgres://…/corral_…`, for `CORRAL_DATABASE_URL`.
    pub url: String,
    pub name: String,
    server: String,
}

impl TestDb {
    pub async fn new(tag: &str) -> TestDb {
        static N: AtomicUsize = AtomicUsize::new(0);
        let server = server_url();
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(24)
            .collect();
        let name = format!(
            "corral_{}_{}_{}",
            tag.to_ascii_lowercase(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        admin(&server)
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create the test database");
        let mut url = url::Url::parse(&server).expect("CORRAL_TEST_POSTGRES_URL is a URL");
        url.set_path(&format!("/{name}"));
        TestDb {
            url: url.to_string(),
            name,
            server,
        }
    }

    /// A client on this database, for looking at what the store wrote.
    pub async fn client(&self) -> tokio_postgres::Client {
        admin(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Its own thread and runtime: Drop cannot await, and the test's runtime may be
        // the one that is ending.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&server, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
