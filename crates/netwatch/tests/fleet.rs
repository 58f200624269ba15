//! Captures over many hosts (issue 13): a scale set of six test hosts on one
//! switch ([`NetnsFleet`]), each with its own agent, joined with one reusable
//! key; the controller (`netwatch up --no-agent`) and the clients in the hub.
//!
//! One test walks the whole story, because each step needs the hosts the
//! one before made: hosts join (one twice, keeping its instance id), a
//! capture excluding one instance via Azure's Python SDK while one host's
//! disk is full and another's agent is killed mid-way, a host joining during
//! the capture, every host's file checked packet by packet, the merged
//! pcapng read by tshark; then a capture choosing instances with the real
//! `az`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use netwatch_testkit::{FLEET_HUB4, IF_HOST, NetnsFleet, NetnsPair, read_pcap};
use serde_json::{Value, json};

use crate::deployment::{Guard, SUB, az_in, az_login, run_sdk, start_up};
use crate::util::netwatch;

const SET: &str = "web";
/// Hosts 0-5 join the scale set; host 6 is a plain VM (`db-1`, tagged at enrollment).
const HOSTS: usize = 7;
/// The capture's port; traffic to [`OTHER_PORT`] must not be captured.
const PORT: u16 = 7101;
const OTHER_PORT: u16 = 7109;
/// Datagrams each host sends each other host per round, per port.
const PER_ROUND: usize = 5;

fn set_id() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/{SET}")
}

/// A tmpfs mounted at a directory while it lives: a host's data directory
/// that can be filled.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        netwatch_testkit::run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(path),
        );
        Tmpfs(path.to_owned())
    }

    /// Fills it to the last byte.
    fn fill(&self) {
        let fill = self.0.join("fill");
        // dd stops at ENOSPC with an error status: that is the point.
        let _ = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", fill.display()))
            .args(["bs=4096"])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

struct Fleet {
    net: NetnsFleet,
    dir: tempfile::TempDir,
    url: String,
    token: String,
    ca: PathBuf,
    _up: Guard,
    agents: Vec<Option<Guard>>,
}

impl Fleet {
    /// The controller in the hub, with agents given up after 3 s of silence.
    fn start() -> Fleet {
        let net = NetnsFleet::new(HOSTS);
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("{FLEET_HUB4}:0");
        let (up, url) = start_up(&net.hub, dir.path(), &listen);
        // A top-level key, before the first table; then the controller again.
        let path = dir.path().join("up/config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let at = text.find("\n[").map_or(text.len(), |i| i + 1);
        std::fs::write(&path, format!("{}agent_lost_seconds = 3\n{}", &text[..at], &text[at..])).unwrap();
        drop(up);
        let listen = url.trim_start_matches("https://").to_owned();
        let (up, again) = start_up(&net.hub, dir.path(), &listen);
        assert_eq!(again, url);
        let credentials: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.path().join("up/credentials.toml")).unwrap()).unwrap();
        let token = credentials["admin_token"].as_str().unwrap().to_owned();
        let ca = dir.path().join("up/ca.pem");
        Fleet {
            net,
            dir,
            url,
            token,
            ca,
            _up: up,
            agents: (0..HOSTS).map(|_| None).collect(),
        }
    }

    fn logs(&self) -> String {
        crate::util::log_tails(self.dir.path(), 40)
    }

    fn sdk(&self, args: &[&str]) -> Value {
        run_sdk(&self.net.hub, (&self.url, &self.token, &self.ca), args, || self.logs())
    }

    fn rest(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let mut args = vec!["rest", method, path];
        if let Some(body) = &body {
            args.push(body);
        }
        self.sdk(&args)
    }

    /// `netwatch ARGS` in the hub, as the admin.
    fn netwatch(&self, args: &[&str]) -> std::process::Output {
        NetnsPair::exec(&self.net.hub, netwatch())
            .args(args)
            .env("NETWATCH_URL", &self.url)
            .env("NETWATCH_TOKEN", &self.token)
            .env("NETWATCH_CA", &self.ca)
            .env("XDG_CONFIG_HOME", self.dir.path().join("no-config"))
            .stdin(Stdio::null())
            .output()
            .expect("run netwatch")
    }

    /// `vmss extension set` for [`SET`] (az's command, with `more` flags): its JSON.
    fn enroll_scale_set(&self, more: &[&str]) -> Value {
        let mut args = vec![
            "vmss",
            "extension",
            "set",
            "-g",
            "rg1",
            "--vmss-name",
            SET,
            "--name",
            "NetworkWatcherAgentLinux",
            "--publisher",
            "Microsoft.Azure.NetworkWatcher",
            "--version",
            "1.4",
            "-o",
            "json",
        ];
        args.extend_from_slice(more);
        let made = self.netwatch(&args);
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        serde_json::from_slice(&made.stdout).unwrap()
    }

    fn data_dir(&self, host: usize) -> PathBuf {
        self.dir.path().join(format!("agent-{host}"))
    }

    /// Host `host`'s agent, with `key`, logging to agent-{host}-{n}.log.
    fn start_agent(&mut self, host: usize, key: &str) {
        self.start_agent_with(host, key, &[]);
    }

    /// [`Fleet::start_agent`] with more flags.
    fn start_agent_with(&mut self, host: usize, key: &str, extra: &[&str]) {
        let n = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("agent-{host}-")))
            .count();
        let log = std::fs::File::create(self.dir.path().join(format!("agent-{host}-{n}.log"))).unwrap();
        let agent = NetnsPair::exec(&self.net.hosts[host], netwatch())
            .args(["agent", "--server", &self.url, "--enroll-token", key, "--ca"])
            .arg(&self.ca)
            .args(["-g", "rg1", "-l", "westus", "-i", IF_HOST, "--data-dir"])
            .arg(self.data_dir(host))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn netwatch agent");
        self.agents[host] = Some(Guard(agent));
    }

    fn instances(&self) -> Vec<Value> {
        let listed = self.rest(
            "GET",
            &format!("{}/virtualMachines?api-version=2024-07-01", set_id()),
            None,
        );
        assert_eq!(listed["status"], 200, "{listed}");
        listed["body"]["value"].as_array().unwrap().clone()
    }

    /// Host `host`'s instance id (by its address), once it joined.
    fn instance_of(&self, host: usize) -> Option<String> {
        let address = format!("{}/24", NetnsFleet::host_addr(host));
        self.instances()
            .iter()
            .find(|i| {
                i["properties"]["netwatch"]["addresses"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a == address.as_str()))
            })
            .map(|i| i["instanceId"].as_str().unwrap().to_owned())
    }

    fn wait_joined(&self, host: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(id) = self.instance_of(host) {
                return id;
            }
            assert!(
                Instant::now() < deadline,
                "host {host} did not join within 20 s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn status(&self, name: &str) -> Value {
        self.sdk(&["status", name])
    }

    /// queryStatus until `done` holds (bounded: 40 s).
    fn status_until(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let status = self.status(name);
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "capture {name} not {what} within 40 s: {status:#}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Every host sends every other host `PER_ROUND` datagrams to [`PORT`]
    /// and as many to [`OTHER_PORT`], each naming sender, receiver, round and
    /// number; what was sent to [`PORT`], as (receiver, payload).
    fn traffic(&self, round: usize) -> Vec<(usize, String)> {
        let mut sent = Vec::new();
        let mut senders = Vec::new();
        for from in 0..HOSTS {
            let mut program =
                String::from("import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n");
            for to in (0..HOSTS).filter(|&to| to != from) {
                for n in 0..PER_ROUND {
                    let payload = format!("h{from}-h{to}-r{round}-n{n}");
                    for port in [PORT, OTHER_PORT] {
                        program.push_str(&format!(
                            "s.sendto(b'{payload}', ('{}', {port}))\ntime.sleep(0.002)\n",
                            NetnsFleet::host_addr(to)
                        ));
                    }
                    sent.push((to, payload));
                }
            }
            senders.push(
                NetnsPair::exec(&self.net.hosts[from], "python3")
                    .args(["-c", &program])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("python3 runs"),
            );
        }
        for mut sender in senders {
            assert!(sender.wait().unwrap().success(), "a sender failed");
        }
        sent
    }
}

/// The UDP payloads to [`PORT`] in a pcap file, and whether any packet went
/// to another port.
fn payloads(path: &Path) -> (BTreeSet<String>, usize) {
    let (_, packets) = read_pcap(path);
    let mut found = BTreeSet::new();
    let mut others = 0;
    for packet in &packets {
        let Ok(sliced) = LaxSlicedPacket::from_ethernet(&packet.data) else {
            others += 1;
            continue;
        };
        let (Some(LaxNetSlice::Ipv4(_)), Some(TransportSlice::Udp(udp))) = (&sliced.net, &sliced.transport) else {
            others += 1;
            continue;
        };
        if udp.destination_port() != PORT {
            others += 1;
            continue;
        }
        let text = String::from_utf8_lossy(udp.payload()).into_owned();
        assert!(
            found.insert(text.clone()),
            "{text} captured twice in {}",
            path.display()
        );
    }
    (found, others)
}

fn instance<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["netwatch"]["instances"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["instanceId"] == id))
        .unwrap_or_else(|| panic!("no instance {id} in {status:#}"))
}

#[test]
fn one_capture_across_a_scale_set_rolls_up_per_host_and_merges_into_one_pcapng() {
    let mut fleet = Fleet::start();

    // One reusable key for the scale set, capped to the six hosts (az's
    // `vmss extension set`, with netwatch's cap on the key).
    let made = fleet.enroll_scale_set(&["--key-max-uses", "6"]);
    let key = made["netwatch"]["enrollment"]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {made:#}"))
        .to_owned();
    let command = made["netwatch"]["enrollment"]["foregroundCommand"].as_str().unwrap();
    assert!(
        command.starts_with("netwatch agent --server ") && command.contains(&key),
        "{command}"
    );

    // Host 2 keeps its data on a small disk, filled before the capture.
    let full = Tmpfs::mount(&fleet.data_dir(2), "2m");
    for host in 0..5 {
        fleet.start_agent(host, &key);
    }
    let mut ids: Vec<String> = (0..5).map(|host| fleet.wait_joined(host)).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ["0", "1", "2", "3", "4"], "each host its own id");

    // Host 1 joins again with the key (its credential gone): same instance.
    drop(fleet.agents[1].take());
    std::fs::remove_file(fleet.data_dir(1).join("credential")).unwrap();
    fleet.start_agent(1, &key);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        fleet.wait_joined(1),
        ids[1],
        "a host that joins again keeps its instance id"
    );
    assert_eq!(fleet.instances().len(), 5, "joining again makes no new instance");
    let shown = fleet.rest("GET", &format!("{}?api-version=2024-07-01", set_id()), None);
    assert_eq!(shown["body"]["sku"]["capacity"], 5, "{shown}");
    let table = fleet.netwatch(&["vmss", "list-instances", "-g", "rg1", "-n", SET, "-o", "table"]);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let table = String::from_utf8_lossy(&table.stdout);
    assert_eq!(
        table.lines().count(),
        2 + 5,
        "a header, a rule and a row per instance:\n{table}"
    );

    full.fill();
    let excluded = ids[4].clone();
    let body = json!({"properties": {
        "target": set_id(),
        "targetType": "AzureVMSS",
        "scope": {"include": [], "exclude": [excluded]},
        "filters": [{"protocol": "UDP", "localPort": PORT.to_string()}],
        "timeLimitInSeconds": 300,
        "storageLocation": {"storageId": format!(
            "/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/netwatchlocal"
        )},
    }});
    // begin_create().result() returns once every connected host started or failed.
    let created = fleet.sdk(&["create", "fleet-sdk", &body.to_string()]);
    assert_eq!(created["properties"]["provisioningState"], "Succeeded", "{created}");
    assert_eq!(created["properties"]["targetType"], "AzureVMSS", "{created}");
    let started = fleet.status_until("fleet-sdk", "started everywhere", |s| {
        s["netwatch"]["summary"]["running"] == 3 && s["netwatch"]["summary"]["failed"] == 1
    });
    assert_eq!(started["packetCaptureStatus"], "Running", "{started:#}");
    let full_disk = instance(&started, &ids[2]);
    assert_eq!(full_disk["packetCaptureStatus"], "Error", "{started:#}");
    assert!(
        started["netwatch"]["summary"]["text"]
            .as_str()
            .unwrap()
            .starts_with("running 3, stopped 0, failed 1: "),
        "{started:#}"
    );
    assert!(
        started["netwatch"]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["instanceId"] != excluded.as_str()),
        "the excluded instance has no part: {started:#}"
    );

    // Round 1, then host 3's agent dies; host 5 joins; round 2.
    let round1 = fleet.traffic(1);
    let expected_in = |host: usize, rounds: &[&Vec<(usize, String)>]| -> BTreeSet<String> {
        rounds
            .iter()
            .flat_map(|r| r.iter())
            .filter(|(to, _)| *to == host)
            .map(|(_, p)| p.clone())
            .collect()
    };
    let per_host_round = (HOSTS - 1) * PER_ROUND;
    fleet.status_until("fleet-sdk", "counting round 1", |s| {
        [0, 1, 3]
            .iter()
            .all(|&h| instance(s, &ids[h])["packetsCaptured"] == per_host_round)
    });
    drop(fleet.agents[3].take());
    let lost = fleet.status_until("fleet-sdk", "giving host 3 up", |s| {
        instance(s, &ids[3])["packetCaptureStatus"] == "Error"
    });
    assert_eq!(lost["packetCaptureStatus"], "Running", "the others go on: {lost:#}");
    fleet.start_agent(5, &key);
    ids.push(fleet.wait_joined(5));
    assert_eq!(ids[5], "5", "the next id");
    fleet.status_until("fleet-sdk", "host 5 joined", |s| {
        s["netwatch"]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["instanceId"] == "5" && i["packetCaptureStatus"] == "Running")
    });
    let round2 = fleet.traffic(2);
    fleet.status_until("fleet-sdk", "counting round 2", |s| {
        [0, 1]
            .iter()
            .all(|&h| instance(s, &ids[h])["packetsCaptured"] == 2 * per_host_round)
            && instance(s, "5")["packetsCaptured"] == per_host_round
    });

    // begin_stop().result() returns once every running host stopped and stored its file.
    fleet.sdk(&["stop", "fleet-sdk"]);
    let stopped = fleet.status("fleet-sdk");
    assert_eq!(stopped["packetCaptureStatus"], "Stopped", "{stopped:#}");
    assert_eq!(stopped["stopReason"], "ManualStop", "{stopped:#}");
    let errors = stopped["packetCaptureError"].as_array().unwrap();
    assert!(errors.contains(&json!("AgentStopped")), "{stopped:#}");
    assert!(errors.contains(&json!("LocalFileFailed")), "{stopped:#}");
    let summary = &stopped["netwatch"]["summary"];
    assert_eq!(
        (summary["stopped"].clone(), summary["failed"].clone()),
        (json!(3), json!(2)),
        "{stopped:#}"
    );
    let failures = summary["failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f.as_str().unwrap().starts_with(&format!("{}: AgentStopped", ids[3]))),
        "{stopped:#}"
    );
    assert!(
        failures
            .iter()
            .any(|f| f.as_str().unwrap().starts_with(&format!("{}: LocalFileFailed", ids[2]))),
        "{stopped:#}"
    );

    // Each running host's file: exactly the datagrams sent to it on the port, at Azure's VMSS path.
    let mut files = Vec::new();
    for (host, rounds) in [
        (0, vec![&round1, &round2]),
        (1, vec![&round1, &round2]),
        (5, vec![&round2]),
    ] {
        let part = instance(&stopped, &ids[host]);
        assert_eq!(part["uploadState"], "Succeeded", "{part:#}");
        let stored = part["files"].as_array().unwrap();
        assert_eq!(stored.len(), 1, "{part:#}");
        let path = stored[0]["storagePath"].as_str().unwrap();
        let azure_path = format!(
            "/providers/microsoft.compute/virtualmachinescalesets/{SET}/virtualmachines/{}/",
            ids[host]
        );
        assert!(path.contains(&azure_path), "{path}");
        let file = fleet.dir.path().join(format!("host-{host}.cap"));
        fleet.sdk(&["download", path, file.to_str().unwrap()]);
        let (found, others) = payloads(&file);
        assert_eq!(others, 0, "host {host}'s file holds packets the filter refuses");
        assert_eq!(found, expected_in(host, &rounds), "host {host}'s file");
        files.push((host, file));
    }
    for host in [2, 3] {
        let part = instance(&stopped, &ids[host]);
        assert!(
            part.get("files").is_none_or(|f| f.as_array().unwrap().is_empty()),
            "{part:#}"
        );
    }

    // The merged pcapng: the union, in time order, each packet on its host's interface.
    let merged_url = format!(
        "{}/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/\
         NetworkWatcher_westus/packetCaptures/fleet-sdk/merged?api-version=2024-07-01",
        fleet.url
    );
    let merged = fleet.dir.path().join("merged.pcapng");
    fleet.sdk(&["download", &merged_url, merged.to_str().unwrap()]);
    let capinfos = Command::new("capinfos")
        .arg(&merged)
        .output()
        .expect("capinfos runs (apt-get install -y tshark)");
    assert!(
        capinfos.status.success(),
        "{}",
        String::from_utf8_lossy(&capinfos.stderr)
    );
    let tshark = Command::new("tshark")
        .args(["-r"])
        .arg(&merged)
        .args([
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.interface_description",
            "-e",
            "data.text",
            "-o",
            "data.show_as_text:TRUE",
        ])
        .output()
        .expect("tshark runs");
    assert!(tshark.status.success(), "{}", String::from_utf8_lossy(&tshark.stderr));
    let text = String::from_utf8_lossy(&tshark.stdout);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let total: usize = files.iter().map(|(_, f)| read_pcap(f).1.len()).sum();
    assert_eq!(rows.len(), total, "the merged file holds every host's packets:\n{text}");
    let times: Vec<f64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
    for row in &rows {
        let payload = row.get(3).copied().unwrap_or_default();
        let to: usize = payload
            .split('-')
            .nth(1)
            .and_then(|h| h.trim_start_matches('h').parse().ok())
            .unwrap_or_else(|| panic!("a packet that is not the test's: {row:?}"));
        assert!(row[1].ends_with(&format!("/{IF_HOST}")), "{row:?}");
        assert!(
            row[2].ends_with(&format!("/virtualMachines/{}", ids[to])),
            "packet to host {to} on the interface of {}: {row:?}",
            row[2]
        );
    }
    // mergecap of the hosts' files gives the same packets in the same order.
    let reference = fleet.dir.path().join("reference.pcapng");
    let mut mergecap = Command::new("mergecap");
    mergecap.arg("-w").arg(&reference);
    for (_, file) in &files {
        mergecap.arg(file);
    }
    netwatch_testkit::run(&mut mergecap);
    let fields = |path: &Path| {
        let out = netwatch_testkit::run(Command::new("tshark").arg("-r").arg(path).args([
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.len",
            "-e",
            "udp.payload",
        ]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        fields(&merged),
        fields(&reference),
        "netwatch's merge and mergecap's differ"
    );
    // The CLI: a row per instance, and the same merged file.
    let table = fleet.netwatch(&[
        "network",
        "watcher",
        "packet-capture",
        "show-status",
        "-l",
        "westus",
        "-n",
        "fleet-sdk",
        "-o",
        "table",
    ]);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let rows = String::from_utf8_lossy(&table.stdout).lines().count();
    assert_eq!(rows, 2 + 5, "{}", String::from_utf8_lossy(&table.stdout));
    assert!(
        String::from_utf8_lossy(&table.stderr).contains("running 0, stopped 3, failed 2"),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    let by_cli = fleet.dir.path().join("by-cli.pcapng");
    let downloaded = fleet.netwatch(&[
        "network",
        "watcher",
        "packet-capture",
        "download",
        "-l",
        "westus",
        "-n",
        "fleet-sdk",
        "--merged",
        "--output-file",
        by_cli.to_str().unwrap(),
    ]);
    assert!(
        downloaded.status.success(),
        "{}",
        String::from_utf8_lossy(&downloaded.stderr)
    );
    assert_eq!(std::fs::read(&by_cli).unwrap(), std::fs::read(&merged).unwrap());
    let one_file = fleet.netwatch(&[
        "network",
        "watcher",
        "packet-capture",
        "download",
        "-l",
        "westus",
        "-n",
        "fleet-sdk",
        "--output-file",
        by_cli.to_str().unwrap(),
    ]);
    assert_eq!(
        one_file.status.code(),
        Some(2),
        "a capture over many hosts has no one file"
    );
    assert!(String::from_utf8_lossy(&one_file.stderr).contains("--merged"));
    drop(full);

    // The real az, choosing two instances: only they capture.
    let config = fleet.dir.path().join("az");
    az_login(&fleet.net.hub, &config, &fleet.ca, (&fleet.url, &fleet.token));
    // az's own scale-set commands read what netwatch serves.
    let az_json = |args: &[&str]| -> Value {
        let output = az_in(&fleet.net.hub, &config, &fleet.ca, args);
        assert!(
            output.status.success(),
            "az {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("az {args:?} printed no JSON: {err}"))
    };
    let listed = az_json(&["vmss", "list", "-g", "rg1"]);
    assert_eq!(listed[0]["name"], SET, "{listed:#}");
    assert_eq!(listed[0]["sku"]["capacity"], 6, "{listed:#}");
    let shown = az_json(&["vmss", "show", "-g", "rg1", "-n", SET]);
    assert_eq!(shown["location"], "westus", "{shown:#}");
    let instances = az_json(&["vmss", "list-instances", "-g", "rg1", "-n", SET]);
    let mut listed_ids: Vec<String> = instances
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instanceId"].as_str().unwrap().to_owned())
        .collect();
    listed_ids.sort();
    assert_eq!(listed_ids, ["0", "1", "2", "3", "4", "5"], "{instances:#}");

    let filters = json!([{"protocol": "UDP", "localPort": PORT.to_string()}]).to_string();
    let created = az_in(
        &fleet.net.hub,
        &config,
        &fleet.ca,
        &[
            "network",
            "watcher",
            "packet-capture",
            "create",
            "--resource-group",
            "rg1",
            "--name",
            "fleet-az",
            "--target-type",
            "AzureVMSS",
            "--target",
            SET,
            "--include",
            &ids[0],
            &ids[5],
            "--storage-account",
            "netwatchlocal",
            "--filters",
            &filters,
            "--time-limit",
            "120",
        ],
    );
    assert!(
        created.status.success(),
        "az create: {}\n{}",
        String::from_utf8_lossy(&created.stderr),
        fleet.logs()
    );
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(created["targetType"], "AzureVMSS", "{created:#}");
    assert_eq!(created["scope"]["include"], json!([ids[0], ids[5]]), "{created:#}");
    let running = fleet.status_until("fleet-az", "running on two hosts", |s| {
        s["netwatch"]["summary"]["running"] == 2
    });
    assert_eq!(running["netwatch"]["summary"]["total"], 2, "{running:#}");
    let round3 = fleet.traffic(3);
    fleet.status_until("fleet-az", "counting round 3", |s| {
        [&ids[0], &ids[5]]
            .iter()
            .all(|id| instance(s, id)["packetsCaptured"] == per_host_round)
    });
    let stopped = az_in(
        &fleet.net.hub,
        &config,
        &fleet.ca,
        &[
            "network",
            "watcher",
            "packet-capture",
            "stop",
            "-l",
            "westus",
            "-n",
            "fleet-az",
        ],
    );
    assert!(
        stopped.status.success(),
        "az stop: {}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    let shown = az_in(
        &fleet.net.hub,
        &config,
        &fleet.ca,
        &[
            "network",
            "watcher",
            "packet-capture",
            "show-status",
            "-l",
            "westus",
            "-n",
            "fleet-az",
        ],
    );
    assert!(
        shown.status.success(),
        "az show-status: {}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["packetCaptureStatus"], "Stopped", "{shown:#}");
    let done = fleet.status_until("fleet-az", "stored", |s| {
        s["netwatch"]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["uploadState"] == "Succeeded")
    });
    for host in [0, 5] {
        let path = instance(&done, &ids[host])["files"][0]["storagePath"]
            .as_str()
            .unwrap()
            .to_owned();
        let file = fleet.dir.path().join(format!("az-host-{host}.cap"));
        fleet.sdk(&["download", &path, file.to_str().unwrap()]);
        let (found, others) = payloads(&file);
        assert_eq!(others, 0);
        assert_eq!(
            found,
            expected_in(host, &[&round3]),
            "host {host}'s file of the az capture"
        );
    }

    // Hosts that are not one scale set: a plain VM, tagged as it enrolls, and
    // instance 0, chosen by id (netwatch's own `--target-vms`).
    let shared: toml::Table =
        toml::from_str(&std::fs::read_to_string(fleet.dir.path().join("up/credentials.toml")).unwrap()).unwrap();
    let agent_token = shared["agent_token"].as_str().unwrap().to_owned();
    fleet.start_agent_with(6, &agent_token, &["--vm-name", "db-1", "--tag", "role=db"]);
    let db = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/db-1");
    let registered = netwatch_testkit::eventually(100, Duration::from_millis(200), || {
        fleet.rest("GET", &format!("{db}?api-version=2024-07-01"), None)["status"] == 200
    });
    assert!(registered, "db-1 did not register\n{}", fleet.logs());
    let shown = fleet.rest("GET", &format!("{db}?api-version=2024-07-01"), None);
    assert_eq!(shown["body"]["tags"], json!({"role": "db"}), "{shown}");
    let instance0 = format!("{}/virtualMachines/{}", set_id(), ids[0]);
    let created = fleet.netwatch(&[
        "network",
        "watcher",
        "packet-capture",
        "create",
        "-g",
        "rg1",
        "-n",
        "some-hosts",
        "--target-vms",
        "db-1",
        &instance0,
        "--storage-account",
        "netwatchlocal",
        "--filters",
        &filters,
        "--time-limit",
        "120",
    ]);
    assert!(
        created.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&created.stderr),
        fleet.logs()
    );
    let running = fleet.status_until("some-hosts", "running on its two hosts", |s| {
        s["netwatch"]["summary"]["running"] == 2
    });
    assert_eq!(running["netwatch"]["summary"]["total"], 2, "{running:#}");
    let round4 = fleet.traffic(4);
    let label0 = format!("{SET}_{}", ids[0]);
    fleet.status_until("some-hosts", "counting round 4", |s| {
        ["db-1", label0.as_str()]
            .iter()
            .all(|id| instance(s, id)["packetsCaptured"] == per_host_round)
    });
    fleet.sdk(&["stop", "some-hosts"]);
    let done = fleet.status("some-hosts");
    for (host, id) in [(6, "db-1"), (0, label0.as_str())] {
        let part = instance(&done, id);
        assert_eq!(part["uploadState"], "Succeeded", "{part:#}");
        let path = part["files"][0]["storagePath"].as_str().unwrap().to_owned();
        let file = fleet.dir.path().join(format!("some-host-{host}.cap"));
        fleet.sdk(&["download", &path, file.to_str().unwrap()]);
        let (found, others) = payloads(&file);
        assert_eq!(others, 0);
        assert_eq!(
            found,
            expected_in(host, &[&round4]),
            "host {host}'s file of the capture by id"
        );
    }

    // By tag: the tag db-1 enrolled with, then one set through the API.
    let by_tag = |name: &str, tag: &str| {
        let path = format!("/var/captures/{name}.cap");
        fleet.netwatch(&[
            "network",
            "watcher",
            "packet-capture",
            "create",
            "-g",
            "rg1",
            "-n",
            name,
            "--target-tags",
            tag,
            "-l",
            "westus",
            "--file-path",
            &path,
            "--time-limit",
            "60",
        ])
    };
    let created = by_tag("by-tag", "role=db");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let chosen = fleet.status_until("by-tag", "running", |s| s["netwatch"]["summary"]["running"] == 1);
    assert_eq!(
        chosen["netwatch"]["instances"][0]["vmId"]
            .as_str()
            .unwrap()
            .to_lowercase(),
        db.to_lowercase()
    );
    let refused = by_tag("by-tag-2", "role=cache");
    assert_eq!(refused.status.code(), Some(1), "no host has role=cache yet");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("choose no host"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let tagged = fleet.netwatch(&["resource", "tag", "--ids", &db, "--tags", "role=cache"]);
    assert!(tagged.status.success(), "{}", String::from_utf8_lossy(&tagged.stderr));
    let created = by_tag("by-tag-2", "role=cache");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let chosen = fleet.status_until("by-tag-2", "running", |s| s["netwatch"]["summary"]["running"] == 1);
    assert_eq!(chosen["netwatch"]["summary"]["total"], 1, "{chosen:#}");
}

/// Issue 18: a live view of a capture over a scale set, piped into tshark as
/// a user would: one interface per host (`{set}_{instance}/{interface}`), each
/// packet on the interface of the host that captured it, every packet once.
#[test]
fn a_live_view_of_a_scale_set_capture_shows_each_host_on_its_own_interface() {
    const LIVE_HOSTS: usize = 3;
    let mut fleet = Fleet::start();
    let made = fleet.enroll_scale_set(&[]);
    let key = made["netwatch"]["enrollment"]["key"].as_str().unwrap().to_owned();
    for host in 0..LIVE_HOSTS {
        fleet.start_agent(host, &key);
    }
    let ids: Vec<String> = (0..LIVE_HOSTS).map(|host| fleet.wait_joined(host)).collect();
    let body = json!({"properties": {
        "target": set_id(),
        "targetType": "AzureVMSS",
        "filters": [{"protocol": "UDP", "localPort": PORT.to_string()}],
        "timeLimitInSeconds": 120,
        "storageLocation": {"storageId": format!(
            "/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/netwatchlocal"
        )},
    }});
    let created = fleet.sdk(&["create", "fleet-live", &body.to_string()]);
    assert_eq!(created["properties"]["provisioningState"], "Succeeded", "{created}");
    fleet.status_until("fleet-live", "running on every host", |s| {
        s["netwatch"]["summary"]["running"] == LIVE_HOSTS
    });

    let err = fleet.dir.path().join("stream.err");
    let script = format!(
        "{} network watcher packet-capture stream --name fleet-live --location westus -w - 2>{} | tshark -l -n -r - \
         -T fields -e frame.interface_name -e data.text -o data.show_as_text:TRUE",
        netwatch(),
        err.display()
    );
    let pipeline = NetnsPair::exec(&fleet.net.hub, "sh")
        .args(["-c", &script])
        .env("NETWATCH_URL", &fleet.url)
        .env("NETWATCH_TOKEN", &fleet.token)
        .env("NETWATCH_CA", &fleet.ca)
        .env("XDG_CONFIG_HOME", fleet.dir.path().join("no-config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the stream pipeline");
    let pipeline = Guard(pipeline);
    let started = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
        (0..LIVE_HOSTS).all(|host| {
            std::fs::read_to_string(fleet.dir.path().join(format!("agent-{host}-0.log")))
                .unwrap_or_default()
                .contains("live view started")
        })
    });
    assert!(
        started,
        "not every agent started the live view within 10 s: {}\n{}",
        std::fs::read_to_string(&err).unwrap_or_default(),
        fleet.logs()
    );
    std::thread::sleep(Duration::from_millis(300));
    let sent: Vec<(usize, String)> = fleet
        .traffic(0)
        .into_iter()
        .filter(|(to, _)| *to < LIVE_HOSTS)
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let stop = fleet.rest(
        "POST",
        &format!(
            "/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/\
             NetworkWatcher_westus/packetCaptures/fleet-live/stop?api-version=2024-07-01"
        ),
        None,
    );
    assert!(stop["status"] == 200 || stop["status"] == 202, "{stop}");
    let mut pipeline = pipeline;
    let output = {
        let mut stdout = pipeline.0.stdout.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while pipeline.0.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the live view did not end with the capture\n{}",
                fleet.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
        text
    };
    let summary = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(summary.contains("from 3 hosts"), "{summary}");
    let mut seen = BTreeSet::new();
    for line in output.lines() {
        let (interface, payload) = line.split_once('\t').unwrap_or_else(|| panic!("{line:?}"));
        let to: usize = payload
            .split('-')
            .nth(1)
            .and_then(|h| h.trim_start_matches('h').parse().ok())
            .unwrap_or_else(|| panic!("a packet that is not the test's: {line:?}"));
        assert_eq!(
            interface,
            format!("{SET}_{}/{IF_HOST}", ids[to]),
            "packet to host {to} on another host's interface: {line:?}"
        );
        assert!(seen.insert(payload.to_owned()), "{payload} shown twice");
    }
    let wanted: BTreeSet<String> = sent.into_iter().map(|(_, payload)| payload).collect();
    assert_eq!(seen, wanted, "the live view's packets are not those sent\n{summary}");
}
