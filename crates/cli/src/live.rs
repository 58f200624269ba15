//! `packet-capture stream`: a running capture's live view (`GET …/live`, a
//! pcapng stream) written as it comes to standard output or a file, so that
//! `netwatch network watcher packet-capture stream … -w - | wireshark -k -i -`
//! and `| tshark -r -` show packets as the hosts capture them.
//!
//! Every chunk is written and flushed as it arrives. The stream is also read
//! as it passes (block headers only) for what the view says of itself: its
//! interfaces, and each interface's statistics, whose `isb_ifdrop` counts
//! the packets this view did not show because it fell behind (a paused
//! pipe: the controller drops them for this viewer, the stored file keeps
//! them). When the stream ends (the capture stopped), the reader leaves
//! (a closed pipe) or Ctrl-C, a summary goes to standard error.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use crate::error::CliError;

#[cfg(test)]
const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const ISB: u32 = 5;
const EPB: u32 = 6;
const IF_NAME: u16 = 2;
const OPT_COMMENT: u16 = 1;
const ISB_IFDROP: u16 = 5;

/// What the view said of itself, read from its blocks.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Interface names, by interface id.
    pub interfaces: Vec<String>,
    /// Packets seen, by interface id.
    pub packets: BTreeMap<u32, u64>,
    /// The last `isb_ifdrop` of each interface.
    pub dropped: BTreeMap<u32, u64>,
    /// The last statistics comment of each interface (why a host is missing).
    pub comments: BTreeMap<u32, String>,
    /// Bytes not yet a whole block.
    pending: Vec<u8>,
}

impl Summary {
    /// Reads the blocks `chunk` completes (the stream is little-endian:
    /// the controller writes it).
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
        let mut at = 0;
        while self.pending.len() >= at + 12 {
            let kind = le32(&self.pending, at);
            let len = le32(&self.pending, at + 4) as usize;
            if len < 12 || !len.is_multiple_of(4) {
                // Not a pcapng stream this reader understands: stop reading it.
                self.pending.clear();
                return;
            }
            if self.pending.len() < at + len {
                break;
            }
            let block = &self.pending[at..at + len];
            match kind {
                IDB => {
                    let name = options(block, 16).into_iter().find(|(code, _)| *code == IF_NAME);
                    let name = name.map_or_else(String::new, |(_, v)| String::from_utf8_lossy(v).into_owned());
                    self.interfaces.push(name);
                }
                EPB if len >= 12 => {
                    *self.packets.entry(le32(block, 8)).or_default() += 1;
                }
                ISB if len >= 24 => {
                    let interface = le32(block, 8);
                    for (code, value) in options(block, 20) {
                        match code {
                            ISB_IFDROP if value.len() == 8 => {
                                let dropped = u64::from_le_bytes(value.try_into().unwrap_or([0; 8]));
                                self.dropped.insert(interface, dropped);
                            }
                            OPT_COMMENT => {
                                self.comments
                                    .insert(interface, String::from_utf8_lossy(value).into_owned());
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
            at += len;
        }
        self.pending.drain(..at);
    }

    /// Packets shown, and not shown, in all.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (self.packets.values().sum(), self.dropped.values().sum())
    }

    /// What to tell the user at the end.
    pub(crate) fn text(&self, name: &str) -> String {
        let (shown, dropped) = self.totals();
        let mut text = format!("netwatch: live view of {name}: {shown} packets");
        if self.interfaces.len() > 1 {
            text.push_str(&format!(" from {} hosts", self.interfaces.len()));
        }
        if dropped > 0 {
            text.push_str(&format!(
                "; {dropped} not shown because the reader fell behind (the stored file has them)"
            ));
        }
        for comment in self.comments.values() {
            if !comment.contains("were not shown") {
                text.push_str(&format!("\n  {comment}"));
            }
        }
        text
    }
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The options of `block` from `start` to its trailing length.
fn options(block: &[u8], start: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let end = block.len().saturating_sub(4);
    let mut at = start;
    while at + 4 <= end {
        let code = u16::from_le_bytes([block[at], block[at + 1]]);
        let len = usize::from(u16::from_le_bytes([block[at + 2], block[at + 3]]));
        if code == 0 || at + 4 + len > end {
            break;
        }
        out.push((code, &block[at + 4..at + 4 + len]));
        at += 4 + len + (4 - len % 4) % 4;
    }
    out
}

/// Writes the view's body to `output` (`-`: standard output) as it comes;
/// what the view said of itself. A reader that leaves (a closed pipe) ends it
/// quietly; so does Ctrl-C.
pub(crate) async fn stream(mut response: reqwest::Response, output: &str, url: &str) -> Result<Summary, CliError> {
    let mut summary = Summary::default();
    let mut out: Box<dyn Write + Send> = if output == "-" {
        Box::new(std::io::stdout())
    } else {
        let path = PathBuf::from(output);
        Box::new(std::fs::File::create(&path).map_err(|source| CliError::File {
            what: "create",
            path,
            source,
        })?)
    };
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let chunk = tokio::select! {
            chunk = response.chunk() => chunk.map_err(|source| CliError::Connection {
                what: format!("GET {url}"),
                source,
            })?,
            _ = &mut interrupted => None,
        };
        let Some(chunk) = chunk else {
            break;
        };
        summary.feed(&chunk);
        let written = out.write_all(&chunk).and_then(|()| out.flush());
        match written {
            Ok(()) => {}
            // The reader left (`| head`, Wireshark closed): the view is over.
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(source) => {
                return Err(CliError::File {
                    what: "write the live view to",
                    path: PathBuf::from(output),
                    source,
                });
            }
        }
    }
    Ok(summary)
}

/// `stream --vm`: a capture on `vm` with no storage account (`body`), its
/// live view to `output`, then the capture stopped and deleted, however the
/// view ended (the capture's own limits bound it should this process die).
pub(crate) async fn look_at_vm(
    context: &crate::Context,
    vm: &netwatch_api::resource::ResourceId,
    body: serde_json::Value,
    output: &str,
) -> Result<Option<serde_json::Value>, CliError> {
    use reqwest::Method;
    const COMPUTE: &str = "2024-07-01";
    const NETWORK: &str = "2022-01-01";
    let client = &context.client;
    let found = client.get(&vm.to_string(), COMPUTE).await?;
    let location = found["location"].as_str().unwrap_or("westus").to_owned();
    let name = body["properties"]["storageLocation"]["filePath"]
        .as_str()
        .and_then(|path| path.rsplit('/').next())
        .and_then(|file| file.strip_suffix(".cap"))
        .unwrap_or("live")
        .to_owned();
    let capture = format!(
        "/subscriptions/{}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_{location}/packetCaptures/{name}",
        context.subscription
    );
    let url = client.url(&capture, NETWORK);
    let first = client.begin(Method::PUT, &url, Some(&body), &[200, 201]).await?;
    client.wait(&Method::PUT, &url, first).await?;
    let live = client.url(&format!("{capture}/live"), NETWORK);
    let viewed = async {
        let response = client.download(&live).await?;
        stream(response, output, &live).await
    }
    .await;
    // The look is over: its capture goes, whatever ended the view.
    let stop = client.url(&format!("{capture}/stop"), NETWORK);
    if let Ok(first) = client.begin(Method::POST, &stop, None, &[200, 202]).await {
        let _ = client.wait(&Method::POST, &stop, first).await;
    }
    if let Ok(first) = client.begin(Method::DELETE, &url, None, &[200, 202, 204]).await {
        let _ = client.wait(&Method::DELETE, &url, first).await;
    }
    eprintln!("{}", viewed?.text(&name));
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(12 + body.len()).unwrap();
        let mut out = kind.to_le_bytes().to_vec();
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&len.to_le_bytes());
        out
    }

    #[test]
    fn the_summary_reads_interfaces_packets_and_drops_across_chunks() {
        let mut stream = block(
            SHB,
            &[
                0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        );
        let mut idb = vec![1, 0, 0, 0, 0, 0, 4, 0];
        idb.extend_from_slice(&[2, 0, 6, 0]);
        idb.extend_from_slice(b"vm1/vA\0\0");
        idb.extend_from_slice(&[0; 4]);
        stream.extend(block(IDB, &idb));
        let mut epb = vec![0u8; 20];
        epb.extend_from_slice(&[0; 4]);
        stream.extend(block(EPB, &epb));
        stream.extend(block(EPB, &epb));
        let mut isb = vec![0u8; 12];
        isb.extend_from_slice(&[5, 0, 8, 0]);
        isb.extend_from_slice(&7u64.to_le_bytes());
        isb.extend_from_slice(&[0; 4]);
        stream.extend(block(ISB, &isb));
        let mut summary = Summary::default();
        for piece in stream.chunks(5) {
            summary.feed(piece);
        }
        assert_eq!(summary.interfaces, vec!["vm1/vA".to_owned()]);
        assert_eq!(summary.totals(), (2, 7));
        assert!(summary.text("pc1").contains("7 not shown"), "{}", summary.text("pc1"));
    }
}
