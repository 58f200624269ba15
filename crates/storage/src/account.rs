//! The configured storage accounts: their names (ARM's storage account rule),
//! resource groups and backends, as the deployment's configuration file
//! states them (STYLE 19, 20), in `[[storage]]` tables:
//!
//! ```toml
//! [[storage]]
//! name = "captures"            # ARM's account name: 3-24 lower-case letters and digits
//! kind = "local"               # local | azureblob | s3 | gcs
//! path = "/var/lib/netwatch/files"
//!
//! [[storage]]
//! name = "azcaptures"
//! kind = "azureblob"
//! account = "mystorageaccount" # Azure's storage account
//! container = "network-watcher-logs"   # the default
//! key = "base64 account key"   # or sas = "sv=...&sig=..."; exactly one of the two
//! # endpoint = "http://127.0.0.1:10000/devstoreaccount1"   # default https://{account}.blob.core.windows.net
//! # part_size = 8388608       # bytes per part of multipart uploads, every kind
//!
//! [[storage]]
//! name = "s3captures"
//! kind = "s3"
//! bucket = "captures"
//! region = "us-east-1"         # the default
//! # endpoint = "http://127.0.0.1:9000"   # an S3-compatible server: path-style requests
//! access_key_id = "AKIA..."
//! secret_access_key = "..."
//! # session_token = "..."
//!
//! [[storage]]
//! name = "gcscaptures"
//! kind = "gcs"
//! bucket = "captures"          # GCS's naming rule: 3-63 of a-z 0-9 - _ .
//! credentials = "/etc/netwatch/gcs-key.json"   # a service account's JSON key file, or
//! # service_account_key = "{...}"   # the key itself (what the API and the CLI send);
//! # neither: this machine's Google identity (application default credentials, the metadata server)
//! # endpoint = "http://127.0.0.1:4443"   # default https://storage.googleapis.com
//! # part_size = 8388608       # at least 256 KiB for gcs
//! ```
//!
//! Everything is checked when the configuration is parsed ([`AccountConfig`]'s
//! `Deserialize`) or by [`Accounts::try_new`]: past that every account has a
//! valid, unique name and a backend that can be built. Secrets are
//! [`Secret`]s: serialized as they are (the controller may persist accounts),
//! never shown by `Debug`.

use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use netwatch_api::resource::ResourceGroupName;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

use crate::{Backend, BackendError};

/// The resource group of an account whose configuration names none: its id is
/// `/subscriptions/{s}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/{name}`.
pub const DEFAULT_RESOURCE_GROUP: &str = "netwatch";

/// The Azure container of an `azureblob` account that names none: the one
/// Azure writes packet captures into, so blob paths map onto Azure's layout.
pub const DEFAULT_CONTAINER: &str = crate::CAPTURE_CONTAINER;

/// The region of an `s3` account that names none.
pub const DEFAULT_REGION: &str = "us-east-1";

const MIB: u64 = 1024 * 1024;

/// Part size of multipart uploads when the account sets none: 8 MiB, the
/// common client default (aws-cli, object_store's own is 10 MiB), small
/// enough that a controller relaying parts holds little per upload.
pub const DEFAULT_PART_SIZE: u64 = 8 * MIB;

/// Smallest part size of S3 and Azure accounts: S3 refuses parts under 5 MiB
/// but the last (`EntityTooSmall`); Azure takes any, but one rule for both
/// keeps an account movable.
pub const MIN_OBJECT_PART_SIZE: u64 = 5 * MIB;

/// Smallest part size of local accounts: no service floor, but each part is
/// a file and a round trip, so parts stay at least this large.
pub const MIN_LOCAL_PART_SIZE: u64 = MIB;

/// Smallest part size of GCS accounts. GCS sets no floor (each part is an
/// object of its own, composed at the commit), but every part costs a
/// session, an object, a compose source and a delete, so parts stay at least
/// this large: 256 KiB, GCS's own upload granularity. Sizes need not be a
/// multiple of it: a part is written in one request, never in chunks.
pub const MIN_GCS_PART_SIZE: u64 = 256 * 1024;

/// Largest part size of any account: a part relayed by the controller
/// ([`Backend::put_part`]) is held in memory whole, so this bounds the memory
/// of one upload (S3 allows 5 GiB, Azure 4000 MiB).
pub const MAX_PART_SIZE: u64 = 256 * MIB;

/// Shortest and longest storage account name (ARM's rule for `Microsoft.Storage`).
const NAME_LENGTH: std::ops::RangeInclusive<usize> = 3..=24;

/// One configured storage account.
///
/// Unknown keys are refused by [`AccountKind`]: serde's `deny_unknown_fields`
/// does not work on a struct with a flattened field (it refuses every key the
/// flattened part reads), so the flattened enum, which sees the keys left
/// over, refuses them instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AccountFields")]
pub struct AccountConfig {
    /// The account's name, as ARM names storage accounts: 3–24 lower-case
    /// letters and digits (checked when parsed).
    pub name: String,
    /// The resource group its ARM id is in; default [`DEFAULT_RESOURCE_GROUP`].
    pub resource_group: ResourceGroupName,
    /// Bytes per part of multipart uploads ([`Backend::part_size`]); default
    /// [`DEFAULT_PART_SIZE`], at least [`MIN_OBJECT_PART_SIZE`] for `s3` and
    /// `azureblob` accounts, [`MIN_LOCAL_PART_SIZE`] for `local` ones and
    /// [`MIN_GCS_PART_SIZE`] for `gcs` ones, at most [`MAX_PART_SIZE`]. A key
    /// of the account's table whatever its kind, kept here so that every kind
    /// shares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<u64>,
    /// Where its files are kept.
    #[serde(flatten)]
    pub kind: AccountKind,
}

/// [`AccountConfig`] as parsed, before it is checked.
#[derive(Deserialize)]
struct AccountFields {
    #[serde(deserialize_with = "account_name")]
    name: String,
    #[serde(default = "default_resource_group")]
    resource_group: ResourceGroupName,
    #[serde(default, alias = "partSize")]
    part_size: Option<u64>,
    #[serde(flatten)]
    kind: AccountKind,
}

impl TryFrom<AccountFields> for AccountConfig {
    type Error = ConfigError;

    fn try_from(fields: AccountFields) -> Result<Self, ConfigError> {
        let account = Self {
            name: fields.name,
            resource_group: fields.resource_group,
            part_size: fields.part_size,
            kind: fields.kind,
        };
        account.check()?;
        Ok(account)
    }
}

impl AccountConfig {
    /// An account named `name` in [`DEFAULT_RESOURCE_GROUP`] with the default
    /// part size, its name checked (the rest by [`Accounts::try_new`]).
    pub fn new(name: &str, kind: AccountKind) -> Result<Self, AccountNameError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            resource_group: default_resource_group(),
            part_size: None,
            kind,
        })
    }

    /// Whether `other` keeps its files in the same place (kind, directory,
    /// container or bucket, endpoint), whatever its credentials and part
    /// size: a change that uploads under way survive.
    pub fn same_place(&self, other: &AccountConfig) -> bool {
        match (&self.kind, &other.kind) {
            (AccountKind::Local { path }, AccountKind::Local { path: other }) => path == other,
            (
                AccountKind::AzureBlob {
                    account,
                    container,
                    endpoint,
                    ..
                },
                AccountKind::AzureBlob {
                    account: other_account,
                    container: other_container,
                    endpoint: other_endpoint,
                    ..
                },
            ) => account == other_account && container == other_container && endpoint == other_endpoint,
            (
                AccountKind::S3 {
                    bucket,
                    region,
                    endpoint,
                    ..
                },
                AccountKind::S3 {
                    bucket: other_bucket,
                    region: other_region,
                    endpoint: other_endpoint,
                    ..
                },
            ) => bucket == other_bucket && region == other_region && endpoint == other_endpoint,
            (
                AccountKind::Gcs { bucket, endpoint, .. },
                AccountKind::Gcs {
                    bucket: other_bucket,
                    endpoint: other_endpoint,
                    ..
                },
            ) => bucket == other_bucket && endpoint == other_endpoint,
            _ => false,
        }
    }

    /// Bytes per part of multipart uploads: the configured size or [`DEFAULT_PART_SIZE`].
    pub fn part_size(&self) -> u64 {
        self.part_size.unwrap_or(DEFAULT_PART_SIZE)
    }

    /// Checks everything parsing checks: the name, the kind's keys, the part size.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |problem| ConfigError {
            account: self.name.clone(),
            problem,
        };
        check_name(&self.name).map_err(|err| bad(ConfigProblem::Name(err)))?;
        match &self.kind {
            AccountKind::Local { .. } => {}
            AccountKind::AzureBlob {
                account,
                container,
                key,
                sas,
                endpoint: _,
            } => {
                check_segment("account", account, "the Azure storage account's name").map_err(bad)?;
                check_segment("container", container, "a container name, e.g. network-watcher-logs").map_err(bad)?;
                match (key, sas) {
                    (Some(_), Some(_)) => return Err(bad(ConfigProblem::KeyAndSas)),
                    (None, None) => return Err(bad(ConfigProblem::NoKeyOrSas)),
                    (Some(key), None) => {
                        let decoded = base64::engine::general_purpose::STANDARD.decode(key.expose());
                        if decoded.is_err() || key.expose().is_empty() {
                            return Err(bad(ConfigProblem::KeyNotBase64));
                        }
                    }
                    (None, Some(sas)) => {
                        if object_store::azure::split_sas(sas.expose()).is_err()
                            || sas.expose().trim_start_matches('?').is_empty()
                        {
                            return Err(bad(ConfigProblem::SasNotQuery));
                        }
                    }
                }
            }
            AccountKind::S3 {
                bucket,
                region,
                endpoint: _,
                access_key_id,
                secret_access_key: _,
                session_token: _,
            } => {
                check_segment("bucket", bucket, "the bucket's name").map_err(bad)?;
                check_segment("region", region, "e.g. us-east-1").map_err(bad)?;
                check_segment("access_key_id", access_key_id, "the access key's id").map_err(bad)?;
            }
            AccountKind::Gcs {
                bucket,
                credentials,
                service_account_key,
                endpoint: _,
            } => {
                crate::gcs::key::check_bucket(bucket).map_err(|problem| bad(ConfigProblem::Gcs(problem)))?;
                crate::gcs::key::load(credentials.as_deref(), service_account_key.as_ref())
                    .map_err(|problem| bad(ConfigProblem::Gcs(problem)))?;
            }
        }
        if let Some(part_size) = self.part_size {
            let minimum = self.kind.min_part_size();
            if part_size < minimum {
                return Err(bad(ConfigProblem::PartSizeTooSmall {
                    part_size,
                    minimum,
                    kind: self.kind.as_str(),
                }));
            }
            if part_size > MAX_PART_SIZE {
                return Err(bad(ConfigProblem::PartSizeTooLarge { part_size }));
            }
        }
        Ok(())
    }
}

/// Checks a required name that ends up in a URL path segment: not empty, no `/`.
fn check_segment(key: &'static str, value: &str, hint: &'static str) -> Result<(), ConfigProblem> {
    if value.is_empty() || value.contains('/') || value.chars().any(char::is_control) {
        return Err(ConfigProblem::BadName {
            key,
            value: value.to_owned(),
            hint,
        });
    }
    Ok(())
}

/// The backend of a storage account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum AccountKind {
    /// A directory on the controller's machine, created on first upload.
    Local { path: PathBuf },
    /// A container of an Azure storage account (or Azurite).
    AzureBlob {
        /// Azure's storage account name.
        account: String,
        /// The container; default [`DEFAULT_CONTAINER`]. A blob path whose
        /// first segment is this name is stored under the rest of the path
        /// (Azure's own layout); any other path is stored whole.
        #[serde(default = "default_container")]
        container: String,
        /// The account's access key (base64). Only with a key can agents be
        /// granted direct uploads ([`Backend::grant_parts`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<Secret>,
        /// A SAS token for the container (a leading `?` is allowed), instead
        /// of `key`: then parts go through the controller.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sas: Option<Secret>,
        /// The blob service's URL; default `https://{account}.blob.core.windows.net`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<Endpoint>,
    },
    /// A bucket of S3 or of an S3-compatible server.
    S3 {
        /// The bucket; blobs are stored under their whole path.
        bucket: String,
        /// The bucket's region; default [`DEFAULT_REGION`].
        #[serde(default = "default_region")]
        region: String,
        /// The server's URL, for S3-compatible servers: requests are then
        /// path-style (`{endpoint}/{bucket}/{key}`); default AWS's endpoint
        /// of `region`, virtual-hosted style.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<Endpoint>,
        /// The access key's id.
        #[serde(alias = "accessKeyId")]
        access_key_id: String,
        /// The access key's secret.
        #[serde(alias = "secretAccessKey")]
        secret_access_key: Secret,
        /// A session token, for temporary credentials.
        #[serde(default, skip_serializing_if = "Option::is_none", alias = "sessionToken")]
        session_token: Option<Secret>,
    },
    /// A bucket of Google Cloud Storage (or fake-gcs-server), through GCS's
    /// JSON API ([`crate::gcs`]).
    Gcs {
        /// The bucket; blobs are stored under their whole path. Checked
        /// against GCS's naming rule.
        bucket: String,
        /// The path of a service account's JSON key file, read when the
        /// account is checked (parsing checks it) and when its backend is
        /// built: give it absolute (a relative one is read from the working
        /// directory). Not with `service_account_key`; with neither, the
        /// machine's own identity is used (gcloud's application default
        /// credentials in `$HOME`, else the metadata server of a Google Cloud VM).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials: Option<PathBuf>,
        /// A service account's JSON key itself, instead of `credentials`:
        /// what the API and the CLI send.
        #[serde(default, skip_serializing_if = "Option::is_none", alias = "serviceAccountKey")]
        service_account_key: Option<Secret>,
        /// The JSON API's base URL; default the key's `gcs_base_url` if it
        /// has one (fake-gcs-server's convention), else
        /// `https://storage.googleapis.com`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<Endpoint>,
    },
}

impl AccountKind {
    /// What the API shows as the account's kind: `local`, `azureblob`, `s3`, `gcs`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Local { .. } => "local",
            Self::AzureBlob { .. } => "azureblob",
            Self::S3 { .. } => "s3",
            Self::Gcs { .. } => "gcs",
        }
    }

    /// The smallest part size this kind takes.
    pub fn min_part_size(&self) -> u64 {
        match self {
            Self::Local { .. } => MIN_LOCAL_PART_SIZE,
            Self::AzureBlob { .. } | Self::S3 { .. } => MIN_OBJECT_PART_SIZE,
            Self::Gcs { .. } => MIN_GCS_PART_SIZE,
        }
    }
}

fn default_resource_group() -> ResourceGroupName {
    ResourceGroupName::parse("resource_group", DEFAULT_RESOURCE_GROUP).expect("the default resource group is valid")
}

fn default_container() -> String {
    DEFAULT_CONTAINER.to_owned()
}

fn default_region() -> String {
    DEFAULT_REGION.to_owned()
}

fn account_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    check_name(&name).map_err(D::Error::custom)?;
    Ok(name)
}

/// A secret of the configuration (a key, a SAS token, a password): kept and
/// (de)serialized as it is, shown by `Debug` as `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// The URL of a storage service: `http` or `https`, with a host, no query,
/// user or fragment. `http` is allowed for test servers on this machine.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint(Url);

impl Endpoint {
    /// Checks `text` as an endpoint URL.
    pub fn parse(text: &str) -> Result<Self, EndpointError> {
        let bad = |problem: String| EndpointError {
            endpoint: text.to_owned(),
            problem,
        };
        let url = Url::parse(text).map_err(|err| bad(format!("is not a URL ({err})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!("has the scheme {:?}", url.scheme())));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("has no host".to_owned()));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return Err(bad("has a query, fragment or user".to_owned()));
        }
        Ok(Self(url))
    }

    /// The URL without a trailing `/`, as the object_store builders take it.
    pub fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }

    /// Whether requests go unencrypted.
    pub fn is_http(&self) -> bool {
        self.0.scheme() == "http"
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Endpoint {
    type Error = EndpointError;

    fn try_from(text: String) -> Result<Self, EndpointError> {
        Self::parse(&text)
    }
}

impl From<Endpoint> for String {
    fn from(endpoint: Endpoint) -> Self {
        endpoint.as_str().to_owned()
    }
}

/// An `endpoint` that is not a storage service's URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "endpoint {endpoint:?} {problem}: give the storage service's http:// or https:// base URL, \
     e.g. https://myaccount.blob.core.windows.net or http://127.0.0.1:9000"
)]
pub struct EndpointError {
    pub endpoint: String,
    problem: String,
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

/// An account whose configuration cannot work: which account, what is wrong
/// and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage account {account:?}: {problem}")]
pub struct ConfigError {
    /// The account's name as configured.
    pub account: String,
    problem: ConfigProblem,
}

impl ConfigError {
    pub(crate) fn new(account: &str, problem: ConfigProblem) -> Self {
        Self {
            account: account.to_owned(),
            problem,
        }
    }
}

/// What is wrong with an account's configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConfigProblem {
    #[error(transparent)]
    Name(AccountNameError),
    #[error("{key} {value:?} cannot be used: give {hint} (not empty, no /)")]
    BadName {
        key: &'static str,
        value: String,
        hint: &'static str,
    },
    #[error("both key and sas are set: keep one (key, the account key, lets agents upload straight to Azure)")]
    KeyAndSas,
    #[error(
        "neither key nor sas is set: set key (the storage account's access key) or sas (a SAS token for the container)"
    )]
    NoKeyOrSas,
    #[error(transparent)]
    Gcs(crate::gcs::key::GcsConfigProblem),
    #[error("key is not base64: give the storage account's access key as the Azure portal shows it")]
    KeyNotBase64,
    #[error(
        "sas is not a SAS token: give the token's query string, e.g. \"sv=2022-11-02&sr=c&sp=racw&se=...&sig=...\""
    )]
    SasNotQuery,
    #[error(
        "part_size {part_size} is below the {minimum} bytes ({}) that {kind} accounts need: \
         raise it or remove it for the default {DEFAULT_PART_SIZE} (8 MiB)",
        binary_size(*minimum)
    )]
    PartSizeTooSmall {
        part_size: u64,
        minimum: u64,
        kind: &'static str,
    },
    #[error(
        "part_size {part_size} is above the {MAX_PART_SIZE} bytes (256 MiB) a part may have \
         (the controller holds a relayed part in memory): lower it"
    )]
    PartSizeTooLarge { part_size: u64 },
}

/// `bytes` as a message says it: `5 MiB`, `256 KiB` (whole units), else `N bytes`.
fn binary_size(bytes: u64) -> String {
    match bytes {
        0 => "0 bytes".to_owned(),
        b if b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b % 1024 == 0 => format!("{} KiB", b / 1024),
        b => format!("{b} bytes"),
    }
}

/// A set of accounts that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error(transparent)]
    Name(#[from] AccountNameError),
    #[error("storage account {0:?} is configured twice: account names must be unique")]
    Duplicate(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The configured storage accounts, each with its backend.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    accounts: Vec<AccountConfig>,
    /// `backends[i]` serves `accounts[i]`.
    backends: Vec<Backend>,
}

impl Accounts {
    /// The accounts `accounts`, which were checked when they were parsed (use
    /// [`Accounts::try_new`] for accounts built by hand).
    ///
    /// # Panics
    ///
    /// When a backend cannot be built. For parsed accounts that is only an
    /// HTTP client that cannot be set up at all (no TLS roots can be loaded);
    /// [`Accounts::try_new`] returns it as an error instead.
    pub fn new(accounts: Vec<AccountConfig>) -> Self {
        match Self::build(accounts) {
            Ok(accounts) => accounts,
            Err(err) => panic!("{}", netwatch_api::error::error_chain(&err)),
        }
    }

    /// The accounts `accounts`, once their names are checked valid and
    /// unique, their configuration sound and their backends built.
    pub fn try_new(accounts: Vec<AccountConfig>) -> Result<Self, AccountsError> {
        for (i, account) in accounts.iter().enumerate() {
            check_name(&account.name)?;
            if accounts[..i].iter().any(|other| other.name == account.name) {
                return Err(AccountsError::Duplicate(account.name.clone()));
            }
            account.check()?;
        }
        Ok(Self::build(accounts)?)
    }

    fn build(accounts: Vec<AccountConfig>) -> Result<Self, BackendError> {
        let backends = accounts.iter().map(Backend::new).collect::<Result<_, _>>()?;
        Ok(Self { accounts, backends })
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

    const KEY: &str = "a2V5";

    fn parse(toml: &str) -> Result<AccountConfig, String> {
        toml::from_str(toml).map_err(|err| err.to_string())
    }

    #[test]
    fn object_store_kinds_parse_with_defaults() {
        let azure = parse(&format!(
            "name = \"azacct\"\nkind = \"azureblob\"\naccount = \"acct\"\nkey = \"{KEY}\""
        ))
        .unwrap();
        assert_eq!(
            azure.kind,
            AccountKind::AzureBlob {
                account: "acct".to_owned(),
                container: DEFAULT_CONTAINER.to_owned(),
                key: Some(Secret::new(KEY)),
                sas: None,
                endpoint: None,
            }
        );
        assert_eq!(
            (azure.kind.as_str(), azure.part_size()),
            ("azureblob", DEFAULT_PART_SIZE)
        );
        let sas = parse(
            "name = \"azacct\"\nkind = \"azureblob\"\naccount = \"devstoreaccount1\"\ncontainer = \"c1\"\n\
             sas = \"?sv=2021-08-06&sr=c&sp=racwd&se=2099-01-01T00%3A00%3A00Z&sig=abc%3D\"\n\
             endpoint = \"http://127.0.0.1:10000/devstoreaccount1\"\npart_size = 5242880",
        )
        .unwrap();
        assert_eq!(sas.part_size(), 5 * MIB);
        let AccountKind::AzureBlob {
            endpoint: Some(endpoint),
            ..
        } = &sas.kind
        else {
            panic!("{sas:?}")
        };
        assert_eq!(
            (endpoint.as_str(), endpoint.is_http()),
            ("http://127.0.0.1:10000/devstoreaccount1", true)
        );

        let s3 = parse(
            "name = \"s3acct\"\nkind = \"s3\"\nbucket = \"captures\"\naccess_key_id = \"AKIA1\"\n\
             secret_access_key = \"shh-1\"\nsession_token = \"tok-2\"",
        )
        .unwrap();
        assert_eq!(
            s3.kind,
            AccountKind::S3 {
                bucket: "captures".to_owned(),
                region: DEFAULT_REGION.to_owned(),
                endpoint: None,
                access_key_id: "AKIA1".to_owned(),
                secret_access_key: Secret::new("shh-1"),
                session_token: Some(Secret::new("tok-2")),
            }
        );
        assert_eq!(s3.kind.as_str(), "s3");

        // Secrets stay out of Debug, not out of the serialized form.
        let shown = format!("{s3:?}");
        assert!(
            !shown.contains("shh-1") && !shown.contains("tok-2") && shown.contains("\"***\""),
            "{shown}"
        );
        let saved = serde_json::to_string(&s3).unwrap();
        assert!(saved.contains("\"secret_access_key\":\"shh-1\""), "{saved}");
        assert_eq!(serde_json::from_str::<AccountConfig>(&saved).unwrap(), s3);
        let local = parse("name = \"loc\"\nkind = \"local\"\npath = \"/x\"\npart_size = 1048576").unwrap();
        assert_eq!((local.kind.as_str(), local.part_size()), ("local", MIB));
    }

    #[test]
    fn json_keys_may_be_camel_case_and_same_place_ignores_credentials() {
        let s3 = |extra: &str| {
            serde_json::from_str::<AccountConfig>(&format!(
                "{{\"name\":\"s3acct\",\"kind\":\"s3\",\"bucket\":\"b\",{extra}}}"
            ))
        };
        let camel = s3("\"accessKeyId\":\"id\",\"secretAccessKey\":\"s1\",\"partSize\":6291456").unwrap();
        let snake = s3("\"access_key_id\":\"id\",\"secret_access_key\":\"s2\"").unwrap();
        assert_eq!(camel.part_size(), 6 * MIB);
        assert!(
            camel.same_place(&snake) && snake.same_place(&camel),
            "only secrets and part size differ"
        );
        let other_bucket = s3("\"bucket2\":1").unwrap_err().to_string();
        assert!(
            other_bucket.contains("bucket2"),
            "unknown keys are refused: {other_bucket}"
        );
        let moved = serde_json::from_str::<AccountConfig>(
            "{\"name\":\"s3acct\",\"kind\":\"s3\",\"bucket\":\"c\",\"access_key_id\":\"id\",\"secret_access_key\":\"s\"}",
        )
        .unwrap();
        assert!(!camel.same_place(&moved), "another bucket");
        let local = AccountConfig::new("loc", AccountKind::Local { path: "/x".into() }).unwrap();
        assert!(!local.same_place(&camel) && local.same_place(&local.clone()));
    }

    #[test]
    fn bad_object_store_configs_say_what_to_fix() {
        let azure = |extra: &str| format!("name = \"azacct\"\nkind = \"azureblob\"\naccount = \"acct\"\n{extra}");
        let s3 = |extra: &str| {
            format!(
                "name = \"s3acct\"\nkind = \"s3\"\nbucket = \"b\"\naccess_key_id = \"id\"\nsecret_access_key = \"s\"\n{extra}"
            )
        };
        let rows = [
            (
                azure(&format!("key = \"{KEY}\"\nsas = \"sv=1&sig=2\"")),
                "storage account \"azacct\": both key and sas are set: keep one (key, the account key, lets agents upload straight to Azure)",
            ),
            (
                azure(""),
                "storage account \"azacct\": neither key nor sas is set: set key (the storage account's access key) or sas (a SAS token for the container)",
            ),
            (
                azure("key = \"not base64!\""),
                "storage account \"azacct\": key is not base64: give the storage account's access key as the Azure portal shows it",
            ),
            (
                azure("sas = \"?\""),
                "storage account \"azacct\": sas is not a SAS token",
            ),
            (
                azure(&format!("key = \"{KEY}\"\ncontainer = \"\"")),
                "storage account \"azacct\": container \"\" cannot be used",
            ),
            (
                azure(&format!("key = \"{KEY}\"\nendpoint = \"localhost:10000\"")),
                "endpoint \"localhost:10000\" has the scheme \"localhost\": give the storage service's http:// or https:// base URL",
            ),
            (
                azure(&format!("key = \"{KEY}\"\nendpoint = \"not a url\"")),
                "endpoint \"not a url\" is not a URL (relative URL without a base)",
            ),
            (
                s3("endpoint = \"http://127.0.0.1:9000/?x=1\""),
                "endpoint \"http://127.0.0.1:9000/?x=1\" has a query, fragment or user",
            ),
            (
                s3("part_size = 1024"),
                "storage account \"s3acct\": part_size 1024 is below the 5242880 bytes (5 MiB) that s3 accounts need: \
                 raise it or remove it for the default 8388608 (8 MiB)",
            ),
            (
                "name = \"loc\"\nkind = \"local\"\npath = \"/x\"\npart_size = 1000".to_owned(),
                "storage account \"loc\": part_size 1000 is below the 1048576 bytes (1 MiB) that local accounts need",
            ),
            (
                s3("part_size = 1073741824"),
                "part_size 1073741824 is above the 268435456 bytes (256 MiB)",
            ),
            (s3("bucket_name = \"b\""), "unknown field `bucket_name`"),
            (
                "name = \"s3acct\"\nkind = \"s3\"\nbucket = \"b\"\naccess_key_id = \"id\"".to_owned(),
                "missing field `secret_access_key`",
            ),
        ];
        for (toml, message) in rows {
            let err = parse(&toml).unwrap_err();
            assert!(err.contains(message), "{toml}\n---\n{err}\n--- wanted ---\n{message}");
        }
    }

    #[test]
    fn gcs_keys_stay_out_of_debug() {
        let key =
            "{\"type\": \"service_account\", \"private_key\": \"-----BEGIN PRIVATE KEY-----\\nSECRET-KEY-MATERIAL\"}";
        let gcs = AccountConfig::new(
            "gcsacct",
            AccountKind::Gcs {
                bucket: "captures".to_owned(),
                credentials: None,
                service_account_key: Some(Secret::new(key)),
                endpoint: None,
            },
        )
        .unwrap();
        let shown = format!("{gcs:?} {gcs:#?}");
        assert!(
            !shown.contains("SECRET-KEY-MATERIAL") && !shown.contains("private_key") && shown.contains("\"***\""),
            "{shown}"
        );
        assert_eq!((gcs.kind.as_str(), gcs.kind.min_part_size()), ("gcs", 256 * 1024));
        // Nor in the refusal of the key, which has no client_email.
        let err = gcs.check().unwrap_err().to_string();
        assert!(
            err.contains("\"client_email\" of service_account_key is missing"),
            "{err}"
        );
        assert!(!err.contains("SECRET-KEY-MATERIAL"), "{err}");
        // Saved as it is, for the controller's store.
        let saved = serde_json::to_string(&gcs).unwrap();
        assert!(
            saved.contains("SECRET-KEY-MATERIAL") && saved.contains("\"kind\":\"gcs\""),
            "{saved}"
        );
    }

    #[test]
    fn try_new_checks_accounts_built_by_hand() {
        let mut account = local("loc");
        account.part_size = Some(10);
        let err = Accounts::try_new(vec![account]).unwrap_err();
        assert!(matches!(err, AccountsError::Config(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("storage account \"loc\": part_size 10 is below"),
            "{err}"
        );
        let azure = AccountKind::AzureBlob {
            account: "acct".to_owned(),
            container: DEFAULT_CONTAINER.to_owned(),
            key: None,
            sas: None,
            endpoint: None,
        };
        let err = Accounts::try_new(vec![AccountConfig::new("azacct", azure).unwrap()]).unwrap_err();
        assert!(err.to_string().contains("neither key nor sas is set"), "{err}");
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
