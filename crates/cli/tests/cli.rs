//! netwatch-cli integration tests, one binary (STYLE §28).
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]

mod output;
