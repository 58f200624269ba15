//! Azure's `PacketCaptureFilter` and netwatch's extensions to it: the wire
//! object, its validation into a [`CaptureFilter`], and the reference
//! evaluators of which packets a filter list keeps ([`filters_match`] on a
//! [`Flow`], [`filters_keep`] with the packet's bytes for expressions), and
//! [`explain`], the same in words.
//!
//! This module is the definition of what a filter *means*; the capture engine's
//! BPF compiler (`netwatch_capture::bpf`) must agree with the evaluators, and
//! its tests check that it does. It does no I/O: callers describe a packet as
//! a [`Flow`] (and, for expressions, a `netwatch_bpf::PacketView`).
//!
//! # Syntax (Azure's, with the documented gaps filled in)
//! - Every field is optional; a missing field, `null` and `""` all mean "not set".
//! - `protocol`: `TCP`, `UDP` or `Any`, in any case; default `Any`; netwatch
//!   adds `ICMP` and `ICMPv6` (below).
//! - `localIPAddress` / `remoteIPAddress`: one address (`10.0.0.3`), one inclusive
//!   range (`1.1.1.1-255.255.255.255`), or a list of single addresses joined by
//!   `;` (`,` is accepted too; empty entries, such as a trailing `;`, are
//!   ignored). IPv4 and IPv6, parsed by `std`; no zone ids. A range is one
//!   family and not reversed; a list may mix families. netwatch adds CIDR
//!   blocks, alone or in lists (`10.0.0.0/8;fd00::/64;192.168.1.7`), but not as
//!   a range's end; a block with host bits set under its mask (`10.0.0.1/8`) is
//!   refused, naming the network to write and the single address: `ip route`
//!   refuses it the same way, and a typo there would capture a whole /8.
//! - `localPort` / `remotePort`: the same shapes (no CIDR), ports 0-65535.
//! - Azure supports neither several ranges in one field nor a range inside a
//!   list ("Multiple ranges not currently supported. Mixing ranges with multiple
//!   entries not currently supported"); both are rejected, suggesting separate
//!   filters.
//!
//! # netwatch's fields
//! Extensions that Azure's own clients never send (documented as netwatch's in
//! the OpenAPI document); a response echoes them only when set:
//! - `protocol` `ICMP` (IPv4's protocol 1) and `ICMPv6` (IPv6's Next Header
//!   58; also `ICMP6`), with `icmpType` and `icmpCode`, one number 0-255 each,
//!   only with one of them. ICMP with addresses of IPv6 only (ICMPv6 with IPv4
//!   only), or with ports, is refused: it could never match.
//! - `tcpFlags`: flags that must be set, and with `!` clear, joined by `;`
//!   (`SYN;!ACK`); names SYN ACK FIN RST PSH URG ECE CWR in any case. Only
//!   with protocol `TCP`; with `Any` it makes the filter TCP's.
//! - `direction`: `inbound`, the packets this host receives (addressed to it,
//!   broadcast, multicast), or `outbound`, those it sends, from the kernel's
//!   packet type alone ([`Seen`]) on any interface: on loopback, each packet
//!   once each way. Overheard packets (promiscuous mode, a bridge) are neither.
//! - `bpfExpression`: a tcpdump expression (pcap-filter(7)) the packet must
//!   match too ([`Expression`]). Compiled by libpcap's own compiler where the
//!   request is made (the controller on the PUT, the CLI to check, `netwatch
//!   capture`), for raw IP, moved to read from the network header and checked
//!   (`netwatch_bpf`); the controller sends the program to agents as the
//!   read-only `bpfProgram`, which a client cannot set. Flight recorders and
//!   triggers refuse it ([`validate_filters_without_expressions`]).
//!
//! # Semantics
//! - A capture keeps a packet when ANY filter matches (an empty list keeps
//!   everything); a filter matches when EVERY field it sets matches, its
//!   `bpfExpression` included.
//! - *Local* is this host's side of each packet, *remote* the other, decided
//!   per packet from its [`Direction`] as the kernel knows it: a packet this
//!   host sends has its source local (src ~ local and dst ~ remote); one it
//!   receives (addressed to it, broadcast or multicast) has its destination
//!   local (dst ~ local and src ~ remote), where "src ~ local" means the source
//!   address is in `localIPAddress` and the source port in `localPort` (each
//!   if set). So a filter keeps both directions of the conversations it names
//!   and only those: on a host serving port 443, `remotePort 443` keeps its
//!   connections out to other hosts' port 443, not the inbound ones to its own.
//! - Where the kernel cannot tell which end is this host, either orientation
//!   matches: packets for other hosts seen in promiscuous mode or on a bridge
//!   ([`Direction::Unknown`]), and loopback traffic, whose two ends are both
//!   this host (on `lo`, `remotePort 53` keeps both directions of every
//!   conversation with port 53 at either end). Forwarded packets count as
//!   received on the way in and as sent on the way out.
//! - Ports exist only for TCP and UDP: a filter that sets a port field matches
//!   only TCP/UDP packets (of its protocol), and never an IPv4 non-first
//!   fragment; nor do ICMP's type and code or TCP's flags, which like the ports
//!   need the transport header, and only as much of it as they read.
//! - For IPv6 the transport protocol is the fixed header's Next Header field;
//!   extension headers are not walked, so a TCP segment behind a Hop-by-Hop or
//!   Fragment header is not TCP to these filters.
//! - A filter that sets any field matches only IP packets (an expression,
//!   compiled for raw IP, sees only IPv4 and IPv6 packets whatever its text);
//!   the empty filter (protocol `Any`, nothing else) matches every packet, ARP too.
//! - Filters without an expression are tried first, then those with one in
//!   the order given. A packet that an expression reads past the end of is
//!   dropped there, as the kernel ends the one program the list becomes and as
//!   tcpdump drops it ([`filters_keep`]). The same holds of a packet cut short
//!   inside a transport header that an earlier filter's fields read (no kernel
//!   sends one; a broken or hostile peer can): a list without expressions is
//!   ordered so that it never changes the answer, one with them may drop it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netwatch_bpf::{PacketView, Program};
use serde::{Deserialize, Serialize};

/// The wire name of the filter list, the root of every [`FilterError::target`].
const FILTERS: &str = "filters";
/// Wire names of the fields (also written as literals in the serde attributes
/// of [`PacketCaptureFilter`]; `wire_names_match_serde` keeps them in step).
const PROTOCOL: &str = "protocol";
const LOCAL_IP_ADDRESS: &str = "localIPAddress";
const REMOTE_IP_ADDRESS: &str = "remoteIPAddress";
const LOCAL_PORT: &str = "localPort";
const REMOTE_PORT: &str = "remotePort";
/// netwatch's extensions (module doc, "netwatch's fields").
const ICMP_TYPE: &str = "icmpType";
const ICMP_CODE: &str = "icmpCode";
const TCP_FLAGS: &str = "tcpFlags";
const DIRECTION: &str = "direction";
const BPF_EXPRESSION: &str = "bpfExpression";
/// Read-only: the compiled `bpfExpression`, filled in by the controller.
const BPF_PROGRAM: &str = "bpfProgram";
/// The fields a filter object may have: Azure's five in Azure's order, then netwatch's.
const FIELDS: [&str; 10] = [
    PROTOCOL,
    LOCAL_IP_ADDRESS,
    REMOTE_IP_ADDRESS,
    LOCAL_PORT,
    REMOTE_PORT,
    ICMP_TYPE,
    ICMP_CODE,
    TCP_FLAGS,
    DIRECTION,
    BPF_EXPRESSION,
];
/// Spellings accepted besides [`FIELDS`] (some Azure SDKs and docs write `Ip`).
const FIELD_ALIASES: [&str; 2] = ["localIpAddress", "remoteIpAddress"];

/// IANA protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IANA protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IANA protocol number of ICMP (IPv4).
pub const IPPROTO_ICMP: u8 = 1;
/// IANA protocol number of ICMPv6 (an IPv6 Next Header).
pub const IPPROTO_ICMPV6: u8 = 58;

/// The wire object, as ARM sends and echoes it.
///
/// Values are kept as written; [`PacketCaptureFilter::validate`] turns them
/// into a [`CaptureFilter`]. `None` and `Some("")` both mean "not set"; ARM
/// echoes unset fields as `""` (see [`CaptureFilter::to_wire`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PacketCaptureFilter {
    /// `TCP`, `UDP` or `Any` (any case); unset means `Any`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The host's address: one address, one range `a-b`, or a list `a;b;c`.
    #[serde(
        rename = "localIPAddress",
        alias = "localIpAddress",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_ip_address: Option<String>,
    /// The peer's address, same syntax as `localIPAddress`.
    #[serde(
        rename = "remoteIPAddress",
        alias = "remoteIpAddress",
        skip_serializing_if = "Option::is_none"
    )]
    pub remote_ip_address: Option<String>,
    /// The host's port: one port, one range `a-b`, or a list `a;b;c`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_port: Option<String>,
    /// The peer's port, same syntax as `localPort`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<String>,
    /// netwatch: the ICMP or ICMPv6 type, `0`-`255` (only with protocol `ICMP` or `ICMPv6`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<String>,
    /// netwatch: the ICMP or ICMPv6 code, `0`-`255` (only with protocol `ICMP` or `ICMPv6`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<String>,
    /// netwatch: TCP flags that must be set, or clear with `!`: `SYN;!ACK`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<String>,
    /// netwatch: `inbound` (received by this host) or `outbound` (sent by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// netwatch: a tcpdump expression (pcap-filter(7)) the packet must also match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_expression: Option<String>,
    /// netwatch, read-only: `bpfExpression` compiled and checked, in
    /// `tcpdump -ddd`'s text ([`Program::to_bytecode`]). The controller fills
    /// it in on every PUT (what a client sends is replaced); agents run it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_program: Option<String>,
}

/// netwatch's `bpfExpression`: its text, and its program once compiled
/// (where the request is made: the controller, the CLI, `netwatch capture`)
/// or read from `bpfProgram` (an agent, from the controller).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Expression {
    /// As written, trimmed.
    pub text: String,
    /// Checked ([`Program::validate`]) and reading relative to the network
    /// header (`netwatch_bpf::raw`); `None` until compiled.
    pub program: Option<Program>,
}

/// Which transport protocol a filter asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// IP protocol 6.
    Tcp,
    /// IP protocol 17.
    Udp,
    /// netwatch: ICMP, protocol 1 of IPv4 (IPv6 packets are never ICMP).
    Icmp,
    /// netwatch: ICMPv6, Next Header 58 of IPv6 (IPv4 packets are never ICMPv6).
    Icmpv6,
    /// Any packet (any IP protocol, or not IP at all when nothing else is set).
    #[default]
    Any,
}

impl Protocol {
    /// The IP protocol number this asks for, `None` for [`Protocol::Any`].
    pub const fn ip_number(self) -> Option<u8> {
        match self {
            Self::Tcp => Some(IPPROTO_TCP),
            Self::Udp => Some(IPPROTO_UDP),
            Self::Icmp => Some(IPPROTO_ICMP),
            Self::Icmpv6 => Some(IPPROTO_ICMPV6),
            Self::Any => None,
        }
    }

    /// Whether packets of this IP family can be of this protocol: ICMP is
    /// IPv4's, ICMPv6 IPv6's, the others both's.
    pub const fn in_family(self, ipv4: bool) -> bool {
        match self {
            Self::Icmp => ipv4,
            Self::Icmpv6 => !ipv4,
            Self::Tcp | Self::Udp | Self::Any => true,
        }
    }

    /// Whether this is ICMP or ICMPv6 (the protocols with a type and code).
    pub const fn is_icmp(self) -> bool {
        matches!(self, Self::Icmp | Self::Icmpv6)
    }

    /// Azure's spelling: `TCP`, `UDP`, `Any`; netwatch's `ICMP`, `ICMPv6`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Icmp => "ICMP",
            Self::Icmpv6 => "ICMPv6",
            Self::Any => "Any",
        }
    }
}

/// netwatch's `direction`: which way a packet goes relative to this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Way {
    /// Received by this host: addressed to it, broadcast or multicast
    /// (`PACKET_HOST`, `PACKET_BROADCAST`, `PACKET_MULTICAST`).
    Inbound,
    /// Sent by this host (`PACKET_OUTGOING`).
    Outbound,
}

impl Way {
    /// The wire spelling: `inbound`, `outbound`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// netwatch's `tcpFlags`: bits of the TCP header's flags byte (byte 13,
/// RFC 9293 §3.1: CWR ECE URG ACK PSH RST SYN FIN from the high bit down)
/// that must be set and that must be clear. Never both for one flag, never
/// none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpFlags {
    /// Bits that must be set.
    pub set: u8,
    /// Bits that must be clear.
    pub clear: u8,
}

/// The flags' names, by bit (bit 0 is FIN), as `tcpFlags` spells them.
pub const TCP_FLAG_NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];

impl TcpFlags {
    /// Whether a TCP header's flags byte has these flags.
    pub const fn matches(&self, flags: u8) -> bool {
        flags & self.set == self.set && flags & self.clear == 0
    }
}

/// `SYN;!ACK`: the set flags, then the clear ones, each in bit order.
impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words = Vec::new();
        for (bits, prefix) in [(self.set, ""), (self.clear, "!")] {
            for (bit, name) in TCP_FLAG_NAMES.iter().enumerate() {
                if bits & (1 << bit) != 0 {
                    words.push(format!("{prefix}{name}"));
                }
            }
        }
        f.write_str(&words.join(";"))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive range of addresses of one family (`lo == hi` for one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpRange {
    /// IPv4 addresses `lo..=hi`.
    V4 { lo: Ipv4Addr, hi: Ipv4Addr },
    /// IPv6 addresses `lo..=hi`.
    V6 { lo: Ipv6Addr, hi: Ipv6Addr },
}

impl IpRange {
    /// The range holding just `addr`.
    pub const fn single(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Self::V4 { lo: a, hi: a },
            IpAddr::V6(a) => Self::V6 { lo: a, hi: a },
        }
    }

    /// `lo..=hi`, or `None` when the ends are of different families or reversed.
    pub fn new(lo: IpAddr, hi: IpAddr) -> Option<Self> {
        match (lo, hi) {
            (IpAddr::V4(lo), IpAddr::V4(hi)) if lo <= hi => Some(Self::V4 { lo, hi }),
            (IpAddr::V6(lo), IpAddr::V6(hi)) if lo <= hi => Some(Self::V6 { lo, hi }),
            _ => None,
        }
    }

    /// Whether `addr` lies in the range (an address of the other family never does).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self, addr) {
            (Self::V4 { lo, hi }, IpAddr::V4(a)) => (lo..=hi).contains(&&a),
            (Self::V6 { lo, hi }, IpAddr::V6(a)) => (lo..=hi).contains(&&a),
            _ => false,
        }
    }

    /// Whether the range holds exactly one address.
    pub fn is_single(&self) -> bool {
        match self {
            Self::V4 { lo, hi } => lo == hi,
            Self::V6 { lo, hi } => lo == hi,
        }
    }

    fn lo(&self) -> IpAddr {
        match *self {
            Self::V4 { lo, .. } => IpAddr::V4(lo),
            Self::V6 { lo, .. } => IpAddr::V6(lo),
        }
    }

    fn hi(&self) -> IpAddr {
        match *self {
            Self::V4 { hi, .. } => IpAddr::V4(hi),
            Self::V6 { hi, .. } => IpAddr::V6(hi),
        }
    }

    /// The prefix length when the range is exactly one CIDR block of two
    /// or more addresses (`10.0.0.0-10.0.0.255` is `/24`).
    pub fn prefix_len(&self) -> Option<u32> {
        // A block: the ends differ in the low bits only, all 0s then all 1s.
        let (lo, hi, bits) = match *self {
            Self::V4 { lo, hi } => (u128::from(u32::from(lo)), u128::from(u32::from(hi)), 32),
            Self::V6 { lo, hi } => (u128::from(lo), u128::from(hi), 128),
        };
        let host = lo ^ hi;
        let block = host != 0 && host & host.wrapping_add(1) == 0 && lo & host == 0 && hi & host == host;
        block.then(|| bits - (128 - host.leading_zeros()))
    }
}

/// `10.0.0.3` for one address, `10.0.0.0/8` for a CIDR block, `1.1.1.1-255.255.255.255`
/// for another range.
impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.lo())
        } else if let Some(prefix) = self.prefix_len() {
            write!(f, "{}/{prefix}", self.lo())
        } else {
            write!(f, "{}-{}", self.lo(), self.hi())
        }
    }
}

/// A non-empty set of addresses: what `localIPAddress` or `remoteIPAddress` allows.
///
/// Parsed from the wire it is one range or a list of single addresses, in the
/// order written; [`IpSet::new`] accepts any list of ranges (the BPF compiler
/// copes with overlaps), but only the wire shapes print back as valid syntax.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IpSet(Vec<IpRange>);

impl IpSet {
    /// The set of `ranges`, or `None` if there are none or one is reversed.
    pub fn new(ranges: Vec<IpRange>) -> Option<Self> {
        let ordered = ranges.iter().all(|r| r.lo() <= r.hi());
        (ordered && !ranges.is_empty()).then_some(Self(ranges))
    }

    /// The ranges, as written.
    pub fn ranges(&self) -> &[IpRange] {
        &self.0
    }

    /// The IPv4 ranges as inclusive `(lo, hi)` pairs of host-order integers.
    pub fn v4(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.0.iter().filter_map(|r| match *r {
            IpRange::V4 { lo, hi } => Some((u32::from(lo), u32::from(hi))),
            IpRange::V6 { .. } => None,
        })
    }

    /// The IPv6 ranges as inclusive `(lo, hi)` pairs of host-order integers.
    pub fn v6(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.0.iter().filter_map(|r| match *r {
            IpRange::V6 { lo, hi } => Some((u128::from(lo), u128::from(hi))),
            IpRange::V4 { .. } => None,
        })
    }

    /// Whether any range holds `addr`.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|r| r.contains(addr))
    }

    /// Whether the set holds any IPv4 address.
    pub fn has_v4(&self) -> bool {
        self.v4().next().is_some()
    }

    /// Whether the set holds any IPv6 address.
    pub fn has_v6(&self) -> bool {
        self.v6().next().is_some()
    }
}

/// The wire syntax: ranges joined by `;`.
impl fmt::Display for IpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_joined(f, &self.0)
    }
}

/// An inclusive range of ports, `lo <= hi` (`lo == hi` for one port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// The range holding just `port`.
    pub const fn single(port: u16) -> Self {
        Self { lo: port, hi: port }
    }

    /// `lo..=hi`, or `None` when reversed.
    pub const fn new(lo: u16, hi: u16) -> Option<Self> {
        if lo <= hi { Some(Self { lo, hi }) } else { None }
    }

    /// Whether `port` lies in the range.
    pub const fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

/// `80` for one port, `1000-2000` for a range.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// A non-empty set of ports: what `localPort` or `remotePort` allows.
///
/// Same shape rules as [`IpSet`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortSet(Vec<PortRange>);

impl PortSet {
    /// The set of `ranges`, or `None` if there are none or one is reversed.
    pub fn new(ranges: Vec<PortRange>) -> Option<Self> {
        let ordered = ranges.iter().all(|r| r.lo <= r.hi);
        (ordered && !ranges.is_empty()).then_some(Self(ranges))
    }

    /// The ranges, as written.
    pub fn ranges(&self) -> &[PortRange] {
        &self.0
    }

    /// Whether any range holds `port`.
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|r| r.contains(port))
    }
}

/// The wire syntax: ranges joined by `;`.
impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_joined(f, &self.0)
    }
}

fn write_joined<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(";")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

/// A validated filter: past [`PacketCaptureFilter::validate`] no invalid value exists.
///
/// `None` means the field is not set (matches anything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CaptureFilter {
    /// `Any` also when `tcpFlags` is set with protocol `Any`: validation makes it `Tcp`.
    pub protocol: Protocol,
    pub local_ip: Option<IpSet>,
    pub remote_ip: Option<IpSet>,
    pub local_port: Option<PortSet>,
    pub remote_port: Option<PortSet>,
    /// Only with [`Protocol::Icmp`] or [`Protocol::Icmpv6`].
    pub icmp_type: Option<u8>,
    /// Only with [`Protocol::Icmp`] or [`Protocol::Icmpv6`].
    pub icmp_code: Option<u8>,
    /// Only with [`Protocol::Tcp`].
    pub tcp_flags: Option<TcpFlags>,
    pub direction: Option<Way>,
    /// A tcpdump expression the packet must match too.
    pub expression: Option<Expression>,
}

/// What the reference evaluator needs to know about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IPv4 protocol, or the IPv6 fixed header's Next Header.
    pub protocol: u8,
    /// `(source, destination)` ports: set for TCP and UDP when the packet holds
    /// them (not for an IPv4 non-first fragment, nor a truncated header).
    pub ports: Option<(u16, u16)>,
    /// Which end is this host: decides which side is *local*.
    pub direction: Direction,
    /// Whether this host sent or received it: what `direction` tests.
    pub seen: Seen,
    /// `(type, code)` of an ICMP (IPv4, protocol 1) or ICMPv6 (IPv6, Next
    /// Header 58) message that holds both (not an IPv4 non-first fragment).
    pub icmp: Option<(u8, u8)>,
    /// The flags byte (byte 13) of a TCP header that holds it (not an IPv4
    /// non-first fragment, nor a header cut before it).
    pub tcp_flags: Option<u8>,
}

/// Whether this host sent or received a packet, from its packet type alone
/// (`skb->pkt_type`), on any interface: on loopback, where both ends are this
/// host, each packet is seen once sent and once received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Seen {
    /// `PACKET_OUTGOING`: matches `direction` `outbound`.
    Sent,
    /// `PACKET_HOST`, `PACKET_BROADCAST`, `PACKET_MULTICAST`: matches `inbound`.
    Received,
    /// Neither: overheard (`PACKET_OTHERHOST`, promiscuous mode or a bridge)
    /// or looped back to the host's own multicast listeners; matches no `direction`.
    Neither,
    /// Not known (a stored Ethernet record does not say): matches either
    /// `direction`, as an unknown [`Direction`] matches either side.
    #[default]
    Unknown,
}

impl Seen {
    /// From a packet type (include/uapi/linux/if_packet.h).
    pub const fn from_pkttype(pkttype: u8) -> Self {
        match pkttype {
            0..=2 => Self::Received,
            4 => Self::Sent,
            _ => Self::Neither,
        }
    }
}

/// Which end of a packet is this host, as the kernel knows it (the packet
/// type of a packet socket, `SKF_AD_PKTTYPE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by this host (`PACKET_OUTGOING`): the source is local.
    Outgoing,
    /// Received by this host: addressed to it, broadcast or multicast
    /// (`PACKET_HOST`, `PACKET_BROADCAST`, `PACKET_MULTICAST`): the
    /// destination is local.
    Incoming,
    /// Neither end is known to be this host (`PACKET_OTHERHOST`: seen in
    /// promiscuous mode, bridged), or both are (loopback): either orientation
    /// of the packet may match.
    #[default]
    Unknown,
}

impl Direction {
    /// Whether the source may be this host's side.
    fn source_may_be_local(self) -> bool {
        self != Direction::Incoming
    }

    /// Whether the destination may be this host's side.
    fn destination_may_be_local(self) -> bool {
        self != Direction::Outgoing
    }

    /// The same packet's reply seen from here: sent becomes received.
    pub fn reversed(self) -> Self {
        match self {
            Direction::Outgoing => Direction::Incoming,
            Direction::Incoming => Direction::Outgoing,
            Direction::Unknown => Direction::Unknown,
        }
    }
}

impl CaptureFilter {
    /// Whether the filter keeps the packet `flow` describes (`None`: not an IP packet).
    pub fn matches(&self, flow: Option<&Flow>) -> bool {
        let Some(flow) = flow else {
            return self.matches_everything();
        };
        if self.protocol.ip_number().is_some_and(|p| p != flow.protocol) || !self.protocol.in_family(flow.src.is_ipv4())
        {
            return false;
        }
        if self.icmp_type.is_some() || self.icmp_code.is_some() {
            let Some((kind, code)) = flow.icmp else { return false };
            if self.icmp_type.is_some_and(|t| t != kind) || self.icmp_code.is_some_and(|c| c != code) {
                return false;
            }
        }
        if let Some(wanted) = self.tcp_flags
            && !flow.tcp_flags.is_some_and(|flags| wanted.matches(flags))
        {
            return false;
        }
        match (self.direction, flow.seen) {
            (None, _)
            | (_, Seen::Unknown)
            | (Some(Way::Inbound), Seen::Received)
            | (Some(Way::Outbound), Seen::Sent) => {}
            _ => return false,
        }
        let (sport, dport) = if self.has_ports() {
            if !matches!(flow.protocol, IPPROTO_TCP | IPPROTO_UDP) {
                return false;
            }
            match flow.ports {
                Some((s, d)) => (Some(s), Some(d)),
                None => return false,
            }
        } else {
            (None, None)
        };
        let side = |ip: &Option<IpSet>, port: &Option<PortSet>, addr: IpAddr, p: Option<u16>| {
            ip.as_ref().is_none_or(|set| set.contains(addr))
                && port.as_ref().is_none_or(|set| p.is_some_and(|p| set.contains(p)))
        };
        let source_local = flow.direction.source_may_be_local()
            && side(&self.local_ip, &self.local_port, flow.src, sport)
            && side(&self.remote_ip, &self.remote_port, flow.dst, dport);
        let destination_local = flow.direction.destination_may_be_local()
            && side(&self.local_ip, &self.local_port, flow.dst, dport)
            && side(&self.remote_ip, &self.remote_port, flow.src, sport);
        source_local || destination_local
    }

    /// Whether the filter sets nothing, and so keeps every packet, IP or not.
    pub fn matches_everything(&self) -> bool {
        self.protocol == Protocol::Any
            && self.local_ip.is_none()
            && self.remote_ip.is_none()
            && !self.has_ports()
            && self.direction.is_none()
            && self.transport_bytes() == 0
            && self.expression.is_none()
    }

    /// How many bytes of the transport header the filter reads: 0, 2 (ICMP's
    /// type and code), 4 (the ports) or 14 (TCP's flags, byte 13). The BPF
    /// compiler tries the filters that read fewer first, so a packet cut short
    /// in its transport header is still judged by every filter that could keep it.
    pub fn transport_bytes(&self) -> usize {
        if self.tcp_flags.is_some() {
            14
        } else if self.has_ports() {
            4
        } else if self.icmp_type.is_some() || self.icmp_code.is_some() {
            2
        } else {
            0
        }
    }

    /// Whether a port field is set (so only TCP/UDP packets with ports can match).
    pub fn has_ports(&self) -> bool {
        self.local_port.is_some() || self.remote_port.is_some()
    }

    /// The filter as ARM echoes it: every field present, canonical spelling,
    /// `""` for unset fields. Validating the result gives `self` back.
    pub fn to_wire(&self) -> PacketCaptureFilter {
        fn text<T: ToString>(value: Option<&T>) -> Option<String> {
            Some(value.map(T::to_string).unwrap_or_default())
        }
        // netwatch's fields only when set: Azure's echo has its five.
        fn extension<T: ToString>(value: Option<T>) -> Option<String> {
            value.map(|v| v.to_string())
        }
        PacketCaptureFilter {
            protocol: Some(self.protocol.as_str().to_owned()),
            local_ip_address: text(self.local_ip.as_ref()),
            remote_ip_address: text(self.remote_ip.as_ref()),
            local_port: text(self.local_port.as_ref()),
            remote_port: text(self.remote_port.as_ref()),
            icmp_type: extension(self.icmp_type),
            icmp_code: extension(self.icmp_code),
            tcp_flags: extension(self.tcp_flags),
            direction: extension(self.direction.map(Way::as_str)),
            bpf_expression: self.expression.as_ref().map(|e| e.text.clone()),
            bpf_program: self
                .expression
                .as_ref()
                .and_then(|e| e.program.as_ref())
                .map(Program::to_bytecode),
        }
    }
}

/// A short summary for logs: `TCP local 10.0.0.3 remote 1.1.1.1-255.255.255.255 port 20`
/// (each side lists its address, then `port` and its ports); `all packets` for
/// the empty filter.
impl fmt::Display for CaptureFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = Vec::new();
        if let Some(way) = self.direction {
            words.push(way.as_str().to_owned());
        }
        if self.protocol != Protocol::Any {
            words.push(self.protocol.to_string());
        }
        if let Some(kind) = self.icmp_type {
            words.push(format!("type {kind}"));
        }
        if let Some(code) = self.icmp_code {
            words.push(format!("code {code}"));
        }
        if let Some(flags) = self.tcp_flags {
            words.push(format!("flags {flags}"));
        }
        if let Some(expression) = &self.expression {
            words.push(format!("expression {:?}", expression.text));
        }
        for (side, ip, port) in [
            ("local", &self.local_ip, &self.local_port),
            ("remote", &self.remote_ip, &self.remote_port),
        ] {
            if ip.is_none() && port.is_none() {
                continue;
            }
            words.push(side.to_owned());
            if let Some(ip) = ip {
                words.push(ip.to_string());
            }
            if let Some(port) = port {
                words.push(format!("port {port}"));
            }
        }
        if words.is_empty() {
            f.write_str("all packets")
        } else {
            f.write_str(&words.join(" "))
        }
    }
}

/// Whether a capture with `filters` keeps the packet `flow` describes: ANY
/// filter matches, and an empty list keeps everything. A filter with a
/// `bpfExpression` needs the packet's bytes to be judged: it matches nothing
/// here ([`filters_keep`] judges it).
pub fn filters_match(filters: &[CaptureFilter], flow: Option<&Flow>) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.expression.is_none() && f.matches(flow))
}

/// [`filters_match`] for any list, expressions too, given the packet as a
/// socket filter sees it: the reference for what the kernel keeps.
///
/// A filter with an expression matches when its other fields match and its
/// program returns non-zero. Filters without one are tried first, then those
/// with one in the order given; a program that reads past the end of the
/// packet (or otherwise faults) ends the judging there and the packet is
/// dropped, as the kernel ends the one program all of them are compiled into,
/// and as tcpdump drops a packet its expression reads past.
///
/// # Panics
/// On a filter whose expression is not compiled yet: compile it first.
pub fn filters_keep(filters: &[CaptureFilter], flow: Option<&Flow>, packet: &PacketView<'_>) -> bool {
    if filters.is_empty() || filters.iter().any(|f| f.expression.is_none() && f.matches(flow)) {
        return true;
    }
    for filter in filters {
        let Some(expression) = &filter.expression else { continue };
        // Its own fields first: only IP packets have them, and an expression
        // (compiled for raw IP) sees only IPv4 and IPv6 packets.
        let ip = matches!(packet.protocol, 0x0800 | 0x86dd);
        let fields = CaptureFilter {
            expression: None,
            ..filter.clone()
        };
        if !ip || !fields.matches(flow) {
            continue;
        }
        let program = expression
            .program
            .as_ref()
            .expect("filters_keep is given compiled expressions");
        match netwatch_bpf::execute(program, packet) {
            Ok(0) => {}
            Ok(_) => return true,
            Err(netwatch_bpf::Fault) => return false,
        }
    }
    false
}

/// What a filter list keeps, in words: `netwatch capture --explain`.
pub fn explain(filters: &[CaptureFilter]) -> String {
    if filters.is_empty() {
        return "Keeps every packet: there are no filters.\n".to_owned();
    }
    let mut text = if filters.len() == 1 {
        "Keeps a packet when this filter matches it:\n".to_owned()
    } else {
        format!(
            "Keeps a packet when any of these {} filters matches it:\n",
            filters.len()
        )
    };
    for (index, filter) in filters.iter().enumerate() {
        text.push_str(&format!("  filters[{index}]: {}\n", filter.explain()));
    }
    if filters.iter().any(|f| f.expression.is_some()) {
        text.push_str(
            "Filters without a bpfExpression are tried first, then those with one in order; a packet an \
             expression reads past the end of is dropped, as tcpdump drops it.\n",
        );
    }
    if filters
        .iter()
        .any(|f| f.local_ip.is_some() || f.local_port.is_some() || f.remote_ip.is_some() || f.remote_port.is_some())
    {
        text.push_str(
            "Local is this host's side of each packet: the source of what it sends, the destination of what \
             it receives; on loopback and for overheard packets either side.\n",
        );
    }
    text
}

impl CaptureFilter {
    /// One filter in words, for [`explain`].
    fn explain(&self) -> String {
        if self.matches_everything() {
            return "every packet (it sets no field), IP or not".to_owned();
        }
        let mut what = match self.protocol {
            Protocol::Tcp => "TCP segments (IPv4 and IPv6)".to_owned(),
            Protocol::Udp => "UDP datagrams (IPv4 and IPv6)".to_owned(),
            Protocol::Icmp => "ICMP messages (IPv4)".to_owned(),
            Protocol::Icmpv6 => "ICMPv6 messages (IPv6)".to_owned(),
            Protocol::Any if self.has_ports() => "TCP segments and UDP datagrams (IPv4 and IPv6)".to_owned(),
            Protocol::Any => "IPv4 and IPv6 packets".to_owned(),
        };
        let mut clauses: Vec<String> = Vec::new();
        match (self.icmp_type, self.icmp_code) {
            (Some(t), Some(c)) => clauses.push(format!("of type {t} and code {c}")),
            (Some(t), None) => clauses.push(format!("of type {t}")),
            (None, Some(c)) => clauses.push(format!("of code {c}")),
            (None, None) => {}
        }
        let side = |ip: &Option<IpSet>, port: &Option<PortSet>| {
            let mut parts = Vec::new();
            if let Some(ip) = ip {
                parts.push(format!("address {ip}"));
            }
            if let Some(port) = port {
                parts.push(format!("port {port}"));
            }
            (!parts.is_empty()).then(|| parts.join(" and "))
        };
        if let Some(local) = side(&self.local_ip, &self.local_port) {
            clauses.push(format!("whose local side (this host's) has {local}"));
        }
        if let Some(remote) = side(&self.remote_ip, &self.remote_port) {
            clauses.push(format!("whose remote side (the peer's) has {remote}"));
        }
        if let Some(flags) = self.tcp_flags {
            let names = |bits: u8| {
                TCP_FLAG_NAMES
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| bits & (1 << bit) != 0)
                    .map(|(_, name)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut words = Vec::new();
            if flags.set != 0 {
                words.push(format!("{} set", names(flags.set)));
            }
            if flags.clear != 0 {
                words.push(format!("{} clear", names(flags.clear)));
            }
            clauses.push(format!("with TCP flags {}", words.join(" and ")));
        }
        match self.direction {
            Some(Way::Inbound) => clauses.push("that this host receives (inbound)".to_owned()),
            Some(Way::Outbound) => clauses.push("that this host sends (outbound)".to_owned()),
            None => {}
        }
        if let Some(expression) = &self.expression {
            clauses.push(format!("that the tcpdump expression {:?} keeps", expression.text));
        }
        if self.transport_bytes() > 0 && self.protocol != Protocol::Icmpv6 {
            clauses.push("(an IPv4 fragment after the first has no transport header: it never matches)".to_owned());
        }
        for clause in clauses {
            what.push(' ');
            what.push_str(&clause);
        }
        what
    }
}

/// A filter rejected: the client's fault, a 400 with `target` in the ARM error body.
///
/// `message` starts with `target`, so it reads alone; the controller may put
/// its own prefix on both with [`FilterError::prefixed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FilterError {
    /// Where the bad value is, e.g. `filters[0].localPort`.
    pub target: String,
    /// What is wrong and how to write it instead.
    pub message: String,
}

impl FilterError {
    /// `target` and a message that starts with it: `{target} {detail}`.
    fn new(target: String, detail: &str) -> Self {
        let message = format!("{target} {detail}");
        Self { target, message }
    }

    /// The same error under a parent path, e.g. `properties.` makes
    /// `properties.filters[0].localPort`.
    pub fn prefixed(self, prefix: &str) -> Self {
        Self {
            target: format!("{prefix}{}", self.target),
            message: format!("{prefix}{}", self.message),
        }
    }
}

impl PacketCaptureFilter {
    /// Validates the filter at position `index` of its list (`index` only names
    /// the error's target, `filters[index].field`).
    pub fn validate(&self, index: usize) -> Result<CaptureFilter, FilterError> {
        let at = |field: &str| format!("{FILTERS}[{index}].{field}");
        let protocol =
            parse_protocol(self.protocol.as_deref()).map_err(|detail| FilterError::new(at(PROTOCOL), &detail))?;
        let local_ip = parse_ip_set(self.local_ip_address.as_deref())
            .map_err(|detail| FilterError::new(at(LOCAL_IP_ADDRESS), &detail))?;
        let remote_ip = parse_ip_set(self.remote_ip_address.as_deref())
            .map_err(|detail| FilterError::new(at(REMOTE_IP_ADDRESS), &detail))?;
        let local_port =
            parse_port_set(self.local_port.as_deref()).map_err(|detail| FilterError::new(at(LOCAL_PORT), &detail))?;
        let remote_port =
            parse_port_set(self.remote_port.as_deref()).map_err(|detail| FilterError::new(at(REMOTE_PORT), &detail))?;
        let icmp_type =
            parse_byte(self.icmp_type.as_deref(), "type").map_err(|detail| FilterError::new(at(ICMP_TYPE), &detail))?;
        let icmp_code =
            parse_byte(self.icmp_code.as_deref(), "code").map_err(|detail| FilterError::new(at(ICMP_CODE), &detail))?;
        let tcp_flags =
            parse_tcp_flags(self.tcp_flags.as_deref()).map_err(|detail| FilterError::new(at(TCP_FLAGS), &detail))?;
        let direction =
            parse_way(self.direction.as_deref()).map_err(|detail| FilterError::new(at(DIRECTION), &detail))?;
        let expression = parse_expression(self.bpf_expression.as_deref(), self.bpf_program.as_deref())
            .map_err(|(field, detail)| FilterError::new(at(field), &detail))?;
        // Fields that only some protocols have.
        for (field, set) in [(ICMP_TYPE, icmp_type.is_some()), (ICMP_CODE, icmp_code.is_some())] {
            if set && !protocol.is_icmp() {
                let detail = format!(
                    "is only for ICMP messages, but protocol is {}: set \"protocol\" to \"ICMP\" (IPv4) or \"ICMPv6\"",
                    protocol.as_str()
                );
                return Err(FilterError::new(at(field), &detail));
            }
        }
        for (field, set) in [(LOCAL_PORT, local_port.is_some()), (REMOTE_PORT, remote_port.is_some())] {
            if set && protocol.is_icmp() {
                let detail = format!(
                    "cannot match: {} has no ports (ports are TCP's and UDP's); leave the port out, \
                     or use \"icmpType\" and \"icmpCode\"",
                    protocol.as_str()
                );
                return Err(FilterError::new(at(field), &detail));
            }
        }
        let protocol = match (protocol, tcp_flags) {
            (Protocol::Tcp, _) | (_, None) => protocol,
            // tcpFlags with Any: TCP packets only.
            (Protocol::Any, Some(_)) => Protocol::Tcp,
            (other, Some(_)) => {
                let detail = format!(
                    "is only for TCP, but protocol is {}: set \"protocol\" to \"TCP\" (or leave it out)",
                    other.as_str()
                );
                return Err(FilterError::new(at(TCP_FLAGS), &detail));
            }
        };
        // ICMP is IPv4's and ICMPv6 IPv6's: addresses of the other family only can never match.
        for (field, set, raw) in [
            (LOCAL_IP_ADDRESS, &local_ip, &self.local_ip_address),
            (REMOTE_IP_ADDRESS, &remote_ip, &self.remote_ip_address),
        ] {
            let Some(set) = set else { continue };
            let (wrong, right) = match protocol {
                Protocol::Icmp if !set.has_v4() => ("IPv6", "ICMPv6"),
                Protocol::Icmpv6 if !set.has_v6() => ("IPv4", "ICMP"),
                _ => continue,
            };
            let detail = format!(
                "{:?} is {wrong} only, but {} is never {wrong}: use protocol {right:?} for {wrong} \
                 (one filter per family)",
                raw.as_deref().unwrap_or_default().trim(),
                protocol.as_str()
            );
            return Err(FilterError::new(at(field), &detail));
        }
        if let (Some(local), Some(remote)) = (&local_ip, &remote_ip) {
            let share_family = (local.has_v4() && remote.has_v4()) || (local.has_v6() && remote.has_v6());
            if !share_family {
                // Both sets are then single-family, and of different families.
                let family = |set: &IpSet| if set.has_v4() { "IPv4" } else { "IPv6" };
                let detail = format!(
                    "can never match: {LOCAL_IP_ADDRESS} {:?} is {} only and {REMOTE_IP_ADDRESS} \
                     {:?} is {} only, but a packet's two addresses are of one family; \
                     use one filter per family",
                    self.local_ip_address.as_deref().unwrap_or_default(),
                    family(local),
                    self.remote_ip_address.as_deref().unwrap_or_default(),
                    family(remote),
                );
                return Err(FilterError::new(format!("{FILTERS}[{index}]"), &detail));
            }
        }
        Ok(CaptureFilter {
            protocol,
            local_ip,
            remote_ip,
            local_port,
            remote_port,
            icmp_type,
            icmp_code,
            tcp_flags,
            direction,
            expression,
        })
    }
}

/// Validates a filter list; the first bad filter's error is returned.
pub fn validate_filters(wire: &[PacketCaptureFilter]) -> Result<Vec<CaptureFilter>, FilterError> {
    wire.iter()
        .enumerate()
        .map(|(index, filter)| filter.validate(index))
        .collect()
}

/// [`validate_filters`] for a flight recorder's or a trigger's filters
/// (`whose`): no `bpfExpression`. Recorders run without a compiled program
/// from the controller, and a capture around an alert filters the
/// recorder's records in user space by fields (`filters_match`).
pub fn validate_filters_without_expressions(
    wire: &[PacketCaptureFilter],
    whose: &str,
) -> Result<Vec<CaptureFilter>, FilterError> {
    let filters = validate_filters(wire)?;
    if let Some(index) = filters.iter().position(|f| f.expression.is_some()) {
        let detail = format!(
            "is not taken in {whose} filters: use netwatch's fields (protocol with icmpType and icmpCode, \
             tcpFlags, direction, addresses and ports), or create a packet capture with the expression"
        );
        return Err(FilterError::new(
            format!("{FILTERS}[{index}].{BPF_EXPRESSION}"),
            &detail,
        ));
    }
    Ok(filters)
}

/// For the CLI's `--filters JSON`: a JSON array of filter objects (also accept a single object).
///
/// Errors carry the JSON path as target: an unknown key `localip` in the second
/// object is `filters[1]`, a number where a string belongs `filters[1].localPort`.
pub fn parse_filters_json(json: &str) -> Result<Vec<CaptureFilter>, FilterError> {
    validate_filters(&parse_wire_filters_json(json)?)
}

/// The wire objects of `--filters JSON`, not yet validated (see [`parse_filters_json`]).
pub fn parse_wire_filters_json(json: &str) -> Result<Vec<PacketCaptureFilter>, FilterError> {
    use serde_json::Value;

    const EXAMPLE: &str = r#"[{"protocol":"TCP","localPort":"80"}]"#;
    let value: Value = serde_json::from_str(json)
        .map_err(|err| FilterError::new(FILTERS.to_owned(), &format!("is not valid JSON: {err}")))?;
    let (items, single) = match value {
        Value::Array(items) => (items, false),
        object @ Value::Object(_) => (vec![object], true),
        other => {
            let detail = format!(
                "must be a JSON array of filter objects, such as {EXAMPLE}, not {}",
                json_kind(&other)
            );
            return Err(FilterError::new(FILTERS.to_owned(), &detail));
        }
    };
    // Shapes and keys are checked by hand first, for messages that say how to
    // fix them. serde then reads the text again (the `Value` has dropped
    // repeated keys) and meets only type errors and repeated keys, which
    // serde_path_to_error locates.
    for (index, item) in items.iter().enumerate() {
        let target = format!("{FILTERS}[{index}]");
        let Some(object) = item.as_object() else {
            let detail = format!(
                "must be a JSON object, such as {}, not {}",
                &EXAMPLE[1..EXAMPLE.len() - 1],
                json_kind(item)
            );
            return Err(FilterError::new(target, &detail));
        };
        if let Some(key) = object
            .keys()
            .find(|key| !FIELDS.contains(&key.as_str()) && !FIELD_ALIASES.contains(&key.as_str()))
        {
            return Err(FilterError::new(target, &unknown_field_detail(key)));
        }
    }
    let mut reader = serde_json::Deserializer::from_str(json);
    let parsed = if single {
        serde_path_to_error::deserialize(&mut reader).map(|one| vec![one])
    } else {
        serde_path_to_error::deserialize(&mut reader)
    };
    parsed.map_err(|err| {
        // The path is `[1]` or `[1].localPort` in an array, `localPort` alone.
        let target = match err.path().to_string().as_str() {
            "." => format!("{FILTERS}[0]"),
            path if path.starts_with('[') => format!("{FILTERS}{path}"),
            path => format!("{FILTERS}[0].{path}"),
        };
        let message = format!("{target}: {}", err.into_inner());
        FilterError { target, message }
    })
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `has an unknown field "localip": valid fields are …`, with a guess when the
/// key is a case slip or a prefix of exactly one field.
fn unknown_field_detail(key: &str) -> String {
    if key == BPF_PROGRAM {
        return "has bpfProgram, which the controller fills in from bpfExpression: leave it out".to_owned();
    }
    let lower = key.to_ascii_lowercase();
    let guesses: Vec<&str> = FIELDS
        .into_iter()
        .filter(|field| {
            let field = field.to_ascii_lowercase();
            field == lower || (lower.len() >= 4 && field.starts_with(&lower))
        })
        .collect();
    let guess = match guesses.as_slice() {
        [one] => format!(" (did you mean {one:?}?)"),
        _ => String::new(),
    };
    format!(
        "has an unknown field {key:?}{guess}: valid fields are {}",
        FIELDS.join(", ")
    )
}

/// Returns a detail message for [`FilterError::new`] on error.
fn parse_protocol(raw: Option<&str>) -> Result<Protocol, String> {
    let text = raw.unwrap_or_default().trim();
    if text.is_empty() || text.eq_ignore_ascii_case("any") {
        Ok(Protocol::Any)
    } else if text.eq_ignore_ascii_case("tcp") {
        Ok(Protocol::Tcp)
    } else if text.eq_ignore_ascii_case("udp") {
        Ok(Protocol::Udp)
    } else if text.eq_ignore_ascii_case("icmp") {
        Ok(Protocol::Icmp)
    } else if text.eq_ignore_ascii_case("icmpv6") || text.eq_ignore_ascii_case("icmp6") {
        Ok(Protocol::Icmpv6)
    } else {
        let note = if text.to_ascii_lowercase().contains("icmp") {
            " (ICMP is IPv4's ICMP, ICMPv6 IPv6's)"
        } else {
            ""
        };
        Err(format!(
            "{text:?} is not supported: use TCP, UDP, ICMP, ICMPv6 or Any{note}"
        ))
    }
}

/// `icmpType` / `icmpCode`: one number 0-255; `what` is `type` or `code`.
fn parse_byte(raw: Option<&str>, what: &str) -> Result<Option<u8>, String> {
    let text = raw.unwrap_or_default().trim();
    if text.is_empty() {
        return Ok(None);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        let hint = if what == "type" {
            " (8 is an echo request, 0 its reply)"
        } else {
            ""
        };
        return Err(format!("{text:?} is not an ICMP {what}: write one number 0-255{hint}"));
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{text:?} is out of range: an ICMP {what} is 0-255"))
}

/// `tcpFlags`: names joined by `;` (or `,`), any case, `!` before a flag that must be clear.
fn parse_tcp_flags(raw: Option<&str>) -> Result<Option<TcpFlags>, String> {
    const HOW: &str = "names SYN, ACK, FIN, RST, PSH, URG, ECE, CWR joined by \";\", \
                       \"!\" before one that must be clear, as in \"SYN;!ACK\"";
    let Some((text, entries)) = entries(raw) else {
        return Ok(None);
    };
    if entries.is_empty() {
        return Err(format!("{text:?} has no flag: write {HOW}"));
    }
    let (mut set, mut clear) = (0u8, 0u8);
    for entry in entries {
        let (bits, name) = match entry.strip_prefix('!') {
            Some(name) => (&mut clear, name.trim()),
            None => (&mut set, entry),
        };
        let Some(bit) = TCP_FLAG_NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)) else {
            return Err(format!("{entry:?} is not a TCP flag: write {HOW}"));
        };
        *bits |= 1 << bit;
    }
    if set & clear != 0 {
        let both = TcpFlags {
            set: set & clear,
            clear: 0,
        };
        return Err(format!(
            "{text:?} asks for {both} to be both set and clear: name each flag once"
        ));
    }
    Ok(Some(TcpFlags { set, clear }))
}

/// `bpfExpression` and, from the controller, its `bpfProgram`; an error
/// names the field at fault.
fn parse_expression(text: Option<&str>, program: Option<&str>) -> Result<Option<Expression>, (&'static str, String)> {
    let text = text.map(str::trim).filter(|t| !t.is_empty());
    let program = program.map(str::trim).filter(|p| !p.is_empty());
    let Some(text) = text else {
        if program.is_some() {
            return Err((
                BPF_PROGRAM,
                "is set without bpfExpression: it is bpfExpression compiled, which the controller \
                 fills in; leave it out"
                    .to_owned(),
            ));
        }
        return Ok(None);
    };
    netwatch_bpf::expression::check_text(text).map_err(|detail| (BPF_EXPRESSION, detail))?;
    let program = match program {
        None => None,
        Some(bytecode) => {
            let bad = |why: String| {
                (
                    BPF_PROGRAM,
                    format!(
                        "is not a program netwatch compiled ({why}): leave it out, the controller \
                         compiles bpfExpression"
                    ),
                )
            };
            let program = Program::from_bytecode(bytecode).map_err(|e| bad(e.to_string()))?;
            program.validate().map_err(|e| bad(e.to_string()))?;
            Some(program)
        }
    };
    Ok(Some(Expression {
        text: text.to_owned(),
        program,
    }))
}

/// `direction`: `inbound` or `outbound`, any case.
fn parse_way(raw: Option<&str>) -> Result<Option<Way>, String> {
    let text = raw.unwrap_or_default().trim();
    match text.to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "inbound" => Ok(Some(Way::Inbound)),
        "outbound" => Ok(Some(Way::Outbound)),
        _ => Err(format!(
            "{text:?} is not a direction: use \"inbound\" (received by the host) or \"outbound\" (sent by it), \
             or leave it out for both"
        )),
    }
}

/// A field's value split into entries: trimmed, separated by `;` or `,`,
/// empty entries (a trailing `;`) dropped. `None` when the field is unset.
fn entries(raw: Option<&str>) -> Option<(&str, Vec<&str>)> {
    let text = raw?.trim();
    if text.is_empty() {
        return None;
    }
    let entries = text
        .split([';', ','])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    Some((text, entries))
}

/// What a list or range field holds, before its values are parsed.
enum Shape<'a> {
    Range(&'a str, &'a str),
    List(Vec<&'a str>),
}

/// Sorts a field's entries into one range or a list of singles, rejecting the
/// shapes Azure does not support. `kind` is `port` or `address`, `example` a
/// range of that kind.
fn shape<'a>(text: &str, entries: Vec<&'a str>, kind: &str, example: &str) -> Result<Shape<'a>, String> {
    match entries.as_slice() {
        [] => Err(format!(
            "{text:?} has no {kind}: write one {kind}, a range a-b such as {example:?}, or a list a;b;c"
        )),
        [one] => match one.split_once('-') {
            None => Ok(Shape::List(entries)),
            Some((lo, hi)) => {
                let (lo, hi) = (lo.trim(), hi.trim());
                if hi.contains('-') {
                    Err(format!(
                        "{text:?} is not a valid {kind} range: write one range a-b, such as {example:?}"
                    ))
                } else if lo.is_empty() || hi.is_empty() {
                    Err(format!(
                        "{text:?} is not a valid {kind} range: both ends are needed, as in {example:?}"
                    ))
                } else {
                    Ok(Shape::Range(lo, hi))
                }
            }
        },
        many => {
            let ranges: Vec<&str> = many.iter().copied().filter(|e| e.contains('-')).collect();
            match ranges.as_slice() {
                [] => Ok(Shape::List(entries)),
                [range] => Err(format!(
                    "{text:?} mixes a range with a list, which Azure does not support: \
                     a field holds one range a-b or a list of single values; \
                     put {range:?} in a separate filter"
                )),
                _ => Err(format!(
                    "{text:?} has more than one range, which Azure does not support: \
                     use one filter per range"
                )),
            }
        }
    }
}

fn parse_port_set(raw: Option<&str>) -> Result<Option<PortSet>, String> {
    let Some((text, entries)) = entries(raw) else {
        return Ok(None);
    };
    let single = entries.len() == 1;
    let ranges = match shape(text, entries, "port", "1000-2000")? {
        Shape::Range(lo, hi) => {
            let invalid = |detail: String| format!("{text:?} is not a valid port range: {detail}");
            let lo = parse_port(lo).map_err(invalid)?;
            let hi = parse_port(hi).map_err(invalid)?;
            let range = PortRange::new(lo, hi).ok_or_else(|| {
                invalid(format!(
                    "{lo} is greater than {hi}; write the lower end first, as in \"{hi}-{lo}\""
                ))
            })?;
            vec![range]
        }
        Shape::List(list) => list
            .into_iter()
            .map(|entry| {
                parse_port(entry).map(PortRange::single).map_err(|detail| {
                    if single {
                        detail
                    } else {
                        format!("{text:?} is not a valid port list: {detail}")
                    }
                })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(PortSet::new(ranges))
}

fn parse_port(entry: &str) -> Result<u16, String> {
    if entry.chars().any(char::is_whitespace) {
        return Err(format!(
            "{entry:?} is not a port: separate values with \";\", as in \"80;443\""
        ));
    }
    if entry.is_empty() || !entry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{entry:?} is not a port: ports are numbers 0-65535"));
    }
    // All digits: parsing fails only on overflow.
    entry
        .parse()
        .map_err(|_| format!("{entry:?} is out of range: ports are 0-65535"))
}

fn parse_ip_set(raw: Option<&str>) -> Result<Option<IpSet>, String> {
    let Some((text, entries)) = entries(raw) else {
        return Ok(None);
    };
    let single = entries.len() == 1;
    let ranges = match shape(text, entries, "address", "10.0.0.1-10.0.0.9")? {
        Shape::Range(lo, hi) => {
            let invalid = |detail: String| format!("{text:?} is not a valid address range: {detail}");
            let lo = parse_addr(lo).map_err(invalid)?;
            let hi = parse_addr(hi).map_err(invalid)?;
            if lo.is_ipv4() != hi.is_ipv4() {
                return Err(invalid(
                    "it mixes IPv4 and IPv6; a range is of one family, so use one filter per family".to_owned(),
                ));
            }
            let range = IpRange::new(lo, hi).ok_or_else(|| {
                invalid(format!(
                    "{lo} is greater than {hi}; write the lower end first, as in \"{hi}-{lo}\""
                ))
            })?;
            vec![range]
        }
        Shape::List(list) => list
            .into_iter()
            .map(|entry| {
                parse_block(entry).map_err(|detail| {
                    if single {
                        detail
                    } else {
                        format!("{text:?} is not a valid address list: {detail}")
                    }
                })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(IpSet::new(ranges))
}

/// One entry of an address list: an address, or (netwatch) a CIDR block.
fn parse_block(entry: &str) -> Result<IpRange, String> {
    let Some((addr, prefix)) = entry.split_once('/') else {
        return parse_addr(entry).map(IpRange::single);
    };
    let (addr, prefix) = (addr.trim(), prefix.trim());
    let network = parse_addr(addr)?;
    let bits = if network.is_ipv4() { 32 } else { 128 };
    let family = if network.is_ipv4() { "IPv4" } else { "IPv6" };
    let example = if network.is_ipv4() { "10.0.0.0/8" } else { "fd00::/64" };
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{entry:?} is not a CIDR block: write the prefix length as a number 0-{bits} after \"/\", as in {example:?}"
        ));
    }
    let length =
        prefix.parse::<u32>().ok().filter(|&l| l <= bits).ok_or_else(|| {
            format!("{entry:?} has prefix length {prefix}, more than {family}'s {bits}: use 0-{bits}")
        })?;
    let (lo, hi) = cidr_range(network, length);
    if lo != network {
        return Err(format!(
            "{entry:?} has host bits set under its /{length} mask: write the network, \"{lo}/{length}\", \
             or \"{network}\" for that one address"
        ));
    }
    Ok(IpRange::new(lo, hi).expect("a block's ends are of one family and in order"))
}

/// An address: a range's end or a list's entry.
fn parse_addr(entry: &str) -> Result<IpAddr, String> {
    if entry.contains('/') {
        return Err(format!(
            "{entry:?} is a CIDR block, which cannot be a range's end: write the block alone, \
             as in \"10.0.0.0/8\", or a range of two addresses"
        ));
    }
    if let Some((_, zone)) = entry.split_once('%') {
        return Err(format!(
            "{entry:?} has a zone id ({zone:?}), which is not supported: write the address alone"
        ));
    }
    if entry.chars().any(char::is_whitespace) {
        return Err(format!(
            "{entry:?} is not an IPv4 or IPv6 address: separate values with \";\", \
             as in \"10.0.0.1;10.0.0.2\""
        ));
    }
    entry
        .parse()
        .map_err(|_| format!("{entry:?} is not an IPv4 or IPv6 address"))
}

/// The first and last addresses of the `/length` block holding `addr`.
fn cidr_range(addr: IpAddr, length: u32) -> (IpAddr, IpAddr) {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - length).unwrap_or(0);
            let lo = u32::from(a) & mask;
            (Ipv4Addr::from(lo).into(), Ipv4Addr::from(lo | !mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - length).unwrap_or(0);
            let lo = u128::from(a) & mask;
            (Ipv6Addr::from(lo).into(), Ipv6Addr::from(lo | !mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wire(
        protocol: &str,
        local_ip: &str,
        remote_ip: &str,
        local_port: &str,
        remote_port: &str,
    ) -> PacketCaptureFilter {
        let field = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        PacketCaptureFilter {
            protocol: field(protocol),
            local_ip_address: field(local_ip),
            remote_ip_address: field(remote_ip),
            local_port: field(local_port),
            remote_port: field(remote_port),
            ..Default::default()
        }
    }

    fn filter(protocol: &str, local_ip: &str, remote_ip: &str, local_port: &str, remote_port: &str) -> CaptureFilter {
        wire(protocol, local_ip, remote_ip, local_port, remote_port)
            .validate(0)
            .unwrap()
    }

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    fn tcp(src: &str, sport: u16, dst: &str, dport: u16) -> Flow {
        Flow {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: IPPROTO_TCP,
            ports: Some((sport, dport)),
            direction: Direction::Unknown,
            seen: Seen::Unknown,
            icmp: None,
            tcp_flags: None,
        }
    }

    #[test]
    fn bad_inputs_name_target_and_fix() {
        // (field, value, message); the target is always `filters[0].{field}`.
        #[rustfmt::skip]
        let rows: &[(&str, &str, &str)] = &[
            ("protocol", "ICMPv4", r#"filters[0].protocol "ICMPv4" is not supported: use TCP, UDP, ICMP, ICMPv6 or Any (ICMP is IPv4's ICMP, ICMPv6 IPv6's)"#),
            ("protocol", "SCTP", r#"filters[0].protocol "SCTP" is not supported: use TCP, UDP, ICMP, ICMPv6 or Any"#),
            ("protocol", "6", r#"filters[0].protocol "6" is not supported: use TCP, UDP, ICMP, ICMPv6 or Any"#),
            ("localPort", "70000", r#"filters[0].localPort "70000" is out of range: ports are 0-65535"#),
            ("localPort", "99999999999999999999999", r#"filters[0].localPort "99999999999999999999999" is out of range: ports are 0-65535"#),
            ("remotePort", "http", r#"filters[0].remotePort "http" is not a port: ports are numbers 0-65535"#),
            ("localPort", "+80", r#"filters[0].localPort "+80" is not a port: ports are numbers 0-65535"#),
            ("localPort", "0x50", r#"filters[0].localPort "0x50" is not a port: ports are numbers 0-65535"#),
            ("localPort", "80 443", r#"filters[0].localPort "80 443" is not a port: separate values with ";", as in "80;443""#),
            ("localPort", "2000-1000", r#"filters[0].localPort "2000-1000" is not a valid port range: 2000 is greater than 1000; write the lower end first, as in "1000-2000""#),
            ("localPort", "1000-70000", r#"filters[0].localPort "1000-70000" is not a valid port range: "70000" is out of range: ports are 0-65535"#),
            ("localPort", "80-", r#"filters[0].localPort "80-" is not a valid port range: both ends are needed, as in "1000-2000""#),
            ("localPort", "-1", r#"filters[0].localPort "-1" is not a valid port range: both ends are needed, as in "1000-2000""#),
            ("localPort", "1-2-3", r#"filters[0].localPort "1-2-3" is not a valid port range: write one range a-b, such as "1000-2000""#),
            ("localPort", "20;80;1000-2000", r#"filters[0].localPort "20;80;1000-2000" mixes a range with a list, which Azure does not support: a field holds one range a-b or a list of single values; put "1000-2000" in a separate filter"#),
            ("remotePort", "1-2;3-4", r#"filters[0].remotePort "1-2;3-4" has more than one range, which Azure does not support: use one filter per range"#),
            ("localPort", "20;eighty", r#"filters[0].localPort "20;eighty" is not a valid port list: "eighty" is not a port: ports are numbers 0-65535"#),
            ("localPort", ";", r#"filters[0].localPort ";" has no port: write one port, a range a-b such as "1000-2000", or a list a;b;c"#),
            ("remoteIPAddress", "1.1.1.1-255.255.255", r#"filters[0].remoteIPAddress "1.1.1.1-255.255.255" is not a valid address range: "255.255.255" is not an IPv4 or IPv6 address"#),
            ("localIPAddress", "10.0.0", r#"filters[0].localIPAddress "10.0.0" is not an IPv4 or IPv6 address"#),
            ("localIPAddress", "256.1.1.1", r#"filters[0].localIPAddress "256.1.1.1" is not an IPv4 or IPv6 address"#),
            ("localIPAddress", "010.0.0.1", r#"filters[0].localIPAddress "010.0.0.1" is not an IPv4 or IPv6 address"#),
            ("localIPAddress", "[::1]", r#"filters[0].localIPAddress "[::1]" is not an IPv4 or IPv6 address"#),
            ("localIPAddress", "10.0.0.1/8", r#"filters[0].localIPAddress "10.0.0.1/8" has host bits set under its /8 mask: write the network, "10.0.0.0/8", or "10.0.0.1" for that one address"#),
            ("remoteIPAddress", "fd00::1/64", r#"filters[0].remoteIPAddress "fd00::1/64" has host bits set under its /64 mask: write the network, "fd00::/64", or "fd00::1" for that one address"#),
            ("localIPAddress", "10.0.0.0/33", r#"filters[0].localIPAddress "10.0.0.0/33" has prefix length 33, more than IPv4's 32: use 0-32"#),
            ("localIPAddress", "fd00::/129", r#"filters[0].localIPAddress "fd00::/129" has prefix length 129, more than IPv6's 128: use 0-128"#),
            ("localIPAddress", "10.0.0.0/", r#"filters[0].localIPAddress "10.0.0.0/" is not a CIDR block: write the prefix length as a number 0-32 after "/", as in "10.0.0.0/8""#),
            ("localIPAddress", "10.0.0.0/255.0.0.0", r#"filters[0].localIPAddress "10.0.0.0/255.0.0.0" is not a CIDR block: write the prefix length as a number 0-32 after "/", as in "10.0.0.0/8""#),
            ("localIPAddress", "10.0.0/8", r#"filters[0].localIPAddress "10.0.0" is not an IPv4 or IPv6 address"#),
            ("localIPAddress", "10.0.0.0/8-10.1.0.0", r#"filters[0].localIPAddress "10.0.0.0/8-10.1.0.0" is not a valid address range: "10.0.0.0/8" is a CIDR block, which cannot be a range's end: write the block alone, as in "10.0.0.0/8", or a range of two addresses"#),
            ("localIPAddress", "10.0.0.0/8;10.1.0.0/16;10.2.0.0/33", r#"filters[0].localIPAddress "10.0.0.0/8;10.1.0.0/16;10.2.0.0/33" is not a valid address list: "10.2.0.0/33" has prefix length 33, more than IPv4's 32: use 0-32"#),
            ("icmpType", "echo", r#"filters[0].icmpType "echo" is not an ICMP type: write one number 0-255 (8 is an echo request, 0 its reply)"#),
            ("icmpType", "256", r#"filters[0].icmpType "256" is out of range: an ICMP type is 0-255"#),
            ("icmpCode", "-1", r#"filters[0].icmpCode "-1" is not an ICMP code: write one number 0-255"#),
            ("icmpType", "0;8", r#"filters[0].icmpType "0;8" is not an ICMP type: write one number 0-255 (8 is an echo request, 0 its reply)"#),
            ("tcpFlags", "SYNACK", r#"filters[0].tcpFlags "SYNACK" is not a TCP flag: write names SYN, ACK, FIN, RST, PSH, URG, ECE, CWR joined by ";", "!" before one that must be clear, as in "SYN;!ACK""#),
            ("tcpFlags", "SYN;-ACK", r#"filters[0].tcpFlags "-ACK" is not a TCP flag: write names SYN, ACK, FIN, RST, PSH, URG, ECE, CWR joined by ";", "!" before one that must be clear, as in "SYN;!ACK""#),
            ("tcpFlags", "syn;!SYN", r#"filters[0].tcpFlags "syn;!SYN" asks for SYN to be both set and clear: name each flag once"#),
            ("tcpFlags", ";;", r#"filters[0].tcpFlags ";;" has no flag: write names SYN, ACK, FIN, RST, PSH, URG, ECE, CWR joined by ";", "!" before one that must be clear, as in "SYN;!ACK""#),
            ("tcpFlags", "NS", r#"filters[0].tcpFlags "NS" is not a TCP flag: write names SYN, ACK, FIN, RST, PSH, URG, ECE, CWR joined by ";", "!" before one that must be clear, as in "SYN;!ACK""#),
            ("direction", "in", r#"filters[0].direction "in" is not a direction: use "inbound" (received by the host) or "outbound" (sent by it), or leave it out for both"#),
            ("direction", "both", r#"filters[0].direction "both" is not a direction: use "inbound" (received by the host) or "outbound" (sent by it), or leave it out for both"#),
            ("localIPAddress", "fe80::1%eth0", r#"filters[0].localIPAddress "fe80::1%eth0" has a zone id ("eth0"), which is not supported: write the address alone"#),
            ("localIPAddress", "10.0.0.9-10.0.0.1", r#"filters[0].localIPAddress "10.0.0.9-10.0.0.1" is not a valid address range: 10.0.0.9 is greater than 10.0.0.1; write the lower end first, as in "10.0.0.1-10.0.0.9""#),
            ("localIPAddress", "10.0.0.1-::1", r#"filters[0].localIPAddress "10.0.0.1-::1" is not a valid address range: it mixes IPv4 and IPv6; a range is of one family, so use one filter per family"#),
            ("localIPAddress", "10.0.0.1-", r#"filters[0].localIPAddress "10.0.0.1-" is not a valid address range: both ends are needed, as in "10.0.0.1-10.0.0.9""#),
            ("remoteIPAddress", "10.0.0.1;10.0.0.5-10.0.0.9", r#"filters[0].remoteIPAddress "10.0.0.1;10.0.0.5-10.0.0.9" mixes a range with a list, which Azure does not support: a field holds one range a-b or a list of single values; put "10.0.0.5-10.0.0.9" in a separate filter"#),
            ("localIPAddress", "1.1.1.1-2.2.2.2;3.3.3.3-4.4.4.4", r#"filters[0].localIPAddress "1.1.1.1-2.2.2.2;3.3.3.3-4.4.4.4" has more than one range, which Azure does not support: use one filter per range"#),
            ("localIPAddress", "10.0.0.1 10.0.0.2", r#"filters[0].localIPAddress "10.0.0.1 10.0.0.2" is not an IPv4 or IPv6 address: separate values with ";", as in "10.0.0.1;10.0.0.2""#),
            ("localIPAddress", ";;", r#"filters[0].localIPAddress ";;" has no address: write one address, a range a-b such as "10.0.0.1-10.0.0.9", or a list a;b;c"#),
        ];
        assert!(rows.len() >= 25);
        for &(field, value, message) in rows {
            let mut f = PacketCaptureFilter::default();
            let slot = match field {
                "protocol" => &mut f.protocol,
                "localIPAddress" => &mut f.local_ip_address,
                "remoteIPAddress" => &mut f.remote_ip_address,
                "localPort" => &mut f.local_port,
                "remotePort" => &mut f.remote_port,
                "icmpType" => &mut f.icmp_type,
                "icmpCode" => &mut f.icmp_code,
                "tcpFlags" => &mut f.tcp_flags,
                "direction" => &mut f.direction,
                _ => unreachable!("{field}"),
            };
            *slot = Some(value.to_owned());
            let err = f.validate(0).expect_err(value);
            assert_eq!(err.target, format!("filters[0].{field}"), "{value}");
            assert_eq!(err.message, message, "{value}");
            assert_eq!(err.to_string(), message);
        }
    }

    /// netwatch's fields that only some protocols or families have: each
    /// error names the field and says how to write the filter.
    #[test]
    fn netwatch_fields_that_cannot_match_are_rejected() {
        #[rustfmt::skip]
        let rows: &[(&str, &str, &str)] = &[
            (r#"{"icmpType":"8"}"#, "filters[0].icmpType",
             r#"filters[0].icmpType is only for ICMP messages, but protocol is Any: set "protocol" to "ICMP" (IPv4) or "ICMPv6""#),
            (r#"{"protocol":"TCP","icmpCode":"0"}"#, "filters[0].icmpCode",
             r#"filters[0].icmpCode is only for ICMP messages, but protocol is TCP: set "protocol" to "ICMP" (IPv4) or "ICMPv6""#),
            (r#"{"protocol":"ICMP","localPort":"80"}"#, "filters[0].localPort",
             r#"filters[0].localPort cannot match: ICMP has no ports (ports are TCP's and UDP's); leave the port out, or use "icmpType" and "icmpCode""#),
            (r#"{"protocol":"icmpv6","remotePort":"1-2"}"#, "filters[0].remotePort",
             r#"filters[0].remotePort cannot match: ICMPv6 has no ports (ports are TCP's and UDP's); leave the port out, or use "icmpType" and "icmpCode""#),
            (r#"{"protocol":"UDP","tcpFlags":"SYN"}"#, "filters[0].tcpFlags",
             r#"filters[0].tcpFlags is only for TCP, but protocol is UDP: set "protocol" to "TCP" (or leave it out)"#),
            (r#"{"protocol":"ICMP","tcpFlags":"!RST"}"#, "filters[0].tcpFlags",
             r#"filters[0].tcpFlags is only for TCP, but protocol is ICMP: set "protocol" to "TCP" (or leave it out)"#),
            (r#"{"protocol":"ICMP","remoteIPAddress":"fd00::/64"}"#, "filters[0].remoteIPAddress",
             r#"filters[0].remoteIPAddress "fd00::/64" is IPv6 only, but ICMP is never IPv6: use protocol "ICMPv6" for IPv6 (one filter per family)"#),
            (r#"{"protocol":"ICMPv6","localIPAddress":"10.0.0.0/8;10.1.0.1"}"#, "filters[0].localIPAddress",
             r#"filters[0].localIPAddress "10.0.0.0/8;10.1.0.1" is IPv4 only, but ICMPv6 is never IPv4: use protocol "ICMP" for IPv4 (one filter per family)"#),
            (r#"{"localIPAddress":"10.0.0.0/8","remoteIPAddress":"fd00::/8"}"#, "filters[0]",
             r#"filters[0] can never match: localIPAddress "10.0.0.0/8" is IPv4 only and remoteIPAddress "fd00::/8" is IPv6 only, but a packet's two addresses are of one family; use one filter per family"#),
            (r#"{"direction":"outbound","protocol":"ICMP","icmpType":"x"}"#, "filters[0].icmpType",
             r#"filters[0].icmpType "x" is not an ICMP type: write one number 0-255 (8 is an echo request, 0 its reply)"#),
            (r#"{"direction":7}"#, "filters[0].direction",
             "filters[0].direction: invalid type: integer `7`, expected a string at line 1 column 14"),
            (r#"{"tcpflags":"SYN"}"#, "filters[0]",
             r#"filters[0] has an unknown field "tcpflags" (did you mean "tcpFlags"?): valid fields are protocol, localIPAddress, remoteIPAddress, localPort, remotePort, icmpType, icmpCode, tcpFlags, direction, bpfExpression"#),
        ];
        for (json, target, message) in rows {
            let err = parse_filters_json(json).unwrap_err();
            assert_eq!(
                (err.target.as_str(), err.message.as_str()),
                (*target, *message),
                "{json}"
            );
        }
    }

    #[test]
    fn expressions_are_checked_and_carry_their_program() {
        #[rustfmt::skip]
        let rows: &[(&str, &str, &str)] = &[
            (r#"{"bpfExpression":"tcp\u0000port 22"}"#, "filters[0].bpfExpression",
             r#"filters[0].bpfExpression has the control character '\0': write the expression on plain lines"#),
            (r#"{"bpfProgram":"1,6 0 0 1"}"#, "filters[0]",
             "filters[0] has bpfProgram, which the controller fills in from bpfExpression: leave it out"),
        ];
        for (json, target, message) in rows {
            let err = parse_filters_json(json).unwrap_err();
            assert_eq!(
                (err.target.as_str(), err.message.as_str()),
                (*target, *message),
                "{json}"
            );
        }
        let long = "tcp or ".repeat(150) + "udp";
        let err = parse_filters_json(&format!(r#"{{"bpfExpression":"{long}"}}"#)).unwrap_err();
        assert!(err.message.contains("bytes long, more than 1024"), "{}", err.message);
        // From the controller (serde, not the CLI's parser): the program is read and checked.
        let wire = |text: Option<&str>, program: &str| PacketCaptureFilter {
            bpf_expression: text.map(str::to_owned),
            bpf_program: Some(program.to_owned()),
            ..Default::default()
        };
        let ok = wire(Some("ip"), "1,6 0 0 1").validate(3).unwrap();
        let expression = ok.expression.clone().unwrap();
        assert_eq!((expression.text.as_str(), expression.program.unwrap().len()), ("ip", 1));
        assert_eq!(ok.to_wire().bpf_program.as_deref(), Some("1,6 0 0 1"));
        assert_eq!(ok.to_string(), r#"expression "ip""#);
        assert!(!ok.matches_everything());
        for (text, program, target, message) in [
            (
                None,
                "1,6 0 0 1",
                "filters[3].bpfProgram",
                "is set without bpfExpression",
            ),
            (
                Some("ip"),
                "2,6 0 0 1",
                "filters[3].bpfProgram",
                "is not a program netwatch compiled (the count says 2",
            ),
            (
                Some("ip"),
                "1,0 0 0 1",
                "filters[3].bpfProgram",
                "the last instruction is not a ret",
            ),
        ] {
            let err = wire(text, program).validate(3).unwrap_err();
            assert_eq!(err.target, target);
            assert!(err.message.contains(message), "{}", err.message);
        }
    }

    #[test]
    fn recorders_and_triggers_take_no_expression() {
        let wire = parse_wire_filters_json(r#"[{"protocol":"UDP"},{"bpfExpression":"udp"}]"#).unwrap();
        let err = validate_filters_without_expressions(&wire, "a flight recorder's").unwrap_err();
        assert_eq!(err.target, "filters[1].bpfExpression");
        assert_eq!(
            err.message,
            "filters[1].bpfExpression is not taken in a flight recorder's filters: use netwatch's fields \
             (protocol with icmpType and icmpCode, tcpFlags, direction, addresses and ports), or create a packet \
             capture with the expression"
        );
        let fields = parse_wire_filters_json(r#"[{"protocol":"ICMP","icmpType":"8","direction":"inbound"}]"#).unwrap();
        assert_eq!(
            validate_filters_without_expressions(&fields, "a trigger's")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn expressions_are_judged_on_the_packet() {
        use netwatch_bpf::{Insn, code::*};
        // `ldb [net+9]; jeq #17 → keep`: UDP over IPv4.
        let udp = Program::from_insns(vec![
            Insn::stmt(BPF_LD | BPF_B | BPF_ABS, netwatch_bpf::net(9)),
            Insn::jump(BPF_JMP | BPF_JEQ | BPF_K, 17, 0, 1),
            Insn::stmt(BPF_RET | BPF_K, 1),
            Insn::stmt(BPF_RET | BPF_K, 0),
        ]);
        // Reads byte 100: past the end of a short packet.
        let far = Program::from_insns(vec![
            Insn::stmt(BPF_LD | BPF_B | BPF_ABS, netwatch_bpf::net(100)),
            Insn::stmt(BPF_RET | BPF_K, 1),
        ]);
        let with = |program: &Program, fields: &str| {
            let mut f = parse_filters_json(fields).unwrap().remove(0);
            f.expression = Some(Expression {
                text: "…".into(),
                program: Some(program.clone()),
            });
            f
        };
        let mut bytes = [0u8; 28];
        bytes[0] = 0x45;
        bytes[9] = 17;
        let packet = PacketView {
            data: &bytes,
            net_offset: 0,
            protocol: 0x0800,
            pkttype: 0,
            ifindex: 2,
        };
        let flow = Flow {
            src: v4("0.0.0.0"),
            dst: v4("0.0.0.0"),
            protocol: 17,
            ports: Some((0, 0)),
            direction: Direction::Incoming,
            seen: Seen::Received,
            icmp: None,
            tcp_flags: None,
        };
        let keep = |filters: &[CaptureFilter]| filters_keep(filters, Some(&flow), &packet);
        assert!(keep(&[with(&udp, "{}")]));
        assert!(keep(&[with(&udp, r#"{"direction":"inbound"}"#)]));
        assert!(
            !keep(&[with(&udp, r#"{"direction":"outbound"}"#)]),
            "fields AND the expression"
        );
        assert!(!keep(&[with(&far, "{}")]));
        // A fault drops the packet, whatever comes after; filters without an expression come first.
        assert!(!keep(&[with(&far, "{}"), with(&udp, "{}")]));
        assert!(keep(&[with(&udp, "{}"), with(&far, "{}")]));
        assert!(keep(&[
            with(&far, "{}"),
            parse_filters_json(r#"{"protocol":"UDP"}"#).unwrap().remove(0)
        ]));
        // Not IP: never an expression's.
        let arp = PacketView {
            protocol: 0x0806,
            ..packet
        };
        assert!(!filters_keep(&[with(&udp, "{}")], None, &arp));
        // filters_match cannot judge an expression: it keeps nothing for it.
        assert!(!filters_match(&[with(&udp, "{}")], Some(&flow)));
    }

    #[test]
    fn explain_says_what_a_list_keeps() {
        let text = explain(&parse_filters_json(
            r#"[{"protocol":"TCP","localIPAddress":"10.0.0.0/8","remotePort":"443","tcpFlags":"SYN;!ACK","direction":"outbound"},
                {"protocol":"ICMP","icmpType":"8"},{"bpfExpression":"udp port 53"}]"#,
        )
        .unwrap());
        assert_eq!(
            text,
            "Keeps a packet when any of these 3 filters matches it:\n  \
             filters[0]: TCP segments (IPv4 and IPv6) whose local side (this host's) has address 10.0.0.0/8 whose remote side (the peer's) has port 443 with TCP flags SYN set and ACK clear that this host sends (outbound) (an IPv4 fragment after the first has no transport header: it never matches)\n  \
             filters[1]: ICMP messages (IPv4) of type 8 (an IPv4 fragment after the first has no transport header: it never matches)\n  \
             filters[2]: IPv4 and IPv6 packets that the tcpdump expression \"udp port 53\" keeps\n\
             Filters without a bpfExpression are tried first, then those with one in order; a packet an expression reads past the end of is dropped, as tcpdump drops it.\n\
             Local is this host's side of each packet: the source of what it sends, the destination of what it receives; on loopback and for overheard packets either side.\n"
        );
        assert_eq!(explain(&[]), "Keeps every packet: there are no filters.\n");
        assert_eq!(
            explain(&parse_filters_json("[{}]").unwrap()),
            "Keeps a packet when this filter matches it:\n  filters[0]: every packet (it sets no field), IP or not\n"
        );
    }

    #[test]
    fn netwatch_fields_parse_and_echo() {
        let f = parse_filters_json(r#"{"protocol":"icmp","icmpType":" 8 ","icmpCode":"0","direction":"OUTBOUND"}"#)
            .unwrap();
        assert_eq!(f[0].protocol, Protocol::Icmp);
        assert_eq!(
            (f[0].icmp_type, f[0].icmp_code, f[0].direction),
            (Some(8), Some(0), Some(Way::Outbound))
        );
        assert_eq!(f[0].to_string(), "outbound ICMP type 8 code 0");
        let f = parse_filters_json(r#"{"protocol":"icmp6","icmpType":"128"}"#).unwrap();
        assert_eq!(f[0].protocol, Protocol::Icmpv6);
        // tcpFlags with Any means TCP.
        let f = parse_filters_json(r#"{"tcpFlags":"syn, !Ack;;SYN", "localPort":"22"}"#).unwrap();
        assert_eq!(f[0].protocol, Protocol::Tcp);
        assert_eq!(f[0].tcp_flags, Some(TcpFlags { set: 0x02, clear: 0x10 }));
        assert_eq!(f[0].to_string(), "TCP flags SYN;!ACK local port 22");
        let echoed = serde_json::to_string(&f[0].to_wire()).unwrap();
        assert_eq!(
            echoed,
            r#"{"protocol":"TCP","localIPAddress":"","remoteIPAddress":"","localPort":"22","remotePort":"","tcpFlags":"SYN;!ACK"}"#
        );
        assert_eq!(f[0].to_wire().validate(0).unwrap(), f[0]);
        // CIDR: alone, in lists with addresses, both families; /32 and /128 are one address.
        let ips = |s: &str| {
            parse_filters_json(&format!(r#"{{"localIPAddress":"{s}"}}"#)).unwrap()[0]
                .local_ip
                .clone()
                .unwrap()
        };
        assert_eq!(ips("10.0.0.0/8").v4().collect::<Vec<_>>(), [(0x0a00_0000, 0x0aff_ffff)]);
        assert_eq!(ips("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(ips("10.0.0.0-10.0.0.255").to_string(), "10.0.0.0/24");
        assert_eq!(ips("10.0.0.1/32").to_string(), "10.0.0.1");
        assert_eq!(ips("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(ips("::/0").to_string(), "::/0");
        let set = ips("fd00::/64; 10.1.0.0/16 ;192.168.1.7");
        assert_eq!(set.to_string(), "fd00::/64;10.1.0.0/16;192.168.1.7");
        assert!(set.contains(v6("fd00::ffff:1")) && !set.contains(v6("fd00:0:0:1::")));
        assert!(set.contains(v4("10.1.255.255")) && !set.contains(v4("10.2.0.0")));
        assert!(set.contains(v4("192.168.1.7")) && !set.contains(v4("192.168.1.8")));
        assert_eq!(
            IpRange::new(v4("10.0.0.1"), v4("10.0.0.2")).unwrap().prefix_len(),
            None,
            "not aligned"
        );
    }

    #[test]
    fn netwatch_fields_match() {
        let flow = |protocol: u8, src: &str, dst: &str| Flow {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol,
            ports: None,
            direction: Direction::Unknown,
            seen: Seen::Unknown,
            icmp: None,
            tcp_flags: None,
        };
        let keeps = |json: &str, flow: &Flow| filters_match(&parse_filters_json(json).unwrap(), Some(flow));
        let echo = Flow {
            icmp: Some((8, 0)),
            ..flow(IPPROTO_ICMP, "10.0.0.1", "10.0.0.2")
        };
        let echo6 = Flow {
            icmp: Some((128, 0)),
            ..flow(IPPROTO_ICMPV6, "fd00::1", "fd00::2")
        };
        assert!(keeps(r#"{"protocol":"ICMP"}"#, &echo) && !keeps(r#"{"protocol":"ICMP"}"#, &echo6));
        assert!(keeps(r#"{"protocol":"ICMPv6","icmpType":"128"}"#, &echo6));
        assert!(!keeps(r#"{"protocol":"ICMPv6","icmpType":"129"}"#, &echo6));
        assert!(keeps(r#"{"protocol":"ICMP","icmpType":"8","icmpCode":"0"}"#, &echo));
        assert!(!keeps(r#"{"protocol":"ICMP","icmpCode":"1"}"#, &echo));
        // An IPv4 packet with protocol 58 is not ICMPv6, an IPv6 one with 1 not ICMP.
        assert!(!keeps(
            r#"{"protocol":"ICMPv6"}"#,
            &flow(IPPROTO_ICMPV6, "10.0.0.1", "10.0.0.2")
        ));
        assert!(!keeps(
            r#"{"protocol":"ICMP"}"#,
            &flow(IPPROTO_ICMP, "fd00::1", "fd00::2")
        ));
        // A fragment without its ICMP header matches the protocol but no type.
        assert!(!keeps(
            r#"{"protocol":"ICMP","icmpType":"8"}"#,
            &flow(IPPROTO_ICMP, "10.0.0.1", "10.0.0.2")
        ));

        let syn = Flow {
            tcp_flags: Some(0x02),
            ports: Some((1, 2)),
            ..flow(IPPROTO_TCP, "10.0.0.1", "10.0.0.2")
        };
        let syn_ack = Flow {
            tcp_flags: Some(0x12),
            ..syn
        };
        assert!(keeps(r#"{"tcpFlags":"SYN;!ACK"}"#, &syn) && !keeps(r#"{"tcpFlags":"SYN;!ACK"}"#, &syn_ack));
        assert!(keeps(r#"{"tcpFlags":"SYN;ACK"}"#, &syn_ack) && !keeps(r#"{"tcpFlags":"SYN;ACK"}"#, &syn));
        assert!(!keeps(r#"{"tcpFlags":"!SYN"}"#, &Flow { tcp_flags: None, ..syn }));

        let sent = Flow {
            seen: Seen::Sent,
            ..syn
        };
        let received = Flow {
            seen: Seen::Received,
            ..syn
        };
        let overheard = Flow {
            seen: Seen::Neither,
            ..syn
        };
        for (json, kept) in [
            (r#"{"direction":"outbound"}"#, [true, false, false, true]),
            (r#"{"direction":"inbound"}"#, [false, true, false, true]),
            (r#"{}"#, [true, true, true, true]),
        ] {
            let got = [sent, received, overheard, syn].map(|f| keeps(json, &f));
            assert_eq!(got, kept, "{json}");
        }
        // Any field set (direction too) asks for an IP packet.
        assert!(!filters_match(
            &parse_filters_json(r#"{"direction":"outbound"}"#).unwrap(),
            None
        ));
    }

    #[test]
    fn families_that_cannot_meet_are_rejected() {
        let rows = [
            (
                ("10.0.0.1", "::1"),
                r#"filters[2] can never match: localIPAddress "10.0.0.1" is IPv4 only and remoteIPAddress "::1" is IPv6 only, but a packet's two addresses are of one family; use one filter per family"#,
            ),
            (
                ("2001:db8::1-2001:db8::9", "10.0.0.1;10.0.0.2"),
                r#"filters[2] can never match: localIPAddress "2001:db8::1-2001:db8::9" is IPv6 only and remoteIPAddress "10.0.0.1;10.0.0.2" is IPv4 only, but a packet's two addresses are of one family; use one filter per family"#,
            ),
        ];
        for ((local, remote), message) in rows {
            let err = wire("", local, remote, "", "").validate(2).unwrap_err();
            assert_eq!(err.target, "filters[2]");
            assert_eq!(err.message, message);
        }
        // A list that holds both families meets either.
        wire("", "10.0.0.1;::1", "::2", "", "").validate(0).unwrap();
        wire("", "10.0.0.1", "::2;10.0.0.2", "", "").validate(0).unwrap();
    }

    #[test]
    fn error_targets_carry_the_index_and_a_prefix() {
        let filters = [wire("TCP", "", "", "", ""), wire("", "", "", "", "65536")];
        let err = validate_filters(&filters).unwrap_err();
        assert_eq!(err.target, "filters[1].remotePort");
        let err = err.prefixed("properties.");
        assert_eq!(err.target, "properties.filters[1].remotePort");
        assert_eq!(
            err.message,
            r#"properties.filters[1].remotePort "65536" is out of range: ports are 0-65535"#
        );
    }

    #[test]
    fn good_inputs_parse() {
        let ports = |s: &str| filter("", "", "", s, "").local_port.unwrap().ranges().to_vec();
        let r = PortRange::new;
        assert_eq!(ports("80"), [r(80, 80).unwrap()]);
        assert_eq!(ports("0"), [r(0, 0).unwrap()]);
        assert_eq!(ports("65535"), [r(65535, 65535).unwrap()]);
        assert_eq!(ports("1-65535"), [r(1, 65535).unwrap()]);
        assert_eq!(ports("1000 - 2000"), [r(1000, 2000).unwrap()]);
        assert_eq!(ports("1000-2000;"), [r(1000, 2000).unwrap()]);
        assert_eq!(ports("080"), [r(80, 80).unwrap()]);
        for list in ["20;80;443", "80;443;", "20; 80 ;443", "20,80,443", " 20;80;;443 "] {
            let expected: Vec<u16> = if list.starts_with("80") {
                vec![80, 443]
            } else {
                vec![20, 80, 443]
            };
            let got: Vec<u16> = ports(list).iter().map(|r| r.lo).collect();
            assert_eq!(got, expected, "{list}");
        }

        let ips = |s: &str| filter("", s, "", "", "").local_ip.unwrap();
        let set = ips("1.1.1.1-255.255.255.255");
        assert_eq!(set.v4().collect::<Vec<_>>(), [(0x0101_0101, u32::MAX)]);
        assert!(!set.has_v6());
        let set = ips("2001:db8::-2001:db8::ffff");
        assert_eq!(
            set.v6().collect::<Vec<_>>(),
            [(0x2001_0db8 << 96, (0x2001_0db8 << 96) | 0xffff)]
        );
        let set = ips("10.0.0.3;2001:db8::1;");
        assert!(set.contains(v4("10.0.0.3")) && set.contains(v6("2001:db8::1")));
        assert!(set.has_v4() && set.has_v6());
        assert_eq!(
            ips("::ffff:10.0.0.1").ranges(),
            [IpRange::single(v6("::ffff:10.0.0.1"))]
        );
        assert_eq!(ips(" 10.0.0.3 ").to_string(), "10.0.0.3");

        for (raw, protocol) in [
            ("TCP", Protocol::Tcp),
            ("tcp", Protocol::Tcp),
            ("Udp", Protocol::Udp),
            ("Any", Protocol::Any),
            ("ANY", Protocol::Any),
            ("", Protocol::Any),
            (" ", Protocol::Any),
        ] {
            let f = wire(raw, "", "", "", "");
            assert_eq!(f.validate(0).unwrap().protocol, protocol, "{raw:?}");
        }
        // Azure echoes unset fields as "": they validate as unset.
        let echoed = PacketCaptureFilter {
            protocol: Some("Any".into()),
            local_ip_address: Some(String::new()),
            remote_ip_address: Some(String::new()),
            local_port: Some(String::new()),
            remote_port: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(echoed.validate(0).unwrap(), CaptureFilter::default());
    }

    #[test]
    fn wire_names_match_serde() {
        let full = PacketCaptureFilter {
            icmp_type: Some("8".into()),
            icmp_code: Some("0".into()),
            tcp_flags: Some("SYN".into()),
            direction: Some("inbound".into()),
            bpf_expression: Some("tcp".into()),
            ..wire("TCP", "10.0.0.1", "10.0.0.2", "80", "443")
        };
        let json = serde_json::to_value(&full).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, FIELDS);
        for alias in FIELD_ALIASES {
            let json = format!(r#"{{"{alias}":"10.0.0.1"}}"#);
            let parsed: PacketCaptureFilter = serde_json::from_str(&json).unwrap();
            assert!(parsed.local_ip_address.is_some() || parsed.remote_ip_address.is_some());
        }
        // Unset fields are left out; `null` reads as unset.
        assert_eq!(serde_json::to_string(&PacketCaptureFilter::default()).unwrap(), "{}");
        let parsed: PacketCaptureFilter = serde_json::from_str(r#"{"localPort":null}"#).unwrap();
        assert_eq!(parsed, PacketCaptureFilter::default());
    }

    #[test]
    fn to_wire_is_azures_echo_and_round_trips() {
        let f = filter("tcp", "10.0.0.3", "1.1.1.1-255.255.255.255", "", "20;80;443;");
        let echoed = f.to_wire();
        assert_eq!(
            serde_json::to_string(&echoed).unwrap(),
            r#"{"protocol":"TCP","localIPAddress":"10.0.0.3","remoteIPAddress":"1.1.1.1-255.255.255.255","localPort":"","remotePort":"20;80;443"}"#
        );
        assert_eq!(echoed.validate(0).unwrap(), f);
    }

    #[test]
    fn display_is_a_short_summary() {
        let rows = [
            (
                filter("TCP", "10.0.0.3", "1.1.1.1-255.255.255.255", "", "20"),
                "TCP local 10.0.0.3 remote 1.1.1.1-255.255.255.255 port 20",
            ),
            (filter("", "", "", "80;443", ""), "local port 80;443"),
            (
                filter("udp", "::1", "", "53", "1000-2000"),
                "UDP local ::1 port 53 remote port 1000-2000",
            ),
            (filter("", "", "", "", ""), "all packets"),
        ];
        for (f, text) in rows {
            assert_eq!(f.to_string(), text);
        }
    }

    #[test]
    fn json_errors_carry_the_path() {
        #[rustfmt::skip]
        let rows = [
            (r#"[{}, {"localip": "10.0.0.1"}]"#, "filters[1]",
             r#"filters[1] has an unknown field "localip" (did you mean "localIPAddress"?): valid fields are protocol, localIPAddress, remoteIPAddress, localPort, remotePort, icmpType, icmpCode, tcpFlags, direction, bpfExpression"#),
            (r#"{"LocalPort": "80"}"#, "filters[0]",
             r#"filters[0] has an unknown field "LocalPort" (did you mean "localPort"?): valid fields are protocol, localIPAddress, remoteIPAddress, localPort, remotePort, icmpType, icmpCode, tcpFlags, direction, bpfExpression"#),
            (r#"[{"port": "80"}]"#, "filters[0]",
             r#"filters[0] has an unknown field "port": valid fields are protocol, localIPAddress, remoteIPAddress, localPort, remotePort, icmpType, icmpCode, tcpFlags, direction, bpfExpression"#),
            (r#"[{"protocol": "TCP", "localPort": 80}]"#, "filters[0].localPort",
             "filters[0].localPort: invalid type: integer `80`, expected a string at line 1 column 36"),
            (r#"{"remotePort": ["80"]}"#, "filters[0].remotePort",
             "filters[0].remotePort: invalid type: sequence, expected a string at line 1 column 15"),
            (r#"[{"localPort": "80", "localPort": "81"}]"#, "filters[0]",
             "filters[0]: duplicate field `localPort` at line 1 column 32"),
            (r#"[{"localIPAddress": "10.0.0.1", "localIpAddress": "10.0.0.2"}]"#, "filters[0]",
             "filters[0]: duplicate field `localIPAddress` at line 1 column 48"),
            (r#"[{}, {}, "TCP"]"#, "filters[2]",
             r#"filters[2] must be a JSON object, such as {"protocol":"TCP","localPort":"80"}, not a string"#),
            (r#""TCP""#, "filters",
             r#"filters must be a JSON array of filter objects, such as [{"protocol":"TCP","localPort":"80"}], not a string"#),
            (r#"[{"protocol": "TCP""#, "filters",
             "filters is not valid JSON: EOF while parsing an object at line 1 column 19"),
            (r#"[{}, {"localPort": "70000"}]"#, "filters[1].localPort",
             r#"filters[1].localPort "70000" is out of range: ports are 0-65535"#),
        ];
        for (json, target, message) in rows {
            let err = parse_filters_json(json).unwrap_err();
            assert_eq!(err.target, target, "{json}");
            assert_eq!(err.message, message, "{json}");
        }
    }

    #[test]
    fn json_good_inputs() {
        assert_eq!(parse_filters_json("[]").unwrap(), []);
        let one = parse_filters_json(r#"{"protocol":"UDP","remotePort":"53"}"#).unwrap();
        assert_eq!(one, [filter("UDP", "", "", "", "53")]);
        let two = parse_filters_json(
            r#"[{"protocol":"TCP","localIpAddress":"10.0.0.3","localPort":"","remotePort":null},
                {"remoteIPAddress":"2001:db8::1-2001:db8::ff"}]"#,
        )
        .unwrap();
        assert_eq!(
            two,
            [
                filter("TCP", "10.0.0.3", "", "", ""),
                filter("", "", "2001:db8::1-2001:db8::ff", "", "")
            ]
        );
    }

    #[test]
    fn a_filter_matches_both_directions() {
        let f = filter("TCP", "10.0.0.3", "1.1.1.1-1.1.1.9", "", "443");
        assert!(f.matches(Some(&tcp("10.0.0.3", 50000, "1.1.1.5", 443))));
        assert!(f.matches(Some(&tcp("1.1.1.5", 443, "10.0.0.3", 50000))));
        // Every set field must match, on the same side.
        assert!(!f.matches(Some(&tcp("10.0.0.3", 443, "1.1.1.5", 50000))));
        assert!(!f.matches(Some(&tcp("10.0.0.4", 50000, "1.1.1.5", 443))));
        assert!(!f.matches(Some(&tcp("10.0.0.3", 50000, "1.1.1.10", 443))));
        // Local and remote both "in the same set" still needs one on each side.
        let f = filter("", "10.0.0.1", "", "", "");
        assert!(f.matches(Some(&tcp("10.0.0.2", 1, "10.0.0.1", 2))));
        assert!(!f.matches(Some(&tcp("10.0.0.2", 1, "10.0.0.3", 2))));
    }

    #[test]
    fn local_is_the_side_this_host_is_on() {
        // This host (10.0.0.1) serves 443 and connects out to its peer's 443.
        let at = |direction, flow: Flow| Flow { direction, ..flow };
        let (out, inc) = (Direction::Outgoing, Direction::Incoming);
        let outbound = [
            at(out, tcp("10.0.0.1", 40000, "10.0.0.2", 443)),
            at(inc, tcp("10.0.0.2", 443, "10.0.0.1", 40000)),
        ];
        let inbound = [
            at(inc, tcp("10.0.0.2", 50000, "10.0.0.1", 443)),
            at(out, tcp("10.0.0.1", 443, "10.0.0.2", 50000)),
        ];
        let remote_443 = filter("TCP", "", "", "", "443");
        let local_443 = filter("TCP", "", "", "443", "");
        for flow in &outbound {
            assert!(
                remote_443.matches(Some(flow)) && !local_443.matches(Some(flow)),
                "{flow:?}"
            );
        }
        for flow in &inbound {
            assert!(
                local_443.matches(Some(flow)) && !remote_443.matches(Some(flow)),
                "{flow:?}"
            );
        }
        // Unknown (promiscuous, loopback): either orientation, so both filters keep all four.
        for flow in outbound.iter().chain(&inbound) {
            let unknown = at(Direction::Unknown, *flow);
            assert!(remote_443.matches(Some(&unknown)) && local_443.matches(Some(&unknown)));
        }
        // Addresses that pin the sides keep what they kept before, in the right direction.
        let to_peer = filter("", "10.0.0.1", "10.0.0.2", "", "");
        for flow in outbound.iter().chain(&inbound) {
            assert!(to_peer.matches(Some(flow)), "{flow:?}");
        }
        // ...but a packet sent *from* the peer's address is not this host's own.
        assert!(!to_peer.matches(Some(&at(out, tcp("10.0.0.2", 1, "10.0.0.1", 2)))));
    }

    #[test]
    fn any_filter_of_the_list_keeps_a_packet() {
        let web = filter("TCP", "", "", "80", "");
        let dns = filter("UDP", "", "", "", "53");
        let flow = tcp("10.0.0.1", 80, "10.0.0.2", 5555);
        let dns_flow = Flow {
            protocol: IPPROTO_UDP,
            ports: Some((5555, 53)),
            ..flow
        };
        assert!(filters_match(&[web.clone(), dns.clone()], Some(&flow)));
        assert!(filters_match(&[web.clone(), dns.clone()], Some(&dns_flow)));
        assert!(!filters_match(&[dns], Some(&flow)));
        assert!(!filters_match(std::slice::from_ref(&web), Some(&dns_flow)));
        assert!(filters_match(&[], Some(&flow)));
        assert!(filters_match(&[], None));
    }

    #[test]
    fn ports_only_for_tcp_and_udp_with_ports() {
        let any_port = filter("", "", "", "", "80");
        let icmp = Flow {
            protocol: 1,
            ports: None,
            ..tcp("10.0.0.1", 0, "10.0.0.2", 0)
        };
        let udp = Flow {
            protocol: IPPROTO_UDP,
            ports: Some((1, 80)),
            ..icmp
        };
        let fragment = Flow {
            protocol: IPPROTO_UDP,
            ports: None,
            ..icmp
        };
        // Even a flow that claims ports is not matched on them unless TCP/UDP.
        let gre = Flow {
            protocol: 47,
            ports: Some((1, 80)),
            ..icmp
        };
        assert!(any_port.matches(Some(&udp)));
        assert!(!any_port.matches(Some(&icmp)));
        assert!(!any_port.matches(Some(&fragment)));
        assert!(!any_port.matches(Some(&gre)));
        // Without port fields, fragments and other protocols match.
        let by_addr = filter("", "10.0.0.1", "", "", "");
        assert!(by_addr.matches(Some(&icmp)) && by_addr.matches(Some(&fragment)) && by_addr.matches(Some(&gre)));
        assert!(filter("UDP", "", "", "", "").matches(Some(&fragment)));
        assert!(!filter("TCP", "", "", "", "").matches(Some(&fragment)));
        // The full port range still asks for ports.
        assert!(!filter("", "", "", "0-65535", "").matches(Some(&icmp)));
    }

    #[test]
    fn non_ip_packets_match_only_the_empty_filter() {
        assert!(filter("", "", "", "", "").matches(None));
        assert!(filter("any", "", "", "", "").matches(None));
        for f in [
            filter("TCP", "", "", "", ""),
            filter("", "10.0.0.1", "", "", ""),
            filter("", "", "", "", "80"),
        ] {
            assert!(!f.matches(None), "{f}");
        }
    }

    #[test]
    fn families_match_only_their_own() {
        let f = filter("", "10.0.0.0-10.255.255.255", "", "", "");
        let flow6 = Flow {
            src: v6("::a00:1"),
            dst: v6("::1"),
            protocol: IPPROTO_TCP,
            ports: Some((1, 2)),
            direction: Direction::Unknown,
            seen: Seen::Unknown,
            icmp: None,
            tcp_flags: None,
        };
        assert!(!f.matches(Some(&flow6)));
        let f = filter("", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "", "", "");
        assert!(f.matches(Some(&flow6)));
        assert!(!f.matches(Some(&tcp("10.0.0.1", 1, "10.0.0.2", 2))));
    }

    /// Addresses near a few bases, so that random sets and addresses meet.
    fn near_v4() -> impl Strategy<Value = u32> {
        (prop::sample::select(vec![0u32, 0x0a00_00fc, 0xffff_fff8]), 0u32..8).prop_map(|(b, o)| b.saturating_add(o))
    }

    fn near_v6() -> impl Strategy<Value = u128> {
        let bases = vec![0u128, 0x2001_0db8_0000_0000_ffff_ffff_ffff_fffc, u128::MAX - 7];
        (prop::sample::select(bases), 0u128..8).prop_map(|(b, o)| b.saturating_add(o))
    }

    fn near_addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            near_v4().prop_map(|a| IpAddr::V4(a.into())),
            near_v6().prop_map(|a| IpAddr::V6(a.into())),
        ]
    }

    /// A wire value for an address field: one address, a range or a list.
    fn addr_text() -> impl Strategy<Value = String> {
        prop_oneof![
            near_addr().prop_map(|a| a.to_string()),
            (near_v4(), near_v4()).prop_map(|(a, b)| format!(
                "{}-{}",
                Ipv4Addr::from(a.min(b)),
                Ipv4Addr::from(a.max(b))
            )),
            (near_v6(), near_v6()).prop_map(|(a, b)| format!(
                "{}-{}",
                Ipv6Addr::from(a.min(b)),
                Ipv6Addr::from(a.max(b))
            )),
            prop::collection::vec(near_addr(), 1..5).prop_map(|list| list
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(";")),
        ]
    }

    fn port_text() -> impl Strategy<Value = String> {
        let port = || prop::sample::select(vec![0u16, 1, 79, 80, 81, 443, 65534, 65535]);
        prop_oneof![
            port().prop_map(|p| p.to_string()),
            (port(), port()).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            prop::collection::vec(port(), 1..5).prop_map(|l| l
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(";")),
        ]
    }

    proptest! {
        #[test]
        fn ip_set_contains_agrees_with_brute_force(text in addr_text(), addr in near_addr()) {
            let set = filter("", &text, "", "", "").local_ip.unwrap();
            let expected = text.split(';').any(|entry| match entry.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi): (IpAddr, IpAddr) = (lo.parse().unwrap(), hi.parse().unwrap());
                    lo.is_ipv4() == addr.is_ipv4() && lo <= addr && addr <= hi
                }
                None => entry.parse::<IpAddr>().unwrap() == addr,
            });
            prop_assert_eq!(set.contains(addr), expected);
        }

        #[test]
        fn formatting_then_parsing_gives_the_same_sets(ip in addr_text(), port in port_text(), tcp in any::<bool>()) {
            let protocol = if tcp { "TCP" } else { "Any" };
            let f = filter(protocol, &ip, "", "", &port);
            let again = f.to_wire().validate(0).unwrap();
            prop_assert_eq!(&again, &f);
            let ports = f.remote_port.as_ref().unwrap();
            for p in [0u16, 1, 79, 80, 81, 443, 444, 65534, 65535] {
                let expected = port.split(';').any(|e| match e.split_once('-') {
                    Some((lo, hi)) => lo.parse::<u16>().unwrap() <= p && p <= hi.parse::<u16>().unwrap(),
                    None => e.parse::<u16>().unwrap() == p,
                });
                prop_assert_eq!(ports.contains(p), expected);
            }
        }

        #[test]
        fn a_filter_cannot_tell_the_two_directions_apart(
            local in proptest::option::of(addr_text()),
            remote in proptest::option::of(addr_text()),
            lport in proptest::option::of(port_text()),
            rport in proptest::option::of(port_text()),
            src in near_addr(), dst in near_addr(), sport in 0u16..100, dport in 0u16..100,
        ) {
            let w = PacketCaptureFilter {
                protocol: None,
                local_ip_address: local,
                remote_ip_address: remote,
                local_port: lport,
                remote_port: rport,
                ..Default::default()
            };
            // Random pairs of single-family sets of different families are rejected.
            if let Ok(f) = w.validate(0) {
                for direction in [Direction::Outgoing, Direction::Incoming, Direction::Unknown] {
                    let flow = Flow { src, dst, protocol: IPPROTO_UDP, ports: Some((sport, dport)), direction, seen: Seen::Unknown, icmp: None, tcp_flags: None };
                    let back = Flow {
                        src: dst, dst: src, protocol: IPPROTO_UDP, ports: Some((dport, sport)),
                        direction: direction.reversed(), seen: Seen::Unknown, icmp: None, tcp_flags: None,
                    };
                    prop_assert_eq!(f.matches(Some(&flow)), f.matches(Some(&back)));
                }
            }
        }

        #[test]
        fn direction_picks_the_local_side(
            local in proptest::option::of(addr_text()),
            remote in proptest::option::of(addr_text()),
            lport in proptest::option::of(port_text()),
            rport in proptest::option::of(port_text()),
            src in near_addr(), dst in near_addr(), sport in 0u16..100, dport in 0u16..100,
        ) {
            let w = PacketCaptureFilter {
                protocol: None,
                local_ip_address: local.clone(),
                remote_ip_address: remote.clone(),
                local_port: lport.clone(),
                remote_port: rport.clone(),
                ..Default::default()
            };
            if let Ok(f) = w.validate(0) {
                // The filter with local and remote swapped: what the source side must match.
                let swapped = PacketCaptureFilter {
                    protocol: None,
                    local_ip_address: remote,
                    remote_ip_address: local,
                    local_port: rport,
                    remote_port: lport,
                    ..Default::default()
                }
                .validate(0)
                .unwrap();
                let at = |direction| Flow { src, dst, protocol: IPPROTO_UDP, ports: Some((sport, dport)), direction, seen: Seen::Unknown, icmp: None, tcp_flags: None };
                let sent = f.matches(Some(&at(Direction::Outgoing)));
                let received = f.matches(Some(&at(Direction::Incoming)));
                // Sent: the source is local; received: the destination is, which is
                // what the swapped filter matches when sent; unknown: either.
                prop_assert_eq!(received, swapped.matches(Some(&at(Direction::Outgoing))));
                prop_assert_eq!(f.matches(Some(&at(Direction::Unknown))), sent || received);
            }
        }
    }
}
