//! The HTTP side of the client commands: one reqwest client (rustls with
//! aws-lc-rs, trusting the CA file when one is configured, the system's roots
//! otherwise), ARM requests with the `api-version` az sends per command
//! (clients.md §3), ARM error answers turned into [`CliError::Arm`], and
//! long-running operations polled as azure-core's `ARMPolling` does
//! (api-contract.md §4): the `Azure-AsyncOperation` monitor first, then the
//! `Location` monitor, waiting `Retry-After` between polls. An answer that
//! azure-core's `RetryPolicy` (az's) sends again is sent again here too: any
//! error with `Retry-After` (a controller whose database does not answer:
//! 503, `Retry-After: 2`), and 408, 429, 500, 502, 503, 504 without it (only
//! 500, 503 and 504 for `POST` and `PATCH`), [`STATUS_RETRIES`] times.
//!
//! `--debug` prints every request and answer on standard error in az's
//! layout (`Request URL: '…'`, headers with the token masked, body).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{Method, StatusCode};
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls_platform_verifier::BuilderVerifierExt;
use serde_json::Value;

use crate::error::CliError;
use crate::settings::Settings;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one ARM request may take, answer included (ARM answers are small).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a download may go without receiving a byte.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The wait between polls when the server sends no (or a zero) `Retry-After`:
/// azure-core's default polling interval, which az uses.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// Longest wait for a long-running operation (az waits without a bound; a
/// stop that uploads a 4 GiB capture still fits).
const LRO_TIMEOUT: Duration = Duration::from_secs(3600);
/// Times an answer azure-core retries is retried (its `retry_status`).
const STATUS_RETRIES: u32 = 3;
/// The first wait before a retry without `Retry-After`, doubled each time
/// (azure-core's `retry_backoff_factor`, 0.8 s).
const RETRY_BACKOFF: Duration = Duration::from_millis(800);
/// Longest wait before a retry, whatever `Retry-After` says.
const RETRY_WAIT_MAX: Duration = Duration::from_secs(60);
/// The monitor header of a create (lower case, as headers are compared).
const AZURE_ASYNC_OPERATION: &str = "azure-asyncoperation";

/// An answer read in full.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as JSON; `Value::Null` when empty, `Value::String` when not JSON.
    pub body: Value,
}

/// The ARM client of one command.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    debug: bool,
}

impl Client {
    /// A client for `settings`; `debug` prints every exchange.
    pub fn new(settings: &Settings, debug: bool) -> Result<Self, CliError> {
        let tls = tls_config(settings.ca.as_deref())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(ClientConfig::clone(&tls))
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("netwatch-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| CliError::Tls(format!("set up the HTTP client: {err}")))?;
        Ok(Self {
            http,
            base: settings.server.clone(),
            token: settings.token.clone(),
            debug,
        })
    }

    /// The server's base URL, `https://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `{base}{path}?api-version={version}`.
    pub fn url(&self, path: &str, api_version: &str) -> String {
        format!("{}{path}?api-version={api_version}", self.base)
    }

    /// Sends one request and reads the whole answer, whatever its status;
    /// sent again, after a wait, while the answer is one azure-core retries
    /// ([`retry_wait`]), at most [`STATUS_RETRIES`] times.
    pub async fn exchange(&self, method: Method, url: &str, body: Option<&Value>) -> Result<Answer, CliError> {
        let mut retries = 0;
        loop {
            let answer = self.exchange_once(method.clone(), url, body).await?;
            match retry_wait(&method, &answer, retries) {
                Some(wait) if retries < STATUS_RETRIES => {
                    if self.debug {
                        eprintln!("Retrying in {:.1} s: {}", wait.as_secs_f64(), answer.status);
                    }
                    tokio::time::sleep(wait).await;
                    retries += 1;
                }
                _ => return Ok(answer),
            }
        }
    }

    /// One request and its whole answer.
    async fn exchange_once(&self, method: Method, url: &str, body: Option<&Value>) -> Result<Answer, CliError> {
        let what = format!("cannot reach the netwatch server ({method} {url})");
        let mut request = self
            .http
            .request(method.clone(), url)
            .timeout(REQUEST_TIMEOUT)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header(ACCEPT, "application/json");
        let text = body.map(Value::to_string);
        if let Some(text) = &text {
            request = request.header(CONTENT_TYPE, "application/json").body(text.clone());
        }
        if self.debug {
            debug_request(&method, url, text.as_deref());
        }
        let response = request.send().await.map_err(|source| CliError::Connection {
            what: what.clone(),
            source,
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| CliError::Connection { what, source })?;
        if self.debug {
            debug_answer(status, &headers, &bytes);
        }
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Answer { status, headers, body })
    }

    /// A request whose answer must be 2xx: its body, or the error it carries.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        api_version: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let answer = self.exchange(method, &self.url(path, api_version), body).await?;
        if answer.status.is_success() {
            Ok(answer.body)
        } else {
            Err(arm_error(answer))
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, api_version: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, api_version, None).await
    }

    /// Starts a long-running operation: the first answer, which must have one
    /// of the `accepted` statuses (as az's generated code checks).
    pub async fn begin(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        accepted: &[u16],
    ) -> Result<Answer, CliError> {
        let answer = self.exchange(method, url, body).await?;
        if accepted.contains(&answer.status.as_u16()) {
            Ok(answer)
        } else {
            Err(arm_error(answer))
        }
    }

    /// Waits for the operation `first` started (a request to `url`) to end,
    /// as azure-core's `ARMPolling`: through the `Azure-AsyncOperation`
    /// monitor (then, for a PUT, a GET of `url` for the result), or the
    /// `Location` monitor (its last answer is the result), or not at all when
    /// the first answer has neither header. The result is `None` when the
    /// final answer has no body.
    pub async fn wait(&self, method: &Method, url: &str, first: Answer) -> Result<Option<Value>, CliError> {
        let deadline = Instant::now() + LRO_TIMEOUT;
        if let Some(monitor) = header(&first.headers, AZURE_ASYNC_OPERATION) {
            let mut delay = retry_after(&first.headers);
            loop {
                self.sleep_until(delay, deadline, &monitor).await?;
                let answer = self.exchange(Method::GET, &monitor, None).await?;
                if !answer.status.is_success() {
                    return Err(arm_error(answer));
                }
                let status = answer.body.get("status").and_then(Value::as_str).unwrap_or_default();
                match status.to_ascii_lowercase().as_str() {
                    "succeeded" => break,
                    "failed" | "canceled" | "cancelled" => {
                        return Err(CliError::OperationFailed {
                            status: status.to_owned(),
                            error: answer.body.get("error").cloned(),
                        });
                    }
                    _ => delay = retry_after(&answer.headers),
                }
            }
            // The result: the resource itself for a PUT (or PATCH), the
            // `Location` of the first answer for anything else that has one.
            let result_url = if *method == Method::PUT || *method == Method::PATCH {
                Some(url.to_owned())
            } else {
                header(&first.headers, LOCATION.as_str())
            };
            return match result_url {
                Some(result_url) => {
                    let answer = self.exchange(Method::GET, &result_url, None).await?;
                    if answer.status.is_success() {
                        Ok(non_null(answer.body))
                    } else {
                        Err(arm_error(answer))
                    }
                }
                None => Ok(None),
            };
        }
        if let Some(mut monitor) = header(&first.headers, LOCATION.as_str()) {
            let mut delay = retry_after(&first.headers);
            loop {
                self.sleep_until(delay, deadline, &monitor).await?;
                let answer = self.exchange(Method::GET, &monitor, None).await?;
                match answer.status.as_u16() {
                    202 => {
                        delay = retry_after(&answer.headers);
                        if let Some(next) = header(&answer.headers, LOCATION.as_str()) {
                            monitor = next;
                        }
                    }
                    200 | 201 | 204 => return Ok(non_null(answer.body)),
                    _ => return Err(arm_error(answer)),
                }
            }
        }
        Ok(non_null(first.body))
    }

    async fn sleep_until(&self, delay: Duration, deadline: Instant, monitor: &str) -> Result<(), CliError> {
        if Instant::now() + delay > deadline {
            return Err(CliError::Timeout(format!(
                "the operation did not finish within {} minutes; its monitor is {monitor}",
                LRO_TIMEOUT.as_secs() / 60
            )));
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Starts a download of `url` (a file under the server's storage routes),
    /// with the token; the answer's body is not read.
    pub async fn download(&self, url: &str) -> Result<reqwest::Response, CliError> {
        if self.debug {
            debug_request(&Method::GET, url, None);
        }
        let response = self
            .http
            .get(url)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .send()
            .await
            .map_err(|source| CliError::Connection {
                what: format!("GET {url}"),
                source,
            })?;
        if self.debug {
            debug_answer(response.status(), response.headers(), b"");
        }
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Err(arm_error(Answer { status, headers, body }))
    }
}

fn non_null(body: Value) -> Option<Value> {
    (!body.is_null()).then_some(body)
}

/// A non-success answer as [`CliError::Arm`].
pub fn arm_error(answer: Answer) -> CliError {
    CliError::Arm {
        status: answer.status.as_u16(),
        reason: answer.status.canonical_reason().unwrap_or_default().to_owned(),
        body: answer.body,
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

/// The headers an answer names a wait in, in the order azure-core reads them:
/// milliseconds, milliseconds, seconds.
const RETRY_AFTER_HEADERS: [&str; 3] = ["retry-after-ms", "x-ms-retry-after-ms", "retry-after"];

/// The wait an answer asks for in [`RETRY_AFTER_HEADERS`], as azure-core
/// reads it (`_extract_delay`, `get_retry_after`); `None` when it names none,
/// or a zero or unreadable one.
fn asked_delay(headers: &HeaderMap) -> Option<Duration> {
    let [ms, ms_too, seconds] = RETRY_AFTER_HEADERS;
    let number = |name: &str| header(headers, name).and_then(|value| value.trim().parse::<f64>().ok());
    let delay = number(ms)
        .or_else(|| number(ms_too))
        .map(|ms| ms / 1000.0)
        .or_else(|| number(seconds))?;
    (delay > 0.0 && delay.is_finite()).then(|| Duration::from_secs_f64(delay.min(LRO_TIMEOUT.as_secs_f64())))
}

/// The wait before the next poll: what the answer asks for, or
/// [`DEFAULT_POLL_INTERVAL`] without (azure-core's `_extract_delay`).
pub fn retry_after(headers: &HeaderMap) -> Duration {
    asked_delay(headers).unwrap_or(DEFAULT_POLL_INTERVAL)
}

/// Whether azure-core's `RetryPolicy` sends `method` again after `answer`
/// (its `is_retry`), and after how long. An error naming a wait
/// ([`RETRY_AFTER_HEADERS`]) is retried whatever its status and method; 408,
/// 429, 500, 502, 503, 504 and anything from 506 without one, but for `POST`
/// and `PATCH` (not idempotent) only 500, 503 and 504. The wait is the one
/// asked for or, when that is zero, unreadable or missing, [`RETRY_BACKOFF`]
/// doubled per retry before; at most [`RETRY_WAIT_MAX`].
fn retry_wait(method: &Method, answer: &Answer, retries: u32) -> Option<Duration> {
    let status = answer.status.as_u16();
    if status < 400 {
        return None;
    }
    let asked = RETRY_AFTER_HEADERS
        .iter()
        .any(|name| header(&answer.headers, name).is_some());
    let retried = matches!(status, 408 | 429 | 500 | 502 | 503 | 504) || status >= 506;
    let idempotent = *method != Method::POST && *method != Method::PATCH;
    (asked || (retried && (idempotent || matches!(status, 500 | 503 | 504)))).then(|| {
        asked_delay(&answer.headers)
            .unwrap_or_else(|| RETRY_BACKOFF.saturating_mul(1 << retries.min(6)))
            .min(RETRY_WAIT_MAX)
    })
}

/// The TLS client configuration: the CA file's certificates as the only
/// roots, or the platform verifier (the system's roots) without one.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<ClientConfig>, CliError> {
    // An explicit provider: with both rustls providers compiled in, rustls
    // could not pick a process default and `builder()` would panic.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| CliError::Tls(format!("set up TLS: {err}")))?;
    let config = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| CliError::File {
                what: "read the CA certificate",
                path: path.to_owned(),
                source,
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|err| {
                    CliError::Tls(format!("the CA file {} has a bad certificate: {err}", path.display()))
                })?;
                roots.add(cert).map_err(|err| {
                    CliError::Tls(format!("the CA file {} has a bad certificate: {err}", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(CliError::Tls(format!(
                    "the CA file {} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .with_platform_verifier()
            .map_err(|err| CliError::Tls(format!("load the system's CA certificates: {err}")))?
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// `--debug`: a request, as az's `sdk.policies` logger prints it.
fn debug_request(method: &Method, url: &str, body: Option<&str>) {
    let mut lines = vec![
        format!("Request URL: '{url}'"),
        format!("Request method: '{method}'"),
        "Request headers:".to_owned(),
        "    'Accept': 'application/json'".to_owned(),
    ];
    if body.is_some() {
        lines.push("    'Content-Type': 'application/json'".to_owned());
    }
    lines.push("    'Authorization': '*****'".to_owned());
    lines.push("Request body:".to_owned());
    lines.push(body.unwrap_or("This request has no body").to_owned());
    for line in lines {
        eprintln!("DEBUG: cli.netwatch.client: {line}");
    }
}

/// `--debug`: an answer.
fn debug_answer(status: StatusCode, headers: &HeaderMap, body: &[u8]) {
    eprintln!("DEBUG: cli.netwatch.client: Response status: {}", status.as_u16());
    eprintln!("DEBUG: cli.netwatch.client: Response headers:");
    for (name, value) in headers {
        eprintln!(
            "DEBUG: cli.netwatch.client:     '{name}': '{}'",
            value.to_str().unwrap_or("<binary>")
        );
    }
    if !body.is_empty() {
        eprintln!("DEBUG: cli.netwatch.client: Response content:");
        eprintln!("DEBUG: cli.netwatch.client: {}", String::from_utf8_lossy(body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn retry_after_as_azure_core_reads_it() {
        assert_eq!(retry_after(&headers(&[("retry-after", "1")])), Duration::from_secs(1));
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "250"), ("retry-after", "9")])),
            Duration::from_millis(250)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "0")])), DEFAULT_POLL_INTERVAL);
        assert_eq!(retry_after(&headers(&[])), DEFAULT_POLL_INTERVAL);
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), DEFAULT_POLL_INTERVAL);
    }

    #[test]
    fn answers_are_retried_as_azure_core_retries_them() {
        let answer = |status: u16, pairs: &[(&'static str, &'static str)]| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: headers(pairs),
            body: Value::Null,
        };
        let wait = |method: Method, status: u16, pairs: &[(&'static str, &'static str)], retries: u32| {
            retry_wait(&method, &answer(status, pairs), retries)
        };
        // The controller's database not answering: 503 with Retry-After, any method.
        for method in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
            assert_eq!(
                wait(method, 503, &[("retry-after", "2")], 0),
                Some(Duration::from_secs(2))
            );
        }
        assert_eq!(
            wait(Method::POST, 409, &[("retry-after-ms", "250")], 0),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            wait(Method::GET, 503, &[("retry-after", "3600")], 0),
            Some(RETRY_WAIT_MAX)
        );
        // A wait named but zero or unreadable (an HTTP date): retried after the
        // backoff, not the poll interval.
        assert_eq!(
            wait(Method::GET, 503, &[("retry-after", "0")], 1),
            Some(RETRY_BACKOFF * 2)
        );
        assert_eq!(
            wait(
                Method::POST,
                429,
                &[("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT")],
                0
            ),
            Some(RETRY_BACKOFF)
        );
        // Without it: backoff, doubled; POST only on 500, 503 and 504.
        assert_eq!(wait(Method::GET, 429, &[], 0), Some(RETRY_BACKOFF));
        assert_eq!(wait(Method::PUT, 502, &[], 2), Some(RETRY_BACKOFF * 4));
        assert_eq!(wait(Method::POST, 503, &[], 1), Some(RETRY_BACKOFF * 2));
        assert_eq!(wait(Method::POST, 429, &[], 0), None);
        assert_eq!(wait(Method::PATCH, 502, &[], 0), None);
        assert_eq!(wait(Method::DELETE, 599, &[], 0), Some(RETRY_BACKOFF));
        // Answers that are final.
        for status in [200, 201, 202, 204, 400, 401, 403, 404, 409, 501, 505] {
            assert_eq!(wait(Method::GET, status, &[], 0), None, "{status}");
        }
        // A 202's Retry-After is the poll's business, not a retry.
        assert_eq!(wait(Method::PUT, 202, &[("retry-after", "1")], 0), None);
    }

    #[test]
    fn a_503_with_retry_after_is_sent_again_and_its_success_returned() {
        let unavailable = crate::testing::json_answer_with(
            "503 Service Unavailable",
            "Retry-After: 1\r\n",
            &serde_json::json!({"error": {"code": "ServiceUnavailable", "message": "try again"}}),
        );
        let (base, server) = crate::testing::serve(vec![
            unavailable.clone(),
            unavailable,
            crate::testing::json_answer("200 OK", &serde_json::json!({"name": "x"})),
        ]);
        let context = crate::testing::context(&base);
        let started = Instant::now();
        let answer = crate::testing::block_on(context.client.exchange(Method::POST, &format!("{base}/x"), None))
            .expect("an answer");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body["name"], "x");
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "each retry waited Retry-After"
        );
        let requests = server.join().expect("the server");
        assert_eq!(requests.len(), 3);
        assert!(requests.iter().all(|r| r.line.starts_with("POST /x ")), "{requests:?}");
    }

    #[test]
    fn retries_stop_after_three_and_the_last_answer_is_returned() {
        // Retry-After in milliseconds, so the test does not wait for the backoff.
        let answer = || {
            crate::testing::json_answer_with(
                "500 Internal Server Error",
                "retry-after-ms: 10\r\n",
                &serde_json::json!({"error": {"code": "InternalServerError", "message": "m"}}),
            )
        };
        let (base, server) = crate::testing::serve(vec![answer(), answer(), answer(), answer()]);
        let context = crate::testing::context(&base);
        let answer = crate::testing::block_on(context.client.exchange(Method::DELETE, &format!("{base}/x"), None))
            .expect("an answer");
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            server.join().expect("the server").len(),
            4,
            "one request and three retries"
        );
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let err = tls_config(Some(std::path::Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = tls_config(Some(&path)).unwrap_err();
        assert!(err.to_string().contains("holds no PEM certificate"), "{err}");
    }
}
