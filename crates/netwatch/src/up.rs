//! `netwatch up`: the embedded default (DESIGN §1, §7): the controller, an
//! agent for this machine and local-directory storage in one process, on
//! 127.0.0.1, over a data directory that holds everything:
//!
//! ```text
//! DIR/config.toml        the controller's configuration (`netwatch server --config` reads it)
//! DIR/ca.pem             the CA clients trust; server.pem + server.key its certificate
//! DIR/credentials.toml   the admin and agent tokens in clear (0600)
//! DIR/signing.key        the key that signs az's and the SDKs' access tokens (0600)
//! DIR/env                `export NETWATCH_URL=… NETWATCH_TOKEN=… NETWATCH_CA=…` for `source`
//! DIR/state.db           the state (SQLite)
//! DIR/storage/           storage account `netwatchlocal`: the capture files
//! DIR/accounts/{name}/   storage accounts made with `netwatch storage account create`
//! DIR/agent/             this machine's agent: captures before upload
//! ```
//!
//! The first run makes all of it; later runs start again on the same data.
//! The client configuration the CLI reads goes to
//! `$XDG_CONFIG_HOME/netwatch/config.toml` (default `~/.config/netwatch`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use netwatch_agent::AgentConfig;
use netwatch_controller::auth::{digest, new_token};
use netwatch_controller::server::{ServerConfig, TlsFiles, TokenDigests};
use netwatch_storage::{AccountConfig, AccountKind};
use serde::{Deserialize, Serialize};

/// The storage account `up` configures.
pub const LOCAL_ACCOUNT: &str = "netwatchlocal";
/// The resource group and location this machine registers in.
const GROUP: &str = "netwatch";
const LOCATION: &str = "westus";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where everything is kept; default $XDG_DATA_HOME/netwatch (~/.local/share/netwatch).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Address to listen on; default the data directory's, first 127.0.0.1:8443. Port 0 picks a free one.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,

    /// Run the controller only, without an agent for this machine.
    #[arg(long)]
    no_agent: bool,

    /// Agent builds to serve besides this binary (other architectures,
    /// newer versions): netwatch-VERSION-ARCH files and their SHA256SUMS.
    #[arg(long, value_name = "DIR")]
    agents_dir: Option<PathBuf>,
}

/// Tokens in clear, kept beside the configuration that holds their digests.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    admin_token: String,
    agent_token: String,
}

pub fn run(args: Args) -> Result<()> {
    let dir = match args.data_dir {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    let fresh = !dir.join("config.toml").exists();
    if fresh {
        initialize(
            &dir,
            args.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8443))),
        )?;
    }
    let config_path = dir.join("config.toml");
    let mut config = ServerConfig::load(&config_path)
        .with_context(|| format!("read {} (delete the directory to start afresh)", config_path.display()))?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(agents) = &args.agents_dir {
        if !agents.is_dir() {
            bail!(crate::UsageError(format!(
                "--agents-dir {}: agents_dir is not a directory: make it, with the agent builds \
                 (netwatch-VERSION-ARCH) and their SHA256SUMS",
                agents.display()
            )));
        }
        config.agents_dir = Some(agents.clone());
    }
    config.build_version = Some(crate::VERSION.to_owned());
    // One machine: agents on it hand parts of local accounts over through
    // this socket instead of sending them over HTTPS (the controller's handoff.rs).
    if config.handoff_socket.is_none() {
        config.handoff_socket = Some(dir.join("handoff.sock"));
    }
    let credentials: Credentials = toml::from_str(
        &std::fs::read_to_string(dir.join("credentials.toml")).context("read the data directory's credentials")?,
    )
    .context("the data directory's credentials.toml is damaged")?;
    let listener = crate::server::bind(config.listen)?;
    let port = listener.local_addr().context("read the listening address")?.port();
    let address = listener.local_addr().context("read the listening address")?;
    let url = if address.ip().is_unspecified() {
        format!("https://127.0.0.1:{port}")
    } else {
        format!("https://{address}")
    };
    let ca = dir.join("ca.pem");
    write_env(&dir, &url, &credentials.admin_token, &ca)?;
    let client_config = write_client_config(&url, &credentials.admin_token, &ca)?;

    let vm_name = crate::agent::host_vm_name()?;
    // Not println!: a closed standard output (a pipe whose reader left) must
    // not stop the service.
    let _ = writeln!(
        std::io::stdout(),
        "netwatch is up{}.\n  URL:          {url}\n  console:      {url}/console/ (sign in with the admin token; \
         the browser must trust the CA)\n  admin token:  {token}\n  CA:           {ca}\n  \
         environment:  source {env}\n  client:       {client}\n  this machine: VM {vm_name} in resource group {GROUP}, \
         {LOCATION}; storage account {LOCAL_ACCOUNT}\n\
         Azure's own az works too (with REQUESTS_CA_BUNDLE={ca}):\n  \
         az cloud register --name netwatch --endpoint-resource-manager {url}/ && az cloud set --name netwatch \
         && az config set core.instance_discovery=false\n  \
         az login --service-principal -u netwatch -p {token} --tenant {tenant}\n\
         Stop with Ctrl-C; `netwatch up --data-dir {dir}` starts it again on the same data.",
        if fresh { " (new data directory)" } else { "" },
        token = credentials.admin_token,
        ca = ca.display(),
        env = dir.join("env").display(),
        client = client_config.display(),
        tenant = netwatch_api::resource::DEFAULT_SUBSCRIPTION_ID,
        dir = dir.display(),
    );
    if !args.no_agent && !running_as_root() {
        eprintln!("warning: not running as root: this machine's agent cannot capture (captures will fail)");
    }
    let agent = (!args.no_agent).then(|| AgentConfig {
        server: url.clone(),
        token: credentials.agent_token.clone(),
        ca_file: Some(ca.clone()),
        vm_name,
        resource_group: GROUP.to_owned(),
        location: LOCATION.to_owned(),
        data_dir: dir.join("agent"),
        interface: "any".to_owned(),
        spool_max_bytes: netwatch_agent::DEFAULT_SPOOL_MAX_BYTES,
        tags: Default::default(),
        version: crate::VERSION.to_owned(),
        installed: None,
        metrics_listen: None,
    });
    crate::runtime()?.block_on(async move {
        let (stop_server, server_stops) = tokio::sync::oneshot::channel::<()>();
        let mut server = tokio::spawn(netwatch_controller::server::run(config, listener, async move {
            let _ = server_stops.await;
        }));
        let (stop_agent, agent_stops) = tokio::sync::oneshot::channel::<()>();
        let agent = agent.map(|agent| {
            tokio::spawn(netwatch_agent::run(agent, async move {
                let _ = agent_stops.await;
            }))
        });
        // The controller may fail as it starts (its configuration): then
        // `up` ends with its error rather than wait for a signal.
        tokio::select! {
            () = crate::shutdown_signal() => {}
            ended = &mut server => {
                return ended
                    .context("the controller task failed")
                    .and_then(|run| run.context("run the controller"))
                    .and_then(|()| anyhow::bail!("the controller stopped by itself"));
            }
        }
        eprintln!("stopping…");
        // In order: the agent first (its captures finalized, its channel
        // closed, which the controller records), then the controller (no new
        // requests, open ones and channels finish, the store closes last).
        // The other way round, the controller would close the agent's
        // channel under it, and the agent would take that for an outage.
        let _ = stop_agent.send(());
        let stopped_agent = match agent {
            Some(agent) => agent
                .await
                .context("the agent task failed")
                .and_then(|run| run.map(|_| ()).context("run the agent")),
            None => Ok(()),
        };
        let _ = stop_server.send(());
        let stopped_server = server
            .await
            .context("the controller task failed")
            .and_then(|run| run.context("run the controller"));
        stopped_agent.and(stopped_server)
    })
}

/// `$XDG_DATA_HOME/netwatch`, or `~/.local/share/netwatch`.
fn default_data_dir() -> Result<PathBuf> {
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(data).join("netwatch"));
    }
    let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else {
        bail!(crate::UsageError(
            "neither XDG_DATA_HOME nor HOME is set: pass --data-dir DIR".to_owned()
        ));
    };
    Ok(PathBuf::from(home).join(".local/share/netwatch"))
}

/// Makes a new data directory: certificates, tokens, configuration.
fn initialize(dir: &Path, listen: SocketAddr) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create the data directory {}", dir.display()))?;
    for sub in ["storage", "agent"] {
        std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("create {}", dir.join(sub).display()))?;
    }
    let mut hosts = ["127.0.0.1", "::1", "localhost"].map(str::to_owned).to_vec();
    // Listening on another address (a namespace's, a LAN's): agents reach it there.
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        hosts.push(listen.ip().to_string());
    }
    let pki = netwatch_controller::tls::make_pki("netwatch", &hosts).context("make the CA and server certificate")?;
    write_file(&dir.join("ca.pem"), &pki.ca_pem, 0o644)?;
    write_file(&dir.join("server.pem"), &pki.chain_pem, 0o644)?;
    write_file(&dir.join("server.key"), &pki.key_pem, 0o600)?;
    let credentials = Credentials {
        admin_token: new_token().context("make a token")?,
        agent_token: new_token().context("make a token")?,
    };
    let config = ServerConfig {
        listen,
        database: None,
        subscription: None,
        tls: Some(TlsFiles {
            cert: "server.pem".into(),
            key: "server.key".into(),
        }),
        tokens: TokenDigests {
            admin: vec![digest(&credentials.admin_token)],
            operator: Vec::new(),
            reader: Vec::new(),
            agent: vec![digest(&credentials.agent_token)],
        },
        token_signing_key: Some("signing.key".into()),
        storage: vec![
            AccountConfig::new(LOCAL_ACCOUNT, AccountKind::Local { path: "storage".into() })
                .context("the local storage account's name")?,
        ],
        accounts_dir: None,
        agent_lost_seconds: None,
        upload_grant_seconds: None,
        agents_dir: None,
        agent_servers: Vec::new(),
        drain_seconds: None,
        handoff_socket: None,
        build_version: None,
    };
    write_file(&dir.join("signing.key"), &new_token().context("make a key")?, 0o600)?;
    write_file(
        &dir.join("credentials.toml"),
        &toml::to_string(&credentials).context("write the credentials")?,
        0o600,
    )?;
    // The configuration last: its presence marks a complete directory.
    let text = format!(
        "# netwatch controller configuration, written by `netwatch up`.\n{}",
        toml::to_string(&config).context("write the configuration")?
    );
    write_file(&dir.join("config.toml"), &text, 0o600)?;
    Ok(())
}

/// `DIR/env`: lines a shell can `source`.
fn write_env(dir: &Path, url: &str, token: &str, ca: &Path) -> Result<()> {
    let text = format!(
        "export NETWATCH_URL={url}\nexport NETWATCH_TOKEN={token}\nexport NETWATCH_CA={}\n",
        ca.display()
    );
    write_file(&dir.join("env"), &text, 0o600)
}

/// The CLI's client configuration; its path.
fn write_client_config(url: &str, token: &str, ca: &Path) -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        Some(config) => PathBuf::from(config),
        None => match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!(crate::UsageError(
                "neither XDG_CONFIG_HOME nor HOME is set: set one for the client configuration".to_owned()
            )),
        },
    };
    let dir = base.join("netwatch");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join("config.toml");
    let text = format!(
        "# netwatch client settings, written by `netwatch up`.\nserver = {url:?}\ntoken = {token:?}\nca = {:?}\n",
        ca.display().to_string()
    );
    write_file(&path, &text, 0o600)?;
    Ok(path)
}

/// Writes `text` to `path` with `mode`, through a temporary file and a rename
/// so a crash leaves the old file or the new one.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    let temporary = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .with_context(|| format!("create {}", temporary.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("write {}", path.display()))
}

/// Whether this process runs as root (from /proc, without unsafe code).
pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}
