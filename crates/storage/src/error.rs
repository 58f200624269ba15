//! The errors of [`crate::Storage`]'s calls, a variant per step that can fail
//! (STYLE 6), each classified for retries ([`PutError::is_permanent`],
//! [`OpenError::is_permanent`], STYLE 9). A backend adds the variants of its
//! own client beside the local backend's [`std::io::Error`] ones.

use std::io;
use std::path::PathBuf;

use crate::BoxError;

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
}

impl OpenError {
    /// Whether the same call, retried, cannot succeed.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::NotFound { .. } | Self::RangeNotSatisfiable { .. } => true,
            Self::Io { source, .. } => is_permanent_io(source),
        }
    }
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
