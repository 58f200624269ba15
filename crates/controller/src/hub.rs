//! The agent hub (DESIGN §1, §6): the agents connected right now, each with the
//! sender of its channel, so the API pushes work to a host the moment it
//! exists; and the channel itself, whose reports [`crate::lifecycle`] turns
//! into capture state (the rules a report follows are there).
//!
//! One connection per VM: a new connection of the same VM replaces the old
//! one (its outbox closes, so its loop ends). Reports carry a capture's whole
//! state, so applying one twice is harmless.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use netwatch_api::agent::{
    AgentCaptureState, AgentMessage, CaptureReport, ControllerMessage, HEARTBEAT_INTERVAL_MS, Hello, RecorderStatus,
    Upgrade, UpgradeFailure, Welcome, run_id,
};
use netwatch_api::resource::{Location, ResourceGroupName, ResourceId, ResourceName};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent_builds::{self, ExtensionSettings};
use crate::app::AppState;
use crate::auth::AgentIdentity;
use crate::clock::now_ms;
use crate::lifecycle::{self, AGENT_LOST};
use crate::replicas::Bus;
use crate::store::ScaleSetKeyRecord;
use crate::store::{
    AgentCredentialRecord, Backend, CaptureStatus, EnrollmentRecord, REPLICA_ALIVE, Store, StoreError, VmRecord,
    WatcherRecord,
};

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the close frame sent at shutdown may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection silent this long is dead: three missed heartbeats.
const IDLE_TIMEOUT: Duration = Duration::from_millis(3 * HEARTBEAT_INTERVAL_MS);
/// How often a connection writes its VM's `last_seen` (at most; on the first
/// message after the interval): every sixth heartbeat. Each write is a commit
/// (an fsync on SQLite); at every heartbeat, 1,000 agents made 200 a second, and
/// creates queued behind them (BENCHMARKS.md, "Create → Running latency"). A
/// connected agent's `last_seen` is thus at most this old; the connection's
/// end writes the exact time it was last heard from.
const TOUCH_INTERVAL: Duration = Duration::from_millis(6 * HEARTBEAT_INTERVAL_MS);

/// The connected agents, by VM key (the lower-case VM resource id).
#[derive(Debug, Clone)]
pub struct Hub {
    agents: Arc<Mutex<HashMap<String, Connection>>>,
    /// This replica: a random id, and when it started.
    replica: Arc<str>,
    started_ms: i64,
    /// The store, when other replicas may hold agents' channels (PostgreSQL):
    /// work for those goes to them through it ([`crate::replicas`]).
    shared: Option<Store>,
    /// Cancelled when this replica drains ([`Hub::drain`]): it takes no new
    /// agent, its agents move to another replica.
    draining: CancellationToken,
    draining_ms: Arc<std::sync::atomic::AtomicI64>,
    /// Set while this replica's heartbeat finds the database out of reach.
    store_down: Arc<std::sync::atomic::AtomicBool>,
    next_id: Arc<AtomicU64>,
    /// Cancelled by [`Hub::shut_down`]: every channel ends, the sweep stops.
    closing: CancellationToken,
    /// The channels being served and the sweep: what writes to the store
    /// outside a request, so a shutdown can wait for their last writes.
    tasks: TaskTracker,
    /// Where the channels hand their reports to be applied in batches
    /// ([`submit_report`]); made with the first report.
    reports: Arc<Mutex<Option<mpsc::UnboundedSender<QueuedReport>>>>,
    /// Messages pushed to agents (`netwatch_pushes_total`).
    pushes: prometheus_client::metrics::counter::Counter,
}

/// Replicas seen since this time (ms) are alive ([`REPLICA_ALIVE`]).
fn alive_since() -> i64 {
    now_ms() - i64::try_from(REPLICA_ALIVE.as_millis()).unwrap_or(i64::MAX)
}

/// A report waiting to be applied, and where its result goes.
type QueuedReport = (String, CaptureReport, oneshot::Sender<Result<(), StoreError>>);

/// The most reports applied in one transaction.
const REPORT_BATCH: usize = 512;

#[derive(Debug)]
struct Connection {
    id: u64,
    outbox: mpsc::UnboundedSender<ControllerMessage>,
}

impl Hub {
    /// The hub of a new replica over `store`, counting its pushes in `pushes`.
    pub fn new(store: &Store, pushes: prometheus_client::metrics::counter::Counter) -> Self {
        Self {
            agents: Arc::default(),
            replica: crate::app::new_guid().into(),
            started_ms: now_ms(),
            shared: (store.backend() == Backend::Postgres).then(|| store.clone()),
            draining: CancellationToken::new(),
            draining_ms: Arc::default(),
            store_down: Arc::default(),
            next_id: Arc::default(),
            closing: CancellationToken::new(),
            tasks: TaskTracker::new(),
            reports: Arc::default(),
            pushes,
        }
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// When this replica started (ms since the epoch).
    pub fn started_ms(&self) -> i64 {
        self.started_ms
    }

    /// Drains this replica: no new agent channel is taken, every agent is
    /// asked to reconnect to another replica, and requests waiting for an
    /// operation answer with its monitor (any replica serves it).
    pub fn drain(&self, store: &Store) {
        self.draining_ms
            .compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed)
            .ok();
        self.draining.cancel();
        store.stop_waiting();
    }

    /// Whether this replica drains.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Since when this replica drains, if it does.
    pub fn draining_since(&self) -> Option<i64> {
        Some(self.draining_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// Whether the last heartbeat found the database out of reach.
    pub fn store_down(&self) -> bool {
        self.store_down.load(Ordering::Relaxed)
    }

    /// What the heartbeat found.
    pub(crate) fn set_store_down(&self, down: bool) {
        self.store_down.store(down, Ordering::Relaxed);
    }

    /// Cancelled once the hub shuts down.
    pub fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }

    /// Where tasks that write to the store until the shutdown are tracked.
    pub fn tracker(&self) -> TaskTracker {
        self.tasks.clone()
    }

    /// The VMs whose agents are connected here.
    pub fn vms(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Registers a connection of `vm_id`, replacing any other of the same VM.
    fn register(&self, vm_id: &str) -> (u64, mpsc::UnboundedReceiver<ControllerMessage>) {
        let (outbox, inbox) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let previous = self.lock().insert(vm_id.to_lowercase(), Connection { id, outbox });
        if previous.is_some() {
            tracing::info!(vm = vm_id, "agent reconnected; its previous connection is closed");
        }
        (id, inbox)
    }

    /// Forgets connection `id` of `vm_id`, unless a newer one replaced it.
    fn unregister(&self, vm_id: &str, id: u64) {
        let mut agents = self.lock();
        if agents.get(&vm_id.to_lowercase()).is_some_and(|c| c.id == id) {
            agents.remove(&vm_id.to_lowercase());
        }
    }

    /// Closes `vm_id`'s channel, here or on the replica that holds it (its
    /// outbox goes, so its loop ends); whether it had one.
    pub async fn disconnect(&self, vm_id: &str) -> bool {
        if self.disconnect_here(vm_id) {
            return true;
        }
        match self.replica_of(vm_id).await {
            Some((store, replica)) => {
                let message = Bus::Disconnect {
                    replica,
                    vm: vm_id.to_owned(),
                };
                crate::replicas::publish(&store, &message).await.is_ok()
            }
            None => false,
        }
    }

    /// Closes `vm_id`'s channel if this replica holds it; whether it did.
    pub fn disconnect_here(&self, vm_id: &str) -> bool {
        self.lock().remove(&vm_id.to_lowercase()).is_some()
    }

    /// The live replica other than this one that holds `vm_id`'s channel,
    /// with the store to reach it through.
    async fn replica_of(&self, vm_id: &str) -> Option<(Store, String)> {
        let store = self.shared.as_ref()?;
        match store.replica_of(vm_id, alive_since()).await {
            Ok(Some(replica)) if *replica != *self.replica => Some((store.clone(), replica)),
            Ok(_) => None,
            Err(err) => {
                tracing::warn!(vm = vm_id, error = %err, "cannot tell which replica holds the agent's channel");
                None
            }
        }
    }

    /// Whether connection `id` is still `vm_id`'s (no newer one replaced it).
    fn is_current(&self, vm_id: &str, id: u64) -> bool {
        self.lock().get(&vm_id.to_lowercase()).is_some_and(|c| c.id == id)
    }

    /// Pushes `message` to `vm_id`'s agent, connected here or to another
    /// replica; false when it is connected nowhere.
    pub async fn send(&self, vm_id: &str, message: ControllerMessage) -> bool {
        let Some(message) = self.send_here(vm_id, message) else {
            return true;
        };
        let Some((store, replica)) = self.replica_of(vm_id).await else {
            return false;
        };
        let push = Bus::Push {
            replica,
            vm: vm_id.to_owned(),
            message: Box::new(message),
        };
        // Counted where it reaches the agent ([`Hub::deliver`]), on that replica.
        match crate::replicas::publish(&store, &push).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(vm = vm_id, error = %err, "could not hand work to the replica that holds the agent: it gets it at its next hello");
                false
            }
        }
    }

    /// Pushes `message` to `vm_id`'s agent if it is connected here (work
    /// another replica handed over); whether it was.
    pub fn deliver(&self, vm_id: &str, message: ControllerMessage) -> bool {
        self.send_here(vm_id, message).is_none()
    }

    /// Pushes `message` to `vm_id`'s agent if connected here; the message
    /// back when it is not.
    fn send_here(&self, vm_id: &str, message: ControllerMessage) -> Option<ControllerMessage> {
        let unsent = match self.lock().get(&vm_id.to_lowercase()) {
            Some(connection) => connection.outbox.send(message).err().map(|unsent| unsent.0),
            None => Some(message),
        };
        if unsent.is_none() {
            self.pushes.inc();
        }
        unsent
    }

    /// Whether `vm_id`'s agent is connected to this replica.
    pub fn is_here(&self, vm_id: &str) -> bool {
        self.lock().contains_key(&vm_id.to_lowercase())
    }

    /// Whether `vm_id`'s agent is connected, here or to another live replica.
    pub async fn is_connected(&self, vm_id: &str) -> bool {
        self.lock().contains_key(&vm_id.to_lowercase()) || self.replica_of(vm_id).await.is_some()
    }

    /// The VMs (ids in lower case) whose agents are connected, here or on a
    /// live replica: one look at the store for a whole list.
    pub async fn connected_set(&self) -> std::collections::HashSet<String> {
        let mut connected: std::collections::HashSet<String> = self.lock().keys().cloned().collect();
        if let Some(store) = &self.shared {
            match store.connected_elsewhere(&self.replica, alive_since()).await {
                Ok(elsewhere) => connected.extend(elsewhere),
                Err(err) => tracing::warn!(error = %err, "cannot tell which agents other replicas hold"),
            }
        }
        connected
    }

    /// Whether any of `vm_ids`'s agents is connected, here or elsewhere.
    pub async fn any_connected(&self, vm_ids: &[&str]) -> bool {
        {
            let agents = self.lock();
            if vm_ids.iter().any(|vm| agents.contains_key(&vm.to_lowercase())) {
                return true;
            }
        }
        let Some(store) = &self.shared else {
            return false;
        };
        match store.connected_elsewhere(&self.replica, alive_since()).await {
            Ok(elsewhere) => vm_ids.iter().any(|vm| elsewhere.contains(&vm.to_lowercase())),
            Err(err) => {
                tracing::warn!(error = %err, "cannot tell which agents other replicas hold");
                false
            }
        }
    }

    /// How many agents are connected here.
    pub fn connected(&self) -> usize {
        self.lock().len()
    }

    /// Ends every agent channel (each records when its agent was last heard
    /// from) and the sweep of lost agents, and waits up to `grace` for them
    /// to finish; the store must stay open until then. Whether they all did.
    pub async fn shut_down(&self, grace: Duration) -> bool {
        self.closing.cancel();
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }

    /// Channels and sweeps not finished yet.
    pub fn unfinished(&self) -> usize {
        self.tasks.len()
    }

    /// The queue of reports to apply, its applier started with the first
    /// report; none once the hub is closing.
    fn report_queue(&self, state: &AppState) -> Option<mpsc::UnboundedSender<QueuedReport>> {
        if self.closing.is_cancelled() {
            return None;
        }
        let mut queue = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = queue.as_ref() {
            return Some(sender.clone());
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        self.tasks.spawn(apply_queued_reports(state.clone(), receiver));
        *queue = Some(sender.clone());
        Some(sender)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connection>> {
        // A panic while holding the lock leaves the map consistent (each
        // operation is one insert or remove), so a poisoned lock is still usable.
        self.agents.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ChannelError {
    #[error("the agent sent no hello within {0:?}")]
    NoHello(Duration),
    #[error("the agent's hello is not acceptable: {0}")]
    BadHello(String),
    #[error("the connection failed")]
    Socket(#[from] axum::Error),
    #[error("the state store failed")]
    Store(#[from] StoreError),
}

/// Serves one agent connection until it closes, is replaced, goes silent or
/// the controller shuts down. `identity` is who the bearer token says the
/// agent is.
pub async fn serve_agent(state: AppState, mut socket: WebSocket, identity: AgentIdentity) {
    // Counted from here, so a shutdown waits for this channel's last write;
    // a channel upgraded after the shutdown began ends at once.
    let _serving = state.hub.tasks.token();
    let closing = state.hub.closing.clone();
    if closing.is_cancelled() || state.hub.is_draining() {
        return;
    }
    let hello = tokio::select! {
        () = closing.cancelled() => return,
        hello = tokio::time::timeout(HELLO_TIMEOUT, next_message(&mut socket)) => hello,
    };
    let hello = match hello {
        Ok(Ok(Some(AgentMessage::Hello(hello)))) => Ok(hello),
        Ok(Ok(Some(_))) => Err(ChannelError::BadHello("the first message must be a hello".to_owned())),
        Ok(Ok(None)) => return,
        Ok(Err(err)) => Err(err),
        Err(_) => Err(ChannelError::NoHello(HELLO_TIMEOUT)),
    };
    let registered = match hello {
        Ok(hello) => register_vm(&state, &hello, &identity).await.map(|vm| (vm, hello)),
        Err(err) => Err(err),
    };
    let ((vm, credential), hello) = match registered {
        Ok(registered) => registered,
        Err(err) => {
            tracing::warn!(error = %err, "agent connection refused");
            let refused = ControllerMessage::Refused {
                message: err.to_string(),
            };
            // Best effort: the agent logs it and retries later.
            let _ = send(&mut socket, &refused).await;
            return;
        }
    };
    let (connection, inbox) = state.hub.register(&vm);
    // Other replicas learn where to push this agent's work before anything
    // is pushed to it here (the hello's reconciliation reads after this).
    let claimed = match &state.hub.shared {
        Some(store) => store.claim_vm(&vm, state.hub.replica()).await,
        None => Ok(()),
    };
    let mut heard_ms = now_ms();
    let ended = match claimed {
        Ok(()) => {
            tracing::info!(vm = %vm, agent = %hello.agent_version, "agent connected");
            run_connection(&state, &mut socket, (&vm, credential), hello, inbox, &mut heard_ms).await
        }
        Err(err) => Err(err.into()),
    };
    match ended {
        Ok(()) => tracing::info!(vm = %vm, "agent disconnected"),
        Err(err) => tracing::warn!(vm = %vm, error = %err, "agent connection ended"),
    }
    // `last_seen` is written only now and then while connected: record when
    // the agent was last heard from, unless a newer connection of it took
    // over (here, or on another replica).
    if state.hub.is_current(&vm, connection) {
        let recorded = match &state.hub.shared {
            Some(store) => store.release_vm(&vm, state.hub.replica(), heard_ms).await,
            None => state.store.touch_vm(&vm, heard_ms).await,
        };
        if let Err(err) = recorded {
            tracing::warn!(vm = %vm, error = %err, "could not record when the agent was last heard from");
        }
    }
    state.hub.unregister(&vm, connection);
}

async fn run_connection(
    state: &AppState,
    socket: &mut WebSocket,
    (vm, credential): (&str, Option<String>),
    hello: Hello,
    mut inbox: mpsc::UnboundedReceiver<ControllerMessage>,
    heard_ms: &mut i64,
) -> Result<(), ChannelError> {
    let welcome = Welcome {
        vm_id: vm.to_owned(),
        credential,
        upload_protocol: netwatch_api::agent::UPLOAD_PROTOCOL,
        handoff: state
            .config
            .handoff_socket
            .as_ref()
            .map(|path| path.display().to_string()),
    };
    send(socket, &ControllerMessage::Welcome(welcome)).await?;
    for report in &hello.captures {
        lifecycle::apply_report(state, vm, report).await?;
    }
    reconcile(state, vm, &hello).await?;
    let running = RunningAgent {
        version: &hello.agent_version,
        arch: hello.arch.as_deref(),
        failure: hello.upgrade_failure.as_ref(),
    };
    if let Some(upgrade) = upgrade_of(state, vm, &running).await {
        send(socket, &ControllerMessage::Upgrade(upgrade)).await?;
    }
    // The host's flight recorder; "none" only to a host that said it records
    // (older agents do not know the message).
    let recorder = crate::alerting::recorder_for(state, vm).await?;
    let records = match &recorder {
        Some(_) => true,
        None => state
            .store
            .recorder_status(vm)
            .await?
            .and_then(|row| serde_json::from_str::<RecorderStatus>(&row.status_json).ok())
            .is_some_and(|status| status.id.is_some()),
    };
    if records {
        send(socket, &ControllerMessage::Recorder { recorder }).await?;
    }
    let mut touched = Instant::now();
    loop {
        tokio::select! {
            // The controller stops: the connection ends between messages,
            // closed politely (the agent reconnects to the next controller).
            () = state.hub.closing.cancelled() => {
                close(socket, close_code::AWAY, "the controller is stopping").await;
                return Ok(());
            }
            // This replica drains: the agent moves to another one.
            () = state.hub.draining.cancelled() => {
                close(socket, close_code::RESTART, "this controller replica is draining: connect to another one").await;
                return Ok(());
            }
            outgoing = inbox.recv() => match outgoing {
                Some(message) => send(socket, &message).await?,
                // Replaced by a newer connection of the same VM.
                None => return Ok(()),
            },
            incoming = tokio::time::timeout(IDLE_TIMEOUT, next_message(socket)) => {
                let message = match incoming {
                    Err(_) => {
                        tracing::warn!(vm, "agent silent for {IDLE_TIMEOUT:?}; closing its connection");
                        return Ok(());
                    }
                    Ok(message) => message?,
                };
                let Some(message) = message else {
                    return Ok(());
                };
                *heard_ms = now_ms();
                match message {
                    AgentMessage::Report(report) => submit_report(state, vm, report).await?,
                    AgentMessage::Heartbeat => {}
                    AgentMessage::Hello(_) => tracing::warn!(vm, "agent said hello twice; ignored"),
                    AgentMessage::UpgradeFailed(failure) => record_upgrade_failure(state, vm, failure).await?,
                    AgentMessage::Recorder(status) => {
                        let json = serde_json::to_string(&status).expect("plain data");
                        state.store.put_recorder_status(vm, &json, now_ms()).await?;
                    }
                }
                if touched.elapsed() >= TOUCH_INTERVAL {
                    state.store.touch_vm(vm, *heard_ms).await?;
                    touched = Instant::now();
                }
            }
        }
    }
}

/// What the controller knows of an agent for its upgrade.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunningAgent<'a> {
    pub(crate) version: &'a str,
    pub(crate) arch: Option<&'a str>,
    pub(crate) failure: Option<&'a UpgradeFailure>,
}

/// The upgrade `vm`'s agent should make, if any ([`agent_builds::upgrade_for`]
/// with the extension's settings). An upgrade that failed on the host is
/// not asked for again until `vm extension set` is run again.
pub(crate) async fn upgrade_of(state: &AppState, vm: &str, agent: &RunningAgent<'_>) -> Option<Upgrade> {
    let arch = agent.arch?;
    let settings = match state.store.get_extension_settings(vm).await {
        Ok(settings) => settings
            .and_then(|json| serde_json::from_str::<ExtensionSettings>(&json).ok())
            .unwrap_or_default(),
        Err(err) => {
            tracing::warn!(vm, error = %err, "could not read the agent extension's settings: no upgrade offered now");
            return None;
        }
    };
    let builds = match state.config.agent_builds.list().await {
        Ok(builds) => builds.into_iter().map(|served| served.build).collect::<Vec<_>>(),
        Err(err) => {
            tracing::warn!(vm, error = %err, "no agent builds to offer");
            return None;
        }
    };
    let build = agent_builds::upgrade_for(&builds, agent.version, arch, &settings)?;
    if let Some(failure) = agent.failure
        && failure.version == build.version
        && failure.at_ms >= settings.set_ms
    {
        tracing::debug!(vm, to = %build.version, "the upgrade failed on the host before: not asked again");
        return None;
    }
    tracing::info!(vm, from = agent.version, to = %build.version, force = settings.force, "agent upgrade asked for");
    Some(Upgrade {
        build,
        force: settings.force,
    })
}

/// Keeps an upgrade failure among the agent's facts (`vm extension show`).
async fn record_upgrade_failure(state: &AppState, vm: &str, failure: UpgradeFailure) -> Result<(), StoreError> {
    tracing::warn!(vm, to = %failure.version, message = %failure.message, "agent upgrade failed on the host");
    let Some(record) = state.store.get_vm(vm).await? else {
        return Ok(());
    };
    let mut facts: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&record.agent_json).unwrap_or_default();
    facts.insert("upgradeFailure".to_owned(), json!(failure));
    state
        .store
        .set_vm_agent_json(vm, &serde_json::Value::Object(facts).to_string())
        .await?;
    Ok(())
}

/// Applies `report` of `vm`'s agent with the reports other channels hand in
/// at the same moment, in one transaction ([`lifecycle::apply_reports`]):
/// when a thousand hosts report at once, one commit, not a thousand. Waits
/// for its result, so a channel's reports are applied in the order it sent
/// them. Applied alone when the queue is gone (the hub is closing).
async fn submit_report(state: &AppState, vm: &str, report: CaptureReport) -> Result<(), StoreError> {
    state.metrics.reports.inc();
    if let Some(queue) = state.hub.report_queue(state) {
        let (reply, result) = oneshot::channel();
        if queue.send((vm.to_owned(), report.clone(), reply)).is_ok()
            && let Ok(result) = result.await
        {
            return result;
        }
    }
    lifecycle::apply_report(state, vm, &report).await
}

/// Applies queued reports until the hub closes: whatever has queued up
/// while the last batch was applied (at most [`REPORT_BATCH`]) goes in the
/// next, so batches grow with the load and a lone report waits for nothing.
async fn apply_queued_reports(state: AppState, mut queue: mpsc::UnboundedReceiver<QueuedReport>) {
    loop {
        let first = tokio::select! {
            () = state.hub.closing.cancelled() => return,
            next = queue.recv() => match next {
                Some(next) => next,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < REPORT_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (reports, replies): (Vec<(String, CaptureReport)>, Vec<_>) = batch
            .into_iter()
            .map(|(vm, report, reply)| ((vm, report), reply))
            .unzip();
        let started = Instant::now();
        let results = lifecycle::apply_reports(&state, &reports).await;
        state.metrics.store_batch.observe(started.elapsed().as_secs_f64());
        for (reply, result) in replies.into_iter().zip(results) {
            // A channel that ended meanwhile no longer waits.
            let _ = reply.send(result);
        }
    }
}

/// The next message, skipping control frames; `None` once the socket closed.
/// A frame that is not a message is logged and skipped: one bad frame must not
/// cost a host its channel.
async fn next_message(socket: &mut WebSocket) -> Result<Option<AgentMessage>, ChannelError> {
    loop {
        let Some(frame) = socket.recv().await else {
            return Ok(None);
        };
        let text = match frame? {
            Message::Text(text) => text,
            Message::Close(_) => return Ok(None),
            Message::Binary(_) | Message::Ping(_) | Message::Pong(_) => continue,
        };
        match serde_json::from_str(text.as_str()) {
            Ok(message) => return Ok(Some(message)),
            Err(err) => tracing::warn!(error = %err, "agent sent a message that is not one; skipped"),
        }
    }
}

/// Closes the channel politely (best effort, [`CLOSE_TIMEOUT`] at most).
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

async fn send(socket: &mut WebSocket, message: &ControllerMessage) -> Result<(), ChannelError> {
    let text = serde_json::to_string(message).expect("controller messages always serialize");
    socket.send(Message::Text(text.into())).await?;
    Ok(())
}

/// Checks the hello and registers (or refreshes) the host as a VM; its id,
/// and the agent's new credential when it enrolled with a one-time token or
/// joined a scale set with its key. The host's location gets its network
/// watcher if it has none.
///
/// Which VM the host is: an enrollment's VM and location; a scale set's next
/// instance (or the one the host had: the hello's `hostId` says which host it
/// is), in the scale set's location; the credential's VM (a hello naming
/// another plain VM is refused); with a shared token, the hello's.
async fn register_vm(
    state: &AppState,
    hello: &Hello,
    identity: &AgentIdentity,
) -> Result<(String, Option<String>), ChannelError> {
    let bad = |err: netwatch_api::resource::ResourceError| ChannelError::BadHello(err.to_string());
    // Checked before anything is written: joining a scale set spends a use
    // of its key and an instance id.
    if let Some((name, _)) = hello
        .tags
        .iter()
        .find(|(name, value)| name.is_empty() || name.len() > 512 || value.len() > 256)
    {
        return Err(ChannelError::BadHello(format!(
            "tag {name:?} is not one: tag names are 1 to 512 characters, values at most 256"
        )));
    }
    let subscription = &state.config.subscription;
    let (id, location) = match identity {
        AgentIdentity::Enrollment(enrollment) => {
            let id = ResourceId::parse("vmId", &enrollment.vm_id).map_err(bad)?;
            let location = Location::parse("location", &enrollment.location).map_err(bad)?;
            if !id.name().as_str().eq_ignore_ascii_case(&hello.vm_name) {
                tracing::info!(vm = %id, hello = %hello.vm_name, "enrolled host registers as its enrollment's VM");
            }
            (
                ResourceId::virtual_machine(subscription, id.resource_group(), id.name()),
                location,
            )
        }
        AgentIdentity::ScaleSetKey(key) => join_scale_set(state, hello, key).await?,
        AgentIdentity::Credential { vm_id } if lifecycle::fleet::instance_of(vm_id).is_some() => {
            // A scale set's instance: who it is comes from its credential.
            let id = ResourceId::parse("vmId", vm_id).map_err(bad)?;
            let set = id.parent().map(|set| set.to_string()).unwrap_or_default();
            let Some(set) = state.store.get_scale_set(&set).await? else {
                return Err(ChannelError::BadHello(format!(
                    "scale set {set} of this host is gone: join it again (`netwatch vmss extension set`)"
                )));
            };
            (id, Location::parse("location", &set.location).map_err(bad)?)
        }
        AgentIdentity::Credential { .. } | AgentIdentity::Shared => {
            let group = ResourceGroupName::parse("resourceGroup", &hello.resource_group).map_err(bad)?;
            let name = ResourceName::parse("vmName", &hello.vm_name).map_err(bad)?;
            let location = Location::parse("location", &hello.location).map_err(bad)?;
            (ResourceId::virtual_machine(subscription, &group, &name), location)
        }
    };
    if let AgentIdentity::Credential { vm_id } = identity {
        let said = id.to_string();
        if !said.eq_ignore_ascii_case(vm_id) {
            return Err(ChannelError::BadHello(format!(
                "this agent's credential is for {vm_id}, not {said}: an agent speaks for its own VM only"
            )));
        }
    }
    if !state.config.locations.iter().any(|known| known.name == location) {
        let known: Vec<&str> = state.config.locations.iter().map(|l| l.name.as_str()).collect();
        return Err(ChannelError::BadHello(format!(
            "location {location:?} is not served by this controller: use one of {}",
            known.join(", ")
        )));
    }
    let id = id.to_string();
    let now = now_ms();
    let facts = json!({
        "hostname": hello.hostname,
        "agentVersion": hello.agent_version,
        "interfaces": hello.interfaces,
        "captureInterface": hello.capture_interface,
        "arch": hello.arch,
        "upgradeFailure": hello.upgrade_failure,
        "connectedMs": now,
    });
    let record = VmRecord {
        id: id.clone(),
        subscription: state.config.subscription.to_string(),
        location: location.to_string(),
        agent_json: facts.to_string(),
        last_seen_ms: Some(now),
        created_ms: now,
        tags_json: json!(hello.tags).to_string(),
    };
    state.store.upsert_vm(&record).await?;
    // Azure enables Network Watcher in a region as soon as something is there
    // (az's capture commands look the watcher up before they create): so does
    // the first host of a location, unless that location has a watcher already.
    let watchers = state.store.list_watchers(subscription.as_str()).await?;
    if !watchers.iter().any(|watcher| watcher.location == location.as_str()) {
        let watcher = WatcherRecord {
            id: ResourceId::network_watcher_for(subscription, &location).to_string(),
            subscription: subscription.to_string(),
            location: location.to_string(),
            created_ms: now,
        };
        state.store.ensure_watcher(&watcher).await?;
        tracing::info!(watcher = %watcher.id, "network watcher enabled for the location of a new host");
    }
    let credential = match identity {
        AgentIdentity::Enrollment(enrollment) => Some(redeem(state, enrollment, &id).await?),
        AgentIdentity::ScaleSetKey(_) => Some(new_credential(state, &id).await?),
        AgentIdentity::Credential { .. } | AgentIdentity::Shared => None,
    };
    // A scale set's host joins the captures of its scale set that run, and
    // any host the captures whose selector chooses it.
    let record = state.store.get_vm(&id).await?.unwrap_or(record);
    if let Some((set, instance)) = lifecycle::fleet::instance_of(&id) {
        lifecycle::fleet::join(state, &set.to_string(), instance, &record).await?;
    }
    lifecycle::fleet::join_selected(state, &record).await?;
    Ok((id, credential))
}

/// The longest `hostId` a hello may carry.
const MAX_HOST_ID: usize = 128;

/// Joins the host saying `hello` to the scale set of `key`: its instance id
/// (the one it had, or the next) and the scale set's location.
async fn join_scale_set(
    state: &AppState,
    hello: &Hello,
    key: &ScaleSetKeyRecord,
) -> Result<(ResourceId, Location), ChannelError> {
    let bad = |err: netwatch_api::resource::ResourceError| ChannelError::BadHello(err.to_string());
    let Some(set) = state.store.get_scale_set(&key.scale_set_key).await? else {
        return Err(ChannelError::BadHello(
            "the scale set of this enrollment key is gone: run `netwatch vmss extension set` again".to_owned(),
        ));
    };
    let host = hello.host_id.as_deref().unwrap_or_default();
    if host.is_empty() || host.len() > MAX_HOST_ID || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ChannelError::BadHello(
            "this agent says no hostId (letters, digits and '-', at most 128): upgrade it to join a scale set"
                .to_owned(),
        ));
    }
    let set_id = ResourceId::parse("scaleSetId", &set.id).map_err(bad)?;
    let joined = state
        .store
        .join_scale_set(&set.id, &host.to_lowercase(), &key.digest, now_ms())
        .await?;
    let Some(joined) = joined else {
        return Err(ChannelError::BadHello(
            "this scale-set enrollment key has been used by as many hosts as it was made for (or was revoked \
             or expired meanwhile): run `netwatch vmss extension set` for a new one"
                .to_owned(),
        ));
    };
    let id = ResourceId::scale_set_vm(
        set_id.subscription(),
        set_id.resource_group(),
        set_id.name(),
        joined.instance,
    );
    tracing::info!(vm = %id, new = joined.new, "host joined scale set {}", set_id.name());
    Ok((id, Location::parse("location", &set.location).map_err(bad)?))
}

/// A fresh credential for `vm`'s agent, and its record (the digest only).
fn make_credential(vm: &str) -> Result<(String, AgentCredentialRecord), ChannelError> {
    let token = crate::auth::new_token().map_err(|err| ChannelError::BadHello(format!("make a credential: {err}")))?;
    let record = AgentCredentialRecord {
        digest: crate::auth::digest(&token),
        vm_id: vm.to_owned(),
        created_ms: now_ms(),
        revoked_ms: None,
    };
    Ok((token, record))
}

/// A new credential for `vm`'s agent (a host that joined a scale set).
async fn new_credential(state: &AppState, vm: &str) -> Result<String, ChannelError> {
    let (token, record) = make_credential(vm)?;
    state.store.insert_agent_credential(&record).await?;
    Ok(token)
}

/// Spends `enrollment` for a new credential of `vm`'s agent.
async fn redeem(state: &AppState, enrollment: &EnrollmentRecord, vm: &str) -> Result<String, ChannelError> {
    let (token, record) = make_credential(vm)?;
    if !state
        .store
        .redeem_enrollment(&enrollment.digest, &record, now_ms())
        .await?
    {
        return Err(ChannelError::BadHello(
            "this enrollment token was used already or has expired: run `netwatch vm extension set` again".to_owned(),
        ));
    }
    tracing::info!(vm, "host enrolled: its agent has a credential of its own");
    Ok(token)
}

/// After a hello: start what the host should run and does not, stop what
/// is being stopped, and mark what it lost (it restarted) as failed.
async fn reconcile(state: &AppState, vm: &str, hello: &Hello) -> Result<(), ChannelError> {
    let owned: HashSet<String> = hello
        .captures
        .iter()
        .filter(|report| report.state == AgentCaptureState::Running)
        .map(|report| report.capture_id.to_lowercase())
        .collect();
    // What the host runs is named by run (resource id and creation time).
    for record in state.store.captures_for_target(vm).await? {
        let owns = owned.contains(&run_id(&record.id, record.created_ms).to_lowercase());
        if record.status == CaptureStatus::Running && !owns {
            let message = "the agent restarted and no longer runs this capture";
            lifecycle::give_up(state, record, None, message).await?;
        } else {
            push_pending(state, vm, &record).await?;
        }
    }
    Ok(())
}

/// Pushes `vm`'s agent, connected here, what it should be doing and may not
/// have heard (pushes lost while it moved between replicas, or while this
/// replica could not hear the others): the captures not started yet, and
/// the stops in progress.
pub(crate) async fn repush(state: &AppState, vm: &str) -> Result<(), StoreError> {
    for record in state.store.captures_for_target(vm).await? {
        push_pending(state, vm, &record).await?;
    }
    Ok(())
}

/// [`repush`] for one capture of `vm`.
async fn push_pending(state: &AppState, vm: &str, record: &crate::store::CaptureRecord) -> Result<(), StoreError> {
    match record.status {
        CaptureStatus::NotStarted => match lifecycle::start_message(record) {
            Ok(start) => {
                state.hub.deliver(vm, ControllerMessage::Start(start));
            }
            Err(err) => tracing::error!(capture = %record.id, error = %err, "stored capture cannot be started"),
        },
        CaptureStatus::Running if state.store.stop_in_progress(&record.id).await? => {
            let stop = ControllerMessage::Stop {
                capture_id: run_id(&record.id, record.created_ms),
            };
            state.hub.deliver(vm, stop);
        }
        _ => {}
    }
    Ok(())
}

/// Default [`crate::app::ApiConfig::agent_lost_after`]: ten minutes, twenty
/// times the [`TOUCH_INTERVAL`] at which replicas record a connected agent.
pub const DEFAULT_AGENT_LOST_AFTER: Duration = Duration::from_secs(600);

/// Starts [`sweep_lost_agents`] every quarter of the timeout (at least each
/// second, at most each minute), until [`Hub::shut_down`]; errors are logged
/// and retried. The first sweep waits one whole timeout: while this
/// controller was down its agents could not be heard, and they get that long
/// to reconnect. So does the first after the database was out of reach
/// (the heartbeat found it so): nobody could record hearing an agent
/// meanwhile.
pub fn watch_lost_agents(state: &AppState) {
    let closing = state.hub.closing.clone();
    let state = state.clone();
    state.hub.tasks.clone().spawn(async move {
        closing
            .run_until_cancelled(async {
                tokio::time::sleep(state.config.agent_lost_after).await;
                let period = (state.config.agent_lost_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
                let mut ticks = tokio::time::interval(period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut store_up_since = Instant::now();
                loop {
                    ticks.tick().await;
                    if state.hub.store_down() {
                        store_up_since = Instant::now();
                        continue;
                    }
                    if store_up_since.elapsed() < state.config.agent_lost_after {
                        continue;
                    }
                    if let Err(err) = sweep_lost_agents(&state, now_ms()).await {
                        tracing::warn!(error = %err, "could not look for captures whose agent is lost; trying again");
                    }
                }
            })
            .await;
    });
}

/// Captures `NotStarted` or `Running` on a host whose agent is not connected
/// here and was last heard from more than `agent_lost_after` before `now_ms`
/// (or never, and the host registered before that) become `Error` with
/// `AgentStopped`, stop reason `AgentLost`; their operations in progress
/// fail. An agent connected to another replica is heard every
/// [`TOUCH_INTERVAL`], so replicas need a timeout well above that. How many
/// captures it marked.
pub async fn sweep_lost_agents(state: &AppState, now_ms: i64) -> Result<usize, StoreError> {
    let lost_after = i64::try_from(state.config.agent_lost_after.as_millis()).unwrap_or(i64::MAX);
    let mut marked = 0;
    for record in state
        .store
        .captures_of_silent_hosts(now_ms.saturating_sub(lost_after))
        .await?
    {
        if state.hub.is_connected(&record.target_id).await {
            continue;
        }
        let message = format!(
            "the agent of {} has not been heard from for more than {} s: its capture is given up \
             (files it closed upload when it is back)",
            record.target_id,
            state.config.agent_lost_after.as_secs()
        );
        if lifecycle::give_up(state, record, Some(AGENT_LOST), &message).await? {
            marked += 1;
        }
    }
    Ok(marked)
}
