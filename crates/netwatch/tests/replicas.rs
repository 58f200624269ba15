//! Several controllers on one PostgreSQL (issue 15): three `netwatch server`
//! replicas and a PostgreSQL of the test's own in the hub of a
//! [`NetnsFleet`], an agent on each of three hosts given all three replicas'
//! URLs. One test walks the story, each step on the cluster the one before
//! left:
//!
//! 1. a capture created through one replica runs on an agent connected to
//!    another, answered final by the create (pushed across replicas), kept
//!    running past `agent_lost_seconds` by the other replicas' sweeps (its
//!    agent is held, if not by them), stopped through the third, the same on
//!    every replica;
//! 2. `kill -9` of the replica holding a running capture's agent: the agent
//!    moves, the capture ends on time, its file is stored, no packet lost;
//! 3. a rolling restart of all three during a capture (each started again on
//!    its port, which the old process shares until SIGTERM has drained it),
//!    while Azure's SDK reads, creates and deletes through all three: no
//!    request fails (the SDK's retries included), no packet lost;
//! 4. PostgreSQL stopped for 20 s during a capture: 503 with `Retry-After`
//!    meanwhile, then everything consistent and nothing lost.
//!
//! Every packet sent to a capture's host is numbered and looked for in the
//! stored file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use netwatch_testkit::{FLEET_HUB4, IF_HOST, NetnsFleet, NetnsPair, Place, Postgres, read_pcap};
use serde_json::{Value, json};

use crate::deployment::{Guard, SUB, python, run_sdk, script, start_up};
use crate::util::netwatch;

const HOSTS: usize = 3;
const REPLICAS: usize = 3;
/// The port every capture here keeps (UDP, on its host).
const PORT: u16 = 7301;

fn vm_id(host: usize) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{}",
        vm_name(host)
    )
}

fn vm_name(host: usize) -> String {
    format!("replica-host-{host}")
}

/// A create body for a capture of `PORT` on `host`, ending after `seconds`.
fn capture_body(host: usize, seconds: u64) -> Value {
    json!({"properties": {
        "target": vm_id(host),
        "storageLocation": {"storageId": format!(
            "/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/netwatchlocal"
        )},
        "filters": [{"protocol": "UDP", "localPort": PORT.to_string()}],
        "timeLimitInSeconds": seconds,
    }})
}

struct Cluster {
    net: NetnsFleet,
    dir: tempfile::TempDir,
    postgres: Postgres,
    token: String,
    agent_token: String,
    ca: PathBuf,
    /// Each replica's URL (its port stays across restarts) and process.
    urls: Vec<String>,
    replicas: Vec<Option<Guard>>,
    agents: Vec<Option<Guard>>,
}

impl Cluster {
    fn start() -> Cluster {
        let net = NetnsFleet::new(HOSTS);
        let postgres = Postgres::start_at(Place::netns(&net.hub, "127.0.0.1"));
        let dir = tempfile::tempdir().unwrap();
        // `netwatch up` makes the CA, the certificate, the tokens and the
        // signing key every replica shares; then the replicas use PostgreSQL.
        let (up, _) = start_up(&net.hub, dir.path(), &format!("{FLEET_HUB4}:0"));
        drop(up);
        let path = dir.path().join("up/config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let at = text.find("\n[").map_or(text.len(), |i| i + 1);
        // Agents not heard from for 10 s are given up: less than the 30 s
        // between the `last_seen` a replica writes for an agent it holds, so
        // every replica's sweep meets captures of agents held by another.
        // `drain_seconds`: a draining replica answers a second more, each
        // answer saying `Connection: close`, as behind a load balancer.
        let database = format!(
            "database = \"{}\"\nagent_lost_seconds = 10\ndrain_seconds = 1\n",
            postgres.url()
        );
        // As README says for rolling restarts on one host: connections queued
        // for a replica that closes its port move to the one sharing it.
        netwatch_testkit::run(NetnsPair::exec(&net.hub, "sysctl").args(["-qw", "net.ipv4.tcp_migrate_req=1"]));
        std::fs::write(&path, format!("{}{database}{}", &text[..at], &text[at..])).unwrap();
        let credentials: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.path().join("up/credentials.toml")).unwrap()).unwrap();
        let mut cluster = Cluster {
            net,
            postgres,
            token: credentials["admin_token"].as_str().unwrap().to_owned(),
            agent_token: credentials["agent_token"].as_str().unwrap().to_owned(),
            ca: dir.path().join("up/ca.pem"),
            dir,
            urls: Vec::new(),
            replicas: Vec::new(),
            agents: Vec::new(),
        };
        for replica in 0..REPLICAS {
            let (guard, url) = cluster.spawn_replica(replica, &format!("{FLEET_HUB4}:0"));
            cluster.urls.push(url);
            cluster.replicas.push(Some(guard));
        }
        for host in 0..HOSTS {
            let agent = cluster.spawn_agent(host);
            cluster.agents.push(Some(agent));
        }
        for host in 0..HOSTS {
            cluster.wait_registered(host);
        }
        cluster
    }

    /// Starts replica `replica` listening on `listen`; its guard and URL.
    fn spawn_replica(&self, replica: usize, listen: &str) -> (Guard, String) {
        let n = self.count_logs(&format!("replica-{replica}-"));
        let log_path = self.dir.path().join(format!("replica-{replica}-{n}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = NetnsPair::exec(&self.net.hub, netwatch())
            .args(["server", "--config"])
            .arg(self.dir.path().join("up/config.toml"))
            .args(["--listen", listen])
            .env("RUST_LOG", "info,netwatch_controller=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn netwatch server");
        let guard = Guard(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let marker = "netwatch controller listening on ";
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(at) = text.find(marker) {
                let url = text[at + marker.len()..].lines().next().unwrap().trim().to_owned();
                // Listening is announced before the store opens: wait for health.
                self.wait_healthy(&url);
                return (guard, url);
            }
            assert!(Instant::now() < deadline, "replica {replica} did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_healthy(&self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let health = self.rest_at(url, "GET", "/netwatch/v1/health", None);
            if health["status"] == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{url} not healthy: {health}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn count_logs(&self, prefix: &str) -> usize {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .count()
    }

    /// Host `host`'s agent, given every replica's URL.
    fn spawn_agent(&self, host: usize) -> Guard {
        let n = self.count_logs(&format!("agent-{host}-"));
        let log = std::fs::File::create(self.dir.path().join(format!("agent-{host}-{n}.log"))).unwrap();
        let child = NetnsPair::exec(&self.net.hosts[host], netwatch())
            .args([
                "agent",
                "--server",
                &self.urls.join(","),
                "--enroll-token",
                &self.agent_token,
            ])
            .arg("--ca")
            .arg(&self.ca)
            .args(["--vm-name", &vm_name(host), "-g", "rg1", "-l", "westus", "-i", IF_HOST])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("agent-{host}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn netwatch agent");
        Guard(child)
    }

    fn wait_registered(&self, host: usize) {
        let path = format!("{}?api-version=2024-07-01", vm_id(host));
        let registered = netwatch_testkit::eventually(200, Duration::from_millis(100), || {
            self.rest_at(&self.urls[0], "GET", &path, None)["status"] == 200
        });
        assert!(registered, "host {host} did not register within 20 s\n{}", self.logs());
    }

    /// The replica host `host`'s agent is connected to now, from its log.
    fn replica_of(&self, host: usize) -> usize {
        let n = self.count_logs(&format!("agent-{host}-"));
        let log = std::fs::read_to_string(self.dir.path().join(format!("agent-{host}-{}.log", n - 1))).unwrap();
        let line = log
            .lines()
            .rev()
            .find(|line| line.contains("connected to the controller"))
            .unwrap_or_else(|| panic!("host {host}'s agent never connected:\n{log}"));
        self.urls
            .iter()
            .position(|url| line.contains(&format!("\"{}\"", url.trim_start_matches("https://"))))
            .unwrap_or_else(|| panic!("host {host} connected to none of {:?}: {line}", self.urls))
    }

    /// Waits until host `host`'s agent is connected to a replica other than
    /// `not`; that replica.
    fn wait_moved(&self, host: usize, not: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.replica_of(host);
            if now != not {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "host {host} did not move off replica {not}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        crate::util::log_tails(self.dir.path(), 60)
    }

    /// One SDK step against replica `url`.
    fn sdk_at(&self, url: &str, args: &[&str]) -> Value {
        run_sdk(&self.net.hub, (url, &self.token, &self.ca), args, || self.logs())
    }

    fn rest_at(&self, url: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
        let body = body.map(Value::to_string);
        let mut args = vec!["rest", method, path];
        if let Some(body) = &body {
            args.push(body);
        }
        self.sdk_at(url, &args)
    }

    /// Creates capture `name` with Azure's SDK through replica `replica`;
    /// the result and how long `begin_create(...).result()` took.
    fn create_at(&self, replica: usize, name: &str, body: &Value) -> (Value, Duration) {
        let started = Instant::now();
        let created = self.sdk_at(&self.urls[replica], &["create", name, &body.to_string()]);
        (created, started.elapsed())
    }

    fn status_at(&self, replica: usize, name: &str) -> Value {
        self.sdk_at(&self.urls[replica], &["status", name])
    }

    /// queryStatus through `replica` until `done` holds (bounded: 60 s).
    fn status_until(&self, replica: usize, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.status_at(replica, name);
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "capture {name} not {what} within 60 s: {status:#}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Capture `name` ends on its time limit (queryStatus through
    /// `replica`), every datagram `tag:0..count` is in its stored file, and
    /// every live replica says the same.
    fn ends_on_time_with_every_packet(&self, replica: usize, name: &str, count: usize, what: &str) {
        let status = self.status_until(replica, name, "stopped on time", |s| {
            s["packetCaptureStatus"] == "Stopped"
        });
        assert_eq!(status["stopReason"], "TimeExceeded", "{status:#}");
        let file = self.download(replica, name);
        assert_all(&received(&file, name), count, what);
        self.same_everywhere(name);
    }

    /// Every live replica says the same status, stop reason and packet count.
    fn same_everywhere(&self, name: &str) -> Value {
        let statuses: Vec<(usize, Value)> = (0..REPLICAS)
            .filter(|&r| self.replicas[r].is_some())
            .map(|r| (r, self.status_at(r, name)))
            .collect();
        let key = |status: &Value| {
            (
                status["packetCaptureStatus"].clone(),
                status["stopReason"].clone(),
                status["netwatch"]["packetsCaptured"].clone(),
            )
        };
        let first = key(&statuses[0].1);
        for (replica, status) in &statuses {
            assert_eq!(key(status), first, "replica {replica} says otherwise: {status:#}");
        }
        statuses[0].1.clone()
    }

    /// Downloads capture `name`'s file through replica `replica` once it is
    /// stored (bounded: 60 s).
    fn download(&self, replica: usize, name: &str) -> PathBuf {
        let capture = self.sdk_at(&self.urls[replica], &["get", name]);
        let stored = capture["properties"]["storageLocation"]["storagePath"]
            .as_str()
            .unwrap_or_else(|| panic!("no storagePath in {capture}"));
        // Any replica serves the file: the path is the same on each.
        let path = &stored[stored
            .find("/netwatch/")
            .unwrap_or_else(|| panic!("storagePath {stored}"))..];
        let url = format!("{}{path}", self.urls[replica]);
        let file = self.dir.path().join(format!("{name}.cap"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let output = NetnsPair::exec(&self.net.hub, python())
                .arg(script())
                .args(["download", &url])
                .arg(&file)
                .env("NETWATCH_URL", &self.urls[replica])
                .env("NETWATCH_TOKEN", &self.token)
                .env("NETWATCH_CA", &self.ca)
                .stdin(Stdio::null())
                .output()
                .expect("run the SDK script");
            if output.status.success() {
                return file;
            }
            assert!(
                Instant::now() < deadline,
                "{name}'s file not stored within 60 s: {}\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Starts host `from` sending numbered datagrams tagged `tag` to `PORT`
    /// on host `to`, one each `every_ms`, for `seconds`: the sender, which
    /// prints how many it sent.
    fn traffic(&self, from: usize, to: usize, tag: &str, seconds: f64, every_ms: u64) -> std::process::Child {
        let program = format!(
            "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             end = time.monotonic() + {seconds}\nn = 0\n\
             while time.monotonic() < end:\n    s.sendto(b'{tag}:%d' % n, ('{}', {PORT}))\n    n += 1\n    time.sleep({})\n\
             print(n)\n",
            NetnsFleet::host_addr(to),
            every_ms as f64 / 1000.0
        );
        NetnsPair::exec(&self.net.hosts[from], "python3")
            .args(["-c", &program])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the sender")
    }
}

/// How many datagrams a [`Cluster::traffic`] sender sent.
fn sent(sender: std::process::Child) -> usize {
    let output = sender.wait_with_output().expect("the sender ends");
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap()
}

/// The numbered payloads tagged `tag` in a capture file.
fn received(path: &Path, tag: &str) -> BTreeSet<usize> {
    let (_, packets) = read_pcap(path);
    let mut found = BTreeSet::new();
    for packet in &packets {
        let Ok(sliced) = LaxSlicedPacket::from_ethernet(&packet.data) else {
            continue;
        };
        let (Some(LaxNetSlice::Ipv4(_)), Some(TransportSlice::Udp(udp))) = (&sliced.net, &sliced.transport) else {
            continue;
        };
        let text = String::from_utf8_lossy(udp.payload()).into_owned();
        if let Some(n) = text.strip_prefix(&format!("{tag}:")) {
            assert!(found.insert(n.parse().unwrap()), "{text} stored twice");
        }
    }
    found
}

/// Every datagram `0..count` is in the set.
fn assert_all(found: &BTreeSet<usize>, count: usize, what: &str) {
    let missing: Vec<usize> = (0..count).filter(|n| !found.contains(n)).collect();
    assert!(count > 0, "{what}: nothing was sent");
    assert!(
        missing.is_empty(),
        "{what}: {} of {count} datagrams missing from the stored file: {missing:?}",
        missing.len()
    );
}

#[test]
fn three_replicas_share_the_work_survive_a_kill_a_rolling_restart_and_a_database_outage() {
    let mut cluster = Cluster::start();

    // 1. Created on one replica, run by an agent on another, stopped on the third.
    let host = 0;
    let holder = cluster.replica_of(host);
    let (creator, stopper) = ((holder + 1) % REPLICAS, (holder + 2) % REPLICAS);
    let (created, took) = cluster.create_at(creator, "across", &capture_body(host, 600));
    assert_eq!(created["properties"]["provisioningState"], "Succeeded", "{created:#}");
    println!("replicas: create through replica {creator} for an agent on {holder}: {took:?} (SDK, wall)");
    assert!(
        took < Duration::from_secs(3),
        "the create waited for its monitor ({took:?}): the agent's Running did not reach replica {creator}"
    );
    let running = cluster.same_everywhere("across");
    assert_eq!(running["packetCaptureStatus"], "Running", "{running:#}");
    let sender = cluster.traffic(1, host, "across", 1.0, 10);
    let count = sent(sender);
    // 15 s: the agent's `last_seen` is older than `agent_lost_seconds`, and
    // the sweeps of the two replicas that do not hold it must find it held.
    std::thread::sleep(Duration::from_secs(15));
    let running = cluster.same_everywhere("across");
    assert_eq!(
        running["packetCaptureStatus"], "Running",
        "given up while its agent is connected: {running:#}"
    );
    let stopped = cluster.sdk_at(&cluster.urls[stopper], &["stop", "across"]);
    println!("replicas: stop through replica {stopper}: {stopped}");
    let status = cluster.same_everywhere("across");
    assert_eq!(
        (status["packetCaptureStatus"].as_str(), status["stopReason"].as_str()),
        (Some("Stopped"), Some("ManualStop")),
        "{status:#}"
    );
    let file = cluster.download(creator, "across");
    assert_all(&received(&file, "across"), count, "across replicas");

    // 2. kill -9 of the replica holding a running capture's agent.
    let host = 1;
    let holder = cluster.replica_of(host);
    let other = (holder + 1) % REPLICAS;
    let (created, _) = cluster.create_at(other, "moving", &capture_body(host, 10));
    assert_eq!(created["properties"]["provisioningState"], "Succeeded", "{created:#}");
    let sender = cluster.traffic(2, host, "moving", 8.0, 20);
    std::thread::sleep(Duration::from_secs(3));
    drop(cluster.replicas[holder].take());
    let moved = cluster.wait_moved(host, holder);
    println!("replicas: replica {holder} killed; host {host}'s agent moved to replica {moved}");
    let count = sent(sender);
    cluster.ends_on_time_with_every_packet(other, "moving", count, "replica killed");
    let (guard, url) = cluster.spawn_replica(holder, cluster.urls[holder].trim_start_matches("https://"));
    assert_eq!(url, cluster.urls[holder]);
    cluster.replicas[holder] = Some(guard);
    let status = cluster.same_everywhere("moving");
    assert_eq!(status["packetCaptureStatus"], "Stopped", "{status:#}");

    // 3. A rolling restart during a capture, Azure's SDK busy on all three.
    let host = 2;
    let (created, _) = cluster.create_at(0, "rolling", &capture_body(host, 30));
    assert_eq!(created["properties"]["provisioningState"], "Succeeded", "{created:#}");
    let sender = cluster.traffic(0, host, "rolling", 26.0, 20);
    let churn = NetnsPair::exec(&cluster.net.hub, python())
        .arg(script())
        .args(["churn", "24", "rolling", &capture_body(1, 5).to_string()])
        .env("NETWATCH_URL", &cluster.urls[0])
        .env("NETWATCH_URLS", cluster.urls.join(","))
        .env("NETWATCH_TOKEN", &cluster.token)
        .env("NETWATCH_CA", &cluster.ca)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the SDK's churn");
    std::thread::sleep(Duration::from_secs(2));
    for replica in 0..REPLICAS {
        // The new process first, on the same port (SO_REUSEPORT), then the
        // old one drains: the port is never closed.
        let mut old = cluster.replicas[replica].take().unwrap();
        let (new, _) = cluster.spawn_replica(replica, cluster.urls[replica].trim_start_matches("https://"));
        let began = Instant::now();
        netwatch_testkit::run(Command::new("kill").args(["-TERM", &old.0.id().to_string()]));
        let exit = loop {
            if let Some(exit) = old.0.try_wait().unwrap() {
                break exit;
            }
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "replica {replica} still draining after 20 s\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            exit.success(),
            "replica {replica} exited {exit:?} after SIGTERM\n{}",
            cluster.logs()
        );
        println!(
            "replicas: replica {replica} started again, the old one drained and stopped in {:?}",
            began.elapsed()
        );
        cluster.replicas[replica] = Some(new);
        std::thread::sleep(Duration::from_secs(2));
    }
    let output = churn.wait_with_output().expect("the churn ends");
    assert!(
        output.status.success(),
        "the SDK's churn failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let churned: Value = serde_json::from_slice(&output.stdout).unwrap();
    println!(
        "replicas: rolling restart: {} rounds of get/status/list, {} creates and deletes through the SDK",
        churned["rounds"], churned["created"]
    );
    assert_eq!(
        churned["failures"].as_array().map(Vec::len),
        Some(0),
        "requests failed during the rolling restart: {:#}\n{}",
        churned["failures"],
        cluster.logs()
    );
    let count = sent(sender);
    cluster.ends_on_time_with_every_packet(1, "rolling", count, "rolling restart");

    // 4. PostgreSQL away for 20 s during a capture.
    let host = 0;
    let (created, _) = cluster.create_at(1, "outage", &capture_body(host, 15));
    assert_eq!(created["properties"]["provisioningState"], "Succeeded", "{created:#}");
    let sender = cluster.traffic(2, host, "outage", 12.0, 20);
    std::thread::sleep(Duration::from_secs(2));
    cluster.postgres.stop();
    let stopped_at = Instant::now();
    let capture_path = format!(
        "/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/\
         NetworkWatcher_westus/packetCaptures/outage?api-version=2024-07-01"
    );
    let mut unavailable = 0;
    while stopped_at.elapsed() < Duration::from_secs(20) {
        for replica in 0..REPLICAS {
            let answer = cluster.rest_at(&cluster.urls[replica], "GET", &capture_path, None);
            if stopped_at.elapsed() > Duration::from_secs(1) && stopped_at.elapsed() < Duration::from_secs(19) {
                assert_eq!(
                    answer["status"], 503,
                    "replica {replica} without its database: {answer:#}"
                );
                assert!(
                    answer["headers"]["retry-after"].as_str().is_some(),
                    "a 503 without Retry-After: {answer:#}"
                );
                assert_eq!(answer["body"]["error"]["code"], "ServiceUnavailable", "{answer:#}");
                unavailable += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    cluster.postgres.start_again();
    println!(
        "replicas: database stopped for {:?}; {unavailable} answers 503 meanwhile",
        stopped_at.elapsed()
    );
    // Answered at once (each request here is a Python process of its own),
    // not after the pool's wait for a connection.
    assert!(
        unavailable >= 6,
        "only {unavailable} answers in 18 s\n{}",
        cluster.logs()
    );
    let count = sent(sender);
    cluster.ends_on_time_with_every_packet(2, "outage", count, "database outage");
}
