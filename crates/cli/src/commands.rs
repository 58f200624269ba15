//! The client commands: each module parses its flags (clap), checks them
//! into a `Prepared` value without any I/O, and executes it against the
//! controller, returning the value to print (already in az's shape) or
//! `None` when az prints nothing.

pub mod alerting;
mod extension;
pub mod login;
pub mod network;
pub mod packet_capture;
pub mod resource;
pub mod storage;
pub mod token;
pub mod vm;
pub mod vmss;

use netwatch_api::resource::{ResourceError, ResourceGroupName, ResourceName, SubscriptionId};
use serde_json::Value;

use crate::error::CliError;
use crate::{Command, Context};

/// A command whose flags passed every check.
#[derive(Debug)]
pub(crate) enum Prepared {
    Vm(Box<vm::Prepared>),
    Vmss(Box<vmss::Prepared>),
    Network(Box<network::Prepared>),
    Storage(Box<storage::Prepared>),
    Token(token::Prepared),
    Resource(resource::Prepared),
    Login(login::Prepared),
}

/// Checks the flags of `command` (no I/O).
pub(crate) fn prepare(command: Command, subscription: &SubscriptionId) -> Result<Prepared, CliError> {
    Ok(match command {
        Command::Vm(args) => Prepared::Vm(Box::new(vm::prepare(args.command, subscription)?)),
        Command::Vmss(args) => Prepared::Vmss(Box::new(vmss::prepare(args.command)?)),
        Command::Network(args) => Prepared::Network(Box::new(network::prepare(args.command, subscription)?)),
        Command::Storage(args) => Prepared::Storage(Box::new(storage::prepare(args.command, subscription)?)),
        Command::Token(args) => Prepared::Token(token::prepare(args.command, subscription)?),
        Command::Resource(args) => Prepared::Resource(resource::prepare(args.command, subscription)?),
        Command::Login(args) => Prepared::Login(login::prepare(&args)?),
    })
}

/// The JMESPath expression az applies for `-o table` (without `--query`)
/// to this command's output, when it has one (azure-cli `vm/commands.py`,
/// `vm/_format.py`; netwatch's own for a scale-set capture's `show-status`).
pub(crate) fn table_transformer(prepared: &Prepared) -> Option<&'static str> {
    match prepared {
        Prepared::Vm(prepared) => vm::table_transformer(prepared),
        Prepared::Vmss(prepared) => vmss::table_transformer(prepared),
        Prepared::Network(prepared) => network::table_transformer(prepared),
        _ => None,
    }
}

/// What a command prints on standard error after its `-o table` output
/// (without `--query`), made from the output: a scale-set capture's
/// `show-status` summary line.
pub(crate) type TableFooter = fn(&Value) -> Option<String>;

/// This command's [`TableFooter`], when it has one.
pub(crate) fn table_footer(prepared: &Prepared) -> Option<TableFooter> {
    match prepared {
        Prepared::Network(prepared) => network::table_footer(prepared),
        _ => None,
    }
}

/// Makes the requests of a prepared command.
pub(crate) async fn execute(prepared: Prepared, context: &Context) -> Result<Option<Value>, CliError> {
    match prepared {
        Prepared::Vm(prepared) => vm::execute(*prepared, context).await,
        Prepared::Vmss(prepared) => vmss::execute(*prepared, context).await,
        Prepared::Network(prepared) => network::execute(*prepared, context).await,
        Prepared::Storage(prepared) => storage::execute(*prepared, context).await,
        Prepared::Token(prepared) => token::execute(prepared, context).await,
        Prepared::Resource(prepared) => resource::execute(prepared, context).await,
        Prepared::Login(_) => Err(CliError::Unexpected("login runs without a client".to_owned())),
    }
}

/// A name or id rejected by `netwatch_api`, as a usage error naming the flag.
pub(crate) fn flag_error(flag: &str, err: &ResourceError) -> CliError {
    // The api's message starts with its target (the field name); the flag says it better.
    let detail = err
        .message
        .strip_prefix(err.target.as_str())
        .unwrap_or(&err.message)
        .trim_start();
    CliError::Usage(format!("argument {flag}: {detail}"))
}

/// `-g/--resource-group`.
pub(crate) fn group_arg(text: &str) -> Result<ResourceGroupName, CliError> {
    ResourceGroupName::parse("--resource-group", text).map_err(|err| flag_error("--resource-group/-g", &err))
}

/// A resource name given with `flag`.
pub(crate) fn name_arg(flag: &str, text: &str) -> Result<ResourceName, CliError> {
    ResourceName::parse(flag, text).map_err(|err| flag_error(flag, &err))
}

/// A boolean flag's value as az reads one (`true`/`false`, `yes`/`no`, …, any case).
pub(crate) fn bool_arg(flag: &str, text: &str) -> Result<bool, CliError> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" | "on" => Ok(true),
        "false" | "no" | "n" | "0" | "off" => Ok(false),
        _ => Err(CliError::Usage(format!(
            "argument {flag}: invalid value '{text}': use true or false"
        ))),
    }
}

/// A JSON argument, inline or `@file` (az's convention for `--filters` and
/// `--settings`).
pub(crate) fn json_argument(flag: &str, text: &str) -> Result<String, CliError> {
    match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|err| CliError::Usage(format!("argument {flag}: cannot read {path}: {err}"))),
        None => Ok(text.to_owned()),
    }
}
