//! The errors of [`crate::Storage`]'s calls and of multipart uploads
//! ([`UploadError`]), a variant per step that can fail (STYLE 6), each
//! classified for retries ([`PutError::is_permanent`],
//! [`OpenError::is_permanent`], [`UploadError::is_permanent`], STYLE 9). The
//! object stores' failures are [`ClientError`]s, classified by the HTTP status
//! the service answered (or the lack of one); under a GCS one is the
//! [`GcsRequestError`] of netwatch's own JSON-API client. [`ProbeError`]: an
//! account whose storage cannot be used ([`crate::Backend::probe`]).

use std::io;
use std::path::PathBuf;

use crate::{BlobPath, BoxError, MAX_PARTS};

/// A blob that could not be stored. Nothing is left behind by any of them.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The body ended before the announced length.
    #[error("the upload ended after {received} bytes where {expected} were announced")]
    TooShort { expected: u64, received: u64 },
    /// The body went on past the announced length.
    #[error("the upload is longer than the {expected} bytes announced")]
    TooLong { expected: u64 },
    /// Reading the body failed (the sender went away, the network broke).
    #[error("read the upload body")]
    Body(#[source] BoxError),
    /// The path runs into an existing blob or directory (`a/b` where `a` is a
    /// blob, or `a` where `a/b` is one).
    #[error("blob path {path} runs into an existing blob or directory of the same name")]
    PathConflict {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A file system step failed; `step` is a verb phrase (`write`, `sync directory`).
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The system's random source failed (a GCS put's parts are stored under a random name).
    #[error("draw a random name for the put's parts")]
    Random(#[source] getrandom::Error),
    /// A request to the object store failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl PutError {
    /// Whether the same call, retried, cannot succeed: a body of the wrong
    /// length or a conflicting path stays wrong; a broken body stream or a full
    /// disk may not.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::TooShort { .. } | Self::TooLong { .. } | Self::PathConflict { .. } => true,
            Self::Body(_) | Self::Random(_) => false,
            Self::Io { source, .. } => is_permanent_io(source),
            Self::Client(err) => err.is_permanent(),
        }
    }
}

/// A blob that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No blob has this path.
    #[error("no blob has the path {path}")]
    NotFound { path: String },
    /// The range asked for selects no byte of the blob.
    #[error("the range asked for is outside the blob's {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// A file system step failed; `step` is a verb phrase (`open`, `seek in`).
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A request to the object store failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl OpenError {
    /// Whether the same call, retried, cannot succeed.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::NotFound { .. } | Self::RangeNotSatisfiable { .. } => true,
            Self::Io { source, .. } => is_permanent_io(source),
            Self::Client(err) => err.is_permanent(),
        }
    }
}

/// A step of a multipart upload that failed ([`crate::Backend::begin_upload`] and on).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// A part number outside `1..=`[`MAX_PARTS`].
    #[error("part number {part} is outside 1-{MAX_PARTS}")]
    BadPartNumber { part: u32 },
    /// An upload id this backend never gives out (S3's are the server's own;
    /// Azure's and the local backend's are 24 lower-case hex digits).
    #[error("upload id {upload_id:?} is not one this storage account gives out")]
    BadUploadId { upload_id: String },
    /// The receipts to complete with are not parts `1..=n`, each once.
    #[error("the parts to complete must be 1 to n, each once: part {found} is where {expected} should be")]
    BadPartList { expected: u32, found: u32 },
    /// The storage has no such upload of this blob: never begun, completed,
    /// aborted, or expired (Azure drops uncommitted blocks after 7 days).
    #[error("storage has no upload {upload_id:?} of {path}: it was completed, aborted or expired; begin a new one")]
    NoSuchUpload {
        path: String,
        upload_id: String,
        #[source]
        source: Option<ClientError>,
    },
    /// The storage service refused the account's credentials for this step.
    #[error("the storage service refused access")]
    PermissionDenied(#[source] ClientError),
    /// A part's bytes do not have the MD5 the uploader announced: they were
    /// damaged on the way; nothing was kept.
    #[error(
        "part {part} has the MD5 {computed} where {expected} was announced: it was damaged on the way and not kept"
    )]
    Md5Mismatch {
        part: u32,
        /// Base64, as `Content-MD5` writes it.
        expected: String,
        computed: String,
    },
    /// A part's body ended before its announced length.
    #[error("part {part} ended after {received} bytes where {expected} were announced")]
    PartTooShort { part: u32, expected: u64, received: u64 },
    /// A part's body went on past its announced length.
    #[error("part {part} is longer than the {expected} bytes announced")]
    PartTooLong { part: u32, expected: u64 },
    /// A part larger than the account's part size ([`crate::Backend::part_size`]).
    #[error("part {part} has {len} bytes, more than the storage account's part size of {part_size}")]
    PartTooLarge { part: u32, len: u64, part_size: u64 },
    /// The parts do not add up to the size the caller expected. `committed`:
    /// the object store committed them first, so the blob at `path` now holds
    /// the wrong bytes and must be uploaded again; otherwise (local) nothing
    /// changed.
    #[error(
        "blob {path} {} {stored} bytes where {expected} were expected{}",
        if *committed { "was committed with" } else { "would have" },
        if *committed { ": the blob is wrong and must be uploaded again" } else { ": nothing was stored" }
    )]
    SizeMismatch {
        path: String,
        expected: u64,
        stored: u64,
        committed: bool,
    },
    /// A part named by a receipt was never stored (local backend).
    #[error("part {part} of upload {upload_id:?} was never stored")]
    MissingPart { part: u32, upload_id: String },
    /// A receipt that does not name this upload's part (GCS: a receipt is
    /// the name of the part's temporary object, which the upload id and the
    /// part number make).
    #[error(
        "the receipt of part {part} is not one upload {upload_id:?} gave out: \
         complete with the receipts of this upload's grants and parts"
    )]
    ForeignReceipt { part: u32, upload_id: String },
    /// A part was stored again after the receipt given was issued (local
    /// backend; S3 answers `InvalidPart`).
    #[error("part {part} was stored again after this receipt was issued: complete with the receipt of its last upload")]
    StaleReceipt { part: u32 },
    /// Reading a part's body failed (the sender went away, the network broke).
    #[error("read the body of part {part}")]
    Body {
        part: u32,
        #[source]
        source: BoxError,
    },
    /// The blob's path runs into an existing blob or directory (local backend).
    #[error("blob path {path} runs into an existing blob or directory of the same name")]
    PathConflict {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A file system step failed (local backend); `step` is a verb phrase.
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The system's random source failed (a new upload id is random).
    #[error("draw a random upload id")]
    Random(#[source] getrandom::Error),
    /// Any other failed request to the object store.
    #[error(transparent)]
    Client(ClientError),
}

impl UploadError {
    /// Whether the same call, retried, cannot succeed. A damaged part
    /// ([`UploadError::Md5Mismatch`]) is not permanent: sent again it may arrive whole.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::BadPartNumber { .. }
            | Self::BadUploadId { .. }
            | Self::BadPartList { .. }
            | Self::NoSuchUpload { .. }
            | Self::PermissionDenied(_)
            | Self::PartTooShort { .. }
            | Self::PartTooLong { .. }
            | Self::PartTooLarge { .. }
            | Self::SizeMismatch { .. }
            | Self::MissingPart { .. }
            | Self::ForeignReceipt { .. }
            | Self::StaleReceipt { .. }
            | Self::PathConflict { .. } => true,
            Self::Md5Mismatch { .. } | Self::Body { .. } | Self::Random(_) => false,
            Self::Io { source, .. } => is_permanent_io(source),
            Self::Client(err) => err.is_permanent(),
        }
    }
}

impl From<ClientError> for UploadError {
    /// Sorts out refused credentials; [`UploadError::NoSuchUpload`] needs the
    /// upload id, so the calls that can meet one check for it first.
    fn from(err: ClientError) -> Self {
        if err.is_permission_denied() {
            Self::PermissionDenied(err)
        } else {
            Self::Client(err)
        }
    }
}

/// A backend that cannot be built ([`crate::Backend::new`]).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The account's configuration is unsound.
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    /// object_store refused to build the client (its own checks of the
    /// configuration, or an HTTP client that cannot be set up; GCS: its
    /// credentials, e.g. an application-default credentials file it cannot read).
    #[error("set up the {kind} client of storage account {account:?}")]
    Client {
        account: String,
        kind: &'static str,
        #[source]
        source: object_store::Error,
    },
    /// The HTTP client of GCS's JSON API cannot be set up (no TLS roots).
    #[error("set up the {kind} client of storage account {account:?}")]
    HttpClient {
        account: String,
        kind: &'static str,
        #[source]
        source: reqwest::Error,
    },
}

/// A storage account whose storage cannot be used as configured
/// ([`crate::Backend::probe`]: GCS only), each saying what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing answered at the endpoint (connection refused, DNS, timeout),
    /// or it kept failing (5xx).
    #[error(
        "cannot reach Google Cloud Storage at {endpoint}: check the account's endpoint \
         and that this machine can reach it"
    )]
    Unreachable {
        endpoint: String,
        #[source]
        source: GcsRequestError,
    },
    /// The service answered that the bucket does not exist (404).
    #[error("bucket {bucket:?} does not exist at {endpoint}: create it, or fix the account's bucket")]
    NoSuchBucket { bucket: String, endpoint: String },
    /// The service did not accept the credentials (401).
    #[error(
        "Google Cloud Storage did not accept the credentials for bucket {bucket:?} (401): \
         the key is revoked or deleted, or not the service account's; \
         fix credentials or service_account_key"
    )]
    Unauthenticated {
        bucket: String,
        #[source]
        source: GcsRequestError,
    },
    /// The credentials are valid but may not read the bucket (403).
    #[error(
        "the service account may not use bucket {bucket:?} (403): grant it roles/storage.objectAdmin \
         on the bucket, or fix credentials or service_account_key"
    )]
    Forbidden {
        bucket: String,
        #[source]
        source: GcsRequestError,
    },
    /// No access token could be had (the metadata server or Google's token
    /// service out of reach, a key refused there).
    #[error(
        "could not get an access token for bucket {bucket:?}: check credentials or \
         service_account_key, or, with neither, this machine's Google identity \
         (application default credentials, the metadata server)"
    )]
    Credentials {
        bucket: String,
        #[source]
        source: GcsRequestError,
    },
    /// Any other answer.
    #[error("read the metadata of bucket {bucket:?}")]
    Other {
        bucket: String,
        #[source]
        source: GcsRequestError,
    },
}

impl ProbeError {
    /// Whether probing again, unchanged, cannot succeed: a missing bucket or
    /// refused credentials stay so until someone acts; an endpoint out of
    /// reach may come back.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::NoSuchBucket { .. } | Self::Unauthenticated { .. } | Self::Forbidden { .. } => true,
            Self::Unreachable { .. } => false,
            Self::Credentials { source, .. } | Self::Other { source, .. } => source.is_permanent(),
        }
    }
}

/// A request to GCS's JSON API that failed, after the client's retries
/// (`gcs/client.rs`). Never holds a credential: no bearer token, no session
/// URI (reqwest's errors are kept without their URL).
#[derive(Debug, thiserror::Error)]
pub enum GcsRequestError {
    /// The service answered with an error status; `message` is its error
    /// body's message (or the body's start), on one line.
    #[error("Google Cloud Storage answered {status}: {message}")]
    Status { status: u16, message: String },
    /// The request could not be sent or its answer not read (connection
    /// refused or reset, timeout, DNS).
    #[error("send the request to Google Cloud Storage")]
    Send(#[source] reqwest::Error),
    /// No bearer token could be had from object_store's credential provider.
    #[error("get an access token")]
    Credentials(#[source] object_store::Error),
    /// An answer that is not what the JSON API documents.
    #[error("Google Cloud Storage's answer is not understood: {0}")]
    Answer(String),
    /// A read pinned to a generation of the blob found it gone: the blob was
    /// replaced or deleted while it was read.
    #[error("the blob was replaced or deleted while it was read (generation {generation} is gone): read it again")]
    Changed { generation: String },
}

impl GcsRequestError {
    /// The HTTP status the service answered, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the same request, retried, cannot succeed ([`ClientError::is_permanent`]'s rule on statuses).
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Status { status, .. } => is_permanent_status(*status),
            Self::Send(err) => err.is_builder(),
            Self::Credentials(err) => is_permanent_object_store(err),
            Self::Answer(_) | Self::Changed { .. } => false,
        }
    }
}

/// A request to an object store (Azure Blob, S3, GCS) that failed, after the
/// client's own retries: what it was for, and the service's answer.
/// Boxed: it travels inside every error enum of this crate, which stay small.
#[derive(Debug)]
pub struct ClientError(Box<ClientErrorParts>);

#[derive(Debug)]
struct ClientErrorParts {
    /// A verb phrase: `read`, `upload part 3 of`.
    step: String,
    /// The blob's path.
    path: String,
    /// The HTTP status the service answered, when it answered.
    status: Option<u16>,
    source: ClientSource,
}

/// The client whose request failed: object_store's (Azure Blob, S3) or the
/// GCS backend's own.
#[derive(Debug)]
enum ClientSource {
    ObjectStore(object_store::Error),
    Gcs(GcsRequestError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0.step, self.0.path)
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(match &self.0.source {
            ClientSource::ObjectStore(err) => err,
            ClientSource::Gcs(err) => err,
        })
    }
}

impl ClientError {
    pub(crate) fn new(step: impl Into<String>, path: &BlobPath, source: object_store::Error) -> Self {
        Self(Box::new(ClientErrorParts {
            step: step.into(),
            path: path.to_string(),
            status: http_status(&source),
            source: ClientSource::ObjectStore(source),
        }))
    }

    /// A failed request of the GCS backend; `path` names the blob (or the
    /// upload) it was for.
    pub(crate) fn gcs(step: impl Into<String>, path: &BlobPath, source: GcsRequestError) -> Self {
        Self(Box::new(ClientErrorParts {
            step: step.into(),
            path: path.to_string(),
            status: source.status(),
            source: ClientSource::Gcs(source),
        }))
    }

    /// The HTTP status the service answered, when it answered.
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }

    /// The error object_store returned (Azure Blob, S3); `None` for GCS,
    /// whose requests are netwatch's own ([`ClientError::gcs_error`]).
    pub fn source_error(&self) -> Option<&object_store::Error> {
        match &self.0.source {
            ClientSource::ObjectStore(err) => Some(err),
            ClientSource::Gcs(_) => None,
        }
    }

    /// The failed GCS request; `None` for the other object stores.
    pub fn gcs_error(&self) -> Option<&GcsRequestError> {
        match &self.0.source {
            ClientSource::ObjectStore(_) => None,
            ClientSource::Gcs(err) => Some(err),
        }
    }

    /// Whether the same request, retried, cannot succeed: the service's
    /// refusals (4xx) are permanent, except timeouts (408), conflicts with a
    /// concurrent change (409, 412) and throttling (429); its failures (5xx)
    /// and broken connections are not.
    pub fn is_permanent(&self) -> bool {
        match (self.0.status, &self.0.source) {
            (Some(status), _) => is_permanent_status(status),
            (None, ClientSource::ObjectStore(err)) => is_permanent_object_store(err),
            (None, ClientSource::Gcs(err)) => err.is_permanent(),
        }
    }

    /// Whether the service said there is nothing at the path (404).
    pub fn is_not_found(&self) -> bool {
        self.0.status == Some(404)
            || matches!(
                self.0.source,
                ClientSource::ObjectStore(object_store::Error::NotFound { .. })
            )
    }

    /// Whether the service refused the credentials (401, 403).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self.0.status, Some(401 | 403))
            || matches!(
                self.0.source,
                ClientSource::ObjectStore(
                    object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
                )
            )
    }

    /// Whether the service's error body names the error code `code`
    /// (`NoSuchUpload`, `InvalidBlockList`).
    pub(crate) fn has_code(&self, code: &str) -> bool {
        let mut next = std::error::Error::source(self);
        while let Some(err) = next {
            if err.to_string().contains(code) {
                return true;
            }
            next = err.source();
        }
        false
    }
}

/// The HTTP status in an object_store error. object_store keeps it in a
/// private type (`RetryError`) whose message reads `Server returned non-2xx
/// status code: 404 Not Found: …`, so it is read from there: the message is
/// object_store 0.14's, pinned in Cargo.toml, and the tests against Azurite
/// and moto exercise it (403, 404).
fn http_status(error: &object_store::Error) -> Option<u16> {
    const MARKER: &str = "Server returned non-2xx status code: ";
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = next {
        let text = err.to_string();
        if let Some(at) = text.find(MARKER) {
            let digits = text[at + MARKER.len()..].get(..3)?;
            return digits.parse().ok();
        }
        next = err.source();
    }
    None
}

/// [`ClientError::is_permanent`]'s rule on an HTTP status.
fn is_permanent_status(status: u16) -> bool {
    match status {
        408 | 409 | 412 | 429 => false,
        status => (400..500).contains(&status),
    }
}

/// Whether an object_store error that carries no HTTP status cannot be cured by retrying.
fn is_permanent_object_store(error: &object_store::Error) -> bool {
    matches!(
        error,
        object_store::Error::NotFound { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
    )
}

/// I/O failures that retrying does not cure: permissions, a read-only file
/// system, a name the file system refuses.
fn is_permanent_io(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::PermissionDenied
            | io::ErrorKind::ReadOnlyFilesystem
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::InvalidFilename
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::IsADirectory
    )
}
