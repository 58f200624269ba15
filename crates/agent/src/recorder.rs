//! The host's flight recorder (issue 16): an always-on capture into a bounded
//! set of files that holds at least the last `seconds` of matching traffic
//! within `max_bytes`, oldest dropped first, so a capture around an alert can
//! take the seconds before the alert.
//!
//! How: the capture engine writes a ring of files under
//! `DATA_DIR/recorder/g{generation}/`, each closed when it reaches
//! `max_bytes / 16` or has been open `seconds / 8` (so the oldest can go by
//! time at low rates and by size at high ones). As each file closes, the
//! oldest are deleted while the closed ones hold more than `max_bytes` less
//! one file, or while all of a file's packets are older than `seconds` and
//! [`DELIVERY_MARGIN_MS`] (the time an alert takes to arrive after it fired).
//! Files on disk are read back through the page cache, so recent ones cost
//! no disk reads; the engine's own background writeback keeps the capture
//! thread off the disk.
//!
//! A capture around an alert takes a [`Hold`] from the alert's window start:
//! every file that may hold packets of the window is hard-linked into the
//! hold's directory (`DATA_DIR/recorder/holds/…`) at once, each new file
//! within a second of its creation (a link to the file being written sees
//! what is appended) and again as it closes, so nothing of the window goes before it is assembled,
//! not even when the agent restarts: the journal and the hold take the
//! capture up again (the recorder's bound is exceeded by what holds keep,
//! until they are released). [`assemble`] writes the window's records that pass the
//! capture's filters into one pcap file: the recorder is one continuous
//! stream, so there is no gap and no duplicate between the part before the
//! alert and the part after.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use netwatch_api::agent::{RecorderSpec, RecorderStatus, ReportStats};
use netwatch_api::filter::{CaptureFilter, filters_match, validate_filters};
use netwatch_capture::output::ring_name;
use netwatch_capture::pcap::{self, FILE_HEADER_LEN, LinkType, RECORD_HEADER_LEN, Records};
use netwatch_capture::session::DEFAULT_NICE;
use netwatch_capture::{
    Capture, CaptureConfig, CaptureStats, ClosedFile, Interface, Limits, OutputSpec, RingConfig, Rotation,
};
use tokio::sync::Notify;

use crate::{error_chain, now_ms};

/// `DATA_DIR/recorder`.
pub(crate) const RECORDER_DIR: &str = "recorder";
/// The spec the recorder runs, kept so it records again after a restart
/// before the controller is reached.
const SPEC_FILE: &str = "spec.json";
const HOLDS_DIR: &str = "holds";
/// Files a recorder's window is cut into, at least (by size and by time).
const SLICES: u64 = 16;
/// Files the engine's own ring keeps at most: far more than the bounds above
/// leave (about `SLICES` by size, 9 by age), a backstop only.
const RING_BACKSTOP: u32 = 80;
/// The smallest file: below this, rotating costs more than it saves.
const MIN_FILE_BYTES: u64 = 256 << 10;
/// How much longer than its `seconds` the recorder keeps traffic (within its
/// bytes): an alert is delivered after it fired, and its window counts from
/// when it fired.
pub(crate) const DELIVERY_MARGIN_MS: i64 = 30_000;
/// A recorder that failed (a full disk, the interface gone) tries again after this.
const RETRY_AFTER: Duration = Duration::from_secs(15);

/// The host's flight recorder; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    interface: Interface,
    /// Kept beyond a recorder's seconds ([`DELIVERY_MARGIN_MS`]; tests set less).
    margin_ms: i64,
    state: Mutex<State>,
    /// Held while a change is applied: one at a time.
    applying: Mutex<()>,
    /// Woken when the status changed (one waiter: the channel).
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// The recorder asked for, and its thread's stop flag.
    running: Option<Running>,
    /// The files of the current generation, oldest first (the one being
    /// written last).
    files: VecDeque<Slice>,
    /// The recording's counters and state, as the controller is told.
    status: RecorderStatus,
    status_dirty: bool,
    /// Since when everything recorded is held (ms): the recording's start,
    /// or the close of the last file deleted.
    held_since_ms: Option<i64>,
    holds: Vec<Arc<HoldInner>>,
    generation: u64,
    /// The latest change asked for and not applied yet.
    wanted: Option<Option<RecorderSpec>>,
}

#[derive(Debug)]
struct Running {
    spec: RecorderSpec,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One file of the recording.
#[derive(Debug, Clone)]
struct Slice {
    generation: u64,
    seq: u32,
    path: PathBuf,
    bytes: u64,
    /// When it closed (ms); `None` while being written.
    closed_ms: Option<i64>,
}

/// What a capture around an alert holds of the recording: its files are
/// linked into `dir` as `g{generation}_{seq}.pcap` (which sort in
/// recording order), so they outlive an agent restart.
#[derive(Debug)]
struct HoldInner {
    dir: PathBuf,
    from_ms: i64,
}

/// The part of the recording a capture around an alert keeps; released on drop.
#[derive(Debug)]
pub(crate) struct Hold {
    recorder: Recorder,
    inner: Arc<HoldInner>,
    /// The first moment the recording still held when the hold was taken.
    pub(crate) covered_from_ms: i64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn slice_name(generation: u64, seq: u32) -> String {
    format!("g{generation}_{seq:05}.pcap")
}

impl Recorder {
    /// The recorder of an agent whose data directory is `data_dir`: what an
    /// earlier run recorded is gone (its files are removed), the spec it ran
    /// is started again.
    pub(crate) fn new(data_dir: &Path, interface: Interface) -> Self {
        // What an earlier run recorded is gone, except what holds kept.
        let dir = data_dir.join(RECORDER_DIR);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                // Holds are kept: a capture around an alert that was waiting
                // for its window's end is taken up again (`adopt`).
                if entry.file_name() != SPEC_FILE && entry.file_name() != HOLDS_DIR {
                    let path = entry.path();
                    let removed = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    if let Err(error) = removed {
                        tracing::warn!(path = %path.display(), error = %error, "could not remove an earlier recording");
                    }
                }
            }
        }
        let recorder = Self {
            shared: Arc::new(Shared {
                dir,
                interface,
                margin_ms: DELIVERY_MARGIN_MS,
                state: Mutex::new(State::default()),
                applying: Mutex::new(()),
                changed: Notify::new(),
            }),
        };
        let saved = std::fs::read(recorder.shared.dir.join(SPEC_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<RecorderSpec>(&bytes).ok());
        if let Some(spec) = saved {
            tracing::info!(recorder = %spec.id, "flight recorder restarted as before the agent stopped");
            recorder.apply(Some(spec));
        }
        recorder
    }

    /// Asks for `spec` (or no recording), from async code: the change
    /// (which may wait for the recording thread to stop) happens on a thread
    /// of its own, the last asked for winning.
    pub(crate) fn want(&self, spec: Option<RecorderSpec>) {
        lock(&self.shared.state).wanted = Some(spec);
        let recorder = self.clone();
        let spawned = std::thread::Builder::new()
            .name("nw-recorder-set".to_owned())
            .spawn(move || {
                let _one_at_a_time = lock(&recorder.shared.applying);
                let wanted = lock(&recorder.shared.state).wanted.take();
                if let Some(spec) = wanted {
                    recorder.apply(spec);
                }
            });
        if let Err(error) = spawned {
            tracing::error!(error = %error, "could not change the flight recorder: no thread");
        }
    }

    /// Runs `spec` (a no-op if it runs already), or stops recording.
    fn apply(&self, spec: Option<RecorderSpec>) {
        {
            let state = lock(&self.shared.state);
            if state.running.as_ref().map(|running| &running.spec) == spec.as_ref() {
                return;
            }
        }
        self.stop_running();
        let spec_file = self.shared.dir.join(SPEC_FILE);
        let Some(spec) = spec else {
            if let Err(error) = std::fs::remove_file(&spec_file)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(error = %error, "could not forget the flight recorder's spec");
            }
            let mut state = lock(&self.shared.state);
            state.status = RecorderStatus::default();
            state.status_dirty = true;
            drop(state);
            self.shared.changed.notify_one();
            // Gone once no capture around an alert holds files in it.
            let _ = std::fs::remove_dir(self.shared.dir.join(HOLDS_DIR));
            let _ = std::fs::remove_dir(&self.shared.dir);
            tracing::info!("flight recorder stopped: its files are deleted");
            return;
        };
        let filters = match validate_filters(&spec.filters) {
            Ok(filters) => filters,
            Err(error) => {
                self.fail(&spec, format!("the recorder's filters are invalid: {error}"));
                return;
            }
        };
        if let Err(error) = std::fs::create_dir_all(&self.shared.dir)
            .and_then(|()| std::fs::write(&spec_file, serde_json::to_vec(&spec).expect("plain data")))
        {
            tracing::warn!(error = %error, "could not keep the flight recorder's spec (it will not restart by itself)");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = self.clone();
        let thread_spec = spec.clone();
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("nw-recorder".to_owned())
            .spawn(move || recorder.record(&thread_spec, filters, &thread_stop));
        let mut state = lock(&self.shared.state);
        match thread {
            Ok(thread) => {
                state.running = Some(Running {
                    spec: spec.clone(),
                    stop,
                    thread: Some(thread),
                });
                tracing::info!(recorder = %spec.id, seconds = spec.seconds, max_bytes = spec.max_bytes, "flight recorder starting");
            }
            Err(error) => {
                drop(state);
                self.fail(&spec, format!("could not start the recorder's thread: {error}"));
            }
        }
    }

    fn fail(&self, spec: &RecorderSpec, error: String) {
        tracing::error!(recorder = %spec.id, error = %error, "flight recorder not recording");
        let mut state = lock(&self.shared.state);
        state.status = RecorderStatus {
            id: Some(spec.id.clone()),
            running: false,
            error: Some(error),
            ..RecorderStatus::default()
        };
        state.status_dirty = true;
        drop(state);
        self.shared.changed.notify_one();
    }

    /// Stops the recording thread and deletes its files (what holds need is
    /// linked into them first).
    fn stop_running(&self) {
        let running = lock(&self.shared.state).running.take();
        if let Some(mut running) = running {
            running.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = running.thread.take() {
                // The capture loop sees the flag within its poll interval.
                let _ = thread.join();
            }
        }
        let mut state = lock(&self.shared.state);
        let files: Vec<Slice> = state.files.drain(..).collect();
        let holds = state.holds.clone();
        let generation = state.generation;
        state.held_since_ms = None;
        drop(state);
        // Closed files were linked as they closed; the last one may be new.
        for slice in &files {
            for hold in &holds {
                hold.take(slice);
            }
        }
        let dir = self.shared.dir.join(format!("g{generation}"));
        if dir.exists()
            && let Err(error) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(dir = %dir.display(), error = %error, "could not delete the recording's files");
        }
    }

    /// Stops recording for good (the agent stops); files stay for holds.
    pub(crate) fn shutdown(&self) {
        let running = lock(&self.shared.state).running.take();
        if let Some(mut running) = running {
            running.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = running.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// The recording thread: records until stopped, starting again after a failure.
    fn record(&self, spec: &RecorderSpec, filters: Vec<CaptureFilter>, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let generation = {
                let mut state = lock(&self.shared.state);
                state.generation = u64::try_from(now_ms()).unwrap_or_default().max(state.generation + 1);
                state.generation
            };
            let dir = self.shared.dir.join(format!("g{generation}"));
            let failure = match std::fs::create_dir_all(&dir) {
                Err(error) => format!("could not create {}: {error}", dir.display()),
                Ok(()) => match self.record_once(spec, &filters, stop, generation, &dir) {
                    Ok(()) => return,
                    Err(error) => error,
                },
            };
            self.fail(spec, format!("{failure}; trying again in {} s", RETRY_AFTER.as_secs()));
            let until = std::time::Instant::now() + RETRY_AFTER;
            while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn record_once(
        &self,
        spec: &RecorderSpec,
        filters: &[CaptureFilter],
        stop: &AtomicBool,
        generation: u64,
        dir: &Path,
    ) -> Result<(), String> {
        let file_bytes = (spec.max_bytes / SLICES).max(MIN_FILE_BYTES);
        let max_age = Duration::from_millis((u64::from(spec.seconds) * 1000 / 8).max(1000));
        let first = dir.join("rec.pcap");
        let config = CaptureConfig {
            interface: self.shared.interface.clone(),
            filters: filters.to_vec(),
            snaplen: spec.bytes_to_capture_per_packet,
            limits: Limits::default(),
            output: OutputSpec::Ring {
                path: first.clone(),
                rotation: Rotation {
                    // Files go by the rules above; the ring's own count is a backstop.
                    file_count: RING_BACKSTOP,
                    file_size: file_bytes,
                    max_age: Some(max_age),
                },
                first_seq: 1,
            },
            ring: RingConfig::default(),
            nice: Some(DEFAULT_NICE),
        };
        let mut capture = Capture::open(config).map_err(|error| error_chain(&error))?;
        {
            let mut state = lock(&self.shared.state);
            state.files.clear();
            state.files.push_back(Slice {
                generation,
                seq: 1,
                path: ring_name(&first, 1),
                bytes: FILE_HEADER_LEN as u64,
                closed_ms: None,
            });
            state.held_since_ms = Some(now_ms());
            state.status = RecorderStatus {
                id: Some(spec.id.clone()),
                running: true,
                files: 1,
                ..RecorderStatus::default()
            };
            state.status_dirty = true;
        }
        self.shared.changed.notify_one();
        tracing::info!(dir = %dir.display(), file_bytes, max_age_s = max_age.as_secs(), "flight recorder recording");
        let recorder = self.clone();
        let seconds = spec.seconds;
        let max_bytes = spec.max_bytes;
        let first_path = first.clone();
        capture.on_file_closed(move |closed: &ClosedFile<'_>| {
            recorder.closed(closed, &first_path, generation, seconds, max_bytes, file_bytes);
        });
        let outcome = capture.run(stop, &mut |stats: &CaptureStats| self.progress(stats));
        self.progress(&outcome.stats);
        match outcome.result {
            Ok(_) => Ok(()),
            Err(error) => Err(error_chain(&error)),
        }
    }

    /// Counters, about every second.
    fn progress(&self, stats: &CaptureStats) {
        let mut state = lock(&self.shared.state);
        state.status.packets = stats.packets_captured;
        state.status.kernel_drops = stats.kernel_drops;
        if let Some(current) = state.files.back() {
            let size = std::fs::metadata(&current.path).map_or(current.bytes, |m| m.len());
            // Holds take each new file as soon as it exists (once a second).
            for hold in &state.holds {
                hold.take(current);
            }
            if let Some(current) = state.files.back_mut() {
                current.bytes = size;
            }
        }
        refresh(&mut state);
    }

    /// A file closed: note it, start the next, and delete what the bounds say.
    fn closed(
        &self,
        closed: &ClosedFile<'_>,
        first: &Path,
        generation: u64,
        seconds: u32,
        max_bytes: u64,
        file_bytes: u64,
    ) {
        let now = now_ms();
        let size = std::fs::metadata(closed.path).map_or(0, |m| m.len());
        let mut state = lock(&self.shared.state);
        if let Some(slice) = state.files.iter_mut().find(|s| s.seq == closed.seq) {
            slice.closed_ms = Some(now);
            slice.bytes = size;
        }
        // Holds take it now, however soon it goes (and whatever happens to the agent).
        if let Some(slice) = state.files.iter().find(|s| s.seq == closed.seq) {
            for hold in &state.holds {
                hold.take(slice);
            }
        }
        state.files.push_back(Slice {
            generation,
            seq: closed.seq + 1,
            path: ring_name(first, closed.seq + 1),
            bytes: FILE_HEADER_LEN as u64,
            closed_ms: None,
        });
        // Closed files may hold max_bytes less the one being written.
        let budget = max_bytes.saturating_sub(file_bytes);
        // An alert arrives after it fired (rule evaluation, Alertmanager's
        // group_wait, an action group's delivery): its window must still be here.
        let keep_after = now - i64::from(seconds) * 1000 - self.shared.margin_ms;
        loop {
            let closed_bytes: u64 = state
                .files
                .iter()
                .filter(|s| s.closed_ms.is_some())
                .map(|s| s.bytes)
                .sum();
            let Some(oldest) = state.files.front() else { break };
            let Some(closed_ms) = oldest.closed_ms else { break };
            if closed_bytes <= budget && closed_ms >= keep_after {
                break;
            }
            let oldest = state.files.pop_front().expect("just seen");
            if let Err(error) = std::fs::remove_file(&oldest.path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %oldest.path.display(), error = %error, "could not delete a recorder file");
            }
            state.held_since_ms = Some(closed_ms);
        }
        refresh(&mut state);
    }

    /// Holds what the recording has from `from_ms` on, for a capture around
    /// an alert; `None` when the recorder does not record.
    pub(crate) fn hold(&self, capture: &str, from_ms: i64) -> Option<Hold> {
        let mut state = lock(&self.shared.state);
        if !state.status.running {
            return None;
        }
        let held_since = state.held_since_ms?;
        let dir = self.shared.dir.join(HOLDS_DIR).join(hold_name(capture));
        if let Err(error) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %error, "could not make a hold for the recording");
            return None;
        }
        let inner = Arc::new(HoldInner { dir, from_ms });
        // Linked now (the file being written too: the link sees what is
        // appended), so the window is on disk in the hold whatever happens next.
        for slice in &state.files {
            inner.take(slice);
        }
        state.holds.push(Arc::clone(&inner));
        Some(Hold {
            recorder: self.clone(),
            inner,
            covered_from_ms: from_ms.max(held_since),
        })
    }

    /// Takes up the hold a capture around an alert had when the agent
    /// stopped (its files are in its directory); `None` when it left none.
    /// What the recording holds from now on is added to it, as to any hold.
    pub(crate) fn adopt(&self, capture: &str, from_ms: i64) -> Option<Hold> {
        let dir = self.shared.dir.join(HOLDS_DIR).join(hold_name(capture));
        if !dir.is_dir() {
            return None;
        }
        let inner = Arc::new(HoldInner { dir, from_ms });
        lock(&self.shared.state).holds.push(Arc::clone(&inner));
        Some(Hold {
            recorder: self.clone(),
            inner,
            covered_from_ms: from_ms,
        })
    }

    /// Removes the holds no capture took up (after the agent's recovery):
    /// their captures ended, or cannot go on.
    pub(crate) fn drop_unclaimed_holds(&self) {
        let holds = self.shared.dir.join(HOLDS_DIR);
        let Ok(entries) = std::fs::read_dir(&holds) else { return };
        let state = lock(&self.shared.state);
        for entry in entries.flatten() {
            let path = entry.path();
            if !state.holds.iter().any(|hold| hold.dir == path) {
                tracing::info!(dir = %path.display(), "removing a hold no capture took up");
                if let Err(error) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(dir = %path.display(), error = %error, "could not remove an unclaimed hold");
                }
            }
        }
        drop(state);
        let _ = std::fs::remove_dir(&holds);
    }

    /// The recorder's status when it changed since last taken, or every
    /// call when `always`.
    pub(crate) fn take_status(&self, always: bool) -> Option<RecorderStatus> {
        let mut state = lock(&self.shared.state);
        if !state.status_dirty && !always {
            return None;
        }
        if !state.status_dirty && state.status.id.is_none() {
            return None;
        }
        state.status_dirty = false;
        Some(state.status.clone())
    }

    /// The recorder's status now (for metrics).
    pub(crate) fn status(&self) -> RecorderStatus {
        lock(&self.shared.state).status.clone()
    }

    /// Marks the status as changed (a new connection must hear it).
    pub(crate) fn mark_dirty(&self) {
        lock(&self.shared.state).status_dirty = true;
        self.shared.changed.notify_one();
    }

    /// Resolves when the status changed.
    pub(crate) async fn changed(&self) {
        self.shared.changed.notified().await;
    }

    /// Whether a recorder is asked for (running or failing).
    pub(crate) fn configured(&self) -> bool {
        lock(&self.shared.state).status.id.is_some()
    }
}

/// The status's bytes, files and window from the files held.
fn refresh(state: &mut State) {
    state.status.bytes = state.files.iter().map(|s| s.bytes).sum();
    state.status.files = u32::try_from(state.files.len()).unwrap_or(u32::MAX);
    state.status.oldest_ms = state.files.iter().find_map(|s| first_packet_ms(&s.path));
}

/// The time of a file's first packet (ms), if it has one.
fn first_packet_ms(path: &Path) -> Option<i64> {
    let mut head = [0u8; FILE_HEADER_LEN + RECORD_HEADER_LEN];
    File::open(path).ok()?.read_exact(&mut head).ok()?;
    let header = pcap::parse_file_header(&head).ok()?;
    let at = |i: usize| {
        let value = u32::from_ne_bytes(head[i..i + 4].try_into().expect("four bytes"));
        if header.swapped { value.swap_bytes() } else { value }
    };
    let sec = i64::from(at(FILE_HEADER_LEN));
    let frac = i64::from(at(FILE_HEADER_LEN + 4));
    let ms = if header.nanos { frac / 1_000_000 } else { frac / 1000 };
    Some(sec * 1000 + ms)
}

fn hold_name(capture: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(capture.as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

impl HoldInner {
    /// Hard-links `slice` into the hold (once) when it may hold packets of
    /// the window: it is being written, or closed after the window began.
    fn take(&self, slice: &Slice) {
        if slice.closed_ms.is_some_and(|closed| closed < self.from_ms) {
            return;
        }
        let to = self.dir.join(slice_name(slice.generation, slice.seq));
        match std::fs::hard_link(&slice.path, &to) {
            Ok(()) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::AlreadyExists
                ) => {}
            Err(error) => tracing::warn!(file = %slice.path.display(), error = %error,
                "could not keep a recorder file for a capture around an alert: its packets are missing from it"),
        }
    }
}

impl Hold {
    /// Links every file that may hold packets from the hold's start on (the
    /// one being written too: it is read as far as it is whole) and returns
    /// them in recording order.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        let state = lock(&self.recorder.shared.state);
        for slice in &state.files {
            self.inner.take(slice);
        }
        drop(state);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.inner.dir)
            .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
            .unwrap_or_default();
        // `g{generation}_{seq:05}`: generations are ms timestamps of one width.
        files.sort();
        files
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut state = lock(&self.recorder.shared.state);
        state.holds.retain(|hold| !Arc::ptr_eq(hold, &self.inner));
        drop(state);
        if let Err(error) = std::fs::remove_dir_all(&self.inner.dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.inner.dir.display(), error = %error, "could not remove a released hold");
        }
    }
}

/// What [`assemble`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Assembled {
    pub(crate) stats: ReportStats,
    /// Stopped at the capture's byte limit.
    pub(crate) max_bytes_reached: bool,
}

/// The part of a capture around an alert that [`assemble`] takes.
#[derive(Debug, Clone)]
pub(crate) struct Window<'a> {
    pub(crate) from_ms: i64,
    pub(crate) to_ms: i64,
    pub(crate) filters: &'a [CaptureFilter],
    /// Bytes kept of each packet; 0 keeps whole packets.
    pub(crate) snaplen: u32,
    /// Bytes of the file at most, header included.
    pub(crate) max_bytes: Option<u64>,
}

/// Writes the records of `files` (in recording order) from `window.from_ms`
/// to `window.to_ms` that pass the window's filters into one pcap file at
/// `out`, cut to its snap length, and syncs it. A file that cannot be read
/// whole is read as far as it is whole.
pub(crate) fn assemble(files: &[PathBuf], out: &Path, window: &Window<'_>) -> std::io::Result<Assembled> {
    let from_ns = i128::from(window.from_ms) * 1_000_000;
    let to_ns = i128::from(window.to_ms) * 1_000_000 + 999_999;
    let mut writer: Option<(BufWriter<File>, LinkType)> = None;
    let mut result = Assembled::default();
    let mut written = 0u64;
    let mut record = Vec::with_capacity(RECORD_HEADER_LEN);
    'files: for path in files {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(file = %path.display(), error = %error, "a recorder file could not be read: its packets are missing");
                continue;
            }
        };
        let Ok(records) = Records::new(&bytes) else { continue };
        let header = records.header();
        let Some(link) = LinkType::from_code(header.link_code) else {
            continue;
        };
        let unit = if header.nanos { 1 } else { 1000 };
        for rec in records {
            let at = i128::from(rec.sec) * 1_000_000_000 + i128::from(rec.frac) * unit;
            if at < from_ns || at > to_ns {
                continue;
            }
            if !window.filters.is_empty()
                && !filters_match(window.filters, netwatch_capture::decode::flow(link, rec.data).as_ref())
            {
                continue;
            }
            if writer.is_none() {
                let snaplen = match window.snaplen {
                    0 => header.snaplen,
                    cut => cut.min(header.snaplen),
                };
                let mut file = BufWriter::with_capacity(1 << 20, netwatch_capture::output::create_nofollow(out)?);
                file.write_all(&pcap::file_header(link, snaplen))?;
                written = FILE_HEADER_LEN as u64;
                writer = Some((file, link));
            }
            let Some((file, _)) = writer.as_mut() else {
                unreachable!()
            };
            let keep = match window.snaplen {
                0 => rec.data.len(),
                cut => rec.data.len().min(cut as usize),
            };
            let size = (RECORD_HEADER_LEN + keep) as u64;
            if window.max_bytes.is_some_and(|max| written + size > max) {
                result.max_bytes_reached = true;
                break 'files;
            }
            record.clear();
            let nanos = u32::try_from(i128::from(rec.frac) * unit).unwrap_or(0);
            let stored = u32::try_from(keep).expect("a record's length fits in 32 bits");
            pcap::push_record_header(&mut record, rec.sec, nanos, stored, rec.orig_len);
            file.write_all(&record)?;
            file.write_all(&rec.data[..keep])?;
            written += size;
            result.stats.packets_captured += 1;
            result.stats.bytes_captured += keep as u64;
        }
    }
    let file = match writer {
        Some((file, _)) => file.into_inner().map_err(std::io::IntoInnerError::into_error)?,
        None => {
            // No packet in the window: a valid file with no record.
            let mut file = netwatch_capture::output::create_nofollow(out)?;
            file.write_all(&pcap::file_header(
                LinkType::Ethernet,
                match window.snaplen {
                    0 => pcap::MAX_SNAPLEN,
                    cut => cut,
                },
            ))?;
            written = FILE_HEADER_LEN as u64;
            file
        }
    };
    file.sync_all()?;
    result.stats.file_size_in_bytes = written;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap file of UDP packets from 10.0.0.1:5000 to 10.0.0.2:`port`, one per (ms, port).
    fn file(dir: &Path, name: &str, packets: &[(i64, u16)]) -> PathBuf {
        let mut bytes = pcap::file_header(LinkType::Ethernet, 262_144).to_vec();
        for &(ms, port) in packets {
            let mut frame = vec![0u8; 12];
            frame.extend_from_slice(&[
                0x08, 0x00, 0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ]);
            frame.extend_from_slice(&5000u16.to_be_bytes());
            frame.extend_from_slice(&port.to_be_bytes());
            frame.extend_from_slice(&[0, 12, 0, 0, 1, 2, 3, 4]);
            let sec = u32::try_from(ms / 1000).unwrap();
            let nanos = u32::try_from(ms % 1000).unwrap() * 1_000_000;
            let len = u32::try_from(frame.len()).unwrap();
            pcap::push_record_header(&mut bytes, sec, nanos, len, len);
            bytes.extend_from_slice(&frame);
        }
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn read(path: &Path) -> Vec<(i64, usize)> {
        let bytes = std::fs::read(path).unwrap();
        Records::new(&bytes)
            .unwrap()
            .map(|r| (i64::from(r.sec) * 1000 + i64::from(r.frac) / 1_000_000, r.data.len()))
            .collect()
    }

    fn spec(port: u16, seconds: u32, max_bytes: u64) -> RecorderSpec {
        RecorderSpec {
            id: "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkWatchers/w/netwatchFlightRecorders/r".into(),
            filters: serde_json::from_str(&format!(r#"[{{"protocol":"UDP","localPort":"{port}"}}]"#)).unwrap(),
            seconds,
            max_bytes,
            bytes_to_capture_per_packet: 0,
        }
    }

    fn status(recorder: &Recorder) -> RecorderStatus {
        lock(&recorder.shared.state).status.clone()
    }

    /// Sends `count` datagrams `seq=N` (from `first`) of `size` bytes to
    /// 127.0.0.1:`port`, `gap` apart.
    fn send(port: u16, first: u64, count: u64, size: usize, gap: Duration) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for seq in first..first + count {
            let mut payload = format!("seq={seq};").into_bytes();
            payload.resize(size, b'.');
            socket.send_to(&payload, ("127.0.0.1", port)).unwrap();
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
        }
    }

    fn sequence(path: &Path) -> Vec<u64> {
        let bytes = std::fs::read(path).unwrap();
        Records::new(&bytes)
            .unwrap()
            .filter_map(|r| {
                // Ethernet, IPv4 and UDP headers: 14 + 20 + 8 bytes.
                let text = String::from_utf8_lossy(r.data.get(42..)?).into_owned();
                text.strip_prefix("seq=")?.split(';').next()?.parse().ok()
            })
            .collect()
    }

    fn recording(recorder: &Recorder) {
        assert!(
            netwatch_testkit::eventually(100, Duration::from_millis(50), || status(recorder).running),
            "the recorder does not record: {:?}",
            status(recorder)
        );
    }

    #[test]
    fn the_recorder_keeps_its_bytes_and_a_hold_keeps_its_window() {
        netwatch_testkit::require_root();
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::new(dir.path(), Interface::Named("lo".into()));
        recorder.apply(Some(spec(47_311, 60, 1 << 20)));
        recording(&recorder);
        // 4 MB through a 1 MiB recorder: the oldest go, the bound holds.
        send(47_311, 0, 4000, 1000, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(300));
        recorder.progress(&CaptureStats::default());
        let held = status(&recorder);
        assert!(
            held.bytes <= 1 << 20,
            "the recorder holds {} bytes, over its 1 MiB",
            held.bytes
        );
        assert!(held.bytes >= 512 << 10, "the recorder holds only {} bytes", held.bytes);
        // A hold from now keeps what follows, however much comes after it.
        let hold = recorder.hold("capture-1", now_ms()).expect("the recorder records");
        send(47_311, 10_000, 3000, 1000, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(300));
        let files = hold.files();
        let out = dir.path().join("window.cap");
        let window = Window {
            from_ms: hold.covered_from_ms,
            to_ms: now_ms(),
            filters: &[],
            snaplen: 0,
            max_bytes: None,
        };
        assemble(&files, &out, &window).unwrap();
        let seen = sequence(&out);
        let expected: Vec<u64> = (10_000..13_000).collect();
        assert!(
            seen == expected,
            "the held window has every datagram once, in order: {} of them, from {:?} to {:?}",
            seen.len(),
            seen.first(),
            seen.last()
        );
        drop(hold);
        assert!(
            !dir.path()
                .join(RECORDER_DIR)
                .join(HOLDS_DIR)
                .join(hold_name("capture-1"))
                .exists()
        );
        recorder.apply(None);
        assert!(
            !dir.path().join(RECORDER_DIR).exists(),
            "stopping the recorder leaves nothing"
        );
    }

    #[test]
    fn at_low_rates_the_recorder_keeps_its_seconds_and_not_much_more() {
        netwatch_testkit::require_root();
        let dir = tempfile::tempdir().unwrap();
        let mut recorder = Recorder::new(dir.path(), Interface::Named("lo".into()));
        Arc::get_mut(&mut recorder.shared).expect("not shared yet").margin_ms = 0;
        recorder.apply(Some(spec(47_312, 2, 64 << 20)));
        recording(&recorder);
        let start = now_ms();
        send(47_312, 0, 60, 100, Duration::from_millis(100));
        recorder.progress(&CaptureStats::default());
        let now = now_ms();
        let oldest = status(&recorder).oldest_ms.expect("packets held");
        assert!(
            now - oldest >= 2_000,
            "the window is {} ms, under its 2 s",
            now - oldest
        );
        assert!(
            oldest > start + 1_000,
            "the window reaches back {} ms: files older than 2 s (and a slice) were kept",
            now - oldest
        );
        recorder.apply(None);
    }

    #[test]
    fn assembly_takes_the_window_across_files_filtered_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "a", &[(1_000, 53), (2_000, 53), (3_000, 80)]);
        let b = file(dir.path(), "b", &[(4_000, 53), (5_000, 53), (6_000, 53)]);
        // A torn last record (the file being written) is read as far as it is whole.
        let mut torn = std::fs::read(&b).unwrap();
        torn.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&b, torn).unwrap();
        let filters =
            validate_filters(&serde_json::from_str::<Vec<_>>(r#"[{"protocol":"UDP","remotePort":"53"}]"#).unwrap())
                .unwrap();
        let out = dir.path().join("out.cap");
        let window = Window {
            from_ms: 2_000,
            to_ms: 5_000,
            filters: &filters,
            snaplen: 40,
            max_bytes: None,
        };
        let done = assemble(&[a, b], &out, &window).unwrap();
        assert_eq!(read(&out), vec![(2_000, 40), (4_000, 40), (5_000, 40)]);
        assert_eq!(done.stats.packets_captured, 3);
        assert_eq!(done.stats.file_size_in_bytes, std::fs::metadata(&out).unwrap().len());
    }

    #[test]
    fn assembly_stops_at_the_byte_limit_and_an_empty_window_is_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "a", &[(1_000, 53), (2_000, 53), (3_000, 53)]);
        let out = dir.path().join("out.cap");
        let all = Window {
            from_ms: 0,
            to_ms: 10_000,
            filters: &[],
            snaplen: 0,
            max_bytes: Some(24 + 2 * (16 + 46)),
        };
        let done = assemble(std::slice::from_ref(&a), &out, &all).unwrap();
        assert!(done.max_bytes_reached);
        assert_eq!(read(&out).len(), 2);
        let none = Window {
            from_ms: 20_000,
            to_ms: 30_000,
            ..all
        };
        let done = assemble(&[a], &out, &none).unwrap();
        assert_eq!(done.stats.packets_captured, 0);
        assert!(read(&out).is_empty());
    }
}
