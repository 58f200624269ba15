//! netwatch's controller: the ARM-compatible REST API, the agent hub and the
//! state behind them (DESIGN §1, §4, §7). Being built under issue 3; today it holds
//! the state store.
//!
//! # Layout
//! - [`store`]: VMs, network watchers, packet captures and long-running operations
//!   in SQLite or PostgreSQL, with the same SQL and migrations on both.

pub mod store;
