//! What the channel and the uploads share about the controller: its URLs, the
//! TLS trust and the bearer header, parsed once at start-up (STYLE 5), and the
//! backoff between attempts.
//!
//! One rustls `ClientConfig` (aws-lc-rs, ecosystem.md §0) serves both the
//! WebSocket and the uploads, so both trust exactly the same roots: the
//! configured CA file alone, or the operating system's verifier.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use netwatch_api::agent::CHANNEL_PATH;
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls_platform_verifier::BuilderVerifierExt;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::uri::Authority;

use crate::{AgentConfig, AgentError};

/// The controller as the agent reaches it: one address, or one per replica
/// (the agent uses one at a time and moves to the next when it fails or
/// drains; a name with several addresses is tried address by address when
/// connecting).
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    /// Each address: whether it is `https` (channel on `wss`) rather than
    /// `http` (`ws`), and `host:port` as configured.
    servers: Arc<[(bool, String)]>,
    /// Which of them is used now.
    current: Arc<AtomicUsize>,
    tls: Arc<ClientConfig>,
    /// `Bearer {token}`, marked sensitive so no debug output shows it; the
    /// token changes once, when an enrollment hands out the agent's credential.
    authorization: Arc<RwLock<HeaderValue>>,
    /// The upload protocol the controller said in its last welcome (0: none said, protocol 1).
    upload_protocol: Arc<AtomicU32>,
    /// The controller's hand-over socket, when it said one and this agent
    /// reaches it on a loopback address (the same machine).
    handoff: Arc<RwLock<Option<std::path::PathBuf>>>,
    /// Whether a part went by hand-over yet (said once in the log).
    handed_over: Arc<std::sync::atomic::AtomicBool>,
}

impl Remote {
    pub(crate) fn new(config: &AgentConfig) -> Result<Self, AgentError> {
        let servers = config
            .server
            .split(',')
            .map(|server| {
                parse_server(server.trim()).map_err(|reason| AgentError::Server {
                    server: server.trim().to_owned(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Replicas at random: agents started together spread over them.
        let first = usize::try_from(random_u64() % servers.len() as u64).unwrap_or(0);
        Ok(Self {
            servers: servers.into(),
            current: Arc::new(AtomicUsize::new(first)),
            tls: tls_config(config.ca_file.as_deref())?,
            authorization: Arc::new(RwLock::new(bearer(&config.token)?)),
            upload_protocol: Arc::new(AtomicU32::new(0)),
            handoff: Arc::new(RwLock::new(None)),
            handed_over: Arc::default(),
        })
    }

    /// Notes the hand-over socket a welcome said, kept only when the
    /// controller is reached on a loopback address: then it runs on this
    /// machine, and its socket may be reachable.
    pub(crate) fn set_handoff(&self, socket: Option<&str>) {
        let socket = socket.filter(|_| self.is_loopback()).map(std::path::PathBuf::from);
        *self.handoff.write().unwrap_or_else(PoisonError::into_inner) = socket;
    }

    /// The hand-over socket to use for parts through the controller, if any.
    pub(crate) fn handoff(&self) -> Option<std::path::PathBuf> {
        self.handoff.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether this is the first part handed over (the log says it once).
    pub(crate) fn first_handoff(&self) -> bool {
        !self.handed_over.swap(true, Ordering::Relaxed)
    }

    /// Stops using the hand-over socket (it could not be reached) until the next welcome.
    pub(crate) fn forget_handoff(&self) {
        *self.handoff.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether the address used now is a loopback one (`localhost`, 127.0.0.0/8, `[::1]`).
    fn is_loopback(&self) -> bool {
        let authority = &self.server().1;
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => host,
            _ => authority.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// Notes the upload protocol a controller's welcome said.
    pub(crate) fn set_upload_protocol(&self, protocol: u32) {
        self.upload_protocol.store(protocol, Ordering::Relaxed);
    }

    /// Whether the controller takes grant requests without the file's
    /// SHA-256 (upload protocol 2), so the file is hashed as its parts go.
    pub(crate) fn hashes_in_stream(&self) -> bool {
        self.upload_protocol.load(Ordering::Relaxed) >= 2
    }

    /// Authenticates with `token` from now on (channel and uploads).
    pub(crate) fn set_token(&self, token: &str) -> Result<(), AgentError> {
        let value = bearer(token)?;
        *self.authorization.write().unwrap_or_else(PoisonError::into_inner) = value;
        Ok(())
    }

    /// The address used now.
    fn server(&self) -> &(bool, String) {
        &self.servers[self.current.load(Ordering::Relaxed) % self.servers.len()]
    }

    /// Moves to the next address (the one used failed or drains); the
    /// `host:port` used from now on. One address: stays on it.
    pub(crate) fn next_server(&self) -> &str {
        self.current.fetch_add(1, Ordering::Relaxed);
        &self.server().1
    }

    /// The same controller, its addresses tried from the `index`-th on
    /// (simulated hosts spread themselves over the replicas).
    pub(crate) fn starting_at(&self, index: usize) -> Remote {
        Remote {
            current: Arc::new(AtomicUsize::new(index % self.servers.len())),
            ..self.clone()
        }
    }

    /// The `host:port` used now.
    pub(crate) fn authority(&self) -> &str {
        &self.server().1
    }

    /// How many addresses there are.
    pub(crate) fn servers(&self) -> usize {
        self.servers.len()
    }

    /// `wss://host:port/netwatch/v1/agent/channel` (`ws://` for an http server).
    pub(crate) fn channel_url(&self) -> String {
        let (secure, authority) = self.server();
        let scheme = if *secure { "wss" } else { "ws" };
        format!("{scheme}://{authority}{CHANNEL_PATH}")
    }

    /// `https://host:port{path}`; `path` starts with `/`.
    pub(crate) fn http_url(&self, path: &str) -> String {
        let (secure, authority) = self.server();
        let scheme = if *secure { "https" } else { "http" };
        format!("{scheme}://{authority}{path}")
    }

    pub(crate) fn is_secure(&self) -> bool {
        self.server().0
    }

    pub(crate) fn tls(&self) -> &Arc<ClientConfig> {
        &self.tls
    }

    pub(crate) fn authorization(&self) -> HeaderValue {
        self.authorization
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// `Bearer {token}` as a sensitive header value.
fn bearer(token: &str) -> Result<HeaderValue, AgentError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| AgentError::Token)?;
    value.set_sensitive(true);
    Ok(value)
}

/// `https://host:port[/]` → (secure, `host:port`).
fn parse_server(server: &str) -> Result<(bool, String), &'static str> {
    let lower = server.get(..8).unwrap_or(server).to_ascii_lowercase();
    let (secure, rest) = if lower.starts_with("https://") {
        (true, &server[8..])
    } else if lower.starts_with("http://") {
        (false, &server[7..])
    } else {
        return Err("the scheme must be https:// or http://");
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err("it has no host");
    }
    if authority.contains(['/', '?', '#', '@']) {
        return Err("give only the scheme, host and port, without path, query or user");
    }
    Authority::from_str(authority).map_err(|_| "the host or port is not valid")?;
    // `Authority` takes any text after the colon; a port must be a number.
    let after_host = authority.rsplit_once(']').map_or(authority, |(_, rest)| rest);
    if let Some((_, port)) = after_host.rsplit_once(':') {
        port.parse::<u16>().map_err(|_| "the port is not a number 0-65535")?;
    }
    Ok((secure, authority.to_owned()))
}

/// The TLS client config: the CA file's certificates as the only roots, or the
/// platform verifier (the system's roots) without one.
fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, AgentError> {
    // An explicit provider: with another crate's features turning on `ring` too,
    // rustls could not pick a process default and `builder()` would panic.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(AgentError::Tls)?;
    let config = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| AgentError::ReadCa {
                path: path.to_owned(),
                source,
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                // A PEM section that does not parse is as bad as a certificate rustls refuses.
                let cert = cert.map_err(|error| AgentError::BadCa {
                    path: path.to_owned(),
                    source: rustls::Error::General(error.to_string()),
                })?;
                roots.add(cert).map_err(|source| AgentError::BadCa {
                    path: path.to_owned(),
                    source,
                })?;
            }
            if roots.is_empty() {
                return Err(AgentError::NoCa { path: path.to_owned() });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .with_platform_verifier()
            .map_err(AgentError::Tls)?
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Exponential backoff with jitter: each delay is drawn from the upper half of
/// the current step (so attempts of many hosts spread out, yet never come
/// sooner than half the step), and the step doubles up to a cap.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    cap: Duration,
    step: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, cap: Duration) -> Self {
        Self {
            first,
            cap,
            step: first,
        }
    }

    /// Back to the first step (after a success).
    pub(crate) fn reset(&mut self) {
        self.step = self.first;
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step_ms = u64::try_from(self.step.as_millis()).unwrap_or(u64::MAX);
        let half = step_ms / 2;
        let delay = Duration::from_millis(half + random_u64() % (step_ms - half + 1));
        self.step = (self.step * 2).min(self.cap);
        delay
    }
}

/// A random number good enough for jitter, without a dependency: every
/// `RandomState` is seeded differently, so hashing nothing gives a fresh value.
fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(server: &str) -> AgentConfig {
        AgentConfig {
            server: server.into(),
            token: "t0ken".into(),
            ca_file: None,
            vm_name: "vm1".into(),
            resource_group: "rg".into(),
            location: "westus".into(),
            data_dir: "/tmp".into(),
            interface: "any".into(),
            spool_max_bytes: crate::DEFAULT_SPOOL_MAX_BYTES,
            tags: Default::default(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            installed: None,
            metrics_listen: None,
        }
    }

    /// A hand-over socket is kept only for a controller on this machine.
    #[test]
    fn a_handoff_socket_is_for_a_controller_on_a_loopback_address() {
        for (server, kept) in [
            ("https://127.0.0.1:8443", true),
            ("https://127.0.0.53:8443", true),
            ("https://localhost:8443", true),
            ("https://[::1]:8443", true),
            ("https://10.0.0.1:8443", false),
            ("https://ctl.example:8443", false),
            ("https://[2001:db8::1]:8443", false),
        ] {
            let remote = Remote::new(&config(server)).unwrap();
            remote.set_handoff(Some("/run/netwatch/handoff.sock"));
            assert_eq!(remote.handoff().is_some(), kept, "{server}");
            remote.forget_handoff();
            assert_eq!(remote.handoff(), None);
        }
    }

    #[test]
    fn servers_parse_into_urls() {
        for (server, channel, upload) in [
            (
                "https://ctl.example:8443",
                "wss://ctl.example:8443/netwatch/v1/agent/channel",
                "https://ctl.example:8443/x",
            ),
            (
                "HTTP://127.0.0.1:80/",
                "ws://127.0.0.1:80/netwatch/v1/agent/channel",
                "http://127.0.0.1:80/x",
            ),
            (
                "https://[::1]:9",
                "wss://[::1]:9/netwatch/v1/agent/channel",
                "https://[::1]:9/x",
            ),
        ] {
            let remote = Remote::new(&config(server)).unwrap();
            assert_eq!(
                (remote.channel_url().as_str(), remote.http_url("/x").as_str()),
                (channel, upload)
            );
        }
    }

    #[test]
    fn several_servers_are_used_in_turn() {
        let remote = Remote::new(&config("https://a:1, https://b:2,http://c:3")).unwrap();
        assert_eq!(remote.servers(), 3);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            seen.insert(remote.channel_url());
            remote.next_server();
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            [
                "ws://c:3/netwatch/v1/agent/channel",
                "wss://a:1/netwatch/v1/agent/channel",
                "wss://b:2/netwatch/v1/agent/channel"
            ]
        );
        let err = Remote::new(&config("https://a:1,,https://b:2")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "server \"\" is not a valid controller address: the scheme must be https:// or http:// (use https://host:port)"
        );
    }

    #[test]
    fn bad_servers_say_why() {
        for (server, reason) in [
            ("ctl.example:8443", "the scheme must be https:// or http://"),
            ("wss://ctl:1", "the scheme must be https:// or http://"),
            ("https://", "it has no host"),
            (
                "https://ctl:1/api",
                "give only the scheme, host and port, without path, query or user",
            ),
            (
                "https://u@ctl:1",
                "give only the scheme, host and port, without path, query or user",
            ),
            ("https://ctl:port", "the port is not a number 0-65535"),
            ("https://ctl:70000", "the port is not a number 0-65535"),
            ("https://ct l:1", "the host or port is not valid"),
        ] {
            let err = Remote::new(&config(server)).unwrap_err();
            assert!(
                matches!(&err, AgentError::Server { reason: r, .. } if *r == reason),
                "{server}: {err}"
            );
        }
    }

    #[test]
    fn the_bearer_header_is_sensitive() {
        let remote = Remote::new(&config("https://c:1")).unwrap();
        assert_eq!(remote.authorization().to_str().unwrap(), "Bearer t0ken");
        assert!(!format!("{remote:?}").contains("t0ken"));
        let mut bad = config("https://c:1");
        bad.token = "a\nb".into();
        assert!(matches!(Remote::new(&bad), Err(AgentError::Token)));
    }

    #[test]
    fn ca_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut with_ca = config("https://c:1");
        with_ca.ca_file = Some(dir.path().join("missing.pem"));
        assert!(matches!(Remote::new(&with_ca), Err(AgentError::ReadCa { .. })));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        with_ca.ca_file = Some(empty);
        assert!(matches!(Remote::new(&with_ca), Err(AgentError::NoCa { .. })));
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        with_ca.ca_file = Some(garbage);
        let err = Remote::new(&with_ca).unwrap_err();
        assert!(matches!(err, AgentError::BadCa { .. }), "{err:?}");
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut steps = vec![];
        for _ in 0..10 {
            steps.push(backoff.next_delay());
        }
        let bounds = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000];
        for (delay, step) in steps.iter().zip(bounds) {
            let ms = u64::try_from(delay.as_millis()).unwrap();
            assert!((step / 2..=step).contains(&ms), "{ms} ms for step {step}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
