//! End-to-end tests of the `netwatch` binary (one test binary, STYLE 28). They run
//! as root: real captures in network namespaces made for each test.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]

mod agent_faults;
mod alerts;
mod capture;
mod console;
mod deployment;
mod faults;
mod fleet;
mod install;
mod live;
mod metrics;
mod package;
mod replicas;
mod schemathesis;
mod sdk;
mod service;
mod storage;
mod up;
mod upload_protocol;
mod util;
mod walkthrough;
