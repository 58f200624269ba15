//! A program libpcap compiled for raw IP (`DLT_RAW`: the packet starts at its
//! IP header) → the same program reading relative to the network header, so
//! that it works on every socket the capture engine opens (`SOCK_RAW` on an
//! Ethernet interface, `SOCK_DGRAM` on `any`).
//!
//! Each packet load moves by `SKF_NET_OFF` (net/core/filter.c,
//! `bpf_internal_load_pointer_neg_helper`): `ld [k]` becomes
//! `ld [SKF_NET_OFF + k]`, `ld [x + k]` becomes `ld [x + SKF_NET_OFF + k]`
//! and `ldxb 4*([k]&0xf)` becomes `ldxb 4*([SKF_NET_OFF + k]&0xf)`. Nothing
//! else changes, instruction for instruction, so every jump still lands
//! where it did. Refused: loads of the packet's length (`len`, `less`,
//! `greater`: the kernel gives the length from the link header on `SOCK_RAW`,
//! which a program cannot tell apart), ancillary and negative offsets (libpcap
//! emits none for raw IP), and offsets of 1 MiB or more, which `SKF_NET_OFF`
//! cannot express.
//!
//! One difference remains, on purpose: an indirect load whose `X + k` reaches
//! 1 MiB (an expression that computes an offset from packet bytes times a
//! large number) reads from the frame's start instead of failing. No packet is
//! that long, so the original program would have dropped the packet there;
//! the moved one reads some other byte of it. Either way the kernel checks
//! the bounds.

use crate::code::*;
use crate::{Insn, Program, SKF_NET_OFF, ValidateError};

/// The first offset `SKF_NET_OFF + k` cannot reach: `SKF_NET_OFF` is -1 MiB.
pub const MAX_OFFSET: u32 = SKF_NET_OFF.unsigned_abs();

/// A raw-IP program that cannot be moved, or is not one the kernel takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelocateError {
    #[error(
        "it reads the packet's length (len, less, greater), which netwatch's filters cannot \
         measure from the IP header: compare the IP header's own length instead, as in ip[2:2] > 1000"
    )]
    Length,
    #[error("instruction {pc} reads at offset {k}, which is not inside an IP packet")]
    Offset { pc: usize, k: u32 },
    #[error(transparent)]
    Invalid(#[from] ValidateError),
}

/// `insns`, compiled for raw IP, reading relative to the network header;
/// checked with [`Program::validate`].
pub fn relocate(insns: &[Insn]) -> Result<Program, RelocateError> {
    let moved = insns
        .iter()
        .enumerate()
        .map(|(pc, insn)| {
            let class = insn.code & 0x07;
            let mode = insn.code & 0xe0;
            let packet_load = match (class, mode) {
                (BPF_LD, BPF_ABS | BPF_IND) | (BPF_LDX, BPF_MSH) => true,
                (BPF_LD | BPF_LDX, BPF_LEN) => return Err(RelocateError::Length),
                _ => false,
            };
            if !packet_load {
                return Ok(*insn);
            }
            if insn.k >= MAX_OFFSET {
                return Err(RelocateError::Offset { pc, k: insn.k });
            }
            Ok(Insn {
                k: SKF_NET_OFF.cast_unsigned().wrapping_add(insn.k),
                ..*insn
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let program = Program::from_insns(moved);
    program.validate()?;
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PacketView, net, run};

    /// `tcpdump -r raw.pcap -ddd 'tcp port 22'` (a file of link type RAW), libpcap 1.10.3.
    fn tcp_port_22() -> Vec<Insn> {
        let text = "23,48 0 0 0,84 0 0 240,21 0 6 96,48 0 0 6,21 0 17 6,40 0 0 40,21 14 0 22,40 0 0 42,21 12 13 22,48 0 0 0,84 0 0 240,21 0 10 64,48 0 0 9,21 0 8 6,40 0 0 6,69 6 0 8191,177 0 0 0,72 0 0 0,21 2 0 22,72 0 0 2,21 0 1 22,6 0 0 262144,6 0 0 0";
        Program::from_bytecode(text).unwrap().insns().to_vec()
    }

    fn view(data: &[u8], net_offset: usize) -> PacketView<'_> {
        PacketView {
            data,
            net_offset,
            protocol: 0x0800,
            pkttype: 0,
            ifindex: 2,
        }
    }

    #[test]
    fn loads_move_by_the_network_offset_and_nothing_else() {
        let raw = tcp_port_22();
        let moved = relocate(&raw).unwrap();
        assert_eq!(moved.len(), raw.len());
        for (before, after) in raw.iter().zip(moved.insns()) {
            assert_eq!((before.code, before.jt, before.jf), (after.code, after.jt, after.jf));
        }
        assert_eq!(moved.insns()[0].k, net(0));
        assert_eq!(moved.insns()[16].code, BPF_LDX | BPF_B | BPF_MSH);
        assert_eq!(moved.insns()[16].k, net(0));
        assert_eq!(moved.insns()[17].k, net(0), "ldh [x+0]");
        // A TCP segment to port 22, bare and behind a 14-byte link header:
        // the moved program keeps both; the raw one only the bare packet.
        let mut packet = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        packet.extend_from_slice(&[0x9c, 0x40, 0, 22, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0]);
        let framed = [vec![0u8; 14], packet.clone()].concat();
        assert_eq!(run(&moved, &view(&packet, 0)), 262_144);
        assert_eq!(run(&moved, &view(&framed, 14)), 262_144);
        assert_eq!(run(&Program::from_insns(raw), &view(&packet, 0)), 262_144);
        packet[23] = 23;
        assert_eq!(run(&moved, &view(&packet, 0)), 0);
    }

    #[test]
    fn what_cannot_move_is_refused() {
        let ret = Insn::stmt(BPF_RET | BPF_K, 1);
        let len = [Insn::stmt(BPF_LD | BPF_W | BPF_LEN, 0), ret];
        assert_eq!(relocate(&len), Err(RelocateError::Length));
        let far = [Insn::stmt(BPF_LD | BPF_B | BPF_ABS, MAX_OFFSET), ret];
        assert_eq!(relocate(&far), Err(RelocateError::Offset { pc: 0, k: MAX_OFFSET }));
        let ancillary = [Insn::stmt(BPF_LD | BPF_W | BPF_ABS, crate::AD_PKTTYPE_K), ret];
        assert!(matches!(relocate(&ancillary), Err(RelocateError::Offset { pc: 0, .. })));
        let no_ret = [Insn::stmt(BPF_LD | BPF_B | BPF_ABS, 0)];
        assert_eq!(
            relocate(&no_ret),
            Err(RelocateError::Invalid(ValidateError::NoFinalReturn))
        );
    }
}
