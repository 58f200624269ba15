//! Network watchers (api-contract.md §1.2 "Parent resources"): list all, GET,
//! PUT and DELETE. One watcher per known location and subscription, as Azure;
//! the capture routes create `NetworkWatcher_{location}` in `NetworkWatcherRG`
//! on first use (DESIGN §2).
//!
//! *Our choices* where the contract is silent: a PUT of an existing watcher
//! answers 200 and may not change its location; tags are accepted, not kept;
//! DELETE answers 204 whether the watcher existed or not (ARM's idempotent
//! delete) and takes its packet captures with it, as Azure does (their files stay).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use netwatch_api::agent::{ControllerMessage, run_id};
use netwatch_api::error::ApiError;
use netwatch_api::resource::{Location, ResourceGroupName, ResourceId, ResourceName, SubscriptionId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{AppState, ArmBody, ArmVersion, HttpError, now_ms, subscription};
use crate::store::WatcherRecord;

/// `networkWatchers`' route, below `/subscriptions/{subscription}/resourcegroups/{group}`.
pub(super) const WATCHER_PATH: &str =
    "/subscriptions/{subscription}/resourcegroups/{group}/providers/microsoft.network/networkwatchers/{watcher}";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/subscriptions/{subscription}/providers/microsoft.network/networkwatchers",
            get(list_all),
        )
        .route(WATCHER_PATH, get(get_watcher).put(put_watcher).delete(delete_watcher))
}

/// A watcher's ARM JSON (`NetworkWatcher`, a tracked resource).
pub(super) fn watcher_json(watcher: &WatcherRecord) -> Value {
    let name = watcher.id.rsplit('/').next().unwrap_or_default();
    json!({
        "id": watcher.id,
        "name": name,
        "type": "Microsoft.Network/networkWatchers",
        "location": watcher.location,
        "tags": {},
        // A watcher never changes once created, so its creation time tags it.
        "etag": format!("W/\"{}\"", watcher.created_ms),
        "properties": {"provisioningState": "Succeeded"},
    })
}

/// The watcher id the path names, its names validated.
pub(super) fn watcher_id(
    state: &AppState,
    (sub, group, watcher): (&str, &str, &str),
) -> Result<(SubscriptionId, ResourceGroupName, ResourceName, ResourceId), HttpError> {
    let sub = subscription(&state.config, sub)?;
    let group = ResourceGroupName::parse("resourceGroupName", group)?;
    let watcher = ResourceName::parse("networkWatcherName", watcher)?;
    let id = ResourceId::network_watcher(&sub, &group, &watcher);
    Ok((sub, group, watcher, id))
}

/// `GET /subscriptions/{s}/providers/Microsoft.Network/networkWatchers`.
async fn list_all(
    State(state): State<AppState>,
    Path(sub): Path<String>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let sub = subscription(&state.config, &sub)?;
    let watchers = state.store.list_watchers(sub.as_str()).await?;
    let value: Vec<Value> = watchers.iter().map(watcher_json).collect();
    Ok(Json(json!({ "value": value })))
}

async fn get_watcher(
    State(state): State<AppState>,
    Path((sub, group, watcher)): Path<(String, String, String)>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let (.., id) = watcher_id(&state, (&sub, &group, &watcher))?;
    match state.store.get_watcher(&id.to_string()).await? {
        Some(record) => Ok(Json(watcher_json(&record))),
        None => Err(ApiError::not_found(&id).into()),
    }
}

/// The PUT body: a tracked resource; read-only fields accepted and ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "the read-only fields are parsed only so a GET body can be PUT back"
)]
struct WatcherBody {
    location: Option<String>,
    #[serde(default)]
    tags: Option<Map<String, Value>>,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    name: Option<Value>,
    #[serde(default, rename = "type")]
    resource_type: Option<Value>,
    #[serde(default)]
    etag: Option<Value>,
}

async fn put_watcher(
    State(state): State<AppState>,
    Path((sub, group, watcher)): Path<(String, String, String)>,
    _version: ArmVersion,
    ArmBody(body): ArmBody,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    let (sub, _, _, id) = watcher_id(&state, (&sub, &group, &watcher))?;
    let body: WatcherBody = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_body(format!("the body is not a network watcher: {err}")))?;
    let text = body
        .location
        .ok_or_else(|| ApiError::bad_request("location", "location is required, such as \"westus\""))?;
    let location = Location::parse("location", &text)?;
    if state.config.location(&location).is_none() {
        let known: Vec<&str> = state.config.locations.iter().map(|l| l.name.as_str()).collect();
        let message = format!("location {text:?} is not served here: use one of {}", known.join(", "));
        return Err(ApiError::bad_request("location", message).into());
    }
    let existing = state.store.list_watchers(sub.as_str()).await?;
    if let Some(same) = existing.iter().find(|w| w.id.eq_ignore_ascii_case(&id.to_string())) {
        if same.location != location.as_str() {
            let message = format!(
                "network watcher {} is in {}: a watcher cannot move to {location}",
                id.name(),
                same.location
            );
            return Err(ApiError::bad_request("location", message).into());
        }
        return Ok((StatusCode::OK, Json(watcher_json(same))));
    }
    if let Some(other) = existing.iter().find(|w| w.location == location.as_str()) {
        let message = format!(
            "location {location} already has a network watcher, {}: one watcher per location and subscription",
            other.id
        );
        return Err(ApiError::conflict(message).into());
    }
    let record = WatcherRecord {
        id: id.to_string(),
        subscription: sub.to_string(),
        location: location.to_string(),
        created_ms: now_ms(),
    };
    let stored = state.store.ensure_watcher(&record).await?;
    Ok((StatusCode::CREATED, Json(watcher_json(&stored))))
}

async fn delete_watcher(
    State(state): State<AppState>,
    Path((sub, group, watcher)): Path<(String, String, String)>,
    _version: ArmVersion,
) -> Result<StatusCode, HttpError> {
    let (.., id) = watcher_id(&state, (&sub, &group, &watcher))?;
    // Its captures go with it, as in Azure; those still running are stopped on
    // their hosts first (their files are kept and uploaded).
    for capture in state.store.list_captures(&id.to_string()).await? {
        if capture.status.is_active() {
            let stop = ControllerMessage::Stop {
                capture_id: run_id(&capture.id, capture.created_ms),
            };
            state.hub.send(&capture.target_id, stop).await;
        }
    }
    let recorders = state.store.list_recorders(&id.to_string()).await?;
    if state.store.delete_watcher(&id.to_string()).await? {
        tracing::info!(watcher = %id, "network watcher deleted with its packet captures, flight recorders and triggers");
    }
    // Hosts whose recorder went with it stop recording (or take another's).
    for recorder in recorders {
        crate::alerting::push_recorders(&state, &recorder.target_key).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
