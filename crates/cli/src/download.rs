//! `packet-capture download`: a capture's file, fetched through the
//! controller from the capture's `storageLocation.storagePath`, with a
//! progress bar on standard error when it is a terminal (indicatif draws
//! nothing otherwise), and checked against the SHA-256 the agent computed
//! before it uploaded (the status's `netwatch.files`): a file that arrives
//! different is an error and is not kept. A continuous capture has one file
//! per rotated file: they go into the directory named, each by its own name.
//!
//! The storage path is a URL under the controller's download route
//! (`/netwatch/v1/storage/{account}/{blob}`); the CLI fetches that route on
//! the server it is configured for, whatever host the URL names (the server
//! writes the host the capture's creator reached it by). The file is written
//! to `NAME.partial` and renamed when complete, so an interrupted download
//! never leaves a truncated `.cap` behind; `-` writes to standard output.

use std::io::Write as _;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use netwatch_api::agent::DOWNLOAD_PREFIX;
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::Context;
use crate::commands::packet_capture::API_VERSION;
use crate::error::CliError;

/// The progress bar's look: bytes, rate, time left.
const BAR_TEMPLATE: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}";

/// Downloads the file of `capture` (a GET of the capture, at `capture_path`)
/// to `output_file`.
pub(crate) async fn download(
    context: &Context,
    capture: &Value,
    capture_path: &str,
    output_file: &str,
) -> Result<(), CliError> {
    let name = capture.get("name").and_then(Value::as_str).unwrap_or_default();
    let Some(storage_path) = capture
        .pointer("/properties/storageLocation/storagePath")
        .and_then(Value::as_str)
        .filter(|path| !path.is_empty())
    else {
        let file_path = capture
            .pointer("/properties/storageLocation/filePath")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(CliError::Validation(format!(
            "packet capture {name} has no file in storage: it was created without --storage-account{}",
            if file_path.is_empty() {
                String::new()
            } else {
                format!("; its file is {file_path} on the host")
            }
        )));
    };
    let stored = stored_files(context, capture_path).await;
    let continuous = capture
        .pointer("/properties/continuousCapture")
        .is_some_and(|value| !value.is_null());
    if continuous {
        if output_file == "-" {
            return Err(CliError::Validation(format!(
                "packet capture {name} is continuous: its files go into a directory, not to standard output"
            )));
        }
        if stored.is_empty() {
            return Err(not_uploaded(context, name, capture_path, CliError::Validation(String::new())).await);
        }
        std::fs::create_dir_all(output_file).map_err(|source| CliError::File {
            what: "create the directory",
            path: PathBuf::from(output_file),
            source,
        })?;
        for file in &stored {
            let file_name = file.storage_path.rsplit('/').next().unwrap_or("capture.cap");
            let target = PathBuf::from(output_file).join(file_name);
            let target = target.to_string_lossy();
            fetch(
                context,
                name,
                capture_path,
                &file.storage_path,
                Some(&file.sha256),
                &target,
            )
            .await?;
        }
        return Ok(());
    }
    let expected = stored
        .iter()
        .find(|file| file.storage_path == storage_path)
        .map(|file| file.sha256.as_str());
    fetch(context, name, capture_path, storage_path, expected, output_file).await
}

/// A file in storage, as the capture's status lists it.
struct StoredFile {
    storage_path: String,
    sha256: String,
}

/// The capture's files in storage (none when the status cannot be read).
async fn stored_files(context: &Context, capture_path: &str) -> Vec<StoredFile> {
    let Some(status) = query_status(context, capture_path).await else {
        return vec![];
    };
    status
        .pointer("/netwatch/files")
        .and_then(Value::as_array)
        .map(|files| {
            files
                .iter()
                .filter_map(|file| {
                    Some(StoredFile {
                        storage_path: file.get("storagePath")?.as_str()?.to_owned(),
                        sha256: file.get("sha256")?.as_str()?.to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Downloads the file at `storage_path` to `output_file`, checked against
/// `sha256` when the controller recorded one.
async fn fetch(
    context: &Context,
    name: &str,
    capture_path: &str,
    storage_path: &str,
    sha256: Option<&str>,
    output_file: &str,
) -> Result<(), CliError> {
    let Some((_, blob)) = storage_path.split_once(DOWNLOAD_PREFIX) else {
        return Err(CliError::Validation(format!(
            "packet capture {name} is stored at {storage_path}, which this controller does not serve"
        )));
    };
    let url = format!("{}{DOWNLOAD_PREFIX}{blob}", context.client.base());
    let response = match context.client.download(&url).await {
        Ok(response) => response,
        Err(err) if err.is_not_found() => return Err(not_uploaded(context, name, capture_path, err).await),
        Err(err) => return Err(err),
    };
    let total = response.content_length();
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::no_length(),
    };
    if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_owned());
    let mut hasher = Sha256::new();
    let written = if output_file == "-" {
        let mut stdout = std::io::stdout().lock();
        let written = copy(response, &mut stdout, &mut hasher, &bar, &url).await;
        bar.finish_and_clear();
        let written = written?;
        stdout.flush().map_err(|source| CliError::File {
            what: "write the capture to",
            path: PathBuf::from("standard output"),
            source,
        })?;
        written
    } else {
        let path = PathBuf::from(output_file);
        let partial = PathBuf::from(format!("{output_file}.partial"));
        let file_error = |what: &'static str, path: &PathBuf| {
            let path = path.clone();
            move |source| CliError::File { what, path, source }
        };
        let mut file = std::fs::File::create(&partial).map_err(file_error("create", &partial))?;
        let written = copy(response, &mut file, &mut hasher, &bar, &url).await;
        bar.finish_and_clear();
        let written = match written {
            Ok(written) => written,
            Err(err) => {
                let _ = std::fs::remove_file(&partial);
                return Err(err);
            }
        };
        let digest = hex(&hasher.clone().finalize());
        if let Some(expected) = sha256
            && digest != expected
        {
            let _ = std::fs::remove_file(&partial);
            return Err(CliError::Unexpected(format!(
                "the download of {name} has SHA-256 {digest} where the agent uploaded {expected}: it was damaged \
                 on the way or in storage, and was not kept"
            )));
        }
        file.sync_all().map_err(file_error("write", &partial))?;
        std::fs::rename(&partial, &path).map_err(file_error("write", &path))?;
        written
    };
    if let Some(total) = total
        && written != total
    {
        return Err(CliError::Unexpected(format!(
            "the download of {name} ended after {written} of {total} bytes"
        )));
    }
    if output_file == "-"
        && let Some(expected) = sha256
        && hex(&hasher.finalize()) != expected
    {
        return Err(CliError::Unexpected(format!(
            "the download of {name} does not have the SHA-256 {expected} the agent uploaded: it was damaged on the way or in storage"
        )));
    }
    if !context.only_show_errors && output_file != "-" {
        let checked = if sha256.is_some() { ", SHA-256 checked" } else { "" };
        eprintln!("Downloaded {name} ({written} bytes{checked}) to {output_file}");
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies the body to `out`, advancing `bar`; the bytes written.
async fn copy(
    mut response: reqwest::Response,
    out: &mut impl std::io::Write,
    hasher: &mut Sha256,
    bar: &ProgressBar,
    url: &str,
) -> Result<u64, CliError> {
    let mut written = 0_u64;
    loop {
        let chunk = response.chunk().await.map_err(|source| CliError::Connection {
            what: format!("GET {url}"),
            source,
        })?;
        let Some(chunk) = chunk else {
            return Ok(written);
        };
        out.write_all(&chunk).map_err(|source| CliError::File {
            what: "write the capture to",
            path: PathBuf::from("the output file"),
            source,
        })?;
        hasher.update(&chunk);
        written += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
}

/// The capture's status (`queryStatus`), `None` when it cannot be read.
async fn query_status(context: &Context, capture_path: &str) -> Option<Value> {
    let url = context.client.url(&format!("{capture_path}/queryStatus"), API_VERSION);
    match context.client.begin(Method::POST, &url, None, &[200, 202]).await {
        Ok(first) => context.client.wait(&Method::POST, &url, first).await.ok().flatten(),
        Err(_) => None,
    }
}

/// A 404 for the file: say where the capture is (its file goes up when it
/// stops), or the server's error when the status cannot be read.
async fn not_uploaded(context: &Context, name: &str, capture_path: &str, err: CliError) -> CliError {
    let Some(status) = query_status(context, capture_path).await else {
        return err;
    };
    let state = status
        .get("packetCaptureStatus")
        .and_then(Value::as_str)
        .unwrap_or("Unknown");
    let upload = status.pointer("/netwatch/uploadState").and_then(Value::as_str);
    let hint = match (state, upload) {
        ("NotStarted" | "Running", _) => format!(
            "it is {state}: its file is uploaded when it stops (`netwatch network watcher packet-capture stop -n {name} -l LOCATION`)"
        ),
        (_, Some(upload)) if upload != "Succeeded" => format!("it is {state} and its upload is {upload}"),
        _ => format!("it is {state}, and the file is not in storage"),
    };
    CliError::Validation(format!(
        "the file of packet capture {name} is not available yet: {hint}"
    ))
}
