//! Real storage servers for tests: Azurite (Azure Blob), moto (S3) and
//! fake-gcs-server (Google Cloud Storage), each started by the test on
//! 127.0.0.1 with a fresh container or bucket of a unique name. Azurite and
//! moto take port 0 and print the port they got; fake-gcs-server does not, so
//! it gets a port found free just before. None is a mock written here: the
//! tests talk to the same servers ecosystem.md §2 verified.
//!
//! The binaries come from `scripts/test.sh`, which installs them and names
//! them in `NETWATCH_TEST_AZURITE`, `NETWATCH_TEST_MOTO` and
//! `NETWATCH_TEST_FAKE_GCS`; without those a test fails saying so (STYLE 31),
//! it never skips.
//!
//! Each server is killed when its guard drops. [`Azurite::stop`] and
//! [`Azurite::start_again`] let a test take storage away mid-upload and bring
//! it back on the same port with the same data (Azurite keeps its data in a
//! temporary directory); moto and fake-gcs-server keep their data in memory,
//! so [`Moto::start_again`] and [`FakeGcs::start_again`] come back empty but
//! for the bucket, made again.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How long a server may take to listen: Azurite takes ~2 s, 4.5 s on its
/// first start ever (ecosystem.md §2); two busy cores slow it further.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped server may take to exit (Azurite ~1.5 s, moto ~2.2 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

static NAMES: AtomicU32 = AtomicU32::new(0);

/// A container or bucket name no other test of any process uses:
/// `nwt-{pid}-{n}`, valid for both services.
fn unique_name() -> String {
    format!("nwt-{}-{}", std::process::id(), NAMES.fetch_add(1, Ordering::Relaxed))
}

/// The program an env var names; fails the test when it is unset.
fn program(var: &str, what: &str) -> String {
    match std::env::var(var) {
        Ok(path) if !path.is_empty() => {
            assert!(
                Path::new(&path).exists(),
                "{var}={path} does not exist: run scripts/test.sh, which installs {what}"
            );
            path
        }
        _ => panic!(
            "{var} is not set: it names {what}, which scripts/test.sh installs and exports; \
             run the tests with scripts/test.sh (or export {var} as it does)"
        ),
    }
}

/// A server process and its log, killed on drop.
#[derive(Debug)]
struct Server {
    name: &'static str,
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Server {
    /// Runs `cmd` with its output in `log`, waits until the log has a line
    /// with `ready` followed by the URL, returns the port it names.
    fn spawn(name: &'static str, place: &Place, mut cmd: Command, log: &Path, ready: &str) -> (Self, u16) {
        let out = std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("a file handle can be cloned");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let mut server = Self {
            name,
            child: Some(child),
            log: log.to_path_buf(),
        };
        let port = server.wait_ready(place, ready);
        (server, port)
    }

    fn wait_ready(&mut self, place: &Place, ready: &str) -> u16 {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(port) = text.lines().find_map(|line| port_after(line, ready, &place.host)) {
                place.run(|| wait_connectable(&place.host, port, deadline));
                return port;
            }
            let child = self.child.as_mut().expect("a started server has a child");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited ({status}) before listening; its output:\n{text}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen within {START_TIMEOUT:?}; its output:\n{text}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `cmd`, which listens on `port` once it runs, with its output in
    /// `log`, and waits until the port takes connections. `Err` with the
    /// output when the process exits first (the port was taken meanwhile).
    fn spawn_on(name: &'static str, place: &Place, mut cmd: Command, log: &Path, port: u16) -> Result<Self, String> {
        let out = std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("a file handle can be cloned");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let mut server = Self {
            name,
            child: Some(child),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if place.run(|| TcpStream::connect((place.host.as_str(), port)).is_ok()) {
                return Ok(server);
            }
            let child = server.child.as_mut().expect("a started server has a child");
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&server.log).unwrap_or_default();
                return Err(format!(
                    "{name} exited ({status}) before listening on port {port}; its output:\n{text}"
                ));
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on port {port} within {START_TIMEOUT:?}; its output:\n{}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process (SIGKILL) and waits for it: for servers that do
    /// not exit on SIGTERM (fake-gcs-server).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM (Azurite saves its data on it) and
    /// waits for it; SIGKILL if it does not go in time.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where a server runs: a network namespace (the test hosts' `b`, say, so
/// that hosts in other namespaces reach it over the veth pair) or this one,
/// and the address it listens on.
#[derive(Debug, Clone)]
pub struct Place {
    pub netns: Option<String>,
    pub host: String,
}

impl Place {
    /// 127.0.0.1 in the test's own namespace.
    pub fn local() -> Self {
        Self {
            netns: None,
            host: "127.0.0.1".to_owned(),
        }
    }

    /// `host` in namespace `netns`.
    pub fn netns(netns: &str, host: &str) -> Self {
        Self {
            netns: Some(netns.to_owned()),
            host: host.to_owned(),
        }
    }

    /// `program`, run in this place's namespace.
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => crate::NetnsPair::exec(ns, program),
            None => Command::new(program),
        }
    }

    /// Runs `f` where this place's address is reachable: on a thread that
    /// entered its namespace, if it has one.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let Some(ns) = &self.netns else {
            return f();
        };
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = std::fs::File::open(format!("/var/run/netns/{ns}"))
                        .unwrap_or_else(|e| panic!("open namespace {ns}: {e}"));
                    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("enter namespace {ns}: {e}"));
                    f()
                })
                .join()
                .expect("the namespace thread ran")
        })
    }
}

/// The port of `http://{host}:PORT` after `marker` in `line`.
fn port_after(line: &str, marker: &str, host: &str) -> Option<u16> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let rest = rest
        .trim_start()
        .strip_prefix("http://")?
        .strip_prefix(host)?
        .strip_prefix(':')?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&port| port != 0)
}

fn wait_connectable(host: &str, port: u16, deadline: Instant) {
    while TcpStream::connect((host, port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {host}:{port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends one HTTP/1.1 request to `place`'s `port`; the status and body.
/// Plain HTTP by hand: the kit stays synchronous and free of an HTTP client.
fn http(place: &Place, port: u16, method: &str, target: &str, headers: &[(&str, String)]) -> (u16, String) {
    http_with_body(place, port, method, target, headers, "")
}

/// [`http`] with a request body.
fn http_with_body(
    place: &Place,
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String) {
    place.run(|| http_here(&place.host, port, method, target, headers, body))
}

fn http_here(
    host: &str,
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect((host, port)).unwrap_or_else(|e| panic!("connect to {host}:{port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a timeout can be set");
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Azurite's blob service, with a fresh container.
#[derive(Debug)]
pub struct Azurite {
    server: Server,
    place: Place,
    /// Where Azurite keeps its data, across [`Azurite::start_again`].
    dir: tempfile::TempDir,
    port: u16,
    container: String,
}

impl Azurite {
    /// Azurite's one account (its documented development account).
    pub const ACCOUNT: &str = "devstoreaccount1";
    /// That account's key (documented with Azurite; not a secret).
    pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    /// Starts Azurite on a port of its choosing and creates a container of a unique name.
    pub fn start() -> Self {
        Self::start_at(Place::local())
    }

    /// Starts Azurite at `place` (see [`Place`]) and creates a container of a unique name.
    pub fn start_at(place: Place) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (server, port) = Self::spawn(&place, dir.path(), 0);
        let azurite = Self {
            server,
            place,
            dir,
            port,
            container: unique_name(),
        };
        azurite.create_container(&azurite.container);
        azurite
    }

    fn spawn(place: &Place, dir: &Path, port: u16) -> (Server, u16) {
        let mut cmd = place.command(&program("NETWATCH_TEST_AZURITE", "Azurite's azurite-blob"));
        // --skipApiVersionCheck: clients newer than Azurite are served;
        // --disableTelemetry: without it Azurite ignores SIGTERM for 30 s
        // waiting on an outside host (ecosystem.md §2).
        cmd.args(["--blobHost", &place.host, "--blobPort", &port.to_string(), "--location"])
            .arg(dir.join("data"))
            .args(["--skipApiVersionCheck", "--disableTelemetry"]);
        Server::spawn(
            "azurite",
            place,
            cmd,
            &dir.join(format!("azurite-{port}.log")),
            "successfully listens on",
        )
    }

    /// The blob service's URL: path-style, `http://{host}:{port}/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}/{}", self.place.host, self.port, Self::ACCOUNT)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn account(&self) -> &str {
        Self::ACCOUNT
    }

    pub fn key(&self) -> &str {
        Self::KEY
    }

    /// The container made for this test.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// Creates container `name` (Create Container, signed with the account key).
    pub fn create_container(&self, name: &str) {
        let (status, body) = self.signed(
            "PUT",
            &format!("/{}/{name}?restype=container", Self::ACCOUNT),
            &format!("/{}/{}/{name}\nrestype:container", Self::ACCOUNT, Self::ACCOUNT),
        );
        assert_eq!(status, 201, "create container {name} in Azurite: {body}");
    }

    /// A SAS token (query string, no `?`) for this test's container that
    /// allows reading, adding, creating, writing and deleting blobs until 2099.
    pub fn container_sas(&self) -> String {
        // Service SAS for a container, version 2020-12-06 and later: the
        // 16 fields of the string to sign, most empty
        // (learn.microsoft.com/rest/api/storageservices/create-service-sas).
        let (permissions, expiry, version) = ("racwd", "2099-01-01T00:00:00Z", "2021-08-06");
        let resource = format!("/blob/{}/{}", Self::ACCOUNT, self.container);
        let to_sign = format!("{permissions}\n\n{expiry}\n{resource}\n\n\n\n{version}\nc\n\n\n\n\n\n\n");
        let sig = sign(&to_sign);
        let mut query = format!("sv={version}&sr=c&sp={permissions}&se={expiry}&sig=");
        query.extend(sig.chars().map(|c| match c {
            '+' => "%2B".to_owned(),
            '/' => "%2F".to_owned(),
            '=' => "%3D".to_owned(),
            c => c.to_string(),
        }));
        query
    }

    /// A request signed with Shared Key
    /// (learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key):
    /// no body, so every standard header of the string to sign is empty.
    fn signed(&self, method: &str, target: &str, canonical_resource: &str) -> (u16, String) {
        let date = httpdate::fmt_http_date(SystemTime::now());
        let version = "2021-08-06";
        let to_sign =
            format!("{method}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{canonical_resource}");
        let auth = format!("SharedKey {}:{}", Self::ACCOUNT, sign(&to_sign));
        http(
            &self.place,
            self.port,
            method,
            target,
            &[
                ("x-ms-date", date),
                ("x-ms-version", version.to_owned()),
                ("Authorization", auth),
            ],
        )
    }

    /// Stops Azurite (SIGTERM: it saves its data). Requests fail until
    /// [`Azurite::start_again`].
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts Azurite again on the same port with the same data.
    pub fn start_again(&mut self) {
        self.server.stop();
        let (server, port) = Self::spawn(&self.place, self.dir.path(), self.port);
        assert_eq!(port, self.port, "Azurite came back on another port");
        self.server = server;
    }
}

/// The HMAC-SHA256 of `text` under Azurite's key, base64.
fn sign(text: &str) -> String {
    let key = BASE64.decode(Azurite::KEY).expect("Azurite's key is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(text.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// moto's S3 server, in memory, with a fresh bucket. moto takes any
/// credentials and, by default, checks no signature (ecosystem.md §2).
#[derive(Debug)]
pub struct Moto {
    server: Server,
    place: Place,
    dir: tempfile::TempDir,
    port: u16,
    bucket: String,
}

impl Moto {
    pub const REGION: &str = "us-east-1";
    pub const ACCESS_KEY_ID: &str = "netwatch-test";
    pub const SECRET_ACCESS_KEY: &str = "netwatch-test-secret";

    /// Starts moto on a port of its choosing and creates a bucket of a unique name.
    pub fn start() -> Self {
        Self::start_at(Place::local())
    }

    /// Starts moto at `place` (see [`Place`]) and creates a bucket of a unique name.
    pub fn start_at(place: Place) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (server, port) = Self::spawn(&place, dir.path(), 0);
        let moto = Self {
            server,
            place,
            dir,
            port,
            bucket: unique_name(),
        };
        moto.create_bucket(&moto.bucket);
        moto
    }

    fn spawn(place: &Place, dir: &Path, port: u16) -> (Server, u16) {
        let mut cmd = place.command(&program("NETWATCH_TEST_MOTO", "moto's moto_server"));
        cmd.args(["-H", &place.host, "-p", &port.to_string()]);
        Server::spawn("moto", place, cmd, &dir.join(format!("moto-{port}.log")), "Running on")
    }

    /// The server's URL, `http://{host}:{port}` (path-style requests).
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.place.host, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bucket made for this test.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates bucket `name` (moto takes an unsigned CreateBucket).
    pub fn create_bucket(&self, name: &str) {
        let (status, body) = http(&self.place, self.port, "PUT", &format!("/{name}"), &[]);
        assert_eq!(status, 200, "create bucket {name} in moto: {body}");
    }

    /// Stops moto; its data is gone.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts moto again on the same port and makes the bucket again (empty:
    /// uploads begun before are unknown to it).
    pub fn start_again(&mut self) {
        self.server.stop();
        let (server, port) = Self::spawn(&self.place, self.dir.path(), self.port);
        assert_eq!(port, self.port, "moto came back on another port");
        self.server = server;
        self.create_bucket(&self.bucket);
    }
}

/// fake-gcs-server (Google Cloud Storage's JSON API, in memory), with a fresh
/// bucket. It checks no credentials (a key with `"disable_oauth": true`
/// makes clients send none, [`FakeGcs::service_account_key`]), nor
/// `Content-MD5`. It does not exit on SIGTERM, so it is killed (SIGKILL).
#[derive(Debug)]
pub struct FakeGcs {
    server: Server,
    place: Place,
    dir: tempfile::TempDir,
    port: u16,
    bucket: String,
}

impl FakeGcs {
    /// The project buckets are made in (fake-gcs-server takes any).
    pub const PROJECT: &str = "netwatch-test";
    /// Tries at finding a free port: another process may take the one found
    /// before the server binds it.
    const PORT_TRIES: usize = 5;

    /// Starts fake-gcs-server on a free port and creates a bucket of a unique name.
    pub fn start() -> Self {
        Self::start_at(Place::local())
    }

    /// Starts fake-gcs-server at `place` (see [`Place`]) and creates a bucket of a unique name.
    pub fn start_at(place: Place) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut failures = Vec::new();
        for _ in 0..Self::PORT_TRIES {
            let port = place.run(|| {
                let listener = std::net::TcpListener::bind((place.host.as_str(), 0)).expect("a free port");
                listener.local_addr().expect("its address").port()
            });
            match Self::spawn(&place, dir.path(), port) {
                Ok(server) => {
                    let gcs = Self {
                        server,
                        place,
                        dir,
                        port,
                        bucket: unique_name(),
                    };
                    gcs.create_bucket(&gcs.bucket);
                    return gcs;
                }
                Err(failure) => failures.push(failure),
            }
        }
        panic!("fake-gcs-server did not start: {}", failures.join("\n"));
    }

    fn spawn(place: &Place, dir: &Path, port: u16) -> Result<Server, String> {
        let mut cmd = place.command(&program("NETWATCH_TEST_FAKE_GCS", "fake-gcs-server"));
        let address = format!("{}:{port}", place.host);
        cmd.args(["-scheme", "http", "-host", &place.host, "-port", &port.to_string()])
            .args(["-backend", "memory", "-public-host", &address])
            .args(["-external-url", &format!("http://{address}"), "-log-level", "warn"]);
        Server::spawn_on(
            "fake-gcs-server",
            place,
            cmd,
            &dir.join(format!("fake-gcs-{port}.log")),
            port,
        )
    }

    /// The JSON API's base URL, `http://{host}:{port}`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.place.host, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bucket made for this test.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates bucket `name` (the JSON API's buckets.insert; no credentials needed).
    pub fn create_bucket(&self, name: &str) {
        let (status, body) = http_with_body(
            &self.place,
            self.port,
            "POST",
            &format!("/storage/v1/b?project={}", Self::PROJECT),
            &[("Content-Type", "application/json".to_owned())],
            &format!("{{\"name\":\"{name}\"}}"),
        );
        assert_eq!(status, 200, "create bucket {name} in fake-gcs-server: {body}");
    }

    /// A service account's JSON key for this server, as Google Cloud's
    /// console writes one, with a real RSA key ([`rsa_private_key_pem`]) and
    /// fake-gcs-server's two extras: `"disable_oauth": true` (clients send no
    /// token) and `"gcs_base_url"`: this server.
    pub fn service_account_key(&self) -> String {
        service_account_key_json(rsa_private_key_pem(), Some(&self.endpoint()))
    }

    /// Stops fake-gcs-server (SIGKILL); its data is gone. Requests fail
    /// until [`FakeGcs::start_again`].
    pub fn stop(&mut self) {
        self.server.kill();
    }

    /// Starts fake-gcs-server again on the same port and makes the bucket
    /// again (empty: what was stored before is gone).
    pub fn start_again(&mut self) {
        self.server.kill();
        self.server = Self::spawn(&self.place, self.dir.path(), self.port)
            .unwrap_or_else(|failure| panic!("fake-gcs-server did not start again: {failure}"));
        self.create_bucket(&self.bucket);
    }
}

/// A service account's JSON key holding `private_key_pem`, with
/// `"disable_oauth": true` and `"gcs_base_url": base_url` when there is one
/// (what fake-gcs-server's clients read; Google ignores both).
pub fn service_account_key_json(private_key_pem: &str, base_url: Option<&str>) -> String {
    let escaped: String = private_key_pem
        .chars()
        .map(|c| match c {
            '\n' => "\\n".to_owned(),
            '"' => "\\\"".to_owned(),
            '\\' => "\\\\".to_owned(),
            c => c.to_string(),
        })
        .collect();
    let fake_gcs = base_url.map_or_else(String::new, |url| {
        format!(",\n  \"disable_oauth\": true,\n  \"gcs_base_url\": \"{url}\"")
    });
    format!(
        "{{\n  \"type\": \"service_account\",\n  \"project_id\": \"{project}\",\n  \
         \"private_key_id\": \"0123456789abcdef0123456789abcdef01234567\",\n  \
         \"private_key\": \"{escaped}\",\n  \
         \"client_email\": \"netwatch@{project}.iam.gserviceaccount.com\",\n  \
         \"client_id\": \"100000000000000000001\",\n  \
         \"auth_uri\": \"https://accounts.google.com/o/oauth2/auth\",\n  \
         \"token_uri\": \"https://oauth2.googleapis.com/token\"{fake_gcs}\n}}\n",
        project = FakeGcs::PROJECT,
    )
}

/// A 2048-bit RSA private key, PEM PKCS#8 (`-----BEGIN PRIVATE KEY-----`,
/// as in a service account's key), made once per test process with
/// `openssl genpkey`.
pub fn rsa_private_key_pem() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| rsa_key_pem(2048))
}

/// A fresh RSA private key of `bits` bits, PEM PKCS#8, made with `openssl genpkey`.
pub fn rsa_key_pem(bits: u32) -> String {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            &format!("rsa_keygen_bits:{bits}"),
        ])
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl to make a test RSA key ({e}): apt-get install -y openssl"));
    assert!(
        out.status.success(),
        "openssl genpkey failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("a PEM key is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_read_from_the_servers_lines() {
        let azurite = "Azurite Blob service successfully listens on http://127.0.0.1:43269";
        assert_eq!(port_after(azurite, "successfully listens on", "127.0.0.1"), Some(43269));
        assert_eq!(
            port_after(" * Running on http://127.0.0.1:42421", "Running on", "127.0.0.1"),
            Some(42421)
        );
        assert_eq!(
            port_after(
                "Azurite Blob service is starting on 127.0.0.1:0",
                "successfully listens on",
                "127.0.0.1"
            ),
            None
        );
    }
}

/// A PostgreSQL server of the test's own (Debian's `postgresql` package, run
/// as its `postgres` user), at a [`Place`], with one database `netwatch`: what
/// controller replicas share. [`Postgres::stop`] and [`Postgres::start_again`]
/// take it away and bring it back with its data, on the same port.
#[derive(Debug)]
pub struct Postgres {
    place: Place,
    /// The cluster, its socket and its log; owned by `postgres`.
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl Postgres {
    /// A fresh cluster at `place`, started, with database `netwatch`.
    pub fn start_at(place: Place) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(Result::ok)
                    .map(|entry| entry.path().join("bin"))
                    .filter(|bin| bin.join("pg_ctl").exists())
                    .max()
            })
            .unwrap_or_else(|| {
                panic!(
                    "no PostgreSQL server in /usr/lib/postgresql: apt-get install -y postgresql (scripts/test.sh does)"
                )
            });
        let dir = tempfile::tempdir().expect("a temporary directory");
        crate::run(Command::new("chown").arg("postgres:postgres").arg(dir.path()));
        let port = place.run(|| {
            let listener = std::net::TcpListener::bind((place.host.as_str(), 0)).expect("a free port");
            listener.local_addr().expect("its address").port()
        });
        let initdb = format!(
            "{}/initdb -D {}/data -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8",
            bin.display(),
            dir.path().display()
        );
        crate::run(Command::new("su").args(["postgres", "-c", &initdb]));
        let postgres = Self { place, dir, bin, port };
        postgres.start_again();
        let create = format!(
            "{}/psql -h {} -p {} -U postgres -c 'CREATE DATABASE netwatch'",
            postgres.bin.display(),
            postgres.dir.path().display(),
            postgres.port
        );
        crate::run(Command::new("su").args(["postgres", "-c", &create]));
        postgres
    }

    /// `postgres://postgres@HOST:PORT/netwatch`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@{}:{}/netwatch", self.place.host, self.port)
    }

    fn pg_ctl(&self, what: &str) {
        let dir = self.dir.path().display();
        let command = format!(
            "{}/pg_ctl -D {dir}/data -o '-k {dir} -c listen_addresses={} -p {} -c fsync=off' -l {dir}/log -m fast -w {what}",
            self.bin.display(),
            self.place.host,
            self.port
        );
        let output = self.place.command("su").args(["postgres", "-c", &command]).output();
        let output = output.unwrap_or_else(|err| panic!("run pg_ctl {what}: {err}"));
        assert!(
            output.status.success(),
            "pg_ctl {what} failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
    }

    /// Stops the server (`-m fast`: connections are cut). Every query fails
    /// until [`Postgres::start_again`].
    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    /// Starts the server (again) on the same port with the same data.
    pub fn start_again(&self) {
        self.pg_ctl("start");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let dir = self.dir.path().display();
        let command = format!("{}/pg_ctl -D {dir}/data -m immediate -w stop", self.bin.display());
        let _ = Command::new("su")
            .args(["postgres", "-c", &command])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
