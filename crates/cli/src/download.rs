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
//!
//! `--merged` fetches `{capture id}/merged` instead: one pcapng the server
//! merges from every host's files while it sends it (chunked, no size known
//! in advance, no SHA-256 to check), saved the same way.

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
/// Without a size: a spinner, bytes so far, rate, time taken.
const SPINNER_TEMPLATE: &str = "{spinner} {msg} {bytes} {bytes_per_sec} {elapsed}";
/// How often the spinner turns.
const SPINNER_TICK: std::time::Duration = std::time::Duration::from_millis(120);

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
    let written = save(response, &url, name, output_file, sha256).await?;
    if !context.only_show_errors && output_file != "-" {
        let checked = if sha256.is_some() { ", SHA-256 checked" } else { "" };
        eprintln!("Downloaded {name} ({written} bytes{checked}) to {output_file}");
    }
    Ok(())
}

/// `download --merged`: the capture's merged pcapng (`GET {capture}/merged`),
/// streamed to `output_file` as the server makes it; its size is not known
/// in advance, so the progress shows a spinner and the bytes so far.
pub(crate) async fn download_merged(
    context: &Context,
    name: &str,
    capture_path: &str,
    output_file: &str,
) -> Result<(), CliError> {
    let url = context.client.url(&format!("{capture_path}/merged"), API_VERSION);
    let response = context.client.download(&url).await?;
    let written = save(response, &url, name, output_file, None).await?;
    if !context.only_show_errors && output_file != "-" {
        eprintln!("Downloaded {name}, merged ({written} bytes), to {output_file}");
    }
    Ok(())
}

/// Streams the body of `response` (from `url`) to `output_file`, `-` for
/// standard output, with a progress bar named `name`. A file is written as
/// `{output_file}.partial` beside it and renamed into place only once the
/// whole body arrived (as long as its `Content-Length`, with the SHA-256
/// `sha256` when one is given) and is on disk; on any failure the partial
/// file is removed. Returns the bytes written.
async fn save(
    response: reqwest::Response,
    url: &str,
    name: &str,
    output_file: &str,
    sha256: Option<&str>,
) -> Result<u64, CliError> {
    let total = response.content_length();
    let bar = progress_bar(name, total);
    let mut hasher = Sha256::new();
    if output_file == "-" {
        let mut stdout = std::io::stdout().lock();
        let written = copy(response, &mut stdout, &mut hasher, &bar, url).await;
        bar.finish_and_clear();
        let written = written?;
        stdout.flush().map_err(|source| CliError::File {
            what: "write the capture to",
            path: PathBuf::from("standard output"),
            source,
        })?;
        // Already written: the check can only tell.
        check(name, written, total, &hasher, sha256, false)?;
        return Ok(written);
    }
    let path = PathBuf::from(output_file);
    let partial = PathBuf::from(format!("{output_file}.partial"));
    let file_error = |what: &'static str, path: &PathBuf| {
        let path = path.clone();
        move |source| CliError::File { what, path, source }
    };
    let mut file = std::fs::File::create(&partial).map_err(file_error("create", &partial))?;
    let written = async {
        let written = copy(response, &mut file, &mut hasher, &bar, url).await?;
        check(name, written, total, &hasher, sha256, true)?;
        file.sync_all().map_err(file_error("write", &partial))?;
        Ok(written)
    }
    .await;
    bar.finish_and_clear();
    let renamed = written.and_then(|written| {
        std::fs::rename(&partial, &path).map_err(file_error("write", &path))?;
        Ok(written)
    });
    if renamed.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    renamed
}

/// A progress bar on standard error: bytes, rate and time left when the
/// size is known, a spinner and the bytes so far when it is not.
fn progress_bar(name: &str, total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(total) => (ProgressBar::new(total), BAR_TEMPLATE),
        None => {
            let bar = ProgressBar::no_length();
            // The spinner turns while the server works out what comes next.
            bar.enable_steady_tick(SPINNER_TICK);
            (bar, SPINNER_TEMPLATE)
        }
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_owned());
    bar
}

/// Whether a download arrived whole: as long as announced, with the
/// expected SHA-256. `to_file`: the bytes went to a file that is not kept.
fn check(
    name: &str,
    written: u64,
    total: Option<u64>,
    hasher: &Sha256,
    sha256: Option<&str>,
    to_file: bool,
) -> Result<(), CliError> {
    if let Some(total) = total
        && written != total
    {
        return Err(CliError::Unexpected(format!(
            "the download of {name} ended after {written} of {total} bytes"
        )));
    }
    if let Some(expected) = sha256 {
        let digest = hex(&hasher.clone().finalize());
        if digest != expected {
            let kept = if to_file { ", and was not kept" } else { "" };
            return Err(CliError::Unexpected(format!(
                "the download of {name} has SHA-256 {digest} where the agent uploaded {expected}: it was damaged \
                 on the way or in storage{kept}"
            )));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{block_on, context, serve};

    const CAPTURE: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/NetworkWatcherRG/\
                           providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus/packetCaptures/fleet";

    fn merged(base: &str, output_file: &str) -> Result<(), CliError> {
        block_on(download_merged(&context(base), "fleet", CAPTURE, output_file))
    }

    /// A chunked pcapng answer with these chunks, ended (`0` chunk) or cut off.
    fn chunked(chunks: &[&[u8]], ended: bool) -> Vec<u8> {
        let mut answer =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-pcapng\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for chunk in chunks {
            answer.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            answer.extend_from_slice(chunk);
            answer.extend_from_slice(b"\r\n");
        }
        if ended {
            answer.extend_from_slice(b"0\r\n\r\n");
        }
        answer
    }

    #[test]
    fn issue_13_a_merged_download_streams_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("all.pcapng");
        let (base, server) = serve(vec![chunked(&[b"\x0a\x0d\x0d\x0a", b"blocks", b" more blocks"], true)]);
        merged(&base, target.to_str().unwrap()).unwrap();
        assert_eq!(
            server.join().unwrap()[0].line,
            format!("GET {CAPTURE}/merged?api-version=2022-01-01 HTTP/1.1")
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"\x0a\x0d\x0d\x0ablocks more blocks");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the file, no .partial: {left:?}");
    }

    #[test]
    fn issue_13_a_cut_off_merged_download_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("all.pcapng");
        let (base, server) = serve(vec![chunked(&[b"\x0a\x0d\x0d\x0a", b"half"], false)]);
        let err = merged(&base, target.to_str().unwrap()).unwrap_err();
        server.join().unwrap();
        assert!(matches!(err, CliError::Connection { .. }), "{err}");
        assert_eq!(err.exit_code(), 1);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "neither the file nor its .partial: {left:?}");
    }

    #[test]
    fn issue_13_a_merged_download_of_no_capture_is_az_s_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("all.pcapng");
        let body = serde_json::json!({"error": {"code": "ResourceNotFound", "message": "packet capture \"fleet\" was not found"}});
        let (base, server) = serve(vec![crate::testing::json_answer("404 Not Found", &body)]);
        let err = merged(&base, target.to_str().unwrap()).unwrap_err();
        server.join().unwrap();
        assert_eq!(err.exit_code(), 3);
        assert!(
            err.render()
                .starts_with("ERROR: (ResourceNotFound) packet capture \"fleet\" was not found"),
            "{}",
            err.render()
        );
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
