//! `netwatch network watcher packet-capture …`: az's `network watcher
//! packet-capture` group (api-contract.md §3.1), api-version 2022-01-01 as az
//! sends, plus `download`.
//!
//! - Every command but `create` finds its watcher from `-l/--location` as
//!   az's `get_network_watcher_from_location` does: list all watchers, take
//!   the first whose location equals the argument in any case, after mapping a
//!   display name with a space (`West US`) through `GET /subscriptions/{s}/locations`;
//!   none is `network watcher is not enabled for region X.` (exit 1).
//! - `create` reads the target's location first (GET of the VM or scale
//!   set), then the watcher the same way; `--storage-account NAME` becomes an
//!   id in `-g`'s resource group, as az does.
//! - The create body is checked with `netwatch_api` before anything is sent
//!   (the same validation the server runs), so a bad flag or filter is exit 2
//!   with the flag named, never a request.
//! - Long-running commands wait (`--no-wait` prints nothing at once, as az);
//!   `stop` and `delete` print nothing.
//! - `show-status -o table` of a capture over a scale set (its status has
//!   `netwatch.instances`) shows one row per instance, and the summary
//!   (`netwatch.summary`: how many run, stopped, failed, and why) on standard
//!   error after the table; any other output is the server's status as is.
//! - `download --merged` fetches the capture's one merged pcapng (every
//!   host's packets, an interface block per host and interface: DESIGN §8)
//!   from `{capture id}/merged`, streamed as the server makes it.
//!
//! *Our choices* where az is lax: `--include/--exclude` without
//! `--target-type AzureVMSS` is an error (az drops them silently); `--vm` is
//! required for a VM target (az fails with a Python traceback); a `--vm` id
//! is looked up as given (az takes its name and `-g`'s group).

use clap::{ArgAction, Subcommand};
use netwatch_api::error::ApiError;
use netwatch_api::filter::{PacketCaptureFilter, parse_wire_filters_json};
use netwatch_api::packet_capture::{
    DEFAULT_BYTES_TO_CAPTURE_PER_PACKET, DEFAULT_TIME_LIMIT_IN_SECONDS, DEFAULT_TOTAL_BYTES_PER_SESSION, FleetSummary,
    MAX_BYTES, MAX_TIME_LIMIT_IN_SECONDS, NetwatchCaptureParameters, PacketCapture, PacketCaptureMachineScope,
    PacketCaptureParameters, PacketCaptureStorageLocation, TargetSelector, parse_packet_capture,
};
use netwatch_api::resource::{Location, ResourceGroupName, ResourceId, ResourceKind, ResourceName, SubscriptionId};
use reqwest::Method;
use serde_json::Value;

use super::{flag_error, json_argument};
use crate::error::CliError;
use crate::output::Query;
use crate::{Context, Printer, shape};

/// What az's `network watcher packet-capture` commands send.
pub(crate) const API_VERSION: &str = "2022-01-01";
/// What az's `vm show` (and `vmss show`) send, read by create for the location.
const COMPUTE_API_VERSION: &str = "2026-04-01";
/// What az sends to list the subscription's locations.
const LOCATIONS_API_VERSION: &str = "2022-12-01";
/// az's wait defaults: poll every 30 s for at most an hour.
const WAIT_INTERVAL_SECONDS: u64 = 30;
const WAIT_TIMEOUT_SECONDS: u64 = 3600;

/// `-n/--name`.
#[derive(Debug, clap::Args)]
pub struct NameArg {
    /// Name of the packet capture session.
    #[arg(long, short = 'n', value_name = "NAME")]
    name: String,
}

/// `-l/--location`.
#[derive(Debug, clap::Args)]
pub struct LocationArg {
    /// Location (region) of the network watcher, e.g. westus or "West US".
    #[arg(long, short = 'l', value_name = "LOCATION")]
    pub(crate) location: String,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Name of the resource group the target resource is in.
    #[arg(long, short = 'g', value_name = "GROUP")]
    resource_group: String,
    /// Name of the packet capture session.
    #[arg(long, short = 'n', value_name = "NAME")]
    name: String,
    /// Name or ID of the VM to target.
    #[arg(long, value_name = "NAME_OR_ID")]
    vm: Option<String>,
    /// Name or ID of the target resource; required when --target-type is AzureVMSS.
    #[arg(long, value_name = "NAME_OR_ID")]
    target: Option<String>,
    /// Resource type of target: AzureVM (default) or AzureVMSS.
    #[arg(long, value_name = "TYPE")]
    target_type: Option<String>,
    /// Space-separated list of VMSS instances to include in packet capture, like 0 1 2.
    // Negative numbers reach the validation, which names the bad id.
    #[arg(long, value_name = "INSTANCE", num_args = 1.., action = ArgAction::Append, allow_negative_numbers = true)]
    include: Vec<String>,
    /// Space-separated list of VMSS instances to exclude in packet capture.
    #[arg(long, value_name = "INSTANCE", num_args = 1.., action = ArgAction::Append, allow_negative_numbers = true)]
    exclude: Vec<String>,
    /// Number of bytes captured per packet; excess bytes are truncated (0 keeps whole packets).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    capture_size: Option<i64>,
    /// Maximum size in bytes of the capture output (default 1073741824).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    capture_limit: Option<i64>,
    /// Maximum duration of the capture session in seconds (default and maximum 18000).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    time_limit: Option<i64>,
    /// JSON encoded list of packet filters. Use `@{path}` to load from file.
    #[arg(long, value_name = "JSON")]
    filters: Option<String>,
    /// Name or ID of a storage account to save the packet capture to.
    #[arg(long, value_name = "NAME_OR_ID")]
    storage_account: Option<String>,
    /// Fully qualified URI of an existing storage container in which to store the capture file.
    #[arg(long, value_name = "URI")]
    storage_path: Option<String>,
    /// Local path on the targeted VM at which to save the packet capture; must start with /var/captures.
    #[arg(long, value_name = "PATH")]
    file_path: Option<String>,
    /// Do not wait for the long-running operation to finish.
    #[arg(long)]
    no_wait: bool,
    /// netwatch: capture on these VMs (names in -g, or ids), not one VM or scale set.
    #[arg(long, value_name = "NAME_OR_ID", num_args = 1.., action = ArgAction::Append)]
    target_vms: Vec<String>,
    /// netwatch: capture on every host with these tags (KEY=VALUE …; its own or its scale set's).
    #[arg(long, value_name = "KEY=VALUE", num_args = 1.., action = ArgAction::Append)]
    target_tags: Vec<String>,
    /// netwatch: the location of the hosts --target-tags chooses (its network watcher's).
    #[arg(long, short = 'l', value_name = "LOCATION")]
    location: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Name of the packet capture session.
    #[arg(long, short = 'n', value_name = "NAME")]
    name: String,
    /// Name of the network watcher.
    #[arg(long, value_name = "NAME", requires = "watcher_rg")]
    watcher_name: Option<String>,
    /// Name of the resource group the watcher is in.
    #[arg(long, value_name = "GROUP", requires = "watcher_name")]
    watcher_rg: Option<String>,
    /// netwatch: find the watcher from its location instead of --watcher-name/--watcher-rg.
    #[arg(long, short = 'l', value_name = "LOCATION", conflicts_with_all = ["watcher_name", "watcher_rg"])]
    location: Option<String>,
    /// Wait until created with 'provisioningState' at 'Succeeded'.
    #[arg(long)]
    created: bool,
    /// Wait until updated with provisioningState at 'Succeeded'.
    #[arg(long)]
    updated: bool,
    /// Wait until deleted.
    #[arg(long)]
    deleted: bool,
    /// Wait until the resource exists.
    #[arg(long)]
    exists: bool,
    /// Wait until the condition satisfies a custom JMESPath query.
    #[arg(long, value_name = "JMESPATH")]
    custom: Option<String>,
    /// Polling interval in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = WAIT_INTERVAL_SECONDS)]
    interval: u64,
    /// Maximum wait in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = WAIT_TIMEOUT_SECONDS)]
    timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    name: NameArg,
    #[command(flatten)]
    location: LocationArg,
    /// Where to write the capture file; `-` writes it to standard output. Default NAME.cap
    /// (NAME.pcapng with --merged).
    #[arg(long, short = 'f', value_name = "FILE")]
    output_file: Option<String>,
    /// netwatch: download one pcapng merged from every host's files (a capture over a scale set).
    #[arg(long)]
    merged: bool,
}

#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// Name of the running packet capture session to watch (with --location).
    #[arg(long, short = 'n', value_name = "NAME")]
    name: Option<String>,
    /// Location (region) of its network watcher, e.g. westus.
    #[arg(long, short = 'l', value_name = "LOCATION")]
    location: Option<String>,
    /// netwatch: an ad-hoc live look at this VM instead (with --resource-group): a capture with no storage
    /// account (its file stays on the host, under /var/captures), stopped and deleted when the view ends.
    #[arg(long, value_name = "VM", conflicts_with = "name")]
    vm: Option<String>,
    /// The resource group of --vm.
    #[arg(long, short = 'g', value_name = "GROUP", requires = "vm")]
    resource_group: Option<String>,
    /// With --vm: Azure's filters (and netwatch's), a JSON list as `create --filters` takes.
    #[arg(long, value_name = "JSON", requires = "vm")]
    filters: Option<String>,
    /// With --vm: the longest the look lasts, in seconds (at most Azure's 18000).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600, requires = "vm")]
    time_limit: i64,
    /// Where to write the live pcapng stream: `-` (the default) for standard output, to pipe into
    /// `wireshark -k -i -` or `tshark -r -`, or a file.
    #[arg(long, short = 'w', value_name = "FILE", default_value = "-")]
    write: String,
}

#[derive(Debug, clap::Args)]
pub struct NoWaitArgs {
    #[command(flatten)]
    name: NameArg,
    #[command(flatten)]
    location: LocationArg,
    /// Do not wait for the long-running operation to finish.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum PacketCaptureCommand {
    /// Create and start a packet capture session.
    Create(Box<CreateArgs>),
    /// Show details of a packet capture session.
    Show {
        #[command(flatten)]
        name: NameArg,
        #[command(flatten)]
        location: LocationArg,
    },
    /// Show the status of a packet capture session.
    ShowStatus(NoWaitArgs),
    /// List all packet capture sessions within a resource group.
    List {
        #[command(flatten)]
        location: LocationArg,
    },
    /// Stop a running packet capture session.
    Stop(NoWaitArgs),
    /// Delete a packet capture session (its file is kept).
    Delete(NoWaitArgs),
    /// Place the CLI in a waiting state until a condition is met.
    Wait(WaitArgs),
    /// Download the capture file of a session from its storage account, through the controller.
    Download(DownloadArgs),
    /// netwatch: watch a running capture live, its packets as pcapng as the hosts capture them (every host of
    /// a capture over many hosts as its own interface); ends when the capture does, or Ctrl-C.
    Stream(StreamArgs),
}

/// Where a command's watcher is: found from a location, or named.
#[derive(Debug, Clone)]
pub(crate) enum WatcherRef {
    Location(String),
    Named(ResourceGroupName, ResourceName),
}

/// Where a create finds its network watcher's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Locate {
    /// The target's (or the first chosen VM's) location, read with a GET.
    Resource(ResourceId),
    /// Given (`--location`, with `--target-tags`).
    Location(String),
}

#[derive(Debug)]
pub(crate) enum Prepared {
    Create {
        /// The VM or scale set read for its location, or the location.
        target: Locate,
        name: ResourceName,
        body: Box<PacketCapture>,
        no_wait: bool,
    },
    Show(WatcherRef, ResourceName),
    ShowStatus(WatcherRef, ResourceName, bool),
    List(WatcherRef),
    Stop(WatcherRef, ResourceName, bool),
    Delete(WatcherRef, ResourceName, bool),
    Wait {
        watcher: WatcherRef,
        name: ResourceName,
        condition: WaitCondition,
        interval: u64,
        timeout: u64,
    },
    Download {
        watcher: WatcherRef,
        name: ResourceName,
        output_file: String,
        /// `--merged`: the server's merged pcapng instead of the stored files.
        merged: bool,
    },
    Stream {
        watcher: WatcherRef,
        name: ResourceName,
        output: String,
    },
    /// `stream --vm`: a capture made for the view and removed after it.
    StreamVm {
        vm: ResourceId,
        body: Value,
        output: String,
    },
}

/// `show-status -o table`: one row per instance for a capture over many
/// hosts (`netwatch.instances`, the api's `InstanceStatus`), else the status
/// itself as az's default table shows it. Missing texts become '' so every
/// row has every column (knack drops null cells, and a column nobody fills).
const STATUS_TABLE: &str = "netwatch.instances && netwatch.instances[].{InstanceId:instanceId, Host:host || '', \
     Status:packetCaptureStatus, StopReason:stopReason || '', Errors:join(', ', packetCaptureError || `[]`), \
     Packets:packetsCaptured, Drops:kernelDrops, Upload:uploadState || '', Files:length(files || `[]`)} || @";

/// The command's table transformer (see [`super::table_transformer`]).
pub(crate) fn table_transformer(prepared: &Prepared) -> Option<&'static str> {
    match prepared {
        Prepared::ShowStatus(..) => Some(STATUS_TABLE),
        _ => None,
    }
}

/// The command's table footer (see [`super::table_footer`]).
pub(crate) fn table_footer(prepared: &Prepared) -> Option<super::TableFooter> {
    match prepared {
        Prepared::ShowStatus(..) => Some(status_summary),
        _ => None,
    }
}

/// The summary of a capture over many hosts (`netwatch.summary`): its text,
/// then each failure the text does not already give, one a line.
fn status_summary(status: &Value) -> Option<String> {
    let summary: FleetSummary = serde_json::from_value(status.pointer("/netwatch/summary")?.clone()).ok()?;
    let mut text = summary.text.clone();
    for failure in &summary.failures {
        if !summary.text.contains(failure.as_str()) {
            text.push_str(&format!("\n  {failure}"));
        }
    }
    (!text.is_empty()).then_some(text)
}

#[derive(Debug)]
pub(crate) enum WaitCondition {
    Succeeded,
    Deleted,
    Exists,
    Custom(Query),
}

fn capture_name(text: &str) -> Result<ResourceName, CliError> {
    ResourceName::parse("--name", text).map_err(|err| flag_error("--name/-n", &err))
}

/// `-l/--location`, checked, as the watcher to find.
pub(crate) fn location_ref(text: &str) -> Result<WatcherRef, CliError> {
    Location::parse("--location", text).map_err(|err| flag_error("--location/-l", &err))?;
    Ok(WatcherRef::Location(text.to_owned()))
}

pub(crate) fn prepare(command: PacketCaptureCommand, subscription: &SubscriptionId) -> Result<Prepared, CliError> {
    Ok(match command {
        PacketCaptureCommand::Create(args) => prepare_create(&args, subscription)?,
        PacketCaptureCommand::Show { name, location } => {
            Prepared::Show(location_ref(&location.location)?, capture_name(&name.name)?)
        }
        PacketCaptureCommand::ShowStatus(args) => Prepared::ShowStatus(
            location_ref(&args.location.location)?,
            capture_name(&args.name.name)?,
            args.no_wait,
        ),
        PacketCaptureCommand::List { location } => Prepared::List(location_ref(&location.location)?),
        PacketCaptureCommand::Stop(args) => Prepared::Stop(
            location_ref(&args.location.location)?,
            capture_name(&args.name.name)?,
            args.no_wait,
        ),
        PacketCaptureCommand::Delete(args) => Prepared::Delete(
            location_ref(&args.location.location)?,
            capture_name(&args.name.name)?,
            args.no_wait,
        ),
        PacketCaptureCommand::Wait(args) => prepare_wait(args)?,
        PacketCaptureCommand::Download(args) => {
            let name = capture_name(&args.name.name)?;
            let extension = if args.merged { "pcapng" } else { "cap" };
            let output_file = args.output_file.unwrap_or_else(|| format!("{name}.{extension}"));
            if output_file.is_empty() {
                return Err(CliError::Usage(
                    "argument --output-file/-f: give a file name, or - for standard output".to_owned(),
                ));
            }
            Prepared::Download {
                watcher: location_ref(&args.location.location)?,
                name,
                output_file,
                merged: args.merged,
            }
        }
        PacketCaptureCommand::Stream(args) => prepare_stream(args, subscription)?,
    })
}

fn prepare_stream(args: StreamArgs, subscription: &SubscriptionId) -> Result<Prepared, CliError> {
    if args.write.is_empty() {
        return Err(CliError::Usage(
            "argument --write/-w: give a file name, or - for standard output".to_owned(),
        ));
    }
    let Some(vm) = args.vm else {
        let (Some(name), Some(location)) = (args.name, args.location) else {
            return Err(CliError::Usage(
                "usage error: say which capture to watch with --name and --location, or look at a VM with --vm and \
                 --resource-group"
                    .to_owned(),
            ));
        };
        return Ok(Prepared::Stream {
            watcher: location_ref(&location)?,
            name: capture_name(&name)?,
            output: args.write,
        });
    };
    if args.location.is_some() {
        return Err(CliError::Usage(
            "usage error: --location goes with --name (a VM's look goes to the VM's own location)".to_owned(),
        ));
    }
    let Some(group) = args.resource_group else {
        return Err(CliError::Usage(
            "usage error: --vm needs --resource-group/-g (the VM's resource group)".to_owned(),
        ));
    };
    let group =
        ResourceGroupName::parse("--resource-group", &group).map_err(|err| flag_error("--resource-group/-g", &err))?;
    let vm_name = ResourceName::parse("--vm", &vm).map_err(|err| flag_error("--vm", &err))?;
    let vm = ResourceId::virtual_machine(subscription, &group, &vm_name);
    let filters = match &args.filters {
        Some(json) => netwatch_api::filter::parse_wire_filters_json(json)
            .map_err(|err| CliError::Usage(format!("argument --filters: {err}")))?,
        None => Vec::new(),
    };
    let name = format!("live-{}-{}", vm_name.as_str(), std::process::id());
    let name: String = name.chars().take(80).collect();
    let body = serde_json::json!({"properties": {
        "target": vm.to_string(),
        "timeLimitInSeconds": args.time_limit,
        "storageLocation": {"filePath": format!("/var/captures/{name}.cap")},
        "filters": filters,
    }});
    // The same checks as a create's, before anything is sent.
    let parsed =
        parse_packet_capture(body.to_string().as_bytes()).map_err(|err| CliError::Usage(err.message().to_owned()))?;
    parsed.validate().map_err(|err| {
        let flag = match err.target() {
            Some(target) if target.contains("filters") => "--filters",
            Some(target) if target.contains("timeLimit") => "--time-limit",
            _ => "--vm",
        };
        CliError::Usage(format!("argument {flag}: {}", err.message()))
    })?;
    Ok(Prepared::StreamVm {
        vm,
        body,
        output: args.write,
    })
}

fn prepare_wait(args: WaitArgs) -> Result<Prepared, CliError> {
    let name = capture_name(&args.name)?;
    let watcher = match (&args.location, &args.watcher_name, &args.watcher_rg) {
        (Some(location), ..) => location_ref(location)?,
        (None, Some(watcher), Some(group)) => WatcherRef::Named(
            ResourceGroupName::parse("--watcher-rg", group).map_err(|err| flag_error("--watcher-rg", &err))?,
            ResourceName::parse("--watcher-name", watcher).map_err(|err| flag_error("--watcher-name", &err))?,
        ),
        _ => {
            return Err(CliError::Usage(
                "the following arguments are required: --watcher-name and --watcher-rg (or netwatch's -l/--location)"
                    .to_owned(),
            ));
        }
    };
    let mut conditions = Vec::new();
    if args.created || args.updated {
        conditions.push(WaitCondition::Succeeded);
    }
    if args.deleted {
        conditions.push(WaitCondition::Deleted);
    }
    if args.exists {
        conditions.push(WaitCondition::Exists);
    }
    if let Some(custom) = &args.custom {
        let query =
            Query::parse(custom).map_err(|err| CliError::Usage(err.to_string().replacen("--query", "--custom", 1)))?;
        conditions.push(WaitCondition::Custom(query));
    }
    if conditions.len() != 1 {
        return Err(CliError::Usage(
            "usage error: give one condition: --created, --updated, --deleted, --exists or --custom".to_owned(),
        ));
    }
    if args.interval == 0 || args.timeout == 0 {
        return Err(CliError::Usage(
            "argument --interval/--timeout: must be at least 1 second".to_owned(),
        ));
    }
    let condition = conditions.remove(0);
    Ok(Prepared::Wait {
        watcher,
        name,
        condition,
        interval: args.interval,
        timeout: args.timeout,
    })
}

/// A number flag in `0..=max`, as az's `AAZIntArgFormat` checks it.
fn in_range(flag: &str, value: Option<i64>, max: u32, default: u32) -> Result<i64, CliError> {
    match value {
        None => Ok(i64::from(default)),
        Some(value) if value < 0 => Err(CliError::Usage(format!(
            "argument {flag}: '{value}' is less than the minimum 0"
        ))),
        Some(value) if value > i64::from(max) => Err(CliError::Usage(format!(
            "argument {flag}: '{value}' is greater than the maximum {max}"
        ))),
        Some(value) => Ok(value),
    }
}

/// The flag each field of a create body comes from, for messages.
const FLAGS: [(&str, &str); 14] = [
    ("properties.netwatch.targets.vms", "--target-vms"),
    ("properties.netwatch.targets.tags", "--target-tags"),
    ("properties.netwatch.targets", "--target-vms/--target-tags"),
    ("properties.filters", "--filters"),
    ("properties.storageLocation.storageId", "--storage-account"),
    ("properties.storageLocation.storagePath", "--storage-path"),
    ("properties.storageLocation.filePath", "--file-path"),
    ("properties.storageLocation", "--storage-account/--file-path"),
    ("properties.targetType", "--target-type"),
    ("properties.target", "--vm/--target"),
    ("properties.scope", "--include/--exclude"),
    ("properties.bytesToCapturePerPacket", "--capture-size"),
    ("properties.totalBytesPerSession", "--capture-limit"),
    ("properties.timeLimitInSeconds", "--time-limit"),
];

/// An api validation error of a create body as a usage error naming the flag.
fn body_error(err: &ApiError) -> CliError {
    flagged_error(err, &FLAGS)
}

/// An api validation error as a usage error naming the flag its field comes
/// from: the first of `flags` (field path prefix, flag) whose prefix starts
/// the error's target. The api's message starts with the JSON path, which
/// stays (without `properties.`): it locates the bad filter.
pub(crate) fn flagged_error(err: &ApiError, flags: &[(&str, &str)]) -> CliError {
    let target = err.target().unwrap_or_default();
    let message = err.message();
    let message = message.strip_prefix("properties.").unwrap_or(message);
    let flag = flags
        .iter()
        .find(|(prefix, _)| target.starts_with(prefix))
        .map(|(_, flag)| flag);
    match flag {
        None => CliError::Usage(message.to_owned()),
        Some(flag) => CliError::Usage(format!("argument {flag}: {message}")),
    }
}

fn prepare_create(args: &CreateArgs, subscription: &SubscriptionId) -> Result<Prepared, CliError> {
    let group = ResourceGroupName::parse("--resource-group", &args.resource_group)
        .map_err(|err| flag_error("--resource-group/-g", &err))?;
    let name = capture_name(&args.name)?;
    if !args.target_vms.is_empty() || !args.target_tags.is_empty() {
        return prepare_selected(args, subscription, &group, name);
    }
    if args.location.is_some() {
        return Err(CliError::Usage(
            "usage error: --location goes with --target-tags (the VM or scale set tells the location otherwise)"
                .to_owned(),
        ));
    }
    let target_type = match args.target_type.as_deref() {
        None => "AzureVM",
        Some(text) if text.eq_ignore_ascii_case("AzureVM") => "AzureVM",
        Some(text) if text.eq_ignore_ascii_case("AzureVMSS") => "AzureVMSS",
        Some(text) => {
            return Err(CliError::Usage(format!(
                "'{text}' is not a valid value for '--target-type'. Allowed values: AzureVM, AzureVMSS."
            )));
        }
    };
    // The target: --vm for a VM (az copies it to --target), --target for a scale set.
    // (A scale set's --include/--exclude ids are checked by the validation below.)
    let target = if target_type == "AzureVMSS" {
        let text = args.target.as_deref().or(args.vm.as_deref()).ok_or_else(|| {
            CliError::Usage("usage error: --target NAME_OR_ID is required when --target-type is AzureVMSS".to_owned())
        })?;
        name_or_id("--target", text, subscription, &group, ResourceKind::ScaleSet)?
    } else {
        if args.target.is_some() {
            return Err(CliError::Usage(
                "usage error: --target names a scale set: use it with --target-type AzureVMSS, or --vm for a VM"
                    .to_owned(),
            ));
        }
        if !args.include.is_empty() || !args.exclude.is_empty() {
            return Err(CliError::Usage(
                "usage error: --include/--exclude select scale-set instances: use them with --target-type AzureVMSS"
                    .to_owned(),
            ));
        }
        let text = args.vm.as_deref().ok_or_else(|| {
            CliError::Usage(
                "the following arguments are required: --vm (the name or id of the VM to capture on)".to_owned(),
            )
        })?;
        name_or_id("--vm", text, subscription, &group, ResourceKind::VirtualMachine)?
    };
    let properties = PacketCaptureParameters {
        target: target.to_string(),
        target_type: Some(target_type.to_owned()),
        scope: (target_type == "AzureVMSS").then(|| PacketCaptureMachineScope {
            include: (!args.include.is_empty()).then(|| args.include.clone()),
            exclude: (!args.exclude.is_empty()).then(|| args.exclude.clone()),
        }),
        ..session_properties(args, subscription, &group)?
    };
    checked_create(properties, Locate::Resource(target), name, args.no_wait)
}

/// What every create sends whatever its hosts: storage (as az's
/// pre_operations checks it), limits (defaults applied, as az sends them) and
/// filters. The hosts are the caller's to add.
fn session_properties(
    args: &CreateArgs,
    subscription: &SubscriptionId,
    group: &ResourceGroupName,
) -> Result<PacketCaptureParameters, CliError> {
    if args.storage_account.is_none() && (args.storage_path.is_some() || args.file_path.is_none()) {
        return Err(CliError::Usage(
            "usage error: --storage-account NAME_OR_ID [--storage-path PATH] [--file-path PATH] | --file-path PATH"
                .to_owned(),
        ));
    }
    if let Some(path) = &args.file_path
        && !path.ends_with(".cap")
    {
        return Err(CliError::Usage(
            "usage error: --file-path PATH must end with the '*.cap' extension".to_owned(),
        ));
    }
    let storage_id = args
        .storage_account
        .as_deref()
        .map(|text| {
            name_or_id(
                "--storage-account",
                text,
                subscription,
                group,
                ResourceKind::StorageAccount,
            )
        })
        .transpose()?;
    Ok(PacketCaptureParameters {
        bytes_to_capture_per_packet: Some(in_range(
            "--capture-size",
            args.capture_size,
            MAX_BYTES,
            DEFAULT_BYTES_TO_CAPTURE_PER_PACKET,
        )?),
        total_bytes_per_session: Some(in_range(
            "--capture-limit",
            args.capture_limit,
            MAX_BYTES,
            DEFAULT_TOTAL_BYTES_PER_SESSION,
        )?),
        time_limit_in_seconds: Some(in_range(
            "--time-limit",
            args.time_limit,
            MAX_TIME_LIMIT_IN_SECONDS,
            DEFAULT_TIME_LIMIT_IN_SECONDS,
        )?),
        storage_location: PacketCaptureStorageLocation {
            storage_id: storage_id.as_ref().map(ResourceId::to_string),
            storage_path: args.storage_path.clone(),
            file_path: args.file_path.clone(),
            local_path: None,
        },
        filters: filters_of(args)?,
        ..PacketCaptureParameters::default()
    })
}

/// A create whose body passed the server's own checks, before anything is sent.
fn checked_create(
    properties: PacketCaptureParameters,
    target: Locate,
    name: ResourceName,
    no_wait: bool,
) -> Result<Prepared, CliError> {
    properties.validate().map_err(|err| body_error(&err))?;
    Ok(Prepared::Create {
        target,
        name,
        body: Box::new(PacketCapture { properties }),
        no_wait,
    })
}

/// `--filters` as the wire's filters.
fn filters_of(args: &CreateArgs) -> Result<Option<Vec<PacketCaptureFilter>>, CliError> {
    parse_filters(args.filters.as_deref())
}

/// A `--filters` value (JSON, or `@file`) as the wire's filters, not yet
/// validated: the body's `validate` checks them where they land. A
/// `bpfExpression` of filters that are otherwise good is compiled here when
/// libpcap is installed, so a bad one fails before anything is sent (with
/// libpcap's message); without libpcap the controller checks it.
pub(crate) fn parse_filters(text: Option<&str>) -> Result<Option<Vec<PacketCaptureFilter>>, CliError> {
    match text {
        Some(text) => {
            let json = json_argument("--filters", text)?;
            let wire =
                parse_wire_filters_json(&json).map_err(|err| CliError::Usage(format!("argument --filters: {err}")))?;
            if netwatch_api::filter::validate_filters(&wire).is_ok() {
                for (index, filter) in wire.iter().enumerate() {
                    let Some(expression) = filter
                        .bpf_expression
                        .as_deref()
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                    else {
                        continue;
                    };
                    match netwatch_bpf::expression::compile(expression) {
                        Err(err) if err.is_users() => {
                            return Err(CliError::Usage(format!(
                                "argument --filters: filters[{index}].bpfExpression {expression:?} does not compile: {err}"
                            )));
                        }
                        _ => {}
                    }
                }
            }
            Ok(Some(wire))
        }
        None => Ok(None),
    }
}

/// A create over hosts chosen by `--target-vms` or `--target-tags`
/// (netwatch's `properties.netwatch.targets`).
fn prepare_selected(
    args: &CreateArgs,
    subscription: &SubscriptionId,
    group: &ResourceGroupName,
    name: ResourceName,
) -> Result<Prepared, CliError> {
    let usage = |text: &str| Err(CliError::Usage(format!("usage error: {text}")));
    if args.vm.is_some() || args.target.is_some() || args.target_type.is_some() {
        return usage("--target-vms/--target-tags choose the hosts: leave out --vm, --target and --target-type");
    }
    if !args.include.is_empty() || !args.exclude.is_empty() {
        return usage("--include/--exclude select scale-set instances: use them with --target-type AzureVMSS");
    }
    if !args.target_vms.is_empty() && !args.target_tags.is_empty() {
        return usage("choose hosts with --target-vms or with --target-tags, not both");
    }
    let (selector, target) = if args.target_vms.is_empty() {
        let Some(location) = &args.location else {
            return usage("--target-tags needs --location: the hosts' location");
        };
        let mut tags = std::collections::BTreeMap::new();
        for text in &args.target_tags {
            let Some((key, value)) = text.split_once('=').filter(|(key, _)| !key.is_empty()) else {
                return Err(CliError::Usage(format!(
                    "argument --target-tags: {text:?} is not a tag: write KEY=VALUE"
                )));
            };
            tags.insert(key.to_owned(), value.to_owned());
        }
        let selector = TargetSelector {
            vms: None,
            tags: Some(tags),
        };
        (selector, Locate::Location(location.clone()))
    } else {
        if args.location.is_some() {
            return usage("--location goes with --target-tags (the first of --target-vms tells the location)");
        }
        let ids = args
            .target_vms
            .iter()
            .map(|text| {
                // A scale set's instance by id, or a VM by name or id.
                match ResourceId::parse_kind("--target-vms", text, &[ResourceKind::ScaleSetVm]) {
                    Ok(instance) => Ok(instance),
                    Err(_) => name_or_id("--target-vms", text, subscription, group, ResourceKind::VirtualMachine),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let first = ids[0].clone();
        let selector = TargetSelector {
            vms: Some(ids.iter().map(ResourceId::to_string).collect()),
            tags: None,
        };
        (selector, Locate::Resource(first))
    };
    let properties = PacketCaptureParameters {
        netwatch: Some(NetwatchCaptureParameters {
            targets: Some(selector),
            alert: None,
        }),
        ..session_properties(args, subscription, group)?
    };
    checked_create(properties, target, name, args.no_wait)
}

/// A `--vm`, `--target` or `--storage-account` value: an id of `kind`, or a
/// name made into one in `-g`'s resource group (az's `AAZResourceIdArgFormat`).
pub(crate) fn name_or_id(
    flag: &str,
    text: &str,
    subscription: &SubscriptionId,
    group: &ResourceGroupName,
    kind: ResourceKind,
) -> Result<ResourceId, CliError> {
    if text.starts_with('/') {
        return ResourceId::parse_kind(flag, text, &[kind]).map_err(|err| flag_error(flag, &err));
    }
    let name = ResourceName::parse(flag, text).map_err(|err| flag_error(flag, &err))?;
    Ok(match kind {
        ResourceKind::ScaleSet => ResourceId::scale_set(subscription, group, &name),
        ResourceKind::StorageAccount => ResourceId::storage_account(subscription, group, &name),
        _ => ResourceId::virtual_machine(subscription, group, &name),
    })
}

/// The watcher a location resolves to: its resource group and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Watcher {
    pub group: String,
    pub name: String,
}

/// az's `get_network_watcher_from_location` (module doc).
pub(crate) async fn find_watcher(context: &Context, location: &str) -> Result<Watcher, CliError> {
    let location = if location.contains(' ') {
        let path = format!("/subscriptions/{}/locations", context.subscription);
        let locations = context.client.get(&path, LOCATIONS_API_VERSION).await?;
        map_display_name(&locations, location)
    } else {
        location.to_owned()
    };
    let path = format!(
        "/subscriptions/{}/providers/Microsoft.Network/networkWatchers",
        context.subscription
    );
    let watchers = context.client.get(&path, API_VERSION).await?;
    watcher_in(&watchers, &location)
}

/// az's `AAZResourceLocationArgFormat`: the name of the location whose
/// display name is `text` in any case; `text` itself when none is.
pub(crate) fn map_display_name(locations: &Value, text: &str) -> String {
    locations
        .get("value")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|location| {
            location
                .get("displayName")
                .and_then(Value::as_str)
                .is_some_and(|display| display.to_lowercase() == text.to_lowercase())
        })
        .and_then(|location| location.get("name").and_then(Value::as_str))
        .map_or_else(|| text.to_owned(), str::to_owned)
}

/// The first watcher of a `{"value": [...]}` list in `location` (any case).
pub(crate) fn watcher_in(watchers: &Value, location: &str) -> Result<Watcher, CliError> {
    let found = watchers
        .get("value")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|watcher| {
            watcher
                .get("location")
                .and_then(Value::as_str)
                .is_some_and(|l| l.to_lowercase() == location.to_lowercase())
        });
    let Some(watcher) = found else {
        return Err(CliError::Validation(format!(
            "network watcher is not enabled for region {location}."
        )));
    };
    let id = watcher.get("id").and_then(Value::as_str).unwrap_or_default();
    let parsed = ResourceId::parse("id", id)
        .map_err(|err| CliError::Unexpected(format!("the server listed a watcher with a bad id: {err}")))?;
    Ok(Watcher {
        group: parsed.resource_group().to_string(),
        name: parsed.name().to_string(),
    })
}

/// The watcher `watcher` names, found from its location when need be.
pub(crate) async fn resolve(context: &Context, watcher: &WatcherRef) -> Result<Watcher, CliError> {
    match watcher {
        WatcherRef::Location(location) => find_watcher(context, location).await,
        WatcherRef::Named(group, name) => Ok(Watcher {
            group: group.to_string(),
            name: name.to_string(),
        }),
    }
}

fn capture_path(context: &Context, watcher: &Watcher, name: &ResourceName) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkWatchers/{}/packetCaptures/{name}",
        context.subscription, watcher.group, watcher.name
    )
}

pub(crate) async fn execute(prepared: Prepared, context: &Context) -> Result<Option<Value>, CliError> {
    let client = &context.client;
    match prepared {
        Prepared::Create {
            target,
            name,
            body,
            no_wait,
        } => {
            let location = match target {
                Locate::Resource(target) => {
                    let resource = client.get(&target.to_string(), COMPUTE_API_VERSION).await?;
                    resource
                        .get("location")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                }
                Locate::Location(location) => location,
            };
            let watcher = find_watcher(context, &location).await?;
            let url = client.url(&capture_path(context, &watcher, &name), API_VERSION);
            let body = serde_json::to_value(&body)
                .map_err(|err| CliError::Unexpected(format!("serialize the capture: {err}")))?;
            let first = client.begin(Method::PUT, &url, Some(&body), &[201, 202]).await?;
            if no_wait {
                return Ok(None);
            }
            let result = client.wait(&Method::PUT, &url, first).await?;
            Ok(result.map(|value| shape::packet_capture(&value)))
        }
        Prepared::Show(watcher, name) => {
            let watcher = resolve(context, &watcher).await?;
            let value = client.get(&capture_path(context, &watcher, &name), API_VERSION).await?;
            Ok(Some(shape::packet_capture(&value)))
        }
        Prepared::ShowStatus(watcher, name, no_wait) => {
            let watcher = resolve(context, &watcher).await?;
            let url = client.url(
                &format!("{}/queryStatus", capture_path(context, &watcher, &name)),
                API_VERSION,
            );
            let first = client.begin(Method::POST, &url, None, &[200, 202]).await?;
            if no_wait {
                return Ok(None);
            }
            let result = client.wait(&Method::POST, &url, first).await?;
            Ok(result.map(|value| shape::query_status(&value)))
        }
        Prepared::List(watcher) => {
            let watcher = resolve(context, &watcher).await?;
            let path = format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkWatchers/{}/packetCaptures",
                context.subscription, watcher.group, watcher.name
            );
            let value = client.get(&path, API_VERSION).await?;
            Ok(Some(shape::list(&value, shape::packet_capture)))
        }
        Prepared::Stop(watcher, name, no_wait) => {
            let watcher = resolve(context, &watcher).await?;
            let url = client.url(&format!("{}/stop", capture_path(context, &watcher, &name)), API_VERSION);
            let first = client.begin(Method::POST, &url, None, &[200, 202]).await?;
            if !no_wait {
                client.wait(&Method::POST, &url, first).await?;
            }
            Ok(None)
        }
        Prepared::Delete(watcher, name, no_wait) => {
            let watcher = resolve(context, &watcher).await?;
            let url = client.url(&capture_path(context, &watcher, &name), API_VERSION);
            let first = client.begin(Method::DELETE, &url, None, &[200, 202, 204]).await?;
            if !no_wait {
                client.wait(&Method::DELETE, &url, first).await?;
            }
            Ok(None)
        }
        Prepared::Wait {
            watcher,
            name,
            condition,
            interval,
            timeout,
        } => {
            let watcher = resolve(context, &watcher).await?;
            let path = capture_path(context, &watcher, &name);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
            loop {
                let answer = client.get(&path, API_VERSION).await;
                let done = match (&condition, answer) {
                    (WaitCondition::Deleted, Err(err)) if err.is_not_found() => true,
                    (WaitCondition::Deleted, Ok(_)) => false,
                    (_, Err(err)) if err.is_not_found() => false,
                    (_, Err(err)) => return Err(err),
                    (WaitCondition::Exists, Ok(_)) => true,
                    (WaitCondition::Succeeded, Ok(value)) => {
                        let state = value.pointer("/properties/provisioningState").and_then(Value::as_str);
                        state.is_some_and(|s| s.eq_ignore_ascii_case("Succeeded"))
                    }
                    (WaitCondition::Custom(query), Ok(value)) => {
                        let mut value = value;
                        crate::shape::add_resource_group(&mut value);
                        Printer::query_is_true(&value, query)?
                    }
                };
                if done {
                    return Ok(None);
                }
                let now = std::time::Instant::now();
                if now >= deadline {
                    return Err(CliError::Timeout(format!(
                        "Wait operation timed-out after {timeout} seconds"
                    )));
                }
                let pause = std::time::Duration::from_secs(interval).min(deadline - now);
                tokio::time::sleep(pause).await;
            }
        }
        Prepared::StreamVm { vm, body, output } => crate::live::look_at_vm(context, &vm, body, &output).await,
        Prepared::Stream { watcher, name, output } => {
            let watcher = resolve(context, &watcher).await?;
            let path = capture_path(context, &watcher, &name);
            let url = context.client.url(&format!("{path}/live"), API_VERSION);
            let response = context.client.download(&url).await?;
            let summary = crate::live::stream(response, &output, &url).await?;
            eprintln!("{}", summary.text(name.as_str()));
            Ok(None)
        }
        Prepared::Download {
            watcher,
            name,
            output_file,
            merged,
        } => {
            let watcher = resolve(context, &watcher).await?;
            let path = capture_path(context, &watcher, &name);
            if merged {
                crate::download::download_merged(context, name.as_str(), &path, &output_file).await?;
                return Ok(None);
            }
            let capture = client.get(&path, API_VERSION).await?;
            let properties = &capture["properties"];
            let many = properties["targetType"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case("AzureVMSS"))
                || properties["netwatch"]["targets"].is_object();
            if many {
                return Err(CliError::Usage(format!(
                    "usage error: packet capture {name} runs on many hosts, each with its own file: add --merged for \
                     one pcapng of them all, or download a host's file from the storagePath `show-status` lists \
                     under netwatch.instances"
                )));
            }
            crate::download::download(context, &capture, &path, &output_file).await?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: PacketCaptureCommand,
    }

    fn prepared(args: &[&str]) -> Result<Prepared, CliError> {
        let mut argv = vec!["packet-capture"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|err| CliError::Usage(err.to_string()))?;
        prepare(cli.command, &SubscriptionId::default_subscription())
    }

    fn body(args: &[&str]) -> Value {
        match prepared(args).unwrap() {
            Prepared::Create { body, .. } => serde_json::to_value(body).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    const SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000000";

    #[test]
    fn the_guide_s_create_sends_az_s_body() {
        let body = body(&[
            "create",
            "--resource-group",
            "RG",
            "--vm",
            "VM",
            "--name",
            "NAME",
            "--storage-account",
            "ACCOUNT",
            "--filters",
            r#"[{"protocol":"TCP", "remoteIPAddress":"1.1.1.1-255.255.255.255","localIPAddress":"10.0.0.3", "remotePort":"20"},{"protocol":"UDP"}]"#,
        ]);
        assert_eq!(
            body,
            json!({"properties": {
                "target": format!("{SUB}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM"),
                "targetType": "AzureVM",
                "bytesToCapturePerPacket": 0,
                "totalBytesPerSession": 1073741824,
                "timeLimitInSeconds": 18000,
                "storageLocation": {"storageId": format!("{SUB}/resourceGroups/RG/providers/Microsoft.Storage/storageAccounts/ACCOUNT")},
                "filters": [
                    {"protocol": "TCP", "localIPAddress": "10.0.0.3", "remoteIPAddress": "1.1.1.1-255.255.255.255", "remotePort": "20"},
                    {"protocol": "UDP"}
                ]
            }})
        );
    }

    #[test]
    fn ids_are_taken_as_given() {
        let vm = format!("{SUB}/resourceGroups/other/providers/Microsoft.Compute/virtualMachines/vm1");
        let account = format!("{SUB}/resourceGroups/st/providers/Microsoft.Storage/storageAccounts/acct");
        let body = body(&[
            "create",
            "-g",
            "RG",
            "--vm",
            &vm,
            "-n",
            "pc",
            "--storage-account",
            &account,
        ]);
        assert_eq!(body["properties"]["target"], vm.as_str());
        assert_eq!(body["properties"]["storageLocation"]["storageId"], account.as_str());
    }

    #[test]
    fn a_scale_set_capture_takes_its_instances() {
        let body = body(&[
            "create",
            "-g",
            "RG",
            "--target",
            "ss",
            "--target-type",
            "azurevmss",
            "-n",
            "pc",
            "--file-path",
            "/var/captures/pc.cap",
            "--include",
            "0",
            "1",
            "--exclude",
            "2",
        ]);
        assert_eq!(
            body["properties"]["target"],
            format!("{SUB}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/ss")
        );
        assert_eq!(body["properties"]["targetType"], "AzureVMSS");
        assert_eq!(
            body["properties"]["scope"],
            json!({"include": ["0", "1"], "exclude": ["2"]})
        );
        assert_eq!(
            body["properties"]["storageLocation"],
            json!({"filePath": "/var/captures/pc.cap"})
        );
    }

    /// Every bad invocation: exit 2, a message naming what is wrong, and
    /// (`prepare` does no I/O) no request.
    #[test]
    fn bad_invocations_fail_before_any_request() {
        let create = |extra: &[&'static str]| {
            let mut args = vec!["create", "-g", "RG", "-n", "pc"];
            args.extend_from_slice(extra);
            args
        };
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                create(&["--vm", "vm"]),
                "usage error: --storage-account NAME_OR_ID [--storage-path PATH] [--file-path PATH] | --file-path PATH",
            ),
            (
                create(&["--vm", "vm", "--storage-path", "https://x/y"]),
                "usage error: --storage-account NAME_OR_ID",
            ),
            (
                create(&["--vm", "vm", "--file-path", "/var/captures/x.pcap"]),
                "--file-path PATH must end with the '*.cap' extension",
            ),
            (
                create(&["--vm", "vm", "--file-path", "/tmp/x.cap"]),
                "argument --file-path: storageLocation.filePath \"/tmp/x.cap\" is not under /var/captures",
            ),
            (
                create(&["--vm", "vm", "--file-path", "D:\\capture\\x.cap"]),
                "is a Windows path",
            ),
            (
                create(&["--storage-account", "st"]),
                "the following arguments are required: --vm",
            ),
            (
                create(&[
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    r#"[{"protocol":"TCP""#,
                ]),
                "argument --filters: filters is not valid JSON",
            ),
            (
                create(&[
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    r#"[{"protocol":"GRE"}]"#,
                ]),
                "argument --filters: filters[0].protocol",
            ),
            (
                create(&[
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    r#"[{"protocol":"UDP","tcpFlags":"SYN"}]"#,
                ]),
                "filters[0].tcpFlags is only for TCP, but protocol is UDP",
            ),
            (
                create(&[
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    r#"[{"localIPAddress":"10.1.2.3/16"}]"#,
                ]),
                "has host bits set under its /16 mask: write the network, \"10.1.0.0/16\"",
            ),
            (
                create(&[
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    r#"[{"protocol":"ICMP","icmpType":"300"}]"#,
                ]),
                "filters[0].icmpType \"300\" is out of range: an ICMP type is 0-255",
            ),
            (
                create(&[
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    r#"[{"direction":"ingress"}]"#,
                ]),
                "filters[0].direction \"ingress\" is not a direction",
            ),
            (
                create(&[
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    r#"[{"bpfExpression":"tcp dst port"}]"#,
                ]),
                "argument --filters: filters[0].bpfExpression \"tcp dst port\" does not compile: libpcap: can't parse filter expression: syntax error",
            ),
            (
                create(&[
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    r#"[{"bpfExpression":"ether src 2:0:0:0:0:1"}]"#,
                ]),
                "libpcap: ethernet addresses supported only on",
            ),
            (
                create(&[
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    r#"[{"bpfExpression":"udp","bpfProgram":"1,6 0 0 1"}]"#,
                ]),
                "has bpfProgram, which the controller fills in from bpfExpression: leave it out",
            ),
            (
                create(&[
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    r#"[{"protocol":"TCP","localPort":"70000"}]"#,
                ]),
                "argument --filters: filters[0].localPort \"70000\" is out of range",
            ),
            (
                create(&[
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    r#"[{"protocol":"TCP","localip":"1.2.3.4"}]"#,
                ]),
                "argument --filters: filters[0]",
            ),
            (
                create(&[
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    r#"[{"remoteIPAddress":"1.1.1.1-255.255.255"}]"#,
                ]),
                "argument --filters: filters[0].remoteIPAddress",
            ),
            (
                create(&[
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    "@/nonexistent/filters.json",
                ]),
                "argument --filters: cannot read /nonexistent/filters.json",
            ),
            (
                create(&["--vm", "vm", "--storage-account", "st", "--time-limit", "18001"]),
                "argument --time-limit: '18001' is greater than the maximum 18000",
            ),
            (
                create(&["--vm", "vm", "--storage-account", "st", "--capture-size", "-1"]),
                "argument --capture-size: '-1' is less than the minimum 0",
            ),
            (
                create(&["--vm", "vm", "--storage-account", "st", "--capture-limit", "4294967296"]),
                "argument --capture-limit: '4294967296' is greater than the maximum 4294967295",
            ),
            (
                create(&["--vm", "vm", "--storage-account", "st", "--target-type", "Foo"]),
                "'Foo' is not a valid value for '--target-type'. Allowed values: AzureVM, AzureVMSS.",
            ),
            (
                create(&["--vm", "vm", "--storage-account", "st", "--include", "0"]),
                "--include/--exclude select scale-set instances",
            ),
            (
                create(&["--storage-account", "st", "--target-type", "AzureVMSS"]),
                "--target NAME_OR_ID is required when --target-type is AzureVMSS",
            ),
            (
                create(&["--vm", "bad name", "--storage-account", "st"]),
                "argument --vm: \"bad name\" is not a valid name",
            ),
            (
                create(&["--vm", "/subscriptions/x", "--storage-account", "st"]),
                "argument --vm: \"/subscriptions/x\" is not a valid resource id",
            ),
            (
                create(&[
                    "--vm",
                    "vm",
                    "--storage-account",
                    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/x",
                ]),
                "argument --storage-account: \"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/x\" is a virtual machine id, but it must be a storage account id",
            ),
            (
                create(&["--vm", "vm", "--storage-account", "st", "--storage-path", "ftp://x"]),
                "argument --storage-path",
            ),
            (
                vec![
                    "create",
                    "-g",
                    "bad/group",
                    "-n",
                    "pc",
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                ],
                "argument --resource-group/-g: \"bad/group\" is not a valid resource group name",
            ),
            (
                vec![
                    "create",
                    "-g",
                    "RG",
                    "-n",
                    "pc.",
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                ],
                "argument --name/-n: \"pc.\" is not a valid name: it ends with '.'",
            ),
            (vec!["show", "-n", "pc"], "--location"),
            (
                vec!["show", "-n", "pc", "-l", "west-us!"],
                "argument --location/-l: \"west-us!\" is not a valid location",
            ),
            (
                vec!["list", "-l", ""],
                "argument --location/-l: \"\" is not a valid location: it is empty",
            ),
            (
                vec!["wait", "-n", "pc", "-l", "westus"],
                "usage error: give one condition",
            ),
            (
                vec!["wait", "-n", "pc", "-l", "westus", "--created", "--deleted"],
                "usage error: give one condition",
            ),
            (
                vec!["wait", "-n", "pc", "--created"],
                "the following arguments are required: --watcher-name and --watcher-rg",
            ),
            (
                vec!["download", "-n", "pc", "-l", "westus", "-f", ""],
                "argument --output-file/-f",
            ),
        ];
        crate::error::assert_usage_errors(&cases, prepared);
    }

    /// Issue 13: a capture over a scale set, and the merged download.
    #[test]
    fn issue_13_bad_scale_set_invocations_fail_before_any_request() {
        let vmss = |extra: &[&'static str]| {
            let mut args = vec![
                "create",
                "-g",
                "RG",
                "-n",
                "pc",
                "--storage-account",
                "st",
                "--target-type",
                "AzureVMSS",
            ];
            args.extend_from_slice(extra);
            args
        };
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vmss(&["--target", "web", "--include", "x"]),
                "argument --include/--exclude: scope.include[0] \"x\" is not a scale-set instance id",
            ),
            (
                vmss(&["--target", "web", "--exclude", "-1"]),
                "argument --include/--exclude: scope.exclude[0] \"-1\" is not a scale-set instance id",
            ),
            (
                vmss(&["--target", "web", "--include", "1", "2", "1"]),
                "argument --include/--exclude: scope.include[2] \"1\" is named twice",
            ),
            (
                vmss(&["--target", "web", "--include", "1", "--exclude", "1"]),
                "argument --include/--exclude: scope.exclude[0] \"1\" is also in properties.scope.include",
            ),
            (
                vmss(&[
                    "--target",
                    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
                ]),
                "is a virtual machine id, but it must be a scale set id",
            ),
            (
                vmss(&["--target", "w b"]),
                "argument --target: \"w b\" is not a valid name",
            ),
            (
                vec![
                    "create",
                    "-g",
                    "RG",
                    "-n",
                    "pc",
                    "--storage-account",
                    "st",
                    "--target",
                    "web",
                ],
                "--target names a scale set: use it with --target-type AzureVMSS",
            ),
            (
                vec![
                    "create",
                    "-g",
                    "RG",
                    "-n",
                    "pc",
                    "--storage-account",
                    "st",
                    "--target-type",
                    "VMSS",
                    "--target",
                    "web",
                ],
                "'VMSS' is not a valid value for '--target-type'",
            ),
            (
                vec!["download", "-n", "pc", "-l", "westus", "--merged", "-f", ""],
                "argument --output-file/-f",
            ),
            (vec!["download", "-n", "pc", "--merged"], "--location <LOCATION>"),
            (
                vec!["download", "-n", "p c", "-l", "westus", "--merged"],
                "argument --name/-n: \"p c\"",
            ),
        ];
        crate::error::assert_usage_errors(&cases, prepared);
    }

    #[test]
    fn issue_13_a_scale_set_capture_targets_the_set_and_its_instances() {
        let body = body(&[
            "create",
            "-g",
            "RG",
            "-n",
            "fleet",
            "--target-type",
            "AzureVMSS",
            "--target",
            "web",
            "--storage-account",
            "st",
            "--exclude",
            "3",
        ]);
        assert_eq!(
            body["properties"]["target"],
            format!("{SUB}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/web")
        );
        assert_eq!(body["properties"]["scope"], json!({"exclude": ["3"]}));
        match prepared(&[
            "create",
            "-g",
            "RG",
            "-n",
            "fleet",
            "--target-type",
            "AzureVMSS",
            "--target",
            "web",
            "--file-path",
            "/var/captures/f.cap",
        ])
        .unwrap()
        {
            // The scale set is what create reads for its location (as az's get_network_watcher_from_vmss).
            Prepared::Create {
                target: Locate::Resource(target),
                ..
            } => assert_eq!(target.kind(), ResourceKind::ScaleSet),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn issue_13_hosts_chosen_by_id_or_tag_go_in_netwatch_targets() {
        let create = |extra: &[&'static str]| {
            let mut args = vec![
                "create",
                "-g",
                "rg1",
                "-n",
                "some",
                "--file-path",
                "/var/captures/s.cap",
            ];
            args.extend_from_slice(extra);
            prepared(&args)
        };
        match create(&["--target-vms", "web-1", "web-2"]).unwrap() {
            Prepared::Create {
                target: Locate::Resource(first),
                body,
                ..
            } => {
                assert_eq!(first.name().as_str(), "web-1");
                let json = serde_json::to_value(&body).unwrap();
                assert_eq!(json["properties"].get("target"), None, "{json}");
                let vms = &json["properties"]["netwatch"]["targets"]["vms"];
                assert_eq!(vms.as_array().unwrap().len(), 2, "{json}");
                assert!(
                    vms[1]
                        .as_str()
                        .unwrap()
                        .ends_with("/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/web-2")
                );
            }
            other => panic!("{other:?}"),
        }
        match create(&["--target-tags", "role=web", "tier=edge", "-l", "westus"]).unwrap() {
            Prepared::Create {
                target: Locate::Location(location),
                body,
                ..
            } => {
                assert_eq!(location, "westus");
                let json = serde_json::to_value(&body).unwrap();
                assert_eq!(
                    json["properties"]["netwatch"]["targets"]["tags"],
                    serde_json::json!({"role": "web", "tier": "edge"})
                );
            }
            other => panic!("{other:?}"),
        }
        for (extra, names) in [
            (&["--target-tags", "role=web"][..], "--location"),
            (&["--target-tags", "role", "-l", "westus"][..], "--target-tags"),
            (
                &["--target-vms", "a", "--target-tags", "r=w", "-l", "westus"][..],
                "not both",
            ),
            (&["--target-vms", "a", "--vm", "b"][..], "--vm"),
            (&["--target-vms", "a", "--include", "1"][..], "--include"),
            (&["--target-vms", "a", "-l", "westus"][..], "--location"),
            (&["--target-vms", "a", "a"][..], "--target-vms"),
            (&["--target-vms", "bad name!"][..], "--target-vms"),
            (&["--vm", "a", "-l", "westus"][..], "--location"),
        ] {
            match create(extra) {
                Err(CliError::Usage(message)) => assert!(message.contains(names), "{extra:?}: {message}"),
                other => panic!("{extra:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn issue_13_merged_downloads_default_to_a_pcapng() {
        let download = |extra: &[&'static str]| {
            let mut args = vec!["download", "-n", "fleet", "-l", "westus"];
            args.extend_from_slice(extra);
            match prepared(&args).unwrap() {
                Prepared::Download {
                    output_file, merged, ..
                } => (output_file, merged),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(download(&["--merged"]), ("fleet.pcapng".to_owned(), true));
        assert_eq!(
            download(&["--merged", "--output-file", "all.pcapng"]),
            ("all.pcapng".to_owned(), true)
        );
        assert_eq!(download(&["-f", "-", "--merged"]), ("-".to_owned(), true));
        assert_eq!(download(&[]), ("fleet.cap".to_owned(), false));
    }

    /// The server's status of a capture over a scale set, shaped as
    /// `show-status` prints it (the corpus the output tests render with az).
    fn fleet_status() -> Value {
        serde_json::from_str(include_str!(
            "../../tests/data/output/results/packet_capture_show_status_vmss.json"
        ))
        .unwrap()
    }

    fn table(value: &Value) -> String {
        let transformer = Query::parse(STATUS_TABLE).unwrap();
        crate::output::render_with(value, crate::output::OutputFormat::Table, None, Some(&transformer)).unwrap()
    }

    #[test]
    fn issue_13_the_fleet_status_sample_is_the_api_s_wire_shape() {
        // Read with the api's types and written back, the sample is unchanged:
        // every key the table reads is one the server writes.
        let typed: netwatch_api::packet_capture::PacketCaptureQueryStatusResult =
            serde_json::from_value(fleet_status()).unwrap();
        let netwatch = typed.netwatch.as_ref().unwrap();
        assert_eq!(netwatch.instances.len(), 3);
        assert_eq!(netwatch.summary.as_ref().unwrap().failed, 1);
        assert_eq!(
            shape::query_status(&serde_json::to_value(&typed).unwrap()),
            fleet_status()
        );
    }

    #[test]
    fn issue_13_show_status_table_has_a_row_per_instance() {
        assert_eq!(
            table(&fleet_status()),
            "InstanceId    Host    Status    StopReason    Errors                       Packets    Drops    Upload     Files\n\
             ------------  ------  --------  ------------  ---------------------------  ---------  -------  ---------  -------\n\
             0             web-a   Running                                              1200       0        Pending    0\n\
             1             web-b   Stopped   TimeExceeded                               53000      12       Succeeded  1\n\
             3                     Error     AgentStopped  AgentStopped, StorageFailed  0          0                   0\n"
        );
        assert_eq!(
            status_summary(&fleet_status()).as_deref(),
            Some("running 1, stopped 1, failed 1\n  3: AgentStopped: the agent was not heard from for 60 seconds")
        );
    }

    #[test]
    fn issue_13_one_vm_s_status_table_is_unchanged() {
        let status: Value = serde_json::from_str(include_str!(
            "../../tests/data/output/results/packet_capture_status_stopped.json"
        ))
        .unwrap();
        let plain = crate::output::render(&status, crate::output::OutputFormat::Table, None).unwrap();
        assert_eq!(table(&status), plain);
        assert_eq!(status_summary(&status), None);
        // Nor does the transformer touch any other format.
        let transformer = Query::parse(STATUS_TABLE).unwrap();
        let json = crate::output::OutputFormat::Json;
        assert_eq!(
            crate::output::render_with(&fleet_status(), json, None, Some(&transformer)).unwrap(),
            crate::output::render(&fleet_status(), json, None).unwrap()
        );
    }

    #[test]
    fn locations_resolve_as_az_resolves_them() {
        let watchers = json!({"value": [
            {"id": format!("{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus"), "location": "westus"},
            {"id": format!("{SUB}/resourceGroups/Other/providers/Microsoft.Network/networkWatchers/nw2"), "location": "eastus"}
        ]});
        assert_eq!(
            watcher_in(&watchers, "WestUS").unwrap(),
            Watcher {
                group: "NetworkWatcherRG".to_owned(),
                name: "NetworkWatcher_westus".to_owned()
            }
        );
        assert_eq!(watcher_in(&watchers, "eastus").unwrap().name, "nw2");
        let err = watcher_in(&watchers, "westeurope").unwrap_err();
        assert_eq!(err.to_string(), "network watcher is not enabled for region westeurope.");
        assert_eq!(err.exit_code(), 1);
        let locations = json!({"value": [{"name": "westus", "displayName": "West US"}, {"name": "eastus", "displayName": "East US"}]});
        assert_eq!(map_display_name(&locations, "west us"), "westus");
        assert_eq!(map_display_name(&locations, "North Pole"), "North Pole");
    }
}
