//! The storage crate's integration tests (one test binary, STYLE 28): every
//! backend through the same suite ([`suite`]), the object stores against real
//! servers the tests start (Azurite, moto, fake-gcs-server: netwatch-testkit),
//! the local backend in a temporary directory.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]

mod azure;
mod gcs;
mod local;
mod s3;
mod suite;

use netwatch_storage::{AccountConfig, Backend};

/// The part size the tests use: the smallest S3 takes, so a 12 MiB body is 3 parts.
pub const PART_SIZE: u64 = 5 * 1024 * 1024;

/// The backend of the account `toml` configures, parsed as the controller parses it.
pub fn backend(toml: &str) -> Backend {
    let account: AccountConfig = toml::from_str(toml).unwrap_or_else(|err| panic!("{err}\n{toml}"));
    Backend::new(&account).unwrap()
}
