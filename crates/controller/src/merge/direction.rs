//! Which way a packet went, for `epb_flags`, worked out from its bytes and what
//! the host says is its own: pure functions, no I/O.
//!
//! - LINKTYPE_LINUX_SLL2 (276) names the direction itself: the packet type at
//!   offset 10 of its pseudo-header (<https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html>):
//!   0 host, 1 broadcast, 2 multicast, 3 other host are inbound, 4 outgoing outbound.
//! - LINKTYPE_ETHERNET (1) does not: a frame whose source MAC is the host's went
//!   out, one whose destination MAC is the host's came in. When the MACs do not
//!   tell (neither or both are the host's), the IPv4/IPv6 addresses after up to
//!   two VLAN tags are tried the same way. Both sides local (loopback) or neither
//!   stays unknown.
//! - Any other link type: unknown.

use std::net::IpAddr;

use super::pcapng::{FLAGS_INBOUND, FLAGS_OUTBOUND};

pub const LINKTYPE_ETHERNET: u16 = 1;
pub const LINKTYPE_LINUX_SLL2: u16 = 276;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
/// 802.1Q, 802.1ad and the older QinQ tag: 4 bytes before the real EtherType.
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88A8, 0x9100];
const SLL2_PACKET_TYPE_AT: usize = 10;
const SLL2_OUTGOING: u8 = 4;

/// A host's own addresses, kept as integers so a frame's are compared without
/// building values.
#[derive(Debug, Default)]
pub struct Locals {
    macs: Vec<u64>,
    v4: Vec<u32>,
    v6: Vec<u128>,
}

impl Locals {
    pub fn new(macs: &[[u8; 6]], addresses: &[IpAddr]) -> Self {
        let mut locals = Locals {
            macs: macs.iter().map(mac).collect(),
            ..Locals::default()
        };
        for address in addresses {
            match address {
                IpAddr::V4(a) => locals.v4.push(u32::from(*a)),
                IpAddr::V6(a) => locals.v6.push(u128::from(*a)),
            }
        }
        locals
    }

    fn is_empty(&self) -> bool {
        self.macs.is_empty() && self.v4.is_empty() && self.v6.is_empty()
    }
}

fn mac(bytes: &[u8; 6]) -> u64 {
    let mut word = [0u8; 8];
    word[2..].copy_from_slice(bytes);
    u64::from_be_bytes(word)
}

/// From "is the source local, is the destination local" to direction bits.
fn from_sides(source_local: bool, destination_local: bool) -> Option<u32> {
    match (source_local, destination_local) {
        (true, false) => Some(FLAGS_OUTBOUND),
        (false, true) => Some(FLAGS_INBOUND),
        _ => None,
    }
}

/// The direction bits of `epb_flags` for a packet of `link_type`.
#[inline]
pub fn direction(link_type: u16, frame: &[u8], locals: &Locals) -> u32 {
    match link_type {
        LINKTYPE_LINUX_SLL2 => match frame.get(SLL2_PACKET_TYPE_AT) {
            Some(0..=3) => FLAGS_INBOUND,
            Some(&SLL2_OUTGOING) => FLAGS_OUTBOUND,
            _ => 0,
        },
        LINKTYPE_ETHERNET if !locals.is_empty() => ethernet(frame, locals).unwrap_or(0),
        _ => 0,
    }
}

fn ethernet(frame: &[u8], locals: &Locals) -> Option<u32> {
    let destination: &[u8; 6] = frame.get(0..6)?.try_into().ok()?;
    let source: &[u8; 6] = frame.get(6..12)?.try_into().ok()?;
    let by_mac = from_sides(
        locals.macs.contains(&mac(source)),
        locals.macs.contains(&mac(destination)),
    );
    by_mac.or_else(|| by_address(frame, locals))
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn by_address(frame: &[u8], locals: &Locals) -> Option<u32> {
    let mut at = 12;
    let mut ethertype = be16(frame, at)?;
    for _ in 0..2 {
        if !ETHERTYPE_VLAN.contains(&ethertype) {
            break;
        }
        at += 4;
        ethertype = be16(frame, at)?;
    }
    let ip = frame.get(at + 2..)?;
    match ethertype {
        ETHERTYPE_IPV4 if ip.first()? >> 4 == 4 => {
            let source = u32::from_be_bytes(ip.get(12..16)?.try_into().ok()?);
            let destination = u32::from_be_bytes(ip.get(16..20)?.try_into().ok()?);
            from_sides(locals.v4.contains(&source), locals.v4.contains(&destination))
        }
        ETHERTYPE_IPV6 if ip.first()? >> 4 == 6 => {
            let source = u128::from_be_bytes(ip.get(8..24)?.try_into().ok()?);
            let destination = u128::from_be_bytes(ip.get(24..40)?.try_into().ok()?);
            from_sides(locals.v6.contains(&source), locals.v6.contains(&destination))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

    fn frame(dst: [u8; 6], src: [u8; 6], tags: usize, ip: &[u8]) -> Vec<u8> {
        let mut f = [dst, src].concat();
        for _ in 0..tags {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        }
        f.extend_from_slice(ip);
        f
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut ip = vec![0x08, 0x00, 0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip
    }

    fn ipv6(src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else {
            unreachable!()
        };
        let mut ip = vec![0x86, 0xDD, 0x60, 0, 0, 0, 0, 0, 17, 64];
        ip.extend_from_slice(&s.octets());
        ip.extend_from_slice(&d.octets());
        ip
    }

    #[test]
    fn ethernet_by_mac_then_address() {
        let me: IpAddr = "10.0.0.1".parse().unwrap();
        let me6: IpAddr = "fd00::1".parse().unwrap();
        let peer6: IpAddr = "fd00::2".parse().unwrap();
        let locals = Locals::new(&[HOST], &[me, me6]);
        let out_v4 = ipv4([10, 0, 0, 1], [10, 0, 0, 2]);
        let in_v4 = ipv4([10, 0, 0, 2], [10, 0, 0, 1]);
        let e = LINKTYPE_ETHERNET;
        assert_eq!(
            direction(e, &frame(PEER, HOST, 0, &in_v4), &locals),
            FLAGS_OUTBOUND,
            "MAC wins"
        );
        assert_eq!(
            direction(e, &frame(HOST, PEER, 0, &out_v4), &locals),
            FLAGS_INBOUND,
            "MAC wins"
        );
        assert_eq!(direction(e, &frame(PEER, PEER, 0, &out_v4), &locals), FLAGS_OUTBOUND);
        assert_eq!(
            direction(e, &frame(PEER, PEER, 2, &in_v4), &locals),
            FLAGS_INBOUND,
            "after two tags"
        );
        assert_eq!(
            direction(e, &frame(PEER, PEER, 3, &in_v4), &locals),
            0,
            "three tags: not looked into"
        );
        assert_eq!(
            direction(e, &frame(PEER, PEER, 0, &ipv6(me6, peer6)), &locals),
            FLAGS_OUTBOUND
        );
        assert_eq!(
            direction(e, &frame(PEER, PEER, 1, &ipv6(peer6, me6)), &locals),
            FLAGS_INBOUND
        );
        // Loopback: both sides local by MAC and by address.
        let lo = Locals::new(&[[0; 6], HOST], &[me]);
        assert_eq!(
            direction(e, &frame([0; 6], [0; 6], 0, &ipv4([10, 0, 0, 1], [10, 0, 0, 1])), &lo),
            0
        );
        // Neither side local, cut frames, no locals at all.
        assert_eq!(
            direction(e, &frame(PEER, PEER, 0, &ipv4([1, 1, 1, 1], [2, 2, 2, 2])), &locals),
            0
        );
        assert_eq!(direction(e, &frame(PEER, PEER, 0, &out_v4)[..30], &locals), 0);
        assert_eq!(direction(e, &HOST, &locals), 0);
        assert_eq!(direction(e, &frame(PEER, HOST, 0, &out_v4), &Locals::default()), 0);
    }

    #[test]
    fn sll2_by_packet_type() {
        let mut f = vec![0u8; 20];
        for (packet_type, want) in [
            (0, FLAGS_INBOUND),
            (1, FLAGS_INBOUND),
            (2, FLAGS_INBOUND),
            (3, FLAGS_INBOUND),
        ]
        .into_iter()
        .chain([(4, FLAGS_OUTBOUND), (5, 0), (7, 0)])
        {
            f[SLL2_PACKET_TYPE_AT] = packet_type;
            assert_eq!(
                direction(LINKTYPE_LINUX_SLL2, &f, &Locals::default()),
                want,
                "type {packet_type}"
            );
        }
        assert_eq!(direction(LINKTYPE_LINUX_SLL2, &f[..10], &Locals::default()), 0);
        assert_eq!(
            direction(113, &f, &Locals::new(&[HOST], &[])),
            0,
            "LINUX_SLL: not looked into"
        );
    }
}
