//! Schemathesis (PyPI `schemathesis`, its virtualenv from scripts/test.sh,
//! `NETWATCH_TEST_SCHEMATHESIS`) against a real controller: `netwatch up
//! --no-agent` on loopback, requests generated from the OpenAPI document it
//! serves (`/netwatch/v1/openapi.json`), valid and invalid, sent with the admin
//! token. No answer may be a 5xx (`not_a_server_error`, and every status in the
//! HAR report counted again here), and every documented answer must fit its
//! schema (`response_schema_conformance`).
//!
//! Two runs: one with the path parameters schemathesis makes up (names and ids
//! ARM's rules refuse or that name nothing), one with those of resources that
//! exist (`up`'s VM and storage account, a network watcher made first), so
//! bodies reach the store. Bounded by `--max-examples` per operation (about
//! 20 s a run). Not tested: the agent channel, a WebSocket upgrade (schemathesis
//! would reuse the upgraded connection for its next requests).
//!
//! Tolerated, and counted: "Network Error"s. The controller answers some
//! requests (415 for a wrong Content-Type, 400/403 on a part upload) without
//! reading their body, and hyper then closes the connection; a client still
//! sending a large body (a few hundred KiB) sees EOF instead of the answer.
//! The controller must still be up after each run, which a crash would fail.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::deployment::{Guard, SUB};
use crate::util::netwatch;

/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "15";

fn schemathesis() -> PathBuf {
    match std::env::var_os("NETWATCH_TEST_SCHEMATHESIS") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "NETWATCH_TEST_SCHEMATHESIS is not set: it names schemathesis's command (PyPI schemathesis). \
             scripts/test.sh installs it; by hand: python3 -m venv V && V/bin/pip install \
             -r scripts/test-schemathesis-requirements.txt && NETWATCH_TEST_SCHEMATHESIS=V/bin/schemathesis cargo test"
        ),
    }
}

/// `netwatch up --no-agent` on 127.0.0.1, port 0, over `dir/up`: the process and its URL.
fn start_up(dir: &Path) -> (Guard, String) {
    let log = std::fs::File::create(dir.join("up.log")).unwrap();
    let mut up = Command::new(netwatch())
        .args(["up", "--no-agent", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("up"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn netwatch up");
    let stdout = up.stdout.take().unwrap();
    let up = Guard(up);
    let mut lines = BufReader::new(stdout).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| line.trim().strip_prefix("URL:").map(|url| url.trim().to_owned()));
    std::thread::spawn(move || lines.for_each(drop));
    let url = url.unwrap_or_else(|| panic!("netwatch up printed no URL; its log:\n{}", log_of(dir)));
    (up, url)
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("up.log")).unwrap_or_default()
}

/// The admin token `up` wrote into its credentials file.
fn admin_token(data: &Path) -> String {
    let text = std::fs::read_to_string(data.join("credentials.toml")).unwrap();
    let line = text
        .lines()
        .find(|line| line.trim_start().starts_with("admin_token"))
        .expect("admin_token in credentials.toml");
    line.split('"').nth(1).expect("a quoted token").to_owned()
}

/// What one run did.
#[derive(Debug)]
struct Outcome {
    operations: u64,
    requests: usize,
    test_cases: u64,
    failures: usize,
    /// Requests that got no answer: the connection closed while schemathesis
    /// was still sending a large body that the controller answered (400, 415)
    /// without reading. Tolerated while the controller stays up.
    network_errors: u64,
    server_errors: Vec<String>,
    seed: String,
}

/// One schemathesis run against `url` (config `config`, if any); named `name` in files and output.
fn run(name: &str, dir: &Path, url: &str, token: &str, config: Option<&Path>) -> Outcome {
    let json = dir.join(format!("{name}.json"));
    let har = dir.join(format!("{name}.har"));
    let mut command = Command::new(schemathesis());
    if let Some(config) = config {
        command.arg("--config-file").arg(config);
    }
    let output = command
        .arg("run")
        .arg(format!("{url}/netwatch/v1/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .arg("--tls-verify")
        .arg(dir.join("up/ca.pem"))
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--exclude-path", "/netwatch/v1/agent/channel"])
        // A stream that does not end: tests/openapi.rs reads it to its first
        // snapshot, and the console's browser test follows it.
        .args(["--exclude-path", "/netwatch/v1/captures/events"])
        .args([
            "--max-examples",
            MAX_EXAMPLES,
            "--workers",
            "1",
            "--request-timeout",
            "30",
        ])
        .args(["--report", "json,har", "--report-json-path"])
        .arg(&json)
        .arg("--report-har-path")
        .arg(&har)
        .env("NO_COLOR", "1")
        // Its cache (.schemathesis/) goes with the test's files, not into the source tree.
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("run {}: {err}", schemathesis().display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let read = |path: &Path| -> Value {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|err| panic!("schemathesis wrote no {}: {err}\n{stdout}\n{stderr}", path.display()));
        serde_json::from_str(&text).unwrap()
    };
    let report = read(&json);
    let errors = report["errors"].as_array().cloned().unwrap_or_default();
    let other_errors: Vec<&Value> = errors.iter().filter(|e| e["title"] != "Network Error").collect();
    let entries = read(&har)["log"]["entries"].as_array().cloned().unwrap_or_default();
    let server_errors: Vec<String> = entries
        .iter()
        .filter(|entry| entry["response"]["status"].as_u64().is_some_and(|status| status >= 500))
        // Not a fault of the server: a download from a storage account the
        // generated requests made themselves, at an endpoint that does not
        // answer, is 503 StorageUnavailable (documented), as it must be.
        .filter(|entry| !storage_unreachable(entry))
        .map(|entry| {
            format!(
                "{} {} -> {}",
                entry["request"]["method"].as_str().unwrap_or("?"),
                entry["request"]["url"].as_str().unwrap_or("?"),
                entry["response"]["status"]
            )
        })
        .collect();
    let outcome = Outcome {
        operations: report["operations"]["tested"].as_u64().unwrap_or(0),
        requests: entries.len(),
        test_cases: report["test_cases"]["generated"].as_u64().unwrap_or(0),
        failures: report["failures"].as_array().map_or(0, Vec::len),
        network_errors: errors
            .iter()
            .filter(|e| e["title"] == "Network Error")
            .filter_map(|e| e["count"].as_u64())
            .sum(),
        server_errors,
        // The JSON report's seed is a 128-bit number: take the text schemathesis prints.
        seed: stdout
            .lines()
            .find_map(|line| line.strip_prefix("Seed: "))
            .unwrap_or("?")
            .to_owned(),
    };
    let line = format!(
        "schemathesis ({name}): {} operations tested, {} requests, {} test cases, {} failures, {} 5xx, \
         {} network errors (seed {})",
        outcome.operations,
        outcome.requests,
        outcome.test_cases,
        outcome.failures,
        outcome.server_errors.len(),
        outcome.network_errors,
        outcome.seed
    );
    println!("{line}");
    // For scripts/test.sh's summary after the suite.
    let summary = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("schemathesis");
    std::fs::create_dir_all(&summary).unwrap();
    std::fs::write(summary.join(format!("{name}.txt")), format!("{line}\n")).unwrap();
    assert!(
        report["complete"] == true
            && outcome.failures == 0
            && outcome.server_errors.is_empty()
            && other_errors.is_empty(),
        "schemathesis ({name}) failed: {} failures, errors {other_errors:?}, 5xx answers:\n{}\n\n{stdout}\n{stderr}\n\
         controller log:\n{}",
        outcome.failures,
        outcome.server_errors.join("\n"),
        log_of(dir)
    );
    assert!(
        outcome.operations >= 30 && outcome.requests > 1000,
        "{outcome:?}\n{stdout}"
    );
    outcome
}

#[test]
fn no_generated_request_gets_a_server_error_and_answers_fit_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let (mut up, url) = start_up(dir.path());
    let token = admin_token(&dir.path().join("up"));
    let mut still_up = |after: &str| {
        let exited = up.0.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "the controller exited ({exited:?}) during {after}; its log:\n{}",
            log_of(dir.path())
        );
    };

    run("generated-paths", dir.path(), &url, &token, None);
    still_up("generated-paths");

    // The resources `up` made (VM `vm` in group `netwatch`, account
    // `netwatchlocal`) and a network watcher, named in every path.
    let configure = Command::new(netwatch())
        .args([
            "network",
            "watcher",
            "configure",
            "-g",
            "netwatch",
            "-l",
            "westus",
            "--enabled",
            "true",
        ])
        .args(["-o", "none"])
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .output()
        .unwrap();
    assert!(
        configure.status.success(),
        "network watcher configure: {}",
        String::from_utf8_lossy(&configure.stderr)
    );
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[parameters]\nsubscriptionId = \"{SUB}\"\nresourceGroupName = \"netwatch\"\nvmName = \"vm\"\n\
             networkWatcherName = \"NetworkWatcher_westus\"\naccountName = \"netwatchlocal\"\nlocation = \"westus\"\n"
        ),
    )
    .unwrap();
    run("known-resources", dir.path(), &url, &token, Some(&config));
    still_up("known-resources");
}

/// A HAR entry that is a download answered 503 `StorageUnavailable`.
fn storage_unreachable(entry: &Value) -> bool {
    entry["response"]["status"] == 503
        && entry["request"]["url"]
            .as_str()
            .is_some_and(|url| url.contains("/netwatch/v1/storage/"))
        && (entry["request"]["method"] == "HEAD"
            || entry["response"]["content"]["text"]
                .as_str()
                .is_some_and(|text| text.contains("StorageUnavailable")))
}
