//! The captures this host runs, and the book of their latest reports.
//!
//! Each capture runs on its own plain thread (STYLE 25: the packet loop never
//! touches the runtime), which opens the capture, reports `Running` the moment
//! it is open, counters about every [`STATS_INTERVAL_MS`], and hands its
//! outcome to a tracked async task; that task reports the end and uploads the
//! file. Nothing here waits for the controller: a capture ends on its limits
//! whether or not the channel is up.
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
use std::time::{Duration, Instant};

use netwatch_api::agent::{AgentCaptureState, CaptureReport, ReportStats, STATS_INTERVAL_MS, StartCapture, Upload};
use netwatch_api::error::ApiError;
use netwatch_api::packet_capture::{CapturePath, PacketCapture, PcError, StopReason, UploadState, ValidatedCapture};
use netwatch_capture::session::DEFAULT_NICE;
use netwatch_capture::{
    Capture, CaptureConfig, CaptureError, CaptureOutcome, CaptureStats, Interface, Limits, OpenError, OutputSpec,
    RingConfig, Rotation,
};
use tokio::sync::{Notify, futures::Notified, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::upload::{UploadError, Uploader};
use crate::{error_chain, now_ms};

/// How many finished captures are remembered after they left the book, so that a
/// `Start` repeated by a controller that missed their end does not run them
/// again (and overwrite their file). Ids are ~200 bytes: ~200 KiB at most.
const DONE_REMEMBERED: usize = 1024;

/// The least time between two counter reports of one capture. The engine calls
/// back every second already; nine tenths of the interval lets its scheduling
/// jitter through while a faster engine would still be throttled.
const STATS_MIN_GAP: Duration = Duration::from_millis(STATS_INTERVAL_MS * 9 / 10);

/// File names made from capture names are cut to this many bytes (well below
/// NAME_MAX, 255, with room for `_{created_ms}.cap` and ring suffixes).
const MAX_NAME_LEN: usize = 100;

/// Where and how captures run on this host.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `{data_dir}/captures`: every capture file is under it.
    pub(crate) captures_dir: PathBuf,
    pub(crate) interface: Interface,
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
    book: Mutex<Book>,
    /// Woken when a report changed (one waiter: the channel).
    changed: Notify,
    tracker: TaskTracker,
    /// Cancelled on shutdown: uploads give up.
    cancel: CancellationToken,
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
    /// Set to stop the capture thread (`ManualStop`).
    stop: Arc<AtomicBool>,
}

impl Supervisor {
    pub(crate) fn new(settings: Settings, uploader: Uploader, cancel: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                uploader,
                book: Mutex::new(Book::default()),
                changed: Notify::new(),
                tracker: TaskTracker::new(),
                cancel,
            }),
        }
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
            book.captures.insert(
                id.clone(),
                Slot {
                    report: None,
                    seq: 0,
                    dirty: false,
                    finished: false,
                    stop: Arc::clone(&stop),
                },
            );
        }
        let plan = match Plan::new(&self.inner.settings, start) {
            Ok(plan) => plan,
            Err(error) => {
                tracing::info!(error = %error, "capture refused: invalid parameters");
                self.publish(
                    error_report(&id, None, PcError::CaptureFailed, error_chain(&error)),
                    true,
                );
                return;
            }
        };
        let (done_tx, done_rx) = oneshot::channel();
        let supervisor = self.clone();
        let thread_span = span.clone();
        let config = plan.config.clone();
        let file = plan.file.clone();
        let thread_id = id.clone();
        let pending_upload = plan.upload.is_some();
        let spawned = std::thread::Builder::new()
            .name("nw-capture".to_owned())
            .spawn(move || {
                let _entered = thread_span.enter();
                let ended = supervisor.capture_thread(thread_id, config, &file, &stop, pending_upload);
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
        self.inner
            .tracker
            .spawn(async move { supervisor.finish(plan, ended.await).await }.instrument(span.clone()));
    }

    /// Stops a capture (`ManualStop`); its `Stopped` report follows when its
    /// thread has finalized the file. A capture this host does not run is ignored.
    pub(crate) fn stop(&self, id: &str) {
        match self.book().captures.get(id) {
            Some(slot) if !slot.finished => {
                tracing::info!(capture = %id, "stopping capture on request");
                slot.stop.store(true, Ordering::Relaxed);
            }
            _ => tracing::debug!(capture = %id, "stop of a capture not running here: ignored"),
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
    }

    /// Replaces `report.capture_id`'s report and wakes the channel.
    fn publish(&self, report: CaptureReport, finished: bool) {
        {
            let mut book = self.book();
            let Some(slot) = book.captures.get_mut(&report.capture_id) else {
                return;
            };
            slot.report = Some(report);
            slot.seq += 1;
            slot.dirty = true;
            slot.finished = finished;
        }
        self.inner.changed.notify_one();
    }

    /// The capture thread: open, report `Running`, capture until a limit or a stop.
    fn capture_thread(
        &self,
        id: String,
        config: CaptureConfig,
        file: &Path,
        stop: &AtomicBool,
        pending_upload: bool,
    ) -> Ended {
        if let Some(dir) = file.parent()
            && let Err(source) = std::fs::create_dir_all(dir)
        {
            return Ended::NotOpened(StartError::CreateDir {
                path: dir.display().to_string(),
                source,
            });
        }
        let interface = config.interface.to_string();
        let opening = Instant::now();
        let capture = match Capture::open(config) {
            Ok(capture) => capture,
            Err(source) => return Ended::NotOpened(StartError::Open { interface, source }),
        };
        let mut report = CaptureReport {
            capture_id: id,
            state: AgentCaptureState::Running,
            started_ms: Some(now_ms()),
            stop_reason: None,
            errors: vec![],
            message: None,
            stats: ReportStats::default(),
            upload: pending_upload.then_some(UploadState::Pending),
        };
        self.publish(report.clone(), false);
        tracing::info!(file = %file.display(), open_ms = opening.elapsed().as_millis(), "capture running");
        let started_ms = report.started_ms;
        let mut last_stats = Instant::now();
        let outcome = capture.run(stop, &mut |stats: &CaptureStats| {
            if last_stats.elapsed() >= STATS_MIN_GAP {
                last_stats = Instant::now();
                report.stats = report_stats(stats);
                self.publish(report.clone(), false);
            }
        });
        Ended::Ran { started_ms, outcome }
    }

    /// After the thread: the final report, then the upload and its reports.
    async fn finish(&self, plan: Plan, ended: Ended) {
        let id = plan.id;
        let (started_ms, outcome) = match ended {
            Ended::NotOpened(error) => {
                tracing::warn!(error = %error_chain(&error), "capture could not start");
                self.publish(error_report(&id, None, error.pc_error(), error_chain(&error)), true);
                return;
            }
            Ended::Panicked => {
                tracing::error!("capture thread panicked");
                let message = "the capture thread stopped unexpectedly (a bug: see the agent's log)";
                self.publish(
                    error_report(&id, None, PcError::InternalError, message.to_owned()),
                    true,
                );
                return;
            }
            Ended::Ran { started_ms, outcome } => (started_ms, outcome),
        };
        let CaptureOutcome { result, stats, .. } = outcome;
        let mut report = match result {
            Ok(reason) => {
                tracing::info!(reason = %reason, packets = stats.packets_captured, bytes = stats.file_bytes, "capture stopped");
                CaptureReport {
                    capture_id: id.clone(),
                    state: AgentCaptureState::Stopped,
                    started_ms,
                    stop_reason: Some(stop_reason(reason)),
                    errors: vec![],
                    message: None,
                    stats: report_stats(&stats),
                    upload: None,
                }
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), packets = stats.packets_captured, "capture failed");
                let kind = match error {
                    CaptureError::Output(_) => PcError::LocalFileFailed,
                    CaptureError::Poll(_) => PcError::CaptureFailed,
                };
                let mut report = error_report(&id, started_ms, kind, error_chain(&error));
                report.stats = report_stats(&stats);
                report
            }
        };
        // A file that ended in error is still valid up to its last record: worth
        // uploading when it has any packet.
        let upload = plan
            .upload
            .filter(|_| report.state == AgentCaptureState::Stopped || stats.packets_captured > 0);
        let Some(upload) = upload else {
            self.publish(report, true);
            return;
        };
        report.upload = Some(UploadState::Uploading);
        self.publish(report.clone(), false);
        let result = self
            .inner
            .uploader
            .put(&plan.file, &upload.path, &self.inner.cancel, || {
                if report.upload != Some(UploadState::Retrying) {
                    report.upload = Some(UploadState::Retrying);
                    self.publish(report.clone(), false);
                }
            })
            .await;
        match result {
            Ok(()) => {
                tracing::info!(path = %upload.path, "capture file uploaded");
                report.upload = Some(UploadState::Succeeded);
            }
            Err(UploadError::Cancelled) => {
                tracing::info!("upload abandoned: the agent is shutting down");
                return;
            }
            Err(error) => {
                let chain = error_chain(&error);
                tracing::warn!(path = %upload.path, error = %chain, "upload failed");
                report.upload = Some(UploadState::Failed);
                report.errors.push(PcError::StorageFailed);
                report.message = Some(match report.message.take() {
                    Some(earlier) => format!("{earlier}; {chain}"),
                    None => chain,
                });
            }
        }
        self.publish(report, true);
    }
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
    #[error("start the capture thread")]
    Spawn(#[source] std::io::Error),
}

impl StartError {
    fn pc_error(&self) -> PcError {
        match self {
            StartError::CreateDir { .. }
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
    /// The capture file (the first name of a ring's files).
    file: PathBuf,
    /// Where the file goes when the capture ends; none for continuous captures.
    upload: Option<Upload>,
}

impl Plan {
    fn new(settings: &Settings, start: StartCapture) -> Result<Self, InvalidCapture> {
        let validated = PacketCapture {
            properties: start.parameters,
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
        if continuous && start.upload.is_some() {
            tracing::info!("continuous capture: its files stay on the host (uploading rings is not supported yet)");
        }
        Ok(Self {
            config: capture_config(settings, &validated, file.clone()),
            id: start.capture_id,
            file,
            upload: start.upload.filter(|_| !continuous),
        })
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
            },
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

    #[test]
    fn a_capture_leaves_the_book_once_its_last_report_went_out_and_never_runs_again() {
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
        };
        let remote = crate::remote::Remote::new(&config).unwrap();
        let supervisor = Supervisor::new(
            Settings {
                captures_dir: dir.path().into(),
                interface: Interface::Any,
            },
            Uploader::new(&remote).unwrap(),
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
