//! The routes az and the SDK call before any resource (clients.md §1.1, §5.3):
//! cloud metadata, the subscription, its locations and provider namespaces.
//! Static answers built from [`ApiConfig`]; nothing here touches the store.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use netwatch_api::error::{ApiError, ErrorCode};
use serde_json::{Value, json};

use super::{ApiConfig, AppState, ArmVersion, HttpError, base_url, subscription};

/// The audience az asks tokens for (clients.md §1.1: the string is arbitrary;
/// Azure's keeps scripts written for Azure working).
const AUDIENCE: &str = "https://management.core.windows.net/";

/// The api-versions `GET /subscriptions/{s}/providers/{ns}` lists for every
/// type: what clients were seen sending (clients.md §5.2) and the newest
/// stable spec (api-contract.md §1.1); any date is accepted regardless.
const API_VERSIONS: [&str; 6] = [
    "2026-03-01",
    "2026-01-01",
    "2025-08-01",
    "2024-11-01",
    "2024-05-01",
    "2022-01-01",
];

/// Resource types per namespace served.
const PROVIDERS: [(&str, &[&str]); 3] = [
    (
        "Microsoft.Network",
        &[
            "networkWatchers",
            "networkWatchers/packetCaptures",
            "locations",
            "locations/operations",
            "locations/operationResults",
        ],
    ),
    (
        "Microsoft.Compute",
        &[
            "virtualMachines",
            "virtualMachines/extensions",
            "virtualMachineScaleSets",
        ],
    ),
    ("Microsoft.Storage", &["storageAccounts"]),
];

/// `GET /metadata/endpoints`: the cloud description `az cloud register` reads;
/// `resourceManager` and the login endpoint are this server as the client
/// reached it. No api-version needed.
pub(super) async fn metadata_endpoints(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Value>, HttpError> {
    let base = base_url(&state.config, &headers, &uri)?;
    Ok(Json(json!({
        "name": "netwatch",
        "resourceManager": format!("{base}/"),
        "portal": format!("{base}/"),
        "authentication": {
            "loginEndpoint": format!("{base}/"),
            "audiences": [AUDIENCE],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "suffixes": {},
    })))
}

fn subscription_json(config: &ApiConfig) -> Value {
    json!({
        "id": format!("/subscriptions/{}", config.subscription),
        "subscriptionId": config.subscription.as_str(),
        "tenantId": config.tenant_id,
        "displayName": "netwatch",
        "state": "Enabled",
        "authorizationSource": "RoleBased",
        "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "netwatch", "spendingLimit": "Off"},
    })
}

/// `GET /subscriptions`: the one subscription served.
pub(super) async fn list_subscriptions(State(state): State<AppState>, _version: ArmVersion) -> Json<Value> {
    Json(json!({ "value": [subscription_json(&state.config)] }))
}

/// `GET /subscriptions/{s}/locations`: the known locations, with the display
/// names az maps `-l "West US"` through.
pub(super) async fn list_locations(
    State(state): State<AppState>,
    Path(sub): Path<String>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let sub = subscription(&state.config, &sub)?;
    let value: Vec<Value> = state
        .config
        .locations
        .iter()
        .map(|location| {
            json!({
                "id": format!("/subscriptions/{sub}/locations/{}", location.name),
                "name": location.name.as_str(),
                "displayName": location.display_name,
                "regionalDisplayName": location.display_name,
                "type": "Region",
                "metadata": {"regionType": "Physical", "regionCategory": "Recommended"},
            })
        })
        .collect();
    Ok(Json(json!({ "value": value })))
}

/// `GET /subscriptions/{s}/providers/{namespace}`: a served namespace, its
/// types, their locations (display names, as ARM lists them) and api-versions.
pub(super) async fn get_provider(
    State(state): State<AppState>,
    Path((sub, namespace)): Path<(String, String)>,
    _version: ArmVersion,
) -> Result<Json<Value>, HttpError> {
    let sub = subscription(&state.config, &sub)?;
    let Some((canonical, types)) = PROVIDERS.iter().find(|(name, _)| name.eq_ignore_ascii_case(&namespace)) else {
        let served: Vec<&str> = PROVIDERS.iter().map(|(name, _)| *name).collect();
        let message = format!(
            "resource provider {namespace:?} is not served here: netwatch serves {}",
            served.join(", ")
        );
        return Err(ApiError::new(ErrorCode::NotFound, message)
            .with_target("resourceProviderNamespace")
            .into());
    };
    let locations: Vec<&str> = state.config.locations.iter().map(|l| l.display_name.as_str()).collect();
    let resource_types: Vec<Value> = types
        .iter()
        .map(|resource_type| {
            json!({
                "resourceType": resource_type,
                "locations": locations,
                "apiVersions": API_VERSIONS,
                "capabilities": "None",
            })
        })
        .collect();
    Ok(Json(json!({
        "id": format!("/subscriptions/{sub}/providers/{canonical}"),
        "namespace": canonical,
        "registrationState": "Registered",
        "registrationPolicy": "RegistrationRequired",
        "resourceTypes": resource_types,
    })))
}
