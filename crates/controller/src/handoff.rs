//! Parts handed over by agents on the controller's own machine (issue 19):
//! for a part that goes through the controller (a local account; an Azure
//! account with only a SAS), an agent that reaches the controller on a
//! loopback address sends the part's grant with its spooled file's
//! descriptor through a Unix socket ([`netwatch_api::agent::HandoffPart`]).
//! For a local account the bytes go from its file into the upload by
//! `copy_file_range` in the kernel: no TLS, no HTTP, no copy through either
//! process (over HTTPS both processes pass over every byte each way); for
//! one relayed to storage the controller reads them from the file as it
//! would a `PUT`'s body.
//!
//! The socket is open to every local user (mode 0666): what authorizes a
//! hand-over is its grant, checked exactly as a `PUT` of the part is
//! (`routes::files::handed_over`), and the descriptor, which lets the
//! controller read that file and nothing else. One request per connection:
//! a JSON line with the descriptor attached (`SCM_RIGHTS`), one
//! [`netwatch_api::agent::HandoffAnswer`] line back.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use netwatch_api::agent::{HandoffAnswer, HandoffPart};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
use tokio::io::{AsyncWriteExt as _, Interest};
use tokio::net::{UnixListener, UnixStream};

use crate::app::AppState;

/// Most bytes of a request line: a grant is a path of a few hundred bytes.
const MAX_REQUEST: usize = 16 * 1024;

/// Why the socket could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make the hand-over socket {path}")]
pub struct BindError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// Binds the hand-over socket at `path` (a stale one from an earlier run is
/// replaced), open to every local user.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let failed = |source| BindError {
        path: path.to_owned(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(failed(err)),
    }
    let listener = UnixListener::bind(path).map_err(failed)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(failed)?;
    Ok(listener)
}

/// Serves hand-overs on `listener` for as long as the controller runs.
pub fn serve(state: &AppState, listener: UnixListener) {
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "hand-over socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                if let Err(err) = handle(&state, stream).await {
                    tracing::debug!(error = %err, "hand-over connection ended early");
                }
            });
        }
    });
}

/// One hand-over: the request and its descriptor in, the answer out.
async fn handle(state: &AppState, mut stream: UnixStream) -> io::Result<()> {
    let answer = match receive(&stream).await? {
        Received::Part(part, file) => store(state, &part, file).await,
        Received::Bad(message) => HandoffAnswer {
            status: 400,
            receipt: None,
            message: Some(message),
        },
    };
    let mut line = serde_json::to_vec(&answer).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    stream.shutdown().await
}

enum Received {
    Part(HandoffPart, std::fs::File),
    Bad(String),
}

/// Reads the request line and the descriptor sent with it.
async fn receive(stream: &UnixStream) -> io::Result<Received> {
    let mut line = Vec::new();
    let mut file: Option<OwnedFd> = None;
    loop {
        let mut chunk = [0u8; 4096];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let (read, fds) = stream
            .async_io(Interest::READABLE, || {
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let got = recvmsg(
                    stream,
                    &mut [io::IoSliceMut::new(&mut chunk)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(io::Error::from)?;
                let mut fds = Vec::new();
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received) = message {
                        fds.extend(received);
                    }
                }
                Ok((got.bytes, fds))
            })
            .await?;
        // The first descriptor is the file; any other is closed as it drops.
        if file.is_none() {
            file = fds.into_iter().next();
        }
        line.extend_from_slice(&chunk[..read]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            break;
        }
        if read == 0 || line.len() > MAX_REQUEST {
            return Ok(Received::Bad(
                "a hand-over is one JSON line of at most 16 KiB with the file's descriptor".to_owned(),
            ));
        }
    }
    let part: HandoffPart = match serde_json::from_slice(&line) {
        Ok(part) => part,
        Err(err) => return Ok(Received::Bad(format!("the hand-over is not a part: {err}"))),
    };
    match file {
        Some(fd) => Ok(Received::Part(part, std::fs::File::from(fd))),
        None => Ok(Received::Bad(
            "the hand-over came without the file's descriptor (SCM_RIGHTS)".to_owned(),
        )),
    }
}

/// Checks the part's grant and copies it into its upload.
async fn store(state: &AppState, part: &HandoffPart, file: std::fs::File) -> HandoffAnswer {
    match crate::routes::files::handed_over(state, part, file).await {
        Ok(receipt) => HandoffAnswer {
            status: 200,
            receipt: Some(receipt),
            message: None,
        },
        Err(err) => HandoffAnswer {
            status: err.status().as_u16(),
            receipt: None,
            message: Some(err.message()),
        },
    }
}
