//! Capture files in storage the operator already has (issues 5, 19): Azure
//! Blob (Azurite), S3 (moto) and Google Cloud Storage (fake-gcs-server),
//! real servers started by the test in the controller's host `b`, reached there by the controller and over the veth
//! pair by the agent in `a`, which uploads straight to them with the grants
//! the controller hands out. Each file is checked against the SHA-256 the
//! agent computed before it uploaded, so "byte-identical" is the capture's own
//! bytes, not a copy of a copy.

use std::io::Write as _;
use std::time::Duration;

use netwatch_testkit::{Azurite, B4, FakeGcs, IF_A, Moto, NetnsPair, Place};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::deployment::{Deployment, SUB, VM, send_udp, udp_packets};

/// Part size of the object-store accounts: their floor, so a capture of a
/// few MiB already uploads in several parts.
const PART_SIZE: u64 = 5 * 1024 * 1024;

/// The storage servers of [`deployment_with_storage`].
struct Servers {
    azurite: Azurite,
    #[expect(dead_code, reason = "held: the server lives as long as the test")]
    moto: Moto,
    gcs: FakeGcs,
}

/// The accounts of [`deployment_with_storage`], each with a UDP port of its own.
const ACCOUNTS: [(&str, u16); 3] = [("blobs", 0), ("objects", 1), ("gcsbucket", 2)];

/// A deployment whose controller also has account `blobs` (Azurite),
/// `objects` (moto) and `gcsbucket` (fake-gcs-server, with a service
/// account's key).
fn deployment_with_storage() -> (Deployment, Servers) {
    let mut nw = Deployment::start();
    let place = Place::netns(&nw.pair.b, B4);
    let azurite = Azurite::start_at(place.clone());
    let moto = Moto::start_at(place.clone());
    let gcs = FakeGcs::start_at(place);
    let accounts = format!(
        "\n[[storage]]\nname = \"blobs\"\nkind = \"azureblob\"\naccount = \"{}\"\ncontainer = \"{}\"\nkey = \"{}\"\n\
         endpoint = \"{}\"\npart_size = {PART_SIZE}\n\
         \n[[storage]]\nname = \"objects\"\nkind = \"s3\"\nbucket = \"{}\"\nregion = \"{}\"\nendpoint = \"{}\"\n\
         access_key_id = \"{}\"\nsecret_access_key = \"{}\"\npart_size = {PART_SIZE}\n\
         \n[[storage]]\nname = \"gcsbucket\"\nkind = \"gcs\"\nbucket = \"{}\"\nendpoint = \"{}\"\n\
         service_account_key = '''{}'''\npart_size = {PART_SIZE}\n",
        azurite.account(),
        azurite.container(),
        azurite.key(),
        azurite.endpoint(),
        moto.bucket(),
        Moto::REGION,
        moto.endpoint(),
        Moto::ACCESS_KEY_ID,
        Moto::SECRET_ACCESS_KEY,
        gcs.bucket(),
        gcs.endpoint(),
        gcs.service_account_key(),
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(nw.dir.path().join("up/config.toml"))
        .unwrap()
        .write_all(accounts.as_bytes())
        .unwrap();
    nw.kill_controller();
    nw.restart_controller();
    (nw, Servers { azurite, moto, gcs })
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
pub(crate) fn download_checked(nw: &Deployment, file: &Value) -> std::path::PathBuf {
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
fn captures_upload_in_parts_to_azure_blob_s3_and_gcs_and_come_back_byte_identical() {
    let (nw, _servers) = deployment_with_storage();
    for (account, port) in ACCOUNTS.map(|(account, i)| (account, 7301 + i)) {
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
    let (mut nw, mut servers) = deployment_with_storage();
    let agent_dir = nw.dir.path().join("agent");
    for (round, (account, port)) in [("blobs", 7311_u16), ("gcsbucket", 7312)].into_iter().enumerate() {
        let name = format!("outage-{account}");
        let storage_down = |servers: &mut Servers, down: bool| match (account, down) {
            ("blobs", true) => servers.azurite.stop(),
            ("blobs", false) => servers.azurite.start_again(),
            (_, true) => servers.gcs.stop(),
            (_, false) => servers.gcs.start_again(),
        };
        create_on(
            &nw,
            &name,
            account,
            json!({"filters": [{"protocol": "UDP", "localPort": port.to_string()}], "timeLimitInSeconds": 120}),
        );
        send_udp(&nw.pair, &[port], 3000, 1000);
        nw.status_until(&name, "counting", |s| s["netwatch"]["packetsCaptured"] == 3000);
        // Storage goes away before the capture ends: the stop returns once the
        // file is safe in the agent's spool, and the status says why it waits.
        storage_down(&mut servers, true);
        nw.sdk(&["stop", &name]);
        let waiting = nw.status_until(&name, "waiting for storage", |s| {
            s["netwatch"]["uploadState"] == "Retrying"
        });
        assert_eq!(waiting["packetCaptureStatus"], "Stopped", "{account}: {waiting}");
        let message = waiting["netwatch"]["uploadMessage"].as_str().unwrap_or_default();
        assert!(message.contains("spool"), "{account}: {waiting}");
        assert_eq!(waiting["netwatch"]["filesPending"], 1, "{account}: {waiting}");

        // The agent dies (kill -9) while the file waits, and comes back.
        drop(nw.agent.take());
        let token = nw.credential("agent_token");
        let log = if round == 0 {
            "agent-2.log".to_owned()
        } else {
            format!("agent-{account}.log")
        };
        nw.agent = Some(nw.start_agent(&token, &agent_dir, &log));
        std::thread::sleep(Duration::from_secs(2));
        let still = nw.sdk(&["status", &name]);
        assert_eq!(
            still["netwatch"]["uploadState"], "Retrying",
            "{account}: storage is still down: {still}"
        );

        // Storage is back: the spooled file goes up, whole.
        storage_down(&mut servers, false);
        let stored = nw.status_until(&name, "stored", |s| s["netwatch"]["uploadState"] == "Succeeded");
        let files = stored["netwatch"]["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{account}: {stored}");
        let path = download_checked(&nw, &files[0]);
        assert_eq!(udp_packets(&path).len(), 3000, "{account}");
        let spool: Vec<_> = std::fs::read_dir(agent_dir.join("spool")).unwrap().collect();
        assert!(spool.is_empty(), "{account}: the spool is empty once stored: {spool:?}");
    }
}

#[test]
fn a_continuous_capture_stores_each_file_as_it_closes() {
    let (nw, _servers) = deployment_with_storage();
    for (account, port) in ACCOUNTS.map(|(account, i)| (account, 7321 + i)) {
        let name = format!("ring-{account}");
        create_on(
            &nw,
            &name,
            account,
            json!({
                "filters": [{"protocol": "UDP", "localPort": port.to_string()}],
                "continuousCapture": true,
                // Fewer files kept on the host than the capture makes: the ring
                // deletes files whether or not they are stored yet.
                "captureSettings": {"fileCount": 3, "fileSizeInBytes": 200_000, "sessionTimeLimitInSeconds": 300},
            }),
        );
        // ~1.3 MB in 1,000-byte datagrams: six files of 200 kB or so.
        send_udp(&nw.pair, &[port], 1300, 1000);
        let running = nw.status_until(&name, "storing files while it runs", |s| {
            s["packetCaptureStatus"] == "Running" && s["netwatch"]["files"].as_array().is_some_and(|f| f.len() >= 4)
        });
        assert_eq!(running["packetCaptureStatus"], "Running", "{account}: {running}");
        // Already in storage, whole, while the capture goes on.
        download_checked(&nw, &running["netwatch"]["files"][0]);
        nw.sdk(&["stop", &name]);
        let stored = nw.status_until(&name, "stored", |s| s["netwatch"]["uploadState"] == "Succeeded");
        let files = stored["netwatch"]["files"].as_array().unwrap();
        assert!(files.len() >= 6, "{account}: {stored}");
        let mut packets = 0;
        for file in files {
            packets += udp_packets(&download_checked(&nw, file)).len();
        }
        assert_eq!(packets, 1300, "{account}: every datagram is in one of the stored files");
        let left = std::fs::read_dir(nw.dir.path().join("agent/captures")).unwrap().count();
        assert_eq!(left, 0, "{account}: the host's copies go once stored");
    }
}

/// Runs `tc` in namespace `ns`.
fn tc(ns: &str, args: &[&str]) {
    netwatch_testkit::run(NetnsPair::exec(ns, "tc").args(args));
}

/// Bytes interface `dev` of namespace `ns` has sent so far.
fn tx_bytes(ns: &str, dev: &str) -> u64 {
    let out =
        netwatch_testkit::run(NetnsPair::exec(ns, "cat").arg(format!("/sys/class/net/{dev}/statistics/tx_bytes")));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The one file ticket in an agent's spool (`{key}_{seq}.json`, not a
/// capture's `{key}.capture.json`).
fn spool_ticket(agent_dir: &std::path::Path) -> Value {
    let tickets: Vec<Value> = std::fs::read_dir(agent_dir.join("spool"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.ends_with(".json") && !name.ends_with(".capture.json")
        })
        .map(|path| serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
        .collect();
    assert_eq!(tickets.len(), 1, "one file waits in the spool: {tickets:?}");
    tickets.into_iter().next().unwrap()
}

#[test]
fn an_agent_killed_during_an_upload_resumes_it_after_the_parts_stored() {
    let (mut nw, _servers) = deployment_with_storage();
    let agent_dir = nw.dir.path().join("agent");
    for (account, port) in ACCOUNTS.map(|(account, i)| (account, 7331 + i)) {
        let name = format!("killed-{account}");
        create_on(
            &nw,
            &name,
            account,
            json!({"filters": [{"protocol": "UDP", "localPort": port.to_string()}], "timeLimitInSeconds": 180}),
        );
        // 9,000 datagrams of 1,400 bytes: ~13 MB, three parts.
        send_udp(&nw.pair, &[port], 9000, 1400);
        nw.status_until(&name, "counting", |s| s["netwatch"]["packetsCaptured"] == 9000);
        // The agent's uploads leave its host at 1 MB/s from now on (the
        // capture's own traffic went in before): a part takes seconds.
        tc(
            &nw.pair.a,
            &[
                "qdisc", "add", "dev", IF_A, "root", "tbf", "rate", "8mbit", "burst", "32kbit", "latency", "400ms",
            ],
        );
        // The stop, without waiting for its operation: that ends once the file is stored.
        let stop = format!(
            "/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/\
             NetworkWatcher_westus/packetCaptures/{name}/stop?api-version=2024-07-01"
        );
        let accepted = nw.sdk(&["rest", "POST", &stop]);
        assert_eq!(accepted["status"], 202, "{accepted}");
        let midway = nw.status_until(&name, "uploading with a part stored", |s| {
            let percent = s["netwatch"]["uploadPercent"].as_u64().unwrap_or(0);
            // Parts go side by side: the short last one is stored first
            // (~20 %), the two whole ones seconds later, together.
            s["netwatch"]["uploadState"] == "Uploading" && (1..100).contains(&percent)
        });
        // kill -9, mid-upload.
        drop(nw.agent.take());
        tc(&nw.pair.a, &["qdisc", "del", "dev", IF_A, "root"]);

        // The spool kept what was stored: the receipts of the parts before the kill.
        let ticket = spool_ticket(&agent_dir);
        let size = ticket["size"].as_u64().unwrap();
        assert!(size > 2 * PART_SIZE, "three parts: {ticket}");
        let receipts = ticket["upload"]["receipts"].as_array().unwrap();
        assert!(
            (1..3).contains(&receipts.len()),
            "{account}: one or two of three parts stored before the kill: {ticket}\n{midway}"
        );
        let part_size = ticket["upload"]["partSize"].as_u64().unwrap();
        let stored_before: u64 = receipts
            .iter()
            .map(|r| {
                let start = (r["part"].as_u64().unwrap() - 1) * part_size;
                (size - start).min(part_size)
            })
            .sum();

        // The agent comes back on the same data and takes the upload up again.
        let sent_before = tx_bytes(&nw.pair.a, IF_A);
        let token = nw.credential("agent_token");
        let log = format!("agent-{account}-after-kill.log");
        nw.agent = Some(nw.start_agent(&token, &agent_dir, &log));
        let stored = nw.status_until(&name, "stored", |s| s["netwatch"]["uploadState"] == "Succeeded");
        let sent = tx_bytes(&nw.pair.a, IF_A) - sent_before;
        let log = std::fs::read_to_string(nw.dir.path().join(&log)).unwrap();
        assert!(
            log.contains(&format!(
                "resuming upload of file 0: {} of its 3 parts are stored",
                receipts.len()
            )),
            "{account}: the restarted agent resumes the upload:\n{log}"
        );
        assert!(
            !log.contains("beginning it again"),
            "{account}: the same upload goes on:\n{log}"
        );
        // Only the parts not stored went again: the host sent the rest of the
        // file (with TCP, TLS, HTTP and its reports around it), not one part
        // more (a stored part sent again would be 5 MiB more).
        let rest = size - stored_before;
        eprintln!(
            "{account}: {} part(s) stored before the kill; {sent} bytes sent after it for the {rest} not stored",
            receipts.len()
        );
        assert!(
            sent < rest + PART_SIZE - 1024 * 1024,
            "{account}: {sent} bytes sent after the restart for the {rest} bytes not stored"
        );

        assert_eq!(stored["packetCaptureStatus"], "Stopped", "{stored}");
        let files = stored["netwatch"]["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{stored}");
        assert_eq!(files[0]["sizeInBytes"], size, "{stored}");
        let packets = udp_packets(&download_checked(&nw, &files[0]));
        assert_eq!(packets.len(), 9000, "{account}: nothing lost");
        assert!(packets.iter().all(|p| p.0 == port && p.2 == 14 + 20 + 8 + 1400));
        let spool: Vec<_> = std::fs::read_dir(agent_dir.join("spool")).unwrap().collect();
        assert!(spool.is_empty(), "{account}: the spool is empty once stored: {spool:?}");
    }
}

/// `netwatch ARGS` in the controller's host, as its admin.
fn netwatch_cli(nw: &Deployment, args: &[&str]) -> std::process::Output {
    NetnsPair::exec(&nw.pair.b, crate::util::netwatch())
        .args(args)
        .env("NETWATCH_URL", &nw.url)
        .env("NETWATCH_TOKEN", &nw.token)
        .env("NETWATCH_CA", &nw.ca)
        .env("XDG_CONFIG_HOME", nw.dir.path().join("no-config"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run netwatch")
}

/// GCS accounts made through the API (`netwatch storage account create
/// --backend gcs`) are checked when made: every bad one is refused with what
/// to fix (the CLI's own checks exit 2, the controller's answer 400 and the
/// CLI exits 1), and none is stored; a good one is, and never shows its key.
#[test]
fn bad_gcs_accounts_are_refused_when_made_and_nothing_is_stored() {
    let nw = Deployment::controller_only();
    let gcs = FakeGcs::start_at(Place::netns(&nw.pair.b, B4));
    let good: Value = serde_json::from_str(&gcs.service_account_key()).unwrap();
    let key_file = |name: &str, text: &str| {
        let path = nw.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let with = |field: &str, value: Option<Value>| {
        let mut key = good.clone();
        match value {
            Some(value) => key[field] = value,
            None => drop(key.as_object_mut().unwrap().remove(field)),
        }
        key.to_string()
    };
    let good_file = key_file("good.json", &good.to_string());
    // A piece of the private key's body, which no answer may hold.
    let secret = good["private_key"].as_str().unwrap()[60..100].to_owned();
    let secret = secret.as_str();
    let not_json = key_file("not-json.json", "{\"type\": \"service_account\",");
    let user = key_file("user.json", &with("type", Some(json!("authorized_user"))));
    let no_private_key = key_file("no-private-key.json", &with("private_key", None));
    let not_pem = key_file("not-pem.json", &with("private_key", Some(json!("not a key"))));
    let no_email = key_file("no-email.json", &with("client_email", None));
    let endpoint = gcs.endpoint();
    let bucket = gcs.bucket().to_owned();
    // A port nothing listens on: the controller cannot reach it.
    let closed = format!("http://{B4}:9");
    fn create(name: &str) -> Vec<&str> {
        vec![
            "storage",
            "account",
            "create",
            "-n",
            name,
            "-g",
            "netwatch",
            "--backend",
            "gcs",
        ]
    }
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec![], 2, "argument --bucket is required with --backend gcs"),
        (
            vec!["--bucket", "b", "--credentials", "/nonexistent/key.json"],
            2,
            "argument --credentials: cannot read",
        ),
        (
            vec!["--bucket", "b", "--region", "eu"],
            2,
            "argument --region: it is for --backend s3",
        ),
        (
            vec!["--bucket", "Captures", "--credentials", &good_file],
            1,
            "bucket \"Captures\" has the character 'C'",
        ),
        (
            vec!["--bucket", "goog-caps", "--credentials", &good_file],
            1,
            "starts with \"goog\"",
        ),
        (
            vec!["--bucket", "ab", "--credentials", &good_file],
            1,
            "bucket \"ab\" is 2 characters long",
        ),
        (vec!["--bucket", &bucket, "--credentials", &not_json], 1, "is not JSON"),
        (
            vec!["--bucket", &bucket, "--credentials", &user],
            1,
            "not a service account's",
        ),
        (
            vec!["--bucket", &bucket, "--credentials", &no_private_key],
            1,
            "\"private_key\" of service_account_key is missing",
        ),
        (
            vec!["--bucket", &bucket, "--credentials", &not_pem],
            1,
            "is not a PEM private key",
        ),
        (
            vec!["--bucket", &bucket, "--credentials", &no_email],
            1,
            "\"client_email\" of service_account_key is missing",
        ),
        (
            vec![
                "--bucket",
                &bucket,
                "--credentials",
                &good_file,
                "--endpoint",
                "ftp://x",
            ],
            1,
            "has the scheme \"ftp\"",
        ),
        (
            vec!["--bucket", &bucket, "--credentials", &good_file, "--part-size", "1000"],
            1,
            "part_size 1000 is below",
        ),
        (
            vec!["--bucket", &bucket, "--credentials", &good_file, "--endpoint", &closed],
            1,
            "cannot reach Google Cloud Storage",
        ),
        (
            vec![
                "--bucket",
                "no-such-bucket",
                "--credentials",
                &good_file,
                "--endpoint",
                &endpoint,
            ],
            1,
            "bucket \"no-such-bucket\" does not exist",
        ),
    ];
    for (i, (args, code, says)) in cases.iter().enumerate() {
        let name = format!("badgcs{i}");
        let mut command = create(&name);
        command.extend(args);
        let out = netwatch_cli(&nw, &command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr:?} does not say {says:?}");
        assert!(!stderr.contains(secret), "{args:?}: the key is never shown: {stderr}");
    }
    // The API itself: a key file on the controller's machine is not read; the key must be text.
    let id = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/netwatch/providers/\
              Microsoft.Storage/storageAccounts";
    for (i, (netwatch, says)) in [
        (
            json!({"kind": "gcs", "bucket": bucket, "credentials": "/etc/passwd"}),
            "the API does not read",
        ),
        (
            json!({"kind": "gcs", "bucket": bucket, "serviceAccountKey": good}),
            "invalid type",
        ),
        (
            json!({"kind": "gcs", "bucket": bucket, "region": "eu"}),
            "unknown field `region`",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({"location": "westus", "properties": {"netwatch": netwatch}}).to_string();
        let answer = nw.sdk(&["rest", "PUT", &format!("{id}/badapi{i}?api-version=2025-08-01"), &body]);
        assert_eq!(answer["status"], 400, "{answer}");
        assert!(answer.to_string().contains(says), "{answer} does not say {says:?}");
    }
    let listed = netwatch_cli(&nw, &["storage", "account", "list", "--query", "[].name", "-o", "tsv"]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "netwatchlocal\n",
        "nothing was stored: {}",
        String::from_utf8_lossy(&listed.stderr)
    );

    // A good one: made, shown without its key.
    let mut command = create("goodgcs");
    command.extend([
        "--bucket",
        &bucket,
        "--credentials",
        &good_file,
        "--endpoint",
        &endpoint,
    ]);
    let out = netwatch_cli(&nw, &command);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let made: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            &made["netwatch"]["kind"],
            &made["netwatch"]["bucket"],
            &made["netwatch"]["credential"]
        ),
        (&json!("gcs"), &json!(bucket), &json!("key")),
        "{made}"
    );
    assert!(!stdout.contains(secret) && !stdout.contains("private_key"), "{stdout}");
}

/// A local account's parts handed over by the agent on the controller's own
/// machine (issue 19): `netwatch up` with its agent, on loopback in host b;
/// the agent's welcome names the controller's hand-over socket, so parts go
/// as the spooled file's descriptor and the kernel copies them
/// (`copy_file_range`), not over HTTPS. The file comes back byte for byte
/// (its SHA-256 is the agent's); a grant that is not the controller's is
/// refused through the socket as over HTTPS.
#[test]
fn an_agent_on_the_controllers_machine_hands_its_parts_over() {
    let pair = NetnsPair::new();
    let dir = tempfile::tempdir().unwrap();
    let (up, url) = crate::deployment::start_up_args(&pair.b, dir.path(), "127.0.0.1:0", &[]);
    let mut nw = Deployment {
        pair,
        dir,
        url,
        token: String::new(),
        ca: std::path::PathBuf::new(),
        up: Some(up),
        agent: None,
        agent_bin: crate::util::netwatch().into(),
    };
    nw.token = nw.credential("admin_token");
    nw.ca = nw.dir.path().join("up/ca.pem");
    let vms = format!("/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines?api-version=2024-07-01");
    let registered = netwatch_testkit::eventually(200, Duration::from_millis(100), || {
        nw.sdk(&["rest", "GET", &vms])["body"]["value"]
            .as_array()
            .is_some_and(|vms| !vms.is_empty())
    });
    assert!(registered, "up's agent did not register within 20 s\n{}", nw.logs());
    let vm = nw.sdk(&["rest", "GET", &vms])["body"]["value"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"properties": {
        "target": vm,
        "storageLocation": {"storageId": format!(
            "/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/netwatchlocal"
        )},
        // From b to a: on b (this agent's host) 7341 is the remote port.
        "filters": [{"protocol": "UDP", "remotePort": "7341"}],
        "timeLimitInSeconds": 120,
    }});
    nw.sdk(&["create", "handed", &body.to_string()]);
    // 16,000 datagrams of 1,400 bytes: ~23 MB, three parts of 8 MiB.
    send_udp(&nw.pair, &[7341], 16_000, 1400);
    nw.status_until("handed", "counting", |s| s["netwatch"]["packetsCaptured"] == 16_000);
    nw.sdk(&["stop", "handed"]);
    let stored = nw.status_until("handed", "stored", |s| s["netwatch"]["uploadState"] == "Succeeded");
    let files = stored["netwatch"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{stored}");
    assert!(
        files[0]["sizeInBytes"].as_u64().unwrap() > 16 * 1024 * 1024,
        "three parts: {stored}"
    );
    // Captured on `any` (Linux cooked headers): every record is one datagram.
    let (_, packets) = netwatch_testkit::read_pcap(&download_checked(&nw, &files[0]));
    assert_eq!(packets.len(), 16_000, "every datagram stored");
    assert!(packets.iter().all(|p| p.orig_len >= 20 + 8 + 1400), "whole datagrams");
    let log = nw.logs();
    assert!(
        log.contains("parts go to the controller on this machine by hand-over"),
        "the agent handed its parts over:\n{log}"
    );

    // An Azure account with only a SAS: its parts go through the controller
    // too, handed over and relayed to Azurite from the file.
    let azurite = Azurite::start_at(Place::netns(&nw.pair.b, B4));
    let account = json!({"location": "westus", "properties": {"netwatch": {
        "kind": "azureblob", "account": azurite.account(), "container": azurite.container(),
        "sas": azurite.container_sas(), "endpoint": azurite.endpoint(), "partSize": PART_SIZE,
    }}});
    let accounts = format!("/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts");
    let made = nw.sdk(&[
        "rest",
        "PUT",
        &format!("{accounts}/sasblobs?api-version=2025-08-01"),
        &account.to_string(),
    ]);
    assert_eq!(made["status"], 200, "{made}");
    let mut body = body;
    body["properties"]["storageLocation"]["storageId"] = json!(format!("{accounts}/sasblobs"));
    body["properties"]["filters"] = json!([{"protocol": "UDP", "remotePort": "7342"}]);
    nw.sdk(&["create", "relayed", &body.to_string()]);
    // 9,000 datagrams of 1,400 bytes: ~13 MB, three parts of 5 MiB.
    send_udp(&nw.pair, &[7342], 9000, 1400);
    nw.status_until("relayed", "counting", |s| s["netwatch"]["packetsCaptured"] == 9000);
    nw.sdk(&["stop", "relayed"]);
    let stored = nw.status_until("relayed", "stored", |s| s["netwatch"]["uploadState"] == "Succeeded");
    let files = stored["netwatch"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{stored}");
    let (_, packets) = netwatch_testkit::read_pcap(&download_checked(&nw, &files[0]));
    assert_eq!(packets.len(), 9000, "every datagram relayed to Azurite");

    // Through the socket, a grant is needed as over HTTPS: one not signed by
    // the controller is refused (403), with a descriptor or without (400).
    let socket = nw.dir.path().join("up/handoff.sock");
    let grant = "/netwatch/v1/agent/files/netwatchlocal/network-watcher-logs/x.cap?\
                 uploadId=0123456789abcdef01234567&part=1&expires=99999999999999&sig=forged";
    let ask = |line: String, with_fd: bool| -> Value {
        let script = format!(
            "import socket, sys\n\
             s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
             s.connect({socket:?})\n\
             f = open('/etc/hostname', 'rb')\n\
             line = {line:?}.encode() + b'\\n'\n\
             socket.send_fds(s, [line], [f.fileno()]) if {with_fd} else s.sendall(line)\n\
             print(s.makefile().readline())\n",
            socket = socket.to_str().unwrap(),
            with_fd = if with_fd { "True" } else { "False" },
        );
        let out = netwatch_testkit::run(NetnsPair::exec(&nw.pair.b, "python3").args(["-c", &script]));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|err| panic!("{err}: {out:?}"))
    };
    let part = |grant: &str| json!({"grant": grant, "offset": 0, "len": 10}).to_string();
    let forged = ask(part(grant), true);
    assert_eq!(forged["status"], 403, "{forged}");
    assert!(
        forged["message"].as_str().unwrap().contains("signature does not match"),
        "{forged}"
    );
    let bare = ask(part(grant), false);
    assert_eq!(bare["status"], 400, "{bare}");
    assert!(
        bare["message"]
            .as_str()
            .unwrap()
            .contains("without the file's descriptor"),
        "{bare}"
    );
    let garbage = ask("not json".to_owned(), true);
    assert_eq!(garbage["status"], 400, "{garbage}");
}
