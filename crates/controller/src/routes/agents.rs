//! The agent channel's HTTP side: `GET /netwatch/v1/agent/channel` upgraded
//! to a WebSocket, served by [`crate::hub::serve_agent`].

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use netwatch_api::agent::CHANNEL_PATH;
use netwatch_api::error::{ApiError, ErrorCode};

use super::AppState;
use crate::auth::AgentIdentity;
use crate::errors::HttpError;
use crate::hub;

/// Largest message an agent may send: a hello lists interfaces and captures,
/// far below this; a bigger frame is a broken or hostile agent.
const MAX_AGENT_MESSAGE: usize = 1024 * 1024;

/// Read buffer per agent connection (the benchmark: 169 → ~80 KiB an agent).
const AGENT_READ_BUFFER: usize = 16 * 1024;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(CHANNEL_PATH, get(channel))
}

async fn channel(
    State(state): State<AppState>,
    identity: Option<Extension<AgentIdentity>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The authentication layer always says who it let in; without it (no
    // tokens configured) the hello is trusted.
    let identity = identity.map_or(AgentIdentity::Shared, |Extension(identity)| identity);
    if state.hub.is_draining() {
        // The agent tries its next controller address at once.
        let error = ApiError::new(
            ErrorCode::ServiceUnavailable,
            "this controller replica is draining: connect to another one",
        );
        return HttpError::unavailable(error, 1).into_response();
    }
    upgrade
        .max_message_size(MAX_AGENT_MESSAGE)
        // Agents send small frames; axum's default 128 KiB read buffer per
        // connection was most of a connected agent's cost.
        .read_buffer_size(AGENT_READ_BUFFER)
        .on_upgrade(move |socket| hub::serve_agent(state, socket, identity))
}
