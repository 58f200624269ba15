//! netwatch's host agent (DESIGN §6): holds one WebSocket to the controller,
//! runs the captures it is sent on dedicated threads with the capture engine,
//! reports every change of them, and uploads their files to storage with
//! grants from the controller, through a spool that outlives outages and
//! restarts.
//!
//! The agent connects out (it works behind NAT), so the controller never needs to
//! reach the host. Captures belong to the host once started: their limits are
//! enforced here and they keep running while the controller is unreachable; the
//! latest report of each is kept and sent again on the next connection, until a
//! connection has taken the final one.
//!
//! Enrollment: the token given may be a one-time enrollment token; the
//! controller then hands out the agent's own credential in its welcome, which
//! is kept in `DATA_DIR/credential` and used from then on.
//!
//! A capture that was running when the agent died (killed, crashed, the host
//! rebooted) is taken up on restart: the file it was writing is repaired,
//! uploaded and listed with its others; the capture then resumes in a new
//! file if its time limit has not passed, or ends `Stopped` with
//! `AgentStopped` (`recovery`). A full disk stops a capture with
//! `LocalFileFailed`; what it wrote is kept and uploaded.
//!
//! # Layout
//! - [`run`] and [`AgentConfig`]: the agent as the `netwatch agent` subcommand runs it.
//! - [`run_simulated`] (`simulate`): many fake hosts on one process, for scale benchmarks.
//! - `remote`: the controller's URLs, TLS trust and the backoff between attempts.
//! - `channel`: connect, hello/welcome, reconnect; the message loop of one connection.
//! - `supervisor`: capture threads and the book of their latest reports.
//! - `spool`: files waiting for storage, with their upload progress, and the
//!   journal of running captures, on disk.
//! - `recovery`: repair of a cut capture file; whether an interrupted capture resumes.
//! - `upload`: one file's upload: grants, parts, commit, resume.
//! - `host`: host name and network interfaces for the hello.
//! - `credential`: the agent's credential file.
//! - `upgrade`: upgrades (download, verify, stage) and uninstall as the controller asks.

mod channel;
mod credential;
mod host;
mod live;
mod metrics;
mod recorder;
mod recovery;
mod remote;
mod simulate;
mod spool;
pub use spool::SpoolError;
mod supervisor;
mod upgrade;
pub use upgrade::{Exit, FAILED_FILE, STAGED_BINARY, STAGED_FILE, UNINSTALL_FILE, UPGRADE_DIR};
mod upload;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use netwatch_api::error::error_chain;
use tokio_util::sync::CancellationToken;

use crate::remote::Remote;
use crate::supervisor::Supervisor;

pub use simulate::run_simulated;

/// The interface captures run on unless the config names one: all of them.
pub const DEFAULT_INTERFACE: &str = "any";

/// Directory under [`AgentConfig::data_dir`] that capture files are written to.
pub const CAPTURES_DIR: &str = "captures";

/// Default cap of the upload spool: 10 GiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = spool::DEFAULT_MAX_BYTES;

/// Parts of one file uploading at once; an upload holds at most this many
/// parts in memory (`upload`).
pub const PARTS_IN_FLIGHT: usize = upload::PARTS_IN_FLIGHT;

/// How long a shutdown waits for captures to finalize their files and for
/// uploads to notice the cancel, before it gives up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the agent needs to run; the `netwatch agent` subcommand builds it from
/// flags, environment and the config file.
#[derive(Clone)]
pub struct AgentConfig {
    /// The controller, `https://host:port` (or `http://` on a test bench): the
    /// channel is `wss://host:port/netwatch/v1/agent/channel` (`ws://` for http).
    /// Replicas: their addresses separated by commas; the agent holds one
    /// channel, to one of them, and moves to the next when it fails or drains.
    pub server: String,
    /// Bearer token for the channel and the uploads.
    pub token: String,
    /// PEM file of the CA(s) to trust for the controller's certificate; when set,
    /// nothing else is trusted. `None`: the operating system's roots.
    pub ca_file: Option<PathBuf>,
    /// The VM's name as the controller knows it.
    pub vm_name: String,
    pub resource_group: String,
    /// Canonical location name (`westus`).
    pub location: String,
    /// The agent's own directory; capture files go to `{data_dir}/captures`.
    pub data_dir: PathBuf,
    /// Interface captures run on ([`DEFAULT_INTERFACE`], `any`, captures on all).
    pub interface: String,
    /// Cap of the files waiting in the upload spool (`{data_dir}/spool`), in
    /// bytes ([`DEFAULT_SPOOL_MAX_BYTES`]).
    pub spool_max_bytes: u64,
    /// ARM tags the host enrolls with (its VM's tags when first registered).
    pub tags: std::collections::BTreeMap<String, String>,
    /// The agent's version, as the binary says it (`netwatch --version`).
    pub version: String,
    /// The installer's record (`/etc/netwatch/install.json`) when netwatch's
    /// installer installed this agent: it can then be upgraded and uninstalled
    /// by the controller (`upgrade`).
    pub installed: Option<PathBuf>,
    /// Where to serve the agent's metrics for Prometheus (`GET /metrics`,
    /// plain HTTP); none: not served.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The token is a secret: `Debug` leaves it out.
impl fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConfig")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .field("vm_name", &self.vm_name)
            .field("resource_group", &self.resource_group)
            .field("location", &self.location)
            .field("data_dir", &self.data_dir)
            .field("interface", &self.interface)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("tags", &self.tags)
            .field("version", &self.version)
            .field("installed", &self.installed)
            .field("metrics_listen", &self.metrics_listen)
            .finish()
    }
}

/// Why the agent could not start. Only setup fails: once running, lost
/// connections are retried forever and failed captures are reported.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("server {server:?} is not a valid controller address: {reason} (use https://host:port)")]
    Server { server: String, reason: &'static str },
    #[error("the token has characters an HTTP header cannot carry (use the token as issued)")]
    Token,
    #[error("read CA file {path}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCa { path: PathBuf },
    #[error("CA file {path} has a certificate that cannot be used")]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("set up TLS with the system's certificate roots")]
    Tls(#[source] rustls::Error),
    #[error("build the HTTP client for uploads")]
    HttpClient(#[source] reqwest::Error),
    #[error("{what} the agent's credential file {path} (delete it and enroll the host again if it is damaged)")]
    Credential {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("open the upload spool")]
    Spool(#[source] spool::SpoolError),
    #[error(transparent)]
    Metrics(#[from] metrics::ListenError),
    #[error("create capture directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` completes, or until it stops to be upgraded
/// or uninstalled ([`Exit`]): connects to the controller (again
/// and again, with backoff, whenever the connection is lost), runs the captures it
/// is sent and reports on them. On shutdown, running captures are stopped and
/// their files finalized (waiting up to a few seconds).
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<Exit, AgentError> {
    let credential_file = config.data_dir.join(credential::FILE);
    let remote = Remote::new(&config)?;
    let used_token_file = config.data_dir.join(credential::USED_TOKEN_FILE);
    let token_digest = credential::token_digest(&config.token);
    // Which token goes first: the saved credential when the token given is
    // the one it came from (spent); any other token is a new enrollment and
    // wins, the saved credential kept in case the controller refuses it.
    let fallback = match credential::load(&credential_file)? {
        Some(credential)
            if config.token.is_empty()
                || credential::load(&used_token_file)?.as_deref() == Some(token_digest.as_str()) =>
        {
            remote.set_token(&credential)?;
            tracing::info!(file = %credential_file.display(), "using the agent's saved credential");
            None
        }
        Some(credential) => {
            tracing::info!(
                file = %credential_file.display(),
                "an enrollment token this agent has not used is given: it enrolls with it (the saved credential \
                 is used only if the controller refuses the token)"
            );
            Some(credential)
        }
        None => None,
    };
    let captures_dir = config.data_dir.join(CAPTURES_DIR);
    std::fs::create_dir_all(&captures_dir).map_err(|source| AgentError::DataDir {
        path: captures_dir.clone(),
        source,
    })?;
    let uploader = upload::Uploader::new(&remote)?;
    // Agent builds come from the controller by a client of their own.
    let downloads = upload::Uploader::new(&remote)?;
    let spool_dir = config.data_dir.join(spool::SPOOL_DIR);
    let spool = spool::Spool::open(spool_dir, config.spool_max_bytes).map_err(AgentError::Spool)?;
    let cancel = CancellationToken::new();
    // Bound before anything runs: a taken address is a setup error, said at once.
    let metrics_listener = match config.metrics_listen {
        Some(address) => Some(metrics::bind(address).await?),
        None => None,
    };
    let supervisor = Supervisor::new(
        supervisor::Settings {
            captures_dir,
            interface: netwatch_capture::Interface::parse(&config.interface),
            metrics: metrics::Metrics::new(&config.version),
            recorder: recorder::Recorder::new(&config.data_dir, netwatch_capture::Interface::parse(&config.interface)),
        },
        uploader,
        spool,
        cancel.child_token(),
    );
    // What captures would fail with, said now rather than at the first one.
    match netwatch_capture::session::check_can_capture(&netwatch_capture::Interface::parse(&config.interface)) {
        Ok(()) => tracing::info!(interface = %config.interface, "this agent can capture"),
        Err(netwatch_capture::session::OpenError::NoPermission(error)) => tracing::error!(
            error = %error,
            "this agent cannot capture: CAP_NET_RAW is not in its effective capabilities. Run it as root, or \
             grant it CAP_NET_RAW (a systemd unit: AmbientCapabilities=CAP_NET_RAW CAP_SYS_NICE); captures it is \
             sent fail until then"
        ),
        Err(error) => tracing::error!(
            error = %crate::error_chain(&error),
            "this agent cannot capture on interface {}: captures it is sent fail until that is fixed (--interface)",
            config.interface
        ),
    }
    let host_id = credential::host_id(&config.data_dir.join(credential::HOST_ID_FILE))?;
    let identity = channel::Identity::from_config(&config, host_id);
    let upgrades = upgrade::Upgrades::new(
        &config.data_dir,
        &config.version,
        config.installed.clone(),
        cancel.clone(),
    );
    tracing::info!(
        server = %config.server,
        vm = %config.vm_name,
        interface = %config.interface,
        version = %config.version,
        "agent starting"
    );
    if let Some(listener) = metrics_listener {
        if let Ok(address) = listener.local_addr() {
            tracing::info!("metrics for Prometheus at http://{address}{}", metrics::METRICS_PATH);
        }
        tokio::spawn(metrics::serve(listener, supervisor.clone(), cancel.child_token()));
    }
    tokio::join!(
        async {
            tokio::select! {
                () = shutdown => cancel.cancel(),
                () = cancel.cancelled() => {}
            }
        },
        upgrades.run(&supervisor, &downloads, &remote),
        channel::run(
            &remote,
            &identity,
            channel::Enrollment {
                credential_file: &credential_file,
                used_token_file: &used_token_file,
                token_digest: &token_digest,
                fallback,
            },
            &supervisor,
            &upgrades,
            &cancel
        ),
    );
    tracing::info!("agent stopping");
    supervisor.shutdown(SHUTDOWN_GRACE).await;
    Ok(upgrades.exit())
}

/// Why [`enroll`] did not enroll the host.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Setup(#[from] AgentError),
    /// The controller said no (a spent, expired or unknown token, a bad hello).
    #[error(
        "the controller refused the enrollment: {0}. An enrollment token works once and expires after a day: get a \
         new one with `netwatch vm extension set` (or `vmss extension set`)"
    )]
    Refused(String),
    #[error("could not reach the controller to enroll")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Enrolls the host once, now, with `config`'s token (what an installer
/// does before it installs anything): the credential the controller hands
/// out is saved in the data directory, where [`run`] finds it. Returns the
/// VM id the host registered as.
pub async fn enroll(config: &AgentConfig) -> Result<String, EnrollError> {
    let remote = Remote::new(config)?;
    let host_id = credential::host_id(&config.data_dir.join(credential::HOST_ID_FILE))?;
    let identity = channel::Identity::from_config(config, host_id);
    let hello = identity.hello(host::interfaces(), Vec::new(), None);
    let welcome = async {
        let mut ws = channel::connect(&remote, channel::ws_config()).await?;
        let welcome = channel::handshake(&mut ws, &hello).await?;
        let _ = ws.close(None).await;
        Ok::<_, channel::ChannelError>(welcome)
    }
    .await
    .map_err(|error| match channel::refusal_reason(&error) {
        Some(reason) => EnrollError::Refused(reason),
        None => EnrollError::Unreachable(Box::new(error)),
    })?;
    let Some(credential) = welcome.credential else {
        return Err(EnrollError::Refused(
            "it took the token as an agent's own credential and handed out none: give an enrollment token".to_owned(),
        ));
    };
    credential::save(&config.data_dir.join(credential::FILE), &credential)?;
    credential::save(
        &config.data_dir.join(credential::USED_TOKEN_FILE),
        &credential::token_digest(&config.token),
    )?;
    Ok(welcome.vm_id)
}

/// Where the host stands with enrollment, by its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrolled {
    /// No credential of its own.
    No,
    /// A credential, which `token` gave (that token is spent here).
    ByThisToken,
    /// A credential, from another token.
    Otherwise,
}

/// Whether the host of `data_dir` holds a credential, and whether `token` is
/// the one it came from (an installer run again with it has nothing to do).
pub fn enrolled(data_dir: &std::path::Path, token: &str) -> Result<Enrolled, AgentError> {
    if credential::load(&data_dir.join(credential::FILE))?.is_none() {
        return Ok(Enrolled::No);
    }
    let used = credential::load(&data_dir.join(credential::USED_TOKEN_FILE))?;
    Ok(if used.as_deref() == Some(credential::token_digest(token).as_str()) {
        Enrolled::ByThisToken
    } else {
        Enrolled::Otherwise
    })
}

/// The agent builds the controller `config` names publishes (their SHA-256s):
/// what a staged upgrade is checked against before it is installed.
pub async fn published_builds(config: &AgentConfig) -> Result<Vec<netwatch_api::agent::AgentBuild>, EnrollError> {
    let remote = Remote::new(config)?;
    let client = upload::Uploader::new(&remote)?;
    let url = remote.http_url(netwatch_api::agent::AGENT_BUILDS_PATH);
    let unreachable = |error: reqwest::Error| EnrollError::Unreachable(Box::new(error));
    client
        .controller()
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(unreachable)?
        .json()
        .await
        .map_err(unreachable)
}

/// Milliseconds since the Unix epoch, as the channel's `*_ms` fields count.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_joins_causes() {
        let error = AgentError::ReadCa {
            path: "/etc/ca.pem".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(error_chain(&error), "read CA file /etc/ca.pem: no such file");
    }

    #[test]
    fn debug_hides_the_token() {
        let config = AgentConfig {
            server: "https://c:8443".into(),
            token: "s3cret".into(),
            ca_file: None,
            vm_name: "vm1".into(),
            resource_group: "rg".into(),
            location: "westus".into(),
            data_dir: "/var/lib/netwatch".into(),
            interface: DEFAULT_INTERFACE.into(),
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            tags: Default::default(),
            version: "0.1.0".into(),
            installed: None,
            metrics_listen: None,
        };
        let text = format!("{config:?}");
        assert!(!text.contains("s3cret") && text.contains("redacted"), "{text}");
    }
}
