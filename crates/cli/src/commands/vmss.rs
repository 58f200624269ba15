//! `netwatch vmss …`: scale sets, named groups of hosts whose agents joined
//! with the set's key (DESIGN §2, §8 "Fleets"), as az's `vmss` commands
//! show Azure's.
//!
//! - `vmss list/show`, `vmss list-instances`, `vmss delete-instances`: az's
//!   flags, its api-versions per command (aaz `vmss/_list.py` 2024-11-01,
//!   `_show.py` and `vms/_show.py` 2026-04-01, `_list_instances.py` and
//!   `_delete_instances.py` 2024-11-01) and its table columns (azure-cli
//!   `vm/_format.py`; `list-instances` has no transformer, so az's default
//!   table shows its scalar fields). `delete-instances` POSTs
//!   `{"instanceIds": [...]}` to `…/delete` as aaz does; a deleted
//!   instance's agent is cut off. *Our choice*: `--instance-ids *` (all
//!   instances; az sends the `*`) is expanded here into the set's instance
//!   ids, read with `list-instances`, since netwatch's server takes ids only.
//! - `vmss extension set/show/list/delete`: the agent as the scale set's
//!   extension, through the extension routes (az reads and PUTs the whole
//!   scale set instead; netwatch's server has the finer routes, with az's
//!   compute api-version). `set` answers with the extension, and when hosts
//!   still have to join, an enrollment: the command to run on every host,
//!   printed on standard error as `vm extension set` prints a VM's.
//!   netwatch's own `--key-expires-in` and `--key-max-uses` bound the join
//!   key; they go in `properties.settings` (`keyExpiresInSeconds`,
//!   `keyMaxUses`), checked here first. `-l/--location` (netwatch's too)
//!   places a scale set the PUT makes; without it the server picks its first
//!   location, and an existing set keeps its own.
//!
//! Every flag is checked before a request is sent (exit 2, the flag named).

use clap::Subcommand;
use netwatch_api::resource::{Location, ResourceGroupName, ResourceName};
use reqwest::Method;
use serde_json::{Value, json};

use super::extension::{self, Enrolling, properties};
use super::{flag_error, group_arg as group, name_arg as name};
use crate::error::CliError;
use crate::settings::GlobalArgs;
use crate::{Context, shape};

/// What az's `vmss list` sends.
const LIST_API_VERSION: &str = "2024-11-01";
/// What az's `vmss show` sends, with and without `--instance-id`.
const SHOW_API_VERSION: &str = "2026-04-01";
/// What az's `vmss list-instances` and `vmss delete-instances` send.
const INSTANCES_API_VERSION: &str = "2024-11-01";
/// What has the agent extension, for messages.
const HOLDERS: &str = "scale sets";
/// The settings `--key-expires-in` and `--key-max-uses` fill in.
const KEY_EXPIRES_IN_SECONDS: &str = "keyExpiresInSeconds";
const KEY_MAX_USES: &str = "keyMaxUses";
/// The longest a join key may live: 30 days.
const MAX_KEY_EXPIRES_IN_SECONDS: u64 = 30 * 24 * 60 * 60;
/// `--instance-ids *`: every instance.
const ALL_INSTANCES: &str = "*";

/// az's `transform_vmss_list_with_zones_table_output`.
const VMSS_LIST_TABLE: &str = "[].{Name:name, ResourceGroup:resourceGroup, Location:location, \
     Zones: (!zones && ' ') || join(' ', zones), Capacity:sku.capacity, Overprovision:overprovision, \
     UpgradePolicy:upgradePolicy.mode}";
/// az's `get_vmss_table_output_transformer(loader, for_list=False)`.
const VMSS_TABLE: &str = "{Name:name, ResourceGroup:resourceGroup, Location:location, \
     Zones: (!zones && ' ') || join(' ', zones), Capacity:sku.capacity, Overprovision:overprovision, \
     UpgradePolicy:upgradePolicy.mode}";

#[derive(Debug, clap::Args)]
pub struct VmssArgs {
    #[command(subcommand)]
    pub(crate) command: VmssCommand,
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
pub enum VmssCommand {
    /// List the scale sets.
    List {
        /// Only the scale sets of this resource group.
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: Option<String>,
    },
    /// Show a scale set, or one of its instances.
    Show {
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: String,
        /// The scale set's name.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
        /// Show this instance (a host of the set) instead of the set.
        #[arg(long, value_name = "ID", allow_negative_numbers = true)]
        instance_id: Option<String>,
    },
    /// List the instances of a scale set: its hosts.
    ListInstances {
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: String,
        /// The scale set's name.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
    },
    /// Delete instances of a scale set: their agents are cut off.
    DeleteInstances {
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: String,
        /// The scale set's name.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
        /// Space-separated list of IDs (ex: 1 2 3 ...) or * for all instances.
        #[arg(long, value_name = "ID", num_args = 1.., required = true, allow_negative_numbers = true)]
        instance_ids: Vec<String>,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Manage the agent extension of a scale set.
    Extension {
        #[command(subcommand)]
        command: ExtensionCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExtensionCommand {
    /// Install the agent on a scale set: prints the command to run on every host.
    // `--version` is the extension's version here, as in az, not netwatch's.
    #[command(disable_version_flag = true)]
    Set(Box<SetArgs>),
    /// Show the agent extension of a scale set, with its join keys.
    Show {
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: String,
        /// The scale set's name.
        #[arg(long, value_name = "NAME")]
        vmss_name: String,
        /// The extension's name: NetworkWatcherAgentLinux.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
    },
    /// List the extensions of a scale set.
    List {
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: String,
        /// The scale set's name.
        #[arg(long, value_name = "NAME")]
        vmss_name: String,
    },
    /// Remove the agent extension: the set's join keys are revoked and its
    /// hosts' agents cut off.
    Delete {
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: String,
        /// The scale set's name.
        #[arg(long, value_name = "NAME")]
        vmss_name: String,
        /// The extension's name: NetworkWatcherAgentLinux.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
        /// netwatch: the agents' uninstall removes their captures too (they
        /// stay on the hosts otherwise).
        #[arg(long)]
        purge: bool,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    #[arg(long, short = 'g', value_name = "GROUP")]
    resource_group: String,
    /// The scale set's name.
    #[arg(long, value_name = "NAME")]
    vmss_name: String,
    /// The extension's name: NetworkWatcherAgentLinux.
    #[arg(long, short = 'n', value_name = "NAME")]
    name: String,
    /// The extension's publisher: Microsoft.Azure.NetworkWatcher.
    #[arg(long, value_name = "PUBLISHER")]
    publisher: String,
    /// The extension's version (typeHandlerVersion); default 1.4.
    #[arg(long, value_name = "VERSION")]
    version: Option<String>,
    /// JSON settings, inline or @file.
    #[arg(long, value_name = "JSON")]
    settings: Option<String>,
    /// Protected JSON settings (the agent takes none; not sent).
    #[arg(long, value_name = "JSON")]
    protected_settings: Option<String>,
    /// Do not let the agent upgrade to a newer minor version.
    #[arg(long)]
    no_auto_upgrade: bool,
    /// Upgrade the agent even while it captures (its capture resumes after
    /// the restart); otherwise it waits until none runs.
    #[arg(long)]
    force_update: bool,
    /// netwatch: how long the hosts' join key stays valid, in seconds (at most 2592000, 30 days).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    key_expires_in: Option<String>,
    /// netwatch: how many hosts may join with the key (default: any number until it expires).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    key_max_uses: Option<String>,
    /// netwatch: the location of a scale set this makes; default the server's first location.
    #[arg(long, short = 'l', value_name = "LOCATION")]
    location: Option<String>,
    /// Do not wait for the long-running operation to finish.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug)]
pub(crate) enum Prepared {
    List(Option<ResourceGroupName>),
    Show(ResourceGroupName, ResourceName, Option<String>),
    ListInstances(ResourceGroupName, ResourceName),
    DeleteInstances {
        group: ResourceGroupName,
        vmss: ResourceName,
        instance_ids: Vec<String>,
        no_wait: bool,
    },
    ExtensionShow(ResourceGroupName, ResourceName, ResourceName),
    ExtensionList(ResourceGroupName, ResourceName),
    ExtensionDelete(ResourceGroupName, ResourceName, ResourceName, (bool, bool)),
    ExtensionSet {
        group: ResourceGroupName,
        vmss: ResourceName,
        name: ResourceName,
        location: Option<Location>,
        properties: Value,
        no_wait: bool,
        protected_settings: bool,
    },
}

/// The command's table transformer (see [`super::table_transformer`]).
pub(crate) fn table_transformer(prepared: &Prepared) -> Option<&'static str> {
    match prepared {
        Prepared::List(_) => Some(VMSS_LIST_TABLE),
        // az's `vmss show` has one transformer, with or without --instance-id.
        Prepared::Show(..) => Some(VMSS_TABLE),
        _ => None,
    }
}

/// The extension name: only the Linux agent exists.
fn extension_name(text: &str) -> Result<ResourceName, CliError> {
    super::extension::extension_name(text, HOLDERS)
}

/// A scale-set instance id: a number such as `0` or `17`, as the server
/// writes it (`007` is `7`).
fn instance_id(flag: &str, text: &str) -> Result<String, CliError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match digits.then(|| text.parse::<u32>().ok()).flatten() {
        Some(id) => Ok(id.to_string()),
        None => Err(CliError::Usage(format!(
            "argument {flag}: {text:?} is not an instance id: instance ids are numbers such as 0 or 1 \
             (see `netwatch vmss list-instances`)"
        ))),
    }
}

/// `--instance-ids`: ids, each once, or `*` alone.
fn instance_ids(texts: &[String]) -> Result<Vec<String>, CliError> {
    const FLAG: &str = "--instance-ids";
    if texts.iter().any(|text| text == ALL_INSTANCES) {
        if texts.len() > 1 {
            return Err(CliError::Usage(format!(
                "argument {FLAG}: {ALL_INSTANCES} stands for all instances: give it alone, or list instance ids"
            )));
        }
        return Ok(vec![ALL_INSTANCES.to_owned()]);
    }
    let mut ids: Vec<String> = Vec::with_capacity(texts.len());
    for text in texts {
        let id = instance_id(FLAG, text)?;
        if ids.contains(&id) {
            return Err(CliError::Usage(format!(
                "argument {FLAG}: instance {id} is named twice: name each instance once"
            )));
        }
        ids.push(id);
    }
    Ok(ids)
}

/// A positive whole number given with `flag`, at most `max`; `what` says
/// what it counts and `why` why it has that maximum, for the messages.
fn positive(flag: &str, text: &str, what: &str, max: u64, why: &str) -> Result<u64, CliError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match digits.then(|| text.parse::<u64>().ok()).flatten() {
        Some(0) | None => Err(CliError::Usage(format!(
            "argument {flag}: {text:?} is not a positive whole number of {what}"
        ))),
        Some(value) if value > max => Err(CliError::Usage(format!(
            "argument {flag}: {value} is more than the maximum {max}{why}"
        ))),
        Some(value) => Ok(value),
    }
}

pub(crate) fn prepare(command: VmssCommand) -> Result<Prepared, CliError> {
    Ok(match command {
        VmssCommand::List { resource_group } => Prepared::List(resource_group.as_deref().map(group).transpose()?),
        VmssCommand::Show {
            resource_group,
            name: vmss,
            instance_id: instance,
        } => Prepared::Show(
            group(&resource_group)?,
            name("--name/-n", &vmss)?,
            instance.map(|text| instance_id("--instance-id", &text)).transpose()?,
        ),
        VmssCommand::ListInstances {
            resource_group,
            name: vmss,
        } => Prepared::ListInstances(group(&resource_group)?, name("--name/-n", &vmss)?),
        VmssCommand::DeleteInstances {
            resource_group,
            name: vmss,
            instance_ids: ids,
            no_wait,
        } => Prepared::DeleteInstances {
            group: group(&resource_group)?,
            vmss: name("--name/-n", &vmss)?,
            instance_ids: instance_ids(&ids)?,
            no_wait,
        },
        VmssCommand::Extension { command } => match command {
            ExtensionCommand::Set(args) => prepare_set(*args)?,
            ExtensionCommand::Show {
                resource_group,
                vmss_name,
                name: extension,
            } => Prepared::ExtensionShow(
                group(&resource_group)?,
                name("--vmss-name", &vmss_name)?,
                extension_name(&extension)?,
            ),
            ExtensionCommand::List {
                resource_group,
                vmss_name,
            } => Prepared::ExtensionList(group(&resource_group)?, name("--vmss-name", &vmss_name)?),
            ExtensionCommand::Delete {
                resource_group,
                vmss_name,
                name: extension,
                purge,
                no_wait,
            } => Prepared::ExtensionDelete(
                group(&resource_group)?,
                name("--vmss-name", &vmss_name)?,
                extension_name(&extension)?,
                (no_wait, purge),
            ),
        },
    })
}

fn prepare_set(args: SetArgs) -> Result<Prepared, CliError> {
    let group = group(&args.resource_group)?;
    let vmss = name("--vmss-name", &args.vmss_name)?;
    let extension = extension_name(&args.name)?;
    let mut properties = properties(
        &args.publisher,
        args.version,
        args.settings.as_deref(),
        (args.no_auto_upgrade, args.force_update),
    )?;
    let expires_in = args
        .key_expires_in
        .as_deref()
        .map(|text| {
            let why = " (30 days): a join key lives at most 30 days";
            positive("--key-expires-in", text, "seconds", MAX_KEY_EXPIRES_IN_SECONDS, why)
        })
        .transpose()?;
    let max_uses = args
        .key_max_uses
        .as_deref()
        .map(|text| positive("--key-max-uses", text, "hosts", u64::from(u32::MAX), ""))
        .transpose()?;
    // The flags win over the same keys in --settings.
    for (key, value) in [(KEY_EXPIRES_IN_SECONDS, expires_in), (KEY_MAX_USES, max_uses)] {
        if let Some(value) = value {
            let settings = &mut properties["settings"];
            if settings.is_null() {
                *settings = json!({});
            }
            settings[key] = json!(value);
        }
    }
    let location = args
        .location
        .as_deref()
        .map(|text| Location::parse("--location", text).map_err(|err| flag_error("--location/-l", &err)))
        .transpose()?;
    Ok(Prepared::ExtensionSet {
        group,
        vmss,
        name: extension,
        location,
        properties,
        no_wait: args.no_wait,
        protected_settings: args.protected_settings.is_some(),
    })
}

fn vmss_path(context: &Context, group: &ResourceGroupName, vmss: &ResourceName) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}",
        context.subscription
    )
}

pub(crate) async fn execute(prepared: Prepared, context: &Context) -> Result<Option<Value>, CliError> {
    let client = &context.client;
    match prepared {
        Prepared::List(group) => {
            let path = match group {
                Some(group) => format!(
                    "/subscriptions/{}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachineScaleSets",
                    context.subscription
                ),
                None => format!(
                    "/subscriptions/{}/providers/Microsoft.Compute/virtualMachineScaleSets",
                    context.subscription
                ),
            };
            let value = client.get(&path, LIST_API_VERSION).await?;
            Ok(Some(shape::list(&value, shape::scale_set)))
        }
        Prepared::Show(group, vmss, instance) => {
            let mut path = vmss_path(context, &group, &vmss);
            if let Some(instance) = instance {
                path.push_str(&format!("/virtualMachines/{instance}"));
            }
            let value = client.get(&path, SHOW_API_VERSION).await?;
            Ok(Some(shape::scale_set(&value)))
        }
        Prepared::ListInstances(group, vmss) => {
            let path = format!("{}/virtualMachines", vmss_path(context, &group, &vmss));
            let value = client.get(&path, INSTANCES_API_VERSION).await?;
            Ok(Some(shape::list(&value, shape::scale_set)))
        }
        Prepared::DeleteInstances {
            group,
            vmss,
            instance_ids,
            no_wait,
        } => {
            let instance_ids = if instance_ids == [ALL_INSTANCES] {
                let path = format!("{}/virtualMachines", vmss_path(context, &group, &vmss));
                let listed = client.get(&path, INSTANCES_API_VERSION).await?;
                let ids: Vec<String> = listed
                    .get("value")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|instance| instance.get("instanceId").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect();
                if ids.is_empty() {
                    // Nothing to delete: what az's `*` does to an empty set.
                    return Ok(None);
                }
                ids
            } else {
                instance_ids
            };
            let url = client.url(
                &format!("{}/delete", vmss_path(context, &group, &vmss)),
                INSTANCES_API_VERSION,
            );
            let body = json!({ "instanceIds": instance_ids });
            let first = client.begin(Method::POST, &url, Some(&body), &[200, 202]).await?;
            if !no_wait {
                client.wait(&Method::POST, &url, first).await?;
            }
            // az prints nothing (aaz's `on_200` keeps no result).
            Ok(None)
        }
        Prepared::ExtensionShow(group, vmss, extension) => {
            extension::show(context, &vmss_path(context, &group, &vmss), &extension).await
        }
        Prepared::ExtensionList(group, vmss) => extension::list(context, &vmss_path(context, &group, &vmss)).await,
        Prepared::ExtensionDelete(group, vmss, extension, (no_wait, purge)) => {
            extension::delete(
                context,
                &vmss_path(context, &group, &vmss),
                &extension,
                (!no_wait, purge),
            )
            .await
        }
        Prepared::ExtensionSet {
            group,
            vmss,
            name,
            location,
            properties,
            no_wait,
            protected_settings,
        } => {
            if protected_settings {
                context.warn("--protected-settings is ignored: the netwatch agent takes no protected settings");
            }
            let mut body = json!({ "properties": properties });
            if let Some(location) = location {
                body["location"] = Value::String(location.to_string());
            }
            let holder = vmss_path(context, &group, &vmss);
            extension::set(
                context,
                &holder,
                &name,
                &body,
                no_wait,
                Enrolling::ScaleSet(vmss.as_str()),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{OutputFormat, Query, render_with};
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: VmssCommand,
    }

    fn prepared(args: &[&str]) -> Result<Prepared, CliError> {
        let mut argv = vec!["vmss"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|err| CliError::Usage(err.to_string()))?;
        prepare(cli.command)
    }

    const SET: [&str; 10] = [
        "extension",
        "set",
        "-g",
        "RG",
        "--vmss-name",
        "web",
        "--publisher",
        "Microsoft.Azure.NetworkWatcher",
        "--name",
        "NetworkWatcherAgentLinux",
    ];

    fn set(extra: &[&'static str]) -> Vec<&'static str> {
        let mut args = SET.to_vec();
        args.extend_from_slice(extra);
        args
    }

    fn set_properties(extra: &[&'static str]) -> Value {
        match prepared(&set(extra)).unwrap() {
            Prepared::ExtensionSet { properties, .. } => properties,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn extension_set_sends_az_s_properties_and_the_key_s_bounds() {
        assert_eq!(
            set_properties(&["--version", "1.4"]),
            json!({"publisher": "Microsoft.Azure.NetworkWatcher", "type": "NetworkWatcherAgentLinux",
                   "typeHandlerVersion": "1.4", "autoUpgradeMinorVersion": true})
        );
        assert_eq!(
            set_properties(&["--key-expires-in", "2592000", "--key-max-uses", "40"])["settings"],
            json!({"keyExpiresInSeconds": 2592000, "keyMaxUses": 40})
        );
        // The flags go beside --settings, and win over the same keys in it.
        assert_eq!(
            set_properties(&[
                "--settings",
                r#"{"keyMaxUses": 3, "other": "x"}"#,
                "--key-max-uses",
                "5"
            ])["settings"],
            json!({"keyMaxUses": 5, "other": "x"})
        );
    }

    #[test]
    fn instance_ids_are_sent_as_the_server_writes_them() {
        match prepared(&[
            "delete-instances",
            "-g",
            "RG",
            "-n",
            "web",
            "--instance-ids",
            "1",
            "007",
        ])
        .unwrap()
        {
            Prepared::DeleteInstances { instance_ids, .. } => assert_eq!(instance_ids, ["1", "7"]),
            other => panic!("{other:?}"),
        }
        match prepared(&["delete-instances", "-g", "RG", "-n", "web", "--instance-ids", "*"]).unwrap() {
            Prepared::DeleteInstances { instance_ids, .. } => assert_eq!(instance_ids, ["*"]),
            other => panic!("{other:?}"),
        }
        match prepared(&["show", "-g", "RG", "-n", "web", "--instance-id", "3"]).unwrap() {
            Prepared::Show(_, _, instance) => assert_eq!(instance.as_deref(), Some("3")),
            other => panic!("{other:?}"),
        }
    }

    /// Every bad invocation: exit 2, a message naming the flag, and
    /// (`prepare` does no I/O) no request.
    #[test]
    fn bad_vmss_invocations_fail_before_any_request() {
        let delete = |ids: &[&'static str]| {
            let mut args = vec!["delete-instances", "-g", "RG", "-n", "web", "--instance-ids"];
            args.extend_from_slice(ids);
            args
        };
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec!["show", "-n", "web"], "--resource-group <GROUP>"),
            (vec!["show", "-g", "RG"], "--name <NAME>"),
            (vec!["list-instances", "-g", "RG"], "--name <NAME>"),
            (vec!["delete-instances", "-g", "RG", "-n", "web"], "--instance-ids <ID>"),
            (
                vec!["list", "-g", "bad/group"],
                "argument --resource-group/-g: \"bad/group\"",
            ),
            (vec!["show", "-g", "RG", "-n", "web."], "argument --name/-n: \"web.\""),
            (
                vec!["show", "-g", "RG", "-n", "web", "--instance-id", "x"],
                "argument --instance-id: \"x\" is not an instance id",
            ),
            (delete(&["x"]), "argument --instance-ids: \"x\" is not an instance id"),
            (delete(&["-1"]), "argument --instance-ids: \"-1\" is not an instance id"),
            (
                delete(&["1.5"]),
                "argument --instance-ids: \"1.5\" is not an instance id",
            ),
            (
                delete(&["99999999999"]),
                "argument --instance-ids: \"99999999999\" is not an instance id",
            ),
            (
                delete(&["1", "01"]),
                "argument --instance-ids: instance 1 is named twice",
            ),
            (
                delete(&["1", "*"]),
                "argument --instance-ids: * stands for all instances",
            ),
            (vec!["extension", "list", "-g", "RG"], "--vmss-name <NAME>"),
            (
                vec![
                    "extension",
                    "show",
                    "--vmss-name",
                    "web",
                    "-n",
                    "NetworkWatcherAgentLinux",
                ],
                "--resource-group <GROUP>",
            ),
            (
                vec!["extension", "show", "-g", "RG", "--vmss-name", "web"],
                "--name <NAME>",
            ),
            (
                vec![
                    "extension",
                    "delete",
                    "-g",
                    "RG",
                    "--vmss-name",
                    "w b",
                    "-n",
                    "NetworkWatcherAgentLinux",
                ],
                "argument --vmss-name: \"w b\" is not a valid name",
            ),
            (
                vec![
                    "extension",
                    "show",
                    "-g",
                    "RG",
                    "--vmss-name",
                    "web",
                    "-n",
                    "CustomScript",
                ],
                "argument --name/-n: netwatch scale sets have one extension, the agent: use --name NetworkWatcherAgentLinux",
            ),
            (
                vec![
                    "extension",
                    "delete",
                    "-g",
                    "RG",
                    "--vmss-name",
                    "web",
                    "-n",
                    "NetworkWatcherAgentWindows",
                ],
                "argument --name/-n: NetworkWatcherAgentWindows is not available",
            ),
            (
                vec![
                    "extension",
                    "set",
                    "-g",
                    "RG",
                    "--vmss-name",
                    "web",
                    "-n",
                    "NetworkWatcherAgentLinux",
                ],
                "--publisher <PUBLISHER>",
            ),
            (
                vec![
                    "extension",
                    "set",
                    "-g",
                    "RG",
                    "--vmss-name",
                    "web",
                    "-n",
                    "NetworkWatcherAgentLinux",
                    "--publisher",
                    "Microsoft.Compute",
                ],
                "argument --publisher: the netwatch agent is published as Microsoft.Azure.NetworkWatcher",
            ),
            (
                set(&["--version", "1.x"]),
                "argument --version: \"1.x\" is not a version",
            ),
            (set(&["--settings", "{"]), "argument --settings: not valid JSON"),
            (set(&["--settings", "[]"]), "argument --settings: must be a JSON object"),
            (set(&["-l", "west us!"]), "argument --location/-l: \"west us!\""),
            (
                set(&["--key-max-uses", "0"]),
                "argument --key-max-uses: \"0\" is not a positive whole number of hosts",
            ),
            (
                set(&["--key-max-uses", "-3"]),
                "argument --key-max-uses: \"-3\" is not a positive whole number of hosts",
            ),
            (
                set(&["--key-max-uses", "4294967296"]),
                "argument --key-max-uses: 4294967296 is more than the maximum 4294967295",
            ),
            (
                set(&["--key-expires-in", "2592001"]),
                "argument --key-expires-in: 2592001 is more than the maximum 2592000 (30 days)",
            ),
            (
                set(&["--key-expires-in", "0"]),
                "argument --key-expires-in: \"0\" is not a positive whole number of seconds",
            ),
            (
                set(&["--key-expires-in", "1h"]),
                "argument --key-expires-in: \"1h\" is not a positive whole number of seconds",
            ),
        ];
        crate::error::assert_usage_errors(&cases, prepared);
    }

    fn table(value: &Value, transformer: Option<&str>) -> String {
        let transformer = transformer.map(|text| Query::parse(text).unwrap());
        render_with(value, OutputFormat::Table, None, transformer.as_ref()).unwrap()
    }

    const SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000000";

    #[test]
    fn list_is_az_s_table() {
        let answer = json!({"value": [{
            "id": format!("{SUB}/resourceGroups/netwatch/providers/Microsoft.Compute/virtualMachineScaleSets/web"),
            "name": "web", "type": "Microsoft.Compute/virtualMachineScaleSets", "location": "westus", "tags": {},
            "sku": {"name": "Standard_netwatch", "tier": "Standard", "capacity": 3},
            "properties": {"provisioningState": "Succeeded", "uniqueId": "u", "orchestrationMode": "Uniform",
                "overprovision": false, "upgradePolicy": {"mode": "Manual"}, "timeCreated": "2026-01-01T00:00:00Z",
                "virtualMachineProfile": {"extensionProfile": {"extensions": []}}}
        }]});
        let shaped = shape::list(&answer, shape::scale_set);
        assert_eq!(shaped[0]["resourceGroup"], "netwatch");
        assert_eq!(shaped[0]["upgradePolicy"]["mode"], "Manual");
        assert_eq!(
            table(&shaped, Some(VMSS_LIST_TABLE)),
            "Name    ResourceGroup    Location    Zones    Capacity    Overprovision    UpgradePolicy\n\
             ------  ---------------  ----------  -------  ----------  ---------------  ---------------\n\
             web     netwatch         westus               3           False            Manual\n"
        );
    }

    #[test]
    fn list_instances_is_az_s_default_table() {
        let instances: Vec<Value> = [0, 3].iter().map(|n| json!({
            "id": format!("{SUB}/resourceGroups/netwatch/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/{n}"),
            "name": format!("web_{n}"), "instanceId": n.to_string(),
            "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines", "location": "westus", "tags": {},
            "properties": {"latestModelApplied": true, "provisioningState": "Succeeded",
                "vmId": format!("00000000-0000-0000-0000-00000000000{n}"),
                "osProfile": {"computerName": format!("host{n}")},
                "netwatch": {"hostname": format!("host{n}"), "agentVersion": "0.1.0", "interfaces": [], "addresses": [],
                    "lastSeen": "2026-01-01T00:00:00Z"}}
        })).collect();
        let answer = json!({ "value": instances });
        let shaped = shape::list(&answer, shape::scale_set);
        assert_eq!(shaped[1]["osProfile"]["computerName"], "host3");
        assert_eq!(
            table(&shaped, None),
            "InstanceId    LatestModelApplied    Location    Name    ProvisioningState    ResourceGroup    VmId\n\
             ------------  --------------------  ----------  ------  -------------------  ---------------  ------------------------------------\n\
             0             True                  westus      web_0   Succeeded            netwatch         00000000-0000-0000-0000-000000000000\n\
             3             True                  westus      web_3   Succeeded            netwatch         00000000-0000-0000-0000-000000000003\n"
        );
    }

    /// Runs a command against a scripted server: its result and the requests sent.
    fn run(args: &[&str], answers: Vec<Vec<u8>>) -> (Result<Option<Value>, CliError>, Vec<crate::testing::Request>) {
        let prepared = prepared(args).unwrap();
        let (base, server) = crate::testing::serve(answers);
        let result = crate::testing::block_on(execute(prepared, &crate::testing::context(&base)));
        (result, server.join().unwrap())
    }

    const WEB: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG/providers/\
                       Microsoft.Compute/virtualMachineScaleSets/web";

    #[test]
    fn issue_13_requests_go_where_az_sends_them() {
        let ok = |body: Value| crate::testing::json_answer("200 OK", &body);
        let cases: [(&[&str], String); 5] = [
            (
                &["list"],
                format!("GET {SUB}/providers/Microsoft.Compute/virtualMachineScaleSets?api-version=2024-11-01"),
            ),
            (
                &["list", "-g", "RG"],
                format!(
                    "GET {SUB}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets?api-version=2024-11-01"
                ),
            ),
            (
                &["show", "-g", "RG", "-n", "web"],
                format!("GET {WEB}?api-version=2026-04-01"),
            ),
            (
                &["show", "-g", "RG", "-n", "web", "--instance-id", "3"],
                format!("GET {WEB}/virtualMachines/3?api-version=2026-04-01"),
            ),
            (
                &["extension", "list", "-g", "RG", "--vmss-name", "web"],
                format!("GET {WEB}/extensions?api-version=2024-11-01"),
            ),
        ];
        for (args, line) in cases {
            let (result, requests) = run(args, vec![ok(json!({"value": []}))]);
            result.unwrap();
            assert_eq!(requests[0].line, format!("{line} HTTP/1.1"), "{args:?}");
        }
        let (result, requests) = run(
            &[
                "extension",
                "delete",
                "-g",
                "RG",
                "--vmss-name",
                "web",
                "-n",
                "NetworkWatcherAgentLinux",
            ],
            vec![ok(json!({}))],
        );
        assert_eq!(result.unwrap(), None);
        assert_eq!(
            requests[0].line,
            format!("DELETE {WEB}/extensions/NetworkWatcherAgentLinux?api-version=2024-11-01 HTTP/1.1")
        );
    }

    #[test]
    fn issue_13_delete_instances_posts_the_ids() {
        let ok = crate::testing::json_answer("200 OK", &json!({}));
        let (result, requests) = run(
            &["delete-instances", "-g", "RG", "-n", "web", "--instance-ids", "1", "2"],
            vec![ok.clone()],
        );
        assert_eq!(result.unwrap(), None, "az prints nothing");
        assert_eq!(
            requests[0].line,
            format!("POST {WEB}/delete?api-version=2024-11-01 HTTP/1.1")
        );
        assert_eq!(requests[0].json(), json!({"instanceIds": ["1", "2"]}));
        // `*`: the set's instances, as list-instances reads them.
        let listed = json!({"value": [{"instanceId": "0", "name": "web_0"}, {"instanceId": "3", "name": "web_3"}]});
        let (result, requests) = run(
            &["delete-instances", "-g", "RG", "-n", "web", "--instance-ids", "*"],
            vec![crate::testing::json_answer("200 OK", &listed), ok],
        );
        result.unwrap();
        assert_eq!(
            requests[0].line,
            format!("GET {WEB}/virtualMachines?api-version=2024-11-01 HTTP/1.1")
        );
        assert_eq!(requests[1].json(), json!({"instanceIds": ["0", "3"]}));
        // An empty set: nothing to send.
        let (result, requests) = run(
            &["delete-instances", "-g", "RG", "-n", "web", "--instance-ids", "*"],
            vec![crate::testing::json_answer("200 OK", &json!({"value": []}))],
        );
        assert_eq!(result.unwrap(), None);
        assert_eq!(requests.len(), 1);
    }

    #[test]
    fn issue_13_extension_set_puts_the_agent_and_shows_the_enrollment() {
        let answer = json!({
            "id": format!("{WEB}/extensions/NetworkWatcherAgentLinux"), "name": "NetworkWatcherAgentLinux",
            "type": "Microsoft.Compute/virtualMachineScaleSets/extensions",
            "properties": {"publisher": "Microsoft.Azure.NetworkWatcher", "type": "NetworkWatcherAgentLinux",
                "typeHandlerVersion": "1.4", "autoUpgradeMinorVersion": true, "provisioningState": "Succeeded",
                "settings": {"keyMaxUses": 2},
                "netwatch": {"instances": 0, "keys": [], "enrollment": {"key": "k", "expiresOn": "2026-12-01T00:00:00Z",
                    "maxUses": 2, "command": "netwatch agent --server https://x:8443 --enroll-token k --resource-group RG --location westus"}}}
        });
        let (result, requests) = run(
            &set(&["--key-max-uses", "2", "-l", "westus"]),
            vec![crate::testing::json_answer("201 Created", &answer)],
        );
        assert_eq!(
            requests[0].line,
            format!("PUT {WEB}/extensions/NetworkWatcherAgentLinux?api-version=2024-11-01 HTTP/1.1")
        );
        assert_eq!(
            requests[0].json(),
            json!({"location": "westus", "properties": {"publisher": "Microsoft.Azure.NetworkWatcher",
                "type": "NetworkWatcherAgentLinux", "typeHandlerVersion": "1.4", "autoUpgradeMinorVersion": true,
                "settings": {"keyMaxUses": 2}}})
        );
        let shown = result.unwrap().unwrap();
        assert_eq!(shown["typePropertiesType"], "NetworkWatcherAgentLinux");
        assert_eq!(shown["resourceGroup"], "RG");
        assert_eq!(shown["netwatch"]["enrollment"]["maxUses"], 2);
    }
}
