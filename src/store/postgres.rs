//! The shared store: PostgreSQL, for several corral replicas on one database.
//!
//! tokio-postgres over a deadpool connection pool; TLS through rustls with the `ring`
//! provider (the one TLS stack of the crate). The tables are those of the SQLite store,
//! migration for migration (`migrations/pg/NNNN_*.sql` beside `migrations/NNNN_*.sql`),
//! so rows copy across unchanged (`corral migrate`).
//!
//! **Exactly once across processes.** A decision (`change_lock`, `create_job`) runs in one
//! transaction that first locks the row it reads: `FOR UPDATE` on the lock row for a lock
//! change, `FOR SHARE` for the lock gate of a job (jobs may be created side by side, but
//! not beside a lock change). Under READ COMMITTED a waiting transaction reads the row
//! as the winner committed it, so the pure decider sees the real state. A serialisation
//! failure or a deadlock rolls back and decides again (the deciders are `Fn`). Delivery
//! keys and deploy reports are `INSERT … ON CONFLICT DO NOTHING` on a primary key.
//!
//! **Bounded waits.** Every call waits at most `pool_timeout` for a connection,
//! `connect_timeout` to open one, and `statement_timeout` (plus a second) for its
//! statements; the server is told the same limit (`statement_timeout`, `lock_timeout`,
//! `idle_in_transaction_session_timeout`), so a replica cut off inside a transaction
//! cannot hold the lock row for longer. A connection that timed out or failed is
//! dropped, not reused; the pool opens a new one on the next call, so the store recovers
//! by itself when the database comes back.
//!
//! **Migrations** run in one transaction under a transaction-scoped advisory lock, so
//! three replicas starting at once apply them once. `corral_schema` records each
//! version. A database ahead of this build (migrated by a newer replica during a rolling
//! upgrade) is used as it is: migrations are additive, so older code keeps working.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
    TimeoutType,
};
use futures::future::BoxFuture;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::dump::{CopyReport, Dump};
use super::pg_approval as approval;
use super::pg_error::{PgError, PgResult, cached};
use super::pg_outbox as outbox;
use super::pg_replicas as replicas;
use super::pg_shared::Slot;
use super::replicas::{expired_condition, held_condition};
use super::sqlite::{RawJob, typed};
use super::{Admission, Pruned, Replica};
use super::{
    ApprovalDecision, AuditEntry, Backend, Ballot, Claimed, Decide, Decided, DeployReport, Effects,
    Enqueued, FiringClaim, JobChange, JobRecord, LockChange, LockDecision, LockHistoryEntry,
    NewJob, NewMessage, OutboxRow, OutboxStats, Result, Settings, Settle, Store, StoreError,
    StoreInfo, outbox::RowState,
};
use crate::door::Source;
use crate::job::approval::{ApprovalRecord, Vote};
use crate::job::{JobStatus, Outcome};
use crate::lock::{Holder, LockState, Refusal};
use crate::text::{format_duration, redact_secrets_in, redact_url};

/// Schema migrations, applied in order; version N is the N-th. The numbers match the
/// SQLite migrations of the same name. Additive only (new tables, new nullable or
/// defaulted columns, new indexes): a replica one version behind keeps working.
pub(super) const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("migrations/pg/0001_init.sql")),
    ("0002_deploy", include_str!("migrations/pg/0002_deploy.sql")),
    ("0003_outbox", include_str!("migrations/pg/0003_outbox.sql")),
    (
        "0004_firings",
        include_str!("migrations/pg/0004_firings.sql"),
    ),
    (
        "0005_replicas",
        include_str!("migrations/pg/0005_replicas.sql"),
    ),
    (
        "0006_approvals",
        include_str!("migrations/pg/0006_approvals.sql"),
    ),
    (
        "0007_deploy_hosts",
        include_str!("migrations/pg/0007_deploy_hosts.sql"),
    ),
];

/// Advisory lock keys (one namespace for the whole database).
const MIGRATION_LOCK: i64 = 0x636f_7272_616c_0001;
const COPY_LOCK: i64 = 0x636f_7272_616c_0002;

/// Attempts of a decision that keeps meeting serialisation failures or deadlocks.
const ATTEMPTS: u32 = 8;

/// What `sslmode` asks for, with libpq's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, else plain; the certificate is not checked (libpq's
    /// default).
    Prefer,
    /// TLS or nothing; the certificate is not checked.
    Require,
    /// TLS with a certificate that chains to a trusted root; any host name.
    VerifyCa,
    /// TLS with a certificate that chains to a trusted root and names the host.
    VerifyFull,
}

/// A parsed `postgres://` URL.
pub(super) struct Target {
    config: tokio_postgres::Config,
    ssl: SslMode,
    /// `sslrootcert=PATH`: the CA to trust instead of the system's roots.
    root_cert: Option<PathBuf>,
}

impl Target {
    /// Parses `postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=…` (or
    /// `postgresql://`). Errors never contain the password.
    pub(super) fn parse(url: &str) -> std::result::Result<Target, String> {
        let shown = redact_url(url);
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
            return Err(format!(
                "{shown:?}: a PostgreSQL URL starts with postgres:// or postgresql://"
            ));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut ssl = SslMode::Prefer;
        let mut root_cert = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let Some((key, value)) = url::form_urlencoded::parse(pair.as_bytes()).next() else {
                continue;
            };
            match key.as_ref() {
                "sslmode" => {
                    ssl = match value.as_ref() {
                        "disable" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "{shown:?}: sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                            ));
                        }
                    }
                }
                "sslrootcert" if !value.is_empty() => root_cert = Some(PathBuf::from(&*value)),
                _ => rest.push(pair),
            }
        }
        // As libpq: a root certificate given with `require` is checked (verify-ca).
        if ssl == SslMode::Require && root_cert.is_some() {
            ssl = SslMode::VerifyCa;
        }
        let rebuilt = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config = tokio_postgres::Config::from_str(&rebuilt)
            .map_err(|e| format!("{shown:?}: {}", redact_secrets_in(&e.to_string(), url)))?;
        if config.get_hosts().is_empty() {
            return Err(format!("{shown:?} names no host"));
        }
        if config.get_application_name().is_none() {
            config.application_name("corral");
        }
        Ok(Target {
            config,
            ssl,
            root_cert,
        })
    }
}

/// Whether a decision that failed this way should simply be decided again.
fn is_conflict(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// The driver's error as words: the server's message and code, or the I/O failure.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    crate::text::error_chain(e)
}

/// The shared store: a pool of connections to one PostgreSQL database.
pub struct PostgresStore {
    pool: Pool,
    /// The connection single-statement calls share, pipelined ([`super::pg_shared`]).
    shared: Slot,
    /// The longest a call's statements may take, client side.
    deadline: Duration,
    settings: Settings,
}

fn tls_config(target: &Target) -> std::result::Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let roots = || -> std::result::Result<rustls::RootCertStore, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &target.root_cert {
            Some(path) => {
                use rustls::pki_types::CertificateDer;
                use rustls::pki_types::pem::PemObject;
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        if roots.is_empty() {
            return Err(match &target.root_cert {
                Some(p) => format!("sslrootcert {} holds no certificate", p.display()),
                None => "sslmode=verify-*: no trusted root certificates on this system; set sslrootcert=PATH".into(),
            });
        }
        Ok(roots)
    };
    Ok(match target.ssl {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth(),
        SslMode::VerifyCa => {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots()?),
                provider,
            )
            .build()
            .map_err(|e| format!("TLS: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
                .with_no_client_auth()
        }
        SslMode::VerifyFull => builder
            .with_root_certificates(roots()?)
            .with_no_client_auth(),
    })
}

/// `sslmode=prefer|require`: encrypted, the certificate not checked (libpq's meaning).
/// The handshake's signatures are still verified, so the session key is the server's.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain is checked, the host name is not.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Milliseconds for a server setting, at least 1 (0 would mean "no limit").
fn millis(d: Duration) -> u128 {
    d.as_millis().max(1)
}

impl PostgresStore {
    /// Connects to the database at `url` and migrates it. Fails if it cannot be reached
    /// within the connect timeout.
    pub(crate) async fn open(url: &str, settings: &Settings) -> Result<PostgresStore> {
        let shown = redact_url(url);
        let open_err = |reason: String| StoreError::Open {
            url: shown.clone(),
            reason,
        };
        let target = Target::parse(url).map_err(&open_err)?;
        let mut config = target.config.clone();
        config
            .connect_timeout(settings.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .ssl_mode(match target.ssl {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match target.ssl {
            SslMode::Disable => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
            _ => {
                let tls = tls_config(&target).map_err(&open_err)?;
                Manager::from_config(
                    config,
                    tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                    manager_config,
                )
            }
        };
        let limit = millis(settings.statement_timeout);
        let session = Arc::new(format!(
            "SET statement_timeout = {limit}; SET lock_timeout = {limit}; \
             SET idle_in_transaction_session_timeout = {limit}"
        ));
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.pool_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .post_create(Hook::async_fn(move |client, _| {
                let session = session.clone();
                Box::pin(async move {
                    client
                        .batch_execute(&session)
                        .await
                        .map_err(HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| open_err(e.to_string()))?;
        let store = PostgresStore {
            pool,
            shared: Slot::default(),
            deadline: settings.statement_timeout + Duration::from_secs(1),
            settings: settings.clone(),
        };
        store.migrate().await.map_err(|e| open_err(e.to_string()))?;
        Ok(store)
    }

    fn pool_error(&self, e: PoolError) -> StoreError {
        match e {
            PoolError::Timeout(TimeoutType::Wait) => StoreError::Unavailable(format!(
                "all {} connections stayed busy for {} (CORRAL_DATABASE_POOL_SIZE, CORRAL_DATABASE_POOL_TIMEOUT)",
                self.settings.pool_size,
                format_duration(self.settings.pool_timeout)
            )),
            PoolError::Timeout(_) => StoreError::Unavailable(format!(
                "no connection within {} (CORRAL_DATABASE_CONNECT_TIMEOUT)",
                format_duration(self.settings.connect_timeout)
            )),
            PoolError::Backend(e) => {
                StoreError::Unavailable(format!("cannot connect: {}", describe(&e)))
            }
            PoolError::PostCreateHook(e) => {
                StoreError::Unavailable(format!("cannot set up a connection: {e}"))
            }
            PoolError::Closed => StoreError::Closed,
            PoolError::NoRuntimeSpecified => StoreError::Db("no async runtime for the pool".into()),
        }
    }

    fn db_error(&self, e: tokio_postgres::Error) -> StoreError {
        if e.is_closed() {
            return StoreError::Unavailable(format!("the connection was lost: {}", describe(&e)));
        }
        match e.code() {
            Some(c) if *c == SqlState::QUERY_CANCELED || *c == SqlState::LOCK_NOT_AVAILABLE => {
                StoreError::Unavailable(format!(
                    "the database did not answer within {} (CORRAL_DATABASE_STATEMENT_TIMEOUT): {}",
                    format_duration(self.settings.statement_timeout),
                    describe(&e)
                ))
            }
            Some(c)
                if *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CRASH_SHUTDOWN
                    || *c == SqlState::CANNOT_CONNECT_NOW =>
            {
                StoreError::Unavailable(describe(&e))
            }
            Some(_) => StoreError::Db(describe(&e)),
            None => StoreError::Unavailable(describe(&e)),
        }
    }

    /// Runs `f` on a pooled connection, bounded in time. A connection that failed or
    /// timed out is rolled back or dropped, never handed to the next call half-used.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: for<'c> FnOnce(&'c Object) -> BoxFuture<'c, PgResult<T>> + Send,
    {
        let client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
        match tokio::time::timeout(self.deadline, f(&client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                // Whatever was under way is abandoned; a connection that cannot even
                // say ROLLBACK is not kept.
                let clean =
                    tokio::time::timeout(Duration::from_secs(1), client.batch_execute("ROLLBACK"))
                        .await;
                if !matches!(clean, Ok(Ok(()))) {
                    let _ = Object::take(client);
                }
                Err(match e {
                    PgError::Db(e) => self.db_error(e),
                    PgError::Store(e) => e,
                })
            }
            Err(_) => {
                let _ = Object::take(client);
                Err(self.timed_out())
            }
        }
    }

    /// Runs `f`, one statement outside any transaction, on the connection such calls
    /// share (pipelined with the others in flight), bounded in time like [`Self::run`].
    /// A connection that broke or did not answer is forgotten, never reused.
    async fn run_shared<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: for<'c> FnOnce(&'c Object) -> BoxFuture<'c, PgResult<T>> + Send,
    {
        let shared = self
            .shared
            .get(&self.pool)
            .await
            .map_err(|e| self.pool_error(e))?;
        let Some(client) = shared.conn() else {
            self.shared.forget(&shared);
            return Err(StoreError::Unavailable(
                "the shared connection is gone".into(),
            ));
        };
        match tokio::time::timeout(self.deadline, f(client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(PgError::Store(e))) => Err(e),
            Ok(Err(PgError::Db(e))) => {
                // A statement the server refused leaves the connection usable; a lost
                // connection or a failure of the protocol does not.
                if e.is_closed() || e.code().is_none() {
                    self.shared.forget(&shared);
                }
                Err(self.db_error(e))
            }
            Err(_) => {
                self.shared.forget(&shared);
                Err(self.timed_out())
            }
        }
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "the database did not answer within {} (CORRAL_DATABASE_STATEMENT_TIMEOUT)",
            format_duration(self.settings.statement_timeout)
        ))
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
        let result: std::result::Result<u32, tokio_postgres::Error> = async {
            let tx = client.transaction().await?;
            // Another replica may be migrating: wait for it (then find nothing to do).
            tx.batch_execute(
                "SET LOCAL lock_timeout = 60000; SET LOCAL statement_timeout = 120000",
            )
            .await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS corral_schema (
                     version     INTEGER PRIMARY KEY,
                     name        TEXT NOT NULL,
                     applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
                 )",
            )
            .await?;
            let applied: i32 = tx
                .query_one("SELECT COALESCE(MAX(version), 0) FROM corral_schema", &[])
                .await?
                .get(0);
            let applied = u32::try_from(applied).unwrap_or(0);
            for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
                tx.batch_execute(sql).await?;
                let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
                tx.execute(
                    "INSERT INTO corral_schema (version, name) VALUES ($1, $2)",
                    &[&version, name],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(applied)
        }
        .await;
        match result {
            Ok(applied) if applied as usize > MIGRATIONS.len() => {
                tracing::warn!(
                    database = applied,
                    known = MIGRATIONS.len(),
                    "the database schema is newer than this corral (a rolling upgrade?); its migrations are additive, so this replica keeps working"
                );
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                let _ = Object::take(client);
                Err(self.db_error(e))
            }
        }
    }

    /// Writes a dump into this (empty) database in one transaction; refuses a database
    /// that already holds anything.
    pub(super) async fn load(&self, dump: &Dump) -> std::result::Result<CopyReport, String> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| self.pool_error(e).to_string())?;
        let result = load(&mut client, dump).await;
        match result {
            Ok(r) => Ok(r),
            Err(PgError::Store(e)) => Err(e.to_string()),
            Err(PgError::Db(e)) => {
                let _ = Object::take(client);
                Err(self.db_error(e).to_string())
            }
        }
    }
}

/// Long by design: one `INSERT` per table, in dependency order, inside one transaction;
/// splitting it would scatter the one place that lists every table the copy carries.
async fn load(client: &mut Object, dump: &Dump) -> PgResult<CopyReport> {
    let tx = client.transaction().await?;
    tx.batch_execute(
        "SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0",
    )
    .await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COPY_LOCK])
        .await?;
    let row = tx
        .query_one(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM lock_history),
                    (SELECT count(*) FROM audit), (SELECT count(*) FROM deploy_reports),
                    (SELECT count(*) FROM outbox), (SELECT count(*) FROM firings),
                    (SELECT count(*) FROM lock_state WHERE running_by IS NOT NULL OR blocked_by IS NOT NULL)",
            &[],
        )
        .await?;
    let counts: Vec<i64> = (0..7).map(|i| row.get(i)).collect();
    if counts.iter().any(|&n| n > 0) {
        return Err(StoreError::Db(format!(
            "the target is not empty ({} jobs, {} lock changes, {} audit lines, {} deploy reports, {} outbox rows, {} firings{}); corral migrate copies only into an empty database",
            counts[0],
            counts[1],
            counts[2],
            counts[3],
            counts[4],
            counts[5],
            if counts[6] > 0 { ", a held lock" } else { "" }
        ))
        .into());
    }
    write_lock(&tx, &dump.lock).await?;
    let history = tx
        .prepare(
            "INSERT INTO lock_history (id, at, actor, action, reason, source, forced)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?;
    for (id, h) in &dump.history {
        tx.execute(
            &history,
            &[
                id,
                &h.at,
                &h.actor,
                &h.action,
                &h.reason,
                &h.source.as_str(),
                &h.forced,
            ],
        )
        .await?;
    }
    let jobs = tx
        .prepare(
            "INSERT INTO jobs (id, kind, command, requested_by, source, channel, status, done, failed, total, created_at, updated_at, outcome, delivery)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .await?;
    for j in &dump.jobs {
        let outcome = match &j.outcome {
            None => None,
            Some(o) => Some(
                serde_json::to_string(o)
                    .map_err(|e| StoreError::Corrupt(format!("job {} outcome: {e}", j.id)))?,
            ),
        };
        tx.execute(
            &jobs,
            &[
                &j.id,
                &j.kind.as_str(),
                &j.command,
                &j.requested_by,
                &j.source.as_str(),
                &j.channel,
                &j.status.as_str(),
                &i64::from(j.done),
                &i64::from(j.failed),
                &i64::from(j.total),
                &j.created_at,
                &j.updated_at,
                &outcome,
                &j.delivery,
            ],
        )
        .await?;
    }
    // The outbox as it was (roots included, from schema version 3 on), then roots from
    // an older store's message table as delivered rows (as `set_message` writes them), so
    // the bot keeps editing the same threads.
    outbox::copy_in(&tx, &dump.outbox, &dump.pacing).await?;
    let messages = tx
        .prepare(
            "INSERT INTO outbox (key, kind, lane, seq, channel, role, job_id, body, version,
                 sent_version, state, ts, created_at, updated_at)
             VALUES ('job:' || $1::BIGINT::TEXT || ':root', 'post', $2, 0, $2, 'root', $1,
                     '{\"text\":\"\"}', 0, 0, 'done', $3, 0, 0)
             ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING",
        )
        .await?;
    for (job, channel, ts) in &dump.messages {
        tx.execute(&messages, &[job, channel, ts]).await?;
    }
    let audit = tx
        .prepare(
            "INSERT INTO audit (id, at, actor, action, detail, source) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    for (id, a) in &dump.audit {
        tx.execute(
            &audit,
            &[
                id,
                &a.at,
                &a.actor,
                &a.action,
                &a.detail,
                &a.source.as_str(),
            ],
        )
        .await?;
    }
    for r in &dump.reports {
        insert_report(&tx, r).await?;
    }
    approval::copy_in(&tx, &dump.approvals, &dump.votes).await?;
    let firing = tx
        .prepare(
            "INSERT INTO firings (key, schedule, at, outcome, claimed_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    let host = tx
        .prepare("INSERT INTO deploy_hosts (job_id, host) VALUES ($1, $2)")
        .await?;
    for (job, h) in &dump.deploy_hosts {
        tx.execute(&host, &[job, h]).await?;
    }
    for f in &dump.firings {
        tx.execute(
            &firing,
            &[&f.key, &f.schedule, &f.at, &f.outcome, &f.claimed_at],
        )
        .await?;
    }
    let seen = tx
        .prepare("INSERT INTO seen_events (event_id, at) VALUES ($1, $2)")
        .await?;
    for (key, at) in &dump.seen {
        tx.execute(&seen, &[key, at]).await?;
    }
    // New rows continue after the copied ids.
    for table in ["lock_history", "jobs", "audit"] {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
            ),
            &[],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(CopyReport {
        lock: dump.lock.clone(),
        lock_history: dump.history.len(),
        jobs: dump.jobs.len(),
        messages: dump.messages.len(),
        audit: dump.audit.len(),
        deploy_reports: dump.reports.len(),
        delivery_keys: dump.seen.len(),
        outbox: dump.outbox.len(),
        outbox_pending: dump
            .outbox
            .iter()
            .filter(|o| matches!(o.row.state, RowState::Pending | RowState::Edit))
            .count(),
        firings: dump.firings.len(),
        approvals: dump.approvals.len(),
        votes: dump.votes.len(),
        deploy_hosts: dump.deploy_hosts.len(),
    })
}

/// Runs `body` in a transaction: commits on `Commit`, rolls back on `Rollback`, and on
/// a serialisation failure or deadlock rolls back and runs it again.
pub(super) enum Tx<T> {
    Commit(T),
    Rollback(T),
}

pub(super) async fn in_tx<T, Fut>(c: &Object, body: impl Fn() -> Fut) -> PgResult<T>
where
    Fut: std::future::Future<Output = PgResult<Tx<T>>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        c.batch_execute("BEGIN").await?;
        let result = match body().await {
            Ok(Tx::Commit(v)) => c
                .batch_execute("COMMIT")
                .await
                .map(|()| v)
                .map_err(PgError::from),
            Ok(Tx::Rollback(v)) => c
                .batch_execute("ROLLBACK")
                .await
                .map(|()| v)
                .map_err(PgError::from),
            Err(e) => {
                let _ = c.batch_execute("ROLLBACK").await;
                Err(e)
            }
        };
        match result {
            Err(PgError::Db(e)) if is_conflict(&e) && attempt < ATTEMPTS => {
                tracing::debug!(attempt, error = %describe(&e), "decision conflicted; deciding again");
                tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 3)).await;
            }
            other => return other,
        }
    }
}

async fn query(
    c: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> PgResult<Vec<Row>> {
    let stmt = c.prepare(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

/// An audit line as `SELECT at, actor, action, detail, source` reads it.
fn audit_row(r: &Row) -> PgResult<AuditEntry> {
    let at: i64 = r.try_get(0)?;
    let source: String = r.try_get(4)?;
    Ok(AuditEntry {
        at,
        actor: r.try_get(1)?,
        action: r.try_get(2)?,
        detail: r.try_get(3)?,
        source: typed::<Source>("source", format!("audit line at {at}"), &source)?,
    })
}

fn holder(by: Option<String>, reason: Option<String>, since: Option<i64>) -> Option<Holder> {
    by.map(|who| Holder {
        who,
        reason: reason.unwrap_or_default(),
        since: since.unwrap_or(0),
    })
}

const LOCK_COLUMNS: &str =
    "running_by, running_reason, running_since, blocked_by, blocked_reason, blocked_since";

fn lock_row(r: &Row) -> PgResult<LockState> {
    Ok(LockState {
        running: holder(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?),
        blocked: holder(r.try_get(3)?, r.try_get(4)?, r.try_get(5)?),
    })
}

/// The lock row; `lock` is `""`, `"FOR UPDATE"` or `"FOR SHARE"`.
pub(super) async fn read_lock(c: &Object, lock: &str) -> PgResult<LockState> {
    let sql = format!("SELECT {LOCK_COLUMNS} FROM lock_state WHERE id = 1 {lock}");
    let stmt = cached(c, &sql).await?;
    let row = c
        .query_opt(&stmt, &[])
        .await?
        .ok_or_else(|| StoreError::Corrupt("the lock row is missing".into()))?;
    lock_row(&row)
}

async fn write_lock(c: &tokio_postgres::Transaction<'_>, s: &LockState) -> PgResult<()> {
    let (r, b) = (s.running.as_ref(), s.blocked.as_ref());
    c.execute(
        "UPDATE lock_state SET running_by = $1, running_reason = $2, running_since = $3,
             blocked_by = $4, blocked_reason = $5, blocked_since = $6 WHERE id = 1",
        &[
            &r.map(|h| &h.who),
            &r.map(|h| &h.reason),
            &r.map(|h| h.since),
            &b.map(|h| &h.who),
            &b.map(|h| &h.reason),
            &b.map(|h| h.since),
        ],
    )
    .await?;
    Ok(())
}

async fn insert_audit(c: &Object, e: &AuditEntry) -> PgResult<()> {
    let stmt = cached(
        c,
        "INSERT INTO audit (at, actor, action, detail, source) VALUES ($1, $2, $3, $4, $5)",
    )
    .await?;
    c.execute(
        &stmt,
        &[&e.at, &e.actor, &e.action, &e.detail, &e.source.as_str()],
    )
    .await?;
    Ok(())
}

pub(super) async fn write_effects(c: &Object, effects: &Effects) -> PgResult<Vec<Enqueued>> {
    for e in &effects.audit {
        insert_audit(c, e).await?;
    }
    outbox::insert(c, &effects.messages).await
}

pub(super) async fn apply_job_change(
    c: &Object,
    id: i64,
    change: &JobChange,
    now: i64,
) -> PgResult<()> {
    match change {
        JobChange::Status(status) => {
            let stmt = cached(
                c,
                "UPDATE jobs SET status = $2, updated_at = $3 WHERE id = $1",
            )
            .await?;
            c.execute(&stmt, &[&id, &status.as_str(), &now]).await?;
        }
        JobChange::Progress {
            done,
            failed,
            total,
        } => {
            let stmt = cached(
                c,
                "UPDATE jobs SET done = $2, failed = $3, total = $4, updated_at = $5 WHERE id = $1",
            )
            .await?;
            c.execute(
                &stmt,
                &[
                    &id,
                    &i64::from(*done),
                    &i64::from(*failed),
                    &i64::from(*total),
                    &now,
                ],
            )
            .await?;
        }
        JobChange::Finish { status, outcome } => {
            let text = serde_json::to_string(outcome)
                .map_err(|e| StoreError::Corrupt(format!("cannot encode outcome: {e}")))?;
            let stmt = cached(
                c,
                "UPDATE jobs SET status = $2, outcome = $3, updated_at = $4 WHERE id = $1",
            )
            .await?;
            c.execute(&stmt, &[&id, &status.as_str(), &text, &now])
                .await?;
        }
        JobChange::Nothing => {}
    }
    Ok(())
}

const JOB_COLUMNS: &str = "id, kind, command, requested_by, source, channel, status, done, failed, total, created_at, updated_at, outcome, delivery";

fn count(r: &Row, i: usize) -> PgResult<u32> {
    let n: i64 = r.try_get(i)?;
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("a job counter is {n}")).into())
}

fn job_row(r: &Row) -> PgResult<JobRecord> {
    Ok(RawJob {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        command: r.try_get(2)?,
        requested_by: r.try_get(3)?,
        source: r.try_get(4)?,
        channel: r.try_get(5)?,
        status: r.try_get(6)?,
        done: count(r, 7)?,
        failed: count(r, 8)?,
        total: count(r, 9)?,
        created_at: r.try_get(10)?,
        updated_at: r.try_get(11)?,
        outcome: r.try_get(12)?,
        delivery: r.try_get(13)?,
    }
    .typed()?)
}

pub(super) async fn jobs_where(
    c: &Object,
    tail: &str,
    params: &[&(dyn ToSql + Sync)],
) -> PgResult<Vec<JobRecord>> {
    let stmt = cached(c, &format!("SELECT {JOB_COLUMNS} FROM jobs {tail}")).await?;
    c.query(&stmt, params).await?.iter().map(job_row).collect()
}

async fn change_lock_body(
    c: &Object,
    decide: &Decide<LockState, LockDecision, Refusal>,
) -> PgResult<Tx<LockChange>> {
    let before = read_lock(c, "FOR UPDATE").await?;
    let decision = match decide(&before) {
        Ok(d) => d,
        Err(refusal) => return Ok(Tx::Rollback(Err(refusal))),
    };
    let (r, b) = (
        decision.state.running.as_ref(),
        decision.state.blocked.as_ref(),
    );
    let update = cached(
        c,
        "UPDATE lock_state SET running_by = $1, running_reason = $2, running_since = $3,
             blocked_by = $4, blocked_reason = $5, blocked_since = $6 WHERE id = 1",
    )
    .await?;
    c.execute(
        &update,
        &[
            &r.map(|h| &h.who),
            &r.map(|h| &h.reason),
            &r.map(|h| h.since),
            &b.map(|h| &h.who),
            &b.map(|h| &h.reason),
            &b.map(|h| h.since),
        ],
    )
    .await?;
    let h = &decision.history;
    let insert = cached(
        c,
        "INSERT INTO lock_history (at, actor, action, reason, source, forced) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .await?;
    c.execute(
        &insert,
        &[
            &h.at,
            &h.actor,
            &h.action,
            &h.reason,
            &h.source.as_str(),
            &h.forced,
        ],
    )
    .await?;
    write_effects(c, &decision.effects).await?;
    Ok(Tx::Commit(Ok((before, decision))))
}

async fn create_job_body(
    c: &Object,
    job: &NewJob,
    gate: &Decide<LockState, Effects, String>,
) -> PgResult<Tx<std::result::Result<JobRecord, String>>> {
    // FOR SHARE: jobs pass the gate side by side, but never beside a lock change.
    let lock = read_lock(c, "FOR SHARE").await?;
    let effects = match gate(&lock) {
        Ok(e) => e,
        Err(refusal) => return Ok(Tx::Rollback(Err(refusal))),
    };
    let insert = cached(
        c,
        &format!(
            "INSERT INTO jobs (kind, command, requested_by, source, channel, status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {JOB_COLUMNS}"
        ),
    )
    .await?;
    let row = c
        .query_one(
            &insert,
            &[
                &job.kind.as_str(),
                &job.command,
                &job.requested_by,
                &job.source.as_str(),
                &job.channel,
                &JobStatus::Queued.as_str(),
                &job.now,
            ],
        )
        .await?;
    let record = job_row(&row)?;
    write_effects(c, &effects).await?;
    insert_audit(
        c,
        &AuditEntry {
            at: job.now,
            actor: job.requested_by.clone(),
            action: format!("job {} created", record.id),
            detail: job.command.clone(),
            source: job.source,
        },
    )
    .await?;
    Ok(Tx::Commit(Ok(record)))
}

async fn claim_firing_body(
    c: &Object,
    claim: &FiringClaim,
    decide: &Decide<LockState, Effects, String>,
) -> PgResult<Tx<Claimed>> {
    // The primary key decides: of two replicas claiming one firing at once, the second
    // waits for the first's commit and inserts nothing.
    let stmt = cached(
        c,
        "INSERT INTO firings (key, schedule, at, outcome, claimed_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .await?;
    let inserted = c
        .execute(
            &stmt,
            &[
                &claim.key,
                &claim.schedule,
                &claim.at,
                &claim.outcome,
                &claim.claimed_at,
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(Tx::Rollback(Claimed::Before));
    }
    // FOR SHARE: a lock change (a stop) waits for this firing, or this firing for it.
    let lock = read_lock(c, "FOR SHARE").await?;
    let effects = match decide(&lock) {
        Ok(e) => e,
        Err(why) => return Ok(Tx::Rollback(Claimed::Declined(why))),
    };
    write_effects(c, &effects).await?;
    Ok(Tx::Commit(Claimed::Now))
}

async fn decide_approval_body(
    c: &Object,
    job: i64,
    decide: &Decide<Ballot, ApprovalDecision, String>,
) -> PgResult<Tx<std::result::Result<(Ballot, ApprovalDecision), String>>> {
    approval::lock(c, job).await?;
    let Some(record) = jobs_where(c, "WHERE id = $1", &[&job]).await?.pop() else {
        return Ok(Tx::Rollback(Err(format!("There is no job #{job}."))));
    };
    let current = approval::read_approval(c, job).await?;
    let votes = match &current {
        Some(a) => approval::read_votes(c, job, a.round).await?,
        None => Vec::new(),
    };
    // FOR SHARE: the lock gate the completing vote re-applies, never beside a lock change.
    let before = Ballot {
        job: record,
        approval: current,
        votes,
        lock: read_lock(c, "FOR SHARE").await?,
    };
    let decision = match decide(&before) {
        Ok(d) => d,
        Err(refusal) => return Ok(Tx::Rollback(Err(refusal))),
    };
    if decision.approval.job_id != job {
        return Err(StoreError::Db(format!(
            "an approval decision for job {job} wrote job {}",
            decision.approval.job_id
        ))
        .into());
    }
    approval::write_approval(c, &decision.approval).await?;
    if let Some(v) = &decision.vote {
        approval::insert_vote(c, v).await?;
    }
    // Messages before the job's row: outbox first, jobs second, as everywhere.
    write_effects(c, &decision.effects).await?;
    if let Some(change) = &decision.job {
        apply_job_change(c, job, change, decision.at).await?;
        // A job that waits for people (or was just approved) is nobody's: whichever
        // replica starts it next claims it.
        if matches!(
            change,
            JobChange::Status(JobStatus::AwaitingApproval | JobStatus::Queued)
        ) {
            let stmt = cached(
                c,
                "UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE id = $1",
            )
            .await?;
            c.execute(&stmt, &[&job]).await?;
        }
    }
    Ok(Tx::Commit(Ok((before, decision))))
}

/// An approval decision's transaction, run again on a conflict; counts the attempts.
async fn decide_approval(
    c: &Object,
    job: i64,
    decide: &Decide<Ballot, ApprovalDecision, String>,
) -> PgResult<std::result::Result<Decided, String>> {
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let out = in_tx(c, || {
        attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        decide_approval_body(c, job, decide)
    })
    .await?;
    Ok(out.map(|(before, decision)| Decided {
        before,
        decision,
        attempts: attempts.load(std::sync::atomic::Ordering::Relaxed),
    }))
}

async fn insert_report(c: &tokio_postgres::Transaction<'_>, r: &DeployReport) -> PgResult<u64> {
    Ok(c.execute(
        "INSERT INTO deploy_reports (job_id, host, ok, duration_ms, log_tail, error, event_id, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        &[
            &r.job_id,
            &r.host,
            &r.ok,
            &i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
            &r.log_tail,
            &r.error,
            &r.event_id,
            &r.at,
        ],
    )
    .await?)
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<()> {
        self.run(|c| {
            Box::pin(async move {
                c.simple_query("SELECT 1").await?;
                Ok(())
            })
        })
        .await
    }

    async fn info(&self) -> Result<StoreInfo> {
        self.run(|c| {
            Box::pin(async move {
                let rows = query(
                    c,
                    "SELECT COALESCE(MAX(version), 0) FROM corral_schema",
                    &[],
                )
                .await?;
                let v: i32 = rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
                Ok(StoreInfo {
                    backend: Backend::Postgres,
                    schema_version: u32::try_from(v).unwrap_or(0),
                    known_version: MIGRATIONS.len() as u32,
                })
            })
        })
        .await
    }

    async fn lock_state(&self) -> Result<LockState> {
        self.run_shared(|c| Box::pin(read_lock(c, ""))).await
    }

    async fn change_lock(
        &self,
        decide: Decide<LockState, LockDecision, Refusal>,
    ) -> Result<LockChange> {
        self.run(move |c| Box::pin(async move { in_tx(c, || change_lock_body(c, &decide)).await }))
            .await
    }

    async fn lock_history(&self, n: usize) -> Result<Vec<LockHistoryEntry>> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.run(move |c| {
            Box::pin(async move {
                let stmt = cached(
                    c,
                    "SELECT id, at, actor, action, reason, source, forced FROM lock_history ORDER BY id DESC LIMIT $1",
                )
                .await?;
                let rows = c.query(&stmt, &[&n]).await?;
                rows.iter()
                    .map(|r| {
                        let id: i64 = r.try_get(0)?;
                        let source: String = r.try_get(5)?;
                        Ok(LockHistoryEntry {
                            at: r.try_get(1)?,
                            actor: r.try_get(2)?,
                            action: r.try_get(3)?,
                            reason: r.try_get(4)?,
                            source: typed("source", format!("lock change {id}"), &source)?,
                            forced: r.try_get(6)?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn create_job(
        &self,
        job: NewJob,
        gate: Decide<LockState, Effects, String>,
    ) -> Result<std::result::Result<JobRecord, String>> {
        self.run(move |c| {
            Box::pin(async move { in_tx(c, || create_job_body(c, &job, &gate)).await })
        })
        .await
    }

    async fn job(&self, id: i64) -> Result<Option<JobRecord>> {
        self.run(move |c| {
            Box::pin(async move { Ok(jobs_where(c, "WHERE id = $1", &[&id]).await?.pop()) })
        })
        .await
    }

    async fn jobs(&self, limit: usize) -> Result<Vec<JobRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |c| {
            Box::pin(async move { jobs_where(c, "ORDER BY id DESC LIMIT $1", &[&limit]).await })
        })
        .await
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        self.run(|c| {
            Box::pin(async move {
                jobs_where(
                    c,
                    "WHERE status IN ('queued', 'running', 'awaiting_approval') ORDER BY id",
                    &[],
                )
                .await
            })
        })
        .await
    }

    async fn set_job_status(&self, id: i64, status: JobStatus, now: i64) -> Result<()> {
        self.run(move |c| {
            Box::pin(async move {
                let stmt = cached(
                    c,
                    "UPDATE jobs SET status = $2, updated_at = $3 WHERE id = $1",
                )
                .await?;
                c.execute(&stmt, &[&id, &status.as_str(), &now]).await?;
                Ok(())
            })
        })
        .await
    }

    async fn set_job_progress(
        &self,
        id: i64,
        done: u32,
        failed: u32,
        total: u32,
        now: i64,
    ) -> Result<()> {
        self.run(move |c| {
            Box::pin(async move {
                let stmt = cached(
                    c,
                    "UPDATE jobs SET done = $2, failed = $3, total = $4, updated_at = $5 WHERE id = $1",
                )
                .await?;
                c.execute(
                    &stmt,
                    &[&id, &i64::from(done), &i64::from(failed), &i64::from(total), &now],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn finish_job(
        &self,
        id: i64,
        status: JobStatus,
        outcome: &Outcome,
        now: i64,
    ) -> Result<()> {
        let text = serde_json::to_string(outcome)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode outcome: {e}")))?;
        self.run(move |c| {
            Box::pin(async move {
                let stmt = cached(
                    c,
                    "UPDATE jobs SET status = $2, outcome = $3, updated_at = $4 WHERE id = $1",
                )
                .await?;
                c.execute(&stmt, &[&id, &status.as_str(), &text, &now])
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn change_job(
        &self,
        id: i64,
        change: JobChange,
        now: i64,
        effects: Effects,
    ) -> Result<()> {
        self.run(move |c| {
            Box::pin(async move {
                in_tx(c, || async {
                    // Messages first, the job's row second: rows are locked outbox
                    // first everywhere (a settle notes a failure on its job).
                    write_effects(c, &effects).await?;
                    apply_job_change(c, id, &change, now).await?;
                    Ok(Tx::Commit(()))
                })
                .await
            })
        })
        .await
    }

    async fn change_leased_job(
        &self,
        id: i64,
        owner: &str,
        change: JobChange,
        now: i64,
        effects: Effects,
    ) -> Result<bool> {
        let owner = owner.to_string();
        let guard = format!(
            "SELECT 1 FROM jobs WHERE id = $1 AND {} FOR UPDATE",
            held_condition("$2")
        );
        self.run(move |c| {
            Box::pin(async move {
                in_tx(c, || async {
                    // Messages first, the job's row second, as in `change_job`; the row
                    // lock is held to the commit, so a replica ending the job meanwhile
                    // waits and then finds it finished (or this one finds it ended).
                    write_effects(c, &effects).await?;
                    let stmt = cached(c, &guard).await?;
                    if c.query_opt(&stmt, &[&id, &owner]).await?.is_none() {
                        return Ok(Tx::Rollback(false));
                    }
                    apply_job_change(c, id, &change, now).await?;
                    Ok(Tx::Commit(true))
                })
                .await
            })
        })
        .await
    }

    async fn enqueue(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>> {
        self.run(move |c| {
            Box::pin(async move {
                in_tx(c, || async {
                    Ok(Tx::Commit(outbox::insert(c, &messages).await?))
                })
                .await
            })
        })
        .await
    }

    async fn outbox_work(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxRow>> {
        self.run(move |c| Box::pin(outbox::work(c, now_ms, limit)))
            .await
    }

    async fn outbox_claim(
        &self,
        id: i64,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<OutboxRow>> {
        let owner = owner.to_string();
        self.run(move |c| {
            Box::pin(async move {
                in_tx(c, || async {
                    Ok(Tx::Commit(
                        outbox::claim(c, id, &owner, now_ms, lease_ms).await?,
                    ))
                })
                .await
            })
        })
        .await
    }

    async fn outbox_settle(
        &self,
        id: i64,
        owner: &str,
        settle: Settle,
        _now_ms: i64,
    ) -> Result<()> {
        let owner = owner.to_string();
        self.run(move |c| {
            Box::pin(async move {
                in_tx(c, || async {
                    outbox::settle(c, id, &owner, &settle).await?;
                    Ok(Tx::Commit(()))
                })
                .await
            })
        })
        .await
    }

    async fn outbox_get(&self, key: &str) -> Result<Option<OutboxRow>> {
        let key = key.to_string();
        self.run(move |c| Box::pin(async move { outbox::get(c, &key).await }))
            .await
    }

    async fn outbox_rows(&self, job: Option<i64>, limit: usize) -> Result<Vec<OutboxRow>> {
        self.run(move |c| Box::pin(outbox::rows(c, job, limit)))
            .await
    }

    async fn outbox_channel(&self, channel: &str, limit: usize) -> Result<Vec<OutboxRow>> {
        let channel = channel.to_string();
        self.run(move |c| Box::pin(async move { outbox::channel(c, &channel, limit).await }))
            .await
    }

    async fn outbox_stats(&self) -> Result<OutboxStats> {
        self.run(|c| Box::pin(outbox::stats(c))).await
    }

    async fn pacing(&self) -> Result<Vec<(String, i64)>> {
        self.run(|c| Box::pin(outbox::pacing(c))).await
    }

    async fn push_pacing(&self, scope: &str, not_before_ms: i64) -> Result<()> {
        let scope = scope.to_string();
        self.run(move |c| {
            Box::pin(async move { outbox::push_pacing(c, &scope, not_before_ms).await })
        })
        .await
    }

    async fn take_pacing(
        &self,
        scopes: Vec<(String, i64)>,
        now_ms: i64,
    ) -> Result<std::result::Result<(), i64>> {
        self.run(move |c| {
            Box::pin(async move {
                in_tx(c, || async {
                    Ok(match outbox::take_pacing(c, &scopes, now_ms).await? {
                        Ok(()) => Tx::Commit(Ok(())),
                        Err(t) => Tx::Rollback(Err(t)),
                    })
                })
                .await
            })
        })
        .await
    }

    async fn set_message(&self, job: i64, channel: &str, ts: &str) -> Result<()> {
        let (channel, ts) = (channel.to_string(), ts.to_string());
        self.run(move |c| Box::pin(async move { outbox::set_root(c, job, &channel, &ts).await }))
            .await
    }

    async fn messages(&self, job: i64) -> Result<Vec<(String, String)>> {
        self.run(move |c| Box::pin(outbox::roots(c, job))).await
    }

    async fn decide_approval(
        &self,
        job: i64,
        decide: Decide<Ballot, ApprovalDecision, String>,
    ) -> Result<std::result::Result<Decided, String>> {
        self.run(move |c| Box::pin(async move { decide_approval(c, job, &decide).await }))
            .await
    }

    async fn approval(&self, job: i64) -> Result<Option<(ApprovalRecord, Vec<Vote>)>> {
        self.run(move |c| Box::pin(async move { approval::approval(c, job).await }))
            .await
    }

    async fn pending_approvals(&self) -> Result<Vec<ApprovalRecord>> {
        self.run(|c| Box::pin(async move { approval::pending(c).await }))
            .await
    }

    async fn audit(&self, e: &AuditEntry) -> Result<()> {
        let e = e.clone();
        self.run(move |c| Box::pin(async move { insert_audit(c, &e).await }))
            .await
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |c| {
            Box::pin(async move {
                let stmt = cached(
                    c,
                    "SELECT at, actor, action, detail, source FROM audit ORDER BY id DESC LIMIT $1",
                )
                .await?;
                c.query(&stmt, &[&limit])
                    .await?
                    .iter()
                    .map(audit_row)
                    .collect()
            })
        })
        .await
    }

    async fn audit_query(
        &self,
        since: i64,
        actor: Option<String>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |c| {
            Box::pin(async move {
                let stmt = cached(
                    c,
                    "SELECT at, actor, action, detail, source FROM audit
                     WHERE at >= $1 AND ($2::text IS NULL OR actor = $2) ORDER BY id DESC LIMIT $3",
                )
                .await?;
                c.query(&stmt, &[&since, &actor, &limit])
                    .await?
                    .iter()
                    .map(audit_row)
                    .collect()
            })
        })
        .await
    }

    async fn first_delivery(&self, key: &str, now: i64) -> Result<bool> {
        let key = key.to_string();
        self.run_shared(move |c| {
            Box::pin(async move {
                // The primary key decides: of two replicas inserting the same key at
                // once, the second waits for the first and inserts nothing.
                let insert = cached(
                    c,
                    "INSERT INTO seen_events (event_id, at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .await?;
                Ok(c.execute(&insert, &[&key, &now]).await? == 1)
            })
        })
        .await
    }

    async fn claim_firing(
        &self,
        claim: FiringClaim,
        decide: Decide<LockState, Effects, String>,
    ) -> Result<Claimed> {
        self.run(move |c| {
            Box::pin(async move { in_tx(c, || claim_firing_body(c, &claim, &decide)).await })
        })
        .await
    }

    async fn latest_firing(&self, schedule: &str) -> Result<Option<FiringClaim>> {
        let schedule = schedule.to_string();
        self.run(move |c| {
            Box::pin(async move {
                let stmt = cached(
                    c,
                    "SELECT key, schedule, at, outcome, claimed_at FROM firings WHERE schedule = $1
                     ORDER BY at DESC, outcome ASC, key DESC LIMIT 1",
                )
                .await?;
                let row = c.query_opt(&stmt, &[&schedule]).await?;
                row.map(|r| {
                    Ok(FiringClaim {
                        key: r.try_get(0)?,
                        schedule: r.try_get(1)?,
                        at: r.try_get(2)?,
                        outcome: r.try_get(3)?,
                        claimed_at: r.try_get(4)?,
                    })
                })
                .transpose()
            })
        })
        .await
    }

    async fn add_deploy_report(&self, r: &DeployReport) -> Result<bool> {
        let r = r.clone();
        self.run(move |c| {
            Box::pin(async move {
                let stmt = cached(
                    c,
                    "INSERT INTO deploy_reports (job_id, host, ok, duration_ms, log_tail, error, event_id, at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                )
                .await?;
                let inserted = c
                    .execute(
                        &stmt,
                        &[
                            &r.job_id,
                            &r.host,
                            &r.ok,
                            &i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
                            &r.log_tail,
                            &r.error,
                            &r.event_id,
                            &r.at,
                        ],
                    )
                    .await?;
                Ok(inserted == 1)
            })
        })
        .await
    }

    async fn expect_deploy_hosts(&self, job: i64, hosts: &[String]) -> Result<()> {
        let hosts = hosts.to_vec();
        self.run(move |c| {
            Box::pin(async move {
                // One statement: the whole set or nothing.
                let stmt = cached(
                    c,
                    "INSERT INTO deploy_hosts (job_id, host) SELECT $1, h FROM unnest($2::text[]) AS h
                     ON CONFLICT DO NOTHING",
                )
                .await?;
                c.execute(&stmt, &[&job, &hosts]).await?;
                Ok(())
            })
        })
        .await
    }

    async fn deploy_host_expected(&self, job: i64, host: &str) -> Result<Option<bool>> {
        let host = host.to_string();
        self.run(move |c| {
            Box::pin(async move {
                let stmt = cached(
                    c,
                    "SELECT count(*), coalesce(bool_or(host = $2), false) FROM deploy_hosts WHERE job_id = $1",
                )
                .await?;
                let row = c.query_one(&stmt, &[&job, &host]).await?;
                let n: i64 = row.try_get(0)?;
                let member: bool = row.try_get(1)?;
                Ok((n > 0).then_some(member))
            })
        })
        .await
    }

    async fn deploy_reports(&self, job: i64) -> Result<Vec<DeployReport>> {
        self.run(move |c| {
            Box::pin(async move {
                let stmt = cached(
                    c,
                    "SELECT job_id, host, ok, duration_ms, log_tail, error, event_id, at
                     FROM deploy_reports WHERE job_id = $1 ORDER BY at, host COLLATE \"C\"",
                )
                .await?;
                c.query(&stmt, &[&job])
                    .await?
                    .iter()
                    .map(|r| {
                        Ok(DeployReport {
                            job_id: r.try_get(0)?,
                            host: r.try_get(1)?,
                            ok: r.try_get(2)?,
                            duration_ms: u64::try_from(r.try_get::<_, i64>(3)?).unwrap_or(0),
                            log_tail: r.try_get(4)?,
                            error: r.try_get(5)?,
                            event_id: r.try_get(6)?,
                            at: r.try_get(7)?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn heartbeat(&self, r: &Replica, now_ms: i64, lease_until_ms: i64) -> Result<u64> {
        let r = r.clone();
        self.run(move |c| {
            Box::pin(async move { replicas::heartbeat(c, &r, now_ms, lease_until_ms).await })
        })
        .await
    }

    async fn replicas(&self, since_ms: i64) -> Result<Vec<Replica>> {
        self.run(move |c| Box::pin(replicas::replicas(c, since_ms)))
            .await
    }

    async fn claim_job(&self, id: i64, owner: &str, lease_until_ms: i64) -> Result<bool> {
        let owner = owner.to_string();
        self.run(move |c| {
            Box::pin(async move { replicas::claim_job(c, id, &owner, lease_until_ms).await })
        })
        .await
    }

    async fn expired_jobs(&self, now_ms: i64, lease_ms: i64) -> Result<Vec<JobRecord>> {
        let tail = format!(
            "WHERE {} ORDER BY id LIMIT 100",
            expired_condition("$1", lease_ms.max(0))
        );
        self.run(move |c| Box::pin(async move { jobs_where(c, &tail, &[&now_ms]).await }))
            .await
    }

    async fn interrupt_job(
        &self,
        id: i64,
        now_ms: i64,
        lease_ms: i64,
        outcome: Outcome,
        effects: Effects,
    ) -> Result<bool> {
        let text = serde_json::to_string(&outcome)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode outcome: {e}")))?;
        let sql = format!(
            "UPDATE jobs SET status = 'interrupted', outcome = $2, updated_at = $3
             WHERE id = $4 AND {}",
            expired_condition("$1", lease_ms.max(0))
        );
        let now_s = now_ms.div_euclid(1000);
        self.run(move |c| {
            Box::pin(async move {
                in_tx(c, || async {
                    // Messages first, the job's row second, as everywhere (a settle locks
                    // an outbox row, then notes a failure on its job); rolled back if
                    // another replica was first or the lease was renewed.
                    write_effects(c, &effects).await?;
                    let stmt = cached(c, &sql).await?;
                    let n = c.execute(&stmt, &[&now_ms, &text, &now_s, &id]).await?;
                    Ok(if n == 1 {
                        Tx::Commit(true)
                    } else {
                        Tx::Rollback(false)
                    })
                })
                .await
            })
        })
        .await
    }

    async fn take_rate(
        &self,
        key: &str,
        now_ms: i64,
        interval_ms: i64,
        burst: u32,
    ) -> Result<Admission> {
        let key = key.to_string();
        self.run_shared(move |c| {
            Box::pin(async move { replicas::take_rate(c, &key, now_ms, interval_ms, burst).await })
        })
        .await
    }

    async fn prune(&self, before_ms: i64, seen_before: i64) -> Result<Pruned> {
        self.run(move |c| Box::pin(replicas::prune(c, before_ms, seen_before)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> std::result::Result<Target, String> {
        Target::parse(url)
    }

    #[test]
    fn url_forms() {
        let t = parse("postgres://corral:s3cret@db.example:6432/corral").unwrap();
        assert_eq!(t.config.get_user(), Some("corral"));
        assert_eq!(t.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(t.config.get_dbname(), Some("corral"));
        assert_eq!(t.config.get_ports(), &[6432]);
        assert_eq!(t.ssl, SslMode::Prefer);
        assert_eq!(t.config.get_application_name(), Some("corral"));
        let t = parse("postgresql://u@h/d?sslmode=verify-full&application_name=bot").unwrap();
        assert_eq!(t.ssl, SslMode::VerifyFull);
        assert_eq!(t.config.get_application_name(), Some("bot"));
        for (mode, want) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
        ] {
            assert_eq!(
                parse(&format!("postgres://u@h/d?sslmode={mode}"))
                    .unwrap()
                    .ssl,
                want
            );
        }
        // libpq: a root certificate turns `require` into a checked chain.
        let t = parse("postgres://u@h/d?sslmode=require&sslrootcert=%2Fetc%2Fca.pem").unwrap();
        assert_eq!(t.ssl, SslMode::VerifyCa);
        assert_eq!(t.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        // A password with reserved characters, percent-encoded.
        let t = parse("postgres://u:p%40ss%3Aw@h/d").unwrap();
        assert_eq!(t.config.get_password(), Some(&b"p@ss:w"[..]));
    }

    #[test]
    fn bad_urls_are_refused_without_the_password() {
        for (url, needle) in [
            (
                "postgres://u:hunter2@h/d?sslmode=verify",
                "sslmode=\"verify\"",
            ),
            ("postgres://u:hunter2@h:notaport/d", "invalid"),
            ("postgres://u:hunter2@h/d?bogus=1", "bogus"),
            ("mysql://u:hunter2@h/d", "postgres://"),
            ("postgres://u:hunter2@/d", "no host"),
        ] {
            let e = parse(url).err().unwrap_or_else(|| panic!("{url} accepted"));
            assert!(e.contains(needle), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
    }

    #[test]
    fn tls_configs_build_for_every_mode() {
        for mode in ["prefer", "require", "verify-full", "verify-ca"] {
            let t = parse(&format!("postgres://u@h/d?sslmode={mode}")).unwrap();
            // verify-* needs roots; a machine without any says so instead of building.
            match tls_config(&t) {
                Ok(_) => {}
                Err(e) => assert!(e.contains("root"), "{mode}: {e}"),
            }
        }
        let t =
            parse("postgres://u@h/d?sslmode=verify-full&sslrootcert=%2Fnonexistent.pem").unwrap();
        let e = tls_config(&t).err().unwrap();
        assert!(e.contains("/nonexistent.pem"), "{e}");
    }
}
