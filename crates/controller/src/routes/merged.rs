//! `GET …/packetCaptures/{name}/merged` (netwatch's own path): every host's
//! files of a capture over many hosts as one pcapng (DESIGN §8), merged as
//! they are read from storage ([`crate::merge`]): one interface per host
//! (`host/interface`, the instance id in its description, the filters),
//! packets in time order with their direction, each host's counters at the
//! end. The answer starts before the merge ends; memory does not grow with
//! the files.
//!
//! 409 for a capture over one VM (its file is at its `storagePath`) and for
//! one with no file stored yet; 404 for no such capture.

use std::net::IpAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{FutureExt as _, TryStreamExt as _};
use netwatch_api::error::ApiError;
use netwatch_api::packet_capture::{NetwatchCaptureStatus, PacketCapture};
use netwatch_storage::{BlobPath, Storage as _};
use serde_json::Value;

use super::packet_captures::{CapturePath, find_capture};
use super::{AppState, ArmVersion, HttpError};
use crate::lifecycle::{self, capture_file_blob_path};
use crate::merge::{self, FileOpener, Section, Source};
use crate::store::{CaptureRecord, VmRecord};

/// The media type of a pcapng file.
const PCAPNG: &str = "application/x-pcapng";

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(&format!("{}/merged", super::packet_captures::CAPTURE_PATH), get(merged))
}

async fn merged(
    State(state): State<AppState>,
    Path(path): Path<CapturePath>,
    _version: ArmVersion,
) -> Result<Response, HttpError> {
    let record = find_capture(&state, &path).await?;
    if !lifecycle::fleet::is_fleet(&record) {
        let message = format!(
            "packet capture {} runs on one VM: its file is at its storagePath (`netwatch network watcher \
             packet-capture download` without --merged)",
            path.3
        );
        return Err(ApiError::conflict(message).into());
    }
    let request: PacketCapture = serde_json::from_str(&record.request_json)
        .map_err(|err| ApiError::internal(format!("stored capture {} is unreadable", record.id), err))?;
    let filters = serde_json::to_string(&request.properties.filters.unwrap_or_default()).unwrap_or_default();
    let account = request
        .properties
        .storage_location
        .storage_id
        .as_deref()
        .and_then(|id| id.rsplit('/').next())
        .map(str::to_owned);
    let Some(account) = account else {
        let message = format!(
            "packet capture {} has no storage account: its files stay on the hosts",
            path.3
        );
        return Err(ApiError::conflict(message).into());
    };
    let backend = match state.storage.get(&account).await? {
        Some(found) => found.backend.clone(),
        None => {
            let message = format!(
                "storage account {account:?} of packet capture {} is no longer configured",
                path.3
            );
            return Err(ApiError::conflict(message).into());
        }
    };
    let parts = lifecycle::fleet::parts(&state, &record.id).await?;
    let mut sources = Vec::new();
    for lifecycle::fleet::Part {
        record: part,
        vm,
        files,
    } in &parts
    {
        if files.is_empty() {
            continue;
        }
        let mut openers: Vec<FileOpener> = Vec::new();
        for file in files {
            let seq = u32::try_from(file.seq).unwrap_or_default();
            let blob = capture_file_blob_path(&part.target_id, part.created_ms, seq)
                .and_then(|text| BlobPath::parse(&text).ok())
                .ok_or_else(|| ApiError::internal(format!("capture {} makes a bad blob path", part.id), "blob"))?;
            let backend = backend.clone();
            openers.push(Box::new(move || {
                async move {
                    let blob = backend.open(&blob, None).await.map_err(std::io::Error::other)?;
                    Ok(blob.body)
                }
                .boxed()
            }));
        }
        sources.push(source(part, vm.as_ref(), &filters, openers));
    }
    // Hosts of a scale set may share a name: then the instance tells them apart.
    let names: Vec<String> = sources.iter().map(|(_, host, _)| host.clone()).collect();
    let sources: Vec<Source> = sources
        .into_iter()
        .map(|(mut source, host, instance)| {
            let shared = names.iter().filter(|name| **name == host).count() > 1;
            let host = if shared { format!("{host}#{instance}") } else { host };
            source.if_name = format!("{host}/{}", source.if_name);
            source
        })
        .collect();
    if sources.is_empty() {
        let message = format!(
            "packet capture {} has no file in storage yet: files are stored as each host's capture ends",
            path.3
        );
        return Err(ApiError::conflict(message).into());
    }
    let section = Section {
        capture_name: path.3.clone(),
        capture_id: record.id.clone(),
        filters: filters.clone(),
        user_appl: format!("netwatch {}", env!("CARGO_PKG_VERSION")),
    };
    tracing::info!(capture = %record.id, hosts = sources.len(), "merged download");
    let body = merge::merge(section, sources).map_err(std::io::Error::other);
    let name = format!("attachment; filename=\"{}.pcapng\"", path.3);
    let headers = [
        (header::CONTENT_TYPE, PCAPNG.to_owned()),
        (header::CONTENT_DISPOSITION, name),
    ];
    Ok((headers, Body::from_stream(body)).into_response())
}

/// One host's part as a merge source: its interface, its addresses (for
/// packet directions) and counters, from the facts its agent reported; with
/// its host name and instance id, which `if_name` begins with.
fn source(
    part: &CaptureRecord,
    vm: Option<&VmRecord>,
    filters: &str,
    files: Vec<FileOpener>,
) -> (Source, String, String) {
    let facts: Value = vm
        .and_then(|vm| serde_json::from_str(&vm.agent_json).ok())
        .unwrap_or(Value::Null);
    let host = facts["hostname"].as_str().unwrap_or("host");
    let instance = part.instance.as_deref().unwrap_or_default();
    let interface = facts["captureInterface"].as_str().unwrap_or("?");
    let mut local_macs = Vec::new();
    let mut local_addresses = Vec::new();
    for info in facts["interfaces"].as_array().into_iter().flatten() {
        if let Some(mac) = info["mac"].as_str().and_then(parse_mac) {
            local_macs.push(mac);
        }
        for address in info["addresses"].as_array().into_iter().flatten() {
            let text = address.as_str().unwrap_or_default();
            if let Ok(ip) = text.split('/').next().unwrap_or_default().parse::<IpAddr>() {
                local_addresses.push(ip);
            }
        }
    }
    let stats: NetwatchCaptureStatus = serde_json::from_str(&part.stats_json).unwrap_or_default();
    let source = Source {
        if_name: interface.to_owned(),
        if_description: part.target_id.clone(),
        if_filter: filters.to_owned(),
        if_os: "Linux".to_owned(),
        local_macs,
        local_addresses,
        received: Some(stats.packets_captured),
        dropped: Some(stats.kernel_drops),
        files,
    };
    (source, host.to_owned(), instance.to_owned())
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}
