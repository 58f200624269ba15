//! `netwatch server`: the controller's configuration file and [`run`], which
//! serves the API (HTTPS unless configured otherwise) on a listener until shut
//! down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum_server::accept::NoDelayAcceptor;
use netwatch_api::resource::SubscriptionId;
use netwatch_storage::{AccountConfig, AccountKind, Accounts};
use serde::{Deserialize, Serialize};

use crate::app::{ApiConfig, AppState};
use crate::auth::{BadDigest, Tokens};
use crate::identity::Signer;
use crate::routes::router;
use crate::store::{Store, StoreError};

/// How long open requests, and then agent channels, get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The controller's configuration file (TOML). Relative paths are relative
/// to the file's directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// `sqlite:///path/state.db` (the default: `state.db` beside the file) or `postgres://…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The subscription served; default the zero GUID (DESIGN §2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// Certificate and key; without them the server speaks plain HTTP, which
    /// az and the Azure SDK refuse to send tokens over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    pub tokens: TokenDigests,
    /// File holding the key (64 hex digits) that signs the access tokens az
    /// and the SDKs log in for; without it a random key is used and their
    /// logins end with each restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_signing_key: Option<PathBuf>,
    /// Where capture files land.
    #[serde(default)]
    pub storage: Vec<AccountConfig>,
    /// Where storage accounts made through the API (`netwatch storage account
    /// create`) without a directory keep their files, one directory each;
    /// default `accounts` beside the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts_dir: Option<PathBuf>,
    /// How long a host's agent may go unheard before its captures become
    /// `Error` with `AgentStopped`, in seconds (default 600). With replicas,
    /// keep it well above 30 s: a replica records its agents that often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_lost_seconds: Option<u64>,
    /// How long the grants agents upload with work, in seconds (default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_grant_seconds: Option<u64>,
    /// Agent builds to serve besides the controller's own binary (other
    /// architectures, other versions): `netwatch-VERSION-ARCH` files and
    /// their `SHA256SUMS` (`agent_builds.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents_dir: Option<PathBuf>,
    /// The addresses agents installed through this controller are given
    /// (`https://host:port`, every replica's, or a load balancer's); default
    /// the one the installer reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_servers: Vec<String>,
    /// Seconds a draining controller (SIGTERM) goes on answering, its health
    /// 503, before it stops taking connections: long enough for a load
    /// balancer's health check to send new requests elsewhere (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_seconds: Option<u64>,
    /// A Unix socket agents on this machine hand parts of local accounts
    /// over through (`handoff.rs`): their bytes then go from the agent's file
    /// into the upload in the kernel rather than over HTTPS. `netwatch up`
    /// makes one in its data directory; default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_socket: Option<PathBuf>,
    /// The version of the running binary, served as this architecture's agent
    /// build (set by the `netwatch` binary; not read from the file).
    #[serde(skip)]
    pub build_version: Option<String>,
}

/// PEM files of the server's certificate chain and key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Digests (`sha256:<hex>`) of the accepted tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenDigests {
    /// Client tokens of the admin role: everything (auth.rs says what each role may do).
    #[serde(default)]
    pub admin: Vec<String>,
    /// Client tokens of the operator role: reads, and captures' create, stop, delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator: Vec<String>,
    /// Client tokens of the reader role: reads, status and downloads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reader: Vec<String>,
    /// Agent enrollment tokens.
    #[serde(default)]
    pub agent: Vec<String>,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("read the configuration file {path}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error(transparent)]
    Tokens(#[from] BadDigest),
    #[error("open the state store")]
    Store(#[from] StoreError),
    #[error("load the TLS certificate {cert} and key {key}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serve on the listener")]
    Serve(#[source] std::io::Error),
}

impl ServerConfig {
    /// Reads and checks a configuration file; relative paths in it are made
    /// relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        let mut config: ServerConfig = toml::from_str(&text).map_err(|err| ServerError::BadConfig {
            path: path.to_owned(),
            message: err.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(key) = &mut config.token_signing_key {
            *key = base.join(&*key);
        }
        if let Some(dir) = &mut config.agents_dir {
            *dir = base.join(&*dir);
        }
        if let Some(socket) = &mut config.handoff_socket {
            *socket = base.join(&*socket);
        }
        if let Some(tls) = &mut config.tls {
            tls.cert = base.join(&tls.cert);
            tls.key = base.join(&tls.key);
        }
        for account in &mut config.storage {
            match &mut account.kind {
                AccountKind::Local { path } => *path = base.join(&*path),
                // A gcs account's key file was read when the file was parsed: give it absolute.
                AccountKind::AzureBlob { .. } | AccountKind::S3 { .. } | AccountKind::Gcs { .. } => {}
            }
        }
        // Absolute: the store keeps the directories of accounts made in it.
        let accounts = base.join(config.accounts_dir.as_deref().unwrap_or(Path::new("accounts")));
        config.accounts_dir = Some(std::path::absolute(&accounts).unwrap_or(accounts));
        if config.database.is_none() {
            config.database = Some(format!("sqlite://{}", base.join("state.db").display()));
        }
        if config.tokens.admin.is_empty() {
            return Err(ServerError::BadConfig {
                path: path.to_owned(),
                message: "[tokens] admin lists no token digest: nobody could use the API".to_owned(),
            });
        }
        Ok(config)
    }
}

/// Whether `server` is `https://host[:port]` (or `http://`), nothing more:
/// what an agent's `--server` takes, and a comma-separated list of them.
fn is_controller_address(server: &str) -> bool {
    let rest = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or_default();
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    !rest.is_empty() && !rest.contains(['/', ',', ' ', '?', '#', '@'])
}

/// Serves the API on `listener` until `shutdown` completes, then drains and
/// stops in order: no new connections and no new agent channel, agents asked
/// to reconnect to another replica, requests waiting for an operation
/// answered with its monitor, open requests finish (a few seconds at most),
/// agent channels end and record when their agents were last heard from, the
/// sweep of lost agents stops, the replica leaves the store, and only then
/// the store closes.
pub async fn run(
    config: ServerConfig,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let database = config
        .database
        .clone()
        .unwrap_or_else(|| "sqlite://state.db".to_owned());
    let store = Store::open(&database).await?;
    let mut api = ApiConfig::default();
    if let Some(subscription) = &config.subscription {
        api.subscription =
            SubscriptionId::parse("subscription", subscription).map_err(|err| ServerError::BadConfig {
                path: PathBuf::from("subscription"),
                message: err.to_string(),
            })?;
    }
    api.auth = Some(Tokens::from_roles(
        &config.tokens.admin,
        &config.tokens.operator,
        &config.tokens.reader,
        &config.tokens.agent,
    )?);
    api.signer = Some(match &config.token_signing_key {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ServerError::ReadConfig {
                path: path.clone(),
                source,
            })?;
            Signer::from_hex(&text).map_err(|err| ServerError::BadConfig {
                path: path.clone(),
                message: err.to_string(),
            })?
        }
        None => Signer::random().map_err(|err| ServerError::Serve(std::io::Error::other(err)))?,
    });
    // Grants through the controller are checked by whichever replica takes
    // the part: the shared signing key.
    api.grant_signer = api.signer.clone().expect("set just above");
    if let Some(seconds) = config.upload_grant_seconds {
        if seconds == 0 {
            return Err(ServerError::BadConfig {
                path: PathBuf::from("upload_grant_seconds"),
                message: "upload_grant_seconds must be at least 1 (default 900)".to_owned(),
            });
        }
        api.grant_ttl = std::time::Duration::from_secs(seconds);
    }
    api.accounts_dir.clone_from(&config.accounts_dir);
    if let Some(seconds) = config.agent_lost_seconds {
        if seconds == 0 {
            return Err(ServerError::BadConfig {
                path: PathBuf::from("agent_lost_seconds"),
                message: "agent_lost_seconds must be at least 1 (default 600)".to_owned(),
            });
        }
        api.agent_lost_after = std::time::Duration::from_secs(seconds);
    }
    if let Some(server) = config
        .agent_servers
        .iter()
        .find(|server| !is_controller_address(server))
    {
        return Err(ServerError::BadConfig {
            path: PathBuf::from("agent_servers"),
            message: format!("{server:?} is not a controller address: give each as https://host:port, without a path"),
        });
    }
    api.agent_servers.clone_from(&config.agent_servers);
    api.scheme = if config.tls.is_some() { "https" } else { "http" }.to_owned();
    if let Some(tls) = &config.tls {
        api.trust = Some(crate::tls::trust(&tls.cert).map_err(|err| ServerError::BadConfig {
            path: tls.cert.clone(),
            message: err.to_string(),
        })?);
    }
    if let Some(dir) = &config.agents_dir
        && !dir.is_dir()
    {
        return Err(ServerError::BadConfig {
            path: dir.clone(),
            message: "agents_dir is not a directory: make it, with the agent builds and their SHA256SUMS, or leave \
                      agents_dir out"
                .to_owned(),
        });
    }
    let version = config
        .build_version
        .clone()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
    api.build_version.clone_from(&version);
    let exe = std::env::current_exe()
        .inspect_err(|err| tracing::warn!(error = %err, "this controller cannot find its own binary: it serves no agent build of its own"))
        .ok();
    api.agent_builds = std::sync::Arc::new(crate::agent_builds::AgentBuilds::new(
        exe,
        &version,
        config.agents_dir.clone(),
    ));
    let accounts = Accounts::try_new(config.storage.clone()).map_err(|err| ServerError::BadConfig {
        path: PathBuf::from("storage"),
        message: err.to_string(),
    })?;
    // Not fatal: without it, agents on this machine upload over HTTPS.
    let handoff = match config.handoff_socket.as_deref().map(crate::handoff::bind).transpose() {
        Ok(handoff) => handoff,
        Err(err) => {
            tracing::warn!(error = %netwatch_api::error::error_chain(&err),
                "agents on this machine will upload over HTTPS: fix or remove handoff_socket");
            None
        }
    };
    if handoff.is_some() {
        api.handoff_socket.clone_from(&config.handoff_socket);
    }
    let state = AppState::new(store.clone(), api, accounts);
    if let Some(listener) = handoff {
        crate::handoff::serve(&state, listener);
    }
    crate::hub::watch_lost_agents(&state);
    crate::replicas::start(&state);
    let hub = state.hub.clone();
    let app = router(state).into_make_service();
    let address = listener.local_addr().map_err(ServerError::Serve)?;

    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    let (draining, drain_store) = (hub.clone(), store.clone());
    let drain_for = std::time::Duration::from_secs(config.drain_seconds.unwrap_or(0));
    tokio::spawn(async move {
        shutdown.await;
        // Drain: no new agent, the agents here move to another replica,
        // waiting requests answer with their monitor, open requests finish.
        tracing::info!(
            replica = draining.replica(),
            agents = draining.connected(),
            "controller draining: agents move to another replica, open requests finish"
        );
        draining.drain(&drain_store);
        if !drain_for.is_zero() {
            tracing::info!(
                "still answering for {drain_for:?} (drain_seconds), health 503: load balancers send new requests \
                 elsewhere"
            );
            tokio::time::sleep(drain_for).await;
        }
        stopper.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    match &config.tls {
        Some(tls) => {
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(|source| ServerError::Tls {
                    cert: tls.cert.clone(),
                    key: tls.key.clone(),
                    source,
                })?;
            tracing::info!(%address, "controller listening (https)");
            // TCP_NODELAY: a Start pushed right after a small frame must not
            // wait ~40 ms for the agent's delayed ACK (Nagle).
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls).acceptor(NoDelayAcceptor::new());
            axum_server::from_tcp(listener)
                .map_err(ServerError::Serve)?
                .acceptor(acceptor)
                .handle(handle)
                .serve(app)
                .await
                .map_err(ServerError::Serve)?;
        }
        None => {
            tracing::info!(%address, "controller listening (http)");
            axum_server::from_tcp(listener)
                .map_err(ServerError::Serve)?
                .acceptor(NoDelayAcceptor::new())
                .handle(handle)
                .serve(app)
                .await
                .map_err(ServerError::Serve)?;
        }
    }
    // Upgraded agent channels outlive their HTTP connections: they and the
    // sweep write to the store, so it closes after them.
    if !hub.shut_down(SHUTDOWN_GRACE).await {
        tracing::warn!(
            unfinished = hub.unfinished(),
            "agent channels still busy {SHUTDOWN_GRACE:?} after the shutdown; closing the store under them"
        );
    }
    if let Err(err) = store.forget_replica(hub.replica(), crate::clock::now_ms()).await {
        tracing::warn!(error = %err, "could not take this replica out of the state store: the others stop counting it within seconds");
    }
    store.close().await;
    tracing::info!("controller stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_servers_are_controller_addresses() {
        for good in ["https://a:8443", "http://10.0.0.1:80/", "https://lb.example"] {
            assert!(is_controller_address(good), "{good}");
        }
        for bad in [
            "a:8443",
            "https://",
            "https://a:8443/api",
            "https://a:1,https://b:2",
            "https://u@a:1",
            "https://a :1",
            "wss://a:1",
        ] {
            assert!(!is_controller_address(bad), "{bad}");
        }
    }
}
