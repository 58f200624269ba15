//! `Microsoft.Storage/storageAccounts`: the configured storage accounts
//! (DESIGN §2), listed and shown as ARM storage accounts so that
//! `az storage account list` and `--storage-account NAME` work (clients.md §3).
//! Read-only: accounts come from the configuration file.
//!
//! *Our choices*: every account is `StorageV2` / `Standard_LRS` (Azure takes
//! only Standard accounts for captures, api-contract.md §6) in the first
//! configured location; its blob endpoint is where its files download from
//! (`{base}{DOWNLOAD_PREFIX}/{name}/`); a `netwatch` block says which backend
//! keeps it.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use axum::{Json, Router};
use netwatch_api::agent::DOWNLOAD_PREFIX;
use netwatch_api::error::ApiError;
use netwatch_api::resource::{ResourceGroupName, ResourceId, ResourceName, SubscriptionId};
use netwatch_storage::AccountConfig;
use serde_json::{Value, json};

use super::{AppState, ArmVersion, HttpError, base_url, subscription};

/// Storage accounts of a resource group, below a subscription.
const ACCOUNTS_IN_GROUP: &str =
    "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.storage/storageaccounts";

/// The location of accounts when the deployment configures none.
const FALLBACK_LOCATION: &str = "westus";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/subscriptions/{subscription}/providers/microsoft.storage/storageaccounts",
            get(list_all),
        )
        .route(ACCOUNTS_IN_GROUP, get(list_group))
        .route(&format!("{ACCOUNTS_IN_GROUP}/{{account}}"), get(show))
}

/// `GET /subscriptions/{s}/providers/Microsoft.Storage/storageAccounts`.
async fn list_all(
    State(state): State<AppState>,
    Path(sub): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let sub = subscription(&state.config, &sub)?;
    let base = base_url(&state.config, &headers, &uri)?;
    let value = state
        .storage
        .list()
        .iter()
        .map(|account| account_json(&state, &sub, &base, account))
        .collect::<Result<Vec<Value>, HttpError>>()?;
    Ok(Json(json!({ "value": value })))
}

/// `GET …/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts`.
async fn list_group(
    State(state): State<AppState>,
    Path((sub, group)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let sub = subscription(&state.config, &sub)?;
    let group = ResourceGroupName::parse("resourceGroupName", &group)?;
    let base = base_url(&state.config, &headers, &uri)?;
    let value = state
        .storage
        .list()
        .iter()
        .filter(|account| account.resource_group == group)
        .map(|account| account_json(&state, &sub, &base, account))
        .collect::<Result<Vec<Value>, HttpError>>()?;
    Ok(Json(json!({ "value": value })))
}

async fn show(
    State(state): State<AppState>,
    Path((sub, group, account)): Path<(String, String, String)>,
    headers: HeaderMap,
    uri: Uri,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let sub = subscription(&state.config, &sub)?;
    let group = ResourceGroupName::parse("resourceGroupName", &group)?;
    let name = ResourceName::parse("accountName", &account)?;
    let base = base_url(&state.config, &headers, &uri)?;
    match state.storage.get(name.as_str()) {
        Some(config) if config.resource_group == group => Ok(Json(account_json(&state, &sub, &base, config)?)),
        _ => Err(ApiError::not_found(&ResourceId::storage_account(&sub, &group, &name)).into()),
    }
}

/// An account's ARM JSON (`StorageAccount`, a tracked resource).
fn account_json(
    state: &AppState,
    sub: &SubscriptionId,
    base: &str,
    account: &AccountConfig,
) -> Result<Value, HttpError> {
    // Configured names were checked against the storage account rule, which
    // is stricter than ARM's name rule; a failure here is a configuration bug.
    let name = ResourceName::parse("accountName", &account.name)
        .map_err(|err| ApiError::internal("a configured storage account has an invalid name", err))?;
    let id = ResourceId::storage_account(sub, &account.resource_group, &name);
    let location = state
        .config
        .locations
        .first()
        .map_or(FALLBACK_LOCATION, |location| location.name.as_str());
    Ok(json!({
        "id": id.to_string(),
        "name": account.name,
        "type": "Microsoft.Storage/storageAccounts",
        "location": location,
        "tags": {},
        "kind": "StorageV2",
        "sku": {"name": "Standard_LRS", "tier": "Standard"},
        "properties": {
            "provisioningState": "Succeeded",
            "primaryLocation": location,
            "statusOfPrimary": "available",
            "primaryEndpoints": {"blob": format!("{base}{DOWNLOAD_PREFIX}/{}/", account.name)},
            "netwatch": {"kind": account.kind.as_str()},
        },
    }))
}
