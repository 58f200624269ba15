//! One source's classic pcap files, read in order as one sequence of records, from
//! byte streams in chunks of whatever size the storage hands out.
//!
//! Format: <https://www.tcpdump.org/manpages/pcap-savefile.5.html> and
//! draft-ietf-opsawg-pcap: a 24-byte file header whose magic gives the byte order
//! and the timestamp resolution (`0xa1b2c3d4` microseconds, `0xa1b23c4d`
//! nanoseconds, either byte order), then records of a 16-byte header (seconds,
//! fraction, stored length, original length) and the stored bytes.
//!
//! Memory: at most one chunk of the stream and, for a record split across chunks,
//! a copy of that one record (capped at [`MAX_CAPLEN`]). The record waiting to be
//! merged, the *head*, is either in the chunk or in that copy; it must be taken
//! ([`Reader::head`]) before the reader moves on, which may drop the chunk.
//!
//! How files end, as libpcap reads them: a file cut inside its last record (a
//! crash) ends quietly there and the next file follows; anything else wrong (the
//! file cannot be opened or read, a header that is not pcap, a link type other
//! than the first file's, a stored length no writer produces) stops the source,
//! and [`Reader::stopped`] says why.

use std::io;
use std::vec;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{ByteStream, FileOpener};

/// The largest stored length accepted: libpcap's largest snap length (256 KiB,
/// `MAXIMUM_SNAPLEN`) and room for link-layer headers on top. Anything larger is
/// corruption, and a bound on the memory one record may take.
pub const MAX_CAPLEN: u32 = 262_144 + 256;

const MAGIC_MICROS: u32 = 0xA1B2_C3D4;
const MAGIC_NANOS: u32 = 0xA1B2_3C4D;
const FILE_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;

/// Why a source's records end before its last file does.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("open file {file}")]
    Open {
        file: usize,
        #[source]
        source: io::Error,
    },
    #[error("read file {file}")]
    Read {
        file: usize,
        #[source]
        source: io::Error,
    },
    #[error("file {file} is not a classic pcap file (magic {magic:#010x})")]
    NotPcap { file: usize, magic: u32 },
    #[error("file {file} is pcap version {major}.{minor}, not 2.x")]
    Version { file: usize, major: u16, minor: u16 },
    #[error("file {file} has link type {found}, not {expected} as the first file")]
    LinkType { file: usize, expected: u16, found: u16 },
    #[error("file {file}, record {record}: stored length {caplen} is more than {MAX_CAPLEN} (corrupt file)")]
    TooLong { file: usize, record: u64, caplen: u32 },
}

/// Byte order and resolution of the file being read.
#[derive(Debug, Clone, Copy)]
struct Format {
    /// Little-endian fields (else big-endian).
    little: bool,
    /// What one unit of the fraction field is, in nanoseconds.
    fraction_ns: u64,
}

impl Format {
    #[inline]
    fn u32_at(self, b: &[u8], at: usize) -> u32 {
        let word = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.little {
            u32::from_le_bytes(word)
        } else {
            u32::from_be_bytes(word)
        }
    }

    fn u16_at(self, b: &[u8], at: usize) -> u16 {
        let word = [b[at], b[at + 1]];
        if self.little {
            u16::from_le_bytes(word)
        } else {
            u16::from_be_bytes(word)
        }
    }

    /// A record header: timestamp in nanoseconds, stored and original lengths.
    /// A fraction at or above one second is kept as it is (neither libpcap nor
    /// mergecap refuse it); the sum cannot overflow (`u32::MAX` seconds in
    /// nanoseconds plus `u32::MAX` microseconds is below 2^63).
    #[inline]
    fn record_header(self, h: &[u8]) -> (u64, u32, u32) {
        let ts = u64::from(self.u32_at(h, 0)) * 1_000_000_000 + u64::from(self.u32_at(h, 4)) * self.fraction_ns;
        (ts, self.u32_at(h, 8), self.u32_at(h, 12))
    }
}

/// The link type and snap length of a source, from its first file's header.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub link_type: u16,
    pub snaplen: u32,
}

/// Where the head's bytes are.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// In the chunk, from this offset.
    Chunk(usize),
    /// In the spill buffer, from its start.
    Spill,
}

/// The record waiting to be merged.
#[derive(Debug, Clone, Copy)]
struct Head {
    ts: u64,
    caplen: u32,
    orig_len: u32,
    place: Place,
}

/// How reading a record (or a file header) ended.
enum Got {
    Record,
    /// The file ended: cleanly, or inside a record (`torn`), which ends it as well.
    End {
        torn: bool,
    },
}

/// A source's files as one sequence of records.
pub struct Reader {
    /// The source's name, for logs.
    name: String,
    files: vec::IntoIter<FileOpener>,
    /// The number of the file being read (1 for the first), for messages.
    file: usize,
    /// Records read from that file, for messages.
    record: u64,
    stream: Option<ByteStream>,
    chunk: Bytes,
    pos: usize,
    spill: Vec<u8>,
    format: Format,
    link: Option<Link>,
    head: Option<Head>,
    stopped: Option<SourceError>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("name", &self.name)
            .field("file", &self.file)
            .field("record", &self.record)
            .field("link", &self.link)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub fn new(name: String, files: Vec<FileOpener>) -> Self {
        Reader {
            name,
            files: files.into_iter(),
            file: 0,
            record: 0,
            stream: None,
            chunk: Bytes::new(),
            pos: 0,
            spill: Vec::new(),
            format: Format {
                little: true,
                fraction_ns: 1,
            },
            link: None,
            head: None,
            stopped: None,
        }
    }

    /// The source's link type and snap length, once its first file's header was read.
    pub fn link(&self) -> Option<Link> {
        self.link
    }

    /// Why the source stopped early, if it did.
    pub fn stopped(&self) -> Option<&SourceError> {
        self.stopped.as_ref()
    }

    /// The head record: timestamp (ns), bytes, original length.
    #[inline]
    pub fn head(&self) -> Option<(u64, &[u8], u32)> {
        let head = self.head?;
        let len = head.caplen as usize;
        let data = match head.place {
            Place::Chunk(at) => &self.chunk[at..at + len],
            Place::Spill => &self.spill[..len],
        };
        Some((head.ts, data, head.orig_len))
    }

    /// Moves to the next record without waiting, when it lies whole in the chunk;
    /// `None` when that needs [`Reader::advance`]. The merge's fast path.
    #[inline]
    pub fn advance_now(&mut self) -> Option<u64> {
        let rest = self.chunk.get(self.pos..)?;
        let header = rest.get(..RECORD_HEADER_LEN)?;
        let (ts, caplen, orig_len) = self.format.record_header(header);
        if caplen > MAX_CAPLEN || rest.len() - RECORD_HEADER_LEN < caplen as usize {
            return None;
        }
        let at = self.pos + RECORD_HEADER_LEN;
        self.pos = at + caplen as usize;
        self.record += 1;
        self.head = Some(Head {
            ts,
            caplen,
            orig_len,
            place: Place::Chunk(at),
        });
        Some(ts)
    }

    /// Moves to the next record, opening the next files as they end; its
    /// timestamp, or `None` when the source has no more (or stopped: see
    /// [`Reader::stopped`]).
    pub async fn advance(&mut self) -> Option<u64> {
        self.head = None;
        if self.stopped.is_some() {
            return None;
        }
        loop {
            if self.stream.is_none() && !self.next_file().await {
                self.release();
                return None;
            }
            match self.read_record().await {
                Ok(Got::Record) => return self.head.map(|h| h.ts),
                Ok(Got::End { torn }) => {
                    if torn {
                        tracing::debug!(
                            source = %self.name,
                            file = self.file,
                            records = self.record,
                            "pcap file ends inside a record, as one does after a crash"
                        );
                    }
                    self.stream = None;
                }
                Err(err) => {
                    self.stopped = Some(err);
                    self.release();
                    return None;
                }
            }
        }
    }

    /// Drops what the reader holds once it has no more records.
    fn release(&mut self) {
        self.stream = None;
        self.chunk = Bytes::new();
        self.pos = 0;
        self.spill = Vec::new();
    }

    /// Opens the next file and reads its header; false when there is none or
    /// it cannot be read (then `stopped` says why).
    async fn next_file(&mut self) -> bool {
        loop {
            let Some(open) = self.files.next() else {
                return false;
            };
            self.file += 1;
            self.record = 0;
            self.chunk = Bytes::new();
            self.pos = 0;
            match open().await {
                Ok(stream) => self.stream = Some(stream),
                Err(source) => {
                    self.stopped = Some(SourceError::Open {
                        file: self.file,
                        source,
                    });
                    return false;
                }
            }
            match self.read_file_header().await {
                // An empty file, or one cut inside its header (a crash right
                // after it was created): no records, the next file follows.
                Ok(Got::End { .. }) => self.stream = None,
                Ok(Got::Record) => return true,
                Err(err) => {
                    self.stopped = Some(err);
                    return false;
                }
            }
        }
    }

    async fn read_file_header(&mut self) -> Result<Got, SourceError> {
        let mut h = [0u8; FILE_HEADER_LEN];
        let got = self.read_exact(&mut h).await?;
        if !matches!(got, Got::Record) {
            return Ok(got);
        }
        let file = self.file;
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (little, fraction_ns) = match magic {
            MAGIC_NANOS => (true, 1),
            MAGIC_MICROS => (true, 1000),
            m if m == MAGIC_NANOS.swap_bytes() => (false, 1),
            m if m == MAGIC_MICROS.swap_bytes() => (false, 1000),
            magic => return Err(SourceError::NotPcap { file, magic }),
        };
        let format = Format { little, fraction_ns };
        let (major, minor) = (format.u16_at(&h, 4), format.u16_at(&h, 6));
        if major != 2 {
            return Err(SourceError::Version { file, major, minor });
        }
        // The link type is the low 16 bits; the upper ones may carry FCS
        // information (draft-ietf-opsawg-pcap §4), which the merge does not keep.
        let found = format.u16_at(&h, if little { 20 } else { 22 });
        let snaplen = format.u32_at(&h, 16);
        match self.link {
            None => {
                self.link = Some(Link {
                    link_type: found,
                    snaplen,
                })
            }
            Some(Link {
                link_type: expected, ..
            }) if expected != found => {
                return Err(SourceError::LinkType { file, expected, found });
            }
            Some(_) => {}
        }
        self.format = format;
        Ok(Got::Record)
    }

    /// Reads the next record of the open file into the head, copying it into
    /// the spill buffer when it spans chunks.
    async fn read_record(&mut self) -> Result<Got, SourceError> {
        if self.advance_now().is_some() {
            return Ok(Got::Record);
        }
        let mut h = [0u8; RECORD_HEADER_LEN];
        let got = self.read_exact(&mut h).await?;
        if !matches!(got, Got::Record) {
            return Ok(got);
        }
        let (ts, caplen, orig_len) = self.format.record_header(&h);
        if caplen > MAX_CAPLEN {
            return Err(SourceError::TooLong {
                file: self.file,
                record: self.record + 1,
                caplen,
            });
        }
        let len = caplen as usize;
        let place = if self.chunk.len() - self.pos >= len {
            let at = self.pos;
            self.pos += len;
            Place::Chunk(at)
        } else {
            self.spill.clear();
            self.spill.extend_from_slice(&self.chunk[self.pos..]);
            self.pos = self.chunk.len();
            while self.spill.len() < len {
                if !self.next_chunk().await? {
                    return Ok(Got::End { torn: true });
                }
                let take = (len - self.spill.len()).min(self.chunk.len());
                self.spill.extend_from_slice(&self.chunk[..take]);
                self.pos = take;
            }
            Place::Spill
        };
        self.record += 1;
        self.head = Some(Head {
            ts,
            caplen,
            orig_len,
            place,
        });
        Ok(Got::Record)
    }

    /// Fills `buf` from the stream: `Record` when full, `End` when the file
    /// ends first (`torn` when it ends after some of `buf`'s bytes).
    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<Got, SourceError> {
        let mut filled = 0;
        while filled < buf.len() {
            if self.pos == self.chunk.len() && !self.next_chunk().await? {
                return Ok(Got::End { torn: filled > 0 });
            }
            let take = (buf.len() - filled).min(self.chunk.len() - self.pos);
            buf[filled..filled + take].copy_from_slice(&self.chunk[self.pos..self.pos + take]);
            self.pos += take;
            filled += take;
        }
        Ok(Got::Record)
    }

    /// Replaces the chunk with the stream's next non-empty one; false at its end.
    async fn next_chunk(&mut self) -> Result<bool, SourceError> {
        self.chunk = Bytes::new();
        self.pos = 0;
        let Some(stream) = self.stream.as_mut() else {
            return Ok(false);
        };
        loop {
            match stream.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => {
                    self.chunk = chunk;
                    return Ok(true);
                }
                Some(Err(source)) => {
                    return Err(SourceError::Read {
                        file: self.file,
                        source,
                    });
                }
                None => return Ok(false),
            }
        }
    }
}
