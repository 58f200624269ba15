//! Live views (issue 18): a running capture's packets, piped as a user
//! would (`netwatch network watcher packet-capture stream … -w - | tshark -r -`),
//! against `netwatch up` in namespace b and an agent in a, with real traffic.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etherparse::{SlicedPacket, TransportSlice};
use netwatch_testkit::{A4, NetnsPair, read_pcap};
use serde_json::json;

use crate::deployment::Deployment;
use crate::util::netwatch;

/// `netwatch … stream --name NAME -w -` in b, piped into `consumer` (a shell
/// command reading standard input); the pipeline, its standard output read
/// line by line with the time each line came, and its standard error.
struct Pipeline {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    stderr_path: std::path::PathBuf,
}

impl Pipeline {
    fn start(d: &Deployment, name: &str, consumer: &str) -> Pipeline {
        Pipeline::start_as(d, name, consumer, None)
    }

    /// [`Pipeline::start`] with `token` instead of the admin's.
    fn start_as(d: &Deployment, name: &str, consumer: &str, token: Option<&str>) -> Pipeline {
        let stderr_path = d.dir.path().join(format!("stream-{name}.err"));
        let script = format!(
            "{} network watcher packet-capture stream --name {name} --location westus -w - 2>{} | {consumer}",
            netwatch(),
            stderr_path.display()
        );
        let mut command = NetnsPair::exec(&d.pair.b, "sh");
        command
            .args(["-c", &script])
            .env("XDG_CONFIG_HOME", d.dir.path().join("config"));
        if let Some(token) = token {
            command.env("NETWATCH_TOKEN", token);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the stream pipeline");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Pipeline {
            child,
            lines,
            stderr_path,
        }
    }

    fn lines(&self) -> Vec<(Instant, String)> {
        self.lines.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits (30 s at most) for the pipeline to end.
    fn wait(&mut self, d: &Deployment) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the stream did not end within 30 s of the capture's stop; stderr:\n{}\n{}",
                self.stderr(),
                d.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `netwatch ARGS` in b as the deployment's admin (its client file); what it printed.
fn cli(d: &Deployment, args: &[&str]) -> std::process::Output {
    NetnsPair::exec(&d.pair.b, netwatch())
        .args(args)
        .env("XDG_CONFIG_HOME", d.dir.path().join("config"))
        .stdin(Stdio::null())
        .output()
        .expect("run netwatch")
}

/// `packet-capture stream --name NAME -l westus` to standard output, in b.
fn stream_named(d: &Deployment, name: &str) -> std::process::Output {
    cli(
        d,
        &[
            "network",
            "watcher",
            "packet-capture",
            "stream",
            "--name",
            name,
            "-l",
            "westus",
        ],
    )
}

/// Waits until host-a's agent says it is sending a live view.
fn wait_for_view(d: &Deployment, views: usize) {
    let started = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
        std::fs::read_to_string(d.dir.path().join("agent.log"))
            .unwrap_or_default()
            .matches("live view started")
            .count()
            >= views
    });
    assert!(
        started,
        "the agent did not start the live view within 10 s\n{}",
        d.logs()
    );
    // The view starts at the file's end: let it get there.
    std::thread::sleep(Duration::from_millis(300));
}

/// One UDP datagram from b to host-a's port `port`, `size` bytes.
fn send_one(d: &Deployment, port: u16, size: usize) {
    let program = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'l' * {size}, ('{}', {port}))\n",
        A4[0]
    );
    netwatch_testkit::run(NetnsPair::exec(&d.pair.b, "python3").args(["-c", &program]));
}

/// `count` datagrams from b to host-a's `port`, as fast as Python sends them.
fn send_burst(d: &Deployment, port: u16, count: usize, size: usize) {
    let program = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for i in range({count}):\n    s.sendto(b'b' * {size}, ('{}', {port}))\n",
        A4[0]
    );
    netwatch_testkit::run(NetnsPair::exec(&d.pair.b, "python3").args(["-c", &program]));
}

/// The stored file's UDP packets as `(ns timestamp, destination port, length)`.
fn stored_udp(path: &std::path::Path) -> Vec<(u64, u16, u32)> {
    let (_, packets) = read_pcap(path);
    packets
        .iter()
        .filter_map(|packet| {
            let sliced = SlicedPacket::from_ethernet(&packet.data).ok()?;
            let Some(TransportSlice::Udp(udp)) = sliced.transport else {
                return None;
            };
            let ns = u64::try_from(packet.timestamp.as_nanos()).ok()?;
            Some((ns, udp.destination_port(), packet.orig_len))
        })
        .collect()
}

/// tshark's lines `epoch.nanos<TAB>port<TAB>frame length` as the same triples.
fn tshark_udp(lines: &[(Instant, String)]) -> Vec<(u64, u16, u32)> {
    lines
        .iter()
        .filter_map(|(_, line)| {
            let mut fields = line.split('\t');
            let time = fields.next()?;
            let port = fields.next()?.parse().ok()?;
            let len = fields.next()?.parse().ok()?;
            let (secs, frac) = time.split_once('.')?;
            let frac = format!("{frac:0<9}");
            let ns = secs.parse::<u64>().ok()? * 1_000_000_000 + frac[..9].parse::<u64>().ok()?;
            Some((ns, port, len))
        })
        .collect()
}

const TSHARK: &str = "tshark -l -n -r - -T fields -e frame.time_epoch -e udp.dstport -e frame.len -Y udp";

#[test]
fn a_running_capture_streams_into_tshark_within_a_second_and_equals_its_file() {
    let d = Deployment::start();
    let created = d.create(
        "live1",
        json!({"timeLimitInSeconds": 120, "filters": [{"protocol": "UDP"}]}),
    );
    assert_eq!(created["properties"]["provisioningState"], "Succeeded", "{created}");
    let mut pipeline = Pipeline::start(&d, "live1", TSHARK);
    wait_for_view(&d, 1);

    // One datagram at a time: each reaches tshark within a second.
    let mut latencies = Vec::new();
    for port in 41001..=41005_u16 {
        let sent = Instant::now();
        send_one(&d, port, 200);
        let seen = netwatch_testkit::eventually(100, Duration::from_millis(10), || {
            pipeline
                .lines()
                .iter()
                .any(|(_, line)| line.contains(&format!("\t{port}\t")))
        });
        assert!(
            seen,
            "port {port}'s datagram did not reach tshark within a second\n{}\n{}",
            pipeline.stderr(),
            d.logs()
        );
        let at = pipeline
            .lines()
            .iter()
            .find(|(_, line)| line.contains(&format!("\t{port}\t")))
            .map(|(at, _)| *at)
            .unwrap();
        latencies.push(at.saturating_duration_since(sent));
        std::thread::sleep(Duration::from_millis(100));
    }
    let worst = latencies.iter().max().unwrap();
    assert!(*worst < Duration::from_secs(1), "latencies {latencies:?}");
    eprintln!("live view: sent → tshark printed, worst of 5: {worst:?} ({latencies:?})");
    send_burst(&d, 41010, 500, 100);
    std::thread::sleep(Duration::from_millis(500));

    // Stopped: the view ends, and says what it showed.
    d.sdk(&["stop", "live1"]);
    pipeline.wait(&d);
    let summary = pipeline.stderr();
    assert!(summary.contains("live view of live1: 505 packets"), "{summary}");

    // Exactly the stored file's packets, timestamps and lengths included.
    let capture = d.sdk(&["get", "live1"]);
    let file = d.download(&capture);
    let stored: Vec<_> = stored_udp(&file)
        .into_iter()
        .filter(|(_, port, _)| (41001..=41010).contains(port))
        .collect();
    let streamed = tshark_udp(&pipeline.lines());
    assert_eq!(
        stored.len(),
        505,
        "the stored file has {} of the 505 datagrams",
        stored.len()
    );
    assert_eq!(streamed, stored, "the live view differs from the stored file");

    // A stopped capture cannot be watched: its file is stored.
    let late = stream_named(&d, "live1");
    let text = String::from_utf8_lossy(&late.stderr);
    assert_eq!(late.status.code(), Some(1), "{text}");
    assert!(
        text.contains("live1 is Stopped: only a running capture can be watched live"),
        "{text}"
    );
}

#[test]
fn a_slow_reader_loses_view_packets_counted_and_the_file_stays_exact() {
    let d = Deployment::start();
    d.create(
        "live2",
        json!({"timeLimitInSeconds": 120, "filters": [{"protocol": "UDP", "localPort": "42000"}]}),
    );
    // The reader takes nothing for 8 s (a paused pipe), then reads it all.
    let out = d.dir.path().join("slow.pcapng");
    let consumer = format!("(sleep 8; cat > {})", out.display());
    let mut pipeline = Pipeline::start(&d, "live2", &consumer);
    wait_for_view(&d, 1);
    let sent = 60_000;
    send_burst(&d, 42000, sent, 1000);
    std::thread::sleep(Duration::from_secs(9));
    d.sdk(&["stop", "live2"]);
    pipeline.wait(&d);
    let summary = pipeline.stderr();
    let shown: u64 = number_before(&summary, " packets");
    let dropped: u64 = number_before(&summary, " not shown");
    assert!(dropped > 0, "a reader paused for 8 s lost nothing: {summary}");
    assert_eq!(shown + dropped, sent as u64, "{summary}");
    // What the reader got is a pcapng tshark reads, with the packets it says.
    let read = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&out)
        .args(["-Y", "udp.dstport == 42000", "-T", "fields", "-e", "frame.number"])
        .output()
        .expect("tshark runs");
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let lines = String::from_utf8_lossy(&read.stdout).lines().count() as u64;
    assert_eq!(lines, shown, "{summary}");
    // The stored file has every datagram.
    let capture = d.sdk(&["get", "live2"]);
    let file = d.download(&capture);
    let stored = stored_udp(&file).iter().filter(|(_, port, _)| *port == 42000).count();
    assert_eq!(stored, sent, "the stored file lost packets to a slow viewer");
    eprintln!("slow reader: {shown} shown, {dropped} not shown, {stored} stored of {sent} sent");
}

/// The number right before `marker` in `text` (`… 505 packets …`).
fn number_before(text: &str, marker: &str) -> u64 {
    let end = text.find(marker).unwrap_or_else(|| panic!("no {marker:?} in {text:?}"));
    let digits: String = text[..end]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number before {marker:?} in {text:?}"))
}

/// `netwatch` as Wireshark runs an extcap: listing, its link type, its
/// (empty) configuration, then a capture into a fifo that tshark reads; and
/// as tshark itself finds it in its extcap folder.
#[test]
fn the_extcap_interface_lists_running_captures_and_streams_into_a_fifo() {
    let d = Deployment::start();
    d.create(
        "live3",
        json!({"timeLimitInSeconds": 120, "filters": [{"protocol": "UDP"}]}),
    );
    let extcap = |args: &[&str]| cli(&d, args);
    let listed = extcap(&["--extcap-interfaces", "--extcap-version=4.0"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert!(text.starts_with("extcap {version="), "{text}");
    assert!(
        text.contains("interface {value=netwatch_westus_live3}{display=netwatch: live3 on host-a (westus)}"),
        "{text}\n{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let interface = "netwatch_westus_live3";
    for _ in 0..2 {
        let config = extcap(&["--extcap-config", "--extcap-interface", interface]);
        assert!(config.status.success() && config.stdout.is_empty(), "{config:?}");
    }
    let dlts = extcap(&["--extcap-dlts", "--extcap-interface", interface]);
    assert!(
        String::from_utf8_lossy(&dlts.stdout).starts_with("dlt {number=1}"),
        "{dlts:?}"
    );

    // Bad calls: what is wrong, exit 2, nothing started.
    for (args, says) in [
        (vec!["--extcap-dlts"], "--extcap-interface is needed"),
        (
            vec!["--capture", "--extcap-interface", "eth0", "--fifo", "/tmp/x"],
            "is not a netwatch interface",
        ),
        (
            vec!["--capture", "--extcap-interface", interface],
            "--capture needs --fifo",
        ),
        (
            vec![
                "--capture",
                "--extcap-interface",
                interface,
                "--extcap-capture-filter",
                "port 22",
                "--fifo",
                "/tmp/x",
            ],
            "a capture filter is not applied",
        ),
        (vec!["--extcap-interface", interface, "--fifo"], "--fifo needs a value"),
        (
            vec!["--extcap-interface", interface, "--frobnicate"],
            "unknown extcap argument",
        ),
    ] {
        let out = extcap(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }

    // The capture into a fifo, read by tshark as Wireshark reads it.
    let fifo = d.dir.path().join("extcap.fifo");
    netwatch_testkit::run(Command::new("mkfifo").arg(&fifo));
    let mut tshark = NetnsPair::exec(&d.pair.b, "tshark")
        .args(["-l", "-n", "-r"])
        .arg(&fifo)
        .args(["-T", "fields", "-e", "udp.dstport", "-Y", "udp"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tshark runs");
    let capture = NetnsPair::exec(&d.pair.b, netwatch())
        .args(["--capture", "--extcap-interface", interface, "--fifo"])
        .arg(&fifo)
        .env("XDG_CONFIG_HOME", d.dir.path().join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the extcap capture starts");
    let capture = crate::deployment::Guard(capture);
    wait_for_view(&d, 1);
    for port in 43001..=43003_u16 {
        send_one(&d, port, 64);
    }
    std::thread::sleep(Duration::from_millis(800));
    // Wireshark stops an extcap by a signal; tshark then reads to the fifo's end.
    netwatch_testkit::run(Command::new("kill").args(["-TERM", &capture.0.id().to_string()]));
    let out = {
        let deadline = Instant::now() + Duration::from_secs(10);
        while tshark.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "tshark did not end with the extcap");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut tshark.stdout.take().unwrap(), &mut text).unwrap();
        text
    };
    let ports: Vec<&str> = out.lines().collect();
    assert_eq!(ports, ["43001", "43002", "43003"], "{out}");
}

/// `stream --vm`: an ad-hoc look without a stored capture: a capture made
/// for the view with the look's filters, its packets shown, and the capture
/// stopped and deleted when the viewer leaves (Ctrl-C).
#[test]
fn an_ad_hoc_look_at_a_vm_is_removed_when_the_viewer_leaves() {
    let d = Deployment::start();
    let out = d.dir.path().join("look.pcapng");
    let err = d.dir.path().join("look.err");
    let look = NetnsPair::exec(&d.pair.b, netwatch())
        .args([
            "network",
            "watcher",
            "packet-capture",
            "stream",
            "--vm",
            "host-a",
            "-g",
            "rg1",
            "--filters",
            r#"[{"protocol":"UDP","localPort":"44001"}]"#,
            "--time-limit",
            "300",
            "-w",
        ])
        .arg(&out)
        .env("XDG_CONFIG_HOME", d.dir.path().join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .expect("stream --vm starts");
    let mut look = crate::deployment::Guard(look);
    wait_for_view(&d, 1);
    let listed = d.sdk(&["list"]);
    assert!(
        listed.to_string().contains("live-host-a-"),
        "no capture made for the look: {listed}"
    );
    for port in [44001, 44001, 44002, 44001] {
        send_one(&d, port, 80);
    }
    std::thread::sleep(Duration::from_millis(800));
    netwatch_testkit::run(Command::new("kill").args(["-INT", &look.0.id().to_string()]));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = look.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "stream --vm did not end on Ctrl-C\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let said = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(status.success(), "{status}: {said}");
    assert!(said.contains(": 3 packets"), "{said}");
    let read = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&out)
        .args(["-T", "fields", "-e", "udp.dstport"])
        .output()
        .expect("tshark runs");
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).lines().collect::<Vec<_>>(),
        ["44001"; 3]
    );
    let listed = d.sdk(&["list"]);
    assert!(
        !listed.to_string().contains("live-host-a-"),
        "the look's capture is left: {listed}"
    );

    // Bad looks: what is wrong, before anything is made.
    for (args, says) in [
        (vec!["--vm", "host-a"], "--vm needs --resource-group"),
        (
            vec!["--vm", "host-a", "-g", "rg1", "--filters", "[{\"protocol\":\"SCTP\"}]"],
            "argument --filters",
        ),
        (
            vec!["--vm", "host-a", "-g", "rg1", "--time-limit", "99999"],
            "argument --time-limit",
        ),
        (vec!["--vm", "host a", "-g", "rg1"], "--vm"),
        (vec!["--name", "x"], "--name and --location"),
        (
            vec!["--vm", "host-a", "-g", "rg1", "-l", "westus"],
            "--location goes with --name",
        ),
        (vec!["--name", "x", "-l", "westus", "-w", ""], "argument --write/-w"),
    ] {
        let mut line = vec!["network", "watcher", "packet-capture", "stream"];
        line.extend_from_slice(&args);
        let out = cli(&d, &line);
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
    }
    // A capture that is not running, or not there: the server's words.
    let stopped = stream_named(&d, "nothing-here");
    let text = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(3), "{text}");
    assert!(text.contains("nothing-here"), "{text}");
}

/// Two viewers at once (the second with a reader's token); one killed
/// mid-way: the other sees every packet,
/// equal to the stored file, and the agent ends only the view that left.
#[test]
fn several_viewers_watch_at_once_and_one_leaving_changes_nothing_else() {
    let d = Deployment::start();
    d.create(
        "live4",
        json!({"timeLimitInSeconds": 120, "filters": [{"protocol": "UDP"}]}),
    );
    let first = NetnsPair::exec(&d.pair.b, netwatch())
        .args([
            "network",
            "watcher",
            "packet-capture",
            "stream",
            "--name",
            "live4",
            "-l",
            "westus",
            "-w",
        ])
        .arg(d.dir.path().join("first.pcapng"))
        .env("XDG_CONFIG_HOME", d.dir.path().join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the first viewer starts");
    let mut first = crate::deployment::Guard(first);
    // The second viewer is a reader: watching is reading.
    let made = d.sdk(&[
        "rest",
        "POST",
        "/netwatch/v1/tokens",
        r#"{"name": "watcher", "role": "reader"}"#,
    ]);
    let reader = made["body"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{made}"))
        .to_owned();
    let mut second = Pipeline::start_as(&d, "live4", TSHARK, Some(&reader));
    wait_for_view(&d, 2);
    for port in 45001..=45003_u16 {
        send_one(&d, port, 100);
    }
    let both = netwatch_testkit::eventually(100, Duration::from_millis(20), || second.lines().len() == 3);
    assert!(both, "the second viewer did not see the first datagrams\n{}", d.logs());
    // The first viewer goes away without a word.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let ended = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
        std::fs::read_to_string(d.dir.path().join("agent.log"))
            .unwrap_or_default()
            .contains("live view ended")
    });
    assert!(ended, "the agent kept sending to a viewer that left\n{}", d.logs());
    send_burst(&d, 45010, 300, 100);
    std::thread::sleep(Duration::from_millis(500));
    d.sdk(&["stop", "live4"]);
    second.wait(&d);
    let agent_log = std::fs::read_to_string(d.dir.path().join("agent.log")).unwrap_or_default();
    assert_eq!(agent_log.matches("live view ended").count(), 2, "{agent_log}");
    let capture = d.sdk(&["get", "live4"]);
    let stored: Vec<_> = stored_udp(&d.download(&capture))
        .into_iter()
        .filter(|(_, port, _)| (45001..=45010).contains(port))
        .collect();
    assert_eq!(stored.len(), 303);
    assert_eq!(tshark_udp(&second.lines()), stored, "{}", second.stderr());
}
