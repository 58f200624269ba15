//! Create → Running latency (DESIGN §9: under 100 ms p99 on loopback with
//! 1,000 agents connected), and the controller's memory per connected agent.
//! Prints figures; it asserts nothing. `scripts/bench-create.sh` runs it.
//!
//! What it does, all on 127.0.0.1:
//! 1. `netwatch up --no-agent` on a fresh data directory (the release binary:
//!    `NETWATCH_BIN`, default the one `cargo bench` built);
//! 2. one real `netwatch agent` (VM `bench-real`, capturing on `lo`; root);
//! 3. `BENCH_CAPTURES` captures on it, one after another;
//! 4. `netwatch agent --simulate` for the other `BENCH_AGENTS - 1` agents
//!    (VMs `bench-sim-0000`…), timed until all are registered;
//! 5. `BENCH_CAPTURES` captures on the real agent again, then as many on the
//!    simulated agents, round-robin.
//!
//! One capture: `PUT …/packetCaptures/{name}`, then `GET` of its
//! `Azure-AsyncOperation` monitor every `BENCH_POLL_US` (1 ms) on the same
//! kept-alive HTTPS connection until it reads `Succeeded`: the latency is the
//! first `Succeeded` seen minus the moment the PUT was sent, so it includes the
//! PUT's own round trip and up to one poll interval (~1–2 ms) of lag. Then the
//! capture is stopped (`POST …/stop`, its monitor followed until the agent has
//! finalized it) and deleted, so at most one capture runs at a time (a real one
//! maps a 32 MiB ring). The first `WARMUP` captures of each scenario are not
//! counted.
//!
//! Memory: `VmRSS` of the `netwatch up` process before any agent, with the real
//! agent, and with all agents connected (after a short settle).
//!
//! Bounded: every wait has a deadline, the whole run `BENCH_DEADLINE_S`
//! (default 600); the processes it starts are killed when it ends, pass or fail.

#![allow(clippy::unwrap_used, reason = "a benchmark stops loudly on any unexpected error")]

mod support;

use support::{Api, Guard, env_or, rss_kib, running_as_root};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::json;

const SUB: &str = "00000000-0000-0000-0000-000000000000";
const NETWORK_API: &str = "2024-05-01";
const COMPUTE_API: &str = "2024-07-01";
const REAL_VM: &str = "bench-real";
const SIM_VM: &str = "bench-sim";
const GROUP: &str = "bench";
/// Captures run (and not counted) before each scenario's measured ones.
const WARMUP: usize = 3;
/// How long one capture may take to be Running, and then to stop.
const CAPTURE_DEADLINE: Duration = Duration::from_secs(10);
/// How long the real agent may take to register.
const REAL_REGISTER_DEADLINE: Duration = Duration::from_secs(30);
/// How long the simulated agents may take to register, all of them.
const SIM_REGISTER_DEADLINE: Duration = Duration::from_secs(180);
/// Time given to the controller to settle before its RSS is read.
const SETTLE: Duration = Duration::from_secs(2);
/// The scenarios, in the order they run.
const SCENARIOS: [&str; 3] = ["one-real", "many-real", "many-sim"];
/// A UDP port nothing on this machine sends to: the real capture sees nothing.
const QUIET_PORT: &str = "9";

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: nothing to do then.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("create_latency: a benchmark; run it with `cargo bench -p netwatch --bench create_latency`");
        return;
    }
    if !running_as_root() {
        eprintln!("create_latency: run as root (the real agent opens a packet socket)");
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
    captures: usize,
    agents: usize,
    sim_processes: usize,
    poll: Duration,
    deadline: Instant,
    keep: bool,
    /// Scenarios to run, of `one-real`, `many-real`, `many-sim`.
    scenarios: Vec<String>,
    /// Where to write every sample (CSV), if anywhere.
    samples: Option<PathBuf>,
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
        let agents: usize = env_or("BENCH_AGENTS", 1000);
        assert!(
            agents >= 2,
            "BENCH_AGENTS must be at least 2 (one real agent, one simulated)"
        );
        Settings {
            binary,
            captures: env_or("BENCH_CAPTURES", 200),
            agents,
            sim_processes: env_or::<usize>("BENCH_SIM_PROCESSES", 1).max(1),
            poll: Duration::from_micros(env_or("BENCH_POLL_US", 1000)),
            deadline: Instant::now() + Duration::from_secs(env_or("BENCH_DEADLINE_S", 600)),
            keep: std::env::var_os("BENCH_KEEP").is_some_and(|keep| keep == "1"),
            scenarios: env_or("BENCH_SCENARIOS", SCENARIOS.join(","))
                .split(',')
                .map(|name| {
                    assert!(
                        SCENARIOS.contains(&name),
                        "BENCH_SCENARIOS: {name:?} is not one of {SCENARIOS:?}"
                    );
                    name.to_owned()
                })
                .collect(),
            samples: std::env::var_os("BENCH_SAMPLES")
                .filter(|path| !path.is_empty())
                .map(PathBuf::from),
        }
    }

    fn check_deadline(&self, what: &str) {
        assert!(
            Instant::now() < self.deadline,
            "BENCH_DEADLINE_S reached during {what}: stopping"
        );
    }
}

/// `line` without ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

/// How long the real agent took to open each measured capture of scenario
/// `tag` (packet socket, filter, 32 MiB ring, file), from its log lines
/// `capture running … open_ms=N`; empty when the log has none.
fn open_times(log: &Path, tag: &str) -> Vec<Duration> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut times: Vec<Duration> = text
        .lines()
        .filter(|line| line.contains("capture running"))
        .filter_map(|line| {
            let line = strip_ansi(line);
            let name: String = line
                .split("packetCaptures/")
                .nth(1)?
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            let (prefix, index) = name.rsplit_once('-')?;
            if prefix != tag || index.parse::<usize>().ok()? < WARMUP {
                return None;
            }
            let ms: String = line
                .split("open_ms=")
                .nth(1)?
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            Some(Duration::from_millis(ms.parse().ok()?))
        })
        .collect();
    times.sort();
    times
}

impl Api {
    /// The ids of the registered VMs whose names start with `prefix`.
    async fn vms(&self, prefix: &str) -> Vec<String> {
        let path =
            format!("/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines?api-version={COMPUTE_API}");
        let (status, _, body) = self.call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "list VMs: {body}");
        let mut ids: Vec<String> = body["value"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|vm| vm["name"].as_str().is_some_and(|name| name.starts_with(prefix)))
            .map(|vm| vm["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }
}

/// One measured capture.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// PUT sent → 201 read.
    put: Duration,
    /// PUT sent → first `Succeeded` read from the monitor.
    running: Duration,
}

/// Creates a capture on `target`, waits for Running, stops and deletes it.
async fn one_capture(api: &Api, target: &str, name: &str, poll: Duration) -> Result<Sample, String> {
    let capture = format!(
        "/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/\
         NetworkWatcher_westus/packetCaptures/{name}"
    );
    let body = json!({"properties": {
        "target": target,
        "storageLocation": {"filePath": format!("/var/captures/{name}.cap")},
        "timeLimitInSeconds": 1,
        "filters": [{"protocol": "UDP", "localPort": QUIET_PORT}],
    }});
    let (put, running) = api
        .create_until_running(
            &format!("{capture}?api-version={NETWORK_API}"),
            &body,
            poll,
            CAPTURE_DEADLINE,
        )
        .await?;
    // Stop it and wait until its agent finalized it, so one runs at a time.
    let (status, headers, answer) = api
        .call(Method::POST, &format!("{capture}/stop?api-version={NETWORK_API}"), None)
        .await;
    match status {
        // Nothing to wait for (it stopped on its time limit already).
        StatusCode::OK => {}
        StatusCode::ACCEPTED => {
            let location = headers
                .get(reqwest::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| format!("stop {name} answered 202 without Location"))?
                .to_owned();
            let stopping = Instant::now();
            loop {
                let (status, _, answer) = api.call(Method::GET, &location, None).await;
                match status {
                    StatusCode::OK => break,
                    StatusCode::ACCEPTED => {}
                    _ => return Err(format!("stop {name}: monitor answered {status}: {answer}")),
                }
                if stopping.elapsed() > CAPTURE_DEADLINE {
                    return Err(format!("stop {name}: not stopped within {CAPTURE_DEADLINE:?}"));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        _ => return Err(format!("stop {name} answered {status}: {answer}")),
    }
    let (status, _, answer) = api
        .call(Method::DELETE, &format!("{capture}?api-version={NETWORK_API}"), None)
        .await;
    if !status.is_success() {
        return Err(format!("DELETE {name} answered {status}: {answer}"));
    }
    Ok(Sample { put, running })
}

/// A scenario's measured captures, `targets` taken round-robin.
/// Skipped (`None`) unless `BENCH_SCENARIOS` names it.
async fn scenario(api: &Api, settings: &Settings, tag: &str, label: String, targets: &[String]) -> Option<Row> {
    if !settings.scenarios.iter().any(|name| name == tag) {
        return None;
    }
    println!(
        "{label}: {} captures on {} target(s)…",
        settings.captures,
        targets.len()
    );
    let mut samples = Vec::with_capacity(settings.captures);
    let mut failures = 0;
    let mut csv = String::new();
    for i in 0..WARMUP + settings.captures {
        settings.check_deadline(tag);
        let target = &targets[i % targets.len()];
        let name = format!("{tag}-{i:04}");
        let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        match one_capture(api, target, &name, settings.poll).await {
            Ok(sample) if i >= WARMUP => {
                let line = format!(
                    "{name},{:.6},{},{}\n",
                    at.as_secs_f64(),
                    ms(sample.put),
                    ms(sample.running)
                );
                csv.push_str(&line);
                samples.push(sample);
            }
            Ok(_) => {}
            Err(failure) => {
                eprintln!("  {failure}");
                failures += 1;
                assert!(
                    failures <= 10,
                    "more than 10 captures failed in scenario {tag}: stopping"
                );
            }
        }
    }
    if let Some(path) = &settings.samples {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        std::io::Write::write_all(&mut file, csv.as_bytes()).unwrap();
    }
    Some(Row {
        name: label,
        samples,
        failures,
    })
}

/// Nearest-rank percentile `q` (0..=1) of sorted `values`.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank within a small vector"
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1000.0)
}

struct Row {
    name: String,
    samples: Vec<Sample>,
    failures: usize,
}

fn print_latency(rows: &[Row]) {
    println!();
    println!("| scenario | captures | p50 ms | p90 ms | p99 ms | max ms | PUT→201 p50 ms | PUT→201 p99 ms | failed |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        let mut running: Vec<Duration> = row.samples.iter().map(|s| s.running).collect();
        let mut put: Vec<Duration> = row.samples.iter().map(|s| s.put).collect();
        running.sort();
        put.sort();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            row.samples.len(),
            ms(percentile(&running, 0.50)),
            ms(percentile(&running, 0.90)),
            ms(percentile(&running, 0.99)),
            ms(running.last().copied().unwrap_or_default()),
            ms(percentile(&put, 0.50)),
            ms(percentile(&put, 0.99)),
            row.failures,
        );
    }
}

/// Starts `netwatch up --no-agent`; the guard, URL and agent token.
fn start_controller(settings: &Settings, dir: &Path) -> (Guard, String, String) {
    let data = dir.join("up");
    let (up, url) = support::start_up(&settings.binary, dir, dir.join("up.log"), Duration::from_secs(30));
    let credentials: toml::Table =
        toml::from_str(&std::fs::read_to_string(data.join("credentials.toml")).unwrap()).unwrap();
    let agent = credentials["agent_token"].as_str().unwrap().to_owned();
    (up, url, agent)
}

/// `netwatch agent …` against the controller, simulated when `simulate` is set.
fn start_agent(settings: &Settings, dir: &Path, url: &str, token: &str, vm: &str, simulate: Option<usize>) -> Guard {
    let mut command = Command::new(&settings.binary);
    command
        .args(["agent", "--server", url, "--enroll-token", token, "--ca"])
        .arg(dir.join("up/ca.pem"))
        .args(["--vm-name", vm, "-g", GROUP, "-l", "westus", "-i", "lo", "--data-dir"])
        .arg(dir.join(format!("agent-{vm}")))
        .stdout(Stdio::null());
    if let Some(count) = simulate {
        command.args(["--simulate", &count.to_string()]);
    }
    Guard::spawn(&mut command, dir.join(format!("agent-{vm}.log")))
}

/// Waits until `count` VMs named `prefix…` are registered; their ids.
async fn wait_registered(
    api: &Api,
    agents: &mut [Guard],
    prefix: &str,
    count: usize,
    deadline: Duration,
) -> Vec<String> {
    let start = Instant::now();
    let mut interval = Duration::from_millis(20);
    loop {
        let vms = api.vms(prefix).await;
        if vms.len() >= count {
            return vms;
        }
        for agent in agents.iter_mut() {
            agent.check_alive();
        }
        assert!(
            start.elapsed() < deadline,
            "only {} of {count} {prefix}* VMs registered within {deadline:?}",
            vms.len()
        );
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(250));
    }
}

async fn run(settings: Settings) {
    let dir = tempfile::Builder::new().prefix("netwatch-bench-").tempdir().unwrap();
    println!(
        "## Create → Running: {} captures per scenario, {} agents (1 real + {} simulated in {} process(es)), poll every {:?}",
        settings.captures,
        settings.agents,
        settings.agents - 1,
        settings.sim_processes,
        settings.poll
    );
    println!("binary {}, data in {}", settings.binary.display(), dir.path().display());

    let (mut up, url, agent_token) = start_controller(&settings, dir.path());
    let api = Api::of_up(dir.path(), &url, Duration::from_secs(30));
    assert!(api.vms("").await.is_empty(), "a fresh controller has no VMs");
    tokio::time::sleep(SETTLE).await;
    let rss_idle = rss_kib(up.pid()).expect("the controller runs");

    let mut real = [start_agent(&settings, dir.path(), &url, &agent_token, REAL_VM, None)];
    let real_ids = wait_registered(&api, &mut real, REAL_VM, 1, REAL_REGISTER_DEADLINE).await;
    tokio::time::sleep(SETTLE).await;
    let rss_one = rss_kib(up.pid()).expect("the controller runs");

    let one_real = scenario(
        &api,
        &settings,
        "one-real",
        "1 agent: real target".to_owned(),
        &real_ids,
    )
    .await;

    // The simulated agents, split over the processes.
    let simulated = settings.agents - 1;
    let connecting = Instant::now();
    let mut sims: Vec<Guard> = (0..settings.sim_processes)
        .map(|k| {
            let count = simulated / settings.sim_processes + usize::from(k < simulated % settings.sim_processes);
            let vm = if settings.sim_processes == 1 {
                SIM_VM.to_owned()
            } else {
                format!("{SIM_VM}-p{k}")
            };
            start_agent(&settings, dir.path(), &url, &agent_token, &vm, Some(count))
        })
        .collect();
    let sim_ids = wait_registered(&api, &mut sims, SIM_VM, simulated, SIM_REGISTER_DEADLINE).await;
    let connect_time = connecting.elapsed();
    println!(
        "{simulated} simulated agents registered in {:.2} s",
        connect_time.as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    up.check_alive();
    let rss_all = rss_kib(up.pid()).expect("the controller runs");

    let label = format!("{} agents: real target", settings.agents);
    let many_real = scenario(&api, &settings, "many-real", label, &real_ids).await;
    let label = format!("{} agents: simulated targets", settings.agents);
    let many_sim = scenario(&api, &settings, "many-sim", label, &sim_ids).await;
    let rss_end = rss_kib(up.pid()).expect("the controller runs");
    for agent in real.iter_mut().chain(sims.iter_mut()) {
        agent.check_alive();
    }
    up.check_alive();

    let rows: Vec<Row> = [one_real, many_real, many_sim].into_iter().flatten().collect();
    print_latency(&rows);
    // Where a real target's time goes: the agent opening the capture.
    let agent_log = dir.path().join(format!("agent-{REAL_VM}.log"));
    let opens: Vec<(&str, Vec<Duration>)> = ["one-real", "many-real"]
        .into_iter()
        .map(|tag| (tag, open_times(&agent_log, tag)))
        .filter(|(_, times)| !times.is_empty())
        .collect();
    if !opens.is_empty() {
        println!();
        println!(
            "| real agent: capture open (socket, filter, 32 MiB ring), from its log | captures | p50 ms | p90 ms | p99 ms | max ms |"
        );
        println!("| --- | --- | --- | --- | --- | --- |");
        for (tag, times) in &opens {
            println!(
                "| {tag} | {} | {} | {} | {} | {} |",
                times.len(),
                ms(percentile(times, 0.50)),
                ms(percentile(times, 0.90)),
                ms(percentile(times, 0.99)),
                ms(times.last().copied().unwrap_or_default()),
            );
        }
    }
    println!();
    println!("| controller (`netwatch up`) VmRSS | KiB |");
    println!("| --- | --- |");
    println!("| no agent | {rss_idle} |");
    println!("| 1 agent | {rss_one} |");
    println!(
        "| {} agents, connected {:.1} s | {rss_all} |",
        settings.agents,
        SETTLE.as_secs_f64()
    );
    println!("| {} agents, after the captures | {rss_end} |", settings.agents);
    #[expect(clippy::cast_precision_loss, reason = "KiB counts far below 2^52")]
    let per_agent = rss_all.saturating_sub(rss_one) as f64 / simulated.max(1) as f64;
    println!();
    println!("KiB per connected agent: {per_agent:.1} (({rss_all} − {rss_one}) / {simulated})");
    println!(
        "{simulated} simulated agents connected (TLS + WebSocket + hello, registered) in {:.2} s",
        connect_time.as_secs_f64()
    );
    drop(sims);
    drop(real);
    drop(up);
    if settings.keep {
        let kept = dir.keep();
        println!("data and logs kept in {}", kept.display());
    }
}
