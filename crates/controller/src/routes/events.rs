//! `GET /netwatch/v1/captures/events`: the captures and their status as
//! server-sent events (`text/event-stream`), for views that update by
//! themselves (the console's lists and counters) without polling each capture.
//!
//! - `event: capture`, `data: {"capture": <GET's answer>, "status":
//!   <queryStatus's answer>}` for every capture of every watcher when the
//!   stream opens, then for each capture whose status changed;
//! - `event: removed`, `data: {"id": "<capture id>"}` for a capture deleted;
//! - `event: synced`, `data: {}` once the first snapshot is sent;
//! - a `:` comment every 15 s keeps proxies from closing a quiet stream.
//!
//! A reader may follow it (it is reading). Each stream reads the store every
//! [`TICK`] (so it sees the reports every replica applies) and works out a
//! capture's status again only when its row changed, or a capture over many
//! hosts (whose parts change under it), or every [`REFRESH_TICKS`] (when its
//! agent was last heard from). It ends when the replica drains, so a client
//! reconnects to another.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use serde_json::json;

use super::AppState;
use super::packet_captures::{result_of, status_of};
use crate::errors::HttpError;
use crate::lifecycle;

/// Where the stream is served.
pub const EVENTS_PATH: &str = "/netwatch/v1/captures/events";

/// How often a stream looks at the store: agents report once a second.
const TICK: Duration = Duration::from_secs(1);

/// Every this many ticks each capture's status is worked out again.
const REFRESH_TICKS: u64 = 10;

/// How long a stream waits after the store failed before it tries again.
const STORE_RETRY: Duration = Duration::from_secs(5);

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(EVENTS_PATH, get(events))
}

async fn events(State(state): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let watch = Watch {
        state,
        sent: BTreeMap::new(),
        queue: VecDeque::new(),
        ticks: 0,
        synced: false,
    };
    let stream = futures_util::stream::unfold(watch, |mut watch| async move {
        loop {
            if let Some(event) = watch.queue.pop_front() {
                return Some((Ok(event), watch));
            }
            if watch.state.hub.is_draining() {
                return None;
            }
            if watch.ticks > 0 {
                tokio::time::sleep(TICK).await;
            }
            if let Err(err) = watch.look().await {
                tracing::warn!(error = ?err, "a capture event stream could not read the store");
                tokio::time::sleep(STORE_RETRY).await;
            }
            watch.ticks += 1;
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// One stream's view: what it sent of each capture.
struct Watch {
    state: AppState,
    /// By capture id: the row's version when last worked out, and the event's data.
    sent: BTreeMap<String, (i64, String)>,
    queue: VecDeque<Event>,
    ticks: u64,
    synced: bool,
}

impl Watch {
    /// Reads every capture and queues an event for each that changed.
    async fn look(&mut self) -> Result<(), HttpError> {
        let mut seen = BTreeMap::new();
        let watchers = self
            .state
            .store
            .list_watchers(self.state.config.subscription.as_str())
            .await?;
        for watcher in watchers {
            for record in self.state.store.list_captures(&watcher.id).await? {
                seen.insert(record.id.clone(), ());
                let previous = self.sent.get(&record.id);
                let due = previous.is_none_or(|(version, _)| *version != record.version)
                    || lifecycle::fleet::is_fleet(&record)
                    || self.ticks.is_multiple_of(REFRESH_TICKS);
                if !due {
                    continue;
                }
                let status = status_of(&self.state, &record).await?;
                let data = json!({ "capture": result_of(&record)?, "status": status }).to_string();
                if previous.is_none_or(|(_, sent)| *sent != data) {
                    self.queue.push_back(Event::default().event("capture").data(&data));
                }
                self.sent.insert(record.id, (record.version, data));
            }
        }
        let removed: Vec<String> = self.sent.keys().filter(|id| !seen.contains_key(*id)).cloned().collect();
        for id in removed {
            self.sent.remove(&id);
            let data = json!({ "id": id }).to_string();
            self.queue.push_back(Event::default().event("removed").data(data));
        }
        if !self.synced {
            self.synced = true;
            self.queue.push_back(Event::default().event("synced").data("{}"));
        }
        Ok(())
    }
}
