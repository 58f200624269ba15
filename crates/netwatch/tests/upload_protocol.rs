//! Upload protocol 2 (issue 19: the file's SHA-256 goes with the commit, so
//! the agent hashes it while its parts go) against a real build of protocol
//! 1, both ways: netwatch as of the last commit before protocol 2, built by
//! `scripts/test.sh` from this repository's history
//! (`NETWATCH_TEST_OLD_NETWATCH`). A capture goes to storage and comes back
//! byte for byte, checked against the SHA-256 the agent reported.

use std::path::PathBuf;

use serde_json::json;

use crate::deployment::{Deployment, send_udp, udp_packets};
use crate::storage::download_checked;

/// The `netwatch` binary of upload protocol 1.
fn old_netwatch() -> PathBuf {
    let path = std::env::var_os("NETWATCH_TEST_OLD_NETWATCH").map(PathBuf::from);
    match path {
        Some(path) if path.is_file() => path,
        _ => panic!(
            "NETWATCH_TEST_OLD_NETWATCH must name a netwatch binary of upload protocol 1: scripts/test.sh builds one \
             from this repository's history (target/old-netwatch/netwatch)"
        ),
    }
}

/// A capture of 2,000 datagrams to the deployment's local account, stopped
/// and stored; its file downloaded and checked against the agent's SHA-256.
fn capture_and_check(nw: &Deployment, name: &str, port: u16) {
    nw.create(
        name,
        json!({"filters": [{"protocol": "UDP", "localPort": port.to_string()}], "timeLimitInSeconds": 120}),
    );
    send_udp(&nw.pair, &[port], 2000, 900);
    nw.status_until(name, "counting", |s| s["netwatch"]["packetsCaptured"] == 2000);
    nw.sdk(&["stop", name]);
    let stored = nw.status_until(name, "stored", |s| s["netwatch"]["uploadState"] == "Succeeded");
    let files = stored["netwatch"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{stored}");
    let path = download_checked(nw, &files[0]);
    assert_eq!(udp_packets(&path).len(), 2000, "{name}: every datagram stored");
}

/// The agent's log, without the terminal's colours.
fn agent_log(nw: &Deployment) -> String {
    let log = std::fs::read_to_string(nw.dir.path().join("agent.log")).unwrap();
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // `ESC [ … m`
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn an_agent_of_upload_protocol_1_uploads_to_a_controller_of_protocol_2() {
    let mut nw = Deployment::controller_only();
    nw.agent_bin = old_netwatch();
    let token = nw.credential("agent_token");
    nw.agent = Some(nw.start_agent(&token, &nw.dir.path().join("agent"), "agent.log"));
    nw.wait_for_agent();
    capture_and_check(&nw, "from-old-agent", 7401);
    let log = agent_log(&nw);
    assert!(
        log.contains("connected to the controller") && !log.contains("upload_protocol"),
        "the agent is one of protocol 1, which says nothing of protocols:\n{log}"
    );
}

#[test]
fn an_agent_of_upload_protocol_2_uploads_to_a_controller_of_protocol_1() {
    let mut nw = Deployment::controller_only_bin(&old_netwatch());
    let token = nw.credential("agent_token");
    nw.agent = Some(nw.start_agent(&token, &nw.dir.path().join("agent"), "agent.log"));
    nw.wait_for_agent();
    capture_and_check(&nw, "to-old-controller", 7402);
    let log = agent_log(&nw);
    assert!(
        log.contains("upload_protocol=1"),
        "the agent found a controller of protocol 1 (its welcome says none), so the SHA-256 goes with the first grant request:\n{log}"
    );
}

#[test]
fn an_agent_of_upload_protocol_2_sends_the_digest_its_capture_worked_out_with_the_commit() {
    let nw = Deployment::start();
    capture_and_check(&nw, "both-new", 7403);
    let log = agent_log(&nw);
    assert!(
        log.contains("upload_protocol=2"),
        "this build's controller says protocol 2:\n{log}"
    );
    // The SHA-256 the controller recorded is the downloaded file's
    // (`capture_and_check`), and the agent did not read the file for it.
    assert!(
        log.contains("sha256_from_capture=true") && !log.contains("sha256_from_capture=false"),
        "the capture worked out its file's SHA-256 as it wrote it:\n{log}"
    );
}
