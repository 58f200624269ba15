//! pcapng blocks as the merge writes them: little-endian, one section, each block
//! appended to an output buffer. Not a reader, and only the blocks and options the
//! merge uses.
//!
//! Format: draft-ietf-opsawg-pcapng
//! (<https://datatracker.ietf.org/doc/draft-ietf-opsawg-pcapng/>): §3.1 block
//! layout, §3.5 options, §4.1 SHB, §4.2 IDB, §4.3 EPB, §4.6 ISB. Every block is
//! `type, total length, body, total length` with the body padded to 32 bits; every
//! option `code, length, value` padded to 32 bits; an option list ends with
//! `opt_endofopt`. A text option's value is UTF-8 without a terminating NUL.

use super::MergeError;

/// The longest option value pcapng can carry (its length is a `u16`).
pub const MAX_OPTION_LEN: usize = u16::MAX as usize;

const SHB_TYPE: u32 = 0x0A0D_0D0A;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const IDB_TYPE: u32 = 1;
const ISB_TYPE: u32 = 5;
const EPB_TYPE: u32 = 6;

const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const IF_FILTER: u16 = 11;
const IF_OS: u16 = 12;
const EPB_FLAGS: u16 = 2;
const ISB_STARTTIME: u16 = 2;
const ISB_ENDTIME: u16 = 3;
const ISB_IFRECV: u16 = 4;
const ISB_IFDROP: u16 = 5;

/// `if_tsresol` 9: timestamps count nanoseconds, what netwatch's agents write.
const TSRESOL_NANOS: u8 = 9;
/// First byte of an `if_filter` value saying the rest is a libpcap filter string.
const FILTER_STRING: u8 = 0;

/// Fixed part of an EPB before the packet data: type, length, interface id,
/// timestamp (high, low), captured and original lengths.
const EPB_HEAD_LEN: usize = 28;
/// What follows an EPB's padded data: `epb_flags` (8 bytes), `opt_endofopt` (4)
/// and the trailing total length (4).
const EPB_TAIL_LEN: usize = 16;

/// Bytes needed to pad `len` to a multiple of 4.
const fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// The length of an EPB carrying `caplen` bytes of packet data.
pub const fn epb_len(caplen: usize) -> usize {
    EPB_HEAD_LEN + caplen + pad4(caplen) + EPB_TAIL_LEN
}

/// A block's options as they are encoded, checked against [`MAX_OPTION_LEN`].
#[derive(Debug, Default)]
pub struct Options(Vec<u8>);

impl Options {
    fn raw(&mut self, code: u16, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len16 = u16::try_from(len).expect("option lengths are checked by the callers");
        self.0.extend_from_slice(&code.to_le_bytes());
        self.0.extend_from_slice(&len16.to_le_bytes());
        for part in parts {
            self.0.extend_from_slice(part);
        }
        self.0.resize(self.0.len() + pad4(len), 0);
    }

    /// A text option; empty text is left out, as pcapng readers expect.
    pub fn text(&mut self, code: u16, what: &'static str, text: &str) -> Result<(), MergeError> {
        self.prefixed_text(code, what, &[], text)
    }

    /// A text option whose value starts with `prefix` (`if_filter`'s type byte).
    fn prefixed_text(&mut self, code: u16, what: &'static str, prefix: &[u8], text: &str) -> Result<(), MergeError> {
        if text.is_empty() {
            return Ok(());
        }
        let len = prefix.len() + text.len();
        if len > MAX_OPTION_LEN {
            return Err(MergeError::OptionTooLong { option: what, len });
        }
        self.raw(code, &[prefix, text.as_bytes()]);
        Ok(())
    }

    /// A 64-bit counter.
    fn u64(&mut self, code: u16, value: u64) {
        self.raw(code, &[&value.to_le_bytes()]);
    }

    /// A timestamp in the EPB's layout: high 32 bits, then low 32 bits
    /// (draft-ietf-opsawg-pcapng §4.6, `isb_starttime`).
    fn timestamp(&mut self, code: u16, ts: u64) {
        let (high, low) = split_ts(ts);
        self.raw(code, &[&high.to_le_bytes(), &low.to_le_bytes()]);
    }

    /// Appends the options and `opt_endofopt` (only when there are options).
    fn finish_into(&self, body: &mut Vec<u8>) {
        if !self.0.is_empty() {
            body.extend_from_slice(&self.0);
            body.extend_from_slice(&OPT_ENDOFOPT.to_le_bytes());
            body.extend_from_slice(&0u16.to_le_bytes());
        }
    }
}

fn split_ts(ts: u64) -> (u32, u32) {
    let high = u32::try_from(ts >> 32).expect("a u64 shifted right by 32 fits in u32");
    let low = u32::try_from(ts & u64::from(u32::MAX)).expect("masked to 32 bits");
    (high, low)
}

/// Appends a block: type, total length, `body` (already padded), total length.
fn push_block(out: &mut Vec<u8>, block_type: u32, body: &[u8]) {
    debug_assert_eq!(body.len() % 4, 0, "block bodies are padded to 32 bits");
    let total = u32::try_from(12 + body.len()).expect("blocks the merge writes are far below 4 GiB");
    out.extend_from_slice(&block_type.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&total.to_le_bytes());
}

/// The Section Header Block: little-endian, version 1.0, section length unknown
/// (-1: the merge streams, so it cannot know it), then `opt_comment` and
/// `shb_userappl`.
pub fn section_header(comment: &str, user_appl: &str) -> Result<Vec<u8>, MergeError> {
    let mut options = Options::default();
    options.text(OPT_COMMENT, "the section's comment", comment)?;
    options.text(SHB_USERAPPL, "shb_userappl", user_appl)?;
    let mut body = Vec::with_capacity(16 + options.0.len() + 4);
    body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&(-1i64).to_le_bytes());
    options.finish_into(&mut body);
    let mut out = Vec::with_capacity(body.len() + 12);
    push_block(&mut out, SHB_TYPE, &body);
    Ok(out)
}

/// The options of an interface's IDB, encoded before its link type is known
/// (which needs its first file): `if_name`, `if_description`, `if_filter` (a
/// libpcap-style string), `if_tsresol` (nanoseconds), `if_os`.
pub fn interface_options(name: &str, description: &str, filter: &str, os: &str) -> Result<Options, MergeError> {
    let mut options = Options::default();
    options.text(IF_NAME, "if_name", name)?;
    options.text(IF_DESCRIPTION, "if_description", description)?;
    options.prefixed_text(IF_FILTER, "if_filter", &[FILTER_STRING], filter)?;
    options.raw(IF_TSRESOL, &[&[TSRESOL_NANOS]]);
    options.text(IF_OS, "if_os", os)?;
    Ok(options)
}

/// Appends an Interface Description Block.
pub fn push_interface(out: &mut Vec<u8>, link_type: u16, snaplen: u32, options: &Options) {
    let mut body = Vec::with_capacity(8 + options.0.len() + 4);
    body.extend_from_slice(&link_type.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&snaplen.to_le_bytes());
    options.finish_into(&mut body);
    push_block(out, IDB_TYPE, &body);
}

/// `epb_flags` direction bits (0-1), draft-ietf-opsawg-pcapng §4.3.1.
pub const FLAGS_INBOUND: u32 = 1;
pub const FLAGS_OUTBOUND: u32 = 2;

/// Appends an Enhanced Packet Block with `epb_flags`; the hot path, so one
/// fixed-size head, the data, and one fixed-size tail.
#[inline]
pub fn push_packet(out: &mut Vec<u8>, interface: u32, ts: u64, data: &[u8], orig_len: u32, flags: u32) {
    let caplen = data.len();
    let total = u32::try_from(epb_len(caplen)).expect("the reader caps records far below 4 GiB");
    let caplen32 = u32::try_from(caplen).expect("the reader caps records far below 4 GiB");
    let (high, low) = split_ts(ts);
    let mut head = [0u8; EPB_HEAD_LEN];
    head[0..4].copy_from_slice(&EPB_TYPE.to_le_bytes());
    head[4..8].copy_from_slice(&total.to_le_bytes());
    head[8..12].copy_from_slice(&interface.to_le_bytes());
    head[12..16].copy_from_slice(&high.to_le_bytes());
    head[16..20].copy_from_slice(&low.to_le_bytes());
    head[20..24].copy_from_slice(&caplen32.to_le_bytes());
    head[24..28].copy_from_slice(&orig_len.to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(data);
    out.extend_from_slice(&[0u8; 3][..pad4(caplen)]);
    let mut tail = [0u8; EPB_TAIL_LEN];
    tail[0..2].copy_from_slice(&EPB_FLAGS.to_le_bytes());
    tail[2..4].copy_from_slice(&4u16.to_le_bytes());
    tail[4..8].copy_from_slice(&flags.to_le_bytes());
    // 8..12: opt_endofopt, all zero
    tail[12..16].copy_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&tail);
}

/// What an Interface Statistics Block says about one interface.
#[derive(Debug, Default)]
pub struct Statistics<'a> {
    /// First and last packet timestamps, when there were packets.
    pub span: Option<(u64, u64)>,
    pub received: Option<u64>,
    pub dropped: Option<u64>,
    /// Why the interface's packets end early, if they do.
    pub comment: Option<&'a str>,
}

/// Appends an Interface Statistics Block, stamped with the last packet's time
/// (0 without packets). Its comment is cut to what an option holds: it is ours,
/// made of an error chain, and losing its tail beats losing the block.
pub fn push_statistics(out: &mut Vec<u8>, interface: u32, stats: &Statistics<'_>) {
    let mut options = Options::default();
    if let Some(comment) = stats.comment {
        let mut end = comment.len().min(MAX_OPTION_LEN);
        while !comment.is_char_boundary(end) {
            end -= 1;
        }
        options.raw(OPT_COMMENT, &[&comment.as_bytes()[..end]]);
    }
    if let Some((start, end)) = stats.span {
        options.timestamp(ISB_STARTTIME, start);
        options.timestamp(ISB_ENDTIME, end);
    }
    if let Some(received) = stats.received {
        options.u64(ISB_IFRECV, received);
    }
    if let Some(dropped) = stats.dropped {
        options.u64(ISB_IFDROP, dropped);
    }
    let (high, low) = split_ts(stats.span.map_or(0, |(_, end)| end));
    let mut body = Vec::with_capacity(12 + options.0.len() + 4);
    body.extend_from_slice(&interface.to_le_bytes());
    body.extend_from_slice(&high.to_le_bytes());
    body.extend_from_slice(&low.to_le_bytes());
    options.finish_into(&mut body);
    push_block(out, ISB_TYPE, &body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epb_is_padded_and_sized() {
        for caplen in 0..8 {
            let mut out = Vec::new();
            push_packet(&mut out, 3, 0x1_0000_0002, &vec![0xAB; caplen], 100, FLAGS_OUTBOUND);
            assert_eq!(out.len(), epb_len(caplen));
            assert_eq!(out.len() % 4, 0);
            assert_eq!(out[4..8], out[out.len() - 4..]);
            assert_eq!(u32::from_le_bytes(out[12..16].try_into().unwrap()), 1);
            assert_eq!(u32::from_le_bytes(out[16..20].try_into().unwrap()), 2);
            let flags_at = EPB_HEAD_LEN + caplen + pad4(caplen);
            assert_eq!(out[flags_at..flags_at + 8], [2, 0, 4, 0, 2, 0, 0, 0]);
        }
    }

    #[test]
    fn long_text_is_refused_not_cut() {
        let long = "x".repeat(MAX_OPTION_LEN);
        assert!(interface_options("a", "b", "", "Linux").is_ok());
        assert!(section_header(&long, "").is_ok());
        let err = interface_options("a", "b", &long, "Linux").unwrap_err();
        assert!(matches!(err, MergeError::OptionTooLong { option: "if_filter", len } if len == MAX_OPTION_LEN + 1));
    }

    #[test]
    fn statistics_comment_is_cut_at_a_character() {
        let comment = "é".repeat(MAX_OPTION_LEN);
        let mut out = Vec::new();
        push_statistics(
            &mut out,
            0,
            &Statistics {
                comment: Some(&comment),
                ..Statistics::default()
            },
        );
        let len = usize::from(u16::from_le_bytes([out[22], out[23]]));
        assert_eq!(len, MAX_OPTION_LEN - 1);
        assert!(std::str::from_utf8(&out[24..24 + len]).is_ok());
    }
}
