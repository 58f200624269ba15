//! The trigger resource (issue 16), netwatch's own, under a network watcher:
//! `…/networkWatchers/{w}/netwatchTriggers/{name}`: which alerts start a
//! capture, on which hosts, which capture, and the guards that keep a storm
//! of alerts from becoming a storm of captures.
//!
//! # Rules
//! - `source`: `Any` (default), `AzureMonitor` or `Alertmanager`.
//! - `match`: all given must hold: `alertRules` (any of, exact, any case),
//!   `severities` (any of, any case), `labels` (each equal; Alertmanager's).
//!   Nothing given matches every alert of the source.
//! - `hosts`: `fromAlert` (default true) captures on the alert's own targets
//!   (Azure's `alertTargetIDs`, Alertmanager's `instance`/`host` labels);
//!   `vms` (VM, scale-set or instance ids) or `tags` choose hosts: alone
//!   (`fromAlert` false) they are the hosts, with `fromAlert` they narrow the
//!   alert's targets to those among them.
//! - `capture`: `filters` (Azure's), `bytesToCapturePerPacket`,
//!   `totalBytesPerSession` as a capture's; `secondsBefore` 0-3600 (default
//!   60) and `secondsAfter` 0-18000 (default 60) around the alert's fire time.
//! - `storageLocation`: as a capture's (`storageId`, `filePath`).
//! - `stopOnResolved` (default false): a `Resolved` alert stops its running
//!   captures.
//! - Guards: `cooldownSeconds` (0-86400, default 300) between two captures of
//!   this trigger on one host; `maxConcurrent` (1-1000, default 10) captures
//!   of this trigger at once; `maxPerHour` (1-10000, default 60).
//! - `webhookSecret`: write-only, 32-128 characters of `[A-Za-z0-9_-]`; made
//!   when a trigger is created without one, and shown once.
//! - Read-only fields (`id`, `name`, `type`, `etag`, `provisioningState`,
//!   `webhookUrl`) are accepted and ignored; other unknown fields are refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alerts::{Alert, AlertSource};
use crate::error::{ApiError, in_range};
use crate::filter::{CaptureFilter, PacketCaptureFilter, validate_filters_without_expressions};
use crate::packet_capture::{
    AlertWindow, DEFAULT_SECONDS_AFTER, DEFAULT_SECONDS_BEFORE, MAX_SECONDS_BEFORE, MAX_TIME_LIMIT_IN_SECONDS,
    PacketCaptureStorageLocation,
};
use crate::resource::{ResourceId, ResourceKind};

pub const DEFAULT_COOLDOWN_SECONDS: u32 = 300;
pub const MAX_COOLDOWN_SECONDS: u32 = 86_400;
pub const DEFAULT_MAX_CONCURRENT: u32 = 10;
pub const MAX_MAX_CONCURRENT: u32 = 1_000;
pub const DEFAULT_MAX_PER_HOUR: u32 = 60;
pub const MAX_MAX_PER_HOUR: u32 = 10_000;
/// Length bounds of a webhook secret.
pub const MIN_SECRET_LEN: usize = 32;
pub const MAX_SECRET_LEN: usize = 128;

/// A trigger as PUT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trigger {
    pub properties: TriggerProperties,
    #[serde(default, skip_serializing)]
    pub id: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub name: Option<serde_json::Value>,
    #[serde(default, skip_serializing, rename = "type")]
    pub kind: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub etag: Option<serde_json::Value>,
}

/// `properties` of a trigger (as PUT and, without the secret, as GET shows it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<TriggerMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<TriggerHosts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<TriggerCapture>,
    #[serde(default)]
    pub storage_location: PacketCaptureStorageLocation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_on_resolved: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_hour: Option<i64>,
    /// Write-only (never in a GET); in the answer to the PUT that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// Read-only: where alerts go (the secret shown only when just made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// `properties.match`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_rules: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `properties.hosts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerHosts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_alert: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

/// `properties.capture`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerCapture {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<PacketCaptureFilter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_to_capture_per_packet: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes_per_session: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_before: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_after: Option<i64>,
}

/// A trigger as GET answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerResult {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub properties: TriggerProperties,
}

/// A list of triggers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerListResult {
    pub value: Vec<TriggerResult>,
}

/// Which hosts a trigger captures on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChoice {
    /// The alert's own targets.
    pub from_alert: bool,
    /// VM, scale-set or instance ids (empty: not chosen by id).
    pub vms: Vec<ResourceId>,
    /// Tags every host has (empty: not chosen by tag).
    pub tags: BTreeMap<String, String>,
}

impl HostChoice {
    /// Whether hosts are narrowed (or chosen) by id or tag.
    pub fn selects(&self) -> bool {
        !self.vms.is_empty() || !self.tags.is_empty()
    }
}

/// A trigger past validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedTrigger {
    pub source: Option<AlertSource>,
    pub alert_rules: Vec<String>,
    pub severities: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub hosts: HostChoice,
    pub filters: Vec<CaptureFilter>,
    pub filters_wire: Vec<PacketCaptureFilter>,
    pub bytes_to_capture_per_packet: u32,
    pub total_bytes_per_session: u32,
    pub seconds_before: u32,
    pub seconds_after: u32,
    pub storage_location: PacketCaptureStorageLocation,
    pub stop_on_resolved: bool,
    pub cooldown_seconds: u32,
    pub max_concurrent: u32,
    pub max_per_hour: u32,
    pub webhook_secret: Option<String>,
}

/// Reads a PUT body: a 400 at the JSON path of what does not parse.
pub fn parse_trigger(body: &[u8]) -> Result<Trigger, ApiError> {
    crate::error::parse_json(
        body,
        "a trigger",
        r#"{"properties":{"match":{"alertRules":["HighLatency"]},"capture":{"secondsBefore":60},"storageLocation":{"storageId":"…"}}}"#,
    )
}

fn number(path: &str, value: Option<i64>, default: u32, min: u32, max: u32, unit: &str) -> Result<u32, ApiError> {
    let value = in_range(path, value, default.into(), (min.into(), max.into()), unit)?;
    Ok(u32::try_from(value).expect("within a u32 range"))
}

fn texts(path: &str, values: Option<&Vec<String>>) -> Result<Vec<String>, ApiError> {
    let values = values.cloned().unwrap_or_default();
    if let Some(index) = values.iter().position(|value| value.trim().is_empty()) {
        return Err(ApiError::bad_request(
            format!("{path}[{index}]"),
            format!("{path}[{index}] is empty: leave {path} out to match any"),
        ));
    }
    Ok(values)
}

impl Trigger {
    /// Checks every rule (module doc) and applies the defaults.
    pub fn validate(&self) -> Result<ValidatedTrigger, ApiError> {
        let p = &self.properties;
        let source = match p.source.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("any") => None,
            Some("azuremonitor") => Some(AlertSource::AzureMonitor),
            Some("alertmanager") => Some(AlertSource::Alertmanager),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "properties.source",
                    format!(
                        "properties.source {:?} is not a source netwatch takes alerts from: use Any, AzureMonitor or \
                         Alertmanager",
                        p.source.as_deref().unwrap_or_default()
                    ),
                ));
            }
        };
        let matches = p.matches.clone().unwrap_or_default();
        let alert_rules = texts("properties.match.alertRules", matches.alert_rules.as_ref())?;
        let severities = texts("properties.match.severities", matches.severities.as_ref())?;
        let labels = matches.labels.clone().unwrap_or_default();
        if let Some(name) = labels.keys().find(|name| name.is_empty()) {
            return Err(ApiError::bad_request(
                "properties.match.labels",
                format!("properties.match.labels has the label name {name:?}: label names are not empty"),
            ));
        }
        if source == Some(AlertSource::AzureMonitor) && !labels.is_empty() {
            return Err(ApiError::bad_request(
                "properties.match.labels",
                "properties.match.labels matches Alertmanager's labels, but properties.source is AzureMonitor, whose \
                 alerts have none: match alertRules or severities instead",
            ));
        }
        let hosts = p.hosts.clone().unwrap_or_default();
        let from_alert = hosts.from_alert.unwrap_or(true);
        let mut vms = Vec::new();
        for (index, text) in hosts.vms.iter().flatten().enumerate() {
            let path = format!("properties.hosts.vms[{index}]");
            let id = ResourceId::parse_kind(
                &path,
                text,
                &[
                    ResourceKind::VirtualMachine,
                    ResourceKind::ScaleSet,
                    ResourceKind::ScaleSetVm,
                ],
            )?;
            if vms.contains(&id) {
                return Err(ApiError::bad_request(
                    path.clone(),
                    format!("{path} {text:?} is named twice"),
                ));
            }
            vms.push(id);
        }
        let tags = hosts.tags.clone().unwrap_or_default();
        if !vms.is_empty() && !tags.is_empty() {
            return Err(ApiError::bad_request(
                "properties.hosts",
                "properties.hosts has both vms and tags: choose hosts by id or by tag, not both",
            ));
        }
        if hosts.vms.as_ref().is_some_and(Vec::is_empty) || hosts.tags.as_ref().is_some_and(BTreeMap::is_empty) {
            return Err(ApiError::bad_request(
                "properties.hosts",
                "properties.hosts has an empty vms or tags: leave it out, or name at least one",
            ));
        }
        let choice = HostChoice { from_alert, vms, tags };
        if !from_alert && !choice.selects() {
            return Err(ApiError::bad_request(
                "properties.hosts.fromAlert",
                "properties.hosts.fromAlert is false and no vms or tags are given: the trigger would capture on no \
                 host; give vms or tags, or capture on the alert's own targets (fromAlert true)",
            ));
        }
        let capture = p.capture.clone().unwrap_or_default();
        let filters_wire = capture.filters.clone().unwrap_or_default();
        let filters = validate_filters_without_expressions(&filters_wire, "a trigger's").map_err(|err| {
            let err = err.prefixed("properties.capture.");
            ApiError::bad_request(err.target, err.message)
        })?;
        let bytes_to_capture_per_packet = number(
            "properties.capture.bytesToCapturePerPacket",
            capture.bytes_to_capture_per_packet,
            0,
            0,
            u32::MAX,
            "bytes (0 keeps whole packets)",
        )?;
        let total_bytes_per_session = number(
            "properties.capture.totalBytesPerSession",
            capture.total_bytes_per_session,
            crate::packet_capture::DEFAULT_TOTAL_BYTES_PER_SESSION,
            0,
            u32::MAX,
            "bytes",
        )?;
        let seconds_before = number(
            "properties.capture.secondsBefore",
            capture.seconds_before,
            DEFAULT_SECONDS_BEFORE,
            0,
            MAX_SECONDS_BEFORE,
            "seconds (the host's flight recorder keeps them)",
        )?;
        let seconds_after = number(
            "properties.capture.secondsAfter",
            capture.seconds_after,
            DEFAULT_SECONDS_AFTER,
            0,
            MAX_TIME_LIMIT_IN_SECONDS,
            "seconds",
        )?;
        if seconds_before == 0 && seconds_after == 0 {
            return Err(ApiError::bad_request(
                "properties.capture",
                "properties.capture covers no time: secondsBefore and secondsAfter are both 0",
            ));
        }
        let location = &p.storage_location;
        if location.storage_id.as_deref().is_none_or(str::is_empty)
            && location.file_path.as_deref().is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request(
                "properties.storageLocation",
                "properties.storageLocation is required: a storageId (a storage account id) for the captures' files, \
                 a filePath under /var/captures on the host, or both",
            ));
        }
        if location.local_path.is_some() || location.storage_path.is_some() {
            return Err(ApiError::bad_request(
                "properties.storageLocation",
                "properties.storageLocation takes storageId and filePath only: storagePath is the server's to fill in \
                 and localPath is for continuous captures",
            ));
        }
        let cooldown_seconds = number(
            "properties.cooldownSeconds",
            p.cooldown_seconds,
            DEFAULT_COOLDOWN_SECONDS,
            0,
            MAX_COOLDOWN_SECONDS,
            "seconds",
        )?;
        let max_concurrent = number(
            "properties.maxConcurrent",
            p.max_concurrent,
            DEFAULT_MAX_CONCURRENT,
            1,
            MAX_MAX_CONCURRENT,
            "captures",
        )?;
        let max_per_hour = number(
            "properties.maxPerHour",
            p.max_per_hour,
            DEFAULT_MAX_PER_HOUR,
            1,
            MAX_MAX_PER_HOUR,
            "captures",
        )?;
        let webhook_secret = match p.webhook_secret.as_deref() {
            None | Some("") => None,
            Some(secret) => {
                let fine = (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len())
                    && secret
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !fine {
                    return Err(ApiError::bad_request(
                        "properties.webhookSecret",
                        format!(
                            "properties.webhookSecret must be {MIN_SECRET_LEN}-{MAX_SECRET_LEN} characters of A-Z, \
                             a-z, 0-9, - and _ (it goes in a URL); leave it out and one is made"
                        ),
                    ));
                }
                Some(secret.to_owned())
            }
        };
        Ok(ValidatedTrigger {
            source,
            alert_rules,
            severities,
            labels,
            hosts: choice,
            filters,
            filters_wire,
            bytes_to_capture_per_packet,
            total_bytes_per_session,
            seconds_before,
            seconds_after,
            storage_location: PacketCaptureStorageLocation {
                storage_id: location.storage_id.clone().filter(|id| !id.is_empty()),
                storage_path: None,
                file_path: location.file_path.clone().filter(|path| !path.is_empty()),
                local_path: None,
            },
            stop_on_resolved: p.stop_on_resolved.unwrap_or(false),
            cooldown_seconds,
            max_concurrent,
            max_per_hour,
            webhook_secret,
        })
    }
}

impl ValidatedTrigger {
    /// Why `alert` does not match this trigger, or `None` when it does.
    pub fn mismatch(&self, alert: &Alert) -> Option<String> {
        if let Some(source) = self.source
            && source != alert.source
        {
            return Some(format!("the trigger takes alerts from {source:?} only"));
        }
        if !self.alert_rules.is_empty()
            && !self
                .alert_rules
                .iter()
                .any(|rule| rule.eq_ignore_ascii_case(&alert.rule))
        {
            return Some(format!("rule {:?} is not among {:?}", alert.rule, self.alert_rules));
        }
        if !self.severities.is_empty() {
            let severity = alert.severity.as_deref().unwrap_or_default();
            if !self
                .severities
                .iter()
                .any(|wanted| wanted.eq_ignore_ascii_case(severity))
            {
                return Some(format!("severity {severity:?} is not among {:?}", self.severities));
            }
        }
        for (name, value) in &self.labels {
            if alert.labels.get(name) != Some(value) {
                return Some(format!(
                    "label {name}={:?}, not {value:?}",
                    alert.labels.get(name).map(String::as_str).unwrap_or_default()
                ));
            }
        }
        None
    }

    /// The capture window for `alert`, naming `trigger`.
    pub fn window(&self, trigger: &ResourceId, alert: &Alert) -> AlertWindow {
        let mut window = AlertWindow::new(alert.fired_ms, self.seconds_before, self.seconds_after);
        window.trigger = Some(trigger.to_string());
        window.alert_id = Some(alert.id.clone());
        window.alert_rule = Some(alert.rule.clone());
        window
    }

    /// The properties a GET shows (no secret; `webhook_url` is the caller's).
    pub fn to_properties(&self) -> TriggerProperties {
        TriggerProperties {
            source: Some(
                match self.source {
                    None => "Any",
                    Some(AlertSource::AzureMonitor) => "AzureMonitor",
                    Some(AlertSource::Alertmanager) => "Alertmanager",
                }
                .to_owned(),
            ),
            matches: Some(TriggerMatch {
                alert_rules: Some(self.alert_rules.clone()),
                severities: Some(self.severities.clone()),
                labels: Some(self.labels.clone()),
            }),
            hosts: Some(TriggerHosts {
                from_alert: Some(self.hosts.from_alert),
                vms: (!self.hosts.vms.is_empty()).then(|| self.hosts.vms.iter().map(ResourceId::to_string).collect()),
                tags: (!self.hosts.tags.is_empty()).then(|| self.hosts.tags.clone()),
            }),
            capture: Some(TriggerCapture {
                filters: Some(self.filters_wire.clone()),
                bytes_to_capture_per_packet: Some(self.bytes_to_capture_per_packet.into()),
                total_bytes_per_session: Some(self.total_bytes_per_session.into()),
                seconds_before: Some(self.seconds_before.into()),
                seconds_after: Some(self.seconds_after.into()),
            }),
            storage_location: self.storage_location.clone(),
            stop_on_resolved: Some(self.stop_on_resolved),
            cooldown_seconds: Some(self.cooldown_seconds.into()),
            max_concurrent: Some(self.max_concurrent.into()),
            max_per_hour: Some(self.max_per_hour.into()),
            webhook_secret: None,
            webhook_url: None,
            provisioning_state: Some("Succeeded".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{AlertState, AlertTarget};

    const ACCOUNT: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct";

    fn check(properties: &str) -> Result<ValidatedTrigger, ApiError> {
        parse_trigger(format!(r#"{{"properties":{properties}}}"#).as_bytes())?.validate()
    }

    fn alert(source: AlertSource, rule: &str, severity: Option<&str>, labels: &[(&str, &str)]) -> Alert {
        Alert {
            source,
            id: "a1".to_owned(),
            rule: rule.to_owned(),
            severity: severity.map(str::to_owned),
            state: AlertState::Fired,
            fired_ms: 1_000_000,
            targets: vec![AlertTarget::Host("web-1".to_owned())],
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    #[test]
    fn defaults_apply_and_a_get_can_be_put_back() {
        let valid = check(&format!(r#"{{"storageLocation":{{"storageId":"{ACCOUNT}"}}}}"#)).unwrap();
        assert_eq!((valid.seconds_before, valid.seconds_after), (60, 60));
        assert_eq!(
            (valid.cooldown_seconds, valid.max_concurrent, valid.max_per_hour),
            (300, 10, 60)
        );
        assert!(valid.hosts.from_alert && !valid.stop_on_resolved && valid.source.is_none());
        let echo = serde_json::to_string(&valid.to_properties()).unwrap();
        assert_eq!(check(&echo).unwrap(), valid);
    }

    #[test]
    fn alerts_match_by_source_rule_severity_and_labels() {
        let trigger = check(&format!(
            r#"{{"source":"alertmanager","match":{{"alertRules":["HighLatency"],"severities":["critical"],"labels":{{"team":"net"}}}},"storageLocation":{{"storageId":"{ACCOUNT}"}}}}"#
        ))
        .unwrap();
        let good = alert(
            AlertSource::Alertmanager,
            "highlatency",
            Some("Critical"),
            &[("team", "net")],
        );
        assert_eq!(trigger.mismatch(&good), None);
        for (bad, words) in [
            (
                alert(
                    AlertSource::AzureMonitor,
                    "HighLatency",
                    Some("critical"),
                    &[("team", "net")],
                ),
                "Alertmanager only",
            ),
            (
                alert(
                    AlertSource::Alertmanager,
                    "DiskFull",
                    Some("critical"),
                    &[("team", "net")],
                ),
                "DiskFull",
            ),
            (
                alert(
                    AlertSource::Alertmanager,
                    "HighLatency",
                    Some("warning"),
                    &[("team", "net")],
                ),
                "warning",
            ),
            (
                alert(AlertSource::Alertmanager, "HighLatency", None, &[("team", "net")]),
                "severity",
            ),
            (
                alert(
                    AlertSource::Alertmanager,
                    "HighLatency",
                    Some("critical"),
                    &[("team", "db")],
                ),
                "team",
            ),
        ] {
            let why = trigger.mismatch(&bad).expect("no match");
            assert!(why.contains(words), "{why}");
        }
    }

    #[test]
    fn bad_triggers_say_what_is_wrong_where() {
        let storage = format!(r#""storageLocation":{{"storageId":"{ACCOUNT}"}}"#);
        let cases = [
            ("{}".to_owned(), "properties.storageLocation", "is required"),
            (
                format!(r#"{{"source":"Splunk",{storage}}}"#),
                "properties.source",
                "Splunk",
            ),
            (
                format!(r#"{{"match":{{"alertRules":[""]}},{storage}}}"#),
                "properties.match.alertRules[0]",
                "empty",
            ),
            (
                format!(r#"{{"source":"AzureMonitor","match":{{"labels":{{"a":"b"}}}},{storage}}}"#),
                "properties.match.labels",
                "AzureMonitor",
            ),
            (
                format!(r#"{{"hosts":{{"fromAlert":false}},{storage}}}"#),
                "properties.hosts.fromAlert",
                "no host",
            ),
            (
                format!(r#"{{"hosts":{{"vms":["vm1"]}},{storage}}}"#),
                "properties.hosts.vms[0]",
                "resource id",
            ),
            (
                format!(r#"{{"hosts":{{"vms":[]}},{storage}}}"#),
                "properties.hosts",
                "empty",
            ),
            (
                format!(r#"{{"hosts":{{"vms":["{ACCOUNT}"]}},{storage}}}"#),
                "properties.hosts.vms[0]",
                "storage account",
            ),
            (
                format!(r#"{{"capture":{{"secondsBefore":3601}},{storage}}}"#),
                "properties.capture.secondsBefore",
                "0-3600",
            ),
            (
                format!(r#"{{"capture":{{"secondsAfter":-1}},{storage}}}"#),
                "properties.capture.secondsAfter",
                "out of range",
            ),
            (
                format!(r#"{{"capture":{{"secondsBefore":0,"secondsAfter":0}},{storage}}}"#),
                "properties.capture",
                "no time",
            ),
            (
                format!(r#"{{"capture":{{"filters":[{{"localPort":"99999"}}]}},{storage}}}"#),
                "properties.capture.filters[0].localPort",
                "",
            ),
            (
                format!(r#"{{"cooldownSeconds":86401,{storage}}}"#),
                "properties.cooldownSeconds",
                "0-86400",
            ),
            (
                format!(r#"{{"maxConcurrent":0,{storage}}}"#),
                "properties.maxConcurrent",
                "1-1000",
            ),
            (
                format!(r#"{{"maxPerHour":0,{storage}}}"#),
                "properties.maxPerHour",
                "1-10000",
            ),
            (
                format!(r#"{{"webhookSecret":"short",{storage}}}"#),
                "properties.webhookSecret",
                "32-128",
            ),
            (
                format!(r#"{{"webhookSecret":"{}",{storage}}}"#, "x/".repeat(20)),
                "properties.webhookSecret",
                "URL",
            ),
            (
                format!(r#"{{"stopOnResolved":"yes",{storage}}}"#),
                "properties.stopOnResolved",
                "",
            ),
            (
                format!(r#"{{"capture":{{"secondsBefor":60}},{storage}}}"#),
                "properties.capture",
                "secondsBefor",
            ),
            (
                format!(r#"{{"storageLocation":{{"storageId":"{ACCOUNT}","localPath":"/var/captures/x.cap"}}}}"#),
                "properties.storageLocation",
                "localPath",
            ),
        ];
        for (properties, target, words) in cases {
            let err = check(&properties).expect_err(&properties);
            assert!(
                err.target().unwrap_or_default().starts_with(target),
                "{properties}: target {:?}: {}",
                err.target(),
                err.message()
            );
            assert!(err.message().contains(words), "{properties}: {}", err.message());
        }
    }
}
