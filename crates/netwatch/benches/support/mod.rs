//! What the benchmarks share (`mod support;` in each): settings from the
//! environment, processes killed when dropped, `/proc` readings, and the
//! controller's REST API over one HTTPS connection.

#![allow(dead_code, reason = "each benchmark uses a part of it")]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

pub(crate) fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) if !text.is_empty() => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a valid value")),
        _ => default,
    }
}

pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// A child process killed when dropped (the run ended, or panicked).
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Guard {
    pub(crate) fn spawn(command: &mut Command, log: PathBuf) -> Guard {
        let child = command
            .stdin(Stdio::null())
            // Plain logs: the benchmarks read the agents' step times back from them.
            .env("NO_COLOR", "1")
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {command:?}: {err}"));
        Guard { child, log }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the end of its log if the process exited.
    pub(crate) fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its log ends:\n{}",
                self.log.display(),
                tail(&self.log)
            );
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `VmRSS` of process `pid`, KiB; `None` once it is gone.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The controller's REST API over one kept-alive HTTPS connection.
pub(crate) struct Api {
    pub(crate) client: reqwest::Client,
    pub(crate) url: String,
    pub(crate) authorization: String,
}

impl Api {
    /// The API of the `netwatch up` whose data is in `dir/up`, at `url`, as
    /// its admin, trusting its CA; each request may take `timeout`.
    pub(crate) fn of_up(dir: &Path, url: &str, timeout: Duration) -> Api {
        let ca = std::fs::read(dir.join("up/ca.pem")).unwrap();
        let credentials: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join("up/credentials.toml")).unwrap()).unwrap();
        let admin = credentials["admin_token"].as_str().unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1)
            .timeout(timeout)
            .build()
            .unwrap();
        Api {
            client,
            url: url.to_owned(),
            authorization: format!("Bearer {admin}"),
        }
    }

    /// `PUT {capture}` with `body`, then, when it answered with one, its
    /// `Azure-AsyncOperation` monitor every `poll` until `Succeeded` (within
    /// `deadline`): PUT sent → 201 read, and PUT sent → Running known (the
    /// 201 itself when it is final, without a monitor: issue 15).
    pub(crate) async fn create_until_running(
        &self,
        capture: &str,
        body: &Value,
        poll: Duration,
        deadline: Duration,
    ) -> Result<(Duration, Duration), String> {
        let sent = Instant::now();
        let (status, headers, answer) = self.call(Method::PUT, capture, Some(body)).await;
        let put = sent.elapsed();
        if status != StatusCode::CREATED {
            return Err(format!("PUT {capture} answered {status}: {answer}"));
        }
        let Some(monitor) = headers
            .get("azure-asyncoperation")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
        else {
            return match answer["properties"]["provisioningState"].as_str() {
                Some("Succeeded") => Ok((put, put)),
                _ => Err(format!(
                    "PUT {capture} answered neither a final state nor a monitor: {answer}"
                )),
            };
        };
        loop {
            let (status, _, operation) = self.call(Method::GET, &monitor, None).await;
            match (status, operation["status"].as_str()) {
                (StatusCode::OK, Some("Succeeded")) => return Ok((put, sent.elapsed())),
                (StatusCode::OK, Some("InProgress")) => {}
                _ => return Err(format!("create {capture}: monitor answered {status}: {operation}")),
            }
            if sent.elapsed() > deadline {
                return Err(format!("create {capture}: not Running within {deadline:?}"));
            }
            tokio::time::sleep(poll).await;
        }
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        target: &str,
        body: Option<&Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let url = if target.starts_with("https://") {
            target.to_owned()
        } else {
            format!("{}{target}", self.url)
        };
        let mut request = self
            .client
            .request(method, &url)
            .header(reqwest::header::AUTHORIZATION, &self.authorization);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap_or_else(|err| panic!("{url}: {err}"));
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_else(|err| panic!("{url}: {err}"));
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, headers, value)
    }
}

/// Starts `netwatch up --no-agent` (the binary `binary`) on 127.0.0.1, its
/// data in `dir/up` and its log in `log`; the guard and its URL, read from its
/// banner within `deadline`.
pub(crate) fn start_up(binary: &Path, dir: &Path, log: PathBuf, deadline: Duration) -> (Guard, String) {
    let mut command = Command::new(binary);
    command
        .args(["up", "--no-agent", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("up"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdout(Stdio::piped());
    let mut up = Guard::spawn(&mut command, log);
    let stdout = up.child.stdout.take().unwrap();
    let (found_tx, found_rx) = std::sync::mpsc::channel();
    // Reads the banner for the URL, then keeps reading so the pipe never fills.
    std::thread::spawn(move || {
        let mut found_tx = Some(found_tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.trim().strip_prefix("URL:")
                && let Some(found_tx) = found_tx.take()
            {
                let _ = found_tx.send(url.trim().to_owned());
            }
        }
    });
    let url = found_rx.recv_timeout(deadline).unwrap_or_else(|_| {
        panic!(
            "netwatch up printed no URL within {deadline:?}; its log:\n{}",
            tail(&up.log)
        )
    });
    (up, url)
}
