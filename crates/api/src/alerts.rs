//! Alerts as the webhooks of alerting systems deliver them (issue 16): Azure
//! Monitor's common alert schema (an action group's webhook) and Prometheus
//! Alertmanager's webhook (version 4), each read into the [`Alert`]s netwatch
//! acts on, with the JSON path of whatever is wrong.
//!
//! Read leniently where the senders add fields (both do, release after
//! release), strictly where netwatch needs a value: which alert it is (to
//! start one capture however often it is delivered), its rule, whether it
//! fired or resolved, when it fired (the alert's own time, not the
//! webhook's arrival: the window before it is kept from then), and what it
//! is about (resource ids, or host names and addresses).

use std::collections::BTreeMap;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The most alerts one delivery may carry (Alertmanager groups alerts; a
/// group this large is a misconfiguration or an attack).
pub const MAX_ALERTS: usize = 1000;

/// `schemaId` of Azure Monitor's common alert schema.
pub const AZURE_COMMON_SCHEMA: &str = "azureMonitorCommonAlertSchema";

/// Who sent an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertSource {
    AzureMonitor,
    Alertmanager,
}

/// Whether an alert fired or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertState {
    Fired,
    Resolved,
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AlertTarget {
    /// An ARM resource id (Azure Monitor's `alertTargetIDs`): a VM, a scale
    /// set or one of its instances.
    ResourceId(String),
    /// A host's name or address (Alertmanager's `instance` label, its port
    /// left out, or a `host`, `hostname` or `vm` label).
    Host(String),
}

/// One alert, from either source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub source: AlertSource,
    /// Which alert this is, across deliveries: Azure's `alertId`,
    /// Alertmanager's `fingerprint`.
    pub id: String,
    /// The rule that raised it: Azure's `alertRule`, the `alertname` label.
    pub rule: String,
    /// `Sev0`…`Sev4` (Azure), the `severity` label (Alertmanager), if any.
    pub severity: Option<String>,
    pub state: AlertState,
    /// When it fired, ms since the epoch: `firedDateTime`, `startsAt`.
    pub fired_ms: i64,
    pub targets: Vec<AlertTarget>,
    /// Alertmanager's labels; Azure's alerts have none.
    pub labels: BTreeMap<String, String>,
}

/// A delivery that cannot be acted on: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct AlertError {
    /// The JSON path of the value at fault (`data.essentials.firedDateTime`).
    pub path: String,
    pub message: String,
}

fn error(path: impl Into<String>, message: impl Into<String>) -> AlertError {
    AlertError {
        path: path.into(),
        message: message.into(),
    }
}

/// Reads `body` as JSON of type `T`, naming the path of the first mismatch.
fn read<'de, T: Deserialize<'de>>(body: &'de [u8], what: &str) -> Result<T, AlertError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(error("body", format!("not {what}: a JSON object is expected")));
    }
    let mut reader = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut reader).map_err(|err| {
        let path = err.path().to_string();
        // serde_path_to_error says `.` for the top and `?` before anything was read.
        let path = if path == "." || path == "?" {
            "body".to_owned()
        } else {
            path
        };
        error(path, format!("not {what}: {}", err.into_inner()))
    })
}

/// An RFC 3339 time as ms since the epoch.
fn time_ms(path: &str, text: &str) -> Result<i64, AlertError> {
    let at = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|err| error(path, format!("{text:?} is not an RFC 3339 time ({err})")))?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|_| error(path, format!("{text:?} is out of range")))
}

fn required(path: &str, value: &str) -> Result<String, AlertError> {
    if value.trim().is_empty() {
        return Err(error(path, "is empty"));
    }
    Ok(value.to_owned())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommonAlert {
    schema_id: String,
    data: CommonData,
}

#[derive(Deserialize)]
struct CommonData {
    essentials: Essentials,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Essentials {
    alert_id: String,
    alert_rule: String,
    #[serde(default)]
    severity: Option<String>,
    monitor_condition: String,
    #[serde(rename = "alertTargetIDs", default)]
    alert_target_ids: Vec<String>,
    fired_date_time: String,
}

/// Reads an Azure Monitor action group's webhook body (the common alert
/// schema, which the action group's webhook must have turned on).
pub fn parse_azure_monitor(body: &[u8]) -> Result<Alert, AlertError> {
    let alert: CommonAlert = read(body, "Azure Monitor's common alert schema")?;
    if alert.schema_id != AZURE_COMMON_SCHEMA {
        return Err(error(
            "schemaId",
            format!(
                "{:?} is not Azure Monitor's common alert schema ({AZURE_COMMON_SCHEMA}): turn on \"Enable the \
                 common alert schema\" for this webhook in the action group",
                alert.schema_id
            ),
        ));
    }
    let essentials = alert.data.essentials;
    let at = |field: &str| format!("data.essentials.{field}");
    let state = match essentials.monitor_condition.as_str() {
        "Fired" => AlertState::Fired,
        "Resolved" => AlertState::Resolved,
        other => {
            return Err(error(
                at("monitorCondition"),
                format!("{other:?} is neither \"Fired\" nor \"Resolved\""),
            ));
        }
    };
    let mut targets = Vec::new();
    for (i, id) in essentials.alert_target_ids.iter().enumerate() {
        let path = format!("{}[{i}]", at("alertTargetIDs"));
        if !id.to_ascii_lowercase().starts_with("/subscriptions/") {
            return Err(error(path, format!("{id:?} is not an Azure resource id")));
        }
        targets.push(AlertTarget::ResourceId(id.clone()));
    }
    Ok(Alert {
        source: AlertSource::AzureMonitor,
        id: required(&at("alertId"), &essentials.alert_id)?,
        rule: required(&at("alertRule"), &essentials.alert_rule)?,
        severity: essentials.severity.filter(|severity| !severity.is_empty()),
        state,
        fired_ms: time_ms(&at("firedDateTime"), &essentials.fired_date_time)?,
        targets,
        labels: BTreeMap::new(),
    })
}

#[derive(Deserialize)]
struct Delivery {
    version: String,
    alerts: Vec<ManagerAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManagerAlert {
    status: String,
    labels: BTreeMap<String, String>,
    starts_at: String,
    fingerprint: String,
}

/// The labels that name a host, besides `instance`.
const HOST_LABELS: [&str; 3] = ["host", "hostname", "vm"];

/// Reads a Prometheus Alertmanager webhook body (version 4): one alert per
/// entry of `alerts`.
pub fn parse_alertmanager(body: &[u8]) -> Result<Vec<Alert>, AlertError> {
    let delivery: Delivery = read(body, "an Alertmanager webhook message (version 4)")?;
    if delivery.version != "4" {
        return Err(error(
            "version",
            format!(
                "version {:?} of Alertmanager's webhook is not known here: version \"4\" is",
                delivery.version
            ),
        ));
    }
    if delivery.alerts.is_empty() {
        return Err(error("alerts", "holds no alert"));
    }
    if delivery.alerts.len() > MAX_ALERTS {
        return Err(error(
            "alerts",
            format!(
                "holds {} alerts, more than {MAX_ALERTS}: group them less (group_by)",
                delivery.alerts.len()
            ),
        ));
    }
    delivery
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, alert)| {
            let at = |field: &str| format!("alerts[{i}].{field}");
            let state = match alert.status.as_str() {
                "firing" => AlertState::Fired,
                "resolved" => AlertState::Resolved,
                other => {
                    return Err(error(
                        at("status"),
                        format!("{other:?} is neither \"firing\" nor \"resolved\""),
                    ));
                }
            };
            let rule = alert
                .labels
                .get("alertname")
                .ok_or_else(|| error(at("labels.alertname"), "is missing: every alert has its rule's name"))?;
            let mut targets = Vec::new();
            if let Some(instance) = alert.labels.get("instance") {
                targets.push(AlertTarget::Host(host_of(instance).to_owned()));
            }
            for label in HOST_LABELS {
                if let Some(host) = alert.labels.get(label).filter(|host| !host.is_empty()) {
                    let target = AlertTarget::Host(host.clone());
                    if !targets.contains(&target) {
                        targets.push(target);
                    }
                }
            }
            Ok(Alert {
                source: AlertSource::Alertmanager,
                id: required(&at("fingerprint"), &alert.fingerprint)?,
                rule: required(&at("labels.alertname"), rule)?,
                severity: alert.labels.get("severity").cloned(),
                state,
                fired_ms: time_ms(&at("startsAt"), &alert.starts_at)?,
                targets,
                labels: alert.labels,
            })
        })
        .collect()
}

/// `instance` without its port: `10.0.0.4:9100` → `10.0.0.4`,
/// `[::1]:9100` → `::1`, `web-1` → `web-1`.
fn host_of(instance: &str) -> &str {
    if let Some(rest) = instance.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match instance.rsplit_once(':') {
        // One colon: host:port. More: an IPv6 address without brackets.
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => instance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Azure's documented sample of the common alert schema (a metric alert).
    fn azure() -> Value {
        json!({
            "schemaId": "azureMonitorCommonAlertSchema",
            "data": {
                "essentials": {
                    "alertId": "/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.AlertsManagement/alerts/b9569717-bc32-442f-add5-83a997729330",
                    "alertRule": "WCUS-R2-Gen2",
                    "severity": "Sev3",
                    "signalType": "Metric",
                    "monitorCondition": "Fired",
                    "monitoringService": "Platform",
                    "alertTargetIDs": [
                        "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/pipelinealertrg/providers/microsoft.compute/virtualmachines/wcus-r2-gen2"
                    ],
                    "configurationItems": ["wcus-r2-gen2"],
                    "originAlertId": "3f2d4487-b0fc-4125-8bd5-7ad17384221e_PipeLineAlertRG_microsoft.insights_metricAlerts_WCUS-R2-Gen2_-117781227",
                    "firedDateTime": "2019-03-22T13:58:24.3713213Z",
                    "description": "",
                    "essentialsVersion": "1.0",
                    "alertContextVersion": "1.0"
                },
                "alertContext": {"properties": null, "conditionType": "SingleResourceMultipleMetricCriteria"}
            }
        })
    }

    /// Alertmanager's webhook, as its documentation shows it.
    fn manager() -> Value {
        json!({
            "version": "4",
            "groupKey": "{}:{alertname=\"HighDrops\"}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "netwatch",
            "groupLabels": {"alertname": "HighDrops"},
            "commonLabels": {"alertname": "HighDrops"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "HighDrops", "instance": "10.0.0.4:9100", "severity": "critical", "job": "node"},
                "annotations": {"summary": "drops"},
                "startsAt": "2026-12-06T20:00:01.5Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": "a1b2c3d4e5f60718"
            }]
        })
    }

    #[test]
    fn azure_monitors_common_schema_is_read() {
        let alert = parse_azure_monitor(azure().to_string().as_bytes()).unwrap();
        assert_eq!(alert.source, AlertSource::AzureMonitor);
        assert_eq!(alert.rule, "WCUS-R2-Gen2");
        assert_eq!(alert.severity.as_deref(), Some("Sev3"));
        assert_eq!(alert.state, AlertState::Fired);
        // 2019-03-22T13:58:24.371Z: the alert's own time, seven digits read.
        assert_eq!(alert.fired_ms, 1_553_263_104_371);
        assert_eq!(
            alert.targets,
            [AlertTarget::ResourceId(
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/pipelinealertrg/providers/microsoft.compute/virtualmachines/wcus-r2-gen2".into()
            )]
        );
        let mut resolved = azure();
        resolved["data"]["essentials"]["monitorCondition"] = json!("Resolved");
        assert_eq!(
            parse_azure_monitor(resolved.to_string().as_bytes()).unwrap().state,
            AlertState::Resolved
        );
    }

    #[test]
    fn alertmanagers_webhook_is_read() {
        let alerts = parse_alertmanager(manager().to_string().as_bytes()).unwrap();
        assert_eq!(alerts.len(), 1);
        let alert = &alerts[0];
        assert_eq!(
            (alert.id.as_str(), alert.rule.as_str(), alert.severity.as_deref()),
            ("a1b2c3d4e5f60718", "HighDrops", Some("critical"))
        );
        assert_eq!(alert.fired_ms, 1_796_587_201_500);
        assert_eq!(alert.targets, [AlertTarget::Host("10.0.0.4".into())]);
        assert_eq!(alert.labels["job"], "node");
    }

    #[test]
    fn instances_name_their_hosts_without_ports() {
        for (instance, host) in [
            ("10.0.0.4:9100", "10.0.0.4"),
            ("web-1:9100", "web-1"),
            ("web-1", "web-1"),
            ("[::1]:9100", "::1"),
            ("fe80::1", "fe80::1"),
        ] {
            assert_eq!(host_of(instance), host, "{instance}");
        }
    }

    #[test]
    fn bad_deliveries_say_where_and_why() {
        let azure_with = |path: &[&str], value: Value| {
            let mut body = azure();
            let mut at = &mut body;
            for key in &path[..path.len() - 1] {
                at = &mut at[*key];
            }
            at[path[path.len() - 1]] = value;
            parse_azure_monitor(body.to_string().as_bytes()).unwrap_err()
        };
        let essentials = |field: &str| ["data", "essentials", field].map(str::to_owned);
        let cases_azure: Vec<(AlertError, &str, &str)> = vec![
            (
                azure_with(&["schemaId"], json!("Microsoft.Insights/activityLogs")),
                "schemaId",
                "turn on \"Enable the common alert schema\"",
            ),
            (azure_with(&["schemaId"], json!(7)), "schemaId", "not Azure Monitor's"),
            (azure_with(&["data"], json!(null)), "data", "not Azure Monitor's"),
            (
                azure_with(
                    &essentials("monitorCondition").each_ref().map(String::as_str),
                    json!("Active"),
                ),
                "data.essentials.monitorCondition",
                "neither \"Fired\" nor \"Resolved\"",
            ),
            (
                azure_with(
                    &essentials("firedDateTime").each_ref().map(String::as_str),
                    json!("yesterday"),
                ),
                "data.essentials.firedDateTime",
                "not an RFC 3339 time",
            ),
            (
                azure_with(&essentials("alertRule").each_ref().map(String::as_str), json!(" ")),
                "data.essentials.alertRule",
                "is empty",
            ),
            (
                azure_with(&essentials("alertId").each_ref().map(String::as_str), json!("")),
                "data.essentials.alertId",
                "is empty",
            ),
            (
                azure_with(
                    &essentials("alertTargetIDs").each_ref().map(String::as_str),
                    json!(["vm1"]),
                ),
                "data.essentials.alertTargetIDs[0]",
                "not an Azure resource id",
            ),
            (
                azure_with(
                    &essentials("alertTargetIDs").each_ref().map(String::as_str),
                    json!("vm1"),
                ),
                "data.essentials.alertTargetIDs",
                "not Azure Monitor's",
            ),
        ];
        let manager_with = |path: &[&str], value: Value| {
            let mut body = manager();
            let mut at = &mut body;
            for key in &path[..path.len() - 1] {
                at = match key.parse::<usize>() {
                    Ok(index) => &mut at[index],
                    Err(_) => &mut at[*key],
                };
            }
            at[path[path.len() - 1]] = value;
            parse_alertmanager(body.to_string().as_bytes()).unwrap_err()
        };
        let mut no_name = manager();
        no_name["alerts"][0]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("alertname");
        let too_many = {
            let mut body = manager();
            body["alerts"] = Value::Array(vec![manager()["alerts"][0].clone(); MAX_ALERTS + 1]);
            body
        };
        let cases_manager: Vec<(AlertError, &str, &str)> = vec![
            (manager_with(&["version"], json!("3")), "version", "version \"4\" is"),
            (manager_with(&["alerts"], json!([])), "alerts", "holds no alert"),
            (
                parse_alertmanager(too_many.to_string().as_bytes()).unwrap_err(),
                "alerts",
                "more than 1000",
            ),
            (
                manager_with(&["alerts", "0", "status"], json!("pending")),
                "alerts[0].status",
                "neither \"firing\" nor \"resolved\"",
            ),
            (
                manager_with(&["alerts", "0", "startsAt"], json!("2026-13-01T00:00:00Z")),
                "alerts[0].startsAt",
                "not an RFC 3339 time",
            ),
            (
                manager_with(&["alerts", "0", "fingerprint"], json!("")),
                "alerts[0].fingerprint",
                "is empty",
            ),
            (
                manager_with(&["alerts", "0", "labels"], json!({"alertname": 1})),
                "alerts[0].labels.alertname",
                "not an Alertmanager webhook message",
            ),
            (
                parse_alertmanager(no_name.to_string().as_bytes()).unwrap_err(),
                "alerts[0].labels.alertname",
                "is missing",
            ),
            (parse_alertmanager(b"").unwrap_err(), "body", "not an Alertmanager"),
            (parse_alertmanager(b"[1,2]").unwrap_err(), "body", "not an Alertmanager"),
            (parse_azure_monitor(b"{").unwrap_err(), "body", "not Azure Monitor's"),
        ];
        let cases: Vec<_> = cases_azure.into_iter().chain(cases_manager).collect();
        assert!(cases.len() >= 20, "{}", cases.len());
        for (err, path, says) in cases {
            assert_eq!(err.path, path, "{err}");
            assert!(err.message.contains(says), "{err:?} does not say {says:?}");
        }
    }
}
