//! Capture files in storage the operator already has (issue 5): Azure Blob
//! (Azurite) and S3 (moto), real servers started by the test in the
//! controller's host `b`, reached there by the controller and over the veth
//! pair by the agent in `a`, which uploads straight to them with the grants
//! the controller hands out. Each file is checked against the SHA-256 the
//! agent computed before it uploaded, so "byte-identical" is the capture's own
//! bytes, not a copy of a copy.

use std::io::Write as _;
use std::time::Duration;

use netwatch_testkit::{Azurite, B4, Moto, Place};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::deployment::{Deployment, SUB, VM, send_udp, udp_packets};

/// Part size of the object-store accounts: their floor, so a capture of a
/// few MiB already uploads in several parts.
const PART_SIZE: u64 = 5 * 1024 * 1024;

/// A deployment whose controller also has account `blobs` (Azurite) and `objects` (moto).
fn deployment_with_storage() -> (Deployment, Azurite, Moto) {
    let mut nw = Deployment::start();
    let place = Place::netns(&nw.pair.b, B4);
    let azurite = Azurite::start_at(place.clone());
    let moto = Moto::start_at(place);
    let accounts = format!(
        "\n[[storage]]\nname = \"blobs\"\nkind = \"azureblob\"\naccount = \"{}\"\ncontainer = \"{}\"\nkey = \"{}\"\n\
         endpoint = \"{}\"\npart_size = {PART_SIZE}\n\
         \n[[storage]]\nname = \"objects\"\nkind = \"s3\"\nbucket = \"{}\"\nregion = \"{}\"\nendpoint = \"{}\"\n\
         access_key_id = \"{}\"\nsecret_access_key = \"{}\"\npart_size = {PART_SIZE}\n",
        azurite.account(),
        azurite.container(),
        azurite.key(),
        azurite.endpoint(),
        moto.bucket(),
        Moto::REGION,
        moto.endpoint(),
        Moto::ACCESS_KEY_ID,
        Moto::SECRET_ACCESS_KEY,
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(nw.dir.path().join("up/config.toml"))
        .unwrap()
        .write_all(accounts.as_bytes())
        .unwrap();
    nw.kill_controller();
    nw.restart_controller();
    (nw, azurite, moto)
}

/// Creates capture `name` with `properties`, its files going to `account`.
fn create_on(nw: &Deployment, name: &str, account: &str, properties: Value) -> Value {
    let mut properties = properties;
    properties["target"] = json!(format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{VM}"
    ));
    properties["storageLocation"] = json!({"storageId": format!(
        "/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/{account}"
    )});
    let body = json!({ "properties": properties }).to_string();
    nw.sdk(&["create", name, &body])
}

/// Downloads file `file` of a status's `netwatch.files` and checks it is the
/// agent's (its SHA-256 and size); its path.
fn download_checked(nw: &Deployment, file: &Value) -> std::path::PathBuf {
    let url = file["storagePath"].as_str().unwrap();
    let path = nw.dir.path().join(format!("dl-{}", url.rsplit('/').next().unwrap()));
    nw.sdk(&["download", url, path.to_str().unwrap()]);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, file["sizeInBytes"].as_u64().unwrap(), "{file}");
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        digest,
        file["sha256"].as_str().unwrap(),
        "downloaded bytes are the agent's: {file}"
    );
    path
}

#[test]
fn captures_upload_in_parts_to_azure_blob_and_s3_and_come_back_byte_identical() {
    let (nw, _azurite, _moto) = deployment_with_storage();
    for (account, port) in [("blobs", 7301_u16), ("objects", 7302)] {
        let name = format!("to-{account}");
        let filter = json!([{"protocol": "UDP", "localPort": port.to_string()}]);
        create_on(
            &nw,
            &name,
            account,
            json!({"filters": filter, "timeLimitInSeconds": 120}),
        );
        // 4,800 datagrams of 1,200 bytes: ~5.9 MB, two parts.
        send_udp(&nw.pair, &[port], 4800, 1200);
        nw.status_until(&name, "counting", |s| s["netwatch"]["packetsCaptured"] == 4800);
        nw.sdk(&["stop", &name]);
        let stored = nw.status_until(&name, "stored", |s| s["netwatch"]["uploadState"] == "Succeeded");
        assert_eq!(stored["netwatch"]["uploadPercent"], 100, "{stored}");
        let files = stored["netwatch"]["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{stored}");
        assert!(
            files[0]["sizeInBytes"].as_u64().unwrap() > PART_SIZE,
            "more than one part: {stored}"
        );
        let path = download_checked(&nw, &files[0]);
        let packets = udp_packets(&path);
        assert_eq!(packets.len(), 4800, "{account}");
        assert!(packets.iter().all(|p| p.0 == port && p.2 == 14 + 20 + 8 + 1200));
    }
}

#[test]
fn a_file_waits_in_the_spool_while_storage_is_down_and_across_an_agent_restart() {
    let (mut nw, mut azurite, _moto) = deployment_with_storage();
    create_on(
        &nw,
        "outage",
        "blobs",
        json!({"filters": [{"protocol": "UDP", "localPort": "7311"}], "timeLimitInSeconds": 120}),
    );
    send_udp(&nw.pair, &[7311], 3000, 1000);
    nw.status_until("outage", "counting", |s| s["netwatch"]["packetsCaptured"] == 3000);
    // Storage goes away before the capture ends: the stop returns once the
    // file is safe in the agent's spool, and the status says why it waits.
    azurite.stop();
    nw.sdk(&["stop", "outage"]);
    let waiting = nw.status_until("outage", "waiting for storage", |s| {
        s["netwatch"]["uploadState"] == "Retrying"
    });
    assert_eq!(waiting["packetCaptureStatus"], "Stopped", "{waiting}");
    let message = waiting["netwatch"]["uploadMessage"].as_str().unwrap_or_default();
    assert!(message.contains("spool"), "{waiting}");
    assert_eq!(waiting["netwatch"]["filesPending"], 1, "{waiting}");

    // The agent dies (kill -9) while the file waits, and comes back.
    let agent_dir = nw.dir.path().join("agent");
    drop(nw.agent.take());
    let token = nw.credential("agent_token");
    nw.agent = Some(nw.start_agent(&token, &agent_dir, "agent-2.log"));
    std::thread::sleep(Duration::from_secs(2));
    let still = nw.sdk(&["status", "outage"]);
    assert_eq!(
        still["netwatch"]["uploadState"], "Retrying",
        "storage is still down: {still}"
    );

    // Storage is back: the spooled file goes up, whole.
    azurite.start_again();
    let stored = nw.status_until("outage", "stored", |s| s["netwatch"]["uploadState"] == "Succeeded");
    let files = stored["netwatch"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{stored}");
    let path = download_checked(&nw, &files[0]);
    assert_eq!(udp_packets(&path).len(), 3000);
    let spool: Vec<_> = std::fs::read_dir(agent_dir.join("spool")).unwrap().collect();
    assert!(spool.is_empty(), "the spool is empty once stored: {spool:?}");
}

#[test]
fn a_continuous_capture_stores_each_file_as_it_closes() {
    let (nw, _azurite, _moto) = deployment_with_storage();
    create_on(
        &nw,
        "ring",
        "objects",
        json!({
            "filters": [{"protocol": "UDP", "localPort": "7321"}],
            "continuousCapture": true,
            // Fewer files kept on the host than the capture makes: the ring
            // deletes files whether or not they are stored yet.
            "captureSettings": {"fileCount": 3, "fileSizeInBytes": 200_000, "sessionTimeLimitInSeconds": 300},
        }),
    );
    // ~1.3 MB in 1,000-byte datagrams: six files of 200 kB or so.
    send_udp(&nw.pair, &[7321], 1300, 1000);
    let running = nw.status_until("ring", "storing files while it runs", |s| {
        s["packetCaptureStatus"] == "Running" && s["netwatch"]["files"].as_array().is_some_and(|f| f.len() >= 4)
    });
    assert_eq!(running["packetCaptureStatus"], "Running", "{running}");
    nw.sdk(&["stop", "ring"]);
    let stored = nw.status_until("ring", "stored", |s| s["netwatch"]["uploadState"] == "Succeeded");
    let files = stored["netwatch"]["files"].as_array().unwrap();
    assert!(files.len() >= 6, "{stored}");
    let mut packets = 0;
    for file in files {
        packets += udp_packets(&download_checked(&nw, file)).len();
    }
    assert_eq!(packets, 1300, "every datagram is in one of the stored files");
    let left = std::fs::read_dir(nw.dir.path().join("agent/captures")).unwrap().count();
    assert_eq!(left, 0, "the host's copies go once stored");
}
