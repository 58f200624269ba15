//! Captures triggered by alerts (issue 16), end to end: a controller in the
//! hub of a [`NetnsFleet`], agents on two hosts (`web-1`, `web-2`) with their
//! flight recorders on, a third host sending numbered UDP datagrams to both.
//!
//! - Real Prometheus and Alertmanager (Debian's `prometheus`,
//!   `prometheus-alertmanager`, in the hub on its loopback): Prometheus
//!   scrapes a tiny exporter on each host; the test raises its value, the
//!   rule fires, Alertmanager posts to the trigger's webhook with a bearer
//!   token, and each host's stored file holds the datagrams from 12 s before
//!   the alert fired to 5 s after, numbered without a gap or a duplicate at
//!   the join.
//! - Azure Monitor: the common-schema payload of Azure's documentation,
//!   adapted to web-2's VM id, posted to the secret URL as an action group
//!   does: the capture runs on web-2 only.
//! - Idempotency, cooldown, the concurrency limit, the rate limit, a
//!   resolved alert stopping its capture, a host without a recorder, and bad
//!   payloads and triggers answered with clear errors and nothing started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use netwatch_testkit::{FLEET_HUB4, IF_HOST, NetnsFleet, NetnsPair, read_pcap};
use serde_json::{Value, json};

use crate::deployment::{Guard, SUB, start_up};
use crate::util::netwatch;

/// The port the captures keep; datagrams to [`OTHER_PORT`] must not be in them.
const PORT: u16 = 7201;
const OTHER_PORT: u16 = 7209;
/// Each host's exporter, scraped by Prometheus.
const EXPORTER_PORT: u16 = 9109;
const PROMETHEUS: &str = "127.0.0.1:9090";
const ALERTMANAGER: &str = "127.0.0.1:9093";
/// The hosts with agents, and the one that sends.
const WEB: [usize; 2] = [0, 1];
const SENDER: usize = 2;
/// Datagrams per second the sender sends each host on each port.
const RATE: u64 = 20;

const API: &str = "api-version=2024-05-01";

fn watcher() -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus"
    )
}

fn vm_id(host: usize) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/web-{}",
        host + 1
    )
}

fn account() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/netwatchlocal")
}

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn rfc3339(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    at.format(&time::format_description::well_known::Rfc3339).unwrap()
}

fn parse_time(text: &str) -> i64 {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|err| panic!("{text:?}: {err}"));
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap()
}

/// Host `host`'s agent (`web-{host + 1}`), logging to agent-{host}[-n].log.
fn spawn_agent(net: &NetnsFleet, dir: &Path, (url, ca, token): (&str, &Path, &str), host: usize) -> Guard {
    let n = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("agent-{host}")))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .count();
    let log = std::fs::File::create(dir.join(format!("agent-{host}-{n}.log"))).unwrap();
    let agent = NetnsPair::exec(&net.hosts[host], netwatch())
        .args(["agent", "--server", url, "--enroll-token", token, "--ca"])
        .arg(ca)
        .args(["--vm-name", &format!("web-{}", host + 1)])
        .args(["-g", "rg1", "-l", "westus", "-i", IF_HOST, "--data-dir"])
        .arg(dir.join(format!("agent-{host}")))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn netwatch agent");
    Guard(agent)
}

struct Setup {
    net: NetnsFleet,
    dir: tempfile::TempDir,
    url: String,
    token: String,
    ca: PathBuf,
    _up: Guard,
    agents: Vec<Option<Guard>>,
    agent_token: String,
    _servers: Vec<Guard>,
}

impl Setup {
    fn start() -> Setup {
        let net = NetnsFleet::new(3);
        let dir = tempfile::tempdir().unwrap();
        let (up, url) = start_up(&net.hub, dir.path(), &format!("{FLEET_HUB4}:0"));
        let credentials: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.path().join("up/credentials.toml")).unwrap()).unwrap();
        let token = credentials["admin_token"].as_str().unwrap().to_owned();
        let agent_token = credentials["agent_token"].as_str().unwrap().to_owned();
        let ca = dir.path().join("up/ca.pem");
        let mut agents = Vec::new();
        for host in WEB {
            agents.push(Some(spawn_agent(&net, dir.path(), (&url, &ca, &agent_token), host)));
        }
        let setup = Setup {
            net,
            dir,
            url,
            token,
            ca,
            _up: up,
            agents,
            agent_token,
            _servers: vec![],
        };
        for host in WEB {
            let registered = netwatch_testkit::eventually(100, Duration::from_millis(200), || {
                setup
                    .arm("GET", &format!("{}?api-version=2024-07-01", vm_id(host)), None)
                    .0
                    == 200
            });
            assert!(registered, "web-{} did not register\n{}", host + 1, setup.logs());
        }
        setup
    }

    fn logs(&self) -> String {
        crate::util::log_tails(self.dir.path(), 40)
    }

    /// `curl` in the hub: (status, JSON body).
    fn curl(&self, method: &str, url: &str, bearer: Option<&str>, body: Option<&str>) -> (u16, Value) {
        let mut command = NetnsPair::exec(&self.net.hub, "curl");
        command
            .args(["-sS", "--max-time", "30", "--cacert"])
            .arg(&self.ca)
            .args(["-X", method, "-w", "\n%{http_code}"]);
        if let Some(bearer) = bearer {
            command.args(["-H", &format!("Authorization: Bearer {bearer}")]);
        }
        if let Some(body) = body {
            command.args(["-H", "Content-Type: application/json", "--data-binary", body]);
        }
        let out = command.arg(url).output().expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = code
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl {method} {url}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// An ARM request as the admin.
    fn arm(&self, method: &str, path_and_query: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        self.curl(
            method,
            &format!("{}{path_and_query}", self.url),
            Some(&self.token),
            body.as_deref(),
        )
    }

    /// `netwatch ARGS -o json` in the hub, as the admin: its JSON output.
    fn cli(&self, args: &[&str]) -> Value {
        let out = NetnsPair::exec(&self.net.hub, netwatch())
            .args(args)
            .args(["-o", "json"])
            .env("NETWATCH_URL", &self.url)
            .env("NETWATCH_TOKEN", &self.token)
            .env("NETWATCH_CA", &self.ca)
            .env("XDG_CONFIG_HOME", self.dir.path().join("no-config"))
            .stdin(Stdio::null())
            .output()
            .expect("run netwatch");
        assert!(
            out.status.success(),
            "netwatch {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("netwatch {args:?} printed no JSON"))
    }

    /// Puts a resource under the watcher; its answer.
    fn put(&self, kind: &str, name: &str, properties: Value) -> (u16, Value) {
        self.arm(
            "PUT",
            &format!("{}/{kind}/{name}?{API}", watcher()),
            Some(json!({ "properties": properties })),
        )
    }

    fn captures(&self) -> Vec<Value> {
        let (status, list) = self.arm("GET", &format!("{}/packetCaptures?{API}", watcher()), None);
        assert_eq!(status, 200, "{list}");
        list["value"].as_array().cloned().unwrap_or_default()
    }

    fn status(&self, name: &str) -> Value {
        let (status, body) = self.arm(
            "POST",
            &format!("{}/packetCaptures/{name}/queryStatus?{API}", watcher()),
            None,
        );
        assert!(status == 200 || status == 202, "{status} {body}");
        body
    }

    /// queryStatus until the capture stopped and its file is stored (bounded: 60 s).
    fn stored(&self, name: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.status(name);
            if status["packetCaptureStatus"] == "Stopped" && status["netwatch"]["uploadState"] == "Succeeded" {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "capture {name} not stored within 60 s: {status:#}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Downloads a capture's file.
    fn download(&self, status: &Value) -> PathBuf {
        let url = status["netwatch"]["files"][0]["storagePath"]
            .as_str()
            .unwrap_or_else(|| panic!("no stored file in {status:#}"))
            .to_owned();
        let file = self
            .dir
            .path()
            .join(format!("{}.cap", status["name"].as_str().unwrap()));
        let out = NetnsPair::exec(&self.net.hub, "curl")
            .args(["-sS", "-f", "--cacert"])
            .arg(&self.ca)
            .args(["-H", &format!("Authorization: Bearer {}", self.token), "-o"])
            .arg(&file)
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "download {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        file
    }

    /// Posts an alert delivery; (status, answer).
    fn post(&self, url: &str, bearer: Option<&str>, body: &Value) -> (u16, Value) {
        self.curl("POST", url, bearer, Some(&body.to_string()))
    }

    /// A server in namespace `ns`, logging to `{name}.log`.
    fn serve(&mut self, ns: &str, name: &str, program: &str, args: &[&std::ffi::OsStr]) {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = NetnsPair::exec(ns, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|err| panic!("{program} does not run: {err}"));
        self._servers.push(Guard(child));
    }
}

/// The datagrams a pcap file holds to [`PORT`]: (sequence number, time in
/// ms); and how many other packets it holds.
fn datagrams(path: &Path) -> (Vec<(u64, i64)>, usize) {
    let (_, packets) = read_pcap(path);
    let mut found = Vec::new();
    let mut others = 0;
    for packet in &packets {
        let sliced = LaxSlicedPacket::from_ethernet(&packet.data);
        let udp = match &sliced {
            Ok(LaxSlicedPacket {
                net: Some(LaxNetSlice::Ipv4(_)),
                transport: Some(TransportSlice::Udp(udp)),
                ..
            }) if udp.destination_port() == PORT => udp,
            _ => {
                others += 1;
                continue;
            }
        };
        let text = String::from_utf8_lossy(udp.payload()).into_owned();
        let seq = text
            .strip_prefix("seq=")
            .and_then(|rest| rest.parse().ok())
            .unwrap_or_else(|| panic!("payload {text:?} is not the sender's"));
        let ms = i64::try_from(packet.timestamp.as_millis()).unwrap();
        found.push((seq, ms));
    }
    (found, others)
}

/// Checks that `found` is every datagram from its first to its last, once
/// each, in order.
fn no_gap_no_duplicate(found: &[(u64, i64)], what: &str) {
    assert!(!found.is_empty(), "{what}: no datagram");
    for pair in found.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 1,
            "{what}: datagram {} follows {} (a gap or a duplicate)",
            pair[1].0,
            pair[0].0
        );
    }
}

/// The sender: `seq=N` to both web hosts on [`PORT`] and [`OTHER_PORT`],
/// [`RATE`] per second each, for at most `seconds`.
fn sender_program(seconds: u64) -> String {
    let hosts: Vec<String> = WEB.iter().map(|&h| NetnsFleet::host_addr(h)).collect();
    format!(
        "import socket, time\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         hosts = {hosts:?}\n\
         start = time.monotonic()\n\
         n = 0\n\
         while time.monotonic() - start < {seconds} and n < {limit}:\n\
         \x20   for h in hosts:\n\
         \x20       s.sendto(b'seq=%d' % n, (h, {PORT}))\n\
         \x20       s.sendto(b'seq=%d' % n, (h, {OTHER_PORT}))\n\
         \x20   n += 1\n\
         \x20   time.sleep(max(0, start + n / {RATE} - time.monotonic()))\n",
        limit = seconds * RATE + 10,
    )
}

/// A one-file exporter: serves `netwatch_test_alarm` with the value in `file`.
fn exporter_program(file: &Path) -> String {
    format!(
        "import http.server\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       value = open({file:?}).read().strip() or '0'\n\
         \x20       body = ('# TYPE netwatch_test_alarm gauge\\nnetwatch_test_alarm %s\\n' % value).encode()\n\
         \x20       self.send_response(200)\n\
         \x20       self.send_header('Content-Type', 'text/plain; version=0.0.4')\n\
         \x20       self.end_headers()\n\
         \x20       self.wfile.write(body)\n\
         \x20   def log_message(self, *args):\n\
         \x20       pass\n\
         http.server.HTTPServer(('0.0.0.0', {EXPORTER_PORT}), H).serve_forever()\n",
        file = file.display().to_string(),
    )
}

fn recorder_hosts(setup: &Setup, name: &str) -> Vec<Value> {
    let (status, shown) = setup.arm(
        "GET",
        &format!("{}/netwatchFlightRecorders/{name}?{API}", watcher()),
        None,
    );
    assert_eq!(status, 200, "{shown}");
    shown["properties"]["hosts"].as_array().cloned().unwrap_or_default()
}

/// The result each host got for the first alert of a delivery's answer.
fn results(answer: &Value) -> BTreeMap<String, String> {
    answer["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|alert| alert["hosts"].as_array().cloned().unwrap_or_default())
        .map(|host| {
            (
                host["host"].as_str().unwrap_or_default().to_owned(),
                host["result"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// What a delivery's answer says happened on host `host`.
fn result_on(answer: &Value, host: usize) -> String {
    results(answer).remove(&vm_id(host)).unwrap_or_default()
}

/// The name of the capture the first alert of a delivery started.
fn first_capture(answer: &Value) -> String {
    let id = answer["alerts"][0]["hosts"][0]["capture"]
        .as_str()
        .unwrap_or_else(|| panic!("no capture in {answer:#}"));
    id.rsplit('/').next().unwrap().to_owned()
}

/// Azure's documented common-schema sample, adapted: `alert_id`, fired at
/// `fired_ms`, about `targets`.
fn azure_alert(alert_id: &str, condition: &str, fired_ms: i64, targets: &[String]) -> Value {
    json!({
        "schemaId": "azureMonitorCommonAlertSchema",
        "data": {
            "essentials": {
                "alertId": format!("/subscriptions/{SUB}/providers/Microsoft.AlertsManagement/alerts/{alert_id}"),
                "alertRule": "WCUS-R2-Gen2",
                "severity": "Sev3",
                "signalType": "Metric",
                "monitorCondition": condition,
                "monitoringService": "Platform",
                "alertTargetIDs": targets,
                "configurationItems": ["web"],
                "originAlertId": "3f2d4487-b0fc-4125-8bd5-7ad17384221e_PipeLineAlertRG_microsoft.insights_metricAlerts_WCUS-R2-Gen2_-117781227",
                "firedDateTime": rfc3339(fired_ms),
                "description": "",
                "essentialsVersion": "1.0",
                "alertContextVersion": "1.0"
            },
            "alertContext": {"properties": null, "conditionType": "SingleResourceMultipleMetricCriteria"}
        }
    })
}

#[test]
fn alerts_capture_the_seconds_before_them_from_the_flight_recorder() {
    for program in ["prometheus", "prometheus-alertmanager"] {
        let found = Command::new(program).arg("--version").output();
        assert!(
            found.is_ok_and(|out| out.status.success()),
            "{program} is needed (Debian's package; scripts/test.sh installs it)"
        );
    }
    let mut setup = Setup::start();
    let dir = setup.dir.path().to_owned();

    // Flight recorders on both hosts: UDP only, 30 s, 16 MiB; one through the
    // API, one with the CLI.
    let (status, body) = setup.put(
        "netwatchFlightRecorders",
        "web-1",
        json!({"target": vm_id(0), "filters": [{"protocol": "UDP"}], "seconds": 30, "maxBytes": 16 << 20}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["properties"]["seconds"], 30);
    let set = setup.cli(&[
        "network",
        "watcher",
        "flight-recorder",
        "set",
        "-l",
        "westus",
        "--vm",
        "web-2",
        "-g",
        "rg1",
        "--filters",
        r#"[{"protocol":"UDP"}]"#,
        "--seconds",
        "30",
        "--max-bytes",
        "16MiB",
    ]);
    assert_eq!(set["name"], "web-2", "{set:#}");
    assert_eq!(set["maxBytes"], 16 << 20, "{set:#}");
    let recording = netwatch_testkit::eventually(100, Duration::from_millis(200), || {
        WEB.iter().all(|&h| {
            recorder_hosts(&setup, &format!("web-{}", h + 1))
                .first()
                .is_some_and(|r| r["state"] == "Recording")
        })
    });
    assert!(recording, "the recorders do not record\n{}", setup.logs());

    // Bad trigger definitions: refused, nothing made.
    for (properties, target) in [
        (json!({}), "properties.storageLocation"),
        (
            json!({"source": "Splunk", "storageLocation": {"storageId": account()}}),
            "properties.source",
        ),
        (
            json!({"capture": {"secondsBefore": 7200}, "storageLocation": {"storageId": account()}}),
            "properties.capture.secondsBefore",
        ),
        (
            json!({"maxConcurrent": 0, "storageLocation": {"storageId": account()}}),
            "properties.maxConcurrent",
        ),
        (
            json!({"hosts": {"fromAlert": false}, "storageLocation": {"storageId": account()}}),
            "properties.hosts.fromAlert",
        ),
        (
            json!({"storageLocation": {"storageId": account().replace("netwatchlocal", "nosuch")}}),
            "properties.storageLocation.storageId",
        ),
        (
            json!({"webhookSecret": "short", "storageLocation": {"storageId": account()}}),
            "properties.webhookSecret",
        ),
    ] {
        let (status, body) = setup.put("netwatchTriggers", "bad", properties.clone());
        assert_eq!(status, 400, "{properties}: {body}");
        assert_eq!(body["error"]["target"], target, "{properties}: {body}");
    }
    let (status, _) = setup.arm("GET", &format!("{}/netwatchTriggers/bad?{API}", watcher()), None);
    assert_eq!(status, 404);

    // The trigger Alertmanager posts to.
    let (status, made) = setup.put(
        "netwatchTriggers",
        "latency",
        json!({
            "source": "Alertmanager",
            "match": {"alertRules": ["NetwatchTestAlarm"], "severities": ["critical"]},
            "capture": {"filters": [{"protocol": "UDP", "localPort": PORT.to_string()}], "secondsBefore": 12, "secondsAfter": 5},
            "storageLocation": {"storageId": account()},
            "cooldownSeconds": 0
        }),
    );
    assert_eq!(status, 201, "{made}");
    let webhook = made["properties"]["webhookUrl"].as_str().unwrap().to_owned();
    let secret = webhook.rsplit('/').next().unwrap().to_owned();
    let (_, shown) = setup.arm("GET", &format!("{}/netwatchTriggers/latency?{API}", watcher()), None);
    assert!(!shown.to_string().contains(&secret), "a GET shows the secret: {shown}");

    // Prometheus scrapes an exporter on each host; Alertmanager posts to the trigger.
    for host in WEB {
        let file = dir.join(format!("alarm-{host}"));
        std::fs::write(&file, "0").unwrap();
        let ns = setup.net.hosts[host].clone();
        setup.serve(
            &ns,
            &format!("exporter-{host}"),
            "python3",
            &["-c".as_ref(), exporter_program(&file).as_ref()],
        );
    }
    let targets: Vec<String> = WEB
        .iter()
        .map(|&h| format!("'{}:{EXPORTER_PORT}'", NetnsFleet::host_addr(h)))
        .collect();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: ['{rules}']\n\
             alerting: {{alertmanagers: [{{static_configs: [{{targets: ['{ALERTMANAGER}']}}]}}]}}\n\
             scrape_configs:\n- job_name: hosts\n  static_configs: [{{targets: [{targets}]}}]\n",
            rules = dir.join("rules.yml").display(),
            targets = targets.join(", "),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("rules.yml"),
        "groups:\n- name: netwatch-test\n  rules:\n  - alert: NetwatchTestAlarm\n    expr: netwatch_test_alarm > 0\n    labels: {severity: critical}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("alertmanager.yml"),
        format!(
            "route: {{receiver: netwatch, group_by: [alertname], group_wait: 1s, group_interval: 2s, repeat_interval: 1h}}\n\
             receivers:\n- name: netwatch\n  webhook_configs:\n  - url: '{}/netwatch/v1/alerts'\n    send_resolved: true\n    \
             http_config:\n      authorization: {{credentials: '{secret}'}}\n      tls_config: {{ca_file: '{}'}}\n",
            setup.url,
            setup.ca.display()
        ),
    )
    .unwrap();
    let hub = setup.net.hub.clone();
    let arg = |text: String| std::ffi::OsString::from(text);
    setup.serve(
        &hub,
        "alertmanager",
        "prometheus-alertmanager",
        &[
            &arg(format!("--config.file={}", dir.join("alertmanager.yml").display())),
            &arg(format!("--storage.path={}", dir.join("am-data").display())),
            &arg(format!("--web.listen-address={ALERTMANAGER}")),
            &arg("--cluster.listen-address=".to_owned()),
        ],
    );
    setup.serve(
        &hub,
        "prometheus",
        "prometheus",
        &[
            &arg(format!("--config.file={}", dir.join("prometheus.yml").display())),
            &arg(format!("--storage.tsdb.path={}", dir.join("prom-data").display())),
            &arg(format!("--web.listen-address={PROMETHEUS}")),
        ],
    );

    // Traffic from the third host, long enough for the whole story.
    let sender = NetnsPair::exec(&setup.net.hosts[SENDER], "python3")
        .args(["-c", &sender_program(180)])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let _sender = Guard(sender);
    // Prometheus sees both exporters before the alarm rises.
    let scraping = netwatch_testkit::eventually(150, Duration::from_millis(200), || {
        let out = NetnsPair::exec(&hub, "curl")
            .args([
                "-sS",
                "-G",
                &format!("http://{PROMETHEUS}/api/v1/query"),
                "--data-urlencode",
                "query=sum(up)",
            ])
            .output();
        out.ok()
            .and_then(|out| serde_json::from_slice::<Value>(&out.stdout).ok())
            .is_some_and(|v| v["data"]["result"][0]["value"][1] == "2")
    });
    assert!(scraping, "Prometheus does not scrape both exporters\n{}", setup.logs());
    // The recorders hold well over 12 s of traffic when the alarm rises.
    std::thread::sleep(Duration::from_secs(15));
    let raised_ms = now_ms();
    for host in WEB {
        std::fs::write(dir.join(format!("alarm-{host}")), "1").unwrap();
    }

    // One capture per host, named after the trigger and host.
    let deadline = Instant::now() + Duration::from_secs(60);
    let names: Vec<String> = loop {
        let names: Vec<String> = setup
            .captures()
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .filter(|name| name.starts_with("latency-"))
            .collect();
        if names.len() == 2 {
            break names;
        }
        assert!(
            Instant::now() < deadline,
            "no capture per host within 60 s: {names:?}\n{}",
            setup.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    for name in &names {
        let status = setup.stored(name);
        let alert = &status["netwatch"]["alert"];
        let fired = parse_time(alert["firedDateTime"].as_str().unwrap());
        assert!(
            fired >= raised_ms - 2000,
            "the alert fired at {fired}, before the alarm rose at {raised_ms}"
        );
        assert_eq!(alert["secondsBeforeRequested"], 12, "{status:#}");
        assert_eq!(
            alert["secondsBeforeCovered"], 12,
            "the recorder held the whole window: {status:#}"
        );
        assert_eq!(alert["alertRule"], "NetwatchTestAlarm");
        let file = setup.download(&status);
        let (found, others) = datagrams(&file);
        assert_eq!(
            others, 0,
            "{name}: only datagrams to port {PORT} pass the trigger's filter"
        );
        no_gap_no_duplicate(&found, name);
        let (first, last) = (found[0].1, found[found.len() - 1].1);
        assert!(
            first <= fired - 10_000 && first >= fired - 12_000,
            "{name}: the file starts {} ms before the alert, not 10-12 s",
            fired - first
        );
        assert!(
            last >= fired + 4_000 && last <= fired + 5_000,
            "{name}: the file ends {} ms after the alert, not 4-5 s",
            last - fired
        );
    }
    // The alarm falls; Alertmanager says resolved; the captures ran their course anyway.
    for host in WEB {
        std::fs::write(dir.join(format!("alarm-{host}")), "0").unwrap();
    }

    // Azure Monitor: the common schema, posted to the secret URL; the trigger made with the CLI.
    let filters = format!(r#"[{{"protocol":"UDP","localPort":"{PORT}"}}]"#);
    let azure = setup.cli(&[
        "network",
        "watcher",
        "trigger",
        "create",
        "-l",
        "westus",
        "-n",
        "azure",
        "--source",
        "AzureMonitor",
        "--filters",
        &filters,
        "--seconds-before",
        "5",
        "--seconds-after",
        "2",
        "-g",
        "netwatch",
        "--storage-account",
        "netwatchlocal",
        "--cooldown",
        "600",
    ]);
    let azure_url = azure["webhookUrl"]
        .as_str()
        .or_else(|| azure["properties"]["webhookUrl"].as_str())
        .unwrap_or_else(|| panic!("no webhookUrl in {azure:#}"))
        .to_owned();

    let before = setup.captures().len();
    // Bad payloads: answered with where and what, nothing started.
    for (body, target) in [
        (json!([1, 2]), Value::Null),
        (json!({}), Value::Null),
        (
            json!({"schemaId": "Microsoft.Insights/activityLogs", "data": {}}),
            json!("data"),
        ),
        (
            json!({"schemaId": "azureMonitorCommonAlertSchema", "data": {"essentials": {}}}),
            json!("data.essentials"),
        ),
        (
            {
                let mut a = azure_alert("x1", "Maybe", now_ms(), &[vm_id(1)]);
                a["data"]["essentials"]["monitorCondition"] = json!("Maybe");
                a
            },
            json!("data.essentials.monitorCondition"),
        ),
        (
            {
                let mut a = azure_alert("x2", "Fired", now_ms(), &[vm_id(1)]);
                a["data"]["essentials"]["firedDateTime"] = json!("yesterday");
                a
            },
            json!("data.essentials.firedDateTime"),
        ),
        (
            azure_alert("x3", "Fired", now_ms(), &["web-2".to_owned()]),
            json!("data.essentials.alertTargetIDs[0]"),
        ),
        (json!({"version": "3", "alerts": [{}]}), Value::Null),
        (
            json!({"version": "4", "status": "firing", "alerts": []}),
            json!("alerts"),
        ),
        (
            json!({"version": "4", "status": "firing", "alerts": [{"status": "pending", "labels": {"alertname": "A"}, "startsAt": "2026-12-06T10:00:00Z", "fingerprint": "f"}]}),
            json!("alerts[0].status"),
        ),
        (
            json!({"version": "4", "status": "firing", "alerts": [{"status": "firing", "labels": {}, "startsAt": "2026-12-06T10:00:00Z", "fingerprint": "f"}]}),
            json!("alerts[0].labels.alertname"),
        ),
        (
            json!({"version": "4", "status": "firing", "alerts": [{"status": "firing", "labels": {"alertname": "A"}, "startsAt": "soon", "fingerprint": "f"}]}),
            json!("alerts[0].startsAt"),
        ),
    ] {
        let (status, answer) = setup.post(&azure_url, None, &body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            !answer["error"]["message"].as_str().unwrap_or_default().is_empty(),
            "{answer}"
        );
        if !target.is_null() {
            assert!(
                answer["error"]["target"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(target.as_str().unwrap()),
                "{body}: {answer}"
            );
        }
    }
    let (status, answer) = setup.post(
        &format!("{}/netwatch/v1/alerts/{}", setup.url, "x".repeat(64)),
        None,
        &azure_alert("x", "Fired", now_ms(), &[vm_id(1)]),
    );
    assert_eq!(status, 401, "an unknown secret: {answer}");
    let (status, answer) = setup.post(
        &format!("{}/netwatch/v1/alerts", setup.url),
        None,
        &azure_alert("x", "Fired", now_ms(), &[vm_id(1)]),
    );
    assert_eq!(status, 401, "no bearer: {answer}");
    // An alert the trigger does not take (its source is Azure Monitor only).
    let other = json!({"version": "4", "status": "firing", "alerts": [{"status": "firing", "labels": {"alertname": "A", "instance": "web-1"}, "startsAt": rfc3339(now_ms()), "fingerprint": "f1"}]});
    let (status, answer) = setup.post(&azure_url, None, &other);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["alerts"][0]["matched"], false, "{answer}");
    assert_eq!(
        setup.captures().len(),
        before,
        "bad or unmatched payloads started nothing"
    );

    // The alert fired a second ago on web-2: its capture covers 5 s before.
    let fired = now_ms() - 1000;
    let alert = azure_alert("a1", "Fired", fired, &[vm_id(1)]);
    let (status, answer) = setup.post(&azure_url, None, &alert);
    assert_eq!(status, 200, "{answer}");
    let started = results(&answer);
    assert_eq!(
        started.get(&vm_id(1)).map(String::as_str),
        Some("Started"),
        "{answer:#}"
    );
    assert_eq!(started.len(), 1, "web-2 only: {answer:#}");
    let capture = first_capture(&answer);
    // Delivered again (action groups retry): the same capture, nothing new.
    let (_, again) = setup.post(&azure_url, None, &alert);
    assert_eq!(result_on(&again, 1), "Duplicate", "{again:#}");
    // Another alert on web-2 within the cooldown.
    let (_, cooled) = setup.post(&azure_url, None, &azure_alert("a2", "Fired", now_ms(), &[vm_id(1)]));
    assert_eq!(result_on(&cooled, 1), "Cooldown", "{cooled:#}");
    let status = setup.stored(&capture);
    assert_eq!(status["netwatch"]["alert"]["secondsBeforeCovered"], 5, "{status:#}");
    let (found, others) = datagrams(&setup.download(&status));
    assert_eq!(others, 0);
    no_gap_no_duplicate(&found, &capture);
    assert!(
        found[0].1 <= fired - 4_500 && found[0].1 >= fired - 5_000,
        "{capture} starts {} ms before",
        fired - found[0].1
    );
    assert!(
        found[found.len() - 1].1 >= fired + 1_500,
        "{capture} ends {} ms after",
        found[found.len() - 1].1 - fired
    );

    // The concurrency and rate limits; a resolved alert stops its capture.
    let (status, limited) = setup.put(
        "netwatchTriggers",
        "limited",
        json!({
            "source": "AzureMonitor",
            "capture": {"secondsBefore": 1, "secondsAfter": 60},
            "storageLocation": {"storageId": account()},
            "stopOnResolved": true, "cooldownSeconds": 0, "maxConcurrent": 1, "maxPerHour": 2
        }),
    );
    assert_eq!(status, 201, "{limited}");
    let limited = limited["properties"]["webhookUrl"].as_str().unwrap().to_owned();
    let x = now_ms();
    let (_, first) = setup.post(&limited, None, &azure_alert("x", "Fired", x, &[vm_id(0)]));
    assert_eq!(result_on(&first, 0), "Started", "{first:#}");
    let (_, second) = setup.post(&limited, None, &azure_alert("y", "Fired", now_ms(), &[vm_id(1)]));
    assert_eq!(result_on(&second, 1), "ConcurrencyLimit", "{second:#}");
    let (_, resolved) = setup.post(&limited, None, &azure_alert("x", "Resolved", x, &[vm_id(0)]));
    assert_eq!(result_on(&resolved, 0), "Stopped", "{resolved:#}");
    let x_name = first_capture(&first);
    let stopped = setup.stored(&x_name);
    assert_eq!(stopped["stopReason"], "ManualStop", "{stopped:#}");
    let (_, second) = setup.post(&limited, None, &azure_alert("y", "Fired", now_ms(), &[vm_id(1)]));
    assert_eq!(result_on(&second, 1), "Started", "{second:#}");
    let (_, resolved) = setup.post(&limited, None, &azure_alert("y", "Resolved", now_ms(), &[vm_id(1)]));
    assert_eq!(result_on(&resolved, 1), "Stopped", "{resolved:#}");
    let y_name = first_capture(&second);
    setup.stored(&y_name);
    let (_, third) = setup.post(&limited, None, &azure_alert("z", "Fired", now_ms(), &[vm_id(0)]));
    assert_eq!(result_on(&third, 0), "RateLimit", "{third:#}");

    // An agent killed during a window takes its capture up when it restarts:
    // the file keeps what the hold had kept, and says the downtime is missing.
    let (status, survive) = setup.put(
        "netwatchTriggers",
        "survive",
        json!({
            "source": "AzureMonitor",
            "capture": {"filters": [{"protocol": "UDP", "localPort": PORT.to_string()}], "secondsBefore": 4, "secondsAfter": 8},
            "storageLocation": {"storageId": account()}
        }),
    );
    assert_eq!(status, 201, "{survive}");
    let survive = survive["properties"]["webhookUrl"].as_str().unwrap().to_owned();
    let fired = now_ms();
    let (_, answer) = setup.post(&survive, None, &azure_alert("k", "Fired", fired, &[vm_id(1)]));
    assert_eq!(result_on(&answer, 1), "Started", "{answer:#}");
    let name = first_capture(&answer);
    let running = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
        setup.status(&name)["packetCaptureStatus"] == "Running"
    });
    assert!(running, "{name} did not run\n{}", setup.logs());
    std::thread::sleep(Duration::from_secs(1));
    let killed_ms = now_ms();
    setup.agents[1] = None;
    std::thread::sleep(Duration::from_secs(1));
    let restarted_ms = now_ms();
    setup.agents[1] = Some(spawn_agent(
        &setup.net,
        &dir,
        (&setup.url, &setup.ca, &setup.agent_token),
        1,
    ));
    let status = setup.stored(&name);
    assert!(
        status["packetCaptureError"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("AgentStopped"))),
        "{status:#}"
    );
    assert_eq!(status["netwatch"]["alert"]["secondsBeforeCovered"], 4, "{status:#}");
    let (found, _) = datagrams(&setup.download(&status));
    let before: Vec<(u64, i64)> = found.iter().copied().filter(|&(_, ms)| ms <= killed_ms).collect();
    no_gap_no_duplicate(&before, &format!("{name} before the kill"));
    assert!(
        before[0].1 <= fired - 3_500,
        "{name} starts {} ms before the alert",
        fired - before[0].1
    );
    let after: Vec<(u64, i64)> = found.iter().copied().filter(|&(_, ms)| ms > restarted_ms).collect();
    no_gap_no_duplicate(&after, &format!("{name} after the restart"));
    assert!(
        after.last().is_some_and(|&(_, ms)| ms >= fired + 7_000),
        "{name} does not reach the window's end after the restart"
    );

    // A host whose recorder is gone still gets a capture, from the alert on, and says so.
    let (status, _) = setup.arm(
        "DELETE",
        &format!("{}/netwatchFlightRecorders/web-1?{API}", watcher()),
        None,
    );
    assert_eq!(status, 200);
    let stopped = netwatch_testkit::eventually(100, Duration::from_millis(200), || {
        recorder_hosts(&setup, "web-2")
            .first()
            .is_some_and(|r| r["state"] == "Recording")
            && setup
                .arm(
                    "GET",
                    &format!("{}/netwatchFlightRecorders/web-1?{API}", watcher()),
                    None,
                )
                .0
                == 404
    });
    assert!(stopped);
    std::thread::sleep(Duration::from_secs(1));
    let (status, late) = setup.put(
        "netwatchTriggers",
        "late",
        json!({"source": "AzureMonitor", "capture": {"secondsBefore": 10, "secondsAfter": 3}, "storageLocation": {"storageId": account()}}),
    );
    assert_eq!(status, 201, "{late}");
    let late = late["properties"]["webhookUrl"].as_str().unwrap().to_owned();
    let (_, answer) = setup.post(&late, None, &azure_alert("w", "Fired", now_ms(), &[vm_id(0)]));
    assert_eq!(result_on(&answer, 0), "Started", "{answer:#}");
    let name = first_capture(&answer);
    let status = setup.stored(&name);
    let covered = status["netwatch"]["alert"]["secondsBeforeCovered"].as_i64().unwrap();
    assert!(
        covered <= 0,
        "without a recorder nothing before the alert is covered: {status:#}"
    );
    assert!(
        status["netwatch"]["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("no flight recorder"),
        "{status:#}"
    );
    // What the webhook did is counted for Prometheus.
    let out = NetnsPair::exec(&setup.net.hub, "curl")
        .args(["-sS", "--cacert"])
        .arg(&setup.ca)
        .args(["-H", &format!("Authorization: Bearer {}", setup.token)])
        .arg(format!("{}/metrics", setup.url))
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&out.stdout);
    for series in [
        "netwatch_alert_hosts_total{result=\"Started\"}",
        "netwatch_alert_hosts_total{result=\"Duplicate\"}",
        "netwatch_alert_hosts_total{result=\"ConcurrencyLimit\"}",
        "netwatch_alert_deliveries_total{result=\"refused\"}",
        "netwatch_alert_deliveries_total{result=\"unauthorized\"}",
    ] {
        assert!(
            metrics.lines().any(|line| line.starts_with(series)),
            "no {series} in /metrics"
        );
    }
    // The recorder's files left web-1's data directory.
    let recorded: Vec<_> = std::fs::read_dir(dir.join("agent-0/recorder"))
        .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(recorded.is_empty(), "web-1's recorder left {recorded:?}");
}
