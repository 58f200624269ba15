//! Uploads one spooled file to its storage account with grants from the
//! controller (the protocol: `netwatch_api::agent`, "Uploads"):
//! 1. `POST UPLOADS_PATH` for grants of the parts not yet stored (the first
//!    time it also begins the blob's multipart upload);
//! 2. `PUT` the parts, [`PARTS_IN_FLIGHT`] at once (S3, Azure and the
//!    controller take them in any order), each over plain HTTP with
//!    `Content-MD5` (over TLS the channel authenticates every byte) so the
//!    receiver refuses a part damaged on the way. A part is read and MD5'd on
//!    a blocking thread while the others are on the wire or waiting for
//!    storage's answer, so neither the link nor the server sits idle between
//!    parts. Each part in flight holds one part-sized buffer from its read to
//!    its answer: the upload's memory is at most `PARTS_IN_FLIGHT` × part size
//!    (4 × 8 MiB by default) however large the file. Receipts are saved in
//!    the ticket as answers come, in whatever order, off the parts' way (one
//!    fsynced write at a time, the latest ticket next: no part waits for the
//!    disk), and all of them before the commit, so a break (or a crash)
//!    resumes after exactly the parts whose receipts were saved; a part that
//!    was stored but whose receipt was not is sent again (storage keeps the
//!    last copy of a part);
//! 3. `POST UPLOADS_COMPLETE_PATH`; the controller answers once the blob is
//!    committed and its size checked.
//!
//! The file's SHA-256 goes with the commit. A controller of upload protocol 2
//! (its welcome says so) takes grant requests without it, so the file is
//! hashed on a blocking thread while its parts go, and nothing waits for a
//! whole read of the file before the first part; for a controller of
//! protocol 1 the file is hashed first, as its first grant request needs it.
//!
//! A grant refused by storage (403: expired, or the clock moved) is renewed
//! once; refused again with no part stored in between, the upload fails. A
//! part refused as damaged on the way (400 `BadDigest` from S3 or the
//! controller, `Md5Mismatch` from Azure) is read and sent again, a few times.
//! An upload storage no longer knows (404: aborted, a part the controller
//! lost, or the server lost it) begins again once. Anything else stops new
//! parts, lets those in flight finish (their receipts are kept) and is either
//! transient ([`UploadError::is_permanent`] false: the caller waits and calls
//! again, resuming) or permanent (the caller gives up on the file and keeps
//! it).

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use md5::{Digest as _, Md5};
use netwatch_api::agent::{
    PartGrant, PartReceipt, UPLOADS_COMPLETE_PATH, UPLOADS_PATH, UploadComplete, UploadDone, UploadGrant, UploadRequest,
};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use tokio_util::sync::CancellationToken;

use crate::AgentError;
use crate::remote::Remote;
use crate::spool::{Spool, Ticket, UploadProgress, part_count, part_len};

/// The media type of pcap files (IANA, RFC 9875's `application/vnd.tcpdump.pcap`).
pub(crate) const PCAP_CONTENT_TYPE: &str = "application/vnd.tcpdump.pcap";

/// Parts of one file in flight at once: being read and MD5'd, on the wire,
/// or waiting for storage's answer. Each holds one part-sized buffer, so this
/// times the part size bounds an upload's memory (32 MiB with 8 MiB parts).
/// One part at a time left the link idle while the server stored each part
/// (BENCHMARKS.md, "Upload: agent to storage"); 4 keeps it busy on the links
/// measured there without holding much.
pub(crate) const PARTS_IN_FLIGHT: usize = 4;
/// Parts asked for in one grant request (a 4 GiB file has 512 parts of 8 MiB).
const GRANT_BATCH: usize = 32;
/// A grant this close to its end is renewed before use rather than tried.
const GRANT_MARGIN_MS: i64 = 5_000;
/// Times a part refused as damaged on the way (`Content-MD5` mismatch) is
/// read and sent again before the upload is given up (then the file on disk
/// is what changes).
const DAMAGED_PART_TRIES: u32 = 3;
/// Bounds of one request: to connect, and between two reads of the answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of an error answer's body goes into the message.
const MAX_ERROR_BODY: usize = 300;

/// Why an upload stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("read spooled file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{method} {url}")]
    Send {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {url} answered {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        method: &'static str,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("the controller's answer to {url} is not what the agent expects")]
    Answer {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("storage refused a renewed grant for part {part}: {last}")]
    GrantRefused { part: u32, last: Box<UploadError> },
    #[error("storage holds {stored} bytes where the file has {size}")]
    SizeMismatch { stored: u64, size: u64 },
    #[error("hand part {part} over to the controller through {socket}")]
    Handoff {
        part: u32,
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("upload cancelled")]
    Cancelled,
}

impl UploadError {
    /// Whether trying again cannot help.
    pub(crate) fn is_permanent(&self) -> bool {
        match self {
            UploadError::Read { .. }
            | UploadError::Answer { .. }
            | UploadError::GrantRefused { .. }
            | UploadError::SizeMismatch { .. }
            | UploadError::Cancelled => true,
            UploadError::Send { source, .. } => source.is_builder(),
            UploadError::Handoff { .. } => false,
            UploadError::Status { status, .. } => {
                !(status.is_server_error()
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS)
            }
        }
    }

    /// A 400 saying the part's bytes did not match its `Content-MD5`.
    fn is_damaged_part(&self) -> bool {
        matches!(self, UploadError::Status { status, body, .. }
            if *status == StatusCode::BAD_REQUEST && (body.contains("BadDigest") || body.contains("Md5Mismatch")))
    }

    fn status(&self) -> Option<StatusCode> {
        match self {
            UploadError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The agent's HTTP clients for uploads.
#[derive(Debug, Clone)]
pub(crate) struct Uploader {
    /// To the controller: the channel's TLS trust.
    controller: reqwest::Client,
    /// To storage: the system's roots.
    storage: reqwest::Client,
    remote: Remote,
}

impl Uploader {
    pub(crate) fn new(remote: &Remote) -> Result<Self, AgentError> {
        let controller = reqwest::Client::builder()
            .tls_backend_preconfigured(rustls::ClientConfig::clone(remote.tls()))
            // The channel goes straight to the controller; uploads do the same
            // rather than follow proxy variables the channel ignores.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(AgentError::HttpClient)?;
        let storage = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(AgentError::HttpClient)?;
        Ok(Self {
            controller,
            storage,
            remote: remote.clone(),
        })
    }

    /// The client to the controller (its TLS trust): agent builds come by it.
    pub(crate) fn controller(&self) -> &reqwest::Client {
        &self.controller
    }

    /// Uploads `ticket`'s file, resuming from its saved progress, which is
    /// kept up to date in `spool`; `progress` hears the bytes stored so far.
    pub(crate) async fn upload(
        &self,
        spool: &Spool,
        ticket: &mut Ticket,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<UploadDone, UploadError> {
        tokio::select! {
            result = self.upload_inner(spool, ticket, progress) => result,
            () = cancel.cancelled() => Err(UploadError::Cancelled),
        }
    }

    async fn upload_inner(
        &self,
        spool: &Spool,
        ticket: &mut Ticket,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<UploadDone, UploadError> {
        let path = spool.file_path(&ticket.capture_id, ticket.seq);
        if let Some(upload) = ticket.upload.as_ref().filter(|u| !u.receipts.is_empty()) {
            tracing::info!(
                seq = ticket.seq,
                "resuming upload of file {}: {} of its {} parts are stored",
                ticket.seq,
                upload.receipts.len(),
                part_count(ticket.size, upload.part_size),
            );
        }
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|source| UploadError::Read {
                path: path.display().to_string(),
                source,
            })?
            .into_std()
            .await;
        let file = SpooledFile {
            file: Arc::new(file),
            path: path.display().to_string(),
            size: ticket.size,
            buffers: Buffers::default(),
        };
        // The file's SHA-256: a controller of upload protocol 2 needs it only
        // at the commit, so it is worked out beside the parts (the file read
        // once more, from the page cache, on a blocking thread); one of
        // protocol 1 needs it in the first grant request.
        let mut hashing = None;
        if ticket.sha256.is_empty() {
            if self.remote.hashes_in_stream() {
                hashing = Some(tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || crate::spool::hash_file(&path)
                }));
            } else {
                ticket.sha256 = hash(&path, ticket.size).await?;
                save(spool, ticket).await?;
            }
        }
        let mut began_again = false;
        'upload: loop {
            match self.send_parts(spool, ticket, &file, progress).await {
                Ok(()) => {}
                // The upload id is unknown to storage: begin a new one, once.
                Err(error) if error.status() == Some(StatusCode::NOT_FOUND) && !began_again => {
                    tracing::info!(error = %crate::error_chain(&error), "upload unknown to storage: beginning it again");
                    began_again = true;
                    ticket.upload = None;
                    save(spool, ticket).await?;
                    continue 'upload;
                }
                Err(error) => return Err(error),
            }
            let upload = ticket
                .upload
                .as_ref()
                .expect("every part was granted, so an upload exists");
            let mut receipts = upload.receipts.clone();
            receipts.sort_by_key(|r| r.part);
            if let Some(hashing) = hashing.take() {
                ticket.sha256 = hashed(hashing.await, &path, ticket.size)?;
                save(spool, ticket).await?;
            }
            let complete = UploadComplete {
                capture_id: ticket.capture_id.clone(),
                seq: ticket.seq,
                upload_id: upload.upload_id.clone(),
                size: ticket.size,
                sha256: ticket.sha256.clone(),
                parts: receipts,
            };
            let done: UploadDone = match self.post(UPLOADS_COMPLETE_PATH, &complete).await {
                Ok(done) => done,
                // Storage lost the upload, or a part of it (a local account's
                // controller host crashed before the commit).
                Err(error) if error.status() == Some(StatusCode::NOT_FOUND) && !began_again => {
                    tracing::info!(error = %crate::error_chain(&error), "upload unknown to storage at commit: beginning it again");
                    began_again = true;
                    ticket.upload = None;
                    save(spool, ticket).await?;
                    continue 'upload;
                }
                Err(error) => return Err(error),
            };
            if done.size != ticket.size {
                return Err(UploadError::SizeMismatch {
                    stored: done.size,
                    size: ticket.size,
                });
            }
            return Ok(done);
        }
    }

    /// Sends every part the ticket holds no receipt for, up to
    /// [`PARTS_IN_FLIGHT`] at once, asking for grants as they are needed and
    /// saving each receipt in the ticket as its answer comes. A 404 (the
    /// upload is unknown) returns at once, dropping the parts in flight: the
    /// caller begins again. Any other failure stops new parts; those in
    /// flight finish and their receipts are saved before the first failure
    /// is returned.
    async fn send_parts(
        &self,
        spool: &Spool,
        ticket: &mut Ticket,
        file: &SpooledFile,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), UploadError> {
        let mut saver = ReceiptSaver::new(spool);
        let sent = self.send_parts_saving(spool, ticket, file, progress, &mut saver).await;
        // Every receipt is on disk before the caller goes on (and before any
        // save of its own could be overtaken by an older one).
        let saved = saver.settle(ticket).await;
        sent.and(saved)
    }

    async fn send_parts_saving(
        &self,
        spool: &Spool,
        ticket: &mut Ticket,
        file: &SpooledFile,
        progress: &mut (dyn FnMut(u64) + Send),
        saver: &mut ReceiptSaver<'_>,
    ) -> Result<(), UploadError> {
        // Grants not used yet, of the latest grant (`generation`).
        let mut granted: VecDeque<PartGrant> = VecDeque::new();
        let mut generation: u64 = 0;
        let mut expires_ms: i64 = 0;
        let mut in_flight = FuturesUnordered::new();
        let mut sending: HashSet<u32> = HashSet::new();
        // A 403 no stored part followed yet, and the grant it refused.
        let mut refused: Option<(u64, UploadError)> = None;
        let mut failed: Option<UploadError> = None;
        loop {
            while failed.is_none() && in_flight.len() < PARTS_IN_FLIGHT {
                if granted.is_empty() || crate::now_ms() > expires_ms - GRANT_MARGIN_MS {
                    granted.clear();
                    let wanted: Vec<u32> = remaining_parts(ticket)
                        .into_iter()
                        .filter(|part| !sending.contains(part))
                        .take(GRANT_BATCH)
                        .collect();
                    if wanted.is_empty() {
                        break;
                    }
                    let grant = match self.grant(spool, ticket, &wanted).await {
                        Ok(grant) => grant,
                        Err(error) if error.status() == Some(StatusCode::NOT_FOUND) => return Err(error),
                        Err(error) => {
                            failed = Some(error);
                            break;
                        }
                    };
                    if ticket.upload.as_ref().is_none_or(|u| u.upload_id != grant.upload_id) {
                        // A new upload: parts in flight (none, unless storage
                        // changed the id under them) belong to the old one.
                        in_flight.clear();
                        sending.clear();
                        ticket.upload = Some(UploadProgress {
                            upload_id: grant.upload_id.clone(),
                            part_size: grant.part_size,
                            receipts: Vec::new(),
                        });
                        // On disk before any part of it goes, and after any
                        // save of the old one.
                        saver.settle(ticket).await?;
                        save(spool, ticket).await?;
                    }
                    generation += 1;
                    expires_ms = grant.expires_ms;
                    let upload = ticket.upload.as_ref().expect("set above");
                    granted = grant
                        .parts
                        .into_iter()
                        .filter(|p| !sending.contains(&p.part) && !upload.receipts.iter().any(|r| r.part == p.part))
                        .collect();
                    if granted.is_empty() {
                        // Nothing usable came back (a new upload granted only
                        // parts in flight): wait for those.
                        break;
                    }
                    continue;
                }
                let grant = granted.pop_front().expect("not empty");
                let part_size = ticket.upload.as_ref().expect("granted").part_size;
                sending.insert(grant.part);
                let sent = generation;
                in_flight.push(async move {
                    let result = self.put_part_checked(file, part_size, &grant).await;
                    (grant.part, sent, result)
                });
            }
            let next = tokio::select! {
                next = in_flight.next() => next,
                written = saver.written(ticket) => {
                    written?;
                    continue;
                }
            };
            let Some((part, sent, result)) = next else {
                break;
            };
            sending.remove(&part);
            match result {
                Ok(receipt) => {
                    refused = None;
                    let upload = ticket.upload.as_mut().expect("parts go for an upload");
                    upload.receipts.retain(|r| r.part != receipt.part);
                    upload.receipts.push(receipt);
                    saver.receipt(ticket);
                    progress(upload_bytes(ticket));
                }
                Err(error) if error.status() == Some(StatusCode::NOT_FOUND) => return Err(error),
                Err(error) if failed.is_some() => {
                    tracing::debug!(part, error = %crate::error_chain(&error), "part failed after the upload did");
                }
                Err(error) if error.status() == Some(StatusCode::FORBIDDEN) => match refused.take() {
                    // The renewed grant is refused too.
                    Some((first, last)) if first < sent => {
                        failed = Some(UploadError::GrantRefused {
                            part,
                            last: Box::new(last),
                        });
                    }
                    // Another part of the grant already being renewed.
                    Some(first) => refused = Some(first),
                    None => {
                        tracing::info!(part, error = %crate::error_chain(&error), "storage refused a grant: renewing it");
                        refused = Some((sent, error));
                        granted.clear();
                    }
                },
                Err(error) => failed = Some(error),
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Grants for `parts` of the ticket's file (beginning its upload if it has none).
    async fn grant(&self, spool: &Spool, ticket: &Ticket, parts: &[u32]) -> Result<UploadGrant, UploadError> {
        let sha256 = if ticket.sha256.is_empty() && !self.remote.hashes_in_stream() {
            // Begun with a controller of protocol 2, continued with one of
            // protocol 1 (a controller rolled back): it needs the hash now.
            hash(&spool.file_path(&ticket.capture_id, ticket.seq), ticket.size).await?
        } else {
            ticket.sha256.clone()
        };
        let request = UploadRequest {
            capture_id: ticket.capture_id.clone(),
            seq: ticket.seq,
            size: ticket.size,
            sha256,
            upload_id: ticket.upload.as_ref().map(|u| u.upload_id.clone()),
            // A new upload's part size is not known yet: all parts.
            parts: if ticket.upload.is_some() {
                parts.to_vec()
            } else {
                vec![]
            },
        };
        self.post(UPLOADS_PATH, &request).await
    }

    /// `POST`s a live view's streamed body to the controller at `path`
    /// (live.rs); returns once the body ended or the controller answered.
    pub(crate) async fn post_live(&self, path: &str, body: reqwest::Body) -> Result<(), UploadError> {
        let (url, request) = self.controller_post(path);
        let request = request
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        let response = request.send().await.map_err(|source| UploadError::Send {
            method: "POST",
            url: url.clone(),
            source,
        })?;
        check(response, "POST", &url).await.map(drop)
    }

    /// A `POST` to the controller's `path` with the agent's credential, and its URL.
    fn controller_post(&self, path: &str) -> (String, reqwest::RequestBuilder) {
        let url = self.remote.http_url(path);
        let request = self
            .controller
            .post(&url)
            .header(AUTHORIZATION, self.remote.authorization());
        (url, request)
    }

    /// `POST`s JSON to the controller; the JSON answer.
    async fn post<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<R, UploadError> {
        let (url, request) = self.controller_post(path);
        let response = request.json(body).send().await.map_err(|source| UploadError::Send {
            method: "POST",
            url: url.clone(),
            source,
        })?;
        let response = check(response, "POST", &url).await?;
        response
            .json()
            .await
            .map_err(|source| UploadError::Answer { url, source })
    }

    /// [`Uploader::put_part`], sent again while the receiver finds it damaged.
    async fn put_part_checked(
        &self,
        file: &SpooledFile,
        part_size: u64,
        grant: &PartGrant,
    ) -> Result<PartReceipt, UploadError> {
        let mut tries = 1;
        loop {
            match self.put_part(file, part_size, grant).await {
                Err(error) if error.is_damaged_part() && tries < DAMAGED_PART_TRIES => {
                    tracing::info!(part = grant.part, tries, error = %crate::error_chain(&error),
                        "part damaged on the way: sending it again");
                    tries += 1;
                }
                result => return result,
            }
        }
    }

    /// Reads part `grant.part` of `file` and `PUT`s it where the grant says.
    async fn put_part(
        &self,
        file: &SpooledFile,
        part_size: u64,
        grant: &PartGrant,
    ) -> Result<PartReceipt, UploadError> {
        let len = part_len(file.size, part_size, grant.part);
        if grant.url.starts_with('/')
            && let Some(socket) = self.remote.handoff()
        {
            match handoff(&socket, file, part_size, grant, len).await {
                Ok(result) => {
                    if result.is_ok() && self.remote.first_handoff() {
                        tracing::info!(socket = %socket.display(),
                            "parts go to the controller on this machine by hand-over: copied by the kernel, not sent over HTTPS");
                    }
                    return result;
                }
                // No socket there (another mount namespace, a controller
                // restarted without it) or not ours to use: HTTPS from now on.
                Err(error) => {
                    tracing::info!(socket = %socket.display(), error = %error,
                        "the controller's hand-over socket cannot be used: parts go over HTTPS");
                    self.remote.forget_handoff();
                }
            }
        }
        let (client, url, to_controller) = match grant.url.strip_prefix('/') {
            Some(_) => (&self.controller, self.remote.http_url(&grant.url), true),
            None => (&self.storage, grant.url.clone(), false),
        };
        // Over TLS every byte is authenticated on the way (AEAD) and the
        // file's SHA-256 checks it end to end: an MD5 of each part would
        // only cost both ends a pass over it. Over plain HTTP the receiver
        // checks the part's `Content-MD5`.
        let checked = !url.starts_with("https://");
        let (bytes, md5) = file.read_part(part_size, grant.part, checked).await?;
        let mut request = client
            .put(&url)
            .header(CONTENT_LENGTH, len)
            .header(CONTENT_TYPE, PCAP_CONTENT_TYPE);
        if let Some(md5) = md5 {
            request = request.header("Content-MD5", md5);
        }
        if to_controller {
            request = request.header(AUTHORIZATION, self.remote.authorization());
        }
        for (name, value) in &grant.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        // Logs name the part, not the URL: a grant is a credential while it lasts.
        let shown = redact(&url);
        let response = request.body(bytes).send().await.map_err(|source| UploadError::Send {
            method: "PUT",
            url: shown.clone(),
            source: source.without_url(),
        })?;
        let response = check(response, "PUT", &shown).await?;
        let id = match &grant.receipt {
            Some(receipt) => receipt.clone(),
            None => response
                .headers()
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| UploadError::Status {
                    method: "PUT",
                    url: shown.clone(),
                    status: response.status(),
                    body: "the answer has no ETag to commit the part with".into(),
                })?,
        };
        Ok(PartReceipt { part: grant.part, id })
    }
}

/// The spooled file being uploaded, open once and read at each part's
/// offset (`pread`), so parts in flight read it side by side.
struct SpooledFile {
    file: Arc<File>,
    /// For messages.
    path: String,
    size: u64,
    buffers: Buffers,
}

impl SpooledFile {
    /// Part `part`'s bytes and, with `md5`, their `Content-MD5`, read and
    /// hashed on a blocking thread (8 MiB take ~12 ms of MD5: not on the
    /// async threads).
    async fn read_part(&self, part_size: u64, part: u32, md5: bool) -> Result<(Bytes, Option<String>), UploadError> {
        let len = usize::try_from(part_len(self.size, part_size, part)).unwrap_or(usize::MAX);
        let offset = u64::from(part.saturating_sub(1)) * part_size;
        let file = Arc::clone(&self.file);
        let mut buffer = self.buffers.take();
        let read = tokio::task::spawn_blocking(move || {
            buffer.bytes.resize(len, 0);
            file.read_exact_at(&mut buffer.bytes, offset)?;
            let md5 = md5.then(|| BASE64.encode(Md5::digest(&buffer.bytes)));
            Ok((Bytes::from_owner(buffer), md5))
        })
        .await;
        match read {
            Ok(result) => result.map_err(|source| UploadError::Read {
                path: self.path.clone(),
                source,
            }),
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(UploadError::Cancelled),
        }
    }
}

/// One upload's part buffers, used again and again: a buffer comes back when
/// the request that sent it drops its body, so an upload allocates about
/// [`PARTS_IN_FLIGHT`] buffers rather than one per part. (Fresh 8 MiB buffers
/// made on several blocking threads left glibc holding freed ones in each
/// thread's arena: twice the parts in flight, measured.)
#[derive(Debug, Clone, Default)]
struct Buffers(Arc<Mutex<Vec<Vec<u8>>>>);

impl Buffers {
    fn take(&self) -> PartBuffer {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        PartBuffer {
            bytes,
            home: self.clone(),
        }
    }
}

/// A part's bytes, back to their [`Buffers`] when dropped.
struct PartBuffer {
    bytes: Vec<u8>,
    home: Buffers,
}

impl AsRef<[u8]> for PartBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for PartBuffer {
    fn drop(&mut self) {
        let mut free = self.home.0.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < PARTS_IN_FLIGHT {
            free.push(std::mem::take(&mut self.bytes));
        }
    }
}

/// Hands part `grant.part` of `file` over to the controller on this machine
/// through its Unix socket (`netwatch_api::agent::HandoffPart`: the grant
/// and the file's descriptor; the controller copies the bytes in the kernel).
/// `Err`: the socket cannot be reached, so the part goes over HTTPS; `Ok`:
/// the controller's answer, a receipt or the error a `PUT` would have had.
async fn handoff(
    socket: &std::path::Path,
    file: &SpooledFile,
    part_size: u64,
    grant: &PartGrant,
    len: u64,
) -> Result<Result<PartReceipt, UploadError>, std::io::Error> {
    let part = grant.part;
    let request = netwatch_api::agent::HandoffPart {
        grant: grant.url.clone(),
        offset: u64::from(part.saturating_sub(1)) * part_size,
        len,
    };
    let (source, socket) = (Arc::clone(&file.file), socket.to_owned());
    let shown = socket.display().to_string();
    // Connecting: the socket may be unusable (Err); after that, failures are the part's.
    let exchanged = tokio::task::spawn_blocking(move || {
        let stream = std::os::unix::net::UnixStream::connect(&socket)?;
        Ok(exchange(&stream, &request, &source))
    })
    .await;
    let answer = match exchanged {
        Ok(Ok(Ok(answer))) => answer,
        Ok(Ok(Err(source))) => {
            return Ok(Err(UploadError::Handoff {
                part,
                socket: shown,
                source,
            }));
        }
        Ok(Err(unusable)) => return Err(unusable),
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => return Ok(Err(UploadError::Cancelled)),
    };
    Ok(match (answer.status, answer.receipt) {
        (200, Some(id)) => Ok(PartReceipt { part, id }),
        (status, _) => Err(UploadError::Status {
            method: "HANDOFF",
            url: redact(&grant.url),
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: answer.message.unwrap_or_default(),
        }),
    })
}

/// Sends a hand-over on a connected socket, `file`'s descriptor with it,
/// and reads the controller's answer (blocking).
fn exchange(
    stream: &std::os::unix::net::UnixStream,
    request: &netwatch_api::agent::HandoffPart,
    file: &File,
) -> std::io::Result<netwatch_api::agent::HandoffAnswer> {
    use std::io::{BufRead as _, Write as _};
    use std::os::fd::AsFd as _;
    // The controller copies the part before it answers: a minute is plenty.
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let fds = [file.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
    let sent = rustix::net::sendmsg(
        stream,
        &[std::io::IoSlice::new(&line)],
        &mut control,
        rustix::net::SendFlags::NOSIGNAL,
    )?;
    // The descriptor went with the first bytes; the rest of a long line follows.
    (&*stream).write_all(&line[sent..])?;
    let mut answer = String::new();
    std::io::BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))
}

/// The SHA-256 of the spooled file at `path`, read on a blocking thread.
async fn hash(path: &std::path::Path, size: u64) -> Result<String, UploadError> {
    let hashing = tokio::task::spawn_blocking({
        let path = path.to_owned();
        move || crate::spool::hash_file(&path)
    });
    hashed(hashing.await, path, size)
}

/// A hashing task's SHA-256, once its file is checked to still have the
/// ticket's `size` (a file that changed under the upload is not sent).
fn hashed(
    joined: Result<std::io::Result<(u64, String)>, tokio::task::JoinError>,
    path: &std::path::Path,
    size: u64,
) -> Result<String, UploadError> {
    let read = |source| UploadError::Read {
        path: path.display().to_string(),
        source,
    };
    match joined {
        Ok(Ok((read_size, sha256))) if read_size == size => Ok(sha256),
        Ok(Ok((read_size, _))) => Err(read(std::io::Error::other(format!(
            "the spooled file has {read_size} bytes where its ticket says {size}: it changed after it was spooled"
        )))),
        Ok(Err(source)) => Err(read(source)),
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => Err(UploadError::Cancelled),
    }
}

/// Saves a ticket's receipts off the parts' way: one write (fsynced by the
/// spool) at a time on a blocking thread, and the ticket as it is then once
/// that one ends, so no part waits for the disk before it goes (an fsync
/// takes tens of milliseconds on a busy disk) and writes land in order. A
/// crash loses at most the receipts of the last write or two: those parts
/// go again (storage keeps the last copy of a part).
struct ReceiptSaver<'a> {
    spool: &'a Spool,
    writing: Option<tokio::task::JoinHandle<()>>,
    /// Receipts came since the write under way began.
    due: bool,
}

impl<'a> ReceiptSaver<'a> {
    fn new(spool: &'a Spool) -> Self {
        Self {
            spool,
            writing: None,
            due: false,
        }
    }

    /// A receipt came: writes the ticket, or once the write under way ends.
    fn receipt(&mut self, ticket: &Ticket) {
        if self.writing.is_some() {
            self.due = true;
        } else {
            self.start(ticket);
        }
    }

    fn start(&mut self, ticket: &Ticket) {
        self.writing = Some(spawn_save(self.spool, ticket));
        self.due = false;
    }

    /// Ends with the write under way (pending while there is none), then
    /// starts the one that came due meanwhile, of `ticket` as it is now.
    async fn written(&mut self, ticket: &Ticket) -> Result<(), UploadError> {
        let Some(writing) = self.writing.as_mut() else {
            return std::future::pending().await;
        };
        let joined = writing.await;
        self.writing = None;
        joined_save(joined)?;
        if self.due {
            self.start(ticket);
        }
        Ok(())
    }

    /// Waits for the write under way, then writes `ticket` if receipts came
    /// since it began.
    async fn settle(&mut self, ticket: &Ticket) -> Result<(), UploadError> {
        if let Some(writing) = self.writing.take() {
            joined_save(writing.await)?;
        }
        if std::mem::take(&mut self.due) {
            save(self.spool, ticket).await?;
        }
        Ok(())
    }
}

fn joined_save(joined: Result<(), tokio::task::JoinError>) -> Result<(), UploadError> {
    match joined {
        Ok(()) => Ok(()),
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => Err(UploadError::Cancelled),
    }
}

/// Saves the ticket's progress on a blocking thread (the spool fsyncs it);
/// awaited before the next save, so saves land in order.
async fn save(spool: &Spool, ticket: &Ticket) -> Result<(), UploadError> {
    joined_save(spawn_save(spool, ticket).await)
}

/// Writes the ticket's progress on a blocking thread. A ticket that cannot
/// be written (a full disk) is logged and the upload goes on: it is what
/// frees the disk (`Spool::save_progress`).
fn spawn_save(spool: &Spool, ticket: &Ticket) -> tokio::task::JoinHandle<()> {
    let (spool, ticket) = (spool.clone(), ticket.clone());
    tokio::task::spawn_blocking(move || spool.save_progress(&ticket))
}

/// The parts of the ticket's file not stored yet (all when no upload began).
fn remaining_parts(ticket: &Ticket) -> Vec<u32> {
    match &ticket.upload {
        None => vec![1],
        Some(upload) => (1..=part_count(ticket.size, upload.part_size))
            .filter(|part| !upload.receipts.iter().any(|r| r.part == *part))
            .collect(),
    }
}

/// Bytes of the ticket's file stored so far.
pub(crate) fn upload_bytes(ticket: &Ticket) -> u64 {
    ticket.upload.as_ref().map_or(0, |u| u.bytes_done(ticket.size))
}

/// The answer if it succeeded; its status and (the start of) its body otherwise.
async fn check(response: reqwest::Response, method: &'static str, url: &str) -> Result<reqwest::Response, UploadError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
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
        method,
        url: url.to_owned(),
        status,
        body,
    })
}

/// A URL without its query (where grants carry their signatures).
fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Receipts coming faster than the spool writes them: none waits for a
    /// write, and once settled the ticket on disk holds every one.
    #[tokio::test]
    async fn receipts_are_saved_without_holding_up_parts_and_the_last_one_lands() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path().join("spool"), 1 << 20).unwrap();
        let capture = crate::spool::SpooledCapture {
            capture_id: "/x/pc#1".into(),
            start: None,
            started_ms: None,
            resumed: 0,
            seq: 0,
            closed: netwatch_api::agent::ReportStats::default(),
            report: None,
        };
        spool.save_capture(&capture).unwrap();
        let original = dir.path().join("pc.cap");
        std::fs::write(&original, [7; 100]).unwrap();
        spool.link(&capture.capture_id, 0, &original).unwrap();
        let mut ticket = spool.admit(&capture.capture_id, 0, None, None).unwrap();
        ticket.upload = Some(UploadProgress {
            upload_id: "u".into(),
            part_size: 5,
            receipts: Vec::new(),
        });
        let mut saver = ReceiptSaver::new(&spool);
        for part in 1..=20 {
            let upload = ticket.upload.as_mut().unwrap();
            upload.receipts.push(PartReceipt {
                part,
                id: format!("r{part}"),
            });
            saver.receipt(&ticket);
        }
        assert!(
            saver.writing.is_some() && saver.due,
            "one write under way, the latest due after it"
        );
        saver.written(&ticket).await.unwrap();
        assert!(
            saver.writing.is_some() && !saver.due,
            "the due write started as the first ended"
        );
        saver.settle(&ticket).await.unwrap();
        assert!(saver.writing.is_none() && !saver.due);
        let (_, tickets) = spool.scan();
        assert_eq!(tickets.len(), 1);
        let receipts = &tickets[0].upload.as_ref().unwrap().receipts;
        assert_eq!(receipts.len(), 20, "{receipts:?}");
        assert_eq!(receipts[19].id, "r20");
    }

    #[test]
    fn statuses_are_classified() {
        let status = |code: u16| UploadError::Status {
            method: "PUT",
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
        let damaged = |body: &str| UploadError::Status {
            method: "PUT",
            url: "u".into(),
            status: StatusCode::BAD_REQUEST,
            body: body.into(),
        };
        assert!(damaged(r#"{"error":{"code":"BadDigest"}}"#).is_damaged_part());
        assert!(damaged("<Code>Md5Mismatch</Code>").is_damaged_part());
        assert!(!damaged("InvalidQueryParameterValue").is_damaged_part());
        assert_eq!(
            redact("https://a.blob/c/x.cap?sv=1&sig=secret"),
            "https://a.blob/c/x.cap?…"
        );
    }
}
