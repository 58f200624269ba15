//! `GET /metrics` (issue 15): the controller's metrics ([`crate::metrics`])
//! in OpenMetrics text for Prometheus, for a reader token. The gauges of the
//! moment (agents connected here, captures by status) are read as it answers.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{AppState, HttpError};
use crate::metrics::StatusLabel;

/// Where the metrics are.
pub const METRICS_PATH: &str = "/metrics";

const STATUSES: [&str; 4] = ["NotStarted", "Running", "Stopped", "Error"];

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(METRICS_PATH, get(metrics))
}

async fn metrics(State(state): State<AppState>) -> Result<Response, HttpError> {
    let metrics = &state.metrics;
    metrics
        .agents_connected
        .set(i64::try_from(state.hub.connected()).unwrap_or(i64::MAX));
    let counts = state.store.count_host_captures().await?;
    for status in STATUSES {
        let count = counts
            .iter()
            .find(|(name, _)| name == status)
            .map_or(0, |(_, count)| *count);
        metrics
            .captures
            .get_or_create(&StatusLabel {
                status: status.to_owned(),
            })
            .set(count);
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        metrics.encode(),
    )
        .into_response())
}
