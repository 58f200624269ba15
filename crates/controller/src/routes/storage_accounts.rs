//! `Microsoft.Storage/storageAccounts`: where capture files go (DESIGN §2),
//! listed and shown as ARM storage accounts so that `az storage account list`
//! and `--storage-account NAME` work (clients.md §3), and made and deleted
//! through the API (`netwatch storage account create/delete`, or the Azure
//! SDK's `storage_accounts.begin_create`).
//!
//! Accounts come from two places ([`crate::accounts`]): the configuration
//! file's `[[storage]]` tables, which the API shows but never changes (409:
//! change the file), and the API, which keeps them in the store.
//!
//! *Our choices*:
//! - every account is `StorageV2` / `Standard_LRS` (Azure takes only Standard
//!   accounts for captures, api-contract.md §6) in the location it was made in
//!   (configured ones: the first served location); its blob endpoint is where
//!   its files download from (`{base}{DOWNLOAD_PREFIX}/{name}/`);
//! - a PUT's `properties.netwatch` says where the files go, with the keys of a
//!   `[[storage]]` table (`kind` = `local`, `azureblob`, `s3` or `gcs`; camelCase
//!   spellings accepted); without it, or for a `local` account without a
//!   `path`, the files go to a directory of the controller's
//!   (`accounts_dir/{name}`). The answer is 200 with the account, made
//!   synchronously (the storage RP answers 200 or 202; SDK pollers take 200 as done);
//! - a `properties.netwatch` block in every answer says which backend keeps
//!   the account and where, never its secrets;
//! - names are unique across resource groups, as Azure's are global;
//! - a PUT over an API-made account replaces it; one that moves the files
//!   elsewhere (another kind, directory, container, bucket or endpoint) is
//!   refused while a capture uploads to it, as is a DELETE: their uploads
//!   would be lost. Credentials and part size may change at any time;
//! - DELETE answers 200, or 204 when there was no such account (ARM's
//!   idempotent delete); it never deletes the files.

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use netwatch_api::agent::DOWNLOAD_PREFIX;
use netwatch_api::error::ApiError;
use netwatch_api::packet_capture::{NetwatchCaptureStatus, UploadState};
use netwatch_api::resource::{Location, ResourceGroupName, ResourceId, ResourceName, SubscriptionId};
use netwatch_storage::{AccountConfig, AccountKind, Backend};
use serde_json::{Map, Value, json};

use super::{AppState, ArmBody, ArmVersion, HttpError, base_url, now_ms, rfc3339, subscription};
use crate::accounts::Account;
use crate::store::{CaptureRecord, StorageAccountRecord, StoreError};

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
        .route(
            "/subscriptions/{subscription}/providers/microsoft.storage/checknameavailability",
            post(check_name_availability),
        )
        .route(ACCOUNTS_IN_GROUP, get(list_group))
        .route(
            &format!("{ACCOUNTS_IN_GROUP}/{{account}}"),
            get(show).put(create).delete(delete),
        )
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
        .await?
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
        .await?
        .iter()
        .filter(|account| account.config.resource_group == group)
        .map(|account| account_json(&state, &sub, &base, account))
        .collect::<Result<Vec<Value>, HttpError>>()?;
    Ok(Json(json!({ "value": value })))
}

/// `POST /subscriptions/{s}/providers/Microsoft.Storage/checkNameAvailability`
/// (`{"name": …, "type": "Microsoft.Storage/storageAccounts"}`), which `az
/// storage account create` asks first: whether `name` is valid and free.
async fn check_name_availability(
    State(state): State<AppState>,
    Path(sub): Path<String>,
    _version: ArmVersion,
    ArmBody(body): ArmBody,
) -> Result<Json<Value>, HttpError> {
    subscription(&state.config, &sub)?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request("", format!("the body is not JSON: {err}")))?;
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return Err(ApiError::bad_request("name", "name is required: the storage account name to check").into());
    };
    if let Some(kind) = body.get("type").and_then(Value::as_str)
        && !kind.eq_ignore_ascii_case("Microsoft.Storage/storageAccounts")
    {
        let message = format!("type {kind:?} is not checked here: use Microsoft.Storage/storageAccounts");
        return Err(ApiError::bad_request("type", message).into());
    }
    if let Err(err) = netwatch_storage::account::check_name(name) {
        return Ok(Json(
            json!({"nameAvailable": false, "reason": "AccountNameInvalid", "message": err.to_string()}),
        ));
    }
    if state.storage.get(name).await?.is_some() {
        let message = format!("The storage account named {name} is already taken.");
        return Ok(Json(
            json!({"nameAvailable": false, "reason": "AlreadyExists", "message": message}),
        ));
    }
    Ok(Json(json!({"nameAvailable": true})))
}

/// The path of one account: `(subscription, group, account)`.
type AccountPath = Path<(String, String, String)>;

/// The parsed path of one account and its id.
fn account_path(
    state: &AppState,
    (sub, group, account): (String, String, String),
) -> Result<(SubscriptionId, ResourceGroupName, ResourceName, ResourceId), HttpError> {
    let sub = subscription(&state.config, &sub)?;
    let group = ResourceGroupName::parse("resourceGroupName", &group)?;
    let name = ResourceName::parse("accountName", &account)?;
    let id = ResourceId::storage_account(&sub, &group, &name);
    Ok((sub, group, name, id))
}

async fn show(
    State(state): State<AppState>,
    Path(path): AccountPath,
    headers: HeaderMap,
    uri: Uri,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let (sub, group, name, id) = account_path(&state, path)?;
    let base = base_url(&state.config, &headers, &uri)?;
    match state.storage.get(name.as_str()).await? {
        Some(account) if account.config.resource_group == group => {
            Ok(Json(account_json(&state, &sub, &base, &account)?))
        }
        _ => Err(ApiError::not_found(&id).into()),
    }
}

/// `PUT …/storageAccounts/{name}`: makes or replaces an account (module doc).
async fn create(
    State(state): State<AppState>,
    Path(path): AccountPath,
    headers: HeaderMap,
    uri: Uri,
    _version: ArmVersion,
    ArmBody(body): ArmBody,
) -> Result<Json<Value>, HttpError> {
    let (sub, group, name, _id) = account_path(&state, path)?;
    let base = base_url(&state.config, &headers, &uri)?;
    let request = AccountRequest::parse(&state, &group, &name, &body)?;
    // An account that cannot be reached is refused now, not at the first
    // capture's upload (GCS: the bucket read with the credentials).
    // Refused (400) even when the endpoint is only out of reach for now: a
    // client would retry a 503 for a while before showing what to fix.
    request.backend.probe().await.map_err(|err| {
        let message = format!(
            "storage account {name} cannot be used: {}",
            netwatch_api::error::error_chain(&err)
        );
        HttpError::from(ApiError::bad_request("properties.netwatch", message))
    })?;
    if state.storage.configured(name.as_str()).is_some() {
        return Err(ApiError::conflict(format!(
            "storage account {name} is defined in the controller's configuration file: change it there \
             (the API changes only the accounts it made)"
        ))
        .into());
    }
    let now = now_ms();
    let existing = state.store.get_storage_account(name.as_str()).await?;
    let record = StorageAccountRecord {
        name: request.config.name.clone(),
        resource_group: group.to_string(),
        location: request.location.clone(),
        tags_json: request.tags_json.clone(),
        config_json: serde_json::to_string(&request.config)
            .map_err(|err| ApiError::internal(format!("storage account {name} does not serialize"), err))?,
        version: existing.as_ref().map_or(1, |old| old.version + 1),
        created_ms: existing.as_ref().map_or(now, |old| old.created_ms),
        updated_ms: now,
    };
    let written = match &existing {
        None => match state.store.put_storage_account(&record, None).await {
            Ok(written) => written,
            Err(StoreError::Conflict(_)) => false,
            Err(err) => return Err(err.into()),
        },
        Some(old) => {
            if !old.resource_group.eq_ignore_ascii_case(group.as_str()) {
                return Err(ApiError::conflict(format!(
                    "the storage account name {name} is taken, in resource group {}: names are unique \
                     across resource groups; choose another",
                    old.resource_group
                ))
                .into());
            }
            let old_config: AccountConfig = serde_json::from_str(&old.config_json)
                .map_err(|err| ApiError::internal(format!("stored storage account {name} does not parse"), err))?;
            if !old_config.same_place(&request.config) {
                refuse_if_uploading(&state, &name, "move its files elsewhere").await?;
            }
            state.store.put_storage_account(&record, Some(old.version)).await?
        }
    };
    if !written {
        return Err(ApiError::conflict(format!(
            "storage account {name} was changed by another request meanwhile: read it and try again"
        ))
        .into());
    }
    let account = Account {
        config: request.config,
        backend: request.backend,
        made: Some(record),
    };
    tracing::info!(account = %name, kind = account.config.kind.as_str(), "storage account written");
    Ok(Json(account_json(&state, &sub, &base, &account)?))
}

/// `DELETE …/storageAccounts/{name}`: forgets an API-made account; its files stay.
async fn delete(
    State(state): State<AppState>,
    Path(path): AccountPath,
    _version: ArmVersion,
) -> Result<Response, HttpError> {
    let (_sub, group, name, _id) = account_path(&state, path)?;
    if let Some(account) = state.storage.configured(name.as_str())
        && account.config.resource_group == group
    {
        return Err(ApiError::conflict(format!(
            "storage account {name} is defined in the controller's configuration file: remove it there"
        ))
        .into());
    }
    let Some(record) = state.store.get_storage_account(name.as_str()).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    if !record.resource_group.eq_ignore_ascii_case(group.as_str()) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    refuse_if_uploading(&state, &name, "delete it").await?;
    if !state
        .store
        .delete_storage_account(name.as_str(), record.version)
        .await?
    {
        return Err(ApiError::conflict(format!(
            "storage account {name} was changed by another request meanwhile: try again"
        ))
        .into());
    }
    tracing::info!(account = %name, "storage account deleted");
    Ok(StatusCode::OK.into_response())
}

/// 409 when a capture still runs or has files to upload to account `name`,
/// naming them: `doing` would lose them.
async fn refuse_if_uploading(state: &AppState, name: &ResourceName, doing: &str) -> Result<(), HttpError> {
    let busy: Vec<String> = state
        .store
        .captures_storing_to(name.as_str())
        .await?
        .iter()
        .filter(|capture| still_uploading(capture))
        .map(|capture| capture.id.rsplit('/').next().unwrap_or_default().to_owned())
        .collect();
    if busy.is_empty() {
        return Ok(());
    }
    Err(ApiError::conflict(format!(
        "packet captures [{}] still run or upload files to storage account {name}: stop them and wait for \
         their uploads (queryStatus shows netwatch.uploadState), or delete them, before you {doing}",
        busy.join(", ")
    ))
    .into())
}

/// Whether a capture may still upload: it runs, or its agent said files wait.
fn still_uploading(capture: &CaptureRecord) -> bool {
    if capture.status.is_active() {
        return true;
    }
    let upload = serde_json::from_str::<NetwatchCaptureStatus>(&capture.stats_json)
        .ok()
        .and_then(|stats| stats.upload_state);
    matches!(
        upload,
        Some(UploadState::Pending | UploadState::Uploading | UploadState::Retrying)
    )
}

/// A checked PUT body.
struct AccountRequest {
    config: AccountConfig,
    backend: Backend,
    location: String,
    tags_json: String,
}

impl AccountRequest {
    fn parse(state: &AppState, group: &ResourceGroupName, name: &ResourceName, body: &[u8]) -> Result<Self, HttpError> {
        let body: Value = serde_json::from_slice(body)
            .map_err(|err| ApiError::bad_request("", format!("the body is not JSON: {err}")))?;
        let Value::Object(body) = body else {
            return Err(ApiError::bad_request("", "the body must be a JSON object (a storage account)").into());
        };
        netwatch_storage::account::check_name(name.as_str())
            .map_err(|err| ApiError::bad_request("accountName", err.to_string()))?;
        let location = match body.get("location") {
            None | Some(Value::Null) => default_location(state).to_owned(),
            Some(Value::String(text)) => {
                let location = Location::parse("location", text)?;
                if state.config.location(&location).is_none() {
                    let served: Vec<&str> = state.config.locations.iter().map(|l| l.name.as_str()).collect();
                    return Err(ApiError::bad_request(
                        "location",
                        format!(
                            "location {text:?} is not served here: use one of [{}]",
                            served.join(", ")
                        ),
                    )
                    .into());
                }
                location.as_str().to_owned()
            }
            Some(_) => return Err(ApiError::bad_request("location", "location must be a string, e.g. westus").into()),
        };
        if let Some(sku) = body.get("sku").and_then(|sku| sku.get("name")) {
            let sku = sku.as_str().unwrap_or_default();
            if !sku.starts_with("Standard_") {
                return Err(ApiError::bad_request(
                    "sku.name",
                    format!(
                        "sku {sku:?} cannot keep packet captures: Azure takes only Standard accounts \
                         (e.g. Standard_LRS)"
                    ),
                )
                .into());
            }
        }
        if let Some(kind) = body.get("kind") {
            let kind = kind.as_str().unwrap_or_default();
            if !["StorageV2", "Storage", "BlobStorage"].contains(&kind) {
                return Err(ApiError::bad_request(
                    "kind",
                    format!("kind {kind:?} is not a Standard account kind: use StorageV2 (or Storage, BlobStorage)"),
                )
                .into());
            }
        }
        let tags = match body.get("tags") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(tags @ Value::Object(map)) if map.values().all(Value::is_string) => tags.clone(),
            Some(_) => {
                return Err(ApiError::bad_request("tags", "tags must be an object of string values").into());
            }
        };
        let netwatch = body
            .get("properties")
            .and_then(|properties| properties.get("netwatch"))
            .cloned()
            .unwrap_or_else(|| json!({"kind": "local"}));
        let config = backend_config(state, group, name, netwatch)?;
        let backend = Backend::new(&config).map_err(|err| {
            ApiError::bad_request(
                "properties.netwatch",
                format!(
                    "storage account {name} cannot be served: {}",
                    netwatch_api::error::error_chain(&err)
                ),
            )
        })?;
        Ok(Self {
            config,
            backend,
            location,
            tags_json: tags.to_string(),
        })
    }
}

/// The account `properties.netwatch` describes: a `[[storage]]` table's keys
/// (without `name` and `resource_group`, which the path gives).
fn backend_config(
    state: &AppState,
    group: &ResourceGroupName,
    name: &ResourceName,
    netwatch: Value,
) -> Result<AccountConfig, HttpError> {
    const TARGET: &str = "properties.netwatch";
    let Value::Object(mut table) = netwatch else {
        return Err(ApiError::bad_request(
            TARGET,
            "properties.netwatch must be an object: {\"kind\": \"local\" | \"azureblob\" | \"s3\" | \"gcs\", …}",
        )
        .into());
    };
    for key in ["name", "resource_group", "resourceGroup"] {
        if table.contains_key(key) {
            return Err(ApiError::bad_request(
                TARGET,
                format!("properties.netwatch.{key} cannot be set: the request's path gives it"),
            )
            .into());
        }
    }
    // A key file names a path on the controller's machine: the API would
    // read any file the caller names (and say whether it exists).
    if table.get("kind").and_then(Value::as_str) == Some("gcs") && table.contains_key("credentials") {
        return Err(ApiError::bad_request(
            "properties.netwatch.credentials",
            "credentials is a key file on the controller's machine, which the API does not read: send the key \
             itself as serviceAccountKey (`netwatch storage account create --credentials FILE` reads the file and \
             sends it), or leave both out for the controller's own identity",
        )
        .into());
    }
    if table.get("kind").and_then(Value::as_str) == Some("local") {
        match table.get("path") {
            None | Some(Value::Null) => {
                let Some(dir) = &state.config.accounts_dir else {
                    return Err(ApiError::bad_request(
                        "properties.netwatch.path",
                        "this controller has no directory for new accounts (accounts_dir): give \
                         properties.netwatch.path, an absolute directory on the controller",
                    )
                    .into());
                };
                table.insert("path".to_owned(), json!(dir.join(name.as_str())));
            }
            Some(Value::String(path)) if !PathBuf::from(path).is_absolute() => {
                return Err(ApiError::bad_request(
                    "properties.netwatch.path",
                    format!("path {path:?} is relative: give an absolute directory on the controller"),
                )
                .into());
            }
            Some(_) => {}
        }
    }
    let example = match table.get("kind").and_then(Value::as_str) {
        Some("gcs") => {
            "{\"kind\": \"gcs\", \"bucket\": \"captures\", \"serviceAccountKey\": \"<the key file's JSON, as a string>\"}"
        }
        Some("azureblob") => "{\"kind\": \"azureblob\", \"account\": \"acct\", \"key\": \"…\"}",
        _ => {
            "{\"kind\": \"s3\", \"bucket\": \"captures\", \"region\": \"us-east-1\", \"accessKeyId\": \"…\", \
             \"secretAccessKey\": \"…\"}"
        }
    };
    table.insert("name".to_owned(), json!(name.as_str()));
    table.insert("resource_group".to_owned(), json!(group.as_str()));
    serde_json::from_value(Value::Object(table)).map_err(|err| {
        let message = format!("{err}: properties.netwatch takes the keys of a [[storage]] table, e.g. {example}");
        ApiError::bad_request(TARGET, message).into()
    })
}

/// Where accounts are when nothing says: the first served location.
fn default_location(state: &AppState) -> &str {
    state
        .config
        .locations
        .first()
        .map_or(FALLBACK_LOCATION, |location| location.name.as_str())
}

/// An account's ARM JSON (`StorageAccount`, a tracked resource).
fn account_json(state: &AppState, sub: &SubscriptionId, base: &str, account: &Account) -> Result<Value, HttpError> {
    let config = &account.config;
    // Names were checked against the storage account rule, which is stricter
    // than ARM's name rule; a failure here is a bug.
    let name = ResourceName::parse("accountName", &config.name)
        .map_err(|err| ApiError::internal("a storage account has an invalid name", err))?;
    let id = ResourceId::storage_account(sub, &config.resource_group, &name);
    let (location, tags, created) = match &account.made {
        Some(made) => (
            made.location.as_str(),
            serde_json::from_str(&made.tags_json).unwrap_or_else(|_| json!({})),
            Some(rfc3339(made.created_ms)),
        ),
        None => (default_location(state), json!({}), None),
    };
    let mut netwatch = json!({
        "kind": config.kind.as_str(),
        "source": if account.made.is_some() { "api" } else { "configuration" },
        "partSize": config.part_size(),
    });
    match &config.kind {
        AccountKind::Local { path } => netwatch["path"] = json!(path),
        AccountKind::AzureBlob {
            account,
            container,
            key,
            endpoint,
            ..
        } => {
            netwatch["account"] = json!(account);
            netwatch["container"] = json!(container);
            netwatch["credential"] = json!(if key.is_some() { "key" } else { "sas" });
            if let Some(endpoint) = endpoint {
                netwatch["endpoint"] = json!(endpoint.as_str());
            }
        }
        AccountKind::S3 {
            bucket,
            region,
            endpoint,
            ..
        } => {
            netwatch["bucket"] = json!(bucket);
            netwatch["region"] = json!(region);
            if let Some(endpoint) = endpoint {
                netwatch["endpoint"] = json!(endpoint.as_str());
            }
        }
        AccountKind::Gcs {
            bucket,
            credentials,
            service_account_key,
            endpoint,
        } => {
            netwatch["bucket"] = json!(bucket);
            netwatch["credential"] = json!(match (credentials, service_account_key) {
                (Some(_), _) => "file",
                (None, Some(_)) => "key",
                (None, None) => "machine",
            });
            if let Some(endpoint) = endpoint {
                netwatch["endpoint"] = json!(endpoint.as_str());
            }
        }
    }
    let mut properties = json!({
        "provisioningState": "Succeeded",
        "primaryLocation": location,
        "statusOfPrimary": "available",
        "primaryEndpoints": {"blob": format!("{base}{DOWNLOAD_PREFIX}/{}/", config.name)},
        "netwatch": netwatch,
    });
    if let Some(created) = created {
        properties["creationTime"] = json!(created);
    }
    Ok(json!({
        "id": id.to_string(),
        "name": config.name,
        "type": "Microsoft.Storage/storageAccounts",
        "location": location,
        "tags": tags,
        "kind": "StorageV2",
        "sku": {"name": "Standard_LRS", "tier": "Standard"},
        "properties": properties,
    }))
}
