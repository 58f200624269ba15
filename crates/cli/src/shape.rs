//! az's output shape: what az does to an ARM answer before printing it.
//!
//! - **Flattening** (aaz `client_flatten`, and the SDK models' flattening):
//!   the keys of `properties` move to the top level. A key that clashes with
//!   a top-level one gets az's name for it, `type` → `typePropertiesType`.
//! - **Schema** (aaz commands): only the fields of az's output schema for the
//!   api-version it uses are kept ([`PACKET_CAPTURE`], [`QUERY_STATUS`],
//!   [`NETWORK_WATCHER`]); SDK-based commands (`storage account list`) show
//!   every model attribute, `null` when the answer lacks it ([`STORAGE_ACCOUNT`]).
//! - **`resourceGroup`** (azure-cli `commands/transform.py`,
//!   `_add_resource_group`): every object with an `id` of the form
//!   `/subscriptions/…/resourceGroups/{rg}/providers/…/{name}` and no
//!   `resourceGroup` gets one, at any depth.
//! - **Key order**: sorted, as az's JSON output (`json.dumps(sort_keys=True)`),
//!   table and tsv print them when no `--query` reorders them.
//!
//! *netwatch's choice*: what netwatch adds beyond Azure's schema stays, under
//! a `netwatch` key (the agent's live facts on VMs and extensions, capture
//! counters in `show-status`: DESIGN §2, §3); az drops it.

use serde_json::{Map, Value};

/// One field of an output schema.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub shape: Shape,
}

/// What an output schema keeps of a value.
#[derive(Debug)]
pub enum Shape {
    /// The value as it is.
    Any,
    /// An object: only these fields (aaz drops the others).
    Object(&'static [Field]),
    /// A list whose items have this shape.
    List(&'static Shape),
}

const fn field(name: &'static str, shape: Shape) -> Field {
    Field { name, shape }
}

const fn any(name: &'static str) -> Field {
    field(name, Shape::Any)
}

/// The key netwatch's own additions are kept under.
const NETWATCH: &str = "netwatch";

/// `PacketCaptureResult` in az's 2022-01-01 schema (aaz `_create.py`,
/// `_show.py`, `_list.py`), before flattening.
pub const PACKET_CAPTURE: Shape = Shape::Object(&[
    any("etag"),
    any("id"),
    any("name"),
    field(
        "properties",
        Shape::Object(&[
            any("bytesToCapturePerPacket"),
            field(
                "filters",
                Shape::List(&Shape::Object(&[
                    any("localIPAddress"),
                    any("localPort"),
                    any("protocol"),
                    any("remoteIPAddress"),
                    any("remotePort"),
                    // netwatch's filter fields (issue 18): answered only when
                    // a filter sets them, which az's own requests never do.
                    any("icmpType"),
                    any("icmpCode"),
                    any("tcpFlags"),
                    any("direction"),
                    any("bpfExpression"),
                    any("bpfProgram"),
                ])),
            ),
            any("provisioningState"),
            field("scope", Shape::Object(&[any("exclude"), any("include")])),
            field(
                "storageLocation",
                Shape::Object(&[any("filePath"), any("storageId"), any("storagePath")]),
            ),
            any("target"),
            any("targetType"),
            any("timeLimitInSeconds"),
            any("totalBytesPerSession"),
        ]),
    ),
]);

/// `PacketCaptureQueryStatusResult` (aaz `_show_status.py`), plus netwatch's block.
pub const QUERY_STATUS: Shape = Shape::Object(&[
    any("captureStartTime"),
    any("id"),
    any("name"),
    any("packetCaptureError"),
    any("packetCaptureStatus"),
    any("stopReason"),
    any(NETWATCH),
]);

/// `NetworkWatcher` (aaz `network watcher list`, 2022-01-01).
pub const NETWORK_WATCHER: Shape = Shape::Object(&[
    any("etag"),
    any("id"),
    any("location"),
    any("name"),
    field("properties", Shape::Object(&[any("provisioningState")])),
    any("tags"),
    any("type"),
]);

/// The attributes of the SDK's `StorageAccount` (azure-mgmt-storage, as `az
/// storage account list` prints them), flattened; nested models whose
/// attributes az prints in full follow in [`STORAGE_ACCOUNT_NESTED`].
pub const STORAGE_ACCOUNT: &[&str] = &[
    "accessTier",
    "accountMigrationInProgress",
    "allowBlobPublicAccess",
    "allowCrossTenantReplication",
    "allowSharedKeyAccess",
    "allowSharedKeyAccessForServices",
    "allowedCopyScope",
    "azureFilesIdentityBasedAuthentication",
    "blobRestoreStatus",
    "creationTime",
    "customDomain",
    "dataCollaborationPolicyProperties",
    "defaultToOAuthAuthentication",
    "dnsEndpointType",
    "dualStackEndpointPreference",
    "enableExtendedGroups",
    "enableHttpsTrafficOnly",
    "enableNfsV3",
    "encryption",
    "extendedLocation",
    "failoverInProgress",
    "geoPriorityReplicationStatus",
    "geoReplicationStats",
    "id",
    "identity",
    "immutableStorageWithVersioning",
    "isHnsEnabled",
    "isLocalUserEnabled",
    "isSftpEnabled",
    "isSkuConversionBlocked",
    "keyCreationTime",
    "keyPolicy",
    "kind",
    "largeFileSharesState",
    "lastGeoFailoverTime",
    "location",
    "minimumTlsVersion",
    "name",
    "networkRuleSet",
    "placement",
    "primaryEndpoints",
    "primaryLocation",
    "privateEndpointConnections",
    "provisioningState",
    "publicNetworkAccess",
    "routingPreference",
    "sasPolicy",
    "secondaryEndpoints",
    "secondaryLocation",
    "sku",
    "statusOfPrimary",
    "statusOfSecondary",
    "storageAccountSkuConversionStatus",
    "systemData",
    "tags",
    "type",
    "zones",
];

/// Nested models of [`STORAGE_ACCOUNT`] az prints with every attribute.
pub const STORAGE_ACCOUNT_NESTED: &[(&str, &[&str])] = &[
    (
        "primaryEndpoints",
        &[
            "blob",
            "dfs",
            "file",
            "internetEndpoints",
            "ipv6Endpoints",
            "microsoftEndpoints",
            "queue",
            "table",
            "web",
        ],
    ),
    ("sku", &["name", "tier"]),
];

/// Keeps what `shape` keeps of `value` (aaz's deserialisation); `netwatch`
/// blocks are kept wherever they are.
pub fn project(value: &Value, shape: &Shape) -> Value {
    match (value, shape) {
        (Value::Object(object), Shape::Object(fields)) => {
            let mut out = Map::new();
            for (key, item) in object {
                if let Some(field) = fields.iter().find(|f| f.name == key) {
                    out.insert(key.clone(), project(item, &field.shape));
                } else if key == NETWATCH {
                    out.insert(key.clone(), item.clone());
                }
            }
            Value::Object(out)
        }
        (Value::Array(items), Shape::List(item_shape)) => {
            Value::Array(items.iter().map(|item| project(item, item_shape)).collect())
        }
        (other, _) => other.clone(),
    }
}

/// Moves the keys of `properties` to the top level (module doc).
pub fn flatten(value: Value) -> Value {
    let Value::Object(mut object) = value else {
        return value;
    };
    let Some(Value::Object(properties)) = object.remove("properties") else {
        return Value::Object(object);
    };
    for (key, item) in properties {
        if object.contains_key(&key) {
            let mut renamed = format!("{key}Properties");
            let mut chars = key.chars();
            if let Some(first) = chars.next() {
                renamed.extend(first.to_uppercase());
                renamed.push_str(chars.as_str());
            }
            object.insert(renamed, item);
        } else {
            object.insert(key, item);
        }
    }
    Value::Object(object)
}

/// Every attribute of an SDK model: the missing ones as `null`.
pub fn with_nulls(value: Value, attributes: &[&str]) -> Value {
    let Value::Object(mut object) = value else {
        return value;
    };
    for attribute in attributes {
        object.entry(*attribute).or_insert(Value::Null);
    }
    Value::Object(object)
}

/// az's `_add_resource_group`, recursively (module doc).
pub fn add_resource_group(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(add_resource_group),
        Value::Object(object) => {
            let has_group = object.keys().any(|key| key.eq_ignore_ascii_case("resourceGroup"));
            if !has_group && let Some(group) = object.get("id").and_then(Value::as_str).and_then(resource_group_of) {
                object.insert("resourceGroup".to_owned(), Value::String(group));
            }
            for (key, item) in object.iter_mut() {
                if key != "sourceVault" {
                    add_resource_group(item);
                }
            }
        }
        _ => {}
    }
}

/// The resource group of `id` as az's `_parse_id` finds it: the fifth
/// `/`-separated part when the fourth is `resourceGroups` (any case) and a
/// ninth part exists.
pub fn resource_group_of(id: &str) -> Option<String> {
    let parts: Vec<&str> = id.split('/').collect();
    (parts.len() > 8 && parts[3].eq_ignore_ascii_case("resourcegroups") && !id.is_empty()).then(|| parts[4].to_owned())
}

/// Keys sorted at every depth (module doc).
pub fn sort_keys(value: Value) -> Value {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(String, Value)> = object.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sort_keys(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// The last steps every command's output goes through: `resourceGroup`, sorted keys.
pub fn finish(mut value: Value) -> Value {
    add_resource_group(&mut value);
    sort_keys(value)
}

/// A packet capture as `packet-capture create/show/list` print it.
pub fn packet_capture(value: &Value) -> Value {
    finish(flatten(project(value, &PACKET_CAPTURE)))
}

/// A capture's status as `packet-capture show-status` prints it.
pub fn query_status(value: &Value) -> Value {
    finish(project(value, &QUERY_STATUS))
}

/// A network watcher as `network watcher list/show/configure` print it.
pub fn network_watcher(value: &Value) -> Value {
    finish(flatten(project(value, &NETWORK_WATCHER)))
}

/// A VM or scale-set extension as `vm extension show/set` and `vmss
/// extension show/set` print it.
pub fn vm_extension(value: &Value) -> Value {
    finish(flatten(value.clone()))
}

/// A scale set (`vmss list/show`) or one of its instances (`vmss
/// list-instances`, `vmss show --instance-id`), flattened as aaz's schemas
/// print them: `sku` and `upgradePolicy` stay objects (az's table reads
/// `sku.capacity` and `upgradePolicy.mode`).
pub fn scale_set(value: &Value) -> Value {
    finish(flatten(value.clone()))
}

/// A VM as `vm show/list` print it: flattened, and its extensions in
/// `resources` flattened too (as aaz's VM schema does).
pub fn virtual_machine(value: &Value) -> Value {
    let mut vm = flatten(value.clone());
    if let Some(Value::Array(resources)) = vm.get_mut("resources") {
        for resource in resources.iter_mut() {
            *resource = flatten(resource.take());
            // aaz's schema of a VM's `resources` has no resource `type`.
            if let Some(object) = resource.as_object_mut() {
                object.remove("type");
            }
        }
    }
    finish(vm)
}

/// A storage account as `storage account list` prints it.
pub fn storage_account(value: &Value) -> Value {
    let mut account = with_nulls(flatten(value.clone()), STORAGE_ACCOUNT);
    for (key, attributes) in STORAGE_ACCOUNT_NESTED {
        if let Some(nested) = account.get_mut(*key)
            && nested.is_object()
        {
            *nested = with_nulls(nested.take(), attributes);
        }
    }
    finish(account)
}

/// A resource of netwatch's own under a network watcher (a flight
/// recorder, a trigger) as its commands print it: flattened, every field
/// kept (az has no schema of it to keep to).
pub fn netwatch_resource(value: &Value) -> Value {
    finish(flatten(value.clone()))
}

/// `{"value": [...]}` → the items, each shaped by `item`.
pub fn list(value: &Value, item: fn(&Value) -> Value) -> Value {
    let items = value
        .get("value")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Value::Array(items.iter().map(item).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CAPTURE_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus/packetCaptures/pc1";

    /// What the controller answers a create with (the oracle run's answer).
    fn capture_answer() -> Value {
        json!({
            "name": "pc1", "id": CAPTURE_ID, "etag": "W/\"e\"",
            "properties": {
                "provisioningState": "Succeeded",
                "target": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/netwatch/providers/Microsoft.Compute/virtualMachines/vm",
                "targetType": "AzureVM",
                "bytesToCapturePerPacket": 0, "totalBytesPerSession": 1073741824, "timeLimitInSeconds": 18000,
                "storageLocation": {"storageId": "/s", "storagePath": "https://x/y.cap"},
                "filters": [{"protocol": "UDP", "localIPAddress": "", "remoteIPAddress": "", "localPort": "", "remotePort": ""}],
                "continuousCapture": null
            }
        })
    }

    #[test]
    fn a_capture_has_az_s_keys_in_az_s_order() {
        let shaped = packet_capture(&capture_answer());
        let keys: Vec<&str> = shaped.as_object().unwrap().keys().map(String::as_str).collect();
        // az 2.91 against netwatch printed exactly these (oracle run of `packet-capture create`).
        assert_eq!(
            keys,
            [
                "bytesToCapturePerPacket",
                "etag",
                "filters",
                "id",
                "name",
                "provisioningState",
                "resourceGroup",
                "storageLocation",
                "target",
                "targetType",
                "timeLimitInSeconds",
                "totalBytesPerSession"
            ]
        );
        assert_eq!(shaped["resourceGroup"], "NetworkWatcherRG");
        let filter_keys: Vec<&str> = shaped["filters"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            filter_keys,
            [
                "localIPAddress",
                "localPort",
                "protocol",
                "remoteIPAddress",
                "remotePort"
            ]
        );
    }

    #[test]
    fn query_status_keeps_netwatch_s_counters() {
        let shaped = query_status(&json!({
            "name": "pc1", "id": CAPTURE_ID, "packetCaptureStatus": "Running", "packetCaptureError": [],
            "captureStartTime": "2026-01-01T00:00:00.1234567Z", "netwatch": {"packetsCaptured": 3}, "other": 1
        }));
        let keys: Vec<&str> = shaped.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "captureStartTime",
                "id",
                "name",
                "netwatch",
                "packetCaptureError",
                "packetCaptureStatus",
                "resourceGroup"
            ]
        );
        // The server's time as it came (Azure's form, issue 12).
        assert_eq!(shaped["captureStartTime"], "2026-01-01T00:00:00.1234567Z");
    }

    #[test]
    fn a_clashing_property_gets_az_s_name() {
        let shaped = vm_extension(&json!({
            "id": "/subscriptions/s/resourceGroups/netwatch/providers/Microsoft.Compute/virtualMachines/vm/extensions/NetworkWatcherAgentLinux",
            "type": "Microsoft.Compute/virtualMachines/extensions",
            "properties": {"type": "NetworkWatcherAgentLinux", "publisher": "Microsoft.Azure.NetworkWatcher"}
        }));
        assert_eq!(shaped["type"], "Microsoft.Compute/virtualMachines/extensions");
        assert_eq!(shaped["typePropertiesType"], "NetworkWatcherAgentLinux");
        assert_eq!(shaped["resourceGroup"], "netwatch");
    }

    #[test]
    fn resource_groups_as_az_parses_them() {
        assert_eq!(resource_group_of(CAPTURE_ID).as_deref(), Some("NetworkWatcherRG"));
        assert_eq!(
            resource_group_of("/subscriptions/s/resourcegroups/rg/providers/Microsoft.Storage/storageAccounts/a")
                .as_deref(),
            Some("rg")
        );
        // Too short for az's parts[8], or not a resource group id.
        assert_eq!(resource_group_of("/subscriptions/s/resourceGroups/rg"), None);
        assert_eq!(resource_group_of("/subscriptions/s/locations/westus/x/y/z/w"), None);
        let mut nested =
            json!({"value": [{"id": CAPTURE_ID, "inner": {"id": CAPTURE_ID}}], "sourceVault": {"id": CAPTURE_ID}});
        add_resource_group(&mut nested);
        assert_eq!(nested["value"][0]["inner"]["resourceGroup"], "NetworkWatcherRG");
        assert!(nested["sourceVault"].get("resourceGroup").is_none());
    }

    #[test]
    fn a_storage_account_lists_every_sdk_attribute() {
        let shaped = storage_account(&json!({
            "id": "/subscriptions/s/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/netwatchlocal",
            "name": "netwatchlocal", "sku": {"name": "Standard_LRS", "tier": "Standard"},
            "properties": {"primaryEndpoints": {"blob": "https://x/"}, "provisioningState": "Succeeded"}
        }));
        let object = shaped.as_object().unwrap();
        assert_eq!(
            object.len(),
            STORAGE_ACCOUNT.len() + 1,
            "every attribute and resourceGroup"
        );
        assert_eq!(shaped["accessTier"], Value::Null);
        assert_eq!(shaped["primaryEndpoints"]["dfs"], Value::Null);
        assert_eq!(shaped["primaryEndpoints"]["blob"], "https://x/");
    }

    #[test]
    fn watchers_flatten_and_drop_what_az_does_not_know() {
        let shaped = network_watcher(&json!({
            "id": "/subscriptions/s/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus",
            "name": "NetworkWatcher_westus", "type": "Microsoft.Network/networkWatchers", "location": "westus",
            "tags": {}, "etag": "W/\"1\"", "properties": {"provisioningState": "Succeeded", "extra": 1}, "zz": 2
        }));
        let keys: Vec<&str> = shaped.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "etag",
                "id",
                "location",
                "name",
                "provisioningState",
                "resourceGroup",
                "tags",
                "type"
            ]
        );
    }
}
