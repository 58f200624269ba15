//! Several controllers on one PostgreSQL (DESIGN §7, issue 15): what one
//! replica tells the others, and how it keeps track of them.
//!
//! Each replica has a random id, says it is alive in the store every
//! [`REPLICA_BEAT`], and marks the VMs whose agent channel it holds. Work for
//! an agent held elsewhere (a start, a stop, an upgrade) goes to its replica
//! through PostgreSQL's `LISTEN/NOTIFY` on one channel ([`Bus`] messages):
//! pushed, no polling on the start path. An operation ending anywhere wakes
//! the requests waiting on operations everywhere, so a `PUT` answered by one
//! replica returns as soon as the agent on another reports Running.
//!
//! Notifications are not kept: one sent while a replica was not listening
//! (PostgreSQL restarting, the listener reconnecting) is lost. What would
//! have been lost is caught up: a replica that listens again pushes its
//! agents what they should run or stop ([`crate::hub::repush`]) and wakes its
//! waiting requests; an agent that moves to another replica gets the same at
//! its hello.

use std::time::Duration;

use netwatch_api::agent::{ControllerMessage, parse_run_id, run_id};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::clock::now_ms;
use crate::store::{MAX_NOTIFY_PAYLOAD, REPLICA_BEAT, Store, StoreError};

/// A message between replicas, as JSON in a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Bus {
    /// An operation ended ([`crate::store::OPERATION_ENDED`]).
    OperationEnded,
    /// For the agent of `vm`, held by `replica`.
    Push {
        replica: String,
        vm: String,
        message: Box<ControllerMessage>,
    },
    /// Start run `created_ms` of capture `capture` on `vm`'s agent, held by
    /// `replica`, as stored: a start too long for one notification.
    Start {
        replica: String,
        vm: String,
        capture: String,
        created_ms: i64,
    },
    /// Close `vm`'s channel on `replica` (its agent was cut off).
    Disconnect { replica: String, vm: String },
}

impl Bus {
    /// The notification's text: the message, or for a start that does not
    /// fit, the capture to read and start.
    fn payload(&self) -> String {
        let text = serde_json::to_string(self).expect("bus messages always serialize");
        match self {
            Bus::Push { replica, vm, message } if text.len() > MAX_NOTIFY_PAYLOAD => {
                let ControllerMessage::Start(start) = message.as_ref() else {
                    // Only a start carries a request of any size.
                    return text;
                };
                let capture = parse_run_id(&start.capture_id).map_or(start.capture_id.as_str(), |(id, _)| id);
                let by_id = Bus::Start {
                    replica: replica.clone(),
                    vm: vm.clone(),
                    capture: capture.to_owned(),
                    created_ms: start.created_ms,
                };
                serde_json::to_string(&by_id).expect("bus messages always serialize")
            }
            _ => text,
        }
    }
}

/// Sends `message` to the other replicas.
pub(crate) async fn publish(store: &Store, message: &Bus) -> Result<(), StoreError> {
    store.notify(&message.payload()).await
}

/// This replica in the store: said alive every [`REPLICA_BEAT`] (draining
/// once it drains) and, on PostgreSQL, listening to the others; until the hub
/// shuts down. On SQLite the row is kept all the same (one replica).
pub fn start(state: &AppState) {
    let closing = state.hub.closing();
    let tasks = state.hub.tracker();
    let beating = state.clone();
    let until = closing.clone();
    tasks.spawn(async move {
        until
            .run_until_cancelled(async {
                let mut ticks = tokio::time::interval(REPLICA_BEAT);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut failing = false;
                loop {
                    ticks.tick().await;
                    let hub = &beating.hub;
                    let started = std::time::Instant::now();
                    let beat = beating
                        .store
                        .beat_replica(hub.replica(), hub.started_ms(), now_ms(), hub.draining_since())
                        .await;
                    if beat.is_ok() {
                        beating.metrics.store_query.observe(started.elapsed().as_secs_f64());
                    }
                    hub.set_store_down(beat.as_ref().is_err_and(StoreError::is_unavailable));
                    match beat {
                        Ok(()) if failing => {
                            tracing::info!(replica = hub.replica(), "the state store answers again");
                            failing = false;
                        }
                        Ok(()) => {}
                        Err(err) if !failing => {
                            tracing::error!(replica = hub.replica(), error = %err, "cannot say this replica is alive in the state store: the other replicas will consider its agents gone until it can; check the database");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                }
            })
            .await;
    });
    if state.store.backend() == crate::store::Backend::Postgres {
        let listening = state.clone();
        tasks.spawn(async move {
            closing.run_until_cancelled(listen(listening)).await;
        });
    }
}

/// How long the listener waits before connecting again.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// Listens to the other replicas for good: connects, catches up on what it
/// may have missed, hands each message on; on any failure connects again.
async fn listen(state: AppState) {
    let mut first = true;
    let mut failures: u32 = 0;
    loop {
        let mut listener = match state.store.listen().await {
            Ok(Some(listener)) => listener,
            Ok(None) => return,
            Err(err) => {
                failures += 1;
                if failures == 1 {
                    tracing::error!(error = %err, "cannot listen to the other replicas: work for agents held here from requests to other replicas waits until the database answers");
                }
                tokio::time::sleep(LISTEN_RETRY).await;
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(attempts = failures, "listening to the other replicas again");
        }
        failures = 0;
        if !first {
            catch_up(&state).await;
        }
        first = false;
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => handle(&state, notification.payload()).await,
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "lost the connection that listens to the other replicas; connecting again");
                    break;
                }
            }
        }
    }
}

/// After a gap in listening: every waiting request looks again, and every
/// agent held here gets what it should run or stop.
async fn catch_up(state: &AppState) {
    state.store.operation_ended_elsewhere();
    for vm in state.hub.vms() {
        if let Err(err) = crate::hub::repush(state, &vm).await {
            tracing::warn!(vm, error = %err, "could not push an agent what it may have missed");
        }
    }
}

/// Acts on one notification.
async fn handle(state: &AppState, payload: &str) {
    let message: Bus = match serde_json::from_str(payload) {
        Ok(message) => message,
        Err(err) => {
            tracing::warn!(error = %err, "a notification that is not a netwatch message; ignored");
            return;
        }
    };
    let here = state.hub.replica();
    match message {
        Bus::OperationEnded => state.store.operation_ended_elsewhere(),
        Bus::Push { replica, vm, message } if replica == here => {
            if !state.hub.deliver(&vm, *message) {
                tracing::debug!(
                    vm,
                    "work for an agent that left this replica meanwhile: it gets it at its hello"
                );
            }
        }
        Bus::Start {
            replica,
            vm,
            capture,
            created_ms,
        } if replica == here => start_stored(state, &vm, &capture, created_ms).await,
        Bus::Disconnect { replica, vm } if replica == here => {
            state.hub.disconnect_here(&vm);
        }
        Bus::Push { .. } | Bus::Start { .. } | Bus::Disconnect { .. } => {}
    }
}

/// Starts run `created_ms` of `capture` on `vm`'s agent as the store has it.
async fn start_stored(state: &AppState, vm: &str, capture: &str, created_ms: i64) {
    let record = match state.store.get_capture(capture).await {
        Ok(Some(record)) if record.created_ms == created_ms => record,
        Ok(_) => return,
        Err(err) => {
            tracing::warn!(capture, error = %err, "could not read a capture to start: its agent gets it at its next hello");
            return;
        }
    };
    match crate::lifecycle::start_message(&record) {
        Ok(start) => {
            debug_assert_eq!(start.capture_id, run_id(&record.id, record.created_ms));
            state.hub.deliver(vm, ControllerMessage::Start(start));
        }
        Err(err) => tracing::error!(capture, error = %err, "stored capture cannot be started"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ended_is_what_the_store_sends() {
        let parsed: Bus = serde_json::from_str(crate::store::OPERATION_ENDED).unwrap();
        assert_eq!(parsed, Bus::OperationEnded);
    }

    #[test]
    fn a_push_round_trips_and_a_start_too_long_goes_by_its_capture() {
        let push = Bus::Push {
            replica: "r1".into(),
            vm: "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v".into(),
            message: Box::new(ControllerMessage::Stop {
                capture_id: "c#12".into(),
            }),
        };
        assert_eq!(serde_json::from_str::<Bus>(&push.payload()).unwrap(), push);
        let start: netwatch_api::agent::StartCapture = serde_json::from_value(serde_json::json!({
            "captureId": "/subscriptions/s/x/packetCaptures/pc#1700000000123",
            "createdMs": 1_700_000_000_123_i64,
            "parameters": {"target": "v", "storageLocation": {"filePath": "x"},
                "filters": vec![serde_json::json!({"protocol": "TCP", "localIPAddress": "10.0.0.1"}); 200]},
        }))
        .unwrap_or_else(|err| panic!("a start message to test with: {err}"));
        let big = Bus::Push {
            replica: "r1".into(),
            vm: "v".into(),
            message: Box::new(ControllerMessage::Start(start)),
        };
        let payload = big.payload();
        assert!(payload.len() <= MAX_NOTIFY_PAYLOAD, "{}", payload.len());
        assert_eq!(
            serde_json::from_str::<Bus>(&payload).unwrap(),
            Bus::Start {
                replica: "r1".into(),
                vm: "v".into(),
                capture: "/subscriptions/s/x/packetCaptures/pc".into(),
                created_ms: 1_700_000_000_123,
            }
        );
    }
}
