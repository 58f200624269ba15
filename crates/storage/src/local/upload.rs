//! Multipart uploads of the local backend, staged on disk as S3 stages them:
//! `{root}/.netwatch-tmp-uploads/{upload id}/` holds `blob` (the blob path the
//! upload is for) and one file per part, `00001` … `10000`.
//!
//! The staging directory's name starts with the reserved prefix no
//! [`BlobPath`] segment may have ([`crate::blob_path`]), so no download can
//! read a part. A part is written to a temporary file, fsynced and renamed
//! over its number (a part stored again replaces the earlier one whole);
//! committing concatenates the parts into a temporary file in the blob's
//! directory, fsyncs it and renames it into place, as a put does, then
//! removes the staging directory. The receipt of a part is its MD5 (hex),
//! checked again while the parts are concatenated, so a receipt of a part
//! since stored again is refused as S3 refuses a stale ETag.
//!
//! Not here: sweeping uploads abandoned without an abort (a crashed
//! controller); they only take space.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use super::{LocalStorage, TEMP_NAME_TRIES, WRITE_BUFFER_BYTES, create_dirs, create_temp, is_conflict, sync_dir};
use crate::upload::{self, PartDigest, PartReceipt};
use crate::{BlobPath, BoxError, PutError, UploadError};

/// The directory under the root that holds uploads in progress; it starts
/// with [`crate::blob_path::TEMP_PREFIX`], so no blob path reaches it.
const STAGING_DIR: &str = ".netwatch-tmp-uploads";
/// The file in an upload's directory that names its blob.
const BLOB_FILE: &str = "blob";
/// Size of the chunks parts are read in when concatenated.
const COPY_CHUNK_BYTES: usize = 256 * 1024;

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
        let blob_file = dir.join(BLOB_FILE);
        let mut file = File::create(&blob_file)
            .await
            .map_err(|source| io_error("create", &blob_file, source))?;
        file.write_all(path.as_str().as_bytes())
            .await
            .map_err(|source| io_error("write", &blob_file, source))?;
        file.sync_all()
            .await
            .map_err(|source| io_error("sync", &blob_file, source))?;
        sync_dir(&dir).await.map_err(from_put)?;
        sync_dir(&uploads).await.map_err(from_put)?;
        Ok(upload_id)
    }

    /// The staging directory of upload `upload_id` of `path`, once it is
    /// found to be there and to be for `path`.
    async fn staging(&self, path: &BlobPath, upload_id: &str) -> Result<PathBuf, UploadError> {
        upload::check_upload_id(upload_id)?;
        let dir = self.uploads_dir().join(upload_id);
        let blob_file = dir.join(BLOB_FILE);
        match fs::read(&blob_file).await {
            Ok(named) if named == path.as_str().as_bytes() => Ok(dir),
            Ok(_) => Err(no_such_upload(path, upload_id)),
            Err(err) if matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                Err(no_such_upload(path, upload_id))
            }
            Err(source) => Err(io_error("read", &blob_file, source)),
        }
    }

    /// Stores part `part` (the caller checked the number and `len` against
    /// the part size), streamed to disk.
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
        let dir = self.staging(path, upload_id).await?;
        let (file, temp) = create_temp(&dir).await.map_err(from_put)?;
        let digest = write_part(file, &temp.path, part, body, len).await?;
        let md5 = digest.finish(part, md5)?;
        let target = part_file(&dir, part);
        fs::rename(&temp.path, &target)
            .await
            .map_err(|source| io_error("rename into place", &target, source))?;
        temp.disarm();
        sync_dir(&dir).await.map_err(from_put)?;
        Ok(PartReceipt {
            part,
            id: upload::hex(&md5),
        })
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
        let staging = self.staging(path, upload_id).await?;
        let mut total: u64 = 0;
        for receipt in parts {
            let file = part_file(&staging, receipt.part);
            match fs::metadata(&file).await {
                Ok(metadata) => total += metadata.len(),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Err(UploadError::MissingPart {
                        part: receipt.part,
                        upload_id: upload_id.to_owned(),
                    });
                }
                Err(source) => return Err(io_error("read metadata of", &file, source)),
            }
        }
        if total != expected_size {
            return Err(UploadError::SizeMismatch {
                path: path.to_string(),
                expected: expected_size,
                stored: total,
                committed: false,
            });
        }

        let conflict = |source| UploadError::PathConflict {
            path: path.to_string(),
            source,
        };
        let dir = create_dirs(&self.root, path).await.map_err(|err| match err {
            PutError::Io { source, .. } if is_conflict(&source) => conflict(source),
            err => from_put(err),
        })?;
        let (file, temp) = create_temp(&dir).await.map_err(from_put)?;
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        let mut buffer = vec![0; COPY_CHUNK_BYTES];
        for receipt in parts {
            append_part(
                &mut writer,
                &temp.path,
                &part_file(&staging, receipt.part),
                receipt,
                &mut buffer,
            )
            .await?;
        }
        writer
            .flush()
            .await
            .map_err(|source| io_error("write", &temp.path, source))?;
        writer
            .into_inner()
            .sync_all()
            .await
            .map_err(|source| io_error("sync", &temp.path, source))?;
        let target = self.file_path(path);
        match fs::rename(&temp.path, &target).await {
            Ok(()) => temp.disarm(),
            Err(source) if is_conflict(&source) => return Err(conflict(source)),
            Err(source) => return Err(io_error("rename into place", &target, source)),
        }
        sync_dir(&dir).await.map_err(from_put)?;
        if let Err(err) = fs::remove_dir_all(&staging).await {
            // Handled here: the blob is in place; the parts only take space.
            tracing::warn!(path = %staging.display(), error = %err, "could not remove a committed upload's parts");
        }
        Ok(total)
    }

    /// Abandons the upload: its staging directory goes. One that is gone
    /// already is no error.
    pub async fn abort_upload(&self, path: &BlobPath, upload_id: &str) -> Result<(), UploadError> {
        let dir = match self.staging(path, upload_id).await {
            Ok(dir) => dir,
            Err(UploadError::NoSuchUpload { .. }) if !self.uploads_dir().join(upload_id).exists() => return Ok(()),
            Err(err) => return Err(err),
        };
        match fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_error("remove", &dir, source)),
        }
    }
}

/// The file of part `part`: five digits, so the names sort in part order.
fn part_file(dir: &Path, part: u32) -> PathBuf {
    dir.join(format!("{part:05}"))
}

/// Writes part `part`'s body (exactly `len` bytes) to `file`, fsynced; its MD5 so far.
async fn write_part<S, E>(file: File, path: &Path, part: u32, body: S, len: u64) -> Result<PartDigest, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Into<BoxError> + Send,
{
    let mut body = pin!(body);
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
    let mut digest = PartDigest::default();
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
        digest.update(&chunk);
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
    writer
        .into_inner()
        .sync_all()
        .await
        .map_err(|source| io_error("sync", path, source))?;
    Ok(digest)
}

/// Appends the part in `part_path` to `writer` (writing `target`), checking
/// that it is the part `receipt` was given for.
async fn append_part(
    writer: &mut BufWriter<File>,
    target: &Path,
    part_path: &Path,
    receipt: &PartReceipt,
    buffer: &mut [u8],
) -> Result<(), UploadError> {
    let mut file = OpenOptions::new()
        .read(true)
        .open(part_path)
        .await
        .map_err(|source| io_error("open", part_path, source))?;
    let mut digest = PartDigest::default();
    loop {
        let n = file
            .read(buffer)
            .await
            .map_err(|source| io_error("read", part_path, source))?;
        if n == 0 {
            break;
        }
        digest.update(&buffer[..n]);
        writer
            .write_all(&buffer[..n])
            .await
            .map_err(|source| io_error("write", target, source))?;
    }
    let md5 = digest.finish(receipt.part, None)?;
    if upload::hex(&md5) != receipt.id {
        return Err(UploadError::StaleReceipt { part: receipt.part });
    }
    Ok(())
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
