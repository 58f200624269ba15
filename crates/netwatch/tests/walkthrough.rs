//! Azure's "manage packet captures with the Azure CLI" guide, run for real:
//! every command with `az` replaced by `netwatch`, then the same commands with
//! Azure's own `az` (its virtualenv from scripts/test.sh, `NETWATCH_TEST_AZ`),
//! against one [`Deployment`]: the controller in one test host, the agent
//! installed on the other with the command `vm extension set` printed.
//!
//! Each output is checked field by field, and netwatch's against az's: the
//! same keys, in the same shape.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::SystemTime;

use netwatch_testkit::{A4, IF_A, NetnsPair};
use serde_json::{Value, json};

use crate::deployment::{Deployment, Guard, SUB, VM, az_in, az_login, azure_time, send_udp, udp_packets};
use crate::util::netwatch;

/// The guide's filters, with this test's addresses and ports: a TCP filter
/// nothing here matches, and UDP to port 7501.
fn filters() -> String {
    json!([
        {"protocol": "TCP", "remoteIPAddress": "1.1.1.1-255.255.255.255", "localIPAddress": A4[0], "remotePort": "20"},
        {"protocol": "UDP", "localPort": "7501"},
    ])
    .to_string()
}

/// The output of a command that succeeded, as JSON (`Null` when it printed nothing).
fn json_of(what: &str, output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.stdout.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "{what} printed no JSON ({err}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Every key path of `value` (`storageLocation.storageId`, `filters[].protocol`), sorted.
fn shape(value: &Value) -> Vec<String> {
    fn walk(value: &Value, path: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    let here = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    out.push(here.clone());
                    walk(inner, &here, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, &format!("{path}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out.sort();
    out.dedup();
    out
}

impl Deployment {
    /// `netwatch ARGS` in b, with the client settings in the environment.
    fn netwatch(&self, args: &[&str]) -> Output {
        self.netwatch_as(&self.token, args)
    }

    /// `netwatch ARGS` in b with client token `token`.
    fn netwatch_as(&self, token: &str, args: &[&str]) -> Output {
        NetnsPair::exec(&self.pair.b, netwatch())
            .args(args)
            .env("NETWATCH_URL", &self.url)
            .env("NETWATCH_TOKEN", token)
            .env("NETWATCH_CA", &self.ca)
            .env("XDG_CONFIG_HOME", self.dir.path().join("no-config"))
            .stdin(Stdio::null())
            .output()
            .expect("run netwatch")
    }

    /// Azure's `az ARGS` in b, logged in to netwatch.
    fn az(&self, args: &[&str]) -> Output {
        az_in(&self.pair.b, &self.dir.path().join("az"), &self.ca, args)
    }
}

/// Installs the agent on host a with the command `vm extension set` printed.
fn install_agent(nw: &mut Deployment, printed: &str) -> Guard {
    let command = printed
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("netwatch agent "))
        .unwrap_or_else(|| panic!("vm extension set printed no agent command:\n{printed}"));
    let mut words = command.split_whitespace().skip(1);
    let mut agent = NetnsPair::exec(&nw.pair.a, netwatch());
    agent.args(words.by_ref());
    agent
        .args(["--interface", IF_A, "--data-dir"])
        .arg(nw.dir.path().join("agent"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(nw.dir.path().join("agent.log")).unwrap(),
        ));
    Guard(agent.spawn().expect("spawn the agent as printed"))
}

const CAPTURE_KEYS: [&str; 12] = [
    "bytesToCapturePerPacket",
    "etag",
    "filters",
    "id",
    "name",
    "provisioningState",
    "resourceGroup",
    "storageLocation",
    "target",
    "targetType",
    "timeLimitInSeconds",
    "totalBytesPerSession",
];

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

/// The guide with `netwatch`; what each command printed, by command.
fn guide_with_netwatch(nw: &mut Deployment) -> Vec<(&'static str, Value)> {
    let mut printed = Vec::new();
    let vm_id = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{VM}");

    // Install the agent: netwatch cannot reach the host, so it prints the command.
    let set = nw.netwatch(&[
        "vm",
        "extension",
        "set",
        "--resource-group",
        "rg1",
        "--vm-name",
        VM,
        "--publisher",
        "Microsoft.Azure.NetworkWatcher",
        "--name",
        "NetworkWatcherAgentLinux",
        "--version",
        "1.4",
    ]);
    let extension = json_of("vm extension set", &set);
    assert_eq!(extension["provisioningState"], "Creating", "{extension}");
    assert_eq!(extension["publisher"], "Microsoft.Azure.NetworkWatcher");
    nw.agent = Some(install_agent(nw, &String::from_utf8_lossy(&set.stderr)));
    nw.wait_for_agent();

    let shown = json_of(
        "vm extension show",
        &nw.netwatch(&[
            "vm",
            "extension",
            "show",
            "--resource-group",
            "rg1",
            "--vm-name",
            VM,
            "--name",
            "NetworkWatcherAgentLinux",
        ]),
    );
    assert_eq!(
        (&shown["provisioningState"], &shown["name"], &shown["resourceGroup"]),
        (&json!("Succeeded"), &json!("NetworkWatcherAgentLinux"), &json!("rg1")),
        "{shown}"
    );
    assert_eq!(shown["id"], format!("{vm_id}/extensions/NetworkWatcherAgentLinux"));
    printed.push(("vm extension show", shown));

    let watcher = json_of(
        "network watcher show",
        &nw.netwatch(&[
            "network",
            "watcher",
            "show",
            "--resource-group",
            "NetworkWatcherRG",
            "--name",
            "NetworkWatcher_westus",
        ]),
    );
    assert_eq!(
        (
            &watcher["name"],
            &watcher["location"],
            &watcher["resourceGroup"],
            &watcher["provisioningState"]
        ),
        (
            &json!("NetworkWatcher_westus"),
            &json!("westus"),
            &json!("NetworkWatcherRG"),
            &json!("Succeeded")
        ),
        "{watcher}"
    );

    let accounts = json_of("storage account list", &nw.netwatch(&["storage", "account", "list"]));
    assert_eq!(accounts[0]["name"], "netwatchlocal", "{accounts}");
    printed.push(("storage account list", accounts));

    // An account of the team's own: made, listed, refused a delete without
    // a terminal to confirm on, deleted.
    let made = json_of(
        "storage account create",
        &nw.netwatch(&[
            "storage",
            "account",
            "create",
            "-n",
            "teamfiles",
            "-g",
            "netwatch",
            "-l",
            "westus",
        ]),
    );
    assert_eq!(
        (&made["name"], &made["resourceGroup"], &made["netwatch"]["kind"]),
        (&json!("teamfiles"), &json!("netwatch"), &json!("local")),
        "{made}"
    );
    printed.push(("storage account create", made));
    let s3 = json_of(
        "storage account create --bucket",
        &nw.netwatch(&[
            "storage",
            "account",
            "create",
            "-n",
            "teams3",
            "-g",
            "netwatch",
            "--bucket",
            "caps",
            "--endpoint",
            "http://127.0.0.1:9",
            "--access-key-id",
            "AKIDWALK",
            "--secret-access-key",
            "walk-secret",
        ]),
    );
    assert_eq!(s3["netwatch"]["bucket"], "caps", "{s3}");
    let listed = nw.netwatch(&["storage", "account", "list", "--query", "[].name", "-o", "tsv"]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "netwatchlocal\nteamfiles\nteams3\n"
    );
    let unsure = nw.netwatch(&["storage", "account", "delete", "-n", "teams3", "-g", "netwatch"]);
    assert_eq!(
        unsure.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&unsure.stderr)
    );
    assert!(String::from_utf8_lossy(&unsure.stderr).contains("--yes"));
    let bad = nw.netwatch(&[
        "storage", "account", "create", "-n", "x12", "-g", "netwatch", "--path", "/srv", "--bucket", "b",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("argument --path: it is for --backend local, but this account's backend is s3")
    );
    for name in ["teams3", "teamfiles"] {
        let deleted = nw.netwatch(&["storage", "account", "delete", "-n", name, "-g", "netwatch", "--yes"]);
        assert_eq!(json_of("storage account delete", &deleted), Value::Null);
    }
    let listed = nw.netwatch(&["storage", "account", "list", "--query", "[].name", "-o", "tsv"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "netwatchlocal\n");

    // A reader's token reads and may not change anything; revoked, it reads nothing.
    let made = json_of(
        "token create",
        &nw.netwatch(&["token", "create", "--name", "ci", "--role", "reader"]),
    );
    let reader = made["token"].as_str().unwrap().to_owned();
    let listed = json_of("token list", &nw.netwatch(&["token", "list"]));
    assert_eq!(listed[0]["name"], "ci", "{listed}");
    assert!(!listed.to_string().contains(&reader), "no token in the list: {listed}");
    let read = nw.netwatch_as(
        &reader,
        &["storage", "account", "list", "--query", "[].name", "-o", "tsv"],
    );
    assert_eq!(String::from_utf8_lossy(&read.stdout), "netwatchlocal\n");
    let refused = nw.netwatch_as(
        &reader,
        &["storage", "account", "create", "-n", "nope1", "-g", "netwatch"],
    );
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("AuthorizationFailed") && stderr.contains("needs the admin role"),
        "{stderr}"
    );
    assert_eq!(
        json_of("token revoke", &nw.netwatch(&["token", "revoke", "--name", "ci"])),
        Value::Null
    );
    let gone = nw.netwatch_as(&reader, &["storage", "account", "list"]);
    assert_eq!(gone.status.code(), Some(1), "{}", String::from_utf8_lossy(&gone.stderr));
    // No secret in the controller's log: tokens, storage keys.
    let log = std::fs::read_to_string(nw.dir.path().join("up.log")).unwrap();
    for secret in [reader.as_str(), nw.token.as_str(), "walk-secret"] {
        assert!(!log.contains(secret), "a secret in up.log");
    }

    let asked = SystemTime::now();
    let created = json_of(
        "packet-capture create",
        &nw.netwatch(&[
            "network",
            "watcher",
            "packet-capture",
            "create",
            "--resource-group",
            "rg1",
            "--vm",
            VM,
            "--name",
            "pc1",
            "--storage-account",
            "netwatchlocal",
            "--filters",
            &filters(),
        ]),
    );
    assert_eq!(keys(&created), CAPTURE_KEYS, "{created}");
    assert_eq!(
        (
            &created["name"],
            &created["provisioningState"],
            &created["target"],
            &created["resourceGroup"]
        ),
        (
            &json!("pc1"),
            &json!("Succeeded"),
            &json!(vm_id),
            &json!("NetworkWatcherRG")
        ),
        "{created}"
    );
    assert_eq!(created["filters"][1]["localPort"], "7501");
    assert_eq!(
        (
            &created["timeLimitInSeconds"],
            &created["totalBytesPerSession"],
            &created["bytesToCapturePerPacket"]
        ),
        (&json!(18000), &json!(1_073_741_824), &json!(0))
    );
    printed.push(("packet-capture create", created));

    let status = |nw: &Deployment| {
        json_of(
            "packet-capture show-status",
            &nw.netwatch(&[
                "network",
                "watcher",
                "packet-capture",
                "show-status",
                "--name",
                "pc1",
                "--location",
                "westus",
            ]),
        )
    };
    let running = status(nw);
    assert_eq!(running["packetCaptureStatus"], "Running", "{running}");
    // As the server sent it: Azure's form, and not before the create (issue 12).
    assert!(azure_time(&running["captureStartTime"]) >= asked, "{running}");
    printed.push(("packet-capture show-status", running));

    // Real traffic: 30 datagrams match (port 7501), 30 do not (7509).
    send_udp(&nw.pair, &[7501, 7509], 30, 120);

    let stop = nw.netwatch(&[
        "network",
        "watcher",
        "packet-capture",
        "stop",
        "--name",
        "pc1",
        "--location",
        "westus",
    ]);
    assert_eq!(
        json_of("packet-capture stop", &stop),
        Value::Null,
        "stop prints nothing, as az"
    );
    let stopped = status(nw);
    assert_eq!(
        (&stopped["packetCaptureStatus"], &stopped["stopReason"]),
        (&json!("Stopped"), &json!("ManualStop")),
        "{stopped}"
    );

    // download: through the controller, read back by tcpdump.
    let file = nw.dir.path().join("pc1.cap");
    let download = nw.netwatch(&[
        "network",
        "watcher",
        "packet-capture",
        "download",
        "--name",
        "pc1",
        "--location",
        "westus",
        "--output-file",
        file.to_str().unwrap(),
    ]);
    json_of("packet-capture download", &download);
    let packets = udp_packets(&file);
    assert_eq!(packets.len(), 30, "{packets:?}");
    assert!(packets.iter().all(|packet| packet.0 == 7501), "{packets:?}");
    assert_eq!(tcpdump_count(&file), 30);

    let one = json_of(
        "packet-capture show",
        &nw.netwatch(&[
            "network",
            "watcher",
            "packet-capture",
            "show",
            "--name",
            "pc1",
            "--location",
            "westus",
        ]),
    );
    assert_eq!(keys(&one), CAPTURE_KEYS, "{one}");
    printed.push(("packet-capture show", one));
    let listed = json_of(
        "packet-capture list",
        &nw.netwatch(&["network", "watcher", "packet-capture", "list", "--location", "westus"]),
    );
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    printed.push(("packet-capture list", listed));

    let delete = nw.netwatch(&[
        "network",
        "watcher",
        "packet-capture",
        "delete",
        "--name",
        "pc1",
        "--location",
        "westus",
    ]);
    assert_eq!(json_of("packet-capture delete", &delete), Value::Null);
    let listed = json_of(
        "packet-capture list",
        &nw.netwatch(&["network", "watcher", "packet-capture", "list", "--location", "westus"]),
    );
    assert_eq!(listed, json!([]));
    // The file outlives the capture resource.
    assert_eq!(udp_packets(&stored_file(nw)).len(), 30);
    printed
}

/// The one capture file in `netwatch up`'s local storage account.
fn stored_file(nw: &Deployment) -> PathBuf {
    fn find(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                find(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "cap") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    find(&nw.dir.path().join("up/storage"), &mut files);
    assert_eq!(files.len(), 1, "{files:?}");
    files.remove(0)
}

/// How many packets `tcpdump -r` reads from `file`.
fn tcpdump_count(file: &Path) -> usize {
    let output = std::process::Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(file)
        .output()
        .expect("run tcpdump (scripts/test.sh installs it)");
    assert!(
        output.status.success(),
        "tcpdump -r failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).lines().count()
}

/// The guide with Azure's own `az`, logged in to netwatch with a service
/// principal whose secret is the netwatch token; what each command printed.
fn guide_with_az(nw: &Deployment) -> Vec<(&'static str, Value)> {
    let mut printed = Vec::new();
    az_login(&nw.pair.b, &nw.dir.path().join("az"), &nw.ca, (&nw.url, &nw.token));

    let set = json_of(
        "az vm extension set",
        &nw.az(&[
            "vm",
            "extension",
            "set",
            "--resource-group",
            "rg1",
            "--vm-name",
            VM,
            "--publisher",
            "Microsoft.Azure.NetworkWatcher",
            "--name",
            "NetworkWatcherAgentLinux",
            "--version",
            "1.4",
        ]),
    );
    assert_eq!(set["provisioningState"], "Succeeded", "{set}");
    let shown = json_of(
        "az vm extension show",
        &nw.az(&[
            "vm",
            "extension",
            "show",
            "--resource-group",
            "rg1",
            "--vm-name",
            VM,
            "--name",
            "NetworkWatcherAgentLinux",
        ]),
    );
    assert_eq!(shown["provisioningState"], "Succeeded", "{shown}");
    printed.push(("vm extension show", shown));
    // Today's az has no `network watcher show`; `list` is its replacement.
    let watchers = json_of("az network watcher list", &nw.az(&["network", "watcher", "list"]));
    assert_eq!(watchers[0]["name"], "NetworkWatcher_westus", "{watchers}");
    let accounts = json_of("az storage account list", &nw.az(&["storage", "account", "list"]));
    assert_eq!(accounts[0]["name"], "netwatchlocal", "{accounts}");
    printed.push(("storage account list", accounts));
    let made = json_of(
        "az storage account create",
        &nw.az(&[
            "storage",
            "account",
            "create",
            "-n",
            "azmade",
            "-g",
            "netwatch",
            "-l",
            "westus",
            "--sku",
            "Standard_LRS",
        ]),
    );
    assert_eq!(made["name"], "azmade", "{made}");
    printed.push(("storage account create", made));
    let shown = json_of(
        "az storage account show",
        &nw.az(&["storage", "account", "show", "-n", "azmade", "-g", "netwatch"]),
    );
    assert_eq!(shown["provisioningState"], "Succeeded", "{shown}");
    let deleted = nw.az(&[
        "storage", "account", "delete", "-n", "azmade", "-g", "netwatch", "--yes",
    ]);
    assert_eq!(json_of("az storage account delete", &deleted), Value::Null);

    let created = json_of(
        "az packet-capture create",
        &nw.az(&[
            "network",
            "watcher",
            "packet-capture",
            "create",
            "--resource-group",
            "rg1",
            "--vm",
            VM,
            "--name",
            "az1",
            "--storage-account",
            "netwatchlocal",
            "--filters",
            &filters(),
        ]),
    );
    assert_eq!(keys(&created), CAPTURE_KEYS, "{created}");
    printed.push(("packet-capture create", created));
    let status = |nw: &Deployment| {
        json_of(
            "az packet-capture show-status",
            &nw.az(&[
                "network",
                "watcher",
                "packet-capture",
                "show-status",
                "--name",
                "az1",
                "--location",
                "westus",
            ]),
        )
    };
    let running = status(nw);
    assert_eq!(running["packetCaptureStatus"], "Running", "{running}");
    printed.push(("packet-capture show-status", running));
    send_udp(&nw.pair, &[7501], 10, 120);
    let stop = nw.az(&[
        "network",
        "watcher",
        "packet-capture",
        "stop",
        "--name",
        "az1",
        "--location",
        "westus",
    ]);
    assert_eq!(json_of("az packet-capture stop", &stop), Value::Null);
    let stopped = status(nw);
    assert_eq!(
        (&stopped["packetCaptureStatus"], &stopped["stopReason"]),
        (&json!("Stopped"), &json!("ManualStop")),
        "{stopped}"
    );
    let one = json_of(
        "az packet-capture show",
        &nw.az(&[
            "network",
            "watcher",
            "packet-capture",
            "show",
            "--name",
            "az1",
            "--location",
            "westus",
        ]),
    );
    printed.push(("packet-capture show", one));
    let listed = json_of(
        "az packet-capture list",
        &nw.az(&["network", "watcher", "packet-capture", "list", "--location", "westus"]),
    );
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    printed.push(("packet-capture list", listed));
    let delete = nw.az(&[
        "network",
        "watcher",
        "packet-capture",
        "delete",
        "--name",
        "az1",
        "--location",
        "westus",
    ]);
    assert_eq!(json_of("az packet-capture delete", &delete), Value::Null);
    let listed = json_of(
        "az packet-capture list",
        &nw.az(&["network", "watcher", "packet-capture", "list", "--location", "westus"]),
    );
    assert_eq!(listed, json!([]));
    printed
}

#[test]
fn the_guide_works_with_netwatch_and_with_az_and_both_print_the_same() {
    let mut nw = Deployment::controller_only();
    let ours = guide_with_netwatch(&mut nw);
    let azs = guide_with_az(&nw);
    // The same commands print the same keys, nested the same way. The
    // status's `netwatch` extras are ours alone (az drops what its schema
    // does not know), so they are left out of the comparison.
    let ours_only = |key: &String| !key.split(['.', '[', ']']).any(|segment| segment == "netwatch");
    for ((what, mine), (_, theirs)) in ours.iter().zip(&azs) {
        let mine: Vec<String> = shape(mine).into_iter().filter(ours_only).collect();
        let theirs: Vec<String> = shape(theirs).into_iter().filter(ours_only).collect();
        assert_eq!(mine, theirs, "{what}: netwatch and az print different shapes");
    }
    assert_eq!(ours.len(), azs.len());
    same_outputs_as_az(&nw);
}

/// The output formats and `--query` on real outputs: netwatch prints, byte
/// for byte, what az prints for the same resources.
fn same_outputs_as_az(nw: &Deployment) {
    let created = nw.netwatch(&[
        "network",
        "watcher",
        "packet-capture",
        "create",
        "-g",
        "rg1",
        "--vm",
        VM,
        "-n",
        "fmt1",
        "--storage-account",
        "netwatchlocal",
        "--time-limit",
        "600",
        "--capture-size",
        "96",
        "--filters",
        &filters(),
        "-o",
        "none",
    ]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let list = ["network", "watcher", "packet-capture", "list", "--location", "westus"];
    let watchers = ["network", "watcher", "list"];
    let extension = [
        "vm",
        "extension",
        "show",
        "-g",
        "rg1",
        "--vm-name",
        VM,
        "-n",
        "NetworkWatcherAgentLinux",
    ];
    let cases: Vec<Vec<&str>> = vec![
        [&list[..], &["-o", "json"]].concat(),
        [&list[..], &["-o", "table"]].concat(),
        [&list[..], &["-o", "tsv"]].concat(),
        [&list[..], &["-o", "yaml"]].concat(),
        [
            &list[..],
            &[
                "--query",
                "[].{Name:name, Bytes:totalBytesPerSession, Snap:bytesToCapturePerPacket}",
                "-o",
                "table",
            ],
        ]
        .concat(),
        [
            &list[..],
            &["--query", "[0].filters[?protocol=='UDP'].localPort", "-o", "tsv"],
        ]
        .concat(),
        [&watchers[..], &["-o", "table"]].concat(),
        [&watchers[..], &["-o", "yaml"]].concat(),
        [&watchers[..], &["--query", "[].{name:name, location:location}"]].concat(),
        [&extension[..], &["-o", "table"]].concat(),
        [
            &extension[..],
            &["--query", "{state:provisioningState, publisher:publisher}", "-o", "tsv"],
        ]
        .concat(),
    ];
    for args in cases {
        let ours = nw.netwatch(&args);
        let theirs = nw.az(&args);
        assert!(
            ours.status.success(),
            "netwatch {args:?}: {}",
            String::from_utf8_lossy(&ours.stderr)
        );
        assert!(
            theirs.status.success(),
            "az {args:?}: {}",
            String::from_utf8_lossy(&theirs.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "netwatch and az print {args:?} differently"
        );
        assert!(!ours.stdout.is_empty(), "{args:?} printed nothing");
    }
    let deleted = nw.netwatch(&[
        "network",
        "watcher",
        "packet-capture",
        "delete",
        "-n",
        "fmt1",
        "-l",
        "westus",
    ]);
    assert!(deleted.status.success());
}
