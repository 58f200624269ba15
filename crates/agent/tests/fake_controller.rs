//! A stand-in for the controller, on `127.0.0.1:0`: the agent channel (bearer
//! token checked, each accepted WebSocket handed to the test to play the
//! controller's part) and the upload path (`PUT`, bodies handed to the test),
//! on one port as on the real controller. An agent under test runs in-process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::serve::ListenerExt;
use netwatch_agent::{AgentConfig, AgentError};
use netwatch_api::agent::{
    AgentCaptureState, AgentMessage, CHANNEL_PATH, CaptureReport, ControllerMessage, Hello, UPLOAD_PREFIX, Welcome,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The token the fake controller accepts.
pub const TOKEN: &str = "agent-test-token";
/// How long a test waits for anything the agent should do.
pub const WAIT: Duration = Duration::from_secs(15);
/// The VM the fake controller welcomes every agent as.
pub const VM_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1";

#[derive(Clone)]
struct Shared {
    connections: mpsc::UnboundedSender<Conn>,
    uploads: mpsc::UnboundedSender<Upload>,
    /// Channel connections turned away for a wrong token or while refusing.
    rejected: Arc<AtomicUsize>,
    /// Answer every channel connection 503.
    refuse: Arc<AtomicBool>,
    /// Answer this many PUTs 503 before taking one.
    fail_puts: Arc<AtomicUsize>,
    puts: Arc<AtomicUsize>,
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

/// One accepted upload.
#[derive(Debug)]
pub struct Upload {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
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
            puts: Arc::default(),
        };
        let app = Router::new()
            .route(CHANNEL_PATH, get(channel))
            .route(&format!("{UPLOAD_PREFIX}/{{*path}}"), put(upload))
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

    pub fn puts(&self) -> usize {
        self.shared.puts.load(Ordering::SeqCst)
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

async fn upload(State(shared): State<Shared>, Path(path): Path<String>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED;
    }
    shared.puts.fetch_add(1, Ordering::SeqCst);
    let failing = shared
        .fail_puts
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let _ = shared.uploads.send(Upload {
        path: format!("{UPLOAD_PREFIX}/{path}"),
        headers,
        body,
    });
    StatusCode::CREATED
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
    task: JoinHandle<Result<(), AgentError>>,
}

impl Agent {
    /// Starts `netwatch_agent::run` against `controller`, capturing on `interface`.
    pub fn start(controller: &FakeController, interface: &str) -> Self {
        Self::start_with(controller, |_| {}, interface)
    }

    pub fn start_with(controller: &FakeController, change: impl FnOnce(&mut AgentConfig), interface: &str) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
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
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let ended = tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("the agent stops within the wait");
        ended.unwrap().unwrap();
    }
}
