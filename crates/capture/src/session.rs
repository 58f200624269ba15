//! One capture from start to stop: opens the packet socket with its filter and
//! ring, moves packets from the ring into pcap records, enforces the limits and
//! says why it stopped (DESIGN §3 "Limits", §6).
//!
//! The capture runs on the calling thread, blocking in `poll()` with a short
//! timeout; it never touches an async runtime (STYLE 25). Per packet it only reads
//! the ring header and appends one record to a buffer; each ring block becomes one
//! `write` (no per-packet syscall), and nothing is logged per packet.
//!
//! Invariants:
//! - no packet enters the ring before the filter is attached (the socket is bound,
//!   and so starts receiving, last);
//! - the byte limit is never exceeded: a record that would take the output past
//!   `max_bytes` stops the capture unwritten;
//! - a time or manual stop keeps every packet that arrived before the stop
//!   instant: the ring is drained for one block-retire period after it, and
//!   packets stamped later are left out.

use std::io::IoSlice;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netwatch_api::filter::CaptureFilter;
use serde::Serialize;

use crate::bpf::{self, CompileError};
use crate::output::{Output, OutputError, OutputSpec};
use crate::pcap::{self, LinkType, MAX_SNAPLEN, SLL2_HEADER_LEN};
use crate::sys::{self, PacketSocket, RingGeometry, RxRing, SocketKind, SysError, layout};

/// How often data written so far is forced to disk (`fdatasync`, on a thread
/// of its own: `output/syncer.rs`): what a power loss may cost, plus the time
/// the disk takes. A process crash loses nothing written (the page cache keeps it).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// How often the progress callback runs.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// The longest the loop sleeps in `poll()` before it looks at its stop flag again.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// Default ring block: 4 MiB holds ~20,000 small packets or any GSO packet
/// (64 KiB); the kernel wakes the capture thread once per block, and at high rates
/// fewer, fuller blocks measurably cost less CPU (BENCHMARKS.md).
pub const DEFAULT_BLOCK_SIZE: u32 = 4 << 20;
/// Default number of blocks: 32 MiB in all absorbs ~100 ms of a 300 MB/s flood
/// while the capture thread is not scheduled (tcpdump's 2 MiB default loses a
/// fifth of such a flood here, see BENCHMARKS.md). This is the capture's memory:
/// it does not grow with traffic.
pub const DEFAULT_BLOCK_COUNT: u32 = 8;
/// Default block retire timeout: a partly filled block reaches the file at most
/// this long after its first packet, which bounds what a `kill -9` or a crash can
/// lose (the block the kernel still holds) and the delay of a live view. At high
/// rates blocks fill before it expires, so it changes nothing there; 20 ms
/// measured no more CPU and no more loss than 100 ms on floods of 100-byte
/// (~800 kpps) and 1514-byte frames (BENCHMARKS.md, 2026-12-06). What it costs:
/// at light traffic every retired block holds few packets, so the ring absorbs
/// a stall of the capture thread of [`DEFAULT_BLOCK_COUNT`] × 20 ms = 160 ms
/// (the thread never waits for the disk: `output/syncer.rs`).
pub const DEFAULT_RETIRE: Duration = Duration::from_millis(DEFAULT_RETIRE_MS);
/// [`DEFAULT_RETIRE`] in milliseconds.
pub const DEFAULT_RETIRE_MS: u64 = 20;

/// Default nice value of the capture thread. A capture shares its CPU with the
/// traffic it records (the kernel's receive work runs wherever the packets arrive)
/// and falls behind only when the scheduler gives it too little of that CPU; at
/// nice 0, a 300 MB/s flood sharing the CPU lost 6–20 % here, at -10 nothing
/// (BENCHMARKS.md). The thread sleeps when there is nothing to write, so the
/// priority costs others CPU only in proportion to the traffic captured.
pub const DEFAULT_NICE: i32 = -10;

/// Which interface to capture on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    /// Every interface of the network namespace, in Linux "cooked" form.
    Any,
    /// One interface by name.
    Named(String),
}

impl Interface {
    pub fn parse(name: &str) -> Self {
        if name == "any" {
            Interface::Any
        } else {
            Interface::Named(name.to_owned())
        }
    }
}

impl std::fmt::Display for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Interface::Any => f.write_str("any"),
            Interface::Named(n) => f.write_str(n),
        }
    }
}

/// The ring's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per block: a power of two, at least one page.
    pub block_size: u32,
    /// Blocks in the ring (at least 2).
    pub block_count: u32,
    /// A partly filled block is handed over this long after its first packet.
    pub retire: Duration,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            block_size: DEFAULT_BLOCK_SIZE,
            block_count: DEFAULT_BLOCK_COUNT,
            retire: DEFAULT_RETIRE,
        }
    }
}

/// When a capture stops by itself. `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `totalBytesPerSession`: bytes of output, file headers included.
    pub max_bytes: Option<u64>,
    /// `timeLimitInSeconds` (or `sessionTimeLimitInSeconds` for a ring).
    pub time_limit: Option<Duration>,
    /// Packets written.
    pub max_packets: Option<u64>,
}

/// Everything a capture needs.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub interface: Interface,
    /// Azure's filters: a packet is kept when any matches; empty keeps all.
    pub filters: Vec<CaptureFilter>,
    /// `bytesToCapturePerPacket`: bytes kept of each packet, link header included;
    /// 0 (or anything above 262144) keeps whole packets.
    pub snaplen: u32,
    pub limits: Limits,
    pub output: OutputSpec,
    pub ring: RingConfig,
    /// Nice value for the capture thread ([`DEFAULT_NICE`]); `None` leaves it alone.
    /// Without the privilege to raise priority the capture runs at the one it has.
    pub nice: Option<i32>,
}

/// Why a capture stopped, as Azure's `stopReason` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StopReason {
    TimeExceeded,
    MaxBytesExceeded,
    PacketCountExceeded,
    ManualStop,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::TimeExceeded => "TimeExceeded",
            StopReason::MaxBytesExceeded => "MaxBytesExceeded",
            StopReason::PacketCountExceeded => "PacketCountExceeded",
            StopReason::ManualStop => "ManualStop",
        })
    }
}

/// Counters of a capture, reported as it runs and at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureStats {
    /// Packets the kernel's filter passed (written, dropped, or left in the ring at stop).
    pub packets_seen: u64,
    /// Packets written to the output.
    pub packets_captured: u64,
    /// Packet bytes written (after truncation), record headers not included.
    pub bytes_captured: u64,
    /// Packets the kernel dropped because the ring was full.
    pub kernel_drops: u64,
    /// Bytes of output written, file headers included.
    pub file_bytes: u64,
    /// Files created.
    pub files: u64,
    /// The ring's size in blocks.
    pub ring_blocks: u64,
    /// The most blocks that waited for the capture thread at once since the
    /// previous counters (the ring's fill: at `ring_blocks`, the kernel drops).
    pub ring_peak_blocks: u64,
}

/// Why a capture could not start. Nothing was captured.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("capturing needs root or the CAP_NET_RAW capability: {0}")]
    NoPermission(#[source] SysError),
    #[error("no interface named \"{0}\" in this network namespace (`ip link` lists them; `any` captures on all)")]
    NoSuchInterface(String),
    #[error("set up the packet socket")]
    Socket(#[source] SysError),
    #[error(transparent)]
    Filter(#[from] CompileError),
    #[error("set up a {mib} MiB capture ring (choose fewer or smaller blocks)")]
    Ring {
        mib: usize,
        #[source]
        source: SysError,
    },
    #[error("ring block size {0} is not a power of two of at least one page ({1} bytes)")]
    BlockSize(u32, usize),
    #[error("the ring needs at least 2 blocks, not {0}")]
    BlockCount(u32),
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// Why a running capture ended early. What was written before is kept.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("wait for packets")]
    Poll(#[source] SysError),
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// How a capture ended.
#[derive(Debug)]
pub struct CaptureOutcome {
    /// Why it stopped, or the error that ended it.
    pub result: Result<StopReason, CaptureError>,
    pub stats: CaptureStats,
    /// The files still on disk, oldest first (empty for standard output).
    pub files: Vec<PathBuf>,
    /// The last file's SHA-256, when [`Capture::digest_files`] was asked
    /// and the file could be read back.
    pub last_sha256: Option<[u8; 32]>,
}

/// A capture that is set up and receiving; [`Capture::run`] writes its packets.
#[derive(Debug)]
pub struct Capture {
    socket: PacketSocket,
    ring: RxRing,
    output: Output,
    encoder: Encoder,
    limits: Limits,
    retire: Duration,
    interface: Interface,
    nice: Option<i32>,
    kernel: sys::KernelStats,
    /// The most blocks taken in one go since the last [`Capture::stats`].
    ring_peak: u64,
}

impl Capture {
    /// Opens the socket, attaches the filter, maps the ring, creates the output and
    /// only then starts receiving.
    pub fn open(config: CaptureConfig) -> Result<Self, OpenError> {
        let page = sys::page_size();
        let ring = config.ring;
        if !ring.block_size.is_power_of_two() || (ring.block_size as usize) < page {
            return Err(OpenError::BlockSize(ring.block_size, page));
        }
        if ring.block_count < 2 {
            return Err(OpenError::BlockCount(ring.block_count));
        }
        // Loopback's packets pass the socket twice, going out and coming in:
        // as libpcap does, the outgoing copy is dropped (`loopback` is its index).
        let mut loopback = None;
        let (ifindex, kind, link) = match &config.interface {
            Interface::Any => {
                loopback = sys::interface_index("lo");
                (0, SocketKind::Dgram, LinkType::LinuxSll2)
            }
            Interface::Named(name) => {
                let index = sys::interface_index(name).ok_or_else(|| OpenError::NoSuchInterface(name.clone()))?;
                // Ask the kernel for the hardware type with a throwaway socket; Ethernet
                // and loopback carry Ethernet headers, anything else is captured cooked.
                let probe = open_socket(SocketKind::Dgram)?;
                let hatype = sys::interface_hardware_type(&probe, name).map_err(OpenError::Socket)?;
                if hatype == layout::ARPHRD_LOOPBACK {
                    loopback = Some(index);
                }
                if hatype == layout::ARPHRD_ETHER || hatype == layout::ARPHRD_LOOPBACK {
                    (index, SocketKind::Raw, LinkType::Ethernet)
                } else {
                    (index, SocketKind::Dgram, LinkType::LinuxSll2)
                }
            }
        };
        let snaplen = if config.snaplen == 0 {
            MAX_SNAPLEN
        } else {
            config.snaplen.min(MAX_SNAPLEN)
        };
        // The kernel truncates from where the socket's data starts: the Ethernet
        // header for SOCK_RAW, the network header for SOCK_DGRAM, where we add the
        // 20-byte SLL2 header ourselves. A filter returning 0 drops, hence the max(1).
        let (kernel_snap, file_snaplen) = match link {
            LinkType::Ethernet => (snaplen, snaplen),
            LinkType::LinuxSll2 => {
                let hdr = SLL2_LEN;
                (snaplen.saturating_sub(hdr).max(1), snaplen.max(hdr + 1))
            }
        };
        let program = bpf::compile(&config.filters, kernel_snap)?;

        let socket = open_socket(kind)?;
        socket.set_packet_version_v3().map_err(OpenError::Socket)?;
        socket.attach_filter(program.insns()).map_err(OpenError::Socket)?;
        let geometry = RingGeometry {
            block_size: ring.block_size,
            block_count: ring.block_count,
            frame_size: frame_size(ring.block_size),
            retire_ms: u32::try_from(ring.retire.as_millis()).unwrap_or(u32::MAX).max(1),
        };
        let rx = socket.map_rx_ring(geometry).map_err(|source| OpenError::Ring {
            mib: geometry.bytes() >> 20,
            source,
        })?;
        let output = Output::create(config.output, pcap::file_header(link, file_snaplen))?;
        socket.bind(ifindex).map_err(OpenError::Socket)?;
        tracing::info!(interface = %config.interface, filters = config.filters.len(), snaplen = file_snaplen,
            ring_mib = geometry.bytes() >> 20, "capture started");
        Ok(Self {
            socket,
            ring: rx,
            output,
            encoder: Encoder::new(link, file_snaplen, config.ring.block_size, loopback),
            limits: config.limits,
            retire: config.ring.retire,
            interface: config.interface,
            nice: config.nice,
            kernel: sys::KernelStats::default(),
            ring_peak: 0,
        })
    }

    /// The link type of the records written.
    pub fn link_type(&self) -> LinkType {
        self.encoder.link
    }

    /// The snap length in the file header.
    pub fn snaplen(&self) -> u32 {
        self.encoder.snaplen
    }

    /// Works out each file's SHA-256 as it is written, on the thread that
    /// syncs it (read back from the page cache a moment after it is
    /// written), for [`ClosedFile::sha256`](crate::ClosedFile) and
    /// [`CaptureOutcome::last_sha256`]: a file to be uploaded then need not be
    /// read once more for its digest. Files only; costs a core about 0.5 ms
    /// per MiB written.
    pub fn digest_files(&mut self) {
        self.output.digest_files();
    }

    /// Calls `callback` with each file of a ring (`OutputSpec::Ring`) as it
    /// closes and before older files are deleted: its path, sequence number
    /// and the counters of the files closed so far, on the capture's thread:
    /// it should be quick (a hard link, a small record). The last file, open
    /// when the capture ends, is not passed: it is the last of
    /// [`CaptureOutcome::files`].
    pub fn on_file_closed(&mut self, callback: impl FnMut(&crate::output::ClosedFile<'_>) + Send + 'static) {
        self.output
            .on_file_closed(crate::output::FileClosed(Box::new(callback)));
    }

    /// Captures until a limit is reached, `stop` becomes true, or an error. Calls
    /// `progress` about every [`PROGRESS_INTERVAL`].
    pub fn run(mut self, stop: &AtomicBool, progress: &mut dyn FnMut(&CaptureStats)) -> CaptureOutcome {
        if let Some(nice) = self.nice
            && let Err(error) = sys::set_thread_nice(nice)
        {
            tracing::info!(nice, %error, "capture runs at its inherited priority");
        }
        let result = self.capture(stop, progress);
        let result = match (result, self.output.sync()) {
            (Ok(_), Err(e)) => Err(CaptureError::Output(e)),
            (r, _) => r,
        };
        let stats = self.stats();
        match &result {
            Ok(reason) => tracing::info!(interface = %self.interface, %reason, packets = stats.packets_captured,
                drops = stats.kernel_drops, "capture stopped"),
            Err(error) => tracing::warn!(interface = %self.interface, error = %error, "capture failed"),
        }
        CaptureOutcome {
            result,
            stats,
            files: self.output.kept(),
            last_sha256: self.output.take_digest(),
        }
    }

    fn capture(
        &mut self,
        stop: &AtomicBool,
        progress: &mut dyn FnMut(&CaptureStats),
    ) -> Result<StopReason, CaptureError> {
        let start = Instant::now();
        let deadline = self.limits.time_limit.map(|d| start + d);
        // The same deadline on the packets' own clock: a packet stamped after it is
        // not kept, however late the loop notices the deadline.
        let time_cutoff = self
            .limits
            .time_limit
            .map(|d| wall_ns().saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
        let mut next_progress = start + PROGRESS_INTERVAL;
        let (reason, cutoff) = loop {
            if let Some(reason) = self.drain(time_cutoff)? {
                return Ok(reason);
            }
            if self.encoder.past_cutoff {
                return Ok(StopReason::TimeExceeded);
            }
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) {
                break (StopReason::ManualStop, wall_ns());
            }
            if let (Some(deadline), Some(cutoff)) = (deadline, time_cutoff)
                && now >= deadline
            {
                break (StopReason::TimeExceeded, cutoff);
            }
            if now >= next_progress {
                next_progress = now + PROGRESS_INTERVAL;
                progress(&self.stats());
            }
            // The file is synced off this thread; a failure there ends the capture.
            self.output.check_sync()?;
            let mut wait = POLL_SLICE.min(next_progress.saturating_duration_since(now));
            if let Some(d) = deadline {
                wait = wait.min(d.saturating_duration_since(now));
            }
            if self.ring.ready() {
                continue;
            }
            self.socket.wait_readable(wait).map_err(CaptureError::Poll)?;
        };
        // Packets that arrived before the stop may sit in a block the kernel has not
        // handed over yet; it will within one retire period.
        let until = Instant::now() + self.retire + Duration::from_millis(10);
        loop {
            if let Some(reason) = self.drain(Some(cutoff))? {
                return Ok(reason);
            }
            let now = Instant::now();
            if now >= until || self.encoder.past_cutoff {
                break;
            }
            self.socket.wait_readable(until - now).map_err(CaptureError::Poll)?;
        }
        Ok(reason)
    }

    /// Writes the blocks the kernel has handed over, at most one ring's worth, so
    /// that a flood cannot keep the loop from its stop flag and deadline. Returns a
    /// stop reason when a byte or packet limit was reached; stops early at a packet
    /// stamped after `cutoff`.
    fn drain(&mut self, cutoff: Option<u64>) -> Result<Option<StopReason>, CaptureError> {
        // The blocks ready when the loop comes round are the ring's fill.
        let mut taken = 0;
        for _ in 0..self.ring.block_count() {
            let Some(block) = self.ring.take_block() else { break };
            taken += 1;
            self.ring_peak = self.ring_peak.max(taken);
            let stop = self
                .encoder
                .block(block.bytes(), &mut self.output, &self.limits, cutoff)?;
            drop(block);
            if stop.is_some() || self.encoder.past_cutoff {
                return Ok(stop);
            }
        }
        Ok(None)
    }

    fn stats(&mut self) -> CaptureStats {
        // The kernel resets its counters on every read: keep the running sum.
        if let Ok(k) = self.socket.take_statistics() {
            self.kernel.packets += k.packets;
            self.kernel.drops += k.drops;
        }
        CaptureStats {
            packets_seen: self.kernel.packets,
            packets_captured: self.encoder.packets,
            bytes_captured: self.encoder.bytes,
            kernel_drops: self.kernel.drops,
            file_bytes: self.output.total_bytes(),
            files: self.output.files_created() as u64,
            ring_blocks: self.ring.block_count() as u64,
            ring_peak_blocks: std::mem::take(&mut self.ring_peak),
        }
    }
}

/// Whether this process may capture on `interface`: a packet socket opened
/// and closed, and the interface looked up. What a capture would fail with,
/// known before one is asked for (the agent says it as it starts).
pub fn check_can_capture(interface: &Interface) -> Result<(), OpenError> {
    drop(open_socket(SocketKind::Dgram)?);
    match interface {
        Interface::Any => Ok(()),
        Interface::Named(name) => sys::interface_index(name)
            .map(|_| ())
            .ok_or_else(|| OpenError::NoSuchInterface(name.clone())),
    }
}

fn open_socket(kind: SocketKind) -> Result<PacketSocket, OpenError> {
    PacketSocket::open(kind).map_err(|e| match e.errno() {
        Some(libc::EPERM) | Some(libc::EACCES) => OpenError::NoPermission(e),
        _ => OpenError::Socket(e),
    })
}

/// The kernel checks a V3 frame size even though V3 packs packets freely: a
/// multiple of 16, at least `TPACKET3_HDRLEN`, dividing the block. 2 KiB does.
fn frame_size(block_size: u32) -> u32 {
    let min = u32::try_from(layout::TPACKET3_HDRLEN).expect("header length is small");
    let f = 2048u32.max(min.next_power_of_two());
    f.min(block_size)
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Header lengths as the record arithmetic uses them.
const RECORD_LEN: u32 = 16;
const SLL2_LEN: u32 = 20;
const _: () = assert!(RECORD_LEN as usize == pcap::RECORD_HEADER_LEN && SLL2_LEN as usize == SLL2_HEADER_LEN);

/// Records are handed to the kernel in chunks of about this size: small enough
/// that the kernel's copy reads them from cache, large enough that syscalls are rare.
const WRITE_CHUNK: usize = 128 << 10;

/// A u32 of a ring header whose bounds were checked by the caller.
#[inline(always)]
fn le32(h: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

#[inline]
fn rd32(b: &[u8], at: usize) -> Option<u32> {
    let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_ne_bytes(w))
}

/// Turns ring blocks into pcap records.
#[derive(Debug)]
struct Encoder {
    link: LinkType,
    snaplen: u32,
    /// Record headers and small packets, copied; large packet data is not copied
    /// but written straight from the ring ([`Seg::Ring`]).
    buf: Vec<u8>,
    /// The pieces of the next write, in order, when it is not all in `buf`.
    segs: Vec<Seg>,
    /// Where the part of `buf` not yet in `segs` starts.
    run_start: usize,
    /// Bytes staged for the next write (in `buf` and in ring segments).
    pending: u64,
    packets: u64,
    bytes: u64,
    /// A packet stamped after the stop instant was seen: nothing later is wanted.
    past_cutoff: bool,
    /// The loopback interface's index when it is captured: its outgoing
    /// packets are skipped (each comes back in as an incoming one).
    loopback: Option<u32>,
}

impl Encoder {
    fn new(link: LinkType, snaplen: u32, block_size: u32, loopback: Option<u32>) -> Self {
        // A block's records never need more than the block plus the headers we add.
        let cap = (block_size as usize).min(WRITE_CHUNK) * 2;
        Self {
            link,
            snaplen,
            buf: Vec::with_capacity(cap),
            segs: Vec::with_capacity(MAX_SEGS),
            run_start: 0,
            pending: 0,
            packets: 0,
            bytes: 0,
            past_cutoff: false,
            loopback,
        }
    }

    /// Bytes that may be appended to the buffer before the slow path must look at
    /// a limit: the byte limit, the end of a ring file, or a full write chunk.
    fn room(&self, out: &Output, limits: &Limits) -> u64 {
        let pending = self.pending;
        let mut room = (WRITE_CHUNK as u64).saturating_sub(pending);
        if let Some(max) = limits.max_bytes {
            room = room.min(max.saturating_sub(out.total_bytes() + pending));
        }
        room.min(out.file_room().saturating_sub(pending))
    }

    /// Encodes one block's packets into records and writes them in chunks.
    fn block(
        &mut self,
        b: &[u8],
        out: &mut Output,
        limits: &Limits,
        cutoff: Option<u64>,
    ) -> Result<Option<StopReason>, OutputError> {
        let num = rd32(b, layout::BLOCK_NUM_PKTS).unwrap_or(0);
        let mut off = rd32(b, layout::BLOCK_FIRST_PKT).unwrap_or(0) as usize;
        if num > 0 && self.pending == 0 && out.aged() {
            // Everything counted so far is written (each block ends flushed).
            out.rotate(self.packets, self.bytes)?;
        }
        let mut room = self.room(out, limits);
        let mut stop = None;
        for _ in 0..num {
            // One bounds check for the fixed part of the ring header (through the
            // sockaddr_ll that follows it); fields are then read at fixed offsets.
            let Some(h) = b.get(off..off + layout::PKT_HEADER_SPAN) else {
                break;
            };
            let next = le32(h, layout::PKT_NEXT_OFFSET);
            if let Some(lo) = self.loopback
                && h[layout::SLL_PKTTYPE] == layout::PACKET_OUTGOING
                && le32(h, layout::SLL_IFINDEX) == lo
            {
                if next == 0 {
                    break;
                }
                off += next as usize;
                continue;
            }
            let sec = le32(h, layout::PKT_SEC);
            let nsec = le32(h, layout::PKT_NSEC);
            let caplen = le32(h, layout::PKT_SNAPLEN);
            let len = le32(h, layout::PKT_LEN);
            let status = le32(h, layout::PKT_STATUS);
            let mac = usize::from(u16::from_ne_bytes([h[layout::PKT_MAC], h[layout::PKT_MAC + 1]]));
            let Some(data) = b.get(off + mac..off + mac + caplen as usize) else {
                break;
            };
            if let Some(cutoff) = cutoff
                && u64::from(sec) * 1_000_000_000 + u64::from(nsec) > cutoff
            {
                self.past_cutoff = true;
                break;
            }
            let vlan =
                self.link == LinkType::Ethernet && status & layout::TP_STATUS_VLAN_VALID != 0 && data.len() >= 12;
            let extra = match (self.link, vlan) {
                (LinkType::LinuxSll2, _) => SLL2_LEN,
                (LinkType::Ethernet, true) => 4,
                (LinkType::Ethernet, false) => 0,
            };
            let stored = (caplen + extra).min(self.snaplen);
            let record = u64::from(RECORD_LEN + stored);
            if record > room {
                // Slow path: a limit, a ring file's end or a full chunk is near.
                if let Some(max) = limits.max_bytes
                    && out.total_bytes() + self.pending + record > max
                {
                    stop = Some(StopReason::MaxBytesExceeded);
                    break;
                }
                self.flush(b, out)?;
                if !out.fits(0, record) {
                    // Everything counted so far is written (flushed just above).
                    out.rotate(self.packets, self.bytes)?;
                }
                room = self.room(out, limits);
            }
            room = room.saturating_sub(record);
            self.pending += record;
            pcap::push_record_header(&mut self.buf, sec, nsec, stored, len + extra);
            let before = self.buf.len();
            match (self.link, vlan) {
                (LinkType::Ethernet, false) if data.len() >= ZERO_COPY_MIN => {
                    // Large packets go from the ring to the file without a copy here.
                    let start = off + mac;
                    self.push_ring(start..start + stored as usize);
                    if self.segs.len() >= MAX_SEGS {
                        self.flush(b, out)?;
                    }
                }
                (LinkType::Ethernet, false) => self.buf.extend_from_slice(data),
                (LinkType::Ethernet, true) => {
                    // The kernel moved the 802.1Q tag out of the frame into the ring
                    // header; put it back where it was, as libpcap does.
                    let tci = (le32(h, layout::PKT_VLAN_TCI) & 0xffff) as u16;
                    let tpid = if status & layout::TP_STATUS_VLAN_TPID_VALID != 0 {
                        u16::from_ne_bytes([h[layout::PKT_VLAN_TPID], h[layout::PKT_VLAN_TPID + 1]])
                    } else {
                        0x8100
                    };
                    self.buf.extend_from_slice(&data[..12]);
                    self.buf.extend_from_slice(&tpid.to_be_bytes());
                    self.buf.extend_from_slice(&tci.to_be_bytes());
                    self.buf.extend_from_slice(&data[12..]);
                }
                (LinkType::LinuxSll2, _) => {
                    self.buf.extend_from_slice(&sll2_header(h));
                    self.buf.extend_from_slice(data);
                }
            }
            if self.buf.len() > before {
                // Cut what the link header added beyond the snap length.
                self.buf.truncate(before + stored as usize);
            }
            self.packets += 1;
            self.bytes += u64::from(stored);
            if limits.max_packets.is_some_and(|max| self.packets >= max) {
                stop = Some(StopReason::PacketCountExceeded);
                break;
            }
            if next == 0 {
                break;
            }
            off += next as usize;
        }
        self.flush(b, out)?;
        Ok(stop)
    }

    /// Adds a piece of the ring block to the next write, after what `buf` holds.
    fn push_ring(&mut self, range: Range<usize>) {
        if self.buf.len() > self.run_start {
            self.segs.push(Seg::Buf(self.run_start..self.buf.len()));
            self.run_start = self.buf.len();
        }
        self.segs.push(Seg::Ring(range));
    }

    /// Writes everything staged, with one `writev` (`b` is the block that ring
    /// segments point into; it is still owned by user space).
    fn flush(&mut self, b: &[u8], out: &mut Output) -> Result<(), OutputError> {
        if self.segs.is_empty() {
            out.write(&self.buf)?;
        } else {
            if self.buf.len() > self.run_start {
                self.segs.push(Seg::Buf(self.run_start..self.buf.len()));
            }
            let mut slices: Vec<IoSlice<'_>> = self
                .segs
                .iter()
                .map(|s| match s {
                    Seg::Buf(r) => IoSlice::new(&self.buf[r.clone()]),
                    Seg::Ring(r) => IoSlice::new(&b[r.clone()]),
                })
                .collect();
            out.write_vectored(&mut slices)?;
            self.segs.clear();
        }
        self.buf.clear();
        self.run_start = 0;
        self.pending = 0;
        Ok(())
    }
}

/// A piece of the next write.
#[derive(Debug, Clone)]
enum Seg {
    /// Bytes of the encoder's buffer.
    Buf(Range<usize>),
    /// Bytes of the current ring block.
    Ring(Range<usize>),
}

/// Packets at least this long are written from the ring without a copy; shorter
/// ones are cheaper to copy than to give the kernel one more iovec.
const ZERO_COPY_MIN: usize = 512;
/// Pieces per `writev`, below the kernel's IOV_MAX (1024).
const MAX_SEGS: usize = 1000;

/// The LINKTYPE_LINUX_SLL2 pseudo-header of a cooked packet, from the
/// `sockaddr_ll` the kernel put after its ring header (`h`, bounds checked).
fn sll2_header(h: &[u8]) -> [u8; SLL2_HEADER_LEN] {
    let mut out = [0u8; SLL2_HEADER_LEN];
    // sll_protocol is already in network byte order.
    out[0..2].copy_from_slice(&h[layout::SLL_PROTOCOL..layout::SLL_PROTOCOL + 2]);
    out[4..8].copy_from_slice(&le32(h, layout::SLL_IFINDEX).to_be_bytes());
    let hatype = u16::from_ne_bytes([h[layout::SLL_HATYPE], h[layout::SLL_HATYPE + 1]]);
    out[8..10].copy_from_slice(&hatype.to_be_bytes());
    out[10] = h[layout::SLL_PKTTYPE];
    let halen = h[layout::SLL_HALEN].min(8);
    out[11] = halen;
    out[12..12 + usize::from(halen)].copy_from_slice(&h[layout::SLL_ADDR..layout::SLL_ADDR + usize::from(halen)]);
    out
}
