//! The controller's and the agent's metrics scraped by a real Prometheus
//! (issue 15, "Metrics"): Debian's `prometheus`, started in the controller's
//! namespace, scrapes the controller's `GET /metrics` over HTTPS with a
//! reader's token and the agent's (`--metrics-listen`, in the other
//! namespace) every second while a capture runs; PromQL over its HTTP API
//! must find what the API says.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netwatch_testkit::NetnsPair;
use serde_json::{Value, json};

use crate::deployment::{Deployment, Guard, send_udp};

/// Prometheus's port inside the controller's namespace (its own loopback).
const PROMETHEUS: &str = "127.0.0.1:9090";

/// Prometheus's answer to the PromQL `query` now (`Null` when it gave none).
fn ask(nw: &Deployment, query: &str) -> Value {
    NetnsPair::exec(&nw.pair.b, "curl")
        .args([
            "-sS",
            "-G",
            &format!("http://{PROMETHEUS}/api/v1/query"),
            "--data-urlencode",
        ])
        .arg(format!("query={query}"))
        .output()
        .ok()
        .and_then(|out| serde_json::from_slice(&out.stdout).ok())
        .unwrap_or(Value::Null)
}

/// The value of the PromQL `query` now, if it has one.
fn query(nw: &Deployment, query: &str) -> Option<f64> {
    ask(nw, query)["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Waits (bounded) until `query` reads `expected`.
fn until(nw: &Deployment, promql: &str, expected: f64) {
    let start = Instant::now();
    loop {
        let value = query(nw, promql);
        if value == Some(expected) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{promql} = {value:?}, not {expected}, after 60 s\n{}",
            nw.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn prometheus_scrapes_what_the_api_says_during_a_capture() {
    let prometheus = Command::new("prometheus").arg("--version").output();
    assert!(
        prometheus.is_ok_and(|out| out.status.success()),
        "prometheus is not installed: apt-get install -y prometheus (scripts/test.sh does)"
    );
    let mut nw = Deployment::controller_only();
    let token = nw.credential("agent_token");
    let agent_dir = nw.dir.path().join("agent");
    let listen = format!("{}:0", netwatch_testkit::A4[0]);
    nw.agent = Some(nw.start_agent_with(&token, &agent_dir, "agent.log", &["--metrics-listen", &listen]));
    nw.wait_for_agent();
    // Where the agent serves its metrics: it says so in its log.
    let marker = "metrics for Prometheus at http://";
    let log = std::fs::read_to_string(nw.dir.path().join("agent.log")).unwrap();
    let agent_target = log
        .lines()
        .find_map(|line| Some(line[line.find(marker)? + marker.len()..].split('/').next()?.to_owned()))
        .unwrap_or_else(|| panic!("the agent did not say where its metrics are:\n{log}"));
    let dir = nw.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), &nw.token).unwrap();
    let target = nw.url.trim_start_matches("https://");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: netwatch\n    \
             scheme: https\n    metrics_path: /metrics\n    authorization:\n      credentials_file: {token}\n    \
             tls_config:\n      ca_file: {ca}\n    static_configs:\n      - targets: ['{target}']\n  - job_name: \
             netwatch-agent\n    static_configs:\n      - targets: ['{agent_target}']\n",
            token = dir.join("token").display(),
            ca = nw.ca.display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let server = NetnsPair::exec(&nw.pair.b, "prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={PROMETHEUS}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("prometheus runs");
    let _server = Guard(server);

    // Scraped, authenticated, with the agent connected and nothing captured yet.
    until(&nw, "up{job=\"netwatch\"}", 1.0);
    until(&nw, "netwatch_agents_connected", 1.0);
    until(&nw, "netwatch_captures{status=\"Running\"}", 0.0);
    until(&nw, "up{job=\"netwatch-agent\"}", 1.0);
    until(&nw, "netwatch_agent_connected", 1.0);
    until(&nw, "netwatch_agent_reconnects_total", 0.0);

    nw.create(
        "scraped",
        json!({"filters": [{"protocol": "UDP", "localPort": "7501"}], "timeLimitInSeconds": 120}),
    );
    send_udp(&nw.pair, &[7501], 20, 100);
    let counted = nw.status_until("scraped", "counting", |s| s["netwatch"]["packetsCaptured"] == 20);
    // The agent says what queryStatus says.
    let packets = counted["netwatch"]["packetsCaptured"].as_f64().unwrap();
    until(&nw, "netwatch_agent_capture_packets{capture=~\".*/scraped\"}", packets);
    until(&nw, "netwatch_agent_capture_kernel_drops{capture=~\".*/scraped\"}", 0.0);
    until(&nw, "netwatch_agent_captures{state=\"Running\"}", 1.0);
    let fill = query(&nw, "netwatch_agent_capture_ring_fill_ratio{capture=~\".*/scraped\"}");
    assert!(
        fill.is_some_and(|fill| (0.0..=1.0).contains(&fill)),
        "ring fill {fill:?}"
    );
    until(&nw, "netwatch_captures{status=\"Running\"}", 1.0);
    until(&nw, "netwatch_create_to_running_seconds_count", 1.0);
    // Its Start was pushed; its reports were applied.
    assert!(query(&nw, "netwatch_pushes_total").is_some_and(|pushes| pushes >= 1.0));
    assert!(query(&nw, "netwatch_reports_total").is_some_and(|reports| reports >= 1.0));
    let latency = query(&nw, "netwatch_create_to_running_seconds_sum").unwrap();
    assert!(latency > 0.0 && latency < 30.0, "create → Running took {latency} s?");

    // Stopped: the bytes stored are the file's, as queryStatus says.
    nw.sdk(&["stop", "scraped"]);
    let status = nw.status_until("scraped", "stored", |s| s["netwatch"]["uploadState"] == "Succeeded");
    let size = status["netwatch"]["files"][0]["sizeInBytes"].as_f64().unwrap();
    until(&nw, "netwatch_upload_bytes_total", size);
    until(&nw, "netwatch_captures{status=\"Stopped\"}", 1.0);
    until(&nw, "netwatch_captures{status=\"Running\"}", 0.0);
    until(&nw, "netwatch_upload_failures_total", 0.0);
    // The agent uploaded the same bytes, and its spool is empty again.
    until(&nw, "netwatch_agent_upload_bytes_total", size);
    until(&nw, "netwatch_agent_spool_files", 0.0);
    until(&nw, "netwatch_agent_spool_bytes", 0.0);
    until(&nw, "netwatch_agent_upload_failures_total", 0.0);
    // Stored and reported: the capture has left the agent, and its series with it.
    until(&nw, "count(netwatch_agent_capture_packets) or vector(0)", 0.0);
    assert_eq!(query(&nw, "count(netwatch_agent_build_info)"), Some(1.0));
    assert_eq!(query(&nw, "count(netwatch_build_info)"), Some(1.0));
    // The store's round trip, measured every 2 s by the replica's heartbeat.
    assert!(query(&nw, "netwatch_store_query_seconds_count").is_some_and(|beats| beats >= 1.0));

    // The shipped dashboard's queries are PromQL Prometheus takes, over these metrics.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/grafana/netwatch-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap())
        .map(|target| target["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in exprs {
        let answer = ask(&nw, expr);
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        assert!(
            answer["data"]["result"]
                .as_array()
                .is_some_and(|result| !result.is_empty()),
            "{expr} finds no series: {answer}"
        );
    }
}
