//! Where captured records go: one pcap file, standard output, or Azure's
//! continuous capture, a ring of at most `fileCount` files of about
//! `fileSizeInBytes` each, the oldest deleted first (DESIGN §3, `captureSettings`).
//!
//! Every file starts with the same 24-byte header, so each is readable alone.
//! Rotated files are named `{stem}_{seq:05}.{ext}` beside the path given, `seq`
//! counting from `first_seq` (1 for a new capture; a capture resumed after a
//! crash continues its numbering) and never reused within a capture.

mod syncer;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::pcap::FILE_HEADER_LEN;
use syncer::Syncer;

/// Where a capture writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// One file, created (or truncated) at start.
    File(PathBuf),
    /// A ring of files named after `path` (see the module doc), the first
    /// one numbered `first_seq` (1 for a new capture).
    Ring {
        path: PathBuf,
        rotation: Rotation,
        first_seq: u32,
    },
    /// Standard output, for `| wireshark -k -i -`.
    Stdout,
}

/// Azure's continuous-capture settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Files kept at most; older ones are deleted (1..=10000).
    pub file_count: u32,
    /// Bytes per file at most, header included; a single record larger than that
    /// still gets a file of its own.
    pub file_size: u64,
    /// A file is also closed once it has been open this long, at the next
    /// packets after that (the flight recorder's files each span a slice of
    /// its window, so the oldest can go by time); `None` rotates by size only.
    pub max_age: Option<std::time::Duration>,
}

/// A failure to create, write or remove a capture file.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("create {path}")]
    Create {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("write {path}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("remove old ring file {path}")]
    Remove {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl OutputError {
    /// Whether the file system is full: `ENOSPC` (no room) or `EDQUOT` (the
    /// user's quota).
    pub fn is_disk_full(&self) -> bool {
        let (OutputError::Create { source, .. }
        | OutputError::Write { source, .. }
        | OutputError::Remove { source, .. }) = self;
        matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
    }
}

#[derive(Debug)]
enum Sink {
    /// Shared with the [`Syncer`], which keeps it on its way to the disk.
    File(Arc<File>),
    Stdout(io::Stdout),
}

impl Sink {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::File(f) => (&**f).write_all(bytes),
            Sink::Stdout(s) => {
                let mut lock = s.lock();
                lock.write_all(bytes)?;
                lock.flush()
            }
        }
    }

    fn write_all_vectored(&mut self, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        match self {
            Sink::File(f) => {
                IoSlice::advance_slices(&mut slices, 0);
                while !slices.is_empty() {
                    match (&**f).write_vectored(slices) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => IoSlice::advance_slices(&mut slices, n),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Sink::Stdout(s) => {
                let mut lock = s.lock();
                for slice in slices.iter() {
                    lock.write_all(slice)?;
                }
                lock.flush()
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self {
            Sink::File(f) => f.sync_data(),
            Sink::Stdout(_) => Ok(()),
        }
    }
}

/// The open output of a running capture.
#[derive(Debug)]
pub(crate) struct Output {
    spec: OutputSpec,
    header: [u8; FILE_HEADER_LEN],
    sink: Sink,
    /// Syncs the current file off the capture thread (files only).
    syncer: Option<Syncer>,
    current: Option<PathBuf>,
    /// Bytes in the current file, header included.
    current_bytes: u64,
    /// When the current file was opened.
    current_opened: std::time::Instant,
    /// Bytes written over the whole capture, headers included.
    total_bytes: u64,
    /// Files of the ring still on disk, oldest first (the current one last).
    kept: VecDeque<PathBuf>,
    /// Files this capture created (some may since be deleted): a count, not
    /// a list, since a flight recorder's ring turns over for days.
    created: usize,
    seq: u32,
    /// Told of each ring file as it closes, before any old file is deleted.
    on_closed: Option<FileClosed>,
}

/// A ring file that just closed, whole and synced, as told to
/// [`Capture::on_file_closed`](crate::Capture::on_file_closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedFile<'a> {
    pub path: &'a Path,
    /// Its number in the ring (`{stem}_{seq:05}`).
    pub seq: u32,
    /// Packets in this capture's files up to and including this one.
    pub packets: u64,
    /// Packet bytes in them (after truncation, record headers not included).
    pub bytes: u64,
    /// Bytes of those files, headers included.
    pub file_bytes: u64,
    /// This file's SHA-256, when the capture digests its files
    /// ([`Capture::digest_files`](crate::Capture::digest_files)) and could read it back.
    pub sha256: Option<[u8; 32]>,
}

/// What is told of each closed ring file.
pub(crate) type OnFileClosed = dyn FnMut(&ClosedFile<'_>) + Send;

/// A callback told of each closed ring file.
pub(crate) struct FileClosed(pub(crate) Box<OnFileClosed>);

impl std::fmt::Debug for FileClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileClosed(..)")
    }
}

/// Creates (or truncates) `path`; never through a symbolic link at its name
/// (`O_NOFOLLOW`): the capture runs as root, the name may come from a request.
fn create_file(path: &Path) -> Result<Arc<File>, OutputError> {
    create_nofollow(path)
        .map(Arc::new)
        .map_err(|source| OutputError::Create {
            path: path.display().to_string(),
            source,
        })
}

/// Creates (or truncates) `path` for writing (and reading back, to digest
/// it), never through a symbolic link at its name (`O_NOFOLLOW`).
pub fn create_nofollow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The name of a ring's `seq`-th file (from 1), beside `path`: `{stem}_{seq:05}.{ext}`.
pub fn ring_name(path: &Path, seq: u32) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "capture".into());
    let name = match path.extension() {
        Some(ext) => format!("{stem}_{seq:05}.{}", ext.to_string_lossy()),
        None => format!("{stem}_{seq:05}"),
    };
    path.with_file_name(name)
}

impl Output {
    /// Creates the first file and writes its header.
    pub(crate) fn create(spec: OutputSpec, header: [u8; FILE_HEADER_LEN]) -> Result<Self, OutputError> {
        let seq = match &spec {
            OutputSpec::Ring { first_seq, .. } => *first_seq,
            _ => 1,
        };
        let (sink, current) = match &spec {
            OutputSpec::File(path) => (Sink::File(create_file(path)?), Some(path.clone())),
            OutputSpec::Ring { path, first_seq, .. } => {
                let first = ring_name(path, *first_seq);
                (Sink::File(create_file(&first)?), Some(first))
            }
            OutputSpec::Stdout => (Sink::Stdout(io::stdout()), None),
        };
        let syncer = match (&sink, &current) {
            (Sink::File(file), Some(path)) => {
                Some(Syncer::start(Arc::clone(file)).map_err(|source| OutputError::Create {
                    path: path.display().to_string(),
                    source,
                })?)
            }
            _ => None,
        };
        let mut out = Output {
            spec,
            header,
            sink,
            syncer,
            current: current.clone(),
            current_bytes: 0,
            current_opened: std::time::Instant::now(),
            total_bytes: 0,
            kept: VecDeque::new(),
            created: 0,
            seq,
            on_closed: None,
        };
        if let Some(p) = current {
            out.kept.push_back(p);
            out.created += 1;
        }
        out.write_header()?;
        Ok(out)
    }

    fn write_header(&mut self) -> Result<(), OutputError> {
        let header = self.header;
        self.write(&header)
    }

    fn path_name(&self) -> String {
        self.current
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "standard output".into())
    }

    /// Writes encoded records (or the header) to the current file.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.sink.write_all(bytes).map_err(|source| OutputError::Write {
            path: self.path_name(),
            source,
        })?;
        self.current_bytes += bytes.len() as u64;
        self.total_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Writes several pieces with `writev`, retrying after short writes.
    pub(crate) fn write_vectored(&mut self, slices: &mut [IoSlice<'_>]) -> Result<(), OutputError> {
        let total: usize = slices.iter().map(|s| s.len()).sum();
        self.sink
            .write_all_vectored(slices)
            .map_err(|source| OutputError::Write {
                path: self.path_name(),
                source,
            })?;
        self.current_bytes += total as u64;
        self.total_bytes += total as u64;
        Ok(())
    }

    /// Whether a record of `len` bytes, after `pending` bytes not yet written, still
    /// fits in the current file of a ring. Always true outside a ring, and for the
    /// first record of a file (a file never stays empty).
    pub(crate) fn fits(&self, pending: u64, len: u64) -> bool {
        match &self.spec {
            OutputSpec::Ring { rotation, .. } => {
                let used = self.current_bytes + pending;
                used == FILE_HEADER_LEN as u64 || used + len <= rotation.file_size
            }
            _ => true,
        }
    }

    /// Whether the current ring file has been open for its rotation's
    /// `max_age` and holds a record.
    pub(crate) fn aged(&self) -> bool {
        match &self.spec {
            OutputSpec::Ring { rotation, .. } => rotation
                .max_age
                .is_some_and(|age| self.current_bytes > FILE_HEADER_LEN as u64 && self.current_opened.elapsed() >= age),
            _ => false,
        }
    }

    /// Bytes left in the current ring file (unbounded outside a ring).
    pub(crate) fn file_room(&self) -> u64 {
        match &self.spec {
            OutputSpec::Ring { rotation, .. } => rotation.file_size.saturating_sub(self.current_bytes),
            _ => u64::MAX,
        }
    }

    /// Closes the current ring file and starts the next, deleting the oldest files
    /// beyond `file_count`. `packets` and `bytes` are the capture's counters
    /// with everything written so far (for [`ClosedFile`]).
    pub(crate) fn rotate(&mut self, packets: u64, bytes: u64) -> Result<(), OutputError> {
        let OutputSpec::Ring { path, rotation, .. } = &self.spec else {
            return Ok(());
        };
        let (path, file_count) = (path.clone(), rotation.file_count);
        self.sync()?;
        let sha256 = self.take_digest();
        if let (Some(on_closed), Some(closed)) = (&mut self.on_closed, &self.current) {
            (on_closed.0)(&ClosedFile {
                path: closed,
                seq: self.seq,
                packets,
                bytes,
                file_bytes: self.total_bytes,
                sha256,
            });
        }
        self.seq += 1;
        let next = ring_name(&path, self.seq);
        let file = create_file(&next)?;
        if let Some(syncer) = &self.syncer {
            syncer.follow(Arc::clone(&file));
        }
        self.sink = Sink::File(file);
        self.current = Some(next.clone());
        self.current_bytes = 0;
        self.current_opened = std::time::Instant::now();
        self.kept.push_back(next);
        self.created += 1;
        while self.kept.len() > file_count as usize {
            if let Some(old) = self.kept.pop_front() {
                match std::fs::remove_file(&old) {
                    // Gone already (uploaded and deleted by the agent, or by hand): that is what we wanted.
                    Err(source) if source.kind() != io::ErrorKind::NotFound => {
                        return Err(OutputError::Remove {
                            path: old.display().to_string(),
                            source,
                        });
                    }
                    _ => {}
                }
            }
        }
        self.write_header()
    }

    /// Works out each file's SHA-256 as it is written (files only).
    pub(crate) fn digest_files(&self) {
        if let Some(syncer) = &self.syncer {
            syncer.digest();
        }
    }

    /// The current file's SHA-256, once everything is written to it, when
    /// files are digested.
    pub(crate) fn take_digest(&self) -> Option<[u8; 32]> {
        self.syncer.as_ref().and_then(Syncer::take_digest)
    }

    /// Sets the callback told of each ring file as it closes.
    pub(crate) fn on_file_closed(&mut self, callback: FileClosed) {
        self.on_closed = Some(callback);
    }

    /// Fails as a write would when the background sync of the current file
    /// failed (`EIO`, or `ENOSPC` from blocks the file system allocates only
    /// at writeback).
    pub(crate) fn check_sync(&self) -> Result<(), OutputError> {
        match self.syncer.as_ref().and_then(Syncer::take_error) {
            Some(source) => Err(OutputError::Write {
                path: self.path_name(),
                source,
            }),
            None => Ok(()),
        }
    }

    /// Forces what was written to the disk (`fdatasync`), now, on this thread.
    pub(crate) fn sync(&mut self) -> Result<(), OutputError> {
        self.check_sync()?;
        self.sink.sync().map_err(|source| OutputError::Write {
            path: self.path_name(),
            source,
        })
    }

    pub(crate) fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Files still on disk, oldest first.
    pub(crate) fn kept(&self) -> Vec<PathBuf> {
        self.kept.iter().cloned().collect()
    }

    pub(crate) fn files_created(&self) -> usize {
        self.created
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcap::{LinkType, file_header};

    #[test]
    fn ring_names_keep_the_extension() {
        assert_eq!(
            ring_name(Path::new("/x/cap.pcap"), 3),
            PathBuf::from("/x/cap_00003.pcap")
        );
        assert_eq!(ring_name(Path::new("/x/cap"), 12), PathBuf::from("/x/cap_00012"));
    }

    #[test]
    fn ring_keeps_at_most_file_count_files_each_with_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let spec = OutputSpec::Ring {
            path: dir.path().join("r.pcap"),
            rotation: Rotation {
                file_count: 2,
                file_size: 100,
                max_age: None,
            },
            first_seq: 1,
        };
        let mut out = Output::create(spec, file_header(LinkType::Ethernet, 96)).unwrap();
        let closed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&closed);
        out.on_file_closed(FileClosed(Box::new(move |closed| {
            // Told before the file can be deleted: it is still there, whole.
            assert_eq!(std::fs::metadata(closed.path).unwrap().len(), 64);
            assert_eq!(closed.file_bytes, 64 * u64::from(closed.seq));
            assert_eq!(closed.packets, u64::from(closed.seq));
            seen.lock().unwrap().push((closed.path.to_owned(), closed.seq));
        })));
        let record = [7u8; 40];
        for packets in 0..7 {
            if !out.fits(0, record.len() as u64) {
                out.rotate(packets, packets * 24).unwrap();
            }
            out.write(&record).unwrap();
        }
        // 24 + 40 + 40 > 100: one record per file, 7 files made, 2 kept
        assert_eq!(out.files_created(), 7);
        let closed = closed.lock().unwrap().clone();
        let expected: Vec<_> = (1..=6)
            .map(|seq| (dir.path().join(format!("r_{seq:05}.pcap")), seq))
            .collect();
        assert_eq!(closed, expected, "every file but the open one, in order");
        let kept = out.kept();
        assert_eq!(
            kept,
            vec![dir.path().join("r_00006.pcap"), dir.path().join("r_00007.pcap")]
        );
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        assert_eq!(names, kept);
        for p in kept {
            let b = std::fs::read(p).unwrap();
            assert_eq!(b.len(), 64);
            crate::pcap::parse_file_header(&b).unwrap();
        }
    }

    fn sha256_of(path: &Path) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(std::fs::read(path).unwrap()).into()
    }

    #[test]
    fn digested_ring_files_close_with_their_sha256_and_the_last_one_gives_it_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let spec = OutputSpec::Ring {
            path: dir.path().join("d.pcap"),
            rotation: Rotation {
                file_count: 10,
                file_size: 3 << 20,
                max_age: None,
            },
            first_seq: 1,
        };
        let mut out = Output::create(spec, file_header(LinkType::Ethernet, 65535)).unwrap();
        out.digest_files();
        let closed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&closed);
        out.on_file_closed(FileClosed(Box::new(move |closed| {
            let digest = closed.sha256.expect("a digested file closes with its digest");
            assert_eq!(digest, sha256_of(closed.path), "{}", closed.path.display());
            seen.lock().unwrap().push(closed.seq);
        })));
        // Records of differing bytes, written while the syncer's thread reads
        // the file back: some of each file hashed there, the rest at the close.
        for round in 0..40u8 {
            let record: Vec<u8> = (0..200_000u32).map(|i| i.to_le_bytes()[0] ^ round).collect();
            if !out.fits(0, record.len() as u64) {
                out.rotate(u64::from(round), 0).unwrap();
            }
            out.write(&record).unwrap();
            if round % 8 == 0 {
                std::thread::sleep(syncer::WRITEBACK_INTERVAL);
            }
        }
        assert_eq!(*closed.lock().unwrap(), vec![1, 2], "8 MB in files of 3 MiB");
        let last = out.kept().pop().unwrap();
        assert_eq!(out.take_digest(), Some(sha256_of(&last)));
    }

    #[test]
    fn files_are_not_digested_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let out = Output::create(
            OutputSpec::File(dir.path().join("plain.pcap")),
            file_header(LinkType::Ethernet, 96),
        )
        .unwrap();
        assert_eq!(out.take_digest(), None);
    }

    #[test]
    fn a_ring_file_deleted_by_someone_else_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let spec = OutputSpec::Ring {
            path: dir.path().join("r.pcap"),
            rotation: Rotation {
                file_count: 1,
                file_size: 100,
                max_age: None,
            },
            first_seq: 1,
        };
        let mut out = Output::create(spec, file_header(LinkType::Ethernet, 96)).unwrap();
        // As the agent does once a closed file is stored.
        out.on_file_closed(FileClosed(Box::new(|closed| {
            std::fs::remove_file(closed.path).unwrap()
        })));
        for _ in 0..3 {
            if !out.fits(0, 40) {
                out.rotate(0, 0).unwrap();
            }
            out.write(&[7; 40]).unwrap();
        }
        assert_eq!(out.kept(), vec![dir.path().join("r_00003.pcap")]);
    }

    #[test]
    fn a_resumed_ring_continues_its_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let spec = OutputSpec::Ring {
            path: dir.path().join("r.pcap"),
            rotation: Rotation {
                file_count: 5,
                file_size: 100,
                max_age: None,
            },
            first_seq: 8,
        };
        let mut out = Output::create(spec, file_header(LinkType::Ethernet, 96)).unwrap();
        out.write(&[7; 40]).unwrap();
        out.rotate(1, 40).unwrap();
        assert_eq!(
            out.kept(),
            vec![dir.path().join("r_00008.pcap"), dir.path().join("r_00009.pcap")]
        );
    }

    #[test]
    fn a_file_ages_once_open_for_max_age_and_holding_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let spec = OutputSpec::Ring {
            path: dir.path().join("r.pcap"),
            rotation: Rotation {
                file_count: 5,
                file_size: 1 << 20,
                max_age: Some(std::time::Duration::from_millis(50)),
            },
            first_seq: 1,
        };
        let mut out = Output::create(spec, file_header(LinkType::Ethernet, 96)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert!(!out.aged(), "a file with its header alone never ages");
        out.write(&[7; 40]).unwrap();
        assert!(out.aged());
        out.rotate(1, 40).unwrap();
        assert!(!out.aged(), "the next file starts young");
        assert_eq!(out.files_created(), 2);
    }

    #[test]
    fn a_record_larger_than_a_file_still_gets_written() {
        let dir = tempfile::tempdir().unwrap();
        let spec = OutputSpec::Ring {
            path: dir.path().join("r.pcap"),
            rotation: Rotation {
                file_count: 3,
                file_size: 30,
                max_age: None,
            },
            first_seq: 1,
        };
        let out = Output::create(spec, file_header(LinkType::Ethernet, 96)).unwrap();
        assert!(out.fits(0, 500), "the first record of a file always fits");
        assert!(!out.fits(10, 500));
    }

    #[test]
    fn create_in_a_missing_directory_names_the_path() {
        let err = Output::create(OutputSpec::File("/nonexistent-dir-nw/x.pcap".into()), [0; 24]).unwrap_err();
        assert_eq!(err.to_string(), "create /nonexistent-dir-nw/x.pcap");
    }

    #[test]
    fn a_symbolic_link_at_the_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let link = dir.path().join("pc1.cap");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = Output::create(OutputSpec::File(link), [0; 24]).unwrap_err();
        let OutputError::Create { source, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(source.raw_os_error(), Some(libc::ELOOP), "{err:?}");
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"keep me",
            "the link's target is untouched"
        );
    }
}
