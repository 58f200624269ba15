//! `Microsoft.Compute/virtualMachineScaleSets` for plain hosts (issue 13,
//! DESIGN §8 "Fleets"): named groups of hosts that one capture can cover.
//!
//! - A scale set is made explicitly (`PUT`, with its location and tags) or by
//!   `vmss extension set` on a name not seen yet, which also makes a reusable
//!   enrollment key and answers the command to run on every host of the set.
//! - A host joins by connecting with that key: it gets the next instance id
//!   (`0`, `1`, …; never given twice), or the one it had when it joins again
//!   (its agent's `hostId`), and a credential of its own. Its VM resource is
//!   `…/virtualMachineScaleSets/{name}/virtualMachines/{instance}`.
//! - Keys are reusable, expire (`keyExpiresInSeconds` in the extension's
//!   settings, a day by default, at most 30 days), may be capped to a number
//!   of hosts (`keyMaxUses`), and are all revoked by `vmss extension delete`,
//!   which also cuts every instance's agent off (as `vm extension delete` does
//!   one VM's). `POST …/delete {"instanceIds": [...]}` (az's `vmss
//!   delete-instances`) removes instances one by one.
//! - Shapes are Azure's (`VirtualMachineScaleSet`, `VirtualMachineScaleSetVM`,
//!   `VirtualMachineScaleSetExtension`) with a `netwatch` block of our facts.
//!
//! *Our choices*: `sku.capacity` is the number of instances (netwatch does
//! not scale hosts, it counts them); `uniqueId` and each instance's `vmId`
//! are UUID v5s of their ids; a scale set is never deleted (its instances
//! are, one by one).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use netwatch_api::error::ApiError;
use netwatch_api::resource::{
    AGENT_EXTENSION_NAME, Location, ResourceGroupName, ResourceId, ResourceName, SubscriptionId,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::compute::{
    AGENT_HANDLER_VERSION, AGENT_PUBLISHER, ENROLLMENT_LIFETIME_MS, VM_ID_NAMESPACE, agent_facts, enroll_location,
    netwatch_block, parse_agent_extension,
};
use super::{AppState, ArmBody, ArmVersion, HttpError, base_url, now_ms, rfc3339, subscription};
use crate::auth::{digest, new_token};
use crate::store::{ScaleSetKeyRecord, ScaleSetRecord, VmRecord};

/// Scale sets of a resource group, below a subscription.
const SETS_IN_GROUP: &str =
    "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute/virtualmachinescalesets";

/// The longest a scale-set key may live: 30 days.
const MAX_KEY_LIFETIME_S: i64 = 30 * 24 * 3600;

pub(super) fn routes() -> Router<AppState> {
    let set = format!("{SETS_IN_GROUP}/{{vmss}}");
    Router::new()
        .route(
            "/subscriptions/{subscription}/providers/microsoft.compute/virtualmachinescalesets",
            get(list_all),
        )
        .route(SETS_IN_GROUP, get(list_group))
        .route(&set, get(show).put(put).patch(update))
        .route(&format!("{set}/virtualmachines"), get(list_instances))
        .route(&format!("{set}/virtualmachines/{{instance}}"), get(show_instance))
        .route(&format!("{set}/delete"), post(delete_instances))
        .route(&format!("{set}/extensions"), get(list_extensions))
        .route(
            &format!("{set}/extensions/{{extension}}"),
            get(show_extension).put(set_extension).delete(delete_extension),
        )
}

type SetPath = (String, String, String);

/// The id a path names, its names checked.
fn set_id(state: &AppState, (sub, group, name): (&str, &str, &str)) -> Result<ResourceId, HttpError> {
    let sub = subscription(&state.config, sub)?;
    let group = ResourceGroupName::parse("resourceGroupName", group)?;
    let name = ResourceName::parse("vmScaleSetName", name)?;
    Ok(ResourceId::scale_set(&sub, &group, &name))
}

/// The scale set the path names; 404 when there is none.
async fn find_set(state: &AppState, path: (&str, &str, &str)) -> Result<(ResourceId, ScaleSetRecord), HttpError> {
    let id = set_id(state, path)?;
    match state.store.get_scale_set(&id.to_string()).await? {
        Some(record) => Ok((ResourceId::parse("id", &record.id).unwrap_or(id), record)),
        None => Err(ApiError::not_found(&id).into()),
    }
}

/// A scale set's instances: (number, VM record) for those whose VM row exists.
async fn instances(state: &AppState, set: &ScaleSetRecord) -> Result<Vec<(u32, VmRecord)>, HttpError> {
    let mut out = Vec::new();
    for instance in state.store.scale_set_instances(&set.id).await? {
        let Ok(number) = u32::try_from(instance.instance) else {
            continue;
        };
        if let Some(vm) = state.store.get_vm(&instance.vm_key).await? {
            out.push((number, vm));
        }
    }
    Ok(out)
}

async fn list_all(
    State(state): State<AppState>,
    Path(sub): Path<String>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let sub = subscription(&state.config, &sub)?;
    list(&state, &sub, None).await
}

async fn list_group(
    State(state): State<AppState>,
    Path((sub, group)): Path<(String, String)>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let sub = subscription(&state.config, &sub)?;
    let group = ResourceGroupName::parse("resourceGroupName", &group)?;
    list(&state, &sub, Some(&group)).await
}

async fn list(
    state: &AppState,
    sub: &SubscriptionId,
    group: Option<&ResourceGroupName>,
) -> Result<Json<Value>, HttpError> {
    let mut value = Vec::new();
    for record in state.store.list_scale_sets(sub.as_str()).await? {
        let Ok(id) = ResourceId::parse("id", &record.id) else {
            continue;
        };
        if group.is_some_and(|group| id.resource_group() != group) {
            continue;
        }
        let count = state.store.scale_set_instances(&record.id).await?.len();
        value.push(set_json(&id, &record, count));
    }
    Ok(Json(json!({ "value": value })))
}

async fn show(
    State(state): State<AppState>,
    Path((sub, group, vmss)): Path<SetPath>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let (id, record) = find_set(&state, (&sub, &group, &vmss)).await?;
    let count = state.store.scale_set_instances(&record.id).await?.len();
    Ok(Json(set_json(&id, &record, count)))
}

/// The scale-set PUT body: location (for a new one) and tags; the rest of
/// Azure's model (sku, profiles) is accepted and ignored.
#[derive(Debug, Deserialize)]
struct SetBody {
    location: Option<String>,
    tags: Option<Map<String, Value>>,
}

/// `PUT …/virtualMachineScaleSets/{name}`: 201 with a new scale set (its
/// location must be served here), 200 with its tags replaced when it exists.
async fn put(
    State(state): State<AppState>,
    Path((sub, group, vmss)): Path<SetPath>,
    _version: ArmVersion,
    ArmBody(body): ArmBody,
) -> Result<Response, HttpError> {
    let id = set_id(&state, (&sub, &group, &vmss))?;
    let body: SetBody = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_body(format!("the body is not a scale set: {err}")))?;
    let tags = body.tags.unwrap_or_default();
    if let Some((name, _)) = tags.iter().find(|(_, value)| !value.is_string()) {
        let message = format!("tag {name:?} is not a string: tags map names to strings");
        return Err(ApiError::bad_request(format!("tags.{name}"), message).into());
    }
    let tags_json = Value::Object(tags).to_string();
    if let Some(existing) = state.store.get_scale_set(&id.to_string()).await? {
        if let Some(location) = &body.location
            && Location::parse("location", location)?.as_str() != existing.location
        {
            let message = format!(
                "scale set {vmss} is in {}: a scale set cannot move; leave location out or give {}",
                existing.location, existing.location
            );
            return Err(ApiError::bad_request("location", message).into());
        }
        state.store.set_scale_set_tags(&existing.id, &tags_json).await?;
        let (id, record) = find_set(&state, (&sub, &group, &vmss)).await?;
        let count = state.store.scale_set_instances(&record.id).await?.len();
        return Ok(Json(set_json(&id, &record, count)).into_response());
    }
    let Some(location) = body.location.as_deref() else {
        let message = format!("scale set {vmss} is new: give its location");
        return Err(ApiError::bad_request("location", message).into());
    };
    let location = enroll_location(&state, Some(location), &format!("scale set {vmss}"))?;
    let record = ScaleSetRecord {
        id: id.to_string(),
        subscription: id.subscription().to_string(),
        location: location.to_string(),
        tags_json,
        next_instance: 0,
        created_ms: now_ms(),
    };
    let record = state.store.ensure_scale_set(&record).await?;
    tracing::info!(scale_set = %id, "scale set created");
    Ok((StatusCode::CREATED, Json(set_json(&id, &record, 0))).into_response())
}

/// `PATCH …/virtualMachineScaleSets/{name}` (ARM's update, `az resource
/// tag`): replaces the scale set's tags, which its instances have too when a
/// capture chooses hosts by tag. 200 with the scale set.
async fn update(
    State(state): State<AppState>,
    Path((sub, group, vmss)): Path<SetPath>,
    _version: ArmVersion,
    ArmBody(body): ArmBody,
) -> Result<Json<Value>, HttpError> {
    let (_, record) = find_set(&state, (&sub, &group, &vmss)).await?;
    let tags = super::compute::tags_of_update(&body, "scale set")?;
    state.store.set_scale_set_tags(&record.id, &tags).await?;
    let (id, record) = find_set(&state, (&sub, &group, &vmss)).await?;
    let count = state.store.scale_set_instances(&record.id).await?.len();
    Ok(Json(set_json(&id, &record, count)))
}

async fn list_instances(
    State(state): State<AppState>,
    Path((sub, group, vmss)): Path<SetPath>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let (id, record) = find_set(&state, (&sub, &group, &vmss)).await?;
    let connected = state.hub.connected_set().await;
    let value: Vec<Value> = instances(&state, &record)
        .await?
        .iter()
        .map(|(number, vm)| instance_json(&id, *number, vm, connected.contains(&vm.id.to_lowercase())))
        .collect();
    Ok(Json(json!({ "value": value })))
}

async fn show_instance(
    State(state): State<AppState>,
    Path((sub, group, vmss, instance)): Path<(String, String, String, String)>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let (id, record) = find_set(&state, (&sub, &group, &vmss)).await?;
    let number = instance_number("instanceId", &instance)?;
    let instance_id = ResourceId::scale_set_vm(id.subscription(), id.resource_group(), id.name(), number);
    match instances(&state, &record).await?.iter().find(|(n, _)| *n == number) {
        Some((number, vm)) => {
            let connected = state.hub.is_connected(&vm.id).await;
            Ok(Json(instance_json(&id, *number, vm, connected)))
        }
        None => Err(ApiError::not_found(&instance_id).into()),
    }
}

/// An instance id as a client wrote it: a decimal number.
fn instance_number(field: &str, text: &str) -> Result<u32, HttpError> {
    let digits = !text.is_empty() && text.len() <= 9 && text.bytes().all(|b| b.is_ascii_digit());
    match digits.then(|| text.parse::<u32>().ok()).flatten() {
        Some(number) => Ok(number),
        None => {
            let message = format!("{field} {text:?} is not an instance id: instance ids are numbers such as \"0\"");
            Err(ApiError::bad_request(field, message).into())
        }
    }
}

/// `POST …/delete` body (`VirtualMachineScaleSetVMInstanceRequiredIDs`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InstanceIds {
    instance_ids: Vec<String>,
}

/// `POST …/virtualMachineScaleSets/{name}/delete` (az's `vmss
/// delete-instances`): removes the instances named, each cut off as `vm
/// extension delete` cuts a VM off, and forgotten (a host that joins again
/// gets a new id). 400, nothing removed, when one is not an instance.
async fn delete_instances(
    State(state): State<AppState>,
    Path((sub, group, vmss)): Path<SetPath>,
    _version: ArmVersion,
    ArmBody(body): ArmBody,
) -> Result<Response, HttpError> {
    let (id, record) = find_set(&state, (&sub, &group, &vmss)).await?;
    let body: InstanceIds = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad_body(format!(
            "the body must be {{\"instanceIds\": [\"0\", …]}}, the instances to remove: {err}"
        ))
    })?;
    if body.instance_ids.is_empty() {
        let message = "instanceIds is empty: name the instances to remove".to_owned();
        return Err(ApiError::bad_request("instanceIds", message).into());
    }
    let present = instances(&state, &record).await?;
    let mut chosen = Vec::new();
    for (index, text) in body.instance_ids.iter().enumerate() {
        let field = format!("instanceIds[{index}]");
        let number = instance_number(&field, text)?;
        let Some((_, vm)) = present.iter().find(|(n, _)| *n == number) else {
            let known: Vec<String> = present.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            let message = format!(
                "{field} \"{number}\" is not an instance of scale set {vmss}: its instances are [{}]",
                known.join(", ")
            );
            return Err(ApiError::bad_request(field, message).into());
        };
        if !chosen.iter().any(|(n, _)| *n == number) {
            chosen.push((number, vm.clone()));
        }
    }
    for (number, vm) in chosen {
        crate::lifecycle::cut_off(&state, &vm.id, "the instance was removed from its scale set").await?;
        state.store.delete_vm(&vm.id, now_ms()).await?;
        tracing::info!(scale_set = %id, instance = number, "scale-set instance removed");
    }
    Ok(Json(json!({})).into_response())
}

async fn list_extensions(
    State(state): State<AppState>,
    Path((sub, group, vmss)): Path<SetPath>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let (id, record) = find_set(&state, (&sub, &group, &vmss)).await?;
    Ok(Json(json!({ "value": [extension_json(&state, &id, &record).await?] })))
}

async fn show_extension(
    State(state): State<AppState>,
    Path((sub, group, vmss, extension)): Path<(String, String, String, String)>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let (id, record) = find_set(&state, (&sub, &group, &vmss)).await?;
    let extension = ResourceName::parse("vmssExtensionName", &extension)?;
    if !extension.as_str().eq_ignore_ascii_case(AGENT_EXTENSION_NAME) {
        let message = format!(
            "scale set {vmss} has no extension {extension}; the only extension netwatch scale sets have is \
             {AGENT_EXTENSION_NAME}, the agent"
        );
        return Err(ApiError::new(netwatch_api::error::ErrorCode::ResourceNotFound, message).into());
    }
    Ok(Json(extension_json(&state, &id, &record).await?))
}

/// `PUT …/virtualMachineScaleSets/{name}/extensions/{name}` (`vmss extension
/// set`): makes the scale set if it is new (201; 200 otherwise) and a new
/// reusable enrollment key, answered once under `properties.netwatch.enrollment`
/// with the command to run on every host.
async fn set_extension(
    State(state): State<AppState>,
    Path((sub, group, vmss, extension)): Path<(String, String, String, String)>,
    _version: ArmVersion,
    headers: HeaderMap,
    uri: Uri,
    ArmBody(body): ArmBody,
) -> Result<Response, HttpError> {
    let id = set_id(&state, (&sub, &group, &vmss))?;
    let (_, body) = parse_agent_extension("vmssExtensionName", &extension, &body)?;
    let settings = body.properties.settings.clone().unwrap_or(Value::Null);
    check_key_settings(&settings)?;
    let lifetime_s =
        key_setting(&settings, "keyExpiresInSeconds", 1, MAX_KEY_LIFETIME_S)?.unwrap_or(ENROLLMENT_LIFETIME_MS / 1000);
    let max_uses = key_setting(&settings, "keyMaxUses", 1, i64::from(u32::MAX))?;
    let existing = state.store.get_scale_set(&id.to_string()).await?;
    let record = match existing.clone() {
        Some(record) => {
            if let Some(location) = &body.location
                && Location::parse("location", location)?.as_str() != record.location
            {
                let message = format!("scale set {vmss} is in {}: give that location or none", record.location);
                return Err(ApiError::bad_request("location", message).into());
            }
            record
        }
        None => {
            let location = enroll_location(&state, body.location.as_deref(), &format!("scale set {vmss}"))?;
            ScaleSetRecord {
                id: id.to_string(),
                subscription: id.subscription().to_string(),
                location: location.to_string(),
                tags_json: "{}".to_owned(),
                next_instance: 0,
                created_ms: now_ms(),
            }
        }
    };
    let base = base_url(&state.config, &headers, &uri)?;
    let key = new_token().map_err(|err| ApiError::internal("make a scale-set enrollment key", err))?;
    let record = state.store.ensure_scale_set(&record).await?;
    // Versions, for the hosts there (upgraded at once when connected and idle).
    let versions = serde_json::to_string(&body.properties.settings_of_versions()).unwrap_or_default();
    for (_, vm) in instances(&state, &record).await? {
        state.store.set_extension_settings(&vm.id, &versions).await?;
        super::compute::offer_upgrade(&state, &vm).await;
    }
    let now = now_ms();
    let key_record = ScaleSetKeyRecord {
        digest: digest(&key),
        scale_set_key: record.id.to_lowercase(),
        created_ms: now,
        expires_ms: now + lifetime_s * 1000,
        max_uses,
        uses: 0,
        revoked_ms: None,
    };
    state.store.insert_scale_set_key(&key_record).await?;
    tracing::info!(scale_set = %id, max_uses, lifetime_s, "scale-set enrollment key made");
    let (command, foreground) = super::agent_install::enrollment_commands(
        &state,
        &base,
        &[
            ("--enroll-token", &key),
            ("--resource-group", id.resource_group().as_str()),
            ("--location", &record.location),
        ],
    );
    let id = ResourceId::parse("id", &record.id).unwrap_or(id);
    let mut answer = extension_json(&state, &id, &record).await?;
    answer["properties"]["netwatch"]["enrollment"] = json!({
        "key": key,
        "expiresOn": rfc3339(key_record.expires_ms),
        "maxUses": max_uses,
        "command": command,
        "foregroundCommand": foreground,
    });
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(answer)).into_response())
}

/// The key settings netwatch reads, spelt exactly so.
const KEY_SETTINGS: [&str; 2] = ["keyExpiresInSeconds", "keyMaxUses"];

/// `properties.settings`: null or an object, in which a key setting spelt
/// in another case is refused, not ignored (a `KeyMaxUses` ignored would make
/// an uncapped key). Other settings are left alone.
fn check_key_settings(settings: &Value) -> Result<(), HttpError> {
    let map = match settings {
        Value::Null => return Ok(()),
        Value::Object(map) => map,
        _ => {
            let message =
                format!("properties.settings must be an object such as {{\"keyMaxUses\": 10}}, not {settings}");
            return Err(ApiError::bad_request("properties.settings", message).into());
        }
    };
    for key in map.keys() {
        let near = KEY_SETTINGS
            .iter()
            .find(|known| known.eq_ignore_ascii_case(key) && *known != key);
        if let Some(known) = near {
            let field = format!("properties.settings.{key}");
            let message = format!("{field} is not a setting: did you mean {known}? (settings are case-sensitive)");
            return Err(ApiError::bad_request(field, message).into());
        }
    }
    Ok(())
}

/// A whole-number key setting within `min..=max`, if given.
fn key_setting(settings: &Value, name: &str, min: i64, max: i64) -> Result<Option<i64>, HttpError> {
    let field = format!("properties.settings.{name}");
    match settings.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_i64().filter(|n| (min..=max).contains(n)) {
            Some(n) => Ok(Some(n)),
            None => {
                let message = format!("{field} {value} must be a whole number from {min} to {max}");
                Err(ApiError::bad_request(field, message).into())
            }
        },
    }
}

/// `DELETE …/virtualMachineScaleSets/{name}/extensions/{name}` (`vmss
/// extension delete`): revokes every key of the scale set and cuts every
/// instance's agent off. 200; the instances stay listed (as a VM stays).
async fn delete_extension(
    State(state): State<AppState>,
    Path((sub, group, vmss, extension)): Path<(String, String, String, String)>,
    _version: ArmVersion,
    axum::extract::Query(query): axum::extract::Query<super::compute::DeleteQuery>,
) -> Result<Response, HttpError> {
    let (id, record) = find_set(&state, (&sub, &group, &vmss)).await?;
    let extension = ResourceName::parse("vmssExtensionName", &extension)?;
    if !extension.as_str().eq_ignore_ascii_case(AGENT_EXTENSION_NAME) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let purge = super::compute::purge_of(&query)?;
    let revoked = state.store.revoke_scale_set_keys(&record.id, now_ms()).await?;
    let hosts = instances(&state, &record).await?;
    for (_, vm) in &hosts {
        // Before the cut-off closes its channel: the agent uninstalls itself.
        state
            .hub
            .send(&vm.id, netwatch_api::agent::ControllerMessage::Uninstall { purge })
            .await;
        crate::lifecycle::cut_off(&state, &vm.id, "the agent extension was removed from the scale set").await?;
    }
    tracing::info!(scale_set = %id, keys = revoked, hosts = hosts.len(), "agent extension removed from the scale set");
    Ok(StatusCode::OK.into_response())
}

/// ARM tags as stored, an object.
fn tags(record: &ScaleSetRecord) -> Value {
    serde_json::from_str::<Value>(&record.tags_json)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// The agent as the scale set's extension, in its model.
fn profile_extension() -> Value {
    json!({
        "name": AGENT_EXTENSION_NAME,
        "properties": {
            "publisher": AGENT_PUBLISHER,
            "type": AGENT_EXTENSION_NAME,
            "typeHandlerVersion": AGENT_HANDLER_VERSION,
            "autoUpgradeMinorVersion": true,
        },
    })
}

/// A scale set's ARM JSON (`VirtualMachineScaleSet`).
fn set_json(id: &ResourceId, record: &ScaleSetRecord, instances: usize) -> Value {
    json!({
        "id": record.id,
        "name": id.name().as_str(),
        "type": "Microsoft.Compute/virtualMachineScaleSets",
        "location": record.location,
        "tags": tags(record),
        "sku": {"name": "Standard_netwatch", "tier": "Standard", "capacity": instances},
        "properties": {
            "provisioningState": "Succeeded",
            "uniqueId": Uuid::new_v5(&VM_ID_NAMESPACE, id.key().as_bytes()).to_string(),
            "orchestrationMode": "Uniform",
            "overprovision": false,
            "singlePlacementGroup": true,
            "upgradePolicy": {"mode": "Manual"},
            "timeCreated": rfc3339(record.created_ms),
            "virtualMachineProfile": {
                "osProfile": {"computerNamePrefix": id.name().as_str()},
                "storageProfile": {"osDisk": {"osType": "Linux"}},
                "extensionProfile": {"extensions": [profile_extension()]},
            },
        },
    })
}

/// An instance's ARM JSON (`VirtualMachineScaleSetVM`).
fn instance_json(set: &ResourceId, number: u32, vm: &VmRecord, connected: bool) -> Value {
    let id = ResourceId::scale_set_vm(set.subscription(), set.resource_group(), set.name(), number);
    let facts = agent_facts(vm);
    let computer_name = facts.get("hostname").and_then(Value::as_str).map_or_else(
        || crate::lifecycle::fleet::instance_name(set.name(), number),
        str::to_owned,
    );
    json!({
        "id": vm.id,
        "name": crate::lifecycle::fleet::instance_name(set.name(), number),
        "instanceId": number.to_string(),
        "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
        "location": vm.location,
        "tags": serde_json::from_str::<Value>(&vm.tags_json).ok().filter(Value::is_object).unwrap_or_else(|| json!({})),
        "sku": {"name": "Standard_netwatch", "tier": "Standard"},
        "properties": {
            "latestModelApplied": true,
            "provisioningState": "Succeeded",
            "vmId": Uuid::new_v5(&VM_ID_NAMESPACE, id.key().as_bytes()).to_string(),
            "osProfile": {"computerName": computer_name},
            "storageProfile": {"osDisk": {"osType": "Linux"}},
            "resources": [profile_extension()],
            "netwatch": netwatch_block(vm, facts, connected),
        },
    })
}

/// The agent as the scale set's extension, with what netwatch knows of it:
/// how many instances, and its keys (never the keys themselves).
async fn extension_json(state: &AppState, id: &ResourceId, record: &ScaleSetRecord) -> Result<Value, HttpError> {
    let now = now_ms();
    let keys: Vec<Value> = state
        .store
        .scale_set_keys(&record.id)
        .await?
        .iter()
        .map(|key| {
            json!({
                "createdOn": rfc3339(key.created_ms),
                "expiresOn": rfc3339(key.expires_ms),
                "uses": key.uses,
                "maxUses": key.max_uses,
                "revoked": key.revoked_ms.is_some(),
                "usable": key.refusal(now).is_none() && key.max_uses.is_none_or(|max| key.uses < max),
            })
        })
        .collect();
    let count = state.store.scale_set_instances(&record.id).await?.len();
    Ok(json!({
        "id": format!("{id}/extensions/{AGENT_EXTENSION_NAME}"),
        "name": AGENT_EXTENSION_NAME,
        "type": "Microsoft.Compute/virtualMachineScaleSets/extensions",
        "properties": {
            "publisher": AGENT_PUBLISHER,
            "type": AGENT_EXTENSION_NAME,
            "typeHandlerVersion": AGENT_HANDLER_VERSION,
            "autoUpgradeMinorVersion": true,
            "provisioningState": "Succeeded",
            "settings": {},
            "netwatch": {"instances": count, "keys": keys},
        },
    }))
}
