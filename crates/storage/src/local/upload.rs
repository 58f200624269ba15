//! Multipart uploads of the local backend, staged on disk:
//! `{root}/.netwatch-tmp-uploads/{upload id}/` holds `blob` (the blob path the
//! upload is for), `part_size` (bytes per part when it began), `data` (the
//! blob being assembled: part n is written in place at `(n - 1) × part_size`)
//! and one small file per part, `00001` … `10000`, its *marker*: `{receipt}
//! {length} {boot id}` once the part is stored, empty while it is written.
//!
//! The staging directory's name starts with the reserved prefix no
//! [`BlobPath`] segment may have ([`crate::blob_path`]), so no download can
//! read a part. Each byte is written once: a part straight into `data`, and
//! committing checks the markers against the receipts (a part's receipt is
//! new each time it is stored — its MD5 when the sender gave one, which is
//! checked as it arrives, else 24 random hex digits — so a receipt of a part
//! since stored again is refused as S3 refuses a stale ETag), cuts `data` to
//! the size, fsyncs it and renames it into the blob's place, then fsyncs the
//! blob's directory — one fsync of the blob per upload, none per part, and no
//! part read back or hashed again. A part sent without an MD5 (over TLS,
//! which authenticates every byte) is not hashed at all.
//!
//! Durability: a part is staged, not made durable (no fsync). A controller
//! that crashes keeps what it wrote (the page cache is the kernel's); a host
//! that crashes may lose or tear staged bytes, so a marker names the boot it
//! was written in (`/proc/sys/kernel/random/boot_id`) and a commit after a
//! reboot finds the parts staged before it missing
//! ([`UploadError::MissingPart`]: the controller answers 404 and the agent
//! begins the upload again). Without a boot id (not Linux) each part is
//! fsynced before its marker is written, as before. The blob itself is
//! durable once the commit returns.
//!
//! A part stored again replaces the earlier one, but only once it arrived
//! whole: a part that already has a marker is received into a temporary file
//! first and copied into place once its MD5 matched (a re-send is rare: the
//! agent sends again only parts it holds no receipt for). Writers of one part
//! take turns (an exclusive `flock` on its marker); part writers share a lock
//! on `blob` that a commit takes exclusively, so no late part can write into
//! a blob once it is committed.
//!
//! Not here: sweeping uploads abandoned without an abort (a crashed
//! controller); they only take space.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::OnceLock;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncSeekExt, AsyncWrite, AsyncWriteExt, BufWriter};

use super::{
    LocalStorage, TEMP_NAME_TRIES, WRITE_BUFFER_BYTES, create_dirs, create_temp, is_absent, is_conflict, sync_dir,
};
use crate::upload::{self, PartDigest, PartReceipt};
use crate::{BlobPath, BoxError, PutError, UploadError};

/// The directory under the root that holds uploads in progress; it starts
/// with [`crate::blob_path::TEMP_PREFIX`], so no blob path reaches it.
const STAGING_DIR: &str = ".netwatch-tmp-uploads";
/// The file in an upload's directory that names its blob.
const BLOB_FILE: &str = "blob";
/// The file in an upload's directory that holds its part size.
const PART_SIZE_FILE: &str = "part_size";
/// The file in an upload's directory the blob is assembled in.
const DATA_FILE: &str = "data";
/// Where the kernel says which boot this is (random(4)).
const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

impl LocalStorage {
    fn uploads_dir(&self) -> PathBuf {
        self.root.join(STAGING_DIR)
    }

    /// Starts an upload of `path`: a new staging directory named by a fresh id.
    pub async fn begin_upload(&self, path: &BlobPath) -> Result<String, UploadError> {
        let uploads = self.uploads_dir();
        if let Err(source) = fs::create_dir_all(&uploads).await {
            return Err(io_error("create directory", &uploads, source));
        }
        let mut tries = 0;
        let (upload_id, dir) = loop {
            let upload_id = upload::new_upload_id()?;
            let dir = uploads.join(&upload_id);
            match fs::create_dir(&dir).await {
                Ok(()) => break (upload_id, dir),
                // 96 random bits: taken only by a broken random source.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists && tries < TEMP_NAME_TRIES => tries += 1,
                Err(source) => return Err(io_error("create directory", &dir, source)),
            }
        };
        write_synced(&dir.join(PART_SIZE_FILE), self.part_size.to_string().as_bytes()).await?;
        write_synced(&dir.join(DATA_FILE), b"").await?;
        // Last: an upload whose `blob` names its path has the other two.
        write_synced(&dir.join(BLOB_FILE), path.as_str().as_bytes()).await?;
        sync_dir(&dir).await.map_err(from_put)?;
        sync_dir(&uploads).await.map_err(from_put)?;
        Ok(upload_id)
    }

    /// The staging directory of upload `upload_id` of `path` and its part
    /// size, once it is found to be there and to be for `path`.
    async fn staging(&self, path: &BlobPath, upload_id: &str) -> Result<(PathBuf, u64), UploadError> {
        upload::check_upload_id(upload_id)?;
        let dir = self.uploads_dir().join(upload_id);
        let blob_file = dir.join(BLOB_FILE);
        match fs::read(&blob_file).await {
            Ok(named) if named == path.as_str().as_bytes() => {}
            Ok(_) => return Err(no_such_upload(path, upload_id)),
            Err(err) if is_absent(&err) => return Err(no_such_upload(path, upload_id)),
            Err(source) => return Err(io_error("read", &blob_file, source)),
        }
        let size_file = dir.join(PART_SIZE_FILE);
        let part_size = match fs::read_to_string(&size_file).await {
            Ok(text) => text.trim().parse::<u64>().ok().filter(|&size| size > 0),
            // Staged by an earlier version (one file per part): begin again.
            Err(err) if is_absent(&err) => None,
            Err(source) => return Err(io_error("read", &size_file, source)),
        };
        match part_size {
            Some(part_size) => Ok((dir, part_size)),
            None => Err(no_such_upload(path, upload_id)),
        }
    }

    /// Stores part `part` (the caller checked the number and `len` against
    /// the part size), streamed into place.
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
        let (dir, part_size) = self.staging(path, upload_id).await?;
        if len > part_size {
            return Err(UploadError::PartTooLarge { part, len, part_size });
        }
        let marker_path = part_file(&dir, part);
        let (_shared, marker) = lock_part(&dir, &marker_path).await?;
        let mut marker = File::from_std(marker);
        let data_path = dir.join(DATA_FILE);
        let mut data = match OpenOptions::new().write(true).open(&data_path).await {
            Ok(data) => data,
            // Committed or aborted while this part waited for its lock.
            Err(err) if is_absent(&err) => return Err(no_such_upload(path, upload_id)),
            Err(source) => return Err(io_error("open", &data_path, source)),
        };
        let offset = u64::from(part.saturating_sub(1)) * part_size;
        let stored_before = marker
            .metadata()
            .await
            .map_err(|source| io_error("read metadata of", &marker_path, source))?
            .len()
            > 0;
        let id = if stored_before {
            // Received whole and checked before the stored part is touched.
            let (mut temp_file, temp) = create_temp(&dir).await.map_err(from_put)?;
            let digest = receive(&mut temp_file, &temp.path, part, body, len, md5.is_some()).await?;
            let id = receipt_id(part, digest, md5)?;
            drop(temp_file);
            // Opened anew: the temporary file is write-only.
            let mut received = File::open(&temp.path)
                .await
                .map_err(|source| io_error("open", &temp.path, source))?;
            clear_marker(&mut marker, &marker_path).await?;
            seek(&mut data, &data_path, offset).await?;
            tokio::io::copy(&mut received, &mut data)
                .await
                .map_err(|source| io_error("write", &data_path, source))?;
            id
        } else {
            // No marker: nothing stored to keep, a part that fails leaves none.
            seek(&mut data, &data_path, offset).await?;
            let digest = receive(&mut data, &data_path, part, body, len, md5.is_some()).await?;
            receipt_id(part, digest, md5)?
        };
        data.flush()
            .await
            .map_err(|source| io_error("write", &data_path, source))?;
        let boot = match boot_id() {
            Some(boot) => boot,
            None => {
                data.sync_data()
                    .await
                    .map_err(|source| io_error("sync", &data_path, source))?;
                NO_BOOT_ID
            }
        };
        marker
            .write_all(format!("{id} {len} {boot}").as_bytes())
            .await
            .map_err(|source| io_error("write", &marker_path, source))?;
        marker
            .flush()
            .await
            .map_err(|source| io_error("write", &marker_path, source))?;
        Ok(PartReceipt { part, id })
    }

    /// Stores part `part` from `len` bytes of `file` at `offset`: a file an
    /// agent on this machine handed over (the controller's `handoff.rs`),
    /// copied into place by the kernel (`copy_file_range`; a read and write
    /// where it cannot), not through this process. The bytes are not hashed
    /// (they never leave the machine): the part's receipt is fresh random.
    /// Locks and markers as [`LocalStorage::put_part`]; a copy that fails
    /// leaves the part not stored.
    pub async fn put_part_from_file(
        &self,
        path: &BlobPath,
        upload_id: &str,
        part: u32,
        file: std::fs::File,
        offset: u64,
        len: u64,
    ) -> Result<PartReceipt, UploadError> {
        upload::check_part(part)?;
        let (dir, part_size) = self.staging(path, upload_id).await?;
        if len > part_size {
            return Err(UploadError::PartTooLarge { part, len, part_size });
        }
        let marker_path = part_file(&dir, part);
        let (_shared, marker) = lock_part(&dir, &marker_path).await?;
        let data_path = dir.join(DATA_FILE);
        let at = u64::from(part - 1) * part_size;
        let id = upload::new_upload_id()?;
        let (gone, receipt) = (no_such_upload(path, upload_id), PartReceipt { part, id });
        let copied = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt as _;
            // Emptied first: until it is written again the part is not stored.
            marker
                .set_len(0)
                .map_err(|source| io_error("truncate", &marker_path, source))?;
            let data = match std::fs::OpenOptions::new().write(true).open(&data_path) {
                Ok(data) => data,
                // Committed or aborted while this part waited for its lock.
                Err(err) if is_absent(&err) => return Err(gone),
                Err(source) => return Err(io_error("open", &data_path, source)),
            };
            copy_range(&file, offset, &data, at, len).map_err(|err| err.into_upload_error(part, len, &data_path))?;
            // Writeback of the part starts now, in the background
            // (DONTNEED writes dirty pages out without waiting for them), so
            // the commit's fsync finds little left to write. Advice only: a
            // failure changes nothing but the commit's time.
            let _advice = rustix::fs::fadvise(&data, at, std::num::NonZeroU64::new(len), rustix::fs::Advice::DontNeed);
            let boot = match boot_id() {
                Some(boot) => boot,
                None => {
                    data.sync_data()
                        .map_err(|source| io_error("sync", &data_path, source))?;
                    NO_BOOT_ID
                }
            };
            marker
                .write_all_at(format!("{} {len} {boot}", receipt.id).as_bytes(), 0)
                .map_err(|source| io_error("write", &marker_path, source))?;
            Ok(receipt)
        })
        .await;
        joined(copied)
    }

    /// Commits the upload: `parts` (checked to be `1..=n`, in order) become
    /// the blob, if they add up to `expected_size` bytes.
    pub async fn complete_upload(
        &self,
        path: &BlobPath,
        upload_id: &str,
        parts: &[PartReceipt],
        expected_size: u64,
    ) -> Result<u64, UploadError> {
        let (staging, part_size) = self.staging(path, upload_id).await?;
        // No part is written while this holds.
        let _exclusive = lock_blob_file(&staging, true).await?;
        let data_path = staging.join(DATA_FILE);
        let data = match OpenOptions::new().write(true).open(&data_path).await {
            Ok(data) => data,
            // Committed already (a crash came before the staging went).
            Err(err) if is_absent(&err) => return Err(no_such_upload(path, upload_id)),
            Err(source) => return Err(io_error("open", &data_path, source)),
        };
        let mut lengths = Vec::with_capacity(parts.len());
        for receipt in parts {
            let marker = read_marker(&part_file(&staging, receipt.part)).await?;
            let Some((id, len)) = marker else {
                return Err(UploadError::MissingPart {
                    part: receipt.part,
                    upload_id: upload_id.to_owned(),
                });
            };
            if id != receipt.id {
                return Err(UploadError::StaleReceipt { part: receipt.part });
            }
            lengths.push(len);
        }
        let total: u64 = lengths.iter().sum();
        // Every part but the last is whole, so the parts lie end to end.
        let end_to_end = lengths
            .split_last()
            .is_none_or(|(_, rest)| rest.iter().all(|&len| len == part_size));
        if total != expected_size || !end_to_end {
            return Err(UploadError::SizeMismatch {
                path: path.to_string(),
                expected: expected_size,
                stored: total,
                committed: false,
            });
        }
        // Parts written past the end (of an earlier, longer attempt) go.
        data.set_len(total)
            .await
            .map_err(|source| io_error("truncate", &data_path, source))?;
        data.sync_all()
            .await
            .map_err(|source| io_error("sync", &data_path, source))?;
        drop(data);

        let conflict = |source| UploadError::PathConflict {
            path: path.to_string(),
            source,
        };
        let dir = create_dirs(&self.root, path).await.map_err(|err| match err {
            PutError::Io { source, .. } if is_conflict(&source) => conflict(source),
            err => from_put(err),
        })?;
        let target = self.file_path(path);
        match fs::rename(&data_path, &target).await {
            Ok(()) => {}
            Err(source) if is_conflict(&source) => return Err(conflict(source)),
            // A file system mounted inside the account's directory.
            Err(err) if err.kind() == io::ErrorKind::CrossesDevices => {
                copy_into_place(&data_path, &dir, &target)
                    .await
                    .map_err(|err| match err {
                        UploadError::Io { source, .. } if is_conflict(&source) => conflict(source),
                        err => err,
                    })?;
            }
            Err(source) => return Err(io_error("rename into place", &target, source)),
        }
        sync_dir(&dir).await.map_err(from_put)?;
        if let Err(err) = fs::remove_dir_all(&staging).await {
            // Handled here: the blob is in place; the markers only take space.
            tracing::warn!(path = %staging.display(), error = %err, "could not remove a committed upload's staging");
        }
        Ok(total)
    }

    /// Abandons the upload: its staging directory goes. One that is gone
    /// already is no error.
    pub async fn abort_upload(&self, path: &BlobPath, upload_id: &str) -> Result<(), UploadError> {
        let dir = match self.staging(path, upload_id).await {
            Ok((dir, _)) => dir,
            Err(UploadError::NoSuchUpload { .. }) if !self.uploads_dir().join(upload_id).exists() => return Ok(()),
            Err(UploadError::NoSuchUpload { .. }) if self.uploads_dir().join(upload_id).join(BLOB_FILE).exists() => {
                // Staged by an earlier version: it goes all the same.
                self.uploads_dir().join(upload_id)
            }
            Err(err) => return Err(err),
        };
        match fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_error("remove", &dir, source)),
        }
    }
}

/// A marker's boot field when the system says no boot id.
const NO_BOOT_ID: &str = "-";

/// This boot's id, when the system has one.
fn boot_id() -> Option<&'static str> {
    static BOOT_ID: OnceLock<Option<String>> = OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            std::fs::read_to_string(BOOT_ID_FILE)
                .ok()
                .map(|text| text.trim().to_owned())
                .filter(|id| !id.is_empty() && !id.contains(char::is_whitespace))
        })
        .as_deref()
}

/// The marker file of part `part`: five digits, so the names sort in part order.
fn part_file(dir: &Path, part: u32) -> PathBuf {
    dir.join(format!("{part:05}"))
}

/// A stored part's receipt and length, from its marker; none when the part
/// is not stored, is being written, or was staged before a reboot.
async fn read_marker(path: &Path) -> Result<Option<(String, u64)>, UploadError> {
    let text = match fs::read_to_string(path).await {
        Ok(text) => text,
        Err(err) if is_absent(&err) => return Ok(None),
        Err(source) => return Err(io_error("read", path, source)),
    };
    let mut fields = text.split(' ');
    let (Some(id), Some(len), Some(boot), None) = (fields.next(), fields.next(), fields.next(), fields.next()) else {
        return Ok(None);
    };
    let this_boot = boot_id().unwrap_or(NO_BOOT_ID);
    let durable = boot == this_boot || boot == NO_BOOT_ID;
    Ok(len.parse().ok().filter(|_| durable).map(|len| (id.to_owned(), len)))
}

/// Takes the locks a part writer holds: `blob` shared (commits wait), then
/// the part's marker exclusive (writers of one part take turns); the marker,
/// open for writing.
async fn lock_part(dir: &Path, marker: &Path) -> Result<(std::fs::File, std::fs::File), UploadError> {
    let shared = lock_blob_file(dir, false).await?;
    let marker = marker.to_owned();
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&marker)
            .map_err(|source| io_error("open", &marker, source))?;
        file.lock().map_err(|source| io_error("lock", &marker, source))?;
        Ok(file)
    })
    .await;
    Ok((shared, joined(locked)?))
}

/// `blob`, locked shared or exclusive (a blocking wait, on a blocking thread).
async fn lock_blob_file(dir: &Path, exclusive: bool) -> Result<std::fs::File, UploadError> {
    let path = dir.join(BLOB_FILE);
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|source| io_error("open", &path, source))?;
        let locked = if exclusive { file.lock() } else { file.lock_shared() };
        locked.map_err(|source| io_error("lock", &path, source))?;
        Ok(file)
    })
    .await;
    joined(locked)
}

fn joined<T>(result: Result<Result<T, UploadError>, tokio::task::JoinError>) -> Result<T, UploadError> {
    match result {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(UploadError::Io {
            step: "lock",
            path: PathBuf::new(),
            source: io::Error::other(join),
        }),
    }
}

/// Empties a marker: the part is being written again.
async fn clear_marker(marker: &mut File, path: &Path) -> Result<(), UploadError> {
    marker
        .set_len(0)
        .await
        .map_err(|source| io_error("truncate", path, source))?;
    seek(marker, path, 0).await
}

async fn seek(file: &mut File, path: &Path, offset: u64) -> Result<(), UploadError> {
    file.seek(SeekFrom::Start(offset))
        .await
        .map_err(|source| io_error("seek in", path, source))
        .map(drop)
}

/// How a copy of a part from a handed-over file failed.
enum CopyError {
    /// The file ends `received` bytes into the part.
    Short {
        received: u64,
    },
    Io(io::Error),
}

impl CopyError {
    fn into_upload_error(self, part: u32, len: u64, data_path: &Path) -> UploadError {
        match self {
            Self::Short { received } => UploadError::PartTooShort {
                part,
                expected: len,
                received,
            },
            Self::Io(source) => io_error("copy a handed-over part into", data_path, source),
        }
    }
}

/// Copies `len` bytes of `from` at `from_at` into `to` at `to_at`: in the
/// kernel (`copy_file_range`), or by reads and writes where the file systems
/// cannot (another file system on an older kernel, a special file).
fn copy_range(from: &std::fs::File, from_at: u64, to: &std::fs::File, to_at: u64, len: u64) -> Result<(), CopyError> {
    use std::os::unix::fs::FileExt as _;
    let (mut from_at, mut to_at, mut left) = (from_at, to_at, len);
    while left > 0 {
        let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
        match rustix::fs::copy_file_range(from, Some(&mut from_at), to, Some(&mut to_at), chunk) {
            Ok(0) => return Err(CopyError::Short { received: len - left }),
            Ok(copied) => left -= copied as u64,
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::OPNOTSUPP,
            ) => {
                let mut buffer = vec![0u8; 1 << 20];
                while left > 0 {
                    let want = usize::try_from(left.min(buffer.len() as u64)).unwrap_or(buffer.len());
                    let read = from.read_at(&mut buffer[..want], from_at).map_err(CopyError::Io)?;
                    if read == 0 {
                        return Err(CopyError::Short { received: len - left });
                    }
                    to.write_all_at(&buffer[..read], to_at).map_err(CopyError::Io)?;
                    (from_at, to_at, left) = (from_at + read as u64, to_at + read as u64, left - read as u64);
                }
            }
            Err(err) => return Err(CopyError::Io(err.into())),
        }
    }
    Ok(())
}

/// A stored part's receipt: its MD5 (hex) once it matches the sender's, or,
/// when the sender gave none, a fresh random one.
fn receipt_id(part: u32, digest: Option<PartDigest>, md5: Option<[u8; 16]>) -> Result<String, UploadError> {
    match digest {
        Some(digest) => Ok(upload::hex(&digest.finish(part, md5)?)),
        None => upload::new_upload_id(),
    }
}

/// Writes part `part`'s body (exactly `len` bytes) to `out` (the file at
/// `path`, at its position), not synced; with `hash`, its MD5.
async fn receive<W, S, E>(
    out: &mut W,
    path: &Path,
    part: u32,
    body: S,
    len: u64,
    hash: bool,
) -> Result<Option<PartDigest>, UploadError>
where
    W: AsyncWrite + Unpin,
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Into<BoxError> + Send,
{
    let mut body = pin!(body);
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, out);
    let mut digest = hash.then(PartDigest::default);
    let mut received: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|err| UploadError::Body {
            part,
            source: err.into(),
        })?;
        received = received.saturating_add(chunk.len() as u64);
        if received > len {
            return Err(UploadError::PartTooLong { part, expected: len });
        }
        if let Some(digest) = &mut digest {
            digest.update(&chunk);
        }
        writer
            .write_all(&chunk)
            .await
            .map_err(|source| io_error("write", path, source))?;
    }
    if received != len {
        return Err(UploadError::PartTooShort {
            part,
            expected: len,
            received,
        });
    }
    writer.flush().await.map_err(|source| io_error("write", path, source))?;
    Ok(digest)
}

/// Copies the assembled blob to a temporary file in the blob's directory,
/// fsyncs it and renames it into place (when the rename cannot cross).
async fn copy_into_place(data_path: &Path, dir: &Path, target: &Path) -> Result<(), UploadError> {
    let (mut file, temp) = create_temp(dir).await.map_err(from_put)?;
    let mut data = File::open(data_path)
        .await
        .map_err(|source| io_error("open", data_path, source))?;
    tokio::io::copy(&mut data, &mut file)
        .await
        .map_err(|source| io_error("copy into", &temp.path, source))?;
    file.sync_all()
        .await
        .map_err(|source| io_error("sync", &temp.path, source))?;
    fs::rename(&temp.path, target)
        .await
        .map_err(|source| io_error("rename into place", target, source))?;
    temp.disarm();
    Ok(())
}

/// Writes a small file and fsyncs it.
async fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), UploadError> {
    let mut file = File::create(path)
        .await
        .map_err(|source| io_error("create", path, source))?;
    file.write_all(bytes)
        .await
        .map_err(|source| io_error("write", path, source))?;
    file.sync_all().await.map_err(|source| io_error("sync", path, source))
}

fn no_such_upload(path: &BlobPath, upload_id: &str) -> UploadError {
    UploadError::NoSuchUpload {
        path: path.to_string(),
        upload_id: upload_id.to_owned(),
        source: None,
    }
}

fn io_error(step: &'static str, path: &Path, source: io::Error) -> UploadError {
    UploadError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// The file system errors of the put helpers this module shares, as upload errors.
fn from_put(err: PutError) -> UploadError {
    match err {
        PutError::Io { step, path, source } => UploadError::Io { step, path, source },
        PutError::PathConflict { path, source } => UploadError::PathConflict { path, source },
        // The helpers shared (directories, temporary files) fail only with
        // the two above; anything else is kept whole as an I/O error.
        other => UploadError::Io {
            step: "stage",
            path: PathBuf::new(),
            source: io::Error::other(other),
        },
    }
}
