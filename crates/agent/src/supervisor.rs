//! The captures this host runs, and the book of their latest reports.
//!
//! Each capture runs on its own plain thread (STYLE 25: the packet loop never
//! touches the runtime), which opens the capture, reports `Running` the moment
//! it is open, counters about every [`STATS_INTERVAL_MS`], and hands its
//! outcome to a tracked async task; that task reports the end and hands the
//! file to the spool. Nothing here waits for the controller: a capture ends on
//! its limits whether or not the channel is up.
//!
//! Uploads: every capture records itself in the [`Spool`]'s journal when it
//! starts (and at each ring file it closes); each of its files enters the
//! spool as it closes (a continuous capture's while it runs), and one upload
//! task takes the spooled files in turn, retrying while storage or the
//! controller is away (the files wait, across restarts) and giving up only on
//! a permanent refusal (the file is kept). The capture's report carries the
//! upload's state, derived from a tally of its files; the capture is finished
//! once it ended and its files are all stored or given up.
//!
//! Faults: a capture the engine ends with an error (a full disk) keeps what
//! it wrote: its last file is repaired and uploaded. A capture journaled as
//! running when the agent starts was cut by the agent's death: it is taken
//! up (`recovery`) before the channel opens, so the hello reports it
//! `Running` (resumed in a new file) or `Stopped` with `AgentStopped`, never
//! as lost.
//!
//! The book keeps one report per capture, the latest (reports carry the whole
//! state, so older ones are worthless once replaced). The channel sends what
//! changed since it last looked and tells the book what went out; a capture
//! leaves the book once its last report went out on a welcomed connection.
//! Invariants: a capture id is run at most once (a repeated `Start` is a no-op,
//! also for a while after the capture left the book); the book's lock is never
//! held across an await or while a capture opens.

use std::collections::{HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netwatch_api::agent::{
    AgentCaptureState, CaptureReport, LIVE_PREFIX, ReportStats, STATS_INTERVAL_MS, StartCapture, UploadProgress,
};
use netwatch_api::error::ApiError;
use netwatch_api::packet_capture::{
    AlertWindow, CapturePath, PacketCapture, PcError, StopReason, UploadState, ValidatedCapture,
};
use netwatch_capture::output::ring_name;
use netwatch_capture::session::DEFAULT_NICE;
use netwatch_capture::{
    Capture, CaptureConfig, CaptureError, CaptureOutcome, CaptureStats, ClosedFile, Interface, Limits, OpenError,
    OutputSpec, RingConfig, Rotation,
};
use tokio::sync::{Notify, futures::Notified, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::live::{LiveSource, View};
use crate::recorder::{self, Hold, Recorder};
use crate::recovery;
use crate::remote::Backoff;
use crate::spool::{Spool, SpooledCapture, Ticket};
use crate::upload::{UploadError, Uploader, upload_bytes};
use crate::{error_chain, now_ms};

/// First wait before an upload is tried again; doubles up to [`UPLOAD_RETRY_CAP`].
const UPLOAD_RETRY_FIRST: Duration = Duration::from_millis(500);
const UPLOAD_RETRY_CAP: Duration = Duration::from_secs(30);

/// How many finished captures are remembered after they left the book, so that a
/// `Start` repeated by a controller that missed their end does not run them
/// again (and overwrite their file). Ids are ~200 bytes: ~200 KiB at most.
const DONE_REMEMBERED: usize = 1024;

/// The least time between two counter reports of one capture. The engine calls
/// back every second already; nine tenths of the interval lets its scheduling
/// jitter through while a faster engine would still be throttled.
const STATS_MIN_GAP: Duration = Duration::from_millis(STATS_INTERVAL_MS * 9 / 10);

/// A capture around an alert is written this long after its window's end,
/// when the recorder has written its last packets (the engine hands a block
/// over within 20 ms).
const WINDOW_GRACE_MS: i64 = 1_000;

/// File names made from capture names are cut to this many bytes (well below
/// NAME_MAX, 255, with room for `_{created_ms}.cap` and ring suffixes).
const MAX_NAME_LEN: usize = 100;

/// Where and how captures run on this host.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `{data_dir}/captures`: every capture file is under it.
    pub(crate) captures_dir: PathBuf,
    pub(crate) interface: Interface,
    /// What `--metrics-listen` serves.
    pub(crate) metrics: crate::metrics::Metrics,
    /// The host's flight recorder, which captures around an alert read.
    pub(crate) recorder: Recorder,
}

/// The host's captures; cheap to clone (one shared state).
#[derive(Debug, Clone)]
pub(crate) struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    uploader: Uploader,
    spool: Spool,
    /// Spooled files waiting for the upload task, oldest first.
    queue: Mutex<VecDeque<Ticket>>,
    /// Woken when a file joins the queue.
    queued: Notify,
    book: Mutex<Book>,
    /// Woken when a report changed (one waiter: the channel).
    changed: Notify,
    tracker: TaskTracker,
    /// Cancelled on shutdown: uploads give up.
    cancel: CancellationToken,
    /// The agent stops to restart (a forced upgrade): captures stopped now are
    /// not ended but left journaled as running, to resume after the restart.
    suspending: AtomicBool,
    /// Live views being sent, by stream: cancelled by `LiveStop`.
    live_views: Mutex<HashMap<String, CancellationToken>>,
}

#[derive(Debug, Default)]
struct Book {
    captures: HashMap<String, Slot>,
    /// Ids of captures that left the book, oldest first.
    done: VecDeque<String>,
}

#[derive(Debug)]
struct Slot {
    /// `None` while the capture is being opened.
    report: Option<CaptureReport>,
    /// Counts the report's versions, so that "sent" is only taken for the one sent.
    seq: u64,
    /// Changed since the channel last took it.
    dirty: bool,
    /// No report will follow this one.
    finished: bool,
    /// The capture ended: the report's state is its last.
    ended: bool,
    /// Its files' upload, when it has a storage account.
    upload: Option<Tally>,
    /// Set to stop the capture thread (`ManualStop`).
    stop: Arc<AtomicBool>,
    /// The ring's fill in the last second, 0 to 1 (metrics).
    ring_fill: f64,
    /// Where live views read its packets, while its file is being written.
    live: Option<Arc<LiveSource>>,
}

impl Slot {
    fn new(stop: Arc<AtomicBool>, upload: bool) -> Self {
        Self {
            report: None,
            seq: 0,
            dirty: false,
            finished: false,
            ended: false,
            upload: upload.then(Tally::default),
            stop,
            ring_fill: 0.0,
            live: None,
        }
    }

    /// Writes the upload's state into the report and works out whether the
    /// capture is finished.
    fn settle(&mut self) {
        let upload = self.upload.as_ref().map(|tally| tally.state(self.ended));
        if let Some(report) = &mut self.report {
            match &upload {
                Some((state, progress)) => {
                    report.upload = Some(*state);
                    report.upload_progress = Some(progress.clone());
                    if *state == UploadState::Failed && !report.errors.contains(&PcError::StorageFailed) {
                        report.errors.push(PcError::StorageFailed);
                        report.message = match (report.message.take(), &progress.message) {
                            (Some(earlier), Some(failed)) => Some(format!("{earlier}; {failed}")),
                            (earlier, failed) => earlier.or_else(|| failed.clone()),
                        };
                    }
                }
                None => {
                    report.upload = None;
                    report.upload_progress = None;
                }
            }
        }
        self.finished = self.ended
            && upload
                .as_ref()
                .is_none_or(|(state, _)| matches!(state, UploadState::Succeeded | UploadState::Failed));
    }
}

/// Where the upload of one capture's files is.
#[derive(Debug, Default, Clone)]
struct Tally {
    /// Files spooled, and of them stored.
    files: u32,
    stored: u32,
    bytes: u64,
    bytes_stored: u64,
    /// Bytes of the file being uploaded now.
    bytes_current: u64,
    uploading: bool,
    /// Why the upload waits (storage or the controller unreachable).
    waiting: Option<String>,
    /// Why a file was given up.
    failed: Option<String>,
}

impl Tally {
    fn state(&self, ended: bool) -> (UploadState, UploadProgress) {
        let state = if self.failed.is_some() {
            UploadState::Failed
        } else if self.waiting.is_some() {
            UploadState::Retrying
        } else if self.uploading {
            UploadState::Uploading
        } else if ended && self.stored == self.files {
            UploadState::Succeeded
        } else {
            UploadState::Pending
        };
        let progress = UploadProgress {
            // 100 once Succeeded only: while the capture runs nothing may be
            // spooled yet, and that is not a finished upload (issue 12).
            percent: state.percent(self.bytes_stored + self.bytes_current, self.bytes),
            files_pending: self.files - self.stored,
            message: self.failed.clone().or_else(|| self.waiting.clone()),
        };
        (state, progress)
    }
}

impl Supervisor {
    /// The supervisor, with the upload task running; files left in the spool
    /// by an earlier run of the agent are taken up again first.
    pub(crate) fn new(settings: Settings, uploader: Uploader, spool: Spool, cancel: CancellationToken) -> Self {
        let supervisor = Self {
            inner: Arc::new(Inner {
                settings,
                uploader,
                spool,
                queue: Mutex::new(VecDeque::new()),
                queued: Notify::new(),
                book: Mutex::new(Book::default()),
                changed: Notify::new(),
                tracker: TaskTracker::new(),
                cancel,
                suspending: AtomicBool::new(false),
                live_views: Mutex::new(HashMap::new()),
            }),
        };
        supervisor.recover();
        supervisor.inner.settings.recorder.drop_unclaimed_holds();
        let uploads = supervisor.clone();
        supervisor
            .inner
            .tracker
            .spawn(async move { uploads.upload_task().await }.instrument(tracing::info_span!("uploads")));
        supervisor
    }

    /// Takes up what the spool holds: captures that ended come back to the
    /// book with their last report; captures that were running when the
    /// agent died have the file they were writing repaired and spooled, then
    /// end or resume (`recovery`); their files queue for upload.
    fn recover(&self) {
        let (captures, mut tickets) = self.inner.spool.scan();
        if captures.is_empty() && tickets.is_empty() {
            return;
        }
        tracing::info!(
            captures = captures.len(),
            files = tickets.len(),
            "taking up the spool left by an earlier run"
        );
        // Files are repaired and hashed before the book is locked.
        let mut slots = Vec::new();
        let mut resumed = Vec::new();
        for capture in captures {
            let id = capture.capture_id.clone();
            let mut slot = Slot::new(Arc::new(AtomicBool::new(false)), capture.uploads());
            let report = match (capture.report.clone(), capture.start.clone()) {
                (Some(report), _) => report,
                (None, Some(start)) => match self.take_up(capture, start, &mut tickets) {
                    TakenUp::Ended(report) => report,
                    TakenUp::Resumed(plan) => {
                        slot.report = Some(plan.running_report());
                        resumed.push((*plan, Arc::clone(&slot.stop)));
                        slot.dirty = true;
                        slots.push((id, slot));
                        continue;
                    }
                },
                // Recorded by an agent that kept no journal: the file it was
                // writing is unknown; the files it had closed upload.
                (None, None) => error_report(
                    &id,
                    None,
                    PcError::AgentStopped,
                    "the agent stopped while the capture ran; the files it had closed are uploaded".to_owned(),
                ),
            };
            slot.report = Some(report);
            slot.ended = true;
            slot.dirty = true;
            slots.push((id, slot));
        }
        tickets.sort_by(|a, b| (&a.capture_id, a.seq).cmp(&(&b.capture_id, b.seq)));
        {
            let mut book = self.book();
            book.captures.extend(slots);
            let mut queue = self.queue();
            for ticket in tickets {
                if let Some(tally) = book
                    .captures
                    .get_mut(&ticket.capture_id)
                    .and_then(|slot| slot.upload.as_mut())
                {
                    tally.files += 1;
                    tally.bytes += ticket.size;
                    if let Some(reason) = &ticket.failed {
                        tally.stored += 1;
                        tally.failed = Some(reason.clone());
                        continue;
                    }
                }
                if ticket.failed.is_none() {
                    queue.push_back(ticket);
                }
            }
            for slot in book.captures.values_mut() {
                slot.settle();
            }
        }
        for (plan, stop) in resumed {
            let span = tracing::info_span!("capture", id = %plan.id);
            match plan.alert.clone() {
                Some(window) => self.launch_window(plan, window, stop, span),
                None => self.launch(plan, stop, span),
            }
        }
    }

    /// A capture that was running when the agent died: repairs the file it
    /// was writing, spools it (adding its ticket to `tickets`), and ends the
    /// capture or plans its next run.
    fn take_up(&self, mut record: SpooledCapture, start: StartCapture, tickets: &mut Vec<Ticket>) -> TakenUp {
        let id = record.capture_id.clone();
        let span = tracing::info_span!("capture", id = %id);
        let _entered = span.enter();
        let plan = match Plan::new(&self.inner.settings, start) {
            Ok(plan) => plan,
            Err(error) => {
                // It validated when it started: an agent of another version wrote it.
                tracing::warn!(error = %error_chain(&error), "journal record of an interrupted capture unusable; left");
                return TakenUp::Ended(error_report(&id, None, PcError::AgentStopped, error_chain(&error)));
            }
        };
        if plan.alert.is_some() {
            return self.take_up_window(record, plan);
        }
        let seq = record.seq;
        let path = plan.file_of(seq);
        let recovered = match recovery::repair_cut_file(&path) {
            Ok(stats) => {
                tracing::info!(file = %path.display(), seq, packets = stats.packets_captured,
                    "recovered the file the capture was writing when the agent stopped");
                record.closed = recovery::add(record.closed, stats);
                Ok(())
            }
            Err(error) => {
                let chain = error_chain(&error);
                tracing::warn!(file = %path.display(), error = %chain,
                    "the file the capture was writing when the agent stopped cannot be taken up: left as it is, not uploaded");
                Err(chain)
            }
        };
        if recovered.is_ok() && plan.upload && !tickets.iter().any(|t| t.capture_id == id && t.seq == seq) {
            let spool = &self.inner.spool;
            let admitted = spool
                .link(&id, seq, &path)
                .and_then(|_| spool.admit(&id, seq, (!plan.keep_local).then(|| path.clone()), None));
            match admitted {
                Ok(ticket) => tickets.push(ticket),
                Err(error) => {
                    tracing::warn!(seq, error = %error_chain(&error), "the recovered file could not be spooled; left")
                }
            }
        }
        let started_ms = record.started_ms.unwrap_or(plan.created_ms);
        let now = now_ms();
        let limits = plan.config.limits;
        let next = recovery::next_run(
            started_ms,
            limits.time_limit.unwrap_or_default(),
            limits.max_bytes,
            record.closed.file_size_in_bytes,
            now,
        );
        if let recovery::Next::Resume { time_left, bytes_left } = next {
            let mut next_record = record.clone();
            next_record.resumed += 1;
            next_record.seq = seq + 1;
            next_record.started_ms = Some(started_ms);
            match self.inner.spool.save_capture(&next_record) {
                Ok(()) => {
                    tracing::info!(
                        seq = next_record.seq,
                        time_left_s = time_left.as_secs(),
                        "resuming the capture in a new file"
                    );
                    return TakenUp::Resumed(Box::new(plan.resume(next_record, time_left, bytes_left)));
                }
                // Without its journal a further restart would not find its file: end it.
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "cannot journal the capture's next run; it ends")
                }
            }
        }
        let file = match (&recovered, plan.upload) {
            (Ok(()), true) => {
                "the file it was writing was recovered up to its last whole packet and is uploaded".to_owned()
            }
            (Ok(()), false) => "the file it was writing was recovered up to its last whole packet".to_owned(),
            (Err(error), _) => format!("the file it was writing could not be recovered ({error})"),
        };
        let report = CaptureReport {
            capture_id: id,
            state: AgentCaptureState::Stopped,
            started_ms: Some(started_ms),
            stop_reason: Some(StopReason::Other(recovery::AGENT_STOPPED.to_owned())),
            errors: vec![PcError::AgentStopped],
            message: Some(format!(
                "the agent stopped while the capture ran and came back after its limits were used up: {file}"
            )),
            stats: record.closed,
            upload: None,
            upload_progress: None,
        };
        tracing::info!(packets = record.closed.packets_captured, "interrupted capture ended");
        record.report = Some(report.clone());
        if let Err(error) = self.inner.spool.save_capture(&record) {
            tracing::warn!(error = %error_chain(&error), "could not record the capture's end in the spool");
        }
        TakenUp::Ended(report)
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Ticket>> {
        self.inner.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // A panic elsewhere while holding the lock left a consistent map (every
        // change is one insert or assignment): keep going with it.
        self.inner.book.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a capture, unless this host already has it. Returns at once: the
    /// capture opens on its own thread and reports `Running` or `Error`.
    pub(crate) fn start(&self, start: StartCapture) {
        let id = start.capture_id.clone();
        let span = tracing::info_span!("capture", id = %id);
        let _entered = span.enter();
        let stop = Arc::new(AtomicBool::new(false));
        {
            let mut book = self.book();
            if book.captures.contains_key(&id) || book.done.contains(&id) {
                tracing::debug!("start of a capture this host already has: ignored");
                return;
            }
            book.captures
                .insert(id.clone(), Slot::new(Arc::clone(&stop), start.upload.is_some()));
        }
        let plan = match Plan::new(&self.inner.settings, start) {
            Ok(plan) => plan,
            Err(error) => {
                tracing::info!(error = %error, "capture refused: invalid parameters");
                self.end(
                    error_report(&id, None, PcError::CaptureFailed, error_chain(&error)),
                    false,
                );
                return;
            }
        };
        match plan.alert.clone() {
            Some(window) => self.launch_window(plan, window, stop, span.clone()),
            None => self.launch(plan, stop, span.clone()),
        }
    }

    /// A capture around an alert that was waiting for its window's end when
    /// the agent stopped: it goes on with the files its hold kept (and what
    /// the recorder records from now on), saying that the agent's downtime is
    /// missing from it; with no hold left it ends.
    fn take_up_window(&self, record: SpooledCapture, mut plan: Plan) -> TakenUp {
        let id = record.capture_id.clone();
        let window = plan.alert.clone().expect("a capture around an alert");
        let Some(mut hold) = self.inner.settings.recorder.adopt(&id, window.from_ms()) else {
            tracing::warn!("a capture around an alert was cut by the agent's stop and its held files are gone");
            let message = "the agent stopped during the capture's window and what it held is gone".to_owned();
            return TakenUp::Ended(error_report(&id, record.started_ms, PcError::AgentStopped, message));
        };
        hold.covered_from_ms = record.started_ms.unwrap_or(window.from_ms());
        tracing::info!("taking up a capture around an alert cut by the agent's stop");
        plan.resumed = Some(
            "the agent stopped during the capture's window and took it up when it restarted: the packets of its \
             downtime are missing from the file"
                .to_owned(),
        );
        plan.journal = Arc::new(Mutex::new(record));
        plan.hold = Some(hold);
        TakenUp::Resumed(Box::new(plan))
    }

    /// The host's flight recorder.
    pub(crate) fn recorder(&self) -> &Recorder {
        &self.inner.settings.recorder
    }

    /// Runs a capture around an alert: from the flight recorder when it
    /// records (the window held at once, assembled once its end has passed),
    /// or as a plain capture from now to the window's end when it does not.
    fn launch_window(&self, mut plan: Plan, window: AlertWindow, stop: Arc<AtomicBool>, span: tracing::Span) {
        let hold = plan
            .hold
            .take()
            .or_else(|| self.inner.settings.recorder.hold(&plan.id, window.from_ms()));
        let Some(hold) = hold else {
            let left = u64::try_from(window.to_ms() - now_ms()).unwrap_or(0).max(1000);
            plan.config.limits.time_limit = Some(Duration::from_millis(left));
            plan.remark = Some(format!(
                "no flight recorder records on this host: the capture covers the alert from its arrival on, not \
                 the {} s before it (netwatch network watcher flight-recorder set)",
                window.seconds_before
            ));
            tracing::info!(
                seconds = left / 1000,
                "capture around an alert without a flight recorder: from now on"
            );
            self.launch(plan, stop, span);
            return;
        };
        let supervisor = self.clone();
        self.inner.tracker.spawn(
            async move {
                let covered_from_ms = hold.covered_from_ms;
                // Journaled: an agent restarted before the window's end takes it up.
                let record = {
                    let mut journal = lock(&plan.journal);
                    journal.started_ms = Some(covered_from_ms);
                    journal.clone()
                };
                let spool = supervisor.inner.spool.clone();
                match tokio::task::spawn_blocking(move || spool.save_capture(&record)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::warn!(error = %error_chain(&error),
                        "could not journal the capture around an alert (a restart would lose it)"),
                    Err(join) => tracing::warn!(error = %join, "journaling the capture around an alert panicked"),
                }
                let mut report = plan.running_report();
                report.stats.covered_from_ms = Some(covered_from_ms);
                supervisor.publish(report);
                tracing::info!(
                    seconds_before = (window.fired_ms - covered_from_ms) / 1000,
                    seconds_after = window.seconds_after,
                    "capture around an alert: the recording is held from the window's start"
                );
                // The recorder's last packets reach its file within the engine's
                // block timeout; a second more is plenty.
                let end = window.to_ms();
                let manual = loop {
                    if stop.load(Ordering::Relaxed) {
                        break true;
                    }
                    let left = end + WINDOW_GRACE_MS - now_ms();
                    if left <= 0 {
                        break false;
                    }
                    tokio::time::sleep(Duration::from_millis(u64::try_from(left.min(100)).unwrap_or(100))).await;
                };
                let to_ms = if manual { now_ms().min(end) } else { end };
                supervisor
                    .finish_window(plan, hold, window, covered_from_ms, to_ms, manual)
                    .await;
            }
            .instrument(span),
        );
    }

    /// Writes a capture around an alert from what its hold kept, and ends it.
    async fn finish_window(
        &self,
        plan: Plan,
        hold: Hold,
        window: AlertWindow,
        covered_from_ms: i64,
        to_ms: i64,
        manual: bool,
    ) {
        let out = plan.file.clone();
        let captures_dir = self.inner.settings.captures_dir.clone();
        let filters = plan.config.filters.clone();
        let snaplen = plan.config.snaplen;
        let max_bytes = plan.config.limits.max_bytes;
        let assembled = tokio::task::spawn_blocking(move || {
            if let Some(dir) = out.parent() {
                make_dirs_beneath(&captures_dir, dir).map_err(|error| error_chain(&error))?;
            }
            let files = hold.files();
            let part = recorder::Window {
                from_ms: window.from_ms(),
                to_ms,
                filters: &filters,
                snaplen,
                max_bytes,
            };
            let done = recorder::assemble(&files, &out, &part)
                .map_err(|error| format!("could not write the capture file {}: {error}", out.display()));
            drop(hold);
            done
        })
        .await;
        let id = plan.id.clone();
        let started_ms = Some(covered_from_ms);
        match assembled {
            Ok(Ok(done)) => {
                let mut stats = done.stats;
                stats.covered_from_ms = Some(covered_from_ms);
                let reason = if done.max_bytes_reached {
                    StopReason::MaxBytesExceeded
                } else if manual {
                    StopReason::ManualStop
                } else {
                    StopReason::TimeExceeded
                };
                tracing::info!(
                    packets = stats.packets_captured,
                    bytes = stats.file_size_in_bytes,
                    reason = reason.as_str(),
                    "capture around an alert written from the flight recorder"
                );
                let mut report = CaptureReport {
                    capture_id: id,
                    state: AgentCaptureState::Stopped,
                    started_ms,
                    stop_reason: Some(reason),
                    errors: vec![],
                    message: None,
                    stats,
                    upload: None,
                    upload_progress: None,
                };
                plan.note(&mut report);
                let file = plan.file.clone();
                self.end_with_files(
                    &plan,
                    report,
                    Some(SpooledFile {
                        seq: 0,
                        path: file,
                        sha256: None,
                    }),
                )
                .await;
            }
            Ok(Err(message)) => {
                tracing::warn!(error = %message, "capture around an alert failed");
                let mut report = error_report(&id, started_ms, PcError::LocalFileFailed, message);
                plan.note(&mut report);
                self.end_with_files(&plan, report, None).await;
            }
            Err(join) => {
                tracing::error!(error = %join, "writing a capture around an alert panicked");
                let message = "writing the capture file stopped unexpectedly (a bug: see the agent's log)".to_owned();
                let report = error_report(&id, started_ms, PcError::InternalError, message);
                self.end_with_files(&plan, report, None).await;
            }
        }
    }

    /// Runs one run of a capture (its first, or one resumed after a restart)
    /// on its own thread, and its end on a tracked task.
    fn launch(&self, plan: Plan, stop: Arc<AtomicBool>, span: tracing::Span) {
        let (done_tx, done_rx) = oneshot::channel();
        let live = Arc::new(LiveSource::new(
            plan.id.clone(),
            plan.config.interface.to_string(),
            plan.file.clone(),
            plan.continuous,
            Arc::clone(&plan.journal),
        ));
        if let Some(slot) = self.book().captures.get_mut(&plan.id) {
            slot.live = Some(Arc::clone(&live));
        }
        let supervisor = self.clone();
        let thread_span = span.clone();
        let run = Run {
            config: plan.config.clone(),
            journal: Arc::clone(&plan.journal),
            upload: plan.upload,
            prior: plan.prior,
            report: plan.running_report(),
        };
        // Ring files closed while the capture runs, to be spooled.
        let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel();
        let spooling = plan.upload.then(|| {
            let supervisor = self.clone();
            let id = plan.id.clone();
            let keep_local = plan.keep_local;
            self.inner
                .tracker
                .spawn(async move { supervisor.spool_closed_files(id, keep_local, closed_rx).await })
        });
        let spawned = std::thread::Builder::new()
            .name("nw-capture".to_owned())
            .spawn(move || {
                let _entered = thread_span.enter();
                let ended = supervisor.capture_thread(run, &stop, closed_tx);
                // The receiver is gone only when the runtime shut down under us.
                let _ = done_tx.send(ended);
            });
        let ended = async move {
            match spawned {
                Ok(_detached) => done_rx.await.unwrap_or(Ended::Panicked),
                Err(error) => Ended::NotOpened(StartError::Spawn(error)),
            }
        };
        let supervisor = self.clone();
        self.inner.tracker.spawn(
            async move {
                let ended = ended.await;
                live.finish();
                // Every ring file closed before the end is in the spool first.
                if let Some(spooling) = spooling {
                    let _ = spooling.await;
                }
                if supervisor.inner.suspending.load(Ordering::Relaxed) && matches!(ended, Ended::Ran { .. }) {
                    // Its file is whole and synced; the journal still says it
                    // runs: the restarted agent spools the file and resumes it.
                    tracing::info!("capture suspended for the agent's restart: it resumes after");
                    return;
                }
                supervisor.finish(plan, ended).await;
            }
            .instrument(span),
        );
    }

    /// Spools the ring files a capture closes while it runs, as they come.
    async fn spool_closed_files(
        &self,
        id: String,
        keep_local: bool,
        mut closed: tokio::sync::mpsc::UnboundedReceiver<SpooledFile>,
    ) {
        while let Some(file) = closed.recv().await {
            self.admit(&id, file.seq, (!keep_local).then_some(file.path), file.sha256)
                .await;
        }
    }

    /// Makes the ticket of a file linked into the spool (with its SHA-256
    /// when the capture worked it out) and queues it.
    async fn admit(&self, id: &str, seq: u32, original: Option<PathBuf>, sha256: Option<String>) {
        let spool = self.inner.spool.clone();
        let capture = id.to_owned();
        let admitted = tokio::task::spawn_blocking(move || spool.admit(&capture, seq, original, sha256)).await;
        match admitted {
            Ok(Ok(ticket)) => {
                // Else the uploader hashes it (a file taken up after a restart).
                let sha256_from_capture = !ticket.sha256.is_empty();
                tracing::info!(seq, size = ticket.size, sha256_from_capture, "file spooled for upload");
                self.update_upload(id, |tally| {
                    tally.files += 1;
                    tally.bytes += ticket.size;
                });
                self.queue().push_back(ticket);
                self.inner.queued.notify_one();
            }
            Ok(Err(error)) => {
                let chain = error_chain(&error);
                tracing::warn!(seq, error = %chain, "file could not be spooled");
                self.update_upload(id, |tally| tally.failed = Some(format!("spool file {seq}: {chain}")));
            }
            Err(join) => tracing::error!(seq, error = %join, "spooling a file panicked"),
        }
    }

    /// Changes the tally of a capture's upload and reports it.
    fn update_upload(&self, id: &str, change: impl FnOnce(&mut Tally)) {
        {
            let mut book = self.book();
            let Some(slot) = book.captures.get_mut(id) else {
                return;
            };
            let Some(tally) = slot.upload.as_mut() else {
                return;
            };
            let before = tally.state(slot.ended);
            change(tally);
            if tally.state(slot.ended) == before {
                return;
            }
            slot.settle();
            if slot.report.is_none() {
                return;
            }
            slot.seq += 1;
            slot.dirty = true;
        }
        self.inner.changed.notify_one();
    }

    /// Uploads spooled files one at a time, oldest first, until shutdown.
    async fn upload_task(&self) {
        let cancel = self.inner.cancel.clone();
        let mut backoff = Backoff::new(UPLOAD_RETRY_FIRST, UPLOAD_RETRY_CAP);
        loop {
            let next = self.queue().front().cloned();
            let Some(mut ticket) = next else {
                tokio::select! {
                    () = self.inner.queued.notified() => continue,
                    () = cancel.cancelled() => return,
                }
            };
            let id = ticket.capture_id.clone();
            let base = upload_bytes(&ticket);
            self.update_upload(&id, |tally| {
                tally.uploading = true;
                tally.bytes_current = base;
            });
            let supervisor = self.clone();
            let progress_id = id.clone();
            let mut counted = base;
            let mut progress = move |bytes: u64| {
                // Counted as parts are stored: `rate()` is the upload's throughput.
                if bytes > counted {
                    supervisor.metrics().upload_bytes.inc_by(bytes - counted);
                    counted = bytes;
                }
                supervisor.update_upload(&progress_id, |tally| tally.bytes_current = bytes);
            };
            let result = self
                .inner
                .uploader
                .upload(&self.inner.spool, &mut ticket, &cancel, &mut progress)
                .await;
            match result {
                Ok(done) => {
                    tracing::info!(seq = ticket.seq, size = done.size, storage_path = %done.storage_path, "file stored");
                    self.inner.spool.done(&ticket);
                    self.queue().pop_front();
                    backoff.reset();
                    self.update_upload(&id, |tally| {
                        tally.uploading = false;
                        tally.waiting = None;
                        tally.stored += 1;
                        tally.bytes_stored += ticket.size;
                        tally.bytes_current = 0;
                    });
                }
                Err(UploadError::Cancelled) => return,
                Err(error) if !error.is_permanent() => {
                    self.metrics().upload_failures.inc();
                    let chain = error_chain(&error);
                    let delay = backoff.next_delay();
                    tracing::info!(seq = ticket.seq, delay_ms = delay.as_millis(), error = %chain,
                        "upload failed; the file stays in the spool and is tried again");
                    let spool = &self.inner.spool;
                    let message = format!(
                        "storage or the controller is unreachable; {} file(s), {} MiB of the {} MiB spool, wait on the host: {chain}",
                        self.queue().len(),
                        spool.used_bytes() / (1024 * 1024),
                        spool.max_bytes() / (1024 * 1024),
                    );
                    // Keep what the attempt stored (its receipts are in the ticket).
                    if let Some(front) = self.queue().front_mut() {
                        *front = ticket;
                    }
                    self.update_upload(&id, |tally| {
                        tally.uploading = false;
                        tally.waiting = Some(message);
                    });
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => return,
                    }
                }
                Err(error) => {
                    self.metrics().upload_failures.inc();
                    let chain = error_chain(&error);
                    tracing::warn!(seq = ticket.seq, error = %chain, "upload given up; the file is kept in the spool");
                    ticket.failed = Some(chain.clone());
                    if let Err(error) = self.inner.spool.save(&ticket) {
                        tracing::warn!(error = %error_chain(&error), "could not mark the spooled file failed");
                    }
                    self.queue().pop_front();
                    self.update_upload(&id, |tally| {
                        tally.uploading = false;
                        tally.waiting = None;
                        tally.stored += 1;
                        tally.failed = Some(chain);
                    });
                }
            }
        }
    }

    /// Stops a capture (`ManualStop`); its `Stopped` report follows when its
    /// thread has finalized the file. A capture this host does not run is ignored.
    /// `LiveStart`: sends capture `capture_id`'s packets from now on to the
    /// controller's `{LIVE_PREFIX}/{stream}` (live.rs), until it ends, the
    /// controller answers or `LiveStop`. A capture not running here (or one
    /// around an alert, written at its end) sends nothing: the viewer sees
    /// no packets and the controller says so.
    pub(crate) fn live_start(&self, stream: String, capture_id: &str) {
        let source = self.book().captures.get(capture_id).and_then(|slot| slot.live.clone());
        let Some(source) = source else {
            tracing::info!(
                capture = capture_id,
                stream,
                "live view of a capture not running here: not sent"
            );
            return;
        };
        let cancel = self.inner.cancel.child_token();
        lock(&self.inner.live_views).insert(stream.clone(), cancel.clone());
        let supervisor = self.clone();
        let capture = capture_id.to_owned();
        self.inner.tracker.spawn(async move {
            let path = format!("{LIVE_PREFIX}/{stream}");
            let body = View::new(source, cancel.clone()).into_body();
            tracing::info!(capture, stream, "live view started");
            match supervisor.inner.uploader.post_live(&path, body).await {
                Ok(()) => tracing::info!(capture, stream, "live view ended"),
                Err(error) => tracing::info!(capture, stream, error = %error_chain(&error), "live view ended"),
            }
            lock(&supervisor.inner.live_views).remove(&stream);
        });
    }

    /// `LiveStop`: the viewer of `stream` left.
    pub(crate) fn live_stop(&self, stream: &str) {
        if let Some(cancel) = lock(&self.inner.live_views).remove(stream) {
            cancel.cancel();
        }
    }

    pub(crate) fn stop(&self, id: &str) {
        match self.book().captures.get(id) {
            Some(slot) if !slot.finished => {
                tracing::info!(capture = %id, "stopping capture on request");
                slot.stop.store(true, Ordering::Relaxed);
            }
            _ => tracing::debug!(capture = %id, "stop of a capture not running here: ignored"),
        }
    }

    /// How many captures are running (opening or capturing, not ended):
    /// an upgrade waits for none.
    pub(crate) fn running(&self) -> usize {
        self.book().captures.values().filter(|slot| !slot.ended).count()
    }

    /// The agent's metrics.
    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.settings.metrics
    }

    /// The metrics as text, with every capture's counters and the spool's as they are now.
    pub(crate) fn metrics_text(&self) -> String {
        let views: Vec<crate::metrics::CaptureView> = self
            .book()
            .captures
            .values()
            .filter_map(|slot| {
                let report = slot.report.as_ref()?;
                Some(crate::metrics::CaptureView {
                    run_id: report.capture_id.clone(),
                    state: report.state,
                    stats: report.stats,
                    ring_fill: slot.ring_fill,
                })
            })
            .collect();
        let files = self.queue().len();
        self.metrics()
            .set_recorder(&self.inner.settings.recorder.status(), now_ms());
        self.metrics().render(&views, self.inner.spool.used_bytes(), files)
    }

    /// Notes capture `id`'s ring fill (metrics only: no report follows).
    fn note_ring_fill(&self, id: &str, fill: f64) {
        if let Some(slot) = self.book().captures.get_mut(id) {
            slot.ring_fill = fill;
        }
    }

    /// The latest report of every capture, for the hello.
    pub(crate) fn reports(&self) -> Vec<CaptureReport> {
        self.book()
            .captures
            .values()
            .filter_map(|slot| slot.report.clone())
            .collect()
    }

    /// Marks every report as not yet sent (a new connection sends them all).
    pub(crate) fn mark_all_dirty(&self) {
        for slot in self.book().captures.values_mut() {
            slot.dirty = slot.report.is_some();
        }
        self.inner.changed.notify_one();
    }

    /// The reports changed since the last call, each with its version for [`Supervisor::sent`].
    pub(crate) fn take_dirty(&self) -> Vec<(CaptureReport, u64)> {
        let mut book = self.book();
        book.captures
            .values_mut()
            .filter(|slot| slot.dirty)
            .filter_map(|slot| {
                slot.dirty = false;
                slot.report.clone().map(|report| (report, slot.seq))
            })
            .collect()
    }

    /// Version `seq` of `id`'s report went out on a welcomed connection: a
    /// finished capture whose last report that was leaves the book.
    pub(crate) fn sent(&self, id: &str, seq: u64) {
        let mut book = self.book();
        let last = book
            .captures
            .get(id)
            .is_some_and(|slot| slot.finished && slot.seq == seq && !slot.dirty);
        if last {
            book.captures.remove(id);
            self.inner.spool.remove_capture(id);
            if book.done.len() == DONE_REMEMBERED {
                book.done.pop_front();
            }
            book.done.push_back(id.to_owned());
            tracing::debug!(capture = %id, "final report delivered");
        }
    }

    /// Resolves when a report changed since the channel last took them.
    pub(crate) fn changed(&self) -> Notified<'_> {
        self.inner.changed.notified()
    }

    /// From now on, captures stopped by [`Supervisor::shutdown`] are left to
    /// resume after the agent's restart instead of ending (a forced upgrade).
    pub(crate) fn suspend_on_shutdown(&self) {
        self.inner.suspending.store(true, Ordering::Relaxed);
    }

    /// Stops every capture and waits up to `grace` for them to finalize their
    /// files (uploads are cancelled); logs what did not finish.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.inner.cancel.cancel();
        for slot in self.book().captures.values() {
            slot.stop.store(true, Ordering::Relaxed);
        }
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait()).await.is_err() {
            tracing::warn!(
                unfinished = self.inner.tracker.len(),
                grace_ms = grace.as_millis(),
                "captures or uploads did not finish before shutdown"
            );
        }
        let recorder = self.recorder().clone();
        let _ = tokio::task::spawn_blocking(move || recorder.shutdown()).await;
    }

    /// Replaces `report.capture_id`'s report (of a running capture) and wakes the channel.
    fn publish(&self, report: CaptureReport) {
        self.replace_report(report, |_| {});
    }

    /// The capture's last report: it ended; `upload` says whether its files
    /// upload (they do once spooled; a capture that never ran has none).
    fn end(&self, report: CaptureReport, upload: bool) {
        self.replace_report(report, |slot| {
            slot.ended = true;
            if !upload {
                slot.upload = None;
            }
        });
    }

    fn replace_report(&self, report: CaptureReport, change: impl FnOnce(&mut Slot)) {
        {
            let mut book = self.book();
            let Some(slot) = book.captures.get_mut(&report.capture_id) else {
                return;
            };
            slot.report = Some(report);
            change(slot);
            slot.settle();
            slot.seq += 1;
            slot.dirty = true;
        }
        self.inner.changed.notify_one();
    }

    /// The capture thread: journal, open, report `Running`, capture until a
    /// limit or a stop.
    fn capture_thread(
        &self,
        run: Run,
        stop: &AtomicBool,
        closed: tokio::sync::mpsc::UnboundedSender<SpooledFile>,
    ) -> Ended {
        let Run {
            config,
            journal,
            upload,
            prior,
            mut report,
        } = run;
        let file = match &config.output {
            OutputSpec::File(path) => path.clone(),
            OutputSpec::Ring { path, first_seq, .. } => ring_name(path, *first_seq),
            OutputSpec::Stdout => PathBuf::from("-"),
        };
        if let Some(dir) = file.parent()
            && let Err(error) = make_dirs_beneath(&self.inner.settings.captures_dir, dir)
        {
            return Ended::NotOpened(error);
        }
        let spool = &self.inner.spool;
        if upload && spool.is_full() {
            return Ended::NotOpened(StartError::SpoolFull {
                used: spool.used_bytes(),
                max: spool.max_bytes(),
            });
        }
        // Journaled before the file exists: an agent restarted from here on
        // finds the file, repairs and uploads it. A first run's start is
        // provisional until the capture is open (below); a resumed run keeps
        // the first's.
        let first_run = lock(&journal).started_ms.is_none();
        let mut record = {
            let mut journal = lock(&journal);
            journal.started_ms.get_or_insert_with(now_ms);
            journal.clone()
        };
        if let Err(error) = spool.save_capture(&record) {
            return Ended::NotOpened(StartError::Spool(error));
        }
        let interface = config.interface.to_string();
        let ring = matches!(config.output, OutputSpec::Ring { .. });
        let opening = Instant::now();
        let mut capture = match Capture::open(config) {
            Ok(capture) => capture,
            Err(source) => return Ended::NotOpened(StartError::Open { interface, source }),
        };
        if first_run {
            // Packets flow once `open` has bound the socket: the capture
            // starts now, so `captureStartTime` never reads earlier than the
            // moment it began (issue 12).
            let mut journal = lock(&journal);
            journal.started_ms = Some(now_ms_rounded_up());
            record = journal.clone();
        }
        if upload {
            // Each file's SHA-256 is ready when it closes: its upload then
            // reads it only to send it.
            capture.digest_files();
        }
        if ring {
            let spool = spool.clone();
            let id = record.capture_id.clone();
            let journal = Arc::clone(&journal);
            capture.on_file_closed(move |file: &ClosedFile<'_>| {
                if upload {
                    match spool.link(&id, file.seq, file.path) {
                        // The upload side makes its ticket and queues it, off this thread.
                        Ok(_) => drop(closed.send(SpooledFile {
                            seq: file.seq,
                            path: file.path.to_owned(),
                            sha256: file.sha256.map(|digest| crate::spool::hex(&digest)),
                        })),
                        Err(error) => {
                            tracing::warn!(seq = file.seq, error = %error_chain(&error), "closed file could not be spooled")
                        }
                    }
                }
                // The journal follows the ring to its next file.
                let record = {
                    let mut journal = lock(&journal);
                    journal.seq = file.seq + 1;
                    journal.closed = recovery::add(
                        prior,
                        ReportStats {
                            packets_captured: file.packets,
                            bytes_captured: file.bytes,
                            kernel_drops: 0,
                            file_size_in_bytes: file.file_bytes,
                            covered_from_ms: None,
                        },
                    );
                    journal.clone()
                };
                if let Err(error) = spool.save_capture(&record) {
                    tracing::warn!(seq = record.seq, error = %error_chain(&error),
                        "could not journal the ring's next file (a restart would not recover it)");
                }
            });
        }
        report.started_ms = record.started_ms;
        self.publish(report.clone());
        tracing::info!(file = %file.display(), open_ms = opening.elapsed().as_millis(), "capture running");
        if first_run && let Err(error) = spool.save_capture(&record) {
            tracing::warn!(error = %error_chain(&error),
                "could not journal when the capture started (a restart would say it started as it opened)");
        }
        let started_ms = report.started_ms;
        let mut last_stats = Instant::now();
        let outcome = capture.run(stop, &mut |stats: &CaptureStats| {
            if stats.ring_blocks > 0 {
                #[allow(clippy::cast_precision_loss, reason = "block counts are small")]
                let fill = stats.ring_peak_blocks as f64 / stats.ring_blocks as f64;
                self.note_ring_fill(&report.capture_id, fill);
            }
            if last_stats.elapsed() >= STATS_MIN_GAP {
                last_stats = Instant::now();
                report.stats = recovery::add(prior, report_stats(stats));
                self.publish(report.clone());
            }
        });
        Ended::Ran { started_ms, outcome }
    }

    /// After the thread: the last report, and the last file into the spool.
    async fn finish(&self, plan: Plan, ended: Ended) {
        let id = plan.id.clone();
        let (started_ms, outcome) = match ended {
            Ended::NotOpened(error) => {
                tracing::warn!(error = %error_chain(&error), "capture could not start");
                let started_ms = lock(&plan.journal).started_ms.filter(|_| plan.resumed.is_some());
                let mut report = error_report(&id, started_ms, error.pc_error(), error_chain(&error));
                report.stats = plan.prior;
                plan.note(&mut report);
                self.end_with_files(&plan, report, None).await;
                return;
            }
            Ended::Panicked => {
                tracing::error!("capture thread panicked");
                let message = "the capture thread stopped unexpectedly (a bug: see the agent's log)";
                let mut report = error_report(&id, None, PcError::InternalError, message.to_owned());
                report.stats = lock(&plan.journal).closed;
                plan.note(&mut report);
                // Ring files it closed are spooled: they still upload.
                self.end_with_files(&plan, report, None).await;
                return;
            }
            Ended::Ran { started_ms, outcome } => (started_ms, outcome),
        };
        let CaptureOutcome {
            result,
            stats,
            last_sha256,
            ..
        } = outcome;
        // A file cut by an error is repaired below, after its digest was taken.
        let last_sha256 = last_sha256.filter(|_| result.is_ok());
        // The file being written at the end: the capture's one file or the ring's last.
        let seq = lock(&plan.journal).seq;
        let last = plan.file_of(seq);
        let mut total = recovery::add(plan.prior, report_stats(&stats));
        let (mut report, keep_last) = match result {
            Ok(reason) => {
                tracing::info!(reason = %reason, packets = total.packets_captured, bytes = total.file_size_in_bytes, "capture stopped");
                let report = CaptureReport {
                    capture_id: id.clone(),
                    state: AgentCaptureState::Stopped,
                    started_ms,
                    stop_reason: Some(stop_reason(reason)),
                    errors: vec![],
                    message: None,
                    stats: total,
                    upload: None,
                    upload_progress: None,
                };
                (report, true)
            }
            Err(error) => {
                // What was written before the error is kept: a failed write
                // (a full disk) may have left half a record, so the file is
                // repaired, and counted again from what it holds.
                let path = last.clone();
                let repaired = tokio::task::spawn_blocking(move || recovery::repair_cut_file(&path)).await;
                let closed = lock(&plan.journal).closed;
                let kept = match repaired {
                    Ok(Ok(file)) => {
                        total = recovery::add(closed, file);
                        total.kernel_drops = plan.prior.kernel_drops + stats.kernel_drops;
                        file.packets_captured > 0
                    }
                    Ok(Err(cut)) => {
                        tracing::warn!(file = %last.display(), error = %error_chain(&cut), "the capture's last file cannot be kept");
                        total = closed;
                        false
                    }
                    Err(join) => {
                        tracing::error!(error = %join, "repairing the capture's last file panicked");
                        total = closed;
                        false
                    }
                };
                let (kind, message) = match &error {
                    CaptureError::Output(output) if output.is_disk_full() => {
                        let dir = last.parent().unwrap_or(&last).display().to_string();
                        let kept = if plan.upload { "kept and uploaded" } else { "kept" };
                        let message = format!(
                            "the disk is full ({dir}): the capture stopped; the {} packets written before are {kept}: {}",
                            total.packets_captured,
                            error_chain(&error)
                        );
                        (PcError::LocalFileFailed, message)
                    }
                    CaptureError::Output(_) => (PcError::LocalFileFailed, error_chain(&error)),
                    CaptureError::Poll(_) => (PcError::CaptureFailed, error_chain(&error)),
                };
                tracing::warn!(error = %message, packets = total.packets_captured, "capture failed");
                let mut report = error_report(&id, started_ms, kind, message);
                report.stats = total;
                (report, kept)
            }
        };
        plan.note(&mut report);
        let sha256 = last_sha256.map(|digest| crate::spool::hex(&digest));
        let last = keep_last.then_some(SpooledFile {
            seq,
            path: last,
            sha256,
        });
        self.end_with_files(&plan, report, last).await;
    }

    /// Ends a capture with its last report: spools `last`, when given, and keeps the report in the journal while any of its files wait
    /// for storage; forgets the capture's record when none does.
    async fn end_with_files(&self, plan: &Plan, report: CaptureReport, last: Option<SpooledFile>) {
        let id = &plan.id;
        let last = last.filter(|_| plan.upload);
        let spooled = plan.upload
            && self
                .book()
                .captures
                .get(id)
                .and_then(|slot| slot.upload.as_ref())
                .is_some_and(|tally| tally.files > 0);
        if last.is_none() && !spooled {
            self.inner.spool.remove_capture(id);
            self.end(report, false);
            return;
        }
        // The last report goes into the spool before the file does: an agent
        // restarted from here on reports the capture's end and uploads its files.
        let record = {
            let mut journal = lock(&plan.journal);
            journal.report = Some(report.clone());
            journal.clone()
        };
        if let Err(error) = self.inner.spool.save_capture(&record) {
            tracing::warn!(error = %error_chain(&error), "could not record the capture's end in the spool");
        }
        if let Some(SpooledFile { seq, path, sha256 }) = last {
            match self.inner.spool.link(id, seq, &path) {
                Ok(_) => self.admit(id, seq, (!plan.keep_local).then_some(path), sha256).await,
                Err(error) => {
                    let chain = error_chain(&error);
                    tracing::warn!(error = %chain, "the capture file could not be spooled");
                    self.update_upload(id, |tally| tally.failed = Some(chain));
                }
            }
        }
        self.end(report, true);
    }
}

/// What a capture thread needs of its plan.
#[derive(Debug)]
struct Run {
    config: CaptureConfig,
    journal: Arc<Mutex<SpooledCapture>>,
    upload: bool,
    /// Counters of the capture's files before this run.
    prior: ReportStats,
    /// The `Running` report to send once open.
    report: CaptureReport,
}

/// What [`Supervisor::take_up`] made of an interrupted capture.
#[derive(Debug)]
enum TakenUp {
    /// It ended: its last report.
    Ended(CaptureReport),
    /// It runs again.
    Resumed(Box<Plan>),
}

/// A journal's lock: a panic while holding it left a consistent record
/// (every change is a few assignments).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A capture file to spool: its number in the capture, where it is, and its
/// SHA-256 (hex) when the capture worked it out as it wrote the file.
#[derive(Debug)]
struct SpooledFile {
    seq: u32,
    path: PathBuf,
    sha256: Option<String>,
}

/// What the capture thread hands back.
#[derive(Debug)]
enum Ended {
    NotOpened(StartError),
    Ran {
        started_ms: Option<i64>,
        outcome: CaptureOutcome,
    },
    /// The thread died without a word (a panic in the engine).
    Panicked,
}

/// Why a capture did not start. Nothing was captured.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("create capture directory {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("open the capture on interface {interface}")]
    Open {
        interface: String,
        #[source]
        source: OpenError,
    },
    #[error(
        "{path} is a symbolic link: capture files stay in the agent's capture directory, so the capture was \
         not started; remove the link or choose another filePath"
    )]
    SymlinkInPath { path: String },
    #[error("start the capture thread")]
    Spawn(#[source] std::io::Error),
    #[error(
        "the agent's upload spool is full ({used} of {max} bytes wait for storage): the capture was not started; \
         the spooled files upload when storage is reachable again (or raise the agent's --spool-max)"
    )]
    SpoolFull { used: u64, max: u64 },
    #[error("record the capture in the upload spool")]
    Spool(#[source] crate::spool::SpoolError),
}

impl StartError {
    fn pc_error(&self) -> PcError {
        match self {
            StartError::CreateDir { .. }
            | StartError::SymlinkInPath { .. }
            | StartError::SpoolFull { .. }
            | StartError::Spool(_)
            | StartError::Open {
                source: OpenError::Output(_),
                ..
            } => PcError::LocalFileFailed,
            StartError::Open { .. } | StartError::Spawn(_) => PcError::CaptureFailed,
        }
    }
}

/// Parameters the controller sent that do not validate here.
#[derive(Debug, thiserror::Error)]
#[error("invalid capture parameters")]
struct InvalidCapture(#[source] ApiError);

/// A capture ready to run: its engine config, file and upload.
#[derive(Debug)]
struct Plan {
    id: String,
    config: CaptureConfig,
    /// The capture file (the first name of a ring's files); file `seq` is [`Plan::file_of`].
    file: PathBuf,
    /// When the controller created the capture (ms since the epoch).
    created_ms: i64,
    /// Its files go to a storage account.
    upload: bool,
    /// Several files: a ring (continuous or not).
    continuous: bool,
    /// The host keeps its copy of the files (`filePath` was given).
    keep_local: bool,
    /// The journal record, shared with the capture thread (which moves its
    /// `seq` on as ring files close).
    journal: Arc<Mutex<SpooledCapture>>,
    /// Counters of the capture's files before this run (earlier runs).
    prior: ReportStats,
    /// This run resumes the capture after an agent restart: why its files have a gap.
    resumed: Option<String>,
    /// A capture around an alert (`netwatch.alert`).
    alert: Option<AlertWindow>,
    /// Said in its reports' message, without an error (a capture around an
    /// alert with no recorder to take the seconds before it from).
    remark: Option<String>,
    /// A capture around an alert taken up after a restart: the hold it had.
    hold: Option<Hold>,
}

impl Plan {
    fn new(settings: &Settings, start: StartCapture) -> Result<Self, InvalidCapture> {
        let validated = PacketCapture {
            properties: start.parameters.clone(),
        }
        .validate()
        .map_err(InvalidCapture)?;
        let file = capture_file(
            &settings.captures_dir,
            &start.capture_id,
            start.created_ms,
            validated.output().local_file(),
        );
        let continuous = validated.output().files().is_some();
        Ok(Self {
            config: capture_config(settings, &validated, file.clone()),
            id: start.capture_id.clone(),
            file,
            created_ms: start.created_ms,
            upload: start.upload.is_some(),
            continuous,
            keep_local: validated.output().local_file().is_some(),
            journal: Arc::new(Mutex::new(SpooledCapture::new(start, u32::from(continuous)))),
            prior: ReportStats::default(),
            resumed: None,
            alert: validated.alert().cloned(),
            remark: None,
            hold: None,
        })
    }

    /// The plan of the capture's next run after an agent restart: in file
    /// `record.seq`, for what is left of its limits.
    fn resume(mut self, record: SpooledCapture, time_left: Duration, bytes_left: Option<u64>) -> Self {
        let file = self.file_of(record.seq);
        match &mut self.config.output {
            OutputSpec::File(path) => *path = file,
            OutputSpec::Ring { first_seq, .. } => *first_seq = record.seq,
            OutputSpec::Stdout => {}
        }
        self.config.limits.time_limit = Some(time_left);
        self.config.limits.max_bytes = bytes_left;
        self.prior = record.closed;
        self.resumed = Some(format!(
            "the agent stopped while the capture ran and resumed it when it restarted, in a new file ({} of the \
             capture's files): packets in between were not captured",
            record.seq + u32::from(!self.continuous)
        ));
        self.journal = Arc::new(Mutex::new(record));
        self
    }

    /// The path of the capture's file `seq`: a ring's `seq`-th, or for a
    /// single-file capture its file (0) and the files it resumed in (1, 2…).
    fn file_of(&self, seq: u32) -> PathBuf {
        if self.continuous || seq > 0 {
            ring_name(&self.file, seq)
        } else {
            self.file.clone()
        }
    }

    /// The report of this run once open (its counters follow).
    fn running_report(&self) -> CaptureReport {
        let mut report = CaptureReport {
            capture_id: self.id.clone(),
            state: AgentCaptureState::Running,
            started_ms: lock(&self.journal).started_ms,
            stop_reason: None,
            errors: vec![],
            message: None,
            stats: self.prior,
            upload: None,
            upload_progress: None,
        };
        self.note(&mut report);
        report
    }

    /// Says in `report` that this run resumed the capture: `AgentStopped`
    /// among its errors, and why.
    fn note(&self, report: &mut CaptureReport) {
        if let Some(remark) = &self.remark
            && !report
                .message
                .as_deref()
                .is_some_and(|message| message.contains(remark.as_str()))
        {
            report.message = Some(match report.message.take() {
                Some(message) => format!("{message}; {remark}"),
                None => remark.clone(),
            });
        }
        let Some(note) = &self.resumed else { return };
        if !report.errors.contains(&PcError::AgentStopped) {
            report.errors.push(PcError::AgentStopped);
        }
        report.message = Some(match report.message.take() {
            Some(message) => format!("{message}; {note}"),
            None => note.clone(),
        });
    }
}

/// The engine's config for a validated capture (DESIGN §3 "Limits"): 0 in a
/// limit already means its maximum in the validated accessors.
fn capture_config(settings: &Settings, validated: &ValidatedCapture, file: PathBuf) -> CaptureConfig {
    let output = match validated.output().files() {
        None => OutputSpec::File(file),
        Some(files) => OutputSpec::Ring {
            path: file,
            rotation: Rotation {
                file_count: files.max_files(),
                file_size: files.max_file_bytes(),
                max_age: None,
            },
            first_seq: 1,
        },
    };
    CaptureConfig {
        interface: settings.interface.clone(),
        filters: validated.filters().to_vec(),
        snaplen: validated.limits().snaplen().unwrap_or(0),
        limits: Limits {
            max_bytes: validated.max_bytes(),
            time_limit: Some(validated.time_limit()),
            max_packets: None,
        },
        output,
        ring: RingConfig::default(),
        nice: Some(DEFAULT_NICE),
    }
}

/// Creates `dir` and what is missing above it, below `root` (the captures
/// directory, which the agent owns): a component that is a symbolic link is
/// refused, so a `filePath` cannot lead a capture out of `root` through a
/// link planted there. A `dir` outside `root` (none is made so) is created as is.
fn make_dirs_beneath(root: &Path, dir: &Path) -> Result<(), StartError> {
    let create_error = |path: &Path, source: std::io::Error| StartError::CreateDir {
        path: path.display().to_string(),
        source,
    };
    let Ok(relative) = dir.strip_prefix(root) else {
        return std::fs::create_dir_all(dir).map_err(|source| create_error(dir, source));
    };
    std::fs::create_dir_all(root).map_err(|source| create_error(root, source))?;
    let mut path = root.to_path_buf();
    for component in relative.components() {
        path.push(component);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(StartError::SymlinkInPath {
                    path: path.display().to_string(),
                });
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                let source = std::io::Error::new(std::io::ErrorKind::NotADirectory, "a file has its name");
                return Err(create_error(&path, source));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&path) {
                Ok(()) => {}
                // Made meanwhile (another capture): checked again next time round.
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(create_error(&path, source)),
            },
            Err(source) => return Err(create_error(&path, source)),
        }
    }
    Ok(())
}

/// The capture's file under `captures_dir`: the `filePath` below
/// `/var/captures` when one was given, else `{capture name}_{created_ms}.cap`.
/// Never outside `captures_dir`: a path with anything but plain components
/// (which validation already refuses) falls back to the generated name.
fn capture_file(captures_dir: &Path, capture_id: &str, created_ms: i64, local: Option<&CapturePath>) -> PathBuf {
    if let Some(local) = local {
        let relative = Path::new(local.relative());
        if relative.components().all(|c| matches!(c, Component::Normal(_))) {
            return captures_dir.join(relative);
        }
    }
    // A run id (`{resource id}#{created_ms}`): the capture's name is the
    // resource id's last segment.
    let resource = netwatch_api::agent::parse_run_id(capture_id).map_or(capture_id, |(resource, _)| resource);
    let name = resource.rsplit('/').find(|part| !part.is_empty()).unwrap_or("");
    captures_dir.join(format!("{}_{created_ms}.cap", safe_name(name)))
}

/// `name` with anything but ASCII letters, digits, `-`, `_` and inner `.`
/// replaced by `_`, cut to [`MAX_NAME_LEN`]; `capture` if nothing is left.
fn safe_name(name: &str) -> String {
    let mut safe: String = name
        .chars()
        .take(MAX_NAME_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.starts_with('.') {
        safe.replace_range(..1, "_");
    }
    if safe.is_empty() { "capture".to_owned() } else { safe }
}

fn report_stats(stats: &CaptureStats) -> ReportStats {
    ReportStats {
        packets_captured: stats.packets_captured,
        bytes_captured: stats.bytes_captured,
        kernel_drops: stats.kernel_drops,
        file_size_in_bytes: stats.file_bytes,
        covered_from_ms: None,
    }
}

fn stop_reason(reason: netwatch_capture::StopReason) -> StopReason {
    match reason {
        netwatch_capture::StopReason::TimeExceeded => StopReason::TimeExceeded,
        netwatch_capture::StopReason::MaxBytesExceeded => StopReason::MaxBytesExceeded,
        netwatch_capture::StopReason::ManualStop => StopReason::ManualStop,
        // The agent sets no packet limit; spelled as the engine names it should one appear.
        other @ netwatch_capture::StopReason::PacketCountExceeded => StopReason::Other(other.to_string()),
    }
}

/// Now, in ms since the epoch rounded up: a start stamped once a capture is
/// open reads no earlier than the moment it opened, to the millisecond the
/// channel and the controller keep.
fn now_ms_rounded_up() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX)
    })
}

/// An `Error` report: `kind`, explained by `message`.
fn error_report(id: &str, started_ms: Option<i64>, kind: PcError, message: String) -> CaptureReport {
    CaptureReport {
        capture_id: id.to_owned(),
        state: AgentCaptureState::Error,
        started_ms,
        stop_reason: None,
        errors: vec![kind],
        message: Some(message),
        stats: ReportStats::default(),
        upload: None,
        upload_progress: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_stay_inside() {
        let dir = Path::new("/data/captures");
        let id =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkWatchers/nw/packetCaptures/pc-1";
        assert_eq!(capture_file(dir, id, 42, None), dir.join("pc-1_42.cap"));
        for (name, safe) in [
            ("pc 1/..", "pc_1_.."),
            ("..", "_."),
            (".hidden", "_hidden"),
            ("", "capture"),
            ("été", "_t_"),
        ] {
            assert_eq!(safe_name(name), safe, "{name:?}");
        }
        assert_eq!(safe_name(&"x".repeat(300)).len(), MAX_NAME_LEN);
        let local = CapturePath::parse("filePath", "/var/captures/team/pc1.cap").unwrap();
        assert_eq!(capture_file(dir, id, 42, Some(&local)), dir.join("team/pc1.cap"));
    }

    /// Issue 12: a running capture with nothing spooled reported Pending
    /// and 100 %.
    #[test]
    fn issue_12_upload_progress_reaches_100_only_when_stored() {
        let state = |tally: &Tally, ended| {
            let (state, progress) = tally.state(ended);
            (state, progress.percent, progress.files_pending)
        };
        let mut tally = Tally::default();
        assert_eq!(
            state(&tally, false),
            (UploadState::Pending, 0, 0),
            "running, nothing spooled"
        );
        tally.files = 1;
        tally.bytes = 4000;
        assert_eq!(
            state(&tally, true),
            (UploadState::Pending, 0, 1),
            "spooled, waiting its turn"
        );
        tally.uploading = true;
        tally.bytes_current = 1000;
        assert_eq!(state(&tally, true), (UploadState::Uploading, 25, 1));
        tally.bytes_current = 4000;
        assert_eq!(
            state(&tally, true),
            (UploadState::Uploading, 99, 1),
            "all parts sent, not committed"
        );
        tally.waiting = Some("storage unreachable".to_owned());
        assert_eq!(state(&tally, true).1, 99);
        tally.waiting = None;
        tally.uploading = false;
        tally.bytes_current = 0;
        tally.stored = 1;
        tally.bytes_stored = 4000;
        assert_eq!(
            state(&tally, false),
            (UploadState::Pending, 99, 0),
            "a continuous capture's file stored, the capture still writing"
        );
        assert_eq!(state(&tally, true), (UploadState::Succeeded, 100, 0));
        // A capture that ended without a file (or with empty ones only).
        assert_eq!(state(&Tally::default(), true), (UploadState::Succeeded, 100, 0));
    }

    #[test]
    fn capture_directories_are_made_beneath_the_root_and_never_through_a_link() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let root = root.path().join("captures");
        make_dirs_beneath(&root, &root.join("team/a")).unwrap();
        assert!(root.join("team/a").is_dir());
        std::os::unix::fs::symlink(elsewhere.path(), root.join("escape")).unwrap();
        let err = make_dirs_beneath(&root, &root.join("escape/sub")).unwrap_err();
        assert!(matches!(err, StartError::SymlinkInPath { .. }), "{err:?}");
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert!(!elsewhere.path().join("sub").exists(), "nothing made through the link");
        assert_eq!(err.pc_error(), PcError::LocalFileFailed);
        std::fs::write(root.join("file"), b"").unwrap();
        let err = make_dirs_beneath(&root, &root.join("file/sub")).unwrap_err();
        assert!(matches!(err, StartError::CreateDir { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_capture_leaves_the_book_once_its_last_report_went_out_and_never_runs_again() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::AgentConfig {
            server: "http://127.0.0.1:9".into(),
            token: "t".into(),
            ca_file: None,
            vm_name: "vm1".into(),
            resource_group: "rg".into(),
            location: "westus".into(),
            data_dir: dir.path().into(),
            interface: "any".into(),
            spool_max_bytes: crate::DEFAULT_SPOOL_MAX_BYTES,
            tags: Default::default(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            installed: None,
            metrics_listen: None,
        };
        let remote = crate::remote::Remote::new(&config).unwrap();
        let supervisor = Supervisor::new(
            Settings {
                captures_dir: dir.path().into(),
                interface: Interface::Any,
                metrics: crate::metrics::Metrics::new("test"),
                recorder: Recorder::new(dir.path(), Interface::Any),
            },
            Uploader::new(&remote).unwrap(),
            Spool::open(dir.path().join("spool"), 1 << 20).unwrap(),
            CancellationToken::new(),
        );
        // No target: refused by validation, an Error report at once, and final.
        let invalid = StartCapture {
            capture_id: "pc".into(),
            parameters: Default::default(),
            created_ms: 0,
            upload: None,
        };
        supervisor.start(invalid.clone());
        let dirty = supervisor.take_dirty();
        assert_eq!(dirty.len(), 1);
        assert_eq!(dirty[0].0.state, AgentCaptureState::Error);
        assert_eq!(dirty[0].0.errors, [PcError::CaptureFailed]);
        assert!(
            dirty[0].0.message.as_ref().unwrap().contains("properties.target"),
            "{dirty:?}"
        );
        assert!(supervisor.take_dirty().is_empty());
        // Sent on a connection that was lost before its welcome: sent again later.
        supervisor.mark_all_dirty();
        let again = supervisor.take_dirty();
        assert_eq!(again.len(), 1);
        supervisor.sent("pc", again[0].1 + 1);
        assert_eq!(
            supervisor.reports().len(),
            1,
            "an older version than the latest does not count"
        );
        supervisor.sent("pc", again[0].1);
        assert!(supervisor.reports().is_empty());
        // Started again by a controller that missed the end: not run again.
        supervisor.start(invalid);
        assert!(supervisor.take_dirty().is_empty() && supervisor.reports().is_empty());
        supervisor.stop("pc");
    }

    #[test]
    fn engine_stop_reasons_map_to_the_wire() {
        use netwatch_capture::StopReason as Engine;
        assert_eq!(stop_reason(Engine::TimeExceeded), StopReason::TimeExceeded);
        assert_eq!(stop_reason(Engine::MaxBytesExceeded), StopReason::MaxBytesExceeded);
        assert_eq!(stop_reason(Engine::ManualStop), StopReason::ManualStop);
        assert_eq!(
            stop_reason(Engine::PacketCountExceeded),
            StopReason::Other("PacketCountExceeded".into())
        );
    }
}
