//! [`run`]: a classic BPF program over one packet, as the kernel runs a socket filter.
//!
//! The semantics are the kernel's (net/core/filter.c, which converts classic
//! programs to eBPF, and its `bpf_skb_load_helper_*` /
//! `bpf_internal_load_pointer_neg_helper`): A, X and `M[0..16]` start at 0;
//! a load outside the packet ends the program with 0; so does a division by
//! X = 0; shifts by X use its low 5 bits. Offsets `SKF_NET_OFF + k` read from
//! the network header, the ancillary `SKF_AD_OFF + SKF_AD_PROTOCOL` gives the
//! EtherType, `SKF_AD_PKTTYPE` the packet type and `SKF_AD_IFINDEX` the
//! interface. Other ancillary data (`SKF_AD_MARK`, …) and link-layer
//! offsets (`SKF_LL_OFF`) are not modelled and end the program with 0; the
//! compiler never emits them. Malformed programs are not rejected here
//! ([`Program::validate`] does that) but never panic: an unknown opcode or a
//! jump past the end returns 0.

use crate::code::*;
use crate::{
    BPF_MEMWORDS, Insn, Program, SKF_AD_IFINDEX, SKF_AD_OFF, SKF_AD_PKTTYPE, SKF_AD_PROTOCOL, SKF_NET_OFF, slot,
};

/// A packet as a socket filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct PacketView<'a> {
    /// The bytes from the start of what the socket delivers: the link header
    /// for `SOCK_RAW`, the network header for `SOCK_DGRAM`. Its length is `len`.
    pub data: &'a [u8],
    /// Where the network header starts in `data` (`skb_network_offset`):
    /// 14 behind Ethernet, 0 for `SOCK_DGRAM`.
    pub net_offset: usize,
    /// `ntohs(skb->protocol)`: the EtherType, e.g. 0x0800 for IPv4.
    pub protocol: u16,
    /// `skb->pkt_type`: `PACKET_HOST`, `PACKET_OUTGOING`, …
    pub pkttype: u8,
    /// `skb->dev->ifindex`: the interface the packet is on.
    pub ifindex: u32,
}

/// Run a program over a packet exactly as the kernel would; returns the
/// filter's return value (0: drop; otherwise keep that many bytes).
pub fn run(program: &Program, packet: &PacketView<'_>) -> u32 {
    execute(program, packet).unwrap_or(0)
}

/// A program ended without a `ret`: a load past the end of the packet (or
/// of what the interpreter models), a division by X = 0, a malformed
/// instruction. The kernel then drops the packet, as with `ret #0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault;

/// [`run`], telling a `ret` apart from a [`Fault`]: what a list of filters
/// that splices several programs together needs to model (a fault in one
/// ends them all).
pub fn execute(program: &Program, packet: &PacketView<'_>) -> Result<u32, Fault> {
    let mut machine = Machine::default();
    let insns = program.insns();
    let mut pc = 0;
    while let Some(insn) = insns.get(pc) {
        pc += 1;
        match machine.step(insn, packet) {
            Some(Next::Skip(n)) => pc = pc.checked_add(n).ok_or(Fault)?,
            Some(Next::Return(value)) => return Ok(value),
            // A load out of bounds, a division by zero, an unknown opcode.
            None => return Err(Fault),
        }
    }
    // Ran off the end: the checker forbids such programs.
    Err(Fault)
}

/// Where control goes after an instruction.
enum Next {
    /// Skip this many instructions (0: the next one).
    Skip(usize),
    Return(u32),
}

#[derive(Debug, Default)]
struct Machine {
    a: u32,
    x: u32,
    mem: [u32; BPF_MEMWORDS],
}

impl Machine {
    /// Executes one instruction; `None` ends the program with 0.
    fn step(&mut self, insn: &Insn, packet: &PacketView<'_>) -> Option<Next> {
        let (code, k) = (insn.code, insn.k);
        let len = u32::try_from(packet.data.len()).unwrap_or(u32::MAX);
        let source = if code & BPF_X != 0 { self.x } else { k };
        match code & 0x07 {
            BPF_LD => {
                // Bits 0x18 are the size only in loads (elsewhere they are op and source bits).
                let size = match code & 0x18 {
                    BPF_W => 4,
                    BPF_H => 2,
                    BPF_B => 1,
                    _ => return None,
                };
                self.a = match code & 0xe0 {
                    BPF_ABS => load_abs(packet, k, size)?,
                    BPF_IND => load(packet, self.x.wrapping_add(k).cast_signed(), size)?,
                    BPF_IMM => k,
                    BPF_MEM => self.mem[slot(k)?],
                    BPF_LEN => len,
                    _ => return None,
                };
            }
            BPF_LDX => {
                self.x = match code & 0xe0 {
                    // The kernel loads the byte as an absolute load, so
                    // negative offsets (SKF_NET_OFF) work here too.
                    BPF_MSH => (load(packet, k.cast_signed(), 1)? & 0xf) << 2,
                    BPF_IMM => k,
                    BPF_MEM => self.mem[slot(k)?],
                    BPF_LEN => len,
                    _ => return None,
                };
            }
            BPF_ST => self.mem[slot(k)?] = self.a,
            BPF_STX => self.mem[slot(k)?] = self.x,
            BPF_ALU => {
                let a = self.a;
                self.a = match code & 0xf0 {
                    BPF_ADD => a.wrapping_add(source),
                    BPF_SUB => a.wrapping_sub(source),
                    BPF_MUL => a.wrapping_mul(source),
                    BPF_DIV => a.checked_div(source)?,
                    BPF_MOD => a.checked_rem(source)?,
                    BPF_AND => a & source,
                    BPF_OR => a | source,
                    BPF_XOR => a ^ source,
                    BPF_LSH => a.wrapping_shl(source),
                    BPF_RSH => a.wrapping_shr(source),
                    BPF_NEG => a.wrapping_neg(),
                    _ => return None,
                };
            }
            BPF_JMP => {
                let a = self.a;
                let taken = match code & 0xf0 {
                    BPF_JA => return Some(Next::Skip(usize::try_from(k).ok()?)),
                    BPF_JEQ => a == source,
                    BPF_JGT => a > source,
                    BPF_JGE => a >= source,
                    BPF_JSET => a & source != 0,
                    _ => return None,
                };
                let skip = if taken { insn.jt } else { insn.jf };
                return Some(Next::Skip(usize::from(skip)));
            }
            BPF_RET => {
                return match code & 0x18 {
                    BPF_K => Some(Next::Return(k)),
                    BPF_A => Some(Next::Return(self.a)),
                    _ => None,
                };
            }
            _ => match code & 0xf8 {
                BPF_TAX => self.x = self.a,
                BPF_TXA => self.a = self.x,
                _ => return None,
            },
        }
        Some(Next::Skip(0))
    }
}

/// `ld [k]`: ancillary data when `k` is in the `SKF_AD_OFF` area, else packet bytes.
fn load_abs(packet: &PacketView<'_>, k: u32, size: usize) -> Option<u32> {
    let offset = k.cast_signed();
    if (SKF_AD_OFF..0).contains(&offset) {
        // Any load size: the kernel matches ancillary offsets for B, H and W.
        return match (offset - SKF_AD_OFF).cast_unsigned() {
            SKF_AD_PROTOCOL => Some(u32::from(packet.protocol)),
            SKF_AD_PKTTYPE => Some(u32::from(packet.pkttype)),
            SKF_AD_IFINDEX => Some(packet.ifindex),
            _ => None,
        };
    }
    load(packet, offset, size)
}

/// `size` big-endian bytes at `offset`: from the start of the data when it is
/// non-negative, from the network header when it is `SKF_NET_OFF + n`.
fn load(packet: &PacketView<'_>, offset: i32, size: usize) -> Option<u32> {
    let start = if offset >= 0 {
        usize::try_from(offset).ok()?
    } else if offset >= SKF_NET_OFF {
        packet
            .net_offset
            .checked_add(usize::try_from(offset - SKF_NET_OFF).ok()?)?
    } else {
        return None;
    };
    let bytes = packet.data.get(start..start.checked_add(size)?)?;
    Some(bytes.iter().fold(0, |value, &b| (value << 8) | u32::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AD_IFINDEX_K, AD_PKTTYPE_K, AD_PROTOCOL_K, net};

    fn ret_a(mut insns: Vec<Insn>) -> Program {
        insns.push(Insn::stmt(BPF_RET | BPF_A, 0));
        Program::from_insns(insns)
    }

    const DATA: [u8; 8] = [0xaa, 0xbb, 0x45, 0x01, 0x02, 0x03, 0x04, 0x05];

    /// 2 bytes of link header, then a network header starting 0x45.
    fn view() -> PacketView<'static> {
        PacketView {
            data: &DATA,
            net_offset: 2,
            protocol: 0x86dd,
            pkttype: 4,
            ifindex: 7,
        }
    }

    fn eval(insns: Vec<Insn>) -> u32 {
        run(&ret_a(insns), &view())
    }

    #[test]
    fn loads() {
        let ld = |code: u16, k: u32| eval(vec![Insn::stmt(code, k)]);
        assert_eq!(ld(BPF_LD | BPF_W | BPF_ABS, 0), 0xaabb_4501);
        assert_eq!(ld(BPF_LD | BPF_H | BPF_ABS, 1), 0xbb45);
        assert_eq!(ld(BPF_LD | BPF_B | BPF_ABS, 7), 0x05);
        assert_eq!(ld(BPF_LD | BPF_B | BPF_ABS, net(0)), 0x45);
        assert_eq!(ld(BPF_LD | BPF_W | BPF_ABS, net(2)), 0x0203_0405);
        assert_eq!(ld(BPF_LD | BPF_H | BPF_ABS, AD_PROTOCOL_K), 0x86dd);
        assert_eq!(ld(BPF_LD | BPF_B | BPF_ABS, AD_PROTOCOL_K), 0x86dd);
        assert_eq!(ld(BPF_LD | BPF_W | BPF_ABS, AD_PKTTYPE_K), 4);
        assert_eq!(ld(BPF_LD | BPF_W | BPF_ABS, AD_IFINDEX_K), 7);
        assert_eq!(ld(BPF_LD | BPF_W | BPF_LEN, 0), 8);
        assert_eq!(ld(BPF_LD | BPF_IMM, 42), 42);
        // ldxb 4*([net]&0xf): the header length of a 0x45 first byte.
        let msh = eval(vec![
            Insn::stmt(BPF_LDX | BPF_B | BPF_MSH, net(0)),
            Insn::stmt(BPF_MISC | BPF_TXA, 0),
        ]);
        assert_eq!(msh, 20);
        let ind = eval(vec![
            Insn::stmt(BPF_LDX | BPF_IMM, 3),
            Insn::stmt(BPF_LD | BPF_B | BPF_IND, net(1)),
        ]);
        // ldb [x + net + 1] with x = 3: 4 bytes into the network header.
        assert_eq!(ind, 0x04);
    }

    #[test]
    fn out_of_bounds_ends_with_zero() {
        let keep_after = |load: Insn| {
            let program = Program::from_insns(vec![load, Insn::stmt(BPF_RET | BPF_K, 99)]);
            run(&program, &view())
        };
        assert_eq!(keep_after(Insn::stmt(BPF_LD | BPF_W | BPF_ABS, 5)), 0);
        assert_eq!(keep_after(Insn::stmt(BPF_LD | BPF_B | BPF_ABS, 8)), 0);
        assert_eq!(keep_after(Insn::stmt(BPF_LD | BPF_B | BPF_ABS, 7)), 99);
        assert_eq!(keep_after(Insn::stmt(BPF_LD | BPF_W | BPF_ABS, net(3))), 0);
        assert_eq!(keep_after(Insn::stmt(BPF_LD | BPF_W | BPF_ABS, net(2))), 99);
        assert_eq!(keep_after(Insn::stmt(BPF_LD | BPF_B | BPF_IND, u32::MAX)), 0);
        assert_eq!(keep_after(Insn::stmt(BPF_LDX | BPF_B | BPF_MSH, 8)), 0);
        // Link-layer offsets and other ancillary data are not modelled.
        assert_eq!(keep_after(Insn::stmt(BPF_LD | BPF_B | BPF_ABS, 0xffe0_0000)), 0);
        assert_eq!(keep_after(Insn::stmt(BPF_LD | BPF_W | BPF_ABS, AD_PROTOCOL_K + 12)), 0);
    }

    #[test]
    fn alu_and_scratch_memory() {
        let alu = |op: u16, a: u32, k: u32| {
            eval(vec![
                Insn::stmt(BPF_LD | BPF_IMM, a),
                Insn::stmt(BPF_ALU | op | BPF_K, k),
            ])
        };
        assert_eq!(alu(BPF_ADD, u32::MAX, 2), 1);
        assert_eq!(alu(BPF_SUB, 1, 2), u32::MAX);
        assert_eq!(alu(BPF_MUL, 3, 5), 15);
        assert_eq!(alu(BPF_DIV, 17, 5), 3);
        assert_eq!(alu(BPF_MOD, 17, 5), 2);
        assert_eq!(alu(BPF_AND, 0b1100, 0b1010), 0b1000);
        assert_eq!(alu(BPF_OR, 0b1100, 0b1010), 0b1110);
        assert_eq!(alu(BPF_XOR, 0b1100, 0b1010), 0b0110);
        assert_eq!(alu(BPF_LSH, 1, 31), 1 << 31);
        assert_eq!(alu(BPF_RSH, 1 << 31, 31), 1);
        assert_eq!(alu(BPF_NEG, 1, 0), u32::MAX);
        // The same operations with X as the operand.
        let alu_x = |op: u16, a: u32, x: u32| {
            eval(vec![
                Insn::stmt(BPF_LDX | BPF_IMM, x),
                Insn::stmt(BPF_LD | BPF_IMM, a),
                Insn::stmt(BPF_ALU | op | BPF_X, 0),
            ])
        };
        assert_eq!(alu_x(BPF_ADD, u32::MAX, 2), 1);
        assert_eq!(alu_x(BPF_SUB, 1, 2), u32::MAX);
        assert_eq!(alu_x(BPF_MUL, 3, 5), 15);
        assert_eq!(alu_x(BPF_DIV, 17, 5), 3);
        assert_eq!(alu_x(BPF_MOD, 17, 5), 2);
        assert_eq!(alu_x(BPF_AND, 0b1100, 0b1010), 0b1000);
        assert_eq!(alu_x(BPF_OR, 0b1100, 0b1010), 0b1110);
        assert_eq!(alu_x(BPF_XOR, 0b1100, 0b1010), 0b0110);
        assert_eq!(alu_x(BPF_LSH, 1, 31), 1 << 31);
        assert_eq!(alu_x(BPF_RSH, 1 << 31, 31), 1);
        // Shifts by X use its low 5 bits, as the kernel's eBPF does.
        assert_eq!(alu_x(BPF_LSH, 1, 33), 2);
        // Division by X = 0 ends the program with 0, not a trap.
        let by_x_zero = Program::from_insns(vec![
            Insn::stmt(BPF_LD | BPF_IMM, 9),
            Insn::stmt(BPF_ALU | BPF_DIV | BPF_X, 0),
            Insn::stmt(BPF_RET | BPF_K, 99),
        ]);
        assert_eq!(run(&by_x_zero, &view()), 0);
        let memory = eval(vec![
            Insn::stmt(BPF_LD | BPF_IMM, 7),
            Insn::stmt(BPF_ST, 15),
            Insn::stmt(BPF_LDX | BPF_MEM, 15),
            Insn::stmt(BPF_ALU | BPF_ADD | BPF_X, 0),
            Insn::stmt(BPF_STX, 0),
            Insn::stmt(BPF_LD | BPF_MEM, 0),
        ]);
        assert_eq!(memory, 7);
        let tax = eval(vec![
            Insn::stmt(BPF_LD | BPF_IMM, 5),
            Insn::stmt(BPF_MISC | BPF_TAX, 0),
            Insn::stmt(BPF_ALU | BPF_MUL | BPF_X, 0),
        ]);
        assert_eq!(tax, 25);
    }

    #[test]
    fn jumps() {
        let cmp = |op: u16, a: u32, k: u32| {
            let program = Program::from_insns(vec![
                Insn::stmt(BPF_LD | BPF_IMM, a),
                Insn::jump(BPF_JMP | op | BPF_K, k, 1, 0),
                Insn::stmt(BPF_RET | BPF_K, 0),
                Insn::stmt(BPF_RET | BPF_K, 1),
            ]);
            run(&program, &view()) == 1
        };
        assert!(cmp(BPF_JEQ, 4, 4) && !cmp(BPF_JEQ, 4, 5));
        assert!(cmp(BPF_JGT, 5, 4) && !cmp(BPF_JGT, 4, 4));
        assert!(cmp(BPF_JGE, 4, 4) && !cmp(BPF_JGE, 3, 4));
        assert!(cmp(BPF_JSET, 6, 2) && !cmp(BPF_JSET, 6, 1));
        let cmp_x = |op: u16, a: u32, x: u32| {
            let program = Program::from_insns(vec![
                Insn::stmt(BPF_LDX | BPF_IMM, x),
                Insn::stmt(BPF_LD | BPF_IMM, a),
                Insn::jump(BPF_JMP | op | BPF_X, 0, 1, 0),
                Insn::stmt(BPF_RET | BPF_K, 0),
                Insn::stmt(BPF_RET | BPF_K, 1),
            ]);
            run(&program, &view()) == 1
        };
        assert!(cmp_x(BPF_JEQ, 4, 4) && !cmp_x(BPF_JEQ, 4, 5));
        assert!(cmp_x(BPF_JGT, 5, 4) && !cmp_x(BPF_JGT, 4, 4));
        assert!(cmp_x(BPF_JGE, 4, 4) && !cmp_x(BPF_JGE, 3, 4));
        assert!(cmp_x(BPF_JSET, 6, 2) && !cmp_x(BPF_JSET, 6, 1));
        let ja = Program::from_insns(vec![
            Insn::stmt(BPF_JMP | BPF_JA, 1),
            Insn::stmt(BPF_RET | BPF_K, 0),
            Insn::stmt(BPF_RET | BPF_K, 3),
        ]);
        assert_eq!(run(&ja, &view()), 3);
        // Malformed programs do not panic.
        let past_end = Program::from_insns(vec![Insn::stmt(BPF_JMP | BPF_JA, u32::MAX)]);
        assert_eq!(run(&past_end, &view()), 0);
        assert_eq!(run(&Program::from_insns(vec![Insn::stmt(0xffff, 0)]), &view()), 0);
        assert_eq!(run(&Program::from_insns(vec![]), &view()), 0);
    }
}
