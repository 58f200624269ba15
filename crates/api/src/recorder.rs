//! The flight recorder resource (issue 16), netwatch's own, under a network
//! watcher: `…/networkWatchers/{w}/netwatchFlightRecorders/{name}`. Its hosts
//! (a VM, or every instance of a scale set) each keep a bounded rolling window
//! of recent traffic, from which a capture around an alert takes the seconds
//! before the alert.
//!
//! # Rules
//! - `target`: a VM or scale-set id (required).
//! - `seconds`: 1-3600, default 60: the traffic kept at least, as long as
//!   `maxBytes` allows (at high rates the byte bound wins: the window is then
//!   shorter, and `show` says how long it is).
//! - `maxBytes`: 1 MiB - 64 GiB, default 1 GiB, of files on the host (60 s
//!   of 100-byte packets at 100,000 a second fit in it).
//! - `bytesToCapturePerPacket`: 0-262144, default 0 (whole packets).
//! - `filters`: Azure's packet-capture filters ([`crate::filter`]), the same
//!   rules and errors as a capture's.
//! - The read-only `id`, `name`, `type`, `etag`, `properties.provisioningState`
//!   and `properties.hosts` are accepted and ignored, so a GET can be PUT back;
//!   any other unknown field is refused.

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, in_range};
use crate::filter::{CaptureFilter, PacketCaptureFilter, validate_filters_without_expressions};
use crate::resource::{ResourceId, ResourceKind};

/// Default and bounds of `seconds`.
pub const DEFAULT_RECORDER_SECONDS: u32 = 60;
pub const MAX_RECORDER_SECONDS: u32 = 3_600;
/// Default and bounds of `maxBytes`.
pub const DEFAULT_RECORDER_MAX_BYTES: u64 = 1 << 30;
pub const MIN_RECORDER_MAX_BYTES: u64 = 1 << 20;
pub const MAX_RECORDER_MAX_BYTES: u64 = 64 << 30;
/// Most `bytesToCapturePerPacket` of a recorder (the pcap snap length limit).
pub const MAX_RECORDER_SNAPLEN: u32 = 262_144;

/// A flight recorder as PUT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlightRecorder {
    pub properties: FlightRecorderProperties,
    #[serde(default, skip_serializing)]
    pub id: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub name: Option<serde_json::Value>,
    #[serde(default, skip_serializing, rename = "type")]
    pub kind: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub etag: Option<serde_json::Value>,
}

/// `properties` of a flight recorder as PUT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlightRecorderProperties {
    #[serde(default)]
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<PacketCaptureFilter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_to_capture_per_packet: Option<i64>,
    #[serde(default, skip_serializing)]
    pub provisioning_state: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub hosts: Option<serde_json::Value>,
}

/// A flight recorder as GET answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlightRecorderResult {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub properties: FlightRecorderResultProperties,
}

/// `properties` of [`FlightRecorderResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlightRecorderResultProperties {
    pub provisioning_state: String,
    pub target: String,
    pub filters: Vec<PacketCaptureFilter>,
    pub seconds: u32,
    pub max_bytes: u64,
    pub bytes_to_capture_per_packet: u32,
    /// Each host's recorder as its agent last said.
    #[serde(default)]
    pub hosts: Vec<RecorderHost>,
}

/// One host's recorder, in `properties.hosts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecorderHost {
    pub vm_id: String,
    /// `Recording`, `Stopped`, `Failed`, or `Waiting` (its agent has not
    /// said yet, or is not connected).
    pub state: String,
    /// The oldest packet held (ISO 8601): the window starts there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<String>,
    /// Seconds from the oldest packet held to the agent's last report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<f64>,
    pub bytes: u64,
    pub files: u32,
    pub packets: u64,
    pub kernel_drops: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When its agent last said (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
}

/// A list of flight recorders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlightRecorderListResult {
    pub value: Vec<FlightRecorderResult>,
}

/// A flight recorder past validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedRecorder {
    pub target: ResourceId,
    pub filters: Vec<CaptureFilter>,
    /// The filters as sent, for the echo and the agent.
    pub filters_wire: Vec<PacketCaptureFilter>,
    pub seconds: u32,
    pub max_bytes: u64,
    pub bytes_to_capture_per_packet: u32,
}

/// Reads a PUT body: a 400 at the JSON path of what does not parse.
pub fn parse_flight_recorder(body: &[u8]) -> Result<FlightRecorder, ApiError> {
    crate::error::parse_json(
        body,
        "a flight recorder",
        r#"{"properties":{"target":"/subscriptions/…/virtualMachines/web-1","seconds":60}}"#,
    )
}

impl FlightRecorder {
    /// Checks every rule (module doc) and applies the defaults.
    pub fn validate(&self) -> Result<ValidatedRecorder, ApiError> {
        let properties = &self.properties;
        const TARGET: &str = "properties.target";
        if properties.target.is_empty() {
            return Err(ApiError::bad_request(
                TARGET,
                format!(
                    "{TARGET} is required: the id of the VM or scale set to record on, such as {}",
                    ResourceKind::VirtualMachine.id_template()
                ),
            ));
        }
        let target = ResourceId::parse_kind(
            TARGET,
            &properties.target,
            &[ResourceKind::VirtualMachine, ResourceKind::ScaleSet],
        )?;
        let filters_wire = properties.filters.clone().unwrap_or_default();
        let filters = validate_filters_without_expressions(&filters_wire, "a flight recorder's")?;
        let seconds = in_range(
            "properties.seconds",
            properties.seconds,
            DEFAULT_RECORDER_SECONDS.into(),
            (1, MAX_RECORDER_SECONDS.into()),
            "seconds",
        )?;
        let max_bytes = in_range(
            "properties.maxBytes",
            properties.max_bytes,
            DEFAULT_RECORDER_MAX_BYTES,
            (MIN_RECORDER_MAX_BYTES, MAX_RECORDER_MAX_BYTES),
            "bytes (1 MiB to 64 GiB)",
        )?;
        let snaplen = in_range(
            "properties.bytesToCapturePerPacket",
            properties.bytes_to_capture_per_packet,
            0,
            (0, MAX_RECORDER_SNAPLEN.into()),
            "bytes (0 keeps whole packets)",
        )?;
        Ok(ValidatedRecorder {
            target,
            filters,
            filters_wire,
            seconds: u32::try_from(seconds).expect("at most 3600"),
            max_bytes,
            bytes_to_capture_per_packet: u32::try_from(snaplen).expect("at most 262144"),
        })
    }
}

impl ValidatedRecorder {
    /// What the agent is sent to run it.
    pub fn spec(&self, id: &ResourceId) -> crate::agent::RecorderSpec {
        crate::agent::RecorderSpec {
            id: id.to_string(),
            filters: self.filters_wire.clone(),
            seconds: self.seconds,
            max_bytes: self.max_bytes,
            bytes_to_capture_per_packet: self.bytes_to_capture_per_packet,
        }
    }

    /// The echo of a GET, without its hosts.
    pub fn to_result(&self, id: &ResourceId) -> FlightRecorderResult {
        FlightRecorderResult {
            id: id.to_string(),
            name: id.name().to_string(),
            kind: "Microsoft.Network/networkWatchers/netwatchFlightRecorders".to_owned(),
            properties: FlightRecorderResultProperties {
                provisioning_state: "Succeeded".to_owned(),
                target: self.target.to_string(),
                filters: self.filters_wire.clone(),
                seconds: self.seconds,
                max_bytes: self.max_bytes,
                bytes_to_capture_per_packet: self.bytes_to_capture_per_packet,
                hosts: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-1";

    fn check(body: &str) -> Result<ValidatedRecorder, ApiError> {
        parse_flight_recorder(body.as_bytes())?.validate()
    }

    #[test]
    fn defaults_apply_and_a_get_can_be_put_back() {
        let valid = check(&format!(r#"{{"properties":{{"target":"{VM}"}}}}"#)).unwrap();
        assert_eq!(valid.seconds, 60);
        assert_eq!(valid.max_bytes, 1 << 30);
        assert_eq!(valid.bytes_to_capture_per_packet, 0);
        let id = ResourceId::parse(
            "id",
            &format!(
                "{}/x",
                VM.replace(
                    "Microsoft.Compute/virtualMachines/web-1",
                    "Microsoft.Network/networkWatchers/nw/netwatchFlightRecorders"
                )
            ),
        )
        .unwrap();
        let echo = serde_json::to_string(&valid.to_result(&id)).unwrap();
        assert_eq!(check(&echo).unwrap(), valid);
    }

    #[test]
    fn bad_recorders_say_what_is_wrong_where() {
        let cases = [
            (r#"{"properties":{}}"#.to_owned(), "properties.target", "is required"),
            (
                r#"{"properties":{"target":"vm1"}}"#.to_owned(),
                "properties.target",
                "not a valid resource id",
            ),
            (
                format!(r#"{{"properties":{{"target":"{VM}","seconds":0}}}}"#),
                "properties.seconds",
                "1-3600",
            ),
            (
                format!(r#"{{"properties":{{"target":"{VM}","seconds":3601}}}}"#),
                "properties.seconds",
                "out of range",
            ),
            (
                format!(r#"{{"properties":{{"target":"{VM}","maxBytes":1000}}}}"#),
                "properties.maxBytes",
                "1 MiB",
            ),
            (
                format!(r#"{{"properties":{{"target":"{VM}","bytesToCapturePerPacket":-1}}}}"#),
                "properties.bytesToCapturePerPacket",
                "out of range",
            ),
            (
                format!(r#"{{"properties":{{"target":"{VM}","filters":[{{"protocol":"SCTP"}}]}}}}"#),
                "properties.filters[0].protocol",
                "",
            ),
            (
                format!(r#"{{"properties":{{"target":"{VM}","secs":5}}}}"#),
                "properties",
                "secs",
            ),
            (
                format!(r#"{{"properties":{{"target":"{VM}","seconds":"60"}}}}"#),
                "properties.seconds",
                "",
            ),
            ("[]".to_owned(), "", "JSON object"),
        ];
        for (body, target, words) in cases {
            let err = check(&body).expect_err(&body);
            assert!(
                err.target().unwrap_or_default().starts_with(target),
                "{body}: target {:?}",
                err.target()
            );
            assert!(err.message().contains(words), "{body}: {}", err.message());
        }
    }
}
