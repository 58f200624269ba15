//! Captures triggered by alerts in the store (issue 16): flight recorders
//! and what each host says of its own, triggers (found by their webhook
//! secret's digest), and the captures triggers started.
//!
//! Invariants:
//! - one firing per (trigger, alert, host): the same alert delivered again
//!   starts nothing (the primary key, checked in the firing's transaction);
//! - a trigger's firings take turns (each bumps the trigger's `version`
//!   first, a row lock on PostgreSQL and the write lock on SQLite), so its
//!   cooldown, concurrency and rate guards count every firing before it,
//!   across replicas.

use super::{Store, StoreError, key};

/// A flight recorder.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RecorderRecord {
    pub id: String,
    /// The VM or scale set it records on.
    pub target_key: String,
    /// The validated resource, as a PUT of it would send it (`FlightRecorder`).
    pub spec_json: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What a host's agent last said of its recorder.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RecorderStatusRecord {
    pub vm_key: String,
    pub status_json: String,
    pub updated_ms: i64,
}

/// A trigger.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TriggerRecord {
    pub id: String,
    /// Its properties as echoed (`TriggerProperties`, no secret).
    pub spec_json: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// The guards of a firing (the trigger's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guards {
    pub cooldown_ms: i64,
    pub max_concurrent: i64,
    pub max_per_hour: i64,
}

/// What a firing for one host came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Go on: create the capture (its key is recorded).
    Claimed,
    /// This alert started a capture on this host already: that one.
    Duplicate { capture_key: String },
    /// The trigger captured on this host within its cooldown: not before `until_ms`.
    Cooldown { until_ms: i64 },
    /// The trigger has this many captures running, its most.
    Concurrency { running: i64 },
    /// The trigger started this many captures in the last hour, its most.
    RateLimit { started: i64 },
}

const HOUR_MS: i64 = 3_600_000;

impl Store {
    // ---- flight recorders ----

    /// Creates or replaces a flight recorder.
    pub async fn put_recorder(&self, watcher_id: &str, r: &RecorderRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO flight_recorders (key, id, watcher_key, target_key, spec_json, created_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (key) DO UPDATE SET id = $2, target_key = $4, spec_json = $5, updated_ms = $7",
        )
        .bind(key(&r.id))
        .bind(&r.id)
        .bind(key(watcher_id))
        .bind(&r.target_key)
        .bind(&r.spec_json)
        .bind(r.created_ms)
        .bind(r.updated_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_recorder(&self, id: &str) -> Result<Option<RecorderRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, target_key, spec_json, created_ms, updated_ms FROM flight_recorders WHERE key = $1",
        )
        .bind(key(id))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The flight recorders under a watcher, by id.
    pub async fn list_recorders(&self, watcher_id: &str) -> Result<Vec<RecorderRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, target_key, spec_json, created_ms, updated_ms FROM flight_recorders
             WHERE watcher_key = $1 ORDER BY key",
        )
        .bind(key(watcher_id))
        .fetch_all(&self.pool)
        .await?)
    }

    /// The recorders on any of `targets` (a VM and its scale set), newest first.
    pub async fn recorders_on(&self, targets: &[String]) -> Result<Vec<RecorderRecord>, StoreError> {
        let mut found = Vec::new();
        for target in targets {
            let rows: Vec<RecorderRecord> = sqlx::query_as(
                "SELECT id, target_key, spec_json, created_ms, updated_ms FROM flight_recorders WHERE target_key = $1",
            )
            .bind(key(target))
            .fetch_all(&self.pool)
            .await?;
            found.extend(rows);
        }
        found.sort_by_key(|record| std::cmp::Reverse(record.updated_ms));
        Ok(found)
    }

    /// Deletes a flight recorder; whether it existed.
    pub async fn delete_recorder(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM flight_recorders WHERE key = $1")
            .bind(key(id))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Keeps what a host's agent said of its recorder.
    pub async fn put_recorder_status(&self, vm_id: &str, status_json: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO recorder_status (vm_key, status_json, updated_ms) VALUES ($1, $2, $3)
             ON CONFLICT (vm_key) DO UPDATE SET status_json = $2, updated_ms = $3",
        )
        .bind(key(vm_id))
        .bind(status_json)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn recorder_status(&self, vm_id: &str) -> Result<Option<RecorderStatusRecord>, StoreError> {
        Ok(
            sqlx::query_as("SELECT vm_key, status_json, updated_ms FROM recorder_status WHERE vm_key = $1")
                .bind(key(vm_id))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    // ---- triggers ----

    /// Creates or replaces a trigger; `secret_digest` replaces the stored
    /// one when given. `Ok(false)`: the digest is another trigger's.
    pub async fn put_trigger(
        &self,
        watcher_id: &str,
        t: &TriggerRecord,
        secret_digest: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(digest) = secret_digest {
            let taken: Option<(String,)> = sqlx::query_as("SELECT key FROM triggers WHERE secret_digest = $1")
                .bind(digest)
                .fetch_optional(&mut *tx)
                .await?;
            if taken.is_some_and(|(owner,)| owner != key(&t.id)) {
                return Ok(false);
            }
        }
        let exists: Option<(String,)> = sqlx::query_as("SELECT key FROM triggers WHERE key = $1")
            .bind(key(&t.id))
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            sqlx::query("UPDATE triggers SET id = $2, spec_json = $3, updated_ms = $4 WHERE key = $1")
                .bind(key(&t.id))
                .bind(&t.id)
                .bind(&t.spec_json)
                .bind(t.updated_ms)
                .execute(&mut *tx)
                .await?;
            if let Some(digest) = secret_digest {
                sqlx::query("UPDATE triggers SET secret_digest = $2 WHERE key = $1")
                    .bind(key(&t.id))
                    .bind(digest)
                    .execute(&mut *tx)
                    .await?;
            }
        } else {
            let Some(digest) = secret_digest else {
                return Err(StoreError::Conflict(format!(
                    "trigger {} (new, with no webhook secret)",
                    t.id
                )));
            };
            sqlx::query(
                "INSERT INTO triggers (key, id, watcher_key, spec_json, secret_digest, version, created_ms, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, 0, $6, $7)",
            )
            .bind(key(&t.id))
            .bind(&t.id)
            .bind(key(watcher_id))
            .bind(&t.spec_json)
            .bind(digest)
            .bind(t.created_ms)
            .bind(t.updated_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn get_trigger(&self, id: &str) -> Result<Option<TriggerRecord>, StoreError> {
        Ok(
            sqlx::query_as("SELECT id, spec_json, created_ms, updated_ms FROM triggers WHERE key = $1")
                .bind(key(id))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The trigger whose webhook secret has this digest.
    pub async fn trigger_by_secret(&self, digest: &str) -> Result<Option<TriggerRecord>, StoreError> {
        Ok(
            sqlx::query_as("SELECT id, spec_json, created_ms, updated_ms FROM triggers WHERE secret_digest = $1")
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn list_triggers(&self, watcher_id: &str) -> Result<Vec<TriggerRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, spec_json, created_ms, updated_ms FROM triggers WHERE watcher_key = $1 ORDER BY key",
        )
        .bind(key(watcher_id))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes a trigger (its firings go with it); whether it existed.
    pub async fn delete_trigger(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM trigger_firings WHERE trigger_key = $1")
            .bind(key(id))
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM triggers WHERE key = $1")
            .bind(key(id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Claims the capture of `alert_id` on `vm_id` for a trigger, under its
    /// guards (module doc): recorded when claimed, in one transaction.
    #[allow(clippy::too_many_arguments, reason = "one firing's facts, named")]
    pub async fn claim_firing(
        &self,
        trigger_id: &str,
        alert_id: &str,
        vm_id: &str,
        capture_id: &str,
        fired_ms: i64,
        now_ms: i64,
        guards: Guards,
    ) -> Result<Claim, StoreError> {
        let trigger = key(trigger_id);
        let vm = key(vm_id);
        let mut tx = self.pool.begin().await?;
        let bumped = sqlx::query("UPDATE triggers SET version = version + 1 WHERE key = $1")
            .bind(&trigger)
            .execute(&mut *tx)
            .await?;
        if bumped.rows_affected() == 0 {
            return Err(StoreError::Stale(format!("trigger {trigger_id} (deleted)")));
        }
        let earlier: Option<(String,)> = sqlx::query_as(
            "SELECT capture_key FROM trigger_firings WHERE trigger_key = $1 AND alert_id = $2 AND vm_key = $3",
        )
        .bind(&trigger)
        .bind(alert_id)
        .bind(&vm)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((capture_key,)) = earlier {
            return Ok(Claim::Duplicate { capture_key });
        }
        let (last,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(created_ms) FROM trigger_firings WHERE trigger_key = $1 AND vm_key = $2")
                .bind(&trigger)
                .bind(&vm)
                .fetch_one(&mut *tx)
                .await?;
        if let Some(last) = last
            && now_ms < last + guards.cooldown_ms
        {
            return Ok(Claim::Cooldown {
                until_ms: last + guards.cooldown_ms,
            });
        }
        // Running: its capture not ended, or not created yet.
        let (running,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM trigger_firings f LEFT JOIN packet_captures c ON c.key = f.capture_key
             WHERE f.trigger_key = $1 AND (c.key IS NULL OR c.status IN ('NotStarted', 'Running'))",
        )
        .bind(&trigger)
        .fetch_one(&mut *tx)
        .await?;
        if running >= guards.max_concurrent {
            return Ok(Claim::Concurrency { running });
        }
        let (started,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM trigger_firings WHERE trigger_key = $1 AND created_ms > $2")
                .bind(&trigger)
                .bind(now_ms - HOUR_MS)
                .fetch_one(&mut *tx)
                .await?;
        if started >= guards.max_per_hour {
            return Ok(Claim::RateLimit { started });
        }
        sqlx::query(
            "INSERT INTO trigger_firings (trigger_key, alert_id, vm_key, capture_key, fired_ms, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&trigger)
        .bind(alert_id)
        .bind(&vm)
        .bind(key(capture_id))
        .bind(fired_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Claim::Claimed)
    }

    /// Forgets a claimed firing whose capture could not be created.
    pub async fn release_firing(&self, trigger_id: &str, alert_id: &str, vm_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM trigger_firings WHERE trigger_key = $1 AND alert_id = $2 AND vm_key = $3")
            .bind(key(trigger_id))
            .bind(alert_id)
            .bind(key(vm_id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The captures (keys) a trigger started for an alert.
    pub async fn firings_of(&self, trigger_id: &str, alert_id: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT capture_key FROM trigger_firings WHERE trigger_key = $1 AND alert_id = $2")
                .bind(key(trigger_id))
                .bind(alert_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(capture,)| capture).collect())
    }
}
