//! `corral migrate`: everything a SQLite store holds, copied into an empty PostgreSQL
//! one, so a team moving to several replicas keeps its lock, history, audit log and jobs
//! (with their Slack message ids: the bot goes on editing the same threads).
//!
//! The source is read in one read transaction without being changed (it is not even
//! migrated); every row is parsed as the store would read it, so a corrupt row stops the
//! copy before anything is written. The target is written in one transaction and must be
//! empty; ids are kept, and new rows continue after them.

use super::dump::CopyReport;
use super::{Backend, Settings};

/// Copies the SQLite store at `from` into the empty PostgreSQL store at `to` (migrating
/// the target's schema first). Errors name the side at fault and never a password.
pub async fn copy(
    from: &str,
    to: &str,
    settings: &Settings,
) -> std::result::Result<CopyReport, String> {
    let shown_to = crate::text::redact_url(to);
    match (Backend::of(from)?, Backend::of(to)?) {
        (Backend::Sqlite, Backend::Postgres) => {}
        (a, b) => {
            return Err(format!(
                "copies from SQLite to PostgreSQL only (--from sqlite://PATH --to postgres://…), not from {} to {}",
                a.name(),
                b.name()
            ));
        }
    }
    let owned = from.to_string();
    let dump = tokio::task::spawn_blocking(move || super::sqlite::dump(&owned))
        .await
        .map_err(|e| format!("reading {from}: {e}"))?
        .map_err(|e| format!("reading {from}: {e}"))?;
    let target = super::PostgresStore::open(to, settings)
        .await
        .map_err(|e| format!("{shown_to}: {e}"))?;
    target
        .load(&dump)
        .await
        .map_err(|e| format!("writing {shown_to}: {e}"))
}
