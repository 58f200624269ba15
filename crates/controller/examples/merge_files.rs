//! Merges classic pcap files into one pcapng file with the merged download's
//! code (`netwatch_controller::merge`): one source per input file, named after
//! the file, read from disk in 64 KiB chunks as local storage reads blobs. The
//! netwatch side of scripts/bench-merge.sh; mergecap is the other.
//!
//! ```text
//! merge_files [--local-mac 02:00:00:00:00:01]... OUT IN...
//! ```
//!
//! `--local-mac` (any number) names the hosts' own MACs, so Ethernet frames get
//! their direction as they would in a capture's merge.

use std::error::Error;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;

use bytes::Bytes;
use futures_util::StreamExt;
use netwatch_controller::merge::{ByteStream, FileOpener, Section, Source, merge};
use tokio_util::io::ReaderStream;

const USAGE: &str = "usage: merge_files [--local-mac MAC]... OUT IN...";
/// What local storage reads a blob in (netwatch-storage's local.rs).
const READ_CHUNK_BYTES: usize = 64 * 1024;

struct Args {
    local_macs: Vec<[u8; 6]>,
    out: PathBuf,
    inputs: Vec<PathBuf>,
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn parse_args() -> Result<Args, String> {
    let mut local_macs = Vec::new();
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--local-mac" {
            let text = args.next().ok_or("--local-mac needs a MAC")?;
            local_macs.push(parse_mac(&text).ok_or_else(|| format!("--local-mac {text:?} is not a MAC"))?);
        } else {
            paths.push(PathBuf::from(arg));
        }
    }
    if paths.len() < 2 {
        return Err(USAGE.to_owned());
    }
    let out = paths.remove(0);
    Ok(Args {
        local_macs,
        out,
        inputs: paths,
    })
}

fn opener(path: PathBuf) -> FileOpener {
    Box::new(move || {
        Box::pin(async move {
            let file = tokio::fs::File::open(&path).await?;
            Ok(Box::pin(ReaderStream::with_capacity(file, READ_CHUNK_BYTES)) as ByteStream)
        })
    })
}

fn source(path: &Path, local_macs: &[[u8; 6]]) -> Source {
    let name = path
        .file_stem()
        .map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned());
    Source {
        if_name: name,
        if_description: path.display().to_string(),
        if_filter: String::new(),
        if_os: String::new(),
        local_macs: local_macs.to_vec(),
        local_addresses: Vec::new(),
        received: None,
        dropped: None,
        files: vec![opener(path.to_owned())],
    }
}

/// Batches waiting for the writer: what a socket's send queue would hold.
const WRITE_QUEUE: usize = 4;

/// Writes the batches it receives to `out` on a thread of its own, from the
/// `Bytes` themselves, as a server hands a response body's chunks to its
/// socket: the merge goes on while the kernel copies.
fn writer(out: File) -> (SyncSender<Bytes>, JoinHandle<io::Result<()>>) {
    let (send, receive) = mpsc::sync_channel::<Bytes>(WRITE_QUEUE);
    let thread = std::thread::spawn(move || {
        let mut out = out;
        for batch in receive {
            out.write_all(&batch)?;
        }
        out.flush()
    });
    (send, thread)
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let section = Section {
        capture_name: "merge_files".to_owned(),
        capture_id: args.out.display().to_string(),
        filters: String::new(),
        user_appl: format!("netwatch {} merge_files", env!("CARGO_PKG_VERSION")),
    };
    let sources = args.inputs.iter().map(|p| source(p, &args.local_macs)).collect();
    let out = File::create(&args.out).map_err(|err| format!("create {}: {err}", args.out.display()))?;
    let (send, thread) = writer(out);
    let mut merged = std::pin::pin!(merge(section, sources));
    while let Some(batch) = merged.next().await {
        // A full queue waits for the disk; that wait is the example's own.
        if send.send(batch?).is_err() {
            break;
        }
    }
    drop(send);
    thread.join().map_err(|_| "the writer thread panicked")??;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("Error: {err}");
            ExitCode::FAILURE
        }
    }
}
