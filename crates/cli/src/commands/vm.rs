//! `netwatch vm …`: the hosts running the netwatch agent, as VMs (DESIGN §2).
//!
//! - `vm list` / `vm show`: the registered hosts (az's `vm list/show`,
//!   api-version 2026-04-01).
//! - `vm extension show/list`: the agent as a VM extension (2024-11-01).
//! - `vm extension set`: netwatch cannot reach into a host, so "installing"
//!   the agent is a PUT of the extension that the server answers with 200
//!   when the host's agent is already registered, or 201 `Creating` with an
//!   enrollment: the exact `netwatch agent …` command to run on the host,
//!   printed on standard error (with `--ca FILE` when this client trusts a CA
//!   file), the extension JSON on standard output. Only
//!   `NetworkWatcherAgentLinux` by `Microsoft.Azure.NetworkWatcher` exists:
//!   agents run on Linux only. The request's `location` is `-l/--location`
//!   when given, else the VM's own (GET of the VM, as az reads it); a host
//!   not registered yet has none, and the server enrolls it in the first
//!   location it serves (the printed command says which).
//!
//! The extension's checks and the enrollment text are shared with `vmss
//! extension` ([`super::extension`]).

use clap::Subcommand;
use netwatch_api::resource::{Location, ResourceGroupName, ResourceName, SubscriptionId};
use serde_json::{Value, json};

use super::extension::{self, Enrolling, properties};
use super::{flag_error, group_arg as group, name_arg as name};
use crate::error::CliError;
use crate::settings::GlobalArgs;
use crate::{Context, shape};

/// What az's `vm list/show` send.
const VM_API_VERSION: &str = "2026-04-01";
/// What has the agent extension, for messages.
const HOLDERS: &str = "VMs";

#[derive(Debug, clap::Args)]
pub struct VmArgs {
    #[command(subcommand)]
    pub(crate) command: VmCommand,
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// List the virtual machines: the hosts whose agent registered.
    List {
        /// Only the VMs of this resource group.
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: Option<String>,
    },
    /// Show a virtual machine.
    Show {
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: String,
        /// The VM's name.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
    },
    /// Manage the agent extension of a VM.
    Extension {
        #[command(subcommand)]
        command: ExtensionCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExtensionCommand {
    /// Install the agent on a VM: prints the command to run on the host.
    // `--version` is the extension's version here, as in az, not netwatch's.
    #[command(disable_version_flag = true)]
    Set(Box<SetArgs>),
    /// Show the agent extension of a VM, with the agent's live facts.
    Show {
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: String,
        /// The VM's name.
        #[arg(long, value_name = "NAME")]
        vm_name: String,
        /// The extension's name: NetworkWatcherAgentLinux.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
    },
    /// List the extensions of a VM.
    List {
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: String,
        /// The VM's name.
        #[arg(long, value_name = "NAME")]
        vm_name: String,
    },
    /// Remove the agent extension: the host's agent is cut off (its credential
    /// revoked, its channel closed, its running captures ended).
    Delete {
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: String,
        /// The VM's name.
        #[arg(long, value_name = "NAME")]
        vm_name: String,
        /// The extension's name: NetworkWatcherAgentLinux.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
        /// netwatch: the agent's uninstall removes its captures too (they
        /// stay on the host otherwise).
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
    /// The VM's name.
    #[arg(long, value_name = "NAME")]
    vm_name: String,
    /// The extension's name: NetworkWatcherAgentLinux.
    #[arg(long, short = 'n', value_name = "NAME")]
    name: String,
    /// The extension's publisher: Microsoft.Azure.NetworkWatcher.
    #[arg(long, value_name = "PUBLISHER")]
    publisher: String,
    /// The extension's version (typeHandlerVersion); default 1.4.
    #[arg(long, value_name = "VERSION")]
    version: Option<String>,
    /// JSON settings, inline or @file (the agent takes none).
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
    /// netwatch: the location the VM is (or will be) in; default the VM's own.
    #[arg(long, short = 'l', value_name = "LOCATION")]
    location: Option<String>,
    /// Do not wait for the long-running operation to finish.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug)]
pub(crate) enum Prepared {
    List(Option<ResourceGroupName>),
    Show(ResourceGroupName, ResourceName),
    ExtensionShow(ResourceGroupName, ResourceName, ResourceName),
    ExtensionList(ResourceGroupName, ResourceName),
    ExtensionDelete(ResourceGroupName, ResourceName, ResourceName, bool),
    ExtensionSet {
        group: ResourceGroupName,
        vm: ResourceName,
        name: ResourceName,
        location: Option<Location>,
        properties: Value,
        no_wait: bool,
        protected_settings: bool,
    },
}

/// az's `transform_extension_show_table_output`.
const EXTENSION_TABLE: &str = "{Name:name, ProvisioningState:provisioningState, Publisher:publisher, \
     Version:typeHandlerVersion, AutoUpgradeMinorVersion:autoUpgradeMinorVersion}";
/// The same for `vm extension list`.
const EXTENSION_LIST_TABLE: &str = "[].{Name:name, ProvisioningState:provisioningState, Publisher:publisher, \
     Version:typeHandlerVersion, AutoUpgradeMinorVersion:autoUpgradeMinorVersion}";
/// az's `transform_vm` (a Python function there; the same columns, and
/// `zones` only when the VM has them, which netwatch VMs never do).
const VM_TABLE: &str = "{name:name, resourceGroup:resourceGroup, powerState:powerState, publicIps:publicIps, fqdns:fqdns, location:location}";
/// az's `transform_vm_list`.
const VM_LIST_TABLE: &str = "[].{name:name, resourceGroup:resourceGroup, powerState:powerState, publicIps:publicIps, \
     fqdns:fqdns, location:location}";

/// The command's table transformer (see [`super::table_transformer`]).
pub(crate) fn table_transformer(prepared: &Prepared) -> Option<&'static str> {
    Some(match prepared {
        Prepared::List(_) => VM_LIST_TABLE,
        Prepared::Show(..) => VM_TABLE,
        Prepared::ExtensionShow(..) | Prepared::ExtensionSet { .. } => EXTENSION_TABLE,
        Prepared::ExtensionList(..) => EXTENSION_LIST_TABLE,
        Prepared::ExtensionDelete(..) => return None,
    })
}

/// The extension name: only the Linux agent exists.
fn extension_name(text: &str) -> Result<ResourceName, CliError> {
    super::extension::extension_name(text, HOLDERS)
}

pub(crate) fn prepare(command: VmCommand, _subscription: &SubscriptionId) -> Result<Prepared, CliError> {
    Ok(match command {
        VmCommand::List { resource_group } => Prepared::List(resource_group.as_deref().map(group).transpose()?),
        VmCommand::Show {
            resource_group,
            name: vm,
        } => Prepared::Show(group(&resource_group)?, name("--name/-n", &vm)?),
        VmCommand::Extension { command } => match command {
            ExtensionCommand::Show {
                resource_group,
                vm_name,
                name: extension,
            } => Prepared::ExtensionShow(
                group(&resource_group)?,
                name("--vm-name", &vm_name)?,
                extension_name(&extension)?,
            ),
            ExtensionCommand::List {
                resource_group,
                vm_name,
            } => Prepared::ExtensionList(group(&resource_group)?, name("--vm-name", &vm_name)?),
            ExtensionCommand::Set(args) => prepare_set(*args)?,
            ExtensionCommand::Delete {
                resource_group,
                vm_name,
                name: extension,
                purge,
                no_wait: _,
            } => Prepared::ExtensionDelete(
                group(&resource_group)?,
                name("--vm-name", &vm_name)?,
                extension_name(&extension)?,
                purge,
            ),
        },
    })
}

fn prepare_set(args: SetArgs) -> Result<Prepared, CliError> {
    let group = group(&args.resource_group)?;
    let vm = name("--vm-name", &args.vm_name)?;
    let extension = extension_name(&args.name)?;
    let properties = properties(
        &args.publisher,
        args.version,
        args.settings.as_deref(),
        (args.no_auto_upgrade, args.force_update),
    )?;
    let location = args
        .location
        .as_deref()
        .map(|text| Location::parse("--location", text).map_err(|err| flag_error("--location/-l", &err)))
        .transpose()?;
    Ok(Prepared::ExtensionSet {
        group,
        vm,
        name: extension,
        location,
        properties,
        no_wait: args.no_wait,
        protected_settings: args.protected_settings.is_some(),
    })
}

fn vm_path(context: &Context, group: &ResourceGroupName, vm: &ResourceName) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{vm}",
        context.subscription
    )
}

pub(crate) async fn execute(prepared: Prepared, context: &Context) -> Result<Option<Value>, CliError> {
    let client = &context.client;
    match prepared {
        Prepared::List(group) => {
            let path = match group {
                Some(group) => format!(
                    "/subscriptions/{}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines",
                    context.subscription
                ),
                None => format!(
                    "/subscriptions/{}/providers/Microsoft.Compute/virtualMachines",
                    context.subscription
                ),
            };
            let value = client.get(&path, VM_API_VERSION).await?;
            Ok(Some(shape::list(&value, shape::virtual_machine)))
        }
        Prepared::Show(group, vm) => {
            let value = client.get(&vm_path(context, &group, &vm), VM_API_VERSION).await?;
            Ok(Some(shape::virtual_machine(&value)))
        }
        Prepared::ExtensionShow(group, vm, extension) => {
            extension::show(context, &vm_path(context, &group, &vm), &extension).await
        }
        // Answered at once: the agent is cut off before the answer.
        Prepared::ExtensionDelete(group, vm, extension, purge) => {
            extension::delete(context, &vm_path(context, &group, &vm), &extension, (false, purge)).await
        }
        Prepared::ExtensionList(group, vm) => extension::list(context, &vm_path(context, &group, &vm)).await,
        Prepared::ExtensionSet {
            group,
            vm,
            name,
            location,
            properties,
            no_wait,
            protected_settings,
        } => {
            if protected_settings {
                context.warn("--protected-settings is ignored: the netwatch agent takes no settings");
            }
            // The VM's own location when it has an agent; for a host not
            // seen yet, -l or else none: the server then enrolls it in the
            // first location it serves (the enrollment's command says which).
            let location = match location {
                Some(location) => Some(location.to_string()),
                None => match client.get(&vm_path(context, &group, &vm), VM_API_VERSION).await {
                    Ok(value) => value.get("location").and_then(Value::as_str).map(str::to_owned),
                    Err(err) if err.is_not_found() => None,
                    Err(err) => return Err(err),
                },
            };
            let mut body = json!({ "properties": properties });
            if let Some(location) = location {
                body["location"] = Value::String(location);
            }
            let holder = vm_path(context, &group, &vm);
            extension::set(context, &holder, &name, &body, no_wait, Enrolling::Vm).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: VmCommand,
    }

    fn prepared(args: &[&str]) -> Result<Prepared, CliError> {
        let mut argv = vec!["vm"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|err| CliError::Usage(err.to_string()))?;
        prepare(cli.command, &SubscriptionId::default_subscription())
    }

    const SET: [&str; 8] = [
        "extension",
        "set",
        "-g",
        "RG",
        "--vm-name",
        "VM",
        "--publisher",
        "Microsoft.Azure.NetworkWatcher",
    ];

    fn set(extra: &[&'static str]) -> Vec<&'static str> {
        let mut args = SET.to_vec();
        args.extend_from_slice(extra);
        args
    }

    #[test]
    fn the_guide_s_extension_set_sends_az_s_properties() {
        match prepared(&set(&["--name", "NetworkWatcherAgentLinux", "--version", "1.4"])).unwrap() {
            Prepared::ExtensionSet {
                properties, location, ..
            } => {
                assert_eq!(
                    properties,
                    json!({"publisher": "Microsoft.Azure.NetworkWatcher", "type": "NetworkWatcherAgentLinux", "typeHandlerVersion": "1.4", "autoUpgradeMinorVersion": true})
                );
                assert_eq!(location, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_vm_invocations_fail_before_any_request() {
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                set(&["--name", "NetworkWatcherAgentWindows"]),
                "the netwatch agent runs on Linux only; use --name NetworkWatcherAgentLinux",
            ),
            (
                set(&["--name", "CustomScript"]),
                "use --name NetworkWatcherAgentLinux, not \"CustomScript\"",
            ),
            (
                set(&["--name", "NetworkWatcherAgentLinux", "--version", "one"]),
                "argument --version: \"one\" is not a version",
            ),
            (
                set(&["--name", "NetworkWatcherAgentLinux", "--settings", "{"]),
                "argument --settings: not valid JSON",
            ),
            (
                set(&["--name", "NetworkWatcherAgentLinux", "--settings", "[1]"]),
                "argument --settings: must be a JSON object",
            ),
            (
                set(&["--name", "NetworkWatcherAgentLinux", "-l", "West-US"]),
                "argument --location/-l",
            ),
            (
                vec![
                    "extension",
                    "set",
                    "-g",
                    "RG",
                    "--vm-name",
                    "VM",
                    "--publisher",
                    "Microsoft.Compute",
                    "-n",
                    "NetworkWatcherAgentLinux",
                ],
                "argument --publisher: the netwatch agent is published as Microsoft.Azure.NetworkWatcher",
            ),
            (
                vec![
                    "extension",
                    "show",
                    "-g",
                    "RG",
                    "--vm-name",
                    "VM",
                    "-n",
                    "NetworkWatcherAgentWindows",
                ],
                "runs on Linux only",
            ),
            (
                vec![
                    "extension",
                    "show",
                    "-g",
                    "RG",
                    "--vm-name",
                    "V M",
                    "-n",
                    "NetworkWatcherAgentLinux",
                ],
                "argument --vm-name: \"V M\" is not a valid name",
            ),
            (
                vec!["show", "-g", "R G", "-n", "vm"],
                "argument --resource-group/-g: \"R G\" is not a valid resource group name",
            ),
        ];
        crate::error::assert_usage_errors(&cases, prepared);
    }
}
