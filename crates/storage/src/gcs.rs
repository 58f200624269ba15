//! The Google Cloud Storage backend: [`GcsStorage`], one bucket of GCS (or
//! of fake-gcs-server, through `endpoint`) spoken to through GCS's JSON API
//! by a small client of our own (`gcs/client.rs`). object_store gives only
//! the credentials (a service account's key, gcloud's application default
//! credentials, or a Google Cloud VM's metadata server): its GCS uploads go
//! through the XML API, which fake-gcs-server lacks, so the tests could not
//! run them against a real server.
//!
//! Blobs sit at their whole path in the bucket, as in S3.
//!
//! # Uploads: parts as objects, composed
//!
//! Each part of an upload is an object of its own,
//! `netwatch-uploads/{upload id}/{part:05}` at the bucket's root, outside
//! every capture path. The commit composes the parts, in order, into the
//! blob (GCS's `compose`, atomic: readers see the previous blob or the whole
//! new one), then deletes them. Compose takes at most 32 sources, so with
//! more parts the fewest needed at the end are first composed, by up to 32,
//! into intermediate objects of the same upload (`…/compose-{level}-{n}`),
//! as a tree, the last compose writing the blob (33 parts: the last two into
//! one, then 32 into the blob). Parts need no minimum size and no alignment.
//!
//! A part reaches storage either way the other backends offer:
//! - **granted** ([`crate::Backend::grant_parts`]): the controller opens a
//!   resumable-upload session for the part's object with the service account
//!   and grants its session URI. That is GCS's own way of handing one upload
//!   to another party: the URI lets its holder write that one object, with
//!   no other credential, and the service account's key or token never
//!   leaves the controller. The uploader PUTs the part's bytes whole
//!   (`Content-Length`, no `Content-Range`), which finishes the object; the
//!   grant's receipt is the object's name. A part granted again gets a new
//!   session, and writing it again replaces the object: that is how a part
//!   whose receipt was lost (an agent crash) is sent again. Opening sessions
//!   is a request each ([`SESSIONS_IN_FLIGHT`] at once).
//! - **relayed** ([`crate::Backend::put_part`]): the controller writes the
//!   part's object itself, in one media upload, once its MD5 is checked.
//!
//! At the commit the upload's objects are listed: a part named by a receipt
//! that is not there is [`UploadError::NoSuchUpload`] (the uploader begins
//! again: the upload was committed, aborted, or its parts swept), and parts
//! that do not add up to the expected size are refused before anything is
//! composed ([`UploadError::SizeMismatch`] with `committed: false`); the
//! composed blob's size is checked again after.
//!
//! Why not the alternatives:
//! - **Signed URLs** (V4, the XML API): fake-gcs-server does not check their
//!   signatures, so no test could tell a good grant from a bad one; and
//!   signing needs the service account's private key, which a VM's metadata
//!   identity does not have (it would need the IAM `signBlob` API and that
//!   permission).
//! - **One resumable session per upload, parts as its chunks**: a session
//!   takes its chunks in order, one at a time, each a multiple of 256 KiB but
//!   the last; uploaders send parts side by side, in any order, and again
//!   after a crash. (fake-gcs-server's chunked resume is broken too: a chunk
//!   sent again is appended twice.)
//!
//! Caveats, for the operator:
//! - A session URI is valid for a week whatever the grant's ttl, and is
//!   honoured until then; it writes only its part's temporary object.
//! - Temporaries of uploads never committed nor aborted (an agent gone for
//!   good, a crash between compose and delete) stay under
//!   `netwatch-uploads/`: give the bucket a lifecycle rule deleting objects
//!   with that prefix after a few days (older than any upload can take),
//!   e.g. `{"rule":[{"action":{"type":"Delete"},"condition":{"age":7,"matchesPrefix":["netwatch-uploads/"]}}]}`.
//! - A granted part's MD5 is not checked by netwatch: the controller opens
//!   the session before the part's bytes exist, so it cannot name their
//!   `md5Hash`, and the agent's `Content-MD5` header is not part of the JSON
//!   API's documented contract for session PUTs (fake-gcs-server ignores it).
//!   TLS guards the way; the commit checks the parts' sizes. Relayed parts
//!   are checked by the controller.
//!
//! # Reads and puts
//!
//! A read first reads the blob's metadata (size, generation), then downloads
//! exactly the bytes [`ByteRange::resolve`] selects of that generation
//! (`generation=`): a blob replaced in between fails the read (worth
//! retrying) instead of mixing versions. A put of a body within one part is
//! one media upload (the object appears when complete); a longer body is
//! cut into parts written as temporaries ([`PARTS_IN_FLIGHT`] at once) and
//! composed, so a failed or dropped put leaves nothing at the blob's path,
//! and its temporaries are deleted.

mod client;
pub(crate) mod key;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt, stream};
use object_store::gcp::GoogleCloudStorageBuilder;
use tokio::task::JoinSet;

pub use client::DEFAULT_ENDPOINT;
pub use key::{GcsConfigProblem, KeySource};

use crate::object::{self, CheckedBody};
use crate::upload::{self, PartGrant, PartReceipt};
use crate::{
    Blob, BlobPath, BoxError, ByteRange, ClientError, Endpoint, GcsRequestError, OpenError, ProbeError, PutError,
    Storage, UploadError,
};
use client::{Client, Object};
use key::LoadedKey;

/// The folder, at the bucket's root, of every upload's temporary objects.
pub const UPLOAD_PREFIX: &str = "netwatch-uploads";
/// The content type of a committed upload and of its parts: uploads are capture files.
pub const PCAP_CONTENT_TYPE: &str = "application/vnd.tcpdump.pcap";
/// The content type of a blob stored by [`Storage::put`], which may be anything.
const PUT_CONTENT_TYPE: &str = "application/octet-stream";
/// Sources of one compose: GCS's limit.
pub const MAX_COMPOSE_SOURCES: usize = 32;
/// Upload sessions opened at once for one grant request.
pub const SESSIONS_IN_FLIGHT: usize = 8;
/// Composes or deletes of one commit running at once.
const REQUESTS_IN_FLIGHT: usize = 8;
/// Parts of one put uploading at once (as for the other object stores).
pub const PARTS_IN_FLIGHT: usize = object::PARTS_IN_FLIGHT;

/// A storage account kept in a GCS bucket.
#[derive(Clone)]
pub struct GcsStorage {
    client: Arc<Client>,
    part_size: u64,
}

impl fmt::Debug for GcsStorage {
    /// The endpoint and the bucket, no credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsStorage")
            .field("endpoint", &self.client.endpoint())
            .field("bucket", &self.client.bucket())
            .field("part_size", &self.part_size)
            .finish()
    }
}

/// A client that could not be set up.
pub(crate) enum BuildError {
    /// object_store's credentials (an application default credentials file it cannot read).
    Credentials(object_store::Error),
    /// The HTTP client.
    Http(reqwest::Error),
}

impl GcsStorage {
    /// The backend of bucket `bucket`: requests authorized by `key`, else by
    /// the machine's identity, sent to `endpoint`, else to the key's
    /// `gcs_base_url`, else to [`DEFAULT_ENDPOINT`]. No request is made.
    pub(crate) fn new(
        bucket: &str,
        key: Option<LoadedKey>,
        endpoint: Option<&Endpoint>,
        part_size: u64,
    ) -> Result<Self, BuildError> {
        let endpoint = endpoint
            .or(key.as_ref().and_then(|key| key.base_url.as_ref()))
            .map_or(DEFAULT_ENDPOINT, Endpoint::as_str);
        let mut builder = GoogleCloudStorageBuilder::new()
            .with_bucket_name(bucket)
            .with_retry(object::retry_config())
            .with_client_options(object::client_options(endpoint.starts_with("http:")));
        if let Some(key) = &key {
            builder = builder.with_service_account_key(key.json.expose());
        }
        let credentials = Arc::clone(builder.build().map_err(BuildError::Credentials)?.credentials());
        let client = Client::new(endpoint, bucket, credentials).map_err(BuildError::Http)?;
        Ok(Self {
            client: Arc::new(client),
            part_size,
        })
    }

    /// Bytes per part of uploads.
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        self.client.bucket()
    }

    /// The JSON API's base URL requests go to.
    pub fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    /// The object name of the blob at `path`: its whole path.
    pub fn key<'a>(&self, path: &'a BlobPath) -> &'a str {
        path.as_str()
    }

    /// Reads the bucket's metadata with the account's credentials: the
    /// endpoint answers, the bucket exists, the credentials may use it.
    pub async fn probe(&self) -> Result<(), ProbeError> {
        let Err(source) = self.client.bucket_metadata().await else {
            return Ok(());
        };
        let bucket = self.bucket().to_owned();
        Err(match source {
            GcsRequestError::Status { status: 404, .. } => ProbeError::NoSuchBucket {
                bucket,
                endpoint: self.endpoint().to_owned(),
            },
            GcsRequestError::Status { status: 401, .. } => ProbeError::Unauthenticated { bucket, source },
            GcsRequestError::Status { status: 403, .. } => ProbeError::Forbidden { bucket, source },
            GcsRequestError::Send(_) => ProbeError::Unreachable {
                endpoint: self.endpoint().to_owned(),
                source,
            },
            GcsRequestError::Credentials(_) => ProbeError::Credentials { bucket, source },
            source => ProbeError::Other { bucket, source },
        })
    }

    /// A fresh upload id, naming the upload's temporaries; no request.
    pub(crate) fn begin_upload(&self) -> Result<String, UploadError> {
        upload::new_upload_id()
    }

    pub(crate) async fn grant_parts(
        &self,
        path: &BlobPath,
        upload_id: &str,
        parts: &[u32],
    ) -> Result<Option<Vec<PartGrant>>, UploadError> {
        upload::check_upload_id(upload_id)?;
        let grants = stream::iter(parts.iter().copied())
            .map(|part| async move {
                let name = part_object(upload_id, part);
                let url = self
                    .client
                    .open_session(&name, PCAP_CONTENT_TYPE)
                    .await
                    .map_err(|err| ClientError::gcs(format!("open an upload session for part {part} of"), path, err))?;
                Ok::<_, UploadError>(PartGrant {
                    part,
                    url,
                    headers: Vec::new(),
                    receipt: Some(name),
                })
            })
            .buffered(SESSIONS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(Some(grants))
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
        upload::check_upload_id(upload_id)?;
        let chunks = upload::read_part(part, body, len, md5).await?;
        let name = part_object(upload_id, part);
        self.client
            .upload(&name, PCAP_CONTENT_TYPE, &chunks)
            .await
            .map_err(|err| ClientError::gcs(format!("upload part {part} of"), path, err))?;
        Ok(PartReceipt { part, id: name })
    }

    pub(crate) async fn complete_upload(
        &self,
        path: &BlobPath,
        upload_id: &str,
        parts: Vec<PartReceipt>,
        expected_size: u64,
    ) -> Result<u64, UploadError> {
        upload::check_upload_id(upload_id)?;
        let names: Vec<String> = parts
            .iter()
            .map(|receipt| part_object(upload_id, receipt.part))
            .collect();
        if let Some(receipt) = parts
            .iter()
            .zip(&names)
            .find_map(|(r, name)| (r.id != *name).then_some(r))
        {
            return Err(UploadError::ForeignReceipt {
                part: receipt.part,
                upload_id: upload_id.to_owned(),
            });
        }
        let no_such_upload = |source| UploadError::NoSuchUpload {
            path: path.to_string(),
            upload_id: upload_id.to_owned(),
            source,
        };
        let prefix = upload_prefix(upload_id);
        let stored = self
            .client
            .list(&prefix)
            .await
            .map_err(|err| ClientError::gcs(format!("list the parts of upload {upload_id} of"), path, err))?;
        let sizes: HashMap<&str, u64> = stored
            .iter()
            .map(|object| (object.name.as_str(), object.size))
            .collect();
        let mut total: u64 = 0;
        for name in &names {
            let Some(size) = sizes.get(name.as_str()) else {
                return Err(no_such_upload(None));
            };
            total = total.saturating_add(*size);
        }
        if total != expected_size {
            return Err(UploadError::SizeMismatch {
                path: path.to_string(),
                expected: expected_size,
                stored: total,
                committed: false,
            });
        }

        let destination = self.key(path);
        let committed = if names.is_empty() {
            // No part: an empty blob (compose needs a source).
            self.client
                .upload(destination, PCAP_CONTENT_TYPE, &[])
                .await
                .map(|object| (object, Vec::new()))
        } else {
            compose_all(&self.client, &prefix, names, destination, PCAP_CONTENT_TYPE).await
        };
        let (object, intermediates) = committed.map_err(|err| {
            let err = ClientError::gcs(format!("compose the parts of upload {upload_id} into"), path, err);
            // A part deleted since the listing (an abort, a commit under way).
            if err.is_not_found() {
                no_such_upload(Some(err))
            } else {
                err.into()
            }
        })?;

        let temporaries = stored.into_iter().map(|object| object.name).chain(intermediates);
        for (name, err) in delete_all(&self.client, temporaries).await {
            // The blob is committed: a temporary left is only space, until
            // the bucket's lifecycle rule (module docs) or an abort removes it.
            tracing::warn!(blob = %path, object = name, error = %err, "could not delete a part of a committed upload");
        }
        if object.size != expected_size {
            return Err(UploadError::SizeMismatch {
                path: path.to_string(),
                expected: expected_size,
                stored: object.size,
                committed: true,
            });
        }
        Ok(object.size)
    }

    /// Deletes the upload's temporaries; none there is no error.
    pub(crate) async fn abort_upload(&self, path: &BlobPath, upload_id: &str) -> Result<(), UploadError> {
        upload::check_upload_id(upload_id)?;
        let step = || format!("abort upload {upload_id} of");
        let stored = self
            .client
            .list(&upload_prefix(upload_id))
            .await
            .map_err(|err| ClientError::gcs(step(), path, err))?;
        let failures = delete_all(&self.client, stored.into_iter().map(|object| object.name)).await;
        match failures.into_iter().next() {
            Some((_, err)) => Err(ClientError::gcs(step(), path, err).into()),
            None => Ok(()),
        }
    }

    /// The blob's metadata; `None` when there is none.
    async fn metadata(&self, path: &BlobPath) -> Result<Option<Object>, ClientError> {
        self.client
            .metadata(self.key(path))
            .await
            .map_err(|err| ClientError::gcs("read the metadata of", path, err))
    }
}

/// The temporary object of part `part` of upload `upload_id`.
fn part_object(upload_id: &str, part: u32) -> String {
    format!("{UPLOAD_PREFIX}/{upload_id}/{part:05}")
}

/// The folder of upload `upload_id`'s temporaries, with its trailing `/`.
fn upload_prefix(upload_id: &str) -> String {
    format!("{UPLOAD_PREFIX}/{upload_id}/")
}

/// Composes `sources` in order into `destination`. Over
/// [`MAX_COMPOSE_SOURCES`] sources, the fewest needed at the end are first
/// composed by up to that many into intermediates under `prefix`
/// ([`merged_tail`]), side by side, and again while there are still too
/// many: a tree whose last compose writes the blob. As few bytes as can be go
/// through intermediates, so a server whose compose copies (fake-gcs-server)
/// copies a file of 33 parts once plus its last two parts, not twice. The
/// blob, and the intermediates made.
async fn compose_all(
    client: &Client,
    prefix: &str,
    mut sources: Vec<String>,
    destination: &str,
    content_type: &str,
) -> Result<(Object, Vec<String>), GcsRequestError> {
    let mut intermediates = Vec::new();
    let mut level = 0;
    while sources.len() > MAX_COMPOSE_SOURCES {
        let tail = sources.split_off(sources.len() - merged_tail(sources.len()));
        let groups: Vec<(usize, Vec<String>)> = tail
            .chunks(MAX_COMPOSE_SOURCES)
            .map(<[String]>::to_vec)
            .enumerate()
            .collect();
        let composed: Vec<String> = stream::iter(groups)
            .map(|(index, group)| async move {
                if let [one] = group.as_slice() {
                    return Ok((one.clone(), false));
                }
                let name = format!("{prefix}compose-{level}-{index:05}");
                client.compose(&group, &name, content_type).await?;
                Ok::<_, GcsRequestError>((name, true))
            })
            .buffered(REQUESTS_IN_FLIGHT)
            .map_ok(|(name, made)| {
                if made {
                    intermediates.push(name.clone());
                }
                name
            })
            .try_collect()
            .await?;
        sources.extend(composed);
        level += 1;
    }
    let object = client.compose(&sources, destination, content_type).await?;
    Ok((object, intermediates))
}

/// Of `count` sources (more than [`MAX_COMPOSE_SOURCES`]), how many at the
/// end to compose into intermediates, by up to that many each, so that what
/// is left is at most that many sources, or as near as one level gets. A
/// group of `k` takes the count down by `k - 1`: `g` groups take `needed + g`
/// sources, where `g = ⌈needed / (MAX - 1)⌉`.
fn merged_tail(count: usize) -> usize {
    let needed = count.saturating_sub(MAX_COMPOSE_SOURCES);
    let groups = needed.div_ceil(MAX_COMPOSE_SOURCES - 1);
    (needed + groups).min(count)
}

/// Deletes the objects `names`, [`REQUESTS_IN_FLIGHT`] at once; those that
/// could not be deleted, with why.
async fn delete_all(client: &Client, names: impl Iterator<Item = String>) -> Vec<(String, GcsRequestError)> {
    stream::iter(names)
        .map(|name| async move {
            match client.delete(&name).await {
                Ok(()) => None,
                Err(err) => Some((name, err)),
            }
        })
        .buffer_unordered(REQUESTS_IN_FLIGHT)
        .filter_map(|failure| async move { failure })
        .collect()
        .await
}

/// Deletes every temporary of upload `upload_id`, logging what fails.
async fn delete_upload(client: &Client, upload_id: &str) {
    let prefix = upload_prefix(upload_id);
    let stored = match client.list(&prefix).await {
        Ok(stored) => stored,
        Err(err) => {
            tracing::warn!(prefix, error = %err, "could not list the parts of a failed put to delete them");
            return;
        }
    };
    for (name, err) in delete_all(client, stored.into_iter().map(|object| object.name)).await {
        tracing::warn!(object = name, error = %err, "could not delete a part of a failed put");
    }
}

/// The parts of a put longer than a part, uploading as temporaries of a
/// random upload id: deleted when the put fails ([`PartsPut::fail`]) or is
/// dropped (from `Drop`, in a task), composed into the blob by [`PartsPut::finish`].
struct PartsPut {
    client: Arc<Client>,
    upload_id: String,
    /// The blob, for errors.
    path: BlobPath,
    /// Part uploads under way.
    tasks: JoinSet<Result<(), (u32, GcsRequestError)>>,
    /// The parts' objects, in order.
    names: Vec<String>,
    /// Finished or failed: nothing left for `Drop`.
    settled: bool,
}

impl PartsPut {
    fn new(client: Arc<Client>, path: &BlobPath) -> Result<Self, PutError> {
        Ok(Self {
            client,
            upload_id: upload::random_id().map_err(PutError::Random)?,
            path: path.clone(),
            tasks: JoinSet::new(),
            names: Vec::new(),
            settled: false,
        })
    }

    /// Starts uploading the next part, once fewer than [`PARTS_IN_FLIGHT`] are.
    async fn add(&mut self, chunks: Vec<Bytes>) -> Result<(), PutError> {
        while self.tasks.len() >= PARTS_IN_FLIGHT {
            self.join_one().await?;
        }
        let part = u32::try_from(self.names.len() + 1).unwrap_or(u32::MAX);
        let name = part_object(&self.upload_id, part);
        self.names.push(name.clone());
        let client = Arc::clone(&self.client);
        self.tasks.spawn(async move {
            client
                .upload(&name, PUT_CONTENT_TYPE, &chunks)
                .await
                .map(drop)
                .map_err(|err| (part, err))
        });
        Ok(())
    }

    /// Waits for one part upload to end; its failure.
    async fn join_one(&mut self) -> Result<(), PutError> {
        match self.tasks.join_next().await {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err((part, err)))) => {
                Err(ClientError::gcs(format!("store part {part} of"), &self.path, err).into())
            }
            Some(Err(join_error)) => std::panic::resume_unwind(join_error.into_panic()),
        }
    }

    /// Waits for the parts, composes them into `destination`, deletes them.
    async fn finish(mut self, destination: &str) -> Result<(), PutError> {
        while !self.tasks.is_empty() {
            if let Err(err) = self.join_one().await {
                return Err(self.fail(err).await);
            }
        }
        let prefix = upload_prefix(&self.upload_id);
        let names = std::mem::take(&mut self.names);
        let composed = compose_all(&self.client, &prefix, names.clone(), destination, PUT_CONTENT_TYPE).await;
        let intermediates = match composed {
            Ok((_, intermediates)) => intermediates,
            Err(err) => {
                let err = ClientError::gcs("compose the parts of", &self.path, err).into();
                return Err(self.fail(err).await);
            }
        };
        self.settled = true;
        for (name, err) in delete_all(&self.client, names.into_iter().chain(intermediates)).await {
            tracing::warn!(blob = %self.path, object = name, error = %err, "could not delete a part of a stored put");
        }
        Ok(())
    }

    /// Stops the part uploads and deletes what they stored; returns `err`, the reason.
    async fn fail(mut self, err: PutError) -> PutError {
        self.settled = true;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        delete_upload(&self.client, &self.upload_id).await;
        err
    }
}

impl Drop for PartsPut {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // A dropped put cannot await its cleanup: a short task stops the
        // part uploads and deletes what they stored (bounded by the client's
        // retries). Without a runtime (the runtime itself is going away) the
        // temporaries stay for the bucket's lifecycle rule. Not tracked
        // (STYLE 23): nothing waits for it and it holds nothing.
        let mut tasks = std::mem::take(&mut self.tasks);
        tasks.abort_all();
        let client = Arc::clone(&self.client);
        let upload_id = std::mem::take(&mut self.upload_id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                while tasks.join_next().await.is_some() {}
                delete_upload(&client, &upload_id).await;
            });
        }
    }
}

impl Storage for GcsStorage {
    async fn put<S, E>(&self, path: &BlobPath, body: S, expected_len: Option<u64>) -> Result<u64, PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<BoxError> + Send,
    {
        let part_size = usize::try_from(self.part_size)
            .expect("the part size is at most MAX_PART_SIZE (256 MiB), which fits a usize");
        let mut body = CheckedBody {
            body: pin!(body),
            received: 0,
            expected_len,
        };
        let destination = self.key(path);

        // The first part's worth: a body that ends within it goes in one request.
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
                    self.client
                        .upload(destination, PUT_CONTENT_TYPE, &first)
                        .await
                        .map_err(|err| ClientError::gcs("store", path, err))?;
                    return Ok(body.received);
                }
            }
        }

        let mut parts = PartsPut::new(Arc::clone(&self.client), path)?;
        if let Err(err) = parts.add(first).await {
            return Err(parts.fail(err).await);
        }
        let mut part = Vec::new();
        let mut part_len = 0;
        loop {
            match body.next().await {
                Ok(Some(chunk)) => {
                    part_len += chunk.len();
                    part.push(chunk);
                    if part_len >= part_size {
                        part_len = 0;
                        if let Err(err) = parts.add(std::mem::take(&mut part)).await {
                            return Err(parts.fail(err).await);
                        }
                    }
                }
                Ok(None) => break,
                Err(err) => return Err(parts.fail(err).await),
            }
        }
        if let Err(err) = body.check_len() {
            return Err(parts.fail(err).await);
        }
        if part_len > 0
            && let Err(err) = parts.add(part).await
        {
            return Err(parts.fail(err).await);
        }
        parts.finish(destination).await?;
        Ok(body.received)
    }

    async fn open(&self, path: &BlobPath, range: Option<ByteRange>) -> Result<Blob, OpenError> {
        let meta = self
            .metadata(path)
            .await?
            .ok_or_else(|| OpenError::NotFound { path: path.to_string() })?;
        let selected = match range {
            Some(range) => Some(
                range
                    .resolve(meta.size)
                    .ok_or(OpenError::RangeNotSatisfiable { size: meta.size })?,
            ),
            None => None,
        };
        let bytes = selected.clone().unwrap_or(0..meta.size);
        if bytes.is_empty() {
            // An empty blob, read whole: nothing to download.
            return Ok(Blob {
                size: meta.size,
                range: bytes,
                body: Box::pin(stream::empty()),
            });
        }
        let response = self
            .client
            .download(self.key(path), &meta.generation, selected)
            .await
            .map_err(|err| ClientError::gcs("read", path, err))?;
        let want = bytes.end - bytes.start;
        if let Some(got) = response.content_length().filter(|&got| got != want) {
            let err = GcsRequestError::Answer(format!("{got} bytes came where {want} were asked for"));
            return Err(ClientError::gcs("read", path, err).into());
        }
        let body = response
            .bytes_stream()
            .map_err(|err| io::Error::other(err.without_url()));
        Ok(Blob {
            size: meta.size,
            range: bytes,
            body: Box::pin(body),
        })
    }

    async fn size(&self, path: &BlobPath) -> Result<Option<u64>, OpenError> {
        Ok(self.metadata(path).await?.map(|meta| meta.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composes_only_as_many_parts_into_intermediates_as_needed() {
        // What one level leaves: the untouched sources and one per group.
        let left = |count: usize| {
            let tail = merged_tail(count);
            count - tail + tail.div_ceil(MAX_COMPOSE_SOURCES)
        };
        assert_eq!(merged_tail(33), 2);
        assert_eq!(merged_tail(34), 3);
        assert_eq!(merged_tail(63), 32);
        assert_eq!(merged_tail(64), 34);
        assert_eq!(merged_tail(129), 101);
        assert_eq!(merged_tail(1024), 1024);
        for count in 33..=1024 {
            let tail = merged_tail(count);
            assert_eq!(left(count), MAX_COMPOSE_SOURCES, "{count} sources");
            // One source fewer in the tail would leave too many.
            let fewer = count - (tail - 1) + (tail - 1).div_ceil(MAX_COMPOSE_SOURCES);
            assert!(fewer > MAX_COMPOSE_SOURCES, "{count} sources: {tail} is not the least");
        }
        // Beyond one level's reach everything is grouped, and the count falls.
        assert_eq!(merged_tail(2000), 2000);
        assert_eq!(left(2000), 63);
        assert!(left(10_000) < 10_000 / 31);
    }

    #[test]
    fn temporaries_sit_under_the_upload_prefix() {
        assert_eq!(
            part_object("0123456789abcdef01234567", 7),
            "netwatch-uploads/0123456789abcdef01234567/00007"
        );
        assert_eq!(
            part_object("0123456789abcdef01234567", upload::MAX_PARTS),
            "netwatch-uploads/0123456789abcdef01234567/10000"
        );
        assert!(part_object("0123456789abcdef01234567", 1).starts_with(&upload_prefix("0123456789abcdef01234567")));
    }
}
