//! Azure AD's few routes that Azure's own clients call to log in (clients.md
//! §2), so `az` and the SDKs work against netwatch unchanged:
//! - service principal: `GET /{tenant}/v2.0/.well-known/openid-configuration`,
//!   then `POST /{tenant}/oauth2/v2.0/token` with `grant_type=client_credentials`
//!   and a netwatch client token as `client_secret` (`az login
//!   --service-principal -u netwatch -p TOKEN --tenant TENANT`);
//! - managed identity, App Service flavour: `GET /msi/token?resource=…` with
//!   the client token in `X-IDENTITY-HEADER` (`IDENTITY_ENDPOINT` and
//!   `IDENTITY_HEADER` set for az).
//!
//! Both answer a signed access token ([`crate::identity`]). Errors follow
//! OAuth 2.0 (`{"error": "...", "error_description": "..."}`), which MSAL shows.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::json;

use super::{AppState, base_url};
use crate::auth::{Role, digest, role_of_digest};
use crate::identity::{Claims, TOKEN_LIFETIME, now_secs};

/// The audience az asks for; the token's `aud` when a request names none.
const DEFAULT_AUDIENCE: &str = "https://management.core.windows.net/";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/discovery/v2.0/keys", get(keys))
        .route("/msi/token", get(msi_token))
}

/// An OAuth error answer.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        (self.status, Json(body)).into_response()
    }
}

fn oauth_error(status: StatusCode, error: &'static str, description: &str) -> OAuthError {
    OAuthError {
        status,
        error,
        description: description.to_owned(),
    }
}

/// The tenant of the path, when it is the one served.
fn check_tenant(state: &AppState, tenant: &str) -> Result<(), OAuthError> {
    if tenant.eq_ignore_ascii_case(&state.config.tenant_id) {
        return Ok(());
    }
    let description = format!(
        "tenant {tenant:?} is not served here: log in with --tenant {}",
        state.config.tenant_id
    );
    Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_tenant", &description))
}

async fn openid_configuration(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Err(refused) = check_tenant(&state, &tenant) {
        return refused.into_response();
    }
    let base = match base_url(&state.config, &headers, &uri) {
        Ok(base) => base,
        Err(err) => return err.into_response(),
    };
    let authority = format!("{base}/{tenant}");
    Json(json!({
        "issuer": format!("{authority}/v2.0"),
        "authorization_endpoint": format!("{authority}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{authority}/oauth2/v2.0/token"),
        "device_authorization_endpoint": format!("{authority}/oauth2/v2.0/devicecode"),
        "jwks_uri": format!("{authority}/discovery/v2.0/keys"),
        "response_types_supported": ["code", "id_token", "token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["HS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["openid"],
        "tenant_region_scope": null,
    }))
    .into_response()
}

/// No public keys: tokens are signed with a key only the controller holds.
async fn keys(State(state): State<AppState>, Path(tenant): Path<String>) -> Response {
    match check_tenant(&state, &tenant) {
        Ok(()) => Json(json!({"keys": []})).into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// The audience a scope names: `https://management.core.windows.net//.default`
/// → `https://management.core.windows.net/`.
fn audience(scope: Option<&str>) -> String {
    scope
        .and_then(|scope| scope.split_whitespace().next())
        .map(|scope| scope.strip_suffix(".default").unwrap_or(scope))
        .map(|resource| resource.strip_suffix('/').unwrap_or(resource))
        .filter(|resource| !resource.is_empty())
        .map_or_else(|| DEFAULT_AUDIENCE.to_owned(), ToOwned::to_owned)
}

/// Checks a client token (of any client role: the access token carries the
/// client token's digest, and each request is checked against its role) and
/// signs an access token for it.
async fn grant(
    state: &AppState,
    base: &str,
    tenant: &str,
    secret: &str,
    audience: String,
) -> Result<(String, u64), OAuthError> {
    let Some(signer) = &state.config.signer else {
        let description =
            "this controller issues no access tokens (it has no signing key): use a netwatch token directly";
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            description,
        ));
    };
    let role = match &state.config.auth {
        Some(tokens) => role_of_digest(state, tokens, &digest(secret)).await.map_err(|err| {
            tracing::error!(error = %err, "the state store failed while checking a client token");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the controller cannot check the token now; try again",
            )
        })?,
        // No tokens configured (in-process tests): anyone is an admin.
        None => Some(Role::Admin),
    };
    if role.is_none_or(|role| role == Role::Agent) {
        let description = "the client secret is not a netwatch client token: use the token `netwatch up` printed";
        return Err(oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description));
    }
    let subject = digest(secret);
    let hex = subject.trim_start_matches("sha256:");
    // A GUID-shaped object id, stable per client token.
    let oid = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    let now = now_secs();
    let expires = now + TOKEN_LIFETIME.as_secs();
    let claims = Claims {
        iss: format!("{base}/{tenant}/v2.0"),
        tid: tenant.to_owned(),
        oid,
        sub: subject,
        aud: audience,
        iat: now,
        exp: expires,
    };
    Ok((signer.issue(&claims), expires))
}

/// `POST /{tenant}/oauth2/v2.0/token`: the client-credentials grant.
async fn token(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = check_tenant(&state, &tenant) {
        return refused.into_response();
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        let description = "only grant_type=client_credentials is served (az login --service-principal)";
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", description).into_response();
    }
    let Some(secret) = form.get("client_secret") else {
        let description = "client_secret is missing: pass the netwatch token as the service principal's password";
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description).into_response();
    };
    let base = match base_url(&state.config, &headers, &uri) {
        Ok(base) => base,
        Err(err) => return err.into_response(),
    };
    match grant(
        &state,
        &base,
        &tenant,
        secret,
        audience(form.get("scope").map(String::as_str)),
    )
    .await
    {
        Ok((access_token, _)) => {
            let lifetime = TOKEN_LIFETIME.as_secs();
            Json(json!({
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": access_token,
            }))
            .into_response()
        }
        Err(refused) => refused.into_response(),
    }
}

/// `GET /msi/token?resource=…`: managed identity, App Service flavour; the
/// client token comes in `X-IDENTITY-HEADER`.
async fn msi_token(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some(secret) = headers.get("x-identity-header").and_then(|value| value.to_str().ok()) else {
        let description = "X-IDENTITY-HEADER is missing: set IDENTITY_HEADER to a netwatch client token";
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description).into_response();
    };
    let base = match base_url(&state.config, &headers, &uri) {
        Ok(base) => base,
        Err(err) => return err.into_response(),
    };
    let resource = query
        .get("resource")
        .cloned()
        .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
    let tenant = state.config.tenant_id.clone();
    match grant(&state, &base, &tenant, secret, resource.clone()).await {
        Ok((access_token, expires)) => Json(json!({
            "access_token": access_token,
            "expires_on": expires.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }))
        .into_response(),
        Err(refused) => refused.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_name_their_audience() {
        assert_eq!(
            audience(Some("https://management.core.windows.net//.default")),
            "https://management.core.windows.net/"
        );
        assert_eq!(audience(Some("api://x/.default openid")), "api://x");
        assert_eq!(audience(None), DEFAULT_AUDIENCE);
    }
}
