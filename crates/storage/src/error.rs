//! The errors of [`crate::Storage`]'s calls and of multipart uploads
//! ([`UploadError`]), a variant per step that can fail (STYLE 6), each
//! classified for retries ([`PutError::is_permanent`],
//! [`OpenError::is_permanent`], [`UploadError::is_permanent`], STYLE 9). The
//! object stores' failures are [`ClientError`]s, classified by the HTTP status
//! the service answered (or the lack of one).

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
            Self::Body(_) => false,
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
    /// configuration, or an HTTP client that cannot be set up).
    #[error("set up the {kind} client of storage account {account:?}")]
    Client {
        account: String,
        kind: &'static str,
        #[source]
        source: object_store::Error,
    },
}

/// A request to an object store (Azure Blob, S3) that failed, after
/// object_store's own retries: what it was for, and the service's answer.
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
    source: object_store::Error,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0.step, self.0.path)
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0.source)
    }
}

impl ClientError {
    pub(crate) fn new(step: impl Into<String>, path: &BlobPath, source: object_store::Error) -> Self {
        Self(Box::new(ClientErrorParts {
            step: step.into(),
            path: path.to_string(),
            status: http_status(&source),
            source,
        }))
    }

    /// The HTTP status the service answered, when it answered.
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }

    /// The error object_store returned.
    pub fn source_error(&self) -> &object_store::Error {
        &self.0.source
    }

    /// Whether the same request, retried, cannot succeed: the service's
    /// refusals (4xx) are permanent, except timeouts (408), conflicts with a
    /// concurrent change (409, 412) and throttling (429); its failures (5xx)
    /// and broken connections are not.
    pub fn is_permanent(&self) -> bool {
        match self.0.status {
            Some(408 | 409 | 412 | 429) => false,
            Some(status) if (400..500).contains(&status) => true,
            Some(_) => false,
            None => matches!(
                self.0.source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
        }
    }

    /// Whether the service said there is nothing at the path (404).
    pub fn is_not_found(&self) -> bool {
        self.0.status == Some(404) || matches!(self.0.source, object_store::Error::NotFound { .. })
    }

    /// Whether the service refused the credentials (401, 403).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self.0.status, Some(401 | 403))
            || matches!(
                self.0.source,
                object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
            )
    }

    /// Whether the service's error body names the error code `code`
    /// (`NoSuchUpload`, `InvalidBlockList`).
    pub(crate) fn has_code(&self, code: &str) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&self.0.source);
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
