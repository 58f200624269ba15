//! The IR → classic BPF instructions: short-circuit jumping code over labels,
//! then an assembler that resolves the labels.
//!
//! Code generation: every node is compiled with a "true" and a "false" label;
//! `And` chains its children through fresh labels bound right after each one,
//! so the common case jumps 0 (cBPF conditional jumps always name both
//! targets, so falling through costs nothing). Jumps only go forward, which
//! the kernel requires and which makes register tracking exact: when a label
//! is bound, every jump to it has been emitted, so what A and X hold there is
//! known (the meet over all incoming paths), and a test whose value is
//! already in A skips its load.
//!
//! Assembly: conditional jump offsets are `u8`. A jump farther than 255 is
//! sent to a trampoline, a `ja` (32-bit offset) to the real target, or a copy
//! of the target when it is a `ret`. A trampoline goes at the last point in
//! reach that nothing falls into (after a jump or a `ret`), so later far jumps
//! to the same target share it. Inserting one moves code, so the assembler
//! repeats until every jump fits; it stops at [`BPF_MAXINSNS`].

use super::code::*;
use super::lower::{Cmp, Expr, Load, Size, Test};
use super::{AD_IFINDEX_K, AD_PKTTYPE_K, AD_PROTOCOL_K, BPF_MAXINSNS, Insn, Program, net};

/// The farthest a conditional jump reaches: `jt`/`jf` are `u8`.
const MAX_SKIP: usize = u8::MAX as usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Label(usize);

/// An instruction whose jump targets are still labels.
#[derive(Debug, Clone, Copy)]
enum Item {
    /// Not a jump: falls through to the next item, unless it is a `ret`.
    Insn(Insn),
    /// A conditional jump.
    Jump { code: u16, k: u32, jt: Label, jf: Label },
    /// `ja`.
    Always(Label),
}

impl Item {
    /// Whether control can pass from this item to the next one without a jump.
    fn falls_through(&self) -> bool {
        matches!(self, Self::Insn(insn) if !insn.is_ret())
    }
}

/// What the registers are known to hold at a point of the program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Regs {
    a: Option<Load>,
    /// X holds the IPv4 header length (`ldxb 4*([net]&0xf)`).
    x_is_ihl: bool,
}

/// What holds on every path: `None` is "no path" (unreachable).
fn meet(left: Option<Regs>, right: Option<Regs>) -> Option<Regs> {
    match (left, right) {
        (None, regs) | (regs, None) => regs,
        (Some(l), Some(r)) => Some(Regs {
            a: if l.a == r.a { l.a } else { None },
            x_is_ihl: l.x_is_ihl && r.x_is_ihl,
        }),
    }
}

#[derive(Debug, Default)]
struct Emitter<'p> {
    /// The expressions' programs `Expr::Program(n)` names.
    programs: Vec<&'p Program>,
    items: Vec<Item>,
    /// Label → index of the item it names, once bound.
    bound: Vec<Option<usize>>,
    /// Label → the meet of the registers of the jumps emitted to it so far.
    incoming: Vec<Option<Regs>>,
    /// The registers here; `None` right after a jump or `ret`.
    regs: Option<Regs>,
}

impl Emitter<'_> {
    fn label(&mut self) -> Label {
        self.bound.push(None);
        self.incoming.push(None);
        Label(self.bound.len() - 1)
    }

    /// Makes `label` name the next item; all jumps to it are already emitted.
    fn bind(&mut self, label: Label) {
        self.bound[label.0] = Some(self.items.len());
        self.regs = meet(self.regs, self.incoming[label.0].take());
    }

    fn flow_to(&mut self, label: Label) {
        self.incoming[label.0] = meet(self.incoming[label.0], self.regs);
    }

    fn push(&mut self, insn: Insn) {
        self.items.push(Item::Insn(insn));
        if insn.is_ret() {
            self.regs = None;
        }
    }

    fn jump(&mut self, code: u16, k: u32, jt: Label, jf: Label) {
        self.flow_to(jt);
        self.flow_to(jf);
        self.items.push(Item::Jump { code, k, jt, jf });
        self.regs = None;
    }

    fn always(&mut self, target: Label) {
        self.flow_to(target);
        self.items.push(Item::Always(target));
        self.regs = None;
    }

    /// Code that jumps to `yes` when `expr` holds and to `no` otherwise.
    fn branch(&mut self, expr: &Expr, yes: Label, no: Label) {
        match expr {
            Expr::Const(true) => self.always(yes),
            Expr::Const(false) => self.always(no),
            Expr::Test(test) => self.test(*test, yes, no),
            Expr::And(items) => self.chain(items, true, yes, no),
            Expr::Or(items) => self.chain(items, false, yes, no),
            Expr::Program(n) => {
                let program = self.programs[*n];
                self.splice(program, yes, no);
            }
            Expr::If(test, then, otherwise) => {
                let (then_label, otherwise_label) = (self.label(), self.label());
                self.test(*test, then_label, otherwise_label);
                self.bind(then_label);
                self.branch(then, yes, no);
                self.bind(otherwise_label);
                self.branch(otherwise, yes, no);
            }
        }
    }

    /// A whole program (checked: forward jumps, a `ret` last), its `ret`s
    /// turned into jumps: non-zero to `yes`, zero to `no`. It starts with A
    /// and X at 0, as the kernel starts a program (net/core/filter.c,
    /// `bpf_convert_filter`), and may leave anything in them and in `M[]`.
    fn splice(&mut self, program: &Program, yes: Label, no: Label) {
        self.push(Insn::stmt(BPF_LD | BPF_IMM, 0));
        self.push(Insn::stmt(BPF_LDX | BPF_IMM, 0));
        let insns = program.insns();
        // The label of each instruction some jump lands on, made as the jump is emitted.
        let mut at: Vec<Option<Label>> = vec![None; insns.len()];
        let target = |emitter: &mut Self, at: &mut Vec<Option<Label>>, index: usize| {
            *at.get_mut(index)
                .expect("a checked program jumps inside itself")
                .get_or_insert_with(|| emitter.label())
        };
        for (pc, insn) in insns.iter().enumerate() {
            if let Some(label) = at[pc] {
                self.bind(label);
            }
            let class = insn.code & 0x07;
            match (class, insn.code & 0xf0) {
                (BPF_RET, _) if insn.code & 0x18 == BPF_A => self.jump(BPF_JMP | BPF_JEQ | BPF_K, 0, no, yes),
                (BPF_RET, _) => self.always(if insn.k == 0 { no } else { yes }),
                (BPF_JMP, BPF_JA) => {
                    let to = usize::try_from(insn.k).map_or(usize::MAX, |k| pc + 1 + k);
                    let label = target(self, &mut at, to);
                    self.always(label);
                }
                (BPF_JMP, _) => {
                    let jt = target(self, &mut at, pc + 1 + usize::from(insn.jt));
                    let jf = target(self, &mut at, pc + 1 + usize::from(insn.jf));
                    self.jump(insn.code, insn.k, jt, jf);
                }
                _ => {
                    self.items.push(Item::Insn(*insn));
                    // Nothing is known of A and X past the program's own code.
                    self.regs = Some(Regs::default());
                }
            }
        }
    }

    /// `And` (`is_and`) or `Or` of `items`, short-circuit.
    fn chain(&mut self, items: &[Expr], is_and: bool, yes: Label, no: Label) {
        let Some((last, init)) = items.split_last() else {
            // The empty And is true, the empty Or false (not built by `lower`).
            return self.always(if is_and { yes } else { no });
        };
        for item in init {
            let next = self.label();
            if is_and {
                self.branch(item, next, no);
            } else {
                self.branch(item, yes, next);
            }
            self.bind(next);
        }
        self.branch(last, yes, no);
    }

    fn test(&mut self, test: Test, yes: Label, no: Label) {
        self.load(test.load);
        let op = match test.cmp {
            Cmp::Eq => BPF_JEQ,
            Cmp::Gt => BPF_JGT,
            Cmp::Ge => BPF_JGE,
            Cmp::Set => BPF_JSET,
        };
        let (jt, jf) = if test.negated { (no, yes) } else { (yes, no) };
        self.jump(BPF_JMP | op | BPF_K, test.k, jt, jf);
    }

    /// Puts `load` in A, unless every path here left it there.
    fn load(&mut self, load: Load) {
        let mut regs = self.regs.unwrap_or_default();
        if regs.a == Some(load) {
            return;
        }
        let insn = match load {
            Load::Protocol => Insn::stmt(BPF_LD | BPF_H | BPF_ABS, AD_PROTOCOL_K),
            Load::PktType => Insn::stmt(BPF_LD | BPF_W | BPF_ABS, AD_PKTTYPE_K),
            Load::IfIndex => Insn::stmt(BPF_LD | BPF_W | BPF_ABS, AD_IFINDEX_K),
            Load::Net { size, off } => Insn::stmt(BPF_LD | size_code(size) | BPF_ABS, net(off)),
            Load::V4Transport { size, off } => {
                if !regs.x_is_ihl {
                    // X = 4 * (first byte & 0xf): the IPv4 header length.
                    self.items
                        .push(Item::Insn(Insn::stmt(BPF_LDX | BPF_B | BPF_MSH, net(0))));
                    regs.x_is_ihl = true;
                }
                Insn::stmt(BPF_LD | size_code(size) | BPF_IND, net(off))
            }
        };
        self.items.push(Item::Insn(insn));
        regs.a = Some(load);
        self.regs = Some(regs);
    }
}

/// A load's size bits.
const fn size_code(size: Size) -> u16 {
    match size {
        Size::B => BPF_B,
        Size::H => BPF_H,
        Size::W => BPF_W,
    }
}

/// The program for `expr`: `ret #accept` when it holds, `ret #0` when not.
/// `programs` are the expressions' programs `Expr::Program(n)` names.
/// `Err` holds the length when it would exceed [`BPF_MAXINSNS`].
pub(super) fn generate(expr: &Expr, accept: u32, programs: &[&Program]) -> Result<Vec<Insn>, usize> {
    let mut emitter = Emitter {
        programs: programs.to_vec(),
        ..Emitter::default()
    };
    let (keep, drop) = (emitter.label(), emitter.label());
    emitter.branch(expr, keep, drop);
    emitter.bind(keep);
    emitter.push(Insn::stmt(BPF_RET | BPF_K, accept));
    emitter.bind(drop);
    emitter.push(Insn::stmt(BPF_RET | BPF_K, 0));
    let bound = emitter
        .bound
        .into_iter()
        .map(|at| at.expect("every label is bound: branch() binds each label it creates"))
        .collect();
    assemble(emitter.items, bound)
}

/// Instructions between the one after `pc` and `target`: the jump's offset.
fn skip(bound: &[usize], pc: usize, target: Label) -> usize {
    bound[target.0]
        .checked_sub(pc + 1)
        .expect("jumps go forward: a label is bound after every jump to it")
}

/// Resolves labels, inserting trampolines until every conditional jump fits in a `u8`.
fn assemble(mut items: Vec<Item>, mut bound: Vec<usize>) -> Result<Vec<Insn>, usize> {
    // (trampoline's own label, its target)
    let mut trampolines: Vec<(Label, Label)> = Vec::new();
    loop {
        if items.len() > BPF_MAXINSNS {
            return Err(items.len());
        }
        let far = items.iter().enumerate().find_map(|(pc, item)| match *item {
            Item::Jump { jt, jf, .. } => [(jt, true), (jf, false)]
                .into_iter()
                .find(|&(target, _)| skip(&bound, pc, target) > MAX_SKIP)
                .map(|(target, is_jt)| (pc, target, is_jt)),
            _ => None,
        });
        let Some((pc, target, is_jt)) = far else { break };
        let reach = pc + 1..=pc + 1 + MAX_SKIP;
        let existing = trampolines
            .iter()
            .find(|&&(own, to)| to == target && reach.contains(&bound[own.0]))
            .map(|&(own, _)| own);
        let via = match existing {
            Some(own) => own,
            None => {
                // The target lies past the reach, so a point in reach exists;
                // the one right after the jump itself always qualifies.
                let at = reach
                    .clone()
                    .rev()
                    .find(|&at| !items[at - 1].falls_through())
                    .expect("the far jump itself does not fall through");
                let trampoline = match items[bound[target.0]] {
                    Item::Insn(insn) if insn.is_ret() => Item::Insn(insn),
                    _ => Item::Always(target),
                };
                for index in &mut bound {
                    if *index >= at {
                        *index += 1;
                    }
                }
                items.insert(at, trampoline);
                bound.push(at);
                let own = Label(bound.len() - 1);
                trampolines.push((own, target));
                own
            }
        };
        if let Item::Jump { jt, jf, .. } = &mut items[pc] {
            if is_jt {
                *jt = via;
            } else {
                *jf = via;
            }
        }
    }
    let fit = |pc: usize, target: Label| {
        u8::try_from(skip(&bound, pc, target)).expect("the loop above left no jump farther than 255")
    };
    Ok(items
        .iter()
        .enumerate()
        .map(|(pc, item)| match *item {
            Item::Insn(insn) => insn,
            Item::Jump { code, k, jt, jf } => Insn::jump(code, k, fit(pc, jt), fit(pc, jf)),
            Item::Always(target) => {
                let k = u32::try_from(skip(&bound, pc, target)).expect("programs are at most BPF_MAXINSNS long");
                Insn::stmt(BPF_JMP | BPF_JA, k)
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::{PacketView, run};
    use super::*;

    const BYTE0: Load = Load::Net { size: Size::B, off: 0 };

    fn is(k: u32) -> Expr {
        Expr::Test(Test {
            load: BYTE0,
            cmp: Cmp::Eq,
            k,
            negated: false,
        })
    }

    /// Runs `insns` over a one-byte packet holding `byte`.
    fn verdict(insns: &[Insn], byte: u8) -> u32 {
        let program = Program::from_insns(insns.to_vec());
        program.validate().unwrap();
        let data = [byte];
        run(
            &program,
            &PacketView {
                data: &data,
                net_offset: 0,
                protocol: 0,
                pkttype: 0,
                ifindex: 2,
            },
        )
    }

    #[test]
    fn a_repeated_load_is_emitted_once() {
        let insns = generate(&Expr::Or(vec![is(1), is(2), is(3)]), 7, &[]).unwrap();
        let loads = insns.iter().filter(|i| i.code == BPF_LD | BPF_B | BPF_ABS).count();
        assert_eq!(loads, 1, "{}", Program::from_insns(insns.clone()));
        assert_eq!(insns.len(), 6);
        for (byte, expected) in [(1, 7), (2, 7), (3, 7), (4, 0)] {
            assert_eq!(verdict(&insns, byte), expected);
        }
    }

    #[test]
    fn far_jumps_go_through_trampolines() {
        // A test per value of the byte, in an And of Ors: the early tests'
        // jumps to "keep", and to the next Or, span hundreds of instructions.
        let first = Expr::Or((0..300).map(|k| is(2 * k)).collect());
        let second = Expr::Or((1..=300).map(is).collect());
        let expr = Expr::And(vec![first, second]);
        let insns = generate(&expr, 1, &[]).unwrap();
        assert!(insns.len() > 600);
        // `ja` to the start of the second Or, copies of `ret` for "keep".
        let trampolines = insns.iter().filter(|i| i.code == BPF_JMP | BPF_JA).count();
        let rets = insns.iter().filter(|i| i.is_ret()).count();
        assert!(trampolines > 0 && rets > 2, "{trampolines} ja, {rets} ret");
        for byte in 0..=255u8 {
            let expected = byte % 2 == 0 && byte != 0;
            assert_eq!(verdict(&insns, byte), u32::from(expected), "{byte}");
        }
    }

    #[test]
    fn too_many_instructions_report_the_length() {
        let expr = Expr::Or(
            (0..5000)
                .map(|k| {
                    Expr::Test(Test {
                        load: BYTE0,
                        cmp: Cmp::Eq,
                        k,
                        negated: false,
                    })
                })
                .collect(),
        );
        let len = generate(&expr, 1, &[]).unwrap_err();
        assert!(len > BPF_MAXINSNS, "{len}");
    }
}
