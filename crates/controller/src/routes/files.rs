//! Capture files in the storage accounts: parts of the agents' uploads
//! (`PUT {UPLOAD_PREFIX}/{account}/{blob path}?uploadId=…&part=…&expires=…&sig=…`,
//! a grant `uploads.rs` signed, for accounts whose backend cannot hand agents
//! a grant of its own) and the clients' downloads (`GET`/`HEAD
//! {DOWNLOAD_PREFIX}/{account}/{blob path}`, one HTTP range at a time, RFC
//! 9110 §14).
//!
//! netwatch's own routes, not ARM's: no `api-version`, paths taken exactly as
//! sent (blob paths are case-sensitive; [`super::normalize_path`] leaves
//! `/netwatch/…` alone), and no [`super::MAX_BODY_BYTES`] limit on parts,
//! which are streamed to storage as they arrive. Errors still carry ARM's body.
//!
//! *Our choices*: a part must say its `Content-Length` (411 otherwise), so a
//! cut-off part is told from a whole one and stores nothing; its
//! `Content-MD5`, when sent, is checked. A multi-range or malformed `Range`
//! is ignored and the whole file sent, as RFC 9110 §14.2 allows.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use netwatch_api::agent::{DOWNLOAD_PREFIX, UPLOAD_PREFIX};
use netwatch_api::error::{ApiError, ErrorCode};
use netwatch_storage::{BlobPath, ByteRange, OpenError, Storage};
use serde_json::json;

use super::{AppState, HttpError};
use crate::accounts::Account;

/// What capture files are (the libpcap format, api-contract.md §6).
const PCAP_CONTENT_TYPE: &str = "application/vnd.tcpdump.pcap";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            &format!("{UPLOAD_PREFIX}/{{account}}/{{*path}}"),
            // Streamed to storage, so no size limit: captures reach 4 GiB.
            // An answer given before a part was read waits for the rest of
            // it, up to MAX_PART_SIZE (drain.rs, `limit`, goes by this path).
            put(upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            &format!("{DOWNLOAD_PREFIX}/{{account}}/{{*path}}"),
            get(download).head(download_head),
        )
}

/// The grant of a part sent through the controller.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartQuery {
    upload_id: String,
    part: u32,
    expires: i64,
    sig: String,
}

/// What a part's request says when its grant cannot be read.
const GRANT_NEEDED: &str = "a part needs the grant the controller handed out (uploadId, part, expires, sig)";

impl PartQuery {
    /// Whether this grant is this controller's, for this part of `blob` in
    /// `account`, and still good.
    fn check(&self, state: &AppState, account: &str, blob: &BlobPath) -> Result<(), HttpError> {
        super::uploads::check_part_grant(
            state,
            account,
            blob,
            &self.upload_id,
            self.part,
            self.expires,
            &self.sig,
        )
    }
}

/// `PUT {UPLOAD_PREFIX}/{account}/{path}?{grant}`: stores one part of an
/// upload; 200 with the part's receipt in `ETag`.
async fn upload(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<PartQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let (account, blob) = blob_location(path)?;
    let Query(grant) = query
        .map_err(|rejection| ApiError::bad_request("query", format!("{GRANT_NEEDED}: {}", rejection.body_text())))?;
    grant.check(&state, &account, &blob)?;
    let storage = account_storage(&state, &account).await?;
    let length = content_length(&headers)?;
    let md5 = content_md5(&headers)?;
    let receipt = storage
        .backend
        .put_part(
            &blob,
            &grant.upload_id,
            grant.part,
            body.into_data_stream(),
            length,
            md5,
        )
        .await
        .map_err(|err| super::uploads::upload_error(&state, &account, err))?;
    tracing::debug!(account, blob = %blob, part = grant.part, length, "part stored");
    let mut response = Json(json!({ "part": receipt.part, "size": length })).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, super::header_value(&receipt.id)?);
    Ok(response)
}

/// The part's `Content-MD5` (RFC 1864: base64 of the 16-byte digest), if sent.
fn content_md5(headers: &HeaderMap) -> Result<Option<[u8; 16]>, HttpError> {
    use base64::Engine as _;
    let Some(value) = headers.get("content-md5") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text.trim()).ok())
        .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request("Content-MD5", "Content-MD5 is not the base64 of a 16-byte MD5 digest").into()
        })
}

/// `GET {DOWNLOAD_PREFIX}/{account}/{path}`: the file, or the range asked for.
async fn download(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let (account, blob) = blob_location(path)?;
    let storage = account_storage(&state, &account).await?;
    let range = requested_range(&headers);
    let opened = match storage.backend.open(&blob, range).await {
        Ok(opened) => opened,
        Err(OpenError::RangeNotSatisfiable { size }) => return Ok(range_not_satisfiable(size)),
        Err(err) => return Err(open_error(&account, &blob, err)),
    };
    let mut response = Body::from_stream(opened.body).into_response();
    *response.status_mut() = file_headers(response.headers_mut(), opened.size, range.map(|_| opened.range))?;
    Ok(response)
}

/// `HEAD {DOWNLOAD_PREFIX}/{account}/{path}`: GET's headers, without reading the file.
async fn download_head(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let (account, blob) = blob_location(path)?;
    let storage = account_storage(&state, &account).await?;
    let size = match storage.backend.size(&blob).await {
        Ok(Some(size)) => size,
        Ok(None) => {
            return Err(open_error(
                &account,
                &blob,
                OpenError::NotFound { path: blob.to_string() },
            ));
        }
        Err(err) => return Err(open_error(&account, &blob, err)),
    };
    let selected = match requested_range(&headers) {
        None => None,
        Some(range) => match range.resolve(size) {
            Some(selected) => Some(selected),
            None => return Ok(range_not_satisfiable(size)),
        },
    };
    let mut response = StatusCode::OK.into_response();
    *response.status_mut() = file_headers(response.headers_mut(), size, selected)?;
    Ok(response)
}

/// The account name and the checked blob path of a request.
fn blob_location(path: Result<Path<(String, String)>, PathRejection>) -> Result<(String, BlobPath), HttpError> {
    let Path((account, path)) = path.map_err(|rejection| ApiError::bad_request("path", rejection.body_text()))?;
    let blob = BlobPath::parse(&path).map_err(|err| ApiError::bad_request("path", err.to_string()))?;
    Ok((account, blob))
}

/// A part handed over by an agent on this machine ([`crate::handoff`]): its
/// grant (the path a `PUT` of it would go to) checked as [`upload`] checks
/// it, then `part.len` bytes of `file` from `part.offset` copied into the
/// upload by the local backend, or read as a part's body for storage this
/// controller relays to; the part's receipt.
pub(crate) async fn handed_over(
    state: &AppState,
    part: &netwatch_api::agent::HandoffPart,
    file: std::fs::File,
) -> Result<String, HttpError> {
    let bad = |message: String| HttpError::from(ApiError::bad_request("grant", message));
    let uri: axum::http::Uri = part
        .grant
        .parse()
        .map_err(|err| bad(format!("the grant is not a path: {err}")))?;
    let rest = uri
        .path()
        .strip_prefix(UPLOAD_PREFIX)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| bad(format!("the grant is not a part's path under {UPLOAD_PREFIX}")))?;
    let (account, path) = rest
        .split_once('/')
        .ok_or_else(|| bad("the grant names no blob".to_owned()))?;
    let blob = BlobPath::parse(path).map_err(|err| ApiError::bad_request("path", err.to_string()))?;
    let Query(grant) = Query::<PartQuery>::try_from_uri(&uri)
        .map_err(|rejection| bad(format!("{GRANT_NEEDED}: {}", rejection.body_text())))?;
    grant.check(state, account, &blob)?;
    let storage = account_storage(state, account).await?;
    let stored = match &storage.backend {
        netwatch_storage::Backend::Local(local) => {
            local
                .put_part_from_file(&blob, &grant.upload_id, grant.part, file, part.offset, part.len)
                .await
        }
        // Parts this controller relays to storage (an Azure account with
        // only a SAS): read from the file as a PUT's body would be.
        backend => {
            let body = read_range(file, part.offset, part.len);
            backend
                .put_part(&blob, &grant.upload_id, grant.part, body, part.len, None)
                .await
        }
    };
    let receipt = stored.map_err(|err| super::uploads::upload_error(state, account, err))?;
    tracing::debug!(account, blob = %blob, part = grant.part, length = part.len, "part handed over");
    Ok(receipt.id)
}

/// `len` bytes of `file` from `offset`, in 1 MiB chunks read at their
/// offsets (`pread`): a descriptor handed over shares its position with the
/// agent's and with the other parts', so nothing may seek it.
fn read_range(
    file: std::fs::File,
    offset: u64,
    len: u64,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    const CHUNK: u64 = 1 << 20;
    let file = Arc::new(file);
    futures_util::stream::try_unfold((offset, len), move |(at, left)| {
        let file = Arc::clone(&file);
        async move {
            if left == 0 {
                return Ok(None);
            }
            let want = usize::try_from(left.min(CHUNK)).unwrap_or(1 << 20);
            let read = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt as _;
                let mut chunk = vec![0u8; want];
                let read = file.read_at(&mut chunk, at)?;
                chunk.truncate(read);
                Ok::<_, std::io::Error>(chunk)
            })
            .await
            .map_err(std::io::Error::other)??;
            if read.is_empty() {
                // The file ends early: the part's length check says so.
                return Ok(None);
            }
            let read_len = read.len() as u64;
            Ok(Some((bytes::Bytes::from(read), (at + read_len, left - read_len))))
        }
    })
}

/// The backend of the configured account `account`; 404 naming the accounts there are.
async fn account_storage(state: &AppState, account: &str) -> Result<Arc<Account>, HttpError> {
    if let Some(found) = state.storage.get(account).await? {
        return Ok(found);
    }
    let names = state.storage.names().await?;
    let known = if names.is_empty() {
        "no storage account is configured".to_owned()
    } else {
        format!("the accounts are {}", names.join(", "))
    };
    let message = format!("storage account {account:?} was not found: {known}");
    Err(ApiError::new(ErrorCode::ResourceNotFound, message).into())
}

/// The upload's announced length; 411 without one.
fn content_length(headers: &HeaderMap) -> Result<u64, HttpError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Err(HttpError::with_status(
            StatusCode::LENGTH_REQUIRED,
            "LengthRequired",
            ApiError::bad_request(
                "Content-Length",
                "an upload must say its size in Content-Length (chunked uploads are not accepted)",
            ),
        ));
    };
    value
        .to_str()
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| ApiError::bad_request("Content-Length", "Content-Length is not a number of bytes").into())
}

/// The one byte range a `Range` header asks for; `None` for none, several or
/// a malformed one (all answered with the whole file).
fn requested_range(headers: &HeaderMap) -> Option<ByteRange> {
    let mut values = headers.get_all(header::RANGE).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    parse_range(value.to_str().ok()?)
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` (RFC 9110 §14.1.2; the unit in any case).
fn parse_range(text: &str) -> Option<ByteRange> {
    let (unit, spec) = text.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    match (first.trim(), last.trim()) {
        ("", "") => None,
        ("", suffix) => Some(ByteRange::Suffix(digits(suffix)?)),
        (first, "") => Some(ByteRange::From(digits(first)?)),
        (first, last) => {
            let (first, last) = (digits(first)?, digits(last)?);
            (first <= last).then_some(ByteRange::Bounded { first, last })
        }
    }
}

/// A decimal number of digits only (`str::parse` would take a `+`).
fn digits(text: &str) -> Option<u64> {
    text.bytes().all(|b| b.is_ascii_digit()).then(|| text.parse().ok())?
}

/// Sets the headers of a file answer; its status: 206 for a `range` of the
/// file's `size` bytes, 200 for all of it.
fn file_headers(
    headers: &mut HeaderMap,
    size: u64,
    range: Option<std::ops::Range<u64>>,
) -> Result<StatusCode, HttpError> {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PCAP_CONTENT_TYPE));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (status, length) = match range {
        Some(range) => {
            let content_range = format!("bytes {}-{}/{size}", range.start, range.end - 1);
            headers.insert(header::CONTENT_RANGE, super::header_value(&content_range)?);
            (StatusCode::PARTIAL_CONTENT, range.end - range.start)
        }
        None => (StatusCode::OK, size),
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(status)
}

/// 416 with `Content-Range: bytes */{size}` (RFC 9110 §15.5.17).
fn range_not_satisfiable(size: u64) -> Response {
    let message = format!("the range asked for is outside the file's {size} bytes");
    let error = HttpError::with_status(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "InvalidRange",
        ApiError::bad_request("Range", message),
    );
    let mut response = error.into_response();
    if let Ok(value) = HeaderValue::try_from(format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    response
}

fn open_error(account: &str, blob: &BlobPath, err: OpenError) -> HttpError {
    match err {
        OpenError::NotFound { .. } => {
            let message = format!("file {:?} was not found in storage account {account:?}", blob.as_str());
            ApiError::new(ErrorCode::ResourceNotFound, message).into()
        }
        OpenError::RangeNotSatisfiable { size } => {
            ApiError::bad_request("Range", format!("the range is outside the file's {size} bytes")).into()
        }
        OpenError::Client(ref client) if !client.is_permanent() => HttpError::with_status(
            StatusCode::SERVICE_UNAVAILABLE,
            "StorageUnavailable",
            ApiError::new(
                ErrorCode::InternalServerError,
                format!("storage account {account:?} is unreachable: {err}"),
            ),
        ),
        OpenError::Io { .. } | OpenError::Client(_) => {
            ApiError::internal(format!("reading {blob} in {account:?} failed"), err).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_rfc_9110_writes_them() {
        let rows = [
            ("bytes=0-99", Some(ByteRange::Bounded { first: 0, last: 99 })),
            ("bytes=5-5", Some(ByteRange::Bounded { first: 5, last: 5 })),
            (" Bytes = 7- ", Some(ByteRange::From(7))),
            ("bytes=-20", Some(ByteRange::Suffix(20))),
            ("bytes=-0", Some(ByteRange::Suffix(0))),
            ("bytes=9-3", None),
            ("bytes=0-1,4-5", None),
            ("bytes=-", None),
            ("bytes=+1-2", None),
            ("bytes=a-b", None),
            ("items=0-1", None),
            ("bytes 0-1", None),
            ("bytes=99999999999999999999999-", None),
        ];
        for (text, range) in rows {
            assert_eq!(parse_range(text), range, "{text:?}");
        }
    }
}
