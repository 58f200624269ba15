//! `netwatch network watcher flight-recorder …` and `netwatch network watcher
//! trigger …`: netwatch's own resources for captures around alerts (issue
//! 16), which az does not have; they follow `packet-capture`'s shape.
//!
//! - A flight recorder (`…/networkWatchers/{w}/netwatchFlightRecorders/{name}`)
//!   keeps a rolling window of recent traffic on a VM or on every instance
//!   of a scale set, from which a triggered capture takes the seconds
//!   before its alert. `set` PUTs it (created or replaced), `show`/`list`
//!   print each host's window as its agent last said, `delete` stops it.
//! - A trigger (`…/networkWatchers/{w}/netwatchTriggers/{name}`) says which
//!   alerts start a capture, on which hosts, with which limits. The answer to
//!   the `create` that makes it (or gives it a new `--webhook-secret`) holds
//!   `webhookUrl` with the secret, the only time it is shown: `create` says
//!   so on standard error.
//! - Every command finds its watcher from `-l/--location` as `packet-capture`
//!   does (az's `get_network_watcher_from_location`); `-g` is the resource
//!   group of the VMs, scale sets and storage account given by name.
//! - Bodies are checked with `netwatch_api`'s `FlightRecorder::validate` and
//!   `Trigger::validate` (the server's own checks) before anything is sent:
//!   a bad flag is exit 2 with the flag named, never a request.
//! - The PUTs answer at once (200 or 201; no long-running operation), DELETE
//!   200 or 204 (there was none); `delete` prints nothing, as az's do.

use std::collections::BTreeMap;

use clap::{ArgAction, Subcommand};
use netwatch_api::packet_capture::{CapturePath, PacketCaptureStorageLocation};
use netwatch_api::recorder::{FlightRecorder, FlightRecorderProperties};
use netwatch_api::resource::{ResourceGroupName, ResourceId, ResourceKind, ResourceName, SubscriptionId};
use netwatch_api::trigger::{Trigger, TriggerCapture, TriggerHosts, TriggerMatch, TriggerProperties};
use reqwest::Method;
use serde_json::Value;

use super::packet_capture::{
    API_VERSION, LocationArg, Watcher, WatcherRef, flagged_error, location_ref, name_or_id, parse_filters, resolve,
};
use super::{bool_arg, flag_error, group_arg, name_arg};
use crate::error::CliError;
use crate::{Context, shape};

#[derive(Debug, clap::Args)]
pub struct RecorderSetArgs {
    /// Location (region) of the network watcher, e.g. westus or "West US".
    #[arg(long, short = 'l', value_name = "LOCATION")]
    location: String,
    /// Name of the flight recorder (default: the VM's or scale set's name).
    #[arg(long, short = 'n', value_name = "NAME")]
    name: Option<String>,
    /// Name or ID of the VM to record on.
    #[arg(long, value_name = "NAME_OR_ID")]
    vm: Option<String>,
    /// Name or ID of the scale set to record on (every instance).
    #[arg(long, value_name = "NAME_OR_ID")]
    vmss: Option<String>,
    /// Name of the resource group of the VM or scale set given by name.
    #[arg(long, short = 'g', value_name = "GROUP")]
    resource_group: Option<String>,
    /// JSON encoded list of packet filters, as packet-capture's. Use `@{path}` to load from file.
    #[arg(long, value_name = "JSON")]
    filters: Option<String>,
    /// Seconds of traffic to keep at least, 1-3600 (default 60), as long as --max-bytes allows.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    seconds: Option<i64>,
    /// Most bytes of files each host keeps: bytes, or KiB/MiB/GiB such as 256MiB (default), 1 MiB to 64 GiB.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    max_bytes: Option<String>,
    /// Number of bytes kept per packet, 0-262144; excess bytes are truncated (0 keeps whole packets).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    capture_size: Option<i64>,
}

/// `-n/--name` and `-l/--location` of a flight recorder.
#[derive(Debug, clap::Args)]
pub struct RecorderRef {
    /// Name of the flight recorder.
    #[arg(long, short = 'n', value_name = "NAME")]
    name: String,
    /// Location (region) of the network watcher, e.g. westus or "West US".
    #[arg(long, short = 'l', value_name = "LOCATION")]
    location: String,
}

#[derive(Debug, Subcommand)]
pub enum FlightRecorderCommand {
    /// Start or change a flight recorder on a VM or on every instance of a scale set.
    Set(Box<RecorderSetArgs>),
    /// Show a flight recorder and each host's window.
    Show(RecorderRef),
    /// List the flight recorders of a region's network watcher.
    List(LocationArg),
    /// Delete a flight recorder (its hosts stop and delete its files).
    Delete(RecorderRef),
}

#[derive(Debug, clap::Args)]
pub struct TriggerCreateArgs {
    /// Location (region) of the network watcher, e.g. westus or "West US".
    #[arg(long, short = 'l', value_name = "LOCATION")]
    location: String,
    /// Name of the trigger.
    #[arg(long, short = 'n', value_name = "NAME")]
    name: String,
    /// Where alerts come from: Any (default), AzureMonitor or Alertmanager.
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
    /// Match alerts of these rules only (any of them, any case).
    #[arg(long, value_name = "RULE", num_args = 1.., action = ArgAction::Append)]
    alert_rules: Vec<String>,
    /// Match alerts of these severities only (any of them, any case), e.g. Sev0 or critical.
    #[arg(long, value_name = "SEVERITY", num_args = 1.., action = ArgAction::Append)]
    severities: Vec<String>,
    /// Match alerts with each of these labels (Alertmanager's): NAME=VALUE ….
    #[arg(long, value_name = "NAME=VALUE", num_args = 1.., action = ArgAction::Append)]
    labels: Vec<String>,
    /// Capture on the alert's own targets: true (default) or false (then --vms or --tags are the hosts).
    #[arg(long, value_name = "BOOL")]
    from_alert: Option<String>,
    /// Hosts to capture on (VM names in -g, or VM, scale-set or instance ids); with --from-alert they narrow
    /// the alert's targets.
    #[arg(long, value_name = "NAME_OR_ID", num_args = 1.., action = ArgAction::Append)]
    vms: Vec<String>,
    /// Capture on the hosts with these tags (KEY=VALUE …; their own or their scale set's).
    #[arg(long, value_name = "KEY=VALUE", num_args = 1.., action = ArgAction::Append)]
    tags: Vec<String>,
    /// JSON encoded list of packet filters, as packet-capture's. Use `@{path}` to load from file.
    #[arg(long, value_name = "JSON")]
    filters: Option<String>,
    /// Number of bytes captured per packet; excess bytes are truncated (0 keeps whole packets).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    capture_size: Option<i64>,
    /// Most bytes of each capture: bytes, or KiB/MiB/GiB such as 512MiB (default 1073741824).
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    capture_limit: Option<String>,
    /// Seconds before the alert fired to capture, 0-3600 (default 60; the host's flight recorder keeps them).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    seconds_before: Option<i64>,
    /// Seconds after the alert fired to capture, 0-18000 (default 60).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    seconds_after: Option<i64>,
    /// Name or ID of a storage account to save the captures to.
    #[arg(long, value_name = "NAME_OR_ID")]
    storage_account: Option<String>,
    /// Local path on the hosts at which to save the captures; must start with /var/captures.
    #[arg(long, value_name = "PATH")]
    file_path: Option<String>,
    /// Name of the resource group of the VMs and storage account given by name.
    #[arg(long, short = 'g', value_name = "GROUP")]
    resource_group: Option<String>,
    /// Stop the alert's running captures when it resolves: true or false (default).
    #[arg(long, value_name = "BOOL")]
    stop_on_resolved: Option<String>,
    /// Seconds between two captures of this trigger on one host, 0-86400 (default 300).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    cooldown: Option<i64>,
    /// Most captures of this trigger at once, 1-1000 (default 10).
    #[arg(long, value_name = "COUNT", allow_negative_numbers = true)]
    max_concurrent: Option<i64>,
    /// Most captures of this trigger in an hour, 1-10000 (default 60).
    #[arg(long, value_name = "COUNT", allow_negative_numbers = true)]
    max_per_hour: Option<i64>,
    /// The webhook's secret: 32-128 characters of A-Z, a-z, 0-9, - and _ (default: one is made).
    #[arg(long, value_name = "SECRET")]
    webhook_secret: Option<String>,
}

/// `-n/--name` and `-l/--location` of a trigger.
#[derive(Debug, clap::Args)]
pub struct TriggerRef {
    /// Name of the trigger.
    #[arg(long, short = 'n', value_name = "NAME")]
    name: String,
    /// Location (region) of the network watcher, e.g. westus or "West US".
    #[arg(long, short = 'l', value_name = "LOCATION")]
    location: String,
}

#[derive(Debug, Subcommand)]
pub enum TriggerCommand {
    /// Create (or replace) a trigger: which alerts start a capture, where, and its limits.
    Create(Box<TriggerCreateArgs>),
    /// Show a trigger (its webhookUrl without the secret).
    Show(TriggerRef),
    /// List the triggers of a region's network watcher.
    List(LocationArg),
    /// Delete a trigger (its webhook URL stops working; captures it started go on).
    Delete(TriggerRef),
}

/// Which of the two resources a command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    FlightRecorder,
    Trigger,
}

impl Resource {
    /// Its collection under a network watcher.
    fn collection(self) -> &'static str {
        match self {
            Self::FlightRecorder => "netwatchFlightRecorders",
            Self::Trigger => "netwatchTriggers",
        }
    }
}

#[derive(Debug)]
pub(crate) enum Prepared {
    SetRecorder {
        watcher: WatcherRef,
        name: ResourceName,
        body: Box<FlightRecorder>,
    },
    CreateTrigger {
        watcher: WatcherRef,
        name: ResourceName,
        body: Box<Trigger>,
    },
    Show(Resource, WatcherRef, ResourceName),
    List(Resource, WatcherRef),
    Delete(Resource, WatcherRef, ResourceName),
}

/// A row of a flight recorder's table: its settings, and each host's state
/// and window (`Recording 58.2s`, `Waiting`), in the order the server lists them.
macro_rules! recorder_row {
    () => {
        "{Name:name, ResourceGroup:resourceGroup, Target:target, Seconds:seconds, MaxBytes:maxBytes, \
         Hosts:join(', ', hosts[].join(' ', [state, windowSeconds && join('', [to_string(windowSeconds), 's'])][]) \
         || `[]`)}"
    };
}

/// A row of a trigger's table (its webhookUrl is in the JSON output).
macro_rules! trigger_row {
    () => {
        "{Name:name, ResourceGroup:resourceGroup, Source:source, AlertRules:join(', ', match.alertRules || `[]`), \
         Severities:join(', ', match.severities || `[]`), FromAlert:hosts.fromAlert, \
         SecondsBefore:capture.secondsBefore, SecondsAfter:capture.secondsAfter, Cooldown:cooldownSeconds, \
         MaxConcurrent:maxConcurrent, MaxPerHour:maxPerHour}"
    };
}

const RECORDER_TABLE: &str = recorder_row!();
const RECORDER_LIST_TABLE: &str = concat!("[].", recorder_row!());
const TRIGGER_TABLE: &str = trigger_row!();
const TRIGGER_LIST_TABLE: &str = concat!("[].", trigger_row!());

/// The command's table transformer (see [`super::table_transformer`]).
/// `trigger create` has none: az's default table keeps its `webhookUrl`.
pub(crate) fn table_transformer(prepared: &Prepared) -> Option<&'static str> {
    match prepared {
        Prepared::SetRecorder { .. } | Prepared::Show(Resource::FlightRecorder, ..) => Some(RECORDER_TABLE),
        Prepared::List(Resource::FlightRecorder, _) => Some(RECORDER_LIST_TABLE),
        Prepared::Show(Resource::Trigger, ..) => Some(TRIGGER_TABLE),
        Prepared::List(Resource::Trigger, _) => Some(TRIGGER_LIST_TABLE),
        Prepared::CreateTrigger { .. } | Prepared::Delete(..) => None,
    }
}

/// The flag each field of a flight recorder comes from, for messages.
const RECORDER_FLAGS: [(&str, &str); 5] = [
    ("properties.target", "--vm/--vmss"),
    ("properties.filters", "--filters"),
    ("properties.seconds", "--seconds"),
    ("properties.maxBytes", "--max-bytes"),
    ("properties.bytesToCapturePerPacket", "--capture-size"),
];

/// The flag each field of a trigger comes from, for messages (the longer
/// prefixes first: the first that starts the error's target names it).
const TRIGGER_FLAGS: [(&str, &str); 22] = [
    ("properties.source", "--source"),
    ("properties.match.alertRules", "--alert-rules"),
    ("properties.match.severities", "--severities"),
    ("properties.match.labels", "--labels"),
    ("properties.hosts.fromAlert", "--from-alert"),
    ("properties.hosts.vms", "--vms"),
    ("properties.hosts.tags", "--tags"),
    ("properties.hosts", "--vms/--tags"),
    ("properties.capture.filters", "--filters"),
    ("properties.capture.bytesToCapturePerPacket", "--capture-size"),
    ("properties.capture.totalBytesPerSession", "--capture-limit"),
    ("properties.capture.secondsBefore", "--seconds-before"),
    ("properties.capture.secondsAfter", "--seconds-after"),
    ("properties.capture", "--seconds-before/--seconds-after"),
    ("properties.storageLocation.storageId", "--storage-account"),
    ("properties.storageLocation.filePath", "--file-path"),
    ("properties.storageLocation", "--storage-account/--file-path"),
    ("properties.stopOnResolved", "--stop-on-resolved"),
    ("properties.cooldownSeconds", "--cooldown"),
    ("properties.maxConcurrent", "--max-concurrent"),
    ("properties.maxPerHour", "--max-per-hour"),
    ("properties.webhookSecret", "--webhook-secret"),
];

fn usage(text: &str) -> CliError {
    CliError::Usage(format!("usage error: {text}"))
}

pub(crate) fn prepare_recorder(
    command: FlightRecorderCommand,
    subscription: &SubscriptionId,
) -> Result<Prepared, CliError> {
    let resource = Resource::FlightRecorder;
    Ok(match command {
        FlightRecorderCommand::Set(args) => prepare_set(&args, subscription)?,
        FlightRecorderCommand::Show(args) => Prepared::Show(
            resource,
            location_ref(&args.location)?,
            name_arg("--name/-n", &args.name)?,
        ),
        FlightRecorderCommand::List(args) => Prepared::List(resource, location_ref(&args.location)?),
        FlightRecorderCommand::Delete(args) => Prepared::Delete(
            resource,
            location_ref(&args.location)?,
            name_arg("--name/-n", &args.name)?,
        ),
    })
}

pub(crate) fn prepare_trigger(command: TriggerCommand, subscription: &SubscriptionId) -> Result<Prepared, CliError> {
    let resource = Resource::Trigger;
    Ok(match command {
        TriggerCommand::Create(args) => prepare_create(&args, subscription)?,
        TriggerCommand::Show(args) => Prepared::Show(
            resource,
            location_ref(&args.location)?,
            name_arg("--name/-n", &args.name)?,
        ),
        TriggerCommand::List(args) => Prepared::List(resource, location_ref(&args.location)?),
        TriggerCommand::Delete(args) => Prepared::Delete(
            resource,
            location_ref(&args.location)?,
            name_arg("--name/-n", &args.name)?,
        ),
    })
}

fn prepare_set(args: &RecorderSetArgs, subscription: &SubscriptionId) -> Result<Prepared, CliError> {
    let watcher = location_ref(&args.location)?;
    let group = args.resource_group.as_deref().map(group_arg).transpose()?;
    let target = match (&args.vm, &args.vmss) {
        (Some(vm), None) => resource_arg("--vm", vm, subscription, group.as_ref(), ResourceKind::VirtualMachine)?,
        (None, Some(vmss)) => resource_arg("--vmss", vmss, subscription, group.as_ref(), ResourceKind::ScaleSet)?,
        (Some(_), Some(_)) => {
            return Err(usage(
                "--vm and --vmss both name what to record on: give one (a scale set records on every instance)",
            ));
        }
        (None, None) => {
            return Err(usage(
                "give what to record on: --vm NAME_OR_ID for a VM, or --vmss NAME_OR_ID for every instance of a \
                 scale set",
            ));
        }
    };
    let name = match &args.name {
        Some(text) => name_arg("--name/-n", text)?,
        None => target.name().clone(),
    };
    let body = FlightRecorder {
        properties: FlightRecorderProperties {
            target: target.to_string(),
            filters: parse_filters(args.filters.as_deref())?,
            seconds: args.seconds,
            max_bytes: args
                .max_bytes
                .as_deref()
                .map(|text| size_arg("--max-bytes", text))
                .transpose()?,
            bytes_to_capture_per_packet: args.capture_size,
            ..FlightRecorderProperties::default()
        },
        ..FlightRecorder::default()
    };
    body.validate().map_err(|err| flagged_error(&err, &RECORDER_FLAGS))?;
    Ok(Prepared::SetRecorder {
        watcher,
        name,
        body: Box::new(body),
    })
}

fn prepare_create(args: &TriggerCreateArgs, subscription: &SubscriptionId) -> Result<Prepared, CliError> {
    let watcher = location_ref(&args.location)?;
    let name = name_arg("--name/-n", &args.name)?;
    let group = args.resource_group.as_deref().map(group_arg).transpose()?;
    let vms = args
        .vms
        .iter()
        .map(|text| {
            if text.starts_with('/') {
                // A VM, scale-set or instance id: the validation below checks which.
                Ok(text.clone())
            } else {
                resource_arg(
                    "--vms",
                    text,
                    subscription,
                    group.as_ref(),
                    ResourceKind::VirtualMachine,
                )
                .map(|id| id.to_string())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let storage_id = args
        .storage_account
        .as_deref()
        .map(|text| {
            resource_arg(
                "--storage-account",
                text,
                subscription,
                group.as_ref(),
                ResourceKind::StorageAccount,
            )
        })
        .transpose()?;
    let matches = TriggerMatch {
        alert_rules: non_empty(&args.alert_rules),
        severities: non_empty(&args.severities),
        labels: pairs("--labels", &args.labels, "label", "NAME=VALUE")?,
    };
    let hosts = TriggerHosts {
        from_alert: args
            .from_alert
            .as_deref()
            .map(|text| bool_arg("--from-alert", text))
            .transpose()?,
        vms: (!vms.is_empty()).then_some(vms),
        tags: pairs("--tags", &args.tags, "tag", "KEY=VALUE")?,
    };
    let capture = TriggerCapture {
        filters: parse_filters(args.filters.as_deref())?,
        bytes_to_capture_per_packet: args.capture_size,
        total_bytes_per_session: args
            .capture_limit
            .as_deref()
            .map(|text| size_arg("--capture-limit", text))
            .transpose()?,
        seconds_before: args.seconds_before,
        seconds_after: args.seconds_after,
    };
    let properties = TriggerProperties {
        source: args.source.clone(),
        matches: (matches != TriggerMatch::default()).then_some(matches),
        hosts: (hosts != TriggerHosts::default()).then_some(hosts),
        capture: (capture != TriggerCapture::default()).then_some(capture),
        storage_location: PacketCaptureStorageLocation {
            storage_id: storage_id.as_ref().map(ResourceId::to_string),
            file_path: args.file_path.clone(),
            ..PacketCaptureStorageLocation::default()
        },
        stop_on_resolved: args
            .stop_on_resolved
            .as_deref()
            .map(|text| bool_arg("--stop-on-resolved", text))
            .transpose()?,
        cooldown_seconds: args.cooldown,
        max_concurrent: args.max_concurrent,
        max_per_hour: args.max_per_hour,
        webhook_secret: args.webhook_secret.clone(),
        ..TriggerProperties::default()
    };
    let body = Trigger {
        properties,
        ..Trigger::default()
    };
    let trigger_error = |err: &netwatch_api::error::ApiError| flagged_error(err, &TRIGGER_FLAGS);
    body.validate().map_err(|err| trigger_error(&err))?;
    // Each capture the trigger starts is a capture with this file path, which
    // must pass a capture's checks: say so now rather than at every alert.
    if let Some(path) = &args.file_path {
        CapturePath::parse("properties.storageLocation.filePath", path).map_err(|err| trigger_error(&err))?;
    }
    Ok(Prepared::CreateTrigger {
        watcher,
        name,
        body: Box::new(body),
    })
}

/// A `--vm`, `--vmss`, `--vms` or `--storage-account` value: an id of
/// `kind`, or a name made into one in `-g`'s resource group, which a name
/// then needs.
fn resource_arg(
    flag: &str,
    text: &str,
    subscription: &SubscriptionId,
    group: Option<&ResourceGroupName>,
    kind: ResourceKind,
) -> Result<ResourceId, CliError> {
    match group {
        Some(group) => name_or_id(flag, text, subscription, group, kind),
        None if text.starts_with('/') => {
            ResourceId::parse_kind(flag, text, &[kind]).map_err(|err| flag_error(flag, &err))
        }
        None => {
            name_arg(flag, text)?;
            Err(usage(&format!(
                "{flag} {text:?} is a name: give its resource group with -g/--resource-group, or give its full id \
                 ({})",
                kind.id_template()
            )))
        }
    }
}

/// The values of a list flag, `None` when it was not given.
fn non_empty(values: &[String]) -> Option<Vec<String>> {
    (!values.is_empty()).then(|| values.to_vec())
}

/// `KEY=VALUE …` as a map, `None` when none was given; each key once.
fn pairs(flag: &str, texts: &[String], what: &str, form: &str) -> Result<Option<BTreeMap<String, String>>, CliError> {
    let mut map = BTreeMap::new();
    for text in texts {
        let Some((key, value)) = text.split_once('=').filter(|(key, _)| !key.is_empty()) else {
            return Err(CliError::Usage(format!(
                "argument {flag}: {text:?} is not a {what}: write {form}"
            )));
        };
        if map.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(CliError::Usage(format!(
                "argument {flag}: the {what} {key:?} is given twice"
            )));
        }
    }
    Ok((!map.is_empty()).then_some(map))
}

/// A size in bytes: a whole number of bytes (`268435456`) or of a binary
/// unit (`64KiB`, `256MiB`, `1GiB`; any case, a space allowed). Decimal
/// units (`MB`) are refused rather than guessed at. The range is the
/// validation's to check.
fn size_arg(flag: &str, text: &str) -> Result<i64, CliError> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let shift = match unit.as_str() {
        "" => Some(0),
        "kib" => Some(10),
        "mib" => Some(20),
        "gib" => Some(30),
        _ => None,
    };
    let Some(shift) = shift.filter(|_| !digits.is_empty()) else {
        let decimal = matches!(unit.as_str(), "kb" | "mb" | "gb" | "k" | "m" | "g");
        return Err(CliError::Usage(format!(
            "argument {flag}: {text:?} is not a size: write a whole number of bytes (268435456) or of KiB, MiB or \
             GiB (256MiB, 1GiB){}",
            if decimal {
                "; decimal units are not taken, write KiB, MiB or GiB"
            } else {
                ""
            }
        )));
    };
    digits
        .parse::<i64>()
        .ok()
        .and_then(|number| number.checked_mul(1 << shift))
        .ok_or_else(|| CliError::Usage(format!("argument {flag}: {text:?} is too large")))
}

/// `…/networkWatchers/{watcher}/{collection}[/{name}]`.
fn resource_path(context: &Context, watcher: &Watcher, resource: Resource, name: Option<&ResourceName>) -> String {
    let mut path = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkWatchers/{}/{}",
        context.subscription,
        watcher.group,
        watcher.name,
        resource.collection()
    );
    if let Some(name) = name {
        path.push('/');
        path.push_str(name.as_str());
    }
    path
}

/// PUTs `body` to `path`; the answer (200 replaced, 201 created).
async fn put(context: &Context, path: &str, body: &impl serde::Serialize) -> Result<crate::client::Answer, CliError> {
    let body = serde_json::to_value(body).map_err(|err| CliError::Unexpected(format!("serialize the body: {err}")))?;
    let url = context.client.url(path, API_VERSION);
    context.client.begin(Method::PUT, &url, Some(&body), &[200, 201]).await
}

pub(crate) async fn execute(prepared: Prepared, context: &Context) -> Result<Option<Value>, CliError> {
    let client = &context.client;
    match prepared {
        Prepared::SetRecorder { watcher, name, body } => {
            let watcher = resolve(context, &watcher).await?;
            let path = resource_path(context, &watcher, Resource::FlightRecorder, Some(&name));
            let answer = put(context, &path, &body).await?;
            Ok(Some(shape::netwatch_resource(&answer.body)))
        }
        Prepared::CreateTrigger { watcher, name, body } => {
            let watcher = resolve(context, &watcher).await?;
            let path = resource_path(context, &watcher, Resource::Trigger, Some(&name));
            let answer = put(context, &path, &body).await?;
            // The server shows the secret when it made one (201) or was given one.
            let secret_given = body.properties.webhook_secret.as_deref().is_some_and(|s| !s.is_empty());
            if answer.status.as_u16() == 201 || secret_given {
                context.warn(
                    "the webhookUrl holds the trigger's secret and is shown only now: give it to the alert sender \
                     (show and list print it without the secret)",
                );
            } else {
                context.warn(&format!(
                    "trigger {name} was replaced and keeps its webhook secret, which is not shown again: give \
                     --webhook-secret to set a new one"
                ));
            }
            Ok(Some(shape::netwatch_resource(&answer.body)))
        }
        Prepared::Show(resource, watcher, name) => {
            let watcher = resolve(context, &watcher).await?;
            let value = client
                .get(&resource_path(context, &watcher, resource, Some(&name)), API_VERSION)
                .await?;
            Ok(Some(shape::netwatch_resource(&value)))
        }
        Prepared::List(resource, watcher) => {
            let watcher = resolve(context, &watcher).await?;
            let value = client
                .get(&resource_path(context, &watcher, resource, None), API_VERSION)
                .await?;
            Ok(Some(shape::list(&value, shape::netwatch_resource)))
        }
        Prepared::Delete(resource, watcher, name) => {
            let watcher = resolve(context, &watcher).await?;
            let url = client.url(&resource_path(context, &watcher, resource, Some(&name)), API_VERSION);
            client.begin(Method::DELETE, &url, None, &[200, 204]).await?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{OutputFormat, Query, render_with};
    use crate::testing::{Request, block_on, context, json_answer, serve};
    use clap::Parser;
    use serde_json::json;

    #[derive(Debug, Parser)]
    enum Cli {
        #[command(subcommand)]
        FlightRecorder(FlightRecorderCommand),
        #[command(subcommand)]
        Trigger(TriggerCommand),
    }

    fn prepared(args: &[&str]) -> Result<Prepared, CliError> {
        let mut argv = vec!["watcher"];
        argv.extend_from_slice(args);
        let subscription = SubscriptionId::default_subscription();
        match Cli::try_parse_from(argv).map_err(|err| CliError::Usage(err.to_string()))? {
            Cli::FlightRecorder(command) => prepare_recorder(command, &subscription),
            Cli::Trigger(command) => prepare_trigger(command, &subscription),
        }
    }

    const SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000000";
    const WATCHER: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/NetworkWatcherRG/\
                           providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus";

    fn set(extra: &[&'static str]) -> Vec<&'static str> {
        let mut args = vec!["flight-recorder", "set", "-l", "westus"];
        args.extend_from_slice(extra);
        args
    }

    fn create(extra: &[&'static str]) -> Vec<&'static str> {
        let mut args = vec!["trigger", "create", "-l", "westus", "-n", "on-latency"];
        args.extend_from_slice(extra);
        args
    }

    /// Every bad invocation: exit 2, a message naming what is wrong, and
    /// (`prepare` does no I/O) no request.
    #[test]
    fn issue_16_bad_invocations_fail_before_any_request() {
        let vm = &["--vm", "web-1", "-g", "RG"];
        let recorder = |extra: &[&'static str]| {
            let mut args = set(vm);
            args.extend_from_slice(extra);
            args
        };
        let stored = |extra: &[&'static str]| {
            let mut args = create(&["--file-path", "/var/captures/t.cap"]);
            args.extend_from_slice(extra);
            args
        };
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                recorder(&["--seconds", "0"]),
                "argument --seconds: seconds 0 is out of range: use 1-3600 seconds",
            ),
            (recorder(&["--seconds", "3601"]), "argument --seconds: seconds 3601"),
            (
                recorder(&["--max-bytes", "12XB"]),
                "argument --max-bytes: \"12XB\" is not a size: write a whole number of bytes",
            ),
            (
                recorder(&["--max-bytes", "256MB"]),
                "decimal units are not taken, write KiB, MiB or GiB",
            ),
            (recorder(&["--max-bytes", "MiB"]), "\"MiB\" is not a size"),
            (recorder(&["--max-bytes", "-1"]), "\"-1\" is not a size"),
            (recorder(&["--max-bytes", "1.5GiB"]), "\"1.5GiB\" is not a size"),
            (
                recorder(&["--max-bytes", "99999999999999999999"]),
                "argument --max-bytes: \"99999999999999999999\" is too large",
            ),
            (
                recorder(&["--max-bytes", "1000"]),
                "argument --max-bytes: maxBytes 1000 is out of range: use 1048576-68719476736 bytes (1 MiB to 64 GiB)",
            ),
            (
                recorder(&["--max-bytes", "65GiB"]),
                "argument --max-bytes: maxBytes 69793218560 is out of range",
            ),
            (
                recorder(&["--capture-size", "262145"]),
                "argument --capture-size: bytesToCapturePerPacket 262145 is out of range",
            ),
            (
                set(&["--vm", "web-1", "--vmss", "web", "-g", "RG"]),
                "usage error: --vm and --vmss both name what to record on: give one",
            ),
            (
                set(&["-g", "RG"]),
                "usage error: give what to record on: --vm NAME_OR_ID",
            ),
            (
                set(&["--vm", "web-1"]),
                "usage error: --vm \"web-1\" is a name: give its resource group with -g/--resource-group",
            ),
            (
                set(&["--vm", "web 1", "-g", "RG"]),
                "argument --vm: \"web 1\" is not a valid name",
            ),
            (
                set(&[
                    "--vmss",
                    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/web-1",
                ]),
                "argument --vmss: \"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/web-1\" is a virtual machine id, but it must be a scale set id",
            ),
            (
                recorder(&["--filters", "[{\"protocol\":"]),
                "argument --filters: filters is not valid JSON",
            ),
            (
                recorder(&["--filters", "[{\"protocol\":\"SCTP\"}]"]),
                "argument --filters: filters[0].protocol",
            ),
            (
                recorder(&["--filters", "[{\"protocol\":\"TCP\",\"localPort\":\"70000\"}]"]),
                "argument --filters: filters[0].localPort \"70000\" is out of range",
            ),
            (
                recorder(&["-n", "rec."]),
                "argument --name/-n: \"rec.\" is not a valid name",
            ),
            (
                {
                    let mut args = set(vm);
                    args[3] = "west/us";
                    args
                },
                "argument --location/-l: \"west/us\" is not a valid location",
            ),
            (vec!["flight-recorder", "show", "-n", "rec"], "--location"),
            (vec!["flight-recorder", "list", "-l", ""], "argument --location/-l"),
            (
                vec!["flight-recorder", "delete", "-l", "westus", "-n", "a b"],
                "argument --name/-n: \"a b\"",
            ),
            (
                stored(&["--seconds-before", "4000"]),
                "argument --seconds-before: capture.secondsBefore 4000 is out of range: use 0-3600 seconds",
            ),
            (
                stored(&["--seconds-after", "18001"]),
                "argument --seconds-after: capture.secondsAfter 18001 is out of range",
            ),
            (
                stored(&["--seconds-before", "0", "--seconds-after", "0"]),
                "argument --seconds-before/--seconds-after: capture covers no time",
            ),
            (
                stored(&["--labels", "team"]),
                "argument --labels: \"team\" is not a label: write NAME=VALUE",
            ),
            (
                stored(&["--labels", "=net"]),
                "argument --labels: \"=net\" is not a label",
            ),
            (
                stored(&["--labels", "team=net", "team=db"]),
                "argument --labels: the label \"team\" is given twice",
            ),
            (
                stored(&["--source", "AzureMonitor", "--labels", "team=net"]),
                "argument --labels: match.labels matches Alertmanager's labels, but properties.source is AzureMonitor",
            ),
            (
                stored(&["--source", "Splunk"]),
                "argument --source: source \"Splunk\" is not a source netwatch takes alerts from: use Any, \
                 AzureMonitor or Alertmanager",
            ),
            (
                stored(&["--from-alert", "false"]),
                "argument --from-alert: hosts.fromAlert is false and no vms or tags are given",
            ),
            (
                stored(&["--from-alert", "maybe"]),
                "argument --from-alert: invalid value 'maybe': use true or false",
            ),
            (
                stored(&["--stop-on-resolved", "sometimes"]),
                "argument --stop-on-resolved: invalid value 'sometimes'",
            ),
            (
                stored(&["--tags", "role"]),
                "argument --tags: \"role\" is not a tag: write KEY=VALUE",
            ),
            (
                stored(&[
                    "--tags",
                    "role=web",
                    "--vms",
                    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/web-1",
                ]),
                "argument --vms/--tags: hosts has both vms and tags",
            ),
            (
                stored(&["--vms", "web-1"]),
                "usage error: --vms \"web-1\" is a name: give its resource group",
            ),
            (
                stored(&[
                    "--vms",
                    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG/providers/Microsoft.Storage/storageAccounts/st",
                ]),
                "argument --vms: hosts.vms[0]",
            ),
            (
                stored(&["--alert-rules", " "]),
                "argument --alert-rules: match.alertRules[0] is empty",
            ),
            (
                stored(&["--cooldown", "86401"]),
                "argument --cooldown: cooldownSeconds 86401 is out of range: use 0-86400 seconds",
            ),
            (
                stored(&["--max-concurrent", "0"]),
                "argument --max-concurrent: maxConcurrent 0 is out of range: use 1-1000",
            ),
            (
                stored(&["--max-per-hour", "10001"]),
                "argument --max-per-hour: maxPerHour 10001 is out of range",
            ),
            (
                stored(&["--webhook-secret", "short"]),
                "argument --webhook-secret: webhookSecret must be 32-128 characters",
            ),
            (
                stored(&["--capture-limit", "8GiB"]),
                "argument --capture-limit: capture.totalBytesPerSession 8589934592 is out of range",
            ),
            (
                stored(&["--capture-limit", "1 TB"]),
                "argument --capture-limit: \"1 TB\" is not a size",
            ),
            (
                stored(&["--filters", "{\"protocol\":\"TCP\",\"localip\":\"1.2.3.4\"}"]),
                "argument --filters: filters[0]",
            ),
            (
                stored(&["--filters", "[{\"localPort\":\"99999\"}]"]),
                "argument --filters: capture.filters[0].localPort",
            ),
            (
                stored(&["--filters", "@/nonexistent/filters.json"]),
                "argument --filters: cannot read /nonexistent/filters.json",
            ),
            (
                create(&[]),
                "argument --storage-account/--file-path: storageLocation is required",
            ),
            (
                create(&["--file-path", "/tmp/t.cap"]),
                "argument --file-path: storageLocation.filePath \"/tmp/t.cap\" is not under /var/captures",
            ),
            (
                create(&["--file-path", "/var/captures/t.pcap"]),
                "argument --file-path: storageLocation.filePath \"/var/captures/t.pcap\" must name a .cap file",
            ),
            (
                create(&["--storage-account", "st"]),
                "usage error: --storage-account \"st\" is a name: give its resource group",
            ),
            (
                create(&[
                    "--storage-account",
                    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/web-1",
                ]),
                "argument --storage-account: \"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/web-1\" is a virtual machine id, but it must be a storage account id",
            ),
            (
                vec![
                    "trigger",
                    "create",
                    "-l",
                    "westus",
                    "--file-path",
                    "/var/captures/t.cap",
                ],
                "--name <NAME>",
            ),
            (
                vec!["trigger", "show", "-l", "westus", "-n", "t/1"],
                "argument --name/-n",
            ),
            (vec!["trigger", "list", "-l", "x y!"], "argument --location/-l"),
        ];
        crate::error::assert_usage_errors(&cases, prepared);
    }

    #[test]
    fn issue_16_sizes_take_bytes_and_binary_units() {
        for (text, bytes) in [
            ("268435456", 268_435_456),
            ("256MiB", 256 << 20),
            ("256 mib", 256 << 20),
            ("1GiB", 1 << 30),
            ("64GiB", 64 << 30),
            ("1024KiB", 1 << 20),
            ("0", 0),
        ] {
            assert_eq!(size_arg("--max-bytes", text).unwrap(), bytes, "{text}");
        }
        for text in ["", "12XB", "1G", "GiB", "1GiB2", "0x10", "+5", "1e9"] {
            assert!(size_arg("--max-bytes", text).is_err(), "{text}");
        }
    }

    fn recorder_body(args: &[&str]) -> (ResourceName, Value) {
        match prepared(args).unwrap() {
            Prepared::SetRecorder { name, body, .. } => (name, serde_json::to_value(&body).unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn issue_16_a_recorder_is_named_for_its_target_and_sends_only_what_is_given() {
        let (name, body) = recorder_body(&set(&["--vm", "web-1", "-g", "RG"]));
        assert_eq!(name.as_str(), "web-1");
        assert_eq!(
            body,
            json!({"properties": {"target": format!("{SUB}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/web-1")}})
        );
        let scale_set = format!("{SUB}/resourceGroups/other/providers/Microsoft.Compute/virtualMachineScaleSets/web");
        let mut args = set(&[
            "-n",
            "edge",
            "--seconds",
            "120",
            "--max-bytes",
            "1GiB",
            "--capture-size",
            "128",
            "--filters",
            r#"[{"protocol":"TCP","localPort":"443"}]"#,
            "--vmss",
        ]);
        args.push(&scale_set);
        let (name, body) = recorder_body(&args);
        assert_eq!(name.as_str(), "edge");
        assert_eq!(
            body,
            json!({"properties": {
                "target": scale_set,
                "filters": [{"protocol": "TCP", "localPort": "443"}],
                "seconds": 120,
                "maxBytes": 1073741824,
                "bytesToCapturePerPacket": 128
            }})
        );
    }

    fn trigger_body(args: &[&str]) -> Value {
        match prepared(args).unwrap() {
            Prepared::CreateTrigger { body, .. } => serde_json::to_value(&body).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn issue_16_a_trigger_sends_every_flag_where_the_api_reads_it() {
        let body = trigger_body(&create(&[
            "-g",
            "RG",
            "--source",
            "Alertmanager",
            "--alert-rules",
            "HighLatency",
            "PacketLoss",
            "--severities",
            "critical",
            "--labels",
            "team=net",
            "env=prod",
            "--from-alert",
            "false",
            "--vms",
            "web-1",
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/other/providers/Microsoft.Compute/virtualMachineScaleSets/edge",
            "--filters",
            r#"[{"protocol":"UDP"}]"#,
            "--capture-size",
            "96",
            "--capture-limit",
            "512MiB",
            "--seconds-before",
            "120",
            "--seconds-after",
            "300",
            "--storage-account",
            "st",
            "--file-path",
            "/var/captures/latency.cap",
            "--stop-on-resolved",
            "yes",
            "--cooldown",
            "600",
            "--max-concurrent",
            "4",
            "--max-per-hour",
            "20",
            "--webhook-secret",
            "0123456789abcdef0123456789abcdef",
        ]));
        assert_eq!(
            body,
            json!({"properties": {
                "source": "Alertmanager",
                "match": {"alertRules": ["HighLatency", "PacketLoss"], "severities": ["critical"],
                    "labels": {"env": "prod", "team": "net"}},
                "hosts": {"fromAlert": false, "vms": [
                    format!("{SUB}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/web-1"),
                    format!("{SUB}/resourceGroups/other/providers/Microsoft.Compute/virtualMachineScaleSets/edge")
                ]},
                "capture": {"filters": [{"protocol": "UDP"}], "bytesToCapturePerPacket": 96,
                    "totalBytesPerSession": 536870912, "secondsBefore": 120, "secondsAfter": 300},
                "storageLocation": {
                    "storageId": format!("{SUB}/resourceGroups/RG/providers/Microsoft.Storage/storageAccounts/st"),
                    "filePath": "/var/captures/latency.cap"
                },
                "stopOnResolved": true,
                "cooldownSeconds": 600,
                "maxConcurrent": 4,
                "maxPerHour": 20,
                "webhookSecret": "0123456789abcdef0123456789abcdef"
            }})
        );
        // Only what is given goes: the server applies its defaults.
        assert_eq!(
            trigger_body(&create(&["--file-path", "/var/captures/t.cap", "--tags", "role=web"])),
            json!({"properties": {"hosts": {"tags": {"role": "web"}}, "storageLocation": {"filePath": "/var/captures/t.cap"}}})
        );
    }

    /// Runs a command against a scripted server: its result and the requests sent.
    fn run(args: &[&str], answers: Vec<Vec<u8>>) -> (Result<Option<Value>, CliError>, Vec<Request>) {
        let prepared = prepared(args).unwrap();
        let (base, server) = serve(answers);
        let result = block_on(execute(prepared, &context(&base)));
        (result, server.join().unwrap())
    }

    /// The subscription's watchers, as the controller lists them.
    fn watchers() -> Vec<u8> {
        json_answer(
            "200 OK",
            &json!({"value": [
                {"id": format!("{SUB}/resourceGroups/Other/providers/Microsoft.Network/networkWatchers/nw"), "location": "eastus"},
                {"id": WATCHER, "location": "westus"}
            ]}),
        )
    }

    const LIST_WATCHERS: &str = "GET /subscriptions/00000000-0000-0000-0000-000000000000/providers/\
                                 Microsoft.Network/networkWatchers?api-version=2022-01-01 HTTP/1.1";

    fn recorder_answer() -> Value {
        json!({
            "id": format!("{WATCHER}/netwatchFlightRecorders/web-1"), "name": "web-1",
            "type": "Microsoft.Network/networkWatchers/netwatchFlightRecorders",
            "properties": {"provisioningState": "Succeeded",
                "target": format!("{SUB}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/web-1"),
                "filters": [], "seconds": 60, "maxBytes": 268435456, "bytesToCapturePerPacket": 0,
                "hosts": [{"vmId": format!("{SUB}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/web-1"),
                    "state": "Recording", "windowStart": "2026-12-01T10:00:00.0000000Z", "windowSeconds": 58.5,
                    "bytes": 1024, "files": 2, "packets": 10, "kernelDrops": 0,
                    "updated": "2026-12-01T10:00:58.5000000Z"}]}
        })
    }

    #[test]
    fn issue_16_flight_recorder_commands_reach_the_watcher_s_recorders() {
        let (result, requests) = run(
            &set(&["--vm", "web-1", "-g", "RG", "--seconds", "90"]),
            vec![watchers(), json_answer("201 Created", &recorder_answer())],
        );
        let shown = result.unwrap().unwrap();
        assert_eq!(requests[0].line, LIST_WATCHERS);
        assert_eq!(
            requests[1].line,
            format!("PUT {WATCHER}/netwatchFlightRecorders/web-1?api-version=2022-01-01 HTTP/1.1")
        );
        assert_eq!(
            requests[1].json(),
            json!({"properties": {"target": format!("{SUB}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/web-1"), "seconds": 90}})
        );
        // Flattened as az prints a resource, with its resource group.
        assert_eq!(shown["seconds"], 60);
        assert_eq!(shown["resourceGroup"], "NetworkWatcherRG");
        assert_eq!(shown["hosts"][0]["state"], "Recording");
        assert!(shown.get("properties").is_none(), "{shown}");

        let ok = |body: Value| json_answer("200 OK", &body);
        for (args, answer, line) in [
            (
                vec!["flight-recorder", "show", "-l", "West US", "-n", "web-1"],
                ok(recorder_answer()),
                format!("GET {WATCHER}/netwatchFlightRecorders/web-1"),
            ),
            (
                vec!["flight-recorder", "list", "-l", "westus"],
                ok(json!({"value": [recorder_answer()]})),
                format!("GET {WATCHER}/netwatchFlightRecorders"),
            ),
            (
                vec!["flight-recorder", "delete", "-l", "westus", "-n", "web-1"],
                b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_vec(),
                format!("DELETE {WATCHER}/netwatchFlightRecorders/web-1"),
            ),
        ] {
            // A display name is mapped through the subscription's locations first.
            let mut answers = Vec::new();
            if args[3].contains(' ') {
                answers.push(ok(json!({"value": [{"name": "westus", "displayName": "West US"}]})));
            }
            answers.push(watchers());
            answers.push(answer);
            let (result, requests) = run(&args, answers);
            let result = result.unwrap();
            let last = requests.last().unwrap();
            assert_eq!(last.line, format!("{line}?api-version=2022-01-01 HTTP/1.1"), "{args:?}");
            match args[1] {
                "delete" => assert_eq!(result, None),
                "list" => assert_eq!(result.unwrap()[0]["name"], "web-1"),
                _ => assert_eq!(result.unwrap()["target"], recorder_answer()["properties"]["target"]),
            }
        }
    }

    fn trigger_answer(url: &str) -> Value {
        json!({
            "id": format!("{WATCHER}/netwatchTriggers/on-latency"), "name": "on-latency",
            "type": "Microsoft.Network/networkWatchers/netwatchTriggers",
            "properties": {"source": "Any", "match": {"alertRules": ["HighLatency"], "severities": [], "labels": {}},
                "hosts": {"fromAlert": true},
                "capture": {"filters": [], "bytesToCapturePerPacket": 0, "totalBytesPerSession": 1073741824,
                    "secondsBefore": 60, "secondsAfter": 60},
                "storageLocation": {"filePath": "/var/captures/t.cap"}, "stopOnResolved": false,
                "cooldownSeconds": 300, "maxConcurrent": 10, "maxPerHour": 60,
                "webhookUrl": url, "provisioningState": "Succeeded"}
        })
    }

    #[test]
    fn issue_16_trigger_commands_reach_the_watcher_s_triggers() {
        let url = "https://netwatch.example:8443/netwatch/v1/alerts/s3cr3t";
        let (result, requests) = run(
            &create(&["--file-path", "/var/captures/t.cap", "--alert-rules", "HighLatency"]),
            vec![watchers(), json_answer("201 Created", &trigger_answer(url))],
        );
        let shown = result.unwrap().unwrap();
        assert_eq!(requests[0].line, LIST_WATCHERS);
        assert_eq!(
            requests[1].line,
            format!("PUT {WATCHER}/netwatchTriggers/on-latency?api-version=2022-01-01 HTTP/1.1")
        );
        assert_eq!(
            requests[1].json(),
            json!({"properties": {"match": {"alertRules": ["HighLatency"]}, "storageLocation": {"filePath": "/var/captures/t.cap"}}})
        );
        assert_eq!(shown["webhookUrl"], url);
        assert_eq!(shown["match"]["alertRules"], json!(["HighLatency"]));
        assert_eq!(shown["resourceGroup"], "NetworkWatcherRG");

        let (result, requests) = run(
            &["trigger", "list", "-l", "westus"],
            vec![
                watchers(),
                json_answer("200 OK", &json!({"value": [trigger_answer("https://x/…")]})),
            ],
        );
        assert_eq!(result.unwrap().unwrap()[0]["cooldownSeconds"], 300);
        assert_eq!(
            requests[1].line,
            format!("GET {WATCHER}/netwatchTriggers?api-version=2022-01-01 HTTP/1.1")
        );
        let (result, requests) = run(
            &["trigger", "delete", "-l", "westus", "-n", "on-latency"],
            vec![watchers(), json_answer("200 OK", &json!({}))],
        );
        assert_eq!(result.unwrap(), None);
        assert_eq!(
            requests[1].line,
            format!("DELETE {WATCHER}/netwatchTriggers/on-latency?api-version=2022-01-01 HTTP/1.1")
        );
        // A server's refusal comes back as its ARM error.
        let refusal = json!({"error": {"code": "InvalidRequestFormat", "message": "storage account \"st\" is not configured on this controller", "target": "properties.storageLocation.storageId"}});
        let (result, _) = run(
            &create(&["--storage-account", "st", "-g", "RG"]),
            vec![watchers(), json_answer("400 Bad Request", &refusal)],
        );
        let err = result.unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(
            err.to_string().contains("is not configured on this controller"),
            "{err}"
        );
    }

    fn table(value: &Value, transformer: &str) -> String {
        let transformer = Query::parse(transformer).unwrap();
        render_with(value, OutputFormat::Table, None, Some(&transformer)).unwrap()
    }

    #[test]
    fn issue_16_tables_show_each_host_s_state_and_window() {
        let shown = shape::netwatch_resource(&recorder_answer());
        let mut two = recorder_answer();
        two["properties"]["hosts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"vmId": "x", "state": "Waiting", "bytes": 0, "files": 0, "packets": 0, "kernelDrops": 0}));
        let listed = shape::list(&json!({"value": [two]}), shape::netwatch_resource);
        let target = format!("{SUB}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/web-1");
        // knack pads every column but the last to its widest cell.
        let expected = |hosts: &str| {
            format!(
                "Name    ResourceGroup     {:<width$}  Seconds    MaxBytes    Hosts\n\
                 ------  ----------------  {}  ---------  ----------  {}\n\
                 web-1   NetworkWatcherRG  {target}  60         268435456   {hosts}\n",
                "Target",
                "-".repeat(target.len()),
                "-".repeat(hosts.len()),
                width = target.len(),
            )
        };
        assert_eq!(table(&shown, RECORDER_TABLE), expected("Recording 58.5s"));
        assert_eq!(
            table(&listed, RECORDER_LIST_TABLE),
            expected("Recording 58.5s, Waiting")
        );
        let trigger = shape::netwatch_resource(&trigger_answer("https://x"));
        assert_eq!(
            table(&trigger, TRIGGER_TABLE),
            "Name        ResourceGroup     Source    AlertRules    Severities    FromAlert    SecondsBefore    \
             SecondsAfter    Cooldown    MaxConcurrent    MaxPerHour\n\
             ----------  ----------------  --------  ------------  ------------  -----------  ---------------  \
             --------------  ----------  ---------------  ------------\n\
             on-latency  NetworkWatcherRG  Any       HighLatency                 True         60               \
             60              300         10               60\n"
        );
        assert_eq!(
            table(&json!([trigger]), TRIGGER_LIST_TABLE),
            table(&trigger, TRIGGER_TABLE)
        );
    }
}
