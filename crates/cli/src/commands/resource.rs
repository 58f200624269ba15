//! `netwatch resource tag --ids ID --tags KEY=VALUE …`: az's `resource tag`
//! for the resources netwatch lets a client tag, VMs and scale sets. It sends
//! ARM's update (`PATCH {id}` with `{"tags": …}`), which replaces the tags
//! (`--tags` with none removes them all). A capture chooses hosts by tag with
//! `packet-capture create --target-tags`.

use std::collections::BTreeMap;

use netwatch_api::resource::{ResourceId, ResourceKind, SubscriptionId};
use reqwest::Method;
use serde_json::{Value, json};

use crate::Context;
use crate::client::arm_error;
use crate::error::CliError;
use crate::settings::GlobalArgs;

/// The api-version az's `resource tag` resolves for Microsoft.Compute.
const API_VERSION: &str = "2024-07-01";

#[derive(Debug, clap::Args)]
pub struct ResourceArgs {
    #[command(subcommand)]
    pub(crate) command: ResourceCommand,
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum ResourceCommand {
    /// Replace the tags of a VM or scale set.
    Tag {
        /// The resource's id (a VM or a scale set).
        #[arg(long, value_name = "ID", required = true)]
        ids: String,
        /// Space-separated tags: KEY[=VALUE] …; none ("") removes them all.
        #[arg(long, value_name = "KEY=VALUE", num_args = 0.., required = true)]
        tags: Vec<String>,
    },
}

#[derive(Debug)]
pub(crate) enum Prepared {
    Tag(ResourceId, BTreeMap<String, String>),
}

pub(crate) fn prepare(command: ResourceCommand, _subscription: &SubscriptionId) -> Result<Prepared, CliError> {
    let ResourceCommand::Tag { ids, tags } = command;
    let id = ResourceId::parse_kind("--ids", &ids, &[ResourceKind::VirtualMachine, ResourceKind::ScaleSet])
        .map_err(|err| super::flag_error("--ids", &err))?;
    let mut parsed = BTreeMap::new();
    for text in tags.iter().filter(|text| !text.is_empty()) {
        // az: KEY=VALUE, or KEY alone for an empty value.
        let (key, value) = text.split_once('=').unwrap_or((text, ""));
        if key.is_empty() || key.len() > 512 || value.len() > 256 {
            return Err(CliError::Usage(format!(
                "argument --tags: {text:?} is not a tag: KEY=VALUE, the key 1 to 512 characters, the value at most 256"
            )));
        }
        parsed.insert(key.to_owned(), value.to_owned());
    }
    Ok(Prepared::Tag(id, parsed))
}

pub(crate) async fn execute(prepared: Prepared, context: &Context) -> Result<Option<Value>, CliError> {
    let Prepared::Tag(id, tags) = prepared;
    let url = context.client.url(&id.to_string(), API_VERSION);
    let answer = context
        .client
        .exchange(Method::PATCH, &url, Some(&json!({ "tags": tags })))
        .await?;
    if !answer.status.is_success() {
        return Err(arm_error(answer));
    }
    Ok(Some(answer.body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ResourceCommand,
    }

    fn prepared(args: &[&str]) -> Result<Prepared, CliError> {
        let cli = Cli::try_parse_from(std::iter::once("resource").chain(args.iter().copied()))
            .map_err(|err| CliError::Usage(err.to_string()))?;
        prepare(cli.command, &SubscriptionId::default_subscription())
    }

    #[test]
    fn tags_are_parsed_as_az_writes_them_and_bad_ones_are_usage_errors() {
        let vm = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/a";
        match prepared(&["tag", "--ids", vm, "--tags", "role=web", "tier"]).unwrap() {
            Prepared::Tag(id, tags) => {
                assert_eq!(id.name().as_str(), "a");
                assert_eq!(tags.get("role").map(String::as_str), Some("web"));
                assert_eq!(tags.get("tier").map(String::as_str), Some(""));
            }
        }
        match prepared(&["tag", "--ids", vm, "--tags", ""]).unwrap() {
            Prepared::Tag(_, tags) => assert!(tags.is_empty()),
        }
        for (args, names) in [
            (&["tag", "--ids", "/nope", "--tags", "a=b"][..], "--ids"),
            (
                &[
                    "tag",
                    "--ids",
                    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/s",
                    "--tags",
                    "a=b",
                ][..],
                "--ids",
            ),
            (&["tag", "--ids", vm, "--tags", "=b"][..], "--tags"),
            (&["tag", "--tags", "a=b"][..], "--ids"),
        ] {
            match prepared(args) {
                Err(CliError::Usage(message)) => assert!(message.contains(names), "{args:?}: {message}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }
}
