//! The agent as a system service (issue 14, "Least privilege"):
//! `packaging/netwatch-agent.service` passes `systemd-analyze verify`, scores
//! 2.0 or lower with `systemd-analyze security`, and its `ExecStart` (the
//! agent with a config file) captures real traffic end to end when run as the
//! unit runs it: an unprivileged user holding only the unit's capabilities,
//! with no new privileges (setpriv; CI has no systemd to start units).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use netwatch_testkit::{IF_A, NetnsPair};
use serde_json::json;

use crate::deployment::{Deployment, Guard, send_udp, udp_packets};
use crate::util::netwatch;

/// The unprivileged user the test runs the agent as (`nobody`).
const USER: &str = "65534";

fn unit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/netwatch-agent.service")
}

/// The unit with its `ExecStart` binary replaced by `binary` (verify checks
/// that the program exists).
fn unit_with(binary: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit()).expect("packaging/netwatch-agent.service is there");
    let path = dir.join("netwatch-agent.service");
    std::fs::write(
        &path,
        text.replace("/usr/local/bin/netwatch", &binary.display().to_string()),
    )
    .unwrap();
    path
}

/// A `Key=value` of the unit, all of them for a key given more than once.
fn unit_values(key: &str) -> Vec<String> {
    std::fs::read_to_string(unit())
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_unit_verifies_and_scores_ok_with_systemd_analyze() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with(Path::new(netwatch()), dir.path());
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs (apt-get install -y systemd)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = netwatch_testkit::run(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit),
    );
    let text = String::from_utf8_lossy(&security.stdout);
    let score: f64 = text
        .lines()
        .find_map(|line| line.split("netwatch-agent.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score <= 2.0, "exposure {score} (goal 2.0 or lower):\n{text}");
    assert_eq!(unit_values("AmbientCapabilities"), ["CAP_NET_RAW CAP_SYS_NICE"]);
}

#[test]
fn the_units_agent_captures_as_an_unprivileged_user_with_only_its_capabilities() {
    let mut nw = Deployment::controller_only();
    // The unit's data: a directory the service's user owns (StateDirectory).
    let data = nw.dir.path().join("state");
    std::fs::create_dir_all(&data).unwrap();
    netwatch_testkit::run(Command::new("chown").args([&format!("{USER}:{USER}")]).arg(&data));
    // The user must read the CA and the config, and reach them.
    for path in [nw.dir.path(), &nw.dir.path().join("up")] {
        netwatch_testkit::run(Command::new("chmod").arg("o+x").arg(path));
    }
    netwatch_testkit::run(Command::new("chmod").arg("o+r").arg(&nw.ca));
    let config = nw.dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "server = \"{}\"\nca = \"{}\"\nenroll_token = \"{}\"\nvm_name = \"{}\"\nresource_group = \"rg1\"\n\
             location = \"westus\"\ninterface = \"{IF_A}\"\ndata_dir = \"{}\"\n",
            nw.url,
            nw.ca.display(),
            nw.credential("agent_token"),
            crate::deployment::VM,
            data.display()
        ),
    )
    .unwrap();
    netwatch_testkit::run(Command::new("chmod").arg("o+r").arg(&config));
    // ExecStart, as the unit starts it: its user, its two capabilities
    // (ambient, and nothing else in the bounding set), no new privileges.
    let exec_start = unit_values("ExecStart");
    assert_eq!(
        exec_start,
        ["/usr/local/bin/netwatch agent --config /etc/netwatch/agent.toml"]
    );
    let agent = NetnsPair::exec(&nw.pair.a, "setpriv")
        .args([
            &format!("--reuid={USER}"),
            &format!("--regid={USER}"),
            "--clear-groups",
            "--inh-caps=-all,+net_raw,+sys_nice",
            "--ambient-caps=+net_raw,+sys_nice",
            "--bounding-set=-all,+net_raw,+sys_nice",
            "--no-new-privs",
            "--",
        ])
        .arg(netwatch())
        .args(["agent", "--config"])
        .arg(&config)
        .env_remove("NETWATCH_ENROLL_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(nw.dir.path().join("agent.log")).unwrap(),
        ))
        .spawn()
        .expect("setpriv (util-linux) runs");
    nw.agent = Some(Guard(agent));
    nw.wait_for_agent();
    let log = std::fs::read_to_string(nw.dir.path().join("agent.log")).unwrap_or_default();
    assert!(log.contains("this agent can capture"), "{log}");

    nw.create(
        "service",
        json!({"filters": [{"protocol": "UDP", "localPort": "7401"}], "timeLimitInSeconds": 120}),
    );
    send_udp(&nw.pair, &[7401, 7409], 20, 100);
    nw.status_until("service", "counting", |s| s["netwatch"]["packetsCaptured"] == 20);
    nw.sdk(&["stop", "service"]);
    let capture = nw.sdk(&["get", "service"]);
    let file = nw.download(&capture);
    let packets = udp_packets(&file);
    assert_eq!(packets.len(), 20, "{packets:?}");
    assert!(packets.iter().all(|p| p.0 == 7401), "{packets:?}");
    // What it keeps belongs to its user: nothing it made needed root.
    let owner = netwatch_testkit::run(Command::new("stat").args(["-c", "%u"]).arg(data.join("host-id")));
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), USER);
}
