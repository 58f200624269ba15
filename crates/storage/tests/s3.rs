//! The S3 backend against moto. moto checks neither presigned signatures
//! nor their expiry by default (ecosystem.md §2), nor a part's Content-MD5
//! (S3 answers BadDigest; moto 5.2.5 takes the part), so grant refusals are
//! tested against Azurite only; what moto does check (multipart state, part
//! ETags) is tested here.

use std::time::Duration;

use netwatch_storage::{Backend, UploadError};
use netwatch_testkit::Moto;

use crate::suite::{self, body, bytes, capture_path, put_granted, read};

fn backend(moto: &Moto) -> Backend {
    crate::backend(&format!(
        r#"
        name = "s3acct"
        kind = "s3"
        bucket = "{}"
        region = "{}"
        endpoint = "{}"
        access_key_id = "{}"
        secret_access_key = "{}"
        part_size = {}
        "#,
        moto.bucket(),
        Moto::REGION,
        moto.endpoint(),
        Moto::ACCESS_KEY_ID,
        Moto::SECRET_ACCESS_KEY,
        crate::PART_SIZE,
    ))
}

#[tokio::test]
async fn put_and_read() {
    let moto = Moto::start();
    suite::put_and_read(&backend(&moto)).await;
}

#[tokio::test]
async fn failed_and_dropped_puts_leave_nothing() {
    let moto = Moto::start();
    suite::failed_and_dropped_puts_leave_nothing(&backend(&moto)).await;
}

#[tokio::test]
async fn granted_upload() {
    let moto = Moto::start();
    suite::granted_upload(&backend(&moto)).await;
}

#[tokio::test]
async fn relayed_upload() {
    let moto = Moto::start();
    suite::relayed_upload(&backend(&moto)).await;
}

#[tokio::test]
async fn resumed_upload() {
    let moto = Moto::start();
    suite::resumed_upload(|| backend(&moto)).await;
}

#[tokio::test]
async fn wrong_size_is_an_error_and_the_blob_is_wrong() {
    let moto = Moto::start();
    let err = suite::wrong_size_is_an_error(&backend(&moto)).await;
    assert!(
        matches!(err, UploadError::SizeMismatch { committed: true, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn bad_part_numbers_are_refused() {
    let moto = Moto::start();
    suite::bad_part_numbers_are_refused(&backend(&moto)).await;
}

#[tokio::test]
async fn grants_name_their_part_and_upload() {
    let moto = Moto::start();
    let backend = backend(&moto);
    let path = capture_path("grant-url");
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let grants = backend
        .grant_parts(&path, &upload_id, &[7], Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let url = reqwest::Url::parse(&grants[0].url).unwrap();
    assert_eq!(
        url.path(),
        format!("/{}/{}", moto.bucket(), path.as_str()),
        "path-style, whole path"
    );
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert!(query.contains(&("partNumber".to_owned(), "7".to_owned())), "{query:?}");
    assert!(query.contains(&("uploadId".to_owned(), upload_id.clone())), "{query:?}");
    assert!(query.iter().any(|(k, _)| k == "X-Amz-Signature"), "{query:?}");
    assert!(grants[0].receipt.is_none(), "S3's receipt is the answer's ETag");
}

#[tokio::test]
async fn an_upload_the_server_lost_fails_and_a_new_one_works() {
    let mut moto = Moto::start();
    let backend = backend(&moto);
    let path = capture_path("lost");
    let data = bytes(1000, 8);
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let grants = backend
        .grant_parts(&path, &upload_id, &[1], Duration::from_secs(300))
        .await
        .unwrap()
        .unwrap();
    let receipt = put_granted(&grants[0], &data).await;

    moto.stop();
    let err = backend
        .put_part(&path, &upload_id, 1, body(&data), 1000, None)
        .await
        .unwrap_err();
    assert!(!err.is_permanent(), "storage down is worth retrying: {err:?}");

    // moto forgets everything when restarted: the upload is gone for good.
    // S3 answers UploadPart and CompleteMultipartUpload of an unknown upload
    // with 404 NoSuchUpload (UploadError::NoSuchUpload); moto 5.2.5 fails
    // with a 500, so only the failure is checked here (Azurite's answer to
    // missing blocks is checked in azure.rs).
    moto.start_again();
    backend
        .put_part(&path, &upload_id, 1, body(&data), 1000, None)
        .await
        .unwrap_err();
    backend
        .complete_upload(&path, &upload_id, &[receipt], 1000)
        .await
        .unwrap_err();

    // A fresh upload works again.
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let receipt = backend
        .put_part(&path, &upload_id, 1, body(&data), 1000, None)
        .await
        .unwrap();
    backend
        .complete_upload(&path, &upload_id, &[receipt], 1000)
        .await
        .unwrap();
    assert_eq!(read(&backend, &path, None).await, (1000, data));
}
