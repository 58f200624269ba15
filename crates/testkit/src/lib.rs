//! What netwatch's test suites share (a dev-dependency only): test hosts in
//! network namespaces joined by a veth pair, exact frames injected on them, a pcap
//! reader, real storage servers, and bounded waits.
//!
//! Every test host is real: the kernel's own network stack in a namespace this
//! process made, with unique names, removed when its guard drops (and leftovers of
//! dead test processes removed at start). Test traffic never leaves those
//! namespaces. A test that cannot make them (not root, no `ip`) fails with a
//! message saying so; it never skips.
//!
//! # Layout
//! - [`NetnsPair`]: two hosts, `a` and `b`, with IPv4 and IPv6 addresses.
//! - [`NetnsFleet`]: a switch (a bridge in namespace `hub`) and N hosts on it.
//! - [`Frame`]: Ethernet frames built with etherparse, sent by [`NetnsPair::inject`].
//! - [`read_pcap`]: every record of a pcap file, via the independent `pcap-file` reader.
//! - [`servers`]: [`Azurite`] (Azure Blob), [`Moto`] (S3) and [`FakeGcs`] (Google Cloud Storage) on
//!   127.0.0.1, each with a fresh container or bucket; service-account keys for GCS accounts
//!   ([`FakeGcs::service_account_key`], [`servers::service_account_key_json`], [`servers::rsa_key_pem`]).
//! - [`eventually!`]: a bounded retry.

pub mod servers;

pub use servers::{Azurite, FakeGcs, Moto, Place, Postgres};

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Prefix of every namespace the test kit makes: `nwt{pid}x{n}{a|b}`.
const NS_PREFIX: &str = "nwt";

/// The interface name on each side of a pair.
pub const IF_A: &str = "vA";
pub const IF_B: &str = "vB";
/// Addresses: host `a` has the first address of each list, plus extras that filter
/// tests use as other "remote" hosts; host `b` has one of each family.
pub const A4: [&str; 3] = ["10.203.0.1", "10.203.0.11", "10.203.0.21"];
pub const B4: &str = "10.203.0.2";
pub const A6: [&str; 2] = ["fd00:203::1", "fd00:203::11"];
pub const B6: &str = "fd00:203::2";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command to completion; panics with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

/// Fails the test, with a message, where namespaces cannot be made.
pub fn require_root() {
    let out = Command::new("id").arg("-u").output().expect("`id` runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "these tests capture real packets in network namespaces: run them as root (CI does)"
    );
    assert!(
        Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success()),
        "these tests need iproute2's `ip`: apt-get install -y iproute2"
    );
}

/// Removes namespaces left by test processes that no longer exist.
fn remove_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('x') else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// Two test hosts, namespaces `a` and `b`, joined by a veth pair (`vA` in `a`,
/// `vB` in `b`). Both namespaces are deleted on drop.
#[derive(Debug)]
pub struct NetnsPair {
    pub a: String,
    pub b: String,
}

impl NetnsPair {
    pub fn new() -> Self {
        require_root();
        remove_leftovers();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{NS_PREFIX}{}x{n}", std::process::id());
        let pair = NetnsPair {
            a: format!("{base}a"),
            b: format!("{base}b"),
        };
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        // Both ends are created inside their namespaces: no name in the root namespace.
        ip(&[
            "link", "add", IF_A, "netns", &pair.a, "type", "veth", "peer", "name", IF_B, "netns", &pair.b,
        ]);
        for a in A4 {
            ip(&["-n", &pair.a, "addr", "add", &format!("{a}/24"), "dev", IF_A]);
        }
        for a in A6 {
            ip(&[
                "-n",
                &pair.a,
                "-6",
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                IF_A,
                "nodad",
            ]);
        }
        ip(&["-n", &pair.b, "addr", "add", &format!("{B4}/24"), "dev", IF_B]);
        ip(&[
            "-n",
            &pair.b,
            "-6",
            "addr",
            "add",
            &format!("{B6}/64"),
            "dev",
            IF_B,
            "nodad",
        ]);
        for (ns, dev) in [(&pair.a, IF_A), (&pair.b, IF_B)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        let up = |ns: &str, dev: &str| {
            let out = ip(&["-n", ns, "-o", "link", "show", dev]);
            String::from_utf8_lossy(&out.stdout).contains("state UP")
        };
        assert!(
            eventually(50, Duration::from_millis(100), || up(&pair.a, IF_A)
                && up(&pair.b, IF_B)),
            "veth pair did not come up within 5 s"
        );
        pair
    }

    /// A command run inside namespace `ns` (`ip netns exec`).
    pub fn exec(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// The MAC address of `dev` in `ns`.
    pub fn mac(ns: &str, dev: &str) -> [u8; 6] {
        let out = run(Self::exec(ns, "cat").arg(format!("/sys/class/net/{dev}/address")));
        let text = String::from_utf8_lossy(&out.stdout);
        let mut mac = [0u8; 6];
        for (m, part) in mac.iter_mut().zip(text.trim().split(':')) {
            *m = u8::from_str_radix(part, 16).expect("MAC address in hex");
        }
        mac
    }

    /// Sends each frame, unchanged, out of `dev` in `ns` through an AF_PACKET socket
    /// (Python's, so the test process itself needs no namespace switch). Returns when
    /// all were handed to the kernel.
    pub fn inject(ns: &str, dev: &str, frames: &[Vec<u8>]) {
        const SCRIPT: &str = "import socket,sys\n\
s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
s.bind((sys.argv[1],0))\n\
for line in sys.stdin:\n    line=line.strip()\n    if line: s.send(bytes.fromhex(line))\n";
        let mut child = Self::exec(ns, "python3")
            .args(["-c", SCRIPT, dev])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs (apt-get install -y python3)");
        let mut input = String::new();
        for f in frames {
            for byte in f {
                input.push_str(&format!("{byte:02x}"));
            }
            input.push('\n');
        }
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())
            .expect("write frames");
        let out = child.wait_with_output().expect("python3 finishes");
        assert!(
            out.status.success(),
            "injecting frames failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Default for NetnsPair {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// The fleet's subnet: the hub is `10.204.0.1`, host `i` is `10.204.0.{10 + i}`.
pub const FLEET_HUB4: &str = "10.204.0.1";
/// Each fleet host's interface (`vH`), its peer on the hub's bridge `p{i}`.
pub const IF_HOST: &str = "vH";

/// Test hosts on one switch: namespace `hub` holds a bridge (`br0`,
/// [`FLEET_HUB4`]) and one veth per host; each host namespace has its end
/// ([`IF_HOST`]) with address [`NetnsFleet::host_addr`]. A controller runs in
/// `hub`, an agent per host. Every namespace is deleted on drop.
#[derive(Debug)]
pub struct NetnsFleet {
    pub hub: String,
    pub hosts: Vec<String>,
}

impl NetnsFleet {
    /// `count` hosts (at most 200) and the hub, every link up.
    pub fn new(count: usize) -> Self {
        assert!(count <= 200, "a fleet has at most 200 hosts");
        require_root();
        remove_leftovers();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{NS_PREFIX}{}x{n}", std::process::id());
        let fleet = NetnsFleet {
            hub: format!("{base}h"),
            hosts: (0..count).map(|i| format!("{base}n{i}")).collect(),
        };
        ip(&["netns", "add", &fleet.hub]);
        ip(&["-n", &fleet.hub, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &fleet.hub,
            "addr",
            "add",
            &format!("{FLEET_HUB4}/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", &fleet.hub, "link", "set", "lo", "up"]);
        ip(&["-n", &fleet.hub, "link", "set", "br0", "up"]);
        for (i, ns) in fleet.hosts.iter().enumerate() {
            ip(&["netns", "add", ns]);
            let peer = format!("p{i}");
            ip(&[
                "link", "add", IF_HOST, "netns", ns, "type", "veth", "peer", "name", &peer, "netns", &fleet.hub,
            ]);
            ip(&["-n", &fleet.hub, "link", "set", &peer, "master", "br0"]);
            ip(&["-n", &fleet.hub, "link", "set", &peer, "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", Self::host_addr(i)),
                "dev",
                IF_HOST,
            ]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", IF_HOST, "up"]);
        }
        let up = |ns: &str, dev: &str| {
            let out = ip(&["-n", ns, "-o", "link", "show", dev]);
            String::from_utf8_lossy(&out.stdout).contains("state UP")
        };
        assert!(
            eventually(50, Duration::from_millis(100), || fleet
                .hosts
                .iter()
                .all(|ns| up(ns, IF_HOST))),
            "the fleet's links did not come up within 5 s"
        );
        fleet
    }

    /// Host `i`'s IPv4 address.
    pub fn host_addr(i: usize) -> String {
        format!("10.204.0.{}", 10 + i)
    }
}

impl Drop for NetnsFleet {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain([&self.hub]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A frame to inject: Ethernet + IPv4/IPv6 + TCP/UDP/ICMP, built with etherparse.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: &'a str,
    pub dst: &'a str,
    pub proto: Proto,
    pub payload: &'a [u8],
}

/// The transport of a test frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp(u16, u16),
    Udp(u16, u16),
    Icmp,
}

/// A MAC address no interface has: frames sent to it are delivered to packet
/// sockets (PACKET_OTHERHOST) but dropped by the IP stack, so they draw no replies.
pub const NOBODY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

impl Frame<'_> {
    pub fn build(&self) -> Vec<u8> {
        use etherparse::PacketBuilder;
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let src: std::net::IpAddr = self.src.parse().expect("test address");
        let dst: std::net::IpAddr = self.dst.parse().expect("test address");
        let ip = match (src, dst) {
            (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
            (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
            _ => panic!("test frame mixes IPv4 and IPv6"),
        };
        let mut out = Vec::new();
        match self.proto {
            Proto::Tcp(sp, dp) => {
                let b = ip.tcp(sp, dp, 1, 1024);
                b.write(&mut out, self.payload).expect("build frame");
            }
            Proto::Udp(sp, dp) => {
                let b = ip.udp(sp, dp);
                b.write(&mut out, self.payload).expect("build frame");
            }
            Proto::Icmp => {
                if src.is_ipv4() {
                    ip.icmpv4_echo_request(7, 1)
                        .write(&mut out, self.payload)
                        .expect("build frame");
                } else {
                    ip.icmpv6_echo_request(7, 1)
                        .write(&mut out, self.payload)
                        .expect("build frame");
                }
            }
        }
        out
    }
}

/// One record read back from a pcap file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub timestamp: Duration,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// The header facts and every record of a pcap file, read by the independent
/// `pcap-file` crate. Panics (failing the test) on a malformed file.
///
/// Records are read raw and checked here: pcap-file 2.0's own check wrongly
/// refuses an original length above the snap length, which is what truncation is.
pub fn read_pcap(path: &Path) -> (pcap_file::pcap::PcapHeader, Vec<Packet>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut reader = pcap_file::pcap::PcapReader::new(&bytes[..])
        .unwrap_or_else(|e| panic!("{} is not a pcap file: {e}", path.display()));
    let header = reader.header();
    let nanos = header.ts_resolution == pcap_file::TsResolution::NanoSecond;
    let mut packets = Vec::new();
    while let Some(p) = reader.next_raw_packet() {
        let p = p.unwrap_or_else(|e| panic!("{}: bad record after {} packets: {e}", path.display(), packets.len()));
        let bad = |what: &str| panic!("{}: record {}: {what}", path.display(), packets.len());
        if p.incl_len > header.snaplen {
            bad("stored length above the snap length");
        }
        if p.incl_len > p.orig_len {
            bad("stored length above the original length");
        }
        let frac_ns = if nanos {
            p.ts_frac
        } else {
            p.ts_frac.saturating_mul(1000)
        };
        if frac_ns >= 1_000_000_000 {
            bad("fraction of a second out of range");
        }
        packets.push(Packet {
            timestamp: Duration::new(u64::from(p.ts_sec), frac_ns),
            orig_len: p.orig_len,
            data: p.data.into_owned(),
        });
    }
    (header, packets)
}

/// Calls `check` up to `tries` times, `pause` apart, until it returns true.
pub fn eventually(tries: u32, pause: Duration, mut check: impl FnMut() -> bool) -> bool {
    for i in 0..tries {
        if check() {
            return true;
        }
        if i + 1 < tries {
            std::thread::sleep(pause);
        }
    }
    false
}

/// Asserts that a condition becomes true within a bounded number of tries.
#[macro_export]
macro_rules! eventually {
    ($cond:expr, $($msg:tt)+) => {
        assert!(
            $crate::eventually(100, ::std::time::Duration::from_millis(50), || $cond),
            $($msg)+
        )
    };
}
