//! `netwatch network watcher …`: `list` and `configure` as az has them today
//! (aaz `network watcher list`, `configure_network_watcher`), the seed
//! guide's `show` (az dropped it; it GETs the watcher), the
//! `packet-capture` group ([`super::packet_capture`]), and netwatch's own
//! `flight-recorder` and `trigger` groups ([`super::alerting`]).

use clap::Subcommand;
use netwatch_api::resource::{Location, ResourceGroupName, ResourceName, SubscriptionId};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::alerting::{self, FlightRecorderCommand, TriggerCommand};
use super::packet_capture::{self, API_VERSION, PacketCaptureCommand};
use super::{bool_arg, flag_error};
use crate::error::CliError;
use crate::settings::GlobalArgs;
use crate::{Context, shape};

#[derive(Debug, clap::Args)]
pub struct NetworkArgs {
    #[command(subcommand)]
    pub(crate) command: NetworkCommand,
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Manage network watchers, their packet captures, flight recorders and alert triggers.
    Watcher {
        #[command(subcommand)]
        command: WatcherCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum WatcherCommand {
    /// List network watchers.
    List,
    /// Show a network watcher (the seed guide's command).
    Show {
        /// Name of the resource group the watcher is in (NetworkWatcherRG).
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: String,
        /// Name of the network watcher, e.g. NetworkWatcher_westus.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
    },
    /// Configure the Network Watcher service for different regions.
    Configure {
        /// Space-separated list of locations to configure.
        #[arg(long, short = 'l', alias = "location", value_name = "LOCATION", num_args = 1.., required = true)]
        locations: Vec<String>,
        /// Name of the resource group new watchers go in (required to enable new regions).
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: Option<String>,
        /// Enabled status of Network Watcher in the specified regions: true or false.
        #[arg(long, value_name = "BOOL")]
        enabled: Option<String>,
        /// Space-separated tags: key[=value].
        #[arg(long, value_name = "TAG", num_args = 0..)]
        tags: Option<Vec<String>>,
    },
    /// Manage packet capture sessions on VMs and scale sets.
    PacketCapture {
        #[command(subcommand)]
        command: PacketCaptureCommand,
    },
    /// netwatch: keep a rolling window of recent traffic on the hosts of a VM or scale set.
    FlightRecorder {
        #[command(subcommand)]
        command: FlightRecorderCommand,
    },
    /// netwatch: start captures when an alert fires (Azure Monitor or Alertmanager webhooks).
    Trigger {
        #[command(subcommand)]
        command: TriggerCommand,
    },
}

#[derive(Debug)]
pub(crate) enum Prepared {
    List,
    Show(ResourceGroupName, ResourceName),
    Configure {
        locations: Vec<String>,
        group: Option<ResourceGroupName>,
        enabled: Option<bool>,
        tags: Option<Map<String, Value>>,
    },
    PacketCapture(Box<packet_capture::Prepared>),
    Alerting(Box<alerting::Prepared>),
}

/// The command's table transformer (see [`super::table_transformer`]).
pub(crate) fn table_transformer(prepared: &Prepared) -> Option<&'static str> {
    match prepared {
        Prepared::PacketCapture(prepared) => packet_capture::table_transformer(prepared),
        Prepared::Alerting(prepared) => alerting::table_transformer(prepared),
        _ => None,
    }
}

/// The command's table footer (see [`super::table_footer`]).
pub(crate) fn table_footer(prepared: &Prepared) -> Option<super::TableFooter> {
    match prepared {
        Prepared::PacketCapture(prepared) => packet_capture::table_footer(prepared),
        _ => None,
    }
}

pub(crate) fn prepare(command: NetworkCommand, subscription: &SubscriptionId) -> Result<Prepared, CliError> {
    let NetworkCommand::Watcher { command } = command;
    Ok(match command {
        WatcherCommand::List => Prepared::List,
        WatcherCommand::Show { resource_group, name } => Prepared::Show(
            ResourceGroupName::parse("--resource-group", &resource_group)
                .map_err(|err| flag_error("--resource-group/-g", &err))?,
            ResourceName::parse("--name", &name).map_err(|err| flag_error("--name/-n", &err))?,
        ),
        WatcherCommand::Configure {
            locations,
            resource_group,
            enabled,
            tags,
        } => {
            for location in &locations {
                Location::parse("--locations", location).map_err(|err| flag_error("--locations/-l", &err))?;
            }
            let group = resource_group
                .map(|group| {
                    ResourceGroupName::parse("--resource-group", &group)
                        .map_err(|err| flag_error("--resource-group/-g", &err))
                })
                .transpose()?;
            let enabled = enabled.as_deref().map(|text| bool_arg("--enabled", text)).transpose()?;
            if enabled == Some(true) && group.is_none() {
                return Err(CliError::Usage(
                    "usage error: '--resource-group' required when enabling new regions".to_owned(),
                ));
            }
            if enabled == Some(false) && tags.is_some() {
                return Err(CliError::Usage(
                    "usage error: '--tags' cannot be used when disabling regions".to_owned(),
                ));
            }
            let tags = tags.map(|tags| {
                tags.iter()
                    .filter(|tag| !tag.is_empty())
                    .map(|tag| match tag.split_once('=') {
                        Some((key, value)) => (key.to_owned(), Value::String(value.to_owned())),
                        None => (tag.clone(), Value::String(String::new())),
                    })
                    .collect()
            });
            Prepared::Configure {
                locations,
                group,
                enabled,
                tags,
            }
        }
        WatcherCommand::PacketCapture { command } => {
            Prepared::PacketCapture(Box::new(packet_capture::prepare(command, subscription)?))
        }
        WatcherCommand::FlightRecorder { command } => {
            Prepared::Alerting(Box::new(alerting::prepare_recorder(command, subscription)?))
        }
        WatcherCommand::Trigger { command } => {
            Prepared::Alerting(Box::new(alerting::prepare_trigger(command, subscription)?))
        }
    })
}

fn watchers_path(context: &Context) -> String {
    format!(
        "/subscriptions/{}/providers/Microsoft.Network/networkWatchers",
        context.subscription
    )
}

fn watcher_path(context: &Context, group: &str, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{group}/providers/Microsoft.Network/networkWatchers/{name}",
        context.subscription
    )
}

pub(crate) async fn execute(prepared: Prepared, context: &Context) -> Result<Option<Value>, CliError> {
    let client = &context.client;
    match prepared {
        Prepared::List => {
            let value = client.get(&watchers_path(context), API_VERSION).await?;
            Ok(Some(shape::list(&value, shape::network_watcher)))
        }
        Prepared::Show(group, name) => {
            let value = client
                .get(&watcher_path(context, group.as_str(), name.as_str()), API_VERSION)
                .await?;
            Ok(Some(shape::network_watcher(&value)))
        }
        Prepared::Configure {
            locations,
            group,
            enabled,
            tags,
        } => {
            let all = client.get(&watchers_path(context), API_VERSION).await?;
            let watchers: Vec<Value> = all.get("value").and_then(Value::as_array).cloned().unwrap_or_default();
            let lower: Vec<String> = locations.iter().map(|l| l.to_lowercase()).collect();
            let existing: Vec<&Value> = watchers
                .iter()
                .filter(|w| {
                    w.get("location")
                        .and_then(Value::as_str)
                        .is_some_and(|l| lower.contains(&l.to_owned()))
                })
                .collect();
            let enabled_locations: Vec<&str> = existing
                .iter()
                .filter_map(|w| w.get("location").and_then(Value::as_str))
                .collect();
            let missing: Vec<&String> = locations
                .iter()
                .filter(|l| !enabled_locations.contains(&l.as_str()))
                .collect();
            match enabled {
                None => {
                    if let Some(group) = &group {
                        context.warn(&format!(
                            "Resource group '{group}' is only used when enabling new regions and will be ignored."
                        ));
                    }
                    for location in &missing {
                        context.warn(&format!(
                            "Region '{location}' is not enabled for Network Watcher and will be ignored."
                        ));
                    }
                    update(context, &existing, tags.as_ref()).await?;
                }
                Some(true) => {
                    let group = group.ok_or_else(|| {
                        CliError::Usage("usage error: '--resource-group' required when enabling new regions".to_owned())
                    })?;
                    for location in missing {
                        let path = watcher_path(context, group.as_str(), &format!("NetworkWatcher_{location}"));
                        let mut body = json!({ "location": location });
                        if let Some(tags) = &tags {
                            body["tags"] = Value::Object(tags.clone());
                        }
                        client.call(Method::PUT, &path, API_VERSION, Some(&body)).await?;
                    }
                    update(context, &existing, tags.as_ref()).await?;
                }
                Some(false) => {
                    for watcher in existing {
                        let id = watcher.get("id").and_then(Value::as_str).unwrap_or_default();
                        let location = watcher.get("location").and_then(Value::as_str).unwrap_or_default();
                        context.warn(&format!(
                            "Disabling Network Watcher for region '{location}' by deleting resource '{id}'"
                        ));
                        let url = client.url(id, API_VERSION);
                        let first = client.begin(Method::DELETE, &url, None, &[200, 202, 204]).await?;
                        client.wait(&Method::DELETE, &url, first).await?;
                    }
                }
            }
            let value = client.get(&watchers_path(context), API_VERSION).await?;
            Ok(Some(shape::list(&value, shape::network_watcher)))
        }
        Prepared::PacketCapture(prepared) => packet_capture::execute(*prepared, context).await,
        Prepared::Alerting(prepared) => alerting::execute(*prepared, context).await,
    }
}

/// az's `_update_network_watchers`: each existing watcher PUT back with the new tags.
async fn update(context: &Context, watchers: &[&Value], tags: Option<&Map<String, Value>>) -> Result<(), CliError> {
    let Some(tags) = tags else {
        // Nothing to change: az's generic update would PUT the watcher back as it is.
        return Ok(());
    };
    for watcher in watchers {
        let id = watcher.get("id").and_then(Value::as_str).unwrap_or_default();
        let location = watcher.get("location").cloned().unwrap_or(Value::Null);
        let body = json!({ "location": location, "tags": tags });
        context.client.call(Method::PUT, id, API_VERSION, Some(&body)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: NetworkCommand,
    }

    fn prepared(args: &[&str]) -> Result<Prepared, CliError> {
        let mut argv = vec!["network"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|err| CliError::Usage(err.to_string()))?;
        prepare(cli.command, &SubscriptionId::default_subscription())
    }

    #[test]
    fn bad_watcher_invocations_fail_before_any_request() {
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["watcher", "configure", "-l", "eastus", "--enabled", "true"],
                "'--resource-group' required when enabling new regions",
            ),
            (
                vec![
                    "watcher",
                    "configure",
                    "-l",
                    "eastus",
                    "--enabled",
                    "false",
                    "--tags",
                    "a=b",
                ],
                "'--tags' cannot be used when disabling regions",
            ),
            (
                vec!["watcher", "configure", "-l", "eastus", "--enabled", "maybe"],
                "argument --enabled: invalid value 'maybe'",
            ),
            (
                vec!["watcher", "configure", "-l", "east_us!", "--enabled", "false"],
                "argument --locations/-l: \"east_us!\" is not a valid location",
            ),
            (
                vec!["watcher", "show", "-g", "NetworkWatcherRG", "-n", "Network Watcher"],
                "argument --name/-n: \"Network Watcher\" is not a valid name",
            ),
        ];
        crate::error::assert_usage_errors(&cases, prepared);
    }

    #[test]
    fn configure_reads_its_flags() {
        match prepared(&[
            "watcher",
            "configure",
            "-g",
            "NetworkWatcherRG",
            "-l",
            "eastus",
            "westus",
            "--enabled",
            "true",
            "--tags",
            "team=net",
        ])
        .unwrap()
        {
            Prepared::Configure {
                locations,
                group,
                enabled,
                tags,
            } => {
                assert_eq!(locations, ["eastus", "westus"]);
                assert_eq!(group.unwrap().as_str(), "NetworkWatcherRG");
                assert_eq!(enabled, Some(true));
                assert_eq!(tags.unwrap()["team"], "net");
            }
            other => panic!("{other:?}"),
        }
    }
}
