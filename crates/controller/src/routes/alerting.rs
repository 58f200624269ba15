//! Captures triggered by alerts (issue 16): flight recorders and triggers
//! under a network watcher (netwatch's own ARM-shaped resources), and the
//! webhook alerting systems post to.
//!
//! - `PUT/GET/DELETE …/networkWatchers/{w}/netwatchFlightRecorders/{name}`,
//!   `GET …/netwatchFlightRecorders`: PUT 200 (replaced) or 201 (created),
//!   the hosts told at once; GET shows each host's recorder as its agent
//!   last said; DELETE 200, or 204 when there was none, the hosts told to
//!   stop (their files are deleted).
//! - `PUT/GET/DELETE …/networkWatchers/{w}/netwatchTriggers/{name}`,
//!   `GET …/netwatchTriggers`: the answer to the PUT that makes a trigger
//!   (or gives it a new `webhookSecret`) holds `webhookUrl` with the secret,
//!   the only time it is shown; it is stored as its SHA-256.
//! - `POST /netwatch/v1/alerts/{secret}` (Azure action groups, which send no
//!   headers) or `POST /netwatch/v1/alerts` with `Authorization: Bearer
//!   {secret}` (Alertmanager's `http_config.authorization`): the body is
//!   Azure Monitor's common alert schema or Alertmanager's webhook (told
//!   apart by `schemaId` and `version`). 200 with what happened to each
//!   alert and host (`alerting::AlertOutcome`), also when nothing matched;
//!   400 for a body that is neither, naming the JSON path at fault (senders
//!   do not retry a 4xx); 401 for an unknown secret; never a 5xx for the
//!   payload (a database out of reach is 503, which senders retry).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use netwatch_api::agent::RecorderStatus;
use netwatch_api::alerts::{AZURE_COMMON_SCHEMA, Alert, parse_alertmanager, parse_azure_monitor};
use netwatch_api::error::{ApiError, ErrorCode};
use netwatch_api::recorder::{
    FlightRecorder, FlightRecorderListResult, FlightRecorderResult, RecorderHost, parse_flight_recorder,
};
use netwatch_api::resource::{ResourceId, ResourceName};
use netwatch_api::trigger::{Trigger, TriggerListResult, TriggerProperties, TriggerResult, parse_trigger};
use serde_json::json;

use super::network_watchers::{WATCHER_PATH, watcher_id};
use super::{AppState, ArmBody, ArmVersion, HttpError, base_url, now_ms, rfc3339};
use crate::alerting::{self, Firing};
use crate::auth;
use crate::store::{RecorderRecord, TriggerRecord, WatcherRecord};

/// Where alerts are posted.
pub(crate) const ALERTS_PATH: &str = "/netwatch/v1/alerts";

pub(super) fn routes() -> Router<AppState> {
    let recorders = format!("{WATCHER_PATH}/netwatchflightrecorders");
    let triggers = format!("{WATCHER_PATH}/netwatchtriggers");
    Router::new()
        .route(&recorders, get(list_recorders))
        .route(
            &format!("{recorders}/{{name}}"),
            get(show_recorder).put(put_recorder).delete(delete_recorder),
        )
        .route(&triggers, get(list_triggers))
        .route(
            &format!("{triggers}/{{name}}"),
            get(show_trigger).put(put_trigger).delete(delete_trigger),
        )
        .route(ALERTS_PATH, post(alerts_with_bearer))
        .route(&format!("{ALERTS_PATH}/{{secret}}"), post(alerts_in_path))
}

type WatcherPath = (String, String, String);
type ChildPath = (String, String, String, String);

/// The watcher the path names, which must exist.
async fn watcher(state: &AppState, path: (&str, &str, &str)) -> Result<(ResourceId, WatcherRecord), HttpError> {
    let (.., id) = watcher_id(state, path)?;
    let record = state
        .store
        .get_watcher(&id.to_string())
        .await?
        .ok_or_else(|| HttpError::from(ApiError::not_found(&id)))?;
    Ok((id, record))
}

fn child_id(state: &AppState, path: &ChildPath, recorder: bool) -> Result<ResourceId, HttpError> {
    let (sub, group, watcher, _) = watcher_id(state, (&path.0, &path.1, &path.2))?;
    if recorder {
        let name = ResourceName::parse("flightRecorderName", &path.3)?;
        Ok(ResourceId::flight_recorder(&sub, &group, &watcher, &name))
    } else {
        let name = ResourceName::parse("triggerName", &path.3)?;
        Ok(ResourceId::trigger(&sub, &group, &watcher, &name))
    }
}

fn unreadable(what: &str, id: &str, err: impl Into<netwatch_api::error::Cause>) -> HttpError {
    ApiError::internal(format!("stored {what} {id} is unreadable"), err).into()
}

// ---- flight recorders ----

/// A stored recorder with each host's status.
async fn recorder_result(state: &AppState, record: &RecorderRecord) -> Result<FlightRecorderResult, HttpError> {
    let valid = serde_json::from_str::<FlightRecorder>(&record.spec_json)
        .map_err(|err| unreadable("flight recorder", &record.id, err))?
        .validate()
        .map_err(|err| unreadable("flight recorder", &record.id, err))?;
    let id = ResourceId::parse("id", &record.id).map_err(|err| unreadable("flight recorder", &record.id, err))?;
    let mut result = valid.to_result(&id);
    for host in alerting::hosts_of_target(state, &valid.target.to_string()).await? {
        let row = state.store.recorder_status(&host).await?;
        let status = row
            .as_ref()
            .and_then(|row| serde_json::from_str::<RecorderStatus>(&row.status_json).ok())
            .filter(|status| {
                status
                    .id
                    .as_deref()
                    .is_some_and(|of| of.eq_ignore_ascii_case(&record.id))
            });
        let updated_ms = row.as_ref().map(|row| row.updated_ms);
        let connected = state.hub.is_connected(&host).await;
        result.properties.hosts.push(match status {
            Some(status) => RecorderHost {
                vm_id: host,
                state: if !connected {
                    "Disconnected"
                } else if status.running {
                    "Recording"
                } else {
                    "Failed"
                }
                .to_owned(),
                window_start: status.oldest_ms.map(rfc3339),
                #[allow(clippy::cast_precision_loss, reason = "a window of seconds")]
                window_seconds: status
                    .oldest_ms
                    .zip(updated_ms)
                    .map(|(oldest, at)| ((at - oldest).max(0) as f64) / 1000.0),
                bytes: status.bytes,
                files: status.files,
                packets: status.packets,
                kernel_drops: status.kernel_drops,
                error: status.error,
                updated: updated_ms.map(rfc3339),
            },
            None => RecorderHost {
                vm_id: host,
                state: if connected { "Waiting" } else { "Disconnected" }.to_owned(),
                window_start: None,
                window_seconds: None,
                bytes: 0,
                files: 0,
                packets: 0,
                kernel_drops: 0,
                error: None,
                updated: None,
            },
        });
    }
    Ok(result)
}

async fn list_recorders(
    State(state): State<AppState>,
    Path(path): Path<WatcherPath>,
    _version: ArmVersion,
) -> Result<Json<FlightRecorderListResult>, HttpError> {
    let (id, _) = watcher(&state, (&path.0, &path.1, &path.2)).await?;
    let mut value = Vec::new();
    for record in state.store.list_recorders(&id.to_string()).await? {
        value.push(recorder_result(&state, &record).await?);
    }
    Ok(Json(FlightRecorderListResult { value }))
}

async fn show_recorder(
    State(state): State<AppState>,
    Path(path): Path<ChildPath>,
    _version: ArmVersion,
) -> Result<Json<FlightRecorderResult>, HttpError> {
    let id = child_id(&state, &path, true)?;
    watcher(&state, (&path.0, &path.1, &path.2)).await?;
    let record = state
        .store
        .get_recorder(&id.to_string())
        .await?
        .ok_or_else(|| HttpError::from(ApiError::not_found(&id)))?;
    Ok(Json(recorder_result(&state, &record).await?))
}

async fn put_recorder(
    State(state): State<AppState>,
    Path(path): Path<ChildPath>,
    _version: ArmVersion,
    ArmBody(body): ArmBody,
) -> Result<Response, HttpError> {
    let id = child_id(&state, &path, true)?;
    let valid = parse_flight_recorder(&body)?.validate()?;
    let (watcher_id, watcher) = watcher(&state, (&path.0, &path.1, &path.2)).await?;
    let target = valid.target.to_string();
    // The target must exist (a scale set may have no host yet).
    let exists = match valid.target.kind() {
        netwatch_api::resource::ResourceKind::ScaleSet => state.store.get_scale_set(&target).await?.is_some(),
        _ => state
            .store
            .get_vm(&target)
            .await?
            .is_some_and(|vm| vm.location.eq_ignore_ascii_case(&watcher.location)),
    };
    if !exists {
        return Err(ApiError::bad_request(
            "properties.target",
            format!(
                "properties.target {target} is not a registered host or scale set in {}: install the agent on it \
                 first (`netwatch vm extension set`)",
                watcher.location
            ),
        )
        .into());
    }
    let previous = state.store.get_recorder(&id.to_string()).await?;
    let now = now_ms();
    let result = valid.to_result(&id);
    let spec_json = serde_json::to_string(&result).expect("plain data");
    let record = RecorderRecord {
        id: id.to_string(),
        target_key: target.to_lowercase(),
        spec_json,
        created_ms: previous.as_ref().map_or(now, |p| p.created_ms),
        updated_ms: now,
    };
    state.store.put_recorder(&watcher_id.to_string(), &record).await?;
    tracing::info!(recorder = %id, target = %target, seconds = valid.seconds, max_bytes = valid.max_bytes, "flight recorder set");
    alerting::push_recorders(&state, &target).await?;
    if let Some(previous) = &previous
        && !previous.target_key.eq_ignore_ascii_case(&target)
    {
        alerting::push_recorders(&state, &previous.target_key).await?;
    }
    let status = if previous.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(recorder_result(&state, &record).await?)).into_response())
}

async fn delete_recorder(
    State(state): State<AppState>,
    Path(path): Path<ChildPath>,
    _version: ArmVersion,
) -> Result<StatusCode, HttpError> {
    let id = child_id(&state, &path, true)?;
    watcher(&state, (&path.0, &path.1, &path.2)).await?;
    let Some(record) = state.store.get_recorder(&id.to_string()).await? else {
        return Ok(StatusCode::NO_CONTENT);
    };
    state.store.delete_recorder(&id.to_string()).await?;
    tracing::info!(recorder = %id, "flight recorder deleted");
    alerting::push_recorders(&state, &record.target_key).await?;
    Ok(StatusCode::OK)
}

// ---- triggers ----

/// The webhook URL of a trigger, with its secret when known.
fn webhook_url(base: &str, secret: Option<&str>) -> String {
    match secret {
        Some(secret) => format!("{base}{ALERTS_PATH}/{secret}"),
        None => format!("{base}{ALERTS_PATH}/<secret: shown only when made; PUT a new webhookSecret to replace it>"),
    }
}

fn trigger_result(record: &TriggerRecord, base: &str, secret: Option<&str>) -> Result<TriggerResult, HttpError> {
    let mut properties: TriggerProperties =
        serde_json::from_str(&record.spec_json).map_err(|err| unreadable("trigger", &record.id, err))?;
    properties.webhook_url = Some(webhook_url(base, secret));
    Ok(TriggerResult {
        id: record.id.clone(),
        name: record.id.rsplit('/').next().unwrap_or_default().to_owned(),
        kind: "Microsoft.Network/networkWatchers/netwatchTriggers".to_owned(),
        properties,
    })
}

async fn list_triggers(
    State(state): State<AppState>,
    Path(path): Path<WatcherPath>,
    _version: ArmVersion,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<TriggerListResult>, HttpError> {
    let (id, _) = watcher(&state, (&path.0, &path.1, &path.2)).await?;
    let base = base_url(&state.config, &headers, &uri)?;
    let value = state
        .store
        .list_triggers(&id.to_string())
        .await?
        .iter()
        .map(|record| trigger_result(record, &base, None))
        .collect::<Result<_, _>>()?;
    Ok(Json(TriggerListResult { value }))
}

async fn show_trigger(
    State(state): State<AppState>,
    Path(path): Path<ChildPath>,
    _version: ArmVersion,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<TriggerResult>, HttpError> {
    let id = child_id(&state, &path, false)?;
    watcher(&state, (&path.0, &path.1, &path.2)).await?;
    let base = base_url(&state.config, &headers, &uri)?;
    let record = state
        .store
        .get_trigger(&id.to_string())
        .await?
        .ok_or_else(|| HttpError::from(ApiError::not_found(&id)))?;
    Ok(Json(trigger_result(&record, &base, None)?))
}

async fn put_trigger(
    State(state): State<AppState>,
    Path(path): Path<ChildPath>,
    _version: ArmVersion,
    headers: HeaderMap,
    uri: Uri,
    ArmBody(body): ArmBody,
) -> Result<Response, HttpError> {
    let id = child_id(&state, &path, false)?;
    let base = base_url(&state.config, &headers, &uri)?;
    let valid = parse_trigger(&body)?.validate()?;
    let (watcher_id, _) = watcher(&state, (&path.0, &path.1, &path.2)).await?;
    if let Some(account) = valid.storage_location.storage_id.as_deref() {
        let account_id = ResourceId::parse_kind(
            "properties.storageLocation.storageId",
            account,
            &[netwatch_api::resource::ResourceKind::StorageAccount],
        )?;
        if state
            .storage
            .get(account_id.name().as_str())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            return Err(ApiError::bad_request(
                "properties.storageLocation.storageId",
                format!(
                    "storage account {:?} is not configured on this controller (`netwatch storage account list` \
                     shows them)",
                    account_id.name().as_str()
                ),
            )
            .into());
        }
    }
    let previous = state.store.get_trigger(&id.to_string()).await?;
    let secret = match (&valid.webhook_secret, &previous) {
        (Some(secret), _) => Some(secret.clone()),
        (None, None) => Some(auth::new_token().map_err(|err| ApiError::internal("make a webhook secret", err))?),
        (None, Some(_)) => None,
    };
    let now = now_ms();
    let record = TriggerRecord {
        id: id.to_string(),
        spec_json: serde_json::to_string(&valid.to_properties()).expect("plain data"),
        created_ms: previous.as_ref().map_or(now, |p| p.created_ms),
        updated_ms: now,
    };
    let digest = secret.as_deref().map(auth::digest);
    if !state
        .store
        .put_trigger(&watcher_id.to_string(), &record, digest.as_deref())
        .await?
    {
        return Err(ApiError::bad_request(
            "properties.webhookSecret",
            "properties.webhookSecret is another trigger's: give each trigger its own",
        )
        .into());
    }
    tracing::info!(trigger = %id, "trigger set");
    let status = if previous.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(trigger_result(&record, &base, secret.as_deref())?)).into_response())
}

async fn delete_trigger(
    State(state): State<AppState>,
    Path(path): Path<ChildPath>,
    _version: ArmVersion,
) -> Result<StatusCode, HttpError> {
    let id = child_id(&state, &path, false)?;
    watcher(&state, (&path.0, &path.1, &path.2)).await?;
    if state.store.delete_trigger(&id.to_string()).await? {
        tracing::info!(trigger = %id, "trigger deleted");
        Ok(StatusCode::OK)
    } else {
        Ok(StatusCode::NO_CONTENT)
    }
}

// ---- the webhook ----

async fn alerts_with_bearer(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    ArmBody(body): ArmBody,
) -> Result<Response, HttpError> {
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let Some(secret) = secret else {
        return Err(unknown_secret(
            "the Authorization header is missing: send `Authorization: Bearer <the trigger's webhook secret>`, or post \
             to the webhookUrl the trigger's creation answered",
        ));
    };
    deliver(&state, &secret, &headers, &uri, &body).await
}

async fn alerts_in_path(
    State(state): State<AppState>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    ArmBody(body): ArmBody,
) -> Result<Response, HttpError> {
    deliver(&state, &secret, &headers, &uri, &body).await
}

fn unknown_secret(message: &str) -> HttpError {
    HttpError::with_status(
        StatusCode::UNAUTHORIZED,
        "AuthenticationFailed",
        ApiError::new(ErrorCode::AuthenticationFailed, message),
    )
}

/// Reads a delivery as either sender's.
fn parse_delivery(body: &[u8]) -> Result<Vec<Alert>, ApiError> {
    let probe: serde_json::Value = serde_json::from_slice(body).map_err(|err| {
        ApiError::bad_body(format!(
            "the body is not JSON ({err}): post Azure Monitor's common alert schema or Alertmanager's webhook"
        ))
    })?;
    let parsed = if probe.get("schemaId").is_some() {
        parse_azure_monitor(body).map(|alert| vec![alert])
    } else if probe.get("version").is_some() && probe.get("alerts").is_some() {
        parse_alertmanager(body)
    } else {
        return Err(ApiError::bad_body(format!(
            "the body is neither Azure Monitor's common alert schema (schemaId {AZURE_COMMON_SCHEMA:?}: turn on the \
             common alert schema in the action group's webhook) nor Alertmanager's webhook (version \"4\", alerts)"
        )));
    };
    parsed.map_err(|err| ApiError::bad_request(err.path.clone(), err.to_string()))
}

/// Counts a delivery by its answer.
fn count_delivery(state: &AppState, answer: &str) {
    let label = crate::metrics::ResultLabel {
        result: answer.to_owned(),
    };
    state.metrics.alert_deliveries.get_or_create(&label).inc();
}

async fn deliver(
    state: &AppState,
    secret: &str,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Result<Response, HttpError> {
    let Some(record) = state.store.trigger_by_secret(&auth::digest(secret)).await? else {
        count_delivery(state, "unauthorized");
        tracing::warn!("alert posted with an unknown webhook secret: refused");
        return Err(unknown_secret(
            "no trigger has this webhook secret: use the webhookUrl its creation answered (or PUT a new webhookSecret)",
        ));
    };
    let alerts = match parse_delivery(body) {
        Ok(alerts) => alerts,
        Err(err) => {
            tracing::warn!(trigger = %record.id, error = %err.message(), "alert delivery not understood: refused");
            count_delivery(state, "refused");
            return Err(err.into());
        }
    };
    let properties: TriggerProperties =
        serde_json::from_str(&record.spec_json).map_err(|err| unreadable("trigger", &record.id, err))?;
    let trigger = Trigger {
        properties,
        ..Trigger::default()
    }
    .validate()
    .map_err(|err| unreadable("trigger", &record.id, err))?;
    let id = ResourceId::parse("id", &record.id).map_err(|err| unreadable("trigger", &record.id, err))?;
    let watcher_id = id
        .parent()
        .ok_or_else(|| unreadable("trigger", &record.id, "no watcher"))?;
    let Some(watcher) = state.store.get_watcher(&watcher_id.to_string()).await? else {
        return Err(ApiError::not_found(&watcher_id).into());
    };
    let base = base_url(&state.config, headers, uri)?;
    let vms = state.store.list_vms(state.config.subscription.as_ref()).await?;
    let firing = Firing {
        id: &id,
        trigger: &trigger,
        watcher: &watcher,
        base: &base,
        vms: &vms,
    };
    let mut outcomes = Vec::with_capacity(alerts.len());
    for alert in &alerts {
        outcomes.push(alerting::act(state, firing, alert).await?);
    }
    tracing::info!(trigger = %id, alerts = alerts.len(), "alert delivery taken");
    count_delivery(state, "taken");
    for host in outcomes.iter().flat_map(|outcome| &outcome.hosts) {
        let label = crate::metrics::ResultLabel {
            result: host.result.to_owned(),
        };
        state.metrics.alert_hosts.get_or_create(&label).inc();
    }
    Ok((
        StatusCode::OK,
        Json(json!({ "trigger": id.to_string(), "alerts": outcomes })),
    )
        .into_response())
}
