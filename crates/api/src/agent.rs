//! The agent channel (DESIGN §1, §6): the messages an agent and the controller
//! exchange over one WebSocket the agent opens to the controller, plus the
//! netwatch-only HTTP paths around it.
//!
//! Every frame is one JSON text message, `{"type": "...", ...}`. The agent
//! speaks first ([`AgentMessage::Hello`]); the controller answers
//! [`ControllerMessage::Welcome`] and from then on pushes work the moment it
//! exists (no polling on the start path). Agents report every change of a
//! capture they own as a [`CaptureReport`] holding the whole state, so a lost
//! or repeated report is harmless: the last one wins.
//!
//! Flow of one capture:
//! 1. `PUT …/packetCaptures/{name}` → controller sends [`StartCapture`] to the
//!    target's agent.
//! 2. The agent opens the capture and reports `Running` (or `Error`), then
//!    counters every [`STATS_INTERVAL_MS`].
//! 3. A limit, or [`ControllerMessage::Stop`], ends it; the agent reports
//!    `Stopped` with the stop reason and, when the capture has an upload,
//!    spools the file and uploads it (below), reporting the upload's state
//!    until it is `Succeeded` or `Failed`. A continuous capture's files are
//!    spooled and uploaded one by one as they close, while it runs.
//!
//! Uploads (DESIGN §6: no storage keys on hosts): for each file the agent
//! `POST`s an [`UploadRequest`] to [`UPLOADS_PATH`] and gets an
//! [`UploadGrant`]: the blob's multipart upload id, the part size and, per
//! part, a short-lived URL valid for that part of that blob only (a SAS or
//! presigned URL straight to storage, or a signed path on the controller for
//! a local-directory account). It `PUT`s each part with `Content-MD5` (the
//! receiver checks it), asks again for the parts whose grant expired, and
//! commits with an [`UploadComplete`] to [`UPLOADS_COMPLETE_PATH`]; the
//! controller checks the stored size before it answers [`UploadDone`], and
//! only then does the agent delete its copy. The upload id and the parts done
//! are kept in the agent's spool, so an upload broken by an outage or an
//! agent restart resumes where it stopped.
//!
//! An agent that reconnects lists in its hello every capture it still owns or
//! has not finished reporting, so the controller can reconcile (a capture
//! stopped or deleted meanwhile is stopped on the host).

use serde::{Deserialize, Serialize};

use crate::packet_capture::{PacketCaptureParameters, PcError, StopReason, UploadState};

/// The `capture_id` of one run of a capture: its resource id, `#`, and the
/// time it was created (ms since the epoch). A capture created again under the
/// same name is another run, so a late report of the old run can never be
/// taken for the new one, and an agent that finished the old run starts the
/// new one. Agents treat it as opaque.
pub fn run_id(capture: &str, created_ms: i64) -> String {
    format!("{capture}#{created_ms}")
}

/// The resource id and creation time in a [`run_id`]; `None` for anything else.
pub fn parse_run_id(run: &str) -> Option<(&str, i64)> {
    let (capture, created) = run.rsplit_once('#')?;
    Some((capture, created.parse().ok()?))
}

/// WebSocket endpoint agents connect to (`GET` with `Upgrade: websocket` and
/// `Authorization: Bearer <enrollment or agent token>`).
pub const CHANNEL_PATH: &str = "/netwatch/v1/agent/channel";

/// Prefix of the controller paths agents `PUT` parts to when the storage
/// account takes them only through the controller
/// (`{UPLOAD_PREFIX}/{storage account}/{blob path}?{signed grant}`); the
/// exact path of each part comes in its [`PartGrant::url`].
pub const UPLOAD_PREFIX: &str = "/netwatch/v1/agent/files";

/// Prefix of the download paths clients read stored files from
/// (`GET {DOWNLOAD_PREFIX}/{storage account}/{blob path}`, HTTP Range supported).
pub const DOWNLOAD_PREFIX: &str = "/netwatch/v1/storage";

/// Agents `POST` an [`UploadRequest`] here for an [`UploadGrant`].
pub const UPLOADS_PATH: &str = "/netwatch/v1/agent/uploads";

/// Agents `POST` an [`UploadComplete`] here once every part is stored.
pub const UPLOADS_COMPLETE_PATH: &str = "/netwatch/v1/agent/uploads/complete";

/// Agents `POST` a live view's packets to `{LIVE_PREFIX}/{stream}` (the
/// stream a [`ControllerMessage::LiveStart`] names), as one streamed body of
/// [`LiveFrame`]s, until the capture ends, the controller answers (the viewer
/// left) or a [`ControllerMessage::LiveStop`] comes.
pub const LIVE_PREFIX: &str = "/netwatch/v1/agent/live";

/// The frames of a live view's body, agent to controller: a kind byte, a
/// little-endian `u32` length, then that many bytes.
///
/// - [`LiveFrame::HELLO`]: JSON [`LiveHello`], first;
/// - [`LiveFrame::RECORDS`]: whole classic pcap records (16-byte header with
///   nanosecond timestamps, then the stored bytes), in the byte order and
///   link type the hello gives, as the capture wrote them to its file;
/// - [`LiveFrame::STATS`]: JSON [`LiveStats`], about once a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveFrame;

impl LiveFrame {
    pub const HELLO: u8 = 1;
    pub const RECORDS: u8 = 2;
    pub const STATS: u8 = 3;
    /// Bytes before a frame's payload.
    pub const HEADER_LEN: usize = 5;
    /// The longest payload an agent sends (a records frame holds whole
    /// records up to this, or one larger record alone).
    pub const MAX_PAYLOAD: usize = 1 << 20;

    /// Appends one frame.
    pub fn push(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
        out.push(kind);
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(payload);
    }
}

/// What a live view's packets are, first in its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveHello {
    /// The capture's run ([`run_id`]).
    pub capture_id: String,
    /// The interface captured on (`eth0`, `any`).
    pub interface: String,
    /// The pcap link type of the records (1 Ethernet, 276 Linux SLL2).
    pub link_type: u16,
    /// The snap length of the capture's file.
    pub snaplen: u32,
    /// The records' fields are little-endian (the host's order).
    pub little_endian: bool,
}

/// How a live view is going on the agent's side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveStats {
    /// Records sent so far.
    pub sent: u64,
    /// Records the view skipped because it fell behind the file (the file has them).
    pub dropped: u64,
}

/// The installer a host runs as root (`curl … | sh -s -- --enroll-token …`),
/// the command `vm extension set` answers; anyone may read it.
pub const INSTALLER_PATH: &str = "/netwatch/v1/agent/install.sh";

/// The agent builds the controller serves: `GET` lists them ([`AgentBuild`]);
/// `GET {AGENT_BUILDS_PATH}/{arch}/{version}` is one binary. Anyone may read
/// them (the open-source binary; hosts check its SHA-256).
pub const AGENT_BUILDS_PATH: &str = "/netwatch/v1/agent/builds";

/// What the agent's process exits with when it stopped to be upgraded (a
/// verified binary staged): its unit restarts it (`Restart=on-failure`) after
/// `ExecStopPost` installed the binary (`netwatch agent apply`).
pub const EXIT_UPGRADE: i32 = 75;

/// How often an agent sends counters of a running capture.
pub const STATS_INTERVAL_MS: u64 = 1_000;

/// How often an agent sends a heartbeat when it has nothing else to say.
pub const HEARTBEAT_INTERVAL_MS: u64 = 5_000;

/// A message from an agent to the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AgentMessage {
    /// First message on every connection.
    Hello(Hello),
    /// The whole state of one capture the agent owns.
    Report(CaptureReport),
    /// "Still here", when nothing else was sent for a while.
    Heartbeat,
    /// An upgrade the controller asked for did not happen; the agent goes on
    /// with its version.
    UpgradeFailed(UpgradeFailure),
    /// Where the host's flight recorder is: sent when it starts, stops or
    /// fails, and every [`RECORDER_STATUS_INTERVAL_MS`] while it runs.
    Recorder(RecorderStatus),
}

/// How often a running flight recorder's status is sent.
pub const RECORDER_STATUS_INTERVAL_MS: u64 = 10_000;

/// The flight recorder a host runs (issue 16): a continuous capture into a
/// bounded set of files that always holds the last `seconds` of matching
/// traffic within `max_bytes`, oldest dropped first, from which a capture
/// around an alert takes the seconds before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecorderSpec {
    /// The flight recorder resource's id.
    pub id: String,
    /// Azure's filters (validated again by the agent); empty keeps all.
    #[serde(default)]
    pub filters: Vec<crate::filter::PacketCaptureFilter>,
    /// Seconds of traffic to keep at least (when `max_bytes` allows).
    pub seconds: u32,
    /// Bytes of files the recorder keeps at most.
    pub max_bytes: u64,
    /// Bytes kept of each packet; 0 keeps whole packets.
    pub bytes_to_capture_per_packet: u32,
}

/// A flight recorder's state on its host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecorderStatus {
    /// The recorder this is ([`RecorderSpec::id`]); none once stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Recording now.
    pub running: bool,
    /// The oldest packet held (ms since the epoch): the window starts there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_ms: Option<i64>,
    /// Bytes of files held (a capture around an alert holds on to its own
    /// beyond them until it is stored).
    pub bytes: u64,
    pub files: u32,
    /// Packets recorded since it started.
    pub packets: u64,
    /// Packets the kernel dropped since it started (the ring was full).
    pub kernel_drops: u64,
    /// Why it is not recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why an upgrade to `version` failed (a corrupt download, no room, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeFailure {
    pub version: String,
    pub message: String,
    /// When it failed (ms since the epoch).
    pub at_ms: i64,
}

/// One agent binary the controller serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentBuild {
    pub version: String,
    /// As `uname -m` says it: `x86_64`, `aarch64`.
    pub arch: String,
    /// Lower-case hex SHA-256 of the binary.
    pub sha256: String,
    pub size: u64,
}

/// An upgrade for the agent: the build to run next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upgrade {
    pub build: AgentBuild,
    /// Upgrade even while captures run (`vm extension set --force-update`);
    /// otherwise the agent waits until none runs.
    #[serde(default)]
    pub force: bool,
}

/// A message from the controller to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
#[allow(
    clippy::large_enum_variant,
    reason = "one message per push, moved once and never stored in bulk: boxing `Start` would buy nothing"
)]
pub enum ControllerMessage {
    /// The hello was accepted: the host is this VM.
    Welcome(Welcome),
    /// Start a capture (or confirm one the agent already runs: starting twice
    /// is a no-op on the agent).
    Start(StartCapture),
    /// Stop a capture now (`ManualStop`); a capture the agent does not know is ignored.
    Stop { capture_id: String },
    /// The controller refuses the connection; the agent logs it and retries later.
    Refused { message: String },
    /// Run this build next ([`Upgrade`]): download, verify, restart into it.
    Upgrade(Upgrade),
    /// The host's extension was deleted: the agent uninstalls itself (when
    /// netwatch's installer installed it), leaving captures unless `purge`.
    Uninstall { purge: bool },
    /// Run this flight recorder (replacing the one running), or none: sent
    /// after each welcome and whenever the host's recorder changes.
    Recorder { recorder: Option<RecorderSpec> },
    /// Send the packets of capture `capture_id` (a run id) from now on to
    /// `{LIVE_PREFIX}/{stream}` (a viewer is watching). Agents before live
    /// views skip it, and the viewer sees no packets from them.
    LiveStart { stream: String, capture_id: String },
    /// The viewer of `stream` left: stop sending.
    LiveStop { stream: String },
}

/// Who the host is and what it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// The VM's name (defaults to the host name on the agent).
    pub vm_name: String,
    pub resource_group: String,
    /// Canonical location name (`westus`).
    pub location: String,
    /// The host's own name.
    pub hostname: String,
    /// A random id the agent made once and keeps in its data directory: which
    /// host this is when it joins a scale set, so a host that joins again
    /// keeps its instance id. Left out by agents before scale sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// ARM tags the host enrolls with (`netwatch agent --tag role=web`):
    /// its VM's tags when it registers for the first time.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    /// The interface the agent captures on (`eth0`, `any`): merged files
    /// name each host's packets `host/interface`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_interface: Option<String>,
    /// The agent's version (`CARGO_PKG_VERSION`).
    pub agent_version: String,
    /// The host's architecture as `uname -m` says it (`x86_64`): which build
    /// it upgrades to. Left out by agents before upgrades.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The last upgrade that failed on this host, until one succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_failure: Option<UpgradeFailure>,
    pub interfaces: Vec<InterfaceInfo>,
    /// Captures the agent still owns or has not finished reporting.
    #[serde(default)]
    pub captures: Vec<CaptureReport>,
}

/// One network interface of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceInfo {
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`, when the interface has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Addresses with prefix length (`10.0.0.3/24`, `fe80::1/64`).
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// The controller's answer to a hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    /// The VM resource id the host is registered as.
    pub vm_id: String,
    /// The agent's own credential, sent once when it connected with a
    /// one-time enrollment token: the agent keeps it and authenticates with
    /// it from then on (the enrollment token no longer works).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The upload protocol this controller speaks ([`UPLOAD_PROTOCOL`]);
    /// 0 (absent: a controller from before protocol 2) is protocol 1.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub upload_protocol: u32,
    /// The controller's hand-over socket ([`HandoffPart`]), when it has one:
    /// an agent on the controller's own machine (it reaches the controller on
    /// a loopback address) hands parts for local accounts over through it
    /// instead of sending their bytes over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<String>,
}

/// One part handed over to the controller on its own machine, through the
/// Unix socket the [`Welcome`] names: this JSON on one line, sent with the
/// spooled file's descriptor (`SCM_RIGHTS`, read-only), and nothing else. The
/// controller checks `grant` (the part's [`PartGrant::url`], a path on the
/// controller with its signed grant) as it checks a `PUT` there, copies `len`
/// bytes of the file from `offset` into the upload in the kernel
/// (`copy_file_range`) and answers one [`HandoffAnswer`] line. Only a grant
/// authorizes: the socket is open to every local user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HandoffPart {
    pub grant: String,
    pub offset: u64,
    pub len: u64,
}

/// The controller's answer to a [`HandoffPart`]: `status` as the `PUT` would
/// have answered (200: stored), the part's receipt, or what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandoffAnswer {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// The upload protocol this build speaks, said in [`Welcome::upload_protocol`]:
/// - 1: an [`UploadRequest`] carries the file's SHA-256, so the agent reads
///   the whole file once to hash it before its first part goes;
/// - 2: the SHA-256 may be left out of [`UploadRequest`]s (the controller
///   needs it only in the [`UploadComplete`]), so the agent hashes the file
///   while its parts go. A controller of protocol 2 takes both; an agent of
///   protocol 2 speaks 1 to a controller that does not say 2.
pub const UPLOAD_PROTOCOL: u32 = 2;

/// A capture for the agent to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartCapture {
    /// This run of the packet capture ([`run_id`]); names it in every report.
    pub capture_id: String,
    /// The capture as the API validated it (the agent validates it again).
    pub parameters: PacketCaptureParameters,
    /// When the capture was created (ms since the epoch): a time limit counts
    /// from the start on the host, this is for logs and file names.
    pub created_ms: i64,
    /// Where the file goes when the capture ends; none without a storage account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<Upload>,
}

/// That a capture's files go to a storage account (grants are asked for per
/// file, [`UploadRequest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upload {
    /// Where the file will be, as `storageLocation.storagePath` shows it.
    pub storage_path: String,
}

/// A request for grants to upload one file of a capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRequest {
    /// The capture run ([`run_id`]) the file belongs to.
    pub capture_id: String,
    /// Which of its files: 0 for a capture's one file, `n` ≥ 1 for the n-th
    /// file of a continuous capture (the controller derives the blob's path).
    pub seq: u32,
    /// The file's size in bytes.
    pub size: u64,
    /// SHA-256 of the file, lower-case hex; empty (left out) from an agent
    /// of upload protocol 2, which sends it with the [`UploadComplete`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// An upload begun by an earlier grant, to continue; none to begin one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// The parts wanted (1-based); empty for all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<u32>,
}

/// Grants to upload parts of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadGrant {
    /// The blob's multipart upload: keep it to resume.
    pub upload_id: String,
    /// Bytes per part (the last part may be shorter); part n starts at
    /// `(n - 1) * part_size`.
    pub part_size: u64,
    /// When the grants stop working (ms since the epoch).
    pub expires_ms: i64,
    pub parts: Vec<PartGrant>,
}

/// Where to `PUT` one part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartGrant {
    /// 1-based.
    pub part: u32,
    /// An absolute URL (storage itself: send no credential), or a path on
    /// the controller starting with `/` (send the agent's bearer token).
    pub url: String,
    /// Headers to send besides `Content-Length` and `Content-MD5`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The receipt to record for the part when it is known in advance (an
    /// Azure block id); none to record the answer's `ETag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}

/// One stored part, as [`UploadComplete`] lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartReceipt {
    pub part: u32,
    /// The grant's receipt, or the storage's `ETag` for the part.
    pub id: String,
}

/// Every part of a file is stored: commit the blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadComplete {
    pub capture_id: String,
    pub seq: u32,
    pub upload_id: String,
    pub size: u64,
    pub sha256: String,
    pub parts: Vec<PartReceipt>,
}

/// The blob is committed and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadDone {
    /// Where it can be downloaded.
    pub storage_path: String,
    /// Its size in storage, equal to the file's.
    pub size: u64,
}

/// A capture's state on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentCaptureState {
    /// Capturing.
    Running,
    /// Ended (a limit, a stop, or an error after packets were written).
    Stopped,
    /// Could not start, or failed; `errors` says how.
    Error,
}

/// Everything the agent knows of one capture; each report replaces the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureReport {
    pub capture_id: String,
    pub state: AgentCaptureState,
    /// When capturing started on the host (ms since the epoch): once the
    /// capture was open, rounded up, so never before it (`captureStartTime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    /// Set once the state is `Stopped` or `Error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    #[serde(default)]
    pub errors: Vec<PcError>,
    /// A human explanation of `errors` (`no interface named eth9`), for logs and status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub stats: ReportStats,
    /// Where the upload is; none when the capture has no upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadState>,
    /// How far the upload is, with `upload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_progress: Option<UploadProgress>,
}

/// How far a capture's upload is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadProgress {
    /// Bytes of the capture's spooled files in storage, 0–100, by
    /// [`UploadState::percent`](crate::packet_capture::UploadState::percent):
    /// 100 once the upload `Succeeded` and only then.
    pub percent: u8,
    /// Files waiting in the spool (or uploading).
    pub files_pending: u32,
    /// Why it waits or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A capture's counters on the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportStats {
    pub packets_captured: u64,
    pub bytes_captured: u64,
    pub kernel_drops: u64,
    pub file_size_in_bytes: u64,
    /// A capture around an alert: the first moment its file covers (ms
    /// since the epoch), from the flight recorder or from its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_from_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_name_one_run_of_a_capture() {
        let run = run_id("/subscriptions/s/x/packetCaptures/pc1", 1_700_000_000_123);
        assert_eq!(run, "/subscriptions/s/x/packetCaptures/pc1#1700000000123");
        assert_eq!(
            parse_run_id(&run),
            Some(("/subscriptions/s/x/packetCaptures/pc1", 1_700_000_000_123))
        );
        assert_eq!(parse_run_id("/subscriptions/s/x/packetCaptures/pc1"), None);
        assert_eq!(parse_run_id("pc#soon"), None);
    }

    /// Upload protocol 2 against 1, both ways, on the wire: a welcome of an
    /// older controller says no protocol (1); a grant request of a newer agent
    /// leaves the SHA-256 out, one of an older agent has it.
    #[test]
    fn upload_protocols_meet_on_the_wire() {
        let old_welcome: ControllerMessage = serde_json::from_str(r#"{"type":"welcome","vmId":"/vm"}"#).unwrap();
        let ControllerMessage::Welcome(old_welcome) = old_welcome else {
            panic!("a welcome")
        };
        assert_eq!(old_welcome.upload_protocol, 0);
        let new_welcome = ControllerMessage::Welcome(Welcome {
            vm_id: "/vm".to_owned(),
            credential: None,
            upload_protocol: UPLOAD_PROTOCOL,
            handoff: None,
        });
        assert_eq!(
            serde_json::to_string(&new_welcome).unwrap(),
            r#"{"type":"welcome","vmId":"/vm","uploadProtocol":2}"#
        );
        let new_request = UploadRequest {
            capture_id: "/pc#1".to_owned(),
            seq: 0,
            size: 10,
            sha256: String::new(),
            upload_id: None,
            parts: vec![],
        };
        let text = serde_json::to_string(&new_request).unwrap();
        assert_eq!(text, r#"{"captureId":"/pc#1","seq":0,"size":10}"#);
        assert_eq!(serde_json::from_str::<UploadRequest>(&text).unwrap(), new_request);
        let old_request: UploadRequest =
            serde_json::from_str(r#"{"captureId":"/pc#1","seq":0,"size":10,"sha256":"ab"}"#).unwrap();
        assert_eq!(old_request.sha256, "ab");
    }

    #[test]
    fn messages_are_tagged_json() {
        let stop = ControllerMessage::Stop {
            capture_id: "/subscriptions/x/pc".to_owned(),
        };
        let text = serde_json::to_string(&stop).unwrap();
        assert_eq!(text, r#"{"type":"stop","captureId":"/subscriptions/x/pc"}"#);
        assert_eq!(serde_json::from_str::<ControllerMessage>(&text).unwrap(), stop);

        let report = AgentMessage::Report(CaptureReport {
            capture_id: "pc".to_owned(),
            state: AgentCaptureState::Stopped,
            started_ms: Some(1),
            stop_reason: Some(StopReason::TimeExceeded),
            errors: vec![],
            message: None,
            stats: ReportStats::default(),
            upload: Some(UploadState::Uploading),
            upload_progress: None,
        });
        let text = serde_json::to_string(&report).unwrap();
        assert!(
            text.starts_with(r#"{"type":"report","captureId":"pc","state":"Stopped""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<AgentMessage>(&text).unwrap(), report);
        assert_eq!(
            serde_json::from_str::<AgentMessage>(r#"{"type":"heartbeat"}"#).unwrap(),
            AgentMessage::Heartbeat
        );
    }
}
