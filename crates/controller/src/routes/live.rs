//! Live views (issue 18; the flow is `crate::live`'s):
//!
//! - `GET …/packetCaptures/{name}/live` (netwatch's own action, a reader
//!   token): a running capture's packets as one pcapng stream, every host of
//!   a capture over many hosts with its own interface; 409 for a capture that
//!   is not running (its files are stored: download them).
//! - `POST {LIVE_PREFIX}/{stream}` (an agent): the body of frames one host's
//!   agent sends for one view; answered when the body ends, or at once when
//!   the viewer has left (the agent then stops). An agent may post only the
//!   streams asked of its own host.

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Buf, BytesMut};
use futures_util::StreamExt as _;
use netwatch_api::agent::{LIVE_PREFIX, LiveFrame, LiveHello, LiveStats, run_id};
use netwatch_api::error::{ApiError, ErrorCode};

use super::packet_captures::{CAPTURE_PATH, CapturePath, find_capture};
use super::{AppState, ArmVersion, HttpError};
use crate::auth::AgentIdentity;
use crate::lifecycle;
use crate::live::{LiveEvent, View, ViewHost, count_records};
use crate::store::CaptureStatus;

/// The media type of a pcapng stream.
const PCAPNG: &str = "application/x-pcapng";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(&format!("{CAPTURE_PATH}/live"), get(view))
        .route(&format!("{LIVE_PREFIX}/{{stream}}"), post(agent_stream))
}

async fn view(
    State(state): State<AppState>,
    Path(path): Path<CapturePath>,
    _version: ArmVersion,
) -> Result<Response, HttpError> {
    let record = find_capture(&state, &path).await?;
    let parts = if lifecycle::fleet::is_fleet(&record) {
        Some(lifecycle::fleet::parts(&state, &record.id).await?)
    } else {
        None
    };
    // A capture over many hosts: its status as queryStatus rolls it up.
    let status = match &parts {
        Some(parts) => lifecycle::fleet::rolled_status(&record, parts.iter().map(|part| &part.record)),
        None => record.status,
    };
    if status != CaptureStatus::Running {
        let message = format!(
            "packet capture {} is {}: only a running capture can be watched live; its files are at its \
             storagePath (`netwatch network watcher packet-capture download`)",
            path.3,
            status.as_str()
        );
        return Err(ApiError::conflict(message).into());
    }
    let hosts = if let Some(parts) = parts {
        parts
            .into_iter()
            .map(|part| {
                let name = part.record.instance.clone().map_or_else(
                    || part.record.target_id.rsplit('/').next().unwrap_or_default().to_owned(),
                    |instance| {
                        let set = record.target_id.rsplit('/').next().unwrap_or_default();
                        format!("{set}_{instance}")
                    },
                );
                let absent = (part.record.status != CaptureStatus::Running)
                    .then(|| format!("its part of the capture is {}", part.record.status.as_str()));
                ViewHost {
                    vm_id: part.record.target_id.clone(),
                    name,
                    run: run_id(&part.record.id, part.record.created_ms),
                    absent,
                }
            })
            .collect()
    } else {
        vec![ViewHost {
            vm_id: record.target_id.clone(),
            name: record.target_id.rsplit('/').next().unwrap_or_default().to_owned(),
            run: run_id(&record.id, record.created_ms),
            absent: None,
        }]
    };
    let view = View::open(state.live.clone(), state.hub.clone(), path.3.clone(), hosts).await;
    let first = view.section();
    let rest = futures_util::stream::unfold(view, |mut view| async move {
        let bytes = view.next_bytes().await?;
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from(bytes)), view))
    });
    let body = futures_util::stream::once(async move { Ok(bytes::Bytes::from(first)) }).chain(rest);
    let headers = [
        (header::CONTENT_TYPE, PCAPNG),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    Ok((StatusCode::OK, headers, Body::from_stream(body)).into_response())
}

/// One host's frames for one view, passed on as they come.
async fn agent_stream(
    State(state): State<AppState>,
    Path(stream_id): Path<String>,
    identity: Option<Extension<AgentIdentity>>,
    body: Body,
) -> Result<Response, HttpError> {
    let Some(stream) = state.live.get(&stream_id) else {
        let message = format!("no viewer waits for live stream {stream_id}: it left");
        return Err(HttpError::with_status(
            StatusCode::GONE,
            "Gone",
            ApiError::new(ErrorCode::NotFound, message),
        ));
    };
    if let Some(Extension(AgentIdentity::Credential { vm_id })) = &identity
        && !vm_id.eq_ignore_ascii_case(&stream.vm_id)
    {
        let message = format!("live stream {stream_id} is another host's: an agent streams only its own captures");
        return Err(HttpError::with_status(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            ApiError::new(ErrorCode::InvalidRequestFormat, message),
        ));
    }
    let host = stream.host;
    let mut frames = body.into_data_stream();
    let mut buffer = BytesMut::new();
    let mut little = true;
    let mut why = None;
    'body: loop {
        let chunk = tokio::select! {
            chunk = frames.next() => chunk,
            () = stream.tx.closed() => break 'body,
        };
        let chunk = match chunk {
            Some(Ok(chunk)) => chunk,
            Some(Err(error)) => {
                why = Some(format!("the agent's stream broke off: {error}"));
                break;
            }
            None => break,
        };
        buffer.extend_from_slice(&chunk);
        while buffer.len() >= LiveFrame::HEADER_LEN {
            let kind = buffer[0];
            let len = u32::from_le_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
            if len > LiveFrame::MAX_PAYLOAD + 300_000 {
                why = Some(format!(
                    "the agent sent a frame of {len} bytes, more than a live frame holds"
                ));
                break 'body;
            }
            if buffer.len() < LiveFrame::HEADER_LEN + len {
                break;
            }
            buffer.advance(LiveFrame::HEADER_LEN);
            let payload = buffer.split_to(len).freeze();
            let event = match kind {
                LiveFrame::HELLO => match serde_json::from_slice::<LiveHello>(&payload) {
                    Ok(hello) => {
                        little = hello.little_endian;
                        // The viewer needs the interface before any packet: wait for room.
                        if stream.tx.send(LiveEvent::Hello { host, hello }).await.is_err() {
                            break 'body;
                        }
                        continue;
                    }
                    Err(error) => {
                        why = Some(format!("the agent's hello does not parse: {error}"));
                        break 'body;
                    }
                },
                LiveFrame::RECORDS => LiveEvent::Records { host, records: payload },
                LiveFrame::STATS => match serde_json::from_slice::<LiveStats>(&payload) {
                    Ok(stats) => LiveEvent::Stats { host, stats },
                    Err(_) => continue,
                },
                _ => continue,
            };
            match stream.tx.try_send(event) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(LiveEvent::Records { records, .. })) => {
                    let lost = count_records(&records, little);
                    stream.dropped.fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
                }
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => break 'body,
            }
        }
    }
    // The last word waits for room: the view ends on it.
    let _ = stream.tx.send(LiveEvent::Ended { host, why }).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
