//! Captures triggered by alerts (issue 16): which flight recorder a host
//! runs, and what an alert delivered to a trigger's webhook does.
//!
//! A delivery's alerts are each matched against the trigger (`mismatch`);
//! a fired one that matches is taken to its hosts (its own targets, narrowed
//! by the trigger's choice, or the trigger's hosts), and on each host a
//! capture around the alert is claimed under the trigger's guards
//! (`Store::claim_firing`: once per alert and host, cooldown, concurrency,
//! rate) and created as any capture, named after the trigger, the host and
//! the alert. A resolved one stops the captures it started when the trigger
//! says so. Every alert and host gets an answer saying what happened to it;
//! nothing about one alert stops the others.

use std::collections::BTreeMap;

use netwatch_api::agent::{ControllerMessage, InterfaceInfo, RecorderSpec};
use netwatch_api::alerts::{Alert, AlertState, AlertTarget};
use netwatch_api::packet_capture::{
    MAX_TIME_LIMIT_IN_SECONDS, NetwatchCaptureParameters, PacketCaptureParameters, TargetType,
};
use netwatch_api::recorder::FlightRecorder;
use netwatch_api::resource::{ResourceId, ResourceKind, ResourceName};
use netwatch_api::trigger::ValidatedTrigger;
use serde::Serialize;
use sha2::Digest as _;

use crate::app::AppState;
use crate::clock::now_ms;
use crate::lifecycle::{self, CreateError, NewCapture, fleet};
use crate::store::{Claim, Guards, StoreError, VmRecord, WatcherRecord};

/// The recorder `vm_id`'s host should run: the VM's own, else its scale
/// set's (the newest when several).
pub(crate) async fn recorder_for(state: &AppState, vm_id: &str) -> Result<Option<RecorderSpec>, StoreError> {
    let mut targets = vec![vm_id.to_owned()];
    if let Some((set, _)) = fleet::instance_of(vm_id) {
        targets.push(set.to_string());
    }
    let found = state.store.recorders_on(&targets).await?;
    let own = found.iter().find(|r| r.target_key.eq_ignore_ascii_case(vm_id));
    let Some(record) = own.or_else(|| found.first()) else {
        return Ok(None);
    };
    let spec = serde_json::from_str::<FlightRecorder>(&record.spec_json)
        .ok()
        .and_then(|recorder| recorder.validate().ok())
        .zip(ResourceId::parse("id", &record.id).ok())
        .map(|(valid, id)| valid.spec(&id));
    if spec.is_none() {
        tracing::warn!(recorder = %record.id, "stored flight recorder is unreadable: not sent to its hosts");
    }
    Ok(spec)
}

/// The hosts (VM ids) a recorder target covers: the VM, or the set's instances.
pub(crate) async fn hosts_of_target(state: &AppState, target: &str) -> Result<Vec<String>, StoreError> {
    let Ok(id) = ResourceId::parse("target", target) else {
        return Ok(vec![]);
    };
    if id.kind() == ResourceKind::ScaleSet {
        return Ok(state
            .store
            .scale_set_instances(target)
            .await?
            .into_iter()
            .map(|instance| instance.vm_key)
            .collect());
    }
    Ok(vec![target.to_owned()])
}

/// Tells each host of `target` which recorder it runs now (connected ones
/// at once; the others at their next hello).
pub(crate) async fn push_recorders(state: &AppState, target: &str) -> Result<(), StoreError> {
    for host in hosts_of_target(state, target).await? {
        let recorder = recorder_for(state, &host).await?;
        state.hub.send(&host, ControllerMessage::Recorder { recorder }).await;
    }
    Ok(())
}

/// What happened to one alert of a delivery.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AlertOutcome {
    pub id: String,
    pub rule: String,
    pub state: &'static str,
    /// Matched the trigger.
    pub matched: bool,
    /// Why nothing was done for it as a whole (no match, no host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub hosts: Vec<HostOutcome>,
}

/// What happened on one host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HostOutcome {
    /// The VM id, or the alert's target as it named it when no host is known by it.
    pub host: String,
    /// `Started`, `Duplicate`, `Cooldown`, `ConcurrencyLimit`, `RateLimit`,
    /// `UnknownHost`, `Failed`, `Stopped`, `NotRunning`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl HostOutcome {
    fn new(host: impl Into<String>, result: &'static str, capture: Option<String>, message: Option<String>) -> Self {
        Self {
            host: host.into(),
            result,
            capture,
            message,
        }
    }
}

/// A trigger as a delivery acts on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Firing<'a> {
    pub id: &'a ResourceId,
    pub trigger: &'a ValidatedTrigger,
    pub watcher: &'a WatcherRecord,
    /// The scheme and host clients reach this server at.
    pub base: &'a str,
    /// The registered hosts, read once per delivery.
    pub vms: &'a [VmRecord],
}

/// Acts on one alert for a trigger (module doc).
pub(crate) async fn act(state: &AppState, firing: Firing<'_>, alert: &Alert) -> Result<AlertOutcome, StoreError> {
    let mut outcome = AlertOutcome {
        id: alert.id.clone(),
        rule: alert.rule.clone(),
        state: match alert.state {
            AlertState::Fired => "Fired",
            AlertState::Resolved => "Resolved",
        },
        matched: false,
        reason: None,
        hosts: vec![],
    };
    if let Some(why) = firing.trigger.mismatch(alert) {
        tracing::info!(trigger = %firing.id, alert = %alert.id, rule = %alert.rule, why = %why, "alert does not match the trigger");
        outcome.reason = Some(format!("does not match the trigger: {why}"));
        return Ok(outcome);
    }
    outcome.matched = true;
    if alert.state == AlertState::Resolved {
        if !firing.trigger.stop_on_resolved {
            outcome.reason = Some("resolved: the trigger's captures run their course (stopOnResolved is false)".into());
            return Ok(outcome);
        }
        for capture in state.store.firings_of(&firing.id.to_string(), &alert.id).await? {
            let Some(record) = state.store.get_capture(&capture).await? else {
                continue;
            };
            let host = record.target_id.clone();
            if record.status.is_active() {
                lifecycle::stop(state, &record).await?;
                tracing::info!(capture = %record.id, alert = %alert.id, "alert resolved: its capture stopped");
                outcome
                    .hosts
                    .push(HostOutcome::new(host, "Stopped", Some(record.id), None));
            } else {
                outcome
                    .hosts
                    .push(HostOutcome::new(host, "NotRunning", Some(record.id), None));
            }
        }
        return Ok(outcome);
    }
    let (hosts, unknown) = hosts_for(state, firing.trigger, firing.vms, alert).await?;
    outcome.hosts.extend(unknown);
    if hosts.is_empty() && outcome.hosts.is_empty() {
        outcome.reason = Some(if firing.trigger.hosts.from_alert {
            "the alert names no host netwatch knows (Azure's alertTargetIDs, or an instance, host or vm label), \
             or none among the trigger's hosts"
                .to_owned()
        } else {
            "the trigger's hosts choose none".to_owned()
        });
        return Ok(outcome);
    }
    for vm in hosts {
        outcome.hosts.push(start_on(state, firing, alert, &vm).await?);
    }
    Ok(outcome)
}

/// The hosts to capture on for `alert`, and what the alert named that is no host.
async fn hosts_for(
    state: &AppState,
    trigger: &ValidatedTrigger,
    all: &[VmRecord],
    alert: &Alert,
) -> Result<(Vec<VmRecord>, Vec<HostOutcome>), StoreError> {
    let mut chosen: Vec<VmRecord> = Vec::new();
    let mut unknown = Vec::new();
    let add = |vm: &VmRecord, chosen: &mut Vec<VmRecord>| {
        if !chosen.iter().any(|c| c.id.eq_ignore_ascii_case(&vm.id)) {
            chosen.push(vm.clone());
        }
    };
    if trigger.hosts.from_alert {
        for target in &alert.targets {
            let found: Vec<&VmRecord> = match target {
                AlertTarget::ResourceId(id) => all.iter().filter(|vm| is_or_in(&vm.id, id)).collect(),
                AlertTarget::Host(name) => all.iter().filter(|vm| names_host(vm, name)).collect(),
            };
            if found.is_empty() {
                let named = match target {
                    AlertTarget::ResourceId(id) | AlertTarget::Host(id) => id.clone(),
                };
                let message = "no registered host has this id, name or address (is its agent installed?)".to_owned();
                unknown.push(HostOutcome::new(named, "UnknownHost", None, Some(message)));
            }
            for vm in found {
                if !trigger.hosts.selects() || selected(state, trigger, vm).await? {
                    add(vm, &mut chosen);
                }
            }
        }
    } else {
        for vm in all {
            if selected(state, trigger, vm).await? {
                add(vm, &mut chosen);
            }
        }
    }
    Ok((chosen, unknown))
}

/// Whether `vm_id` is `target` or an instance of the scale set `target`.
fn is_or_in(vm_id: &str, target: &str) -> bool {
    if vm_id.eq_ignore_ascii_case(target) {
        return true;
    }
    fleet::instance_of(vm_id).is_some_and(|(set, _)| set.to_string().eq_ignore_ascii_case(target))
}

/// Whether a host is known by `name`: its VM name, its host name, or one of
/// its addresses.
fn names_host(vm: &VmRecord, name: &str) -> bool {
    let facts: serde_json::Value = serde_json::from_str(&vm.agent_json).unwrap_or_default();
    let vm_name = match fleet::instance_of(&vm.id) {
        Some((set, instance)) => fleet::instance_name(set.name(), instance),
        None => vm.id.rsplit('/').next().unwrap_or_default().to_owned(),
    };
    if vm_name.eq_ignore_ascii_case(name) || facts["hostname"].as_str().is_some_and(|h| h.eq_ignore_ascii_case(name)) {
        return true;
    }
    // Every host has the loopback and unspecified addresses: they name none.
    let Ok(address) = name.parse::<std::net::IpAddr>() else {
        return false;
    };
    if address.is_loopback() || address.is_unspecified() {
        return false;
    }
    let interfaces: Vec<InterfaceInfo> = serde_json::from_value(facts["interfaces"].clone()).unwrap_or_default();
    interfaces.iter().flat_map(|i| &i.addresses).any(|cidr| {
        cidr.split('/')
            .next()
            .and_then(|a| a.parse::<std::net::IpAddr>().ok())
            .is_some_and(|a| a == address)
    })
}

/// Whether the trigger's own choice of hosts (by id or tag) takes `vm`.
async fn selected(state: &AppState, trigger: &ValidatedTrigger, vm: &VmRecord) -> Result<bool, StoreError> {
    let choice = &trigger.hosts;
    if !choice.vms.is_empty() {
        return Ok(choice.vms.iter().any(|id| is_or_in(&vm.id, &id.to_string())));
    }
    if !choice.tags.is_empty() {
        let tags: BTreeMap<String, String> = fleet::host_tags(state, vm).await?;
        return Ok(choice.tags.iter().all(|(k, v)| tags.get(k) == Some(v)));
    }
    Ok(false)
}

/// The capture's name: `{trigger}-{host}-{alert digest}`, an ARM name.
fn capture_name(trigger: &ResourceId, vm: &VmRecord, alert: &Alert) -> Option<ResourceName> {
    let cut = |text: &str, n: usize| -> String {
        text.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .take(n)
            .collect()
    };
    let host = match fleet::instance_of(&vm.id) {
        Some((set, instance)) => fleet::instance_name(set.name(), instance),
        None => vm.id.rsplit('/').next().unwrap_or_default().to_owned(),
    };
    let digest = sha2::Sha256::digest(alert.id.as_bytes());
    let tag: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let name = format!("{}-{}-{tag}", cut(trigger.name().as_str(), 32), cut(&host, 32));
    ResourceName::parse("name", &name).ok()
}

/// Claims and creates the capture of `alert` on `vm`.
async fn start_on(
    state: &AppState,
    firing: Firing<'_>,
    alert: &Alert,
    vm: &VmRecord,
) -> Result<HostOutcome, StoreError> {
    let trigger = firing.trigger;
    let Some(name) = capture_name(firing.id, vm, alert) else {
        let message = "no valid capture name can be made from the trigger's and host's names".to_owned();
        return Ok(HostOutcome::new(&vm.id, "Failed", None, Some(message)));
    };
    let watcher = ResourceId::parse("watcher", &firing.watcher.id).map_err(|e| StoreError::Conflict(e.to_string()))?;
    let capture_id =
        ResourceId::packet_capture(watcher.subscription(), watcher.resource_group(), watcher.name(), &name);
    let now = now_ms();
    let guards = Guards {
        cooldown_ms: i64::from(trigger.cooldown_seconds) * 1000,
        max_concurrent: trigger.max_concurrent.into(),
        max_per_hour: trigger.max_per_hour.into(),
    };
    let trigger_id = firing.id.to_string();
    let claim = state
        .store
        .claim_firing(
            &trigger_id,
            &alert.id,
            &vm.id,
            &capture_id.to_string(),
            alert.fired_ms,
            now,
            guards,
        )
        .await?;
    let refused = |result, message: String| {
        tracing::info!(trigger = %trigger_id, alert = %alert.id, vm = %vm.id, result, why = %message, "no capture for the alert on this host");
        Ok(HostOutcome::new(&vm.id, result, None, Some(message)))
    };
    match claim {
        Claim::Claimed => {}
        Claim::Duplicate { capture_key } => {
            return Ok(HostOutcome::new(
                &vm.id,
                "Duplicate",
                Some(capture_key),
                Some("this alert started a capture on this host already".to_owned()),
            ));
        }
        Claim::Cooldown { until_ms } => {
            let seconds = (until_ms - now + 999) / 1000;
            return refused(
                "Cooldown",
                format!("the trigger captured on this host less than cooldownSeconds ago: not for {seconds} s more"),
            );
        }
        Claim::Concurrency { running } => {
            return refused(
                "ConcurrencyLimit",
                format!("the trigger has {running} captures running, its maxConcurrent"),
            );
        }
        Claim::RateLimit { started } => {
            return refused(
                "RateLimit",
                format!("the trigger started {started} captures in the last hour, its maxPerHour"),
            );
        }
    }
    let window = trigger.window(firing.id, alert);
    let parameters = PacketCaptureParameters {
        target: vm.id.clone(),
        target_type: Some(TargetType::AzureVm.as_str().to_owned()),
        bytes_to_capture_per_packet: Some(trigger.bytes_to_capture_per_packet.into()),
        total_bytes_per_session: Some(trigger.total_bytes_per_session.into()),
        time_limit_in_seconds: Some(
            (trigger.seconds_before + trigger.seconds_after)
                .clamp(1, MAX_TIME_LIMIT_IN_SECONDS)
                .into(),
        ),
        storage_location: trigger.storage_location.clone(),
        filters: Some(trigger.filters_wire.clone()),
        netwatch: Some(NetwatchCaptureParameters {
            targets: None,
            alert: Some(window.to_parameters()),
        }),
        ..PacketCaptureParameters::default()
    };
    let created = match parameters.validate() {
        Ok(capture) => {
            lifecycle::create(
                state,
                NewCapture {
                    id: &capture_id,
                    capture: &capture,
                    watcher: firing.watcher,
                    new_watcher: false,
                    base: firing.base,
                },
            )
            .await
        }
        Err(error) => {
            state.store.release_firing(&trigger_id, &alert.id, &vm.id).await?;
            return Ok(HostOutcome::new(
                &vm.id,
                "Failed",
                None,
                Some(error.message().to_owned()),
            ));
        }
    };
    match created {
        Ok(created) => {
            tracing::info!(trigger = %trigger_id, alert = %alert.id, rule = %alert.rule, vm = %vm.id,
                capture = %created.record.id, "alert fired: capture around it started");
            Ok(HostOutcome::new(&vm.id, "Started", Some(created.record.id), None))
        }
        Err(CreateError::Store(error)) => {
            let _ = state.store.release_firing(&trigger_id, &alert.id, &vm.id).await;
            Err(error)
        }
        Err(error) => {
            state.store.release_firing(&trigger_id, &alert.id, &vm.id).await?;
            tracing::warn!(trigger = %trigger_id, alert = %alert.id, vm = %vm.id, error = %error, "capture around an alert not created");
            Ok(HostOutcome::new(&vm.id, "Failed", None, Some(error.to_string())))
        }
    }
}
