//! Issue 12, item 3: an answer the API gives before it has read the request's
//! body (a missing or wrong token, a role too low, an unknown route or
//! method, no `api-version`, a body of the wrong type or too large, a part
//! with a wrong token or grant) reaches the client whole, over HTTP/1.1 and
//! HTTP/2, for bodies within the route's limit (a part's is larger than the
//! API's) and a body over the API's limit by less than that limit.
//!
//! Against a real controller ([`server::run`] over TLS on 127.0.0.1, port 0):
//! curl (`/usr/bin/curl`, or `NETWATCH_TEST_CURL`), which reports a stream
//! the server resets as `(92) Stream error in the HTTP/2 framing layer`
//! instead of the answer it got, with `--http1.1` and `--http2`; and an HTTP/2
//! client written on the `h2` crate, which sends the whole body (as flow
//! control lets it) before it reads the answer, and fails on a stream the
//! server resets under it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode, header};
use netwatch_controller::auth::digest;
use netwatch_controller::routes::MAX_BODY_BYTES;
use netwatch_controller::server::{self, ServerConfig, TlsFiles, TokenDigests};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;

const ADMIN: &str = "early-answers-admin-token";
const READER: &str = "early-answers-reader-token";
const CAPTURE: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus/packetCaptures/pc1";
const V: &str = "api-version=2024-05-01";
/// A part sent through the controller, its grant's signature wrong.
const PART: &str =
    "/netwatch/v1/agent/files/acct/network-watcher-logs/a/b.cap?uploadId=u&part=1&expires=99999999999999&sig=bad";
/// A body within one HTTP/2 flow-control window (64 KiB initially).
const SMALL: usize = 100;
/// A body larger than HTTP/2's initial flow-control window, under [`MAX_BODY_BYTES`].
const LARGE: usize = 200 * 1024;
/// Time one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bodies of [`LARGE`] and more go at most this fast, as over a real link:
/// on loopback a client may otherwise send the whole body before the server
/// has answered, and the answer would not be early.
const LINK_BYTES_PER_SECOND: usize = 4 * 1024 * 1024;
/// What the HTTP/2 client sends at once, pausing for the link's pace.
const FRAME: usize = 16 * 1024;

/// A controller served over TLS on 127.0.0.1, port 0, until dropped.
struct Served {
    runtime: tokio::runtime::Runtime,
    address: SocketAddr,
    ca: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), server::ServerError>>>,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let pki = netwatch_controller::tls::make_pki("early-answers", &["127.0.0.1".to_owned()]).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        std::fs::write(dir.path().join("cert.pem"), &pki.chain_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), &pki.key_pem).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let config = ServerConfig {
            listen: address,
            database: Some(format!("sqlite://{}", dir.path().join("state.db").display())),
            subscription: None,
            tls: Some(TlsFiles {
                cert: dir.path().join("cert.pem"),
                key: dir.path().join("key.pem"),
            }),
            tokens: TokenDigests {
                admin: vec![digest(ADMIN)],
                operator: vec![],
                reader: vec![digest(READER)],
                agent: vec![],
            },
            token_signing_key: None,
            storage: vec![],
            accounts_dir: Some(dir.path().join("accounts")),
            agent_lost_seconds: None,
            upload_grant_seconds: None,
            agents_dir: None,
            agent_servers: Vec::new(),
            drain_seconds: None,
            handoff_socket: None,
            build_version: None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(server::run(config, listener, async {
            let _ = stopped.await;
        }));
        let served = Served {
            runtime,
            address,
            ca,
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        };
        served.wait_until_serving();
        served
    }

    /// Bounded: the listener is bound already, the server needs its store first.
    fn wait_until_serving(&self) {
        let url = self.url("/metadata/endpoints?api-version=2022-09-01");
        let ready = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
            curl()
                .args(["-sS", "-o", "/dev/null", "--cacert"])
                .arg(&self.ca)
                .arg(&url)
                .status()
                .is_ok_and(|status| status.success())
        });
        assert!(ready, "the controller did not answer {url} within 10 s");
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("https://{}{path_and_query}", self.address)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let stopped = self
                .runtime
                .block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, server).await });
            if !std::thread::panicking() {
                let result = stopped.expect("the controller stops within its grace period");
                result
                    .expect("the server task ends")
                    .expect("the server ran without error");
            }
        }
    }
}

/// `NETWATCH_TEST_CURL` or `/usr/bin/curl`; a test cannot pass without it (STYLE 31).
fn curl() -> Command {
    let path = std::env::var_os("NETWATCH_TEST_CURL").map_or_else(|| PathBuf::from("/usr/bin/curl"), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: these tests need curl with HTTP/2 (apt-get install curl), or NETWATCH_TEST_CURL naming one",
        path.display()
    );
    Command::new(path)
}

/// One request the API answers before reading its body, and that answer.
#[derive(Debug, Clone)]
struct Row {
    name: &'static str,
    method: Method,
    path_and_query: String,
    token: Option<&'static str>,
    content_type: &'static str,
    /// The body sizes to send (None: [`SMALL`] and [`LARGE`]).
    sizes: Option<&'static [usize]>,
    status: StatusCode,
    code: &'static str,
}

/// Every early answer; each sent with a body of every size in [`Row::sizes`].
fn rows() -> Vec<Row> {
    let row = |name, method, path_and_query: String, token, status, code| Row {
        name,
        method,
        path_and_query,
        token,
        content_type: "application/json",
        sizes: None,
        status,
        code,
    };
    vec![
        row(
            "missing token",
            Method::PUT,
            format!("{CAPTURE}?{V}"),
            None,
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
        ),
        row(
            "wrong token",
            Method::PUT,
            format!("{CAPTURE}?{V}"),
            Some("not-a-token"),
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
        ),
        row(
            "role too low",
            Method::PUT,
            format!("{CAPTURE}?{V}"),
            Some(READER),
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
        ),
        row(
            "unknown route",
            Method::PUT,
            format!("{CAPTURE}/nothing/here?{V}"),
            Some(ADMIN),
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        row(
            "wrong method",
            Method::POST,
            format!("/subscriptions?{V}"),
            Some(ADMIN),
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
        ),
        row(
            "missing api-version",
            Method::PUT,
            CAPTURE.to_owned(),
            Some(ADMIN),
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
        ),
        Row {
            content_type: "text/plain",
            ..row(
                "wrong content type",
                Method::PUT,
                format!("{CAPTURE}?{V}"),
                Some(ADMIN),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
            )
        },
        Row {
            // Over the limit by less than the limit: read and discarded whole.
            sizes: Some(&[MAX_BODY_BYTES + 512 * 1024]),
            ..row(
                "body over the limit",
                Method::PUT,
                format!("{CAPTURE}?{V}"),
                Some(ADMIN),
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestBodyTooLarge",
            )
        },
        Row {
            // Refused before routing: the parts' limit holds all the same.
            content_type: "application/octet-stream",
            sizes: Some(&[SMALL, LARGE, 3 * MAX_BODY_BYTES]),
            ..row(
                "part with a wrong token",
                Method::PUT,
                PART.to_owned(),
                Some("not-a-token"),
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
            )
        },
        Row {
            // A part larger than MAX_BODY_BYTES, as parts through the
            // controller are (8 MiB by default): its route's own limit holds.
            content_type: "application/octet-stream",
            sizes: Some(&[SMALL, LARGE, 3 * MAX_BODY_BYTES]),
            ..row(
                "part with a bad grant",
                Method::PUT,
                PART.to_owned(),
                Some(ADMIN),
                StatusCode::FORBIDDEN,
                "AuthorizationFailed",
            )
        },
    ]
}

/// A body of `size` bytes (not JSON: no route gets as far as parsing it).
fn body(size: usize) -> Vec<u8> {
    (0..size).map(|i| b"{netwatch}"[i % 10]).collect()
}

/// What is wrong with `answer` to `row`, if anything: `status` and the ARM
/// error body with the row's `error.code`.
fn check_answer(row: &Row, status: u16, answer: &[u8]) -> Result<(), String> {
    if status != row.status.as_u16() {
        return Err(format!(
            "status {status}, not {}; body {}",
            row.status,
            String::from_utf8_lossy(answer)
        ));
    }
    let json: Value = serde_json::from_slice(answer).map_err(|err| {
        format!(
            "the answer is not whole JSON ({err}): {}",
            String::from_utf8_lossy(answer)
        )
    })?;
    if json["error"]["code"] != row.code || !json["error"]["message"].is_string() {
        return Err(format!("not the ARM error with code {}: {json}", row.code));
    }
    Ok(())
}

/// curl sends `row` with a body of `size` bytes over `protocol` (`--http1.1`
/// or `--http2`); what went wrong, if anything.
fn curl_row(served: &Served, dir: &Path, row: &Row, size: usize, protocol: &str) -> Result<(), String> {
    let body_path = dir.join(format!("body-{size}"));
    if !body_path.exists() {
        std::fs::write(&body_path, body(size)).unwrap();
    }
    let answer_path = dir.join("answer");
    let _ = std::fs::remove_file(&answer_path);
    let mut command = curl();
    command
        .args(["-sS", protocol, "--max-time", "30", "--cacert"])
        .arg(&served.ca)
        .args(["-X", row.method.as_str(), "-H"])
        .arg(format!("Content-Type: {}", row.content_type))
        .arg("--data-binary")
        .arg(format!("@{}", body_path.display()))
        .arg("-o")
        .arg(&answer_path)
        .args(["-w", "%{http_code} %{http_version}"]);
    if size >= LARGE {
        command.arg("--limit-rate").arg(LINK_BYTES_PER_SECOND.to_string());
    }
    if let Some(token) = row.token {
        command.arg("-H").arg(format!("Authorization: Bearer {token}"));
    }
    let output = command.arg(served.url(&row.path_and_query)).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "curl failed ({}): {} (wrote {stdout:?})",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let (status, version) = stdout.split_once(' ').unwrap_or((&stdout, ""));
    let expected_version = if protocol == "--http2" { "2" } else { "1.1" };
    if version != expected_version {
        return Err(format!("spoke HTTP/{version}, not HTTP/{expected_version}"));
    }
    let answer = std::fs::read(&answer_path).unwrap_or_default();
    check_answer(row, status.parse().unwrap_or(0), &answer)
}

#[test]
fn issue_12_early_answers_reach_curl_whole_over_http1_and_http2() {
    let served = Served::start();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut sent = 0;
    for row in rows() {
        for &size in row.sizes.unwrap_or(&[SMALL, LARGE]) {
            for protocol in ["--http1.1", "--http2"] {
                sent += 1;
                if let Err(problem) = curl_row(&served, dir.path(), &row, size, protocol) {
                    failures.push(format!(
                        "{} ({} {}, {size} bytes, curl {protocol}): {problem}",
                        row.name, row.method, row.path_and_query
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {sent} early answers did not reach curl whole:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A TLS connection to `served` speaking HTTP/2 (ALPN `h2`), trusting its
/// CA, and the task driving it, which ends when the client is dropped.
async fn h2_connect(served: &Served) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&served.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(served.address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "the server speaks HTTP/2"
    );
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, driver)
}

/// Sends `row` with a body of `size` bytes on a new stream, flow control
/// respected, then reads the answer; what went wrong, if anything.
async fn h2_row(
    client: &mut h2::client::SendRequest<Bytes>,
    served: &Served,
    row: &Row,
    size: usize,
) -> Result<(), String> {
    let mut request = Request::builder()
        .method(row.method.clone())
        .uri(served.url(&row.path_and_query))
        .header(header::CONTENT_TYPE, row.content_type)
        .header(header::CONTENT_LENGTH, size);
    if let Some(token) = row.token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(()).unwrap();
    std::future::poll_fn(|cx| client.poll_ready(cx))
        .await
        .map_err(|err| format!("the connection is not ready: {err}"))?;
    let (response, mut stream) = client
        .send_request(request, false)
        .map_err(|err| format!("send the request: {err}"))?;
    let mut rest = Bytes::from(body(size));
    while !rest.is_empty() {
        let wanted = rest.len().min(FRAME);
        stream.reserve_capacity(wanted);
        let mut granted = stream.capacity();
        while granted == 0 {
            granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(granted)) => granted,
                Some(Err(_)) | None => {
                    let reset =
                        tokio::time::timeout(Duration::from_secs(1), std::future::poll_fn(|cx| stream.poll_reset(cx)))
                            .await
                            .map_or_else(
                                |_| "no reset seen".to_owned(),
                                |reset| {
                                    reset.map_or_else(|err| err.to_string(), |reason| format!("RST_STREAM {reason:?}"))
                                },
                            );
                    return Err(format!(
                        "the server ended the stream ({reset}) while the body was going: {} of {size} bytes sent",
                        size - rest.len()
                    ));
                }
            };
        }
        let chunk = rest.split_to(granted.min(wanted));
        let pace = Duration::from_secs_f64(chunk.len() as f64 / LINK_BYTES_PER_SECOND as f64);
        stream
            .send_data(chunk, rest.is_empty())
            .map_err(|err| format!("send the body: {err}"))?;
        if size >= LARGE {
            tokio::time::sleep(pace).await;
        }
    }
    let response = response.await.map_err(|err| format!("no answer: {err}"))?;
    let status = response.status().as_u16();
    let mut answer_body = response.into_body();
    let mut answer = Vec::new();
    while let Some(chunk) = answer_body.data().await {
        let chunk = chunk.map_err(|err| format!("the answer broke off after {} bytes: {err}", answer.len()))?;
        let _ = answer_body.flow_control().release_capacity(chunk.len());
        answer.extend_from_slice(&chunk);
    }
    check_answer(row, status, &answer)
}

#[test]
fn issue_12_early_answers_reach_an_http2_client_that_sends_the_whole_body() {
    let served = Served::start();
    let mut failures = Vec::new();
    let mut sent = 0;
    served.runtime.block_on(async {
        let (mut client, driver) = h2_connect(&served).await;
        for row in rows() {
            for &size in row.sizes.unwrap_or(&[SMALL, LARGE]) {
                sent += 1;
                let result = tokio::time::timeout(REQUEST_TIMEOUT, h2_row(&mut client, &served, &row, size))
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")));
                if let Err(problem) = result {
                    failures.push(format!(
                        "{} ({} {}, {size} bytes): {problem}",
                        row.name, row.method, row.path_and_query
                    ));
                }
            }
        }
        drop(client);
        tokio::time::timeout(REQUEST_TIMEOUT, driver)
            .await
            .expect("the connection ends with its client")
            .unwrap();
    });
    assert!(
        failures.is_empty(),
        "{} of {sent} early answers did not reach an HTTP/2 client whole:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
