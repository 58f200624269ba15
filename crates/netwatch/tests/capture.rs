//! `netwatch capture` against the real kernel: two hosts in network namespaces,
//! known frames sent both ways, and the exact packets each capture wrote.
//!
//! Host `b` is the capturing host, so *local* is b's side (10.203.0.2,
//! fd00:203::2) and *remote* is a's addresses. Injected frames are addressed to a
//! MAC nobody has, so neither IP stack answers them: the captures see exactly the
//! frames below, plus the kernel's own IPv6/ARP chatter, which no TCP/UDP or
//! address filter here matches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netwatch_testkit::{A4, A6, B4, B6, Frame, IF_A, IF_B, NOBODY_MAC, NetnsPair, Proto, read_pcap};

use crate::util::{Running, netwatch_cmd, wait_for_records};

/// Small rings keep many parallel captures cheap.
const SMALL_RING: [&str; 4] = ["--ring-blocks", "4", "--ring-block-size", "64KiB"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Sent by a, received on vB.
    In,
    /// Sent by b out of vB.
    Out,
}

/// The test frames: name, direction, bytes.
struct Traffic {
    frames: Vec<(&'static str, Dir, Vec<u8>)>,
}

impl Traffic {
    fn new(pair: &NetnsPair) -> Self {
        let mac_a = NetnsPair::mac(&pair.a, IF_A);
        let mac_b = NetnsPair::mac(&pair.b, IF_B);
        let spec: [(&'static str, Dir, &str, &str, Proto); 10] = [
            ("t4in", Dir::In, A4[0], B4, Proto::Tcp(40000, 80)),
            ("t4out", Dir::Out, B4, A4[0], Proto::Tcp(80, 40000)),
            ("u4in", Dir::In, A4[1], B4, Proto::Udp(5353, 53)),
            ("u4out", Dir::Out, B4, A4[1], Proto::Udp(53, 5353)),
            ("t4in3", Dir::In, A4[2], B4, Proto::Tcp(1234, 443)),
            ("icmp", Dir::In, A4[0], B4, Proto::Icmp),
            ("t6in", Dir::In, A6[0], B6, Proto::Tcp(40001, 80)),
            ("u6out", Dir::Out, B6, A6[1], Proto::Udp(53, 5300)),
            ("u4hi", Dir::In, A4[0], B4, Proto::Udp(7000, 7001)),
            ("t4ssh", Dir::Out, B4, A4[2], Proto::Tcp(22, 50000)),
        ];
        let frames = spec
            .iter()
            .map(|&(name, dir, src, dst, proto)| {
                let payload = format!("netwatch test frame {name:<8} ........................................");
                let src_mac = if dir == Dir::In { mac_a } else { mac_b };
                let frame = Frame {
                    src_mac,
                    dst_mac: NOBODY_MAC,
                    src,
                    dst,
                    proto,
                    payload: payload.as_bytes(),
                }
                .build();
                (name, dir, frame)
            })
            .collect();
        Traffic { frames }
    }

    fn send(&self, pair: &NetnsPair) {
        let pick = |d: Dir| {
            self.frames
                .iter()
                .filter(|f| f.1 == d)
                .map(|f| f.2.clone())
                .collect::<Vec<_>>()
        };
        NetnsPair::inject(&pair.a, IF_A, &pick(Dir::In));
        NetnsPair::inject(&pair.b, IF_B, &pick(Dir::Out));
    }

    /// Names of the test frames in a capture, sorted; other packets are returned apart.
    fn names_in(&self, path: &Path) -> (Vec<&'static str>, Vec<Vec<u8>>) {
        let (_, packets) = read_pcap(path);
        let mut names = Vec::new();
        let mut others = Vec::new();
        for p in packets {
            match self.frames.iter().find(|f| f.2 == p.data) {
                Some(f) => names.push(f.0),
                None => others.push(p.data),
            }
        }
        names.sort();
        (names, others)
    }
}

fn sorted(mut v: Vec<&'static str>) -> Vec<&'static str> {
    v.sort();
    v
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Every field alone, ranges, lists, several filters, both directions: one capture
/// per filter list, all running at once over the same traffic.
#[test]
fn filters_keep_exactly_the_matching_packets() {
    let pair = NetnsPair::new();
    let traffic = Traffic::new(&pair);
    let cases: Vec<(&str, Vec<&'static str>)> = vec![
        (
            r#"[{"protocol":"TCP"}]"#,
            vec!["t4in", "t4out", "t4in3", "t6in", "t4ssh"],
        ),
        (r#"[{"protocol":"UDP"}]"#, vec!["u4in", "u4out", "u6out", "u4hi"]),
        (
            r#"[{"localIPAddress":"10.203.0.2"}]"#,
            vec!["t4in", "t4out", "u4in", "u4out", "t4in3", "icmp", "u4hi", "t4ssh"],
        ),
        (r#"[{"remoteIPAddress":"10.203.0.11"}]"#, vec!["u4in", "u4out"]),
        (r#"[{"localPort":"80"}]"#, vec!["t4in", "t4out", "t6in"]),
        (r#"[{"remotePort":"5353"}]"#, vec!["u4in", "u4out"]),
        (
            r#"[{"remoteIPAddress":"10.203.0.10-10.203.0.30"}]"#,
            vec!["u4in", "u4out", "t4in3", "t4ssh"],
        ),
        (
            r#"[{"localPort":"53;443;22"}]"#,
            vec!["u4in", "u4out", "t4in3", "u6out", "t4ssh"],
        ),
        (
            r#"[{"localPort":"1-100"}]"#,
            vec!["t4in", "t4out", "u4in", "u4out", "t6in", "u6out", "t4ssh"],
        ),
        (r#"[{"remoteIPAddress":"fd00:203::3-fd00:203::1f"}]"#, vec!["u6out"]),
        (
            r#"[{"protocol":"TCP","localPort":"22"},{"protocol":"UDP","remoteIPAddress":"fd00:203::11"}]"#,
            vec!["t4ssh", "u6out"],
        ),
        (r#"[{"protocol":"Any","remotePort":"40000"}]"#, vec!["t4in", "t4out"]),
        (
            r#"[{"protocol":"UDP","localIPAddress":"10.203.0.2","localPort":"7001","remoteIPAddress":"10.203.0.1","remotePort":"7000"}]"#,
            vec!["u4hi"],
        ),
        // b never uses port 40000 (a does): no packet has it on the local side
        (r#"[{"localIPAddress":"10.203.0.2","localPort":"40000"}]"#, vec![]),
        (
            r#"[{"localIPAddress":"10.203.0.2","remoteIPAddress":"10.203.0.1"}]"#,
            vec!["t4in", "t4out", "icmp", "u4hi"],
        ),
        (
            r#"[{"protocol":"tcp","remoteIPAddress":"10.203.0.1;fd00:203::1"}]"#,
            vec!["t4in", "t4out", "t6in"],
        ),
    ];
    let dir = tmp();
    let runs: Vec<(PathBuf, Running)> = cases
        .iter()
        .enumerate()
        .map(|(i, (filters, _))| {
            let path = dir.path().join(format!("case{i}.pcap"));
            let mut args = vec!["-i", IF_B, "-w", path_str(&path), "--filters", filters];
            args.extend(SMALL_RING);
            let run = Running::start(&pair.b, &args);
            (path, run)
        })
        .collect();
    traffic.send(&pair);
    let mut failures = Vec::new();
    for ((path, run), (filters, expected)) in runs.into_iter().zip(&cases) {
        let done = run.stop();
        assert!(done.status.success(), "{filters}: {}", done.stderr);
        assert_eq!(done.stop_reason(), "ManualStop");
        let (got, others) = traffic.names_in(&path);
        if got != sorted(expected.clone()) {
            failures.push(format!("{filters}: expected {expected:?}, got {got:?}"));
        }
        // the kernel's own chatter (ARP, ICMPv6) must not pass TCP/UDP/address filters
        if !others.is_empty() {
            failures.push(format!(
                "{filters}: {} unexpected packets, first {:02x?}",
                others.len(),
                &others[0]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// No filter keeps everything, and the records are the frames, byte for byte, with
/// nanosecond timestamps close to now.
#[test]
fn no_filter_keeps_every_packet_byte_for_byte() {
    let pair = NetnsPair::new();
    let traffic = Traffic::new(&pair);
    let dir = tmp();
    let path = dir.path().join("all.pcap");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let run = Running::start(&pair.b, &["-i", IF_B, "-w", path_str(&path)]);
    traffic.send(&pair);
    let done = run.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let (header, packets) = read_pcap(&path);
    assert_eq!(header.datalink, pcap_file::DataLink::ETHERNET);
    assert_eq!(header.ts_resolution, pcap_file::TsResolution::NanoSecond);
    assert_eq!(header.snaplen, 262_144);
    let (names, _) = traffic.names_in(&path);
    assert_eq!(names, sorted(traffic.frames.iter().map(|f| f.0).collect()));
    for p in &packets {
        assert_eq!(p.orig_len as usize, p.data.len());
        assert!(
            p.timestamp >= before && p.timestamp < before + Duration::from_secs(60),
            "{:?}",
            p.timestamp
        );
    }
    let stats = done.stats();
    assert_eq!(stats["packetsCaptured"].as_u64(), Some(packets.len() as u64));
    assert_eq!(stats["kernelDrops"].as_u64(), Some(0));
    assert_eq!(
        stats["fileBytes"].as_u64(),
        Some(std::fs::metadata(&path).unwrap().len())
    );
}

/// `--capture-size` truncates in the kernel; records keep the original length.
#[test]
fn capture_size_truncates_and_keeps_the_original_length() {
    let pair = NetnsPair::new();
    let traffic = Traffic::new(&pair);
    let dir = tmp();
    let path = dir.path().join("cut.pcap");
    let run = Running::start(
        &pair.b,
        &[
            "-i",
            IF_B,
            "-w",
            path_str(&path),
            "--capture-size",
            "60",
            "--filters",
            r#"[{"protocol":"UDP"}]"#,
        ],
    );
    traffic.send(&pair);
    let done = run.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let (header, packets) = read_pcap(&path);
    assert_eq!(header.snaplen, 60);
    assert_eq!(packets.len(), 4);
    for p in &packets {
        assert_eq!(p.data.len(), 60);
        let full = traffic
            .frames
            .iter()
            .find(|f| f.2.starts_with(&p.data))
            .expect("a sent frame");
        assert_eq!(p.orig_len as usize, full.2.len());
    }
}

fn udp_burst(pair: &NetnsPair, n: usize, payload: usize) -> Vec<Vec<u8>> {
    let mac_a = NetnsPair::mac(&pair.a, IF_A);
    (0..n)
        .map(|i| {
            let body = format!("{i:06}")
                .into_bytes()
                .into_iter()
                .chain(std::iter::repeat_n(b'x', payload))
                .collect::<Vec<_>>();
            let port = 10_000 + u16::try_from(i % 1000).unwrap();
            Frame {
                src_mac: mac_a,
                dst_mac: NOBODY_MAC,
                src: A4[0],
                dst: B4,
                proto: Proto::Udp(port, 9),
                payload: &body,
            }
            .build()
        })
        .collect()
}

const UDP_ONLY: &str = r#"[{"protocol":"UDP","remotePort":"10000-10999"}]"#;

/// Starts a capture on vB of b's side of `udp_burst` traffic, with `extra` flags.
fn start_udp(pair: &NetnsPair, path: &Path, extra: &[&str]) -> Running {
    let mut args = vec!["-i", IF_B, "-w", path_str(path), "--filters", UDP_ONLY];
    args.extend_from_slice(extra);
    Running::start(&pair.b, &args)
}

#[test]
fn count_stops_with_packet_count_exceeded() {
    let pair = NetnsPair::new();
    let dir = tmp();
    let path = dir.path().join("count.pcap");
    let run = start_udp(&pair, &path, &["-c", "7"]);
    let frames = udp_burst(&pair, 20, 50);
    NetnsPair::inject(&pair.a, IF_A, &frames);
    let done = run.wait(Duration::from_secs(10));
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stop_reason(), "PacketCountExceeded");
    let (_, packets) = read_pcap(&path);
    let got: Vec<_> = packets.into_iter().map(|p| p.data).collect();
    assert_eq!(got, frames[..7].to_vec());
}

/// `-w -` streams the pcap to standard output (for `| wireshark -k -i -`).
#[test]
fn write_to_stdout_streams_a_pcap() {
    let pair = NetnsPair::new();
    let dir = tmp();
    let path = dir.path().join("stdout.pcap");
    let out = std::fs::File::create(&path).unwrap();
    let run = Running::start_with_stdout(
        &pair.b,
        &["-i", IF_B, "-w", "-", "--filters", UDP_ONLY, "-c", "4"],
        out.into(),
    );
    let frames = udp_burst(&pair, 4, 30);
    NetnsPair::inject(&pair.a, IF_A, &frames);
    let done = run.wait(Duration::from_secs(10));
    assert!(done.status.success(), "{}", done.stderr);
    assert!(done.stderr.contains("written to standard output"), "{}", done.stderr);
    let (_, packets) = read_pcap(&path);
    assert_eq!(packets.into_iter().map(|p| p.data).collect::<Vec<_>>(), frames);
}

#[test]
fn time_limit_stops_on_time_with_time_exceeded() {
    let pair = NetnsPair::new();
    let dir = tmp();
    let path = dir.path().join("time.pcap");
    let start = Instant::now();
    let run = start_udp(&pair, &path, &["--time-limit", "2"]);
    let frames = udp_burst(&pair, 5, 50);
    NetnsPair::inject(&pair.a, IF_A, &frames);
    let done = run.wait(Duration::from_secs(10));
    let took = start.elapsed();
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stop_reason(), "TimeExceeded");
    assert!(took >= Duration::from_secs(2), "stopped after {took:?}");
    // --stats-json: a line of counters each second before the final one
    let progress = done
        .stderr
        .lines()
        .filter(|l| l.starts_with('{') && !l.contains("stopReason"))
        .count();
    assert!(progress >= 1, "no progress line:\n{}", done.stderr);
    let (_, packets) = read_pcap(&path);
    assert_eq!(packets.len(), 5, "packets sent before the limit are all kept");
}

#[test]
fn capture_limit_stops_before_the_file_would_pass_it() {
    let pair = NetnsPair::new();
    let dir = tmp();
    let path = dir.path().join("bytes.pcap");
    // records of 16 + 150 bytes: the header and 6 records fit in 1024 bytes, a 7th would not
    let run = start_udp(&pair, &path, &["--capture-limit", "1024"]);
    let frames = udp_burst(&pair, 20, 150 - 42 - 6);
    assert_eq!(frames[0].len(), 150);
    NetnsPair::inject(&pair.a, IF_A, &frames);
    let done = run.wait(Duration::from_secs(10));
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stop_reason(), "MaxBytesExceeded");
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(size, 24 + 6 * 166);
    let (_, packets) = read_pcap(&path);
    assert_eq!(
        packets.iter().map(|p| p.data.clone()).collect::<Vec<_>>(),
        frames[..6].to_vec()
    );
}

#[test]
fn sigterm_and_sigint_stop_with_manual_stop() {
    let pair = NetnsPair::new();
    let dir = tmp();
    for signal in ["TERM", "INT"] {
        let path = dir.path().join(format!("{signal}.pcap"));
        let run = start_udp(&pair, &path, &[]);
        NetnsPair::inject(&pair.a, IF_A, &udp_burst(&pair, 3, 10));
        run.signal(signal);
        let done = run.wait(Duration::from_secs(10));
        assert!(done.status.success(), "{}", done.stderr);
        assert_eq!(done.stop_reason(), "ManualStop");
        assert!(done.stderr.contains("3 packets captured"), "{}", done.stderr);
        assert_eq!(
            read_pcap(&path).1.len(),
            3,
            "packets sent just before the signal are kept"
        );
    }
}

/// Continuous capture: at most file-count files of at most file-size bytes, the
/// oldest deleted; what is kept is the newest packets, in order, each file a pcap.
#[test]
fn continuous_capture_rotates_and_keeps_the_newest_files() {
    let pair = NetnsPair::new();
    let dir = tmp();
    let path = dir.path().join("ring.pcap");
    let run = start_udp(
        &pair,
        &path,
        &["--continuous", "--file-count", "3", "--file-size", "1024"],
    );
    let frames = udp_burst(&pair, 40, 150 - 42 - 6);
    NetnsPair::inject(&pair.a, IF_A, &frames);
    // 6 records per file: 40 packets make 7 files, of which the last 3 remain
    wait_for_records(&dir.path().join("ring_00007.pcap"), 4);
    let done = run.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["ring_00005.pcap", "ring_00006.pcap", "ring_00007.pcap"]);
    let mut kept = Vec::new();
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 1024);
        kept.extend(read_pcap(f).1.into_iter().map(|p| p.data));
    }
    assert_eq!(kept, frames[24..].to_vec());
    assert_eq!(done.stats()["files"].as_u64(), Some(7));
}

/// `any` captures every interface in cooked form (LINUX_SLL2, as tcpdump -i any);
/// one interface sees only its own traffic.
#[test]
fn any_captures_all_interfaces_one_interface_only_its_own() {
    let pair = NetnsPair::new();
    let traffic = Traffic::new(&pair);
    let dir = tmp();
    let any = dir.path().join("any.pcap");
    let one = dir.path().join("one.pcap");
    let filters = r#"[{"protocol":"UDP"}]"#;
    let run_any = Running::start(&pair.b, &["-i", "any", "-w", path_str(&any), "--filters", filters]);
    let run_one = Running::start(&pair.b, &["-i", IF_B, "-w", path_str(&one), "--filters", filters]);
    traffic.send(&pair);
    // a datagram on b's loopback
    netwatch_testkit::run(NetnsPair::exec(&pair.b, "python3").args([
        "-c",
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'loopback datagram', ('127.0.0.1', 9))",
    ]));
    let (done_any, done_one) = (run_any.stop(), run_one.stop());
    assert!(
        done_any.status.success() && done_one.status.success(),
        "{}{}",
        done_any.stderr,
        done_one.stderr
    );
    let (h1, one_packets) = read_pcap(&one);
    assert_eq!(h1.datalink, pcap_file::DataLink::ETHERNET);
    assert_eq!(one_packets.len(), 4);
    let (h, packets) = read_pcap(&any);
    assert_eq!(h.datalink, pcap_file::DataLink::LINUX_SLL2);
    let vb_index: u32 = {
        let out = netwatch_testkit::run(NetnsPair::exec(&pair.b, "cat").arg(format!("/sys/class/net/{IF_B}/ifindex")));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    // SLL2: protocol, reserved, ifindex, hatype, packet type, address length, address
    let mut by_if: BTreeMap<u32, usize> = BTreeMap::new();
    for p in &packets {
        let proto = [p.data[0], p.data[1]];
        assert!(
            proto == [0x08, 0x00] || proto == [0x86, 0xdd],
            "protocol field {proto:02x?}"
        );
        let ifindex = u32::from_be_bytes(p.data[4..8].try_into().unwrap());
        *by_if.entry(ifindex).or_default() += 1;
        if ifindex == vb_index {
            // the network-layer packet equals the frame's, after its 14-byte Ethernet header
            let frame = traffic
                .frames
                .iter()
                .find(|f| f.2[14..] == p.data[20..])
                .expect("a sent frame");
            let pkttype = p.data[10];
            assert_eq!(
                pkttype,
                if frame.1 == Dir::In { 3 } else { 4 },
                "PACKET_OTHERHOST in, PACKET_OUTGOING out"
            );
            assert_eq!(u16::from_be_bytes([p.data[8], p.data[9]]), 1, "ARPHRD_ETHER");
        }
    }
    assert_eq!(by_if.get(&vb_index), Some(&4), "{by_if:?}");
    // loopback: the datagram once, as tcpdump shows it (its outgoing copy is dropped)
    assert_eq!(by_if.get(&1), Some(&1), "{by_if:?}");
}

#[test]
fn loopback_packets_are_captured_once_as_tcpdump_does() {
    let pair = NetnsPair::new();
    let dir = tmp();
    let ours = dir.path().join("lo.pcap");
    let theirs = dir.path().join("lo-tcpdump.pcap");
    let filters = r#"[{"protocol":"UDP","localPort":"7777"}]"#;
    let run = Running::start(&pair.b, &["-i", "lo", "-w", path_str(&ours), "--filters", filters]);
    let mut tcpdump = NetnsPair::exec(&pair.b, "tcpdump")
        .args(["-i", "lo", "-U", "-w", path_str(&theirs), "udp port 7777"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    netwatch_testkit::run(NetnsPair::exec(&pair.b, "python3").args([
        "-c",
        "import socket, time\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for i in range(40):\n    s.sendto(b'%03d' % i, ('127.0.0.1', 7777))\n    time.sleep(0.002)",
    ]));
    std::thread::sleep(Duration::from_millis(500));
    let done = run.stop();
    assert!(done.status.success(), "{}", done.stderr);
    // SIGTERM: tcpdump writes what it has and exits.
    netwatch_testkit::run(std::process::Command::new("kill").args(["-TERM", &tcpdump.id().to_string()]));
    tcpdump.wait().unwrap();
    let (_, packets) = read_pcap(&ours);
    let (_, reference) = read_pcap(&theirs);
    assert_eq!(reference.len(), 40, "tcpdump's count");
    assert_eq!(packets.len(), 40, "each datagram once");
    let ours: Vec<_> = packets.iter().map(|p| p.data.clone()).collect();
    let theirs: Vec<_> = reference.iter().map(|p| p.data.clone()).collect();
    assert_eq!(ours, theirs, "the same frames as tcpdump");
}

/// After `kill -9` the file is readable up to the last complete record: nothing that
/// was written is lost, and no reader chokes on it.
#[test]
fn kill_9_leaves_a_readable_file_with_every_written_packet() {
    let pair = NetnsPair::new();
    let dir = tmp();
    let path = dir.path().join("killed.pcap");
    let run = start_udp(&pair, &path, &[]);
    let frames = udp_burst(&pair, 300, 200);
    NetnsPair::inject(&pair.a, IF_A, &frames);
    wait_for_records(&path, 300);
    run.signal("KILL");
    let done = run.wait(Duration::from_secs(10));
    assert!(!done.status.success());
    let (_, packets) = read_pcap(&path);
    assert_eq!(packets.into_iter().map(|p| p.data).collect::<Vec<_>>(), frames);
    let report = netwatch_capture::pcap::repair(&path).unwrap();
    assert_eq!(report.records, 300);
    assert_eq!(report.bytes_removed, 0);
}

/// Real traffic through both kernels' stacks (TCP handshakes, data, FINs; UDP;
/// IPv4 and IPv6), captured at once by netwatch and by tcpdump with an equivalent
/// expression: the same packets, byte for byte.
#[test]
fn same_packets_as_tcpdump_on_real_traffic() {
    let pair = NetnsPair::new();
    let dir = tmp();
    let cases = [
        (r#"[{"protocol":"TCP","remotePort":"8080"}]"#, "tcp port 8080"),
        (
            r#"[{"protocol":"UDP","remoteIPAddress":"10.203.0.1"}]"#,
            "udp and ip host 10.203.0.1",
        ),
        (r#"[{"remoteIPAddress":"fd00:203::1"}]"#, "ip6 host fd00:203::1"),
        (
            r#"[{"protocol":"TCP","localIPAddress":"10.203.0.2","localPort":"1024-65535"}]"#,
            "tcp and ((src host 10.203.0.2 and src portrange 1024-65535) or (dst host 10.203.0.2 and dst portrange 1024-65535))",
        ),
    ];
    let mut runs = Vec::new();
    for (i, (filters, expr)) in cases.iter().enumerate() {
        let nw = dir.path().join(format!("nw{i}.pcap"));
        let td = dir.path().join(format!("td{i}.pcap"));
        let run = Running::start(&pair.b, &["-i", IF_B, "-w", path_str(&nw), "--filters", filters]);
        let tcpdump = Tcpdump::start(&pair.b, IF_B, &td, expr);
        runs.push((nw, td, run, tcpdump, *expr));
    }
    real_traffic(&pair);
    for (nw, td, run, tcpdump, expr) in runs {
        let done = run.stop();
        assert!(done.status.success(), "{}", done.stderr);
        tcpdump.stop();
        let mut ours: Vec<_> = read_pcap(&nw).1.into_iter().map(|p| p.data).collect();
        let mut theirs: Vec<_> = read_pcap(&td).1.into_iter().map(|p| p.data).collect();
        assert!(!theirs.is_empty(), "{expr}: tcpdump saw nothing");
        ours.sort();
        theirs.sort();
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{expr}: netwatch {} packets, tcpdump {}",
            ours.len(),
            theirs.len()
        );
        assert!(ours == theirs, "{expr}: same count, different packets");
    }
}

/// netwatch's own filter fields (issue 18: ICMP and ICMPv6 with type and code,
/// CIDR blocks, TCP flags, direction) on real traffic through both kernels
/// (TCP handshakes and closes, UDP, echo requests and replies, port
/// unreachables), captured at once by netwatch and by tcpdump with an
/// equivalent expression: the same packets, byte for byte. (libpcap's `tcp[]`
/// and `icmp[]` read IPv4 only, so the IPv6 halves spell out `ip6[…]`.)
#[test]
fn issue_18_netwatch_fields_keep_what_tcpdump_keeps() {
    let pair = NetnsPair::new();
    let dir = tmp();
    // Each filter list and its tcpdump references, whose packets together are
    // what the list keeps (`-Q in`/`-Q out`: libpcap's `inbound` and `outbound`
    // primitives lost the first packet they matched here).
    let in_ = |expr: &'static str| vec!["-Q", "in", expr];
    let out = |expr: &'static str| vec!["-Q", "out", expr];
    let cases: Vec<(&str, Vec<Vec<&str>>)> = vec![
        (r#"[{"protocol":"ICMP"}]"#, vec![vec!["icmp"]]),
        (
            r#"[{"protocol":"icmp","icmpType":"8","icmpCode":"0"}]"#,
            vec![vec!["icmp[icmptype] = 8 and icmp[icmpcode] = 0"]],
        ),
        (
            r#"[{"protocol":"ICMP","icmpType":"3"}]"#,
            vec![vec!["icmp[icmptype] = icmp-unreach"]],
        ),
        (
            r#"[{"protocol":"ICMPv6","icmpType":"129"}]"#,
            vec![vec!["ip6 and ip6[6] = 58 and ip6[40] = 129"]],
        ),
        (
            r#"[{"protocol":"ICMPv6","icmpType":"1","icmpCode":"4"}]"#,
            vec![vec!["ip6 and ip6[6] = 58 and ip6[40] = 1 and ip6[41] = 4"]],
        ),
        (
            r#"[{"tcpFlags":"SYN;!ACK"}]"#,
            vec![vec![
                "(tcp[tcpflags] & (tcp-syn|tcp-ack) = tcp-syn) or (ip6 and ip6[6] = 6 and ip6[53] & 0x12 = 0x02)",
            ]],
        ),
        (
            r#"[{"protocol":"TCP","tcpFlags":"fin","remotePort":"8080"}]"#,
            vec![vec![
                "tcp port 8080 and ((tcp[tcpflags] & tcp-fin != 0) or (ip6 and ip6[53] & 1 = 1))",
            ]],
        ),
        (r#"[{"direction":"outbound","protocol":"UDP"}]"#, vec![out("udp")]),
        (r#"[{"direction":"inbound"}]"#, vec![in_("ip or ip6")]),
        (
            r#"[{"localIPAddress":"10.203.0.0/24;fd00:203::/64"}]"#,
            vec![
                // libpcap's `net` matches ARP too.
                out("(ip or ip6) and (src net 10.203.0.0/24 or src net fd00:203::/64)"),
                in_("(ip or ip6) and (dst net 10.203.0.0/24 or dst net fd00:203::/64)"),
            ],
        ),
        (
            r#"[{"protocol":"ICMP","direction":"inbound"},{"protocol":"ICMPv6","icmpType":"128","direction":"outbound"}]"#,
            vec![in_("icmp"), out("ip6 and ip6[6] = 58 and ip6[40] = 128")],
        ),
    ];
    let mut runs = Vec::new();
    for (i, (filters, references)) in cases.iter().enumerate() {
        let nw = dir.path().join(format!("nw{i}.pcap"));
        let mut args = vec!["-i", IF_B, "-w", path_str(&nw), "--filters", filters];
        args.extend(SMALL_RING);
        let run = Running::start(&pair.b, &args);
        let tcpdumps: Vec<(PathBuf, Tcpdump)> = references
            .iter()
            .enumerate()
            .map(|(j, extra)| {
                let td = dir.path().join(format!("td{i}-{j}.pcap"));
                let tcpdump = Tcpdump::start_with(&pair.b, IF_B, &td, extra);
                (td, tcpdump)
            })
            .collect();
        runs.push((nw, run, tcpdumps, format!("{filters} ~ {references:?}")));
    }
    real_traffic(&pair);
    icmp_traffic(&pair);
    let mut failures = Vec::new();
    for (nw, run, tcpdumps, expr) in runs {
        let done = run.stop();
        assert!(done.status.success(), "{}", done.stderr);
        let mut theirs = Vec::new();
        for (td, tcpdump) in tcpdumps {
            tcpdump.stop();
            theirs.extend(
                read_pcap(&td)
                    .1
                    .into_iter()
                    .map(|p| p.data)
                    .filter(|p| !background(p, 14)),
            );
        }
        let mut ours: Vec<_> = read_pcap(&nw)
            .1
            .into_iter()
            .map(|p| p.data)
            .filter(|p| !background(p, 14))
            .collect();
        ours.sort();
        theirs.sort();
        if theirs.is_empty() {
            failures.push(format!("{expr}: tcpdump saw nothing"));
        } else if ours != theirs {
            let hex = |p: &Vec<u8>| p.iter().take(80).map(|b| format!("{b:02x}")).collect::<String>();
            let only = |a: &[Vec<u8>], b: &[Vec<u8>]| a.iter().filter(|p| !b.contains(p)).map(hex).collect::<Vec<_>>();
            failures.push(format!(
                "{expr}: netwatch {} packets, tcpdump {}; only netwatch's: {:?}, only tcpdump's: {:?}",
                ours.len(),
                theirs.len(),
                only(&ours, &theirs),
                only(&theirs, &ours)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `bpfExpression` (issue 18): the same tcpdump expression in netwatch (compiled
/// by libpcap for raw IP, moved to the network header, spliced with the
/// list's other filters) and in tcpdump keeps the same packets of real
/// traffic, on the Ethernet interface and on `any` (tcpdump writing
/// LINUX_SLL2 there too: the same bytes); and netwatch's program keeps the
/// same IP packets on both.
#[test]
fn issue_18_expressions_keep_what_tcpdump_keeps_on_ethernet_and_any() {
    let pair = NetnsPair::new();
    let dir = tmp();
    let out = |expr: &'static str| vec!["-Q", "out", expr];
    let cases: Vec<(&str, Vec<Vec<&str>>)> = vec![
        (r#"[{"bpfExpression":"tcp port 8080"}]"#, vec![vec!["tcp port 8080"]]),
        (
            r#"[{"bpfExpression":"tcp[tcpflags] & tcp-syn != 0 and not port 22"}]"#,
            vec![vec!["tcp[tcpflags] & tcp-syn != 0 and not port 22"]],
        ),
        (r#"[{"bpfExpression":"icmp or icmp6"}]"#, vec![vec!["icmp or icmp6"]]),
        (
            r#"[{"protocol":"UDP","remotePort":"5005"},{"direction":"outbound","bpfExpression":"ip6 and tcp"}]"#,
            vec![vec!["udp port 5005"], out("ip6 and tcp")],
        ),
    ];
    let mut runs = Vec::new();
    for (i, (filters, references)) in cases.iter().enumerate() {
        for interface in [IF_B, "any"] {
            let nw = dir.path().join(format!("nw{i}-{interface}.pcap"));
            let mut args = vec!["-i", interface, "-w", path_str(&nw), "--filters", filters];
            args.extend(SMALL_RING);
            let run = Running::start(&pair.b, &args);
            let tcpdumps: Vec<(PathBuf, Tcpdump)> = references
                .iter()
                .enumerate()
                .map(|(j, extra)| {
                    let td = dir.path().join(format!("td{i}-{j}-{interface}.pcap"));
                    let mut extra = extra.clone();
                    if interface == "any" {
                        extra.splice(0..0, ["-y", "LINUX_SLL2"]);
                    }
                    (td.clone(), Tcpdump::start_with(&pair.b, interface, &td, &extra))
                })
                .collect();
            runs.push((
                i,
                interface,
                nw,
                run,
                tcpdumps,
                format!("{interface} {filters} ~ {references:?}"),
            ));
        }
    }
    real_traffic(&pair);
    icmp_traffic(&pair);
    let vb_index: u32 =
        netwatch_testkit::run(NetnsPair::exec(&pair.b, "cat").arg(format!("/sys/class/net/{IF_B}/ifindex")))
            .stdout
            .trim_ascii()
            .iter()
            .fold(0, |n, d| n * 10 + u32::from(d - b'0'));
    let mut failures = Vec::new();
    // Per case: the IP packets netwatch kept on vB, and on `any` from vB.
    let mut ip_packets: BTreeMap<(usize, bool), Vec<Vec<u8>>> = BTreeMap::new();
    for (i, interface, nw, run, tcpdumps, what) in runs {
        let done = run.stop();
        assert!(done.status.success(), "{}", done.stderr);
        let link = if interface == "any" { 20 } else { 14 };
        let mut theirs = Vec::new();
        for (td, tcpdump) in tcpdumps {
            tcpdump.stop();
            theirs.extend(
                read_pcap(&td)
                    .1
                    .into_iter()
                    .map(|p| p.data)
                    .filter(|p| !background(p, link)),
            );
        }
        let mut ours: Vec<_> = read_pcap(&nw)
            .1
            .into_iter()
            .map(|p| p.data)
            .filter(|p| !background(p, link))
            .collect();
        ours.sort();
        theirs.sort();
        let any = interface == "any";
        let mut ip: Vec<Vec<u8>> = ours
            .iter()
            .filter(|p| !any || u32::from_be_bytes(p[4..8].try_into().unwrap()) == vb_index)
            .map(|p| p[if any { 20 } else { 14 }..].to_vec())
            .collect();
        ip.sort();
        ip_packets.insert((i, any), ip);
        if theirs.is_empty() {
            failures.push(format!("{what}: tcpdump saw nothing"));
        } else if ours != theirs {
            failures.push(format!(
                "{what}: netwatch {} packets, tcpdump {}",
                ours.len(),
                theirs.len()
            ));
        }
    }
    for i in 0..cases.len() {
        if ip_packets[&(i, false)] != ip_packets[&(i, true)] {
            failures.push(format!(
                "{}: {} IP packets on {IF_B}, {} from {IF_B} on any",
                cases[i].0,
                ip_packets[&(i, false)].len(),
                ip_packets[&(i, true)].len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `-d` lists the program of either kind of filter and `--explain` says what a
/// list keeps, both without capturing (issue 18).
#[test]
fn issue_18_dump_and_explain_are_dry_runs() {
    let dir = tmp();
    let out = dir.path().join("never.pcap");
    let filters = r#"[{"protocol":"ICMP","icmpType":"8","direction":"outbound"},{"bpfExpression":"tcp port 22"}]"#;
    let done = netwatch_cmd(&["capture", "-w", path_str(&out), "--filters", filters, "-d"]);
    assert!(done.status.success(), "{}", done.stderr);
    for line in [
        "ldh      #proto",
        "jeq      #0x8 ",
        "ld       #type",
        "ldh      [net+40]",
        "ret      #262144",
    ] {
        assert!(done.stderr.contains(line), "-d lacks {line:?}:\n{}", done.stderr);
    }
    let done = netwatch_cmd(&["capture", "-w", path_str(&out), "--filters", filters, "--explain"]);
    assert!(done.status.success(), "{}", done.stderr);
    assert!(
        done.stderr.starts_with(
            "Keeps a packet when any of these 2 filters matches it:\n  filters[0]: ICMP messages (IPv4) of type 8 \
             that this host sends (outbound)"
        ),
        "{}",
        done.stderr
    );
    assert!(
        done.stderr
            .contains(r#"filters[1]: IPv4 and IPv6 packets that the tcpdump expression "tcp port 22" keeps"#)
    );
    assert!(!out.exists());
}

/// The binary does not link libpcap: it runs where there is none, and only
/// compiling an expression asks for it, saying how to install it (issue 18).
#[test]
fn issue_18_runs_without_libpcap_until_an_expression_is_compiled() {
    let binary = crate::util::netwatch();
    let needed = netwatch_testkit::run(std::process::Command::new("readelf").args(["-d", binary]));
    let needed = String::from_utf8_lossy(&needed.stdout).into_owned();
    assert!(needed.contains("(NEEDED)") && !needed.contains("libpcap"), "{needed}");
    // A mount namespace where libpcap's file is empty: dlopen fails there.
    let library = std::fs::canonicalize("/usr/lib/x86_64-linux-gnu/libpcap.so.0.8")
        .expect("libpcap0.8 is installed for the other tests (apt-get install libpcap0.8)");
    let without = |filters: &str| {
        let script = format!(
            "mount --bind /dev/null {} && exec {} capture -w /dev/null --filters '{filters}' -d",
            library.display(),
            binary
        );
        std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .output()
            .expect("unshare runs (util-linux)")
    };
    let plain = without(r#"[{"protocol":"TCP","tcpFlags":"SYN"}]"#);
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    assert!(String::from_utf8_lossy(&plain.stdout).contains("ret      #262144"));
    let expression = without(r#"[{"bpfExpression":"tcp"}]"#);
    let stderr = String::from_utf8_lossy(&expression.stderr);
    assert_eq!(expression.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot compile tcpdump expressions here: libpcap is not installed")
            && stderr.contains("apt-get install libpcap0.8"),
        "{stderr}"
    );
}

/// Whether a frame (`link` bytes of link header) is the kernels' own chatter,
/// sent whenever they like (IPv6 neighbour discovery and multicast listener
/// reports, multicast and broadcast), rather than the test's traffic: a
/// capture started or stopped a moment apart from another may hold one more.
fn background(frame: &[u8], link: usize) -> bool {
    let Some(ip) = frame.get(link..) else { return false };
    match ip.first().map(|b| b >> 4) {
        Some(6) if ip.len() >= 41 => ip[24] == 0xff || (ip[6] == 58 && (130..=143).contains(&ip[40])),
        Some(4) if ip.len() >= 20 => ip[16] >= 224,
        _ => false,
    }
}

/// From b: 3 ICMP echo requests to a over IPv4 and 2 over IPv6 (a's kernel
/// answers them), and a UDP datagram to a closed port over each (a's kernel
/// answers port unreachable: ICMP 3/3, ICMPv6 1/4).
fn icmp_traffic(pair: &NetnsPair) {
    const CLIENT: &str = r#"
import socket, struct, sys, time
def checksum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
v4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); v4.settimeout(5)
for seq in range(3):
    head = struct.pack("!BBHHH", 8, 0, 0, 0x1818, seq) + b"netwatch echo"
    v4.sendto(head[:2] + struct.pack("!H", checksum(head + b"\0")) + head[4:], (sys.argv[1], 0))
    while v4.recv(200)[20] != 0: pass
v6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6); v6.settimeout(5)
for seq in range(2):
    v6.sendto(struct.pack("!BBHHH", 128, 0, 0, 0x1818, seq) + b"netwatch echo", (sys.argv[2], 0))
    while v6.recv(200)[0] != 129: pass
for fam, addr in ((socket.AF_INET, sys.argv[1]), (socket.AF_INET6, sys.argv[2])):
    u = socket.socket(fam, socket.SOCK_DGRAM); u.connect((addr, 9)); u.send(b"anyone?")
    time.sleep(0.2)
    try: u.send(b"anyone?")
    except ConnectionRefusedError: pass
"#;
    netwatch_testkit::run(NetnsPair::exec(&pair.b, "python3").args(["-c", CLIENT, A4[0], A6[0]]));
    std::thread::sleep(Duration::from_millis(200));
}

/// A bounded exchange: 3 TCP connections over IPv4 and 2 over IPv6 to a's port
/// 8080 (request, echo, close), and 5 UDP request/replies on port 5005.
fn real_traffic(pair: &NetnsPair) {
    const SERVER: &str = r#"
import socket, threading, sys
def tcp(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 8080)); s.listen(8); s.settimeout(15)
    for _ in range(3 if fam == socket.AF_INET else 2):
        c, _ = s.accept(); c.sendall(c.recv(1000)); c.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("10.203.0.1", 5005)); s.settimeout(15)
    for _ in range(5):
        d, a = s.recvfrom(2000); s.sendto(d, a)
ts = [threading.Thread(target=tcp, args=(socket.AF_INET, "10.203.0.1")),
      threading.Thread(target=tcp, args=(socket.AF_INET6, "fd00:203::1")), threading.Thread(target=udp)]
for t in ts: t.start()
print("ready", flush=True)
for t in ts: t.join()
"#;
    const CLIENT: &str = r#"
import socket
for fam, addr, n in ((socket.AF_INET, "10.203.0.1", 3), (socket.AF_INET6, "fd00:203::1", 2)):
    for i in range(n):
        c = socket.create_connection((addr, 8080), timeout=10); c.sendall(b"hello %d" % i)
        assert c.recv(100) == b"hello %d" % i; c.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)
for i in range(5):
    u.sendto(b"ping %d" % i, ("10.203.0.1", 5005)); assert u.recvfrom(100)[0] == b"ping %d" % i
"#;
    let mut server = serve(&pair.a, SERVER, &[]);
    netwatch_testkit::run(NetnsPair::exec(&pair.b, "python3").args(["-c", CLIENT]));
    assert!(server.wait().unwrap().success());
    // let the last FIN/ACKs cross
    std::thread::sleep(Duration::from_millis(200));
}

/// Starts the Python `script` in namespace `ns` with `args` and waits for it
/// to print `ready` (its sockets are bound).
fn serve(ns: &str, script: &str, args: &[&str]) -> std::process::Child {
    use std::io::BufRead;
    let mut server = NetnsPair::exec(ns, "python3")
        .args(["-c", script])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 server");
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    server
}

/// The port both hosts serve and connect out to in [`two_way_traffic`].
const SERVED: u16 = 9443;

/// Both hosts serve TCP and UDP on [`SERVED`] (IPv4 and IPv6) and each connects
/// out to the other's: 2 TCP connections over IPv4 and 1 over IPv6 (request,
/// echo, close) and 3 UDP request/replies each way. On `lo` (`loopback`), b
/// alone serves and connects to itself over 127.0.0.1 and ::1.
fn two_way_traffic(pair: &NetnsPair, loopback: bool) {
    const SERVER: &str = r#"
import socket, threading, sys
addrs = sys.argv[1:]
def tcp(addr, n):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 9443)); s.listen(8); s.settimeout(15)
    for _ in range(n):
        c, _ = s.accept(); c.sendall(c.recv(1000)); c.close()
def udp(addr, n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, 9443)); s.settimeout(15)
    for _ in range(n):
        d, a = s.recvfrom(2000); s.sendto(d, a)
ts = [threading.Thread(target=tcp, args=(addrs[0], 2)), threading.Thread(target=tcp, args=(addrs[1], 1)),
      threading.Thread(target=udp, args=(addrs[0], 3))]
for t in ts: t.start()
print("ready", flush=True)
for t in ts: t.join()
"#;
    const CLIENT: &str = r#"
import socket, sys
v4, v6 = sys.argv[1:]
for addr, n in ((v4, 2), (v6, 1)):
    for i in range(n):
        c = socket.create_connection((addr, 9443), timeout=10); c.sendall(b"hello %d" % i)
        assert c.recv(100) == b"hello %d" % i; c.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)
for i in range(3):
    u.sendto(b"ping %d" % i, (v4, 9443)); assert u.recvfrom(100)[0] == b"ping %d" % i
"#;
    let serve_on = |ns: &str, v4: &str, v6: &str| serve(ns, SERVER, &[v4, v6]);
    let connect = |ns: &str, v4: &str, v6: &str| {
        netwatch_testkit::run(NetnsPair::exec(ns, "python3").args(["-c", CLIENT, v4, v6]));
    };
    if loopback {
        let server = serve_on(&pair.b, "127.0.0.1", "::1");
        connect(&pair.b, "127.0.0.1", "::1");
        assert!(server.wait_with_output().unwrap().status.success());
    } else {
        let servers = [serve_on(&pair.a, A4[0], A6[0]), serve_on(&pair.b, B4, B6)];
        connect(&pair.b, A4[0], A6[0]);
        connect(&pair.a, B4, B6);
        for server in servers {
            assert!(server.wait_with_output().unwrap().status.success());
        }
    }
    // let the last FIN/ACKs cross
    std::thread::sleep(Duration::from_millis(200));
}

/// `(protocol, source address, source port, destination address, destination
/// port)` of a TCP or UDP packet behind an Ethernet header.
fn five_tuple(frame: &[u8]) -> Option<(u8, std::net::IpAddr, u16, std::net::IpAddr, u16)> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst, protocol) = match packet.net? {
        NetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
            ip.header().protocol().0,
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
            ip.header().next_header().0,
        ),
        _ => return None,
    };
    let (sport, dport) = match packet.transport? {
        TransportSlice::Tcp(t) => (t.source_port(), t.destination_port()),
        TransportSlice::Udp(u) => (u.source_port(), u.destination_port()),
        _ => return None,
    };
    Some((protocol, src, sport, dst, dport))
}

/// *Local* is this host's side of each packet, from its direction: on a host
/// that serves port P and connects out to its peer's P, `remotePort P` keeps
/// exactly its own connections out (both directions of them) and `localPort P`
/// exactly the inbound ones; address filters keep what they kept; on loopback,
/// where both ends are this host, either side may be local. Each capture is
/// checked packet by packet and against tcpdump: the union of `-Q out` and
/// `-Q in` captures with the matching port expressions. (Not one expression
/// with `inbound`/`outbound`: libpcap 1.10 filters the first ring block again
/// in user space, where those read the packet type wrongly, and drops the
/// first packet.)
#[test]
fn local_is_this_hosts_side_of_each_packet() {
    type Tuple = (u8, std::net::IpAddr, u16, std::net::IpAddr, u16);
    let pair = NetnsPair::new();
    let dir = tmp();
    let p = SERVED;
    let b: [std::net::IpAddr; 2] = [B4.parse().unwrap(), B6.parse().unwrap()];
    let from_b = move |t: &Tuple| b.contains(&t.1);
    let to_b = move |t: &Tuple| b.contains(&t.3);
    // b's connections out to port P, and those in to its own P.
    let outward = move |t: &Tuple| (from_b(t) && t.4 == p) || (to_b(t) && t.2 == p);
    let inward = move |t: &Tuple| (from_b(t) && t.2 == p) || (to_b(t) && t.4 == p);
    let port_p = format!("(tcp or udp) and port {p}");
    // tcpdump's references: (interface, -Q direction, expression).
    let references: Vec<(&str, &str, String)> = vec![
        (IF_B, "out", format!("(tcp or udp) and dst port {p}")),
        (IF_B, "in", format!("(tcp or udp) and src port {p}")),
        (IF_B, "out", format!("(tcp or udp) and src port {p}")),
        (IF_B, "in", format!("(tcp or udp) and dst port {p}")),
        (IF_B, "inout", format!("ip host {B4} and ip host {}", A4[0])),
        ("lo", "inout", port_p),
        (IF_B, "out", format!("tcp and dst port {p}")),
        (IF_B, "in", format!("tcp and src port {p}")),
        (IF_B, "out", format!("udp and src port {p}")),
        (IF_B, "in", format!("udp and dst port {p}")),
    ];
    // (interface, filters, the references whose union it must equal, which
    // packets belong by their 5-tuple).
    type Belongs = Box<dyn Fn(&Tuple) -> bool>;
    let cases: Vec<(&str, String, Vec<usize>, Belongs)> = vec![
        (
            IF_B,
            format!(r#"[{{"remotePort":"{p}"}}]"#),
            vec![0, 1],
            Box::new(outward),
        ),
        (
            IF_B,
            format!(r#"[{{"localPort":"{p}"}}]"#),
            vec![2, 3],
            Box::new(inward),
        ),
        (
            IF_B,
            format!(r#"[{{"protocol":"TCP","remotePort":"{p}"}},{{"protocol":"UDP","localPort":"{p}"}}]"#),
            vec![6, 7, 8, 9],
            Box::new(move |t| (t.0 == 6 && outward(t)) || (t.0 == 17 && inward(t))),
        ),
        // Addresses pin the sides: both conversations, as before.
        (
            IF_B,
            format!(r#"[{{"localIPAddress":"{B4}","remoteIPAddress":"{}"}}]"#, A4[0]),
            vec![4],
            Box::new(|t| t.1.is_ipv4()),
        ),
        // Loopback: both ends are this host, so both filters keep everything on port P.
        (
            "lo",
            format!(r#"[{{"remotePort":"{p}"}}]"#),
            vec![5],
            Box::new(move |t| t.2 == p || t.4 == p),
        ),
        (
            "lo",
            format!(r#"[{{"localPort":"{p}"}}]"#),
            vec![5],
            Box::new(move |t| t.2 == p || t.4 == p),
        ),
    ];
    let runs: Vec<(PathBuf, Running)> = cases
        .iter()
        .enumerate()
        .map(|(i, (interface, filters, _, _))| {
            let nw = dir.path().join(format!("nw{i}.pcap"));
            let mut args = vec!["-i", interface, "-w", path_str(&nw), "--filters", filters];
            args.extend(SMALL_RING);
            (nw.clone(), Running::start(&pair.b, &args))
        })
        .collect();
    let tcpdumps: Vec<(PathBuf, Tcpdump)> = references
        .iter()
        .enumerate()
        .map(|(i, (interface, direction, expr))| {
            let td = dir.path().join(format!("td{i}.pcap"));
            let direction = format!("-Q{direction}");
            let tcpdump = Tcpdump::start_with(&pair.b, interface, &td, &[&direction, expr]);
            (td, tcpdump)
        })
        .collect();
    two_way_traffic(&pair, false);
    two_way_traffic(&pair, true);
    let captured: Vec<Vec<Vec<u8>>> = runs
        .into_iter()
        .map(|(path, run)| {
            let done = run.stop();
            assert!(done.status.success(), "{}", done.stderr);
            read_pcap(&path).1.into_iter().map(|p| p.data).collect()
        })
        .collect();
    let reference: Vec<Vec<Vec<u8>>> = tcpdumps
        .into_iter()
        .map(|(path, tcpdump)| {
            tcpdump.stop();
            read_pcap(&path).1.into_iter().map(|p| p.data).collect()
        })
        .collect();
    let mut failures = Vec::new();
    for (ours, (interface, filters, union, belongs)) in captured.into_iter().zip(&cases) {
        let tuples: Vec<_> = ours.iter().map(|f| five_tuple(f)).collect();
        let count = |protocol| tuples.iter().flatten().filter(|t| t.0 == protocol).count();
        // Each conversation holds TCP (handshake, data, close) and UDP: a
        // filter keeps several packets of each protocol it names.
        if count(6) + count(17) < 8 {
            failures.push(format!(
                "{interface} {filters}: only {} TCP and {} UDP packets",
                count(6),
                count(17)
            ));
        }
        if let Some(stray) = tuples.iter().find(|t| !t.as_ref().is_some_and(belongs)) {
            failures.push(format!("{interface} {filters}: kept {stray:?}, which it should not"));
        }
        let mut expected: Vec<Vec<u8>> = union.iter().flat_map(|&r| reference[r].clone()).collect();
        expected.sort();
        let mut ours = ours;
        ours.sort();
        if ours != expected {
            let only = |a: &[Vec<u8>], b: &[Vec<u8>]| -> Vec<_> {
                a.iter().filter(|f| !b.contains(f)).map(|f| five_tuple(f)).collect()
            };
            failures.push(format!(
                "{interface} {filters}: {} packets, tcpdump {}; only netwatch's: {:?}, only tcpdump's: {:?}",
                ours.len(),
                expected.len(),
                only(&ours, &expected),
                only(&expected, &ours)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

struct Tcpdump {
    child: std::process::Child,
}

impl Tcpdump {
    fn start(ns: &str, interface: &str, path: &Path, expr: &str) -> Self {
        Self::start_with(ns, interface, path, &[expr])
    }

    /// tcpdump with `extra` (options, then the expression) after the usual options.
    fn start_with(ns: &str, interface: &str, path: &Path, extra: &[&str]) -> Self {
        let mut child = NetnsPair::exec(ns, "tcpdump")
            .args([
                "-i",
                interface,
                "-n",
                "-U",
                "--immediate-mode",
                // Immediate mode retires a block per packet or so: libpcap's
                // default 2 MiB (two blocks) drops packets on loopback then.
                "-B",
                "32768",
                "-s",
                "262144",
                "-w",
                path_str(path),
            ])
            .args(extra)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tcpdump runs (apt-get install -y tcpdump)");
        use std::io::BufRead;
        let mut line = String::new();
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        err.read_line(&mut line).unwrap();
        // With -y, tcpdump first says which link type it chose.
        if line.contains("data link type") {
            line.clear();
            err.read_line(&mut line).unwrap();
        }
        assert!(line.contains("listening on"), "tcpdump: {line}");
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Tcpdump { child }
    }

    fn stop(mut self) {
        netwatch_testkit::run(std::process::Command::new("kill").args(["-INT", &self.child.id().to_string()]));
        assert!(self.child.wait().unwrap().success());
    }
}

/// Every bad flag or filter: exit code 2, a message naming what is wrong, and no
/// file created.
#[test]
fn bad_flags_and_filters_are_refused_before_capturing() {
    let dir = tmp();
    let out = dir.path().join("never.pcap");
    let w = path_str(&out);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--filters", r#"[{"remoteIPAddress":"1.1.1.1-255.255.255"}]"#],
            "255.255.255",
        ),
        (
            &["--filters", r#"[{"remoteIPAddress":"10.0.0.9-10.0.0.1"}]"#],
            "filters[0].remoteIPAddress",
        ),
        (
            &["--filters", r#"[{"localIPAddress":"10.0.0.1-fd00::1"}]"#],
            "filters[0].localIPAddress",
        ),
        (&["--filters", r#"[{"localPort":"70000"}]"#], "70000"),
        (
            &["--filters", r#"[{"protocol":"ICMP","localPort":"80"}]"#],
            "filters[0].localPort cannot match: ICMP has no ports",
        ),
        (
            &["--filters", r#"[{"icmpType":"8"}]"#],
            "filters[0].icmpType is only for ICMP messages",
        ),
        (
            &["--filters", r#"[{"protocol":"ICMPv6","icmpCode":"300"}]"#],
            "filters[0].icmpCode \"300\" is out of range",
        ),
        (
            &["--filters", r#"[{"protocol":"UDP","tcpFlags":"SYN"}]"#],
            "filters[0].tcpFlags is only for TCP",
        ),
        (
            &["--filters", r#"[{"tcpFlags":"SYN+ACK"}]"#],
            "filters[0].tcpFlags \"SYN+ACK\" is not a TCP flag",
        ),
        (
            &["--filters", r#"[{"direction":"egress"}]"#],
            "filters[0].direction \"egress\" is not a direction",
        ),
        (
            &["--filters", r#"[{"localIPAddress":"10.0.0.1/8"}]"#],
            "has host bits set under its /8 mask: write the network, \"10.0.0.0/8\"",
        ),
        (
            &["--filters", r#"[{"protocol":"ICMP","remoteIPAddress":"fd00::/64"}]"#],
            "filters[0].remoteIPAddress \"fd00::/64\" is IPv6 only, but ICMP is never IPv6",
        ),
        (
            &["--filters", r#"[{"protocol":"TCP","localip":"10.0.0.1"}]"#],
            "localip",
        ),
        (
            &["--filters", r#"[{"remotePort":"80-90;100"}]"#],
            "filters[0].remotePort",
        ),
        (&["--filters", r#"{"protocol":"#], "--filters"),
        (
            &["--filters", "@/nonexistent/filters.json"],
            "/nonexistent/filters.json",
        ),
        (
            &["--filters", r#"[{"bpfExpression":"tcp prot 22"}]"#],
            "filters[0].bpfExpression \"tcp prot 22\" does not compile: libpcap: can't parse filter expression: syntax error",
        ),
        (
            &["--filters", r#"[{"bpfExpression":"vlan and tcp"}]"#],
            "libpcap: no VLAN support for Raw IP",
        ),
        (
            &["--filters", r#"[{"bpfExpression":"less 60"}]"#],
            "reads the packet's length (len, less, greater)",
        ),
        (
            &["--filters", r#"[{"bpfExpression":"udp","bpfProgram":"1,6 0 0 1"}]"#],
            "bpfProgram, which the controller fills in from bpfExpression: leave it out",
        ),
        (&["--capture-size", "4294967296"], "--capture-size"),
        (&["--time-limit", "18001"], "--time-limit"),
        (&["--file-count", "3"], "--continuous"),
        (&["--continuous", "--file-count", "0"], "--file-count"),
        (&["--ring-block-size", "5000"], "power of two"),
        (&["-i", "nosuchif0"], "no interface named \"nosuchif0\""),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["capture", "-w", w];
        args.extend_from_slice(extra);
        let done = netwatch_cmd(&args);
        assert_eq!(done.status.code(), Some(2), "{extra:?}: {}", done.stderr);
        assert!(
            done.stderr.contains(needle),
            "{extra:?}: message does not name {needle:?}: {}",
            done.stderr
        );
        assert!(!out.exists(), "{extra:?} created a file");
    }
    let done = netwatch_cmd(&["capture", "-w", "/nonexistent-dir/x.pcap"]);
    assert_eq!(done.status.code(), Some(2), "{}", done.stderr);
    assert!(
        done.stderr.contains("directory /nonexistent-dir does not exist"),
        "{}",
        done.stderr
    );
}

/// Without CAP_NET_RAW the capture says what it needs.
#[test]
fn missing_cap_net_raw_is_explained() {
    netwatch_testkit::require_root();
    let dir = tmp();
    let out = dir.path().join("x.pcap");
    let result = std::process::Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-net_raw", "--"])
        .arg(crate::util::netwatch())
        .args(["capture", "-i", "lo", "-w", path_str(&out)])
        .output()
        .expect("setpriv (util-linux) runs");
    assert_eq!(result.status.code(), Some(1));
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        err.contains("capturing needs root or the CAP_NET_RAW capability"),
        "{err}"
    );
    assert!(!out.exists());
}

/// Issue 14: an agent says as it starts what keeps it from capturing (no
/// CAP_NET_RAW, no such interface), not at the first capture it is sent.
#[test]
fn an_agent_that_cannot_capture_says_why_as_it_starts() {
    netwatch_testkit::require_root();
    let dir = tmp();
    for (name, privileges, interface, expected) in [
        (
            "no-cap",
            &["--inh-caps=-all", "--bounding-set=-net_raw"][..],
            "lo",
            "CAP_NET_RAW is not in its effective capabilities",
        ),
        (
            "no-if",
            &["--inh-caps=-all"][..],
            "nosuchif0",
            "cannot capture on interface nosuchif0",
        ),
    ] {
        let log = dir.path().join(format!("{name}.log"));
        // No controller listens on port 9: the agent keeps trying, which is fine here.
        let mut agent = std::process::Command::new("setpriv")
            .args(privileges)
            .arg("--")
            .arg(crate::util::netwatch())
            .args([
                "agent",
                "--server",
                "http://127.0.0.1:9",
                "--enroll-token",
                "t",
                "-i",
                interface,
            ])
            .arg("--data-dir")
            .arg(dir.path().join(name))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("setpriv (util-linux) runs");
        let said = netwatch_testkit::eventually(100, Duration::from_millis(50), || {
            std::fs::read_to_string(&log).unwrap_or_default().contains(expected)
        });
        let _ = agent.kill();
        let _ = agent.wait();
        assert!(said, "{name}: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }
}

/// The capture thread runs ahead of ordinary work by default (BENCHMARKS.md: what a
/// busy CPU costs a capture at nice 0), and `--nice 0` leaves it alone.
#[test]
fn capture_thread_priority_is_raised_by_default() {
    let pair = NetnsPair::new();
    let dir = tmp();
    let nice_of = |pid: u32| -> i64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // fields after the parenthesised command name; nice is field 19
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split_whitespace().nth(16).unwrap().parse().unwrap()
    };
    for (args, expected) in [(&[][..], -10), (&["--nice", "0"][..], 0), (&["--nice", "5"][..], 5)] {
        let path = dir.path().join("p.pcap");
        let mut all = vec!["-i", IF_B, "-w", path_str(&path)];
        all.extend_from_slice(args);
        let run = Running::start(&pair.b, &all);
        let pid = run.pid();
        assert!(
            netwatch_testkit::eventually(100, Duration::from_millis(20), || nice_of(pid) == expected),
            "{args:?}: nice {} instead of {expected}",
            nice_of(pid)
        );
        assert!(run.stop().status.success());
    }
}

/// A capture with a `bpfExpression` end to end (issue 18): the CLI checks it,
/// the controller compiles it on the PUT and shows the program as the
/// read-only `bpfProgram`, and an agent on a host where libpcap cannot be
/// loaded runs it: the stored file holds exactly the matching packets.
#[test]
fn issue_18_an_expression_runs_on_an_agent_without_libpcap() {
    use crate::deployment::{Deployment, Guard, VM, send_udp, udp_packets};

    let mut nw = Deployment::controller_only();
    let token = nw.credential("agent_token");
    let library = std::fs::canonicalize("/usr/lib/x86_64-linux-gnu/libpcap.so.0.8")
        .expect("libpcap0.8 is installed for the other tests (apt-get install libpcap0.8)");
    // The agent in a, in a mount namespace where libpcap's file is empty.
    let script = format!(
        "mount --bind /dev/null {} && exec {} agent --server {} --enroll-token {token} --ca {} \
         --vm-name {VM} -g rg1 -l westus -i {IF_A} --data-dir {}",
        library.display(),
        crate::util::netwatch(),
        nw.url,
        nw.ca.display(),
        nw.dir.path().join("agent").display()
    );
    let agent = NetnsPair::exec(&nw.pair.a, "unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(nw.dir.path().join("agent.log")).unwrap())
        .spawn()
        .expect("spawn the agent");
    nw.agent = Some(Guard(agent));
    nw.wait_for_agent();
    let cli = |args: &[&str]| {
        let out = NetnsPair::exec(&nw.pair.b, crate::util::netwatch())
            .args(["network", "watcher", "packet-capture"])
            .args(args)
            .env("NETWATCH_URL", &nw.url)
            .env("NETWATCH_TOKEN", &nw.token)
            .env("NETWATCH_CA", &nw.ca)
            .env("XDG_CONFIG_HOME", nw.dir.path().join("no-config"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };
    let create = |filters: &str| {
        cli(&[
            "create",
            "-g",
            "rg1",
            "--vm",
            VM,
            "-n",
            "pcx",
            "--storage-account",
            "netwatchlocal",
            "--filters",
            filters,
        ])
    };
    // A bad expression: the CLI says libpcap's message before sending anything.
    let (code, _, stderr) = create(r#"[{"bpfExpression":"udp dst prot 7501"}]"#);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("filters[0].bpfExpression \"udp dst prot 7501\" does not compile: libpcap"),
        "{stderr}"
    );
    let (code, stdout, stderr) = create(r#"[{"direction":"inbound","bpfExpression":"udp dst port 7501"}]"#);
    assert_eq!(code, Some(0), "{stderr}\n{}", nw.logs());
    let created: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(created["filters"][0]["bpfExpression"], "udp dst port 7501", "{created}");
    let program = created["filters"][0]["bpfProgram"].as_str().unwrap_or_default();
    assert!(program.split(',').count() > 5, "the controller's program: {created}");
    send_udp(&nw.pair, &[7501, 7509], 30, 120);
    let (code, _, stderr) = cli(&["stop", "--name", "pcx", "--location", "westus"]);
    assert_eq!(code, Some(0), "{stderr}");
    let file = nw.dir.path().join("pcx.cap");
    let (code, _, stderr) = cli(&[
        "download",
        "--name",
        "pcx",
        "--location",
        "westus",
        "--output-file",
        path_str(&file),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let packets = udp_packets(&file);
    assert_eq!(packets.len(), 30, "{packets:?}\n{}", nw.logs());
    assert!(packets.iter().all(|p| p.0 == 7501), "{packets:?}");
}
