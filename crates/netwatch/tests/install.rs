//! The agent as an installed extension (issue 14), for real on a test host:
//! namespace a's network plus a mount namespace of its own, where `/etc` (a
//! copy), `/usr/local` and `/var` are the host's own directories, so the
//! installer's user, binary, config, unit and data land there and nowhere
//! else. CI has no systemd to start units: [`Service`] does what systemd would
//! with the installed unit (its `ExecStart` under its user and capabilities,
//! `ExecStopPost=+` as root, `Restart=on-failure`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netwatch_testkit::{IF_A, NetnsPair};
use serde_json::{Value, json};

use crate::deployment::{Deployment, Guard, SUB, VM, send_udp, udp_packets};

const EXTENSION_API: &str = "api-version=2024-07-01";

fn extension_url() -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{VM}/extensions/\
         NetworkWatcherAgentLinux?{EXTENSION_API}"
    )
}

/// `vm extension set` through Azure's SDK with `properties` (publisher and type added).
fn extension_set(nw: &Deployment, mut properties: Value) -> Value {
    properties["publisher"] = json!("Microsoft.Azure.NetworkWatcher");
    properties["type"] = json!("NetworkWatcherAgentLinux");
    let body = json!({"location": "westus", "properties": properties}).to_string();
    nw.sdk(&["rest", "PUT", &extension_url(), &body])
}

/// The one-line install `vm extension set` answered for a new host.
fn install_line(nw: &Deployment) -> String {
    let set = extension_set(nw, json!({"typeHandlerVersion": "1.4"}));
    assert_eq!(set["status"], 201, "{set}");
    let command = set["body"]["properties"]["netwatch"]["enrollment"]["command"]
        .as_str()
        .unwrap_or_else(|| panic!("no install command in {set}"))
        .to_owned();
    assert!(
        command.starts_with("curl -fsSk --pinnedpubkey 'sha256//") && command.contains("| sh -s -- --enroll-token "),
        "{command}"
    );
    // The test host captures on its veth.
    format!("{command} --interface {IF_A}")
}

/// A test host: namespace `ns`'s network, a mount namespace of its own.
pub(crate) struct Host {
    /// Holds the mount namespace (a `sleep`); killed last.
    holder: Guard,
    /// `/etc`, `/usr/local` and `/var` of the host, seen from outside.
    root: tempfile::TempDir,
}

impl Host {
    pub(crate) fn new(ns: &str) -> Host {
        let root = tempfile::tempdir().unwrap();
        for dir in ["etc", "usr-local/bin", "var/lib", "var/tmp", "var/log"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        {
            let _system = crate::util::SYSTEM_FILES
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            netwatch_testkit::run(Command::new("cp").args(["-a", "/etc/."]).arg(root.path().join("etc")));
        }
        let r = root.path().display();
        // /run/systemd hidden: the host runs no systemd, as CI.
        let script = format!(
            "set -e; mount --bind {r}/etc /etc; mount --bind {r}/usr-local /usr/local; mount --bind {r}/var /var; \
             if [ -d /run/systemd ]; then mount -t tmpfs tmpfs /run/systemd; fi; echo ready; exec sleep 3600"
        );
        let mut holder = NetnsPair::exec(ns, "unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) runs");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the test host's mount namespace was not set up");
        Host {
            holder: Guard(holder),
            root,
        }
    }

    /// `program` run inside the host (its network and mounts), as root.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args(["--target", &self.holder.0.id().to_string(), "--mount", "--net", "--"])
            .arg(program);
        command.stdin(Stdio::null());
        command
    }

    /// `sh -c line` inside the host.
    pub(crate) fn sh(&self, line: &str) -> Output {
        self.command("sh").args(["-c", line]).output().unwrap()
    }

    /// Where the host's `path` is, seen from outside.
    pub(crate) fn path(&self, path: &str) -> PathBuf {
        for (inside, outside) in [("/etc/", "etc"), ("/usr/local/", "usr-local"), ("/var/", "var")] {
            if let Some(rest) = path.strip_prefix(inside) {
                return self.root.path().join(outside).join(rest);
            }
        }
        panic!("{path} is not one of the host's own directories");
    }

    pub(crate) fn has_user(&self, user: &str) -> bool {
        let passwd = std::fs::read_to_string(self.path("/etc/passwd")).unwrap();
        let group = std::fs::read_to_string(self.path("/etc/group")).unwrap();
        passwd.lines().any(|l| l.starts_with(&format!("{user}:")))
            || group.lines().any(|l| l.starts_with(&format!("{user}:")))
    }

    /// Every file and directory the installer may have left, relative to
    /// the host's root.
    pub(crate) fn netwatch_files(&self) -> Vec<String> {
        let mut found = Vec::new();
        for top in [
            "/usr/local/bin/netwatch",
            "/etc/netwatch",
            "/etc/systemd/system/netwatch-agent.service",
            "/var/lib/netwatch",
            "/var/captures",
        ] {
            walk(&self.path(top), top, &mut found);
        }
        found
    }

    /// Nothing of the agent on the host (a refused install left nothing).
    pub(crate) fn assert_untouched(&self, what: &str) {
        assert_eq!(self.netwatch_files(), Vec::<String>::new(), "{what}: left behind");
        assert!(!self.has_user("netwatch-agent"), "{what}: the user was left behind");
    }
}

fn walk(path: &Path, shown: &str, found: &mut Vec<String>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    found.push(shown.to_owned());
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        entries.sort();
        for name in entries {
            let name = name.to_string_lossy().into_owned();
            walk(&path.join(&name), &format!("{shown}/{name}"), found);
        }
    }
}

/// What systemd would do with the installed unit: `ExecStart` as its `User`
/// with its `AmbientCapabilities` only and no new privileges, then
/// `ExecStopPost=+` as root, and again while the agent exits with a failure
/// (`Restart=on-failure`; five times at most).
pub(crate) struct Service {
    stop: Arc<AtomicBool>,
    pid: Arc<Mutex<Option<u32>>>,
    thread: Option<JoinHandle<Vec<Option<i32>>>>,
    pub(crate) log: PathBuf,
}

/// `Key=` values of the unit's `[Service]`.
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
        .to_owned()
}

impl Service {
    pub(crate) fn start(host: &Host, log: PathBuf) -> Service {
        let unit = std::fs::read_to_string(host.path("/etc/systemd/system/netwatch-agent.service"))
            .expect("the installer installed the unit");
        let exec_start = unit_value(&unit, "ExecStart");
        let stop_post = unit_value(&unit, "ExecStopPost");
        let user = unit_value(&unit, "User");
        let caps: Vec<String> = unit_value(&unit, "AmbientCapabilities")
            .split_whitespace()
            .map(|cap| cap.trim_start_matches("CAP_").to_ascii_lowercase())
            .collect();
        assert_eq!(caps, ["net_raw", "sys_nice"]);
        let caps = caps.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(",");
        let holder = host.holder.0.id().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let pid = Arc::new(Mutex::new(None));
        let (stop_flag, pid_slot, log_path) = (Arc::clone(&stop), Arc::clone(&pid), log.clone());
        let thread = std::thread::spawn(move || {
            let mut exits = Vec::new();
            for _ in 0..6 {
                let append = || {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log_path)
                        .unwrap()
                };
                let mut agent = Command::new("nsenter");
                agent
                    .args(["--target", &holder, "--mount", "--net", "--", "setpriv"])
                    .args([
                        &format!("--reuid={user}"),
                        &format!("--regid={user}"),
                        "--init-groups",
                        &format!("--inh-caps=-all,{caps}"),
                        &format!("--ambient-caps={caps}"),
                        &format!("--bounding-set=-all,{caps}"),
                        "--no-new-privs",
                        "--",
                    ])
                    .args(exec_start.split_whitespace())
                    .env_remove("NETWATCH_ENROLL_TOKEN")
                    .stdin(Stdio::null())
                    .stdout(Stdio::from(append()))
                    .stderr(Stdio::from(append()));
                let mut child = agent.spawn().expect("setpriv runs");
                *pid_slot.lock().unwrap() = Some(child.id());
                let status = child.wait().unwrap();
                *pid_slot.lock().unwrap() = None;
                exits.push(status.code());
                let post = Command::new("nsenter")
                    .args(["--target", &holder, "--mount", "--net", "--"])
                    .args(stop_post.trim_start_matches('+').split_whitespace())
                    .stdin(Stdio::null())
                    .stdout(Stdio::from(append()))
                    .stderr(Stdio::from(append()))
                    .status()
                    .unwrap();
                assert!(post.success(), "ExecStopPost failed");
                if status.success() || stop_flag.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_secs(2));
            }
            exits
        });
        Service {
            stop,
            pid,
            thread: Some(thread),
            log,
        }
    }

    /// The agent's process now (none between a stop and its restart).
    pub(crate) fn pid(&self) -> Option<u32> {
        *self.pid.lock().unwrap()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `text` (after `from` bytes of it).
    pub(crate) fn wait_log(&self, text: &str, from: usize, within: Duration) {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.log().get(from..).is_some_and(|log| log.contains(text)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the agent did not log {text:?} within {within:?}:\n{}", self.log());
    }

    /// Waits until the service ended by itself (no restart); its exit codes.
    pub(crate) fn ended(mut self, within: Duration) -> Vec<Option<i32>> {
        let start = Instant::now();
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            assert!(start.elapsed() < within, "the service did not end:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The SHA-256 of each file the installer placed, to compare runs.
fn placed(host: &Host) -> Vec<(String, Vec<u8>)> {
    [
        "/usr/local/bin/netwatch",
        "/etc/netwatch/agent.toml",
        "/etc/netwatch/ca.pem",
        "/etc/netwatch/install.json",
        "/etc/systemd/system/netwatch-agent.service",
        "/var/lib/netwatch/agent/credential",
    ]
    .iter()
    .map(|path| {
        use sha2::Digest as _;
        let bytes = std::fs::read(host.path(path)).unwrap_or_else(|err| panic!("{path}: {err}"));
        ((*path).to_owned(), sha2::Sha256::digest(&bytes).to_vec())
    })
    .collect()
}

/// `user:group mode` of the host's `path`, names as the host knows them.
fn owner_and_mode(host: &Host, path: &str) -> String {
    let out = netwatch_testkit::run(host.command("stat").args(["-c", "%U:%G %a", path]));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_one_line_install_runs_a_least_privilege_service_and_its_removal_leaves_only_captures() {
    let nw = Deployment::controller_only();
    let host = Host::new(&nw.pair.a);
    let line = install_line(&nw);

    // A wrong pin: curl refuses the controller before a byte of the script runs.
    let pin = line.split('\'').nth(1).unwrap().to_owned();
    let wrong = line.replace(&pin, "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let refused = host
        .command("bash")
        .args(["-o", "pipefail", "-c", &wrong])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).to_lowercase().contains("public key"),
        "curl says why: {}",
        text(&refused)
    );
    host.assert_untouched("a wrong pin");

    // The line as printed.
    let installed = host.sh(&line);
    let said = text(&installed);
    assert!(installed.status.success(), "{said}\n{}", nw.logs());
    for step in [
        "enrolled as",
        "user netwatch-agent made",
        "binary installed: /usr/local/bin/netwatch",
        "does not run systemd",
        "done: netwatch agent",
    ] {
        assert!(said.contains(step), "the installer says {step:?}:\n{said}");
    }
    // Stripped: objcopy took the symbols out.
    let sections = netwatch_testkit::run(
        Command::new("readelf")
            .args(["-S", "-W"])
            .arg(host.path("/usr/local/bin/netwatch")),
    );
    assert!(
        !String::from_utf8_lossy(&sections.stdout).contains(".symtab"),
        "the installed binary has a symbol table"
    );
    let config = std::fs::read_to_string(host.path("/etc/netwatch/agent.toml")).unwrap();
    for key in [
        format!("server = \"{}\"", nw.url),
        "ca = \"/etc/netwatch/ca.pem\"".to_owned(),
        format!("vm_name = \"{VM}\""),
        "resource_group = \"rg1\"".to_owned(),
        "location = \"westus\"".to_owned(),
        format!("interface = \"{IF_A}\""),
        "data_dir = \"/var/lib/netwatch/agent\"".to_owned(),
    ] {
        assert!(config.contains(&key), "{key} in\n{config}");
    }
    assert!(
        !config.contains("enroll_token"),
        "the spent token is not kept:\n{config}"
    );
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/netwatch/ca.pem")).unwrap(),
        std::fs::read_to_string(&nw.ca).unwrap(),
        "the CA came with the installer"
    );
    assert_eq!(
        owner_and_mode(&host, "/etc/netwatch/agent.toml"),
        "root:netwatch-agent 640"
    );
    assert_eq!(
        owner_and_mode(&host, "/var/lib/netwatch/agent"),
        "netwatch-agent:netwatch-agent 700"
    );
    assert_eq!(
        owner_and_mode(&host, "/var/lib/netwatch/agent/credential"),
        "netwatch-agent:netwatch-agent 600"
    );
    assert_eq!(owner_and_mode(&host, "/usr/local/bin/netwatch"), "root:root 755");

    // Twice: the same result, said so.
    let before = placed(&host);
    let again = host.sh(&line);
    let said = text(&again);
    assert!(again.status.success(), "{said}");
    assert!(said.contains("enrolled already with this token"), "{said}");
    assert!(
        said.contains("binary /usr/local/bin/netwatch: this build already"),
        "{said}"
    );
    assert!(said.contains("unchanged"), "{said}");
    assert_eq!(placed(&host), before, "a second run changed what the first placed");

    // The service, as systemd would start it: captures for real.
    let service = Service::start(&host, nw.dir.path().join("service.log"));
    service.wait_log("connected to the controller", 0, Duration::from_secs(20));
    assert!(service.log().contains("this agent can capture"), "{}", service.log());
    nw.create(
        "installed",
        json!({"filters": [{"protocol": "UDP", "localPort": "7401"}], "timeLimitInSeconds": 120}),
    );
    send_udp(&nw.pair, &[7401, 7409], 20, 100);
    nw.status_until("installed", "counting", |s| s["netwatch"]["packetsCaptured"] == 20);
    nw.sdk(&["stop", "installed"]);
    let capture = nw.sdk(&["get", "installed"]);
    let file = nw.download(&capture);
    assert_eq!(udp_packets(&file).len(), 20);
    let shown = nw.sdk(&["rest", "GET", &extension_url()]);
    assert_eq!(
        shown["body"]["properties"]["instanceView"]["typeHandlerVersion"],
        crate::util::version(),
        "{shown}"
    );

    // A local capture file only (Azure's filePath rule): kept when the agent goes.
    let target = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{VM}");
    let body = json!({"properties": {"target": target, "timeLimitInSeconds": 120,
        "filters": [{"protocol": "UDP", "localPort": "7402"}],
        "storageLocation": {"filePath": "/var/captures/kept.cap"}}});
    nw.sdk(&["create", "local", &body.to_string()]);
    send_udp(&nw.pair, &[7402], 5, 100);
    nw.status_until("local", "counting", |s| s["netwatch"]["packetsCaptured"] == 5);
    nw.sdk(&["stop", "local"]);

    // `vm extension delete`: the agent uninstalls itself; the captures stay.
    let deleted = nw.sdk(&["rest", "DELETE", &extension_url()]);
    assert_eq!(deleted["status"], 200, "{deleted}");
    let exits = service.ended(Duration::from_secs(30));
    assert_eq!(exits, [Some(0)], "the agent stops once, and is not restarted");
    let left = host.netwatch_files();
    assert!(!host.has_user("netwatch-agent"), "the user is gone");
    for path in &left {
        assert!(
            path == "/var/lib/netwatch"
                || path.starts_with("/var/lib/netwatch/agent/captures")
                || path.starts_with("/var/lib/netwatch/agent/spool")
                || path == "/var/lib/netwatch/agent"
                || path.starts_with("/var/captures"),
            "left behind: {path} (all: {left:?})"
        );
    }
    // The agent keeps Azure's `/var/captures/…` under its captures directory.
    assert!(
        left.contains(&"/var/lib/netwatch/agent/captures/kept.cap".to_owned()),
        "{left:?}"
    );
    let gone = nw.sdk(&["rest", "GET", &extension_url()]);
    assert_eq!(gone["status"], 404, "the extension reads as gone: {gone}");
}

/// The second build the upgrade tests serve: the same sources built with
/// another version (`NETWATCH_BUILD_VERSION`; scripts/test.sh makes it).
fn next_build() -> (PathBuf, String) {
    let path = std::env::var_os("NETWATCH_TEST_NEXT_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "NETWATCH_TEST_NEXT_AGENT is not set: it names a netwatch built with a newer version. scripts/test.sh \
             makes one; by hand: NETWATCH_BUILD_VERSION=0.2.0 cargo build -p netwatch --bin netwatch && cp \
             target/debug/netwatch target/netwatch-next && cargo build -p netwatch --bin netwatch && \
             NETWATCH_TEST_NEXT_AGENT=$PWD/target/netwatch-next cargo test …"
            )
        });
    let out = netwatch_testkit::run(Command::new(&path).arg("--version"));
    let version = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert_ne!(
        version,
        crate::util::version(),
        "{} is not another version",
        path.display()
    );
    (path, version)
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The version `vm extension show` says the host runs, and its upgrade failure.
fn shown_version(nw: &Deployment) -> (String, Value) {
    let shown = nw.sdk(&["rest", "GET", &extension_url()]);
    let properties = &shown["body"]["properties"];
    (
        properties["instanceView"]["typeHandlerVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        properties["netwatch"]["upgradeFailure"].clone(),
    )
}

fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool, logs: impl Fn() -> String) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}\n{}", logs());
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn an_installed_agent_upgrades_when_idle_waits_for_its_capture_refuses_a_corrupt_build_and_is_forced_back() {
    let (next, next_version) = next_build();
    let mut nw = Deployment::controller_only();
    let host = Host::new(&nw.pair.a);
    let installed = host.sh(&install_line(&nw));
    assert!(installed.status.success(), "{}", text(&installed));
    let service = Service::start(&host, nw.dir.path().join("service.log"));
    service.wait_log("connected to the controller", 0, Duration::from_secs(20));
    let version = crate::util::version();
    let credential = std::fs::read(host.path("/var/lib/netwatch/agent/credential")).unwrap();
    let host_id = std::fs::read(host.path("/var/lib/netwatch/agent/host-id")).unwrap();

    // Busy: a capture runs when the controller comes back with a newer build.
    nw.create(
        "busy",
        json!({"filters": [{"protocol": "UDP", "localPort": "7401"}], "timeLimitInSeconds": 300}),
    );
    send_udp(&nw.pair, &[7401], 10, 100);
    nw.status_until("busy", "counting", |s| s["netwatch"]["packetsCaptured"] == 10);

    // The newer build, damaged on the controller's disk after its release
    // digest was written: same size, one byte changed.
    let agents = nw.dir.path().join("agents");
    std::fs::create_dir_all(&agents).unwrap();
    let served = agents.join(format!("netwatch-{next_version}-{}", std::env::consts::ARCH));
    std::fs::copy(&next, &served).unwrap();
    let sums = format!(
        "{}  {}\n",
        sha256_hex(&served),
        served.file_name().unwrap().to_string_lossy()
    );
    std::fs::write(agents.join("SHA256SUMS"), sums).unwrap();
    let mut bytes = std::fs::read(&served).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&served, &bytes).unwrap();
    drop(bytes);
    nw.kill_controller();
    let mark = service.log().len();
    nw.restart_controller_with(&[std::ffi::OsStr::new("--agents-dir"), agents.as_os_str()]);
    service.wait_log("upgrade waits until no capture runs", mark, Duration::from_secs(40));
    let pid = service.pid();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        shown_version(&nw).0,
        version,
        "still the old version while the capture runs"
    );
    assert_eq!(service.pid(), pid, "the agent was not restarted mid-capture");

    // The capture ends: the agent downloads, finds the build corrupt, refuses it, goes on.
    nw.sdk(&["stop", "busy"]);
    until(
        "the corrupt build is reported",
        Duration::from_secs(60),
        || {
            shown_version(&nw).1["message"]
                .as_str()
                .is_some_and(|m| m.contains("corrupt"))
        },
        || format!("{}\n{}", service.log(), nw.logs()),
    );
    assert_eq!(service.pid(), pid, "a refused build leaves the agent running");
    let (shown, failure) = shown_version(&nw);
    assert_eq!(shown, version);
    assert_eq!(failure["version"], next_version, "{failure}");
    let capture = nw.sdk(&["get", "busy"]);
    assert_eq!(udp_packets(&nw.download(&capture)).len(), 10, "the capture was kept");

    // Repaired, and `vm extension set` again: the idle agent upgrades.
    std::fs::copy(&next, &served).unwrap();
    let set = extension_set(
        &nw,
        json!({"typeHandlerVersion": "1.4", "autoUpgradeMinorVersion": true}),
    );
    assert_eq!(set["status"], 200, "{set}");
    until(
        "the agent runs the new build",
        Duration::from_secs(90),
        || shown_version(&nw).0 == next_version,
        || format!("{}\n{}", service.log(), nw.logs()),
    );
    assert!(
        service.log().contains(&format!("agent {next_version} installed")),
        "{}",
        service.log()
    );
    assert_eq!(sha256_hex(&host.path("/usr/local/bin/netwatch")), sha256_hex(&next));
    assert_eq!(owner_and_mode(&host, "/usr/local/bin/netwatch"), "root:root 755");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(host.path("/etc/netwatch/install.json")).unwrap()).unwrap();
    assert_eq!(record["version"], next_version);
    // Same host, same credential: nothing enrolled again.
    assert_eq!(
        std::fs::read(host.path("/var/lib/netwatch/agent/credential")).unwrap(),
        credential
    );
    assert_eq!(
        std::fs::read(host.path("/var/lib/netwatch/agent/host-id")).unwrap(),
        host_id
    );
    assert!(
        !host.path("/var/lib/netwatch/agent/upgrade/netwatch").exists(),
        "the staged build was cleaned up"
    );

    // The new build captures.
    nw.create(
        "after",
        json!({"filters": [{"protocol": "UDP", "localPort": "7403"}], "timeLimitInSeconds": 120}),
    );
    send_udp(&nw.pair, &[7403], 7, 100);
    nw.status_until("after", "counting", |s| s["netwatch"]["packetsCaptured"] == 7);

    // Forced (`--force-update`), mid-capture, back to the controller's own
    // version by name (`--version`, minor upgrades off): the agent restarts
    // into it at once and its capture goes on.
    let set = extension_set(
        &nw,
        json!({"typeHandlerVersion": version, "autoUpgradeMinorVersion": false, "forceUpdateTag": "1"}),
    );
    assert_eq!(set["status"], 200, "{set}");
    until(
        "the forced change of version",
        Duration::from_secs(90),
        || shown_version(&nw).0 == version,
        || format!("{}\n{}", service.log(), nw.logs()),
    );
    let status = nw.sdk(&["status", "after"]);
    assert_eq!(
        status["packetCaptureStatus"], "Running",
        "the capture goes on: {status}"
    );
    nw.sdk(&["stop", "after"]);
    nw.status_until("after", "stopped and stored", |s| {
        s["packetCaptureStatus"] == "Stopped" && s["netwatch"]["uploadState"] == "Succeeded"
    });
    assert_eq!(sha256_hex(&host.path("/usr/local/bin/netwatch")), {
        let builds = nw.sdk(&["rest", "GET", "/netwatch/v1/agent/builds"]);
        builds["body"]
            .as_array()
            .unwrap()
            .iter()
            .find(|build| build["version"] == version)
            .map(|build| build["sha256"].as_str().unwrap().to_owned())
            .unwrap()
    });
    drop(service);
}

/// One refused input: what to run, and what the refusal must say.
struct Refusal {
    what: &'static str,
    output: Output,
    says: &'static str,
}

impl Refusal {
    fn check(&self) {
        let said = text(&self.output);
        assert!(!self.output.status.success(), "{}: accepted\n{said}", self.what);
        assert!(
            said.contains(self.says),
            "{}: the refusal does not say {:?}:\n{said}",
            self.what,
            self.says
        );
    }
}

#[test]
fn bad_inputs_to_the_install_surface_are_refused_with_the_fix_and_nothing_half_installed() {
    let nw = Deployment::controller_only();
    let host = Host::new(&nw.pair.a);
    let set = extension_set(&nw, json!({"typeHandlerVersion": "1.4"}));
    let token = set["body"]["properties"]["netwatch"]["enrollment"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let ca = nw.ca.display().to_string();
    let base: Vec<String> = [
        "agent",
        "install",
        "--server",
        &nw.url,
        "--ca-file",
        &ca,
        "--enroll-token",
        &token,
        "--vm-name",
        VM,
        "-g",
        "rg1",
        "-l",
        "westus",
        "-i",
        IF_A,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // `netwatch agent install` with `flag` set to `value` (added when not there; removed when `None`).
    let install = |flag: &str, value: Option<&str>| -> Output {
        let mut args = base.clone();
        match args.iter().position(|a| a == flag) {
            Some(i) => match value {
                Some(value) => args[i + 1] = value.to_owned(),
                None => {
                    args.drain(i..i + 2);
                }
            },
            None => {
                args.push(flag.to_owned());
                args.extend(value.map(str::to_owned));
            }
        }
        host.command(crate::util::netwatch()).args(&args).output().unwrap()
    };
    let mut refusals = vec![
        Refusal {
            what: "not root",
            output: host
                .command("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(crate::util::netwatch())
                .args(&base)
                .output()
                .unwrap(),
            says: "run it as root",
        },
        Refusal {
            what: "a binary that is not the published build",
            output: install("--sha256", Some(&"0".repeat(64))),
            says: "is not the build the controller published",
        },
        Refusal {
            what: "a CA file that is not one",
            output: install("--ca-file", Some("/etc/hostname")),
            says: "holds no PEM certificate",
        },
        Refusal {
            what: "a CA file that is not there",
            output: install("--ca-file", Some("/nonexistent/ca.pem")),
            says: "read the CA file /nonexistent/ca.pem",
        },
        Refusal {
            what: "a bad VM name",
            output: install("--vm-name", Some("bad name!")),
            says: "is not a valid name",
        },
        Refusal {
            what: "a bad resource group",
            output: install("-g", Some("rg/1")),
            says: "is not a valid resource group name",
        },
        Refusal {
            what: "a bad location",
            output: install("-l", Some("west us!")),
            says: "--location",
        },
        Refusal {
            what: "an interface the host does not have",
            output: install("-i", Some("nope0")),
            says: "this host has no interface \"nope0\"",
        },
        Refusal {
            what: "a tag that is not KEY=VALUE",
            output: install("--tag", Some("novalue")),
            says: "is not a tag: write KEY=VALUE",
        },
        Refusal {
            what: "no token and not enrolled",
            output: install("--enroll-token", None),
            says: "no --enroll-token, and this host is not enrolled",
        },
        Refusal {
            what: "a server that is not a URL of one",
            output: install("--server", Some("ftp://controller")),
            says: "is not a valid controller address",
        },
        Refusal {
            what: "a controller that does not answer",
            output: install("--server", Some("https://10.203.0.2:9")),
            says: "could not reach the controller",
        },
        Refusal {
            what: "a token the controller never gave",
            output: install("--enroll-token", Some(&"ab".repeat(32))),
            says: "the controller refused the enrollment",
        },
    ];
    for refusal in &refusals {
        refusal.check();
        host.assert_untouched(refusal.what);
    }

    // A spent token: another host used it first.
    let other = Host::new(&nw.pair.a);
    let spent = other
        .command(crate::util::netwatch())
        .args(&base)
        .args(["--no-start"])
        .output()
        .unwrap();
    assert!(spent.status.success(), "{}", text(&spent));
    refusals.push(Refusal {
        what: "a spent token",
        output: install("--vm-name", Some("host-b")),
        says: "An enrollment token works once",
    });

    // Directories it cannot write: a read-only /usr/local.
    let ro = host.sh("mount -o remount,bind,ro /usr/local");
    assert!(ro.status.success(), "{}", text(&ro));
    refusals.push(Refusal {
        what: "a read-only /usr/local",
        output: install("--vm-name", Some("host-c")),
        says: "cannot write in /usr/local/bin",
    });
    assert!(host.sh("mount -o remount,bind,rw /usr/local").status.success());

    // An architecture the controller has no build for: install.sh says so
    // before it downloads anything (uname answers mips64 here).
    let fake = host.path("/var/tmp/fake-bin");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(fake.join("uname"), "#!/bin/sh\necho mips64\n").unwrap();
    netwatch_testkit::run(Command::new("chmod").arg("+x").arg(fake.join("uname")));
    let line = set["body"]["properties"]["netwatch"]["enrollment"]["command"]
        .as_str()
        .unwrap()
        .replace("| sh -s --", "| PATH=/var/tmp/fake-bin:$PATH sh -s --");
    refusals.push(Refusal {
        what: "an architecture with no build",
        output: host
            .command("bash")
            .args(["-o", "pipefail", "-c", &line])
            .output()
            .unwrap(),
        says: "no agent build for this host's architecture mips64",
    });
    let curl = |path: &str| {
        host.command("curl")
            .args(["-sS", "-w", "\n%{http_code}", "--cacert", &ca])
            .arg(format!("{}{path}", nw.url))
            .output()
            .unwrap()
    };
    let unknown_arch = curl("/netwatch/v1/agent/builds/mips64/0.1.0");
    assert!(text(&unknown_arch).ends_with("404"), "{}", text(&unknown_arch));
    assert!(
        text(&unknown_arch).contains("no agent build for mips64"),
        "{}",
        text(&unknown_arch)
    );
    let unknown_version = curl("/netwatch/v1/agent/builds/x86_64/9.9.9");
    assert!(
        text(&unknown_version).contains("version 9.9.9"),
        "{}",
        text(&unknown_version)
    );

    for refusal in &refusals[refusals.len() - 3..] {
        refusal.check();
        host.assert_untouched(refusal.what);
    }

    // The agent's config file: a key it does not know, and a broken line.
    let config = host.path("/var/tmp/agent.toml");
    for (body, says) in [
        ("sever = \"https://x\"\n", "unknown field `sever`"),
        ("server = \"https://x\"\ninterface = \n", "line 2"),
    ] {
        std::fs::write(&config, body).unwrap();
        let output = host
            .command(crate::util::netwatch())
            .args(["agent", "--config", "/var/tmp/agent.toml"])
            .output()
            .unwrap();
        Refusal {
            what: "a bad config file",
            output,
            says,
        }
        .check();
    }
    // apply and uninstall where nothing was installed, and a damaged record.
    let apply = host
        .command(crate::util::netwatch())
        .args(["agent", "apply"])
        .output()
        .unwrap();
    assert!(
        apply.status.success(),
        "nothing installed, nothing to apply: {}",
        text(&apply)
    );
    Refusal {
        what: "uninstall of nothing installed",
        output: host
            .command(crate::util::netwatch())
            .args(["agent", "uninstall"])
            .output()
            .unwrap(),
        says: "was the agent installed by netwatch's installer?",
    }
    .check();
    std::fs::write(host.path("/var/tmp/install.json"), "{not json").unwrap();
    Refusal {
        what: "a damaged install record",
        output: host
            .command(crate::util::netwatch())
            .args(["agent", "apply", "--record", "/var/tmp/install.json"])
            .output()
            .unwrap(),
        says: "is damaged",
    }
    .check();
    // The API: purge is true or false.
    let purge = nw.sdk(&["rest", "DELETE", &format!("{}&purge=maybe", extension_url())]);
    assert_eq!(purge["status"], 400, "{purge}");
    assert!(
        purge["body"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("purge is true or false")
    );
    // By hand, with --purge: the other host's agent goes with its data.
    std::fs::create_dir_all(other.path("/var/lib/netwatch/agent/captures")).unwrap();
    std::fs::write(other.path("/var/lib/netwatch/agent/captures/old.cap"), b"kept?").unwrap();
    let purged = other
        .command(crate::util::netwatch())
        .args(["agent", "uninstall", "--purge"])
        .output()
        .unwrap();
    assert!(purged.status.success(), "{}", text(&purged));
    other.assert_untouched("uninstall --purge");

    // The controller: an agents_dir that is not there.
    let up_dir = tempfile::tempdir().unwrap();
    let refused_up = Command::new(crate::util::netwatch())
        .args([
            "up",
            "--no-agent",
            "--listen",
            "127.0.0.1:0",
            "--agents-dir",
            "/nonexistent/agents",
            "--data-dir",
        ])
        .arg(up_dir.path())
        .env("XDG_CONFIG_HOME", up_dir.path().join("config"))
        .output()
        .unwrap();
    Refusal {
        what: "an agents_dir that is not a directory",
        output: refused_up,
        says: "agents_dir is not a directory",
    }
    .check();
}
