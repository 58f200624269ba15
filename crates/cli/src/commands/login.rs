//! `netwatch login --server URL --token TOKEN [--ca FILE]`: checks the
//! server and token (`GET /subscriptions`, as `az login` does), then writes
//! the client configuration file the other commands read (the one `netwatch
//! up` writes), mode 0600 since it holds the token. Prints the subscription
//! as `az login` prints its accounts.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::client::Client;
use crate::error::CliError;
use crate::settings::{ConfigFile, GlobalArgs, Settings, server_url};
use crate::{Printer, settings};

/// What `az login` sends to list subscriptions.
const API_VERSION: &str = "2022-12-01";

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
}

/// The settings to check and save.
#[derive(Debug)]
pub(crate) struct Prepared {
    server: String,
    token: String,
}

pub(crate) fn prepare(args: &LoginArgs) -> Result<Prepared, CliError> {
    let missing = |flag: &str| {
        CliError::Usage(format!(
            "the following arguments are required: {flag} (netwatch login --server URL --token TOKEN [--ca FILE])"
        ))
    };
    let server = args
        .global
        .server
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("--server"))?;
    let token = args
        .global
        .token
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("--token"))?;
    Ok(Prepared {
        server: server_url(&server)?,
        token,
    })
}

pub(crate) fn execute(
    prepared: Prepared,
    global: &GlobalArgs,
    config_path: Option<&Path>,
    printer: &Printer,
) -> Result<(), CliError> {
    let path = config_path.ok_or_else(|| {
        CliError::Usage("neither XDG_CONFIG_HOME nor HOME is set: set one for the client configuration".to_owned())
    })?;
    // A relative CA path would break from another directory: keep it absolute.
    let ca = match &global.ca {
        Some(ca) => Some(std::path::absolute(ca).map_err(|source| CliError::File {
            what: "find the CA file",
            path: ca.clone(),
            source,
        })?),
        None => None,
    };
    let settings = Settings {
        server: prepared.server,
        token: prepared.token,
        ca,
        subscription: settings::subscription(global.subscription.as_deref())?,
    };
    let client = Client::new(&settings, global.debug)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::Unexpected(format!("start the async runtime: {err}")))?;
    let subscriptions = runtime.block_on(client.get("/subscriptions", API_VERSION))?;
    let file = ConfigFile {
        server: Some(settings.server.clone()),
        token: Some(settings.token.clone()),
        ca: settings.ca.clone(),
    };
    write_config(path, &file)?;
    let accounts: Vec<Value> = subscriptions
        .get("value")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|subscription| {
            let id = subscription.get("subscriptionId").cloned().unwrap_or(Value::Null);
            json!({
                "cloudName": "netwatch",
                "homeTenantId": subscription.get("tenantId").cloned().unwrap_or(Value::Null),
                "id": id,
                "isDefault": id.as_str() == Some(settings.subscription.as_str()),
                "managedByTenants": [],
                "name": subscription.get("displayName").cloned().unwrap_or(Value::Null),
                "state": subscription.get("state").cloned().unwrap_or(Value::Null),
                "tenantId": subscription.get("tenantId").cloned().unwrap_or(Value::Null),
                "user": {"name": "netwatch", "type": "token"},
            })
        })
        .collect();
    printer.print(&Value::Array(accounts))
}

/// Writes the file (0600: it holds the token) through a temporary file and a rename.
fn write_config(path: &Path, file: &ConfigFile) -> Result<(), CliError> {
    fn fail(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CliError + use<> {
        let path = path.to_owned();
        move |source| CliError::File { what, path, source }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail("create the directory", dir))?;
    }
    let text = format!(
        "# netwatch client settings, written by `netwatch login`.\n{}",
        toml::to_string(file).map_err(|err| CliError::Unexpected(format!("write the client configuration: {err}")))?
    );
    let temporary = path.with_extension("partial");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(fail("create", &temporary))?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(fail("write", &temporary))?;
    std::fs::rename(&temporary, path).map_err(fail("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_file_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netwatch/config.toml");
        let file = ConfigFile {
            server: Some("https://127.0.0.1:8443".to_owned()),
            token: Some("secret".to_owned()),
            ca: Some("/d/ca.pem".into()),
        };
        write_config(&path, &file).unwrap();
        assert_eq!(ConfigFile::load(&path).unwrap(), Some(file));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn login_needs_a_server_and_token() {
        let err = prepare(&LoginArgs {
            global: GlobalArgs {
                token: Some("t".to_owned()),
                ..GlobalArgs::default()
            },
        })
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("required: --server"), "{err}");
    }
}
