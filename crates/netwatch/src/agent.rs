//! `netwatch agent`: the host agent (DESIGN §6), the "VM extension" of Azure's
//! guide. Runs as root, connects out to the controller, registers this host as
//! a VM and runs the captures the controller pushes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use netwatch_agent::AgentConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The controller's URL, e.g. https://controller.example:8443.
    #[arg(long, env = "NETWATCH_URL", value_name = "URL")]
    server: String,

    /// The enrollment token the controller's operator gave out.
    #[arg(long, env = "NETWATCH_ENROLL_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    enroll_token: String,

    /// A CA certificate (PEM) to trust for the controller, e.g. the ca.pem `netwatch up` made.
    #[arg(long, env = "NETWATCH_CA", value_name = "FILE")]
    ca: Option<PathBuf>,

    /// The VM name this host registers as; default its host name.
    #[arg(long, value_name = "NAME")]
    vm_name: Option<String>,

    /// The resource group the VM is in.
    #[arg(long, short = 'g', value_name = "GROUP", default_value = "netwatch")]
    resource_group: String,

    /// The location (region) the VM is in; must be one the controller serves.
    #[arg(long, short = 'l', value_name = "LOCATION", default_value = "westus")]
    location: String,

    /// Where captures are written before upload.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/netwatch/agent")]
    data_dir: PathBuf,

    /// Interface to capture on; `any` captures on all of them.
    #[arg(long, short = 'i', value_name = "IFACE", default_value = "any")]
    interface: String,
    /// Cap of the capture files waiting for upload in DATA_DIR/spool, in MiB
    /// (new captures are refused while it is full).
    #[arg(long, value_name = "MIB", default_value_t = netwatch_agent::DEFAULT_SPOOL_MAX_BYTES / (1024 * 1024))]
    spool_max: u64,

    /// A tag of this host, KEY=VALUE (repeat for more): its VM's tags when it
    /// first registers; captures may choose hosts by tag.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,

    /// Benchmarks only: connect this many simulated agents that acknowledge captures without capturing.
    #[arg(long, value_name = "COUNT", hide = true)]
    simulate: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let vm_name = match args.vm_name {
        Some(name) => name,
        None => host_vm_name()?,
    };
    let config = AgentConfig {
        server: args.server,
        token: args.enroll_token,
        ca_file: args.ca,
        vm_name,
        resource_group: args.resource_group,
        location: args.location,
        data_dir: args.data_dir,
        interface: args.interface,
        spool_max_bytes: args.spool_max.saturating_mul(1024 * 1024),
        tags: args.tags.into_iter().collect(),
    };
    crate::runtime()?.block_on(async move {
        match args.simulate {
            Some(count) => netwatch_agent::run_simulated(config, count, crate::shutdown_signal()).await,
            None => netwatch_agent::run(config, crate::shutdown_signal()).await,
        }
        .context("run the agent")
    })
}

/// `--tag KEY=VALUE`.
fn parse_tag(text: &str) -> Result<(String, String), String> {
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
