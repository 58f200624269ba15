//! A deployment of netwatch on two test hosts: `netwatch up` (controller only)
//! in namespace `b`, `netwatch agent` in namespace `a` connecting to it over
//! the veth pair, clients (Azure's SDK, the CLI, az) in `b`, real UDP traffic
//! from `b` to `a`.
//!
//! Azure's Python SDK runs from the virtualenv `scripts/test.sh` makes; its
//! Python is `NETWATCH_TEST_PYTHON`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use etherparse::{LaxSlicedPacket, TransportSlice};
use netwatch_testkit::{A4, IF_A, NetnsPair, read_pcap};
use serde_json::{Value, json};

use crate::util::netwatch;

pub(crate) const SUB: &str = "00000000-0000-0000-0000-000000000000";
pub(crate) const VM: &str = "host-a";
/// Where `netwatch up` listens: b's side of the veth pair.
pub(crate) const LISTEN: &str = "10.203.0.2:0";

/// The SDK's Python, from the environment; a clear failure without it.
pub(crate) fn python() -> PathBuf {
    match std::env::var_os("NETWATCH_TEST_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => panic!(
            "NETWATCH_TEST_PYTHON is not set: it names a Python with azure-mgmt-network installed. \
             scripts/test.sh makes one; by hand: python3 -m venv V && V/bin/pip install azure-mgmt-network \
             && NETWATCH_TEST_PYTHON=V/bin/python cargo test"
        ),
    }
}

pub(crate) fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/azure_sdk.py")
}

/// Runs one step of the SDK script in namespace `ns` against the controller
/// at `url` with `token`, trusting `ca`; its JSON output. A failure shows `logs()`.
pub(crate) fn run_sdk(
    ns: &str,
    (url, token, ca): (&str, &str, &Path),
    args: &[&str],
    logs: impl Fn() -> String,
) -> Value {
    let output = NetnsPair::exec(ns, python())
        .arg(script())
        .args(args)
        .env("NETWATCH_URL", url)
        .env("NETWATCH_TOKEN", token)
        .env("NETWATCH_CA", ca)
        .stdin(Stdio::null())
        .output()
        .expect("run the SDK script");
    assert!(
        output.status.success(),
        "SDK step {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        logs()
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "SDK step {args:?} printed no JSON ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Azure's CLI, from the environment; a clear failure without it.
pub(crate) fn az() -> PathBuf {
    match std::env::var_os("NETWATCH_TEST_AZ") {
        Some(az) => PathBuf::from(az),
        None => panic!(
            "NETWATCH_TEST_AZ is not set: it names Azure's `az` (PyPI azure-cli). scripts/test.sh installs it; \
             by hand: python3 -m venv V && V/bin/pip install azure-cli==2.91.0 && NETWATCH_TEST_AZ=V/bin/az cargo test"
        ),
    }
}

/// Azure's `az ARGS` in namespace `ns` with its configuration in `config`
/// (logged in by [`az_login`]), trusting `ca`.
pub(crate) fn az_in(ns: &str, config: &Path, ca: &Path, args: &[&str]) -> std::process::Output {
    NetnsPair::exec(ns, az())
        .args(args)
        .env("AZURE_CONFIG_DIR", config)
        .env("REQUESTS_CA_BUNDLE", ca)
        .env("AZURE_CORE_COLLECT_TELEMETRY", "false")
        .env("AZURE_CORE_SURVEY_MESSAGE", "false")
        .env("AZURE_CORE_NO_COLOR", "true")
        .stdin(Stdio::null())
        .output()
        .expect("run az")
}

/// Points `az` at netwatch (`url`) as a cloud of its own and logs in with a
/// service principal whose secret is the netwatch `token`.
pub(crate) fn az_login(ns: &str, config: &Path, ca: &Path, (url, token): (&str, &str)) {
    let url = format!("{url}/");
    for (what, args) in [
        (
            "cloud register",
            vec![
                "cloud",
                "register",
                "--name",
                "netwatch",
                "--endpoint-resource-manager",
                &url,
            ],
        ),
        ("cloud set", vec!["cloud", "set", "--name", "netwatch"]),
        ("config set", vec!["config", "set", "core.instance_discovery=false"]),
        (
            "login",
            vec![
                "login",
                "--service-principal",
                "-u",
                "netwatch",
                "-p",
                token,
                "--tenant",
                SUB,
            ],
        ),
    ] {
        let output = az_in(ns, config, ca, &args);
        assert!(
            output.status.success(),
            "az {what}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A child process killed when the test ends, pass or fail.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `netwatch up` in b and an agent in a.
pub(crate) struct Deployment {
    pub(crate) pair: NetnsPair,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) ca: PathBuf,
    pub(crate) up: Option<Guard>,
    pub(crate) agent: Option<Guard>,
    /// The `netwatch` binary agents run: this build's, unless a test asks for another.
    pub(crate) agent_bin: PathBuf,
}

/// Starts `netwatch up --no-agent` in `ns` on `listen` over `data`; the process and its URL.
pub(crate) fn start_up(ns: &str, dir: &Path, listen: &str) -> (Guard, String) {
    start_up_with(ns, dir, listen, &[])
}

/// [`start_up`] with more arguments for `netwatch up`.
pub(crate) fn start_up_with(ns: &str, dir: &Path, listen: &str, more: &[&std::ffi::OsStr]) -> (Guard, String) {
    let mut args: Vec<&std::ffi::OsStr> = vec!["--no-agent".as_ref()];
    args.extend_from_slice(more);
    start_up_args(ns, dir, listen, &args)
}

/// `netwatch up --listen LISTEN --data-dir DIR/up MORE…` in `ns` (with its
/// own agent unless `more` says `--no-agent`); the process and its URL.
pub(crate) fn start_up_args(ns: &str, dir: &Path, listen: &str, more: &[&std::ffi::OsStr]) -> (Guard, String) {
    start_up_bin(netwatch().as_ref(), ns, dir, listen, more)
}

/// [`start_up_args`] with the `netwatch` binary `bin` (another build).
pub(crate) fn start_up_bin(
    bin: &Path,
    ns: &str,
    dir: &Path,
    listen: &str,
    more: &[&std::ffi::OsStr],
) -> (Guard, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("up.log"))
        .unwrap();
    let mut up = NetnsPair::exec(ns, bin)
        .args(["up", "--listen", listen, "--data-dir"])
        .arg(dir.join("up"))
        .args(more)
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
    pub(crate) fn start() -> Deployment {
        let mut deployment = Deployment::controller_only();
        let token = deployment.credential("agent_token");
        let agent_dir = deployment.dir.path().join("agent");
        deployment.agent = Some(deployment.start_agent(&token, &agent_dir, "agent.log"));
        deployment.wait_for_agent();
        deployment
    }

    /// The controller in b, no agent yet.
    pub(crate) fn controller_only() -> Deployment {
        Deployment::controller_only_bin(netwatch().as_ref())
    }

    /// [`Deployment::controller_only`] running the `netwatch` binary `bin` (another build).
    pub(crate) fn controller_only_bin(bin: &Path) -> Deployment {
        let python = python();
        assert!(
            python.exists(),
            "NETWATCH_TEST_PYTHON={} does not exist",
            python.display()
        );
        let pair = NetnsPair::new();
        let dir = tempfile::tempdir().unwrap();
        let (up, url) = start_up_bin(bin, &pair.b, dir.path(), LISTEN, &["--no-agent".as_ref()]);
        let mut deployment = Deployment {
            pair,
            dir,
            url,
            token: String::new(),
            ca: PathBuf::new(),
            up: Some(up),
            agent: None,
            agent_bin: PathBuf::from(netwatch()),
        };
        deployment.token = deployment.credential("admin_token");
        deployment.ca = deployment.dir.path().join("up/ca.pem");
        deployment
    }

    /// A token from `netwatch up`'s credentials.toml.
    pub(crate) fn credential(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("up/credentials.toml")).unwrap();
        let credentials: toml::Table = toml::from_str(&text).unwrap();
        credentials[name].as_str().unwrap().to_owned()
    }

    /// `netwatch agent` in a as VM host-a with `token`, its data in `data`, its log in `log`.
    pub(crate) fn start_agent(&self, token: &str, data: &Path, log: &str) -> Guard {
        self.start_agent_with(token, data, log, &[])
    }

    /// [`Deployment::start_agent`] with more flags.
    pub(crate) fn start_agent_with(&self, token: &str, data: &Path, log: &str, more: &[&str]) -> Guard {
        let agent = NetnsPair::exec(&self.pair.a, &self.agent_bin)
            .args(["agent", "--server", &self.url, "--enroll-token", token, "--ca"])
            .arg(&self.ca)
            .args(["--vm-name", VM, "-g", "rg1", "-l", "westus", "-i", IF_A, "--data-dir"])
            .arg(data)
            .args(more)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(self.dir.path().join(log)).unwrap()))
            .spawn()
            .expect("spawn netwatch agent");
        Guard(agent)
    }

    /// Waits until the agent has registered the host as VM host-a.
    pub(crate) fn wait_for_agent(&self) {
        let vm = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{VM}");
        let registered = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
            self.sdk(&["rest", "GET", &format!("{vm}?api-version=2024-07-01")])["status"] == 200
        });
        assert!(registered, "the agent did not register within 10 s\n{}", self.logs());
    }

    /// `kill -9` of the controller.
    pub(crate) fn kill_controller(&mut self) {
        drop(self.up.take());
    }

    /// Starts the controller again on the same data and address.
    pub(crate) fn restart_controller(&mut self) {
        self.restart_controller_with(&[]);
    }

    /// [`Deployment::restart_controller`] with more arguments for `netwatch up`.
    pub(crate) fn restart_controller_with(&mut self, more: &[&std::ffi::OsStr]) {
        let listen = self.url.trim_start_matches("https://").to_owned();
        let (up, url) = start_up_with(&self.pair.b, self.dir.path(), &listen, more);
        assert_eq!(url, self.url);
        self.up = Some(up);
    }

    /// Runs one SDK step; its JSON output.
    pub(crate) fn sdk(&self, args: &[&str]) -> Value {
        run_sdk(&self.pair.b, (&self.url, &self.token, &self.ca), args, || self.logs())
    }

    pub(crate) fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let mut logs = format!("--- up.log\n{}\n--- agent.log\n{}", read("up.log"), read("agent.log"));
        // An agent started again (after a kill) logs to agent-2.log.
        if self.dir.path().join("agent-2.log").exists() {
            logs.push_str(&format!("\n--- agent-2.log\n{}", read("agent-2.log")));
        }
        logs
    }

    pub(crate) fn create(&self, name: &str, properties: Value) -> Value {
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
    pub(crate) fn status_until(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
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
    pub(crate) fn download(&self, capture: &Value) -> PathBuf {
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

/// A time the API returned, which must be in Azure's form: RFC 3339 UTC with
/// exactly seven fractional digits (`2016-12-06T17:20:01.5671279Z`).
pub(crate) fn azure_time(value: &Value) -> SystemTime {
    use time::macros::format_description;
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("a time is a string, not {value}"));
    let azure = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z");
    let time = time::PrimitiveDateTime::parse(text, azure)
        .unwrap_or_else(|err| panic!("{text:?} is not in Azure's form (seven fractional digits, Z): {err}"));
    time.assume_utc().into()
}

/// Sends `count` UDP datagrams of `payload` bytes from b to a's first address
/// on each port (nothing listens; the packets cross vA all the same).
pub(crate) fn send_udp(pair: &NetnsPair, ports: &[u16], count: usize, payload: usize) {
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
pub(crate) fn udp_packets(path: &Path) -> Vec<(u16, usize, u32)> {
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
