//! Who may call the controller: bearer tokens (clients.md §5.9).
//!
//! Two roles today (issue 6 adds reader/operator and per-agent credentials):
//! - **admin**: every client route (the ARM API, downloads);
//! - **agent**: the agent channel and uploads under `/netwatch/v1/agent/`
//!   (an enrollment token; admin tokens work there too).
//!
//! Tokens are never stored: the configuration holds their SHA-256 digests
//! (`sha256:<hex>`), so a leaked config file lets no one in. A token is 32
//! random bytes in hex, high-entropy, so a plain digest (no salt, no slow
//! hash) is enough.

use std::fmt::Write as _;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use netwatch_api::agent::CHANNEL_PATH;
use netwatch_api::error::{ApiError, ErrorCode};
use sha2::{Digest, Sha256};

use crate::routes::{AppState, HttpError};
use crate::store::EnrollmentRecord;

/// Prefix of stored token digests.
const DIGEST_PREFIX: &str = "sha256:";

/// Paths anyone may read: az fetches the metadata before it has a token.
const PUBLIC_PATHS: &[&str] = &[
    "/metadata/endpoints",
    "/netwatch/v1/health",
    "/netwatch/v1/openapi.json",
];

/// Where agents' routes live.
const AGENT_PREFIX: &str = "/netwatch/v1/agent/";

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Agent,
}

/// The accepted tokens, as digests.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    admin: Vec<String>,
    agent: Vec<String>,
}

/// A stored digest that is not `sha256:` and 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("token digest {0:?} is not \"sha256:\" followed by 64 hex digits (`netwatch up` writes them)")]
pub struct BadDigest(String);

impl Tokens {
    /// Tokens from their stored digests (`sha256:<hex>`).
    pub fn from_digests(admin: &[String], agent: &[String]) -> Result<Self, BadDigest> {
        let check = |digests: &[String]| -> Result<Vec<String>, BadDigest> {
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
        };
        Ok(Self {
            admin: check(admin)?,
            agent: check(agent)?,
        })
    }

    /// The role `token` carries, if any.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        self.role_of_digest(&digest(token))
    }

    /// The role of the token whose digest is `digest`, if it is still accepted.
    pub fn role_of_digest(&self, digest: &str) -> Option<Role> {
        if self.admin.iter().any(|known| known == digest) {
            Some(Role::Admin)
        } else if self.agent.iter().any(|known| known == digest) {
            Some(Role::Agent)
        } else {
            None
        }
    }
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
fn hex(bytes: &[u8]) -> String {
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
    /// An enrolled agent's own credential: it speaks for its VM only.
    Credential { vm_id: String },
}

/// Middleware: lets a request through when its bearer token's role may use
/// the path; 401 with `WWW-Authenticate` otherwise. A server without tokens
/// configured ([`crate::routes::ApiConfig::auth`] `None`, tests only) lets
/// everything through.
pub(crate) async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(tokens) = &state.config.auth else {
        request.extensions_mut().insert(AgentIdentity::Shared);
        return next.run(request).await;
    };
    let path = request.uri().path();
    if PUBLIC_PATHS.contains(&path) || is_login_path(path) {
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
    let role = match &state.config.signer {
        // An access token netwatch signed, valid while its client token is.
        Some(signer) if token.contains('.') => signer
            .verify(&token)
            .filter(|claims| tokens.role_of_digest(&claims.sub) == Some(Role::Admin))
            .map(|_| Role::Admin),
        _ => tokens.role_of(&token),
    };
    match role {
        Some(Role::Admin) => {
            request.extensions_mut().insert(AgentIdentity::Shared);
            return next.run(request).await;
        }
        Some(Role::Agent) if agent_path => {
            request.extensions_mut().insert(AgentIdentity::Shared);
            return next.run(request).await;
        }
        Some(Role::Agent) => return unauthorized("an agent token cannot call the client API: use a client token"),
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
            Ok(Some(enrollment)) if enrollment.expires_ms <= crate::routes::now_ms() => {
                return unauthorized(
                    "this enrollment token has expired: run `netwatch vm extension set` again for a new one",
                );
            }
            Ok(Some(enrollment)) => Some(AgentIdentity::Enrollment(enrollment)),
            Ok(None) => None,
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
    }
}
