//! Scale sets in the store: the sets, their instances (which host is which
//! instance id, for good) and their reusable enrollment keys.
//!
//! Invariants:
//! - an instance id is given once per scale set (`next_instance` only grows),
//!   so a capture scoped to `"3"` never lands on a host that joined later;
//! - a host (its agent's `host_id`) has one instance per scale set: joining
//!   again gives the same id and spends no use of the key;
//! - a key's uses are counted in the transaction that gives out the instance,
//!   so a key capped to N hosts admits N, however many join at once.

use super::{Store, StoreError, key};

/// A scale set.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScaleSetRecord {
    pub id: String,
    pub subscription: String,
    pub location: String,
    /// ARM tags, a JSON object.
    pub tags_json: String,
    /// The id the next new host gets.
    pub next_instance: i64,
    pub created_ms: i64,
}

/// A host of a scale set.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScaleSetInstanceRecord {
    /// The instance's VM key (`…/virtualmachinescalesets/{name}/virtualmachines/{n}`).
    pub vm_key: String,
    pub instance: i64,
    pub created_ms: i64,
}

/// A reusable enrollment key of a scale set: its digest, never the key.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScaleSetKeyRecord {
    pub digest: String,
    /// The scale set's key (its lower-case id).
    pub scale_set_key: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub revoked_ms: Option<i64>,
}

impl ScaleSetKeyRecord {
    /// Why the key lets no host in at `now_ms`, if it does not. (Whether it
    /// admits one more *new* host is decided as the host joins.)
    pub fn refusal(&self, now_ms: i64) -> Option<&'static str> {
        if self.revoked_ms.is_some() {
            Some("was revoked (`vmss extension delete`)")
        } else if self.expires_ms <= now_ms {
            Some("has expired")
        } else {
            None
        }
    }
}

/// What joining a scale set gave a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    pub instance: u32,
    /// False: the host had joined before and keeps its instance.
    pub new: bool,
}

const SCALE_SET_COLUMNS: &str =
    "SELECT id, subscription, location, tags_json, next_instance, created_ms FROM scale_sets";

impl Store {
    /// Creates the scale set unless it exists; the stored one either way.
    pub async fn ensure_scale_set(&self, set: &ScaleSetRecord) -> Result<ScaleSetRecord, StoreError> {
        sqlx::query(
            "INSERT INTO scale_sets (key, id, subscription, location, tags_json, next_instance, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key(&set.id))
        .bind(&set.id)
        .bind(&set.subscription)
        .bind(&set.location)
        .bind(&set.tags_json)
        .bind(set.next_instance)
        .bind(set.created_ms)
        .execute(&self.pool)
        .await?;
        self.get_scale_set(&set.id)
            .await?
            .ok_or_else(|| StoreError::Stale(format!("scale set {}", set.id)))
    }

    /// Sets the tags of a scale set; false when there is none.
    pub async fn set_scale_set_tags(&self, id: &str, tags_json: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE scale_sets SET tags_json = $1 WHERE key = $2")
            .bind(tags_json)
            .bind(key(id))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn get_scale_set(&self, id: &str) -> Result<Option<ScaleSetRecord>, StoreError> {
        let sql = format!("{SCALE_SET_COLUMNS} WHERE key = $1");
        let row = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(key(id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    /// Scale sets of a subscription, by id.
    pub async fn list_scale_sets(&self, subscription: &str) -> Result<Vec<ScaleSetRecord>, StoreError> {
        let sql = format!("{SCALE_SET_COLUMNS} WHERE lower(subscription) = $1 ORDER BY key");
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(key(subscription))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// The instances of a scale set, by instance id.
    pub async fn scale_set_instances(&self, id: &str) -> Result<Vec<ScaleSetInstanceRecord>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT vm_key, instance, created_ms FROM scale_set_instances WHERE scale_set_key = $1 ORDER BY instance",
        )
        .bind(key(id))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Joins host `host_key` to scale set `id`: its instance if it has one
    /// (no use of the key spent), else the next id, spending one use of the
    /// key `digest`, all in one transaction. `Ok(None)` when the host is new
    /// and the key lets no one in any more (used up, revoked or expired
    /// meanwhile).
    pub async fn join_scale_set(
        &self,
        id: &str,
        host_key: &str,
        digest: &str,
        now_ms: i64,
    ) -> Result<Option<Joined>, StoreError> {
        let set_key = key(id);
        let mut tx = self.pool.begin().await?;
        // Write first: it takes SQLite's write lock (a transaction that read
        // first could not upgrade past another writer's commit: SQLITE_BUSY)
        // and PostgreSQL's row lock, so joins to one scale set take turns.
        let set = sqlx::query("UPDATE scale_sets SET next_instance = next_instance WHERE key = $1")
            .bind(&set_key)
            .execute(&mut *tx)
            .await?;
        if set.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT instance FROM scale_set_instances WHERE scale_set_key = $1 AND host_key = $2")
                .bind(&set_key)
                .bind(host_key)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(instance) = existing {
            tx.commit().await?;
            let instance = u32::try_from(instance).map_err(|_| StoreError::Stale(format!("instance {instance}")))?;
            return Ok(Some(Joined { instance, new: false }));
        }
        let spent = sqlx::query(
            "UPDATE scale_set_keys SET uses = uses + 1
             WHERE digest = $1 AND scale_set_key = $2 AND revoked_ms IS NULL AND expires_ms > $3
               AND (max_uses IS NULL OR uses < max_uses)",
        )
        .bind(digest)
        .bind(&set_key)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if spent.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let instance: i64 = sqlx::query_scalar(
            "UPDATE scale_sets SET next_instance = next_instance + 1 WHERE key = $1 RETURNING next_instance - 1",
        )
        .bind(&set_key)
        .fetch_one(&mut *tx)
        .await?;
        let number = u32::try_from(instance).map_err(|_| StoreError::Stale(format!("instance {instance}")))?;
        let vm_key = key(&format!("{id}/virtualMachines/{number}"));
        sqlx::query(
            "INSERT INTO scale_set_instances (vm_key, scale_set_key, instance, host_key, created_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&vm_key)
        .bind(&set_key)
        .bind(instance)
        .bind(host_key)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(Joined {
            instance: number,
            new: true,
        }))
    }

    pub async fn insert_scale_set_key(&self, record: &ScaleSetKeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO scale_set_keys (digest, scale_set_key, created_ms, expires_ms, max_uses, uses, revoked_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&record.digest)
        .bind(&record.scale_set_key)
        .bind(record.created_ms)
        .bind(record.expires_ms)
        .bind(record.max_uses)
        .bind(record.uses)
        .bind(record.revoked_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The scale-set key with `digest`, usable or not.
    pub async fn get_scale_set_key(&self, digest: &str) -> Result<Option<ScaleSetKeyRecord>, StoreError> {
        let row = sqlx::query_as(
            "SELECT digest, scale_set_key, created_ms, expires_ms, max_uses, uses, revoked_ms
             FROM scale_set_keys WHERE digest = $1",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// The keys of scale set `id`, oldest first.
    pub async fn scale_set_keys(&self, id: &str) -> Result<Vec<ScaleSetKeyRecord>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT digest, scale_set_key, created_ms, expires_ms, max_uses, uses, revoked_ms
             FROM scale_set_keys WHERE scale_set_key = $1 ORDER BY created_ms, digest",
        )
        .bind(key(id))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Revokes every key of scale set `id` not yet revoked; how many.
    pub async fn revoke_scale_set_keys(&self, id: &str, now_ms: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query("UPDATE scale_set_keys SET revoked_ms = $1 WHERE scale_set_key = $2 AND revoked_ms IS NULL")
                .bind(now_ms)
                .bind(key(id))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}
