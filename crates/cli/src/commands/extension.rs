//! The netwatch agent as a compute extension, shared by `vm extension …`
//! and `vmss extension …`: the one extension there is
//! (`NetworkWatcherAgentLinux` by `Microsoft.Azure.NetworkWatcher`; agents
//! run on Linux only), the properties `extension set` sends, the requests of
//! `show`, `list`, `set` and `delete` under a holder (a VM or a scale set),
//! and what to tell the user when the answer carries an enrollment (the
//! command to run on the host, or on every host of a scale set).

use std::path::Path;

use netwatch_api::resource::{AGENT_EXTENSION_NAME, ResourceName};
use reqwest::Method;
use serde_json::{Value, json};

use super::{json_argument, name_arg};
use crate::error::CliError;
use crate::{Context, shape};

/// What az's `vm extension show/list/set` send (the compute api-version of
/// az's extension commands; a scale set's extension routes take the same).
pub(crate) const EXTENSION_API_VERSION: &str = "2024-11-01";
/// The agent extension's publisher (api-contract.md §5).
const PUBLISHER: &str = "Microsoft.Azure.NetworkWatcher";
/// The Windows agent's extension name, refused with a clear message.
const WINDOWS_AGENT: &str = "NetworkWatcherAgentWindows";
/// The handler version az installs when none is given.
const DEFAULT_VERSION: &str = "1.4";

/// `-n/--name` of an extension: only the Linux agent exists. `holders` says
/// what has it, for the message (`VMs`, `scale sets`).
pub(crate) fn extension_name(text: &str, holders: &str) -> Result<ResourceName, CliError> {
    let name = name_arg("--name/-n", text)?;
    if text.eq_ignore_ascii_case(WINDOWS_AGENT) {
        return Err(CliError::Usage(format!(
            "argument --name/-n: {WINDOWS_AGENT} is not available: the netwatch agent runs on Linux only; \
             use --name {AGENT_EXTENSION_NAME}"
        )));
    }
    if !text.eq_ignore_ascii_case(AGENT_EXTENSION_NAME) {
        return Err(CliError::Usage(format!(
            "argument --name/-n: netwatch {holders} have one extension, the agent: use --name {AGENT_EXTENSION_NAME}, \
             not {text:?}"
        )));
    }
    Ok(name)
}

/// The `properties` of `extension set`'s PUT, as az builds them from
/// `--publisher`, `--version` (default 1.4), `--settings` (a JSON object,
/// inline or `@file`), `--no-auto-upgrade` and `--force-update` (a new
/// `forceUpdateTag`: the agent upgrades even while it captures).
pub(crate) fn properties(
    publisher: &str,
    version: Option<String>,
    settings: Option<&str>,
    (no_auto_upgrade, force_update): (bool, bool),
) -> Result<Value, CliError> {
    if !publisher.eq_ignore_ascii_case(PUBLISHER) {
        return Err(CliError::Usage(format!(
            "argument --publisher: the netwatch agent is published as {PUBLISHER}, not {publisher:?}"
        )));
    }
    let version = version.unwrap_or_else(|| DEFAULT_VERSION.to_owned());
    let well_formed = !version.is_empty()
        && version.split('.').count() <= 4
        && version
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    if !well_formed {
        return Err(CliError::Usage(format!(
            "argument --version: {version:?} is not a version such as 1.4"
        )));
    }
    let mut properties = json!({
        "publisher": PUBLISHER,
        "type": AGENT_EXTENSION_NAME,
        "typeHandlerVersion": version,
        "autoUpgradeMinorVersion": !no_auto_upgrade,
    });
    if force_update {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis());
        properties["forceUpdateTag"] = json!(now.to_string());
    }
    if let Some(text) = settings {
        let json = json_argument("--settings", text)?;
        let settings: Value = serde_json::from_str(&json)
            .map_err(|err| CliError::Usage(format!("argument --settings: not valid JSON: {err}")))?;
        if !settings.is_object() {
            return Err(CliError::Usage(
                "argument --settings: must be a JSON object, such as {}".to_owned(),
            ));
        }
        properties["settings"] = settings;
    }
    Ok(properties)
}

/// Who an enrollment is for: one VM's host, or every host of a scale set.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Enrolling<'a> {
    Vm,
    ScaleSet(&'a str),
}

/// `GET {holder}/extensions/{name}`: the extension, in az's shape.
pub(crate) async fn show(context: &Context, holder: &str, name: &ResourceName) -> Result<Option<Value>, CliError> {
    let path = format!("{holder}/extensions/{name}");
    let value = context.client.get(&path, EXTENSION_API_VERSION).await?;
    Ok(Some(shape::vm_extension(&value)))
}

/// `GET {holder}/extensions`: the extensions, in az's shape.
pub(crate) async fn list(context: &Context, holder: &str) -> Result<Option<Value>, CliError> {
    let value = context
        .client
        .get(&format!("{holder}/extensions"), EXTENSION_API_VERSION)
        .await?;
    Ok(Some(shape::list(&value, shape::vm_extension)))
}

/// `DELETE {holder}/extensions/{name}`, its operation followed when `wait`;
/// az prints nothing. `purge`: the agent's uninstall removes its captures too.
pub(crate) async fn delete(
    context: &Context,
    holder: &str,
    name: &ResourceName,
    (wait, purge): (bool, bool),
) -> Result<Option<Value>, CliError> {
    let client = &context.client;
    let mut url = client.url(&format!("{holder}/extensions/{name}"), EXTENSION_API_VERSION);
    if purge {
        url.push_str("&purge=true");
    }
    let first = client.begin(Method::DELETE, &url, None, &[200, 202, 204]).await?;
    if wait {
        client.wait(&Method::DELETE, &url, first).await?;
    }
    Ok(None)
}

/// `PUT {holder}/extensions/{name}` with `body`: when the answer carries an
/// enrollment, the command to run is printed on standard error and the
/// extension as it is now returned (the host has to act); otherwise the
/// operation is followed unless `no_wait`.
pub(crate) async fn set(
    context: &Context,
    holder: &str,
    name: &ResourceName,
    body: &Value,
    no_wait: bool,
    enrolling: Enrolling<'_>,
) -> Result<Option<Value>, CliError> {
    let client = &context.client;
    let url = client.url(&format!("{holder}/extensions/{name}"), EXTENSION_API_VERSION);
    let first = client.begin(Method::PUT, &url, Some(body), &[200, 201, 202]).await?;
    if let Some(enrollment) = first.body.pointer("/properties/netwatch/enrollment") {
        eprintln!(
            "{}",
            enrollment_text(enrollment, context.settings.ca.as_deref(), enrolling)
        );
        return Ok(Some(shape::vm_extension(&first.body)));
    }
    if no_wait {
        return Ok(None);
    }
    let result = client.wait(&Method::PUT, &url, first).await?;
    Ok(result.map(|value| shape::vm_extension(&value)))
}

/// What to tell the user about an enrollment (`properties.netwatch.enrollment`
/// of the PUT's answer): the one line that installs the agent as a service
/// on the host (or hosts; it carries the controller's key pin, so the host
/// needs nothing else), how long and how often its token or key may be
/// used, and the agent in the foreground instead, with `--ca FILE` when this
/// client trusts a CA file.
pub(crate) fn enrollment_text(enrollment: &Value, ca: Option<&Path>, enrolling: Enrolling<'_>) -> String {
    let command = enrollment.get("command").and_then(Value::as_str).unwrap_or_default();
    let expires = enrollment.get("expiresOn").and_then(Value::as_str);
    let mut text = match enrolling {
        Enrolling::Vm => {
            let mut text = String::from("The agent is not installed yet. Run this on the host, as root");
            if let Some(expires) = expires {
                text.push_str(&format!(" (the token can be used once, until {expires})"));
            }
            text
        }
        Enrolling::ScaleSet(name) => {
            let mut text = format!("Run this on every host of scale set {name}, as root, to join it");
            // A key without a use limit has `maxUses: null`.
            let uses = match enrollment.get("maxUses").and_then(Value::as_u64) {
                Some(1) => "by one host".to_owned(),
                Some(uses) => format!("by up to {uses} hosts"),
                None => "by any number of hosts".to_owned(),
            };
            match expires {
                Some(expires) => text.push_str(&format!(" (the key can be used {uses}, until {expires})")),
                None => text.push_str(&format!(" (the key can be used {uses})")),
            }
            text
        }
    };
    text.push_str(&format!(
        ":

    {command}

It installs the agent as the service netwatch-agent (its own user, only the \
         capabilities a capture needs), enrolled."
    ));
    if let Some(foreground) = enrollment.get("foregroundCommand").and_then(Value::as_str) {
        let mut foreground = foreground.to_owned();
        if let Some(ca) = ca
            && !foreground.contains("--ca ")
        {
            foreground.push_str(&format!(" --ca {}", shell_word(&ca.display().to_string())));
        }
        text.push_str(&format!(
            " To run the agent in the foreground instead (no service):\n\n    {foreground}\n"
        ));
        if let Some(ca) = ca {
            let hosts = match enrolling {
                Enrolling::Vm => "the host first if it is another machine",
                Enrolling::ScaleSet(_) => "each host first if they are other machines",
            };
            text.push_str(&format!(
                "\nFor that, copy {} to the same path on {hosts}.",
                ca.display()
            ));
        }
    }
    text
}

/// `text` quoted for a POSIX shell when it needs to be.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b':' | b'=' | b'@' | b'+'));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_install_line_comes_first_and_the_foreground_command_gets_the_ca() {
        let install = "curl -fsSk --pinnedpubkey 'sha256//p=' 'https://h:8443/netwatch/v1/agent/install.sh' | sh -s -- \
                       --enroll-token 't'";
        let enrollment = json!({
            "token": "t", "expiresOn": "2026-12-01T00:00:00.0000000Z",
            "command": install,
            "foregroundCommand": "netwatch agent --server 'https://h:8443' --enroll-token 't' --vm-name 'vm'"
        });
        let text = enrollment_text(&enrollment, Some(Path::new("/data/my ca.pem")), Enrolling::Vm);
        assert!(text.contains(&format!(":\n\n    {install}\n")), "{text}");
        assert!(
            text.contains("    netwatch agent --server 'https://h:8443' --enroll-token 't' --vm-name 'vm' --ca '/data/my ca.pem'\n"),
            "{text}"
        );
        assert!(text.contains("until 2026-12-01T00:00:00.0000000Z"), "{text}");
        let text = enrollment_text(&enrollment, None, Enrolling::Vm);
        assert!(!text.contains("--ca"), "{text}");
    }

    #[test]
    fn a_scale_set_s_enrollment_is_for_every_host() {
        let command =
            "netwatch agent --server https://10.0.0.1:8443 --enroll-token k --resource-group rg --location westus";
        let enrollment = json!({
            "key": "k", "expiresOn": "2026-12-01T00:00:00.0000000Z", "maxUses": 40, "command": "install",
            "foregroundCommand": command
        });
        let text = enrollment_text(
            &enrollment,
            Some(Path::new("/etc/netwatch/ca.pem")),
            Enrolling::ScaleSet("web"),
        );
        assert!(
            text.starts_with(
                "Run this on every host of scale set web, as root, to join it \
                 (the key can be used by up to 40 hosts, until 2026-12-01T00:00:00.0000000Z):"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!("    {command} --ca /etc/netwatch/ca.pem\n")),
            "{text}"
        );
        assert!(text.ends_with(
            "For that, copy /etc/netwatch/ca.pem to the same path on each host first if they are other machines."
        ));
        assert!(text.contains(":\n\n    install\n"), "{text}");
        let unlimited = json!({"key": "k", "maxUses": null, "command": "install", "foregroundCommand": command});
        let text = enrollment_text(&unlimited, None, Enrolling::ScaleSet("web"));
        assert!(text.contains("(the key can be used by any number of hosts):"), "{text}");
        assert!(text.ends_with(&format!("    {command}\n")), "{text}");
    }
}
