//! The agent builds the controller serves (issue 14: the agent as an
//! extension): its own binary for the architecture it runs on, stripped, and
//! the builds in `agents_dir` (its config) for other architectures and other
//! versions, each listed with the SHA-256 hosts check before they install it.
//!
//! `agents_dir` holds `netwatch-{version}-{arch}` files (`arch` as `uname -m`
//! says it) and a `SHA256SUMS` file as `sha256sum` writes it: a build is
//! served only with its line there, so the digest comes from whoever made the
//! release, not from the file as it is now (a file damaged on disk is caught
//! by the host that downloads it).
//!
//! Which build an agent should run ([`upgrade_for`]) follows the extension's
//! `autoUpgradeMinorVersion` and `typeHandlerVersion` (`vm extension set
//! --version`), as Azure's do.

use std::io::Read;
use std::path::{Path, PathBuf};

use netwatch_api::agent::AgentBuild;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

/// The release's digests in `agents_dir`.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// One build and the file it is served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub build: AgentBuild,
    pub path: PathBuf,
}

/// Why a build cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildsError {
    #[error(
        "this controller has no agent build for {arch}{}: it serves {}. Put netwatch-VERSION-{arch} and its line \
         in SHA256SUMS into the directory `agents_dir` of its configuration names",
        version.as_deref().map(|v| format!(" version {v}")).unwrap_or_default(),
        if available.is_empty() { "none".to_owned() } else { available.join(", ") }
    )]
    Missing {
        arch: String,
        version: Option<String>,
        available: Vec<String>,
    },
    #[error("prepare this controller's own agent build: {0}")]
    Own(String),
}

/// The controller's own binary as an agent build.
#[derive(Debug)]
struct Own {
    exe: PathBuf,
    version: String,
    /// The stripped copy, made on first use.
    prepared: OnceCell<Result<Served, String>>,
    workdir: std::sync::Mutex<Option<tempfile::TempDir>>,
}

/// The builds served: the controller's own and `agents_dir`'s.
#[derive(Debug, Default)]
pub struct AgentBuilds {
    own: Option<Own>,
    dir: Option<PathBuf>,
}

impl AgentBuilds {
    /// No builds (in-process tests): the installer and upgrades say so.
    pub fn none() -> Self {
        Self::default()
    }

    /// The controller's binary `exe`, of `version`, for this machine's
    /// architecture, and the builds in `dir`.
    pub fn new(exe: Option<PathBuf>, version: &str, dir: Option<PathBuf>) -> Self {
        Self {
            own: exe.map(|exe| Own {
                exe,
                version: version.to_owned(),
                prepared: OnceCell::new(),
                workdir: std::sync::Mutex::new(None),
            }),
            dir,
        }
    }

    /// Every build served, own first; a broken `agents_dir` entry is logged and left out.
    pub async fn list(&self) -> Result<Vec<Served>, BuildsError> {
        let mut builds = Vec::new();
        if let Some(own) = &self.own {
            builds.push(own.served().await.map_err(BuildsError::Own)?);
        }
        if let Some(dir) = self.dir.clone() {
            let listed = tokio::task::spawn_blocking(move || scan(&dir))
                .await
                .unwrap_or_default();
            for served in listed {
                // The controller's own build wins over a file of the same name.
                if !builds
                    .iter()
                    .any(|b: &Served| b.build.arch == served.build.arch && b.build.version == served.build.version)
                {
                    builds.push(served);
                }
            }
        }
        Ok(builds)
    }

    /// The build of `arch`: `version`, or the newest.
    pub async fn find(&self, arch: &str, version: Option<&str>) -> Result<Served, BuildsError> {
        let builds = self.list().await?;
        let found = builds
            .iter()
            .filter(|served| served.build.arch == arch)
            .filter(|served| version.is_none_or(|version| served.build.version == version))
            .max_by(|a, b| order(&a.build.version, &b.build.version));
        match found {
            Some(served) => Ok(served.clone()),
            None => Err(BuildsError::Missing {
                arch: arch.to_owned(),
                version: version.map(str::to_owned),
                available: builds
                    .iter()
                    .map(|served| format!("{} {}", served.build.arch, served.build.version))
                    .collect(),
            }),
        }
    }
}

impl Own {
    async fn served(&self) -> Result<Served, String> {
        self.prepared
            .get_or_init(|| async {
                let exe = self.exe.clone();
                let version = self.version.clone();
                let prepared = tokio::task::spawn_blocking(move || prepare(&exe, &version))
                    .await
                    .map_err(|err| err.to_string())
                    .and_then(|prepared| prepared);
                match prepared {
                    Ok((served, workdir)) => {
                        *self.workdir.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = workdir;
                        Ok(served)
                    }
                    Err(err) => Err(err),
                }
            })
            .await
            .clone()
    }
}

/// A stripped copy of `exe` (binutils' `objcopy --strip-all`), with its
/// digest; `exe` itself when objcopy is missing.
///
/// The copy is kept in a private cache shared by this user's controllers
/// ([`cache_dir`]), named by the binary's path, size and modification time:
/// made once per binary, however many controllers start (a test suite starts
/// hundreds, each killed at the end), and found again after a crash. Without
/// a usable cache, in a directory of its own removed when the controller
/// stops.
fn prepare(exe: &Path, version: &str) -> Result<(Served, Option<tempfile::TempDir>), String> {
    let arch = std::env::consts::ARCH;
    let name = format!("netwatch-{version}-{arch}");
    let (stripped, workdir) = match cache_dir() {
        Ok(cache) => (cache.join(format!("{name}-{:016x}", binary_key(exe))), None),
        Err(err) => {
            tracing::debug!(error = %err, "no cache for the stripped agent build: one of its own");
            let workdir = tempfile::Builder::new()
                .prefix("netwatch-agent-build")
                .tempdir()
                .map_err(|err| format!("make a directory for it: {err}"))?;
            (workdir.path().join(&name), Some(workdir))
        }
    };
    let path = if stripped.exists() {
        // In use again: the cache's sweep keeps it.
        let _touched = std::fs::File::options()
            .append(true)
            .open(&stripped)
            .and_then(|file| file.set_modified(std::time::SystemTime::now()));
        stripped
    } else {
        // Made under a name of its own, then renamed: a controller starting
        // meanwhile never serves half a file.
        let partial = stripped.with_extension(format!("partial-{}", std::process::id()));
        let output = std::process::Command::new("objcopy")
            .arg("--strip-all")
            .arg(exe)
            .arg(&partial)
            .output();
        match output {
            Ok(output) if output.status.success() => {
                std::fs::rename(&partial, &stripped).map_err(|err| format!("keep {}: {err}", stripped.display()))?;
                if workdir.is_none() {
                    sweep_cache(&stripped);
                }
                stripped
            }
            Ok(output) => {
                let _ = std::fs::remove_file(&partial);
                return Err(format!(
                    "objcopy --strip-all {}: {}",
                    exe.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    "objcopy (binutils) is not installed: agents get this controller's binary as it is, not \
                     stripped; install binutils to serve it stripped"
                );
                exe.to_owned()
            }
        }
    };
    let (sha256, size) = digest_file(&path).map_err(|err| format!("read {}: {err}", path.display()))?;
    tracing::info!(version, arch, bytes = size, sha256 = %sha256, "own agent build ready to serve");
    let build = AgentBuild {
        version: version.to_owned(),
        arch: arch.to_owned(),
        sha256,
        size,
    };
    Ok((Served { build, path }, workdir))
}

/// Copies in the cache unused for longer than this are removed when a new
/// one is made: each build of the binary leaves one (a developer's machine
/// makes dozens a day), and a controller that still serves one touched it
/// when it started.
const CACHE_KEEP: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Removes the cache's stripped copies other than `kept` not modified for
/// [`CACHE_KEEP`]; a failure only leaves a file behind.
fn sweep_cache(kept: &Path) {
    let Some(dir) = kept.parent() else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let stale = entry
            .metadata()
            .ok()
            .and_then(|meta| meta.modified().ok())
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > CACHE_KEEP);
        let ours = entry.file_name().to_string_lossy().starts_with("netwatch-");
        if stale && ours && path != kept {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::debug!(file = %path.display(), "old stripped agent build removed from the cache"),
                Err(err) => {
                    tracing::debug!(file = %path.display(), error = %err, "could not remove an old stripped agent build")
                }
            }
        }
    }
}

/// `$TMPDIR/netwatch-agent-builds-{uid}`: made private (0700) for this
/// user, or refused when it is anyone else's or open to others (a file
/// there is served to agents as it is).
fn cache_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let uid = std::fs::metadata("/proc/self")?.uid();
    let dir = std::env::temp_dir().join(format!("netwatch-agent-builds-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a private directory of this user",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Which binary `exe` is, for the cache: its path, size and modification time.
fn binary_key(exe: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    exe.hash(&mut hasher);
    if let Ok(meta) = std::fs::metadata(exe) {
        meta.len().hash(&mut hasher);
        meta.modified().ok().hash(&mut hasher);
    }
    hasher.finish()
}

/// SHA-256 (hex) and size of the file at `path`.
fn digest_file(path: &Path) -> std::io::Result<(String, u64)> {
    sha256_of(std::fs::File::open(path)?)
}

/// SHA-256 (hex) and length of what `reader` reads, read once in 1 MiB
/// pieces (the installer checks agent binaries with it too).
pub fn sha256_of(mut reader: impl Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        size += read as u64;
        hasher.update(&buffer[..read]);
    }
    Ok((crate::auth::hex(&hasher.finalize()), size))
}

/// The builds `dir`'s `SHA256SUMS` lists whose files are there.
fn scan(dir: &Path) -> Vec<Served> {
    let sums = dir.join(SUMS_FILE);
    let text = match std::fs::read_to_string(&sums) {
        Ok(text) => text,
        Err(err) => {
            tracing::warn!(file = %sums.display(), error = %err, "agents_dir has no readable SHA256SUMS: none of its builds is served");
            return Vec::new();
        }
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| {
            let parsed = parse_sum(line);
            if parsed.is_none() {
                tracing::warn!(file = %sums.display(), line, "not `SHA256  netwatch-VERSION-ARCH`: left out");
            }
            let (sha256, version, arch, name) = parsed?;
            let path = dir.join(name);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => Some(Served {
                    build: AgentBuild {
                        version,
                        arch,
                        sha256,
                        size: meta.len(),
                    },
                    path,
                }),
                _ => {
                    tracing::warn!(file = %path.display(), "listed in SHA256SUMS but not there: left out");
                    None
                }
            }
        })
        .collect()
}

/// `HEX  netwatch-VERSION-ARCH` (`*` before the name in binary mode) →
/// (sha256, version, arch, file name).
fn parse_sum(line: &str) -> Option<(String, String, String, &str)> {
    let (sha256, name) = line.split_once(char::is_whitespace)?;
    let name = name.trim_start().trim_start_matches('*').trim_end();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) || name.contains('/') {
        return None;
    }
    let rest = name.strip_prefix("netwatch-")?;
    let (version, arch) = rest.rsplit_once('-')?;
    semver::Version::parse(version).ok()?;
    if arch.is_empty() || !arch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    Some((sha256.to_ascii_lowercase(), version.to_owned(), arch.to_owned(), name))
}

/// Versions in semver order; one that does not parse sorts first.
fn order(a: &str, b: &str) -> std::cmp::Ordering {
    semver::Version::parse(a).ok().cmp(&semver::Version::parse(b).ok())
}

/// What the extension says about versions (`vm extension set`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionSettings {
    /// `autoUpgradeMinorVersion` (az's default: true).
    pub auto_upgrade_minor_version: bool,
    /// `typeHandlerVersion` when it names agent builds (`0.2`, `0.2.1`);
    /// Azure's own `1.4` of the guide names none and means "the current".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `forceUpdateTag` was given (`--force-update`): upgrade even mid-capture.
    #[serde(default)]
    pub force: bool,
    /// When these were set (ms): a failure older than this is retried.
    #[serde(default)]
    pub set_ms: i64,
}

impl Default for ExtensionSettings {
    fn default() -> Self {
        Self {
            auto_upgrade_minor_version: true,
            version: None,
            force: false,
            set_ms: 0,
        }
    }
}

/// Whether `version` (`0.2.1`) is what `wanted` (`0.2` or `0.2.1`) names.
fn names(wanted: &str, version: &str) -> bool {
    version == wanted || version.strip_prefix(wanted).is_some_and(|rest| rest.starts_with('.'))
}

/// The build an agent of `current` on `arch` should run instead, if any:
/// - the extension names builds (`--version 0.2`): the newest of them (with
///   `autoUpgradeMinorVersion`, the newest of that major version at or above
///   it); older than `current` too, when asked for;
/// - it does not: with `autoUpgradeMinorVersion`, the newest build of
///   `current`'s major version newer than it; without, none.
pub fn upgrade_for(
    builds: &[AgentBuild],
    current: &str,
    arch: &str,
    settings: &ExtensionSettings,
) -> Option<AgentBuild> {
    let current_version = semver::Version::parse(current).ok()?;
    let candidates: Vec<(semver::Version, &AgentBuild)> = builds
        .iter()
        .filter(|build| build.arch == arch)
        .filter_map(|build| Some((semver::Version::parse(&build.version).ok()?, build)))
        .collect();
    let wanted = settings
        .version
        .as_deref()
        .filter(|wanted| candidates.iter().any(|(_, build)| names(wanted, &build.version)));
    let target = match wanted {
        Some(wanted) => {
            let floor = candidates
                .iter()
                .filter(|(_, build)| names(wanted, &build.version))
                .map(|(version, _)| version)
                .min()?
                .clone();
            candidates
                .iter()
                .filter(|(version, build)| {
                    names(wanted, &build.version)
                        || (settings.auto_upgrade_minor_version
                            && version.major == floor.major
                            && *version >= floor
                            && wanted.matches('.').count() < 2)
                })
                .max_by(|a, b| a.0.cmp(&b.0))
        }
        None if settings.auto_upgrade_minor_version => candidates
            .iter()
            .filter(|(version, _)| version.major == current_version.major && *version > current_version)
            .max_by(|a, b| a.0.cmp(&b.0)),
        None => None,
    }?;
    (target.0 != current_version).then(|| target.1.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache keeps what is in use or recent and drops copies of old
    /// builds, and nothing that is not one of its copies.
    #[test]
    fn the_cache_drops_copies_unused_for_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, age_hours: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"build").unwrap();
            let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age_hours * 3600);
            std::fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
            path
        };
        let kept = file("netwatch-0.1.0-x86_64-0000000000000001", 0);
        let recent = file("netwatch-0.1.0-x86_64-0000000000000002", 2);
        let old = file("netwatch-0.1.0-x86_64-0000000000000003", 30);
        let foreign = file("someone-elses-file", 30);
        sweep_cache(&kept);
        assert!(kept.exists() && recent.exists() && foreign.exists());
        assert!(!old.exists(), "a copy unused for 30 h goes");
    }

    fn build(version: &str, arch: &str) -> AgentBuild {
        AgentBuild {
            version: version.to_owned(),
            arch: arch.to_owned(),
            sha256: "0".repeat(64),
            size: 1,
        }
    }

    fn settings(auto: bool, version: Option<&str>) -> ExtensionSettings {
        ExtensionSettings {
            auto_upgrade_minor_version: auto,
            version: version.map(str::to_owned),
            ..ExtensionSettings::default()
        }
    }

    #[test]
    fn agents_upgrade_as_the_extension_says() {
        let builds = [
            build("0.1.0", "x86_64"),
            build("0.2.0", "x86_64"),
            build("0.3.1", "aarch64"),
            build("1.0.0", "x86_64"),
        ];
        let target = |current, arch, auto, version| {
            upgrade_for(&builds, current, arch, &settings(auto, version)).map(|build| build.version)
        };
        // Minor upgrades only, within the major version.
        assert_eq!(target("0.1.0", "x86_64", true, None).as_deref(), Some("0.2.0"));
        assert_eq!(target("0.2.0", "x86_64", true, None), None);
        assert_eq!(target("0.1.0", "x86_64", false, None), None);
        // Azure's "1.4" of the guide names no build: as if not given.
        assert_eq!(target("0.1.0", "x86_64", true, Some("1.4")).as_deref(), Some("0.2.0"));
        // Named builds: a major upgrade, or back to an older one, when asked.
        assert_eq!(target("0.2.0", "x86_64", false, Some("1.0")).as_deref(), Some("1.0.0"));
        assert_eq!(
            target("0.2.0", "x86_64", false, Some("0.1.0")).as_deref(),
            Some("0.1.0")
        );
        assert_eq!(target("0.1.0", "x86_64", true, Some("0.1")).as_deref(), Some("0.2.0"));
        // Another architecture's builds are not this host's.
        assert_eq!(target("0.3.0", "aarch64", true, None).as_deref(), Some("0.3.1"));
        assert_eq!(target("0.3.0", "riscv64", true, None), None);
        assert_eq!(target("not a version", "x86_64", true, None), None);
    }

    #[test]
    fn sums_lines_name_builds() {
        let sha = "ab".repeat(32);
        assert_eq!(
            parse_sum(&format!("{sha}  netwatch-0.2.0-x86_64")),
            Some((sha.clone(), "0.2.0".into(), "x86_64".into(), "netwatch-0.2.0-x86_64"))
        );
        assert!(parse_sum(&format!("{sha} *netwatch-0.2.0-aarch64")).is_some());
        for bad in [
            format!("{sha}  netwatch-x-x86_64"),
            format!("{sha}  other-0.2.0-x86_64"),
            format!("{sha}  ../netwatch-0.2.0-x86_64"),
            "abc  netwatch-0.2.0-x86_64".to_owned(),
            format!("{sha}  netwatch-0.2.0-"),
        ] {
            assert_eq!(parse_sum(&bad), None, "{bad}");
        }
    }
}
