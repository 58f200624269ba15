//! What a restarted agent does with a capture that was running when the
//! agent died (DESIGN §6: "on restart the agent finalizes, uploads and
//! reports whatever it had"), and with the file of a capture stopped by a
//! full disk.
//!
//! The spool's journal record names the file the capture was writing
//! (`seq`). That file is repaired ([`netwatch_capture::pcap::repair`]: every
//! whole record kept, a torn last one cut) and then goes the way of any
//! closed file: into the spool and to storage. The capture then either ends
//! — `Stopped`, stop reason [`AGENT_STOPPED`], error `AgentStopped` — or,
//! when its time limit has not passed ([`next_run`]), resumes in a new file
//! (the next `seq`), keeping `AgentStopped` among its errors to say that its
//! files have a gap: packets sent while the agent was down were not captured.
//!
//! Nothing here panics on what it finds on disk: a file that is gone, empty,
//! or not pcap at all is logged, left as it is and not uploaded.

use std::path::Path;
use std::time::Duration;

use netwatch_api::agent::ReportStats;
use netwatch_capture::pcap::{FILE_HEADER_LEN, RECORD_HEADER_LEN, RepairError, repair};

/// Stop reason of a capture the agent stopped by dying (killed, crashed, the
/// host rebooted) and did not resume. Azure's clients read `stopReason` as a
/// free string; this one matches the `AgentStopped` error it comes with.
pub(crate) const AGENT_STOPPED: &str = "AgentStopped";

/// A capture with less than this left of its time limit is not resumed:
/// a new file for less than a second is not worth it.
pub(crate) const MIN_RESUME: Duration = Duration::from_secs(1);

/// Why the file a capture was writing cannot be taken up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CutFileError {
    #[error("{path} is gone")]
    Gone { path: String },
    #[error("repair the capture file")]
    Repair(#[source] RepairError),
}

/// Repairs the file a capture was writing when it was cut short, and counts
/// what it holds. Reads the whole file once: call it off the async threads.
pub(crate) fn repair_cut_file(path: &Path) -> Result<ReportStats, CutFileError> {
    let report = match repair(path) {
        Ok(report) => report,
        Err(RepairError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(CutFileError::Gone {
                path: path.display().to_string(),
            });
        }
        Err(error) => return Err(CutFileError::Repair(error)),
    };
    if report.bytes_removed > 0 {
        tracing::info!(file = %path.display(), records = report.records, bytes_removed = report.bytes_removed,
            "cut a torn last record off the capture file");
    }
    let size = std::fs::metadata(path)
        .map_err(|source| {
            CutFileError::Repair(RepairError::Read {
                path: path.display().to_string(),
                source,
            })
        })?
        .len();
    Ok(file_stats(size, report.records))
}

/// The counters of a whole pcap file of `size` bytes holding `records` records.
pub(crate) fn file_stats(size: u64, records: u64) -> ReportStats {
    let headers = FILE_HEADER_LEN as u64 + records * RECORD_HEADER_LEN as u64;
    ReportStats {
        packets_captured: records,
        bytes_captured: size.saturating_sub(headers),
        kernel_drops: 0,
        file_size_in_bytes: size,
        covered_from_ms: None,
    }
}

/// The sum of two sets of counters (files of one capture).
pub(crate) fn add(a: ReportStats, b: ReportStats) -> ReportStats {
    ReportStats {
        packets_captured: a.packets_captured + b.packets_captured,
        bytes_captured: a.bytes_captured + b.bytes_captured,
        kernel_drops: a.kernel_drops + b.kernel_drops,
        file_size_in_bytes: a.file_size_in_bytes + b.file_size_in_bytes,
        covered_from_ms: None,
    }
}

/// What becomes of an interrupted capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// It runs again, in a new file, for what is left of its limits.
    Resume {
        time_left: Duration,
        bytes_left: Option<u64>,
    },
    /// Its time (or byte) limit is used up: it ends.
    End,
}

/// Whether a capture that started at `started_ms`, with `time_limit` and
/// `max_bytes` (of which its files hold `bytes_done`), resumes at `now_ms`.
pub(crate) fn next_run(
    started_ms: i64,
    time_limit: Duration,
    max_bytes: Option<u64>,
    bytes_done: u64,
    now_ms: i64,
) -> Next {
    let elapsed = Duration::from_millis(u64::try_from(now_ms.saturating_sub(started_ms)).unwrap_or(0));
    let time_left = time_limit.saturating_sub(elapsed);
    // A new file needs room for its header and at least one record.
    let room = (FILE_HEADER_LEN + RECORD_HEADER_LEN) as u64;
    let bytes_left = max_bytes.map(|max| max.saturating_sub(bytes_done));
    if time_left < MIN_RESUME || bytes_left.is_some_and(|left| left <= room) {
        return Next::End;
    }
    Next::Resume { time_left, bytes_left }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netwatch_capture::pcap::{LinkType, file_header, push_record_header};

    fn pcap(records: usize) -> Vec<u8> {
        let mut bytes = file_header(LinkType::Ethernet, 65535).to_vec();
        for i in 0..records {
            push_record_header(&mut bytes, 1, 2, 10, 10);
            bytes.extend_from_slice(&[u8::try_from(i).unwrap(); 10]);
        }
        bytes
    }

    #[test]
    fn a_torn_file_is_cut_to_its_whole_records_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pc.cap");
        let whole = pcap(3);
        std::fs::write(&path, &whole[..whole.len() - 4]).unwrap();
        let stats = repair_cut_file(&path).unwrap();
        assert_eq!(
            stats,
            ReportStats {
                packets_captured: 2,
                bytes_captured: 20,
                kernel_drops: 0,
                file_size_in_bytes: 24 + 2 * 26,
                covered_from_ms: None,
            }
        );
        assert_eq!(std::fs::read(&path).unwrap(), pcap(2));
        // A header alone: a valid file of no packets.
        std::fs::write(&path, pcap(0)).unwrap();
        assert_eq!(repair_cut_file(&path).unwrap().packets_captured, 0);
    }

    #[test]
    fn gone_empty_and_foreign_files_are_errors_that_say_why_and_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pc.cap");
        let gone = repair_cut_file(&path).unwrap_err();
        assert_eq!(gone.to_string(), format!("{} is gone", path.display()));
        for (bytes, why) in [
            (&b""[..], "file is shorter than a pcap header (0 bytes)"),
            (&b"\xd4\xc3"[..], "file is shorter than a pcap header (2 bytes)"),
            (&[b'x'; 100][..], "not a pcap file: magic number 0x78787878"),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let error = repair_cut_file(&path).unwrap_err();
            let chain = crate::error_chain(&error);
            assert_eq!(
                chain,
                format!("repair the capture file: {} cannot be repaired: {why}", path.display())
            );
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
        }
    }

    #[test]
    fn a_capture_resumes_only_with_time_and_room_left() {
        let limit = Duration::from_secs(60);
        assert_eq!(
            next_run(1_000, limit, None, 0, 11_000),
            Next::Resume {
                time_left: Duration::from_secs(50),
                bytes_left: None
            }
        );
        assert_eq!(
            next_run(1_000, limit, Some(1_000), 400, 11_000),
            Next::Resume {
                time_left: Duration::from_secs(50),
                bytes_left: Some(600)
            }
        );
        assert_eq!(next_run(1_000, limit, None, 0, 61_000), Next::End, "time is up");
        assert_eq!(
            next_run(1_000, limit, None, 0, 60_500),
            Next::End,
            "under a second left"
        );
        assert_eq!(
            next_run(1_000, limit, Some(1_000), 960, 2_000),
            Next::End,
            "no room for a packet"
        );
        // A clock set back: the whole limit is left.
        assert_eq!(
            next_run(1_000, limit, None, 0, 0),
            Next::Resume {
                time_left: limit,
                bytes_left: None
            }
        );
    }
}
