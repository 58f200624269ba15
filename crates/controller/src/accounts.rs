//! The storage accounts a controller serves: those of its configuration file,
//! fixed for its lifetime, and those made through the API (`PUT
//! …/storageAccounts/{name}`), kept in the store so that every replica and
//! every restart sees them.
//!
//! An API-made account is read from the store on each lookup, and its backend
//! (an HTTP client for object stores) is built once per version of its row
//! and cached: a change made through any replica is seen by the next request
//! to any other, for the price of one indexed read. A configured account
//! shadows an API-made one of the same name (the API refuses to make one, but
//! the operator may add it to the file later).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use netwatch_storage::{AccountConfig, Accounts, Backend, BackendError};

use crate::store::{StorageAccountRecord, Store, StoreError};

/// One account and its backend.
#[derive(Debug)]
pub struct Account {
    pub config: AccountConfig,
    pub backend: Backend,
    /// The store's row, for an account made through the API; `None` for a
    /// configured one.
    pub made: Option<StorageAccountRecord>,
}

/// A stored account that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("storage account {name:?} in the state store does not parse")]
    Stored {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("storage account {name:?} cannot be served")]
    Backend {
        name: String,
        #[source]
        source: Box<BackendError>,
    },
}

/// The configured accounts and the store's.
#[derive(Debug)]
pub struct StorageAccounts {
    configured: Vec<Arc<Account>>,
    store: Store,
    /// API-made accounts by lower-case name, each at the version it was built from.
    made: RwLock<HashMap<String, Arc<Account>>>,
}

impl StorageAccounts {
    pub fn new(configured: Accounts, store: Store) -> Self {
        let configured = configured
            .list()
            .iter()
            .filter_map(|config| {
                let backend = configured.storage(&config.name)?.clone();
                Some(Arc::new(Account {
                    config: config.clone(),
                    backend,
                    made: None,
                }))
            })
            .collect();
        Self {
            configured,
            store,
            made: RwLock::default(),
        }
    }

    /// The configured account named `name` (ARM names compare case-insensitively).
    pub fn configured(&self, name: &str) -> Option<&Arc<Account>> {
        self.configured
            .iter()
            .find(|account| account.config.name.eq_ignore_ascii_case(name))
    }

    /// The account named `name`, configured or made through the API.
    pub async fn get(&self, name: &str) -> Result<Option<Arc<Account>>, LookupError> {
        if let Some(account) = self.configured(name) {
            return Ok(Some(Arc::clone(account)));
        }
        match self.store.get_storage_account(name).await? {
            Some(record) => Ok(Some(self.built(&record)?)),
            None => {
                self.made
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&name.to_lowercase());
                Ok(None)
            }
        }
    }

    /// Every account: the configured ones in their order, then the API's by name.
    pub async fn list(&self) -> Result<Vec<Arc<Account>>, LookupError> {
        let mut accounts = self.configured.clone();
        for record in self.store.list_storage_accounts().await? {
            if self.configured(&record.name).is_none() {
                accounts.push(self.built(&record)?);
            }
        }
        Ok(accounts)
    }

    /// Every account's name, for messages that list them.
    pub async fn names(&self) -> Result<Vec<String>, LookupError> {
        Ok(self
            .list()
            .await?
            .iter()
            .map(|account| account.config.name.clone())
            .collect())
    }

    /// The account of `record`: the cached one when it is at the record's
    /// version, else built anew and cached.
    fn built(&self, record: &StorageAccountRecord) -> Result<Arc<Account>, LookupError> {
        let key = record.name.to_lowercase();
        if let Some(account) = self.made.read().unwrap_or_else(PoisonError::into_inner).get(&key)
            && account.made.as_ref() == Some(record)
        {
            return Ok(Arc::clone(account));
        }
        let config: AccountConfig =
            serde_json::from_str(&record.config_json).map_err(|source| LookupError::Stored {
                name: record.name.clone(),
                source,
            })?;
        let backend = Backend::new(&config).map_err(|source| LookupError::Backend {
            name: record.name.clone(),
            source: Box::new(source),
        })?;
        let account = Arc::new(Account {
            config,
            backend,
            made: Some(record.clone()),
        });
        self.made
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, Arc::clone(&account));
        Ok(account)
    }
}
