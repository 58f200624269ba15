//! The local-directory backend: each blob is a file under the account's root,
//! at the blob's path (`a/b/c.cap` is `{root}/a/b/c.cap`).
//!
//! A put is atomic and durable: the body goes to a temporary file in the
//! blob's own directory (so the rename cannot cross file systems), which is
//! fsynced, renamed over the blob's name and followed by an fsync of the
//! directory; directories it creates are fsynced into their parents. A reader
//! therefore sees the old blob or the whole new one, never a partial file, and
//! a blob a put returned for survives a crash. A put that fails or is dropped
//! removes its temporary file; one killed with the process leaves it behind,
//! under a name no [`BlobPath`] can have ([`crate::blob_path`]), so it is
//! never served.
//!
//! Multipart uploads stage their parts in the account's directory, under a
//! name no [`BlobPath`] can reach ([`upload`]).
//!
//! Not here: listing, deleting, sweeping temporary files and abandoned
//! uploads left by a crash.
//! Symbolic links inside the root are followed: whoever can create them can
//! write there anyway.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

use crate::blob_path::TEMP_PREFIX;
use crate::{Blob, BlobPath, BoxError, ByteRange, DEFAULT_PART_SIZE, OpenError, PutError, Storage};

mod upload;

/// Write buffer of a put: large enough that a 1 GiB capture takes ~1000
/// trips to the blocking pool rather than one per network chunk (~16 KiB).
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// Size of the chunks a read yields.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Temporary names tried before a put gives up (a name is taken only when a
/// crashed process of the same pid left it behind).
const TEMP_NAME_TRIES: u32 = 16;

/// Numbers temporary files, so concurrent puts in one process never collide.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A storage account kept in a local directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStorage {
    root: PathBuf,
    part_size: u64,
}

impl LocalStorage {
    /// The account kept under `root`, with parts of [`DEFAULT_PART_SIZE`];
    /// the directory is created by the first put.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// The same account with parts of `part_size` bytes (checked by
    /// [`crate::AccountConfig::check`] when it comes from configuration).
    pub fn with_part_size(self, part_size: u64) -> Self {
        Self { part_size, ..self }
    }

    /// Bytes per part of multipart uploads.
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// The account's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds the blob at `path`.
    pub fn file_path(&self, path: &BlobPath) -> PathBuf {
        let mut file = self.root.clone();
        file.extend(path.segments());
        file
    }
}

impl Storage for LocalStorage {
    async fn put<S, E>(&self, path: &BlobPath, body: S, expected_len: Option<u64>) -> Result<u64, PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<BoxError> + Send,
    {
        let target = self.file_path(path);
        let conflict = |source| PutError::PathConflict {
            path: path.to_string(),
            source,
        };
        let dir = create_dirs(&self.root, path).await.map_err(|err| match err {
            PutError::Io { source, .. } if is_conflict(&source) => conflict(source),
            err => err,
        })?;
        let (file, temp) = create_temp(&dir).await?;
        let written = write_body(file, &temp.path, body, expected_len).await?;
        match fs::rename(&temp.path, &target).await {
            Ok(()) => temp.disarm(),
            Err(source) if is_conflict(&source) => return Err(conflict(source)),
            Err(source) => return Err(io_error("rename into place", &target, source)),
        }
        sync_dir(&dir).await?;
        Ok(written)
    }

    async fn open(&self, path: &BlobPath, range: Option<ByteRange>) -> Result<Blob, OpenError> {
        let file_path = self.file_path(path);
        let not_found = || OpenError::NotFound { path: path.to_string() };
        let open_error = |source| OpenError::Io {
            step: "open",
            path: file_path.clone(),
            source,
        };
        let mut file = match File::open(&file_path).await {
            Ok(file) => file,
            Err(err) if is_absent(&err) => return Err(not_found()),
            Err(err) => return Err(open_error(err)),
        };
        let metadata = file.metadata().await.map_err(open_error)?;
        if !metadata.is_file() {
            return Err(not_found());
        }
        let size = metadata.len();
        let range = match range {
            None => 0..size,
            Some(range) => range.resolve(size).ok_or(OpenError::RangeNotSatisfiable { size })?,
        };
        if range.start > 0 {
            file.seek(SeekFrom::Start(range.start))
                .await
                .map_err(|source| OpenError::Io {
                    step: "seek in",
                    path: file_path.clone(),
                    source,
                })?;
        }
        // `take`: the file may grow under a reader (a put replaces it by
        // rename, so this handle keeps the old one); the range stays the range.
        let reader = file.take(range.end - range.start);
        let body = Box::pin(ReaderStream::with_capacity(reader, READ_CHUNK_BYTES));
        Ok(Blob { size, range, body })
    }

    async fn size(&self, path: &BlobPath) -> Result<Option<u64>, OpenError> {
        let file_path = self.file_path(path);
        match fs::metadata(&file_path).await {
            Ok(metadata) if metadata.is_file() => Ok(Some(metadata.len())),
            Ok(_) => Ok(None),
            Err(err) if is_absent(&err) => Ok(None),
            Err(source) => Err(OpenError::Io {
                step: "read metadata of",
                path: file_path,
                source,
            }),
        }
    }
}

/// Creates the root and the blob's parent directories that are missing,
/// fsyncing each new one into its parent; the blob's directory.
async fn create_dirs(root: &Path, path: &BlobPath) -> Result<PathBuf, PutError> {
    fs::create_dir_all(root)
        .await
        .map_err(|source| io_error("create directory", root, source))?;
    let segments: Vec<&str> = path.segments().collect();
    let mut dir = root.to_path_buf();
    for segment in &segments[..segments.len() - 1] {
        let parent = dir.clone();
        dir.push(segment);
        match fs::create_dir(&dir).await {
            Ok(()) => sync_dir(&parent).await?,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(io_error("create directory", &dir, source)),
        }
    }
    Ok(dir)
}

/// A new, empty temporary file in `dir`, removed again unless disarmed.
async fn create_temp(dir: &Path) -> Result<(File, TempFileGuard), PutError> {
    let mut last = None;
    for _ in 0..TEMP_NAME_TRIES {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&path).await {
            Ok(file) => return Ok((file, TempFileGuard { path, armed: true })),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last = Some((path, err)),
            Err(err) if is_conflict(&err) => {
                return Err(PutError::PathConflict {
                    path: dir.display().to_string(),
                    source: err,
                });
            }
            Err(source) => return Err(io_error("create temporary file", &path, source)),
        }
    }
    let (path, source) = last.expect("the loop ran at least once");
    Err(io_error("create temporary file", &path, source))
}

/// Writes `body` to `file` (at `path`), checking its length, and fsyncs it;
/// the number of bytes written.
async fn write_body<S, E>(file: File, path: &Path, body: S, expected_len: Option<u64>) -> Result<u64, PutError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Into<BoxError> + Send,
{
    let mut body = std::pin::pin!(body);
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
    let mut written: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|err| PutError::Body(err.into()))?;
        let received = written.saturating_add(chunk.len() as u64);
        if let Some(expected) = expected_len.filter(|&expected| received > expected) {
            return Err(PutError::TooLong { expected });
        }
        writer
            .write_all(&chunk)
            .await
            .map_err(|source| io_error("write", path, source))?;
        written = received;
    }
    if let Some(expected) = expected_len.filter(|&expected| written != expected) {
        return Err(PutError::TooShort {
            expected,
            received: written,
        });
    }
    writer.flush().await.map_err(|source| io_error("write", path, source))?;
    writer
        .into_inner()
        .sync_all()
        .await
        .map_err(|source| io_error("sync", path, source))?;
    Ok(written)
}

/// fsyncs directory `dir`, so the names created in it survive a crash.
async fn sync_dir(dir: &Path) -> Result<(), PutError> {
    let handle = File::open(dir)
        .await
        .map_err(|source| io_error("open directory", dir, source))?;
    handle
        .sync_all()
        .await
        .map_err(|source| io_error("sync directory", dir, source))
}

fn io_error(step: &'static str, path: &Path, source: io::Error) -> PutError {
    PutError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// A path is not there (or a parent of it is a file, so it cannot be).
fn is_absent(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

/// A name is taken by a directory where a file should be, or the reverse.
fn is_conflict(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory)
}

/// Removes a put's temporary file when the put fails or is dropped.
#[derive(Debug)]
struct TempFileGuard {
    path: PathBuf,
    armed: bool,
}

impl TempFileGuard {
    /// The file was renamed into place: nothing to remove.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFileGuard {
    fn drop(&mut self) {
        if self.armed {
            // Blocking, but one unlink: a drop cannot await, and a task
            // spawned here would outlive the put unseen (STYLE 23).
            if let Err(err) = std::fs::remove_file(&self.path) {
                // Handled here: the file is never served, it only takes space.
                tracing::warn!(path = %self.path.display(), error = %err, "could not remove an upload's temporary file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::stream;

    use super::*;

    fn blob(path: &str) -> BlobPath {
        BlobPath::parse(path).unwrap()
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + use<> {
        let parts: Vec<Result<Bytes, Infallible>> = parts.iter().map(|part| Ok(Bytes::from_static(part))).collect();
        stream::iter(parts)
    }

    async fn read_all(storage: &LocalStorage, path: &BlobPath, range: Option<ByteRange>) -> (u64, Vec<u8>) {
        let mut blob = storage.open(path, range).await.unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = blob.body.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(out.len() as u64, blob.range.end - blob.range.start);
        (blob.size, out)
    }

    /// Every file under `dir`, relative, sorted.
    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(next) = todo.pop() {
            for entry in std::fs::read_dir(&next).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    todo.push(entry.path());
                } else {
                    out.push(entry.path().strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn put_then_read_whole_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().join("acct"));
        let path = blob("network-watcher-logs/x/2025/01/31/packetcapture_16_39_41_077.cap");
        let size = storage
            .put(&path, chunks(&[b"0123", b"", b"456789"]), Some(10))
            .await
            .unwrap();
        assert_eq!(size, 10);
        assert_eq!(
            files(storage.root()),
            ["network-watcher-logs/x/2025/01/31/packetcapture_16_39_41_077.cap"]
        );
        assert_eq!(read_all(&storage, &path, None).await, (10, b"0123456789".to_vec()));
        let rows: [(ByteRange, &[u8]); 4] = [
            (ByteRange::Bounded { first: 2, last: 4 }, b"234"),
            (ByteRange::From(7), b"789"),
            (ByteRange::Suffix(2), b"89"),
            (ByteRange::Bounded { first: 8, last: 99 }, b"89"),
        ];
        for (range, bytes) in rows {
            assert_eq!(
                read_all(&storage, &path, Some(range)).await,
                (10, bytes.to_vec()),
                "{range:?}"
            );
        }
        assert!(matches!(
            storage.open(&path, Some(ByteRange::From(10))).await,
            Err(OpenError::RangeNotSatisfiable { size: 10 })
        ));
        assert_eq!(storage.size(&path).await.unwrap(), Some(10));
    }

    #[tokio::test]
    async fn put_replaces_atomically_and_a_reader_keeps_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        let path = blob("a/b.cap");
        storage.put(&path, chunks(&[b"old"]), None).await.unwrap();
        let mut before = storage.open(&path, None).await.unwrap();
        storage.put(&path, chunks(&[b"newer"]), Some(5)).await.unwrap();
        assert_eq!(before.body.next().await.unwrap().unwrap(), Bytes::from_static(b"old"));
        assert_eq!(read_all(&storage, &path, None).await, (5, b"newer".to_vec()));
        assert_eq!(files(dir.path()), ["a/b.cap"]);
    }

    #[tokio::test]
    async fn wrong_length_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        let path = blob("x/y.cap");
        let short = storage.put(&path, chunks(&[b"abc"]), Some(4)).await.unwrap_err();
        assert!(
            matches!(
                short,
                PutError::TooShort {
                    expected: 4,
                    received: 3
                }
            ),
            "{short:?}"
        );
        assert_eq!(
            short.to_string(),
            "the upload ended after 3 bytes where 4 were announced"
        );
        let long = storage.put(&path, chunks(&[b"ab", b"cd"]), Some(3)).await.unwrap_err();
        assert!(matches!(long, PutError::TooLong { expected: 3 }), "{long:?}");
        assert!(short.is_permanent() && long.is_permanent());
        assert_eq!(files(dir.path()), Vec::<String>::new());
        assert_eq!(storage.size(&path).await.unwrap(), None);

        // A failing body leaves the previous blob as it was.
        storage.put(&path, chunks(&[b"kept"]), None).await.unwrap();
        let failing = stream::iter([
            Ok(Bytes::from_static(b"par")),
            Err(io::Error::other("connection reset")),
        ]);
        let err = storage.put(&path, failing, None).await.unwrap_err();
        assert!(matches!(err, PutError::Body(_)) && !err.is_permanent(), "{err:?}");
        assert_eq!(read_all(&storage, &path, None).await, (4, b"kept".to_vec()));
        assert_eq!(files(dir.path()), ["x/y.cap"]);
    }

    #[tokio::test]
    async fn a_dropped_put_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        let path = blob("slow.cap");
        // A body that never ends: the put is dropped half way.
        let endless = stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"begun"))]).chain(stream::pending());
        let put = storage.put(&path, endless, None);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), put)
                .await
                .is_err()
        );
        assert_eq!(files(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn missing_blobs_and_directories_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        storage.put(&blob("d/f"), chunks(&[b"1"]), None).await.unwrap();
        for missing in ["nothing", "d", "d/f/under-a-file", "d/g"] {
            let err = storage.open(&blob(missing), None).await.unwrap_err();
            assert!(
                matches!(&err, OpenError::NotFound { path } if path == missing),
                "{missing}: {err:?}"
            );
            assert!(err.is_permanent());
            assert_eq!(storage.size(&blob(missing)).await.unwrap(), None, "{missing}");
        }
    }

    #[tokio::test]
    async fn paths_running_into_other_blobs_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        storage.put(&blob("a/b"), chunks(&[b"1"]), None).await.unwrap();
        for clash in ["a", "a/b/c"] {
            let err = storage.put(&blob(clash), chunks(&[b"2"]), None).await.unwrap_err();
            assert!(matches!(err, PutError::PathConflict { .. }), "{clash}: {err:?}");
        }
        assert_eq!(files(dir.path()), ["a/b"]);
    }

    #[tokio::test]
    async fn empty_blobs_are_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        let path = blob("empty.cap");
        assert_eq!(storage.put(&path, chunks(&[]), Some(0)).await.unwrap(), 0);
        assert_eq!(read_all(&storage, &path, None).await, (0, Vec::new()));
        assert!(matches!(
            storage.open(&path, Some(ByteRange::Suffix(1))).await,
            Err(OpenError::RangeNotSatisfiable { size: 0 })
        ));
    }
}
