//! What an operator's Prometheus scrapes from a controller (issue 15,
//! "Metrics"): `GET /metrics`, OpenMetrics text from prometheus-client's
//! explicit registry (no global state: a test process hosts several
//! controllers), for a reader token.
//!
//! Counted as things happen: reports applied, pushes to agents, create →
//! Running latency, uploads committed (bytes) and failed, storage errors,
//! store time of report batches. Read at scrape time: agents connected
//! here, captures by status (one query), build info.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// `status="Running"` and the like.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

/// `result="Started"` and the like: what an alert did on one host.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The controller's metrics; cheap to clone (every metric is shared).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: std::sync::Arc<Registry>,
    pub agents_connected: Gauge,
    pub captures: Family<StatusLabel, Gauge>,
    /// Seconds from a capture's create to its agent's Running report.
    pub create_to_running: Histogram,
    pub reports: Counter,
    pub pushes: Counter,
    pub upload_bytes: Counter,
    pub upload_failures: Counter,
    pub storage_errors: Counter,
    /// Alert deliveries to triggers' webhooks, by answer (`taken`, `refused`, `unauthorized`).
    pub alert_deliveries: Family<ResultLabel, Counter>,
    /// What alerts did on hosts, by result (`Started`, `Duplicate`, `Cooldown`, …).
    pub alert_hosts: Family<ResultLabel, Counter>,
    /// Seconds the store took to apply one batch of reports.
    pub store_batch: Histogram,
    /// Seconds of the replica's heartbeat query, every 2 s: the store's
    /// round trip as this replica sees it.
    pub store_query: Histogram,
}

impl Metrics {
    /// Every metric registered, under `netwatch_`, for a controller of `version`.
    pub fn new(version: &str) -> Self {
        let mut registry = Registry::with_prefix("netwatch");
        let agents_connected = Gauge::default();
        registry.register(
            "agents_connected",
            "Agents connected to this controller",
            agents_connected.clone(),
        );
        let captures = Family::<StatusLabel, Gauge>::default();
        registry.register("captures", "Packet captures by status", captures.clone());
        // 1 ms to ~16 s.
        let create_to_running = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "create_to_running_seconds",
            "From a capture's create to its agent reporting it Running",
            create_to_running.clone(),
        );
        let reports = Counter::default();
        registry.register("reports", "Capture reports applied from agents", reports.clone());
        let pushes = Counter::default();
        registry.register("pushes", "Messages pushed to agents", pushes.clone());
        let upload_bytes = Counter::default();
        registry.register("upload_bytes", "Bytes of capture files stored", upload_bytes.clone());
        let upload_failures = Counter::default();
        registry.register(
            "upload_failures",
            "Capture file uploads refused or failed at their commit",
            upload_failures.clone(),
        );
        let storage_errors = Counter::default();
        registry.register(
            "storage_errors",
            "Storage account calls of uploads that failed (begin, grants, parts, commits)",
            storage_errors.clone(),
        );
        let store_batch = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "store_report_batch_seconds",
            "Time the store took to apply one batch of agent reports",
            store_batch.clone(),
        );
        let store_query = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "store_query_seconds",
            "Round trip of this replica's heartbeat query to the state store (every 2 s)",
            store_query.clone(),
        );
        let alert_deliveries = Family::<ResultLabel, Counter>::default();
        registry.register(
            "alert_deliveries",
            "Alert deliveries to triggers' webhooks, by answer",
            alert_deliveries.clone(),
        );
        let alert_hosts = Family::<ResultLabel, Counter>::default();
        registry.register(
            "alert_hosts",
            "What alerts did on hosts (Started, Duplicate, Cooldown, ConcurrencyLimit, ...)",
            alert_hosts.clone(),
        );
        registry.register(
            "build",
            "The controller's build",
            Info::new(BuildLabels {
                version: version.to_owned(),
            }),
        );
        Self {
            registry: std::sync::Arc::new(registry),
            agents_connected,
            captures,
            create_to_running,
            reports,
            pushes,
            upload_bytes,
            upload_failures,
            storage_errors,
            alert_deliveries,
            alert_hosts,
            store_batch,
            store_query,
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %err, "metrics could not be encoded");
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(env!("CARGO_PKG_VERSION"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_named_and_typed_for_prometheus() {
        let metrics = Metrics::new("1.2.3");
        metrics.reports.inc();
        metrics
            .captures
            .get_or_create(&StatusLabel {
                status: "Running".to_owned(),
            })
            .set(2);
        metrics.create_to_running.observe(0.03);
        let text = metrics.encode();
        for line in [
            "# TYPE netwatch_reports counter",
            "netwatch_reports_total 1",
            "netwatch_captures{status=\"Running\"} 2",
            "netwatch_create_to_running_seconds_count 1",
            "netwatch_build_info{version=\"1.2.3\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }
}
