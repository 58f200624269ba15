//! One capture over a whole scale set (issue 13): create → every instance
//! Running, with `BENCH_AGENTS` simulated hosts joined to one scale set.
//! Prints figures; it asserts nothing. `scripts/bench-fleet.sh` runs it.
//!
//! What it does, all on 127.0.0.1:
//! 1. `netwatch up --no-agent` on a fresh data directory (the release binary:
//!    `NETWATCH_BIN`);
//! 2. `vmss extension set` (the REST PUT) for scale set `bench-fleet`: one
//!    reusable key;
//! 3. `netwatch agent --simulate BENCH_AGENTS` with that key: every simulated
//!    host joins the scale set (its own instance id), timed until all are
//!    listed as instances;
//! 4. `BENCH_CAPTURES` captures, one after another, each `targetType:
//!    AzureVMSS` over the whole scale set: `PUT`, then `GET` of its
//!    `Azure-AsyncOperation` monitor every `BENCH_POLL_US` until `Succeeded`,
//!    which the controller answers once every connected host has reported the
//!    capture Running (or failed); then `queryStatus` checks that the summary
//!    says every instance runs (not timed), and the capture is deleted (which
//!    stops it on every host). The first `WARMUP` are not counted.
//!
//! Bounded: every wait has a deadline, the whole run `BENCH_DEADLINE_S`.
//! `BENCH_KEEP=1` keeps the data directory and the processes' logs.

#![allow(clippy::unwrap_used, reason = "a benchmark stops loudly on any unexpected error")]

mod support;

use support::{Api, Guard, env_or, rss_kib};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

const SUB: &str = "00000000-0000-0000-0000-000000000000";
const NETWORK_API: &str = "2024-05-01";
const COMPUTE_API: &str = "2024-07-01";
const GROUP: &str = "bench";
const SET: &str = "bench-fleet";
const WARMUP: usize = 2;
/// How long one capture may take to run everywhere.
const CAPTURE_DEADLINE: Duration = Duration::from_secs(60);
/// How long the simulated hosts may take to join, all of them.
const JOIN_DEADLINE: Duration = Duration::from_secs(300);

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("fleet_create: a benchmark; run it with `cargo bench -p netwatch --bench fleet_create`");
        return;
    }
    let binary = std::env::var_os("NETWATCH_BIN")
        .filter(|bin| !bin.is_empty())
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_netwatch")), PathBuf::from);
    let settings = Settings {
        binary,
        captures: env_or("BENCH_CAPTURES", 30),
        agents: env_or("BENCH_AGENTS", 1000),
        poll: Duration::from_micros(env_or("BENCH_POLL_US", 1000)),
        deadline: Instant::now() + Duration::from_secs(env_or("BENCH_DEADLINE_S", 900)),
    };
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
    poll: Duration,
    deadline: Instant,
}

fn set_id() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.Compute/virtualMachineScaleSets/{SET}")
}

/// PUT → first `Succeeded`, and PUT → 201.
#[derive(Debug, Clone, Copy)]
struct Sample {
    put: Duration,
    running: Duration,
}

async fn one_capture(api: &Api, name: &str, agents: usize, poll: Duration) -> Result<Sample, String> {
    let capture = format!(
        "/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/\
         NetworkWatcher_westus/packetCaptures/{name}"
    );
    let body = json!({"properties": {
        "target": set_id(),
        "targetType": "AzureVMSS",
        "storageLocation": {"filePath": format!("/var/captures/{name}.cap")},
        "timeLimitInSeconds": 600,
    }});
    let (put, running) = api
        .create_until_running(
            &format!("{capture}?api-version={NETWORK_API}"),
            &body,
            poll,
            CAPTURE_DEADLINE,
        )
        .await?;
    // Not timed: the rollup must say every instance runs.
    let (status, _, answer) = api
        .call(
            Method::POST,
            &format!("{capture}/queryStatus?api-version={NETWORK_API}"),
            None,
        )
        .await;
    let running_now = answer["netwatch"]["summary"]["running"].as_u64().unwrap_or(0);
    if status != StatusCode::OK || running_now != agents as u64 {
        return Err(format!(
            "create {name}: Succeeded, but queryStatus says {running_now} of {agents} instances run: {}",
            answer["netwatch"]["summary"]
        ));
    }
    let (status, _, answer) = api
        .call(Method::DELETE, &format!("{capture}?api-version={NETWORK_API}"), None)
        .await;
    if !status.is_success() {
        return Err(format!("DELETE {name} answered {status}: {answer}"));
    }
    Ok(Sample { put, running })
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short list"
    )]
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1000.0)
}

async fn instances(api: &Api) -> usize {
    let path = format!("{}/virtualMachines?api-version={COMPUTE_API}", set_id());
    let (status, _, body) = api.call(Method::GET, &path, None).await;
    if status != StatusCode::OK {
        return 0;
    }
    body["value"].as_array().map_or(0, Vec::len)
}

fn start_sims(settings: &Settings, dir: &Path, url: &str, key: &str) -> Guard {
    let mut command = Command::new(&settings.binary);
    command
        .args(["agent", "--server", url, "--enroll-token", key, "--ca"])
        .arg(dir.join("up/ca.pem"))
        .args([
            "--vm-name",
            "fleet",
            "-g",
            GROUP,
            "-l",
            "westus",
            "-i",
            "lo",
            "--data-dir",
        ])
        .arg(dir.join("agent-sim"))
        .args(["--simulate", &settings.agents.to_string()])
        .stdout(Stdio::null());
    Guard::spawn(&mut command, dir.join("agent-sim.log"))
}

async fn run(settings: Settings) {
    let dir = tempfile::Builder::new().prefix("netwatch-bench-").tempdir().unwrap();
    println!(
        "## One capture over a scale set of {} simulated hosts: create → every instance Running, {} captures, poll every {:?}",
        settings.agents, settings.captures, settings.poll
    );
    let (mut up, url) = support::start_up(
        &settings.binary,
        dir.path(),
        dir.path().join("up.log"),
        Duration::from_secs(30),
    );
    let api = Api::of_up(dir.path(), &url, Duration::from_secs(60));
    let extension = format!(
        "{}/extensions/NetworkWatcherAgentLinux?api-version={COMPUTE_API}",
        set_id()
    );
    let body = json!({"location": "westus", "properties": {"publisher": "Microsoft.Azure.NetworkWatcher",
        "type": "NetworkWatcherAgentLinux", "typeHandlerVersion": "1.4"}});
    let (status, _, made) = api.call(Method::PUT, &extension, Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "vmss extension set: {made}");
    let key = made["properties"]["netwatch"]["enrollment"]["key"]
        .as_str()
        .unwrap()
        .to_owned();

    let joining = Instant::now();
    let mut sims = start_sims(&settings, dir.path(), &url, &key);
    let mut wait = Duration::from_millis(50);
    loop {
        let joined = instances(&api).await;
        if joined >= settings.agents {
            break;
        }
        sims.check_alive();
        assert!(
            joining.elapsed() < JOIN_DEADLINE,
            "only {joined} of {} hosts joined within {JOIN_DEADLINE:?}",
            settings.agents
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(500));
    }
    println!(
        "{} simulated hosts joined the scale set in {:.2} s",
        settings.agents,
        joining.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_joined = rss_kib(up.pid()).unwrap_or_default();

    let mut samples = Vec::new();
    let mut failed = 0;
    for i in 0..WARMUP + settings.captures {
        assert!(
            Instant::now() < settings.deadline,
            "the benchmark ran past BENCH_DEADLINE_S"
        );
        match one_capture(&api, &format!("fleet-{i}"), settings.agents, settings.poll).await {
            Ok(sample) if i >= WARMUP => samples.push(sample),
            Ok(_) => {}
            Err(error) => {
                eprintln!("{error}");
                failed += 1;
                assert!(failed <= 3, "more than 3 captures failed: stopping");
            }
        }
        // Let the hosts' stop reports of the deleted capture drain.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    up.check_alive();
    let rss_end = rss_kib(up.pid()).unwrap_or_default();
    let mut running: Vec<Duration> = samples.iter().map(|s| s.running).collect();
    let mut put: Vec<Duration> = samples.iter().map(|s| s.put).collect();
    running.sort();
    put.sort();
    println!();
    println!("| scenario | captures | p50 ms | p90 ms | p99 ms | max ms | PUT→201 p50 ms | PUT→201 p99 ms | failed |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    if !running.is_empty() {
        println!(
            "| scale set of {}: create → all Running | {} | {} | {} | {} | {} | {} | {} | {failed} |",
            settings.agents,
            running.len(),
            ms(percentile(&running, 0.50)),
            ms(percentile(&running, 0.90)),
            ms(percentile(&running, 0.99)),
            ms(*running.last().unwrap()),
            ms(percentile(&put, 0.50)),
            ms(percentile(&put, 0.99)),
        );
    }
    println!();
    println!("controller VmRSS: {rss_joined} KiB with every host joined, {rss_end} KiB after the captures");
    drop(sims);
    drop(up);
    if std::env::var_os("BENCH_KEEP").is_some_and(|keep| keep == "1") {
        let kept = dir.keep();
        println!("data and logs kept in {}", kept.display());
    }
}
