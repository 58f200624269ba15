//! The resources around captures, driven through `routes::router` with
//! `oneshot`: VMs and their agent extension (VM records inserted directly stand
//! in for registered agents), storage accounts, and the file routes over local
//! storage accounts in a temp directory: an agent's upload of a capture run's
//! file (grant, parts, commit; capture records inserted directly stand in for
//! created captures) and downloads with ranges.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine as _;
use netwatch_api::agent::{AgentCaptureState, CaptureReport, ReportStats, UploadProgress, run_id};
use netwatch_api::packet_capture::{PcError, StopReason, UploadState};
use netwatch_controller::app::{ApiConfig, AppState};
use netwatch_controller::hub::sweep_lost_agents;
use netwatch_controller::lifecycle::apply_report;
use netwatch_controller::routes::router;
use netwatch_controller::store::{
    AgentCredentialRecord, CaptureRecord, CaptureStatus, EnrollmentRecord, OperationKind, OperationRecord,
    OperationStatus, Store, VmRecord, WatcherRecord,
};
use netwatch_storage::{AccountConfig, AccountKind, Accounts, MIN_LOCAL_PART_SIZE, capture_blob_path};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

const SUB: &str = "00000000-0000-0000-0000-000000000000";
const V: &str = "api-version=2024-11-01";
const HOST: &str = "netwatch.test:8443";
const UPLOAD: &str = "/netwatch/v1/agent/files";
const UPLOADS: &str = "/netwatch/v1/agent/uploads";
const UPLOADS_COMPLETE: &str = "/netwatch/v1/agent/uploads/complete";
const DOWNLOAD: &str = "/netwatch/v1/storage";
/// A capture's blob path, in Azure's shape (mixed case on purpose: blob paths keep it).
const BLOB: &str = "network-watcher-logs/subscriptions/x/2025/01/31/PacketCapture_16_39_41_077.cap";
/// The network watcher the test captures belong to.
const NW: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus";
/// When the test captures were created: 2025-01-31T16:39:41.077Z.
const CREATED_MS: i64 = 1_738_341_581_077;
/// Bytes per part of the test accounts: the least a local account takes
/// ([`MIN_LOCAL_PART_SIZE`]).
const PART: usize = 1024 * 1024;

fn vm_id(group: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{name}")
}

fn account_id(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/{name}")
}

/// Local storage accounts `names` in `dir`, with parts of [`PART`] bytes so
/// that a file of a few MiB has several; `archive` is in `Storage-RG`.
fn accounts(dir: &Path, names: &[&str]) -> Accounts {
    assert_eq!(u64::try_from(PART).unwrap(), MIN_LOCAL_PART_SIZE);
    let configs = names
        .iter()
        .map(|name| {
            let mut account = AccountConfig::new(name, AccountKind::Local { path: dir.join(name) }).unwrap();
            account.part_size = Some(MIN_LOCAL_PART_SIZE);
            if *name == "archive" {
                account.resource_group = "Storage-RG".parse().unwrap();
            }
            account
        })
        .collect();
    Accounts::try_new(configs).unwrap()
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

struct Api {
    router: Router,
    store: Store,
    config: ApiConfig,
    dir: Arc<tempfile::TempDir>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.bytes)))
    }

    /// The JSON body of a 200.
    fn ok(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", String::from_utf8_lossy(&self.bytes));
        self.json()
    }
}

/// A capture run inserted into the store.
struct Run {
    /// The run id agents name it by (`{capture id}#{created ms}`).
    id: String,
    /// The capture's resource id.
    capture: String,
    /// Where its first file downloads from, as `storageLocation.storagePath` says.
    storage_path: String,
}

impl Api {
    /// An API with VMs `vm1` (rg1, westus, agent facts) and `vm2` (rg2,
    /// eastus, none), and storage accounts `captures` (default resource group)
    /// and `archive` (`Storage-RG`), both local directories.
    async fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("state.db").display()))
            .await
            .unwrap();
        let facts = json!({
            "hostname": "host-1", "agentVersion": "0.1.0", "connectedMs": 5,
            "interfaces": [
                {"name": "lo", "addresses": ["127.0.0.1/8"]},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "addresses": ["10.0.0.4/24", "fe80::1/64"]},
            ],
        });
        let vms = [
            ("rg1", "vm1", "westus", facts.to_string(), Some(CREATED_MS)),
            ("rg2", "vm2", "eastus", "{}".to_owned(), None),
        ];
        for (group, name, location, agent_json, last_seen_ms) in vms {
            let vm = VmRecord {
                id: vm_id(group, name),
                subscription: SUB.into(),
                location: location.into(),
                agent_json,
                last_seen_ms,
                created_ms: 1,
                tags_json: "{}".to_owned(),
            };
            store.upsert_vm(&vm).await.unwrap();
        }
        let accounts = accounts(dir.path(), &["captures", "archive"]);
        let config = ApiConfig {
            accounts_dir: Some(dir.path().join("made")),
            ..ApiConfig::default()
        };
        let router = router(AppState::new(store.clone(), config.clone(), accounts));
        Api {
            router,
            store,
            config,
            dir: Arc::new(dir),
        }
    }

    /// This controller restarted with `config` and `accounts`: the same store
    /// and directory (and, with a clone of its config, the same grant key).
    fn restarted(&self, config: ApiConfig, accounts: Accounts) -> Api {
        Api {
            router: router(AppState::new(self.store.clone(), config.clone(), accounts)),
            store: self.store.clone(),
            config,
            dir: Arc::clone(&self.dir),
        }
    }

    async fn send(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Answer {
        let mut request = Request::builder().method(method).uri(uri).header(header::HOST, HOST);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        Answer {
            status,
            headers,
            bytes: bytes.to_vec(),
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Method::GET, uri, &[], None).await
    }

    async fn post(&self, uri: &str, body: &Value) -> Answer {
        let body = body.to_string().into_bytes();
        self.send(Method::POST, uri, &[("content-type", "application/json")], Some(body))
            .await
    }

    /// A capture run `name` of `vm1`, created at [`CREATED_MS`], as the API
    /// records one: its files go to storage account `account`, or stay on the
    /// host without one.
    async fn capture_run(&self, name: &str, account: Option<&str>) -> Run {
        let watcher = WatcherRecord {
            id: NW.into(),
            subscription: SUB.into(),
            location: "westus".into(),
            created_ms: 1,
        };
        let watcher = self.store.ensure_watcher(&watcher).await.unwrap();
        let blob = capture_blob_path(SUB, "rg1", "vm1", CREATED_MS);
        let storage_path = format!("http://{HOST}{DOWNLOAD}/{}/{blob}", account.unwrap_or("none"));
        let location = match account {
            Some(account) => json!({"storageId": account_id(account), "storagePath": storage_path}),
            None => json!({"filePath": "/var/captures/pc.cap"}),
        };
        let request = json!({"properties": {
            "target": vm_id("rg1", "vm1"), "targetType": "AzureVM", "storageLocation": location}});
        let record = CaptureRecord {
            id: format!("{NW}/packetCaptures/{name}"),
            watcher_id: watcher.id,
            target_id: vm_id("rg1", "vm1"),
            request_json: request.to_string(),
            status: CaptureStatus::Stopped,
            stop_reason: Some("TimeExceeded".into()),
            errors_json: "[]".into(),
            started_ms: Some(CREATED_MS),
            stats_json: "{}".into(),
            etag: "W/\"1\"".into(),
            version: 1,
            created_ms: CREATED_MS,
            updated_ms: CREATED_MS,
            parent_key: None,
            instance: None,
        };
        self.store.insert_capture(&record).await.unwrap();
        Run {
            id: run_id(&record.id, CREATED_MS),
            capture: record.id,
            storage_path,
        }
    }

    /// `POST UPLOADS`: grants for file `seq` of `run`, of `data`.
    async fn grant(&self, run: &str, seq: u32, data: &[u8]) -> Answer {
        let request = json!({"captureId": run, "seq": seq, "size": data.len(), "sha256": sha256_hex(data)});
        self.post(UPLOADS, &request).await
    }

    /// `PUT` of `part` to a granted `url`, saying its true length, with `headers`.
    async fn put_part(&self, url: &str, part: &[u8], headers: &[(&str, &str)]) -> Answer {
        let length = part.len().to_string();
        let mut headers = headers.to_vec();
        headers.push(("content-length", &length));
        self.send(Method::PUT, url, &headers, Some(part.to_vec())).await
    }

    /// `POST UPLOADS_COMPLETE` of upload `upload_id` of file `seq` of `run`,
    /// said to be `data`, with `receipts` (part, id).
    async fn complete(&self, run: &str, seq: u32, upload_id: &str, data: &[u8], receipts: &[(u32, &str)]) -> Answer {
        let parts: Vec<Value> = receipts
            .iter()
            .map(|(part, id)| json!({"part": part, "id": id}))
            .collect();
        let request = json!({"captureId": run, "seq": seq, "uploadId": upload_id, "size": data.len(),
            "sha256": sha256_hex(data), "parts": parts});
        self.post(UPLOADS_COMPLETE, &request).await
    }

    /// A whole upload of file `seq` of `run`: grant, every part, commit; the
    /// commit's answer.
    async fn upload(&self, run: &str, seq: u32, data: &[u8]) -> Answer {
        let grant = self.grant(run, seq, data).await.ok();
        let mut receipts = Vec::new();
        for part in grant["parts"].as_array().unwrap() {
            let number = u32::try_from(part["part"].as_u64().unwrap()).unwrap();
            let stored = self
                .put_part(part["url"].as_str().unwrap(), chunk(data, number), &[])
                .await;
            stored.ok();
            receipts.push((number, stored.header("etag").unwrap().to_owned()));
        }
        let receipts: Vec<(u32, &str)> = receipts.iter().map(|(part, id)| (*part, id.as_str())).collect();
        let upload_id = grant["uploadId"].as_str().unwrap();
        self.complete(run, seq, upload_id, data, &receipts).await
    }

    /// `POST …/queryStatus` of capture `capture`: the whole status.
    async fn netwatch_status_of(&self, capture: &str) -> Value {
        let answer = self
            .send(Method::POST, &format!("{capture}/queryStatus?{V}"), &[], None)
            .await;
        answer.ok()
    }

    /// `POST …/queryStatus` of capture `capture`: its `netwatch` status.
    async fn netwatch_status(&self, capture: &str) -> Value {
        let answer = self
            .send(Method::POST, &format!("{capture}/queryStatus?{V}"), &[], None)
            .await;
        answer.ok()["netwatch"].clone()
    }

    async fn download(&self, method: Method, path: &str, range: Option<&str>) -> Answer {
        let headers: Vec<(&str, &str)> = range.map(|range| ("range", range)).into_iter().collect();
        self.send(method, &format!("{DOWNLOAD}/{path}"), &headers, None).await
    }
}

/// Part `part` (1-based) of `data` in parts of [`PART`] bytes.
fn chunk(data: &[u8], part: u32) -> &[u8] {
    let start = (usize::try_from(part).unwrap() - 1) * PART;
    &data[start..data.len().min(start + PART)]
}

/// The URL granted for part `part`.
fn part_url(grant: &Value, part: u32) -> String {
    let granted = grant["parts"].as_array().unwrap().iter().find(|p| p["part"] == part);
    granted.unwrap_or_else(|| panic!("no grant of part {part}: {grant}"))["url"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The value of query parameter `name` of `url`.
fn param<'a>(url: &'a str, name: &str) -> &'a str {
    let query = url.split_once('?').unwrap().1;
    let pair = query.split('&').find_map(|pair| pair.strip_prefix(&format!("{name}=")));
    pair.unwrap_or_else(|| panic!("{url} has no {name}"))
}

/// `url` with query parameter `name` set to `value`.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (path, query) = url.split_once('?').unwrap();
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key == name => format!("{name}={value}"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// The account and blob path of a download URL (`storagePath`), as
/// [`Api::download`] takes them.
fn download_path(storage_path: &str) -> &str {
    storage_path
        .strip_prefix(&format!("http://{HOST}{DOWNLOAD}/"))
        .unwrap_or_else(|| panic!("{storage_path} is not a download URL of this server"))
}

/// That `run`'s file is neither in storage nor in its capture's status.
async fn assert_nothing_stored(api: &Api, run: &Run) {
    let answer = api.download(Method::GET, download_path(&run.storage_path), None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "ResourceNotFound", "was not found");
    assert_eq!(api.netwatch_status(&run.capture).await.get("files"), None);
}

fn assert_error(answer: &Answer, status: StatusCode, code: &str, message_part: &str) {
    assert_eq!(answer.status, status, "{}", String::from_utf8_lossy(&answer.bytes));
    let body = answer.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(message_part), "{message:?} lacks {message_part:?}");
}

#[tokio::test]
async fn vms_are_the_registered_hosts() {
    let api = Api::new().await;
    let vm1 = vm_id("rg1", "vm1");

    // az's spelling, ARM's lower-case one, and a doubled slash all reach it.
    for path in [
        format!("{vm1}?api-version=2026-04-01"),
        format!("{}?{V}", vm1.to_lowercase()),
        format!("/{}?{V}", vm1.replace("/resourceGroups/", "//resourceGroups/")),
    ] {
        let shown = api.get(&path).await;
        assert_eq!(shown.status, StatusCode::OK, "{path}");
        let vm = shown.json();
        assert_eq!(vm["id"], vm1);
        assert_eq!(vm["name"], "vm1");
        assert_eq!(vm["type"], "Microsoft.Compute/virtualMachines");
        assert_eq!(vm["location"], "westus");
        assert_eq!(vm["tags"], json!({}));
        let properties = &vm["properties"];
        assert_eq!(properties["provisioningState"], "Succeeded");
        assert_eq!(properties["osProfile"]["computerName"], "host-1");
        assert_eq!(properties["netwatch"]["agentVersion"], "0.1.0");
        assert_eq!(properties["netwatch"]["lastSeen"], "2025-01-31T16:39:41.0770000Z");
        assert_eq!(
            properties["netwatch"]["addresses"],
            json!(["127.0.0.1/8", "10.0.0.4/24", "fe80::1/64"])
        );
        assert_eq!(properties["netwatch"]["interfaces"][1]["mac"], "aa:bb:cc:dd:ee:ff");
    }

    // vmId: a GUID, the same on every read, different per VM.
    let id_of = |answer: &Answer| answer.json()["properties"]["vmId"].as_str().unwrap().to_owned();
    let first = id_of(&api.get(&format!("{vm1}?{V}")).await);
    assert_eq!(first, id_of(&api.get(&format!("{}?{V}", vm1.to_uppercase())).await));
    assert_eq!(first.len(), 36);
    let vm2 = api.get(&format!("{}?{V}", vm_id("rg2", "vm2"))).await;
    assert_ne!(first, id_of(&vm2));
    assert_eq!(vm2.json()["properties"]["osProfile"]["computerName"], "vm2");
    assert_eq!(
        vm2.json()["properties"]["netwatch"],
        json!({"addresses": [], "connected": false, "lastSeen": null})
    );

    // lists: the subscription's, a resource group's (any case), an empty one
    let names = |answer: Answer| -> Vec<String> {
        assert_eq!(answer.status, StatusCode::OK);
        let body = answer.json();
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|vm| vm["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = api
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines?{V}"
        ))
        .await;
    assert_eq!(names(all), ["vm1", "vm2"]);
    let group =
        |rg: &str| format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines?{V}");
    assert_eq!(names(api.get(&group("RG2")).await), ["vm2"]);
    assert_eq!(names(api.get(&group("empty")).await), Vec::<String>::new());

    // an unknown VM is a 404 naming it; a missing api-version a 400
    let missing = api.get(&format!("{}?{V}", vm_id("rg1", "nope"))).await;
    assert_error(
        &missing,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "virtual machine \"nope\" was not found",
    );
    let unversioned = api.get(&vm1).await;
    assert_error(
        &unversioned,
        StatusCode::BAD_REQUEST,
        "MissingApiVersionParameter",
        "api-version",
    );
    let bad_name = api.get(&format!("{}?{V}", vm_id("rg1", "bad%20name"))).await;
    assert_eq!(bad_name.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_agent_is_the_vms_extension() {
    let api = Api::new().await;
    let vm1 = vm_id("rg1", "vm1");
    let extension_id = format!("{vm1}/extensions/NetworkWatcherAgentLinux");

    for name in ["NetworkWatcherAgentLinux", "networkwatcheragentlinux"] {
        let shown = api.get(&format!("{vm1}/extensions/{name}?{V}")).await;
        assert_eq!(shown.status, StatusCode::OK, "{name}");
        let extension = shown.json();
        assert_eq!(extension["id"], extension_id);
        assert_eq!(extension["name"], "NetworkWatcherAgentLinux");
        assert_eq!(extension["type"], "Microsoft.Compute/virtualMachines/extensions");
        assert_eq!(extension["location"], "westus");
        let properties = &extension["properties"];
        assert_eq!(properties["publisher"], "Microsoft.Azure.NetworkWatcher");
        assert_eq!(properties["type"], "NetworkWatcherAgentLinux");
        assert_eq!(properties["typeHandlerVersion"], "1.4");
        assert_eq!(properties["autoUpgradeMinorVersion"], true);
        assert_eq!(properties["provisioningState"], "Succeeded");
        assert_eq!(
            properties["instanceView"]["statuses"][0]["code"],
            "ProvisioningState/succeeded"
        );
        assert_eq!(properties["netwatch"]["agentVersion"], "0.1.0");
        assert_eq!(properties["netwatch"]["lastSeen"], "2025-01-31T16:39:41.0770000Z");
        assert_eq!(properties["netwatch"]["addresses"][1], "10.0.0.4/24");
    }

    let listed = api.get(&format!("{vm1}/extensions?{V}")).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json()["value"][0]["id"], extension_id);
    let vm = api.get(&format!("{vm1}?{V}")).await.json();
    assert_eq!(vm["resources"][0]["id"], extension_id);

    let other = api.get(&format!("{vm1}/extensions/CustomScript?{V}")).await;
    assert_error(
        &other,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "VM extension \"CustomScript\" was not found",
    );
    let no_vm = api
        .get(&format!(
            "{}/extensions/NetworkWatcherAgentLinux?{V}",
            vm_id("rg1", "ghost")
        ))
        .await;
    assert_error(
        &no_vm,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "virtual machine \"ghost\"",
    );
}

#[tokio::test]
async fn storage_accounts_are_the_configured_ones() {
    let api = Api::new().await;
    let listed = api
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts?api-version=2025-08-01"
        ))
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let value = listed.json()["value"].clone();
    let captures_id =
        format!("/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/captures");
    assert_eq!(value[0]["id"], captures_id);
    assert_eq!(
        value[1]["id"],
        format!("/subscriptions/{SUB}/resourceGroups/Storage-RG/providers/Microsoft.Storage/storageAccounts/archive")
    );
    assert_eq!(value.as_array().unwrap().len(), 2);

    let shown = api.get(&format!("{captures_id}?{V}")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(
        shown.json(),
        json!({
            "id": captures_id, "name": "captures", "type": "Microsoft.Storage/storageAccounts",
            "location": "westus", "tags": {}, "kind": "StorageV2",
            "sku": {"name": "Standard_LRS", "tier": "Standard"},
            "properties": {
                "provisioningState": "Succeeded", "primaryLocation": "westus", "statusOfPrimary": "available",
                "primaryEndpoints": {"blob": format!("http://{HOST}/netwatch/v1/storage/captures/")},
                "netwatch": {"kind": "local", "source": "configuration", "partSize": MIN_LOCAL_PART_SIZE,
                    "path": api.dir.path().join("captures")},
            },
        })
    );

    let in_group =
        |rg: &str| format!("/subscriptions/{SUB}/resourcegroups/{rg}/providers/microsoft.storage/storageaccounts");
    let archive = api.get(&format!("{}?{V}", in_group("storage-rg"))).await;
    assert_eq!(archive.json()["value"][0]["name"], "archive");
    assert_eq!(archive.json()["value"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.get(&format!("{}/ARCHIVE?{V}", in_group("Storage-RG"))).await.status,
        StatusCode::OK
    );

    // in another resource group, or not configured at all: 404
    let elsewhere = api.get(&format!("{}/archive?{V}", in_group("netwatch"))).await;
    assert_error(
        &elsewhere,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "storage account \"archive\" was not found",
    );
    let unknown = api.get(&format!("{}/nothing?{V}", in_group("netwatch"))).await;
    assert_error(
        &unknown,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "storage account \"nothing\"",
    );
}

#[tokio::test]
async fn storage_accounts_are_made_changed_and_deleted_through_the_api() {
    let api = Api::new().await;
    let all = format!("/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts?{V}");
    let names = |answer: &Answer| -> Vec<String> {
        let value = answer.ok()["value"].clone();
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let put = |name: &str, body: Value| {
        let uri = format!("{}?{V}", account_id(name));
        let body = body.to_string().into_bytes();
        let api = &api;
        async move {
            api.send(Method::PUT, &uri, &[("content-type", "application/json")], Some(body))
                .await
        }
    };
    let delete = |name: &str| {
        let uri = format!("{}?{V}", account_id(name));
        let api = &api;
        async move { api.send(Method::DELETE, &uri, &[], None).await }
    };

    // As az and the SDK send it: no netwatch block, so a directory of the controller's.
    let made = put(
        "made1",
        json!({"location": "eastus", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2", "tags": {"team": "net"},
               "properties": {"minimumTlsVersion": "TLS1_2", "allowBlobPublicAccess": false}}),
    )
    .await
    .ok();
    assert_eq!(made["id"], account_id("made1"));
    assert_eq!(
        (made["location"].as_str(), made["tags"].clone()),
        (Some("eastus"), json!({"team": "net"}))
    );
    assert_eq!(
        made["properties"]["netwatch"],
        json!({"kind": "local", "source": "api", "partSize": 8 * 1024 * 1024,
               "path": api.dir.path().join("made/made1")})
    );
    assert!(made["properties"]["creationTime"].as_str().is_some(), "{made}");
    assert_eq!(api.get(&format!("{}?{V}", account_id("made1"))).await.ok(), made);

    // An S3 account with camelCase keys; its secrets never come back.
    let s3 = json!({"location": "westus", "properties": {"netwatch": {"kind": "s3", "bucket": "caps",
        "region": "eu-west-1", "endpoint": "http://127.0.0.1:9", "accessKeyId": "AKIDSECRETISH",
        "secretAccessKey": "very-secret-value", "partSize": 6_291_456}}});
    let shown = put("objects", s3.clone()).await.ok();
    assert_eq!(
        shown["properties"]["netwatch"],
        json!({"kind": "s3", "source": "api", "partSize": 6_291_456, "bucket": "caps", "region": "eu-west-1",
               "endpoint": "http://127.0.0.1:9"})
    );
    let listed = api.get(&all).await;
    assert_eq!(names(&listed), ["captures", "archive", "made1", "objects"]);
    let text = String::from_utf8_lossy(&listed.bytes).into_owned();
    assert!(
        !text.contains("very-secret-value") && !text.contains("AKIDSECRETISH"),
        "{text}"
    );

    // Files go to a made account: grant, parts, commit, download.
    let run = api.capture_run("tomade", Some("made1")).await;
    let data = vec![7_u8; 1000]; // one part: the helper cuts parts of PART bytes
    api.upload(&run.id, 0, &data).await.ok();
    let fetched = api.download(Method::GET, download_path(&run.storage_path), None).await;
    assert_eq!(fetched.bytes, data);
    assert!(api.dir.path().join("made/made1").is_dir());

    // Bad requests: a clear 400 each, nothing changes.
    let bad = [
        ("Bad_Name", json!({}), "accountName", "has the character"),
        (
            "premium1",
            json!({"sku": {"name": "Premium_LRS"}}),
            "sku.name",
            "only Standard",
        ),
        ("kind1", json!({"kind": "FileStorage"}), "kind", "StorageV2"),
        ("mars1", json!({"location": "mars"}), "location", "is not served here"),
        ("tags1", json!({"tags": ["a"]}), "tags", "object of string values"),
        (
            "s31",
            json!({"properties": {"netwatch": {"kind": "s3", "accessKeyId": "a", "secretAccessKey": "b"}}}),
            "properties.netwatch",
            "bucket",
        ),
        (
            "ftp1",
            json!({"properties": {"netwatch": {"kind": "ftp"}}}),
            "properties.netwatch",
            "ftp",
        ),
        (
            "rel1",
            json!({"properties": {"netwatch": {"kind": "local", "path": "files"}}}),
            "properties.netwatch.path",
            "is relative",
        ),
        (
            "named1",
            json!({"properties": {"netwatch": {"kind": "local", "name": "x"}}}),
            "properties.netwatch",
            "the request's path gives it",
        ),
        (
            "azkey1",
            json!({"properties": {"netwatch": {"kind": "azureblob", "account": "a", "key": "not base64!"}}}),
            "properties.netwatch",
            "key is not base64",
        ),
        (
            "small1",
            json!({"properties": {"netwatch": {"kind": "s3", "bucket": "b", "accessKeyId": "a",
            "secretAccessKey": "b", "partSize": 1024}}}),
            "properties.netwatch",
            "part_size 1024 is below",
        ),
        (
            "array1",
            json!({"properties": {"netwatch": ["s3"]}}),
            "properties.netwatch",
            "must be an object",
        ),
    ];
    for (name, body, target, message) in bad {
        let answer = put(name, body).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "InvalidRequestFormat", message);
        assert_eq!(answer.json()["error"]["target"], target, "{name}");
    }
    let not_json = api
        .send(
            Method::PUT,
            &format!("{}?{V}", account_id("x12")),
            &[("content-type", "application/json")],
            Some(b"{".to_vec()),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(names(&api.get(&all).await), ["captures", "archive", "made1", "objects"]);

    // The configuration's accounts are the file's to change; names are global.
    let configured = put("captures", json!({})).await;
    assert_error(
        &configured,
        StatusCode::CONFLICT,
        "Conflict",
        "configuration file: change it there",
    );
    let configured = delete("captures").await;
    assert_error(
        &configured,
        StatusCode::CONFLICT,
        "Conflict",
        "configuration file: remove it there",
    );
    let elsewhere = api
        .send(
            Method::PUT,
            &format!("/subscriptions/{SUB}/resourceGroups/other/providers/Microsoft.Storage/storageAccounts/made1?{V}"),
            &[("content-type", "application/json")],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_error(
        &elsewhere,
        StatusCode::CONFLICT,
        "Conflict",
        "is taken, in resource group netwatch",
    );

    // While a capture may still upload to it, its files may not move and it may not go.
    let busy = api.capture_run("busy", Some("objects")).await;
    let mut record = api.store.get_capture(&busy.capture).await.unwrap().unwrap();
    record.stats_json = json!({"uploadState": "Retrying"}).to_string();
    api.store.update_capture(&record).await.unwrap();
    let mut moved = s3.clone();
    moved["properties"]["netwatch"]["bucket"] = json!("elsewhere");
    let refused = put("objects", moved.clone()).await;
    assert_error(
        &refused,
        StatusCode::CONFLICT,
        "Conflict",
        "packet captures [busy] still run or upload",
    );
    let refused = delete("objects").await;
    assert_error(&refused, StatusCode::CONFLICT, "Conflict", "before you delete it");
    // New credentials are fine meanwhile.
    let mut rotated = s3.clone();
    rotated["properties"]["netwatch"]["secretAccessKey"] = json!("rotated-secret");
    assert_eq!(put("objects", rotated).await.status, StatusCode::OK);
    let stored = api.store.get_storage_account("objects").await.unwrap().unwrap();
    assert!(
        stored.config_json.contains("rotated-secret") && stored.version == 2,
        "{stored:?}"
    );

    // Uploaded: it may move, and go. A second delete finds nothing: 204.
    let mut record = api.store.get_capture(&busy.capture).await.unwrap().unwrap();
    record.stats_json = json!({"uploadState": "Succeeded"}).to_string();
    api.store.update_capture(&record).await.unwrap();
    assert_eq!(
        put("objects", moved).await.ok()["properties"]["netwatch"]["bucket"],
        "elsewhere"
    );
    assert_eq!(delete("objects").await.status, StatusCode::OK);
    assert_eq!(delete("objects").await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.get(&format!("{}?{V}", account_id("objects"))).await.status,
        StatusCode::NOT_FOUND
    );

    // A restarted controller (or another replica) serves what was made.
    let again = api.restarted(api.config.clone(), accounts(api.dir.path(), &["captures", "archive"]));
    assert_eq!(names(&again.get(&all).await), ["captures", "archive", "made1"]);
    let fetched = again
        .download(Method::GET, download_path(&run.storage_path), None)
        .await;
    assert_eq!(fetched.bytes, data);
}

#[tokio::test]
async fn an_upload_downloads_whole_and_in_ranges() {
    let api = Api::new().await;
    let run = api.capture_run("pc1", Some("captures")).await;
    // 2.5 MiB: three parts of the account's 1 MiB, none like another (251
    // is prime), so parts out of place would show.
    let data: Vec<u8> = (0..=250u8).cycle().take(2 * PART + PART / 2 + 7).collect();
    let size = data.len();
    let path = download_path(&run.storage_path);
    let blob = path.strip_prefix("captures/").unwrap();

    // The grant: the blob's upload, and per part a path on this controller,
    // signed for that part of that upload until it expires.
    let before = now_ms();
    let grant = api.grant(&run.id, 0, &data).await.ok();
    let upload_id = grant["uploadId"].as_str().unwrap().to_owned();
    assert_eq!(grant["partSize"], PART);
    assert!(grant["expiresMs"].as_i64().unwrap() > before, "{grant}");
    let parts = grant["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{grant}");
    for (part, granted) in (1..).zip(parts) {
        assert_eq!(granted["part"], part);
        let url = granted["url"].as_str().unwrap();
        let expected = format!("{UPLOAD}/captures/{blob}?uploadId={upload_id}&part={part}&expires=");
        assert!(url.starts_with(&expected), "{url}");
        assert_eq!((granted.get("headers"), granted.get("receipt")), (None, None));
    }

    // Parts in any order (the last first), each answering its receipt.
    let mut receipts = Vec::new();
    for part in [3, 1] {
        let stored = api.put_part(&part_url(&grant, part), chunk(&data, part), &[]).await;
        assert_eq!(stored.ok(), json!({"part": part, "size": chunk(&data, part).len()}));
        receipts.push((part, stored.header("etag").unwrap().to_owned()));
    }
    // Until the commit there is nothing to download.
    assert_eq!(
        api.download(Method::GET, path, None).await.status,
        StatusCode::NOT_FOUND
    );
    // The rest of the same upload, as after an agent restart: a grant for part 2 only.
    let request = json!({"captureId": run.id, "seq": 0, "size": size, "sha256": sha256_hex(&data),
        "uploadId": upload_id, "parts": [2]});
    let again = api.post(UPLOADS, &request).await.ok();
    assert_eq!(again["uploadId"], upload_id);
    assert_eq!(again["parts"].as_array().unwrap().len(), 1, "{again}");
    let stored = api.put_part(&part_url(&again, 2), chunk(&data, 2), &[]).await;
    stored.ok();
    receipts.push((2, stored.header("etag").unwrap().to_owned()));

    // The commit: the file is where the capture said, and its status lists it.
    let receipts: Vec<(u32, &str)> = receipts.iter().map(|(part, id)| (*part, id.as_str())).collect();
    let done = api.complete(&run.id, 0, &upload_id, &data, &receipts).await;
    assert_eq!(done.ok(), json!({"storagePath": run.storage_path, "size": size}));
    let status = api.netwatch_status(&run.capture).await;
    assert_eq!(
        status["files"],
        json!([{"storagePath": run.storage_path, "sizeInBytes": size, "sha256": sha256_hex(&data)}])
    );
    // The same commit again (its answer lost on the way): done, not "begin again".
    let again = api.complete(&run.id, 0, &upload_id, &data, &receipts).await;
    assert_eq!(again.ok(), json!({"storagePath": run.storage_path, "size": size}));
    // A committed upload takes no more parts.
    let late = api.put_part(&part_url(&grant, 1), chunk(&data, 1), &[]).await;
    assert_error(&late, StatusCode::NOT_FOUND, "ResourceNotFound", "begin a new one");
    // A commit of other bytes under the spent upload id is still refused.
    let other: Vec<u8> = data.iter().rev().copied().collect();
    let refused = api.complete(&run.id, 0, &upload_id, &other, &receipts).await;
    assert_eq!(
        refused.status,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&refused.bytes)
    );

    let whole = api.download(Method::GET, path, None).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.header("content-type"), Some("application/vnd.tcpdump.pcap"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("content-length"), Some(size.to_string().as_str()));
    assert_eq!(whole.header("content-range"), None);
    assert!(whole.bytes == data);

    // Ranges, one across the parts' seams.
    let rows = [
        ("bytes=0-0", 0, 1),
        ("bytes=2-5", 2, 6),
        (&format!("bytes={}-{}", PART - 3, 2 * PART + 2), PART - 3, 2 * PART + 3),
        ("bytes=100-", 100, size),
        ("bytes=-10", size - 10, size),
        (&format!("bytes=10-{}", size * 2), 10, size),
    ];
    for (range, start, end) in rows {
        let part = api.download(Method::GET, path, Some(range)).await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT, "{range}");
        let content_range = format!("bytes {start}-{}/{size}", end - 1);
        assert_eq!(part.header("content-range"), Some(content_range.as_str()), "{range}");
        assert_eq!(
            part.header("content-length"),
            Some((end - start).to_string().as_str()),
            "{range}"
        );
        assert!(part.bytes == data[start..end], "{range}");

        let head = api.download(Method::HEAD, path, Some(range)).await;
        assert_eq!(head.status, StatusCode::PARTIAL_CONTENT, "HEAD {range}");
        assert_eq!(
            head.header("content-range"),
            Some(content_range.as_str()),
            "HEAD {range}"
        );
        assert!(head.bytes.is_empty());
    }

    // multi-range and malformed ranges: the whole file
    for range in ["bytes=0-1,5-6", "bytes=5-2", "lines=1-2"] {
        let answer = api.download(Method::GET, path, Some(range)).await;
        assert_eq!(answer.status, StatusCode::OK, "{range}");
        assert_eq!(answer.bytes.len(), size, "{range}");
    }

    // past the end: 416 with the size
    for method in [Method::GET, Method::HEAD] {
        let beyond = api
            .download(method.clone(), path, Some(&format!("bytes={size}-")))
            .await;
        assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE, "{method}");
        assert_eq!(
            beyond.header("content-range"),
            Some(format!("bytes */{size}").as_str()),
            "{method}"
        );
    }

    // HEAD: GET's headers, no body
    let head = api.download(Method::HEAD, path, None).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some(size.to_string().as_str()));
    assert_eq!(head.header("content-type"), Some("application/vnd.tcpdump.pcap"));
    assert!(head.bytes.is_empty());

    // blob paths are case-sensitive, and the account is part of the path
    let upper = format!("captures/{}", blob.to_uppercase());
    let shouted = api.download(Method::GET, &upper, None).await;
    assert_error(
        &shouted,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "was not found in storage account",
    );
    assert_eq!(
        api.download(Method::HEAD, &upper, None).await.status,
        StatusCode::NOT_FOUND
    );
    let other = api.download(Method::GET, &format!("archive/{blob}"), None).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);

    // An upload of the same file again replaces it; a continuous capture's
    // next file goes beside the first, and the status lists both in order.
    api.upload(&run.id, 0, b"new").await.ok();
    assert_eq!(api.download(Method::GET, path, None).await.bytes, b"new");
    let second = api.upload(&run.id, 1, b"second file").await.ok();
    let second_path = second["storagePath"].as_str().unwrap();
    let beside = format!("{}_00001.cap", run.storage_path.strip_suffix(".cap").unwrap());
    assert_eq!(second_path, beside);
    assert_eq!(
        api.download(Method::GET, download_path(second_path), None).await.bytes,
        b"second file"
    );
    let status = api.netwatch_status(&run.capture).await;
    assert_eq!(
        status["files"],
        json!([
            {"storagePath": run.storage_path, "sizeInBytes": 3, "sha256": sha256_hex(b"new")},
            {"storagePath": second_path, "sizeInBytes": 11, "sha256": sha256_hex(b"second file")},
        ])
    );
}

#[tokio::test]
async fn bad_uploads_store_nothing() {
    let api = Api::new().await;
    let run = api.capture_run("pc1", Some("captures")).await;
    let data = b"pcap".to_vec();
    let path = download_path(&run.storage_path);
    let grant = api.grant(&run.id, 0, &data).await.ok();
    let upload_id = grant["uploadId"].as_str().unwrap().to_owned();
    let url = part_url(&grant, 1);
    let query = url.split_once('?').unwrap().1;

    // A part's path must be a blob path, and its query the grant.
    for bad in [
        "a//b.cap",
        "a/b/",
        "a/../b.cap",
        "./b.cap",
        "a/%2E%2E/b.cap",
        "a\\b.cap",
        "a/%00.cap",
        ".netwatch-tmp-uploads/b.cap",
    ] {
        let answer = api
            .put_part(&format!("{UPLOAD}/captures/{bad}?{query}"), &data, &[])
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "InvalidRequestFormat", "blob path");
    }
    let ungranted = url.split_once('?').unwrap().0;
    let answer = api.put_part(ungranted, &data, &[]).await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "InvalidRequestFormat",
        "(uploadId, part, expires, sig)",
    );
    assert_eq!(answer.json()["error"]["target"], "query");
    let answer = api.put_part(&with_param(&url, "part", "first"), &data, &[]).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "InvalidRequestFormat", "grant");
    // the same paths cannot be downloaded either
    let answer = api.download(Method::GET, "captures/a//b.cap", None).await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "InvalidRequestFormat",
        "has an empty segment",
    );

    // A grant works for its account, blob, upload and part, unchanged, until it expires.
    let sig = param(&url, "sig");
    let flipped = format!("{}{}", if sig.starts_with('A') { 'B' } else { 'A' }, &sig[1..]);
    let expires: i64 = param(&url, "expires").parse().unwrap();
    let to_archive = url.replacen(&format!("{UPLOAD}/captures/"), &format!("{UPLOAD}/archive/"), 1);
    let elsewhere = url.replacen(".cap?", "x.cap?", 1);
    for changed in [
        with_param(&url, "sig", &flipped),
        with_param(&url, "expires", &(expires + 60_000).to_string()),
        with_param(&url, "part", "2"),
        with_param(&url, "uploadId", &"0".repeat(24)),
        to_archive,
        elsewhere,
    ] {
        let answer = api.put_part(&changed, &data, &[]).await;
        assert_error(
            &answer,
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "the upload grant's signature does not match: ask the controller for a new grant",
        );
    }
    // The same controller handing out grants that last no time: they have
    // expired by the time the part arrives.
    let hasty = ApiConfig {
        grant_ttl: Duration::ZERO,
        ..api.config.clone()
    };
    let hasty = api.restarted(hasty, accounts(api.dir.path(), &["captures", "archive"]));
    let expired = part_url(&hasty.grant(&run.id, 0, &data).await.ok(), 1);
    let answer = hasty.put_part(&expired, &data, &[]).await;
    assert_error(
        &answer,
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        "the upload grant has expired: ask the controller for a new grant",
    );
    // ... and on the first controller, which shares its key.
    assert_eq!(api.put_part(&expired, &data, &[]).await.status, StatusCode::FORBIDDEN);

    // The body: its length said (411 without, 400 if not a number, 422 if
    // wrong), its Content-MD5 well-formed (400) and true (refused: sent again
    // it may arrive whole), and at most a part's size (storage's 422: parts
    // are streamed, so the ARM routes' 1 MiB body limit does not apply).
    let no_length = api.send(Method::PUT, &url, &[], Some(data.clone())).await;
    assert_error(
        &no_length,
        StatusCode::LENGTH_REQUIRED,
        "LengthRequired",
        "Content-Length",
    );
    for (length, status, code, message) in [
        ("-1", StatusCode::BAD_REQUEST, "InvalidRequestFormat", "Content-Length"),
        (
            "four",
            StatusCode::BAD_REQUEST,
            "InvalidRequestFormat",
            "Content-Length",
        ),
        (
            "5",
            StatusCode::UNPROCESSABLE_ENTITY,
            "StorageRefused",
            "part 1 ended after 4 bytes",
        ),
        (
            "3",
            StatusCode::UNPROCESSABLE_ENTITY,
            "StorageRefused",
            "part 1 is longer than the 3 bytes",
        ),
    ] {
        let answer = api
            .send(Method::PUT, &url, &[("content-length", length)], Some(data.clone()))
            .await;
        assert_error(&answer, status, code, message);
    }
    let zeros = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
    let damaged = api.put_part(&url, &data, &[("content-md5", &zeros)]).await;
    assert_error(
        &damaged,
        StatusCode::BAD_REQUEST,
        "BadDigest",
        "it was damaged on the way and not kept",
    );
    for malformed in ["not base64!", "AAAA"] {
        let answer = api.put_part(&url, &data, &[("content-md5", malformed)]).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "InvalidRequestFormat", "Content-MD5");
        assert_eq!(answer.json()["error"]["target"], "Content-MD5");
    }
    let oversized = vec![0u8; PART + 1];
    let answer = api.put_part(&url, &oversized, &[]).await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "StorageRefused",
        "more than the storage account's part size",
    );
    // None of these left a part: a commit finds none, and answers 404 as for
    // an upload storage lost (an agent begins it again).
    let answer = api.complete(&run.id, 0, &upload_id, &data, &[(1, "0")]).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "ResourceNotFound", "was never stored");
    assert_nothing_stored(&api, &run).await;

    // The part sent whole is stored: without a Content-MD5 (an agent over
    // TLS) it is not hashed and its receipt is fresh random; again with its
    // true Content-MD5, the receipt is that MD5 in hex.
    let stored = api.put_part(&url, &data, &[]).await;
    stored.ok();
    let unhashed = stored.header("etag").unwrap().to_owned();
    assert_eq!(unhashed.len(), 24, "{unhashed}");
    let digest: [u8; 16] = <md5::Md5 as Digest>::digest(&data).into();
    let md5 = base64::engine::general_purpose::STANDARD.encode(digest);
    let checked = api.put_part(&url, &data, &[("content-md5", &md5)]).await;
    checked.ok();
    let receipt = checked.header("etag").unwrap().to_owned();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(receipt, hex);

    // Commits that cannot be: a size that is not the parts', parts that are
    // not 1 to n, an upload storage does not know, a hash that is not one.
    let longer = b"pcap!".to_vec();
    let answer = api
        .complete(&run.id, 0, &upload_id, &longer, &[(1, receipt.as_str())])
        .await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "StorageRefused",
        "would have 4 bytes where 5 were expected: nothing was stored",
    );
    let answer = api
        .complete(&run.id, 0, &upload_id, &data, &[(2, receipt.as_str())])
        .await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "StorageRefused", "1 to n");
    let answer = api.complete(&run.id, 0, &upload_id, &data, &[(1, "0")]).await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "StorageRefused",
        "stored again",
    );
    let unknown = "0123456789abcdef01234567";
    let answer = api.complete(&run.id, 0, unknown, &data, &[(1, receipt.as_str())]).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "ResourceNotFound", "begin a new one");
    let mut commit = json!({"captureId": run.id, "seq": 0, "uploadId": upload_id, "size": 4,
        "sha256": "A".repeat(64), "parts": [{"part": 1, "id": receipt}]});
    let answer = api.post(UPLOADS_COMPLETE, &commit).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "InvalidRequestFormat", "sha256");
    assert_eq!(answer.json()["error"]["target"], "sha256");
    assert_nothing_stored(&api, &run).await;

    // Bodies that are not the protocol's.
    for bad in [
        json!({}),
        json!({"captureId": run.id, "seq": -1, "size": 4, "sha256": sha256_hex(&data)}),
    ] {
        for uri in [UPLOADS, UPLOADS_COMPLETE] {
            let answer = api.post(uri, &bad).await;
            assert_error(
                &answer,
                StatusCode::BAD_REQUEST,
                "InvalidRequestFormat",
                "the request body is not what the upload protocol expects",
            );
        }
    }
    let text = api
        .send(
            Method::POST,
            UPLOADS,
            &[("content-type", "text/plain")],
            Some(b"pcap".to_vec()),
        )
        .await;
    assert_error(
        &text,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        "text/plain",
    );

    // Grants a file cannot have: parts it does not have, more parts than storage takes.
    for parts in [json!([0]), json!([2]), json!([1, 9])] {
        let request = json!({"captureId": run.id, "seq": 0, "size": 4, "sha256": sha256_hex(&data), "parts": parts});
        let answer = api.post(UPLOADS, &request).await;
        assert_error(
            &answer,
            StatusCode::BAD_REQUEST,
            "InvalidRequestFormat",
            "is not one of the file's parts 1-1",
        );
        assert_eq!(answer.json()["error"]["target"], "parts");
    }
    let huge = 10_001 * u64::try_from(PART).unwrap();
    let request = json!({"captureId": run.id, "seq": 0, "size": huge, "sha256": sha256_hex(&data)});
    let answer = api.post(UPLOADS, &request).await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "InvalidRequestFormat",
        "needs 10001 parts of 1048576 bytes, more than the 10000 storage takes",
    );
    assert_eq!(answer.json()["error"]["target"], "size");

    // Runs that do not exist (no such capture, another run of it, not a run
    // id) and a capture whose files stay on the host.
    let others = [
        run_id(&format!("{NW}/packetCaptures/nope"), CREATED_MS),
        run_id(&run.capture, CREATED_MS + 1),
        run.capture.clone(),
    ];
    for other in &others {
        let answer = api.grant(other, 0, &data).await;
        assert_error(
            &answer,
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "no packet capture run",
        );
        let answer = api
            .complete(other, 0, &upload_id, &data, &[(1, receipt.as_str())])
            .await;
        assert_error(
            &answer,
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "no packet capture run",
        );
    }
    let local = api.capture_run("local", None).await;
    let answer = api.grant(&local.id, 0, &data).await;
    assert_error(&answer, StatusCode::CONFLICT, "Conflict", "has no storage account");
    let answer = api
        .complete(&local.id, 0, &upload_id, &data, &[(1, receipt.as_str())])
        .await;
    assert_error(&answer, StatusCode::CONFLICT, "Conflict", "has no storage account");
    assert_nothing_stored(&api, &run).await;

    // After all that, the upload still commits.
    commit["sha256"] = json!(sha256_hex(&data));
    assert_eq!(api.post(UPLOADS_COMPLETE, &commit).await.ok()["size"], 4);
    assert_eq!(api.download(Method::GET, path, None).await.bytes, data);
}

#[tokio::test]
async fn unknown_accounts_are_404() {
    let api = Api::new().await;
    let run = api.capture_run("pc1", Some("captures")).await;
    let grant = api.grant(&run.id, 0, b"pcap").await.ok();
    let url = part_url(&grant, 1);

    // The controller restarted without the capture's account (same grant
    // key): the grants it handed out are good, but the account is unknown.
    let without = api.restarted(api.config.clone(), accounts(api.dir.path(), &["archive"]));
    let answer = without.put_part(&url, b"pcap", &[]).await;
    assert_error(
        &answer,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "storage account \"captures\" was not found: the accounts are archive",
    );
    // ... and the capture's files have nowhere to go.
    let answer = without.grant(&run.id, 0, b"pcap").await;
    assert_error(
        &answer,
        StatusCode::CONFLICT,
        "Conflict",
        "storage account \"captures\" of packet capture",
    );

    let answer = api.download(Method::GET, &format!("nothere/{BLOB}"), None).await;
    assert_error(
        &answer,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "storage account \"nothere\" was not found: the accounts are captures, archive",
    );
    assert_eq!(
        api.download(Method::HEAD, &format!("nothere/{BLOB}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn arm_paths_keep_their_rules() {
    let api = Api::new().await;
    // `//` collapsed and fixed segments in any case, on the new ARM routes too
    let doubled = api
        .get(&format!(
            "//SUBSCRIPTIONS/{SUB}//Providers/MICROSOFT.STORAGE/StorageAccounts/?{V}"
        ))
        .await;
    assert_eq!(doubled.status, StatusCode::OK);
    assert_eq!(doubled.json()["value"].as_array().unwrap().len(), 2);
    // names keep their case: a VM named VM1 is found (ARM names ignore case)
    let upper = api.get(&format!("{}?{V}", vm_id("RG1", "VM1"))).await;
    assert_eq!(upper.status, StatusCode::OK);
    assert_eq!(upper.json()["name"], "vm1");
    // another subscription is a 404 on every new route
    let other = "11111111-1111-1111-1111-111111111111";
    for path in [
        format!("/subscriptions/{other}/providers/Microsoft.Compute/virtualMachines?{V}"),
        format!("/subscriptions/{other}/providers/Microsoft.Storage/storageAccounts?{V}"),
    ] {
        assert_eq!(api.get(&path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    // /netwatch paths are not rewritten: an upper-cased or doubled prefix is no route
    let shouted = api.get(&format!("/NETWATCH/v1/storage/captures/{BLOB}")).await;
    assert_error(&shouted, StatusCode::NOT_FOUND, "NotFound", "no route");
    let doubled = api.get(&format!("//netwatch/v1/storage/captures/{BLOB}")).await;
    assert_error(&doubled, StatusCode::NOT_FOUND, "NotFound", "no route");
}

#[tokio::test]
async fn captures_of_a_host_never_heard_again_become_errors_after_the_timeout() {
    let api = Api::new().await;
    let config = ApiConfig {
        agent_lost_after: Duration::from_secs(600),
        ..api.config.clone()
    };
    let state = AppState::new(api.store.clone(), config, Accounts::default());
    // vm1 was last heard at CREATED_MS; one capture runs there, with a stop in progress.
    let run = api.capture_run("lost1", None).await;
    let mut record = api.store.get_capture(&run.capture).await.unwrap().unwrap();
    record.status = CaptureStatus::Running;
    record.stop_reason = None;
    api.store.update_capture(&record).await.unwrap();
    let stop = OperationRecord {
        id: "op-stop-1".into(),
        resource_id: run.capture.clone(),
        kind: OperationKind::Stop,
        status: OperationStatus::InProgress,
        error_json: None,
        created_ms: CREATED_MS,
        updated_ms: CREATED_MS,
    };
    api.store.insert_operation(&stop).await.unwrap();

    // Within the timeout: nothing changes.
    let soon = CREATED_MS + 599_000;
    assert_eq!(sweep_lost_agents(&state, soon).await.unwrap(), 0);
    let status = api.netwatch_status_of(&run.capture).await;
    assert_eq!(status["packetCaptureStatus"], "Running", "{status}");

    // Past it: Error, AgentStopped, AgentLost; the stop's monitor fails with the reason.
    let late = CREATED_MS + 601_000;
    assert_eq!(sweep_lost_agents(&state, late).await.unwrap(), 1);
    let status = api.netwatch_status_of(&run.capture).await;
    assert_eq!(
        (
            &status["packetCaptureStatus"],
            &status["stopReason"],
            &status["packetCaptureError"]
        ),
        (&json!("Error"), &json!("AgentLost"), &json!(["AgentStopped"])),
        "{status}"
    );
    let operation = api.store.get_operation("op-stop-1").await.unwrap().unwrap();
    assert_eq!(operation.status, OperationStatus::Failed);
    assert!(
        operation
            .error_json
            .as_deref()
            .unwrap_or_default()
            .contains("has not been heard from for more than 600 s"),
        "{operation:?}"
    );
    // Settled captures stay as they are.
    assert_eq!(sweep_lost_agents(&state, late + 60_000).await.unwrap(), 0);
}

#[tokio::test]
async fn removing_the_agent_extension_cuts_the_host_off() {
    let api = Api::new().await;
    let vm1 = vm_id("rg1", "vm1");
    // vm1's agent enrolled: it has a credential of its own.
    let enrollment = EnrollmentRecord {
        digest: "sha256:enroll".into(),
        vm_id: vm1.clone(),
        location: "westus".into(),
        created_ms: 1,
        expires_ms: i64::MAX,
        used_ms: None,
    };
    api.store.insert_enrollment(&enrollment).await.unwrap();
    let credential = AgentCredentialRecord {
        digest: "sha256:cred".into(),
        vm_id: vm1.clone(),
        created_ms: 2,
        revoked_ms: None,
    };
    assert!(
        api.store
            .redeem_enrollment("sha256:enroll", &credential, 2)
            .await
            .unwrap()
    );
    let run = api.capture_run("cutoff", None).await;
    let mut record = api.store.get_capture(&run.capture).await.unwrap().unwrap();
    record.status = CaptureStatus::Running;
    api.store.update_capture(&record).await.unwrap();

    let extension = format!("{vm1}/extensions/NetworkWatcherAgentLinux?api-version=2024-07-01");
    let removed = api.send(Method::DELETE, &extension, &[], None).await;
    assert_eq!(
        removed.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&removed.bytes)
    );
    let credential = api.store.get_agent_credential("sha256:cred").await.unwrap().unwrap();
    assert!(credential.revoked_ms.is_some(), "{credential:?}");
    let status = api.netwatch_status_of(&run.capture).await;
    assert_eq!(
        (&status["packetCaptureStatus"], &status["packetCaptureError"]),
        (&json!("Error"), &json!(["AgentStopped"])),
        "{status}"
    );
    // Another extension name is none of ours: nothing to remove. An unknown VM: 404.
    let other = format!("{vm1}/extensions/CustomScript?api-version=2024-07-01");
    assert_eq!(
        api.send(Method::DELETE, &other, &[], None).await.status,
        StatusCode::NO_CONTENT
    );
    let ghost = format!(
        "{}/extensions/NetworkWatcherAgentLinux?api-version=2024-07-01",
        vm_id("rg1", "ghost")
    );
    assert_eq!(
        api.send(Method::DELETE, &ghost, &[], None).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Issue 6: an agent given up as lost comes back with the file it was
/// writing recovered. Its reports (a resumed run's `Running`, then the end)
/// leave the capture in `Error` with its stop reason, and bring the counters,
/// the upload's state and the errors; a `Running` report gets a stop.
#[tokio::test]
async fn issue_6_an_agent_back_after_its_capture_was_given_up_leaves_it_in_error() {
    let api = Api::new().await;
    let config = ApiConfig {
        agent_lost_after: Duration::from_secs(600),
        ..api.config.clone()
    };
    let state = AppState::new(api.store.clone(), config, Accounts::default());
    let run = api.capture_run("back1", None).await;
    let mut record = api.store.get_capture(&run.capture).await.unwrap().unwrap();
    record.status = CaptureStatus::Running;
    record.stop_reason = None;
    api.store.update_capture(&record).await.unwrap();
    assert_eq!(sweep_lost_agents(&state, CREATED_MS + 601_000).await.unwrap(), 1);
    let report = |state, stop_reason, errors: Vec<PcError>, packets| CaptureReport {
        capture_id: run.id.clone(),
        state,
        started_ms: Some(CREATED_MS),
        stop_reason,
        errors,
        message: None,
        stats: ReportStats {
            packets_captured: packets,
            bytes_captured: packets * 100,
            kernel_drops: 0,
            file_size_in_bytes: 24 + packets * 116,
            covered_from_ms: None,
        },
        upload: Some(UploadState::Uploading),
        upload_progress: None,
    };
    let vm = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1";
    let resumed = report(AgentCaptureState::Running, None, vec![PcError::AgentStopped], 10);
    apply_report(&state, vm, &resumed).await.unwrap();
    let ended = report(
        AgentCaptureState::Stopped,
        Some(StopReason::ManualStop),
        vec![PcError::AgentStopped, PcError::StorageFailed],
        25,
    );
    apply_report(&state, vm, &ended).await.unwrap();
    let status = api.netwatch_status_of(&run.capture).await;
    assert_eq!(
        (
            &status["packetCaptureStatus"],
            &status["stopReason"],
            &status["packetCaptureError"]
        ),
        (
            &json!("Error"),
            &json!("AgentLost"),
            &json!(["AgentStopped", "StorageFailed"])
        ),
        "{status}"
    );
    assert_eq!(status["netwatch"]["packetsCaptured"], 25, "{status}");
    assert_eq!(status["netwatch"]["uploadState"], "Uploading", "{status}");
    // Azure's form of a time: seven fractional digits (issue 12).
    assert_eq!(status["captureStartTime"], "2025-01-31T16:39:41.0770000Z", "{status}");
}

#[tokio::test]
async fn an_agent_cannot_report_on_another_hosts_capture() {
    let api = Api::new().await;
    let state = AppState::new(api.store.clone(), api.config.clone(), Accounts::default());
    let run = api.capture_run("theirs", None).await;
    let mut record = api.store.get_capture(&run.capture).await.unwrap().unwrap();
    record.status = CaptureStatus::Running;
    record.stop_reason = None;
    api.store.update_capture(&record).await.unwrap();
    // vm2's agent says vm1's capture stopped with a million packets.
    let forged = CaptureReport {
        capture_id: run.id.clone(),
        state: AgentCaptureState::Stopped,
        started_ms: Some(CREATED_MS),
        stop_reason: Some(StopReason::ManualStop),
        errors: Vec::new(),
        message: None,
        stats: ReportStats {
            packets_captured: 1_000_000,
            bytes_captured: 1,
            kernel_drops: 0,
            file_size_in_bytes: 1,
            covered_from_ms: None,
        },
        upload: Some(UploadState::Succeeded),
        upload_progress: None,
    };
    apply_report(&state, &vm_id("rg2", "vm2"), &forged).await.unwrap();
    let status = api.netwatch_status_of(&run.capture).await;
    assert_eq!(status["packetCaptureStatus"], "Running", "{status}");
    assert_ne!(status["netwatch"]["packetsCaptured"], 1_000_000, "{status}");
    // Its own host's agent is heard.
    apply_report(&state, &vm_id("rg1", "vm1"), &forged).await.unwrap();
    let status = api.netwatch_status_of(&run.capture).await;
    assert_eq!(status["packetCaptureStatus"], "Stopped", "{status}");
}

/// Issue 12: `uploadPercent` 100 beside `uploadState` Pending. Whatever an
/// agent's version reports, the status shows 100 when Succeeded and only then.
#[tokio::test]
async fn issue_12_upload_percent_agrees_with_upload_state() {
    let api = Api::new().await;
    let state = AppState::new(api.store.clone(), api.config.clone(), Accounts::default());
    let run = api.capture_run("percent", None).await;
    let mut record = api.store.get_capture(&run.capture).await.unwrap().unwrap();
    record.status = CaptureStatus::Running;
    record.stop_reason = None;
    api.store.update_capture(&record).await.unwrap();
    let report = |agent_state, upload, percent| CaptureReport {
        capture_id: run.id.clone(),
        state: agent_state,
        started_ms: Some(CREATED_MS),
        stop_reason: (agent_state == AgentCaptureState::Stopped).then_some(StopReason::ManualStop),
        errors: Vec::new(),
        message: None,
        stats: ReportStats::default(),
        upload: Some(upload),
        upload_progress: Some(UploadProgress {
            percent,
            files_pending: 0,
            message: None,
        }),
    };
    let vm = vm_id("rg1", "vm1");
    // (what the agent says, what the status shows)
    let rows = [
        // An agent before the fix: nothing spooled yet counted as all stored.
        ((AgentCaptureState::Running, UploadState::Pending, 100), ("Pending", 99)),
        ((AgentCaptureState::Running, UploadState::Pending, 0), ("Pending", 0)),
        (
            (AgentCaptureState::Stopped, UploadState::Uploading, 40),
            ("Uploading", 40),
        ),
        (
            (AgentCaptureState::Stopped, UploadState::Uploading, 100),
            ("Uploading", 99),
        ),
        (
            (AgentCaptureState::Stopped, UploadState::Succeeded, 100),
            ("Succeeded", 100),
        ),
    ];
    for ((agent_state, upload, percent), (shown_state, shown_percent)) in rows {
        apply_report(&state, &vm, &report(agent_state, upload, percent))
            .await
            .unwrap();
        let status = api.netwatch_status_of(&run.capture).await;
        assert_eq!(
            (&status["netwatch"]["uploadState"], &status["netwatch"]["uploadPercent"]),
            (&json!(shown_state), &json!(shown_percent)),
            "{upload:?} {percent} %: {status}"
        );
    }
}
