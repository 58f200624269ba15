//! The few requests of GCS's JSON API the backend makes
//! (cloud.google.com/storage/docs/json_api), over reqwest: bucket and object
//! metadata, media downloads, media uploads, resumable-upload sessions,
//! compose, delete and list.
//!
//! Every request carries the account's bearer token from object_store's
//! credential provider (none when it is empty: a key with `disable_oauth`,
//! for fake-gcs-server) and is retried, with a doubling backoff, on broken
//! connections, timeouts, 408, 429 and 5xx, at most [`RETRIES`] times within
//! [`RETRY_TIMEOUT`] (object.rs's policy for the other object stores). Every
//! request here is idempotent: an object written again, a compose made again,
//! a delete of what is gone (404 is success) come out the same.
//!
//! Errors ([`GcsRequestError`]) carry the service's status and the message of
//! its error body, never a URL (a session URI is a credential) nor a token.

use std::convert::Infallible;
use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use object_store::gcp::GcpCredentialProvider;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Deserializer};
use url::Url;

use crate::GcsRequestError;
use crate::object::{RETRIES, RETRY_TIMEOUT};

/// The JSON API's base URL when neither the account nor its key names one.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";
/// Time to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time an answer may go without a byte arriving. A whole request has no
/// limit: a part or a download takes as long as the link needs.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The wait before the first retry, doubled before each next one up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Bytes of an error answer read for its message.
const ERROR_BODY_LIMIT: usize = 8 * 1024;
/// Characters of an error answer's message kept in an error.
const ERROR_MESSAGE_CHARS: usize = 300;

/// A client of one bucket.
pub(crate) struct Client {
    http: reqwest::Client,
    /// The JSON API's base URL, e.g. `https://storage.googleapis.com/`.
    base: Url,
    bucket: String,
    credentials: GcpCredentialProvider,
}

impl fmt::Debug for Client {
    /// The endpoint and the bucket; the credentials stay out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint())
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// An object's metadata, as far as the backend reads it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Object {
    pub(crate) name: String,
    /// The JSON API writes 64-bit numbers as strings.
    #[serde(deserialize_with = "number")]
    pub(crate) size: u64,
    /// Which version of the object this is, as the API writes it.
    #[serde(deserialize_with = "number_text")]
    pub(crate) generation: String,
}

/// A page of a listing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectList {
    #[serde(default)]
    items: Vec<Object>,
    next_page_token: Option<String>,
}

/// The body of an error answer: `{"error": {"code": 404, "message": "…"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
}

impl Client {
    /// A client of `bucket` at `endpoint`, its requests authorized by `credentials`.
    pub(crate) fn new(
        endpoint: &str,
        bucket: &str,
        credentials: GcpCredentialProvider,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("netwatch/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = Url::parse(&format!("{}/", endpoint.trim_end_matches('/')))
            .expect("the endpoint is an Endpoint or the default, both absolute http(s) URLs");
        Ok(Self {
            http,
            base,
            bucket: bucket.to_owned(),
            credentials,
        })
    }

    /// The JSON API's base URL, without a trailing `/`.
    pub(crate) fn endpoint(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    pub(crate) fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The base URL with `segments` appended, each percent-encoded whole
    /// (an object name's `/` becomes `%2F`, as the JSON API wants).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has path segments")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn object_url(&self, name: &str, query: &[(&str, &str)]) -> Url {
        with_query(self.url(&["storage", "v1", "b", &self.bucket, "o", name]), query)
    }

    fn upload_url(&self, query: &[(&str, &str)]) -> Url {
        with_query(self.url(&["upload", "storage", "v1", "b", &self.bucket, "o"]), query)
    }

    /// Sends the request `make` builds, authorized, retrying as the module
    /// says; the answer when it is a success.
    async fn send(&self, make: impl Fn(&reqwest::Client) -> RequestBuilder) -> Result<Response, GcsRequestError> {
        let deadline = Instant::now() + RETRY_TIMEOUT;
        let mut backoff = FIRST_BACKOFF;
        let mut retries = 0;
        loop {
            let credential = self
                .credentials
                .get_credential()
                .await
                .map_err(GcsRequestError::Credentials)?;
            let mut request = make(&self.http);
            if !credential.bearer.is_empty() {
                request = request.bearer_auth(&credential.bearer);
            }
            let error = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => status_error(response).await,
                Err(err) => GcsRequestError::Send(err.without_url()),
            };
            let worth_retrying = match &error {
                GcsRequestError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
                GcsRequestError::Send(err) => !err.is_builder(),
                _ => false,
            };
            if !worth_retrying || retries >= RETRIES || Instant::now() + backoff > deadline {
                return Err(error);
            }
            tracing::debug!(error = %error, retry = retries + 1, "request to GCS failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            retries += 1;
        }
    }

    /// Reads the bucket's metadata: whether it exists and the credentials may use it.
    pub(crate) async fn bucket_metadata(&self) -> Result<(), GcsRequestError> {
        let url = with_query(self.url(&["storage", "v1", "b", &self.bucket]), &[("fields", "name")]);
        self.send(|http| http.get(url.clone())).await.map(drop)
    }

    /// The metadata of object `name`; `None` when there is none.
    pub(crate) async fn metadata(&self, name: &str) -> Result<Option<Object>, GcsRequestError> {
        let url = self.object_url(name, &[("fields", "name,size,generation")]);
        match self.send(|http| http.get(url.clone())).await {
            Ok(response) => json(response).await.map(Some),
            Err(GcsRequestError::Status { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Starts downloading generation `generation` of object `name`, all of
    /// it or the bytes of `range` (not empty). The generation gone (the
    /// object replaced or deleted since its metadata was read) is
    /// [`GcsRequestError::Changed`].
    pub(crate) async fn download(
        &self,
        name: &str,
        generation: &str,
        range: Option<Range<u64>>,
    ) -> Result<Response, GcsRequestError> {
        let url = self.object_url(name, &[("alt", "media"), ("generation", generation)]);
        let result = self
            .send(|http| {
                let request = http.get(url.clone());
                match &range {
                    Some(range) => request.header(RANGE, format!("bytes={}-{}", range.start, range.end - 1)),
                    None => request,
                }
            })
            .await;
        match result {
            Err(GcsRequestError::Status { status: 404, .. }) => Err(GcsRequestError::Changed {
                generation: generation.to_owned(),
            }),
            result => result,
        }
    }

    /// Writes object `name` whole, with `chunks` as its bytes, in one
    /// request (a media upload: the object appears when it is complete).
    pub(crate) async fn upload(
        &self,
        name: &str,
        content_type: &str,
        chunks: &[Bytes],
    ) -> Result<Object, GcsRequestError> {
        let url = self.upload_url(&[("uploadType", "media"), ("name", name)]);
        let len: usize = chunks.iter().map(Bytes::len).sum();
        let response = self
            .send(|http| {
                let body = match chunks {
                    [] => reqwest::Body::from(Bytes::new()),
                    [one] => reqwest::Body::from(one.clone()),
                    many => {
                        // Owned: the body outlives this borrow of the chunks.
                        let owned: Vec<Bytes> = many.to_vec();
                        reqwest::Body::wrap_stream(stream::iter(owned.into_iter().map(Ok::<_, Infallible>)))
                    }
                };
                http.post(url.clone())
                    .header(CONTENT_TYPE, content_type)
                    .header(CONTENT_LENGTH, len)
                    .body(body)
            })
            .await?;
        json(response).await
    }

    /// Opens a resumable-upload session for object `name`; its session URI,
    /// which lets its holder write that object (and only that) with one PUT
    /// of the whole body, no other credential needed.
    pub(crate) async fn open_session(&self, name: &str, content_type: &str) -> Result<String, GcsRequestError> {
        let url = self.upload_url(&[("uploadType", "resumable"), ("name", name)]);
        let metadata = serde_json::json!({ "name": name, "contentType": content_type }).to_string();
        let response = self
            .send(|http| {
                http.post(url.clone())
                    .header(CONTENT_TYPE, "application/json; charset=UTF-8")
                    .header("X-Upload-Content-Type", content_type)
                    .body(metadata.clone())
            })
            .await?;
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| GcsRequestError::Answer("a new upload session's answer has no Location".to_owned()))?;
        // Absolute from GCS; resolved against the endpoint should a server answer a path.
        let session = self
            .base
            .join(location)
            .map_err(|_| GcsRequestError::Answer("a new upload session's Location is not a URL".to_owned()))?;
        Ok(session.into())
    }

    /// Composes `sources` (1 to 32 objects of the bucket, in order) into
    /// object `destination`, replacing it; the new object.
    pub(crate) async fn compose(
        &self,
        sources: &[String],
        destination: &str,
        content_type: &str,
    ) -> Result<Object, GcsRequestError> {
        let url = self.url(&["storage", "v1", "b", &self.bucket, "o", destination, "compose"]);
        let sources: Vec<_> = sources.iter().map(|name| serde_json::json!({ "name": name })).collect();
        let body = serde_json::json!({
            "sourceObjects": sources,
            "destination": { "contentType": content_type },
        })
        .to_string();
        let response = self
            .send(|http| {
                http.post(url.clone())
                    .header(CONTENT_TYPE, "application/json; charset=UTF-8")
                    .body(body.clone())
            })
            .await?;
        json(response).await
    }

    /// Deletes object `name`; one that is not there is no error.
    pub(crate) async fn delete(&self, name: &str) -> Result<(), GcsRequestError> {
        let url = self.object_url(name, &[]);
        match self.send(|http| http.delete(url.clone())).await {
            Ok(_) | Err(GcsRequestError::Status { status: 404, .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Every object whose name starts with `prefix`, page by page.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<Object>, GcsRequestError> {
        let mut objects = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![
                ("prefix", prefix),
                ("fields", "items(name,size,generation),nextPageToken"),
            ];
            if let Some(token) = &page_token {
                query.push(("pageToken", token));
            }
            let url = with_query(self.url(&["storage", "v1", "b", &self.bucket, "o"]), &query);
            let response = self.send(|http| http.get(url.clone())).await?;
            let page: ObjectList = json(response).await?;
            objects.extend(page.items);
            match page.next_page_token {
                Some(token) if !token.is_empty() => page_token = Some(token),
                _ => return Ok(objects),
            }
        }
    }
}

/// `url` with `query`, each name and value percent-encoded as RFC 3986
/// wants (a space as `%20`, not the form encoding's `+`, which GCS would
/// read as a `+` of an object's name).
fn with_query(mut url: Url, query: &[(&str, &str)]) -> Url {
    if query.is_empty() {
        return url;
    }
    let encoded: Vec<String> = query
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect();
    url.set_query(Some(&encoded.join("&")));
    url
}

/// `text` with every byte but RFC 3986's unreserved ones as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A success answer's JSON body.
async fn json<T: serde::de::DeserializeOwned>(response: Response) -> Result<T, GcsRequestError> {
    let body = response
        .bytes()
        .await
        .map_err(|err| GcsRequestError::Send(err.without_url()))?;
    serde_json::from_slice(&body).map_err(|err| GcsRequestError::Answer(err.to_string()))
}

/// An error answer as an error: its status and its message, read from the
/// first [`ERROR_BODY_LIMIT`] bytes of its body.
async fn status_error(mut response: Response) -> GcsRequestError {
    let status = response.status();
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(ERROR_BODY_LIMIT);
    let message = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(parsed) => parsed.error.message,
        Err(_) => String::from_utf8_lossy(&body).into_owned(),
    };
    GcsRequestError::Status {
        status: status.as_u16(),
        message: one_line(&message, status),
    }
}

/// `message` on one line, at most [`ERROR_MESSAGE_CHARS`] characters; the
/// status's reason when it is empty.
fn one_line(message: &str, status: StatusCode) -> String {
    let words: Vec<&str> = message.split_whitespace().collect();
    let line = words.join(" ");
    if line.is_empty() {
        return status.canonical_reason().unwrap_or("no message").to_owned();
    }
    match line.char_indices().nth(ERROR_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// A 64-bit number the JSON API writes as a string (or, leniently, as a number).
fn number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    number_text(deserializer)?
        .parse()
        .map_err(|_| serde::de::Error::custom("not a 64-bit unsigned number"))
}

/// A number the JSON API writes as a string, as text.
fn number_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        String(String),
        Number(u64),
    }
    Ok(match Text::deserialize(deserializer)? {
        Text::String(text) => text,
        Text::Number(number) => number.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_as_the_json_api_wants() {
        let client = Client::new(
            "http://127.0.0.1:4443/gcs",
            "b",
            std::sync::Arc::new(object_store::StaticCredentialProvider::new(
                object_store::gcp::GcpCredential { bearer: String::new() },
            )),
        )
        .unwrap();
        assert_eq!(
            client
                .object_url("a dir/x+y.cap", &[("alt", "media"), ("generation", "7")])
                .as_str(),
            "http://127.0.0.1:4443/gcs/storage/v1/b/b/o/a%20dir%2Fx+y.cap?alt=media&generation=7"
        );
        assert_eq!(
            client
                .upload_url(&[("uploadType", "media"), ("name", "a dir/x+y.cap")])
                .as_str(),
            "http://127.0.0.1:4443/gcs/upload/storage/v1/b/b/o?uploadType=media&name=a%20dir%2Fx%2By.cap"
        );
        assert_eq!(client.endpoint(), "http://127.0.0.1:4443/gcs");
    }

    #[test]
    fn error_messages_are_one_short_line() {
        assert_eq!(
            one_line("  No such\n object:  b/x ", StatusCode::NOT_FOUND),
            "No such object: b/x"
        );
        assert_eq!(one_line("", StatusCode::NOT_FOUND), "Not Found");
        let long = "x".repeat(1000);
        assert_eq!(
            one_line(&long, StatusCode::BAD_REQUEST).chars().count(),
            ERROR_MESSAGE_CHARS + 1
        );
    }

    #[test]
    fn numbers_may_be_strings() {
        let object: Object =
            serde_json::from_str(r#"{"name":"a","size":"12","generation":"1796612656871683"}"#).unwrap();
        assert_eq!((object.size, object.generation.as_str()), (12, "1796612656871683"));
        let object: Object = serde_json::from_str(r#"{"name":"a","size":3,"generation":5}"#).unwrap();
        assert_eq!((object.size, object.generation.as_str()), (3, "5"));
        assert!(serde_json::from_str::<Object>(r#"{"name":"a","size":"-1","generation":"1"}"#).is_err());
    }
}
