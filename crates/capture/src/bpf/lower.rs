//! Filters → the compiler's IR: a boolean tree of tests on packet fields.
//!
//! The tree has no `Not`: each [`Test`] carries its own polarity, which costs
//! nothing in cBPF (a negated test swaps its jump targets). The constructors
//! fold constants (`And` with `False` is `False`, `x >= 0` is `True`, a port
//! `<= 65535` is `True`), flatten nested `And`/`Or` and drop repeated
//! branches, so a filter that sets one field becomes a few tests.
//!
//! Shape of the result: one branch per address family, chosen on the
//! EtherType; in each, an `Or` over the filters (those reading less of the
//! transport header first, see the parent module), each an `And` of protocol,
//! fragment, ICMP type and code, TCP flags, direction and the two
//! orientations of the conversation. Then, `Or`ed after it, each filter with
//! an expression: the same for its fields, `And` its program (`Expr::Program`). Sets of values become binary searches
//! when long, and IPv6 address sets a trie over the four 32-bit words.

use netwatch_api::filter::{CaptureFilter, IPPROTO_TCP, IPPROTO_UDP, IpSet, PortSet, Way};

use super::{ETH_P_IP, ETH_P_IPV6};

/// Width of a load (`BPF_B`, `BPF_H`, `BPF_W`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Size {
    B,
    H,
    W,
}

/// A value a test loads into the accumulator A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Load {
    /// `ldh [SKF_AD_OFF + SKF_AD_PROTOCOL]`: the EtherType, whatever the link header.
    Protocol,
    /// `ld [SKF_AD_OFF + SKF_AD_PKTTYPE]`: the packet type (`PACKET_HOST`, …).
    PktType,
    /// `ld [SKF_AD_OFF + SKF_AD_IFINDEX]`: the interface's index.
    IfIndex,
    /// `ld{b,h,} [SKF_NET_OFF + off]`: a big-endian field `off` bytes into the network header.
    Net { size: Size, off: u32 },
    /// `ld{b,h} [x + SKF_NET_OFF + off]` with X the IPv4 header length: a
    /// field `off` bytes into the IPv4 payload (ports, ICMP type, TCP flags).
    V4Transport { size: Size, off: u32 },
}

impl Load {
    /// The largest value the load can give.
    fn max(self) -> u32 {
        match self {
            Self::Protocol | Self::V4Transport { size: Size::H, .. } | Self::Net { size: Size::H, .. } => 0xffff,
            Self::Net { size: Size::B, .. } | Self::V4Transport { size: Size::B, .. } => 0xff,
            // `pkt_type` is a 3-bit field.
            Self::PktType => 7,
            Self::Net { size: Size::W, .. } | Self::V4Transport { size: Size::W, .. } | Self::IfIndex => u32::MAX,
        }
    }
}

/// The comparisons cBPF jumps make: `A == k`, `A > k`, `A >= k`, `A & k != 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Cmp {
    Eq,
    Gt,
    Ge,
    Set,
}

/// Load a value, compare it with `k`; true when the comparison holds, or
/// when it fails if `negated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Test {
    pub load: Load,
    pub cmp: Cmp,
    pub k: u32,
    pub negated: bool,
}

impl Test {
    fn not(self) -> Self {
        Self {
            negated: !self.negated,
            ..self
        }
    }
}

/// A boolean tree of tests.
///
/// Built only through the constructors below, which keep it folded: `Const`
/// appears only at the root, `And`/`Or` have two or more children, none of
/// them an `And`/`Or` of the same kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Expr {
    Const(bool),
    Test(Test),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    /// `if test { then } else { otherwise }`: a binary-search step.
    If(Test, Box<Expr>, Box<Expr>),
    /// The program of the `n`-th filter with a `bpfExpression` (in list
    /// order): true when it returns non-zero. Spliced in whole by `emit`.
    Program(usize),
}

const TRUE: Expr = Expr::Const(true);
const FALSE: Expr = Expr::Const(false);

/// Joins `items` by `And` (`is_and`) or `Or`: flattened, constant-folded, deduplicated.
fn join(is_and: bool, items: impl IntoIterator<Item = Expr>) -> Expr {
    // The value that decides the whole (`False` for And) and the one that vanishes.
    let (absorbing, neutral) = (Expr::Const(!is_and), Expr::Const(is_and));
    let mut out: Vec<Expr> = Vec::new();
    for item in items {
        if item == absorbing {
            return absorbing;
        }
        let children = match item {
            Expr::And(inner) if is_and => inner,
            Expr::Or(inner) if !is_and => inner,
            other if other == neutral => Vec::new(),
            other => vec![other],
        };
        for child in children {
            if !out.contains(&child) {
                out.push(child);
            }
        }
    }
    match out.len() {
        0 => neutral,
        1 => out.pop().unwrap_or(neutral),
        _ if is_and => Expr::And(out),
        _ => Expr::Or(out),
    }
}

pub(super) fn and(items: impl IntoIterator<Item = Expr>) -> Expr {
    join(true, items)
}

pub(super) fn or(items: impl IntoIterator<Item = Expr>) -> Expr {
    join(false, items)
}

/// `if test { yes } else { no }`, folded into `And`/`Or` when a branch is constant.
pub(super) fn if_(test: Test, yes: Expr, no: Expr) -> Expr {
    match (yes, no) {
        (yes, no) if yes == no => yes,
        (Expr::Const(true), no) => or([Expr::Test(test), no]),
        (Expr::Const(false), no) => and([Expr::Test(test.not()), no]),
        (yes, Expr::Const(true)) => or([Expr::Test(test.not()), yes]),
        (yes, Expr::Const(false)) => and([Expr::Test(test), yes]),
        (yes, no) => Expr::If(test, Box::new(yes), Box::new(no)),
    }
}

fn test(load: Load, cmp: Cmp, k: u32, negated: bool) -> Expr {
    Expr::Test(Test { load, cmp, k, negated })
}

fn eq(load: Load, k: u32) -> Expr {
    if k > load.max() {
        FALSE
    } else {
        test(load, Cmp::Eq, k, false)
    }
}

fn ge(load: Load, k: u32) -> Expr {
    match k {
        0 => TRUE,
        k if k > load.max() => FALSE,
        k => test(load, Cmp::Ge, k, false),
    }
}

fn gt(load: Load, k: u32) -> Expr {
    if k >= load.max() {
        FALSE
    } else {
        test(load, Cmp::Gt, k, false)
    }
}

/// `A <= k` is `!(A > k)`.
fn le(load: Load, k: u32) -> Expr {
    if k >= load.max() {
        TRUE
    } else {
        test(load, Cmp::Gt, k, true)
    }
}

/// `A < k` is `!(A >= k)`.
fn lt(load: Load, k: u32) -> Expr {
    match k {
        0 => FALSE,
        k if k > load.max() => TRUE,
        k => test(load, Cmp::Ge, k, true),
    }
}

/// `lo <= A <= hi`.
fn in_range(load: Load, lo: u32, hi: u32) -> Expr {
    match lo.cmp(&hi) {
        std::cmp::Ordering::Greater => FALSE,
        std::cmp::Ordering::Equal => eq(load, lo),
        std::cmp::Ordering::Less => and([ge(load, lo), le(load, hi)]),
    }
}

/// Longest list of ranges tested one after the other; longer lists become a
/// binary search (one `jgt` halves the list), so a packet pays O(log n) tests.
const LINEAR_MAX: usize = 4;

/// `load` lies in one of the `arms`' ranges and its expression holds. Arms
/// are sorted, disjoint, inclusive `(lo, hi, then)`.
fn dispatch(load: Load, mut arms: Vec<(u32, u32, Expr)>) -> Expr {
    if arms.len() <= LINEAR_MAX {
        return or(arms
            .into_iter()
            .map(|(lo, hi, then)| and([in_range(load, lo, hi), then])));
    }
    let upper = arms.split_off(arms.len() / 2);
    // Past the last range of the lower half, only the upper half can hold A.
    let pivot = arms.last().map_or(0, |arm| arm.1);
    let split = Test {
        load,
        cmp: Cmp::Gt,
        k: pivot,
        negated: false,
    };
    if_(split, dispatch(load, upper), dispatch(load, arms))
}

/// Sorted, disjoint, non-adjacent ranges covering the same values as `ranges`
/// (reversed ranges dropped). `next` is `v + 1`, `None` at the top.
fn normalize<T: Ord + Copy>(ranges: impl Iterator<Item = (T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    let mut sorted: Vec<(T, T)> = ranges.filter(|(lo, hi)| lo <= hi).collect();
    sorted.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(sorted.len());
    for (lo, hi) in sorted {
        match out.last_mut() {
            // Overlapping or adjacent: extend.
            Some(last) if next(last.1).is_none_or(|after| lo <= after) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Where one address family keeps the fields the filters test.
struct Family {
    /// IPv4 (the transport header follows IHL*4 bytes) or IPv6 (40).
    v4: bool,
    /// The EtherType that announces it.
    ether_type: u16,
    /// IPv4 protocol / IPv6 Next Header.
    protocol: Load,
    /// IPv4's flags + fragment offset; a non-first fragment has no ports.
    fragment: Option<Load>,
    /// The address words, most significant first (1 for IPv4, 4 for IPv6).
    src: &'static [Load],
    dst: &'static [Load],
    sport: Load,
    dport: Load,
}

const fn net(size: Size, off: u32) -> Load {
    Load::Net { size, off }
}

/// RFC 791 header: protocol at 9, flags/fragment at 6, addresses at 12 and 16;
/// ports at the start of the payload, after IHL*4 bytes.
const IPV4: Family = Family {
    v4: true,
    ether_type: ETH_P_IP,
    protocol: net(Size::B, 9),
    fragment: Some(net(Size::H, 6)),
    src: &[net(Size::W, 12)],
    dst: &[net(Size::W, 16)],
    sport: Load::V4Transport { size: Size::H, off: 0 },
    dport: Load::V4Transport { size: Size::H, off: 2 },
};

/// RFC 8200 fixed header (40 bytes): Next Header at 6, addresses at 8 and 24.
/// No extension-header walk: ports are read right after the fixed header.
const IPV6: Family = Family {
    v4: false,
    ether_type: ETH_P_IPV6,
    protocol: net(Size::B, 6),
    fragment: None,
    src: &[net(Size::W, 8), net(Size::W, 12), net(Size::W, 16), net(Size::W, 20)],
    dst: &[net(Size::W, 24), net(Size::W, 28), net(Size::W, 32), net(Size::W, 36)],
    sport: net(Size::H, 40),
    dport: net(Size::H, 42),
};

/// The fragment-offset bits of IPv4's flags/fragment field.
const FRAGMENT_OFFSET_MASK: u32 = 0x1fff;

impl Family {
    /// A byte `off` bytes into the transport header.
    const fn transport_byte(&self, off: u32) -> Load {
        if self.v4 {
            Load::V4Transport { size: Size::B, off }
        } else {
            net(Size::B, 40 + off)
        }
    }
}

/// TCP's flags: byte 13 of its header (RFC 9293 §3.1).
const TCP_FLAGS_OFFSET: u32 = 13;

/// The filters as one tree: true when ANY filter keeps the packet.
///
/// Filters without an expression come first, as one tree over both
/// families; then each filter with one, in the order given: its own fields
/// (which ask for an IP packet, as an expression compiled for raw IP sees
/// only IP packets), then its program. A program that reads past the end of
/// a packet ends the whole program, dropping the packet, so nothing that
/// cannot fault is left behind one (`netwatch_api::filter::filters_keep`).
pub(super) fn lower(filters: &[CaptureFilter]) -> Expr {
    if filters.is_empty() || filters.iter().any(CaptureFilter::matches_everything) {
        return TRUE;
    }
    let (plain, with_expression): (Vec<&CaptureFilter>, Vec<&CaptureFilter>) =
        filters.iter().partition(|f| f.expression.is_none());
    let plain = if plain.is_empty() { FALSE } else { lower_ip(&plain) };
    let expressions = with_expression
        .into_iter()
        .enumerate()
        .map(|(n, filter)| and([lower_ip(&[filter]), Expr::Program(n)]));
    or(std::iter::once(plain).chain(expressions))
}

/// Filters (their fields other than an expression) for IP packets: true when
/// ANY keeps the packet; false for any packet that is not IPv4 or IPv6.
fn lower_ip(filters: &[&CaptureFilter]) -> Expr {
    // Filters that read less of the transport header first (none, ICMP's 2
    // bytes, the ports' 4, TCP's 14 for its flags): a packet cut short there
    // ends the program at the first filter that reads past its end, and every
    // filter after it needs as many bytes, so could not keep it either (see
    // the parent module). The sort is stable: otherwise in the order given.
    let mut ordered: Vec<&CaptureFilter> = filters.to_vec();
    ordered.sort_by_key(|f| f.transport_bytes());
    let per_family = |family: &Family| or(ordered.iter().map(|f| lower_filter(f, family)));
    let (v4, v6) = (per_family(&IPV4), per_family(&IPV6));
    let is = |family: &Family| Test {
        load: Load::Protocol,
        cmp: Cmp::Eq,
        k: u32::from(family.ether_type),
        negated: false,
    };
    // The two EtherTypes exclude each other: an IPv4 packet that fails the IPv4
    // branch is dropped without testing for IPv6.
    match (v4, v6) {
        (Expr::Const(false), v6) => and([Expr::Test(is(&IPV6)), v6]),
        (v4, Expr::Const(false)) => and([Expr::Test(is(&IPV4)), v4]),
        (v4, v6) => if_(is(&IPV4), v4, and([Expr::Test(is(&IPV6)), v6])),
    }
}

/// One filter, for packets of `family`.
fn lower_filter(filter: &CaptureFilter, family: &Family) -> Expr {
    let ports = filter.has_ports();
    let protocol = match (filter.protocol, filter.protocol.ip_number()) {
        // ICMP in an IPv6 packet, ICMPv6 in an IPv4 one: never.
        (protocol, _) if !protocol.in_family(family.v4) => FALSE,
        (_, Some(number)) => eq(family.protocol, u32::from(number)),
        (_, None) if ports => or([
            eq(family.protocol, u32::from(IPPROTO_TCP)),
            eq(family.protocol, u32::from(IPPROTO_UDP)),
        ]),
        (_, None) => TRUE,
    };
    if protocol == FALSE {
        return FALSE;
    }
    let whole_datagram = match family.fragment {
        Some(load) if filter.transport_bytes() > 0 => test(load, Cmp::Set, FRAGMENT_OFFSET_MASK, true),
        _ => TRUE,
    };
    // ICMP's type and code: with one of them set, the code (byte 1) is loaded
    // first all the same, so a message cut after its type keeps nothing, as the
    // evaluator, which then sees no type and code, keeps nothing.
    let (icmp_type, icmp_code) = (family.transport_byte(0), family.transport_byte(1));
    let icmp = match (filter.icmp_type, filter.icmp_code) {
        (None, None) => TRUE,
        (kind, code) => and([
            code.map_or(test(icmp_code, Cmp::Ge, 0, false), |c| eq(icmp_code, u32::from(c))),
            kind.map_or(TRUE, |t| eq(icmp_type, u32::from(t))),
        ]),
    };
    // TCP's flags: each flag that must be set is a `jset`, those that must be
    // clear one `jset` the other way; the byte stays in A between them.
    let tcp_flags = match filter.tcp_flags {
        None => TRUE,
        Some(flags) => {
            let load = family.transport_byte(TCP_FLAGS_OFFSET);
            let set = (0..8)
                .filter(|bit| flags.set & (1 << bit) != 0)
                .map(|bit| test(load, Cmp::Set, 1 << bit, false));
            let clear = (flags.clear != 0).then(|| test(load, Cmp::Set, u32::from(flags.clear), true));
            and(set.chain(clear))
        }
    };
    // `direction`: the packet type alone, on every interface.
    let way = match filter.direction {
        None => TRUE,
        Some(Way::Outbound) => eq(Load::PktType, u32::from(super::PACKET_OUTGOING)),
        Some(Way::Inbound) => lt(Load::PktType, u32::from(super::PACKET_OTHERHOST)),
    };
    // With one port field set, a direction may test the source port alone:
    // load the destination port first (`jge #0` always holds), so a header cut
    // between the two ports ends the program, as the evaluator, which sees no
    // ports then, drops it. Port-free filters have had their turn before.
    let both_ports = match (&filter.local_port, &filter.remote_port) {
        (Some(_), None) | (None, Some(_)) => test(family.dport, Cmp::Ge, 0, false),
        _ => TRUE,
    };
    let local_ip = |words: &[Load]| addresses(filter.local_ip.as_ref(), words);
    let remote_ip = |words: &[Load]| addresses(filter.remote_ip.as_ref(), words);
    let source_local = and([
        local_ip(family.src),
        remote_ip(family.dst),
        ports_in(filter.local_port.as_ref(), family.sport),
        ports_in(filter.remote_port.as_ref(), family.dport),
    ]);
    let destination_local = and([
        local_ip(family.dst),
        remote_ip(family.src),
        ports_in(filter.local_port.as_ref(), family.dport),
        ports_in(filter.remote_port.as_ref(), family.sport),
    ]);
    // Which side is local follows the packet's direction (`bpf::direction`).
    // When both orientations test the same (no side set, or both sides alike)
    // the direction cannot change the answer and is not loaded. Otherwise it
    // is tested after the fields, so that packets the fields reject pay nothing.
    let symmetric = filter.local_ip == filter.remote_ip && filter.local_port == filter.remote_port;
    let sides = if symmetric {
        source_local
    } else {
        or([
            and([source_local, source_may_be_local()]),
            and([destination_local, destination_may_be_local()]),
        ])
    };
    // Protocol and fragment first: the transport header is read only when it exists.
    and([protocol, whole_datagram, both_ports, icmp, tcp_flags, way, sides])
}

/// On loopback, whatever its type.
fn on_loopback() -> Expr {
    eq(Load::IfIndex, super::LOOPBACK_IFINDEX)
}

/// Not received by this host: sent, overheard or on loopback
/// (`pkt_type >= PACKET_OTHERHOST`, or loopback).
fn source_may_be_local() -> Expr {
    or([
        test(Load::PktType, Cmp::Ge, u32::from(super::PACKET_OTHERHOST), false),
        on_loopback(),
    ])
}

/// Not sent by this host: received, overheard or on loopback.
fn destination_may_be_local() -> Expr {
    or([
        test(Load::PktType, Cmp::Eq, u32::from(super::PACKET_OUTGOING), true),
        on_loopback(),
    ])
}

fn ports_in(set: Option<&PortSet>, load: Load) -> Expr {
    let Some(set) = set else { return TRUE };
    let ranges = set.ranges().iter().map(|r| (u32::from(r.lo), u32::from(r.hi)));
    let ranges = normalize(ranges, |p: u32| p.checked_add(1));
    dispatch(load, ranges.into_iter().map(|(lo, hi)| (lo, hi, TRUE)).collect())
}

/// The address in `words` (one word: IPv4, four: IPv6) is in `set`.
fn addresses(set: Option<&IpSet>, words: &[Load]) -> Expr {
    let Some(set) = set else { return TRUE };
    match words {
        [word] => {
            let ranges = normalize(set.v4(), |a: u32| a.checked_add(1));
            dispatch(*word, ranges.into_iter().map(|(lo, hi)| (lo, hi, TRUE)).collect())
        }
        [w0, w1, w2, w3] => {
            let words = [*w0, *w1, *w2, *w3];
            let ranges = normalize(set.v6(), |a: u128| a.checked_add(1));
            let (singles, spans): (Vec<_>, Vec<_>) = ranges.into_iter().partition(|(lo, hi)| lo == hi);
            let singles: Vec<[u32; 4]> = singles.into_iter().map(|(a, _)| split(a)).collect();
            let trie = if singles.is_empty() {
                FALSE
            } else {
                v6_trie(&words, &singles, 0)
            };
            or(std::iter::once(trie).chain(spans.into_iter().map(|(lo, hi)| v6_range(&words, lo, hi))))
        }
        _ => FALSE,
    }
}

/// An IPv6 address as four 32-bit words, most significant first (the order
/// of the loads at offsets 8, 12, 16, 20).
fn split(addr: u128) -> [u32; 4] {
    let b = addr.to_be_bytes();
    std::array::from_fn(|i| u32::from_be_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]))
}

/// The address is one of `addrs` (sorted, distinct): a trie on the words from
/// `depth` on, so a list of addresses in one /64 tests the shared words once.
fn v6_trie(words: &[Load; 4], addrs: &[[u32; 4]], depth: usize) -> Expr {
    if depth == 4 {
        return TRUE;
    }
    let arms = addrs
        .chunk_by(|a, b| a[depth] == b[depth])
        .map(|group| {
            let word = group[0][depth];
            (word, word, v6_trie(words, group, depth + 1))
        })
        .collect();
    dispatch(words[depth], arms)
}

/// `lo <= address <= hi`, compared word by word as 128-bit numbers.
fn v6_range(words: &[Load; 4], lo: u128, hi: u128) -> Expr {
    between(words, split(lo), split(hi), 0)
}

/// `lo[i..] <= words[i..] <= hi[i..]`, the words before `i` being equal to
/// those of both `lo` and `hi`.
fn between(w: &[Load; 4], lo: [u32; 4], hi: [u32; 4], i: usize) -> Expr {
    if i == 4 {
        return TRUE;
    }
    if lo[i] == hi[i] {
        return and([eq(w[i], lo[i]), between(w, lo, hi, i + 1)]);
    }
    // lo[i] < hi[i] from here (lo <= hi). An aligned range needs one word.
    if all(&lo[i + 1..], 0) && all(&hi[i + 1..], u32::MAX) {
        return in_range(w[i], lo[i], hi[i]);
    }
    or([
        // Strictly between the two ends: the rest does not matter.
        in_range(w[i], lo[i] + 1, hi[i] - 1),
        and([eq(w[i], lo[i]), at_least(w, lo, i + 1)]),
        and([eq(w[i], hi[i]), at_most(w, hi, i + 1)]),
    ])
}

/// `words[i..] >= lo[i..]`.
fn at_least(w: &[Load; 4], lo: [u32; 4], i: usize) -> Expr {
    if i == 4 {
        return TRUE;
    }
    if all(&lo[i + 1..], 0) {
        return ge(w[i], lo[i]);
    }
    or([gt(w[i], lo[i]), and([eq(w[i], lo[i]), at_least(w, lo, i + 1)])])
}

/// `words[i..] <= hi[i..]`.
fn at_most(w: &[Load; 4], hi: [u32; 4], i: usize) -> Expr {
    if i == 4 {
        return TRUE;
    }
    if all(&hi[i + 1..], u32::MAX) {
        return le(w[i], hi[i]);
    }
    or([lt(w[i], hi[i]), and([eq(w[i], hi[i]), at_most(w, hi, i + 1)])])
}

fn all(words: &[u32], value: u32) -> bool {
    words.iter().all(|&w| w == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: Load = Load::Net { size: Size::H, off: 40 };

    /// Evaluates the tree with each load's value given by `value`.
    fn eval(expr: &Expr, value: &impl Fn(Load) -> u32) -> bool {
        let holds = |t: &Test| {
            let a = value(t.load);
            let result = match t.cmp {
                Cmp::Eq => a == t.k,
                Cmp::Gt => a > t.k,
                Cmp::Ge => a >= t.k,
                Cmp::Set => a & t.k != 0,
            };
            result != t.negated
        };
        match expr {
            Expr::Const(b) => *b,
            Expr::Test(t) => holds(t),
            Expr::And(items) => items.iter().all(|e| eval(e, value)),
            Expr::Or(items) => items.iter().any(|e| eval(e, value)),
            Expr::If(t, yes, no) => eval(if holds(t) { yes } else { no }, value),
            Expr::Program(_) => unreachable!("no expressions here"),
        }
    }

    #[test]
    fn constants_fold() {
        let t = eq(PORT, 80);
        assert_eq!(and([TRUE, t.clone()]), t);
        assert_eq!(and([FALSE, t.clone()]), FALSE);
        assert_eq!(or([TRUE, t.clone()]), TRUE);
        assert_eq!(or([FALSE, t.clone(), t.clone()]), t);
        assert_eq!(and([]), TRUE);
        assert_eq!(or([]), FALSE);
        assert_eq!(in_range(PORT, 0, 65535), TRUE);
        assert_eq!(in_range(PORT, 5, 4), FALSE);
        assert_eq!(le(PORT, 65535), TRUE);
        assert_eq!(gt(PORT, 65535), FALSE);
        assert_eq!(eq(PORT, 65536), FALSE);
        // Nested joins flatten.
        let u = eq(PORT, 81);
        assert_eq!(or([t.clone(), or([u.clone(), t.clone()])]), Expr::Or(vec![t, u]));
    }

    #[test]
    fn normalize_merges_overlaps_and_neighbours() {
        let got = normalize(
            [(5u32, 9), (1, 3), (4, 4), (20, 30), (25, 26), (9, 2)].into_iter(),
            |v: u32| v.checked_add(1),
        );
        assert_eq!(got, [(1, 9), (20, 30)]);
        let top = normalize([(u32::MAX, u32::MAX), (0, u32::MAX)].into_iter(), |v: u32| {
            v.checked_add(1)
        });
        assert_eq!(top, [(0, u32::MAX)]);
    }

    #[test]
    fn dispatch_is_a_binary_search_that_keeps_its_meaning() {
        let ranges: Vec<(u32, u32)> = (0..50).map(|i| (i * 10, i * 10 + 3)).collect();
        let expr = dispatch(PORT, ranges.iter().map(|&(lo, hi)| (lo, hi, TRUE)).collect());
        assert!(matches!(expr, Expr::If(..)));
        for port in 0..600u32 {
            let expected = ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&port));
            assert_eq!(eval(&expr, &|_| port), expected, "{port}");
        }
    }

    #[test]
    fn v6_ranges_compare_as_128_bit_numbers() {
        let words = IPV6.src;
        let words = [words[0], words[1], words[2], words[3]];
        let value = |addr: u128| {
            let w = split(addr);
            move |load: Load| match load {
                Load::Net { off, .. } => w[usize::try_from((off - 8) / 4).unwrap()],
                _ => unreachable!(),
            }
        };
        let edges = [
            0u128,
            1,
            0xffff_fffe,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0001,
            0xffff_ffff_ffff_ffff,
            1 << 64,
            (1 << 64) + 1,
            (1 << 96) - 1,
            1 << 96,
            u128::MAX - 1,
            u128::MAX,
        ];
        for &lo in &edges {
            for &hi in edges.iter().filter(|&&hi| hi >= lo) {
                let expr = v6_range(&words, lo, hi);
                for &addr in &edges {
                    for probe in [addr.saturating_sub(1), addr, addr.saturating_add(1)] {
                        let expected = lo <= probe && probe <= hi;
                        assert_eq!(eval(&expr, &value(probe)), expected, "{lo:x}-{hi:x} {probe:x}");
                    }
                }
            }
        }
    }
}
