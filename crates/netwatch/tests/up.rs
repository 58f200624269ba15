//! `netwatch up` as a user runs it: the controller and this machine's agent in
//! one process, on loopback, stopped with Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::deployment::Guard;
use crate::util::netwatch;

/// Issue 12, item 5: Ctrl-C stopped the store before the hub's last write
/// (when the agent was last heard from), which logged a WARN. `up` stops in
/// order: the agent, then the controller (no new requests, open ones and
/// the agent channels finish), then the store; nothing to warn about.
#[test]
fn issue_12_up_stops_in_order_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("up.log");
    let mut up = Command::new(netwatch())
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("up"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("NO_COLOR", "1")
        .env_remove("NETWATCH_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .expect("spawn netwatch up");
    let stdout = up.stdout.take().unwrap();
    let mut up = Guard(up);
    // The banner must find a reader.
    std::thread::spawn(move || BufReader::new(stdout).lines().for_each(drop));
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // The agent connected: its channel is open when Ctrl-C comes.
    let connected = netwatch_testkit::eventually(200, Duration::from_millis(100), || {
        read_log().contains("agent connected")
    });
    assert!(connected, "the agent did not connect within 20 s:\n{}", read_log());

    netwatch_testkit::run(Command::new("kill").arg("-INT").arg(up.0.id().to_string()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = up.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "netwatch up still running 20 s after Ctrl-C:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = read_log();
    assert!(status.success(), "netwatch up exited with {status}:\n{text}");
    let complaints: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect();
    assert!(complaints.is_empty(), "netwatch up complained while stopping:\n{text}");
    assert!(text.contains("controller stopped"), "{text}");
}
