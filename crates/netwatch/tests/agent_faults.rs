//! Faults on the agent's host (issue 6), in a [`Deployment`] with real
//! traffic: the agent killed (`kill -9`) mid-capture and started again,
//! within the capture's time limit (it resumes in a second file) and after
//! it (its cut file is stored, the capture `Stopped` with `AgentStopped`),
//! and a disk that fills up under a capture (`LocalFileFailed`, what was
//! written stored). No traffic is sent while the agent is dead: no one could
//! capture it. Each scenario counts, file by file, the packets in storage and
//! writes its row of the fault table ([`crate::faults::record`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::deployment::{Deployment, send_udp, udp_packets};
use crate::faults::record;
use crate::storage::download_checked;

/// The stored files of a capture, downloaded and checked against the
/// agent's SHA-256: each one's datagrams to `port` (only those).
fn stored_files(nw: &Deployment, status: &Value, port: u16) -> Vec<usize> {
    let files = status["netwatch"]["files"].as_array().cloned().unwrap_or_default();
    files
        .iter()
        .map(|file| {
            let packets = udp_packets(&download_checked(nw, file));
            assert!(packets.iter().all(|p| p.0 == port), "only the filter's packets: {file}");
            packets.len()
        })
        .collect()
}

/// The agent's data directory and a second agent started on it (`kill -9` of the first first).
fn restart_agent(nw: &mut Deployment, log: &str) -> PathBuf {
    let agent_dir = nw.dir.path().join("agent");
    let token = nw.credential("agent_token");
    nw.agent = Some(nw.start_agent(&token, &agent_dir, log));
    agent_dir
}

/// Waits (bounded) until `check` holds.
fn wait(what: &str, nw: &Deployment, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}\n{}", nw.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The capture file the resumed run writes: `{name}_{created}_00001.cap` in the agent's captures.
fn resumed_file(agent_dir: &Path, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(agent_dir.join("captures"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            let file = p.file_name().unwrap().to_string_lossy();
            file.starts_with(name) && file.ends_with("_00001.cap")
        })
}

#[test]
fn an_agent_killed_mid_capture_resumes_in_a_new_file_and_both_files_are_stored() {
    let mut nw = Deployment::start();
    let port = 7611;
    nw.create(
        "a-resume",
        json!({"filters": [{"protocol": "UDP", "localPort": port.to_string()}], "timeLimitInSeconds": 120}),
    );
    nw.status_until("a-resume", "running", |s| s["packetCaptureStatus"] == "Running");
    send_udp(&nw.pair, &[port], 300, 200);
    nw.status_until("a-resume", "counting", |s| s["netwatch"]["packetsCaptured"] == 300);
    drop(nw.agent.take()); // kill -9
    let agent_dir = restart_agent(&mut nw, "agent-2.log");
    // Back: the cut file is stored as the capture's first, and it captures again in a second.
    let back = nw.status_until("a-resume", "first file stored", |s| {
        s["netwatch"]["files"].as_array().is_some_and(|f| f.len() == 1)
    });
    assert_eq!(back["packetCaptureStatus"], "Running", "{back}");
    assert_eq!(back["packetCaptureError"], json!(["AgentStopped"]), "{back}");
    let note = back["netwatch"]["errorMessage"].as_str().unwrap_or_default();
    assert!(note.contains("resumed it"), "{back}");
    wait("the resumed file is open", &nw, || {
        resumed_file(&agent_dir, "a-resume").is_some_and(|f| std::fs::metadata(f).is_ok_and(|m| m.len() >= 24))
    });
    send_udp(&nw.pair, &[port], 200, 200);
    nw.status_until("a-resume", "counting both runs", |s| {
        s["netwatch"]["packetsCaptured"] == 500
    });
    nw.sdk(&["stop", "a-resume"]);
    let stored = nw.status_until("a-resume", "stored", |s| s["netwatch"]["uploadState"] == "Succeeded");
    assert_eq!(
        (
            &stored["packetCaptureStatus"],
            &stored["stopReason"],
            &stored["packetCaptureError"]
        ),
        (&json!("Stopped"), &json!("ManualStop"), &json!(["AgentStopped"])),
        "{stored}"
    );
    let files = stored_files(&nw, &stored, port);
    let total: usize = files.iter().sum();
    record(
        "agent kill -9 mid-capture, back within its time limit",
        500,
        Some(total),
        &format!("resumed in a 2nd file; files {files:?}; Stopped, ManualStop, AgentStopped"),
    );
    assert_eq!(
        files,
        [300, 200],
        "each datagram once: before the kill in file 1, after in file 2"
    );
}

#[test]
fn an_agent_killed_mid_capture_and_back_after_its_time_limit_stores_the_cut_file() {
    let mut nw = Deployment::start();
    let port = 7612;
    let created = Instant::now();
    let limit = Duration::from_secs(10);
    nw.create(
        "a-late",
        json!({"filters": [{"protocol": "UDP", "localPort": port.to_string()}], "timeLimitInSeconds": limit.as_secs()}),
    );
    nw.status_until("a-late", "running", |s| s["packetCaptureStatus"] == "Running");
    send_udp(&nw.pair, &[port], 200, 200);
    nw.status_until("a-late", "counting", |s| s["netwatch"]["packetsCaptured"] == 200);
    drop(nw.agent.take()); // kill -9
    assert!(created.elapsed() < limit, "killed before the time limit (a slow host?)");
    // The time limit passes while the agent is away.
    std::thread::sleep(limit.saturating_sub(created.elapsed()) + Duration::from_millis(500));
    restart_agent(&mut nw, "agent-2.log");
    let stored = nw.status_until("a-late", "stored", |s| s["netwatch"]["uploadState"] == "Succeeded");
    assert_eq!(
        (
            &stored["packetCaptureStatus"],
            &stored["stopReason"],
            &stored["packetCaptureError"]
        ),
        (&json!("Stopped"), &json!("AgentStopped"), &json!(["AgentStopped"])),
        "{stored}"
    );
    assert_eq!(stored["netwatch"]["packetsCaptured"], 200, "{stored}");
    let files = stored_files(&nw, &stored, port);
    record(
        "agent kill -9 mid-capture, back after its time limit",
        200,
        Some(files.iter().sum()),
        "cut file repaired and stored; Stopped, AgentStopped",
    );
    assert_eq!(files, [200]);
}

/// A tmpfs of `size` mounted on `dir` while it lives (unmounted lazily: a
/// killed agent's files may still be open).
struct TmpfsGuard(PathBuf);

impl TmpfsGuard {
    fn mount(dir: &Path, size: &str) -> TmpfsGuard {
        std::fs::create_dir_all(dir).unwrap();
        netwatch_testkit::run(
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir),
        );
        TmpfsGuard(dir.to_owned())
    }
}

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_capture_with_local_file_failed_and_what_was_written_is_stored() {
    let mut nw = Deployment::controller_only();
    let agent_dir = nw.dir.path().join("agent");
    let _tmpfs = TmpfsGuard::mount(&agent_dir, "3m");
    let token = nw.credential("agent_token");
    nw.agent = Some(nw.start_agent(&token, &agent_dir, "agent.log"));
    nw.wait_for_agent();
    let port = 7613;
    nw.create(
        "a-full",
        json!({"filters": [{"protocol": "UDP", "localPort": port.to_string()}], "timeLimitInSeconds": 120}),
    );
    nw.status_until("a-full", "running", |s| s["packetCaptureStatus"] == "Running");
    // ~3.8 MB of packets for a 3 MiB disk.
    let sent = 3000;
    send_udp(&nw.pair, &[port], sent, 1200);
    let failed = nw.status_until("a-full", "failed", |s| s["packetCaptureStatus"] == "Error");
    assert_eq!(failed["packetCaptureError"], json!(["LocalFileFailed"]), "{failed}");
    let message = failed["netwatch"]["errorMessage"].as_str().unwrap_or_default();
    let captures = agent_dir.join("captures");
    assert!(
        message.contains("the disk is full") && message.contains(&captures.display().to_string()),
        "the message says the disk is full and where: {failed}"
    );
    let stored = nw.status_until("a-full", "stored", |s| s["netwatch"]["uploadState"] == "Succeeded");
    assert_eq!(stored["packetCaptureStatus"], "Error", "{stored}");
    let written = stored["netwatch"]["packetsCaptured"].as_u64().unwrap();
    let files = stored_files(&nw, &stored, port);
    let total: usize = files.iter().sum();
    record(
        "agent disk full (3 MiB tmpfs)",
        sent,
        Some(total),
        &format!(
            "Error, LocalFileFailed; all {written} packets the agent wrote are stored; the {} that came \
             after the disk was full could not be written",
            (sent as u64).saturating_sub(written)
        ),
    );
    assert!(written > 1000 && written < sent as u64, "{stored}");
    assert_eq!(total as u64, written, "every packet written is stored");
    assert_eq!(files.len(), 1);
}
