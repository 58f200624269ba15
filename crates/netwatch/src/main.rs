//! The one netwatch binary: picks a subcommand and calls its `run`. Every role
//! lives here (DESIGN §1); today that is the local capture.
//!
//! Exit codes: 0 success, 1 failure, 2 usage or configuration error (STYLE 11).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod capture;

/// Remote packet capture for fleets of Linux hosts, compatible with Azure Network Watcher.
#[derive(Debug, Parser)]
#[command(name = "netwatch", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture packets on this host into a pcap file, like tcpdump, with Azure's filters and limits.
    Capture(capture::Args),
}

/// An error that is the user's to fix (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match cli.command {
        Command::Capture(args) => capture::run(args),
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
