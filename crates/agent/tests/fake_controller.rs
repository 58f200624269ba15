//! A stand-in for the controller, on `127.0.0.1:0`: the agent channel (bearer
//! token checked, each accepted WebSocket handed to the test to play the
//! controller's part) and the upload protocol (grants, part PUTs to a path on
//! this server with `Content-MD5` checked, commit; committed files handed to
//! the test), on one port as on the real controller. An agent under test runs
//! in-process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::serve::ListenerExt;
use base64::Engine as _;
use md5::Digest as _;
use netwatch_agent::{AgentConfig, AgentError};
use netwatch_api::agent::{
    AgentCaptureState, AgentMessage, CHANNEL_PATH, CaptureReport, ControllerMessage, Hello, PartGrant,
    UPLOADS_COMPLETE_PATH, UPLOADS_PATH, UploadComplete, UploadDone, UploadGrant, UploadRequest, Welcome,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The token the fake controller accepts.
pub const TOKEN: &str = "agent-test-token";
/// How long a test waits for anything the agent should do.
pub const WAIT: Duration = Duration::from_secs(15);
/// The VM the fake controller welcomes every agent as.
pub const VM_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1";
/// Where the fake controller takes parts.
const PARTS_PREFIX: &str = "/netwatch/v1/agent/fake-parts";

#[derive(Clone)]
struct Shared {
    connections: mpsc::UnboundedSender<Conn>,
    uploads: mpsc::UnboundedSender<Upload>,
    /// Channel connections turned away for a wrong token or while refusing.
    rejected: Arc<AtomicUsize>,
    /// Answer every channel connection 503.
    refuse: Arc<AtomicBool>,
    /// Answer this many part PUTs 503 before taking one.
    fail_puts: Arc<AtomicUsize>,
    /// Answer this many part PUTs 403 (an expired grant) before taking one.
    forbid_puts: Arc<AtomicUsize>,
    /// Answer this many part PUTs 400 `BadDigest` (damaged on the way).
    damage_puts: Arc<AtomicUsize>,
    /// Take this many more part PUTs, then answer 503 (an outage); `u64::MAX` for no limit.
    puts_left: Arc<AtomicU64>,
    /// Answer this many more part PUTs at once, then store each one that
    /// comes but hold its answer back until [`FakeController::release_puts`];
    /// `u64::MAX` for no hold.
    hold_after: Arc<AtomicU64>,
    /// Part PUTs being handled now, and the most there were at once.
    active: Arc<AtomicUsize>,
    max_active: Arc<AtomicUsize>,
    /// Part PUTs whose answer is held back now.
    held: Arc<AtomicUsize>,
    /// Answer grant requests 404 (no such capture): final.
    deny_grants: Arc<AtomicBool>,
    /// Part size of new uploads.
    part_size: Arc<AtomicU64>,
    puts: Arc<AtomicUsize>,
    grants: Arc<AtomicUsize>,
    /// Parts stored, by upload id and part number.
    parts: Arc<Mutex<HashMap<(String, u32), Bytes>>>,
    /// Part size of each upload.
    upload_sizes: Arc<Mutex<HashMap<String, u64>>>,
}

/// Waits until `check` holds, polling every 20 ms for at most [`WAIT`] (an
/// async `eventually!`: the agent runs on this test's runtime, so the wait must
/// not block the thread).
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running fake controller.
pub struct FakeController {
    pub url: String,
    shared: Shared,
    connections: mpsc::UnboundedReceiver<Conn>,
    uploads: mpsc::UnboundedReceiver<Upload>,
    server: JoinHandle<()>,
}

/// One committed file.
#[derive(Debug)]
pub struct Upload {
    pub capture_id: String,
    pub seq: u32,
    pub sha256: String,
    pub parts: usize,
    pub body: Vec<u8>,
}

impl FakeController {
    pub async fn start() -> Self {
        let (conn_tx, connections) = mpsc::unbounded_channel();
        let (upload_tx, uploads) = mpsc::unbounded_channel();
        let shared = Shared {
            connections: conn_tx,
            uploads: upload_tx,
            rejected: Arc::default(),
            refuse: Arc::default(),
            fail_puts: Arc::default(),
            forbid_puts: Arc::default(),
            damage_puts: Arc::default(),
            puts_left: Arc::new(AtomicU64::new(u64::MAX)),
            hold_after: Arc::new(AtomicU64::new(u64::MAX)),
            active: Arc::default(),
            max_active: Arc::default(),
            held: Arc::default(),
            deny_grants: Arc::default(),
            part_size: Arc::new(AtomicU64::new(1024 * 1024)),
            puts: Arc::default(),
            grants: Arc::default(),
            parts: Arc::default(),
            upload_sizes: Arc::default(),
        };
        let app = Router::new()
            .route(CHANNEL_PATH, get(channel))
            .route(UPLOADS_PATH, post(grant))
            .route(UPLOADS_COMPLETE_PATH, post(complete))
            .route(&format!("{PARTS_PREFIX}/{{upload}}/{{part}}"), put(part))
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Nagle off, as the real controller must have it: otherwise a Start sent
        // right after the Welcome waits for the agent's delayed ACK (~40 ms).
        let listener = listener.tap_io(|tcp| tcp.set_nodelay(true).unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            shared,
            connections,
            uploads,
            server,
        }
    }

    /// The next channel connection that passed the token check.
    pub async fn accept(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.connections.recv())
            .await
            .expect("the agent connects within the wait")
            .expect("the server runs")
    }

    /// The next upload taken.
    pub async fn upload(&mut self) -> Upload {
        tokio::time::timeout(WAIT, self.uploads.recv())
            .await
            .expect("the agent uploads within the wait")
            .expect("the server runs")
    }

    pub fn rejected(&self) -> usize {
        self.shared.rejected.load(Ordering::SeqCst)
    }

    pub fn refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    pub fn fail_puts(&self, count: usize) {
        self.shared.fail_puts.store(count, Ordering::SeqCst);
    }

    pub fn forbid_puts(&self, count: usize) {
        self.shared.forbid_puts.store(count, Ordering::SeqCst);
    }

    pub fn damage_puts(&self, count: usize) {
        self.shared.damage_puts.store(count, Ordering::SeqCst);
    }

    /// Takes `count` more part PUTs, then answers 503 until [`Self::end_outage`].
    pub fn outage_after(&self, count: u64) {
        self.shared.puts_left.store(count, Ordering::SeqCst);
    }

    pub fn end_outage(&self) {
        self.shared.puts_left.store(u64::MAX, Ordering::SeqCst);
    }

    /// Answers `count` more part PUTs, then holds back the answers (the parts
    /// are stored) until [`Self::release_puts`].
    pub fn hold_puts_after(&self, count: u64) {
        self.shared.hold_after.store(count, Ordering::SeqCst);
    }

    /// Answers the part PUTs held back, and every one after.
    pub fn release_puts(&self) {
        self.shared.hold_after.store(u64::MAX, Ordering::SeqCst);
    }

    /// Part PUTs whose answers are held back now.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// The most part PUTs handled at once so far.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_active.load(Ordering::SeqCst)
    }

    pub fn deny_grants(&self, deny: bool) {
        self.shared.deny_grants.store(deny, Ordering::SeqCst);
    }

    pub fn set_part_size(&self, bytes: u64) {
        self.shared.part_size.store(bytes, Ordering::SeqCst);
    }

    /// Part PUTs answered, whatever the answer.
    pub fn puts(&self) -> usize {
        self.shared.puts.load(Ordering::SeqCst)
    }

    /// Parts stored.
    pub fn parts_stored(&self) -> usize {
        self.shared.parts.lock().unwrap().len()
    }

    pub fn grants(&self) -> usize {
        self.shared.grants.load(Ordering::SeqCst)
    }

    /// An agent config for this controller (data in `data_dir`, capturing on `interface`).
    pub fn agent_config(&self, data_dir: &std::path::Path, interface: &str) -> AgentConfig {
        AgentConfig {
            server: self.url.clone(),
            token: TOKEN.to_owned(),
            ca_file: None,
            vm_name: "vm1".to_owned(),
            resource_group: "rg1".to_owned(),
            location: "westus".to_owned(),
            data_dir: data_dir.to_owned(),
            interface: interface.to_owned(),
            spool_max_bytes: netwatch_agent::DEFAULT_SPOOL_MAX_BYTES,
            tags: Default::default(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            installed: None,
            metrics_listen: None,
        }
    }
}

impl Drop for FakeController {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn channel(State(shared): State<Shared>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    if !authorized(&headers) {
        shared.rejected.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if shared.refuse.load(Ordering::SeqCst) {
        shared.rejected.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    upgrade.on_upgrade(move |ws| async move {
        let _ = shared.connections.send(Conn { ws });
    })
}

async fn grant(State(shared): State<Shared>, headers: HeaderMap, Json(request): Json<UploadRequest>) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    shared.grants.fetch_add(1, Ordering::SeqCst);
    if shared.deny_grants.load(Ordering::SeqCst) {
        return (StatusCode::NOT_FOUND, "no such capture").into_response();
    }
    let upload_id = request
        .upload_id
        .clone()
        .unwrap_or_else(|| format!("up-{}-{}", shared.grants.load(Ordering::SeqCst), request.seq));
    let part_size = *shared
        .upload_sizes
        .lock()
        .unwrap()
        .entry(upload_id.clone())
        .or_insert_with(|| shared.part_size.load(Ordering::SeqCst));
    let count = u32::try_from(request.size.div_ceil(part_size).max(1)).unwrap();
    let parts = if request.parts.is_empty() {
        (1..=count).collect()
    } else {
        request.parts.clone()
    };
    let grant = UploadGrant {
        upload_id: upload_id.clone(),
        part_size,
        expires_ms: now_ms() + 60_000,
        parts: parts
            .into_iter()
            .map(|part| PartGrant {
                part,
                url: format!("{PARTS_PREFIX}/{upload_id}/{part}"),
                headers: vec![("x-fake-grant".into(), "1".into())],
                receipt: None,
            })
            .collect(),
    };
    Json(grant).into_response()
}

async fn part(
    State(shared): State<Shared>,
    Path((upload, part)): Path<(String, u32)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    shared.puts.fetch_add(1, Ordering::SeqCst);
    let _active = Counted::enter(&shared.active);
    shared
        .max_active
        .fetch_max(shared.active.load(Ordering::SeqCst), Ordering::SeqCst);
    let take = |counter: &AtomicUsize| {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    };
    if take(&shared.fail_puts) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if take(&shared.forbid_puts) {
        return (StatusCode::FORBIDDEN, "grant expired").into_response();
    }
    if take(&shared.damage_puts) {
        return (StatusCode::BAD_REQUEST, r#"{"error":{"code":"BadDigest"}}"#).into_response();
    }
    let within = shared
        .puts_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            if n == u64::MAX { Some(n) } else { n.checked_sub(1) }
        })
        .is_ok();
    if !within {
        return (StatusCode::SERVICE_UNAVAILABLE, "storage is down").into_response();
    }
    assert_eq!(
        headers.get("x-fake-grant").unwrap(),
        "1",
        "the grant's headers are sent"
    );
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/vnd.tcpdump.pcap"
    );
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
    if headers.get("content-md5").and_then(|v| v.to_str().ok()) != Some(md5.as_str()) {
        return (StatusCode::BAD_REQUEST, "Content-MD5 does not match").into_response();
    }
    shared.parts.lock().unwrap().insert((upload, part), body);
    let answer_now = shared
        .hold_after
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            if n == u64::MAX { Some(n) } else { n.checked_sub(1) }
        })
        .is_ok();
    if !answer_now {
        // A guard: the server may drop this handler when the agent goes away.
        let _held = Counted::enter(&shared.held);
        while shared.hold_after.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::ETAG, format!("\"e{part}\"").parse().unwrap());
    response
}

/// Counts one more while it lives.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(counter))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn complete(State(shared): State<Shared>, headers: HeaderMap, Json(request): Json<UploadComplete>) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut body = Vec::new();
    {
        let parts = shared.parts.lock().unwrap();
        for (i, receipt) in request.parts.iter().enumerate() {
            assert_eq!(
                receipt.part as usize,
                i + 1,
                "receipts in part order: {:?}",
                request.parts
            );
            assert_eq!(
                receipt.id,
                format!("\"e{}\"", receipt.part),
                "the part's ETag is its receipt"
            );
            let Some(bytes) = parts.get(&(request.upload_id.clone(), receipt.part)) else {
                return (StatusCode::BAD_REQUEST, "a part was never stored").into_response();
            };
            body.extend_from_slice(bytes);
        }
    }
    let size = body.len() as u64;
    let _ = shared.uploads.send(Upload {
        capture_id: request.capture_id.clone(),
        seq: request.seq,
        sha256: request.sha256.clone(),
        parts: request.parts.len(),
        body,
    });
    Json(UploadDone {
        storage_path: format!("https://acct1.blob.example/{}", request.seq),
        size,
    })
    .into_response()
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// One agent connection, played by the test.
pub struct Conn {
    ws: WebSocket,
}

impl Conn {
    /// The next message from the agent.
    pub async fn recv(&mut self) -> AgentMessage {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.recv())
                .await
                .expect("the agent says something within the wait")
                .expect("the agent keeps the channel open")
                .expect("the channel works");
            match frame {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("agent sent {text:?}, not an agent message: {e}"));
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("agent sent {other:?}, not a text message"),
            }
        }
    }

    pub async fn send(&mut self, message: &ControllerMessage) {
        let text = serde_json::to_string(message).unwrap();
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// Reads the hello and answers the welcome.
    pub async fn welcome(&mut self) -> Hello {
        let hello = match self.recv().await {
            AgentMessage::Hello(hello) => hello,
            other => panic!("first message is {other:?}, not a hello"),
        };
        self.welcome_with(None).await;
        hello
    }

    /// Answers a welcome handing out `credential`.
    pub async fn welcome_with(&mut self, credential: Option<&str>) {
        self.send(&ControllerMessage::Welcome(Welcome {
            vm_id: VM_ID.to_owned(),
            credential: credential.map(str::to_owned),
            upload_protocol: netwatch_api::agent::UPLOAD_PROTOCOL,
            handoff: None,
        }))
        .await;
    }

    /// Reports about `id` (others and heartbeats skipped) up to and including
    /// the first for which `done` holds.
    pub async fn reports_until(&mut self, id: &str, done: impl Fn(&CaptureReport) -> bool) -> Vec<CaptureReport> {
        let mut seen = vec![];
        loop {
            if let AgentMessage::Report(report) = self.recv().await
                && report.capture_id == id
            {
                let last = done(&report);
                seen.push(report);
                if last {
                    return seen;
                }
            }
        }
    }

    /// The next report about `id` whose state is `state`.
    pub async fn state(&mut self, id: &str, state: AgentCaptureState) -> CaptureReport {
        self.reports_until(id, |r| r.state == state).await.pop().unwrap()
    }
}

/// An agent running in this process.
pub struct Agent {
    pub data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<netwatch_agent::Exit, AgentError>>,
}

impl Agent {
    /// Starts `netwatch_agent::run` against `controller`, capturing on `interface`.
    pub fn start(controller: &FakeController, interface: &str) -> Self {
        Self::start_with(controller, |_| {}, interface)
    }

    pub fn start_with(controller: &FakeController, change: impl FnOnce(&mut AgentConfig), interface: &str) -> Self {
        Self::start_in(controller, tempfile::tempdir().unwrap(), change, interface)
    }

    /// Starts an agent on `data_dir` (an earlier agent's, to see it take up where that one stopped).
    pub fn start_in(
        controller: &FakeController,
        data_dir: tempfile::TempDir,
        change: impl FnOnce(&mut AgentConfig),
        interface: &str,
    ) -> Self {
        let mut config = controller.agent_config(data_dir.path(), interface);
        change(&mut config);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(netwatch_agent::run(config, async {
            let _ = rx.await;
        }));
        Self {
            data_dir,
            shutdown: Some(tx),
            task,
        }
    }

    /// Shuts the agent down and checks it ended well.
    pub async fn stop(self) {
        self.stop_keeping_data().await;
    }

    /// Shuts the agent down, checks it ended well, and hands back its data directory.
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let ended = tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("the agent stops within the wait");
        ended.unwrap().unwrap();
        self.data_dir
    }
}
