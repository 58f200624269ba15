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

/// `drain_seconds` (issue 15): after SIGTERM a controller goes on answering
/// for that long with its health 503 ("draining"), so a load balancer's
/// health check moves new requests elsewhere before the port closes; then
/// it stops cleanly.
#[test]
fn a_draining_controller_answers_for_drain_seconds_with_its_health_503() {
    let dir = tempfile::tempdir().unwrap();
    // `up` makes the configuration, the certificate and the tokens.
    let mut up = Command::new(netwatch())
        .args(["up", "--no-agent", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("up"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn netwatch up");
    let made = netwatch_testkit::eventually(200, Duration::from_millis(100), || dir.path().join("up/env").exists());
    let _ = up.kill();
    let _ = up.wait();
    assert!(made, "netwatch up made no data directory within 20 s");
    let config = dir.path().join("up/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let at = text.find("\n[").map_or(text.len(), |i| i + 1);
    std::fs::write(&config, format!("{}drain_seconds = 5\n{}", &text[..at], &text[at..])).unwrap();
    let credentials: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.path().join("up/credentials.toml")).unwrap()).unwrap();
    let token = credentials["admin_token"].as_str().unwrap().to_owned();
    let ca = dir.path().join("up/ca.pem");

    let log = dir.path().join("server.log");
    let server = Command::new(netwatch())
        .args(["server", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .expect("spawn netwatch server");
    let mut server = Guard(server);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let marker = "netwatch controller listening on ";
    let listening = netwatch_testkit::eventually(200, Duration::from_millis(100), || read_log().contains(marker));
    assert!(listening, "netwatch server did not start:\n{}", read_log());
    let text = read_log();
    let url = text[text.find(marker).unwrap() + marker.len()..]
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_owned();
    // Status of GET `path` (with the admin token), and the body.
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-m", "5", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
            .arg(&ca)
            .args(["-H", &format!("Authorization: Bearer {token}"), &format!("{url}{path}")])
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "000"));
        (status.parse::<u16>().unwrap_or(0), body.to_owned())
    };
    let healthy = netwatch_testkit::eventually(100, Duration::from_millis(100), || get("/netwatch/v1/health").0 == 200);
    assert!(healthy, "netwatch server not healthy:\n{}", read_log());
    // Whether an HTTP/1.1 answer to GET `path` tells the client to close its connection.
    let closes = |path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-m", "5", "--http1.1", "-o", "/dev/null", "-D", "-", "--cacert"])
            .arg(&ca)
            .args(["-H", &format!("Authorization: Bearer {token}"), &format!("{url}{path}")])
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout)
            .to_ascii_lowercase()
            .contains("connection: close")
    };
    assert!(
        !closes("/subscriptions?api-version=2022-12-01"),
        "kept alive while serving"
    );

    netwatch_testkit::run(Command::new("kill").arg("-TERM").arg(server.0.id().to_string()));
    let signalled = Instant::now();
    // Draining: the health says so, and the API still answers.
    let draining = netwatch_testkit::eventually(20, Duration::from_millis(50), || {
        let (status, body) = get("/netwatch/v1/health");
        status == 503 && body.contains("draining")
    });
    assert!(draining, "the health did not say draining:\n{}", read_log());
    let (status, body) = get("/subscriptions?api-version=2022-12-01");
    assert_eq!(status, 200, "{body}\n{}", read_log());
    // Its answers close their connections: no client sends a request on a
    // kept-alive connection just as the port closes.
    assert!(
        closes("/subscriptions?api-version=2022-12-01"),
        "Connection: close while draining"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "too slow to check the drain ({:?}): this machine is too busy for the test to mean anything",
        signalled.elapsed()
    );
    let exit = loop {
        if let Some(exit) = server.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "netwatch server still running 20 s after SIGTERM:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopped_after = signalled.elapsed();
    assert!(exit.success(), "netwatch server exited with {exit}:\n{}", read_log());
    assert!(
        stopped_after >= Duration::from_secs(5),
        "stopped {stopped_after:?} after SIGTERM, before drain_seconds (5 s) were over"
    );
    assert!(read_log().contains("controller stopped"), "{}", read_log());
}
