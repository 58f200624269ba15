//! tcpdump expressions (netwatch's `bpfExpression` filter field) → checked
//! programs that read relative to the network header.
//!
//! The compiler is libpcap's own (`pcap_compile` on a `pcap_open_dead`
//! handle for raw IP, [`crate::libpcap`]), never a tcpdump process given the
//! user's text. Its program then moves to `SKF_NET_OFF` ([`crate::raw`]) and
//! passes [`Program::validate`](crate::Program::validate). Compiled for raw
//! IP, an expression sees the packet from its IP header: link-layer
//! primitives (`ether host`, `vlan`, `arp`, `inbound`) fail with libpcap's own
//! message, and packets that are not IPv4 or IPv6 never match one.

use crate::raw::RelocateError;

/// The longest expression taken, in bytes: far more than a filter needs, and
/// a bound on libpcap's work. Its optimiser grows faster than the text: an
/// `or` of 260 ports (3 KB) took 2.9 s here, 1 KB of them 0.3 s.
pub const MAX_LEN: usize = 1024;

/// Why an expression is not a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionError {
    /// libpcap refused it: its own message (`syntax error`, `unknown host 'x'`, …).
    #[error("libpcap: {0}")]
    Syntax(String),
    /// libpcap compiled it to something netwatch does not run.
    #[error(transparent)]
    Unsupported(#[from] RelocateError),
    /// libpcap is not there to compile it: what loading it said.
    #[error(
        "cannot compile tcpdump expressions here: libpcap is not installed ({0}); \
         install it (Debian and Ubuntu: apt-get install libpcap0.8) where the expression is compiled"
    )]
    Unavailable(String),
}

impl ExpressionError {
    /// Whether the expression itself is at fault (not the host it was compiled on).
    pub const fn is_users(&self) -> bool {
        !matches!(self, Self::Unavailable(_))
    }
}

/// What can be said of an expression's text without compiling it: not
/// empty, at most [`MAX_LEN`] bytes, no control characters (libpcap reads a
/// C string; a NUL would cut it short unseen).
pub fn check_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("is empty: write a tcpdump expression, such as \"tcp port 22\", or leave it out".to_owned());
    }
    if text.len() > MAX_LEN {
        return Err(format!(
            "is {} bytes long, more than {MAX_LEN}: use netwatch's fields or several filters",
            text.len()
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(format!(
            "has the control character {c:?}: write the expression on plain lines"
        ));
    }
    Ok(())
}

/// Compiles `text` with libpcap for raw IP and moves it to the network
/// header; the program returns non-zero for a packet the expression keeps.
#[cfg(feature = "libpcap")]
pub fn compile(text: &str) -> Result<crate::Program, ExpressionError> {
    check_text(text).map_err(|detail| ExpressionError::Syntax(format!("expression {detail}")))?;
    let raw = crate::libpcap::compile_raw(text)?;
    Ok(crate::raw::relocate(&raw)?)
}
