//! netwatch's storage accounts (DESIGN §3 "Files", §7): the configured places
//! capture files land in, each shown by the API as a
//! `Microsoft.Storage/storageAccounts` resource and served for download.
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
//! # Layout
//! - [`account`]: the configured accounts ([`AccountConfig`], [`Accounts`]).
//! - [`blob_path`]: [`BlobPath`] and Azure's capture file path ([`capture_blob_path`]).
//! - [`error`]: [`PutError`], [`OpenError`].
//! - [`local`]: the local-directory backend. Azure Blob and S3 come as
//!   sibling modules of the same shape (STYLE §1), each a [`Backend`] variant.

pub mod account;
pub mod blob_path;
pub mod error;
pub mod local;

use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

pub use account::{AccountConfig, AccountKind, AccountNameError, Accounts, AccountsError, DEFAULT_RESOURCE_GROUP};
pub use blob_path::{BlobPath, BlobPathError, CAPTURE_CONTAINER, capture_blob_path};
pub use error::{OpenError, PutError};
pub use local::LocalStorage;

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
}

impl Backend {
    /// The backend `kind` describes. Building one does no I/O: a missing
    /// directory is created by the first upload.
    pub fn new(kind: &AccountKind) -> Self {
        match kind {
            AccountKind::Local { path } => Self::Local(LocalStorage::new(path.clone())),
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
        }
    }

    async fn open(&self, path: &BlobPath, range: Option<ByteRange>) -> Result<Blob, OpenError> {
        match self {
            Self::Local(local) => local.open(path, range).await,
        }
    }

    async fn size(&self, path: &BlobPath) -> Result<Option<u64>, OpenError> {
        match self {
            Self::Local(local) => local.size(path).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
