//! netwatch's capture engine: what every agent runs and what `netwatch capture`
//! exposes locally. AF_PACKET with a TPACKET_V3 memory-mapped ring, Azure's filters
//! compiled to classic BPF and run in the kernel, per-packet truncation in the
//! kernel, pcap files written from the ring in batches, and the limits (bytes,
//! time, packets, continuous ring of files) enforced here, each stop with its reason.
//!
//! It is not a protocol decoder and it does not talk to the controller: it takes a
//! validated [`CaptureConfig`] and returns a [`CaptureOutcome`].
//!
//! # Layout
//! - [`sys`]: the only unsafe code: socket, socket options, the mapped ring.
//! - [`bpf`]: filters → classic BPF program (pure), and an interpreter for tests.
//! - [`decode`]: a stored record's flow, for filtering records in user space.
//! - [`pcap`]: the file format: headers, a bounds-checked reader, crash repair.
//! - [`output`]: one file, standard output, or a ring of rotated files.
//! - [`session`]: one capture's life: open, run the ring into the output, stop.

pub mod bpf;
pub mod decode;
pub mod output;
pub mod pcap;
pub mod session;
pub mod sys;

pub use output::{ClosedFile, OutputSpec, Rotation};
pub use session::{
    Capture, CaptureConfig, CaptureError, CaptureOutcome, CaptureStats, Interface, Limits, OpenError, RingConfig,
    StopReason,
};
