//! One pooled PostgreSQL connection shared by concurrent calls that are a single
//! statement outside any transaction: the lock read behind `/release status`, the command
//! limit's upsert, the event-dedupe insert. tokio-postgres pipelines what several callers
//! send on one connection at once (one write and one read of the socket for the lot, one
//! wake-up of one database backend), where a checkout per call costs each request a pool
//! round, a backend of its own and its own context switches. Each statement still ends in
//! its own Sync, so each is its own implicit transaction and one failing does not touch
//! the others.
//!
//! A connection that broke or did not answer in time is forgotten and never returned to
//! the pool ([`Slot::forget`]); the next call takes a fresh one from the pool.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use deadpool_postgres::{Object, Pool, PoolError};

/// A pooled connection, shared; back to the pool when the last user drops it, unless it
/// was marked broken (then closed).
pub(super) struct Shared {
    conn: Option<Object>,
    broken: AtomicBool,
}

impl Shared {
    /// The connection (present until the last user drops the `Shared`).
    pub(super) fn conn(&self) -> Option<&Object> {
        self.conn.as_ref()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.broken.load(Ordering::SeqCst)
            && let Some(c) = self.conn.take()
        {
            // Detached from the pool: dropping it closes the connection.
            drop(Object::take(c));
        }
    }
}

/// Where the shared connection lives between calls.
#[derive(Default)]
pub(super) struct Slot(Mutex<Option<Arc<Shared>>>);

impl Slot {
    fn current(&self) -> Option<Arc<Shared>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The shared connection, taking one from `pool` when there is none.
    pub(super) async fn get(&self, pool: &Pool) -> Result<Arc<Shared>, PoolError> {
        if let Some(s) = self.current() {
            return Ok(s);
        }
        let fresh = Arc::new(Shared {
            conn: Some(pool.get().await?),
            broken: AtomicBool::new(false),
        });
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Another caller may have put one there meanwhile: use it (ours goes back).
        Ok(slot.get_or_insert_with(|| fresh.clone()).clone())
    }

    /// Marks `s` broken and takes it out of the slot: calls under way on it end as they
    /// will, the next call takes a fresh connection, and it is closed, not pooled.
    pub(super) fn forget(&self, s: &Arc<Shared>) {
        s.broken.store(true, Ordering::SeqCst);
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, s)) {
            *slot = None;
        }
    }
}
