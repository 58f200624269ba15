//! The REST API driven through `routes::router` with `oneshot`, over a store
//! on a temp SQLite file. A VM record inserted directly stands in for a
//! registered agent (the agent side does not exist yet).

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use netwatch_controller::app::{ApiConfig, AppState};
use netwatch_controller::routes::{MAX_BODY_BYTES, router};
use netwatch_controller::store::{OperationKind, OperationRecord, OperationStatus, Store, VmRecord};
use netwatch_storage::{AccountConfig, AccountKind, Accounts};
use serde_json::{Value, json};
use tower::ServiceExt;

const SUB: &str = "00000000-0000-0000-0000-000000000000";
const V: &str = "api-version=2024-05-01";
const HOST: &str = "netwatch.test:8443";
const NW: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus";

fn vm_id(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{name}")
}

/// The body az sent for `packet-capture create` (clients.md §3).
fn capture_body(vm: &str) -> Value {
    json!({"properties": {
        "target": vm_id(vm), "targetType": "AzureVM",
        "storageLocation": {"storageId": format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/acct")},
        "filters": [{"protocol": "TCP", "localPort": "80"}],
        "bytesToCapturePerPacket": 0, "totalBytesPerSession": 1073741824, "timeLimitInSeconds": 18000}})
}

pub(crate) struct Api {
    pub(crate) router: Router,
    pub(crate) store: Store,
    pub(crate) _dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }
}

impl Api {
    /// An API over a fresh store with VMs `vm1` (westus) and `vm2` (eastus).
    pub(crate) async fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("state.db").display()))
            .await
            .unwrap();
        for (name, location) in [("vm1", "westus"), ("vm2", "eastus")] {
            let vm = VmRecord {
                id: vm_id(name),
                subscription: SUB.into(),
                location: location.into(),
                agent_json: "{}".into(),
                last_seen_ms: None,
                created_ms: 1,
                tags_json: "{}".to_owned(),
            };
            store.upsert_vm(&vm).await.unwrap();
        }
        let account = AccountConfig::new(
            "acct",
            AccountKind::Local {
                path: dir.path().join("storage"),
            },
        )
        .unwrap();
        let router = router(AppState::new(
            store.clone(),
            ApiConfig::default(),
            Accounts::new(vec![account]),
        ));
        Api {
            router,
            store,
            _dir: dir,
        }
    }

    async fn send(&self, method: Method, uri: &str, body: Option<Vec<u8>>) -> Answer {
        self.send_typed(method, uri, body, "application/json").await
    }

    async fn send_typed(&self, method: Method, uri: &str, body: Option<Vec<u8>>, content_type: &str) -> Answer {
        let mut request = Request::builder().method(method).uri(uri).header(header::HOST, HOST);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        Answer { status, headers, body }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Method::GET, uri, None).await
    }

    async fn put(&self, uri: &str, body: &Value) -> Answer {
        self.send(Method::PUT, uri, Some(body.to_string().into_bytes())).await
    }

    async fn post(&self, uri: &str) -> Answer {
        self.send(Method::POST, uri, None).await
    }

    /// Everything a request could have changed: watchers, their captures, VMs.
    async fn snapshot(&self) -> String {
        let mut out = String::new();
        for watcher in self.store.list_watchers(SUB).await.unwrap() {
            out.push_str(&format!("{watcher:?}\n"));
            for capture in self.store.list_captures(&watcher.id).await.unwrap() {
                out.push_str(&format!("{capture:?}\n"));
            }
        }
        out.push_str(&format!("{:?}", self.store.list_vms(SUB).await.unwrap()));
        out
    }
}

#[tokio::test]
async fn a_capture_lives_and_dies() {
    let api = Api::new().await;
    let pc = format!("{NW}/packetCaptures/pc1");

    // create: 201, monitor link on our own host, Retry-After, the result body
    let created = api.put(&format!("{pc}?{V}"), &capture_body("vm1")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.header("retry-after"), Some("1"));
    let monitor = created.header("azure-asyncoperation").unwrap().to_owned();
    let prefix = format!("http://{HOST}/subscriptions/{SUB}/providers/Microsoft.Network/locations/westus/operations/");
    assert!(monitor.starts_with(&prefix), "{monitor}");
    assert!(monitor.ends_with(&format!("?{V}")), "{monitor}");
    let body = &created.body;
    assert_eq!(body["name"], "pc1");
    assert_eq!(body["id"], pc);
    assert!(body["etag"].as_str().unwrap().starts_with("W/\""));
    assert_eq!(body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(body["properties"]["target"], vm_id("vm1"));
    assert_eq!(body["properties"]["targetType"], "AzureVM");
    assert_eq!(body["properties"]["timeLimitInSeconds"], 18000);
    assert_eq!(body["properties"]["filters"][0]["localPort"], "80");
    assert!(body.get("location").is_none());

    // the watcher was created on first use
    let watchers = api
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Network/networkWatchers?api-version=2022-01-01"
        ))
        .await;
    assert_eq!(watchers.status, StatusCode::OK);
    assert_eq!(watchers.body["value"][0]["id"], NW);
    assert_eq!(watchers.body["value"][0]["location"], "westus");

    // the file's place in the storage account, at Azure's path
    let storage_path = body["properties"]["storageLocation"]["storagePath"].as_str().unwrap();
    let prefix = format!(
        "http://{HOST}/netwatch/v1/storage/acct/network-watcher-logs/subscriptions/{SUB}/resourcegroups/rg1/providers/microsoft.compute/virtualmachines/vm1/"
    );
    assert!(storage_path.starts_with(&prefix), "{storage_path}");
    assert!(storage_path.ends_with(".cap"), "{storage_path}");

    // no agent is connected: the monitor says InProgress, with Retry-After
    let path = monitor.strip_prefix(&format!("http://{HOST}")).unwrap();
    let op = api.get(path).await;
    assert_eq!((op.status, &op.body["status"]), (StatusCode::OK, &json!("InProgress")));
    assert_eq!(op.header("retry-after"), Some("1"));

    // show and list return the same resource
    let shown = api.get(&format!("{pc}?{V}")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body, created.body);
    let listed = api.get(&format!("{NW}/packetCaptures?{V}")).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body, json!({"value": [created.body.clone()]}));

    // queryStatus: NotStarted until an agent runs it
    let status = api.post(&format!("{pc}/queryStatus?{V}")).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(
        status.body,
        json!({"name": "pc1", "id": pc, "packetCaptureStatus": "NotStarted", "packetCaptureError": []})
    );

    // stop: 200 {}; then Stopped with ManualStop; a second stop is a no-op
    for _ in 0..2 {
        let stopped = api.post(&format!("{pc}/stop?{V}")).await;
        assert_eq!((stopped.status, &stopped.body), (StatusCode::OK, &json!({})));
    }
    let status = api.post(&format!("{pc}/queryStatus?{V}")).await;
    assert_eq!(status.body["packetCaptureStatus"], "Stopped");
    assert_eq!(status.body["stopReason"], "ManualStop");
    // stopping before any agent ran it settles the create
    let op = api.get(path).await;
    assert_eq!((op.status, &op.body["status"]), (StatusCode::OK, &json!("Succeeded")));
    assert_eq!(op.header("retry-after"), None);

    // a stopped capture may be created again, replacing it
    let again = api.put(&format!("{pc}?{V}"), &capture_body("vm1")).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    let status = api.post(&format!("{pc}/queryStatus?{V}")).await;
    assert_eq!(status.body["packetCaptureStatus"], "NotStarted");

    // delete: 204, gone, and a second delete is still 204
    for _ in 0..2 {
        let deleted = api.send(Method::DELETE, &format!("{pc}?{V}"), None).await;
        assert_eq!((deleted.status, &deleted.body), (StatusCode::NO_CONTENT, &Value::Null));
    }
    assert_eq!(api.get(&format!("{pc}?{V}")).await.status, StatusCode::NOT_FOUND);
    let listed = api.get(&format!("{NW}/packetCaptures?{V}")).await;
    assert_eq!(listed.body, json!({"value": []}));
}

#[tokio::test]
async fn paths_match_in_any_case_and_with_double_slashes() {
    let api = Api::new().await;
    let odd = format!(
        "//SUBSCRIPTIONS/{SUB}/resourcegroups/NetworkWatcherRG//PROVIDERS/microsoft.network/NETWORKWATCHERS/NetworkWatcher_westus/packetcaptures/Pc1/"
    );
    let created = api.put(&format!("{odd}?{V}"), &capture_body("vm1")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    // names keep the caller's case; fixed segments are canonical
    assert_eq!(created.body["id"], format!("{NW}/packetCaptures/Pc1"));
    assert_eq!(created.body["name"], "Pc1");
    // found by any spelling
    let shown = api.get(&format!("{NW}/PacketCaptures/PC1?{V}")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["name"], "Pc1");
    let status = api
        .post(&format!("{}/QUERYSTATUS?{V}", odd.trim_end_matches('/')))
        .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    let metadata = api.get("//metadata/endpoints?api-version=2022-09-01").await;
    assert_eq!(metadata.status, StatusCode::OK);
    assert_eq!(metadata.body["resourceManager"], format!("http://{HOST}/"));
}

#[tokio::test]
async fn bootstrap_routes() {
    let api = Api::new().await;
    let metadata = api.get("/metadata/endpoints").await;
    assert_eq!(metadata.status, StatusCode::OK);
    assert!(metadata.body["authentication"]["audiences"][0].is_string());
    assert_eq!(metadata.body["name"], "netwatch");

    let subs = api.get("/subscriptions?api-version=2022-12-01").await;
    assert_eq!(subs.status, StatusCode::OK);
    let sub = &subs.body["value"][0];
    assert_eq!(
        (&sub["subscriptionId"], &sub["state"]),
        (&json!(SUB), &json!("Enabled"))
    );
    assert!(sub["tenantId"].is_string() && sub["displayName"].is_string());

    let locations = api
        .get(&format!("/subscriptions/{SUB}/locations?api-version=2022-12-01"))
        .await;
    assert_eq!(locations.status, StatusCode::OK);
    let west = &locations.body["value"][0];
    assert_eq!(
        (&west["name"], &west["displayName"]),
        (&json!("westus"), &json!("West US"))
    );

    for (namespace, canonical, a_type) in [
        (
            "Microsoft.Network",
            "Microsoft.Network",
            "networkWatchers/packetCaptures",
        ),
        ("microsoft.compute", "Microsoft.Compute", "virtualMachines"),
        ("MICROSOFT.STORAGE", "Microsoft.Storage", "storageAccounts"),
    ] {
        let provider = api
            .get(&format!(
                "/subscriptions/{SUB}/providers/{namespace}?api-version=2024-11-01"
            ))
            .await;
        assert_eq!(provider.status, StatusCode::OK, "{namespace}");
        assert_eq!(provider.body["namespace"], canonical);
        let types = provider.body["resourceTypes"].as_array().unwrap();
        let found = types.iter().find(|t| t["resourceType"] == a_type).unwrap();
        assert!(!found["apiVersions"].as_array().unwrap().is_empty());
    }
}

#[tokio::test]
async fn network_watchers() {
    let api = Api::new().await;
    let nw = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1");
    let created = api
        .put(&format!("{nw}?{V}"), &json!({"location": "West US", "tags": {}}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["location"], "westus");
    assert_eq!(created.body["type"], "Microsoft.Network/networkWatchers");
    assert_eq!(created.body["properties"]["provisioningState"], "Succeeded");
    let again = api.put(&format!("{nw}?{V}"), &created.body).await;
    assert_eq!((again.status, &again.body), (StatusCode::OK, &created.body));
    let shown = api.get(&format!("{nw}?{V}")).await;
    assert_eq!((shown.status, &shown.body), (StatusCode::OK, &created.body));
    let all = api
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Network/networkWatchers?{V}"
        ))
        .await;
    assert_eq!(all.body, json!({"value": [created.body.clone()]}));
    // captures go under it; the default watcher is not created beside it
    let pc = api
        .put(&format!("{nw}/packetCaptures/pc1?{V}"), &capture_body("vm1"))
        .await;
    assert_eq!(pc.status, StatusCode::CREATED, "{}", pc.body);
    let under_default = api
        .put(&format!("{NW}/packetCaptures/pc2?{V}"), &capture_body("vm1"))
        .await;
    assert_eq!(under_default.status, StatusCode::NOT_FOUND);
    // a missing watcher deletes as 204
    let gone = api.send(Method::DELETE, &format!("{NW}?{V}"), None).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    // an existing one goes with its captures
    let deleted = api.send(Method::DELETE, &format!("{nw}?{V}"), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get(&format!("{nw}?{V}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.get(&format!("{nw}/packetCaptures/pc1?{V}")).await.status,
        StatusCode::NOT_FOUND
    );
    let all = api
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Network/networkWatchers?{V}"
        ))
        .await;
    assert_eq!(all.body, json!({"value": []}));
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

#[tokio::test]
async fn an_operation_in_progress_asks_to_retry() {
    let api = Api::new().await;
    let op = OperationRecord {
        id: "op-1".into(),
        resource_id: format!("{NW}/packetCaptures/pc1"),
        kind: OperationKind::Create,
        status: OperationStatus::InProgress,
        error_json: None,
        created_ms: now_ms(),
        updated_ms: now_ms(),
    };
    api.store.insert_operation(&op).await.unwrap();
    let path = format!("/subscriptions/{SUB}/providers/Microsoft.Network/locations/westus/operations/op-1?{V}");
    let answer = api.get(&path).await;
    assert_eq!(
        (answer.status, &answer.body["status"]),
        (StatusCode::OK, &json!("InProgress"))
    );
    assert_eq!(answer.header("retry-after"), Some("1"));

    let error = r#"{"error":{"code":"CaptureFailed","message":"no such interface"}}"#;
    assert!(
        api.store
            .finish_operation("op-1", OperationStatus::Failed, Some(error), 2)
            .await
            .unwrap()
    );
    let answer = api.get(&path).await;
    assert_eq!(answer.body["status"], "Failed");
    assert_eq!(answer.body["error"]["code"], "CaptureFailed");
    assert_eq!(answer.header("retry-after"), None);

    // a create whose agent never started it reads Failed after a minute
    let stale = OperationRecord {
        id: "op-2".into(),
        created_ms: now_ms() - 61_000,
        ..op
    };
    api.store.insert_operation(&stale).await.unwrap();
    let path = format!("/subscriptions/{SUB}/providers/Microsoft.Network/locations/westus/operations/op-2?{V}");
    let answer = api.get(&path).await;
    assert_eq!(answer.body["status"], "Failed", "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "AgentStopped");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is it connected"),
        "{}",
        answer.body
    );
}

/// method, uri, body, expected status, ARM code and target.
type BadRequest = (Method, String, Option<Vec<u8>>, u16, &'static str, Option<&'static str>);

#[tokio::test]
async fn bad_requests_change_nothing() {
    let api = Api::new().await;
    let busy = format!("{NW}/packetCaptures/busy");
    assert_eq!(
        api.put(&format!("{busy}?{V}"), &capture_body("vm1")).await.status,
        StatusCode::CREATED
    );
    let before = api.snapshot().await;

    let pc = format!("{NW}/packetCaptures/pc1");
    let good = capture_body("vm1").to_string().into_bytes();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut body = capture_body("vm1");
        change(&mut body);
        Some(body.to_string().into_bytes())
    };
    let other_sub = "11111111-1111-1111-1111-111111111111";
    let eastus = NW.replace("westus", "eastus");
    let huge = {
        let mut body = capture_body("vm1");
        body["properties"]["padding"] = json!("x".repeat(MAX_BODY_BYTES));
        Some(body.to_string().into_bytes())
    };
    #[rustfmt::skip]
    let rows: Vec<BadRequest> = vec![
        (Method::PUT, pc.clone(), Some(good.clone()), 400, "MissingApiVersionParameter", Some("api-version")),
        (Method::PUT, format!("{pc}?api-version="), Some(good.clone()), 400, "MissingApiVersionParameter", Some("api-version")),
        (Method::PUT, format!("{pc}?api-version=2024-13-01"), Some(good.clone()), 400, "InvalidApiVersionParameter", Some("api-version")),
        (Method::GET, format!("{NW}/packetCaptures?api-version=latest"), None, 400, "InvalidApiVersionParameter", Some("api-version")),
        (Method::POST, format!("{busy}/queryStatus"), None, 400, "MissingApiVersionParameter", Some("api-version")),
        (Method::PUT, format!("{NW}/packetCaptures/bad%20name?{V}"), Some(good.clone()), 400, "InvalidResourceName", Some("packetCaptureName")),
        (Method::PUT, format!("{NW}/packetCaptures/pc1.?{V}"), Some(good.clone()), 400, "InvalidResourceName", Some("packetCaptureName")),
        (Method::PUT, format!("{}/packetCaptures/pc1?{V}", NW.replace("NetworkWatcherRG", "rg*")), Some(good.clone()), 400, "InvalidResourceName", Some("resourceGroupName")),
        (Method::PUT, format!("{}/packetCaptures/pc1?{V}", NW.replace(SUB, "abc")), Some(good.clone()), 400, "InvalidSubscriptionId", Some("subscriptionId")),
        (Method::PUT, format!("{}/packetCaptures/pc1?{V}", NW.replace(SUB, other_sub)), Some(good.clone()), 404, "NotFound", Some("subscriptionId")),
        (Method::PUT, format!("{pc}?{V}"), Some(b"{".to_vec()), 400, "InvalidRequestFormat", None),
        (Method::PUT, format!("{pc}?{V}"), Some(Vec::new()), 400, "InvalidRequestFormat", None),
        (Method::PUT, format!("{pc}?{V}"), Some(json!({"target": vm_id("vm1")}).to_string().into_bytes()), 400, "InvalidRequestFormat", Some("target")),
        (Method::PUT, format!("{pc}?{V}"), with(&|b| b["properties"]["timeLimitInSeconds"] = json!(99_999)), 400, "InvalidRequestFormat", Some("properties.timeLimitInSeconds")),
        (Method::PUT, format!("{pc}?{V}"), with(&|b| b["properties"]["filters"][0]["localPort"] = json!("70000")), 400, "InvalidRequestFormat", Some("properties.filters[0].localPort")),
        (Method::PUT, format!("{pc}?{V}"), with(&|b| b["properties"]["target"] = json!(vm_id("ghost"))), 400, "InvalidRequestFormat", Some("properties.target")),
        (Method::PUT, format!("{pc}?{V}"), with(&|b| b["properties"]["target"] = b["properties"]["storageLocation"]["storageId"].clone()), 400, "LinkedInvalidPropertyId", Some("properties.target")),
        (Method::PUT, format!("{pc}?{V}"), with(&|b| { b["properties"].as_object_mut().unwrap().remove("storageLocation"); }), 400, "InvalidRequestFormat", Some("properties.storageLocation")),
        (Method::PUT, format!("{eastus}/packetCaptures/pc1?{V}"), Some(good.clone()), 400, "InvalidRequestFormat", Some("properties.target")),
        (Method::PUT, format!("{pc}?{V}"), huge, 413, "RequestBodyTooLarge", None),
        (Method::PUT, format!("{busy}?{V}"), Some(good.clone()), 409, "Conflict", None),
        (Method::PATCH, format!("{pc}?{V}"), Some(good.clone()), 405, "MethodNotAllowed", None),
        (Method::GET, format!("/subscriptions/{SUB}/nothing?{V}"), None, 404, "NotFound", None),
        (Method::GET, "/".to_owned(), None, 404, "NotFound", None),
        (Method::GET, format!("{pc}?{V}"), None, 404, "ResourceNotFound", None),
        (Method::POST, format!("{pc}/stop?{V}"), None, 404, "ResourceNotFound", None),
        (Method::GET, format!("{}/packetCaptures?{V}", NW.replace("westus", "nowhere")), None, 404, "ResourceNotFound", None),
        (Method::PUT, format!("{}/packetCaptures/pc1?{V}", NW.replace("NetworkWatcher_westus", "nw9")), Some(good.clone()), 404, "ResourceNotFound", None),
        (Method::PUT, format!("{}?{V}", NW.replace("NetworkWatcherRG", "rg1").replace("NetworkWatcher_westus", "nw2")), Some(json!({"location": "mars"}).to_string().into_bytes()), 400, "InvalidRequestFormat", Some("location")),
        (Method::PUT, format!("{}?{V}", NW.replace("NetworkWatcher_westus", "other")), Some(json!({"location": "westus"}).to_string().into_bytes()), 409, "Conflict", None),
        (Method::PUT, format!("{NW}?{V}"), Some(json!({"location": "eastus"}).to_string().into_bytes()), 400, "InvalidRequestFormat", Some("location")),
        (Method::GET, format!("/subscriptions/{SUB}/providers/Microsoft.Nope?{V}"), None, 404, "NotFound", Some("resourceProviderNamespace")),
        (Method::GET, format!("/subscriptions/{SUB}/providers/Microsoft.Network/locations/westus/operations/nope?{V}"), None, 404, "NotFound", None),
    ];
    assert!(rows.len() >= 20);
    for (method, uri, body, status, code, target) in rows {
        let what = format!("{method} {uri}");
        let answer = api.send(method, &uri, body).await;
        assert_eq!(answer.status.as_u16(), status, "{what}: {}", answer.body);
        assert_eq!(answer.body["error"]["code"], code, "{what}: {}", answer.body);
        assert!(
            answer.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert_eq!(
            answer.body["error"]["target"].as_str(),
            target,
            "{what}: {}",
            answer.body
        );
        assert_eq!(api.snapshot().await, before, "{what} changed the store");
    }

    // a body that is not JSON by its content type
    let answer = api
        .send_typed(Method::PUT, &format!("{pc}?{V}"), Some(good), "text/plain")
        .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer.body["error"]["code"], "UnsupportedMediaType");
    assert_eq!(api.snapshot().await, before);
}

#[tokio::test]
async fn internal_errors_are_arm_bodies_without_their_cause() {
    let api = Api::new().await;
    let pc = format!("{NW}/packetCaptures/pc1");
    assert_eq!(
        api.put(&format!("{pc}?{V}"), &capture_body("vm1")).await.status,
        StatusCode::CREATED
    );
    // a row the API cannot read back, as after a bad migration
    let mut record = api.store.get_capture(&pc).await.unwrap().unwrap();
    api.store.delete_capture(&pc).await.unwrap();
    record.request_json = "{not json".into();
    record.errors_json = "oops".into();
    api.store.insert_capture(&record).await.unwrap();
    for answer in [
        api.get(&format!("{pc}?{V}")).await,
        api.post(&format!("{pc}/queryStatus?{V}")).await,
    ] {
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(answer.body["error"]["code"], "InternalServerError");
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("unreadable") && !message.contains("expected"),
            "{message}"
        );
    }
}
