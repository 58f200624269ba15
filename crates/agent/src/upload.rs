//! Uploads a finished capture file to the controller: `PUT {server}{upload.path}`
//! with the channel's bearer token, the file streamed (never read into memory)
//! with its exact `Content-Length`.
//!
//! Transient failures (no connection, a timeout, a 5xx, 408 or 429) are retried
//! with backoff for at most [`RETRY_FOR`]; anything else (a 4xx, an unreadable
//! file) fails at once (STYLE 9, 24). The file stays on the host either way.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

use crate::AgentError;
use crate::remote::{Backoff, Remote};

/// The media type of pcap files (IANA, RFC 9875's `application/vnd.tcpdump.pcap`).
pub(crate) const PCAP_CONTENT_TYPE: &str = "application/vnd.tcpdump.pcap";

/// First wait before a retry; doubles up to [`RETRY_CAP`].
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_CAP: Duration = Duration::from_secs(15);
/// How long an upload is retried before it is given up (the controller or its
/// storage being away longer than this is an outage for an operator to see).
const RETRY_FOR: Duration = Duration::from_secs(10 * 60);
/// Bounds of one attempt: to connect, and between two reads of the answer
/// (an upload as a whole has no time limit: files can be large).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of an error answer's body goes into the message.
const MAX_ERROR_BODY: usize = 300;

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("open capture file {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("PUT {url}")]
    Send {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("PUT {url} answered {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("gave up after {attempts} attempts in {seconds} s")]
    GaveUp {
        attempts: u32,
        seconds: u64,
        #[source]
        last: Box<UploadError>,
    },
    #[error("upload cancelled")]
    Cancelled,
}

impl UploadError {
    /// Whether trying again cannot help.
    pub(crate) fn is_permanent(&self) -> bool {
        match self {
            UploadError::Open { .. } | UploadError::GaveUp { .. } | UploadError::Cancelled => true,
            UploadError::Send { source, .. } => source.is_builder(),
            UploadError::Status { status, .. } => {
                !(status.is_server_error()
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS)
            }
        }
    }
}

/// The agent's HTTP client for uploads.
#[derive(Debug, Clone)]
pub(crate) struct Uploader {
    client: reqwest::Client,
    remote: Remote,
}

impl Uploader {
    pub(crate) fn new(remote: &Remote) -> Result<Self, AgentError> {
        let client = reqwest::Client::builder()
            // The channel's TLS config, so that both trust the same roots.
            .tls_backend_preconfigured(rustls::ClientConfig::clone(remote.tls()))
            // The channel goes straight to the controller; uploads do the same
            // rather than follow proxy variables the channel ignores.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(AgentError::HttpClient)?;
        Ok(Self {
            client,
            remote: remote.clone(),
        })
    }

    /// Uploads `file` to `path` on the controller, retrying transient failures;
    /// `on_retry` runs before each wait for a retry.
    pub(crate) async fn put(
        &self,
        file: &Path,
        path: &str,
        cancel: &CancellationToken,
        mut on_retry: impl FnMut(),
    ) -> Result<(), UploadError> {
        let url = self.remote.http_url(path);
        let began = Instant::now();
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_CAP);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = tokio::select! {
                result = self.attempt(file, &url) => match result {
                    Ok(()) => return Ok(()),
                    Err(error) => error,
                },
                () = cancel.cancelled() => return Err(UploadError::Cancelled),
            };
            if error.is_permanent() {
                return Err(error);
            }
            let delay = backoff.next_delay();
            if began.elapsed() + delay > RETRY_FOR {
                return Err(UploadError::GaveUp {
                    attempts,
                    seconds: began.elapsed().as_secs(),
                    last: Box::new(error),
                });
            }
            tracing::info!(attempt = attempts, delay_ms = delay.as_millis(), error = %crate::error_chain(&error),
                "upload failed, will retry");
            on_retry();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.cancelled() => return Err(UploadError::Cancelled),
            }
        }
    }

    async fn attempt(&self, file: &Path, url: &str) -> Result<(), UploadError> {
        let open = |source| UploadError::Open {
            path: file.display().to_string(),
            source,
        };
        let handle = tokio::fs::File::open(file).await.map_err(open)?;
        let len = handle.metadata().await.map_err(open)?.len();
        let response = self
            .client
            .put(url)
            .header(AUTHORIZATION, self.remote.authorization())
            .header(CONTENT_TYPE, PCAP_CONTENT_TYPE)
            .header(CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(ReaderStream::new(handle)))
            .send()
            .await
            .map_err(|source| UploadError::Send {
                url: url.to_owned(),
                source,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let mut body = text.trim().to_owned();
        if body.len() > MAX_ERROR_BODY {
            let mut end = MAX_ERROR_BODY;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body.truncate(end);
            body.push('…');
        }
        Err(UploadError::Status {
            url: url.to_owned(),
            status,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let status = |code: u16| UploadError::Status {
            url: "u".into(),
            status: StatusCode::from_u16(code).unwrap(),
            body: String::new(),
        };
        for code in [500, 502, 503, 408, 429] {
            assert!(!status(code).is_permanent(), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 413] {
            assert!(status(code).is_permanent(), "{code}");
        }
        assert_eq!(status(503).to_string(), "PUT u answered 503 Service Unavailable");
    }
}
