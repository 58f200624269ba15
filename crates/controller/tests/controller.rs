//! The controller's integration tests (one test binary, STYLE 28).
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]

mod api;
mod bad_requests;
mod early_answers;
mod fleet_requests;
mod identity;
mod merge;
mod openapi;
mod resources;
mod store;
