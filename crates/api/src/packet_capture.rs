//! Azure's packet-capture resource on the wire (api-contract.md §2), and its
//! validation into a [`ValidatedCapture`].
//!
//! - Request: [`PacketCapture`] `{"properties": PacketCaptureParameters}`, read
//!   from bytes by [`parse_packet_capture`] (a 400 at the JSON path for bad
//!   JSON, wrong types and unknown fields), then checked by
//!   [`PacketCapture::validate`] (a 400 at the JSON path for every broken rule).
//! - Responses: [`PacketCaptureResult`], [`PacketCaptureListResult`] and
//!   [`PacketCaptureQueryStatusResult`], whose optional `netwatch` object holds
//!   netwatch's own counters ([`NetwatchCaptureStatus`]).
//!
//! The serde types are plain wire shapes: they accept what parses and skip
//! unset fields on output, so the CLI can build and send them and read them
//! back; the strictness lives in [`parse_packet_capture`] and `validate`.
//!
//! # Rules (api-contract.md §2.2-§2.6 unless marked *our choice*, where the contract is silent)
//! - `target`: a virtual machine or scale set id (required). `targetType`
//!   (`AzureVM`|`AzureVMSS`, any case) must match it; *our choice*: when left
//!   out it follows the target (az always sends it, defaulting to `AzureVM`).
//!   A scale-set instance id is rejected with a pointer to `scope`.
//! - `scope` (`include`/`exclude` instance ids): only for scale sets; an empty
//!   scope on a VM is accepted. *Our choice*: instance ids are decimal numbers
//!   (netwatch numbers instances `0`, `1`, …, DESIGN.md §2) and echo as such,
//!   and an instance both included and excluded is rejected.
//! - Limits, defaults applied: `bytesToCapturePerPacket` 0..=4294967295,
//!   default 0; `totalBytesPerSession` 0..=4294967295, default 1073741824;
//!   `timeLimitInSeconds` 0..=18000, default 18000; `captureSettings`:
//!   `fileCount` 0..=10000, default 10; `fileSizeInBytes` 0..=4294967295,
//!   default 104857600; `sessionTimeLimitInSeconds` 0..=604800, default 86400.
//!   `bytesToCapturePerPacket` 0 keeps whole packets (documented); *our
//!   choice*: 0 in any other limit means that limit's documented maximum, so
//!   no session is unbounded.
//! - `storageLocation` (required): `storageId` must be a storage account id;
//!   with `continuousCapture` null the host path is `filePath` and `localPath`
//!   is rejected, with it true or false the path is `localPath` and `filePath`
//!   is rejected; at least a `storageId` or the path. Paths are Linux paths
//!   under `/var/captures` naming a `.cap` file (any case); *our choice*: no
//!   `.`, `..` or empty components, no control characters, and Windows paths
//!   (`D:\capture\pc1.cap`) are rejected with the Linux path to use instead,
//!   since netwatch hosts run Linux. `""` means unset, as for filters.
//! - `storagePath` is the server's to fill in; *our choice*: a client may send
//!   one (az's `--storage-path`) only with a `storageId`, as az requires, and it
//!   must be an `http(s)://` URI.
//! - `captureSettings` (ring-buffer capture, preview in Azure): *our choice*:
//!   it applies when `continuousCapture` is true or false and is rejected, not
//!   ignored, when `continuousCapture` is null. With `continuousCapture` set,
//!   the session ends at `sessionTimeLimitInSeconds` (Azure's docs: 18000 s
//!   without continuous capture, 86400 s with it) and `timeLimitInSeconds` and
//!   `totalBytesPerSession` are not used: `true` keeps a ring of `fileCount`
//!   files of `fileSizeInBytes`, deleting the oldest; `false` stops when
//!   `fileCount` files are full.
//! - `filters`: [`crate::filter`]'s rules; errors at `properties.filters[i].field`.
//! - *Our choice*: the read-only `id`, `name`, `etag` and
//!   `properties.provisioningState` are accepted and ignored, so a body from a
//!   GET can be PUT back (ARM's convention for read-only properties); any other
//!   unknown field is rejected.
//!
//! # Echo (what a GET shows)
//! [`ValidatedCapture::to_parameters`]: `targetType` always; the three limits
//! with defaults applied; `scope` for scale sets only (`[]` for all
//! instances); `filters` always (`[]` when none) with every field present, `""`
//! for unset ones (as a real Azure response), the protocol canonical and the
//! other fields as the client wrote them (api-contract.md §2.7: "echo what the
//! user sent"); `continuousCapture` and `captureSettings` (defaults applied)
//! only when continuous capture is set (*our choice*: Azure's 2022 API, which
//! az uses, has neither field).

mod parse;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
use crate::filter::{CaptureFilter, PacketCaptureFilter, validate_filters};
use crate::resource::{ResourceId, ResourceKind};

pub use parse::parse_packet_capture;

/// Default `bytesToCapturePerPacket`: whole packets.
pub const DEFAULT_BYTES_TO_CAPTURE_PER_PACKET: u32 = 0;
/// Default `totalBytesPerSession`: 1 GiB.
pub const DEFAULT_TOTAL_BYTES_PER_SESSION: u32 = 1_073_741_824;
/// Default (and maximum) `timeLimitInSeconds`: 5 hours.
pub const DEFAULT_TIME_LIMIT_IN_SECONDS: u32 = 18_000;
/// Default `captureSettings.fileCount`.
pub const DEFAULT_FILE_COUNT: u32 = 10;
/// Default `captureSettings.fileSizeInBytes`: 100 MiB.
pub const DEFAULT_FILE_SIZE_IN_BYTES: u32 = 104_857_600;
/// Default `captureSettings.sessionTimeLimitInSeconds`: 1 day.
pub const DEFAULT_SESSION_TIME_LIMIT_IN_SECONDS: u32 = 86_400;
/// Maximum of `bytesToCapturePerPacket`, `totalBytesPerSession` and `fileSizeInBytes`.
pub const MAX_BYTES: u32 = u32::MAX;
/// Maximum `timeLimitInSeconds`: 5 hours.
pub const MAX_TIME_LIMIT_IN_SECONDS: u32 = 18_000;
/// Maximum `captureSettings.fileCount`.
pub const MAX_FILE_COUNT: u32 = 10_000;
/// Maximum `captureSettings.sessionTimeLimitInSeconds`: 7 days.
pub const MAX_SESSION_TIME_LIMIT_IN_SECONDS: u32 = 604_800;

/// Most `netwatch.alert.secondsBefore`: an hour.
pub const MAX_SECONDS_BEFORE: u32 = 3_600;
/// Default `netwatch.alert.secondsBefore` and `secondsAfter`.
pub const DEFAULT_SECONDS_BEFORE: u32 = 60;
pub const DEFAULT_SECONDS_AFTER: u32 = 60;

/// Where Linux capture files must be (api-contract.md §2.4, §6).
pub const CAPTURE_DIR: &str = "/var/captures";

/// JSON paths of the fields validation names (the serde attributes spell the
/// same names; `wire_names_match_the_paths` keeps them in step).
const TARGET: &str = "properties.target";
const HOSTS: &str = "properties.netwatch.targets";
/// What [`ValidatedCapture::target`] holds for a capture whose hosts
/// `netwatch.targets` chose: a well-formed id that names nothing.
const SELECTOR_TARGET: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/netwatch/providers/Microsoft.Compute/virtualMachines/selector";
const TARGET_TYPE: &str = "properties.targetType";
const SCOPE: &str = "properties.scope";
const STORAGE_LOCATION: &str = "properties.storageLocation";
const STORAGE_ID: &str = "properties.storageLocation.storageId";
const STORAGE_PATH: &str = "properties.storageLocation.storagePath";
const FILE_PATH: &str = "properties.storageLocation.filePath";
const LOCAL_PATH: &str = "properties.storageLocation.localPath";
const CAPTURE_SETTINGS: &str = "properties.captureSettings";

/// What `properties.target` must be, for "is required" messages.
const TARGET_HINT: &str = "the id of the virtual machine or scale set to capture on, such as \
     /subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{vm}";
/// What `properties.storageLocation` must be, for "is required" messages.
const STORAGE_LOCATION_HINT: &str =
    "where the capture goes: a storageId (a storage account id), a filePath under /var/captures on the host, or both";

/// A numeric field's documented range and default (api-contract.md §2.2, §2.5).
#[derive(Debug)]
struct Limit {
    path: &'static str,
    max: u32,
    default: u32,
    unit: &'static str,
    /// Said after the range in messages.
    note: &'static str,
}

const BYTES_TO_CAPTURE_PER_PACKET: Limit = Limit {
    path: "properties.bytesToCapturePerPacket",
    max: MAX_BYTES,
    default: DEFAULT_BYTES_TO_CAPTURE_PER_PACKET,
    unit: "bytes",
    note: " (0 keeps whole packets)",
};
const TOTAL_BYTES_PER_SESSION: Limit = Limit {
    path: "properties.totalBytesPerSession",
    max: MAX_BYTES,
    default: DEFAULT_TOTAL_BYTES_PER_SESSION,
    unit: "bytes",
    note: " (the default is 1073741824, 1 GiB)",
};
const TIME_LIMIT_IN_SECONDS: Limit = Limit {
    path: "properties.timeLimitInSeconds",
    max: MAX_TIME_LIMIT_IN_SECONDS,
    default: DEFAULT_TIME_LIMIT_IN_SECONDS,
    unit: "seconds",
    note: " (5 hours); for longer captures set continuousCapture and \
           captureSettings.sessionTimeLimitInSeconds, up to 604800 (7 days)",
};
const FILE_COUNT: Limit = Limit {
    path: "properties.captureSettings.fileCount",
    max: MAX_FILE_COUNT,
    default: DEFAULT_FILE_COUNT,
    unit: "files",
    note: "",
};
const FILE_SIZE_IN_BYTES: Limit = Limit {
    path: "properties.captureSettings.fileSizeInBytes",
    max: MAX_BYTES,
    default: DEFAULT_FILE_SIZE_IN_BYTES,
    unit: "bytes",
    note: " (the default is 104857600, 100 MiB)",
};
const SECONDS_BEFORE: Limit = Limit {
    path: "properties.netwatch.alert.secondsBefore",
    max: MAX_SECONDS_BEFORE,
    default: DEFAULT_SECONDS_BEFORE,
    unit: "seconds",
    note: " (the host's flight recorder keeps them; the default is 60)",
};
const SECONDS_AFTER: Limit = Limit {
    path: "properties.netwatch.alert.secondsAfter",
    max: MAX_TIME_LIMIT_IN_SECONDS,
    default: DEFAULT_SECONDS_AFTER,
    unit: "seconds",
    note: " (5 hours; the default is 60)",
};
const SESSION_TIME_LIMIT_IN_SECONDS: Limit = Limit {
    path: "properties.captureSettings.sessionTimeLimitInSeconds",
    max: MAX_SESSION_TIME_LIMIT_IN_SECONDS,
    default: DEFAULT_SESSION_TIME_LIMIT_IN_SECONDS,
    unit: "seconds",
    note: " (7 days)",
};

impl Limit {
    /// The value with the default applied, as the integer type the field needs.
    fn check(&self, value: Option<i64>) -> Result<u32, ApiError> {
        let Some(value) = value else {
            return Ok(self.default);
        };
        u32::try_from(value)
            .ok()
            .filter(|&value| value <= self.max)
            .ok_or_else(|| self.out_of_range(&value.to_string()))
    }

    fn out_of_range(&self, value: &str) -> ApiError {
        let Self {
            path, max, unit, note, ..
        } = self;
        ApiError::bad_request(
            *path,
            format!("{path} {value} is out of range: use 0-{max} {unit}{note}"),
        )
    }

    /// What the field takes, for type errors.
    fn expected(&self) -> String {
        format!("a whole number 0-{} ({})", self.max, self.unit)
    }

    /// `value`, with 0 meaning the maximum.
    fn effective(&self, value: u32) -> u32 {
        if value == 0 { self.max } else { value }
    }
}

// ---------------------------------------------------------------------------
// Request

/// The PUT body: `{"properties": {…}}` (api-contract.md §2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PacketCapture {
    pub properties: PacketCaptureParameters,
}

/// `PacketCaptureParameters` (api-contract.md §2.2); the module doc has the rules.
///
/// Numbers are `i64` so that a negative or oversized value reaches
/// validation and gets its range in the message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureParameters {
    /// The id of the VM or scale set to capture on. Required, unless
    /// `netwatch.targets` chooses the hosts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// `AzureVM` or `AzureVMSS`; follows `target` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
    /// Scale-set instances to include or exclude; both empty means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<PacketCaptureMachineScope>,
    /// Bytes kept of each packet, 0..=4294967295; 0 (the default) keeps all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_to_capture_per_packet: Option<i64>,
    /// The session stops when its file reaches this, 0..=4294967295; default 1 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes_per_session: Option<i64>,
    /// The session stops after this many seconds, 0..=18000; default 18000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_in_seconds: Option<i64>,
    /// Where the file goes. Required.
    pub storage_location: PacketCaptureStorageLocation,
    /// A packet is kept when any filter matches; none keeps all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<PacketCaptureFilter>>,
    /// `null` (the default): one file; `true`: a ring of files; `false`: files
    /// until `captureSettings.fileCount` are full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous_capture: Option<bool>,
    /// File count, size and session time when `continuousCapture` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_settings: Option<PacketCaptureSettings>,
    /// netwatch's own parameters (never needed by Azure's clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netwatch: Option<NetwatchCaptureParameters>,
}

/// `properties.netwatch` of a capture: netwatch's own parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetwatchCaptureParameters {
    /// The hosts to capture on, in place of `target`: a capture over hosts
    /// that are not one scale set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetSelector>,
    /// A capture around an alert: the seconds before it come from the
    /// host's flight recorder (issue 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertCaptureParameters>,
}

/// `properties.netwatch.alert`: the capture covers `secondsBefore` before
/// the alert fired (kept by the host's flight recorder) to `secondsAfter`
/// after it, in one file. A trigger fills in which trigger and alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertCaptureParameters {
    /// When the alert fired (RFC 3339), the alert's own time.
    #[serde(default)]
    pub fired_date_time: String,
    /// Seconds before `firedDateTime` to cover, 0-3600 (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_before: Option<i64>,
    /// Seconds after `firedDateTime` to cover, 0-18000 (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_after: Option<i64>,
    /// The trigger that started the capture (its resource id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The alert (Azure's `alertId`, Alertmanager's `fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    /// The alert's rule (`alertRule`, `alertname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_rule: Option<String>,
}

/// `properties.netwatch.targets`: hosts by id, or by tag (exactly one of the two).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetSelector {
    /// VM (or scale-set instance) ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vms: Option<Vec<String>>,
    /// Tags every chosen host has (its own, or its scale set's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,
}

/// `PacketCaptureMachineScope` (api-contract.md §2.6): scale-set instance ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureMachineScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
}

/// `PacketCaptureStorageLocation` (api-contract.md §2.4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureStorageLocation {
    /// A storage account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_id: Option<String>,
    /// The file's URL in storage, set by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_path: Option<String>,
    /// The file on the host when `continuousCapture` is null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    /// The file on the host when `continuousCapture` is true or false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_path: Option<String>,
}

/// `PacketCaptureSettings` (api-contract.md §2.5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureSettings {
    /// Files kept, 0..=10000; default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_count: Option<i64>,
    /// Bytes per file, 0..=4294967295; default 104857600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size_in_bytes: Option<i64>,
    /// Session length in seconds, 0..=604800; default 86400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_time_limit_in_seconds: Option<i64>,
}

impl PacketCaptureSettings {
    fn is_empty(&self) -> bool {
        self.file_count.is_none() && self.file_size_in_bytes.is_none() && self.session_time_limit_in_seconds.is_none()
    }
}

// ---------------------------------------------------------------------------
// Responses

/// ARM's `ProvisioningState` for a capture (NETJSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProvisioningState {
    Succeeded,
    Updating,
    Deleting,
    Failed,
}

/// `PacketCaptureResult` (api-contract.md §2.3): PUT, GET and list items. No
/// `type` and no `location`, as in Azure's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureResult {
    pub name: String,
    pub id: String,
    /// `W/"<guid>"`; Azure's create example has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub properties: PacketCaptureResultProperties,
}

/// `PacketCaptureResultProperties`: the parameters plus `provisioningState`
/// (written first, as Azure does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureResultProperties {
    pub provisioning_state: ProvisioningState,
    #[serde(flatten)]
    pub parameters: PacketCaptureParameters,
}

/// `PacketCaptureListResult`: `{"value":[…]}`; `nextLink` only when set
/// (api-contract.md §1.2 recommends leaving it out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureListResult {
    pub value: Vec<PacketCaptureResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// `PcStatus`: where a capture is in its life (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PcStatus {
    NotStarted,
    Running,
    Stopped,
    Error,
    Unknown,
}

/// `PcError`: a wire enum of what went wrong with a capture (not a Rust error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PcError {
    InternalError,
    AgentStopped,
    CaptureFailed,
    LocalFileFailed,
    StorageFailed,
}

/// `stopReason`, a free string on the wire. Only `TimeExceeded` is Azure's
/// documented value; `MaxBytesExceeded` and `ManualStop` are the contract's
/// suggestions (api-contract.md §2.8); anything else reads as [`StopReason::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum StopReason {
    /// `timeLimitInSeconds` (or `sessionTimeLimitInSeconds`) ran out.
    TimeExceeded,
    /// `totalBytesPerSession` (or the last file of a non-continuous ring) was reached.
    MaxBytesExceeded,
    /// Someone stopped it (`POST …/stop`).
    ManualStop,
    /// Any other text.
    Other(String),
}

impl StopReason {
    /// The wire text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::TimeExceeded => "TimeExceeded",
            Self::MaxBytesExceeded => "MaxBytesExceeded",
            Self::ManualStop => "ManualStop",
            Self::Other(text) => text,
        }
    }
}

impl From<String> for StopReason {
    fn from(text: String) -> Self {
        match text.as_str() {
            "TimeExceeded" => Self::TimeExceeded,
            "MaxBytesExceeded" => Self::MaxBytesExceeded,
            "ManualStop" => Self::ManualStop,
            _ => Self::Other(text),
        }
    }
}

impl From<StopReason> for String {
    fn from(reason: StopReason) -> Self {
        match reason {
            StopReason::Other(text) => text,
            known => known.as_str().to_owned(),
        }
    }
}

/// `PacketCaptureQueryStatusResult` (api-contract.md §2.8), plus netwatch's
/// counters under `netwatch` (clients ignore unknown keys; az shows them under
/// `additionalProperties`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureQueryStatusResult {
    pub name: String,
    pub id: String,
    /// When the capture started on its host: RFC 3339 UTC with seven
    /// fractional digits, as Azure prints times (`2016-12-06T17:20:01.5671279Z`);
    /// never earlier than the moment packets were first captured. Left out
    /// before the capture starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_start_time: Option<String>,
    pub packet_capture_status: PcStatus,
    /// Why it stopped; left out while it has not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    /// Always written, `[]` when nothing failed (as Azure's example).
    #[serde(default)]
    pub packet_capture_error: Vec<PcError>,
    /// netwatch's own view; left out when the agent has reported nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netwatch: Option<NetwatchCaptureStatus>,
}

/// What netwatch knows about a capture beyond Azure's fields (DESIGN.md §3,
/// "Status"), summed over the hosts it runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetwatchCaptureStatus {
    /// Packets written to the capture files.
    #[serde(default)]
    pub packets_captured: u64,
    /// Packet bytes written (after truncation), record headers not included.
    #[serde(default)]
    pub bytes_captured: u64,
    /// Packets the kernel dropped because the ring was full.
    #[serde(default)]
    pub kernel_drops: u64,
    /// Bytes of capture files, headers included.
    #[serde(default)]
    pub file_size_in_bytes: u64,
    /// Where the upload to the storage account is; left out without a `storageId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_state: Option<UploadState>,
    /// How much of the capture's files is in storage, 0–100; with
    /// `uploadState`, which it agrees with ([`UploadState::percent`]): 100
    /// when `Succeeded` and only then; otherwise the share of the bytes
    /// spooled for upload so far that is stored, rounded down, at most 99
    /// (0 while `Pending` before any file is stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_percent: Option<u8>,
    /// Why the upload waits or failed (`storage unreachable: …`, `the agent's spool is full: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_message: Option<String>,
    /// Files waiting in the agent's spool for upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_pending: Option<u32>,
    /// What the agent says of `packetCaptureError` (`the disk is full
    /// (/var/lib/netwatch/captures): …`, or that the capture resumed after an
    /// agent restart and its files have a gap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The capture's files in storage, in the order they were written (a
    /// continuous capture has one per rotated file, stored as each closes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<StoredFile>,
    /// The last time the target's agent was heard from, in the form of
    /// `captureStartTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_last_seen: Option<String>,
    /// A capture over many hosts (a scale set): how many instances are in
    /// each state, and why those that failed did. Left out for one VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<FleetSummary>,
    /// A capture over many hosts: one entry per instance in its scope, in
    /// instance order. The counters above are their sums.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceStatus>,
    /// A capture around an alert (`netwatch.alert`): the alert, and how
    /// much of the window before it the file really covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertCoverage>,
}

/// `netwatch.alert` of a capture's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertCoverage {
    /// The trigger that started the capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_rule: Option<String>,
    /// When the alert fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_date_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_before_requested: Option<u32>,
    /// Whole seconds before the alert the file covers (from the flight
    /// recorder); 0 or less when it starts at or after the alert (no
    /// recorder ran, or it had just started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_before_covered: Option<i64>,
    /// The first moment the file covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_from: Option<String>,
    /// [`AlertCoverage::covered_from`] in ms since the epoch, as the host said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_from_ms: Option<i64>,
}

/// How a capture over many hosts stands, instance by instance counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetSummary {
    pub total: u32,
    pub not_started: u32,
    pub running: u32,
    pub stopped: u32,
    /// Instances in `Error`: their agent was lost, or could not start or
    /// finish the capture.
    pub failed: u32,
    /// `running 37, stopped 0, failed 3`, and each failure's reason.
    pub text: String,
    /// One line per failed instance: `"3: AgentStopped: the agent …"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

/// One host's part of a capture over many hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// The scale-set instance id (`"0"`, `"1"`, …), or the VM's name for a
    /// capture over hosts chosen otherwise.
    pub instance_id: String,
    /// The host's resource id.
    pub vm_id: String,
    /// The host's own name, as its agent said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub packet_capture_status: PcStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    #[serde(default)]
    pub packet_capture_error: Vec<PcError>,
    /// Where this host's file goes (Azure's path for the instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_path: Option<String>,
    /// Its counters, upload state, files and last contact, as for one VM.
    #[serde(flatten)]
    pub status: Box<NetwatchCaptureStatus>,
}

/// One capture file in a storage account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredFile {
    /// Where it can be downloaded (as `storageLocation.storagePath` is written).
    pub storage_path: String,
    pub size_in_bytes: u64,
    /// SHA-256 of the file's bytes, lower-case hex, as the agent computed it
    /// before the upload (a download is checked against it).
    pub sha256: String,
}

/// Where a capture's upload to its storage account is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UploadState {
    /// Waiting: for the capture to end (or a continuous capture's file to
    /// close), or in the agent's spool for its turn.
    Pending,
    /// Being uploaded.
    Uploading,
    /// Storage or the controller is unreachable; the files wait in the
    /// agent's spool (across agent restarts) and are retried.
    Retrying,
    /// In storage, at `storageLocation.storagePath`.
    Succeeded,
    /// Given up; `packetCaptureError` has `StorageFailed`.
    Failed,
}

impl UploadState {
    /// `uploadPercent` in this state with `stored` of `total` bytes in
    /// storage: 100 once `Succeeded`, and only then (a capture still
    /// writing, a commit not done, a file given up: not all of it is
    /// stored); otherwise the share stored, rounded down, at most 99; 0
    /// while nothing is there to store.
    pub fn percent(self, stored: u64, total: u64) -> u8 {
        if self == Self::Succeeded {
            return 100;
        }
        let share = u128::from(stored.min(total)) * 100;
        share
            .checked_div(u128::from(total))
            .map_or(0, |percent| u8::try_from(percent.min(99)).unwrap_or(99))
    }
}

// ---------------------------------------------------------------------------
// Validated

/// Which kind of target a capture runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetType {
    /// A virtual machine: `AzureVM`.
    AzureVm,
    /// A scale set: `AzureVMSS`.
    AzureVmss,
}

impl TargetType {
    /// The wire spelling, `AzureVM` or `AzureVMSS`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AzureVm => "AzureVM",
            Self::AzureVmss => "AzureVMSS",
        }
    }

    /// The kind of id its target is.
    pub const fn kind(self) -> ResourceKind {
        match self {
            Self::AzureVm => ResourceKind::VirtualMachine,
            Self::AzureVmss => ResourceKind::ScaleSet,
        }
    }
}

/// Hosts a capture runs on, chosen by `netwatch.targets` rather than `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSelector {
    /// These VMs (or scale-set instances), by id.
    Vms(Vec<ResourceId>),
    /// Every host with all these tags (its own, or its scale set's).
    Tags(std::collections::BTreeMap<String, String>),
}

impl HostSelector {
    /// Whether a host with `tags` (its own and its scale set's) and id `id` is chosen.
    pub fn chooses(&self, id: &ResourceId, tags: &std::collections::BTreeMap<String, String>) -> bool {
        match self {
            Self::Vms(ids) => ids.contains(id),
            Self::Tags(wanted) => wanted.iter().all(|(name, value)| {
                tags.iter()
                    .any(|(have, v)| have.eq_ignore_ascii_case(name) && v == value)
            }),
        }
    }
}

/// The scale-set instances a capture runs on: all of them when `include` is
/// empty, less `exclude`. Always empty for a VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineScope {
    include: Vec<u32>,
    exclude: Vec<u32>,
}

impl MachineScope {
    /// Instances asked for; empty means all.
    pub fn include(&self) -> &[u32] {
        &self.include
    }

    /// Instances left out.
    pub fn exclude(&self) -> &[u32] {
        &self.exclude
    }

    /// Whether the capture runs on `instance`.
    pub fn selects(&self, instance: u32) -> bool {
        (self.include.is_empty() || self.include.contains(&instance)) && !self.exclude.contains(&instance)
    }
}

/// When a session stops and how much of each packet it keeps, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureLimits {
    bytes_to_capture_per_packet: u32,
    total_bytes_per_session: u32,
    time_limit_in_seconds: u32,
}

impl Default for CaptureLimits {
    /// Azure's defaults.
    fn default() -> Self {
        Self {
            bytes_to_capture_per_packet: DEFAULT_BYTES_TO_CAPTURE_PER_PACKET,
            total_bytes_per_session: DEFAULT_TOTAL_BYTES_PER_SESSION,
            time_limit_in_seconds: DEFAULT_TIME_LIMIT_IN_SECONDS,
        }
    }
}

impl CaptureLimits {
    /// `bytesToCapturePerPacket` as asked (0: whole packets).
    pub fn bytes_to_capture_per_packet(&self) -> u32 {
        self.bytes_to_capture_per_packet
    }

    /// `totalBytesPerSession` as asked (0: the maximum).
    pub fn total_bytes_per_session(&self) -> u32 {
        self.total_bytes_per_session
    }

    /// `timeLimitInSeconds` as asked (0: the maximum).
    pub fn time_limit_in_seconds(&self) -> u32 {
        self.time_limit_in_seconds
    }

    /// Bytes kept of each packet, `None` for whole packets.
    pub fn snaplen(&self) -> Option<u32> {
        (self.bytes_to_capture_per_packet != 0).then_some(self.bytes_to_capture_per_packet)
    }

    /// Bytes after which a single-file session stops.
    pub fn max_session_bytes(&self) -> u64 {
        u64::from(TOTAL_BYTES_PER_SESSION.effective(self.total_bytes_per_session))
    }

    /// How long a single-file session runs at most.
    pub fn time_limit(&self) -> Duration {
        Duration::from_secs(u64::from(TIME_LIMIT_IN_SECONDS.effective(self.time_limit_in_seconds)))
    }
}

/// A host path for capture files: absolute, under [`CAPTURE_DIR`], naming a
/// `.cap` file (module doc for the rules).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CapturePath(String);

/// Linux's `NAME_MAX` and `PATH_MAX - 1`: longer paths cannot be created.
const NAME_MAX: usize = 255;
const PATH_MAX: usize = 4095;

impl CapturePath {
    /// Parses `text` as the path in `target` (`properties.storageLocation.filePath`).
    pub fn parse(target: &str, text: &str) -> Result<Self, ApiError> {
        let fail = |detail: String| Err(ApiError::bad_request(target, format!("{target} {text:?} {detail}")));
        let example = format!("{CAPTURE_DIR}/pc1.cap");
        let bytes = text.as_bytes();
        let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
        if drive || text.contains('\\') {
            let file = text
                .rsplit(['\\', '/'])
                .next()
                .filter(|file| is_cap_file(file) && !file.contains(':'))
                .unwrap_or("pc1.cap");
            return fail(format!(
                "is a Windows path, but netwatch hosts run Linux: use a path under {CAPTURE_DIR}, \
                 such as {CAPTURE_DIR}/{file}"
            ));
        }
        if text.chars().any(char::is_control) {
            return fail(format!("has a control character: use a plain path such as {example}"));
        }
        let Some(relative) = text.strip_prefix(CAPTURE_DIR).and_then(|rest| rest.strip_prefix('/')) else {
            return fail(format!(
                "is not under {CAPTURE_DIR}: capture files on Linux hosts must be under {CAPTURE_DIR}, \
                 such as {example}"
            ));
        };
        if relative.split('/').any(|part| matches!(part, "" | "." | "..")) {
            return fail(format!(
                "is not a plain path: it has an empty, \".\" or \"..\" component; write it as \
                 {CAPTURE_DIR}/[directories/]name.cap, such as {example}"
            ));
        }
        if text.len() > PATH_MAX {
            return fail(format!("is longer than {PATH_MAX} bytes"));
        }
        if relative.split('/').any(|part| part.len() > NAME_MAX) {
            return fail(format!("has a component longer than {NAME_MAX} bytes"));
        }
        if !relative.rsplit('/').next().is_some_and(is_cap_file) {
            return fail(format!("must name a .cap file, such as {example}"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The path as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path below [`CAPTURE_DIR`] (`team/pc1.cap`), for the agent to place
    /// in its own capture directory.
    pub fn relative(&self) -> &str {
        self.0
            .get(CAPTURE_DIR.len() + 1..)
            .expect("parse checked the path starts with CAPTURE_DIR and '/'")
    }
}

/// `name.cap`, any case, with a name before the extension.
fn is_cap_file(file: &str) -> bool {
    const EXTENSION: &str = ".cap";
    file.len() > EXTENSION.len()
        && file
            .get(file.len() - EXTENSION.len()..)
            .is_some_and(|ext| ext.eq_ignore_ascii_case(EXTENSION))
}

/// Continuous capture: `continuousCapture` true or false and its
/// `captureSettings`, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureFiles {
    continuous: bool,
    file_count: u32,
    file_size_in_bytes: u32,
    session_time_limit_in_seconds: u32,
}

impl CaptureFiles {
    /// `continuousCapture`: `true` keeps a ring (the oldest file deleted),
    /// `false` stops when `fileCount` files are full.
    pub fn continuous(&self) -> bool {
        self.continuous
    }

    /// `fileCount` as asked (0: the maximum).
    pub fn file_count(&self) -> u32 {
        self.file_count
    }

    /// `fileSizeInBytes` as asked (0: the maximum).
    pub fn file_size_in_bytes(&self) -> u32 {
        self.file_size_in_bytes
    }

    /// `sessionTimeLimitInSeconds` as asked (0: the maximum).
    pub fn session_time_limit_in_seconds(&self) -> u32 {
        self.session_time_limit_in_seconds
    }

    /// Files kept at most.
    pub fn max_files(&self) -> u32 {
        FILE_COUNT.effective(self.file_count)
    }

    /// Bytes per file at most.
    pub fn max_file_bytes(&self) -> u64 {
        u64::from(FILE_SIZE_IN_BYTES.effective(self.file_size_in_bytes))
    }

    /// How long the session runs at most.
    pub fn session_time_limit(&self) -> Duration {
        Duration::from_secs(u64::from(
            SESSION_TIME_LIMIT_IN_SECONDS.effective(self.session_time_limit_in_seconds),
        ))
    }
}

/// Where a capture's files go: a storage account, a path on the host, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOutput {
    storage_account: Option<ResourceId>,
    storage_path: Option<String>,
    local_file: Option<CapturePath>,
    files: Option<CaptureFiles>,
}

impl CaptureOutput {
    /// `storageId`: the storage account to upload to.
    pub fn storage_account(&self) -> Option<&ResourceId> {
        self.storage_account.as_ref()
    }

    /// `storagePath` as the client sent it (the server sets the real one).
    pub fn requested_storage_path(&self) -> Option<&str> {
        self.storage_path.as_deref()
    }

    /// `filePath` (single file) or `localPath` (continuous capture) on the host.
    pub fn local_file(&self) -> Option<&CapturePath> {
        self.local_file.as_ref()
    }

    /// Continuous-capture settings; `None` for a single file.
    pub fn files(&self) -> Option<&CaptureFiles> {
        self.files.as_ref()
    }
}

/// A packet capture request past validation: past [`PacketCapture::validate`]
/// no invalid value exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedCapture {
    target: ResourceId,
    /// Hosts chosen by `netwatch.targets` (then `target` is unused).
    hosts: Option<HostSelector>,
    target_type: TargetType,
    scope: MachineScope,
    filters: Vec<CaptureFilter>,
    /// The filters as echoed (module doc, "Echo").
    filters_echo: Vec<PacketCaptureFilter>,
    limits: CaptureLimits,
    output: CaptureOutput,
    /// `netwatch.alert`: a capture around an alert.
    alert: Option<AlertWindow>,
}

/// A capture around an alert, validated (`netwatch.alert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertWindow {
    /// When the alert fired, ms since the epoch.
    pub fired_ms: i64,
    /// As sent, for the echo.
    fired_text: String,
    pub seconds_before: u32,
    pub seconds_after: u32,
    pub trigger: Option<String>,
    pub alert_id: Option<String>,
    pub alert_rule: Option<String>,
}

impl AlertWindow {
    /// The window around an alert fired at `fired_ms`.
    pub fn new(fired_ms: i64, seconds_before: u32, seconds_after: u32) -> Self {
        let fired_text = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(fired_ms) * 1_000_000)
            .ok()
            .and_then(|at| at.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        Self {
            fired_ms,
            fired_text,
            seconds_before: seconds_before.min(MAX_SECONDS_BEFORE),
            seconds_after: seconds_after.min(MAX_TIME_LIMIT_IN_SECONDS),
            trigger: None,
            alert_id: None,
            alert_rule: None,
        }
    }

    /// The first moment covered, ms since the epoch.
    pub fn from_ms(&self) -> i64 {
        self.fired_ms - i64::from(self.seconds_before) * 1000
    }

    /// The last moment covered, ms since the epoch.
    pub fn to_ms(&self) -> i64 {
        self.fired_ms + i64::from(self.seconds_after) * 1000
    }

    /// As `netwatch.alert` echoes it.
    pub fn to_parameters(&self) -> AlertCaptureParameters {
        AlertCaptureParameters {
            fired_date_time: self.fired_text.clone(),
            seconds_before: Some(i64::from(self.seconds_before)),
            seconds_after: Some(i64::from(self.seconds_after)),
            trigger: self.trigger.clone(),
            alert_id: self.alert_id.clone(),
            alert_rule: self.alert_rule.clone(),
        }
    }
}

impl ValidatedCapture {
    /// `netwatch.alert`: the window around an alert this capture covers.
    pub fn alert(&self) -> Option<&AlertWindow> {
        self.alert.as_ref()
    }

    /// The VM or scale set to capture on (meaningless with [`ValidatedCapture::hosts`]).
    pub fn target(&self) -> &ResourceId {
        &self.target
    }

    /// The hosts `netwatch.targets` chose, if it did.
    pub fn hosts(&self) -> Option<&HostSelector> {
        self.hosts.as_ref()
    }

    /// `AzureVM` or `AzureVMSS`, matching [`ValidatedCapture::target`].
    pub fn target_type(&self) -> TargetType {
        self.target_type
    }

    /// The scale-set instances (empty for a VM).
    pub fn scope(&self) -> &MachineScope {
        &self.scope
    }

    /// The filters; a packet is kept when any matches, all when there are none.
    pub fn filters(&self) -> &[CaptureFilter] {
        &self.filters
    }

    /// Compiles every filter's `bpfExpression` with `compile` (libpcap's
    /// compiler, where the request is made), replacing any program it had:
    /// a program never comes from a client. The echo (`to_parameters`) then
    /// carries each program as `bpfProgram`, which is how it reaches the
    /// agents. A bad expression is a 400 at `properties.filters[i].bpfExpression`
    /// with the compiler's message.
    pub fn compile_expressions<E: std::fmt::Display>(
        &mut self,
        mut compile: impl FnMut(&str) -> Result<netwatch_bpf::Program, E>,
    ) -> Result<(), ApiError> {
        for (index, (filter, echo)) in self.filters.iter_mut().zip(&mut self.filters_echo).enumerate() {
            let Some(expression) = &mut filter.expression else {
                continue;
            };
            let program = compile(&expression.text).map_err(|error| {
                let target = format!("properties.filters[{index}].bpfExpression");
                let message = format!("{target} {:?} does not compile: {error}", expression.text);
                ApiError::bad_request(target, message)
            })?;
            echo.bpf_program = Some(program.to_bytecode());
            expression.program = Some(program);
        }
        Ok(())
    }

    /// Whether a filter has a `bpfExpression`.
    pub fn has_expressions(&self) -> bool {
        self.filters.iter().any(|f| f.expression.is_some())
    }

    /// Snap length, byte and time limits of a single-file session.
    pub fn limits(&self) -> &CaptureLimits {
        &self.limits
    }

    /// Where the files go.
    pub fn output(&self) -> &CaptureOutput {
        &self.output
    }

    /// How long the session runs at most: `timeLimitInSeconds`, or
    /// `sessionTimeLimitInSeconds` with continuous capture.
    pub fn time_limit(&self) -> Duration {
        match &self.output.files {
            None => self.limits.time_limit(),
            Some(files) => files.session_time_limit(),
        }
    }

    /// Bytes after which the session stops: `totalBytesPerSession`; with
    /// `continuousCapture` false, all files full; `None` for a ring, which
    /// only ends on time.
    pub fn max_bytes(&self) -> Option<u64> {
        match &self.output.files {
            None => Some(self.limits.max_session_bytes()),
            Some(files) if !files.continuous => Some(u64::from(files.max_files()) * files.max_file_bytes()),
            Some(_) => None,
        }
    }

    /// The parameters as a GET shows them (module doc, "Echo"); validating
    /// them gives `self` back.
    pub fn to_parameters(&self) -> PacketCaptureParameters {
        let strings = |ids: &[u32]| Some(ids.iter().map(u32::to_string).collect());
        let path = self.output.local_file.as_ref().map(|path| path.as_str().to_owned());
        let (file_path, local_path) = match self.output.files {
            None => (path, None),
            Some(_) => (None, path),
        };
        PacketCaptureParameters {
            target: if self.hosts.is_some() {
                String::new()
            } else {
                self.target.to_string()
            },
            target_type: self.hosts.is_none().then(|| self.target_type.as_str().to_owned()),
            scope: (self.target_type == TargetType::AzureVmss).then(|| PacketCaptureMachineScope {
                include: strings(&self.scope.include),
                exclude: strings(&self.scope.exclude),
            }),
            bytes_to_capture_per_packet: Some(i64::from(self.limits.bytes_to_capture_per_packet)),
            total_bytes_per_session: Some(i64::from(self.limits.total_bytes_per_session)),
            time_limit_in_seconds: Some(i64::from(self.limits.time_limit_in_seconds)),
            storage_location: PacketCaptureStorageLocation {
                storage_id: self.output.storage_account.as_ref().map(ResourceId::to_string),
                storage_path: self.output.storage_path.clone(),
                file_path,
                local_path,
            },
            filters: Some(self.filters_echo.clone()),
            continuous_capture: self.output.files.map(|files| files.continuous),
            capture_settings: self.output.files.map(|files| PacketCaptureSettings {
                file_count: Some(i64::from(files.file_count)),
                file_size_in_bytes: Some(i64::from(files.file_size_in_bytes)),
                session_time_limit_in_seconds: Some(i64::from(files.session_time_limit_in_seconds)),
            }),
            netwatch: (self.hosts.is_some() || self.alert.is_some()).then(|| NetwatchCaptureParameters {
                targets: self.hosts.as_ref().map(|hosts| match hosts {
                    HostSelector::Vms(ids) => TargetSelector {
                        vms: Some(ids.iter().map(ResourceId::to_string).collect()),
                        tags: None,
                    },
                    HostSelector::Tags(tags) => TargetSelector {
                        vms: None,
                        tags: Some(tags.clone()),
                    },
                }),
                alert: self.alert.as_ref().map(AlertWindow::to_parameters),
            }),
        }
    }

    /// The resource as PUT, GET and list answer it. The controller sets
    /// `properties.parameters.storage_location.storage_path` to the file's
    /// URL once it knows it.
    pub fn to_result(&self, id: &ResourceId, etag: Option<String>, state: ProvisioningState) -> PacketCaptureResult {
        PacketCaptureResult {
            name: id.name().to_string(),
            id: id.to_string(),
            etag,
            properties: PacketCaptureResultProperties {
                provisioning_state: state,
                parameters: self.to_parameters(),
            },
        }
    }
}

impl PacketCapture {
    /// Checks every rule (module doc) and applies the defaults; the first
    /// broken rule is a 400 whose target is its JSON path.
    pub fn validate(&self) -> Result<ValidatedCapture, ApiError> {
        self.properties.validate()
    }
}

/// `Some(text)` unless unset or `""`.
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|text| !text.is_empty())
}

impl PacketCaptureParameters {
    /// [`PacketCapture::validate`] for the `properties` object.
    pub fn validate(&self) -> Result<ValidatedCapture, ApiError> {
        let hosts = self.validate_hosts()?;
        let (target, target_type, scope) = match &hosts {
            // Unused: the hosts are chosen otherwise.
            Some(_) => (
                ResourceId::parse(TARGET, SELECTOR_TARGET).expect("a well-formed id"),
                TargetType::AzureVm,
                MachineScope::default(),
            ),
            None => {
                let target = self.validate_target()?;
                let target_type = self.validate_target_type(&target)?;
                let scope = self.validate_scope(target_type)?;
                (target, target_type, scope)
            }
        };
        let limits = CaptureLimits {
            bytes_to_capture_per_packet: BYTES_TO_CAPTURE_PER_PACKET.check(self.bytes_to_capture_per_packet)?,
            total_bytes_per_session: TOTAL_BYTES_PER_SESSION.check(self.total_bytes_per_session)?,
            time_limit_in_seconds: TIME_LIMIT_IN_SECONDS.check(self.time_limit_in_seconds)?,
        };
        let mut output = self.validate_storage_location()?;
        let wire_filters = self.filters.as_deref().unwrap_or_default();
        let filters = validate_filters(wire_filters)?;
        let filters_echo = filters
            .iter()
            .zip(wire_filters)
            .map(|(f, sent)| echo_filter(f, sent))
            .collect();
        output.files = self.validate_capture_settings()?;
        let alert = self.validate_alert(output.files.is_some())?;
        Ok(ValidatedCapture {
            target,
            hosts,
            target_type,
            scope,
            filters,
            filters_echo,
            limits,
            output,
            alert,
        })
    }

    /// `netwatch.alert`: when the alert fired and the seconds around it.
    fn validate_alert(&self, continuous: bool) -> Result<Option<AlertWindow>, ApiError> {
        const ALERT: &str = "properties.netwatch.alert";
        let Some(alert) = self.netwatch.as_ref().and_then(|n| n.alert.as_ref()) else {
            return Ok(None);
        };
        if continuous {
            let message = format!(
                "{ALERT} and {CAPTURE_SETTINGS} do not go together: a capture around an alert is one file; \
                 leave out continuousCapture and captureSettings"
            );
            return Err(ApiError::bad_request(ALERT, message));
        }
        let path = format!("{ALERT}.firedDateTime");
        if alert.fired_date_time.is_empty() {
            let message = format!("{path} is required: when the alert fired, as 2026-12-06T10:00:00Z");
            return Err(ApiError::bad_request(path, message));
        }
        let fired = time::OffsetDateTime::parse(&alert.fired_date_time, &time::format_description::well_known::Rfc3339)
            .map_err(|err| {
                let message = format!(
                    "{path} {:?} is not an RFC 3339 time ({err}): write it as 2026-12-06T10:00:00Z",
                    alert.fired_date_time
                );
                ApiError::bad_request(path.clone(), message)
            })?;
        let fired_ms = i64::try_from(fired.unix_timestamp_nanos() / 1_000_000)
            .ok()
            .filter(|ms| (0..=253_402_300_799_000).contains(ms))
            .ok_or_else(|| {
                let message = format!(
                    "{path} {:?} is out of range: use a time after 1970",
                    alert.fired_date_time
                );
                ApiError::bad_request(path.clone(), message)
            })?;
        let text = |value: &Option<String>| value.as_deref().filter(|text| !text.is_empty()).map(str::to_owned);
        Ok(Some(AlertWindow {
            fired_ms,
            fired_text: alert.fired_date_time.clone(),
            seconds_before: SECONDS_BEFORE.check(alert.seconds_before)?,
            seconds_after: SECONDS_AFTER.check(alert.seconds_after)?,
            trigger: text(&alert.trigger),
            alert_id: text(&alert.alert_id),
            alert_rule: text(&alert.alert_rule),
        }))
    }

    /// `netwatch.targets`: hosts by id or by tag, in place of `target`,
    /// `targetType` and `scope`.
    fn validate_hosts(&self) -> Result<Option<HostSelector>, ApiError> {
        let Some(selector) = self.netwatch.as_ref().and_then(|n| n.targets.as_ref()) else {
            return Ok(None);
        };
        for (field, given) in [
            (TARGET, !self.target.is_empty()),
            (TARGET_TYPE, set(&self.target_type).is_some()),
            (SCOPE, self.scope.is_some()),
        ] {
            if given {
                let message = format!(
                    "{field} and {HOSTS} both choose where to capture: give {HOSTS} alone (hosts by id or by \
                     tag), or {TARGET} without {HOSTS}"
                );
                return Err(ApiError::bad_request(field, message));
            }
        }
        match (&selector.vms, &selector.tags) {
            (Some(ids), None) => {
                if ids.is_empty() {
                    let message = format!("{HOSTS}.vms is empty: name at least one VM id");
                    return Err(ApiError::bad_request(format!("{HOSTS}.vms"), message));
                }
                let mut parsed: Vec<ResourceId> = Vec::with_capacity(ids.len());
                for (index, text) in ids.iter().enumerate() {
                    let field = format!("{HOSTS}.vms[{index}]");
                    let id = ResourceId::parse_kind(
                        &field,
                        text,
                        &[ResourceKind::VirtualMachine, ResourceKind::ScaleSetVm],
                    )?;
                    if parsed.contains(&id) {
                        let message = format!("{field} {text:?} is named twice: name each VM once");
                        return Err(ApiError::bad_request(field, message));
                    }
                    parsed.push(id);
                }
                Ok(Some(HostSelector::Vms(parsed)))
            }
            (None, Some(tags)) => {
                if tags.is_empty() {
                    let message =
                        format!("{HOSTS}.tags is empty: give the tags the hosts have, as {{\"role\":\"web\"}}");
                    return Err(ApiError::bad_request(format!("{HOSTS}.tags"), message));
                }
                if let Some((name, _)) = tags.iter().find(|(name, _)| name.is_empty() || name.len() > 512) {
                    let message = format!("{HOSTS}.tags has the tag name {name:?}: tag names are 1 to 512 characters");
                    return Err(ApiError::bad_request(format!("{HOSTS}.tags"), message));
                }
                Ok(Some(HostSelector::Tags(tags.clone())))
            }
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                HOSTS,
                format!("{HOSTS} has both vms and tags: choose hosts by id or by tag, not both"),
            )),
            (None, None) => Err(ApiError::bad_request(
                HOSTS,
                format!("{HOSTS} chooses no host: give vms (VM ids) or tags (as {{\"role\":\"web\"}})"),
            )),
        }
    }

    fn validate_target(&self) -> Result<ResourceId, ApiError> {
        if self.target.is_empty() {
            return Err(ApiError::bad_request(
                TARGET,
                format!("{TARGET} is required: {TARGET_HINT}"),
            ));
        }
        let id = ResourceId::parse(TARGET, &self.target)?;
        let is_instance = id
            .resource_type()
            .to_string()
            .eq_ignore_ascii_case("Microsoft.Compute/virtualMachineScaleSets/virtualMachines");
        if is_instance {
            let scale_set = id.parent().map(|parent| parent.to_string()).unwrap_or_default();
            let instance = id.name();
            let message = format!(
                "{TARGET} {:?} is a scale-set instance id: target the scale set {scale_set} with targetType \
                 AzureVMSS, and name the instance in scope, as in \"scope\":{{\"include\":[\"{instance}\"]}}",
                self.target
            );
            return Err(ApiError::new(ErrorCode::LinkedInvalidPropertyId, message).with_target(TARGET));
        }
        Ok(ResourceId::parse_kind(
            TARGET,
            &self.target,
            &[ResourceKind::VirtualMachine, ResourceKind::ScaleSet],
        )?)
    }

    fn validate_target_type(&self, target: &ResourceId) -> Result<TargetType, ApiError> {
        let of_target = match target.kind() {
            ResourceKind::ScaleSet => TargetType::AzureVmss,
            _ => TargetType::AzureVm,
        };
        let Some(text) = set(&self.target_type) else {
            return Ok(of_target);
        };
        let asked = [TargetType::AzureVm, TargetType::AzureVmss]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                ApiError::bad_request(
                    TARGET_TYPE,
                    format!(
                        "{TARGET_TYPE} {text:?} is not a target type: use AzureVM for a virtual machine or \
                         AzureVMSS for a scale set"
                    ),
                )
            })?;
        if asked != of_target {
            return Err(ApiError::bad_request(
                TARGET_TYPE,
                format!(
                    "{TARGET_TYPE} is {} but {TARGET} is a {} id: use {}, or leave targetType out",
                    asked.as_str(),
                    target.kind().noun(),
                    of_target.as_str()
                ),
            ));
        }
        Ok(asked)
    }

    fn validate_scope(&self, target_type: TargetType) -> Result<MachineScope, ApiError> {
        let Some(scope) = &self.scope else {
            return Ok(MachineScope::default());
        };
        let include = scope.include.as_deref().unwrap_or_default();
        let exclude = scope.exclude.as_deref().unwrap_or_default();
        if target_type == TargetType::AzureVm {
            if include.is_empty() && exclude.is_empty() {
                return Ok(MachineScope::default());
            }
            return Err(ApiError::bad_request(
                SCOPE,
                format!(
                    "{SCOPE} applies only to scale sets (targetType AzureVMSS), and {TARGET} is a virtual \
                     machine, which has no instances: remove scope"
                ),
            ));
        }
        let parse = |list: &[String], field: &str| -> Result<Vec<u32>, ApiError> {
            list.iter()
                .enumerate()
                .map(|(index, text)| {
                    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
                    digits.then(|| text.parse::<u32>().ok()).flatten().ok_or_else(|| {
                        let target = format!("{SCOPE}.{field}[{index}]");
                        let message = format!(
                            "{target} {text:?} is not a scale-set instance id: instance ids are numbers such as \"0\" or \"1\""
                        );
                        ApiError::bad_request(target, message)
                    })
                })
                .collect()
        };
        let include = parse(include, "include")?;
        let exclude = parse(exclude, "exclude")?;
        for (list, field) in [(&include, "include"), (&exclude, "exclude")] {
            if let Some((index, instance)) = list.iter().enumerate().find(|(i, id)| list[..*i].contains(id)) {
                let target = format!("{SCOPE}.{field}[{index}]");
                let message =
                    format!("{target} \"{instance}\" is named twice in {SCOPE}.{field}: name each instance once");
                return Err(ApiError::bad_request(target, message));
            }
        }
        if let Some((index, instance)) = exclude.iter().enumerate().find(|(_, id)| include.contains(id)) {
            let target = format!("{SCOPE}.exclude[{index}]");
            let message = format!(
                "{target} \"{instance}\" is also in {SCOPE}.include: an instance is either included or excluded"
            );
            return Err(ApiError::bad_request(target, message));
        }
        Ok(MachineScope { include, exclude })
    }

    /// `storageLocation`; `files` is left `None` for `validate_capture_settings`.
    fn validate_storage_location(&self) -> Result<CaptureOutput, ApiError> {
        let location = &self.storage_location;
        let storage_account = set(&location.storage_id)
            .map(|id| ResourceId::parse_kind(STORAGE_ID, id, &[ResourceKind::StorageAccount]))
            .transpose()?;
        let storage_path = set(&location.storage_path)
            .map(|path| {
                if storage_account.is_none() {
                    let message = format!(
                        "{STORAGE_PATH} is used only with storageId: give the storage account's id as storageId too"
                    );
                    return Err(ApiError::bad_request(STORAGE_PATH, message));
                }
                if !is_http_uri(path) {
                    let message = format!(
                        "{STORAGE_PATH} {path:?} is not a well-formed URI: use an https URL such as \
                         https://{{account}}.blob.core.windows.net/{{container}}, or leave it out and the server sets it"
                    );
                    return Err(ApiError::bad_request(STORAGE_PATH, message));
                }
                Ok(path.to_owned())
            })
            .transpose()?;
        // Which of filePath and localPath names the host file (api-contract.md §2.4).
        let (path_field, path, other_field, other, misuse) = match self.continuous_capture {
            None => (
                FILE_PATH,
                &location.file_path,
                LOCAL_PATH,
                &location.local_path,
                "is used only when continuousCapture is true or false; with continuousCapture unset, give the \
                 path as filePath",
            ),
            Some(_) => (
                LOCAL_PATH,
                &location.local_path,
                FILE_PATH,
                &location.file_path,
                "cannot be used when continuousCapture is set (true or false): give the path as localPath",
            ),
        };
        if set(other).is_some() {
            return Err(ApiError::bad_request(other_field, format!("{other_field} {misuse}")));
        }
        let local_file = set(path).map(|path| CapturePath::parse(path_field, path)).transpose()?;
        if storage_account.is_none() && local_file.is_none() {
            let field = path_field.rsplit('.').next().unwrap_or_default();
            let message = format!(
                "{STORAGE_LOCATION} needs a storageId (a storage account id such as \
                 /subscriptions/{{subscription}}/resourceGroups/{{group}}/providers/Microsoft.Storage/storageAccounts/{{account}}), \
                 a {field} on the host (such as {CAPTURE_DIR}/pc1.cap), or both"
            );
            return Err(ApiError::bad_request(STORAGE_LOCATION, message));
        }
        Ok(CaptureOutput {
            storage_account,
            storage_path,
            local_file,
            files: None,
        })
    }

    fn validate_capture_settings(&self) -> Result<Option<CaptureFiles>, ApiError> {
        let settings = self.capture_settings.clone().unwrap_or_default();
        let Some(continuous) = self.continuous_capture else {
            if settings.is_empty() {
                return Ok(None);
            }
            let message = format!(
                "{CAPTURE_SETTINGS} applies only when continuousCapture is true or false: set continuousCapture, \
                 or remove captureSettings"
            );
            return Err(ApiError::bad_request(CAPTURE_SETTINGS, message));
        };
        Ok(Some(CaptureFiles {
            continuous,
            file_count: FILE_COUNT.check(settings.file_count)?,
            file_size_in_bytes: FILE_SIZE_IN_BYTES.check(settings.file_size_in_bytes)?,
            session_time_limit_in_seconds: SESSION_TIME_LIMIT_IN_SECONDS
                .check(settings.session_time_limit_in_seconds)?,
        }))
    }
}

/// `http://` or `https://` (any case), a host, and no spaces or control characters.
fn is_http_uri(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    rest.is_some_and(|rest| !rest.starts_with('/') && !rest.is_empty())
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Azure's echo of one filter: every field, `""` when unset, the protocol
/// canonical, the rest as the client wrote it (trimmed).
fn echo_filter(filter: &CaptureFilter, sent: &PacketCaptureFilter) -> PacketCaptureFilter {
    let mut echo = filter.to_wire();
    let fields = [
        (&mut echo.local_ip_address, &sent.local_ip_address),
        (&mut echo.remote_ip_address, &sent.remote_ip_address),
        (&mut echo.local_port, &sent.local_port),
        (&mut echo.remote_port, &sent.remote_port),
        (&mut echo.icmp_type, &sent.icmp_type),
        (&mut echo.icmp_code, &sent.icmp_code),
        (&mut echo.tcp_flags, &sent.tcp_flags),
        (&mut echo.direction, &sent.direction),
        (&mut echo.bpf_expression, &sent.bpf_expression),
    ];
    for (echoed, sent) in fields {
        if let Some(text) = sent.as_deref().map(str::trim).filter(|text| !text.is_empty()) {
            *echoed = Some(text.to_owned());
        }
    }
    echo
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-000000000000";

    fn vm() -> String {
        format!("/subscriptions/{SUB}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM1")
    }

    fn vmss() -> String {
        format!("/subscriptions/{SUB}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/SS1")
    }

    fn account() -> String {
        format!("/subscriptions/{SUB}/resourceGroups/RG/providers/Microsoft.Storage/storageAccounts/ACCT")
    }

    fn capture_id() -> ResourceId {
        ResourceId::parse(
            "id",
            &format!("/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus/packetCaptures/pc1"),
        )
        .unwrap()
    }

    /// A body whose properties are a VM target, a storage account and `extra`.
    fn with(extra: &str) -> String {
        let comma = if extra.is_empty() { "" } else { "," };
        format!(
            r#"{{"properties":{{"target":"{}","storageLocation":{{"storageId":"{}"}}{comma}{extra}}}}}"#,
            vm(),
            account()
        )
    }

    /// A body whose properties are exactly `properties`.
    fn props(properties: &str) -> String {
        format!(r#"{{"properties":{{{properties}}}}}"#)
    }

    fn check(body: &str) -> Result<ValidatedCapture, ApiError> {
        parse_packet_capture(body.as_bytes())?.validate()
    }

    fn valid(body: &str) -> ValidatedCapture {
        check(body).unwrap_or_else(|err| panic!("{body}: {err}"))
    }

    #[test]
    fn a_capture_around_an_alert_is_checked_and_echoed() {
        let vm = vm();
        let body = |alert: &str| {
            format!(
                r#"{{"properties":{{"target":"{vm}","storageLocation":{{"filePath":"/var/captures/a.cap"}},"netwatch":{{"alert":{alert}}}}}}}"#
            )
        };
        let capture = valid(&body(
            r#"{"firedDateTime":"2026-12-06T10:00:00.250Z","secondsAfter":5}"#,
        ));
        let window = capture.alert().expect("a window");
        assert_eq!((window.seconds_before, window.seconds_after), (60, 5));
        assert_eq!(window.from_ms(), window.fired_ms - 60_000);
        assert_eq!(window.to_ms(), window.fired_ms + 5_000);
        assert_eq!(window.fired_ms % 1000, 250);
        let echo = serde_json::to_string(&PacketCapture {
            properties: capture.to_parameters(),
        })
        .unwrap();
        assert_eq!(valid(&echo), capture, "the echo validates to the same capture");
        for (alert, target, words) in [
            ("{}", "properties.netwatch.alert.firedDateTime", "is required"),
            (
                r#"{"firedDateTime":"yesterday"}"#,
                "properties.netwatch.alert.firedDateTime",
                "RFC 3339",
            ),
            (
                r#"{"firedDateTime":"2026-12-06T10:00:00Z","secondsBefore":3601}"#,
                "properties.netwatch.alert.secondsBefore",
                "out of range",
            ),
            (
                r#"{"firedDateTime":"2026-12-06T10:00:00Z","secondsAfter":-1}"#,
                "properties.netwatch.alert.secondsAfter",
                "out of range",
            ),
            (
                r#"{"firedDateTime":"2026-12-06T10:00:00Z","when":1}"#,
                "properties.netwatch.alert",
                "when",
            ),
        ] {
            let err = check(&body(alert)).expect_err(alert);
            assert!(
                err.target().is_some_and(|t| t.starts_with(target)),
                "{alert}: {:?}",
                err.target()
            );
            assert!(err.message().contains(words), "{alert}: {}", err.message());
        }
        let continuous = format!(
            r#"{{"properties":{{"target":"{vm}","storageLocation":{{"localPath":"/var/captures/a.cap"}},"continuousCapture":true,"netwatch":{{"alert":{{"firedDateTime":"2026-12-06T10:00:00Z"}}}}}}}}"#
        );
        let err = check(&continuous).expect_err("continuous");
        assert!(err.message().contains("one file"), "{}", err.message());
    }

    #[test]
    fn bad_requests_name_target_and_fix() {
        use ErrorCode::{InvalidRequestFormat as Format, LinkedInvalidPropertyId as BadId};
        let (vm, vmss, account) = (vm(), vmss(), account());
        let instance = format!("{vmss}/virtualMachines/3");
        let storage = format!(r#""storageLocation":{{"storageId":"{account}"}}"#);
        let on_vmss = |extra: &str| props(&format!(r#""target":"{vmss}",{storage},{extra}"#));
        let local = |location: &str| props(&format!(r#""target":"{vm}","storageLocation":{location}"#));
        // (body, code, target, message fragment); every status is 400.
        #[rustfmt::skip]
        let rows: Vec<(String, ErrorCode, Option<&str>, String)> = vec![
            // Body shape.
            ("".into(), Format, None, r#"the request body is empty: create a packet capture with a JSON body such as {"properties":{"target":…,"storageLocation":{…}}}"#.into()),
            (" \r\n".into(), Format, None, "the request body is empty".into()),
            ("{".into(), Format, None, "the request body is not valid JSON: EOF while parsing an object at line 1 column 1".into()),
            (r#"{"properties":{}} x"#.into(), Format, None, "the request body is not valid JSON: trailing characters".into()),
            ("[]".into(), Format, None, r#"the request body must be a JSON object such as {"properties":{…}}, not an array"#.into()),
            ("null".into(), Format, None, "the request body must be a JSON object such as {\"properties\":{…}}, not null".into()),
            ("{}".into(), Format, Some("properties"), r#"properties is required: the parameters go inside "properties", as in {"properties":{"target":…,"storageLocation":{…}}}"#.into()),
            (r#"{"properties":null}"#.into(), Format, Some("properties"), "properties is required".into()),
            (r#"{"properties":[]}"#.into(), Format, Some("properties"), "properties must be a JSON object, not an array".into()),
            (format!(r#"{{"target":"{vm}","storageLocation":{{}}}}"#), Format, Some("target"),
             r#"the request body has an unknown field "target": the parameters go inside "properties", as in {"properties":{"target":…}}"#.into()),
            (r#"{"time_limit_in_seconds":60}"#.into(), Format, Some("time_limit_in_seconds"),
             r#"the request body has an unknown field "time_limit_in_seconds": the parameters go inside "properties", as in {"properties":{"timeLimitInSeconds":…}}"#.into()),
            (format!(r#"{{"properties":{{"target":"{vm}",{storage}}},"tags":{{}}}}"#), Format, Some("tags"),
             r#"the request body has an unknown field "tags": valid fields are properties"#.into()),
            (props(&storage), Format, Some("properties.target"), format!("properties.target is required: {TARGET_HINT}")),
            (props(&format!(r#""target":"",{storage}"#)), Format, Some("properties.target"), "properties.target is required".into()),
            (props(&format!(r#""target":"{vm}""#)), Format, Some("properties.storageLocation"), format!("properties.storageLocation is required: {STORAGE_LOCATION_HINT}")),
            (format!(r#"{{"properties":{{"target":"{vm}","target":"{vm}",{storage}}}}}"#), Format, Some("properties.target"), "properties.target is given more than once: give each field once".into()),
            // Unknown fields and wrong types, with the JSON path.
            (with(r#""timeLimit":60"#), Format, Some("properties.timeLimit"),
             r#"properties has an unknown field "timeLimit" (did you mean "timeLimitInSeconds"?): valid fields are target, targetType, scope, bytesToCapturePerPacket, totalBytesPerSession, timeLimitInSeconds, storageLocation, filters, continuousCapture, captureSettings"#.into()),
            (with(r#""TargetType":"AzureVM""#), Format, Some("properties.TargetType"), r#"properties has an unknown field "TargetType" (did you mean "targetType"?)"#.into()),
            (local(r#"{"storageId":null,"filepath":"/var/captures/a.cap"}"#), Format, Some("properties.storageLocation.filepath"),
             r#"properties.storageLocation has an unknown field "filepath" (did you mean "filePath"?): valid fields are storageId, storagePath, filePath, localPath"#.into()),
            (with(r#""continuousCapture":true,"captureSettings":{"count":3}"#), Format, Some("properties.captureSettings.count"),
             r#"properties.captureSettings has an unknown field "count": valid fields are fileCount, fileSizeInBytes, sessionTimeLimitInSeconds"#.into()),
            (with(r#""timeLimitInSeconds":"60""#), Format, Some("properties.timeLimitInSeconds"),
             r#"properties.timeLimitInSeconds must be a whole number 0-18000 (seconds), not a string ("60")"#.into()),
            (with(r#""timeLimitInSeconds":1.5"#), Format, Some("properties.timeLimitInSeconds"), "properties.timeLimitInSeconds must be a whole number 0-18000 (seconds), not 1.5".into()),
            (with(r#""bytesToCapturePerPacket":true"#), Format, Some("properties.bytesToCapturePerPacket"), "must be a whole number 0-4294967295 (bytes), not true".into()),
            (with(r#""continuousCapture":"true""#), Format, Some("properties.continuousCapture"), r#"properties.continuousCapture must be true, false or null, not a string ("true")"#.into()),
            (with(r#""target":5"#), Format, Some("properties.target"), r#"properties.target must be a string, not the number 5: quote it, as in "5""#.into()),
            (with(r#""scope":{"include":"0"}"#), Format, Some("properties.scope.include"), r#"properties.scope.include must be an array of strings such as ["0","1"], not a string ("0")"#.into()),
            (on_vmss(r#""scope":{"include":[0]}"#), Format, Some("properties.scope.include[0]"), r#"properties.scope.include[0] must be a string such as "0", not 0"#.into()),
            (with(r#""filters":{"protocol":"TCP"}"#), Format, Some("properties.filters"), r#"properties.filters must be an array of filter objects such as [{"protocol":"TCP","localPort":"80"}], not an object"#.into()),
            (with(r#""filters":["TCP"]"#), Format, Some("properties.filters[0]"), r#"properties.filters[0] must be a JSON object, not a string ("TCP")"#.into()),
            (with(r#""filters":[{},{"localip":"10.0.0.1"}]"#), Format, Some("properties.filters[1].localip"),
             r#"properties.filters[1] has an unknown field "localip" (did you mean "localIPAddress"?): valid fields are protocol, localIPAddress, remoteIPAddress, localPort, remotePort"#.into()),
            (with(r#""filters":[{"localPort":80}]"#), Format, Some("properties.filters[0].localPort"), r#"properties.filters[0].localPort must be a string, not the number 80: quote it, as in "80""#.into()),
            (with(r#""filters":[{"localPort":"80","localPort":"81"}]"#), Format, Some("properties.filters[0].localPort"), "properties.filters[0].localPort is given more than once".into()),
            // Filters' own rules.
            (with(r#""filters":[{"protocol":"GRE"}]"#), Format, Some("properties.filters[0].protocol"),
             r#"properties.filters[0].protocol "GRE" is not supported: use TCP, UDP, ICMP, ICMPv6 or Any"#.into()),
            (with(r#""filters":[{},{"remotePort":"70000"}]"#), Format, Some("properties.filters[1].remotePort"), r#"properties.filters[1].remotePort "70000" is out of range: ports are 0-65535"#.into()),
            (with(r#""filters":[{"localIPAddress":"10.0.0.1/24"}]"#), Format, Some("properties.filters[0].localIPAddress"), "has host bits set under its /24 mask: write the network, \"10.0.0.0/24\"".into()),
            // Limits.
            (with(r#""timeLimitInSeconds":18001"#), Format, Some("properties.timeLimitInSeconds"),
             "properties.timeLimitInSeconds 18001 is out of range: use 0-18000 seconds (5 hours); for longer captures set continuousCapture and captureSettings.sessionTimeLimitInSeconds, up to 604800 (7 days)".into()),
            (with(r#""timeLimitInSeconds":-1"#), Format, Some("properties.timeLimitInSeconds"), "properties.timeLimitInSeconds -1 is out of range: use 0-18000 seconds".into()),
            (with(r#""bytesToCapturePerPacket":4294967296"#), Format, Some("properties.bytesToCapturePerPacket"),
             "properties.bytesToCapturePerPacket 4294967296 is out of range: use 0-4294967295 bytes (0 keeps whole packets)".into()),
            (with(r#""totalBytesPerSession":-1073741824"#), Format, Some("properties.totalBytesPerSession"),
             "properties.totalBytesPerSession -1073741824 is out of range: use 0-4294967295 bytes (the default is 1073741824, 1 GiB)".into()),
            (with(r#""totalBytesPerSession":18446744073709551615"#), Format, Some("properties.totalBytesPerSession"), "properties.totalBytesPerSession 18446744073709551615 is out of range: use 0-4294967295 bytes".into()),
            (with(r#""totalBytesPerSession":1e30"#), Format, Some("properties.totalBytesPerSession"), "properties.totalBytesPerSession 1e+30 is out of range: use 0-4294967295 bytes".into()),
            (with(r#""continuousCapture":true,"captureSettings":{"fileCount":10001}"#), Format, Some("properties.captureSettings.fileCount"),
             "properties.captureSettings.fileCount 10001 is out of range: use 0-10000 files".into()),
            (with(r#""continuousCapture":false,"captureSettings":{"fileSizeInBytes":-5}"#), Format, Some("properties.captureSettings.fileSizeInBytes"),
             "properties.captureSettings.fileSizeInBytes -5 is out of range: use 0-4294967295 bytes (the default is 104857600, 100 MiB)".into()),
            (with(r#""continuousCapture":true,"captureSettings":{"sessionTimeLimitInSeconds":604801}"#), Format, Some("properties.captureSettings.sessionTimeLimitInSeconds"),
             "properties.captureSettings.sessionTimeLimitInSeconds 604801 is out of range: use 0-604800 seconds (7 days)".into()),
            // Target and type.
            (props(&format!(r#""target":"VM1",{storage}"#)), BadId, Some("properties.target"),
             r#"properties.target "VM1" is not a valid resource id: it must start with /subscriptions/"#.into()),
            (props(&format!(r#""target":"{account}",{storage}"#)), BadId, Some("properties.target"),
             format!("properties.target {account:?} is a storage account id, but it must be a virtual machine or scale set id: /subscriptions/{{subscription}}/resourceGroups/{{group}}/providers/Microsoft.Compute/virtualMachines/{{vm}} or")),
            (props(&format!(r#""target":"{instance}",{storage}"#)), BadId, Some("properties.target"),
             format!(r#"properties.target {instance:?} is a scale-set instance id: target the scale set {vmss} with targetType AzureVMSS, and name the instance in scope, as in "scope":{{"include":["3"]}}"#)),
            (with(r#""targetType":"AzureVMs""#), Format, Some("properties.targetType"),
             r#"properties.targetType "AzureVMs" is not a target type: use AzureVM for a virtual machine or AzureVMSS for a scale set"#.into()),
            (with(r#""targetType":"AzureVMSS""#), Format, Some("properties.targetType"),
             "properties.targetType is AzureVMSS but properties.target is a virtual machine id: use AzureVM, or leave targetType out".into()),
            (on_vmss(r#""targetType":"AzureVM""#), Format, Some("properties.targetType"),
             "properties.targetType is AzureVM but properties.target is a scale set id: use AzureVMSS, or leave targetType out".into()),
            // Scope.
            (with(r#""scope":{"include":["0"]}"#), Format, Some("properties.scope"),
             "properties.scope applies only to scale sets (targetType AzureVMSS), and properties.target is a virtual machine, which has no instances: remove scope".into()),
            (on_vmss(r#""scope":{"include":["0","vm-1"]}"#), Format, Some("properties.scope.include[1]"),
             r#"properties.scope.include[1] "vm-1" is not a scale-set instance id: instance ids are numbers such as "0" or "1""#.into()),
            (on_vmss(r#""scope":{"include":["1","2"],"exclude":["0","2"]}"#), Format, Some("properties.scope.exclude[1]"),
             r#"properties.scope.exclude[1] "2" is also in properties.scope.include: an instance is either included or excluded"#.into()),
            // Storage location.
            (local("{}"), Format, Some("properties.storageLocation"),
             "properties.storageLocation needs a storageId (a storage account id such as /subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts/{account}), a filePath on the host (such as /var/captures/pc1.cap), or both".into()),
            (local(r#"{"storageId":"","filePath":""}"#), Format, Some("properties.storageLocation"), "properties.storageLocation needs a storageId".into()),
            (props(&format!(r#""target":"{vm}","continuousCapture":true,"storageLocation":{{}}"#)), Format, Some("properties.storageLocation"), "a localPath on the host (such as /var/captures/pc1.cap), or both".into()),
            (local(&format!(r#"{{"storageId":"{vm}"}}"#)), BadId, Some("properties.storageLocation.storageId"),
             format!("properties.storageLocation.storageId {vm:?} is a virtual machine id, but it must be a storage account id: /subscriptions/{{subscription}}/resourceGroups/{{group}}/providers/Microsoft.Storage/storageAccounts/{{account}}")),
            (local(r#"{"storagePath":"https://acct.blob.core.windows.net/c","filePath":"/var/captures/a.cap"}"#), Format, Some("properties.storageLocation.storagePath"),
             "properties.storageLocation.storagePath is used only with storageId: give the storage account's id as storageId too".into()),
            (local(&format!(r#"{{"storageId":"{account}","storagePath":"capture/pc1.cap"}}"#)), Format, Some("properties.storageLocation.storagePath"),
             r#"properties.storageLocation.storagePath "capture/pc1.cap" is not a well-formed URI: use an https URL such as https://{account}.blob.core.windows.net/{container}, or leave it out and the server sets it"#.into()),
            (local(r#"{"filePath":"D:\\capture\\pc1.cap"}"#), Format, Some("properties.storageLocation.filePath"),
             r#"properties.storageLocation.filePath "D:\\capture\\pc1.cap" is a Windows path, but netwatch hosts run Linux: use a path under /var/captures, such as /var/captures/pc1.cap"#.into()),
            (local(r#"{"filePath":"c:/temp/x"}"#), Format, Some("properties.storageLocation.filePath"), "is a Windows path, but netwatch hosts run Linux: use a path under /var/captures, such as /var/captures/pc1.cap".into()),
            (local(r#"{"filePath":"/tmp/pc1.cap"}"#), Format, Some("properties.storageLocation.filePath"),
             r#"properties.storageLocation.filePath "/tmp/pc1.cap" is not under /var/captures: capture files on Linux hosts must be under /var/captures, such as /var/captures/pc1.cap"#.into()),
            (local(r#"{"filePath":"/var/capturesX/pc1.cap"}"#), Format, Some("properties.storageLocation.filePath"), "is not under /var/captures".into()),
            (local(r#"{"filePath":"var/captures/pc1.cap"}"#), Format, Some("properties.storageLocation.filePath"), "is not under /var/captures".into()),
            (local(r#"{"filePath":"/var/captures/../../etc/x.cap"}"#), Format, Some("properties.storageLocation.filePath"),
             r#"is not a plain path: it has an empty, "." or ".." component; write it as /var/captures/[directories/]name.cap"#.into()),
            (local(r#"{"filePath":"/var/captures//pc1.cap"}"#), Format, Some("properties.storageLocation.filePath"), "is not a plain path".into()),
            (local(r#"{"filePath":"/var/captures/pc1.pcap"}"#), Format, Some("properties.storageLocation.filePath"),
             r#"properties.storageLocation.filePath "/var/captures/pc1.pcap" must name a .cap file, such as /var/captures/pc1.cap"#.into()),
            (local(r#"{"filePath":"/var/captures/team/"}"#), Format, Some("properties.storageLocation.filePath"), "is not a plain path".into()),
            (local(r#"{"filePath":"/var/captures/.cap"}"#), Format, Some("properties.storageLocation.filePath"), "must name a .cap file".into()),
            (local(r#"{"filePath":"/var/captures/a\nb.cap"}"#), Format, Some("properties.storageLocation.filePath"), "has a control character".into()),
            (local(&format!(r#"{{"filePath":"/var/captures/{}.cap"}}"#, "a".repeat(252))), Format, Some("properties.storageLocation.filePath"), "has a component longer than 255 bytes".into()),
            // filePath, localPath and continuousCapture (api-contract.md §2.4).
            (local(r#"{"localPath":"/var/captures/pc1.cap"}"#), Format, Some("properties.storageLocation.localPath"),
             "properties.storageLocation.localPath is used only when continuousCapture is true or false; with continuousCapture unset, give the path as filePath".into()),
            (props(&format!(r#""target":"{vm}","continuousCapture":false,"storageLocation":{{"filePath":"/var/captures/pc1.cap"}}"#)), Format, Some("properties.storageLocation.filePath"),
             "properties.storageLocation.filePath cannot be used when continuousCapture is set (true or false): give the path as localPath".into()),
            (with(r#""captureSettings":{"fileCount":5}"#), Format, Some("properties.captureSettings"),
             "properties.captureSettings applies only when continuousCapture is true or false: set continuousCapture, or remove captureSettings".into()),
        ];
        assert!(rows.len() >= 30, "{}", rows.len());
        for (body, code, target, fragment) in &rows {
            let err = check(body).map(drop).expect_err(body);
            assert_eq!(err.status(), 400, "{body}");
            assert_eq!(err.code(), *code, "{body}: {err}");
            assert_eq!(err.target(), *target, "{body}: {err}");
            assert!(
                err.message().contains(fragment.as_str()),
                "{body}:\n  got  {}\n  want {fragment}",
                err.message()
            );
            if let Some(target) = target {
                // Every message reads alone: it names the field it is about.
                let owner = target.rsplit_once(['.', '[']).map_or(*target, |(owner, _)| owner);
                assert!(
                    err.message().contains(owner) || err.message().starts_with("the request body"),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn az_create_body_validates_with_defaults() {
        // The body az sent (clients.md §3), with a real subscription id.
        let body = format!(
            r#"{{"properties":{{"target":"{}","targetType":"AzureVM","storageLocation":{{"storageId":"{}"}},"filters":[{{"protocol":"TCP","localPort":"80"}}],"bytesToCapturePerPacket":0,"totalBytesPerSession":1073741824,"timeLimitInSeconds":18000}}}}"#,
            vm(),
            account()
        );
        let capture = valid(&body);
        assert_eq!(capture.target().kind(), ResourceKind::VirtualMachine);
        assert_eq!(capture.target().name().as_str(), "VM1");
        assert_eq!(capture.target_type(), TargetType::AzureVm);
        assert_eq!(capture.scope(), &MachineScope::default());
        assert_eq!(capture.filters().len(), 1);
        assert_eq!(capture.filters()[0].to_string(), "TCP local port 80");
        assert_eq!(capture.limits(), &CaptureLimits::default());
        assert_eq!(capture.limits().snaplen(), None);
        assert_eq!(capture.limits().max_session_bytes(), 1 << 30);
        assert_eq!(capture.time_limit(), Duration::from_secs(18_000));
        assert_eq!(capture.max_bytes(), Some(1 << 30));
        assert_eq!(capture.output().storage_account().unwrap().to_string(), account());
        assert_eq!(capture.output().local_file(), None);
        assert_eq!(capture.output().files(), None);

        // What GET shows: Azure's shape, unset filter fields as "".
        let result = capture.to_result(&capture_id(), Some(r#"W/"1""#.into()), ProvisioningState::Succeeded);
        assert_eq!(
            serde_json::to_string(&result).unwrap(),
            format!(
                r#"{{"name":"pc1","id":"{}","etag":"W/\"1\"","properties":{{"provisioningState":"Succeeded","target":"{}","targetType":"AzureVM","bytesToCapturePerPacket":0,"totalBytesPerSession":1073741824,"timeLimitInSeconds":18000,"storageLocation":{{"storageId":"{}"}},"filters":[{{"protocol":"TCP","localIPAddress":"","remoteIPAddress":"","localPort":"80","remotePort":""}}]}}}}"#,
                capture_id(),
                vm(),
                account()
            )
        );
        // The echo is a valid request that validates to the same capture.
        let echoed: PacketCaptureResult = serde_json::from_str(&serde_json::to_string(&result).unwrap()).unwrap();
        assert_eq!(echoed, result);
        assert_eq!(echoed.properties.parameters.validate().unwrap(), capture);
    }

    #[test]
    fn defaults_fill_an_almost_empty_body() {
        let capture = valid(&with(""));
        let parameters = capture.to_parameters();
        assert_eq!(parameters.target_type.as_deref(), Some("AzureVM"));
        assert_eq!(parameters.bytes_to_capture_per_packet, Some(0));
        assert_eq!(parameters.total_bytes_per_session, Some(1_073_741_824));
        assert_eq!(parameters.time_limit_in_seconds, Some(18_000));
        assert_eq!(parameters.filters, Some(vec![]));
        assert_eq!(parameters.scope, None);
        assert_eq!(parameters.continuous_capture, None);
        assert_eq!(parameters.capture_settings, None);
        let json = serde_json::to_string(&parameters).unwrap();
        assert!(json.ends_with(r#""filters":[]}"#), "{json}");
        // targetType follows the target when left out, in any case when given.
        let on_vmss = valid(&props(&format!(
            r#""target":"{}","storageLocation":{{"storageId":"{}"}}"#,
            vmss(),
            account()
        )));
        assert_eq!(on_vmss.target_type(), TargetType::AzureVmss);
        assert_eq!(
            serde_json::to_string(&on_vmss.to_parameters().scope).unwrap(),
            r#"{"include":[],"exclude":[]}"#
        );
        assert_eq!(
            valid(&with(r#""targetType":"azurevm""#)).target_type(),
            TargetType::AzureVm
        );
        // Nulls are unset.
        let nulls = valid(&with(
            r#""targetType":null,"scope":null,"bytesToCapturePerPacket":null,"totalBytesPerSession":null,"timeLimitInSeconds":null,"filters":null,"continuousCapture":null,"captureSettings":null"#,
        ));
        assert_eq!(nulls, capture);
        // An empty scope on a VM is harmless.
        assert_eq!(valid(&with(r#""scope":{"include":[],"exclude":[]}"#)), capture);
    }

    #[test]
    fn zero_means_the_maximum_except_per_packet() {
        let capture = valid(&with(
            r#""bytesToCapturePerPacket":0,"totalBytesPerSession":0,"timeLimitInSeconds":0"#,
        ));
        let limits = capture.limits();
        assert_eq!(
            (
                limits.bytes_to_capture_per_packet(),
                limits.total_bytes_per_session(),
                limits.time_limit_in_seconds()
            ),
            (0, 0, 0)
        );
        assert_eq!(limits.snaplen(), None);
        assert_eq!(limits.max_session_bytes(), u64::from(u32::MAX));
        assert_eq!(limits.time_limit(), Duration::from_secs(18_000));
        // Echoed as asked.
        assert_eq!(capture.to_parameters().time_limit_in_seconds, Some(0));

        let capture = valid(&with(
            r#""bytesToCapturePerPacket":128,"totalBytesPerSession":4294967295,"timeLimitInSeconds":60"#,
        ));
        assert_eq!(capture.limits().snaplen(), Some(128));
        assert_eq!(capture.limits().max_session_bytes(), 4_294_967_295);
        assert_eq!(capture.time_limit(), Duration::from_secs(60));
    }

    #[test]
    fn continuous_capture_uses_local_path_and_settings() {
        // DESIGN.md §3's body, placeholders filled in; with continuousCapture
        // set the host path is localPath (its filePath would be rejected).
        let body = format!(
            r#"{{"properties":{{
                "target":"{}","targetType":"AzureVMSS","scope":{{"include":["0","1"],"exclude":[]}},
                "bytesToCapturePerPacket":0,"totalBytesPerSession":1073741824,"timeLimitInSeconds":18000,
                "storageLocation":{{"storageId":"{}","localPath":"/var/captures/ring.cap"}},
                "filters":[{{"protocol":"TCP","localIPAddress":"","remoteIPAddress":"","localPort":"","remotePort":""}}],
                "continuousCapture":false,
                "captureSettings":{{"fileCount":10,"fileSizeInBytes":104857600,"sessionTimeLimitInSeconds":604800}}}}}}"#,
            vmss(),
            account()
        );
        let capture = valid(&body);
        assert_eq!(capture.target_type(), TargetType::AzureVmss);
        assert_eq!(capture.scope().include(), [0, 1]);
        assert!(capture.scope().selects(1) && !capture.scope().selects(2));
        assert_eq!(capture.output().local_file().unwrap().relative(), "ring.cap");
        let files = capture.output().files().unwrap();
        assert!(!files.continuous());
        assert_eq!((files.max_files(), files.max_file_bytes()), (10, 104_857_600));
        assert_eq!(capture.time_limit(), Duration::from_secs(604_800));
        assert_eq!(capture.max_bytes(), Some(1_048_576_000));

        // A ring with defaults: only a local path, no storage account.
        let ring = valid(&props(&format!(
            r#""target":"{}","continuousCapture":true,"storageLocation":{{"localPath":"/var/captures/team/ring.CAP"}}"#,
            vm()
        )));
        let files = ring.output().files().unwrap();
        assert!(files.continuous());
        assert_eq!(
            (
                files.file_count(),
                files.file_size_in_bytes(),
                files.session_time_limit_in_seconds()
            ),
            (10, 104_857_600, 86_400)
        );
        assert_eq!(ring.time_limit(), Duration::from_secs(86_400));
        assert_eq!(ring.max_bytes(), None);
        assert_eq!(ring.output().storage_account(), None);
        assert_eq!(ring.output().local_file().unwrap().relative(), "team/ring.CAP");
        let echo = serde_json::to_string(&ring.to_parameters()).unwrap();
        assert!(
            echo.ends_with(r#""storageLocation":{"localPath":"/var/captures/team/ring.CAP"},"filters":[],"continuousCapture":true,"captureSettings":{"fileCount":10,"fileSizeInBytes":104857600,"sessionTimeLimitInSeconds":86400}}"#),
            "{echo}"
        );
        // captureSettings zeros mean the maxima.
        let zeros = valid(&props(&format!(
            r#""target":"{}","continuousCapture":true,"storageLocation":{{"storageId":"{}"}},"captureSettings":{{"fileCount":0,"fileSizeInBytes":0,"sessionTimeLimitInSeconds":0}}"#,
            vm(),
            account()
        )));
        let files = zeros.output().files().unwrap();
        assert_eq!(
            (files.max_files(), files.max_file_bytes()),
            (10_000, u64::from(u32::MAX))
        );
        assert_eq!(files.session_time_limit(), Duration::from_secs(604_800));
        // An empty captureSettings without continuousCapture sets nothing.
        assert_eq!(valid(&with(r#""captureSettings":{}"#)).output().files(), None);
    }

    #[test]
    fn filters_echo_as_sent_with_empty_strings_for_unset_fields() {
        let capture = valid(&with(
            r#""filters":[{"protocol":"tcp","localIpAddress":" 10.0.0.3 ","remotePort":"20,80;443;"},{}]"#,
        ));
        assert_eq!(capture.filters().len(), 2);
        assert_eq!(
            serde_json::to_string(&capture.to_parameters().filters).unwrap(),
            r#"[{"protocol":"TCP","localIPAddress":"10.0.0.3","remoteIPAddress":"","localPort":"","remotePort":"20,80;443;"},{"protocol":"Any","localIPAddress":"","remoteIPAddress":"","localPort":"","remotePort":""}]"#
        );
        assert_eq!(capture.to_parameters().validate().unwrap(), capture);
    }

    #[test]
    fn contract_create_example_round_trips_and_puts_back_but_for_its_windows_path() {
        // api-contract.md §1.3, NetworkWatcherPacketCaptureCreate.json → 201.
        let example = r#"{"name":"pc1","id":"/subscriptions/subid/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1/packetCaptures/pc1","properties":{"provisioningState":"Updating","target":"/subscriptions/subid/resourceGroups/rg2/providers/Microsoft.Compute/virtualMachines/vm1","bytesToCapturePerPacket":10000,"totalBytesPerSession":100000,"timeLimitInSeconds":100,"storageLocation":{"storageId":"/subscriptions/subid/resourceGroups/rg2/providers/Microsoft.Storage/storageAccounts/pcstore","storagePath":"https://mytestaccountname.blob.core.windows.net/capture/pc1.cap","filePath":"D:\\capture\\pc1.cap"},"filters":[{"protocol":"TCP","localIPAddress":"10.0.0.4","localPort":"80"}]}}"#;
        let result: PacketCaptureResult = serde_json::from_str(example).unwrap();
        assert_eq!(result.properties.provisioning_state, ProvisioningState::Updating);
        assert_eq!(result.etag, None);
        assert_eq!(serde_json::to_string(&result).unwrap(), example);

        // PUT back as a request: the read-only fields are ignored; the example's
        // "subid" is not a GUID, and its path is a Windows path.
        let err = check(example).unwrap_err();
        assert_eq!(
            (err.code(), err.target()),
            (ErrorCode::LinkedInvalidPropertyId, Some("properties.target"))
        );
        let ours = example.replace("subid", SUB);
        let err = check(&ours).unwrap_err();
        assert_eq!(err.target(), Some("properties.storageLocation.filePath"));
        assert!(err.message().contains("such as /var/captures/pc1.cap"), "{err}");

        let linux = ours.replace(r#"D:\\capture\\pc1.cap"#, "/var/captures/pc1.cap");
        let capture = valid(&linux);
        assert_eq!(capture.limits().snaplen(), Some(10_000));
        assert_eq!(capture.limits().max_session_bytes(), 100_000);
        assert_eq!(capture.time_limit(), Duration::from_secs(100));
        assert_eq!(
            capture.output().requested_storage_path(),
            Some("https://mytestaccountname.blob.core.windows.net/capture/pc1.cap")
        );
        let id: ResourceId = ResourceId::parse("id", &result.id.replace("subid", SUB)).unwrap();
        let again = capture.to_result(&id, None, ProvisioningState::Updating);
        let expected = linux.replace(
            r#""filters":[{"protocol":"TCP","localIPAddress":"10.0.0.4","localPort":"80"}]"#,
            r#""filters":[{"protocol":"TCP","localIPAddress":"10.0.0.4","remoteIPAddress":"","localPort":"80","remotePort":""}]"#,
        ).replace(
            r#"virtualMachines/vm1","#,
            r#"virtualMachines/vm1","targetType":"AzureVM","#,
        );
        assert_eq!(serde_json::to_string(&again).unwrap(), expected);
    }

    #[test]
    fn contract_get_list_and_status_examples_round_trip() {
        let id = "/subscriptions/subid/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1/packetCaptures/pc1";
        let properties = r#"{"provisioningState":"Succeeded","target":"/subscriptions/subid/resourceGroups/rg2/providers/Microsoft.Compute/virtualMachines/vm1","bytesToCapturePerPacket":10000,"totalBytesPerSession":100000,"timeLimitInSeconds":100,"storageLocation":{"storageId":"/subscriptions/subid/resourceGroups/rg2/providers/Microsoft.Storage/storageAccounts/pcstore","storagePath":"https://mytestaccountname.blob.core.windows.net/capture/pc1.cap","filePath":"D:\\capture\\pc1.cap"},"filters":[]}"#;
        // NetworkWatcherPacketCaptureGet.json: the same shape plus etag.
        let get = format!(
            r#"{{"name":"pc1","id":"{id}","etag":"W/\"00000000-0000-0000-0000-000000000000\"","properties":{properties}}}"#
        );
        let result: PacketCaptureResult = serde_json::from_str(&get).unwrap();
        assert_eq!(
            result.etag.as_deref(),
            Some(r#"W/"00000000-0000-0000-0000-000000000000""#)
        );
        assert_eq!(serde_json::to_string(&result).unwrap(), get);
        // NetworkWatcherPacketCapturesList.json: {"value":[…]}, filters [] allowed.
        let list = format!(r#"{{"value":[{get},{get}]}}"#);
        let parsed: PacketCaptureListResult = serde_json::from_str(&list).unwrap();
        assert_eq!(parsed.value.len(), 2);
        assert_eq!(parsed.next_link, None);
        assert_eq!(serde_json::to_string(&parsed).unwrap(), list);
        assert_eq!(
            serde_json::to_string(&PacketCaptureListResult::default()).unwrap(),
            r#"{"value":[]}"#
        );

        // NetworkWatcherPacketCaptureQueryStatus.json.
        let status = format!(
            r#"{{"name":"pc1","id":"{id}","captureStartTime":"2016-09-07T12:35:24Z","packetCaptureStatus":"Stopped","stopReason":"TimeExceeded","packetCaptureError":[]}}"#
        );
        let parsed: PacketCaptureQueryStatusResult = serde_json::from_str(&status).unwrap();
        assert_eq!(parsed.packet_capture_status, PcStatus::Stopped);
        assert_eq!(parsed.stop_reason, Some(StopReason::TimeExceeded));
        assert_eq!(parsed.netwatch, None);
        assert_eq!(serde_json::to_string(&parsed).unwrap(), status);
        // az's final poll body carried an extra "status": ignored on reading.
        let extra = status.replace(
            r#""packetCaptureError":[]"#,
            r#""packetCaptureError":[],"status":"Succeeded""#,
        );
        assert_eq!(
            serde_json::from_str::<PacketCaptureQueryStatusResult>(&extra).unwrap(),
            parsed
        );
    }

    #[test]
    fn status_with_netwatch_extras_has_a_clear_shape() {
        let status = PacketCaptureQueryStatusResult {
            name: "pc1".into(),
            id: capture_id().to_string(),
            capture_start_time: Some("2026-01-31T16:39:41.0770000Z".into()),
            packet_capture_status: PcStatus::Error,
            stop_reason: Some(StopReason::Other("AgentLost".into())),
            packet_capture_error: vec![PcError::AgentStopped, PcError::StorageFailed],
            netwatch: Some(NetwatchCaptureStatus {
                packets_captured: 12,
                bytes_captured: 3456,
                kernel_drops: 1,
                file_size_in_bytes: 3672,
                upload_state: Some(UploadState::Retrying),
                agent_last_seen: Some("2026-01-31T16:40:00.0000000Z".into()),
                ..Default::default()
            }),
        };
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"name":"pc1","id":"{}","captureStartTime":"2026-01-31T16:39:41.0770000Z","packetCaptureStatus":"Error","stopReason":"AgentLost","packetCaptureError":["AgentStopped","StorageFailed"],"netwatch":{{"packetsCaptured":12,"bytesCaptured":3456,"kernelDrops":1,"fileSizeInBytes":3672,"uploadState":"Retrying","agentLastSeen":"2026-01-31T16:40:00.0000000Z"}}}}"#,
                capture_id()
            )
        );
        assert_eq!(
            serde_json::from_str::<PacketCaptureQueryStatusResult>(&json).unwrap(),
            status
        );
        // Before it starts: no start time, no reason, errors [].
        let waiting = PacketCaptureQueryStatusResult {
            name: "pc1".into(),
            id: "x".into(),
            capture_start_time: None,
            packet_capture_status: PcStatus::NotStarted,
            stop_reason: None,
            packet_capture_error: vec![],
            netwatch: None,
        };
        assert_eq!(
            serde_json::to_string(&waiting).unwrap(),
            r#"{"name":"pc1","id":"x","packetCaptureStatus":"NotStarted","packetCaptureError":[]}"#
        );
        for (text, reason) in [
            ("TimeExceeded", StopReason::TimeExceeded),
            ("MaxBytesExceeded", StopReason::MaxBytesExceeded),
            ("ManualStop", StopReason::ManualStop),
            ("Whatever", StopReason::Other("Whatever".into())),
        ] {
            assert_eq!(serde_json::to_string(&reason).unwrap(), format!("{text:?}"));
            assert_eq!(
                serde_json::from_str::<StopReason>(&format!("{text:?}")).unwrap(),
                reason
            );
            assert_eq!(reason.as_str(), text);
        }
    }

    /// Issue 12: `uploadPercent` 100 beside `uploadState` Pending, before
    /// anything was uploaded. 100 means Succeeded, and only that.
    #[test]
    fn issue_12_upload_percent_agrees_with_upload_state() {
        use UploadState::*;
        let gib = 1 << 30;
        // (state, stored, total, percent)
        let rows = [
            // Nothing spooled yet: the capture runs, or wrote empty files.
            (Pending, 0, 0, 0),
            (Pending, 0, 1000, 0),
            // A continuous capture between files: what closed so far is stored.
            (Pending, 1000, 1000, 99),
            (Pending, 500, 1000, 50),
            (Uploading, 0, 1000, 0),
            (Uploading, 999, 1000, 99),
            // Every part sent, the commit not answered yet.
            (Uploading, 1000, 1000, 99),
            (Uploading, 3 * gib, 4 * gib, 75),
            (Retrying, 1, 3, 33),
            (Retrying, 0, 0, 0),
            (Failed, 0, 1000, 0),
            (Failed, 1000, 1000, 99),
            (Succeeded, 1000, 1000, 100),
            (Succeeded, 0, 0, 100),
            // More stored than asked (a report from a confused agent): capped.
            (Uploading, 2000, 1000, 99),
            (Uploading, u64::MAX, u64::MAX, 99),
        ];
        for (state, stored, total, percent) in rows {
            assert_eq!(state.percent(stored, total), percent, "{state:?} {stored}/{total}");
        }
        // A percent an agent reported, passed through the same rule.
        assert_eq!(Pending.percent(100, 100), 99);
        assert_eq!(Succeeded.percent(7, 100), 100);
        assert_eq!(Uploading.percent(42, 100), 42);
    }

    #[test]
    fn requests_serialize_only_what_is_set() {
        // What the CLI sends: az's shape, nothing unset.
        let request = PacketCapture {
            properties: PacketCaptureParameters {
                target: vm(),
                storage_location: PacketCaptureStorageLocation {
                    storage_id: Some(account()),
                    ..Default::default()
                },
                time_limit_in_seconds: Some(60),
                ..Default::default()
            },
        };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"properties":{{"target":"{}","timeLimitInSeconds":60,"storageLocation":{{"storageId":"{}"}}}}}}"#,
                vm(),
                account()
            )
        );
        assert_eq!(parse_packet_capture(json.as_bytes()).unwrap(), request);
        assert_eq!(request.validate().unwrap().time_limit(), Duration::from_secs(60));
    }

    #[test]
    fn validation_is_idempotent() {
        let bodies = [
            with(""),
            with(
                r#""timeLimitInSeconds":0,"filters":[{"remoteIPAddress":"2001:db8::1-2001:db8::ff","localPort":"1-65535"}]"#,
            ),
            props(&format!(
                r#""target":"{}","scope":{{"exclude":["007"]}},"continuousCapture":true,"captureSettings":{{"fileCount":3}},"storageLocation":{{"storageId":"{}","storagePath":"https://x.example/c","localPath":"/var/captures/a.cap"}}"#,
                vmss(),
                account()
            )),
        ];
        for body in bodies {
            let capture = valid(&body);
            let echoed = capture.to_parameters();
            let again = echoed.validate().unwrap();
            assert_eq!(again, capture, "{body}");
            assert_eq!(again.to_parameters(), echoed, "{body}");
        }
    }

    #[test]
    fn wire_names_match_the_paths() {
        let full = PacketCaptureParameters {
            target: "t".into(),
            target_type: Some("t".into()),
            scope: Some(PacketCaptureMachineScope::default()),
            bytes_to_capture_per_packet: Some(1),
            total_bytes_per_session: Some(1),
            time_limit_in_seconds: Some(1),
            storage_location: PacketCaptureStorageLocation {
                storage_id: Some("s".into()),
                storage_path: Some("s".into()),
                file_path: Some("f".into()),
                local_path: Some("l".into()),
            },
            filters: Some(vec![]),
            continuous_capture: Some(true),
            capture_settings: Some(PacketCaptureSettings {
                file_count: Some(1),
                file_size_in_bytes: Some(1),
                session_time_limit_in_seconds: Some(1),
            }),
            netwatch: Some(NetwatchCaptureParameters {
                targets: Some(TargetSelector::default()),
                alert: Some(AlertCaptureParameters::default()),
            }),
        };
        let json = serde_json::to_value(&full).unwrap();
        let pointer = |path: &str| format!("/{}", path.trim_start_matches("properties.").replace('.', "/"));
        for path in [
            TARGET,
            TARGET_TYPE,
            SCOPE,
            HOSTS,
            STORAGE_LOCATION,
            STORAGE_ID,
            STORAGE_PATH,
            FILE_PATH,
            LOCAL_PATH,
            CAPTURE_SETTINGS,
            BYTES_TO_CAPTURE_PER_PACKET.path,
            TOTAL_BYTES_PER_SESSION.path,
            TIME_LIMIT_IN_SECONDS.path,
            FILE_COUNT.path,
            FILE_SIZE_IN_BYTES.path,
            SESSION_TIME_LIMIT_IN_SECONDS.path,
        ] {
            assert!(json.pointer(&pointer(path)).is_some(), "{path}");
        }
    }

    #[test]
    fn capture_paths() {
        for (text, relative) in [
            ("/var/captures/pc1.cap", "pc1.cap"),
            ("/var/captures/team/2026/pc1.CAP", "team/2026/pc1.CAP"),
            ("/var/captures/.hidden.cap", ".hidden.cap"),
            ("/var/captures/with space.cap", "with space.cap"),
        ] {
            let path = CapturePath::parse("filePath", text).unwrap();
            assert_eq!((path.as_str(), path.relative()), (text, relative));
        }
        let err =
            CapturePath::parse("filePath", &format!("/var/captures/{}/a.cap", ["d"; 2100].join("/"))).unwrap_err();
        assert!(err.message().contains("is longer than 4095 bytes"), "{err}");
        let err = CapturePath::parse("filePath", r"C:\Captures\testByCli.cap").unwrap_err();
        assert!(err.message().ends_with("such as /var/captures/testByCli.cap"), "{err}");
    }
}
