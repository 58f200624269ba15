//! Running the real `netwatch` binary in a test host's namespace.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netwatch_testkit::NetnsPair;

pub fn netwatch() -> &'static str {
    env!("CARGO_BIN_EXE_netwatch")
}

/// Held by a test while it changes the machine's own system files (the
/// package test's `dpkg -i`), and by a test host while it copies `/etc`, so
/// that copy never holds another test's user or config.
pub static SYSTEM_FILES: Mutex<()> = Mutex::new(());

/// The version the built `netwatch` says it is (`netwatch --version`).
pub fn version() -> String {
    let out = netwatch_testkit::run(Command::new(netwatch()).arg("--version"));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).unwrap_or_default().to_owned()
}

/// `netwatch capture …` running in a namespace; stderr collected as it comes.
#[derive(Debug)]
pub struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// A finished capture process.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stderr: String,
}

impl Finished {
    /// The last `--stats-json` line (the one with `stopReason`).
    pub fn stats(&self) -> serde_json::Value {
        self.stderr
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v.get("stopReason").is_some())
            .unwrap_or_else(|| panic!("no final stats line in stderr:\n{}", self.stderr))
    }

    pub fn stop_reason(&self) -> String {
        self.stats()["stopReason"].as_str().unwrap_or_default().to_owned()
    }
}

impl Running {
    /// Starts `netwatch capture ARGS` in `ns` and waits (10 s at most) until it
    /// says it is listening: from then on every packet is captured.
    pub fn start(ns: &str, args: &[&str]) -> Running {
        Self::start_with_stdout(ns, args, Stdio::null())
    }

    /// As [`Running::start`], with the capture's standard output sent to `stdout`.
    pub fn start_with_stdout(ns: &str, args: &[&str], stdout: Stdio) -> Running {
        let mut child = NetnsPair::exec(ns, netwatch())
            .arg("capture")
            .args(args)
            .arg("--stats-json")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netwatch capture");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().expect("stderr lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut run = Running {
            child,
            stderr,
            reader: Some(reader),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if run.stderr_text().contains("listening on") {
                return run;
            }
            if let Ok(Some(status)) = run.child.try_wait() {
                let f = run.finish_with(status);
                panic!(
                    "netwatch capture {args:?} exited ({}) before listening:\n{}",
                    f.status, f.stderr
                );
            }
            assert!(
                Instant::now() < deadline,
                "netwatch capture {args:?} not listening after 10 s:\n{}",
                run.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn finish_with(&mut self, status: ExitStatus) -> Finished {
        if let Some(r) = self.reader.take() {
            r.join().expect("stderr reader");
        }
        Finished {
            status,
            stderr: self.stderr_text(),
        }
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return self.finish_with(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let status = self.child.wait().expect("wait");
                let f = self.finish_with(status);
                panic!(
                    "netwatch capture still running after {limit:?}; killed. stderr:\n{}",
                    f.stderr
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (e.g. "INT", "TERM", "KILL") to the capture.
    pub fn signal(&self, signal: &str) {
        netwatch_testkit::run(
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(self.pid().to_string()),
        );
    }

    /// SIGINT, then waits (10 s at most).
    pub fn stop(self) -> Finished {
        self.signal("INT");
        self.wait(Duration::from_secs(10))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `netwatch ARGS` to completion (no namespace), with a bounded wait.
pub fn netwatch_cmd(args: &[&str]) -> Finished {
    let mut child = Command::new(netwatch())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netwatch");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "netwatch {args:?} did not finish in 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    Finished {
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    }
}

/// Waits until `path` holds at least `n` complete records (10 s at most).
pub fn wait_for_records(path: &Path, n: usize) {
    let ok = netwatch_testkit::eventually(200, Duration::from_millis(50), || {
        std::fs::read(path)
            .ok()
            .and_then(|b| netwatch_capture::pcap::Records::new(&b).ok().map(|r| r.count()))
            .is_some_and(|c| c >= n)
    });
    assert!(ok, "{} did not reach {n} packets in 10 s", path.display());
}

/// The last `lines` lines of every `*.log` file in `dir`, by name: enough of
/// each process's log to see why a test failed.
pub fn log_tails(dir: &Path, lines: usize) -> String {
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    names.sort();
    let mut logs = String::new();
    for name in names {
        let text = std::fs::read_to_string(&name).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        logs.push_str(&format!("--- {}\n", name.display()));
        for line in tail.iter().rev() {
            logs.push_str(line);
            logs.push('\n');
        }
    }
    logs
}
