//! Live views of running captures (issue 18): a viewer's `GET …/live`
//! becomes one `LiveStart` per host, each host's agent streams its capture's
//! records to `POST {LIVE_PREFIX}/{stream}` (its frames: `api::agent::LiveFrame`),
//! and the viewer gets one pcapng stream: a section header at once, an
//! interface per host as its first frame comes (`host/interface`), its
//! packets, and every second each interface's counters (an ISB whose
//! `isb_ifdrop` is what this viewer lost: skipped by a lagging agent or
//! dropped here for a slow viewer).
//!
//! Nothing here waits for a viewer: each viewer has one bounded queue
//! ([`QUEUE`] frames) that the agents' bodies feed without waiting, so a
//! slow viewer loses packets from its view (counted, and said to it), never
//! slows an agent, another viewer, or a capture. A capture over many hosts is
//! merged in time order within [`REORDER`]: a packet waits that long for an
//! earlier one from another host (bounded: [`MAX_WAITING`] bytes).
//!
//! Views go through the replica that holds each agent's channel (agents
//! post to the server they are connected to): a host held by another replica
//! is left out of the view, which says so.

use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use netwatch_api::agent::{ControllerMessage, LiveHello, LiveStats};
use tokio::sync::mpsc;

use crate::hub::Hub;
use crate::merge::pcapng;

/// Frames a viewer's queue holds before the agents' frames are dropped for it.
pub const QUEUE: usize = 64;
/// How long a packet of a view over many hosts waits for earlier ones.
pub const REORDER: Duration = Duration::from_millis(300);
/// The most packet bytes a view over many hosts holds back for ordering.
const MAX_WAITING: usize = 32 << 20;
/// How often a view writes its interfaces' counters.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// How often a view writes its counters even when they did not change, so a
/// quiet capture's reader hears from it (clients time out a silent read).
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long a view waits for a host's first frame before it says it has none.
const HELLO_WAIT: Duration = Duration::from_secs(10);

/// What an agent's body brings to a viewer.
#[derive(Debug)]
pub enum LiveEvent {
    Hello {
        host: usize,
        hello: LiveHello,
    },
    /// Whole pcap records, in the hello's byte order.
    Records {
        host: usize,
        records: Bytes,
    },
    Stats {
        host: usize,
        stats: LiveStats,
    },
    /// The agent's body ended (the capture ended, or the agent left).
    Ended {
        host: usize,
        why: Option<String>,
    },
}

/// One host's stream of one view, as the agent's route finds it.
#[derive(Debug)]
pub struct Stream {
    /// The host whose agent may post it (lower case).
    pub vm_id: String,
    pub host: usize,
    pub tx: mpsc::Sender<LiveEvent>,
    /// Records dropped here because the viewer's queue was full.
    pub dropped: AtomicU64,
}

/// The streams viewers are waiting for, by id.
#[derive(Debug, Default)]
pub struct LiveHub {
    streams: Mutex<HashMap<String, Arc<Stream>>>,
}

impl LiveHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Stream>> {
        self.lock().get(id).cloned()
    }

    fn insert(&self, id: String, stream: Arc<Stream>) {
        self.lock().insert(id, stream);
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// Records in a frame of whole records.
pub fn count_records(records: &[u8], little: bool) -> u64 {
    let mut at = 0;
    let mut count = 0;
    while records.len() >= at + 16 {
        at += 16 + read_u32(records, at + 8, little) as usize;
        count += 1;
    }
    count
}

fn read_u32(bytes: &[u8], at: usize, little: bool) -> u32 {
    let word = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    if little {
        u32::from_le_bytes(word)
    } else {
        u32::from_be_bytes(word)
    }
}

/// A host of a view.
#[derive(Debug, Clone)]
pub struct ViewHost {
    pub vm_id: String,
    /// Its name in the view (`vm1`, `ss1_3`).
    pub name: String,
    /// The run of its capture ([`netwatch_api::agent::run_id`]).
    pub run: String,
    /// Why it is left out, when it is.
    pub absent: Option<String>,
}

/// One viewer's stream: registered streams, what it has written, what waits.
pub struct View {
    live: Arc<LiveHub>,
    hub: Hub,
    rx: mpsc::Receiver<LiveEvent>,
    streams: Vec<(String, Arc<Stream>)>,
    hosts: Vec<HostState>,
    /// Interfaces in the order their IDBs were written.
    interfaces: u32,
    waiting: BinaryHeap<Waiting>,
    waiting_bytes: usize,
    arrivals: u64,
    reorder: Duration,
    last_stats: Instant,
    last_forced: Instant,
    started: Instant,
    capture: String,
    ended: bool,
}

struct HostState {
    host: ViewHost,
    /// Its registered stream; `None` for a host left out.
    stream: Option<Arc<Stream>>,
    interface: Option<u32>,
    little: bool,
    ended: bool,
    said_missing: bool,
    /// Records shown to this viewer, and skipped by the agent.
    shown: u64,
    agent_dropped: u64,
    first_ts: Option<u64>,
    last_ts: u64,
    comment: Option<String>,
    stats_written: (u64, u64),
}

/// A packet held back for ordering.
struct Waiting {
    ts: u64,
    arrival: u64,
    received: Instant,
    interface: u32,
    orig_len: u32,
    data: Bytes,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        (self.ts, self.arrival) == (other.ts, other.arrival)
    }
}
impl Eq for Waiting {}
impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiting {
    // A min-heap on time, then arrival.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.ts, other.arrival).cmp(&(self.ts, self.arrival))
    }
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("capture", &self.capture)
            .field("hosts", &self.hosts.len())
            .field("waiting", &self.waiting.len())
            .finish_non_exhaustive()
    }
}

impl View {
    /// Registers a stream per host that can be reached here and asks its
    /// agent to send; the others are said missing in the view.
    pub async fn open(live: Arc<LiveHub>, hub: Hub, capture: String, hosts: Vec<ViewHost>) -> View {
        let (tx, rx) = mpsc::channel(QUEUE);
        let reorder = if hosts.len() > 1 { REORDER } else { Duration::ZERO };
        let mut streams = Vec::new();
        let mut states = Vec::new();
        for (index, mut host) in hosts.into_iter().enumerate() {
            if host.absent.is_none() && !hub.is_here(&host.vm_id) {
                host.absent = Some(if hub.is_connected(&host.vm_id).await {
                    "its agent is connected to another controller replica: live views go through the replica \
                     that holds the agent's channel"
                        .to_owned()
                } else {
                    "its agent is not connected".to_owned()
                });
            }
            let mut registered = None;
            if host.absent.is_none() {
                let id = crate::app::new_guid();
                let stream = Arc::new(Stream {
                    vm_id: host.vm_id.to_lowercase(),
                    host: index,
                    tx: tx.clone(),
                    dropped: AtomicU64::new(0),
                });
                live.insert(id.clone(), Arc::clone(&stream));
                let start = ControllerMessage::LiveStart {
                    stream: id.clone(),
                    capture_id: host.run.clone(),
                };
                hub.send(&host.vm_id, start).await;
                registered = Some(Arc::clone(&stream));
                streams.push((id, stream));
            }
            states.push(HostState {
                ended: host.absent.is_some(),
                comment: host.absent.clone(),
                host,
                stream: registered,
                interface: None,
                little: true,
                said_missing: false,
                shown: 0,
                agent_dropped: 0,
                first_ts: None,
                last_ts: 0,
                stats_written: (0, 0),
            });
        }
        drop(tx);
        View {
            live,
            hub,
            rx,
            streams,
            hosts: states,
            interfaces: 0,
            waiting: BinaryHeap::new(),
            waiting_bytes: 0,
            arrivals: 0,
            reorder,
            last_stats: Instant::now(),
            last_forced: Instant::now(),
            started: Instant::now(),
            capture,
            ended: false,
        }
    }

    /// The section header: written at once, so a reader has a file to open.
    pub fn section(&self) -> Vec<u8> {
        let comment = format!(
            "netwatch live view of packet capture {}: packets as the hosts capture them; a slow reader loses \
             packets from this view (each interface's statistics say how many), never from the stored files",
            self.capture
        );
        pcapng::section_header(&comment, &format!("netwatch {}", env!("CARGO_PKG_VERSION"))).unwrap_or_default()
    }

    /// The next bytes of the view; `None` once every host's stream ended.
    pub async fn next_bytes(&mut self) -> Option<Vec<u8>> {
        if self.ended {
            return None;
        }
        loop {
            let mut out = Vec::new();
            let wait = self.next_deadline();
            tokio::select! {
                event = self.rx.recv() => match event {
                    Some(event) => self.apply(event, &mut out),
                    None => self.end_all(),
                },
                () = tokio::time::sleep(wait) => {}
            }
            self.release(&mut out, false);
            self.say_missing(&mut out);
            if self.last_stats.elapsed() >= STATS_EVERY {
                self.last_stats = Instant::now();
                let force = self.last_forced.elapsed() >= KEEPALIVE;
                if force {
                    self.last_forced = Instant::now();
                }
                self.statistics(&mut out, force);
            }
            if self.hosts.iter().all(|host| host.ended) {
                self.release(&mut out, true);
                self.statistics(&mut out, true);
                self.ended = true;
                return Some(out);
            }
            if !out.is_empty() {
                return Some(out);
            }
        }
    }

    fn next_deadline(&self) -> Duration {
        let stats = STATS_EVERY.saturating_sub(self.last_stats.elapsed());
        match self.waiting.peek() {
            Some(first) => stats.min((first.received + self.reorder).saturating_duration_since(Instant::now())),
            None => stats,
        }
    }

    fn end_all(&mut self) {
        for host in &mut self.hosts {
            host.ended = true;
        }
    }

    fn apply(&mut self, event: LiveEvent, out: &mut Vec<u8>) {
        match event {
            LiveEvent::Hello { host, hello } => {
                let Some(state) = self.hosts.get_mut(host) else { return };
                if state.interface.is_some() {
                    return;
                }
                state.little = hello.little_endian;
                let name = format!("{}/{}", state.host.name, hello.interface);
                let description = format!("{} ({})", state.host.vm_id, hello.capture_id);
                if let Ok(options) = pcapng::interface_options(&name, &description, "", "Linux") {
                    pcapng::push_interface(out, hello.link_type, hello.snaplen, &options);
                }
                state.interface = Some(self.interfaces);
                self.interfaces += 1;
            }
            LiveEvent::Records { host, records } => self.records(host, &records, out),
            LiveEvent::Stats { host, stats } => {
                if let Some(state) = self.hosts.get_mut(host) {
                    state.agent_dropped = state.agent_dropped.max(stats.dropped);
                }
            }
            LiveEvent::Ended { host, why } => {
                if let Some(state) = self.hosts.get_mut(host) {
                    state.ended = true;
                    if state.comment.is_none() {
                        state.comment = why;
                    }
                }
            }
        }
    }

    fn records(&mut self, host: usize, records: &[u8], out: &mut Vec<u8>) {
        let Some(state) = self.hosts.get_mut(host) else { return };
        let Some(interface) = state.interface else { return };
        let little = state.little;
        let mut at = 0;
        while records.len() >= at + 16 {
            let ts =
                u64::from(read_u32(records, at, little)) * 1_000_000_000 + u64::from(read_u32(records, at + 4, little));
            let caplen = read_u32(records, at + 8, little) as usize;
            let orig_len = read_u32(records, at + 12, little);
            let Some(data) = records.get(at + 16..at + 16 + caplen) else {
                break;
            };
            at += 16 + caplen;
            state.shown += 1;
            state.first_ts.get_or_insert(ts);
            state.last_ts = state.last_ts.max(ts);
            if self.reorder.is_zero() {
                pcapng::push_packet(out, interface, ts, data, orig_len, 0);
            } else {
                self.arrivals += 1;
                self.waiting_bytes += data.len();
                self.waiting.push(Waiting {
                    ts,
                    arrival: self.arrivals,
                    received: Instant::now(),
                    interface,
                    orig_len,
                    data: Bytes::copy_from_slice(data),
                });
            }
        }
    }

    /// Writes the held packets whose wait is over (all of them when `all`,
    /// or while too many bytes wait), in time order.
    fn release(&mut self, out: &mut Vec<u8>, all: bool) {
        let now = Instant::now();
        while let Some(first) = self.waiting.peek() {
            let due = all || self.waiting_bytes > MAX_WAITING || first.received + self.reorder <= now;
            if !due {
                break;
            }
            let packet = self.waiting.pop().expect("peeked");
            self.waiting_bytes -= packet.data.len();
            pcapng::push_packet(out, packet.interface, packet.ts, &packet.data, packet.orig_len, 0);
        }
    }

    /// A host whose agent sent nothing within [`HELLO_WAIT`]: an interface
    /// is written for it anyway, with a statistics comment saying why.
    fn say_missing(&mut self, out: &mut Vec<u8>) {
        let late = self.started.elapsed() >= HELLO_WAIT;
        for state in &mut self.hosts {
            if state.interface.is_some() || state.said_missing || !(late || state.ended) {
                continue;
            }
            state.said_missing = true;
            let why = state.comment.clone().unwrap_or_else(|| {
                "its agent sent no packets: it is older than live views, or the capture is not running there".to_owned()
            });
            let name = format!("{}/-", state.host.name);
            if let Ok(options) = pcapng::interface_options(&name, &state.host.vm_id, "", "Linux") {
                pcapng::push_interface(out, 1, 262_144, &options);
            }
            let interface = self.interfaces;
            self.interfaces += 1;
            state.interface = Some(interface);
            let stats = pcapng::Statistics {
                comment: Some(&format!("{}: {why}", state.host.name)),
                ..pcapng::Statistics::default()
            };
            pcapng::push_statistics(out, interface, &stats);
            state.stats_written = (u64::MAX, u64::MAX);
        }
    }

    /// Each interface's counters, when they changed (or at the end).
    fn statistics(&mut self, out: &mut Vec<u8>, last: bool) {
        for state in &mut self.hosts {
            let (Some(interface), Some(stream)) = (state.interface, &state.stream) else {
                continue;
            };
            if state.stats_written == (u64::MAX, u64::MAX) {
                continue;
            }
            let dropped = state.agent_dropped + stream.dropped.load(Ordering::Relaxed);
            let now = (state.shown, dropped);
            if now == state.stats_written && !last {
                continue;
            }
            state.stats_written = now;
            let comment = (dropped > 0).then(|| {
                format!(
                    "{}: {dropped} packets were not shown in this view (it fell behind); the stored file has them",
                    state.host.name
                )
            });
            let comment = comment.or_else(|| state.comment.clone());
            let stats = pcapng::Statistics {
                span: state.first_ts.map(|first| (first, state.last_ts)),
                received: Some(state.shown + dropped),
                dropped: Some(dropped),
                comment: comment.as_deref(),
            };
            pcapng::push_statistics(out, interface, &stats);
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        for (id, stream) in self.streams.drain(..) {
            self.live.remove(&id);
            let hub = self.hub.clone();
            let vm = stream.vm_id.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    hub.send(&vm, ControllerMessage::LiveStop { stream: id }).await;
                });
            }
        }
    }
}
