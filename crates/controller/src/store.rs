//! The controller's state: hosts (VMs), network watchers, packet captures and
//! long-running operations, in SQLite (the embedded default, a file in the data
//! directory) or PostgreSQL (shared by controller replicas), DESIGN §7.
//!
//! One store, the same SQL on both: queries are plain runtime SQL through sqlx's
//! Any driver with `$N` placeholders, columns are TEXT and BIGINT only, and the
//! schema is one migration directory (`migrations/*.sql`, one file per change)
//! embedded in the binary and applied at open.
//!
//! Invariants:
//! - a resource id is stored as the client wrote it (`id`) and found by its
//!   lower-case form (`key`), since ARM ids compare case-insensitively;
//! - a capture row changes only through [`Store::update_capture`], which succeeds
//!   only for the version the caller read (optimistic concurrency: two replicas, or
//!   an agent report racing a stop, cannot overwrite each other unseen);
//! - SQLite runs in WAL mode with `synchronous=FULL`: a write the API answered for
//!   survives a crash of the process or the machine.

use std::str::FromStr;
use std::time::Duration;

mod alerts;
mod replicas;
mod scale_sets;

pub use alerts::{Claim, Guards, RecorderRecord, RecorderStatusRecord, TriggerRecord};
pub use replicas::{MAX_NOTIFY_PAYLOAD, OPERATION_ENDED, REPLICA_ALIVE, REPLICA_BEAT};
pub use scale_sets::{Joined, ScaleSetInstanceRecord, ScaleSetKeyRecord, ScaleSetRecord};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

/// The embedded migrations.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connections per pool: SQLite serialises writes anyway; PostgreSQL replicas
/// share the server's connection budget.
const MAX_CONNECTIONS: u32 = 8;
/// How long a query waits for a connection before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits on a lock held by another connection: 5 s.
const SQLITE_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 5000";

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL {0:?} is neither sqlite:// nor postgres://")]
    Url(String),
    #[error("connect to the {backend:?} database {url}")]
    Connect {
        backend: Backend,
        /// The URL, its password hidden.
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("create the database file {path}")]
    CreateFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another netwatch controller uses the SQLite file {path}: SQLite serves one controller; several share \
         one PostgreSQL (database = \"postgres://…\" in each one's configuration)"
    )]
    SqliteInUse { path: String },
    #[error("apply the database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} was changed by someone else since it was read")]
    Stale(String),
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
}

impl StoreError {
    /// Whether the database is out of reach or overloaded right now (not
    /// the request's fault): the API answers 503 with `Retry-After`.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Connect { .. } => true,
            StoreError::Query(error) => match error {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed => true,
                // PostgreSQL: connection exceptions (08…), shutting down or
                // starting (57P01–57P03); SQLite: busy or locked past the timeout.
                sqlx::Error::Database(error) => error.code().is_some_and(|code| {
                    code.starts_with("08") || code.starts_with("57P") || code == "5" || code == "6"
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

/// A registered host.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VmRecord {
    pub id: String,
    pub subscription: String,
    pub location: String,
    /// Live agent facts as JSON (version, interfaces, addresses).
    pub agent_json: String,
    pub last_seen_ms: Option<i64>,
    pub created_ms: i64,
    /// ARM tags, a JSON object: those it enrolled with, until changed through the API.
    pub tags_json: String,
}

/// A network watcher (one per location).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WatcherRecord {
    pub id: String,
    pub subscription: String,
    pub location: String,
    pub created_ms: i64,
}

/// Text in a status or kind column that names none of its values: a row
/// written by something other than this controller, refused where it is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the store holds {what} {value:?}, which this controller does not know")]
pub struct UnknownValue {
    what: &'static str,
    value: String,
}

/// Enums kept as text in the store: written with [`as_str`], decoded where
/// rows are read (`#[sqlx(try_from = "String")]`), so no caller compares text.
macro_rules! stored_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// The text stored, and shown by the API.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownValue;

            fn try_from(value: String) -> Result<Self, UnknownValue> {
                match value.as_str() {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownValue { what: $what, value }),
                }
            }
        }
    };
}

stored_enum! {
    /// Where a capture is in its life (Azure's `PcStatus` without `Unknown`).
    CaptureStatus, "a capture status" {
        /// Created; its agent has not reported it running yet.
        NotStarted = "NotStarted",
        Running = "Running",
        Stopped = "Stopped",
        /// Failed or given up: final, no report moves it on.
        Error = "Error",
    }
}

impl CaptureStatus {
    /// Not ended yet: it may still run, and can be stopped.
    pub const fn is_active(self) -> bool {
        matches!(self, Self::NotStarted | Self::Running)
    }
}

stored_enum! {
    /// A long-running operation's status, as its monitor shows it.
    OperationStatus, "an operation status" {
        InProgress = "InProgress",
        Succeeded = "Succeeded",
        Failed = "Failed",
    }
}

stored_enum! {
    /// What a long-running operation does.
    OperationKind, "an operation kind" {
        Create = "create",
        Stop = "stop",
        Delete = "delete",
        QueryStatus = "queryStatus",
    }
}

/// What a [`Store::modify_capture`] change decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<T> {
    /// Store the record as changed; `T` comes back once it is stored.
    Write(T),
    /// Leave the record as it is.
    Keep(T),
}

/// A capture after [`Store::modify_capture`]: as stored (its new version
/// when written), what the change returned, and whether it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modified<T> {
    pub record: CaptureRecord,
    pub value: T,
    pub written: bool,
}

/// How often [`Store::modify_capture`] reads a capture again that another
/// writer changed between its read and its write.
pub const MODIFY_ATTEMPTS: usize = 5;

/// A packet capture and what is known of it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CaptureRecord {
    pub id: String,
    pub watcher_id: String,
    pub target_id: String,
    /// The validated request, as echoed to clients.
    pub request_json: String,
    #[sqlx(try_from = "String")]
    pub status: CaptureStatus,
    pub stop_reason: Option<String>,
    /// `packetCaptureError`, a JSON list.
    pub errors_json: String,
    pub started_ms: Option<i64>,
    /// The agent's last counters, JSON.
    pub stats_json: String,
    pub etag: String,
    /// Read with the row; [`Store::update_capture`] needs it and bumps it.
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// One host's part of a capture over many hosts: the key of the capture
    /// it belongs to (`None` for a capture clients name).
    pub parent_key: Option<String>,
    /// That host's instance id (`"3"`), or its VM name for hosts chosen by
    /// other means; `None` for a capture clients name.
    pub instance: Option<String>,
}

/// How many hosts' rows of a capture over many hosts are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartCounts {
    pub not_started: i64,
    pub running: i64,
    pub stopped: i64,
    pub failed: i64,
}

/// A capture file in storage.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CaptureFileRecord {
    pub seq: i64,
    pub storage_path: String,
    pub size: i64,
    pub sha256: String,
    pub stored_ms: i64,
}

/// A client token made through the API: its digest, never the token.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClientTokenRecord {
    pub digest: String,
    pub name: String,
    /// `reader`, `operator` or `admin`.
    pub role: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// A storage account made through the API.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StorageAccountRecord {
    pub name: String,
    pub resource_group: String,
    pub location: String,
    /// ARM tags, a JSON object.
    pub tags_json: String,
    /// Its `[[storage]]` table as JSON (`netwatch_storage::AccountConfig`), secrets included.
    pub config_json: String,
    /// Bumped by every change.
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A long-running operation's status resource.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OperationRecord {
    pub id: String,
    /// The resource the operation acts on; read back in its lower-case key form.
    pub resource_id: String,
    #[sqlx(try_from = "String")]
    pub kind: OperationKind,
    #[sqlx(try_from = "String")]
    pub status: OperationStatus,
    /// The ARM error body of a failed operation.
    pub error_json: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A one-time enrollment of a VM's agent.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EnrollmentRecord {
    /// The token's digest (`sha256:…`).
    pub digest: String,
    pub vm_id: String,
    pub location: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub used_ms: Option<i64>,
}

/// An enrolled agent's own credential.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AgentCredentialRecord {
    /// The credential's digest (`sha256:…`).
    pub digest: String,
    pub vm_id: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// The columns of a [`CaptureRecord`], with a WHERE/ORDER tail (sqlx takes only
/// static SQL, so the statement is put together at compile time).
macro_rules! capture_select {
    ($tail:literal) => {
        concat!(
            "SELECT c.id, w.id AS watcher_id, c.target_id, c.request_json, c.status, c.stop_reason,
             c.errors_json, c.started_ms, c.stats_json, c.etag, c.version, c.created_ms, c.updated_ms,
             c.parent_key, c.instance
             FROM packet_captures c JOIN network_watchers w ON w.key = c.watcher_key ",
            $tail
        )
    };
}

fn key(id: &str) -> String {
    id.to_lowercase()
}

/// Inserts a capture row with `executor` (the pool, or a transaction).
async fn insert_capture_with<'e, E>(executor: E, c: &CaptureRecord) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let result = sqlx::query(
        "INSERT INTO packet_captures (key, id, watcher_key, target_key, target_id, request_json, status,
             stop_reason, errors_json, started_ms, stats_json, etag, version, created_ms, updated_ms,
             parent_key, instance)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(key(&c.id))
    .bind(&c.id)
    .bind(key(&c.watcher_id))
    .bind(key(&c.target_id))
    .bind(&c.target_id)
    .bind(&c.request_json)
    .bind(c.status.as_str())
    .bind(&c.stop_reason)
    .bind(&c.errors_json)
    .bind(c.started_ms)
    .bind(&c.stats_json)
    .bind(&c.etag)
    .bind(c.version)
    .bind(c.created_ms)
    .bind(c.updated_ms)
    .bind(c.parent_key.as_deref().map(key))
    .bind(&c.instance)
    .execute(executor)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::Conflict(format!("packet capture {}", c.id)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes a capture's mutable fields with `executor` if its stored version
/// is still `c.version` (and bumps it); whether it did.
async fn update_capture_with<'e, E>(executor: E, c: &CaptureRecord) -> Result<bool, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let done = sqlx::query(
        "UPDATE packet_captures SET status = $1, stop_reason = $2, errors_json = $3, started_ms = $4,
             stats_json = $5, etag = $6, updated_ms = $7, version = version + 1
         WHERE key = $8 AND version = $9",
    )
    .bind(c.status.as_str())
    .bind(&c.stop_reason)
    .bind(&c.errors_json)
    .bind(c.started_ms)
    .bind(&c.stats_json)
    .bind(&c.etag)
    .bind(c.updated_ms)
    .bind(key(&c.id))
    .bind(c.version)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Rows per multi-row `INSERT` of capture rows: 17 parameters each, well
/// under SQLite's limit of 32,766 per statement.
const INSERT_BATCH: usize = 64;

/// Inserts capture rows with `executor`, [`INSERT_BATCH`] per statement (a
/// capture over a thousand hosts is a thousand rows: one round trip each
/// would be most of its create).
async fn insert_captures_with(executor: &mut sqlx::AnyConnection, records: &[CaptureRecord]) -> Result<(), StoreError> {
    for chunk in records.chunks(INSERT_BATCH) {
        let mut sql = String::from(
            "INSERT INTO packet_captures (key, id, watcher_key, target_key, target_id, request_json, status,
             stop_reason, errors_json, started_ms, stats_json, etag, version, created_ms, updated_ms,
             parent_key, instance) VALUES ",
        );
        for row in 0..chunk.len() {
            sql.push_str(if row > 0 { ",(" } else { "(" });
            for column in 0..17 {
                if column > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("${}", row * 17 + column + 1));
            }
            sql.push(')');
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for c in chunk {
            query = query
                .bind(key(&c.id))
                .bind(c.id.clone())
                .bind(key(&c.watcher_id))
                .bind(key(&c.target_id))
                .bind(c.target_id.clone())
                .bind(c.request_json.clone())
                .bind(c.status.as_str())
                .bind(c.stop_reason.clone())
                .bind(c.errors_json.clone())
                .bind(c.started_ms)
                .bind(c.stats_json.clone())
                .bind(c.etag.clone())
                .bind(c.version)
                .bind(c.created_ms)
                .bind(c.updated_ms)
                .bind(c.parent_key.as_deref().map(key))
                .bind(c.instance.clone());
        }
        match query.execute(&mut *executor).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!("packet capture {}", chunk[0].id)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The SQLite file of `url`, locked for this controller (an advisory
/// `flock`, apart from SQLite's own locks); `None` for an in-memory database.
fn lock_sqlite(url: &str) -> Result<Option<std::fs::File>, StoreError> {
    let path = sqlite_path(url);
    if path.is_empty() || path == ":memory:" {
        return Ok(None);
    }
    let file = std::fs::File::open(path).map_err(|source| StoreError::CreateFile {
        path: path.to_owned(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::SqliteInUse { path: path.to_owned() }),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::CreateFile {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The file path of a `sqlite:` URL.
fn sqlite_path(url: &str) -> &str {
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    path.split('?').next().unwrap_or_default()
}

/// `url` with the password of its user part (`user:password@`) shown as `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _password)) => format!("{scheme}://{name}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Creates the SQLite file of `url` readable by its owner only, if it does
/// not exist yet: it holds the secrets of storage accounts made through the
/// API. SQLite gives its `-wal` and `-shm` files the same mode.
fn create_private(url: &str) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = sqlite_path(url);
    if path.is_empty() || path == ":memory:" || std::path::Path::new(path).exists() {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::CreateFile {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The controller's state store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Bumped whenever an operation ends here: requests waiting for one
    /// ([`Store::wait_operation`]) look again.
    operations_ended: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// On SQLite, the file held locked (`flock`) while the store is open: a
    /// second controller on the same file is refused ([`StoreError::SqliteInUse`]).
    sqlite_lock: std::sync::Arc<std::sync::Mutex<Option<std::fs::File>>>,
    /// On PostgreSQL, the URL (for the listener's own connection).
    postgres_url: Option<String>,
    /// Set when this replica drains: requests stop waiting for operations.
    stop_waiting: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Store {
    /// Connects (creating a SQLite file if needed) and applies migrations.
    /// `url` is `sqlite:///path/to/state.db` or `postgres://user@host/db`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(url.to_owned()));
        };
        let sqlite_lock = if backend == Backend::Sqlite {
            create_private(url)?;
            lock_sqlite(url)?
        } else {
            None
        };
        let url = match backend {
            // create the file on first use
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        let shown = without_password(&url);
        let connect_error = |source| StoreError::Connect {
            backend,
            url: shown.clone(),
            source,
        };
        let options = AnyConnectOptions::from_str(&url).map_err(connect_error)?;
        // One connection first: when the server is not there, its error (refused,
        // no such host, bad password) is the cause to show, not the pool's
        // "timed out" that would hide it.
        if backend == Backend::Postgres {
            let first = <sqlx::AnyConnection as sqlx::Connection>::connect_with(&options);
            match tokio::time::timeout(ACQUIRE_TIMEOUT, first).await {
                Ok(Ok(connection)) => {
                    let _ = sqlx::Connection::close(connection).await;
                }
                Ok(Err(source)) => return Err(connect_error(source)),
                Err(_) => return Err(connect_error(sqlx::Error::PoolTimedOut)),
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers do not block the writer; FULL: a commit is on disk
                        // before the API answers. Foreign keys are off by default in SQLite.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute(SQLITE_BUSY_TIMEOUT).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(Store {
            pool,
            backend,
            operations_ended: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
            sqlite_lock: std::sync::Arc::new(std::sync::Mutex::new(sqlite_lock)),
            postgres_url: (backend == Backend::Postgres).then_some(url),
            stop_waiting: std::sync::Arc::default(),
        })
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
        // The file is free for the next controller.
        self.sqlite_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }

    /// Runs one statement of administration SQL (tests create and drop their
    /// PostgreSQL databases with it). Not for data: every data query is above.
    #[doc(hidden)]
    pub async fn raw_execute_for_tests(&self, sql: &str) -> Result<(), StoreError> {
        self.pool
            .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())))
            .await?;
        Ok(())
    }

    // ---- VMs ----

    /// Registers a host, or updates its location and agent facts (its tags
    /// are written only when it is new).
    pub async fn upsert_vm(&self, vm: &VmRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO vms (key, id, subscription, location, agent_json, last_seen_ms, created_ms, tags_json)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (key) DO UPDATE SET location = $4, agent_json = $5, last_seen_ms = $6",
        )
        .bind(key(&vm.id))
        .bind(&vm.id)
        .bind(&vm.subscription)
        .bind(&vm.location)
        .bind(&vm.agent_json)
        .bind(vm.last_seen_ms)
        .bind(vm.created_ms)
        .bind(&vm.tags_json)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets a VM's tags; false when there is no such VM.
    pub async fn set_vm_tags(&self, id: &str, tags_json: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE vms SET tags_json = $1 WHERE key = $2")
            .bind(tags_json)
            .bind(key(id))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces a VM's agent facts (an upgrade failure the agent reported).
    pub async fn set_vm_agent_json(&self, id: &str, agent_json: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE vms SET agent_json = $1 WHERE key = $2")
            .bind(agent_json)
            .bind(key(id))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The agent extension's settings of VM `id` (JSON), when `vm extension
    /// set` gave any.
    pub async fn get_extension_settings(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT settings_json FROM agent_extensions WHERE vm_key = $1")
            .bind(key(id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(json,)| json))
    }

    /// Sets the agent extension's settings of VM `id` (JSON).
    pub async fn set_extension_settings(&self, id: &str, settings_json: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_extensions (vm_key, settings_json) VALUES ($1, $2)
             ON CONFLICT (vm_key) DO UPDATE SET settings_json = $2",
        )
        .bind(key(id))
        .bind(settings_json)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a heartbeat. Returns false when no such VM exists.
    pub async fn touch_vm(&self, id: &str, seen_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE vms SET last_seen_ms = $1 WHERE key = $2")
            .bind(seen_ms)
            .bind(key(id))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn get_vm(&self, id: &str) -> Result<Option<VmRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, subscription, location, agent_json, last_seen_ms, created_ms, tags_json FROM vms WHERE key = $1",
        )
        .bind(key(id))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// VMs of a subscription, by id.
    pub async fn list_vms(&self, subscription: &str) -> Result<Vec<VmRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, subscription, location, agent_json, last_seen_ms, created_ms, tags_json FROM vms
             WHERE lower(subscription) = $1 ORDER BY key",
        )
        .bind(key(subscription))
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- network watchers ----

    /// Creates the watcher unless it exists; returns the stored one either way
    /// (Azure creates `NetworkWatcher_{location}` on first use).
    pub async fn ensure_watcher(&self, w: &WatcherRecord) -> Result<WatcherRecord, StoreError> {
        sqlx::query(
            "INSERT INTO network_watchers (key, id, subscription, location, created_ms)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key(&w.id))
        .bind(&w.id)
        .bind(&w.subscription)
        .bind(&w.location)
        .bind(w.created_ms)
        .execute(&self.pool)
        .await?;
        self.get_watcher(&w.id)
            .await?
            .ok_or_else(|| StoreError::Stale(format!("network watcher {}", w.id)))
    }

    pub async fn get_watcher(&self, id: &str) -> Result<Option<WatcherRecord>, StoreError> {
        Ok(
            sqlx::query_as("SELECT id, subscription, location, created_ms FROM network_watchers WHERE key = $1")
                .bind(key(id))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn list_watchers(&self, subscription: &str) -> Result<Vec<WatcherRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, subscription, location, created_ms FROM network_watchers
             WHERE lower(subscription) = $1 ORDER BY key",
        )
        .bind(key(subscription))
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- packet captures ----

    /// Adds a capture; [`StoreError::Conflict`] when one of that id exists.
    pub async fn insert_capture(&self, c: &CaptureRecord) -> Result<(), StoreError> {
        insert_capture_with(&self.pool, c).await
    }

    /// Replaces capture `old` (as read: its version must be unchanged) by `new`
    /// under the same id, in one transaction: a PUT over a finished capture.
    pub async fn replace_capture(&self, old: &CaptureRecord, new: &CaptureRecord) -> Result<(), StoreError> {
        self.write_capture(Some(old), new, &[]).await
    }

    /// Writes capture `new` and its hosts' rows (`parts`, a capture over many
    /// hosts) in one transaction, in place of `old` (as read: its version
    /// must be unchanged; its parts go with it) when given.
    /// [`StoreError::Conflict`] when `old` is `None` and the capture exists.
    pub async fn write_capture(
        &self,
        old: Option<&CaptureRecord>,
        new: &CaptureRecord,
        parts: &[CaptureRecord],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(old) = old {
            let gone = sqlx::query("DELETE FROM packet_captures WHERE key = $1 AND version = $2")
                .bind(key(&old.id))
                .bind(old.version)
                .execute(&mut *tx)
                .await?;
            if gone.rows_affected() != 1 {
                tx.rollback().await?;
                return Err(StoreError::Stale(format!("packet capture {}", old.id)));
            }
            sqlx::query("DELETE FROM packet_captures WHERE parent_key = $1")
                .bind(key(&old.id))
                .execute(&mut *tx)
                .await?;
        }
        insert_capture_with(&mut *tx, new).await?;
        insert_captures_with(&mut tx, parts).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The hosts' rows of capture `id` (a capture over many hosts), by key.
    pub async fn capture_parts(&self, id: &str) -> Result<Vec<CaptureRecord>, StoreError> {
        let rows = sqlx::query_as(capture_select!("WHERE c.parent_key = $1 ORDER BY c.key"))
            .bind(key(id))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// How many hosts' rows of capture `id` are in each status, in one query.
    pub async fn count_parts(&self, id: &str) -> Result<PartCounts, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM packet_captures WHERE parent_key = $1 GROUP BY status")
                .bind(key(id))
                .fetch_all(&self.pool)
                .await?;
        let mut counts = PartCounts::default();
        // A status this controller does not know counts as none (it is
        // refused where its row is read).
        for (status, count) in rows {
            match CaptureStatus::try_from(status) {
                Ok(CaptureStatus::NotStarted) => counts.not_started = count,
                Ok(CaptureStatus::Running) => counts.running = count,
                Ok(CaptureStatus::Stopped) => counts.stopped = count,
                Ok(CaptureStatus::Error) => counts.failed = count,
                Err(_) => {}
            }
        }
        Ok(counts)
    }

    /// Captures over hosts chosen by a selector (they target themselves) that
    /// no client stopped: what a host that registers may join.
    pub async fn selector_captures(&self) -> Result<Vec<CaptureRecord>, StoreError> {
        let rows = sqlx::query_as(capture_select!(
            "WHERE c.parent_key IS NULL AND c.target_key = c.key AND c.status = 'NotStarted' ORDER BY c.key"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// The targets of capture `id`'s hosts' rows that have `status`, at most `limit`.
    pub async fn part_targets(&self, id: &str, status: CaptureStatus, limit: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query_scalar(
            // No ORDER BY: any `limit` of them, found without a sort.
            "SELECT target_id FROM packet_captures WHERE parent_key = $1 AND status = $2 LIMIT $3",
        )
        .bind(key(id))
        .bind(status.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// How many stop operations of capture `id`'s hosts are in progress.
    pub async fn part_stops_in_progress(&self, id: &str) -> Result<i64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM operations o JOIN packet_captures c ON o.resource_key = c.key
             WHERE c.parent_key = $1 AND o.kind = 'stop' AND o.status = 'InProgress'",
        )
        .bind(key(id))
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    /// Adds one host's row to capture `parent` (a host that joined a scale
    /// set while the capture runs), unless the capture is gone or a row of
    /// that host is there already: whether it was added.
    pub async fn add_capture_part(&self, part: &CaptureRecord) -> Result<bool, StoreError> {
        match insert_capture_with(&self.pool, part).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    pub async fn get_capture(&self, id: &str) -> Result<Option<CaptureRecord>, StoreError> {
        let row = sqlx::query_as(capture_select!("WHERE c.key = $1"))
            .bind(key(id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    /// Records a file of capture run (`id`, `created_ms`) as stored; a file
    /// stored again (an agent retrying a commit) replaces its row.
    pub async fn put_capture_file(
        &self,
        id: &str,
        created_ms: i64,
        file: &CaptureFileRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO capture_files (capture_key, created_ms, seq, storage_path, size, sha256, stored_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (capture_key, created_ms, seq) DO UPDATE SET storage_path = excluded.storage_path, \
             size = excluded.size, sha256 = excluded.sha256, stored_ms = excluded.stored_ms",
        )
        .bind(key(id))
        .bind(created_ms)
        .bind(file.seq)
        .bind(&file.storage_path)
        .bind(file.size)
        .bind(&file.sha256)
        .bind(file.stored_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored files of capture run (`id`, `created_ms`), in order.
    pub async fn capture_files(&self, id: &str, created_ms: i64) -> Result<Vec<CaptureFileRecord>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT seq, storage_path, size, sha256, stored_ms FROM capture_files \
             WHERE capture_key = $1 AND created_ms = $2 ORDER BY seq",
        )
        .bind(key(id))
        .bind(created_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// The stored files of every host's part of capture `id` (each part's
    /// own run), by the part's key, in order: one query for them all.
    pub async fn part_files(
        &self,
        id: &str,
    ) -> Result<std::collections::HashMap<String, Vec<CaptureFileRecord>>, StoreError> {
        let rows: Vec<(String, i64, String, i64, String, i64)> = sqlx::query_as(
            "SELECT f.capture_key, f.seq, f.storage_path, f.size, f.sha256, f.stored_ms FROM capture_files f \
             JOIN packet_captures c ON c.key = f.capture_key AND c.created_ms = f.created_ms \
             WHERE c.parent_key = $1 ORDER BY f.capture_key, f.seq",
        )
        .bind(key(id))
        .fetch_all(&self.pool)
        .await?;
        let mut files: std::collections::HashMap<String, Vec<CaptureFileRecord>> = std::collections::HashMap::new();
        for (part, seq, storage_path, size, sha256, stored_ms) in rows {
            files.entry(part).or_default().push(CaptureFileRecord {
                seq,
                storage_path,
                size,
                sha256,
                stored_ms,
            });
        }
        Ok(files)
    }

    /// Captures of a network watcher, by id.
    pub async fn list_captures(&self, watcher_id: &str) -> Result<Vec<CaptureRecord>, StoreError> {
        let rows = sqlx::query_as(capture_select!(
            "WHERE c.watcher_key = $1 AND c.parent_key IS NULL ORDER BY c.key"
        ))
        .bind(key(watcher_id))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Captures `NotStarted` or `Running` on a registered host last heard
    /// from before `before_ms` (never heard from: registered before it), by id.
    pub async fn captures_of_silent_hosts(&self, before_ms: i64) -> Result<Vec<CaptureRecord>, StoreError> {
        let rows = sqlx::query_as(capture_select!(
            "JOIN vms v ON v.key = c.target_key \
             WHERE c.status IN ('NotStarted', 'Running') AND COALESCE(v.last_seen_ms, v.created_ms) < $1 \
             ORDER BY c.key"
        ))
        .bind(before_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Captures targeting a VM (what its agent must run or report on), by id.
    pub async fn captures_for_target(&self, target_id: &str) -> Result<Vec<CaptureRecord>, StoreError> {
        let rows = sqlx::query_as(capture_select!("WHERE c.target_key = $1 ORDER BY c.key"))
            .bind(key(target_id))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// Reads capture `id`, lets `change` change it, and writes it only if
    /// nobody else did meanwhile (its version is unchanged); otherwise reads
    /// it again and asks `change` again, at most [`MODIFY_ATTEMPTS`] times,
    /// then gives up with [`StoreError::Stale`]. `None`: no such capture.
    /// `change` sees a fresh record each time, so it decides on what is
    /// stored, never on a stale copy.
    pub async fn modify_capture<T>(
        &self,
        id: &str,
        mut change: impl FnMut(&mut CaptureRecord) -> Change<T>,
    ) -> Result<Option<Modified<T>>, StoreError> {
        for _ in 0..MODIFY_ATTEMPTS {
            let Some(mut record) = self.get_capture(id).await? else {
                return Ok(None);
            };
            match change(&mut record) {
                Change::Keep(value) => {
                    return Ok(Some(Modified {
                        record,
                        value,
                        written: false,
                    }));
                }
                Change::Write(value) => match self.update_capture(&record).await {
                    Ok(version) => {
                        record.version = version;
                        return Ok(Some(Modified {
                            record,
                            value,
                            written: true,
                        }));
                    }
                    Err(StoreError::Stale(_)) => continue,
                    Err(error) => return Err(error),
                },
            }
        }
        Err(StoreError::Stale(format!("packet capture {id}")))
    }

    /// [`Store::modify_capture`] for many captures in one transaction: each
    /// read, changed by `change` (called with its index in `ids`) and written
    /// in turn, all committed at once. One outcome per id, in order: `None`
    /// for no such capture, [`StoreError::Stale`] for one another writer
    /// changed between its read and its write (PostgreSQL replicas; the
    /// caller tries it again alone). `Err` when the transaction failed:
    /// nothing was written.
    pub async fn modify_captures<T>(
        &self,
        ids: &[&str],
        mut change: impl FnMut(usize, &mut CaptureRecord) -> Change<T>,
    ) -> Result<Vec<Result<Option<Modified<T>>, StoreError>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A write first: it takes SQLite's write lock before any read (a
        // transaction that read first could not upgrade past another
        // writer's commit).
        sqlx::query("UPDATE packet_captures SET version = version WHERE key = ''")
            .execute(&mut *tx)
            .await?;
        let mut outcomes = Vec::with_capacity(ids.len());
        for (index, id) in ids.iter().enumerate() {
            let record: Option<CaptureRecord> = sqlx::query_as(capture_select!("WHERE c.key = $1"))
                .bind(key(id))
                .fetch_optional(&mut *tx)
                .await?;
            let Some(mut record) = record else {
                outcomes.push(Ok(None));
                continue;
            };
            match change(index, &mut record) {
                Change::Keep(value) => outcomes.push(Ok(Some(Modified {
                    record,
                    value,
                    written: false,
                }))),
                Change::Write(value) => {
                    if update_capture_with(&mut *tx, &record).await? {
                        record.version += 1;
                        outcomes.push(Ok(Some(Modified {
                            record,
                            value,
                            written: true,
                        })));
                    } else {
                        outcomes.push(Err(StoreError::Stale(format!("packet capture {id}"))));
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Writes a capture's mutable fields if its stored version is still
    /// `c.version`; returns the new version, or [`StoreError::Stale`].
    pub async fn update_capture(&self, c: &CaptureRecord) -> Result<i64, StoreError> {
        if update_capture_with(&self.pool, c).await? {
            Ok(c.version + 1)
        } else {
            Err(StoreError::Stale(format!("packet capture {}", c.id)))
        }
    }

    /// Removes a capture and its hosts' rows (never its files). Returns false
    /// when it did not exist.
    pub async fn delete_capture(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM packet_captures WHERE parent_key = $1")
            .bind(key(id))
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM packet_captures WHERE key = $1")
            .bind(key(id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets a host: its VM row and its credentials (a scale-set instance
    /// removed). Returns false when there was no such VM.
    pub async fn delete_vm(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE agent_credentials SET revoked_ms = $1 WHERE vm_key = $2 AND revoked_ms IS NULL")
            .bind(now_ms)
            .bind(key(id))
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM scale_set_instances WHERE vm_key = $1")
            .bind(key(id))
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM vms WHERE key = $1")
            .bind(key(id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a watcher and every capture under it, in one transaction;
    /// false when there was no such watcher.
    pub async fn delete_watcher(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        for statement in [
            "DELETE FROM packet_captures WHERE watcher_key = $1",
            "DELETE FROM flight_recorders WHERE watcher_key = $1",
            "DELETE FROM trigger_firings WHERE trigger_key IN (SELECT key FROM triggers WHERE watcher_key = $1)",
            "DELETE FROM triggers WHERE watcher_key = $1",
        ] {
            sqlx::query(statement).bind(key(id)).execute(&mut *tx).await?;
        }
        let done = sqlx::query("DELETE FROM network_watchers WHERE key = $1")
            .bind(key(id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- enrollments and agent credentials ----

    pub async fn insert_enrollment(&self, e: &EnrollmentRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO enrollments (digest, vm_key, vm_id, location, created_ms, expires_ms, used_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&e.digest)
        .bind(key(&e.vm_id))
        .bind(&e.vm_id)
        .bind(&e.location)
        .bind(e.created_ms)
        .bind(e.expires_ms)
        .bind(e.used_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The enrollment whose token has `digest`, used or not.
    pub async fn get_enrollment(&self, digest: &str) -> Result<Option<EnrollmentRecord>, StoreError> {
        let row = sqlx::query_as(
            "SELECT digest, vm_id, location, created_ms, expires_ms, used_ms FROM enrollments WHERE digest = $1",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// Spends an enrollment and records the credential it is traded for, in
    /// one transaction; false (and nothing written) when it was used or
    /// expired meanwhile: a token enrolls one agent, once.
    pub async fn redeem_enrollment(
        &self,
        digest: &str,
        credential: &AgentCredentialRecord,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let spent = sqlx::query(
            "UPDATE enrollments SET used_ms = $1 WHERE digest = $2 AND used_ms IS NULL AND expires_ms > $1",
        )
        .bind(now_ms)
        .bind(digest)
        .execute(&mut *tx)
        .await?;
        if spent.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO agent_credentials (digest, vm_key, vm_id, created_ms, revoked_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&credential.digest)
        .bind(key(&credential.vm_id))
        .bind(&credential.vm_id)
        .bind(credential.created_ms)
        .bind(credential.revoked_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records an agent's credential (a host that joined a scale set).
    pub async fn insert_agent_credential(&self, credential: &AgentCredentialRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_credentials (digest, vm_key, vm_id, created_ms, revoked_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&credential.digest)
        .bind(key(&credential.vm_id))
        .bind(&credential.vm_id)
        .bind(credential.created_ms)
        .bind(credential.revoked_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The agent credential with `digest`, revoked or not.
    pub async fn get_agent_credential(&self, digest: &str) -> Result<Option<AgentCredentialRecord>, StoreError> {
        let row =
            sqlx::query_as("SELECT digest, vm_id, created_ms, revoked_ms FROM agent_credentials WHERE digest = $1")
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row)
    }

    // ---- client tokens ----

    /// Records a new client token; [`StoreError::Conflict`] when a token not
    /// revoked has its name (in any case).
    pub async fn insert_client_token(&self, token: &ClientTokenRecord) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO client_tokens (digest, name_key, name, role, created_ms, revoked_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.digest)
        .bind(token.revoked_ms.is_none().then(|| key(&token.name)))
        .bind(&token.name)
        .bind(&token.role)
        .bind(token.created_ms)
        .bind(token.revoked_ms)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("client token {}", token.name)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The client token whose digest is `digest`, revoked or not.
    pub async fn get_client_token(&self, digest: &str) -> Result<Option<ClientTokenRecord>, StoreError> {
        let row =
            sqlx::query_as("SELECT digest, name, role, created_ms, revoked_ms FROM client_tokens WHERE digest = $1")
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row)
    }

    /// The client tokens not revoked, by name.
    pub async fn list_client_tokens(&self) -> Result<Vec<ClientTokenRecord>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT digest, name, role, created_ms, revoked_ms FROM client_tokens \
             WHERE revoked_ms IS NULL ORDER BY name_key",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Revokes the client token named `name` (any case); whether there was one.
    pub async fn revoke_client_token(&self, name: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE client_tokens SET revoked_ms = $1, name_key = NULL WHERE name_key = $2 AND revoked_ms IS NULL",
        )
        .bind(now_ms)
        .bind(key(name))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes every credential of VM `vm_id`'s agents; how many.
    /// Whether host `vm_id` was cut off: it had credentials of its own and
    /// every one was revoked (`vm extension delete`).
    pub async fn is_cut_off(&self, vm_id: &str) -> Result<bool, StoreError> {
        let (total, active): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN revoked_ms IS NULL THEN 1 ELSE 0 END), 0)
             FROM agent_credentials WHERE vm_key = $1",
        )
        .bind(key(vm_id))
        .fetch_one(&self.pool)
        .await?;
        Ok(total > 0 && active == 0)
    }

    pub async fn revoke_agent_credentials(&self, vm_id: &str, now_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE agent_credentials SET revoked_ms = $1 WHERE vm_key = $2 AND revoked_ms IS NULL")
            .bind(now_ms)
            .bind(key(vm_id))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    // ---- storage accounts ----

    /// The API-made storage account named `name` (any case).
    pub async fn get_storage_account(&self, name: &str) -> Result<Option<StorageAccountRecord>, StoreError> {
        let row = sqlx::query_as(
            "SELECT name, resource_group, location, tags_json, config_json, version, created_ms, updated_ms \
             FROM storage_accounts WHERE key = $1",
        )
        .bind(key(name))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// Every API-made storage account, by name.
    pub async fn list_storage_accounts(&self) -> Result<Vec<StorageAccountRecord>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT name, resource_group, location, tags_json, config_json, version, created_ms, updated_ms \
             FROM storage_accounts ORDER BY key",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Writes `account`: a new one when `expected_version` is `None`
    /// ([`StoreError::Conflict`] when the name is taken), else only over the
    /// row still at that version (false when another writer came first).
    /// The row's version becomes `account.version`.
    pub async fn put_storage_account(
        &self,
        account: &StorageAccountRecord,
        expected_version: Option<i64>,
    ) -> Result<bool, StoreError> {
        let Some(expected) = expected_version else {
            let result = sqlx::query(
                "INSERT INTO storage_accounts \
                 (key, name, resource_group, location, tags_json, config_json, version, created_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(key(&account.name))
            .bind(&account.name)
            .bind(&account.resource_group)
            .bind(&account.location)
            .bind(&account.tags_json)
            .bind(&account.config_json)
            .bind(account.version)
            .bind(account.created_ms)
            .bind(account.updated_ms)
            .execute(&self.pool)
            .await;
            return match result {
                Ok(_) => Ok(true),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    Err(StoreError::Conflict(format!("storage account {}", account.name)))
                }
                Err(e) => Err(e.into()),
            };
        };
        let done = sqlx::query(
            "UPDATE storage_accounts SET config_json = $1, version = $2, updated_ms = $3, location = $4, \
             tags_json = $5 WHERE key = $6 AND version = $7",
        )
        .bind(&account.config_json)
        .bind(account.version)
        .bind(account.updated_ms)
        .bind(&account.location)
        .bind(&account.tags_json)
        .bind(key(&account.name))
        .bind(expected)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes the API-made storage account `name` if it is still at
    /// `version`; whether it did.
    pub async fn delete_storage_account(&self, name: &str, version: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM storage_accounts WHERE key = $1 AND version = $2")
            .bind(key(name))
            .bind(version)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Captures whose files go to storage account `name` (any case), by id.
    pub async fn captures_storing_to(&self, name: &str) -> Result<Vec<CaptureRecord>, StoreError> {
        // Account names are lower-case letters and digits only (checked
        // before they are stored), so the pattern needs no escaping; the
        // request JSON holds the account's id as `"…/storageAccounts/{name}"`.
        let pattern = format!("%/storageaccounts/{}\"%", name.to_lowercase());
        let rows = sqlx::query_as(capture_select!("WHERE LOWER(c.request_json) LIKE $1 ORDER BY c.key"))
            .bind(pattern)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    // ---- long-running operations ----

    pub async fn insert_operation(&self, op: &OperationRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO operations (id, resource_key, kind, status, error_json, created_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&op.id)
        .bind(key(&op.resource_id))
        .bind(op.kind.as_str())
        .bind(op.status.as_str())
        .bind(&op.error_json)
        .bind(op.created_ms)
        .bind(op.updated_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends an operation that is still in progress; false when it was not.
    pub async fn finish_operation(
        &self,
        id: &str,
        status: OperationStatus,
        error_json: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE operations SET status = $1, error_json = $2, updated_ms = $3
             WHERE id = $4 AND status = 'InProgress'",
        )
        .bind(status.as_str())
        .bind(error_json)
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            self.operation_ended().await;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Ends every operation of `kind` on `resource_id` that is still in
    /// progress (an agent's report settles them); how many it ended.
    pub async fn finish_operations_of(
        &self,
        resource_id: &str,
        kind: OperationKind,
        status: OperationStatus,
        error_json: Option<&str>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE operations SET status = $1, error_json = $2, updated_ms = $3
             WHERE resource_key = $4 AND kind = $5 AND status = 'InProgress'",
        )
        .bind(status.as_str())
        .bind(error_json)
        .bind(now_ms)
        .bind(key(resource_id))
        .bind(kind.as_str())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            self.operation_ended().await;
        }
        Ok(done.rows_affected())
    }

    /// Wakes the requests waiting for an operation, here and on the other
    /// replicas (best effort: those time out to their monitor otherwise).
    async fn operation_ended(&self) {
        self.operations_ended.send_modify(|count| *count += 1);
        if let Err(err) = self.notify(OPERATION_ENDED).await {
            tracing::debug!(error = %err, "could not tell the other replicas that an operation ended");
        }
    }

    /// Whether a stop of capture `id` (one host's) is in progress.
    pub async fn stop_in_progress(&self, id: &str) -> Result<bool, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM operations WHERE resource_key = $1 AND kind = 'stop' AND status = 'InProgress'",
        )
        .bind(key(id))
        .fetch_one(&self.pool)
        .await?;
        Ok(count > 0)
    }

    /// How many captures on a host there are in each status (a capture over
    /// many hosts counts once per host; its parent row not at all).
    pub async fn count_host_captures(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT status, COUNT(*) FROM packet_captures
             WHERE parent_key IS NOT NULL
                OR (target_key <> key
                    AND (target_key NOT LIKE '%/virtualmachinescalesets/%'
                         OR target_key LIKE '%/virtualmachinescalesets/%/virtualmachines/%'))
             GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Operation `id` once it has ended, or as it is after `within` (still
    /// in progress): what a request that answers when the work is done waits
    /// on. Woken by every operation this process ends, it reads the row again.
    pub async fn wait_operation(
        &self,
        id: &str,
        within: std::time::Duration,
    ) -> Result<Option<OperationRecord>, StoreError> {
        let deadline = tokio::time::Instant::now() + within;
        // Subscribed before the first read: an end in between is not missed.
        let mut ended = self.operations_ended.subscribe();
        loop {
            let operation = self.get_operation(id).await?;
            if self.waiting_stopped()
                || operation
                    .as_ref()
                    .is_none_or(|operation| operation.status != OperationStatus::InProgress)
            {
                return Ok(operation);
            }
            match tokio::time::timeout_at(deadline, ended.changed()).await {
                Ok(Ok(())) => {}
                _ => return Ok(operation),
            }
        }
    }

    pub async fn get_operation(&self, id: &str) -> Result<Option<OperationRecord>, StoreError> {
        let row = sqlx::query_as(
            "SELECT id, resource_key AS resource_id, kind, status, error_json, created_ms, updated_ms
             FROM operations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_enums_round_trip_and_refuse_unknown_text() {
        for status in [
            CaptureStatus::NotStarted,
            CaptureStatus::Running,
            CaptureStatus::Stopped,
            CaptureStatus::Error,
        ] {
            assert_eq!(CaptureStatus::try_from(status.as_str().to_owned()), Ok(status));
        }
        for kind in [
            OperationKind::Create,
            OperationKind::Stop,
            OperationKind::Delete,
            OperationKind::QueryStatus,
        ] {
            assert_eq!(OperationKind::try_from(kind.to_string()), Ok(kind));
        }
        let unknown = CaptureStatus::try_from("running".to_owned()).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            r#"the store holds a capture status "running", which this controller does not know"#
        );
        assert!(OperationStatus::try_from(String::new()).is_err());
        assert!(CaptureStatus::NotStarted.is_active() && !CaptureStatus::Error.is_active());
    }
}
