//! The classic pcap file format, as tcpdump, tshark, capinfos and Wireshark read it:
//! encoding of the 24-byte file header and the 16-byte record headers, a
//! bounds-checked reader, and the repair of a file whose last record was cut.
//!
//! Format: <https://www.tcpdump.org/manpages/pcap-savefile.5.html> and
//! draft-ietf-opsawg-pcap. netwatch writes the nanosecond variant (magic
//! `0xa1b23c4d`) in host byte order, as libpcap does for `--time-stamp-precision=nano`.
//!
//! What a crash may lose (the flush policy, DESIGN §6): the writer hands every
//! batch to the kernel with `write_all` as soon as the batch is encoded, so a
//! process killed with SIGKILL leaves a file whose records are complete up to the
//! last batch written; at most the last record can be cut short, which
//! [`repair`] removes. Data reaches the disk itself at rotation, at close and
//! every [`SYNC_INTERVAL`](crate::session::SYNC_INTERVAL).

use std::fs::OpenOptions;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// Magic of a pcap file with nanosecond timestamps, written in host byte order.
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// Magic of a pcap file with microsecond timestamps.
pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// Size of the file header.
pub const FILE_HEADER_LEN: usize = 24;
/// Size of a record header.
pub const RECORD_HEADER_LEN: usize = 16;
/// The largest snap length libpcap accepts (`MAXIMUM_SNAPLEN`); "whole packets".
pub const MAX_SNAPLEN: u32 = 262_144;

/// The link-layer header type of every record in a file (LINKTYPE_* values,
/// <https://www.tcpdump.org/linktypes.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1): an interface with Ethernet headers (and loopback).
    Ethernet,
    /// LINKTYPE_LINUX_SLL2 (276): "Linux cooked" v2, what tcpdump writes for `-i any`;
    /// a 20-byte pseudo-header naming protocol, interface, direction and address.
    LinuxSll2,
}

impl LinkType {
    pub fn code(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::LinuxSll2 => 276,
        }
    }

    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(LinkType::Ethernet),
            276 => Some(LinkType::LinuxSll2),
            _ => None,
        }
    }
}

/// Length of the LINKTYPE_LINUX_SLL2 pseudo-header.
pub const SLL2_HEADER_LEN: usize = 20;

/// The 24-byte file header.
pub fn file_header(link: LinkType, snaplen: u32) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC_NANOS.to_ne_bytes());
    h[4..6].copy_from_slice(&2u16.to_ne_bytes()); // version 2.4
    h[6..8].copy_from_slice(&4u16.to_ne_bytes());
    // 8..16: thiszone and sigfigs, always 0
    h[16..20].copy_from_slice(&snaplen.to_ne_bytes());
    h[20..24].copy_from_slice(&link.code().to_ne_bytes());
    h
}

/// Appends a record header: timestamp, bytes stored (`caplen`), bytes on the wire.
#[inline]
pub fn push_record_header(buf: &mut Vec<u8>, sec: u32, nsec: u32, caplen: u32, origlen: u32) {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(&sec.to_ne_bytes());
    h[4..8].copy_from_slice(&nsec.to_ne_bytes());
    h[8..12].copy_from_slice(&caplen.to_ne_bytes());
    h[12..16].copy_from_slice(&origlen.to_ne_bytes());
    buf.extend_from_slice(&h);
}

/// A file header as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub nanos: bool,
    pub swapped: bool,
    pub snaplen: u32,
    pub link_code: u32,
}

/// Why a file is not a pcap file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("file is shorter than a pcap header ({0} bytes)")]
    TooShort(usize),
    #[error("not a pcap file: magic number {0:#010x}")]
    BadMagic(u32),
}

fn u32_at(b: &[u8], at: usize, swapped: bool) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    let v = u32::from_ne_bytes(w);
    if swapped { v.swap_bytes() } else { v }
}

/// Parses the 24-byte file header.
pub fn parse_file_header(b: &[u8]) -> Result<FileHeader, ReadError> {
    if b.len() < FILE_HEADER_LEN {
        return Err(ReadError::TooShort(b.len()));
    }
    let magic = u32_at(b, 0, false);
    let (nanos, swapped) = match magic {
        MAGIC_NANOS => (true, false),
        MAGIC_MICROS => (false, false),
        m if m == MAGIC_NANOS.swap_bytes() => (true, true),
        m if m == MAGIC_MICROS.swap_bytes() => (false, true),
        m => return Err(ReadError::BadMagic(m)),
    };
    Ok(FileHeader {
        nanos,
        swapped,
        snaplen: u32_at(b, 16, swapped),
        link_code: u32_at(b, 20, swapped),
    })
}

/// One record as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub sec: u32,
    /// Nanoseconds (or microseconds in a microsecond file).
    pub frac: u32,
    pub orig_len: u32,
    pub data: &'a [u8],
}

/// Iterates over complete records; stops at the first record that is cut short or
/// implausible (`caplen` above the snap length or above the original length).
/// [`Records::valid_len`] then tells where the good part of the file ends.
#[derive(Debug)]
pub struct Records<'a> {
    bytes: &'a [u8],
    header: FileHeader,
    pos: usize,
}

impl<'a> Records<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, ReadError> {
        let header = parse_file_header(bytes)?;
        Ok(Self {
            bytes,
            header,
            pos: FILE_HEADER_LEN,
        })
    }

    pub fn header(&self) -> FileHeader {
        self.header
    }

    /// Bytes from the start of the file to the end of the last record returned.
    pub fn valid_len(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        let rest = &self.bytes[self.pos..];
        if rest.len() < RECORD_HEADER_LEN {
            return None;
        }
        let s = self.header.swapped;
        let caplen = u32_at(rest, 8, s);
        let orig_len = u32_at(rest, 12, s);
        // A cut or garbled header shows as a length no writer would produce.
        let limit = self.header.snaplen.max(MAX_SNAPLEN);
        if caplen > limit || caplen > orig_len {
            return None;
        }
        let end = RECORD_HEADER_LEN + caplen as usize;
        if rest.len() < end {
            return None;
        }
        self.pos += end;
        Some(Record {
            sec: u32_at(rest, 0, s),
            frac: u32_at(rest, 4, s),
            orig_len,
            data: &rest[RECORD_HEADER_LEN..end],
        })
    }
}

/// What [`repair`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairReport {
    /// Complete records kept.
    pub records: u64,
    /// Bytes removed from the end of the file (0: the file was whole).
    pub bytes_removed: u64,
}

/// Why a file could not be repaired.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("read {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} cannot be repaired")]
    NotPcap {
        path: String,
        #[source]
        source: ReadError,
    },
    #[error("truncate {path}")]
    Truncate {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Makes a pcap file whole after a crash: keeps every complete record and cuts
/// what follows the last one (a record whose header or data was only partly
/// written). A file shorter than its 24-byte header is an error: its link type
/// cannot be known.
///
/// Reads only the record headers, through a buffer (packet data is skipped
/// within it), so memory stays small however large the file: a host short of
/// memory repairs a 1 GiB capture as well as a small one.
pub fn repair(path: &Path) -> Result<RepairReport, RepairError> {
    let p = || path.display().to_string();
    let read = |source| RepairError::Read { path: p(), source };
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(read)?;
    let len = file.metadata().map_err(read)?.len();
    let mut reader = BufReader::with_capacity(REPAIR_BUFFER, &file);
    let mut header = [0u8; FILE_HEADER_LEN];
    let got = read_up_to(&mut reader, &mut header).map_err(read)?;
    let header = parse_file_header(&header[..got]).map_err(|source| RepairError::NotPcap { path: p(), source })?;
    let limit = header.snaplen.max(MAX_SNAPLEN);
    let mut valid = FILE_HEADER_LEN as u64;
    let mut count = 0u64;
    let mut record = [0u8; RECORD_HEADER_LEN];
    loop {
        if len - valid < RECORD_HEADER_LEN as u64 {
            break;
        }
        reader.read_exact(&mut record).map_err(read)?;
        let caplen = u32_at(&record, 8, header.swapped);
        let orig_len = u32_at(&record, 12, header.swapped);
        // A cut or garbled header shows as a length no writer would produce.
        if caplen > limit || caplen > orig_len {
            break;
        }
        let end = valid + RECORD_HEADER_LEN as u64 + u64::from(caplen);
        if end > len {
            break;
        }
        reader.seek_relative(i64::from(caplen)).map_err(read)?;
        valid = end;
        count += 1;
    }
    drop(reader);
    let removed = len - valid;
    if removed > 0 {
        let truncate = |source| RepairError::Truncate { path: p(), source };
        file.set_len(valid).map_err(truncate)?;
        file.sync_all().map_err(truncate)?;
    }
    Ok(RepairReport {
        records: count,
        bytes_removed: removed,
    })
}

/// The buffer [`repair`] reads a file through.
const REPAIR_BUFFER: usize = 1 << 20;

/// Reads into `buf` until it is full or the file ends; how many bytes it read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(got)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "small test values")]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample(records: &[&[u8]]) -> Vec<u8> {
        let mut buf = file_header(LinkType::Ethernet, 65535).to_vec();
        for (i, r) in records.iter().enumerate() {
            push_record_header(
                &mut buf,
                1_700_000_000 + i as u32,
                123_456_789,
                r.len() as u32,
                r.len() as u32 + 4,
            );
            buf.extend_from_slice(r);
        }
        buf
    }

    #[test]
    fn header_round_trips_and_pcap_file_reads_it() {
        let bytes = sample(&[b"abcdef", b"0123456789"]);
        let mut reader = pcap_file::pcap::PcapReader::new(&bytes[..]).unwrap();
        let h = reader.header();
        assert_eq!(h.snaplen, 65535);
        assert_eq!(h.ts_resolution, pcap_file::TsResolution::NanoSecond);
        assert_eq!(h.datalink, pcap_file::DataLink::ETHERNET);
        let first = reader.next_packet().unwrap().unwrap();
        assert_eq!(&first.data[..], b"abcdef");
        assert_eq!(first.orig_len, 10);
        assert_eq!(first.timestamp.subsec_nanos(), 123_456_789);
        let second = reader.next_packet().unwrap().unwrap();
        assert_eq!(&second.data[..], b"0123456789");
        assert!(reader.next_packet().is_none());
    }

    #[test]
    fn records_stop_at_a_cut_record() {
        let bytes = sample(&[b"abcdef", b"0123456789"]);
        for cut in 1..(RECORD_HEADER_LEN + 10) {
            let short = &bytes[..bytes.len() - cut];
            let mut r = Records::new(short).unwrap();
            assert_eq!(r.by_ref().count(), 1, "cut {cut}");
            assert_eq!(r.valid_len(), FILE_HEADER_LEN + RECORD_HEADER_LEN + 6);
        }
    }

    #[test]
    fn garbage_lengths_end_the_valid_part() {
        let mut bytes = sample(&[b"abcdef"]);
        push_record_header(&mut bytes, 1, 2, 0x00ff_ffff, 0x00ff_ffff);
        bytes.extend_from_slice(&[0u8; 64]);
        let mut r = Records::new(&bytes).unwrap();
        assert_eq!(r.by_ref().count(), 1);
        // caplen above origlen is no record either
        let mut bytes = sample(&[b"abcdef"]);
        push_record_header(&mut bytes, 1, 2, 8, 4);
        bytes.extend_from_slice(&[0u8; 8]);
        assert_eq!(Records::new(&bytes).unwrap().count(), 1);
    }

    #[test]
    fn repair_cuts_a_torn_last_record_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.pcap");
        let bytes = sample(&[b"first packet", b"second packet", b"third packet"]);
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let report = repair(&path).unwrap();
        assert_eq!(
            report,
            RepairReport {
                records: 2,
                bytes_removed: (RECORD_HEADER_LEN + 12 - 5) as u64
            }
        );
        let fixed = std::fs::read(&path).unwrap();
        let mut reader = pcap_file::pcap::PcapReader::new(&fixed[..]).unwrap();
        let mut n = 0;
        while let Some(p) = reader.next_packet() {
            p.unwrap();
            n += 1;
        }
        assert_eq!(n, 2);
        // a whole file is left alone, and appending after repair gives a valid file
        assert_eq!(
            repair(&path).unwrap(),
            RepairReport {
                records: 2,
                bytes_removed: 0
            }
        );
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let mut rec = Vec::new();
        push_record_header(&mut rec, 9, 9, 3, 3);
        rec.extend_from_slice(b"xyz");
        f.write_all(&rec).unwrap();
        assert_eq!(repair(&path).unwrap().records, 3);
    }

    #[test]
    fn repair_agrees_with_the_reader_wherever_the_file_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.pcap");
        let bytes = sample(&[b"a", &[7; 300], b"", b"0123456789"]);
        for cut in FILE_HEADER_LEN..=bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let mut records = Records::new(&bytes[..cut]).unwrap();
            let count = records.by_ref().count() as u64;
            let report = repair(&path).unwrap();
            assert_eq!(
                (report.records, report.bytes_removed),
                (count, (cut - records.valid_len()) as u64),
                "cut at {cut}"
            );
            assert_eq!(std::fs::metadata(&path).unwrap().len(), records.valid_len() as u64);
        }
    }

    #[test]
    fn repair_refuses_what_is_not_pcap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pcap");
        std::fs::write(&path, b"hello").unwrap();
        let err = repair(&path).unwrap_err();
        assert!(
            matches!(
                err,
                RepairError::NotPcap {
                    source: ReadError::TooShort(5),
                    ..
                }
            ),
            "{err:?}"
        );
        std::fs::write(&path, [0u8; 40]).unwrap();
        assert!(matches!(
            repair(&path).unwrap_err(),
            RepairError::NotPcap {
                source: ReadError::BadMagic(0),
                ..
            }
        ));
    }
}
