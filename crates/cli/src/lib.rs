//! netwatch's az-shaped command line (DESIGN §5): the commands of Azure's
//! "manage packet captures with the Azure CLI" guide with `az` replaced by
//! `netwatch`, the same flags, and the same output as az prints.
//!
//! # Layout
//! - [`output`]: az's output formats (`json`, `jsonc`, `table`, `tsv`, `yaml`,
//!   `none`) and `--query` (JMESPath), byte for byte as az prints them.

pub mod output;
