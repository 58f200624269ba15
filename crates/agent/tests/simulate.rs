//! Simulated hosts: many channels, immediate answers, no capture.

use netwatch_api::agent::{AgentCaptureState, ControllerMessage};
use netwatch_api::packet_capture::StopReason;
use tokio::sync::oneshot;

use crate::fake_controller::FakeController;
use crate::{capture_id, start, udp_capture};

#[tokio::test]
async fn simulated_hosts_answer_starts_and_stops() {
    let mut controller = FakeController::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = controller.agent_config(dir.path(), "any");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(netwatch_agent::run_simulated(config, 3, async {
        let _ = rx.await;
    }));
    let mut conns = vec![];
    let mut names = vec![];
    for _ in 0..3 {
        let mut conn = controller.accept().await;
        names.push(conn.welcome().await.vm_name);
        conns.push(conn);
    }
    names.sort();
    assert_eq!(names, ["vm1-0000", "vm1-0001", "vm1-0002"]);

    let conn = &mut conns[1];
    let id = capture_id("sim");
    conn.send(&ControllerMessage::Start(start("sim", udp_capture(9, 2), false)))
        .await;
    let running = conn.state(&id, AgentCaptureState::Running).await;
    assert!(running.started_ms.is_some());
    conn.send(&ControllerMessage::Stop { capture_id: id.clone() }).await;
    let stopped = conn.state(&id, AgentCaptureState::Stopped).await;
    assert_eq!(stopped.stop_reason, Some(StopReason::ManualStop));
    assert_eq!(stopped.started_ms, running.started_ms);
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "no files");

    tx.send(()).unwrap();
    tokio::time::timeout(crate::fake_controller::WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
