//! The agent's own metrics (issue 15, "Metrics"), served for Prometheus when
//! the agent is asked to (`--metrics-listen ADDR:PORT`): plain HTTP `GET
//! /metrics` in OpenMetrics text, unauthenticated like node_exporter's, so
//! bind it to loopback or a management network.
//!
//! Counted as things happen: reconnects, uploaded bytes (as parts are
//! stored, so `rate()` is the upload's throughput) and failed uploads. Read
//! at scrape time from the supervisor: each capture's packets, bytes, kernel
//! drops, file bytes and ring fill (the most blocks waiting at once in its
//! last second, over the ring's blocks), captures by state, the spool's bytes
//! and files, and the flight recorder's state, bytes, files, window, packets
//! and kernel drops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use netwatch_api::agent::{AgentCaptureState, ReportStats, parse_run_id};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::supervisor::Supervisor;

/// Where the metrics are.
pub const METRICS_PATH: &str = "/metrics";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CaptureLabels {
    /// The capture's resource id.
    capture: String,
    /// Its run: the creation time (ms) the run id carries.
    run: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// One capture as the metrics show it.
#[derive(Debug, Clone)]
pub(crate) struct CaptureView {
    pub(crate) run_id: String,
    pub(crate) state: AgentCaptureState,
    pub(crate) stats: ReportStats,
    /// Ring fill, 0 to 1: the most blocks waiting at once in the last
    /// counters' interval over the ring's blocks.
    pub(crate) ring_fill: f64,
}

/// The agent's metrics; cheap to clone (every metric is shared).
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    registry: Arc<Registry>,
    pub(crate) reconnects: Counter,
    pub(crate) connected: Gauge,
    pub(crate) upload_bytes: Counter,
    pub(crate) upload_failures: Counter,
    packets: Family<CaptureLabels, Gauge>,
    bytes: Family<CaptureLabels, Gauge>,
    kernel_drops: Family<CaptureLabels, Gauge>,
    file_bytes: Family<CaptureLabels, Gauge>,
    ring_fill: Family<CaptureLabels, Gauge<f64, AtomicU64>>,
    captures: Family<StateLabel, Gauge>,
    spool_bytes: Gauge,
    spool_files: Gauge,
    recorder_recording: Gauge,
    recorder_bytes: Gauge,
    recorder_files: Gauge,
    recorder_window: Gauge<f64, AtomicU64>,
    recorder_packets: Gauge,
    recorder_kernel_drops: Gauge,
}

impl Metrics {
    /// Every metric registered, under `netwatch_agent_`, for an agent of `version`.
    pub(crate) fn new(version: &str) -> Self {
        let mut registry = Registry::with_prefix("netwatch_agent");
        let mut counter = |name: &str, help: &str| {
            let metric = Counter::default();
            registry.register(name, help, metric.clone());
            metric
        };
        let reconnects = counter("reconnects", "Channels to the controller opened after the first");
        let upload_bytes = counter("upload_bytes", "Bytes of capture files uploaded to storage");
        let upload_failures = counter("upload_failures", "Upload attempts that failed (retried or given up)");
        let mut family = |name: &str, help: &str| {
            let metric = Family::<CaptureLabels, Gauge>::default();
            registry.register(name, help, metric.clone());
            metric
        };
        let packets = family("capture_packets", "Packets a capture wrote to its files");
        let bytes = family("capture_bytes", "Packet bytes a capture wrote (after truncation)");
        let kernel_drops = family(
            "capture_kernel_drops",
            "Packets the kernel dropped for a capture (ring full)",
        );
        let file_bytes = family("capture_file_bytes", "Bytes of a capture's files, headers included");
        let ring_fill = Family::<CaptureLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "capture_ring_fill_ratio",
            "Most of a capture's ring waiting at once in its last second (1: the kernel drops)",
            ring_fill.clone(),
        );
        let captures = Family::<StateLabel, Gauge>::default();
        registry.register("captures", "Captures this agent holds, by state", captures.clone());
        let connected = Gauge::default();
        registry.register(
            "connected",
            "Whether the channel to the controller is open",
            connected.clone(),
        );
        let spool_bytes = Gauge::default();
        registry.register("spool_bytes", "Bytes of files in the upload spool", spool_bytes.clone());
        let spool_files = Gauge::default();
        registry.register("spool_files", "Files waiting in the upload spool", spool_files.clone());
        let mut gauge = |name: &str, help: &str| {
            let metric = Gauge::default();
            registry.register(name, help, metric.clone());
            metric
        };
        let recorder_recording = gauge("recorder_recording", "Whether the flight recorder records (0 or 1)");
        let recorder_bytes = gauge("recorder_bytes", "Bytes of files the flight recorder holds");
        let recorder_files = gauge("recorder_files", "Files the flight recorder holds");
        let recorder_packets = gauge(
            "recorder_packets",
            "Packets the flight recorder recorded since it started",
        );
        let recorder_kernel_drops = gauge(
            "recorder_kernel_drops",
            "Packets the kernel dropped for the flight recorder (ring full)",
        );
        let recorder_window = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "recorder_window_seconds",
            "Seconds from the flight recorder's oldest packet held to now",
            recorder_window.clone(),
        );
        registry.register(
            "build",
            "The agent's version",
            Info::new(BuildLabels {
                version: version.to_owned(),
            }),
        );
        Self {
            registry: Arc::new(registry),
            reconnects,
            connected,
            upload_bytes,
            upload_failures,
            packets,
            bytes,
            kernel_drops,
            file_bytes,
            ring_fill,
            captures,
            spool_bytes,
            spool_files,
            recorder_recording,
            recorder_bytes,
            recorder_files,
            recorder_window,
            recorder_packets,
            recorder_kernel_drops,
        }
    }

    /// Sets the flight recorder's gauges from its status at `now_ms`.
    pub(crate) fn set_recorder(&self, status: &netwatch_api::agent::RecorderStatus, now_ms: i64) {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.recorder_recording.set(i64::from(status.running));
        self.recorder_bytes.set(gauge(status.bytes));
        self.recorder_files.set(i64::from(status.files));
        self.recorder_packets.set(gauge(status.packets));
        self.recorder_kernel_drops.set(gauge(status.kernel_drops));
        #[allow(clippy::cast_precision_loss, reason = "a window of seconds")]
        self.recorder_window.set(
            status
                .oldest_ms
                .map_or(0.0, |oldest| (now_ms - oldest).max(0) as f64 / 1000.0),
        );
    }

    /// The metrics as text, the gauges of the moment set from `captures`
    /// and the spool's `spool_bytes` in `spool_files`.
    pub(crate) fn render(&self, captures: &[CaptureView], spool_bytes: u64, spool_files: usize) -> String {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        // Captures that left the agent leave the metrics.
        for family in [&self.packets, &self.bytes, &self.kernel_drops, &self.file_bytes] {
            family.clear();
        }
        self.ring_fill.clear();
        let mut by_state = [0_i64; 3];
        for view in captures {
            let (capture, run) = parse_run_id(&view.run_id).map_or((view.run_id.as_str(), 0), |(id, run)| (id, run));
            let labels = CaptureLabels {
                capture: capture.to_owned(),
                run: run.to_string(),
            };
            self.packets
                .get_or_create(&labels)
                .set(gauge(view.stats.packets_captured));
            self.bytes.get_or_create(&labels).set(gauge(view.stats.bytes_captured));
            self.kernel_drops
                .get_or_create(&labels)
                .set(gauge(view.stats.kernel_drops));
            self.file_bytes
                .get_or_create(&labels)
                .set(gauge(view.stats.file_size_in_bytes));
            self.ring_fill.get_or_create(&labels).set(view.ring_fill);
            by_state[state_index(view.state)] += 1;
        }
        for (state, count) in [
            AgentCaptureState::Running,
            AgentCaptureState::Stopped,
            AgentCaptureState::Error,
        ]
        .into_iter()
        .zip(by_state)
        {
            self.captures
                .get_or_create(&StateLabel {
                    state: format!("{state:?}"),
                })
                .set(count);
        }
        self.spool_bytes.set(gauge(spool_bytes));
        self.spool_files.set(i64::try_from(spool_files).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

fn state_index(state: AgentCaptureState) -> usize {
    match state {
        AgentCaptureState::Running => 0,
        AgentCaptureState::Stopped => 1,
        AgentCaptureState::Error => 2,
    }
}

/// Why the metrics cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("listen for Prometheus on {address} (--metrics-listen): {source}")]
pub struct ListenError {
    address: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Binds `address` for the metrics; the listener and the address it got.
pub(crate) async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, ListenError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ListenError { address, source })
}

/// Serves `GET /metrics` on `listener` until `cancel`.
pub(crate) async fn serve(listener: tokio::net::TcpListener, supervisor: Supervisor, cancel: CancellationToken) {
    let app = axum::Router::new().route(
        METRICS_PATH,
        axum::routing::get(move || {
            let supervisor = supervisor.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    supervisor.metrics_text(),
                )
            }
        }),
    );
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!(error = %error, "the metrics listener failed: Prometheus cannot scrape this agent until it restarts");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flight_recorder_shows_its_bytes_and_window() {
        let metrics = Metrics::new("1.2.3");
        let status = netwatch_api::agent::RecorderStatus {
            id: Some("r".into()),
            running: true,
            oldest_ms: Some(1_000),
            bytes: 4096,
            files: 3,
            packets: 77,
            kernel_drops: 2,
            error: None,
        };
        metrics.set_recorder(&status, 61_500);
        let text = metrics.render(&[], 0, 0);
        for line in [
            "netwatch_agent_recorder_recording 1",
            "netwatch_agent_recorder_bytes 4096",
            "netwatch_agent_recorder_files 3",
            "netwatch_agent_recorder_packets 77",
            "netwatch_agent_recorder_kernel_drops 2",
            "netwatch_agent_recorder_window_seconds 60.5",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn captures_show_with_their_run_and_leave_when_gone() {
        let metrics = Metrics::new("1.2.3");
        let view = CaptureView {
            run_id: "/subscriptions/s/x/packetCaptures/pc#1700000000123".into(),
            state: AgentCaptureState::Running,
            stats: ReportStats {
                packets_captured: 20,
                bytes_captured: 2000,
                kernel_drops: 1,
                file_size_in_bytes: 2344,
                covered_from_ms: None,
            },
            ring_fill: 0.25,
        };
        let text = metrics.render(std::slice::from_ref(&view), 4096, 2);
        for line in [
            r#"netwatch_agent_capture_packets{capture="/subscriptions/s/x/packetCaptures/pc",run="1700000000123"} 20"#,
            r#"netwatch_agent_capture_kernel_drops{capture="/subscriptions/s/x/packetCaptures/pc",run="1700000000123"} 1"#,
            r#"netwatch_agent_capture_ring_fill_ratio{capture="/subscriptions/s/x/packetCaptures/pc",run="1700000000123"} 0.25"#,
            r#"netwatch_agent_captures{state="Running"} 1"#,
            "netwatch_agent_spool_bytes 4096",
            "netwatch_agent_spool_files 2",
            r#"netwatch_agent_build_info{version="1.2.3"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        let text = metrics.render(&[], 0, 0);
        assert!(!text.contains("capture_packets{"), "{text}");
        assert!(text.contains(r#"netwatch_agent_captures{state="Running"} 0"#), "{text}");
    }
}
