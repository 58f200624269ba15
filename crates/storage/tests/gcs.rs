//! The GCS backend against fake-gcs-server: the shared suite, then what is
//! GCS's own (parts as objects composed as a tree, their session URIs, the
//! temporaries gone after a commit, an abort or a failed put), `probe`, and
//! the configurations refused with what to fix.
//!
//! fake-gcs-server checks no credentials and no `Content-MD5`: the tests
//! use a real service-account key (a fresh RSA key, `"disable_oauth": true`,
//! so the backend sends no token) and check the refusals of credentials
//! (401, 403) with a server that answers only those.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use netwatch_storage::{
    AccountConfig, Backend, BackendError, GcsRequestError, OpenError, PartReceipt, ProbeError, Storage, UploadError,
};
use netwatch_testkit::FakeGcs;
use netwatch_testkit::servers::{rsa_key_pem, rsa_private_key_pem, service_account_key_json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::suite::{self, body, bytes, capture_path, md5, put_granted, read, send_granted};

/// The smallest part size a GCS account takes (256 KiB).
const SMALL_PART: u64 = netwatch_storage::MIN_GCS_PART_SIZE;

/// The account's TOML: `bucket`, the emulator's key, `extra` lines.
fn config(gcs: &FakeGcs, bucket: &str, extra: &str) -> String {
    format!(
        "name = \"gcsacct\"\nkind = \"gcs\"\nbucket = \"{bucket}\"\nservice_account_key = '''{}'''\n{extra}\n",
        gcs.service_account_key()
    )
}

fn backend_with_part_size(gcs: &FakeGcs, part_size: u64) -> Backend {
    crate::backend(&config(gcs, gcs.bucket(), &format!("part_size = {part_size}")))
}

fn backend(gcs: &FakeGcs) -> Backend {
    backend_with_part_size(gcs, crate::PART_SIZE)
}

/// The names of the bucket's objects under `prefix`, through the JSON API.
async fn list(gcs: &FakeGcs, prefix: &str) -> Vec<String> {
    let mut url = reqwest::Url::parse(&format!("{}/storage/v1/b/{}/o", gcs.endpoint(), gcs.bucket())).unwrap();
    url.query_pairs_mut().append_pair("prefix", prefix);
    let answer = reqwest::get(url).await.unwrap().error_for_status().unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits (a bounded while) until nothing is left under `netwatch-uploads/`.
async fn assert_no_temporaries(gcs: &FakeGcs) {
    for _ in 0..100 {
        if list(gcs, "netwatch-uploads/").await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("temporaries left: {:?}", list(gcs, "netwatch-uploads/").await);
}

#[tokio::test]
async fn put_and_read() {
    let gcs = FakeGcs::start();
    let backend = backend(&gcs);
    suite::put_and_read(&backend).await;
    // Blobs sit at their whole path; the multi-part put left no temporary.
    let stored = list(&gcs, "network-watcher-logs/").await;
    assert!(stored.contains(&capture_path("round-trip").to_string()), "{stored:?}");
    assert_no_temporaries(&gcs).await;
}

#[tokio::test]
async fn failed_and_dropped_puts_leave_nothing() {
    let gcs = FakeGcs::start();
    suite::failed_and_dropped_puts_leave_nothing(&backend(&gcs)).await;
    assert_no_temporaries(&gcs).await;
}

#[tokio::test]
async fn granted_upload() {
    let gcs = FakeGcs::start();
    suite::granted_upload(&backend(&gcs)).await;
    assert_no_temporaries(&gcs).await;
}

#[tokio::test]
async fn relayed_upload() {
    let gcs = FakeGcs::start();
    suite::relayed_upload(&backend(&gcs)).await;
    assert_no_temporaries(&gcs).await;
}

#[tokio::test]
async fn resumed_upload() {
    let gcs = FakeGcs::start();
    suite::resumed_upload(|| backend(&gcs)).await;
}

#[tokio::test]
async fn wrong_size_is_refused_before_anything_is_stored() {
    let gcs = FakeGcs::start();
    let backend = backend(&gcs);
    let err = suite::wrong_size_is_an_error(&backend).await;
    assert!(
        matches!(err, UploadError::SizeMismatch { committed: false, .. }),
        "{err:?}"
    );
    assert!(err.to_string().ends_with("nothing was stored"), "{err}");
    assert_eq!(backend.size(&capture_path("wrong-size")).await.unwrap(), None);
}

#[tokio::test]
async fn bad_part_numbers_are_refused() {
    let gcs = FakeGcs::start();
    suite::bad_part_numbers_are_refused(&backend(&gcs)).await;
}

/// A grant is a session URI of the part's own object, with nothing else to
/// send; its receipt is the object's name; Debug hides the session's id.
#[tokio::test]
async fn grants_are_upload_sessions_of_the_parts_objects() {
    let gcs = FakeGcs::start();
    let backend = backend(&gcs);
    let path = capture_path("grant-url");
    let upload_id = backend.begin_upload(&path).await.unwrap();
    assert_eq!(upload_id.len(), 24, "{upload_id}");
    let grants = backend
        .grant_parts(&path, &upload_id, &[7, 3], Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(grants.iter().map(|g| g.part).collect::<Vec<_>>(), [7, 3]);
    let grant = &grants[0];
    let url = reqwest::Url::parse(&grant.url).unwrap();
    assert_eq!(url.path(), format!("/upload/storage/v1/b/{}/o", gcs.bucket()), "{url}");
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let object = format!("netwatch-uploads/{upload_id}/00007");
    assert!(query.contains(&("name".to_owned(), object.clone())), "{query:?}");
    assert!(
        query.contains(&("uploadType".to_owned(), "resumable".to_owned())),
        "{query:?}"
    );
    let session = query.iter().find(|(k, _)| k == "upload_id").unwrap().1.clone();
    assert!(grant.headers.is_empty() && grant.receipt.as_deref() == Some(object.as_str()));
    let shown = format!("{grant:?}");
    assert!(!shown.contains(&session), "{shown}");
    // A session opened holds no object yet.
    assert!(list(&gcs, "netwatch-uploads/").await.is_empty());
    backend.abort_upload(&path, &upload_id).await.unwrap();
}

/// 34 parts of the smallest part size: the commit composes the last 3 into
/// an intermediate, then the other 31 and it into the blob, in order; every
/// temporary goes.
#[tokio::test]
async fn many_parts_are_composed_as_a_tree() {
    let gcs = FakeGcs::start();
    let backend = backend_with_part_size(&gcs, SMALL_PART);
    assert_eq!(backend.part_size(), 256 * 1024);
    let path = capture_path("tree");
    let len = usize::try_from(33 * SMALL_PART + 1000).unwrap();
    let data = bytes(len, 21);
    let parts = suite::parts(&backend, &data);
    assert_eq!(parts.len(), 34);
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let numbers: Vec<u32> = parts.iter().map(|(n, _)| *n).collect();
    let grants = backend
        .grant_parts(&path, &upload_id, &numbers, Duration::from_secs(300))
        .await
        .unwrap()
        .unwrap();
    let mut receipts = Vec::new();
    for (grant, (_, part)) in grants.iter().zip(&parts) {
        receipts.push(put_granted(grant, part).await);
    }
    assert_eq!(list(&gcs, &format!("netwatch-uploads/{upload_id}/")).await.len(), 34);
    let size = backend
        .complete_upload(&path, &upload_id, &receipts, len as u64)
        .await
        .unwrap();
    assert_eq!(size, len as u64);
    assert!(
        read(&backend, &path, None).await == (len as u64, data.clone()),
        "the composed blob differs"
    );
    assert_no_temporaries(&gcs).await;

    // A put of as many parts takes the same way.
    let put = capture_path("tree-put");
    assert_eq!(
        backend.put(&put, body(&data), Some(len as u64)).await.unwrap(),
        len as u64
    );
    assert!(
        read(&backend, &put, None).await == (len as u64, data),
        "the put blob differs"
    );
    assert_no_temporaries(&gcs).await;
}

/// A part granted again (its receipt lost in an agent crash) gets a new
/// session, and its second upload replaces the first.
#[tokio::test]
async fn a_part_granted_twice_is_overwritten_cleanly() {
    let gcs = FakeGcs::start();
    let backend = backend(&gcs);
    let path = capture_path("twice");
    let data = bytes(3000, 22);
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let ttl = Duration::from_secs(300);
    let first = backend
        .grant_parts(&path, &upload_id, &[1], ttl)
        .await
        .unwrap()
        .unwrap();
    // The first try stored other bytes (say, a damaged read), then the agent died.
    put_granted(&first[0], &bytes(2000, 99)).await;
    let again = backend
        .grant_parts(&path, &upload_id, &[1], ttl)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(again[0].url, first[0].url, "a new session");
    assert_eq!(again[0].receipt, first[0].receipt, "the same object");
    let receipt = put_granted(&again[0], &data).await;
    backend
        .complete_upload(&path, &upload_id, &[receipt], 3000)
        .await
        .unwrap();
    assert_eq!(read(&backend, &path, None).await, (3000, data));
    assert_no_temporaries(&gcs).await;
}

/// A receipt naming a part that is not stored: the upload is gone, begin again.
#[tokio::test]
async fn a_missing_part_at_commit_is_no_such_upload() {
    let gcs = FakeGcs::start();
    let backend = backend(&gcs);
    let path = capture_path("missing-part");
    let data = bytes(1000, 23);
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let one = backend
        .put_part(&path, &upload_id, 1, body(&data), 1000, Some(md5(&data)))
        .await
        .unwrap();
    // Part 2 granted, never sent.
    let grants = backend
        .grant_parts(&path, &upload_id, &[2], Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let two = PartReceipt {
        part: 2,
        id: grants[0].receipt.clone().unwrap(),
    };
    let err = backend
        .complete_upload(&path, &upload_id, &[one.clone(), two], 2000)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UploadError::NoSuchUpload { upload_id: id, .. } if *id == upload_id) && err.is_permanent(),
        "{err:?}"
    );
    assert_eq!(backend.size(&path).await.unwrap(), None);

    // A receipt of another upload is refused before any request.
    let other = PartReceipt {
        part: 1,
        id: "netwatch-uploads/ffffffffffffffffffffffff/00001".to_owned(),
    };
    let err = backend
        .complete_upload(&path, &upload_id, &[other], 1000)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UploadError::ForeignReceipt { part: 1, .. }) && err.is_permanent(),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("the receipt of part 1 is not one upload"),
        "{err}"
    );

    // Committed, then committed again (its answer lost): NoSuchUpload, as
    // the controller expects of an upload that is done.
    backend
        .complete_upload(&path, &upload_id, std::slice::from_ref(&one), 1000)
        .await
        .unwrap();
    let err = backend
        .complete_upload(&path, &upload_id, &[one], 1000)
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::NoSuchUpload { .. }), "{err:?}");
}

#[tokio::test]
async fn abort_deletes_the_uploads_temporaries() {
    let gcs = FakeGcs::start();
    let backend = backend(&gcs);
    let path = capture_path("aborted");
    let data = bytes(1000, 24);
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let grants = backend
        .grant_parts(&path, &upload_id, &[1], Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let one = put_granted(&grants[0], &data).await;
    let two = backend
        .put_part(&path, &upload_id, 2, body(&data), 1000, None)
        .await
        .unwrap();
    // Another upload's part stays.
    let other = backend.begin_upload(&path).await.unwrap();
    backend
        .put_part(&path, &other, 1, body(&data), 1000, None)
        .await
        .unwrap();
    assert_eq!(list(&gcs, "netwatch-uploads/").await.len(), 3);

    backend.abort_upload(&path, &upload_id).await.unwrap();
    assert_eq!(
        list(&gcs, "netwatch-uploads/").await,
        [format!("netwatch-uploads/{other}/00001")]
    );
    backend.abort_upload(&path, &upload_id).await.unwrap();
    let err = backend
        .complete_upload(&path, &upload_id, &[one, two], 2000)
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::NoSuchUpload { .. }), "{err:?}");
    let err = backend.abort_upload(&path, "../../etc").await.unwrap_err();
    assert!(matches!(err, UploadError::BadUploadId { .. }), "{err:?}");
    backend.abort_upload(&path, &other).await.unwrap();
    assert_no_temporaries(&gcs).await;
}

/// The agent's PUT to a session URI works with what it sends and nothing
/// else; a session used once is done (fake-gcs-server: 404; GCS: 200 with the object).
#[tokio::test]
async fn a_session_takes_one_whole_put() {
    let gcs = FakeGcs::start();
    let backend = backend(&gcs);
    let path = capture_path("session");
    let data = bytes(5000, 25);
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let grants = backend
        .grant_parts(&path, &upload_id, &[1], Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let answer = send_granted(&grants[0], &data, md5(&data)).await;
    assert!(answer.status().is_success(), "{}", answer.status());
    let objects = list(&gcs, &format!("netwatch-uploads/{upload_id}/")).await;
    assert_eq!(objects, [format!("netwatch-uploads/{upload_id}/00001")]);
    backend.abort_upload(&path, &upload_id).await.unwrap();
}

/// Storage down: failures worth retrying; back empty (in memory): the
/// upload is gone for good and a fresh one works.
#[tokio::test]
async fn an_upload_the_server_lost_fails_and_a_new_one_works() {
    let mut gcs = FakeGcs::start();
    let backend = backend(&gcs);
    let path = capture_path("lost");
    let data = bytes(1000, 26);
    let upload_id = backend.begin_upload(&path).await.unwrap();
    let receipt = backend
        .put_part(&path, &upload_id, 1, body(&data), 1000, None)
        .await
        .unwrap();

    gcs.stop();
    let err = backend
        .put_part(&path, &upload_id, 1, body(&data), 1000, None)
        .await
        .unwrap_err();
    assert!(!err.is_permanent(), "storage down is worth retrying: {err:?}");
    let err = backend.open(&path, None).await.unwrap_err();
    assert!(!err.is_permanent(), "{err:?}");
    let err = backend
        .grant_parts(&path, &upload_id, &[1], Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(!err.is_permanent(), "{err:?}");

    gcs.start_again();
    let err = backend
        .complete_upload(&path, &upload_id, &[receipt], 1000)
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::NoSuchUpload { .. }), "{err:?}");
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

#[tokio::test]
async fn zero_parts_commit_an_empty_blob() {
    let gcs = FakeGcs::start();
    let backend = backend(&gcs);
    let path = capture_path("no-parts");
    let upload_id = backend.begin_upload(&path).await.unwrap();
    assert_eq!(backend.complete_upload(&path, &upload_id, &[], 0).await.unwrap(), 0);
    assert_eq!(read(&backend, &path, None).await, (0, Vec::new()));
}

/// A server that answers every request with `status` and a GCS error body.
async fn answering(status: u16) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let body = format!("{{\"error\":{{\"code\":{status},\"message\":\"refused by the test\"}}}}");
                let answer = format!(
                    "HTTP/1.1 {status} Refused\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn probe_says_what_is_wrong() {
    let gcs = FakeGcs::start();
    backend(&gcs).probe().await.unwrap();

    let missing = crate::backend(&config(&gcs, "no-such-bucket", ""));
    let err = missing.probe().await.unwrap_err();
    assert!(
        matches!(err, ProbeError::NoSuchBucket { .. }) && err.is_permanent(),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "bucket \"no-such-bucket\" does not exist at {}: create it, or fix the account's bucket",
            gcs.endpoint()
        )
    );

    // A closed port: bound, then let go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let unreachable = crate::backend(&config(&gcs, gcs.bucket(), &format!("endpoint = \"http://{closed}\"")));
    let err = unreachable.probe().await.unwrap_err();
    assert!(
        matches!(err, ProbeError::Unreachable { .. }) && !err.is_permanent(),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "cannot reach Google Cloud Storage at http://{closed}: check the account's endpoint"
        )),
        "{err}"
    );

    for (status, start) in [
        (401, "Google Cloud Storage did not accept the credentials for bucket"),
        (403, "the service account may not use bucket"),
    ] {
        let endpoint = answering(status).await;
        let refused = crate::backend(&config(&gcs, gcs.bucket(), &format!("endpoint = \"{endpoint}\"")));
        let err = refused.probe().await.unwrap_err();
        assert!(err.is_permanent(), "{err:?}");
        assert!(err.to_string().starts_with(start), "{status}: {err}");
        let chain = netwatch_api::error::error_chain(&err);
        assert!(
            chain.contains(&format!("answered {status}: refused by the test")),
            "{chain}"
        );
    }

    // Other kinds: no I/O, Ok.
    let local = crate::backend("name = \"loc\"\nkind = \"local\"\npath = \"/nonexistent/netwatch\"");
    local.probe().await.unwrap();
}

/// A refused request carries the service's status and message, typed.
#[tokio::test]
async fn refusals_are_permanent_and_typed() {
    let endpoint = answering(403).await;
    let gcs = FakeGcs::start();
    let backend = crate::backend(&config(&gcs, gcs.bucket(), &format!("endpoint = \"{endpoint}\"")));
    let path = capture_path("refused");
    let err = backend
        .put_part(&path, "0123456789abcdef01234567", 1, body(b"x"), 1, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UploadError::PermissionDenied(_)) && err.is_permanent(),
        "{err:?}"
    );
    let err = backend.open(&path, None).await.unwrap_err();
    let OpenError::Client(client) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(client.status(), Some(403));
    assert!(
        matches!(client.gcs_error(), Some(GcsRequestError::Status { status: 403, message }) if message == "refused by the test"),
        "{client:?}"
    );
    assert!(err.is_permanent());
}

/// A file, with `text` in it, that lives as long as the returned guard.
fn file_with(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

/// `pem` run through `openssl pkey` with `args` (another format of the key).
fn openssl_pkey(pem: &str, args: &[&str]) -> String {
    let mut child = Command::new("openssl")
        .arg("pkey")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(pem.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// A key's JSON with field `name` set to `value` (JSON text) or, with `None`, removed.
fn key_with(name: &str, value: Option<&str>) -> String {
    let mut key: serde_json::Value =
        serde_json::from_str(&service_account_key_json(rsa_private_key_pem(), None)).unwrap();
    match value {
        Some(value) => key[name] = serde_json::from_str(value).unwrap(),
        None => {
            key.as_object_mut().unwrap().remove(name);
        }
    }
    key.to_string()
}

#[test]
fn bad_configurations_say_what_to_fix() {
    let pem = rsa_private_key_pem();
    let with_key = |key: &str, extra: &str| {
        format!("name = \"gcsacct\"\nkind = \"gcs\"\nbucket = \"captures\"\nservice_account_key = '''{key}'''\n{extra}")
    };
    let good_key = service_account_key_json(pem, None);
    let with_bucket = |bucket: &str| {
        format!("name = \"gcsacct\"\nkind = \"gcs\"\nbucket = \"{bucket}\"\nservice_account_key = '''{good_key}'''\n")
    };
    let with_private_key = |private_key: &str| with_key(&service_account_key_json(private_key, None), "");
    let not_json = file_with("{\"type\": \"service_account\",");
    let user = file_with(
        "{\"type\": \"authorized_user\", \"client_id\": \"x\", \"client_secret\": \"SECRET-1\", \"refresh_token\": \"SECRET-2\"}",
    );
    let key_file = file_with(&good_key);
    let key_file_line = format!("credentials = \"{}\"", key_file.path().display());
    let pkcs1 = openssl_pkey(pem, &["-traditional"]);
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{pkcs1}");
    let ec = Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
        .output()
        .unwrap()
        .stdout;
    let ec = String::from_utf8(ec).unwrap();
    let small = rsa_key_pem(1024);
    let mut damaged = pem.to_owned();
    damaged.replace_range(200..240, &"A".repeat(40));
    let rows: Vec<(String, String)> = vec![
        (with_bucket(""), "bucket \"\" is empty: GCS bucket names are 3-63 characters".to_owned()),
        (with_bucket("ab"), "bucket \"ab\" is 2 characters long".to_owned()),
        (with_bucket(&"a".repeat(64)), "is 64 characters long".to_owned()),
        (with_bucket("Captures"), "bucket \"Captures\" has the character 'C'".to_owned()),
        (with_bucket("-captures"), "bucket \"-captures\" starts with '-'".to_owned()),
        (with_bucket("192.168.0.1"), "bucket \"192.168.0.1\" is an IP address".to_owned()),
        (with_bucket("goog-captures"), "bucket \"goog-captures\" starts with \"goog\"".to_owned()),
        (with_bucket("my-google-captures"), "contains \"google\"".to_owned()),
        (
            "name = \"gcsacct\"\nkind = \"gcs\"\ncredentials = \"/x.json\"".to_owned(),
            "missing field `bucket`".to_owned(),
        ),
        (
            with_key(&good_key, &key_file_line),
            "storage account \"gcsacct\": both credentials and service_account_key are set: keep one".to_owned(),
        ),
        (
            "name = \"gcsacct\"\nkind = \"gcs\"\nbucket = \"captures\"\ncredentials = \"/nonexistent/gcs-key.json\"".to_owned(),
            "credentials file \"/nonexistent/gcs-key.json\" cannot be read (No such file or directory (os error 2)): \
             give the path of a service account's JSON key file that netwatch can read"
                .to_owned(),
        ),
        (
            format!(
                "name = \"gcsacct\"\nkind = \"gcs\"\nbucket = \"captures\"\ncredentials = \"{}\"",
                not_json.path().display()
            ),
            format!(
                "credentials file \"{}\" is not JSON (EOF while parsing a value at line 1 column 27): \
                 give a service account's key as Google Cloud's console downloads it",
                not_json.path().display()
            ),
        ),
        (
            format!(
                "name = \"gcsacct\"\nkind = \"gcs\"\nbucket = \"captures\"\ncredentials = \"{}\"",
                user.path().display()
            ),
            "is a key of type \"authorized_user\", not a service account's: a service account's JSON key says \
             \"type\": \"service_account\""
                .to_owned(),
        ),
        (
            with_key(&key_with("type", None), ""),
            "service_account_key has no \"type\": a service account's JSON key says".to_owned(),
        ),
        (with_key("[1, 2]", ""), "service_account_key is not JSON (not a JSON object)".to_owned()),
        (
            with_key(&key_with("private_key", None), ""),
            "\"private_key\" of service_account_key is missing: give a service account's whole JSON key".to_owned(),
        ),
        (
            with_key(&key_with("client_email", Some("42")), ""),
            "\"client_email\" of service_account_key is not a string".to_owned(),
        ),
        (
            with_key(&key_with("disable_oauth", Some("\"yes\"")), ""),
            "\"disable_oauth\" of service_account_key is not true or false".to_owned(),
        ),
        (
            with_private_key("not a key"),
            "the private_key of service_account_key is not a PEM private key: a service account's JSON key holds \
             a PEM PKCS#8 RSA key (-----BEGIN PRIVATE KEY-----); download a new key"
                .to_owned(),
        ),
        (
            with_private_key(&pkcs1),
            "the private_key of service_account_key is a PKCS#1 key (-----BEGIN RSA PRIVATE KEY-----), not PKCS#8"
                .to_owned(),
        ),
        (
            with_private_key(&ec),
            "the private_key of service_account_key is not an RSA key of 2048 bits or more, or is damaged".to_owned(),
        ),
        (
            with_private_key(&small),
            "the private_key of service_account_key is not an RSA key of 2048 bits or more, or is damaged".to_owned(),
        ),
        (with_private_key(&damaged), "the private_key of service_account_key is not".to_owned()),
        (
            with_key(&key_with("gcs_base_url", Some("\"127.0.0.1:4443\"")), ""),
            "gcs_base_url of service_account_key: endpoint \"127.0.0.1:4443\" is not a URL".to_owned(),
        ),
        (
            with_key(&good_key, "endpoint = \"ftp://127.0.0.1:4443\""),
            "endpoint \"ftp://127.0.0.1:4443\" has the scheme \"ftp\": give the storage service's http:// or https:// base URL"
                .to_owned(),
        ),
        (
            with_key(&good_key, "endpoint = \"http://127.0.0.1:4443/?project=p\""),
            "endpoint \"http://127.0.0.1:4443/?project=p\" has a query, fragment or user".to_owned(),
        ),
        (
            with_key(&good_key, "part_size = 1000"),
            "storage account \"gcsacct\": part_size 1000 is below the 262144 bytes (256 KiB) that gcs accounts need: \
             raise it or remove it for the default 8388608 (8 MiB)"
                .to_owned(),
        ),
        (
            with_key(&good_key, "part_size = 536870912"),
            "part_size 536870912 is above the 268435456 bytes (256 MiB)".to_owned(),
        ),
        (with_key(&good_key, "bucket_name = \"b\""), "unknown field `bucket_name`".to_owned()),
        (with_key(&good_key, "region = \"eu\""), "unknown field `region`".to_owned()),
    ];
    assert!(rows.len() >= 15);
    for (toml, message) in rows {
        let err = toml::from_str::<AccountConfig>(&toml).unwrap_err().to_string();
        assert!(err.contains(&message), "{toml}\n---\n{err}\n--- wanted ---\n{message}");
        // No message shows the key.
        for secret in ["SECRET-1", "SECRET-2", &pem[40..80], &pkcs1[40..80], &small[40..80]] {
            assert!(!err.contains(secret), "{err}");
        }
    }

    // A good key, from a file or inline, with a part size of 256 KiB.
    let account: AccountConfig = toml::from_str(&format!(
        "name = \"gcsacct\"\nkind = \"gcs\"\nbucket = \"captures\"\n{key_file_line}\npart_size = 262144"
    ))
    .unwrap();
    assert_eq!((account.kind.as_str(), account.part_size()), ("gcs", 256 * 1024));
    let backend = Backend::new(&account).unwrap();
    assert_eq!(backend.part_size(), 256 * 1024);
    let Backend::Gcs(gcs) = &backend else {
        panic!("{backend:?}")
    };
    assert_eq!(
        (gcs.bucket(), gcs.endpoint()),
        ("captures", "https://storage.googleapis.com")
    );
    let shown = format!("{account:?} {backend:?}");
    assert!(
        !shown.contains("PRIVATE KEY") && !shown.contains(&pem[40..80]),
        "{shown}"
    );
    // camelCase, as the API sends it; the key's gcs_base_url is the endpoint.
    let camel: AccountConfig = serde_json::from_value(serde_json::json!({
        "name": "gcsacct", "kind": "gcs", "bucket": "captures",
        "serviceAccountKey": service_account_key_json(pem, Some("http://127.0.0.1:4443")),
    }))
    .unwrap();
    let Backend::Gcs(gcs) = Backend::new(&camel).unwrap() else {
        panic!()
    };
    assert_eq!(gcs.endpoint(), "http://127.0.0.1:4443");
    assert!(
        camel.same_place(&account) && account.same_place(&camel),
        "only the key differs"
    );

    // Built by hand, refused by Backend::new as by parsing.
    let mut both = account.clone();
    let netwatch_storage::AccountKind::Gcs {
        service_account_key, ..
    } = &mut both.kind
    else {
        panic!()
    };
    *service_account_key = Some(good_key.as_str().into());
    let err = Backend::new(&both).unwrap_err();
    assert!(matches!(err, BackendError::Config(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("both credentials and service_account_key are set"),
        "{err}"
    );
    drop((not_json, user, key_file));
}
