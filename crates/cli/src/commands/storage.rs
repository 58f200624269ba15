//! `netwatch storage account list/show`: the controller's storage accounts
//! (where capture files go), as az's `storage account list/show` print them
//! (the SDK's `StorageAccount`, api-version 2025-08-01).

use clap::Subcommand;
use netwatch_api::resource::{ResourceGroupName, ResourceName, SubscriptionId};
use serde_json::Value;

use super::flag_error;
use crate::error::CliError;
use crate::settings::GlobalArgs;
use crate::{Context, shape};

/// What az's `storage account list/show` send.
const API_VERSION: &str = "2025-08-01";

#[derive(Debug, clap::Args)]
pub struct StorageArgs {
    #[command(subcommand)]
    pub(crate) command: StorageCommand,
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Manage storage accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// List storage accounts.
    List {
        /// Only the accounts of this resource group.
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: Option<String>,
    },
    /// Show a storage account.
    Show {
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: String,
        /// The account's name.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug)]
pub(crate) enum Prepared {
    List(Option<ResourceGroupName>),
    Show(ResourceGroupName, ResourceName),
}

fn group(text: &str) -> Result<ResourceGroupName, CliError> {
    ResourceGroupName::parse("--resource-group", text).map_err(|err| flag_error("--resource-group/-g", &err))
}

pub(crate) fn prepare(command: StorageCommand, _subscription: &SubscriptionId) -> Result<Prepared, CliError> {
    let StorageCommand::Account { command } = command;
    Ok(match command {
        AccountCommand::List { resource_group } => Prepared::List(resource_group.as_deref().map(group).transpose()?),
        AccountCommand::Show { resource_group, name } => Prepared::Show(
            group(&resource_group)?,
            ResourceName::parse("--name", &name).map_err(|err| flag_error("--name/-n", &err))?,
        ),
    })
}

pub(crate) async fn execute(prepared: Prepared, context: &Context) -> Result<Option<Value>, CliError> {
    let sub = &context.subscription;
    match prepared {
        Prepared::List(group) => {
            let path = match group {
                Some(group) => {
                    format!("/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts")
                }
                None => format!("/subscriptions/{sub}/providers/Microsoft.Storage/storageAccounts"),
            };
            let value = context.client.get(&path, API_VERSION).await?;
            Ok(Some(shape::list(&value, shape::storage_account)))
        }
        Prepared::Show(group, name) => {
            let path = format!(
                "/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts/{name}"
            );
            let value = context.client.get(&path, API_VERSION).await?;
            Ok(Some(shape::storage_account(&value)))
        }
    }
}
