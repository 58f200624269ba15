//! Faults on the host (issue 6): an agent killed mid-capture and started
//! again, and a disk that fills up under a capture.
//!
//! An agent in this process cannot be SIGKILLed, so a kill is played by
//! copying its data directory while a capture runs: the copy holds exactly
//! what `kill -9` leaves (the journal, the file as far as it was written;
//! the page cache keeps every write), and a few bytes appended to the file
//! play a record torn by the kill. A second agent, on its own fake
//! controller, is then started on the copy. The real `kill -9` is in the
//! end-to-end tests (`crates/netwatch/tests/agent_faults.rs`).

use std::path::{Path, PathBuf};

use netwatch_api::agent::{AgentCaptureState, CaptureReport, ControllerMessage};
use netwatch_api::packet_capture::{PcError, StopReason, UploadState};

use crate::fake_controller::{Agent, Conn, FakeController, Upload, until};
use crate::{Traffic, capture_id, require_root, start, udp_capture};

/// What the test appends to the cut file: half a record header.
const TORN: &[u8] = &[0x55; 7];

/// The capture file of capture `name` (as `start` names it) in `data_dir`.
fn capture_file(data_dir: &Path, name: &str, seq: u32) -> PathBuf {
    let file = data_dir.join(format!("captures/{name}_1767225600000.cap"));
    if seq == 0 {
        file
    } else {
        netwatch_capture::output::ring_name(&file, seq)
    }
}

/// Copies `from` into `to`, files copied (not linked), as a killed agent leaves them.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Packets of a stored file.
fn packets(upload: &Upload) -> Vec<netwatch_testkit::Packet> {
    let stored = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(stored.path(), &upload.body).unwrap();
    netwatch_testkit::read_pcap(stored.path()).1
}

/// Runs capture `name` (UDP to `traffic`, `seconds`, uploading) on a first
/// agent, sends `count` datagrams, and once the agent counted them copies its
/// data directory, with a torn record appended to the capture file: what
/// `kill -9` would leave. Returns the copy, the first agent (still running,
/// on its own controller) and its channel.
async fn killed_mid_capture(
    name: &str,
    traffic: &Traffic,
    seconds: i64,
    count: usize,
) -> (tempfile::TempDir, Agent, Conn, FakeController) {
    let mut first = FakeController::start().await;
    let agent = Agent::start(&first, "lo");
    let mut conn = first.accept().await;
    conn.welcome().await;
    conn.send(&ControllerMessage::Start(start(
        name,
        udp_capture(traffic.port(), seconds),
        true,
    )))
    .await;
    let id = capture_id(name);
    conn.state(&id, AgentCaptureState::Running).await;
    traffic.send(count);
    let packets = count as u64;
    conn.reports_until(&id, |r| r.stats.packets_captured == packets).await;
    let copy = tempfile::tempdir().unwrap();
    copy_dir(agent.data_dir.path(), copy.path());
    let file = capture_file(copy.path(), name, 0);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(TORN);
    std::fs::write(&file, &bytes).unwrap();
    (copy, agent, conn, first)
}

/// The hello's report of `id`.
fn listed(hello: &netwatch_api::agent::Hello, id: &str) -> CaptureReport {
    hello
        .captures
        .iter()
        .find(|r| r.capture_id == id)
        .unwrap_or_else(|| panic!("the hello lists {id}: {hello:?}"))
        .clone()
}

#[tokio::test]
async fn issue_6_a_capture_cut_by_the_agent_after_its_time_limit_is_repaired_uploaded_and_stopped() {
    require_root();
    let traffic = Traffic::new();
    let (copy, first, mut first_conn, _first_controller) = killed_mid_capture("cut", &traffic, 2, 30).await;
    let id = capture_id("cut");
    // The time limit passes while the "killed" agent is away.
    first_conn.state(&id, AgentCaptureState::Stopped).await;
    first.stop().await;
    let cut_size = std::fs::metadata(capture_file(copy.path(), "cut", 0)).unwrap().len();

    let mut controller = FakeController::start().await;
    let agent = Agent::start_in(&controller, copy, |_| {}, "lo");
    let mut conn = controller.accept().await;
    let hello = conn.welcome().await;
    let report = listed(&hello, &id);
    assert_eq!(report.state, AgentCaptureState::Stopped, "{report:?}");
    assert_eq!(report.stop_reason, Some(StopReason::Other("AgentStopped".into())));
    assert_eq!(report.errors, [PcError::AgentStopped]);
    let message = report.message.clone().unwrap();
    assert!(message.contains("recovered up to its last whole packet"), "{message}");
    assert_eq!(report.stats.packets_captured, 30);
    assert_eq!(report.stats.file_size_in_bytes, cut_size - TORN.len() as u64);
    assert!(report.started_ms.is_some());

    conn.reports_until(&id, |r| r.upload == Some(UploadState::Succeeded))
        .await;
    let upload = controller.upload().await;
    assert_eq!((upload.capture_id.as_str(), upload.seq), (id.as_str(), 0));
    assert_eq!(
        upload.body.len() as u64,
        cut_size - TORN.len() as u64,
        "the torn record is cut"
    );
    let stored = packets(&upload);
    assert_eq!(stored.len(), 30, "every packet written before the kill");
    for (i, packet) in stored.iter().enumerate() {
        assert!(packet.data.ends_with(format!("datagram {i}").as_bytes()));
    }
    let data_dir = agent.stop_keeping_data().await;
    assert!(
        !capture_file(data_dir.path(), "cut", 0).exists(),
        "the stored file's local copy goes"
    );
    assert_eq!(std::fs::read_dir(data_dir.path().join("spool")).unwrap().count(), 0);
}

#[tokio::test]
async fn issue_6_a_capture_cut_by_the_agent_before_its_time_limit_resumes_in_a_new_file() {
    require_root();
    let traffic = Traffic::new();
    let (copy, first, first_conn, _first_controller) = killed_mid_capture("again", &traffic, 30, 30).await;
    drop(first_conn);
    first.stop().await;

    let mut controller = FakeController::start().await;
    let agent = Agent::start_in(&controller, copy, |_| {}, "lo");
    let mut conn = controller.accept().await;
    let hello = conn.welcome().await;
    let id = capture_id("again");
    let report = listed(&hello, &id);
    assert_eq!(report.state, AgentCaptureState::Running, "{report:?}");
    assert_eq!(report.errors, [PcError::AgentStopped], "its files have a gap");
    assert_eq!(report.stats.packets_captured, 30, "the recovered file's packets count");
    let message = report.message.clone().unwrap();
    assert!(
        message.contains("resumed it") && message.contains("new file"),
        "{message}"
    );

    // The cut file is stored as the capture's first file.
    let first_file = controller.upload().await;
    assert_eq!((first_file.capture_id.as_str(), first_file.seq), (id.as_str(), 0));
    assert_eq!(packets(&first_file).len(), 30);

    // It captures again, into file 1: probe until the counters move, then a batch.
    let resumed = capture_file(agent.data_dir.path(), "again", 1);
    until("the resumed file exists", || resumed.exists()).await;
    let prober = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut probes = 0u64;
    loop {
        prober.send_to(b"probe", ("127.0.0.1", traffic.port())).unwrap();
        probes += 1;
        assert!(probes < 100, "the resumed capture counts packets within 100 probes");
        let counted = tokio::time::timeout(std::time::Duration::from_millis(100), conn.recv()).await;
        if let Ok(netwatch_api::agent::AgentMessage::Report(r)) = counted
            && r.capture_id == id
            && r.stats.packets_captured > 30
        {
            break;
        }
    }
    // Sent before the stop: stamped before it, so kept (the engine drains its ring).
    traffic.send(20);
    conn.send(&ControllerMessage::Stop { capture_id: id.clone() }).await;
    let stopped = conn.state(&id, AgentCaptureState::Stopped).await;
    assert_eq!(stopped.stop_reason, Some(StopReason::ManualStop));
    assert_eq!(stopped.errors, [PcError::AgentStopped], "the gap is still told");
    assert_eq!(
        stopped.started_ms, report.started_ms,
        "the time limit counts from the first start"
    );
    let second_file = controller.upload().await;
    assert_eq!((second_file.capture_id.as_str(), second_file.seq), (id.as_str(), 1));
    let stored = packets(&second_file);
    assert_eq!(
        stopped.stats.packets_captured,
        30 + stored.len() as u64,
        "the counters cover both files"
    );
    let batch: Vec<_> = stored.iter().filter(|p| !p.data.ends_with(b"probe")).collect();
    assert_eq!(batch.len(), 20, "every datagram sent after the resume, once");
    for (i, packet) in batch.iter().enumerate() {
        assert!(packet.data.ends_with(format!("datagram {i}").as_bytes()));
    }
    assert!(stored.len() as u64 > 20, "the probe that showed it running is in it");
    conn.reports_until(&id, |r| r.upload == Some(UploadState::Succeeded))
        .await;
    agent.stop().await;
}

#[tokio::test]
async fn issue_6_the_cut_file_may_be_gone_empty_or_not_pcap_and_the_agent_goes_on() {
    require_root();
    let traffic = Traffic::new();
    for (case, damage) in [
        ("gone", None),
        ("empty", Some(&b""[..])),
        ("foreign", Some(&b"this is not a capture file at all, just text"[..])),
    ] {
        let name = format!("damaged-{case}");
        let (copy, first, mut first_conn, _first_controller) = killed_mid_capture(&name, &traffic, 2, 5).await;
        first_conn.state(&capture_id(&name), AgentCaptureState::Stopped).await;
        first.stop().await;
        let file = capture_file(copy.path(), &name, 0);
        match damage {
            None => std::fs::remove_file(&file).unwrap(),
            Some(bytes) => std::fs::write(&file, bytes).unwrap(),
        }
        let mut controller = FakeController::start().await;
        let agent = Agent::start_in(&controller, copy, |_| {}, "lo");
        let mut conn = controller.accept().await;
        let hello = conn.welcome().await;
        let id = capture_id(&name);
        let report = listed(&hello, &id);
        // Time is up: it ends, saying why nothing of it was uploaded.
        assert_eq!(report.state, AgentCaptureState::Stopped, "{case}: {report:?}");
        assert_eq!(report.errors, [PcError::AgentStopped], "{case}");
        let message = report.message.unwrap();
        assert!(message.contains("could not be recovered"), "{case}: {message}");
        let why = match damage {
            None => "is gone",
            Some(b"") => "shorter than a pcap header (0 bytes)",
            Some(_) => "not a pcap file",
        };
        assert!(message.contains(why), "{case}: {message}");
        assert_eq!(report.stats.packets_captured, 0, "{case}");
        let done = conn
            .reports_until(&id, |r| r.upload == Some(UploadState::Succeeded))
            .await;
        assert_eq!(done.last().unwrap().upload_progress.as_ref().unwrap().files_pending, 0);
        assert_eq!(controller.puts(), 0, "{case}: nothing uploaded");
        let _data_dir = agent.stop_keeping_data().await;
        if let Some(bytes) = damage {
            assert_eq!(std::fs::read(&file).unwrap(), bytes, "{case}: left as it was");
        }
    }
}

/// Mounts a tmpfs of `size` on `dir`; unmounts it (lazily: a capture thread
/// of a failed test may still hold a file) on drop.
struct TmpfsGuard(PathBuf);

impl TmpfsGuard {
    fn mount(dir: &Path, size: &str) -> Self {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs on {} (root needed)", dir.display());
        Self(dir.to_owned())
    }
}

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn issue_6_a_full_disk_stops_the_capture_and_what_it_wrote_is_repaired_and_uploaded() {
    require_root();
    let outer = tempfile::tempdir().unwrap();
    let _tmpfs = TmpfsGuard::mount(outer.path(), "1m");
    let data_dir = tempfile::tempdir_in(outer.path()).unwrap();
    let mut controller = FakeController::start().await;
    let agent = Agent::start_in(&controller, data_dir, |_| {}, "lo");
    let mut conn = controller.accept().await;
    conn.welcome().await;
    let traffic = Traffic::new();
    conn.send(&ControllerMessage::Start(start(
        "full",
        udp_capture(traffic.port(), 20),
        true,
    )))
    .await;
    let id = capture_id("full");
    conn.state(&id, AgentCaptureState::Running).await;
    // 1,000 datagrams of 1,400 bytes on lo: ~1.4 MB for a 1 MiB disk.
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..1_000 {
        sender.send_to(&[0xab; 1_400], ("127.0.0.1", traffic.port())).unwrap();
    }
    let reports = conn.reports_until(&id, |r| r.state != AgentCaptureState::Running).await;
    let end = reports.last().unwrap().clone();
    assert_eq!(end.state, AgentCaptureState::Error, "{end:?}");
    assert_eq!(end.errors, [PcError::LocalFileFailed]);
    let message = end.message.clone().unwrap();
    let captures_dir = agent.data_dir.path().join("captures");
    assert!(
        message.contains("the disk is full")
            && message.contains(&captures_dir.display().to_string())
            && message.contains("No space left on device"),
        "{message}"
    );
    assert!(end.stats.packets_captured > 100, "{end:?}");
    conn.reports_until(&id, |r| r.upload == Some(UploadState::Succeeded))
        .await;
    let upload = controller.upload().await;
    assert_eq!(upload.seq, 0);
    let stored = packets(&upload);
    assert_eq!(
        stored.len() as u64,
        end.stats.packets_captured,
        "every packet the agent reported written is stored"
    );
    assert_eq!(upload.body.len() as u64, end.stats.file_size_in_bytes);
    assert!(
        message.contains(&format!(
            "the {} packets written before are kept and uploaded",
            stored.len()
        )),
        "{message}"
    );
    // Stored: the disk is free again.
    assert!(!capture_file(agent.data_dir.path(), "full", 0).exists());
    agent.stop().await;
}
