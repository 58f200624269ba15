//! What the API's handlers and the agent hub share: the deployment's API
//! configuration ([`ApiConfig`]) and the application state ([`AppState`]:
//! the store, the storage accounts, the connected agents), apart from the
//! routes so that the hub and the auth middleware need not import them.

use std::sync::Arc;

use netwatch_api::resource::{DEFAULT_SUBSCRIPTION_ID, Location, SubscriptionId};
use netwatch_storage::Accounts;

use crate::accounts::StorageAccounts;
use crate::auth::Tokens;
use crate::hub::Hub;
use crate::identity::Signer;
use crate::store::Store;

/// A location the deployment serves: its canonical name and display name.
#[derive(Debug, Clone)]
pub struct KnownLocation {
    pub name: Location,
    /// As `GET /subscriptions/{s}/locations` shows it (`West US`).
    pub display_name: String,
}

/// The API's part of the deployment's configuration.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The one subscription served (DESIGN §2); default [`DEFAULT_SUBSCRIPTION_ID`].
    pub subscription: SubscriptionId,
    /// The tenant `GET /subscriptions` reports (az needs one); default the zero GUID.
    pub tenant_id: String,
    /// Locations hosts may be in and watchers exist for.
    pub locations: Vec<KnownLocation>,
    /// Who may call; `None` lets everyone in (in-process tests only: `netwatch
    /// server` always has tokens).
    pub auth: Option<Tokens>,
    /// Signs the access tokens the login routes hand out (az, the SDKs);
    /// `None` serves no login.
    pub signer: Option<Signer>,
    /// Scheme of the URLs the API hands out (monitor links, metadata):
    /// `http` until the controller terminates TLS itself or sits behind a proxy.
    pub scheme: String,
    /// Signs the upload grants for parts sent through the controller (replicas
    /// must share it: the token signing key when one is configured).
    pub grant_signer: Signer,
    /// How long an upload grant works.
    pub grant_ttl: std::time::Duration,
    /// Where accounts made through the API without a directory keep their
    /// files (`{accounts_dir}/{name}`); `None`: such requests must give one.
    pub accounts_dir: Option<std::path::PathBuf>,
    /// How long a host's agent may go unheard before its captures are given
    /// up (`Error`, `AgentStopped`; [`crate::hub::sweep_lost_agents`]).
    pub agent_lost_after: std::time::Duration,
    /// The controller addresses agents are given (every replica's, or a
    /// load balancer's); empty: the address an installer reached.
    pub agent_servers: Vec<String>,
    /// The agent builds served to installers and upgrades.
    pub agent_builds: std::sync::Arc<crate::agent_builds::AgentBuilds>,
    /// How hosts trust this controller before they have its CA (the
    /// installer's pin); `None` over plain HTTP.
    pub trust: Option<crate::tls::Trust>,
    /// The running binary's version (metrics' build info).
    pub build_version: String,
    /// The Unix socket agents on this machine hand parts over through
    /// ([`crate::handoff`]), said in every welcome; `None`: none.
    pub handoff_socket: Option<std::path::PathBuf>,
}

/// Default [`ApiConfig::grant_ttl`]: long enough for a part on a slow link,
/// short enough that a leaked grant is soon worthless.
pub const DEFAULT_GRANT_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl Default for ApiConfig {
    fn default() -> Self {
        let locations = [
            ("westus", "West US"),
            ("eastus", "East US"),
            ("westeurope", "West Europe"),
        ]
        .into_iter()
        .map(|(name, display_name)| KnownLocation {
            name: Location::parse("locations", name).expect("a canonical location name"),
            display_name: display_name.to_owned(),
        })
        .collect();
        Self {
            subscription: SubscriptionId::default_subscription(),
            tenant_id: DEFAULT_SUBSCRIPTION_ID.to_owned(),
            locations,
            auth: None,
            signer: None,
            scheme: "http".to_owned(),
            grant_signer: Signer::random().expect("the system's random source works"),
            grant_ttl: DEFAULT_GRANT_TTL,
            accounts_dir: None,
            agent_lost_after: crate::hub::DEFAULT_AGENT_LOST_AFTER,
            agent_servers: Vec::new(),
            agent_builds: std::sync::Arc::new(crate::agent_builds::AgentBuilds::none()),
            trust: None,
            build_version: env!("CARGO_PKG_VERSION").to_owned(),
            handoff_socket: None,
        }
    }
}

impl ApiConfig {
    /// The known location `location` is, in any spelling az accepts.
    pub(crate) fn location(&self, location: &Location) -> Option<&KnownLocation> {
        self.locations.iter().find(|known| known.name == *location)
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub config: ApiConfig,
    /// The storage accounts: configured and made through the API.
    pub storage: Arc<StorageAccounts>,
    /// The connected agents.
    pub hub: Hub,
    /// What `GET /metrics` shows.
    pub metrics: crate::metrics::Metrics,
    /// Live views waiting for their agents' packets.
    pub live: Arc<crate::live::LiveHub>,
}

impl AppState {
    /// State over `store` with no agent connected yet.
    pub fn new(store: Store, config: ApiConfig, storage: Accounts) -> Self {
        let metrics = crate::metrics::Metrics::new(&config.build_version);
        Self {
            storage: Arc::new(StorageAccounts::new(storage, store.clone())),
            hub: Hub::new(&store, metrics.pushes.clone()),
            store,
            config,
            metrics,
            live: Arc::default(),
        }
    }
}

/// A fresh GUID (operation ids, etags). Not a secret.
pub(crate) fn new_guid() -> String {
    // v7: time-ordered, so operation rows and etags sort by creation.
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_fresh_and_shaped() {
        let (a, b) = (new_guid(), new_guid());
        assert_ne!(a, b);
        assert!(SubscriptionId::parse("x", &a).is_ok(), "{a}");
    }
}
