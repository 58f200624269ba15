//! The channel: token, reconnects, and reports kept across them.

use std::time::Duration;

use netwatch_api::agent::{AgentCaptureState, AgentMessage, ControllerMessage};
use netwatch_api::packet_capture::StopReason;

use crate::fake_controller::{Agent, FakeController, until};
use crate::{Traffic, capture_id, require_root, start, udp_capture};

#[tokio::test]
async fn a_wrong_token_is_turned_away_and_retried() {
    let controller = FakeController::start().await;
    let agent = Agent::start_with(&controller, |config| config.token = "wrong".to_owned(), "lo");
    until("the agent keeps retrying", || controller.rejected() >= 3).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_lost_connection_is_reestablished_and_the_hello_lists_the_capture() {
    require_root();
    let mut controller = FakeController::start().await;
    let agent = Agent::start(&controller, "lo");
    let mut conn = controller.accept().await;
    conn.welcome().await;
    let traffic = Traffic::new();
    conn.send(&ControllerMessage::Start(start(
        "kept",
        udp_capture(traffic.port(), 2),
        false,
    )))
    .await;
    let id = capture_id("kept");
    let running = conn.state(&id, AgentCaptureState::Running).await;

    // Drop the connection: the agent comes back, and its hello has the capture.
    drop(conn);
    let mut conn = controller.accept().await;
    let hello = conn.welcome().await;
    let listed: Vec<_> = hello
        .captures
        .iter()
        .map(|c| (c.capture_id.as_str(), c.state))
        .collect();
    assert_eq!(listed, [(id.as_str(), AgentCaptureState::Running)]);
    assert_eq!(hello.captures[0].started_ms, running.started_ms);
    // While the controller turns it away, the capture ends on its own limit;
    // traffic sent meanwhile is captured.
    controller.refuse(true);
    drop(conn);
    traffic.send(7);
    let rejected = controller.rejected();
    until("the agent tries again", || controller.rejected() > rejected).await;
    // The scenario, not a wait for a condition: time passes while disconnected.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    controller.refuse(false);
    let mut conn = controller.accept().await;
    let hello = conn.welcome().await;
    assert_eq!(hello.captures.len(), 1, "{:?}", hello.captures);
    let listed = &hello.captures[0];
    assert_eq!(
        (listed.state, listed.stop_reason.clone(), listed.stats.packets_captured),
        (AgentCaptureState::Stopped, Some(StopReason::TimeExceeded), 7)
    );
    // Sent again on its own once welcomed: now delivered, it is not listed again.
    let stopped = conn.state(&id, AgentCaptureState::Stopped).await;
    assert_eq!(stopped, *listed);
    drop(conn);
    let mut conn = controller.accept().await;
    let hello = conn.welcome().await;
    assert!(hello.captures.is_empty(), "{:?}", hello.captures);
    // And the new connection carries heartbeats when nothing happens.
    assert_eq!(conn.recv().await, AgentMessage::Heartbeat);
    agent.stop().await;
}
