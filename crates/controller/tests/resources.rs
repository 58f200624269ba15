//! The resources around captures, driven through `routes::router` with
//! `oneshot`: VMs and their agent extension (VM records inserted directly stand
//! in for registered agents), storage accounts, and the file routes (upload,
//! download with ranges) over a local storage account in a temp directory.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use netwatch_controller::routes::{ApiConfig, AppState, router};
use netwatch_controller::store::{Store, VmRecord};
use netwatch_storage::{AccountConfig, AccountKind, Accounts};
use serde_json::{Value, json};
use tower::ServiceExt;

const SUB: &str = "00000000-0000-0000-0000-000000000000";
const V: &str = "api-version=2024-11-01";
const HOST: &str = "netwatch.test:8443";
const UPLOAD: &str = "/netwatch/v1/agent/files";
const DOWNLOAD: &str = "/netwatch/v1/storage";
/// A capture's blob path, in Azure's shape (mixed case on purpose: blob paths keep it).
const BLOB: &str = "network-watcher-logs/subscriptions/x/2025/01/31/PacketCapture_16_39_41_077.cap";

fn vm_id(group: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{name}")
}

struct Api {
    router: Router,
    _dir: tempfile::TempDir,
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
            ("rg1", "vm1", "westus", facts.to_string(), Some(1_738_341_581_077)),
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
            };
            store.upsert_vm(&vm).await.unwrap();
        }
        let local = |name: &str| {
            AccountConfig::new(
                name,
                AccountKind::Local {
                    path: dir.path().join(name),
                },
            )
            .unwrap()
        };
        let mut archive = local("archive");
        archive.resource_group = "Storage-RG".parse().unwrap();
        let accounts = Accounts::try_new(vec![local("captures"), archive]).unwrap();
        let router = router(AppState::new(store, ApiConfig::default(), accounts));
        Api { router, _dir: dir }
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

    /// An upload of `body` with its true length.
    async fn upload(&self, account: &str, path: &str, body: &[u8]) -> Answer {
        let length = body.len().to_string();
        let uri = format!("{UPLOAD}/{account}/{path}");
        self.send(Method::PUT, &uri, &[("content-length", &length)], Some(body.to_vec()))
            .await
    }

    async fn download(&self, method: Method, path: &str, range: Option<&str>) -> Answer {
        let headers: Vec<(&str, &str)> = range.map(|range| ("range", range)).into_iter().collect();
        self.send(method, &format!("{DOWNLOAD}/{path}"), &headers, None).await
    }
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
        assert_eq!(properties["netwatch"]["lastSeen"], "2025-01-31T16:39:41Z");
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
        json!({"addresses": [], "lastSeen": null})
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
        assert_eq!(properties["netwatch"]["lastSeen"], "2025-01-31T16:39:41Z");
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
                "netwatch": {"kind": "local"},
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
async fn an_upload_downloads_whole_and_in_ranges() {
    let api = Api::new().await;
    let data: Vec<u8> = (0..=255u8).cycle().take(3 * 1024 * 1024 + 7).collect();
    let size = data.len();

    // 3 MiB: far above the ARM routes' 1 MiB body limit.
    let stored = api.upload("captures", BLOB, &data).await;
    assert_eq!(
        stored.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&stored.bytes)
    );
    assert_eq!(stored.json(), json!({ "size": size }));

    let path = format!("captures/{BLOB}");
    let whole = api.download(Method::GET, &path, None).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.header("content-type"), Some("application/vnd.tcpdump.pcap"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("content-length"), Some(size.to_string().as_str()));
    assert_eq!(whole.header("content-range"), None);
    assert!(whole.bytes == data);

    let rows = [
        ("bytes=0-0", 0, 1),
        ("bytes=2-5", 2, 6),
        ("bytes=100-", 100, size),
        ("bytes=-10", size - 10, size),
        (&format!("bytes=10-{}", size * 2), 10, size),
    ];
    for (range, start, end) in rows {
        let part = api.download(Method::GET, &path, Some(range)).await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT, "{range}");
        let content_range = format!("bytes {start}-{}/{size}", end - 1);
        assert_eq!(part.header("content-range"), Some(content_range.as_str()), "{range}");
        assert_eq!(
            part.header("content-length"),
            Some((end - start).to_string().as_str()),
            "{range}"
        );
        assert!(part.bytes == data[start..end], "{range}");

        let head = api.download(Method::HEAD, &path, Some(range)).await;
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
        let answer = api.download(Method::GET, &path, Some(range)).await;
        assert_eq!(answer.status, StatusCode::OK, "{range}");
        assert_eq!(answer.bytes.len(), size, "{range}");
    }

    // past the end: 416 with the size
    for method in [Method::GET, Method::HEAD] {
        let beyond = api
            .download(method.clone(), &path, Some(&format!("bytes={size}-")))
            .await;
        assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE, "{method}");
        assert_eq!(
            beyond.header("content-range"),
            Some(format!("bytes */{size}").as_str()),
            "{method}"
        );
    }

    // HEAD: GET's headers, no body
    let head = api.download(Method::HEAD, &path, None).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some(size.to_string().as_str()));
    assert_eq!(head.header("content-type"), Some("application/vnd.tcpdump.pcap"));
    assert!(head.bytes.is_empty());

    // blob paths are case-sensitive, and the account is part of the path
    let lower = api.download(Method::GET, &path.to_lowercase(), None).await;
    assert_error(
        &lower,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "was not found in storage account",
    );
    assert_eq!(
        api.download(Method::HEAD, &path.to_lowercase(), None).await.status,
        StatusCode::NOT_FOUND
    );
    let other = api.download(Method::GET, &format!("archive/{BLOB}"), None).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);

    // an upload replaces the file
    assert_eq!(api.upload("captures", BLOB, b"new").await.status, StatusCode::CREATED);
    assert_eq!(api.download(Method::GET, &path, None).await.bytes, b"new");
}

#[tokio::test]
async fn bad_uploads_store_nothing() {
    let api = Api::new().await;
    for bad in [
        "a//b.cap",
        "a/b/",
        "a/../b.cap",
        "./b.cap",
        "a/%2E%2E/b.cap",
        "a\\b.cap",
        "a/%00.cap",
    ] {
        let answer = api.upload("captures", bad, b"pcap").await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "InvalidRequestFormat", "blob path");
    }
    // the same paths cannot be downloaded either
    let answer = api.download(Method::GET, "captures/a//b.cap", None).await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "InvalidRequestFormat",
        "has an empty segment",
    );

    // no Content-Length: 411; a wrong one: 400; nothing is stored either way
    let uri = format!("{UPLOAD}/captures/x.cap");
    let no_length = api.send(Method::PUT, &uri, &[], Some(b"pcap".to_vec())).await;
    assert_error(
        &no_length,
        StatusCode::LENGTH_REQUIRED,
        "LengthRequired",
        "Content-Length",
    );
    for length in ["5", "3", "-1", "four"] {
        let answer = api
            .send(Method::PUT, &uri, &[("content-length", length)], Some(b"pcap".to_vec()))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{length}");
    }
    let answer = api.download(Method::GET, "captures/x.cap", None).await;
    assert_error(
        &answer,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "\"x.cap\" was not found",
    );

    // a path running into an existing file: 409
    assert_eq!(
        api.upload("captures", "d/f.cap", b"1").await.status,
        StatusCode::CREATED
    );
    let clash = api.upload("captures", "d/f.cap/g.cap", b"2").await;
    assert_error(&clash, StatusCode::CONFLICT, "Conflict", "runs into an existing blob");
}

#[tokio::test]
async fn unknown_accounts_are_404() {
    let api = Api::new().await;
    let answer = api.upload("nothere", BLOB, b"pcap").await;
    assert_error(
        &answer,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "storage account \"nothere\" was not found: the configured accounts are captures, archive",
    );
    let answer = api.download(Method::GET, &format!("nothere/{BLOB}"), None).await;
    assert_error(
        &answer,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "storage account \"nothere\"",
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
