//! `GET /netwatch/v1/whoami`: the role the caller's token has, so a client
//! (the console) offers only what that role may do. The server enforces the
//! role on every request regardless (auth.rs).

use axum::extract::Extension;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use netwatch_api::error::ApiError;

use super::{AppState, HttpError};
use crate::auth::ClientRole;

/// Where the caller learns its role.
pub const WHOAMI_PATH: &str = "/netwatch/v1/whoami";

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(WHOAMI_PATH, get(whoami))
}

/// 200 `{"role": "reader" | "operator" | "admin", "may": {...}}`.
/// (A request let through without a client role, which auth.rs never
/// does on this path, is told to send a client token.)
async fn whoami(role: Option<Extension<ClientRole>>) -> Result<Json<Value>, HttpError> {
    use crate::auth::Role;
    let Some(Extension(ClientRole(role))) = role else {
        return Err(ApiError::authentication_failed("send a client token: `Authorization: Bearer <token>`").into());
    };
    Ok(Json(json!({
        "role": role.as_str(),
        // What the role is for, in the words `netwatch token create` uses.
        "may": {
            "read": true,
            "capture": role >= Role::Operator,
            "administer": role >= Role::Admin,
        },
    })))
}
