//! Upload grants (DESIGN §6: no storage keys on hosts), the controller's side
//! of the protocol in `netwatch_api::agent` ("Uploads"):
//! - `POST UPLOADS_PATH`: an agent asks to upload file `seq` of a capture run
//!   it owns (with its SHA-256 from agents of upload protocol 1, without from
//!   those of protocol 2, which hash the file as its parts go: the hub's
//!   welcome says this controller speaks 2); the controller works out the blob's path itself (the agent never
//!   names one), begins the blob's multipart upload when asked to, and answers
//!   with short-lived grants, one per part: a SAS or presigned URL when the
//!   account's backend can sign one, else a signed path on this controller
//!   ([`part_path`]) which `files.rs` checks and stores through the backend.
//! - `POST UPLOADS_COMPLETE_PATH`: the parts are stored; the controller
//!   commits the blob, checks its size, and records the file for the
//!   capture's status (`netwatch.files`) and downloads.
//!
//! An agent's own credential may upload only for captures on its VM.
//! Answers: 404 when storage no longer knows the upload or a part of it (the
//! agent begins it again), 4xx when the request cannot succeed, 503 when storage is
//! unreachable (the agent keeps the file and retries).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use netwatch_api::agent::{
    PartGrant, PartReceipt, UPLOAD_PREFIX, UPLOADS_COMPLETE_PATH, UPLOADS_PATH, UploadComplete, UploadDone,
    UploadGrant, UploadRequest, parse_run_id,
};
use netwatch_api::error::{ApiError, ErrorCode, error_chain};
use netwatch_api::packet_capture::PacketCapture;
use netwatch_storage::{Backend, BlobPath, Storage, UploadError};

use super::{AppState, ArmBody, HttpError, now_ms};
use crate::auth::AgentIdentity;
use crate::lifecycle::capture_file_blob_path;
use crate::store::{CaptureFileRecord, CaptureRecord};

/// Most parts granted in one answer; an agent asks again for the rest.
const MAX_PARTS_PER_GRANT: usize = 64;
/// Most parts of one file (S3's and Azure's limit is 10,000 and 50,000).
const MAX_PARTS: u64 = 10_000;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(UPLOADS_PATH, post(grant))
        .route(UPLOADS_COMPLETE_PATH, post(complete))
}

/// The file an upload is for: its account, backend and blob path.
struct Target {
    record: CaptureRecord,
    account: String,
    backend: Backend,
    blob: BlobPath,
    storage_path: String,
}

/// `POST UPLOADS_PATH`: grants for parts of one file.
async fn grant(
    State(state): State<AppState>,
    identity: Option<Extension<AgentIdentity>>,
    ArmBody(body): ArmBody,
) -> Result<Json<UploadGrant>, HttpError> {
    let request: UploadRequest = parse_body(&body)?;
    // Upload protocol 2: an agent may leave the SHA-256 out until the commit.
    if !request.sha256.is_empty() && !is_sha256_hex(&request.sha256) {
        return Err(ApiError::bad_request("sha256", "sha256 must be 64 lower-case hex digits").into());
    }
    let target = target(&state, identity, &request.capture_id, request.seq).await?;
    let part_size = target.backend.part_size();
    let count = request.size.div_ceil(part_size).max(1);
    if count > MAX_PARTS {
        let message = format!(
            "a file of {} bytes needs {count} parts of {part_size} bytes, more than the {MAX_PARTS} storage takes: \
             raise the account's part_size",
            request.size
        );
        return Err(ApiError::bad_request("size", message).into());
    }
    let upload_id = match &request.upload_id {
        Some(upload_id) => upload_id.clone(),
        None => target
            .backend
            .begin_upload(&target.blob)
            .await
            .map_err(|err| upload_error(&state, &target.account, err))?,
    };
    let parts: Vec<u32> = if request.parts.is_empty() {
        (1..=u32::try_from(count).unwrap_or(u32::MAX))
            .take(MAX_PARTS_PER_GRANT)
            .collect()
    } else {
        if let Some(bad) = request.parts.iter().find(|&&part| part == 0 || u64::from(part) > count) {
            let message = format!("part {bad} is not one of the file's parts 1-{count}");
            return Err(ApiError::bad_request("parts", message).into());
        }
        request.parts.iter().copied().take(MAX_PARTS_PER_GRANT).collect()
    };
    let ttl = state.config.grant_ttl;
    let expires_ms = now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let granted = target
        .backend
        .grant_parts(&target.blob, &upload_id, &parts, ttl)
        .await
        .map_err(|err| upload_error(&state, &target.account, err))?;
    let parts = match granted {
        Some(grants) => grants
            .into_iter()
            .map(|grant| PartGrant {
                part: grant.part,
                url: grant.url,
                headers: grant.headers,
                receipt: grant.receipt,
            })
            .collect(),
        // Through this controller, with a grant it signs.
        None => parts
            .into_iter()
            .map(|part| PartGrant {
                part,
                url: part_path(&state, &target.account, &target.blob, &upload_id, part, expires_ms),
                headers: vec![],
                receipt: None,
            })
            .collect(),
    };
    tracing::debug!(capture = %target.record.id, seq = request.seq, upload_id, "upload grants handed out");
    Ok(Json(UploadGrant {
        upload_id,
        part_size,
        expires_ms,
        parts,
    }))
}

/// `POST UPLOADS_COMPLETE_PATH`: commits a file and records it.
async fn complete(
    State(state): State<AppState>,
    identity: Option<Extension<AgentIdentity>>,
    ArmBody(body): ArmBody,
) -> Result<Json<UploadDone>, HttpError> {
    let request: UploadComplete = parse_body(&body)?;
    let target = target(&state, identity, &request.capture_id, request.seq).await?;
    if !is_sha256_hex(&request.sha256) {
        return Err(ApiError::bad_request("sha256", "sha256 must be 64 lower-case hex digits").into());
    }
    let receipts: Vec<netwatch_storage::PartReceipt> = request
        .parts
        .iter()
        .map(|PartReceipt { part, id }| netwatch_storage::PartReceipt {
            part: *part,
            id: id.clone(),
        })
        .collect();
    let size = match target
        .backend
        .complete_upload(&target.blob, &request.upload_id, &receipts, request.size)
        .await
    {
        Ok(size) => size,
        // A commit sent again after its answer was lost: the upload is gone
        // because it was committed. Done, when this very file is stored.
        Err(UploadError::NoSuchUpload { .. }) if committed_already(&state, &target, &request).await? => {
            tracing::info!(capture = %target.record.id, seq = request.seq, "commit repeated: already stored");
            return Ok(Json(UploadDone {
                storage_path: target.storage_path,
                size: request.size,
            }));
        }
        Err(err) => {
            state.metrics.upload_failures.inc();
            return Err(upload_error(&state, &target.account, err));
        }
    };
    state.metrics.upload_bytes.inc_by(size);
    let file = CaptureFileRecord {
        seq: i64::from(request.seq),
        storage_path: target.storage_path.clone(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        sha256: request.sha256.clone(),
        stored_ms: now_ms(),
    };
    state
        .store
        .put_capture_file(&target.record.id, target.record.created_ms, &file)
        .await?;
    tracing::info!(capture = %target.record.id, seq = request.seq, size, account = target.account, blob = %target.blob,
        "capture file stored");
    Ok(Json(UploadDone {
        storage_path: target.storage_path,
        size,
    }))
}

/// Whether the file a commit names is recorded as stored with the same size
/// and SHA-256, and storage holds that many bytes at its path.
async fn committed_already(state: &AppState, target: &Target, request: &UploadComplete) -> Result<bool, HttpError> {
    let files = state
        .store
        .capture_files(&target.record.id, target.record.created_ms)
        .await?;
    let recorded = files.iter().any(|file| {
        file.seq == i64::from(request.seq)
            && file.sha256 == request.sha256
            && u64::try_from(file.size).ok() == Some(request.size)
    });
    if !recorded {
        return Ok(false);
    }
    Ok(matches!(target.backend.size(&target.blob).await, Ok(Some(size)) if size == request.size))
}

/// The capture run `run` names, checked to be the caller's, and where its
/// file `seq` goes.
async fn target(
    state: &AppState,
    identity: Option<Extension<AgentIdentity>>,
    run: &str,
    seq: u32,
) -> Result<Target, HttpError> {
    let not_found = || {
        let message = format!("no packet capture run {run:?}: it was deleted or created again");
        HttpError::from(ApiError::new(ErrorCode::ResourceNotFound, message))
    };
    let (capture, created_ms) = parse_run_id(run).ok_or_else(not_found)?;
    let record = state
        .store
        .get_capture(capture)
        .await?
        .filter(|record| record.created_ms == created_ms)
        .ok_or_else(not_found)?;
    if let Some(Extension(AgentIdentity::Credential { vm_id })) = &identity
        && !vm_id.eq_ignore_ascii_case(&record.target_id)
    {
        let message = format!(
            "packet capture {} runs on another host: an agent uploads only its own files",
            record.id
        );
        return Err(HttpError::with_status(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            ApiError::new(ErrorCode::InvalidRequestFormat, message),
        ));
    }
    let request: PacketCapture = serde_json::from_str(&record.request_json)
        .map_err(|err| ApiError::internal(format!("stored capture {} does not parse", record.id), err))?;
    let location = request.properties.storage_location;
    let (Some(storage_id), Some(storage_path)) = (location.storage_id, location.storage_path) else {
        let message = format!(
            "packet capture {} has no storage account: its files stay on the host",
            record.id
        );
        return Err(ApiError::conflict(message).into());
    };
    let account = storage_id.rsplit('/').next().unwrap_or_default().to_owned();
    let backend = match state.storage.get(&account).await? {
        Some(found) => found.backend.clone(),
        None => {
            let message = format!(
                "storage account {account:?} of packet capture {} is no longer configured",
                record.id
            );
            return Err(ApiError::conflict(message).into());
        }
    };
    let blob_text = capture_file_blob_path(&record.target_id, record.created_ms, seq)
        .ok_or_else(|| ApiError::internal(format!("stored capture {} has a bad target", record.id), "target"))?;
    let blob = BlobPath::parse(&blob_text)
        .map_err(|err| ApiError::internal(format!("capture {} makes a bad blob path", record.id), err))?;
    // The capture's storagePath names its first file; others sit beside it.
    let storage_path = match storage_path.rsplit_once('/') {
        Some((dir, _)) if seq > 0 => format!("{dir}/{}", blob.file_name()),
        _ => storage_path,
    };
    Ok(Target {
        record,
        account,
        backend,
        blob,
        storage_path,
    })
}

/// The controller path a part is `PUT` to, with its signed grant:
/// `{UPLOAD_PREFIX}/{account}/{blob}?uploadId=…&part=…&expires=…&sig=…`.
fn part_path(state: &AppState, account: &str, blob: &BlobPath, upload_id: &str, part: u32, expires_ms: i64) -> String {
    let (part, expires) = (part.to_string(), expires_ms.to_string());
    let sig = state
        .config
        .grant_signer
        .sign_fields(&[account, blob.as_str(), upload_id, &part, &expires]);
    format!(
        "{UPLOAD_PREFIX}/{account}/{}?uploadId={}&part={part}&expires={expires}&sig={sig}",
        blob.as_str(),
        query_escape(upload_id)
    )
}

/// Whether a part grant through the controller is this controller's and still good.
pub(super) fn check_part_grant(
    state: &AppState,
    account: &str,
    blob: &BlobPath,
    upload_id: &str,
    part: u32,
    expires_ms: i64,
    sig: &str,
) -> Result<(), HttpError> {
    let fields = [
        account,
        blob.as_str(),
        upload_id,
        &part.to_string(),
        &expires_ms.to_string(),
    ];
    let refused = |message: &str| {
        HttpError::with_status(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            ApiError::new(ErrorCode::InvalidRequestFormat, message.to_owned()),
        )
    };
    if !state.config.grant_signer.verify_fields(&fields, sig) {
        return Err(refused(
            "the upload grant's signature does not match: ask the controller for a new grant",
        ));
    }
    if expires_ms <= now_ms() {
        return Err(refused(
            "the upload grant has expired: ask the controller for a new grant",
        ));
    }
    Ok(())
}

/// Percent-encodes what is not unreserved (RFC 3986 §2.3).
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A JSON request body of the agent protocol.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(body).map_err(|err| {
        ApiError::bad_body(format!(
            "the request body is not what the upload protocol expects: {err}"
        ))
        .into()
    })
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An upload the backend refused or could not do, as an answer the agent
/// acts on; counted in `netwatch_storage_errors_total`.
pub(super) fn upload_error(state: &AppState, account: &str, err: UploadError) -> HttpError {
    state.metrics.storage_errors.inc();
    let message = format!("storage account {account:?}: {}", error_chain(&err));
    // A part the local backend staged is missing at the commit (its host
    // rebooted before the commit: parts are not fsynced one by one): the
    // agent's receipts cannot be committed, so it begins the upload again,
    // as for an upload storage lost.
    if matches!(err, UploadError::NoSuchUpload { .. } | UploadError::MissingPart { .. }) {
        return ApiError::new(ErrorCode::ResourceNotFound, message).into();
    }
    // The sender's bytes, not storage: S3 answers a damaged part `400
    // BadDigest` too, and an uploader sends such a part again.
    if matches!(err, UploadError::Md5Mismatch { .. } | UploadError::Body { .. }) {
        return HttpError::with_status(
            StatusCode::BAD_REQUEST,
            "BadDigest",
            ApiError::bad_request("Content-MD5", message),
        );
    }
    if err.is_permanent() {
        return HttpError::with_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "StorageRefused",
            ApiError::new(ErrorCode::InvalidRequestFormat, message),
        );
    }
    tracing::warn!(account, error = %message, "storage unreachable");
    HttpError::with_status(
        StatusCode::SERVICE_UNAVAILABLE,
        "StorageUnavailable",
        ApiError::new(ErrorCode::InternalServerError, message),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grants_are_checked_for_signature_and_time() {
        let state = AppState::new(
            crate::store::Store::open("sqlite::memory:").await.unwrap(),
            super::super::ApiConfig::default(),
            netwatch_storage::Accounts::default(),
        );
        let blob = BlobPath::parse("network-watcher-logs/a/b.cap").unwrap();
        let future = now_ms() + 60_000;
        let path = part_path(&state, "acct", &blob, "u 1", 3, future);
        assert!(
            path.starts_with(
                "/netwatch/v1/agent/files/acct/network-watcher-logs/a/b.cap?uploadId=u%201&part=3&expires="
            ),
            "{path}"
        );
        let sig = path.rsplit_once("sig=").unwrap().1;
        assert!(check_part_grant(&state, "acct", &blob, "u 1", 3, future, sig).is_ok());
        for (account, upload, part, expires) in [
            ("other", "u 1", 3, future),
            ("acct", "u 2", 3, future),
            ("acct", "u 1", 4, future),
            ("acct", "u 1", 3, future + 1),
        ] {
            assert!(check_part_grant(&state, account, &blob, upload, part, expires, sig).is_err());
        }
        let past = now_ms() - 1;
        let path = part_path(&state, "acct", &blob, "u", 1, past);
        let sig = path.rsplit_once("sig=").unwrap().1;
        assert!(
            check_part_grant(&state, "acct", &blob, "u", 1, past, sig).is_err(),
            "expired"
        );
        assert!(is_sha256_hex(&"a".repeat(64)) && !is_sha256_hex(&"A".repeat(64)) && !is_sha256_hex("ab"));
    }
}
