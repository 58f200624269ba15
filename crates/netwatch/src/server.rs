//! `netwatch server --config FILE`: the controller alone (DESIGN §1), for
//! deployments where agents run on other hosts. `netwatch up` writes such a
//! file; the controller crate documents its keys.

use std::path::PathBuf;

use anyhow::{Context, Result};
use netwatch_controller::server::{self, ServerConfig, ServerError};

use crate::UsageError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The controller's configuration file (TOML), e.g. the `config.toml` `netwatch up` wrote.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,

    /// Listen here instead of the file's `listen` (e.g. 127.0.0.1:0 for any free port).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
}

pub fn run(args: Args) -> Result<()> {
    let mut config = ServerConfig::load(&args.config).map_err(|err| match err {
        ServerError::ReadConfig { .. } | ServerError::BadConfig { .. } => {
            anyhow::Error::new(UsageError(format!("{:#}", anyhow::Error::new(err))))
        }
        other => anyhow::Error::new(other),
    })?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.build_version = Some(crate::VERSION.to_owned());
    let listener = bind(config.listen)?;
    let url = format!(
        "{}://{}",
        if config.tls.is_some() { "https" } else { "http" },
        listener.local_addr().context("read the listening address")?
    );
    eprintln!("netwatch controller listening on {url}");
    crate::runtime()?.block_on(async move {
        server::run(config, listener, crate::shutdown_signal())
            .await
            .context("run the controller")
    })
}

/// Where Linux says whether connections waiting in a closing listener's
/// queue move to another listener of its `SO_REUSEPORT` group (5.14+).
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Says, once at start, when a rolling restart on this port could reset a
/// few connections: with `tcp_migrate_req` off, the connections the kernel
/// queued for the old process and that it had not accepted when it closed its
/// port are reset instead of handed to the new one.
fn hint_migrate_req() {
    if std::fs::read_to_string(MIGRATE_REQ).is_ok_and(|value| value.trim() == "0") {
        tracing::info!(
            "net.ipv4.tcp_migrate_req is 0: when this controller restarts on its own port, connections still queued \
             for the old process are reset; `sysctl -w net.ipv4.tcp_migrate_req=1` hands them to the new one"
        );
    }
}

/// A listener on `address`, with the fix in the message when it is taken.
///
/// `SO_REUSEPORT`: a controller started again on its own port while the old
/// process still runs shares the port (the kernel hands each new connection
/// to one of them), so a restart is the new one starting, then the old one
/// draining (SIGTERM): clients connecting meanwhile never find the port
/// closed. Only processes of the same user may share a port.
pub fn bind(address: std::net::SocketAddr) -> Result<std::net::TcpListener> {
    let listen = || -> std::io::Result<std::net::TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(address),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&address.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    };
    hint_migrate_req();
    listen().map_err(|err| {
        let fix = if err.kind() == std::io::ErrorKind::AddrInUse {
            " (another program uses this port: stop it, or pass --listen with another port, 0 for any free one)"
        } else {
            ""
        };
        anyhow::Error::new(UsageError(format!("cannot listen on {address}: {err}{fix}")))
    })
}
