//! Live views (issue 18): a running capture's packets sent to the controller
//! as they are written, for a viewer (`packet-capture stream`, Wireshark).
//!
//! The view reads the capture's own file, behind the capture thread: the
//! capture never waits for a viewer and its file is never touched. A view
//! starts at the file's end (what was written before the viewer came is in
//! the stored file), follows the ring to its next file as files close, and
//! ends at the capture's last record. A view that falls more than
//! [`MAX_LAG`] behind the file (a slow network, a slow controller) skips
//! whole records to catch up and counts them ([`LiveStats::dropped`]): a
//! slow view loses packets in the view, never in the file. Its memory is one
//! read ([`READ_CHUNK`]) whatever the traffic.
//!
//! The body is [`LiveFrame`]s (`netwatch_api::agent`): a hello, records as
//! the file holds them, and counters every [`STATS_EVERY`].

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use netwatch_api::agent::{LiveFrame, LiveHello, LiveStats};
use netwatch_capture::output::ring_name;
use tokio_util::sync::CancellationToken;

use crate::spool::SpooledCapture;

/// How far (bytes) a view may fall behind the file before it skips records.
pub(crate) const MAX_LAG: u64 = 16 << 20;
/// The most read from the file at once, and so the view's memory.
const READ_CHUNK: usize = 512 << 10;
/// How long a view waits for the file to grow before it looks again: the
/// capture hands a ring block to the file every 20 ms at the latest.
const IDLE: Duration = Duration::from_millis(20);
/// How often counters go with the packets.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// pcap's file header, and a record's.
const FILE_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;
/// The longest record a file of the engine holds (snap length cap and headers).
const MAX_RECORD: u32 = 262_144 + 64;

/// Where a running capture's records are, for its views.
#[derive(Debug)]
pub(crate) struct LiveSource {
    capture_id: String,
    interface: String,
    /// The capture's file (a ring's first name); which one is being written
    /// is the journal's `seq`.
    file: PathBuf,
    continuous: bool,
    journal: Arc<Mutex<SpooledCapture>>,
    /// The capture thread ended: nothing more will be written.
    done: AtomicBool,
}

impl LiveSource {
    pub(crate) fn new(
        capture_id: String,
        interface: String,
        file: PathBuf,
        continuous: bool,
        journal: Arc<Mutex<SpooledCapture>>,
    ) -> Self {
        Self {
            capture_id,
            interface,
            file,
            continuous,
            journal,
            done: AtomicBool::new(false),
        }
    }

    /// The capture wrote its last record.
    pub(crate) fn finish(&self) {
        self.done.store(true, Ordering::Release);
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// The sequence number of the file being written.
    fn current_seq(&self) -> u32 {
        self.journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .seq
    }

    /// File `seq`'s path (the supervisor's `Plan::file_of`).
    fn path_of(&self, seq: u32) -> PathBuf {
        if self.continuous || seq > 0 {
            ring_name(&self.file, seq)
        } else {
            self.file.clone()
        }
    }
}

/// The byte order of a file, from its magic; `None` when it is not one of
/// the engine's (nanosecond pcap).
fn byte_order(header: &[u8]) -> Option<bool> {
    match header.get(..4)? {
        [0x4d, 0x3c, 0xb2, 0xa1] => Some(true),
        [0xa1, 0xb2, 0x3c, 0x4d] => Some(false),
        _ => None,
    }
}

fn u32_at(bytes: &[u8], at: usize, little: bool) -> u32 {
    let word = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    if little {
        u32::from_le_bytes(word)
    } else {
        u32::from_be_bytes(word)
    }
}

/// The file a view reads.
struct Reading {
    seq: u32,
    file: File,
    /// The next record starts here.
    offset: u64,
    little: bool,
}

/// One view's state, as its body stream goes.
pub(crate) struct View {
    source: Arc<LiveSource>,
    cancel: CancellationToken,
    reading: Option<Reading>,
    hello_sent: bool,
    stats: LiveStats,
    last_stats: Instant,
    finished: bool,
}

impl View {
    pub(crate) fn new(source: Arc<LiveSource>, cancel: CancellationToken) -> Self {
        Self {
            source,
            cancel,
            reading: None,
            hello_sent: false,
            stats: LiveStats::default(),
            last_stats: Instant::now(),
            finished: false,
        }
    }

    /// The body: frames until the capture ends or the view is cancelled.
    pub(crate) fn into_body(self) -> reqwest::Body {
        let stream = futures_util::stream::unfold(self, |mut view| async move {
            let frames = view.next_frames().await?;
            Some((Ok::<Bytes, std::io::Error>(Bytes::from(frames)), view))
        });
        reqwest::Body::wrap_stream(stream)
    }

    /// The next frames to send; `None` once the view is over.
    async fn next_frames(&mut self) -> Option<Vec<u8>> {
        if self.finished {
            return None;
        }
        loop {
            if self.cancel.is_cancelled() {
                return None;
            }
            let mut out = Vec::new();
            match self.read_some(&mut out) {
                Ok(Progress::Sent) => {
                    self.stats_if_due(&mut out, false);
                    return Some(out);
                }
                Ok(Progress::Ended) => {
                    self.stats_if_due(&mut out, true);
                    self.finished = true;
                    return Some(out);
                }
                Ok(Progress::Waiting) => {
                    // The hello goes at once, packets or not.
                    if self.stats_if_due(&mut out, false) || !out.is_empty() {
                        return Some(out);
                    }
                }
                Err(error) => {
                    tracing::info!(capture = %self.source.capture_id, error = %error,
                        "live view ended: the capture's file could not be read");
                    self.stats_if_due(&mut out, true);
                    self.finished = true;
                    return Some(out);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(IDLE) => {}
                () = self.cancel.cancelled() => return None,
            }
        }
    }

    /// Appends the counters when they are due (or `now`); whether it did.
    fn stats_if_due(&mut self, out: &mut Vec<u8>, now: bool) -> bool {
        if !now && self.last_stats.elapsed() < STATS_EVERY {
            return false;
        }
        self.last_stats = Instant::now();
        let json = serde_json::to_vec(&self.stats).unwrap_or_default();
        LiveFrame::push(out, LiveFrame::STATS, &json);
        true
    }

    /// Reads what the file has past the view's offset into `out`.
    fn read_some(&mut self, out: &mut Vec<u8>) -> std::io::Result<Progress> {
        if self.reading.is_none() {
            match self.open(self.source.current_seq(), true)? {
                Some(reading) => self.reading = Some(reading),
                None if self.source.is_done() => return Ok(Progress::Ended),
                None => return Ok(Progress::Waiting),
            }
        }
        if !self.hello_sent {
            let reading = self.reading.as_ref().expect("opened above");
            let mut header = [0u8; FILE_HEADER];
            reading.file.read_exact_at(&mut header, 0)?;
            let hello = LiveHello {
                capture_id: self.source.capture_id.clone(),
                interface: self.source.interface.clone(),
                link_type: u16::try_from(u32_at(&header, 20, reading.little) & 0xffff).unwrap_or(1),
                snaplen: u32_at(&header, 16, reading.little),
                little_endian: reading.little,
            };
            LiveFrame::push(out, LiveFrame::HELLO, &serde_json::to_vec(&hello).unwrap_or_default());
            self.hello_sent = true;
        }
        let reading = self.reading.as_mut().expect("opened above");
        let len = reading.file.metadata()?.len();
        if len.saturating_sub(reading.offset) > MAX_LAG {
            self.stats.dropped += skip(reading, len - MAX_LAG / 2)?;
        }
        let reading = self.reading.as_mut().expect("opened above");
        let available = usize::try_from(len.saturating_sub(reading.offset)).unwrap_or(usize::MAX);
        if available >= RECORD_HEADER {
            let mut chunk = vec![0u8; available.min(READ_CHUNK)];
            let got = reading.file.read_at(&mut chunk, reading.offset)?;
            chunk.truncate(got);
            let (whole, records) = whole_records(&chunk, reading.little)?;
            if records > 0 {
                LiveFrame::push(out, LiveFrame::RECORDS, &chunk[..whole]);
                reading.offset += whole as u64;
                self.stats.sent += records;
                return Ok(Progress::Sent);
            }
            if whole == 0 && chunk.len() >= READ_CHUNK {
                // One record larger than a chunk: read it alone.
                let size = RECORD_HEADER + u32_at(&chunk, 8, reading.little) as usize;
                let mut record = vec![0u8; size];
                if reading.file.read_at(&mut record, reading.offset)? == size {
                    LiveFrame::push(out, LiveFrame::RECORDS, &record);
                    reading.offset += size as u64;
                    self.stats.sent += 1;
                    return Ok(Progress::Sent);
                }
            }
        }
        // At the end of this file: the next one, once the ring moved on.
        let current = self.source.current_seq();
        let done = self.source.is_done();
        let reading = self.reading.as_ref().expect("opened above");
        if current > reading.seq {
            // The next file; when a lagging view finds it already deleted by
            // the ring, the first one still there.
            for seq in reading.seq + 1..=current {
                if let Some(next) = self.open(seq, false)? {
                    self.reading = Some(next);
                    return Ok(Progress::Waiting);
                }
            }
        } else if done && reading.file.metadata()?.len() <= reading.offset {
            return Ok(Progress::Ended);
        }
        Ok(Progress::Waiting)
    }

    /// Opens file `seq` once its header is written; at its end when the view
    /// starts (`at_end`), else at its first record.
    fn open(&self, seq: u32, at_end: bool) -> std::io::Result<Option<Reading>> {
        let path = self.source.path_of(seq);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut header = [0u8; FILE_HEADER];
        if file.read_at(&mut header, 0)? < FILE_HEADER {
            return Ok(None);
        }
        let little = byte_order(&header).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a nanosecond pcap file", path.display()),
            )
        })?;
        let mut reading = Reading {
            seq,
            file,
            offset: FILE_HEADER as u64,
            little,
        };
        if at_end {
            let len = reading.file.metadata()?.len();
            skip(&mut reading, len)?;
        }
        Ok(Some(reading))
    }
}

enum Progress {
    Sent,
    Waiting,
    Ended,
}

/// How many bytes of `chunk` are whole records, and how many records.
fn whole_records(chunk: &[u8], little: bool) -> std::io::Result<(usize, u64)> {
    let mut at = 0;
    let mut records = 0;
    while chunk.len() - at >= RECORD_HEADER {
        let caplen = u32_at(chunk, at + 8, little);
        if caplen > MAX_RECORD {
            return Err(corrupt(caplen));
        }
        let end = at + RECORD_HEADER + caplen as usize;
        if end > chunk.len() {
            break;
        }
        at = end;
        records += 1;
    }
    Ok((at, records))
}

fn corrupt(caplen: u32) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("a record of {caplen} bytes: the file is not one the capture writes"),
    )
}

/// Moves `reading` past whole records that end by `target`, reading their
/// headers a chunk at a time (a view that starts late in a large file costs
/// one sequential read of it); how many it passed.
fn skip(reading: &mut Reading, target: u64) -> std::io::Result<u64> {
    let mut passed = 0;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        if reading.offset + RECORD_HEADER as u64 > target {
            return Ok(passed);
        }
        let got = reading.file.read_at(&mut buf, reading.offset)?;
        if got < RECORD_HEADER {
            return Ok(passed);
        }
        let mut at = 0;
        while at + RECORD_HEADER <= got {
            let caplen = u32_at(&buf, at + 8, reading.little);
            if caplen > MAX_RECORD {
                return Err(corrupt(caplen));
            }
            let next = at + RECORD_HEADER + caplen as usize;
            if reading.offset + next as u64 > target {
                reading.offset += at as u64;
                return Ok(passed);
            }
            at = next;
            passed += 1;
        }
        // The next header is past this chunk (or cut by its end).
        reading.offset += at as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A nanosecond pcap file of `records` records of `size` bytes each.
    fn pcap(path: &std::path::Path, records: usize, size: usize) {
        let mut bytes = vec![0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0];
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&262_144u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        for n in 0..records {
            let n = u32::try_from(n).unwrap();
            let size32 = u32::try_from(size).unwrap();
            for word in [n, 0, size32, size32] {
                bytes.extend_from_slice(&word.to_le_bytes());
            }
            bytes.resize(bytes.len() + size, 0xab);
        }
        std::fs::write(path, bytes).unwrap();
    }

    fn source(file: PathBuf, continuous: bool, seq: u32) -> Arc<LiveSource> {
        let journal = SpooledCapture {
            capture_id: "c".to_owned(),
            start: None,
            started_ms: None,
            resumed: 0,
            seq,
            closed: netwatch_api::agent::ReportStats::default(),
            report: None,
        };
        let source = LiveSource::new(
            "c".to_owned(),
            "vA".to_owned(),
            file,
            continuous,
            Arc::new(Mutex::new(journal)),
        );
        source.finish();
        Arc::new(source)
    }

    /// Reads the view to its end; the frames it sent.
    fn drain(view: &mut View) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match view.read_some(&mut out).unwrap() {
                Progress::Ended => return out,
                Progress::Sent | Progress::Waiting => {}
            }
        }
        panic!("the view did not end");
    }

    #[test]
    fn a_view_follows_the_ring_past_a_file_already_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.cap");
        pcap(&ring_name(&file, 0), 3, 100);
        // File 1 was deleted by the ring while the view lagged.
        pcap(&ring_name(&file, 2), 2, 100);
        let source = source(file, true, 2);
        let mut view = View::new(Arc::clone(&source), CancellationToken::new());
        view.reading = view.open(0, false).unwrap();
        let out = drain(&mut view);
        assert_eq!(out[0], LiveFrame::HELLO);
        assert_eq!(view.stats, LiveStats { sent: 5, dropped: 0 });
    }

    #[test]
    fn a_view_more_than_max_lag_behind_skips_whole_records_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.cap");
        let records = 20_000;
        pcap(&file, records, 1000);
        let mut view = View::new(source(file, false, 0), CancellationToken::new());
        view.reading = view.open(0, false).unwrap();
        drain(&mut view);
        assert!(view.stats.dropped > 0, "{:?}", view.stats);
        assert!(view.stats.sent > 0, "{:?}", view.stats);
        assert_eq!(view.stats.sent + view.stats.dropped, records as u64, "{:?}", view.stats);
        // It caught up to within half the lag and sent the rest.
        assert!(view.stats.sent * 1016 >= MAX_LAG / 2 - 1016, "{:?}", view.stats);
    }

    #[test]
    fn a_view_starts_at_the_files_end() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.cap");
        pcap(&file, 7, 60);
        let view = View::new(source(file, false, 0), CancellationToken::new());
        let reading = view.open(0, true).unwrap().unwrap();
        assert_eq!(reading.offset, (FILE_HEADER + 7 * (RECORD_HEADER + 60)) as u64);
    }
}
