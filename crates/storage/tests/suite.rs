//! The tests every backend passes, each a function of a [`Backend`]; the
//! backends' modules run them.

use std::convert::Infallible;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use md5::{Digest as _, Md5};
use netwatch_storage::{
    Backend, BlobPath, ByteRange, OpenError, PartGrant, PartReceipt, PutError, Storage, UploadError,
};

/// Bytes of a body of 12 MiB: more than two parts of [`crate::PART_SIZE`].
pub const BIG: usize = 12 * 1024 * 1024;

/// The blob path a test writes: a capture's, under Azure's container.
pub fn capture_path(name: &str) -> BlobPath {
    BlobPath::parse(&format!(
        "network-watcher-logs/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/\
         providers/microsoft.compute/virtualmachines/vm1/2025/01/31/{name}.cap"
    ))
    .unwrap()
}

/// `len` pseudo-random bytes (xorshift), different for each `seed`.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// `data` as a body of 64 KiB chunks, as a network hands it over.
pub fn body(data: &[u8]) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + use<> {
    let chunks: Vec<_> = data.chunks(64 * 1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    stream::iter(chunks)
}

pub fn md5(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// The blob's bytes (of `range`), and its size.
pub async fn read(backend: &Backend, path: &BlobPath, range: Option<ByteRange>) -> (u64, Vec<u8>) {
    let mut blob = backend.open(path, range).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = blob.body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(out.len() as u64, blob.range.end - blob.range.start, "{range:?}");
    (blob.size, out)
}

/// Parts of `data` of the backend's part size, numbered from 1.
pub fn parts(backend: &Backend, data: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let size = usize::try_from(backend.part_size()).unwrap();
    (1..).zip(data.chunks(size).map(<[u8]>::to_vec)).collect()
}

/// PUTs `data` to a grant as an uploader does (with Content-MD5); the
/// receipt. Panics unless the storage server takes it.
pub async fn put_granted(grant: &PartGrant, data: &[u8]) -> PartReceipt {
    let response = send_granted(grant, data, md5(data)).await;
    let status = response.status();
    let etag = response.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
    assert!(
        status.is_success(),
        "PUT part {}: {status}: {}",
        grant.part,
        response.text().await.unwrap()
    );
    let id = grant
        .receipt
        .clone()
        .unwrap_or_else(|| etag.expect("an S3 part's answer has an ETag"));
    PartReceipt { part: grant.part, id }
}

/// PUTs `data` to a grant with Content-MD5 `md5` and the headers the agent
/// sends (`Content-Type` of a pcap file, crates/agent/src/upload.rs); the answer.
pub async fn send_granted(grant: &PartGrant, data: &[u8], md5: [u8; 16]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .put(&grant.url)
        .header("Content-MD5", base64::engine::general_purpose::STANDARD.encode(md5))
        .header("Content-Type", "application/vnd.tcpdump.pcap")
        .body(data.to_vec());
    for (name, value) in &grant.headers {
        request = request.header(name, value);
    }
    request.send().await.unwrap()
}

/// Put, size, read whole and in ranges, of a blob of several parts, an
/// empty one and a missing one; wrong lengths leave nothing.
pub async fn put_and_read(backend: &Backend) {
    let path = capture_path("round-trip");
    let data = bytes(BIG, 1);
    assert_eq!(
        backend.put(&path, body(&data), Some(BIG as u64)).await.unwrap(),
        BIG as u64
    );
    assert_eq!(backend.size(&path).await.unwrap(), Some(BIG as u64));
    assert!(
        read(backend, &path, None).await == (BIG as u64, data.clone()),
        "whole blob differs"
    );
    let last = BIG as u64 - 1;
    let rows = [
        (ByteRange::Bounded { first: 0, last: 0 }, 0..1),
        (
            ByteRange::Bounded {
                first: 5_000_000,
                last: 6_000_000,
            },
            5_000_000..6_000_001,
        ),
        (
            ByteRange::Bounded {
                first: last,
                last: last + 100,
            },
            BIG - 1..BIG,
        ),
        (ByteRange::From(BIG as u64 - 10), BIG - 10..BIG),
        (ByteRange::Suffix(7), BIG - 7..BIG),
        (ByteRange::Suffix(BIG as u64 + 5), 0..BIG),
    ];
    for (range, expected) in rows {
        let (size, got) = read(backend, &path, Some(range)).await;
        assert_eq!(size, BIG as u64);
        assert!(got == data[expected.clone()], "{range:?}: wrong bytes");
    }
    for nothing in [
        ByteRange::From(BIG as u64),
        ByteRange::Bounded { first: 5, last: 4 },
        ByteRange::Suffix(0),
    ] {
        let err = backend.open(&path, Some(nothing)).await.unwrap_err();
        assert!(
            matches!(err, OpenError::RangeNotSatisfiable { size } if size == BIG as u64),
            "{nothing:?}: {err:?}"
        );
    }

    // A small blob goes in one request; replacing keeps one blob.
    backend.put(&path, body(b"small"), None).await.unwrap();
    assert_eq!(read(backend, &path, None).await, (5, b"small".to_vec()));

    let empty = capture_path("empty");
    assert_eq!(backend.put(&empty, body(b""), Some(0)).await.unwrap(), 0);
    assert_eq!(read(backend, &empty, None).await, (0, Vec::new()));
    assert!(matches!(
        backend.open(&empty, Some(ByteRange::Suffix(1))).await,
        Err(OpenError::RangeNotSatisfiable { size: 0 })
    ));

    let missing = capture_path("missing");
    assert_eq!(backend.size(&missing).await.unwrap(), None);
    for range in [None, Some(ByteRange::From(0))] {
        let err = backend.open(&missing, range).await.unwrap_err();
        assert!(
            matches!(err, OpenError::NotFound { .. }) && err.is_permanent(),
            "{err:?}"
        );
    }

    // Wrong lengths, in the first part and past it: nothing is stored.
    let short = capture_path("short");
    let err = backend
        .put(&short, body(&data), Some(BIG as u64 + 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PutError::TooShort { .. }) && err.is_permanent(),
        "{err:?}"
    );
    let err = backend.put(&short, body(&data), Some(PART_SIZE + 1)).await.unwrap_err();
    assert!(matches!(err, PutError::TooLong { .. }), "{err:?}");
    let err = backend.put(&short, body(b"abc"), Some(2)).await.unwrap_err();
    assert!(matches!(err, PutError::TooLong { .. }), "{err:?}");
    assert_eq!(backend.size(&short).await.unwrap(), None);
}

const PART_SIZE: u64 = crate::PART_SIZE;

/// begin → grant every part → PUT them as an uploader would → complete.
pub async fn granted_upload(backend: &Backend) {
    let path = capture_path("granted");
    let data = bytes(BIG, 2);
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let parts = parts(backend, &data);
    let numbers: Vec<u32> = parts.iter().map(|(n, _)| *n).collect();
    let grants = backend
        .grant_parts(&path, &upload_id, &numbers, Duration::from_secs(300))
        .await
        .unwrap()
        .expect("this backend grants direct uploads");
    assert_eq!(grants.iter().map(|g| g.part).collect::<Vec<_>>(), numbers);
    let mut receipts = Vec::new();
    // Out of order: parts may arrive in any order.
    for (grant, (_, part)) in grants.iter().zip(&parts).rev() {
        receipts.push(put_granted(grant, part).await);
    }
    assert_eq!(
        backend.size(&path).await.unwrap(),
        None,
        "nothing shows before the commit"
    );
    let size = backend
        .complete_upload(&path, &upload_id, &receipts, BIG as u64)
        .await
        .unwrap();
    assert_eq!(size, BIG as u64);
    assert!(
        read(backend, &path, None).await == (BIG as u64, data),
        "the committed blob differs"
    );
}

/// The same through the controller: put_part, a part sent twice, parts out of order.
pub async fn relayed_upload(backend: &Backend) {
    let path = capture_path("relayed");
    let data = bytes(BIG, 3);
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let parts = parts(backend, &data);
    let mut receipts = Vec::new();
    for (number, part) in parts.iter().rev() {
        let receipt = backend
            .put_part(
                &path,
                &upload_id,
                *number,
                body(part),
                part.len() as u64,
                Some(md5(part)),
            )
            .await
            .unwrap();
        assert_eq!(receipt.part, *number);
        receipts.push(receipt);
    }
    // A retried part replaces the first; its new receipt is the one to use.
    let (number, part) = &parts[0];
    let again = backend
        .put_part(&path, &upload_id, *number, body(part), part.len() as u64, None)
        .await
        .unwrap();
    receipts.retain(|r| r.part != *number);
    receipts.push(again);

    // A damaged part is refused, and an oversized one.
    let mut damaged = part.clone();
    damaged[100] ^= 0xff;
    let err = backend
        .put_part(
            &path,
            &upload_id,
            1,
            body(&damaged),
            damaged.len() as u64,
            Some(md5(part)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, UploadError::Md5Mismatch { part: 1, .. }) && !err.is_permanent(),
        "{err:?}"
    );
    let too_big = backend.part_size() + 1;
    let err = backend
        .put_part(&path, &upload_id, 1, body(b""), too_big, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UploadError::PartTooLarge { .. }) && err.is_permanent(),
        "{err:?}"
    );

    let size = backend
        .complete_upload(&path, &upload_id, &receipts, BIG as u64)
        .await
        .unwrap();
    assert_eq!(size, BIG as u64);
    assert!(
        read(backend, &path, None).await == (BIG as u64, data),
        "the committed blob differs"
    );
}

/// An upload resumed by a new process: some parts, everything dropped, a
/// backend made anew from the same configuration grants the rest.
pub async fn resumed_upload(make: impl Fn() -> Backend) {
    let path = capture_path("resumed");
    let data = bytes(BIG, 4);
    let backend = make();
    let parts = parts(&backend, &data);
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let first = backend
        .grant_parts(&path, &upload_id, &[1], Duration::from_secs(300))
        .await
        .unwrap()
        .unwrap();
    let mut receipts = vec![put_granted(&first[0], &parts[0].1).await];
    drop((first, backend));

    let backend = make();
    let rest: Vec<u32> = parts[1..].iter().map(|(n, _)| *n).collect();
    let grants = backend
        .grant_parts(&path, &upload_id, &rest, Duration::from_secs(300))
        .await
        .unwrap()
        .unwrap();
    for (grant, (_, part)) in grants.iter().zip(&parts[1..]) {
        receipts.push(put_granted(grant, part).await);
    }
    backend
        .complete_upload(&path, &upload_id, &receipts, BIG as u64)
        .await
        .unwrap();
    assert!(
        read(&backend, &path, None).await == (BIG as u64, data),
        "the resumed blob differs"
    );
}

/// complete_upload with the wrong expected size is an error, and says whether the blob changed.
pub async fn wrong_size_is_an_error(backend: &Backend) -> UploadError {
    let path = capture_path("wrong-size");
    let data = bytes(1000, 5);
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let receipt = backend
        .put_part(&path, &upload_id, 1, body(&data), 1000, None)
        .await
        .unwrap();
    let err = backend
        .complete_upload(&path, &upload_id, &[receipt], 1001)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UploadError::SizeMismatch {
                expected: 1001,
                stored: 1000,
                ..
            }
        ) && err.is_permanent(),
        "{err:?}"
    );
    err
}

/// Parts that are not 1..=n, and part numbers out of range, are refused before any request.
pub async fn bad_part_numbers_are_refused(backend: &Backend) {
    let path = capture_path("bad-parts");
    let upload_id = backend.begin_upload(&path).await.unwrap();
    for part in [0, 10_001] {
        let err = backend
            .grant_parts(&path, &upload_id, &[1, part], Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(matches!(err, UploadError::BadPartNumber { .. }), "{err:?}");
        let err = backend
            .put_part(&path, &upload_id, part, body(b"x"), 1, None)
            .await
            .unwrap_err();
        assert!(matches!(err, UploadError::BadPartNumber { .. }), "{err:?}");
    }
    let receipts = [PartReceipt {
        part: 2,
        id: "x".to_owned(),
    }];
    let err = backend
        .complete_upload(&path, &upload_id, &receipts, 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UploadError::BadPartList { expected: 1, found: 2 }),
        "{err:?}"
    );
    backend.abort_upload(&path, &upload_id).await.unwrap();
}

/// A put whose body fails, or which is dropped, after more than a part
/// leaves no blob (its multipart upload is aborted).
pub async fn failed_and_dropped_puts_leave_nothing(backend: &Backend) {
    let path = capture_path("broken");
    let data = bytes(BIG, 12);
    let failing = stream::iter(
        data[..7 * 1024 * 1024]
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    )
    .chain(stream::iter([Err(std::io::Error::other("connection reset"))]));
    let err = backend.put(&path, failing, None).await.unwrap_err();
    assert!(matches!(err, PutError::Body(_)) && !err.is_permanent(), "{err:?}");
    assert_eq!(backend.size(&path).await.unwrap(), None);

    let endless = body(&data[..7 * 1024 * 1024]).chain(stream::pending());
    let put = backend.put(&path, endless, None);
    assert!(
        tokio::time::timeout(Duration::from_secs(3), put).await.is_err(),
        "the put waits for more body"
    );
    assert_eq!(backend.size(&path).await.unwrap(), None);
}
