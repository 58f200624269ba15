//! libpcap's expression compiler, loaded at run time: `pcap_compile` on a
//! `pcap_open_dead(DLT_RAW, …)` handle (pcap_compile(3PCAP), pcap_open_dead(3PCAP)).
//!
//! Loaded with `dlopen` (libloading) the first time an expression is
//! compiled, never linked: the `netwatch` binary runs on hosts without
//! libpcap, and only compiling an expression asks for it. The `pcap` crate
//! would link it at build and load time, so every host would need it.
//!
//! # Safety
//! This module is the crate's only unsafe code. It calls five functions of
//! libpcap's stable C API, declared here with the prototypes of pcap/pcap.h
//! (1.x; Debian's soname `libpcap.so.0.8` is libpcap 1.x): `pcap_open_dead`,
//! `pcap_compile`, `pcap_geterr`, `pcap_freecode`, `pcap_close`. It keeps
//! these invariants:
//! - the library stays loaded as long as its function pointers exist: both
//!   live in one [`Pcap`] in a `static`, never dropped;
//! - a handle is used only between `pcap_open_dead` and the `pcap_close` its
//!   guard makes on drop, and by one thread at a time (compiles are serialised
//!   by a mutex: older libpcaps' parsers kept global state);
//! - a compiled program is copied out before `pcap_freecode` frees it, and
//!   freed exactly once;
//! - strings passed in are NUL-terminated and outlive the call; the error
//!   string read back is copied before the handle is used again.

#![allow(
    unsafe_code,
    reason = "calls libpcap's compiler through dlopen; see the module's Safety section"
)]

use std::ffi::{CStr, CString, c_char, c_int, c_uint};
use std::sync::{Mutex, OnceLock, PoisonError};

use libloading::Library;

use crate::Insn;
use crate::expression::ExpressionError;

/// Sonames tried in turn: Debian and Ubuntu's, then the upstream one (Fedora, Arch).
const SONAMES: [&str; 2] = ["libpcap.so.0.8", "libpcap.so.1"];
/// `DLT_RAW` on Linux (pcap/dlt.h; 14 on OpenBSD only): the packet starts at its IP header.
const DLT_RAW: c_int = 12;
/// What a compiled program returns for a kept packet: tcpdump's default snap length.
const SNAPLEN: c_int = 262_144;
/// `PCAP_NETMASK_UNKNOWN` (pcap/pcap.h): `ip broadcast` is then an error, as with tcpdump -i any.
const NETMASK_UNKNOWN: u32 = 0xffff_ffff;

/// `struct bpf_insn` (pcap/bpf.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct BpfInsn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// `struct bpf_program` (pcap/bpf.h).
#[repr(C)]
#[derive(Debug)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut BpfInsn,
}

/// `pcap_t`, opaque.
#[repr(C)]
struct PcapT {
    _private: [u8; 0],
}

type OpenDead = unsafe extern "C" fn(c_int, c_int) -> *mut PcapT;
type Compile = unsafe extern "C" fn(*mut PcapT, *mut BpfProgram, *const c_char, c_int, u32) -> c_int;
type GetErr = unsafe extern "C" fn(*mut PcapT) -> *mut c_char;
type FreeCode = unsafe extern "C" fn(*mut BpfProgram);
type Close = unsafe extern "C" fn(*mut PcapT);

/// The loaded library and the functions used, valid while `_library` is loaded.
struct Pcap {
    _library: Library,
    open_dead: OpenDead,
    compile: Compile,
    geterr: GetErr,
    freecode: FreeCode,
    close: Close,
}

/// Loaded once, on the first compile; an error is kept too (installing
/// libpcap later takes a restart).
static PCAP: OnceLock<Result<Pcap, String>> = OnceLock::new();
/// One compile at a time.
static COMPILING: Mutex<()> = Mutex::new(());

fn load() -> Result<Pcap, String> {
    let mut failures = Vec::new();
    for name in SONAMES {
        // SAFETY: loading libpcap runs its ELF initialisers, which set up only
        // libpcap's own state; nothing else of the process is touched.
        match unsafe { Library::new(name) } {
            Ok(library) => return functions(library).map_err(|e| format!("{name}: {e}")),
            Err(error) => failures.push(error.to_string()),
        }
    }
    Err(failures.join("; "))
}

/// The five functions of `library`, with the prototypes of pcap/pcap.h.
fn functions(library: Library) -> Result<Pcap, libloading::Error> {
    // SAFETY: the type is pcap_open_dead's prototype, `pcap_t *(int, int)`.
    let open_dead: OpenDead = *unsafe { library.get::<OpenDead>(b"pcap_open_dead\0") }?;
    // SAFETY: `int (pcap_t *, struct bpf_program *, const char *, int, bpf_u_int32)`.
    let compile: Compile = *unsafe { library.get::<Compile>(b"pcap_compile\0") }?;
    // SAFETY: `char *(pcap_t *)`.
    let geterr: GetErr = *unsafe { library.get::<GetErr>(b"pcap_geterr\0") }?;
    // SAFETY: `void (struct bpf_program *)`.
    let freecode: FreeCode = *unsafe { library.get::<FreeCode>(b"pcap_freecode\0") }?;
    // SAFETY: `void (pcap_t *)`.
    let close: Close = *unsafe { library.get::<Close>(b"pcap_close\0") }?;
    Ok(Pcap {
        _library: library,
        open_dead,
        compile,
        geterr,
        freecode,
        close,
    })
}

/// A `pcap_t` from `pcap_open_dead`, closed on drop.
struct HandleGuard<'a> {
    pcap: &'a Pcap,
    handle: *mut PcapT,
}

impl Drop for HandleGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle came from pcap_open_dead, is not null, and is closed once, here.
        unsafe { (self.pcap.close)(self.handle) };
    }
}

/// `text` compiled (optimised) for raw IP: libpcap's instructions, as they are.
pub fn compile_raw(text: &str) -> Result<Vec<Insn>, ExpressionError> {
    let pcap = PCAP
        .get_or_init(load)
        .as_ref()
        .map_err(|error| ExpressionError::Unavailable(error.clone()))?;
    let text = CString::new(text).map_err(|_| ExpressionError::Syntax("the expression holds a NUL byte".to_owned()))?;
    let _one_at_a_time = COMPILING.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: pcap_open_dead takes two ints and returns a new handle or NULL (checked next).
    let handle = unsafe { (pcap.open_dead)(DLT_RAW, SNAPLEN) };
    if handle.is_null() {
        return Err(ExpressionError::Unavailable(
            "pcap_open_dead(DLT_RAW) failed".to_owned(),
        ));
    }
    let guard = HandleGuard { pcap, handle };
    let mut program = BpfProgram {
        bf_len: 0,
        bf_insns: std::ptr::null_mut(),
    };
    // SAFETY: the handle is live (the guard holds it); `program` is a valid
    // place for the result; `text` is NUL-terminated and outlives the call.
    let rc = unsafe { (pcap.compile)(guard.handle, &raw mut program, text.as_ptr(), 1, NETMASK_UNKNOWN) };
    if rc != 0 {
        // SAFETY: the handle is live; pcap_geterr returns its error buffer.
        let buffer = unsafe { (pcap.geterr)(guard.handle) };
        if buffer.is_null() {
            return Err(ExpressionError::Syntax("the expression does not compile".to_owned()));
        }
        // SAFETY: the buffer is the live handle's NUL-terminated error text;
        // it is copied at once, before the handle is closed.
        let message = unsafe { CStr::from_ptr(buffer) };
        return Err(ExpressionError::Syntax(message.to_string_lossy().into_owned()));
    }
    let len = usize::try_from(program.bf_len).unwrap_or(0);
    let insns = if program.bf_insns.is_null() || len == 0 {
        Vec::new()
    } else {
        // SAFETY: after a successful pcap_compile, `bf_insns` points to
        // `bf_len` instructions that stay valid until pcap_freecode below.
        let compiled = unsafe { std::slice::from_raw_parts(program.bf_insns, len) };
        compiled
            .iter()
            .map(|i| Insn {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect()
    };
    // SAFETY: `program` was filled by pcap_compile and is freed once, here.
    unsafe { (pcap.freecode)(&raw mut program) };
    Ok(insns)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libpcap0.8 is installed where tests run (scripts/test.sh).
    #[test]
    fn compiles_what_tcpdump_compiles_and_says_what_it_refuses() {
        let insns = compile_raw("tcp port 22").unwrap_or_else(|e| panic!("{e} (apt-get install libpcap0.8)"));
        let text = crate::Program::from_insns(insns).to_bytecode();
        // `tcpdump -r raw.pcap -ddd 'tcp port 22'`, a file of link type RAW.
        assert!(text.starts_with("23,48 0 0 0,84 0 0 240,21 0 6 96,"), "{text}");
        for (expression, message) in [
            ("tcp port", "syntax error"),
            ("ether host 1:2:3:4:5:6", "ethernet addresses supported only on"),
            ("vlan", "no VLAN support"),
            ("port 99999", "illegal port number 99999 > 65535"),
        ] {
            match compile_raw(expression) {
                Err(ExpressionError::Syntax(got)) => assert!(got.contains(message), "{expression}: {got}"),
                other => panic!("{expression}: {other:?}"),
            }
        }
        assert!(matches!(compile_raw("ip\0or arp"), Err(ExpressionError::Syntax(_))));
    }
}
