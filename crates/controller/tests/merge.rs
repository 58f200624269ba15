//! The merged download (`merge.rs`, issue 13 "Files") read back by Wireshark's own
//! tools: capinfos reads it, tshark shows each packet's interface and direction,
//! mergecap of the same input files gives the same packets in the same order; the
//! statistics blocks say what each source held; memory stays flat as inputs grow.
//!
//! Inputs are classic pcap files encoded here by hand (so they can be torn or
//! wrong on purpose) in a temp dir, served from disk or in odd chunk sizes. The
//! tools must be installed (`apt-get install tshark`): a test without them fails.

use std::cmp::Reverse;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use netwatch_controller::merge::{ByteStream, FLUSH_BYTES, FileOpener, MAX_CAPLEN, Section, Source, merge};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use tokio_util::io::ReaderStream;

const BASE_NS: u64 = 1_700_000_000 * 1_000_000_000;

// ---------------------------------------------------------------- input files

/// A classic pcap file being written, with where each record ends.
struct Pcap {
    bytes: Vec<u8>,
    nanos: bool,
    big: bool,
    /// End offset of each whole record.
    ends: Vec<usize>,
}

impl Pcap {
    fn new(link: u32, nanos: bool, big: bool) -> Self {
        let mut p = Pcap {
            bytes: Vec::new(),
            nanos,
            big,
            ends: Vec::new(),
        };
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        p.u32(magic);
        p.u16(2);
        p.u16(4);
        p.u32(0);
        p.u32(0);
        p.u32(262_144);
        p.u32(link);
        p
    }

    fn u16(&mut self, v: u16) {
        let b = if self.big { v.to_be_bytes() } else { v.to_le_bytes() };
        self.bytes.extend_from_slice(&b);
    }

    fn u32(&mut self, v: u32) {
        let b = if self.big { v.to_be_bytes() } else { v.to_le_bytes() };
        self.bytes.extend_from_slice(&b);
    }

    fn record_header(&mut self, ts_ns: u64, caplen: u32, orig_len: u32) {
        let frac = ts_ns % 1_000_000_000;
        assert!(
            self.nanos || frac.is_multiple_of(1000),
            "a microsecond file holds whole microseconds"
        );
        self.u32(u32::try_from(ts_ns / 1_000_000_000).unwrap());
        self.u32(u32::try_from(if self.nanos { frac } else { frac / 1000 }).unwrap());
        self.u32(caplen);
        self.u32(orig_len);
    }

    fn record(&mut self, ts_ns: u64, frame: &[u8]) {
        let len = u32::try_from(frame.len()).unwrap();
        self.record_header(ts_ns, len, len);
        self.bytes.extend_from_slice(frame);
        self.ends.push(self.bytes.len());
    }

    /// The file as libpcap reads it when cut after `len` bytes: up to the last
    /// whole record.
    fn readable_prefix(&self, len: usize) -> Vec<u8> {
        let end = self.ends.iter().copied().filter(|&e| e <= len).max().unwrap_or(24);
        self.bytes[..end].to_vec()
    }
}

const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 1];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 9, 9];
const BROADCAST: [u8; 6] = [0xff; 6];
const HOST_V4: [u8; 4] = [10, 0, 1, 1];
const PEER_V4: [u8; 4] = [10, 0, 9, 9];
const HOST_V6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
const PEER_V6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9];

/// A UDP datagram in IPv4 or IPv6 (by address length) of `len` bytes in all,
/// its payload starting with `tag` so every frame of a test is unique.
fn ip_udp(src: &[u8], dst: &[u8], len: usize, tag: u64) -> Vec<u8> {
    let mut ip = Vec::with_capacity(len);
    if src.len() == 4 {
        let total = u16::try_from(len).unwrap();
        ip.extend_from_slice(&[0x45, 0]);
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    } else {
        let payload = u16::try_from(len - 40).unwrap();
        ip.extend_from_slice(&[0x60, 0, 0, 0]);
        ip.extend_from_slice(&payload.to_be_bytes());
        ip.extend_from_slice(&[17, 64]);
    }
    ip.extend_from_slice(src);
    ip.extend_from_slice(dst);
    let udp_len = u16::try_from(len - ip.len()).unwrap();
    ip.extend_from_slice(&[0x30, 0x39, 0x30, 0x39]);
    ip.extend_from_slice(&udp_len.to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(&tag.to_be_bytes());
    ip.resize(len, 0x5a);
    ip
}

fn ethernet(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let ethertype: [u8; 2] = if ip[0] >> 4 == 6 { [0x86, 0xdd] } else { [0x08, 0x00] };
    [&dst[..], &src, &ethertype, ip].concat()
}

/// A LINKTYPE_LINUX_SLL2 frame: the 20-byte pseudo-header, then `ip`.
fn sll2(packet_type: u8, ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, packet_type, 6];
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(ip);
    f
}

/// Frame lengths cycled through: small, full-size, odd, jumbo (spans chunks).
const SIZES: [usize; 6] = [60, 1514, 343, 9014, 98, 1];

/// An Ethernet frame of kind `k` (cycled) and its expected direction, seen from
/// a host owning HOST_MAC, HOST_V4 and HOST_V6.
fn ethernet_frame(k: usize, tag: u64) -> (Vec<u8>, u32) {
    let len = SIZES[k % SIZES.len()].max(60) - 14;
    match k % 7 {
        0 => (ethernet(PEER_MAC, HOST_MAC, &ip_udp(&HOST_V4, &PEER_V4, len, tag)), 2),
        1 => (ethernet(HOST_MAC, PEER_MAC, &ip_udp(&PEER_V4, &HOST_V4, len, tag)), 1),
        // Broadcast MAC, foreign source: the addresses tell.
        2 => (ethernet(BROADCAST, PEER_MAC, &ip_udp(&PEER_V4, &HOST_V4, len, tag)), 1),
        // Routed through: neither MAC is the host's, the source address is.
        3 => (ethernet(PEER_MAC, PEER_MAC, &ip_udp(&HOST_V4, &PEER_V4, len, tag)), 2),
        // Loopback: both sides local.
        4 => (ethernet([0; 6], [0; 6], &ip_udp(&HOST_V4, &HOST_V4, len, tag)), 0),
        // Overheard: neither side local.
        5 => (
            ethernet(PEER_MAC, PEER_MAC, &ip_udp(&PEER_V4, &[10, 0, 9, 8], len, tag)),
            0,
        ),
        _ => (
            ethernet(PEER_MAC, PEER_MAC, &ip_udp(&PEER_V6, &HOST_V6, len.max(56), tag)),
            1,
        ),
    }
}

// ---------------------------------------------------------------- sources

fn chunked(bytes: Vec<u8>, chunk: usize, fail_after: Option<usize>) -> ByteStream {
    let mut chunks: Vec<io::Result<Bytes>> = bytes.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    if let Some(n) = fail_after {
        chunks.truncate(n / chunk);
        chunks.push(Err(io::Error::other("connection reset by storage")));
    }
    Box::pin(stream::iter(chunks))
}

/// A file on disk, read as the merged download will: opened when its turn
/// comes, streamed in chunks of `chunk` bytes (0: read from disk with tokio's
/// own 64 KiB ReaderStream, as local storage does).
fn open_file(path: PathBuf, chunk: usize, fail_after: Option<usize>) -> FileOpener {
    Box::new(move || {
        Box::pin(async move {
            if chunk == 0 {
                let file = tokio::fs::File::open(&path).await?;
                Ok(Box::pin(ReaderStream::with_capacity(file, 64 * 1024)) as ByteStream)
            } else {
                Ok(chunked(tokio::fs::read(&path).await?, chunk, fail_after))
            }
        })
    })
}

fn failing_open() -> FileOpener {
    Box::new(|| Box::pin(async { Err(io::Error::new(io::ErrorKind::NotFound, "no such blob")) }))
}

fn source(name: &str, files: Vec<FileOpener>) -> Source {
    Source {
        if_name: name.to_owned(),
        if_description: format!(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"
        ),
        if_filter: r#"[{"protocol":"UDP"}]"#.to_owned(),
        if_os: "Linux".to_owned(),
        local_macs: vec![HOST_MAC],
        local_addresses: vec![HOST_V4.into(), HOST_V6.into()],
        received: None,
        dropped: None,
        files,
    }
}

fn section() -> Section {
    Section {
        capture_name: "pc1".to_owned(),
        capture_id: "/subscriptions/s/.../packetCaptures/pc1".to_owned(),
        filters: r#"[{"protocol":"UDP"}]"#.to_owned(),
        user_appl: "netwatch tests".to_owned(),
    }
}

/// One packet the output must hold.
#[derive(Debug, Clone)]
struct Expected {
    interface: usize,
    ts: u64,
    direction: u32,
}

/// The files of one test in a temp dir: what the merge reads, and what mergecap
/// gets (the readable part of each, as libpcap would read it).
struct Inputs {
    dir: tempfile::TempDir,
    sources: Vec<Source>,
    names: Vec<String>,
    mergecap_files: Vec<PathBuf>,
    expected: Vec<Expected>,
}

impl Inputs {
    fn new() -> Self {
        Inputs {
            dir: tempfile::tempdir().unwrap(),
            sources: Vec::new(),
            names: Vec::new(),
            mergecap_files: Vec::new(),
            expected: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `bytes` as file `name`; `readable` (what libpcap reads of it) goes
    /// to mergecap unless empty.
    fn write(&mut self, name: &str, bytes: &[u8], readable: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        if readable.len() > 24 {
            let reference = self.path(&format!("{name}.readable"));
            std::fs::write(&reference, readable).unwrap();
            self.mergecap_files.push(reference);
        }
        path
    }

    fn expect(&mut self, ts: u64, direction: u32) {
        self.expected.push(Expected {
            interface: self.sources.len(),
            ts,
            direction,
        });
    }

    fn add(&mut self, source: Source) {
        self.names.push(source.if_name.clone());
        self.sources.push(source);
    }

    /// Merges into `out.pcapng`; returns its path and the stream's items' sizes.
    async fn merge(&mut self) -> (PathBuf, Vec<usize>) {
        let mut stream = std::pin::pin!(merge(section(), std::mem::take(&mut self.sources)));
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        while let Some(item) = stream.next().await {
            let batch = item.unwrap();
            sizes.push(batch.len());
            out.extend_from_slice(&batch);
        }
        let path = self.path("out.pcapng");
        std::fs::write(&path, out).unwrap();
        (path, sizes)
    }

    /// The expected packets in mergecap's order: by time, and among equal
    /// times the later input first; within a source, file order.
    fn in_order(&self) -> Vec<Expected> {
        let mut all = self.expected.clone();
        all.sort_by_key(|e| (e.ts, Reverse(e.interface)));
        all
    }
}

// ---------------------------------------------------------------- tools

/// Runs one of Wireshark's tools; stdout, or a failure naming what is missing.
fn run(tool: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|err| {
        panic!("cannot run {tool} ({err}): the merge tests need Wireshark's tools: apt-get install tshark")
    });
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}):\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// tshark's `frame.time_epoch` ("1700000000.000250000", or 6 digits for a
/// microsecond interface) in nanoseconds.
fn epoch_ns(text: &str) -> u64 {
    let (sec, frac) = text.split_once('.').unwrap();
    let frac_ns = format!("{frac:0<9}");
    sec.parse::<u64>().unwrap() * 1_000_000_000 + frac_ns.parse::<u64>().unwrap()
}

/// Per packet: time (ns), length on the wire, MD5 of its bytes, as tshark reads `file`.
fn frames(file: &Path) -> Vec<(u64, String, String)> {
    let (out, _) = run(
        "tshark",
        &[
            "-r",
            path_str(file),
            "-o",
            "frame.generate_md5_hash:TRUE",
            "-T",
            "fields",
        ]
        .into_iter()
        .chain(["-e", "frame.time_epoch", "-e", "frame.len", "-e", "frame.md5_hash"])
        .collect::<Vec<_>>(),
    );
    out.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            (epoch_ns(f[0]), f[1].to_owned(), f[2].to_owned())
        })
        .collect()
}

/// The blocks of a little-endian pcapng file: (type, body).
fn blocks(file: &[u8]) -> Vec<(u32, &[u8])> {
    let mut at = 0;
    let mut all = Vec::new();
    while at < file.len() {
        let kind = u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(file[at + 4..at + 8].try_into().unwrap()) as usize;
        assert_eq!(
            file[at + 4..at + 8],
            file[at + len - 4..at + len],
            "block at {at}: lengths differ"
        );
        all.push((kind, &file[at + 8..at + len - 4]));
        at += len;
    }
    all
}

/// A block body's options from `from`: (code, value).
fn options(body: &[u8], from: usize) -> Vec<(u16, &[u8])> {
    let mut at = from;
    let mut all = Vec::new();
    while at + 4 <= body.len() {
        let code = u16::from_le_bytes([body[at], body[at + 1]]);
        let len = usize::from(u16::from_le_bytes([body[at + 2], body[at + 3]]));
        if code == 0 {
            break;
        }
        all.push((code, &body[at + 4..at + 4 + len]));
        at += 4 + len.div_ceil(4) * 4;
    }
    all
}

fn option<'a>(options: &[(u16, &'a [u8])], code: u16) -> Option<&'a [u8]> {
    options.iter().find(|(c, _)| *c == code).map(|(_, v)| *v)
}

fn u64_option(options: &[(u16, &[u8])], code: u16) -> Option<u64> {
    option(options, code).map(|v| u64::from_le_bytes(v.try_into().unwrap()))
}

/// `isb_starttime`/`isb_endtime`: high 32 bits, then low 32 bits.
fn ts_option(options: &[(u16, &[u8])], code: u16) -> Option<u64> {
    option(options, code).map(|v| {
        let high = u32::from_le_bytes(v[0..4].try_into().unwrap());
        let low = u32::from_le_bytes(v[4..8].try_into().unwrap());
        (u64::from(high) << 32) | u64::from(low)
    })
}

fn text_option(options: &[(u16, &[u8])], code: u16) -> Option<String> {
    option(options, code).map(|v| String::from_utf8(v.to_vec()).unwrap())
}

// ---------------------------------------------------------------- tests

/// Eight hosts: Ethernet and SLL2, nanosecond and microsecond, both byte orders,
/// a rotation of two files, packets at equal times across hosts, and every way a
/// source can end early.
#[tokio::test]
async fn merged_file_reads_back_in_the_real_tools() {
    let mut inputs = Inputs::new();
    let ts = |j: usize, offset: u64| BASE_NS + (j as u64 / 2) * 1_000_000 + offset;
    let mut tag = 0;
    let mut next_tag = || {
        tag += 1;
        tag
    };

    // 0: Ethernet, ns, little-endian, two files (rotation), from disk.
    let mut files = Vec::new();
    for (n, range) in [(1, 0..12), (2, 12..24)] {
        let mut p = Pcap::new(1, true, false);
        for j in range {
            let (frame, dir) = ethernet_frame(j, next_tag());
            p.record(ts(j, 0), &frame);
            inputs.expect(ts(j, 0), dir);
        }
        let path = inputs.write(&format!("web-1.{n}.pcap"), &p.bytes, &p.bytes);
        files.push(open_file(path, 0, None));
    }
    inputs.add(source("web-1/eth0", files));

    // 1: SLL2 (tcpdump -i any), µs, big-endian, 7-byte chunks; every packet type.
    let mut p = Pcap::new(276, false, true);
    for j in 0..18 {
        let packet_type = u8::try_from(j % 6).unwrap();
        let frame = sll2(
            packet_type,
            &ip_udp(&PEER_V4, &HOST_V4, SIZES[j % 6].max(36), next_tag()),
        );
        p.record(ts(j, 500_000), &frame);
        inputs.expect(ts(j, 500_000), [1, 1, 1, 1, 2, 0][j % 6]);
    }
    let path = inputs.write("web-2.pcap", &p.bytes, &p.bytes);
    inputs.add(source("web-2/any", vec![open_file(path, 7, None)]));

    // 2: Ethernet, ns, big-endian, its last record torn (a crash); counters known.
    let mut p = Pcap::new(1, true, true);
    for j in 0..15 {
        let (frame, dir) = ethernet_frame(j + 3, next_tag());
        p.record(ts(j, 0), &frame);
        if j < 14 {
            inputs.expect(ts(j, 0), dir);
        }
    }
    // Cut 10 bytes before the end: inside the last record's frame.
    let torn = p.bytes.len() - 10;
    let path = inputs.write("web-3.pcap", &p.bytes[..torn], &p.readable_prefix(torn));
    let mut s = source("web-3/eth0", vec![open_file(path, 0, None)]);
    (s.received, s.dropped) = (Some(1000), Some(7));
    inputs.add(s);

    // 3: Ethernet, µs, little-endian; its second file is not pcap at all.
    let mut p = Pcap::new(1, false, false);
    for j in 0..10 {
        let (frame, dir) = ethernet_frame(j + 1, next_tag());
        p.record(ts(j, 500_000), &frame);
        inputs.expect(ts(j, 500_000), dir);
    }
    let first = inputs.write("web-4.1.pcap", &p.bytes, &p.bytes);
    let garbage = inputs.write("web-4.2.pcap", b"this is no pcap file, just text\n", b"");
    inputs.add(source(
        "web-4/eth0",
        vec![open_file(first, 1000, None), open_file(garbage, 0, None)],
    ));

    // 4: its second file has another link type (SLL2 after Ethernet).
    let mut p = Pcap::new(1, true, false);
    for j in 0..8 {
        let (frame, dir) = ethernet_frame(j + 2, next_tag());
        p.record(ts(j, 0), &frame);
        inputs.expect(ts(j, 0), dir);
    }
    let first = inputs.write("web-5.1.pcap", &p.bytes, &p.bytes);
    let mut q = Pcap::new(276, true, false);
    q.record(ts(20, 0), &sll2(0, &ip_udp(&PEER_V4, &HOST_V4, 100, next_tag())));
    let second = inputs.write("web-5.2.pcap", &q.bytes, b"");
    inputs.add(source(
        "web-5/eth0",
        vec![open_file(first, 0, None), open_file(second, 0, None)],
    ));

    // 5: a record claiming 2 GiB (corruption) after 9 good ones.
    let mut p = Pcap::new(1, true, false);
    for j in 0..9 {
        let (frame, dir) = ethernet_frame(j + 4, next_tag());
        p.record(ts(j, 0), &frame);
        inputs.expect(ts(j, 0), dir);
    }
    let good = p.bytes.len();
    p.record_header(ts(9, 0), 0x7fff_ffff, 0x7fff_ffff);
    p.bytes.extend_from_slice(&[0u8; 4000]);
    let path = inputs.write("web-6.pcap", &p.bytes, &p.bytes[..good]);
    inputs.add(source("web-6/eth0", vec![open_file(path, 0, None)]));

    // 6: its only file cannot be opened.
    inputs.add(source("web-7/eth0", vec![failing_open()]));

    // 7: storage fails mid-file (after 3000 bytes, in 1000-byte chunks: 3 of
    // its records, sizes cycling, are whole by then).
    let mut p = Pcap::new(1, true, false);
    for j in 0..12 {
        let (frame, dir) = ethernet_frame(j, next_tag());
        p.record(ts(j, 0), &frame);
        if p.bytes.len() <= 3000 {
            inputs.expect(ts(j, 0), dir);
        }
    }
    let path = inputs.write("web-8.pcap", &p.bytes, &p.readable_prefix(3000));
    inputs.add(source("web-8/eth0", vec![open_file(path, 1000, Some(3000))]));

    let names = inputs.names.clone();
    let (out, sizes) = inputs.merge().await;
    let expected = inputs.in_order();
    assert!(
        sizes.len() >= 2 && sizes[0] < 200,
        "section header first, alone: {sizes:?}"
    );

    // capinfos reads it all, without a word on stderr.
    let (info, stderr) = run("capinfos", &[path_str(&out)]);
    assert_eq!(stderr, "", "capinfos complained");
    assert!(
        info.contains(&format!("Number of packets:   {}\n", expected.len())),
        "{info}"
    );
    assert!(info.contains("Number of interfaces in file: 8"), "{info}");
    assert!(info.contains("Capture application: netwatch tests"), "{info}");
    assert!(info.contains("Capture comment:     packet capture pc1 ("), "{info}");
    assert_eq!(
        info.matches(r#"Filter string = [{"protocol":"UDP"}]"#).count(),
        8,
        "{info}"
    );
    for line in ["Time resolution = 0x09", "Operating system = Linux"] {
        assert_eq!(info.matches(line).count(), 8, "{line}: {info}");
    }
    // Each source's snap length from its files; none for the one without a file.
    assert_eq!(info.matches("Capture length = 262144\n").count(), 7, "{info}");
    assert_eq!(
        info.matches("Encapsulation = Linux cooked-mode capture v2").count(),
        1,
        "{info}"
    );
    assert_eq!(info.matches("Number of stat entries = 1").count(), 8, "{info}");

    // tshark: each packet's interface, its description, time and direction.
    let (fields, _) = run(
        "tshark",
        &["-r", path_str(&out), "-T", "fields", "-e", "frame.interface_name"]
            .into_iter()
            .chain(["-e", "frame.interface_description", "-e", "frame.time_epoch"])
            .chain(["-e", "frame.packet_flags_direction"])
            .collect::<Vec<_>>(),
    );
    let got: Vec<Vec<&str>> = fields.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(got.len(), expected.len());
    for (n, (line, want)) in got.iter().zip(&expected).enumerate() {
        let name = &names[want.interface];
        assert_eq!(line[0], name, "packet {n}");
        assert!(
            line[1].ends_with(&format!("virtualMachines/{name}")),
            "packet {n}: {line:?}"
        );
        assert_eq!(epoch_ns(line[2]), want.ts, "packet {n}");
        let direction = u32::from_str_radix(line[3].trim_start_matches("0x"), 16).unwrap();
        assert_eq!(direction, want.direction, "packet {n} of {name}: {line:?}");
    }

    // mergecap of the readable files: the same packets, bytes and order.
    let reference = inputs.path("ref.pcapng");
    let mut args = vec!["-w", path_str(&reference)];
    args.extend(inputs.mergecap_files.iter().map(|p| path_str(p)));
    run("mergecap", &args);
    let ours = frames(&out);
    let theirs = frames(&reference);
    assert_eq!(ours.len(), theirs.len());
    for (n, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "packet {n} differs from mergecap's");
    }

    // A third reader, pcap-file's: every block parses; each packet has the
    // expected interface, time and `epb_flags`, and nothing else.
    let bytes = std::fs::read(&out).unwrap();
    let mut reader = PcapNgReader::new(&bytes[..]).unwrap();
    let mut packets = expected.iter();
    while let Some(block) = reader.next_block() {
        if let Block::EnhancedPacket(epb) = block.unwrap() {
            let want = packets.next().expect("no more packets than expected");
            assert_eq!(epb.interface_id as usize, want.interface);
            assert_eq!(epb.timestamp, std::time::Duration::from_nanos(want.ts));
            assert_eq!(epb.options, [EnhancedPacketOption::Flags(want.direction)]);
        }
    }
    assert!(packets.next().is_none(), "every expected packet is there");

    // The statistics blocks: one per source, what each held and why it ended.
    let all = blocks(&bytes);
    let isbs: Vec<_> = all.iter().filter(|(kind, _)| *kind == 5).collect();
    assert_eq!(isbs.len(), 8);
    assert!(
        all.iter().rev().take(8).all(|(kind, _)| *kind == 5),
        "statistics come last"
    );
    for (interface, (_, body)) in isbs.iter().enumerate() {
        assert_eq!(u32::from_le_bytes(body[0..4].try_into().unwrap()) as usize, interface);
        let opts = options(body, 12);
        let mine: Vec<u64> = expected
            .iter()
            .filter(|e| e.interface == interface)
            .map(|e| e.ts)
            .collect();
        assert_eq!(
            ts_option(&opts, 2),
            mine.first().copied(),
            "isb_starttime of {interface}"
        );
        assert_eq!(ts_option(&opts, 3), mine.last().copied(), "isb_endtime of {interface}");
        let comment = text_option(&opts, 1);
        let want = match interface {
            3 => Some("stopped after 10 packets: file 2 is not a classic pcap file (magic 0x73696874)".to_owned()),
            4 => Some("stopped after 8 packets: file 2 has link type 276, not 1 as the first file".to_owned()),
            5 => Some(format!(
                "stopped after 9 packets: file 1, record 10: stored length 2147483647 is more than {MAX_CAPLEN} (corrupt file)"
            )),
            6 => Some("stopped after 0 packets: open file 1: no such blob".to_owned()),
            7 => Some("stopped after 3 packets: read file 1: connection reset by storage".to_owned()),
            _ => None,
        };
        assert_eq!(comment, want, "comment of {interface}");
        let counters = (u64_option(&opts, 4), u64_option(&opts, 5));
        assert_eq!(
            counters,
            if interface == 2 {
                (Some(1000), Some(7))
            } else {
                (None, None)
            }
        );
    }
}

/// Packets at equal times across sources go out in mergecap's order, which
/// takes the last input among those with the earliest time.
#[tokio::test]
async fn equal_timestamps_in_mergecap_order() {
    let mut inputs = Inputs::new();
    let mut tag = 0;
    for s in 0..4 {
        let mut p = Pcap::new(1, true, s % 2 == 1);
        for j in 0..6 {
            tag += 1;
            let (frame, _) = ethernet_frame(s, tag);
            let at = BASE_NS + (j as u64 / 3) * 1000;
            p.record(at, &frame);
            inputs.expect(at, 0);
        }
        let path = inputs.write(&format!("host-{s}.pcap"), &p.bytes, &p.bytes);
        inputs.add(source(&format!("host-{s}/eth0"), vec![open_file(path, 0, None)]));
    }
    let (out, _) = inputs.merge().await;
    let reference = inputs.path("ref.pcapng");
    let mut args = vec!["-w", path_str(&reference)];
    args.extend(inputs.mergecap_files.iter().map(|p| path_str(p)));
    run("mergecap", &args);
    let ours = frames(&out);
    assert_eq!(ours.len(), 24);
    assert_eq!(ours, frames(&reference));
    let (names, _) = run(
        "tshark",
        &["-r", path_str(&out), "-T", "fields", "-e", "frame.interface_name"],
    );
    let order: Vec<&str> = names.lines().collect();
    let want: Vec<String> = inputs
        .in_order()
        .iter()
        .map(|e| format!("host-{}/eth0", e.interface))
        .collect();
    assert_eq!(order, want);
    assert_eq!(order[..4], ["host-3/eth0", "host-3/eth0", "host-3/eth0", "host-2/eth0"]);
}

/// The section header comes out before any file is opened, so a download
/// starts at once even when storage is slow to answer.
#[tokio::test]
async fn section_header_before_any_file_opens() {
    let never: FileOpener = Box::new(|| Box::pin(futures_util::future::pending()));
    let mut stream = std::pin::pin!(merge(section(), vec![source("slow/eth0", vec![never])]));
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("the section header comes without waiting for storage")
        .unwrap()
        .unwrap();
    assert_eq!(first[0..4], [0x0a, 0x0d, 0x0d, 0x0a]);
    assert_eq!(blocks(&first).len(), 1);
}

/// A merge with no readable source still makes a file tshark reads.
#[tokio::test]
async fn no_sources_and_empty_sources() {
    let mut inputs = Inputs::new();
    let (out, _) = inputs.merge().await;
    run("capinfos", &[path_str(&out)]);
    let mut inputs = Inputs::new();
    let empty = inputs.write("empty.pcap", b"", b"");
    let header_only = inputs.write("header.pcap", &Pcap::new(1, true, false).bytes, b"");
    inputs.add(source(
        "a/eth0",
        vec![open_file(empty, 0, None), open_file(header_only, 3, None)],
    ));
    inputs.add(source("b/eth0", vec![]));
    let (out, _) = inputs.merge().await;
    let (info, stderr) = run("capinfos", &[path_str(&out)]);
    assert_eq!(stderr, "");
    assert!(info.contains("Number of packets:   0\n"), "{info}");
    assert!(info.contains("Number of interfaces in file: 2"), "{info}");
}

// ---------------------------------------------------------------- memory

/// Set in the child process of `memory_stays_flat_as_inputs_grow`: MiB per source.
const MEMORY_CHILD: &str = "NETWATCH_MERGE_MEMORY_CHILD_MIB";
const MEMORY_SOURCES: u64 = 4;

/// Peak memory of a process merging 4 × 16 MiB and one merging 4 × 64 MiB
/// (generated as they are read, never stored): the same within 2 MiB, and far
/// below either input. Each merge runs in a child process of its own (this
/// test binary again, running only this test), so its peak RSS (`VmHWM`) is the
/// merge's and nothing else's. Output batches are checked to stay within
/// `FLUSH_BYTES` and one packet.
#[test]
fn memory_stays_flat_as_inputs_grow() {
    if let Ok(mib) = std::env::var(MEMORY_CHILD) {
        memory_child(mib.parse().unwrap());
        return;
    }
    let peak = |mib: u64| -> (u64, u64) {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "merge::memory_stays_flat_as_inputs_grow",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(MEMORY_CHILD, mib.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The harness prints the test's name first, on the same line.
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("merge-memory "))
            .expect("the child's figures")
            .1;
        let mut figures = line.split(' ').map(|f| f.parse::<u64>().unwrap());
        (figures.next().unwrap(), figures.next().unwrap())
    };
    let (small_peak, small_start) = peak(16);
    let (big_peak, big_start) = peak(64);
    let grown = big_peak.saturating_sub(small_peak);
    eprintln!(
        "peak RSS: {small_peak} KiB merging 64 MiB (start {small_start}), {big_peak} KiB merging 256 MiB (start {big_start})"
    );
    assert!(grown < 2048, "peak RSS grew by {grown} KiB with 4x the input");
    assert!(
        big_peak - big_start < 16 * 1024,
        "the merge held {} KiB",
        big_peak - big_start
    );
}

/// A source of `mib` MiB of Ethernet frames (sizes cycling up to jumbo),
/// generated chunk by chunk (64 KiB, as local storage reads) as it is read.
fn generated(index: u64, mib: u64) -> FileOpener {
    Box::new(move || {
        Box::pin(async move {
            let total = mib << 20;
            let mut p = Pcap::new(1, true, false);
            let mut header = std::mem::take(&mut p.bytes);
            let mut j = 0u64;
            let mut produced = 0u64;
            let chunks = stream::poll_fn(move |_| {
                if produced >= total {
                    return std::task::Poll::Ready(None);
                }
                let mut chunk = std::mem::take(&mut header);
                while chunk.len() < 64 * 1024 {
                    let (frame, _) = ethernet_frame(usize::try_from(j).unwrap(), j);
                    p.bytes.clear();
                    p.ends.clear();
                    p.record(BASE_NS + j * 4_000 + index * 1_000, &frame);
                    chunk.extend_from_slice(&p.bytes);
                    j += 1;
                }
                // Records span chunks: cut at 64 KiB, the rest starts the next one.
                let rest = chunk.split_off(64 * 1024);
                header = rest;
                produced += chunk.len() as u64;
                std::task::Poll::Ready(Some(Ok(Bytes::from(chunk))))
            });
            Ok(Box::pin(chunks) as ByteStream)
        })
    })
}

fn vm_hwm_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn memory_child(mib: u64) {
    let (_, start) = vm_hwm_kib();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (bytes, largest) = runtime.block_on(async {
        let sources = (0..MEMORY_SOURCES)
            .map(|i| source(&format!("h{i}/eth0"), vec![generated(i, mib)]))
            .collect();
        let mut stream = std::pin::pin!(merge(section(), sources));
        let (mut bytes, mut largest) = (0usize, 0usize);
        while let Some(batch) = stream.next().await {
            let batch = batch.unwrap();
            bytes += batch.len();
            largest = largest.max(batch.len());
        }
        (bytes, largest)
    });
    assert!(
        bytes as u64 > MEMORY_SOURCES * (mib << 20),
        "all input merged: {bytes} bytes out"
    );
    assert!(largest <= FLUSH_BYTES + 9100, "an output batch of {largest} bytes");
    let (peak, _) = vm_hwm_kib();
    println!("merge-memory {peak} {start}");
}
