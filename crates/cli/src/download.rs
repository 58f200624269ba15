//! `packet-capture download`: a capture's file, fetched through the
//! controller from the capture's `storageLocation.storagePath`, with a
//! progress bar on standard error when it is a terminal (indicatif draws
//! nothing otherwise).
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
    let written = if output_file == "-" {
        let mut stdout = std::io::stdout().lock();
        let written = copy(response, &mut stdout, &bar, &url).await;
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
        let written = copy(response, &mut file, &bar, &url).await;
        bar.finish_and_clear();
        let written = match written {
            Ok(written) => written,
            Err(err) => {
                let _ = std::fs::remove_file(&partial);
                return Err(err);
            }
        };
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
    if !context.only_show_errors && output_file != "-" {
        eprintln!("Downloaded {name} ({written} bytes) to {output_file}");
    }
    Ok(())
}

/// Copies the body to `out`, advancing `bar`; the bytes written.
async fn copy(
    mut response: reqwest::Response,
    out: &mut impl std::io::Write,
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
        written += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
}

/// A 404 for the file: say where the capture is (its file goes up when it
/// stops), or the server's error when the status cannot be read.
async fn not_uploaded(context: &Context, name: &str, capture_path: &str, err: CliError) -> CliError {
    let url = context.client.url(&format!("{capture_path}/queryStatus"), API_VERSION);
    let status = match context.client.begin(Method::POST, &url, None, &[200, 202]).await {
        Ok(first) => context.client.wait(&Method::POST, &url, first).await.ok().flatten(),
        Err(_) => None,
    };
    let Some(status) = status else {
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
