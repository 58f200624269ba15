//! The Debian package (issue 14): `scripts/package.sh` packages the test build of
//! the binary, and the package installs with `dpkg -i`, runs (`--version`, a real
//! capture in a network namespace), leaves the agent's unit disabled, keeps its
//! config on `dpkg -r` and leaves nothing behind on `dpkg --purge`.
//!
//! dpkg's database is the host's, so this is the only test that installs a
//! package; it refuses to start where `netwatch` is installed already, and a guard
//! purges the package however the test ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use netwatch_testkit::{A4, B4, Frame, IF_A, IF_B, NOBODY_MAC, NetnsPair, Proto, read_pcap};

use crate::util::netwatch;

const PACKAGE: &str = "netwatch";
const USER: &str = "netwatch-agent";
const BINARY: &str = "/usr/bin/netwatch";
const UNIT: &str = "/lib/systemd/system/netwatch-agent.service";
const CONFIG: &str = "/etc/netwatch/agent.toml";
/// Where `systemctl enable netwatch-agent` puts its link (`WantedBy=multi-user.target`).
const WANTS_DIR: &str = "/etc/systemd/system/multi-user.target.wants";
const WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/netwatch-agent.service";
/// Where the paths the package (or its service) may leave are looked for.
const SEARCHED: [&str; 3] = ["/etc", "/usr", "/var/lib"];

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/package.sh")
}

/// Fails, saying what to install, when `tool` is not on the PATH.
fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "this test needs `{tool}`: apt-get install -y {package}");
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `program ARGS`, which must succeed; its standard output.
fn run(program: &str, args: &[&str]) -> String {
    stdout(&netwatch_testkit::run(Command::new(program).args(args)))
}

/// Runs `program ARGS` and says whether it succeeded.
fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
        .success()
}

/// Every path under [`SEARCHED`] whose name mentions netwatch, sorted.
fn ours_on_disk() -> Vec<String> {
    let out = Command::new("find")
        .args(SEARCHED)
        .args(["-xdev", "-name", "*netwatch*"])
        .output()
        .expect("find runs");
    let mut paths: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    paths.sort();
    paths
}

/// The agent refusing `config` for want of a controller: the file was read and
/// every key in it is one the agent takes (it refuses unknown keys).
fn assert_config_accepted(agent: &mut Command, config: &Path) {
    let out = agent
        .args(["agent", "--config"])
        .arg(config)
        .env_remove("NETWATCH_URL")
        .env_remove("NETWATCH_ENROLL_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("netwatch agent runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no controller to connect to"),
        "netwatch agent --config {}: {}\n{stderr}",
        config.display(),
        out.status
    );
}

/// Purges the package however the test ends, and takes back the enablement link
/// the test made.
#[derive(Debug)]
struct Purge {
    made_wants_dir: bool,
}

impl Drop for Purge {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("dpkg").args(["--purge", PACKAGE]).output()
            && !out.status.success()
        {
            eprintln!(
                "dpkg --purge {PACKAGE} failed: {}{}",
                stdout(&out),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if std::fs::read_link(WANTS_LINK).is_ok_and(|target| target == Path::new(UNIT)) {
            let _ = std::fs::remove_file(WANTS_LINK);
        }
        if self.made_wants_dir {
            let _ = std::fs::remove_dir(WANTS_DIR);
        }
    }
}

/// `/usr/bin/netwatch capture` as installed, in namespace `b` of a fresh pair:
/// one ICMP and five UDP frames sent from `a`, a UDP filter and a count of five.
/// The capture stops by itself and its file holds exactly the UDP frames.
fn capture_with_the_installed_binary(dir: &Path) {
    let pair = NetnsPair::new();
    let file = dir.join("installed.pcap");
    let log = dir.join("installed-capture.log");
    let mut child = NetnsPair::exec(&pair.b, BINARY)
        .args(["capture", "-i", IF_B, "-w"])
        .arg(&file)
        .args([
            "--filters",
            r#"[{"protocol":"UDP"}]"#,
            "--count",
            "5",
            "--time-limit",
            "30",
            "--ring-blocks",
            "4",
            "--ring-block-size",
            "64KiB",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn /usr/bin/netwatch capture");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let listening =
        netwatch_testkit::eventually(200, Duration::from_millis(50), || log_text().contains("listening on"));
    if !listening {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{BINARY} capture not listening after 10 s:\n{}", log_text());
    }

    let mac_a = NetnsPair::mac(&pair.a, IF_A);
    let frame = |proto| {
        Frame {
            src_mac: mac_a,
            dst_mac: NOBODY_MAC,
            src: A4[0],
            dst: B4,
            proto,
            payload: b"netwatch package test frame ..............................",
        }
        .build()
    };
    let udp: Vec<Vec<u8>> = (0..5).map(|i| frame(Proto::Udp(40000 + i, 7400))).collect();
    let mut sent = vec![frame(Proto::Icmp)];
    sent.extend(udp.iter().cloned());
    NetnsPair::inject(&pair.a, IF_A, &sent);

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{BINARY} capture --count 5 still running after 20 s:\n{}", log_text());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{BINARY} capture: {status}\n{}", log_text());
    let packets: Vec<Vec<u8>> = read_pcap(&file).1.into_iter().map(|p| p.data).collect();
    assert_eq!(packets, udp, "the installed binary's capture:\n{}", log_text());
}

#[test]
fn the_only_test_installing_a_package_dpkg_installs_runs_and_purges_netwatch_leaving_nothing() {
    netwatch_testkit::require_root();
    // Test hosts (tests/install.rs) copy /etc: not while the package is in.
    let _system = crate::util::SYSTEM_FILES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (tool, package) in [
        ("dpkg-deb", "dpkg"),
        ("objcopy", "binutils"),
        ("readelf", "binutils"),
        ("useradd", "passwd"),
        ("setpriv", "util-linux"),
        ("python3", "python3"),
    ] {
        need(tool, package);
    }
    assert!(
        !succeeds("dpkg", &["-s", PACKAGE]),
        "the package {PACKAGE} is installed on this host already; this test installs and purges it: \
         remove it first (dpkg --purge {PACKAGE})"
    );
    for path in ["/etc/netwatch", "/var/lib/netwatch", WANTS_LINK] {
        assert!(
            std::fs::symlink_metadata(path).is_err(),
            "{path} exists already; this test's purge would remove it: move it away first"
        );
    }
    assert!(
        !succeeds("getent", &["passwd", USER]) && !succeeds("getent", &["group", USER]),
        "the user or group {USER} exists already; this test's purge would remove it"
    );
    let before = ours_on_disk();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");

    // Built from the test's binary, named and described as dpkg wants.
    let built = Instant::now();
    let printed = stdout(&netwatch_testkit::run(
        Command::new("bash")
            .arg(script())
            .args(["--binary", netwatch(), "--out"])
            .arg(&out),
    ));
    eprintln!("scripts/package.sh took {:?}", built.elapsed());
    let version = env!("CARGO_PKG_VERSION");
    let arch = run("dpkg", &["--print-architecture"]).trim().to_owned();
    let deb = out.join(format!("netwatch_{version}_{arch}.deb"));
    assert_eq!(printed.lines().last(), Some(deb.to_str().unwrap()), "{printed}");
    let deb = deb.to_str().unwrap();
    let info = run("dpkg-deb", &["--info", deb]);
    for line in [
        "Package: netwatch".to_owned(),
        format!("Version: {version}"),
        format!("Architecture: {arch}"),
        "Maintainer: netwatch developers <netwatch@localhost>".to_owned(),
        "Section: net".to_owned(),
        "Installed-Size: ".to_owned(),
        "Description: ".to_owned(),
    ] {
        assert!(
            info.lines().any(|l| l.trim_start().starts_with(&line)),
            "no {line:?} in:\n{info}"
        );
    }
    assert!(
        !info.contains("Depends:"),
        "the package needs nothing beyond essential ones:\n{info}"
    );
    let contents = run("dpkg-deb", &["--contents", deb]);
    for (mode, path) in [
        ("-rwxr-xr-x root/root", BINARY),
        ("-rw-r--r-- root/root", UNIT),
        ("-rw-r----- root/root", CONFIG),
        ("-rw-r--r-- root/root", "/usr/share/doc/netwatch/copyright"),
        ("-rw-r--r-- root/root", "/usr/share/doc/netwatch/changelog.Debian.gz"),
        ("-rw-r--r-- root/root", "/usr/share/doc/netwatch/netwatch-help.txt"),
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(&format!(" .{path}"))),
            "no {mode} .{path} in:\n{contents}"
        );
    }

    // What is inside, unpacked without installing.
    let raw = dir.path().join("raw");
    run("dpkg-deb", &["--raw-extract", deb, raw.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(raw.join("DEBIAN/conffiles")).unwrap(),
        format!("{CONFIG}\n")
    );
    let sections = |path: &Path| run("readelf", &["-S", "-W", path.to_str().unwrap()]);
    assert!(
        sections(Path::new(netwatch())).contains(".symtab"),
        "the test binary has symbols"
    );
    let packaged = sections(&raw.join("usr/bin/netwatch"));
    assert!(
        [".symtab", ".debug_info", ".debug_line"]
            .iter()
            .all(|section| !packaged.contains(section)),
        "the packaged binary is not stripped:\n{packaged}"
    );
    let unit = std::fs::read_to_string(raw.join(UNIT.trim_start_matches('/'))).unwrap();
    assert!(!unit.contains("/usr/local/bin"), "{unit}");
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/bin/netwatch agent --config /etc/netwatch/agent.toml"),
        "{unit}"
    );
    let help = std::fs::read_to_string(raw.join("usr/share/doc/netwatch/netwatch-help.txt")).unwrap();
    for usage in [
        "Usage: netwatch <COMMAND>",
        "Usage: netwatch agent",
        "Usage: netwatch capture",
    ] {
        assert!(help.contains(usage), "no {usage:?} in netwatch-help.txt:\n{help}");
    }
    // The default config, and the same with every commented setting but `server`
    // switched on: the agent takes all of them.
    let config = raw.join(CONFIG.trim_start_matches('/'));
    assert_config_accepted(&mut Command::new(netwatch()), &config);
    let all_on: String = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("#server"))
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => format!("{rest}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    for key in [
        "enroll_token",
        "ca",
        "vm_name",
        "resource_group",
        "location",
        "data_dir",
        "interface",
        "spool_max_mib",
        "[tags]",
    ] {
        assert!(
            all_on.lines().any(|l| l.starts_with(key)),
            "no {key} in the config:\n{all_on}"
        );
    }
    let all_on_path = dir.path().join("all-on.toml");
    std::fs::write(&all_on_path, &all_on).unwrap();
    assert_config_accepted(&mut Command::new(netwatch()), &all_on_path);

    // Installed: its user, its config readable by that user, the unit disabled.
    let mut guard = Purge { made_wants_dir: false };
    let installed = run("dpkg", &["-i", deb]);
    assert!(
        installed.contains("systemctl enable --now netwatch-agent"),
        "postinst says how to enable the agent:\n{installed}"
    );
    // Again, over itself: the scripts are idempotent.
    run("dpkg", &["-i", deb]);
    assert!(run("dpkg", &["-s", PACKAGE]).contains("Status: install ok installed"));
    assert_eq!(run(BINARY, &["--version"]).trim(), format!("netwatch {version}"));
    let passwd = run("getent", &["passwd", USER]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields.len(), 7, "{passwd}");
    assert!(
        fields[2].parse::<u32>().unwrap() < 1000,
        "{USER} is a system user: {passwd}"
    );
    assert_eq!(fields[5..], ["/var/lib/netwatch", "/usr/sbin/nologin"], "{passwd}");
    assert!(succeeds("getent", &["group", USER]));
    assert_eq!(
        run("stat", &["-c", "%a %U %G", CONFIG]).trim(),
        format!("640 root {USER}")
    );
    assert_config_accepted(
        Command::new("setpriv").args([
            &format!("--reuid={USER}"),
            &format!("--regid={USER}"),
            "--clear-groups",
            "--",
            BINARY,
        ]),
        Path::new(CONFIG),
    );
    assert!(
        std::fs::symlink_metadata(WANTS_LINK).is_err(),
        "the unit is enabled after install: {WANTS_LINK}"
    );
    let enabled = run("find", &["/etc/systemd", "-name", "netwatch-agent*"]);
    assert!(
        enabled.trim().is_empty(),
        "the unit is enabled after install:\n{enabled}"
    );
    capture_with_the_installed_binary(dir.path());

    // What a host running the agent has besides the package's files: the unit
    // enabled (as `systemctl enable` does), the agent's data, an edited config.
    guard.made_wants_dir = !Path::new(WANTS_DIR).exists();
    std::fs::create_dir_all(WANTS_DIR).unwrap();
    std::os::unix::fs::symlink(UNIT, WANTS_LINK).unwrap();
    std::fs::create_dir_all("/var/lib/netwatch/agent").unwrap();
    std::fs::write("/var/lib/netwatch/agent/host-id", "test\n").unwrap();
    let mut edited = std::fs::read_to_string(CONFIG).unwrap();
    edited.push_str("# edited by the test\n");
    std::fs::write(CONFIG, &edited).unwrap();

    // Removed: the program and the unit go, the edited config and the data stay.
    run("dpkg", &["-r", PACKAGE]);
    assert!(run("dpkg", &["-s", PACKAGE]).contains("Status: deinstall ok config-files"));
    for gone in [BINARY, UNIT, "/usr/share/doc/netwatch"] {
        assert!(!Path::new(gone).exists(), "{gone} is still there after dpkg -r");
    }
    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        edited,
        "dpkg -r keeps the conffile"
    );
    assert!(Path::new("/var/lib/netwatch/agent/host-id").exists());

    // Purged: nothing of it is left.
    run("dpkg", &["--purge", PACKAGE]);
    assert!(
        !succeeds("dpkg", &["-s", PACKAGE]),
        "dpkg still knows {PACKAGE} after the purge"
    );
    for path in [BINARY, UNIT, CONFIG] {
        assert!(
            !succeeds("dpkg", &["-S", path]),
            "dpkg -S {path} still finds it after the purge"
        );
    }
    for gone in ["/etc/netwatch", "/var/lib/netwatch", WANTS_LINK] {
        assert!(
            std::fs::symlink_metadata(gone).is_err(),
            "{gone} is still there after dpkg --purge"
        );
    }
    assert!(
        !succeeds("getent", &["passwd", USER]) && !succeeds("getent", &["group", USER]),
        "the user or group {USER} is still there after dpkg --purge"
    );
    assert_eq!(ours_on_disk(), before, "left under {SEARCHED:?} after dpkg --purge");
}
