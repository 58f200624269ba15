//! The upload spool (DESIGN §6): capture files waiting for storage, kept in
//! `{data_dir}/spool` until they are stored and checked, across outages and
//! agent restarts; and the journal of the captures this host runs, so that a
//! restarted agent finds the file a capture was writing when the agent died.
//!
//! A file enters the spool as a hard link to the capture's own file (no copy;
//! a copy only across file systems), so a ring rotating its files away or a
//! user deleting the capture file loses nothing the spool holds. Beside each
//! file lies its ticket (what it is, its size and SHA-256, and how far its
//! upload got: the upload id and the receipts of the parts stored, and the
//! capture's own file to delete once stored, unless the host keeps it), and
//! per capture one record: what the controller asked for, when it started,
//! which file it writes now, and its final report once it ended. Every JSON
//! file is written to a temporary name, synced and renamed, so a crash leaves
//! the old or the new version, never a torn one.
//!
//! A full disk does not stop the spool: linking needs no room, and a ticket
//! that cannot be written is kept in memory (the upload goes on; an agent
//! restarted before it ends hashes the file again and starts its upload over).
//!
//! Names: `{key}.capture.json`, `{key}_{seq:05}.cap`, `{key}_{seq:05}.json`,
//! where `key` is 16 hex digits of the SHA-256 of the capture's run id and
//! `seq` 0 for a capture's one file, `n` for a continuous capture's n-th (or
//! the file a single-file capture resumed in after its n-th agent restart).
//!
//! The spool is capped ([`Spool::is_full`]): when the files waiting reach the
//! cap, new captures that upload are refused with a message saying why,
//! rather than filling the disk; nothing already spooled is ever dropped.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use netwatch_api::agent::{CaptureReport, PartReceipt, ReportStats, StartCapture};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The spool's directory under the agent's data directory.
pub(crate) const SPOOL_DIR: &str = "spool";

/// Default cap of the files waiting for upload.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024 * 1024;

const CAPTURE_SUFFIX: &str = ".capture.json";
const READ_CHUNK: usize = 1024 * 1024;

/// What the spool knows of one capture this host runs or ran (the journal
/// record): written when it starts, at each file it closes, when it resumes
/// after a restart and when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpooledCapture {
    pub(crate) capture_id: String,
    /// What the controller asked for: where the capture's file is, its
    /// limits, whether it uploads. None in records of earlier agents, which
    /// kept no journal (their running captures cannot be recovered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) start: Option<StartCapture>,
    /// When it first started capturing on this host (ms since the epoch): its
    /// time limit counts from here, across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) started_ms: Option<i64>,
    /// How often a restarted agent resumed it.
    #[serde(default)]
    pub(crate) resumed: u32,
    /// The file it writes now: 0 for a capture's one file, `n` for a ring's
    /// n-th file or the file a capture resumed in after its n-th restart.
    #[serde(default)]
    pub(crate) seq: u32,
    /// Counters of its files before the one it writes now.
    #[serde(default)]
    pub(crate) closed: ReportStats,
    /// The capture's last report once it ended; none while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) report: Option<CaptureReport>,
}

impl SpooledCapture {
    /// The record of a capture about to start for the first time.
    pub(crate) fn new(start: StartCapture, first_seq: u32) -> Self {
        Self {
            capture_id: start.capture_id.clone(),
            start: Some(start),
            started_ms: None,
            resumed: 0,
            seq: first_seq,
            closed: ReportStats::default(),
            report: None,
        }
    }

    /// Whether its files go to storage.
    pub(crate) fn uploads(&self) -> bool {
        // Records without `start` were kept only for captures that upload.
        self.start.as_ref().is_none_or(|start| start.upload.is_some())
    }
}

/// One file waiting for upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Ticket {
    pub(crate) capture_id: String,
    pub(crate) seq: u32,
    pub(crate) size: u64,
    /// Lower-case hex; empty until the uploader has hashed the file.
    #[serde(default)]
    pub(crate) sha256: String,
    /// The capture's own file, deleted once this one is stored unless the
    /// capture keeps a local copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) original: Option<PathBuf>,
    /// The upload begun for it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) upload: Option<UploadProgress>,
    /// Why the upload was given up; the file stays in the spool for an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) failed: Option<String>,
}

/// How far a file's upload got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UploadProgress {
    pub(crate) upload_id: String,
    pub(crate) part_size: u64,
    /// Parts stored, in the order they were.
    pub(crate) receipts: Vec<PartReceipt>,
}

impl UploadProgress {
    /// Bytes of the file stored so far.
    pub(crate) fn bytes_done(&self, size: u64) -> u64 {
        self.receipts
            .iter()
            .map(|r| part_len(size, self.part_size, r.part))
            .sum::<u64>()
            .min(size)
    }
}

/// Bytes of part `part` (1-based) of a file of `size` bytes cut in `part_size` parts.
pub(crate) fn part_len(size: u64, part_size: u64, part: u32) -> u64 {
    let start = u64::from(part.saturating_sub(1)).saturating_mul(part_size);
    size.saturating_sub(start).min(part_size)
}

/// How many parts a file of `size` bytes has (an empty file has one, empty).
pub(crate) fn part_count(size: u64, part_size: u64) -> u32 {
    u32::try_from(size.div_ceil(part_size.max(1)).max(1)).unwrap_or(u32::MAX)
}

/// A spool step that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} {}", path.display())]
pub struct SpoolError {
    step: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn at<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + use<'a> {
    move |source| SpoolError {
        step,
        path: path.to_owned(),
        source,
    }
}

/// The spool directory.
#[derive(Debug, Clone)]
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
}

impl Spool {
    /// The spool in `dir` (created), capped at `max_bytes`.
    pub(crate) fn open(dir: PathBuf, max_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(&dir).map_err(at("create spool directory", &dir))?;
        Ok(Self { dir, max_bytes })
    }

    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes of the files in the spool.
    pub(crate) fn used_bytes(&self) -> u64 {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".cap"))
            .filter_map(|entry| entry.metadata().ok())
            .map(|meta| meta.len())
            .sum()
    }

    /// Whether the files waiting reached the cap.
    pub(crate) fn is_full(&self) -> bool {
        self.used_bytes() >= self.max_bytes
    }

    /// Writes (or replaces) a capture's record.
    pub(crate) fn save_capture(&self, capture: &SpooledCapture) -> Result<(), SpoolError> {
        let path = self.dir.join(format!("{}{CAPTURE_SUFFIX}", key(&capture.capture_id)));
        write_json(&path, capture)
    }

    /// Forgets a capture's record (its files are all stored and its last report delivered).
    pub(crate) fn remove_capture(&self, capture_id: &str) {
        let path = self.dir.join(format!("{}{CAPTURE_SUFFIX}", key(capture_id)));
        remove_quietly(&path);
    }

    /// The spool's own link to file `seq` of a capture.
    pub(crate) fn file_path(&self, capture_id: &str, seq: u32) -> PathBuf {
        self.dir.join(format!("{}_{seq:05}.cap", key(capture_id)))
    }

    fn ticket_path(&self, capture_id: &str, seq: u32) -> PathBuf {
        self.dir.join(format!("{}_{seq:05}.json", key(capture_id)))
    }

    /// Links `source` into the spool as file `seq` of the capture (quick: for
    /// the capture thread, as a ring file closes). A file linked already is kept.
    pub(crate) fn link(&self, capture_id: &str, seq: u32, source: &Path) -> Result<PathBuf, SpoolError> {
        let target = self.file_path(capture_id, seq);
        match fs::hard_link(source, &target) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            // Another file system: copy (to a temporary name, so a crash
            // midway leaves no partial file under the spool's name).
            Err(error) if error.kind() == io::ErrorKind::CrossesDevices => {
                let temp = target.with_extension("cap.tmp");
                fs::copy(source, &temp).map_err(at("copy into the spool", source))?;
                File::open(&temp)
                    .and_then(|f| f.sync_all())
                    .map_err(at("sync", &temp))?;
                fs::rename(&temp, &target).map_err(at("rename", &temp))?;
            }
            Err(error) => return Err(at("link into the spool", source)(error)),
        }
        Ok(target)
    }

    /// Makes the ticket of a linked file (its size, and its SHA-256 when the
    /// capture worked it out; else the uploader hashes it) and writes the
    /// ticket (fsynced: call off the async threads). A ticket that cannot be
    /// written (a full disk) is logged and returned all the same: the file is
    /// safe in the spool, and a restarted agent makes its ticket again.
    pub(crate) fn admit(
        &self,
        capture_id: &str,
        seq: u32,
        original: Option<PathBuf>,
        sha256: Option<String>,
    ) -> Result<Ticket, SpoolError> {
        let path = self.file_path(capture_id, seq);
        let size = fs::metadata(&path).map_err(at("read spooled file", &path))?.len();
        let ticket = Ticket {
            capture_id: capture_id.to_owned(),
            seq,
            size,
            // Else the uploader hashes the file: first for a controller of
            // upload protocol 1, as its parts go for one of protocol 2.
            sha256: sha256.unwrap_or_default(),
            original,
            upload: None,
            failed: None,
        };
        self.save_progress(&ticket);
        Ok(ticket)
    }

    /// Writes a ticket's progress.
    pub(crate) fn save(&self, ticket: &Ticket) -> Result<(), SpoolError> {
        write_json(&self.ticket_path(&ticket.capture_id, ticket.seq), ticket)
    }

    /// Writes a ticket's progress, or logs why it could not: the upload goes
    /// on without it (a restart then starts the file's upload over). Used
    /// where a full disk must not hold up the upload that would free it.
    pub(crate) fn save_progress(&self, ticket: &Ticket) {
        if let Err(error) = self.save(ticket) {
            tracing::warn!(seq = ticket.seq, error = %crate::error_chain(&error),
                "could not write the spooled file's ticket; its upload goes on (a restart would begin it again)");
        }
    }

    /// The file is stored and checked: the spool's link, its ticket and the
    /// capture's own copy, when the ticket names one to delete, go.
    pub(crate) fn done(&self, ticket: &Ticket) {
        remove_quietly(&self.file_path(&ticket.capture_id, ticket.seq));
        remove_quietly(&self.ticket_path(&ticket.capture_id, ticket.seq));
        if let Some(original) = &ticket.original {
            remove_quietly(original);
        }
    }

    /// Everything in the spool, for a restarted agent: the captures' records
    /// and their tickets (files linked without a ticket get one now), tickets
    /// in capture then file order. Unreadable entries are logged and left.
    pub(crate) fn scan(&self) -> (Vec<SpooledCapture>, Vec<Ticket>) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return (vec![], vec![]);
        };
        let mut captures = Vec::new();
        let mut tickets = Vec::new();
        let mut files = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(CAPTURE_SUFFIX) {
                match read_json::<SpooledCapture>(&path) {
                    Ok(capture) => captures.push(capture),
                    Err(error) => tracing::warn!(file = %path.display(), %error, "spool record unreadable; left"),
                }
            } else if name.ends_with(".json") {
                match read_json::<Ticket>(&path) {
                    Ok(ticket) => tickets.push(ticket),
                    Err(error) => tracing::warn!(file = %path.display(), %error, "spool ticket unreadable; left"),
                }
            } else if name.ends_with(".cap") {
                files.push(name);
            } else if name.ends_with(".tmp") {
                remove_quietly(&path);
            }
        }
        // Files linked by a capture that ended before their ticket was written.
        let by_key: HashMap<String, &SpooledCapture> = captures.iter().map(|c| (key(&c.capture_id), c)).collect();
        for name in files {
            let Some((file_key, seq)) = name
                .strip_suffix(".cap")
                .and_then(|stem| stem.split_once('_'))
                .and_then(|(k, seq)| Some((k, seq.parse::<u32>().ok()?)))
            else {
                continue;
            };
            let ticketed = tickets.iter().any(|t| key(&t.capture_id) == file_key && t.seq == seq);
            if let (false, Some(capture)) = (ticketed, by_key.get(file_key)) {
                match self.admit(&capture.capture_id, seq, None, None) {
                    Ok(ticket) => tickets.push(ticket),
                    Err(error) => {
                        tracing::warn!(file = %name, error = %crate::error_chain(&error), "spooled file unreadable; left")
                    }
                }
            }
        }
        tickets.sort_by(|a, b| (&a.capture_id, a.seq).cmp(&(&b.capture_id, b.seq)));
        (captures, tickets)
    }
}

/// 16 hex digits naming a capture run's files.
fn key(capture_id: &str) -> String {
    hex(&Sha256::digest(capture_id.as_bytes())[..8])
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Size and lower-case hex SHA-256 of a file.
pub(crate) fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; READ_CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), SpoolError> {
    let temp = path.with_extension("json.tmp");
    let text = serde_json::to_vec(value).map_err(|error| at("encode", path)(io::Error::other(error)))?;
    let written = File::create(&temp)
        .map_err(at("create", &temp))
        .and_then(|mut file| {
            file.write_all(&text).map_err(at("write", &temp))?;
            file.sync_all().map_err(at("sync", &temp))
        })
        .and_then(|()| fs::rename(&temp, path).map_err(at("rename", &temp)));
    if written.is_err() {
        // A full disk leaves a torn temporary file: do not let it take more room.
        let _ = fs::remove_file(&temp);
    }
    written
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

fn remove_quietly(path: &Path) {
    if let Err(error) = fs::remove_file(path)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), %error, "could not remove a spool file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cut_a_file() {
        assert_eq!(part_count(0, 8), 1);
        assert_eq!(part_count(8, 8), 1);
        assert_eq!(part_count(9, 8), 2);
        assert_eq!(part_len(20, 8, 1), 8);
        assert_eq!(part_len(20, 8, 3), 4);
        assert_eq!(part_len(20, 8, 4), 0);
        let progress = UploadProgress {
            upload_id: "u".into(),
            part_size: 8,
            receipts: vec![
                PartReceipt {
                    part: 1,
                    id: "a".into(),
                },
                PartReceipt {
                    part: 3,
                    id: "c".into(),
                },
            ],
        };
        assert_eq!(progress.bytes_done(20), 12);
    }

    #[test]
    fn files_survive_their_original_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path().join("spool"), 1_000).unwrap();
        let original = dir.path().join("pc.cap");
        fs::write(&original, b"0123456789").unwrap();
        let capture = SpooledCapture {
            capture_id: "/x/pc#1".into(),
            start: None,
            started_ms: None,
            resumed: 0,
            seq: 0,
            closed: ReportStats::default(),
            report: None,
        };
        spool.save_capture(&capture).unwrap();
        spool.link(&capture.capture_id, 0, &original).unwrap();
        spool.link(&capture.capture_id, 0, &original).unwrap();
        // Linked but not yet admitted when the agent died; the original is gone too.
        fs::remove_file(&original).unwrap();
        assert_eq!(spool.used_bytes(), 10);
        assert!(!spool.is_full());
        let (captures, tickets) = spool.scan();
        assert_eq!(captures, std::slice::from_ref(&capture));
        assert_eq!(tickets.len(), 1);
        assert_eq!(tickets[0].size, 10);
        assert_eq!(tickets[0].sha256, "", "hashed by the uploader, not when admitted");
        assert_eq!(
            hash_file(&spool.file_path(&capture.capture_id, 0)).unwrap(),
            (
                10,
                "84d89877f0d4041efb6bf91a16f0248f2fd573e6af05c19f96bedb9f882f7882".to_owned()
            )
        );
        let mut ticket = tickets[0].clone();
        ticket.upload = Some(UploadProgress {
            upload_id: "u1".into(),
            part_size: 4,
            receipts: vec![PartReceipt {
                part: 1,
                id: "e1".into(),
            }],
        });
        spool.save(&ticket).unwrap();
        let (_, tickets) = spool.scan();
        assert_eq!(tickets, std::slice::from_ref(&ticket), "progress survives a restart");
        spool.done(&ticket);
        spool.remove_capture(&capture.capture_id);
        assert_eq!(spool.scan(), (vec![], vec![]));
        assert_eq!(spool.used_bytes(), 0);
        assert_eq!(fs::read_dir(spool.dir).unwrap().count(), 0);
    }
}
