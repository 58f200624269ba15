//! A capture's life, in one place for the API and the agent hub alike
//! (DESIGN §3, §6): what an agent's report does to a capture, stopping one,
//! and giving one up when its agent is lost or cut off. Every change goes
//! through [`Store::modify_capture`](crate::store::Store::modify_capture), so
//! it is decided on the capture as stored and written only if nobody changed
//! it meanwhile.
//!
//! Rules a report follows:
//! - it never moves a capture out of `Stopped`/`Error` back to `Running`: the
//!   capture was stopped (or deleted) while the agent could not hear it, so the
//!   agent is told to stop it;
//! - it never moves a capture out of `Error`: an agent given up as lost that
//!   comes back (having recovered the file it was writing) adds its counters,
//!   upload and errors; its files are stored and listed all the same;
//! - it settles the capture's long-running operations: the create succeeds
//!   when the agent starts the capture (fails when it cannot), a stop when the
//!   capture has stopped and its upload is over.

use netwatch_api::agent::{
    AgentCaptureState, CaptureReport, ControllerMessage, DOWNLOAD_PREFIX, StartCapture, Upload, parse_run_id, run_id,
};
use netwatch_api::packet_capture::{
    AlertCoverage, NetwatchCaptureStatus, PacketCapture, PcError, StopReason, TargetType, UploadState, ValidatedCapture,
};
use netwatch_api::resource::ResourceId;
use serde_json::json;

use crate::accounts::LookupError;
use crate::app::{AppState, new_guid};
use crate::clock::now_ms;
use crate::store::{
    CaptureRecord, CaptureStatus, Change, Modified, OperationKind, OperationRecord, OperationStatus, StoreError,
    WatcherRecord,
};

pub(crate) mod fleet;

/// Stop reason of a capture whose agent was not heard from in time, or was cut off.
pub(crate) const AGENT_LOST: &str = "AgentLost";

/// The `Start` message of a stored capture.
pub(crate) fn start_message(record: &CaptureRecord) -> Result<StartCapture, serde_json::Error> {
    let request: PacketCapture = serde_json::from_str(&record.request_json)?;
    let upload = request
        .properties
        .storage_location
        .storage_id
        .as_deref()
        .zip(request.properties.storage_location.storage_path.as_deref())
        .map(|(_, storage_path)| Upload {
            storage_path: storage_path.to_owned(),
        });
    Ok(StartCapture {
        capture_id: run_id(&record.id, record.created_ms),
        parameters: request.properties,
        created_ms: record.created_ms,
        upload,
    })
}

/// A capture as validated, with every filter's `bpfExpression` compiled here
/// by libpcap (loaded when an expression is first compiled), whatever
/// program the client sent: the programs travel to the agents in the stored
/// request (`bpfProgram`), so an agent never needs libpcap. A bad expression,
/// or no libpcap on this host, is a 400 at the expression. Compiled on a
/// blocking thread: libpcap's optimiser may take a second or so on a long one.
pub(crate) async fn compile_expressions(
    mut capture: ValidatedCapture,
) -> Result<ValidatedCapture, netwatch_api::error::ApiError> {
    if !capture.has_expressions() {
        return Ok(capture);
    }
    tokio::task::spawn_blocking(move || {
        capture.compile_expressions(netwatch_bpf::expression::compile)?;
        Ok(capture)
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "compiling a capture's expressions panicked");
        netwatch_api::error::ApiError::new(
            netwatch_api::error::ErrorCode::InternalServerError,
            "compiling the filters' expressions failed",
        )
    })?
}

/// Azure's blob path of a capture created at `created_ms` on `target` (DESIGN
/// §3 "Files"), in lower case as Azure writes it; none for a target id that
/// does not parse (stored ids always do).
pub(crate) fn capture_blob_path(target: &str, created_ms: i64) -> Option<String> {
    let id = ResourceId::parse("target", target).ok()?;
    // `microsoft.compute/virtualmachines/{vm}`, or for a scale set's
    // instance `…/virtualmachinescalesets/{vmss}/virtualmachines/{n}`.
    let mut resource = id.resource_type().namespace().to_owned();
    for (kind, name) in id.resource_type().types().iter().zip(id.names()) {
        resource.push('/');
        resource.push_str(kind);
        resource.push('/');
        resource.push_str(name.as_str());
    }
    Some(netwatch_storage::capture_blob_path_of(
        id.subscription().as_str(),
        id.resource_group().as_str(),
        &resource,
        created_ms,
    ))
}

/// The blob path of file `seq` of a capture: [`capture_blob_path`] for the
/// one file (0), with `_{seq:05}` before `.cap` for a continuous capture's
/// n-th file, as the agent names its ring files.
pub(crate) fn capture_file_blob_path(target: &str, created_ms: i64, seq: u32) -> Option<String> {
    let path = capture_blob_path(target, created_ms)?;
    if seq == 0 {
        return Some(path);
    }
    let stem = path.strip_suffix(".cap")?;
    Some(format!("{stem}_{seq:05}.cap"))
}

/// A capture to create: its id, the validated request, the watcher it goes
/// under (`new_watcher`: not stored yet), and the scheme and host clients
/// reach this server at (for the file's `storagePath`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewCapture<'a> {
    pub id: &'a ResourceId,
    pub capture: &'a ValidatedCapture,
    pub watcher: &'a WatcherRecord,
    pub new_watcher: bool,
    pub base: &'a str,
}

/// A capture created, and the operation that follows its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Created {
    pub record: CaptureRecord,
    pub operation: OperationRecord,
}

/// Why a capture was not created; nothing was written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CreateError {
    #[error(
        "{noun} {target} is not registered: no netwatch agent runs on it; install the agent on the host \
         (`netwatch vm extension set` prints the command)"
    )]
    NotRegistered { noun: &'static str, target: String },
    #[error(
        "{noun} {vm} is in {vm_location}, but network watcher {watcher} serves {watcher_location}: \
         use the watcher of {vm_location}"
    )]
    WrongLocation {
        noun: &'static str,
        vm: String,
        vm_location: String,
        watcher: String,
        watcher_location: String,
    },
    #[error("packet capture {name} is {status}: stop it (POST …/stop) or delete it before creating it again")]
    StillActive { name: String, status: CaptureStatus },
    #[error(
        "storage account {name:?} is not configured on this controller: use one of [{known}] \
         (`netwatch storage account list` shows them)"
    )]
    NoSuchAccount { name: String, known: String },
    #[error("packet capture {name} was created by another request meanwhile")]
    CreatedMeanwhile { name: String },
    #[error("stored VM id {0} is unreadable")]
    UnreadableVm(String),
    #[error(
        "scale set {target} does not exist: hosts join it with the command `netwatch vmss extension set \
         --vmss-name NAME …` prints"
    )]
    NoSuchScaleSet { target: String },
    #[error("{field} {ids} {verb} of scale set {scale_set}: its instances are [{known}]")]
    UnknownInstances {
        field: String,
        ids: String,
        verb: &'static str,
        scale_set: String,
        known: String,
    },
    #[error(
        "the scope selects no instance of scale set {scale_set} (its instances are [{known}]): \
         nothing would be captured; widen properties.scope or join hosts first"
    )]
    NoInstances { scale_set: String, known: String },
    #[error("{message}")]
    BadHost { field: String, message: String },
    #[error("serialize the capture definition")]
    Serialize(#[source] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Accounts(#[from] LookupError),
}

/// Creates a capture (or creates again one that has ended): checks that its
/// target runs an agent in the watcher's location, that no run of it is
/// active, and that its storage account exists; then stores it `NotStarted`
/// with its create operation `InProgress`, and pushes it to its agent.
pub(crate) async fn create(state: &AppState, new: NewCapture<'_>) -> Result<Created, CreateError> {
    let NewCapture {
        id,
        capture,
        watcher,
        new_watcher,
        base,
    } = new;
    let target = capture.target();
    let (target_id, target_location, hosts) = match capture.target_type() {
        // Hosts chosen by a selector: the capture targets itself (there is no
        // one resource), each host's location is checked as it is chosen.
        _ if capture.hosts().is_some() => {
            let selector = capture.hosts().expect("checked");
            let hosts = fleet::chosen_hosts(state, selector, &watcher.location).await?;
            (id.to_string(), watcher.location.clone(), Some(hosts))
        }
        TargetType::AzureVm => {
            let Some(vm) = state.store.get_vm(&target.to_string()).await? else {
                return Err(CreateError::NotRegistered {
                    noun: target.kind().noun(),
                    target: target.to_string(),
                });
            };
            (vm.id.clone(), vm.location.clone(), None)
        }
        TargetType::AzureVmss => {
            let (set, hosts) = fleet::hosts(state, capture).await?;
            (set.id, set.location, Some(hosts))
        }
    };
    if !target_location.eq_ignore_ascii_case(&watcher.location) {
        return Err(CreateError::WrongLocation {
            noun: target.kind().noun(),
            vm: target.name().to_string(),
            vm_location: target_location,
            watcher: id.names()[0].to_string(),
            watcher_location: watcher.location.clone(),
        });
    }
    let existing = state.store.get_capture(&id.to_string()).await?;
    if let Some(existing) = &existing {
        let status = fleet::status_of(state, existing).await?;
        if status.is_active() {
            return Err(CreateError::StillActive {
                name: id.name().to_string(),
                status,
            });
        }
    }
    let storage = match capture.output().storage_account() {
        Some(account_id) => {
            let name = account_id.name().as_str();
            if state.storage.get(name).await?.is_none() {
                return Err(CreateError::NoSuchAccount {
                    name: name.to_owned(),
                    known: state.storage.names().await?.join(", "),
                });
            }
            Some(name.to_owned())
        }
        None => None,
    };

    // Everything is checked; write.
    let now = now_ms();
    let parameters = capture.to_parameters();
    let record = new_record(
        CaptureRecord {
            id: id.to_string(),
            watcher_id: watcher.id.clone(),
            target_id,
            request_json: String::new(),
            status: CaptureStatus::NotStarted,
            stop_reason: None,
            errors_json: "[]".to_owned(),
            started_ms: None,
            stats_json: "{}".to_owned(),
            etag: format!("W/\"{}\"", new_guid()),
            version: 1,
            created_ms: now,
            updated_ms: now,
            parent_key: None,
            instance: None,
        },
        parameters.clone(),
        storage.as_deref().map(|account| (base, account)),
    )?;
    let parts = match &hosts {
        Some(hosts) => hosts
            .iter()
            .map(|(instance, vm)| {
                fleet::part_record(
                    &record,
                    instance,
                    vm,
                    parameters.clone(),
                    storage.as_deref().map(|a| (base, a)),
                )
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![],
    };
    let operation = new_operation(&id.to_string(), OperationKind::Create, now);
    if new_watcher {
        state.store.ensure_watcher(watcher).await?;
    }
    let written = state.store.write_capture(existing.as_ref(), &record, &parts).await;
    match written {
        Ok(()) => {}
        Err(StoreError::Conflict(_) | StoreError::Stale(_)) => {
            return Err(CreateError::CreatedMeanwhile {
                name: id.name().to_string(),
            });
        }
        Err(error) => return Err(error.into()),
    }
    // After the capture: an operation whose capture failed to insert would
    // otherwise stay InProgress until it times out.
    state.store.insert_operation(&operation).await?;
    if hosts.is_none() {
        push_start(state, &record).await;
        tracing::info!(capture = %id, target = %record.target_id, "packet capture created");
    } else {
        for part in &parts {
            push_start(state, part).await;
        }
        tracing::info!(capture = %id, target = %record.target_id, hosts = parts.len(), "packet capture over many hosts created");
        // Hosts none of which is connected: nothing will report; settle now
        // what can be settled (the create waits for hosts that are there).
        let targets: Vec<&str> = parts.iter().map(|part| part.target_id.as_str()).collect();
        if !state.hub.any_connected(&targets).await {
            fleet::settle(state, &record.id).await?;
        }
    }
    Ok(Created { record, operation })
}

/// A capture record with its request: `parameters` with `storagePath` set
/// for `storage` (the scheme and host clients reach this server at, and the
/// account) to where the record's target's file goes.
fn new_record(
    mut record: CaptureRecord,
    mut parameters: netwatch_api::packet_capture::PacketCaptureParameters,
    storage: Option<(&str, &str)>,
) -> Result<CaptureRecord, CreateError> {
    if let Some((base, account)) = storage {
        let blob = capture_blob_path(&record.target_id, record.created_ms)
            .ok_or_else(|| CreateError::UnreadableVm(record.target_id.clone()))?;
        parameters.storage_location.storage_path = Some(format!("{base}{DOWNLOAD_PREFIX}/{account}/{blob}"));
    }
    let request = PacketCapture { properties: parameters };
    record.request_json = serde_json::to_string(&request).map_err(CreateError::Serialize)?;
    Ok(record)
}

/// A new operation of `kind` on `resource_id`, in progress since `now`.
fn new_operation(resource_id: &str, kind: OperationKind, now: i64) -> OperationRecord {
    OperationRecord {
        id: new_guid(),
        resource_id: resource_id.to_owned(),
        kind,
        status: OperationStatus::InProgress,
        error_json: None,
        created_ms: now,
        updated_ms: now,
    }
}

/// Pushes a capture's start to its host's agent, if connected (otherwise
/// the agent gets it at its next hello).
async fn push_start(state: &AppState, record: &CaptureRecord) {
    match start_message(record) {
        Ok(start) => {
            state.hub.send(&record.target_id, ControllerMessage::Start(start)).await;
        }
        // It was serialized a moment ago; should it not read back, its agent
        // is told at its next hello (which logs why it cannot be started).
        Err(error) => tracing::error!(capture = %record.id, error = %error, "created capture cannot be started"),
    }
}

/// How a stop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// Its agent, connected, was asked to stop it; operation `operation`
    /// (kind stop) ends when the agent reports it stopped and its upload over.
    Asked { operation: String },
    /// Stopped here (its agent was told, if it hears); no operation follows.
    Now,
    /// It had ended already.
    Already,
    /// No such capture (deleted meanwhile).
    Gone,
    /// It kept changing under the stop: try again.
    KeptChanging,
}

/// Stops `capture` (as read) unless it has ended. A capture running on a
/// connected agent is stopped by that agent, which reports the end and
/// uploads the file: a stop operation follows it. Otherwise it is stopped
/// here (`Stopped`, `ManualStop`), its agent told in case it hears, and its
/// create operation settled.
pub(crate) async fn stop(state: &AppState, capture: &CaptureRecord) -> Result<Stopped, StoreError> {
    if fleet::is_fleet(capture) {
        return fleet::stop(state, capture).await;
    }
    if capture.status == CaptureStatus::Running && state.hub.is_connected(&capture.target_id).await {
        let operation = new_operation(&capture.id, OperationKind::Stop, now_ms());
        state.store.insert_operation(&operation).await?;
        let stop = ControllerMessage::Stop {
            capture_id: run_id(&capture.id, capture.created_ms),
        };
        if state.hub.send(&capture.target_id, stop).await {
            tracing::info!(capture = %capture.id, "packet capture stop sent to its agent");
            return Ok(Stopped::Asked {
                operation: operation.id,
            });
        }
        // The agent went away between the check and the send: stop it here.
        state
            .store
            .finish_operation(&operation.id, OperationStatus::Succeeded, None, now_ms())
            .await?;
    }
    let id = capture.id.as_str();
    let stopped = state.store.modify_capture(id, |record| {
        if !record.status.is_active() {
            return Change::Keep(());
        }
        record.status = CaptureStatus::Stopped;
        record.stop_reason = Some(StopReason::ManualStop.as_str().to_owned());
        record.etag = format!("W/\"{}\"", new_guid());
        record.updated_ms = now_ms();
        Change::Write(())
    });
    let record = match stopped.await {
        Ok(Some(Modified {
            record, written: true, ..
        })) => record,
        Ok(Some(_)) => return Ok(Stopped::Already),
        Ok(None) => return Ok(Stopped::Gone),
        Err(StoreError::Stale(_)) => return Ok(Stopped::KeptChanging),
        Err(error) => return Err(error),
    };
    // An agent that has it (or is starting it) stops when it hears this.
    let stop = ControllerMessage::Stop {
        capture_id: run_id(&record.id, record.created_ms),
    };
    state.hub.send(&record.target_id, stop).await;
    state
        .store
        .finish_operations_of(
            &record.id,
            OperationKind::Create,
            OperationStatus::Succeeded,
            None,
            now_ms(),
        )
        .await?;
    tracing::info!(capture = %record.id, "packet capture stopped");
    if let Some(parent) = &record.parent_key {
        fleet::settle(state, parent).await?;
    }
    Ok(Stopped::Now)
}

/// What cutting a host off did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CutOff {
    /// Its credentials revoked.
    pub revoked: u64,
    /// Whether its channel was open (it is closed now).
    pub disconnected: bool,
    /// Its captures given up.
    pub ended: usize,
}

/// Cuts host `vm_id`'s agent off (`vm extension delete`, a scale set's
/// extension deleted or its instance removed): its credentials revoked, its
/// channel closed, its captures not yet ended given up (`AgentStopped`,
/// `why`): it can no longer report them.
pub(crate) async fn cut_off(state: &AppState, vm_id: &str, why: &str) -> Result<CutOff, StoreError> {
    let revoked = state.store.revoke_agent_credentials(vm_id, now_ms()).await?;
    let disconnected = state.hub.disconnect(vm_id).await;
    let ended = give_up_captures_of(state, vm_id, why).await?;
    Ok(CutOff {
        revoked,
        disconnected,
        ended,
    })
}

/// Gives up the captures of host `vm_id` not yet ended (its agent was cut
/// off): `Error` with `AgentStopped`; how many.
async fn give_up_captures_of(state: &AppState, vm_id: &str, message: &str) -> Result<usize, StoreError> {
    let mut ended = 0;
    for record in state.store.captures_for_target(vm_id).await? {
        if record.status.is_active() && give_up(state, record, Some(AGENT_LOST), message).await? {
            ended += 1;
        }
    }
    Ok(ended)
}

/// Gives a capture up: marks a capture its agent lost as `Error` with `AgentStopped` (and
/// `stop_reason`, when given), and fails its operations still in progress;
/// whether it did (false: another writer settled the capture first).
pub(crate) async fn give_up(
    state: &AppState,
    record: CaptureRecord,
    stop_reason: Option<&str>,
    message: &str,
) -> Result<bool, StoreError> {
    let given_up = state.store.modify_capture(&record.id, |record| {
        if !record.status.is_active() {
            // Another writer settled it first.
            return Change::Keep(());
        }
        record.status = CaptureStatus::Error;
        if let Some(reason) = stop_reason {
            record.stop_reason = Some(reason.to_owned());
        }
        record.errors_json = json!([PcError::AgentStopped]).to_string();
        record.etag = format!("W/\"{}\"", new_guid());
        record.updated_ms = now_ms();
        Change::Write(())
    });
    match given_up.await {
        Ok(Some(Modified { written: true, .. })) => {}
        // Gone, settled by someone else, or still changing: not ours to end.
        Ok(_) | Err(StoreError::Stale(_)) => return Ok(false),
        Err(error) => return Err(error),
    }
    tracing::warn!(capture = %record.id, "{message}");
    let error = json!({"error": {"code": "AgentStopped", "message": message}}).to_string();
    for kind in [OperationKind::Create, OperationKind::Stop] {
        state
            .store
            .finish_operations_of(&record.id, kind, OperationStatus::Failed, Some(&error), now_ms())
            .await?;
    }
    if let Some(parent) = &record.parent_key {
        fleet::settle(state, parent).await?;
    }
    Ok(true)
}

/// What a report found, decided on the stored capture.
enum Found {
    /// Deleted, or created again, while the run went on.
    AnotherRun,
    AnotherHost,
    /// Ended already while its agent still runs it.
    Ended,
    /// Applied: the status and upload state it had before.
    Applied {
        before: CaptureStatus,
        before_upload: Option<UploadState>,
    },
}

/// A report read, ready to be applied to the capture it names.
struct Report<'a> {
    vm: &'a str,
    report: &'a CaptureReport,
    capture: &'a str,
    created_ms: i64,
    reported: CaptureStatus,
    stats_json: String,
}

impl<'a> Report<'a> {
    /// `None` (logged) for a report on something that is not a capture run.
    fn read(vm: &'a str, report: &'a CaptureReport) -> Option<Self> {
        let Some((capture, created_ms)) = parse_run_id(&report.capture_id) else {
            tracing::warn!(vm, run = %report.capture_id, "agent reported on something that is not a capture run; ignored");
            return None;
        };
        let reported = match report.state {
            AgentCaptureState::Running => CaptureStatus::Running,
            AgentCaptureState::Stopped => CaptureStatus::Stopped,
            AgentCaptureState::Error => CaptureStatus::Error,
        };
        let stats = NetwatchCaptureStatus {
            packets_captured: report.stats.packets_captured,
            bytes_captured: report.stats.bytes_captured,
            kernel_drops: report.stats.kernel_drops,
            file_size_in_bytes: report.stats.file_size_in_bytes,
            upload_state: report.upload,
            // The field's rule holds whatever the agent's version: 100 when
            // Succeeded and only then.
            upload_percent: report
                .upload
                .zip(report.upload_progress.as_ref())
                .map(|(state, progress)| state.percent(u64::from(progress.percent), 100)),
            upload_message: report.upload_progress.as_ref().and_then(|p| p.message.clone()),
            files_pending: report.upload_progress.as_ref().map(|p| p.files_pending),
            error_message: report.message.clone(),
            agent_last_seen: None,
            files: vec![],
            summary: None,
            instances: vec![],
            alert: report.stats.covered_from_ms.map(|ms| AlertCoverage {
                covered_from_ms: Some(ms),
                ..AlertCoverage::default()
            }),
        };
        Some(Self {
            vm,
            report,
            capture,
            created_ms,
            reported,
            stats_json: serde_json::to_string(&stats).expect("counters always serialize"),
        })
    }

    /// What the report does to `record` as stored (module doc, "Rules a report follows").
    fn decide(&self, record: &mut CaptureRecord) -> Change<Found> {
        let report = self.report;
        if record.created_ms != self.created_ms {
            return Change::Keep(Found::AnotherRun);
        }
        if !record.target_id.eq_ignore_ascii_case(self.vm) {
            return Change::Keep(Found::AnotherHost);
        }
        let before = record.status;
        if !before.is_active() && report.state == AgentCaptureState::Running {
            return Change::Keep(Found::Ended);
        }
        let before_upload = serde_json::from_str::<NetwatchCaptureStatus>(&record.stats_json)
            .ok()
            .and_then(|stats| stats.upload_state);
        if before == CaptureStatus::Error {
            // Error is final (the agent was given up, or the capture failed):
            // a later report of the run, such as an agent back from the dead
            // with the file it recovered, brings its counters, upload and
            // errors, not a new status or stop reason.
            let mut errors: Vec<PcError> = serde_json::from_str(&record.errors_json).unwrap_or_default();
            for error in &report.errors {
                if !errors.contains(error) {
                    errors.push(*error);
                }
            }
            record.errors_json = serde_json::to_string(&errors).expect("error lists always serialize");
        } else {
            record.status = self.reported;
            if let Some(reason) = &report.stop_reason {
                record.stop_reason = Some(reason.as_str().to_owned());
            }
            record.errors_json = serde_json::to_string(&report.errors).expect("error lists always serialize");
        }
        record.started_ms = report.started_ms.or(record.started_ms);
        record.stats_json.clone_from(&self.stats_json);
        if before != record.status {
            record.etag = format!("W/\"{}\"", new_guid());
        }
        record.updated_ms = now_ms();
        Change::Write(Found::Applied { before, before_upload })
    }

    /// What follows the decision once it is stored: the agent told to stop
    /// a run nobody wants, the operations the change settles; and the key of
    /// the capture over many hosts whose operations the caller must settle
    /// ([`fleet::settle`]), when the report was one host's and changed it.
    async fn follow_up(
        &self,
        state: &AppState,
        outcome: Result<Option<Modified<Found>>, StoreError>,
    ) -> Result<Option<String>, StoreError> {
        let (vm, report) = (self.vm, self.report);
        // The report came through this replica's channel of `vm`.
        let stop_run = || {
            state.hub.deliver(
                vm,
                ControllerMessage::Stop {
                    capture_id: report.capture_id.clone(),
                },
            );
        };
        let (record, before, before_upload) = match outcome {
            Ok(Some(Modified {
                record,
                value: Found::Applied { before, before_upload },
                ..
            })) => (record, before, before_upload),
            Ok(
                None
                | Some(Modified {
                    value: Found::AnotherRun,
                    ..
                }),
            ) => {
                // Nobody wants this run any more.
                if report.state == AgentCaptureState::Running {
                    stop_run();
                }
                return Ok(None);
            }
            Ok(Some(Modified {
                value: Found::AnotherHost,
                record,
                ..
            })) => {
                tracing::warn!(vm, capture = %record.id, "agent reported on a capture of another host; ignored");
                return Ok(None);
            }
            Ok(Some(Modified {
                value: Found::Ended, ..
            })) => {
                stop_run();
                return Ok(None);
            }
            Err(StoreError::Stale(_)) => {
                tracing::warn!(capture = %report.capture_id, "capture kept changing under an agent report; report dropped");
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        let status = record.status;
        if before != status {
            if record.parent_key.is_some() {
                // One host of many: the whole is what the log follows.
                tracing::debug!(capture = %record.id, from = %before, to = %status, "host's part changed state");
            } else {
                tracing::info!(capture = %record.id, from = %before, to = %status, "packet capture changed state");
                // A host's part has no create of its own: the whole's settles in fleet::settle.
                settle_create(state, &record, report).await?;
            }
        }
        // A stop is done once the file is stored, given up, or safe in the
        // agent's spool while storage is away (it uploads when it is back).
        let upload_over = matches!(
            report.upload,
            None | Some(UploadState::Succeeded | UploadState::Failed | UploadState::Retrying)
        );
        let mut settled = false;
        if report.state != AgentCaptureState::Running
            && upload_over
            && (before != status || before_upload != report.upload)
        {
            settled = state
                .store
                .finish_operations_of(
                    &record.id,
                    OperationKind::Stop,
                    OperationStatus::Succeeded,
                    None,
                    now_ms(),
                )
                .await?
                > 0;
        }
        Ok(record.parent_key.filter(|_| before != status || settled))
    }
}

/// Applies one agent report to the capture it names (public for tests).
pub async fn apply_report(state: &AppState, vm: &str, report: &CaptureReport) -> Result<(), StoreError> {
    let Some(read) = Report::read(vm, report) else {
        return Ok(());
    };
    let outcome = state
        .store
        .modify_capture(read.capture, |record| read.decide(record))
        .await;
    if let Some(parent) = read.follow_up(state, outcome).await? {
        fleet::settle(state, &parent).await?;
    }
    Ok(())
}

/// Applies reports of many agents, as [`apply_report`] applies each, but
/// decided and written in one transaction: a thousand hosts reporting at once
/// cost one commit (one `fsync`), not a thousand. A report whose capture
/// another writer changed meanwhile is applied again alone. One result per
/// report, in order.
pub(crate) async fn apply_reports(
    state: &AppState,
    reports: &[(String, CaptureReport)],
) -> Vec<Result<(), StoreError>> {
    let read: Vec<Option<Report<'_>>> = reports.iter().map(|(vm, report)| Report::read(vm, report)).collect();
    let wanted: Vec<&Report<'_>> = read.iter().flatten().collect();
    let ids: Vec<&str> = wanted.iter().map(|r| r.capture).collect();
    let outcomes = match state
        .store
        .modify_captures(&ids, |i, record| wanted[i].decide(record))
        .await
    {
        Ok(outcomes) => outcomes,
        Err(error) => {
            // The batch did not commit: each on its own, as ever.
            tracing::debug!(error = %error, reports = reports.len(), "a batch of reports failed; applying each alone");
            let mut results = Vec::with_capacity(reports.len());
            for (vm, report) in reports {
                results.push(apply_report(state, vm, report).await);
            }
            return results;
        }
    };
    let mut outcomes = outcomes.into_iter();
    let mut results = Vec::with_capacity(reports.len());
    // Captures over many hosts to settle: once each, after the whole batch
    // (a thousand hosts starting at once settle their capture once).
    let mut parents: Vec<String> = Vec::new();
    for (read, (vm, report)) in read.iter().zip(reports) {
        let Some(read) = read else {
            results.push(Ok(()));
            continue;
        };
        let result = match outcomes.next() {
            Some(Err(StoreError::Stale(_))) | None => apply_report(state, vm, report).await,
            Some(outcome) => read.follow_up(state, outcome).await.map(|parent| {
                if let Some(parent) = parent
                    && !parents.contains(&parent)
                {
                    parents.push(parent);
                }
            }),
        };
        results.push(result);
    }
    for parent in parents {
        if let Err(error) = fleet::settle(state, &parent).await {
            tracing::warn!(capture = %parent, error = %error, "a capture over many hosts could not be settled");
        }
    }
    results
}

/// Ends the capture's create operation: Succeeded once the agent ran it,
/// Failed (with the agent's explanation) when it could not start it.
async fn settle_create(state: &AppState, record: &CaptureRecord, report: &CaptureReport) -> Result<(), StoreError> {
    let (status, error) = match report.state {
        AgentCaptureState::Running | AgentCaptureState::Stopped => (OperationStatus::Succeeded, None),
        AgentCaptureState::Error => {
            let code = report.errors.first().copied().unwrap_or(PcError::CaptureFailed);
            let message = report
                .message
                .clone()
                .unwrap_or_else(|| "the agent could not start the capture".to_owned());
            let body = json!({"error": {"code": code, "message": message}});
            (OperationStatus::Failed, Some(body.to_string()))
        }
    };
    let now = now_ms();
    let ended = state
        .store
        .finish_operations_of(&record.id, OperationKind::Create, status, error.as_deref(), now)
        .await?;
    if ended > 0 && report.state == AgentCaptureState::Running {
        let waited_ms = u64::try_from(now - record.created_ms).unwrap_or(0);
        #[allow(clippy::cast_precision_loss, reason = "milliseconds as seconds for a histogram")]
        state.metrics.create_to_running.observe(waited_ms as f64 / 1000.0);
    }
    Ok(())
}
