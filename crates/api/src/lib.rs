//! netwatch's wire contract, shared by every other crate: the ARM resource
//! model (names, resource ids, locations, the packet-capture JSON and its
//! validation), Azure's packet-capture filter syntax, and the ARM error body.
//!
//! No I/O and no async runtime: the server (a 400 on PUT), the CLI (an error
//! before anything is sent) and the capture engine validate with this same code.
//!
//! # Layout
//! - [`filter`]: `PacketCaptureFilter` as it is on the wire (Azure's fields and
//!   netwatch's), its validation into [`filter::CaptureFilter`], and the
//!   reference evaluators of what a filter list keeps.
//! - [`resource`]: ARM names, resource groups, subscription ids, resource types,
//!   resource ids (typed for the kinds DESIGN.md §2 lists) and canonical locations.
//! - [`packet_capture`]: the packet-capture wire types (request, result, list,
//!   query status with netwatch's extras), [`packet_capture::parse_packet_capture`]
//!   and validation into [`packet_capture::ValidatedCapture`].
//! - [`error`]: the ARM error body and [`error::ApiError`], which knows its HTTP
//!   status, ARM code and target.
//! - [`agent`]: the agent channel's messages and the netwatch-only paths
//!   agents and downloads use.
//! - [`api_version`]: the `api-version` query parameter's check.

pub mod agent;
pub mod alerts;
pub mod api_version;
pub mod error;
pub mod filter;
pub mod packet_capture;
pub mod recorder;
pub mod resource;
pub mod trigger;
