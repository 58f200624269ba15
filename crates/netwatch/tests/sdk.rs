//! A remote packet capture end to end, driven by Azure's own Python SDK
//! (`azure-mgmt-network`) against a [`Deployment`]: the controller in one test
//! host, an agent in the other, real traffic between them.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use netwatch_testkit::B4;
use serde_json::json;

use crate::deployment::{Deployment, SUB, VM, azure_time, send_udp, udp_packets};

#[test]
fn azure_sdk_drives_a_remote_capture_end_to_end() {
    let nw = Deployment::start();

    // Two filters; traffic to 7001 and 7002 matches, to 7009 does not.
    let filters = json!([
        {"protocol": "UDP", "localPort": "7001"},
        {"protocol": "UDP", "remoteIPAddress": B4, "localPort": "7002-7003"},
    ]);
    let asked = SystemTime::now();
    let created = nw.create(
        "sdk-walkthrough",
        json!({"filters": filters, "bytesToCapturePerPacket": 60, "timeLimitInSeconds": 120}),
    );
    assert_eq!(created["properties"]["provisioningState"], "Succeeded", "{created}");
    assert_eq!(created["properties"]["bytesToCapturePerPacket"], 60);
    // begin_create().result() returns once the agent runs it.
    let running = nw.sdk(&["status", "sdk-walkthrough"]);
    assert_eq!(running["packetCaptureStatus"], "Running", "{running}");
    assert!(running["captureStartTime"].is_string(), "{running}");
    // Issue 12: the answer as sent, in Azure's form (seven fractional digits),
    // and the capture started after it was asked for (whole seconds made the
    // start precede the request).
    let status_path = format!(
        "/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/\
         NetworkWatcher_westus/packetCaptures/sdk-walkthrough/queryStatus?api-version=2024-07-01"
    );
    let answer = nw.sdk(&["rest", "POST", &status_path]);
    assert_eq!(answer["status"], 200, "{answer}");
    let started = azure_time(&answer["body"]["captureStartTime"]);
    assert!(
        started >= asked,
        "captureStartTime {} precedes the create request ({asked:?})",
        answer["body"]["captureStartTime"]
    );
    assert!(started <= SystemTime::now(), "{answer}");
    azure_time(&answer["body"]["netwatch"]["agentLastSeen"]);

    send_udp(&nw.pair, &[7001, 7002, 7009], 40, 200);
    let counted = nw.status_until("sdk-walkthrough", "counting 80 packets", |status| {
        status["packetCaptureStatus"] == "Running" && status["netwatch"]["packetsCaptured"] == 80
    });
    assert_eq!(counted["netwatch"]["kernelDrops"], 0, "{counted}");
    assert!(counted["netwatch"]["agentLastSeen"].is_string(), "{counted}");
    assert_eq!(counted["netwatch"]["uploadState"], "Pending", "{counted}");
    // Issue 12: nothing is stored while it runs (the percent said 100).
    assert_eq!(counted["netwatch"]["uploadPercent"], 0, "{counted}");

    // begin_stop().result() returns once the file is final and uploaded.
    nw.sdk(&["stop", "sdk-walkthrough"]);
    let stopped = nw.sdk(&["status", "sdk-walkthrough"]);
    assert_eq!(stopped["packetCaptureStatus"], "Stopped", "{stopped}");
    assert_eq!(stopped["stopReason"], "ManualStop", "{stopped}");
    assert_eq!(stopped["packetCaptureError"], json!([]), "{stopped}");
    assert_eq!(stopped["netwatch"]["uploadState"], "Succeeded", "{stopped}");
    assert_eq!(stopped["netwatch"]["uploadPercent"], 100, "{stopped}");

    // The file: exactly the matching packets, truncated to 60 bytes, whole length kept.
    let capture = nw.sdk(&["get", "sdk-walkthrough"]);
    let file = nw.download(&capture);
    let packets = udp_packets(&file);
    let count = |port| packets.iter().filter(|p| p.0 == port).count();
    assert_eq!((count(7001), count(7002), count(7009)), (40, 40, 0), "{packets:?}");
    assert_eq!(packets.len(), 80);
    // 14 Ethernet + 20 IPv4 + 8 UDP + 200 payload = 242 bytes on the wire.
    assert!(packets.iter().all(|p| p.1 == 60 && p.2 == 242), "{packets:?}");

    // list shows it; delete removes the resource and leaves the file.
    let listed = nw.sdk(&["list"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "sdk-walkthrough"),
        "{listed}"
    );
    nw.sdk(&["delete", "sdk-walkthrough"]);
    let listed = nw.sdk(&["list"]);
    assert!(listed.as_array().unwrap().is_empty(), "{listed}");
    let again = nw.dir.path().join("again.cap");
    nw.sdk(&[
        "download",
        capture["properties"]["storageLocation"]["storagePath"]
            .as_str()
            .unwrap(),
        again.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&file).unwrap());
}

#[test]
fn azure_sdk_captures_end_by_time_and_by_bytes() {
    let nw = Deployment::start();

    // timeLimitInSeconds: stops by itself with TimeExceeded.
    let started = Instant::now();
    nw.create(
        "sdk-time",
        json!({"filters": [{"protocol": "UDP", "localPort": "7101"}], "timeLimitInSeconds": 2}),
    );
    send_udp(&nw.pair, &[7101], 10, 100);
    let stopped = nw.status_until("sdk-time", "stopped", |s| s["packetCaptureStatus"] == "Stopped");
    assert_eq!(stopped["stopReason"], "TimeExceeded", "{stopped}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    let uploaded = nw.status_until("sdk-time", "uploaded", |s| s["netwatch"]["uploadState"] == "Succeeded");
    let file = nw.download(&nw.sdk(&["get", "sdk-time"]));
    assert_eq!(udp_packets(&file).len(), 10, "{uploaded}");

    // The same name again: a new run, which the agent starts (the old run's
    // reports can no longer touch it).
    let first_start = uploaded["captureStartTime"].clone();
    std::thread::sleep(Duration::from_millis(1100));
    nw.create(
        "sdk-time",
        json!({"filters": [{"protocol": "UDP", "localPort": "7101"}], "timeLimitInSeconds": 1}),
    );
    let again = nw.sdk(&["status", "sdk-time"]);
    assert!(
        again["captureStartTime"].is_string(),
        "the new run did not start: {again}"
    );
    assert_ne!(again["captureStartTime"], first_start, "{again}");
    let stopped = nw.status_until("sdk-time", "stopped again", |s| s["packetCaptureStatus"] == "Stopped");
    assert_eq!(stopped["stopReason"], "TimeExceeded", "{stopped}");

    // totalBytesPerSession: stops when the file would pass it, with MaxBytesExceeded.
    nw.create(
        "sdk-bytes",
        json!({"filters": [{"protocol": "UDP", "localPort": "7102"}], "totalBytesPerSession": 4000}),
    );
    send_udp(&nw.pair, &[7102], 40, 200);
    let stopped = nw.status_until("sdk-bytes", "stopped", |s| s["packetCaptureStatus"] == "Stopped");
    assert_eq!(stopped["stopReason"], "MaxBytesExceeded", "{stopped}");
    nw.status_until("sdk-bytes", "uploaded", |s| s["netwatch"]["uploadState"] == "Succeeded");
    let file = nw.download(&nw.sdk(&["get", "sdk-bytes"]));
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size <= 4000, "file of {size} bytes passed totalBytesPerSession 4000");
    // 24-byte header, then records of 16 + 242 bytes: 15 fit in 4000.
    assert_eq!(udp_packets(&file).len(), 15);
}

#[test]
fn a_capture_ends_on_time_while_the_controller_is_down_and_is_stored_after() {
    let mut nw = Deployment::start();
    nw.create(
        "sdk-restart",
        json!({"filters": [{"protocol": "UDP", "localPort": "7201"}], "timeLimitInSeconds": 3}),
    );
    let started = Instant::now();
    nw.kill_controller();

    // The agent owns the capture: it keeps capturing and stops on time alone.
    send_udp(&nw.pair, &[7201], 20, 100);
    let local = nw.dir.path().join("agent/captures");
    std::thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()) + Duration::from_millis(500));
    let files: Vec<PathBuf> = std::fs::read_dir(&local)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(udp_packets(&files[0]).len(), 20, "the agent's own file");
    let captured = std::fs::read(&files[0]).unwrap();
    let agent_log = std::fs::read_to_string(nw.dir.path().join("agent.log")).unwrap();
    assert!(
        agent_log.contains("TimeExceeded"),
        "the capture did not stop on time without the controller:\n{agent_log}"
    );

    // The controller is back: the agent reconnects, reports and uploads.
    nw.restart_controller();
    let stopped = nw.status_until("sdk-restart", "stopped and uploaded", |s| {
        s["packetCaptureStatus"] == "Stopped" && s["netwatch"]["uploadState"] == "Succeeded"
    });
    assert_eq!(stopped["stopReason"], "TimeExceeded", "{stopped}");
    assert_eq!(stopped["netwatch"]["packetsCaptured"], 20, "{stopped}");
    let file = nw.download(&nw.sdk(&["get", "sdk-restart"]));
    assert_eq!(std::fs::read(&file).unwrap(), captured, "stored as the agent wrote it");
    assert!(
        !files[0].exists(),
        "the agent's copy goes once it is stored and checked"
    );
    let listed = &stopped["netwatch"]["files"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{stopped}");
    assert_eq!(listed[0]["sizeInBytes"], captured.len(), "{stopped}");
}

#[test]
fn a_host_enrolls_once_and_keeps_its_own_credential() {
    let mut nw = Deployment::controller_only();
    let vm = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{VM}");
    let extension = format!("{vm}/extensions/NetworkWatcherAgentLinux?api-version=2024-11-01");
    let body = json!({"location": "westus", "properties": {"publisher": "Microsoft.Azure.NetworkWatcher",
        "type": "NetworkWatcherAgentLinux", "typeHandlerVersion": "1.4"}})
    .to_string();
    let set = nw.sdk(&["rest", "PUT", &extension, &body]);
    assert_eq!(set["status"], 201, "{set}");
    assert_eq!(set["body"]["properties"]["provisioningState"], "Creating", "{set}");
    let enrollment = &set["body"]["properties"]["netwatch"]["enrollment"];
    let token = enrollment["token"].as_str().unwrap().to_owned();
    let command = enrollment["command"].as_str().unwrap();
    assert!(
        command.contains(&format!(
            "--enroll-token {token} --vm-name {VM} --resource-group rg1 --location westus"
        )),
        "{command}"
    );

    // The host enrolls: registered, with a credential of its own kept on disk.
    let data = nw.dir.path().join("enrolled");
    nw.agent = Some(nw.start_agent(&token, &data, "agent.log"));
    nw.wait_for_agent();
    let shown = nw.sdk(&["rest", "GET", &extension]);
    assert_eq!(shown["body"]["properties"]["provisioningState"], "Succeeded", "{shown}");
    let credential = std::fs::read_to_string(data.join("credential")).unwrap();
    assert_eq!(credential.len(), 64);
    assert_ne!(credential, token);

    // It captures and uploads with that credential.
    nw.create(
        "enrolled",
        json!({"filters": [{"protocol": "UDP", "localPort": "7301"}], "timeLimitInSeconds": 1}),
    );
    send_udp(&nw.pair, &[7301], 5, 100);
    nw.status_until("enrolled", "stopped and uploaded", |s| {
        s["packetCaptureStatus"] == "Stopped" && s["netwatch"]["uploadState"] == "Succeeded"
    });

    // Restarted, the agent uses its credential: the spent enrollment token is not needed.
    drop(nw.agent.take());
    let before = nw.sdk(&["rest", "GET", &format!("{vm}?api-version=2024-07-01")]);
    std::thread::sleep(Duration::from_millis(1100));
    nw.agent = Some(nw.start_agent(&token, &data, "agent-again.log"));
    let again = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
        let now = nw.sdk(&["rest", "GET", &format!("{vm}?api-version=2024-07-01")]);
        now["body"]["properties"]["netwatch"]["connectedMs"] != before["body"]["properties"]["netwatch"]["connectedMs"]
    });
    assert!(again, "the agent did not reconnect with its credential\n{}", nw.logs());

    // Anyone else with the spent token is refused.
    let thief = nw.start_agent(&token, &nw.dir.path().join("thief"), "thief.log");
    let refused = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
        std::fs::read_to_string(nw.dir.path().join("thief.log"))
            .unwrap_or_default()
            .contains("401 Unauthorized")
    });
    drop(thief);
    assert!(
        refused,
        "a spent enrollment token was not refused:\n{}",
        std::fs::read_to_string(nw.dir.path().join("thief.log")).unwrap_or_default()
    );

    // Issue 14: its extension deleted, an agent run by hand (nothing of the
    // installer's to remove) says so, with what to do, and stops.
    let removed = nw.sdk(&["rest", "DELETE", &extension]);
    assert_eq!(removed["status"], 200, "{removed}");
    let stopped = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
        nw.agent
            .as_mut()
            .is_some_and(|agent| matches!(agent.0.try_wait(), Ok(Some(_))))
    });
    let log = std::fs::read_to_string(nw.dir.path().join("agent-again.log")).unwrap_or_default();
    assert!(
        stopped,
        "the agent of a deleted extension did not stop:
{log}"
    );
    assert!(
        log.contains("agent extension was deleted") && log.contains("not installed by netwatch's installer"),
        "{log}"
    );
    drop(nw.agent.take());

    // Started again with its stale credential: the refusal is logged at once,
    // with what to run.
    let started = std::time::Instant::now();
    nw.agent = Some(nw.start_agent(&token, &data, "agent-stale.log"));
    let said = netwatch_testkit::eventually(50, Duration::from_millis(100), || {
        std::fs::read_to_string(nw.dir.path().join("agent-stale.log"))
            .unwrap_or_default()
            .contains("refused this agent's saved credential")
    });
    assert!(
        said,
        "a refused credential was not explained ({:?} after the start):\n{}",
        started.elapsed(),
        nw.logs()
    );
    let log = std::fs::read_to_string(nw.dir.path().join("agent-stale.log")).unwrap_or_default();
    assert!(log.contains("netwatch vm extension set"), "{log}");
    drop(nw.agent.take());

    // `vm extension set` again: a new token, which wins over the stale credential.
    let set = nw.sdk(&["rest", "PUT", &extension, &body]);
    assert_eq!(set["status"], 201, "a host cut off is enrolled again: {set}");
    let new_token = set["body"]["properties"]["netwatch"]["enrollment"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_token, token);
    nw.agent = Some(nw.start_agent(&new_token, &data, "agent-third.log"));
    let enrolled = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
        std::fs::read_to_string(data.join("credential")).is_ok_and(|saved| saved.trim() != credential.trim())
    });
    assert!(enrolled, "the new token did not enroll the host again:\n{}", nw.logs());
    let shown = nw.sdk(&["rest", "GET", &extension]);
    assert_eq!(shown["body"]["properties"]["provisioningState"], "Succeeded", "{shown}");
    // And at the next start with the same (now spent) token, the new credential is used.
    drop(nw.agent.take());
    nw.agent = Some(nw.start_agent(&new_token, &data, "agent-fourth.log"));
    let back = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
        std::fs::read_to_string(nw.dir.path().join("agent-fourth.log"))
            .unwrap_or_default()
            .contains("connected to the controller")
    });
    assert!(
        back,
        "the agent did not come back with its new credential:\n{}",
        nw.logs()
    );
    let log = std::fs::read_to_string(nw.dir.path().join("agent-fourth.log")).unwrap_or_default();
    assert!(log.contains("using the agent's saved credential"), "{log}");

    // A token the controller refuses does not cost the host its credential.
    drop(nw.agent.take());
    nw.agent = Some(nw.start_agent(&"0".repeat(64), &data, "agent-fifth.log"));
    let fell_back = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
        let log = std::fs::read_to_string(nw.dir.path().join("agent-fifth.log")).unwrap_or_default();
        log.contains("refused the enrollment token") && log.contains("connected to the controller")
    });
    assert!(
        fell_back,
        "a refused token left the agent without its credential:\n{}",
        nw.logs()
    );

    // Issue 14: started as a service would be, from a config file and without
    // a token (an enrolled agent needs none).
    drop(nw.agent.take());
    let config = nw.dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "server = \"{}\"\nca = \"{}\"\nvm_name = \"{VM}\"\nresource_group = \"rg1\"\nlocation = \"westus\"\n\
             interface = \"{}\"\ndata_dir = \"{}\"\n",
            nw.url,
            nw.ca.display(),
            netwatch_testkit::IF_A,
            data.display()
        ),
    )
    .unwrap();
    let agent = netwatch_testkit::NetnsPair::exec(&nw.pair.a, crate::util::netwatch())
        .args(["agent", "--config"])
        .arg(&config)
        .env_remove("NETWATCH_ENROLL_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(
            std::fs::File::create(nw.dir.path().join("agent-config.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    nw.agent = Some(crate::deployment::Guard(agent));
    let from_file = netwatch_testkit::eventually(100, Duration::from_millis(100), || {
        std::fs::read_to_string(nw.dir.path().join("agent-config.log"))
            .unwrap_or_default()
            .contains("connected to the controller")
    });
    assert!(from_file, "the agent did not run from its config file:\n{}", nw.logs());
}

/// Issue 15: with the agent connected, a capture's PUT answers once the
/// capture runs and its stop once its file is stored, final, without a
/// monitor to poll (az and the SDK then finish at once); with the agent away,
/// the answers point at a monitor as before.
#[test]
fn create_and_stop_answer_when_the_work_is_done_and_a_monitor_otherwise() {
    let mut nw = Deployment::start();
    let capture = |name: &str| {
        format!(
            "/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/\
             NetworkWatcher_westus/packetCaptures/{name}"
        )
    };
    let body = json!({"properties": {
        "target": format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{VM}"),
        "storageLocation": {"storageId": format!(
            "/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/netwatchlocal"
        )},
        "filters": [{"protocol": "UDP", "localPort": "7311"}],
        "timeLimitInSeconds": 120,
    }})
    .to_string();
    let put = nw.sdk(&[
        "rest",
        "PUT",
        &format!("{}?api-version=2024-05-01", capture("fast")),
        &body,
    ]);
    assert_eq!(put["status"], 201, "{put}");
    assert!(
        put["headers"].get("azure-asyncoperation").is_none(),
        "a final answer has no monitor: {put}"
    );
    assert_eq!(put["body"]["properties"]["provisioningState"], "Succeeded", "{put}");
    // It answered when the capture ran: the packets sent now are captured.
    let status = nw.sdk(&["status", "fast"]);
    assert_eq!(status["packetCaptureStatus"], "Running", "{status}");
    send_udp(&nw.pair, &[7311], 4, 100);
    nw.status_until("fast", "counting", |s| s["netwatch"]["packetsCaptured"] == 4);
    let stop = nw.sdk(&[
        "rest",
        "POST",
        &format!("{}/stop?api-version=2024-05-01", capture("fast")),
    ]);
    assert_eq!(stop["status"], 200, "{stop}");
    assert!(stop["headers"].get("location").is_none(), "{stop}");
    // It answered when the file was stored.
    let status = nw.sdk(&["status", "fast"]);
    assert_eq!(status["packetCaptureStatus"], "Stopped", "{status}");
    assert_eq!(status["netwatch"]["uploadState"], "Succeeded", "{status}");
    let file = nw.download(&nw.sdk(&["get", "fast"]));
    assert_eq!(udp_packets(&file).len(), 4);

    // The agent away: a monitor, with Retry-After.
    drop(nw.agent.take());
    std::thread::sleep(Duration::from_millis(500));
    let put = nw.sdk(&[
        "rest",
        "PUT",
        &format!("{}?api-version=2024-05-01", capture("slow")),
        &body,
    ]);
    assert_eq!(put["status"], 201, "{put}");
    assert!(put["headers"].get("azure-asyncoperation").is_some(), "{put}");
    assert_eq!(put["headers"]["retry-after"], "1", "{put}");
}
