//! Multipart uploads with per-part grants: what [`crate::Backend`]'s
//! `begin_upload`, `grant_parts`, `put_part`, `complete_upload` and
//! `abort_upload` trade in, and the checks every backend shares.
//!
//! An upload is S3's multipart upload on every backend: parts numbered
//! `1..=`[`MAX_PARTS`], each at most the account's part size (all but the last
//! exactly that size, by the uploader's choice), stored in any order and as
//! often as needed (a part stored again replaces the earlier one), then
//! committed at once, in part order. Until the commit nothing is visible at the
//! blob's path; the commit is atomic.
//!
//! A part reaches storage one of two ways: straight from the uploader with a
//! [`PartGrant`] (a presigned URL: S3, and Azure accounts configured with a
//! key), or through the controller with [`crate::Backend::put_part`]. Either way
//! the uploader ends up with a [`PartReceipt`] per part, which the commit needs.

use std::fmt;
use std::pin::pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};

use crate::{BoxError, UploadError};

/// The highest part number: S3's limit on parts per upload (Azure allows 50 000 blocks).
pub const MAX_PARTS: u32 = 10_000;

/// Hex digits of the upload ids Azure and local accounts give out: 12 random
/// bytes. With the 8 digits of a part number they make Azure block ids of 32
/// characters, the length object_store gives its own block ids, so parts sent
/// either way mix in one upload (Azure wants every block id of a blob the same length).
pub(crate) const UPLOAD_ID_DIGITS: usize = 24;

/// One granted part: PUT the part's bytes to `url`, with `headers` besides
/// `Content-Length` (and `Content-MD5`, which the uploader adds and the
/// storage service checks), and no other authorization.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartGrant {
    /// The part number, `1..=`[`MAX_PARTS`].
    pub part: u32,
    /// Where to PUT the part; it authorizes that one request until it expires.
    pub url: String,
    /// Headers the request must carry.
    pub headers: Vec<(String, String)>,
    /// The receipt to record for this part once the PUT succeeds, when it is
    /// known in advance (Azure: the block id); `None`: record the `ETag`
    /// header of the PUT's answer (S3).
    pub receipt: Option<String>,
}

impl fmt::Debug for PartGrant {
    /// Leaves out the URL's query: it holds the signature, a credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url.split_once('?').map_or(self.url.as_str(), |(base, _)| base);
        f.debug_struct("PartGrant")
            .field("part", &self.part)
            .field("url", &format_args!("{url}?***"))
            .field("headers", &self.headers)
            .field("receipt", &self.receipt)
            .finish()
    }
}

/// What committing an upload needs of one stored part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartReceipt {
    /// The part number, `1..=`[`MAX_PARTS`].
    pub part: u32,
    /// The storage's id of the part: S3's ETag, Azure's block id, the local
    /// backend's MD5 (hex) of the part, or a random id when it came without one.
    pub id: String,
}

/// Checks a part number.
pub(crate) fn check_part(part: u32) -> Result<(), UploadError> {
    if (1..=MAX_PARTS).contains(&part) {
        Ok(())
    } else {
        Err(UploadError::BadPartNumber { part })
    }
}

/// A fresh upload id: [`UPLOAD_ID_DIGITS`] random lower-case hex digits.
pub(crate) fn new_upload_id() -> Result<String, UploadError> {
    random_id().map_err(UploadError::Random)
}

/// [`UPLOAD_ID_DIGITS`] random lower-case hex digits.
pub(crate) fn random_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; UPLOAD_ID_DIGITS / 2];
    getrandom::fill(&mut bytes)?;
    Ok(hex(&bytes))
}

/// Checks an upload id of the kind [`new_upload_id`] makes.
pub(crate) fn check_upload_id(upload_id: &str) -> Result<(), UploadError> {
    let good = upload_id.len() == UPLOAD_ID_DIGITS
        && upload_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if good {
        Ok(())
    } else {
        Err(UploadError::BadUploadId {
            upload_id: upload_id.to_owned(),
        })
    }
}

/// The receipts in part order, once they are checked to be parts `1..=n`, each once.
pub(crate) fn ordered_receipts(parts: &[PartReceipt]) -> Result<Vec<PartReceipt>, UploadError> {
    let mut ordered = parts.to_vec();
    ordered.sort_by_key(|receipt| receipt.part);
    for (expected, receipt) in (1..).zip(&ordered) {
        if receipt.part != expected {
            return Err(UploadError::BadPartList {
                expected,
                found: receipt.part,
            });
        }
    }
    Ok(ordered)
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

/// The MD5 of a part as it is received, checked against the uploader's.
#[derive(Default)]
pub(crate) struct PartDigest(Md5);

impl PartDigest {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The part's MD5, once it matches `expected` (when there is one).
    pub(crate) fn finish(self, part: u32, expected: Option<[u8; 16]>) -> Result<[u8; 16], UploadError> {
        let computed: [u8; 16] = self.0.finalize().into();
        match expected {
            Some(expected) if expected != computed => {
                use base64::Engine as _;
                let base64 = base64::engine::general_purpose::STANDARD;
                Err(UploadError::Md5Mismatch {
                    part,
                    expected: base64.encode(expected),
                    computed: base64.encode(computed),
                })
            }
            _ => Ok(computed),
        }
    }
}

/// Reads part `part`'s body whole (the object stores take a part in one
/// request), checking it is exactly `len` bytes long and, with `md5`, has
/// that MD5. The caller has checked `len` against the part size, which bounds
/// the memory.
pub(crate) async fn read_part<S, E>(
    part: u32,
    body: S,
    len: u64,
    md5: Option<[u8; 16]>,
) -> Result<Vec<Bytes>, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Into<BoxError> + Send,
{
    let mut body = pin!(body);
    let mut chunks = Vec::new();
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
        chunks.push(chunk);
    }
    if received != len {
        return Err(UploadError::PartTooShort {
            part,
            expected: len,
            received,
        });
    }
    digest.finish(part, md5)?;
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::stream;

    use super::*;

    fn receipts(parts: &[u32]) -> Vec<PartReceipt> {
        parts
            .iter()
            .map(|&part| PartReceipt {
                part,
                id: format!("id{part}"),
            })
            .collect()
    }

    #[test]
    fn part_numbers_and_ids_are_checked() {
        assert!(check_part(1).is_ok() && check_part(MAX_PARTS).is_ok());
        for bad in [0, MAX_PARTS + 1] {
            assert_eq!(
                check_part(bad).unwrap_err().to_string(),
                format!("part number {bad} is outside 1-10000")
            );
        }
        let id = new_upload_id().unwrap();
        assert_eq!(id.len(), UPLOAD_ID_DIGITS);
        assert!(check_upload_id(&id).is_ok());
        assert_ne!(id, new_upload_id().unwrap());
        for bad in [
            "",
            "../../etc/passwd0000000000",
            "ABCDEF0123456789abcdef01",
            "0123456789abcdef0123456",
        ] {
            assert!(
                matches!(check_upload_id(bad), Err(UploadError::BadUploadId { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn receipts_must_be_one_to_n() {
        let ordered = ordered_receipts(&receipts(&[3, 1, 2])).unwrap();
        assert_eq!(ordered.iter().map(|r| r.part).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(ordered_receipts(&[]).unwrap().is_empty());
        for (bad, message) in [
            (&[2, 3][..], "part 2 is where 1 should be"),
            (&[1, 1, 2][..], "part 1 is where 2 should be"),
            (&[1, 3][..], "part 3 is where 2 should be"),
        ] {
            let err = ordered_receipts(&receipts(bad)).unwrap_err();
            assert!(err.to_string().ends_with(message), "{bad:?}: {err}");
            assert!(err.is_permanent());
        }
    }

    #[test]
    fn grants_do_not_show_their_signature() {
        let grant = PartGrant {
            part: 2,
            url: "https://a.blob.core.windows.net/c/b?sv=1&sig=SECRET".to_owned(),
            headers: Vec::new(),
            receipt: None,
        };
        let shown = format!("{grant:?}");
        assert!(
            shown.contains("https://a.blob.core.windows.net/c/b?***") && !shown.contains("SECRET"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn parts_are_read_with_their_length_and_md5_checked() {
        let body = || {
            stream::iter([
                Ok::<_, Infallible>(Bytes::from_static(b"hello ")),
                Ok(Bytes::from_static(b"world")),
            ])
        };
        // md5("hello world")
        let md5 = [
            0x5e, 0xb6, 0x3b, 0xbb, 0xe0, 0x1e, 0xee, 0xd0, 0x93, 0xcb, 0x22, 0xbb, 0x8f, 0x5a, 0xcd, 0xc3,
        ];
        assert_eq!(
            read_part(1, body(), 11, Some(md5)).await.unwrap().concat(),
            b"hello world"
        );
        assert_eq!(hex(&md5), "5eb63bbbe01eeed093cb22bb8f5acdc3");
        let mut wrong = md5;
        wrong[0] ^= 1;
        let err = read_part(4, body(), 11, Some(wrong)).await.unwrap_err();
        assert!(
            matches!(err, UploadError::Md5Mismatch { part: 4, .. }) && !err.is_permanent(),
            "{err:?}"
        );
        assert!(matches!(
            read_part(1, body(), 12, None).await,
            Err(UploadError::PartTooShort {
                expected: 12,
                received: 11,
                ..
            })
        ));
        assert!(matches!(
            read_part(1, body(), 10, None).await,
            Err(UploadError::PartTooLong { expected: 10, .. })
        ));
    }
}
