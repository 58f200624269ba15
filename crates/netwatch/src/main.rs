//! The one netwatch binary: picks a subcommand and calls its `run`. Every role
//! lives here (DESIGN §1): the controller (`server`), the host agent (`agent`),
//! both with local storage on one machine (`up`), the local capture, and the
//! az-shaped client commands (`vm`, `network`, `storage`, `login`: netwatch-cli).
//!
//! Exit codes: 0 success, 1 failure, 2 usage or configuration error (STYLE 11);
//! the client commands add az's 3 for a resource that does not exist.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod capture;
mod install;
mod server;
mod up;

/// Remote packet capture for fleets of Linux hosts, compatible with Azure Network Watcher.
#[derive(Debug, Parser)]
#[command(name = "netwatch", version = VERSION, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run netwatch on this machine: controller, agent and local storage, on 127.0.0.1 (the embedded default).
    Up(up::Args),
    /// Run the controller: the ARM-compatible REST API and the agents' hub.
    Server(server::Args),
    /// Run the agent on this host: registers it as a VM and runs the captures the controller pushes.
    Agent(agent::Args),
    /// Capture packets on this host into a pcap file, like tcpdump, with Azure's filters and limits.
    Capture(capture::Args),
    #[command(flatten)]
    Client(netwatch_cli::Command),
}

/// This build's version: the crate's, or `NETWATCH_BUILD_VERSION` when the
/// build was made with it set (a release pipeline, the upgrade tests'
/// second build). The agent reports it; the controller serves its own binary
/// as the agent build of this version.
pub const VERSION: &str = match option_env!("NETWATCH_BUILD_VERSION") {
    Some(version) => version,
    None => env!("CARGO_PKG_VERSION"),
};

/// An error that is the user's to fix (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn main() -> ExitCode {
    // Wireshark runs its extcap programs with flags of its own (`netwatch`
    // linked into its extcap folder): answered before this parser sees them.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if netwatch_cli::extcap::is_extcap_call(&args) {
        return netwatch_cli::extcap::run(&args);
    }
    let cli = Cli::parse();
    // Services log what they do; the capture command keeps stderr for its summary.
    let default_level = match cli.command {
        Command::Capture(_) | Command::Client(_) => "warn",
        Command::Up(_) | Command::Server(_) | Command::Agent(_) => "info",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    let result = match cli.command {
        // az's error text and exit codes are the client's own.
        Command::Client(command) => return netwatch_cli::run(command),
        Command::Capture(args) => capture::run(args),
        Command::Up(args) => up::run(args).map(|()| ExitCode::SUCCESS),
        Command::Server(args) => server::run(args).map(|()| ExitCode::SUCCESS),
        Command::Agent(args) => agent::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The async runtime of the long-running roles.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        // Without a SIGTERM handler, Ctrl-C still stops the process cleanly.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
