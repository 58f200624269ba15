//! The OpenAPI document (`crates/controller/openapi.json`, served at
//! `GET /netwatch/v1/openapi.json`) held against the server it describes:
//! - it is served, as JSON, without a token, when tokens are configured;
//! - it is valid OpenAPI 3.0, by `openapi-spec-validator`;
//! - every documented operation, sent with the document's examples, reaches
//!   its route and answers one of its documented statuses;
//! - every route the server serves is documented, with the same methods
//!   ([`ROUTES`] lists them; a tripwire counts the `.route(` calls in the
//!   sources, so a new route fails here until it is listed and documented);
//! - the answers of a whole session (bootstrap, watchers, a capture's life and
//!   its monitors, VMs, scale sets with their instances and keys and a capture
//!   over them, storage accounts, an agent's upload of a capture file and its
//!   downloads, the merged download of the capture over a scale set, flight
//!   recorders, triggers and alerts delivered to their webhook, errors)
//!   have documented statuses, headers and content types, and their JSON
//!   bodies match the documented schemas, by `openapi-schema-validator`.
//!
//! The two validators run in the Python that `NETWATCH_TEST_PYTHON` names
//! (scripts/test.sh makes it); without it these tests fail, they never skip.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine as _;
use netwatch_api::agent::{RecorderStatus, run_id};
use netwatch_controller::app::{ApiConfig, AppState};
use netwatch_controller::auth::{Tokens, digest};
use netwatch_controller::identity::Signer;
use netwatch_controller::routes::{MAX_BODY_BYTES, router};
use netwatch_controller::store::{
    AgentCredentialRecord, CaptureStatus, EnrollmentRecord, OperationKind, OperationRecord, OperationStatus, Store,
    VmRecord,
};
use netwatch_storage::{AccountConfig, AccountKind, Accounts};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

/// The document as the server embeds it.
const DOCUMENT: &str = include_str!("../openapi.json");
const OPENAPI_PATH: &str = "/netwatch/v1/openapi.json";
/// The paths documented without a security requirement: auth.rs's
/// `PUBLIC_PATHS` that have a route, the login routes and agent builds, and a
/// trigger's webhook URL (auth.rs's `is_alerts_path`: its secret is in the
/// path). `POST /netwatch/v1/alerts` takes a trigger's secret as its bearer
/// token: the document says so (`webhookSecret`), so it is not here.
const PUBLIC: [&str; 14] = [
    "/metadata/endpoints",
    "/netwatch/v1/agent/install.sh",
    "/netwatch/v1/agent/builds",
    "/netwatch/v1/agent/builds/{arch}/{version}",
    "/netwatch/v1/health",
    OPENAPI_PATH,
    "/{tenant}/v2.0/.well-known/openid-configuration",
    "/{tenant}/oauth2/v2.0/token",
    "/{tenant}/discovery/v2.0/keys",
    "/msi/token",
    "/netwatch/v1/alerts/{secret}",
    "/console",
    "/console/",
    "/console/{file}",
];

const SUB: &str = "00000000-0000-0000-0000-000000000000";
const V: &str = "api-version=2024-05-01";
const HOST: &str = "netwatch.test:8443";
const ADMIN: &str = "admin-token-of-the-openapi-tests";
const AGENT: &str = "agent-token-of-the-openapi-tests";
/// The own credential of the agent of another VM than [`VM1`].
const VM9_AGENT: &str = "credential-of-vm9s-agent";
const NW_WEST: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus";
const NW_EAST: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_eastus";
const OPERATIONS: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Network/locations/westus";
const VM1: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1";
const VM9: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm9";
const UPLOADS: &str = "/netwatch/v1/agent/uploads";
const UPLOADS_COMPLETE: &str = "/netwatch/v1/agent/uploads/complete";

/// Every route the router serves, spelled as routes.rs and routes/*.rs
/// register them (fixed segments in lower case, axum's parameter names), with
/// the methods each registers. A new route belongs here and in openapi.json.
const ROUTES: [(&str, &[&str]); 61] = [
    ("/metadata/endpoints", &["GET"]),
    ("/subscriptions", &["GET"]),
    ("/subscriptions/{subscription}/locations", &["GET"]),
    ("/subscriptions/{subscription}/providers/{namespace}", &["GET"]),
    ("/netwatch/v1/agent/channel", &["GET"]),
    ("/netwatch/v1/agent/install.sh", &["GET"]),
    ("/metrics", &["GET"]),
    ("/netwatch/v1/agent/builds", &["GET"]),
    ("/netwatch/v1/agent/builds/{arch}/{version}", &["GET"]),
    (
        "/subscriptions/{subscription}/providers/microsoft.network/networkwatchers",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.network/networkwatchers/{watcher}",
        &["GET", "PUT", "DELETE"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.network/networkwatchers/{watcher}/packetcaptures",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.network/networkwatchers/{watcher}/packetcaptures/{capture}",
        &["GET", "PUT", "DELETE"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.network/networkwatchers/{watcher}/packetcaptures/{capture}/querystatus",
        &["POST"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.network/networkwatchers/{watcher}/packetcaptures/{capture}/stop",
        &["POST"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.network/networkwatchers/{watcher}/packetcaptures/{capture}/merged",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.network/networkwatchers/{watcher}/netwatchflightrecorders",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.network/networkwatchers/{watcher}/netwatchflightrecorders/{name}",
        &["GET", "PUT", "DELETE"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.network/networkwatchers/{watcher}/netwatchtriggers",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.network/networkwatchers/{watcher}/netwatchtriggers/{name}",
        &["GET", "PUT", "DELETE"],
    ),
    ("/netwatch/v1/alerts", &["POST"]),
    ("/netwatch/v1/alerts/{secret}", &["POST"]),
    (
        "/subscriptions/{subscription}/providers/microsoft.network/locations/{location}/operations/{operation}",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/providers/microsoft.network/locations/{location}/operationresults/{operation}",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/providers/microsoft.compute/virtualmachines",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute/virtualmachines",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute/virtualmachines/{vm}",
        &["GET", "PATCH"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute/virtualmachines/{vm}/extensions",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute/virtualmachines/{vm}/extensions/{extension}",
        &["GET", "PUT", "DELETE"],
    ),
    (
        "/subscriptions/{subscription}/providers/microsoft.compute/virtualmachinescalesets",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute/virtualmachinescalesets",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute/virtualmachinescalesets/{vmss}",
        &["GET", "PUT", "PATCH"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute/virtualmachinescalesets/{vmss}/virtualmachines",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute/virtualmachinescalesets/{vmss}/virtualmachines/{instance}",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute/virtualmachinescalesets/{vmss}/delete",
        &["POST"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute/virtualmachinescalesets/{vmss}/extensions",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.compute/virtualmachinescalesets/{vmss}/extensions/{extension}",
        &["GET", "PUT", "DELETE"],
    ),
    (
        "/subscriptions/{subscription}/providers/microsoft.storage/storageaccounts",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/providers/microsoft.storage/checknameavailability",
        &["POST"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.storage/storageaccounts",
        &["GET"],
    ),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.storage/storageaccounts/{account}",
        &["GET", "PUT", "DELETE"],
    ),
    ("/netwatch/v1/agent/files/{account}/{*path}", &["PUT"]),
    ("/netwatch/v1/agent/uploads", &["POST"]),
    ("/netwatch/v1/agent/uploads/complete", &["POST"]),
    ("/netwatch/v1/storage/{account}/{*path}", &["GET", "HEAD"]),
    (OPENAPI_PATH, &["GET"]),
    ("/{tenant}/v2.0/.well-known/openid-configuration", &["GET"]),
    ("/{tenant}/oauth2/v2.0/token", &["POST"]),
    ("/{tenant}/discovery/v2.0/keys", &["GET"]),
    ("/msi/token", &["GET"]),
    ("/netwatch/v1/health", &["GET"]),
    ("/netwatch/v1/tokens", &["GET", "POST"]),
    ("/netwatch/v1/tokens/{name}", &["DELETE"]),
    ("/console", &["GET"]),
    ("/console/", &["GET"]),
    ("/console/{*file}", &["GET"]),
    ("/netwatch/v1/whoami", &["GET"]),
    ("/netwatch/v1/validate/packetCapture", &["POST"]),
    ("/netwatch/v1/captures/events", &["GET"]),
    (
        "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.network/networkwatchers/{watcher}/packetcaptures/{capture}/live",
        &["GET"],
    ),
    ("/netwatch/v1/agent/live/{stream}", &["POST"]),
];

/// Values for [`ROUTES`]' parameters when probing them.
const ROUTE_VALUES: [(&str, &str); 21] = [
    ("{subscription}", SUB),
    ("{group}", "rg1"),
    ("{watcher}", "nw1"),
    ("{capture}", "pc1"),
    ("{location}", "westus"),
    ("{operation}", "op-1"),
    ("{namespace}", "Microsoft.Network"),
    ("{vm}", "vm1"),
    ("{vmss}", "ss1"),
    ("{instance}", "0"),
    ("{extension}", "NetworkWatcherAgentLinux"),
    ("{account}", "captures"),
    ("{*path}", "a/b.cap"),
    ("{path}", "a/b.cap"),
    ("{tenant}", "00000000-0000-0000-0000-000000000000"),
    ("{arch}", "x86_64"),
    ("{version}", "0.1.0"),
    ("{name}", "rec1"),
    ("{secret}", "not-a-webhook-secret"),
    ("{*file}", "js/app.js"),
    ("{stream}", "0190a1b2-0000-7000-8000-000000000000"),
];

/// The HTTP methods an OpenAPI path item may have.
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

// ---------------------------------------------------------------------------
// The server

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
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|_| panic!("not JSON: {}", self.text()))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    /// The content type without parameters, in lower case.
    fn content_type(&self) -> Option<String> {
        let value = self.header("content-type")?;
        Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
    }

    /// The router's own 404, for a path no route serves.
    fn is_no_route(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
            && serde_json::from_slice::<Value>(&self.bytes).is_ok_and(|body| {
                body["error"]["code"] == "NotFound"
                    && body["error"]["message"]
                        .as_str()
                        .is_some_and(|message| message.starts_with("no route for"))
            })
    }
}

/// A request to send: method, path and query, token, headers, body.
struct Call<'a> {
    method: Method,
    uri: String,
    token: Option<&'a str>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    /// Whether to say the body's length, as any real client does.
    content_length: bool,
}

impl<'a> Call<'a> {
    fn new(method: Method, uri: impl Into<String>) -> Self {
        Self {
            method,
            uri: uri.into(),
            token: Some(ADMIN),
            headers: Vec::new(),
            body: None,
            content_length: true,
        }
    }

    fn token(mut self, token: Option<&'a str>) -> Self {
        self.token = token;
        self
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn json(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string().into_bytes())
    }

    fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }
}

impl Api {
    /// An API with tokens configured, VM `vm1` (rg1, westus, an agent heard
    /// from) and storage account `captures` (resource group `netwatch`).
    async fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("state.db").display()))
            .await
            .unwrap();
        let facts = json!({
            "hostname": "host-1", "agentVersion": "0.1.0", "connectedMs": 5,
            "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "addresses": ["10.0.0.4/24", "fe80::1/64"]}],
        });
        let vm = VmRecord {
            id: VM1.to_owned(),
            subscription: SUB.into(),
            location: "westus".into(),
            agent_json: facts.to_string(),
            last_seen_ms: Some(1_738_341_581_077),
            created_ms: 1,
            tags_json: "{}".to_owned(),
        };
        store.upsert_vm(&vm).await.unwrap();
        let account = AccountConfig::new(
            "captures",
            AccountKind::Local {
                path: dir.path().join("captures"),
            },
        )
        .unwrap();
        let config = ApiConfig {
            auth: Some(Tokens::from_digests(&[digest(ADMIN)], &[digest(AGENT)]).unwrap()),
            signer: Some(Signer::random().unwrap()),
            accounts_dir: Some(dir.path().join("made")),
            ..ApiConfig::default()
        };
        let router = router(AppState::new(
            store.clone(),
            config.clone(),
            Accounts::new(vec![account]),
        ));
        Api {
            router,
            store,
            config,
            dir: Arc::new(dir),
        }
    }

    /// This controller restarted with the storage accounts `accounts`: the
    /// same store, tokens and grant key.
    fn restarted(&self, accounts: Accounts) -> Api {
        Api {
            router: router(AppState::new(self.store.clone(), self.config.clone(), accounts)),
            store: self.store.clone(),
            config: self.config.clone(),
            dir: Arc::clone(&self.dir),
        }
    }

    async fn send(&self, call: Call<'_>) -> Answer {
        let mut request = Request::builder()
            .method(call.method)
            .uri(&call.uri)
            .header(header::HOST, HOST);
        if let Some(token) = call.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in &call.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(body) = &call.body
            && call.content_length
        {
            request = request.header(header::CONTENT_LENGTH, body.len());
        }
        let request = request.body(call.body.map_or_else(Body::empty, Body::from)).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let event_stream = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
        let bytes = if event_stream {
            read_until_synced(response.into_body()).await
        } else {
            axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap()
                .to_vec()
        };
        Answer { status, headers, bytes }
    }
}

/// A server-sent event stream does not end: its events up to `synced` (the
/// end of its first snapshot), within 10 s.
async fn read_until_synced(body: Body) -> Vec<u8> {
    use futures_util::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
            if String::from_utf8_lossy(&bytes).contains("event: synced") {
                return;
            }
        }
        panic!("the event stream ended before `synced`");
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("the event stream sent `synced` within 10 s");
    bytes
}

// ---------------------------------------------------------------------------
// The document

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
}

fn document_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

/// `value`, its `#/…` reference followed when it is one.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("reference {reference} is not within the document"));
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("reference {reference} points at nothing"));
            resolve(doc, target)
        }
        None => value,
    }
}

/// One documented operation.
struct Operation<'a> {
    path: &'a str,
    method: Method,
    id: &'a str,
    op: &'a Value,
    /// The path item's and the operation's, references followed.
    parameters: Vec<&'a Value>,
}

fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths is an object") {
        let shared: Vec<&Value> = item
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|parameter| resolve(doc, parameter))
            .collect();
        for (key, op) in item.as_object().unwrap() {
            if !METHODS.contains(&key.as_str()) {
                continue;
            }
            let mut parameters = shared.clone();
            for parameter in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
                let parameter = resolve(doc, parameter);
                parameters.retain(|p| !(p["name"] == parameter["name"] && p["in"] == parameter["in"]));
                parameters.push(parameter);
            }
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{key} {path} has no operationId"));
            out.push(Operation {
                path,
                method: Method::from_bytes(key.to_ascii_uppercase().as_bytes()).unwrap(),
                id,
                op,
                parameters,
            });
        }
    }
    out
}

impl Operation<'_> {
    /// Whether a token is needed: the operation's `security`, or the document's.
    fn secured(&self, doc: &Value) -> bool {
        let security = self.op.get("security").unwrap_or(&doc["security"]);
        !security.as_array().unwrap().is_empty()
    }

    /// The request the document's examples make.
    fn example_call(&self, doc: &Value) -> Call<'static> {
        let mut path = self.path.to_owned();
        let mut query = Vec::new();
        let mut headers = Vec::new();
        for parameter in &self.parameters {
            let name = parameter["name"].as_str().unwrap();
            let Some(example) = parameter.get("example").and_then(Value::as_str) else {
                assert_ne!(
                    parameter["required"],
                    json!(true),
                    "{} {}: required parameter {name} has no example",
                    self.method,
                    self.path
                );
                continue;
            };
            match parameter["in"].as_str().unwrap() {
                "path" => path = path.replace(&format!("{{{name}}}"), example),
                "query" => query.push(format!("{name}={example}")),
                "header" => headers.push((name.to_owned(), example.to_owned())),
                other => panic!("{} {}: parameter {name} is in {other}", self.method, self.path),
            }
        }
        assert!(
            !path.contains('{'),
            "{} {}: a path parameter is not declared",
            self.method,
            self.path
        );
        let uri = if query.is_empty() {
            path
        } else {
            format!("{path}?{}", query.join("&"))
        };
        let mut call = Call::new(self.method.clone(), uri).token(self.secured(doc).then_some(ADMIN));
        call.headers = headers;
        if let Some(body) = self.op.get("requestBody") {
            let body = resolve(doc, body);
            let (media, content) = body["content"].as_object().unwrap().iter().next().unwrap();
            let example = content
                .get("example")
                .unwrap_or_else(|| panic!("{} {}: the request body has no example", self.method, self.path));
            let bytes = match example {
                Value::String(text) if media != "application/json" => text.as_bytes().to_vec(),
                other => other.to_string().into_bytes(),
            };
            call = call.header("content-type", media).body(bytes);
        }
        call
    }

    /// The documented response for `status`, references followed.
    fn response<'d>(&'d self, doc: &'d Value, status: StatusCode) -> Option<&'d Value> {
        let response = self.op["responses"].get(status.as_str())?;
        Some(resolve(doc, response))
    }

    /// Checks `answer` against the documented response of its status: it is
    /// documented, its content type is, and so are its required headers.
    fn check_answer(&self, doc: &Value, answer: &Answer, what: &str) {
        let response = self
            .response(doc, answer.status)
            .unwrap_or_else(|| panic!("{what}: {} is not a documented status of {}", answer.status, self.id));
        for (name, documented) in response.get("headers").and_then(Value::as_object).into_iter().flatten() {
            let documented = resolve(doc, documented);
            let value = answer.header(name);
            if documented["required"] == json!(true) {
                assert!(value.is_some(), "{what}: the documented header {name} is missing");
            }
            if let Some(value) = value
                && documented["schema"]["type"] == "integer"
            {
                assert!(
                    value.parse::<i64>().is_ok(),
                    "{what}: header {name} {value:?} is not an integer"
                );
            }
        }
        let content = response.get("content").and_then(Value::as_object);
        if self.method == Method::HEAD || answer.bytes.is_empty() {
            return;
        }
        let content = content.unwrap_or_else(|| panic!("{what}: the answer has a body, but the document none"));
        let content_type = answer
            .content_type()
            .unwrap_or_else(|| panic!("{what}: the answer has a body but no content type"));
        assert!(
            content.contains_key(&content_type),
            "{what}: content type {content_type} is not documented ({:?})",
            content.keys().collect::<Vec<_>>()
        );
    }
}

/// A path with every parameter written `{}` and fixed segments in lower case,
/// to compare the router's templates and the document's paths.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "{}".to_owned()
            } else {
                segment.to_ascii_lowercase()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `uri`'s path is an instance of the documented `template`: fixed
/// segments in any case, a parameter for one segment, a last `{path}` for the
/// rest (blob paths).
fn instance_of(template: &str, uri: &str) -> bool {
    let path = uri.split('?').next().unwrap();
    let (template, actual): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    for (index, segment) in template.iter().enumerate() {
        let Some(value) = actual.get(index) else {
            return false;
        };
        if *segment == "{path}" && index == template.len() - 1 {
            return !value.is_empty();
        }
        let matches = if segment.starts_with('{') {
            !value.is_empty()
        } else {
            segment.eq_ignore_ascii_case(value)
        };
        if !matches {
            return false;
        }
    }
    template.len() == actual.len()
}

// ---------------------------------------------------------------------------
// Python

/// The test Python, from the environment; a clear failure without it.
fn python() -> PathBuf {
    let Some(python) = std::env::var_os("NETWATCH_TEST_PYTHON") else {
        panic!(
            "NETWATCH_TEST_PYTHON is not set: it names a Python with openapi-spec-validator and \
             openapi-schema-validator installed. scripts/test.sh makes one; by hand: python3 -m venv V && \
             V/bin/pip install openapi-spec-validator openapi-schema-validator && \
             NETWATCH_TEST_PYTHON=$PWD/V/bin/python cargo test"
        );
    };
    let python = PathBuf::from(python);
    assert!(
        python.exists(),
        "NETWATCH_TEST_PYTHON={} does not exist",
        python.display()
    );
    python
}

/// Runs `script` with `args`; its standard output, or a failure with both outputs.
fn run_python(script: &str, args: &[&Path]) -> String {
    let python = python();
    let output = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("run {}: {err}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} failed ({}):\n{stdout}\n{}",
        python.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Validates the document (argv[1]) as OpenAPI 3.0.
const VALIDATE_DOCUMENT: &str = r#"
import json, sys
try:
    from openapi_spec_validator import OpenAPIV30SpecValidator, validate
except ImportError as err:
    sys.exit(f"openapi-spec-validator is not installed in {sys.executable}: {err}")
with open(sys.argv[1], encoding="utf-8") as f:
    spec = json.load(f)
validate(spec, cls=OpenAPIV30SpecValidator)
print(f"valid OpenAPI {spec['openapi']}")
"#;

/// Validates the JSON bodies of answers (argv[2], a list of
/// `{operation, status, contentType, body}`) against the schemas the document
/// (argv[1]) gives their operation, status and content type.
const VALIDATE_ANSWERS: &str = r##"
import json, sys, urllib.parse
try:
    from openapi_schema_validator import OAS30Validator, oas30_format_checker
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4
except ImportError as err:
    sys.exit(f"openapi-schema-validator is not installed in {sys.executable}: {err}")

BASE = "urn:netwatch:openapi"
with open(sys.argv[1], encoding="utf-8") as f:
    doc = json.load(f)
with open(sys.argv[2], encoding="utf-8") as f:
    answers = json.load(f)
registry = Registry().with_resource(BASE, Resource.from_contents(doc, default_specification=DRAFT4))
where = {}
for path, item in doc["paths"].items():
    for method, op in item.items():
        if isinstance(op, dict) and "operationId" in op:
            where[op["operationId"]] = ["paths", path, method]

def lookup(parts):
    node = doc
    for part in parts:
        node = node[part]
    return node

def uri(parts):
    escaped = (part.replace("~", "~0").replace("/", "~1") for part in parts)
    return BASE + "#/" + "/".join(urllib.parse.quote(part, safe="") for part in escaped)

failures, checked = [], 0
for answer in answers:
    parts = where[answer["operation"]] + ["responses", str(answer["status"])]
    response = lookup(parts)
    if "$ref" in response:
        parts = response["$ref"][2:].split("/")
        response = lookup(parts)
    if answer["body"] is None:
        continue
    parts = parts + ["content", answer["contentType"], "schema"]
    validator = OAS30Validator({"$ref": uri(parts)}, registry=registry, format_checker=oas30_format_checker)
    checked += 1
    for error in validator.iter_errors(answer["body"]):
        at = "/".join(str(part) for part in error.absolute_path)
        body = json.dumps(answer["body"])[:1500]
        failures.append(f"{answer['operation']} {answer['status']}: {error.message} (at /{at})\n  body: {body}")
if failures:
    sys.exit("answers that do not match their documented schemas:\n" + "\n".join(failures))
print(f"{checked} answers match their schemas")
"##;

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn the_document_is_served_without_a_token() {
    let api = Api::new().await;
    let answer = api.send(Call::new(Method::GET, OPENAPI_PATH).token(None)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.content_type().as_deref(), Some("application/json"));
    let doc = document();
    assert_eq!(answer.json(), doc);
    assert_eq!(doc["openapi"], "3.0.3");
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!((&bearer["type"], &bearer["scheme"]), (&json!("http"), &json!("bearer")));
    assert_eq!(doc["security"], json!([{"bearer": []}]));

    // The rest of the API still wants a token, and the document says which
    // operations do.
    let denied = api
        .send(Call::new(Method::GET, format!("/subscriptions?{V}")).token(None))
        .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    for operation in operations(&doc) {
        assert_eq!(
            operation.secured(&doc),
            !PUBLIC.contains(&operation.path),
            "{} {}: documented security is wrong",
            operation.method,
            operation.path
        );
    }
}

#[test]
fn the_document_is_valid_openapi_3_0() {
    let out = run_python(VALIDATE_DOCUMENT, &[&document_path()]);
    assert!(out.contains("valid OpenAPI 3.0.3"), "{out}");
}

#[tokio::test]
async fn every_documented_operation_reaches_its_route() {
    let api = Api::new().await;
    let doc = document();
    let operations = operations(&doc);
    let served: usize = ROUTES.iter().map(|(_, methods)| methods.len()).sum();
    assert_eq!(
        operations.len(),
        served,
        "openapi.json documents {} operations, ROUTES has {served}",
        operations.len()
    );
    let mut ids = BTreeSet::new();
    for operation in &operations {
        assert!(ids.insert(operation.id), "operationId {} is used twice", operation.id);
        let call = operation.example_call(&doc);
        let uri = call.uri.clone();
        let answer = api.send(call).await;
        let what = format!(
            "{} {} ({uri}) answered {}: {}",
            operation.method,
            operation.path,
            answer.status,
            answer.text()
        );
        assert_ne!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
        assert!(!answer.is_no_route(), "{what}");
        operation.check_answer(&doc, &answer, &what);
    }
}

#[tokio::test]
async fn every_served_route_is_documented() {
    let doc = document();
    let mut documented: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for operation in operations(&doc) {
        documented
            .entry(shape(operation.path))
            .or_insert_with(|| (operation.path.to_owned(), BTreeSet::new()))
            .1
            .insert(operation.method.to_string());
    }
    let served: BTreeMap<String, (&str, BTreeSet<String>)> = ROUTES
        .iter()
        .map(|(template, methods)| {
            let methods = methods.iter().map(|m| (*m).to_owned()).collect();
            (shape(template), (*template, methods))
        })
        .collect();
    assert_eq!(served.len(), ROUTES.len(), "ROUTES lists a route twice");
    for (shape, (template, methods)) in &served {
        let Some((path, documented_methods)) = documented.get(shape) else {
            panic!("route {template} is served but openapi.json does not document it");
        };
        assert_eq!(
            documented_methods, methods,
            "{path}: openapi.json documents {documented_methods:?}, the router serves {methods:?}"
        );
    }
    for (shape, (path, _)) in &documented {
        assert!(
            served.contains_key(shape),
            "openapi.json documents {path}, which is not in ROUTES (is it served?)"
        );
    }

    // The tripwire: every `.route(` call in the sources is one of ROUTES.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join("routes.rs")];
    for entry in std::fs::read_dir(src.join("routes")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let mut registered = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        registered += text
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .map(|line| line.matches(".route(").count())
            .sum::<usize>();
    }
    assert_eq!(
        registered,
        ROUTES.len(),
        "the sources register {registered} routes (`.route(` in src/routes.rs and src/routes/), ROUTES lists {}: \
         add the new route to ROUTES and document it in openapi.json",
        ROUTES.len()
    );

    // The router agrees with ROUTES' methods: those listed reach the route,
    // the others are 405. (HEAD is left out: axum answers it wherever GET is.)
    let api = Api::new().await;
    for (template, methods) in ROUTES {
        let mut uri = template.to_owned();
        for (parameter, value) in ROUTE_VALUES {
            uri = uri.replace(parameter, value);
        }
        if uri.starts_with("/subscriptions") {
            uri = format!("{uri}?{V}");
        }
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            let answer = api
                .send(Call::new(Method::from_bytes(method.as_bytes()).unwrap(), &uri))
                .await;
            let what = format!("{method} {uri} answered {}: {}", answer.status, answer.text());
            if methods.contains(&method) {
                assert_ne!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
                assert!(!answer.is_no_route(), "{what}");
            } else {
                assert_eq!(
                    answer.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{what}: a method ROUTES does not list is served"
                );
            }
        }
    }
}

/// The answers of a session, each checked against its documented response.
struct Session<'a> {
    api: &'a Api,
    doc: &'a Value,
    operations: BTreeMap<&'a str, Operation<'a>>,
    /// `{operation, status, contentType, body}` of every answer, for the schema check.
    answers: Vec<Value>,
}

impl<'a> Session<'a> {
    fn new(api: &'a Api, doc: &'a Value) -> Self {
        let operations = operations(doc).into_iter().map(|op| (op.id, op)).collect();
        Self {
            api,
            doc,
            operations,
            answers: Vec::new(),
        }
    }

    /// Sends `call` as operation `id`; its answer must have status `expected`
    /// and match the document.
    async fn call(&mut self, id: &str, call: Call<'_>, expected: u16) -> Answer {
        let api = self.api;
        self.call_on(api, id, call, expected).await
    }

    /// [`Session::call`] on `api`, this controller restarted ([`Api::restarted`]).
    async fn call_on(&mut self, api: &Api, id: &str, call: Call<'_>, expected: u16) -> Answer {
        let operation = &self.operations[id];
        assert_eq!(call.method, operation.method, "{id}");
        assert!(
            instance_of(operation.path, &call.uri),
            "{} is not an instance of {id}'s {}",
            call.uri,
            operation.path
        );
        let what = format!("{id}: {} {}", call.method, call.uri);
        let head = call.method == Method::HEAD;
        let answer = api.send(call).await;
        let what = format!("{what} answered {}: {}", answer.status, answer.text());
        assert_eq!(answer.status.as_u16(), expected, "{what}");
        operation.check_answer(self.doc, &answer, &what);
        let json = !head && answer.content_type().as_deref() == Some("application/json") && !answer.bytes.is_empty();
        self.answers.push(json!({
            "operation": id,
            "status": answer.status.as_u16(),
            "contentType": answer.content_type(),
            "body": if json { answer.json() } else { Value::Null },
        }));
        answer
    }
}

fn get(uri: impl Into<String>) -> Call<'static> {
    Call::new(Method::GET, uri)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A classic pcap file (Ethernet) of one small packet captured at `seconds`.
fn pcap_file(seconds: u32) -> Vec<u8> {
    // Destination, source, EtherType IPv4, then zeros to Ethernet's minimum.
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    frame.resize(60, 0);
    let length = u32::try_from(frame.len()).unwrap();
    // The header: magic, version 2.4, zone, sigfigs, snap length, LINKTYPE_ETHERNET.
    let mut file = 0xa1b2_c3d4_u32.to_le_bytes().to_vec();
    file.extend_from_slice(&2_u16.to_le_bytes());
    file.extend_from_slice(&4_u16.to_le_bytes());
    // Then the record: seconds, microseconds, captured and original length.
    for field in [0_u32, 0, 65_535, 1, seconds, 0, length, length] {
        file.extend_from_slice(&field.to_le_bytes());
    }
    file.extend_from_slice(&frame);
    file
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// A path and query from an absolute URL this server handed out.
fn local(url: &str) -> String {
    url.strip_prefix(&format!("http://{HOST}"))
        .unwrap_or_else(|| panic!("{url} is not on this server"))
        .to_owned()
}

#[tokio::test]
async fn answers_match_their_schemas() {
    let api = Api::new().await;
    let doc = document();
    let mut s = Session::new(&api, &doc);
    let other_sub = "11111111-1111-1111-1111-111111111111";

    // Bootstrap, and the errors every ARM route shares.
    s.call("Metadata_GetEndpoints", get("/metadata/endpoints").token(None), 200)
        .await;
    s.call("Subscriptions_List", get(format!("/subscriptions?{V}")), 200)
        .await;
    s.call(
        "Subscriptions_List",
        get(format!("/subscriptions?{V}")).token(None),
        401,
    )
    .await;
    s.call(
        "Subscriptions_List",
        get(format!("/subscriptions?{V}")).token(Some(AGENT)),
        401,
    )
    .await;
    s.call("Subscriptions_List", get("/subscriptions"), 400).await;
    s.call("Subscriptions_List", get("/subscriptions?api-version=2023-02-29"), 400)
        .await;
    let locations = format!("/subscriptions/{SUB}/locations?{V}");
    s.call("Subscriptions_ListLocations", get(&locations), 200).await;
    s.call(
        "Subscriptions_ListLocations",
        get(format!("/subscriptions/{other_sub}/locations?{V}")),
        404,
    )
    .await;
    s.call(
        "Subscriptions_ListLocations",
        get(format!("/subscriptions/sub1/locations?{V}")),
        400,
    )
    .await;
    for namespace in ["Microsoft.Network", "microsoft.compute", "Microsoft.Storage"] {
        s.call(
            "Providers_Get",
            get(format!("/subscriptions/{SUB}/providers/{namespace}?{V}")),
            200,
        )
        .await;
    }
    s.call(
        "Providers_Get",
        get(format!("/subscriptions/{SUB}/providers/Contoso.Thing?{V}")),
        404,
    )
    .await;

    // Network watchers.
    let east = format!("{NW_EAST}?{V}");
    let put = |uri: &str, body: &Value| Call::new(Method::PUT, uri).json(body);
    s.call(
        "NetworkWatchers_CreateOrUpdate",
        put(&east, &json!({"location": "eastus"})),
        201,
    )
    .await;
    s.call(
        "NetworkWatchers_CreateOrUpdate",
        put(&east, &json!({"location": "East US", "tags": {"a": "b"}})),
        200,
    )
    .await;
    s.call(
        "NetworkWatchers_CreateOrUpdate",
        put(&east, &json!({"location": "westus"})),
        400,
    )
    .await;
    s.call(
        "NetworkWatchers_CreateOrUpdate",
        put(&east, &json!({"location": "eastus", "color": 1})),
        400,
    )
    .await;
    let second = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw2?{V}");
    s.call(
        "NetworkWatchers_CreateOrUpdate",
        put(&second, &json!({"location": "eastus"})),
        409,
    )
    .await;
    let text = Call::new(Method::PUT, &east)
        .header("content-type", "text/plain")
        .body(b"location=eastus".to_vec());
    s.call("NetworkWatchers_CreateOrUpdate", text, 415).await;
    let huge = json!({"location": "eastus", "tags": {"a": "x".repeat(MAX_BODY_BYTES)}});
    s.call("NetworkWatchers_CreateOrUpdate", put(&east, &huge), 413).await;
    let got = s.call("NetworkWatchers_Get", get(&east), 200).await;
    s.call("NetworkWatchers_CreateOrUpdate", put(&east, &got.json()), 200)
        .await;
    s.call("NetworkWatchers_Get", get(format!("{NW_WEST}?{V}")), 404).await;
    s.call(
        "NetworkWatchers_Get",
        get(format!(
            "/subscriptions/{SUB}/resourceGroups/rg./providers/Microsoft.Network/networkWatchers/nw1?{V}"
        )),
        400,
    )
    .await;
    let all = format!("/subscriptions/{SUB}/providers/Microsoft.Network/networkWatchers?{V}");
    s.call("NetworkWatchers_ListAll", get(&all), 200).await;

    // A capture's life: created (its watcher with it), shown, running,
    // stopped, deleted; its monitors on the way.
    let pc = format!("{NW_WEST}/packetCaptures/pc1");
    let pc_uri = format!("{pc}?{V}");
    let body = json!({"properties": {
        "target": VM1, "targetType": "AzureVM",
        "storageLocation": {"storageId": format!("/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/captures"), "filePath": "/var/captures/pc1.cap"},
        "filters": [{"protocol": "TCP", "localPort": "80"}, {"remoteIPAddress": "10.0.0.1-10.0.0.9"}],
        "timeLimitInSeconds": 60}});
    let created = s.call("PacketCaptures_Create", put(&pc_uri, &body), 201).await;
    let monitor = local(created.header("azure-asyncoperation").unwrap());
    s.call("PacketCaptures_Create", put(&pc_uri, &body), 409).await;
    let mut bad = body.clone();
    bad["properties"]["timeLimitInSeconds"] = json!(99_999);
    let pc2 = format!("{NW_WEST}/packetCaptures/pc2?{V}");
    s.call("PacketCaptures_Create", put(&pc2, &bad), 400).await;
    let continuous = json!({"properties": {
        "target": VM1, "continuousCapture": true,
        "storageLocation": {"localPath": "/var/captures/ring.cap"},
        "captureSettings": {"fileCount": 3, "fileSizeInBytes": 1000000}}});
    s.call("PacketCaptures_Create", put(&pc2, &continuous), 201).await;
    let missing_watcher = format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw9/packetCaptures/pc1?{V}"
    );
    s.call("PacketCaptures_Create", put(&missing_watcher, &body), 404).await;
    s.call("PacketCaptures_Get", get(&pc_uri), 200).await;
    s.call(
        "PacketCaptures_Get",
        get(format!("{NW_WEST}/packetCaptures/pc9?{V}")),
        404,
    )
    .await;
    s.call("PacketCaptures_List", get(format!("{NW_WEST}/packetCaptures?{V}")), 200)
        .await;
    let status = format!("{pc}/queryStatus?{V}");
    s.call("PacketCaptures_GetStatus", Call::new(Method::POST, &status), 200)
        .await;
    s.call("AzureAsyncOperations_Get", get(&monitor), 200).await;

    let id = created.json()["id"].as_str().unwrap().to_owned();
    let mut record = api.store.get_capture(&id).await.unwrap().unwrap();
    record.status = CaptureStatus::Running;
    record.started_ms = Some(now_ms());
    record.stats_json = json!({"packetsCaptured": 10, "bytesCaptured": 1000, "kernelDrops": 0,
        "fileSizeInBytes": 1184, "uploadState": "Pending"})
    .to_string();
    api.store.update_capture(&record).await.unwrap();
    let running = s
        .call("PacketCaptures_GetStatus", Call::new(Method::POST, &status), 200)
        .await;
    assert_eq!(running.json()["packetCaptureStatus"], "Running");
    // No agent is connected: the stop is done at once.
    s.call(
        "PacketCaptures_Stop",
        Call::new(Method::POST, format!("{pc}/stop?{V}")),
        200,
    )
    .await;
    let stopped = s
        .call("PacketCaptures_GetStatus", Call::new(Method::POST, &status), 200)
        .await;
    assert_eq!(stopped.json()["stopReason"], "ManualStop");
    s.call("AzureAsyncOperations_Get", get(&monitor), 200).await;

    // Monitors: in progress, done, failed, unknown.
    let operation = OperationRecord {
        id: "op-stop".into(),
        resource_id: id.clone(),
        kind: OperationKind::Stop,
        status: OperationStatus::InProgress,
        error_json: None,
        created_ms: now_ms(),
        updated_ms: now_ms(),
    };
    api.store.insert_operation(&operation).await.unwrap();
    let result = format!("{OPERATIONS}/operationResults/op-stop?{V}");
    let waiting = s.call("OperationResults_Get", get(&result), 202).await;
    // The monitor links to itself (the router's lower-cased spelling of the path).
    assert!(local(waiting.header("location").unwrap()).eq_ignore_ascii_case(&result));
    s.call(
        "AzureAsyncOperations_Get",
        get(format!("{OPERATIONS}/operations/op-stop?{V}")),
        200,
    )
    .await;
    api.store
        .finish_operation("op-stop", OperationStatus::Succeeded, None, now_ms())
        .await
        .unwrap();
    s.call("OperationResults_Get", get(&result), 200).await;
    let failed = OperationRecord {
        id: "op-failed".into(),
        kind: OperationKind::Create,
        ..operation
    };
    api.store.insert_operation(&failed).await.unwrap();
    let error = r#"{"error":{"code":"CaptureFailed","message":"no such interface"}}"#;
    api.store
        .finish_operation("op-failed", OperationStatus::Failed, Some(error), now_ms())
        .await
        .unwrap();
    s.call(
        "AzureAsyncOperations_Get",
        get(format!("{OPERATIONS}/operations/op-failed?{V}")),
        200,
    )
    .await;
    s.call(
        "OperationResults_Get",
        get(format!("{OPERATIONS}/operationResults/op-failed?{V}")),
        500,
    )
    .await;
    s.call(
        "AzureAsyncOperations_Get",
        get(format!("{OPERATIONS}/operations/op-none?{V}")),
        404,
    )
    .await;
    s.call(
        "OperationResults_Get",
        get(format!("{OPERATIONS}/operationResults/op-none?{V}")),
        404,
    )
    .await;
    let bad_location =
        format!("/subscriptions/{SUB}/providers/Microsoft.Network/locations/west-us/operations/op-stop?{V}");
    s.call("AzureAsyncOperations_Get", get(bad_location), 400).await;

    s.call("PacketCaptures_Delete", Call::new(Method::DELETE, &pc_uri), 204)
        .await;
    s.call("PacketCaptures_Delete", Call::new(Method::DELETE, &pc_uri), 204)
        .await;
    s.call(
        "PacketCaptures_Delete",
        Call::new(Method::DELETE, &missing_watcher),
        404,
    )
    .await;
    s.call("PacketCaptures_Get", get(&pc_uri), 404).await;

    // VMs and their agent extension.
    let vms = format!("/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines?{V}");
    s.call("VirtualMachines_ListAll", get(&vms), 200).await;
    let group_vms = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines");
    s.call("VirtualMachines_List", get(format!("{group_vms}?{V}")), 200)
        .await;
    s.call("VirtualMachines_Get", get(format!("{group_vms}/vm1?{V}")), 200)
        .await;
    s.call("VirtualMachines_Get", get(format!("{group_vms}/vm9?{V}")), 404)
        .await;
    s.call("VirtualMachines_Get", get(format!("{group_vms}/vm%201?{V}")), 400)
        .await;
    // Tags, the one thing of a VM a client changes (ARM's update).
    let vm_update = |vm: &str, body: Value| Call::new(Method::PATCH, format!("{group_vms}/{vm}?{V}")).json(&body);
    let tagged = s
        .call(
            "VirtualMachines_Update",
            vm_update("vm1", json!({"tags": {"role": "web"}})),
            200,
        )
        .await;
    assert_eq!(tagged.json()["tags"], json!({"role": "web"}));
    for bad in [
        json!({"tags": {"role": 1}}),
        json!({"tags": {"role": "web"}, "location": "eastus"}),
        json!({"tags": "role=web"}),
    ] {
        s.call("VirtualMachines_Update", vm_update("vm1", bad), 400).await;
    }
    s.call("VirtualMachines_Update", vm_update("vm9", json!({"tags": {}})), 404)
        .await;
    let text = Call::new(Method::PATCH, format!("{group_vms}/vm1?{V}"))
        .header("content-type", "text/plain")
        .body(b"role=web".to_vec());
    s.call("VirtualMachines_Update", text, 415).await;
    s.call(
        "VirtualMachineExtensions_List",
        get(format!("{group_vms}/vm1/extensions?{V}")),
        200,
    )
    .await;
    let extension = format!("{group_vms}/vm1/extensions/NetworkWatcherAgentLinux?{V}");
    s.call("VirtualMachineExtensions_Get", get(extension), 200).await;
    s.call(
        "VirtualMachineExtensions_Get",
        get(format!("{group_vms}/vm1/extensions/Other?{V}")),
        404,
    )
    .await;
    // `vm extension set`: the registered VM's extension, or an enrollment.
    let set = |vm: &str, name: &str, body: Value| {
        Call::new(Method::PUT, format!("{group_vms}/{vm}/extensions/{name}?{V}")).json(&body)
    };
    let agent = json!({"location": "westus", "properties": {
        "publisher": "Microsoft.Azure.NetworkWatcher", "type": "NetworkWatcherAgentLinux", "typeHandlerVersion": "1.4"}});
    s.call(
        "VirtualMachineExtensions_CreateOrUpdate",
        set("vm1", "NetworkWatcherAgentLinux", agent.clone()),
        200,
    )
    .await;
    let enrolled = s
        .call(
            "VirtualMachineExtensions_CreateOrUpdate",
            set("vm9", "NetworkWatcherAgentLinux", agent.clone()),
            201,
        )
        .await;
    let command = enrolled.json()["properties"]["netwatch"]["enrollment"]["command"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        command
            .starts_with("curl -fsS http://netwatch.test:8443/netwatch/v1/agent/install.sh | sh -s -- --enroll-token "),
        "{command}"
    );
    s.call(
        "VirtualMachineExtensions_CreateOrUpdate",
        set("vm9", "NetworkWatcherAgentWindows", agent),
        400,
    )
    .await;
    s.call(
        "VirtualMachineExtensions_CreateOrUpdate",
        set("vm9", "NetworkWatcherAgentLinux", json!({"location": "mars"})),
        400,
    )
    .await;

    // Scale sets: made by a PUT and by `vmss extension set`, hosts joined
    // with its key (the instance and VM rows the hub writes as a host joins),
    // a capture over them and its rolled-up status.
    let sets = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets");
    let set_uri = |name: &str| format!("{sets}/{name}?{V}");
    s.call(
        "VirtualMachineScaleSets_ListAll",
        get(format!(
            "/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachineScaleSets?{V}"
        )),
        200,
    )
    .await;
    let made = s
        .call(
            "VirtualMachineScaleSets_CreateOrUpdate",
            put(&set_uri("ss1"), &json!({"location": "westus", "tags": {"team": "net"}})),
            201,
        )
        .await;
    let ss1 = made.json()["id"].as_str().unwrap().to_owned();
    s.call(
        "VirtualMachineScaleSets_CreateOrUpdate",
        put(&set_uri("ss1"), &json!({"tags": {"team": "ops"}})),
        200,
    )
    .await;
    for bad in [
        json!({"location": "eastus"}),
        json!({"tags": {"team": 1}}),
        json!({"tags": "team"}),
    ] {
        s.call(
            "VirtualMachineScaleSets_CreateOrUpdate",
            put(&set_uri("ss1"), &bad),
            400,
        )
        .await;
    }
    s.call(
        "VirtualMachineScaleSets_CreateOrUpdate",
        put(&set_uri("ss3"), &json!({"tags": {}})),
        400,
    )
    .await;
    let text = Call::new(Method::PUT, set_uri("ss1"))
        .header("content-type", "text/plain")
        .body(b"location=westus".to_vec());
    s.call("VirtualMachineScaleSets_CreateOrUpdate", text, 415).await;
    s.call("VirtualMachineScaleSets_Get", get(set_uri("ss1")), 200).await;
    s.call("VirtualMachineScaleSets_Get", get(set_uri("ss9")), 404).await;
    s.call("VirtualMachineScaleSets_Get", get(set_uri("ss%201")), 400).await;
    s.call("VirtualMachineScaleSets_List", get(format!("{sets}?{V}")), 200)
        .await;
    let all_sets = s
        .call(
            "VirtualMachineScaleSets_ListAll",
            get(format!(
                "/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachineScaleSets?{V}"
            )),
            200,
        )
        .await;
    assert_eq!(all_sets.json()["value"][0]["tags"], json!({"team": "ops"}));
    let set_update = |set: &str, body: Value| Call::new(Method::PATCH, set_uri(set)).json(&body);
    let retagged = s
        .call(
            "VirtualMachineScaleSets_Update",
            set_update("ss1", json!({"tags": {"team": "ops", "tier": "db"}})),
            200,
        )
        .await;
    assert_eq!(retagged.json()["tags"]["tier"], "db");
    s.call(
        "VirtualMachineScaleSets_Update",
        set_update("ss1", json!({"location": "eastus"})),
        400,
    )
    .await;
    s.call(
        "VirtualMachineScaleSets_Update",
        set_update("ss9", json!({"tags": {}})),
        404,
    )
    .await;

    let set_extension = |set: &str, name: &str| format!("{sets}/{set}/extensions/{name}?{V}");
    let agent_key = |settings: Value| {
        json!({"properties": {"publisher": "Microsoft.Azure.NetworkWatcher", "type": "NetworkWatcherAgentLinux",
            "typeHandlerVersion": "1.4", "settings": settings}})
    };
    let keyed = s
        .call(
            "VirtualMachineScaleSetExtensions_CreateOrUpdate",
            put(
                &set_extension("ss1", "NetworkWatcherAgentLinux"),
                &agent_key(json!({"keyMaxUses": 3})),
            ),
            200,
        )
        .await;
    let key = keyed.json()["properties"]["netwatch"]["enrollment"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // A scale set netwatch has not seen: made with the first location served.
    let second = s
        .call(
            "VirtualMachineScaleSetExtensions_CreateOrUpdate",
            put(
                &set_extension("ss2", "NetworkWatcherAgentLinux"),
                &agent_key(Value::Null),
            ),
            201,
        )
        .await;
    assert_eq!(
        second.json()["properties"]["netwatch"]["enrollment"]["maxUses"],
        Value::Null
    );
    for (name, settings) in [
        ("CustomScript", Value::Null),
        ("NetworkWatcherAgentLinux", json!({"keyMaxUses": 0})),
        ("NetworkWatcherAgentLinux", json!({"keyExpiresInSeconds": 2_592_001})),
    ] {
        s.call(
            "VirtualMachineScaleSetExtensions_CreateOrUpdate",
            put(&set_extension("ss1", name), &agent_key(settings)),
            400,
        )
        .await;
    }
    // Each host's VM row as the hub writes it: vm1's, with the instance's id, facts and no tags.
    let registered = api.store.get_vm(VM1).await.unwrap().unwrap();
    for (host, name) in [("host-a", "web-a"), ("host-b", "web-b"), ("host-c", "web-c")] {
        let joined = api
            .store
            .join_scale_set(&ss1, host, &digest(&key), now_ms())
            .await
            .unwrap()
            .expect("the key admits three hosts");
        let facts = json!({"hostname": name, "agentVersion": "0.1.0", "connectedMs": 5, "captureInterface": "eth0",
            "interfaces": [{"name": "eth0", "addresses": ["10.0.1.4/24"]}]});
        let vm = VmRecord {
            id: format!("{ss1}/virtualMachines/{}", joined.instance),
            agent_json: facts.to_string(),
            last_seen_ms: Some(now_ms()),
            created_ms: now_ms(),
            tags_json: "{}".to_owned(),
            ..registered.clone()
        };
        api.store.upsert_vm(&vm).await.unwrap();
    }
    let instances = format!("{sets}/ss1/virtualMachines");
    let listed = s
        .call("VirtualMachineScaleSetVMs_List", get(format!("{instances}?{V}")), 200)
        .await;
    assert_eq!(listed.json()["value"].as_array().unwrap().len(), 3);
    s.call(
        "VirtualMachineScaleSetVMs_List",
        get(format!("{sets}/ss9/virtualMachines?{V}")),
        404,
    )
    .await;
    let instance = s
        .call("VirtualMachineScaleSetVMs_Get", get(format!("{instances}/0?{V}")), 200)
        .await;
    assert_eq!(instance.json()["name"], "ss1_0");
    s.call("VirtualMachineScaleSetVMs_Get", get(format!("{instances}/7?{V}")), 404)
        .await;
    s.call("VirtualMachineScaleSetVMs_Get", get(format!("{instances}/x?{V}")), 400)
        .await;
    s.call(
        "VirtualMachineScaleSetExtensions_List",
        get(format!("{sets}/ss1/extensions?{V}")),
        200,
    )
    .await;
    let extension = s
        .call(
            "VirtualMachineScaleSetExtensions_Get",
            get(set_extension("ss1", "NetworkWatcherAgentLinux")),
            200,
        )
        .await;
    assert_eq!(extension.json()["properties"]["netwatch"]["instances"], 3);
    assert_eq!(extension.json()["properties"]["netwatch"]["keys"][0]["uses"], 3);
    s.call(
        "VirtualMachineScaleSetExtensions_Get",
        get(set_extension("ss1", "CustomScript")),
        404,
    )
    .await;
    s.call(
        "VirtualMachineScaleSetExtensions_Get",
        get(set_extension("ss9", "NetworkWatcherAgentLinux")),
        404,
    )
    .await;

    // A capture over two of the three hosts: one runs, the other failed.
    let captures =
        format!("/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/captures");
    let fleet = json!({"properties": {
        "target": ss1, "targetType": "AzureVMSS", "scope": {"include": ["0", "1"]},
        "storageLocation": {"storageId": captures}, "timeLimitInSeconds": 60}});
    let pcss = format!("{NW_WEST}/packetCaptures/pcss");
    let created = s
        .call("PacketCaptures_Create", put(&format!("{pcss}?{V}"), &fleet), 201)
        .await;
    let mut unknown = fleet.clone();
    unknown["properties"]["scope"] = json!({"include": ["0", "7"]});
    s.call(
        "PacketCaptures_Create",
        put(&format!("{NW_WEST}/packetCaptures/pcss2?{V}"), &unknown),
        400,
    )
    .await;
    s.call("PacketCaptures_Get", get(format!("{pcss}?{V}")), 200).await;
    let status = format!("{pcss}/queryStatus?{V}");
    let waiting = s
        .call("PacketCaptures_GetStatus", Call::new(Method::POST, &status), 200)
        .await;
    assert_eq!(waiting.json()["netwatch"]["summary"]["notStarted"], 2);
    let parent = created.json()["id"].as_str().unwrap().to_owned();
    let mut parts = api.store.capture_parts(&parent).await.unwrap();
    parts.sort_by(|a, b| a.instance.cmp(&b.instance));
    let [running, failed] = &mut parts[..] else {
        panic!("two parts: {parts:?}");
    };
    running.status = CaptureStatus::Running;
    running.started_ms = Some(now_ms());
    running.stats_json = json!({"packetsCaptured": 10, "bytesCaptured": 1000, "kernelDrops": 0,
        "fileSizeInBytes": 1184, "uploadState": "Pending", "uploadPercent": 0})
    .to_string();
    failed.status = CaptureStatus::Error;
    failed.stop_reason = Some("AgentLost".to_owned());
    failed.errors_json = r#"["AgentStopped"]"#.to_owned();
    failed.stats_json = json!({"packetsCaptured": 0, "bytesCaptured": 0, "kernelDrops": 0, "fileSizeInBytes": 0,
        "errorMessage": "the agent was not heard from for 600 s"})
    .to_string();
    api.store.update_capture(running).await.unwrap();
    api.store.update_capture(failed).await.unwrap();
    let rolled = s
        .call("PacketCaptures_GetStatus", Call::new(Method::POST, &status), 200)
        .await
        .json();
    assert_eq!(rolled["packetCaptureStatus"], "Running", "{rolled}");
    let summary = &rolled["netwatch"]["summary"];
    assert_eq!(
        (&summary["running"], &summary["failed"]),
        (&json!(1), &json!(1)),
        "{rolled}"
    );
    assert_eq!(rolled["netwatch"]["instances"][0]["host"], "web-a", "{rolled}");
    assert_eq!(
        rolled["netwatch"]["instances"][1]["packetCaptureError"],
        json!(["AgentStopped"])
    );
    // No host has stored a file yet; a VM's capture is not over many hosts.
    let merged = |capture: &str| get(format!("{NW_WEST}/packetCaptures/{capture}/merged?{V}"));
    s.call("PacketCaptures_GetMerged", merged("pcss"), 409).await;
    s.call("PacketCaptures_GetMerged", merged("pc2"), 409).await;
    s.call("PacketCaptures_GetMerged", merged("pc9"), 404).await;
    let live = |capture: &str| get(format!("{NW_WEST}/packetCaptures/{capture}/live?{V}"));
    s.call("PacketCaptures_Live", live("pc9"), 404).await;
    s.call("PacketCaptures_Live", live("pc9").token(None), 401).await;

    // Hosts chosen by tag and by id (`properties.netwatch.targets`), in
    // place of a target.
    let by_tag = json!({"properties": {
        "netwatch": {"targets": {"tags": {"role": "web"}}},
        "storageLocation": {"storageId": captures}, "timeLimitInSeconds": 60}});
    let pcsel = format!("{NW_WEST}/packetCaptures/pcsel");
    let chosen = s
        .call("PacketCaptures_Create", put(&format!("{pcsel}?{V}"), &by_tag), 201)
        .await;
    assert_eq!(
        chosen.json()["properties"]["netwatch"]["targets"],
        json!({"tags": {"role": "web"}})
    );
    s.call("PacketCaptures_Get", get(format!("{pcsel}?{V}")), 200).await;
    let selected = s
        .call(
            "PacketCaptures_GetStatus",
            Call::new(Method::POST, format!("{pcsel}/queryStatus?{V}")),
            200,
        )
        .await;
    let instances_chosen = &selected.json()["netwatch"]["instances"];
    assert_eq!(instances_chosen.as_array().map(Vec::len), Some(1), "{instances_chosen}");
    assert_eq!(instances_chosen[0]["instanceId"], "vm1", "{instances_chosen}");
    let by_id = json!({"properties": {
        "netwatch": {"targets": {"vms": [VM1, format!("{ss1}/virtualMachines/0")]}},
        "storageLocation": {"filePath": "/var/captures/pcids.cap"}}});
    s.call(
        "PacketCaptures_Create",
        put(&format!("{NW_WEST}/packetCaptures/pcids?{V}"), &by_id),
        201,
    )
    .await;
    let mut both = by_id.clone();
    both["properties"]["target"] = json!(VM1);
    s.call(
        "PacketCaptures_Create",
        put(&format!("{NW_WEST}/packetCaptures/pcbad?{V}"), &both),
        400,
    )
    .await;

    // An instance removed: it is no longer listed.
    let delete = |set: &str, body: &Value| Call::new(Method::POST, format!("{sets}/{set}/delete?{V}")).json(body);
    for bad in [
        json!({"instanceIds": []}),
        json!({"instanceIds": ["9"]}),
        json!({"instanceIds": ["x"]}),
        json!({"instanceIds": ["2"], "force": true}),
    ] {
        s.call("VirtualMachineScaleSets_DeleteInstances", delete("ss1", &bad), 400)
            .await;
    }
    s.call(
        "VirtualMachineScaleSets_DeleteInstances",
        delete("ss9", &json!({"instanceIds": ["2"]})),
        404,
    )
    .await;
    let text = Call::new(Method::POST, format!("{sets}/ss1/delete?{V}"))
        .header("content-type", "text/plain")
        .body(b"2".to_vec());
    s.call("VirtualMachineScaleSets_DeleteInstances", text, 415).await;
    s.call(
        "VirtualMachineScaleSets_DeleteInstances",
        delete("ss1", &json!({"instanceIds": ["2"]})),
        200,
    )
    .await;
    s.call("VirtualMachineScaleSetVMs_Get", get(format!("{instances}/2?{V}")), 404)
        .await;

    // Storage accounts.
    s.call(
        "StorageAccounts_List",
        get(format!(
            "/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts?{V}"
        )),
        200,
    )
    .await;
    let accounts = format!("/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts");
    s.call(
        "StorageAccounts_ListByResourceGroup",
        get(format!("{accounts}?{V}")),
        200,
    )
    .await;
    s.call(
        "StorageAccounts_GetProperties",
        get(format!("{accounts}/captures?{V}")),
        200,
    )
    .await;
    s.call(
        "StorageAccounts_GetProperties",
        get(format!("{accounts}/archive?{V}")),
        404,
    )
    .await;
    let made = format!("{accounts}/made1?{V}");
    let account =
        json!({"location": "westus", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2", "tags": {"a": "b"}});
    s.call(
        "StorageAccounts_Create",
        Call::new(Method::PUT, &made).json(&account),
        200,
    )
    .await;
    let premium = json!({"sku": {"name": "Premium_LRS"}});
    s.call(
        "StorageAccounts_Create",
        Call::new(Method::PUT, &made).json(&premium),
        400,
    )
    .await;
    let configured = format!("{accounts}/captures?{V}");
    s.call(
        "StorageAccounts_Create",
        Call::new(Method::PUT, &configured).json(&account),
        409,
    )
    .await;
    let text = Call::new(Method::PUT, &made)
        .header("content-type", "text/plain")
        .body(b"{}".to_vec());
    s.call("StorageAccounts_Create", text, 415).await;
    s.call("StorageAccounts_Delete", Call::new(Method::DELETE, &made), 200)
        .await;
    s.call("StorageAccounts_Delete", Call::new(Method::DELETE, &made), 204)
        .await;
    s.call("StorageAccounts_Delete", Call::new(Method::DELETE, &configured), 409)
        .await;
    let check = format!("/subscriptions/{SUB}/providers/Microsoft.Storage/checkNameAvailability?{V}");
    for (name, available) in [("captures", false), ("free1", true), ("Bad_Name", false)] {
        let answer = s
            .call(
                "StorageAccounts_CheckNameAvailability",
                Call::new(Method::POST, &check)
                    .json(&json!({"name": name, "type": "Microsoft.Storage/storageAccounts"})),
                200,
            )
            .await;
        assert_eq!(answer.json()["nameAvailable"], available, "{name}");
    }
    s.call(
        "StorageAccounts_CheckNameAvailability",
        Call::new(Method::POST, &check).json(&json!({"type": "Microsoft.Storage/storageAccounts"})),
        400,
    )
    .await;

    // Files: an agent's upload of a capture's file (grants, a part, the
    // commit), then downloads whole, in a range, past the end.
    let pc3 = format!("{NW_WEST}/packetCaptures/pc3");
    let created = s
        .call("PacketCaptures_Create", put(&format!("{pc3}?{V}"), &body), 201)
        .await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let record = api.store.get_capture(&id).await.unwrap().unwrap();
    let run = run_id(&record.id, record.created_ms);
    let host_only = format!("{NW_WEST}/packetCaptures/pc2");
    let host_only = api.store.get_capture(&host_only).await.unwrap().unwrap();
    let host_only = run_id(&host_only.id, host_only.created_ms);
    let data: Vec<u8> = (0..=255_u8).cycle().take(1000).collect();
    let sha256 = sha256_hex(&data);
    // The own credential of vm9's agent, which may upload only vm9's files.
    let enrollment = EnrollmentRecord {
        digest: digest("enrollment-of-vm9"),
        vm_id: VM9.to_owned(),
        location: "westus".to_owned(),
        created_ms: now_ms(),
        expires_ms: now_ms() + 60_000,
        used_ms: None,
    };
    api.store.insert_enrollment(&enrollment).await.unwrap();
    let credential = AgentCredentialRecord {
        digest: digest(VM9_AGENT),
        vm_id: VM9.to_owned(),
        created_ms: now_ms(),
        revoked_ms: None,
    };
    assert!(
        api.store
            .redeem_enrollment(&enrollment.digest, &credential, now_ms())
            .await
            .unwrap()
    );
    // The same controller with `captures` in a file instead of a directory,
    // and with no storage account at all.
    let file = api.dir.path().join("not-a-directory");
    std::fs::write(&file, b"").unwrap();
    let in_a_file = AccountConfig::new("captures", AccountKind::Local { path: file }).unwrap();
    let broken = api.restarted(Accounts::new(vec![in_a_file]));
    let without = api.restarted(Accounts::default());

    let agent_post = |uri: &str, body: &Value| Call::new(Method::POST, uri).token(Some(AGENT)).json(body);
    let request = json!({"captureId": run, "seq": 0, "size": data.len(), "sha256": sha256});
    let grant = s.call("Uploads_Grant", agent_post(UPLOADS, &request), 200).await.json();
    let upload_id = grant["uploadId"].as_str().unwrap().to_owned();
    let url = grant["parts"][0]["url"].as_str().unwrap().to_owned();
    s.call("Uploads_Grant", agent_post(UPLOADS, &request).token(None), 401)
        .await;
    s.call("Uploads_Grant", agent_post(UPLOADS, &json!({"seq": 0})), 400)
        .await;
    let mut beyond = request.clone();
    beyond["parts"] = json!([2]);
    s.call("Uploads_Grant", agent_post(UPLOADS, &beyond), 400).await;
    s.call(
        "Uploads_Grant",
        agent_post(UPLOADS, &request).token(Some(VM9_AGENT)),
        403,
    )
    .await;
    let mut gone = request.clone();
    gone["captureId"] = json!(run_id(&record.id, record.created_ms + 1));
    s.call("Uploads_Grant", agent_post(UPLOADS, &gone), 404).await;
    let mut on_host = request.clone();
    on_host["captureId"] = json!(host_only);
    s.call("Uploads_Grant", agent_post(UPLOADS, &on_host), 409).await;
    let mut huge = request.clone();
    huge["uploadId"] = json!("x".repeat(MAX_BODY_BYTES));
    s.call("Uploads_Grant", agent_post(UPLOADS, &huge), 413).await;
    let text = Call::new(Method::POST, UPLOADS)
        .token(Some(AGENT))
        .header("content-type", "text/plain")
        .body(b"seq=0".to_vec());
    s.call("Uploads_Grant", text, 415).await;
    s.call_on(&broken, "Uploads_Grant", agent_post(UPLOADS, &request), 422)
        .await;

    let part = |url: &str| Call::new(Method::PUT, url).token(Some(AGENT)).body(data.clone());
    let stored = s.call("Files_Upload", part(&url), 200).await;
    let receipt = stored.header("etag").unwrap().to_owned();
    let (path, query) = url.split_once('?').unwrap();
    s.call("Files_Upload", part(path), 400).await;
    s.call(
        "Files_Upload",
        part(&format!("/netwatch/v1/agent/files/captures/a/../b.cap?{query}")),
        400,
    )
    .await;
    s.call("Files_Upload", part(&url).header("content-md5", "AAAA"), 400)
        .await;
    s.call("Files_Upload", part(&url).token(None), 401).await;
    let forged = url.replacen("&part=1&", "&part=2&", 1);
    s.call("Files_Upload", part(&forged), 403).await;
    s.call_on(&without, "Files_Upload", part(&url), 404).await;
    let mut no_length = part(&url);
    no_length.content_length = false;
    s.call("Files_Upload", no_length, 411).await;
    let mut short = part(&url).header("content-length", "1001");
    short.content_length = false;
    s.call("Files_Upload", short, 422).await;
    let zeros = base64::engine::general_purpose::STANDARD.encode([0_u8; 16]);
    s.call("Files_Upload", part(&url).header("content-md5", &zeros), 400)
        .await;

    let commit = json!({"captureId": run, "seq": 0, "uploadId": upload_id, "size": data.len(), "sha256": sha256,
        "parts": [{"part": 1, "id": receipt}]});
    let mut unhashed = commit.clone();
    unhashed["sha256"] = json!("not a hash");
    s.call("Uploads_Complete", agent_post(UPLOADS_COMPLETE, &unhashed), 400)
        .await;
    s.call(
        "Uploads_Complete",
        agent_post(UPLOADS_COMPLETE, &commit).token(None),
        401,
    )
    .await;
    s.call(
        "Uploads_Complete",
        agent_post(UPLOADS_COMPLETE, &commit).token(Some(VM9_AGENT)),
        403,
    )
    .await;
    let mut unknown = commit.clone();
    unknown["uploadId"] = json!("0123456789abcdef01234567");
    s.call("Uploads_Complete", agent_post(UPLOADS_COMPLETE, &unknown), 404)
        .await;
    let mut gone = commit.clone();
    gone["captureId"] = json!(run_id(&record.id, record.created_ms + 1));
    s.call("Uploads_Complete", agent_post(UPLOADS_COMPLETE, &gone), 404)
        .await;
    let mut on_host = commit.clone();
    on_host["captureId"] = json!(host_only);
    s.call("Uploads_Complete", agent_post(UPLOADS_COMPLETE, &on_host), 409)
        .await;
    let mut huge = commit.clone();
    huge["uploadId"] = json!("x".repeat(MAX_BODY_BYTES));
    s.call("Uploads_Complete", agent_post(UPLOADS_COMPLETE, &huge), 413)
        .await;
    let text = Call::new(Method::POST, UPLOADS_COMPLETE)
        .token(Some(AGENT))
        .header("content-type", "text/plain")
        .body(b"seq=0".to_vec());
    s.call("Uploads_Complete", text, 415).await;
    let mut longer = commit.clone();
    longer["size"] = json!(data.len() + 1);
    s.call("Uploads_Complete", agent_post(UPLOADS_COMPLETE, &longer), 422)
        .await;
    let done = s
        .call("Uploads_Complete", agent_post(UPLOADS_COMPLETE, &commit), 200)
        .await
        .json();
    // A committed upload takes no more parts; the capture's status lists the file.
    s.call("Files_Upload", part(&url), 404).await;
    let status = format!("{pc3}/queryStatus?{V}");
    let status = s
        .call("PacketCaptures_GetStatus", Call::new(Method::POST, &status), 200)
        .await;
    assert_eq!(status.json()["netwatch"]["files"][0]["sha256"], sha256.as_str());

    let file = local(done["storagePath"].as_str().unwrap());
    for method in [Method::GET, Method::HEAD] {
        let (download, properties) = ("Files_Download", "Files_GetProperties");
        let id = if method == Method::GET { download } else { properties };
        let whole = s.call(id, Call::new(method.clone(), &file), 200).await;
        assert_eq!(whole.header("content-length"), Some("1000"));
        let part = Call::new(method.clone(), &file).header("range", "bytes=10-19");
        let part = s.call(id, part, 206).await;
        assert_eq!(part.header("content-range"), Some("bytes 10-19/1000"));
        let past = Call::new(method.clone(), &file).header("range", "bytes=1000-");
        s.call(id, past, 416).await;
        let all = Call::new(method.clone(), &file).header("range", "bytes=0-1,5-6");
        s.call(id, all, 200).await;
        s.call(id, Call::new(method.clone(), format!("{file}x")), 404).await;
        s.call(
            id,
            Call::new(method.clone(), "/netwatch/v1/storage/captures/a/../b.cap"),
            400,
        )
        .await;
        s.call(id, Call::new(method.clone(), &file).token(Some(AGENT)), 401)
            .await;
    }

    // The capture over the scale set: each host uploads its file, then the
    // files download merged into one.
    let mut parts = api.store.capture_parts(&parent).await.unwrap();
    parts.sort_by(|a, b| a.instance.cmp(&b.instance));
    for (index, part) in parts.iter().enumerate() {
        let file = pcap_file(1_700_000_000 + u32::try_from(index).unwrap());
        let run = run_id(&part.id, part.created_ms);
        let request = json!({"captureId": run, "seq": 0, "size": file.len(), "sha256": sha256_hex(&file)});
        let grant = s.call("Uploads_Grant", agent_post(UPLOADS, &request), 200).await.json();
        let url = grant["parts"][0]["url"].as_str().unwrap().to_owned();
        let stored = Call::new(Method::PUT, &url).token(Some(AGENT)).body(file.clone());
        let receipt = s
            .call("Files_Upload", stored, 200)
            .await
            .header("etag")
            .unwrap()
            .to_owned();
        let commit = json!({"captureId": run, "seq": 0, "uploadId": grant["uploadId"], "size": file.len(),
            "sha256": sha256_hex(&file), "parts": [{"part": 1, "id": receipt}]});
        s.call("Uploads_Complete", agent_post(UPLOADS_COMPLETE, &commit), 200)
            .await;
    }
    let whole = s.call("PacketCaptures_GetMerged", merged("pcss"), 200).await;
    // A pcapng section header block comes first.
    assert_eq!(whole.bytes.get(..4), Some(&[0x0a, 0x0d, 0x0d, 0x0a][..]));
    s.call("PacketCaptures_GetMerged", merged("pcss").token(None), 401)
        .await;

    // The agent channel (oneshot connections cannot be upgraded) and this document.
    let channel = || {
        get("/netwatch/v1/agent/channel")
            .token(Some(AGENT))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    };
    s.call("Agents_Channel", channel(), 426).await;
    s.call("Agents_Channel", channel().token(None), 401).await;
    let live_post = || {
        Call::new(
            Method::POST,
            "/netwatch/v1/agent/live/0190a1b2-0000-7000-8000-000000000000",
        )
        .token(Some(AGENT))
        .header("content-type", "application/octet-stream")
        .body(Vec::new())
    };
    s.call("Agents_Live", live_post(), 410).await;
    s.call("Agents_Live", live_post().token(None), 401).await;
    s.call("OpenApi_Get", get(OPENAPI_PATH).token(None), 200).await;

    s.call("Health_Get", get("/netwatch/v1/health").token(None), 200).await;
    let metrics = s.call("Metrics_Get", get("/metrics"), 200).await;
    assert!(
        metrics.text().contains("netwatch_agents_connected 0"),
        "{}",
        metrics.text()
    );
    // The agent installer and builds, public. In-process, the controller has
    // no binary of its own to serve: the list is empty, a build is a 404.
    let installer = s
        .call(
            "Agents_Installer",
            get("/netwatch/v1/agent/install.sh").token(None),
            200,
        )
        .await;
    assert!(installer.text().starts_with("#!/bin/sh\n"), "{}", installer.text());
    let builds = s
        .call("Agents_ListBuilds", get("/netwatch/v1/agent/builds").token(None), 200)
        .await;
    assert_eq!(builds.json(), json!([]));
    let missing = s
        .call(
            "Agents_DownloadBuild",
            get("/netwatch/v1/agent/builds/x86_64/0.1.0").token(None),
            404,
        )
        .await;
    assert!(
        missing.text().contains("no agent build for x86_64"),
        "{}",
        missing.text()
    );

    // Logins of Azure's own clients.
    let tenant = SUB;
    let oidc = format!("/{tenant}/v2.0/.well-known/openid-configuration");
    s.call("Login_OpenIdConfiguration", get(&oidc).token(None), 200).await;
    s.call(
        "Login_OpenIdConfiguration",
        get(format!("/{other_sub}/v2.0/.well-known/openid-configuration")).token(None),
        400,
    )
    .await;
    s.call(
        "Login_Keys",
        get(format!("/{tenant}/discovery/v2.0/keys")).token(None),
        200,
    )
    .await;
    let token = |form: String| {
        Call::new(Method::POST, format!("/{tenant}/oauth2/v2.0/token"))
            .token(None)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.into_bytes())
    };
    s.call(
        "Login_Token",
        token(format!("grant_type=client_credentials&client_secret={ADMIN}")),
        200,
    )
    .await;
    s.call(
        "Login_Token",
        token(format!("grant_type=client_credentials&client_secret={AGENT}")),
        401,
    )
    .await;
    s.call("Login_Token", token("grant_type=password".to_owned()), 400)
        .await;
    let msi = |secret: Option<&str>| {
        let call = get("/msi/token?api-version=2019-08-01&resource=https://management.core.windows.net/").token(None);
        match secret {
            Some(secret) => call.header("x-identity-header", secret),
            None => call,
        }
    };
    s.call("Login_ManagedIdentityToken", msi(Some(ADMIN)), 200).await;
    s.call("Login_ManagedIdentityToken", msi(Some("nope")), 401).await;
    s.call("Login_ManagedIdentityToken", msi(None), 400).await;

    // Captures triggered by alerts: flight recorders on vm1 and on the scale
    // set, with what vm1's agent said of its window; triggers; alerts
    // delivered to a trigger's webhook (by its URL and with its secret as the
    // bearer token) that start nothing; a capture around an alert asked for
    // by hand.
    let recorders = format!("{NW_WEST}/netwatchFlightRecorders");
    let recorder = |name: &str| format!("{recorders}/{name}?{V}");
    let on_vm1 = json!({"properties": {"target": VM1, "seconds": 120,
        "filters": [{"protocol": "TCP", "localPort": "443"}]}});
    let made = s
        .call(
            "NetwatchFlightRecorders_CreateOrUpdate",
            put(&recorder("rec1"), &on_vm1),
            201,
        )
        .await
        .json();
    let rec1 = made["id"].as_str().unwrap().to_owned();
    assert_eq!(made["properties"]["hosts"][0]["vmId"], VM1, "{made}");
    // A GET body can be PUT back.
    s.call(
        "NetwatchFlightRecorders_CreateOrUpdate",
        put(&recorder("rec1"), &made),
        200,
    )
    .await;
    let on_set = json!({"properties": {"target": ss1, "maxBytes": 1_048_576}});
    s.call(
        "NetwatchFlightRecorders_CreateOrUpdate",
        put(&recorder("rec2"), &on_set),
        201,
    )
    .await;
    let ghost = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/ghost");
    for bad in [
        json!({"properties": {"target": ghost}}),
        json!({"properties": {"target": VM1, "seconds": 0}}),
        json!({"properties": {"target": VM1, "secs": 5}}),
        json!({"properties": {}}),
    ] {
        s.call(
            "NetwatchFlightRecorders_CreateOrUpdate",
            put(&recorder("rec3"), &bad),
            400,
        )
        .await;
    }
    // vm1 is in westus, not in the eastus watcher's location.
    s.call(
        "NetwatchFlightRecorders_CreateOrUpdate",
        put(&format!("{NW_EAST}/netwatchFlightRecorders/rec1?{V}"), &on_vm1),
        400,
    )
    .await;
    let nw9 = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw9");
    s.call(
        "NetwatchFlightRecorders_CreateOrUpdate",
        put(&format!("{nw9}/netwatchFlightRecorders/rec1?{V}"), &on_vm1),
        404,
    )
    .await;
    let text = Call::new(Method::PUT, recorder("rec1"))
        .header("content-type", "text/plain")
        .body(b"seconds=60".to_vec());
    s.call("NetwatchFlightRecorders_CreateOrUpdate", text, 415).await;
    let said = RecorderStatus {
        id: Some(rec1.clone()),
        running: true,
        oldest_ms: Some(now_ms() - 90_000),
        bytes: 1_048_576,
        files: 2,
        packets: 900,
        kernel_drops: 0,
        error: None,
    };
    api.store
        .put_recorder_status(VM1, &serde_json::to_string(&said).unwrap(), now_ms())
        .await
        .unwrap();
    let shown = s
        .call("NetwatchFlightRecorders_Get", get(recorder("rec1")), 200)
        .await
        .json();
    let host = &shown["properties"]["hosts"][0];
    assert_eq!(host["state"], "Disconnected", "{shown}");
    assert!(host["windowSeconds"].as_f64().unwrap() >= 90.0, "{shown}");
    s.call("NetwatchFlightRecorders_Get", get(recorder("rec9")), 404).await;
    s.call("NetwatchFlightRecorders_Get", get(recorder("rec%201")), 400)
        .await;
    let listed = s
        .call("NetwatchFlightRecorders_List", get(format!("{recorders}?{V}")), 200)
        .await
        .json();
    assert_eq!(listed["value"].as_array().map(Vec::len), Some(2), "{listed}");
    s.call(
        "NetwatchFlightRecorders_List",
        get(format!("{nw9}/netwatchFlightRecorders?{V}")),
        404,
    )
    .await;
    s.call(
        "NetwatchFlightRecorders_Delete",
        Call::new(Method::DELETE, recorder("rec2")),
        200,
    )
    .await;
    s.call(
        "NetwatchFlightRecorders_Delete",
        Call::new(Method::DELETE, recorder("rec2")),
        204,
    )
    .await;
    s.call(
        "NetwatchFlightRecorders_Delete",
        Call::new(Method::DELETE, format!("{nw9}/netwatchFlightRecorders/rec1?{V}")),
        404,
    )
    .await;

    let triggers = format!("{NW_WEST}/netwatchTriggers");
    let trigger = |name: &str| format!("{triggers}/{name}?{V}");
    let on_drops = json!({"properties": {
        "source": "Alertmanager", "match": {"alertRules": ["HighDrops"]},
        "capture": {"secondsBefore": 30, "secondsAfter": 30}, "storageLocation": {"storageId": captures}}});
    let made = s
        .call("NetwatchTriggers_CreateOrUpdate", put(&trigger("t1"), &on_drops), 201)
        .await
        .json();
    let webhook = local(made["properties"]["webhookUrl"].as_str().unwrap());
    let secret = webhook.rsplit('/').next().unwrap().to_owned();
    let shown = s.call("NetwatchTriggers_Get", get(trigger("t1")), 200).await.json();
    assert!(
        !shown["properties"]["webhookUrl"].as_str().unwrap().contains(&secret),
        "{shown}"
    );
    // A GET body can be PUT back; the secret stays and is not shown.
    let replaced = s
        .call("NetwatchTriggers_CreateOrUpdate", put(&trigger("t1"), &shown), 200)
        .await
        .json();
    assert!(
        !replaced["properties"]["webhookUrl"].as_str().unwrap().contains(&secret),
        "{replaced}"
    );
    let own = "s".repeat(40);
    let mut with_secret = on_drops.clone();
    with_secret["properties"]["webhookSecret"] = json!(own);
    let second = s
        .call(
            "NetwatchTriggers_CreateOrUpdate",
            put(&trigger("t2"), &with_secret),
            201,
        )
        .await
        .json();
    assert!(
        second["properties"]["webhookUrl"].as_str().unwrap().ends_with(&own),
        "{second}"
    );
    let mut unconfigured = on_drops.clone();
    unconfigured["properties"]["storageLocation"]["storageId"] = json!(format!(
        "/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/archive"
    ));
    let mut too_cool = on_drops.clone();
    too_cool["properties"]["cooldownSeconds"] = json!(86_401);
    let mut no_storage = on_drops.clone();
    no_storage["properties"]
        .as_object_mut()
        .unwrap()
        .remove("storageLocation");
    // with_secret: the secret is t2's.
    for bad in [unconfigured, too_cool, no_storage, with_secret] {
        s.call("NetwatchTriggers_CreateOrUpdate", put(&trigger("t3"), &bad), 400)
            .await;
    }
    s.call(
        "NetwatchTriggers_CreateOrUpdate",
        put(&format!("{nw9}/netwatchTriggers/t1?{V}"), &on_drops),
        404,
    )
    .await;
    let text = Call::new(Method::PUT, trigger("t3"))
        .header("content-type", "text/plain")
        .body(b"source=Any".to_vec());
    s.call("NetwatchTriggers_CreateOrUpdate", text, 415).await;
    s.call("NetwatchTriggers_Delete", Call::new(Method::DELETE, trigger("t2")), 200)
        .await;
    s.call("NetwatchTriggers_Delete", Call::new(Method::DELETE, trigger("t2")), 204)
        .await;
    s.call(
        "NetwatchTriggers_Delete",
        Call::new(Method::DELETE, format!("{nw9}/netwatchTriggers/t1?{V}")),
        404,
    )
    .await;
    s.call("NetwatchTriggers_Get", get(trigger("t2")), 404).await;
    let listed = s
        .call("NetwatchTriggers_List", get(format!("{triggers}?{V}")), 200)
        .await
        .json();
    assert_eq!(listed["value"].as_array().map(Vec::len), Some(1), "{listed}");
    s.call("NetwatchTriggers_List", get(format!("{nw9}/netwatchTriggers?{V}")), 404)
        .await;

    // Alertmanager's delivery of two alerts: one of a rule the trigger does
    // not take, one it takes about a host netwatch does not know.
    let firing = |rule: &str, instance: &str, fingerprint: &str| {
        json!({"status": "firing", "labels": {"alertname": rule, "instance": instance, "severity": "critical"},
            "annotations": {}, "startsAt": "2026-12-06T20:00:01.5Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": fingerprint})
    };
    let delivery = json!({"version": "4", "groupKey": "{}", "truncatedAlerts": 0, "status": "firing",
        "receiver": "netwatch", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [firing("DiskFull", "10.0.0.4:9100", "0a1b2c3d4e5f6071"),
            firing("HighDrops", "10.9.9.9:9100", "a1b2c3d4e5f60718")]});
    let alerts = "/netwatch/v1/alerts";
    let taken = s
        .call(
            "NetwatchAlerts_Deliver",
            Call::new(Method::POST, alerts).token(Some(&secret)).json(&delivery),
            200,
        )
        .await
        .json();
    assert_eq!(taken["alerts"][0]["matched"], false, "{taken}");
    assert_eq!(taken["alerts"][1]["matched"], true, "{taken}");
    assert_eq!(taken["alerts"][1]["hosts"][0]["result"], "UnknownHost", "{taken}");
    let mut old = delivery.clone();
    old["version"] = json!("3");
    let refused = s
        .call(
            "NetwatchAlerts_Deliver",
            Call::new(Method::POST, alerts).token(Some(&secret)).json(&old),
            400,
        )
        .await
        .json();
    assert_eq!(refused["error"]["target"], "version", "{refused}");
    s.call(
        "NetwatchAlerts_Deliver",
        Call::new(Method::POST, alerts)
            .token(Some("not-the-secret"))
            .json(&delivery),
        401,
    )
    .await;
    s.call(
        "NetwatchAlerts_Deliver",
        Call::new(Method::POST, alerts).token(None).json(&delivery),
        401,
    )
    .await;
    // Azure Monitor's common alert schema at the webhook URL: the trigger
    // takes Alertmanager's alerts only.
    let azure = json!({"schemaId": "azureMonitorCommonAlertSchema", "data": {"essentials": {
        "alertId": format!("/subscriptions/{SUB}/providers/Microsoft.AlertsManagement/alerts/b9569717"),
        "alertRule": "HighDrops", "severity": "Sev3", "signalType": "Metric", "monitorCondition": "Fired",
        "monitoringService": "Platform", "alertTargetIDs": [VM1.to_lowercase()],
        "firedDateTime": "2026-12-06T20:00:01.5Z", "essentialsVersion": "1.0", "alertContextVersion": "1.0"},
        "alertContext": {}}});
    let at_url = |body: &Value| Call::new(Method::POST, &webhook).token(None).json(body);
    let taken = s
        .call("NetwatchAlerts_DeliverToWebhookUrl", at_url(&azure), 200)
        .await
        .json();
    assert_eq!(taken["alerts"][0]["matched"], false, "{taken}");
    s.call(
        "NetwatchAlerts_DeliverToWebhookUrl",
        at_url(&json!({"hello": "world"})),
        400,
    )
    .await;
    s.call(
        "NetwatchAlerts_DeliverToWebhookUrl",
        Call::new(Method::POST, format!("{alerts}/not-the-secret"))
            .token(None)
            .json(&azure),
        401,
    )
    .await;
    let text = Call::new(Method::POST, &webhook)
        .token(None)
        .header("content-type", "text/plain")
        .body(b"alert".to_vec());
    s.call("NetwatchAlerts_DeliverToWebhookUrl", text, 415).await;

    // A capture around an alert, asked for by hand: its window is echoed,
    // and its status says what it covers.
    let around = json!({"properties": {"target": VM1, "storageLocation": {"filePath": "/var/captures/around.cap"},
        "netwatch": {"alert": {"firedDateTime": "2026-12-06T20:00:01Z", "secondsBefore": 30, "alertRule": "HighDrops"}}}});
    let pcalert = format!("{NW_WEST}/packetCaptures/pcalert");
    let created = s
        .call("PacketCaptures_Create", put(&format!("{pcalert}?{V}"), &around), 201)
        .await
        .json();
    assert_eq!(
        created["properties"]["netwatch"]["alert"]["secondsAfter"], 60,
        "{created}"
    );
    let covered = s
        .call(
            "PacketCaptures_GetStatus",
            Call::new(Method::POST, format!("{pcalert}/queryStatus?{V}")),
            200,
        )
        .await
        .json();
    assert_eq!(covered["netwatch"]["alert"]["secondsBeforeRequested"], 30, "{covered}");

    // A watcher goes with its captures.
    let west = format!("{NW_WEST}?{V}");
    s.call("NetworkWatchers_Delete", Call::new(Method::DELETE, &west), 204)
        .await;
    s.call("NetworkWatchers_Delete", Call::new(Method::DELETE, &west), 204)
        .await;
    s.call("PacketCaptures_List", get(format!("{NW_WEST}/packetCaptures?{V}")), 404)
        .await;

    // Client tokens with roles: made, listed, refused a role too small, revoked.
    let tokens = "/netwatch/v1/tokens";
    let made = s
        .call(
            "NetwatchTokens_Create",
            Call::new(Method::POST, tokens).json(&json!({"name": "ci", "role": "reader"})),
            201,
        )
        .await;
    let reader = made.json()["token"].as_str().unwrap().to_owned();
    s.call(
        "NetwatchTokens_Create",
        Call::new(Method::POST, tokens).json(&json!({"name": "CI", "role": "operator"})),
        409,
    )
    .await;
    s.call(
        "NetwatchTokens_Create",
        Call::new(Method::POST, tokens).json(&json!({"name": "ci2", "role": "root"})),
        400,
    )
    .await;
    s.call(
        "NetwatchTokens_Create",
        Call::new(Method::POST, tokens)
            .header("content-type", "text/plain")
            .body(b"{}".to_vec()),
        415,
    )
    .await;
    s.call("NetwatchTokens_List", get(tokens), 200).await;
    s.call("NetwatchTokens_List", get(tokens).token(Some(&reader)), 403)
        .await;
    s.call("NetwatchTokens_List", get(tokens).token(None), 401).await;

    // The console's files and the routes it uses beside ARM's.
    let page = s.call("Console_Page", get("/console/").token(None), 200).await;
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let etag = page.header("etag").unwrap().to_owned();
    s.call(
        "Console_Page",
        get("/console/").token(None).header("if-none-match", &etag),
        304,
    )
    .await;
    s.call("Console_Redirect", get("/console").token(None), 308).await;
    s.call("Console_File", get("/console/console.css").token(None), 200)
        .await;
    s.call("Console_File", get("/console/no-such.js").token(None), 404)
        .await;
    let me = s
        .call("WhoAmI_Get", get("/netwatch/v1/whoami").token(Some(&reader)), 200)
        .await;
    assert_eq!(me.json()["role"], "reader");
    s.call("WhoAmI_Get", get("/netwatch/v1/whoami").token(None), 401).await;
    let validate = "/netwatch/v1/validate/packetCapture";
    let capture = json!({"properties": {"target": VM1, "storageLocation": {"filePath": "/var/captures/a.cap"}}});
    let valid = s
        .call(
            "PacketCaptures_Validate",
            Call::new(Method::POST, validate).json(&capture).token(Some(&reader)),
            200,
        )
        .await;
    assert_eq!(
        valid.json()["properties"]["timeLimitInSeconds"],
        18000,
        "{}",
        valid.text()
    );
    let bad = json!({"properties": {"target": VM1, "storageLocation": {"filePath": "/var/captures/a.cap"},
        "filters": [{"localPort": "99999"}]}});
    let refused = s
        .call(
            "PacketCaptures_Validate",
            Call::new(Method::POST, validate).json(&bad),
            400,
        )
        .await;
    assert_eq!(
        refused.json()["error"]["target"],
        "properties.filters[0].localPort",
        "{}",
        refused.text()
    );
    let named = s
        .call(
            "PacketCaptures_Validate",
            Call::new(Method::POST, format!("{validate}?name=a%3Cb")).json(&capture),
            400,
        )
        .await;
    assert_eq!(named.json()["error"]["target"], "packetCaptureName", "{}", named.text());
    s.call(
        "PacketCaptures_Validate",
        Call::new(Method::POST, validate).json(&capture).token(None),
        401,
    )
    .await;
    s.call(
        "PacketCaptures_Validate",
        Call::new(Method::POST, validate)
            .header("content-type", "text/plain")
            .body(b"{}".to_vec()),
        415,
    )
    .await;
    let events = s
        .call(
            "CaptureEvents_Stream",
            get("/netwatch/v1/captures/events").token(Some(&reader)),
            200,
        )
        .await;
    assert!(events.text().contains("event: synced"), "{}", events.text());
    s.call(
        "CaptureEvents_Stream",
        get("/netwatch/v1/captures/events").token(None),
        401,
    )
    .await;
    let made1 = format!("{accounts}/made2?{V}");
    s.call(
        "StorageAccounts_Create",
        Call::new(Method::PUT, &made1).json(&json!({})).token(Some(&reader)),
        403,
    )
    .await;
    s.call(
        "NetwatchTokens_Revoke",
        Call::new(Method::DELETE, format!("{tokens}/ci")),
        200,
    )
    .await;
    s.call(
        "NetwatchTokens_Revoke",
        Call::new(Method::DELETE, format!("{tokens}/ci")),
        204,
    )
    .await;
    s.call(
        "NetwatchTokens_Revoke",
        Call::new(Method::DELETE, format!("{tokens}/a%20b")),
        400,
    )
    .await;

    // The agent extension removed: the host is cut off.
    let extension = |vm: &str, name: &str| {
        format!(
            "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{vm}/extensions/{name}?{V}"
        )
    };
    s.call(
        "VirtualMachineExtensions_Delete",
        Call::new(Method::DELETE, extension("vm1", "NetworkWatcherAgentLinux")),
        200,
    )
    .await;
    s.call(
        "VirtualMachineExtensions_Delete",
        Call::new(Method::DELETE, extension("vm1", "CustomScript")),
        204,
    )
    .await;
    s.call(
        "VirtualMachineExtensions_Delete",
        Call::new(Method::DELETE, extension("ghost", "NetworkWatcherAgentLinux")),
        404,
    )
    .await;

    // The agent removed from a scale set: its keys revoked, its hosts cut off.
    let delete_extension = |set: &str, name: &str| Call::new(Method::DELETE, set_extension(set, name));
    s.call(
        "VirtualMachineScaleSetExtensions_Delete",
        delete_extension("ss1", "NetworkWatcherAgentLinux"),
        200,
    )
    .await;
    s.call(
        "VirtualMachineScaleSetExtensions_Delete",
        delete_extension("ss1", "CustomScript"),
        204,
    )
    .await;
    s.call(
        "VirtualMachineScaleSetExtensions_Delete",
        delete_extension("ss9", "NetworkWatcherAgentLinux"),
        404,
    )
    .await;
    let revoked = s
        .call(
            "VirtualMachineScaleSetExtensions_Get",
            get(set_extension("ss1", "NetworkWatcherAgentLinux")),
            200,
        )
        .await;
    assert_eq!(revoked.json()["properties"]["netwatch"]["keys"][0]["revoked"], true);

    // Every documented operation took part.
    let called: BTreeSet<&str> = s.answers.iter().map(|a| a["operation"].as_str().unwrap()).collect();
    let missing: Vec<&&str> = s.operations.keys().filter(|id| !called.contains(**id)).collect();
    assert_eq!(missing, Vec::<&&str>::new(), "operations the session does not call");

    let dir = tempfile::tempdir().unwrap();
    let answers = dir.path().join("answers.json");
    std::fs::write(&answers, serde_json::to_vec(&s.answers).unwrap()).unwrap();
    let out = run_python(VALIDATE_ANSWERS, &[&document_path(), &answers]);
    assert!(out.contains("answers match their schemas"), "{out}");
}
