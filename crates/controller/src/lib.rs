//! netwatch's controller: the ARM-compatible REST API, the agent hub and the
//! state behind them (DESIGN §1, §4, §7). Being built under issue 3; today it holds
//! the REST API and the state store (no agent hub yet).
//!
//! # Layout
//! - [`routes`]: the ARM-compatible HTTP API ([`routes::router`]): bootstrap
//!   routes, network watchers, packet captures, operation status.
//! - [`store`]: VMs, network watchers, packet captures and long-running operations
//!   in SQLite or PostgreSQL, with the same SQL and migrations on both.

pub mod auth;
pub mod hub;
pub mod identity;
pub mod routes;
pub mod server;
pub mod store;
pub mod tls;
