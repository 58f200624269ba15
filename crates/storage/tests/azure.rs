//! The Azure Blob backend against Azurite. Azurite checks SAS signatures and
//! expiry, so grants are tested for refusal here (moto checks neither).

use std::time::Duration;

use netwatch_storage::{Backend, Storage, UploadError};
use netwatch_testkit::Azurite;

use crate::suite::{self, BIG, body, bytes, capture_path, md5, put_granted, read, send_granted};

/// The account of Azurite's container, with its key (grants possible).
fn key_account(azurite: &Azurite, container: &str) -> Backend {
    crate::backend(&format!(
        r#"
        name = "azkey"
        kind = "azureblob"
        account = "{}"
        container = "{container}"
        key = "{}"
        endpoint = "{}"
        part_size = {}
        "#,
        azurite.account(),
        azurite.key(),
        azurite.endpoint(),
        crate::PART_SIZE,
    ))
}

fn backend(azurite: &Azurite) -> Backend {
    key_account(azurite, azurite.container())
}

#[tokio::test]
async fn put_and_read() {
    let azurite = Azurite::start();
    suite::put_and_read(&backend(&azurite)).await;
}

#[tokio::test]
async fn failed_and_dropped_puts_leave_nothing() {
    let azurite = Azurite::start();
    suite::failed_and_dropped_puts_leave_nothing(&backend(&azurite)).await;
}

#[tokio::test]
async fn granted_upload() {
    let azurite = Azurite::start();
    suite::granted_upload(&backend(&azurite)).await;
}

#[tokio::test]
async fn relayed_upload() {
    let azurite = Azurite::start();
    suite::relayed_upload(&backend(&azurite)).await;
}

#[tokio::test]
async fn resumed_upload() {
    let azurite = Azurite::start();
    suite::resumed_upload(|| backend(&azurite)).await;
}

#[tokio::test]
async fn wrong_size_is_an_error_and_the_blob_is_wrong() {
    let azurite = Azurite::start();
    let err = suite::wrong_size_is_an_error(&backend(&azurite)).await;
    assert!(matches!(err, UploadError::SizeMismatch { committed: true, .. }));
    assert!(
        err.to_string()
            .ends_with("the blob is wrong and must be uploaded again"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_part_numbers_are_refused() {
    let azurite = Azurite::start();
    suite::bad_part_numbers_are_refused(&backend(&azurite)).await;
}

#[tokio::test]
async fn paths_in_the_capture_container_use_azures_layout() {
    let azurite = Azurite::start();
    azurite.create_container("network-watcher-logs");
    let backend = key_account(&azurite, "network-watcher-logs");
    let path = capture_path("layout");
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let grants = backend
        .grant_parts(&path, &upload_id, &[1], Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let url = reqwest::Url::parse(&grants[0].url).unwrap();
    assert_eq!(
        url.path(),
        format!("/devstoreaccount1/{}", path.as_str()),
        "the container's own name is not repeated inside it"
    );
    let receipt = put_granted(&grants[0], b"layout").await;
    backend.complete_upload(&path, &upload_id, &[receipt], 6).await.unwrap();
    assert_eq!(read(&backend, &path, None).await, (6, b"layout".to_vec()));

    // Another container keeps whole paths.
    let other = key_account(&azurite, azurite.container());
    let grants = other
        .grant_parts(
            &path,
            &other.begin_upload(&path).await.unwrap(),
            &[1],
            Duration::from_secs(60),
        )
        .await
        .unwrap()
        .unwrap();
    let url = reqwest::Url::parse(&grants[0].url).unwrap();
    assert_eq!(
        url.path(),
        format!("/devstoreaccount1/{}/{}", azurite.container(), path.as_str())
    );
}

#[tokio::test]
async fn grants_are_refused_once_expired_or_tampered_with() {
    let azurite = Azurite::start();
    let backend = backend(&azurite);
    let path = capture_path("refused");
    let data = bytes(1024, 6);
    let upload_id = backend.begin_upload(&path).await.unwrap();

    // One character of the signature changed: Azurite checks it.
    let grants = backend
        .grant_parts(&path, &upload_id, &[1], Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let mut tampered = grants[0].clone();
    let at = tampered.url.find("sig=").unwrap() + 4;
    let original = tampered.url.as_bytes()[at];
    let replacement = if original == b'A' { "B" } else { "A" };
    tampered.url.replace_range(at..=at, replacement);
    let answer = send_granted(&tampered, &data, md5(&data)).await;
    assert_eq!(answer.status(), 403, "tampered grant: {}", answer.text().await.unwrap());

    // A wrong Content-MD5: Azurite checks it too.
    let mut wrong = md5(&data);
    wrong[0] ^= 1;
    let answer = send_granted(&grants[0], &data, wrong).await;
    assert_eq!(
        answer.status(),
        400,
        "wrong Content-MD5: {}",
        answer.text().await.unwrap()
    );

    // Past its ttl (the SAS's expiry has second precision).
    let short = backend
        .grant_parts(&path, &upload_id, &[2], Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let answer = send_granted(&short[0], &data, md5(&data)).await;
    assert_eq!(answer.status(), 403, "expired grant: {}", answer.text().await.unwrap());

    // The untouched grant still works, and nothing else got in.
    let receipt = put_granted(&grants[0], &data).await;
    backend
        .complete_upload(&path, &upload_id, &[receipt], 1024)
        .await
        .unwrap();
    assert_eq!(read(&backend, &path, None).await, (1024, data));
}

#[tokio::test]
async fn blocks_that_are_not_there_are_no_such_upload() {
    let azurite = Azurite::start();
    let backend = backend(&azurite);
    let path = capture_path("no-blocks");
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let grants = backend
        .grant_parts(&path, &upload_id, &[1], Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    // Granted but never uploaded (or expired: Azure drops uncommitted blocks
    // after 7 days): Put Block List answers InvalidBlockList.
    let receipt = netwatch_storage::PartReceipt {
        part: 1,
        id: grants[0].receipt.clone().unwrap(),
    };
    let err = backend
        .complete_upload(&path, &upload_id, &[receipt], 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UploadError::NoSuchUpload { .. }) && err.is_permanent(),
        "{err:?}"
    );
    assert_eq!(backend.size(&path).await.unwrap(), None);
}

#[tokio::test]
async fn a_sas_account_takes_parts_through_the_controller() {
    let azurite = Azurite::start();
    let backend = crate::backend(&format!(
        r#"
        name = "azsas"
        kind = "azureblob"
        account = "{}"
        container = "{}"
        sas = "?{}"
        endpoint = "{}"
        part_size = {}
        "#,
        azurite.account(),
        azurite.container(),
        azurite.container_sas(),
        azurite.endpoint(),
        crate::PART_SIZE,
    ));
    let path = capture_path("sas");
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let grants = backend
        .grant_parts(&path, &upload_id, &[1, 2], Duration::from_secs(60))
        .await
        .unwrap();
    assert!(grants.is_none(), "a SAS cannot grant a narrower SAS");
    suite::relayed_upload(&backend).await;
    suite::put_and_read(&backend).await;
}

#[tokio::test]
async fn a_wrong_key_is_refused_for_good() {
    let azurite = Azurite::start();
    let backend = crate::backend(&format!(
        r#"
        name = "azwrong"
        kind = "azureblob"
        account = "{}"
        container = "{}"
        key = "d3Jvbmcga2V5"
        endpoint = "{}"
        "#,
        azurite.account(),
        azurite.container(),
        azurite.endpoint(),
    ));
    let path = capture_path("wrong-key");
    let err = backend.put(&path, body(b"x"), None).await.unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    let err = backend.size(&path).await.unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let err = backend
        .put_part(&path, &upload_id, 1, body(b"x"), 1, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UploadError::PermissionDenied(_)) && err.is_permanent(),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_upload_survives_storage_going_away() {
    let mut azurite = Azurite::start();
    let backend = backend(&azurite);
    let path = capture_path("outage");
    let data = bytes(BIG, 7);
    let parts = suite::parts(&backend, &data);
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let grants = backend
        .grant_parts(&path, &upload_id, &[1], Duration::from_secs(300))
        .await
        .unwrap()
        .unwrap();
    let mut receipts = vec![put_granted(&grants[0], &parts[0].1).await];

    azurite.stop();
    let (number, part) = &parts[1];
    let err = backend
        .put_part(&path, &upload_id, *number, body(part), part.len() as u64, None)
        .await
        .unwrap_err();
    assert!(!err.is_permanent(), "storage down is worth retrying: {err:?}");

    azurite.start_again();
    for (number, part) in &parts[1..] {
        let receipt = backend
            .put_part(&path, &upload_id, *number, body(part), part.len() as u64, None)
            .await
            .unwrap();
        receipts.push(receipt);
    }
    backend
        .complete_upload(&path, &upload_id, &receipts, BIG as u64)
        .await
        .unwrap();
    assert!(
        read(&backend, &path, None).await == (BIG as u64, data),
        "the blob differs"
    );
}
