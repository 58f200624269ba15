//! A remote packet capture end to end, driven by Azure's own Python SDK
//! (`azure-mgmt-network`): `netwatch up` (controller only) in namespace `b`,
//! `netwatch agent` in namespace `a` connecting to it over the veth pair, the
//! SDK in `b`, real UDP traffic from `b` to `a`.
//!
//! The SDK runs from the virtualenv `scripts/test.sh` makes; its Python is
//! `NETWATCH_TEST_PYTHON`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use etherparse::{LaxSlicedPacket, TransportSlice};
use netwatch_testkit::{A4, B4, IF_A, NetnsPair, read_pcap};
use serde_json::{Value, json};

use crate::util::netwatch;

const SUB: &str = "00000000-0000-0000-0000-000000000000";
const VM: &str = "host-a";
/// Where `netwatch up` listens: b's side of the veth pair.
const LISTEN: &str = "10.203.0.2:0";

/// The SDK's Python, from the environment; a clear failure without it.
fn python() -> PathBuf {
    match std::env::var_os("NETWATCH_TEST_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => panic!(
            "NETWATCH_TEST_PYTHON is not set: it names a Python with azure-mgmt-network installed. \
             scripts/test.sh makes one; by hand: python3 -m venv V && V/bin/pip install azure-mgmt-network \
             && NETWATCH_TEST_PYTHON=V/bin/python cargo test"
        ),
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/azure_sdk.py")
}

/// A child process killed when the test ends, pass or fail.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `netwatch up` in b and an agent in a.
struct Deployment {
    pair: NetnsPair,
    dir: tempfile::TempDir,
    url: String,
    token: String,
    ca: PathBuf,
    up: Option<Guard>,
    agent: Option<Guard>,
}

/// Starts `netwatch up --no-agent` in `ns` on `listen` over `data`; the process and its URL.
fn start_up(ns: &str, dir: &Path, listen: &str) -> (Guard, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("up.log"))
        .unwrap();
    let mut up = NetnsPair::exec(ns, netwatch())
        .args(["up", "--no-agent", "--listen", listen, "--data-dir"])
        .arg(dir.join("up"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn netwatch up");
    let stdout = up.stdout.take().unwrap();
    let up = Guard(up);
    let mut url = None;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(found) = line.trim().strip_prefix("URL:") {
            url = Some(found.trim().to_owned());
            break;
        }
    }
    // Keep reading: the rest of the banner must find a reader.
    std::thread::spawn(move || lines.for_each(drop));
    let url = url.unwrap_or_else(|| {
        panic!(
            "netwatch up printed no URL; its log:\n{}",
            std::fs::read_to_string(dir.join("up.log")).unwrap_or_default()
        )
    });
    (up, url)
}

impl Deployment {
    /// The controller in b and an agent in a, registered.
    fn start() -> Deployment {
        let mut deployment = Deployment::controller_only();
        let token = deployment.credential("agent_token");
        let agent_dir = deployment.dir.path().join("agent");
        deployment.agent = Some(deployment.start_agent(&token, &agent_dir, "agent.log"));
        deployment.wait_for_agent();
        deployment
    }

    /// The controller in b, no agent yet.
    fn controller_only() -> Deployment {
        let python = python();
        assert!(
            python.exists(),
            "NETWATCH_TEST_PYTHON={} does not exist",
            python.display()
        );
        let pair = NetnsPair::new();
        let dir = tempfile::tempdir().unwrap();
        let (up, url) = start_up(&pair.b, dir.path(), LISTEN);
        let mut deployment = Deployment {
            pair,
            dir,
            url,
            token: String::new(),
            ca: PathBuf::new(),
            up: Some(up),
            agent: None,
        };
        deployment.token = deployment.credential("admin_token");
        deployment.ca = deployment.dir.path().join("up/ca.pem");
        deployment
    }

    /// A token from `netwatch up`'s credentials.toml.
    fn credential(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("up/credentials.toml")).unwrap();
        let credentials: toml::Table = toml::from_str(&text).unwrap();
        credentials[name].as_str().unwrap().to_owned()
    }

    /// `netwatch agent` in a as VM host-a with `token`, its data in `data`, its log in `log`.
    fn start_agent(&self, token: &str, data: &Path, log: &str) -> Guard {
        let agent = NetnsPair::exec(&self.pair.a, netwatch())
            .args(["agent", "--server", &self.url, "--enroll-token", token, "--ca"])
            .arg(&self.ca)
            .args(["--vm-name", VM, "-g", "rg1", "-l", "westus", "-i", IF_A, "--data-dir"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(self.dir.path().join(log)).unwrap()))
            .spawn()
            .expect("spawn netwatch agent");
        Guard(agent)
    }

    /// Waits until the agent has registered the host as VM host-a.
    fn wait_for_agent(&self) {
        let vm = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{VM}");
        let registered = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
            self.sdk(&["rest", "GET", &format!("{vm}?api-version=2024-07-01")])["status"] == 200
        });
        assert!(registered, "the agent did not register within 10 s\n{}", self.logs());
    }

    /// `kill -9` of the controller.
    fn kill_controller(&mut self) {
        drop(self.up.take());
    }

    /// Starts the controller again on the same data and address.
    fn restart_controller(&mut self) {
        let listen = self.url.trim_start_matches("https://").to_owned();
        let (up, url) = start_up(&self.pair.b, self.dir.path(), &listen);
        assert_eq!(url, self.url);
        self.up = Some(up);
    }

    /// Runs one SDK step; its JSON output.
    fn sdk(&self, args: &[&str]) -> Value {
        let output = NetnsPair::exec(&self.pair.b, python())
            .arg(script())
            .args(args)
            .env("NETWATCH_URL", &self.url)
            .env("NETWATCH_TOKEN", &self.token)
            .env("NETWATCH_CA", &self.ca)
            .stdin(Stdio::null())
            .output()
            .expect("run the SDK script");
        assert!(
            output.status.success(),
            "SDK step {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.logs()
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
            panic!(
                "SDK step {args:?} printed no JSON ({err}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("--- up.log\n{}\n--- agent.log\n{}", read("up.log"), read("agent.log"))
    }

    fn create(&self, name: &str, properties: Value) -> Value {
        let mut properties = properties;
        properties["target"] = json!(format!(
            "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{VM}"
        ));
        properties["storageLocation"] = json!({"storageId": format!(
            "/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/netwatchlocal"
        )});
        let body = json!({ "properties": properties }).to_string();
        self.sdk(&["create", name, &body])
    }

    /// `begin_get_status` until `done` holds for it (bounded: 30 s).
    fn status_until(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.sdk(&["status", name]);
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "capture {name} not {what} within 30 s: {status}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Downloads a capture's file through its `storagePath`.
    fn download(&self, capture: &Value) -> PathBuf {
        let url = capture["properties"]["storageLocation"]["storagePath"]
            .as_str()
            .unwrap_or_else(|| panic!("no storagePath in {capture}"));
        let file = self
            .dir
            .path()
            .join(format!("{}.cap", capture["name"].as_str().unwrap()));
        self.sdk(&["download", url, file.to_str().unwrap()]);
        file
    }
}

/// Sends `count` UDP datagrams of `payload` bytes from b to a's first address
/// on each port (nothing listens; the packets cross vA all the same).
fn send_udp(pair: &NetnsPair, ports: &[u16], count: usize, payload: usize) {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let program = format!(
        "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for i in range({count}):\n    for p in ({},):\n        s.sendto(b'x' * {payload}, ('{}', p))\n    time.sleep(0.001)\n",
        ports.join(", "),
        A4[0]
    );
    netwatch_testkit::run(NetnsPair::exec(&pair.b, "python3").args(["-c", &program]));
}

/// The UDP destination ports of a capture file's packets from b, with each
/// record's stored and original length.
fn udp_packets(path: &Path) -> Vec<(u16, usize, u32)> {
    let (_, packets) = read_pcap(path);
    packets
        .iter()
        .filter_map(|packet| {
            // Lax: a truncated record ends before the lengths its headers give.
            let sliced = LaxSlicedPacket::from_ethernet(&packet.data).ok()?;
            let Some(TransportSlice::Udp(udp)) = sliced.transport else {
                return None;
            };
            Some((udp.destination_port(), packet.data.len(), packet.orig_len))
        })
        .collect()
}

#[test]
fn azure_sdk_drives_a_remote_capture_end_to_end() {
    let nw = Deployment::start();

    // Two filters; traffic to 7001 and 7002 matches, to 7009 does not.
    let filters = json!([
        {"protocol": "UDP", "localPort": "7001"},
        {"protocol": "UDP", "remoteIPAddress": B4, "localPort": "7002-7003"},
    ]);
    let created = nw.create(
        "sdk-walkthrough",
        json!({"filters": filters, "bytesToCapturePerPacket": 60, "timeLimitInSeconds": 120}),
    );
    assert_eq!(created["properties"]["provisioningState"], "Succeeded", "{created}");
    assert_eq!(created["properties"]["bytesToCapturePerPacket"], 60);
    // begin_create().result() returns once the agent runs it.
    let running = nw.sdk(&["status", "sdk-walkthrough"]);
    assert_eq!(running["packetCaptureStatus"], "Running", "{running}");
    assert!(running["captureStartTime"].is_string(), "{running}");

    send_udp(&nw.pair, &[7001, 7002, 7009], 40, 200);
    let counted = nw.status_until("sdk-walkthrough", "counting 80 packets", |status| {
        status["packetCaptureStatus"] == "Running" && status["netwatch"]["packetsCaptured"] == 80
    });
    assert_eq!(counted["netwatch"]["kernelDrops"], 0, "{counted}");
    assert!(counted["netwatch"]["agentLastSeen"].is_string(), "{counted}");
    assert_eq!(counted["netwatch"]["uploadState"], "Pending", "{counted}");

    // begin_stop().result() returns once the file is final and uploaded.
    nw.sdk(&["stop", "sdk-walkthrough"]);
    let stopped = nw.sdk(&["status", "sdk-walkthrough"]);
    assert_eq!(stopped["packetCaptureStatus"], "Stopped", "{stopped}");
    assert_eq!(stopped["stopReason"], "ManualStop", "{stopped}");
    assert_eq!(stopped["packetCaptureError"], json!([]), "{stopped}");
    assert_eq!(stopped["netwatch"]["uploadState"], "Succeeded", "{stopped}");

    // The file: exactly the matching packets, truncated to 60 bytes, whole length kept.
    let capture = nw.sdk(&["get", "sdk-walkthrough"]);
    let file = nw.download(&capture);
    let packets = udp_packets(&file);
    let count = |port| packets.iter().filter(|p| p.0 == port).count();
    assert_eq!((count(7001), count(7002), count(7009)), (40, 40, 0), "{packets:?}");
    assert_eq!(packets.len(), 80);
    // 14 Ethernet + 20 IPv4 + 8 UDP + 200 payload = 242 bytes on the wire.
    assert!(packets.iter().all(|p| p.1 == 60 && p.2 == 242), "{packets:?}");

    // list shows it; delete removes the resource and leaves the file.
    let listed = nw.sdk(&["list"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "sdk-walkthrough"),
        "{listed}"
    );
    nw.sdk(&["delete", "sdk-walkthrough"]);
    let listed = nw.sdk(&["list"]);
    assert!(listed.as_array().unwrap().is_empty(), "{listed}");
    let again = nw.dir.path().join("again.cap");
    nw.sdk(&[
        "download",
        capture["properties"]["storageLocation"]["storagePath"]
            .as_str()
            .unwrap(),
        again.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&file).unwrap());
}

#[test]
fn azure_sdk_captures_end_by_time_and_by_bytes() {
    let nw = Deployment::start();

    // timeLimitInSeconds: stops by itself with TimeExceeded.
    let started = Instant::now();
    nw.create(
        "sdk-time",
        json!({"filters": [{"protocol": "UDP", "localPort": "7101"}], "timeLimitInSeconds": 2}),
    );
    send_udp(&nw.pair, &[7101], 10, 100);
    let stopped = nw.status_until("sdk-time", "stopped", |s| s["packetCaptureStatus"] == "Stopped");
    assert_eq!(stopped["stopReason"], "TimeExceeded", "{stopped}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    let uploaded = nw.status_until("sdk-time", "uploaded", |s| s["netwatch"]["uploadState"] == "Succeeded");
    let file = nw.download(&nw.sdk(&["get", "sdk-time"]));
    assert_eq!(udp_packets(&file).len(), 10, "{uploaded}");

    // totalBytesPerSession: stops when the file would pass it, with MaxBytesExceeded.
    nw.create(
        "sdk-bytes",
        json!({"filters": [{"protocol": "UDP", "localPort": "7102"}], "totalBytesPerSession": 4000}),
    );
    send_udp(&nw.pair, &[7102], 40, 200);
    let stopped = nw.status_until("sdk-bytes", "stopped", |s| s["packetCaptureStatus"] == "Stopped");
    assert_eq!(stopped["stopReason"], "MaxBytesExceeded", "{stopped}");
    nw.status_until("sdk-bytes", "uploaded", |s| s["netwatch"]["uploadState"] == "Succeeded");
    let file = nw.download(&nw.sdk(&["get", "sdk-bytes"]));
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size <= 4000, "file of {size} bytes passed totalBytesPerSession 4000");
    // 24-byte header, then records of 16 + 242 bytes: 15 fit in 4000.
    assert_eq!(udp_packets(&file).len(), 15);
}

#[test]
fn a_capture_ends_on_time_while_the_controller_is_down_and_is_stored_after() {
    let mut nw = Deployment::start();
    nw.create(
        "sdk-restart",
        json!({"filters": [{"protocol": "UDP", "localPort": "7201"}], "timeLimitInSeconds": 3}),
    );
    let started = Instant::now();
    nw.kill_controller();

    // The agent owns the capture: it keeps capturing and stops on time alone.
    send_udp(&nw.pair, &[7201], 20, 100);
    let local = nw.dir.path().join("agent/captures");
    std::thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()) + Duration::from_millis(500));
    let files: Vec<PathBuf> = std::fs::read_dir(&local)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(udp_packets(&files[0]).len(), 20, "the agent's own file");
    let agent_log = std::fs::read_to_string(nw.dir.path().join("agent.log")).unwrap();
    assert!(
        agent_log.contains("TimeExceeded"),
        "the capture did not stop on time without the controller:\n{agent_log}"
    );

    // The controller is back: the agent reconnects, reports and uploads.
    nw.restart_controller();
    let stopped = nw.status_until("sdk-restart", "stopped and uploaded", |s| {
        s["packetCaptureStatus"] == "Stopped" && s["netwatch"]["uploadState"] == "Succeeded"
    });
    assert_eq!(stopped["stopReason"], "TimeExceeded", "{stopped}");
    assert_eq!(stopped["netwatch"]["packetsCaptured"], 20, "{stopped}");
    let file = nw.download(&nw.sdk(&["get", "sdk-restart"]));
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(&files[0]).unwrap());
}

#[test]
fn a_host_enrolls_once_and_keeps_its_own_credential() {
    let mut nw = Deployment::controller_only();
    let vm = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{VM}");
    let extension = format!("{vm}/extensions/NetworkWatcherAgentLinux?api-version=2024-11-01");
    let body = json!({"location": "westus", "properties": {"publisher": "Microsoft.Azure.NetworkWatcher",
        "type": "NetworkWatcherAgentLinux", "typeHandlerVersion": "1.4"}})
    .to_string();
    let set = nw.sdk(&["rest", "PUT", &extension, &body]);
    assert_eq!(set["status"], 201, "{set}");
    assert_eq!(set["body"]["properties"]["provisioningState"], "Creating", "{set}");
    let enrollment = &set["body"]["properties"]["netwatch"]["enrollment"];
    let token = enrollment["token"].as_str().unwrap().to_owned();
    let command = enrollment["command"].as_str().unwrap();
    assert!(
        command.contains(&format!(
            "--enroll-token {token} --vm-name {VM} --resource-group rg1 --location westus"
        )),
        "{command}"
    );

    // The host enrolls: registered, with a credential of its own kept on disk.
    let data = nw.dir.path().join("enrolled");
    nw.agent = Some(nw.start_agent(&token, &data, "agent.log"));
    nw.wait_for_agent();
    let shown = nw.sdk(&["rest", "GET", &extension]);
    assert_eq!(shown["body"]["properties"]["provisioningState"], "Succeeded", "{shown}");
    let credential = std::fs::read_to_string(data.join("credential")).unwrap();
    assert_eq!(credential.len(), 64);
    assert_ne!(credential, token);

    // It captures and uploads with that credential.
    nw.create(
        "enrolled",
        json!({"filters": [{"protocol": "UDP", "localPort": "7301"}], "timeLimitInSeconds": 1}),
    );
    send_udp(&nw.pair, &[7301], 5, 100);
    nw.status_until("enrolled", "stopped and uploaded", |s| {
        s["packetCaptureStatus"] == "Stopped" && s["netwatch"]["uploadState"] == "Succeeded"
    });

    // Restarted, the agent uses its credential: the spent enrollment token is not needed.
    drop(nw.agent.take());
    let before = nw.sdk(&["rest", "GET", &format!("{vm}?api-version=2024-07-01")]);
    std::thread::sleep(Duration::from_millis(1100));
    nw.agent = Some(nw.start_agent(&token, &data, "agent-again.log"));
    let again = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
        let now = nw.sdk(&["rest", "GET", &format!("{vm}?api-version=2024-07-01")]);
        now["body"]["properties"]["netwatch"]["connectedMs"] != before["body"]["properties"]["netwatch"]["connectedMs"]
    });
    assert!(again, "the agent did not reconnect with its credential\n{}", nw.logs());

    // Anyone else with the spent token is refused.
    let thief = nw.start_agent(&token, &nw.dir.path().join("thief"), "thief.log");
    let refused = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
        std::fs::read_to_string(nw.dir.path().join("thief.log"))
            .unwrap_or_default()
            .contains("401 Unauthorized")
    });
    drop(thief);
    assert!(
        refused,
        "a spent enrollment token was not refused:\n{}",
        std::fs::read_to_string(nw.dir.path().join("thief.log")).unwrap_or_default()
    );
}
