//! netwatch as a Wireshark extcap (issue 18): Wireshark runs every program
//! in its extcap folder with `--extcap-interfaces`, lists the interfaces they
//! name, and starts a capture with `--capture --extcap-interface X --fifo F`,
//! reading pcap(ng) from the fifo (sshdump and ciscodump work the same way).
//! `ln -s "$(command -v netwatch)" ~/.local/lib/wireshark/extcap/netwatch`
//! makes every running capture an interface "netwatch: NAME (LOCATION)";
//! starting it is `packet-capture stream` into the fifo. The controller,
//! token and CA are the client commands' (`NETWATCH_URL`, `NETWATCH_TOKEN`,
//! `NETWATCH_CA`, or the file `netwatch up`/`login` write).
//!
//! The calls, as Wireshark 4 makes them:
//! - `--extcap-interfaces [--extcap-version=4.0]`: the `extcap` line and an
//!   `interface` line per running capture (none when the controller cannot
//!   be reached: the reason goes to standard error, and Wireshark starts);
//! - `--extcap-dlts --extcap-interface X`: one `dlt` line;
//! - `--extcap-config --extcap-interface X`: no options;
//! - `--capture --extcap-interface X --fifo F`: the live view into `F` until
//!   the capture ends or Wireshark stops it.

use std::process::ExitCode;

use crate::client::Client;
use crate::error::CliError;
use crate::settings::{ConfigFile, GlobalArgs, Settings};

/// What every interface value starts with: `netwatch_{location}_{capture}`
/// (locations have no `_`, so the first one after the prefix ends it).
const PREFIX: &str = "netwatch_";
const NETWORK_API_VERSION: &str = "2022-01-01";

/// Whether the command line is an extcap call (the binary's `main` asks
/// before its own parser, which would refuse these flags).
pub fn is_extcap_call(args: &[String]) -> bool {
    args.iter()
        .any(|arg| arg.starts_with("--extcap-") || arg == "--capture" || arg.starts_with("--fifo"))
}

/// The call Wireshark made.
#[derive(Debug, Default, PartialEq, Eq)]
struct Call {
    interfaces: bool,
    dlts: bool,
    config: bool,
    capture: bool,
    interface: Option<String>,
    fifo: Option<String>,
    filter: Option<String>,
}

fn parse(args: &[String]) -> Result<Call, String> {
    let mut call = Call::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .ok_or_else(|| format!("{what} needs a value"))
        };
        match flag {
            "--extcap-interfaces" => call.interfaces = true,
            "--extcap-dlts" => call.dlts = true,
            "--extcap-config" => call.config = true,
            "--capture" => call.capture = true,
            "--extcap-interface" => call.interface = Some(value("--extcap-interface")?),
            "--fifo" => call.fifo = Some(value("--fifo")?),
            "--extcap-capture-filter" => call.filter = Some(value("--extcap-capture-filter")?),
            // Wireshark's own, which change nothing here.
            "--extcap-version" | "--debug" | "--debug-file" | "--extcap-reload-option" => {
                if inline.is_none() && flag != "--debug" && flag != "--extcap-version" {
                    args.next();
                }
            }
            other => return Err(format!("unknown extcap argument {other:?}")),
        }
    }
    Ok(call)
}

/// `(location, capture)` of an interface value.
fn interface_capture(value: &str) -> Result<(&str, &str), String> {
    value
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .filter(|(location, name)| !location.is_empty() && !name.is_empty())
        .ok_or_else(|| format!("{value:?} is not a netwatch interface (netwatch_LOCATION_CAPTURE)"))
}

/// Runs an extcap call; its exit code (2 for a call it does not understand).
pub fn run(args: &[String]) -> ExitCode {
    let call = match parse(args) {
        Ok(call) => call,
        Err(message) => {
            eprintln!("netwatch extcap: {message}");
            return ExitCode::from(2);
        }
    };
    if call.interfaces {
        println!(
            "extcap {{version={}}}{{help=https://github.com/netwatch/netwatch}}",
            env!("CARGO_PKG_VERSION")
        );
        match list() {
            Ok(lines) => lines.iter().for_each(|line| println!("{line}")),
            // Wireshark starts all the same; the reason is on standard error.
            Err(error) => eprintln!("netwatch extcap: no interfaces: {}", error.render()),
        }
        return ExitCode::SUCCESS;
    }
    let Some(interface) = call.interface.as_deref() else {
        eprintln!("netwatch extcap: --extcap-interface is needed with --extcap-dlts, --extcap-config and --capture");
        return ExitCode::from(2);
    };
    let (location, capture) = match interface_capture(interface) {
        Ok(parts) => parts,
        Err(message) => {
            eprintln!("netwatch extcap: {message}");
            return ExitCode::from(2);
        }
    };
    if call.dlts {
        println!(
            "dlt {{number=1}}{{name=EN10MB}}{{display=netwatch live view of {capture} (pcapng, a link type per host)}}"
        );
        return ExitCode::SUCCESS;
    }
    if call.config {
        return ExitCode::SUCCESS;
    }
    if !call.capture {
        eprintln!("netwatch extcap: say --extcap-interfaces, --extcap-dlts, --extcap-config or --capture");
        return ExitCode::from(2);
    }
    if call.filter.as_deref().is_some_and(|filter| !filter.trim().is_empty()) {
        eprintln!(
            "netwatch extcap: a capture filter is not applied to a live view: the capture's own filters choose its \
             packets (create one with the filters you want)"
        );
        return ExitCode::from(2);
    }
    let Some(fifo) = call.fifo else {
        eprintln!("netwatch extcap: --capture needs --fifo");
        return ExitCode::from(2);
    };
    let args = [
        "netwatch",
        "network",
        "watcher",
        "packet-capture",
        "stream",
        "--name",
        capture,
        "--location",
        location,
        "-w",
        &fifo,
    ];
    match <Wrapper as clap::Parser>::try_parse_from(args) {
        Ok(wrapper) => crate::run(wrapper.command),
        Err(error) => {
            eprintln!("netwatch extcap: {error}");
            ExitCode::from(2)
        }
    }
}

/// The client commands as a command line of their own.
#[derive(Debug, clap::Parser)]
#[command(name = "netwatch")]
struct Wrapper {
    #[command(subcommand)]
    command: crate::Command,
}

/// An `interface` line per running capture.
fn list() -> Result<Vec<String>, CliError> {
    let global = GlobalArgs {
        server: std::env::var("NETWATCH_URL").ok(),
        token: std::env::var("NETWATCH_TOKEN").ok(),
        ca: std::env::var_os("NETWATCH_CA").map(Into::into),
        ..GlobalArgs::default()
    };
    let path = crate::settings::config_path(|name| std::env::var_os(name));
    let file = match &path {
        Some(path) => ConfigFile::load(path)?,
        None => None,
    };
    let settings = Settings::resolve(&global, file.as_ref(), path.as_deref())?;
    let client = Client::new(&settings, false)?;
    let subscription = crate::settings::subscription(None)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::Unexpected(format!("start the async runtime: {err}")))?;
    runtime.block_on(async {
        let watchers = client
            .get(
                &format!("/subscriptions/{subscription}/providers/Microsoft.Network/networkWatchers"),
                NETWORK_API_VERSION,
            )
            .await?;
        let mut lines = Vec::new();
        for watcher in watchers["value"].as_array().into_iter().flatten() {
            let (Some(id), Some(location)) = (watcher["id"].as_str(), watcher["location"].as_str()) else {
                continue;
            };
            let captures = client.get(&format!("{id}/packetCaptures"), NETWORK_API_VERSION).await?;
            for capture in captures["value"].as_array().into_iter().flatten() {
                let (Some(capture_id), Some(name)) = (capture["id"].as_str(), capture["name"].as_str()) else {
                    continue;
                };
                let url = client.url(&format!("{capture_id}/queryStatus"), NETWORK_API_VERSION);
                let first = client.begin(reqwest::Method::POST, &url, None, &[200, 202]).await?;
                let status = client.wait(&reqwest::Method::POST, &url, first).await?;
                if status.as_ref().and_then(|s| s["packetCaptureStatus"].as_str()) != Some("Running") {
                    continue;
                }
                let target = capture["properties"]["target"]
                    .as_str()
                    .map_or("", |t| t.rsplit('/').next().unwrap_or(""));
                lines.push(format!(
                    "interface {{value={PREFIX}{location}_{name}}}{{display=netwatch: {name} on {target} ({location})}}"
                ));
            }
        }
        Ok::<_, CliError>(lines)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn wiresharks_calls_parse() {
        assert!(is_extcap_call(&args("--extcap-interfaces --extcap-version=4.0")));
        assert!(!is_extcap_call(&args("network watcher list")));
        let call = parse(&args("--capture --extcap-interface netwatch_westus_pc-1 --fifo /tmp/f")).unwrap();
        assert!(call.capture);
        assert_eq!(call.fifo.as_deref(), Some("/tmp/f"));
        assert_eq!(
            interface_capture(call.interface.as_deref().unwrap()),
            Ok(("westus", "pc-1"))
        );
        let call = parse(&args("--extcap-config --extcap-interface=netwatch_eastus_a_b")).unwrap();
        assert_eq!(
            interface_capture(call.interface.as_deref().unwrap()),
            Ok(("eastus", "a_b"))
        );
        assert!(parse(&args("--extcap-interface")).is_err());
        assert!(parse(&args("--frobnicate")).is_err());
        assert!(interface_capture("eth0").is_err());
        assert!(interface_capture("netwatch_westus").is_err());
        assert!(interface_capture("netwatch__pc1").is_err());
    }
}
