//! Where the client commands send their requests, and how they print: az's
//! global flags ([`GlobalArgs`]) and the client settings they resolve to
//! ([`Settings`]).
//!
//! Precedence (STYLE 19): a flag, then its environment variable
//! (`NETWATCH_URL`, `NETWATCH_TOKEN`, `NETWATCH_CA`, read by clap), then the
//! client configuration file that `netwatch up` and `netwatch login` write,
//! `$XDG_CONFIG_HOME/netwatch/config.toml` (default `~/.config/netwatch`):
//!
//! ```toml
//! server = "https://127.0.0.1:8443"
//! token = "…"
//! ca = "/home/me/.local/share/netwatch/ca.pem"   # optional
//! ```
//!
//! The file's path is computed from the variables passed in, never read from
//! the process environment deep inside (STYLE 21).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use netwatch_api::resource::{DEFAULT_SUBSCRIPTION_ID, SubscriptionId};
use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// The help heading of the global flags, as az's `--help` names them.
const GLOBAL: &str = "Global Arguments";

/// The file's name inside `$XDG_CONFIG_HOME/netwatch`.
const CONFIG_FILE: &str = "config.toml";

/// az's global arguments, accepted after any client command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GlobalArgs {
    /// Output format: json, jsonc, table, tsv, yaml, yamlc or none.
    #[arg(long, short = 'o', global = true, help_heading = GLOBAL, value_name = "FORMAT", default_value = "json")]
    pub output: String,

    /// JMESPath query string, applied to the output (see http://jmespath.org).
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "JMESPATH")]
    pub query: Option<String>,

    /// Only show errors, suppressing warnings.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub only_show_errors: bool,

    /// Increase logging verbosity.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub verbose: bool,

    /// Show every request and answer (the token masked).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub debug: bool,

    /// The subscription id; default 00000000-0000-0000-0000-000000000000.
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "ID")]
    pub subscription: Option<String>,

    /// The controller's URL; default $NETWATCH_URL, then the client configuration file.
    #[arg(long, global = true, help_heading = GLOBAL, env = "NETWATCH_URL", value_name = "URL")]
    pub server: Option<String>,

    /// The API token; default $NETWATCH_TOKEN, then the client configuration file.
    #[arg(
        long,
        global = true, help_heading = GLOBAL,
        env = "NETWATCH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// A CA certificate (PEM) to trust for the controller; default $NETWATCH_CA, then the file.
    #[arg(long, global = true, help_heading = GLOBAL, env = "NETWATCH_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// The client configuration file, as `netwatch up` and `netwatch login` write it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The controller's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A CA certificate (PEM) to trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl ConfigFile {
    /// Reads the file at `path`; `None` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, CliError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CliError::File {
                    what: "read the client configuration",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        toml::from_str(&text).map(Some).map_err(|err| {
            CliError::Usage(format!(
                "the client configuration {} is not valid: {}; it holds server, token and ca \
                 (`netwatch login --server URL --token TOKEN` writes it)",
                path.display(),
                err.message()
            ))
        })
    }
}

/// `$XDG_CONFIG_HOME/netwatch/config.toml`, or `$HOME/.config/netwatch/config.toml`;
/// `None` when neither variable is set. `env` reads a variable.
pub fn config_path(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name: &str| env(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    let base = set("XDG_CONFIG_HOME").or_else(|| set("HOME").map(|home| home.join(".config")))?;
    Some(base.join("netwatch").join(CONFIG_FILE))
}

/// Where requests go and with what credentials, resolved and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `https://host:port`, without a trailing `/`.
    pub server: String,
    pub token: String,
    pub ca: Option<PathBuf>,
    pub subscription: SubscriptionId,
}

impl Settings {
    /// Flags (and their environment variables) first, then `file`.
    pub fn resolve(flags: &GlobalArgs, file: Option<&ConfigFile>, file_path: Option<&Path>) -> Result<Self, CliError> {
        let subscription = subscription(flags.subscription.as_deref())?;
        let from_file = |pick: fn(&ConfigFile) -> Option<String>| file.and_then(pick).filter(|v| !v.is_empty());
        let where_file = file_path.map_or_else(
            || "the client configuration file".to_owned(),
            |path| path.display().to_string(),
        );
        let hint = format!(
            "pass --server URL and --token TOKEN, set NETWATCH_URL and NETWATCH_TOKEN, or run \
             `netwatch login --server URL --token TOKEN` (or `netwatch up`) to write {where_file}"
        );
        let server = flags
            .server
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| from_file(|f| f.server.clone()))
            .ok_or_else(|| CliError::Usage(format!("no netwatch server is configured: {hint}")))?;
        let token = flags
            .token
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| from_file(|f| f.token.clone()))
            .ok_or_else(|| CliError::Usage(format!("no netwatch token is configured: {hint}")))?;
        let ca = flags
            .ca
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| file.and_then(|f| f.ca.clone()));
        Ok(Self {
            server: server_url(&server)?,
            token,
            ca,
            subscription,
        })
    }
}

/// `--subscription`, default the zero GUID.
pub fn subscription(text: Option<&str>) -> Result<SubscriptionId, CliError> {
    let text = text.unwrap_or(DEFAULT_SUBSCRIPTION_ID);
    SubscriptionId::parse("--subscription", text).map_err(|err| CliError::Usage(format!("argument {err}")))
}

/// The server URL without a trailing `/`: `https://host[:port]`, or
/// `http://` to a loopback address only (a token must not cross a network in
/// clear; az refuses plain http altogether).
pub fn server_url(text: &str) -> Result<String, CliError> {
    let trimmed = text.trim_end_matches('/');
    let bad = |why: &str| {
        Err(CliError::Usage(format!(
            "the server URL {text:?} {why}: give it as https://HOST:PORT, such as https://127.0.0.1:8443"
        )))
    };
    let (scheme, rest) = match trimmed.split_once("://") {
        Some(parts) => parts,
        None => return bad("has no scheme"),
    };
    if rest.is_empty() {
        return bad("has no host");
    }
    if rest.contains(['/', '?', '#', '@', ' ']) {
        return bad("must be only a scheme, host and port");
    }
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => rest.rsplit_once(':').map_or(rest, |(host, _)| host),
    };
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(trimmed.to_owned()),
        "http" if is_loopback(host) => Ok(trimmed.to_owned()),
        "http" => bad("is plain http to another machine, which would send the token in clear; use https"),
        _ => bad("must start with https://"),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(server: Option<&str>, token: Option<&str>) -> GlobalArgs {
        GlobalArgs {
            server: server.map(str::to_owned),
            token: token.map(str::to_owned),
            ..GlobalArgs::default()
        }
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = ConfigFile {
            server: Some("https://file:1".to_owned()),
            token: Some("file-token".to_owned()),
            ca: Some("/file/ca.pem".into()),
        };
        let settings = Settings::resolve(&flags(Some("https://flag:2/"), None), Some(&file), None).unwrap();
        assert_eq!(settings.server, "https://flag:2");
        assert_eq!(settings.token, "file-token");
        assert_eq!(settings.ca, Some(PathBuf::from("/file/ca.pem")));
        assert_eq!(settings.subscription.as_str(), DEFAULT_SUBSCRIPTION_ID);
    }

    #[test]
    fn nothing_configured_says_how_to_configure() {
        let err = Settings::resolve(&flags(None, None), None, Some(Path::new("/x/config.toml"))).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(text.contains("no netwatch server is configured"), "{text}");
        assert!(text.contains("netwatch login --server URL --token TOKEN"), "{text}");
        assert!(text.contains("/x/config.toml"), "{text}");
    }

    #[test]
    fn server_urls() {
        assert_eq!(server_url("https://127.0.0.1:8443/").unwrap(), "https://127.0.0.1:8443");
        assert_eq!(server_url("http://localhost:80").unwrap(), "http://localhost:80");
        assert_eq!(server_url("http://[::1]:80").unwrap(), "http://[::1]:80");
        for bad in [
            "controller:8443",
            "http://10.0.0.1:80",
            "ftp://x",
            "https://",
            "https://x/path",
        ] {
            let err = server_url(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn a_bad_subscription_is_a_usage_error() {
        let err = subscription(Some("mine")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .starts_with("argument --subscription \"mine\" is not a valid subscription id")
        );
    }

    #[test]
    fn config_path_follows_xdg() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
        };
        assert_eq!(
            config_path(env(&[("XDG_CONFIG_HOME", "/c"), ("HOME", "/h")])),
            Some(PathBuf::from("/c/netwatch/config.toml"))
        );
        assert_eq!(
            config_path(env(&[("XDG_CONFIG_HOME", ""), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.config/netwatch/config.toml"))
        );
        assert_eq!(config_path(env(&[])), None);
    }

    #[test]
    fn the_file_netwatch_up_writes_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "# netwatch client settings, written by `netwatch up`.\nserver = \"https://127.0.0.1:1\"\ntoken = \"t\"\nca = \"/d/ca.pem\"\n",
        )
        .unwrap();
        let file = ConfigFile::load(&path).unwrap().unwrap();
        assert_eq!(file.server.as_deref(), Some("https://127.0.0.1:1"));
        std::fs::write(&path, "server = \"x\"\nsevrer = \"y\"\n").unwrap();
        let err = ConfigFile::load(&path).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        assert_eq!(ConfigFile::load(&dir.path().join("none.toml")).unwrap(), None);
    }
}
