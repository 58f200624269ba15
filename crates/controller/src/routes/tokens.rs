//! `/netwatch/v1/tokens`: client tokens made through the API (admin only,
//! [`crate::auth`]): `netwatch token create/list/revoke`.
//!
//! - `POST` `{"name": "ci", "role": "reader"}` → 201 with the token, shown this
//!   once: the store keeps only its digest;
//! - `GET` → the tokens not revoked (name, role, creation time), never a token;
//! - `DELETE /{name}` → 200 revoked at once (an access token signed for it
//!   stops working too), 204 when there was no such token.
//!
//! Names are 1–64 letters, digits, `.`, `_` and `-`, unique among tokens not
//! revoked (in any case). The configuration's tokens are not listed: they are
//! the file's.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use netwatch_api::error::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, ArmBody, HttpError, now_ms, rfc3339};
use crate::auth::{Role, TOKENS_PATH, digest, new_token};
use crate::store::{ClientTokenRecord, StoreError};

/// Longest token name.
const MAX_NAME: usize = 64;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(TOKENS_PATH, get(list).post(create))
        .route(&format!("{TOKENS_PATH}/{{name}}"), delete(revoke))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    role: String,
}

async fn create(State(state): State<AppState>, ArmBody(body): ArmBody) -> Result<Response, HttpError> {
    let request: CreateToken = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad_request(
            "",
            format!("{err}: send {{\"name\": \"ci\", \"role\": \"reader\" | \"operator\" | \"admin\"}}"),
        )
    })?;
    check_name(&request.name)?;
    let Some(role) = Role::parse_client(&request.role) else {
        let message = format!(
            "role {:?} is not a client role: use reader (reads, status, downloads), operator (and captures) \
             or admin (everything)",
            request.role
        );
        return Err(ApiError::bad_request("role", message).into());
    };
    let token = new_token().map_err(|err| ApiError::internal("no randomness for a new token", err))?;
    let record = ClientTokenRecord {
        digest: digest(&token),
        name: request.name.clone(),
        role: role.as_str().to_owned(),
        created_ms: now_ms(),
        revoked_ms: None,
    };
    match state.store.insert_client_token(&record).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            let message = format!(
                "a token named {:?} exists: revoke it first (`netwatch token revoke --name {}`) or choose another name",
                request.name, request.name
            );
            return Err(ApiError::conflict(message).into());
        }
        Err(err) => return Err(err.into()),
    }
    tracing::info!(name = %record.name, role = %record.role, "client token made");
    let mut body = token_json(&record);
    body["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    let tokens = state.store.list_client_tokens().await?;
    Ok(Json(
        json!({"value": tokens.iter().map(token_json).collect::<Vec<_>>()}),
    ))
}

async fn revoke(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, HttpError> {
    check_name(&name)?;
    if state.store.revoke_client_token(&name, now_ms()).await? {
        tracing::info!(name = %name, "client token revoked");
        Ok(StatusCode::OK.into_response())
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

fn check_name(name: &str) -> Result<(), HttpError> {
    let good = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if good {
        return Ok(());
    }
    let message = format!("token name {name:?} is not 1-{MAX_NAME} letters, digits, '.', '_' or '-'");
    Err(ApiError::bad_request("name", message).into())
}

fn token_json(record: &ClientTokenRecord) -> Value {
    json!({"name": record.name, "role": record.role, "createdTime": rfc3339(record.created_ms)})
}
