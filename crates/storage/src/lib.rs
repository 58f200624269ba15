//! netwatch's storage accounts (DESIGN §3 "Files", §7): the configured places
//! capture files land in, each shown by the API as a
//! `Microsoft.Storage/storageAccounts` resource and served for download: a
//! local directory, an Azure Blob container, an S3 bucket or a Google Cloud
//! Storage bucket.
//!
//! Every backend implements [`Storage`] on the same terms, so callers (the
//! controller's upload and download routes, later the agent's uploader) do not
//! care where the bytes live:
//! - a blob is written whole or not at all: a reader never sees a partial
//!   file, a failed or short upload leaves nothing behind;
//! - blob paths are [`BlobPath`]s, checked once (relative, `/`-separated, no
//!   `.`/`..`), so no backend can be walked out of its root;
//! - errors say which step failed and whether retrying can help
//!   ([`PutError::is_permanent`], [`OpenError::is_permanent`]).
//!
//! Every [`Backend`] also takes multipart uploads ([`upload`]): the
//! controller begins one, grants the uploader presigned URLs to put parts
//! straight into S3 or Azure, or GCS upload-session URIs
//! ([`Backend::grant_parts`]; no storage key leaves the controller) or takes
//! the parts itself ([`Backend::put_part`]; local accounts, Azure accounts
//! with only a SAS), then commits them at once.
//!
//! # Layout
//! - [`account`]: the configured accounts ([`AccountConfig`], [`Accounts`]).
//! - [`blob_path`]: [`BlobPath`] and Azure's capture file path ([`capture_blob_path`]).
//! - [`error`]: [`PutError`], [`OpenError`], [`UploadError`], [`ClientError`], [`BackendError`],
//!   [`ProbeError`], [`GcsRequestError`].
//! - [`upload`]: multipart uploads' [`PartGrant`], [`PartReceipt`] and shared checks.
//! - [`local`]: the local-directory backend (its uploads stage in `local/upload.rs`).
//! - [`object`]: what the object-store backends share ([`ObjectStorage`]).
//! - [`azure`], [`s3`]: the Azure Blob and S3 backends, each an [`ObjectStorage`].
//! - [`gcs`]: the Google Cloud Storage backend ([`GcsStorage`]): its own
//!   JSON-API client (`gcs/client.rs`), the key and bucket checks
//!   (`gcs/key.rs`); uploads' parts are objects composed at the commit.

pub mod account;
pub mod azure;
pub mod blob_path;
pub mod error;
pub mod gcs;
pub mod local;
pub mod object;
pub mod s3;
pub mod upload;

use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

pub use account::{
    AccountConfig, AccountKind, AccountNameError, Accounts, AccountsError, ConfigError, DEFAULT_CONTAINER,
    DEFAULT_PART_SIZE, DEFAULT_REGION, DEFAULT_RESOURCE_GROUP, Endpoint, EndpointError, MAX_PART_SIZE,
    MIN_GCS_PART_SIZE, MIN_LOCAL_PART_SIZE, MIN_OBJECT_PART_SIZE, Secret,
};
pub use blob_path::{BlobPath, BlobPathError, CAPTURE_CONTAINER, capture_blob_path, capture_blob_path_of};
pub use error::{BackendError, ClientError, GcsRequestError, OpenError, ProbeError, PutError, UploadError};
pub use gcs::GcsStorage;
pub use local::LocalStorage;
pub use object::ObjectStorage;
pub use upload::{MAX_PARTS, PartGrant, PartReceipt};

/// Any error, boxed: what an upload body's stream may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A blob's bytes as they are read, in chunks.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// What every storage backend does.
///
/// Dropping a returned future cancels the call; a cancelled `put` leaves
/// nothing behind, like a failed one.
pub trait Storage {
    /// Stores `body` at `path`, replacing any blob there, atomically: until it
    /// returns `Ok`, readers see the previous blob or none. With
    /// `expected_len`, a body of any other length is refused and nothing is
    /// stored. Returns the number of bytes stored.
    fn put<S, E>(
        &self,
        path: &BlobPath,
        body: S,
        expected_len: Option<u64>,
    ) -> impl Future<Output = Result<u64, PutError>> + Send
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<BoxError> + Send;

    /// Opens the blob at `path` for reading: all of it, or the bytes of `range`.
    fn open(&self, path: &BlobPath, range: Option<ByteRange>) -> impl Future<Output = Result<Blob, OpenError>> + Send;

    /// The size of the blob at `path` in bytes; `None` when there is none.
    fn size(&self, path: &BlobPath) -> impl Future<Output = Result<Option<u64>, OpenError>> + Send;
}

/// A blob opened for reading.
pub struct Blob {
    /// The whole blob's size in bytes.
    pub size: u64,
    /// Which bytes `body` holds: `0..size` unless a range was asked for.
    pub range: Range<u64>,
    /// The bytes of `range`, in order.
    pub body: ByteStream,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("size", &self.size)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// A byte range of a blob, as HTTP `Range: bytes=…` asks for one (RFC 9110
/// §14.1.2) and object stores take one (object_store's `GetRange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last`: bytes `first` to `last`, both included.
    Bounded { first: u64, last: u64 },
    /// `first-`: from `first` to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The bytes this range selects of a blob of `size` bytes, `None` when it
    /// selects none (RFC 9110 §14.1.1: a range starting at or past the end, a
    /// suffix of 0 bytes, any range of an empty blob). A range reaching past
    /// the end is cut at the end.
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            Self::Bounded { first, last } if first <= last && first < size => {
                Some(first..last.saturating_add(1).min(size))
            }
            Self::Bounded { .. } => None,
            Self::From(first) if first < size => Some(first..size),
            Self::From(_) => None,
            Self::Suffix(n) if n > 0 && size > 0 => Some(size - n.min(size)..size),
            Self::Suffix(_) => None,
        }
    }
}

/// The backend of one storage account: a variant per backend module.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A directory on this machine ([`local`]).
    Local(LocalStorage),
    /// An Azure Blob container ([`azure`]).
    AzureBlob(ObjectStorage),
    /// An S3 bucket ([`s3`]).
    S3(ObjectStorage),
    /// A Google Cloud Storage bucket ([`gcs`]).
    Gcs(GcsStorage),
}

impl Backend {
    /// The backend of `account`, once its configuration is checked
    /// ([`AccountConfig::check`]). Building one makes no request: a missing
    /// directory is created by the first upload, a missing container or
    /// bucket shows on the first request (or [`Backend::probe`]). A GCS
    /// account's key file is read (by the check, and again here).
    pub fn new(account: &AccountConfig) -> Result<Self, BackendError> {
        account.check()?;
        let part_size = account.part_size();
        let client_error = |source| BackendError::Client {
            account: account.name.clone(),
            kind: account.kind.as_str(),
            source,
        };
        Ok(match &account.kind {
            AccountKind::Local { path } => Self::Local(LocalStorage::new(path.clone()).with_part_size(part_size)),
            AccountKind::AzureBlob {
                account: azure_account,
                container,
                key,
                sas,
                endpoint,
            } => {
                let auth = match (key, sas) {
                    (Some(key), _) => azure::Auth::Key(key),
                    (None, Some(sas)) => azure::Auth::Sas(sas),
                    (None, None) => {
                        unreachable!("AccountConfig::check refuses an azureblob account without key or sas")
                    }
                };
                let storage = azure::storage(azure_account, container, auth, endpoint.as_ref(), part_size)
                    .map_err(client_error)?;
                Self::AzureBlob(storage)
            }
            AccountKind::S3 {
                bucket,
                region,
                endpoint,
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                let storage = s3::storage(
                    bucket,
                    region,
                    endpoint.as_ref(),
                    access_key_id,
                    secret_access_key,
                    session_token.as_ref(),
                    part_size,
                )
                .map_err(client_error)?;
                Self::S3(storage)
            }
            AccountKind::Gcs {
                bucket,
                credentials,
                service_account_key,
                endpoint,
            } => {
                let key = gcs::key::load(credentials.as_deref(), service_account_key.as_ref()).map_err(|problem| {
                    BackendError::Config(ConfigError::new(&account.name, account::ConfigProblem::Gcs(problem)))
                })?;
                let storage = GcsStorage::new(bucket, key, endpoint.as_ref(), part_size).map_err(|err| match err {
                    gcs::BuildError::Credentials(source) => client_error(source),
                    gcs::BuildError::Http(source) => BackendError::HttpClient {
                        account: account.name.clone(),
                        kind: account.kind.as_str(),
                        source,
                    },
                })?;
                Self::Gcs(storage)
            }
        })
    }

    /// Checks that the account's storage can be used: for GCS, reads the
    /// bucket's metadata with the account's credentials, so an endpoint out
    /// of reach, a missing bucket or refused credentials show at once, each
    /// saying what to fix ([`ProbeError`]). The other kinds return `Ok` with
    /// no I/O: a local directory is made by its first upload, and Azure's and
    /// S3's failures show on their first request.
    pub async fn probe(&self) -> Result<(), ProbeError> {
        match self {
            Self::Local(_) | Self::AzureBlob(_) | Self::S3(_) => Ok(()),
            Self::Gcs(gcs) => gcs.probe().await,
        }
    }

    /// Bytes per part of multipart uploads: every part but the last must have
    /// exactly this many, the last at most this many.
    pub fn part_size(&self) -> u64 {
        match self {
            Self::Local(local) => local.part_size(),
            Self::AzureBlob(object) | Self::S3(object) => object.part_size(),
            Self::Gcs(gcs) => gcs.part_size(),
        }
    }

    /// Starts a multipart upload of the blob at `path`; returns its id (S3:
    /// the server's UploadId; Azure, GCS and local: 24 random hex digits,
    /// naming Azure's block ids, GCS's temporary objects or the local staging
    /// directory).
    pub async fn begin_upload(&self, path: &BlobPath) -> Result<String, UploadError> {
        match self {
            Self::Local(local) => local.begin_upload(path).await,
            Self::AzureBlob(object) | Self::S3(object) => object.begin_upload(path).await,
            Self::Gcs(gcs) => gcs.begin_upload(),
        }
    }

    /// Grants to PUT parts `parts` of upload `upload_id` straight to
    /// storage, each valid for `ttl`. `Ok(None)` when this backend takes parts
    /// only through [`Backend::put_part`]: a local directory, or an Azure
    /// account configured with a SAS (a SAS cannot sign a narrower one).
    /// Signing makes no request. GCS opens an upload session per part (a
    /// request each, a few at once): its session URI is valid for a week
    /// whatever `ttl` says ([`gcs`]); a part granted again gets a new one.
    pub async fn grant_parts(
        &self,
        path: &BlobPath,
        upload_id: &str,
        parts: &[u32],
        ttl: Duration,
    ) -> Result<Option<Vec<PartGrant>>, UploadError> {
        for &part in parts {
            upload::check_part(part)?;
        }
        match self {
            Self::Local(_) => Ok(None),
            Self::AzureBlob(object) | Self::S3(object) => object.grant_parts(path, upload_id, parts, ttl).await,
            Self::Gcs(gcs) => gcs.grant_parts(path, upload_id, parts).await,
        }
    }

    /// Stores part `part` of upload `upload_id`, received by the caller:
    /// exactly `len` bytes (at most [`Backend::part_size`]), streamed, and with
    /// `md5` the part's MD5 must match (else it is refused and nothing is
    /// kept). A part stored again replaces the earlier one. Memory is bounded
    /// by the part size (the object stores take a part in one request).
    pub async fn put_part<S, E>(
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
        upload::check_part(part)?;
        let part_size = self.part_size();
        if len > part_size {
            return Err(UploadError::PartTooLarge { part, len, part_size });
        }
        match self {
            Self::Local(local) => local.put_part(path, upload_id, part, body, len, md5).await,
            Self::AzureBlob(object) | Self::S3(object) => object.put_part(path, upload_id, part, body, len, md5).await,
            Self::Gcs(gcs) => gcs.put_part(path, upload_id, part, body, len, md5).await,
        }
    }

    /// Commits upload `upload_id`: the blob at `path` becomes parts `1..=n`
    /// (`parts`, in any order, each once) in part order, atomically: readers
    /// see the previous blob or none until then, the whole new one after.
    /// Then checks the blob has `expected_size` bytes
    /// ([`UploadError::SizeMismatch`] otherwise; Azure and S3 check after
    /// committing, so their blob is then wrong; the local and GCS backends
    /// check first, GCS again after). Returns the size.
    pub async fn complete_upload(
        &self,
        path: &BlobPath,
        upload_id: &str,
        parts: &[PartReceipt],
        expected_size: u64,
    ) -> Result<u64, UploadError> {
        let parts = upload::ordered_receipts(parts)?;
        match self {
            Self::Local(local) => local.complete_upload(path, upload_id, &parts, expected_size).await,
            Self::AzureBlob(object) | Self::S3(object) => {
                object.complete_upload(path, upload_id, parts, expected_size).await
            }
            Self::Gcs(gcs) => gcs.complete_upload(path, upload_id, parts, expected_size).await,
        }
    }

    /// Abandons upload `upload_id` (S3: AbortMultipartUpload; Azure: nothing
    /// to do, uncommitted blocks expire after 7 days; GCS: the upload's
    /// temporary objects are deleted; local: the staging directory goes).
    /// Abandoning an upload that is gone already succeeds.
    pub async fn abort_upload(&self, path: &BlobPath, upload_id: &str) -> Result<(), UploadError> {
        match self {
            Self::Local(local) => local.abort_upload(path, upload_id).await,
            Self::AzureBlob(object) | Self::S3(object) => object.abort_upload(path, upload_id).await,
            Self::Gcs(gcs) => gcs.abort_upload(path, upload_id).await,
        }
    }
}

impl Storage for Backend {
    async fn put<S, E>(&self, path: &BlobPath, body: S, expected_len: Option<u64>) -> Result<u64, PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<BoxError> + Send,
    {
        match self {
            Self::Local(local) => local.put(path, body, expected_len).await,
            Self::AzureBlob(object) | Self::S3(object) => object.put(path, body, expected_len).await,
            Self::Gcs(gcs) => gcs.put(path, body, expected_len).await,
        }
    }

    async fn open(&self, path: &BlobPath, range: Option<ByteRange>) -> Result<Blob, OpenError> {
        match self {
            Self::Local(local) => local.open(path, range).await,
            Self::AzureBlob(object) | Self::S3(object) => object.open(path, range).await,
            Self::Gcs(gcs) => gcs.open(path, range).await,
        }
    }

    async fn size(&self, path: &BlobPath) -> Result<Option<u64>, OpenError> {
        match self {
            Self::Local(local) => local.size(path).await,
            Self::AzureBlob(object) | Self::S3(object) => object.size(path).await,
            Self::Gcs(gcs) => gcs.size(path).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grants for the clouds' own endpoints, signed offline: S3 is
    /// virtual-hosted, Azure's default container is not repeated in the key.
    #[tokio::test]
    async fn grants_address_the_clouds_as_they_expect() {
        let path = BlobPath::parse("network-watcher-logs/subscriptions/s/x.cap").unwrap();
        let s3 = AccountKind::S3 {
            bucket: "captures".to_owned(),
            region: "eu-west-1".to_owned(),
            endpoint: None,
            access_key_id: "AKIA1".to_owned(),
            secret_access_key: Secret::new("secret"),
            session_token: None,
        };
        let backend = Backend::new(&AccountConfig::new("s3acct", s3).unwrap()).unwrap();
        let grants = backend
            .grant_parts(&path, "upload-1", &[3], Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert!(
            grants[0]
                .url
                .starts_with("https://captures.s3.eu-west-1.amazonaws.com/network-watcher-logs/subscriptions/s/x.cap?"),
            "{}",
            grants[0].url
        );
        assert_eq!(backend.part_size(), DEFAULT_PART_SIZE);

        let azure = AccountKind::AzureBlob {
            account: "acct".to_owned(),
            container: DEFAULT_CONTAINER.to_owned(),
            key: Some(Secret::new("a2V5")),
            sas: None,
            endpoint: None,
        };
        let backend = Backend::new(&AccountConfig::new("azacct", azure).unwrap()).unwrap();
        let upload_id = "0123456789abcdef01234567";
        let grants = backend
            .grant_parts(&path, upload_id, &[3], Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        let url = &grants[0].url;
        assert!(
            url.starts_with("https://acct.blob.core.windows.net/network-watcher-logs/subscriptions/s/x.cap?"),
            "{url}"
        );
        assert!(url.contains("sp=w") && url.contains("comp=block"), "{url}");
        // base64("0123456789abcdef0123456700000003"), form-encoded.
        assert!(
            url.ends_with("&blockid=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3MDAwMDAwMDM%3D"),
            "{url}"
        );
        assert_eq!(grants[0].receipt.as_deref(), Some("0123456789abcdef0123456700000003"));
        let err = backend
            .grant_parts(&path, "not-an-id", &[1], Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(matches!(err, UploadError::BadUploadId { .. }), "{err:?}");
    }

    #[test]
    fn ranges_resolve_as_rfc_9110_says() {
        let rows = [
            (ByteRange::Bounded { first: 0, last: 0 }, 10, Some(0..1)),
            (ByteRange::Bounded { first: 2, last: 5 }, 10, Some(2..6)),
            (ByteRange::Bounded { first: 2, last: 500 }, 10, Some(2..10)),
            (ByteRange::Bounded { first: 9, last: 9 }, 10, Some(9..10)),
            (ByteRange::Bounded { first: 10, last: 12 }, 10, None),
            (ByteRange::Bounded { first: 5, last: 4 }, 10, None),
            (
                ByteRange::Bounded {
                    first: 0,
                    last: u64::MAX,
                },
                10,
                Some(0..10),
            ),
            (ByteRange::From(0), 10, Some(0..10)),
            (ByteRange::From(9), 10, Some(9..10)),
            (ByteRange::From(10), 10, None),
            (ByteRange::Suffix(3), 10, Some(7..10)),
            (ByteRange::Suffix(30), 10, Some(0..10)),
            (ByteRange::Suffix(0), 10, None),
            (ByteRange::From(0), 0, None),
            (ByteRange::Suffix(1), 0, None),
        ];
        for (range, size, resolved) in rows {
            assert_eq!(range.resolve(size), resolved, "{range:?} of {size}");
        }
    }
}
