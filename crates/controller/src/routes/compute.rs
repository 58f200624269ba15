//! `Microsoft.Compute` as netwatch has it (DESIGN §2): the hosts whose agent
//! registered are virtual machines, and each one's agent is its VM extension
//! `NetworkWatcherAgentLinux`. A host becomes a VM by registering (that *is*
//! the extension install); a PUT of the extension (`vm extension set`) on a VM
//! not seen yet makes a one-time enrollment token and answers the command to
//! run on the host, since netwatch cannot reach into a host itself.
//!
//! az reads `location` from the VM GET before a capture create (clients.md §3,
//! api-contract.md §3.1) and prints the extension with `az vm extension show`;
//! both get Azure's shape plus a `netwatch` block with the agent's live facts
//! (version, last heartbeat, interfaces, addresses).
//!
//! *Our choices*: `vmId` is a UUID v5 of the VM's lower-case id, so it is
//! stable across restarts and replicas without being stored; an extension
//! other than the agent is a 404; times are RFC 3339 UTC.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use netwatch_api::error::{ApiError, ErrorCode};
use netwatch_api::resource::{
    AGENT_EXTENSION_NAME, Location, ResourceGroupName, ResourceId, ResourceKind, ResourceName, SubscriptionId,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{AppState, ArmBody, ArmVersion, HttpError, base_url, now_ms, rfc3339, subscription};
use crate::agent_builds::ExtensionSettings;
use crate::auth::{digest, new_token};
use crate::hub::{RunningAgent, upgrade_of};
use crate::store::{EnrollmentRecord, VmRecord};
use netwatch_api::agent::ControllerMessage;

/// Virtual machines of a resource group, below a subscription.
const VMS_IN_GROUP: &str =
    "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute/virtualmachines";

/// The namespace of `vmId`s: a fixed, random UUID, so that ids derived from
/// the same VM id are the same everywhere.
pub(super) const VM_ID_NAMESPACE: Uuid = uuid::uuid!("6f1f0f43-2a7c-4c1e-9a4b-3f0d2b9c8e15");

/// The agent's extension as Azure names it (api-contract.md §5).
pub(super) const AGENT_PUBLISHER: &str = "Microsoft.Azure.NetworkWatcher";
/// The handler version Azure installs (`typeHandlerVersion`, api-contract.md §5).
pub(super) const AGENT_HANDLER_VERSION: &str = "1.4";

pub(super) fn routes() -> Router<AppState> {
    let vm = format!("{VMS_IN_GROUP}/{{vm}}");
    Router::new()
        .route(
            "/subscriptions/{subscription}/providers/microsoft.compute/virtualmachines",
            get(list_all),
        )
        .route(VMS_IN_GROUP, get(list_group))
        .route(&vm, get(show).patch(update))
        .route(&format!("{vm}/extensions"), get(list_extensions))
        .route(
            &format!("{vm}/extensions/{{extension}}"),
            get(show_extension).put(set_extension).delete(delete_extension),
        )
}

/// `GET /subscriptions/{s}/providers/Microsoft.Compute/virtualMachines`.
async fn list_all(
    State(state): State<AppState>,
    Path(sub): Path<String>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let sub = subscription(&state.config, &sub)?;
    let vms = registered_vms(&state, &sub).await?;
    let connected = state.hub.connected_set().await;
    let value: Vec<Value> = vms
        .iter()
        .map(|(id, record)| listed_vm_json(id, record, connected.contains(&record.id.to_lowercase())))
        .collect();
    Ok(Json(json!({ "value": value })))
}

/// `GET …/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines`.
async fn list_group(
    State(state): State<AppState>,
    Path((sub, group)): Path<(String, String)>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let sub = subscription(&state.config, &sub)?;
    let group = ResourceGroupName::parse("resourceGroupName", &group)?;
    let vms = registered_vms(&state, &sub).await?;
    let connected = state.hub.connected_set().await;
    let value: Vec<Value> = vms
        .iter()
        .filter(|(id, _)| *id.resource_group() == group)
        .map(|(id, record)| listed_vm_json(id, record, connected.contains(&record.id.to_lowercase())))
        .collect();
    Ok(Json(json!({ "value": value })))
}

async fn show(
    State(state): State<AppState>,
    Path((sub, group, vm)): Path<(String, String, String)>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let (id, record) = find_vm(&state, (&sub, &group, &vm)).await?;
    let connected = state.hub.is_connected(&record.id).await;
    Ok(Json(vm_json(&id, &record, connected)))
}

/// `PATCH …/virtualMachines/{vm}` (ARM's update, what `az resource tag`
/// sends): replaces the VM's tags, the one thing of a VM netwatch lets a
/// client change. 200 with the VM.
async fn update(
    State(state): State<AppState>,
    Path((sub, group, vm)): Path<(String, String, String)>,
    _version: ArmVersion,
    ArmBody(body): ArmBody,
) -> Result<Json<Value>, HttpError> {
    let (id, _) = find_vm(&state, (&sub, &group, &vm)).await?;
    let tags = tags_of_update(&body, "virtual machine")?;
    state.store.set_vm_tags(&id.to_string(), &tags).await?;
    tracing::info!(vm = %id, tags, "VM tags set");
    let (id, record) = find_vm(&state, (&sub, &group, &vm)).await?;
    let connected = state.hub.is_connected(&record.id).await;
    Ok(Json(vm_json(&id, &record, connected)))
}

/// The tags of an ARM update (`PATCH` body `{"tags": {...}}`), as stored
/// JSON; 400 for anything else in the body, or a tag that is not one.
pub(super) fn tags_of_update(body: &[u8], what: &str) -> Result<String, HttpError> {
    let body: Value =
        serde_json::from_slice(body).map_err(|err| ApiError::bad_body(format!("the body is not JSON: {err}")))?;
    let Some(object) = body.as_object() else {
        return Err(ApiError::bad_body("the body must be an object: {\"tags\": {\"role\": \"web\"}}").into());
    };
    if let Some(other) = object.keys().find(|key| key.as_str() != "tags") {
        let message =
            format!("{other} cannot be changed on a netwatch {what}: only tags can (send {{\"tags\": {{…}}}})");
        return Err(ApiError::bad_request(other.clone(), message).into());
    }
    let Some(tags) = object.get("tags").and_then(Value::as_object) else {
        let message = "tags is missing or not an object: send {\"tags\": {\"role\": \"web\"}} ({} removes them all)";
        return Err(ApiError::bad_request("tags", message).into());
    };
    for (name, value) in tags {
        let Some(text) = value.as_str() else {
            let message = format!("tag {name:?} is not a string: tags map names to strings");
            return Err(ApiError::bad_request(format!("tags.{name}"), message).into());
        };
        if name.is_empty() || name.len() > 512 || text.len() > 256 {
            let message = format!("tag {name:?} is not one: names are 1 to 512 characters, values at most 256");
            return Err(ApiError::bad_request(format!("tags.{name}"), message).into());
        }
    }
    Ok(Value::Object(tags.clone()).to_string())
}

/// `GET …/virtualMachines/{vm}/extensions`: the agent, the one extension there is.
async fn list_extensions(
    State(state): State<AppState>,
    Path((sub, group, vm)): Path<(String, String, String)>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let (id, record) = find_vm(&state, (&sub, &group, &vm)).await?;
    // Deleted (`vm extension delete`): the VM has none until it enrolls again.
    if state.store.is_cut_off(&record.id).await? {
        return Ok(Json(json!({ "value": [] })));
    }
    let connected = state.hub.is_connected(&record.id).await;
    Ok(Json(json!({ "value": [extension_json(&id, &record, connected)] })))
}

/// `GET …/virtualMachines/{vm}/extensions/{name}`: the agent; any other name is a 404.
async fn show_extension(
    State(state): State<AppState>,
    Path((sub, group, vm, extension)): Path<(String, String, String, String)>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let (id, record) = find_vm(&state, (&sub, &group, &vm)).await?;
    let extension = ResourceName::parse("vmExtensionName", &extension)?;
    if !extension.as_str().eq_ignore_ascii_case(AGENT_EXTENSION_NAME) {
        let missing = ResourceId::vm_extension(id.subscription(), id.resource_group(), id.name(), &extension);
        let message = format!(
            "{}; the only extension netwatch VMs have is {AGENT_EXTENSION_NAME}, the agent",
            ApiError::not_found(&missing)
        );
        return Err(ApiError::new(ErrorCode::ResourceNotFound, message).into());
    }
    if state.store.is_cut_off(&record.id).await? {
        let gone = ResourceId::vm_extension(id.subscription(), id.resource_group(), id.name(), &extension);
        let message = format!(
            "{}: it was deleted (`vm extension delete`); `vm extension set` enrolls the host again",
            ApiError::not_found(&gone)
        );
        return Err(ApiError::new(ErrorCode::ResourceNotFound, message).into());
    }
    let connected = state.hub.is_connected(&record.id).await;
    Ok(Json(extension_json(&id, &record, connected)))
}

/// `DELETE …/virtualMachines/{vm}/extensions/{name}` (`vm extension delete`):
/// cuts the host's agent off. Its own credentials are revoked, its channel is
/// closed, and its captures not yet ended become `Error` (`AgentStopped`):
/// the host can no longer report them. 200; the VM stays, as in Azure. An
/// agent that connects with the configuration's shared agent token can
/// register again: remove that token from the configuration to stop it.
async fn delete_extension(
    State(state): State<AppState>,
    Path((sub, group, vm, extension)): Path<(String, String, String, String)>,
    _version: ArmVersion,
    Query(query): Query<DeleteQuery>,
) -> Result<Response, HttpError> {
    let (id, _record) = find_vm(&state, (&sub, &group, &vm)).await?;
    let extension = ResourceName::parse("vmExtensionName", &extension)?;
    if !extension.as_str().eq_ignore_ascii_case(AGENT_EXTENSION_NAME) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let purge = purge_of(&query)?;
    let vm_id = id.to_string();
    // Sent before the cut-off closes the channel: the agent uninstalls itself.
    let told = state.hub.send(&vm_id, ControllerMessage::Uninstall { purge }).await;
    tracing::info!(vm = %vm_id, purge, told, "agent asked to uninstall itself");
    let done = crate::lifecycle::cut_off(&state, &vm_id, "the agent extension was removed from the host").await?;
    tracing::info!(
        vm = %vm_id,
        revoked = done.revoked,
        disconnected = done.disconnected,
        ended = done.ended,
        "agent extension removed: the host's agent is cut off"
    );
    Ok(StatusCode::OK.into_response())
}

/// The query of an extension's DELETE: netwatch's `purge`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct DeleteQuery {
    purge: Option<String>,
}

/// `purge=true|false` (`vm extension delete --purge`): whether the agent's
/// uninstall removes its captures too.
pub(super) fn purge_of(query: &DeleteQuery) -> Result<bool, HttpError> {
    match query.purge.as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request("purge", format!("purge is true or false, not {other:?}")).into()),
    }
}

/// How long an enrollment token may wait for its host: a day.
pub(super) const ENROLLMENT_LIFETIME_MS: i64 = 24 * 3600 * 1000;

/// The agent extension a PUT names and its body: 400 for any other extension
/// (named at `field`), publisher or type, or a body that is not one.
pub(super) fn parse_agent_extension(
    field: &str,
    extension: &str,
    body: &[u8],
) -> Result<(ResourceName, ExtensionBody), HttpError> {
    let extension = ResourceName::parse(field, extension)?;
    if extension.as_str().eq_ignore_ascii_case("NetworkWatcherAgentWindows") {
        let message = "the netwatch agent runs on Linux only: use --name NetworkWatcherAgentLinux";
        return Err(ApiError::bad_request(field, message).into());
    }
    if !extension.as_str().eq_ignore_ascii_case(AGENT_EXTENSION_NAME) {
        let message = format!(
            "extension {extension} is not one netwatch installs: the agent is {AGENT_EXTENSION_NAME} \
             (publisher {AGENT_PUBLISHER})"
        );
        return Err(ApiError::bad_request(field, message).into());
    }
    let body: ExtensionBody = serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_body(format!("the body is not a VM extension: {err}")))?;
    if let Some(publisher) = &body.properties.publisher
        && !publisher.eq_ignore_ascii_case(AGENT_PUBLISHER)
    {
        let message = format!("publisher {publisher:?} is not the agent's: use {AGENT_PUBLISHER}");
        return Err(ApiError::bad_request("properties.publisher", message).into());
    }
    if let Some(kind) = &body.properties.extension_type
        && !kind.eq_ignore_ascii_case(AGENT_EXTENSION_NAME)
    {
        let message = format!("type {kind:?} is not the agent's: use {AGENT_EXTENSION_NAME}");
        return Err(ApiError::bad_request("properties.type", message).into());
    }
    Ok((extension, body))
}

/// Where a host enrolled without a location goes: the location given (one
/// this controller serves), or the first served (the guide's `vm extension
/// set` gives none); `what` names the resource in messages.
pub(super) fn enroll_location(state: &AppState, given: Option<&str>, what: &str) -> Result<Location, HttpError> {
    let location = match given {
        Some(location) => Location::parse("location", location)?,
        None => match state.config.locations.first() {
            Some(first) => first.name.clone(),
            None => {
                let message = format!("{what} has no agent yet: give its location to enroll it");
                return Err(ApiError::bad_request("location", message).into());
            }
        },
    };
    if !state.config.locations.iter().any(|known| known.name == location) {
        let known: Vec<&str> = state.config.locations.iter().map(|l| l.name.as_str()).collect();
        let message = format!(
            "location {location} is not served here: use one of {}",
            known.join(", ")
        );
        return Err(ApiError::bad_request("location", message).into());
    }
    Ok(location)
}

/// The extension PUT body as az sends it; other fields are accepted and ignored.
#[derive(Debug, Deserialize)]
pub(super) struct ExtensionBody {
    pub(super) location: Option<String>,
    #[serde(default)]
    pub(super) properties: ExtensionProperties,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ExtensionProperties {
    publisher: Option<String>,
    #[serde(rename = "type")]
    extension_type: Option<String>,
    /// `--version`: Azure's `1.4`, or the agent build to run (`0.2`).
    type_handler_version: Option<String>,
    /// az sends true unless `--no-auto-upgrade-minor-version`.
    auto_upgrade_minor_version: Option<bool>,
    /// `--force-update`: a new tag each time.
    force_update_tag: Option<String>,
    /// The extension's public settings; netwatch reads its scale-set key's
    /// `keyExpiresInSeconds` and `keyMaxUses` there.
    #[serde(default)]
    pub(super) settings: Option<Value>,
}

impl ExtensionProperties {
    /// What the extension says about the agent's version.
    pub(super) fn settings_of_versions(&self) -> ExtensionSettings {
        ExtensionSettings {
            auto_upgrade_minor_version: self.auto_upgrade_minor_version.unwrap_or(true),
            version: self.type_handler_version.clone().filter(|version| !version.is_empty()),
            force: self.force_update_tag.as_deref().is_some_and(|tag| !tag.is_empty()),
            set_ms: now_ms(),
        }
    }
}

/// Asks `record`'s agent, when connected, to upgrade if its extension's
/// settings and the builds served say so.
pub(super) async fn offer_upgrade(state: &AppState, record: &VmRecord) {
    let facts = agent_facts(record);
    let failure = facts
        .get("upgradeFailure")
        .and_then(|failure| serde_json::from_value(failure.clone()).ok());
    let agent = RunningAgent {
        version: facts.get("agentVersion").and_then(Value::as_str).unwrap_or(""),
        arch: facts.get("arch").and_then(Value::as_str),
        failure: failure.as_ref(),
    };
    if let Some(upgrade) = upgrade_of(state, &record.id, &agent).await
        && !state.hub.send(&record.id, ControllerMessage::Upgrade(upgrade)).await
    {
        tracing::info!(vm = %record.id, "the agent is not connected: it is asked to upgrade when it connects");
    }
}

/// `PUT …/virtualMachines/{vm}/extensions/{name}` (`vm extension set`): 200
/// with the extension when the VM's agent registered already (and was not
/// cut off since by `vm extension delete`); otherwise 201
/// with provisioningState `Creating` and, under `properties.netwatch.enrollment`,
/// a one-time token and the command that installs the agent with it.
async fn set_extension(
    State(state): State<AppState>,
    Path((sub, group, vm, extension)): Path<(String, String, String, String)>,
    _version: ArmVersion,
    headers: HeaderMap,
    uri: Uri,
    ArmBody(body): ArmBody,
) -> Result<Response, HttpError> {
    let sub = subscription(&state.config, &sub)?;
    let group = ResourceGroupName::parse("resourceGroupName", &group)?;
    let vm = ResourceName::parse("vmName", &vm)?;
    let (_, body) = parse_agent_extension("vmExtensionName", &extension, &body)?;
    let id = ResourceId::virtual_machine(&sub, &group, &vm);
    let settings = body.properties.settings_of_versions();
    state
        .store
        .set_extension_settings(&id.to_string(), &serde_json::to_string(&settings).unwrap_or_default())
        .await?;
    let known = state.store.get_vm(&id.to_string()).await?;
    if let Some(record) = &known {
        // A host cut off (`vm extension delete`) is enrolled again: a new token.
        if !state.store.is_cut_off(&record.id).await? {
            offer_upgrade(&state, record).await;
            let id = ResourceId::parse("id", &record.id).unwrap_or(id);
            let connected = state.hub.is_connected(&record.id).await;
            return Ok(Json(extension_json(&id, record, connected)).into_response());
        }
    }

    // Not seen yet, or cut off: an enrollment for the host to use. Without a
    // location (the guide's `vm extension set` gives none) the host goes to
    // its own, or to the first location served.
    let given = body
        .location
        .as_deref()
        .or(known.as_ref().map(|record| record.location.as_str()));
    let location = enroll_location(&state, given, &format!("virtual machine {vm}"))?;
    let base = base_url(&state.config, &headers, &uri)?;
    let token = new_token().map_err(|err| ApiError::internal("make an enrollment token", err))?;
    let now = now_ms();
    let enrollment = EnrollmentRecord {
        digest: digest(&token),
        vm_id: id.to_string(),
        location: location.to_string(),
        created_ms: now,
        expires_ms: now + ENROLLMENT_LIFETIME_MS,
        used_ms: None,
    };
    state.store.insert_enrollment(&enrollment).await?;
    tracing::info!(vm = %id, "enrollment made for a host to install the agent with");
    let (command, foreground) = super::agent_install::enrollment_commands(
        &state,
        &base,
        &[
            ("--enroll-token", &token),
            ("--vm-name", vm.as_str()),
            ("--resource-group", group.as_str()),
            ("--location", location.as_str()),
        ],
    );
    let extension_id = ResourceId::agent_extension(&sub, &group, &vm);
    let answer = json!({
        "id": extension_id.to_string(),
        "name": AGENT_EXTENSION_NAME,
        "type": "Microsoft.Compute/virtualMachines/extensions",
        "location": location.as_str(),
        "properties": {
            "publisher": AGENT_PUBLISHER,
            "type": AGENT_EXTENSION_NAME,
            "typeHandlerVersion": AGENT_HANDLER_VERSION,
            "autoUpgradeMinorVersion": true,
            "provisioningState": "Creating",
            "netwatch": {
                "enrollment": {
                    "token": token,
                    "expiresOn": rfc3339(enrollment.expires_ms),
                    "command": command,
                    "foregroundCommand": foreground,
                },
            },
        },
    });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// The VM the path names and its record; 404 unless its agent registered.
async fn find_vm(state: &AppState, (sub, group, vm): (&str, &str, &str)) -> Result<(ResourceId, VmRecord), HttpError> {
    let sub = subscription(&state.config, sub)?;
    let group = ResourceGroupName::parse("resourceGroupName", group)?;
    let vm = ResourceName::parse("vmName", vm)?;
    let id = ResourceId::virtual_machine(&sub, &group, &vm);
    match state.store.get_vm(&id.to_string()).await? {
        // The stored id, as the agent registered it, names the VM in answers.
        Some(record) => Ok((ResourceId::parse("id", &record.id).unwrap_or(id), record)),
        None => Err(ApiError::not_found(&id).into()),
    }
}

/// The subscription's VMs with their parsed ids. A stored id always parses
/// (the hub builds it from checked names); one that does not is skipped.
async fn registered_vms(state: &AppState, sub: &SubscriptionId) -> Result<Vec<(ResourceId, VmRecord)>, HttpError> {
    let records = state.store.list_vms(sub.as_str()).await?;
    Ok(records
        .into_iter()
        .filter_map(|record| match ResourceId::parse("id", &record.id) {
            Ok(id) if id.kind() == ResourceKind::VirtualMachine => Some((id, record)),
            // A scale set's instance: listed under its scale set, as in Azure.
            Ok(_) => None,
            Err(err) => {
                tracing::warn!(vm = %record.id, error = %err, "stored VM id does not parse; left out");
                None
            }
        })
        .collect())
}

/// A VM as lists show it: without `resources`, as Azure's lists (az's `vm
/// list` fails to flatten an extension's `type` beside the VM's).
fn listed_vm_json(id: &ResourceId, record: &VmRecord, connected: bool) -> Value {
    let mut vm = vm_json(id, record, connected);
    if let Some(vm) = vm.as_object_mut() {
        vm.remove("resources");
    }
    vm
}

/// A VM's ARM JSON (`VirtualMachine`, a tracked resource).
fn vm_json(id: &ResourceId, record: &VmRecord, connected: bool) -> Value {
    let facts = agent_facts(record);
    let computer_name = facts
        .get("hostname")
        .and_then(Value::as_str)
        .unwrap_or(id.name().as_str())
        .to_owned();
    json!({
        "id": record.id,
        "name": id.name().as_str(),
        "type": "Microsoft.Compute/virtualMachines",
        "location": record.location,
        "tags": serde_json::from_str::<Value>(&record.tags_json).ok().filter(Value::is_object).unwrap_or_else(|| json!({})),
        "properties": {
            "provisioningState": "Succeeded",
            "vmId": Uuid::new_v5(&VM_ID_NAMESPACE, id.key().as_bytes()).to_string(),
            "osProfile": {"computerName": computer_name},
            "storageProfile": {"osDisk": {"osType": "Linux"}},
            // Always, not only for `$expand=instanceView`: az's `vm extension
            // set` reads it (the extensions installed) and it costs nothing.
            "instanceView": vm_instance_view(id, record, &computer_name, connected),
            "netwatch": netwatch_block(record, facts, connected),
        },
        "resources": [extension_json(id, record, connected)],
    })
}

/// A VM's `instanceView`: running, with the agent as its one extension.
fn vm_instance_view(id: &ResourceId, record: &VmRecord, computer_name: &str, connected: bool) -> Value {
    let extension = extension_json(id, record, connected);
    let agent_version = extension["properties"]["instanceView"]["typeHandlerVersion"].clone();
    json!({
        "computerName": computer_name,
        "osName": "Linux",
        "vmAgent": {
            "vmAgentVersion": agent_version,
            "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready"}],
        },
        "extensions": [extension["properties"]["instanceView"].clone()],
        "statuses": [
            {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"},
            {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"},
        ],
    })
}

/// The agent as VM extension: Azure's shape (api-contract.md §5) and the
/// agent's live facts.
fn extension_json(id: &ResourceId, record: &VmRecord, connected: bool) -> Value {
    let extension = ResourceId::agent_extension(id.subscription(), id.resource_group(), id.name());
    let facts = agent_facts(record);
    let agent_version = facts
        .get("agentVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let last_seen = record.last_seen_ms.map(rfc3339);
    let message = match &last_seen {
        Some(seen) => format!("netwatch agent {agent_version} registered; last heard from at {seen}"),
        None => format!("netwatch agent {agent_version} registered"),
    };
    json!({
        "id": extension.to_string(),
        "name": AGENT_EXTENSION_NAME,
        "type": "Microsoft.Compute/virtualMachines/extensions",
        "location": record.location,
        "properties": {
            "publisher": AGENT_PUBLISHER,
            "type": AGENT_EXTENSION_NAME,
            "typeHandlerVersion": AGENT_HANDLER_VERSION,
            "autoUpgradeMinorVersion": true,
            "provisioningState": "Succeeded",
            "instanceView": {
                "name": AGENT_EXTENSION_NAME,
                "type": format!("{AGENT_PUBLISHER}.{AGENT_EXTENSION_NAME}"),
                "typeHandlerVersion": agent_version,
                "statuses": [{
                    "code": "ProvisioningState/succeeded",
                    "level": "Info",
                    "displayStatus": "Provisioning succeeded",
                    "message": message,
                    "time": last_seen,
                }],
            },
            "netwatch": netwatch_block(record, facts, connected),
        },
    })
}

/// The agent facts the hub stored (hostname, agentVersion, interfaces, …); an
/// empty object when there are none or they do not parse.
pub(super) fn agent_facts(record: &VmRecord) -> Map<String, Value> {
    match serde_json::from_str(&record.agent_json) {
        Ok(Value::Object(facts)) => facts,
        _ => Map::new(),
    }
}

/// The `netwatch` block: every stored agent fact, plus `addresses` (those of
/// all interfaces), `lastSeen` and whether its agent is `connected` (here
/// or to another replica).
pub(super) fn netwatch_block(record: &VmRecord, mut facts: Map<String, Value>, connected: bool) -> Value {
    let addresses: Vec<Value> = facts
        .get("interfaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|interface| interface.get("addresses").and_then(Value::as_array))
        .flatten()
        .cloned()
        .collect();
    facts.insert("addresses".to_owned(), Value::Array(addresses));
    facts.insert("connected".to_owned(), Value::Bool(connected));
    facts.insert(
        "lastSeen".to_owned(),
        record.last_seen_ms.map(rfc3339).map_or(Value::Null, Value::String),
    );
    Value::Object(facts)
}
