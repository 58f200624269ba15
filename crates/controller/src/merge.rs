//! A capture's files from all its hosts as one pcapng file, merged in time order
//! while it streams out (issue 13, "Files"): the `…/packetCaptures/{name}/merged`
//! download. Not a route and not storage: [`merge`] takes byte streams in and
//! gives bytes out.
//!
//! Every host (a [`Source`]) stored its capture as classic pcap files, read in
//! order as one sequence of records (`pcap`). The output (`pcapng`) is one
//! section: its header naming the capture, one interface per source, the
//! sources' packets as Enhanced Packet Blocks in timestamp order with their
//! direction in `epb_flags` (`direction`), and one statistics block per source at
//! the end.
//!
//! - **Order**: a k-way merge on each source's next record (a binary heap). Equal
//!   timestamps go in the order mergecap gives them: of all inputs whose next
//!   packet has the earliest time, mergecap takes the *last* one (Wireshark's
//!   `merge_read_packet` scans the inputs in order and moves to each one whose
//!   time is not later than the best so far), so here the source with the
//!   highest index goes first. `mergecap -w out.pcapng` of the sources' files in
//!   order gives the same packets in the same order (tests/merge.rs checks it),
//!   as long as no two files of one source share a timestamp across their
//!   boundary (mergecap reads them side by side, this merge one after the other).
//! - **Memory** does not grow with the files: each source holds one chunk of
//!   its current file and at most one record copied out of it; the output is
//!   handed out in batches of about [`FLUSH_BYTES`]. Files are opened one at a
//!   time per source, when the previous one ends, and read once.
//! - **Failures stay with their source**: a file cut inside its last record
//!   ends there quietly (libpcap does the same; a crash leaves such files); a file
//!   that cannot be opened or read, a header that is not pcap, a link type other
//!   than the source's, a record longer than [`MAX_CAPLEN`] stop that source
//!   with a warning, its statistics block says why, and the others go on.
//! - **Streaming**: the section header is the first item, before any file is
//!   opened; the interface blocks come once every source's first file has been
//!   opened (concurrently), then packets.

mod direction;
mod pcap;
pub(crate) mod pcapng;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::io;
use std::net::IpAddr;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Stream, stream};

pub use netwatch_storage::ByteStream;
pub use pcap::{MAX_CAPLEN, SourceError};
pub use pcapng::MAX_OPTION_LEN;

use direction::{LINKTYPE_ETHERNET, Locals};
use pcap::Reader;

/// Opens one of a source's files for reading; called once, when the file
/// before it has been read to its end.
pub type FileOpener = Box<dyn FnOnce() -> BoxFuture<'static, io::Result<ByteStream>> + Send>;

/// Output is handed out in batches of at least this many bytes (the last one
/// excepted), and at most this plus one packet block: big enough that the
/// per-item cost of a stream (an HTTP body frame, a write) is small, small
/// enough to keep the first bytes of a large merge early and memory flat.
pub const FLUSH_BYTES: usize = 128 * 1024;

/// What the whole file is: the capture, written into the section header.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// The capture's name, as in its resource id.
    pub capture_name: String,
    /// The capture's id (its run id or resource id).
    pub capture_id: String,
    /// The capture's filters as text (e.g. their JSON).
    pub filters: String,
    /// The application named in `shb_userappl` (e.g. "netwatch 0.1.0").
    pub user_appl: String,
}

/// One host's capture: an interface of the output and its files.
pub struct Source {
    /// `if_name`: "host/iface", e.g. "web-3/eth0".
    pub if_name: String,
    /// `if_description`: the VM (instance) resource id.
    pub if_description: String,
    /// `if_filter`: the capture's filters as text.
    pub if_filter: String,
    /// `if_os`, e.g. "Linux".
    pub if_os: String,
    /// The host's interface MACs: an Ethernet frame from one went out, to one came in.
    pub local_macs: Vec<[u8; 6]>,
    /// The host's addresses: the direction of Ethernet frames whose MACs do not tell.
    pub local_addresses: Vec<IpAddr>,
    /// Packets the host captured (`isb_ifrecv`), when known.
    pub received: Option<u64>,
    /// Packets the kernel dropped (`isb_ifdrop`), when known.
    pub dropped: Option<u64>,
    /// The capture's files in order, opened one at a time.
    pub files: Vec<FileOpener>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("if_name", &self.if_name)
            .field("if_description", &self.if_description)
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

/// Why a merge produces nothing. It fails only before its first byte: once
/// started, problems with a source's files are told in that source's
/// statistics block instead.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A text (name, description, filters…) longer than a pcapng option holds.
    #[error("{option} is {len} bytes, more than a pcapng option holds ({MAX_OPTION_LEN})")]
    OptionTooLong { option: &'static str, len: usize },
    /// More sources than pcapng interface ids.
    #[error("{count} sources are more than pcapng interface ids")]
    TooManySources { count: usize },
}

/// Merges `sources` into one pcapng stream (see the module's documentation).
///
/// The stream's first item is the section header, or the [`MergeError`] that
/// keeps the merge from starting, and then nothing else.
pub fn merge(section: Section, sources: Vec<Source>) -> impl Stream<Item = Result<Bytes, MergeError>> + Send + 'static {
    stream::unfold(Some(Merger::new(section, sources)), |state| async move {
        match state? {
            Err(err) => Some((Err(err), None)),
            Ok(mut merger) => {
                let batch = merger.next_batch().await?;
                Some((Ok(batch), Some(Ok(merger))))
            }
        }
    })
}

/// A source as the merge keeps it.
struct Input {
    name: String,
    /// Its interface block's options, until the block is written.
    options: pcapng::Options,
    interface: u32,
    reader: Reader,
    /// The link type of its packets (fixed once the interface block is written).
    link_type: u16,
    locals: Locals,
    received: Option<u64>,
    dropped: Option<u64>,
    packets: u64,
    /// Earliest and latest packet timestamps.
    span: Option<(u64, u64)>,
}

impl Input {
    /// Appends the head record as a packet block; the hot path.
    #[inline]
    fn emit(&mut self, out: &mut Vec<u8>) {
        let Some((ts, data, orig_len)) = self.reader.head() else {
            return;
        };
        let flags = direction::direction(self.link_type, data, &self.locals);
        pcapng::push_packet(out, self.interface, ts, data, orig_len, flags);
        self.packets += 1;
        self.span = Some(match self.span {
            None => (ts, ts),
            Some((first, last)) => (first.min(ts), last.max(ts)),
        });
    }

    /// Logs why the source stopped early, if it did (once: when it stops).
    fn warn_if_stopped(&self) {
        if let Some(comment) = self.comment() {
            tracing::warn!(source = %self.name, "merge: {comment}");
        }
    }

    /// The statistics block's comment: why the packets end early, with causes.
    fn comment(&self) -> Option<String> {
        let err = self.reader.stopped()?;
        let mut text = format!("stopped after {} packets: {err}", self.packets);
        let mut cause = std::error::Error::source(err);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        Some(text)
    }
}

/// A source's place in the heap: the earliest timestamp first and, among equal
/// ones, the highest interface (mergecap's order). Derived `Ord` compares the
/// fields in order; the heap keeps the greatest on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Next {
    ts: Reverse<u64>,
    interface: u32,
}

enum Phase {
    /// Nothing sent yet: the section header goes out.
    Section(Vec<u8>),
    /// First files to open, then interface blocks.
    Interfaces,
    Packets,
    Done,
}

struct Merger {
    phase: Phase,
    inputs: Vec<Input>,
    heap: BinaryHeap<Next>,
    out: Vec<u8>,
}

/// Capacity of an output batch, enough for [`FLUSH_BYTES`] and the largest
/// packet block after it, so it never grows.
const BATCH_CAPACITY: usize = FLUSH_BYTES + pcapng::epb_len(MAX_CAPLEN as usize);

/// The link type written for a source without a readable file: it has no
/// packets, so any would do; Ethernet is what most of them are.
const NO_FILE_LINK_TYPE: u16 = LINKTYPE_ETHERNET;

impl Merger {
    fn new(section: Section, sources: Vec<Source>) -> Result<Self, MergeError> {
        if u32::try_from(sources.len()).is_err() {
            return Err(MergeError::TooManySources { count: sources.len() });
        }
        let comment = format!(
            "packet capture {} ({}), filters: {}",
            section.capture_name, section.capture_id, section.filters
        );
        let header = pcapng::section_header(&comment, &section.user_appl)?;
        let mut inputs = Vec::with_capacity(sources.len());
        for (source, interface) in sources.into_iter().zip(0u32..) {
            inputs.push(Input {
                options: pcapng::interface_options(
                    &source.if_name,
                    &source.if_description,
                    &source.if_filter,
                    &source.if_os,
                )?,
                locals: Locals::new(&source.local_macs, &source.local_addresses),
                reader: Reader::new(source.if_name.clone(), source.files),
                name: source.if_name,
                interface,
                link_type: NO_FILE_LINK_TYPE,
                received: source.received,
                dropped: source.dropped,
                packets: 0,
                span: None,
            });
        }
        Ok(Merger {
            phase: Phase::Section(header),
            heap: BinaryHeap::with_capacity(inputs.len()),
            inputs,
            out: Vec::new(),
        })
    }

    /// The next batch of output; `None` once everything was handed out.
    async fn next_batch(&mut self) -> Option<Bytes> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Section(header) => {
                    self.phase = Phase::Interfaces;
                    return Some(Bytes::from(header));
                }
                Phase::Interfaces => {
                    self.start().await;
                    self.phase = Phase::Packets;
                }
                Phase::Packets => {
                    if self.merge_some().await {
                        self.finish();
                    } else {
                        self.phase = Phase::Packets;
                    }
                }
                Phase::Done => return None,
            }
            if !self.out.is_empty() {
                // The output so far goes; what comes next gets a buffer that
                // never grows (none after the statistics blocks, the last).
                let next = match self.phase {
                    Phase::Done => Vec::new(),
                    _ => Vec::with_capacity(BATCH_CAPACITY),
                };
                return Some(Bytes::from(std::mem::replace(&mut self.out, next)));
            }
        }
    }

    /// Opens every source's first file and reads its first record, all at
    /// once (so many slow storage round trips overlap), then writes the
    /// interface blocks and fills the heap.
    async fn start(&mut self) {
        let firsts = futures_util::future::join_all(self.inputs.iter_mut().map(|input| input.reader.advance())).await;
        self.out.reserve(BATCH_CAPACITY);
        for (input, first) in self.inputs.iter_mut().zip(firsts) {
            let (link_type, snaplen) = match input.reader.link() {
                Some(link) => (link.link_type, link.snaplen),
                None => (NO_FILE_LINK_TYPE, 0),
            };
            input.link_type = link_type;
            pcapng::push_interface(&mut self.out, link_type, snaplen, &input.options);
            input.options = pcapng::Options::default();
            match first {
                Some(ts) => self.heap.push(Next {
                    ts: Reverse(ts),
                    interface: input.interface,
                }),
                None => input.warn_if_stopped(),
            }
        }
    }

    /// Merges packets into the output until a batch is full (false) or no
    /// source has any left (true).
    async fn merge_some(&mut self) -> bool {
        while self.out.len() < FLUSH_BYTES {
            let Some(mut top) = self.heap.peek_mut() else {
                return true;
            };
            let input = &mut self.inputs[top.interface as usize];
            input.emit(&mut self.out);
            if let Some(ts) = input.reader.advance_now() {
                // Replacing the top and letting `PeekMut` sift it down costs
                // one pass instead of a pop and a push.
                top.ts = Reverse(ts);
                continue;
            }
            let interface = PeekMut::pop(top).interface;
            match input.reader.advance().await {
                Some(ts) => self.heap.push(Next {
                    ts: Reverse(ts),
                    interface,
                }),
                None => input.warn_if_stopped(),
            }
        }
        false
    }

    /// Appends every source's statistics block.
    fn finish(&mut self) {
        for input in &self.inputs {
            let comment = input.comment();
            let stats = pcapng::Statistics {
                span: input.span,
                received: input.received,
                dropped: input.dropped,
                comment: comment.as_deref(),
            };
            pcapng::push_statistics(&mut self.out, input.interface, &stats);
        }
        tracing::debug!(
            sources = self.inputs.len(),
            packets = self.inputs.iter().map(|i| i.packets).sum::<u64>(),
            "merge done"
        );
    }
}
