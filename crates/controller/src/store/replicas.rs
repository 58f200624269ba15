//! Controller replicas in the store (issue 15): which replicas are alive,
//! which one holds each host's agent channel, and the notifications that
//! carry work and news between them (PostgreSQL `LISTEN/NOTIFY`; on SQLite
//! there is one controller and nothing to tell).
//!
//! Invariants:
//! - a VM's `replica` is written by the replica that registered its channel
//!   and cleared only by that replica (`release_vm`), so a late close on the
//!   old replica never clears a newer connection's mark;
//! - a replica is alive while its `seen_ms` is recent ([`REPLICA_ALIVE`]):
//!   channels held by one that died (kill -9) stop counting without anybody
//!   clearing them, and their agents mark their new replica when they return.

use std::collections::HashSet;
use std::time::Duration;

use super::{Backend, Store, StoreError, key};

/// The notification channel every replica listens on.
pub const CHANNEL: &str = "netwatch";

/// What a replica says in [`CHANNEL`] when an operation ended there (the
/// others wake the requests waiting on operations).
pub const OPERATION_ENDED: &str = r#"{"kind":"operationEnded"}"#;

/// The longest payload PostgreSQL's `NOTIFY` takes, less a margin.
pub const MAX_NOTIFY_PAYLOAD: usize = 7_900;

/// How often a replica says it is alive.
pub const REPLICA_BEAT: Duration = Duration::from_secs(2);

/// A replica not heard from for this long is gone, and so are its channels.
pub const REPLICA_ALIVE: Duration = Duration::from_secs(10);

impl Store {
    /// Says replica `id` is alive at `now_ms` (draining since `draining_ms`).
    pub async fn beat_replica(
        &self,
        id: &str,
        started_ms: i64,
        now_ms: i64,
        draining_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO replicas (id, started_ms, seen_ms, draining_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET seen_ms = $3, draining_ms = $4",
        )
        .bind(id)
        .bind(started_ms)
        .bind(now_ms)
        .bind(draining_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets replica `id` (it stopped cleanly): its row and its marks on
    /// VMs, and the rows of replicas gone for more than an hour.
    pub async fn forget_replica(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE vms SET replica = NULL WHERE replica = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM replicas WHERE id = $1 OR seen_ms < $2")
            .bind(id)
            .bind(now_ms.saturating_sub(3_600_000))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks VM `vm`'s agent as connected to replica `replica`.
    pub async fn claim_vm(&self, vm: &str, replica: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE vms SET replica = $1 WHERE key = $2")
            .bind(replica)
            .bind(key(vm))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// VM `vm`'s channel on `replica` ended, its agent last heard from at
    /// `seen_ms`; nothing changes when another replica holds it by now.
    /// Whether it was `replica`'s.
    pub async fn release_vm(&self, vm: &str, replica: &str, seen_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE vms SET replica = NULL, last_seen_ms = $1 WHERE key = $2 AND replica = $3")
            .bind(seen_ms)
            .bind(key(vm))
            .bind(replica)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The live replica holding VM `vm`'s channel, if any.
    pub async fn replica_of(&self, vm: &str, alive_since_ms: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT v.replica FROM vms v JOIN replicas r ON r.id = v.replica
             WHERE v.key = $1 AND r.seen_ms >= $2",
        )
        .bind(key(vm))
        .bind(alive_since_ms)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The VMs (keys) whose channel a live replica other than `except` holds.
    pub async fn connected_elsewhere(&self, except: &str, alive_since_ms: i64) -> Result<HashSet<String>, StoreError> {
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT v.key FROM vms v JOIN replicas r ON r.id = v.replica
             WHERE r.id <> $1 AND r.seen_ms >= $2",
        )
        .bind(except)
        .bind(alive_since_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(keys.into_iter().collect())
    }

    /// Sends `payload` to every replica listening on [`CHANNEL`] (this one
    /// included); nothing on SQLite.
    pub async fn notify(&self, payload: &str) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Where [`CHANNEL`]'s notifications are heard: a connection of its own
    /// to the PostgreSQL this store uses, listening; `None` on SQLite.
    pub async fn listen(&self) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        let Some(url) = &self.postgres_url else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        // A lost connection is ours to notice: whatever was said meanwhile is
        // lost, and the caller catches up.
        listener.eager_reconnect(false);
        listener.listen(CHANNEL).await?;
        Ok(Some(listener))
    }

    /// An operation ended on another replica: requests waiting here look again.
    pub fn operation_ended_elsewhere(&self) {
        self.operations_ended.send_modify(|count| *count += 1);
    }

    /// From now on requests waiting for an operation stop waiting and answer
    /// with what there is (this replica drains: they answer with a monitor
    /// that any replica serves).
    pub fn stop_waiting(&self) {
        self.stop_waiting.store(true, std::sync::atomic::Ordering::Relaxed);
        self.operations_ended.send_modify(|count| *count += 1);
    }

    /// Whether [`Store::stop_waiting`] was called.
    pub(super) fn waiting_stopped(&self) -> bool {
        self.stop_waiting.load(std::sync::atomic::Ordering::Relaxed)
    }
}
