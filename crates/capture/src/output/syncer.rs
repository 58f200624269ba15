//! Forcing a capture's file to the disk without stalling the capture.
//!
//! `fdatasync` returns once the kernel has written back every dirty page of
//! the file. Into a disk at 300 MB/s that is seconds' worth of data, and a
//! capture thread waiting that long lets its ring overflow (it lost a quarter
//! of a 300 MB/s flood that way, where tcpdump, which never syncs, lost
//! nothing). So a thread of its own keeps the file on its way to the disk:
//! every [`WRITEBACK_INTERVAL`] it starts writeback of what was written
//! (`sync_file_range`, so dirty pages never pile up and the kernel never
//! throttles the capture's writes to catch up), and every
//! [`SYNC_INTERVAL`](crate::session::SYNC_INTERVAL) it `fdatasync`s the file,
//! which bounds what a power loss may cost to that interval plus the time the
//! disk takes. The capture thread only tells it which file is current (a ring
//! rotates) and picks up its first error, which ends the capture as a failed
//! write would. A process crash loses nothing either way: what was written is
//! in the page cache.
//!
//! When asked ([`Syncer::digest`]), the same thread also works out each
//! file's SHA-256 as it grows, reading back from the page cache what was
//! written since its last turn, so a file's digest is ready when it closes
//! (the capture thread hashes only the last turn's worth) and its upload need
//! not read the file once more before the commit.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::session::SYNC_INTERVAL;
use crate::sys;

/// Bytes read back and hashed at a time (the digest's lock is held that long).
const DIGEST_CHUNK: usize = 256 << 10;

/// How often writeback of the current file is started.
pub const WRITEBACK_INTERVAL: Duration = Duration::from_millis(200);

/// The thread that syncs a capture's current file; stopped and joined on drop.
#[derive(Debug)]
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// The current file's digest so far, when files are digested.
    digest: Mutex<Option<Digesting>>,
}

/// A file's SHA-256, worked out as it grows.
struct Digesting {
    file: Arc<File>,
    /// Bytes hashed, from the start of the file.
    hashed: u64,
    sha: Sha256,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Digesting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Digesting")
            .field("hashed", &self.hashed)
            .finish_non_exhaustive()
    }
}

impl Digesting {
    fn new(file: Arc<File>) -> Self {
        Digesting {
            file,
            hashed: 0,
            sha: Sha256::new(),
            buf: vec![0; DIGEST_CHUNK],
        }
    }

    /// Hashes up to one chunk more of what the file holds; false at its end.
    /// Bytes below the file's size are final: the capture only appends, and
    /// the kernel grows the size only past bytes already copied in.
    fn step(&mut self) -> io::Result<bool> {
        let n = loop {
            match self.file.read_at(&mut self.buf, self.hashed) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        self.sha.update(&self.buf[..n]);
        self.hashed += n as u64;
        Ok(n > 0)
    }
}

/// Hashes what `digest` has not yet; a file that cannot be read back is no
/// longer digested (whoever needs its digest works it out later). `stop` is
/// asked between chunks, with the digest's lock released.
fn catch_up(digest: &Mutex<Option<Digesting>>, stop: impl Fn() -> bool) {
    loop {
        let more = {
            let mut slot = digest.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(digesting) = slot.as_mut() else { return };
            match digesting.step() {
                Ok(more) => more,
                Err(error) => {
                    tracing::warn!(%error, "could not read the capture file back to hash it; its upload hashes it instead");
                    *slot = None;
                    return;
                }
            }
        };
        if !more || stop() {
            return;
        }
    }
}

#[derive(Debug, Default)]
struct State {
    file: Option<Arc<File>>,
    /// The first failure, until the capture thread takes it.
    error: Option<io::Error>,
    stop: bool,
    /// Whether each file is digested.
    digest: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Syncer {
    /// Starts the thread on `file`.
    pub(crate) fn start(file: Arc<File>) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        shared.lock().file = Some(file);
        let thread = std::thread::Builder::new().name("capture-sync".into()).spawn({
            let shared = Arc::clone(&shared);
            move || run(&shared)
        })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Makes `file` the one kept on its way to the disk (the previous one
    /// was synced, and its digest taken, by whoever closed it).
    pub(crate) fn follow(&self, file: Arc<File>) {
        let digest = {
            let mut state = self.shared.lock();
            state.file = Some(Arc::clone(&file));
            state.digest
        };
        // (The two locks are never held together.)
        if digest {
            *self.digest_slot() = Some(Digesting::new(file));
        }
    }

    /// Works out the SHA-256 of the current file and of each one it
    /// [`follow`](Self::follow)s, from their first byte.
    pub(crate) fn digest(&self) {
        let file = {
            let mut state = self.shared.lock();
            state.digest = true;
            state.file.clone()
        };
        *self.digest_slot() = file.map(Digesting::new);
    }

    /// The SHA-256 of the current file as it is now (call once it is
    /// written: the bytes the thread has not hashed yet are hashed here, on
    /// the caller's thread); `None` when files are not digested or this one
    /// could not be read back.
    pub(crate) fn take_digest(&self) -> Option<[u8; 32]> {
        catch_up(&self.shared.digest, || false);
        let digesting = self.digest_slot().take()?;
        Some(digesting.sha.finalize().into())
    }

    fn digest_slot(&self) -> MutexGuard<'_, Option<Digesting>> {
        self.shared.digest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first error a sync met since the last call, if any.
    pub(crate) fn take_error(&self) -> Option<io::Error> {
        self.shared.lock().error.take()
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            // A panic there has been reported by the panic hook already.
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared) {
    let mut last_sync = Instant::now();
    // File systems without `sync_file_range` (it answers EINVAL or ESPIPE
    // there) get the periodic `fdatasync` alone.
    let mut writeback = true;
    loop {
        let file = {
            let state = shared.lock();
            let (state, _) = shared
                .wake
                .wait_timeout_while(state, WRITEBACK_INTERVAL, |s| !s.stop)
                .unwrap_or_else(PoisonError::into_inner);
            if state.stop {
                return;
            }
            state.file.clone()
        };
        let Some(file) = file else { continue };
        let result = if last_sync.elapsed() >= SYNC_INTERVAL {
            last_sync = Instant::now();
            file.sync_data()
        } else if writeback {
            match sys::start_writeback(&file) {
                Err(e) if matches!(e.errno(), Some(libc::EINVAL | libc::ESPIPE | libc::EOPNOTSUPP)) => {
                    writeback = false;
                    Ok(())
                }
                other => other.map_err(|e| e.source),
            }
        } else {
            Ok(())
        };
        if let Err(error) = result {
            let mut state = shared.lock();
            state.error.get_or_insert(error);
        }
        catch_up(&shared.digest, || shared.lock().stop);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn follows_the_current_file_and_stops_promptly() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| Arc::new(File::create(dir.path().join(name)).unwrap());
        let first = open("a.pcap");
        let syncer = Syncer::start(Arc::clone(&first)).unwrap();
        (&*first).write_all(&[7; 1 << 20]).unwrap();
        std::thread::sleep(WRITEBACK_INTERVAL * 2);
        let second = open("b.pcap");
        syncer.follow(Arc::clone(&second));
        (&*second).write_all(&[8; 1 << 20]).unwrap();
        std::thread::sleep(WRITEBACK_INTERVAL * 2);
        assert!(syncer.take_error().is_none());
        // The thread holds the files only while it runs.
        let started = Instant::now();
        drop(syncer);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert_eq!(Arc::strong_count(&first), 1);
        assert_eq!(Arc::strong_count(&second), 1);
    }

    #[test]
    fn digests_each_file_as_it_grows_and_stops_at_a_file_it_cannot_read() {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let create = |name: &str| Arc::new(crate::output::create_nofollow(&dir.path().join(name)).unwrap());
        let first = create("a.pcap");
        let syncer = Syncer::start(Arc::clone(&first)).unwrap();
        syncer.digest();
        let mut written = Vec::new();
        for i in 0..12u8 {
            let chunk = vec![i; 700_000];
            (&*first).write_all(&chunk).unwrap();
            written.extend_from_slice(&chunk);
            if i % 4 == 0 {
                std::thread::sleep(WRITEBACK_INTERVAL + WRITEBACK_INTERVAL / 2);
            }
        }
        let hashed_by_the_thread = syncer.shared.digest.lock().unwrap().as_ref().unwrap().hashed;
        assert!(hashed_by_the_thread > 0, "the thread hashes while the file is written");
        let digest: [u8; 32] = sha2::Sha256::digest(&written).into();
        assert_eq!(syncer.take_digest(), Some(digest));
        assert_eq!(syncer.take_digest(), None, "taken once");

        // The next file is digested from its first byte.
        let second = create("b.pcap");
        syncer.follow(Arc::clone(&second));
        (&*second).write_all(b"second").unwrap();
        assert_eq!(syncer.take_digest(), Some(sha2::Sha256::digest(b"second").into()));

        // A file opened for writing only cannot be read back: no digest, no
        // error for the capture (its upload hashes it).
        let path = dir.path().join("c.pcap");
        let write_only = Arc::new(File::create(&path).unwrap());
        syncer.follow(Arc::clone(&write_only));
        (&*write_only).write_all(b"third").unwrap();
        assert_eq!(syncer.take_digest(), None);
        assert!(syncer.take_error().is_none());
    }
}
