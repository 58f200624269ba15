//! Who may call the controller: bearer tokens (clients.md §5.9) and their roles.
//!
//! Client roles, each allowing what the one before it does ([`required_role`]):
//! - **reader**: reads (`GET`, `HEAD`), `queryStatus`, `checkNameAvailability`,
//!   downloads;
//! - **operator**: and creates, stops and deletes packet captures and network
//!   watchers (`Microsoft.Network`);
//! - **admin**: and everything else: hosts (the agent extension, which hands
//!   out enrollment tokens, and its removal, which cuts an agent off),
//!   storage accounts, client tokens.
//!
//! And **agent**: the agent channel and uploads under `/netwatch/v1/agent/`
//! (a shared agent token of the configuration, a one-time enrollment, or an
//! enrolled agent's own credential; admin tokens work there too).
//!
//! Client tokens come from the configuration (`[tokens] admin/operator/reader`)
//! or from the API (`netwatch token create`, kept in the store, revocable).
//! Tokens are never stored: only their SHA-256 digests (`sha256:<hex>`), so a
//! leaked config file or database lets no one in. A token is 32 random bytes
//! in hex, high-entropy, so a plain digest (no salt, no slow hash) is enough.
//! Access tokens signed by the login routes name their client token's digest,
//! so they stop working when it is revoked.

use std::fmt::Write as _;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use netwatch_api::agent::CHANNEL_PATH;
use netwatch_api::error::{ApiError, ErrorCode};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::errors::HttpError;
use crate::store::{EnrollmentRecord, StoreError};

/// Prefix of stored token digests.
const DIGEST_PREFIX: &str = "sha256:";

/// Paths anyone may read: az fetches the metadata before it has a token.
const PUBLIC_PATHS: &[&str] = &[
    "/metadata/endpoints",
    "/netwatch/v1/health",
    "/netwatch/v1/openapi.json",
    // The agent installer and builds (routes/agent_install.rs): hosts have no
    // credential yet, and check what they get by the pin and SHA-256.
    netwatch_api::agent::INSTALLER_PATH,
    netwatch_api::agent::AGENT_BUILDS_PATH,
];

/// Whether `path` is one agent build's download (public, as the list).
fn is_agent_build_path(path: &str) -> bool {
    path.strip_prefix(netwatch_api::agent::AGENT_BUILDS_PATH)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether `path` is the alert webhook's, which authenticates with a
/// trigger's secret rather than a client token.
fn is_alerts_path(path: &str) -> bool {
    path == "/netwatch/v1/alerts" || path.starts_with("/netwatch/v1/alerts/")
}

/// Where agents' routes live.
const AGENT_PREFIX: &str = "/netwatch/v1/agent/";

/// Where the API's token routes live (admin only).
pub const TOKENS_PATH: &str = "/netwatch/v1/tokens";

/// Where a capture's request is checked without creating anything: it
/// changes nothing, so readers may (the console checks its form with it).
pub const VALIDATE_CAPTURE_PATH: &str = "/netwatch/v1/validate/packetCapture";

/// The client role a request was let through with, for the routes that
/// answer by it (`whoami`).
#[derive(Debug, Clone, Copy)]
pub struct ClientRole(pub Role);

/// A caller's role. Client roles are ordered: each allows what the ones
/// before it do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Reader,
    Operator,
    Admin,
    Agent,
}

impl Role {
    /// The client roles, as the API and CLI spell them.
    pub const CLIENT: [Role; 3] = [Role::Reader, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }

    /// A client role by name (`reader`, `operator`, `admin`; any case).
    pub fn parse_client(text: &str) -> Option<Role> {
        Role::CLIENT
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(text))
    }

    /// Whether a caller of this role may do what needs `needed` (a client role).
    fn allows(self, needed: Role) -> bool {
        self != Role::Agent && self >= needed
    }
}

/// The accepted tokens of the configuration, as digests.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    admin: Vec<String>,
    operator: Vec<String>,
    reader: Vec<String>,
    agent: Vec<String>,
}

/// A stored digest that is not `sha256:` and 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("token digest {0:?} is not \"sha256:\" followed by 64 hex digits (`netwatch up` writes them)")]
pub struct BadDigest(String);

impl Tokens {
    /// Tokens from their stored digests (`sha256:<hex>`): admin and agent ones.
    pub fn from_digests(admin: &[String], agent: &[String]) -> Result<Self, BadDigest> {
        Self::from_roles(admin, &[], &[], agent)
    }

    /// Tokens from their stored digests, of every role.
    pub fn from_roles(
        admin: &[String],
        operator: &[String],
        reader: &[String],
        agent: &[String],
    ) -> Result<Self, BadDigest> {
        Ok(Self {
            admin: check_digests(admin)?,
            operator: check_digests(operator)?,
            reader: check_digests(reader)?,
            agent: check_digests(agent)?,
        })
    }

    /// The role `token` carries in the configuration, if any.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        self.role_of_digest(&digest(token))
    }

    /// The role the configuration gives the token whose digest is `digest`.
    pub fn role_of_digest(&self, digest: &str) -> Option<Role> {
        [
            (&self.admin, Role::Admin),
            (&self.operator, Role::Operator),
            (&self.reader, Role::Reader),
            (&self.agent, Role::Agent),
        ]
        .into_iter()
        .find(|(digests, _)| digests.iter().any(|known| known == digest))
        .map(|(_, role)| role)
    }
}

/// Checks stored digests: `sha256:` and 64 hex digits each; lower-cased.
fn check_digests(digests: &[String]) -> Result<Vec<String>, BadDigest> {
    digests
        .iter()
        .map(|digest| {
            let hex = digest.strip_prefix(DIGEST_PREFIX).unwrap_or("");
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(digest.to_ascii_lowercase())
            } else {
                Err(BadDigest(digest.clone()))
            }
        })
        .collect()
}

/// The role of the client or agent token whose digest is `digest`: the
/// configuration's, else a client token made through the API and not revoked.
pub(crate) async fn role_of_digest(
    state: &AppState,
    tokens: &Tokens,
    digest: &str,
) -> Result<Option<Role>, StoreError> {
    if let Some(role) = tokens.role_of_digest(digest) {
        return Ok(Some(role));
    }
    Ok(state
        .store
        .get_client_token(digest)
        .await?
        .filter(|token| token.revoked_ms.is_none())
        .and_then(|token| Role::parse_client(&token.role)))
}

/// The client role a request needs (paths as routing sees them: ARM's fixed
/// segments lower-cased).
pub(crate) fn required_role(method: &axum::http::Method, path: &str) -> Role {
    use axum::http::Method;
    if path == TOKENS_PATH || path.starts_with(&format!("{TOKENS_PATH}/")) {
        return Role::Admin;
    }
    if *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS {
        return Role::Reader;
    }
    if *method == Method::POST
        && (path.ends_with("/querystatus") || path.ends_with("/checknameavailability") || path == VALIDATE_CAPTURE_PATH)
    {
        return Role::Reader;
    }
    if path.contains("/providers/microsoft.network/") {
        return Role::Operator;
    }
    Role::Admin
}

/// The login routes of [`crate::routes::identity`]-style clients: they take a
/// client token in their own way (form field, header), not as a bearer.
fn is_login_path(path: &str) -> bool {
    path == "/msi/token"
        || path.ends_with("/v2.0/.well-known/openid-configuration")
        || path.ends_with("/oauth2/v2.0/token")
        || path.ends_with("/discovery/v2.0/keys")
}

/// The stored form of `token`.
pub fn digest(token: &str) -> String {
    format!("{DIGEST_PREFIX}{}", hex(&Sha256::digest(token.as_bytes())))
}

/// `bytes` in lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        write!(text, "{byte:02x}").expect("writing to a String cannot fail");
    }
    text
}

/// A new random token: 32 bytes from the OS, in hex.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex(&bytes))
}

/// Who calls on an agent path; the channel's handler reads it from the
/// request's extensions.
#[derive(Debug, Clone)]
pub enum AgentIdentity {
    /// A shared agent token of the configuration (or an admin token): the
    /// agent's hello says which VM it is.
    Shared,
    /// A one-time enrollment token, on the channel only: the VM is the
    /// enrollment's, and the agent is handed a credential of its own.
    Enrollment(EnrollmentRecord),
    /// A scale set's reusable enrollment key, on the channel only: the host
    /// joins the scale set (its instance id kept across re-joins) and is
    /// handed a credential of its own.
    ScaleSetKey(crate::store::ScaleSetKeyRecord),
    /// An enrolled agent's own credential: it speaks for its VM only.
    Credential { vm_id: String },
}

/// Middleware: lets a request through when its bearer token's role may use
/// the path; 401 with `WWW-Authenticate` otherwise. A server without tokens
/// configured ([`crate::app::ApiConfig::auth`] `None`, tests only) lets
/// everything through.
pub(crate) async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(tokens) = &state.config.auth else {
        request.extensions_mut().insert(AgentIdentity::Shared);
        request.extensions_mut().insert(ClientRole(Role::Admin));
        return next.run(request).await;
    };
    let path = request.uri().path();
    // Alerts carry their trigger's own secret (routes/alerting.rs checks it).
    if PUBLIC_PATHS.contains(&path)
        || is_login_path(path)
        || is_agent_build_path(path)
        || is_alerts_path(path)
        || crate::routes::console::is_console_path(path)
    {
        return next.run(request).await;
    }
    let agent_path = path.starts_with(AGENT_PREFIX);
    let channel = path == CHANNEL_PATH;
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
        });
    let Some(token) = token else {
        return unauthorized("the Authorization header is missing: send `Authorization: Bearer <token>`");
    };
    // An access token netwatch signed names its client token, valid while that is.
    let subject = match &state.config.signer {
        Some(signer) if token.contains('.') => signer.verify(&token).map(|claims| claims.sub),
        _ => Some(digest(&token)),
    };
    let role = match subject {
        Some(subject) => match role_of_digest(&state, tokens, &subject).await {
            Ok(role) => role,
            Err(err) => return HttpError::from(err).into_response(),
        },
        None => None,
    };
    match role {
        Some(Role::Admin) => {
            request.extensions_mut().insert(AgentIdentity::Shared);
            request.extensions_mut().insert(ClientRole(Role::Admin));
            return next.run(request).await;
        }
        Some(Role::Agent) if agent_path => {
            request.extensions_mut().insert(AgentIdentity::Shared);
            return next.run(request).await;
        }
        Some(Role::Agent) => return unauthorized("an agent token cannot call the client API: use a client token"),
        Some(role) if agent_path => {
            let message = format!("a {} token cannot use the agents' routes", role.as_str());
            return forbidden(&message);
        }
        Some(role) => {
            let needed = required_role(request.method(), path);
            if role.allows(needed) {
                request.extensions_mut().insert(ClientRole(role));
                return next.run(request).await;
            }
            let message = format!(
                "a {} token may not {} {}: it needs the {} role (`netwatch token create --role {}` makes one)",
                role.as_str(),
                request.method(),
                path,
                needed.as_str(),
                needed.as_str()
            );
            return forbidden(&message);
        }
        None => {}
    }
    let invalid = "the bearer token is not valid here: use the token `netwatch up` printed (NETWATCH_TOKEN)";
    if !agent_path {
        return unauthorized(invalid);
    }
    // An agent's own credential, or (on the channel) a one-time enrollment.
    let token_digest = digest(&token);
    let identity = match state.store.get_agent_credential(&token_digest).await {
        Ok(Some(credential)) if credential.revoked_ms.is_none() => Some(AgentIdentity::Credential {
            vm_id: credential.vm_id,
        }),
        Ok(Some(_)) => return unauthorized("this agent's credential was revoked: enroll the host again"),
        Ok(None) if channel => match state.store.get_enrollment(&token_digest).await {
            Ok(Some(enrollment)) if enrollment.used_ms.is_some() => {
                return unauthorized(
                    "this enrollment token was used already: run `netwatch vm extension set` again for a new one",
                );
            }
            Ok(Some(enrollment)) if enrollment.expires_ms <= crate::clock::now_ms() => {
                return unauthorized(
                    "this enrollment token has expired: run `netwatch vm extension set` again for a new one",
                );
            }
            Ok(Some(enrollment)) => Some(AgentIdentity::Enrollment(enrollment)),
            Ok(None) => match state.store.get_scale_set_key(&token_digest).await {
                Ok(Some(key)) => match key.refusal(crate::clock::now_ms()) {
                    Some(why) => {
                        return unauthorized(&format!(
                            "this scale-set enrollment key {why}: run `netwatch vmss extension set` for a new one"
                        ));
                    }
                    None => Some(AgentIdentity::ScaleSetKey(key)),
                },
                Ok(None) => None,
                Err(err) => return HttpError::from(err).into_response(),
            },
            Err(err) => return HttpError::from(err).into_response(),
        },
        Ok(None) => None,
        Err(err) => return HttpError::from(err).into_response(),
    };
    match identity {
        Some(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        None => unauthorized(invalid),
    }
}

/// 403 `AuthorizationFailed`, ARM's answer to a caller whose role is too small.
fn forbidden(message: &str) -> Response {
    HttpError::with_status(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        ApiError::new(ErrorCode::AuthenticationFailed, message),
    )
    .into_response()
}

/// 401 with ARM's body and `WWW-Authenticate`.
fn unauthorized(message: &str) -> Response {
    let error = HttpError::with_status(
        StatusCode::UNAUTHORIZED,
        "AuthenticationFailed",
        ApiError::new(ErrorCode::AuthenticationFailed, message),
    );
    let mut response = error.into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_digest() {
        let admin = new_token().unwrap();
        let agent = new_token().unwrap();
        assert_eq!(admin.len(), 64);
        assert_ne!(admin, agent);
        let tokens = Tokens::from_digests(&[digest(&admin)], &[digest(&agent)]).unwrap();
        assert_eq!(tokens.role_of(&admin), Some(Role::Admin));
        assert_eq!(tokens.role_of(&agent), Some(Role::Agent));
        assert_eq!(tokens.role_of("nope"), None);
        assert!(Tokens::from_digests(&["md5:00".to_owned()], &[]).is_err());
        let reader = new_token().unwrap();
        let tokens = Tokens::from_roles(&[], &[], &[digest(&reader)], &[]).unwrap();
        assert_eq!(tokens.role_of(&reader), Some(Role::Reader));
    }

    #[test]
    fn each_request_needs_the_least_role_that_may_make_it() {
        use axum::http::Method;
        let capture = "/subscriptions/s/resourcegroups/networkwatcherrg/providers/microsoft.network/networkwatchers/nw/packetcaptures/pc1";
        let account = "/subscriptions/s/resourcegroups/rg/providers/microsoft.storage/storageaccounts/acct1";
        let extension =
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm/extensions/x";
        let rows = [
            (Method::GET, capture.to_owned(), Role::Reader),
            (Method::POST, format!("{capture}/querystatus"), Role::Reader),
            (Method::PUT, capture.to_owned(), Role::Operator),
            (Method::POST, format!("{capture}/stop"), Role::Operator),
            (Method::DELETE, capture.to_owned(), Role::Operator),
            (
                Method::GET,
                "/netwatch/v1/storage/acct1/blob.cap".to_owned(),
                Role::Reader,
            ),
            (
                Method::POST,
                "/subscriptions/s/providers/microsoft.storage/checknameavailability".to_owned(),
                Role::Reader,
            ),
            (Method::PUT, account.to_owned(), Role::Admin),
            (Method::DELETE, account.to_owned(), Role::Admin),
            (Method::PUT, extension.to_owned(), Role::Admin),
            (Method::GET, TOKENS_PATH.to_owned(), Role::Admin),
            (Method::DELETE, format!("{TOKENS_PATH}/ci"), Role::Admin),
        ];
        for (method, path, needed) in rows {
            assert_eq!(required_role(&method, &path), needed, "{method} {path}");
        }
        assert!(Role::Admin.allows(Role::Operator) && Role::Operator.allows(Role::Reader));
        assert!(!Role::Reader.allows(Role::Operator) && !Role::Agent.allows(Role::Reader));
    }
}
