//! Packet captures under a network watcher (api-contract.md §1.2, §1.4) and the
//! operation status resource their create points at.
//!
//! Each handler: path names and `api-version` parsed, the body parsed and
//! validated in full (`netwatch_api`), the store read, and only then written,
//! so a request that fails changes nothing. ARM JSON out.
//!
//! Status codes: PUT 201 (never 200: clients.md §5.4); GET and list 200;
//! queryStatus 200 with the status; stop 200 `{}` or 202 + `Location`; DELETE 204.
//!
//! As fast as the work (issue 15): the PUT waits up to [`CREATE_WAIT`] for
//! the agent to report the capture Running and then answers 201 with the
//! final state and no monitor (`provisioningState: Succeeded`, no
//! `Azure-AsyncOperation`: az and Azure's SDKs then finish without a poll,
//! clients.md §5.4); a stop waits up to [`STOP_WAIT`] for the capture to end
//! with its file stored and answers 200. When the agent is slower (or away,
//! or the work failed), the answer is today's: 201 + `Azure-AsyncOperation`
//! or 202 + `Location`, with `Retry-After`, and the monitor says the rest.
//!
//! *Our choices* where the contract is silent:
//! - the target must be a VM whose agent registered, in the watcher's
//!   location (as Azure requires the same region);
//! - `NetworkWatcher_{location}` in `NetworkWatcherRG` is created by the first
//!   capture PUT under it when its location is served and has no watcher
//!   (DESIGN §2, "created on first use"); any other missing watcher is a 404;
//! - a PUT over a capture that is Stopped or Error replaces it; over one
//!   NotStarted or Running it is a 409;
//! - `storageLocation.storageId` must name a configured storage account; the
//!   server sets `storagePath` to where the file will be downloadable;
//! - the capture is pushed to the target's agent at once; the create's
//!   operation stays InProgress until the agent has started it (Succeeded) or
//!   could not (Failed, with the agent's reason), so `begin_create().result()`
//!   returns a capture that runs; an agent that is not connected gets it when
//!   it connects, and after [`START_TIMEOUT_MS`] the operation reads Failed;
//! - stop of a Running capture whose agent is connected is pushed to it and
//!   answers 202 + `Location`; the monitor completes when the agent reports
//!   the capture Stopped and its upload over. A NotStarted capture, or one
//!   whose agent is away, is marked Stopped with `ManualStop` at once (the
//!   agent is told when it is back); stopping a Stopped/Error capture is a no-op;
//! - DELETE of a missing capture under an existing watcher is 204 (ARM's
//!   idempotent delete); a running one is stopped first; it never touches
//!   capture files.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use netwatch_api::agent::{ControllerMessage, run_id};
use netwatch_api::error::{ApiError, ErrorCode};
use netwatch_api::packet_capture::{
    AlertCoverage, FleetSummary, InstanceStatus, NetwatchCaptureStatus, PacketCapture, PacketCaptureListResult,
    PacketCaptureQueryStatusResult, PacketCaptureResult, PacketCaptureResultProperties, PcError, PcStatus,
    ProvisioningState, StopReason, StoredFile, UploadState, parse_packet_capture,
};
use netwatch_api::resource::{Location, NETWORK_WATCHER_RESOURCE_GROUP, ResourceId, ResourceName};
use serde_json::{Value, json};

use super::network_watchers::{WATCHER_PATH, watcher_id};
use super::{
    AZURE_ASYNC_OPERATION, AppState, ArmBody, ArmVersion, HttpError, base_url, header_value, now_ms, retry_after,
    rfc3339, subscription,
};
use crate::auth::VALIDATE_CAPTURE_PATH;
use crate::lifecycle::{self, Created, NewCapture, Stopped};
use crate::store::{
    CaptureFileRecord, CaptureRecord, CaptureStatus, OperationKind, OperationRecord, OperationStatus, WatcherRecord,
};

/// How long a create waits for the agent to start the capture before its
/// operation reads Failed (the capture stays, and starts when the agent is back).
pub(crate) const START_TIMEOUT_MS: i64 = 60_000;

/// A packet capture's path (its watcher's, then `packetcaptures/{capture}`).
pub(super) const CAPTURE_PATH: &str = concat!(
    "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.network/networkwatchers/{watcher}",
    "/packetcaptures/{capture}"
);

pub(super) fn routes() -> Router<AppState> {
    let captures = format!("{WATCHER_PATH}/packetcaptures");
    let capture = CAPTURE_PATH.to_owned();
    Router::new()
        .route(&captures, get(list))
        .route(&capture, get(show).put(create).delete(delete))
        .route(&format!("{capture}/querystatus"), post(query_status))
        .route(&format!("{capture}/stop"), post(stop))
        .route(VALIDATE_CAPTURE_PATH, post(validate))
        .route(
            "/subscriptions/{subscription}/providers/microsoft.network/locations/{location}/operations/{operation}",
            get(operation_status),
        )
        .route(
            "/subscriptions/{subscription}/providers/microsoft.network/locations/{location}/operationresults/{operation}",
            get(operation_result),
        )
}

pub(super) type CapturePath = (String, String, String, String);

/// The capture id the path names, and its watcher's stored record.
async fn find_watcher(state: &AppState, (sub, group, watcher): (&str, &str, &str)) -> Result<WatcherRecord, HttpError> {
    let (.., id) = watcher_id(state, (sub, group, watcher))?;
    state
        .store
        .get_watcher(&id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found(&id).into())
}

fn capture_id(state: &AppState, path: &CapturePath) -> Result<ResourceId, HttpError> {
    let (sub, group, watcher, ..) = watcher_id(state, (&path.0, &path.1, &path.2))?;
    let capture = ResourceName::parse("packetCaptureName", &path.3)?;
    Ok(ResourceId::packet_capture(&sub, &group, &watcher, &capture))
}

/// The capture the path names, under a watcher that exists.
pub(super) async fn find_capture(state: &AppState, path: &CapturePath) -> Result<CaptureRecord, HttpError> {
    let id = capture_id(state, path)?;
    find_watcher(state, (&path.0, &path.1, &path.2)).await?;
    state
        .store
        .get_capture(&id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found(&id).into())
}

/// A stored capture as `PacketCaptureResult`.
pub(super) fn result_of(record: &CaptureRecord) -> Result<PacketCaptureResult, HttpError> {
    let request: PacketCapture = serde_json::from_str(&record.request_json)
        .map_err(|err| ApiError::internal(format!("stored capture {} is unreadable", record.id), err))?;
    Ok(PacketCaptureResult {
        name: record.id.rsplit('/').next().unwrap_or_default().to_owned(),
        id: record.id.clone(),
        etag: Some(record.etag.clone()),
        properties: PacketCaptureResultProperties {
            provisioning_state: ProvisioningState::Succeeded,
            parameters: request.properties,
        },
    })
}

async fn list(
    State(state): State<AppState>,
    Path((sub, group, watcher)): Path<(String, String, String)>,
    _version: ArmVersion,
) -> Result<Json<PacketCaptureListResult>, HttpError> {
    let watcher = find_watcher(&state, (&sub, &group, &watcher)).await?;
    let records = state.store.list_captures(&watcher.id).await?;
    let value = records.iter().map(result_of).collect::<Result<_, _>>()?;
    Ok(Json(PacketCaptureListResult { value, next_link: None }))
}

async fn show(
    State(state): State<AppState>,
    Path(path): Path<CapturePath>,
    _version: ArmVersion,
) -> Result<Json<PacketCaptureResult>, HttpError> {
    let record = find_capture(&state, &path).await?;
    Ok(Json(result_of(&record)?))
}

/// The watcher a create goes under: the stored one, or `NetworkWatcher_{location}`
/// to create on first use (module doc).
async fn watcher_for_create(state: &AppState, path: &CapturePath) -> Result<(WatcherRecord, bool), HttpError> {
    let (sub, group, name, id) = watcher_id(state, (&path.0, &path.1, &path.2))?;
    if let Some(watcher) = state.store.get_watcher(&id.to_string()).await? {
        return Ok((watcher, false));
    }
    let location = Location::from_network_watcher_name(&name)
        .filter(|location| state.config.location(location).is_some())
        .filter(|_| group.as_str().eq_ignore_ascii_case(NETWORK_WATCHER_RESOURCE_GROUP));
    let Some(location) = location else {
        return Err(ApiError::not_found(&id).into());
    };
    let watchers = state.store.list_watchers(sub.as_str()).await?;
    if watchers.iter().any(|w| w.location == location.as_str()) {
        return Err(ApiError::not_found(&id).into());
    }
    let id = ResourceId::network_watcher_for(&sub, &location);
    let record = WatcherRecord {
        id: id.to_string(),
        subscription: sub.to_string(),
        location: location.to_string(),
        created_ms: now_ms(),
    };
    Ok((record, true))
}

/// `PUT …/packetCaptures/{name}`: 201 with the capture and its monitor link.
async fn create(
    State(state): State<AppState>,
    Path(path): Path<CapturePath>,
    ArmVersion(version): ArmVersion,
    headers: HeaderMap,
    uri: Uri,
    ArmBody(body): ArmBody,
) -> Result<Response, HttpError> {
    let id = capture_id(&state, &path)?;
    let base = base_url(&state.config, &headers, &uri)?;
    let capture = lifecycle::compile_expressions(parse_packet_capture(&body)?.validate()?).await?;
    let (watcher, new_watcher) = watcher_for_create(&state, &path).await?;

    let Created { record, operation } = lifecycle::create(
        &state,
        NewCapture {
            id: &id,
            capture: &capture,
            watcher: &watcher,
            new_watcher,
            base: &base,
        },
    )
    .await?;

    // The agent (or every host of a fleet) usually reports Running within
    // tens of milliseconds: answered then, final, without a monitor to poll.
    if lifecycle::fleet::is_fleet(&record) || state.hub.is_connected(&record.target_id).await {
        let waited = state.store.wait_operation(&operation.id, CREATE_WAIT).await?;
        if waited.is_some_and(|operation| operation.status == OperationStatus::Succeeded) {
            let record = state.store.get_capture(&record.id).await?.unwrap_or(record);
            let mut body = result_of(&record)?;
            body.properties.provisioning_state = ProvisioningState::Succeeded;
            return Ok((StatusCode::CREATED, Json(body)).into_response());
        }
    }
    let monitor = format!(
        "{base}/subscriptions/{}/providers/Microsoft.Network/locations/{}/operations/{}?api-version={version}",
        id.subscription(),
        watcher.location,
        operation.id
    );
    let headers = [
        (
            header::HeaderName::from_static(AZURE_ASYNC_OPERATION),
            header_value(&monitor)?,
        ),
        retry_after(),
    ];
    let mut body = result_of(&record)?;
    body.properties.provisioning_state = ProvisioningState::Succeeded;
    Ok((StatusCode::CREATED, headers, Json(body)).into_response())
}

/// `POST /netwatch/v1/validate/packetCapture[?name=N]`: a capture's PUT body
/// (and the name its path would carry) checked as the PUT checks them,
/// nothing created: 200 with the request as it would be stored (defaults
/// applied), or the PUT's own 400. The console checks its form with it as
/// the user types. (What depends on the store, the target's agent and the
/// storage account, is the PUT's to say.)
async fn validate(Query(query): Query<ValidateQuery>, ArmBody(body): ArmBody) -> Result<Json<Value>, HttpError> {
    if let Some(name) = &query.name {
        ResourceName::parse("packetCaptureName", name)?;
    }
    let capture = lifecycle::compile_expressions(parse_packet_capture(&body)?.validate()?).await?;
    Ok(Json(json!({ "properties": capture.to_parameters() })))
}

/// The validate route's query: the capture's name, when it is to be checked too.
#[derive(Debug, serde::Deserialize)]
struct ValidateQuery {
    name: Option<String>,
}

/// How long a capture PUT waits for the agent to report the capture Running
/// before it answers with a monitor instead: an agent starts one in tens of
/// milliseconds.
pub const CREATE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a stop waits for the capture to end and its file to be stored
/// before it answers with a monitor instead.
pub const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `POST …/queryStatus`: 200 with what the store knows; for a capture over
/// many hosts, Azure's fields rolled up and each host under `netwatch.instances`.
async fn query_status(
    State(state): State<AppState>,
    Path(path): Path<CapturePath>,
    _version: ArmVersion,
) -> Result<Json<PacketCaptureQueryStatusResult>, HttpError> {
    let record = find_capture(&state, &path).await?;
    Ok(Json(status_of(&state, &record).await?))
}

/// A capture's status as queryStatus answers it.
pub(super) async fn status_of(
    state: &AppState,
    record: &CaptureRecord,
) -> Result<PacketCaptureQueryStatusResult, HttpError> {
    if lifecycle::fleet::is_fleet(record) {
        return fleet_status(state, record).await;
    }
    let last_seen = state
        .store
        .get_vm(&record.target_id)
        .await?
        .and_then(|vm| vm.last_seen_ms);
    let files = state.store.capture_files(&record.id, record.created_ms).await?;
    let (status, errors, netwatch) = host_status(record, last_seen, &files)?;
    Ok(PacketCaptureQueryStatusResult {
        name: record.id.rsplit('/').next().unwrap_or_default().to_owned(),
        id: record.id.clone(),
        capture_start_time: record.started_ms.map(rfc3339),
        packet_capture_status: status,
        stop_reason: record.stop_reason.clone().map(StopReason::from),
        packet_capture_error: errors,
        netwatch,
    })
}

fn pc_status(status: CaptureStatus) -> PcStatus {
    match status {
        CaptureStatus::NotStarted => PcStatus::NotStarted,
        CaptureStatus::Running => PcStatus::Running,
        CaptureStatus::Stopped => PcStatus::Stopped,
        CaptureStatus::Error => PcStatus::Error,
    }
}

/// One host's capture as queryStatus shows it: status, errors, and netwatch's
/// view (its counters, when its agent was last heard from, its stored files).
fn host_status(
    record: &CaptureRecord,
    last_seen_ms: Option<i64>,
    files: &[CaptureFileRecord],
) -> Result<(PcStatus, Vec<PcError>, Option<NetwatchCaptureStatus>), HttpError> {
    let errors: Vec<PcError> = serde_json::from_str(&record.errors_json)
        .map_err(|err| ApiError::internal(format!("stored errors of capture {} are unreadable", record.id), err))?;
    let mut netwatch = match record.stats_json.trim() {
        "" | "{}" => None,
        stats => serde_json::from_str::<NetwatchCaptureStatus>(stats).ok(),
    };
    // When the target's agent was last heard from: a Running capture whose
    // agent went quiet long ago is one to worry about.
    if let Some(seen) = last_seen_ms {
        netwatch
            .get_or_insert_with(NetwatchCaptureStatus::default)
            .agent_last_seen = Some(rfc3339(seen));
    }
    if !files.is_empty() {
        netwatch.get_or_insert_with(NetwatchCaptureStatus::default).files = files
            .iter()
            .map(|file| StoredFile {
                storage_path: file.storage_path.clone(),
                size_in_bytes: u64::try_from(file.size).unwrap_or(0),
                sha256: file.sha256.clone(),
            })
            .collect();
    }
    if let Some(coverage) = alert_coverage(record, netwatch.as_ref().and_then(|n| n.alert.as_ref()))? {
        netwatch.get_or_insert_with(NetwatchCaptureStatus::default).alert = Some(coverage);
    }
    Ok((pc_status(record.status), errors, netwatch))
}

/// What a capture around an alert covers: the alert (from its request) and,
/// once its host said, how long before the alert its file starts (from the
/// flight recorder, or its start when it had none).
fn alert_coverage(record: &CaptureRecord, said: Option<&AlertCoverage>) -> Result<Option<AlertCoverage>, HttpError> {
    let request: PacketCapture = serde_json::from_str(&record.request_json)
        .map_err(|err| ApiError::internal(format!("stored capture {} is unreadable", record.id), err))?;
    let Some(window) = request.validate().ok().and_then(|valid| valid.alert().cloned()) else {
        return Ok(None);
    };
    let covered_from_ms = said.and_then(|s| s.covered_from_ms).or(record.started_ms);
    let echo = window.to_parameters();
    Ok(Some(AlertCoverage {
        trigger: window.trigger.clone(),
        alert_id: window.alert_id.clone(),
        alert_rule: window.alert_rule.clone(),
        fired_date_time: Some(echo.fired_date_time),
        seconds_before_requested: Some(window.seconds_before),
        // Whole seconds, rounded down: never more than the file covers.
        seconds_before_covered: covered_from_ms.map(|from| (window.fired_ms - from).div_euclid(1000)),
        covered_from: covered_from_ms.map(rfc3339),
        covered_from_ms,
    }))
}

/// queryStatus of a capture over many hosts: `packetCaptureStatus` rolled up
/// (Running while any host may capture, Stopped once all ended), the most
/// common stop reason, the union of errors, counters summed, and each host
/// under `netwatch.instances` with a summary.
async fn fleet_status(state: &AppState, record: &CaptureRecord) -> Result<PacketCaptureQueryStatusResult, HttpError> {
    let parts = lifecycle::fleet::parts(state, &record.id).await?;
    let status = lifecycle::fleet::rolled_status(record, parts.iter().map(|part| &part.record));
    let mut total = NetwatchCaptureStatus::default();
    let mut summary = FleetSummary::default();
    let mut errors: Vec<PcError> = Vec::new();
    let mut reasons: Vec<(String, u32)> = Vec::new();
    let mut uploads = Vec::new();
    for lifecycle::fleet::Part {
        record: part,
        vm,
        files,
    } in &parts
    {
        let vm = vm.as_ref();
        let (part_status, part_errors, netwatch) = host_status(part, vm.and_then(|vm| vm.last_seen_ms), files)?;
        let netwatch = netwatch.unwrap_or_default();
        total.packets_captured += netwatch.packets_captured;
        total.bytes_captured += netwatch.bytes_captured;
        total.kernel_drops += netwatch.kernel_drops;
        total.file_size_in_bytes += netwatch.file_size_in_bytes;
        uploads.extend(netwatch.upload_state);
        for error in &part_errors {
            if !errors.contains(error) {
                errors.push(*error);
            }
        }
        let instance = part.instance.clone().unwrap_or_default();
        summary.total += 1;
        match part.status {
            CaptureStatus::NotStarted => summary.not_started += 1,
            CaptureStatus::Running => summary.running += 1,
            CaptureStatus::Stopped => summary.stopped += 1,
            CaptureStatus::Error => {
                summary.failed += 1;
                let why = netwatch
                    .error_message
                    .clone()
                    .or_else(|| part.stop_reason.clone())
                    .unwrap_or_else(|| "no reason given".to_owned());
                let codes: Vec<String> = part_errors.iter().map(|error| format!("{error:?}")).collect();
                summary
                    .failures
                    .push(format!("{instance}: {}: {why}", codes.join(", ")));
            }
        }
        if let Some(reason) = &part.stop_reason {
            match reasons.iter_mut().find(|(r, _)| r == reason) {
                Some((_, n)) => *n += 1,
                None => reasons.push((reason.clone(), 1)),
            }
        }
        let host = vm.and_then(|vm| {
            serde_json::from_str::<Value>(&vm.agent_json)
                .ok()
                .and_then(|facts| facts.get("hostname").and_then(Value::as_str).map(str::to_owned))
        });
        let storage_path = serde_json::from_str::<PacketCapture>(&part.request_json)
            .ok()
            .and_then(|request| request.properties.storage_location.storage_path);
        total.instances.push(InstanceStatus {
            instance_id: instance,
            vm_id: part.target_id.clone(),
            host,
            packet_capture_status: part_status,
            capture_start_time: part.started_ms.map(rfc3339),
            stop_reason: part.stop_reason.clone().map(StopReason::from),
            packet_capture_error: part_errors,
            storage_path,
            status: Box::new(netwatch),
        });
    }
    total.upload_state = [
        UploadState::Failed,
        UploadState::Retrying,
        UploadState::Uploading,
        UploadState::Pending,
        UploadState::Succeeded,
    ]
    .into_iter()
    .find(|state| uploads.contains(state));
    summary.text = format!(
        "running {}, stopped {}, failed {}{}",
        summary.running,
        summary.stopped,
        summary.failed,
        if summary.not_started > 0 {
            format!(", not started {}", summary.not_started)
        } else {
            String::new()
        }
    );
    if !summary.failures.is_empty() {
        summary.text.push_str(": ");
        summary.text.push_str(&summary.failures.join("; "));
    }
    total.summary = Some(summary);
    // The whole stopped for the reason most of its hosts did (a client's
    // stop for all of them when it stopped the whole).
    let stop_reason = if status.is_active() {
        None
    } else {
        record
            .stop_reason
            .clone()
            .or_else(|| reasons.iter().max_by_key(|(_, n)| *n).map(|(reason, _)| reason.clone()))
    };
    Ok(PacketCaptureQueryStatusResult {
        name: record.id.rsplit('/').next().unwrap_or_default().to_owned(),
        id: record.id.clone(),
        capture_start_time: parts.iter().filter_map(|p| p.record.started_ms).min().map(rfc3339),
        packet_capture_status: pc_status(status),
        stop_reason: stop_reason.map(StopReason::from),
        packet_capture_error: errors,
        netwatch: Some(total),
    })
}

/// `POST …/stop`: 200 `{}` once the capture ended and its file is stored (or
/// when there is nothing to wait for); 202 + `Location` when that takes
/// longer than [`STOP_WAIT`] (module doc).
async fn stop(
    State(state): State<AppState>,
    Path(path): Path<CapturePath>,
    ArmVersion(version): ArmVersion,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HttpError> {
    let base = base_url(&state.config, &headers, &uri)?;
    let record = find_capture(&state, &path).await?;
    match lifecycle::stop(&state, &record).await? {
        Stopped::Asked { operation } => {
            // Answered once the capture ended and its file is stored, when
            // that comes soon; otherwise the monitor follows it.
            let waited = state.store.wait_operation(&operation, STOP_WAIT).await?;
            if waited.is_some_and(|operation| operation.status == OperationStatus::Succeeded) {
                return Ok(Json(json!({})).into_response());
            }
            let watcher = find_watcher(&state, (&path.0, &path.1, &path.2)).await?;
            let monitor = format!(
                "{base}/subscriptions/{}/providers/Microsoft.Network/locations/{}/operationResults/{operation}?api-version={version}",
                path.0, watcher.location
            );
            let headers = [(header::LOCATION, header_value(&monitor)?), retry_after()];
            return Ok((StatusCode::ACCEPTED, headers, Json(json!({}))).into_response());
        }
        Stopped::Now | Stopped::Already => return Ok(Json(json!({})).into_response()),
        // Deleted meanwhile: answered as a capture not found.
        Stopped::Gone => {
            find_capture(&state, &path).await?;
        }
        Stopped::KeptChanging => {}
    }
    let message = "the packet capture keeps changing under this request; try again";
    Err(ApiError::conflict(message).into())
}

/// `DELETE …/packetCaptures/{name}`: 204, whether it existed or not. A capture
/// still running is stopped on its host first (its file is kept and uploaded).
async fn delete(
    State(state): State<AppState>,
    Path(path): Path<CapturePath>,
    _version: ArmVersion,
) -> Result<StatusCode, HttpError> {
    let id = capture_id(&state, &path)?;
    find_watcher(&state, (&path.0, &path.1, &path.2)).await?;
    if let Some(record) = state.store.get_capture(&id.to_string()).await? {
        if lifecycle::fleet::is_fleet(&record) {
            lifecycle::fleet::stop_parts(&state, &record).await?;
        } else if record.status.is_active() {
            let stop = ControllerMessage::Stop {
                capture_id: run_id(&record.id, record.created_ms),
            };
            state.hub.send(&record.target_id, stop).await;
        }
    }
    if state.store.delete_capture(&id.to_string()).await? {
        tracing::info!(capture = %id, "packet capture deleted");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// An operation's record, its status read as of now: a create still waiting
/// for its agent after [`START_TIMEOUT_MS`] reads Failed.
async fn find_operation(
    state: &AppState,
    (sub, location, operation): (&str, &str, &str),
) -> Result<OperationRecord, HttpError> {
    subscription(&state.config, sub)?;
    Location::parse("location", location)?;
    let Some(mut record) = state.store.get_operation(operation).await? else {
        let message = format!("operation {operation:?} was not found");
        return Err(ApiError::new(ErrorCode::NotFound, message).into());
    };
    if record.status == OperationStatus::InProgress
        && record.kind == OperationKind::Create
        && now_ms() - record.created_ms > START_TIMEOUT_MS
    {
        record.status = OperationStatus::Failed;
        let message = format!(
            "the target's agent did not start the capture within {} s: is it connected? \
             (the capture starts when it connects; queryStatus shows it)",
            START_TIMEOUT_MS / 1000
        );
        record.error_json = Some(json!({"error": {"code": "AgentStopped", "message": message}}).to_string());
    }
    Ok(record)
}

/// `GET …/locations/{location}/operationResults/{id}`: the `Location` monitor
/// of a stop: 202 + `Location` + `Retry-After` while in progress, then 200 `{}`
/// (or the operation's error).
async fn operation_result(
    State(state): State<AppState>,
    Path((sub, location, operation)): Path<(String, String, String)>,
    _version: ArmVersion,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HttpError> {
    let record = find_operation(&state, (&sub, &location, &operation)).await?;
    match record.status {
        OperationStatus::InProgress => {
            let base = base_url(&state.config, &headers, &uri)?;
            let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
            // The canonical spelling, not the lower-cased path routing saw.
            let again = format!(
                "{base}/subscriptions/{sub}/providers/Microsoft.Network/locations/{location}/operationResults/{operation}{query}"
            );
            let headers = [(header::LOCATION, header_value(&again)?), retry_after()];
            Ok((StatusCode::ACCEPTED, headers).into_response())
        }
        OperationStatus::Succeeded => Ok(Json(json!({})).into_response()),
        OperationStatus::Failed => {
            let error = record
                .error_json
                .as_deref()
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
                .unwrap_or_else(|| json!({"error": {"code": "InternalError", "message": "the operation failed"}}));
            Ok((StatusCode::INTERNAL_SERVER_ERROR, Json(error)).into_response())
        }
    }
}

/// `GET …/locations/{location}/operations/{id}`: `AzureAsyncOperationResult`,
/// always 200, with `Retry-After` while in progress.
async fn operation_status(
    State(state): State<AppState>,
    Path((sub, location, operation)): Path<(String, String, String)>,
    _version: ArmVersion,
) -> Result<Response, HttpError> {
    let record = find_operation(&state, (&sub, &location, &operation)).await?;
    let mut body = json!({ "name": record.id, "status": record.status.as_str() });
    if let Some(error) = record
        .error_json
        .as_deref()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    {
        // Stored as ARM's error body; the monitor shows its inner object.
        body["error"] = error.get("error").cloned().unwrap_or(error);
    }
    if record.status == OperationStatus::InProgress {
        Ok((StatusCode::OK, [retry_after()], Json(body)).into_response())
    } else {
        Ok((StatusCode::OK, Json(body)).into_response())
    }
}
