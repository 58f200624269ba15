//! Upgrades and uninstall as the controller asks (issue 14: the agent as an
//! extension). The agent runs unprivileged and cannot replace its own binary
//! or remove its unit; it prepares the change and stops, and its unit's
//! `ExecStopPost=+netwatch agent apply` (root, `netwatch::install`) makes it:
//!
//! - [`ControllerMessage::Upgrade`]: once no capture runs (or at once when
//!   forced), the build is downloaded from the controller into
//!   `DATA_DIR/upgrade/netwatch`, checked (size, SHA-256, it runs and says
//!   its version), noted in `staged.json`, and the agent stops with
//!   [`Exit::Upgrade`] (exit status [`EXIT_UPGRADE`]: the unit restarts it
//!   after `apply` installed the binary). Any failure leaves the agent running
//!   its version; it is kept in `failed.json`, reported at once
//!   ([`AgentMessage::UpgradeFailed`]) and in every hello until an upgrade works.
//! - [`ControllerMessage::Uninstall`]: `DATA_DIR/uninstall.json` says so
//!   (and whether to purge), and the agent stops with [`Exit::Uninstall`].
//!
//! Both need the installer's record (`/etc/netwatch/install.json`): an agent
//! run by hand says what to do instead.
//!
//! [`ControllerMessage::Upgrade`]: netwatch_api::agent::ControllerMessage::Upgrade
//! [`ControllerMessage::Uninstall`]: netwatch_api::agent::ControllerMessage::Uninstall
//! [`AgentMessage::UpgradeFailed`]: netwatch_api::agent::AgentMessage::UpgradeFailed
//! [`EXIT_UPGRADE`]: netwatch_api::agent::EXIT_UPGRADE

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use netwatch_api::agent::{AGENT_BUILDS_PATH, Upgrade, UpgradeFailure};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::remote::Remote;
use crate::supervisor::Supervisor;
use crate::upload::Uploader;

/// Under the data directory: the staged build and what is known of it.
pub const UPGRADE_DIR: &str = "upgrade";
/// The staged binary, in [`UPGRADE_DIR`].
pub const STAGED_BINARY: &str = "netwatch";
/// The staged build ([`netwatch_api::agent::AgentBuild`], JSON), in [`UPGRADE_DIR`].
pub const STAGED_FILE: &str = "staged.json";
/// The last failed upgrade ([`UpgradeFailure`], JSON), in [`UPGRADE_DIR`].
pub const FAILED_FILE: &str = "failed.json";
/// The uninstall the controller asked for (`{"purge": bool}`), in the data directory.
pub const UNINSTALL_FILE: &str = "uninstall.json";

/// How often a waiting upgrade looks whether captures still run.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Why [`crate::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Shut down (a signal).
    Stopped,
    /// A verified build is staged: exit with [`netwatch_api::agent::EXIT_UPGRADE`].
    Upgrade { version: String },
    /// The host's extension was deleted; `uninstall.json` says so.
    Uninstall { purge: bool },
}

/// The upgrade the controller wants, the last failure, and why the agent stops.
pub(crate) struct Upgrades {
    data_dir: PathBuf,
    version: String,
    /// The installer's record; `None`: run by hand, nothing to upgrade or remove.
    installed: Option<PathBuf>,
    wanted: watch::Sender<Option<Upgrade>>,
    failure: Mutex<Option<UpgradeFailure>>,
    /// A failure the channel has not sent yet.
    unsent: AtomicBool,
    failed: Notify,
    exit: Mutex<Exit>,
    /// Cancelled to stop the agent ([`crate::run`]'s root token).
    stop: CancellationToken,
}

impl Upgrades {
    pub(crate) fn new(data_dir: &Path, version: &str, installed: Option<PathBuf>, stop: CancellationToken) -> Self {
        let failure = std::fs::read(data_dir.join(UPGRADE_DIR).join(FAILED_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<UpgradeFailure>(&bytes).ok())
            // A failure to upgrade to the version now running is over.
            .filter(|failure| failure.version != version);
        let stale = data_dir.join(UNINSTALL_FILE);
        if stale.exists() {
            tracing::warn!(
                file = %stale.display(),
                "an uninstall asked for earlier was not carried out (the agent was started again by hand): \
                 it is dropped"
            );
            let _ = std::fs::remove_file(&stale);
        }
        Self {
            data_dir: data_dir.to_owned(),
            version: version.to_owned(),
            installed,
            wanted: watch::Sender::new(None),
            failure: Mutex::new(failure),
            unsent: AtomicBool::new(false),
            failed: Notify::new(),
            exit: Mutex::new(Exit::Stopped),
            stop,
        }
    }

    /// The last failed upgrade, for the hello.
    pub(crate) fn last_failure(&self) -> Option<UpgradeFailure> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A failure not sent yet, taken.
    pub(crate) fn take_unsent(&self) -> Option<UpgradeFailure> {
        if self.unsent.swap(false, Ordering::AcqRel) {
            self.last_failure()
        } else {
            None
        }
    }

    /// Resolves when an upgrade failed.
    pub(crate) async fn failed(&self) {
        self.failed.notified().await;
    }

    pub(crate) fn exit(&self) -> Exit {
        self.exit.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The controller asks for `upgrade`; a later ask replaces an earlier one.
    pub(crate) fn want(&self, upgrade: Upgrade) {
        if upgrade.build.version == self.version {
            tracing::debug!(version = %self.version, "upgrade to the version running: nothing to do");
            return;
        }
        tracing::info!(
            from = %self.version,
            to = %upgrade.build.version,
            force = upgrade.force,
            "the controller asks this agent to upgrade"
        );
        self.wanted.send_replace(Some(upgrade));
    }

    /// The controller deleted the host's extension: note it for `apply` and stop.
    pub(crate) fn uninstall(&self, purge: bool) {
        if self.installed.is_none() {
            tracing::error!(
                "this host's agent extension was deleted (`vm extension delete`), but this agent was not installed \
                 by netwatch's installer (no /etc/netwatch/install.json): it stops; remove its binary and data \
                 directory {} by hand",
                self.data_dir.display()
            );
        } else {
            let path = self.data_dir.join(UNINSTALL_FILE);
            let body = serde_json::json!({ "purge": purge }).to_string();
            match write_synced(&path, body.as_bytes()) {
                Ok(()) => tracing::warn!(
                    purge,
                    "this host's agent extension was deleted (`vm extension delete`): the agent stops and its \
                     unit uninstalls it{}",
                    if purge {
                        ", captures included"
                    } else {
                        ", leaving its captures"
                    }
                ),
                Err(error) => tracing::error!(
                    error = %error,
                    file = %path.display(),
                    "the agent extension was deleted but the uninstall could not be noted: the agent stops; \
                     uninstall it by hand with `netwatch agent uninstall`"
                ),
            }
        }
        self.finish(Exit::Uninstall { purge });
    }

    fn finish(&self, exit: Exit) {
        *self.exit.lock().unwrap_or_else(PoisonError::into_inner) = exit;
        self.stop.cancel();
    }

    fn fail(&self, version: &str, message: String) {
        tracing::error!(
            to = %version,
            running = %self.version,
            "upgrade failed, the agent goes on with its version: {message}"
        );
        let failure = UpgradeFailure {
            version: version.to_owned(),
            message,
            at_ms: crate::now_ms(),
        };
        let dir = self.data_dir.join(UPGRADE_DIR);
        let saved = std::fs::create_dir_all(&dir).and_then(|()| {
            write_synced(
                &dir.join(FAILED_FILE),
                serde_json::to_string(&failure).unwrap_or_default().as_bytes(),
            )
        });
        if let Err(error) = saved {
            tracing::warn!(error = %error, "could not keep the upgrade's failure in {}", dir.display());
        }
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(failure);
        self.unsent.store(true, Ordering::Release);
        self.failed.notify_one();
    }

    /// Carries out the upgrades asked for, one at a time, until the agent stops.
    pub(crate) async fn run(&self, supervisor: &Supervisor, uploader: &Uploader, remote: &Remote) {
        let mut wanted = self.wanted.subscribe();
        loop {
            let upgrade = tokio::select! {
                () = self.stop.cancelled() => return,
                changed = wanted.changed() => match changed {
                    Ok(()) => wanted.borrow_and_update().clone(),
                    Err(_) => return,
                },
            };
            let Some(upgrade) = upgrade else { continue };
            if self.installed.is_none() {
                self.fail(
                    &upgrade.build.version,
                    "this agent was not installed by netwatch's installer (no /etc/netwatch/install.json), so \
                     nothing can restart it into a new binary: install it with the command `netwatch vm extension \
                     set` prints, or replace it by hand"
                        .to_owned(),
                );
                continue;
            }
            // Never in the middle of a capture, unless forced.
            let mut said = false;
            while !upgrade.force && supervisor.running() > 0 {
                if !said {
                    tracing::info!(
                        to = %upgrade.build.version,
                        captures = supervisor.running(),
                        "upgrade waits until no capture runs"
                    );
                    said = true;
                }
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
                if wanted.has_changed().unwrap_or(false) {
                    break;
                }
            }
            if wanted.has_changed().unwrap_or(false) {
                continue;
            }
            match self.stage(&upgrade, uploader, remote).await {
                Ok(()) => {
                    if !upgrade.force && supervisor.running() > 0 {
                        // A capture started while the build downloaded: wait again.
                        self.wanted.send_replace(Some(upgrade));
                        continue;
                    }
                    if supervisor.running() > 0 {
                        // Forced: its captures resume after the restart.
                        supervisor.suspend_on_shutdown();
                    }
                    tracing::info!(
                        to = %upgrade.build.version,
                        "upgrade staged and verified: the agent stops so its unit installs it and starts it again"
                    );
                    self.finish(Exit::Upgrade {
                        version: upgrade.build.version.clone(),
                    });
                    return;
                }
                Err(message) => self.fail(&upgrade.build.version, message),
            }
        }
    }

    /// Downloads and checks `upgrade`'s build into the upgrade directory.
    async fn stage(&self, upgrade: &Upgrade, uploader: &Uploader, remote: &Remote) -> Result<(), String> {
        let build = &upgrade.build;
        let dir = self.data_dir.join(UPGRADE_DIR);
        std::fs::create_dir_all(&dir).map_err(|err| format!("create {}: {err}", dir.display()))?;
        let partial = dir.join(format!("{STAGED_BINARY}.partial"));
        let result = self.download(build, &partial, uploader, remote).await;
        if let Err(message) = result {
            let _ = std::fs::remove_file(&partial);
            return Err(message);
        }
        let binary = dir.join(STAGED_BINARY);
        std::fs::rename(&partial, &binary).map_err(|err| format!("rename into {}: {err}", binary.display()))?;
        let staged = serde_json::to_string(build).unwrap_or_default();
        write_synced(&dir.join(STAGED_FILE), staged.as_bytes())
            .map_err(|err| format!("write {}: {err}", dir.join(STAGED_FILE).display()))?;
        Ok(())
    }

    async fn download(
        &self,
        build: &netwatch_api::agent::AgentBuild,
        path: &Path,
        uploader: &Uploader,
        remote: &Remote,
    ) -> Result<(), String> {
        let url = remote.http_url(&format!("{AGENT_BUILDS_PATH}/{}/{}", build.arch, build.version));
        tracing::info!(url = %url, bytes = build.size, "downloading the agent build");
        let response = uploader
            .controller()
            .get(&url)
            .send()
            .await
            .map_err(|err| format!("download {url}: {}", crate::error_chain(&err)))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(format!("download {url}: {status}: {body}"));
        }
        let mut file = std::fs::File::create(path).map_err(|err| format!("create {}: {err}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|err| format!("download {url}: {}", crate::error_chain(&err)))?;
            size += chunk.len() as u64;
            if size > build.size {
                return Err(format!("download {url}: more than the build's {} bytes", build.size));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .map_err(|err| format!("write {}: {err}", path.display()))?;
        }
        let sha256 = crate::spool::hex(&hasher.finalize());
        if size != build.size || sha256 != build.sha256 {
            return Err(format!(
                "the download is corrupt: {size} bytes with SHA-256 {sha256}, the controller published {} bytes \
                 with SHA-256 {}; nothing was installed",
                build.size, build.sha256
            ));
        }
        file.set_permissions(std::fs::Permissions::from_mode(0o755))
            .and_then(|()| file.sync_all())
            .map_err(|err| format!("finish {}: {err}", path.display()))?;
        drop(file);
        // It must run here and be the version announced.
        let program = path.to_owned();
        let output = tokio::task::spawn_blocking(move || std::process::Command::new(program).arg("--version").output())
            .await
            .map_err(|err| format!("run the new build {}: {err}", path.display()))?
            .map_err(|err| format!("run the new build {}: {err}", path.display()))?;
        let said = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || said.split_whitespace().nth(1) != Some(build.version.as_str()) {
            return Err(format!(
                "the new build does not say it is version {} (`--version`: {:?})",
                build.version,
                said.trim()
            ));
        }
        Ok(())
    }
}

/// `bytes` into `path`, synced.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
