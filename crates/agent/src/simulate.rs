//! Simulated hosts for scale benchmarks: one process holds `count` channels,
//! each a fake VM (`{vm_name}-0000`, `-0001`, …) that speaks the real protocol
//! but captures nothing: a `Start` is answered at once with `Running`, a `Stop`
//! with `Stopped` (`ManualStop`). No threads, no files.
//!
//! Kept small per connection (a few KiB of buffers and the ids of its running
//! fake captures), and connection attempts are gated, so thousands of fake
//! hosts reconnecting at once do not overflow the controller's accept queue.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use netwatch_api::agent::{
    AgentCaptureState, AgentMessage, CaptureReport, ControllerMessage, HEARTBEAT_INTERVAL_MS, InterfaceInfo,
    ReportStats,
};
use netwatch_api::packet_capture::StopReason;
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::channel::{self, ChannelError, FailureLog, Identity, RECONNECT_CAP, RECONNECT_FIRST, Ws};
use crate::remote::{Backoff, Remote};
use crate::{AgentConfig, AgentError, host, now_ms};

/// Connection attempts (TCP, TLS, upgrade, hello) in flight at once.
const CONNECTING_AT_ONCE: usize = 64;
/// A fake host's read buffer: its messages are a few hundred bytes.
const READ_BUFFER: usize = 4 << 10;

/// Runs `count` simulated hosts against `config.server` until `shutdown`.
/// Setup errors are those of [`crate::run`]; `config.data_dir` and
/// `config.interface` are not used.
pub async fn run_simulated(
    config: AgentConfig,
    count: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let remote = Remote::new(&config)?;
    let interfaces = Arc::new(host::interfaces());
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracing::info!(server = %config.server, hosts = count, "simulated agents starting");
    for i in 0..count {
        let host = FakeHost {
            // With several replicas, host i starts on the i-th: spread evenly.
            remote: remote.starting_at(i),
            identity: Identity {
                vm_name: format!("{}-{i:04}", config.vm_name),
                resource_group: config.resource_group.clone(),
                location: config.location.clone(),
                host_id: Some(format!("simulated-{}-{i}", config.vm_name)),
                capture_interface: Some(config.interface.clone()),
                tags: config.tags.clone(),
                version: config.version.clone(),
            },
            interfaces: Arc::clone(&interfaces),
            gate: Arc::clone(&gate),
            running: HashMap::new(),
        };
        let span = tracing::debug_span!("simulated", vm = %host.identity.vm_name);
        tracker.spawn(host.run(cancel.clone()).instrument(span));
    }
    tracker.close();
    shutdown.await;
    cancel.cancel();
    tracker.wait().await;
    tracing::info!("simulated agents stopped");
    Ok(())
}

#[derive(Debug)]
struct FakeHost {
    remote: Remote,
    identity: Identity,
    interfaces: Arc<Vec<InterfaceInfo>>,
    gate: Arc<Semaphore>,
    /// Fake captures running, with their start time.
    running: HashMap<String, i64>,
}

impl FakeHost {
    async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_CAP);
        let mut failures = FailureLog::default();
        loop {
            let opened = tokio::select! {
                () = cancel.cancelled() => return,
                opened = self.open() => opened,
            };
            let error = match opened {
                Ok(ws) => {
                    backoff.reset();
                    failures.succeeded();
                    match self.session(ws, &cancel).await {
                        Ok(()) => return,
                        Err(error) => error,
                    }
                }
                Err(error) => error,
            };
            let delay = backoff.next_delay();
            if self.remote.servers() > 1 {
                self.remote.next_server();
            }
            failures.failed("simulated host has no channel", &error, delay);
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn open(&self) -> Result<Ws, ChannelError> {
        // The gate is never closed; were it, connecting unguarded is still correct.
        let _permit = self.gate.acquire().await.ok();
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_message_size(Some(1 << 20))
            .max_frame_size(Some(1 << 20));
        let mut ws = channel::connect(&self.remote, config).await?;
        let captures = self.running.iter().map(|(id, started)| running(id, *started)).collect();
        let hello = self.identity.hello(self.interfaces.to_vec(), captures, None);
        channel::handshake(&mut ws, &hello).await?;
        Ok(ws)
    }

    async fn session(&mut self, mut ws: Ws, cancel: &CancellationToken) -> Result<(), ChannelError> {
        let heartbeat = Duration::from_millis(HEARTBEAT_INTERVAL_MS);
        let mut last_sent = Instant::now();
        loop {
            let reply = tokio::select! {
                () = cancel.cancelled() => {
                    let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
                    return Ok(());
                }
                () = tokio::time::sleep_until(last_sent + heartbeat) => Some(AgentMessage::Heartbeat),
                received = channel::receive(&mut ws) => match received? {
                    Some(ControllerMessage::Start(start)) => {
                        let started = now_ms();
                        let fresh = !self.running.contains_key(&start.capture_id);
                        let started = *self.running.entry(start.capture_id.clone()).or_insert(started);
                        fresh.then(|| AgentMessage::Report(running(&start.capture_id, started)))
                    }
                    Some(ControllerMessage::Stop { capture_id }) => self
                        .running
                        .remove(&capture_id)
                        .map(|started| AgentMessage::Report(stopped(&capture_id, started))),
                    Some(ControllerMessage::Refused { message }) => return Err(ChannelError::Refused(message)),
                    // Simulated hosts neither upgrade, uninstall, record nor stream.
                    Some(
                        ControllerMessage::Welcome(_)
                        | ControllerMessage::Upgrade(_)
                        | ControllerMessage::Uninstall { .. }
                        | ControllerMessage::Recorder { .. }
                        | ControllerMessage::LiveStart { .. }
                        | ControllerMessage::LiveStop { .. },
                    )
                    | None => None,
                },
            };
            if let Some(message) = reply {
                channel::send(&mut ws, &message).await?;
                last_sent = Instant::now();
            }
        }
    }
}

fn running(id: &str, started_ms: i64) -> CaptureReport {
    CaptureReport {
        capture_id: id.to_owned(),
        state: AgentCaptureState::Running,
        started_ms: Some(started_ms),
        stop_reason: None,
        errors: vec![],
        message: None,
        stats: ReportStats::default(),
        upload: None,
        upload_progress: None,
    }
}

fn stopped(id: &str, started_ms: i64) -> CaptureReport {
    CaptureReport {
        state: AgentCaptureState::Stopped,
        stop_reason: Some(StopReason::ManualStop),
        ..running(id, started_ms)
    }
}
