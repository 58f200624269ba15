//! netwatch's wire contract, shared by every other crate: Azure's packet-capture
//! filter syntax and its validation (and, as the controller grows, the ARM
//! resource model, resource ids and names, and the ARM error body).
//!
//! No I/O and no async runtime: the server (a 400 on PUT), the CLI (an error
//! before anything is sent) and the capture engine validate with this same code.
//!
//! # Layout
//! - [`filter`]: `PacketCaptureFilter` as it is on the wire, its validation into
//!   [`filter::CaptureFilter`], and a plain evaluator of what a filter keeps.

pub mod filter;
