//! The agent as an installed system service (issue 14): `netwatch agent
//! install` (what the controller's `install.sh` runs, as root), `netwatch
//! agent apply` (the unit's `ExecStopPost=+`, root: installs an upgrade the
//! agent staged, or uninstalls when the controller asked) and `netwatch agent
//! uninstall`.
//!
//! Install, in order, so a refusal changes nothing: check everything given
//! (root, the binary's SHA-256, the server, the CA, names, the interface),
//! enroll (the token is spent only then), then place the binary
//! (`/usr/local/bin/netwatch`), the CA and `/etc/netwatch/agent.toml`, the
//! system user `netwatch-agent`, the data directory, the unit, and the record
//! of it all (`/etc/netwatch/install.json`) that upgrades and uninstall go by;
//! a failure on the way undoes what this run made. Run twice, it gives the
//! same result and says what was already in place.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use netwatch_api::agent::AgentBuild;
use serde::{Deserialize, Serialize};

use crate::UsageError;

/// Where the installer puts things.
pub const BINARY: &str = "/usr/local/bin/netwatch";
pub const ETC_DIR: &str = "/etc/netwatch";
pub const CONFIG: &str = "/etc/netwatch/agent.toml";
pub const CA: &str = "/etc/netwatch/ca.pem";
pub const RECORD: &str = "/etc/netwatch/install.json";
pub const UNIT: &str = "/etc/systemd/system/netwatch-agent.service";
pub const UNIT_NAME: &str = "netwatch-agent.service";
/// The unit's `StateDirectory=netwatch/agent`.
pub const DATA_DIR: &str = "/var/lib/netwatch/agent";
/// Azure's `filePath` rule: local capture files go under it (the unit's `ReadWritePaths`).
pub const CAPTURES_DIR: &str = "/var/captures";
pub const USER: &str = "netwatch-agent";

/// The unit, as `packaging/` has it.
const UNIT_TEXT: &str = include_str!("../../../packaging/netwatch-agent.service");

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The controller's URL, e.g. https://controller.example:8443.
    #[arg(long, value_name = "URL")]
    server: String,
    /// The enrollment token (or scale-set key) `netwatch vm extension set`
    /// printed; not needed when this host is enrolled already.
    #[arg(long, value_name = "TOKEN", env = "NETWATCH_ENROLL_TOKEN", hide_env_values = true)]
    enroll_token: Option<String>,
    /// The controller's CA certificate (PEM), kept as /etc/netwatch/ca.pem.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The agent binary to install [default: this one].
    #[arg(long, value_name = "FILE")]
    binary: Option<PathBuf>,
    /// The SHA-256 (hex) the binary must have (install.sh gives the controller's).
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
    /// The VM name this host registers as [default: its host name].
    #[arg(long, value_name = "NAME")]
    vm_name: Option<String>,
    #[arg(long, short = 'g', value_name = "GROUP", default_value = "netwatch")]
    resource_group: String,
    #[arg(long, short = 'l', value_name = "LOCATION", default_value = "westus")]
    location: String,
    /// Interface captures run on; `any` captures on all of them.
    #[arg(long, short = 'i', value_name = "IFACE", default_value = "any")]
    interface: String,
    /// A tag of this host, KEY=VALUE (repeat for more).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = crate::agent::parse_tag)]
    tags: Vec<(String, String)>,
    /// Install, but do not start the service.
    #[arg(long)]
    no_start: bool,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The installer's record.
    #[arg(long, value_name = "FILE", default_value = RECORD)]
    record: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// Remove the captures too (the data directory's and /var/captures).
    #[arg(long)]
    purge: bool,
    /// The installer's record.
    #[arg(long, value_name = "FILE", default_value = RECORD)]
    record: PathBuf,
}

/// What the installer made: what upgrades replace and uninstall removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub version: String,
    pub binary: PathBuf,
    pub config: PathBuf,
    pub ca: Option<PathBuf>,
    pub unit: PathBuf,
    pub data_dir: PathBuf,
    /// The user was made by the installer (and goes with it).
    pub user_created: bool,
    /// `/var/captures` was made by the installer.
    pub captures_dir_created: bool,
}

/// The config file the installer writes (the agent's `--config` keys).
#[derive(Debug, Serialize)]
struct AgentToml<'a> {
    server: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<&'a str>,
    vm_name: &'a str,
    resource_group: &'a str,
    location: &'a str,
    data_dir: &'a str,
    interface: &'a str,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    tags: std::collections::BTreeMap<String, String>,
}

/// What this run made, undone if it fails midway.
#[derive(Debug, Default)]
struct Undo {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    user: bool,
}

impl Undo {
    fn undo(self) {
        for file in self.files.iter().rev() {
            let _ = std::fs::remove_file(file);
        }
        for dir in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if self.user {
            let _ = Command::new("userdel").args(["--force", USER]).output();
        }
    }
}

fn say(what: &str) {
    println!("netwatch install: {what}");
}

pub fn install(args: InstallArgs, version: &str) -> Result<()> {
    if !crate::up::running_as_root() {
        bail!(UsageError(
            "netwatch agent install makes a system user and service: run it as root".to_owned()
        ));
    }
    // Everything checked before anything changes.
    let ca_pem = match &args.ca_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("read the CA file {}", path.display()))?;
            if !text.contains("-----BEGIN CERTIFICATE-----") {
                bail!(UsageError(format!(
                    "the CA file {} holds no PEM certificate: give the controller's CA (ca.pem)",
                    path.display()
                )));
            }
            Some(text)
        }
        None => None,
    };
    let vm_name = match &args.vm_name {
        Some(name) => name.clone(),
        None => crate::agent::host_vm_name()?,
    };
    netwatch_api::resource::ResourceName::parse("--vm-name", &vm_name).map_err(|err| UsageError(err.to_string()))?;
    netwatch_api::resource::ResourceGroupName::parse("--resource-group", &args.resource_group)
        .map_err(|err| UsageError(err.to_string()))?;
    netwatch_api::resource::Location::parse("--location", &args.location).map_err(|err| UsageError(err.to_string()))?;
    if args.interface != "any" && !Path::new("/sys/class/net").join(&args.interface).exists() {
        bail!(UsageError(format!(
            "this host has no interface {:?}: give one `ip link` lists, or any",
            args.interface
        )));
    }
    for dir in ["/usr/local/bin", "/etc", "/var/lib"] {
        writable(Path::new(dir))?;
    }
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => std::env::current_exe().context("find this binary")?,
    };
    let (digest, _) = digest_file(&binary).with_context(|| format!("read the agent binary {}", binary.display()))?;
    if let Some(expected) = &args.sha256
        && !expected.eq_ignore_ascii_case(&digest)
    {
        bail!(
            "the agent binary {} has SHA-256 {digest}, not {expected}: it is not the build the controller published; \
             nothing was installed",
            binary.display()
        );
    }

    let data_dir = PathBuf::from(DATA_DIR);
    let mut undo = Undo::default();
    let made = install_steps(
        &args,
        version,
        &binary,
        &digest,
        ca_pem.as_deref(),
        &vm_name,
        &data_dir,
        &mut undo,
    );
    match made {
        Ok(()) => Ok(()),
        Err(err) => {
            undo.undo();
            Err(err.context("the install failed; what this run had made is removed"))
        }
    }
}

#[allow(clippy::too_many_arguments, reason = "one call, the install's checked inputs")]
fn install_steps(
    args: &InstallArgs,
    version: &str,
    binary: &Path,
    digest: &str,
    ca_pem: Option<&str>,
    vm_name: &str,
    data_dir: &Path,
    undo: &mut Undo,
) -> Result<()> {
    // Enrollment first among the changes: a refused token changes nothing.
    make_dir(Path::new("/var/lib/netwatch"), 0o755, undo)?;
    make_dir(data_dir, 0o700, undo)?;
    let ca_path = ca_pem.map(|_| PathBuf::from(CA));
    let config = netwatch_agent::AgentConfig {
        server: args.server.clone(),
        token: args.enroll_token.clone().unwrap_or_default(),
        ca_file: args.ca_file.clone(),
        vm_name: vm_name.to_owned(),
        resource_group: args.resource_group.clone(),
        location: args.location.clone(),
        data_dir: data_dir.to_owned(),
        interface: args.interface.clone(),
        spool_max_bytes: netwatch_agent::DEFAULT_SPOOL_MAX_BYTES,
        tags: args.tags.iter().cloned().collect(),
        version: version.to_owned(),
        installed: Some(PathBuf::from(RECORD)),
        metrics_listen: None,
    };
    enroll(&config, data_dir)?;

    let user_created = ensure_user(undo)?;
    let captures_dir_created = !Path::new(CAPTURES_DIR).exists();
    if captures_dir_created {
        make_dir(Path::new(CAPTURES_DIR), 0o750, undo)?;
        chown(Path::new(CAPTURES_DIR), false)?;
    }
    chown(data_dir, true)?;

    place_binary(binary, digest, Path::new(BINARY), undo)?;
    make_dir(Path::new(ETC_DIR), 0o755, undo)?;
    if let Some(pem) = ca_pem {
        write_file(Path::new(CA), pem.as_bytes(), 0o644, "the controller's CA", undo)?;
    }
    let toml = toml::to_string(&AgentToml {
        server: &args.server,
        ca: ca_path.as_deref().and_then(Path::to_str),
        vm_name,
        resource_group: &args.resource_group,
        location: &args.location,
        data_dir: DATA_DIR,
        interface: &args.interface,
        tags: args.tags.iter().cloned().collect(),
    })
    .context("write the agent's config")?;
    let header = "# The netwatch agent's settings (`netwatch agent --config`), written by its installer.\n";
    write_file(
        Path::new(CONFIG),
        format!("{header}{toml}").as_bytes(),
        0o640,
        "the agent's config",
        undo,
    )?;
    // Readable by the agent, changed only by root.
    chown_to(Path::new(CONFIG), &format!("root:{USER}"), false)?;
    write_file(
        Path::new(UNIT),
        UNIT_TEXT.as_bytes(),
        0o644,
        "the unit netwatch-agent.service",
        undo,
    )?;
    let record = Record {
        version: version.to_owned(),
        binary: PathBuf::from(BINARY),
        config: PathBuf::from(CONFIG),
        ca: ca_path,
        unit: PathBuf::from(UNIT),
        data_dir: data_dir.to_owned(),
        user_created: user_created || previous_record().is_some_and(|record| record.user_created),
        captures_dir_created: captures_dir_created
            || previous_record().is_some_and(|record| record.captures_dir_created),
    };
    let record_json = serde_json::to_string_pretty(&record).context("write the install record")?;
    write_file(
        Path::new(RECORD),
        record_json.as_bytes(),
        0o644,
        "the install record",
        undo,
    )?;

    if systemd_runs() {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", UNIT_NAME])?;
        if args.no_start {
            say("service netwatch-agent enabled, not started (--no-start)");
        } else {
            systemctl(&["restart", UNIT_NAME])?;
            say("service netwatch-agent started: `systemctl status netwatch-agent`, `journalctl -u netwatch-agent`");
        }
    } else {
        say(&format!(
            "this host does not run systemd, so nothing starts the agent by itself: start it in the foreground as \
             its unit would, as user {USER} with only CAP_NET_RAW and CAP_SYS_NICE:\n  setpriv --reuid={USER} \
             --regid={USER} --init-groups --inh-caps=+net_raw,+sys_nice --ambient-caps=+net_raw,+sys_nice \
             --no-new-privs {BINARY} agent --config {CONFIG}\n(or as root: {BINARY} agent --config {CONFIG})"
        ));
    }
    say(&format!("done: netwatch agent {version} installed"));
    Ok(())
}

/// Enrolls with the token given, unless this host holds a credential and no
/// new token is given (then it keeps it).
fn enroll(config: &netwatch_agent::AgentConfig, data_dir: &Path) -> Result<()> {
    let enrolled = netwatch_agent::enrolled(data_dir, &config.token)
        .map_err(|err| anyhow::anyhow!("{}", netwatch_api::error::error_chain(&err)))?;
    match (config.token.is_empty(), enrolled) {
        (true, netwatch_agent::Enrolled::No) => bail!(UsageError(
            "no --enroll-token, and this host is not enrolled: give the token `netwatch vm extension set` printed"
                .to_owned()
        )),
        (true, _) => {
            say("enrolled already: the host keeps its credential");
            return Ok(());
        }
        (false, netwatch_agent::Enrolled::ByThisToken) => {
            say("enrolled already with this token: the host keeps its credential");
            return Ok(());
        }
        (false, _) => {}
    }
    let runtime = crate::runtime()?;
    let vm = runtime
        .block_on(netwatch_agent::enroll(config))
        .map_err(|err| anyhow::anyhow!("{}", netwatch_api::error::error_chain(&err)))?;
    say(&format!("enrolled as {vm}"));
    Ok(())
}

/// Makes the system user unless it exists; whether it was made.
fn ensure_user(undo: &mut Undo) -> Result<bool> {
    if user_exists()? {
        say(&format!("user {USER}: there already"));
        return Ok(false);
    }
    let output = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/var/lib/netwatch",
            "--shell",
            "/usr/sbin/nologin",
            USER,
        ])
        .output()
        .context("run useradd (passwd)")?;
    if !output.status.success() {
        bail!("useradd {USER}: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    undo.user = true;
    say(&format!("user {USER} made (a system user; the service runs as it)"));
    Ok(true)
}

fn user_exists() -> Result<bool> {
    let output = Command::new("getent")
        .args(["passwd", USER])
        .output()
        .context("run getent")?;
    Ok(output.status.success())
}

/// `chown netwatch-agent:netwatch-agent` (`recursive`: everything below too).
fn chown(path: &Path, recursive: bool) -> Result<()> {
    chown_to(path, &format!("{USER}:{USER}"), recursive)
}

/// `chown owner` (`recursive`: everything below too).
fn chown_to(path: &Path, owner: &str, recursive: bool) -> Result<()> {
    let mut command = Command::new("chown");
    if recursive {
        command.arg("-R");
    }
    let output = command.arg(owner).arg(path).output().context("run chown")?;
    if !output.status.success() {
        bail!(
            "chown {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn make_dir(path: &Path, mode: u32, undo: &mut Undo) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    std::fs::create_dir(path).with_context(|| format!("make the directory {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("set the mode of {}", path.display()))?;
    undo.dirs.push(path.to_owned());
    Ok(())
}

/// Fails with the fix when `dir` cannot be written (a read-only /usr, …).
fn writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".netwatch-install-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(err) => bail!(
            "cannot write in {}: {err}; the agent installs there (a read-only system? remount it writable or \
             install the Debian package); nothing was installed",
            dir.display()
        ),
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename), or
/// says it was there already.
fn write_file(path: &Path, bytes: &[u8], mode: u32, what: &str, undo: &mut Undo) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        say(&format!("{what} {}: unchanged", path.display()));
        return Ok(());
    }
    let existed = path.exists();
    replace_file(path, &mut &bytes[..], mode)?;
    if !existed {
        undo.files.push(path.to_owned());
    }
    say(&format!("{what} written: {}", path.display()));
    Ok(())
}

/// `from` into `path` atomically, with `mode`.
fn replace_file(path: &Path, from: &mut dyn Read, mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("file");
    let temporary = dir.join(format!(".{name}.new"));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)?;
        std::io::copy(from, &mut file)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(err).with_context(|| format!("write {}", path.display()));
    }
    Ok(())
}

fn place_binary(binary: &Path, digest: &str, target: &Path, undo: &mut Undo) -> Result<()> {
    if digest_file(target).is_ok_and(|(old, _)| old == digest) {
        say(&format!("binary {}: this build already", target.display()));
        return Ok(());
    }
    let existed = target.exists();
    let mut file = std::fs::File::open(binary).with_context(|| format!("read {}", binary.display()))?;
    replace_file(target, &mut file, 0o755)?;
    if !existed {
        undo.files.push(target.to_owned());
    }
    say(&format!("binary installed: {} (SHA-256 {digest})", target.display()));
    Ok(())
}

fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> Result<()> {
    let output = Command::new("systemctl").args(args).output().context("run systemctl")?;
    if !output.status.success() {
        bail!(
            "systemctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn previous_record() -> Option<Record> {
    read_record(Path::new(RECORD)).ok()
}

fn read_record(path: &Path) -> Result<Record> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "read the install record {}: was the agent installed by netwatch's installer?",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("the install record {} is damaged", path.display()))
}

/// SHA-256 (hex) and size of a file, not followed if it is a link (the
/// agent's user could have made one where its build is staged).
pub fn digest_file(path: &Path) -> std::io::Result<(String, u64)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    netwatch_controller::agent_builds::sha256_of(file)
}

/// `netwatch agent apply` (root, the unit's `ExecStopPost=+`): carries out
/// what the agent, unprivileged, prepared as it stopped, when the installer
/// installed it (its record is there; a package's agent has none). An uninstall the
/// controller asked for; else a staged upgrade, installed only when the
/// controller publishes that very build (a compromised agent cannot have
/// root install a binary of its own); a failure is kept for the agent to
/// report. Nothing to do is fine.
pub fn apply(args: ApplyArgs) -> Result<()> {
    // Installed otherwise (the Debian package: dpkg upgrades it): nothing to do.
    if !args.record.exists() {
        return Ok(());
    }
    let record = read_record(&args.record)?;
    let uninstall_file = record.data_dir.join(netwatch_agent::UNINSTALL_FILE);
    if let Ok(text) = std::fs::read_to_string(&uninstall_file) {
        let purge = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|value| value["purge"].as_bool())
            .unwrap_or(false);
        println!("netwatch apply: the controller deleted this host's agent extension: uninstalling");
        return uninstall_recorded(&record, &args.record, purge, false);
    }
    let dir = record.data_dir.join(netwatch_agent::UPGRADE_DIR);
    let staged_file = dir.join(netwatch_agent::STAGED_FILE);
    let Ok(text) = std::fs::read_to_string(&staged_file) else {
        return Ok(());
    };
    let _ = std::fs::remove_file(&staged_file);
    let staged = dir.join(netwatch_agent::STAGED_BINARY);
    let result = (|| -> Result<String> {
        let build: AgentBuild = serde_json::from_str(&text).context("the staged upgrade's note is damaged")?;
        let (digest, size) = digest_file(&staged).context("read the staged build")?;
        let config = crate::agent::config_for_apply(&record.config)?;
        let published = crate::runtime()?
            .block_on(netwatch_agent::published_builds(&config))
            .map_err(|err| {
                anyhow::anyhow!(
                    "ask the controller which builds it publishes: {}",
                    netwatch_api::error::error_chain(&err)
                )
            })?;
        let confirmed = published.iter().any(|build_published| {
            build_published.version == build.version
                && build_published.sha256 == digest
                && build_published.size == size
                && build_published.arch == std::env::consts::ARCH
        });
        if !confirmed {
            bail!(
                "the staged build (SHA-256 {digest}) is not one the controller publishes for version {} on {}: not \
                 installed",
                build.version,
                std::env::consts::ARCH
            );
        }
        let mut file = std::fs::File::open(&staged).context("read the staged build")?;
        replace_file(&record.binary, &mut file, 0o755)?;
        Ok(build.version)
    })();
    let _ = std::fs::remove_file(&staged);
    match result {
        Ok(version) => {
            let mut record = record;
            record.version.clone_from(&version);
            let json = serde_json::to_string_pretty(&record).context("update the install record")?;
            replace_file(&args.record, &mut json.as_bytes(), 0o644)?;
            println!(
                "netwatch apply: agent {version} installed as {}",
                record.binary.display()
            );
            Ok(())
        }
        Err(err) => {
            let failure = netwatch_api::agent::UpgradeFailure {
                version: serde_json::from_str::<AgentBuild>(&text)
                    .map(|build| build.version)
                    .unwrap_or_default(),
                message: format!("{err:#}"),
                at_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            };
            let path = dir.join(netwatch_agent::FAILED_FILE);
            let json = serde_json::to_string(&failure).unwrap_or_default();
            if replace_file(&path, &mut json.as_bytes(), 0o644).is_ok() {
                let _ = chown(&path, false);
            }
            eprintln!("netwatch apply: the upgrade failed, the agent keeps its version: {err:#}");
            Ok(())
        }
    }
}

/// `netwatch agent uninstall [--purge]`, by hand.
pub fn uninstall(args: UninstallArgs) -> Result<()> {
    if !crate::up::running_as_root() {
        bail!(UsageError(
            "netwatch agent uninstall removes a system service: run it as root".to_owned()
        ));
    }
    let record = read_record(&args.record)?;
    uninstall_recorded(&record, &args.record, args.purge, true)
}

/// Removes what `record` says was installed; the captures stay unless `purge`.
fn uninstall_recorded(record: &Record, record_path: &Path, purge: bool, stop: bool) -> Result<()> {
    let gone = |what: &str, path: &Path| println!("netwatch uninstall: {what} removed: {}", path.display());
    if systemd_runs() {
        let verb = if stop {
            vec!["disable", "--now", UNIT_NAME]
        } else {
            vec!["disable", UNIT_NAME]
        };
        if let Err(err) = systemctl(&verb) {
            eprintln!("netwatch uninstall: {err:#}");
        }
    }
    for (what, path) in [
        ("the unit", Some(record.unit.as_path())),
        ("the binary", Some(record.binary.as_path())),
        ("the config", Some(record.config.as_path())),
        ("the CA", record.ca.as_deref()),
    ] {
        if let Some(path) = path
            && std::fs::remove_file(path).is_ok()
        {
            gone(what, path);
        }
    }
    if systemd_runs() {
        let _ = systemctl(&["daemon-reload"]);
    }
    // The agent's own files; its captures (spooled, written) stay unless purged.
    let data = &record.data_dir;
    if purge {
        if std::fs::remove_dir_all(data).is_ok() {
            gone("the data directory, captures included", data);
        }
        if record.captures_dir_created && std::fs::remove_dir_all(CAPTURES_DIR).is_ok() {
            gone("the captures directory", Path::new(CAPTURES_DIR));
        }
    } else if let Ok(entries) = std::fs::read_dir(data) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name == netwatch_agent::CAPTURES_DIR || name == "spool" {
                continue;
            }
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
        println!(
            "netwatch uninstall: the agent's credential and state removed; its captures stay in {} and {} \
             (`--purge` removes them)",
            data.display(),
            CAPTURES_DIR
        );
    }
    if record.user_created && user_exists().unwrap_or(false) {
        // What stays belongs to root, not to a user that no longer exists.
        for kept in [data.as_path(), Path::new(CAPTURES_DIR)] {
            if kept.exists() {
                let _ = Command::new("chown").args(["-R", "root:root"]).arg(kept).output();
            }
        }
        // Forced: the service has stopped, and a process of the same uid
        // elsewhere (another container) must not keep the user here.
        match Command::new("userdel").args(["--force", USER]).output() {
            Ok(output) if output.status.success() => println!("netwatch uninstall: user {USER} removed"),
            Ok(output) => eprintln!(
                "netwatch uninstall: userdel {USER}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(err) => eprintln!("netwatch uninstall: userdel {USER}: {err}"),
        }
    }
    let _ = std::fs::remove_file(record_path);
    for dir in [Path::new(ETC_DIR), Path::new("/var/lib/netwatch")] {
        // Only when empty.
        let _ = std::fs::remove_dir(dir);
    }
    let _ = std::io::stdout().flush();
    println!("netwatch uninstall: done");
    Ok(())
}
