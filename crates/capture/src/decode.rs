//! What Azure's filters look at in a stored record: its addresses, protocol,
//! ports and direction, read from the bytes as the file holds them
//! (Ethernet with up to two VLAN tags, or Linux cooked v2), for filtering
//! records already captured (a capture around an alert takes the flight
//! recorder's records that pass its own filters).
//!
//! It reads what the kernel's filter reads (`bpf`): the IPv4 header and its
//! fragment offset, the IPv6 fixed header's Next Header, the first four bytes
//! after the IP header for TCP and UDP, the type and code of ICMP and ICMPv6,
//! TCP's flags byte. An Ethernet record does not say which end is this host,
//! so its direction is [`Direction::Unknown`] and whether it was sent or
//! received [`Seen::Unknown`] (either orientation of the packet may match,
//! either `direction`: a superset of what the kernel keeps).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netwatch_api::filter::{Direction, Flow, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Seen};

use crate::pcap::{LinkType, SLL2_HEADER_LEN};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;

fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

/// The flow of a record's packet; `None` for a packet that is not IP (or
/// too short to say).
pub fn flow(link: LinkType, data: &[u8]) -> Option<Flow> {
    let (ethertype, network, direction, seen) = match link {
        LinkType::Ethernet => {
            let mut at = 12;
            let mut ethertype = be16(data, at)?;
            for _ in 0..2 {
                if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
                    at += 4;
                    ethertype = be16(data, at)?;
                }
            }
            (ethertype, at + 2, Direction::Unknown, Seen::Unknown)
        }
        LinkType::LinuxSll2 => {
            let pkttype = *data.get(10)?;
            let direction = match pkttype {
                // PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST
                0..=2 => Direction::Incoming,
                // PACKET_OUTGOING
                4 => Direction::Outgoing,
                _ => Direction::Unknown,
            };
            (be16(data, 0)?, SLL2_HEADER_LEN, direction, Seen::from_pkttype(pkttype))
        }
    };
    let ip = data.get(network..)?;
    let (src, dst, protocol, transport) = match ethertype {
        ETHERTYPE_IPV4 => {
            let header_len = usize::from(ip.first()? & 0x0f) * 4;
            if ip.first()? >> 4 != 4 || header_len < 20 {
                return None;
            }
            let src = Ipv4Addr::from(<[u8; 4]>::try_from(ip.get(12..16)?).ok()?);
            let dst = Ipv4Addr::from(<[u8; 4]>::try_from(ip.get(16..20)?).ok()?);
            // A fragment after the first holds no transport header.
            let first_fragment = be16(ip, 6)? & 0x1fff == 0;
            let transport = first_fragment.then(|| ip.get(header_len..)).flatten();
            (IpAddr::V4(src), IpAddr::V4(dst), ip[9], transport)
        }
        ETHERTYPE_IPV6 => {
            if ip.first()? >> 4 != 6 {
                return None;
            }
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(ip.get(8..24)?).ok()?);
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(ip.get(24..40)?).ok()?);
            (IpAddr::V6(src), IpAddr::V6(dst), *ip.get(6)?, ip.get(40..))
        }
        _ => return None,
    };
    let ports = match protocol {
        IPPROTO_TCP | IPPROTO_UDP => transport.and_then(|t| Some((be16(t, 0)?, be16(t, 2)?))),
        _ => None,
    };
    // ICMP is IPv4's protocol 1, ICMPv6 IPv6's Next Header 58: type and code first.
    let icmp = match (protocol, src.is_ipv4()) {
        (IPPROTO_ICMP, true) | (IPPROTO_ICMPV6, false) => transport.and_then(|t| Some((*t.first()?, *t.get(1)?))),
        _ => None,
    };
    let tcp_flags = match protocol {
        IPPROTO_TCP => transport.and_then(|t| t.get(13).copied()),
        _ => None,
    };
    Some(Flow {
        src,
        dst,
        protocol,
        ports,
        direction,
        seen,
        icmp,
        tcp_flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_udp(vlan: bool, fragment_offset: u16) -> Vec<u8> {
        let mut frame = vec![0u8; 12];
        if vlan {
            frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        }
        frame.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 28, 0, 0];
        ip.extend_from_slice(&fragment_offset.to_be_bytes());
        ip.extend_from_slice(&[64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&[0x13, 0x88, 0x00, 0x35, 0, 8, 0, 0]);
        frame
    }

    #[test]
    fn ethernet_ipv4_with_and_without_a_vlan_tag() {
        for vlan in [false, true] {
            let flow = flow(LinkType::Ethernet, &ipv4_udp(vlan, 0)).unwrap();
            assert_eq!(flow.src, "10.0.0.1".parse::<IpAddr>().unwrap());
            assert_eq!(flow.dst, "10.0.0.2".parse::<IpAddr>().unwrap());
            assert_eq!((flow.protocol, flow.ports), (17, Some((5000, 53))));
            assert_eq!(
                (flow.direction, flow.seen, flow.tcp_flags, flow.icmp),
                (Direction::Unknown, Seen::Unknown, None, None)
            );
        }
        let later_fragment = flow(LinkType::Ethernet, &ipv4_udp(false, 185)).unwrap();
        assert_eq!(later_fragment.ports, None);
    }

    #[test]
    fn cooked_v2_says_the_direction_and_ipv6_its_next_header() {
        let mut record = vec![0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 4, 6, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut ip = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        ip.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        ip.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        record.extend_from_slice(&ip);
        record.extend_from_slice(&[0x00, 0x50, 0xc3, 0x50]);
        let cut = flow(LinkType::LinuxSll2, &record).unwrap();
        assert_eq!(
            (cut.ports, cut.tcp_flags),
            (Some((80, 50000)), None),
            "cut before the flags"
        );
        record.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x12]);
        let flow = flow(LinkType::LinuxSll2, &record).unwrap();
        assert_eq!(
            (flow.protocol, flow.ports, flow.tcp_flags),
            (6, Some((80, 50000)), Some(0x12))
        );
        assert_eq!((flow.direction, flow.seen), (Direction::Outgoing, Seen::Sent));
        assert_eq!(flow.dst, "fd00::2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn icmp_type_and_code_of_their_own_family_only() {
        let mut echo = ipv4_udp(false, 0);
        echo[14 + 9] = 1;
        echo[34] = 8;
        echo[35] = 0;
        assert_eq!(flow(LinkType::Ethernet, &echo).unwrap().icmp, Some((8, 0)));
        echo[14 + 9] = 58;
        assert_eq!(
            flow(LinkType::Ethernet, &echo).unwrap().icmp,
            None,
            "58 is not ICMP in IPv4"
        );
        echo[14 + 9] = 1;
        echo[14 + 7] = 185; // a later fragment: no ICMP header
        assert_eq!(flow(LinkType::Ethernet, &echo).unwrap().icmp, None);
    }

    #[test]
    fn what_is_not_ip_or_is_cut_short_has_no_flow() {
        let arp = [vec![0u8; 12], vec![0x08, 0x06], vec![0u8; 28]].concat();
        assert_eq!(flow(LinkType::Ethernet, &arp), None);
        let cut = &ipv4_udp(false, 0)[..20];
        assert_eq!(flow(LinkType::Ethernet, cut), None);
        let no_ports = &ipv4_udp(false, 0)[..34];
        assert_eq!(flow(LinkType::Ethernet, no_ports).unwrap().ports, None);
        assert_eq!(flow(LinkType::LinuxSll2, &[0u8; 5]), None);
    }
}
