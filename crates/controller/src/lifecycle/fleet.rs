//! Captures over many hosts (issue 13, DESIGN §8 "Fleets"): a scale-set
//! target (`targetType: AzureVMSS`, `scope.include/exclude`).
//!
//! A capture over many hosts is a *parent* row, the one clients name (its
//! target the scale set), and one *part* per host in scope: a capture row of
//! its own (`parent_key` the parent's key, `instance` its instance id, its
//! target the host, its `storagePath` Azure's path for the instance), run by
//! that host's agent exactly as a VM's capture is: the same reports, limits
//! (per host, Azure's semantics), uploads, files, give-ups. What this module
//! adds is what is about the whole:
//! - which hosts a create covers ([`hosts`]) and their parts ([`part_record`]);
//! - the rolled-up status ([`rolled_status`], [`status_of`]): `NotStarted`
//!   until a host starts, `Running` while any host may still capture,
//!   `Stopped` once all ended (`Error` when every host failed);
//! - the parent's operations ([`settle`]): the create succeeds once every
//!   connected host has started or failed and at least one runs (a host that
//!   is away starts when it connects, and does not hold the create up); a
//!   stop succeeds once every host ended and its upload is over;
//! - stop ([`stop`]) and delete ([`stop_parts`]) act on every host;
//! - a host that joins the scale set while a capture runs, and falls in its
//!   scope, joins it ([`join`]) for the time the capture has left.
//!
//! The parent row's own `status` says only whether a client stopped it
//! (`Stopped`); everything else is read from its parts.

use netwatch_api::agent::{ControllerMessage, run_id};
use std::collections::BTreeMap;

use netwatch_api::packet_capture::{HostSelector, PacketCapture, PacketCaptureParameters, ValidatedCapture};
use netwatch_api::resource::{ResourceId, ResourceKind, ResourceName};

use super::{CreateError, Stopped, new_record, push_start};
use crate::app::{AppState, new_guid};
use crate::clock::now_ms;
use crate::store::{
    CaptureFileRecord, CaptureRecord, CaptureStatus, Change, OperationKind, OperationStatus, ScaleSetRecord,
    StoreError, VmRecord,
};

/// Whether `record` is the parent of a capture over many hosts: a scale
/// set's, or one whose hosts a selector chose (it targets itself).
pub(crate) fn is_fleet(record: &CaptureRecord) -> bool {
    record.parent_key.is_none()
        && (record.target_id.eq_ignore_ascii_case(&record.id)
            || ResourceId::parse("target", &record.target_id).is_ok_and(|id| id.kind() == ResourceKind::ScaleSet))
}

/// The field of `netwatch.targets`, for messages.
const HOSTS: &str = "properties.netwatch.targets";

/// A host's tags: its scale set's (for an instance), then its own over them.
pub(crate) async fn host_tags(state: &AppState, vm: &VmRecord) -> Result<BTreeMap<String, String>, StoreError> {
    let mut tags = BTreeMap::new();
    if let Some((set, _)) = instance_of(&vm.id)
        && let Some(set) = state.store.get_scale_set(&set.to_string()).await?
    {
        tags.extend(serde_json::from_str::<BTreeMap<String, String>>(&set.tags_json).unwrap_or_default());
    }
    tags.extend(serde_json::from_str::<BTreeMap<String, String>>(&vm.tags_json).unwrap_or_default());
    Ok(tags)
}

/// What a host is called among a capture's hosts chosen by a selector: its
/// VM name (`{vmss}_{n}` for a scale set's instance).
fn host_label(vm: &VmRecord) -> String {
    match instance_of(&vm.id) {
        Some((set, instance)) => instance_name(set.name(), instance),
        None => ResourceId::parse("vmId", &vm.id).map_or_else(|_| vm.id.clone(), |id| id.name().to_string()),
    }
}

/// The hosts `selector` chooses, all in `location`: a 400 (nothing written)
/// naming the VM that is not registered or is elsewhere, or saying that the
/// tags choose no host.
pub(crate) async fn chosen_hosts(
    state: &AppState,
    selector: &HostSelector,
    location: &str,
) -> Result<Vec<(String, VmRecord)>, CreateError> {
    let mut hosts = Vec::new();
    match selector {
        HostSelector::Vms(ids) => {
            for (index, id) in ids.iter().enumerate() {
                let field = format!("{HOSTS}.vms[{index}]");
                let Some(vm) = state.store.get_vm(&id.to_string()).await? else {
                    let message = format!(
                        "{field} {id} is not registered: no netwatch agent runs on it (`netwatch vm extension set` \
                         prints the command that installs one)"
                    );
                    return Err(CreateError::BadHost { field, message });
                };
                if !vm.location.eq_ignore_ascii_case(location) {
                    let message = format!(
                        "{field} {id} is in {}, but this network watcher serves {location}: choose hosts of one location",
                        vm.location
                    );
                    return Err(CreateError::BadHost { field, message });
                }
                hosts.push((host_label(&vm), vm));
            }
        }
        HostSelector::Tags(wanted) => {
            let subscription = state.config.subscription.to_string();
            for vm in state.store.list_vms(&subscription).await? {
                let Ok(id) = ResourceId::parse("vmId", &vm.id) else {
                    continue;
                };
                if vm.location.eq_ignore_ascii_case(location) && selector.chooses(&id, &host_tags(state, &vm).await?) {
                    hosts.push((host_label(&vm), vm));
                }
            }
            if hosts.is_empty() {
                let wanted: Vec<String> = wanted.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let message = format!(
                    "{HOSTS}.tags [{}] choose no host in {location}: tag hosts at enrollment (`netwatch agent --tag \
                     KEY=VALUE`) or with `netwatch resource tag`",
                    wanted.join(", ")
                );
                return Err(CreateError::BadHost {
                    field: format!("{HOSTS}.tags"),
                    message,
                });
            }
        }
    }
    Ok(hosts)
}

/// The scale set a create targets and its hosts in scope, by instance id:
/// a 400 (nothing written) for a scale set that does not exist, scope ids
/// that are not its instances, or a scope that selects none.
pub(crate) async fn hosts(
    state: &AppState,
    capture: &ValidatedCapture,
) -> Result<(ScaleSetRecord, Vec<(String, VmRecord)>), CreateError> {
    let target = capture.target();
    let Some(set) = state.store.get_scale_set(&target.to_string()).await? else {
        return Err(CreateError::NoSuchScaleSet {
            target: target.to_string(),
        });
    };
    let instances = state.store.scale_set_instances(&set.id).await?;
    let numbers: Vec<u32> = instances
        .iter()
        .filter_map(|i| u32::try_from(i.instance).ok())
        .collect();
    let known = || {
        numbers
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let scope = capture.scope();
    for (list, field) in [(scope.include(), "include"), (scope.exclude(), "exclude")] {
        let unknown: Vec<(usize, u32)> = list
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, id)| !numbers.contains(id))
            .collect();
        if let Some((index, _)) = unknown.first() {
            let ids: Vec<String> = unknown.iter().map(|(_, id)| format!("\"{id}\"")).collect();
            let verb = if unknown.len() == 1 {
                "is not an instance"
            } else {
                "are not instances"
            };
            return Err(CreateError::UnknownInstances {
                field: format!("properties.scope.{field}[{index}]"),
                ids: ids.join(", "),
                verb,
                scale_set: target.name().to_string(),
                known: known(),
            });
        }
    }
    // The VM row comes with the instance (the hub writes both as the host
    // joins); one query for all of them.
    let mut vms: std::collections::HashMap<String, VmRecord> = state
        .store
        .list_vms(&set.subscription)
        .await?
        .into_iter()
        .map(|vm| (vm.id.to_lowercase(), vm))
        .collect();
    let mut hosts = Vec::new();
    for instance in &instances {
        let Ok(number) = u32::try_from(instance.instance) else {
            continue;
        };
        if scope.selects(number)
            && let Some(vm) = vms.remove(&instance.vm_key)
        {
            hosts.push((number.to_string(), vm));
        }
    }
    if hosts.is_empty() {
        return Err(CreateError::NoInstances {
            scale_set: target.name().to_string(),
            known: known(),
        });
    }
    Ok((set, hosts))
}

/// The id of host `instance`'s part of capture `parent`.
fn part_id(parent: &str, instance: &str) -> String {
    format!("{parent}/instances/{instance}")
}

/// Host `instance`'s part of `parent`: the parent's request (so its agent
/// validates the very capture the client asked for), with the host's own
/// `storagePath`.
pub(crate) fn part_record(
    parent: &CaptureRecord,
    instance: &str,
    vm: &VmRecord,
    parameters: PacketCaptureParameters,
    storage: Option<(&str, &str)>,
) -> Result<CaptureRecord, CreateError> {
    let record = CaptureRecord {
        id: part_id(&parent.id, instance),
        target_id: vm.id.clone(),
        etag: format!("W/\"{}\"", new_guid()),
        parent_key: Some(parent.id.to_lowercase()),
        instance: Some(instance.to_owned()),
        ..parent.clone()
    };
    new_record(record, parameters, storage)
}

/// One host's part of a capture over many hosts, with its host (when still
/// registered) and its stored files.
#[derive(Debug)]
pub(crate) struct Part {
    pub record: CaptureRecord,
    pub vm: Option<VmRecord>,
    pub files: Vec<CaptureFileRecord>,
}

/// The hosts' parts of capture `parent_id`, by instance id (`"2"` before
/// `"10"`), then those named otherwise (hosts a selector chose), by key;
/// three queries whatever the number of hosts.
pub(crate) async fn parts(state: &AppState, parent_id: &str) -> Result<Vec<Part>, StoreError> {
    let mut records = state.store.capture_parts(parent_id).await?;
    records.sort_by_key(|part| {
        part.instance
            .as_deref()
            .and_then(|i| i.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    let mut files = state.store.part_files(parent_id).await?;
    let mut vms: std::collections::HashMap<String, VmRecord> = state
        .store
        .list_vms(state.config.subscription.as_str())
        .await?
        .into_iter()
        .map(|vm| (vm.id.to_lowercase(), vm))
        .collect();
    Ok(records
        .into_iter()
        .map(|record| Part {
            vm: vms.remove(&record.target_id.to_lowercase()),
            files: files.remove(&record.id.to_lowercase()).unwrap_or_default(),
            record,
        })
        .collect())
}

/// A capture's status as clients see it: its own, or for a capture over many
/// hosts the roll-up of its parts.
pub(crate) async fn status_of(state: &AppState, record: &CaptureRecord) -> Result<CaptureStatus, StoreError> {
    if !is_fleet(record) {
        return Ok(record.status);
    }
    let parts = state.store.capture_parts(&record.id).await?;
    Ok(rolled_status(record, &parts))
}

/// The status of a capture over many hosts, from its parts: `NotStarted`
/// until one starts, `Running` while any may still capture, `Stopped` once
/// all ended, `Error` when all ended in error. A parent a client stopped
/// whose hosts have all ended is `Stopped` too.
pub(crate) fn rolled_status<'a>(
    parent: &CaptureRecord,
    parts: impl IntoIterator<Item = &'a CaptureRecord>,
) -> CaptureStatus {
    let statuses: Vec<CaptureStatus> = parts.into_iter().map(|part| part.status).collect();
    let count = |status| statuses.iter().filter(|s| **s == status).count();
    let (waiting, running) = (count(CaptureStatus::NotStarted), count(CaptureStatus::Running));
    let (stopped, failed) = (count(CaptureStatus::Stopped), count(CaptureStatus::Error));
    if running > 0 || (waiting > 0 && stopped > 0) {
        CaptureStatus::Running
    } else if waiting > 0 {
        CaptureStatus::NotStarted
    } else if failed > 0 && stopped == 0 && parent.status != CaptureStatus::Stopped {
        CaptureStatus::Error
    } else {
        CaptureStatus::Stopped
    }
}

/// How many waiting hosts [`settle`] looks at first.
const FEW: i64 = 8;

/// Settles the parent's operations from its parts, after a part changed
/// (module doc); a no-op when there is nothing to settle yet.
pub(crate) async fn settle(state: &AppState, parent_key: &str) -> Result<(), StoreError> {
    // Whether a host still to start is connected (its start is on its way):
    // a few of them first, which while many start is nearly always so (one
    // cheap query per report), and all of them only when those few are away.
    for limit in [FEW, i64::MAX] {
        let targets = state
            .store
            .part_targets(parent_key, CaptureStatus::NotStarted, limit)
            .await?;
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        if state.hub.any_connected(&targets).await {
            return Ok(());
        }
        if i64::try_from(targets.len()).unwrap_or(i64::MAX) < limit {
            break;
        }
    }
    let counts = state.store.count_parts(parent_key).await?;
    let waiting = counts.not_started;
    if counts.running + counts.stopped > 0 {
        state
            .store
            .finish_operations_of(
                parent_key,
                OperationKind::Create,
                OperationStatus::Succeeded,
                None,
                now_ms(),
            )
            .await?;
    } else if counts.failed > 0 && waiting == 0 {
        let message = "no host of the scale set could start the capture: queryStatus shows each one's reason";
        let error = serde_json::json!({"error": {"code": "CaptureFailed", "message": message}}).to_string();
        state
            .store
            .finish_operations_of(
                parent_key,
                OperationKind::Create,
                OperationStatus::Failed,
                Some(&error),
                now_ms(),
            )
            .await?;
    }
    if waiting == 0 && counts.running == 0 && state.store.part_stops_in_progress(parent_key).await? == 0 {
        state
            .store
            .finish_operations_of(
                parent_key,
                OperationKind::Stop,
                OperationStatus::Succeeded,
                None,
                now_ms(),
            )
            .await?;
    }
    Ok(())
}

/// Stops every host's part of `parent` not yet ended, and marks the parent
/// stopped (no host joins it any more). A stop operation follows the hosts
/// that were asked to stop; none when all stopped here.
pub(crate) async fn stop(state: &AppState, parent: &CaptureRecord) -> Result<Stopped, StoreError> {
    let marked = state.store.modify_capture(&parent.id, |record| {
        if record.status == CaptureStatus::Stopped {
            return Change::Keep(());
        }
        record.status = CaptureStatus::Stopped;
        record.stop_reason = Some("ManualStop".to_owned());
        record.etag = format!("W/\"{}\"", new_guid());
        record.updated_ms = now_ms();
        Change::Write(())
    });
    match marked.await {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(Stopped::Gone),
        Err(StoreError::Stale(_)) => return Ok(Stopped::KeptChanging),
        Err(error) => return Err(error),
    }
    let parts = state.store.capture_parts(&parent.id).await?;
    if !parts.iter().any(|p| p.status.is_active()) {
        return Ok(Stopped::Already);
    }
    // The operation first, so a host that stops at once cannot settle
    // before it exists.
    let operation = super::new_operation(&parent.id, OperationKind::Stop, now_ms());
    state.store.insert_operation(&operation).await?;
    for part in parts.iter().filter(|p| p.status.is_active()) {
        // Each host's stop: asked of its agent, or done here.
        Box::pin(super::stop(state, part)).await?;
    }
    tracing::info!(capture = %parent.id, hosts = parts.len(), "packet capture over many hosts stopped");
    settle(state, &parent.id.to_lowercase()).await?;
    match state.store.get_operation(&operation.id).await? {
        Some(op) if op.status == OperationStatus::InProgress => Ok(Stopped::Asked {
            operation: operation.id,
        }),
        _ => Ok(Stopped::Now),
    }
}

/// Tells every host of `parent` still capturing to stop (a delete: the rows
/// go, the files stay).
pub(crate) async fn stop_parts(state: &AppState, parent: &CaptureRecord) -> Result<(), StoreError> {
    for part in state.store.capture_parts(&parent.id).await? {
        if part.status.is_active() {
            let stop = ControllerMessage::Stop {
                capture_id: run_id(&part.id, part.created_ms),
            };
            state.hub.send(&part.target_id, stop).await;
        }
    }
    Ok(())
}

/// A host that joined scale set `set_id` as `instance` joins the captures of
/// that scale set still running whose scope selects it, for the time each has
/// left; how many it joined.
pub(crate) async fn join(state: &AppState, set_id: &str, instance: u32, vm: &VmRecord) -> Result<usize, StoreError> {
    let mut joined = 0;
    for parent in state.store.captures_for_target(set_id).await? {
        if parent.parent_key.is_some() || parent.status == CaptureStatus::Stopped {
            continue;
        }
        let Ok(Ok(capture)) = serde_json::from_str::<PacketCapture>(&parent.request_json).map(|r| r.validate()) else {
            continue;
        };
        if !capture.scope().selects(instance) {
            continue;
        }
        if add_part(state, &parent, &capture, &instance.to_string(), vm).await? {
            tracing::info!(capture = %parent.id, instance, "a host that joined the scale set joins its running capture");
            joined += 1;
        }
    }
    Ok(joined)
}

/// A host that registers joins the running captures whose selector chooses
/// it (by id or by tag), for the time each has left; how many it joined.
pub(crate) async fn join_selected(state: &AppState, vm: &VmRecord) -> Result<usize, StoreError> {
    let selected = state.store.selector_captures().await?;
    if selected.is_empty() {
        return Ok(0);
    }
    let Ok(id) = ResourceId::parse("vmId", &vm.id) else {
        return Ok(0);
    };
    let tags = host_tags(state, vm).await?;
    let mut joined = 0;
    for parent in selected {
        let Ok(Ok(capture)) = serde_json::from_str::<PacketCapture>(&parent.request_json).map(|r| r.validate()) else {
            continue;
        };
        let Some(selector) = capture.hosts() else {
            continue;
        };
        let watcher_location = state.store.get_watcher(&parent.watcher_id).await?.map(|w| w.location);
        if !selector.chooses(&id, &tags) || watcher_location.is_none_or(|l| !l.eq_ignore_ascii_case(&vm.location)) {
            continue;
        }
        if add_part(state, &parent, &capture, &host_label(vm), vm).await? {
            tracing::info!(capture = %parent.id, vm = %vm.id, "a host its selector chooses joins a running capture");
            joined += 1;
        }
    }
    Ok(joined)
}

/// Adds host `vm`'s part (as `instance`) to running capture `parent`, with
/// the time the capture has left, and starts it; false when the host has a
/// part already, the capture has ended, or its time is up.
async fn add_part(
    state: &AppState,
    parent: &CaptureRecord,
    capture: &ValidatedCapture,
    instance: &str,
    vm: &VmRecord,
) -> Result<bool, StoreError> {
    let parts = state.store.capture_parts(&parent.id).await?;
    if parts.iter().any(|p| p.instance.as_deref() == Some(instance)) || !rolled_status(parent, &parts).is_active() {
        return Ok(false);
    }
    // The time the capture has left, counted from its creation.
    let elapsed_s = (now_ms() - parent.created_ms).max(0) / 1000;
    let left_s = i64::from(capture.limits().time_limit_in_seconds()) - elapsed_s;
    if left_s <= 0 {
        return Ok(false);
    }
    let Ok(request) = serde_json::from_str::<PacketCapture>(&parent.request_json) else {
        return Ok(false);
    };
    let mut parameters = capture.to_parameters();
    parameters.time_limit_in_seconds = Some(left_s);
    let storage = storage_of(&request.properties);
    let part = match part_record(
        parent,
        instance,
        vm,
        parameters,
        storage.as_ref().map(|(b, a)| (b.as_str(), a.as_str())),
    ) {
        Ok(part) => part,
        Err(error) => {
            tracing::error!(capture = %parent.id, error = %error, "a joining host's part cannot be made");
            return Ok(false);
        }
    };
    if !state.store.add_capture_part(&part).await? {
        return Ok(false);
    }
    push_start(state, &part).await;
    Ok(true)
}

/// Where a capture's files go: the scheme and host its `storagePath` was
/// made with, and its storage account; none without a storage account.
fn storage_of(parameters: &PacketCaptureParameters) -> Option<(String, String)> {
    let location = &parameters.storage_location;
    let account = location.storage_id.as_deref()?.rsplit('/').next()?.to_owned();
    let (base, _) = location
        .storage_path
        .as_deref()?
        .split_once(netwatch_api::agent::DOWNLOAD_PREFIX)?;
    Some((base.to_owned(), account))
}

/// The scale set of a scale-set instance id and the instance's number.
pub(crate) fn instance_of(vm_id: &str) -> Option<(ResourceId, u32)> {
    let id = ResourceId::parse("vmId", vm_id).ok()?;
    if id.kind() != ResourceKind::ScaleSetVm {
        return None;
    }
    let number = id.name().as_str().parse().ok()?;
    let set = id.parent()?;
    Some((set, number))
}

/// `{vmss}_{instance}`: the name Azure gives a scale set's instance.
pub(crate) fn instance_name(set: &ResourceName, instance: u32) -> String {
    format!("{set}_{instance}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: CaptureStatus) -> CaptureRecord {
        CaptureRecord {
            id: "p".into(),
            watcher_id: "w".into(),
            target_id: "t".into(),
            request_json: "{}".into(),
            status,
            stop_reason: None,
            errors_json: "[]".into(),
            started_ms: None,
            stats_json: "{}".into(),
            etag: String::new(),
            version: 1,
            created_ms: 0,
            updated_ms: 0,
            parent_key: None,
            instance: None,
        }
    }

    #[test]
    fn the_roll_up_runs_while_any_host_may_capture_and_ends_when_all_ended() {
        use CaptureStatus::{Error, NotStarted, Running, Stopped};
        let parent = record(NotStarted);
        let cases: &[(&[CaptureStatus], CaptureStatus)] = &[
            (&[NotStarted, NotStarted], NotStarted),
            (&[NotStarted, Running], Running),
            (&[Running, Error], Running),
            (&[Stopped, NotStarted], Running),
            (&[Stopped, Error], Stopped),
            (&[Error, Error], Error),
            (&[Error, NotStarted], NotStarted),
            (&[Stopped, Stopped], Stopped),
        ];
        for (parts, expected) in cases {
            let parts: Vec<CaptureRecord> = parts.iter().map(|s| record(*s)).collect();
            assert_eq!(rolled_status(&parent, &parts), *expected, "{parts:?}");
        }
        // A capture a client stopped whose hosts all failed reads Stopped.
        assert_eq!(rolled_status(&record(Stopped), &[record(Error)]), Stopped);
    }
}
