//! netwatch's storage accounts (DESIGN §3 "Files", §7): the configured places
//! capture files land in, each shown by the API as a
//! `Microsoft.Storage/storageAccounts` resource.
//!
//! Skeleton: the local-directory backend and its reads/writes come next.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One configured storage account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The account's name, as ARM names storage accounts (3–24 lower-case letters and digits).
    pub name: String,
    /// Where its files are kept.
    #[serde(flatten)]
    pub kind: AccountKind,
}

/// The backend of a storage account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AccountKind {
    /// A directory on the controller's machine.
    Local { path: PathBuf },
}

/// The configured storage accounts.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    accounts: Vec<AccountConfig>,
}

impl Accounts {
    pub fn new(accounts: Vec<AccountConfig>) -> Self {
        Self { accounts }
    }

    /// The account named `name` (ARM names compare case-insensitively).
    pub fn get(&self, name: &str) -> Option<&AccountConfig> {
        self.accounts
            .iter()
            .find(|account| account.name.eq_ignore_ascii_case(name))
    }

    pub fn list(&self) -> &[AccountConfig] {
        &self.accounts
    }
}
