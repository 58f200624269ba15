//! `netwatch agent`: the host agent (DESIGN §6), the "VM extension" of Azure's
//! guide. Connects out to the controller, registers this host as a VM and
//! runs the captures the controller pushes.
//!
//! Settings come from flags, then from `--config FILE` (TOML, the keys below,
//! what an installer writes to `/etc/netwatch/agent.toml`), then from
//! defaults: a flag overrides the file. A bad file is refused with the key and
//! line at fault. The enrollment token is needed only until the agent has a
//! credential of its own (`DATA_DIR/credential`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use netwatch_agent::{AgentConfig, Exit};
use netwatch_api::agent::EXIT_UPGRADE;

/// Defaults of the settings a flag or the file may give.
const DEFAULT_RESOURCE_GROUP: &str = "netwatch";
const DEFAULT_LOCATION: &str = "westus";
const DEFAULT_DATA_DIR: &str = "/var/lib/netwatch/agent";
const DEFAULT_INTERFACE: &str = "any";

#[derive(Debug, Default, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Box<Action>>,

    /// A config file (TOML) with any of the settings below (keys as the flags,
    /// with `_`: server, enroll_token, ca, vm_name, resource_group, location,
    /// data_dir, interface, spool_max_mib, tags); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// The controller's URL, e.g. https://controller.example:8443; with
    /// replicas, their URLs separated by commas (the agent uses one and moves
    /// to the next when it fails or drains).
    #[arg(long, env = "NETWATCH_URL", value_name = "URL[,URL…]")]
    server: Option<String>,

    /// The enrollment token the controller's operator gave out; not needed
    /// once the agent has a credential of its own (DATA_DIR/credential).
    #[arg(long, env = "NETWATCH_ENROLL_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    enroll_token: Option<String>,

    /// A CA certificate (PEM) to trust for the controller, e.g. the ca.pem `netwatch up` made.
    #[arg(long, env = "NETWATCH_CA", value_name = "FILE")]
    ca: Option<PathBuf>,

    /// The VM name this host registers as; default its host name.
    #[arg(long, value_name = "NAME")]
    vm_name: Option<String>,

    /// The resource group the VM is in [default: netwatch].
    #[arg(long, short = 'g', value_name = "GROUP")]
    resource_group: Option<String>,

    /// The location (region) the VM is in; must be one the controller serves [default: westus].
    #[arg(long, short = 'l', value_name = "LOCATION")]
    location: Option<String>,

    /// Where captures are written before upload [default: /var/lib/netwatch/agent].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Interface to capture on; `any` captures on all of them [default: any].
    #[arg(long, short = 'i', value_name = "IFACE")]
    interface: Option<String>,
    /// Cap of the capture files waiting for upload in DATA_DIR/spool, in MiB
    /// (new captures are refused while it is full) [default: 1024].
    #[arg(long, value_name = "MIB")]
    spool_max: Option<u64>,

    /// A tag of this host, KEY=VALUE (repeat for more): its VM's tags when it
    /// first registers; captures may choose hosts by tag.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,

    /// Serve the agent's metrics for Prometheus at http://ADDR:PORT/metrics
    /// (plain HTTP, no token: bind loopback or a management network).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,

    /// Benchmarks only: connect this many simulated agents that acknowledge captures without capturing.
    #[arg(long, value_name = "COUNT", hide = true)]
    simulate: Option<usize>,
}

/// The agent as an installed service (`install.rs`).
#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Install this binary as the agent's system service, enrolled with the
    /// controller: what the controller's install.sh runs (as root).
    Install(Box<crate::install::InstallArgs>),
    /// Carry out what the agent prepared as it stopped (an upgrade, an
    /// uninstall): its unit's ExecStopPost runs it as root.
    Apply(crate::install::ApplyArgs),
    /// Remove the agent the installer installed (its captures stay unless --purge).
    Uninstall(crate::install::UninstallArgs),
}

/// The config file's settings (`--config`): the flags' names with `_`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    enroll_token: Option<String>,
    ca: Option<PathBuf>,
    vm_name: Option<String>,
    resource_group: Option<String>,
    location: Option<String>,
    data_dir: Option<PathBuf>,
    interface: Option<String>,
    spool_max_mib: Option<u64>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    metrics_listen: Option<std::net::SocketAddr>,
}

/// Reads `--config`: a TOML error names the line and the key.
fn read_config(path: &Path) -> Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read the agent's config file {}", path.display()))?;
    let file: FileConfig =
        toml::from_str(&text).map_err(|err| anyhow::anyhow!("config file {}: {err}", path.display()))?;
    for (name, value) in &file.tags {
        parse_tag(&format!("{name}={value}"))
            .map_err(|err| anyhow::anyhow!("config file {}: tags: {err}", path.display()))?;
    }
    Ok(file)
}

/// The agent's settings: each from its flag, else the file, else its default.
fn settings(args: &Args, file: FileConfig, host_name: impl FnOnce() -> Result<String>) -> Result<AgentConfig> {
    let Some(server) = args.server.clone().or(file.server) else {
        bail!("no controller to connect to: give --server URL (or `server` in the config file)");
    };
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let token = args.enroll_token.clone().or(file.enroll_token).unwrap_or_default();
    if token.is_empty() && !data_dir.join("credential").exists() {
        bail!(
            "no enrollment token, and no credential in {}: give --enroll-token TOKEN (or `enroll_token` in the \
             config file), the token `netwatch vm extension set` prints",
            data_dir.display()
        );
    }
    let vm_name = match args.vm_name.clone().or(file.vm_name) {
        Some(name) => name,
        None => host_name()?,
    };
    let mut tags = file.tags;
    tags.extend(args.tags.iter().cloned());
    Ok(AgentConfig {
        server,
        token,
        ca_file: args.ca.clone().or(file.ca),
        vm_name,
        resource_group: args
            .resource_group
            .clone()
            .or(file.resource_group)
            .unwrap_or_else(|| DEFAULT_RESOURCE_GROUP.to_owned()),
        location: args
            .location
            .clone()
            .or(file.location)
            .unwrap_or_else(|| DEFAULT_LOCATION.to_owned()),
        data_dir,
        interface: args
            .interface
            .clone()
            .or(file.interface)
            .unwrap_or_else(|| DEFAULT_INTERFACE.to_owned()),
        spool_max_bytes: args
            .spool_max
            .or(file.spool_max_mib)
            .map_or(netwatch_agent::DEFAULT_SPOOL_MAX_BYTES, |mib| {
                mib.saturating_mul(1024 * 1024)
            }),
        tags,
        version: crate::VERSION.to_owned(),
        installed: None,
        metrics_listen: args.metrics_listen.or(file.metrics_listen),
    })
}

pub fn run(mut args: Args) -> Result<ExitCode> {
    match args.action.take().map(|action| *action) {
        Some(Action::Install(install)) => {
            return crate::install::install(*install, crate::VERSION).map(|()| ExitCode::SUCCESS);
        }
        Some(Action::Apply(apply)) => return crate::install::apply(apply).map(|()| ExitCode::SUCCESS),
        Some(Action::Uninstall(uninstall)) => {
            return crate::install::uninstall(uninstall).map(|()| ExitCode::SUCCESS);
        }
        None => {}
    }
    let file = match &args.config {
        Some(path) => read_config(path)?,
        None => FileConfig::default(),
    };
    let mut config = settings(&args, file, host_vm_name)?;
    config.installed = installed_by(args.config.as_deref());
    let exit = crate::runtime()?.block_on(async move {
        match args.simulate {
            Some(count) => netwatch_agent::run_simulated(config, count, crate::shutdown_signal())
                .await
                .map(|()| Exit::Stopped),
            None => netwatch_agent::run(config, crate::shutdown_signal()).await,
        }
        .context("run the agent")
    })?;
    Ok(match exit {
        Exit::Stopped | Exit::Uninstall { .. } => ExitCode::SUCCESS,
        // The unit restarts it (Restart=on-failure) once ExecStopPost installed the build.
        Exit::Upgrade { .. } => ExitCode::from(u8::try_from(EXIT_UPGRADE).unwrap_or(1)),
    })
}

/// The installer's record when it installed this agent with `config`.
fn installed_by(config: Option<&Path>) -> Option<PathBuf> {
    let record: crate::install::Record =
        serde_json::from_str(&std::fs::read_to_string(crate::install::RECORD).ok()?).ok()?;
    (config? == record.config).then(|| PathBuf::from(crate::install::RECORD))
}

/// The agent's settings from its config file alone (`netwatch agent apply`
/// asks the controller with them).
pub(crate) fn config_for_apply(path: &Path) -> Result<AgentConfig> {
    let file = read_config(path)?;
    settings(&Args::default(), file, host_vm_name)
}

/// `--tag KEY=VALUE`.
pub(crate) fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() && name.len() <= 512 && value.len() <= 256 => {
            Ok((name.to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "{text:?} is not a tag: write KEY=VALUE, the key 1 to 512 characters, the value at most 256"
        )),
    }
}

/// This host's name as a VM name: ARM names take letters, digits, `_ - .`.
pub fn host_vm_name() -> Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").context("read this host's name")?;
    let name: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    Ok(name.trim_end_matches('.').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<FileConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        read_config(&path)
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "server = \"https://c:8443\"\nenroll_token = \"t\"\nresource_group = \"rg-file\"\ninterface = \"eth0\"\n\
             data_dir = \"{}\"\nspool_max_mib = 5\ntags = {{ role = \"web\" }}\n",
            dir.path().display()
        );
        let args = Args {
            resource_group: Some("rg-flag".into()),
            tags: vec![("tier".into(), "edge".into())],
            ..Args::default()
        };
        let config = settings(&args, file(&text).unwrap(), || Ok("host-1".into())).unwrap();
        assert_eq!(config.server, "https://c:8443");
        assert_eq!(config.resource_group, "rg-flag", "a flag overrides the file");
        assert_eq!(config.interface, "eth0");
        assert_eq!(config.location, DEFAULT_LOCATION);
        assert_eq!(config.vm_name, "host-1");
        assert_eq!(config.spool_max_bytes, 5 * 1024 * 1024);
        assert_eq!(config.tags.len(), 2);
    }

    #[test]
    fn bad_config_files_name_the_key_and_the_line() {
        for (text, expect) in [
            ("server = \"x\"\nservr = \"y\"\n", ["line 2", "servr"]),
            (
                "server = \"x\"\n\nspool_max_mib = \"big\"\n",
                ["line 3", "spool_max_mib"],
            ),
            ("interface = 5\n", ["line 1", "interface"]),
            ("tags = { \"\" = \"x\" }\n", ["tags", "not a tag"]),
            (
                "server = \"x\"\nmetrics_listen = \"localhost\"\n",
                ["line 2", "metrics_listen"],
            ),
        ] {
            let err = format!("{:#}", file(text).unwrap_err());
            for word in expect {
                assert!(err.contains(word), "{text:?}: {err}");
            }
        }
    }

    #[test]
    fn a_token_is_needed_until_the_agent_has_a_credential() {
        let dir = tempfile::tempdir().unwrap();
        let args = Args {
            server: Some("https://c:8443".into()),
            data_dir: Some(dir.path().to_owned()),
            ..Args::default()
        };
        let err = settings(&args, FileConfig::default(), || Ok("h".into())).unwrap_err();
        assert!(err.to_string().contains("--enroll-token"), "{err}");
        std::fs::write(dir.path().join("credential"), "c").unwrap();
        let config = settings(&args, FileConfig::default(), || Ok("h".into())).unwrap();
        assert!(config.token.is_empty());
        let err = settings(&Args::default(), FileConfig::default(), || Ok("h".into())).unwrap_err();
        assert!(err.to_string().contains("--server"), "{err}");
    }
}
