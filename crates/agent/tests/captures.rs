//! Captures end to end: start, reports, limits, stop, errors, upload.

use std::time::Instant;

use netwatch_api::agent::{AgentCaptureState, AgentMessage, ControllerMessage, UPLOAD_PREFIX};
use netwatch_api::packet_capture::{PcError, StopReason, UploadState};

use crate::fake_controller::{Agent, FakeController};
use crate::{Traffic, capture_id, require_root, start, udp_capture};

/// The bound this suite puts on create → Running (the product's target is
/// 100 ms; a debug build on a busy CI machine gets some slack).
const RUNNING_WITHIN_MS: u128 = 1_000;

#[tokio::test]
async fn a_capture_runs_to_its_time_limit_and_uploads_its_file() {
    require_root();
    let mut controller = FakeController::start().await;
    let agent = Agent::start(&controller, "lo");
    let mut conn = controller.accept().await;
    let hello = conn.welcome().await;
    assert_eq!(
        (
            hello.vm_name.as_str(),
            hello.resource_group.as_str(),
            hello.location.as_str()
        ),
        ("vm1", "rg1", "westus")
    );
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(!hello.hostname.is_empty());
    let lo = hello
        .interfaces
        .iter()
        .find(|i| i.name == "lo")
        .expect("hello lists lo");
    assert!(lo.addresses.contains(&"127.0.0.1/8".to_owned()), "{lo:?}");
    assert!(hello.captures.is_empty());

    let traffic = Traffic::new();
    let upload_path = format!("{UPLOAD_PREFIX}/acct1/vm1/pc1.cap");
    // The first two PUTs fail with 503: the agent retries.
    controller.fail_puts(2);
    let sent = Instant::now();
    conn.send(&ControllerMessage::Start(start(
        "pc1",
        udp_capture(traffic.port(), 2),
        Some(&upload_path),
    )))
    .await;
    let id = capture_id("pc1");
    let running = conn.state(&id, AgentCaptureState::Running).await;
    let latency = sent.elapsed().as_millis();
    eprintln!("start → Running report: {latency} ms");
    assert!(latency < RUNNING_WITHIN_MS, "Running after {latency} ms");
    assert!(running.started_ms.is_some());
    assert_eq!(running.upload, Some(UploadState::Pending));
    traffic.send(50);

    let reports = conn.reports_until(&id, |r| r.state != AgentCaptureState::Running).await;
    let (stopped, during) = reports.split_last().unwrap();
    assert!(
        during
            .iter()
            .any(|r| r.stats.packets_captured > 0 && r.stats.file_size_in_bytes > 24),
        "a stats report shows packets while running: {during:?}"
    );
    assert_eq!(stopped.state, AgentCaptureState::Stopped, "{stopped:?}");
    assert_eq!(stopped.stop_reason, Some(StopReason::TimeExceeded));
    assert_eq!(stopped.started_ms, running.started_ms);
    assert_eq!(stopped.stats.packets_captured, 2 * 50);
    assert_eq!(stopped.upload, Some(UploadState::Uploading));

    let uploads = conn
        .reports_until(&id, |r| r.upload == Some(UploadState::Succeeded))
        .await;
    assert!(
        uploads.iter().any(|r| r.upload == Some(UploadState::Retrying)),
        "{uploads:?}"
    );
    let put = controller.upload().await;
    assert_eq!(controller.puts(), 3);
    assert_eq!(put.path, upload_path);
    assert_eq!(put.headers.get("content-type").unwrap(), "application/vnd.tcpdump.pcap");
    let file = agent.data_dir.path().join("captures/pc1_1767225600000.cap");
    let local = std::fs::read(&file).unwrap();
    assert_eq!(put.body.as_ref(), local.as_slice(), "uploaded bytes are the local file");
    assert_eq!(put.headers.get("content-length").unwrap(), &local.len().to_string());
    let (_, packets) = netwatch_testkit::read_pcap(&file);
    assert_eq!(packets.len(), 2 * 50);
    for (i, pair) in packets.chunks(2).enumerate() {
        assert_eq!(
            pair[0].data,
            pair[1].data,
            "record {} is its datagram seen twice",
            2 * i
        );
        let payload = format!("datagram {i}");
        assert!(
            pair[0].data.ends_with(payload.as_bytes()),
            "record {} carries {payload:?}",
            2 * i
        );
    }
    assert_eq!(stopped.stats.file_size_in_bytes, local.len() as u64);
    agent.stop().await;
}

#[tokio::test]
async fn a_stop_ends_a_capture_and_bad_captures_are_errors() {
    require_root();
    let mut controller = FakeController::start().await;
    let agent = Agent::start(&controller, "lo");
    let mut conn = controller.accept().await;
    conn.welcome().await;

    // A filter that does not validate: an Error report, the agent goes on.
    let mut bad = udp_capture(9, 2);
    bad.filters.as_mut().unwrap()[0].local_port = Some("70000".to_owned());
    conn.send(&ControllerMessage::Start(start("bad", bad, None))).await;
    let error = conn.state(&capture_id("bad"), AgentCaptureState::Error).await;
    assert_eq!(error.errors, [PcError::CaptureFailed]);
    let message = error.message.unwrap();
    assert!(message.contains("70000"), "{message}");

    // A capture with a local file only, stopped by hand long before its limit.
    let traffic = Traffic::new();
    let mut local = udp_capture(traffic.port(), 60);
    local.storage_location.storage_id = None;
    local.storage_location.file_path = Some("/var/captures/team/manual.cap".to_owned());
    conn.send(&ControllerMessage::Start(start("manual", local.clone(), None)))
        .await;
    let id = capture_id("manual");
    conn.state(&id, AgentCaptureState::Running).await;
    traffic.send(5);
    let stopping = Instant::now();
    conn.send(&ControllerMessage::Stop { capture_id: id.clone() }).await;
    let stopped = conn.state(&id, AgentCaptureState::Stopped).await;
    assert!(
        stopping.elapsed().as_millis() < 1_000,
        "stopped after {:?}",
        stopping.elapsed()
    );
    assert_eq!(stopped.stop_reason, Some(StopReason::ManualStop));
    assert_eq!(stopped.upload, None);
    assert_eq!(stopped.stats.packets_captured, 2 * 5);
    let file = agent.data_dir.path().join("captures/team/manual.cap");
    assert_eq!(netwatch_testkit::read_pcap(&file).1.len(), 2 * 5);

    // The same start again is a no-op; a stop of an unknown capture is ignored.
    conn.send(&ControllerMessage::Start(start("manual", local, None))).await;
    conn.send(&ControllerMessage::Stop {
        capture_id: capture_id("nobody"),
    })
    .await;
    // An interface that does not exist: the open fails, reported, not fatal.
    let mut elsewhere = udp_capture(traffic.port(), 2);
    elsewhere.filters = None;
    conn.send(&ControllerMessage::Start(start("after", elsewhere, None)))
        .await;
    loop {
        match conn.recv().await {
            AgentMessage::Report(report) if report.capture_id == id => panic!("repeated start ran again: {report:?}"),
            AgentMessage::Report(report) if report.capture_id == capture_id("after") => {
                assert_eq!(report.state, AgentCaptureState::Running, "{report:?}");
                break;
            }
            _ => {}
        }
    }
    agent.stop().await;
}

#[tokio::test]
async fn a_capture_that_cannot_open_is_an_error() {
    let mut controller = FakeController::start().await;
    let agent = Agent::start(&controller, "nwtest-none0");
    let mut conn = controller.accept().await;
    conn.welcome().await;
    conn.send(&ControllerMessage::Start(start("noif", udp_capture(9, 2), Some("/x"))))
        .await;
    let error = conn.state(&capture_id("noif"), AgentCaptureState::Error).await;
    assert_eq!(error.errors, [PcError::CaptureFailed]);
    assert_eq!(error.upload, None);
    let message = error.message.unwrap();
    assert!(
        message.contains("open the capture on interface nwtest-none0") && message.contains("no interface named"),
        "{message}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_rejected_upload_fails_with_storage_failed() {
    require_root();
    let mut controller = FakeController::start().await;
    let agent = Agent::start(&controller, "lo");
    let mut conn = controller.accept().await;
    conn.welcome().await;
    // Not under the upload prefix: the controller answers 404, which is final.
    conn.send(&ControllerMessage::Start(start(
        "nowhere",
        udp_capture(9, 1),
        Some("/nowhere/x.cap"),
    )))
    .await;
    let id = capture_id("nowhere");
    let failed = conn
        .reports_until(&id, |r| r.upload == Some(UploadState::Failed))
        .await
        .pop()
        .unwrap();
    assert_eq!(failed.state, AgentCaptureState::Stopped);
    assert_eq!(failed.errors, [PcError::StorageFailed]);
    let message = failed.message.unwrap();
    assert!(message.contains("404"), "{message}");
    assert_eq!(controller.puts(), 0);
    agent.stop().await;
}
