//! Bad requests against the scale-set surface (issue 13): captures over a
//! scale set (`targetType: AzureVMSS`, `scope`), scale sets, their instances,
//! their agent extension with its reusable keys, and the agent channel those
//! keys open.
//!
//! A real controller in process (`routes::router` over a temp SQLite store,
//! tokens configured) is served on 127.0.0.1, port 0, so hosts join it over
//! the real WebSocket channel: a hello with the agent's `hostId` ([`Channel`],
//! a minimal RFC 6455 client, since the controller's tests have no WebSocket
//! crate). REST requests go through the same router with `oneshot`.
//!
//! Every bad request gets a 4xx with ARM's error body whose message (and
//! `target`, where the API sets one) names the field, and changes nothing:
//! what clients read back (scale sets, their instances and keys) and what the
//! store holds (captures and their parts, VMs, counts of every scale-set,
//! credential and operation row) is compared before and after each one. All
//! failing rows are reported together.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use netwatch_api::agent::{AgentMessage, CHANNEL_PATH, ControllerMessage};
use netwatch_controller::app::{ApiConfig, AppState};
use netwatch_controller::auth::{Tokens, digest};
use netwatch_controller::routes::router;
use netwatch_controller::store::Store;
use netwatch_storage::Accounts;
use serde_json::{Value, json};
use sqlx::SqlitePool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

const SUB: &str = "00000000-0000-0000-0000-000000000000";
const V: &str = "api-version=2024-05-01";
const HOST: &str = "netwatch.test:8443";
const ADMIN: &str = "admin-token-of-the-fleet-request-tests";
const SETS: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets";
const NW: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus";
const AGENT_EXTENSION: &str = "NetworkWatcherAgentLinux";
/// The longest any one read of the channel may take.
const WAIT: Duration = Duration::from_secs(10);

fn set_id(name: &str) -> String {
    format!("{SETS}/{name}")
}

fn vm_id(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{name}")
}

// ---------------------------------------------------------------------------
// The controller

/// A controller with tokens configured, served on 127.0.0.1 until dropped.
struct Controller {
    router: Router,
    state: AppState,
    addr: SocketAddr,
    db: SqlitePool,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Controller {
    async fn start() -> Controller {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        let store = Store::open(&url).await.unwrap();
        let db = SqlitePool::connect(&url).await.unwrap();
        let config = ApiConfig {
            auth: Some(Tokens::from_digests(&[digest(ADMIN)], &[]).unwrap()),
            ..ApiConfig::default()
        };
        let state = AppState::new(store, config, Accounts::default());
        let router = router(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Controller {
            router,
            state,
            addr,
            db,
            server,
            _dir: dir,
        }
    }

    /// The answer to a REST request made with the admin token: status and
    /// body (`null` when empty).
    async fn send(&self, method: Method, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, HOST)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Body::empty, |text| Body::from(text.to_owned()));
        let response = self.router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, body)
    }

    /// GET `uri`, which must answer 200.
    async fn get(&self, uri: &str) -> Value {
        let (status, body) = self.send(Method::GET, uri, None).await;
        assert_eq!(status, StatusCode::OK, "GET {uri}: {body}");
        body
    }

    /// PUT `body` to `uri`, which must answer `status`.
    async fn put(&self, uri: &str, body: &Value, status: StatusCode) -> Value {
        let (answered, answer) = self.send(Method::PUT, uri, Some(&body.to_string())).await;
        assert_eq!(answered, status, "PUT {uri}: {answer}");
        answer
    }

    /// `vmss extension set` on scale set `set` with `settings`: the new key.
    async fn new_key(&self, set: &str, settings: Value, status: StatusCode) -> String {
        let uri = format!("{}/extensions/{AGENT_EXTENSION}?{V}", set_id(set));
        let answer = self.put(&uri, &agent_extension(settings), status).await;
        answer["properties"]["netwatch"]["enrollment"]["key"]
            .as_str()
            .unwrap_or_else(|| panic!("no key: {answer}"))
            .to_owned()
    }

    /// Waits until every agent channel has ended and written what it writes
    /// at its end (when its agent was last heard from), so that a snapshot
    /// taken next stays as it is.
    async fn until_channels_end(&self) {
        for _ in 0..200 {
            if self.state.hub.unfinished() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{} agent channels still open after 5 s", self.state.hub.unfinished());
    }

    /// What no bad request may change: scale sets, their instances and
    /// extensions as clients read them; captures, their parts and VMs as
    /// stored; and how many rows every table of hosts, keys and operations has.
    async fn snapshot(&self) -> String {
        let mut out = String::new();
        let sets = self
            .get(&format!(
                "/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachineScaleSets?{V}"
            ))
            .await;
        out.push_str(&format!("{sets}\n"));
        for set in sets["value"].as_array().unwrap() {
            let id = set["id"].as_str().unwrap();
            for listing in ["virtualMachines", "extensions"] {
                let listed = self.get(&format!("{id}/{listing}?{V}")).await;
                out.push_str(&format!("{listed}\n"));
            }
        }
        let store = &self.state.store;
        for watcher in store.list_watchers(SUB).await.unwrap() {
            out.push_str(&format!("{watcher:?}\n"));
            for capture in store.list_captures(&watcher.id).await.unwrap() {
                out.push_str(&format!("  {capture:?}\n"));
                for part in store.capture_parts(&capture.id).await.unwrap() {
                    out.push_str(&format!("    {part:?}\n"));
                }
            }
        }
        out.push_str(&format!("{:?}\n", store.list_vms(SUB).await.unwrap()));
        for table in [
            "scale_sets",
            "scale_set_instances",
            "scale_set_keys",
            "agent_credentials",
            "enrollments",
            "operations",
            "packet_captures",
        ] {
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&self.db)
                .await
                .unwrap();
            out.push_str(&format!("{table}: {count}\n"));
        }
        let revoked: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM scale_set_keys WHERE revoked_ms IS NOT NULL)
                  + (SELECT count(*) FROM agent_credentials WHERE revoked_ms IS NOT NULL)",
        )
        .fetch_one(&self.db)
        .await
        .unwrap();
        out.push_str(&format!("revoked: {revoked}\n"));
        out
    }
}

/// The agent extension's PUT body as az sends it, with the key's `settings`.
fn agent_extension(settings: Value) -> Value {
    json!({"location": "westus", "properties": {
        "publisher": "Microsoft.Azure.NetworkWatcher", "type": AGENT_EXTENSION,
        "typeHandlerVersion": "1.4", "autoUpgradeMinorVersion": true, "settings": settings}})
}

// ---------------------------------------------------------------------------
// The agent channel

/// One agent connection to the channel: RFC 6455 as far as the hub speaks
/// it (masked text frames out; whole, unmasked text frames in).
struct Channel {
    stream: TcpStream,
    /// Bytes read and not yet taken as a frame.
    buffer: Vec<u8>,
}

/// An upgrade the controller refused: its status and ARM error body.
#[derive(Debug)]
struct Rejected {
    status: u16,
    body: Value,
}

impl Channel {
    /// Opens the channel with `Authorization: Bearer {token}`.
    async fn open(addr: SocketAddr, token: &str) -> Result<Channel, Rejected> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {CHANNEL_PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut channel = Channel {
            stream,
            buffer: Vec::new(),
        };
        let end = loop {
            if let Some(at) = channel.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(
                channel.read().await,
                "the controller closed the connection before it answered"
            );
        };
        let head = String::from_utf8(channel.buffer.drain(..end).collect()).unwrap();
        let status: u16 = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap();
        if status == 101 {
            return Ok(channel);
        }
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("a refusal without Content-Length: {head}"));
        assert!(channel.fill(length).await, "the refusal's body was cut short: {head}");
        let body = serde_json::from_slice(&channel.buffer[..length]).unwrap();
        Err(Rejected { status, body })
    }

    /// Reads more bytes; false at the end of the stream.
    async fn read(&mut self) -> bool {
        let read = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buffer))
            .await
            .expect("the controller answers within 10 s")
            .unwrap();
        read > 0
    }

    /// Reads until `length` bytes are buffered; false if the stream ended first.
    async fn fill(&mut self, length: usize) -> bool {
        while self.buffer.len() < length {
            if !self.read().await {
                return false;
            }
        }
        true
    }

    /// Sends one frame: final, masked (as clients must).
    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            short @ 0..=125 => frame.push(0x80 | u8::try_from(short).unwrap()),
            medium @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&u16::try_from(medium).unwrap().to_be_bytes());
            }
            long => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&u64::try_from(long).unwrap().to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().zip(MASK.iter().cycle()).map(|(byte, mask)| byte ^ mask));
        self.stream.write_all(&frame).await
    }

    async fn send(&mut self, message: &Value) {
        self.send_frame(0x1, message.to_string().as_bytes()).await.unwrap();
    }

    /// The controller's next message; `None` once it closed the channel.
    async fn receive(&mut self) -> Option<ControllerMessage> {
        loop {
            if !self.fill(2).await {
                return None;
            }
            let (first, second) = (self.buffer[0], self.buffer[1]);
            assert_eq!(second & 0x80, 0, "a server's frames are not masked");
            let (header, length) = match second & 0x7f {
                126 => {
                    if !self.fill(4).await {
                        return None;
                    }
                    (4, usize::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]])))
                }
                127 => {
                    if !self.fill(10).await {
                        return None;
                    }
                    let length = u64::from_be_bytes(self.buffer[2..10].try_into().unwrap());
                    (10, usize::try_from(length).unwrap())
                }
                short => (2, usize::from(short)),
            };
            if !self.fill(header + length).await {
                return None;
            }
            let payload: Vec<u8> = self.buffer.drain(..header + length).skip(header).collect();
            assert_ne!(first & 0x80, 0, "the controller sends each message in one frame");
            match first & 0x0f {
                0x1 => return Some(serde_json::from_slice(&payload).unwrap()),
                0x8 => return None,
                // Binary, ping, pong: not messages.
                _ => {}
            }
        }
    }

    /// Closes the channel as an agent that stops does; best effort, since
    /// the controller may have closed it first (after a refusal).
    async fn close(mut self) {
        if self.send_frame(0x8, &[]).await.is_ok() {
            let _ = self.stream.shutdown().await;
        }
    }
}

/// An agent's hello as it goes on the wire; `host_id` as its agent keeps it.
fn hello(host_id: Option<&str>, hostname: &str) -> Value {
    let mut hello = json!({"type": "hello", "vmName": hostname, "resourceGroup": "rg1", "location": "westus",
        "hostname": hostname, "captureInterface": "eth0", "agentVersion": "0.1.0", "interfaces": [], "captures": []});
    if let Some(host_id) = host_id {
        hello["hostId"] = json!(host_id);
    }
    let parsed: AgentMessage = serde_json::from_value(hello.clone()).expect("the hello is one the controller reads");
    assert!(matches!(parsed, AgentMessage::Hello(_)), "{parsed:?}");
    hello
}

/// A host says `hello` on a channel opened with `key`; the controller's first
/// answer (a welcome or a refusal). The channel is closed after it.
async fn join(controller: &Controller, key: &str, hello: &Value) -> ControllerMessage {
    let mut channel = Channel::open(controller.addr, key)
        .await
        .unwrap_or_else(|rejected| panic!("the channel was refused: {rejected:?}"));
    channel.send(hello).await;
    let answer = channel.receive().await.expect("the controller answers a hello");
    channel.close().await;
    controller.until_channels_end().await;
    answer
}

/// The VM id a welcome names; panics on any other answer.
fn welcomed(answer: &ControllerMessage) -> &str {
    match answer {
        ControllerMessage::Welcome(welcome) => {
            assert!(
                welcome.credential.is_some(),
                "a host that joins gets a credential: {welcome:?}"
            );
            &welcome.vm_id
        }
        other => panic!("not a welcome: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Rows

/// One bad request and what the API must answer.
struct Row {
    method: Method,
    uri: String,
    body: Option<String>,
    status: u16,
    code: &'static str,
    target: Option<String>,
    /// Each must appear in the message.
    message: Vec<String>,
}

/// A request, before its expected answer is known.
struct Request {
    method: Method,
    uri: String,
    body: Option<String>,
}

impl Request {
    fn fails(self, status: u16, code: &'static str, target: Option<&str>, message: &[&str]) -> Row {
        Row {
            method: self.method,
            uri: self.uri,
            body: self.body,
            status,
            code,
            target: target.map(str::to_owned),
            message: message.iter().map(|fragment| (*fragment).to_owned()).collect(),
        }
    }
}

fn put(uri: impl Into<String>, body: &Value) -> Request {
    Request {
        method: Method::PUT,
        uri: uri.into(),
        body: Some(body.to_string()),
    }
}

fn post(uri: impl Into<String>, body: &Value) -> Request {
    Request {
        method: Method::POST,
        uri: uri.into(),
        body: Some(body.to_string()),
    }
}

fn get(uri: impl Into<String>) -> Request {
    Request {
        method: Method::GET,
        uri: uri.into(),
        body: None,
    }
}

fn delete(uri: impl Into<String>) -> Request {
    Request {
        method: Method::DELETE,
        uri: uri.into(),
        body: None,
    }
}

/// A capture over scale set `ss1` (every instance) with `change` applied to
/// its `properties`.
fn fleet(change: impl FnOnce(&mut Value)) -> Value {
    let mut body = json!({"properties": {
        "target": set_id("ss1"), "targetType": "AzureVMSS",
        "storageLocation": {"filePath": "/var/captures/pc1.cap"}, "timeLimitInSeconds": 60}});
    change(&mut body["properties"]);
    body
}

/// The lines of a [`Controller::snapshot`] that went (`-`) and came (`+`).
fn changes(before: &str, after: &str) -> String {
    let gone = before.lines().filter(|line| !after.lines().any(|l| l == *line));
    let came = after.lines().filter(|line| !before.lines().any(|l| l == *line));
    let gone = gone.map(|line| format!("      - {line}"));
    let came = came.map(|line| format!("      + {line}"));
    gone.chain(came).collect::<Vec<_>>().join("\n")
}

/// Sends every row, and reports together each one whose answer is not the
/// expected one or that changed anything.
async fn check_rows(controller: &Controller, rows: Vec<Row>) {
    let mut before = controller.snapshot().await;
    let mut failures = Vec::new();
    for row in rows {
        let what = format!("{} {} {}", row.method, row.uri, row.body.as_deref().unwrap_or(""));
        let (status, body) = controller.send(row.method.clone(), &row.uri, row.body.as_deref()).await;
        let error = &body["error"];
        let message = error["message"].as_str().unwrap_or_default();
        let mut wrong = Vec::new();
        if status.as_u16() != row.status {
            wrong.push(format!("status {} (want {})", status.as_u16(), row.status));
        }
        if error["code"] != row.code {
            wrong.push(format!("code {} (want {})", error["code"], row.code));
        }
        if error["target"].as_str() != row.target.as_deref() {
            wrong.push(format!("target {} (want {:?})", error["target"], row.target));
        }
        for fragment in &row.message {
            if !message.contains(fragment.as_str()) {
                wrong.push(format!("message lacks {fragment:?}"));
            }
        }
        // STYLE 8: no final period.
        if message.is_empty() || message.ends_with('.') {
            wrong.push("message is empty or ends with '.'".to_owned());
        }
        if error["details"] != json!([]) {
            wrong.push(format!("details {}", error["details"]));
        }
        let after = controller.snapshot().await;
        if after != before {
            wrong.push(format!("the state changed:\n{}", changes(&before, &after)));
            // Blame this row only.
            before = after;
        }
        if !wrong.is_empty() {
            failures.push(format!("{what}\n    {}\n    answer: {body}", wrong.join("\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn bad_fleet_requests_are_explained_and_change_nothing() {
    let controller = Controller::start().await;
    // Scale set ss1 (westus) with two hosts, instances 0 and 1, joined over
    // the channel with one key; a capture over it, waiting for them.
    let key = controller.new_key("ss1", Value::Null, StatusCode::CREATED).await;
    for (index, host) in ["host-a", "host-b"].into_iter().enumerate() {
        let answer = join(&controller, &key, &hello(Some(host), host)).await;
        assert_eq!(welcomed(&answer), format!("{}/virtualMachines/{index}", set_id("ss1")));
    }
    let busy = format!("{NW}/packetCaptures/busy?{V}");
    controller.put(&busy, &fleet(|_| {}), StatusCode::CREATED).await;

    let pc = format!("{NW}/packetCaptures/pc1?{V}");
    let eastus = NW.replace("westus", "eastus");
    let instances = format!("{}/virtualMachines", set_id("ss1"));
    let extension = |set: &str, name: &str| format!("{}/extensions/{name}?{V}", set_id(set));
    let remove = |set: &str| format!("{}/delete?{V}", set_id(set));
    let known = r#"its instances are ["0", "1"]"#;

    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        // ---- a capture's target and scope
        put(&pc, &fleet(|p| { p["target"] = json!(vm_id("vm1")); p["targetType"] = json!("AzureVM"); p["scope"] = json!({"include": ["0"]}); }))
            .fails(400, "InvalidRequestFormat", Some("properties.scope"),
            &["properties.scope applies only to scale sets (targetType AzureVMSS)", "is a virtual machine, which has no instances: remove scope"]),
        put(&pc, &fleet(|p| { p["target"] = json!(vm_id("vm1")); p["targetType"] = json!("AzureVM"); p["scope"] = json!({"exclude": ["1"]}); }))
            .fails(400, "InvalidRequestFormat", Some("properties.scope"), &["applies only to scale sets"]),
        put(&pc, &fleet(|p| p["scope"] = json!({"include": ["zero"]})))
            .fails(400, "InvalidRequestFormat", Some("properties.scope.include[0]"),
            &[r#"properties.scope.include[0] "zero" is not a scale-set instance id"#, r#"instance ids are numbers such as "0" or "1""#]),
        put(&pc, &fleet(|p| p["scope"] = json!({"exclude": ["1", "-1"]})))
            .fails(400, "InvalidRequestFormat", Some("properties.scope.exclude[1]"),
            &[r#"properties.scope.exclude[1] "-1" is not a scale-set instance id"#]),
        put(&pc, &fleet(|p| p["scope"] = json!({"include": ["0", "1.0"]})))
            .fails(400, "InvalidRequestFormat", Some("properties.scope.include[1]"),
            &[r#""1.0" is not a scale-set instance id"#]),
        put(&pc, &fleet(|p| p["scope"] = json!({"include": ["4294967296"]})))
            .fails(400, "InvalidRequestFormat", Some("properties.scope.include[0]"),
            &[r#""4294967296" is not a scale-set instance id"#]),
        put(&pc, &fleet(|p| p["scope"] = json!({"include": [""]})))
            .fails(400, "InvalidRequestFormat", Some("properties.scope.include[0]"),
            &[r#""" is not a scale-set instance id"#]),
        put(&pc, &fleet(|p| p["scope"] = json!({"include": [0]})))
            .fails(400, "InvalidRequestFormat", Some("properties.scope.include[0]"),
            &[r#"properties.scope.include[0] must be a string such as "0", not 0"#]),
        put(&pc, &fleet(|p| p["scope"] = json!(["0"])))
            .fails(400, "InvalidRequestFormat", Some("properties.scope"),
            &["properties.scope must be", "not an array"]),
        put(&pc, &fleet(|p| p["scope"] = json!({"include": ["0", "1", "0"]})))
            .fails(400, "InvalidRequestFormat", Some("properties.scope.include[2]"),
            &[r#"properties.scope.include[2] "0" is named twice in properties.scope.include: name each instance once"#]),
        put(&pc, &fleet(|p| p["scope"] = json!({"exclude": ["1", "1"]})))
            .fails(400, "InvalidRequestFormat", Some("properties.scope.exclude[1]"),
            &[r#""1" is named twice in properties.scope.exclude"#]),
        put(&pc, &fleet(|p| p["scope"] = json!({"include": ["0", "1"], "exclude": ["1"]})))
            .fails(400, "InvalidRequestFormat", Some("properties.scope.exclude[0]"),
            &[r#"properties.scope.exclude[0] "1" is also in properties.scope.include: an instance is either included or excluded"#]),
        put(&pc, &fleet(|p| p["scope"] = json!({"include": ["0", "7", "9"]})))
            .fails(400, "InvalidRequestFormat", Some("properties.scope.include[1]"),
            &[r#"properties.scope.include[1] "7", "9" are not"#, "of scale set ss1", known]),
        put(&pc, &fleet(|p| p["scope"] = json!({"exclude": ["5"]})))
            .fails(400, "InvalidRequestFormat", Some("properties.scope.exclude[0]"),
            &[r#"properties.scope.exclude[0] "5" is not an instance of scale set ss1"#, known]),
        put(&pc, &fleet(|p| p["scope"] = json!({"exclude": ["0", "1"]})))
            .fails(400, "InvalidRequestFormat", Some("properties.scope"),
            &[&format!("the scope selects no instance of scale set ss1 ({known})"), "widen properties.scope or join hosts first"]),
        put(&pc, &fleet(|p| p["target"] = json!(set_id("ss9"))))
            .fails(400, "InvalidRequestFormat", Some("properties.target"),
            &[&format!("scale set {} does not exist", set_id("ss9")), "netwatch vmss extension set"]),
        put(&pc, &fleet(|p| p["target"] = json!(vm_id("vm1"))))
            .fails(400, "InvalidRequestFormat", Some("properties.targetType"),
            &["properties.targetType is AzureVMSS but properties.target is a virtual machine id", "use AzureVM, or leave targetType out"]),
        put(&pc, &fleet(|p| p["targetType"] = json!("AzureVM")))
            .fails(400, "InvalidRequestFormat", Some("properties.targetType"),
            &["properties.targetType is AzureVM but properties.target is a scale set id", "use AzureVMSS"]),
        put(&pc, &fleet(|p| p["target"] = json!(format!("{instances}/1"))))
            .fails(400, "LinkedInvalidPropertyId", Some("properties.target"),
            &["is a scale-set instance id", "target the scale set", r#""scope":{"include":["1"]}"#]),
        put(format!("{eastus}/packetCaptures/pc1?{V}"), &fleet(|_| {}))
            .fails(400, "InvalidRequestFormat", Some("properties.target"),
            &["ss1 is in westus, but network watcher NetworkWatcher_eastus serves eastus", "use the watcher of westus"]),
        put(&busy, &fleet(|_| {}))
            .fails(409, "Conflict", None, &["packet capture busy is NotStarted", "stop it (POST …/stop) or delete it"]),

        // ---- scale sets
        put(format!("{}?{V}", set_id("ss3")), &json!({"tags": {}}))
            .fails(400, "InvalidRequestFormat", Some("location"), &["scale set ss3 is new: give its location"]),
        put(format!("{}?{V}", set_id("ss3")), &json!({"location": "mars"}))
            .fails(400, "InvalidRequestFormat", Some("location"),
            &["location mars is not served here: use one of westus, eastus, westeurope"]),
        put(format!("{}?{V}", set_id("ss3")), &json!({"location": "West-US!"}))
            .fails(400, "InvalidRequestFormat", Some("location"), &["West-US!"]),
        put(format!("{}?{V}", set_id("ss1")), &json!({"location": "eastus"}))
            .fails(400, "InvalidRequestFormat", Some("location"),
            &["scale set ss1 is in westus: a scale set cannot move", "leave location out or give westus"]),
        put(format!("{}?{V}", set_id("ss1")), &json!({"tags": {"team": "net", "tier": 1}}))
            .fails(400, "InvalidRequestFormat", Some("tags.tier"),
            &[r#"tag "tier" is not a string: tags map names to strings"#]),
        put(format!("{}?{V}", set_id("ss1")), &json!({"tags": ["team"]}))
            .fails(400, "InvalidRequestFormat", None, &["the body is not a scale set", "expected a map"]),
        put(format!("{SETS}/ss*?{V}"), &json!({"location": "westus"}))
            .fails(400, "InvalidResourceName", Some("vmScaleSetName"), &[r#""ss*" is not a valid name: it has the character '*'"#]),

        // ---- the agent extension and its keys
        put(extension("ss1", "CustomScript"), &agent_extension(Value::Null))
            .fails(400, "InvalidRequestFormat", Some("vmssExtensionName"),
            &["extension CustomScript is not one netwatch installs", "the agent is NetworkWatcherAgentLinux"]),
        put(extension("ss1", "NetworkWatcherAgentWindows"), &agent_extension(Value::Null))
            .fails(400, "InvalidRequestFormat", Some("vmssExtensionName"), &["the netwatch agent runs on Linux only"]),
        put(extension("ss1", AGENT_EXTENSION), &{ let mut body = agent_extension(Value::Null); body["properties"]["publisher"] = json!("Contoso.Agents"); body })
            .fails(400, "InvalidRequestFormat", Some("properties.publisher"),
            &[r#"publisher "Contoso.Agents" is not the agent's: use Microsoft.Azure.NetworkWatcher"#]),
        put(extension("ss1", AGENT_EXTENSION), &{ let mut body = agent_extension(Value::Null); body["properties"]["type"] = json!("CustomScript"); body })
            .fails(400, "InvalidRequestFormat", Some("properties.type"),
            &[r#"type "CustomScript" is not the agent's: use NetworkWatcherAgentLinux"#]),
        put(extension("ss1", AGENT_EXTENSION), &agent_extension(json!({"keyMaxUses": 0})))
            .fails(400, "InvalidRequestFormat", Some("properties.settings.keyMaxUses"),
            &["properties.settings.keyMaxUses 0 must be a whole number from 1 to 4294967295"]),
        put(extension("ss1", AGENT_EXTENSION), &agent_extension(json!({"keyMaxUses": -3})))
            .fails(400, "InvalidRequestFormat", Some("properties.settings.keyMaxUses"),
            &["properties.settings.keyMaxUses -3 must be a whole number from 1"]),
        put(extension("ss1", AGENT_EXTENSION), &agent_extension(json!({"keyMaxUses": "5"})))
            .fails(400, "InvalidRequestFormat", Some("properties.settings.keyMaxUses"),
            &[r#"properties.settings.keyMaxUses "5" must be a whole number"#]),
        put(extension("ss1", AGENT_EXTENSION), &agent_extension(json!({"keyMaxUses": 2.5})))
            .fails(400, "InvalidRequestFormat", Some("properties.settings.keyMaxUses"), &["2.5 must be a whole number"]),
        put(extension("ss1", AGENT_EXTENSION), &agent_extension(json!({"keyExpiresInSeconds": 0})))
            .fails(400, "InvalidRequestFormat", Some("properties.settings.keyExpiresInSeconds"),
            &["properties.settings.keyExpiresInSeconds 0 must be a whole number from 1 to 2592000"]),
        put(extension("ss1", AGENT_EXTENSION), &agent_extension(json!({"keyExpiresInSeconds": 2_592_001})))
            .fails(400, "InvalidRequestFormat", Some("properties.settings.keyExpiresInSeconds"),
            &["keyExpiresInSeconds 2592001 must be a whole number from 1 to 2592000"]),
        put(extension("ss1", AGENT_EXTENSION), &{ let mut body = agent_extension(Value::Null); body["location"] = json!("eastus"); body })
            .fails(400, "InvalidRequestFormat", Some("location"), &["scale set ss1 is in westus: give that location or none"]),
        put(extension("ss4", AGENT_EXTENSION), &{ let mut body = agent_extension(Value::Null); body["location"] = json!("mars"); body })
            .fails(400, "InvalidRequestFormat", Some("location"), &["location mars is not served here"]),

        // ---- instances removed
        post(remove("ss1"), &json!({"instanceIds": []}))
            .fails(400, "InvalidRequestFormat", Some("instanceIds"), &["instanceIds is empty: name the instances to remove"]),
        post(remove("ss1"), &json!({"instanceIds": ["abc"]}))
            .fails(400, "InvalidRequestFormat", Some("instanceIds[0]"),
            &[r#"instanceIds[0] "abc" is not an instance id: instance ids are numbers such as "0""#]),
        // The first is an instance: it stays all the same.
        post(remove("ss1"), &json!({"instanceIds": ["0", "5"]}))
            .fails(400, "InvalidRequestFormat", Some("instanceIds[1]"),
            &[r#"instanceIds[1] "5" is not an instance of scale set ss1"#, known]),
        post(remove("ss1"), &json!({"instanceIds": ["0"], "force": true}))
            .fails(400, "InvalidRequestFormat", None, &["unknown field `force`", "instanceIds"]),
        post(remove("ss1"), &json!({}))
            .fails(400, "InvalidRequestFormat", None, &["missing field `instanceIds`"]),
        post(remove("ss1"), &json!({"instanceIds": [0]}))
            .fails(400, "InvalidRequestFormat", None, &[r#"the body must be {"instanceIds": ["0", …]}"#, "expected a string"]),
        post(remove("ss9"), &json!({"instanceIds": ["0"]}))
            .fails(404, "ResourceNotFound", None, &[r#"scale set "ss9" was not found"#]),

        // ---- reads
        get(format!("{}?{V}", set_id("ss9")))
            .fails(404, "ResourceNotFound", None, &[r#"scale set "ss9" was not found"#, &set_id("ss9")]),
        get(format!("{}/virtualMachines?{V}", set_id("ss9")))
            .fails(404, "ResourceNotFound", None, &[r#"scale set "ss9" was not found"#]),
        get(format!("{instances}/7?{V}"))
            .fails(404, "ResourceNotFound", None, &[r#"scale-set instance "7" was not found"#, &format!("{instances}/7")]),
        get(format!("{instances}/abc?{V}"))
            .fails(400, "InvalidRequestFormat", Some("instanceId"),
            &[r#"instanceId "abc" is not an instance id: instance ids are numbers such as "0""#]),
        get(format!("{instances}/0123456789?{V}"))
            .fails(400, "InvalidRequestFormat", Some("instanceId"), &[r#"instanceId "0123456789" is not an instance id"#]),
        get(extension("ss1", "CustomScript"))
            .fails(404, "ResourceNotFound", None,
            &["scale set ss1 has no extension CustomScript", "the only extension netwatch scale sets have is NetworkWatcherAgentLinux"]),
        get(extension("ss9", AGENT_EXTENSION))
            .fails(404, "ResourceNotFound", None, &[r#"scale set "ss9" was not found"#]),
        delete(extension("ss9", AGENT_EXTENSION))
            .fails(404, "ResourceNotFound", None, &[r#"scale set "ss9" was not found"#]),
    ];
    assert!(rows.len() >= 30, "{} rows", rows.len());
    check_rows(&controller, rows).await;
}

#[tokio::test]
async fn revoked_and_expired_scale_set_keys_are_refused_on_the_channel() {
    let controller = Controller::start().await;
    let key = controller.new_key("ss1", Value::Null, StatusCode::CREATED).await;
    let ControllerMessage::Welcome(welcome) = join(&controller, &key, &hello(Some("host-a"), "host-a")).await else {
        panic!("host-a was not welcomed");
    };
    let credential = welcome.credential.unwrap();
    let unknown = "a-key-nobody-made";

    // A key that works for a second only, seen expired.
    let brief = controller
        .new_key("ss1", json!({"keyExpiresInSeconds": 1}), StatusCode::OK)
        .await;
    let extension = format!("{}/extensions/{AGENT_EXTENSION}?{V}", set_id("ss1"));
    let mut expired = false;
    for _ in 0..40 {
        let shown = controller.get(&extension).await;
        let keys = shown["properties"]["netwatch"]["keys"].as_array().unwrap();
        if keys.iter().any(|key| key["usable"] == json!(false)) {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(expired, "the key made to last a second is still usable after 4 s");

    let refusals: &[(&str, &[&str])] = &[
        (
            &brief,
            &[
                "this scale-set enrollment key has expired",
                "run `netwatch vmss extension set` for a new one",
            ],
        ),
        (unknown, &["the bearer token is not valid here"]),
    ];
    check_refusals(&controller, refusals).await;

    // `vmss extension delete`: every key revoked, every host cut off (the
    // instance stays listed, as a VM does).
    let (status, body) = controller.send(Method::DELETE, &extension, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refusals: &[(&str, &[&str])] = &[
        (
            &key,
            &[
                "this scale-set enrollment key was revoked (`vmss extension delete`)",
                "run `netwatch vmss extension set` for a new one",
            ],
        ),
        (
            &credential,
            &["this agent's credential was revoked: enroll the host again"],
        ),
        (&brief, &["this scale-set enrollment key was revoked"]),
    ];
    check_refusals(&controller, refusals).await;
    let listed = controller.get(&format!("{}/virtualMachines?{V}", set_id("ss1"))).await;
    assert_eq!(listed["value"].as_array().unwrap().len(), 1, "{listed}");
}

/// Opens the channel with each token: each must be refused with 401
/// `AuthenticationFailed` and a message holding each fragment, and change
/// nothing.
async fn check_refusals(controller: &Controller, refusals: &[(&str, &[&str])]) {
    let before = controller.snapshot().await;
    for (token, fragments) in refusals {
        let rejected = match Channel::open(controller.addr, token).await {
            Ok(channel) => {
                channel.close().await;
                panic!("token {token:?} opened the channel");
            }
            Err(rejected) => rejected,
        };
        assert_eq!(rejected.status, 401, "{token}: {rejected:?}");
        let error = &rejected.body["error"];
        assert_eq!(error["code"], "AuthenticationFailed", "{token}: {rejected:?}");
        let message = error["message"].as_str().unwrap();
        for fragment in *fragments {
            assert!(message.contains(fragment), "{token}: {message:?} lacks {fragment:?}");
        }
        let after = controller.snapshot().await;
        assert!(
            after == before,
            "token {token:?} changed something:\n{}",
            changes(&before, &after)
        );
    }
}

#[tokio::test]
async fn a_capped_key_admits_only_the_hosts_it_was_made_for() {
    let controller = Controller::start().await;
    let key = controller
        .new_key("ss1", json!({"keyMaxUses": 1}), StatusCode::CREATED)
        .await;
    let first = join(&controller, &key, &hello(Some("host-a"), "web-a")).await;
    let instance = format!("{}/virtualMachines/0", set_id("ss1"));
    assert_eq!(welcomed(&first), instance);

    let before = controller.snapshot().await;
    let extension = format!("{}/extensions/{AGENT_EXTENSION}?{V}", set_id("ss1"));
    let keys = &controller.get(&extension).await["properties"]["netwatch"]["keys"];
    assert_eq!(
        (&keys[0]["uses"], &keys[0]["usable"]),
        (&json!(1), &json!(false)),
        "{keys}"
    );

    // Hosts the key does not admit: another host, hosts that say no usable
    // hostId. Each is refused on the channel, with the reason.
    let long = "h".repeat(129);
    let refusals = [
        (
            hello(Some("host-b"), "web-b"),
            "this scale-set enrollment key has been used by as many hosts as it was made for",
        ),
        (
            hello(None, "web-c"),
            "this agent says no hostId (letters, digits and '-', at most 128): upgrade it",
        ),
        (
            hello(Some("host c"), "web-c"),
            "says no hostId (letters, digits and '-', at most 128)",
        ),
        (
            hello(Some(&long), "web-c"),
            "says no hostId (letters, digits and '-', at most 128)",
        ),
        (hello(Some(""), "web-c"), "says no hostId"),
    ];
    for (hello, reason) in &refusals {
        match join(&controller, &key, hello).await {
            ControllerMessage::Refused { message } => {
                assert!(message.contains(reason), "{message:?} lacks {reason:?}");
            }
            other => panic!("{hello} was not refused: {other:?}"),
        }
        let after = controller.snapshot().await;
        assert!(
            after == before,
            "{hello} changed something:\n{}",
            changes(&before, &after)
        );
    }

    // The host the key admitted joins again (its agent restarted, lost its
    // credential): the same instance, no use spent.
    let again = join(&controller, &key, &hello(Some("HOST-A"), "web-a2")).await;
    assert_eq!(welcomed(&again), instance);
    let listed = controller.get(&format!("{}/virtualMachines?{V}", set_id("ss1"))).await;
    assert_eq!(listed["value"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["value"][0]["properties"]["osProfile"]["computerName"], "web-a2");
    let keys = &controller.get(&extension).await["properties"]["netwatch"]["keys"];
    assert_eq!(keys[0]["uses"], 1, "{keys}");
}
