//! The agent's integration tests (one test binary, STYLE 28): a real agent in
//! this process against a fake controller on 127.0.0.1, capturing real
//! packets on loopback (root needed: the tests fail, never skip, without it).
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]

mod captures;
mod channel;
mod fake_controller;
mod recovery;
mod simulate;
mod tls;

use netwatch_api::agent::{StartCapture, Upload};
use netwatch_api::filter::PacketCaptureFilter;
use netwatch_api::packet_capture::{PacketCaptureParameters, PacketCaptureStorageLocation};

use crate::fake_controller::VM_ID;

/// The storage account test captures name.
const ACCOUNT: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/acct1";

/// The resource id of the test capture `name`.
fn capture_id(name: &str) -> String {
    format!(
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1/packetCaptures/{name}"
    )
}

/// A capture of UDP on `port` for `seconds`, to the storage account.
fn udp_capture(port: u16, seconds: i64) -> PacketCaptureParameters {
    PacketCaptureParameters {
        target: VM_ID.to_owned(),
        time_limit_in_seconds: Some(seconds),
        storage_location: PacketCaptureStorageLocation {
            storage_id: Some(ACCOUNT.to_owned()),
            ..Default::default()
        },
        filters: Some(vec![PacketCaptureFilter {
            protocol: Some("UDP".to_owned()),
            local_port: Some(port.to_string()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// A start message for `parameters`, its files going to storage when `upload`.
fn start(name: &str, parameters: PacketCaptureParameters, upload: bool) -> StartCapture {
    StartCapture {
        capture_id: capture_id(name),
        parameters,
        created_ms: 1_767_225_600_000,
        upload: upload.then(|| Upload {
            storage_path: format!("https://acct1.blob.example/{name}.cap"),
        }),
    }
}

/// Test logs (`RUST_LOG=netwatch_agent=debug`), shown for failing tests.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Fails the test with a message where packets cannot be captured.
fn require_root() {
    init_logs();
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
        })
        .unwrap();
    assert_eq!(
        uid, "0",
        "the agent tests capture real packets on loopback: run them as root (CI does)"
    );
}

/// A UDP receiver on loopback and a sender of `count` datagrams to it. A
/// capture on `lo` records each datagram once, as tcpdump does (the kernel
/// hands loopback packets to packet sockets leaving and arriving; the engine
/// skips the outgoing copy).
struct Traffic {
    receiver: std::net::UdpSocket,
}

impl Traffic {
    fn new() -> Self {
        Self {
            receiver: std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        }
    }

    fn port(&self) -> u16 {
        self.receiver.local_addr().unwrap().port()
    }

    fn send(&self, count: usize) {
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..count {
            sender
                .send_to(format!("datagram {i}").as_bytes(), ("127.0.0.1", self.port()))
                .unwrap();
        }
    }
}
