//! Upload of a capture file from the agent to storage (issue 5): throughput
//! to each kind of storage account against a plain copy of the same file to
//! the same server, and the agent's memory during the upload, which must stay
//! bounded whatever the file's size. Prints figures; it asserts nothing.
//! `scripts/bench-upload.sh` runs it.
//!
//! One measurement (an account kind, a file size), all on 127.0.0.1, every
//! process and file of it fresh and gone at its end:
//! 1. the storage server: none for `local` (a directory on the controller's
//!    file system), Azurite for `azureblob`, moto for `s3`, fake-gcs-server
//!    for `gcs` (`netwatch_testkit::{Azurite, Moto, FakeGcs}`, which need
//!    `NETWATCH_TEST_AZURITE`, `NETWATCH_TEST_MOTO` and `NETWATCH_TEST_FAKE_GCS`);
//! 2. `netwatch up --no-agent` on a fresh data directory, stopped once to add
//!    account `bench` of that kind to its config (as the storage tests do),
//!    started again; one real `netwatch agent` capturing on `lo` (the release
//!    binary: `NETWATCH_BIN`, default the one `cargo bench` built);
//! 3. a capture of UDP to one port (`BENCH_PORT`), whole packets, to account
//!    `bench`, with a `filePath` so the agent keeps its copy of the file; the
//!    benchmark sends datagrams of [`PAYLOAD`] bytes to that port at
//!    `BENCH_SEND_MBPS` until the file holds the size asked for, then stops
//!    the capture (`POST …/stop`);
//! 4. `POST …/queryStatus` every `BENCH_POLL_MS` (50) until `netwatch.uploadState`
//!    reads `Succeeded`; meanwhile a thread reads the agent's `VmRSS` every
//!    `BENCH_POLL_MS`;
//! 5. netwatch's copy leaves storage (the local blob deleted; Azurite, moto
//!    or fake-gcs-server stopped, their data gone), the controller and the
//!    agent stop, and the agent's own copy of the file goes to the same kind
//!    of server by a plain copy: `cp` + `sync FILE` (fsync) into a directory
//!    on the same file system, or one `curl -T` upload (Put Blob with a SAS;
//!    PutObject signed with SigV4; a media upload,
//!    `POST …/upload/storage/v1/b/{bucket}/o?uploadType=media`) to a second
//!    server started with netwatch's and idle since (a server idle for some
//!    seconds is slower than one just started: the reference must not get
//!    the faster one), then to a freshly started one (printed beside).
//!
//! The upload's time runs from the capture file closed (the agent's log line
//! `capture stopped`) to the first `queryStatus` that reads `Succeeded`: it
//! holds the agent's SHA-256 of the file, the grant requests, every part
//! (read, MD5, PUT), the commit and its checks, the agent's report reaching
//! the controller, and up to one poll interval. The agent's log times the
//! steps between (`file spooled for upload`: hashed; `file stored`:
//! committed), printed as a breakdown, with the CPU time the agent and the
//! controller spent from the stop to `Succeeded` (`/proc/PID/stat`).
//!
//! Disk: the agent's file, plus one copy in storage at a time (the local
//! backend holds its staged parts and the assembled blob together for a
//! moment while committing). Bounded: every wait has a deadline, the whole
//! run `BENCH_DEADLINE_S`; the processes it starts are killed when it ends,
//! pass or fail.

#![allow(clippy::unwrap_used, reason = "a benchmark stops loudly on any unexpected error")]

mod support;

use support::{Api, Guard, env_or, rss_kib, running_as_root};

use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netwatch_testkit::{Azurite, FakeGcs, Moto};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SUB: &str = "00000000-0000-0000-0000-000000000000";
const NETWORK_API: &str = "2024-05-01";
const COMPUTE_API: &str = "2024-07-01";
const VM: &str = "bench-upload";
const GROUP: &str = "bench";
/// The storage account the benchmark adds to the controller's config.
const ACCOUNT: &str = "bench";
/// UDP payload of each datagram: on `lo` (MTU 65536) one packet of
/// 14 + 20 + 8 + 65,000 bytes, a pcap record of 65,058 bytes with its header.
const PAYLOAD: usize = 65_000;
const RECORD_BYTES: u64 = 16 + 14 + 20 + 8 + PAYLOAD as u64;
/// Azure's largest `totalBytesPerSession`: the capture must not stop on its own.
const MAX_SESSION_BYTES: u64 = 4_294_967_295;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;
/// How long the controller and the agent may take to come up.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long the capture may take to run, and its counters to settle after the traffic.
const CAPTURE_DEADLINE: Duration = Duration::from_secs(30);
/// How long a plain copy may take.
const COPY_DEADLINE: Duration = Duration::from_secs(900);
/// Datagrams sent first to learn how many packets the capture sees of each.
const PROBE: u64 = 16;
/// Counters that stay still this long are final (the agent reports every second).
const SETTLE: Duration = Duration::from_millis(2500);
/// Rounds of traffic sent to make up for packets the kernel dropped.
const TOP_UPS: usize = 4;
/// Clock ticks per second of `/proc/PID/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;
/// The account kinds, in the order they run.
const KINDS: [&str; 4] = ["local", "azureblob", "s3", "gcs"];

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: nothing to do then.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("upload: a benchmark; run it with `cargo bench -p netwatch --bench upload`");
        return;
    }
    if !running_as_root() {
        eprintln!("upload: run as root (the agent opens a packet socket)");
        std::process::exit(2);
    }
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(settings));
}

#[derive(Debug)]
struct Settings {
    binary: PathBuf,
    /// File sizes, GiB, in the order they run.
    sizes: Vec<f64>,
    kinds: Vec<String>,
    poll: Duration,
    /// Pace of the traffic, MB/s of capture file.
    send_mbps: f64,
    port: u16,
    /// `part_size` of the account, bytes, when not the default.
    part_size: Option<u64>,
    /// Bound of one upload (stop → `Succeeded`).
    upload_deadline: Duration,
    deadline: Instant,
    keep: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let binary = std::env::var_os("NETWATCH_BIN")
            .filter(|bin| !bin.is_empty())
            .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_netwatch")), PathBuf::from);
        assert!(
            binary.is_file(),
            "NETWATCH_BIN {} is not a file: build it (cargo build --release -p netwatch)",
            binary.display()
        );
        let big: f64 = env_or("BENCH_GIB", 2.0);
        let small: f64 = env_or("BENCH_SMALL_GIB", 0.5);
        let mut sizes = vec![small, big];
        sizes.retain(|&gib| gib > 0.0);
        sizes.dedup_by(|a, b| (*a - *b).abs() < f64::EPSILON);
        for &gib in &sizes {
            #[expect(clippy::cast_precision_loss, reason = "a bound of a few GiB")]
            let most = (MAX_SESSION_BYTES - 64 * RECORD_BYTES) as f64 / GIB;
            assert!(
                gib <= most,
                "{gib} GiB: a capture holds at most {most:.2} GiB (Azure's totalBytesPerSession)"
            );
        }
        Settings {
            binary,
            sizes,
            kinds: env_or("BENCH_ACCOUNTS", KINDS.join(","))
                .split(',')
                .map(|kind| {
                    assert!(
                        KINDS.contains(&kind),
                        "BENCH_ACCOUNTS: {kind:?} is not one of {KINDS:?}"
                    );
                    kind.to_owned()
                })
                .collect(),
            poll: Duration::from_millis(env_or("BENCH_POLL_MS", 50)),
            send_mbps: env_or("BENCH_SEND_MBPS", 300.0),
            port: env_or("BENCH_PORT", 7411),
            part_size: std::env::var("BENCH_PART_MIB")
                .ok()
                .filter(|text| !text.is_empty())
                .map(|text| text.parse::<u64>().expect("BENCH_PART_MIB is a number of MiB") << 20),
            upload_deadline: Duration::from_secs(env_or("BENCH_UPLOAD_DEADLINE_S", 900)),
            deadline: Instant::now() + Duration::from_secs(env_or("BENCH_DEADLINE_S", 3600)),
            keep: std::env::var_os("BENCH_KEEP").is_some_and(|keep| keep == "1"),
        }
    }

    fn check_deadline(&self, what: &str) {
        assert!(
            Instant::now() < self.deadline,
            "BENCH_DEADLINE_S reached during {what}: stopping"
        );
    }
}

/// User + system CPU time of process `pid`, clock ticks (proc(5): fields 14 and 15
/// of `/proc/PID/stat`, counted after the command's closing parenthesis).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Reads a process's `VmRSS` every `interval` on a thread of its own until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, u64)>>,
}

impl RssSampler {
    fn start(pid: u32, interval: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match rss_kib(pid) {
                    Some(kib) => samples.push((Instant::now(), kib)),
                    None => break,
                }
                std::thread::sleep(interval);
            }
            samples
        });
        RssSampler { stop, thread }
    }

    fn finish(self) -> Vec<(Instant, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

impl Api {
    /// The id of registered VM `name`, if it is.
    async fn vm(&self, name: &str) -> Option<String> {
        let path =
            format!("/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines?api-version={COMPUTE_API}");
        let (status, _, body) = self.call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "list VMs: {body}");
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|vm| vm["name"] == name)
            .map(|vm| vm["id"].as_str().unwrap().to_owned())
    }

    async fn status(&self, capture: &str) -> Value {
        let (status, _, body) = self
            .call(
                Method::POST,
                &format!("{capture}/queryStatus?api-version={NETWORK_API}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "queryStatus: {body}");
        body
    }
}

/// The storage server of one measurement.
enum Server {
    Local,
    Azurite(Azurite),
    Moto(Moto),
    Gcs(FakeGcs),
}

impl Server {
    fn start(kind: &str) -> Server {
        match kind {
            "local" => Server::Local,
            "azureblob" => Server::Azurite(Azurite::start()),
            "s3" => Server::Moto(Moto::start()),
            "gcs" => Server::Gcs(FakeGcs::start()),
            other => unreachable!("checked in Settings: {other}"),
        }
    }

    /// One `curl` upload of `source` (`size` bytes) to this server, checked
    /// stored whole; its time. Not for `local`.
    fn plain_copy(&self, source: &Path, size: u64) -> Duration {
        match self {
            Server::Local => unreachable!("the local plain copy is cp + fsync"),
            Server::Azurite(azurite) => {
                let url = format!(
                    "{}/{}/plain.cap?{}",
                    azurite.endpoint(),
                    azurite.container(),
                    azurite.container_sas()
                );
                let start = Instant::now();
                run_bounded(
                    curl()
                        .args([
                            "-H",
                            "x-ms-blob-type: BlockBlob",
                            "-H",
                            "x-ms-version: 2021-08-06",
                            "-T",
                        ])
                        .arg(source)
                        .arg(&url),
                    "curl (Put Blob)",
                );
                let plain = start.elapsed();
                let stored = content_length(curl().args(["-I", "-H", "x-ms-version: 2021-08-06"]).arg(&url));
                assert_eq!(stored, Some(size), "Azurite holds the whole file");
                plain
            }
            Server::Moto(moto) => {
                let url = format!("{}/{}/plain.cap", moto.endpoint(), moto.bucket());
                let sigv4 = |command: &mut Command| {
                    command
                        .args(["--aws-sigv4", &format!("aws:amz:{}:s3", Moto::REGION), "--user"])
                        .arg(format!("{}:{}", Moto::ACCESS_KEY_ID, Moto::SECRET_ACCESS_KEY));
                };
                let mut put = curl();
                sigv4(&mut put);
                put.arg("-T").arg(source).arg(&url);
                let start = Instant::now();
                run_bounded(&mut put, "curl (PutObject)");
                let plain = start.elapsed();
                let mut head = curl();
                sigv4(&mut head);
                head.arg("-I").arg(&url);
                assert_eq!(content_length(&mut head), Some(size), "moto holds the whole file");
                plain
            }
            Server::Gcs(gcs) => {
                let url = format!(
                    "{}/upload/storage/v1/b/{}/o?uploadType=media&name=plain.cap",
                    gcs.endpoint(),
                    gcs.bucket()
                );
                let start = Instant::now();
                run_bounded(
                    curl()
                        .args(["-X", "POST", "-H", "Content-Type: application/vnd.tcpdump.pcap", "-T"])
                        .arg(source)
                        .arg(&url),
                    "curl (media upload)",
                );
                let plain = start.elapsed();
                let meta = format!("{}/storage/v1/b/{}/o/plain.cap", gcs.endpoint(), gcs.bucket());
                let out = Command::new("curl").args(["-sS", "-f"]).arg(&meta).output().unwrap();
                let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(meta["size"], size.to_string(), "fake-gcs-server holds the whole file");
                plain
            }
        }
    }

    /// Account `bench` of this server, as a `[[storage]]` table.
    fn account_toml(&self, dir: &Path, part_size: Option<u64>) -> String {
        let mut table = format!("\n[[storage]]\nname = \"{ACCOUNT}\"\n");
        match self {
            Server::Local => table.push_str(&format!(
                "kind = \"local\"\npath = \"{}\"\n",
                dir.join("storage-local").display()
            )),
            Server::Azurite(azurite) => table.push_str(&format!(
                "kind = \"azureblob\"\naccount = \"{}\"\ncontainer = \"{}\"\nkey = \"{}\"\nendpoint = \"{}\"\n",
                azurite.account(),
                azurite.container(),
                azurite.key(),
                azurite.endpoint()
            )),
            Server::Moto(moto) => table.push_str(&format!(
                "kind = \"s3\"\nbucket = \"{}\"\nregion = \"{}\"\nendpoint = \"{}\"\n\
                 access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                moto.bucket(),
                Moto::REGION,
                moto.endpoint(),
                Moto::ACCESS_KEY_ID,
                Moto::SECRET_ACCESS_KEY
            )),
            Server::Gcs(gcs) => table.push_str(&format!(
                "kind = \"gcs\"\nbucket = \"{}\"\nendpoint = \"{}\"\nservice_account_key = '''{}'''\n",
                gcs.bucket(),
                gcs.endpoint(),
                gcs.service_account_key()
            )),
        }
        if let Some(part_size) = part_size {
            table.push_str(&format!("part_size = {part_size}\n"));
        }
        table
    }
}

/// Starts `netwatch up --no-agent` on `data`; the guard and its URL.
fn start_controller(settings: &Settings, dir: &Path, log: &str) -> (Guard, String) {
    support::start_up(&settings.binary, dir, dir.join(log), START_DEADLINE)
}

/// One measured upload and its plain copy.
#[derive(Debug)]
struct Row {
    kind: String,
    file_bytes: u64,
    packets: u64,
    drops: u64,
    /// Capture file closed → first `Succeeded` read.
    upload: Duration,
    /// Closed → hashed (`file spooled for upload`), → committed (`file stored`).
    hashed: Duration,
    stored: Duration,
    plain: Duration,
    /// `local` only: of `plain`, the `sync` (fsync).
    plain_sync: Option<Duration>,
    /// Servers only: the plain copy to a server just started.
    plain_fresh: Option<Duration>,
    rss_idle: u64,
    rss_capture: u64,
    /// Peak from the stop to `Succeeded`, and from the first `Uploading` read.
    rss_peak: u64,
    rss_peak_uploading: u64,
    rss_after: u64,
    samples: usize,
    /// CPU seconds (user + system) from the stop to `Succeeded`.
    cpu_agent: f64,
    cpu_controller: f64,
}

async fn run(settings: Settings) {
    println!(
        "## Upload: agent to storage: {:?} GiB to {:?}, poll every {:?}, part size {}",
        settings.sizes,
        settings.kinds,
        settings.poll,
        settings
            .part_size
            .map_or_else(|| "default".to_owned(), |bytes| format!("{} MiB", bytes >> 20))
    );
    println!("binary {}", settings.binary.display());
    let mut rows = Vec::new();
    for &gib in &settings.sizes {
        for kind in &settings.kinds {
            settings.check_deadline(kind);
            let row = measure(&settings, kind, gib).await;
            print_row(&row);
            rows.push(row);
        }
    }
    print_tables(&rows);
}

fn print_row(row: &Row) {
    println!(
        "  {}: {:.1} MiB, {} packets ({} dropped): netwatch {:.2} s ({:.0} MiB/s; hashed at +{:.2} s, stored at +{:.2} s), \
         plain {:.2} s ({:.0} MiB/s; to a fresh server {}); agent VmRSS idle {} KiB, capturing {} KiB, upload peak {} KiB ({} samples), after {} KiB",
        row.kind,
        mib(row.file_bytes),
        row.packets,
        row.drops,
        row.upload.as_secs_f64(),
        rate(row.file_bytes, row.upload),
        row.hashed.as_secs_f64(),
        row.stored.as_secs_f64(),
        row.plain.as_secs_f64(),
        rate(row.file_bytes, row.plain),
        row.plain_fresh
            .map_or_else(|| "-".to_owned(), |fresh| format!("{:.2} s", fresh.as_secs_f64())),
        row.rss_idle,
        row.rss_capture,
        row.rss_peak,
        row.samples,
        row.rss_after,
    );
}

#[expect(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn rate(bytes: u64, time: Duration) -> f64 {
    mib(bytes) / time.as_secs_f64().max(1e-9)
}

fn print_tables(rows: &[Row]) {
    println!();
    println!(
        "| account | file MiB | netwatch s (closed → Succeeded) | netwatch MiB/s | plain copy | plain s | plain MiB/s | \
         netwatch / plain | plain s, fresh server | of netwatch's s: SHA-256 | parts + commit | report | CPU s: agent | \
         controller |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        let plain = match row.kind.as_str() {
            "local" => format!(
                "cp + fsync (fsync {:.2} s)",
                row.plain_sync.unwrap_or_default().as_secs_f64()
            ),
            "azureblob" => "curl -T, Put Blob".to_owned(),
            "gcs" => "curl -T, media upload".to_owned(),
            _ => "curl -T, PutObject".to_owned(),
        };
        let fresh = row
            .plain_fresh
            .map_or_else(|| "-".to_owned(), |fresh| format!("{:.2}", fresh.as_secs_f64()));
        println!(
            "| {} | {:.0} | {:.2} | {:.0} | {plain} | {:.2} | {:.0} | **{:.2}** | {fresh} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            row.kind,
            mib(row.file_bytes),
            row.upload.as_secs_f64(),
            rate(row.file_bytes, row.upload),
            row.plain.as_secs_f64(),
            rate(row.file_bytes, row.plain),
            row.plain.as_secs_f64() / row.upload.as_secs_f64().max(1e-9),
            row.hashed.as_secs_f64(),
            row.stored.saturating_sub(row.hashed).as_secs_f64(),
            row.upload.saturating_sub(row.stored).as_secs_f64(),
            row.cpu_agent,
            row.cpu_controller,
        );
    }
    println!();
    println!(
        "| account | file MiB | agent VmRSS MiB: idle | capturing | peak, stop → Succeeded | peak while Uploading | after | samples |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | **{:.1}** | {:.1} | {:.1} | {} |",
            row.kind,
            mib(row.file_bytes),
            mib(row.rss_idle << 10),
            mib(row.rss_capture << 10),
            mib(row.rss_peak << 10),
            mib(row.rss_peak_uploading << 10),
            mib(row.rss_after << 10),
            row.samples,
        );
    }
    println!();
    for row in rows.iter().filter(|row| row.drops > 0) {
        println!(
            "note: {} at {:.0} MiB: the kernel dropped {} packets during the capture (more traffic made up for them)",
            row.kind,
            mib(row.file_bytes),
            row.drops
        );
    }
}

async fn measure(settings: &Settings, kind: &str, gib: f64) -> Row {
    let dir = tempfile::Builder::new()
        .prefix("netwatch-bench-upload-")
        .tempdir()
        .unwrap();
    println!("{kind}, {gib} GiB: data in {}", dir.path().display());
    let server = Server::start(kind);
    // The plain copy's server, started with netwatch's and idle as long: a
    // server idle for a while answers slower than one just started (Azurite:
    // a 256 MiB Put Blob takes 0.80–0.85 s just started, 1.30–1.39 s after
    // 10 or 30 s idle), so a fresh one would flatter the plain copy. The
    // plain copy to a fresh server is printed too.
    let twin = Server::start(kind);

    // The controller: made once, stopped, given account `bench`, started again.
    let (up, _) = start_controller(settings, dir.path(), "up-first.log");
    drop(up);
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("up/config.toml"))
        .unwrap()
        .write_all(server.account_toml(dir.path(), settings.part_size).as_bytes())
        .unwrap();
    let (mut up, url) = start_controller(settings, dir.path(), "up.log");
    let credentials: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.path().join("up/credentials.toml")).unwrap()).unwrap();
    let admin = credentials["admin_token"].as_str().unwrap().to_owned();
    let agent_token = credentials["agent_token"].as_str().unwrap().to_owned();
    let ca = std::fs::read(dir.path().join("up/ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let api = Api {
        client,
        url: url.clone(),
        authorization: format!("Bearer {admin}"),
    };

    // The agent.
    let agent_dir = dir.path().join("agent");
    let mut command = Command::new(&settings.binary);
    command
        .args(["agent", "--server", &url, "--enroll-token", &agent_token, "--ca"])
        .arg(dir.path().join("up/ca.pem"))
        .args(["--vm-name", VM, "-g", GROUP, "-l", "westus", "-i", "lo", "--data-dir"])
        .arg(&agent_dir)
        .stdout(Stdio::null());
    let mut agent = Guard::spawn(&mut command, dir.path().join("agent.log"));
    let started = Instant::now();
    let target = loop {
        if let Some(id) = api.vm(VM).await {
            break id;
        }
        agent.check_alive();
        assert!(
            started.elapsed() < START_DEADLINE,
            "the agent did not register within {START_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = rss_kib(agent.pid()).unwrap();

    // The capture.
    let name = format!("upload-{kind}");
    let capture = format!(
        "/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/\
         NetworkWatcher_westus/packetCaptures/{name}"
    );
    let local_file = format!("/var/captures/bench/{name}.cap");
    let body = json!({"properties": {
        "target": target,
        "storageLocation": {
            "storageId": format!("/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}"),
            "filePath": local_file,
        },
        "filters": [{"protocol": "UDP", "localPort": settings.port.to_string()}],
        "timeLimitInSeconds": 18_000,
        "totalBytesPerSession": MAX_SESSION_BYTES,
        "bytesToCapturePerPacket": 0,
    }});
    api.create_until_running(
        &format!("{capture}?api-version={NETWORK_API}"),
        &body,
        Duration::from_millis(20),
        CAPTURE_DEADLINE,
    )
    .await
    .unwrap_or_else(|err| panic!("create {name}: {err}"));

    // The traffic, then the counters settled. A probe first: how many records
    // one datagram makes (one since the engine skips loopback's outgoing copy;
    // measured, not assumed).
    let probe = send(settings, PROBE, 1).await;
    let (probed, _, _) = settled(&api, &capture, &mut agent, probe, 2).await;
    let copies = (probed / probe).max(1);
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a few GiB")]
    let target_bytes = (gib * GIB) as u64;
    let mut sent = probe;
    let (mut packets, mut drops, mut rss_capture) = (probed, 0, 0);
    // Packets the kernel dropped (the ring full) are made up for, a few times.
    for _ in 0..TOP_UPS {
        let missing = target_bytes.saturating_sub(packets * RECORD_BYTES);
        if missing < RECORD_BYTES {
            break;
        }
        sent += send(settings, missing.div_ceil(RECORD_BYTES * copies), copies).await;
        (packets, drops, rss_capture) = settled(&api, &capture, &mut agent, sent, copies).await;
    }
    println!("  {sent} datagrams sent, {packets} packets captured ({copies} per datagram), {drops} dropped");

    // Stop, and follow the upload.
    let sampler = RssSampler::start(agent.pid(), settings.poll);
    let cpu_before = (cpu_ticks(agent.pid()), cpu_ticks(up.pid()));
    let stop_at = Instant::now();
    let stop_wall = SystemTime::now();
    let (status, _, answer) = api
        .call(Method::POST, &format!("{capture}/stop?api-version={NETWORK_API}"), None)
        .await;
    assert!(status.is_success(), "stop {name}: {status} {answer}");
    let mut uploading_at = None;
    let (done_at, stored) = loop {
        let status = api.status(&capture).await;
        let now = Instant::now();
        match status["netwatch"]["uploadState"].as_str() {
            Some("Succeeded") => break (now, status),
            Some("Uploading") => {
                uploading_at.get_or_insert(now);
            }
            Some("Failed" | "Retrying") => panic!("{name}: upload {}", status["netwatch"]),
            _ => {}
        }
        agent.check_alive();
        assert!(
            stop_at.elapsed() < settings.upload_deadline,
            "{name}: not stored within {:?}: {status}",
            settings.upload_deadline
        );
        tokio::time::sleep(settings.poll).await;
    };
    #[expect(clippy::cast_precision_loss, reason = "clock ticks far below 2^52")]
    let cpu = |ticks: u64, before: u64| (ticks - before) as f64 / TICKS_PER_SECOND;
    let cpu_agent = cpu(cpu_ticks(agent.pid()), cpu_before.0);
    let cpu_controller = cpu(cpu_ticks(up.pid()), cpu_before.1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = sampler.finish();
    let rss_after = rss_kib(agent.pid()).unwrap();
    let rss_kinds = std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("Rss"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ");
    println!("  agent after the upload: {rss_kinds}");
    let peak = |from: Instant| {
        samples
            .iter()
            .filter(|(at, _)| *at >= from && *at <= done_at)
            .map(|&(_, kib)| kib)
            .max()
            .unwrap_or(0)
    };
    let rss_peak = peak(stop_at);
    let rss_peak_uploading = peak(uploading_at.unwrap_or(stop_at));
    let file = &stored["netwatch"]["files"][0];
    let file_bytes = file["sizeInBytes"].as_u64().unwrap();

    // The agent's steps, from its log: wall-clock times since the stop was sent.
    let log = std::fs::read_to_string(&agent.log).unwrap();
    let step =
        |message: &str| log_time(&log, message).unwrap_or_else(|| panic!("the agent's log has no `{message}` line"));
    let since_stop = |at: SystemTime| at.duration_since(stop_wall).unwrap_or_default();
    let closed = since_stop(step("capture stopped"));
    let hashed = since_stop(step("file spooled for upload")).saturating_sub(closed);
    let stored_at = since_stop(step("file stored")).saturating_sub(closed);
    let upload = done_at.duration_since(stop_at).saturating_sub(closed);
    up.check_alive();
    drop(agent);
    drop(up);

    // netwatch's copy leaves storage, then the plain copy of the agent's file.
    let source = agent_dir.join("captures/bench").join(format!("{name}.cap"));
    let size = std::fs::metadata(&source).unwrap().len();
    assert_eq!(size, file_bytes, "the agent's copy is the file stored");
    let (plain, plain_sync, plain_fresh) = match server {
        Server::Local => {
            remove_blobs(&dir.path().join("storage-local"));
            let copy_dir = dir.path().join("plain");
            std::fs::create_dir(&copy_dir).unwrap();
            let copy = copy_dir.join(format!("{name}.cap"));
            let start = Instant::now();
            run_bounded(Command::new("cp").arg(&source).arg(&copy), "cp");
            let synced = Instant::now();
            run_bounded(Command::new("sync").arg(&copy), "sync");
            let plain = start.elapsed();
            assert_eq!(std::fs::metadata(&copy).unwrap().len(), size, "cp copied the file");
            std::fs::remove_file(&copy).unwrap();
            (plain, Some(synced.elapsed()), None)
        }
        netwatch_server => {
            drop(netwatch_server);
            let plain = twin.plain_copy(&source, size);
            drop(twin);
            let fresh = Server::start(kind).plain_copy(&source, size);
            (plain, None, Some(fresh))
        }
    };
    if settings.keep {
        let kept = dir.keep();
        println!("  data and logs kept in {}", kept.display());
    }
    Row {
        kind: kind.to_owned(),
        file_bytes,
        packets,
        drops,
        upload,
        hashed,
        stored: stored_at,
        plain,
        plain_sync,
        plain_fresh,
        rss_idle,
        rss_capture,
        rss_peak,
        rss_peak_uploading,
        rss_after,
        samples: samples.len(),
        cpu_agent,
        cpu_controller,
    }
}

/// Sends `count` datagrams at the settings' pace of capture file when the
/// capture sees `copies` packets of each; how many were sent.
async fn send(settings: &Settings, count: u64, copies: u64) -> u64 {
    #[expect(clippy::cast_precision_loss, reason = "1 or 2")]
    let (port, mbps) = (settings.port, settings.send_mbps / copies as f64);
    tokio::task::spawn_blocking(move || send_udp(port, count, mbps))
        .await
        .unwrap()
}

/// Waits until the capture's counters show `sent × copies` packets (captured
/// or dropped) or stay still for [`SETTLE`]; packets, drops and the agent's
/// `VmRSS` then.
async fn settled(api: &Api, capture: &str, agent: &mut Guard, sent: u64, copies: u64) -> (u64, u64, u64) {
    let mut last = (u64::MAX, Instant::now());
    loop {
        let status = api.status(capture).await;
        let netwatch = &status["netwatch"];
        let packets = netwatch["packetsCaptured"].as_u64().unwrap_or(0);
        let drops = netwatch["kernelDrops"].as_u64().unwrap_or(0);
        if packets + drops >= sent * copies || (packets == last.0 && last.1.elapsed() > SETTLE) {
            return (packets, drops, rss_kib(agent.pid()).unwrap());
        }
        if packets != last.0 {
            last = (packets, Instant::now());
        }
        agent.check_alive();
        assert!(
            last.1.elapsed() < CAPTURE_DEADLINE,
            "{capture}: counters stuck at {packets} packets for {sent} datagrams"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sends `count` datagrams of [`PAYLOAD`] bytes to 127.0.0.1:`port` at about
/// `mbps` MB/s of capture file; how many were sent. A socket bound to the port
/// takes them (and, never read, drops them) so no ICMP answers.
fn send_udp(port: u16, count: u64, mbps: f64) -> u64 {
    let _sink = UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|err| panic!("bind UDP port {port}: {err}"));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    let payload = vec![0x5a_u8; PAYLOAD];
    let start = Instant::now();
    let mut sent = 0;
    while sent < count {
        // Bursts of 16 (1 MB), then wait for the pace to catch up.
        for _ in 0..16.min(count - sent) {
            socket.send(&payload).unwrap();
            sent += 1;
        }
        #[expect(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
        let due = Duration::from_secs_f64((sent * RECORD_BYTES) as f64 / (mbps * 1e6));
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        assert!(
            start.elapsed() < COPY_DEADLINE,
            "sending took longer than {COPY_DEADLINE:?}"
        );
    }
    sent
}

/// `curl` as the plain copies use it: quiet, failing on HTTP errors, without
/// `Expect: 100-continue` (which makes it wait up to a second for the server's go).
fn curl() -> Command {
    let mut command = Command::new("curl");
    command.args(["-sS", "-f", "-o", "/dev/null", "-H", "Expect:"]);
    command
}

/// Runs `command` to its end within [`COPY_DEADLINE`]; panics unless it succeeds.
fn run_bounded(command: &mut Command, what: &str) {
    let mut child = command
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what} failed: {status}");
            return;
        }
        if start.elapsed() > COPY_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {COPY_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The `Content-Length` a `curl -I` prints.
fn content_length(command: &mut Command) -> Option<u64> {
    let output = command
        .args(["-D", "-"])
        .output()
        .unwrap_or_else(|err| panic!("curl -I: {err}"));
    String::from_utf8_lossy(&output.stdout).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// Deletes every blob under a local account's root (not its staging directory).
fn remove_blobs(root: &Path) {
    for entry in std::fs::read_dir(root).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(".netwatch-tmp") {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            remove_blobs(&path);
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// The time of the first line of `log` holding `message`: the RFC 3339 UTC
/// timestamp tracing puts first (`2026-11-29T23:40:00.123456Z  INFO …`).
fn log_time(log: &str, message: &str) -> Option<SystemTime> {
    let line = log.lines().find(|line| line.contains(message))?;
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut date = date.split('-').map(str::parse::<i64>);
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let mut time = time.split(':');
    let hour: u64 = time.next()?.parse().ok()?;
    let minute: u64 = time.next()?.parse().ok()?;
    let second: f64 = time.next()?.parse().ok()?;
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let whole = Duration::from_secs(days * 86_400 + hour * 3_600 + minute * 60);
    Some(UNIX_EPOCH + whole + Duration::from_secs_f64(second))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, chrono-compatible).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}
