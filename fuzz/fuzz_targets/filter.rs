//! Fuzz target `filter`: capture filters as `--filters` and the ARM body carry
//! them (JSON), validated (`netwatch_api::filter`), compiled to classic BPF
//! (`netwatch_capture::bpf::compile`) and checked as the kernel checks a
//! program on attach (`Program::validate`). Each program then runs in the
//! interpreter (`bpf::run`) over packets built from the rest of the input and
//! must keep exactly what the reference evaluator (`filters_keep`) keeps — the
//! property tests at the bottom of crates/capture/src/bpf.rs, on inputs they do
//! not generate.
//!
//! netwatch's fields (ICMP type and code, CIDR, TCP flags, direction) come
//! from the JSON like Azure's. A `bpfExpression` is compiled by libpcap, as
//! the controller and the CLI compile a user's text (libpcap0.8 must be
//! installed; an expression it refuses ends the input), so libpcap's compiler
//! is fuzzed too. Where a list has an expression, packets cut short inside
//! their transport header are only run, not compared: there the kernel ends
//! the one program at the first read past the end, which `filters_keep`
//! models for expressions but not for the fields tried before them (its
//! documented limit).
//!
//! Input: the filters' JSON, then optionally a NUL byte and bytes that pick
//! the snap length and up to 8 packets: family (IPv4, IPv6, or another
//! EtherType over IPv4-looking bytes), addresses and ports (mostly the ends of
//! the filters' own ranges and their neighbours, so that matches are common),
//! protocol number, IPv4 header length and fragment offset, TCP flags (ICMP's
//! type and code are the ports' first bytes), a transport header cut short,
//! the link header's length, and the packet type and interface
//! (which decide which end is *local*: sent, received, overheard, loopback).
//!
//! Also checked: a filter's echo (`to_wire`) validates back to itself.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use netwatch_api::filter::{
    CaptureFilter, Flow, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Seen, filters_keep,
    parse_wire_filters_json, validate_filters,
};
use netwatch_capture::bpf::LOOPBACK_IFINDEX;
use netwatch_capture::bpf::{self, CompileError, ETH_P_IP, ETH_P_IPV6, PacketView};

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(wire) = parse_wire_filters_json(text) else {
        return;
    };
    let Ok(mut filters) = validate_filters(&wire) else {
        return;
    };
    for (index, filter) in filters.iter().enumerate() {
        assert_eq!(
            filter.to_wire().validate(index).as_ref(),
            Ok(filter),
            "echo of {filter}"
        );
    }
    for filter in &mut filters {
        if let Some(expression) = &mut filter.expression {
            let Ok(program) = netwatch_bpf::expression::compile(&expression.text) else {
                return;
            };
            if let Err(err) = program.validate() {
                panic!("libpcap's program for {:?} refused: {err}\n{program}", expression.text);
            }
            expression.program = Some(program);
        }
    }
    let expressions = filters.iter().any(|f| f.expression.is_some());
    let mut u = Unstructured::new(rest);
    let snaplen: u32 = u.arbitrary().unwrap_or(0);
    let program = match bpf::compile(&filters, snaplen) {
        Ok(program) => program,
        // Too many values for the kernel's 4096 instructions: refused with a message.
        Err(CompileError::TooLong { .. }) => return,
        Err(err) => panic!("{err}\n{filters:?}"),
    };
    if let Err(err) = program.validate() {
        panic!("compiled program refused: {err}\n{filters:?}\n{program}");
    }
    let accept = if snaplen == 0 { u32::MAX } else { snaplen };
    let candidates = Candidates::of(&filters);
    for _ in 0..8 {
        let Ok(packet) = Packet::pick(&mut u, &candidates) else {
            break;
        };
        let (bytes, flow) = packet.build();
        let view = PacketView {
            data: &bytes,
            net_offset: packet.link,
            protocol: packet.ethertype(),
            pkttype: packet.pkttype,
            ifindex: packet.ifindex,
        };
        let expected = if filters_keep(&filters, flow.as_ref(), &view) {
            accept
        } else {
            0
        };
        let got = bpf::run(&program, &view);
        if expressions && packet.cut.is_some() {
            continue;
        }
        assert_eq!(
            got, expected,
            "program and evaluator disagree\nfilters {filters:?}\npacket {packet:?}\nflow {flow:?}\n{program}"
        );
        if u.is_empty() {
            break;
        }
    }
});

/// Values the filters name, and their neighbours: where a verdict changes.
struct Candidates {
    v4: Vec<u32>,
    v6: Vec<u128>,
    /// Ports, and ICMP's type and code as the first two bytes of a "port".
    ports: Vec<u16>,
    /// TCP flags bytes: the filters' set bits, with and without their clear ones.
    flags: Vec<u8>,
}

impl Candidates {
    fn of(filters: &[CaptureFilter]) -> Self {
        let mut c = Candidates {
            v4: vec![0x0a00_0001],
            v6: vec![1],
            ports: vec![80, 0x0800],
            flags: vec![0x02, 0x12],
        };
        for f in filters {
            for set in [&f.local_ip, &f.remote_ip].into_iter().flatten() {
                for (lo, hi) in set.v4() {
                    c.v4.extend([lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)]);
                }
                for (lo, hi) in set.v6() {
                    c.v6.extend([lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)]);
                }
            }
            for set in [&f.local_port, &f.remote_port].into_iter().flatten() {
                for r in set.ranges() {
                    c.ports.extend([r.lo, r.hi, r.lo.wrapping_sub(1), r.hi.wrapping_add(1)]);
                }
            }
            let kind = f.icmp_type.unwrap_or(8);
            let code = f.icmp_code.unwrap_or(0);
            c.ports.extend([
                u16::from_be_bytes([kind, code]),
                u16::from_be_bytes([kind, code.wrapping_add(1)]),
            ]);
            if let Some(flags) = f.tcp_flags {
                c.flags.extend([flags.set, flags.set | flags.clear, !flags.clear]);
            }
        }
        c
    }
}

/// A value from `list` (most of the time) or any value.
fn near<T: Copy + for<'a> libfuzzer_sys::arbitrary::Arbitrary<'a>>(u: &mut Unstructured<'_>, list: &[T]) -> Result<T> {
    if u.ratio(1, 8)? {
        u.arbitrary()
    } else {
        u.choose(list).copied()
    }
}

#[derive(Debug, Clone, Copy)]
enum Net {
    V4 {
        src: u32,
        dst: u32,
        /// Header length in words, 5 to 15 (the rest NOP options).
        ihl: u8,
        /// Fragment offset (13 bits) and the more-fragments flag.
        frag: u16,
        more: bool,
    },
    V6 {
        src: u128,
        dst: u128,
    },
    /// Another EtherType (ARP, VLAN, …) over bytes that look like IPv4.
    Other {
        ethertype: u16,
        src: u32,
        dst: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Packet {
    net: Net,
    /// IPv4 protocol or IPv6 Next Header.
    protocol: u8,
    sport: u16,
    dport: u16,
    /// TCP's flags byte (byte 13 of the transport header).
    flags: u8,
    /// Bytes of the transport header kept, if it is cut short (0 to 15).
    cut: Option<usize>,
    /// Bytes before the network header (14 Ethernet, 0 bare, 16 cooked, …).
    link: usize,
    /// `skb->pkt_type` (0-7) and the interface's index (loopback or not).
    pkttype: u8,
    ifindex: u32,
}

impl Packet {
    fn pick(u: &mut Unstructured<'_>, c: &Candidates) -> Result<Self> {
        let net = match u.int_in_range(0u8..=8)? {
            0..=3 => Net::V4 {
                src: near(u, &c.v4)?,
                dst: near(u, &c.v4)?,
                ihl: if u.ratio(1, 4)? { u.int_in_range(5..=15)? } else { 5 },
                frag: if u.ratio(1, 4)? { u.int_in_range(0..=0x1fff)? } else { 0 },
                more: u.arbitrary()?,
            },
            4..=7 => Net::V6 {
                src: near(u, &c.v6)?,
                dst: near(u, &c.v6)?,
            },
            _ => Net::Other {
                ethertype: match u.arbitrary()? {
                    ETH_P_IP | ETH_P_IPV6 => 0x0806,
                    other => other,
                },
                src: near(u, &c.v4)?,
                dst: near(u, &c.v4)?,
            },
        };
        let icmp = if matches!(net, Net::V6 { .. }) { 58 } else { 1 };
        let protocol = match u.int_in_range(0u8..=6)? {
            0..=1 => IPPROTO_TCP,
            2..=3 => IPPROTO_UDP,
            4 => icmp,
            _ => u.arbitrary()?,
        };
        Ok(Packet {
            net,
            protocol,
            sport: near(u, &c.ports)?,
            dport: near(u, &c.ports)?,
            flags: near(u, &c.flags)?,
            cut: if u.ratio(1, 8)? {
                Some(u.int_in_range(0..=15)?)
            } else {
                None
            },
            link: *u.choose(&[14, 0, 16, 14, 4, 18])?,
            pkttype: u.int_in_range(0..=7)?,
            ifindex: *u.choose(&[2, LOOPBACK_IFINDEX, 3])?,
        })
    }

    fn ethertype(&self) -> u16 {
        match self.net {
            Net::V4 { .. } => ETH_P_IP,
            Net::V6 { .. } => ETH_P_IPV6,
            Net::Other { ethertype, .. } => ethertype,
        }
    }

    /// The bytes a socket sees, and what the evaluator is told about them.
    fn build(&self) -> (Vec<u8>, Option<Flow>) {
        let mut transport = Vec::new();
        transport.extend_from_slice(&self.sport.to_be_bytes());
        transport.extend_from_slice(&self.dport.to_be_bytes());
        transport.extend_from_slice(&[0x50; 16]);
        transport[13] = self.flags;
        if let Some(cut) = self.cut {
            transport.truncate(cut);
        }
        let payload_len = u16::try_from(transport.len()).unwrap_or(u16::MAX);
        let mut bytes = vec![0x55; self.link];
        let v4 = |bytes: &mut Vec<u8>, src: u32, dst: u32, ihl: u8, frag: u16, more: bool| {
            let header_len = usize::from(ihl) * 4;
            let total = u16::try_from(header_len).unwrap_or(u16::MAX) + payload_len;
            let flags = frag | if more { 0x2000 } else { 0 };
            bytes.push(0x40 | ihl);
            bytes.push(0);
            bytes.extend_from_slice(&total.to_be_bytes());
            bytes.extend_from_slice(&[0, 1]);
            bytes.extend_from_slice(&flags.to_be_bytes());
            bytes.extend_from_slice(&[64, self.protocol, 0, 0]);
            bytes.extend_from_slice(&src.to_be_bytes());
            bytes.extend_from_slice(&dst.to_be_bytes());
            bytes.resize(bytes.len() + header_len - 20, 1); // NOP options
        };
        let (src, dst, first_fragment) = match self.net {
            Net::V4 {
                src,
                dst,
                ihl,
                frag,
                more,
            } => {
                v4(&mut bytes, src, dst, ihl, frag, more);
                (
                    IpAddr::from(src.to_be_bytes()),
                    IpAddr::from(dst.to_be_bytes()),
                    frag == 0,
                )
            }
            Net::V6 { src, dst } => {
                bytes.extend_from_slice(&[0x60, 0, 0, 0]);
                bytes.extend_from_slice(&payload_len.to_be_bytes());
                bytes.extend_from_slice(&[self.protocol, 64]);
                bytes.extend_from_slice(&src.to_be_bytes());
                bytes.extend_from_slice(&dst.to_be_bytes());
                (IpAddr::from(src.to_be_bytes()), IpAddr::from(dst.to_be_bytes()), true)
            }
            Net::Other { src, dst, .. } => {
                v4(&mut bytes, src, dst, 5, 0, false);
                bytes.extend_from_slice(&transport);
                return (bytes, None);
            }
        };
        bytes.extend_from_slice(&transport);
        // What a first fragment's transport header holds, as far as it goes.
        let held = if first_fragment { transport.len() } else { 0 };
        let has_ports = matches!(self.protocol, IPPROTO_TCP | IPPROTO_UDP) && held >= 4;
        let icmp = match (self.protocol, src.is_ipv4()) {
            (IPPROTO_ICMP, true) | (IPPROTO_ICMPV6, false) => held >= 2,
            _ => false,
        };
        let flow = Flow {
            src,
            dst,
            protocol: self.protocol,
            ports: has_ports.then_some((self.sport, self.dport)),
            direction: bpf::direction(self.pkttype, self.ifindex),
            seen: Seen::from_pkttype(self.pkttype),
            icmp: icmp.then(|| (transport[0], transport[1])),
            tcp_flags: (self.protocol == IPPROTO_TCP && held >= 14).then_some(self.flags),
        };
        (bytes, Some(flow))
    }
}
