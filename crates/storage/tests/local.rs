//! The local backend's multipart uploads: the shared suite through
//! put_part (it grants nothing), and what only staging on disk can get wrong.

use std::path::Path;
use std::time::Duration;

use netwatch_storage::{Backend, BlobPath, PartReceipt, Storage, UploadError};

use crate::suite::{self, body, bytes, capture_path, md5, read};

fn backend(root: &Path) -> Backend {
    crate::backend(&format!(
        "name = \"local\"\nkind = \"local\"\npath = \"{}\"\npart_size = {}\n",
        root.display(),
        crate::PART_SIZE
    ))
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
async fn put_and_read() {
    let dir = tempfile::tempdir().unwrap();
    suite::put_and_read(&backend(dir.path())).await;
}

#[tokio::test]
async fn failed_and_dropped_puts_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    suite::failed_and_dropped_puts_leave_nothing(&backend(dir.path())).await;
}

#[tokio::test]
async fn relayed_upload() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    suite::relayed_upload(&backend).await;
    // The staging directory is gone with the upload; only blobs remain.
    assert!(
        files(dir.path()).iter().all(|f| f.starts_with("network-watcher-logs/")),
        "{:?}",
        files(dir.path())
    );
}

#[tokio::test]
async fn wrong_size_is_an_error_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let err = suite::wrong_size_is_an_error(&backend).await;
    assert!(matches!(err, UploadError::SizeMismatch { committed: false, .. }));
    assert!(err.to_string().ends_with("nothing was stored"), "{err}");
    assert_eq!(backend.size(&capture_path("wrong-size")).await.unwrap(), None);
}

#[tokio::test]
async fn bad_part_numbers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    suite::bad_part_numbers_are_refused(&backend(dir.path())).await;
}

#[tokio::test]
async fn parts_stage_where_no_blob_path_reaches() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let path = capture_path("staged");
    let upload_id = backend.begin_upload(&path).await.unwrap();
    assert!(
        backend
            .grant_parts(&path, &upload_id, &[1], Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "a local account takes parts only through the controller"
    );
    let data = bytes(3000, 9);
    backend
        .put_part(&path, &upload_id, 1, body(&data), 3000, Some(md5(&data)))
        .await
        .unwrap();
    let staged = files(dir.path());
    assert_eq!(
        staged,
        [
            format!(".netwatch-tmp-uploads/{upload_id}/00001"),
            format!(".netwatch-tmp-uploads/{upload_id}/blob"),
            format!(".netwatch-tmp-uploads/{upload_id}/data"),
            format!(".netwatch-tmp-uploads/{upload_id}/part_size")
        ]
    );
    for file in &staged {
        let err = BlobPath::parse(file).unwrap_err();
        assert!(err.to_string().contains("reserved for uploads in progress"), "{err}");
    }
    assert_eq!(
        backend.size(&path).await.unwrap(),
        None,
        "nothing shows before the commit"
    );
    backend.abort_upload(&path, &upload_id).await.unwrap();
    assert_eq!(files(dir.path()), Vec::<String>::new());
    backend.abort_upload(&path, &upload_id).await.unwrap();
}

#[tokio::test]
async fn uploads_belong_to_their_blob_and_their_parts() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let path = capture_path("owned");
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let first = bytes(100, 10);
    let receipt = backend
        .put_part(&path, &upload_id, 1, body(&first), 100, Some(md5(&first)))
        .await
        .unwrap();
    assert_eq!(
        receipt.id,
        hex(&md5(&first)),
        "a local part sent with its MD5 has it as receipt"
    );
    // Sent without one (over TLS), a part is not hashed: its receipt is new
    // each time it is stored, so the earlier one is stale.
    let unhashed = backend
        .put_part(&path, &upload_id, 1, body(&first), 100, None)
        .await
        .unwrap();
    assert_eq!(unhashed.id.len(), 24, "{unhashed:?}");
    let again = backend
        .put_part(&path, &upload_id, 1, body(&first), 100, None)
        .await
        .unwrap();
    assert_ne!(again.id, unhashed.id);
    let err = backend
        .complete_upload(&path, &upload_id, &[unhashed], 100)
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::StaleReceipt { part: 1 }), "{err:?}");
    // Stored again with its MD5: the same receipt as the first time.
    let receipt = backend
        .put_part(&path, &upload_id, 1, body(&first), 100, Some(md5(&first)))
        .await
        .unwrap();
    assert_eq!(receipt.id, hex(&md5(&first)));

    // Another blob's path, an unknown id, a malformed one.
    let other = capture_path("other");
    let err = backend
        .put_part(&other, &upload_id, 1, body(&first), 100, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UploadError::NoSuchUpload { .. }) && err.is_permanent(),
        "{err:?}"
    );
    let err = backend
        .complete_upload(&path, "0123456789abcdef01234567", std::slice::from_ref(&receipt), 100)
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::NoSuchUpload { .. }), "{err:?}");
    for bad in ["../../../../etc", "", "0123456789ABCDEF01234567"] {
        let err = backend
            .put_part(&path, bad, 1, body(&first), 100, None)
            .await
            .unwrap_err();
        assert!(matches!(err, UploadError::BadUploadId { .. }), "{bad}: {err:?}");
    }

    // A part that is not there; a part stored again after its receipt.
    let missing = [
        receipt.clone(),
        PartReceipt {
            part: 2,
            id: "x".to_owned(),
        },
    ];
    let err = backend
        .complete_upload(&path, &upload_id, &missing, 200)
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::MissingPart { part: 2, .. }), "{err:?}");
    let second = bytes(100, 11);
    backend
        .put_part(&path, &upload_id, 1, body(&second), 100, Some(md5(&second)))
        .await
        .unwrap();
    let err = backend
        .complete_upload(&path, &upload_id, &[receipt], 100)
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::StaleReceipt { part: 1 }), "{err:?}");
    assert_eq!(
        backend.size(&path).await.unwrap(),
        None,
        "a refused commit stores nothing"
    );

    // A damaged part leaves the stored one as it was.
    let mut damaged = second.clone();
    damaged[0] ^= 1;
    let err = backend
        .put_part(&path, &upload_id, 1, body(&damaged), 100, Some(md5(&second)))
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::Md5Mismatch { part: 1, .. }), "{err:?}");
    let receipt = PartReceipt {
        part: 1,
        id: hex(&md5(&second)),
    };
    assert_eq!(
        backend
            .complete_upload(&path, &upload_id, &[receipt], 100)
            .await
            .unwrap(),
        100
    );
    assert_eq!(read(&backend, &path, None).await, (100, second));
    assert_eq!(files(dir.path()), [path.as_str()]);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parts are written in place, in any order and side by side; a part staged
/// before the host rebooted (its marker names another boot) is missing at
/// the commit, which then stores nothing; a part sent again whose body breaks
/// off leaves it as it was; sent whole, the commit makes the blob, and a
/// commit repeated after it finds no upload.
#[tokio::test]
async fn parts_land_in_place_and_a_reboot_loses_the_staged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let path = capture_path("in-place");
    let size = 3 * usize::try_from(crate::PART_SIZE).unwrap() + 100;
    let data = bytes(size, 21);
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let parts = suite::parts(&backend, &data);
    let puts = parts.iter().rev().map(|(part, bytes)| {
        backend.put_part(
            &path,
            &upload_id,
            *part,
            body(bytes),
            bytes.len() as u64,
            Some(md5(bytes)),
        )
    });
    let mut receipts: Vec<PartReceipt> = futures_util::future::try_join_all(puts).await.unwrap();
    receipts.sort_by_key(|r| r.part);

    // The host rebooted after part 2 was staged.
    let marker = dir.path().join(".netwatch-tmp-uploads").join(&upload_id).join("00002");
    let text = std::fs::read_to_string(&marker).unwrap();
    let (stored, _boot) = text.rsplit_once(' ').unwrap();
    std::fs::write(&marker, format!("{stored} another-boot")).unwrap();
    let err = backend
        .complete_upload(&path, &upload_id, &receipts, size as u64)
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::MissingPart { part: 2, .. }), "{err:?}");
    assert_eq!(backend.size(&path).await.unwrap(), None, "nothing stored");

    let second = &parts[1].1;
    let err = backend
        .put_part(&path, &upload_id, 2, body(&second[..10]), second.len() as u64, None)
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::PartTooShort { part: 2, .. }), "{err:?}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        format!("{stored} another-boot")
    );

    receipts[1] = backend
        .put_part(
            &path,
            &upload_id,
            2,
            body(second),
            second.len() as u64,
            Some(md5(second)),
        )
        .await
        .unwrap();
    assert_eq!(
        backend
            .complete_upload(&path, &upload_id, &receipts, size as u64)
            .await
            .unwrap(),
        size as u64
    );
    assert!(
        read(&backend, &path, None).await == (size as u64, data),
        "the blob differs"
    );
    assert_eq!(files(dir.path()), [path.as_str()]);
    let err = backend
        .complete_upload(&path, &upload_id, &receipts, size as u64)
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::NoSuchUpload { .. }), "{err:?}");
}

/// Parts handed over as files (the controller's hand-over socket): copied
/// from the file's offset into place by the kernel, a fresh receipt each
/// time, mixed with parts sent as bodies in one upload; a file that ends
/// before the part does stores nothing for it.
#[tokio::test]
async fn parts_copied_from_files_land_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let Backend::Local(local) = &backend else {
        panic!("a local account")
    };
    let part_size = backend.part_size();
    let path = capture_path("handed");
    let data = bytes(usize::try_from(2 * part_size + 1000).unwrap(), 21);
    let source = dir.path().join("spooled.cap");
    std::fs::write(&source, &data).unwrap();
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let open = || std::fs::File::open(&source).unwrap();
    let first = local
        .put_part_from_file(&path, &upload_id, 1, open(), 0, part_size)
        .await
        .unwrap();
    let third = local
        .put_part_from_file(&path, &upload_id, 3, open(), 2 * part_size, 1000)
        .await
        .unwrap();
    assert_ne!(first.id, third.id);
    let middle = &data[usize::try_from(part_size).unwrap()..usize::try_from(2 * part_size).unwrap()];
    let second = backend
        .put_part(&path, &upload_id, 2, body(middle), part_size, Some(md5(middle)))
        .await
        .unwrap();
    // A file shorter than the part: refused, the part not stored.
    let err = local
        .put_part_from_file(&path, &upload_id, 3, open(), 2 * part_size, 2000)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UploadError::PartTooShort {
                part: 3,
                expected: 2000,
                received: 1000
            }
        ),
        "{err:?}"
    );
    let err = backend
        .complete_upload(
            &path,
            &upload_id,
            &[first.clone(), second.clone(), third],
            data.len() as u64,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::MissingPart { part: 3, .. }), "{err:?}");
    let third = local
        .put_part_from_file(&path, &upload_id, 3, open(), 2 * part_size, 1000)
        .await
        .unwrap();
    backend
        .complete_upload(&path, &upload_id, &[first, second, third], data.len() as u64)
        .await
        .unwrap();
    assert_eq!(read(&backend, &path, None).await, (data.len() as u64, data));
}
