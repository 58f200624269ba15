//! netwatch's controller: the ARM-compatible REST API, the agent hub and the
//! state behind them (DESIGN §1, §4, §7).
//!
//! # Layout
//! - [`app`]: the API's configuration and the application state the routes
//!   and the hub share; [`errors`]: `HttpError`, ARM's error body on the way
//!   out; `extract`: the API's extractors; `clock`: times as kept and as shown.
//! - [`routes`]: the ARM-compatible HTTP API ([`routes::router`]): bootstrap,
//!   network watchers, packet captures and their operation monitors, VMs and the
//!   agent extension, scale sets and their keys, the merged pcapng of a capture
//!   over many hosts, storage accounts, file upload/download, Azure AD-style
//!   logins, the OpenAPI document, the agent channel's upgrade.
//! - [`hub`]: the connected agents and their channel: hellos register hosts
//!   (and join scale sets), reports go, in batches, to [`lifecycle`], which
//!   decides what they, a stop, or a lost agent do to a capture and settles
//!   its operations (`lifecycle::fleet`: captures over many hosts).
//! - [`merge`]: the streaming k-way merge of pcap files into one pcapng.
//! - [`auth`]: bearer tokens by digest and the middleware checking them;
//!   [`identity`]: the signed access tokens Azure's clients log in for.
//! - [`store`]: VMs, scale sets, network watchers, packet captures and long-running operations
//!   in SQLite or PostgreSQL, with the same SQL and migrations on both.
//! - [`handoff`]: parts of local accounts handed over by agents on this
//!   machine (a descriptor through a Unix socket, copied in the kernel).
//! - [`server`]: the configuration file and [`server::run`] (HTTPS);
//!   [`tls`]: the CA and certificate `netwatch up` makes.

pub mod accounts;
pub mod agent_builds;
pub mod alerting;
pub mod app;
pub mod auth;
mod clock;
pub mod errors;
mod extract;
pub mod handoff;
pub mod hub;
pub mod identity;
pub mod lifecycle;
pub mod live;
pub mod merge;
pub mod metrics;
pub mod replicas;
pub mod routes;
pub mod server;
pub mod store;
pub mod tls;
