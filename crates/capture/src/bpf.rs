//! Validated capture filters → a classic BPF socket filter: netwatch's own
//! code for the filters' fields, with the programs of their tcpdump
//! expressions (compiled by libpcap elsewhere: `netwatch_bpf::expression`)
//! spliced in.
//!
//! Pure and safe: no syscalls here. `sys` attaches the [`Program`] with
//! `SO_ATTACH_FILTER` to an AF_PACKET socket, which may be `SOCK_RAW` on an
//! Ethernet interface (the filter sees the frame from its link header) or
//! `SOCK_DGRAM` on the `any` device (it sees the packet from its network
//! header). So the program never reads the link header:
//! - the network protocol comes from the ancillary load
//!   `ldh [SKF_AD_OFF + SKF_AD_PROTOCOL]`, which is `ntohs(skb->protocol)`;
//! - which end of the packet is this host comes from the packet type
//!   `ld [SKF_AD_OFF + SKF_AD_PKTTYPE]` (`skb->pkt_type`: `PACKET_OUTGOING` for
//!   what this host sends, `PACKET_HOST`/`BROADCAST`/`MULTICAST` for what it
//!   receives, `PACKET_OTHERHOST` for what it only overhears) and the interface
//!   `ld [SKF_AD_OFF + SKF_AD_IFINDEX]` (loopback, index 1 in every network
//!   namespace, has this host at both ends): [`direction`] maps the two to the
//!   [`Direction`] the filters' *local* side follows;
//! - every other field is read relative to the network header with
//!   `SKF_NET_OFF + k` (net/core/filter.c, `bpf_internal_load_pointer_neg_helper`),
//!   the IPv4 header length with `ldxb 4*([SKF_NET_OFF]&0xf)` (the kernel turns
//!   `BPF_LDX|BPF_B|BPF_MSH` into an absolute load, negative offsets included).
//!
//! What a program keeps is what [`netwatch_api::filter::filters_match`] keeps
//! (`filters_keep` with expressions; the property tests at the bottom check
//! both), with one kernel rule on top: a load past the end of the packet ends
//! the program with 0, dropping the packet. A packet too short for the IP
//! header fields a filter reads is therefore dropped (as with tcpdump's
//! filters). Filters that read less of the transport header are tried first
//! (none, ICMP's type and code, the ports, TCP's flags), so a truncated
//! transport header only costs the filters that read past its end, which
//! could not match it anyway; a filter reads all it needs (both ports, type
//! and code) before it keeps a packet, so a header cut between them keeps
//! nothing either. Filters with an expression come last, each its fields then
//! its program. Loads relative to the network header also stop
//! at the end of the skb's linear data (`skb_tail_pointer`); drivers put the
//! IP and transport headers there.
//!
//! An accepted packet is kept up to `snaplen` bytes: the kernel truncates it
//! to the filter's return value (packet(7), `SO_ATTACH_FILTER` in socket(7)).
//!
//! How: [`compile`] lowers the filters to a small boolean tree of tests
//! (`lower`), then emits short-circuit jumping code over labels and assembles
//! it, routing jumps longer than a `u8` through trampolines (`emit`). The
//! instructions, the kernel's checker ([`Program::validate`]) and the
//! interpreter [`run`] come from `netwatch-bpf` (re-exported here).
//!
//! # Layout
//! - `lower`: filters → boolean IR (tests on packet fields), constant-folded.
//! - `emit`: IR → instructions: jumping code, register tracking, assembler.

mod emit;
mod lower;

use netwatch_api::filter::{CaptureFilter, Direction};
// The pure classic-BPF machinery lives in netwatch-bpf, which the API crate,
// the controller and the CLI use without this engine.
pub use netwatch_bpf::*;

use code::*;

/// Which end of a packet is this host, from what the filter can load: the
/// packet type and the interface. Packets on loopback have this host at both
/// ends, overheard ones at neither: for both either side may be *local*.
pub fn direction(pkttype: u8, ifindex: u32) -> Direction {
    match pkttype {
        _ if ifindex == LOOPBACK_IFINDEX => Direction::Unknown,
        PACKET_OUTGOING => Direction::Outgoing,
        PACKET_HOST | PACKET_BROADCAST | PACKET_MULTICAST => Direction::Incoming,
        _ => Direction::Unknown,
    }
}

/// Filters that cannot become a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// More instructions than the kernel accepts (`BPF_MAXINSNS`).
    #[error(
        "the filters compile to {len} BPF instructions, more than the kernel's limit of {max}: \
         drop about {}% of the filters or of their address and port values \
         (IPv6 addresses and long lists of scattered values cost the most)",
        cut_percent(*.len, *.max)
    )]
    TooLong { len: usize, max: usize },
    /// A filter's `bpfExpression` has no program yet: compile it first.
    #[error(
        "filters[{index}].bpfExpression is not compiled: the controller, the CLI or netwatch capture \
         compiles it with libpcap"
    )]
    NotCompiled { index: usize },
    /// The spliced program failed the kernel's checks (a netwatch bug: its
    /// parts each passed them).
    #[error("the compiled program is not one the kernel takes: {0}")]
    Invalid(#[from] ValidateError),
}

/// The share of a too-long program to cut, rounded up: code grows about
/// linearly with the number of values.
fn cut_percent(len: usize, max: usize) -> usize {
    (len.saturating_sub(max) * 100).div_ceil(len.max(1))
}

/// Compiles `filters` (kept when ANY matches; an empty list keeps everything)
/// into a socket filter that returns `snaplen` for a kept packet and 0 for a
/// dropped one. A `snaplen` of 0 means the whole packet (Azure's
/// `bytesToCapturePerPacket` convention), compiled as `ret #0xffffffff`.
///
/// Filters with a `bpfExpression` take their compiled programs (each already
/// checked) spliced in after the others (`lower`); the whole is checked again
/// with [`Program::validate`].
pub fn compile(filters: &[CaptureFilter], snaplen: u32) -> Result<Program, CompileError> {
    let accept = if snaplen == 0 { u32::MAX } else { snaplen };
    let programs = filters
        .iter()
        .enumerate()
        .filter_map(|(index, f)| f.expression.as_ref().map(|e| (index, e)))
        .map(|(index, e)| e.program.as_ref().ok_or(CompileError::NotCompiled { index }))
        .collect::<Result<Vec<&Program>, _>>()?;
    let insns = match lower::lower(filters) {
        lower::Expr::Const(keep) => vec![Insn::stmt(BPF_RET | BPF_K, if keep { accept } else { 0 })],
        expr => {
            emit::generate(&expr, accept, &programs).map_err(|len| CompileError::TooLong { len, max: BPF_MAXINSNS })?
        }
    };
    let program = Program::from_insns(insns);
    program.validate()?;
    Ok(program)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use etherparse::{
        ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv6Header,
        PacketBuilder,
    };
    use netwatch_api::filter::{
        Flow, IPPROTO_TCP, IPPROTO_UDP, PacketCaptureFilter, Seen, filters_keep, filters_match, parse_filters_json,
    };
    use proptest::prelude::*;

    use super::*;

    const SNAP: u32 = 96;
    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum L4 {
        Tcp(u16, u16),
        Udp(u16, u16),
        Icmp,
        /// Another IP protocol (never TCP or UDP), 8 bytes of payload.
        Other(u8),
    }

    /// An IP packet to build, as both an Ethernet frame and a bare packet.
    #[derive(Debug, Clone, Copy)]
    struct Packet {
        src: IpAddr,
        dst: IpAddr,
        l4: L4,
        /// IPv4 fragment offset in 8-byte units (0: first or only fragment).
        frag_offset: u16,
        /// IPv4 header with 4 bytes of options (IHL 6).
        options: bool,
        /// `skb->pkt_type` and the interface index: which end is this host.
        pkttype: u8,
        ifindex: u32,
        /// TCP's flags byte, for [`L4::Tcp`].
        tcp_flags: u8,
        /// ICMP's type and code, for [`L4::Icmp`] (an echo request by default).
        icmp: Option<(u8, u8)>,
    }

    fn packet(src: &str, dst: &str, l4: L4) -> Packet {
        Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            l4,
            frag_offset: 0,
            options: false,
            // Overheard: either end may be local, as for every packet before
            // filters followed the direction (`sent`, `received` pick one).
            pkttype: PACKET_OTHERHOST,
            ifindex: 2,
            tcp_flags: 0,
            icmp: None,
        }
    }

    /// `p` as this host sends it.
    fn sent(p: Packet) -> Packet {
        Packet {
            pkttype: PACKET_OUTGOING,
            ..p
        }
    }

    /// `p` as this host receives it.
    fn received(p: Packet) -> Packet {
        Packet {
            pkttype: PACKET_HOST,
            ..p
        }
    }

    /// Bytes as a socket sees them, and where its network header starts.
    #[derive(Debug, Clone)]
    struct Frame {
        data: Vec<u8>,
        net_offset: usize,
        protocol: u16,
        pkttype: u8,
        ifindex: u32,
    }

    impl Frame {
        fn view(&self) -> PacketView<'_> {
            PacketView {
                data: &self.data,
                net_offset: self.net_offset,
                protocol: self.protocol,
                pkttype: self.pkttype,
                ifindex: self.ifindex,
            }
        }

        /// The same packet behind `len` bytes of some other link header.
        fn behind(&self, len: usize) -> Frame {
            let mut data = vec![0x55; len];
            data.extend_from_slice(&self.data[self.net_offset..]);
            Frame {
                data,
                net_offset: len,
                ..self.clone()
            }
        }
    }

    /// The packet as an Ethernet frame (`SOCK_RAW`) and bare (`SOCK_DGRAM`).
    fn frames(p: &Packet) -> [Frame; 2] {
        [true, false].map(|ethernet| {
            let (ip, protocol) = match (p.src, p.dst) {
                (IpAddr::V4(src), IpAddr::V4(dst)) => {
                    let mut h = Ipv4Header::new(0, 64, IpNumber(0), src.octets(), dst.octets()).unwrap();
                    h.fragment_offset = IpFragOffset::try_new(p.frag_offset).unwrap();
                    if p.options {
                        h.options = [1, 1, 1, 1].into(); // four NOPs
                    }
                    (IpHeaders::Ipv4(h, Default::default()), ETH_P_IP)
                }
                (IpAddr::V6(src), IpAddr::V6(dst)) => {
                    let h = Ipv6Header {
                        hop_limit: 64,
                        source: src.octets(),
                        destination: dst.octets(),
                        ..Default::default()
                    };
                    (IpHeaders::Ipv6(h, Default::default()), ETH_P_IPV6)
                }
                _ => panic!("mixed families in {p:?}"),
            };
            let builder = if ethernet {
                PacketBuilder::ethernet2(MAC_A, MAC_B).ip(ip)
            } else {
                PacketBuilder::ip(ip)
            };
            let payload = [0xab; 8];
            let mut data = Vec::new();
            match p.l4 {
                L4::Tcp(s, d) => builder.tcp(s, d, 1, 1024).write(&mut data, &payload),
                L4::Udp(s, d) => builder.udp(s, d).write(&mut data, &payload),
                L4::Icmp if p.src.is_ipv4() => builder.icmpv4_echo_request(1, 1).write(&mut data, &payload),
                L4::Icmp => builder.icmpv6_echo_request(1, 1).write(&mut data, &payload),
                L4::Other(n) => builder.write(&mut data, IpNumber(n), &payload),
            }
            .unwrap();
            let net_offset = if ethernet { 14 } else { 0 };
            let transport = net_offset
                + if p.src.is_ipv4() {
                    20 + if p.options { 4 } else { 0 }
                } else {
                    40
                };
            match p.l4 {
                L4::Tcp(..) => data[transport + 13] = p.tcp_flags,
                L4::Icmp => {
                    if let Some((kind, code)) = p.icmp {
                        data[transport] = kind;
                        data[transport + 1] = code;
                    }
                }
                _ => {}
            }
            Frame {
                data,
                net_offset,
                protocol,
                pkttype: p.pkttype,
                ifindex: p.ifindex,
            }
        })
    }

    /// An ARP request for 10.0.0.2 from 10.0.0.1, framed and bare.
    fn arp_frames() -> [Frame; 2] {
        let arp = ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            ArpOperation::REQUEST,
            &MAC_A,
            &[10, 0, 0, 1],
            &MAC_B,
            &[10, 0, 0, 2],
        )
        .unwrap();
        let mut framed = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .arp(arp.clone())
            .write(&mut framed)
            .unwrap();
        [
            Frame {
                data: framed,
                net_offset: 14,
                protocol: 0x0806,
                pkttype: PACKET_BROADCAST,
                ifindex: 2,
            },
            Frame {
                data: arp.to_bytes().to_vec(),
                net_offset: 0,
                protocol: 0x0806,
                pkttype: PACKET_BROADCAST,
                ifindex: 2,
            },
        ]
    }

    /// What the reference evaluator is told about the packet.
    fn flow(p: &Packet) -> Flow {
        let icmp = if p.src.is_ipv4() { 1 } else { 58 };
        let echo = if p.src.is_ipv4() { (8, 0) } else { (128, 0) };
        let (protocol, ports) = match p.l4 {
            L4::Tcp(s, d) => (IPPROTO_TCP, Some((s, d))),
            L4::Udp(s, d) => (IPPROTO_UDP, Some((s, d))),
            L4::Icmp => (icmp, None),
            L4::Other(n) => (n, None),
        };
        let whole = p.frag_offset == 0;
        Flow {
            src: p.src,
            dst: p.dst,
            protocol,
            ports: ports.filter(|_| whole),
            direction: direction(p.pkttype, p.ifindex),
            seen: Seen::from_pkttype(p.pkttype),
            icmp: (whole && p.l4 == L4::Icmp).then(|| p.icmp.unwrap_or(echo)),
            tcp_flags: (whole && matches!(p.l4, L4::Tcp(..))).then_some(p.tcp_flags),
        }
    }

    /// The same conversation the other way.
    fn reversed(l4: L4) -> L4 {
        match l4 {
            L4::Tcp(s, d) => L4::Tcp(d, s),
            L4::Udp(s, d) => L4::Udp(d, s),
            other => other,
        }
    }

    fn filters(json: &str) -> Vec<CaptureFilter> {
        parse_filters_json(json).unwrap()
    }

    fn program(filters: &[CaptureFilter]) -> Program {
        let program = compile(filters, SNAP).unwrap();
        program.validate().unwrap();
        program
    }

    /// Runs the program over `frames`: every frame must get the same verdict,
    /// 0 or [`SNAP`]. Returns whether the packet is kept.
    fn verdict(program: &Program, frames: &[Frame]) -> bool {
        let results: Vec<u32> = frames.iter().map(|f| run(program, &f.view())).collect();
        assert!(results.iter().all(|&r| r == results[0]), "{results:?}\n{program}");
        assert!(results[0] == 0 || results[0] == SNAP, "{results:?}");
        results[0] != 0
    }

    /// Whether `json` filters keep `p`, checked to agree with the evaluator,
    /// on an Ethernet frame, a bare packet and a 16-byte cooked header.
    fn keeps(json: &str, p: Packet) -> bool {
        let filters = filters(json);
        let program = program(&filters);
        let [framed, bare] = frames(&p);
        let cooked = bare.behind(16);
        let kept = verdict(&program, &[framed, bare, cooked]);
        assert_eq!(
            kept,
            filters_match(&filters, Some(&flow(&p))),
            "{json} {p:?}\n{program}"
        );
        kept
    }

    fn keeps_arp(json: &str) -> bool {
        let filters = filters(json);
        let kept = verdict(&program(&filters), &arp_frames());
        assert_eq!(kept, filters_match(&filters, None), "{json}");
        kept
    }

    #[test]
    fn an_empty_list_keeps_everything_in_one_instruction() {
        let program = program(&[]);
        assert_eq!(program.insns(), [Insn::stmt(BPF_RET | BPF_K, SNAP)]);
        assert!(keeps("[]", packet("10.0.0.1", "10.0.0.2", L4::Icmp)));
        assert!(keeps_arp("[]"));
        assert!(keeps_arp(r#"[{"protocol":"TCP"}, {}]"#));
    }

    #[test]
    fn the_return_value_is_the_snap_length() {
        let udp = packet("10.0.0.1", "10.0.0.2", L4::Udp(5000, 53));
        let [framed, _] = frames(&udp);
        for json in ["[]", r#"[{"protocol":"UDP"}]"#] {
            let filters = filters(json);
            assert_eq!(run(&compile(&filters, 128).unwrap(), &framed.view()), 128);
            // 0 is "the whole packet": the largest return value.
            assert_eq!(run(&compile(&filters, 0).unwrap(), &framed.view()), u32::MAX);
        }
        let tcp_only = compile(&filters(r#"[{"protocol":"TCP"}]"#), 0).unwrap();
        assert_eq!(run(&tcp_only, &framed.view()), 0);
    }

    #[test]
    fn a_protocol_filter_is_a_handful_of_instructions() {
        let udp = program(&filters(r#"[{"protocol":"UDP"}]"#));
        assert!(udp.len() <= 10, "{udp}");
        let web = program(&filters(r#"[{"protocol":"TCP","localPort":"80"}]"#));
        // Per family: protocol, fragment, both ports, and the direction (packet
        // type, loopback) tested only once a side's port matched.
        assert!(web.len() <= 40, "{web}");
    }

    #[test]
    fn local_is_the_side_this_host_is_on() {
        // This host serves port 443 and connects out to its peer's 443.
        let remote_443 = r#"[{"protocol":"TCP","remotePort":"443"}]"#;
        let local_443 = r#"[{"protocol":"TCP","localPort":"443"}]"#;
        for (me, peer) in [("10.0.0.1", "10.0.0.2"), ("2001:db8::1", "2001:db8::2")] {
            let outbound = [
                sent(packet(me, peer, L4::Tcp(40000, 443))),
                received(packet(peer, me, L4::Tcp(443, 40000))),
            ];
            let inbound = [
                received(packet(peer, me, L4::Tcp(50000, 443))),
                sent(packet(me, peer, L4::Tcp(443, 50000))),
            ];
            for p in outbound {
                assert!(keeps(remote_443, p) && !keeps(local_443, p), "{p:?}");
            }
            for p in inbound {
                assert!(keeps(local_443, p) && !keeps(remote_443, p), "{p:?}");
            }
            // Loopback (both ends this host) and overheard packets: either side.
            for p in outbound.into_iter().chain(inbound) {
                let on_lo = Packet {
                    ifindex: LOOPBACK_IFINDEX,
                    ..p
                };
                let overheard = Packet {
                    pkttype: PACKET_OTHERHOST,
                    ..p
                };
                for p in [on_lo, overheard] {
                    assert!(keeps(remote_443, p) && keeps(local_443, p), "{p:?}");
                }
            }
            // Broadcast and multicast are received: the destination is local.
            for pkttype in [PACKET_BROADCAST, PACKET_MULTICAST] {
                let p = Packet {
                    pkttype,
                    ..packet(peer, me, L4::Udp(68, 67))
                };
                assert!(keeps(r#"[{"localPort":"67"}]"#, p) && !keeps(r#"[{"remotePort":"67"}]"#, p));
            }
        }
    }

    #[test]
    fn direction_is_not_loaded_when_it_cannot_change_the_answer() {
        for json in [
            r#"[{"protocol":"UDP"}]"#,
            r#"[{"localPort":"53","remotePort":"53"}]"#,
            r#"[{"localIPAddress":"10.0.0.1","remoteIPAddress":"10.0.0.1"}]"#,
        ] {
            let program = program(&filters(json));
            let loads_type = program.insns().iter().any(|i| i.k == AD_PKTTYPE_K);
            assert!(!loads_type, "{json}\n{program}");
        }
    }

    #[test]
    fn protocol() {
        let tcp = r#"[{"protocol":"TCP"}]"#;
        let udp = r#"[{"protocol":"udp"}]"#;
        for (src, dst) in [("10.0.0.1", "10.0.0.2"), ("2001:db8::1", "2001:db8::2")] {
            assert!(keeps(tcp, packet(src, dst, L4::Tcp(1, 2))));
            assert!(!keeps(tcp, packet(src, dst, L4::Udp(1, 2))));
            assert!(!keeps(tcp, packet(src, dst, L4::Icmp)));
            assert!(keeps(udp, packet(src, dst, L4::Udp(1, 2))));
            assert!(!keeps(udp, packet(src, dst, L4::Other(47))));
            assert!(keeps(r#"[{"protocol":"Any"}]"#, packet(src, dst, L4::Icmp)));
        }
        assert!(!keeps_arp(tcp));
    }

    #[test]
    fn local_address_alone_both_directions() {
        let json = r#"[{"localIPAddress":"10.0.0.3"}]"#;
        assert!(keeps(json, packet("10.0.0.3", "8.8.8.8", L4::Udp(1, 53))));
        assert!(keeps(json, packet("8.8.8.8", "10.0.0.3", L4::Tcp(443, 1))));
        assert!(keeps(json, packet("8.8.8.8", "10.0.0.3", L4::Icmp)));
        assert!(!keeps(json, packet("10.0.0.4", "8.8.8.8", L4::Udp(1, 53))));
        assert!(!keeps(json, packet("2001:db8::3", "2001:db8::4", L4::Udp(1, 53))));
        assert!(!keeps_arp(json));
    }

    #[test]
    fn remote_address_range() {
        let json = r#"[{"remoteIPAddress":"1.1.1.1-255.255.255.255"}]"#;
        assert!(keeps(json, packet("10.0.0.1", "1.1.1.1", L4::Udp(1, 2))));
        assert!(keeps(json, packet("255.255.255.255", "10.0.0.1", L4::Udp(1, 2))));
        assert!(keeps(json, packet("1.1.1.0", "1.1.1.1", L4::Udp(1, 2))));
        assert!(!keeps(json, packet("1.1.1.0", "0.0.0.9", L4::Udp(1, 2))));
        let json = r#"[{"localIPAddress":"10.0.0.3", "remoteIPAddress":"192.168.0.250-192.168.1.5"}]"#;
        assert!(keeps(json, packet("10.0.0.3", "192.168.0.255", L4::Icmp)));
        assert!(keeps(json, packet("192.168.1.5", "10.0.0.3", L4::Icmp)));
        assert!(!keeps(json, packet("192.168.1.6", "10.0.0.3", L4::Icmp)));
        assert!(!keeps(json, packet("192.168.0.250", "10.0.0.4", L4::Icmp)));
        // Both addresses in the remote range, none local: no match.
        assert!(!keeps(json, packet("192.168.0.250", "192.168.1.1", L4::Icmp)));
    }

    #[test]
    fn address_lists_mixing_families() {
        let json = r#"[{"localIPAddress":"10.0.0.1;10.0.0.7;2001:db8::7;"}]"#;
        assert!(keeps(json, packet("10.0.0.7", "9.9.9.9", L4::Icmp)));
        assert!(keeps(json, packet("9.9.9.9", "10.0.0.1", L4::Icmp)));
        assert!(!keeps(json, packet("10.0.0.2", "9.9.9.9", L4::Icmp)));
        assert!(keeps(json, packet("2001:db8::7", "::1", L4::Icmp)));
        assert!(!keeps(json, packet("2001:db8::8", "::1", L4::Icmp)));
    }

    #[test]
    fn ports_alone_and_lists_and_ranges() {
        let json = r#"[{"localPort":"20;80;443"}]"#;
        for (src, dst) in [("10.0.0.1", "10.0.0.2"), ("2001:db8::1", "2001:db8::2")] {
            assert!(keeps(json, packet(src, dst, L4::Tcp(80, 50000))));
            assert!(keeps(json, packet(src, dst, L4::Udp(50000, 443))));
            assert!(!keeps(json, packet(src, dst, L4::Tcp(81, 50000))));
            assert!(!keeps(json, packet(src, dst, L4::Icmp)));
        }
        let json = r#"[{"remotePort":"1000-2000"}]"#;
        assert!(keeps(json, packet("10.0.0.1", "10.0.0.2", L4::Tcp(1, 1000))));
        assert!(keeps(json, packet("10.0.0.1", "10.0.0.2", L4::Tcp(2000, 1))));
        assert!(!keeps(json, packet("10.0.0.1", "10.0.0.2", L4::Tcp(999, 2001))));
        let json = r#"[{"localPort":"1-65535"}]"#;
        assert!(keeps(json, packet("10.0.0.1", "10.0.0.2", L4::Udp(0, 1))));
        assert!(!keeps(json, packet("10.0.0.1", "10.0.0.2", L4::Udp(0, 0))));
        // Every port still asks for a port.
        assert!(!keeps(
            r#"[{"localPort":"0-65535"}]"#,
            packet("10.0.0.1", "10.0.0.2", L4::Icmp)
        ));
        assert!(!keeps_arp(r#"[{"localPort":"0-65535"}]"#));
    }

    #[test]
    fn every_field_on_one_side() {
        let json = r#"[{"protocol":"TCP","localIPAddress":"10.0.0.3","localPort":"22",
                        "remoteIPAddress":"10.9.0.0-10.9.255.255","remotePort":"1024-65535"}]"#;
        assert!(keeps(json, packet("10.0.0.3", "10.9.1.1", L4::Tcp(22, 40000))));
        assert!(keeps(json, packet("10.9.1.1", "10.0.0.3", L4::Tcp(40000, 22))));
        // Local address with the remote's port.
        assert!(!keeps(json, packet("10.0.0.3", "10.9.1.1", L4::Tcp(40000, 22))));
        assert!(!keeps(json, packet("10.0.0.3", "10.9.1.1", L4::Udp(22, 40000))));
        assert!(!keeps(json, packet("10.0.0.3", "10.8.1.1", L4::Tcp(22, 40000))));
    }

    #[test]
    fn several_filters_any_matches() {
        let json = r#"[{"protocol":"UDP","remotePort":"53"},
                       {"protocol":"TCP","localIPAddress":"2001:db8::1"},
                       {"localIPAddress":"10.0.0.3"}]"#;
        assert!(keeps(json, packet("10.0.0.1", "8.8.8.8", L4::Udp(5353, 53))));
        assert!(!keeps(json, packet("10.0.0.1", "8.8.8.8", L4::Tcp(5353, 53))));
        assert!(keeps(json, packet("2001:db8::9", "2001:db8::1", L4::Tcp(1, 2))));
        assert!(!keeps(json, packet("2001:db8::9", "2001:db8::1", L4::Udp(1, 2))));
        assert!(keeps(json, packet("10.0.0.3", "10.0.0.4", L4::Other(47))));
        assert!(!keeps_arp(json));
    }

    #[test]
    fn protocol_any_with_ports_means_tcp_or_udp() {
        let json = r#"[{"protocol":"Any","remotePort":"53"}]"#;
        assert!(keeps(json, packet("10.0.0.1", "8.8.8.8", L4::Udp(1, 53))));
        assert!(keeps(json, packet("10.0.0.1", "8.8.8.8", L4::Tcp(1, 53))));
        assert!(!keeps(json, packet("10.0.0.1", "8.8.8.8", L4::Other(132))));
        assert!(!keeps(json, packet("10.0.0.1", "8.8.8.8", L4::Icmp)));
    }

    #[test]
    fn fragments_have_no_ports() {
        let first = Packet {
            frag_offset: 0,
            ..packet("10.0.0.1", "10.0.0.2", L4::Udp(1, 53))
        };
        let later = Packet {
            frag_offset: 185,
            ..first
        };
        assert!(keeps(r#"[{"remotePort":"53"}]"#, first));
        assert!(!keeps(r#"[{"remotePort":"53"}]"#, later));
        // A non-first fragment still has addresses and a protocol.
        assert!(keeps(r#"[{"protocol":"UDP","localIPAddress":"10.0.0.2"}]"#, later));
        assert!(keeps(r#"[{"remotePort":"53"},{"protocol":"UDP"}]"#, later));
    }

    #[test]
    fn ipv4_options_move_the_ports() {
        let p = Packet {
            options: true,
            ..packet("10.0.0.1", "10.0.0.2", L4::Tcp(80, 5000))
        };
        assert!(keeps(r#"[{"localPort":"80"}]"#, p));
        assert!(keeps(r#"[{"localPort":"5000","remotePort":"80"}]"#, p));
        assert!(!keeps(r#"[{"localPort":"81"}]"#, p));
    }

    #[test]
    fn non_ip_only_for_the_empty_filter() {
        assert!(keeps_arp(r#"[{}]"#));
        assert!(keeps_arp(r#"[{"protocol":"any","localIPAddress":""}]"#));
        for json in [
            r#"[{"protocol":"UDP"}]"#,
            r#"[{"localIPAddress":"10.0.0.1"}]"#,
            r#"[{"remoteIPAddress":"::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}]"#,
            r#"[{"localIPAddress":"0.0.0.0-255.255.255.255"}]"#,
        ] {
            assert!(!keeps_arp(json), "{json}");
        }
    }

    #[test]
    fn any_link_header_length() {
        // The program never looks at the link header: the same packet behind
        // Ethernet, a cooked header, an 802.1Q-tagged header or nothing.
        let filters = filters(r#"[{"protocol":"TCP","remoteIPAddress":"10.0.0.2","remotePort":"443"}]"#);
        let program = program(&filters);
        let [framed, bare] = frames(&packet("10.0.0.1", "10.0.0.2", L4::Tcp(5000, 443)));
        assert!(verdict(
            &program,
            &[framed.clone(), bare.behind(16), bare.behind(18), bare.clone()]
        ));
        let [other, _] = frames(&packet("10.0.0.1", "10.0.0.2", L4::Tcp(5000, 444)));
        assert!(!verdict(&program, &[other.behind(18)]));
    }

    #[test]
    fn ipv6_ranges_around_word_boundaries() {
        // Crosses from word 3 into word 2, and from word 2 into word 1.
        let json = r#"[{"localIPAddress":"2001:db8::ffff:fffe-2001:db8::1:0:1"}]"#;
        for (addr, inside) in [
            ("2001:db8::ffff:fffd", false),
            ("2001:db8::ffff:fffe", true),
            ("2001:db8::ffff:ffff", true),
            ("2001:db8::1:0:0", true),
            ("2001:db8::1:0:1", true),
            ("2001:db8::1:0:2", false),
            ("2001:db8::2:0:0", false),
            ("2001:db9::1", false),
        ] {
            assert_eq!(keeps(json, packet(addr, "::1", L4::Icmp)), inside, "{addr}");
        }
        let json = r#"[{"remoteIPAddress":"2001:db8:0:0:ffff:ffff:ffff:fff0-2001:db8:0:1:0:0:0:10"}]"#;
        for (addr, inside) in [
            ("2001:db8::ffff:ffff:ffff:ffef", false),
            ("2001:db8::ffff:ffff:ffff:fff0", true),
            ("2001:db8::ffff:ffff:ffff:ffff", true),
            ("2001:db8:0:1::", true),
            ("2001:db8:0:1::10", true),
            ("2001:db8:0:1::11", false),
            ("2001:db8:0:1:1::", false),
            ("2001:db8:0:0:fffe:ffff:ffff:ffff", false),
        ] {
            assert_eq!(keeps(json, packet("::1", addr, L4::Udp(1, 2))), inside, "{addr}");
        }
        // A whole-word-aligned range and the full space.
        let json = r#"[{"localIPAddress":"2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"}]"#;
        assert!(keeps(json, packet("2001:db8:1234::1", "::1", L4::Icmp)));
        assert!(!keeps(json, packet("2001:db9::", "::1", L4::Icmp)));
        let json = r#"[{"localIPAddress":"::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}]"#;
        assert!(keeps(json, packet("::", "::", L4::Icmp)));
        assert!(!keeps(json, packet("10.0.0.1", "10.0.0.2", L4::Icmp)));
    }

    #[test]
    fn ipv6_next_header_is_the_protocol() {
        // No extension-header walk: the fixed header's Next Header decides.
        // A UDP datagram relabelled as behind a Hop-by-Hop (0) or Fragment (44)
        // header is no longer UDP, though its bytes still look like UDP ports.
        for next_header in [0u8, 44] {
            let relabel = |mut f: Frame| {
                f.data[f.net_offset + 6] = next_header;
                f
            };
            let udp = frames(&packet("::1", "::2", L4::Udp(1, 2))).map(relabel);
            let flow = Flow {
                src: "::1".parse().unwrap(),
                dst: "::2".parse().unwrap(),
                protocol: next_header,
                ports: None,
                direction: Direction::Unknown,
                seen: Seen::Neither,
                icmp: None,
                tcp_flags: None,
            };
            for (json, kept) in [
                (r#"[{"protocol":"UDP"}]"#, false),
                (r#"[{"localPort":"1"}]"#, false),
                (r#"[{"localIPAddress":"::1"}]"#, true),
            ] {
                let filters = filters(json);
                assert_eq!(verdict(&program(&filters), &udp), kept, "{json}");
                assert_eq!(filters_match(&filters, Some(&flow)), kept, "{json}");
            }
        }
    }

    #[test]
    fn truncated_transport_header_only_fails_port_filters() {
        let p = packet("10.0.0.1", "10.0.0.2", L4::Tcp(80, 5000));
        let [framed, bare] = frames(&p);
        // IP header (20) + 1 byte: no source port to read.
        let cut = |f: &Frame| Frame {
            data: f.data[..f.net_offset + 21].to_vec(),
            ..f.clone()
        };
        let short = [cut(&framed), cut(&bare)];
        let ports_then_address = filters(r#"[{"localPort":"80"},{"localIPAddress":"10.0.0.1"}]"#);
        assert!(verdict(&program(&ports_then_address), &short));
        assert!(!verdict(&program(&filters(r#"[{"localPort":"80"}]"#)), &short));
    }

    #[test]
    fn a_transport_header_cut_between_the_ports_matches_no_port_filter() {
        // Found by fuzz/ (target `filter`): with one port field set, the
        // program tested the source port alone and kept a packet cut after it,
        // which the evaluator (no ports: a truncated header) drops.
        for (src, dst) in [("10.0.0.1", "10.0.0.2"), ("2001:db8::1", "2001:db8::2")] {
            let p = packet(src, dst, L4::Tcp(1000, 7));
            let [framed, bare] = frames(&p);
            let ip_header = if p.src.is_ipv4() { 20 } else { 40 };
            for kept in [2, 3] {
                let cut = |f: &Frame| Frame {
                    data: f.data[..f.net_offset + ip_header + kept].to_vec(),
                    ..f.clone()
                };
                let short = [cut(&framed), cut(&bare)];
                let no_ports = Flow {
                    ports: None,
                    ..flow(&p)
                };
                for json in [
                    format!(r#"[{{"localIPAddress":"{src}","localPort":"1000-2000"}}]"#),
                    r#"[{"remotePort":"1000"}]"#.to_owned(),
                    r#"[{"protocol":"TCP","localPort":"1000"}]"#.to_owned(),
                ] {
                    let filters = filters(&json);
                    assert!(!filters_match(&filters, Some(&no_ports)), "{json}");
                    assert!(!verdict(&program(&filters), &short), "{json} keeps {kept} bytes of TCP");
                    // Whole, the packet is kept.
                    assert!(verdict(&program(&filters), &frames(&p)), "{json}");
                }
            }
        }
    }

    #[test]
    fn icmp_and_icmpv6_with_type_and_code() {
        let icmp = |src: &str, dst: &str, kind: u8, code: u8| Packet {
            icmp: Some((kind, code)),
            ..packet(src, dst, L4::Icmp)
        };
        let echo = r#"[{"protocol":"ICMP","icmpType":"8"}]"#;
        assert!(keeps(echo, icmp("10.0.0.1", "10.0.0.2", 8, 0)));
        assert!(!keeps(echo, icmp("10.0.0.1", "10.0.0.2", 0, 0)));
        assert!(!keeps(echo, icmp("fd00::1", "fd00::2", 8, 0)), "ICMP is IPv4's");
        assert!(!keeps(echo, packet("10.0.0.1", "10.0.0.2", L4::Udp(8, 8))));
        let unreachable = r#"[{"protocol":"ICMP","icmpType":"3","icmpCode":"1"}]"#;
        assert!(keeps(unreachable, icmp("10.0.0.1", "10.0.0.2", 3, 1)));
        assert!(!keeps(unreachable, icmp("10.0.0.1", "10.0.0.2", 3, 0)));
        let code_only = r#"[{"protocol":"ICMP","icmpCode":"1"}]"#;
        assert!(keeps(code_only, icmp("10.0.0.1", "10.0.0.2", 3, 1)));
        let v6 = r#"[{"protocol":"ICMPv6","icmpType":"128"}]"#;
        assert!(keeps(v6, icmp("fd00::1", "fd00::2", 128, 0)));
        assert!(!keeps(v6, icmp("fd00::1", "fd00::2", 129, 0)));
        assert!(!keeps(v6, icmp("10.0.0.1", "10.0.0.2", 128, 0)), "ICMPv6 is IPv6's");
        assert!(keeps(
            r#"[{"protocol":"ICMPv6"}]"#,
            packet("fd00::1", "fd00::2", L4::Icmp)
        ));
        // With options, the type is past them.
        let with_options = Packet {
            options: true,
            ..icmp("10.0.0.1", "10.0.0.2", 8, 0)
        };
        assert!(keeps(echo, with_options));
        // A later fragment has no ICMP header: the protocol matches, no type does.
        let later = Packet {
            frag_offset: 100,
            ..icmp("10.0.0.1", "10.0.0.2", 8, 0)
        };
        assert!(keeps(r#"[{"protocol":"ICMP"}]"#, later) && !keeps(echo, later));
    }

    #[test]
    fn tcp_flags_set_and_clear() {
        let tcp = |flags: u8| Packet {
            tcp_flags: flags,
            ..packet("10.0.0.1", "10.0.0.2", L4::Tcp(40000, 22))
        };
        let tcp6 = |flags: u8| Packet {
            tcp_flags: flags,
            ..packet("fd00::1", "fd00::2", L4::Tcp(40000, 22))
        };
        let syn = r#"[{"tcpFlags":"SYN;!ACK"}]"#;
        for p in [tcp, tcp6] {
            assert!(keeps(syn, p(0x02)));
            assert!(keeps(syn, p(0xc2)), "ECE and CWR may be set");
            assert!(!keeps(syn, p(0x12)));
            assert!(!keeps(syn, p(0x10)));
            assert!(keeps(r#"[{"tcpFlags":"FIN;ACK"}]"#, p(0x11)));
            assert!(!keeps(r#"[{"tcpFlags":"FIN;ACK"}]"#, p(0x01)));
            assert!(keeps(r#"[{"tcpFlags":"!SYN;!FIN;!RST"}]"#, p(0x18)));
            assert!(!keeps(r#"[{"tcpFlags":"!SYN;!FIN;!RST"}]"#, p(0x04)));
        }
        assert!(!keeps(syn, packet("10.0.0.1", "10.0.0.2", L4::Udp(1, 2))));
        assert!(keeps(
            r#"[{"tcpFlags":"RST","remotePort":"22"}]"#,
            sent(Packet {
                tcp_flags: 0x14,
                ..tcp(0)
            })
        ));
        // One jset per flag that must be set, one for all that must be clear.
        let program = program(&filters(r#"[{"tcpFlags":"SYN;ACK;!FIN;!RST"}]"#));
        let jsets = program
            .insns()
            .iter()
            .filter(|i| i.code == BPF_JMP | BPF_JSET | BPF_K)
            .count();
        // Per family: 3 (SYN, ACK, the clear ones), and IPv4's fragment test.
        assert_eq!(jsets, 7, "{program}");
    }

    #[test]
    fn direction_is_the_packet_type() {
        let udp = packet("10.0.0.1", "10.0.0.2", L4::Udp(1, 2));
        let out = r#"[{"direction":"outbound"}]"#;
        let inbound = r#"[{"direction":"inbound","protocol":"UDP"}]"#;
        for ifindex in [2, LOOPBACK_IFINDEX] {
            let at = |pkttype| Packet {
                pkttype,
                ifindex,
                ..udp
            };
            assert!(keeps(out, at(PACKET_OUTGOING)) && !keeps(inbound, at(PACKET_OUTGOING)));
            for pkttype in [PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST] {
                assert!(!keeps(out, at(pkttype)) && keeps(inbound, at(pkttype)));
            }
            // Overheard and looped-back multicast (PACKET_LOOPBACK, 5): neither.
            for pkttype in [PACKET_OTHERHOST, 5] {
                assert!(!keeps(out, at(pkttype)) && !keeps(inbound, at(pkttype)));
            }
        }
        // Direction asks for an IP packet, as every other field does.
        assert!(!keeps_arp(out) && !keeps_arp(r#"[{"direction":"inbound"}]"#));
    }

    #[test]
    fn cidr_blocks_and_lists_of_them() {
        let json = r#"[{"remoteIPAddress":"10.0.0.0/8;192.168.7.0/24;172.16.0.1;fd00::/64"}]"#;
        for (addr, kept) in [
            ("10.255.255.255", true),
            ("11.0.0.0", false),
            ("192.168.7.99", true),
            ("192.168.8.0", false),
            ("172.16.0.1", true),
            ("172.16.0.2", false),
        ] {
            assert_eq!(keeps(json, packet("1.1.1.1", addr, L4::Icmp)), kept, "{addr}");
        }
        assert!(keeps(json, packet("fd00::ffff", "::1", L4::Icmp)));
        assert!(!keeps(json, packet("fd00:0:0:1::", "::1", L4::Icmp)));
        assert!(keeps(
            r#"[{"localIPAddress":"0.0.0.0/0"}]"#,
            packet("1.2.3.4", "5.6.7.8", L4::Icmp)
        ));
        assert!(!keeps(
            r#"[{"localIPAddress":"0.0.0.0/0"}]"#,
            packet("fd00::1", "fd00::2", L4::Icmp)
        ));
    }

    #[test]
    fn a_transport_header_cut_short_keeps_what_reads_less_of_it() {
        // Filters are tried by how much of the transport header they read:
        // a TCP header cut after 10 bytes has its ports but not its flags.
        let p = Packet {
            tcp_flags: 0x02,
            ..packet("10.0.0.1", "10.0.0.2", L4::Tcp(80, 5000))
        };
        let [framed, bare] = frames(&p);
        let cut = |f: &Frame, len: usize| Frame {
            data: f.data[..f.net_offset + 20 + len].to_vec(),
            ..f.clone()
        };
        let short = [cut(&framed, 10), cut(&bare, 10)];
        let flags_then_ports = filters(r#"[{"tcpFlags":"SYN"},{"localPort":"80"}]"#);
        assert!(verdict(&program(&flags_then_ports), &short));
        assert!(!verdict(&program(&filters(r#"[{"tcpFlags":"SYN"}]"#)), &short));
        // ICMP cut after its type: neither type nor code is there for the evaluator.
        let echo = Packet {
            icmp: Some((8, 0)),
            ..packet("10.0.0.1", "10.0.0.2", L4::Icmp)
        };
        let [framed, bare] = frames(&echo);
        let short = [cut(&framed, 1), cut(&bare, 1)];
        for json in [
            r#"[{"protocol":"ICMP","icmpType":"8"}]"#,
            r#"[{"protocol":"ICMP","icmpCode":"0"}]"#,
        ] {
            assert!(!verdict(&program(&filters(json)), &short), "{json}");
        }
        assert!(verdict(&program(&filters(r#"[{"protocol":"ICMP"}]"#)), &short));
    }

    /// Filters from `json` with their expressions compiled by libpcap.
    fn compiled(json: &str) -> Vec<CaptureFilter> {
        let mut filters = filters(json);
        for f in &mut filters {
            if let Some(e) = &mut f.expression {
                let program = netwatch_bpf::expression::compile(&e.text)
                    .unwrap_or_else(|err| panic!("{}: {err} (apt-get install libpcap0.8)", e.text));
                e.program = Some(program);
            }
        }
        filters
    }

    /// Whether `filters` (expressions compiled) keep `p`, checked against
    /// `filters_keep` on an Ethernet frame, a bare packet and a cooked header.
    fn keeps_compiled(filters: &[CaptureFilter], p: Packet) -> bool {
        let program = program(filters);
        let [framed, bare] = frames(&p);
        let cooked = bare.behind(16);
        let frames = [framed, bare, cooked];
        let kept = verdict(&program, &frames);
        for frame in &frames {
            assert_eq!(
                kept,
                filters_keep(filters, Some(&flow(&p)), &frame.view()),
                "{filters:?} {p:?}\n{program}"
            );
        }
        kept
    }

    fn keeps_expr(json: &str, p: Packet) -> bool {
        keeps_compiled(&compiled(json), p)
    }

    #[test]
    fn expressions_alone_and_with_fields() {
        let ssh = r#"[{"bpfExpression":"tcp port 22"}]"#;
        for (a, b) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
            assert!(keeps_expr(ssh, packet(a, b, L4::Tcp(40000, 22))));
            assert!(keeps_expr(ssh, packet(a, b, L4::Tcp(22, 40000))));
            assert!(!keeps_expr(ssh, packet(a, b, L4::Tcp(40000, 23))));
            assert!(!keeps_expr(ssh, packet(a, b, L4::Udp(40000, 22))));
        }
        // The issue's example: SYNs but not SSH's (IPv4: libpcap's tcp[] is IPv4's).
        let syn = r#"[{"bpfExpression":"tcp[tcpflags] & tcp-syn != 0 and not port 22"}]"#;
        let tcp = |flags, port| Packet {
            tcp_flags: flags,
            ..packet("10.0.0.1", "10.0.0.2", L4::Tcp(40000, port))
        };
        assert!(keeps_expr(syn, tcp(0x02, 80)) && keeps_expr(syn, tcp(0x12, 80)));
        assert!(!keeps_expr(syn, tcp(0x02, 22)) && !keeps_expr(syn, tcp(0x10, 80)));
        // AND with the object's fields: direction and an address.
        let out = r#"[{"direction":"outbound","localIPAddress":"10.0.0.1","bpfExpression":"udp"}]"#;
        let udp = packet("10.0.0.1", "10.0.0.2", L4::Udp(1, 2));
        assert!(keeps_expr(out, sent(udp)));
        assert!(!keeps_expr(out, received(udp)));
        assert!(!keeps_expr(out, sent(packet("10.0.0.1", "10.0.0.2", L4::Tcp(1, 2)))));
        assert!(!keeps_expr(out, sent(packet("10.0.0.3", "10.0.0.2", L4::Udp(1, 2)))));
        // OR across objects, in any order: Azure's filter or an expression.
        for json in [
            r#"[{"protocol":"UDP","remotePort":"53"},{"bpfExpression":"icmp"}]"#,
            r#"[{"bpfExpression":"icmp"},{"protocol":"UDP","remotePort":"53"}]"#,
        ] {
            assert!(keeps_expr(json, packet("10.0.0.1", "8.8.8.8", L4::Udp(5353, 53))));
            assert!(keeps_expr(json, packet("10.0.0.1", "8.8.8.8", L4::Icmp)));
            assert!(!keeps_expr(json, packet("10.0.0.1", "8.8.8.8", L4::Tcp(5353, 53))));
            assert!(
                !keeps_expr(json, packet("fd00::1", "fd00::2", L4::Icmp)),
                "icmp is IPv4's"
            );
        }
        // An expression sees IP packets only, whatever its text.
        assert!(!verdict(
            &program(&compiled(r#"[{"bpfExpression":"ip or not ip"}]"#)),
            &arp_frames()
        ));
        assert!(keeps_expr(
            r#"[{"bpfExpression":"ip or not ip"}]"#,
            packet("fd00::1", "fd00::2", L4::Icmp)
        ));
    }

    #[test]
    fn an_expression_reading_past_the_end_drops_the_packet() {
        // Objects without an expression are tried first, so the UDP filter
        // keeps the packet wherever it is in the list; a later expression that
        // faults drops what no earlier one kept, as tcpdump drops it.
        let udp = packet("10.0.0.1", "10.0.0.2", L4::Udp(1, 2));
        assert!(!keeps_expr(r#"[{"bpfExpression":"ip[200] = 1"}]"#, udp));
        assert!(!keeps_expr(
            r#"[{"bpfExpression":"ip[200] = 1"},{"bpfExpression":"udp"}]"#,
            udp
        ));
        assert!(keeps_expr(
            r#"[{"bpfExpression":"udp"},{"bpfExpression":"ip[200] = 1"}]"#,
            udp
        ));
        assert!(keeps_expr(
            r#"[{"bpfExpression":"ip[200] = 1"},{"protocol":"UDP"}]"#,
            udp
        ));
    }

    #[test]
    fn expressions_not_compiled_are_an_error() {
        let err = compile(&filters(r#"[{},{"bpfExpression":"udp"}]"#), SNAP).unwrap_err();
        assert_eq!(err, CompileError::NotCompiled { index: 1 });
        assert!(err.to_string().starts_with("filters[1].bpfExpression is not compiled"));
    }

    #[test]
    fn long_filters_route_far_jumps_and_still_behave() {
        // 300 scattered ports: jumps to "keep" span far more than 255 instructions.
        let ports: Vec<String> = (0..300).map(|i| (1000 + 2 * i).to_string()).collect();
        let json = format!(r#"[{{"localPort":"{}"}}]"#, ports.join(";"));
        let long = program(&filters(&json));
        assert!(long.len() > 600, "{}", long.len());
        for (port, kept) in [
            (1000, true),
            (1598, true),
            (1300, true),
            (999, false),
            (1001, false),
            (1600, false),
        ] {
            for (src, dst) in [("10.0.0.1", "10.0.0.2"), ("2001:db8::1", "2001:db8::2")] {
                assert_eq!(keeps(&json, packet(src, dst, L4::Tcp(port, 7))), kept, "{port}");
                assert_eq!(keeps(&json, packet(src, dst, L4::Udp(7, port))), kept, "{port}");
            }
        }
        // 40 filters over both families.
        let many: Vec<String> = (0..40)
            .map(|i| {
                if i % 2 == 0 {
                    format!(r#"{{"protocol":"TCP","localIPAddress":"10.0.{i}.0-10.0.{i}.255","remotePort":"{}"}}"#, 1000 + i)
                } else {
                    format!(r#"{{"protocol":"UDP","localIPAddress":"2001:db8::{i:x}:0-2001:db8::{i:x}:ffff","remotePort":"{}"}}"#, 1000 + i)
                }
            })
            .collect();
        let json = format!("[{}]", many.join(","));
        assert!(program(&filters(&json)).len() > 256);
        for i in 0..40u16 {
            let (local, remote, l4, wrong) = if i % 2 == 0 {
                (
                    format!("10.0.{i}.7"),
                    "1.1.1.1".to_owned(),
                    L4::Tcp(5, 1000 + i),
                    L4::Tcp(5, 1001 + i),
                )
            } else {
                (
                    format!("2001:db8::{i:x}:7"),
                    "::1".to_owned(),
                    L4::Udp(5, 1000 + i),
                    L4::Udp(5, 1001 + i),
                )
            };
            assert!(keeps(&json, packet(&local, &remote, l4)), "{i}");
            assert!(keeps(&json, packet(&remote, &local, reversed(l4))), "{i}");
            // The address of filter i with the port of filter i+1.
            assert!(!keeps(&json, packet(&local, &remote, wrong)), "{i}");
        }
    }

    #[test]
    fn too_long_is_an_error_that_says_how_much_to_cut() {
        let ports: Vec<String> = (0..3000).map(|i| (2 * i).to_string()).collect();
        let json = format!(r#"[{{"localPort":"{}"}}]"#, ports.join(";"));
        let err = compile(&filters(&json), SNAP).unwrap_err();
        let CompileError::TooLong { len, max } = err.clone() else {
            panic!("{err}")
        };
        assert!(len > max && max == BPF_MAXINSNS, "{len}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "the filters compile to {len} BPF instructions, more than the kernel's limit of 4096: drop about "
            )),
            "{text}"
        );
        assert!(text.contains(&format!("{}%", cut_percent(len, max))));
    }

    #[test]
    fn listing_reads_like_tcpdump() {
        let text = program(&filters(r#"[{"protocol":"UDP","localPort":"53"}]"#)).to_string();
        let first: Vec<&str> = text.lines().take(3).collect();
        assert_eq!(first[0], "(000) ldh      #proto");
        assert!(
            first[1].starts_with("(001) jeq      #0x800") && first[1].contains("jt 2\tjf "),
            "{text}"
        );
        assert_eq!(first[2], "(002) ldb      [net+9]");
        assert!(text.contains("ldxb     4*([net+0]&0xf)"), "{text}");
        assert!(text.contains("ldh      [x+net+0]"), "{text}");
        assert!(text.contains("ret      #96"), "{text}");
        assert!(text.contains("ret      #0"), "{text}");
    }

    #[test]
    fn validate_applies_the_kernels_rules() {
        let ret = Insn::stmt(BPF_RET | BPF_K, 1);
        let rows: Vec<(Vec<Insn>, Option<ValidateError>)> = vec![
            (vec![ret], None),
            (vec![], Some(ValidateError::Empty)),
            (
                vec![ret; BPF_MAXINSNS + 1],
                Some(ValidateError::TooLong { len: 4097, max: 4096 }),
            ),
            (
                vec![Insn::stmt(0xffff, 0), ret],
                Some(ValidateError::BadOpcode { pc: 0, code: 0xffff }),
            ),
            (
                vec![Insn::stmt(BPF_LD | BPF_W | BPF_ABS, 0)],
                Some(ValidateError::NoFinalReturn),
            ),
            (
                vec![Insn::jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0), ret],
                Some(ValidateError::JumpOutOfRange { pc: 0 }),
            ),
            (
                vec![Insn::stmt(BPF_JMP | BPF_JA, 1), ret],
                Some(ValidateError::JumpOutOfRange { pc: 0 }),
            ),
            (vec![Insn::stmt(BPF_JMP | BPF_JA, 0), ret], None),
            (
                vec![Insn::stmt(BPF_ALU | BPF_DIV | BPF_K, 0), ret],
                Some(ValidateError::DivisionByZero { pc: 0 }),
            ),
            (
                vec![Insn::stmt(BPF_ALU | BPF_LSH | BPF_K, 32), ret],
                Some(ValidateError::ShiftTooFar { pc: 0, k: 32 }),
            ),
            (
                vec![Insn::stmt(BPF_ST, 16), ret],
                Some(ValidateError::NoSuchSlot { pc: 0, k: 16 }),
            ),
            (
                vec![Insn::stmt(BPF_LD | BPF_MEM, 3), ret],
                Some(ValidateError::SlotNotStored { pc: 0, k: 3 }),
            ),
            (vec![Insn::stmt(BPF_ST, 3), Insn::stmt(BPF_LDX | BPF_MEM, 3), ret], None),
            // Stored on one path only.
            (
                vec![
                    Insn::jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
                    Insn::stmt(BPF_ST, 3),
                    Insn::stmt(BPF_LD | BPF_MEM, 3),
                    ret,
                ],
                Some(ValidateError::SlotNotStored { pc: 2, k: 3 }),
            ),
        ];
        for (insns, expected) in rows {
            let program = Program::from_insns(insns);
            assert_eq!(program.validate().err(), expected, "{program}");
        }
    }

    #[test]
    fn constants_match_the_kernel_headers_in_libc() {
        assert_eq!(SKF_AD_OFF, libc::SKF_AD_OFF);
        assert_eq!(SKF_AD_PROTOCOL, libc::SKF_AD_PROTOCOL.cast_unsigned());
        assert_eq!(SKF_AD_PKTTYPE, libc::SKF_AD_PKTTYPE.cast_unsigned());
        assert_eq!(SKF_AD_IFINDEX, libc::SKF_AD_IFINDEX.cast_unsigned());
        for (ours, theirs) in [
            (PACKET_HOST, libc::PACKET_HOST),
            (PACKET_BROADCAST, libc::PACKET_BROADCAST),
            (PACKET_MULTICAST, libc::PACKET_MULTICAST),
            (PACKET_OTHERHOST, libc::PACKET_OTHERHOST),
            (PACKET_OUTGOING, libc::PACKET_OUTGOING),
        ] {
            assert_eq!(i32::from(ours), i32::from(theirs));
        }
        assert_eq!(SKF_NET_OFF, libc::SKF_NET_OFF);
        assert_eq!(SKF_LL_OFF, libc::SKF_LL_OFF);
        assert_eq!(BPF_MAXINSNS, usize::try_from(libc::BPF_MAXINSNS).unwrap());
        assert_eq!(BPF_MEMWORDS, usize::try_from(libc::BPF_MEMWORDS).unwrap());
        assert_eq!(i32::from(ETH_P_IP), libc::ETH_P_IP);
        assert_eq!(i32::from(ETH_P_IPV6), libc::ETH_P_IPV6);
        let pairs: [(u16, u32); 38] = [
            (BPF_LD, libc::BPF_LD),
            (BPF_LDX, libc::BPF_LDX),
            (BPF_ST, libc::BPF_ST),
            (BPF_STX, libc::BPF_STX),
            (BPF_ALU, libc::BPF_ALU),
            (BPF_JMP, libc::BPF_JMP),
            (BPF_RET, libc::BPF_RET),
            (BPF_MISC, libc::BPF_MISC),
            (BPF_W, libc::BPF_W),
            (BPF_H, libc::BPF_H),
            (BPF_B, libc::BPF_B),
            (BPF_IMM, libc::BPF_IMM),
            (BPF_ABS, libc::BPF_ABS),
            (BPF_IND, libc::BPF_IND),
            (BPF_MEM, libc::BPF_MEM),
            (BPF_LEN, libc::BPF_LEN),
            (BPF_MSH, libc::BPF_MSH),
            (BPF_ADD, libc::BPF_ADD),
            (BPF_SUB, libc::BPF_SUB),
            (BPF_MUL, libc::BPF_MUL),
            (BPF_DIV, libc::BPF_DIV),
            (BPF_OR, libc::BPF_OR),
            (BPF_AND, libc::BPF_AND),
            (BPF_LSH, libc::BPF_LSH),
            (BPF_RSH, libc::BPF_RSH),
            (BPF_NEG, libc::BPF_NEG),
            (BPF_MOD, libc::BPF_MOD),
            (BPF_XOR, libc::BPF_XOR),
            (BPF_JA, libc::BPF_JA),
            (BPF_JEQ, libc::BPF_JEQ),
            (BPF_JGT, libc::BPF_JGT),
            (BPF_JGE, libc::BPF_JGE),
            (BPF_JSET, libc::BPF_JSET),
            (BPF_K, libc::BPF_K),
            (BPF_X, libc::BPF_X),
            (BPF_A, libc::BPF_A),
            (BPF_TAX, libc::BPF_TAX),
            (BPF_TXA, libc::BPF_TXA),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(u32::from(ours), theirs);
        }
    }

    // ---- property test: the program keeps exactly what the evaluator keeps ----

    /// Values near a few bases (word and byte boundaries, both ends of the
    /// space), so random sets and random packets meet often.
    fn near_v4() -> impl Strategy<Value = u32> {
        let bases = vec![0u32, 0x0a00_00fc, 0xc0a8_fffc, u32::MAX - 7];
        (prop::sample::select(bases), 0u32..8).prop_map(|(b, o)| b.saturating_add(o))
    }

    fn near_v6() -> impl Strategy<Value = u128> {
        let bases = vec![
            0u128,
            0x2001_0db8_0000_0000_0000_0000_ffff_fffc,
            0x2001_0db8_0000_0000_ffff_ffff_ffff_fffc,
            0x2001_0db8_ffff_ffff_ffff_ffff_ffff_fffc,
            u128::MAX - 7,
        ];
        (prop::sample::select(bases), 0u128..8).prop_map(|(b, o)| b.saturating_add(o))
    }

    fn v4_text(a: u32) -> String {
        Ipv4Addr::from(a).to_string()
    }

    fn v6_text(a: u128) -> String {
        Ipv6Addr::from(a).to_string()
    }

    fn address_field() -> impl Strategy<Value = String> {
        let single = prop_oneof![near_v4().prop_map(v4_text), near_v6().prop_map(v6_text)];
        prop_oneof![
            single.clone(),
            (near_v4(), near_v4()).prop_map(|(a, b)| format!("{}-{}", v4_text(a.min(b)), v4_text(a.max(b)))),
            (near_v6(), near_v6()).prop_map(|(a, b)| format!("{}-{}", v6_text(a.min(b)), v6_text(a.max(b)))),
            prop::collection::vec(single, 2..6).prop_map(|list| list.join(";")),
        ]
    }

    fn port() -> impl Strategy<Value = u16> {
        prop::sample::select(vec![0u16, 1, 53, 79, 80, 81, 443, 1023, 1024, 65534, 65535])
    }

    fn port_field() -> impl Strategy<Value = String> {
        prop_oneof![
            port().prop_map(|p| p.to_string()),
            (port(), port()).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            prop::collection::vec(port(), 2..6).prop_map(|l| l
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(";")),
        ]
    }

    fn wire_filter() -> impl Strategy<Value = PacketCaptureFilter> {
        let protocol = prop::sample::select(vec![
            None,
            Some("TCP"),
            Some("UDP"),
            Some("Any"),
            Some("ICMP"),
            Some("ICMPv6"),
        ]);
        let byte = || prop::option::weighted(0.2, prop::sample::select(vec!["0", "3", "8", "128", "129", "1"]));
        let flags = prop::option::weighted(
            0.2,
            prop::sample::select(vec!["SYN", "SYN;!ACK", "ACK", "!SYN;!ACK", "FIN;ACK", "RST", "ECE;CWR"]),
        );
        let way = prop::option::weighted(0.2, prop::sample::select(vec!["inbound", "outbound"]));
        let azure = (
            protocol,
            prop::option::weighted(0.4, address_field()),
            prop::option::weighted(0.4, address_field()),
            prop::option::weighted(0.3, port_field()),
            prop::option::weighted(0.3, port_field()),
        );
        (azure, byte(), byte(), flags, way).prop_map(
            |((protocol, local_ip, remote_ip, local_port, remote_port), icmp_type, icmp_code, tcp_flags, way)| {
                PacketCaptureFilter {
                    protocol: protocol.map(str::to_owned),
                    local_ip_address: local_ip,
                    remote_ip_address: remote_ip,
                    local_port,
                    remote_port,
                    icmp_type: icmp_type.map(str::to_owned),
                    icmp_code: icmp_code.map(str::to_owned),
                    tcp_flags: tcp_flags.map(str::to_owned),
                    direction: way.map(str::to_owned),
                    ..Default::default()
                }
            },
        )
    }

    /// An IP packet, or `None` for ARP.
    fn any_packet() -> impl Strategy<Value = Option<Packet>> {
        let l4 = prop_oneof![
            (port(), port()).prop_map(|(s, d)| L4::Tcp(s, d)),
            (port(), port()).prop_map(|(s, d)| L4::Udp(s, d)),
            Just(L4::Icmp),
            prop::sample::select(vec![47u8, 132]).prop_map(L4::Other),
        ];
        let addresses = prop_oneof![
            (near_v4(), near_v4()).prop_map(|(s, d)| (IpAddr::V4(s.into()), IpAddr::V4(d.into()))),
            (near_v6(), near_v6()).prop_map(|(s, d)| (IpAddr::V6(s.into()), IpAddr::V6(d.into()))),
        ];
        let fragment = prop_oneof![4 => Just(0u16), 1 => 1u16..0x1fff];
        // Every packet type the kernel has (0-7), on loopback or not.
        let kind = (0u8..8, prop::sample::select(vec![LOOPBACK_IFINDEX, 2, 3]));
        // Flags and ICMP types that the filters below name, and others.
        let flags = prop::sample::select(vec![0u8, 0x02, 0x12, 0x10, 0x11, 0x04, 0xc2, 0xff]);
        let icmp = prop::option::of((prop::sample::select(vec![0u8, 3, 8, 128, 129]), 0u8..3));
        let ip = (addresses, l4, fragment, any::<bool>(), kind, flags, icmp).prop_map(
            |((src, dst), l4, frag_offset, options, (pkttype, ifindex), tcp_flags, icmp)| {
                let v4 = src.is_ipv4();
                Some(Packet {
                    src,
                    dst,
                    l4,
                    frag_offset: if v4 { frag_offset } else { 0 },
                    options: v4 && options,
                    pkttype,
                    ifindex,
                    tcp_flags,
                    icmp,
                })
            },
        );
        prop_oneof![9 => ip, 1 => Just(None)]
    }

    /// Expressions the property test mixes in, compiled once.
    fn expressions() -> &'static [(String, Program)] {
        static COMPILED: std::sync::OnceLock<Vec<(String, Program)>> = std::sync::OnceLock::new();
        COMPILED.get_or_init(|| {
            [
                "tcp port 80",
                "udp and not port 53",
                "icmp or icmp6",
                "ip6 and ip6[6] = 6",
                "tcp[tcpflags] & (tcp-syn|tcp-ack) = tcp-syn",
                "ip[9] = 47 or src net 10.0.0.0/24",
                "dst host 2001:db8::1 or portrange 1000-2000",
                "ip[2:2] > 40",
            ]
            .into_iter()
            .map(|text| {
                let program = netwatch_bpf::expression::compile(text)
                    .unwrap_or_else(|e| panic!("{text}: {e} (apt-get install libpcap0.8)"));
                (text.to_owned(), program)
            })
            .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Filter lists with expressions: the program keeps what `filters_keep` keeps.
        #[test]
        fn expressions_splice_as_the_reference_says(
            wire in prop::collection::vec((wire_filter(), prop::option::weighted(0.5, 0usize..8)), 1..4),
            packets in prop::collection::vec(any_packet(), 8),
        ) {
            let filters: Vec<CaptureFilter> = wire
                .iter()
                .filter_map(|(w, expression)| {
                    let mut f = w.validate(0).ok()?;
                    f.expression = expression.map(|n| {
                        let (text, program) = &expressions()[n];
                        netwatch_api::filter::Expression { text: text.clone(), program: Some(program.clone()) }
                    });
                    Some(f)
                })
                .collect();
            let program = compile(&filters, SNAP).unwrap();
            for p in packets {
                let (frames, flow) = match p {
                    Some(p) => (frames(&p).to_vec(), Some(flow(&p))),
                    None => (arp_frames().to_vec(), None),
                };
                for frame in &frames {
                    let expected = filters_keep(&filters, flow.as_ref(), &frame.view());
                    let result = run(&program, &frame.view());
                    prop_assert_eq!(result, if expected { SNAP } else { 0 },
                        "{:?} on {:?} (net_offset {})\n{}", filters, flow, frame.net_offset, program);
                }
            }
        }

        #[test]
        fn the_program_keeps_what_the_evaluator_keeps(
            wire in prop::collection::vec(wire_filter(), 0..4),
            packets in prop::collection::vec(any_packet(), 8),
        ) {
            // Random local/remote pairs of different families, ICMP types
            // without ICMP and the like are rejected: skip those.
            let filters: Vec<CaptureFilter> = wire.iter().filter_map(|w| w.validate(0).ok()).collect();
            let program = compile(&filters, SNAP).unwrap();
            prop_assert!(program.validate().is_ok(), "{}", program);
            for p in packets {
                let (frames, flow) = match p {
                    Some(p) => (frames(&p).to_vec(), Some(flow(&p))),
                    None => (arp_frames().to_vec(), None),
                };
                let expected = filters_match(&filters, flow.as_ref());
                for frame in &frames {
                    let result = run(&program, &frame.view());
                    prop_assert_eq!(result, if expected { SNAP } else { 0 },
                        "{:?} on {:?} (net_offset {})\n{}", filters, flow, frame.net_offset, program);
                }
            }
        }
    }
}
