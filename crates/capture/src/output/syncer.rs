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

use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::session::SYNC_INTERVAL;
use crate::sys;

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
}

#[derive(Debug, Default)]
struct State {
    file: Option<Arc<File>>,
    /// The first failure, until the capture thread takes it.
    error: Option<io::Error>,
    stop: bool,
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
    /// was synced by whoever closed it).
    pub(crate) fn follow(&self, file: Arc<File>) {
        self.shared.lock().file = Some(file);
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
}
