//! `GET /netwatch/v1/health`: whether this controller can serve, for load
//! balancers and `netwatch up`'s users (public: it tells nothing secret).
//! 200 when the state store answers, 503 when it does not or the replica drains.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/netwatch/v1/health", get(health))
}

async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let agents = state.hub.connected();
    if state.hub.is_draining() {
        // A load balancer stops sending this replica new work.
        let body = json!({"status": "draining", "agentsConnected": agents,
            "message": "this controller replica is draining: it stops once its open requests are answered"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ok", "agentsConnected": agents}))),
        Err(err) => {
            tracing::warn!(error = %err, "health check: the state store does not answer");
            let body = json!({"status": "unavailable", "agentsConnected": agents,
                "message": "the state store does not answer"});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body))
        }
    }
}
