//! What the object-store backends ([`crate::azure`], [`crate::s3`]) share:
//! [`ObjectStorage`], an object_store client with the account's part size,
//! implementing [`Storage`] and the multipart uploads of [`crate::upload`].
//!
//! - A put streams: the body is cut into parts of the part size, at most
//!   [`PARTS_IN_FLIGHT`] uploading at once, so memory stays near
//!   `(PARTS_IN_FLIGHT + 1) × part size` whatever the body's length; a body
//!   that fits in one part goes in one request. The blob appears when the
//!   upload is committed (Put Block List, CompleteMultipartUpload), which is
//!   atomic; a put that fails aborts its upload, one that is dropped has it
//!   aborted in the background.
//! - A read of a range first reads the blob's size and ETag, then asks for
//!   exactly the bytes [`ByteRange::resolve`] selects, of that version
//!   (`If-Match`): servers answer odd ranges (past the end, of an empty blob)
//!   each in their own way, this way none is asked for.
//! - object_store retries a request a few times ([`RETRIES`],
//!   [`RETRY_TIMEOUT`]); callers have their own retry loops around whole calls.

use std::fmt;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig, WriteMultipart,
};

use crate::upload::{self, PartGrant, PartReceipt};
use crate::{Blob, BlobPath, BoxError, ByteRange, ClientError, OpenError, PutError, Storage, UploadError};

/// Parts of one put uploading at once: two keep the link busy while the
/// next part fills, and bound a put's memory to about three parts.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Retries object_store makes of one request (connection errors, 5xx, 408,
/// 429); modest, since callers retry whole calls.
pub const RETRIES: usize = 3;
/// Time after which object_store stops retrying a request.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a response may go without a byte arriving. There is no limit on a
/// whole request: a part upload or a download takes as long as the link
/// needs. A reader that stops reading for longer loses the stream (and
/// resumes with a range).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The retry policy of every object store client.
pub(crate) fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: RETRIES,
        retry_timeout: RETRY_TIMEOUT,
    }
}

/// The HTTP client options of every object store client.
pub(crate) fn client_options(allow_http: bool) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout_disabled()
        .with_read_timeout(READ_TIMEOUT)
}

/// A storage account kept in an object store (Azure Blob or S3).
#[derive(Clone)]
pub struct ObjectStorage {
    /// One client, seen through the three traits this module uses.
    store: Arc<dyn ObjectStore>,
    multipart: Arc<dyn MultipartStore>,
    signer: Arc<dyn Signer>,
    service: Service,
    part_size: u64,
}

/// What differs between the services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Service {
    /// `container`: the configured container, stripped from blob paths that
    /// start with it. `grants`: the account has a key to sign grants with (a
    /// SAS cannot sign a narrower SAS).
    Azure {
        container: String,
        grants: bool,
    },
    S3,
}

impl fmt::Debug for ObjectStorage {
    /// The client's own `Display` (service, account, bucket), no credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("store", &format_args!("{}", self.store))
            .field("service", &self.service)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

impl ObjectStorage {
    pub(crate) fn new<T>(client: Arc<T>, service: Service, part_size: u64) -> Self
    where
        T: ObjectStore + MultipartStore + Signer,
    {
        Self {
            store: client.clone(),
            multipart: client.clone(),
            signer: client,
            service,
            part_size,
        }
    }

    /// Bytes per part of uploads.
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// The object key of the blob at `path`: S3's is the whole path; Azure's
    /// is the path without its first segment when that is the container's
    /// name (so `network-watcher-logs/subscriptions/…` lands where Azure puts
    /// captures), else the whole path.
    pub fn key<'a>(&self, path: &'a BlobPath) -> &'a str {
        match &self.service {
            Service::Azure { container, .. } => path
                .as_str()
                .strip_prefix(container.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .unwrap_or(path.as_str()),
            Service::S3 => path.as_str(),
        }
    }

    fn location(&self, path: &BlobPath) -> Path {
        Path::parse(self.key(path)).expect(
            "a blob path is a valid object_store path: its rule (no empty, `.` or `..` segment, \
             no control character) is stricter than object_store's",
        )
    }

    /// The blob's metadata; `None` when there is none.
    async fn head(&self, path: &BlobPath, location: &Path) -> Result<Option<ObjectMeta>, ClientError> {
        match self.store.head(location).await {
            Ok(meta) => Ok(Some(meta)),
            Err(err) => {
                let err = ClientError::new("read the size of", path, err);
                if err.is_not_found() { Ok(None) } else { Err(err) }
            }
        }
    }

    /// [`PartSize`] as the `usize` object_store takes.
    fn part_size_usize(&self) -> usize {
        usize::try_from(self.part_size).expect("the part size is at most MAX_PART_SIZE (256 MiB), which fits a usize")
    }

    pub(crate) async fn begin_upload(&self, path: &BlobPath) -> Result<String, UploadError> {
        match self.service {
            // Azure has no upload to create: blocks wait uncommitted under
            // the blob until Put Block List (or 7 days). The id names them.
            Service::Azure { .. } => upload::new_upload_id(),
            Service::S3 => {
                let location = self.location(path);
                self.multipart
                    .create_multipart(&location)
                    .await
                    .map_err(|err| ClientError::new("start a multipart upload of", path, err).into())
            }
        }
    }

    pub(crate) async fn grant_parts(
        &self,
        path: &BlobPath,
        upload_id: &str,
        parts: &[u32],
        ttl: Duration,
    ) -> Result<Option<Vec<PartGrant>>, UploadError> {
        let location = self.location(path);
        let sign_error = |err| UploadError::from(ClientError::new("sign part grants for", path, err));
        match &self.service {
            Service::Azure { grants: false, .. } => Ok(None),
            Service::Azure { grants: true, .. } => {
                upload::check_upload_id(upload_id)?;
                // A blob service SAS with `sp=w` for this one blob. Azure does
                // not sign `comp` and `blockid`, so one SAS serves every part
                // and each grant adds its own block id
                // (learn.microsoft.com/rest/api/storageservices/put-block).
                let url = self
                    .signer
                    .signed_url(http_method_put(), &location, ttl)
                    .await
                    .map_err(sign_error)?;
                let grants = parts
                    .iter()
                    .map(|&part| {
                        let block_id = block_id(upload_id, part);
                        let mut url = url.clone();
                        url.query_pairs_mut()
                            .append_pair("comp", "block")
                            .append_pair("blockid", &azure_block_id(&block_id));
                        PartGrant {
                            part,
                            url: url.into(),
                            headers: Vec::new(),
                            receipt: Some(block_id),
                        }
                    })
                    .collect();
                Ok(Some(grants))
            }
            Service::S3 => {
                let mut grants = Vec::with_capacity(parts.len());
                for &part in parts {
                    // UploadPart presigned: `partNumber` and `uploadId` are
                    // signed query parameters, so a grant serves one part only.
                    let options = object_store::signer::SignedUrlOptions::new()
                        .with_query([("partNumber", part.to_string()), ("uploadId", upload_id.to_owned())]);
                    let url = self
                        .signer
                        .signed_url_opts(http_method_put(), &location, ttl, &options)
                        .await
                        .map_err(sign_error)?;
                    grants.push(PartGrant {
                        part,
                        url: url.into(),
                        headers: Vec::new(),
                        receipt: None,
                    });
                }
                Ok(Some(grants))
            }
        }
    }

    pub(crate) async fn put_part<S, E>(
        &self,
        path: &BlobPath,
        upload_id: &str,
        part: u32,
        body: S,
        len: u64,
        md5: Option<[u8; 16]>,
    ) -> Result<PartReceipt, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<BoxError> + Send,
    {
        if let Service::Azure { .. } = self.service {
            upload::check_upload_id(upload_id)?;
        }
        let chunks = upload::read_part(part, body, len, md5).await?;
        let location = self.location(path);
        // Azure's put_part stores a block under a random id of its own, the
        // receipt; S3's uploads part `index + 1` and answers its ETag.
        let index = usize::try_from(part - 1).expect("a part number fits a usize");
        let id = self
            .multipart
            .put_part(&location, &upload_id.to_owned(), index, PutPayload::from_iter(chunks))
            .await
            .map_err(|err| self.upload_error(format!("upload part {part} of"), path, upload_id, err))?;
        Ok(PartReceipt {
            part,
            id: id.content_id,
        })
    }

    pub(crate) async fn complete_upload(
        &self,
        path: &BlobPath,
        upload_id: &str,
        parts: Vec<PartReceipt>,
        expected_size: u64,
    ) -> Result<u64, UploadError> {
        if let Service::Azure { .. } = self.service {
            upload::check_upload_id(upload_id)?;
        }
        let location = self.location(path);
        let parts = parts
            .into_iter()
            .map(|receipt| PartId { content_id: receipt.id })
            .collect();
        self.multipart
            .complete_multipart(&location, &upload_id.to_owned(), parts)
            .await
            .map_err(|err| self.upload_error("commit the upload of".to_owned(), path, upload_id, err))?;
        let stored = self.head(path, &location).await?.map_or(0, |meta| meta.size);
        if stored != expected_size {
            return Err(UploadError::SizeMismatch {
                path: path.to_string(),
                expected: expected_size,
                stored,
                committed: true,
            });
        }
        Ok(stored)
    }

    pub(crate) async fn abort_upload(&self, path: &BlobPath, upload_id: &str) -> Result<(), UploadError> {
        match self.service {
            // Nothing to drop: uncommitted blocks expire after 7 days.
            Service::Azure { .. } => upload::check_upload_id(upload_id),
            Service::S3 => {
                let location = self.location(path);
                match self.multipart.abort_multipart(&location, &upload_id.to_owned()).await {
                    Ok(()) => Ok(()),
                    Err(err) => match self.upload_error("abort the upload of".to_owned(), path, upload_id, err) {
                        // Aborted or completed already: nothing left to abandon.
                        UploadError::NoSuchUpload { .. } => Ok(()),
                        err => Err(err),
                    },
                }
            }
        }
    }

    /// An upload step's failure, the service's "no such upload" (S3's
    /// `NoSuchUpload`; Azure's `InvalidBlockList`, its answer when the
    /// blocks to commit are not there) sorted out.
    fn upload_error(&self, step: String, path: &BlobPath, upload_id: &str, err: object_store::Error) -> UploadError {
        let err = ClientError::new(step, path, err);
        let code = match self.service {
            Service::Azure { .. } => "InvalidBlockList",
            Service::S3 => "NoSuchUpload",
        };
        if err.has_code(code) {
            UploadError::NoSuchUpload {
                path: path.to_string(),
                upload_id: upload_id.to_owned(),
                source: Some(err),
            }
        } else {
            err.into()
        }
    }
}

/// The block id of part `part` of Azure upload `upload_id`: the id and the
/// part number in 8 digits, the same length for every part.
fn block_id(upload_id: &str, part: u32) -> String {
    format!("{upload_id}{part:08}")
}

/// A block id as Put Block's `blockid` takes it: base64.
fn azure_block_id(block_id: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(block_id)
}

fn http_method_put() -> object_store::signer::Method {
    object_store::signer::Method::PUT
}

impl Storage for ObjectStorage {
    async fn put<S, E>(&self, path: &BlobPath, body: S, expected_len: Option<u64>) -> Result<u64, PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<BoxError> + Send,
    {
        let location = self.location(path);
        let part_size = self.part_size_usize();
        let mut body = CheckedBody {
            body: pin!(body),
            received: 0,
            expected_len,
        };

        // The first part's worth: a body that ends within it goes in one PUT.
        let mut first = Vec::new();
        let mut first_len = 0;
        while first_len < part_size {
            match body.next().await? {
                Some(chunk) => {
                    first_len += chunk.len();
                    first.push(chunk);
                }
                None => {
                    body.check_len()?;
                    self.store
                        .put(&location, PutPayload::from_iter(first))
                        .await
                        .map_err(|err| ClientError::new("store", path, err))?;
                    return Ok(body.received);
                }
            }
        }

        let upload = self
            .store
            .put_multipart(&location)
            .await
            .map_err(|err| ClientError::new("start a multipart upload of", path, err))?;
        let mut upload = UploadGuard(Some(WriteMultipart::new_with_chunk_size(upload, part_size)));
        for chunk in first {
            upload.writer().put(chunk);
        }
        loop {
            let chunk = match body.next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(err) => return Err(upload.abort(path, err).await),
            };
            if let Err(err) = upload.writer().wait_for_capacity(PARTS_IN_FLIGHT).await {
                let err = ClientError::new("upload a part of", path, err).into();
                return Err(upload.abort(path, err).await);
            }
            upload.writer().put(chunk);
        }
        if let Err(err) = body.check_len() {
            return Err(upload.abort(path, err).await);
        }
        upload
            .finish()
            .await
            .map_err(|err| ClientError::new("commit the upload of", path, err))?;
        Ok(body.received)
    }

    async fn open(&self, path: &BlobPath, range: Option<ByteRange>) -> Result<Blob, OpenError> {
        let location = self.location(path);
        let not_found = || OpenError::NotFound { path: path.to_string() };
        let mut options = GetOptions::default();
        if let Some(range) = range {
            let meta = self.head(path, &location).await?.ok_or_else(not_found)?;
            let selected = range
                .resolve(meta.size)
                .ok_or(OpenError::RangeNotSatisfiable { size: meta.size })?;
            options.range = Some(GetRange::Bounded(selected));
            // The bytes of the version whose size was read: a blob replaced
            // in between fails the read (412, worth retrying).
            options.if_match = meta.e_tag;
        }
        let result = match self.store.get_opts(&location, options).await {
            Ok(result) => result,
            Err(err) => {
                let err = ClientError::new("read", path, err);
                return Err(if err.is_not_found() { not_found() } else { err.into() });
            }
        };
        let size = result.meta.size;
        let range = result.range.clone();
        let body = result.into_stream().map_err(io::Error::from);
        Ok(Blob {
            size,
            range,
            body: Box::pin(body),
        })
    }

    async fn size(&self, path: &BlobPath) -> Result<Option<u64>, OpenError> {
        let location = self.location(path);
        Ok(self.head(path, &location).await?.map(|meta| meta.size))
    }
}

/// A put's body, its length counted and checked against the announced one
/// (the GCS backend's puts use it too).
pub(crate) struct CheckedBody<S> {
    pub(crate) body: std::pin::Pin<S>,
    pub(crate) received: u64,
    pub(crate) expected_len: Option<u64>,
}

impl<S, E> CheckedBody<&mut S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<BoxError>,
{
    /// The next chunk; [`PutError::TooLong`] as soon as the body passes the announced length.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, PutError> {
        let Some(chunk) = self.body.next().await else {
            return Ok(None);
        };
        let chunk = chunk.map_err(|err| PutError::Body(err.into()))?;
        self.received = self.received.saturating_add(chunk.len() as u64);
        if let Some(expected) = self.expected_len.filter(|&expected| self.received > expected) {
            return Err(PutError::TooLong { expected });
        }
        Ok(Some(chunk))
    }

    /// [`PutError::TooShort`] when the body ended before the announced length.
    pub(crate) fn check_len(&self) -> Result<(), PutError> {
        match self.expected_len {
            Some(expected) if expected != self.received => Err(PutError::TooShort {
                expected,
                received: self.received,
            }),
            _ => Ok(()),
        }
    }
}

/// A put's multipart upload, aborted unless finished: by [`UploadGuard::abort`]
/// on failure, or from `Drop` when the put is dropped half way.
struct UploadGuard(Option<WriteMultipart>);

impl UploadGuard {
    fn writer(&mut self) -> &mut WriteMultipart {
        self.0
            .as_mut()
            .expect("the writer is taken only by finish and abort, which consume the guard")
    }

    async fn finish(mut self) -> Result<object_store::PutResult, object_store::Error> {
        // `finish` aborts the upload itself when it fails.
        self.0.take().expect("finish consumes the guard").finish().await
    }

    /// Aborts the upload; returns `err`, the reason.
    async fn abort(mut self, path: &BlobPath, err: PutError) -> PutError {
        if let Some(writer) = self.0.take()
            && let Err(abort) = writer.abort().await
        {
            // Handled here: the put's own error is what the caller needs;
            // an upload left behind holds no blob, only space until the
            // bucket's lifecycle rule (or Azure's 7 days) removes it.
            tracing::warn!(path = %path, error = %abort, "could not abort a failed upload");
        }
        err
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        let Some(writer) = self.0.take() else { return };
        // A dropped put cannot await its abort. A short task does it
        // (bounded by object_store's retries); without a runtime (the
        // runtime itself is going away) the upload stays behind, invisible.
        // Not tracked (STYLE 23): nothing waits for it and it holds nothing.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = writer.abort().await {
                    tracing::warn!(error = %err, "could not abort the upload of a dropped put");
                }
            });
        }
    }
}
