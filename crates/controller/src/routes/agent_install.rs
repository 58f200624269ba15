//! What a host installs the agent from (issue 14), all public: the agent is
//! open source and the host checks what it gets.
//!
//! - `GET /netwatch/v1/agent/install.sh`: the installer, a POSIX shell script
//!   made for this controller: its URL, its CA and key pin, and the build of
//!   each architecture with its SHA-256. `vm extension set` answers the one
//!   line that runs it, `curl -fsSk --pinnedpubkey 'sha256//…' …/install.sh |
//!   sh -s -- --enroll-token …`: the pin in the command is what the host
//!   trusts (it has no CA yet, hence `-k`: the pin is checked all the same),
//!   so nothing unverified runs and nothing comes from elsewhere (air-gapped
//!   hosts install alike). The script downloads the build with the CA and the
//!   pin, checks its SHA-256 and hands over to `netwatch agent install`.
//! - `GET /netwatch/v1/agent/builds`: the builds served ([`AgentBuild`]s).
//! - `GET /netwatch/v1/agent/builds/{arch}/{version}`: one build's binary.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use netwatch_api::agent::{AGENT_BUILDS_PATH, AgentBuild, INSTALLER_PATH};
use netwatch_api::error::{ApiError, ErrorCode};

use super::{AppState, HttpError, base_url};
use crate::agent_builds::BuildsError;
use crate::tls::Trust;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(INSTALLER_PATH, get(installer))
        .route(AGENT_BUILDS_PATH, get(list_builds))
        .route(&format!("{AGENT_BUILDS_PATH}/{{arch}}/{{version}}"), get(download))
}

impl From<BuildsError> for HttpError {
    fn from(err: BuildsError) -> Self {
        match err {
            BuildsError::Missing { .. } => ApiError::new(ErrorCode::NotFound, err.to_string()).into(),
            BuildsError::Own(_) => ApiError::internal("prepare the agent build", err).into(),
        }
    }
}

async fn list_builds(State(state): State<AppState>) -> Result<Json<Vec<AgentBuild>>, HttpError> {
    let builds = state.config.agent_builds.list().await?;
    Ok(Json(builds.into_iter().map(|served| served.build).collect()))
}

async fn download(
    State(state): State<AppState>,
    Path((arch, version)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let served = state.config.agent_builds.find(&arch, Some(&version)).await?;
    let file = tokio::fs::File::open(&served.path)
        .await
        .map_err(|err| ApiError::internal("open the agent build", err))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024));
    let disposition = format!(
        "attachment; filename=\"netwatch-{}-{}\"",
        served.build.version, served.build.arch
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(served.build.size)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).map_err(|err| ApiError::internal("name the download", err))?,
            ),
        ],
        body,
    )
        .into_response())
}

async fn installer(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response, HttpError> {
    let base = base_url(&state.config, &headers, &uri)?;
    let builds = state.config.agent_builds.list().await?;
    let mut newest: Vec<AgentBuild> = Vec::new();
    for served in builds {
        match newest.iter_mut().find(|build| build.arch == served.build.arch) {
            Some(build) if newer(&served.build.version, &build.version) => *build = served.build,
            Some(_) => {}
            None => newest.push(served.build),
        }
    }
    let servers = agent_servers(&state, &base);
    let script = installer_script(&base, &servers, state.config.trust.as_ref(), &newest);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/x-shellscript; charset=utf-8"),
        )],
        script,
    )
        .into_response())
}

fn newer(a: &str, b: &str) -> bool {
    semver::Version::parse(a).ok() > semver::Version::parse(b).ok()
}

/// `text` as one shell word: as it is when nothing in it is special to the
/// shell, else single-quoted.
pub(super) fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b':' | b'@' | b'+' | b','));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The commands that enroll a host with `flags` (`--enroll-token …`, …):
/// the one-line install as a service (`command`) and the agent in the
/// foreground (`foregroundCommand`, for hosts without systemd or a look first).
pub(super) fn enrollment_commands(state: &AppState, base: &str, flags: &[(&str, &str)]) -> (String, String) {
    let arguments: Vec<String> = flags
        .iter()
        .map(|(flag, value)| format!("{flag} {}", shell_quote(value)))
        .collect();
    let arguments = arguments.join(" ");
    let install = install_command(base, state.config.trust.as_ref(), &arguments);
    let foreground = format!(
        "netwatch agent --server {} {arguments}",
        shell_quote(&agent_servers(state, base))
    );
    (install, foreground)
}

/// The controller address(es) an agent is given: the configured replicas'
/// (`agent_servers`), comma-separated, or the one at `base` it was reached at.
fn agent_servers(state: &AppState, base: &str) -> String {
    if state.config.agent_servers.is_empty() {
        base.to_owned()
    } else {
        state.config.agent_servers.join(",")
    }
}

/// The one line a host runs as root to install the agent with `arguments`
/// (already quoted), for the controller at `base`.
fn install_command(base: &str, trust: Option<&Trust>, arguments: &str) -> String {
    let url = shell_quote(&format!("{base}{INSTALLER_PATH}"));
    match trust {
        Some(trust) => format!(
            "curl -fsSk --pinnedpubkey {} {url} | sh -s -- {arguments}",
            shell_quote(&trust.pin)
        ),
        None => format!("curl -fsS {url} | sh -s -- {arguments}"),
    }
}

/// The installer for the controller at `base`, serving `builds` (the newest
/// of each architecture): it downloads from `base` and gives the agent
/// `servers` (every replica's address, or `base`).
fn installer_script(base: &str, servers: &str, trust: Option<&Trust>, builds: &[AgentBuild]) -> String {
    let archs: Vec<&str> = builds.iter().map(|build| build.arch.as_str()).collect();
    let archs = if archs.is_empty() {
        "none".to_owned()
    } else {
        archs.join(", ")
    };
    let cases: String = builds
        .iter()
        .map(|build| {
            format!(
                "{arch}) version={version} sha256={sha256} size={size} ;;\n",
                arch = build.arch,
                version = shell_quote(&build.version),
                sha256 = shell_quote(&build.sha256),
                size = build.size,
            )
        })
        .collect();
    let (tls, ca_file, ca) = match trust {
        Some(trust) => (
            "--proto =https --cacert \"$tmp/ca.pem\" --pinnedpubkey \"$pin\"",
            "--ca-file \"$tmp/ca.pem\"",
            format!("cat > \"$tmp/ca.pem\" <<'NETWATCH_CA'\n{}NETWATCH_CA\n", trust.ca_pem),
        ),
        None => (
            "",
            "",
            "say \"warning: this controller speaks plain HTTP: nothing proves the download is its own\"\n".to_owned(),
        ),
    };
    let pin = shell_quote(trust.map_or("", |trust| trust.pin.as_str()));
    let server = shell_quote(base);
    let servers = shell_quote(servers);
    format!(
        r#"#!/bin/sh
# The netwatch agent's installer, made by the netwatch controller at {base}.
# Run it as root with the line `netwatch vm extension set` prints:
#   curl -fsSk --pinnedpubkey 'sha256//…' {base}{INSTALLER_PATH} | sh -s -- --enroll-token TOKEN [options]
# It downloads the controller's agent build for this host's architecture
# (checked against the controller's key pin and the build's SHA-256 below),
# then `netwatch agent install` places it in /usr/local/bin, the CA and
# /etc/netwatch/agent.toml, enrolls the host, and installs and starts the
# service netwatch-agent.service. Options: `netwatch agent install --help`.
set -eu
server={server}
servers={servers}
pin={pin}
say() {{ printf 'netwatch install: %s\n' "$*" >&2; }}
fail() {{ say "error: $*"; exit 1; }}
[ "$(id -u)" = 0 ] || fail "run it as root (... | sudo sh -s -- ...): it installs a system service"
command -v curl >/dev/null 2>&1 || fail "curl is needed (apt-get install -y curl)"
command -v sha256sum >/dev/null 2>&1 || fail "sha256sum is needed (coreutils)"
arch=$(uname -m)
case "$arch" in
{cases}*) fail "this controller has no agent build for this host's architecture $arch (it has: {archs}); its operator can add one to the directory agents_dir of its configuration" ;;
esac
tmp=$(mktemp -d) || fail "cannot make a temporary directory"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM
{ca}say "downloading the agent $version for $arch ($size bytes) from $server"
curl -fsS {tls} -o "$tmp/netwatch" "$server{AGENT_BUILDS_PATH}/$arch/$version" || fail "the download from $server failed (above): nothing was installed"
echo "$sha256  $tmp/netwatch" | sha256sum -c --status || fail "the download is corrupt: its SHA-256 is not $sha256; nothing was installed"
chmod 0755 "$tmp/netwatch"
"$tmp/netwatch" agent install --binary "$tmp/netwatch" --sha256 "$sha256" --server "$servers" {ca_file} "$@"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("plain"), "plain");
        assert_eq!(shell_quote("sha256//ab+c="), "'sha256//ab+c='");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let command = install_command(
            "https://h:1",
            Some(&Trust {
                pin: "sha256//abc=".into(),
                ca_pem: String::new(),
            }),
            "--enroll-token t",
        );
        assert_eq!(
            command,
            "curl -fsSk --pinnedpubkey 'sha256//abc=' https://h:1/netwatch/v1/agent/install.sh | sh -s -- \
             --enroll-token t"
        );
    }

    #[test]
    fn the_installer_downloads_from_its_controller_and_gives_the_agent_every_replica() {
        let script = installer_script("https://a:1", "https://a:1,https://b:2", None, &[]);
        assert!(script.contains("\nserver=https://a:1\n"), "{script}");
        assert!(script.contains("\nservers=https://a:1,https://b:2\n"), "{script}");
        assert!(
            script.contains(r#"-o "$tmp/netwatch" "$server/netwatch/v1/agent/builds/"#),
            "{script}"
        );
        assert!(
            script.contains(r#"agent install --binary "$tmp/netwatch" --sha256 "$sha256" --server "$servers""#),
            "{script}"
        );
    }
}
