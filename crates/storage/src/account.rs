//! The configured storage accounts: their names (ARM's storage account rule),
//! resource groups and backends, as the deployment's configuration file
//! states them (STYLE 19, 20).
//!
//! A name is checked when the configuration is parsed ([`AccountConfig`]'s
//! `Deserialize`) or by [`Accounts::try_new`]; past that every account has a
//! valid, unique name.

use std::path::PathBuf;

use netwatch_api::resource::ResourceGroupName;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::Backend;

/// The resource group of an account whose configuration names none: its id is
/// `/subscriptions/{s}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/{name}`.
pub const DEFAULT_RESOURCE_GROUP: &str = "netwatch";

/// Shortest and longest storage account name (ARM's rule for `Microsoft.Storage`).
const NAME_LENGTH: std::ops::RangeInclusive<usize> = 3..=24;

/// One configured storage account.
///
/// Unknown keys are refused by [`AccountKind`]: serde's `deny_unknown_fields`
/// does not work on a struct with a flattened field (it refuses every key the
/// flattened part reads), so the flattened enum, which sees the keys left
/// over, refuses them instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountConfig {
    /// The account's name, as ARM names storage accounts: 3–24 lower-case
    /// letters and digits (checked when parsed).
    #[serde(deserialize_with = "account_name")]
    pub name: String,
    /// The resource group its ARM id is in; default [`DEFAULT_RESOURCE_GROUP`].
    #[serde(default = "default_resource_group")]
    pub resource_group: ResourceGroupName,
    /// Where its files are kept.
    #[serde(flatten)]
    pub kind: AccountKind,
}

impl AccountConfig {
    /// An account named `name` in [`DEFAULT_RESOURCE_GROUP`], its name checked.
    pub fn new(name: &str, kind: AccountKind) -> Result<Self, AccountNameError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            resource_group: default_resource_group(),
            kind,
        })
    }
}

/// The backend of a storage account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum AccountKind {
    /// A directory on the controller's machine, created on first upload.
    Local { path: PathBuf },
}

impl AccountKind {
    /// What the API shows as the account's kind (`local`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Local { .. } => "local",
        }
    }
}

fn default_resource_group() -> ResourceGroupName {
    ResourceGroupName::parse("resource_group", DEFAULT_RESOURCE_GROUP).expect("the default resource group is valid")
}

fn account_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    check_name(&name).map_err(D::Error::custom)?;
    Ok(name)
}

/// A storage account name that breaks ARM's rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountNameError {
    #[error("storage account name {name:?} is {length} characters long: names are 3-24 lower-case letters and digits")]
    Length { name: String, length: usize },
    #[error("storage account name {name:?} has the character {found:?}: names are 3-24 lower-case letters and digits")]
    Character { name: String, found: char },
}

/// Checks `name` against ARM's storage account rule.
pub fn check_name(name: &str) -> Result<(), AccountNameError> {
    if let Some(found) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit())) {
        return Err(AccountNameError::Character {
            name: name.to_owned(),
            found,
        });
    }
    if !NAME_LENGTH.contains(&name.len()) {
        return Err(AccountNameError::Length {
            name: name.to_owned(),
            length: name.len(),
        });
    }
    Ok(())
}

/// A set of accounts that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountsError {
    #[error(transparent)]
    Name(#[from] AccountNameError),
    #[error("storage account {0:?} is configured twice: account names must be unique")]
    Duplicate(String),
}

/// The configured storage accounts, each with its backend.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    accounts: Vec<AccountConfig>,
    /// `backends[i]` serves `accounts[i]`.
    backends: Vec<Backend>,
}

impl Accounts {
    /// The accounts `accounts`, whose names were checked when they were
    /// parsed (use [`Accounts::try_new`] for accounts built by hand).
    pub fn new(accounts: Vec<AccountConfig>) -> Self {
        let backends = accounts.iter().map(|account| Backend::new(&account.kind)).collect();
        Self { accounts, backends }
    }

    /// The accounts `accounts`, once their names are checked valid and unique.
    pub fn try_new(accounts: Vec<AccountConfig>) -> Result<Self, AccountsError> {
        for (i, account) in accounts.iter().enumerate() {
            check_name(&account.name)?;
            if accounts[..i].iter().any(|other| other.name == account.name) {
                return Err(AccountsError::Duplicate(account.name.clone()));
            }
        }
        Ok(Self::new(accounts))
    }

    /// The account named `name` (ARM names compare case-insensitively).
    pub fn get(&self, name: &str) -> Option<&AccountConfig> {
        self.position(name).map(|i| &self.accounts[i])
    }

    /// The backend of the account named `name`.
    pub fn storage(&self, name: &str) -> Option<&Backend> {
        self.position(name).map(|i| &self.backends[i])
    }

    /// Every account, in configuration order.
    pub fn list(&self) -> &[AccountConfig] {
        &self.accounts
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.accounts
            .iter()
            .position(|account| account.name.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(name: &str) -> AccountConfig {
        AccountConfig::new(name, AccountKind::Local { path: "/srv".into() }).unwrap()
    }

    #[test]
    fn names_follow_arm_rule() {
        for good in ["abc", "acct1", "a23456789012345678901234"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        let rows = [
            (
                "ab",
                "storage account name \"ab\" is 2 characters long: names are 3-24 lower-case letters and digits",
            ),
            (
                "a234567890123456789012345",
                "storage account name \"a234567890123456789012345\" is 25 characters long: names are 3-24 lower-case letters and digits",
            ),
            (
                "Acct",
                "storage account name \"Acct\" has the character 'A': names are 3-24 lower-case letters and digits",
            ),
            (
                "my-acct",
                "storage account name \"my-acct\" has the character '-': names are 3-24 lower-case letters and digits",
            ),
            (
                "",
                "storage account name \"\" is 0 characters long: names are 3-24 lower-case letters and digits",
            ),
        ];
        for (bad, message) in rows {
            assert_eq!(check_name(bad).unwrap_err().to_string(), message, "{bad}");
        }
    }

    #[test]
    fn config_parses_with_defaults_and_checks_names() {
        let account: AccountConfig =
            serde_json::from_str(r#"{"name":"captures","kind":"local","path":"/var/lib/netwatch/files"}"#).unwrap();
        assert_eq!(account.name, "captures");
        assert_eq!(account.resource_group.as_str(), DEFAULT_RESOURCE_GROUP);
        assert_eq!(
            account.kind,
            AccountKind::Local {
                path: "/var/lib/netwatch/files".into()
            }
        );
        let account: AccountConfig =
            serde_json::from_str(r#"{"name":"captures","resource_group":"Storage-RG","kind":"local","path":"/x"}"#)
                .unwrap();
        assert_eq!(account.resource_group.as_str(), "Storage-RG");

        let err = serde_json::from_str::<AccountConfig>(r#"{"name":"Bad_Name","kind":"local","path":"/x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has the character 'B'"), "{err}");
        let err = serde_json::from_str::<AccountConfig>(
            r#"{"name":"acct","resource_group":"a/b","kind":"local","path":"/x"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a valid resource group name"), "{err}");
        assert!(serde_json::from_str::<AccountConfig>(r#"{"name":"acct","kind":"s9","path":"/x"}"#).is_err());
        let err = serde_json::from_str::<AccountConfig>(r#"{"name":"acct","kind":"local","path":"/x","paht":"/y"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `paht`"), "{err}");
    }

    #[test]
    fn accounts_are_found_by_name_in_any_case() {
        let accounts = Accounts::try_new(vec![local("one"), local("two")]).unwrap();
        assert_eq!(accounts.get("TWO").map(|a| a.name.as_str()), Some("two"));
        assert!(matches!(accounts.storage("one"), Some(Backend::Local(_))));
        assert!(accounts.get("three").is_none() && accounts.storage("three").is_none());
        assert_eq!(accounts.list().len(), 2);
    }

    #[test]
    fn try_new_refuses_bad_and_duplicate_names() {
        let mut bad = local("one");
        bad.name = "One".to_owned();
        assert!(matches!(Accounts::try_new(vec![bad]), Err(AccountsError::Name(_))));
        assert_eq!(
            Accounts::try_new(vec![local("one"), local("one")])
                .unwrap_err()
                .to_string(),
            "storage account \"one\" is configured twice: account names must be unique"
        );
    }
}
