//! The PostgreSQL side's error inside a call and its prepared-statement cache, shared by
//! the store (`postgres.rs`) and its outbox (`pg_outbox.rs`).

use super::StoreError;
use deadpool_postgres::GenericClient;

/// A failure inside a call: the driver's error (kept whole so conflicts can be told
/// apart and retried) or one of the store's own.
pub(super) enum PgError {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Db(e)
    }
}

impl From<StoreError> for PgError {
    fn from(e: StoreError) -> Self {
        PgError::Store(e)
    }
}

pub(super) type PgResult<T> = std::result::Result<T, PgError>;

/// A statement prepared once per connection and reused.
pub(super) async fn cached(
    c: &impl GenericClient,
    sql: &str,
) -> std::result::Result<tokio_postgres::Statement, tokio_postgres::Error> {
    c.prepare_cached(sql).await
}
