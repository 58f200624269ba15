//! Classic BPF, pure: the instructions `SO_ATTACH_FILTER` takes, the kernel's
//! checker ([`Program::validate`]), an interpreter that runs a program as the
//! kernel does ([`run`]), a `tcpdump -d`-style listing, the bytecode text
//! programs travel in (`tcpdump -ddd`'s, [`Program::to_bytecode`]), and
//! tcpdump expressions compiled by libpcap for raw IP and moved to read
//! relative to the network header ([`raw`], [`expression`]).
//!
//! No I/O and no unsafe code in the default build, so the wire contract
//! (`netwatch-api`), the controller and the CLI use it without linking the
//! capture engine. The `libpcap` feature adds [`libpcap`], which loads the
//! system's libpcap at run time (`dlopen`), only when an expression is
//! compiled: nothing links libpcap, so a host without it runs every other
//! part of netwatch. That module is the crate's only unsafe code.
//!
//! Programs here read the packet relative to its network header
//! (`SKF_NET_OFF + k`) and learn the rest from ancillary loads, because an
//! AF_PACKET socket's filter sees the frame from its link header on
//! `SOCK_RAW` but from its network header on `SOCK_DGRAM` (the `any`
//! device); see `netwatch_capture::bpf`.
//!
//! # Layout
//! - [`code`], the constants, [`Insn`], [`Program`] and its checker and listing.
//! - `interp`: [`run`], [`execute`] and [`PacketView`].
//! - [`raw`]: a program compiled for raw IP (`LINKTYPE_RAW`) → one that reads
//!   relative to the network header.
//! - [`expression`]: a tcpdump expression → a checked program (libpcap's
//!   compiler with the `libpcap` feature).
//! - [`libpcap`] (feature `libpcap`): libpcap's compiler, loaded at run time.

use std::fmt;

pub mod expression;
mod interp;
#[cfg(feature = "libpcap")]
pub mod libpcap;
pub mod raw;

pub use interp::{Fault, PacketView, execute, run};

/// Classic BPF opcode parts, from include/uapi/linux/bpf_common.h and
/// include/uapi/linux/filter.h. `libc` has them as `u32`; `sock_filter.code`
/// is a `u16`, so they are spelled out here (a test checks them against libc).
pub mod code {
    // Instruction classes: `code & 0x07`.
    pub const BPF_LD: u16 = 0x00;
    pub const BPF_LDX: u16 = 0x01;
    pub const BPF_ST: u16 = 0x02;
    pub const BPF_STX: u16 = 0x03;
    pub const BPF_ALU: u16 = 0x04;
    pub const BPF_JMP: u16 = 0x05;
    pub const BPF_RET: u16 = 0x06;
    pub const BPF_MISC: u16 = 0x07;
    // Load sizes: `code & 0x18`.
    pub const BPF_W: u16 = 0x00;
    pub const BPF_H: u16 = 0x08;
    pub const BPF_B: u16 = 0x10;
    // Load modes: `code & 0xe0`.
    pub const BPF_IMM: u16 = 0x00;
    pub const BPF_ABS: u16 = 0x20;
    pub const BPF_IND: u16 = 0x40;
    pub const BPF_MEM: u16 = 0x60;
    pub const BPF_LEN: u16 = 0x80;
    pub const BPF_MSH: u16 = 0xa0;
    // ALU and jump operations: `code & 0xf0`.
    pub const BPF_ADD: u16 = 0x00;
    pub const BPF_SUB: u16 = 0x10;
    pub const BPF_MUL: u16 = 0x20;
    pub const BPF_DIV: u16 = 0x30;
    pub const BPF_OR: u16 = 0x40;
    pub const BPF_AND: u16 = 0x50;
    pub const BPF_LSH: u16 = 0x60;
    pub const BPF_RSH: u16 = 0x70;
    pub const BPF_NEG: u16 = 0x80;
    pub const BPF_MOD: u16 = 0x90;
    pub const BPF_XOR: u16 = 0xa0;
    pub const BPF_JA: u16 = 0x00;
    pub const BPF_JEQ: u16 = 0x10;
    pub const BPF_JGT: u16 = 0x20;
    pub const BPF_JGE: u16 = 0x30;
    pub const BPF_JSET: u16 = 0x40;
    // Operand source: `code & 0x08`; return value: `code & 0x18`.
    pub const BPF_K: u16 = 0x00;
    pub const BPF_X: u16 = 0x08;
    pub const BPF_A: u16 = 0x10;
    // Misc operations: `code & 0xf8`.
    pub const BPF_TAX: u16 = 0x00;
    pub const BPF_TXA: u16 = 0x80;
}

use code::*;

/// Base of the ancillary-data offsets (include/uapi/linux/filter.h).
pub const SKF_AD_OFF: i32 = -0x1000;
/// Ancillary offset of `ntohs(skb->protocol)`, the network protocol (EtherType).
pub const SKF_AD_PROTOCOL: u32 = 0;
/// Ancillary offset of `skb->pkt_type`, the packet's type (`PACKET_HOST`, …).
pub const SKF_AD_PKTTYPE: u32 = 4;
/// Ancillary offset of `skb->dev->ifindex`, the interface's index.
pub const SKF_AD_IFINDEX: u32 = 8;
/// The loopback interface's index in every network namespace (`LOOPBACK_IFINDEX`).
pub const LOOPBACK_IFINDEX: u32 = 1;
/// Packet types (include/uapi/linux/if_packet.h): addressed to this host.
pub const PACKET_HOST: u8 = 0;
/// Broadcast, received by this host.
pub const PACKET_BROADCAST: u8 = 1;
/// Multicast, received by this host.
pub const PACKET_MULTICAST: u8 = 2;
/// Addressed to another host, overheard (promiscuous mode, a bridge port).
pub const PACKET_OTHERHOST: u8 = 3;
/// Sent by this host.
pub const PACKET_OUTGOING: u8 = 4;
/// Loads at `SKF_NET_OFF + k` read `k` bytes past the network header.
pub const SKF_NET_OFF: i32 = -0x100000;
/// Loads at `SKF_LL_OFF + k` read `k` bytes past the link header (not used here).
pub const SKF_LL_OFF: i32 = -0x200000;
/// The kernel's limit on a classic program's length (include/uapi/linux/filter.h).
pub const BPF_MAXINSNS: usize = 4096;
/// Scratch memory words `M[0..16]` (include/uapi/linux/filter.h).
pub const BPF_MEMWORDS: usize = 16;
/// EtherType of IPv4 (include/uapi/linux/if_ether.h).
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;

/// `k` of the ancillary load of the network protocol.
pub const AD_PROTOCOL_K: u32 = SKF_AD_OFF.cast_unsigned().wrapping_add(SKF_AD_PROTOCOL);

/// `k` of the ancillary load of the packet type.
pub const AD_PKTTYPE_K: u32 = SKF_AD_OFF.cast_unsigned().wrapping_add(SKF_AD_PKTTYPE);
/// `k` of the ancillary load of the interface index.
pub const AD_IFINDEX_K: u32 = SKF_AD_OFF.cast_unsigned().wrapping_add(SKF_AD_IFINDEX);

/// `k` that reads `off` bytes past the network header.
pub const fn net(off: u32) -> u32 {
    SKF_NET_OFF.cast_unsigned().wrapping_add(off)
}

// Whole opcodes the checker treats specially, for `match` patterns.
const DIV_K: u16 = BPF_ALU | BPF_DIV | BPF_K;
const MOD_K: u16 = BPF_ALU | BPF_MOD | BPF_K;
const LSH_K: u16 = BPF_ALU | BPF_LSH | BPF_K;
const RSH_K: u16 = BPF_ALU | BPF_RSH | BPF_K;
const LD_MEM: u16 = BPF_LD | BPF_MEM;
const LDX_MEM: u16 = BPF_LDX | BPF_MEM;
const JA: u16 = BPF_JMP | BPF_JA;

/// One instruction, laid out as `struct sock_filter` (`sys` converts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Insn {
    pub code: u16,
    /// Conditional jumps: instructions to skip when true.
    pub jt: u8,
    /// Conditional jumps: instructions to skip when false.
    pub jf: u8,
    pub k: u32,
}

impl Insn {
    /// A non-jump instruction, as the `BPF_STMT` macro builds it.
    pub const fn stmt(code: u16, k: u32) -> Self {
        Self { code, jt: 0, jf: 0, k }
    }

    /// A conditional jump, as the `BPF_JUMP` macro builds it.
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Self {
        Self { code, jt, jf, k }
    }

    /// Whether this is a `ret`.
    pub const fn is_ret(&self) -> bool {
        self.code & 0x07 == BPF_RET
    }
}

/// A classic BPF program: the instructions `SO_ATTACH_FILTER` takes.
///
/// `Display` lists it like `tcpdump -d`, with kernel offsets spelled
/// symbolically (`#proto`, `[net+9]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Program {
    insns: Vec<Insn>,
}

impl Program {
    /// A program from raw instructions, unchecked (the kernel checks again on
    /// attach; [`Program::validate`] applies the same rules).
    pub fn from_insns(insns: Vec<Insn>) -> Self {
        Self { insns }
    }

    /// The instructions.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Whether there are no instructions (never true of a compiled program).
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// The program as `tcpdump -ddd` prints it, on one line: the count, then
    /// `code jt jf k` per instruction, in decimal, joined by commas
    /// (`4,40 0 0 12,21 0 1 2048,6 0 0 65535,6 0 0 0`), as iptables' `bpf`
    /// match and other classic-BPF tools read it. How netwatch's controller
    /// sends an expression's compiled program to agents (`bpfProgram`).
    pub fn to_bytecode(&self) -> String {
        let mut text = self.insns.len().to_string();
        for insn in &self.insns {
            text.push_str(&format!(",{} {} {} {}", insn.code, insn.jt, insn.jf, insn.k));
        }
        text
    }

    /// Reads [`Program::to_bytecode`]'s text (whitespace around fields
    /// allowed). Not checked: call [`Program::validate`].
    pub fn from_bytecode(text: &str) -> Result<Self, BytecodeError> {
        let mut fields = text.split(',');
        let count = fields.next().unwrap_or_default().trim();
        let count: usize = count.parse().map_err(|_| BytecodeError::Count(count.to_owned()))?;
        if count > BPF_MAXINSNS {
            return Err(BytecodeError::Count(count.to_string()));
        }
        let insns = fields
            .enumerate()
            .map(|(pc, field)| {
                let numbers: Vec<&str> = field.split_whitespace().collect();
                let bad = || BytecodeError::Instruction {
                    pc,
                    text: field.trim().to_owned(),
                };
                let [code, jt, jf, k] = numbers.as_slice() else {
                    return Err(bad());
                };
                Ok(Insn {
                    code: code.parse().map_err(|_| bad())?,
                    jt: jt.parse().map_err(|_| bad())?,
                    jf: jf.parse().map_err(|_| bad())?,
                    k: k.parse().map_err(|_| bad())?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if insns.len() != count {
            return Err(BytecodeError::Length {
                count,
                found: insns.len(),
            });
        }
        Ok(Self { insns })
    }

    /// Checks the program as the kernel's classic checker does on attach
    /// (net/core/filter.c: `bpf_check_classic`, `chk_code_allowed`,
    /// `check_load_and_stores`): a known opcode everywhere, jumps forward and
    /// inside the program, no division by a constant 0, no shift by 32 or
    /// more, scratch slots that exist and are written before they are read,
    /// and a `ret` last.
    pub fn validate(&self) -> Result<(), ValidateError> {
        let len = self.insns.len();
        if len == 0 {
            return Err(ValidateError::Empty);
        }
        if len > BPF_MAXINSNS {
            return Err(ValidateError::TooLong { len, max: BPF_MAXINSNS });
        }
        for (pc, insn) in self.insns.iter().enumerate() {
            let (code, k) = (insn.code, insn.k);
            if !code_allowed(code) {
                return Err(ValidateError::BadOpcode { pc, code });
            }
            // Instructions after this one: the farthest a jump may skip.
            let room = len - pc - 1;
            let is_jump = code & 0x07 == BPF_JMP;
            let error = match code {
                DIV_K | MOD_K if k == 0 => Some(ValidateError::DivisionByZero { pc }),
                LSH_K | RSH_K if k >= 32 => Some(ValidateError::ShiftTooFar { pc, k }),
                LD_MEM | LDX_MEM | BPF_ST | BPF_STX if slot(k).is_none() => Some(ValidateError::NoSuchSlot { pc, k }),
                JA if u64::from(k) >= u64::try_from(room).unwrap_or(u64::MAX) => {
                    Some(ValidateError::JumpOutOfRange { pc })
                }
                JA => None,
                _ if is_jump && (usize::from(insn.jt) >= room || usize::from(insn.jf) >= room) => {
                    Some(ValidateError::JumpOutOfRange { pc })
                }
                _ => None,
            };
            if let Some(error) = error {
                return Err(error);
            }
        }
        if !self.insns[len - 1].is_ret() {
            return Err(ValidateError::NoFinalReturn);
        }
        self.check_loads_and_stores()
    }

    /// `check_load_and_stores`: on every path, `M[k]` is stored before it is
    /// loaded. Call after the per-instruction checks (slots and jumps in range).
    fn check_loads_and_stores(&self) -> Result<(), ValidateError> {
        // Bit k set: M[k] holds a value. `masks[pc]`: what every jump to pc carries.
        let mut masks = vec![u16::MAX; self.insns.len()];
        let mut valid: u16 = 0;
        for (pc, insn) in self.insns.iter().enumerate() {
            valid &= masks[pc];
            let bit = |k: u32| slot(k).map_or(0, |s| 1u16 << s);
            match insn.code {
                BPF_ST | BPF_STX => valid |= bit(insn.k),
                LD_MEM | LDX_MEM if valid & bit(insn.k) == 0 => {
                    return Err(ValidateError::SlotNotStored { pc, k: insn.k });
                }
                JA => {
                    let target = usize::try_from(insn.k).map_or(usize::MAX, |k| pc + 1 + k);
                    if let Some(mask) = masks.get_mut(target) {
                        *mask &= valid;
                    }
                    valid = u16::MAX;
                }
                code if code & 0x07 == BPF_JMP => {
                    for skip in [insn.jt, insn.jf] {
                        if let Some(mask) = masks.get_mut(pc + 1 + usize::from(skip)) {
                            *mask &= valid;
                        }
                    }
                    valid = u16::MAX;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The scratch slot `k` names, if it exists.
fn slot(k: u32) -> Option<usize> {
    usize::try_from(k).ok().filter(|&s| s < BPF_MEMWORDS)
}

/// The opcodes the kernel's classic checker accepts (`chk_code_allowed`).
fn code_allowed(code: u16) -> bool {
    const ALU_OPS: [u16; 10] = [
        BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_MOD, BPF_AND, BPF_OR, BPF_XOR, BPF_LSH, BPF_RSH,
    ];
    const JUMP_OPS: [u16; 4] = [BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET];
    const OTHERS: [u16; 21] = [
        BPF_ALU | BPF_NEG,
        BPF_LD | BPF_W | BPF_ABS,
        BPF_LD | BPF_H | BPF_ABS,
        BPF_LD | BPF_B | BPF_ABS,
        BPF_LD | BPF_W | BPF_IND,
        BPF_LD | BPF_H | BPF_IND,
        BPF_LD | BPF_B | BPF_IND,
        BPF_LD | BPF_W | BPF_LEN,
        BPF_LD | BPF_IMM,
        BPF_LD | BPF_MEM,
        BPF_LDX | BPF_W | BPF_LEN,
        BPF_LDX | BPF_B | BPF_MSH,
        BPF_LDX | BPF_IMM,
        BPF_LDX | BPF_MEM,
        BPF_ST,
        BPF_STX,
        BPF_MISC | BPF_TAX,
        BPF_MISC | BPF_TXA,
        BPF_RET | BPF_K,
        BPF_RET | BPF_A,
        BPF_JMP | BPF_JA,
    ];
    let with_source = |class: u16, ops: &[u16]| {
        ops.iter()
            .any(|&op| code == class | op | BPF_K || code == class | op | BPF_X)
    };
    OTHERS.contains(&code) || with_source(BPF_ALU, &ALU_OPS) || with_source(BPF_JMP, &JUMP_OPS)
}

/// Text that is not [`Program::to_bytecode`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BytecodeError {
    #[error("{0:?} is not an instruction count 0-4096")]
    Count(String),
    #[error("instruction {pc} ({text:?}) is not four numbers \"code jt jf k\"")]
    Instruction { pc: usize, text: String },
    #[error("the count says {count} instructions, but {found} follow")]
    Length { count: usize, found: usize },
}

/// A program the kernel's classic checker would refuse (`EINVAL` on attach).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidateError {
    #[error("a program needs at least one instruction")]
    Empty,
    #[error("{len} instructions is more than the kernel's limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("instruction {pc}: opcode {code:#06x} is not classic BPF")]
    BadOpcode { pc: usize, code: u16 },
    #[error("instruction {pc}: jumps past the end of the program")]
    JumpOutOfRange { pc: usize },
    #[error("instruction {pc}: divides by the constant 0")]
    DivisionByZero { pc: usize },
    #[error("instruction {pc}: shifts by {k}, more than 31")]
    ShiftTooFar { pc: usize, k: u32 },
    #[error("instruction {pc}: scratch slot M[{k}] does not exist (there are 16)")]
    NoSuchSlot { pc: usize, k: u32 },
    #[error("instruction {pc}: reads M[{k}] before every path to it has stored it")]
    SlotNotStored { pc: usize, k: u32 },
    #[error("the last instruction is not a ret")]
    NoFinalReturn,
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (pc, insn) in self.insns.iter().enumerate() {
            let (name, operand) = disassemble(pc, insn);
            let line = format!("({pc:03}) {name:<8} {operand}");
            if insn.code & 0x07 == BPF_JMP && insn.code & 0xf0 != BPF_JA {
                let jt = pc + 1 + usize::from(insn.jt);
                let jf = pc + 1 + usize::from(insn.jf);
                writeln!(f, "{line:<32} jt {jt}\tjf {jf}")?;
            } else {
                writeln!(f, "{}", line.trim_end())?;
            }
        }
        Ok(())
    }
}

/// Mnemonic and operand of one instruction, in `tcpdump -d` style.
fn disassemble(pc: usize, insn: &Insn) -> (String, String) {
    let (code, k) = (insn.code, insn.k);
    let size = match code & 0x18 {
        BPF_H => "h",
        BPF_B => "b",
        _ => "",
    };
    let source = |k: u32| {
        if code & BPF_X != 0 {
            "x".to_owned()
        } else {
            format!("#{k:#x}")
        }
    };
    let (name, operand) = match code & 0x07 {
        BPF_LD => {
            let operand = match code & 0xe0 {
                BPF_ABS => abs_operand(k),
                BPF_IND => match offset_name(k) {
                    Some(name) => format!("[x+{name}]"),
                    None => format!("[x+{k}]"),
                },
                BPF_IMM => format!("#{k:#x}"),
                BPF_MEM => format!("M[{k}]"),
                BPF_LEN => "#pktlen".to_owned(),
                _ => return ("unimp".to_owned(), format!("{code:#06x}")),
            };
            (format!("ld{size}"), operand)
        }
        BPF_LDX => match code & 0xe0 {
            BPF_MSH => ("ldxb".to_owned(), format!("4*({}&0xf)", abs_operand(k))),
            BPF_IMM => ("ldx".to_owned(), format!("#{k:#x}")),
            BPF_MEM => ("ldx".to_owned(), format!("M[{k}]")),
            BPF_LEN => ("ldx".to_owned(), "#pktlen".to_owned()),
            _ => ("unimp".to_owned(), format!("{code:#06x}")),
        },
        BPF_ST => ("st".to_owned(), format!("M[{k}]")),
        BPF_STX => ("stx".to_owned(), format!("M[{k}]")),
        BPF_ALU => {
            let name = match code & 0xf0 {
                BPF_ADD => "add",
                BPF_SUB => "sub",
                BPF_MUL => "mul",
                BPF_DIV => "div",
                BPF_MOD => "mod",
                BPF_AND => "and",
                BPF_OR => "or",
                BPF_XOR => "xor",
                BPF_LSH => "lsh",
                BPF_RSH => "rsh",
                BPF_NEG => return ("neg".to_owned(), String::new()),
                _ => return ("unimp".to_owned(), format!("{code:#06x}")),
            };
            (name.to_owned(), source(k))
        }
        BPF_JMP => {
            let name = match code & 0xf0 {
                BPF_JA => {
                    let target = usize::try_from(k).map_or(usize::MAX, |k| pc + 1 + k);
                    return ("ja".to_owned(), target.to_string());
                }
                BPF_JEQ => "jeq",
                BPF_JGT => "jgt",
                BPF_JGE => "jge",
                BPF_JSET => "jset",
                _ => return ("unimp".to_owned(), format!("{code:#06x}")),
            };
            (name.to_owned(), source(k))
        }
        BPF_RET => match code & 0x18 {
            BPF_A => ("ret".to_owned(), "a".to_owned()),
            _ => ("ret".to_owned(), format!("#{k}")),
        },
        _ => match code & 0xf8 {
            BPF_TAX => ("tax".to_owned(), String::new()),
            BPF_TXA => ("txa".to_owned(), String::new()),
            _ => ("unimp".to_owned(), format!("{code:#06x}")),
        },
    };
    (name, operand)
}

/// `[12]`, `[net+9]`, `#proto`: the operand of an absolute load.
fn abs_operand(k: u32) -> String {
    match k {
        AD_PROTOCOL_K => return "#proto".to_owned(),
        AD_PKTTYPE_K => return "#type".to_owned(),
        AD_IFINDEX_K => return "#ifidx".to_owned(),
        _ => {}
    }
    let signed = k.cast_signed();
    if (SKF_AD_OFF..0).contains(&signed) {
        return format!("#ad[{}]", signed - SKF_AD_OFF);
    }
    match offset_name(k) {
        Some(name) => format!("[{name}]"),
        None => format!("[{signed}]"),
    }
}

/// `net+9` or `ll+12` for a negative offset relative to a header; `None` otherwise.
fn offset_name(k: u32) -> Option<String> {
    let signed = k.cast_signed();
    if signed >= 0 {
        Some(k.to_string())
    } else if signed >= SKF_NET_OFF {
        Some(format!("net+{}", signed - SKF_NET_OFF))
    } else if signed >= SKF_LL_OFF {
        Some(format!("ll+{}", signed - SKF_LL_OFF))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytecode_round_trips_and_bad_text_says_where() {
        let text = "4,40 0 0 12,21 0 1 2048,6 0 0 65535,6 0 0 0";
        let program = Program::from_bytecode(text).unwrap();
        assert_eq!(program.len(), 4);
        assert_eq!(program.insns()[1], Insn::jump(BPF_JMP | BPF_JEQ | BPF_K, 2048, 0, 1));
        assert_eq!(program.to_bytecode(), text);
        assert_eq!(
            Program::from_bytecode(" 1, 6 0 0 1 ").unwrap().to_bytecode(),
            "1,6 0 0 1"
        );
        for (bad, error) in [
            ("x,6 0 0 1", BytecodeError::Count("x".into())),
            ("5000", BytecodeError::Count("5000".into())),
            (
                "1,6 0 1",
                BytecodeError::Instruction {
                    pc: 0,
                    text: "6 0 1".into(),
                },
            ),
            (
                "1,6 0 256 1",
                BytecodeError::Instruction {
                    pc: 0,
                    text: "6 0 256 1".into(),
                },
            ),
            ("2,6 0 0 1", BytecodeError::Length { count: 2, found: 1 }),
        ] {
            assert_eq!(Program::from_bytecode(bad), Err(error), "{bad}");
        }
    }
}
