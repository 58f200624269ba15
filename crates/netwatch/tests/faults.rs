//! Faults survived, nothing lost (issue 6): the controller killed (`kill -9`)
//! at each step of a capture's life, and an agent that never comes back, each
//! in a [`Deployment`] with real traffic. Every scenario checks, packet by
//! packet, that what the agent captured is in storage, and writes its row of
//! the fault table ([`record`]): `scripts/test.sh` prints the table after the
//! suite.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use netwatch_testkit::NetnsPair;
use serde_json::{Value, json};

use crate::deployment::{Deployment, Guard, SUB, azure_time, send_udp, udp_packets};

/// Where each scenario writes its row: one file per scenario, so tests
/// running at once do not interleave.
fn table_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fault-table")
}

/// Writes scenario `scenario`'s row: packets sent, packets in storage (`None`:
/// none could be, the host is gone with them), and what it showed besides.
pub(crate) fn record(scenario: &str, sent: usize, stored: Option<usize>, note: &str) {
    let dir = table_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let (stored, lost) = match stored {
        Some(stored) => (stored.to_string(), sent.saturating_sub(stored).to_string()),
        None => ("on the host".to_owned(), "n/a".to_owned()),
    };
    let row = format!("| {scenario} | {sent} | {stored} | {lost} | {note} |\n");
    std::fs::write(dir.join(format!("{scenario}.md")), &row).unwrap();
    print!("fault table: {row}");
}

/// The capture's resource path under the watcher `Deployment::create` uses.
fn capture_path(name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/\
         NetworkWatcher_westus/packetCaptures/{name}"
    )
}

/// The create body [`Deployment::create`] sends, for a raw PUT.
fn create_body(port: u16) -> Value {
    json!({"properties": {
        "target": format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{}", crate::deployment::VM),
        "storageLocation": {"storageId": format!(
            "/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/netwatchlocal"
        )},
        "filters": [{"protocol": "UDP", "localPort": port.to_string()}],
        "timeLimitInSeconds": 600,
    }})
}

/// One raw REST call through the SDK script's `requests`: status, headers, body.
fn rest(nw: &Deployment, method: &str, path_or_url: &str, body: Option<&Value>) -> Value {
    let path = path_or_url.strip_prefix(&nw.url).unwrap_or(path_or_url);
    let body = body.map(Value::to_string);
    let mut args = vec!["rest", method, path];
    if let Some(body) = &body {
        args.push(body);
    }
    nw.sdk(&args)
}

/// Follows a monitor URL until `done` holds for its answer (bounded: 60 s).
fn monitor_until(nw: &Deployment, url: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = rest(nw, "GET", url, None);
        if done(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "monitor {url} not {what} within 60 s: {answer}\n{}",
            nw.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops `name` (the SDK's stop, which waits for the upload) and checks the
/// stored file: every datagram sent to `port`, once. How many it holds.
fn stop_and_count(nw: &Deployment, name: &str, port: u16) -> usize {
    nw.sdk(&["stop", name]);
    stored_count(nw, name, port)
}

/// The stored file of a stopped capture: its datagrams to `port`, checked
/// against the agent's SHA-256 by the download.
fn stored_count(nw: &Deployment, name: &str, port: u16) -> usize {
    let stored = nw.status_until(name, "stored", |s| s["netwatch"]["uploadState"] == "Succeeded");
    assert_eq!(stored["packetCaptureStatus"], "Stopped", "{stored}");
    let files = stored["netwatch"]["files"].as_array().cloned().unwrap_or_default();
    assert_eq!(files.len(), 1, "{stored}");
    let file = nw.download(&nw.sdk(&["get", name]));
    let packets = udp_packets(&file);
    assert!(packets.iter().all(|p| p.0 == port), "only the filter's packets");
    packets.len()
}

/// The captures the watcher lists with `name`: exactly one, never two.
fn assert_listed_once(nw: &Deployment, name: &str) {
    let listed = nw.sdk(&["list"]);
    let found = listed.as_array().unwrap().iter().filter(|c| c["name"] == name).count();
    assert_eq!(found, 1, "{listed}");
}

#[test]
fn the_controller_killed_right_after_a_create_leaves_one_running_capture() {
    let mut nw = Deployment::start();
    let put = rest(
        &nw,
        "PUT",
        &format!("{}?api-version=2024-05-01", capture_path("c-create")),
        Some(&create_body(7601)),
    );
    assert_eq!(put["status"], 201, "{put}");
    // Answered once the agent runs it (issue 15), or, when the agent was
    // slower, with a monitor.
    let monitor = put["headers"]["azure-asyncoperation"].as_str().map(str::to_owned);
    nw.kill_controller();
    nw.restart_controller();
    match monitor {
        // The create's monitor tells the truth after the restart: the agent runs it.
        Some(monitor) => {
            let done = monitor_until(&nw, &monitor, "settled", |a| a["body"]["status"] != "InProgress");
            assert_eq!(done["body"]["status"], "Succeeded", "{done}");
        }
        None => assert_eq!(put["body"]["properties"]["provisioningState"], "Succeeded", "{put}"),
    }
    nw.status_until("c-create", "running", |s| s["packetCaptureStatus"] == "Running");
    send_udp(&nw.pair, &[7601], 500, 200);
    nw.status_until("c-create", "counting", |s| s["netwatch"]["packetsCaptured"] == 500);
    let stored = stop_and_count(&nw, "c-create", 7601);
    assert_listed_once(&nw, "c-create");
    record(
        "controller kill -9 during create",
        500,
        Some(stored),
        "create monitor Succeeded; listed once",
    );
    assert_eq!(stored, 500);
}

#[test]
fn the_controller_killed_while_a_capture_runs_loses_nothing() {
    let mut nw = Deployment::start();
    nw.create(
        "c-running",
        json!({"filters": [{"protocol": "UDP", "localPort": "7602"}], "timeLimitInSeconds": 600}),
    );
    send_udp(&nw.pair, &[7602], 300, 200);
    nw.status_until("c-running", "counting", |s| s["netwatch"]["packetsCaptured"] == 300);
    nw.kill_controller();
    // The agent goes on capturing while its controller is away.
    send_udp(&nw.pair, &[7602], 300, 200);
    nw.restart_controller();
    let status = nw.status_until("c-running", "counting all", |s| s["netwatch"]["packetsCaptured"] == 600);
    assert_eq!(status["packetCaptureStatus"], "Running", "{status}");
    let stored = stop_and_count(&nw, "c-running", 7602);
    assert_listed_once(&nw, "c-running");
    record(
        "controller kill -9 while running",
        600,
        Some(stored),
        "half the traffic sent while it was down",
    );
    assert_eq!(stored, 600);
}

#[test]
fn the_controller_killed_during_a_stop_finishes_the_stop_after_it_restarts() {
    let mut nw = Deployment::start();
    nw.create(
        "c-stop",
        json!({"filters": [{"protocol": "UDP", "localPort": "7603"}], "timeLimitInSeconds": 600}),
    );
    send_udp(&nw.pair, &[7603], 400, 200);
    nw.status_until("c-stop", "counting", |s| s["netwatch"]["packetsCaptured"] == 400);
    let stop = rest(
        &nw,
        "POST",
        &format!("{}/stop?api-version=2024-05-01", capture_path("c-stop")),
        None,
    );
    nw.kill_controller();
    nw.restart_controller();
    // The stop's monitor (if the stop was still under way) ends: 200, not 202 forever.
    if stop["status"] == 202 {
        let monitor = stop["headers"]["location"].as_str().unwrap().to_owned();
        let done = monitor_until(&nw, &monitor, "done", |a| a["status"] != 202);
        assert_eq!(done["status"], 200, "{done}");
    } else {
        assert_eq!(stop["status"], 200, "{stop}");
    }
    let stored = stored_count(&nw, "c-stop", 7603);
    let status = nw.sdk(&["status", "c-stop"]);
    assert_eq!(status["stopReason"], "ManualStop", "{status}");
    record(
        "controller kill -9 during stop",
        400,
        Some(stored),
        "stop monitor 200 after restart",
    );
    assert_eq!(stored, 400);
}

#[test]
fn the_controller_killed_during_an_upload_gets_the_whole_file_after_it_restarts() {
    let mut nw = Deployment::start();
    nw.create(
        "c-upload",
        json!({"filters": [{"protocol": "UDP", "localPort": "7604"}], "timeLimitInSeconds": 600}),
    );
    // ~14 MB: two parts of 8 MiB, sent through the controller (local account).
    send_udp(&nw.pair, &[7604], 10_000, 1400);
    nw.status_until("c-upload", "counting", |s| s["netwatch"]["packetsCaptured"] == 10_000);
    // The agent's link slowed (after the capture) so the kill lands mid-upload.
    let slow = Throttle::new(&nw.pair);
    // The stop answers once the file is stored: sent aside, so the kill can
    // land while it waits (its connection then breaks, as a client's would).
    let stopping = NetnsPair::exec(&nw.pair.b, "curl")
        .args(["-sS", "-o", "/dev/null", "-X", "POST", "--cacert"])
        .arg(&nw.ca)
        .args(["-H", &format!("Authorization: Bearer {}", nw.token)])
        .arg(format!(
            "{}{}/stop?api-version=2024-05-01",
            nw.url,
            capture_path("c-upload")
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl runs");
    let _stopping = Guard(stopping);
    nw.status_until("c-upload", "uploading", |s| {
        s["netwatch"]["uploadState"] == "Uploading" && s["netwatch"]["uploadPercent"].as_u64().is_some_and(|p| p > 0)
    });
    nw.kill_controller();
    std::thread::sleep(Duration::from_secs(1));
    drop(slow);
    nw.restart_controller();
    let stored = stored_count(&nw, "c-upload", 7604);
    record(
        "controller kill -9 during upload",
        10_000,
        Some(stored),
        "upload resumed after restart",
    );
    assert_eq!(stored, 10_000);
}

#[test]
fn captures_of_an_agent_that_never_comes_back_end_in_error_after_the_timeout() {
    let mut nw = Deployment::start();
    set_config(&mut nw, "agent_lost_seconds = 3");
    nw.create(
        "c-lost",
        json!({"filters": [{"protocol": "UDP", "localPort": "7605"}], "timeLimitInSeconds": 600}),
    );
    send_udp(&nw.pair, &[7605], 100, 200);
    nw.status_until("c-lost", "counting", |s| s["netwatch"]["packetsCaptured"] == 100);
    drop(nw.agent.take());
    let lost = nw.status_until("c-lost", "given up", |s| s["packetCaptureStatus"] == "Error");
    // Not before the timeout, counted from when the agent was last heard
    // (up to a report interval before the kill): seen Error at `now`, it
    // became Error no later, so this fails only if it came early.
    let last_seen = azure_time(&lost["netwatch"]["agentLastSeen"]);
    let silent = SystemTime::now().duration_since(last_seen).unwrap_or_default();
    assert!(
        silent >= Duration::from_secs(3),
        "given up {silent:?} after the agent was last heard: {lost}"
    );
    assert_eq!(
        (&lost["stopReason"], &lost["packetCaptureError"]),
        (&json!("AgentLost"), &json!(["AgentStopped"])),
        "{lost}"
    );
    // It comes back after all: the file it was writing is recovered and
    // stored; the capture stays in Error (its run was given up), and the run
    // the agent resumed is stopped at once.
    let agent_dir = nw.dir.path().join("agent");
    let token = nw.credential("agent_token");
    nw.agent = Some(nw.start_agent(&token, &agent_dir, "agent-2.log"));
    let back = nw.status_until("c-lost", "stored", |s| {
        s["netwatch"]["uploadState"] == "Succeeded" && s["netwatch"]["filesPending"] == 0
    });
    assert_eq!(
        (&back["packetCaptureStatus"], &back["stopReason"]),
        (&json!("Error"), &json!("AgentLost")),
        "{back}"
    );
    let files = back["netwatch"]["files"].as_array().cloned().unwrap_or_default();
    let stored: usize = files
        .iter()
        .map(|file| udp_packets(&crate::storage::download_checked(&nw, file)).len())
        .sum();
    record(
        "agent gone past agent_lost_seconds = 3, then back",
        100,
        Some(stored),
        "Error, AgentStopped, AgentLost; its cut file stored when it came back",
    );
    assert_eq!(stored, 100, "{back}");
}

/// Appends `line` to the controller's configuration and restarts it.
fn set_config(nw: &mut Deployment, line: &str) {
    use std::io::Write as _;
    let path = nw.dir.path().join("up/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // A top-level key: before the first table.
    let at = text.find("\n[").map_or(text.len(), |i| i + 1);
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(format!("{}{line}\n{}", &text[..at], &text[at..]).as_bytes())
        .unwrap();
    nw.kill_controller();
    nw.restart_controller();
    nw.wait_for_agent();
}

/// The agent's link (its side of the veth pair) limited to 16 Mbit/s while it lives.
struct Throttle {
    ns: String,
}

impl Throttle {
    fn new(pair: &NetnsPair) -> Throttle {
        netwatch_testkit::run(NetnsPair::exec(&pair.a, "tc").args([
            "qdisc",
            "add",
            "dev",
            netwatch_testkit::IF_A,
            "root",
            "tbf",
            "rate",
            "16mbit",
            "burst",
            "32kbit",
            "latency",
            "400ms",
        ]));
        Throttle { ns: pair.a.clone() }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let _ = NetnsPair::exec(&self.ns, "tc")
            .args(["qdisc", "del", "dev", netwatch_testkit::IF_A, "root"])
            .status();
    }
}
